//! Replaying a call on the instance that holds its agent, and relaying the
//! answer back to the caller as it arrives.

use crate::core::CallMsg;
use osaurus_relay_engine::cluster::ForwardRequest;
use osaurus_relay_engine::http::{self, Response, ResponseHead};
use osaurus_relay_engine::wire::http1::{ChunkedDecoder, Decoded};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

/// The header that carries the shared secret between instances.
pub const HOP_HEADER: &str = "x-relay-hop";
const MAX_HEAD: usize = 64 * 1024;

/// `http://host:port` → `host:port`.
pub fn authority(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let a = rest.split('/').next().filter(|a| !a.is_empty())?;
    Some(
        if a.rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            a.to_string()
        } else {
            format!("{a}:80")
        },
    )
}

pub fn encode(r: &ForwardRequest, secret: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + r.body.len());
    for part in [
        &r.method,
        " ",
        &r.path,
        " HTTP/1.1\r\nhost: ",
        &r.host,
        "\r\n",
    ] {
        out.extend_from_slice(part.as_bytes());
    }
    for (k, v) in &r.headers.0 {
        // The owner sets x-agent-address itself; the length is written below.
        if k != "x-agent-address" && k != "content-length" {
            for part in [k.as_str(), ": ", v.as_str(), "\r\n"] {
                out.extend_from_slice(part.as_bytes());
            }
        }
    }
    let tail = format!(
        "{HOP_HEADER}: {secret}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        r.body.len()
    );
    out.extend_from_slice(tail.as_bytes());
    out.extend_from_slice(&r.body);
    out
}

/// What the forwarding task shares with the caller's connection.
pub(crate) struct Caller {
    pub tx: Rc<crate::mailbox::Mailbox<CallMsg>>,
    /// Streamed bytes handed to the caller's connection and not yet written.
    pub queued: Rc<Cell<u64>>,
    pub max_queued: u64,
    pub socket: crate::sock::Sock,
}

impl Caller {
    fn send(&self, m: CallMsg) -> bool {
        self.tx.push(m)
    }

    /// Cuts the stream short; the writer may be stuck on a caller that does not read.
    fn abort(&self) {
        let _ = self.socket.get_ref().shutdown(std::net::Shutdown::Both);
        self.send(CallMsg::Abort);
    }

    pub fn offline(&self) {
        self.send(CallMsg::Respond(http::error(502, "agent_offline")));
    }
}

async fn within<T>(d: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    crate::conn::until(std::time::Instant::now() + d, f).await
}

async fn read_some(s: &mut TcpStream, buf: &mut Vec<u8>, io: Duration) -> Option<usize> {
    let mut tmp = [0u8; 16 * 1024];
    let n = within(io, s.read(&mut tmp)).await?.ok()?;
    buf.extend_from_slice(&tmp[..n]);
    Some(n)
}

/// Replays `r` on `addr` and relays the answer; every failure before the
/// answer's head is a 502 `agent_offline`, after it a cut-short stream.
pub(crate) async fn forward(
    addr: &str,
    r: &ForwardRequest,
    secret: &str,
    c: &Caller,
    io: Duration,
) {
    let connect = within(io, TcpStream::connect(addr)).await;
    let Some(Ok(mut s)) = connect else {
        return c.offline();
    };
    let _ = s.set_nodelay(true);
    if within(io, s.write_all(&encode(r, secret)))
        .await
        .is_none_or(|w| w.is_err())
    {
        return c.offline();
    }
    let mut buf = Vec::new();
    let (status, headers, n, chunked, length) = loop {
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut hs);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let status = resp.code.unwrap_or(502);
                let mut headers = Vec::new();
                let (mut chunked, mut length) = (false, None);
                for h in resp.headers.iter() {
                    let name = h.name.to_ascii_lowercase();
                    let value = String::from_utf8_lossy(h.value).into_owned();
                    match name.as_str() {
                        "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                        "content-length" => length = value.trim().parse::<usize>().ok(),
                        "connection" | "keep-alive" => {}
                        _ => headers.push((name, value)),
                    }
                }
                break (status, headers, n, chunked, length);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {
                if read_some(&mut s, &mut buf, io).await.unwrap_or(0) == 0 {
                    return c.offline();
                }
            }
            _ => return c.offline(),
        }
    };
    buf.drain(..n);
    let no_body = r.method == "HEAD" || !http::status_has_body(status);
    if !chunked || no_body {
        let len = if no_body { 0 } else { length.unwrap_or(0) };
        while buf.len() < len {
            if read_some(&mut s, &mut buf, io).await.unwrap_or(0) == 0 {
                return c.offline();
            }
        }
        buf.truncate(len);
        let body = buf;
        c.send(CallMsg::Respond(Response {
            status,
            headers,
            body,
        }));
        return;
    }
    if !c.send(CallMsg::Start(ResponseHead { status, headers })) {
        return;
    }
    relay_chunks(&mut s, buf, c, io).await;
}

/// Streams a chunked answer on; ends with `End`, or `Abort` when the owner
/// fails mid-way or the caller reads too slowly.
async fn relay_chunks(s: &mut TcpStream, mut buf: Vec<u8>, c: &Caller, io: Duration) {
    let mut dec = ChunkedDecoder::new();
    loop {
        match dec.decode(&buf) {
            Ok(Decoded::Data { consumed, data }) => {
                let piece = buf[data].to_vec();
                buf.drain(..consumed);
                c.queued.set(c.queued.get() + piece.len() as u64);
                if c.max_queued != 0 && c.queued.get() > c.max_queued {
                    c.abort();
                    return;
                }
                if !c.send(CallMsg::Chunk(piece)) {
                    return;
                }
            }
            Ok(Decoded::NeedMore { consumed }) => {
                buf.drain(..consumed);
                // The stream's own idle limit applies at the owner; this only
                // bounds a dead connection.
                if read_some(s, &mut buf, io).await.unwrap_or(0) == 0 {
                    c.abort();
                    return;
                }
            }
            Ok(Decoded::Done { .. }) => {
                c.send(CallMsg::End);
                return;
            }
            Err(_) => {
                c.abort();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osaurus_relay_engine::frame::Headers;

    #[test]
    fn authorities() {
        assert_eq!(
            authority("http://10.0.0.5:8080").as_deref(),
            Some("10.0.0.5:8080")
        );
        assert_eq!(authority("http://relay-1/x").as_deref(), Some("relay-1:80"));
        assert_eq!(
            authority("http://[::1]:9000").as_deref(),
            Some("[::1]:9000")
        );
        assert_eq!(authority("https://relay-1"), None);
        assert_eq!(authority("http://"), None);
    }

    #[test]
    fn a_forwarded_request_carries_the_secret_and_one_length() {
        let r = ForwardRequest {
            method: "POST".into(),
            path: "/v1/chat?x=1".into(),
            host: "0xab.relay.test".into(),
            headers: Headers(vec![
                ("content-type".into(), "application/json".into()),
                ("content-length".into(), "999".into()),
                ("x-agent-address".into(), "0xab".into()),
                ("x-forwarded-for".into(), "203.0.113.7".into()),
            ]),
            body: b"{}".to_vec(),
        };
        let raw = String::from_utf8(encode(&r, "s3cret")).unwrap();
        assert_eq!(
            raw,
            "POST /v1/chat?x=1 HTTP/1.1\r\nhost: 0xab.relay.test\r\n\
             content-type: application/json\r\nx-forwarded-for: 203.0.113.7\r\n\
             x-relay-hop: s3cret\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
        );
    }
}
