//! Replaying a call on the instance that holds its agent, and relaying the
//! answer back to the caller as it arrives.

use crate::hub::Shared;
use osaurus_relay_engine::cluster::ForwardRequest;
use osaurus_relay_engine::wire::http1::{
    parse_answer, Answer, AnswerError, AnswerFraming, AnswerLimits, ChunkedDecoder, Decoded,
};
use osaurus_relay_engine::{CallId, Input, OwnerFault};
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
    let tail = format!(
        "{HOP_HEADER}: {secret}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        r.body.len()
    );
    out.extend_from_slice(tail.as_bytes());
    out.extend_from_slice(&r.body);
    out
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

/// Sends `raw` to the owner at `addr` and carries its answer into the
/// engine as `Owner*` inputs. The engine owns the call's deadline and
/// limits: it drops this task (`CancelForward`) when it gives up.
pub(crate) async fn forward(core: &Shared, call: CallId, addr: &str, raw: &[u8], head_req: bool) {
    let feed = |input: Input<'_>| core.borrow_mut().handle(input);
    let fail = |fault| feed(Input::OwnerFailed { call, fault });
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return fail(OwnerFault::Unreachable);
    };
    let _ = s.set_nodelay(true);
    if s.write_all(raw).await.is_err() {
        return fail(OwnerFault::Unreachable);
    }
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
                if read_more(&mut s, &mut buf).await == 0 {
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
        AnswerFraming::Length(n) => body_of_length(core, call, &mut s, buf, n).await,
        AnswerFraming::Chunked => chunked_body(core, call, &mut s, buf).await,
        AnswerFraming::UntilClose => {
            let mut buf = buf;
            loop {
                if !buf.is_empty() {
                    if !deliver(core, call, &buf).await {
                        return;
                    }
                    buf.clear();
                }
                if read_more(&mut s, &mut buf).await == 0 {
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
