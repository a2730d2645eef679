//! The `osaurus-relay` binary itself: start-up, configuration errors, SIGTERM.

mod common;

use common::{bin, serve, stop};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn invalid_settings_stop_start_up_naming_the_setting() {
    for (var, value, needle) in [
        ("PORT", "eighty", "--port"),
        ("DUPLICATE_POLICY", "both", "--duplicate-policy"),
        ("RESPONSE_TIMEOUT", "30", "--response-timeout"),
        ("CLIENT_IP_HEADER", "bad header", "--client-ip-header"),
        ("PUBLIC_URL", "https://agents.example.com", "--public-url"),
        ("PUBLIC_URL", "ftp://{address}.example.com", "--public-url"),
    ] {
        let out = bin().env(var, value).output().expect("runs");
        assert!(!out.status.success(), "{var}={value} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{var}: {err}");
    }
}

#[test]
fn serves_then_exits_cleanly_on_sigterm() {
    let (child, lines, line) = serve(&[("RUST_LOG", "info")]);
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .unwrap_or_else(|| panic!("no listening line: {line}"))
        .to_string();
    let mut s = TcpStream::connect(&addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
    assert!(resp.ends_with(r#""status":"ok","tunnels":0}"#), "{resp}");
    let (code, rest) = stop(child, lines);
    assert_eq!(code, Some(0));
    assert!(rest.contains("shutdown complete"), "{rest}");
}

#[test]
fn json_logs_are_one_object_per_line_with_where_it_runs() {
    let json = [
        ("LOG_FORMAT", "json"),
        ("FLY_REGION", "fra"),
        ("FLY_MACHINE_ID", "m1"),
    ];
    let (child, lines, line) = serve(&json);
    let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object");
    assert_eq!(v["event"], "listening", "{line}");
    assert_eq!(
        (v["level"].as_str(), v["region"].as_str()),
        (Some("info"), Some("fra"))
    );
    assert_eq!(v["machine"], "m1");
    assert!(
        v["ts"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
        "{line}"
    );
    let addr = v["addr"].as_str().expect("addr").to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    // One call for an agent nobody serves: its relay.request line, with no secret.
    let agent = format!("0x{}", "ab".repeat(20));
    let mut s = TcpStream::connect(&addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "GET /v1/x?token=qsecret HTTP/1.1\r\nHost: {agent}.agent.osaurus.ai\r\n\
         Authorization: Bearer hsecret\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    let (code, rest) = stop(child, lines);
    assert_eq!(code, Some(0));
    let mut calls = Vec::new();
    for l in rest.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["event"].is_string(), "{l}");
        if v["event"] == "relay.request" {
            calls.push(v);
        }
    }
    assert!(rest.contains(r#""event":"shutdown complete"#), "{rest}");
    assert!(!rest.contains("secret"), "a secret in the log: {rest}");
    let [c] = calls.as_slice() else {
        panic!("one relay.request line: {rest}")
    };
    assert_eq!(
        (&c["agent"], &c["method"], &c["path"], &c["client_ip"]),
        (
            &agent.clone().into(),
            &"GET".into(),
            &"/v1/x".into(),
            &"127.0.0.1".into()
        )
    );
    assert_eq!(
        (&c["status"], &c["outcome"]),
        (&502.into(), &"agent_offline".into())
    );
    assert_eq!((&c["bytes_in"], &c["machine"]), (&0.into(), &"m1".into()));
    assert!(c["total_ms"].is_u64() && c["ttfb_ms"].is_u64(), "{c}");
}

#[test]
fn a_bad_log_format_stops_start_up_naming_it() {
    let out = bin().env("LOG_FORMAT", "xml").output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LOG_FORMAT"), "{err}");
}
