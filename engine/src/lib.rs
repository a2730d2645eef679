pub mod auth;
mod call;
pub mod frame;
pub mod http;
pub mod input;
pub mod limits;
pub mod output;
mod relay;
pub mod stats;
pub mod time;
mod timer;
mod tunnel;

pub use input::{CallId, Input, RequestHead, TunnelId};
pub use limits::{ClientIpSource, Config, DuplicatePolicy};
pub use output::{Event, Output};
pub use relay::{Relay, Sizes};
pub use time::{Entropy, Now, SeededRng};
