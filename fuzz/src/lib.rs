//! Fuzz target bodies. Each is a plain function so that every corpus input
//! also replays as an ordinary test on the stable toolchain.

mod client_steps;
mod parsers;
mod relay_steps;

pub use client_steps::client_steps;
pub use parsers::{chunked, frame_client, frame_relay, http_head, ws_frames};
pub use relay_steps::{relay_steps, relay_steps_counters};

/// A fuzz target body.
pub type Target = fn(&[u8]);

/// Every target by name, for corpus replay.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame_relay", frame_relay),
    ("frame_client", frame_client),
    ("http_head", http_head),
    ("chunked", chunked),
    ("relay_steps", relay_steps),
    ("client_steps", client_steps),
    ("ws_frames", ws_frames),
];
