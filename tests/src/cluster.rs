//! Several instances on loopback sharing one real `redis-server`.

use crate::e2e::{call, test_args, within};
use crate::harness::{lower, DOMAIN};
use crate::redis::RedisServer;
use osaurus_relay_engine::auth::SecretKey;
use osaurus_relay_server::{RelayHandle, ServeArgs};
use std::net::SocketAddr;
use std::time::Duration;

/// An instance on 127.0.0.1:0; `fly` picks fly-replay, else forwarding to
/// its own address.
pub fn instance(
    redis: &RedisServer,
    id: &str,
    fly: bool,
    tweak: impl FnOnce(&mut ServeArgs),
) -> RelayHandle {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("bound");
    let mut a = test_args();
    a.redis_url = Some(redis.url());
    if fly {
        a.fly_machine_id = Some(id.into());
        a.fly_app_name = Some("relay-test".into());
    } else {
        a.instance_id = Some(id.into());
    }
    // On Fly the machine's private address; INSTANCE_URL stands in for it here.
    a.instance_url = Some(format!("http://{addr}"));
    tweak(&mut a);
    RelayHandle::spawn_on(a, listener).expect("instance starts")
}

pub fn stats_get() -> Vec<u8> {
    format!("GET /stats HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n").into_bytes()
}

/// Waits until the instance reports Redis reachable (its heartbeat ran).
pub async fn redis_ok(addr: SocketAddr) {
    within("instance reaches redis", async {
        loop {
            let r = call(addr, &stats_get()).await;
            if r.text().contains(r#""redis":"ok""#) {
                return;
            }
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Polls Redis until `agent:<k>` holds `want` (`""` for no key).
pub async fn owner_becomes(redis: &RedisServer, k: &SecretKey, want: &str) {
    let key = format!("agent:{}", lower(k));
    within(&format!("{key} == {want:?}"), async {
        while redis.cli(&["GET", &key]) != want {
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    })
    .await
}
