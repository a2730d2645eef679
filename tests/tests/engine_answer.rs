//! A tunnel's complete answer, written by the engine as HTTP/1.x bytes
//! (`Output::Answer`), against the general path: `Output::Respond` framed as
//! the driver frames it (`complete_framing`, `write_head`). Same frames in,
//! same bytes and the same events out.

use osaurus_relay_engine::wire::http1::{complete_framing, write_head};
use osaurus_relay_engine::{Http1Answer, Input, Output};
use osaurus_relay_tests::harness::*;
use proptest::prelude::*;

/// Header names and values as an agent may send them: plain, in capitals,
/// escaped, owned by the relay, CORS ones, broken.
fn header() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        6 => "[a-z][a-z0-9-]{0,10}",
        2 => "[A-Z][A-Za-z-]{0,10}",
        1 => Just("Content-Length".to_string()),
        1 => Just("connection".to_string()),
        1 => Just("x-relay-region".to_string()),
        1 => Just("Access-Control-Allow-Origin".to_string()),
        1 => Just("access-control-expose-headers".to_string()),
        1 => Just("bad name".to_string()),
        1 => Just("x-\\u0041".to_string()),
        1 => Just("x".repeat(257)),
    ];
    let value = prop_oneof![
        8 => "[ -~]{0,16}".prop_map(|v| v.replace(['\\', '"'], "")),
        1 => Just("application\\/json".to_string()),
        1 => Just("caf\\u00e9".to_string()),
        1 => Just("line\\r\\nbreak".to_string()),
        1 => Just("  padded\\t".to_string()),
    ];
    (name, value).prop_map(|(k, v)| format!("\"{k}\":\"{v}\""))
}

fn body() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[ -~]{0,40}".prop_map(|v| format!(",\"body\":{}", serde_json::to_string(&v).unwrap())),
        2 => Just(r#","body":"{\"ok\":true,\"path\":\"a\/b\"}\n""#.to_string()),
        1 => Just(r#","body":"aGVsbG8=","bodyEncoding":"base64""#.to_string()),
        1 => Just(r#","body":null"#.to_string()),
        1 => Just(String::new()),
        1 => Just(format!(",\"body\":\"{}\"", "x".repeat(5000))),
    ]
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => Just(200u16),
        1 => Just(204u16),
        1 => Just(205u16),
        1 => Just(304u16),
        2 => 200u16..600,
    ]
}

/// What a caller on a `form` connection is sent, and every other output,
/// for one request answered with `frame` (its `ID` replaced by the
/// request's id); `engine_writes`: the engine frames the answer itself.
fn run(
    form: Http1Answer,
    engine_writes: bool,
    method: &str,
    frame: &str,
) -> (Vec<u8>, Vec<String>) {
    run_with(test_config(), form, engine_writes, method, frame)
}

/// [`run`] with a configuration.
fn run_with(
    cfg: osaurus_relay_engine::Config,
    form: Http1Answer,
    engine_writes: bool,
    method: &str,
    frame: &str,
) -> (Vec<u8>, Vec<String>) {
    let mut h = Harness::new(cfg);
    let a = key(1);
    let t = h.connect(&[&a]);
    let mut head = Harness::head(method, "/x", &host_of(&a));
    head.http1 = engine_writes.then_some(form);
    let (c, out) = h.request(head, b"");
    let text = frame.replace("ID", &request_id(&out));
    let out = h.step(Input::TunnelText {
        tunnel: t,
        text: &text,
    });
    let (mut wire, mut rest) = (Vec::new(), Vec::new());
    for o in out {
        match o {
            Output::Answer { call, bytes, .. } if call == c => {
                assert!(engine_writes, "bytes for a call that did not ask for them");
                wire = bytes;
            }
            // As the driver writes it.
            Output::Respond { call, response: r } if call == c => {
                // Only the relay's own answers (a 502 for a bad frame) come so.
                assert!(!engine_writes || r.status == 502, "{r:?}");
                let head_request = method == "HEAD";
                let (framing, send) = complete_framing(r.status, r.body.len(), head_request);
                let (keep, minor) = (form.keep_alive, form.minor_version);
                write_head(&mut wire, r.status, &r.headers, framing, keep, minor);
                if send {
                    wire.extend_from_slice(&r.body);
                }
            }
            other => rest.push(format!("{other:?}")),
        }
    }
    (wire, rest)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_engine_writes_answers_as_the_driver_would(
        status in status(),
        headers in proptest::collection::vec(header(), 0..5),
        body in body(),
        minor_version in 0u8..2,
        keep_alive in any::<bool>(),
        head_request in any::<bool>(),
    ) {
        let frame = format!(
            r#"{{"type":"response","id":"ID","status":{status},"headers":{{{}}}{body}}}"#,
            headers.join(",")
        );
        let method = if head_request { "HEAD" } else { "GET" };
        let form = Http1Answer { minor_version, keep_alive, head_request };
        let (bytes, events) = run(form, true, method, &frame);
        let (want, want_events) = run(form, false, method, &frame);
        prop_assert!(!want.is_empty(), "no answer to {}", frame);
        prop_assert_eq!(String::from_utf8_lossy(&bytes), String::from_utf8_lossy(&want), "{}", frame);
        prop_assert_eq!(events, want_events);
    }
}

#[test]
fn more_than_128_headers_are_refused_on_both_paths() {
    let headers: Vec<String> = (0..129).map(|i| format!("\"x-{i}\":\"v\"")).collect();
    let frame = format!(
        r#"{{"type":"response","id":"ID","status":200,"headers":{{{}}},"body":"b"}}"#,
        headers.join(",")
    );
    let form = Http1Answer {
        minor_version: 1,
        keep_alive: true,
        head_request: false,
    };
    let (bytes, events) = run(form, true, "GET", &frame);
    assert!(
        bytes.starts_with(b"HTTP/1.1 502 "),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!((bytes, events), run(form, false, "GET", &frame));
}

/// A region no header can carry is left out on both paths, never written
/// into the head as it is.
#[test]
fn a_diagnostic_value_a_header_cannot_carry_is_left_out() {
    let mut cfg = test_config();
    cfg.region = "ams\r\nx-evil: 1".into();
    let frame = r#"{"type":"response","id":"ID","status":200,"headers":{},"body":"b"}"#;
    let form = Http1Answer {
        minor_version: 1,
        keep_alive: true,
        head_request: false,
    };
    let (bytes, events) = run_with(cfg.clone(), form, true, "GET", frame);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    assert!(
        !text.contains("x-evil") && !text.contains("x-relay-region"),
        "{text}"
    );
    assert!(text.contains("x-relay-machine: "), "{text}");
    assert_eq!((bytes, events), run_with(cfg, form, false, "GET", frame));
}
