//! Public calls through the engine: routing, errors, relay, streams, timeouts.

use osaurus_relay_engine::frame::{Body, ClientFrame, Headers, ServerFrame};
use osaurus_relay_engine::{BinaryBodies, Config, Input, Output, TunnelId};
use osaurus_relay_tests::harness::*;

#[test]
fn contract_error_table_on_agent_hosts() {
    let mut h = Harness::default();
    let (a, off) = (key(1), key(2));
    h.connect(&[&a]);
    let (c, out) = h.request(Harness::head("GET", "/", "0x1234.relay.test"), b"");
    assert_eq!(
        response(&out, c),
        Some((400, r#"{"error":"invalid_subdomain"}"#.into()))
    );
    let (c, out) = h.get(&off, "/");
    assert_eq!(
        response(&out, c),
        Some((502, r#"{"error":"agent_offline"}"#.into()))
    );
    assert_eq!(header(&out, c, "access-control-allow-origin"), Some("*"));
    let mut big = Harness::head("POST", "/", &host_of(&a));
    big.content_length = Some(10 * 1024 * 1024 + 1);
    big.body_follows = true;
    let (c, out) = h.request(big, b"");
    assert_eq!(
        response(&out, c),
        Some((413, r#"{"error":"body_too_large"}"#.into()))
    );
    assert_eq!(header(&out, c, "access-control-allow-origin"), Some("*"));
    let (c, out) = h.request(Harness::head("OPTIONS", "/v1/chat", &host_of(&off)), b"");
    assert_eq!(response(&out, c), Some((204, String::new())));
    assert_eq!(
        header(&out, c, "access-control-allow-methods"),
        Some("GET, POST, PUT, PATCH, DELETE, OPTIONS")
    );
}

#[test]
fn buffered_relay_round_trip() {
    let mut h = Harness::default();
    let a = key(1);
    let t = h.connect(&[&a]);
    let mut head = Harness::head("POST", "/v1/chat?stream=false", &host_of(&a).to_uppercase());
    head.headers.extend([
        ("Content-Type".into(), "application/json".into()),
        ("Cookie".into(), "secret".into()),
        ("Authorization".into(), "Bearer osk-v1.k".into()),
    ]);
    let (c, out) = h.request(head, br#"{"message":"hello"}"#);
    let fs = frames(&out, t);
    let [ServerFrame::Request {
        id,
        method,
        path,
        headers,
        body,
    }] = fs.as_slice()
    else {
        panic!("{fs:?}");
    };
    assert!(id.starts_with("req_"));
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("POST", "/v1/chat?stream=false")
    );
    assert_eq!(body.as_text(), Some(r#"{"message":"hello"}"#));
    assert_eq!(
        headers,
        &hv(&[
            ("content-type", "application/json"),
            ("authorization", "Bearer osk-v1.k"),
            ("x-agent-address", &lower(&a)),
            ("x-forwarded-for", "198.51.100.9"),
        ])
    );
    let out = h.reply(t, id, 201, r#"{"reply":"hi"}"#);
    assert_eq!(response(&out, c), Some((201, r#"{"reply":"hi"}"#.into())));
    assert_eq!(header(&out, c, "content-type"), Some("text/plain"));
    assert_eq!(header(&out, c, "access-control-allow-origin"), Some("*"));
    assert_eq!(h.relay.sizes().calls, 0);
    assert_eq!(h.relay.stats().counters.total_requests_relayed, 1);
    // A late duplicate answer is ignored.
    assert!(h.reply(t, id, 200, "again").is_empty());
}

/// The headers of the one request frame in `out`.
fn frame_headers(out: &[Output], t: TunnelId) -> Headers {
    match frames(out, t).as_slice() {
        [ServerFrame::Request { headers, .. }] => headers.clone(),
        other => panic!("{other:?}"),
    }
}

/// A call without a body goes out from its head as it arrived, one with a
/// body (or repeated names) from the copy the engine keeps: the tunnel sees
/// the same headers either way.
#[test]
fn every_request_path_forwards_the_same_headers() {
    let mut h = Harness::default();
    let a = key(1);
    let t = h.connect(&[&a]);
    let sent = [
        ("Content-Type", "application/json"),
        ("X-Custom", "a"),
        ("COOKIE", "secret"),
        ("X-Relay-Hop", "forged"),
        ("Fly-Region", "ams"),
        ("Proxy-Authorization", "Basic x"),
        ("X-Forwarded-For", "203.0.113.1"),
        ("X-Very-Long-Header-Name-Beyond-Any-Stripped-One", "kept"),
        (
            "X-Relay-Very-Long-Header-Name-Beyond-Any-Stripped",
            "dropped",
        ),
    ];
    let want = |custom: &str| {
        hv(&[
            ("content-type", "application/json"),
            ("x-custom", custom),
            ("x-very-long-header-name-beyond-any-stripped-one", "kept"),
            ("x-agent-address", &lower(&a)),
            ("x-forwarded-for", "198.51.100.9"),
        ])
    };
    let mut head = Harness::head("GET", "/x", &host_of(&a));
    head.headers.extend(hv(&sent).0);
    let (_, plain) = h.request(head.clone(), b"");
    assert_eq!(frame_headers(&plain, t), want("a"));
    head.method = "POST".into();
    let (_, parked) = h.request(head.clone(), b"{}");
    assert_eq!(frame_headers(&parked, t), want("a"));
    // A repeated name (any case) is joined, as the copy joins it.
    head.method = "GET".into();
    head.headers.push(("x-CUSTOM".into(), "b".into()));
    let (_, joined) = h.request(head, b"");
    assert_eq!(frame_headers(&joined, t), want("a, b"));
}

#[test]
fn streaming_relay_and_out_of_order_answers() {
    let mut h = Harness::default();
    let a = key(1);
    let t = h.connect(&[&a]);
    let (c1, o1) = h.get(&a, "/sse");
    let (c2, o2) = h.get(&a, "/json");
    let (r1, r2) = (request_id(&o1), request_id(&o2));
    assert_ne!(r1, r2);
    let start = ClientFrame::StreamStart {
        id: r1.clone(),
        status: 200,
        headers: hv(&[("content-type", "text/event-stream")]),
    };
    let out = h.send(t, &start);
    assert!(
        matches!(&out[..], [Output::StartStream { call, head }] if *call == c1 && head.status == 200)
    );
    let out = h.reply(t, &r2, 200, "second first");
    assert_eq!(response(&out, c2), Some((200, "second first".into())));
    let out = h.send(
        t,
        &ClientFrame::StreamChunk {
            id: r1.clone(),
            data: "data: a\n\n".into(),
        },
    );
    assert_eq!(
        out,
        vec![Output::WriteChunk {
            call: c1,
            data: b"data: a\n\n".to_vec()
        }]
    );
    let out = h.send(t, &ClientFrame::StreamEnd { id: r1 });
    assert_eq!(out, vec![Output::EndStream { call: c1 }]);
    assert_eq!(h.relay.sizes().calls, 0);
    assert_eq!(h.relay.sizes().req_ids, 0);
}

#[test]
fn gateway_timeout_then_nothing_follows() {
    let mut h = Harness::default();
    let a = key(1);
    let t = h.connect(&[&a]);
    let (c, out) = h.get(&a, "/slow");
    let id = request_id(&out);
    assert!(h
        .advance(2_999)
        .iter()
        .all(|o| !matches!(o, Output::Respond { .. })));
    let out = h.advance(1);
    assert_eq!(
        response(&out, c),
        Some((504, r#"{"error":"gateway_timeout"}"#.into()))
    );
    assert_eq!(header(&out, c, "access-control-allow-origin"), Some("*"));
    let cancels: Vec<_> = frames(&out, t)
        .into_iter()
        .filter(|f| matches!(f, ServerFrame::Cancel { .. }))
        .collect();
    assert_eq!(cancels, vec![ServerFrame::Cancel { id: id.clone() }]);
    assert!(h.reply(t, &id, 200, "late").is_empty());
}

#[test]
fn stream_idle_timeout_cuts_the_stream() {
    let mut h = Harness::default();
    let a = key(1);
    let t = h.connect(&[&a]);
    let (c, id) = h.open_stream(t, &a, "/sse");
    h.advance(2_000);
    h.send(
        t,
        &ClientFrame::StreamChunk {
            id: id.clone(),
            data: "x".into(),
        },
    );
    let out = h.advance(2_999);
    assert!(
        !out.contains(&Output::AbortStream { call: c }),
        "a chunk resets the idle clock"
    );
    let out = h.advance(1);
    assert!(out.contains(&Output::AbortStream { call: c }));
    assert_eq!(frames(&out, t), vec![ServerFrame::Cancel { id }]);
}

#[test]
fn tunnel_loss_fails_waiting_calls_and_cuts_streams() {
    let mut h = Harness::default();
    let (a, other) = (key(1), key(2));
    let t = h.connect(&[&a]);
    let t2 = h.connect(&[&other]);
    let (waiting, _) = h.get(&a, "/");
    let (streaming, out) = h.get(&a, "/sse");
    let (unrelated, out2) = h.get(&other, "/");
    h.send(
        t,
        &ClientFrame::StreamStart {
            id: request_id(&out),
            status: 200,
            headers: hv(&[]),
        },
    );
    let out = h.step(Input::TunnelClosed { tunnel: t });
    assert_eq!(
        response(&out, waiting),
        Some((502, r#"{"error":"tunnel_closed"}"#.into()))
    );
    assert!(out.contains(&Output::AbortStream { call: streaming }));
    assert_eq!(h.relay.agent_tunnel(&a.address()), None);
    let out = h.reply(t2, &request_id(&out2), 200, "fine");
    assert_eq!(
        response(&out, unrelated),
        Some((200, "fine".into())),
        "other tunnels undisturbed"
    );
    let (c, out) = h.get(&a, "/");
    assert_eq!(response(&out, c).unwrap().0, 502);
}

#[test]
fn caller_gone_sends_cancel() {
    let mut h = Harness::default();
    let a = key(1);
    let t = h.connect(&[&a]);
    let (c, out) = h.get(&a, "/");
    let id = request_id(&out);
    let out = h.step(Input::CallGone { call: c });
    assert_eq!(frames(&out, t), vec![ServerFrame::Cancel { id }]);
    assert_eq!(h.relay.sizes().calls, 0);
}

#[test]
fn body_limit_is_exact_for_streamed_bodies() {
    let mut h = Harness::default();
    let a = key(1);
    let t = h.connect(&[&a]);
    let max = 10 * 1024 * 1024;
    let chunk = vec![b'a'; 1024 * 1024];
    for (extra, want_413) in [(0usize, false), (1, true)] {
        let call = h.new_call();
        let mut head = Harness::head("POST", "/", &host_of(&a));
        head.body_follows = true;
        let mut out = h.step(Input::CallHead {
            call,
            head: head.view(),
        });
        for _ in 0..10 {
            out.extend(h.step(Input::CallBody {
                call,
                chunk: &chunk,
            }));
        }
        out.extend(h.step(Input::CallBody {
            call,
            chunk: &vec![b'a'; extra],
        }));
        out.extend(h.step(Input::CallBodyEnd { call }));
        if want_413 {
            assert_eq!(
                response(&out, call),
                Some((413, r#"{"error":"body_too_large"}"#.into()))
            );
            assert!(frames(&out, t).is_empty());
        } else {
            let fs = frames(&out, t);
            let [ServerFrame::Request { body, .. }] = fs.as_slice() else {
                panic!()
            };
            assert_eq!(body.as_text().map(str::len), Some(max));
        }
    }
}

#[test]
fn binary_request_bodies_go_as_base64_or_get_415_when_configured() {
    let bytes = [0xff, 0xfe, 0, b'a', 0x80];
    let mut h = Harness::default();
    let a = key(1);
    let t = h.connect(&[&a]);
    let (c, out) = h.request(Harness::head("POST", "/up", &host_of(&a)), &bytes);
    let fs = frames(&out, t);
    let [ServerFrame::Request { body, .. }] = fs.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(body, &Body::Binary(bytes.to_vec()));
    let wire = out.iter().find_map(|o| match o {
        Output::SendFrame { text, .. } if text.contains("request") => Some(text.clone()),
        _ => None,
    });
    assert!(wire
        .unwrap()
        .ends_with(r#","body":"//4AYYA=","bodyEncoding":"base64"}"#));
    assert_eq!(response(&out, c), None, "sent, not answered");
    // Text stays text, without the field; no body is "".
    let (_, out) = h.request(Harness::head("POST", "/up", &host_of(&a)), "é ✓".as_bytes());
    let fs = frames(&out, t);
    assert!(matches!(&fs[..], [ServerFrame::Request { body: Body::Text(b), .. }] if b == "é ✓"));
    let (_, out) = h.request(Harness::head("GET", "/", &host_of(&a)), b"");
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::SendFrame { text, .. } if text.ends_with(r#","body":""}"#))));

    let mut h = Harness::new(Config {
        binary_request_bodies: BinaryBodies::Reject,
        ..test_config()
    });
    let t = h.connect(&[&a]);
    let (c, out) = h.request(Harness::head("POST", "/", &host_of(&a)), &bytes);
    assert_eq!(
        response(&out, c),
        Some((415, r#"{"error":"body_not_utf8"}"#.into()))
    );
    assert!(frames(&out, t).is_empty());
}

#[test]
fn bad_host_responses_fail_only_their_call() {
    let bad = [
        r#"{"type":"response","id":"ID","status":0,"headers":{}}"#,
        r#"{"type":"response","id":"ID","status":1000,"headers":{}}"#,
        r#"{"type":"response","id":"ID","status":"200","headers":{}}"#,
        r#"{"type":"response","id":"ID","status":200}"#,
        r#"{"type":"response","id":"ID","status":200,"headers":"x"}"#,
        r#"{"type":"response","id":"ID","status":200,"headers":{"bad name":"v"}}"#,
        r#"{"type":"response","id":"ID","status":200,"headers":{"x":"a\r\nb"}}"#,
        r#"{"type":"response","id":"ID","status":200,"headers":{"":"v"}}"#,
        r#"{"type":"stream_start","id":"ID","status":99,"headers":{}}"#,
        r#"{"type":"stream_chunk","id":"ID","data":"early"}"#,
        r#"{"type":"stream_end","id":"ID"}"#,
    ];
    for text in bad {
        let mut h = Harness::default();
        let a = key(1);
        let t = h.connect(&[&a]);
        let (victim, out) = h.get(&a, "/");
        let id = request_id(&out);
        let (bystander, out2) = h.get(&a, "/");
        let out = h.text(t, &text.replace("ID", &id));
        assert_eq!(
            response(&out, victim),
            Some((502, r#"{"error":"bad_host_response"}"#.into())),
            "{text}"
        );
        assert_eq!(frames(&out, t), vec![ServerFrame::Cancel { id }], "{text}");
        let out = h.reply(t, &request_id(&out2), 200, "ok");
        assert_eq!(
            response(&out, bystander),
            Some((200, "ok".into())),
            "{text}"
        );
        assert_eq!(h.relay.stats().counters.bad_host_responses, 1);
    }
}

#[test]
fn no_body_statuses_deliver_no_bytes() {
    let mut h = Harness::default();
    let a = key(1);
    let t = h.connect(&[&a]);
    for status in [204u16, 205, 304] {
        let (c, out) = h.get(&a, "/");
        let out = h.reply(t, &request_id(&out), status, "dropped");
        assert_eq!(response(&out, c), Some((status, String::new())));
        let (c, out) = h.get(&a, "/");
        let id = request_id(&out);
        let out = h.send(
            t,
            &ClientFrame::StreamStart {
                id: id.clone(),
                status,
                headers: hv(&[]),
            },
        );
        assert_eq!(response(&out, c), Some((status, String::new())));
        assert!(h
            .send(
                t,
                &ClientFrame::StreamChunk {
                    id,
                    data: "x".into()
                }
            )
            .is_empty());
    }
}

#[test]
fn frames_for_another_tunnels_call_are_ignored() {
    let mut h = Harness::default();
    let (a, b) = (key(1), key(2));
    let ta = h.connect(&[&a]);
    let tb = h.connect(&[&b]);
    let (c, out) = h.get(&a, "/");
    let id = request_id(&out);
    assert!(h.reply(tb, &id, 200, "hijack").is_empty());
    assert!(h
        .text(
            tb,
            &format!(r#"{{"type":"response","id":"{id}","status":0}}"#)
        )
        .is_empty());
    let out = h.reply(ta, &id, 200, "real");
    assert_eq!(response(&out, c), Some((200, "real".into())));
}

#[test]
fn slow_consumer_is_cut_at_the_buffer_cap() {
    let mut h = Harness::new(Config {
        max_stream_buffer: 10,
        ..test_config()
    });
    let a = key(1);
    let t = h.connect(&[&a]);
    let (c, id) = h.open_stream(t, &a, "/sse");
    let chunk = |h: &mut Harness| {
        h.send(
            t,
            &ClientFrame::StreamChunk {
                id: id.clone(),
                data: "123456".into(),
            },
        )
    };
    assert_eq!(chunk(&mut h).len(), 1);
    h.step(Input::CallDrained { call: c, bytes: 6 });
    assert_eq!(chunk(&mut h).len(), 1, "drained: room again");
    let out = chunk(&mut h);
    assert!(out.contains(&Output::AbortStream { call: c }));
    assert_eq!(frames(&out, t), vec![ServerFrame::Cancel { id }]);
    assert_eq!(h.relay.stats().counters.slow_consumer_aborts, 1);
}

#[test]
fn a_tunnel_that_never_reads_gets_no_more_requests() {
    let mut h = Harness::new(Config {
        max_tunnel_buffer: 2_500,
        ..test_config()
    });
    let a = key(1);
    let t = h.connect(&[&a]);
    let body = vec![b'x'; 1_500];
    let (c, out) = h.request(Harness::head("POST", "/", &host_of(&a)), &body);
    assert!(response(&out, c).is_none());
    let (c, out) = h.request(Harness::head("POST", "/", &host_of(&a)), &body);
    assert!(
        response(&out, c).is_none(),
        "first over the line still goes"
    );
    let (c, out) = h.request(Harness::head("POST", "/", &host_of(&a)), &body);
    assert_eq!(
        response(&out, c),
        Some((502, r#"{"error":"tunnel_send_failed"}"#.into()))
    );
    h.step(Input::TunnelDrained {
        tunnel: t,
        bytes: 10_000,
    });
    let (c, out) = h.request(Harness::head("POST", "/", &host_of(&a)), &body);
    assert!(response(&out, c).is_none());
}

#[test]
fn a_recycled_chunk_buffer_carries_the_next_token_and_only_small_ones_are_kept() {
    let mut h = Harness::default();
    let a = key(1);
    let t = h.connect(&[&a]);
    let (c, id) = h.open_stream(t, &a, "/sse");
    let chunk = |h: &mut Harness, data: &str| {
        let f = ClientFrame::StreamChunk {
            id: id.clone(),
            data: data.into(),
        };
        let mut out = h.send(t, &f);
        match out.pop() {
            Some(Output::WriteChunk { call, data }) if call == c && out.is_empty() => data,
            other => panic!("expected one chunk: {other:?} after {out:?}"),
        }
    };
    // Too large to keep: the next token gets a buffer of its own size.
    h.relay.recycle(Vec::with_capacity(64 * 1024));
    let first = chunk(&mut h, "data: a\n\n");
    assert!(first.capacity() < 1024, "{}", first.capacity());
    // A written chunk's buffer comes back, cleared, for the next token.
    let mut done = Vec::with_capacity(1000);
    done.extend_from_slice(b"old bytes");
    h.relay.recycle(done);
    let next = chunk(&mut h, "data: b\\n\n");
    assert_eq!(next, b"data: b\\n\n");
    assert_eq!(next.capacity(), 1000, "the recycled buffer");
}

#[test]
fn recycled_buffers_carry_the_next_request_frame_and_answer_with_nothing_stale() {
    let mut h = Harness::default();
    let a = key(1);
    let t = h.connect(&[&a]);
    let form = osaurus_relay_engine::Http1Answer {
        minor_version: 1,
        keep_alive: true,
        head_request: false,
    };
    // One call: its request frame's text and its answer's bytes.
    let call = |h: &mut Harness| {
        let mut head = Harness::head("GET", "/x?q=1", &host_of(&a));
        head.http1 = Some(form);
        let (c, out) = h.request(head, b"");
        let id = request_id(&out);
        let frame = out.into_iter().find_map(|o| match o {
            Output::SendFrame { tunnel, text } if tunnel == t => Some(text),
            _ => None,
        });
        let frame = frame.expect("a request frame");
        let reply = format!(
            r#"{{"type":"response","id":"{id}","status":200,"headers":{{"a":"b"}},"body":"hi"}}"#
        );
        let out = h.text(t, &reply);
        let answer = out.into_iter().find_map(|o| match o {
            Output::Answer { call, bytes, .. } if call == c => Some(bytes),
            _ => None,
        });
        (
            frame.replace(&id, "ID"),
            frame.capacity(),
            answer.expect("an answer"),
        )
    };
    let (want_frame, _, want_answer) = call(&mut h);
    // Two written buffers come back with their old bytes still in them.
    let stale = |n: usize| {
        let mut v = Vec::with_capacity(n);
        v.extend_from_slice(&b"stale bytes "[..].repeat(n / 16));
        v
    };
    h.relay.recycle(stale(3000));
    h.relay.recycle(stale(2000));
    let (frame, frame_room, answer) = call(&mut h);
    assert_eq!(frame, want_frame);
    assert_eq!(frame_room, 2000, "the frame in the last buffer handed back");
    assert_eq!(answer.capacity(), 3000, "the answer in the one before");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(!text(&answer).contains("stale"), "{}", text(&answer));
    assert!(text(&answer).starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(text(&answer).ends_with("\r\n\r\nhi"));
    assert_eq!(answer.len(), want_answer.len());
}
