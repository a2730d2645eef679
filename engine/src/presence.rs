//! `GET /presence?addresses=a,b`: which agents are online, for a router
//! service, as the newer reference relay answers it. Agents with a tunnel
//! here are answered at once; with several instances the others by one
//! directory read (`Output::PresenceLookup`, answered by `Input::PresenceFound`).

use crate::auth::parse_address;
use crate::error::CallError;
use crate::http;
use crate::input::{CallId, RequestHead};
use crate::output::Output;
use crate::relay::Relay;
use crate::time::{iso8601, ms, Entropy};
use crate::timer::TimerKey;
use core::net::IpAddr;

/// Most addresses one query may ask about.
const MAX_ADDRESSES: usize = 100;
/// Longest `addresses` parameter, in characters.
const MAX_PARAM: usize = 4300;

/// A presence query waiting for the directory.
pub(crate) struct PendingPresence {
    /// Every address asked about, in order, with what is known so far:
    /// `Some(last_seen)` when a tunnel here serves it.
    pub asked: Vec<(String, Option<u64>)>,
    pub deadline: u64,
}

/// Lowercase addresses from `addresses=…` in `target`, or why not.
fn addresses(target: &str) -> Result<Vec<String>, ()> {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let raw = (query.split('&'))
        .find_map(|p| p.strip_prefix("addresses="))
        .ok_or(())?;
    if raw.len() > MAX_PARAM {
        return Err(());
    }
    let mut out: Vec<String> = Vec::new();
    for a in raw.split(',').map(|a| a.trim().to_ascii_lowercase()) {
        let hex_ok =
            a.len() == 42 && a.starts_with("0x") && a[2..].bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_ok {
            return Err(());
        }
        if !out.contains(&a) {
            out.push(a);
        }
    }
    if out.is_empty() || out.len() > MAX_ADDRESSES {
        return Err(());
    }
    Ok(out)
}

/// Equal without revealing, by timing, how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl<E: Entropy> Relay<E> {
    pub(crate) fn presence(&mut self, call: CallId, head: &RequestHead, ip: IpAddr) {
        let Some(token) = self.cfg.presence_token.clone() else {
            return self.respond(call, http::error(404, "not_found"));
        };
        if head.method != "GET" {
            return self.respond(call, http::error(405, "method_not_allowed"));
        }
        let bearer = (head.headers.iter())
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .and_then(|(_, v)| v.trim().strip_prefix("Bearer "))
            .map(str::trim);
        if !bearer.is_some_and(|b| constant_time_eq(b.as_bytes(), token.as_bytes())) {
            return self.respond(call, http::error(401, "unauthorized"));
        }
        if !self
            .presence_rl
            .check(&http::limit_key(ip), self.now.mono_ms)
        {
            return self.refuse(call, CallError::RateLimited);
        }
        let Ok(asked) = addresses(head.target) else {
            return self.respond(call, http::error(400, "invalid_addresses"));
        };
        let unix = self.now.unix_secs;
        let asked: Vec<(String, Option<u64>)> = asked
            .into_iter()
            .map(|a| {
                let here = parse_address(&a).and_then(|addr| self.tunnels.serving(&addr));
                (a, here.map(|_| unix))
            })
            .collect();
        let remote: Vec<String> = (asked.iter())
            .filter(|(_, seen)| seen.is_none())
            .map(|(a, _)| a.clone())
            .collect();
        if self.cfg.cluster.is_none() || remote.is_empty() || !self.directory.up {
            return self.answer_presence(call, asked, &[]);
        }
        let deadline = self.now.mono_ms + ms(self.cfg.response_timeout);
        self.timers.set(deadline, TimerKey::Call(call.0));
        self.presence_waiting
            .insert(call, PendingPresence { asked, deadline });
        self.emit(Output::PresenceLookup {
            call,
            agents: remote,
        });
    }

    /// The directory answered: `claimed[i]` for the i-th remote address.
    pub(crate) fn on_presence_found(&mut self, call: CallId, claimed: &[bool]) {
        if let Some(p) = self.presence_waiting.remove(&call) {
            self.timers.cancel(p.deadline, TimerKey::Call(call.0));
            self.answer_presence(call, p.asked, claimed);
        }
    }

    /// No directory answer in time: what is known here is the answer.
    pub(crate) fn presence_timed_out(&mut self, call: CallId) -> bool {
        match self.presence_waiting.remove(&call) {
            Some(p) => {
                self.answer_presence(call, p.asked, &[]);
                true
            }
            None => false,
        }
    }

    pub(crate) fn presence_gone(&mut self, call: CallId) {
        if let Some(p) = self.presence_waiting.remove(&call) {
            self.timers.cancel(p.deadline, TimerKey::Call(call.0));
        }
    }

    fn answer_presence(
        &mut self,
        call: CallId,
        asked: Vec<(String, Option<u64>)>,
        claimed: &[bool],
    ) {
        let mut remote = claimed.iter();
        let mut presence = serde_json::Map::new();
        // A live claim is renewed while its tunnel answers pings: seen now.
        let now = self.now.unix_secs;
        for (a, seen) in asked {
            let seen = seen.or_else(|| remote.next().copied().unwrap_or(false).then_some(now));
            let entry = match seen {
                Some(unix) => serde_json::json!({"online": true, "last_seen": iso8601(unix)}),
                None => serde_json::json!({"online": false, "last_seen": null}),
            };
            presence.insert(a, entry);
        }
        let body = serde_json::json!({ "presence": presence });
        self.respond(call, http::json_response(200, &body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_one_to_a_hundred_valid_lowercase_ones() {
        let a = format!("0x{}", "Ab".repeat(20));
        let got = addresses(&format!("/presence?addresses={a},{a}")).unwrap();
        assert_eq!(got, vec![a.to_ascii_lowercase()]);
        assert!(addresses("/presence").is_err());
        assert!(addresses("/presence?addresses=").is_err());
        assert!(addresses("/presence?addresses=0x12").is_err());
        let many: Vec<String> = (0..101).map(|i| format!("0x{i:040x}")).collect();
        assert!(addresses(&format!("/presence?addresses={}", many.join(","))).is_err());
        let hundred = &many[..100];
        assert_eq!(
            addresses(&format!("/p?addresses={}", hundred.join(",")))
                .unwrap()
                .len(),
            100
        );
    }
}
