//! Several instances: what the directory said about agents' owners lately,
//! the calls waiting for a look-up, and whether the directory is reachable.

use crate::auth::Address;
use crate::input::CallId;
use crate::map::{map, Map};

pub(crate) struct DirectoryCache {
    /// Recent answers: the owner (or nobody) and when the answer expires (ms).
    located: Map<Address, (Option<String>, u64)>,
    /// Calls waiting on a look-up, per agent, oldest first.
    locating: Map<Address, Vec<CallId>>,
    pub up: bool,
}

impl DirectoryCache {
    pub fn new(seed: u64) -> Self {
        DirectoryCache {
            located: map(seed),
            locating: map(seed),
            up: false,
        }
    }

    /// A fresh answer about `agent`: `Some(owner or None)`, `None` if unknown.
    pub fn owner(&self, agent: &Address, now: u64) -> Option<Option<String>> {
        (self.located.get(agent))
            .filter(|(_, exp)| *exp > now)
            .map(|(o, _)| o.clone())
    }

    pub fn remember(&mut self, agent: Address, owner: Option<String>, expires: u64) {
        self.located.insert(agent, (owner, expires));
    }

    /// `call` waits for a look-up of `agent`; `true` when it is the first
    /// (the look-up must be asked for).
    pub fn wait(&mut self, agent: Address, call: CallId) -> bool {
        let waiting = self.locating.entry(agent).or_default();
        waiting.push(call);
        waiting.len() == 1
    }

    /// The calls that waited for `agent`, oldest first.
    pub fn answered(&mut self, agent: &Address) -> Vec<CallId> {
        self.locating.remove(agent).unwrap_or_default()
    }

    pub fn stop_waiting(&mut self, agent: &Address, call: CallId) {
        if let Some(w) = self.locating.get_mut(agent) {
            w.retain(|c| *c != call);
            if w.is_empty() {
                self.locating.remove(agent);
            }
        }
    }

    pub fn sweep(&mut self, now: u64) {
        self.located.retain(|_, (_, exp)| *exp > now);
    }

    /// Answers and look-ups held.
    pub fn len(&self) -> usize {
        self.located.len() + self.locating.len()
    }
}
