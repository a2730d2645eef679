//! The Osaurus relay server on smol: the driver that wires the sans-IO
//! engine to sockets, timers and Redis. Every decision is the engine's; the
//! tasks here carry bytes and time.
//!
//! # Task layout (one thread, one [`smol::LocalExecutor`])
//! - **accept** ([`server`]): takes connections and spawns one task each;
//!   on SIGTERM it stops accepting and feeds `Input::Shutdown`.
//! - **per connection** (`conn`): reads HTTP/1.1 requests with the engine's
//!   strict codec, feeds heads and bodies in, and writes what the engine
//!   answers from the call's mailbox. An upgraded connection becomes:
//! - **per tunnel** (`ws`): one task reads WebSocket frames straight into
//!   the engine; the writer drains the tunnel's [`Outbox`](msg) in one
//!   vectored write per batch.
//! - **timer** (`hub::run_timer`): sleeps until the engine's next deadline and
//!   calls `handle_timeout`; re-armed when a deadline moves earlier.
//! - **directory** (`cluster`, with `REDIS_URL`): one task per Redis
//!   operation the engine asks for, its result fed back as an input; a
//!   heartbeat renews this instance's address; a forwarding task per call
//!   forwarded to another instance carries the owner's answer in.
//!
//! All of them share the engine through `hub::Core` (`Rc<RefCell<_>>`,
//! never borrowed across an await). Messages between tasks are in `msg`.

mod cluster;
pub mod config;
mod conn;
mod hub;
mod metrics;
mod msg;
pub mod server;
mod stream;
pub mod tls;
mod ws;

pub use config::ServeArgs;
pub use server::{run, RelayHandle};
