use super::*;

fn parse(raw: &str) -> Result<Option<Answer>, AnswerError> {
    parse_answer(raw.as_bytes(), false, &AnswerLimits::default())
}

fn head(raw: &str) -> AnswerHead {
    match parse(raw) {
        Ok(Some(Answer::Final(h, n))) => {
            assert_eq!(n, raw.find("\r\n\r\n").unwrap() + 4, "head length");
            h
        }
        other => panic!("{raw:?}: {other:?}"),
    }
}

#[test]
fn framing_follows_the_headers_and_the_request() {
    let h = head("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(h.status, 200);
    assert_eq!(h.framing, AnswerFraming::Length(5));
    assert_eq!(
        h.headers,
        vec![("content-type".into(), "text/plain".into())]
    );
    assert!(h.reusable);
    let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n");
    assert_eq!((h.framing, h.reusable), (AnswerFraming::Chunked, false));
    let h = head("HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!((h.framing, h.reusable), (AnswerFraming::UntilClose, false));
    assert_eq!(
        head("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n").framing,
        AnswerFraming::Empty
    );
    assert_eq!(
        head("HTTP/1.1 204 No Content\r\n\r\n").framing,
        AnswerFraming::Empty
    );
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n";
    match parse_answer(raw, true, &AnswerLimits::default()) {
        Ok(Some(Answer::Final(h, _))) => assert_eq!(h.framing, AnswerFraming::Empty),
        other => panic!("{other:?}"),
    }
    // HTTP/1.0 keeps the connection only when asked to.
    assert!(!head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").reusable);
    assert!(
        head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n").reusable
    );
    // Equal repeated lengths are one length.
    let h = head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
    assert_eq!(h.framing, AnswerFraming::Length(3));
}

#[test]
fn interim_heads_are_skipped_and_partial_heads_wait() {
    assert_eq!(
        parse("HTTP/1.1 100 Continue\r\n\r\n"),
        Ok(Some(Answer::Interim(25)))
    );
    let raw = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
    for cut in 0..raw.len() {
        assert_eq!(parse(&raw[..cut]), Ok(None), "{cut} bytes");
    }
}

#[test]
fn anything_ambiguous_is_refused() {
    use AnswerError::*;
    for (raw, why) in [
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            BadContentLength,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n",
            BadContentLength,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n",
            BadContentLength,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            BadContentLength,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            BadTransferEncoding,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            BadTransferEncoding,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            BadTransferEncoding,
        ),
        ("HTTP/1.1 101 Switching Protocols\r\n\r\n", BadStatus),
        ("HTTP/1.1 600 Nope\r\n\r\n", BadStatus),
        ("HTTP/1.1 099 Nope\r\n\r\n", BadStatus),
        ("HTTP/2.0 200 OK\r\n\r\n", Malformed),
        ("HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", Malformed),
        ("HTTP/1.1 200 OK\r\nX-A: a\x01b\r\n\r\n", Malformed),
    ] {
        assert_eq!(parse(raw), Err(why), "{raw:?}");
    }
    let raw = b"HTTP/1.1 200 OK\r\nX-A: \xff\r\n\r\n";
    assert_eq!(
        parse_answer(raw, false, &AnswerLimits::default()),
        Err(BadHeaderValue)
    );
    let small = AnswerLimits {
        max_head_bytes: 64,
        max_headers: 2,
    };
    let many = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_eq!(
        parse_answer(many.as_bytes(), false, &small),
        Err(TooManyHeaders)
    );
    let long = format!("HTTP/1.1 200 OK\r\nA: {}", "x".repeat(80));
    assert_eq!(parse_answer(long.as_bytes(), false, &small), Err(TooLarge));
    let long = format!("HTTP/1.1 200 OK\r\nA: {}\r\n\r\n", "x".repeat(80));
    assert_eq!(parse_answer(long.as_bytes(), false, &small), Err(TooLarge));
}

proptest::proptest! {
    /// Any bytes: never a panic, and a head found is found whatever follows it.
    #[test]
    fn hostile_bytes_never_panic(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let limits = AnswerLimits::default();
        if let Ok(Some(Answer::Final(h, n))) = parse_answer(&raw, false, &limits) {
            let again = parse_answer(&raw[..n], false, &limits);
            proptest::prop_assert_eq!(again, Ok(Some(Answer::Final(h, n))));
        }
    }
}
