//! HTTP rules of the relay: host → agent, header sanitising, CORS, error bodies.

use crate::auth::{parse_address, Address};
use crate::config::ClientIpSource;
use crate::fields::Fields;
use crate::frame::Headers;
use core::net::IpAddr;
use std::borrow::Cow;

/// A response header: names and many values are the relay's own constants,
/// and borrowing them saves two allocations per header on every call.
pub type Header = (Cow<'static, str>, Cow<'static, str>);

/// A complete response the relay makes or relays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// HTTP status to send.
    pub status: u16,
    /// Headers to send; the driver adds the framing and connection ones.
    pub headers: Vec<Header>,
    /// The whole body (empty for a status that has none).
    pub body: Vec<u8>,
}

/// Response head of a streamed answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// HTTP status to send.
    pub status: u16,
    /// Headers to send; the driver adds the framing and connection ones.
    pub headers: Vec<Header>,
}

const ACAO: &str = "access-control-allow-origin";

/// `0x<40 hex>.<base_domain>[:port]`, case-insensitive, to the agent address.
pub fn agent_from_host(host: &str, base_domain: &str) -> Option<Address> {
    // The label is exactly `0x` and 40 hex digits, so its dot is byte 42:
    // every call's host is read here, without searching it twice.
    let (label, rest) = (host.get(..42)?, host.get(42..)?.strip_prefix('.')?);
    // The last colon, by a plain loop: the rest is a short domain.
    let domain = match rest.bytes().rposition(|b| b == b':') {
        Some(i) => {
            let port = &rest.as_bytes()[i + 1..];
            if port.is_empty() || !port.iter().all(u8::is_ascii_digit) {
                return None;
            }
            &rest[..i]
        }
        None => rest,
    };
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if !domain.eq_ignore_ascii_case(base_domain) {
        return None;
    }
    parse_address(label)
}

/// The caller's IP per the configured source; falls back to the TCP peer.
pub fn client_ip(headers: Fields<'_>, peer: IpAddr, source: &ClientIpSource) -> IpAddr {
    let ClientIpSource::Header(name) = source else {
        return peer;
    };
    let value = (headers.iter())
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .last()
        .map(|(_, v)| v);
    let candidate = match value {
        Some(v) if name == "x-forwarded-for" => v.rsplit(',').next(),
        other => other,
    };
    candidate
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(peer)
}

