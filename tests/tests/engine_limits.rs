//! Limits, per-IP caps, /health and /stats, and graceful shutdown in the engine.

use osaurus_relay_engine::frame::ServerFrame;
use osaurus_relay_engine::{Config, Input, Output};
use osaurus_relay_tests::harness::*;

#[test]
fn health_stats_and_tunnel_connect_answers() {
    let mut h = Harness::default();
    let (c, out) = h.request(Harness::head("GET", "/health", "anything"), b"");
    assert_eq!(
        response(&out, c),
        Some((
            200,
            r#"{"machine":"local","region":"local","status":"ok","tunnels":0}"#.into()
        ))
    );
    let (c, out) = h.request(Harness::head("GET", "/stats", "anything"), b"");
    let (status, body) = response(&out, c).unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, v["active_tunnels"].as_u64()), (200, Some(0)));
    for _ in 0..9 {
        h.request(Harness::head("GET", "/stats", "x"), b"");
    }
    let (c, out) = h.request(Harness::head("GET", "/stats", "x"), b"");
    assert_eq!(
        response(&out, c),
        Some((429, r#"{"error":"rate_limited"}"#.into()))
    );
    let (c, out) = h.request(Harness::head("GET", "/tunnel/connect", "x"), b"");
    assert_eq!(
        response(&out, c),
        Some((400, r#"{"error":"websocket_required"}"#.into()))
    );
    for _ in 0..5 {
        h.open_from("192.0.2.7");
    }
    let ws = Harness::connect_head("192.0.2.7");
    let (c, out) = h.request(ws.clone(), b"");
    assert_eq!(
        response(&out, c),
        Some((429, r#"{"error":"rate_limited"}"#.into()))
    );
    h.advance(12_000);
    h.open_from("192.0.2.7");
}

#[test]
fn open_websockets_per_ip_are_capped_from_the_upgrade_on() {
    let mut h = Harness::new(Config {
        tunnel_connects_per_min: 0,
        ..test_config()
    });
    let tunnels: Vec<_> = (0..10).map(|_| h.open_from("192.0.2.7").0).collect();
    let ws = Harness::connect_head("192.0.2.7");
    let (c, out) = h.request(ws.clone(), b"");
    assert_eq!(
        response(&out, c),
        Some((429, r#"{"error":"too_many_connections"}"#.into()))
    );
    h.open_from("192.0.2.8");
    h.step(Input::TunnelClosed { tunnel: tunnels[3] });
    h.open_from("192.0.2.7");
}

#[test]
fn graceful_shutdown_drains_then_closes_with_1012() {
    let mut h = Harness::default();
    let a = key(1);
    let t = h.connect(&[&a]);
    let (c, out) = h.get(&a, "/");
    let id = request_id(&out);
    let out = h.step(Input::Shutdown);
    assert!(closes(&out).is_empty(), "a call is in flight");
    let (hc, out) = h.request(Harness::head("GET", "/health", "x"), b"");
    assert_eq!(
        response(&out, hc),
        Some((
            503,
            r#"{"machine":"local","region":"local","status":"shutting_down","tunnels":1}"#.into()
        ))
    );
    let mut ws = Harness::head("GET", "/tunnel/connect", "x");
    ws.websocket = true;
    let (wc, out) = h.request(ws, b"");
    assert_eq!(
        response(&out, wc),
        Some((503, r#"{"error":"relay_restarting"}"#.into()))
    );
    // A new call for an agent whose tunnel is here is still served.
    let (late, out) = h.get(&a, "/late");
    let late_id = request_id(&out);
    let out = h.reply(t, &late_id, 200, "late");
    assert_eq!(response(&out, late), Some((200, "late".into())));
    assert!(closes(&out).is_empty(), "a call is still in flight");
    let out = h.reply(t, &id, 200, "done");
    assert_eq!(response(&out, c), Some((200, "done".into())));
    assert_eq!(
        frames(&out, t),
        vec![ServerFrame::Error {
            error: "relay_restarting".into()
        }]
    );
    assert_eq!(closes(&out), vec![(t, 1012, "relay restarting")]);
    assert_eq!(out.last(), Some(&Output::ShutdownComplete));
}

#[test]
fn shutdown_drain_window_expires() {
    let mut h = Harness::default();
    let a = key(1);
    let t = h.connect(&[&a]);
    let (c, _) = h.get(&a, "/");
    h.step(Input::Shutdown);
    let out = h.advance(2_000);
    assert_eq!(
        response(&out, c),
        Some((502, r#"{"error":"tunnel_closed"}"#.into()))
    );
    assert_eq!(closes(&out), vec![(t, 1012, "relay restarting")]);
    assert!(out.contains(&Output::ShutdownComplete));
}

#[test]
fn rate_limit_state_is_bounded_under_a_flood_of_ips() {
    let mut h = Harness::default();
    for i in 0..5_000u32 {
        let mut head = Harness::head("GET", "/stats", "x");
        head.peer = std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        h.request(head, b"");
    }
    assert_eq!(h.relay.sizes().limiter_keys, 5_000);
    h.advance(20_000);
    assert_eq!(h.relay.sizes().limiter_keys, 0);
}

#[test]
fn zero_limits_mean_unlimited() {
    let mut h = Harness::new(Config {
        max_body_bytes: 0,
        agent_requests_per_min: 0,
        ..test_config()
    });
    let a = key(1);
    let t = h.connect(&[&a]);
    for _ in 0..150 {
        let (c, out) = h.request(Harness::head("POST", "/", &host_of(&a)), b"x");
        assert!(
            response(&out, c).is_none(),
            "no 429 with no per-agent limit"
        );
        h.reply(t, &request_id(&out), 200, "ok");
    }
    let big = vec![b'a'; 11 * 1024 * 1024];
    let (c, out) = h.request(Harness::head("POST", "/", &host_of(&a)), &big);
    assert!(response(&out, c).is_none(), "no 413 with no body limit");
    assert_eq!(frames(&out, t).len(), 1);
}

#[test]
fn the_tunnel_cap_counts_an_ipv6_64_as_one_client() {
    let mut h = Harness::new(Config {
        tunnel_connects_per_min: 0,
        max_tunnels_per_ip: 2,
        ..test_config()
    });
    h.open_from("2001:db8:1:2::1");
    h.open_from("2001:db8:1:2::ffff");
    let ws = Harness::connect_head("2001:db8:1:2:abcd::7");
    let (c, out) = h.request(ws, b"");
    assert_eq!(
        response(&out, c),
        Some((429, r#"{"error":"too_many_connections"}"#.into()))
    );
    h.open_from("2001:db8:1:3::1");
}

#[test]
fn rate_limits_count_only_calls_served_here() {
    let mut h = Harness::new(Config {
        agent_requests_per_min: 30,
        caller_requests_per_min: 40,
        ..test_config()
    });
    let (a, b, off) = (key(1), key(3), key(2));
    h.connect(&[&a, &b]);
    // Calls for an offline agent use up nothing.
    for _ in 0..10 {
        let (c, out) = h.get(&off, "/");
        assert_eq!(response(&out, c).unwrap().0, 502);
    }
    for _ in 0..30 {
        let (c, out) = h.get(&a, "/");
        assert!(response(&out, c).is_none(), "sent to the tunnel");
    }
    let (c, out) = h.get(&a, "/");
    assert_eq!(
        response(&out, c),
        Some((429, r#"{"error":"rate_limited"}"#.into())),
        "the agent's 31st call this minute"
    );
    assert_eq!(header(&out, c, "access-control-allow-origin"), Some("*"));
    // The same caller has 10 more calls this minute, to any agent.
    for _ in 0..10 {
        let (c, out) = h.get(&b, "/");
        assert!(response(&out, c).is_none());
    }
    let (c, out) = h.get(&b, "/");
    assert_eq!(
        response(&out, c),
        Some((429, r#"{"error":"rate_limited"}"#.into())),
        "the caller's 41st"
    );
    // Preflight is answered before the limits.
    let (c, out) = h.request(Harness::head("OPTIONS", "/", &host_of(&a)), b"");
    assert_eq!(response(&out, c).unwrap().0, 204);
    h.advance(2_000);
    let (c, out) = h.get(&a, "/");
    assert!(response(&out, c).is_none(), "a token back after 2 s");
}
