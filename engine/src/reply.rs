//! A tunnel's `response` frame: as a [`Response`] for the driver to write,
//! or, when the caller's HTTP/1.x connection lets the engine frame it,
//! written straight into the answer's bytes: its headers checked as they
//! are copied, its body unescaped into place, nothing built in between.
//! Byte for byte what the general path (`Output::Respond` and `write_head`)
//! writes (tested).

use crate::frame::fast::{RawBody, RawHeaders};
use crate::frame::{Body, Headers};
use crate::http::{self, status_has_body, Response};
use crate::input::{CallId, TunnelId};
use crate::output::Output;
use crate::registry::calls::{Call, CallState};
use crate::relay::Relay;
use crate::time::Entropy;
use crate::wire::http1::{complete_framing, write_head_end, write_status_line};

impl<E: Entropy> Relay<E> {
    pub(crate) fn on_response(
        &mut self,
        tunnel: TunnelId,
        req: &str,
        status: u16,
        headers: Headers,
        body: Body,
    ) {
        if let Some(call) = self.owned_call(tunnel, req) {
            self.on_call_response(call, tunnel, req, status, headers, body);
        }
    }

    /// [`Relay::on_response`] once its call is found.
    pub(crate) fn on_call_response(
        &mut self,
        call: CallId,
        tunnel: TunnelId,
        req: &str,
        status: u16,
        headers: Headers,
        body: Body,
    ) {
        if !self.is_waiting(call) {
            return self.on_bad_reply(tunnel, req, "response after stream_start");
        }
        let max_body = self.cfg.max_response_body_bytes;
        if max_body != 0 && body.len() as u64 > max_body {
            return self.on_bad_reply(tunnel, req, "body over the size limit");
        }
        let headers = match http::response_headers(headers) {
            Ok(h) => h,
            Err(why) => return self.on_bad_reply(tunnel, req, why),
        };
        self.forget(call);
        let body = if status_has_body(status) {
            body.into_bytes()
        } else {
            Vec::new()
        };
        self.respond(
            call,
            Response {
                status,
                headers,
                body,
            },
        );
    }

    /// A `response` frame as the fast parser read it.
    pub(crate) fn on_raw_response(
        &mut self,
        tunnel: TunnelId,
        req: &str,
        status: u16,
        headers: RawHeaders<'_>,
        body: RawBody<'_>,
    ) {
        let Some(call) = self.owned_call(tunnel, req) else {
            return;
        };
        let form = match self.calls.get(&call) {
            Some(Call {
                state:
                    CallState::Waiting {
                        http1: Some(form), ..
                    },
                ..
            }) => *form,
            // The driver writes the answer, or the call is not waiting.
            _ => {
                let (headers, body) = (headers.to_headers(), body.into_body());
                return self.on_call_response(call, tunnel, req, status, headers, body);
            }
        };
        let body_len = body.len();
        let max_body = self.cfg.max_response_body_bytes;
        if max_body != 0 && body_len as u64 > max_body {
            return self.on_bad_reply(tunnel, req, "body over the size limit");
        }
        let mut out = self.spare_bytes(256 + headers.text().len() + body_len);
        let written = write_status_line(&mut out, status);
        if let Err(why) = http::write_response_headers(&mut out, headers) {
            return self.on_bad_reply(tunnel, req, why);
        }
        self.forget(call);
        if let Some(d) = self.diag(call, status) {
            d.write(&self.diag_lines, &mut out);
        }
        let (framing, send_body) = complete_framing(status, body_len, form.head_request);
        write_head_end(
            &mut out,
            written,
            framing,
            form.keep_alive,
            form.minor_version,
        );
        if send_body {
            body.write_into(&mut out);
        }
        self.emit(Output::Answer {
            call,
            bytes: out,
            body_len: if status_has_body(status) { body_len } else { 0 },
            keep_alive: form.keep_alive,
        });
    }
}
