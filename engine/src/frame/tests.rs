use super::*;
use core::net::IpAddr;
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 _./:-]{0,24}",
        any::<String>(),
        Just("\"\\\n\r\t\u{0}é✓".to_string()),
    ]
}

/// Text (any, or exactly what the fast paths care about) or any bytes.
fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        text().prop_map(Body::Text),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Body::Binary),
    ]
}

fn headers() -> impl Strategy<Value = Headers> {
    proptest::collection::vec(("[a-z][a-z0-9-]{0,12}", text()), 0..5).prop_map(|mut v| {
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|a, b| a.0 == b.0);
        Headers(v)
    })
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    let sig = (text(), text()).prop_map(|(address, signature)| AgentSig { address, signature });
    prop_oneof![
        (proptest::collection::vec(sig, 0..4), text(), any::<u64>()).prop_map(
            |(agents, nonce, timestamp)| ClientFrame::Auth {
                agents,
                nonce,
                timestamp
            }
        ),
        Just(ClientFrame::RequestChallenge),
        (text(), text(), text(), any::<u64>()).prop_map(
            |(address, signature, nonce, timestamp)| {
                ClientFrame::AddAgent {
                    address,
                    signature,
                    nonce,
                    timestamp,
                }
            }
        ),
        text().prop_map(|address| ClientFrame::RemoveAgent { address }),
        any::<u64>().prop_map(|ts| ClientFrame::Pong { ts }),
        (text(), 200u16..600, headers(), body()).prop_map(|(id, status, headers, body)| {
            ClientFrame::Response {
                id,
                status,
                headers,
                body,
            }
        }),
        (text(), 200u16..600, headers()).prop_map(|(id, status, headers)| {
            ClientFrame::StreamStart {
                id,
                status,
                headers,
            }
        }),
        (text(), body()).prop_map(|(id, data)| ClientFrame::StreamChunk {
            id,
            data: ChunkData(data)
        }),
        text().prop_map(|id| ClientFrame::StreamEnd { id }),
    ]
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    let au = (text(), text()).prop_map(|(address, url)| AgentUrl { address, url });
    let rj = (text(), text()).prop_map(|(address, reason)| Rejected { address, reason });
    prop_oneof![
        text().prop_map(|nonce| ServerFrame::Challenge { nonce }),
        (
            proptest::collection::vec(au, 0..3),
            proptest::collection::vec(rj, 0..2)
        )
            .prop_map(|(agents, rejected)| ServerFrame::AuthOk {
                agents,
                rejected,
                features: FEATURES.iter().map(|f| f.to_string()).collect(),
                region: Some("fra".into()),
            }),
        text().prop_map(|error| ServerFrame::AuthError { error }),
        (text(), text()).prop_map(|(address, url)| ServerFrame::AgentAdded {
            address,
            url,
            features: vec![],
            region: None,
        }),
        (text(), proptest::option::of(text()))
            .prop_map(|(address, reason)| ServerFrame::AgentRemoved { address, reason }),
        (text(), text(), text(), headers(), body()).prop_map(
            |(id, method, path, headers, body)| ServerFrame::Request {
                id,
                method,
                path,
                headers,
                body
            }
        ),
        any::<u64>().prop_map(|ts| ServerFrame::Ping { ts }),
        text().prop_map(|error| ServerFrame::Error { error }),
        text().prop_map(|id| ServerFrame::Cancel { id }),
    ]
}

proptest! {
    #[test]
    fn client_frames_round_trip(f in client_frame()) {
        prop_assert_eq!(Inbound::parse(&f.encode()), Inbound::Frame(f));
    }

    #[test]
    fn server_frames_round_trip(f in server_frame()) {
        prop_assert_eq!(ServerFrame::parse(&f.encode()), Some(f));
    }

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        let _ = Inbound::parse(&s);
        let _ = ServerFrame::parse(&s);
    }
}

