//! What every request leaves behind for operators: a request id (taken from
//! `x-request-id` or made, and returned), a tracing span carrying it so every
//! log line of the request names it, and Prometheus counters by route.
//!
//! Every label and span field comes from a closed set or is checked first:
//! a client must not be able to add a metric series, or write text of its
//! choosing into the log.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};

use crate::ApiState;
use crate::auth::check_metrics_token;
use crate::error::ApiError;
use crate::limits::ClientAddr;

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
    // A link's token is a credential until it expires: it stays out of logs.
    let path = request.uri().path();
    let path = if path.starts_with(crate::links::LINK_PATH) {
        "/l/{token}"
    } else {
        path
    };
    tracing::info_span!("request", method = %method, path = %path, request_id = %id)
}

/// Counts requests by route template, method, status and outcome, and their
/// durations up to the response head. A request is counted once its body
/// has ended, so that a download whose status went out but whose body was
/// cut short (a segment failed verification, the store failed, the media was
/// deleted) is recorded as `cut`, not as a plain 200.
pub async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(request.method()).to_owned();
    // A HEAD sends its head and nothing more: on a route that answers it
    // with its GET handler, the router drops that handler's body unread.
    let head_only = request.method() == Method::HEAD;
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("mediavault_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    let labels = RequestLabels {
        route,
        method,
        status,
    };
    let length = response
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse().ok());
    response.map(|body| Body::new(CountedBody::new(body, labels, length, head_only)))
}

/// The labels a request is counted under, but for its outcome.
struct RequestLabels {
    route: String,
    method: String,
    status: String,
}

/// How a response body ended.
#[derive(Clone, Copy)]
enum Outcome {
    /// Sent whole.
    Complete,
    /// Ended by an error after the head went out: short of its length.
    Cut,
    /// Dropped before its end: the client went away, or the connection was
    /// cut (a stalled client past `server.send_timeout`, shutdown).
    Aborted,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Cut => "cut",
            Outcome::Aborted => "aborted",
        }
    }
}

/// A response body that counts its request when it ends (see `record`).
struct CountedBody {
    inner: Body,
    /// `None` once counted.
    labels: Option<RequestLabels>,
    /// Bytes its Content-Length still promises. hyper's HTTP/1 writer stops
    /// polling a body once it has written that many, and a streamed body
    /// (a download) does not say it has ended: this says when it has.
    unsent: Option<u64>,
}

impl CountedBody {
    fn new(inner: Body, labels: RequestLabels, length: Option<u64>, head_only: bool) -> CountedBody {
        let mut body = CountedBody {
            inner,
            labels: Some(labels),
            unsent: length,
        };
        // A body with nothing to send, or not to be sent, may never be polled.
        if head_only || body.inner.is_end_stream() {
            body.count(Outcome::Complete);
        }
        body
    }

    fn count(&mut self, outcome: Outcome) {
        if let Some(RequestLabels {
            route,
            method,
            status,
        }) = self.labels.take()
        {
            let labels = [
                ("route", route),
                ("method", method),
                ("status", status),
                ("outcome", outcome.label().to_owned()),
            ];
            metrics::counter!("mediavault_http_requests_total", &labels).increment(1);
        }
    }
}

impl HttpBody for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.count(Outcome::Complete),
            Poll::Ready(Some(Err(_))) => self.count(Outcome::Cut),
            Poll::Ready(Some(Ok(frame))) => {
                let sent = frame.data_ref().map_or(0, |data| data.len() as u64);
                let unsent = self.unsent.map(|unsent| unsent.saturating_sub(sent));
                self.unsent = unsent;
                // The last frame of a body of known length: the server may
                // not poll again once it has written that many bytes.
                if unsent == Some(0) || self.inner.is_end_stream() {
                    self.count(Outcome::Complete);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        self.count(Outcome::Aborted);
    }
}

/// Prometheus text exposition of every metric; with `metrics.token` set,
/// only to requests bearing it.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format"),
        (status = 401, description = "metrics.token is set and the request does not bear it", body = crate::error::ErrorBody),
        (status = 429, description = "Too many failed authentications from this address (see Retry-After)", body = crate::error::ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn metrics(State(state): State<ApiState>, headers: HeaderMap, client: ClientAddr) -> Response {
    let Some(render) = &state.render_metrics else {
        return ApiError::new(StatusCode::NOT_FOUND, "Metrics are not enabled").into_response();
    };
    if let Err(refused) = check_metrics_token(&state, &headers, client.0) {
        return refused.into_response();
    }
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(),
    )
        .into_response()
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
