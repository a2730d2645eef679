//! What the engine queued for one tunnel, taken by its writer all at once.
//! A plain queue and a waker: an idle tunnel holds no channel blocks.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::task::{Poll, Waker};

/// What a tunnel's writer must do next.
pub(crate) enum TunnelMsg {
    Frame(String),
    Close(u16, &'static str),
    /// The answer to a WebSocket ping from the client.
    Pong(Vec<u8>),
}

pub(crate) struct Outbox {
    queue: RefCell<VecDeque<TunnelMsg>>,
    waker: RefCell<Option<Waker>>,
    /// Bytes the tunnel may still send before it authenticates (u64::MAX after).
    pub budget: Cell<u64>,
}

impl Outbox {
    pub fn new() -> Self {
        Outbox {
            queue: RefCell::new(VecDeque::new()),
            waker: RefCell::new(None),
            budget: Cell::new(u64::MAX),
        }
    }

    pub fn push(&self, m: TunnelMsg) {
        self.queue.borrow_mut().push_back(m);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Waits for messages, then takes every one queued.
    pub fn take(&self) -> impl std::future::Future<Output = VecDeque<TunnelMsg>> + '_ {
        std::future::poll_fn(|cx| {
            let mut q = self.queue.borrow_mut();
            if q.is_empty() {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(std::mem::take(&mut *q))
            }
        })
    }
}
