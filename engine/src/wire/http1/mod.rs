//! Strict, IO-free HTTP/1.1 request codec for a public-facing server.

pub mod answer;
pub mod chunked;
pub mod head;
pub mod response;

pub use answer::{parse_answer, Answer, AnswerError, AnswerFraming, AnswerHead, AnswerLimits};
pub use chunked::{ChunkError, ChunkedDecoder, Decoded};
pub use head::{parse_head, parse_head_in, BodyFraming, HeadError, HeadLimits, RequestHead};
pub(crate) use response::digits;
pub use response::{
    complete_framing, reason_phrase, write_chunk, write_field, write_head, write_head_end,
    write_status_line, ResponseFraming, LAST_CHUNK,
};

/// `http://host[:port][/...]` → `host:port` (port 80 when none is given),
/// as an HTTP/1.1 client connects to it; `None` for anything else.
pub fn http_authority(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let a = rest.split('/').next().filter(|a| !a.is_empty())?;
    let has_port = a
        .rsplit_once(':')
        .is_some_and(|(host, p)| !host.is_empty() && p.parse::<u16>().is_ok());
    Some(if has_port {
        a.to_string()
    } else {
        format!("{a}:80")
    })
}

#[cfg(test)]
mod tests {
    use super::http_authority;

    #[test]
    fn authorities() {
        let a = |u| http_authority(u);
        assert_eq!(a("http://10.0.0.5:8080").as_deref(), Some("10.0.0.5:8080"));
        assert_eq!(a("http://relay-1/x").as_deref(), Some("relay-1:80"));
        assert_eq!(a("http://[::1]:9000").as_deref(), Some("[::1]:9000"));
        assert_eq!(a("https://relay-1"), None);
        assert_eq!(a("http://"), None);
    }
}
