//! Hostile input over real sockets: each class gets its documented answer and
//! the relay keeps serving everybody else.

use osaurus_relay_engine::frame::{ClientFrame, Headers, ServerFrame};
use osaurus_relay_tests::e2e::*;
use osaurus_relay_tests::harness::{host_of, key};

/// A normal call through `t` still works.
async fn still_serving(
    addr: std::net::SocketAddr,
    t: &mut Tunnel,
    k: &osaurus_relay_engine::auth::SecretKey,
) {
    let mut c = Caller::connect(addr).await;
    c.send(&get(&host_of(k), "/ok")).await;
    let (id, _, path, _, _) = t.request().await;
    assert_eq!(path, "/ok");
    t.reply(&id, 200, "text/plain", "ok").await;
    assert_eq!(c.response(false).await.text(), "ok");
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_reference_relays_crashing_frames_are_answered_not_fatal() {
    let relay = start(|_| {});
    smol::block_on(async {
        let a = key(1);
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        let cases: &[(&str, u16, &str)] = &[
            (
                r#"{"type":"response","id":"ID","status":204,"headers":{},"body":"x"}"#,
                204,
                "",
            ),
            (
                r#"{"type":"response","id":"ID","status":204,"headers":{},"body":""}"#,
                204,
                "",
            ),
            (
                r#"{"type":"stream_start","id":"ID","status":204,"headers":{}}"#,
                204,
                "",
            ),
            (
                r#"{"type":"response","id":"ID","status":0,"headers":{}}"#,
                502,
                r#"{"error":"bad_host_response"}"#,
            ),
            (
                r#"{"type":"response","id":"ID","status":1000,"headers":{}}"#,
                502,
                r#"{"error":"bad_host_response"}"#,
            ),
            (
                r#"{"type":"response","id":"ID","status":200}"#,
                502,
                r#"{"error":"bad_host_response"}"#,
            ),
            (
                r#"{"type":"response","id":"ID","status":200,"headers":"x"}"#,
                502,
                r#"{"error":"bad_host_response"}"#,
            ),
            (
                r#"{"type":"response","id":"ID","status":200,"headers":{"a b":"c"}}"#,
                502,
                r#"{"error":"bad_host_response"}"#,
            ),
            (
                r#"{"type":"response","id":"ID","status":200,"headers":{"x":"a\r\nb"}}"#,
                502,
                r#"{"error":"bad_host_response"}"#,
            ),
        ];
        for (frame, status, body) in cases {
            let mut c = Caller::connect(relay.addr).await;
            c.send(&get(&host_of(&a), "/")).await;
            let (id, ..) = t.request().await;
            t.send_text(&frame.replace("ID", &id)).await;
            let r = c.response(false).await;
            assert_eq!((r.status, r.text().as_str()), (*status, *body), "{frame}");
            if *status == 502 {
                assert_eq!(t.recv().await, ServerFrame::Cancel { id }, "{frame}");
            }
        }
        // Junk of every kind is ignored.
        t.send_text("not json").await;
        t.send_text(r#"{"type":"response","id":"req_unknown","status":200,"headers":{}}"#)
            .await;
        within(
            "binary",
            t.ws.send(async_tungstenite::tungstenite::Message::binary(vec![
                1u8, 2, 3,
            ])),
        )
        .await
        .unwrap();
        still_serving(relay.addr, &mut t, &a).await;
    });
}

fn auth_with_agents(n: usize, nonce: &str) -> String {
    let agents: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"address":"0x{i:040x}","signature":"0x{}"}}"#,
                "ab".repeat(65)
            )
        })
        .collect();
    format!(
        r#"{{"type":"auth","agents":[{}],"nonce":"{nonce}","timestamp":{}}}"#,
        agents.join(","),
        unix_now()
    )
}

#[test]
fn auth_with_too_many_agents_is_refused() {
    let relay = start(|_| {});
    smol::block_on(async {
        let (mut t, nonce) = Tunnel::open(relay.addr).await;
        t.send_text(&auth_with_agents(60, &nonce)).await;
        assert_eq!(
            t.recv().await,
            ServerFrame::AuthError {
                error: "too_many_agents".into()
            }
        );
        assert_eq!(t.closed().await, Some((4000, "too_many_agents".into())));
    });
}

#[test]
fn auth_with_ten_thousand_agents_is_cut_before_it_is_buffered() {
    let relay = start(|_| {});
    smol::block_on(async {
        let (mut t, nonce) = Tunnel::open(relay.addr).await;
        // 2 MiB before authenticating: over the pre-auth budget, never parsed.
        let _ =
            t.ws.send(async_tungstenite::tungstenite::Message::text(
                auth_with_agents(10_000, &nonce),
            ))
            .await;
        assert_eq!(t.closed().await, Some((1009, "message too big".into())));
        let a = key(1);
        let mut ok = Tunnel::connect(relay.addr, &[&a]).await;
        still_serving(relay.addr, &mut ok, &a).await;
    });
}

