//! A caller's or tunnel's connection: plain TCP, or TLS on rustls driven by
//! hand over the same non-blocking socket. Plain reads and writes go straight
//! to `osaurus_relay_rt::io`; TLS ones pass through the session, which is
//! borrowed only inside one poll, never across an await.

use async_io::Async;
use osaurus_relay_rt::io;
use rustls::ServerConnection;
use std::cell::RefCell;
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::rc::Rc;
use std::task::{Context, Poll};

pub(crate) struct Stream {
    tcp: Async<TcpStream>,
    /// Boxed: a session is over a kilobyte, and most connections are plain.
    tls: Option<Box<RefCell<ServerConnection>>>,
    /// In the open-connections gauge (a metrics scrape is not).
    counted: bool,
}

pub(crate) type Sock = Rc<Stream>;

thread_local! {
    /// Streams alive on this relay thread: callers' connections and tunnels.
    static OPEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Connections open on this relay thread.
pub(crate) fn open_count() -> u64 {
    OPEN.with(|n| n.get())
}

fn opened() {
    OPEN.with(|n| n.set(n.get() + 1));
}

/// Bytes one TLS read may return.
const TLS_READ: usize = 16 * 1024;

impl Stream {
    pub fn plain(tcp: Async<TcpStream>) -> Stream {
        opened();
        Stream {
            tcp,
            tls: None,
            counted: true,
        }
    }

    /// A connection of the relay's own surface, not a caller's or tunnel's.
    pub fn uncounted(tcp: Async<TcpStream>) -> Stream {
        Stream {
            tcp,
            tls: None,
            counted: false,
        }
    }

    /// Completes a TLS handshake on `tcp`; the caller bounds it in time.
    pub async fn accept(tcp: Async<TcpStream>, mut c: ServerConnection) -> std::io::Result<Stream> {
        while c.is_handshaking() {
            flush(&tcp, &mut c).await?;
            if !c.is_handshaking() {
                break;
            }
            match c.read_tls(&mut tcp.get_ref()) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(_) => {
                    if let Err(e) = c.process_new_packets() {
                        // The alert saying why, if the socket takes it.
                        let _ = c.write_tls(&mut tcp.get_ref());
                        return Err(std::io::Error::new(ErrorKind::InvalidData, e));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => tcp.readable().await?,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        flush(&tcp, &mut c).await?;
        opened();
        Ok(Stream {
            tcp,
            tls: Some(Box::new(RefCell::new(c))),
            counted: true,
        })
    }

    /// One non-blocking read; `WouldBlock` when nothing is there.
    pub fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(tls) = &self.tls else {
            return self.tcp.get_ref().read(buf);
        };
        let mut c = tls.borrow_mut();
        loop {
            match c.reader().read(buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                // Closed without close_notify: an end like any other here.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                r => return r,
            }
            match c.read_tls(&mut self.tcp.get_ref()) {
                Ok(_) => {
                    if let Err(e) = c.process_new_packets() {
                        let _ = c.write_tls(&mut self.tcp.get_ref());
                        return Err(std::io::Error::new(ErrorKind::InvalidData, e));
                    }
                    // Post-handshake messages (key updates) go out if there is room.
                    while c.wants_write() && c.write_tls(&mut self.tcp.get_ref()).is_ok() {}
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether this is plain TCP (no TLS session between bytes and socket).
    pub fn is_plain(&self) -> bool {
        self.tls.is_none()
    }

    /// One non-blocking write of a plain connection; `None` on TLS.
    pub fn try_write_plain(&self, data: &[u8]) -> Option<std::io::Result<usize>> {
        self.tls.is_none().then(|| self.tcp.get_ref().write(data))
    }

    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.tcp.poll_readable(cx)
    }

    /// Closes the connection (TLS: with close_notify, if the socket takes it).
    pub fn shutdown(&self, how: Shutdown) {
        if let Some(tls) = &self.tls {
            let mut c = tls.borrow_mut();
            c.send_close_notify();
            while c.wants_write() && c.write_tls(&mut self.tcp.get_ref()).is_ok() {}
        }
        let _ = self.tcp.get_ref().shutdown(how);
    }
}

impl Drop for Stream {
    /// A TLS peer tells a clean end from a cut one by close_notify.
    fn drop(&mut self) {
        if self.counted {
            OPEN.with(|n| n.set(n.get().saturating_sub(1)));
        }
        if let Some(tls) = &self.tls {
            let mut c = tls.borrow_mut();
            c.send_close_notify();
            while c.wants_write() && c.write_tls(&mut self.tcp.get_ref()).is_ok() {}
        }
    }
}

/// Writes what the session has queued, waiting for room as needed.
async fn flush(tcp: &Async<TcpStream>, c: &mut ServerConnection) -> std::io::Result<()> {
    while c.wants_write() {
        match c.write_tls(&mut tcp.get_ref()) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => tcp.writable().await?,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Appends what one read returns to `buf`; `Ok(0)` is end of stream. With
/// `wait_first` (plain only), waits for readiness before the first attempt.
pub(crate) async fn read_more(
    s: &Stream,
    buf: &mut Vec<u8>,
    wait_first: bool,
) -> std::io::Result<usize> {
    if s.tls.is_none() {
        return io::read_more(&s.tcp, buf, wait_first).await;
    }
    // A TLS session may hold decrypted bytes the socket no longer signals.
    std::future::poll_fn(|cx| loop {
        let at = buf.len();
        buf.resize(at + TLS_READ, 0);
        let r = s.try_read(&mut buf[at..]);
        buf.truncate(at + *r.as_ref().unwrap_or(&0));
        match r {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if let Err(e) = std::task::ready!(s.poll_readable(cx)) {
                    return Poll::Ready(Err(e));
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            r => return Poll::Ready(r),
        }
    })
    .await
}

/// Writes all of `data`.
pub(crate) async fn write_all(s: &Stream, mut data: &[u8]) -> std::io::Result<()> {
    let Some(tls) = &s.tls else {
        return io::write_all(&s.tcp, data).await;
    };
    loop {
        let more = {
            let mut c = tls.borrow_mut();
            while !data.is_empty() {
                match c.writer().write(data)? {
                    // The session's buffer is full: send some first.
                    0 => break,
                    n => data = &data[n..],
                }
            }
            c.wants_write()
        };
        if more {
            flush_shared(s, tls).await?;
        }
        if data.is_empty() {
            return Ok(());
        }
    }
}

/// `flush` for a session shared with another task: borrowed per write only.
async fn flush_shared(s: &Stream, tls: &RefCell<ServerConnection>) -> std::io::Result<()> {
    loop {
        let r = {
            let mut c = tls.borrow_mut();
            if !c.wants_write() {
                return Ok(());
            }
            c.write_tls(&mut s.tcp.get_ref())
        };
        match r {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => s.tcp.writable().await?,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `bufs` (plain: one vectored write per batch).
pub(crate) async fn write_all_vectored(
    s: &Stream,
    bufs: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    if s.tls.is_none() {
        return io::write_all_vectored(&s.tcp, bufs).await;
    }
    for b in bufs.iter() {
        write_all(s, b).await?;
    }
    Ok(())
}
