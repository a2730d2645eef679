//! Calling the local HTTP server the tunnel exposes, with connection reuse.

use osaurus_relay_engine::client::stream::{BodyLength, Splitter, StreamPolicy};
use osaurus_relay_engine::client::ClientConfig;
use osaurus_relay_engine::frame::Headers;
use osaurus_relay_engine::wire::http1::{
    http_authority, parse_answer, Answer as Parsed, AnswerFraming, AnswerLimits, ChunkedDecoder,
    Decoded,
};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use std::cell::RefCell;

/// What the local server said, as the tunnel client relays it.
#[derive(Debug, PartialEq, Eq)]
pub enum LocalEvent {
    Full {
        status: u16,
        headers: Headers,
        body: Vec<u8>,
    },
    Start {
        status: u16,
        headers: Headers,
    },
    /// One SSE event or NDJSON line, or a piece of a large or open-ended answer.
    Chunk(Vec<u8>),
    End,
    Failed(String),
}

pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// A local HTTP/1.1 origin (`http://host:port`) and its idle connections.
pub struct Local {
    pub addr: String,
    /// Sets this header to the agent's address on every call, if configured.
    pub agent_header: Option<String>,
    /// Which answers stream and how (the client engine's rules).
    pub policy: StreamPolicy,
    /// Idle connections kept for reuse, at most.
    pub max_idle: usize,
    idle: RefCell<Vec<TcpStream>>,
}

/// Bytes read from the local server at a time.
const READ_BYTES: usize = 64 * 1024;

/// Request headers that belong to one hop, or that this client writes itself.
fn hop(name: &str) -> bool {
    name == "content-length" || osaurus_relay_engine::http::is_hop_request_header(name)
}

impl Local {
    pub fn parse(url: &str, agent_header: Option<String>) -> Result<Local, String> {
        if !url.starts_with("http://") {
            return Err("--to must be an http:// URL (the local server)".into());
        }
        let addr = http_authority(url).ok_or_else(|| format!("no host in {url}"))?;
        Ok(Local {
            addr,
            agent_header,
            policy: StreamPolicy::default(),
            max_idle: ClientConfig::default().max_idle_local,
            idle: RefCell::new(Vec::new()),
        })
    }

