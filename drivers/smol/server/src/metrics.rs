//! Prometheus metrics on a listener of their own (`METRICS_ADDR`): `GET
//! /metrics` in the OpenMetrics text format, encoded by prometheus-client
//! from the engine's counters as they stand (nothing is counted twice), and
//! `GET /ready` (200 while serving, 503 once draining). No per-agent label:
//! every label comes from a fixed set (outcomes, error codes, reasons).

use crate::hub::Shared;
use crate::stream::{read_more, write_all, Stream};
use async_io::Async;
use osaurus_relay_engine::stats::{Histogram, Stats};
use osaurus_relay_engine::wire::http1::{self, HeadLimits, ResponseFraming};
use osaurus_relay_rt::wheel::until;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::fmt::Error;
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// What one scrape shows.
#[derive(Debug)]
struct Snapshot {
    stats: Stats,
    open_connections: u64,
}

type Out = Result<(), Error>;

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Out {
    let m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Out {
    let m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

/// A counter with one label, one series per name in `tally`.
fn by(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    tally: &[(&str, u64)],
) -> Out {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in tally {
        ConstCounter::new(*n).encode(m.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

fn histogram(e: &mut DescriptorEncoder, name: &str, help: &str, h: &Histogram) -> Out {
    let mut m = e.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    let buckets: Vec<(f64, u64)> = (h.buckets().into_iter())
        .map(|(le, n)| (if le.is_finite() { le } else { f64::MAX }, n))
        .collect();
    let sum = h.sum_ms as f64 / 1000.0;
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, h.count(), &buckets, None)
}

fn class(c: u8) -> &'static str {
    ["none", "1xx", "2xx", "3xx", "4xx", "5xx"]
        .get(c as usize)
        .copied()
        .unwrap_or("other")
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Out {
        let s = &self.stats;
        let c = &s.counters;
        let e = &mut e;
        let mut m = e.encode_descriptor(
            "osaurus_relay_calls",
            "Finished agent-host calls by outcome (ok, a relay error code, replayed, caller_gone) and status class",
            None,
            MetricType::Counter,
        )?;
        for (outcome, status, n) in &c.calls.0 {
            let labels = [("outcome", *outcome), ("status", class(*status))];
            ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
        }
        let p = "osaurus_relay_";
        for (name, help, v) in [
            (
                "request_bytes",
                "Request body bytes of agent-host calls, from callers",
                c.request_bytes,
            ),
            (
                "response_bytes",
                "Response body bytes of agent-host calls, to callers",
                c.response_bytes,
            ),
            (
                "requests_relayed",
                "Request frames sent to tunnels",
                c.total_requests_relayed,
            ),
            (
                "tunnel_connections",
                "Tunnels that completed the handshake",
                c.total_tunnel_connections,
            ),
            ("auth_failures", "Failed tunnel handshakes", c.auth_failures),
            (
                "bad_host_responses",
                "Invalid answers from tunnels or owner instances",
                c.bad_host_responses,
            ),
            (
                "invalid_frames",
                "Non-JSON, unknown or unmatched frames from tunnels",
                c.invalid_frames,
            ),
            (
                "slow_consumer_aborts",
                "Streams cut because the caller read too slowly",
                c.slow_consumer_aborts,
            ),
            (
                "gateway_timeouts",
                "Calls answered 504 for want of an answer head",
                c.gateway_timeouts,
            ),
            (
                "forwarded_calls",
                "Calls forwarded to the instance holding the agent",
                c.internal_forwards,
            ),
            (
                "replayed_calls",
                "Calls answered with a 307 fly-replay",
                c.replays,
            ),
            ("takeovers", "Agents a newer session took over", c.takeovers),
        ] {
            counter(e, &format!("{p}{name}"), help, v)?;
        }
        let errors = &c.errors.0;
        by(
            e,
            "osaurus_relay_errors",
            "The relay's own error answers, by code",
            "code",
            errors,
        )?;
        let auth = &c.auth_failures_by.0;
        by(
            e,
            "osaurus_relay_auth_failures_by_reason",
            "Failed tunnel handshakes, by auth_error code",
            "reason",
            auth,
        )?;
        for (name, help, v) in [
            (
                "tunnels",
                "Authenticated tunnels open",
                s.active_tunnels as u64,
            ),
            (
                "agents",
                "Agents served by a tunnel here",
                s.active_agents as u64,
            ),
            (
                "calls_in_flight",
                "Calls the relay holds",
                s.active_calls as u64,
            ),
            (
                "open_connections",
                "TCP connections open (callers and tunnels)",
                self.open_connections,
            ),
            (
                "uptime_seconds",
                "Seconds since the relay started",
                s.uptime_seconds,
            ),
        ] {
            gauge(e, &format!("{p}{name}"), help, v)?;
        }
        if let Some((_, up)) = &s.instance {
            gauge(
                e,
                "osaurus_relay_redis_up",
                "1 while Redis answers",
                u64::from(*up),
            )?;
        }
        let host = "Request frame sent to a tunnel until its answer head (the agent's own time)";
        histogram(e, "osaurus_relay_host_first_byte", host, &c.host_seconds)?;
        let total = "Agent-host calls from their head until their last byte";
        histogram(e, "osaurus_relay_call_duration", total, &c.call_seconds)
    }
}

/// The exposition text of the relay's state now.
pub(crate) fn render(core: &Shared) -> String {
    let (stats, open_connections) = {
        let c = core.borrow();
        (c.stats(), c.open_connections())
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot {
        stats,
        open_connections,
    }));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// Serves `GET /metrics` and `GET /ready`, one request per connection.
pub(crate) async fn serve(
    ex: &'static smol::LocalExecutor<'static>,
    core: Shared,
    l: TcpListener,
    timeout: Duration,
) {
    let Ok(l) = Async::new(l) else { return };
    loop {
        let Ok((s, _)) = l.accept().await else {
            async_io::Timer::after(Duration::from_millis(50)).await;
            continue;
        };
        let core = core.clone();
        ex.spawn(async move {
            let s = Stream::uncounted(s);
            let deadline = Instant::now() + timeout;
            let _ = until(deadline, answer(&core, &s)).await;
        })
        .detach();
    }
}

async fn answer(core: &Shared, s: &Stream) {
    let mut buf = Vec::new();
    let head = loop {
        match http1::parse_head(&buf, &HeadLimits::default()) {
            Ok(Some((h, _))) => break Some(h),
            Ok(None) => {}
            Err(_) => break None,
        }
        if !matches!(read_more(s, &mut buf, false).await, Ok(n) if n > 0) {
            return;
        }
    };
    let path = head
        .as_ref()
        .map(|h| h.target.split('?').next().unwrap_or(""));
    let get = head.as_ref().is_some_and(|h| h.method == "GET");
    let (status, ctype, body) = match path {
        _ if head.is_none() => (400, "text/plain", "bad request\n".to_string()),
        Some("/metrics") if get => (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(core),
        ),
        Some("/ready") if get => match core.borrow().draining() {
            false => (200, "text/plain", "ready\n".to_string()),
            true => (503, "text/plain", "draining\n".to_string()),
        },
        Some("/metrics" | "/ready") => (405, "text/plain", "method not allowed\n".to_string()),
        _ => (404, "text/plain", "not found\n".to_string()),
    };
    let mut out = Vec::with_capacity(body.len() + 128);
    let headers = [
        ("content-type".to_string(), ctype.to_string()),
        ("connection".to_string(), "close".to_string()),
    ];
    let framing = ResponseFraming::Length(body.len() as u64);
    http1::write_head(&mut out, status, &headers, framing, false, 1);
    out.extend_from_slice(body.as_bytes());
    let _ = write_all(s, &out).await;
}
