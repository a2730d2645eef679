//! The relay's HTTP/1.1 server over real sockets: framing, versions, hostile heads.

use osaurus_relay_engine::frame::{ClientFrame, Headers};
use osaurus_relay_tests::e2e::*;
use osaurus_relay_tests::harness::{host_of, key};

#[test]
fn hostile_framing_gets_a_clear_4xx_and_a_closed_connection() {
    let relay = start(|_| {});
    smol::block_on(async {
        let host = host_of(&key(1));
        let cases: Vec<(String, u16)> = vec![
            (format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"), 400),
            (format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"), 400),
            (format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: -1\r\n\r\n"), 400),
            (format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 99999999999999999999999\r\n\r\n"), 400),
            (format!("POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 501),
            ("GARBAGE\r\n\r\n".into(), 400),
            ("GET / HTTP/1.1\r\n\r\n".into(), 400),
            (format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000)), 431),
            ("GET / HTTP/3.0\r\nHost: x\r\n\r\n".into(), 505),
        ];
        for (raw, status) in cases {
            let mut c = Caller::connect(relay.addr).await;
            c.send_lossy(raw.as_bytes()).await;
            let r = c.response(false).await;
            assert_eq!(r.status, status, "{raw:.80}");
            assert_eq!(r.header("connection"), Some("close"), "{raw:.80}");
            assert!(c.is_closed().await, "{raw:.80}");
        }
    });
}

#[test]
fn bad_chunk_sizes_are_rejected_and_the_call_is_cancelled() {
    let relay = start(|_| {});
    smol::block_on(async {
        let a = key(1);
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        for bad in [
            "zz\r\nabc\r\n0\r\n\r\n",
            "-5\r\n",
            "3\r\nabcXX0\r\n\r\n",
            "fffffffffffffffffffff\r\n",
        ] {
            let mut c = Caller::connect(relay.addr).await;
            let raw = format!(
                "POST / HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n{bad}",
                host_of(&a)
            );
            c.send_lossy(raw.as_bytes()).await;
            let r = c.response(false).await;
            assert_eq!(
                (r.status, r.text().as_str()),
                (400, r#"{"error":"bad_chunked_body"}"#),
                "{bad:?}"
            );
            assert!(c.is_closed().await);
        }
        // Nothing reached the tunnel: the next frame is this call's request.
        let mut c = Caller::connect(relay.addr).await;
        c.send(&get(&host_of(&a), "/after")).await;
        let (_, _, path, _, _) = t.request().await;
        assert_eq!(path, "/after");
    });
}

#[test]
fn http10_head_expect_continue_and_pipelining() {
    let relay = start(|_| {});
    smol::block_on(async {
        let a = key(1);
        let host = host_of(&a);
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        // HTTP/1.0: answered, then closed.
        let mut c = Caller::connect(relay.addr).await;
        c.send(format!("GET /ten HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
            .await;
        let (id, ..) = t.request().await;
        t.reply(&id, 200, "text/plain", "v1.0").await;
        let r = c.response(false).await;
        assert_eq!(r.text(), "v1.0");
        assert!(c.is_closed().await);
        // HEAD: the head with the length of the body, no body bytes.
        let mut c = Caller::connect(relay.addr).await;
        c.send(format!("HEAD /h HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .await;
        let (id, method, ..) = t.request().await;
        assert_eq!(method, "HEAD");
        t.reply(&id, 200, "text/plain", "12345").await;
        let r = c.response(true).await;
        assert_eq!((r.status, r.header("content-length")), (200, Some("5")));
        // Expect: 100-continue gets its interim answer before the body is sent.
        c.send(format!("POST /e HTTP/1.1\r\nHost: {host}\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n").as_bytes()).await;
        let mut interim = [0u8; 25];
        within(
            "100 continue",
            smol::io::AsyncReadExt::read_exact(&mut c.s, &mut interim),
        )
        .await
        .expect("read");
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        c.send(b"body").await;
        let (id, _, _, _, body) = t.request().await;
        assert_eq!(body.as_text(), Some("body"));
        t.reply(&id, 200, "text/plain", "got it").await;
        assert_eq!(c.response(false).await.text(), "got it");
        // Two pipelined requests on one write are answered in order.
        let two = format!(
            "GET /p1 HTTP/1.1\r\nHost: {host}\r\n\r\nGET /p2 HTTP/1.1\r\nHost: {host}\r\n\r\n"
        );
        c.send(two.as_bytes()).await;
        let (id1, _, p1, _, _) = t.request().await;
        assert_eq!(p1, "/p1");
        t.reply(&id1, 200, "text/plain", "one").await;
        let (id2, _, p2, _, _) = t.request().await;
        assert_eq!(p2, "/p2");
        t.reply(&id2, 200, "text/plain", "two").await;
        assert_eq!(c.response(false).await.text(), "one");
        assert_eq!(c.response(false).await.text(), "two");
    });
}

#[test]
fn a_caller_hanging_up_cancels_its_request() {
    let relay = start(|_| {});
    smol::block_on(async {
        let a = key(1);
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        let mut c = Caller::connect(relay.addr).await;
        c.send(&get(&host_of(&a), "/long")).await;
        let (id, ..) = t.request().await;
        drop(c);
        assert_eq!(
            t.recv().await,
            osaurus_relay_engine::frame::ServerFrame::Cancel { id }
        );
    });
}

#[test]
fn stream_to_http10_caller_is_close_delimited() {
    let relay = start(|_| {});
    smol::block_on(async {
        let http10 = |host: &str| format!("GET /s HTTP/1.0\r\nHost: {host}\r\n\r\n").into_bytes();
        let (mut t, mut c, id) = open_stream(relay.addr, http10).await;
        for d in ["a", "b"] {
            t.send(&ClientFrame::StreamChunk {
                id: id.clone(),
                data: d.into(),
            })
            .await;
        }
        t.send(&ClientFrame::StreamEnd { id }).await;
        let r = c.response(false).await;
        assert_eq!((r.status, r.text().as_str()), (200, "ab"));
    });
}

#[test]
fn no_body_statuses_are_framed_so_keep_alive_continues() {
    let relay = start(|_| {});
    smol::block_on(async {
        let a = key(1);
        let mut t = Tunnel::connect(relay.addr, &[&a]).await;
        let mut c = Caller::connect(relay.addr).await;
        for (status, length) in [(204u16, None), (205, Some("0")), (304, None)] {
            c.send(&get(&host_of(&a), "/nb")).await;
            let (id, ..) = t.request().await;
            t.reply(&id, status, "text/plain", "must not appear").await;
            let r = c.response(false).await;
            assert_eq!((r.status, r.header("content-length")), (status, length));
            assert!(r.body.is_empty());
        }
        // The connection is still in sync: the next answer is read whole.
        c.send(&get(&host_of(&a), "/after")).await;
        let (id, ..) = t.request().await;
        t.reply(&id, 200, "text/plain", "in sync").await;
        assert_eq!(c.response(false).await.text(), "in sync");
    });
}

/// Chunk `i` of the long-stream tests: its index, repeated (16 KiB).
fn numbered(i: usize) -> String {
    format!("{i:08}").repeat(2048)
}

/// A caller's request (made for the agent's host) that a tunnel answers
/// with `stream_start`: the two ends and the request id.
async fn open_stream(
    relay: std::net::SocketAddr,
    request: impl FnOnce(&str) -> Vec<u8>,
) -> (Tunnel, Caller, String) {
    let a = key(1);
    let mut t = Tunnel::connect(relay, &[&a]).await;
    let mut c = Caller::connect(relay).await;
    c.send(&request(&host_of(&a))).await;
    let (id, ..) = t.request().await;
    t.send(&ClientFrame::StreamStart {
        id: id.clone(),
        status: 200,
        headers: Headers::default(),
    })
    .await;
    (t, c, id)
}

async fn send_numbered(t: &mut Tunnel, id: &str, chunks: std::ops::Range<usize>) {
    for i in chunks {
        let data = numbered(i).as_str().into();
        let id = id.to_string();
        t.send(&ClientFrame::StreamChunk { id, data }).await;
    }
}

async fn expect_numbered(c: &mut Caller, chunks: std::ops::Range<usize>) {
    for i in chunks {
        let got = c.chunk().await.expect("the stream goes on");
        assert_eq!(got.as_deref(), Some(numbered(i).as_bytes()), "chunk {i}");
    }
}

#[test]
fn a_stream_to_a_caller_that_stops_reading_arrives_whole_and_in_order() {
    // More than the sockets between relay and caller hold: chunks the relay
    // writes at once, chunks a full socket leaves to the caller's task, and
    // the cut-short write between them must all arrive, each once, in order.
    let relay = start(|a| a.max_stream_buffer = 64 << 20);
    smol::block_on(within("a stalled stream", async {
        let (mut t, mut c, id) = open_stream(relay.addr, |host| get(host, "/s")).await;
        send_numbered(&mut t, &id, 0..256).await;
        assert_eq!(c.head().await.0, 200);
        expect_numbered(&mut c, 0..256).await;
        send_numbered(&mut t, &id, 256..512).await;
        expect_numbered(&mut c, 256..512).await;
        // Chunks and the end back to back, likely in one read of the relay's:
        // the end must not overtake chunks still waiting to be written.
        send_numbered(&mut t, &id, 512..520).await;
        t.send(&ClientFrame::StreamEnd { id }).await;
        expect_numbered(&mut c, 512..520).await;
        assert_eq!(c.chunk().await, Ok(None), "ended after 520 chunks");
    }));
}

#[test]
fn a_stream_longer_than_the_buffer_limit_flows_to_a_caller_that_keeps_up() {
    // What the caller has read no longer counts against `max_stream_buffer`,
    // whether its task or the relay's tunnel side wrote it.
    let relay = start(|a| a.max_stream_buffer = 256 << 10);
    smol::block_on(within("a long stream", async {
        let (mut t, mut c, id) = open_stream(relay.addr, |host| get(host, "/s")).await;
        assert_eq!(c.head().await.0, 200);
        // 4 MiB in all, sixteen times the limit, one chunk read at a time.
        for i in 0..256 {
            send_numbered(&mut t, &id, i..i + 1).await;
            expect_numbered(&mut c, i..i + 1).await;
        }
        t.send(&ClientFrame::StreamEnd { id }).await;
        assert_eq!(c.chunk().await, Ok(None));
    }));
}
