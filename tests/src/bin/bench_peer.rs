//! The benchmark peer: tunnels that answer at once, a minimal origin for the
//! ceiling run, and a client timing streamed answers. Loopback only.
//!
//! bench_peer tunnels ADDR N M MODE HOSTS_FILE   MODE: fixed:SIZE[:batched] | echo | stream:K:S | tokens:K:S:MS
//! bench_peer origin PORT SIZE
//! bench_peer streams ADDR HOST COUNT
//! bench_peer tokens ADDR HOSTS_FILE COUNT [ROUNDS [SPREAD_MS]]
//!
//! `fixed:SIZE` writes each answer as it is made, as the app does;
//! `fixed:SIZE:batched` writes every answer to the frames of one read in
//! one write, as the floor relay's upstream does.
//! `tokens:K:S:MS` answers every call with an SSE stream of K events of S
//! bytes, one every MS ms, each carrying the wall-clock time it was written
//! to the tunnel;
//! `tokens` holds COUNT such streams across the hosts and reports the
//! latency of every event (sent by the peer → read by the caller).

use async_tungstenite::tungstenite::Message;
use futures_util::SinkExt;
use osaurus_relay_engine::frame::{ClientFrame, Headers, ServerFrame};
use osaurus_relay_tests::harness::{auth_text, key, lower};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use smol::stream::StreamExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone)]
enum Mode {
    /// The body; whether answers to one read go out in one write.
    Fixed(String, bool),
    Echo,
    Stream(usize, String),
    /// Paced SSE events: count, size, gap.
    Tokens(usize, usize, Duration),
}

fn parse_mode(s: &str) -> Mode {
    let parts: Vec<&str> = s.split(':').collect();
    match parts.as_slice() {
        ["fixed", n] => Mode::Fixed("x".repeat(n.parse().expect("size")), false),
        ["fixed", n, "batched"] => Mode::Fixed("x".repeat(n.parse().expect("size")), true),
        ["echo"] => Mode::Echo,
        ["stream", k, n] => Mode::Stream(
            k.parse().expect("chunks"),
            "x".repeat(n.parse().expect("size")),
        ),
        ["tokens", k, n, ms] => Mode::Tokens(
            k.parse().expect("events"),
            n.parse().expect("size"),
            Duration::from_millis(ms.parse().expect("ms")),
        ),
        _ => panic!("mode: fixed:SIZE[:batched] | echo | stream:K:S | tokens:K:S:MS"),
    }
}

fn text_headers() -> Headers {
    Headers(vec![("content-type".into(), "text/plain".into())])
}

