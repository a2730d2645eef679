//! Strict request-head parsing (RFC 9112) on top of `httparse`.
//!
//! Request-target forms: origin-form (`/path`) is returned as sent; `*` only
//! for OPTIONS; absolute-form (`http://host/path`) is accepted for the http and
//! https schemes and reduced to its path and query, provided its authority
//! equals the Host header (if there is no Host header, HTTP/1.0 only, the
//! authority becomes `host`). Authority-form and anything else is rejected.

use crate::fields::{Fields, Span};
use crate::http::is_token;
use std::borrow::Cow;
use std::fmt;
use std::mem::MaybeUninit;

/// Longer methods get 501, as RFC 9112 section 3 suggests.
pub const MAX_METHOD_LEN: usize = 32;

/// Bounds on a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Largest head in bytes, final CRLF included (then 431).
    pub max_head_bytes: usize,
    /// Most header lines (then 431).
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_head_bytes: 16384,
            max_headers: 100,
        }
    }
}

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// A `content-length` of this many bytes.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
}

/// A request head that passed every check, borrowed from the bytes it was
/// read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead<'a> {
    /// Request method, as sent (at most [`MAX_METHOD_LEN`] bytes).
    pub method: &'a str,
    /// Path and query (absolute-form reduced to them), or `*` for OPTIONS.
    pub target: Cow<'a, str>,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor_version: u8,
    /// Every header in order: names as sent, values trimmed of spaces and tabs.
    pub headers: Fields<'a>,
    /// How the body after the head is delimited.
    pub body: BodyFraming,
    /// The connection may carry another request after this one.
    pub keep_alive: bool,
    /// HTTP/1.1 `expect: 100-continue`: the client waits for 100 before the body.
    pub expect_continue: bool,
    /// `sec-websocket-key` of a well-formed WebSocket upgrade; `None` otherwise.
    pub websocket_key: Option<&'a str>,
    /// The `Host` header, or the absolute-form authority when there is none (HTTP/1.0).
    pub host: Option<&'a str>,
}

/// Why a request head was refused, with the status to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// 400, with what was wrong.
    BadRequest(&'static str),
    /// 431: over the head size or header count limit.
    HeadTooLarge,
    /// 501, with what is not implemented (a transfer coding, a long method).
    NotImplemented(&'static str),
    /// 505: a well-formed HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
}

impl HeadError {
    /// The relay's answer to such a head.
    pub fn call_error(&self) -> crate::CallError {
        match self {
            BadRequest(_) => crate::CallError::BadRequest,
            HeadTooLarge => crate::CallError::HeadersTooLarge,
            NotImplemented(_) => crate::CallError::NotImplemented,
            VersionNotSupported => crate::CallError::HttpVersionNotSupported,
        }
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        self.parts().0
    }

    /// What was wrong, in a few words.
    pub fn reason(&self) -> &'static str {
        self.parts().1
    }

    fn parts(&self) -> (u16, &'static str) {
        match *self {
            BadRequest(r) => (400, r),
            HeadTooLarge => (431, "request header fields too large"),
            NotImplemented(r) => (501, r),
            VersionNotSupported => (505, "HTTP version not supported"),
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.reason())
    }
}

impl std::error::Error for HeadError {}

use HeadError::{BadRequest, HeadTooLarge, NotImplemented, VersionNotSupported};

type ParseResult<'a> = Result<Option<(RequestHead<'a>, usize)>, HeadError>;

/// Header slots kept on the stack; larger configured limits use the heap.
const STACK_SLOTS: usize = 128;

/// Parses one request head from the start of `buf`; `Ok(None)`: need more bytes.
/// On success also returns the head's length; the body (if any) follows it.
pub fn parse_head<'a>(buf: &'a [u8], limits: &HeadLimits) -> ParseResult<'a> {
    parse(buf, limits, None)
}

/// [`parse_head`], the fields' places kept in `spans` (a connection's, reused
/// from head to head): the engine's passes over the fields then slice them
/// instead of searching each line again.
pub fn parse_head_in<'a>(
    buf: &'a [u8],
    limits: &HeadLimits,
    spans: &'a mut Vec<Span>,
) -> ParseResult<'a> {
    parse(buf, limits, Some(spans))
}