/// The key per-IP limits count under: an IPv4 address, or an IPv6 /64 (one
/// subscriber usually holds a whole /64, so per-/128 limits would bind nothing).
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(core::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

/// Never forwarded to a tunnel: hop-by-hop, proxy-internal, or the caller's secrets.
fn strip_request_header(name: &str) -> bool {
    stripped(name.as_bytes())
}

/// [`strip_request_header`] of a lowercase name's bytes.
fn stripped(name: &[u8]) -> bool {
    hop_request_header(name)
        || matches!(
            name,
            b"cookie"
                | b"proxy-authorization"
                | b"x-forwarded-proto"
                | b"x-forwarded-host"
                | b"x-forwarded-port"
                | b"x-forwarded-for"
                | b"x-real-ip"
                | b"x-agent-address"
        )
        // The relay's own (the hop secret, diagnostics): never a caller's to set.
        || name.starts_with(b"x-relay-")
        || name.starts_with(b"fly-")
        || name.starts_with(b"cf-")
}

/// [`strip_request_header`] for a name in any case, without an allocation:
/// every stripped name is short, and longer ones can only match a prefix.
fn strips(name: &str) -> bool {
    let mut lower = [0u8; 24];
    let n = name.len().min(lower.len());
    lower[..n].copy_from_slice(&name.as_bytes()[..n]);
    lower.make_ascii_lowercase();
    match name.len() <= lower.len() {
        true => stripped(&lower[..n]),
        false => [&b"x-relay-"[..], b"fly-", b"cf-"]
            .iter()
            .any(|p| lower.starts_with(p)),
    }
}

/// Request headers (lowercase) that describe one connection, not the request:
/// a proxy never passes them on.
pub fn is_hop_request_header(name: &str) -> bool {
    hop_request_header(name.as_bytes())
}

fn hop_request_header(name: &[u8]) -> bool {
    matches!(
        name,
        b"host"
            | b"connection"
            | b"keep-alive"
            | b"proxy-connection"
            | b"te"
            | b"trailer"
            | b"transfer-encoding"
            | b"upgrade"
            | b"expect"
    )
}

/// The request headers a tunnel sees: lowercased names, repeated names joined
/// with ", ", stripped per the rules, then `x-agent-address` and `x-forwarded-for`.
pub fn forward_headers(headers: Fields<'_>, agent: &Address, ip: IpAddr) -> Headers {
    let mut out = caller_headers(headers);
    let mut ip_text = String::new();
    crate::frame::push_ip(&mut ip_text, ip);
    out.0
        .push(("x-agent-address".into(), crate::auth::to_lower(agent)));
    out.0.push(("x-forwarded-for".into(), ip_text));
    out
}

/// The caller's headers a tunnel sees, without the two the relay adds
/// ([`forward_headers`]); written straight into the frame instead.
pub(crate) fn caller_headers(headers: Fields<'_>) -> Headers {
    let listed_in_connection: Vec<String> = (headers.iter())
        .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in headers.iter() {
        let k = k.to_ascii_lowercase();
        if strip_request_header(&k) || listed_in_connection.contains(&k) {
            continue;
        }
        match out.iter_mut().find(|(ek, _)| *ek == k) {
            Some((_, ev)) => {
                ev.push_str(", ");
                ev.push_str(v);
            }
            None => out.push((k, v.to_owned())),
        }
    }
    Headers(out)
}

/// Whether [`caller_headers`] would only drop and lowercase `headers`: no
/// name repeats and there is no `connection` header (whose list names more
/// to drop). Then the frame is written from the fields as they are.
pub(crate) fn plain_fields(headers: Fields<'_>) -> bool {
    // Past this many, the copy is cheap next to the checks.
    let mut names = [""; 32];
    for (i, (k, _)) in headers.iter().enumerate() {
        if i == names.len() {
            return false;
        }
        let same = |e: &&str| e.len() == k.len() && e.eq_ignore_ascii_case(k);
        if k.eq_ignore_ascii_case("connection") || names[..i].iter().any(same) {
            return false;
        }
        names[i] = k;
    }
    true
}

/// The fields a tunnel sees of a call whose fields are [`plain_fields`]:
/// [`caller_headers`] without building it (names still as sent).
pub(crate) fn forwarded_fields<'a>(
    headers: Fields<'a>,
) -> impl Iterator<Item = (&'a str, &'a str)> + Clone {
    headers.iter().filter(|(k, _)| !strips(k))
}

/// RFC 9110 token characters (header names, codings): the one definition
/// the engine's rules and the HTTP/1.1 codec share.
pub fn is_token(name: impl AsRef<[u8]>) -> bool {
    let name = name.as_ref();
    // A table: every header of every answer is checked on its way out.
    !name.is_empty() && name.iter().all(|&b| TOKEN[usize::from(b)])
}

static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    t
};

/// Visible characters, spaces, tabs and non-ASCII; no CR, LF, NUL or other controls.
pub fn is_field_value(value: impl AsRef<[u8]>) -> bool {
    value
        .as_ref()
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Never relayed back to callers (a lowercase name): hop-by-hop and
/// framing (the relay frames).
fn strip_response_header(name: &[u8]) -> bool {
    matches!(
        name,
        b"transfer-encoding"
            | b"connection"
            | b"keep-alive"
            | b"upgrade"
            | b"proxy-authenticate"
            | b"proxy-authorization"
            | b"proxy-connection"
            | b"te"
            | b"trailer"
            | b"content-length"
    ) || name.starts_with(b"x-relay-")
}

/// Most headers an answer may carry (as the reference relay).
pub const MAX_ANSWER_HEADERS: usize = 128;
/// Longest header name in an answer, in bytes.
pub const MAX_HEADER_NAME_BYTES: usize = 256;
/// Longest header value in an answer, in bytes.
pub const MAX_HEADER_VALUE_BYTES: usize = 16 * 1024;

/// One header of a tunnel's answer against the limits.
fn check_answer_header(k: &str, v: &str) -> Result<(), &'static str> {
    if !is_token(k) {
        return Err("invalid header name");
    }
    if k.len() > MAX_HEADER_NAME_BYTES {
        return Err("header name over 256 bytes");
    }
    if !is_field_value(v) {
        return Err("invalid header value");
    }
    if v.len() > MAX_HEADER_VALUE_BYTES {
        return Err("header value over 16 KiB");
    }
    Ok(())
}

const EXPOSE: &str = "access-control-expose-headers";

