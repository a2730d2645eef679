//! A fast path for the answer frames as the app and our clients send them
//! (`response`, `stream_start`, `stream_chunk`, `stream_end`): one compact
//! object of the known keys, strings, a plain status and a flat object of
//! string headers. The id is borrowed from the frame and every string is
//! unescaped in the same pass that finds its end. Anything else (whitespace,
//! other or repeated keys, an escaped id, a status outside 200-599) goes to
//! the full parser, which gives the same answer (tested).

use super::{base64_from_json, Body, ChunkData, ClientFrame, Headers, Inbound};

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// A plain stream frame, borrowing the call's id from the text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fast<'a> {
    Chunk {
        id: &'a str,
        data: String,
    },
    End {
        id: &'a str,
    },
    Response {
        id: &'a str,
        status: u16,
        headers: RawHeaders<'a>,
        body: RawBody<'a>,
    },
    Start {
        id: &'a str,
        status: u16,
        headers: Headers,
    },
}

impl Fast<'_> {
    pub(crate) fn into_inbound(self) -> Inbound {
        Inbound::Frame(match self {
            Fast::Chunk { id, data } => ClientFrame::StreamChunk {
                id: id.to_string(),
                data: ChunkData(Body::Text(data)),
            },
            Fast::End { id } => ClientFrame::StreamEnd { id: id.to_string() },
            Fast::Response {
                id,
                status,
                headers,
                body,
            } => ClientFrame::Response {
                id: id.to_string(),
                status,
                headers: headers.to_headers(),
                body: body.into_body(),
            },
            Fast::Start {
                id,
                status,
                headers,
            } => ClientFrame::StreamStart {
                id: id.to_string(),
                status,
                headers,
            },
        })
    }
}

/// The first byte at or after `i` that is a quote, a backslash or below
/// 0x20, eight bytes per step.
fn next_special(b: &[u8], mut i: usize) -> Option<usize> {
    let zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
    while let Some(word) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let m =
            (w.wrapping_sub(0x20 * LO) & !w & HI) | zero(w ^ (0x22 * LO)) | zero(w ^ (0x5c * LO));
        if m != 0 {
            // The lowest flag is exact (false alarms only sit above a true one).
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    (b.get(i..)?.iter())
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|p| i + p)
}

/// A string without escapes at the start of `s`: its inside, and what follows.
fn plain_at(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    if b.first() != Some(&b'"') {
        return None;
    }
    let at = next_special(b, 1)?;
    (b[at] == b'"').then(|| (&s[1..at], &s[at + 1..]))
}

/// Four hex digits.
fn hex4(b: &[u8]) -> Option<u32> {
    b.iter()
        .try_fold(0u32, |n, &c| Some(n << 4 | (c as char).to_digit(16)?))
}

/// One escape at the start of `b` (after its backslash): the character and
/// the bytes it took, backslash included. Lone surrogates: `None`.
fn escape(b: &[u8]) -> Option<(char, usize)> {
    let c = match b.first()? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\x08',
        b'f' => '\x0c',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let hi = hex4(b.get(1..5)?)?;
            return match hi {
                0xD800..=0xDBFF => {
                    if b.get(5..7)? != b"\\u" {
                        return None;
                    }
                    let lo = hex4(b.get(7..11)?)?;
                    if !(0xDC00..=0xDFFF).contains(&lo) {
                        return None;
                    }
                    let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                    Some((char::from_u32(c)?, 12))
                }
                c => Some((char::from_u32(c)?, 6)),
            };
        }
        _ => return None,
    };
    Some((c, 2))
}

/// The JSON string at the start of `s`, unescaped into `out` (emptied
/// first), and what follows it.
fn unescaped_at(s: &str, mut out: String) -> Option<(String, &str)> {
    let b = s.as_bytes();
    if b.first() != Some(&b'"') {
        return None;
    }
    out.clear();
    let (mut i, mut escaped) = (1, false);
    loop {
        let at = next_special(b, i)?;
        match b[at] {
            b'"' => {
                out.push_str(&s[i..at]);
                return Some((out, &s[at + 1..]));
            }
            b'\\' => {
                if !escaped {
                    // Unescaped text is never longer than the rest of the frame.
                    out.reserve(s.len());
                    escaped = true;
                }
                let (c, used) = escape(&b[at + 1..])?;
                out.push_str(&s[i..at]);
                out.push(c);
                i = at + used;
            }
            _ => return None,
        }
    }
}

/// The JSON string at the start of `s` as written, quotes included, and
/// what follows it; its escapes are checked, not undone.
fn raw_at(s: &str) -> Option<(&str, &str)> {
    raw_plain_at(s).map(|(raw, rest, _)| (raw, rest))
}

