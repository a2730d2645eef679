//! What every call must have got, derived from what the simulation did, and
//! the final checks of a run.

use super::*;

impl Sim<'_> {
    /// What call `c` must have got, from what reached the relay and when.
    fn expected(&self, c: usize) -> (Vec<String>, &'static str) {
        let call = &self.calls[c];
        let Some(t) = call.expect else {
            if call.held && call.facts.iter().any(|(_, f)| matches!(f, Fact::Gone)) {
                return (vec![], "caller gone");
            }
            let why = ["agent offline", "held, then offline"][call.held as usize];
            return (vec![error_line(502, "agent_offline")], why);
        };
        CallModel::replay(call.sent, self.facts_of(c, t), &self.cfg)
    }

    /// What happened to call `c` on tunnel `t`, its loss included.
    fn facts_of(&self, c: usize, t: TunnelId) -> Vec<(Key, Fact)> {
        let lost = self.conns[&t].lost.expect("every tunnel is lost at last");
        let superseded = self.conns[&t].superseded;
        let facts =
            (self.calls[c].facts.iter().cloned()).chain([(lost, Fact::Lost { superseded })]);
        facts.collect()
    }

    /// Closes every socket, lets every deadline pass, then checks each call
    /// and that the relay holds nothing.
    pub(super) fn finish(&mut self) {
        self.q.clear();
        let now = self.now();
        for t in self.e.ledger.open_tunnels() {
            self.q.push(now, Ev::SocketGone(t));
        }
        self.run(now + 100_000);
        for c in 0..self.calls.len() {
            let (want, outcome) = self.expected(c);
            let call = &self.calls[c];
            let lost = call.expect.map(|t| self.conns[&t].lost);
            ensure!(self, call.got == want, "{want:?}: {call:?} {lost:?}");
            let delivered = call.held && call.expect.is_some();
            self.tally(outcome);
            if delivered {
                self.tally("held, then delivered");
            }
        }
        let tunnels = self.conns.len();
        ensure!(self, tunnels >= 200, "only {tunnels} tunnels");
        if let Err(left) = self.e.check_clean() {
            self.fail(left)
        }
        let count = |what| self.count.get(what).copied().unwrap_or(0);
        let timeouts = self.e.relay.stats().counters.gateway_timeouts as usize;
        let counted = count("gateway timeout");
        ensure!(self, timeouts == counted, "{timeouts} 504s");
        for what in OUTCOMES.split('|').map(str::trim) {
            ensure!(self, count(what) > 0, "no {what:?}: {:?}", self.count);
        }
    }
}
