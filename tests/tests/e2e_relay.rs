//! The relay over real sockets: a WebSocket tunnel peer and raw HTTP/1.1 callers.

use osaurus_relay_engine::frame::{ClientFrame, ServerFrame};
use osaurus_relay_tests::e2e::*;
use osaurus_relay_tests::harness::{host_of, hv, key, lower};
use std::time::Duration;

#[test]
fn buffered_call_round_trip_and_keep_alive_reuse() {
    let relay = start(|_| {});
    smol::block_on(async {
        let a = key(1);
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        let mut c = Caller::connect(relay.addr).await;
        let raw = format!(
            "POST /v1/chat?x=1 HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nCookie: s=1\r\nAuthorization: Bearer k\r\nContent-Length: 7\r\n\r\n{{\"a\":1}}",
            host_of(&a)
        );
        c.send(raw.as_bytes()).await;
        let (id, method, path, headers, body) = t.request().await;
        assert_eq!(
            (method.as_str(), path.as_str(), body.as_text()),
            ("POST", "/v1/chat?x=1", Some("{\"a\":1}"))
        );
        assert_eq!(headers.get("authorization"), Some("Bearer k"));
        assert_eq!(headers.get("cookie"), None);
        assert_eq!(headers.get("x-agent-address"), Some(lower(&a).as_str()));
        assert_eq!(headers.get("x-forwarded-for"), Some("127.0.0.1"));
        t.reply(&id, 200, "application/json", "{\"reply\":\"hi\"}")
            .await;
        let r = c.response(false).await;
        assert_eq!((r.status, r.text().as_str()), (200, "{\"reply\":\"hi\"}"));
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        // The same connection serves the next call.
        c.send(&get(&host_of(&a), "/again")).await;
        let (id, _, path, _, _) = t.request().await;
        assert_eq!(path, "/again");
        t.reply(&id, 201, "text/plain", "again").await;
        let r = c.response(false).await;
        assert_eq!((r.status, r.text().as_str()), (201, "again"));
    });
}

#[test]
fn contract_error_rows() {
    let relay = start(|a| {
        a.agent_requests_per_min = 2;
        a.max_tunnels_per_ip = 1;
        a.response_timeout = Duration::from_millis(800);
    });
    smol::block_on(async {
        let (a, off) = (key(1), key(2));
        let r = call(relay.addr, &get("0x12.relay.test", "/")).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (400, r#"{"error":"invalid_subdomain"}"#)
        );
        let r = call(relay.addr, &get(&host_of(&off), "/")).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (502, r#"{"error":"agent_offline"}"#)
        );
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        // A second tunnel from the same IP is over the cap of 1.
        let raw = b"GET /tunnel/connect HTTP/1.1\r\nHost: relay.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        let r = call(relay.addr, raw).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (429, r#"{"error":"too_many_connections"}"#)
        );
        let r = call(
            relay.addr,
            &post(&host_of(&a), "/", &vec![b'a'; 10 * 1024 * 1024 + 1]),
        )
        .await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (413, r#"{"error":"body_too_large"}"#)
        );
        let r = call(relay.addr, &get(&host_of(&a), "/slow")).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (504, r#"{"error":"gateway_timeout"}"#)
        );
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        let (id, ..) = t.request().await;
        assert_eq!(t.recv().await, ServerFrame::Cancel { id });
        let r = call(relay.addr, &get(&host_of(&a), "/")).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (429, r#"{"error":"rate_limited"}"#),
            "3rd call this minute, limit 2"
        );
        let r = call(relay.addr, b"OPTIONS / HTTP/1.1\r\nHost: 0x0000000000000000000000000000000000000001.relay.test\r\n\r\n").await;
        assert_eq!(r.status, 204);
        assert_eq!(r.header("access-control-max-age"), Some("86400"));
    });
}