async fn tunnel(
    addr: String,
    first_key: u64,
    agents: u64,
    mode: Mode,
    ready: smol::channel::Sender<()>,
) {
    let s = TcpStream::connect(&addr).await.expect("connect relay");
    let _ = s.set_nodelay(true);
    let (mut ws, _) = async_tungstenite::client_async(format!("ws://{addr}/tunnel/connect"), s)
        .await
        .expect("upgrade");
    let nonce = match ws.next().await {
        Some(Ok(Message::Text(t))) => match ServerFrame::parse(t.as_str()) {
            Some(ServerFrame::Challenge { nonce }) => nonce,
            other => panic!("expected challenge: {other:?}"),
        },
        other => panic!("expected challenge: {other:?}"),
    };
    let keys: Vec<_> = (first_key..first_key + agents).map(key).collect();
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    ws.send(Message::text(auth_text(
        &keys.iter().collect::<Vec<_>>(),
        &nonce,
        ts,
    )))
    .await
    .expect("send auth");
    match ws.next().await {
        Some(Ok(Message::Text(t))) if t.as_str().starts_with(r#"{"type":"auth_ok""#) => {}
        other => panic!("expected auth_ok: {other:?}"),
    }
    let _ = ready.send(()).await;
    if let Mode::Tokens(k, size, gap) = mode {
        return paced(ws, k, size, gap).await;
    }
    let batched = matches!(mode, Mode::Fixed(_, true));
    loop {
        // Batched: answers are fed until no frame is ready, then flushed.
        let ready = match batched {
            true => smol::future::poll_once(ws.next()).await,
            false => None,
        };
        let m = match ready {
            Some(m) => m,
            None if batched => {
                if ws.flush().await.is_err() {
                    return;
                }
                ws.next().await
            }
            None => ws.next().await,
        };
        let Some(Ok(m)) = m else { break };
        let Message::Text(t) = m else { continue };
        let frames = match ServerFrame::parse(t.as_str()) {
            Some(ServerFrame::Ping { ts }) => vec![ClientFrame::Pong { ts }],
            Some(ServerFrame::Request { id, body, .. }) => match &mode {
                Mode::Fixed(b, _) => vec![ClientFrame::Response {
                    id,
                    status: 200,
                    headers: text_headers(),
                    body: b.clone().into(),
                }],
                Mode::Echo => vec![ClientFrame::Response {
                    id,
                    status: 200,
                    headers: text_headers(),
                    body,
                }],
                Mode::Stream(k, chunk) => {
                    // Frames go out as they are made: the first byte must not
                    // wait for the whole answer to be built.
                    let start = ClientFrame::StreamStart {
                        id: id.clone(),
                        status: 200,
                        headers: text_headers(),
                    };
                    if ws.send(Message::text(start.encode())).await.is_err() {
                        return;
                    }
                    for _ in 0..*k {
                        let f = ClientFrame::StreamChunk {
                            id: id.clone(),
                            data: chunk.clone().into(),
                        };
                        if ws.send(Message::text(f.encode())).await.is_err() {
                            return;
                        }
                    }
                    vec![ClientFrame::StreamEnd { id }]
                }
                // Served by `paced`.
                Mode::Tokens(..) => vec![],
            },
            _ => vec![],
        };
        for f in frames {
            let m = Message::text(f.encode());
            let sent = if batched {
                ws.feed(m).await
            } else {
                ws.send(m).await
            };
            if sent.is_err() {
                return;
            }
        }
    }
}

/// Microseconds since the Unix epoch: both processes read the same clock.
fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One SSE event of `size` bytes carrying the time it is sent.
fn token(size: usize) -> String {
    let mut e = format!("data: {:016}", wall_us());
    let pad = size.saturating_sub(e.len() + 2);
    e.extend(std::iter::repeat_n('x', pad));
    e.push_str("\n\n");
    e
}

/// Serves every call with a paced stream; all calls of the tunnel at once.
async fn paced(
    ws: async_tungstenite::WebSocketStream<TcpStream>,
    k: usize,
    size: usize,
    gap: Duration,
) {
    let (mut tx_ws, mut rx_ws) = ws.split();
    let (tx, rx) = smol::channel::unbounded::<String>();
    let ex = smol::LocalExecutor::new();
    let writer = async {
        while let Ok(mut t) = rx.recv().await {
            // The time a token is written to the tunnel, not when it was
            // made: a burst's wait in this peer's own queue is not the relay's.
            if let Some(at) = t.find("data: ").map(|at| at + 6) {
                if t.get(at..at + 16)
                    .is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit()))
                {
                    t.replace_range(at..at + 16, &format!("{:016}", wall_us()));
                }
            }
            if tx_ws.send(Message::text(t)).await.is_err() {
                return;
            }
        }
    };
    let reader = async {
        while let Some(Ok(m)) = rx_ws.next().await {
            let Message::Text(t) = m else { continue };
            match ServerFrame::parse(t.as_str()) {
                Some(ServerFrame::Ping { ts }) => {
                    let _ = tx.send(ClientFrame::Pong { ts }.encode()).await;
                }
                Some(ServerFrame::Request { id, .. }) => {
                    let tx = tx.clone();
                    ex.spawn(async move {
                        let start = ClientFrame::StreamStart {
                            id: id.clone(),
                            status: 200,
                            headers: Headers(vec![(
                                "content-type".into(),
                                "text/event-stream".into(),
                            )]),
                        };
                        let _ = tx.send(start.encode()).await;
                        for _ in 0..k {
                            smol::Timer::after(gap).await;
                            let data = token(size).into();
                            let f = ClientFrame::StreamChunk {
                                id: id.clone(),
                                data,
                            };
                            let _ = tx.send(f.encode()).await;
                        }
                        let _ = tx.send(ClientFrame::StreamEnd { id }.encode()).await;
                    })
                    .detach();
                }
                _ => {}
            }
        }
    };
    ex.run(smol::future::or(writer, reader)).await;
}

fn tunnels(args: &[String]) {
    let addr = args[0].clone();
    let (n, m): (u64, u64) = (args[1].parse().expect("N"), args[2].parse().expect("M"));
    let mode = parse_mode(&args[3]);
    let hosts: Vec<String> = (1..=n * m).map(|k| lower(&key(k))).collect();
    std::fs::write(&args[4], hosts.join("\n") + "\n").expect("hosts file");
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(async {
        let (tx, rx) = smol::channel::unbounded();
        for i in 0..n {
            ex.spawn(tunnel(addr.clone(), 1 + i * m, m, mode.clone(), tx.clone()))
                .detach();
        }
        for _ in 0..n {
            rx.recv().await.expect("tunnel up");
        }
        println!("ready");
        smol::future::pending::<()>().await;
    }));
}

