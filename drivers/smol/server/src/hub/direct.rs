//! Chunks written to callers' sockets by the hub itself. While a caller's
//! task waits mid-stream with nothing queued, a chunk is framed here, and
//! every chunk one tunnel read (or one input) carried for that caller goes
//! out in one write when the read is done: in the same event-loop turn, so
//! no token waits, and a burst of small chunks is one send, not one each.

use super::Core;
use crate::msg::{CallMsg, Direct};
use osaurus_relay_engine::wire::http1;
use osaurus_relay_engine::CallId;

/// Framed bytes for one caller, waiting for the end of the read.
pub(super) struct Pending {
    call: CallId,
    bytes: Vec<u8>,
    /// Data bytes in them (what the engine counts as queued).
    data: u64,
}

/// Buffers kept for the next batch, at most, and the largest kept.
const SPARE: usize = 16;
const SPARE_BYTES: usize = 64 * 1024;

impl Core {
    /// A chunk for `id`: framed for a direct write when its task waits
    /// mid-stream with nothing queued, else handed to the task.
    pub(super) fn write_chunk(&mut self, id: CallId, data: Vec<u8>) {
        let Some(p) = self.calls.get(&id) else {
            return;
        };
        let direct = p.mail.direct.get();
        if direct == Direct::Off || !p.mail.mail.is_empty() {
            return self.send_call(id, CallMsg::Chunk(data));
        }
        let at = match self.pending.iter().position(|p| p.call == id) {
            Some(at) => at,
            None => {
                let bytes = self.spare.pop().unwrap_or_default();
                self.pending.push(Pending {
                    call: id,
                    bytes,
                    data: 0,
                });
                self.pending.len() - 1
            }
        };
        let p = &mut self.pending[at];
        p.data += data.len() as u64;
        match direct {
            Direct::Chunked => http1::write_chunk(&mut p.bytes, &data),
            _ => p.bytes.extend_from_slice(&data),
        }
        self.relay.recycle(data);
    }

    /// What is framed for `id` goes to its task first, before `msg`: the
    /// order of a stream's bytes is kept.
    pub(super) fn before_message(&mut self, id: CallId) {
        if let Some(at) = self.pending.iter().position(|p| p.call == id) {
            let p = self.pending.swap_remove(at);
            if let Some(c) = self.calls.get(&id) {
                c.mail.mail.push(CallMsg::Framed(p.bytes, p.data));
            }
        }
    }

    /// The call is over or cut: what waited for it is dropped.
    pub(super) fn forget_pending(&mut self, id: CallId) {
        self.pending.retain(|p| p.call != id);
    }

    /// Writes what waits: each caller's bytes in one write. A short write
    /// or a full socket leaves the rest to the caller's task.
    pub(super) fn flush_direct(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        // Taken and put back: the list keeps its memory between batches.
        let mut pending = std::mem::take(&mut self.pending);
        for p in pending.drain(..) {
            let Some(c) = self.calls.get(&p.call) else {
                continue;
            };
            match c.socket.try_write_plain(&p.bytes) {
                Some(Ok(n)) if n == p.bytes.len() => {
                    self.drained.push((p.call, p.data));
                    let mut bytes = p.bytes;
                    if self.spare.len() < SPARE && bytes.capacity() <= SPARE_BYTES {
                        bytes.clear();
                        self.spare.push(bytes);
                    }
                }
                Some(Ok(n)) => {
                    let rest = p.bytes[n..].to_vec();
                    self.send_call(p.call, CallMsg::Framed(rest, p.data));
                }
                // Would block, or failed: the task writes it, and sees any failure.
                _ => self.send_call(p.call, CallMsg::Framed(p.bytes, p.data)),
            }
        }
        self.pending = pending;
    }
}
