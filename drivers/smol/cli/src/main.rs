//! The `osaurus-relay` command: argument parsing and wiring only; the
//! server, the tunnel client and key files live in their own crates.

mod log;

use clap::{Args, Parser, Subcommand};
use osaurus_relay_client::{self as client, Local, RelayUrl, TunnelOpts};
use osaurus_relay_engine::client::ClientConfig;
use osaurus_relay_rt::keys;
use osaurus_relay_server::ServeArgs;
use std::path::PathBuf;

/// The Osaurus relay: a public URL for each Osaurus agent, over one WebSocket tunnel.
#[derive(Parser)]
#[command(
    name = "osaurus-relay",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay server (the default).
    Serve(Box<ServeArgs>),
    /// Expose a local HTTP server through a relay, as the Osaurus app does.
    Tunnel(TunnelArgs),
    /// Write a new agent key (mode 0600) and print its address.
    Keygen {
        /// Where to write the key.
        #[arg(long, default_value = "agent.key")]
        out: PathBuf,
    },
    /// Print the address of an agent key.
    Address { file: PathBuf },
    /// Probe a running relay's /health (a container's HEALTHCHECK): exit 0
    /// on 200, else 1.
    Health {
        /// What to probe (plain http); default: /health on PORT at 127.0.0.1.
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Args)]
struct TunnelArgs {
    /// The relay to connect to (wss:// or ws://).
    #[arg(long, env = "RELAY_URL", default_value = "wss://agent.osaurus.ai")]
    relay: String,
    /// Trust only the CA certificates in this PEM file for wss:// (a private
    /// CA) instead of the public roots.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The local HTTP server to expose (http://host:port).
    #[arg(long)]
    to: String,
    /// An agent key file; repeat for several agents on one tunnel.
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// Also pass the agent's address to the local server in this header
    /// (the Osaurus app uses its own X-Osaurus-Agent-Id).
    #[arg(long)]
    agent_header: Option<String>,
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2);
}

fn tunnel(a: TunnelArgs) {
    let mut relay = RelayUrl::parse(&a.relay).unwrap_or_else(|e| fail(&e));
    if let Some(ca) = &a.ca_file {
        relay = relay.with_ca_file(ca).unwrap_or_else(|e| fail(&e));
    }
    let local = Local::parse(&a.to, a.agent_header).unwrap_or_else(|e| fail(&e));
    let keys = a
        .keys
        .iter()
        .map(|p| keys::read(p).unwrap_or_else(|e| fail(&e)))
        .collect();
    let opts = TunnelOpts {
        relay,
        local,
        keys,
        client: ClientConfig::default(),
        stdin_commands: true,
        events: None,
    };
    let ex = osaurus_relay_rt::leak_executor();
    smol::block_on(ex.run(client::run(ex, opts)));
}

/// GET `url` (http only) within a few seconds; its status line, or why not.
fn probe(url: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// can be probed"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let timeout = std::time::Duration::from_secs(3);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head[..n]);
    let line = line.lines().next().unwrap_or("").to_string();
    match line.split(' ').nth(1) {
        Some("200") => Ok(line),
        _ => Err(format!("{url}: {line}")),
    }
}

fn main() {
    if let Err(e) = log::init() {
        fail(&e);
    }
    let cli = Cli::parse();
    let serve = match cli.command {
        None => cli.serve,
        Some(Command::Serve(a)) => *a,
        Some(Command::Tunnel(a)) => return tunnel(a),
        Some(Command::Keygen { out }) => {
            let k = keys::generate();
            keys::write(&out, &k).unwrap_or_else(|e| fail(&format!("{}: {e}", out.display())));
            println!("{}", keys::address(&k));
            return;
        }
        Some(Command::Health { url }) => {
            let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
            let url = url.unwrap_or_else(|| format!("http://127.0.0.1:{port}/health"));
            match probe(&url) {
                Ok(line) => println!("{line}"),
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    std::process::exit(1);
                }
            }
            return;
        }
        Some(Command::Address { file }) => {
            let k = keys::read(&file).unwrap_or_else(|e| fail(&e));
            println!("{}", keys::address(&k));
            return;
        }
    };
    if let Err(e) = osaurus_relay_server::run(serve) {
        tracing::error!(error = %e, "relay failed");
        std::process::exit(1);
    }
}
