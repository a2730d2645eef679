//! A request's header fields as the caller sent them, borrowed: read where
//! they arrived, so a call that goes straight to its tunnel copies no header.

/// Header fields in order: names as sent (compare them case-insensitively),
/// values without surrounding spaces and tabs.
#[derive(Clone, Copy)]
pub enum Fields<'a> {
    /// The header lines of a head a strict parser accepted: `name:value`
    /// lines, each but the last ended by CRLF, no obsolete line folding.
    Block(&'a str),
    /// Pairs the driver or a test made.
    Pairs(&'a [(String, String)]),
    /// The same lines as [`Fields::Block`], each field's place found once
    /// (by the parser): every later pass over them slices, not searches.
    Spans(&'a str, &'a [Span]),
}

/// Where one field's name and (trimmed) value lie in a block of header lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// The name's start and end.
    pub name: [u32; 2],
    /// The value's start and end, spaces and tabs around it left out.
    pub value: [u32; 2],
}

impl<'a> Fields<'a> {
    /// No fields.
    pub const EMPTY: Fields<'static> = Fields::Block("");

    /// Each field, in order.
    pub fn iter(self) -> Iter<'a> {
        match self {
            Fields::Block(b) => Iter::Block(b),
            Fields::Pairs(p) => Iter::Pairs(p.iter()),
            Fields::Spans(b, s) => Iter::Spans(b, s.iter()),
        }
    }

    /// The first value of `name` (any case).
    pub fn get(self, name: &str) -> Option<&'a str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// About as many bytes as the fields take in a frame (a capacity hint).
    pub fn size_hint(self) -> usize {
        match self {
            // Each line's ": " and CRLF become the JSON's quotes, colon and comma.
            Fields::Block(b) | Fields::Spans(b, _) => b.len() + b.len() / 4 + 8,
            Fields::Pairs(p) => p.iter().map(|(k, v)| k.len() + v.len() + 6).sum(),
        }
    }

    /// How many fields there are.
    pub fn len(self) -> usize {
        self.iter().count()
    }

    /// Whether there are none.
    pub fn is_empty(self) -> bool {
        self.iter().next().is_none()
    }

    /// The fields as owned pairs, names as sent.
    pub fn to_pairs(self) -> Vec<(String, String)> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

impl Default for Fields<'_> {
    fn default() -> Self {
        Fields::EMPTY
    }
}

impl PartialEq for Fields<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Fields<'_> {}

impl std::fmt::Debug for Fields<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over [`Fields`].
#[derive(Clone)]
pub enum Iter<'a> {
    /// The lines still to read.
    Block(&'a str),
    /// The pairs still to read.
    Pairs(std::slice::Iter<'a, (String, String)>),
    /// The block and the places still to read.
    Spans(&'a str, std::slice::Iter<'a, Span>),
}

/// Without surrounding spaces and tabs (by byte: every value is read so).
fn trim_ows(s: &str) -> &str {
    let b = s.as_bytes();
    let ows = |c: &u8| *c == b' ' || *c == b'\t';
    let start = b.iter().position(|c| !ows(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !ows(c)).map_or(start, |i| i + 1);
    &s[start..end]
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    // Small enough to inline into each pass: the block's search, which
    // needs many registers, is a call of its own.
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Spans(b, s) => s.next().map(|s| {
                let at = |[from, to]: [u32; 2]| b.get(from as usize..to as usize).unwrap_or("");
                (at(s.name), at(s.value))
            }),
            Iter::Pairs(p) => p.next().map(|(k, v)| (k.as_str(), trim_ows(v))),
            Iter::Block(rest) => next_line(rest),
        }
    }
}

/// The next field of the lines in `rest`, which then start after it.
fn next_line<'a>(rest: &mut &'a str) -> Option<(&'a str, &'a str)> {
    loop {
        if rest.is_empty() {
            return None;
        }
        // In a strict head a CR only ever ends a line.
        let end = memchr::memchr(b'\r', rest.as_bytes()).unwrap_or(rest.len());
        let line = &rest[..end];
        *rest = (rest.get(end + 1..)).map_or("", |r| r.strip_prefix('\n').unwrap_or(r));
        // A strict head has a colon in every line; a line without
        // one (never made by the parser) is skipped, not guessed at.
        if let Some(colon) = memchr::memchr(b':', line.as_bytes()) {
            return Some((&line[..colon], trim_ows(&line[colon + 1..])));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_lines_read_as_pairs() {
        let f = Fields::Block("Host: a.b\r\nX-Empty:\r\nX-Tab:\t v \t\r\nk:v:w");
        let got: Vec<_> = f.iter().collect();
        assert_eq!(
            got,
            [
                ("Host", "a.b"),
                ("X-Empty", ""),
                ("X-Tab", "v"),
                ("k", "v:w")
            ]
        );
        assert_eq!(f.get("host"), Some("a.b"));
        assert_eq!(f.get("x-missing"), None);
        assert_eq!(f.len(), 4);
        assert!(Fields::EMPTY.is_empty());
        let pairs = f.to_pairs();
        assert_eq!(Fields::Pairs(&pairs), f);
    }
}
