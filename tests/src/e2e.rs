//! End-to-end helpers: a relay on 127.0.0.1:0, a WebSocket tunnel peer, raw HTTP callers.

use crate::harness::DOMAIN;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use osaurus_relay_engine::auth::SecretKey;
use osaurus_relay_engine::frame::{Body, ClientFrame, Headers, ServerFrame};
use osaurus_relay_server::{RelayHandle, ServeArgs};
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use smol::stream::StreamExt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest any single step of a test may take before it fails.
pub const STEP: Duration = Duration::from_secs(20);

/// Awaits `f`, failing the test if it takes longer than [`STEP`].
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    async { Some(f.await) }
        .or(async {
            smol::Timer::after(STEP).await;
            None
        })
        .await
        .unwrap_or_else(|| panic!("timed out: {what}"))
}

/// Settings for tests: loopback, OS-chosen port, no rate limits, timeouts long
/// enough for a loaded machine (tests of a timeout set it short themselves).
pub fn test_args() -> ServeArgs {
    let mut a = ServeArgs::defaults();
    a.base_domain = DOMAIN.into();
    a.bind_addr = "127.0.0.1".parse().expect("loopback parses");
    a.port = 0;
    a.tunnel_connects_per_min = 0;
    a.max_tunnels_per_ip = 0;
    a.stats_requests_per_min = 0;
    a.agent_requests_per_min = 0;
    a.caller_requests_per_min = 0;
    a.control_frames_per_min = 0;
    a.response_timeout = Duration::from_secs(8);
    a.stream_idle_timeout = Duration::from_secs(8);
    a.header_timeout = Duration::from_secs(8);
    a.idle_timeout = Duration::from_secs(5);
    a.drain_timeout = Duration::from_secs(5);
    a
}