fn parse<'a>(
    buf: &'a [u8],
    limits: &HeadLimits,
    spans: Option<&'a mut Vec<Span>>,
) -> ParseResult<'a> {
    let over_limit = buf.len() > limits.max_head_bytes;
    // Parsing only up to the limit bounds the work per call.
    let window = buf.get(..limits.max_head_bytes).unwrap_or(buf);
    // A header line takes at least 3 bytes, so more slots could never be used.
    let slots = limits
        .max_headers
        .min((limits.max_head_bytes / 3).saturating_add(1));
    // Uninitialised slots: no allocation and no zeroing per request.
    let mut stack = [MaybeUninit::<httparse::Header<'_>>::uninit(); STACK_SLOTS];
    let mut heap = Vec::new();
    let slots = if slots <= STACK_SLOTS {
        &mut stack[..slots]
    } else {
        heap.reserve_exact(slots);
        &mut heap.spare_capacity_mut()[..slots]
    };
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(window, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if over_limit => return Err(HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadTooLarge),
        Err(httparse::Error::Version) => return version_error(window, over_limit),
        Err(httparse::Error::HeaderName) => return Err(BadRequest("invalid header name")),
        Err(httparse::Error::HeaderValue) => return Err(BadRequest("invalid header value")),
        Err(httparse::Error::NewLine) => return Err(BadRequest("invalid line ending")),
        Err(_) => return Err(BadRequest("invalid request line")),
    };
    // httparse accepts bare LF line endings; a proxy must not (smuggling).
    let head = window.get(..len).unwrap_or(window);
    // Only the line ends are looked at, found a word at a time.
    let bare_lf = memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r');
    if bare_lf {
        return Err(BadRequest("bare LF line ending"));
    }
    let method = req.method.ok_or(BadRequest("missing method"))?;
    let target = req.path.ok_or(BadRequest("missing target"))?;
    let minor_version = req.version.ok_or(BadRequest("missing version"))?;
    if method.len() > MAX_METHOD_LEN {
        return Err(NotImplemented("method too long"));
    }
    // The whole head as text once: only header values can hold other bytes.
    let text = std::str::from_utf8(head).map_err(|_| BadRequest("header value is not UTF-8"))?;
    // The header lines, from the first name to the end of the last value.
    let at = |p: *const u8| (p as usize).wrapping_sub(head.as_ptr() as usize);
    let block = match (req.headers.first(), req.headers.last()) {
        (Some(first), Some(last)) => {
            let end = at(last.value.as_ptr()) + last.value.len();
            let block = text.get(at(first.name.as_ptr())..end);
            block.ok_or(BadRequest("invalid header block"))?
        }
        _ => "",
    };
    let fields = match spans {
        // Offsets fit a u32 for any head a limit lets through.
        Some(spans) if block.len() <= u32::MAX as usize => {
            let from = at(block.as_ptr());
            spans.clear();
            spans.extend(req.headers.iter().map(|h| {
                let name = at(h.name.as_ptr()) - from;
                // httparse trims a value's spaces and tabs itself (the
                // proptest against the block form holds it to that).
                let value = at(h.value.as_ptr()) - from;
                Span {
                    name: [name as u32, (name + h.name.len()) as u32],
                    value: [value as u32, (value + h.value.len()) as u32],
                }
            }));
            Fields::Spans(block, spans)
        }
        _ => Fields::Block(block),
    };
    let head = build(method, target, minor_version, fields)?;
    Ok(Some((head, len)))
}

