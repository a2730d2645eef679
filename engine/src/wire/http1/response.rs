//! Writing response heads and chunks. `write_head` owns the framing and
//! connection headers so a handler can never produce an ambiguous message.

use crate::http::{is_field_value, is_token, status_has_body};

/// Terminates a chunked body that has no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How a response body is delimited, which decides the framing headers written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// A `content-length` of this many bytes.
    Length(u64),
    /// Only for HTTP/1.1 clients; the caller must not pick it for HTTP/1.0.
    Chunked,
    /// The body ends when the connection closes (HTTP/1.0 streams).
    CloseDelimited,
    /// 1xx/204/304: no body and no length header.
    NoBody,
}

/// Writes `HTTP/1.1 <status> <reason>`, the caller's headers, then the framing
/// and connection headers, then the blank line.
///
/// Caller headers named content-length, transfer-encoding or connection are
/// dropped, as are headers with an invalid name or a control character (CR,
/// LF, NUL...) in the value. Status codes outside 100..=999 become 500. For
/// 1xx and 204 no framing header is written whatever `framing` says; 101 gets
/// `connection: upgrade`, other 1xx no connection header. `CloseDelimited`
/// always gets `connection: close`.
pub fn write_head<K: AsRef<str>, V: AsRef<str>>(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(K, V)],
    framing: ResponseFraming,
    keep_alive: bool,
    minor_version: u8,
) {
    let status = write_status_line(out, status);
    for (name, value) in headers {
        let (name, value) = (name.as_ref(), value.as_ref());
        // Lengths first: nearly every name is none of the three.
        let owned = match name.len() {
            14 => name.eq_ignore_ascii_case("content-length"),
            17 => name.eq_ignore_ascii_case("transfer-encoding"),
            10 => name.eq_ignore_ascii_case("connection"),
            _ => false,
        };
        if owned || !is_token(name) || !is_field_value(value) {
            continue;
        }
        write_field(out, name.as_bytes(), value.as_bytes());
    }
    write_head_end(out, status, framing, keep_alive, minor_version);
}

/// `HTTP/1.1 <status> <reason>` and its CRLF; the status as written
/// (outside 100..=999: 500).
pub fn write_status_line(out: &mut Vec<u8>, status: u16) -> u16 {
    let status = if (100..=999).contains(&status) {
        status
    } else {
        500
    };
    if status == 200 {
        // Most answers: one copy.
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return status;
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    status
}

/// One `name: value` line, as given (the caller checked both).
pub fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.reserve(name.len() + value.len() + 4);
    for part in [name, b": ", value, b"\r\n"] {
        out.extend_from_slice(part);
    }
}

/// The framing and connection headers for `status` (as
/// [`write_status_line`] wrote it), then the blank line.
pub fn write_head_end(
    out: &mut Vec<u8>,
    status: u16,
    framing: ResponseFraming,
    keep_alive: bool,
    minor_version: u8,
) {
    // RFC 9110 section 8.6: no Content-Length in 1xx or 204 responses.
    let framing = match status {
        100..=199 | 204 => ResponseFraming::NoBody,
        _ => framing,
    };
    match framing {
        ResponseFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        ResponseFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        ResponseFraming::CloseDelimited | ResponseFraming::NoBody => {}
    }
    let close = !keep_alive || framing == ResponseFraming::CloseDelimited;
    // Interim responses (other than 101) say nothing about the connection.
    let connection: &[u8] = match status {
        101 => b"connection: upgrade\r\n",
        100..=199 => b"",
        _ if close => b"connection: close\r\n",
        _ if minor_version == 0 => b"connection: keep-alive\r\n",
        _ => b"",
    };
    out.extend_from_slice(connection);
    out.extend_from_slice(b"\r\n");
}

/// How a complete answer of `status` with `body_len` bytes is framed, and
/// whether its body is sent (a HEAD request gets the head alone).
pub fn complete_framing(
    status: u16,
    body_len: usize,
    head_request: bool,
) -> (ResponseFraming, bool) {
    let has_body = status_has_body(status);
    // Only 1xx, 204 and 304 end at the blank line; a 205 needs its zero length.
    let framing = match status {
        204 | 304 => ResponseFraming::NoBody,
        _ => ResponseFraming::Length(if has_body { body_len as u64 } else { 0 }),
    };
    (framing, has_body && !head_request)
}

/// `n`'s digits in base `RADIX` (10 or 16, lowercase), without `fmt`: the
/// formatting machinery costs more than a head or a token's framing. A
/// constant radix lets the divisions become shifts and multiplications.
pub(crate) fn digits<const RADIX: u64>(mut n: u64) -> ([u8; 20], usize) {
    let mut d = [0u8; 20];
    let mut i = d.len();
    if n < RADIX {
        // Most timings and many sizes: one digit, no division.
        d[i - 1] = b"0123456789abcdef"[n as usize];
        return (d, i - 1);
    }
    loop {
        i -= 1;
        d[i] = b"0123456789abcdef"[(n % RADIX) as usize];
        n /= RADIX;
        if n == 0 {
            return (d, i);
        }
    }
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let (d, i) = digits::<10>(n);
    out.extend_from_slice(&d[i..]);
}