pub fn start(tweak: impl FnOnce(&mut ServeArgs)) -> RelayHandle {
    let mut a = test_args();
    tweak(&mut a);
    let addr = SocketAddr::new(a.bind_addr, 0);
    RelayHandle::spawn(a, addr).expect("relay starts on loopback")
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A tunnel client speaking the wire protocol by hand.
pub struct Tunnel {
    pub ws: WebSocketStream<TcpStream>,
}

impl Tunnel {
    /// Opens the WebSocket and reads the challenge.
    pub async fn open(addr: SocketAddr) -> (Tunnel, String) {
        Tunnel::open_with(addr, None).await
    }

    /// `open` with the WebSocket limits of `cfg` (e.g. the app's 1 MiB).
    pub async fn open_with(addr: SocketAddr, cfg: Option<WebSocketConfig>) -> (Tunnel, String) {
        let s = within("tcp connect", TcpStream::connect(addr))
            .await
            .expect("connects");
        let url = format!("ws://{addr}/tunnel/connect");
        let (ws, _) = within(
            "ws handshake",
            async_tungstenite::client_async_with_config(url, s, cfg),
        )
        .await
        .expect("websocket upgrade");
        let mut t = Tunnel { ws };
        match t.recv().await {
            ServerFrame::Challenge { nonce } => (t, nonce),
            other => panic!("expected challenge, got {other:?}"),
        }
    }

    pub fn auth_text(keys: &[&SecretKey], nonce: &str) -> String {
        crate::harness::auth_text(keys, nonce, unix_now())
    }

    /// Opens and authenticates; asserts `auth_ok`.
    pub async fn connect(addr: SocketAddr, keys: &[&SecretKey]) -> Tunnel {
        let (mut t, nonce) = Tunnel::open(addr).await;
        t.send_text(&Tunnel::auth_text(keys, &nonce)).await;
        match t.recv().await {
            ServerFrame::AuthOk { .. } => t,
            other => panic!("expected auth_ok, got {other:?}"),
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        within("ws send", self.ws.send(Message::text(text.to_string())))
            .await
            .expect("ws send");
    }

    pub async fn send(&mut self, f: &ClientFrame) {
        self.send_text(&f.encode()).await;
    }

    /// The next protocol frame; answers pings on the way.
    pub async fn recv(&mut self) -> ServerFrame {
        loop {
            match self.next_message().await {
                Some(Message::Text(t)) => match ServerFrame::parse(t.as_str()) {
                    Some(ServerFrame::Ping { ts }) => self.send(&ClientFrame::Pong { ts }).await,
                    Some(f) => return f,
                    None => panic!("unparsable frame from relay: {t}"),
                },
                Some(Message::Close(c)) => panic!("closed by relay: {c:?}"),
                Some(_) => {}
                None => panic!("tunnel ended"),
            }
        }
    }

    pub async fn next_message(&mut self) -> Option<Message> {
        within("ws recv", self.ws.next())
            .await
            .map(|r| r.expect("ws read"))
    }

    /// Reads until the relay closes; returns the close code and reason.
    pub async fn closed(&mut self) -> Option<(u16, String)> {
        loop {
            match self.next_message().await {
                Some(Message::Close(Some(c))) => {
                    return Some((c.code.into(), c.reason.to_string()))
                }
                Some(Message::Close(None)) | None => return None,
                Some(_) => {}
            }
        }
    }

    /// Reads frames until a request arrives; returns it.
    pub async fn request(&mut self) -> (String, String, String, Headers, Body) {
        match self.recv().await {
            ServerFrame::Request {
                id,
                method,
                path,
                headers,
                body,
            } => (id, method, path, headers, body),
            other => panic!("expected request, got {other:?}"),
        }
    }

    pub async fn reply(&mut self, id: &str, status: u16, ctype: &str, body: &str) {
        self.reply_body(id, status, ctype, body.into()).await;
    }

    /// Answers with `body` as is: text, or base64 with `bodyEncoding`.
    pub async fn reply_body(&mut self, id: &str, status: u16, ctype: &str, body: Body) {
        let headers = Headers(vec![("content-type".into(), ctype.into())]);
        self.send(&ClientFrame::Response {
            id: id.into(),
            status,
            headers,
            body,
        })
        .await;
    }
}

/// A parsed HTTP response as a caller sees it.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// False when a chunked body ended without its last chunk.
    pub complete: bool,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw HTTP/1.1 connection to the relay.
pub struct Caller {
    pub s: TcpStream,
    pub buf: Vec<u8>,
}

impl Caller {
    pub async fn connect(addr: SocketAddr) -> Caller {
        let s = within("tcp connect", TcpStream::connect(addr))
            .await
            .expect("connects");
        Caller { s, buf: Vec::new() }
    }

    pub async fn send(&mut self, raw: &[u8]) {
        within("http write", self.s.write_all(raw))
            .await
            .expect("http write");
    }

    /// Sends what the relay will take: it may answer and stop reading early.
    pub async fn send_lossy(&mut self, raw: &[u8]) {
        let _ = within("http write", self.s.write_all(raw)).await;
    }

    /// Reads more bytes; 0 at end of stream.
    async fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 16 * 1024];
        let n = within("http read", self.s.read(&mut tmp))
            .await
            .unwrap_or(0);
        self.buf.extend_from_slice(&tmp[..n]);
        n
    }

    /// Reads a response head: status and headers.
    pub async fn head(&mut self) -> (u16, Vec<(String, String)>) {
        loop {
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut hs);
            if let httparse::Status::Complete(n) = r.parse(&self.buf).expect("valid response head")
            {
                let status = r.code.expect("status");
                let headers = r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                self.buf.drain(..n);
                if status == 100 {
                    continue;
                }
                return (status, headers);
            }
            assert!(
                self.fill().await > 0,
                "connection closed before a response head"
            );
        }
    }

    /// The next chunk of a chunked body; `None` after the last chunk,
    /// `Err(())` if the connection ended first.
    pub async fn chunk(&mut self) -> Result<Option<Vec<u8>>, ()> {
        loop {
            if let Ok(httparse::Status::Complete((n, size))) = httparse::parse_chunk_size(&self.buf)
            {
                let size = size as usize;
                if self.buf.len() >= n + size + 2 {
                    let data = self.buf[n..n + size].to_vec();
                    self.buf.drain(..n + size + 2);
                    return Ok(if size == 0 { None } else { Some(data) });
                }
            }
            if self.fill().await == 0 {
                return Err(());
            }
        }
    }

    /// Reads one complete response.
    pub async fn response(&mut self, head_request: bool) -> Resp {
        let (status, headers) = self.head().await;
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        let mut complete = true;
        if head_request || matches!(status, 204 | 304) {
        } else if let Some(len) = get("content-length") {
            let len: usize = len.parse().expect("numeric content-length");
            while self.buf.len() < len {
                assert!(self.fill().await > 0, "connection closed inside a body");
            }
            body = self.buf.drain(..len).collect();
        } else if get("transfer-encoding").as_deref() == Some("chunked") {
            loop {
                match self.chunk().await {
                    Ok(Some(d)) => body.extend(d),
                    Ok(None) => break,
                    Err(()) => {
                        complete = false;
                        break;
                    }
                }
            }
        } else {
            while self.fill().await > 0 {}
            body = std::mem::take(&mut self.buf);
        }
        Resp {
            status,
            headers,
            body,
            complete,
        }
    }

    /// True once the relay has closed this connection.
    pub async fn is_closed(&mut self) -> bool {
        self.fill().await == 0
    }
}