/// httparse reports `HTTP/2.0` and `HTTP/1.2` like garbage; tell them apart.
fn version_error(window: &[u8], over_limit: bool) -> ParseResult<'static> {
    let start = window.iter().position(|&b| b != b'\r' && b != b'\n');
    let rest = start.and_then(|s| window.get(s..)).unwrap_or(&[]);
    let end = rest.iter().position(|&b| b == b'\r' || b == b'\n');
    let line = rest.get(..end.unwrap_or(rest.len())).unwrap_or(&[]);
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or(&[]);
    let shaped = version.iter().zip(b"HTTP/d.d").all(|(&c, &p)| match p {
        b'd' => c.is_ascii_digit(),
        _ => c == p,
    });
    match (shaped, end) {
        (true, Some(_)) if version.len() == 8 => Err(VersionNotSupported),
        (true, None) if version.len() < 8 && over_limit => Err(HeadTooLarge),
        (true, None) if version.len() < 8 => Ok(None),
        _ => Err(BadRequest("invalid HTTP version")),
    }
}

/// The headers `build` reads, found in one pass: (first value, more than one).
#[derive(Default)]
struct Known<'a> {
    content_length: (Option<&'a str>, bool),
    transfer_encoding: (Option<&'a str>, bool),
    host: (Option<&'a str>, bool),
    ws_version: (Option<&'a str>, bool),
    ws_key: (Option<&'a str>, bool),
    close: bool,
    keep_alive: bool,
    connection_upgrade: bool,
    expect_continue: bool,
    upgrade_websocket: bool,
}

fn note<'a>(slot: &mut (Option<&'a str>, bool), v: &'a str) {
    match slot.0 {
        None => slot.0 = Some(v),
        Some(_) => slot.1 = true,
    }
}

impl<'a> Known<'a> {
    fn read(fields: Fields<'a>) -> Self {
        let mut k = Known::default();
        for (name, v) in fields.iter() {
            // Lengths first: most names are none of these.
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            match name.len() {
                4 if is("host") => note(&mut k.host, v),
                6 if is("expect") => k.expect_continue |= v.eq_ignore_ascii_case("100-continue"),
                7 if is("upgrade") => k.upgrade_websocket |= has_token(v, "websocket"),
                10 if is("connection") => {
                    k.close |= has_token(v, "close");
                    k.keep_alive |= has_token(v, "keep-alive");
                    k.connection_upgrade |= has_token(v, "upgrade");
                }
                14 if is("content-length") => note(&mut k.content_length, v),
                17 if is("transfer-encoding") => note(&mut k.transfer_encoding, v),
                17 if is("sec-websocket-key") => note(&mut k.ws_key, v),
                21 if is("sec-websocket-version") => note(&mut k.ws_version, v),
                _ => {}
            }
        }
        k
    }
}

fn build<'a>(
    method: &'a str,
    target: &'a str,
    minor_version: u8,
    headers: Fields<'a>,
) -> Result<RequestHead<'a>, HeadError> {
    let k = Known::read(headers);
    let body = match (k.content_length, k.transfer_encoding) {
        (_, (Some(_), _)) if minor_version == 0 => {
            return Err(BadRequest("transfer-encoding in HTTP/1.0"))
        }
        ((Some(_), _), (Some(_), _)) => {
            return Err(BadRequest("both content-length and transfer-encoding"))
        }
        ((None, _), (None, _)) => BodyFraming::None,
        ((Some(cl), false), (None, _)) => BodyFraming::Length(parse_length(cl)?),
        ((Some(_), true), (None, _)) => return Err(BadRequest("multiple content-length headers")),
        ((None, _), (Some(te), false)) => transfer_coding(te)?,
        ((None, _), (Some(_), true)) => {
            return Err(BadRequest("multiple transfer-encoding headers"))
        }
    };

    let mut host = match k.host {
        (None, _) if minor_version == 1 => return Err(BadRequest("missing host header")),
        (None, _) => None,
        (Some(h), false) if valid_authority(h) => Some(h),
        (Some(_), false) => return Err(BadRequest("invalid host header")),
        (Some(_), true) => return Err(BadRequest("multiple host headers")),
    };
    let target = normalize_target(method, target, &mut host)?;

    let keep_alive = match minor_version {
        1 => !k.close,
        _ => !k.close && k.keep_alive,
    };
    let expect_continue = minor_version == 1 && k.expect_continue;
    let websocket_key = match (k.ws_version, k.ws_key) {
        ((Some("13"), false), (Some(key), false))
            if k.upgrade_websocket
                && method == "GET"
                && minor_version == 1
                && k.connection_upgrade
                // A body on an upgrade request would desync the tunnel.
                && matches!(body, BodyFraming::None | BodyFraming::Length(0))
                && valid_websocket_key(key) =>
        {
            Some(key)
        }
        _ => None,
    };

    Ok(RequestHead {
        method,
        target,
        minor_version,
        headers,
        body,
        keep_alive,
        expect_continue,
        websocket_key,
        host,
    })
}

