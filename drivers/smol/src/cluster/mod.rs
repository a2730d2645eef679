//! Several relay instances: the engine's directory outputs carried out on
//! Redis, their results fed back, and calls forwarded between instances.

pub(crate) mod directory;
pub(crate) mod forward;

use crate::core::Shared;
use directory::Directory;
use osaurus_relay_engine::cluster::ForwardRequest;
use osaurus_relay_engine::{CallId, Hop, Input, OwnerFault, TunnelId};
use smol::channel::Receiver;
use smol::LocalExecutor;
use std::rc::Rc;
use std::time::Duration;
use tracing::warn;

/// How often the connection is checked and this instance's URL renewed.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// One directory operation asked for by the engine.
pub(crate) enum DirOp {
    Claim {
        tunnel: TunnelId,
        agent: String,
        takeover: bool,
    },
    Refresh {
        tunnel: TunnelId,
        agents: Vec<String>,
    },
    Release {
        agent: String,
    },
    Lookup {
        agent: String,
    },
    Forward {
        call: CallId,
        instance: String,
        request: Box<ForwardRequest>,
        /// Closed when the engine gives the call up (`CancelForward`).
        cancel: Receiver<()>,
    },
}

/// Whether a call came from another instance (see [`Hop`]).
pub(crate) fn hop(dir: Option<&Directory>, headers: &[(String, String)]) -> Hop {
    // One instance never forwards: no need to look.
    let Some(dir) = dir else {
        return Hop::Direct;
    };
    let Some((_, v)) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(forward::HOP_HEADER))
    else {
        return Hop::Direct;
    };
    match dir.secret() {
        Some(s) if constant_time_eq(s.as_bytes(), v.trim().as_bytes()) => Hop::Trusted,
        _ => Hop::Untrusted,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Feeds a Redis health change to the engine.
fn report_health(core: &Shared, dir: &Directory) {
    if let Some(up) = dir.take_health_news() {
        core.borrow_mut().handle(Input::DirectoryHealth { up });
    }
}

/// Carries out operations as the engine emits them, each as its own task so
/// a slow Redis never holds up another.
pub(crate) async fn run(
    ex: &'static LocalExecutor<'static>,
    core: Shared,
    dir: Rc<Directory>,
    ops: Receiver<DirOp>,
) {
    while let Ok(op) = ops.recv().await {
        let (core, dir) = (core.clone(), dir.clone());
        dir.inflight.set(dir.inflight.get() + 1);
        ex.spawn(async move {
            execute(&core, &dir, op).await;
            dir.inflight.set(dir.inflight.get() - 1);
            report_health(&core, &dir);
        })
        .detach();
    }
}

async fn execute(core: &Shared, dir: &Directory, op: DirOp) {
    match op {
        DirOp::Claim {
            tunnel,
            agent,
            takeover,
        } => {
            let outcome = dir.claim(&agent, takeover).await;
            report_health(core, dir);
            core.borrow_mut().handle(Input::Claimed {
                tunnel,
                agent: &agent,
                outcome,
            });
        }
        DirOp::Refresh { tunnel, agents } => {
            for agent in dir.refresh(&agents).await {
                core.borrow_mut().handle(Input::ClaimLost {
                    tunnel,
                    agent: &agent,
                });
            }
        }
        DirOp::Release { agent } => dir.release(&agent).await,
        DirOp::Lookup { agent } => {
            let found = dir.lookup(&agent).await;
            report_health(core, dir);
            core.borrow_mut().handle(Input::Located {
                agent: &agent,
                found,
            });
        }
        DirOp::Forward {
            call,
            instance,
            request,
            cancel,
        } => {
            let work = async {
                let target = dir.instance_url(&instance).await;
                let addr = target.as_deref().and_then(forward::authority);
                match (addr, dir.secret()) {
                    (Some(addr), Some(secret)) => {
                        let raw = forward::encode(&request, &secret);
                        let head_req = request.method == "HEAD";
                        forward::forward(core, call, &addr, &raw, head_req).await
                    }
                    _ => {
                        warn!(
                            call = call.0,
                            instance, "owner instance has no known address"
                        );
                        let fault = OwnerFault::Unreachable;
                        core.borrow_mut().handle(Input::OwnerFailed { call, fault });
                    }
                }
            };
            // Ends when the owner's answer is done or the engine gives up.
            smol::future::or(work, async {
                let _ = cancel.recv().await;
            })
            .await;
            core.borrow_mut().end_forward(call);
        }
    }
}

/// Renews this instance's presence and the shared secret, and notices Redis
/// coming back while nothing else uses it.
pub(crate) async fn heartbeat(core: Shared, dir: Rc<Directory>) {
    loop {
        let fresh = core.borrow_mut().random_hex(32);
        dir.heartbeat(fresh).await;
        report_health(&core, &dir);
        async_io::Timer::after(HEARTBEAT).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_content_and_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn one_instance_never_sees_a_hop() {
        let h = vec![(forward::HOP_HEADER.to_string(), "x".to_string())];
        assert_eq!(hop(None, &h), Hop::Direct);
        let d = Directory::new(
            "redis://127.0.0.1:1",
            "a".into(),
            None,
            Duration::from_millis(10),
            120,
        )
        .expect("a valid url");
        assert_eq!(hop(Some(&d), &h), Hop::Untrusted, "no secret known yet");
        assert_eq!(hop(Some(&d), &[]), Hop::Direct);
    }
}
