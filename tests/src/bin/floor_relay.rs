//! The floor of a tunnelled relay, for the benchmarks: each caller's request
//! goes over one shared upstream connection to a peer, and the peer's answer
//! comes back the same way, with nothing else: no HTTP beyond finding a
//! head's end, no JSON, no engine, no limits, no deadlines. The same runtime
//! and socket helpers as the relay. Loopback only.
//!
//! floor_relay relay PORT UPSTREAM_ADDR
//! floor_relay upstream PORT SIZE [single]
//!
//! The upstream answers one read's requests in one write, or with `single`
//! each in a write of its own, as the app answers its tunnel.
//!
//! Upstream frames: u32 id, u32 length (little-endian), then the bytes.

use osaurus_relay_rt::io::{read_more, write_all};
use smol::{Async, LocalExecutor};
use std::cell::RefCell;
use std::future::poll_fn;
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::task::{Poll, Waker};

#[derive(Default)]
struct Slot {
    answer: Option<Vec<u8>>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Shared {
    /// Frames for the upstream, written by one task in one write.
    out: Vec<u8>,
    writer: Option<Waker>,
    slots: Vec<Slot>,
    free: Vec<u32>,
}

type Handle = Rc<RefCell<Shared>>;

fn push_frame(out: &mut Vec<u8>, id: u32, bytes: &[u8]) {
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Hands each complete frame at the start of `buf` to `f`; the bytes used.
fn frames(buf: &[u8], mut f: impl FnMut(u32, &[u8])) -> usize {
    let mut at = 0;
    while let Some(h) = buf.get(at..at + 8) {
        let id = u32::from_le_bytes(h[..4].try_into().expect("four bytes"));
        let len = u32::from_le_bytes(h[4..].try_into().expect("four bytes")) as usize;
        let Some(bytes) = buf.get(at + 8..at + 8 + len) else {
            break;
        };
        f(id, bytes);
        at += 8 + len;
    }
    at
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn relay(port: u16, upstream: &str) {
    let ex = LocalExecutor::new();
    smol::block_on(ex.run(async {
        let addr: std::net::SocketAddr = upstream.parse().expect("upstream address");
        let up = Rc::new(Async::<TcpStream>::connect(addr).await.expect("upstream"));
        up.get_ref().set_nodelay(true).expect("nodelay");
        let shared: Handle = Rc::default();
        ex.spawn(writer(up.clone(), shared.clone())).detach();
        ex.spawn(reader(up, shared.clone())).detach();
        let l = Async::<TcpListener>::bind(([127, 0, 0, 1], port)).expect("bind");
        println!("ready");
        while let Ok((s, _)) = l.accept().await {
            let _ = s.get_ref().set_nodelay(true);
            ex.spawn(caller(s, shared.clone())).detach();
        }
    }));
}

async fn writer(up: Rc<Async<TcpStream>>, shared: Handle) {
    let mut buf = Vec::new();
    loop {
        poll_fn(|cx| {
            let mut sh = shared.borrow_mut();
            if sh.out.is_empty() {
                sh.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            std::mem::swap(&mut buf, &mut sh.out);
            Poll::Ready(())
        })
        .await;
        if write_all(&up, &buf).await.is_err() {
            return;
        }
        buf.clear();
    }
}

async fn reader(up: Rc<Async<TcpStream>>, shared: Handle) {
    let mut buf = Vec::new();
    while let Ok(1..) = read_more(&up, &mut buf, true).await {
        let used = frames(&buf, |id, bytes| {
            let mut sh = shared.borrow_mut();
            let slot = &mut sh.slots[id as usize];
            slot.answer = Some(bytes.to_vec());
            if let Some(w) = slot.waker.take() {
                w.wake();
            }
        });
        buf.drain(..used);
    }
}

async fn caller(s: Async<TcpStream>, shared: Handle) {
    let mut buf = Vec::new();
    loop {
        while let Some(end) = head_end(&buf) {
            let id = {
                let mut sh = shared.borrow_mut();
                let id = match sh.free.pop() {
                    Some(id) => id,
                    None => {
                        sh.slots.push(Slot::default());
                        (sh.slots.len() - 1) as u32
                    }
                };
                push_frame(&mut sh.out, id, &buf[..end]);
                if let Some(w) = sh.writer.take() {
                    w.wake();
                }
                id
            };
            buf.drain(..end);
            let answer = poll_fn(|cx| {
                let mut sh = shared.borrow_mut();
                let slot = &mut sh.slots[id as usize];
                match slot.answer.take() {
                    Some(a) => Poll::Ready(a),
                    None => {
                        slot.waker = Some(cx.waker().clone());
                        Poll::Pending
                    }
                }
            })
            .await;
            shared.borrow_mut().free.push(id);
            if write_all(&s, &answer).await.is_err() {
                return;
            }
        }
        match read_more(&s, &mut buf, true).await {
            Ok(1..) => {}
            _ => return,
        }
    }
}

/// Answers every framed request with the same HTTP answer, in one write
/// per read (or per answer, `single`).
fn upstream(port: u16, size: usize, single: bool) {
    let body = "x".repeat(size);
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    smol::block_on(async {
        let l = Async::<TcpListener>::bind(([127, 0, 0, 1], port)).expect("bind");
        println!("ready");
        let Ok((s, _)) = l.accept().await else { return };
        let _ = s.get_ref().set_nodelay(true);
        let (mut buf, mut out) = (Vec::new(), Vec::new());
        let mut ids = Vec::new();
        while let Ok(1..) = read_more(&s, &mut buf, true).await {
            let used = frames(&buf, |id, _| ids.push(id));
            buf.drain(..used);
            for id in ids.drain(..) {
                push_frame(&mut out, id, answer.as_bytes());
                if single {
                    if write_all(&s, &out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
            }
            if !single && write_all(&s, &out).await.is_err() {
                return;
            }
            out.clear();
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = |s: &str| s.parse::<u16>().expect("port");
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["relay", p, up] => relay(port(p), up),
        ["upstream", p, size] => upstream(port(p), size.parse().expect("size"), false),
        ["upstream", p, size, "single"] => upstream(port(p), size.parse().expect("size"), true),
        _ => {
            eprintln!("usage: floor_relay relay PORT UPSTREAM_ADDR | upstream PORT SIZE [single]");
            std::process::exit(2);
        }
    }
}
