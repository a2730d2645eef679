//! `GET /presence`: every refusal, local answers, directory answers.

use osaurus_relay_engine::{ClusterConfig, Config, Input, Output, OwnedHead, RemoteRoute};
use osaurus_relay_tests::harness::*;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn config(token: Option<&str>) -> Config {
    Config {
        presence_token: token.map(String::from),
        presence_requests_per_min: 3,
        ..test_config()
    }
}

fn query(method: &str, addresses: &str, auth: Option<&str>) -> OwnedHead {
    let mut h = Harness::head(method, &format!("/presence?addresses={addresses}"), DOMAIN);
    if let Some(a) = auth {
        h.headers.push(("Authorization".into(), a.into()));
    }
    h
}

fn json(out: &[Output], call: osaurus_relay_engine::CallId) -> (u16, serde_json::Value) {
    let (status, body) = response(out, call).expect("answered");
    (status, serde_json::from_str(&body).expect("json"))
}

#[test]
fn every_refusal_has_its_status() {
    let a = lower(&key(1));
    let bearer = format!("Bearer {TOKEN}");
    let mut off = Harness::new(config(None));
    let (c, out) = off.request(query("GET", &a, Some(&bearer)), b"");
    assert_eq!(
        json(&out, c),
        (404, serde_json::json!({"error": "not_found"}))
    );
    let mut h = Harness::new(config(Some(TOKEN)));
    let (c, out) = h.request(query("POST", &a, Some(&bearer)), b"");
    assert_eq!(json(&out, c).0, 405);
    for auth in [None, Some("Bearer nope"), Some(&*format!("Basic {TOKEN}"))] {
        let (c, out) = h.request(query("GET", &a, auth), b"");
        assert_eq!(
            json(&out, c),
            (401, serde_json::json!({"error": "unauthorized"})),
            "{auth:?}"
        );
    }
    for bad in ["", "0x12", &format!("{a},nope")] {
        let (c, out) = h.request(query("GET", bad, Some(&bearer)), b"");
        assert_eq!(json(&out, c).0, 400, "{bad:?}");
    }
    // Three queries a minute per IP here; the fourth waits.
    let (c, out) = h.request(query("GET", &a, Some(&bearer)), b"");
    assert_eq!(
        json(&out, c),
        (429, serde_json::json!({"error": "rate_limited"}))
    );
}

#[test]
fn local_agents_are_online_with_last_seen_and_others_offline() {
    let mut h = Harness::new(config(Some(TOKEN)));
    let (a, b) = (key(1), key(2));
    h.connect(&[&a]);
    let asked = format!(
        "{},{}",
        lower(&a).to_uppercase().replace("0X", "0x"),
        lower(&b)
    );
    let bearer = format!("Bearer {TOKEN}");
    let (c, out) = h.request(query("GET", &asked, Some(&bearer)), b"");
    let (status, v) = json(&out, c);
    assert_eq!(status, 200);
    assert_eq!(v["presence"][lower(&a)]["online"], true);
    assert_eq!(
        v["presence"][lower(&a)]["last_seen"],
        "2024-02-28T16:00:00Z"
    );
    assert_eq!(
        v["presence"][lower(&b)],
        serde_json::json!({"online": false, "last_seen": null})
    );
}

#[test]
fn with_several_instances_the_rest_come_from_one_directory_read() {
    let mut h = Harness::new(Config {
        cluster: Some(ClusterConfig::new("m-a", RemoteRoute::Forward)),
        ..config(Some(TOKEN))
    });
    h.step(Input::DirectoryHealth { up: true });
    let (a, b, c3) = (key(1), key(2), key(3));
    let asked = format!("{},{},{}", lower(&a), lower(&b), lower(&c3));
    let bearer = format!("Bearer {TOKEN}");
    let (c, out) = h.request(query("GET", &asked, Some(&bearer)), b"");
    let [Output::PresenceLookup { call, agents }] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(
        (*call, agents.clone()),
        (c, vec![lower(&a), lower(&b), lower(&c3)])
    );
    let out = h.step(Input::PresenceFound {
        call: c,
        claimed: &[true, false, true],
    });
    let (_, v) = json(&out, c);
    let online: Vec<bool> = [&a, &b, &c3]
        .iter()
        .map(|k| v["presence"][lower(k)]["online"].as_bool().unwrap())
        .collect();
    assert_eq!(online, [true, false, true]);
    // Online by a claim elsewhere: seen now, as a local tunnel would be.
    assert_eq!(
        v["presence"][lower(&c3)]["last_seen"],
        "2024-02-28T16:00:00Z"
    );
    assert_eq!(
        v["presence"][lower(&b)]["last_seen"],
        serde_json::Value::Null
    );
    // A directory that never answers: what is known here, within the timeout.
    let (c, _) = h.request(query("GET", &lower(&a), Some(&bearer)), b"");
    let out = h.advance(3_000);
    assert_eq!(json(&out, c).1["presence"][lower(&a)]["online"], false);
    assert_eq!(h.relay.sizes().directory, 0, "nothing waits any more");
}
