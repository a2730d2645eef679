use super::*;

fn parse(s: &str) -> ParseResult<'_> {
    parse_head(s.as_bytes(), &HeadLimits::default())
}

/// `|` is CRLF, the blank line is appended; `+` prefixes a POST with Host.
fn msg(s: &str) -> String {
    let s = match s.strip_prefix('+') {
        Some(h) => format!("POST /u HTTP/1.1|Host: a|{h}"),
        None => s.to_owned(),
    };
    format!("{}\r\n\r\n", s.replace('|', "\r\n"))
}

/// The head of `s` (its text kept for the rest of the test run).
fn ok(s: &str) -> RequestHead<'static> {
    let m: &'static str = Box::leak(msg(s).into_boxed_str());
    match parse(m) {
        Ok(Some((head, len))) if len == m.len() => head,
        other => panic!("expected a head for {m:?}, got {other:?}"),
    }
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn limits(max_head_bytes: usize, max_headers: usize) -> HeadLimits {
    HeadLimits {
        max_head_bytes,
        max_headers,
    }
}

#[test]
fn parses_basic_get() {
    let expected = RequestHead {
        method: "GET",
        target: "/v1/chat?stream=true".into(),
        minor_version: 1,
        headers: Fields::Pairs(&owned(&[("Host", "example.com"), ("X-A", "b c")])),
        body: BodyFraming::None,
        keep_alive: true,
        expect_continue: false,
        websocket_key: None,
        host: Some("example.com"),
    };
    let h = ok("GET /v1/chat?stream=true HTTP/1.1|Host: example.com|X-A:  b c \t");
    assert_eq!(h, expected);
    // Leading empty lines are skipped but count as consumed.
    assert_eq!(ok("|PURGE /x HTTP/1.0").method, "PURGE");
}

const BAD_400: &[&str] = &[
    "+Content-Length: 5|Transfer-Encoding: chunked",
    "+Transfer-Encoding: chunked|Content-Length: 5",
    "+Content-Length: 5, 5",
    "+Content-Length: 5|Content-Length: 5",
    "+Content-Length: +5",
    "+Content-Length: -5",
    "+Content-Length: 5 5",
    "+Content-Length: 0x5",
    "+Content-Length:",
    "+Content-Length: 18446744073709551616",
    "+Transfer-Encoding: chunked|Transfer-Encoding: chunked",
    "+Transfer-Encoding: gzip|Transfer-Encoding: chunked",
    "+Transfer-Encoding: chunked, chunked",
    "+Transfer-Encoding: chunked, gzip",
    "+Transfer-Encoding: , chunked",
    "+Transfer-Encoding: chunked;q=1",
    "+Transfer-Encoding: \"chunked\"",
    "+Transfer-Encoding : chunked",
    "+Content-Length : 5",
    "+X-A: a| folded",
    "+X-A: a|\tfolded",
    "+X-A: a\rb",
    "+X-A: a\0b",
    "+X-A: a\x7fb",
    "+Host: b",
    "+X-A: b\nX-B: c",
    "POST / HTTP/1.0|Transfer-Encoding: chunked",
    "GET / HTTP/1.1",
    "GET / HTTP/1.1|Host: a b",
    "GET / HTTP/1.1|Host: u@a",
    "GET / HTTP/1.1\nHost: a\n",
    "GET / http/1.1",
    "GET / HTTP/1.1x",
    "GET / HTTP/2",
    "GET / FOO",
    "GET  / HTTP/1.1|Host: a",
    "GET foo HTTP/1.1|Host: a",
    "GET * HTTP/1.1|Host: a",
    "CONNECT a:443 HTTP/1.1|Host: a:443",
    "GET /a#b HTTP/1.1|Host: a",
    "GET /\u{e9} HTTP/1.1|Host: a",
    "GET http://b/ HTTP/1.1|Host: a",
    "GET http:///x HTTP/1.1|Host: a",
    "GET ftp://a/ HTTP/1.1|Host: a",
    "G(T / HTTP/1.1|Host: a",
];
const BAD_501: &[&str] = &[
    "+Transfer-Encoding: xchunked",
    "+Transfer-Encoding: identity",
    "+Transfer-Encoding: gzip, chunked",
    "MMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMM / HTTP/1.1|Host: a",
];
const BAD_505: &[&str] = &["GET / HTTP/2.0|Host: a", "GET / HTTP/1.2", "GET / HTTP/0.9"];

