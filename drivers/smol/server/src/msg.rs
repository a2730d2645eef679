//! The messages tasks hand each other: what a caller's connection, a
//! tunnel's writer and the directory task must do next. One place, so the
//! modules that send and those that receive depend on it, not on each other.

use osaurus_relay_engine::cluster::ForwardRequest;
use osaurus_relay_engine::http::{Response, ResponseHead};
use osaurus_relay_engine::{CallId, Output, TunnelId};
use osaurus_relay_rt::mailbox::Mailbox;
use smol::channel::Receiver;
use std::cell::Cell;
use std::rc::Rc;

/// What a call's connection task must do next.
pub(crate) enum CallMsg {
    Respond(Response),
    /// A complete answer the engine framed, and whether it keeps the
    /// connection open.
    Answer(Vec<u8>, bool),
    Start(ResponseHead),
    Chunk(Vec<u8>),
    /// The rest of a chunk the hub began to write itself: bytes already
    /// framed, and how many bytes of data the whole chunk held.
    Framed(Vec<u8>, u64),
    End,
    Abort,
    Upgrade(TunnelId, Rc<Outbox>),
}

/// How the hub may write a chunk to the caller's socket itself.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Direct {
    Off,
    Chunked,
    /// HTTP/1.0: the body ends when the connection closes.
    Raw,
}

/// A call's mailbox, and whether its task waits mid-stream with nothing
/// to write: then a chunk is written by the hub straight away, in the turn
/// that read it from the tunnel, and the task is not woken for it.
pub(crate) struct CallBox {
    pub mail: Mailbox<CallMsg>,
    pub direct: Cell<Direct>,
}

impl CallBox {
    pub fn new() -> Self {
        CallBox {
            mail: Mailbox::keeping(),
            direct: Cell::new(Direct::Off),
        }
    }

    /// Ready for the connection's next call (after the hub closed it).
    pub fn reset(&self) {
        self.mail.reopen();
        self.direct.set(Direct::Off);
    }
}

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

/// One directory operation asked for by the engine.
pub(crate) enum DirOp {
    /// `Output::Claim`, `Refresh`, `Release` or `Lookup`, as the engine emitted it.
    Engine(Output),
    /// `Output::Forward`, with what stops its task.
    Forward {
        call: CallId,
        instance: String,
        request: Box<ForwardRequest>,
        /// Closed when the engine gives the call up (`CancelForward`).
        cancel: Receiver<()>,
        /// The rest of a body still arriving (`ForwardBody`, `ForwardBodyEnd`).
        upload: Receiver<Upload>,
    },
}

/// More of a forwarded call's request body.
pub(crate) enum Upload {
    Data(Vec<u8>),
    /// The body is complete; a closed channel without it means cut short.
    End,
}
