//! A call forwarded to the instance that owns its agent is engine state:
//! the owner's answer comes in as inputs and the engine applies the same
//! deadlines, slow-caller cap, header rules and error answers as for a tunnel.

use osaurus_relay_engine::http::ResponseHead;
use osaurus_relay_engine::{
    CallId, ClusterConfig, Config, Input, Located, Output, OwnerFault, RemoteRoute,
};
use osaurus_relay_tests::harness::*;
use std::time::Duration;

const MARGIN_MS: u64 = 500;

fn config() -> Config {
    Config {
        cluster: Some(ClusterConfig {
            lookup_ttl: Duration::from_millis(500),
            ..ClusterConfig::new("inst-a", RemoteRoute::Forward)
        }),
        forward_margin: Duration::from_millis(MARGIN_MS),
        max_stream_buffer: 100,
        max_response_body_bytes: 1_000,
        ..test_config()
    }
}

/// A call for key 1, forwarded to `inst-b`.
fn forwarded(h: &mut Harness, method: &str) -> CallId {
    let a = key(1);
    let (c, mut out) = h.request(Harness::head(method, "/x", &host_of(&a)), b"");
    if matches!(out.as_slice(), [Output::Lookup { .. }]) {
        // Not cached yet: the directory names the owner.
        let agent = lower(&a);
        out = h.step(Input::Located {
            agent: &agent,
            found: Located::Owner("inst-b".into()),
        });
    }
    assert!(
        matches!(out.as_slice(), [Output::Forward { call, .. }] if *call == c),
        "{out:?}"
    );
    c
}

fn head(
    h: &mut Harness,
    call: CallId,
    status: u16,
    headers: &[(&str, &str)],
    streamed: bool,
) -> Vec<Output> {
    let headers = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    h.step(Input::OwnerHead {
        call,
        status,
        headers,
        streamed,
    })
}

fn body(h: &mut Harness, call: CallId, chunk: &[u8]) -> Vec<Output> {
    h.step(Input::OwnerBody { call, chunk })
}

fn cancelled(out: &[Output], call: CallId) -> bool {
    out.iter()
        .any(|o| matches!(o, Output::CancelForward { call: c } if *c == call))
}

#[test]
fn a_buffered_answer_is_collected_filtered_and_sent_with_its_length() {
    let mut h = Harness::new(config());
    let c = forwarded(&mut h, "GET");
    let hdrs = [
        ("content-type", "text/plain"),
        ("transfer-encoding", "gzip"),
    ];
    assert!(
        head(&mut h, c, 200, &hdrs, false).is_empty(),
        "nothing until the body is in"
    );
    assert!(body(&mut h, c, b"hel").is_empty());
    assert!(body(&mut h, c, b"lo").is_empty());
    let out = h.step(Input::OwnerEnd { call: c });
    assert_eq!(response(&out, c), Some((200, "hello".into())));
    assert_eq!(header(&out, c, "content-type"), Some("text/plain"));
    assert_eq!(
        header(&out, c, "transfer-encoding"),
        None,
        "the relay frames"
    );
    assert!(!cancelled(&out, c));
    assert_eq!(h.relay.sizes().calls, 0);
    assert_eq!(h.relay.sizes().timers, 1, "only the sweep");
}

#[test]
fn a_streamed_answer_flows_chunk_by_chunk() {
    let mut h = Harness::new(config());
    let c = forwarded(&mut h, "GET");
    let out = head(
        &mut h,
        c,
        200,
        &[("content-type", "text/event-stream")],
        true,
    );
    let [Output::StartStream {
        call,
        head: ResponseHead { status: 200, .. },
    }] = out.as_slice()
    else {
        panic!("{out:?}")
    };
    assert_eq!(*call, c);
    assert_eq!(
        body(&mut h, c, b"data: 1\n\n"),
        vec![Output::WriteChunk {
            call: c,
            data: b"data: 1\n\n".to_vec()
        }]
    );
    assert_eq!(
        h.step(Input::OwnerEnd { call: c }),
        vec![Output::EndStream { call: c }]
    );
    assert_eq!(h.relay.sizes().calls, 0);
}

