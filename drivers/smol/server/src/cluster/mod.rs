//! Several relay instances: the engine's directory outputs carried out on
//! Redis, their results fed back, and calls forwarded between instances.

pub(crate) mod directory;
pub(crate) mod forward;
pub(crate) mod hop;

use crate::hub::Shared;
use crate::msg::DirOp;
use directory::Directory;
use osaurus_relay_engine::wire::http1::http_authority;
use osaurus_relay_engine::{Input, Output, OwnerFault};
use smol::channel::Receiver;
use smol::LocalExecutor;
use std::rc::Rc;
use std::time::Duration;
use tracing::warn;

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
        // `inflight` was counted when the hub queued the operation.
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
        DirOp::Engine(Output::Claim {
            tunnel,
            agent,
            takeover,
        }) => {
            let outcome = dir.claim(&agent, takeover).await;
            report_health(core, dir);
            core.borrow_mut().handle(Input::Claimed {
                tunnel,
                agent: &agent,
                outcome,
            });
        }
        DirOp::Engine(Output::Refresh { tunnel, agents }) => {
            for agent in dir.refresh(&agents).await {
                core.borrow_mut().handle(Input::ClaimLost {
                    tunnel,
                    agent: &agent,
                });
            }
        }
        DirOp::Engine(Output::Release { agent, moving }) => dir.release(&agent, moving).await,
        DirOp::Engine(Output::Lookup { agent }) => {
            let found = dir.lookup(&agent).await;
            report_health(core, dir);
            core.borrow_mut().handle(Input::Located {
                agent: &agent,
                found,
            });
        }
        DirOp::Engine(Output::PresenceLookup { call, agents }) => {
            let claimed = dir.claimed(&agents).await;
            report_health(core, dir);
            core.borrow_mut().handle(Input::PresenceFound {
                call,
                claimed: &claimed,
            });
        }
        // The hub sends only the directory outputs.
        DirOp::Engine(_) => {}
        DirOp::Forward {
            call,
            instance,
            request,
            cancel,
            upload,
        } => {
            let work = async {
                let target = dir.instance_url(&instance).await;
                let addr = target.as_deref().and_then(http_authority);
                match (addr, dir.secret_now().await) {
                    (Some(addr), Some(secret)) => {
                        let raw = forward::encode(&request, &secret);
                        let to = forward::Owner {
                            addr: &addr,
                            head_req: request.method == "HEAD",
                            chunked: request.body_length.is_none(),
                            upload: (!request.body_complete).then_some(&upload),
                        };
                        let complete = request.body_complete;
                        if !forward::forward(core, call, to, &raw).await && complete {
                            // Refused before anything was sent: the engine may hold it.
                            core.borrow_mut()
                                .handle(Input::OwnerRefused { call, request });
                        }
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

/// Tells the engine of every claim announced by any instance.
pub(crate) async fn watch_claims(core: Shared, dir: Rc<Directory>) {
    dir.watch_claims(|agent, instance| match instance {
        "" => core.borrow_mut().handle(Input::AgentMoving { agent }),
        _ => core
            .borrow_mut()
            .handle(Input::AgentClaimed { agent, instance }),
    })
    .await
}

/// Renews this instance's presence and the shared secret, and notices Redis
/// coming back while nothing else uses it.
pub(crate) async fn heartbeat(core: Shared, dir: Rc<Directory>, every: Duration) {
    loop {
        let fresh = osaurus_relay_rt::random_hex(32);
        dir.heartbeat(fresh).await;
        report_health(&core, &dir);
        async_io::Timer::after(every).await;
    }
}