/// [`raw_at`], and whether the string has no escape.
fn raw_plain_at(s: &str) -> Option<(&str, &str, bool)> {
    let b = s.as_bytes();
    if b.first() != Some(&b'"') {
        return None;
    }
    let (mut i, mut plain) = (1, true);
    loop {
        let at = next_special(b, i)?;
        match b[at] {
            b'"' => return Some((&s[..at + 1], &s[at + 1..], plain)),
            b'\\' => (i, plain) = (at + escape(&b[at + 1..])?.1, false),
            _ => return None,
        }
    }
}

/// A status as the full parser takes it: three digits, 200-599.
fn status_at(s: &str) -> Option<(u16, &str)> {
    match s.as_bytes() {
        [a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', rest @ ..] => {
            // A fourth digit, a fraction or an exponent: the full parser decides.
            if matches!(rest.first(), Some(b'0'..=b'9' | b'.' | b'e' | b'E')) {
                return None;
            }
            let n = |d: &u8| u16::from(d - b'0');
            Some((n(a) * 100 + n(b) * 10 + n(c), &s[3..]))
        }
        _ => None,
    }
}

/// A `response` frame's headers as written: a flat object of strings,
/// checked when the frame was read, unescaped only when looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawHeaders<'a> {
    /// The object, braces included.
    text: &'a str,
    len: usize,
}

impl<'a> RawHeaders<'a> {
    /// Each name and value, as written (quoted, escapes kept).
    pub(crate) fn iter(self) -> RawPairs<'a> {
        RawPairs(&self.text[1..])
    }

    /// The object's text, braces included.
    pub(crate) fn text(self) -> &'a str {
        self.text
    }

    /// How many pairs there are.
    pub(crate) fn len(self) -> usize {
        self.len
    }

    pub(crate) fn to_headers(self) -> Headers {
        let text = |raw| unescape(raw).map(String::from).unwrap_or_default();
        Headers(self.iter().map(|(k, v)| (text(k), text(v))).collect())
    }
}

/// Iterator over [`RawHeaders`].
pub(crate) struct RawPairs<'a>(&'a str);

impl<'a> Iterator for RawPairs<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let (k, after) = raw_at(self.0)?;
        let (v, after) = raw_at(after.strip_prefix(':')?)?;
        // Past a comma the next pair; at the closing brace, nothing more.
        self.0 = after.strip_prefix(',').unwrap_or(after);
        Some((k, v))
    }
}

/// A quoted JSON string (checked) as text: borrowed when it has no escape.
pub(crate) fn unescape(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    let inner = raw.get(1..raw.len().checked_sub(1)?)?;
    if !inner.contains('\\') {
        return Some(inner.into());
    }
    unescaped_at(raw, String::new()).map(|(s, _)| s.into())
}

/// Calls `f` with each piece of a quoted JSON string (checked) unescaped:
/// the runs between escapes, and each escaped character.
fn each_piece(raw: &str, mut f: impl FnMut(&str)) {
    let (b, end) = (raw.as_bytes(), raw.len().saturating_sub(1));
    let mut i = 1;
    while let Some(at) = next_special(b, i).filter(|&at| at < end) {
        f(&raw[i..at]);
        let Some((c, used)) = escape(&b[at + 1..]) else {
            return;
        };
        f(c.encode_utf8(&mut [0; 4]));
        i = at + used;
    }
    f(raw.get(i..end).unwrap_or(""));
}

/// A `response` frame's body as read: text still escaped as written, or
/// base64 already decoded (checking it needs decoding it).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RawBody<'a> {
    Empty,
    /// A quoted JSON string, checked; `plain`: it has no escape.
    Text {
        raw: &'a str,
        plain: bool,
    },
    Binary(Vec<u8>),
}

impl RawBody<'_> {
    /// The body's length, unescaped or decoded.
    pub(crate) fn len(&self) -> usize {
        match self {
            RawBody::Empty => 0,
            RawBody::Text { raw, plain: true } => raw.len() - 2,
            RawBody::Text { raw, .. } => {
                let mut n = 0;
                each_piece(raw, |p| n += p.len());
                n
            }
            RawBody::Binary(b) => b.len(),
        }
    }

    /// Appends the body's bytes.
    pub(crate) fn write_into(&self, out: &mut Vec<u8>) {
        match self {
            RawBody::Empty => {}
            RawBody::Text { raw, plain: true } => {
                out.extend_from_slice(&raw.as_bytes()[1..raw.len() - 1])
            }
            RawBody::Text { raw, .. } => each_piece(raw, |p| out.extend_from_slice(p.as_bytes())),
            RawBody::Binary(b) => out.extend_from_slice(b),
        }
    }

    pub(crate) fn into_body(self) -> Body {
        match self {
            RawBody::Empty => Body::default(),
            RawBody::Text { raw, .. } => {
                Body::Text(unescape(raw).map(String::from).unwrap_or_default())
            }
            RawBody::Binary(b) => Body::Binary(b),
        }
    }
}

