//! The engine shared by every task of one relay thread, and output dispatch.

use crate::cluster::directory::Directory;
use crate::cluster::hop;
use crate::msg::{CallBox, CallMsg, DirOp, Outbox, TunnelMsg, Upload};

mod direct;
use crate::stream::Sock;
use osaurus_relay_engine::map::{map, Map};
use osaurus_relay_engine::{
    CallId, Entropy, Event, Fields, Hop, Input, Now, Output, Relay, TunnelId,
};
use osaurus_relay_rt::clock::Clock;
use osaurus_relay_rt::entropy::OsEntropy;
use smol::channel::{Receiver, Sender};
use std::cell::RefCell;
use std::net::Shutdown;
use std::rc::Rc;
use std::time::Instant;
use tracing::{info, warn};

struct Peer {
    mail: Rc<CallBox>,
    socket: Sock,
}

pub(crate) struct Core {
    relay: Relay<OsEntropy>,
    /// Several instances: the directory and its operations queue.
    dir: Option<(Rc<Directory>, Sender<DirOp>)>,
    /// Calls being answered by another instance: dropping the first sender
    /// stops the task that carries the owner's answer; the second carries
    /// the rest of a request body still arriving.
    forwards: Map<CallId, (Sender<()>, Sender<Upload>)>,
    clock: Clock,
    calls: Map<CallId, Peer>,
    tunnels: Map<TunnelId, Rc<Outbox>>,
    next_call: u64,
    armed: Option<u64>,
    /// Chunks the hub wrote to callers itself, for `CallDrained` (call, data bytes).
    drained: Vec<(CallId, u64)>,
    /// Chunks framed for direct writes, sent when the input or read is done.
    pending: Vec<direct::Pending>,
    spare: Vec<Vec<u8>>,
    /// A tunnel read is being fed: direct writes wait for its end.
    batching: bool,
    /// The time of the last input, for the writes at a batch's end.
    batch_now: Now,
    /// A caller's task was handed a message since the last `take_fed`.
    fed: bool,
    timer_wake: Sender<()>,
    done: Sender<()>,
}

pub(crate) type Shared = Rc<RefCell<Core>>;

impl Core {
    pub fn new(
        relay_cfg: osaurus_relay_engine::Config,
        timer_wake: Sender<()>,
        done: Sender<()>,
    ) -> Self {
        let clock = Clock::new();
        let now = clock.now();
        let mut entropy = OsEntropy::new();
        let mut seed = [0u8; 8];
        entropy.fill(&mut seed);
        let seed = u64::from_le_bytes(seed);
        Core {
            relay: Relay::new(relay_cfg, entropy, now),
            dir: None,
            forwards: map(seed),
            clock,
            calls: map(seed),
            tunnels: map(seed),
            next_call: 0,
            armed: None,
            drained: Vec::new(),
            pending: Vec::new(),
            spare: Vec::new(),
            batching: false,
            batch_now: now,
            fed: false,
            timer_wake,
            done,
        }
    }

    pub fn set_directory(&mut self, dir: Rc<Directory>, ops: Sender<DirOp>) {
        self.dir = Some((dir, ops));
    }

    /// How the call with these headers reached this instance.
    pub fn hop(&self, headers: Fields<'_>) -> Hop {
        hop::hop(self.dir.as_ref().map(|(d, _)| &**d), headers)
    }

    /// Whether the engine still waits for the owner's answer to `call`.
    pub fn forwarding(&self, call: CallId) -> bool {
        self.forwards.contains_key(&call)
    }

    /// A forwarding task ended (the owner's answer is done, or it was cancelled).
    pub fn end_forward(&mut self, call: CallId) {
        self.forwards.remove(&call);
    }

    /// When engine time `ms` is.
    pub fn instant(&self, ms: u64) -> Instant {
        self.clock.instant(ms)
    }

    fn now(&self) -> Now {
        self.clock.now()
    }

    /// Registers a new call of the connection `socket`; its messages arrive on the receiver.
    /// A call on `socket`; `reuse` is the connection's last call's mailbox,
    /// which nothing else holds any more.
    pub fn new_call(&mut self, socket: &Sock, reuse: Option<Rc<CallBox>>) -> (CallId, Rc<CallBox>) {
        self.next_call += 1;
        let id = CallId(self.next_call);
        let mail = match reuse {
            Some(b) => {
                b.reset();
                b
            }
            None => Rc::new(CallBox::new()),
        };
        self.calls.insert(
            id,
            Peer {
                mail: mail.clone(),
                socket: socket.clone(),
            },
        );
        (id, mail)
    }

