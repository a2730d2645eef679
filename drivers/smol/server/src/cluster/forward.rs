//! Replaying a call on the instance that holds its agent, and relaying the
//! answer back to the caller as it arrives.

use crate::hub::Shared;
use crate::msg::Upload;
use osaurus_relay_engine::cluster::ForwardRequest;
use osaurus_relay_engine::wire::http1::{
    parse_answer, Answer, AnswerError, AnswerFraming, AnswerLimits, ChunkedDecoder, Decoded,
};
use osaurus_relay_engine::{CallId, Input, OwnerFault};
use smol::channel::Receiver;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

use super::hop::HOP_HEADER;

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
    let framing = match r.body_length {
        Some(n) => format!("content-length: {n}"),
        None => "transfer-encoding: chunked".to_string(),
    };
    let tail = format!("{HOP_HEADER}: {secret}\r\n{framing}\r\nconnection: close\r\n\r\n");
    out.extend_from_slice(tail.as_bytes());
    if r.body_length.is_some() {
        out.extend_from_slice(&r.body);
    } else {
        push_chunk(&mut out, &r.body);
    }
    out
}

/// `data` as one chunk of a chunked body (nothing for no data: an empty
/// chunk would end the body).
fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if !data.is_empty() {
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
}

/// Where and how a forwarded call goes.
pub(crate) struct Owner<'a> {
    pub addr: &'a str,
    pub head_req: bool,
    /// The body goes chunked: its length was not known.
    pub chunked: bool,
    /// The rest of a body still arriving.
    pub upload: Option<&'a Receiver<Upload>>,
}

/// Writes the rest of the body to the owner as the caller sends it, then
/// waits: only the answer (or the engine's cancel) ends a forward. A body
/// cut short is never ended, so the owner cannot take it as complete.
async fn send_rest(mut s: TcpStream, upload: &Receiver<Upload>, chunked: bool) {
    let mut framed = Vec::new();
    while let Ok(piece) = upload.recv().await {
        framed.clear();
        let data = match piece {
            Upload::Data(d) if chunked => {
                push_chunk(&mut framed, &d);
                &framed[..]
            }
            Upload::Data(d) => {
                framed = d;
                &framed[..]
            }
            Upload::End if chunked => &b"0\r\n\r\n"[..],
            Upload::End => break,
        };
        if s.write_all(data).await.is_err() {
            // The owner stopped reading: its answer (or silence) decides.
            break;
        }
    }
    smol::future::pending::<()>().await
}

/// Bytes read from the owner at a time.
const READ_BYTES: usize = 16 * 1024;

/// Hands body bytes to the engine; `false` once it gave the call up. Yields
/// after each piece: a socket that always has data never returns Pending,
/// and an owner that floods must not starve the thread's other tasks.
async fn deliver(core: &Shared, call: CallId, chunk: &[u8]) -> bool {
    core.borrow_mut().handle(Input::OwnerBody { call, chunk });
    smol::future::yield_now().await;
    core.borrow().forwarding(call)
}

async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    let at = buf.len();
    buf.resize(at + READ_BYTES, 0);
    let n = s.read(&mut buf[at..]).await.unwrap_or(0);
    buf.truncate(at + n);
    n
}

/// Sends `raw` (and the rest of the body, if it still arrives) to the owner
/// and carries its answer into the engine as `Owner*` inputs. The engine
/// owns the call's deadline and limits: it drops this task
/// (`CancelForward`) when it gives up.
/// `false` if the owner refused the connection (nothing was sent; the
/// caller decides what the engine hears).
pub(crate) async fn forward(core: &Shared, call: CallId, to: Owner<'_>, raw: &[u8]) -> bool {
    let fail = |fault| core.borrow_mut().handle(Input::OwnerFailed { call, fault });
    let Ok(mut s) = TcpStream::connect(to.addr).await else {
        if to.upload.is_some() {
            fail(OwnerFault::Unreachable);
        }
        return false;
    };
    let _ = s.set_nodelay(true);
    if s.write_all(raw).await.is_err() {
        fail(OwnerFault::Unreachable);
        return true;
    }
    match to.upload {
        // The answer may come before the body ends (an early 413 or 429).
        Some(up) => {
            let rest = send_rest(s.clone(), up, to.chunked);
            smol::future::or(answer(core, call, &mut s, to.head_req), rest).await
        }
        None => answer(core, call, &mut s, to.head_req).await,
    }
    true
}

