//! Binary-safe bodies and agent-owned hosts, over loopback: byte-exact.

use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use osaurus_relay_engine::auth::SecretKey;
use osaurus_relay_engine::frame::{Body, ClientFrame, ServerFrame};
use osaurus_relay_tests::child::Child;
use osaurus_relay_tests::e2e::*;
use osaurus_relay_tests::harness::{host_of, key};
use osaurus_relay_tests::noise::{noise, Noise};
use osaurus_relay_tests::origin::Origin;
use smol::stream::StreamExt;

#[test]
fn binary_answers_and_uploads_arrive_byte_for_byte() {
    let relay = start(|_| {});
    let a = key(1);
    smol::block_on(async {
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        // A binary answer marked base64 reaches the caller decoded.
        let png = noise(300 * 1024, 7);
        let mut c = Caller::connect(relay.addr).await;
        c.send(&get(&host_of(&a), "/img.png")).await;
        let (id, _, _, _, body) = t.request().await;
        assert_eq!(body, Body::Text(String::new()), "no body is \"\"");
        t.reply_body(&id, 200, "image/png", Body::Binary(png.clone()))
            .await;
        let r = c.response(false).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("307200"));
        assert!(r.body == png, "decoded bytes, not base64 text");
        // A binary upload goes to the tunnel as base64 of the exact bytes.
        let up = noise(4096, 9);
        let mut c = Caller::connect(relay.addr).await;
        c.send(&post(&host_of(&a), "/upload", &up)).await;
        let (id, _, _, _, body) = t.request().await;
        assert_eq!(body, Body::Binary(up));
        t.reply(&id, 200, "text/plain", "ok").await;
        assert_eq!(c.response(false).await.text(), "ok");
        // Not base64: that call fails, the tunnel keeps serving.
        let mut c = Caller::connect(relay.addr).await;
        c.send(&get(&host_of(&a), "/bad")).await;
        let (id, ..) = t.request().await;
        t.send_text(&format!(
            r#"{{"type":"response","id":"{id}","status":200,"headers":{{}},"body":"*not*","bodyEncoding":"base64"}}"#
        ))
        .await;
        let r = c.response(false).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (502, r#"{"error":"bad_host_response"}"#)
        );
        assert_eq!(t.recv().await, ServerFrame::Cancel { id });
        // A binary stream chunk is decoded too.
        let mut c = Caller::connect(relay.addr).await;
        c.send(&get(&host_of(&a), "/stream")).await;
        let (id, ..) = t.request().await;
        t.send(&ClientFrame::StreamStart {
            id: id.clone(),
            status: 200,
            headers: Default::default(),
        })
        .await;
        assert_eq!(c.head().await.0, 200);
        let piece = noise(1000, 3);
        t.send(&ClientFrame::StreamChunk {
            id: id.clone(),
            data: osaurus_relay_engine::frame::ChunkData(Body::Binary(piece.clone())),
        })
        .await;
        assert_eq!(c.chunk().await, Ok(Some(piece)));
        t.send(&ClientFrame::StreamEnd { id }).await;
        assert_eq!(c.chunk().await, Ok(None));
    });
}

