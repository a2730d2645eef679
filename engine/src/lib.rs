pub mod auth;
pub mod limits;
pub mod time;
mod timer;