    fn encode(&self, r: &Request) -> Vec<u8> {
        let body = &r.body;
        let mut out = format!(
            "{} {} HTTP/1.1\r\nhost: {}\r\n",
            r.method, r.path, self.addr
        )
        .into_bytes();
        for (k, v) in &r.headers.0 {
            if !hop(&k.to_ascii_lowercase()) {
                out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
            }
        }
        if let (Some(h), Some(agent)) = (&self.agent_header, r.headers.get("x-agent-address")) {
            out.extend_from_slice(format!("{h}: {agent}\r\n").as_bytes());
        }
        if !body.is_empty() || !matches!(r.method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS") {
            out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out
    }

    /// Performs `r`, reporting through `emit`; ends with `Full`, `End` or `Failed`.
    /// With `stream_any`, large and open-ended answers stream as they are
    /// read, each piece only once `gate` says the relay link has room.
    pub async fn call(
        &self,
        r: &Request,
        stream_any: bool,
        gate: &Gate,
        emit: &mut dyn FnMut(LocalEvent),
    ) {
        let how = How {
            stream_any,
            gate,
            policy: &self.policy,
        };
        let raw = self.encode(r);
        // A pooled connection may have been closed by the server meanwhile: retry once fresh.
        let mut pooled = self.idle.borrow_mut().pop();
        let reused = match pooled.as_mut() {
            Some(c) => c.write_all(&raw).await.is_ok(),
            None => false,
        };
        let mut conn = match pooled {
            Some(c) if reused => c,
            _ => match TcpStream::connect(self.addr.as_str()).await {
                Ok(mut c) => {
                    let _ = c.set_nodelay(true);
                    if let Err(e) = c.write_all(&raw).await {
                        return emit(LocalEvent::Failed(format!("write to {}: {e}", self.addr)));
                    }
                    c
                }
                Err(e) => return emit(LocalEvent::Failed(format!("connect {}: {e}", self.addr))),
            },
        };
        let head_req = r.method == "HEAD";
        let mut answer = read_answer(&mut conn, head_req, &how, emit).await;
        if reused && matches!(answer, Err(Answer::Closed)) {
            // The server had closed the idle connection: the request never ran.
            answer = match TcpStream::connect(self.addr.as_str()).await {
                Ok(mut c) => match c.write_all(&raw).await {
                    Ok(()) => {
                        conn = c;
                        read_answer(&mut conn, head_req, &how, emit).await
                    }
                    Err(e) => Err(Answer::Bad(format!("write to {}: {e}", self.addr))),
                },
                Err(e) => Err(Answer::Bad(format!("connect {}: {e}", self.addr))),
            };
        }
        match answer {
            Ok(true) => {
                let mut idle = self.idle.borrow_mut();
                if idle.len() < self.max_idle {
                    idle.push(conn);
                }
            }
            Ok(false) => {}
            Err(Answer::Closed) => emit(LocalEvent::Failed(
                "the local server closed before answering".into(),
            )),
            Err(Answer::Bad(e)) => emit(LocalEvent::Failed(e)),
        }
    }
}

async fn fill(c: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, String> {
    let at = buf.len();
    buf.resize(at + READ_BYTES, 0);
    let n = c.read(&mut buf[at..]).await;
    buf.truncate(at + *n.as_ref().unwrap_or(&0));
    n.map_err(|e| format!("read: {e}"))
}

/// `fill`, once the relay link has room when streaming.
async fn more(c: &mut TcpStream, buf: &mut Vec<u8>, gate: Option<&Gate>) -> Result<usize, String> {
    if let Some(g) = gate {
        g.ready().await;
    }
    fill(c, buf).await
}

/// Bytes handed to the relay link and not yet written: a streaming local
/// answer is read only as fast as the relay takes it.
pub struct Gate {
    queued: std::cell::Cell<u64>,
    /// Above this many queued bytes, streaming answers wait.
    limit: u64,
    drained: event_listener::Event,
}

impl Gate {
    pub fn new(limit: u64) -> Self {
        Gate {
            queued: std::cell::Cell::new(0),
            limit,
            drained: event_listener::Event::new(),
        }
    }

    pub fn add(&self, n: u64) {
        self.queued.set(self.queued.get() + n);
    }

    pub fn sub(&self, n: u64) {
        self.queued.set(self.queued.get().saturating_sub(n));
        self.drained.notify(usize::MAX);
    }

    /// The link is gone: nothing is queued any more.
    pub fn reset(&self) {
        self.queued.set(0);
        self.drained.notify(usize::MAX);
    }

    /// Returns once the relay link has room.
    pub async fn ready(&self) {
        while self.queued.get() > self.limit {
            let wait = self.drained.listen();
            if self.queued.get() <= self.limit {
                break;
            }
            wait.await;
        }
    }
}

/// How an answer may be relayed.
struct How<'a> {
    stream_any: bool,
    gate: &'a Gate,
    policy: &'a StreamPolicy,
}

/// Why no answer could be read.
enum Answer {
    /// Closed before sending a single byte.
    Closed,
    Bad(String),
}

impl From<String> for Answer {
    fn from(s: String) -> Self {
        Answer::Bad(s)
    }
}

impl From<&str> for Answer {
    fn from(s: &str) -> Self {
        Answer::Bad(s.into())
    }
}

enum Framing {
    None,
    Length(usize),
    Chunked,
    Close,
}

/// Reads one response; `Ok(true)` when the connection can be reused.
async fn read_answer(
    c: &mut TcpStream,
    head_req: bool,
    how: &How<'_>,
    emit: &mut dyn FnMut(LocalEvent),
) -> Result<bool, Answer> {
    let mut buf = Vec::new();
    let limits = AnswerLimits::default();
    let head = loop {
        let parsed = parse_answer(&buf, head_req, &limits)
            .map_err(|e| format!("bad answer from the local server: {e}"))?;
        match parsed {
            Some(Parsed::Interim(n)) => {
                buf.drain(..n);
            }
            Some(Parsed::Final(head, n)) => {
                buf.drain(..n);
                break head;
            }
            None => {
                if fill(c, &mut buf).await? == 0 {
                    return Err(if buf.is_empty() {
                        Answer::Closed
                    } else {
                        "the local server closed mid-head".into()
                    });
                }
            }
        }
    };
    let status = head.status;
    let framing = match head.framing {
        AnswerFraming::Empty => Framing::None,
        AnswerFraming::Length(n) => {
            Framing::Length(usize::try_from(n).map_err(|_| "the local answer is too large")?)
        }
        AnswerFraming::Chunked => Framing::Chunked,
        AnswerFraming::UntilClose => Framing::Close,
    };
    let ctype = (head.headers.iter())
        .find(|(k, _)| k == "content-type")
        .map_or("", |(_, v)| v.as_str());
    let length = match framing {
        Framing::None => BodyLength::Empty,
        Framing::Length(n) => BodyLength::Known(n as u64),
        Framing::Chunked | Framing::Close => BodyLength::Unknown,
    };
    let cut = how.policy.cut(ctype, length, how.stream_any);
    let (keep, reusable) = (head.headers, head.reusable);
    let mut body = Vec::new();
    let mut splitter = cut.map(|cut| Splitter::new(cut, how.policy));
    if splitter.is_some() {
        emit(LocalEvent::Start {
            status,
            headers: Headers(keep.clone()),
        });
    }
    // A streamed answer is read only as fast as the relay link takes it.
    let gate = splitter.is_some().then_some(how.gate);
    let max_body = how.policy.max_body_bytes;
    let mut sink = |data: &[u8], emit: &mut dyn FnMut(LocalEvent)| -> Result<(), Answer> {
        match splitter.as_mut() {
            Some(s) => s.push(data, &mut |c| emit(LocalEvent::Chunk(c))),
            None if (body.len() + data.len()) as u64 > max_body => {
                return Err("the local answer is too large".into())
            }
            None => body.extend_from_slice(data),
        }
        Ok(())
    };
    match framing {
        Framing::None => {}
        Framing::Length(mut left) => loop {
            let take = left.min(buf.len());
            sink(&buf[..take], emit)?;
            buf.drain(..take);
            left -= take;
            if left == 0 {
                break;
            }
            if more(c, &mut buf, gate).await? == 0 {
                return Err("the local server closed inside a body".into());
            }
        },
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new();
            loop {
                let decoded = dec
                    .decode(&buf)
                    .map_err(|e| format!("bad chunked body from the local server: {e:?}"));
                match decoded? {
                    Decoded::Data { consumed, data } => {
                        sink(&buf[data], emit)?;
                        buf.drain(..consumed);
                    }
                    Decoded::NeedMore { consumed } => {
                        buf.drain(..consumed);
                        if more(c, &mut buf, gate).await? == 0 {
                            return Err("the local server closed inside a body".into());
                        }
                    }
                    Decoded::Done { consumed } => {
                        buf.drain(..consumed);
                        break;
                    }
                }
            }
        }
        Framing::Close => loop {
            sink(&buf, emit)?;
            buf.clear();
            if more(c, &mut buf, gate).await? == 0 {
                break;
            }
        },
    }
    match splitter.as_mut() {
        Some(s) => {
            s.finish(&mut |c| emit(LocalEvent::Chunk(c)));
            emit(LocalEvent::End);
        }
        // Text or not, the tunnel client decides how it travels.
        None => emit(LocalEvent::Full {
            status,
            headers: Headers(keep),
            body,
        }),
    }
    Ok(reusable && buf.is_empty())
}
