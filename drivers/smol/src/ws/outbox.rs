//! What the engine queued for one tunnel, and its pre-auth read budget.

use crate::mailbox::Mailbox;
use std::cell::Cell;

/// What a tunnel's writer must do next.
pub(crate) enum TunnelMsg {
    Frame(String),
    Close(u16, &'static str),
    /// The answer to a WebSocket ping from the client.
    Pong(Vec<u8>),
}

pub(crate) struct Outbox {
    pub mail: Mailbox<TunnelMsg>,
    /// Bytes the tunnel may still send before it authenticates (u64::MAX after).
    pub budget: Cell<u64>,
}

impl Outbox {
    pub fn new() -> Self {
        Outbox {
            mail: Mailbox::new(),
            budget: Cell::new(u64::MAX),
        }
    }

    pub fn push(&self, m: TunnelMsg) {
        self.mail.push(m);
    }
}
