//! `osaurus-relay tunnel`: the tunnel client on smol. The engine's
//! [`Client`] decides everything; the tasks here carry bytes and time.
//!
//! # Task layout (one thread)
//! - **the loop** ([`run`]): owns the engine, feeds it every event from one
//!   channel, carries its outputs out, and sleeps until its next deadline.
//! - **dial**: one task per connection attempt (TCP, TLS, WebSocket upgrade),
//!   bounded by `ClientConfig::dial_timeout`.
//! - **relay link**: a reader task turns frames into events; a writer task
//!   drains the send queue, counting what it wrote against the [`Gate`].
//! - **local calls**: one task per forwarded request talks HTTP/1.1 to the
//!   local server ([`Local`]) and reports the answer, streamed ones only as
//!   fast as the relay link takes them.
//! - **stdin** (optional): `add <keyfile>` / `remove <address>` commands.

mod dial;
mod local;

pub use dial::RelayUrl;
pub use local::{Gate, Local, LocalEvent, Request};

use async_tungstenite::tungstenite::Message;
use osaurus_relay_engine::auth::{parse_address, SecretKey};
use osaurus_relay_engine::client::{Client, ClientConfig, ClientEvent, ClientInput, ClientOutput};
use osaurus_relay_engine::Now;
use osaurus_relay_rt::entropy::OsEntropy;
use smol::channel::{unbounded, Sender};
use smol::future::FutureExt;
use smol::stream::StreamExt;
use smol::{LocalExecutor, Task};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;
use tracing::{info, warn};

pub struct TunnelOpts {
    pub relay: RelayUrl,
    pub local: Local,
    pub keys: Vec<SecretKey>,
    pub client: ClientConfig,
    /// Take `add <keyfile>` / `remove <address>` commands from standard input.
    pub stdin_commands: bool,
    /// Also deliver every status event here (tests, embedding).
    pub events: Option<Sender<ClientEvent>>,
}

enum Ev {
    Dialed(
        u64,
        Result<Box<async_tungstenite::WebSocketStream<dial::Conn>>, String>,
    ),
    Text(u64, String),
    Closed(u64),
    Local(String, LocalEvent),
    Command(String),
}

struct Inflight {
    _task: Task<()>,
    started: Instant,
    method: String,
    path: String,
}

