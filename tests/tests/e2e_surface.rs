//! The newer reference relay's surface over real sockets: where a call was
//! served (region in auth_ok and /health, diagnostic headers), the
//! per-caller limit, and the caps on a tunnel's answers.

use osaurus_relay_engine::frame::{ClientFrame, Headers, ServerFrame};
use osaurus_relay_tests::e2e::*;
use osaurus_relay_tests::harness::{host_of, key, DOMAIN};

#[test]
fn region_and_machine_in_auth_ok_health_and_every_agent_answer() {
    let relay = start(|a| {
        a.region = "fra".into();
        a.fly_machine_id = Some("m1".into());
    });
    let a = key(1);
    smol::block_on(async {
        let (mut t, nonce) = Tunnel::open(relay.addr).await;
        t.send_text(&Tunnel::auth_text(&[&a], &nonce)).await;
        match t.recv().await {
            ServerFrame::AuthOk { region, .. } => assert_eq!(region.as_deref(), Some("fra")),
            other => panic!("{other:?}"),
        }
        let r = call(relay.addr, &get(DOMAIN, "/health")).await;
        let v: serde_json::Value = serde_json::from_str(&r.text()).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"status": "ok", "tunnels": 1, "region": "fra", "machine": "m1"})
        );
        let mut c = Caller::connect(relay.addr).await;
        c.send(&get(&host_of(&a), "/x")).await;
        let (id, ..) = t.request().await;
        t.reply(&id, 200, "text/plain", "ok").await;
        let r = c.response(false).await;
        assert_eq!(r.header("x-relay-region"), Some("fra"));
        assert_eq!(r.header("x-relay-machine"), Some("m1"));
        let timing = r.header("server-timing").expect("server-timing");
        assert!(
            timing.starts_with("host;dur=") && timing.contains(", relay;dur="),
            "{timing}"
        );
        // A relay error on an agent host says where it came from too.
        let r = call(relay.addr, &get(&host_of(&key(2)), "/")).await;
        assert_eq!((r.status, r.header("x-relay-machine")), (502, Some("m1")));
    });
}

#[test]
fn each_caller_has_its_own_limit_counted_only_where_the_tunnel_is() {
    let relay = start(|a| a.caller_requests_per_min = 2);
    let (a, off) = (key(1), key(2));
    smol::block_on(async {
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        for _ in 0..5 {
            let r = call(relay.addr, &get(&host_of(&off), "/")).await;
            assert_eq!(r.status, 502, "calls for an offline agent use up nothing");
        }
        for _ in 0..2 {
            let mut c = Caller::connect(relay.addr).await;
            c.send(&get(&host_of(&a), "/")).await;
            let (id, ..) = t.request().await;
            t.reply(&id, 200, "text/plain", "ok").await;
            assert_eq!(c.response(false).await.status, 200);
        }
        let r = call(relay.addr, &get(&host_of(&a), "/")).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (429, r#"{"error":"rate_limited"}"#)
        );
    });
}

#[test]
fn an_answer_over_the_caps_fails_that_call_and_the_tunnel_serves_on() {
    let relay = start(|_| {});
    let a = key(1);
    smol::block_on(async {
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        let mut c = Caller::connect(relay.addr).await;
        c.send(&get(&host_of(&a), "/many")).await;
        let (id, ..) = t.request().await;
        let many = (0..129).map(|i| (format!("x-h{i}"), "v".into())).collect();
        t.send(&ClientFrame::Response {
            id: id.clone(),
            status: 200,
            headers: Headers(many),
            body: "ok".into(),
        })
        .await;
        let r = c.response(false).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (502, r#"{"error":"bad_host_response"}"#)
        );
        assert_eq!(t.recv().await, ServerFrame::Cancel { id });
        let mut c = Caller::connect(relay.addr).await;
        c.send(&get(&host_of(&a), "/fine")).await;
        let (id, ..) = t.request().await;
        t.reply(&id, 200, "text/plain", "still here").await;
        assert_eq!(c.response(false).await.text(), "still here");
    });
}

/// A WebSocket upgrade of `/tunnel/connect` as Fly's edge passes it on.
fn upgrade(fly_client_ip: &str) -> Vec<u8> {
    format!(
        "GET /tunnel/connect HTTP/1.1\r\nHost: {DOMAIN}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nFly-Client-IP: {fly_client_ip}\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn on_fly_each_caller_is_its_fly_client_ip_without_any_setting() {
    let relay = start(|a| {
        a.fly_app_name = Some("osaurus-relay".into());
        a.tunnel_connects_per_min = 5;
    });
    smol::block_on(async {
        // Eight users behind Fly's proxy (one TCP peer): each has its own limit.
        let mut open = Vec::new();
        for i in 1..=8 {
            let mut c = Caller::connect(relay.addr).await;
            c.send(&upgrade(&format!("203.0.113.{i}"))).await;
            assert_eq!(c.head().await.0, 101, "user {i}");
            open.push(c);
        }
        // One of them, connecting again and again, meets the limit of 5.
        let mut statuses = Vec::new();
        for _ in 0..5 {
            let mut c = Caller::connect(relay.addr).await;
            c.send(&upgrade("203.0.113.1")).await;
            statuses.push(c.head().await.0);
            open.push(c);
        }
        assert_eq!(statuses, [101, 101, 101, 101, 429]);
    });
}
