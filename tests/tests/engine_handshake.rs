//! Handshake, agents, duplicate policy and keepalive, on a virtual clock.

use osaurus_relay_engine::frame::{AgentUrl, ClientFrame, Rejected, ServerFrame};
use osaurus_relay_engine::{DuplicatePolicy, Event, Input, Output};
use osaurus_relay_tests::harness::*;

/// Advertised in `auth_ok` and `agent_added`: the relay decodes base64 bodies and chunks.
fn features() -> Vec<String> {
    vec!["body_encoding".into(), "stream_body_encoding".into()]
}

#[test]
fn auth_ok_reports_lowercase_addresses_and_urls() {
    let mut h = Harness::default();
    let (a, b) = (key(1), key(2));
    let (t, nonce) = h.open_from("192.0.2.1");
    assert_eq!(nonce.len(), 64);
    assert!(nonce.bytes().all(|c| c.is_ascii_hexdigit()));
    let out = h.text(t, &h.auth_frame(&[&a, &b], &nonce));
    let want = ServerFrame::AuthOk {
        agents: vec![
            AgentUrl {
                address: lower(&a),
                url: format!("https://{}", host_of(&a)),
            },
            AgentUrl {
                address: lower(&b),
                url: format!("https://{}", host_of(&b)),
            },
        ],
        rejected: vec![],
        features: features(),
        region: Some("local".into()),
    };
    assert_eq!(frames(&out, t), vec![want]);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Event(Event::TunnelUp { agents: 2, .. }))));
    assert_eq!(h.relay.agent_tunnel(&a.address()), Some(t));
    assert_eq!(h.relay.stats().active_tunnels, 1);
}

#[test]
fn every_auth_error_has_its_code_and_close() {
    let a = key(1);
    type Case = (
        &'static str,
        fn(&Harness, &str) -> String,
        &'static str,
        u16,
    );
    let cases: Vec<Case> = vec![
        ("not json", |_, _| "{nope".into(), "invalid_json", 4000),
        (
            "other frame",
            |_, _| ClientFrame::RequestChallenge.encode(),
            "expected_auth_frame",
            4000,
        ),
        (
            "wrong nonce",
            |h, _| h.auth_frame(&[&key(1)], &"ab".repeat(32)),
            "invalid_nonce",
            4000,
        ),
        (
            "empty nonce",
            |h, _| h.auth_frame(&[&key(1)], ""),
            "invalid_nonce",
            4000,
        ),
        ("no agents", |h, n| h.auth_frame(&[], n), "no_agents", 4000),
        (
            "51 agents",
            |h, n| {
                let keys: Vec<_> = (1..=51).map(key).collect();
                h.auth_frame(&keys.iter().collect::<Vec<_>>(), n)
            },
            "too_many_agents",
            4000,
        ),
        (
            "one bad signature",
            |h, n| {
                // key(2)'s entry carries a signature made by key(3).
                let good = h.auth_frame(&[&key(1), &key(2)], n);
                let forged = h.auth_frame(&[&key(1), &key(3)], n);
                let sig = |f: &str| f.rsplit("\"signature\":\"").next().unwrap()[..132].to_string();
                good.replace(&sig(&good), &sig(&forged))
            },
            "signature_verification_failed",
            4001,
        ),
        (
            "stale timestamp",
            |h, n| {
                h.auth_frame(&[&key(1)], n).replace(
                    &format!("{}", h.now.unix_secs),
                    &format!("{}", h.now.unix_secs - 31),
                )
            },
            "signature_verification_failed",
            4001,
        ),
    ];
    for (name, frame, error, code) in cases {
        let mut h = Harness::default();
        let (t, nonce) = h.open_from("192.0.2.1");
        let out = h.text(t, &frame(&h, &nonce));
        assert_eq!(
            frames(&out, t),
            vec![ServerFrame::AuthError {
                error: error.into()
            }],
            "{name}"
        );
        assert_eq!(closes(&out), vec![(t, code, error)], "{name}");
        assert_eq!(h.relay.sizes().tunnels, 0, "{name}");
        assert_eq!(h.relay.sizes().ip_entries, 0, "{name}");
        assert_eq!(h.relay.agent_tunnel(&a.address()), None, "{name}");
    }
}

#[test]
fn binary_before_auth_and_auth_timeout_close() {
    let mut h = Harness::default();
    let (t, _) = h.open_from("192.0.2.1");
    let out = h.step(Input::TunnelBinary { tunnel: t });
    assert_eq!(closes(&out), vec![(t, 4000, "invalid_json")]);
    let (t, _) = h.open_from("192.0.2.1");
    assert!(h.advance(999).is_empty());
    let out = h.advance(1);
    assert_eq!(
        frames(&out, t),
        vec![ServerFrame::AuthError {
            error: "auth_timeout".into()
        }]
    );
    assert_eq!(closes(&out), vec![(t, 4001, "auth_timeout")]);
}

