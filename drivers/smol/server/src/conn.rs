//! One caller connection: HTTP/1.1 requests in, engine outputs out.

use crate::hub::Shared;
use crate::msg::{CallBox, CallMsg, Direct};
use crate::stream::{read_more, write_all, write_all_vectored, Sock, Stream};
use osaurus_relay_engine::fields::Span;
use osaurus_relay_engine::http::Response;
use osaurus_relay_engine::wire::http1::{
    self, BodyFraming, ChunkedDecoder, Decoded, HeadLimits, ResponseFraming,
};
use osaurus_relay_engine::{CallError, CallId, Http1Answer, Input, RequestHead};
use osaurus_relay_rt::mailbox::Mailbox;
use osaurus_relay_rt::wheel::until;
use smol::future::FutureExt;
use std::cell::Cell;
use std::io::IoSlice;
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Driver-side limits of a caller connection.
#[derive(Clone)]
pub(crate) struct ConnOpts {
    /// Where an upgraded connection's tunnel task is spawned.
    pub ex: &'static smol::LocalExecutor<'static>,
    pub head: HeadLimits,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// Longest wait for progress while reading a body or writing an answer.
    pub io_timeout: Duration,
    /// Longest time a whole request body may take to arrive.
    pub body_timeout: Duration,
    /// A rejected caller's write deadline, then how long it is drained.
    pub reject_linger: Duration,
    pub ws: Rc<crate::ws::WsOpts>,
}

/// Bodies at least this large are not copied next to their head.
const SEPARATE_BODY: usize = 4096;

/// Queued stream chunks written to a caller in one write, at most (roughly).
const COALESCE_BYTES: usize = 64 * 1024;

enum HeadRead<T> {
    Head(T, usize),
    /// Closed, or idle too long between requests: close quietly.
    Gone,
    Reject(CallError),
}

