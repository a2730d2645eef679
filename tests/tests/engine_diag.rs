//! Where a call was served and how long it took, on the virtual clock
//! (`x-relay-region`, `x-relay-machine`, `x-relay-via`, `Server-Timing`),
//! the caps on a tunnel's answers, and the region in `auth_ok`.

use osaurus_relay_engine::frame::{ClientFrame, Headers, ServerFrame};
use osaurus_relay_engine::{CallId, ClusterConfig, Config, Input, Located, Output, RemoteRoute};
use osaurus_relay_tests::harness::*;

fn config() -> Config {
    Config {
        region: "fra".into(),
        machine: "m1".into(),
        max_response_body_bytes: 1_000,
        ..test_config()
    }
}

/// Every header named `name` on the first answer head to `call`.
fn heads<'a>(out: &'a [Output], call: CallId, name: &str) -> Vec<&'a str> {
    out.iter()
        .filter_map(|o| match o {
            Output::Respond { call: c, response } if *c == call => Some(&response.headers),
            Output::StartStream { call: c, head } if *c == call => Some(&head.headers),
            _ => None,
        })
        .flatten()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_ref())
        .collect()
}

fn reply_with(
    h: &mut Harness,
    t: osaurus_relay_engine::TunnelId,
    id: &str,
    headers: Vec<(String, String)>,
    body: &str,
) -> Vec<Output> {
    h.send(
        t,
        &ClientFrame::Response {
            id: id.into(),
            status: 200,
            headers: Headers(headers),
            body: body.into(),
        },
    )
}

#[test]
fn answers_say_where_and_how_long_on_the_engine_clock() {
    let mut h = Harness::new(config());
    let a = key(1);
    let t = h.connect(&[&a]);
    let (first, out) = h.get(&a, "/");
    let id = request_id(&out);
    // A POST whose body takes 3 ms to arrive, answered 7 ms after it was sent.
    let call = h.new_call();
    let mut head = Harness::head("POST", "/x", &host_of(&a));
    (head.content_length, head.body_follows) = (Some(2), true);
    h.step(Input::CallHead {
        call,
        head: head.view(),
    });
    h.advance(3);
    h.step(Input::CallBody { call, chunk: b"hi" });
    let out = h.step(Input::CallBodyEnd { call });
    let req = request_id(&out);
    h.advance(7);
    // A tunnel cannot claim to be somewhere else.
    let forged = vec![("X-Relay-Machine".into(), "elsewhere".into())];
    let out = reply_with(&mut h, t, &req, forged, "ok");
    assert_eq!(heads(&out, call, "x-relay-region"), ["fra"]);
    assert_eq!(heads(&out, call, "x-relay-machine"), ["m1"]);
    assert_eq!(
        heads(&out, call, "server-timing"),
        ["host;dur=7, relay;dur=10"]
    );
    // The first GET, answered now (10 ms after it was sent), and as a stream.
    let out = h.send(
        t,
        &ClientFrame::StreamStart {
            id,
            status: 200,
            headers: Headers::default(),
        },
    );
    assert_eq!(
        heads(&out, first, "server-timing"),
        ["host;dur=10, relay;dur=10"]
    );
    // Relay errors and preflights on an agent host carry them too.
    let (c, out) = h.get(&key(2), "/");
    assert_eq!(response(&out, c).unwrap().0, 502);
    assert_eq!(heads(&out, c, "x-relay-region"), ["fra"]);
    assert_eq!(heads(&out, c, "server-timing"), ["relay;dur=0"]);
    let (c, out) = h.request(Harness::head("OPTIONS", "/", &host_of(&a)), b"");
    assert_eq!(heads(&out, c, "x-relay-machine"), ["m1"]);
    // The relay's own endpoints do not.
    let (c, out) = h.request(Harness::head("GET", "/health", DOMAIN), b"");
    assert!(heads(&out, c, "x-relay-region").is_empty());
    // Only the stream still open keeps its record.
    assert_eq!(h.relay.sizes().timed_calls, 1);
}