/// Validates and sanitises a tunnel's response headers, adding CORS.
pub fn response_headers(h: Headers) -> Result<Vec<Header>, &'static str> {
    if h.0.len() > MAX_ANSWER_HEADERS {
        return Err("more than 128 headers");
    }
    // Room for CORS and the diagnostic headers added later.
    let mut out: Vec<Header> = Vec::with_capacity(h.0.len() + 6);
    for (mut k, v) in h.0 {
        check_answer_header(&k, &v)?;
        k.make_ascii_lowercase();
        if !strip_response_header(k.as_bytes()) {
            out.push((k.into(), v.into()));
        }
    }
    if !out.iter().any(|(k, _)| k == ACAO) {
        out.push((ACAO.into(), "*".into()));
    }
    if !out.iter().any(|(k, _)| k == EXPOSE) {
        out.push((EXPOSE.into(), "*".into()));
    }
    Ok(out)
}

/// [`response_headers`] written as header lines straight from the frame.
pub(crate) fn write_response_headers(
    out: &mut Vec<u8>,
    h: crate::frame::fast::RawHeaders<'_>,
) -> Result<(), &'static str> {
    use crate::frame::fast::unescape;
    if h.len() > MAX_ANSWER_HEADERS {
        return Err("more than 128 headers");
    }
    let (mut acao, mut expose) = (false, false);
    let mut lower = [0; MAX_HEADER_NAME_BYTES];
    for (k, v) in h.iter() {
        let (k, v) = (
            unescape(k).unwrap_or_default(),
            unescape(v).unwrap_or_default(),
        );
        check_answer_header(&k, &v)?;
        let l = &mut lower[..k.len()];
        l.copy_from_slice(k.as_bytes());
        l.make_ascii_lowercase();
        if !strip_response_header(l) {
            acao |= l == ACAO.as_bytes();
            expose |= l == EXPOSE.as_bytes();
            crate::wire::http1::write_field(out, l, v.as_bytes());
        }
    }
    if !(acao || expose) {
        // Nearly every answer: both, as one line pair.
        out.extend_from_slice(
            b"access-control-allow-origin: *\r\naccess-control-expose-headers: *\r\n",
        );
        return Ok(());
    }
    for (name, seen) in [(ACAO, acao), (EXPOSE, expose)] {
        if !seen {
            crate::wire::http1::write_field(out, name.as_bytes(), b"*");
        }
    }
    Ok(())
}

/// 204, 205 and 304 carry no body bytes whatever the tunnel sent.
pub fn status_has_body(status: u16) -> bool {
    !matches!(status, 204 | 205 | 304)
}

fn json(status: u16, body: String, cors: bool) -> Response {
    let mut headers = vec![("content-type".into(), "application/json".into())];
    if cors {
        headers.push((ACAO.into(), "*".into()));
    }
    Response {
        status,
        headers,
        body: body.into_bytes(),
    }
}

/// `{"error":"<code>"}` with CORS: every relay-made error on an agent host.
pub fn error(status: u16, code: &str) -> Response {
    json(status, format!(r#"{{"error":"{code}"}}"#), true)
}

/// A JSON answer of the relay's own endpoints.
pub fn json_response(status: u16, body: &serde_json::Value) -> Response {
    json(status, body.to_string(), false)
}

/// The CORS preflight answer; requested headers are allowed when well-formed
/// (browser MCP clients send their own), else the reference relay's list.
pub fn preflight(request_headers: Fields<'_>) -> Response {
    let asked = request_headers
        .get("access-control-request-headers")
        .filter(|v| !v.trim().is_empty() && v.split(',').all(|t| is_token(t.trim())));
    // The reference's list, then what was asked, each name once.
    let mut names: Vec<String> = ["content-type", "authorization", "x-request-id"]
        .map(String::from)
        .into();
    for t in asked.into_iter().flat_map(|v| v.split(',')) {
        let t = t.trim().to_ascii_lowercase();
        if !names.contains(&t) {
            names.push(t);
        }
    }
    let allow = names.join(", ");
    let pairs = [
        (ACAO, "*".to_string()),
        (
            "access-control-allow-methods",
            "GET, POST, PUT, PATCH, DELETE, OPTIONS".into(),
        ),
        ("access-control-allow-headers", allow),
        ("access-control-max-age", "86400".into()),
    ];
    Response {
        status: 204,
        headers: pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect(),
        body: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
