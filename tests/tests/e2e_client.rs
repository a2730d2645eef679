//! Relay + `osaurus-relay tunnel` + a local HTTP server, all on loopback.

use osaurus_relay_engine::client::ClientEvent;
use osaurus_relay_tests::e2e::*;
use osaurus_relay_tests::harness::{host_of, key, lower};
use osaurus_relay_tests::origin::Origin;

#[test]
fn buffered_and_sse_calls_pass_through() {
    let relay = start(|_| {});
    let origin = Origin::spawn("origin");
    let a = key(1);
    let client = ClientHandle::spawn(relay.addr, &origin.url(), &[&a]);
    smol::block_on(async {
        client.online().await;
        origin_round_trips(relay.addr, &host_of(&a), &origin).await;
    });
}

#[test]
fn the_client_comes_back_after_the_relay_restarts() {
    let relay = start(|_| {});
    let addr = relay.addr;
    let origin = Origin::spawn("origin");
    let a = key(1);
    let client = ClientHandle::spawn(addr, &origin.url(), &[&a]);
    smol::block_on(client.online());
    relay.shutdown();
    smol::block_on(client.wait_for("relay restarting", |e| *e == ClientEvent::RelayRestarting));
    relay.join().expect("relay stops cleanly");
    // Same port, new process state: the client finds it on its own.
    let mut args = test_args();
    args.port = addr.port();
    let relay = osaurus_relay_server::RelayHandle::spawn(args, addr).expect("rebind the same port");
    smol::block_on(async {
        client.online().await;
        let r = call(relay.addr, &get(&host_of(&a), "/hello")).await;
        assert_eq!((r.status, r.text().as_str()), (200, "hello from origin"));
    });
}

#[test]
fn takeover_between_two_clients_sharing_a_key() {
    let relay = start(|_| {});
    let (first_origin, second_origin) = (Origin::spawn("first"), Origin::spawn("second"));
    let a = key(1);
    let first = ClientHandle::spawn(relay.addr, &first_origin.url(), &[&a]);
    smol::block_on(async {
        first.online().await;
        let r = call(relay.addr, &get(&host_of(&a), "/hello")).await;
        assert_eq!(r.text(), "hello from first");
        let second = ClientHandle::spawn(relay.addr, &second_origin.url(), &[&a]);
        second.online().await;
        let address = lower(&a);
        first
            .wait_for("superseded", |e| {
                *e == ClientEvent::Superseded {
                    address: address.clone(),
                }
            })
            .await;
        let r = call(relay.addr, &get(&host_of(&a), "/hello")).await;
        assert_eq!(r.text(), "hello from second");
    });
    // The first client had no agent left: it stopped instead of fighting back.
    let mut first = first;
    first
        .thread
        .take()
        .expect("thread")
        .join()
        .expect("first client exits");
}

#[test]
fn cancel_reaches_the_local_server() {
    let relay = start(|_| {});
    let origin = Origin::spawn("origin");
    let a = key(1);
    let client = ClientHandle::spawn(relay.addr, &origin.url(), &[&a]);
    smol::block_on(async {
        client.online().await;
        let mut c = Caller::connect(relay.addr).await;
        c.send(&get(&host_of(&a), "/hang")).await;
        within("local request starts", origin.hang_started.recv())
            .await
            .unwrap();
        drop(c);
        within("local request dropped", origin.hang_closed.recv())
            .await
            .unwrap();
    });
}

#[test]
fn a_dead_local_server_is_a_502() {
    let relay = start(|_| {});
    let a = key(1);
    // Nothing listens on this port once the listener is dropped.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = ClientHandle::spawn(relay.addr, &format!("http://127.0.0.1:{port}"), &[&a]);
    smol::block_on(async {
        client.online().await;
        let r = call(relay.addr, &get(&host_of(&a), "/")).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (502, r#"{"error":"local_server_error"}"#)
        );
    });
}