#[test]
fn a_flood_of_request_challenge_is_rate_limited_and_bounded() {
    let relay = start(|a| a.control_frames_per_min = 10);
    smol::block_on(async {
        let a = key(1);
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        for _ in 0..2_000 {
            t.send(&ClientFrame::RequestChallenge).await;
        }
        let (mut challenges, mut limited) = (0, 0);
        while challenges + limited < 2_000 {
            match t.recv().await {
                ServerFrame::Challenge { .. } => challenges += 1,
                ServerFrame::Error { error } if error == "rate_limited" => limited += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((challenges, limited), (10, 1_990));
        still_serving(relay.addr, &mut t, &a).await;
    });
}

#[test]
fn a_declared_body_that_never_arrives_times_out() {
    let relay = start(|a| a.response_timeout = std::time::Duration::from_millis(800));
    smol::block_on(async {
        let a = key(1);
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        let mut c = Caller::connect(relay.addr).await;
        let head = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Length: 100\r\n\r\nonly ten b",
            host_of(&a)
        );
        c.send(head.as_bytes()).await;
        let r = c.response(false).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (408, r#"{"error":"request_timeout"}"#)
        );
        assert!(c.is_closed().await);
        still_serving(relay.addr, &mut t, &a).await;
    });
}

#[test]
fn thousands_of_idle_connections_do_not_block_service() {
    let relay = start(|_| {});
    smol::block_on(async {
        let a = key(1);
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        let before = rss_kib();
        let mut idle = Vec::new();
        for i in 0..3_000 {
            let mut c = Caller::connect(relay.addr).await;
            if i % 2 == 0 {
                c.send(b"GET / HT").await; // a head that never completes
            }
            idle.push(c);
        }
        still_serving(relay.addr, &mut t, &a).await;
        let grown = rss_kib().saturating_sub(before);
        // Test client and relay share this process: both sides' sockets count.
        assert!(
            grown < 200 * 1024,
            "3,000 idle connections grew RSS by {grown} KiB"
        );
        drop(idle);
    });
}

#[test]
fn a_caller_that_never_reads_its_stream_is_cut_and_the_tunnel_told() {
    let relay = start(|a| a.max_stream_buffer = 256 * 1024);
    smol::block_on(async {
        let a = key(1);
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        let mut c = Caller::connect(relay.addr).await;
        c.send(&get(&host_of(&a), "/firehose")).await;
        let (id, ..) = t.request().await;
        let start = ClientFrame::StreamStart {
            id: id.clone(),
            status: 200,
            headers: Headers::default(),
        };
        t.send(&start).await;
        let chunk = "x".repeat(64 * 1024);
        let before = rss_kib();
        // Far more than the socket buffers and the cap hold: 16 MiB.
        for _ in 0..256 {
            t.send(&ClientFrame::StreamChunk {
                id: id.clone(),
                data: chunk.clone().into(),
            })
            .await;
        }
        assert_eq!(t.recv().await, ServerFrame::Cancel { id });
        let grown = rss_kib().saturating_sub(before);
        assert!(
            grown < 64 * 1024,
            "RSS grew by {grown} KiB for one slow caller"
        );
        drop(c);
        still_serving(relay.addr, &mut t, &a).await;
    });
}

#[test]
fn a_trickled_body_hits_the_total_body_deadline() {
    let relay = start(|a| a.body_timeout = std::time::Duration::from_millis(600));
    smol::block_on(async {
        let a = key(1);
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        let mut c = Caller::connect(relay.addr).await;
        let head = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000\r\n\r\n",
            host_of(&a)
        );
        c.send(head.as_bytes()).await;
        // One byte every 100 ms: every read makes progress, the whole never arrives in time.
        let mut writer = c.s.clone();
        let trickle = async move {
            loop {
                smol::Timer::after(std::time::Duration::from_millis(100)).await;
                if smol::io::AsyncWriteExt::write_all(&mut writer, b"x")
                    .await
                    .is_err()
                {
                    break;
                }
            }
        };
        let r = smol::future::or(async { Some(c.response(false).await) }, async {
            trickle.await;
            None
        })
        .await
        .expect("an answer before the trickle ends");
        assert_eq!(
            (r.status, r.text().as_str()),
            (408, r#"{"error":"request_timeout"}"#)
        );
        still_serving(relay.addr, &mut t, &a).await;
    });
}
