//! `/metrics` on its own listener, read by the official Prometheus parser:
//! the values move with the calls made, labels come from fixed sets (never
//! an agent address), and `/ready` answers beside it.

use osaurus_relay_tests::e2e::*;
use osaurus_relay_tests::harness::{host_of, key};
use osaurus_relay_tests::origin::Origin;
use osaurus_relay_tests::prom::{parse, value, Sample};
use std::net::SocketAddr;

async fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let r = call(addr, b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n\r\n").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ctype = r.header("content-type").unwrap_or_default();
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    parse(&r.text())
}

fn get_value(s: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    value(s, name, labels).unwrap_or(0.0)
}

#[test]
fn metrics_move_with_the_calls_and_carry_no_agent_labels() {
    let relay = start(|a| a.metrics_addr = Some("127.0.0.1:0".parse().unwrap()));
    let metrics = relay.metrics_addr.expect("metrics listener");
    let origin = Origin::spawn("origin");
    let k = key(1);
    smol::block_on(async {
        let before = scrape(metrics).await;
        assert_eq!(value(&before, "osaurus_relay_tunnels", &[]), Some(0.0));
        assert_eq!(
            value(&before, "osaurus_relay_open_connections", &[]),
            Some(0.0)
        );
        assert_eq!(
            value(&before, "osaurus_relay_call_duration_seconds_count", &[]),
            Some(0.0)
        );
        let client = ClientHandle::spawn(relay.addr, &origin.url(), &[&k]);
        client.online().await;
        let r = call(relay.addr, &get(&host_of(&k), "/hello")).await;
        assert_eq!(r.status, 200);
        let r = call(relay.addr, &post(&host_of(&k), "/echo", b"abcd")).await;
        assert_eq!(r.text(), "abcd");
        let r = call(relay.addr, &get(&host_of(&key(2)), "/")).await;
        assert_eq!(r.status, 502);
        let after = scrape(metrics).await;
        let v = |name: &str, labels: &[(&str, &str)]| get_value(&after, name, labels);
        assert_eq!(v("osaurus_relay_tunnels", &[]), 1.0);
        assert_eq!(v("osaurus_relay_agents", &[]), 1.0);
        assert_eq!(v("osaurus_relay_tunnel_connections_total", &[]), 1.0);
        let ok = [("outcome", "ok"), ("status", "2xx")];
        assert_eq!(v("osaurus_relay_calls_total", &ok), 2.0);
        let offline = [("outcome", "agent_offline"), ("status", "5xx")];
        assert_eq!(v("osaurus_relay_calls_total", &offline), 1.0);
        assert_eq!(
            v("osaurus_relay_errors_total", &[("code", "agent_offline")]),
            1.0
        );
        assert_eq!(v("osaurus_relay_request_bytes_total", &[]), 4.0);
        let out = "hello from origin".len() as f64 + 4.0 + r.body.len() as f64;
        assert_eq!(v("osaurus_relay_response_bytes_total", &[]), out);
        assert_eq!(v("osaurus_relay_requests_relayed_total", &[]), 2.0);
        assert_eq!(v("osaurus_relay_call_duration_seconds_count", &[]), 3.0);
        assert_eq!(v("osaurus_relay_host_first_byte_seconds_count", &[]), 2.0);
        let inf = [("le", "+Inf")];
        assert_eq!(v("osaurus_relay_host_first_byte_seconds_bucket", &inf), 2.0);
        // The tunnel, and the calls' connections the relay has not seen close yet.
        let open = v("osaurus_relay_open_connections", &[]);
        assert!((1.0..=4.0).contains(&open), "{open}");
        for (name, labels, _) in &after {
            assert!(
                labels.values().all(|l| !l.starts_with("0x")),
                "{name} {labels:?}"
            );
        }
        let r = call(metrics, b"GET /ready HTTP/1.1\r\nHost: m\r\n\r\n").await;
        assert_eq!((r.status, r.text().as_str()), (200, "ready\n"));
        let r = call(
            metrics,
            b"POST /metrics HTTP/1.1\r\nHost: m\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert_eq!(r.status, 405);
        let r = call(metrics, b"GET /stats HTTP/1.1\r\nHost: m\r\n\r\n").await;
        assert_eq!(r.status, 404);
    });
}