/// Reads until a whole head is in `buf`, then hands it to `on_head` (the
/// head borrows `buf`, so the call starts before the bytes are dropped).
async fn read_head<T>(
    s: &Stream,
    buf: &mut Vec<u8>,
    spans: &mut Vec<Span>,
    o: &ConnOpts,
    first: bool,
    on_head: impl FnOnce(http1::RequestHead<'_>) -> T,
) -> HeadRead<T> {
    let started = !buf.is_empty();
    let mut deadline = Instant::now()
        + if started {
            o.header_timeout
        } else {
            o.idle_timeout
        };
    let mut started = started;
    loop {
        if !buf.is_empty() {
            if !started {
                started = true;
                deadline = Instant::now() + o.header_timeout;
            }
            match http1::parse_head_in(buf, &o.head, spans) {
                Ok(Some((h, n))) => return HeadRead::Head(on_head(h), n),
                Ok(None) => {}
                Err(e) => return HeadRead::Reject(e.call_error()),
            }
        }
        // A new connection's request is usually there already; between
        // requests the caller is usually still reading our answer.
        match until(deadline, read_more(s, buf, !started && !first)).await {
            Some(Ok(0)) | Some(Err(_)) => return HeadRead::Gone,
            Some(Ok(_)) => {}
            None if started => return HeadRead::Reject(CallError::RequestTimeout),
            None => return HeadRead::Gone,
        }
    }
}

/// What an exchange needs of its head once the engine has it.
struct Started {
    call: CallId,
    rx: Rc<CallBox>,
    body: BodyFraming,
    keep_alive: bool,
    minor: u8,
    expect_continue: bool,
    is_head: bool,
    ws_key: Option<String>,
}

/// A new call for head `h`: the engine reads the head where it lies.
fn start(
    (core, s, peer): (&Shared, &Sock, SocketAddr),
    h: http1::RequestHead<'_>,
    reuse: Option<Rc<CallBox>>,
) -> Started {
    let (call, rx) = core.borrow_mut().new_call(s, reuse);
    let body_follows = match h.body {
        BodyFraming::None | BodyFraming::Length(0) => false,
        BodyFraming::Length(_) | BodyFraming::Chunked => true,
    };
    let hop = core.borrow().hop(h.headers);
    let head = RequestHead {
        method: h.method,
        target: &h.target,
        host: h.host,
        headers: h.headers,
        peer: peer.ip(),
        content_length: match h.body {
            BodyFraming::Length(n) => Some(n),
            _ => None,
        },
        body_follows,
        websocket: h.websocket_key.is_some(),
        hop,
        // The engine writes a tunnel's complete answers itself.
        http1: Some(Http1Answer {
            minor_version: h.minor_version,
            keep_alive: h.keep_alive,
            head_request: h.method == "HEAD",
        }),
    };
    core.borrow_mut().handle(Input::CallHead { call, head });
    Started {
        call,
        rx,
        body: if body_follows {
            h.body
        } else {
            BodyFraming::None
        },
        keep_alive: h.keep_alive,
        minor: h.minor_version,
        expect_continue: h.expect_continue,
        is_head: h.method == "HEAD",
        ws_key: h.websocket_key.map(str::to_owned),
    }
}

/// Writes a relay error and closes, reading a little first so the caller sees it.
async fn reject(s: &Stream, why: CallError, linger_for: Duration) {
    let mut out = Vec::new();
    let r = why.response();
    http1::write_head(
        &mut out,
        r.status,
        &r.headers,
        ResponseFraming::Length(r.body.len() as u64),
        false,
        1,
    );
    out.extend_from_slice(&r.body);
    let deadline = Instant::now() + linger_for;
    if until(deadline, write_all(s, &out)).await.is_some() {
        linger(s, linger_for).await;
    }
}

/// Half-closes, then drains for a while: closing with unread input would
/// reset the connection and could destroy the answer before the caller reads it.
async fn linger(s: &Stream, linger_for: Duration) {
    s.shutdown(Shutdown::Write);
    let deadline = Instant::now() + linger_for;
    let mut sink = Vec::new();
    while let Some(Ok(n)) = until(deadline, read_more(s, &mut sink, false)).await {
        if n == 0 {
            break;
        }
        sink.clear();
    }
}

pub(crate) async fn serve(core: Shared, s: Sock, peer: SocketAddr, o: Rc<ConnOpts>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut first = true;
    // The last call's mailbox: a keep-alive caller's next call reuses it.
    let mut last: Option<Rc<CallBox>> = None;
    let mut slot = None;
    // Where the last head's fields lay: the next head's take their place.
    let mut spans = Vec::new();
    loop {
        let conn = Conn {
            core: &core,
            s: &s,
            o: &o,
        };
        let reuse = last.take();
        let started = match read_head(&s, &mut buf, &mut spans, &o, first, |h| {
            start((&core, &s, peer), h, reuse)
        })
        .await
        {
            HeadRead::Head(started, n) => {
                buf.drain(..n);
                started
            }
            HeadRead::Gone => return,
            HeadRead::Reject(why) => return reject(&s, why, o.reject_linger).await,
        };
        first = false;
        let (call, rx) = (started.call, started.rx.clone());
        // Boxed: a connection waiting for its first request (a tunnel's
        // upgrade still arriving) holds only this loop's state, not the
        // exchange's writers and timers (976 bytes). A keep-alive caller's
        // next exchange takes its last one's place: 64 callers' boxes freed
        // and taken each turn had sent glibc through its slow path.
        let exchanged = exchange_owned(conn, std::mem::take(&mut buf), started);
        let (next, b) = osaurus_relay_rt::reuse::place(&mut slot, exchanged).await;
        buf = b;
        core.borrow_mut().end_call(call);
        match next {
            // Only this task holds it now (the hub let go in `end_call`).
            Next::KeepAlive => last = (Rc::strong_count(&rx) == 1).then_some(rx),
            Next::Close => return,
            Next::Linger => return linger(&s, o.reject_linger).await,
            Next::Reject(why) => return reject(&s, why, o.reject_linger).await,
            Next::Upgrade(tunnel, trx, key) => {
                // Its box borrows what the tunnel takes over.
                drop(slot);
                // The read buffer lives on inside the tunnel: keep only its bytes.
                buf.shrink_to_fit();
                // A task of its own: this connection's HTTP state is freed, and
                // an idle tunnel holds only what the tunnel needs.
                let start = Box::new(crate::ws::Start { leftover: buf, key });
                let link = crate::ws::Link {
                    core,
                    s,
                    tunnel,
                    out: trx,
                    o: o.ws.clone(),
                };
                let accept = crate::ws::accept(link, start);
                o.ex.spawn(accept).detach();
                return;
            }
        }
    }
}

/// [`exchange`] owning the read buffer: the future's type does not borrow
/// the loop's state, so one box holds every exchange of a connection.
async fn exchange_owned(conn: Conn<'_>, mut buf: Vec<u8>, h: Started) -> (Next, Vec<u8>) {
    let next = exchange(conn, &mut buf, h).await;
    (next, buf)
}

enum Next {
    KeepAlive,
    Close,
    Linger,
    Reject(CallError),
    Upgrade(
        osaurus_relay_engine::TunnelId,
        Rc<crate::msg::Outbox>,
        String,
    ),
}

enum BodyEnd {
    Complete,
    /// The engine answered before the body ended (413, 429...).
    Answered,
    Gone,
    Bad(CallError),
}

/// A caller connection, as one exchange on it sees it.
#[derive(Clone, Copy)]
struct Conn<'a> {
    core: &'a Shared,
    s: &'a Stream,
    o: &'a ConnOpts,
}