    pub fn end_call(&mut self, id: CallId) {
        self.forget_pending(id);
        if let Some(p) = self.calls.remove(&id) {
            p.mail.mail.close();
        }
    }

    /// A buffer the engine gave out, written: kept for its next output.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.relay.recycle(buf);
    }

    pub fn end_tunnel(&mut self, id: TunnelId) {
        self.tunnels.remove(&id);
    }

    pub fn open_tunnels(&self) -> usize {
        self.tunnels.len()
    }

    pub fn stats(&self) -> osaurus_relay_engine::stats::Stats {
        self.relay.stats()
    }

    pub fn reconnect_grace(&self) -> std::time::Duration {
        self.relay.config().reconnect_grace
    }

    pub fn draining(&self) -> bool {
        self.relay.is_draining()
    }

    pub fn open_connections(&self) -> u64 {
        crate::stream::open_count()
    }

    pub fn handle(&mut self, input: Input<'_>) {
        let now = self.now();
        self.batch_now = now;
        self.relay.handle(now, input);
        self.pump(now);
    }

    pub fn handle_timeout(&mut self) {
        let now = self.now();
        self.relay.handle_timeout(now);
        self.pump(now);
    }

    /// The deadline the timer task should sleep until; remembers it as armed.
    pub fn arm(&mut self) -> Option<u64> {
        self.armed = self.relay.poll_timeout();
        self.armed
    }

    /// Whether a caller's task was handed a message since the last call.
    pub fn take_fed(&mut self) -> bool {
        std::mem::take(&mut self.fed)
    }

    /// Carries out the engine's outputs; `now` is the time of the input
    /// that made them (chunks written meanwhile are drained at that time).
    fn pump(&mut self, now: Now) {
        loop {
            while let Some(o) = self.relay.poll_output() {
                self.dispatch(o);
            }
            if !self.batching {
                self.flush_direct();
            }
            if self.drained.is_empty() {
                break;
            }
            let mut drained = std::mem::take(&mut self.drained);
            for (call, bytes) in drained.drain(..) {
                self.relay.handle(now, Input::CallDrained { call, bytes });
            }
            self.drained = drained;
        }
        if let Some(t) = self.relay.poll_timeout() {
            if self.armed.is_none_or(|a| t < a) {
                let _ = self.timer_wake.try_send(());
            }
        }
    }

    /// The frames of one tunnel read are fed between these two: chunks for
    /// one caller go out in one write at its end.
    pub fn begin_batch(&mut self) {
        self.batching = true;
    }

    pub fn end_batch(&mut self) {
        self.batching = false;
        if !self.pending.is_empty() {
            // The time of the read's last frame: the writes follow it at once.
            self.pump(self.batch_now);
        }
    }

    fn send_call(&mut self, id: CallId, msg: CallMsg) {
        self.before_message(id);
        if let Some(p) = self.calls.get(&id) {
            p.mail.mail.push(msg);
            self.fed = true;
        }
    }

    fn dispatch(&mut self, o: Output) {
        match o {
            Output::Respond { call, response } => self.send_call(call, CallMsg::Respond(response)),
            Output::Answer {
                call,
                bytes,
                keep_alive,
                ..
            } => self.send_call(call, CallMsg::Answer(bytes, keep_alive)),
            Output::StartStream { call, head } => self.send_call(call, CallMsg::Start(head)),
            Output::WriteChunk { call, data } => self.write_chunk(call, data),
            Output::EndStream { call } => self.send_call(call, CallMsg::End),
            Output::AbortStream { call } => {
                self.forget_pending(call);
                // The writer may be blocked on a caller that does not read: cut it loose.
                if let Some(p) = self.calls.get(&call) {
                    p.socket.shutdown(Shutdown::Both);
                }
                self.send_call(call, CallMsg::Abort)
            }
            Output::Upgrade { call, tunnel } => {
                let out = Rc::new(Outbox::new());
                self.tunnels.insert(tunnel, out.clone());
                self.send_call(call, CallMsg::Upgrade(tunnel, out));
            }
            Output::SendFrame { tunnel, text } => {
                if let Some(out) = self.tunnels.get(&tunnel) {
                    out.push(TunnelMsg::Frame(text));
                }
            }
            Output::CloseTunnel {
                tunnel,
                code,
                reason,
            } => {
                if let Some(out) = self.tunnels.get(&tunnel) {
                    out.push(TunnelMsg::Close(code, reason));
                }
            }
            Output::Authenticated { tunnel } => {
                if let Some(out) = self.tunnels.get(&tunnel) {
                    out.budget.set(u64::MAX);
                }
            }
            Output::Event(e) => log_event(&e),
            o @ (Output::Claim { .. }
            | Output::Refresh { .. }
            | Output::Release { .. }
            | Output::Lookup { .. }
            | Output::PresenceLookup { .. }) => self.directory(DirOp::Engine(o)),
            Output::Forward {
                call,
                instance,
                request,
            } => {
                let (tx, cancel) = smol::channel::bounded(1);
                // Unbounded: the engine bounds a body by `MAX_BODY_BYTES`.
                let (up, upload) = smol::channel::unbounded();
                self.forwards.insert(call, (tx, up));
                self.directory(DirOp::Forward {
                    call,
                    instance,
                    request,
                    cancel,
                    upload,
                });
            }
            Output::ForwardBody { call, data } => {
                if let Some((_, up)) = self.forwards.get(&call) {
                    let _ = up.try_send(Upload::Data(data));
                }
            }
            Output::ForwardBodyEnd { call } => {
                if let Some((_, up)) = self.forwards.get(&call) {
                    let _ = up.try_send(Upload::End);
                }
            }
            Output::CancelForward { call } => {
                self.forwards.remove(&call);
            }
            Output::ShutdownComplete => {
                info!("shutdown complete: tunnels told relay_restarting");
                let _ = self.done.try_send(());
            }
        }
    }
}

