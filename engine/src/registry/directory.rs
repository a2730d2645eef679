//! Several instances: what the directory said about agents' owners lately,
//! the calls waiting for a look-up, and whether the directory is reachable.

use crate::auth::Address;
use crate::input::CallId;
use crate::map::{map, Map};
use std::collections::VecDeque;

pub(crate) struct DirectoryCache {
    /// Recent answers: the owner (or nobody) and when the answer expires (ms).
    located: Map<Address, (Option<String>, u64)>,
    /// The answers in the order they were remembered (with their expiry, to
    /// tell a later answer for the same agent): the oldest go first when full.
    order: VecDeque<(Address, u64)>,
    /// Calls waiting on a look-up, per agent, oldest first.
    locating: Map<Address, Vec<CallId>>,
    pub up: bool,
    /// The driver reported the directory's health at least once.
    pub known: bool,
}

impl DirectoryCache {
    pub fn new(seed: u64) -> Self {
        DirectoryCache {
            located: map(seed),
            order: VecDeque::new(),
            locating: map(seed),
            up: false,
            known: false,
        }
    }

    /// A fresh answer about `agent`: `Some(owner or None)`, `None` if unknown.
    pub fn owner(&self, agent: &Address, now: u64) -> Option<Option<String>> {
        (self.located.get(agent))
            .filter(|(_, exp)| *exp > now)
            .map(|(o, _)| o.clone())
    }

    /// Remembers an answer until `expires`, holding at most `max` answers.
    pub fn remember(&mut self, agent: Address, owner: Option<String>, expires: u64, max: usize) {
        self.located.insert(agent, (owner, expires));
        self.order.push_back((agent, expires));
        while self.located.len() > max.max(1) || self.order.len() > 2 * max.max(1) {
            let Some((old, at)) = self.order.pop_front() else {
                break;
            };
            // Only the entry this record made: a later answer keeps its place.
            if self.located.get(&old).is_some_and(|(_, exp)| *exp == at) {
                self.located.remove(&old);
            }
        }
    }

    /// A tunnel here serves `agent` now: what the directory said is stale.
    pub fn forget(&mut self, agent: &Address) {
        self.located.remove(agent);
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
        let located = &self.located;
        self.order
            .retain(|(a, at)| located.get(a).is_some_and(|(_, exp)| exp == at));
    }

    /// Answers and look-ups held.
    pub fn len(&self) -> usize {
        self.located.len() + self.locating.len()
    }
}
