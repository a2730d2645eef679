//! The Osaurus relay on smol: the driver that wires the sans-IO engine to sockets.

pub mod client;
mod cluster;
pub mod config;
mod conn;
mod core;
pub mod entropy;
pub mod keys;
mod mailbox;
pub mod server;
mod sock;
pub mod ws;

pub use config::ServeArgs;
pub use server::{run, RelayHandle};
