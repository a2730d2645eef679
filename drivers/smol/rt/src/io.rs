//! Socket reads and writes on async-io directly, and deadlines. A keep-alive caller that has
//! just been answered has not sent its next request yet: waiting for
//! readiness before reading saves a read failing with EAGAIN on every call,
//! and async-io's single waker slot keeps the interest armed across calls
//! (async-net's streams re-register it whenever a clone is dropped).

use async_io::Async;
use futures_util::FutureExt as _;
use smol::future::FutureExt;
use std::cell::RefCell;
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::task::{ready, Poll};
use std::time::Instant;

/// Runs `fut` until `deadline`; `None` if the deadline came first.
/// Combinators, not async blocks: `fut` is stored once, which keeps every
/// connection's and tunnel's task small.
pub fn until<T>(
    deadline: Instant,
    fut: impl std::future::Future<Output = T>,
) -> impl std::future::Future<Output = Option<T>> {
    fut.map(Some)
        .or(async_io::Timer::at(deadline).map(|_| None))
}

pub type Sock = Rc<Async<TcpStream>>;

/// Bytes one read may return.
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// One read buffer per thread, borrowed only within a single poll: no
    /// per-connection buffer, and no zeroing of fresh memory on every read.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// Appends what one read returns to `buf`; `Ok(0)` is end of stream. With
/// `wait_first`, waits for readiness before the first attempt.
/// Cancel-safe: bytes reach `buf` only in the poll that returns them.
pub fn read_more<'a>(
    s: &'a Async<TcpStream>,
    buf: &'a mut Vec<u8>,
    wait_first: bool,
) -> impl std::future::Future<Output = std::io::Result<usize>> + 'a {
    let mut ready = !wait_first;
    std::future::poll_fn(move |cx| loop {
        if !ready {
            ready!(s.poll_readable(cx))?;
            ready = true;
        }
        let r = SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let r = s.get_ref().read(&mut scratch[..]);
            if let Ok(n) = r {
                buf.extend_from_slice(&scratch[..n]);
            }
            r
        });
        match r {
            Err(e) if e.kind() == ErrorKind::WouldBlock => ready = false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            r => return Poll::Ready(r),
        }
    })
}

/// Writes all of `data`, waiting for room when the socket's buffer is full.
pub async fn write_all(s: &Async<TcpStream>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        match s.get_ref().write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => s.writable().await?,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Slices handed to one `writev`, at most (the kernel refuses more than 1024).
const MAX_SLICES: usize = 512;

/// Writes all of `bufs` with vectored writes: large bodies go out without
/// first being copied next to their heads.
pub async fn write_all_vectored(
    s: &Async<TcpStream>,
    mut bufs: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    // One slice: a plain send, cheaper in the kernel than writev.
    if let [one] = bufs {
        return write_all(s, one).await;
    }
    while !bufs.is_empty() {
        let n = bufs.len().min(MAX_SLICES);
        match s.get_ref().write_vectored(&bufs[..n]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(k) => IoSlice::advance_slices(&mut bufs, k),
            Err(e) if e.kind() == ErrorKind::WouldBlock => s.writable().await?,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