#[test]
fn streaming_chunks_reach_the_caller_one_by_one() {
    let relay = start(|_| {});
    smol::block_on(async {
        let a = key(1);
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        let mut c = Caller::connect(relay.addr).await;
        c.send(&get(&host_of(&a), "/v1/chat")).await;
        let (id, ..) = t.request().await;
        let start = ClientFrame::StreamStart {
            id: id.clone(),
            status: 200,
            headers: hv(&[("content-type", "text/event-stream")]),
        };
        t.send(&start).await;
        let (status, headers) = c.head().await;
        assert_eq!(status, 200);
        assert!(headers.contains(&("transfer-encoding".into(), "chunked".into())));
        for i in 0..3 {
            let data = format!("data: {{\"token\":{i}}}\n\n");
            t.send(&ClientFrame::StreamChunk {
                id: id.clone(),
                data: data.clone().into(),
            })
            .await;
            // The caller has this chunk before the tunnel sends the next one.
            assert_eq!(c.chunk().await, Ok(Some(data.into_bytes())));
        }
        t.send(&ClientFrame::StreamEnd { id }).await;
        assert_eq!(c.chunk().await, Ok(None));
    });
}

#[test]
fn many_concurrent_calls_answered_out_of_order() {
    let relay = start(|_| {});
    smol::block_on(async {
        let a = key(1);
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        let mut callers = Vec::new();
        for i in 0..40 {
            let mut c = Caller::connect(relay.addr).await;
            c.send(&get(&host_of(&a), &format!("/n/{i}"))).await;
            callers.push(c);
        }
        let mut reqs = Vec::new();
        for _ in 0..40 {
            let (id, _, path, _, _) = t.request().await;
            reqs.push((id, path));
        }
        reqs.reverse();
        for (id, path) in &reqs {
            t.reply(id, 200, "text/plain", &format!("answer for {path}"))
                .await;
        }
        for (i, c) in callers.iter_mut().enumerate() {
            let r = c.response(false).await;
            assert_eq!(r.text(), format!("answer for /n/{i}"));
        }
    });
}

#[test]
fn ten_mib_boundary_with_length_and_chunked() {
    let relay = start(|_| {});
    smol::block_on(async {
        let a = key(1);
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        let max = 10 * 1024 * 1024;
        let r = {
            let mut c = Caller::connect(relay.addr).await;
            c.send(&post(&host_of(&a), "/", &vec![b'x'; max])).await;
            let (id, _, _, _, body) = t.request().await;
            assert_eq!(body.as_text().map(str::len), Some(max));
            t.reply(&id, 200, "text/plain", "ok").await;
            c.response(false).await
        };
        assert_eq!(r.status, 200);
        for (total, want) in [(max, 200u16), (max + 1, 413)] {
            let mut c = Caller::connect(relay.addr).await;
            let head = format!(
                "POST / HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
                host_of(&a)
            );
            c.send(head.as_bytes()).await;
            let piece = vec![b'y'; 1024 * 1024];
            let mut sent = 0;
            while sent < total {
                let n = piece.len().min(total - sent);
                let mut chunk = format!("{n:x}\r\n").into_bytes();
                chunk.extend_from_slice(&piece[..n]);
                chunk.extend_from_slice(b"\r\n");
                if smol::io::AsyncWriteExt::write_all(&mut c.s, &chunk)
                    .await
                    .is_err()
                {
                    break; // the relay may stop reading once it answered 413
                }
                sent += n;
            }
            let _ = smol::io::AsyncWriteExt::write_all(&mut c.s, b"0\r\n\r\n").await;
            if want == 200 {
                let (id, _, _, _, body) = t.request().await;
                assert_eq!(body.as_text().map(str::len), Some(max));
                t.reply(&id, 200, "text/plain", "ok").await;
            }
            let r = c.response(false).await;
            assert_eq!(r.status, want, "{total} bytes chunked");
        }
    });
}

#[test]
fn tunnel_loss_mid_call_and_mid_stream() {
    let relay = start(|_| {});
    smol::block_on(async {
        let a = key(1);
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        let mut waiting = Caller::connect(relay.addr).await;
        waiting.send(&get(&host_of(&a), "/wait")).await;
        let mut streaming = Caller::connect(relay.addr).await;
        streaming.send(&get(&host_of(&a), "/stream")).await;
        let mut ids = std::collections::HashMap::new();
        for _ in 0..2 {
            let (id, _, path, _, _) = t.request().await;
            ids.insert(path, id);
        }
        let sid = ids["/stream"].clone();
        t.send(&ClientFrame::StreamStart {
            id: sid.clone(),
            status: 200,
            headers: hv(&[]),
        })
        .await;
        t.send(&ClientFrame::StreamChunk {
            id: sid,
            data: "partial".into(),
        })
        .await;
        assert_eq!(streaming.head().await.0, 200);
        assert_eq!(streaming.chunk().await, Ok(Some(b"partial".to_vec())));
        drop(t);
        let r = waiting.response(false).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (502, r#"{"error":"tunnel_closed"}"#)
        );
        assert_eq!(
            streaming.chunk().await,
            Err(()),
            "the stream is cut, not ended"
        );
        let r = call(relay.addr, &get(&host_of(&a), "/")).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (502, r#"{"error":"agent_offline"}"#)
        );
    });
}

