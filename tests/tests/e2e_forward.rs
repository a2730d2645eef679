//! Forwarding to an owner instance that misbehaves, over loopback with a real
//! `redis-server`: the "owner" is a socket the test drives by hand, named in
//! Redis as the agent's instance. The engine's forwarded-call state decides:
//! a bad answer is a 502, a silent owner a 504, a slow caller a cut stream,
//! and each time the connection to the owner is dropped.

use osaurus_relay_tests::cluster::{instance, redis_ok, stats_get};
use osaurus_relay_tests::e2e::*;
use osaurus_relay_tests::harness::{host_of, key, lower};
use osaurus_relay_tests::redis::RedisServer;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use std::time::Duration;

/// Names a hand-driven owner at a fresh loopback port as the holder of key 1.
async fn fake_owner(redis: &RedisServer) -> TcpListener {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", l.local_addr().expect("bound"));
    assert_eq!(redis.cli(&["SET", "relay:instance:fake", &url]), "OK");
    let agent = format!("agent:{}", lower(&key(1)));
    assert_eq!(redis.cli(&["SET", &agent, "fake", "EX", "60"]), "OK");
    l
}

/// Accepts the forwarded call and reads its request head.
async fn accept(l: &TcpListener) -> TcpStream {
    let (mut s, _) = within("the forwarded call", l.accept())
        .await
        .expect("accept");
    let mut head = Vec::new();
    let mut b = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = within("request head", s.read(&mut b)).await.expect("read");
        assert!(n > 0, "the relay closed before its request head");
        head.extend_from_slice(&b[..n]);
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(text.contains("x-relay-hop: "), "a forwarded call: {text}");
    s
}

/// Reads until the relay drops the connection.
async fn dropped(s: &mut TcpStream) {
    let mut b = [0u8; 1024];
    while within("the relay drops the owner", s.read(&mut b))
        .await
        .unwrap_or(0)
        > 0
    {}
}