async fn exchange(conn: Conn<'_>, buf: &mut Vec<u8>, h: Started) -> Next {
    let Conn { core, s, o, .. } = conn;
    let (call, rx) = (h.call, &*h.rx);
    let body_follows = h.body != BodyFraming::None;
    let is_head = h.is_head;
    let (keep_alive, minor) = (h.keep_alive, h.minor);
    let ws_key = h.ws_key;
    let mut answered_early = false;
    if body_follows {
        if h.expect_continue && rx.mail.is_empty() {
            let _ = write_all(s, b"HTTP/1.1 100 Continue\r\n\r\n").await;
        }
        match read_body(core, s, buf, h.body, call, &rx.mail, o).await {
            BodyEnd::Complete => core.borrow_mut().handle(Input::CallBodyEnd { call }),
            BodyEnd::Answered => answered_early = true,
            BodyEnd::Gone => {
                core.borrow_mut().handle(Input::CallGone { call });
                return Next::Close;
            }
            BodyEnd::Bad(why) => {
                core.borrow_mut().handle(Input::CallGone { call });
                return Next::Reject(why);
            }
        }
    }
    let w = Writer {
        is_head,
        keep_alive: keep_alive && !answered_early,
        minor,
    };
    let next = answer(core, s, buf, call, rx, &w, o).await;
    match next {
        Next::Upgrade(t, trx, _) => Next::Upgrade(t, trx, ws_key.unwrap_or_default()),
        // The unread rest of the body is still coming: drain before closing.
        Next::KeepAlive | Next::Close if answered_early => Next::Linger,
        other => other,
    }
}