fn origin(args: &[String]) {
    let port: u16 = args[0].parse().expect("port");
    let body = "x".repeat(args[1].parse().expect("size"));
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(async {
        let l = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        println!("ready");
        while let Ok((mut s, _)) = l.accept().await {
            let answer = answer.clone();
            ex.spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut have = 0;
                loop {
                    let Ok(n) = s.read(&mut buf[have..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    have += n;
                    // Answer each complete head (GET only, pipelining included).
                    while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                        buf.copy_within(end + 4..have, 0);
                        have -= end + 4;
                    }
                }
            })
            .detach();
        }
    }));
}

/// Opens COUNT streamed calls at once; prints time to first byte and MiB/s as JSON.
fn streams(args: &[String]) {
    let (addr, host) = (args[0].clone(), args[1].clone());
    let count: usize = args[2].parse().expect("count");
    let ex = smol::LocalExecutor::new();
    let results = smol::block_on(ex.run(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..count)
            .map(|_| {
                let (addr, host) = (addr.clone(), host.clone());
                ex.spawn(async move {
                    let mut s = TcpStream::connect(&addr).await.expect("connect");
                    let t0 = Instant::now();
                    s.write_all(format!("GET /s HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
                        .await
                        .expect("write");
                    let mut buf = vec![0u8; 64 * 1024];
                    let (mut first, mut total) = (None, 0usize);
                    let mut tail: Vec<u8> = Vec::new();
                    loop {
                        let n = s.read(&mut buf).await.expect("read");
                        if n == 0 {
                            break;
                        }
                        first.get_or_insert_with(|| t0.elapsed());
                        total += n;
                        tail.extend_from_slice(&buf[..n]);
                        if tail.len() > 8 {
                            tail.drain(..tail.len() - 8);
                        }
                        if tail.ends_with(b"\r\n0\r\n\r\n") {
                            break;
                        }
                    }
                    (first.unwrap_or_default(), total)
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await);
        }
        (out, start.elapsed())
    }));
    let (mut per, elapsed) = results;
    per.sort();
    let ttfb: Vec<Duration> = per.iter().map(|(f, _)| *f).collect();
    let bytes: usize = per.iter().map(|(_, b)| b).sum();
    let mib_s = bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64();
    println!(
        "{{\"streams\":{count},\"ttfb_p50_ms\":{:.3},\"ttfb_max_ms\":{:.3},\"bytes\":{bytes},\"mib_per_s\":{:.1},\"seconds\":{:.3}}}",
        ttfb[ttfb.len() / 2].as_secs_f64() * 1e3,
        ttfb[ttfb.len() - 1].as_secs_f64() * 1e3,
        mib_s,
        elapsed.as_secs_f64()
    );
}

/// Holds COUNT paced streams across the hosts at once; prints the latency
/// of every event and how many streams completed, as JSON.
/// Asks the kernel to stamp each segment with its arrival time.
fn stamp_arrivals(s: &std::net::TcpStream) -> nix::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt::Timestamping, TimestampingFlag as F};
    setsockopt(
        s,
        Timestamping,
        &(F::SOF_TIMESTAMPING_RX_SOFTWARE | F::SOF_TIMESTAMPING_SOFTWARE),
    )
}

/// One read, with the kernel's arrival time (µs since the epoch) of its
/// last segment: when the relay's send put the bytes in this socket, not
/// when this busy client got round to reading them.
fn read_stamped(s: &std::net::TcpStream, buf: &mut [u8]) -> std::io::Result<(usize, Option<u64>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, Timestamps};
    use std::os::fd::AsRawFd;
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(Timestamps);
    let msg = recvmsg::<()>(s.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())?;
    let mut at = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmTimestampsns(t) = c {
            at = Some(t.system.tv_sec() as u64 * 1_000_000 + t.system.tv_nsec() as u64 / 1_000);
        }
    }
    Ok((msg.bytes, at))
}

