//! A call forwarded to the instance that owns its agent: the engine keeps it
//! as call state, so its deadline, slow-caller cap, header rules and error
//! answers are the same as a local call's. The driver is a plain HTTP client
//! that carries the owner's answer in as `Owner*` inputs.

use crate::auth::{to_lower, Address};
use crate::cluster::ForwardRequest;
use crate::error::CallError;
use crate::fields::Fields;
use crate::frame::Headers;
use crate::http::{self, status_has_body, Response, ResponseHead};
use crate::input::{CallId, OwnerFault};
use crate::output::{Event, Output};
use crate::registry::calls::{Call, CallState, Forwarded, Parked};
use crate::relay::Relay;
use crate::time::ms;
use crate::time::Entropy;
use crate::timer::TimerKey;

impl<E: Entropy> Relay<E> {
    /// How long past its own limit the owner may take: it answers 504 or
    /// cuts an idle stream itself, so this only catches a dead owner.
    fn forward_wait(&self, base: std::time::Duration) -> u64 {
        ms(base) + ms(self.cfg.forward_margin)
    }

    /// Hands `call` to `owner` and keeps it until the owner's answer is done.
    /// A body still arriving goes on as it comes (`ForwardBody`).
    pub(crate) fn forward(&mut self, call: CallId, agent: Address, owner: String, req: Parked) {
        let host = format!("{}.{}", to_lower(&agent), self.cfg.base_domain);
        let (body_complete, sent) = (req.body_done, req.body.len() as u64);
        let mut headers = req.headers;
        if let Some(ip) = req.forwarding {
            headers = http::forward_headers(Fields::Pairs(&headers.0), &agent, ip);
        }
        let request = ForwardRequest {
            method: req.method,
            path: req.path,
            host,
            headers,
            body: req.body,
            body_length: if body_complete {
                Some(sent)
            } else {
                req.declared
            },
            body_complete,
        };
        // The owner's own clock starts once it has the whole body.
        let mut wait = self.forward_wait(self.cfg.response_timeout);
        if !body_complete {
            wait += ms(self.cfg.body_timeout);
        }
        let state = CallState::Forwarded {
            head_request: request.method == "HEAD",
            at: Forwarded::Waiting,
            uploading: (!body_complete).then_some(sent),
        };
        self.hold_until(call, agent, false, self.now.mono_ms + wait, state);
        self.emit(Output::Forward {
            call,
            instance: owner,
            request: Box::new(request),
        });
    }

    /// More of the caller's body for a call already handed to its owner;
    /// `false` if `call` is not such a call.
    pub(crate) fn upload(&mut self, call: CallId, chunk: &[u8], limit: u64) -> bool {
        let Some(Call {
            state:
                CallState::Forwarded {
                    uploading: Some(sent),
                    ..
                },
            ..
        }) = self.calls.get_mut(&call)
        else {
            return false;
        };
        *sent += chunk.len() as u64;
        if *sent > limit {
            self.give_up(call, CallError::BodyTooLarge);
        } else if !chunk.is_empty() {
            self.emit(Output::ForwardBody {
                call,
                data: chunk.to_vec(),
            });
        }
        true
    }

    /// The caller's body ended on a call already handed to its owner: the
    /// owner's answer is due within the usual wait from now.
    pub(crate) fn upload_done(&mut self, call: CallId) -> bool {
        let now = self.now.mono_ms;
        let wait = self.forward_wait(self.cfg.response_timeout);
        let Some(c) = self.calls.get_mut(&call) else {
            return false;
        };
        let CallState::Forwarded { uploading, at, .. } = &mut c.state else {
            return false;
        };
        if uploading.take().is_none() {
            return false;
        }
        if matches!(at, Forwarded::Waiting) {
            if let Some(old) = c.deadline.replace(now + wait) {
                self.timers.cancel(old, TimerKey::Call(call.0));
            }
            self.timers.set(now + wait, TimerKey::Call(call.0));
        }
        self.emit(Output::ForwardBodyEnd { call });
        true
    }

    fn forwarded(&mut self, call: CallId) -> Option<&mut Forwarded> {
        match self.calls.get_mut(&call) {
            Some(Call {
                state: CallState::Forwarded { at, .. },
                ..
            }) => Some(at),
            _ => None,
        }
    }

    /// Ends a forwarded call before the driver finished it: the driver must
    /// drop its connection to the owner.
    fn give_up(&mut self, call: CallId, why: CallError) {
        self.emit(Output::CancelForward { call });
        self.fail_call(call, why);
    }

    /// The owner's answer failed one of the rules a tunnel's answer must meet.
    fn bad_owner_answer(&mut self, call: CallId, why: &'static str) {
        self.counters.bad_host_responses += 1;
        self.event(Event::BadOwnerAnswer { call, why });
        self.give_up(call, CallError::BadHostResponse);
    }

