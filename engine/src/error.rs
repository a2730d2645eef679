//! What goes wrong, as types: the error a caller gets when the relay answers
//! instead of the agent, and the reason a tunnel's handshake failed with the
//! close code it carries. Every status and code of the contract is here once.

use crate::http::{self, Response};

/// The relay's own answer to a call (or, once a stream has started, the
/// reason it is cut: the caller then sees a truncated body, not this).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallError {
    /// 400: a host that is neither the base domain nor an agent's.
    InvalidSubdomain,
    /// 400: `/tunnel/connect` without a WebSocket upgrade.
    WebsocketRequired,
    /// 400: a request head that is not valid HTTP/1.1.
    BadRequest,
    /// 400: a chunked request body that is not valid.
    BadChunkedBody,
    /// 408: the head or body took longer than its timeout.
    RequestTimeout,
    /// 413: over `MAX_BODY_BYTES` or `MAX_REQUEST_FRAME_BYTES`.
    BodyTooLarge,
    /// 415: `BINARY_REQUEST_BODIES=reject` and a body that is not UTF-8.
    BodyNotUtf8,
    /// 429: a rate limit.
    RateLimited,
    /// 429: `MAX_TUNNELS_PER_IP` WebSockets open.
    TooManyConnections,
    /// 431: the request head is too large.
    HeadersTooLarge,
    /// 501: a transfer coding or method the relay does not implement.
    NotImplemented,
    /// 505: not HTTP/1.x.
    HttpVersionNotSupported,
    /// 502: no tunnel (here or on another instance) serves the agent.
    AgentOffline,
    /// 502: the instance that owns the agent could not be reached.
    AgentUnreachable,
    /// 502: the tunnel closed before it answered.
    TunnelClosed,
    /// 502: the tunnel does not read what it is sent.
    TunnelSendFailed,
    /// 502: the tunnel (or the owner instance) answered with something invalid.
    BadHostResponse,
    /// 503: the relay is shutting down.
    RelayRestarting,
    /// 503: too many calls already wait for this agent to reconnect.
    AgentReconnecting,
    /// 504: no answer within `RESPONSE_TIMEOUT`.
    GatewayTimeout,
    /// A stream went quiet for `STREAM_IDLE_TIMEOUT` (504 before a head).
    StreamIdleTimeout,
    /// The caller read a stream too slowly (`MAX_STREAM_BUFFER`).
    SlowConsumer,
}

impl CallError {
    /// Every error a caller can get.
    pub const ALL: [CallError; 22] = {
        use CallError::*;
        [
            InvalidSubdomain,
            WebsocketRequired,
            BadRequest,
            BadChunkedBody,
            RequestTimeout,
            BodyTooLarge,
            BodyNotUtf8,
            RateLimited,
            TooManyConnections,
            HeadersTooLarge,
            NotImplemented,
            HttpVersionNotSupported,
            AgentOffline,
            AgentUnreachable,
            TunnelClosed,
            TunnelSendFailed,
            BadHostResponse,
            RelayRestarting,
            AgentReconnecting,
            GatewayTimeout,
            StreamIdleTimeout,
            SlowConsumer,
        ]
    };

    /// The HTTP status the caller gets.
    pub fn status(self) -> u16 {
        use CallError::*;
        match self {
            InvalidSubdomain | WebsocketRequired | BadRequest | BadChunkedBody => 400,
            RequestTimeout => 408,
            BodyTooLarge => 413,
            BodyNotUtf8 => 415,
            RateLimited | TooManyConnections => 429,
            HeadersTooLarge => 431,
            NotImplemented => 501,
            HttpVersionNotSupported => 505,
            AgentOffline | AgentUnreachable | TunnelClosed | TunnelSendFailed | BadHostResponse
            | SlowConsumer => 502,
            RelayRestarting | AgentReconnecting => 503,
            GatewayTimeout | StreamIdleTimeout => 504,
        }
    }

    /// The `error` field of the JSON body.
    pub fn code(self) -> &'static str {
        use CallError::*;
        match self {
            InvalidSubdomain => "invalid_subdomain",
            WebsocketRequired => "websocket_required",
            BadRequest => "bad_request",
            BadChunkedBody => "bad_chunked_body",
            RequestTimeout => "request_timeout",
            BodyTooLarge => "body_too_large",
            BodyNotUtf8 => "body_not_utf8",
            RateLimited => "rate_limited",
            TooManyConnections => "too_many_connections",
            HeadersTooLarge => "headers_too_large",
            NotImplemented => "not_implemented",
            HttpVersionNotSupported => "http_version_not_supported",
            AgentOffline => "agent_offline",
            AgentUnreachable => "agent_unreachable",
            TunnelClosed => "tunnel_closed",
            TunnelSendFailed => "tunnel_send_failed",
            BadHostResponse => "bad_host_response",
            RelayRestarting => "relay_restarting",
            AgentReconnecting => "agent_reconnecting",
            GatewayTimeout => "gateway_timeout",
            StreamIdleTimeout => "stream_idle_timeout",
            SlowConsumer => "slow_consumer",
        }
    }

    /// `{"error": code}` with the status, as every relay error is sent.
    pub fn response(self) -> Response {
        http::error(self.status(), self.code())
    }
}

/// Why a tunnel's handshake failed: sent as `auth_error`, then the tunnel
/// is closed with [`AuthError::close_code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// The tunnel did not authenticate within `AUTH_TIMEOUT`.
    AuthTimeout,
    /// A text frame before auth that is not valid JSON, or a binary frame.
    InvalidJson,
    /// A valid frame other than `auth` before the handshake.
    ExpectedAuthFrame,
    /// The `auth` frame's nonce is not the challenge the relay sent.
    InvalidNonce,
    /// The `auth` frame lists no agents.
    NoAgents,
    /// More agents than `MAX_AGENTS_PER_TUNNEL`.
    TooManyAgents,
    /// A signature did not prove its agent address.
    SignatureVerificationFailed,
}

impl AuthError {
    /// The `error` field of the `auth_error` frame.
    pub fn code(self) -> &'static str {
        match self {
            AuthError::AuthTimeout => "auth_timeout",
            AuthError::InvalidJson => "invalid_json",
            AuthError::ExpectedAuthFrame => "expected_auth_frame",
            AuthError::InvalidNonce => "invalid_nonce",
            AuthError::NoAgents => "no_agents",
            AuthError::TooManyAgents => "too_many_agents",
            AuthError::SignatureVerificationFailed => "signature_verification_failed",
        }
    }

    /// 4000 for a malformed handshake, 4001 for one that failed to prove
    /// itself (as the reference relay closes them).
    pub fn close_code(self) -> u16 {
        match self {
            AuthError::AuthTimeout | AuthError::SignatureVerificationFailed => 4001,
            AuthError::InvalidJson
            | AuthError::ExpectedAuthFrame
            | AuthError::InvalidNonce
            | AuthError::NoAgents
            | AuthError::TooManyAgents => 4000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_body_is_its_code() {
        for e in [
            CallError::AgentOffline,
            CallError::GatewayTimeout,
            CallError::BodyTooLarge,
            CallError::RequestTimeout,
        ] {
            let r = e.response();
            assert_eq!(r.status, e.status());
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(body["error"], e.code());
        }
        assert_eq!(
            (
                AuthError::InvalidNonce.close_code(),
                AuthError::AuthTimeout.close_code()
            ),
            (4000, 4001)
        );
    }
}
