//! Zero lost calls across a rolling restart, measured as an operator would:
//! two `osaurus-relay` processes behind a real haproxy (health-checked on
//! `/health`), one real Redis, a tunnel client that behaves like the Osaurus
//! app (it reconnects 1 s after any close, `relay_restarting` included), and
//! a steady load through haproxy while A and then B are restarted.

mod common;

use common::{bin, Reaped};
use osaurus_relay_tests::e2e::ClientHandle;
use osaurus_relay_tests::harness::{host_of, key, DOMAIN};
use osaurus_relay_tests::origin::Origin;
use osaurus_relay_tests::redis::RedisServer;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A loopback port the OS chose, free again for the process that takes it.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("bound").port()
}

/// One GET through `addr`: the status (0 if none came) and the body.
fn fetch(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
        return (0, "connect failed".into());
    };
    let _ = s.set_read_timeout(Some(timeout));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return (0, "write failed".into());
    }
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    let status = (text.split(' ').nth(1)).and_then(|c| c.parse().ok());
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status.unwrap_or(0), body.to_string())
}

fn get(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> u16 {
    fetch(addr, host, path, timeout).0
}

/// Waits until `f` holds, for at most `limit`.
fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Relay {
    child: Reaped,
}

fn relay(redis: &RedisServer, id: &str, port: u16, dir: &Path) -> Relay {
    static STARTS: AtomicU64 = AtomicU64::new(0);
    let n = STARTS.fetch_add(1, Ordering::Relaxed);
    let log = std::fs::File::create(dir.join(format!("{id}-{n}.log"))).expect("log file");
    let child = Reaped(
        bin()
            .args(["--bind-addr", "127.0.0.1", "--port", &port.to_string()])
            .env("REDIS_URL", redis.url())
            .env("INSTANCE_ID", id)
            .env("INSTANCE_URL", format!("http://127.0.0.1:{port}"))
            .env("BASE_DOMAIN", DOMAIN)
            // One agent at 100 calls/s, every caller behind haproxy's address.
            .env("AGENT_REQUESTS_PER_MIN", "0")
            .env("CALLER_REQUESTS_PER_MIN", "0")
            .env("RUST_LOG", "info")
            .stderr(log)
            .spawn()
            .expect("relay starts"),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    until(
        "the relay to serve with redis",
        Duration::from_secs(10),
        || {
            let mut body = String::new();
            TcpStream::connect(addr)
                .and_then(|mut s| {
                    s.write_all(
                        format!(
                            "GET /health HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )?;
                    s.read_to_string(&mut body)
                })
                .is_ok()
                && body.contains(r#""redis":"ok""#)
        },
    );
    Relay { child }
}

/// SIGTERM, then the exit code within the drain's bound.
fn terminate(r: Relay) -> Option<i32> {
    let mut child = r.child;
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let end = Instant::now() + Duration::from_secs(25);
    loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            return status.code();
        }
        assert!(
            Instant::now() < end,
            "the relay did not exit within the drain"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn haproxy(port: u16, a: u16, b: u16, dir: &Path) -> Reaped {
    let cfg = format!(
        "global\n  maxconn 4000\n\
         defaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n  \
         timeout tunnel 1h\n  retries 3\n  option redispatch\n  retry-on conn-failure empty-response\n  \
         option http-server-close\n\
         frontend public\n  bind 127.0.0.1:{port}\n  default_backend relays\n\
         backend relays\n  balance roundrobin\n  option httpchk GET /health\n  \
         http-check expect status 200\n  \
         server a 127.0.0.1:{a} check inter 200ms fall 1 rise 1\n  \
         server b 127.0.0.1:{b} check inter 200ms fall 1 rise 1\n"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let child = Reaped(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap())
            .spawn()
            .expect("haproxy runs (apt-get install haproxy)"),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    until("haproxy to route", Duration::from_secs(10), || {
        get(addr, DOMAIN, "/health", Duration::from_secs(1)) == 200
    });
    child
}

/// Calls at `per_sec` through `addr` until stopped; every status kept.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    statuses: Arc<Mutex<Vec<(u16, String)>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Load {
    fn start(addr: SocketAddr, host: String, path: &'static str, per_sec: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let (s, d, st) = (stop.clone(), done.clone(), statuses.clone());
        let thread = std::thread::spawn(move || {
            let every = Duration::from_micros(1_000_000 / per_sec);
            let mut next = Instant::now();
            let mut calls = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let (host, d, st) = (host.clone(), d.clone(), st.clone());
                calls.push(std::thread::spawn(move || {
                    let answer = fetch(addr, &host, path, Duration::from_secs(20));
                    st.lock().unwrap().push(answer);
                    d.fetch_add(1, Ordering::Relaxed);
                }));
                next += every;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                calls.retain(|c| !c.is_finished());
            }
            for c in calls {
                let _ = c.join();
            }
        });
        Load {
            stop,
            done,
            statuses,
            thread,
        }
    }

    /// Waits for `n` more calls to finish: time passes under load.
    fn run_for(&self, n: u64) {
        let target = self.done.load(Ordering::Relaxed) + n;
        until("the load to go on", Duration::from_secs(30), || {
            self.done.load(Ordering::Relaxed) >= target
        });
    }

    /// Every failed call, printed with the count as `what` saw them.
    fn finish(self, what: &str) -> (usize, Vec<(u16, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("load thread");
        let all = Arc::try_unwrap(self.statuses)
            .unwrap()
            .into_inner()
            .unwrap();
        let n = all.len();
        let failed: Vec<(u16, String)> = all.into_iter().filter(|(s, _)| *s != 200).collect();
        eprintln!("{what}: {n} calls, {} failed {failed:?}", failed.len());
        (n, failed)
    }
}

/// One scenario at a time: each runs two relays, haproxy and a load.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("osaurus-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Redis, relays `a` and `b` on ports the OS chose, and haproxy in front.
struct Fleet {
    dir: PathBuf,
    redis: RedisServer,
    ports: [u16; 2],
    relays: [Option<Relay>; 2],
    public: SocketAddr,
    _lb: Reaped,
}

impl Fleet {
    fn start(tag: &str) -> Fleet {
        let dir = temp_dir(tag);
        let redis = RedisServer::start();
        let (pa, pb, ph) = (free_port(), free_port(), free_port());
        let relays = [
            Some(relay(&redis, "a", pa, &dir)),
            Some(relay(&redis, "b", pb, &dir)),
        ];
        let _lb = haproxy(ph, pa, pb, &dir);
        let public = format!("127.0.0.1:{ph}").parse().unwrap();
        Fleet {
            dir,
            redis,
            ports: [pa, pb],
            relays,
            public,
            _lb,
        }
    }

    /// SIGTERM relay `i`, wait for its clean exit, start it again.
    fn restart(&mut self, i: usize) {
        let r = self.relays[i].take().expect("running");
        assert_eq!(terminate(r), Some(0), "relay {i} drains and exits cleanly");
        let id = ["a", "b"][i];
        self.relays[i] = Some(relay(&self.redis, id, self.ports[i], &self.dir));
    }
}

/// The app's tunnel through `via`, online, for an origin of its own.
fn app(via: SocketAddr) -> (ClientHandle, Origin, String) {
    let origin = Origin::spawn("origin");
    let k = key(1);
    let client = ClientHandle::spawn_app_like(via, &origin.url(), &[&k]);
    smol::block_on(client.online());
    (client, origin, host_of(&k))
}

#[test]
fn a_rolling_restart_behind_haproxy_loses_no_call() {
    let _one = serial();
    let mut fleet = Fleet::start("restart");
    let (_client, _origin, host) = app(fleet.public);
    // 50 ms at the agent: some calls are always in flight.
    let load = Load::start(fleet.public, host, "/slow", 100);
    load.run_for(100);
    fleet.restart(0);
    load.run_for(100);
    fleet.restart(1);
    load.run_for(100);
    let (_, failed) = load.finish("rolling restart");
    assert!(failed.is_empty(), "logs in {}", fleet.dir.display());
    let dir = fleet.dir.clone();
    drop(fleet);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TCP hop between the tunnel client and haproxy that can drop every
/// connection through it at once: the user's Wi-Fi going away for a moment.
struct Blip {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Blip {
    fn to(upstream: SocketAddr) -> Blip {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().unwrap();
        l.set_nonblocking(true).unwrap();
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, st) = (conns.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((down, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = down.set_nonblocking(false);
                let Ok(up) = TcpStream::connect(upstream) else {
                    continue;
                };
                let mut kept = c.lock().unwrap();
                kept.push(down.try_clone().unwrap());
                kept.push(up.try_clone().unwrap());
                for (mut from, mut to) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up, down),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Blip { addr, conns, stop }
    }

    /// Drops every connection through it.
    fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Blip {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

#[test]
fn a_tunnel_blip_under_load_loses_only_what_was_in_flight_on_it() {
    let _one = serial();
    let fleet = Fleet::start("blip");
    let (dir, public) = (fleet.dir.clone(), fleet.public);
    let wifi = Blip::to(public);
    let (_client, _origin, host) = app(wifi.addr);
    let load = Load::start(public, host, "/hello", 100);
    load.run_for(100);
    wifi.cut();
    // The app is back 1 s later (through haproxy: on either relay).
    load.run_for(300);
    let (_, failed) = load.finish("tunnel blip");
    // A call the dead tunnel had already taken is never re-sent (it may
    // have had effects); every other one waited for the agent and got through.
    for (status, body) in &failed {
        assert_eq!(
            (*status, body.as_str()),
            (502, r#"{"error":"tunnel_closed"}"#),
            "logs in {}",
            dir.display()
        );
    }
    assert!(
        failed.len() <= 2,
        "more in flight than a 1 ms call at 100/s allows: {failed:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_killed_instance_loses_at_most_the_calls_in_flight_on_it() {
    let _one = serial();
    let mut fleet = Fleet::start("sigkill");
    let dir = fleet.dir.clone();
    let (_client, _origin, host) = app(fleet.public);
    let load = Load::start(fleet.public, host, "/slow", 100);
    load.run_for(100);
    // The instance that holds the tunnel dies without a drain.
    let holder = fleet
        .ports
        .iter()
        .position(|p| {
            let addr: SocketAddr = format!("127.0.0.1:{p}").parse().unwrap();
            fetch(addr, DOMAIN, "/stats", Duration::from_secs(2))
                .1
                .contains(r#""active_tunnels":1"#)
        })
        .expect("one relay holds the tunnel");
    let mut killed = fleet.relays[holder].take().unwrap().child;
    killed.0.kill().expect("SIGKILL");
    let _ = killed.0.wait();
    load.run_for(300);
    let (n, failed) = load.finish("SIGKILL of the tunnel's instance");
    // At 100/s and 50 ms per call, about 5 are in flight at any moment.
    assert!(
        failed.len() <= 10,
        "{} of {n} failed: {failed:?}; logs in {}",
        failed.len(),
        dir.display()
    );
    drop(fleet);
    let _ = std::fs::remove_dir_all(&dir);
}
