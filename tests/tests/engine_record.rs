//! One record per agent-host call: at its end a `CallDone` (the
//! `relay.request` log line) right after its last output, and the metrics
//! (calls by outcome and status class, bytes, duration histograms), all on
//! the engine's clock. Never a query string.

use osaurus_relay_engine::frame::ClientFrame;
use osaurus_relay_engine::record::CallDone;
use osaurus_relay_engine::{CallId, Config, Event, Input, Output};
use osaurus_relay_tests::harness::*;

fn config() -> Config {
    Config {
        log_calls: true,
        max_stream_buffer: 10,
        ..test_config()
    }
}

/// The `CallDone` in `out`, checked to follow the call's last output.
fn done(out: &[Output], call: CallId) -> CallDone {
    let i = (out.iter())
        .position(|o| matches!(o, Output::Event(Event::CallDone(_))))
        .unwrap_or_else(|| panic!("no CallDone in {out:?}"));
    // A caller gone has no last output: its record comes first.
    let last = match i.checked_sub(1).map(|j| &out[j]) {
        Some(
            Output::Respond { call, .. }
            | Output::EndStream { call }
            | Output::AbortStream { call },
        ) => Some(*call),
        _ => None,
    };
    assert!(last == Some(call) || i == 0, "{out:?}");
    match &out[i] {
        Output::Event(Event::CallDone(d)) => (**d).clone(),
        _ => unreachable!(),
    }
}

#[test]
fn a_call_ends_with_one_record_of_its_times_and_bytes() {
    let mut h = Harness::new(config());
    let a = key(1);
    let t = h.connect(&[&a]);
    let call = h.new_call();
    let mut head = Harness::head("POST", "/v1/chat?token=secret", &host_of(&a));
    (head.content_length, head.body_follows) = (Some(4), true);
    h.step(Input::CallHead {
        call,
        head: head.view(),
    });
    h.advance(3);
    h.step(Input::CallBody {
        call,
        chunk: b"ping",
    });
    let out = h.step(Input::CallBodyEnd { call });
    let id = request_id(&out);
    h.advance(7);
    let out = h.reply(t, &id, 201, "pong!");
    let d = done(&out, call);
    assert_eq!(
        d,
        CallDone {
            agent: lower(&a),
            method: "POST".into(),
            path: "/v1/chat".into(),
            client_ip: ip("198.51.100.9"),
            status: Some(201),
            outcome: "ok",
            forwarded: false,
            ttfb_ms: Some(10),
            host_ms: Some(7),
            lookup_ms: None,
            total_ms: 10,
            bytes_in: 4,
            bytes_out: 5,
        }
    );
    // A stream: the head is the first byte, the end is the total.
    let (c, id) = h.open_stream(t, &a, "/sse");
    h.advance(5);
    for _ in 0..2 {
        let chunk = ClientFrame::StreamChunk {
            id: id.clone(),
            data: "abc".into(),
        };
        assert!(!h.send(t, &chunk).is_empty());
    }
    let out = h.send(t, &ClientFrame::StreamEnd { id });
    let d = done(&out, c);
    let got = (d.status, d.outcome, d.ttfb_ms, d.total_ms, d.bytes_out);
    assert_eq!(got, (Some(200), "ok", Some(0), 5, 6));
    let counters = h.relay.stats().counters;
    assert_eq!(counters.calls.0, vec![("ok", 2, 2)]);
    assert_eq!((counters.request_bytes, counters.response_bytes), (4, 11));
    assert_eq!(counters.call_seconds.count(), 2);
    assert_eq!(counters.call_seconds.sum_ms, 15);
    // 7 ms and 0 ms: one in the 5 ms bucket, one in the 10 ms one.
    let buckets = counters.host_seconds.buckets();
    assert_eq!(buckets[..3], [(0.005, 1), (0.01, 1), (0.025, 0)]);
    assert_eq!(buckets.last(), Some(&(f64::INFINITY, 0)));
    assert_eq!(h.relay.sizes().timed_calls, 0);
}

#[test]
fn relay_errors_cut_streams_and_callers_gone_are_outcomes_of_their_own() {
    let mut h = Harness::new(config());
    let a = key(1);
    let t = h.connect(&[&a]);
    // Nobody serves key 2.
    let (c, out) = h.get(&key(2), "/");
    let d = done(&out, c);
    assert_eq!(
        (d.status, d.outcome, d.host_ms),
        (Some(502), "agent_offline", None)
    );
    // A stream the caller reads too slowly is cut: its cause is the outcome.
    let (c, id) = h.open_stream(t, &a, "/sse");
    let chunk = ClientFrame::StreamChunk {
        id,
        data: "x".repeat(11).into(),
    };
    let d = done(&h.send(t, &chunk), c);
    assert_eq!((d.status, d.outcome), (Some(200), "slow_consumer"));
    // A caller that leaves before any answer.
    let (c, _) = h.get(&a, "/slow");
    let d = done(&h.step(Input::CallGone { call: c }), c);
    assert_eq!((d.status, d.outcome), (None, "caller_gone"));
    let counters = h.relay.stats().counters;
    assert_eq!(counters.errors.get("agent_offline"), 1);
    assert_eq!(counters.errors.get("slow_consumer"), 1);
    assert_eq!(counters.calls.total(), 3);
    // The relay's own endpoints count errors, but are no agent calls.
    let (_, out) = h.request(Harness::head("GET", "/nope", DOMAIN), b"");
    assert!(
        !out.iter().any(|o| matches!(o, Output::Event(_))),
        "{out:?}"
    );
    assert_eq!(h.relay.stats().counters.errors.get("invalid_subdomain"), 1);
    assert_eq!(h.relay.stats().counters.calls.total(), 3);
}

#[test]
fn without_call_logs_the_metrics_still_count() {
    let mut h = Harness::new(test_config());
    let a = key(1);
    let t = h.connect(&[&a]);
    let (c, out) = h.get(&a, "/?q=1");
    let out2 = h.reply(t, &request_id(&out), 200, "ok");
    assert!(response(&out2, c).is_some());
    assert!(
        !out2.iter().any(|o| matches!(o, Output::Event(_))),
        "{out2:?}"
    );
    let counters = h.relay.stats().counters;
    assert_eq!(counters.calls.0, vec![("ok", 2, 1)]);
    assert_eq!(counters.host_seconds.count(), 1);
}
