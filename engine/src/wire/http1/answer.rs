//! Strict parsing of an upstream server's response head (RFC 9112): the
//! local server behind our tunnel client, or the instance that owns an agent.
//! One parser for both, as strict as the request side: a head that could be
//! read two ways is refused, never guessed at.

use crate::http::{is_field_value, is_token};
use std::fmt;

/// How the body after an answer's head is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerFraming {
    /// No body: a HEAD request, 204 or 304.
    Empty,
    /// A `content-length` of this many bytes.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
    /// Read until the server closes the connection.
    UntilClose,
}

/// A final (non-1xx) answer head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerHead {
    /// The final status, 200-599.
    pub status: u16,
    /// Lowercase names, in order; without the framing and connection headers
    /// (`content-length`, `transfer-encoding`, `connection`, `keep-alive`).
    pub headers: Vec<(String, String)>,
    /// How the body after the head is delimited.
    pub framing: AnswerFraming,
    /// The connection may carry another request after this answer.
    pub reusable: bool,
}

/// What the bytes at the start of a buffer are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A 1xx interim head of this many bytes: skip it, a final one follows.
    Interim(usize),
    /// The final head and its length; the body follows it.
    Final(AnswerHead, usize),
}

/// Why an answer head was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerError {
    /// Longer than the limit and still incomplete.
    TooLarge,
    /// More headers than [`AnswerLimits::max_headers`].
    TooManyHeaders,
    /// Not HTTP/1.x, or a broken status line or header line.
    Malformed,
    /// Outside 100-599, or 101 (nothing is ever upgraded here).
    BadStatus,
    /// A value with control characters or not UTF-8.
    BadHeaderValue,
    /// Lengths that disagree or are not numbers.
    BadContentLength,
    /// Anything but a lone `chunked`, or `chunked` next to a length.
    BadTransferEncoding,
}

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AnswerError::TooLarge => "the answer's head is too large",
            AnswerError::TooManyHeaders => "the answer has too many headers",
            AnswerError::Malformed => "the answer's head is malformed",
            AnswerError::BadStatus => "the answer's status is not allowed",
            AnswerError::BadHeaderValue => "an answer header value is not valid text",
            AnswerError::BadContentLength => "the answer's content-length is invalid",
            AnswerError::BadTransferEncoding => "the answer's transfer-encoding is not supported",
        })
    }
}

impl std::error::Error for AnswerError {}

/// Bounds on an answer head.
#[derive(Clone, Copy, Debug)]
pub struct AnswerLimits {
    /// Largest head, in bytes, before the answer is refused.
    pub max_head_bytes: usize,
    /// Most header lines an answer may have.
    pub max_headers: usize,
}

impl Default for AnswerLimits {
    fn default() -> Self {
        AnswerLimits {
            max_head_bytes: 64 * 1024,
            max_headers: 128,
        }
    }
}

/// Parses the answer head at the start of `buf`; `Ok(None)`: need more bytes.
/// `head_request`: the request was HEAD, so no body follows whatever it says.
pub fn parse_answer(
    buf: &[u8],
    head_request: bool,
    limits: &AnswerLimits,
) -> Result<Option<Answer>, AnswerError> {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut resp = httparse::Response::new(&mut slots);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head_bytes => {
            return Err(AnswerError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(AnswerError::TooManyHeaders),
        Err(_) => return Err(AnswerError::Malformed),
    };
    if len > limits.max_head_bytes {
        return Err(AnswerError::TooLarge);
    }
    let status = resp.code.ok_or(AnswerError::Malformed)?;
    if !(100..=599).contains(&status) || status == 101 {
        return Err(AnswerError::BadStatus);
    }
    if status < 200 {
        return Ok(Some(Answer::Interim(len)));
    }
    let http10 = resp.version == Some(0);
    let (mut length, mut chunked, mut close, mut keep_alive) = (None, false, false, false);
    let mut headers = Vec::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        if !is_token(h.name) {
            return Err(AnswerError::Malformed);
        }
        let value = std::str::from_utf8(h.value)
            .ok()
            .filter(|v| is_field_value(v))
            .ok_or(AnswerError::BadHeaderValue)?;
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "content-length" => {
                let v = value.trim_matches([' ', '\t']);
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(AnswerError::BadContentLength);
                }
                let n: u64 = v.parse().map_err(|_| AnswerError::BadContentLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(AnswerError::BadContentLength);
                }
                length = Some(n);
            }
            "transfer-encoding" => {
                if chunked
                    || !value
                        .trim_matches([' ', '\t'])
                        .eq_ignore_ascii_case("chunked")
                {
                    return Err(AnswerError::BadTransferEncoding);
                }
                chunked = true;
            }
            "connection" => {
                for t in value.split(',').map(|t| t.trim_matches([' ', '\t'])) {
                    close |= t.eq_ignore_ascii_case("close");
                    keep_alive |= t.eq_ignore_ascii_case("keep-alive");
                }
            }
            "keep-alive" => {}
            _ => headers.push((name, value.to_string())),
        }
    }
    if chunked && length.is_some() {
        return Err(AnswerError::BadTransferEncoding);
    }
    let framing = if head_request || matches!(status, 204 | 304) {
        AnswerFraming::Empty
    } else if chunked {
        AnswerFraming::Chunked
    } else if let Some(n) = length {
        AnswerFraming::Length(n)
    } else {
        AnswerFraming::UntilClose
    };
    let persistent = if http10 { keep_alive } else { !close };
    let head = AnswerHead {
        status,
        headers,
        framing,
        reusable: persistent && framing != AnswerFraming::UntilClose,
    };
    Ok(Some(Answer::Final(head, len)))
}

#[cfg(test)]
mod tests;