/// Appends one chunk; empty data writes nothing (an empty chunk would end the body).
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let (d, i) = digits::<16>(data.len() as u64);
    out.reserve(d.len() - i + data.len() + 4);
    out.extend_from_slice(&d[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Standard reason phrase, or "" for unregistered codes (the phrase is optional).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn digits_write_what_format_writes(n in proptest::prelude::any::<u64>(), small in 0u64..300) {
            for n in [n, small] {
                let (d, i) = digits::<10>(n);
                proptest::prop_assert_eq!(d[i..].to_vec(), n.to_string().into_bytes());
                let (d, i) = digits::<16>(n);
                proptest::prop_assert_eq!(d[i..].to_vec(), format!("{n:x}").into_bytes());
            }
        }
    }

    fn head(
        status: u16,
        headers: &[(&str, &str)],
        framing: ResponseFraming,
        keep_alive: bool,
        minor: u8,
    ) -> String {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let mut out = b"prefix|".to_vec();
        write_head(&mut out, status, &headers, framing, keep_alive, minor);
        let text = String::from_utf8(out).unwrap();
        text.strip_prefix("prefix|")
            .expect("appends, never clears")
            .to_owned()
    }

    #[test]
    fn framing_and_connection_headers() {
        use ResponseFraming::*;
        let cases = [
            (
                200,
                Length(12),
                true,
                1,
                "HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n",
            ),
            (
                200,
                Length(0),
                false,
                1,
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            ),
            (
                200,
                Chunked,
                true,
                1,
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            ),
            (
                200,
                Length(3),
                true,
                0,
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: keep-alive\r\n\r\n",
            ),
            (
                200,
                Length(3),
                false,
                0,
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\n",
            ),
            (
                200,
                CloseDelimited,
                false,
                0,
                "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n",
            ),
            (
                200,
                CloseDelimited,
                true,
                1,
                "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n",
            ),
            (304, NoBody, true, 1, "HTTP/1.1 304 Not Modified\r\n\r\n"),
            (204, Length(5), true, 1, "HTTP/1.1 204 No Content\r\n\r\n"),
            (100, Chunked, true, 1, "HTTP/1.1 100 Continue\r\n\r\n"),
            (100, NoBody, false, 0, "HTTP/1.1 100 Continue\r\n\r\n"),
            (
                101,
                NoBody,
                true,
                1,
                "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n\r\n",
            ),
            (
                599,
                Length(1),
                true,
                1,
                "HTTP/1.1 599 \r\ncontent-length: 1\r\n\r\n",
            ),
            (
                42,
                Length(1),
                true,
                1,
                "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 1\r\n\r\n",
            ),
            (
                1000,
                NoBody,
                true,
                1,
                "HTTP/1.1 500 Internal Server Error\r\n\r\n",
            ),
            (
                200,
                Length(u64::MAX),
                true,
                1,
                "HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551615\r\n\r\n",
            ),
        ];
        for (status, framing, keep_alive, minor, expected) in cases {
            assert_eq!(
                head(status, &[], framing, keep_alive, minor),
                expected,
                "{status} {framing:?}"
            );
        }
    }

    #[test]
    fn filters_caller_headers() {
        let headers = [
            ("Content-Type", "text/plain"),
            ("Content-Length", "99"),
            ("transfer-encoding", "chunked"),
            ("CONNECTION", "keep-alive"),
            ("X-Split", "a\r\nInjected: yes"),
            ("X-Lf", "a\nb"),
            ("X-Nul", "a\0b"),
            ("Bad Name", "v"),
            ("Bad:Name", "v"),
            ("X-Inj\r\nEvil", "v"),
            ("", "v"),
            ("X-Tab", "a\tb"),
            ("Upgrade", "websocket"),
            ("X-Utf8", "caf\u{e9}"),
        ];
        let got = head(101, &headers, ResponseFraming::NoBody, true, 1);
        let expected =
            "HTTP/1.1 101 Switching Protocols\r\nContent-Type: text/plain\r\nX-Tab: a\tb\r\n\
            Upgrade: websocket\r\nX-Utf8: caf\u{e9}\r\nconnection: upgrade\r\n\r\n";
        assert_eq!(got, expected);
    }

    #[test]
    fn chunks() {
        let big = [7u8; 255];
        let big_chunk = [&b"ff\r\n"[..], &big, b"\r\n"].concat();
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"a", b"1\r\na\r\n"),
            (b"0123456789abcdef", b"10\r\n0123456789abcdef\r\n"),
            (&big, &big_chunk),
        ];
        for &(data, expected) in cases {
            let mut out = b"x".to_vec();
            write_chunk(&mut out, data);
            assert_eq!(out.split_first(), Some((&b'x', expected)));
        }
        assert_eq!(LAST_CHUNK, b"0\r\n\r\n");
    }

    #[test]
    fn output_round_trips_through_chunked_decoder() {
        let mut out = Vec::new();
        for piece in [&b"hello "[..], b"", b"world"] {
            write_chunk(&mut out, piece);
        }
        out.extend_from_slice(LAST_CHUNK);
        let mut dec = crate::wire::http1::chunked::ChunkedDecoder::new();
        let (mut rest, mut body) = (out.as_slice(), Vec::new());
        while let Ok(crate::wire::http1::chunked::Decoded::Data { consumed, data }) =
            dec.decode(rest)
        {
            body.extend_from_slice(&rest[data]);
            rest = &rest[consumed..];
        }
        assert_eq!(body, b"hello world");
        assert!(dec.is_done());
    }

    #[test]
    fn reason_phrases() {
        let cases = [
            (200, "OK"),
            (404, "Not Found"),
            (431, "Request Header Fields Too Large"),
            (777, ""),
        ];
        for (status, reason) in cases {
            assert_eq!(reason_phrase(status), reason);
        }
    }
}