fn parse_length(v: &str) -> Result<u64, HeadError> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadRequest("invalid content-length"));
    }
    v.parse()
        .map_err(|_| BadRequest("content-length too large"))
}

/// Only a lone `chunked` is supported; everything else is refused.
fn transfer_coding(v: &str) -> Result<BodyFraming, HeadError> {
    let codings: Vec<&str> = v.split(',').map(trim_ows).collect();
    if codings.iter().any(|c| !is_token(c.as_bytes())) {
        return Err(BadRequest("malformed transfer-encoding"));
    }
    let is_chunked = |c: &str| c.eq_ignore_ascii_case("chunked");
    match codings.iter().filter(|c| is_chunked(c)).count() {
        1 if codings.len() == 1 => Ok(BodyFraming::Chunked),
        n if n > 1 => Err(BadRequest("chunked applied more than once")),
        1 if !codings.last().is_some_and(|c| is_chunked(c)) => {
            Err(BadRequest("chunked is not final"))
        }
        _ => Err(NotImplemented("unsupported transfer-coding")),
    }
}

fn normalize_target<'a>(
    method: &str,
    target: &'a str,
    host: &mut Option<&'a str>,
) -> Result<Cow<'a, str>, HeadError> {
    // Fragments never belong in a request; non-ASCII must be percent-encoded.
    if !target.is_ascii() || target.contains('#') {
        return Err(BadRequest("invalid request target"));
    }
    if target.starts_with('/') {
        return Ok(Cow::Borrowed(target));
    }
    if target == "*" {
        return match method {
            "OPTIONS" => Ok(Cow::Borrowed(target)),
            _ => Err(BadRequest("asterisk-form only allowed for OPTIONS")),
        };
    }
    let scheme = |p: &str| {
        let head = target.get(..p.len())?;
        head.eq_ignore_ascii_case(p)
            .then(|| target.get(p.len()..))?
    };
    let rest = scheme("http://")
        .or_else(|| scheme("https://"))
        .ok_or(BadRequest("invalid request target"))?;
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() || !valid_authority(authority) {
        return Err(BadRequest("invalid authority in request target"));
    }
    match host {
        Some(h) if !h.eq_ignore_ascii_case(authority) => {
            return Err(BadRequest("host header does not match request target"))
        }
        Some(_) => {}
        None => *host = Some(authority),
    }
    Ok(match path.as_bytes().first() {
        None => Cow::Borrowed("/"),
        Some(b'?') => Cow::Owned(format!("/{path}")),
        Some(_) => Cow::Borrowed(path),
    })
}

/// uri-host [":" port] characters; userinfo ('@') is deliberately excluded.
fn valid_authority(h: &str) -> bool {
    // A table: every request's host is checked.
    h.bytes().all(|b| AUTHORITY[usize::from(b)])
}

static AUTHORITY: [bool; 256] = {
    let (mut t, mut i) = ([false; 256], 0);
    while i < 256 {
        t[i] = (i as u8).is_ascii_alphanumeric();
        i += 1;
    }
    let extra = b"-._~!$&'()*+,;=:[]%";
    let mut j = 0;
    while j < extra.len() {
        t[extra[j] as usize] = true;
        j += 1;
    }
    t
};

fn trim_ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

fn has_token(list: &str, token: &str) -> bool {
    list.split(',')
        .any(|t| trim_ows(t).eq_ignore_ascii_case(token))
}

/// base64 of 16 bytes: 22 alphabet characters and "==".
fn valid_websocket_key(key: &str) -> bool {
    let b64 = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
    key.len() == 24 && key.ends_with("==") && key.bytes().take(22).all(b64)
}

#[cfg(test)]
mod tests;
