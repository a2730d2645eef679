//! The pure codecs every driver shares: a strict HTTP/1.1 server codec
//! (request heads, chunked bodies, response heads and chunks, the answers
//! of an upstream HTTP/1.1 server) and server-side WebSocket frames. Bytes
//! in, values out: no IO, no state beyond what a partial read needs.
//! [`Relay`](crate::Relay) does not use them; the drivers do, and the fuzz
//! targets reach them without building any IO crate.

pub mod http1;
pub mod ws;