/// One request on a fresh connection.
pub async fn call(addr: SocketAddr, raw: &[u8]) -> Resp {
    let mut c = Caller::connect(addr).await;
    c.send_lossy(raw).await;
    c.response(raw.starts_with(b"HEAD ")).await
}

pub fn get(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

pub fn post(host: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Through `relay`: `/hello`, a byte-exact `/echo`, and `/sse` whose events
/// reach the caller one by one (each sent only after the caller has the last).
pub async fn origin_round_trips(relay: SocketAddr, host: &str, origin: &crate::origin::Origin) {
    let r = call(relay, &get(host, "/hello")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello from origin"));
    let body = "{\"text\":\"héllo ✓ \\\"quoted\\\"\\n\"}".as_bytes();
    let r = call(relay, &post(host, "/echo", body)).await;
    assert_eq!((r.status, r.body.as_slice()), (200, body), "byte for byte");
    let mut c = Caller::connect(relay).await;
    c.send(&get(host, "/sse")).await;
    origin.sse.send("data: one\n\n".into()).await.unwrap();
    assert_eq!(c.head().await.0, 200);
    assert_eq!(c.chunk().await, Ok(Some(b"data: one\n\n".to_vec())));
    origin.sse.send("data: two\n\n".into()).await.unwrap();
    assert_eq!(c.chunk().await, Ok(Some(b"data: two\n\n".to_vec())));
    origin.sse.send(String::new()).await.unwrap();
    assert_eq!(c.chunk().await, Ok(None));
}

/// A tunnel client (`osaurus-relay tunnel`) running on its own thread.
pub struct ClientHandle {
    pub events: smol::channel::Receiver<osaurus_relay_engine::client::ClientEvent>,
    stop: smol::channel::Sender<()>,
    pub thread: Option<std::thread::JoinHandle<()>>,
}

impl ClientHandle {
    pub fn spawn(relay: SocketAddr, to: &str, keys: &[&SecretKey]) -> ClientHandle {
        let client = osaurus_relay_engine::client::ClientConfig {
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(400),
            ..Default::default()
        };
        Self::spawn_with(relay, to, keys, client)
    }

    /// Like the Osaurus app: 1 s after any close, `relay_restarting` included.
    pub fn spawn_app_like(relay: SocketAddr, to: &str, keys: &[&SecretKey]) -> ClientHandle {
        let client = osaurus_relay_engine::client::ClientConfig {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(1),
            jitter_percent: 0,
            reconnect_at_once_on_restart: false,
            ..Default::default()
        };
        Self::spawn_with(relay, to, keys, client)
    }

    pub fn spawn_with(
        relay: SocketAddr,
        to: &str,
        keys: &[&SecretKey],
        client: osaurus_relay_engine::client::ClientConfig,
    ) -> ClientHandle {
        use osaurus_relay_client::{run, Local, RelayUrl, TunnelOpts};
        let (etx, erx) = smol::channel::unbounded();
        let (stx, srx) = smol::channel::unbounded::<()>();
        let opts = TunnelOpts {
            relay: RelayUrl::parse(&format!("ws://{relay}")).expect("relay url"),
            local: Local::parse(to, None).expect("local url"),
            keys: keys.iter().map(|k| (*k).clone()).collect(),
            client,
            stdin_commands: false,
            events: Some(etx),
        };
        let thread = std::thread::spawn(move || {
            let ex = osaurus_relay_rt::leak_executor();
            smol::block_on(ex.run(smol::future::or(run(ex, opts), async {
                let _ = srx.recv().await;
            })));
        });
        ClientHandle {
            events: erx,
            stop: stx,
            thread: Some(thread),
        }
    }

    /// Waits for the next status event matching `want`, skipping others.
    pub async fn wait_for(
        &self,
        what: &str,
        want: impl Fn(&osaurus_relay_engine::client::ClientEvent) -> bool,
    ) {
        within(what, async {
            loop {
                let e = self.events.recv().await.expect("client still running");
                if want(&e) {
                    return;
                }
            }
        })
        .await
    }

    pub async fn online(&self) {
        use osaurus_relay_engine::client::ClientEvent;
        self.wait_for("client online", |e| matches!(e, ClientEvent::Online { .. }))
            .await
    }
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        let _ = self.stop.try_send(());
    }
}