#[test]
fn a_forwarded_answer_names_the_owner_and_the_hop_with_the_look_up_time() {
    let mut h = Harness::new(Config {
        cluster: Some(ClusterConfig::new("m1", RemoteRoute::Forward)),
        ..config()
    });
    let a = key(1);
    let (c, out) = h.get(&a, "/");
    assert!(matches!(out.as_slice(), [Output::Lookup { .. }]), "{out:?}");
    h.advance(4);
    let agent = lower(&a);
    let found = Located::Owner("m2".into());
    h.step(Input::Located {
        agent: &agent,
        found,
    });
    let headers = vec![
        ("x-relay-region".into(), "iad".into()),
        ("x-relay-machine".into(), "m2".into()),
        ("server-timing".into(), "host;dur=5, relay;dur=6".into()),
    ];
    h.step(Input::OwnerHead {
        call: c,
        status: 200,
        headers,
        streamed: false,
    });
    let out = h.step(Input::OwnerEnd { call: c });
    assert_eq!(heads(&out, c, "x-relay-region"), ["iad"]);
    assert_eq!(heads(&out, c, "x-relay-machine"), ["m2"]);
    assert_eq!(heads(&out, c, "x-relay-via"), ["m1"]);
    assert_eq!(
        heads(&out, c, "server-timing"),
        ["host;dur=5, relay;dur=6", "lookup;dur=4"]
    );
    // An owner that cannot be reached: this machine answered.
    let (c, _) = h.get(&a, "/");
    let fault = osaurus_relay_engine::OwnerFault::Unreachable;
    let out = h.step(Input::OwnerFailed { call: c, fault });
    assert_eq!(heads(&out, c, "x-relay-machine"), ["m1"]);
    assert!(heads(&out, c, "x-relay-via").is_empty());
}

#[test]
fn oversized_answers_fail_the_call_not_the_tunnel() {
    let bad = (502, r#"{"error":"bad_host_response"}"#.to_string());
    let many: Vec<(String, String)> = (0..129).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let long_value = vec![("x-big".into(), "v".repeat(16 * 1024 + 1))];
    let long_name = vec![("x".repeat(257), "v".into())];
    for (headers, body) in [
        (many, "ok".to_string()),
        (long_value, "ok".into()),
        (long_name, "ok".into()),
        (vec![], "b".repeat(1_001)),
    ] {
        let mut h = Harness::new(config());
        let a = key(1);
        let t = h.connect(&[&a]);
        let (c, out) = h.get(&a, "/");
        let id = request_id(&out);
        let out = reply_with(&mut h, t, &id, headers, &body);
        assert_eq!(response(&out, c), Some(bad.clone()));
        assert_eq!(frames(&out, t), vec![ServerFrame::Cancel { id }]);
        // The tunnel serves on.
        let (c, out) = h.get(&a, "/");
        let id = request_id(&out);
        let out = h.reply(t, &id, 200, "fine");
        assert_eq!(response(&out, c), Some((200, "fine".into())));
    }
    // At the limits exactly, answers pass.
    let mut h = Harness::new(config());
    let a = key(1);
    let t = h.connect(&[&a]);
    let (c, out) = h.get(&a, "/");
    let id = request_id(&out);
    let mut at_limit: Vec<(String, String)> =
        (0..127).map(|i| (format!("x-h{i}"), "v".into())).collect();
    at_limit.push(("x".repeat(256), "v".repeat(16 * 1024)));
    let out = reply_with(&mut h, t, &id, at_limit, &"b".repeat(1_000));
    assert_eq!(response(&out, c).unwrap().0, 200);
    // An id over 64 characters names no call (ours have 20): the frame is
    // counted as invalid and fails nothing, as a call in flight shows.
    let (c, out) = h.get(&a, "/");
    let id = request_id(&out);
    let invalid = h.relay.stats().counters.invalid_frames;
    let long = format!("{id}{}", "0".repeat(65 - id.len()));
    assert!(h.reply(t, &long, 200, "x").is_empty());
    assert_eq!(h.relay.stats().counters.invalid_frames, invalid + 1);
    let out = h.reply(t, &id, 200, "fine");
    assert_eq!(response(&out, c), Some((200, "fine".into())));
}

#[test]
fn caller_relay_headers_never_reach_the_tunnel_and_auth_ok_names_the_region() {
    let mut h = Harness::new(config());
    let a = key(1);
    let (t, nonce) = h.open_from("192.0.2.1");
    let auth = h.auth_frame(&[&a], &nonce);
    let out = h.text(t, &auth);
    let sent = frames(&out, t);
    let [ServerFrame::AuthOk { region, .. }] = sent.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(region.as_deref(), Some("fra"));
    let mut head = Harness::head("GET", "/", &host_of(&a));
    head.headers = vec![
        ("X-Relay-Via".into(), "forged".into()),
        ("x-relay-hop".into(), "forged".into()),
        ("x-other".into(), "kept".into()),
    ];
    let (_, out) = h.request(head, b"");
    let sent = frames(&out, t);
    let [ServerFrame::Request { headers, .. }] = sent.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(headers.get("x-relay-via"), None);
    assert_eq!(headers.get("x-relay-hop"), None);
    assert_eq!(headers.get("x-other"), Some("kept"));
}
