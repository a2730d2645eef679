//! Several instances, engine side: claims, refreshes, releases, look-ups and
//! routing of calls for agents held elsewhere, with the directory's answers
//! fed by hand.

use osaurus_relay_engine::frame::{ClientFrame, ServerFrame};
use osaurus_relay_engine::{
    ClaimOutcome, ClusterConfig, Config, DuplicatePolicy, Hop, Input, Located, Output, RemoteRoute,
    TunnelId,
};
use osaurus_relay_tests::harness::*;
use std::time::Duration;

const ME: &str = "inst-a";

fn cluster(remote: RemoteRoute) -> Config {
    Config {
        cluster: Some(ClusterConfig {
            lookup_ttl: Duration::from_millis(500),
            ..ClusterConfig::new(ME, remote)
        }),
        ..test_config()
    }
}

fn claims(out: &[Output]) -> Vec<(TunnelId, String, bool)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Claim {
                tunnel,
                agent,
                takeover,
            } => Some((*tunnel, agent.clone(), *takeover)),
            _ => None,
        })
        .collect()
}

fn releases(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::Release { agent, .. } => Some(agent.clone()),
            _ => None,
        })
        .collect()
}

fn lookups(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::Lookup { agent } => Some(agent.clone()),
            _ => None,
        })
        .collect()
}

fn claimed(
    h: &mut Harness,
    t: TunnelId,
    k: &osaurus_relay_engine::auth::SecretKey,
    o: ClaimOutcome,
) -> Vec<Output> {
    let agent = lower(k);
    h.step(Input::Claimed {
        tunnel: t,
        agent: &agent,
        outcome: o,
    })
}

/// Opens a tunnel for `keys` and answers every claim with `outcome`.
fn connect(
    h: &mut Harness,
    keys: &[&osaurus_relay_engine::auth::SecretKey],
    o: ClaimOutcome,
) -> (TunnelId, Vec<Output>) {
    let (t, nonce) = h.open_from("192.0.2.1");
    let auth = h.auth_frame(keys, &nonce);
    let out = h.text(t, &auth);
    assert!(
        frames(&out, t).is_empty(),
        "auth_ok before the claims: {out:?}"
    );
    let takeover = h.relay.config().duplicate_policy == DuplicatePolicy::Takeover;
    let want: Vec<_> = keys.iter().map(|k| (t, lower(k), takeover)).collect();
    assert_eq!(claims(&out), want);
    let mut out = Vec::new();
    for k in keys {
        out.extend(claimed(h, t, k, o.clone()));
    }
    (t, out)
}

#[test]
fn handshake_waits_for_claims_then_serves_locally() {
    let mut h = Harness::new(cluster(RemoteRoute::FlyReplay));
    let (a, b) = (key(1), key(2));
    let (t, out) = connect(&mut h, &[&a, &b], ClaimOutcome::Ours);
    let fs = frames(&out, t);
    let [ServerFrame::AuthOk {
        agents, rejected, ..
    }] = fs.as_slice()
    else {
        panic!("expected auth_ok: {out:?}");
    };
    let got: Vec<&str> = agents.iter().map(|x| x.address.as_str()).collect();
    assert_eq!(got, [lower(&a), lower(&b)]);
    assert!(rejected.is_empty());
    let (_, out) = h.get(&a, "/");
    assert!(lookups(&out).is_empty());
    request_id(&out);
}

