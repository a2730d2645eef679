//! Helpers shared by the tests of the `osaurus-relay` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_osaurus-relay"))
}

/// Kills the child if the test fails before it exits.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The relay on a port of the OS's choosing with `env`, its log, and the
/// first log line (it says where it listens).
pub fn serve(env: &[(&str, &str)]) -> (Reaped, BufReader<std::process::ChildStderr>, String) {
    let mut child = Reaped(
        bin()
            .args(["--bind-addr", "127.0.0.1", "--port", "0"])
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts"),
    );
    let mut lines = BufReader::new(child.0.stderr.take().expect("stderr"));
    let mut line = String::new();
    lines.read_line(&mut line).expect("a log line");
    (child, lines, line)
}

/// SIGTERM; the exit code and the rest of the log.
pub fn stop(
    mut child: Reaped,
    mut lines: BufReader<std::process::ChildStderr>,
) -> (Option<i32>, String) {
    let pid = child.0.id().to_string();
    let term = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(term.unwrap().success());
    let code = child.0.wait().expect("exits").code();
    let mut rest = String::new();
    lines.read_to_string(&mut rest).unwrap();
    (code, rest)
}

/// The `addr=` of the relay's text "listening" line.
pub fn listening_addr(line: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .unwrap_or_else(|| panic!("no listening line: {line}"))
        .to_string()
}

/// Reads log lines until one contains `needle`; returns it.
pub fn wait_for_line(lines: &mut BufReader<std::process::ChildStderr>, needle: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let n = lines.read_line(&mut line).expect("a log line");
        assert!(n > 0, "the relay exited before logging {needle:?}");
        if line.contains(needle) {
            return line;
        }
    }
}