#[test]
fn nonce_is_single_use_across_connections() {
    let mut h = Harness::default();
    let (_t1, n1) = h.open_from("192.0.2.1");
    let (t2, _n2) = h.open_from("192.0.2.1");
    let out = h.text(t2, &h.auth_frame(&[&key(1)], &n1));
    assert_eq!(closes(&out), vec![(t2, 4000, "invalid_nonce")]);
}

#[test]
fn add_and_remove_agents_mid_session() {
    let mut h = Harness::default();
    let (a, b) = (key(1), key(2));
    let t = h.connect(&[&a]);
    let out = h.add_agent(t, &b);
    assert_eq!(
        frames(&out, t),
        vec![ServerFrame::AgentAdded {
            address: lower(&b),
            url: format!("https://{}", host_of(&b)),
            features: features(),
            region: Some("local".into()),
        }]
    );
    assert_eq!(h.relay.agent_tunnel(&b.address()), Some(t));
    let out = h.send(
        t,
        &ClientFrame::RemoveAgent {
            address: checksum(&b),
        },
    );
    assert_eq!(
        frames(&out, t),
        vec![ServerFrame::AgentRemoved {
            address: lower(&b),
            reason: None
        }]
    );
    assert_eq!(h.relay.agent_tunnel(&b.address()), None);
    // Removing an agent the tunnel does not hold is ignored.
    assert!(frames(
        &h.send(t, &ClientFrame::RemoveAgent { address: lower(&b) }),
        t
    )
    .is_empty());
    assert!(frames(
        &h.send(
            t,
            &ClientFrame::RemoveAgent {
                address: "junk".into()
            }
        ),
        t
    )
    .is_empty());
}

fn add_with(
    h: &mut Harness,
    t: osaurus_relay_engine::TunnelId,
    k: &osaurus_relay_engine::auth::SecretKey,
    nonce: &str,
) -> Vec<ServerFrame> {
    let ts = h.now.unix_secs;
    let address = checksum(k);
    let msg = osaurus_relay_engine::auth::tunnel_message(&address, nonce, ts);
    let signature = k.sign_message(msg.as_bytes());
    let out = h.send(
        t,
        &ClientFrame::AddAgent {
            address,
            signature,
            nonce: nonce.into(),
            timestamp: ts,
        },
    );
    frames(&out, t)
}

fn challenge(h: &mut Harness, t: osaurus_relay_engine::TunnelId) -> String {
    match frames(&h.send(t, &ClientFrame::RequestChallenge), t).as_slice() {
        [ServerFrame::Challenge { nonce }] => nonce.clone(),
        other => panic!("{other:?}"),
    }
}

fn err(e: &str) -> Vec<ServerFrame> {
    vec![ServerFrame::Error { error: e.into() }]
}

#[test]
fn add_agent_errors() {
    let mut h = Harness::default();
    let t = h.connect(&[&key(1)]);
    // A nonce is single-use, and the initial challenge's is already spent.
    let n = challenge(&mut h, t);
    assert!(matches!(
        add_with(&mut h, t, &key(2), &n)[..],
        [ServerFrame::AgentAdded { .. }]
    ));
    assert_eq!(add_with(&mut h, t, &key(3), &n), err("invalid_nonce"));
    // Expired after the TTL (3 s in tests).
    let n = challenge(&mut h, t);
    h.advance(3_001);
    assert_eq!(add_with(&mut h, t, &key(3), &n), err("invalid_nonce"));
    // A signature by another key.
    let n = challenge(&mut h, t);
    let address = checksum(&key(3));
    let msg = osaurus_relay_engine::auth::tunnel_message(&address, &n, h.now.unix_secs);
    let signature = key(4).sign_message(msg.as_bytes());
    let out = h.send(
        t,
        &ClientFrame::AddAgent {
            address,
            signature,
            nonce: n,
            timestamp: h.now.unix_secs,
        },
    );
    assert_eq!(frames(&out, t), err("invalid_signature"));
}

#[test]
fn control_frames_are_rate_limited_per_connection() {
    let mut h = Harness::default();
    let t = h.connect(&[&key(1)]);
    for _ in 0..10 {
        assert!(matches!(
            frames(&h.send(t, &ClientFrame::RequestChallenge), t)[..],
            [ServerFrame::Challenge { .. }]
        ));
    }
    assert_eq!(
        frames(&h.send(t, &ClientFrame::RequestChallenge), t),
        err("rate_limited")
    );
    assert!(closes(&h.drain()).is_empty(), "the connection stays open");
    h.advance(6_000);
    assert!(matches!(
        frames(&h.send(t, &ClientFrame::RequestChallenge), t)[..],
        [ServerFrame::Challenge { .. }]
    ));
}

#[test]
fn max_agents_per_tunnel() {
    let mut cfg = test_config();
    cfg.max_agents_per_tunnel = 2;
    let mut h = Harness::new(cfg);
    let t = h.connect(&[&key(1), &key(2)]);
    let n = challenge(&mut h, t);
    assert_eq!(add_with(&mut h, t, &key(3), &n), err("max_agents_reached"));
    // Re-adding one it holds is not growth.
    let n = challenge(&mut h, t);
    assert!(matches!(
        add_with(&mut h, t, &key(2), &n)[..],
        [ServerFrame::AgentAdded { .. }]
    ));
}

