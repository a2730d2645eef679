//! Telling a call forwarded by another instance from a direct one: the
//! instances share a secret through the directory and send it in a header.

use super::directory::Directory;
use osaurus_relay_engine::{Fields, Hop};

/// The header that carries the shared secret between instances.
pub const HOP_HEADER: &str = "x-relay-hop";

/// Whether a call came from another instance (see [`Hop`]).
pub(crate) fn hop(dir: Option<&Directory>, headers: Fields<'_>) -> Hop {
    // One instance never forwards: no need to look.
    let Some(dir) = dir else {
        return Hop::Direct;
    };
    let Some(v) = headers.get(HOP_HEADER) else {
        return Hop::Direct;
    };
    match dir.secret() {
        Some(s) if constant_time_eq(s.as_bytes(), v.trim().as_bytes()) => Hop::Trusted,
        _ => Hop::Untrusted,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn secrets_compare_by_content_and_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn one_instance_never_sees_a_hop() {
        let h = vec![(HOP_HEADER.to_string(), "x".to_string())];
        assert_eq!(hop(None, Fields::Pairs(&h)), Hop::Direct);
        let c = osaurus_relay_engine::ClusterConfig {
            directory_timeout: Duration::from_millis(10),
            ..osaurus_relay_engine::ClusterConfig::new(
                "a",
                osaurus_relay_engine::RemoteRoute::Forward,
            )
        };
        let d = Directory::new("redis://127.0.0.1:1", None, &c).expect("a valid url");
        assert_eq!(
            hop(Some(&d), Fields::Pairs(&h)),
            Hop::Untrusted,
            "no secret known yet"
        );
        assert_eq!(hop(Some(&d), Fields::EMPTY), Hop::Direct);
    }
}
