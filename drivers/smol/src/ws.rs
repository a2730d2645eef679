//! A tunnel's WebSocket: the 101 handshake, then frames both ways.

use crate::conn::until;
use crate::core::{Shared, TunnelMsg};
use async_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use osaurus_relay_engine::{Input, TunnelId};
use smol::channel::Receiver;
use smol::future::FutureExt;
use smol::io::AsyncWriteExt;
use smol::net::TcpStream;
use smol::stream::StreamExt;
use std::time::{Duration, Instant};
use tracing::debug;

#[derive(Clone, Debug)]
pub(crate) struct WsOpts {
    pub max_message: usize,
    /// A write that makes no progress this long drops the tunnel.
    pub write_timeout: Duration,
}

/// Small buffers: most tunnels idle, and memory per idle tunnel matters.
fn ws_config(o: &WsOpts) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(o.max_message))
        .max_frame_size(Some(o.max_message))
}

/// Completes the upgrade of `s` and runs the tunnel until either side closes.
pub(crate) async fn accept(
    core: Shared,
    mut s: TcpStream,
    leftover: Vec<u8>,
    tunnel: TunnelId,
    rx: Receiver<TunnelMsg>,
    key: &str,
    o: &WsOpts,
) {
    core.borrow_mut().set_tunnel_socket(tunnel, &s);
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    let wrote = until(
        Instant::now() + o.write_timeout,
        s.write_all(head.as_bytes()),
    )
    .await;
    if matches!(wrote, Some(Ok(()))) {
        let ws = WebSocketStream::from_partially_read(
            s.clone(),
            leftover,
            Role::Server,
            Some(ws_config(o)),
        )
        .await;
        run(&core, tunnel, ws, rx, o).await;
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
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
    ws: WebSocketStream<TcpStream>,
    rx: Receiver<TunnelMsg>,
    o: &WsOpts,
) {
    let (mut tx_ws, mut rx_ws) = ws.split();
    let end = {
        let writer = async {
            while let Ok(msg) = rx.recv().await {
                let deadline = Instant::now() + o.write_timeout;
                match msg {
                    TunnelMsg::Frame(text) => {
                        let n = text.len() as u64;
                        if !matches!(
                            until(deadline, tx_ws.send(Message::text(text))).await,
                            Some(Ok(()))
                        ) {
                            break;
                        }
                        core.borrow_mut()
                            .handle(Input::TunnelDrained { tunnel, bytes: n });
                    }
                    TunnelMsg::Close(code, reason) => {
                        let frame = CloseFrame {
                            code: CloseCode::from(code),
                            reason: reason.into(),
                        };
                        let _ = until(deadline, tx_ws.close(Some(frame))).await;
                        break;
                    }
                }
            }
            End::Done
        };
        let reader = async {
            while let Some(msg) = rx_ws.next().await {
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