    pub(crate) fn on_owner_head(
        &mut self,
        call: CallId,
        status: u16,
        headers: Vec<(String, String)>,
        streamed: bool,
    ) {
        let head_request = match self.calls.get(&call) {
            Some(Call {
                state:
                    CallState::Forwarded {
                        head_request,
                        at: Forwarded::Waiting,
                        ..
                    },
                ..
            }) => *head_request,
            _ => return,
        };
        if !(200..=599).contains(&status) {
            return self.bad_owner_answer(call, "status outside 200-599");
        }
        let owner_diag: Vec<http::Header> = (headers.iter())
            .filter(|(k, _)| crate::diag::is_owner_diag(k))
            .map(|(k, v)| (k.to_ascii_lowercase().into(), v.clone().into()))
            .collect();
        let mut headers = match http::response_headers(Headers(headers)) {
            Ok(h) => h,
            Err(why) => return self.bad_owner_answer(call, why),
        };
        // Where the call ran is the owner's to say; this hop adds `x-relay-via`.
        headers.extend(owner_diag);
        if let Some(t) = self.record_mut(call) {
            t.forwarded = true;
        }
        let head = ResponseHead { status, headers };
        let now = self.now.mono_ms;
        let idle = self.forward_wait(self.cfg.stream_idle_timeout);
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if head_request || !status_has_body(status) || !streamed {
            // Nothing more to wait for than the body: the same deadline holds.
            if let CallState::Forwarded { at, .. } = &mut c.state {
                *at = Forwarded::Buffering {
                    head,
                    body: Vec::new(),
                };
            }
            return;
        }
        if let Some(at) = c.deadline.replace(now + idle) {
            self.timers.cancel(at, TimerKey::Call(call.0));
        }
        self.timers.set(now + idle, TimerKey::Call(call.0));
        if let CallState::Forwarded { at, .. } = &mut c.state {
            *at = Forwarded::Streaming {
                last_activity: now,
                queued: 0,
            };
        }
        self.start_stream(call, head);
    }

    pub(crate) fn on_owner_body(&mut self, call: CallId, chunk: &[u8]) {
        let (now, cap) = (self.now.mono_ms, self.cfg.max_stream_buffer);
        let max_body = self.cfg.max_response_body_bytes;
        let fault = match self.forwarded(call) {
            Some(Forwarded::Buffering { body, .. }) => {
                if max_body != 0 && (body.len() + chunk.len()) as u64 > max_body {
                    Some("body over the size limit")
                } else {
                    body.extend_from_slice(chunk);
                    None
                }
            }
            Some(Forwarded::Streaming {
                last_activity,
                queued,
            }) => {
                *last_activity = now;
                *queued += chunk.len() as u64;
                if cap != 0 && *queued > cap {
                    self.counters.slow_consumer_aborts += 1;
                    return self.give_up(call, CallError::SlowConsumer);
                }
                if !chunk.is_empty() {
                    self.emit(Output::WriteChunk {
                        call,
                        data: chunk.to_vec(),
                    });
                }
                None
            }
            Some(Forwarded::Waiting) => Some("body before a head"),
            None => None,
        };
        if let Some(why) = fault {
            self.bad_owner_answer(call, why);
        }
    }

    pub(crate) fn on_owner_end(&mut self, call: CallId) {
        match self.forwarded(call) {
            Some(Forwarded::Buffering { .. } | Forwarded::Streaming { .. }) => {}
            Some(Forwarded::Waiting) => {
                return self.on_owner_failed(call, OwnerFault::BadAnswer("no head"))
            }
            None => return,
        }
        let Some(c) = self.forget(call) else { return };
        match c.state {
            CallState::Forwarded {
                at: Forwarded::Buffering { head, mut body },
                head_request,
                ..
            } => {
                if head_request || !status_has_body(head.status) {
                    body = Vec::new();
                }
                let (status, headers) = (head.status, head.headers);
                self.respond(
                    call,
                    Response {
                        status,
                        headers,
                        body,
                    },
                )
            }
            _ => self.emit(Output::EndStream { call }),
        }
    }

    /// The owner could not be reached or failed mid-answer: before the
    /// caller saw anything a 502, after it a cut stream.
    pub(crate) fn on_owner_failed(&mut self, call: CallId, fault: OwnerFault) {
        if self.forwarded(call).is_none() {
            return;
        }
        match fault {
            OwnerFault::Unreachable => self.fail_call(call, CallError::AgentUnreachable),
            OwnerFault::BadAnswer(why) => {
                self.counters.bad_host_responses += 1;
                self.event(Event::BadOwnerAnswer { call, why });
                self.fail_call(call, CallError::BadHostResponse);
            }
        }
    }

    /// The owner refused the connection: nothing reached it, so the call is
    /// held for its agent (which is reconnecting somewhere), or 502.
    pub(crate) fn on_owner_refused(&mut self, call: CallId, r: ForwardRequest) {
        if !matches!(self.forwarded(call), Some(Forwarded::Waiting)) || !r.body_complete {
            return self.on_owner_failed(call, OwnerFault::Unreachable);
        }
        let Some(c) = self.forget(call) else { return };
        self.directory.forget(&c.agent);
        self.agent_left(c.agent);
        let req = Parked {
            method: r.method,
            path: r.path,
            headers: r.headers,
            forwarding: None,
            declared: Some(r.body.len() as u64),
            body: r.body,
            unknown_length: false,
            body_done: true,
            replay_cache_hit: false,
            http1: None,
            counted: false,
        };
        if self.try_hold(call, c.agent, c.relayed, req).is_err() {
            self.refuse(call, CallError::AgentUnreachable);
        }
    }

    /// The call's deadline passed: a silent owner, or a stream gone idle.
    pub(crate) fn on_forward_timer(&mut self, call: CallId) {
        let now = self.now.mono_ms;
        let idle = self.forward_wait(self.cfg.stream_idle_timeout);
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        match &c.state {
            CallState::Forwarded {
                at: Forwarded::Streaming { last_activity, .. },
                ..
            } if last_activity + idle > now => {
                let at = last_activity + idle;
                c.deadline = Some(at);
                self.timers.set(at, TimerKey::Call(call.0));
            }
            CallState::Forwarded {
                at: Forwarded::Streaming { .. },
                ..
            } => self.give_up(call, CallError::StreamIdleTimeout),
            _ => {
                self.counters.gateway_timeouts += 1;
                self.give_up(call, CallError::GatewayTimeout);
            }
        }
    }
}