#[test]
fn slowloris_caller_does_not_delay_others() {
    let relay = start(|a| a.header_timeout = Duration::from_millis(800));
    smol::block_on(async {
        let a = key(1);
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        let mut slow = Caller::connect(relay.addr).await;
        slow.send(b"GET / HTTP/1.1\r\nHost: ").await;
        let mut fast = Caller::connect(relay.addr).await;
        fast.send(&get(&host_of(&a), "/fast")).await;
        let (id, ..) = t.request().await;
        t.reply(&id, 200, "text/plain", "fast").await;
        assert_eq!(fast.response(false).await.text(), "fast");
        // The slow head times out with 408 and a closed connection.
        let r = slow.response(false).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (408, r#"{"error":"request_timeout"}"#)
        );
        assert!(slow.is_closed().await);
    });
}

#[test]
fn graceful_shutdown_drains_then_closes_tunnels_with_1012() {
    let relay = start(|_| {});
    let addr = relay.addr;
    smol::block_on(async {
        let a = key(1);
        let mut t = Tunnel::connect(addr, &[&a]).await;
        let mut c = Caller::connect(addr).await;
        c.send(&get(&host_of(&a), "/inflight")).await;
        let (id, ..) = t.request().await;
        relay.shutdown();
        // Shutdown has begun once /health says so (new connections may already be refused).
        t.reply(&id, 200, "text/plain", "drained").await;
        let r = c.response(false).await;
        assert_eq!((r.status, r.text().as_str()), (200, "drained"));
        assert_eq!(
            t.recv().await,
            ServerFrame::Error {
                error: "relay_restarting".into()
            }
        );
        assert_eq!(t.closed().await, Some((1012, "relay restarting".into())));
    });
    relay.join().expect("relay exits cleanly");
}

#[test]
fn a_tunnel_that_never_reads_gets_tunnel_send_failed() {
    let relay = start(|a| {
        a.max_tunnel_buffer = 1024 * 1024;
        a.response_timeout = Duration::from_millis(800);
    });
    smol::block_on(async {
        let a = key(1);
        // Authenticated, then never reads again.
        let _t = Tunnel::connect(relay.addr, &[&a]).await;
        let body = vec![b'z'; 1024 * 1024];
        let mut statuses = Vec::new();
        for _ in 0..40 {
            let mut c = Caller::connect(relay.addr).await;
            c.send(&post(&host_of(&a), "/", &body)).await;
            // Requests the relay could queue wait for a 504; the one it refuses is answered at once.
            let r = c.response(false).await;
            statuses.push(r.status);
            if r.status == 502 {
                assert_eq!(r.text(), r#"{"error":"tunnel_send_failed"}"#);
                break;
            }
        }
        assert_eq!(statuses.last(), Some(&502), "{statuses:?}");
        assert!(
            statuses[..statuses.len() - 1].iter().all(|s| *s == 504),
            "{statuses:?}"
        );
    });
}

#[test]
fn an_oversized_tunnel_message_is_closed_with_1009() {
    let relay = start(|a| a.max_frame_bytes = 64 * 1024);
    smol::block_on(async {
        let a = key(1);
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        let mut other = Tunnel::connect(relay.addr, &[&key(2)]).await;
        t.send_text(&"x".repeat(64 * 1024 + 1)).await;
        assert_eq!(t.closed().await, Some((1009, "message too big".into())));
        let r = call(relay.addr, &get(&host_of(&a), "/")).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (502, r#"{"error":"agent_offline"}"#)
        );
        // The other tunnel is undisturbed.
        let mut c = Caller::connect(relay.addr).await;
        c.send(&get(&host_of(&key(2)), "/still")).await;
        let (id, _, path, _, _) = other.request().await;
        assert_eq!(path, "/still");
        other.reply(&id, 200, "text/plain", "fine").await;
        assert_eq!(c.response(false).await.text(), "fine");
    });
}