#[test]
fn a_silent_owner_is_a_504_after_the_timeout_and_its_margin() {
    let mut h = Harness::new(config());
    let c = forwarded(&mut h, "GET");
    // The owner answers 504 itself at 3 s; only a dead owner reaches the margin.
    assert!(h.advance(3_000 + MARGIN_MS - 1).is_empty());
    let out = h.advance(1);
    assert!(cancelled(&out, c), "{out:?}");
    assert_eq!(
        response(&out, c),
        Some((504, r#"{"error":"gateway_timeout"}"#.into()))
    );
    assert_eq!(h.relay.stats().counters.gateway_timeouts, 1);
    // Late pieces of the owner's answer are ignored.
    assert!(head(&mut h, c, 200, &[], false).is_empty());
    assert_eq!(h.relay.sizes().calls, 0);
}

#[test]
fn an_idle_owner_stream_is_cut_and_a_busy_one_is_not() {
    let mut h = Harness::new(config());
    let c = forwarded(&mut h, "GET");
    head(&mut h, c, 200, &[], true);
    for _ in 0..4 {
        assert!(!cancelled(&h.advance(3_000), c));
        body(&mut h, c, b"x");
        h.step(Input::CallDrained { call: c, bytes: 1 });
    }
    let out = h.advance(3_000 + MARGIN_MS);
    assert!(cancelled(&out, c), "{out:?}");
    assert!(out.contains(&Output::AbortStream { call: c }));
}

#[test]
fn a_slow_caller_is_cut_off_and_the_owner_dropped() {
    let mut h = Harness::new(config());
    let c = forwarded(&mut h, "GET");
    head(&mut h, c, 200, &[], true);
    body(&mut h, c, &[b'a'; 60]);
    // What the caller took no longer counts.
    h.step(Input::CallDrained { call: c, bytes: 60 });
    assert_eq!(body(&mut h, c, &[b'b'; 90]).len(), 1, "one chunk written");
    let out = body(&mut h, c, &[b'c'; 20]);
    assert!(cancelled(&out, c), "{out:?}");
    assert!(out.contains(&Output::AbortStream { call: c }));
    assert_eq!(h.relay.stats().counters.slow_consumer_aborts, 1);
    assert_eq!(h.relay.sizes().calls, 0);
}

#[test]
fn an_owner_answer_that_breaks_the_rules_is_a_bad_host_response() {
    let bad = r#"{"error":"bad_host_response"}"#;
    for (status, headers, streamed) in [
        (200u16, vec![("x-bad", "a\r\nb")], false),
        (200, vec![("bad name", "v")], true),
        (700, vec![], false),
        (150, vec![], true),
    ] {
        let mut h = Harness::new(config());
        let c = forwarded(&mut h, "GET");
        let out = head(&mut h, c, status, &headers, streamed);
        assert!(cancelled(&out, c), "{status} {headers:?}: {out:?}");
        assert_eq!(response(&out, c), Some((502, bad.into())));
        assert_eq!(h.relay.stats().counters.bad_host_responses, 1);
    }
    // A buffered body over the cap.
    let mut h = Harness::new(config());
    let c = forwarded(&mut h, "GET");
    head(&mut h, c, 200, &[], false);
    assert!(body(&mut h, c, &[b'a'; 1_000]).is_empty());
    let out = body(&mut h, c, b"!");
    assert!(cancelled(&out, c));
    assert_eq!(response(&out, c), Some((502, bad.into())));
    // Broken framing reported by the driver: no cancel needed, it knows.
    let mut h = Harness::new(config());
    let c = forwarded(&mut h, "GET");
    head(&mut h, c, 200, &[], false);
    let fault = OwnerFault::BadAnswer("closed inside the body");
    let out = h.step(Input::OwnerFailed { call: c, fault });
    assert_eq!(response(&out, c), Some((502, bad.into())));
    assert!(!cancelled(&out, c));
}

#[test]
fn an_unreachable_owner_is_agent_unreachable_before_the_head_and_a_cut_after() {
    let mut h = Harness::new(config());
    let c = forwarded(&mut h, "GET");
    let fault = OwnerFault::Unreachable;
    let out = h.step(Input::OwnerFailed { call: c, fault });
    assert_eq!(
        response(&out, c),
        Some((502, r#"{"error":"agent_unreachable"}"#.into()))
    );
    let c = forwarded(&mut h, "GET");
    head(&mut h, c, 200, &[], true);
    let out = h.step(Input::OwnerFailed { call: c, fault });
    assert_eq!(out, vec![Output::AbortStream { call: c }]);
    assert_eq!(h.relay.sizes().calls, 0);
}

#[test]
fn a_caller_that_leaves_drops_the_owner_and_a_head_request_gets_no_body() {
    let mut h = Harness::new(config());
    let c = forwarded(&mut h, "GET");
    let out = h.step(Input::CallGone { call: c });
    assert_eq!(out, vec![Output::CancelForward { call: c }]);
    assert_eq!(h.relay.sizes().calls, 0);
    let c = forwarded(&mut h, "HEAD");
    // Even an owner that wrongly streams a body to HEAD yields none.
    head(&mut h, c, 200, &[("content-type", "text/plain")], true);
    body(&mut h, c, b"nope");
    let out = h.step(Input::OwnerEnd { call: c });
    assert_eq!(response(&out, c), Some((200, String::new())));
}

#[test]
fn a_drain_waits_for_forwarded_calls() {
    let mut h = Harness::new(config());
    let c = forwarded(&mut h, "GET");
    let out = h.step(Input::Shutdown);
    assert!(!out.contains(&Output::ShutdownComplete), "{out:?}");
    head(&mut h, c, 200, &[], false);
    let out = h.step(Input::OwnerEnd { call: c });
    assert_eq!(response(&out, c), Some((200, String::new())));
    assert!(out.contains(&Output::ShutdownComplete), "{out:?}");
}

fn upload_head(declared: Option<u64>) -> osaurus_relay_engine::OwnedHead {
    let mut head = Harness::head("POST", "/up", &host_of(&key(1)));
    head.content_length = declared;
    head.body_follows = true;
    head
}

fn uploads(out: &[Output]) -> Vec<&[u8]> {
    (out.iter())
        .filter_map(|o| match o {
            Output::ForwardBody { data, .. } => Some(&data[..]),
            _ => None,
        })
        .collect()
}

#[test]
fn a_body_for_another_machine_streams_there_as_it_arrives() {
    for declared in [Some(9), None] {
        let mut h = Harness::new(config());
        let c = h.new_call();
        // The owner is looked up at head time, not once the body is in.
        let out = h.step(Input::CallHead {
            call: c,
            head: upload_head(declared).view(),
        });
        assert!(matches!(out.as_slice(), [Output::Lookup { .. }]), "{out:?}");
        assert!(h
            .step(Input::CallBody {
                call: c,
                chunk: b"abc"
            })
            .is_empty());
        let out = h.located(&key(1), Located::Owner("inst-b".into()));
        let [Output::Forward { request, .. }] = out.as_slice() else {
            panic!("{out:?}");
        };
        // What came before the owner was known goes with the head.
        assert_eq!(
            (
                &request.body[..],
                request.body_length,
                request.body_complete
            ),
            (&b"abc"[..], declared, false)
        );
        let out = h.step(Input::CallBody {
            call: c,
            chunk: b"def",
        });
        assert_eq!(uploads(&out), [b"def"]);
        // While the body arrives the owner's clock has not started.
        assert!(h.advance(3_000 + MARGIN_MS).is_empty());
        h.step(Input::CallBody {
            call: c,
            chunk: b"ghi",
        });
        let out = h.step(Input::CallBodyEnd { call: c });
        assert!(
            matches!(out.as_slice(), [Output::ForwardBodyEnd { call }] if *call == c),
            "{out:?}"
        );
        // From the body's end, the usual wait for the owner's answer.
        assert!(h.advance(3_000 + MARGIN_MS - 1).is_empty());
        head(&mut h, c, 201, &[("content-length", "2")], false);
        body(&mut h, c, b"ok");
        let out = h.step(Input::OwnerEnd { call: c });
        assert_eq!(response(&out, c), Some((201, "ok".into())), "{declared:?}");
    }
}

#[test]
fn a_streamed_body_over_the_limit_is_a_413_and_the_owner_dropped() {
    let mut h = Harness::new(Config {
        max_body_bytes: 8,
        ..config()
    });
    let c = h.new_call();
    h.step(Input::CallHead {
        call: c,
        head: upload_head(None).view(),
    });
    h.located(&key(1), Located::Owner("inst-b".into()));
    assert_eq!(
        uploads(&h.step(Input::CallBody {
            call: c,
            chunk: b"12345"
        }))
        .len(),
        1
    );
    let out = h.step(Input::CallBody {
        call: c,
        chunk: b"6789",
    });
    assert!(cancelled(&out, c) && uploads(&out).is_empty(), "{out:?}");
    assert_eq!(
        response(&out, c),
        Some((413, r#"{"error":"body_too_large"}"#.into()))
    );
    // The rest of the caller's body goes nowhere.
    assert!(h.step(Input::CallBodyEnd { call: c }).is_empty());
    assert_eq!(h.relay.sizes().calls, 0);
}

#[test]
fn an_owner_that_answers_before_the_body_ends_is_relayed_and_the_rest_dropped() {
    let mut h = Harness::new(config());
    let c = h.new_call();
    h.step(Input::CallHead {
        call: c,
        head: upload_head(Some(100)).view(),
    });
    h.located(&key(1), Located::Owner("inst-b".into()));
    h.step(Input::CallBody {
        call: c,
        chunk: b"abc",
    });
    // The owner refuses early (its own limit, say) and ends its answer.
    head(&mut h, c, 429, &[("content-length", "0")], false);
    let out = h.step(Input::OwnerEnd { call: c });
    assert_eq!(response(&out, c).map(|r| r.0), Some(429));
    assert!(h
        .step(Input::CallBody {
            call: c,
            chunk: b"def"
        })
        .is_empty());
    assert!(h.step(Input::CallBodyEnd { call: c }).is_empty());
    // A caller gone mid-upload drops the owner.
    let c = h.new_call();
    h.step(Input::CallHead {
        call: c,
        head: upload_head(None).view(),
    });
    h.step(Input::CallBody {
        call: c,
        chunk: b"abc",
    });
    let out = h.step(Input::CallGone { call: c });
    assert!(cancelled(&out, c), "{out:?}");
    assert_eq!(h.relay.sizes().calls, 0);
}
