//! A local HTTP server owned by a test: the thing a tunnel client exposes.

use osaurus_relay_engine::wire::http1::{parse_head, BodyFraming, HeadLimits};
use smol::channel::{unbounded, Receiver, Sender};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use std::net::SocketAddr;

/// Routes: `GET /hello` → "hello from <name>"; `POST /echo` → the body; `GET /sse` → one SSE
/// event per string the test sends on `sse`, ending on an empty one;
/// `GET /hang` → never answers, and reports on `hang_closed` when the caller drops it;
/// `GET /slow` → "slow" after 50 ms (calls that are in flight when a relay restarts).
pub struct Origin {
    pub addr: SocketAddr,
    pub sse: Sender<String>,
    pub hang_started: Receiver<()>,
    pub hang_closed: Receiver<()>,
    stop: Sender<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.stop.try_send(());
    }
}

struct Chans {
    name: String,
    sse: Receiver<String>,
    hang_started: Sender<()>,
    hang_closed: Sender<()>,
}

impl Origin {
    pub fn spawn(name: &str) -> Origin {
        let std_l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = std_l.local_addr().expect("local addr");
        let (sse_tx, sse_rx) = unbounded();
        let (hs_tx, hs_rx) = unbounded();
        let (hc_tx, hc_rx) = unbounded();
        let (stop_tx, stop_rx) = unbounded::<()>();
        let chans = std::sync::Arc::new(Chans {
            name: name.into(),
            sse: sse_rx,
            hang_started: hs_tx,
            hang_closed: hc_tx,
        });
        std::thread::spawn(move || {
            let ex = smol::LocalExecutor::new();
            smol::block_on(ex.run(async {
                let l = TcpListener::try_from(std_l).expect("async listener");
                let accept = async {
                    while let Ok((s, _)) = l.accept().await {
                        ex.spawn(serve(s, chans.clone())).detach();
                    }
                };
                smol::future::or(accept, async {
                    let _ = stop_rx.recv().await;
                })
                .await;
            }));
        });
        Origin {
            addr,
            sse: sse_tx,
            hang_started: hs_rx,
            hang_closed: hc_rx,
            stop: stop_tx,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn serve(mut s: TcpStream, c: std::sync::Arc<Chans>) {
    let mut buf = Vec::new();
    loop {
        // The head borrows `buf`: keep what is needed of it.
        let (target, framing, n) = loop {
            if let Ok(Some((h, n))) = parse_head(&buf, &HeadLimits::default()) {
                break (h.target.into_owned(), h.body, n);
            }
            let mut tmp = [0u8; 8192];
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(k) => buf.extend_from_slice(&tmp[..k]),
            }
        };
        buf.drain(..n);
        let len = match framing {
            BodyFraming::Length(l) => l as usize,
            _ => 0,
        };
        while buf.len() < len {
            let mut tmp = [0u8; 8192];
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(k) => buf.extend_from_slice(&tmp[..k]),
            }
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        let reply = |ctype: &str, body: &[u8]| {
            let mut r = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            r.extend_from_slice(body);
            r
        };
        if let Some((n, seed, chunked)) = bytes_route(&target) {
            if send_noise(&mut s, n, seed, chunked).await.is_err() {
                return;
            }
            continue;
        }
        match target.as_str() {
            "/hello" => {
                let _ = s
                    .write_all(&reply(
                        "text/plain",
                        format!("hello from {}", c.name).as_bytes(),
                    ))
                    .await;
            }
            "/echo" => {
                let _ = s.write_all(&reply("application/octet-stream", &body)).await;
            }
            "/slow" => {
                smol::Timer::after(std::time::Duration::from_millis(50)).await;
                let _ = s.write_all(&reply("text/plain", b"slow")).await;
            }
            "/sse" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n").await;
                while let Ok(ev) = c.sse.recv().await {
                    if ev.is_empty() {
                        break;
                    }
                    let _ = s
                        .write_all(format!("{:x}\r\n{ev}\r\n", ev.len()).as_bytes())
                        .await;
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
            }
            "/hang" => {
                let _ = c.hang_started.send(()).await;
                let mut tmp = [0u8; 64];
                while let Ok(k) = s.read(&mut tmp).await {
                    if k == 0 {
                        break;
                    }
                }
                let _ = c.hang_closed.send(()).await;
                return;
            }
            _ => {
                let _ = s
                    .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        }
    }
}

/// `/bytes/N/SEED` (content-length) or `/chunked/N/SEED`: N bytes of noise.
fn bytes_route(target: &str) -> Option<(usize, u64, bool)> {
    let (chunked, rest) = if let Some(r) = target.strip_prefix("/bytes/") {
        (false, r)
    } else {
        (true, target.strip_prefix("/chunked/")?)
    };
    let (n, seed) = rest.split_once('/')?;
    Some((n.parse().ok()?, seed.parse().ok()?, chunked))
}

async fn send_noise(s: &mut TcpStream, n: usize, seed: u64, chunked: bool) -> std::io::Result<()> {
    let framing = if chunked {
        "transfer-encoding: chunked".to_string()
    } else {
        format!("content-length: {n}")
    };
    let head =
        format!("HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n{framing}\r\n\r\n");
    s.write_all(head.as_bytes()).await?;
    let mut gen = crate::noise::Noise::new(seed);
    let mut piece = vec![0u8; 64 * 1024];
    let mut left = n;
    while left > 0 {
        let k = left.min(piece.len());
        gen.fill(&mut piece[..k]);
        if chunked {
            s.write_all(format!("{k:x}\r\n").as_bytes()).await?;
        }
        s.write_all(&piece[..k]).await?;
        if chunked {
            s.write_all(b"\r\n").await?;
        }
        left -= k;
    }
    if chunked {
        s.write_all(b"0\r\n\r\n").await?;
    }
    Ok(())
}
