//! Upload by URL: the `file` part is a plain text value holding an http(s)
//! URL. The form has been read whole and `file_type` accepted when this
//! runs; the file is fetched (through the guard of `mediavault_fetch`) and
//! its body streams into the same `Upload` a sent file does, so size limit,
//! sniffing, encryption and clean-up are the same. The client's minimum
//! upload rate is not applied here: its body is over, and the fetch has a
//! timeout of its own.

use mediavault_fetch::FetchError;
use mediavault_storage::{App, Upload, UploadError};

use crate::ApiState;
use crate::error::ApiError;

/// Fetches `url` into a new upload of `app`, ready to finish.
pub(crate) async fn receive(state: &ApiState, app: &App, url: &str) -> Result<Upload, ApiError> {
    let fetched = until_shutdown(state, state.fetcher.fetch(url)).await?;
    let mut fetched = fetched.map_err(failed)?;
    // Refused before a byte of the body is read, or any row written.
    if fetched
        .content_length
        .is_some_and(|length| length > app.max_file_bytes)
    {
        counted("too_large");
        return Err(UploadError::TooLarge {
            limit: app.max_file_bytes,
        }
        .into());
    }
    // The quota is reserved from the announced length, when there is one.
    let mut upload = state
        .vault
        .begin_sized_upload(app, fetched.filename.as_deref(), fetched.content_length)
        .await?;
    loop {
        let chunk = match until_shutdown(state, fetched.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => break,
            Ok(Err(error)) => {
                upload.abort().await;
                return Err(failed(error));
            }
            Err(error) => {
                upload.abort().await;
                return Err(error.into());
            }
        };
        // Past the app's limit this refuses, and the rest is never fetched.
        if let Err(error) = upload.write(&chunk).await {
            if matches!(error, UploadError::TooLarge { .. }) {
                counted("too_large");
            }
            upload.abort().await;
            return Err(error.into());
        }
    }
    counted("ok");
    Ok(upload)
}

/// `work`, unless the drain time after SIGTERM ends first.
async fn until_shutdown<T>(state: &ApiState, work: impl Future<Output = T>) -> Result<T, UploadError> {
    tokio::select! {
        done = work => Ok(done),
        () = state.shutdown.cancelled() => Err(UploadError::Interrupted),
    }
}

fn failed(error: FetchError) -> ApiError {
    counted(error.reason());
    error.into()
}

/// One fetch by URL, by how it ended: `ok`, `too_large`, or the class of
/// the failure.
fn counted(result: &'static str) {
    metrics::counter!("mediavault_url_fetches_total", "result" => result).increment(1);
}
