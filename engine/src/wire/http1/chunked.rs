//! Incremental, zero-copy decoder for chunked bodies (RFC 9112 section 7.1).
//!
//! The caller keeps a buffer, calls [`ChunkedDecoder::decode`] on it, forwards
//! `input[data]` for `Data`, drops `consumed` bytes and repeats; on `NeedMore`
//! it reads more bytes first. Bytes after `Done { consumed }` belong to the
//! next message. Errors are sticky: the connection must be closed.

use std::fmt;
use std::ops::Range;

/// Longest chunk-size or trailer line accepted, CRLF included.
pub const MAX_LINE: usize = 1024;
/// Most trailer lines accepted (they are discarded).
pub const MAX_TRAILERS: usize = 16;

/// Why a chunked body was refused; the connection must then close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk-size line without hex digits, with control bytes or a bad extension.
    BadChunkSize,
    /// No CRLF where one must be, a bare LF, or a malformed trailer.
    BadChunkFraming,
    /// A size or trailer line longer than [`MAX_LINE`].
    LineTooLong,
    /// More trailer lines than [`MAX_TRAILERS`].
    TooManyTrailers,
    /// A chunk size of more than 16 hex digits.
    SizeOverflow,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkError::BadChunkSize => "invalid chunk size line",
            ChunkError::BadChunkFraming => "invalid chunked framing",
            ChunkError::LineTooLong => "chunk line too long",
            ChunkError::TooManyTrailers => "too many trailer fields",
            ChunkError::SizeOverflow => "chunk size too large",
        })
    }
}

impl std::error::Error for ChunkError {}

use ChunkError::{BadChunkFraming, BadChunkSize, LineTooLong, SizeOverflow, TooManyTrailers};

/// What one [`ChunkedDecoder::decode`] call found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// `input[data]` is body data; `data.end == consumed`.
    Data {
        /// Bytes of `input` used up, the data included.
        consumed: usize,
        /// Where the body bytes are in `input`.
        data: Range<usize>,
    },
    /// Framing bytes consumed; more input is needed.
    NeedMore {
        /// Bytes of `input` used up.
        consumed: usize,
    },
    /// The body ended (last chunk, trailers, final CRLF).
    Done {
        /// Bytes of `input` that belonged to the body; the rest is the next message.
        consumed: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers(usize),
    Done,
    Failed(ChunkError),
}

/// Decoder state of one chunked body, kept between reads.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        ChunkedDecoder { state: State::Size }
    }

    /// `true` once the whole body, trailers included, was read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the start of `input`, which must begin where the previous
    /// call's `consumed` ended.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, ChunkError> {
        let result = self.step(input);
        if let Err(e) = result {
            self.state = State::Failed(e);
        }
        result
    }

    fn step(&mut self, input: &[u8]) -> Result<Decoded, ChunkError> {
        let mut pos = 0;
        loop {
            let rest = input.get(pos..).unwrap_or(&[]);
            match self.state {
                State::Failed(e) => return Err(e),
                State::Done => return Ok(Decoded::Done { consumed: pos }),
                State::Size => {
                    let Some(line) = next_line(rest)? else {
                        return Ok(Decoded::NeedMore { consumed: pos });
                    };
                    let size = chunk_size(line)?;
                    pos = pos.saturating_add(line.len());
                    self.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(remaining) => {
                    if rest.is_empty() {
                        return Ok(Decoded::NeedMore { consumed: pos });
                    }
                    let n = usize::try_from(remaining).map_or(rest.len(), |r| r.min(rest.len()));
                    let left = remaining.saturating_sub(n as u64);
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    let end = pos.saturating_add(n);
                    return Ok(Decoded::Data {
                        consumed: end,
                        data: pos..end,
                    });
                }
                State::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        pos = pos.saturating_add(2);
                        self.state = State::Size;
                    }
                    [] | [b'\r'] => return Ok(Decoded::NeedMore { consumed: pos }),
                    _ => return Err(BadChunkFraming),
                },
                State::Trailers(count) => {
                    let Some(line) = next_line(rest)? else {
                        return Ok(Decoded::NeedMore { consumed: pos });
                    };
                    pos = pos.saturating_add(line.len());
                    if line == b"\r\n" {
                        self.state = State::Done;
                        return Ok(Decoded::Done { consumed: pos });
                    }
                    if count >= MAX_TRAILERS {
                        return Err(TooManyTrailers);
                    }
                    check_trailer(line)?;
                    self.state = State::Trailers(count.saturating_add(1));
                }
            }
        }
    }
}

