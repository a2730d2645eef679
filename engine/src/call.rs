//! One public HTTP call: receiving its body, waiting on the tunnel, streaming.

use crate::auth::Address;
use crate::cluster::Hop;
use crate::config::BinaryBodies;
use crate::error::CallError;
use crate::fields::Fields;
use crate::frame::{
    encode_request_into, Body, Headers, Names, RelayHeaders, RequestText, ServerFrame,
};
use crate::http::{self, status_has_body, Response, ResponseHead};
use crate::input::{CallId, Http1Answer, RequestHead, TunnelId};
use crate::output::{Event, Output};
use crate::registry::calls::{Call, CallState, Forwarded, Parked};
use crate::relay::Relay;
use crate::time::ms;
use crate::time::{push_random_hex, Entropy};
use crate::timer::TimerKey;
use core::net::IpAddr;

impl<E: Entropy> Relay<E> {
    /// `max_body_bytes`, where 0 means unlimited.
    fn body_limit(&self) -> u64 {
        match self.cfg.max_body_bytes {
            0 => u64::MAX,
            n => n,
        }
    }

    pub(crate) fn agent_call(
        &mut self,
        call: CallId,
        head: RequestHead<'_>,
        agent: Address,
        ip: IpAddr,
    ) {
        self.record_call(call, agent, ip, head.method, head.target);
        if head.method == "OPTIONS" {
            return self.respond(call, http::preflight(head.headers));
        }
        // Draining, calls are still served: only new tunnels are refused.
        let serving = self.tunnels.serving(&agent);
        let here = serving.is_some();
        let elsewhere = self.cfg.cluster.is_some() && head.hop == Hop::Direct;
        if !here && !elsewhere && !self.recently_left(&agent) {
            return self.refuse(call, CallError::AgentOffline);
        }
        // Counted where the tunnel is: a first hop costs nothing, and a call
        // for an agent that just left is counted if it is delivered.
        if here && !self.within_limits(&agent, Some(ip)) {
            return self.refuse(call, CallError::RateLimited);
        }
        if head.content_length.is_some_and(|n| n > self.body_limit()) {
            return self.refuse(call, CallError::BodyTooLarge);
        }
        // Nothing to wait for: the frame is written from the head where it
        // arrived, with nothing copied or kept.
        if !head.body_follows && http::plain_fields(head.headers) {
            if let Some(tunnel) = serving.filter(|t| self.takes_calls(*t)) {
                let req = RequestText {
                    method: head.method,
                    path: head.target,
                    headers: http::forwarded_fields(head.headers),
                    headers_size: head.headers.size_hint(),
                    names: Names::Lower,
                };
                let body = Body::Text(String::new());
                return self.send_request(
                    call,
                    agent,
                    head.hop != Hop::Direct,
                    tunnel,
                    req,
                    (Some(ip), head.http1),
                    body,
                );
            }
        }
        let replay_cache_hit = (head.headers.iter()).any(|(k, v)| {
            k.eq_ignore_ascii_case("fly-replay-cache-status")
                && v.trim().eq_ignore_ascii_case("hit")
        });
        let unknown_length = head.body_follows && head.content_length.is_none();
        let headers = http::caller_headers(head.headers);
        let capacity = head.content_length.unwrap_or(0).min(self.body_limit()) as usize;
        let state = CallState::Receiving(Parked {
            method: head.method.to_owned(),
            path: head.target.to_owned(),
            headers,
            forwarding: Some(ip),
            // A declared length is only a claim: reserve little before bytes arrive.
            body: Vec::with_capacity(capacity.min(64 * 1024)),
            unknown_length,
            declared: head.content_length,
            body_done: !head.body_follows,
            replay_cache_hit,
            http1: head.http1,
            counted: here,
        });
        self.calls.insert(
            call,
            Call {
                agent,
                relayed: head.hop != Hop::Direct,
                deadline: None,
                state,
            },
        );
        if !head.body_follows {
            self.dispatch(call);
        } else if !here && self.forwards_body(unknown_length, head.content_length) {
            // Bound for another machine: look the owner up now and stream
            // the body there as it comes, rather than buffer it first.
            if let Some(Call {
                agent,
                relayed,
                state: CallState::Receiving(req),
                ..
            }) = self.calls.remove(&call)
            {
                self.route_elsewhere(call, agent, relayed, req);
            }
        }
    }

    pub(crate) fn on_body(&mut self, call: CallId, chunk: &[u8]) {
        let max = self.body_limit();
        if let Some(r) = self.record_mut(call) {
            r.bytes_in += chunk.len() as u64;
        }
        if self.upload(call, chunk, max) {
            return;
        }
        let Some(Call {
            state:
                CallState::Receiving(Parked { body, .. })
                | CallState::Locating(Parked { body, .. })
                | CallState::Held(Parked { body, .. }),
            ..
        }) = self.calls.get_mut(&call)
        else {
            return;
        };
        if body.len() as u64 + chunk.len() as u64 > max {
            self.forget(call);
            return self.refuse(call, CallError::BodyTooLarge);
        }
        body.extend_from_slice(chunk);
    }

