//! The tunnel client's state machine: handshake, agents, keepalive, reconnects.
//!
//! Same contract as [`crate::Relay`]: feed [`ClientInput`]s with the time,
//! drain [`Client::poll_output`], re-arm a timer at [`Client::poll_timeout`].

use crate::auth::{to_checksum, to_lower, tunnel_message, Address, SecretKey};
use crate::frame::{AgentSig, AgentUrl, Body, ChunkData, ClientFrame, Headers, ServerFrame};
use crate::time::ms;
use crate::time::{Entropy, Now};
use std::collections::VecDeque;
use std::time::Duration;

mod events;
pub mod stream;

pub use events::{ClientEvent, ClientInput, ClientOutput};

/// The tunnel client's timings and limits.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// First reconnect delay; it doubles after each failed attempt.
    pub backoff_base: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// ± this percentage of jitter on every backoff delay.
    pub jitter_percent: u64,
    /// A connection up this long resets the backoff.
    pub healthy_after: Duration,
    /// No frame from the relay for this long (it pings every `PING_INTERVAL`): reconnect.
    pub silence_timeout: Duration,
    /// Which local answers stream, how they are cut, and their limits.
    pub stream: stream::StreamPolicy,
    /// Longest a connection to the relay (TCP, TLS, upgrade) may take.
    pub dial_timeout: Duration,
    /// Idle connections to the local server kept for reuse.
    pub max_idle_local: usize,
    /// Reconnect at once after `relay_restarting` (the Osaurus app does
    /// not: it waits its usual backoff, as after any close).
    pub reconnect_at_once_on_restart: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            jitter_percent: 20,
            healthy_after: Duration::from_secs(60),
            silence_timeout: Duration::from_secs(100),
            stream: stream::StreamPolicy::default(),
            dial_timeout: Duration::from_secs(15),
            max_idle_local: 32,
            reconnect_at_once_on_restart: true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Control {
    Challenge,
    Add,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Connecting,
    AwaitChallenge,
    AwaitAuth,
    Ready,
    /// Waiting to reconnect at this time.
    Backoff(u64),
    Stopped,
}

/// The tunnel client's whole protocol state (see the module docs for the run loop).
pub struct Client<E: Entropy> {
    cfg: ClientConfig,
    rng: E,
    now: Now,
    state: State,
    keys: Vec<SecretKey>,
    /// Keys waiting for a mid-session challenge, in order.
    adding: VecDeque<SecretKey>,
    /// Keys whose `add_agent` was sent, awaiting `agent_added` or an error.
    confirming: VecDeque<SecretKey>,
    /// Control frames sent and not yet answered, oldest first: the relay
    /// answers them in order, so an error belongs to the front one.
    outstanding: VecDeque<Control>,
    /// Requests being served locally, and whether their answer is streaming.
    inflight: crate::map::Map<String, bool>,
    attempt: u32,
    online_since: Option<u64>,
    last_heard: u64,
    restart_now: bool,
    /// Extensions the relay listed in `auth_ok`.
    features: Vec<String>,
    out: VecDeque<ClientOutput>,
}

/// What the app answers when its local server fails.
fn local_error(id: String) -> ClientFrame {
    ClientFrame::Response {
        id,
        status: 502,
        headers: Headers(vec![("content-type".into(), "application/json".into())]),
        body: r#"{"error":"local_server_error"}"#.into(),
    }
}

fn hint(error: &str) -> &'static str {
    match error {
        "signature_verification_failed" => "check this machine's clock and the key files",
        "invalid_nonce" => "the handshake raced a reconnect; retrying",
        "too_many_agents" => "the relay allows fewer agents per tunnel",
        "auth_timeout" => "the relay did not get our auth in time; check the network",
        _ => "",
    }
}

