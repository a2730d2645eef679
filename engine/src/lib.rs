pub mod auth;
pub mod frame;
pub mod http;
pub mod limits;
pub mod time;
mod timer;