#[test]
fn unavailable_directory_accepts_and_held_agents_are_rejected() {
    let mut cfg = cluster(RemoteRoute::FlyReplay);
    cfg.duplicate_policy = DuplicatePolicy::Reject;
    let mut h = Harness::new(cfg);
    let (a, b) = (key(1), key(2));
    let (t, nonce) = h.open_from("192.0.2.1");
    let auth = h.auth_frame(&[&a, &b], &nonce);
    let out = h.text(t, &auth);
    assert!(claims(&out).iter().all(|(_, _, takeover)| !takeover));
    // Answers arrive out of order; the auth_ok keeps the tunnel's order.
    assert!(claimed(&mut h, t, &b, ClaimOutcome::HeldBy("inst-b".into())).is_empty());
    let out = claimed(&mut h, t, &a, ClaimOutcome::Unavailable);
    let fs = frames(&out, t);
    let [ServerFrame::AuthOk {
        agents, rejected, ..
    }] = fs.as_slice()
    else {
        panic!("expected auth_ok: {out:?}");
    };
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].address, lower(&a));
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        (rejected[0].address.as_str(), rejected[0].reason.as_str()),
        (lower(&b).as_str(), "already_registered")
    );
}

#[test]
fn add_agent_waits_for_its_claim() {
    let mut cfg = cluster(RemoteRoute::FlyReplay);
    cfg.duplicate_policy = DuplicatePolicy::Reject;
    let mut h = Harness::new(cfg);
    let (a, b, c) = (key(1), key(2), key(3));
    let (t, _) = connect(&mut h, &[&a], ClaimOutcome::Ours);
    let out = h.add_agent(t, &b);
    assert_eq!(claims(&out), [(t, lower(&b), false)]);
    assert!(frames(&out, t).is_empty());
    let out = claimed(&mut h, t, &b, ClaimOutcome::Ours);
    assert!(matches!(
        frames(&out, t).as_slice(),
        [ServerFrame::AgentAdded { address, .. }] if *address == lower(&b)
    ));
    h.add_agent(t, &c);
    let out = claimed(&mut h, t, &c, ClaimOutcome::HeldBy("inst-b".into()));
    assert!(matches!(
        frames(&out, t).as_slice(),
        [ServerFrame::Error { error }] if error == "address_already_registered"
    ));
    assert_eq!(h.relay.agent_tunnel(&c.address()), None);
}

#[test]
fn pongs_refresh_and_a_lost_claim_supersedes_without_release() {
    let mut h = Harness::new(cluster(RemoteRoute::FlyReplay));
    let (a, b) = (key(1), key(2));
    let (t, _) = connect(&mut h, &[&a, &b], ClaimOutcome::Ours);
    let out = h.send(t, &ClientFrame::Pong { ts: 1 });
    assert_eq!(
        out,
        [Output::Refresh {
            tunnel: t,
            agents: vec![lower(&a), lower(&b)]
        }]
    );
    let agent = lower(&a);
    let out = h.step(Input::ClaimLost {
        tunnel: t,
        agent: &agent,
    });
    assert!(matches!(
        frames(&out, t).as_slice(),
        [ServerFrame::AgentRemoved { address, reason: Some(r) }]
            if *address == lower(&a) && r == "superseded"
    ));
    assert!(
        releases(&out).is_empty(),
        "the key is another instance's now"
    );
    assert!(closes(&out).is_empty());
    let agent = lower(&b);
    let out = h.step(Input::ClaimLost {
        tunnel: t,
        agent: &agent,
    });
    assert_eq!(closes(&out), [(t, 1000, "superseded")]);
    assert!(releases(&out).is_empty());
}

#[test]
fn agents_leaving_are_released_but_local_takeover_keeps_the_key() {
    let mut h = Harness::new(cluster(RemoteRoute::FlyReplay));
    let (a, b) = (key(1), key(2));
    let (t1, _) = connect(&mut h, &[&a, &b], ClaimOutcome::Ours);
    let out = h.send(t1, &ClientFrame::RemoveAgent { address: lower(&b) });
    assert_eq!(releases(&out), [lower(&b)]);
    let (t2, out) = connect(&mut h, &[&a], ClaimOutcome::Ours);
    assert!(
        releases(&out).is_empty(),
        "moved between local tunnels: {out:?}"
    );
    assert_eq!(closes(&out), [(t1, 1000, "superseded")]);
    let out = h.step(Input::TunnelClosed { tunnel: t2 });
    assert_eq!(releases(&out), [lower(&a)]);
}

