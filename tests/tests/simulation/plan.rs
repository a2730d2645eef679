//! The scenario of one seed: clients, callers, faults and what hosts answer.

use super::*;

impl Sim<'_> {
    /// Seeds the clients, the callers and the faults.
    pub(super) fn plan(&mut self) {
        let mut next = 0;
        self.clients.resize_with(CLIENTS, Client::default);
        for c in 0..CLIENTS {
            let n = 1 + self.below(3) as usize;
            self.clients[c].agents = (next..next + n).collect();
            next += n;
            let at = self.below(2_000);
            self.q.push(at, Ev::Connect(c, false));
        }
        for i in 0..CALLS {
            let (c, k) = (self.below(CLIENTS as u64) as usize, self.below(3) as usize);
            let agents = &self.clients[c].agents;
            let agent = agents[k % agents.len()];
            let ghost = next + self.below(GHOSTS as u64) as usize;
            let agent = [agent, ghost][(self.below(100) < 3) as usize];
            let mut body = format!("b{}", self.text(300)).into_bytes();
            if self.below(2) == 0 {
                // Not UTF-8: travels as base64 and must arrive byte for byte.
                body.extend([0xff, 0xc3, self.below(256) as u8]);
            }
            let body = (self.below(3) == 0).then_some(body);
            let hangup = (self.below(100) < 4).then(|| self.below(4_000));
            let plan = self.answers(i);
            self.calls.push(Call {
                agent,
                body,
                plan,
                hangup,
                ..Call::default()
            });
            let at = 2_500 + i as u64 * 12 + self.below(12);
            self.q.push(at, Ev::Caller(i));
        }
        // Clients 0 and 1 start mute (see `connect`): leave them be.
        for _ in 0..40 {
            let c = 2 + self.below(CLIENTS as u64 - 2) as usize;
            let at = 3_000 + self.below(60_000);
            self.q.push(at, Ev::Drop(c));
            let c = 2 + self.below(CLIENTS as u64 - 2) as usize;
            let at = 3_000 + self.below(60_000);
            self.q.push(at, Ev::Connect(c, true));
        }
    }

    /// Up to `max` printable characters, a multi-byte one now and then.
    pub(super) fn text(&mut self, max: u64) -> String {
        let chars: Vec<char> = "abcdefghijklmnopqrstuvwxyz {}\":,é".chars().collect();
        let len = self.below(max + 1);
        (0..len)
            .map(|_| chars[self.below(chars.len() as u64) as usize])
            .collect()
    }

    /// What the host of call `i` answers, and when.
    pub(super) fn answers(&mut self, i: usize) -> Vec<(u64, Answer)> {
        use Answer::*;
        let resp = ms(self.cfg.response_timeout);
        let idle = ms(self.cfg.stream_idle_timeout);
        let body = format!("c{} {}", i + 1, self.text(200));
        let status = [200, 200, 200, 201, 404, 500, 204][self.below(7) as usize];
        let delay = self.below(1_500);
        match self.below(100) {
            0..=39 => vec![(delay, Response(status, body))],
            40..=49 => {
                let mut bytes = body.into_bytes();
                bytes.extend([0, 0xfe, self.below(256) as u8]);
                vec![(delay, Base64Response(status, bytes))]
            }
            50..=74 => {
                let stall = self.below(100) < 20;
                let mut at = self.below(800);
                let mut steps = vec![(at, Start(200))];
                for n in 0..1 + self.below(5) {
                    at += self.below(700) + if stall && n == 0 { idle + 1 } else { 0 };
                    let data = format!("data: c{}-{n} {}\n\n", i + 1, self.text(20));
                    if self.below(4) == 0 {
                        let mut bytes = data.into_bytes();
                        bytes.push(0xff);
                        steps.push((at, Base64Chunk(bytes)));
                    } else {
                        steps.push((at, Chunk(data)));
                    }
                }
                steps.push((at + self.below(700), End));
                steps
            }
            75..=81 => vec![(resp + 1 + self.below(2_000), Response(status, body))],
            82..=86 => Vec::new(),
            _ => match self.below(5) {
                0 => vec![(delay, BadStatus)],
                1 => vec![(delay, BadHeader)],
                2 => vec![(delay, Chunk(body))],
                3 => vec![(delay, [End, BadBase64][self.below(2) as usize].clone())],
                _ => vec![(delay, Start(200)), (delay + 10, Response(200, body))],
            },
        }
    }
}