fn tokens(args: &[String]) {
    let addr = args[0].clone();
    let hosts: Vec<String> = std::fs::read_to_string(&args[1])
        .expect("hosts file")
        .lines()
        .map(|h| format!("{h}.bench.test"))
        .collect();
    let count: usize = args[2].parse().expect("count");
    let rounds: usize = args.get(3).map_or(1, |r| r.parse().expect("rounds"));
    // Starts spread over this many ms: callers whose tokens are not in step.
    let spread = Duration::from_millis(args.get(4).map_or(0, |r| r.parse().expect("spread ms")));
    let ex = smol::LocalExecutor::new();
    let start = Instant::now();
    let mut per = Vec::new();
    for _ in 0..rounds {
        per.extend(smol::block_on(
            ex.run(streams_at_once(&ex, &addr, &hosts, count, spread)),
        ));
    }
    let elapsed = start.elapsed();
    let complete = per.iter().filter(|(.., c)| *c).count();
    let (mut lat, mut out): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
    for (l, o, _) in per {
        lat.extend(l);
        out.extend(o);
    }
    lat.sort_unstable();
    out.sort_unstable();
    let q = |v: &[u64], p: f64| {
        let at = ((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1));
        v.get(at).copied().unwrap_or(0) as f64 / 1e3
    };
    println!(
        "{{\"streams\":{},\"complete\":{complete},\"tokens\":{},\"lat_p50_ms\":{:.3},\"lat_p99_ms\":{:.3},\"lat_max_ms\":{:.3},\"out_p50_ms\":{:.3},\"out_p99_ms\":{:.3},\"out_max_ms\":{:.3},\"seconds\":{:.3}}}",
        count * rounds,
        lat.len(),
        q(&lat, 0.5),
        q(&lat, 0.99),
        q(&lat, 1.0),
        q(&out, 0.5),
        q(&out, 0.99),
        q(&out, 1.0),
        elapsed.as_secs_f64()
    );
}

/// COUNT streams at once; each one's latencies and whether it completed.
async fn streams_at_once<'a>(
    ex: &smol::LocalExecutor<'a>,
    addr: &str,
    hosts: &[String],
    count: usize,
    spread: Duration,
) -> Vec<(Vec<u64>, Vec<u64>, bool)> {
    {
        let tasks: Vec<_> = (0..count)
            .map(|i| {
                let (addr, host) = (addr.to_string(), hosts[i % hosts.len()].clone());
                let after = spread.mul_f64(i as f64 / count as f64);
                ex.spawn(async move {
                    smol::Timer::after(after).await;
                    let addr: std::net::SocketAddr = addr.parse().expect("address");
                    let s = smol::Async::<std::net::TcpStream>::connect(addr)
                        .await
                        .expect("connect");
                    stamp_arrivals(s.get_ref()).expect("SO_TIMESTAMPING");
                    (&s).write_all(format!("GET /t HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
                        .await
                        .expect("write");
                    let mut buf = vec![0u8; 16 * 1024];
                    let (mut seen, mut lat, mut out) = (Vec::new(), Vec::new(), Vec::new());
                    let complete = loop {
                        let (n, arrived) = s
                            .read_with(|t| read_stamped(t, &mut buf))
                            .await
                            .unwrap_or((0, None));
                        if n == 0 {
                            break false;
                        }
                        let now = wall_us();
                        let arrived = arrived.unwrap_or(now);
                        seen.extend_from_slice(&buf[..n]);
                        // Every whole `data: <16 digits>` seen so far is one event.
                        while let Some(at) = seen.windows(6).position(|w| w == b"data: ") {
                            let Some(digits) = seen.get(at + 6..at + 22) else {
                                break;
                            };
                            let sent: u64 = std::str::from_utf8(digits)
                                .ok()
                                .and_then(|d| d.parse().ok())
                                .expect("a timestamp");
                            lat.push(now.saturating_sub(sent));
                            out.push(arrived.saturating_sub(sent));
                            seen.drain(..at + 22);
                        }
                        if seen.ends_with(b"\r\n0\r\n\r\n") {
                            break true;
                        }
                        let keep = seen.len().min(32);
                        seen.drain(..seen.len() - keep);
                    };
                    (lat, out, complete)
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await);
        }
        out
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("tunnels") if args.len() == 6 => tunnels(&args[1..]),
        Some("origin") if args.len() == 3 => origin(&args[1..]),
        Some("streams") if args.len() == 4 => streams(&args[1..]),
        Some("tokens") if (4..=6).contains(&args.len()) => tokens(&args[1..]),
        _ => {
            eprintln!("usage: bench_peer tunnels ADDR N M MODE HOSTS_FILE | origin PORT SIZE | streams ADDR HOST COUNT");
            std::process::exit(2);
        }
    }
}
