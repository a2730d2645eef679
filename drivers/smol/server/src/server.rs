//! The relay server: accept loop, graceful shutdown, and an in-process handle for tests.

use crate::cluster::{self, directory::Directory};
use crate::config::{ClusterSettings, ServeArgs};
use crate::conn::{self, ConnOpts};
use crate::hub::{self, Core, Shared};
use crate::stream::Stream;
use crate::tls::Tls;
use crate::ws::WsOpts;
use async_io::Async;
use osaurus_relay_engine::{Config, Input, RemoteRoute};
use osaurus_relay_rt::wheel::until;
use smol::channel::{unbounded, Receiver, Sender};
use smol::future::FutureExt;
use smol::LocalExecutor;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The engine's limits, as the connection tasks read them.
fn conn_opts(ex: &'static LocalExecutor<'static>, c: &Config) -> ConnOpts {
    ConnOpts {
        ex,
        head: c.head_limits,
        header_timeout: c.header_timeout,
        idle_timeout: c.idle_timeout,
        io_timeout: c.io_timeout(),
        body_timeout: c.body_timeout,
        reject_linger: c.reject_linger,
        ws: std::rc::Rc::new(WsOpts {
            pre_auth_bytes: c.pre_auth_read_budget(),
            max_message: usize::try_from(c.max_frame_bytes).unwrap_or(usize::MAX),
            write_timeout: c.io_timeout(),
        }),
    }
}

/// What the settings ask for besides the main listener, made before the
/// relay thread starts so that a bad file or a taken port stops start-up.
pub struct Extras {
    /// TLS on the main listener (`TLS_CERT`, `TLS_KEY`).
    pub tls: Option<Arc<Tls>>,
    /// The metrics listener (`METRICS_ADDR`).
    pub metrics: Option<TcpListener>,
}

impl Extras {
    pub fn new(args: &ServeArgs) -> std::io::Result<Extras> {
        let tls = args.tls().map_err(std::io::Error::other)?.map(Arc::new);
        let metrics = match args.metrics_addr {
            Some(a) => Some(
                TcpListener::bind(a)
                    .map_err(|e| std::io::Error::new(e.kind(), format!("METRICS_ADDR {a}: {e}")))?,
            ),
            None => None,
        };
        Ok(Extras { tls, metrics })
    }
}

