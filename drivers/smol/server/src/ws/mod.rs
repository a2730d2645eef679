//! A tunnel's WebSocket: the 101 handshake, then frames both ways. Frames are
//! read straight out of one per-thread buffer and queued frames go out in one
//! write, so an idle tunnel holds neither a read nor a write buffer.

use crate::hub::Shared;
use crate::msg::{Outbox, TunnelMsg};
use crate::stream::{write_all, write_all_vectored, Sock};
use frames::{FrameReader, Msg};
use osaurus_relay_engine::wire::ws::{self as frames, OpCode};
use osaurus_relay_engine::{Input, TunnelId};
use osaurus_relay_rt::wheel::until;
use std::cell::{Cell, RefCell};
use std::io::ErrorKind;
use std::io::IoSlice;
use std::rc::Rc;
use std::task::{ready, Poll};
use std::time::{Duration, Instant};
use tracing::debug;

/// The most one read takes from a tunnel.
const READ_BYTES: usize = 64 * 1024;

/// The largest staging buffer kept for the next batch.
const STAGE_KEPT: usize = 64 * 1024;

thread_local! {
    /// Every tunnel reads into this, one poll at a time.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BYTES]);
    /// A written batch's staging buffer, for the next batch of any tunnel
    /// (a batch written meanwhile takes a new one).
    static STAGE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

#[derive(Clone, Debug)]
pub(crate) struct WsOpts {
    pub max_message: usize,
    /// Bytes a tunnel may send before it authenticates (an auth frame).
    pub pre_auth_bytes: u64,
    /// A write that makes no progress this long drops the tunnel.
    pub write_timeout: Duration,
}

/// How a tunnel ends.
enum End {
    /// The socket failed or closed: nothing more to say.
    Gone,
    /// Send this close frame, then close.
    Close(u16, &'static str),
    /// The client closed: answer with its code.
    Answer(Option<u16>),
}

/// What an upgrade starts with and an idle tunnel no longer needs: boxed,
/// so the tunnel's task keeps one pointer to it, not the key and buffer.
pub(crate) struct Start {
    /// Bytes read after the upgrade request: the first frames, if any.
    pub leftover: Vec<u8>,
    /// The client's `Sec-WebSocket-Key`.
    pub key: String,
}

/// What a tunnel's task and its two loops share: each loop's future holds
/// one reference to it, not five (every idle tunnel's task is this small).
pub(crate) struct Link {
    pub core: Shared,
    pub s: Sock,
    pub tunnel: TunnelId,
    pub out: Rc<Outbox>,
    pub o: Rc<WsOpts>,
}

/// Completes the upgrade of `t.s` and runs the tunnel until either side closes.
pub(crate) async fn accept(t: Link, start: Box<Start>) {
    t.out.budget.set(t.o.pre_auth_bytes);
    let upgraded = {
        // Scoped: the 101 head does not stay in an idle tunnel's state.
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
            derive_accept_key(start.key.as_bytes())
        );
        let deadline = Instant::now() + t.o.write_timeout;
        matches!(
            Box::pin(until(deadline, write_all(&t.s, head.as_bytes()))).await,
            Some(Ok(()))
        )
    };
    if upgraded {
        let end = {
            let writer = write_loop(&t);
            let reader = read_loop(&t, start);
            smol::future::or(writer, reader).await
        };
        let close = match end {
            End::Gone => None,
            End::Close(code, reason) => Some((code, reason)),
            // Echo the client's code when it may be sent (RFC 6455 7.4), else 1000.
            End::Answer(code) => Some((code.filter(|c| sendable(*c)).unwrap_or(1000), "")),
        };
        if let Some((code, reason)) = close {
            let mut f = Vec::with_capacity(4 + reason.len());
            frames::encode(
                &mut f,
                OpCode::Close,
                &[&code.to_be_bytes(), reason.as_bytes()],
                2 + reason.len(),
            );
            let _ = Box::pin(until(
                Instant::now() + t.o.write_timeout,
                write_all(&t.s, &f),
            ))
            .await;
        }
    }
    t.s.shutdown(std::net::Shutdown::Both);
    let mut c = t.core.borrow_mut();
    c.handle(Input::TunnelClosed { tunnel: t.tunnel });
    c.end_tunnel(t.tunnel);
}

/// Waits for frames to send; each batch is written by a boxed future, so a
/// write's buffers, slices and timer exist only while it runs, not in every
/// idle tunnel's task.
async fn write_loop(t: &Link) -> End {
    loop {
        let batch = t.out.mail.take_all().await;
        if let Some(end) = Box::pin(write_batch(t, batch)).await {
            return end;
        }
    }
}

/// Everything queued goes out in one write: one syscall for many frames
/// under load; large frames go vectored, not copied next to their headers.
async fn write_batch(t: &Link, batch: std::collections::VecDeque<TunnelMsg>) -> Option<End> {
    let batch = Vec::from(batch);
    // Headers and small frames are staged in the thread's staging buffer;
    // with a large frame, each part is a staged range or a frame's text.
    let room = batch.iter().map(|m| match m {
        TunnelMsg::Frame(f) if f.len() >= SEPARATE_FRAME => 14,
        TunnelMsg::Frame(f) => 14 + f.len(),
        TunnelMsg::Pong(p) => 14 + p.len(),
        TunnelMsg::Close(..) => 0,
    });
    let mut staged = STAGE.take();
    staged.reserve(room.sum());
    let mut parts = Vec::new();
    let (mut from, mut text_bytes, mut close) = (0, 0u64, None);
    for (i, m) in batch.iter().enumerate() {
        match m {
            TunnelMsg::Frame(f) if f.len() >= SEPARATE_FRAME => {
                text_bytes += f.len() as u64;
                frames::encode(&mut staged, OpCode::Text, &[], f.len());
                parts.push(Part::Staged(from..staged.len()));
                parts.push(Part::Text(i));
                from = staged.len();
            }
            TunnelMsg::Frame(f) => {
                text_bytes += f.len() as u64;
                frames::encode(&mut staged, OpCode::Text, &[f.as_bytes()], f.len());
            }
            TunnelMsg::Pong(p) => frames::encode(&mut staged, OpCode::Pong, &[p], p.len()),
            TunnelMsg::Close(code, reason) => {
                close = Some(End::Close(*code, reason));
                break;
            }
        }
    }
    let deadline = Instant::now() + t.o.write_timeout;
    let wrote = if parts.is_empty() {
        // Small frames only (the common batch): one buffer, one write.
        until(deadline, write_all(&t.s, &staged)).await
    } else {
        if from < staged.len() {
            parts.push(Part::Staged(from..staged.len()));
        }
        let mut slices: Vec<IoSlice<'_>> = parts
            .iter()
            .map(|p| match p {
                Part::Staged(r) => IoSlice::new(&staged[r.clone()]),
                Part::Text(i) => match &batch[*i] {
                    TunnelMsg::Frame(f) => IoSlice::new(f.as_bytes()),
                    _ => IoSlice::new(&[]),
                },
            })
            .collect();
        until(deadline, write_all_vectored(&t.s, &mut slices)).await
    };
    if !matches!(wrote, Some(Ok(()))) {
        return Some(End::Gone);
    }
    if staged.capacity() <= STAGE_KEPT {
        staged.clear();
        STAGE.set(staged);
    }
    let mut c = t.core.borrow_mut();
    // The frames' buffers go back to the engine for the next frames.
    for m in batch {
        if let TunnelMsg::Frame(f) = m {
            c.recycle(f.into_bytes());
        }
    }
    if text_bytes > 0 {
        c.handle(Input::TunnelDrained {
            tunnel: t.tunnel,
            bytes: text_bytes,
        });
    }
    close
}

/// Frames at least this large are written from the engine's string itself.
const SEPARATE_FRAME: usize = 4096;

/// A piece of one vectored write.
enum Part {
    Staged(std::ops::Range<usize>),
    Text(usize),
}

async fn read_loop(t: &Link, start: Box<Start>) -> End {
    // Out of a temporary box, freed with the key at the statement's end: a
    // partial move from `start` itself would keep both until the tunnel ends.
    let mut leftover = std::convert::identity(start).leftover;
    let mut reader = FrameReader::new(t.o.max_message);
    let closed_by_client = Cell::new(None);
    let mut on = |m: Msg<'_>| match m {
        Msg::Text(text) => (t.core.borrow_mut()).handle(Input::TunnelText {
            tunnel: t.tunnel,
            text,
        }),
        Msg::Binary => (t.core.borrow_mut()).handle(Input::TunnelBinary { tunnel: t.tunnel }),
        Msg::Ping(p) => t.out.push(TunnelMsg::Pong(p.to_vec())),
        Msg::Close(code) => closed_by_client.set(Some(code)),
    };
    if !leftover.is_empty() {
        if let Err(end) = spend(&t.out, leftover.len()) {
            return end;
        }
        match reader.feed(&mut leftover, &mut on) {
            Ok(true) => return End::Answer(closed_by_client.get().flatten()),
            Ok(false) => {}
            Err(f) => return fault(f),
        }
        drop(leftover);
    }
    // After a short read of plain TCP the socket is most likely empty:
    // wait for readiness instead of a read that fails with EAGAIN.
    let (mut wait, mut reads) = (false, 0u32);
    loop {
        let step = std::future::poll_fn(|cx| loop {
            if wait {
                if let Err(e) = ready!(t.s.poll_readable(cx)) {
                    debug!(tunnel = t.tunnel.0, error = %e, "tunnel poll failed");
                    return Poll::Ready(Err(End::Gone));
                }
                wait = false;
            }
            let r = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                match t.s.try_read(&mut scratch[..]) {
                    Ok(0) => Some(Err(End::Gone)),
                    Ok(n) => Some(match spend(&t.out, n) {
                        Err(end) => Err(end),
                        Ok(()) => {
                            // The read's chunks for one caller leave in one write.
                            t.core.borrow_mut().begin_batch();
                            let fed = reader.feed(&mut scratch[..n], &mut on);
                            t.core.borrow_mut().end_batch();
                            match fed {
                                Ok(true) => Err(End::Answer(None)),
                                Ok(false) => Ok(n),
                                Err(f) => Err(fault(f)),
                            }
                        }
                    }),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => None,
                    Err(e) if e.kind() == ErrorKind::Interrupted => Some(Ok(0)),
                    Err(e) => {
                        debug!(tunnel = t.tunnel.0, error = %e, "tunnel read failed");
                        Some(Err(End::Gone))
                    }
                }
            });
            match r {
                Some(r) => return Poll::Ready(r),
                None => wait = true,
            }
        });
        let n = match step.await {
            Ok(n) => n,
            Err(End::Answer(_)) => return End::Answer(closed_by_client.get().flatten()),
            Err(end) => return end,
        };
        wait = t.s.is_plain() && n > 0 && n < READ_BYTES;
        reads = reads.wrapping_add(1);
        // Callers this read handed chunks to get to write before the next
        // read (chunks written straight to their sockets need no turn), and
        // a busy tunnel lets other tasks run now and then.
        if t.core.borrow_mut().take_fed() || reads % 16 == 0 {
            smol::future::yield_now().await;
        }
    }
}

/// Close codes an endpoint may put in a close frame.
fn sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Counts bytes read against the pre-auth budget.
fn spend(out: &Outbox, n: usize) -> Result<(), End> {
    let left = out.budget.get();
    if left == u64::MAX {
        return Ok(());
    }
    match left.checked_sub(n as u64) {
        Some(l) => {
            out.budget.set(l);
            Ok(())
        }
        None => Err(fault(frames::Fault::TooBig)),
    }
}

fn fault(f: frames::Fault) -> End {
    let (code, reason) = f.close();
    End::Close(code, reason)
}

/// `Sec-WebSocket-Accept` for a client's key (RFC 6455 4.2.2).
fn derive_accept_key(key: &[u8]) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut h = sha1::Sha1::new();
    h.update(key);
    h.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_codes_allowed_on_the_wire_are_echoed() {
        for c in [1000, 1001, 1003, 1007, 1011, 1014, 3000, 4000, 4999] {
            assert!(super::sendable(c), "{c}");
        }
        for c in [0, 999, 1004, 1005, 1006, 1015, 2000, 2999, 5000, u16::MAX] {
            assert!(!super::sendable(c), "{c}");
        }
    }
}