/// Runs the tunnel until every agent is gone (or forever).
pub async fn run(ex: &LocalExecutor<'static>, o: TunnelOpts) {
    let clock = osaurus_relay_rt::clock::Clock::new();
    let now = || clock.now();
    let mut client = Client::new(o.client.clone(), o.keys.clone(), OsEntropy::new(), now());
    let mut local = o.local;
    local.policy = o.client.stream.clone();
    local.max_idle = o.client.max_idle_local;
    let dial_timeout = o.client.dial_timeout;
    let gate = Rc::new(Gate::new(local.policy.link_buffer_bytes));
    let local = Rc::new(local);
    let (ev_tx, ev_rx) = unbounded::<Ev>();
    // The current connection: its generation and its writer's queue.
    let mut generation = 0u64;
    let mut writer: Option<(Sender<Message>, Task<()>, Task<()>)> = None;
    let mut inflight: HashMap<String, Inflight> = HashMap::new();
    if o.stdin_commands {
        spawn_stdin(ex, ev_tx.clone());
    }
    loop {
        while let Some(out) = client.poll_output() {
            match out {
                ClientOutput::Connect => {
                    generation += 1;
                    let (g, tx, relay) = (generation, ev_tx.clone(), o.relay.clone());
                    info!(relay = %relay.connect_url(), "connecting");
                    ex.spawn(async move {
                        // A peer that accepts TCP but never finishes TLS or the
                        // upgrade must not leave the client offline for good.
                        let dialed = async { dial::dial(&relay).await.map(Box::new) }
                            .or(async {
                                async_io::Timer::after(dial_timeout).await;
                                Err("timed out connecting to the relay".to_string())
                            })
                            .await;
                        let _ = tx.send(Ev::Dialed(g, dialed)).await;
                    })
                    .detach();
                }
                ClientOutput::Send(text) => {
                    if let Some((w, _, _)) = &writer {
                        gate.add(text.len() as u64);
                        let _ = w.try_send(Message::text(text));
                    }
                }
                ClientOutput::Close => {
                    writer = None;
                    gate.reset();
                }
                ClientOutput::Forward {
                    id,
                    method,
                    path,
                    headers,
                    body,
                    stream_any,
                } => {
                    let (tx, l, rid, g) = (ev_tx.clone(), local.clone(), id.clone(), gate.clone());
                    let req = Request {
                        method: method.clone(),
                        path: path.clone(),
                        headers,
                        body,
                    };
                    let task = ex.spawn(async move {
                        // Unbounded: each event reaches the loop as it happens. A
                        // chunk counts against the gate from here, not only once the
                        // loop has framed it: the reader must not run ahead of it.
                        l.call(&req, stream_any, &g, &mut |e| {
                            if let LocalEvent::Chunk(d) = &e {
                                g.add(d.len() as u64);
                            }
                            let _ = tx.try_send(Ev::Local(rid.clone(), e));
                        })
                        .await;
                    });
                    // Query strings may carry secrets: logs get the path only.
                    let path = path.split('?').next().unwrap_or("").to_string();
                    inflight.insert(
                        id,
                        Inflight {
                            _task: task,
                            started: Instant::now(),
                            method,
                            path,
                        },
                    );
                }
                ClientOutput::CancelLocal { id } => {
                    if let Some(f) = inflight.remove(&id) {
                        info!(method = %f.method, path = %f.path, "cancelled by the relay");
                    }
                }
                ClientOutput::Status(e) => {
                    report(&e);
                    if let Some(tx) = &o.events {
                        let _ = tx.try_send(e);
                    }
                }
                ClientOutput::Stopped => {
                    warn!("no agents left to serve: stopping");
                    return;
                }
            }
        }
        let deadline = client.poll_timeout().map(|ms| clock.instant(ms));
        let ev = async { ev_rx.recv().await.ok() }
            .or(async {
                match deadline {
                    Some(d) => async_io::Timer::at(d).await,
                    None => async_io::Timer::never().await,
                };
                None
            })
            .await;
        let Some(ev) = ev else {
            client.handle_timeout(now());
            continue;
        };
        match ev {
            Ev::Dialed(g, _) if g != generation => {}
            Ev::Dialed(_, Err(e)) => {
                warn!(error = %e, "could not reach the relay");
                client.handle(now(), ClientInput::Disconnected);
            }
            Ev::Dialed(g, Ok(ws)) => {
                let (mut tx_ws, mut rx_ws) = (*ws).split();
                let (wtx, wrx) = unbounded::<Message>();
                let (etx, sent) = (ev_tx.clone(), gate.clone());
                gate.reset();
                let write_task = ex.spawn(async move {
                    while let Ok(m) = wrx.recv().await {
                        let n = m.len() as u64;
                        if tx_ws.send(m).await.is_err() {
                            break;
                        }
                        sent.sub(n);
                    }
                    let _ = tx_ws.close(None).await;
                });
                let read_task = ex.spawn(async move {
                    while let Some(Ok(m)) = rx_ws.next().await {
                        match m {
                            Message::Text(t) => {
                                let _ = etx.send(Ev::Text(g, t.as_str().to_string())).await;
                            }
                            Message::Close(_) => break,
                            _ => {}
                        }
                    }
                    let _ = etx.send(Ev::Closed(g)).await;
                });
                writer = Some((wtx, write_task, read_task));
                client.handle(now(), ClientInput::Connected);
            }
            Ev::Text(g, t) if g == generation => client.handle(now(), ClientInput::Text(&t)),
            Ev::Closed(g) if g == generation => {
                writer = None;
                gate.reset();
                client.handle(now(), ClientInput::Disconnected);
            }
            Ev::Text(..) | Ev::Closed(_) => {}
            Ev::Local(id, e) => {
                let done = matches!(
                    e,
                    LocalEvent::Full { .. } | LocalEvent::End | LocalEvent::Failed(_)
                );
                if done {
                    if let Some(f) = inflight.remove(&id) {
                        log_request(&f, &e);
                    }
                }
                let input = match e {
                    LocalEvent::Full {
                        status,
                        headers,
                        body,
                    } => ClientInput::LocalResponse {
                        id,
                        status,
                        headers,
                        body,
                    },
                    LocalEvent::Start { status, headers } => ClientInput::LocalStreamStart {
                        id,
                        status,
                        headers,
                    },
                    LocalEvent::Chunk(data) => {
                        // Its frame (counted by `Send`) replaces the raw bytes.
                        gate.sub(data.len() as u64);
                        ClientInput::LocalStreamChunk { id, data }
                    }
                    LocalEvent::End => ClientInput::LocalStreamEnd { id },
                    LocalEvent::Failed(_) => ClientInput::LocalFailed { id },
                };
                client.handle(now(), input);
            }
            Ev::Command(line) => command(&mut client, now(), &line),
        }
    }
}

