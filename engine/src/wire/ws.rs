//! A client's WebSocket frames (RFC 6455, server side), read out of whatever
//! the socket returned, and the server's frames written. Only an incomplete
//! frame or a fragmented message is kept between reads, so an idle tunnel
//! holds no read buffer at all.

/// A frame's opcode (RFC 6455 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// Continues a fragmented message (0).
    Continue,
    /// A UTF-8 text message, or its first fragment (1).
    Text,
    /// A binary message, or its first fragment (2).
    Binary,
    /// Closes the connection (8).
    Close,
    /// Asks for a pong (9).
    Ping,
    /// Answers a ping (10).
    Pong,
    /// 3-7 and 11-15: reserved, a protocol error.
    Reserved(u8),
}

impl OpCode {
    fn from_bits(b: u8) -> OpCode {
        match b {
            0 => OpCode::Continue,
            1 => OpCode::Text,
            2 => OpCode::Binary,
            8 => OpCode::Close,
            9 => OpCode::Ping,
            10 => OpCode::Pong,
            other => OpCode::Reserved(other),
        }
    }

    fn bits(self) -> u8 {
        match self {
            OpCode::Continue => 0,
            OpCode::Text => 1,
            OpCode::Binary => 2,
            OpCode::Close => 8,
            OpCode::Ping => 9,
            OpCode::Pong => 10,
            OpCode::Reserved(b) => b & 0x0f,
        }
    }

    fn is_control(self) -> bool {
        self.bits() & 0x08 != 0
    }
}

/// A frame's header as read off the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Last frame of its message.
    pub fin: bool,
    /// Any of RSV1-3 set (no extension is negotiated: a protocol error).
    pub rsv: bool,
    /// What the frame carries.
    pub opcode: OpCode,
    /// The client's masking key; `None` when unmasked (a protocol error from a client).
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub len: u64,
    /// Header bytes before the payload.
    pub size: usize,
}

/// Reads the header at the start of `b`; `Ok(None)` until all of it is there.
pub fn parse_header(b: &[u8]) -> Result<Option<FrameHeader>, Fault> {
    let [b0, b1, rest @ ..] = b else {
        return Ok(None);
    };
    let (len, ext) = match b1 & 0x7f {
        126 => match rest {
            [x, y, ..] => (u64::from(u16::from_be_bytes([*x, *y])), 2),
            _ => return Ok(None),
        },
        127 => match rest.get(..8) {
            Some(x) => {
                let mut w = [0u8; 8];
                w.copy_from_slice(x);
                let len = u64::from_be_bytes(w);
                // The most significant bit must be 0.
                if len >> 63 != 0 {
                    return Err(Fault::Protocol);
                }
                (len, 8)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 0),
    };
    let mask = if b1 & 0x80 != 0 {
        match rest.get(ext..ext + 4) {
            Some(m) => Some([m[0], m[1], m[2], m[3]]),
            None => return Ok(None),
        }
    } else {
        None
    };
    Ok(Some(FrameHeader {
        fin: b0 & 0x80 != 0,
        rsv: b0 & 0x70 != 0,
        opcode: OpCode::from_bits(b0 & 0x0f),
        mask,
        len,
        size: 2 + ext + if mask.is_some() { 4 } else { 0 },
    }))
}

/// A complete message or control frame from the client.
#[derive(Debug, PartialEq)]
pub enum Msg<'a> {
    /// A whole text message, checked as UTF-8.
    Text(&'a str),
    /// A whole binary message; its bytes are not kept.
    Binary,
    /// A ping's payload, to echo in the pong.
    Ping(&'a [u8]),
    /// The client closes, with its status code if it gave one.
    Close(Option<u16>),
}

/// Why the connection must be closed, as a close frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// The client broke RFC 6455 (close 1002).
    Protocol,
    /// A message over the reader's limit (close 1009).
    TooBig,
    /// Text that is not UTF-8 (close 1007).
    BadUtf8,
}

impl Fault {
    /// The close code and reason to send.
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

/// Reassembles a client's messages from socket reads, up to `max` bytes each.
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
    /// A reader that refuses messages over `max` bytes.
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
        let total = match parse_header(rest) {
            Ok(Some(h)) => usize::try_from(h.len).unwrap_or(usize::MAX),
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
            let Some(h) = parse_header(&data[pos..])? else {
                break;
            };
            let (start, len) = (pos + h.size, h.len);
            if h.opcode.is_control() && (!h.fin || len > 125) {
                return Err(Fault::Protocol);
            }
            // A continuation counts with the message it continues.
            let held = match (h.opcode, &self.message) {
                (OpCode::Continue, Some((_, m))) => m.len(),
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
            if h.rsv {
                return Err(Fault::Protocol);
            }
            let payload = &mut data[start..end];
            unmask(payload, mask);
            match h.opcode {
                OpCode::Ping => on(Msg::Ping(payload)),
                OpCode::Pong => {}
                OpCode::Close => {
                    on(Msg::Close(close_code(payload)?));
                    return Ok((pos, true));
                }
                OpCode::Continue => {
                    let Some((_, m)) = self.message.as_mut() else {
                        return Err(Fault::Protocol);
                    };
                    m.extend_from_slice(payload);
                    if h.fin {
                        if let Some((text, m)) = self.message.take() {
                            deliver(text, &m, on)?;
                        }
                    }
                }
                OpCode::Text | OpCode::Binary => {
                    if self.message.is_some() {
                        return Err(Fault::Protocol);
                    }
                    let text = h.opcode == OpCode::Text;
                    if h.fin {
                        deliver(text, payload, on)?;
                    } else {
                        self.message = Some((text, payload.to_vec()));
                    }
                }
                OpCode::Reserved(_) => return Err(Fault::Protocol),
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
    out.push(0x80 | opcode.bits());
    match len {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    for p in payload {
        out.extend_from_slice(p);
    }
}

#[cfg(test)]
mod tests;