#[test]
fn an_agent_host_forwards_health_and_stats_to_the_agent() {
    let relay = start(|_| {});
    let (a, off) = (key(1), key(2));
    smol::block_on(async {
        // No tunnel: the app's probe must not look green.
        let r = call(relay.addr, &get(&host_of(&off), "/health")).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (502, r#"{"error":"agent_offline"}"#)
        );
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        for path in ["/health", "/stats"] {
            let mut c = Caller::connect(relay.addr).await;
            c.send(&get(&host_of(&a), path)).await;
            let (id, _, got, ..) = t.request().await;
            assert_eq!(got, path);
            t.reply(&id, 200, "application/json", r#"{"local":true}"#)
                .await;
            assert_eq!(c.response(false).await.text(), r#"{"local":true}"#);
        }
        // The relay's own endpoints still answer on other hosts.
        let r = call(relay.addr, &get("relay.test", "/health")).await;
        assert_eq!(r.status, 200);
        assert!(r.text().contains("\"tunnels\":1"));
    });
}

#[test]
fn a_removed_agent_takes_its_calls_with_it() {
    let relay = start(|_| {});
    let (a, b) = (key(1), key(2));
    smol::block_on(async {
        let mut t = Tunnel::connect(relay.addr, &[&a, &b]).await;
        let mut ca = Caller::connect(relay.addr).await;
        ca.send(&get(&host_of(&a), "/slow")).await;
        let _ = t.request().await;
        let mut cb = Caller::connect(relay.addr).await;
        cb.send(&get(&host_of(&b), "/other")).await;
        let (idb, ..) = t.request().await;
        t.send(&ClientFrame::RemoveAgent {
            address: osaurus_relay_tests::harness::lower(&a),
        })
        .await;
        let r = ca.response(false).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (502, r#"{"error":"agent_offline"}"#)
        );
        // The other agent's call is untouched.
        t.reply(&idb, 200, "text/plain", "b").await;
        assert_eq!(cb.response(false).await.text(), "b");
    });
}

#[test]
fn a_request_frame_over_the_configured_limit_gets_413() {
    let relay = start(|a| a.max_request_frame_bytes = 64 * 1024);
    let a = key(1);
    smol::block_on(async {
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        let r = call(relay.addr, &post(&host_of(&a), "/big", &vec![b'x'; 70_000])).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (413, r#"{"error":"body_too_large"}"#)
        );
        // Smaller bodies still pass on the same tunnel.
        let mut c = Caller::connect(relay.addr).await;
        c.send(&post(&host_of(&a), "/small", b"ok")).await;
        let (id, ..) = t.request().await;
        t.reply(&id, 200, "text/plain", "fine").await;
        assert_eq!(c.response(false).await.text(), "fine");
    });
}

/// A tunnel peer with the app's WebSocket receive limit (1 MiB, the
/// platform default it does not raise), authenticated.
async fn app_like(addr: std::net::SocketAddr, a: &SecretKey) -> Tunnel {
    let cfg = WebSocketConfig::default().max_message_size(Some(APP_MAX_MESSAGE));
    let (mut t, nonce) = Tunnel::open_with(addr, Some(cfg)).await;
    t.send_text(&Tunnel::auth_text(&[a], &nonce)).await;
    assert!(matches!(t.recv().await, ServerFrame::AuthOk { .. }));
    t
}

const APP_MAX_MESSAGE: usize = 1 << 20;

/// Measures point 8 of the binary issue: what a request frame over the app's
/// receive limit does, without and with `MAX_REQUEST_FRAME_BYTES`.
#[test]
fn a_request_frame_over_the_apps_receive_limit_costs_the_tunnel_unless_capped() {
    let big = vec![b'x'; 1536 * 1024];
    // Default (no cap beyond MAX_BODY_BYTES): the frame reaches the app,
    // whose receive fails; it drops the tunnel, so the call beside it fails too.
    let relay = start(|_| {});
    let a = key(1);
    smol::block_on(async {
        let mut t = app_like(relay.addr, &a).await;
        let mut beside = Caller::connect(relay.addr).await;
        beside.send(&get(&host_of(&a), "/slow")).await;
        let _ = t.request().await;
        let mut c = Caller::connect(relay.addr).await;
        c.send(&post(&host_of(&a), "/upload", &big)).await;
        let failed = within("the app's receive", t.ws.next()).await;
        assert!(
            matches!(
                failed,
                Some(Err(async_tungstenite::tungstenite::Error::Capacity(_)))
            ),
            "{failed:?}"
        );
        drop(t);
        for mut caller in [c, beside] {
            let r = caller.response(false).await;
            assert_eq!(
                (r.status, r.text().as_str()),
                (502, r#"{"error":"tunnel_closed"}"#)
            );
        }
        let r = call(relay.addr, &get(&host_of(&a), "/after")).await;
        assert_eq!(
            r.text(),
            r#"{"error":"agent_offline"}"#,
            "until it reconnects"
        );
    });
    // With the cap at the app's limit: 413, and the tunnel keeps serving.
    let relay = start(|a| a.max_request_frame_bytes = APP_MAX_MESSAGE as u64);
    smol::block_on(async {
        let mut t = app_like(relay.addr, &a).await;
        let mut beside = Caller::connect(relay.addr).await;
        beside.send(&get(&host_of(&a), "/slow")).await;
        let (id, ..) = t.request().await;
        let r = call(relay.addr, &post(&host_of(&a), "/upload", &big)).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (413, r#"{"error":"body_too_large"}"#)
        );
        t.reply(&id, 200, "text/plain", "still here").await;
        assert_eq!(beside.response(false).await.text(), "still here");
    });
}

#[test]
fn our_client_carries_binary_both_ways_buffered_and_over_the_streaming_path() {
    let relay = start(|_| {});
    let origin = Origin::spawn("origin");
    let a = key(1);
    let client = ClientHandle::spawn(relay.addr, &origin.url(), &[&a]);
    smol::block_on(async {
        client.online().await;
        // Echoed bytes: base64 up to the client, decoded for the origin,
        // base64 back, decoded for the caller. Up to 1 MiB the answer is one
        // `response` frame (the caller gets its length); over it, a stream
        // (the relay frames a stream chunked).
        for (n, seed, streamed) in [
            (3 * 1024, 1, false),
            (300 * 1024, 2, false),
            (2 * 1024 * 1024, 3, true),
        ] {
            let body = noise(n, seed);
            let r = call(relay.addr, &post(&host_of(&a), "/echo", &body)).await;
            assert_eq!(r.status, 200, "{n} bytes");
            assert!(r.body == body, "{n} bytes arrive byte for byte");
            let framing = (r.header("content-length"), r.header("transfer-encoding"));
            if streamed {
                assert_eq!(framing, (None, Some("chunked")), "{n} bytes streamed");
            } else {
                assert_eq!(
                    framing,
                    (Some(n.to_string().as_str()), None),
                    "{n} bytes in one frame"
                );
            }
        }
        // An answer of unknown length streams whatever its size.
        let r = call(relay.addr, &get(&host_of(&a), "/chunked/5000/4")).await;
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert!(r.body == noise(5000, 4), "chunked answer byte for byte");
    });
}

#[test]
fn ten_mib_bodies_arrive_byte_for_byte_both_ways() {
    let relay = start(|_| {});
    let a = key(1);
    smol::block_on(async {
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        // 10 MiB is MAX_BODY_BYTES: the largest upload the relay takes.
        let up = noise(10 * 1024 * 1024, 21);
        let mut c = Caller::connect(relay.addr).await;
        c.send(&post(&host_of(&a), "/upload", &up)).await;
        let (id, _, _, _, body) = t.request().await;
        assert!(
            body == Body::Binary(up),
            "the upload, as base64 of its bytes"
        );
        let down = noise(10 * 1024 * 1024, 22);
        t.reply_body(
            &id,
            200,
            "application/octet-stream",
            Body::Binary(down.clone()),
        )
        .await;
        let r = c.response(false).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("10485760"));
        assert!(r.body == down, "the answer, decoded");
    });
}

/// Peak RSS growth (KiB) a 64 MiB download may cause in either process: a
/// quarter of the body, so holding it whole (or base64 of it) fails.
const PEAK_GROWTH_KIB: u64 = 16 * 1024;

#[test]
fn a_64_mib_download_streams_through_our_client_in_bounded_memory() {
    let (relay, addr) = Child::relay(env!("CARGO_BIN_EXE_relay_child"), &[]);
    let origin = Origin::spawn("origin");
    let exe = env!("CARGO_BIN_EXE_tunnel_child");
    let client = Child::tunnel(exe, addr, &origin.url(), 1);
    let host = host_of(&key(1));
    smol::block_on(async {
        // Warm both processes up, then take their peaks as the baseline.
        let r = call(addr, &get(&host, "/chunked/300000/5")).await;
        assert!(r.body == noise(300_000, 5));
        let base = (relay.peak_rss_kib(), client.peak_rss_kib());
        const N: usize = 64 * 1024 * 1024;
        let mut c = Caller::connect(addr).await;
        c.send(&get(&host, &format!("/bytes/{N}/11"))).await;
        let (status, headers) = c.head().await;
        assert_eq!(status, 200);
        assert!(
            headers.contains(&("transfer-encoding".into(), "chunked".into())),
            "{headers:?}"
        );
        let mut want = Noise::new(11);
        let mut expect = Vec::new();
        let mut got = 0;
        while let Some(piece) = c.chunk().await.expect("the stream ends cleanly") {
            expect.resize(piece.len(), 0);
            want.fill(&mut expect);
            assert!(piece == expect, "bytes from {got} differ");
            got += piece.len();
        }
        assert_eq!(got, N);
        let grew = (
            relay.peak_rss_kib().saturating_sub(base.0),
            client.peak_rss_kib().saturating_sub(base.1),
        );
        println!(
            "peak RSS growth over a 64 MiB download (KiB): relay {}, client {}",
            grew.0, grew.1
        );
        assert!(grew.0 < PEAK_GROWTH_KIB, "relay peak grew {} KiB", grew.0);
        assert!(grew.1 < PEAK_GROWTH_KIB, "client peak grew {} KiB", grew.1);
    });
}