/// A flat object of string values at the start of `s`, checked and kept as
/// written, and what follows it.
fn raw_headers_at(s: &str) -> Option<(RawHeaders<'_>, &str)> {
    let mut rest = s.strip_prefix('{')?;
    if let Some(after) = rest.strip_prefix('}') {
        return Some((
            RawHeaders {
                text: &s[..2],
                len: 0,
            },
            after,
        ));
    }
    let mut len = 0;
    loop {
        let (_, after) = raw_at(rest)?;
        let (_, after) = raw_at(after.strip_prefix(':')?)?;
        len += 1;
        match after.as_bytes().first()? {
            b',' => rest = &after[1..],
            b'}' => {
                let text = &s[..s.len() - after.len() + 1];
                return Some((RawHeaders { text, len }, &after[1..]));
            }
            _ => return None,
        }
    }
}

/// The frame's type.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ty {
    Chunk,
    End,
    Response,
    Start,
}

/// The frame, when `text` is a plain answer frame.
pub(crate) fn parse(text: &str) -> Option<Fast<'_>> {
    parse_in(text, &mut Vec::new())
}

/// The same, with a chunk's `data` unescaped into a buffer from `spare`
/// (recycled ones): no allocation when it has room. Only a chunk takes one.
pub(crate) fn parse_in<'t>(text: &'t str, spare: &mut Vec<Vec<u8>>) -> Option<Fast<'t>> {
    let mut rest = text.strip_prefix('{')?;
    let (mut ty, mut id, mut data, mut status, mut headers) = (None, None, None, None, None);
    // A body is kept as written: text, or base64 decoded at the end if
    // `bodyEncoding` says so.
    let (mut raw, mut base64) = (None, None);
    loop {
        // Keys compared as literals: a key with an escape is not plain.
        let key = rest.as_bytes().get(1..3)?;
        let (key, slot) = match key {
            b"ty" => (r#""type":"#, 0),
            b"id" => (r#""id":"#, 1),
            b"da" => (r#""data":"#, 2),
            b"st" => (r#""status":"#, 3),
            b"he" => (r#""headers":"#, 4),
            b"bo" if rest.as_bytes().get(5) == Some(&b'"') => (r#""body":"#, 5),
            b"bo" => (r#""bodyEncoding":"#, 6),
            _ => return None,
        };
        let after = rest.strip_prefix(key)?;
        let after = match slot {
            0 if ty.is_none() => {
                let (t, a) = [
                    (Ty::Chunk, r#""stream_chunk""#),
                    (Ty::End, r#""stream_end""#),
                    (Ty::Response, r#""response""#),
                    (Ty::Start, r#""stream_start""#),
                ]
                .into_iter()
                .find_map(|(t, lit)| after.strip_prefix(lit).map(|a| (t, a)))?;
                ty = Some(t);
                a
            }
            1 if id.is_none() => plain_at(after).map(|(v, a)| (id = Some(v), a))?.1,
            2 if data.is_none() => {
                let (v, a) = unescaped_at(after, crate::relay::spare_string(spare))?;
                data = Some(v);
                a
            }
            3 if status.is_none() => status_at(after).map(|(v, a)| (status = Some(v), a))?.1,
            4 if headers.is_none() => {
                raw_headers_at(after)
                    .map(|(v, a)| (headers = Some(v), a))?
                    .1
            }
            5 if raw.is_none() => match after.strip_prefix("null") {
                Some(a) => (raw = Some(None), a).1,
                None => {
                    let (text, a, plain) = raw_plain_at(after)?;
                    raw = Some(Some((text, plain)));
                    a
                }
            },
            6 if base64.is_none() => raw_at(after).map(|(v, a)| (base64 = Some(v), a))?.1,
            _ => return None,
        };
        match after.as_bytes() {
            [b',', ..] => rest = &after[1..],
            [b'}'] => break,
            _ => return None,
        }
    }
    let id = id?;
    let fields = (
        data.is_some(),
        status.is_some(),
        headers.is_some(),
        raw.is_some(),
    );
    match ty? {
        Ty::Chunk if base64.is_none() && fields == (true, false, false, false) => {
            Some(Fast::Chunk { id, data: data? })
        }
        Ty::End if base64.is_none() && fields == (false, false, false, false) => {
            Some(Fast::End { id })
        }
        Ty::Start if base64.is_none() && fields == (false, true, true, false) => {
            Some(Fast::Start {
                id,
                status: status?,
                headers: headers?.to_headers(),
            })
        }
        Ty::Response if !fields.0 => {
            let body = match (raw.flatten(), base64 == Some(r#""base64""#)) {
                (None, _) => RawBody::Empty,
                (Some((raw, _)), true) => RawBody::Binary(base64_from_json(raw)?),
                (Some((raw, plain)), false) => RawBody::Text { raw, plain },
            };
            Some(Fast::Response {
                id,
                status: status?,
                headers: headers?,
                body,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
