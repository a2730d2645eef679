#![warn(missing_docs)]
//! The sans-IO protocol engine of the Osaurus relay.
//!
//! [`Relay`] makes every protocol decision of the relay and does no IO: no
//! sockets, tasks, clocks or OS randomness. A driver feeds it events and
//! carries out the actions it asks for.
//!
//! # The run-loop contract
//! 1. Pass every event to [`Relay::handle`] with the current [`Now`]
//!    (monotonic milliseconds for timers, Unix seconds for the auth window).
//! 2. After **any** `handle*` call, drain [`Relay::poll_output`] until `None`
//!    and carry the outputs out in order.
//! 3. Then re-arm one timer at [`Relay::poll_timeout`]; when it fires, call
//!    [`Relay::handle_timeout`] (spurious or late calls are harmless) and go
//!    back to step 2.
//!
//! Ids the engine no longer knows are ignored, so a driver never needs to
//! guard against races (a caller hanging up while its answer is produced).
//! A peer's misbehaviour always becomes an output (an error frame, a close,
//! a 502), never a panic.
//!
//! ```
//! use osaurus_relay_engine::{CallId, Config, Fields, Input, Now, Output, Relay, RequestHead, SeededRng};
//!
//! let mut now = Now::new(0, 1_709_136_000);
//! let mut relay = Relay::new(Config::default(), SeededRng::new(1), now);
//! let head = RequestHead {
//!     method: "GET",
//!     target: "/health",
//!     host: Some("agent.osaurus.ai"),
//!     headers: Fields::EMPTY,
//!     peer: "127.0.0.1".parse().unwrap(),
//!     content_length: None,
//!     body_follows: false,
//!     websocket: false,
//!     hop: Default::default(),
//!     http1: None,
//! };
//! relay.handle(now, Input::CallHead { call: CallId(1), head });
//! while let Some(output) = relay.poll_output() {
//!     match output {
//!         Output::Respond { call, response } => {
//!             assert_eq!((call, response.status), (CallId(1), 200));
//!         }
//!         other => unreachable!("{other:?}"),
//!     }
//! }
//! // The driver sleeps until the next deadline, then:
//! if let Some(at) = relay.poll_timeout() {
//!     now = now.advanced(at - now.mono_ms);
//!     relay.handle_timeout(now);
//! }
//! ```
//!
//! The client side of the tunnel protocol lives in the same style in
//! [`frame`] (both directions of the wire) and [`auth`] (signing).

pub mod auth;
mod call;
mod claims;
pub mod client;
pub mod cluster;
pub mod config;
mod diag;
pub mod error;
pub mod fields;
mod forward;
pub mod frame;
mod held;
pub mod http;
pub mod input;
pub mod limits;
pub mod map;
pub mod output;
mod presence;
pub mod record;
mod registry;
mod relay;
mod reply;
pub mod stats;
pub mod time;
mod timer;
mod tunnel;
pub mod wire;

pub use cluster::{ClaimOutcome, ClusterConfig, Hop, Located, RemoteRoute};
pub use config::{BinaryBodies, ClientIpSource, Config, DuplicatePolicy};
pub use error::{AuthError, CallError};
pub use fields::Fields;
pub use input::{CallId, Http1Answer, Input, OwnedHead, OwnerFault, RequestHead, TunnelId};
pub use output::{Event, Output};
pub use relay::{Relay, Sizes};
pub use time::{Entropy, Now, SeededRng};
