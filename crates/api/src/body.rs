//! Reading a small request body whole (a link request, an admin change):
//! bounded in size and in time, so that a client holding a token cannot
//! keep a request, its task and its connection open by sending its body
//! slowly or not at all. (Uploads stream their bodies under limits of
//! their own, in `upload`.)

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use bytes::BytesMut;
use futures::StreamExt;

use crate::error::ApiError;

/// The body of at most `limit` bytes, whole, if it arrives within `within`:
/// else 400 (too long, or broken off) or 408, in the service's error shape.
/// `what` names the request in the message.
pub(crate) async fn read_whole(
    body: Body,
    limit: usize,
    within: Duration,
    what: &str,
) -> Result<Bytes, ApiError> {
    let read = async {
        let mut chunks = body.into_data_stream();
        let mut whole = BytesMut::new();
        while let Some(chunk) = chunks.next().await {
            let chunk =
                chunk.map_err(|_| ApiError::bad_request(format!("Invalid {what}: the body broke off")))?;
            if whole.len() + chunk.len() > limit {
                return Err(ApiError::bad_request(format!(
                    "Invalid {what}: the body must be at most {limit} bytes"
                )));
            }
            whole.extend_from_slice(&chunk);
        }
        Ok(whole.freeze())
    };
    tokio::time::timeout(within, read).await.unwrap_or_else(|_| {
        Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "Invalid {what}: the body did not arrive within {}s",
                within.as_secs_f32()
            ),
        ))
    })
}