async fn read_body(
    core: &Shared,
    s: &Stream,
    buf: &mut Vec<u8>,
    framing: BodyFraming,
    call: CallId,
    rx: &Mailbox<CallMsg>,
    o: &ConnOpts,
) -> BodyEnd {
    let mut remaining = match framing {
        BodyFraming::Length(n) => Some(n),
        _ => None,
    };
    let mut decoder = ChunkedDecoder::new();
    // A total deadline, not one per read: a trickle of one byte now and then
    // must not pin a buffered body for hours.
    let body_deadline = Instant::now() + o.body_timeout;
    loop {
        if !rx.is_empty() {
            return BodyEnd::Answered;
        }
        let mut need_more = buf.is_empty();
        if !buf.is_empty() {
            match remaining.as_mut() {
                Some(left) => {
                    let take = (*left).min(buf.len() as u64) as usize;
                    core.borrow_mut().handle(Input::CallBody {
                        call,
                        chunk: &buf[..take],
                    });
                    buf.drain(..take);
                    *left -= take as u64;
                    if *left == 0 {
                        return BodyEnd::Complete;
                    }
                    need_more = true;
                }
                None => match decoder.decode(buf) {
                    Ok(Decoded::Data { consumed, data }) => {
                        core.borrow_mut().handle(Input::CallBody {
                            call,
                            chunk: &buf[data],
                        });
                        buf.drain(..consumed);
                    }
                    Ok(Decoded::NeedMore { consumed }) => {
                        buf.drain(..consumed);
                        need_more = true;
                    }
                    Ok(Decoded::Done { consumed }) => {
                        buf.drain(..consumed);
                        return BodyEnd::Complete;
                    }
                    Err(_) => return BodyEnd::Bad(CallError::BadChunkedBody),
                },
            }
        }
        if need_more && !rx.is_empty() {
            return BodyEnd::Answered;
        }
        if need_more {
            let deadline = body_deadline.min(Instant::now() + o.io_timeout);
            match until(deadline, read_more(s, buf, false)).await {
                Some(Ok(0)) | Some(Err(_)) => return BodyEnd::Gone,
                Some(Ok(_)) => {}
                None => return BodyEnd::Bad(CallError::RequestTimeout),
            }
        }
    }
}

struct Writer {
    is_head: bool,
    keep_alive: bool,
    minor: u8,
}

impl Writer {
    /// The head, with the body appended unless it is large enough to go
    /// out by itself in the same vectored write (then `true`).
    fn full(&self, r: &Response) -> (Vec<u8>, bool) {
        let (framing, send_body) = http1::complete_framing(r.status, r.body.len(), self.is_head);
        let apart = send_body && r.body.len() >= SEPARATE_BODY;
        let inline = if send_body && !apart { r.body.len() } else { 0 };
        let mut out = Vec::with_capacity(256 + inline);
        http1::write_head(
            &mut out,
            r.status,
            &r.headers,
            framing,
            self.keep_alive,
            self.minor,
        );
        if send_body && !apart {
            out.extend_from_slice(&r.body);
        }
        (out, apart)
    }

    fn chunked(&self) -> bool {
        self.minor >= 1
    }
}

/// Writes a complete response the driver frames.
async fn respond(s: &Stream, w: &Writer, r: Response, deadline: Instant) -> Next {
    let (head, apart) = w.full(&r);
    let mut both = [IoSlice::new(&head), IoSlice::new(&r.body)];
    let parts = if apart { &mut both[..] } else { &mut both[..1] };
    match until(deadline, write_all_vectored(s, parts)).await {
        Some(Ok(())) if w.keep_alive => Next::KeepAlive,
        _ => Next::Close,
    }
}

/// While a caller's task waits mid-stream, the hub may write its chunks;
/// never once it stops waiting (however it stops).
struct Idle<'a>(&'a Cell<Direct>);

impl<'a> Idle<'a> {
    fn new(cell: &'a Cell<Direct>, direct: Direct) -> Self {
        cell.set(direct);
        Idle(cell)
    }
}

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.0.set(Direct::Off);
    }
}

enum Event {
    Msg(Option<CallMsg>),
    Read(std::io::Result<usize>),
}

