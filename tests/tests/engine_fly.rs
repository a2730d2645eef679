//! Fly.io routing in the engine: replays with Fly's route cache, a stale
//! cached route invalidated, bodies Fly cannot replay forwarded instead,
//! and the owner look-up cache (hits, misses, bound, local registration).

use osaurus_relay_engine::{ClusterConfig, Config, Input, Located, Output, RemoteRoute};
use osaurus_relay_tests::harness::*;
use std::time::Duration;

fn fly() -> Config {
    Config {
        cluster: Some(ClusterConfig::new("m-a", RemoteRoute::FlyReplay)),
        ..test_config()
    }
}

fn lookups(out: &[Output]) -> usize {
    out.iter()
        .filter(|o| matches!(o, Output::Lookup { .. }))
        .count()
}

#[test]
fn replays_carry_fly_route_cache_headers_and_a_stale_hit_invalidates() {
    let mut h = Harness::new(fly());
    let a = key(1);
    let (c, _) = h.get(&a, "/");
    let out = h.located(&a, Located::Owner("m-b".into()));
    assert_eq!(response(&out, c).map(|r| r.0), Some(307));
    assert_eq!(header(&out, c, "fly-replay"), Some("instance=m-b"));
    let cache = format!("{}/*", host_of(&a));
    assert_eq!(header(&out, c, "fly-replay-cache"), Some(cache.as_str()));
    assert_eq!(header(&out, c, "fly-replay-cache-ttl-secs"), Some("30"));
    // Fly's cache sent a call here, but the agent lives elsewhere now.
    let mut head = Harness::head("GET", "/", &host_of(&a));
    head.headers
        .push(("Fly-Replay-Cache-Status".into(), "hit".into()));
    let (c, out) = h.request(head, b"");
    assert_eq!(header(&out, c, "fly-replay"), Some("instance=m-b"));
    assert_eq!(header(&out, c, "fly-replay-cache"), Some("invalidate"));
    assert_eq!(header(&out, c, "fly-replay-cache-ttl-secs"), None);
    assert_eq!(h.relay.stats().counters.replays, 2);
}

#[test]
fn bodies_fly_cannot_replay_are_forwarded_machine_to_machine() {
    let mut h = Harness::new(fly());
    let a = key(1);
    h.get(&a, "/");
    h.located(&a, Located::Owner("m-b".into()));
    let forwarded = |out: &[Output]| {
        out.iter()
            .any(|o| matches!(o, Output::Forward { instance, .. } if instance == "m-b"))
    };
    // Up to 1 MB: replayed.
    let (c, out) = h.request(
        Harness::head("POST", "/", &host_of(&a)),
        &vec![b'x'; 1_000_000],
    );
    assert_eq!(response(&out, c).map(|r| r.0), Some(307));
    // Over it: forwarded, and so is a body of unknown length.
    let (_, out) = h.request(
        Harness::head("POST", "/", &host_of(&a)),
        &vec![b'x'; 1_000_001],
    );
    assert!(forwarded(&out), "{out:?}");
    let call = h.new_call();
    let mut head = Harness::head("POST", "/", &host_of(&a));
    head.body_follows = true;
    // The owner is known: forwarded at head time, the body following.
    let out = h.step(Input::CallHead {
        call,
        head: head.view(),
    });
    assert!(forwarded(&out), "chunked: {out:?}");
    let out = h.step(Input::CallBody {
        call,
        chunk: b"abc",
    });
    assert!(matches!(&out[..], [Output::ForwardBody { data, .. }] if data == b"abc"));
    let out = h.step(Input::CallBodyEnd { call });
    assert!(
        matches!(&out[..], [Output::ForwardBodyEnd { .. }]),
        "{out:?}"
    );
    assert_eq!(h.relay.stats().counters.internal_forwards, 2);
}

#[test]
fn look_ups_are_reused_longer_for_owners_and_dropped_on_local_registration() {
    let mut h = Harness::new(fly());
    let (a, b) = (key(1), key(2));
    h.get(&a, "/");
    h.located(&a, Located::Owner("m-b".into()));
    h.get(&b, "/");
    h.located(&b, Located::Nobody);
    h.advance(1_900);
    assert_eq!(lookups(&h.get(&a, "/").1), 0);
    assert_eq!(lookups(&h.get(&b, "/").1), 0, "a miss holds for 2 s");
    h.advance(200);
    assert_eq!(lookups(&h.get(&b, "/").1), 1, "then is asked again");
    h.located(&b, Located::Nobody);
    h.advance(7_800);
    assert_eq!(lookups(&h.get(&a, "/").1), 0, "an owner holds for 10 s");
    h.advance(200);
    assert_eq!(lookups(&h.get(&a, "/").1), 1);
    h.located(&a, Located::Owner("m-b".into()));
    // The agent registers here: the cached owner is forgotten at once.
    let (t, nonce) = h.open_from("192.0.2.9");
    let auth = h.auth_frame(&[&a], &nonce);
    h.text(t, &auth);
    let agent = lower(&a);
    let claimed = osaurus_relay_engine::ClaimOutcome::Ours;
    h.step(Input::Claimed {
        tunnel: t,
        agent: &agent,
        outcome: claimed,
    });
    let (c, out) = h.get(&a, "/");
    assert!(
        response(&out, c).is_none() && lookups(&out) == 0,
        "served here: {out:?}"
    );
    // Once it leaves again, where it is now is asked, not the stale answer used.
    h.step(Input::TunnelClosed { tunnel: t });
    let (c, out) = h.get(&a, "/");
    assert_eq!((response(&out, c), lookups(&out)), (None, 1), "{out:?}");
}

#[test]
fn the_look_up_cache_is_bounded() {
    let mut h = Harness::new(Config {
        cluster: Some(ClusterConfig {
            lookup_cache_entries: 8,
            lookup_ttl: Duration::from_secs(60),
            ..ClusterConfig::new("m-a", RemoteRoute::FlyReplay)
        }),
        ..test_config()
    });
    for n in 1..=50 {
        let k = key(n);
        h.get(&k, "/");
        h.located(&k, Located::Owner("m-b".into()));
        assert!(
            h.relay.sizes().directory <= 8,
            "after {n}: {:?}",
            h.relay.sizes()
        );
    }
    // The newest are kept, the oldest asked again.
    assert_eq!(lookups(&h.get(&key(50), "/").1), 0);
    assert_eq!(lookups(&h.get(&key(1), "/").1), 1);
}