/// Reads the owner's answer and feeds it to the engine.
async fn answer(core: &Shared, call: CallId, s: &mut TcpStream, head_req: bool) {
    let feed = |input: Input<'_>| core.borrow_mut().handle(input);
    let fail = |fault| feed(Input::OwnerFailed { call, fault });
    let mut buf = Vec::new();
    let limits = AnswerLimits::default();
    let head = loop {
        match parse_answer(&buf, head_req, &limits) {
            Ok(Some(Answer::Interim(n))) => {
                buf.drain(..n);
            }
            Ok(Some(Answer::Final(head, n))) => {
                buf.drain(..n);
                break head;
            }
            Ok(None) => {
                if read_more(s, &mut buf).await == 0 {
                    return fail(OwnerFault::Unreachable);
                }
            }
            Err(e) => return fail(OwnerFault::BadAnswer(answer_fault(e))),
        }
    };
    let framing = head.framing;
    let streamed = matches!(framing, AnswerFraming::Chunked | AnswerFraming::UntilClose);
    feed(Input::OwnerHead {
        call,
        status: head.status,
        headers: head.headers,
        streamed,
    });
    let ended = match framing {
        AnswerFraming::Empty => Ok(()),
        AnswerFraming::Length(n) => body_of_length(core, call, s, buf, n).await,
        AnswerFraming::Chunked => chunked_body(core, call, s, buf).await,
        AnswerFraming::UntilClose => {
            let mut buf = buf;
            loop {
                if !buf.is_empty() {
                    if !deliver(core, call, &buf).await {
                        return;
                    }
                    buf.clear();
                }
                if read_more(s, &mut buf).await == 0 {
                    break Ok(());
                }
            }
        }
    };
    match ended {
        Ok(()) => feed(Input::OwnerEnd { call }),
        Err(why) => fail(OwnerFault::BadAnswer(why)),
    }
}

fn answer_fault(e: AnswerError) -> &'static str {
    match e {
        AnswerError::TooLarge => "head too large",
        AnswerError::TooManyHeaders => "too many headers",
        AnswerError::Malformed => "malformed head",
        AnswerError::BadStatus => "status not allowed",
        AnswerError::BadHeaderValue => "bad header value",
        AnswerError::BadContentLength => "bad content-length",
        AnswerError::BadTransferEncoding => "bad transfer-encoding",
    }
}

async fn body_of_length(
    core: &Shared,
    call: CallId,
    s: &mut TcpStream,
    mut buf: Vec<u8>,
    mut left: u64,
) -> Result<(), &'static str> {
    loop {
        let take = left.min(buf.len() as u64) as usize;
        if take > 0 {
            if !deliver(core, call, &buf[..take]).await {
                return Ok(());
            }
            left -= take as u64;
        }
        buf.clear();
        if left == 0 {
            return Ok(());
        }
        if read_more(s, &mut buf).await == 0 {
            return Err("closed inside the body");
        }
    }
}

async fn chunked_body(
    core: &Shared,
    call: CallId,
    s: &mut TcpStream,
    mut buf: Vec<u8>,
) -> Result<(), &'static str> {
    let mut dec = ChunkedDecoder::new();
    loop {
        match dec.decode(&buf) {
            Ok(Decoded::Data { consumed, data }) => {
                if !deliver(core, call, &buf[data]).await {
                    return Ok(());
                }
                buf.drain(..consumed);
            }
            Ok(Decoded::NeedMore { consumed }) => {
                buf.drain(..consumed);
                if read_more(s, &mut buf).await == 0 {
                    return Err("closed inside the body");
                }
            }
            Ok(Decoded::Done { .. }) => return Ok(()),
            Err(_) => return Err("bad chunked body"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osaurus_relay_engine::frame::Headers;

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
            body_length: Some(2),
            body_complete: true,
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