#[test]
fn a_bad_owner_answer_is_a_502_and_a_good_one_passes() {
    let redis = RedisServer::start();
    let a = instance(&redis, "inst-a", false, |_| {});
    smol::block_on(async {
        redis_ok(a.addr).await;
        let owner = fake_owner(&redis).await;
        let host = host_of(&key(1));
        for answer in [
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-Bad: \u{7f}\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let mut c = Caller::connect(a.addr).await;
            c.send(&get(&host, "/x")).await;
            let mut s = accept(&owner).await;
            s.write_all(answer.as_bytes()).await.expect("write");
            if answer.contains("chunked") {
                // The head was good: a broken body after it cuts the stream.
                assert_eq!(c.head().await.0, 200);
                s.write_all(b"ZZ\r\n").await.expect("write");
                assert_eq!(c.chunk().await, Err(()), "{answer:?}");
            } else {
                let r = c.response(false).await;
                assert_eq!(
                    (r.status, r.text().as_str()),
                    (502, r#"{"error":"bad_host_response"}"#),
                    "{answer:?}"
                );
            }
        }
        let r = call(a.addr, &stats_get()).await;
        assert!(
            r.text().contains(r#""bad_host_responses":4"#),
            "{}",
            r.text()
        );
        // A good answer through the same path, hop headers stripped.
        let mut c = Caller::connect(a.addr).await;
        c.send(&get(&host, "/ok")).await;
        let mut s = accept(&owner).await;
        let good = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: 5\r\nX-A: b\r\n\r\nok";
        s.write_all(good.as_bytes()).await.expect("write");
        let r = c.response(false).await;
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
        assert_eq!(r.header("x-a"), Some("b"));
        assert_eq!(r.header("keep-alive"), None);
    });
}

#[test]
fn a_silent_owner_is_a_504_after_the_timeout_and_the_margin() {
    let redis = RedisServer::start();
    let a = instance(&redis, "inst-a", false, |a| {
        a.response_timeout = Duration::from_millis(300);
        a.forward_margin = Duration::from_millis(200);
    });
    smol::block_on(async {
        redis_ok(a.addr).await;
        let owner = fake_owner(&redis).await;
        let mut c = Caller::connect(a.addr).await;
        c.send(&get(&host_of(&key(1)), "/slow")).await;
        let mut s = accept(&owner).await;
        let r = c.response(false).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (504, r#"{"error":"gateway_timeout"}"#)
        );
        dropped(&mut s).await;
    });
}

#[test]
fn a_slow_caller_of_a_forwarded_stream_is_cut_and_the_owner_dropped() {
    let redis = RedisServer::start();
    let a = instance(&redis, "inst-a", false, |a| a.max_stream_buffer = 64 * 1024);
    smol::block_on(async {
        redis_ok(a.addr).await;
        let owner = fake_owner(&redis).await;
        let mut c = Caller::connect(a.addr).await;
        c.send(&get(&host_of(&key(1)), "/big")).await;
        let mut s = accept(&owner).await;
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        s.write_all(head.as_bytes()).await.expect("write");
        assert_eq!(c.head().await.0, 200);
        // The caller reads no more; the owner writes until the relay drops it.
        let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
        let mut sent = 0u64;
        let cut = within("the relay drops the owner", async {
            while sent < 256 << 20 {
                if s.write_all(chunk.as_bytes()).await.is_err() {
                    return true;
                }
                sent += 0x4000;
            }
            false
        })
        .await;
        assert!(cut, "the owner wrote {sent} bytes and was never dropped");
        let r = call(a.addr, &stats_get()).await;
        assert!(
            r.text().contains(r#""slow_consumer_aborts":1"#),
            "{}",
            r.text()
        );
        // The caller's stream ends without its last chunk.
        let mut got = 0;
        let ended = loop {
            match c.chunk().await {
                Ok(Some(p)) => got += p.len(),
                Ok(None) => break "complete",
                Err(()) => break "cut",
            }
        };
        assert_eq!(ended, "cut", "after {got} bytes");
    });
}

/// Reads from the owner's side until `needle` has arrived; returns all of it.
async fn read_until(s: &mut TcpStream, got: &mut Vec<u8>, needle: &[u8]) {
    let mut b = [0u8; 64 * 1024];
    while !got.windows(needle.len()).any(|w| w == needle) {
        let n = within("the forwarded body", s.read(&mut b))
            .await
            .expect("read");
        assert!(
            n > 0,
            "the relay closed; got {:?}",
            String::from_utf8_lossy(got)
        );
        got.extend_from_slice(&b[..n]);
    }
}

#[test]
fn a_body_reaches_the_owner_while_the_caller_still_sends_it() {
    let redis = RedisServer::start();
    let a = instance(&redis, "inst-a", false, |_| {});
    smol::block_on(async {
        redis_ok(a.addr).await;
        let owner = fake_owner(&redis).await;
        let host = host_of(&key(1));
        // Chunked, and with a length: the first part is at the owner before
        // the caller sends the rest.
        for chunked in [true, false] {
            let mut c = Caller::connect(a.addr).await;
            let framing = if chunked {
                "transfer-encoding: chunked".to_string()
            } else {
                "content-length: 10".to_string()
            };
            let head = format!("POST /up HTTP/1.1\r\nhost: {host}\r\n{framing}\r\n\r\n");
            let (first, rest): (&[u8], &[u8]) = if chunked {
                (b"5\r\nfirst\r\n", b"5\r\nsecnd\r\n0\r\n\r\n")
            } else {
                (b"first", b"secnd")
            };
            c.send(&[head.as_bytes(), first].concat()).await;
            let (mut s, _) = within("the forwarded call", owner.accept())
                .await
                .expect("accept");
            let mut got = Vec::new();
            read_until(&mut s, &mut got, b"first").await;
            let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
            assert!(text.contains(&framing), "{text}");
            c.send(rest).await;
            let end: &[u8] = if chunked { b"0\r\n\r\n" } else { b"secnd" };
            read_until(&mut s, &mut got, end).await;
            let tail = &got[got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
            let want: &[u8] = if chunked {
                b"5\r\nfirst\r\n5\r\nsecnd\r\n0\r\n\r\n"
            } else {
                b"firstsecnd"
            };
            assert_eq!(String::from_utf8_lossy(tail), String::from_utf8_lossy(want));
            let ok = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone";
            s.write_all(ok.as_bytes()).await.expect("write");
            let r = c.response(false).await;
            assert_eq!((r.status, r.text().as_str()), (200, "done"), "{chunked}");
        }
    });
}
