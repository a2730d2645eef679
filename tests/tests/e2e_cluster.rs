//! Several relay instances on loopback sharing one real `redis-server`:
//! forwarding, fly-replay, takeover across instances, a crashed instance,
//! and Redis going away while calls flow.

use osaurus_relay_engine::client::ClientEvent;
use osaurus_relay_server::ServeArgs;
use osaurus_relay_tests::child::Child;
use osaurus_relay_tests::cluster::{instance, owner_becomes, redis_ok, stats_get};
use osaurus_relay_tests::e2e::*;
use osaurus_relay_tests::harness::{host_of, key, lower};
use osaurus_relay_tests::origin::Origin;
use osaurus_relay_tests::redis::RedisServer;
use std::net::SocketAddr;
use std::time::Duration;

#[test]
fn a_call_landing_on_another_instance_is_forwarded() {
    let redis = RedisServer::start();
    let a = instance(&redis, "inst-a", false, |_| {});
    let b = instance(&redis, "inst-b", false, |_| {});
    let origin = Origin::spawn("origin");
    let k = key(1);
    smol::block_on(async {
        redis_ok(a.addr).await;
        redis_ok(b.addr).await;
        // Connected once Redis is reachable, so auth_ok follows a written claim.
        let client = ClientHandle::spawn(a.addr, &origin.url(), &[&k]);
        client.online().await;
        assert_eq!(
            redis.cli(&["GET", &format!("agent:{}", lower(&k))]),
            "inst-a"
        );
        // Buffered and streamed answers cross both instances, chunk by chunk.
        origin_round_trips(b.addr, &host_of(&k), &origin).await;
        let r = call(b.addr, &get(&host_of(&key(9)), "/hello")).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (502, r#"{"error":"agent_offline"}"#)
        );
        let r = call(b.addr, &stats_get()).await;
        assert!(
            r.text().contains(r#""instance_id":"inst-b""#),
            "{}",
            r.text()
        );
    });
}

#[test]
fn on_fly_a_call_for_another_instance_is_replayed_there() {
    let redis = RedisServer::start();
    let a = instance(&redis, "m-a", true, |_| {});
    let b = instance(&redis, "m-b", true, |_| {});
    let origin = Origin::spawn("origin");
    let k = key(1);
    smol::block_on(async {
        redis_ok(a.addr).await;
        redis_ok(b.addr).await;
        let client = ClientHandle::spawn(a.addr, &origin.url(), &[&k]);
        client.online().await;
        let r = call(b.addr, &get(&host_of(&k), "/hello")).await;
        assert_eq!(r.status, 307);
        assert_eq!(r.header("fly-replay"), Some("instance=m-a"));
        let cache = format!("{}/*", host_of(&k));
        assert_eq!(r.header("fly-replay-cache"), Some(cache.as_str()));
        assert_eq!(r.header("fly-replay-cache-ttl-secs"), Some("30"));
        assert_eq!(r.header("x-relay-machine"), Some("m-b"));
        let r = call(a.addr, &get(&host_of(&k), "/hello")).await;
        assert_eq!((r.status, r.text().as_str()), (200, "hello from origin"));
        assert_eq!(r.header("x-relay-machine"), Some("m-a"));
        // Fly's cache sent a call to the wrong machine: replayed with invalidate.
        let stale = format!(
            "GET /hello HTTP/1.1\r\nHost: {}\r\nFly-Replay-Cache-Status: hit\r\n\r\n",
            host_of(&k)
        );
        let r = call(b.addr, stale.as_bytes()).await;
        assert_eq!(r.header("fly-replay-cache"), Some("invalidate"));
        // Bodies Fly cannot replay go machine to machine, byte for byte.
        let big = osaurus_relay_tests::noise::noise(2 << 20, 3);
        let r = call(b.addr, &post(&host_of(&k), "/echo", &big)).await;
        assert_eq!(r.status, 200);
        assert!(r.body == big, "a 2 MiB body forwarded and echoed whole");
        assert_eq!(r.header("x-relay-machine"), Some("m-a"));
        assert_eq!(r.header("x-relay-via"), Some("m-b"));
        let chunked = format!(
            "POST /echo HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            host_of(&k)
        );
        let r = call(b.addr, chunked.as_bytes()).await;
        assert_eq!((r.status, r.text().as_str()), (200, "hello"));
        assert_eq!(r.header("x-relay-via"), Some("m-b"));
        // An owner that cannot be reached (a machine without an address): 502 agent_unreachable.
        let ghost = key(2);
        let owned = [
            "SET",
            &format!("agent:{}", lower(&ghost)),
            "m-ghost",
            "EX",
            "60",
        ];
        assert_eq!(redis.cli(&owned), "OK");
        let r = call(b.addr, &post(&host_of(&ghost), "/echo", &big)).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (502, r#"{"error":"agent_unreachable"}"#)
        );
    });
}

#[test]
fn a_newer_session_on_another_instance_takes_the_agent_over() {
    let redis = RedisServer::start();
    let short_pings = |a: &mut ServeArgs| a.ping_interval = Duration::from_millis(100);
    let a = instance(&redis, "inst-a", false, short_pings);
    let b = instance(&redis, "inst-b", false, short_pings);
    let (first, second) = (Origin::spawn("first"), Origin::spawn("second"));
    let k = key(1);
    smol::block_on(async {
        redis_ok(a.addr).await;
        redis_ok(b.addr).await;
        let old = ClientHandle::spawn(a.addr, &first.url(), &[&k]);
        old.online().await;
        let new = ClientHandle::spawn(b.addr, &second.url(), &[&k]);
        new.online().await;
        assert_eq!(
            redis.cli(&["GET", &format!("agent:{}", lower(&k))]),
            "inst-b"
        );
        // A's next refresh sees B's claim: the old tunnel is told it was superseded.
        old.wait_for("old session superseded", |e| {
            matches!(e, ClientEvent::Superseded { .. })
        })
        .await;
        for relay in [a.addr, b.addr] {
            let r = call(relay, &get(&host_of(&k), "/hello")).await;
            assert_eq!((r.status, r.text().as_str()), (200, "hello from second"));
        }
    });
}

/// The relay in a child process of its own, killed with SIGKILL on drop.
fn relay_child(redis: &RedisServer, id: &str, env: &[(&str, &str)]) -> (Child, SocketAddr) {
    let url = redis.url();
    let mut all = vec![("REDIS_URL", url.as_str()), ("FLY_MACHINE_ID", id)];
    all.extend_from_slice(env);
    Child::relay(env!("CARGO_BIN_EXE_relay_child"), &all)
}

#[test]
fn a_killed_instance_s_claims_expire_and_another_serves_the_agent() {
    let redis = RedisServer::start();
    let (mut a, a_addr) = relay_child(&redis, "m-a", &[("CLAIM_TTL", "1s")]);
    // B rejects duplicates: it serves the agent only once A's claim is gone.
    let b = instance(&redis, "m-b", true, |a| {
        a.duplicate_policy = osaurus_relay_engine::DuplicatePolicy::Reject
    });
    let origin = Origin::spawn("origin");
    let k = key(1);
    smol::block_on(async {
        redis_ok(a_addr).await;
        redis_ok(b.addr).await;
        let client = ClientHandle::spawn(a_addr, &origin.url(), &[&k]);
        client.online().await;
        assert_eq!(redis.cli(&["GET", &format!("agent:{}", lower(&k))]), "m-a");
        a.kill();
        owner_becomes(&redis, &k, "").await;
        drop(client);
        let r = call(b.addr, &get(&host_of(&k), "/hello")).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (502, r#"{"error":"agent_offline"}"#)
        );
        let again = ClientHandle::spawn(b.addr, &origin.url(), &[&k]);
        again
            .wait_for(
                "accepted on B",
                |e| matches!(e, ClientEvent::Online { agents, .. } if agents.len() == 1),
            )
            .await;
        let r = call(b.addr, &get(&host_of(&k), "/hello")).await;
        assert_eq!((r.status, r.text().as_str()), (200, "hello from origin"));
    });
}

#[test]
fn local_calls_never_fail_while_redis_stops_and_starts() {
    let mut redis = RedisServer::start();
    let a = instance(&redis, "inst-a", false, |a| {
        a.ping_interval = Duration::from_millis(100)
    });
    let origin = Origin::spawn("origin");
    let (k1, k2) = (key(1), key(2));
    let first = ClientHandle::spawn(a.addr, &origin.url(), &[&k1]);
    smol::block_on(async {
        redis_ok(a.addr).await;
        first.online().await;
        let mut later = None;
        for i in 0..90 {
            match i {
                20 => redis.stop(),
                // Registration while Redis is down is accepted locally.
                30 => {
                    let c = ClientHandle::spawn(a.addr, &origin.url(), &[&k2]);
                    c.online().await;
                    later = Some(c);
                }
                60 => redis.restart(),
                _ => {}
            }
            for k in [&k1, &k2]
                .into_iter()
                .take(if later.is_some() { 2 } else { 1 })
            {
                let r = call(a.addr, &get(&host_of(k), "/hello")).await;
                assert_eq!(
                    (r.status, r.text().as_str()),
                    (200, "hello from origin"),
                    "call {i}"
                );
            }
        }
        // Refreshes write the claims Redis lost, including the one made while it was down.
        owner_becomes(&redis, &k1, "inst-a").await;
        owner_becomes(&redis, &k2, "inst-a").await;
        redis_ok(a.addr).await;
    });
}

#[test]
fn presence_answers_local_agents_at_once_and_the_rest_from_redis() {
    const TOKEN: &str = "presence-token-presence-token-32";
    let redis = RedisServer::start();
    let with_token = |a: &mut ServeArgs| a.presence_token = Some(TOKEN.into());
    let a = instance(&redis, "inst-a", false, with_token);
    let b = instance(&redis, "inst-b", false, |_| {});
    let origin = Origin::spawn("origin");
    let (here, there, nowhere) = (key(1), key(2), key(3));
    smol::block_on(async {
        redis_ok(a.addr).await;
        redis_ok(b.addr).await;
        let c1 = ClientHandle::spawn(a.addr, &origin.url(), &[&here]);
        let c2 = ClientHandle::spawn(b.addr, &origin.url(), &[&there]);
        c1.online().await;
        c2.online().await;
        let asked = [&here, &there, &nowhere].map(lower).join(",");
        let q = |auth: &str| {
            format!(
                "GET /presence?addresses={asked} HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\n\r\n",
                osaurus_relay_tests::harness::DOMAIN
            )
        };
        let r = call(a.addr, q(&format!("Bearer {TOKEN}")).as_bytes()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v: serde_json::Value = serde_json::from_str(&r.text()).expect("json");
        let p = &v["presence"];
        assert_eq!(p[lower(&here)]["online"], true);
        assert!(p[lower(&here)]["last_seen"].is_string());
        assert_eq!(p[lower(&there)]["online"], true);
        assert!(p[lower(&there)]["last_seen"].is_string(), "{p}");
        assert_eq!(
            p[lower(&nowhere)],
            serde_json::json!({"online": false, "last_seen": null})
        );
        let r = call(a.addr, q("Bearer wrong").as_bytes()).await;
        assert_eq!(r.status, 401);
        // Without a token the endpoint does not exist.
        let r = call(b.addr, q(&format!("Bearer {TOKEN}")).as_bytes()).await;
        assert_eq!(r.status, 404);
    });
}