#[test]
fn a_claim_answered_after_its_tunnel_left_is_undone() {
    let mut h = Harness::new(cluster(RemoteRoute::FlyReplay));
    let a = key(1);
    let (t, nonce) = h.open_from("192.0.2.1");
    let auth = h.auth_frame(&[&a], &nonce);
    h.text(t, &auth);
    h.step(Input::TunnelClosed { tunnel: t });
    let out = claimed(&mut h, t, &a, ClaimOutcome::Ours);
    assert_eq!(releases(&out), [lower(&a)]);
}

#[test]
fn a_handshake_that_dies_after_some_claims_releases_them() {
    let mut h = Harness::new(cluster(RemoteRoute::FlyReplay));
    let (a, b) = (key(1), key(2));
    let (t, nonce) = h.open_from("192.0.2.1");
    let auth = h.auth_frame(&[&a, &b], &nonce);
    h.text(t, &auth);
    claimed(&mut h, t, &a, ClaimOutcome::Ours);
    // The second claim never comes back in time: the handshake times out.
    let out = h.advance(1_000);
    assert_eq!(closes(&out), [(t, 4001, "auth_timeout")]);
    assert_eq!(releases(&out), [lower(&a)]);
    let out = claimed(&mut h, t, &b, ClaimOutcome::Ours);
    assert_eq!(releases(&out), [lower(&b)]);
}

#[test]
fn shutdown_releases_every_claim() {
    let mut h = Harness::new(cluster(RemoteRoute::FlyReplay));
    let (a, b) = (key(1), key(2));
    connect(&mut h, &[&a], ClaimOutcome::Ours);
    connect(&mut h, &[&b], ClaimOutcome::Ours);
    let out = h.step(Input::Shutdown);
    let mut r = releases(&out);
    r.sort();
    let mut want = vec![lower(&a), lower(&b)];
    want.sort();
    assert_eq!(r, want);
}

#[test]
fn fly_mode_replays_on_the_owner_and_caches_the_answer() {
    let mut h = Harness::new(cluster(RemoteRoute::FlyReplay));
    let a = key(1);
    let (c1, out) = h.get(&a, "/");
    assert_eq!(lookups(&out), [lower(&a)]);
    assert_eq!(response(&out, c1), None);
    let (c2, out) = h.get(&a, "/x");
    assert!(lookups(&out).is_empty(), "one look-up per agent at a time");
    assert_eq!(response(&out, c2), None);
    let out = h.located(&a, Located::Owner("inst-b".into()));
    for c in [c1, c2] {
        assert_eq!(response(&out, c), Some((307, String::new())));
        assert_eq!(header(&out, c, "fly-replay"), Some("instance=inst-b"));
    }
    let (c3, out) = h.get(&a, "/");
    assert!(lookups(&out).is_empty());
    assert_eq!(header(&out, c3, "fly-replay"), Some("instance=inst-b"));
    h.advance(600);
    let (_, out) = h.get(&a, "/");
    assert_eq!(lookups(&out), [lower(&a)], "the cached answer expired");
    assert_eq!(h.relay.stats().counters.remote_calls, 3);
}

#[test]
fn nobody_stale_self_or_no_answer_is_agent_offline() {
    let mut h = Harness::new(cluster(RemoteRoute::FlyReplay));
    let offline = r#"{"error":"agent_offline"}"#.to_string();
    for (n, found, cached) in [
        (1, Located::Nobody, true),
        (2, Located::Owner(ME.into()), true),
        (3, Located::Unavailable, false),
    ] {
        let k = key(n);
        let (c, _) = h.get(&k, "/");
        let out = h.located(&k, found);
        assert_eq!(response(&out, c), Some((502, offline.clone())));
        let (c, out) = h.get(&k, "/");
        assert_eq!(lookups(&out).is_empty(), cached, "key {n}");
        if cached {
            assert_eq!(response(&out, c), Some((502, offline.clone())));
        }
    }
}