/// The next line including its CRLF; bare LF is rejected (smuggling).
fn next_line(input: &[u8]) -> Result<Option<&[u8]>, ChunkError> {
    let window = input.get(..MAX_LINE).unwrap_or(input);
    match window.iter().position(|&b| b == b'\n') {
        Some(i) => match i.checked_sub(1).and_then(|j| window.get(j)) {
            Some(b'\r') => Ok(window.get(..=i)),
            _ => Err(BadChunkFraming),
        },
        None if window.len() >= MAX_LINE => Err(LineTooLong),
        None => Ok(None),
    }
}

fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

fn chunk_size(line: &[u8]) -> Result<u64, ChunkError> {
    // httparse reads an empty size (e.g. "\r\n" or ";ext") as zero.
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(BadChunkSize);
    }
    if digits > 16 {
        return Err(SizeOverflow);
    }
    // httparse lets any byte through in extensions; keep control bytes out.
    let content = line.strip_suffix(b"\r\n").unwrap_or(line);
    if content.iter().any(|&b| is_ctl(b)) {
        return Err(BadChunkSize);
    }
    match httparse::parse_chunk_size(line) {
        Ok(httparse::Status::Complete((used, size))) if used == line.len() => Ok(size),
        _ => Err(BadChunkSize),
    }
}

