//! How the tunnel client relays a local server's answer: whole in one
//! `response` frame, or as a stream cut into chunks (one SSE event or NDJSON
//! line per chunk, as the app does; each read of a large or open-ended body).
//! The driver reads the local server; these rules decide what it sends.

/// How a streamed local answer is cut into `stream_chunk`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// One SSE event per chunk.
    Events,
    /// One NDJSON line per chunk.
    Lines,
    /// Each read as it comes (large or open-ended answers).
    Reads,
}

/// What the local answer's framing says about its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLength {
    /// No body can follow (HEAD, 204, 304).
    Empty,
    /// A `content-length` of this many bytes.
    Known(u64),
    /// Chunked, or until the server closes.
    Unknown,
}

/// The tunnel client's limits on relaying local answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamPolicy {
    /// Answers larger than this, or of unknown length, stream (where the
    /// relay decodes binary chunks) instead of travelling as one frame.
    pub stream_over_bytes: u64,
    /// Largest local answer held whole (then the call fails with 502).
    pub max_body_bytes: u64,
    /// An SSE event or NDJSON line longer than this goes out in pieces.
    pub max_piece_bytes: usize,
    /// Stream bytes queued towards the relay beyond which the local server
    /// is read no further until the link drains.
    pub link_buffer_bytes: u64,
}

impl Default for StreamPolicy {
    fn default() -> Self {
        StreamPolicy {
            stream_over_bytes: 1 << 20,
            max_body_bytes: 64 << 20,
            max_piece_bytes: 16 * 1024,
            link_buffer_bytes: 1 << 20,
        }
    }
}

impl StreamPolicy {
    /// How an answer with this content type and length travels: `None`
    /// whole, else streamed and cut so. `stream_any`: the relay decodes
    /// binary stream chunks, so any large answer may stream.
    pub fn cut(&self, content_type: &str, length: BodyLength, stream_any: bool) -> Option<Cut> {
        let ctype = content_type.trim_start().to_ascii_lowercase();
        if ctype.starts_with("text/event-stream") {
            return Some(Cut::Events);
        }
        if ctype.starts_with("application/x-ndjson") {
            return Some(Cut::Lines);
        }
        let large = match length {
            BodyLength::Empty => false,
            BodyLength::Known(n) => n > self.stream_over_bytes,
            BodyLength::Unknown => true,
        };
        (stream_any && large).then_some(Cut::Reads)
    }
}

/// Cuts a streamed body into chunks as its bytes arrive.
#[derive(Debug)]
pub struct Splitter {
    cut: Cut,
    max_piece: usize,
    pending: Vec<u8>,
}

impl Splitter {
    /// A splitter for one answer.
    pub fn new(cut: Cut, policy: &StreamPolicy) -> Self {
        Splitter {
            cut,
            max_piece: policy.max_piece_bytes.max(4),
            pending: Vec::new(),
        }
    }

    /// Takes bytes just read; hands every complete chunk to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut dyn FnMut(Vec<u8>)) {
        if self.cut == Cut::Reads {
            if !data.is_empty() {
                out(data.to_vec());
            }
            return;
        }
        self.pending.extend_from_slice(data);
        loop {
            let cut = match self.cut {
                Cut::Events => find(&self.pending, b"\n\n")
                    .map(|i| i + 2)
                    .or_else(|| find(&self.pending, b"\r\n\r\n").map(|i| i + 4)),
                _ => find(&self.pending, b"\n").map(|i| i + 1),
            };
            let long = self.pending.len() >= self.max_piece;
            let cut = cut.or_else(|| long.then(|| utf8_cut(&self.pending, self.max_piece)));
            let Some(cut) = cut else { return };
            out(self.pending.drain(..cut).collect());
        }
    }

    /// The body ended: whatever is left is the last chunk.
    pub fn finish(&mut self, out: &mut dyn FnMut(Vec<u8>)) {
        if !self.pending.is_empty() {
            out(std::mem::take(&mut self.pending));
        }
    }
}

/// Where to split a long piece so no UTF-8 character is cut in two.
fn utf8_cut(b: &[u8], max: usize) -> usize {
    let at = max.min(b.len());
    (at.saturating_sub(3)..=at)
        .rev()
        .find(|&i| i == b.len() || (b[i] & 0xc0) != 0x80)
        .filter(|&i| i > 0)
        .unwrap_or(at)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(cut: Cut, max_piece: usize, reads: &[&[u8]]) -> Vec<Vec<u8>> {
        let policy = StreamPolicy {
            max_piece_bytes: max_piece,
            ..StreamPolicy::default()
        };
        let mut s = Splitter::new(cut, &policy);
        let mut got = Vec::new();
        for r in reads {
            s.push(r, &mut |c| got.push(c));
        }
        s.finish(&mut |c| got.push(c));
        got
    }

    #[test]
    fn events_and_lines_are_one_chunk_each_however_they_arrive() {
        let reads: &[&[u8]] = &[b"data: 1\n", b"\ndata: 2\r\n\r\nda", b"ta: 3"];
        let got = split(Cut::Events, 64, reads);
        let want: Vec<&[u8]> = vec![b"data: 1\n\n", b"data: 2\r\n\r\n", b"data: 3"];
        assert_eq!(got, want);
        let got = split(Cut::Lines, 64, &[b"{}\n{\"a\"", b":1}\n"]);
        assert_eq!(got, vec![b"{}\n".to_vec(), b"{\"a\":1}\n".to_vec()]);
    }

    #[test]
    fn long_pieces_split_between_characters() {
        // "é" is two bytes: a cut at 8 would split the one at 7..9.
        let got = split(Cut::Lines, 8, &["abcdefgé".as_bytes()]);
        assert_eq!(got, vec![b"abcdefg".to_vec(), "é".as_bytes().to_vec()]);
        assert!(got.iter().all(|c| std::str::from_utf8(c).is_ok()));
    }

    #[test]
    fn what_streams() {
        let p = StreamPolicy::default();
        assert_eq!(
            p.cut(
                "Text/Event-Stream; charset=utf-8",
                BodyLength::Unknown,
                false
            ),
            Some(Cut::Events)
        );
        assert_eq!(
            p.cut("application/x-ndjson", BodyLength::Known(3), false),
            Some(Cut::Lines)
        );
        assert_eq!(p.cut("image/png", BodyLength::Known(1 << 20), true), None);
        assert_eq!(
            p.cut("image/png", BodyLength::Known((1 << 20) + 1), true),
            Some(Cut::Reads)
        );
        assert_eq!(p.cut("", BodyLength::Unknown, true), Some(Cut::Reads));
        assert_eq!(
            p.cut("", BodyLength::Unknown, false),
            None,
            "the relay would not decode it"
        );
        assert_eq!(p.cut("", BodyLength::Empty, true), None);
    }
}