#[test]
fn a_look_up_that_never_answers_times_out() {
    let mut h = Harness::new(cluster(RemoteRoute::FlyReplay));
    let a = key(1);
    let (c, _) = h.get(&a, "/");
    let out = h.advance(3_000);
    assert_eq!(
        response(&out, c),
        Some((502, r#"{"error":"agent_offline"}"#.into()))
    );
    assert_eq!(h.relay.sizes().calls, 0);
    let (_, out) = h.get(&a, "/");
    assert_eq!(lookups(&out), [lower(&a)], "a new look-up is asked");
}

#[test]
fn forward_mode_hands_over_the_whole_request() {
    let mut h = Harness::new(cluster(RemoteRoute::Forward));
    let a = key(1);
    let mut head = Harness::head("POST", "/v1/chat?x=1", &host_of(&a));
    head.headers.push(("Cookie".into(), "s".into()));
    head.headers.push(("X-Custom".into(), "v".into()));
    let (c, out) = h.request(head, b"{\"m\":1}");
    assert_eq!(lookups(&out), [lower(&a)]);
    let out = h.located(&a, Located::Owner("inst-b".into()));
    let [Output::Forward {
        call,
        instance,
        request,
    }] = out.as_slice()
    else {
        panic!("expected one forward: {out:?}");
    };
    assert_eq!((*call, instance.as_str()), (c, "inst-b"));
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/v1/chat?x=1")
    );
    assert_eq!(request.host, host_of(&a));
    assert_eq!(request.body, b"{\"m\":1}");
    assert_eq!(request.headers.get("x-custom"), Some("v"));
    assert_eq!(request.headers.get("cookie"), None);
    assert_eq!(request.headers.get("x-forwarded-for"), Some("198.51.100.9"));
    assert_eq!(
        h.relay.sizes().calls,
        1,
        "the call stays until the owner answers"
    );
}

#[test]
fn forwarded_calls_keep_the_callers_ip_and_never_bounce() {
    let mut h = Harness::new(cluster(RemoteRoute::Forward));
    let (a, off) = (key(1), key(2));
    let (t, _) = connect(&mut h, &[&a], ClaimOutcome::Ours);
    let mut head = Harness::head("GET", "/", &host_of(&a));
    head.hop = Hop::Trusted;
    head.headers
        .push(("x-forwarded-for".into(), "203.0.113.7".into()));
    head.headers.push(("x-relay-hop".into(), "secret".into()));
    let (_, out) = h.request(head, b"");
    let fs = frames(&out, t);
    let [ServerFrame::Request { headers, .. }] = fs.as_slice() else {
        panic!("expected a request frame: {out:?}");
    };
    assert_eq!(headers.get("x-forwarded-for"), Some("203.0.113.7"));
    assert_eq!(
        headers.get("x-relay-hop"),
        None,
        "the secret never reaches a tunnel"
    );
    for hop in [Hop::Trusted, Hop::Untrusted] {
        let mut head = Harness::head("GET", "/", &host_of(&off));
        head.hop = hop;
        let (c, out) = h.request(head, b"");
        assert!(lookups(&out).is_empty());
        assert_eq!(
            response(&out, c),
            Some((502, r#"{"error":"agent_offline"}"#.into()))
        );
    }
    // An untrusted hop does not choose the IP the tunnel sees.
    let mut head = Harness::head("GET", "/", &host_of(&a));
    head.hop = Hop::Untrusted;
    head.headers
        .push(("x-forwarded-for".into(), "203.0.113.7".into()));
    let (_, out) = h.request(head, b"");
    let fs = frames(&out, t);
    let [ServerFrame::Request { headers, .. }] = fs.as_slice() else {
        panic!("expected a request frame: {out:?}");
    };
    assert_eq!(headers.get("x-forwarded-for"), Some("198.51.100.9"));
}

#[test]
fn stats_name_the_instance_and_redis_health() {
    let mut h = Harness::new(cluster(RemoteRoute::FlyReplay));
    let (c, out) = h.request(Harness::head("GET", "/stats", DOMAIN), b"");
    let v: serde_json::Value = serde_json::from_str(&response(&out, c).unwrap().1).unwrap();
    assert_eq!(
        (v["instance_id"].as_str(), v["redis"].as_str()),
        (Some(ME), Some("down"))
    );
    h.step(Input::DirectoryHealth { up: true });
    let (c, out) = h.request(Harness::head("GET", "/stats", DOMAIN), b"");
    let v: serde_json::Value = serde_json::from_str(&response(&out, c).unwrap().1).unwrap();
    assert_eq!(v["redis"].as_str(), Some("ok"));
    let mut one = Harness::default();
    let (c, out) = one.request(Harness::head("GET", "/stats", DOMAIN), b"");
    let v: serde_json::Value = serde_json::from_str(&response(&out, c).unwrap().1).unwrap();
    assert!(v.get("instance_id").is_none() && v.get("redis").is_none());
}

#[test]
fn the_directory_coming_back_refreshes_every_tunnel_at_once() {
    let mut h = Harness::new(cluster(RemoteRoute::FlyReplay));
    let (a, b) = (key(1), key(2));
    // Accepted while the directory was away: no key written for them.
    let (t1, _) = connect(&mut h, &[&a], ClaimOutcome::Unavailable);
    let (t2, _) = connect(&mut h, &[&b], ClaimOutcome::Unavailable);
    let mut out = h.step(Input::DirectoryHealth { up: true });
    out.sort_by_key(|o| match o {
        Output::Refresh { tunnel, .. } => tunnel.0,
        _ => u64::MAX,
    });
    assert_eq!(
        out,
        [
            Output::Refresh {
                tunnel: t1,
                agents: vec![lower(&a)]
            },
            Output::Refresh {
                tunnel: t2,
                agents: vec![lower(&b)]
            }
        ]
    );
    // Only the transition refreshes; staying up or going down does not.
    assert!(h.step(Input::DirectoryHealth { up: true }).is_empty());
    assert!(h.step(Input::DirectoryHealth { up: false }).is_empty());
}

#[test]
fn a_call_the_owner_refused_reaches_the_agent_here_with_one_set_of_relay_headers() {
    let mut h = Harness::new(Config {
        reconnect_grace: Duration::from_secs(5),
        ..cluster(RemoteRoute::Forward)
    });
    let a = key(1);
    let (c, _) = h.get(&a, "/v1/models");
    let out = h.located(&a, Located::Owner("inst-b".into()));
    let [Output::Forward { request, .. }] = out.as_slice() else {
        panic!("expected one forward: {out:?}");
    };
    let request = request.clone();
    // Nothing reached the owner: the call waits for its agent, which comes here.
    let out = h.step(Input::OwnerRefused { call: c, request });
    assert_eq!(response(&out, c), None, "held, not answered: {out:?}");
    let (t, out) = connect(&mut h, &[&a], ClaimOutcome::Ours);
    let sent: Vec<_> = frames(&out, t)
        .into_iter()
        .filter_map(|f| match f {
            ServerFrame::Request { path, headers, .. } => Some((path, headers)),
            _ => None,
        })
        .collect();
    let [(path, headers)] = sent.as_slice() else {
        panic!("expected the held request on the tunnel: {out:?}");
    };
    assert_eq!(path, "/v1/models");
    for (name, want) in [
        ("x-agent-address", lower(&a)),
        ("x-forwarded-for", "198.51.100.9".into()),
    ] {
        let got: Vec<&str> = (headers.0.iter())
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(got, [want.as_str()], "{name}");
    }
}
