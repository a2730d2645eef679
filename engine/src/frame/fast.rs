//! A fast path for the frames of a token stream, `stream_chunk` and
//! `stream_end` as the app sends them: one flat object of plain strings.
//! The id is borrowed from the frame and `data` is unescaped in the same
//! pass that finds its end. Anything else (whitespace, other or repeated
//! keys, base64, escapes outside `data`) goes to the full parser, which
//! gives the same answer (tested).

use super::{Body, ChunkData, ClientFrame, Inbound};

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// A plain stream frame, borrowing the call's id from the text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fast<'a> {
    Chunk { id: &'a str, data: String },
    End { id: &'a str },
}

impl Fast<'_> {
    pub(crate) fn into_inbound(self) -> Inbound {
        Inbound::Frame(match self {
            Fast::Chunk { id, data } => ClientFrame::StreamChunk {
                id: id.to_string(),
                data: ChunkData(Body::Text(data)),
            },
            Fast::End { id } => ClientFrame::StreamEnd { id: id.to_string() },
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

/// The frame, when `text` is a plain `stream_chunk` or `stream_end`.
pub(crate) fn parse(text: &str) -> Option<Fast<'_>> {
    parse_in(text, String::new())
}

/// The same, with `data` unescaped into `buf` (a recycled buffer): no
/// allocation when it has room.
pub(crate) fn parse_in(text: &str, buf: String) -> Option<Fast<'_>> {
    let mut buf = Some(buf);
    let mut rest = text.strip_prefix('{')?;
    let (mut ty, mut id, mut data) = (None, None, None);
    loop {
        // Keys compared as literals: a key with an escape is not plain.
        let (key, slot) = match rest.as_bytes().get(1)? {
            b't' => (r#""type":"#, 0),
            b'i' => (r#""id":"#, 1),
            b'd' => (r#""data":"#, 2),
            _ => return None,
        };
        let after = rest.strip_prefix(key)?;
        let after = match slot {
            0 if ty.is_none() => {
                let (v, a) = if let Some(a) = after.strip_prefix(r#""stream_chunk""#) {
                    ("stream_chunk", a)
                } else {
                    ("stream_end", after.strip_prefix(r#""stream_end""#)?)
                };
                ty = Some(v);
                a
            }
            1 if id.is_none() => plain_at(after).map(|(v, a)| (id = Some(v), a))?.1,
            2 if data.is_none() => {
                let (v, a) = unescaped_at(after, buf.take()?)?;
                data = Some(v);
                a
            }
            _ => return None,
        };
        match after.as_bytes() {
            [b',', ..] => rest = &after[1..],
            [b'}'] => break,
            _ => return None,
        }
    }
    match (ty?, id?, data) {
        ("stream_chunk", id, Some(data)) => Some(Fast::Chunk { id, data }),
        ("stream_end", id, None) => Some(Fast::End { id }),
        _ => None,
    }
}