#[test]
fn rejects_bad_heads() {
    for (status, cases) in [(400, BAD_400), (501, BAD_501), (505, BAD_505)] {
        for input in cases {
            let got = parse(&msg(input)).map(|r| r.is_some());
            assert_eq!(got.map_err(|e| e.status()), Err(status), "{input:?}");
        }
    }
    let mut latin1 = msg("+X-A: ").into_bytes();
    latin1.insert(latin1.len() - 4, 0xe9);
    let err = Err(BadRequest("header value is not UTF-8"));
    assert_eq!(parse_head(&latin1, &HeadLimits::default()), err);
    let m32 = ok("M32MMMMMMMMMMMMMMMMMMMMMMMMMMMMM / HTTP/1.0");
    assert_eq!(m32.method.len(), MAX_METHOD_LEN);
}

/// "head => field=value"
const GOOD: &[&str] = &[
    "+Content-Length: 0 => body=Length(0)",
    "+Content-Length: 007 => body=Length(7)",
    "+Content-Length: 18446744073709551615 => body=Length(18446744073709551615)",
    "+Transfer-Encoding: chunked => body=Chunked",
    "+Transfer-Encoding:  ChUnKeD \t => body=Chunked",
    "HEAD / HTTP/1.0 => body=None",
    "GET / HTTP/1.1|Host: a => keep_alive=true",
    "+Connection: Close => keep_alive=false",
    "+Connection: foo, close => keep_alive=false",
    "+Connection: closed => keep_alive=true",
    "GET / HTTP/1.0 => keep_alive=false",
    "GET / HTTP/1.0|Connection: Keep-Alive => keep_alive=true",
    "GET / HTTP/1.0|Connection: keep-alive, close => keep_alive=false",
    "+Expect: 100-Continue => expect=true",
    "+Expect: 200-ok => expect=false",
    "POST / HTTP/1.0|Expect: 100-continue => expect=false",
    "GET http://a/x?y HTTP/1.1|Host: a => target=/x?y",
    "GET HTTPS://A:8443 HTTP/1.1|Host: a:8443 => target=/",
    "GET http://a?q=1 HTTP/1.1|Host: a => target=/?q=1",
    "GET http://b/ HTTP/1.0 => target=/",
    "GET http://b/ HTTP/1.0 => host=b",
    "GET / HTTP/1.0 => host=-",
    "OPTIONS * HTTP/1.1|Host: a => target=*",
    "GET //x HTTP/1.1|Host: [::1]:80 => target=//x",
    "GET / HTTP/1.1|Host: [::1]:80 => host=[::1]:80",
];

#[test]
fn derived_fields() {
    for case in GOOD {
        let (input, expected) = case.split_once(" => ").unwrap();
        let h = ok(input);
        let got = match expected.split_once('=').unwrap().0 {
            "body" => format!("body={:?}", h.body),
            "keep_alive" => format!("keep_alive={}", h.keep_alive),
            "expect" => format!("expect={}", h.expect_continue),
            "target" => format!("target={}", h.target),
            _ => format!("host={}", h.host.unwrap_or("-")),
        };
        assert_eq!(got, expected, "{input:?}");
    }
}

#[test]
fn websocket_upgrade() {
    let valid = "GET /ws HTTP/1.1|Host: a|Upgrade: WebSocket|Connection: keep-alive, Upgrade|\
        Sec-WebSocket-Version: 13|Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
    let h = ok(valid);
    let key = Some("dGhlIHNhbXBsZSBub25jZQ==");
    assert_eq!(h.websocket_key, key);
    let broken = [
        ("GET", "POST"),
        ("1.1", "1.0"),
        ("Upgrade|", "x|"),
        ("Version: 13", "Version: 8"),
        ("Sec-WebSocket-Version: 13|", ""),
        ("|Sec-WebSocket-Key", "|X"),
        ("Host: a", "Host: a|Sec-WebSocket-Version: 13"),
        ("Key: ", "Key: a|Sec-WebSocket-Key: "),
        ("Host: a", "Host: a|Content-Length: 3"),
        ("Q==", "QA="),
        ("Q==", "*=="),
        ("dGhlIHNhbXBsZSBub25jZQ==", "abc"),
    ];
    for (from, to) in broken {
        let input = valid.replacen(from, to, 1);
        let h = ok(&input);
        assert_eq!(h.websocket_key, None, "{input}");
    }
    let h = ok(&valid.replace("Upgrade: WebSocket|", ""));
    assert_eq!(h.websocket_key, None);
}

#[test]
fn incomplete_at_every_split() {
    let full = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
    let head_len = full.len() - 3;
    for i in 0..head_len {
        assert_eq!(parse(&full[..i]), Ok(None), "split at {i}");
    }
    for i in head_len..=full.len() {
        let (h, len) = parse(&full[..i]).unwrap().unwrap();
        assert_eq!((h.body, len), (BodyFraming::Length(3), head_len));
    }
    // A bad version is reported once the line shows it.
    let bad_version = Err(BadRequest("invalid HTTP version"));
    assert_eq!(parse("GET / HTTP/2"), Ok(None));
    assert_eq!(parse("GET / HTTP/2."), Ok(None));
    assert_eq!(parse("GET / HTTP/2.0\r"), Err(VersionNotSupported));
    assert_eq!(parse("GET / HTTP/x"), bad_version);
}

