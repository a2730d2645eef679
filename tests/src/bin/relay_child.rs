//! The relay server in a process of its own, for tests that kill an instance
//! with SIGKILL. Settings come from the environment exactly as for
//! `osaurus-relay serve`; it binds 127.0.0.1:0 and prints the address.

fn main() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    let args = osaurus_relay_server::ServeArgs::defaults();
    let relay = osaurus_relay_server::RelayHandle::spawn_on(args, listener).expect("relay starts");
    println!("{addr}");
    if let Err(e) = relay.join() {
        eprintln!("relay failed: {e}");
        std::process::exit(1);
    }
}