    pub(crate) fn on_body_end(&mut self, call: CallId) {
        if self.upload_done(call) {
            return;
        }
        match self.calls.get_mut(&call).map(|c| &mut c.state) {
            Some(CallState::Receiving(_)) => self.dispatch(call),
            Some(CallState::Locating(p) | CallState::Held(p)) => p.body_done = true,
            _ => {}
        }
    }

    /// Sends the complete request to the agent's current tunnel.
    /// Takes one call from the agent's and the caller's rate limits: false
    /// if either is spent.
    pub(crate) fn within_limits(&mut self, agent: &Address, ip: Option<IpAddr>) -> bool {
        let now = self.now.mono_ms;
        self.agent_rl.check(agent, now)
            && ip.is_none_or(|ip| self.caller_rl.check(&http::limit_key(ip), now))
    }

    pub(crate) fn dispatch(&mut self, call: CallId) {
        let Some(Call {
            agent,
            relayed,
            state: CallState::Receiving(mut req),
            ..
        }) = self.calls.remove(&call)
        else {
            return;
        };
        // Only a complete request is dispatched; held, it stays complete.
        req.body_done = true;
        let tunnel = match self.tunnels.serving(&agent) {
            // Draining: the agent is about to move; its call waits for it.
            Some(t) if self.tunnels.get(&t).is_some_and(|t| t.closing) => {
                return self.offline(call, agent, relayed, req)
            }
            Some(t) => t,
            None => return self.route_elsewhere(call, agent, relayed, req),
        };
        let Parked {
            method,
            path,
            headers,
            forwarding,
            body,
            http1,
            ..
        } = req;
        let body = match Body::from_bytes(body) {
            Body::Binary(_) if self.cfg.binary_request_bodies == BinaryBodies::Reject => {
                return self.refuse(call, CallError::BodyNotUtf8)
            }
            body => body,
        };
        let req = RequestText {
            method: &method,
            path: &path,
            headers: headers.0.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            headers_size: Fields::Pairs(&headers.0).size_hint(),
            names: Names::AsGiven,
        };
        self.send_request(call, agent, relayed, tunnel, req, (forwarding, http1), body);
    }

    /// Whether `tunnel` takes new calls.
    fn takes_calls(&self, tunnel: TunnelId) -> bool {
        // Draining: the agent is about to move; its calls wait for it.
        !self.tunnels.get(&tunnel).is_some_and(|t| t.closing)
    }