/// Trailers are discarded but must still be well-formed field lines.
fn check_trailer(line: &[u8]) -> Result<(), ChunkError> {
    let content = line.strip_suffix(b"\r\n").unwrap_or(line);
    let colon = content
        .iter()
        .position(|&b| b == b':')
        .ok_or(BadChunkFraming)?;
    let (name, value) = content.split_at(colon);
    if !crate::http::is_token(name) || value.iter().any(|&b| is_ctl(b)) {
        return Err(BadChunkFraming);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Outcome = Result<Option<(Vec<u8>, Vec<u8>)>, ChunkError>;

    /// Feeds `pieces` like a caller would; returns (body, leftover) once done.
    fn run(pieces: &[&[u8]]) -> Outcome {
        let mut dec = ChunkedDecoder::new();
        let (mut buf, mut body) = (Vec::new(), Vec::new());
        for (i, piece) in pieces.iter().enumerate() {
            buf.extend_from_slice(piece);
            loop {
                match dec.decode(&buf)? {
                    Decoded::Data { consumed, data } => {
                        assert_eq!(data.end, consumed);
                        body.extend_from_slice(&buf[data]);
                        buf.drain(..consumed);
                    }
                    Decoded::NeedMore { consumed } => {
                        buf.drain(..consumed);
                        break;
                    }
                    Decoded::Done { consumed } => {
                        assert!(dec.is_done());
                        buf.drain(..consumed);
                        buf.extend(pieces.iter().skip(i + 1).copied().flatten());
                        return Ok(Some((body, buf)));
                    }
                }
            }
        }
        assert!(!dec.is_done());
        Ok(None)
    }

    const BODY: &[u8] = b"4\r\nWiki\r\n5;ext=1;b=\"q\"\r\npedia\r\nE \r\n in\r\n\r\nchunks.\r\n\
        10\r\n0123456789abcdef\r\n000\r\nX-T: 1\r\nY:\r\n\r\nNEXT";
    const DATA: &[u8] = b"Wikipedia in\r\n\r\nchunks.0123456789abcdef";

    fn expect_ok(pieces: &[&[u8]]) {
        let (body, rest) = run(pieces).unwrap().expect("complete body");
        assert_eq!((body.as_slice(), rest.as_slice()), (DATA, &b"NEXT"[..]));
    }

    #[test]
    fn decodes_whole_and_byte_by_byte() {
        expect_ok(&[BODY]);
        let bytes: Vec<&[u8]> = BODY.chunks(1).collect();
        expect_ok(&bytes);
    }

    #[test]
    fn decodes_at_every_split_point() {
        for i in 0..=BODY.len() {
            let (a, b) = BODY.split_at(i);
            expect_ok(&[a, b]);
        }
    }

    #[test]
    fn decodes_random_splits() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..500 {
            let mut pieces = Vec::new();
            let mut rest = BODY;
            while !rest.is_empty() {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let n = ((seed >> 33) as usize % 12).min(rest.len());
                let (a, b) = rest.split_at(n);
                pieces.push(a);
                rest = b;
            }
            expect_ok(&pieces);
        }
    }

    #[test]
    fn zero_copy_ranges_and_progress() {
        let mut dec = ChunkedDecoder::new();
        assert_eq!(dec.decode(b"3\r"), Ok(Decoded::NeedMore { consumed: 0 }));
        assert_eq!(dec.decode(b"3\r\n"), Ok(Decoded::NeedMore { consumed: 3 }));
        assert_eq!(
            dec.decode(b"ab"),
            Ok(Decoded::Data {
                consumed: 2,
                data: 0..2
            })
        );
        let input = b"c\r\n0\r\n\r\nGET";
        assert_eq!(
            dec.decode(input),
            Ok(Decoded::Data {
                consumed: 1,
                data: 0..1
            })
        );
        assert_eq!(dec.decode(&input[1..]), Ok(Decoded::Done { consumed: 7 }));
        assert!(dec.is_done());
        assert_eq!(dec.decode(b"GET"), Ok(Decoded::Done { consumed: 0 }));
    }

    #[test]
    fn huge_chunk_streams_without_overflow() {
        let mut dec = ChunkedDecoder::new();
        let input = b"ffffffffffffffff\r\nabc";
        assert_eq!(
            dec.decode(input),
            Ok(Decoded::Data {
                consumed: 21,
                data: 18..21
            })
        );
        assert_eq!(
            dec.decode(b"d"),
            Ok(Decoded::Data {
                consumed: 1,
                data: 0..1
            })
        );
        assert!(!dec.is_done());
    }

    #[test]
    fn rejects_bad_input() {
        let cases: &[(&[u8], ChunkError)] = &[
            (b"-1\r\n", BadChunkSize),
            (b"0x10\r\n", BadChunkSize),
            (b"fffffffffffffffffff\r\n", SizeOverflow),
            (b"10000000000000000\r\n", SizeOverflow),
            (b"\r\n", BadChunkSize),
            (b";ext\r\n", BadChunkSize),
            (b" 5\r\n", BadChunkSize),
            (b"g\r\n", BadChunkSize),
            (b"5 x\r\n", BadChunkSize),
            (b"5;a\rb\r\n", BadChunkSize),
            (b"5;a\0\r\n", BadChunkSize),
            (b"5\n", BadChunkFraming),
            (b"\n", BadChunkFraming),
            (b"5;a\nb\r\n", BadChunkFraming),
            (b"5\r\nhelloX", BadChunkFraming),
            (b"5\r\nhello\n", BadChunkFraming),
            (b"5\r\nhello\r\r", BadChunkFraming),
            (b"3\r\nabcdef\r\n", BadChunkFraming),
            (b"0\r\n\n", BadChunkFraming),
            (b"0\r\nX-T: 1\n\r\n", BadChunkFraming),
            (b"0\r\nno colon\r\n\r\n", BadChunkFraming),
            (b"0\r\n: v\r\n\r\n", BadChunkFraming),
            (b"0\r\n folded: x\r\n\r\n", BadChunkFraming),
            (b"0\r\nX: a\x01\r\n\r\n", BadChunkFraming),
        ];
        for &(input, err) in cases {
            assert_eq!(
                run(&[input]),
                Err(err),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(
                run(&bytes),
                Err(err),
                "bytewise {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn line_length_limit() {
        let line = |len: usize| format!("1;{}\r\nx\r\n0\r\n\r\n", "a".repeat(len - 4));
        assert_eq!(
            run(&[line(MAX_LINE).as_bytes()]),
            Ok(Some((b"x".to_vec(), vec![])))
        );
        assert_eq!(run(&[line(MAX_LINE + 1).as_bytes()]), Err(LineTooLong));
        // Detected before the line ends, so memory stays bounded.
        assert_eq!(run(&[&[b'a'; MAX_LINE]]), Err(LineTooLong));
        let trailer = |len: usize| format!("0\r\nX:{}\r\n\r\n", "v".repeat(len - 4));
        assert!(run(&[trailer(MAX_LINE).as_bytes()]).unwrap().is_some());
        assert_eq!(run(&[trailer(MAX_LINE + 1).as_bytes()]), Err(LineTooLong));
    }

    #[test]
    fn trailer_count_limit() {
        let body = |n: usize| format!("0\r\n{}\r\n", "T: v\r\n".repeat(n));
        assert_eq!(
            run(&[body(MAX_TRAILERS).as_bytes()]),
            Ok(Some((vec![], vec![])))
        );
        assert_eq!(
            run(&[body(MAX_TRAILERS + 1).as_bytes()]),
            Err(TooManyTrailers)
        );
    }

    #[test]
    fn errors_are_sticky() {
        let mut dec = ChunkedDecoder::new();
        assert_eq!(dec.decode(b"z\r\n"), Err(BadChunkSize));
        assert_eq!(dec.decode(b"0\r\n\r\n"), Err(BadChunkSize));
        assert!(!dec.is_done());
        assert_eq!(run(&[b"5\r\nab"]), Ok(None));
        assert_eq!(ChunkError::SizeOverflow.to_string(), "chunk size too large");
    }
}
