//! A tunnel's WebSocket: the 101 handshake, then frames both ways.

use crate::conn::until;
use crate::core::{Shared, TunnelMsg};
use crate::sock::{write_all, Sock};
use async_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_util::SinkExt;
use osaurus_relay_engine::{Input, TunnelId};
use smol::channel::Receiver;
use smol::future::FutureExt;
use smol::io::{AsyncRead, AsyncWrite};
use smol::stream::StreamExt;
use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tracing::debug;

/// Frames read from a tunnel between yields to the other tasks.
const YIELD_EVERY: u32 = 16;

/// Frames written to a tunnel per flush, at most (roughly).
const BATCH_BYTES: u64 = 64 * 1024;

#[derive(Clone, Debug)]
pub(crate) struct WsOpts {
    pub max_message: usize,
    /// Bytes a tunnel may send before it authenticates (an auth frame).
    pub pre_auth_bytes: u64,
    /// A write that makes no progress this long drops the tunnel.
    pub write_timeout: Duration,
}

/// Small buffers: most tunnels idle, and memory per idle tunnel matters.
fn ws_config(o: &WsOpts) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(BATCH_BYTES as usize)
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(o.max_message))
        .max_frame_size(Some(o.max_message))
}

/// Completes the upgrade of `s` and runs the tunnel until either side closes.
pub(crate) async fn accept(
    core: Shared,
    s: Sock,
    leftover: Vec<u8>,
    tunnel: TunnelId,
    rx: Receiver<TunnelMsg>,
    key: String,
    o: WsOpts,
) {
    let o = &o;
    let budget = Rc::new(Cell::new(
        o.pre_auth_bytes.saturating_sub(leftover.len() as u64),
    ));
    core.borrow_mut()
        .set_tunnel_socket(tunnel, &s, budget.clone());
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    let wrote = until(
        Instant::now() + o.write_timeout,
        write_all(&s, head.as_bytes()),
    )
    .await;
    if matches!(wrote, Some(Ok(()))) {
        let metered = Metered {
            inner: s.clone(),
            left: budget.clone(),
        };
        let ws = WebSocketStream::from_partially_read(
            metered,
            leftover,
            Role::Server,
            Some(ws_config(o)),
        )
        .await;
        run(&core, tunnel, ws, rx, o, &budget).await;
    }
    let _ = s.get_ref().shutdown(std::net::Shutdown::Both);
    let mut c = core.borrow_mut();
    c.handle(Input::TunnelClosed { tunnel });
    c.end_tunnel(tunnel);
}

enum End {
    Done,
    TooBig,
}

async fn run(
    core: &Shared,
    tunnel: TunnelId,
    ws: WebSocketStream<Metered>,
    rx: Receiver<TunnelMsg>,
    o: &WsOpts,
    budget: &Cell<u64>,
) {
    let (mut tx_ws, mut rx_ws) = ws.split();
    let end = {
        let writer = async {
            // Everything already queued goes out with one flush: one write
            // syscall for many frames under load.
            'frames: while let Ok(first) = rx.recv().await {
                let deadline = Instant::now() + o.write_timeout;
                let (mut next, mut bytes, mut close) = (Some(first), 0u64, None);
                while let Some(msg) = next.take() {
                    match msg {
                        TunnelMsg::Frame(text) => {
                            bytes += text.len() as u64;
                            let fed =
                                until(deadline, SinkExt::feed(&mut tx_ws, Message::text(text)))
                                    .await;
                            if !matches!(fed, Some(Ok(()))) {
                                break 'frames;
                            }
                        }
                        TunnelMsg::Close(code, reason) => close = Some((code, reason)),
                    }
                    if close.is_none() && bytes < BATCH_BYTES {
                        next = rx.try_recv().ok();
                    }
                }
                if !matches!(
                    until(deadline, SinkExt::flush(&mut tx_ws)).await,
                    Some(Ok(()))
                ) {
                    break;
                }
                if bytes > 0 {
                    core.borrow_mut()
                        .handle(Input::TunnelDrained { tunnel, bytes });
                }
                if let Some((code, reason)) = close {
                    let frame = CloseFrame {
                        code: CloseCode::from(code),
                        reason: reason.into(),
                    };
                    let _ = until(deadline, tx_ws.close(Some(frame))).await;
                    break;
                }
            }
            End::Done
        };
        let reader = async {
            let mut since_yield = 0u32;
            while let Some(msg) = rx_ws.next().await {
                // A burst of frames must not starve the callers it feeds: let
                // their tasks write what this reader handed them now and then.
                since_yield += 1;
                if since_yield == YIELD_EVERY {
                    since_yield = 0;
                    smol::future::yield_now().await;
                }
                match msg {
                    Ok(Message::Text(t)) => core.borrow_mut().handle(Input::TunnelText {
                        tunnel,
                        text: t.as_str(),
                    }),
                    Ok(Message::Binary(_)) => {
                        core.borrow_mut().handle(Input::TunnelBinary { tunnel })
                    }
                    Ok(Message::Close(_)) => break,
                    Ok(_) => {}
                    Err(WsError::Capacity(CapacityError::MessageTooLong { .. })) => {
                        return End::TooBig
                    }
                    Err(_) if budget.get() == 0 => return End::TooBig,
                    Err(e) => {
                        debug!(tunnel = tunnel.0, error = %e, "tunnel read failed");
                        break;
                    }
                }
            }
            End::Done
        };
        writer.or(reader).await
    };
    if let End::TooBig = end {
        // tungstenite drops an oversized message without closing: say why ourselves.
        let frame = CloseFrame {
            code: CloseCode::Size,
            reason: "message too big".into(),
        };
        let _ = until(Instant::now() + o.write_timeout, tx_ws.close(Some(frame))).await;
    }
}

/// The tunnel socket, with reads limited to a budget until the tunnel
/// authenticates: tungstenite would otherwise buffer a message of up to
/// `MAX_FRAME_BYTES` for anybody who merely opened a WebSocket.
pub(crate) struct Metered {
    inner: Sock,
    left: Rc<Cell<u64>>,
}

impl AsyncRead for Metered {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let left = this.left.get();
        if left == 0 {
            let e = std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "pre-auth read budget spent",
            );
            return Poll::Ready(Err(e));
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let r = Pin::new(&mut &*this.inner).poll_read(cx, &mut buf[..n]);
        if let Poll::Ready(Ok(k)) = &r {
            if left != u64::MAX {
                this.left.set(left - *k as u64);
            }
        }
        r
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut &*self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut &*self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.inner.get_ref().shutdown(std::net::Shutdown::Write))
    }
}
