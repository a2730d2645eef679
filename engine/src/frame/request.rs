//! The `request` frame, written by hand: most of what the relay writes.

use super::{escape_into, push_base64, Body};
use crate::auth::Address;
use core::net::IpAddr;

/// How [`encode_request`] writes header names.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// As given.
    AsGiven,
    /// In lowercase (a caller's names, as sent).
    Lower,
}

/// What a `request` frame says of its request, as [`encode_request`] takes it.
pub struct RequestText<'a, I> {
    /// The method.
    pub method: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// The headers to send, in order.
    pub headers: I,
    /// About how many bytes `headers` take (a capacity hint).
    pub headers_size: usize,
    /// How to write the names.
    pub names: Names,
}

/// The two headers the relay adds after a caller's: the agent the call is
/// for, and the caller's IP.
#[derive(Clone, Copy, Debug)]
pub struct RelayHeaders<'a> {
    /// Written as `x-agent-address` (lowercase hex).
    pub agent: &'a Address,
    /// Written as `x-forwarded-for`.
    pub ip: IpAddr,
}

/// A `request` frame, the relay's own headers after `r.headers`: written
/// directly, byte for byte what serde writes for [`ServerFrame::Request`]
/// (property-tested); requests are most of what the relay writes.
pub fn encode_request<'h>(
    id: &str,
    r: RequestText<'_, impl Iterator<Item = (&'h str, &'h str)>>,
    relay: Option<RelayHeaders<'_>>,
    body: &Body,
) -> String {
    encode_request_into(String::new(), id, r, relay, body)
}

/// [`encode_request`] appended to `out` (a recycled buffer, usually empty).
pub fn encode_request_into<'h>(
    mut out: String,
    id: &str,
    r: RequestText<'_, impl Iterator<Item = (&'h str, &'h str)>>,
    relay: Option<RelayHeaders<'_>>,
    body: &Body,
) -> String {
    let h = r.headers_size + if relay.is_some() { 128 } else { 0 };
    let b = body.wire_len();
    let hint = 128 + r.path.len() + h + b + if body.is_binary() { 0 } else { b / 8 };
    out.reserve(hint);
    out.push_str(r#"{"type":"request","id":""#);
    escape_into(&mut out, id);
    out.push_str(r#"","method":""#);
    escape_into(&mut out, r.method);
    out.push_str(r#"","path":""#);
    escape_into(&mut out, r.path);
    out.push_str(r#"","headers":{"#);
    let mut first = true;
    for (k, v) in r.headers {
        out.push_str(if first { "\"" } else { ",\"" });
        first = false;
        match r.names {
            Names::Lower if k.bytes().any(|b| b.is_ascii_uppercase()) => push_lower(&mut out, k),
            _ => escape_into(&mut out, k),
        }
        out.push_str("\":\"");
        escape_into(&mut out, v);
        out.push('"');
    }
    // The relay's own: hex digits and an address, nothing to escape, and
    // written as characters rather than formatted first.
    if let Some(RelayHeaders { agent, ip }) = relay {
        out.push_str(if first { "\"" } else { ",\"" });
        out.push_str("x-agent-address\":\"0x");
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for b in agent.0 {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
        out.push_str("\",\"x-forwarded-for\":\"");
        push_ip(&mut out, ip);
        out.push('"');
    }
    out.push_str(r#"},"body":""#);
    match body {
        Body::Text(t) => {
            escape_into(&mut out, t);
            out.push_str("\"}");
        }
        Body::Binary(b) => {
            push_base64(&mut out, b);
            out.push_str(r#"","bodyEncoding":"base64"}"#);
        }
    }
    out
}

/// `name` lowercased and escaped; a token (every name a parser accepts)
/// needs no escaping and no copy first.
fn push_lower(out: &mut String, name: &str) {
    if crate::http::is_token(name) {
        // Copied whole, then lowercased in place: a char at a time cost
        // about thirty instructions a byte.
        let at = out.len();
        out.push_str(name);
        out[at..].make_ascii_lowercase();
    } else {
        escape_into(out, &name.to_ascii_lowercase());
    }
}

/// Each octet's decimal digits, first their count.
static OCTETS: [[u8; 4]; 256] = {
    let mut t = [[0; 4]; 256];
    let mut i = 0;
    while i < 256 {
        let o = i as u8;
        let (a, b, c) = (b'0' + o / 100, b'0' + o / 10 % 10, b'0' + o % 10);
        t[i] = match o {
            0..=9 => [1, c, 0, 0],
            10..=99 => [2, b, c, 0],
            _ => [3, a, b, c],
        };
        i += 1;
    }
    t
};

/// `ip` as `Display` writes it; IPv4, nearly every caller's, from a table.
pub(crate) fn push_ip(out: &mut String, ip: IpAddr) {
    let IpAddr::V4(v4) = ip else {
        use std::fmt::Write;
        let _ = write!(out, "{ip}");
        return;
    };
    // Written as bytes, added as text once; each octet's digits from a
    // table, three bytes copied and as many kept as it has.
    let (mut text, mut n) = ([0u8; 18], 0);
    for o in v4.octets() {
        let [len, digits @ ..] = OCTETS[usize::from(o)];
        text[n..n + 3].copy_from_slice(&digits);
        text[n + usize::from(len)] = b'.';
        n += usize::from(len) + 1;
    }
    let n = n - 1;
    out.push_str(std::str::from_utf8(&text[..n]).unwrap_or_default());
}
