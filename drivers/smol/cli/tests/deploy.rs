//! The deploy files, checked as far as this machine allows: the systemd
//! unit through `systemd-analyze verify`, fly.toml and the Dockerfile for
//! what an operator relies on (drain before kill, health checks, no root),
//! and the `health` probe the image's HEALTHCHECK runs.

mod common;

use common::{bin, listening_addr, serve, stop};
use std::path::PathBuf;
use std::time::Duration;

fn repo(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../..")
        .join(file)
}

fn read(file: &str) -> String {
    std::fs::read_to_string(repo(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn drain() -> Duration {
    osaurus_relay_server::ServeArgs::defaults().drain_timeout
}

/// `value` of `Key=value` in a unit file (the last one wins, as in systemd).
fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    (unit.lines())
        .rev()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn the_systemd_unit_verifies_clean_and_outlasts_the_drain() {
    let unit = read("deploy/osaurus-relay.service");
    for (key, want) in [
        ("Type", "simple"),
        ("Restart", "on-failure"),
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("KillSignal", "SIGTERM"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ] {
        assert_eq!(unit_value(&unit, key), Some(want), "{key}");
    }
    let files: u64 = unit_value(&unit, "LimitNOFILE").unwrap().parse().unwrap();
    assert!(
        files >= 200_000,
        "two descriptors per tunnel for 100,000 tunnels: {files}"
    );
    let stop: u64 = unit_value(&unit, "TimeoutStopSec")
        .unwrap()
        .parse()
        .unwrap();
    assert!(Duration::from_secs(stop) > drain(), "TimeoutStopSec {stop}");
    if std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not on this machine: verify skipped");
        return;
    }
    // The unit as installed, its binary where this build put it.
    let dir = std::env::temp_dir().join(format!("osaurus-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("osaurus-relay.service");
    let exe = env!("CARGO_BIN_EXE_osaurus-relay");
    std::fs::write(&path, unit.replace("/usr/local/bin/osaurus-relay", exe)).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    // Unknown keys are only warnings to systemd: any output fails here.
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn fly_toml_keeps_machines_up_drains_before_kill_and_rolls() {
    let fly: toml::Table = read("fly.toml").parse().expect("fly.toml is TOML");
    let service = fly["http_service"].as_table().expect("[http_service]");
    assert_eq!(service["auto_stop_machines"].as_str(), Some("off"));
    assert!(service["min_machines_running"].as_integer() >= Some(1));
    let port = service["internal_port"].as_integer().unwrap().to_string();
    assert_eq!(fly["env"]["PORT"].as_str(), Some(port.as_str()));
    assert_eq!(service["concurrency"]["type"].as_str(), Some("connections"));
    let checks = service["checks"].as_array().expect("checks");
    assert!(checks.iter().any(|c| c["path"].as_str() == Some("/health")));
    assert_eq!(fly["deploy"]["strategy"].as_str(), Some("rolling"));
    assert_eq!(fly["kill_signal"].as_str(), Some("SIGTERM"));
    let kill = fly["kill_timeout"].as_str().unwrap().trim_end_matches('s');
    assert!(
        Duration::from_secs(kill.parse().unwrap()) > drain(),
        "{kill}"
    );
}

#[test]
fn the_dockerfile_is_multi_stage_unprivileged_and_health_checked() {
    let file = read("Dockerfile");
    let lines: Vec<&str> = file.lines().filter(|l| !l.starts_with('#')).collect();
    let froms: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert!(
        froms.len() >= 2 && froms[0].ends_with(" AS build"),
        "{froms:?}"
    );
    let runtime = file.rsplit("\nFROM ").next().unwrap();
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "{user}"
    );
    assert!(runtime.contains("EXPOSE 8080") && runtime.contains("ENV PORT=8080"));
    assert!(runtime.contains("STOPSIGNAL SIGTERM"));
    assert!(runtime.contains(r#"CMD ["/usr/local/bin/osaurus-relay", "health"]"#));
    // The build line is the one CI runs (`.ci/run` takes it from here).
    let build = lines
        .iter()
        .find_map(|l| l.strip_prefix("RUN cargo build "))
        .expect("build");
    assert!(
        build.contains("--release") && build.contains("-p osaurus-relay"),
        "{build}"
    );
    assert!(read(".ci/run").contains("Dockerfile"));
}

#[test]
fn the_health_probe_passes_on_a_serving_relay_and_fails_without_one() {
    let (child, lines, line) = serve(&[("RUST_LOG", "info")]);
    let addr = listening_addr(&line);
    let url = format!("http://{addr}/health");
    let out = bin().args(["health", "--url", &url]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("200"));
    let (code, _) = stop(child, lines);
    assert_eq!(code, Some(0));
    // Nothing listens there any more.
    let out = bin().args(["health", "--url", &url]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unhealthy"));
}
