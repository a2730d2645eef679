pub mod auth;
pub mod frame;
pub mod limits;
pub mod time;
mod timer;