impl<E: Entropy> Client<E> {
    /// Starts by asking for a connection.
    pub fn new(cfg: ClientConfig, keys: Vec<SecretKey>, mut rng: E, now: Now) -> Self {
        let mut seed = [0u8; 8];
        rng.fill(&mut seed);
        let mut c = Client {
            cfg,
            rng,
            now,
            state: State::Connecting,
            keys,
            adding: VecDeque::new(),
            confirming: VecDeque::new(),
            outstanding: VecDeque::new(),
            inflight: crate::map::map(u64::from_le_bytes(seed)),
            attempt: 0,
            online_since: None,
            last_heard: now.mono_ms,
            restart_now: false,
            features: Vec::new(),
            out: VecDeque::new(),
        };
        c.out.push_back(ClientOutput::Connect);
        c
    }

    /// The next thing to do; drain after every `handle*` call.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.out.pop_front()
    }

    /// When to call [`Client::handle_timeout`] next (monotonic ms).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.state {
            State::Backoff(at) => Some(at),
            State::Stopped | State::Connecting => None,
            _ => Some(self.last_heard + ms(self.cfg.silence_timeout)),
        }
    }

    /// The handshake completed and the link is up.
    pub fn is_online(&self) -> bool {
        self.state == State::Ready
    }

    /// The agents this client serves.
    pub fn agents(&self) -> Vec<Address> {
        self.keys.iter().map(SecretKey::address).collect()
    }

    /// Calls the local server is working on.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Whether the relay listed this extension in `auth_ok`.
    pub fn relay_has(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }

    fn send(&mut self, f: ClientFrame) {
        self.out.push_back(ClientOutput::Send(f.encode()));
    }

    fn status(&mut self, e: ClientEvent) {
        self.out.push_back(ClientOutput::Status(e));
    }

    fn sign(&self, key: &SecretKey, nonce: &str) -> AgentSig {
        let address = to_checksum(&key.address());
        let msg = tunnel_message(&address, nonce, self.now.unix_secs);
        AgentSig {
            signature: key.sign_message(msg.as_bytes()),
            address,
        }
    }

    /// Runs what is due at `now`: reconnects, silence checks.
    pub fn handle_timeout(&mut self, now: Now) {
        self.now = now;
        match self.state {
            State::Backoff(at) if now.mono_ms >= at => {
                self.state = State::Connecting;
                self.out.push_back(ClientOutput::Connect);
            }
            State::AwaitChallenge | State::AwaitAuth | State::Ready
                if now.mono_ms >= self.last_heard + ms(self.cfg.silence_timeout) =>
            {
                // A dead connection can look open for a long time: drop it.
                self.out.push_back(ClientOutput::Close);
                self.disconnected();
            }
            _ => {}
        }
    }

    /// Feeds one input; then drain [`Client::poll_output`].
    pub fn handle(&mut self, now: Now, input: ClientInput<'_>) {
        self.now = now;
        match input {
            ClientInput::Connected if self.state == State::Connecting => {
                self.state = State::AwaitChallenge;
                self.last_heard = now.mono_ms;
            }
            ClientInput::Connected => {}
            ClientInput::Text(t) => {
                if matches!(
                    self.state,
                    State::AwaitChallenge | State::AwaitAuth | State::Ready
                ) {
                    self.last_heard = now.mono_ms;
                    if let Some(f) = ServerFrame::parse(t) {
                        self.on_frame(f);
                    }
                }
            }
            ClientInput::Disconnected => self.disconnected(),
            ClientInput::LocalResponse {
                id,
                status,
                headers,
                body,
            } => {
                if self.inflight.remove(&id).is_none() {
                    return;
                }
                let body = Body::from_bytes(body);
                if body.is_binary() && !self.relay_has("body_encoding") {
                    self.status(ClientEvent::BinaryNotRelayed { id: id.clone() });
                    return self.send(local_error(id));
                }
                self.send(ClientFrame::Response {
                    id,
                    status,
                    headers,
                    body,
                });
            }
            ClientInput::LocalStreamStart {
                id,
                status,
                headers,
            } => {
                if let Some(streaming) = self.inflight.get_mut(&id) {
                    *streaming = true;
                    self.send(ClientFrame::StreamStart {
                        id,
                        status,
                        headers,
                    });
                }
            }
            ClientInput::LocalStreamChunk { id, data } => {
                if self.inflight.get(&id) == Some(&true) {
                    let data = match Body::from_bytes(data) {
                        Body::Binary(b) if !self.relay_has("stream_body_encoding") => {
                            Body::Text(String::from_utf8_lossy(&b).into_owned())
                        }
                        data => data,
                    };
                    self.send(ClientFrame::StreamChunk {
                        id,
                        data: ChunkData(data),
                    });
                }
            }
            ClientInput::LocalStreamEnd { id } => {
                if self.inflight.remove(&id) == Some(true) {
                    self.send(ClientFrame::StreamEnd { id });
                }
            }
            ClientInput::LocalFailed { id } => match self.inflight.remove(&id) {
                // Mid-stream there is no way to send a status any more: end it.
                Some(true) => self.send(ClientFrame::StreamEnd { id }),
                Some(false) => self.send(local_error(id)),
                None => {}
            },
            ClientInput::AddAgent(key) => {
                if self.keys.iter().any(|k| k.address() == key.address()) {
                    return;
                }
                if self.state == State::Ready {
                    self.adding.push_back(key);
                    self.outstanding.push_back(Control::Challenge);
                    self.send(ClientFrame::RequestChallenge);
                } else {
                    self.keys.push(key);
                }
            }
            ClientInput::RemoveAgent(addr) => {
                let before = self.keys.len();
                self.keys.retain(|k| k.address() != addr);
                if self.keys.len() != before && self.state == State::Ready {
                    self.send(ClientFrame::RemoveAgent {
                        address: to_lower(&addr),
                    });
                }
            }
        }
    }

    fn on_frame(&mut self, f: ServerFrame) {
        match (self.state, f) {
            (State::AwaitChallenge, ServerFrame::Challenge { nonce }) => {
                let agents = self.keys.iter().map(|k| self.sign(k, &nonce)).collect();
                let timestamp = self.now.unix_secs;
                self.send(ClientFrame::Auth {
                    agents,
                    nonce,
                    timestamp,
                });
                self.state = State::AwaitAuth;
            }
            (
                State::AwaitAuth,
                ServerFrame::AuthOk {
                    agents,
                    rejected,
                    features,
                    ..
                },
            ) => {
                self.state = State::Ready;
                self.features = features;
                self.online_since = Some(self.now.mono_ms);
                self.status(ClientEvent::Online { agents, rejected });
            }
            (_, ServerFrame::AuthError { error }) => {
                let hint = hint(&error);
                self.status(ClientEvent::AuthFailed { error, hint });
                self.out.push_back(ClientOutput::Close);
                // Do not wait for the socket to report its close: retry on schedule.
                self.disconnected();
            }
            (State::Ready, ServerFrame::Challenge { nonce }) => {
                if self.outstanding.front() == Some(&Control::Challenge) {
                    self.outstanding.pop_front();
                }
                if let Some(key) = self.adding.pop_front() {
                    self.outstanding.push_back(Control::Add);
                    let AgentSig { address, signature } = self.sign(&key, &nonce);
                    let timestamp = self.now.unix_secs;
                    self.confirming.push_back(key);
                    self.send(ClientFrame::AddAgent {
                        address,
                        signature,
                        nonce,
                        timestamp,
                    });
                }
            }
            (State::Ready, ServerFrame::AgentAdded { address, url, .. }) => {
                let pos = self
                    .confirming
                    .iter()
                    .position(|k| to_lower(&k.address()) == address);
                if let Some(key) = pos.and_then(|i| self.confirming.remove(i)) {
                    self.keys.push(key);
                }
                self.status(ClientEvent::AgentAdded(AgentUrl { address, url }));
            }
            (State::Ready, ServerFrame::AgentRemoved { address, reason }) => {
                let superseded = reason.as_deref() == Some("superseded");
                self.keys
                    .retain(|k| to_lower(&k.address()) != address.to_ascii_lowercase());
                if superseded {
                    // Another session holds this agent now: fighting back would
                    // make two clients take it from each other forever.
                    self.status(ClientEvent::Superseded { address });
                } else {
                    self.status(ClientEvent::AgentRemoved { address });
                }
            }
            (
                State::Ready,
                ServerFrame::Request {
                    id,
                    method,
                    path,
                    headers,
                    body,
                },
            ) if !self.inflight.contains_key(&id) => {
                self.inflight.insert(id.clone(), false);
                let stream_any = self.relay_has("stream_body_encoding");
                self.out.push_back(ClientOutput::Forward {
                    id,
                    method,
                    path,
                    headers,
                    body: body.into_bytes(),
                    stream_any,
                });
            }
            (State::Ready, ServerFrame::Cancel { id }) if self.inflight.contains_key(&id) => {
                self.inflight.remove(&id);
                self.out.push_back(ClientOutput::CancelLocal { id });
            }
            (_, ServerFrame::Ping { ts }) => self.send(ClientFrame::Pong { ts }),
            (_, ServerFrame::Error { error }) => {
                if error == "relay_restarting" {
                    self.restart_now = self.cfg.reconnect_at_once_on_restart;
                    self.status(ClientEvent::RelayRestarting);
                } else {
                    let control_failed = matches!(
                        error.as_str(),
                        "invalid_nonce"
                            | "invalid_signature"
                            | "max_agents_reached"
                            | "address_already_registered"
                            | "rate_limited"
                    );
                    // Answers come in order: the oldest control frame failed.
                    match self.outstanding.front() {
                        Some(Control::Add) if control_failed => {
                            self.outstanding.pop_front();
                            self.confirming.pop_front();
                        }
                        Some(Control::Challenge) if error == "rate_limited" => {
                            self.outstanding.pop_front();
                            self.adding.pop_front();
                        }
                        _ => {}
                    }
                    self.status(ClientEvent::RelayError { error });
                }
            }
            _ => {}
        }
    }

    fn disconnected(&mut self) {
        if matches!(self.state, State::Backoff(_) | State::Stopped) {
            return;
        }
        let mut ids: Vec<String> = self.inflight.drain().map(|(id, _)| id).collect();
        ids.sort();
        for id in ids {
            self.out.push_back(ClientOutput::CancelLocal { id });
        }
        // Adds not confirmed yet go into the next handshake.
        self.outstanding.clear();
        self.keys.extend(self.confirming.drain(..));
        self.keys.extend(self.adding.drain(..));
        if self.keys.is_empty() {
            self.state = State::Stopped;
            self.out.push_back(ClientOutput::Stopped);
            return;
        }
        let healthy = self
            .online_since
            .is_some_and(|t| self.now.mono_ms.saturating_sub(t) >= ms(self.cfg.healthy_after));
        if healthy {
            self.attempt = 0;
        }
        self.online_since = None;
        self.features.clear();
        let delay = if std::mem::take(&mut self.restart_now) {
            0
        } else {
            self.backoff_ms()
        };
        self.attempt = self.attempt.saturating_add(1);
        self.state = State::Backoff(self.now.mono_ms + delay);
        self.status(ClientEvent::Reconnecting {
            in_ms: delay,
            attempt: self.attempt,
        });
    }

    /// base · 2^attempt, capped, ± jitter.
    fn backoff_ms(&mut self) -> u64 {
        let base = ms(self.cfg.backoff_base);
        let max = ms(self.cfg.backoff_max);
        let raw = base.saturating_mul(1u64 << self.attempt.min(32)).min(max);
        let spread = raw * self.cfg.jitter_percent.min(100) / 100;
        if spread == 0 {
            return raw;
        }
        let mut b = [0u8; 8];
        self.rng.fill(&mut b);
        let r = u64::from_le_bytes(b) % (2 * spread + 1);
        raw - spread + r
    }
}

#[cfg(test)]
mod tests;