impl Core {
    fn directory(&mut self, op: DirOp) {
        if let Some((dir, tx)) = &self.dir {
            // Counted from now: shutdown waits for it even before its task runs.
            dir.inflight.set(dir.inflight.get() + 1);
            if tx.try_send(op).is_err() {
                dir.inflight.set(dir.inflight.get() - 1);
            }
        }
    }
}

fn log_event(e: &Event) {
    match e {
        Event::TunnelUp { tunnel, ip, agents } => {
            info!(tunnel = tunnel.0, %ip, agents, "tunnel up")
        }
        Event::TunnelDown {
            tunnel,
            agents,
            reason,
        } => {
            info!(tunnel = tunnel.0, agents, reason, "tunnel down")
        }
        Event::AuthFailed { tunnel, ip, reason } => {
            warn!(tunnel = tunnel.0, %ip, reason, "tunnel auth failed")
        }
        Event::AgentAdded { tunnel, address } => info!(tunnel = tunnel.0, address, "agent added"),
        Event::AgentRemoved {
            tunnel,
            address,
            reason,
        } => {
            info!(tunnel = tunnel.0, address, reason, "agent removed")
        }
        Event::BadHostResponse { tunnel, why } => {
            warn!(tunnel = tunnel.0, why, "bad answer from tunnel")
        }
        Event::SlowConsumer { tunnel } => warn!(tunnel = tunnel.0, "slow caller: stream cut"),
        Event::BadOwnerAnswer { call, why } => {
            warn!(call = call.0, why, "bad answer from the owner instance")
        }
        Event::ShuttingDown { calls, tunnels } => {
            info!(calls, tunnels, "shutting down: draining calls")
        }
        Event::CallDone(d) => info!(
            agent = d.agent,
            method = d.method,
            path = d.path,
            client_ip = %d.client_ip,
            status = d.status,
            outcome = d.outcome,
            forwarded = d.forwarded,
            ttfb_ms = d.ttfb_ms,
            host_ms = d.host_ms,
            lookup_ms = d.lookup_ms,
            total_ms = d.total_ms,
            bytes_in = d.bytes_in,
            bytes_out = d.bytes_out,
            "relay.request"
        ),
    }
}

/// Sleeps until the engine's next deadline, re-arming when it moves earlier.
pub(crate) async fn run_timer(core: Shared, wake: Receiver<()>) {
    loop {
        let deadline = {
            let mut c = core.borrow_mut();
            c.arm().map(|ms| c.instant(ms))
        };
        // On the thread's wheel: no async-io timer stays armed (see `wheel`).
        let timer = async move {
            match deadline {
                Some(at) => osaurus_relay_rt::wheel::Deadline::at(at).await,
                None => std::future::pending().await,
            }
        };
        let fired = smol::future::race(
            async {
                timer.await;
                true
            },
            async {
                let _ = wake.recv().await;
                false
            },
        )
        .await;
        if fired {
            core.borrow_mut().handle_timeout();
        }
    }
}
