//! A fast path for the frames of a token stream, `stream_chunk` and
//! `stream_end` as the app sends them: one flat object of plain strings.
//! Anything else (whitespace, other or repeated keys, base64, escapes
//! outside `data`) goes to the full parser, which gives the same answer
//! (tested).

use super::{Body, ChunkData, ClientFrame, Inbound};

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

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
    (b[i..].iter())
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|p| i + p)
}

/// A JSON string at the start of `s`: its raw text (quotes included),
/// whether it has escapes, and what follows it. Control characters: `None`.
fn string_at(s: &str) -> Option<(&str, bool, &str)> {
    let b = s.as_bytes();
    if b.first() != Some(&b'"') {
        return None;
    }
    let (mut i, mut escaped) = (1, false);
    loop {
        let at = next_special(b, i)?;
        match b[at] {
            b'"' => return Some((&s[..=at], escaped, &s[at + 1..])),
            b'\\' => (i, escaped) = (at + 2, true),
            _ => return None,
        }
        if i > b.len() {
            return None;
        }
    }
}

/// A string without escapes: its inside.
fn plain(raw: (&str, bool)) -> Option<&str> {
    (!raw.1).then(|| &raw.0[1..raw.0.len() - 1])
}

/// The frame, when `text` is a plain `stream_chunk` or `stream_end`.
pub(super) fn parse(text: &str) -> Option<Inbound> {
    let mut rest = text.strip_prefix('{')?;
    let (mut ty, mut id, mut data) = (None, None, None);
    loop {
        let (key, escaped, after) = string_at(rest)?;
        let key = plain((key, escaped))?;
        let (raw, escaped, after) = string_at(after.strip_prefix(':')?)?;
        let slot = match key {
            "type" => &mut ty,
            "id" => &mut id,
            "data" => &mut data,
            _ => return None,
        };
        if slot.replace((raw, escaped)).is_some() {
            return None;
        }
        match after.as_bytes() {
            [b',', ..] => rest = &after[1..],
            [b'}'] => break,
            _ => return None,
        }
    }
    let id = plain(id?)?.to_string();
    let frame = match (plain(ty?)?, data) {
        ("stream_chunk", Some((raw, escaped))) => {
            // Token text is often JSON itself (`data: {\"choices\": …}`):
            // only this one string is unescaped by the full parser.
            let text = match escaped {
                false => raw[1..raw.len() - 1].to_string(),
                true => serde_json::from_str(raw).ok()?,
            };
            ClientFrame::StreamChunk {
                id,
                data: ChunkData(Body::Text(text)),
            }
        }
        ("stream_end", None) => ClientFrame::StreamEnd { id },
        _ => return None,
    };
    Some(Inbound::Frame(frame))
}
