//! Calling the local HTTP server the tunnel exposes, with connection reuse.

use crate::http1::{ChunkedDecoder, Decoded};
use osaurus_relay_engine::frame::Headers;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use std::cell::RefCell;

/// What the local server said, as the tunnel client relays it.
#[derive(Debug, PartialEq, Eq)]
pub enum LocalEvent {
    Full {
        status: u16,
        headers: Headers,
        body: String,
    },
    Start {
        status: u16,
        headers: Headers,
    },
    /// One SSE event or one NDJSON line.
    Chunk(String),
    End,
    Failed(String),
}

pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Headers,
    pub body: Option<String>,
}

/// A local HTTP/1.1 origin (`http://host:port`) and its idle connections.
pub struct Local {
    pub addr: String,
    /// Sets this header to the agent's address on every call, if configured.
    pub agent_header: Option<String>,
    idle: RefCell<Vec<TcpStream>>,
}

const MAX_IDLE: usize = 32;
const MAX_BODY: usize = 64 << 20;

/// Request headers that belong to one hop, or that this client writes itself.
fn hop(name: &str) -> bool {
    name == "content-length" || osaurus_relay_engine::http::is_hop_request_header(name)
}

impl Local {
    pub fn parse(url: &str, agent_header: Option<String>) -> Result<Local, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or("--to must be an http:// URL (the local server)")?;
        let authority = rest.split('/').next().unwrap_or("");
        if authority.is_empty() {
            return Err(format!("no host in {url}"));
        }
        let addr = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Local {
            addr,
            agent_header,
            idle: RefCell::new(Vec::new()),
        })
    }

    fn encode(&self, r: &Request) -> Vec<u8> {
        let body = r.body.as_deref().unwrap_or("");
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
        out.extend_from_slice(body.as_bytes());
        out
    }

    /// Performs `r`, reporting through `emit`; ends with `Full`, `End` or `Failed`.
    pub async fn call(&self, r: &Request, emit: &mut dyn FnMut(LocalEvent)) {
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
        let mut answer = read_answer(&mut conn, r.method == "HEAD", emit).await;
        if reused && matches!(answer, Err(Answer::Closed)) {
            // The server had closed the idle connection: the request never ran.
            answer = match TcpStream::connect(self.addr.as_str()).await {
                Ok(mut c) => match c.write_all(&raw).await {
                    Ok(()) => {
                        conn = c;
                        read_answer(&mut conn, r.method == "HEAD", emit).await
                    }
                    Err(e) => Err(Answer::Bad(format!("write to {}: {e}", self.addr))),
                },
                Err(e) => Err(Answer::Bad(format!("connect {}: {e}", self.addr))),
            };
        }
        match answer {
            Ok(true) => {
                let mut idle = self.idle.borrow_mut();
                if idle.len() < MAX_IDLE {
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
    let mut tmp = [0u8; 16 * 1024];
    let n = c.read(&mut tmp).await.map_err(|e| format!("read: {e}"))?;
    buf.extend_from_slice(&tmp[..n]);
    Ok(n)
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

/// Splits a streamed body into SSE events or NDJSON lines.
struct Splitter {
    sse: bool,
    pending: Vec<u8>,
}

impl Splitter {
    fn push(&mut self, data: &[u8], emit: &mut dyn FnMut(LocalEvent)) {
        self.pending.extend_from_slice(data);
        loop {
            let cut = if self.sse {
                find(&self.pending, b"\n\n")
                    .map(|i| i + 2)
                    .or_else(|| find(&self.pending, b"\r\n\r\n").map(|i| i + 4))
            } else {
                find(&self.pending, b"\n").map(|i| i + 1)
            };
            let Some(cut) = cut else { return };
            let piece: Vec<u8> = self.pending.drain(..cut).collect();
            emit(LocalEvent::Chunk(
                String::from_utf8_lossy(&piece).into_owned(),
            ));
        }
    }

    fn finish(&mut self, emit: &mut dyn FnMut(LocalEvent)) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            emit(LocalEvent::Chunk(
                String::from_utf8_lossy(&rest).into_owned(),
            ));
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one response; `Ok(true)` when the connection can be reused.
async fn read_answer(
    c: &mut TcpStream,
    head_req: bool,
    emit: &mut dyn FnMut(LocalEvent),
) -> Result<bool, Answer> {
    let mut buf = Vec::new();
    let (status, headers, n, http10) = loop {
        let mut hs = [httparse::EMPTY_HEADER; 100];
        let mut resp = httparse::Response::new(&mut hs);
        match resp
            .parse(&buf)
            .map_err(|e| format!("bad response from the local server: {e}"))?
        {
            httparse::Status::Complete(n) => {
                let status = resp.code.unwrap_or(502);
                let headers: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                if (100..200).contains(&status) {
                    buf.drain(..n);
                    continue;
                }
                break (status, headers, n, resp.version == Some(0));
            }
            httparse::Status::Partial => {
                if buf.len() > 64 * 1024 {
                    return Err("the local answer's head is too large".into());
                }
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
    buf.drain(..n);
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let conn_hdr = get("connection")
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let close = conn_hdr.contains("close") || (http10 && !conn_hdr.contains("keep-alive"));
    let framing = if head_req || matches!(status, 204 | 304) {
        Framing::None
    } else if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        Framing::Chunked
    } else if let Some(len) = get("content-length") {
        Framing::Length(
            len.trim()
                .parse()
                .map_err(|_| "bad content-length from the local server")?,
        )
    } else {
        Framing::Close
    };
    let ctype = get("content-type").unwrap_or("").to_ascii_lowercase();
    let streaming =
        ctype.starts_with("text/event-stream") || ctype.starts_with("application/x-ndjson");
    let keep: Vec<(String, String)> = headers
        .into_iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "connection" | "keep-alive" | "transfer-encoding" | "content-length"
            )
        })
        .collect();
    let reusable = !close && !matches!(framing, Framing::Close);
    let mut body = Vec::new();
    let mut splitter = streaming.then(|| Splitter {
        sse: ctype.starts_with("text/event-stream"),
        pending: Vec::new(),
    });
    if splitter.is_some() {
        emit(LocalEvent::Start {
            status,
            headers: Headers(keep.clone()),
        });
    }
    let mut sink = |data: &[u8], emit: &mut dyn FnMut(LocalEvent)| -> Result<(), Answer> {
        match splitter.as_mut() {
            Some(s) => s.push(data, emit),
            None if body.len() + data.len() > MAX_BODY => {
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
            if fill(c, &mut buf).await? == 0 {
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
                        if fill(c, &mut buf).await? == 0 {
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
            if fill(c, &mut buf).await? == 0 {
                break;
            }
        },
    }
    match splitter.as_mut() {
        Some(s) => {
            s.finish(emit);
            emit(LocalEvent::End);
        }
        None => match String::from_utf8(body) {
            Ok(body) => emit(LocalEvent::Full {
                status,
                headers: Headers(keep),
                body,
            }),
            // The protocol carries bodies as text: say so rather than mangle bytes.
            Err(_) => return Err("the local answer is not UTF-8 text".into()),
        },
    }
    Ok(reusable && buf.is_empty())
}
