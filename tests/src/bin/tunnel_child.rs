//! Our tunnel client (`osaurus-relay tunnel`) in a process of its own, so a
//! test can read its peak memory. `tunnel_child RELAY_ADDR LOCAL_URL KEY_SEED`:
//! prints `online` once the relay accepted the agent; runs until killed.

use osaurus_relay_client::{run, Local, RelayUrl, TunnelOpts};
use osaurus_relay_engine::client::{ClientConfig, ClientEvent};
use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [relay, local, seed] = args.as_slice() else {
        eprintln!("usage: tunnel_child RELAY_ADDR LOCAL_URL KEY_SEED");
        std::process::exit(2);
    };
    let seed: u64 = seed.parse().expect("numeric key seed");
    let (etx, erx) = smol::channel::unbounded();
    let opts = TunnelOpts {
        relay: RelayUrl::parse(&format!("ws://{relay}")).expect("relay url"),
        local: Local::parse(local, None).expect("local url"),
        keys: vec![osaurus_relay_tests::harness::key(seed)],
        client: ClientConfig::default(),
        stdin_commands: false,
        events: Some(etx),
    };
    let ex = osaurus_relay_rt::leak_executor();
    ex.spawn(async move {
        while let Ok(e) = erx.recv().await {
            if matches!(e, ClientEvent::Online { .. }) {
                let mut out = std::io::stdout();
                let _ = writeln!(out, "online");
                let _ = out.flush();
            }
        }
    })
    .detach();
    smol::block_on(ex.run(run(ex, opts)));
}
