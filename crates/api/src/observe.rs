//! What every request leaves behind for operators: a request id (taken from
//! `x-request-id` or made, and returned), a tracing span carrying it so every
//! log line of the request names it, and Prometheus counters by route.
//!
//! Every label and span field comes from a closed set or is checked first:
//! a client must not be able to add a metric series, or write text of its
//! choosing into the log.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ApiState;
use crate::error::ApiError;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id taken from a caller.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Methods named as they are in metrics and logs.
static KNOWN_METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
    Method::TRACE,
    Method::CONNECT,
];

/// The method's name if it is a standard one, else `other`: HTTP lets a
/// client invent methods of any length, each of which would otherwise be
/// a metric series of its own, kept for the life of the process.
pub fn method_label(method: &Method) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|known| *known == method)
        .map_or("other", Method::as_str)
}

/// A caller's request id is kept only if it is 1 to 128 ASCII letters,
/// digits or `-._:`: it is echoed, and written into every log line of the
/// request, where quotes, spaces or a long blob could forge or flood text.
fn acceptable_request_id(id: &HeaderValue) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'))
}

/// Drops an unacceptable `x-request-id` (see `acceptable_request_id`), so
/// that the request gets a fresh one.
pub async fn drop_unacceptable_request_id(mut request: Request) -> Request {
    let headers = request.headers_mut();
    if !headers.get_all(REQUEST_ID).iter().all(acceptable_request_id) {
        headers.remove(REQUEST_ID);
    }
    request
}

/// The span each request's log lines belong to.
pub fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let method = method_label(request.method());
    tracing::info_span!("request", method = %method, path = %request.uri().path(), request_id = %id)
}

/// Counts requests and their durations by route template, method and status.
pub async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(request.method()).to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!("mediavault_http_requests_total", &labels).increment(1);
    metrics::histogram!("mediavault_http_request_duration_seconds", &labels[..2])
        .record(started.elapsed().as_secs_f64());
    response
}

/// Prometheus text exposition of every metric.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(state): State<ApiState>) -> Response {
    match &state.render_metrics {
        Some(render) => (
            [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            render(),
        )
            .into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, "Metrics are not enabled").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_standard_set_are_other() {
        for method in &KNOWN_METHODS {
            assert_eq!(method_label(method), method.as_str());
        }
        for invented in ["PROPFIND", "get", "X".repeat(20_000).as_str()] {
            let method = Method::from_bytes(invented.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "other", "{invented:.20}");
        }
    }

    #[test]
    fn only_short_plain_request_ids_are_kept() {
        let id = |text: &str| HeaderValue::from_str(text).unwrap();
        assert!(acceptable_request_id(&id("trace-me-42")));
        assert!(acceptable_request_id(&id(
            "00-4bf92f3577b34da6.a3ce929d:0e0e_4736"
        )));
        assert!(acceptable_request_id(&id(&"a".repeat(128))));
        assert!(!acceptable_request_id(&id(&"a".repeat(129))));
        assert!(!acceptable_request_id(&id("")));
        for forged in [
            "a b",
            "x\" ERROR stored media failed verification",
            "a=b",
            "a\tb",
            "a{b}",
        ] {
            assert!(!acceptable_request_id(&id(forged)), "{forged:?}");
        }
        let obs_text = HeaderValue::from_bytes(b"id\xff").unwrap();
        assert!(!acceptable_request_id(&obs_text));
    }
}