#[test]
fn size_limits() {
    let check = |s: &str, l| parse_head(s.as_bytes(), &l).map(|r| r.map(|(_, n)| n));
    let pad = |n: usize| msg(&format!("GET / HTTP/1.1|Host: a|X: {}", "p".repeat(n)));
    let exact = pad(64 - pad(0).len());
    assert_eq!(check(&exact, limits(64, 3)), Ok(Some(64)));
    let big = pad(65 - pad(0).len());
    assert_eq!(check(&big, limits(64, 3)), Err(HeadTooLarge));
    assert_eq!(check(&big[..64], limits(64, 3)), Ok(None));
    assert_eq!(check(&big[..65], limits(64, 3)), Err(HeadTooLarge));
    let three = msg("GET / HTTP/1.1|Host: a|A: 1|B: 2");
    assert_eq!(check(&three, limits(64, 3)), Ok(Some(three.len())));
    let four = msg("GET / HTTP/1.1|Host: a|A: 1|B: 2|C: 3");
    assert_eq!(check(&four, limits(64, 3)), Err(HeadTooLarge));
    assert_eq!(check("GET / HTTP/1.1\r\n", limits(0, 0)), Err(HeadTooLarge));
}

#[test]
fn pipelined_requests() {
    let buf = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi\
        GET /b HTTP/1.1\r\nHost: a\r\n\r\nGET /c";
    let (first, len) = parse(buf).unwrap().unwrap();
    assert_eq!((&*first.target, first.body), ("/a", BodyFraming::Length(2)));
    let rest = &buf[len + 2..];
    let (second, len2) = parse(rest).unwrap().unwrap();
    assert_eq!((&*second.target, &rest[len2..]), ("/b", "GET /c"));
    assert_eq!(parse(&rest[len2..]), Ok(None));
}

#[test]
fn error_status_and_reason() {
    let errors = [
        BadRequest("x"),
        HeadTooLarge,
        NotImplemented("y"),
        VersionNotSupported,
    ];
    assert_eq!(errors.map(|e| e.status()), [400, 431, 501, 505]);
    let reasons = [
        "x",
        "request header fields too large",
        "y",
        "HTTP version not supported",
    ];
    assert_eq!(errors.map(|e| e.reason()), reasons);
    assert_eq!(
        HeadTooLarge.to_string(),
        "431 request header fields too large"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]
    /// The borrowed header lines read back exactly what httparse found:
    /// every name as sent, every value trimmed of spaces and tabs.
    #[test]
    fn fields_read_what_httparse_found(
        lines in proptest::collection::vec(("[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}", "[ \t]{0,2}", "[ -~\t\u{80}-\u{10ffff}]{0,12}", "[ \t]{0,2}"), 0..12)
    ) {
        let mut m = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for (name, pre, value, post) in &lines {
            // Framing headers would make the head fail on their values.
            let name = if name.eq_ignore_ascii_case("host") || name.to_ascii_lowercase().starts_with("content-length")
                || name.eq_ignore_ascii_case("transfer-encoding") { "x" } else { name.as_str() };
            m.push_str(&format!("{name}:{pre}{value}{post}\r\n"));
        }
        m.push_str("\r\n");
        let mut slots = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut slots);
        let expected: Vec<(String, String)> = match req.parse(m.as_bytes()) {
            Ok(httparse::Status::Complete(_)) => req.headers.iter().map(|h| {
                let v = std::str::from_utf8(h.value).unwrap().trim_matches([' ', '\t']);
                (h.name.to_owned(), v.to_owned())
            }).collect(),
            _ => return Ok(()),
        };
        let (head, _) = parse(&m).unwrap().unwrap();
        proptest::prop_assert_eq!(head.headers.to_pairs(), expected);
        // With the places kept: the same fields, and the same head.
        let mut spans = vec![Span::default(); 3];
        let (kept, _) = parse_head_in(m.as_bytes(), &HeadLimits::default(), &mut spans).unwrap().unwrap();
        proptest::prop_assert!(matches!(kept.headers, Fields::Spans(..)));
        proptest::prop_assert_eq!(kept.headers.to_pairs(), head.headers.to_pairs());
        proptest::prop_assert_eq!(kept, head);
    }
}

#[test]
fn authority_table_holds_the_uri_host_characters() {
    for b in 0..=255u8 {
        let want = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b);
        assert_eq!(AUTHORITY[usize::from(b)], want, "{b}");
    }
}
