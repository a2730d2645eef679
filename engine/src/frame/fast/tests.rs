//! The fast path for answer frames against the full parser.

use super::*;
use crate::frame::ClientFrame;
use proptest::prelude::*;

/// Values as a client may write them: plain, escaped (as Swift escapes `/`),
/// broken, or of the wrong kind.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => "\"[a-z0-9 /._-]{0,12}\"",
        4 => Just(r#""application\/json""#.to_string()),
        4 => Just(r#""caf\u00e9 \ud83d\ude00""#.to_string()),
        1 => prop_oneof![
        Just(r#""lone \ud83d""#.to_string()),
        Just(r#""\x""#.to_string()),
        Just("\"raw\ttab\"".to_string()),
        Just("7".to_string()),
        Just("null".to_string()),
    ]]
}

fn status() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (200u16..600).prop_map(|n| n.to_string()),
        1 => prop_oneof![
        Just("199".to_string()),
        Just("600".to_string()),
        Just("2000".to_string()),
        Just("200.0".to_string()),
        Just("2e2".to_string()),
        Just("0200".to_string()),
        Just("-200".to_string()),
        Just("\"200\"".to_string()),
    ]]
}

fn headers() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        8 => "\"[a-z-]{0,8}\"",
        1 => Just(r#""x-\u0041""#.to_string()),
        1 => Just("7".to_string())
    ];
    prop_oneof![
        9 => proptest::collection::vec((key, value()), 0..3).prop_map(|kv| {
            let kv: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("{{{}}}", kv.join(","))
        }),
        1 => Just("[]".to_string()),
    ]
}

fn body() -> impl Strategy<Value = String> {
    prop_oneof![
        value(),
        Just(r#""aGVsbG8=""#.to_string()),
        Just(r#""aGVsbG8\/""#.to_string()),
        Just(r#""not base64!""#.to_string()),
    ]
}

/// `response` and `stream_start` frames (and the stream frames), keys in any
/// order, each mostly valid, sometimes missing, broken, repeated or unknown,
/// with or without whitespace.
fn reply_frame() -> impl Strategy<Value = String> {
    let ty = prop_oneof![
        4 => Just("\"response\""),
        2 => Just("\"stream_start\""),
        1 => Just("\"stream_chunk\""),
        1 => Just("\"stream_end\""),
    ];
    let id = prop_oneof![
        8 => Just("\"req_1\"".to_string()),
        1 => Just(r#""req_\u0031""#.to_string()),
        1 => Just("7".to_string()),
    ];
    let encoding = prop_oneof![
        Just("\"base64\"".to_string()),
        Just("\"utf8\"".to_string()),
        Just("null".to_string()),
    ];
    let maybe =
        |p: u32, v: BoxedStrategy<String>| prop_oneof![p => v.prop_map(Some), 1 => Just(None)];
    let fields = (
        maybe(6, status().boxed()),
        maybe(6, headers().boxed()),
        maybe(2, body().boxed()),
        maybe(1, encoding.boxed()),
        prop_oneof![8 => Just(None), 1 => value().prop_map(|v| Some(("data", v))), 1 => status().prop_map(|v| Some(("status", v))), 1 => value().prop_map(|v| Some(("other", v)))],
    );
    let spaced = prop_oneof![7 => Just(false), 1 => Just(true)];
    (ty, id, fields, spaced).prop_flat_map(|(ty, id, (st, he, bo, en, extra), spaced)| {
        let mut all = vec![format!("\"type\":{ty}"), format!("\"id\":{id}")];
        let named = [
            ("status", st),
            ("headers", he),
            ("body", bo),
            ("bodyEncoding", en),
        ];
        all.extend(
            named
                .into_iter()
                .filter_map(|(k, v)| Some(format!("\"{k}\":{}", v?))),
        );
        all.extend(extra.map(|(k, v)| format!("\"{k}\":{v}")));
        let sep = if spaced { ", " } else { "," };
        Just(all)
            .prop_shuffle()
            .prop_map(move |all| format!("{{{}}}", all.join(sep)))
    })
}

proptest! {
    // About one generated frame in nine is valid: enough cases to cover both paths.
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn answer_frames_parse_as_the_full_parser_parses_them(text in reply_frame()) {
        prop_assert_eq!(Inbound::parse(&text), Inbound::parse_full(&text), "{}", text);
    }

    #[test]
    fn answers_as_our_clients_encode_them_take_the_fast_path(
        status in 200u16..600,
        headers in proptest::collection::vec(("[a-z-]{1,12}", any::<String>()), 0..4),
        body in prop_oneof![
            any::<String>().prop_map(Body::Text),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Body::Binary),
        ],
        stream in any::<bool>(),
    ) {
        let (id, headers) = ("req_1a2b".to_string(), Headers(headers));
        let frame = if stream {
            ClientFrame::StreamStart { id, status, headers }
        } else {
            ClientFrame::Response { id, status, headers, body }
        };
        let text = frame.encode();
        let fast = parse(&text).map(Fast::into_inbound);
        prop_assert_eq!(fast, Some(Inbound::Frame(frame)), "{}", text);
    }
}

#[test]
fn the_app_s_answers_take_the_fast_path() {
    // Swift writes `/` as `\/`, in any key order.
    let text = r#"{"headers":{"content-type":"application\/json"},"status":200,"body":"{\"ok\":true}","id":"req_1","type":"response"}"#;
    let want = Inbound::Frame(ClientFrame::Response {
        id: "req_1".into(),
        status: 200,
        headers: Headers(vec![("content-type".into(), "application/json".into())]),
        body: Body::Text(r#"{"ok":true}"#.into()),
    });
    assert_eq!(parse(text).map(Fast::into_inbound), Some(want.clone()));
    assert_eq!(Inbound::parse_full(text), want);
    let binary = r#"{"type":"response","id":"req_2","status":200,"headers":{},"body":"\/w==","bodyEncoding":"base64"}"#;
    let got = parse(binary).map(Fast::into_inbound);
    let Some(Inbound::Frame(ClientFrame::Response { body, .. })) = got else {
        panic!("fast path: {got:?}");
    };
    assert_eq!(body, Body::Binary(vec![0xff]));
    // Out of range: the full parser names the fault.
    let bad = r#"{"type":"response","id":"req_3","status":700,"headers":{}}"#;
    assert!(parse(bad).is_none());
    assert!(matches!(Inbound::parse(bad), Inbound::BadReply { .. }));
}

proptest! {
    /// A body kept as written unescapes to the text that was encoded, and
    /// says its length before it is written.
    #[test]
    fn raw_bodies_unescape_to_what_was_encoded(text in any::<String>(), swift in any::<bool>()) {
        let mut json = serde_json::to_string(&text).unwrap();
        if swift {
            json = json.replace('/', "\\/");
        }
        let (raw, rest, plain) = raw_plain_at(&json).expect("a string");
        prop_assert_eq!(rest, "");
        prop_assert_eq!(plain, !json.contains('\\'));
        // Either way of reading it gives the same.
        let body = RawBody::Text { raw, plain };
        let slow = RawBody::Text { raw, plain: false };
        prop_assert_eq!(slow.len(), text.len());
        let mut out = Vec::new();
        slow.write_into(&mut out);
        prop_assert_eq!(&out, text.as_bytes());
        let mut out = Vec::new();
        body.write_into(&mut out);
        prop_assert_eq!(body.len(), text.len());
        prop_assert_eq!(out, text.as_bytes());
        let plain = unescape(raw);
        prop_assert_eq!(plain.as_deref(), Some(text.as_str()));
    }
}