fn log_request(f: &Inflight, e: &LocalEvent) {
    let ms = f.started.elapsed().as_millis() as u64;
    match e {
        LocalEvent::Full { status, .. } => {
            info!(method = %f.method, path = %f.path, status, ms, "served")
        }
        LocalEvent::End => info!(method = %f.method, path = %f.path, ms, "stream served"),
        LocalEvent::Failed(why) => {
            warn!(method = %f.method, path = %f.path, ms, error = %why, "local server failed: answered 502")
        }
        _ => {}
    }
}

fn report(e: &ClientEvent) {
    match e {
        ClientEvent::Online { agents, rejected } => {
            for a in agents {
                println!("{} -> {}", a.address, a.url);
                info!(address = %a.address, url = %a.url, "agent online");
            }
            for r in rejected {
                warn!(address = %r.address, reason = %r.reason, "agent rejected by the relay");
            }
        }
        ClientEvent::AgentAdded(a) => {
            println!("{} -> {}", a.address, a.url);
            info!(address = %a.address, url = %a.url, "agent added");
        }
        ClientEvent::AgentRemoved { address } => info!(%address, "agent removed"),
        ClientEvent::Superseded { address } => {
            warn!(%address, "agent superseded: another session took it over; no longer serving it")
        }
        ClientEvent::AuthFailed { error, hint } => {
            warn!(%error, hint, "the relay refused the handshake")
        }
        ClientEvent::RelayError { error } => warn!(%error, "error from the relay"),
        ClientEvent::Reconnecting { in_ms, attempt } => {
            info!(attempt, "reconnecting in {:.1} s", *in_ms as f64 / 1000.0)
        }
        ClientEvent::RelayRestarting => info!("relay restarting: reconnecting at once"),
        ClientEvent::BinaryNotRelayed { .. } => warn!(
            "the local answer is not UTF-8 and this relay does not advertise body_encoding \
             (it would deliver base64 text): answered 502"
        ),
    }
}

/// `add <keyfile>` and `remove <address>` on standard input.
fn command<E: osaurus_relay_engine::Entropy>(client: &mut Client<E>, now: Now, line: &str) {
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("add"), Some(path)) => match osaurus_relay_rt::keys::read(std::path::Path::new(path))
        {
            Ok(k) => client.handle(now, ClientInput::AddAgent(k)),
            Err(e) => warn!(error = %e, "cannot add agent"),
        },
        (Some("remove"), Some(addr)) => match parse_address(addr) {
            Some(a) => client.handle(now, ClientInput::RemoveAgent(a)),
            None => warn!(%addr, "not an agent address"),
        },
        (None, _) => {}
        _ => warn!(%line, "commands: add <keyfile> | remove <address>"),
    }
}

fn spawn_stdin(ex: &LocalExecutor<'static>, tx: Sender<Ev>) {
    ex.spawn(async move {
        let mut lines = smol::io::AsyncBufReadExt::lines(smol::io::BufReader::new(
            smol::Unblock::new(std::io::stdin()),
        ));
        while let Some(Ok(line)) = lines.next().await {
            let _ = tx.send(Ev::Command(line)).await;
        }
    })
    .detach();
}
