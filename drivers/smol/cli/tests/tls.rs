//! TLS of the relay's own, over loopback with a test CA made here: https
//! callers and our tunnel client (`--ca-file`) on wss, a certificate swapped
//! and reloaded on SIGHUP while an open tunnel keeps working, the handshake
//! held to the head timeout, and bad files refused at start-up by name.

mod common;

use common::{bin, listening_addr, serve, stop, wait_for_line, Reaped};
use osaurus_relay_tests::origin::Origin;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::ServerName;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

const DOMAIN: &str = "relay.test";

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).expect("self-signed");
    Ca { cert, key }
}

/// A wildcard leaf for the base domain (and 127.0.0.1, for the tunnel
/// client) signed by `ca`; writes it and its key to `dir`, returns its DER.
fn leaf(ca: &Ca, name: &str, dir: &Path) -> Vec<u8> {
    let key = KeyPair::generate().expect("key");
    let names = vec![DOMAIN.to_string(), format!("*.{DOMAIN}")];
    let mut p = CertificateParams::new(names).expect("params");
    (p.subject_alt_names).push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.signed_by(&key, &ca.cert, &ca.key).expect("signed");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key");
    cert.der().to_vec()
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("osaurus-relay-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

struct Answer {
    text: String,
    leaf: Vec<u8>,
    alpn: Option<Vec<u8>>,
}

/// One https request to `addr` with SNI `host`, trusting `ca` only.
fn https(addr: &str, ca: &Ca, host: &str, path: &str) -> Answer {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(host.to_string()).expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("session");
    let tcp = TcpStream::connect(addr).expect("connects");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).expect("request written");
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        match tls.read(&mut b) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e) => panic!("reading the answer: {e}"),
        }
    }
    let leaf = tls.conn.peer_certificates().expect("a certificate")[0].to_vec();
    Answer {
        text: String::from_utf8_lossy(&got).into_owned(),
        leaf,
        alpn: tls.conn.alpn_protocol().map(|p| p.to_vec()),
    }
}

fn tunnel(addr: &str, ca_file: &Path, origin: &str, key: &Path) -> (Reaped, String) {
    let port = addr.rsplit_once(':').expect("port").1;
    let relay = format!("wss://127.0.0.1:{port}");
    let mut child = Reaped(
        bin()
            .args(["tunnel", "--relay", &relay, "--to", origin])
            .arg("--ca-file")
            .arg(ca_file)
            .arg("--key")
            .arg(key)
            .env("RUST_LOG", "off")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the tunnel client starts"),
    );
    let mut out = BufReader::new(child.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("a line");
    assert!(line.contains(" -> "), "the client is online: {line:?}");
    (child, line)
}

#[test]
fn https_and_wss_with_a_test_ca_and_a_certificate_reloaded_on_sighup() {
    let dir = temp_dir("tls");
    let (ca1, ca2) = (ca("test CA one"), ca("test CA two"));
    let first = leaf(&ca1, "one", &dir);
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, format!("{}{}", ca1.cert.pem(), ca2.cert.pem())).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let env = [
        ("TLS_CERT", cert.to_str().unwrap()),
        ("TLS_KEY", key.to_str().unwrap()),
        ("BASE_DOMAIN", DOMAIN),
        ("HEADER_TIMEOUT", "500ms"),
        ("RUST_LOG", "info"),
    ];
    let (child, mut lines, line) = serve(&env);
    assert!(line.contains(r#"scheme="https""#), "{line}");
    let addr = listening_addr(&line);
    let origin = Origin::spawn("origin");
    let agent_key = dir.join("agent.key");
    let out = bin()
        .arg("keygen")
        .arg("--out")
        .arg(&agent_key)
        .output()
        .unwrap();
    let agent = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .to_ascii_lowercase();
    let (_tunnel, online) = tunnel(&addr, &ca_file, &origin.url(), &agent_key);
    assert!(
        online.contains(&format!("https://{agent}.{DOMAIN}")),
        "{online}"
    );
    // An https caller reaches the agent through the wss tunnel.
    let host = format!("{agent}.{DOMAIN}");
    let a = https(&addr, &ca1, &host, "/hello");
    assert!(a.text.starts_with("HTTP/1.1 200"), "{}", a.text);
    assert!(a.text.ends_with("hello from origin"), "{}", a.text);
    assert_eq!((a.leaf, a.alpn), (first, Some(b"http/1.1".to_vec())));
    // Plain HTTP on the TLS port gets no answer, and breaks nothing.
    let mut plain = TcpStream::connect(&addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: relay.test\r\n\r\n")
        .unwrap();
    let mut junk = Vec::new();
    let _ = plain.read_to_end(&mut junk);
    assert!(
        !String::from_utf8_lossy(&junk).contains("HTTP/1.1"),
        "{junk:?}"
    );
    // A connection that never starts its handshake is closed at HEADER_TIMEOUT.
    let mut silent = TcpStream::connect(&addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let r = silent.read(&mut [0u8; 16]);
    assert!(
        matches!(r, Ok(0))
            || r.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    // The certificate is renewed on disk: SIGHUP, and new handshakes get it.
    let second = leaf(&ca2, "two", &dir);
    let pid = child.0.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    wait_for_line(&mut lines, "TLS certificate reloaded");
    let a = https(&addr, &ca2, &host, "/hello");
    assert_eq!(a.leaf, second);
    assert!(a.text.ends_with("hello from origin"), "{}", a.text);
    // ... through the tunnel opened before the swap: it never reconnected.
    let stats = https(&addr, &ca2, DOMAIN, "/stats");
    assert!(
        stats.text.contains(r#""total_tunnel_connections":1"#),
        "{}",
        stats.text
    );
    // A broken file at the next reload: logged, and the certificate stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let l = wait_for_line(&mut lines, "not reloaded");
    assert!(l.contains("TLS_CERT"), "{l}");
    assert_eq!(https(&addr, &ca2, &host, "/hello").leaf, second);
    let (code, _) = stop(child, lines);
    assert_eq!(code, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_tls_files_stop_start_up_naming_the_setting() {
    let dir = temp_dir("tls-bad");
    let ca1 = ca("test CA");
    leaf(&ca1, "one", &dir);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let other = dir.join("other.pem");
    std::fs::write(&other, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let missing = dir.join("missing.pem");
    let run = |cert: &Path, key: &Path| {
        let out = bin()
            .args(["--bind-addr", "127.0.0.1", "--port", "0"])
            .env("TLS_CERT", cert)
            .env("TLS_KEY", key)
            .output()
            .expect("runs");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&missing, &key).contains("TLS_CERT"));
    assert!(run(&cert, &missing).contains("TLS_KEY"));
    assert!(
        run(&key, &key).contains("TLS_CERT"),
        "a key is not a certificate"
    );
    let e = run(&cert, &other);
    assert!(e.contains("TLS_KEY") && e.contains("does not match"), "{e}");
    let out = bin().env("TLS_CERT", &cert).output().expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TLS_KEY"));
    let _ = std::fs::remove_dir_all(&dir);
}
