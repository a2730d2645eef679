//! What the relay server and the tunnel client on smol share, each in one
//! place: socket IO helpers and deadlines ([`io`]), OS entropy for the
//! engine ([`entropy`]), the single-threaded [`mailbox`] tasks hand engine
//! outputs through, one box for a loop's futures ([`reuse`]), and agent key
//! files ([`keys`]).

pub mod clock;
pub mod entropy;
pub mod io;
pub mod keys;
pub mod mailbox;
pub mod reuse;
pub mod wheel;

/// A thread's executor, alive for the rest of the process: tasks spawned on
/// it may outlive the function that made it (the server, the tunnel client).
pub fn leak_executor() -> &'static smol::LocalExecutor<'static> {
    Box::leak(Box::new(smol::LocalExecutor::new()))
}

/// `n` random bytes from the OS as lowercase hex (ids, secrets).
pub fn random_hex(n: usize) -> String {
    osaurus_relay_engine::time::random_hex(&mut entropy::OsEntropy::new(), n)
}