#[test]
fn takeover_moves_the_agent_and_closes_the_empty_old_tunnel() {
    let mut h = Harness::default();
    let (a, b) = (key(1), key(2));
    let old = h.connect(&[&a, &b]);
    let (mid, nonce) = h.open_from("192.0.2.1");
    let out = h.text(mid, &h.auth_frame(&[&a], &nonce));
    assert_eq!(
        frames(&out, old),
        vec![ServerFrame::AgentRemoved {
            address: lower(&a),
            reason: Some("superseded".into())
        }]
    );
    assert!(closes(&out).is_empty(), "old tunnel still holds b");
    assert_eq!(h.relay.agent_tunnel(&a.address()), Some(mid));
    let (new, nonce) = h.open_from("192.0.2.1");
    let out = h.text(new, &h.auth_frame(&[&b], &nonce));
    assert_eq!(closes(&out), vec![(old, 1000, "superseded")]);
    assert_eq!(h.relay.agent_tunnel(&b.address()), Some(new));
    // add_agent takes over too.
    let out = h.add_agent(new, &a);
    assert!(matches!(
        frames(&out, new)[..],
        [ServerFrame::AgentAdded { .. }]
    ));
    assert_eq!(closes(&out), vec![(mid, 1000, "superseded")]);
}

#[test]
fn reject_policy_keeps_the_first_tunnel() {
    let mut cfg = test_config();
    cfg.duplicate_policy = DuplicatePolicy::Reject;
    let mut h = Harness::new(cfg);
    let (a, b) = (key(1), key(2));
    let first = h.connect(&[&a]);
    let (t, nonce) = h.open_from("192.0.2.1");
    let out = h.text(t, &h.auth_frame(&[&a, &b], &nonce));
    let want = ServerFrame::AuthOk {
        agents: vec![AgentUrl {
            address: lower(&b),
            url: format!("https://{}", host_of(&b)),
        }],
        rejected: vec![Rejected {
            address: lower(&a),
            reason: "already_registered".into(),
        }],
        features: features(),
        region: Some("local".into()),
    };
    assert_eq!(frames(&out, t), vec![want]);
    assert!(frames(&out, first).is_empty());
    assert_eq!(h.relay.agent_tunnel(&a.address()), Some(first));
    let n = challenge(&mut h, t);
    assert_eq!(
        add_with(&mut h, t, &a, &n),
        err("address_already_registered")
    );
}

#[test]
fn keepalive_pings_and_closes_after_three_missed() {
    let mut h = Harness::default();
    let t = h.connect(&[&key(1)]);
    let out = h.advance(3_000);
    assert_eq!(
        frames(&out, t),
        vec![ServerFrame::Ping {
            ts: h.now.unix_secs
        }]
    );
    h.send(
        t,
        &ClientFrame::Pong {
            ts: h.now.unix_secs,
        },
    );
    let out = h.advance(9_000);
    assert_eq!(frames(&out, t).len(), 3, "three unanswered pings");
    assert!(closes(&out).is_empty());
    let out = h.advance(3_000);
    assert_eq!(closes(&out), vec![(t, 1000, "keepalive timeout")]);
    assert_eq!(h.relay.agent_tunnel(&key(1).address()), None);
    assert_eq!(h.relay.sizes().tunnels, 0);
}

#[test]
fn unknown_and_junk_frames_after_auth_are_ignored_and_counted() {
    let mut h = Harness::default();
    let t = h.connect(&[&key(1)]);
    for junk in [
        "nonsense",
        "{}",
        r#"{"type":"hello"}"#,
        "[1]",
        r#"{"type":"response","id":"req_nope","status":200,"headers":{}}"#,
    ] {
        let out = h.text(t, junk);
        assert!(out.is_empty(), "{junk}: {out:?}");
    }
    assert!(h.step(Input::TunnelBinary { tunnel: t }).is_empty());
    assert_eq!(h.relay.stats().counters.invalid_frames, 6);
    assert_eq!(h.relay.agent_tunnel(&key(1).address()), Some(t));
}

#[test]
fn public_url_shapes_the_urls_in_auth_ok_and_agent_added() {
    let mut h = Harness::new(osaurus_relay_engine::Config {
        public_url: Some("http://{address}.localhost:8080".into()),
        ..test_config()
    });
    let (a, b) = (key(1), key(2));
    let (t, nonce) = h.open_from("192.0.2.1");
    let out = h.text(t, &h.auth_frame(&[&a], &nonce));
    let sent = frames(&out, t);
    let [ServerFrame::AuthOk { agents, .. }] = sent.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(
        agents[0].url,
        format!("http://{}.localhost:8080", lower(&a))
    );
    let out = h.add_agent(t, &b);
    let sent = frames(&out, t);
    let [ServerFrame::AgentAdded { url, .. }] = sent.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(*url, format!("http://{}.localhost:8080", lower(&b)));
}
