//! Held calls on the virtual clock: a call for an agent that was online
//! moments ago waits for it (up to RECONNECT_GRACE) and reaches it when it
//! is back, here (oldest first, after `auth_ok`) or on another instance; a
//! call already sent to a tunnel that dies is never re-sent. Bounds, callers
//! that leave, and the drain that hands agents over without a call in flight.

use osaurus_relay_engine::frame::ServerFrame;
use osaurus_relay_engine::{
    ClaimOutcome, ClusterConfig, Config, Input, Output, RemoteRoute, TunnelId,
};
use osaurus_relay_tests::harness::*;
use std::time::Duration;

const GRACE: u64 = 5_000;

fn config() -> Config {
    Config {
        reconnect_grace: Duration::from_millis(GRACE),
        ..test_config()
    }
}

/// The request frames sent to `t`, as (request id, path).
fn requests(out: &[Output], t: TunnelId) -> Vec<(String, String)> {
    (frames(out, t).into_iter())
        .filter_map(|f| match f {
            ServerFrame::Request { id, path, .. } => Some((id, path)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_call_for_an_agent_that_just_left_reaches_it_when_it_is_back() {
    let mut h = Harness::new(config());
    let a = key(1);
    let t1 = h.connect(&[&a]);
    let (sent, _) = h.get(&a, "/sent");
    // The tunnel dies: the call it had is never re-sent (it may have had effects).
    let out = h.step(Input::TunnelClosed { tunnel: t1 });
    assert_eq!(
        response(&out, sent),
        Some((502, r#"{"error":"tunnel_closed"}"#.into()))
    );
    // Calls now wait for the agent.
    let (first, out) = h.get(&a, "/first");
    assert!(out.is_empty(), "{out:?}");
    h.advance(700);
    let (second, out) = h.get(&a, "/second");
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(h.relay.stats().active_calls, 2);
    h.advance(300);
    // It reconnects: auth_ok first, then the held calls, oldest first.
    let (t2, nonce) = h.open_from("192.0.2.1");
    let auth = h.auth_frame(&[&a], &nonce);
    let out = h.text(t2, &auth);
    let sent = frames(&out, t2);
    assert!(
        matches!(sent.first(), Some(ServerFrame::AuthOk { .. })),
        "{sent:?}"
    );
    let got = requests(&out, t2);
    let paths: Vec<&str> = got.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(paths, ["/first", "/second"]);
    for ((id, _), call) in got.iter().zip([first, second]) {
        let out = h.reply(t2, id, 200, "ok");
        assert_eq!(response(&out, call), Some((200, "ok".into())));
    }
    assert_eq!(h.relay.sizes().held, 0, "nothing held, nobody gone");
}

#[test]
fn held_calls_end_at_the_grace_and_agents_never_seen_fail_at_once() {
    let mut h = Harness::new(config());
    let a = key(1);
    let (c, out) = h.get(&key(2), "/");
    assert_eq!(response(&out, c).map(|r| r.0), Some(502), "never seen");
    let t = h.connect(&[&a]);
    h.step(Input::TunnelClosed { tunnel: t });
    h.advance(1_000);
    let (held, _) = h.get(&a, "/");
    assert!(h.advance(GRACE - 1).is_empty());
    let out = h.advance(1);
    assert_eq!(
        response(&out, held),
        Some((502, r#"{"error":"agent_offline"}"#.into()))
    );
    // Gone longer than the grace: at once.
    let (late, out) = h.get(&a, "/");
    assert_eq!(response(&out, late).map(|r| r.0), Some(502));
    h.advance(10_000);
    assert_eq!(h.relay.sizes().held, 0, "the departure is forgotten");
}

#[test]
fn held_calls_are_bounded_and_a_caller_that_leaves_is_forgotten() {
    let mut h = Harness::new(Config {
        max_held_per_agent: 2,
        max_held_bytes: 10,
        ..config()
    });
    let (a, b) = (key(1), key(2));
    let t = h.connect(&[&a, &b]);
    h.step(Input::TunnelClosed { tunnel: t });
    let (c1, _) = h.get(&a, "/1");
    let (gone, _) = h.get(&a, "/gone");
    let (full, out) = h.get(&a, "/3");
    assert_eq!(
        response(&out, full),
        Some((503, r#"{"error":"agent_reconnecting"}"#.into()))
    );
    // Bytes: a body that would pass the bound is refused too.
    let (big, out) = h.request(Harness::head("POST", "/big", &host_of(&b)), b"0123456789x");
    assert_eq!(response(&out, big).map(|r| r.0), Some(503));
    let out = h.step(Input::CallGone { call: gone });
    assert!(out.is_empty(), "{out:?}");
    let (t3, nonce) = h.open_from("192.0.2.1");
    let out = h.text(t3, &h.auth_frame(&[&a], &nonce));
    let got = requests(&out, t3);
    assert_eq!(got.len(), 1, "only the caller still waiting: {got:?}");
    let out = h.reply(t3, &got[0].0, 200, "ok");
    assert_eq!(response(&out, c1), Some((200, "ok".into())));
}

fn cluster() -> Config {
    Config {
        cluster: Some(ClusterConfig::new("inst-a", RemoteRoute::Forward)),
        ..config()
    }
}

fn connect_claimed(h: &mut Harness, k: &osaurus_relay_engine::auth::SecretKey) -> TunnelId {
    let (t, nonce) = h.open_from("192.0.2.1");
    let auth = h.auth_frame(&[k], &nonce);
    h.text(t, &auth);
    let agent = lower(k);
    let out = h.step(Input::Claimed {
        tunnel: t,
        agent: &agent,
        outcome: ClaimOutcome::Ours,
    });
    assert!(matches!(
        frames(&out, t).first(),
        Some(ServerFrame::AuthOk { .. })
    ));
    t
}

#[test]
fn a_drain_hands_each_agent_over_with_no_call_in_flight_and_its_calls_follow() {
    let mut h = Harness::new(cluster());
    let (a, b) = (key(1), key(2));
    let ta = connect_claimed(&mut h, &a);
    let tb = connect_claimed(&mut h, &b);
    let (inflight, out) = h.get(&a, "/inflight");
    let id = request_id(&out);
    let out = h.step(Input::Shutdown);
    // The idle tunnel goes at once; the busy one once its call is done.
    assert_eq!(closes(&out), vec![(tb, 1012, "relay restarting")]);
    let (later, out) = h.get(&a, "/later");
    assert!(
        requests(&out, ta).is_empty(),
        "no new call on a draining tunnel"
    );
    let out = h.reply(ta, &id, 200, "done");
    assert_eq!(response(&out, inflight), Some((200, "done".into())));
    assert_eq!(closes(&out), vec![(ta, 1012, "relay restarting")]);
    assert!(frames(&out, ta).contains(&ServerFrame::Error {
        error: "relay_restarting".into()
    }));
    assert!(!out.contains(&Output::ShutdownComplete), "a call is held");
    // The agent's new claim shows up elsewhere: the held call follows it.
    let agent = lower(&a);
    let out = h.step(Input::AgentClaimed {
        agent: &agent,
        instance: "inst-b",
    });
    assert!(
        matches!(out.as_slice(), [Output::Forward { call, instance, .. }] if *call == later && instance == "inst-b"),
        "{out:?}"
    );
    h.step(Input::OwnerHead {
        call: later,
        status: 200,
        headers: vec![("content-length".into(), "2".into())],
        streamed: false,
    });
    h.step(Input::OwnerBody {
        call: later,
        chunk: b"ok",
    });
    let out = h.step(Input::OwnerEnd { call: later });
    assert_eq!(response(&out, later), Some((200, "ok".into())));
    assert_eq!(out.last(), Some(&Output::ShutdownComplete));
}

#[test]
fn a_drain_that_ends_with_calls_still_held_answers_them_503() {
    let mut h = Harness::new(cluster());
    let a = key(1);
    let t = connect_claimed(&mut h, &a);
    // A call that never ends keeps the tunnel (and the drain) going.
    let (stuck, _) = h.get(&a, "/stuck");
    h.step(Input::Shutdown);
    let (held, out) = h.get(&a, "/");
    assert!(response(&out, held).is_none() && requests(&out, t).is_empty());
    // The grace (5 s) outlasts the drain (2 s here).
    let out = h.advance(2_000);
    assert_eq!(
        response(&out, held),
        Some((503, r#"{"error":"relay_restarting"}"#.into()))
    );
    assert_eq!(response(&out, stuck).map(|r| r.0), Some(502));
    assert_eq!(out.last(), Some(&Output::ShutdownComplete));
}

#[test]
fn a_long_stream_on_a_draining_tunnel_keeps_its_agents_calls_waiting_past_the_grace() {
    let mut h = Harness::new(Config {
        drain_timeout: Duration::from_millis(20_000),
        stream_idle_timeout: Duration::from_millis(60_000),
        ping_interval: Duration::from_secs(3_600),
        ..cluster()
    });
    let a = key(1);
    let t = connect_claimed(&mut h, &a);
    let (stream, id) = h.open_stream(t, &a, "/sse");
    h.step(Input::Shutdown);
    // Past the grace, a new call still waits: the agent has not moved yet.
    h.advance(GRACE + 1_000);
    let (held, out) = h.get(&a, "/");
    assert!(
        response(&out, held).is_none() && requests(&out, t).is_empty(),
        "{out:?}"
    );
    let out = h.advance(GRACE + 1_000);
    assert!(
        response(&out, held).is_none(),
        "held past the grace: {out:?}"
    );
    // The stream ends, the tunnel goes, the agent shows up elsewhere.
    let out = h.send(
        t,
        &osaurus_relay_engine::frame::ClientFrame::StreamEnd { id },
    );
    assert!(out.contains(&Output::EndStream { call: stream }));
    assert_eq!(closes(&out), vec![(t, 1012, "relay restarting")]);
    let agent = lower(&a);
    let out = h.step(Input::AgentClaimed {
        agent: &agent,
        instance: "inst-b",
    });
    assert!(
        matches!(out.as_slice(), [Output::Forward { call, .. }] if *call == held),
        "{out:?}"
    );
}

#[test]
fn held_calls_are_counted_against_the_rate_limits_when_they_are_delivered() {
    // Two calls a minute for each agent, and two for the caller.
    let mut h = Harness::new(Config {
        agent_requests_per_min: 2,
        caller_requests_per_min: 2,
        ..config()
    });
    let (a, b) = (key(1), key(2));
    let t1 = h.connect(&[&a, &b]);
    h.step(Input::TunnelClosed { tunnel: t1 });
    // Held while the agents are away: nothing is counted yet.
    let held_a: Vec<_> = (0..3).map(|i| h.get(&a, &format!("/a{i}")).0).collect();
    let held_b = h.get(&b, "/b0").0;
    let (t2, nonce) = h.open_from("192.0.2.1");
    let auth = h.auth_frame(&[&a, &b], &nonce);
    let out = h.text(t2, &auth);
    // Oldest first, as far as the limits go: a's third is over its agent's
    // two, and b's one is over the caller's two.
    let paths: Vec<String> = requests(&out, t2).into_iter().map(|(_, p)| p).collect();
    assert_eq!(paths, ["/a0", "/a1"]);
    let limited = Some((429, r#"{"error":"rate_limited"}"#.into()));
    assert_eq!(response(&out, held_a[2]), limited);
    assert_eq!(response(&out, held_b), limited);
    assert_eq!(h.relay.sizes().held, 0);
    // Counted once: the delivered calls are not counted again.
    let (c, out) = h.get(&a, "/after");
    assert_eq!(response(&out, c), limited, "the agent's two are spent");
}

#[test]
fn a_call_counted_when_its_head_came_is_not_counted_again_when_delivered() {
    let mut h = Harness::new(Config {
        agent_requests_per_min: 1,
        ..config()
    });
    let a = key(1);
    let t1 = h.connect(&[&a]);
    // Counted as its head comes (the tunnel is here); its body is still coming.
    let call = h.new_call();
    let mut head = Harness::head("POST", "/upload", &host_of(&a));
    (head.content_length, head.body_follows) = (Some(2), true);
    let out = h.step(Input::CallHead {
        call,
        head: head.view(),
    });
    assert!(out.is_empty(), "{out:?}");
    // The tunnel goes before the body ends: the call is held, not refused.
    h.step(Input::TunnelClosed { tunnel: t1 });
    h.step(Input::CallBody { call, chunk: b"hi" });
    let out = h.step(Input::CallBodyEnd { call });
    assert!(response(&out, call).is_none(), "{out:?}");
    let (t2, nonce) = h.open_from("192.0.2.1");
    let auth = h.auth_frame(&[&a], &nonce);
    let out = h.text(t2, &auth);
    let paths: Vec<String> = requests(&out, t2).into_iter().map(|(_, p)| p).collect();
    assert_eq!(paths, ["/upload"], "its one call a minute, once: {out:?}");
}