    /// Writes the request frame to `tunnel` and waits for its answer.
    /// `forwarding`: the caller's IP, when the frame still needs the relay's
    /// two headers; `http1`: how the caller takes an answer the engine writes.
    #[allow(clippy::too_many_arguments)]
    fn send_request<'h>(
        &mut self,
        call: CallId,
        agent: Address,
        relayed: bool,
        tunnel: TunnelId,
        req: RequestText<'_, impl Iterator<Item = (&'h str, &'h str)>>,
        (forwarding, http1): (Option<IpAddr>, Option<Http1Answer>),
        body: Body,
    ) {
        let queued = self.tunnels.get(&tunnel).map_or(0, |t| t.queued);
        let limit = self.cfg.max_tunnel_buffer;
        if limit != 0 && queued > limit {
            return self.refuse(call, CallError::TunnelSendFailed);
        }
        let id = loop {
            let mut id = String::with_capacity(20);
            id.push_str("req_");
            push_random_hex(&mut self.rng, 8, &mut id);
            if !self.calls.req_in_use(&id) {
                break id;
            }
        };
        let relay = forwarding.map(|ip| RelayHeaders { agent: &agent, ip });
        let buf = self.spare_string();
        let frame = encode_request_into(buf, &id, req, relay, &body);
        let max_frame = self.cfg.max_request_frame_bytes;
        if max_frame != 0 && frame.len() as u64 > max_frame {
            // Better than a frame that makes the app drop the whole tunnel.
            return self.refuse(call, CallError::BodyTooLarge);
        }
        self.send_text(tunnel, frame);
        let now = self.now.mono_ms;
        if let Some(t) = self.record_mut(call) {
            t.sent = Some(now);
        }
        self.counters.total_requests_relayed += 1;
        if let Some(t) = self.tunnels.get_mut(&tunnel) {
            t.calls.insert(call);
        }
        let at = self.now.mono_ms + ms(self.cfg.response_timeout);
        self.hold_until(
            call,
            agent,
            relayed,
            at,
            CallState::Waiting {
                tunnel,
                req: id,
                http1,
            },
        );
    }

    /// Holds `call` in `state` with its deadline at `at` (the timer armed).
    pub(crate) fn hold_until(
        &mut self,
        call: CallId,
        agent: Address,
        relayed: bool,
        at: u64,
        state: CallState,
    ) {
        self.timers.set(at, TimerKey::Call(call.0));
        let deadline = Some(at);
        let c = Call {
            agent,
            relayed,
            deadline,
            state,
        };
        self.calls.insert(call, c);
    }

    /// Removes a call and everything pointing at it; returns it.
    pub(crate) fn forget(&mut self, call: CallId) -> Option<Call> {
        let c = self.calls.remove(&call)?;
        if let Some(at) = c.deadline {
            self.timers.cancel(at, TimerKey::Call(call.0));
        }
        if let CallState::Held(req) = &c.state {
            self.held_forgotten(&c.agent, call, req.body.len() as u64);
        }
        if let Some((tunnel, _)) = c.state.tunnel_req() {
            if let Some(t) = self.tunnels.get_mut(&tunnel) {
                t.calls.remove(&call);
                if t.closing && t.calls.is_empty() {
                    // The last call of a draining tunnel: now it can go.
                    self.close_when_idle(tunnel);
                }
            }
        }
        Some(c)
    }

    /// Ends a call with an error: a JSON error if nothing was sent yet,
    /// else a cut-short stream.
    pub(crate) fn fail_call(&mut self, call: CallId, why: CallError) {
        let Some(c) = self.forget(call) else {
            return;
        };
        self.count_error(call, why);
        match c.state {
            CallState::Streaming { .. }
            | CallState::Forwarded {
                at: Forwarded::Streaming { .. },
                ..
            } => self.emit(Output::AbortStream { call }),
            _ => {
                self.respond(call, why.response());
            }
        }
    }

    /// `agent` left `tunnel`: its calls there end with 502 at once. The app
    /// drops that agent's work itself and would never answer; no `cancel`.
    pub(crate) fn end_agent_calls(&mut self, tunnel: TunnelId, agent: Address) {
        let Some(t) = self.tunnels.get(&tunnel) else {
            return;
        };
        let mut ended: Vec<CallId> = (t.calls.iter().copied())
            .filter(|c| self.calls.get(c).is_some_and(|c| c.agent == agent))
            .collect();
        ended.sort();
        for c in ended {
            self.fail_call(c, CallError::AgentOffline);
        }
    }

    fn cancel_upstream(&mut self, tunnel: TunnelId, req: String) {
        self.send(tunnel, &ServerFrame::Cancel { id: req });
    }

    pub(crate) fn on_call_gone(&mut self, call: CallId) {
        if let Some(e) = self.finish_record(call, Some("caller_gone")) {
            self.event(e);
        }
        self.presence_gone(call);
        if let Some(c) = self.forget(call) {
            if let Some((tunnel, req)) = c.state.tunnel_req() {
                let req = req.to_string();
                self.cancel_upstream(tunnel, req);
            }
            if matches!(c.state, CallState::Forwarded { .. }) {
                self.emit(Output::CancelForward { call });
            }
        }
    }

    pub(crate) fn on_call_drained(&mut self, call: CallId, bytes: u64) {
        // One look-up: this runs for every chunk a caller is written.
        let queued = match self.calls.get_mut(&call) {
            Some(Call {
                state: CallState::Streaming { queued, .. },
                ..
            }) => queued,
            Some(Call {
                state:
                    CallState::Forwarded {
                        at: Forwarded::Streaming { queued, .. },
                        ..
                    },
                ..
            }) => queued,
            _ => return,
        };
        *queued = queued.saturating_sub(bytes);
    }

    pub(crate) fn on_call_timer(&mut self, call: CallId) {
        if self.presence_timed_out(call) {
            return;
        }
        let idle = ms(self.cfg.stream_idle_timeout);
        let now = self.now.mono_ms;
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        c.deadline = None;
        match &c.state {
            CallState::Streaming { last_activity, .. } if last_activity + idle > now => {
                // Chunks arrived since this deadline was set: re-arm, lazily.
                let at = last_activity + idle;
                c.deadline = Some(at);
                self.timers.set(at, TimerKey::Call(call.0));
            }
            CallState::Streaming { tunnel, req, .. } | CallState::Waiting { tunnel, req, .. } => {
                let (tunnel, req) = (*tunnel, req.clone());
                let code = if matches!(c.state, CallState::Waiting { .. }) {
                    self.counters.gateway_timeouts += 1;
                    CallError::GatewayTimeout
                } else {
                    CallError::StreamIdleTimeout
                };
                self.fail_call(call, code);
                self.cancel_upstream(tunnel, req);
            }
            CallState::Locating(_) => {
                let agent = c.agent;
                self.locate_timed_out(call, agent);
            }
            CallState::Forwarded { .. } => self.on_forward_timer(call),
            CallState::Held(_) => self.held_timed_out(call),
            CallState::Receiving { .. } => {}
        }
    }

    /// The call `req` names, if it is live on `tunnel`; else counts the frame.
    pub(crate) fn owned_call(&mut self, tunnel: TunnelId, req: &str) -> Option<CallId> {
        let found = self.calls.by_req(req).filter(|c| {
            self.calls
                .get(c)
                .and_then(|c| c.state.tunnel_req())
                .is_some_and(|(t, _)| t == tunnel)
        });
        if found.is_none() {
            self.counters.invalid_frames += 1;
        }
        found
    }

    pub(crate) fn is_waiting(&self, call: CallId) -> bool {
        matches!(
            self.calls.get(&call),
            Some(Call {
                state: CallState::Waiting { .. },
                ..
            })
        )
    }

    /// The tunnel answered `call` with something invalid: 502 (or a cut
    /// stream) for the caller, `cancel` for the tunnel.
    pub(crate) fn on_bad_reply(&mut self, tunnel: TunnelId, req: &str, why: &'static str) {
        let Some(call) = self.owned_call(tunnel, req) else {
            return;
        };
        self.counters.bad_host_responses += 1;
        self.event(Event::BadHostResponse { tunnel, why });
        self.fail_call(call, CallError::BadHostResponse);
        self.cancel_upstream(tunnel, req.to_string());
    }

    pub(crate) fn on_stream_start(
        &mut self,
        tunnel: TunnelId,
        req: &str,
        status: u16,
        headers: Headers,
    ) {
        let Some(call) = self.owned_call(tunnel, req) else {
            return;
        };
        if !self.is_waiting(call) {
            return self.on_bad_reply(tunnel, req, "second stream_start");
        }
        let headers = match http::response_headers(headers) {
            Ok(h) => h,
            Err(why) => return self.on_bad_reply(tunnel, req, why),
        };
        if !status_has_body(status) {
            // No body may follow: answer now, ignore the rest of the stream.
            self.forget(call);
            return self.respond(
                call,
                Response {
                    status,
                    headers,
                    body: Vec::new(),
                },
            );
        }
        let now = self.now.mono_ms;
        let idle = ms(self.cfg.stream_idle_timeout);
        if let Some(c) = self.calls.get_mut(&call) {
            if let Some(at) = c.deadline.take() {
                self.timers.cancel(at, TimerKey::Call(call.0));
            }
            c.deadline = Some(now + idle);
            self.timers.set(now + idle, TimerKey::Call(call.0));
            c.state = CallState::Streaming {
                tunnel,
                req: req.to_string(),
                last_activity: now,
                queued: 0,
            };
        }
        self.start_stream(call, ResponseHead { status, headers });
    }

    pub(crate) fn on_stream_chunk(&mut self, tunnel: TunnelId, req: &str, data: Body) {
        let (now, cap) = (self.now.mono_ms, self.cfg.max_stream_buffer);
        let max = self.cfg.max_chunk_bytes;
        // The token path: one look-up by request id, one of the call.
        let found = self.calls.by_req(req).and_then(|id| {
            let c = self.calls.get_mut(&id)?;
            let (t, _) = c.state.tunnel_req()?;
            (t == tunnel).then_some((id, c))
        });
        let Some((call, c)) = found else {
            self.counters.invalid_frames += 1;
            return;
        };
        if data.len() as u64 > max {
            return self.on_bad_reply(tunnel, req, "stream_chunk over the size limit");
        }
        let CallState::Streaming {
            last_activity,
            queued,
            ..
        } = &mut c.state
        else {
            return self.on_bad_reply(tunnel, req, "stream_chunk before stream_start");
        };
        *last_activity = now;
        if data.is_empty() {
            return;
        }
        *queued += data.len() as u64;
        if cap != 0 && *queued > cap {
            self.counters.slow_consumer_aborts += 1;
            self.event(Event::SlowConsumer { tunnel });
            self.fail_call(call, CallError::SlowConsumer);
            return self.cancel_upstream(tunnel, req.to_string());
        }
        self.emit(Output::WriteChunk {
            call,
            data: data.into_bytes(),
        });
    }

    pub(crate) fn on_stream_end(&mut self, tunnel: TunnelId, req: &str) {
        let Some(call) = self.owned_call(tunnel, req) else {
            return;
        };
        if self.is_waiting(call) {
            return self.on_bad_reply(tunnel, req, "stream_end before stream_start");
        }
        self.forget(call);
        self.emit(Output::EndStream { call });
    }
}