#[test]
fn encodes_the_contract_shapes() {
    let f = ServerFrame::Ping { ts: 1709136000 };
    assert_eq!(f.encode(), r#"{"type":"ping","ts":1709136000}"#);
    let f = ServerFrame::AuthOk {
        agents: vec![],
        rejected: vec![],
        features: vec![],
        region: None,
    };
    assert_eq!(f.encode(), r#"{"type":"auth_ok","agents":[]}"#);
    let f = ServerFrame::AuthOk {
        agents: vec![],
        rejected: vec![],
        features: vec!["body_encoding".into()],
        region: Some("local".into()),
    };
    assert_eq!(
        f.encode(),
        r#"{"type":"auth_ok","agents":[],"features":["body_encoding"],"region":"local"}"#
    );
    let mut f = ServerFrame::Request {
        id: "req_1".into(),
        method: "GET".into(),
        path: "/x?y=1".into(),
        headers: Headers(vec![("a".into(), "b".into())]),
        body: Body::default(),
    };
    // `body` is always there, as the reference relay sends it.
    assert_eq!(
        f.encode(),
        r#"{"type":"request","id":"req_1","method":"GET","path":"/x?y=1","headers":{"a":"b"},"body":""}"#
    );
    if let ServerFrame::Request { body, .. } = &mut f {
        *body = Body::Binary(vec![0xff, 0xfe, 0]);
    }
    assert_eq!(
        f.encode(),
        r#"{"type":"request","id":"req_1","method":"GET","path":"/x?y=1","headers":{"a":"b"},"body":"//4A","bodyEncoding":"base64"}"#
    );
    let r = ClientFrame::Response {
        id: "r".into(),
        status: 200,
        headers: Headers::default(),
        body: Body::Binary(vec![0x89, b'P', b'N', b'G']),
    };
    assert_eq!(
        r.encode(),
        r#"{"type":"response","id":"r","status":200,"headers":{},"body":"iVBORw==","bodyEncoding":"base64"}"#
    );
    let c = ClientFrame::StreamChunk {
        id: "r".into(),
        data: ChunkData(Body::Binary(vec![0xff])),
    };
    assert_eq!(
        c.encode(),
        r#"{"type":"stream_chunk","id":"r","data":"/w==","bodyEncoding":"base64"}"#
    );
    assert_eq!(
        ClientFrame::RequestChallenge.encode(),
        r#"{"type":"request_challenge"}"#
    );
}

#[test]
fn bad_replies_keep_their_id() {
    let cases = [
        (
            r#"{"type":"response","id":"r","status":"200","headers":{}}"#,
            "status is not an integer",
        ),
        (
            r#"{"type":"response","id":"r","status":200.5,"headers":{}}"#,
            "status is not an integer",
        ),
        (
            r#"{"type":"response","id":"r","status":0,"headers":{}}"#,
            "status outside 200-599",
        ),
        (
            r#"{"type":"response","id":"r","status":1000,"headers":{}}"#,
            "status outside 200-599",
        ),
        (
            r#"{"type":"response","id":"r","status":-1,"headers":{}}"#,
            "status is not an integer",
        ),
        (
            r#"{"type":"response","id":"r","status":200}"#,
            "headers is not an object of strings",
        ),
        (
            r#"{"type":"response","id":"r","status":200,"headers":[]}"#,
            "headers is not an object of strings",
        ),
        (
            r#"{"type":"response","id":"r","status":200,"headers":{"a":1}}"#,
            "headers is not an object of strings",
        ),
        (
            r#"{"type":"response","id":"r","status":200,"headers":{},"body":5}"#,
            "body is not a string",
        ),
        (
            r#"{"type":"stream_start","id":"r","status":99,"headers":{}}"#,
            "status outside 200-599",
        ),
        (
            r#"{"type":"stream_chunk","id":"r"}"#,
            "data is not a string",
        ),
    ];
    for (text, why) in cases {
        assert_eq!(
            Inbound::parse(text),
            Inbound::BadReply {
                id: "r".into(),
                why
            },
            "{text}"
        );
    }
}

#[test]
fn lenient_fields_and_unknowns() {
    let ok = r#"{"type":"response","id":"r","status":204,"headers":{},"body":null,"extra":[1]}"#;
    assert!(matches!(
        Inbound::parse(ok),
        Inbound::Frame(ClientFrame::Response { status: 204, .. })
    ));
    assert_eq!(Inbound::parse("not json"), Inbound::Invalid);
    assert_eq!(Inbound::parse("[1,2]"), Inbound::Unknown);
    assert_eq!(Inbound::parse(r#"{"type":"hello"}"#), Inbound::Unknown);
    assert_eq!(Inbound::parse(r#"{"type":5}"#), Inbound::Unknown);
    assert_eq!(
        Inbound::parse(r#"{"type":"response","status":200}"#),
        Inbound::Unknown
    );
    let auth = Inbound::parse(r#"{"type":"auth","agents":[{"address":"a"},7],"timestamp":"x"}"#);
    let want = ClientFrame::Auth {
        agents: vec![
            AgentSig {
                address: "a".into(),
                signature: String::new(),
            },
            AgentSig {
                address: String::new(),
                signature: String::new(),
            },
        ],
        nonce: String::new(),
        timestamp: 0,
    };
    assert_eq!(auth, Inbound::Frame(want));
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(
            prop_oneof![
                Just('"'),
                Just('\\'),
                Just('\n'),
                Just('\u{1}'),
                Just('\u{7f}'),
                Just('é'),
                Just('a'),
                Just('\u{1f}'),
                Just(' ')
            ],
            0..600
        )
        .prop_map(|v| v.into_iter().collect()),
    ]
}

proptest! {
    #[test]
    fn fast_escaping_is_byte_for_byte_serde_json(s in any_text()) {
        let mut out = String::new();
        escape_into(&mut out, &s);
        prop_assert_eq!(format!("\"{out}\""), serde_json::to_string(&s).unwrap());
    }

    #[test]
    fn fast_request_encoding_matches_serde(body in any_text(), pad in 256usize..1024, headers in headers()) {
        let body = format!("{body}{}", "x".repeat(pad));
        let f = ServerFrame::Request { id: "req_1".into(), method: "POST".into(), path: "/p?q=\"1\"".into(), headers, body: Body::Text(body) };
        prop_assert_eq!(f.encode(), serde_json::to_string(&f).unwrap());
    }

    #[test]
    fn every_request_frame_encodes_as_serde_does(
        id in any_text(), method in any_text(), path in any_text(),
        headers in proptest::collection::vec((any_text(), any_text()), 0..5),
        body in prop_oneof![any_text().prop_map(Body::Text), proptest::collection::vec(any::<u8>(), 0..600).prop_map(Body::Binary)],
    ) {
        let f = ServerFrame::Request { id, method, path, headers: Headers(headers), body };
        prop_assert_eq!(f.encode(), serde_json::to_string(&f).unwrap());
    }

    /// The relay's own two headers, written as characters, read back as
    /// the serde frame that lists them last.
    #[test]
    fn relay_headers_encode_as_serde_does(
        agent in any::<[u8; 20]>(), v4 in any::<u32>(), v6 in any::<u128>(), six in any::<bool>(),
        headers in proptest::collection::vec((any_text(), any_text()), 0..3),
    ) {
        let agent = crate::auth::Address(agent);
        let ip = if six { IpAddr::from(core::net::Ipv6Addr::from(v6)) } else { IpAddr::from(core::net::Ipv4Addr::from(v4)) };
        let text = RequestText {
            method: "GET",
            path: "/",
            headers: headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            headers_size: 0,
            names: Names::AsGiven,
        };
        let got = encode_request("req_1", text, Some(RelayHeaders { agent: &agent, ip }), &Body::default());
        let mut all = headers.clone();
        all.push(("x-agent-address".into(), crate::auth::to_lower(&agent)));
        all.push(("x-forwarded-for".into(), ip.to_string()));
        let f = ServerFrame::Request { id: "req_1".into(), method: "GET".into(), path: "/".into(), headers: Headers(all), body: Body::default() };
        prop_assert_eq!(got, serde_json::to_string(&f).unwrap());
    }
}

#[test]
fn string_fields_read_as_serde_reads_them() {
    for raw in [
        r#""""#,
        r#""plain text, é and 😀""#,
        r#""line\nbreak \"quoted\" \\ back \u00e9 \ud83d\ude00""#,
        r#""tab\tend\/""#,
    ] {
        let v: &RawValue = serde_json::from_str(raw).unwrap();
        let want: String = serde_json::from_str(raw).unwrap();
        assert_eq!(json_string(v), Some(want), "{raw}");
    }
    for not_string in ["1", "null", r#"{"a":"b"}"#, r#"["x"]"#] {
        let v: &RawValue = serde_json::from_str(not_string).unwrap();
        assert_eq!(json_string(v), None, "{not_string}");
    }
}

/// A stream frame as a tunnel might send it: keys in any order, sometimes
/// repeated, extra or missing, whitespace, escapes and odd values.
fn stream_frame() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        "[a-z0-9_]{0,12}".prop_map(|s| format!("\"{s}\"")),
        text().prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just("\"a\\u0041\"".to_string()),
        // Escapes the one-pass unescaper must decode or refuse as serde_json does.
        prop_oneof![
            Just(r#""\ud83d\ude00 \uD83D\uDE00""#),
            Just(r#""lone \ud83d""#),
            Just(r#""lone \ude00 low""#),
            Just(r#""\ud83d\u0041""#),
            Just(r#""\x""#),
            Just(r#""\u12""#),
            Just(r#""\u00g1""#),
            Just(r#""ends \"#),
            Just(r#""\/\b\f\r\t\n\\\"""#),
            Just(r#""data: {\"x\":1}\n\n""#),
            Just("\"raw\ttab\""),
        ]
        .prop_map(str::to_string),
        Just("7".to_string()),
        Just("null".to_string()),
        Just("\"base64\"".to_string()),
    ];
    let key = prop_oneof![
        Just("type"),
        Just("id"),
        Just("data"),
        Just("bodyEncoding"),
        Just("other")
    ];
    let ty = prop_oneof![
        Just("\"stream_chunk\""),
        Just("\"stream_end\""),
        Just("\"response\""),
        Just("\"stream_chunk \""),
    ];
    let pairs = proptest::collection::vec((key, value), 0..4);
    (ty, pairs, any::<bool>(), 0usize..4).prop_map(|(ty, pairs, spaced, at)| {
        let mut all: Vec<String> = pairs
            .into_iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        all.insert(at.min(all.len()), format!("\"type\":{ty}"));
        let sep = if spaced { ", " } else { "," };
        format!("{{{}}}", all.join(sep))
    })
}

proptest! {
    #[test]
    fn the_stream_fast_path_answers_as_the_full_parser(text in stream_frame()) {
        prop_assert_eq!(Inbound::parse(&text), Inbound::parse_full(&text), "{}", text);
    }
}

/// A JSON string literal built from escapes (valid, lone or broken) and text.
fn escaped_literal() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        prop_oneof![
            Just(r#"\""#),
            Just(r#"\\"#),
            Just(r#"\/"#),
            Just(r#"\b"#),
            Just(r#"\f"#),
            Just(r#"\n"#),
            Just(r#"\r"#),
            Just(r#"\t"#),
            Just(r#"\u00e9"#),
            Just(r#"\u00E9"#),
            Just(r#"\u0000"#),
            Just(r#"\ud83d"#),
            Just(r#"\uDE00"#),
            Just(r#"\ud83d\ude00"#),
            Just(r#"\uDBFF\uDFFF"#),
            Just(r#"\x"#),
            Just(r#"\u0g"#),
            Just("\t"),
            Just("é"),
        ]
        .prop_map(str::to_string),
        "[a-z :{}]{0,9}",
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|p| format!("\"{}\"", p.concat()))
}

proptest! {
    #[test]
    fn chunk_data_is_unescaped_as_serde_json_does(
        data in prop_oneof![escaped_literal(), text().prop_map(|s| serde_json::to_string(&s).unwrap())]
    ) {
        let frame = format!(r#"{{"type":"stream_chunk","id":"r1","data":{data}}}"#);
        prop_assert_eq!(Inbound::parse(&frame), Inbound::parse_full(&frame), "{}", frame);
        if serde_json::from_str::<String>(&data).is_ok() {
            prop_assert!(fast::parse(&frame).is_some(), "a valid string stays on the fast path: {}", frame);
        }
    }
}

#[test]
fn the_app_s_plain_chunks_take_the_fast_path() {
    // Token text is often JSON: escapes in `data` stay on the fast path.
    let chunk = r#"{"type":"stream_chunk","id":"req_1","data":"data: {\"x\":1}\n"}"#;
    let got = fast::parse(chunk).expect("the fast path").into_inbound();
    assert_eq!(got, Inbound::parse_full(chunk));
    let plain = r#"{"id":"req_1","data":"data: hi","type":"stream_chunk"}"#;
    let want = Inbound::Frame(ClientFrame::StreamChunk {
        id: "req_1".into(),
        data: ChunkData(Body::Text("data: hi".into())),
    });
    assert_eq!(
        fast::parse(plain).map(fast::Fast::into_inbound),
        Some(want.clone())
    );
    assert_eq!(Inbound::parse_full(plain), want);
    let end = r#"{"type":"stream_end","id":"req_1"}"#;
    assert!(fast::parse(end).is_some());
}
