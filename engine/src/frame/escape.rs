//! JSON string escaping for the frames the relay writes by hand.

/// Appends `s` as the inside of a JSON string, escaped exactly as serde_json
/// escapes (quote, backslash, control characters; nothing else), skipping
/// plain bytes 32 or 8 at a time.
pub fn escape_into(out: &mut String, s: &str) {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // Flags every byte that is below 0x20, a quote or a backslash (and a few
    // false alarms, which the byte loop then settles).
    let special = |w: u64| {
        let zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
        (w.wrapping_sub(0x20 * LO) & !w & HI) | zero(w ^ (0x22 * LO)) | zero(w ^ (0x5c * LO))
    };
    let b = s.as_bytes();
    // Short strings (methods, names, ids) are checked byte by byte: cheaper
    // than padding them into a word.
    if b.len() < 8 && b.iter().all(|&c| c >= 0x20 && c != b'"' && c != b'\\') {
        return out.push_str(s);
    }
    let (mut i, mut start) = (0, 0);
    let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("eight bytes"));
    while i < b.len() {
        // Long plain runs (bodies) go 32 bytes per step.
        while i + 32 <= b.len()
            && special(word(i))
                | special(word(i + 8))
                | special(word(i + 16))
                | special(word(i + 24))
                == 0
        {
            i += 32;
        }
        if i == b.len() {
            break;
        }
        let rest = &b[i..];
        // The last few bytes as one word, padded with plain ones.
        let (w, step) = match rest.get(..8) {
            Some(word) => (word.try_into().expect("eight bytes"), 8),
            None => {
                let mut w = [b'a'; 8];
                w[..rest.len()].copy_from_slice(rest);
                (w, rest.len())
            }
        };
        if special(u64::from_le_bytes(w)) == 0 {
            i += step;
            continue;
        }
        let c = b[i];
        let esc: Option<&str> = match c {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x08 => Some("\\b"),
            0x0c => Some("\\f"),
            0..=0x1f => None,
            _ => {
                i += 1;
                continue;
            }
        };
        out.push_str(&s[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[(c >> 4) as usize] as char);
                out.push(HEX[(c & 0xf) as usize] as char);
            }
        }
        i += 1;
        start = i;
    }
    out.push_str(&s[start..]);
}