/// Waits for the engine's answer while watching the caller for hang-ups.
async fn answer(
    core: &Shared,
    s: &Stream,
    buf: &mut Vec<u8>,
    call: CallId,
    calls: &CallBox,
    w: &Writer,
    o: &ConnOpts,
) -> Next {
    let rx = &calls.mail;
    // A message taken from the queue while coalescing chunks, still to handle.
    let mut pending: Option<CallMsg> = None;
    // Once the head is out, how the hub may write chunks while this task waits.
    let mut direct = Direct::Off;
    // One framing buffer for the whole answer: a token stream writes many
    // small chunks, and a fresh buffer per chunk cost a malloc and a free.
    let mut out = Vec::new();
    loop {
        let ev = if let Some(m) = pending.take() {
            Event::Msg(Some(m))
        } else if buf.len() < o.head.max_head_bytes {
            let _idle = Idle::new(&calls.direct, direct);
            // Watching for a hang-up only waits for readiness: no read per call.
            async { Event::Msg(Some(rx.recv().await)) }
                .or(async { Event::Read(read_more(s, buf, true).await) })
                .await
        } else {
            let _idle = Idle::new(&calls.direct, direct);
            Event::Msg(Some(rx.recv().await))
        };
        let msg = match ev {
            Event::Read(Ok(0)) | Event::Read(Err(_)) => {
                // Caller hung up (or half-closed): nothing more can be delivered.
                core.borrow_mut().handle(Input::CallGone { call });
                return Next::Close;
            }
            Event::Read(Ok(_)) => continue,
            Event::Msg(None) => return Next::Close,
            Event::Msg(Some(m)) => m,
        };
        let deadline = Instant::now() + o.io_timeout;
        let ok = match msg {
            CallMsg::Answer(bytes, keep_alive) => {
                let wrote = until(deadline, write_all(s, &bytes)).await;
                core.borrow_mut().recycle(bytes);
                return match wrote {
                    Some(Ok(())) if keep_alive && w.keep_alive => Next::KeepAlive,
                    _ => Next::Close,
                };
            }
            // Boxed: the relay's own answers are the rare ones, and their
            // writer would make every exchange larger.
            CallMsg::Respond(r) => return Box::pin(respond(s, w, r, deadline)).await,
            CallMsg::Start(head) => {
                let framing = if w.chunked() {
                    ResponseFraming::Chunked
                } else {
                    ResponseFraming::CloseDelimited
                };
                let mut out = Vec::with_capacity(256);
                http1::write_head(
                    &mut out,
                    head.status,
                    &head.headers,
                    framing,
                    w.keep_alive && w.chunked(),
                    w.minor,
                );
                let wrote = until(deadline, write_all(s, &out)).await;
                if s.is_plain() && !w.is_head {
                    direct = if w.chunked() {
                        Direct::Chunked
                    } else {
                        Direct::Raw
                    };
                }
                wrote
            }
            m @ (CallMsg::Chunk(_) | CallMsg::Framed(..)) => {
                // Every chunk already queued goes out in one write.
                out.clear();
                let (mut n, mut next) = (0u64, Some(m));
                while let Some(m) = next.take() {
                    match m {
                        CallMsg::Framed(rest, k) => {
                            n += k;
                            out.extend_from_slice(&rest);
                        }
                        CallMsg::Chunk(d) => {
                            n += d.len() as u64;
                            if w.is_head {
                            } else if w.chunked() {
                                http1::write_chunk(&mut out, &d);
                            } else {
                                out.extend_from_slice(&d);
                            }
                        }
                        other => {
                            pending = Some(other);
                            break;
                        }
                    }
                    if out.len() < COALESCE_BYTES {
                        next = rx.try_recv();
                    }
                }
                let r = if out.is_empty() {
                    Some(Ok(()))
                } else {
                    until(deadline, write_all(s, &out)).await
                };
                core.borrow_mut()
                    .handle(Input::CallDrained { call, bytes: n });
                r
            }
            CallMsg::End => {
                if !w.chunked() || w.is_head {
                    return if w.is_head && w.keep_alive && w.chunked() {
                        Next::KeepAlive
                    } else {
                        Next::Close
                    };
                }
                return match until(deadline, write_all(s, http1::LAST_CHUNK)).await {
                    Some(Ok(())) if w.keep_alive => Next::KeepAlive,
                    _ => Next::Close,
                };
            }
            CallMsg::Abort => return Next::Close,
            CallMsg::Upgrade(t, trx) => return Next::Upgrade(t, trx, String::new()),
        };
        if !matches!(ok, Some(Ok(()))) {
            core.borrow_mut().handle(Input::CallGone { call });
            return Next::Close;
        }
    }
}