/// Serves on `listener` until `stop` yields, then drains and closes tunnels.
pub async fn serve(
    ex: &'static LocalExecutor<'static>,
    args: ServeArgs,
    listener: Async<TcpListener>,
    extras: Extras,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let Extras { tls, metrics } = extras;
    let cluster = args.cluster().map_err(std::io::Error::other)?;
    let mut cfg = args.engine_config();
    // The per-call line is an info line: nothing to build when it is filtered out.
    cfg.log_calls = tracing::level_filters::LevelFilter::current() >= tracing::Level::INFO;
    cfg.cluster = cluster.as_ref().map(|c| c.engine.clone());
    if let Some(c) = &cluster {
        // A random instance id is this machine's name too.
        cfg.machine = crate::config::for_life(c.engine.instance_id.clone());
    }
    let (wake_tx, wake_rx) = unbounded();
    let (done_tx, done_rx) = unbounded();
    let opts = Rc::new(conn_opts(ex, &cfg));
    let cfg_client_ip = cfg.client_ip.clone();
    let core = Rc::new(RefCell::new(Core::new(cfg, wake_tx, done_tx)));
    // The connections' read and write deadlines and the engine's: first,
    // so that every deadline is on it.
    ex.spawn(osaurus_relay_rt::wheel::run()).detach();
    ex.spawn(hub::run_timer(core.clone(), wake_rx)).detach();
    if let Some(l) = metrics {
        info!(addr = %l.local_addr()?, "metrics on /metrics");
        let timeout = opts.header_timeout;
        ex.spawn(crate::metrics::serve(ex, core.clone(), l, timeout))
            .detach();
    }
    let dir = match &cluster {
        Some(c) => Some(start_cluster(ex, &core, c)?),
        None => None,
    };
    let client_ip = match &cfg_client_ip {
        osaurus_relay_engine::ClientIpSource::Peer => "the TCP peer".to_string(),
        osaurus_relay_engine::ClientIpSource::Header(h) => format!("the {h} header"),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(addr = %listener.get_ref().local_addr()?, base_domain = %args.base_domain, %client_ip, scheme, "listening");
    let accept = async {
        loop {
            match listener.accept().await {
                Ok((s, peer)) => {
                    let _ = s.get_ref().set_nodelay(true);
                    let (core, opts) = (core.clone(), opts.clone());
                    let task = match &tls {
                        // Never plain text on a TLS port: no session, no connection.
                        Some(t) => t.session().map(|session| {
                            ex.spawn(async move {
                                // The handshake is held to the slowloris rule of a head.
                                let deadline = Instant::now() + opts.header_timeout;
                                let shake = until(deadline, Stream::accept(s, session)).await;
                                if let Some(Ok(s)) = shake {
                                    conn::serve(core, Rc::new(s), peer, opts).await;
                                }
                            })
                        }),
                        None => {
                            Some(ex.spawn(conn::serve(core, Rc::new(Stream::plain(s)), peer, opts)))
                        }
                    };
                    if let Some(task) = task {
                        task.detach();
                    }
                }
                // Out of descriptors and the like: back off instead of spinning.
                Err(_) => {
                    async_io::Timer::after(Duration::from_millis(50)).await;
                }
            }
        }
    };
    // Draining still accepts: /health says 503 to the load balancer, calls
    // for agents here are served, and new tunnels are told to go elsewhere.
    let drain = async {
        stop.await;
        info!("shutdown requested: draining");
        core.borrow_mut().handle(Input::Shutdown);
        let _ = done_rx.recv().await;
    };
    accept.or(drain).await;
    drop(listener);
    // Give tunnel writers a moment to deliver their close frames.
    let grace = Instant::now() + Duration::from_secs(2);
    // ... and the directory its releases, so other instances can take the agents at once.
    let dir_busy = || dir.as_ref().is_some_and(|d| d.inflight.get() > 0);
    while (core.borrow().open_tunnels() > 0 || dir_busy()) && Instant::now() < grace {
        async_io::Timer::after(Duration::from_millis(10)).await;
    }
    info!("stopped");
    Ok(())
}

/// Connects the directory and starts the tasks that carry out its operations.
fn start_cluster(
    ex: &'static LocalExecutor<'static>,
    core: &Shared,
    c: &ClusterSettings,
) -> std::io::Result<Rc<Directory>> {
    let dir = Directory::new(&c.redis_url, c.instance_url.clone(), &c.engine)
        .map_err(std::io::Error::other)?;
    let dir = Rc::new(dir);
    let grace = core.borrow().reconnect_grace();
    dir.moving_ttl
        .set(grace.as_secs() + u64::from(grace.subsec_nanos() > 0));
    let (tx, rx) = unbounded();
    core.borrow_mut().set_directory(dir.clone(), tx);
    ex.spawn(cluster::run(ex, core.clone(), dir.clone(), rx))
        .detach();
    ex.spawn(cluster::watch_claims(core.clone(), dir.clone()))
        .detach();
    ex.spawn(cluster::heartbeat(
        core.clone(),
        dir.clone(),
        c.engine.heartbeat,
    ))
    .detach();
    let mode = match c.engine.remote {
        RemoteRoute::FlyReplay => "fly-replay",
        RemoteRoute::Forward => "forward",
    };
    info!(instance = %c.engine.instance_id, mode, "several instances: ownership in redis");
    Ok(dir)
}

/// Binds per `args` and serves until SIGTERM or SIGINT; SIGHUP reloads the
/// TLS certificate.
pub fn run(args: ServeArgs) -> std::io::Result<()> {
    let extras = Extras::new(&args)?;
    let tls = extras.tls.clone();
    let ex = osaurus_relay_rt::leak_executor();
    // The server is a task of its own: the future `block_on` polls is woken
    // only when it ends, not on every wake-up of the executor.
    smol::block_on(ex.run(ex.spawn(async move {
        let listener = Async::<TcpListener>::bind((args.bind_addr, args.port))?;
        use async_signal::Signal;
        let signals = async_signal::Signals::new([Signal::Term, Signal::Int, Signal::Hup])?;
        let reload = tls.clone();
        let stop = async move {
            let mut signals = signals;
            while let Some(Ok(sig)) = smol::stream::StreamExt::next(&mut signals).await {
                if sig != Signal::Hup {
                    return;
                }
                match reload.as_ref().map(|t| t.reload()) {
                    Some(Ok(())) => info!("TLS certificate reloaded"),
                    Some(Err(e)) => {
                        warn!(error = %e, "TLS certificate not reloaded: the old one stays")
                    }
                    None => info!("SIGHUP: no TLS certificate to reload"),
                }
            }
        };
        serve(ex, args, listener, extras, stop).await
    })))
}

/// A relay running on its own thread (tests, embedding).
pub struct RelayHandle {
    pub addr: SocketAddr,
    /// Where `/metrics` is served, with `METRICS_ADDR`.
    pub metrics_addr: Option<SocketAddr>,
    stop: Sender<()>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl RelayHandle {
    /// Starts a relay bound to `addr` (use port 0 for an OS-chosen port).
    pub fn spawn(args: ServeArgs, addr: SocketAddr) -> std::io::Result<RelayHandle> {
        Self::spawn_on(args, std::net::TcpListener::bind(addr)?)
    }

    /// Starts a relay on a listener the caller bound (and so knows the address of).
    pub fn spawn_on(
        args: ServeArgs,
        std_listener: std::net::TcpListener,
    ) -> std::io::Result<RelayHandle> {
        let addr = std_listener.local_addr()?;
        let extras = Extras::new(&args)?;
        let metrics_addr = match &extras.metrics {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let (stop_tx, stop_rx): (Sender<()>, Receiver<()>) = unbounded();
        let thread = std::thread::spawn(move || {
            let ex = osaurus_relay_rt::leak_executor();
            smol::block_on(ex.run(ex.spawn(async move {
                let listener = Async::new(std_listener)?;
                serve(ex, args, listener, extras, async move {
                    let _ = stop_rx.recv().await;
                })
                .await
            })))
        });
        Ok(RelayHandle {
            addr,
            metrics_addr,
            stop: stop_tx,
            thread: Some(thread),
        })
    }

    /// Begins graceful shutdown (like SIGTERM).
    pub fn shutdown(&self) {
        let _ = self.stop.try_send(());
    }

    /// Waits for the relay thread to finish.
    pub fn join(mut self) -> std::io::Result<()> {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(std::io::Error::other("relay thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
