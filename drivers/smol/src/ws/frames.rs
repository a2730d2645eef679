//! A client's WebSocket frames (RFC 6455, server side), read out of whatever
//! the socket returned. Only an incomplete frame or a fragmented message is
//! kept between reads, so an idle tunnel holds no read buffer at all.

use async_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use async_tungstenite::tungstenite::protocol::frame::FrameHeader;
use std::io::Cursor;

/// A complete message or control frame from the client.
#[derive(Debug, PartialEq)]
pub enum Msg<'a> {
    Text(&'a str),
    Binary,
    Ping(&'a [u8]),
    /// The client closes, with its status code if it gave one.
    Close(Option<u16>),
}

/// Why the connection must be closed, as a close frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    Protocol,
    TooBig,
    BadUtf8,
}

impl Fault {
    pub fn close(self) -> (u16, &'static str) {
        match self {
            Fault::Protocol => (1002, "protocol error"),
            Fault::TooBig => (1009, "message too big"),
            Fault::BadUtf8 => (1007, "invalid utf-8"),
        }
    }
}

/// The most reserved for a frame before its bytes arrive.
const RESERVE_AHEAD: usize = 1 << 20;

pub struct FrameReader {
    max: usize,
    /// The start of a frame that has not fully arrived.
    partial: Vec<u8>,
    /// A fragmented message being put together: text or not, bytes so far.
    message: Option<(bool, Vec<u8>)>,
}

/// What feeding bytes came to.
pub type Fed = Result<bool, Fault>;

impl FrameReader {
    pub fn new(max: usize) -> Self {
        FrameReader {
            max,
            partial: Vec::new(),
            message: None,
        }
    }

    /// Feeds bytes just read (unmasked in place) and calls `on` for every
    /// complete message; `Ok(true)` once the client's close frame was seen.
    pub fn feed(&mut self, data: &mut [u8], on: &mut dyn FnMut(Msg<'_>)) -> Fed {
        if self.partial.is_empty() {
            let (used, closed) = self.frames(data, on)?;
            if !closed {
                self.keep(&data[used..]);
            }
            return Ok(closed);
        }
        self.partial.extend_from_slice(data);
        let mut buf = std::mem::take(&mut self.partial);
        let (used, closed) = self.frames(&mut buf, on)?;
        if !closed && used < buf.len() {
            buf.drain(..used);
            self.partial = buf;
        }
        Ok(closed)
    }

    fn keep(&mut self, rest: &[u8]) {
        if rest.is_empty() {
            return;
        }
        // A frame's size is known from its header: allocate once, up to a
        // point (a claim of a huge frame must not reserve memory by itself).
        let total = match FrameHeader::parse(&mut Cursor::new(rest)) {
            Ok(Some((_, len))) => usize::try_from(len).unwrap_or(usize::MAX),
            _ => 0,
        };
        self.partial
            .reserve(total.min(self.max).min(RESERVE_AHEAD).saturating_add(14));
        self.partial.extend_from_slice(rest);
    }

    /// Handles the complete frames at the start of `data`; returns the bytes used.
    fn frames(
        &mut self,
        data: &mut [u8],
        on: &mut dyn FnMut(Msg<'_>),
    ) -> Result<(usize, bool), Fault> {
        let mut pos = 0;
        while pos < data.len() {
            let mut c = Cursor::new(&data[pos..]);
            let Some((h, len)) = FrameHeader::parse(&mut c).map_err(|_| Fault::Protocol)? else {
                break;
            };
            let start = pos + c.position() as usize;
            let control = matches!(h.opcode, OpCode::Control(_));
            if control && (!h.is_final || len > 125) {
                return Err(Fault::Protocol);
            }
            // A continuation counts with the message it continues.
            let held = match (&h.opcode, &self.message) {
                (OpCode::Data(Data::Continue), Some((_, m))) => m.len(),
                _ => 0,
            };
            if len > self.max.saturating_sub(held) as u64 {
                return Err(Fault::TooBig);
            }
            let end = start + len as usize;
            if end > data.len() {
                break;
            }
            pos = end;
            let Some(mask) = h.mask else {
                return Err(Fault::Protocol);
            };
            if h.rsv1 || h.rsv2 || h.rsv3 {
                return Err(Fault::Protocol);
            }
            let payload = &mut data[start..end];
            unmask(payload, mask);
            match h.opcode {
                OpCode::Control(c) => match c {
                    Control::Ping => on(Msg::Ping(payload)),
                    Control::Pong => {}
                    Control::Close => {
                        on(Msg::Close(close_code(payload)?));
                        return Ok((pos, true));
                    }
                    Control::Reserved(_) => return Err(Fault::Protocol),
                },
                OpCode::Data(Data::Continue) => {
                    let Some((_, m)) = self.message.as_mut() else {
                        return Err(Fault::Protocol);
                    };
                    m.extend_from_slice(payload);
                    if h.is_final {
                        if let Some((text, m)) = self.message.take() {
                            deliver(text, &m, on)?;
                        }
                    }
                }
                OpCode::Data(d @ (Data::Text | Data::Binary)) => {
                    if self.message.is_some() {
                        return Err(Fault::Protocol);
                    }
                    let text = d == Data::Text;
                    if h.is_final {
                        deliver(text, payload, on)?;
                    } else {
                        self.message = Some((text, payload.to_vec()));
                    }
                }
                OpCode::Data(Data::Reserved(_)) => return Err(Fault::Protocol),
            }
        }
        Ok((pos, false))
    }
}

fn deliver(text: bool, bytes: &[u8], on: &mut dyn FnMut(Msg<'_>)) -> Result<(), Fault> {
    if text {
        on(Msg::Text(
            std::str::from_utf8(bytes).map_err(|_| Fault::BadUtf8)?,
        ));
    } else {
        on(Msg::Binary);
    }
    Ok(())
}

fn close_code(payload: &[u8]) -> Result<Option<u16>, Fault> {
    match payload {
        [] => Ok(None),
        [_] => Err(Fault::Protocol),
        [a, b, reason @ ..] => {
            std::str::from_utf8(reason).map_err(|_| Fault::BadUtf8)?;
            Ok(Some(u16::from_be_bytes([*a, *b])))
        }
    }
}

/// XORs the client's mask over its payload, eight bytes at a time.
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Appends one unmasked, final server frame of `len` payload bytes: its
/// header, then the parts given (none when the payload is written apart).
pub fn encode(out: &mut Vec<u8>, opcode: OpCode, payload: &[&[u8]], len: usize) {
    let h = FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
    };
    // Writing into a Vec cannot fail.
    let _ = h.format(len as u64, out);
    for p in payload {
        out.extend_from_slice(p);
    }
}

#[cfg(test)]
mod tests;
