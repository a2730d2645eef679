//! Test processes of our own (the relay, our tunnel client): started with a
//! first stdout line to wait on, killed by PID on drop, peak memory readable.

use std::io::BufRead;
use std::process::{Command, Stdio};

pub struct Child {
    proc: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
    /// The child's first stdout line (the relay prints its address).
    pub first_line: String,
}

impl Child {
    /// Starts `c` with stdout piped and waits for its first line.
    pub fn spawn(mut c: Command) -> Child {
        c.stdout(Stdio::piped());
        let mut proc = c.spawn().expect("child starts");
        let mut out = std::io::BufReader::new(proc.stdout.take().expect("piped"));
        let mut first_line = String::new();
        out.read_line(&mut first_line).expect("first line");
        assert!(!first_line.is_empty(), "child exited before its first line");
        first_line.truncate(first_line.trim_end().len());
        Child {
            proc,
            out,
            first_line,
        }
    }

    /// The relay child (`exe`: `env!("CARGO_BIN_EXE_relay_child")`) with
    /// `env` on top of its defaults; returns it and the address it serves on.
    pub fn relay(exe: &str, env: &[(&str, &str)]) -> (Child, std::net::SocketAddr) {
        let mut c = Command::new(exe);
        c.env("BASE_DOMAIN", crate::harness::DOMAIN)
            .env("RUST_LOG", "off")
            .envs(env.iter().copied());
        let child = Child::spawn(c);
        let addr = child
            .first_line
            .parse()
            .expect("the child prints its address");
        (child, addr)
    }

    /// Our tunnel client (`exe`: `env!("CARGO_BIN_EXE_tunnel_child")`) for
    /// agent `key(seed)`, returned once it is online.
    pub fn tunnel(exe: &str, relay: std::net::SocketAddr, local: &str, seed: u64) -> Child {
        let mut c = Command::new(exe);
        c.args([relay.to_string(), local.to_string(), seed.to_string()])
            .env("RUST_LOG", "off");
        let mut child = Child::spawn(c);
        // The client prints each agent's URL first, as `osaurus-relay tunnel` does.
        let mut l = child.first_line.clone();
        while l.trim_end() != "online" {
            l = child.line();
            assert!(!l.is_empty(), "the client exited before it was online");
        }
        child
    }

    /// The next stdout line, empty at end of output.
    pub fn line(&mut self) -> String {
        let mut l = String::new();
        let _ = self.out.read_line(&mut l);
        l
    }

    /// Peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.proc.id()))
            .expect("the child is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    pub fn kill(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}
