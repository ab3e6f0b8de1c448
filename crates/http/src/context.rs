//! Per-request identity: the request id and the W3C trace id, available to
//! handlers (for event envelopes) and attached to every log line.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use rand::RngCore;

/// Identifies one HTTP request across logs, events and error bodies.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub trace_id: String,
    /// The caller's span, from an incoming `traceparent`.
    pub parent_span_id: Option<String>,
}

impl RequestContext {
    /// Take `x-request-id` and `traceparent` from the headers when present and
    /// well-formed, and generate them otherwise.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_acceptable_request_id(v))
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let parent = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        let (trace_id, parent_span_id) = match parent {
            Some((trace, span)) => (trace, Some(span)),
            None => (new_trace_id(), None),
        };
        RequestContext {
            request_id,
            trace_id,
            parent_span_id,
        }
    }

    /// A context for work that did not start with an HTTP request (CLI, jobs).
    pub fn detached() -> Self {
        RequestContext {
            request_id: uuid::Uuid::now_v7().to_string(),
            trace_id: new_trace_id(),
            parent_span_id: None,
        }
    }
}

/// Request ids are echoed into logs and headers, so only short printable
/// tokens are kept; anything else is replaced by a fresh id.
fn is_acceptable_request_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// The trace id and parent span id of a well-formed `traceparent`.
fn parse_traceparent(v: &str) -> Option<(String, String)> {
    let mut parts = v.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let span_id = parts.next()?;
    let _flags = parts.next()?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(version, 2) || !hex(trace_id, 32) || !hex(span_id, 16) || trace_id.bytes().all(|b| b == b'0') {
        return None;
    }
    Some((trace_id.to_ascii_lowercase(), span_id.to_ascii_lowercase()))
}

#[cfg(test)]
fn trace_id_from_traceparent(v: &str) -> Option<String> {
    parse_traceparent(v).map(|(trace, _)| trace)
}

/// 16 random bytes as 32 lowercase hex characters.
pub fn new_trace_id() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The client's IP address (the TCP peer).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub std::net::IpAddr);

pub(crate) fn client_ip_of(extensions: &axum::http::Extensions) -> std::net::IpAddr {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip_of(&parts.extensions)))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .unwrap_or_else(|| RequestContext::from_headers(&parts.headers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_and_validated() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id_from_traceparent(tp).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id_from_traceparent("00-zz-00f067aa0ba902b7-01"), None);
        assert_eq!(
            trace_id_from_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
    }

    #[test]
    fn hostile_request_ids_are_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-request-id",
            "abc\u{7f}"
                .parse()
                .unwrap_or(axum::http::HeaderValue::from_static("a b")),
        );
        let ctx = RequestContext::from_headers(&headers);
        assert_ne!(ctx.request_id, "a b");
        headers.insert("x-request-id", axum::http::HeaderValue::from_static("req-123"));
        assert_eq!(RequestContext::from_headers(&headers).request_id, "req-123");
    }
}
