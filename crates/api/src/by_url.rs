//! Upload by URL: the `file` part is a plain text value holding an http(s)
//! URL. The form has been read whole and `file_type` accepted when this
//! runs; the file is fetched (through the guard of `mediavault_fetch`) and
//! its body streams into the same `Upload` a sent file does, so size limit,
//! sniffing, encryption and clean-up are the same. The client's minimum
//! upload rate is not applied here: its body is over, and the fetch has a
//! timeout of its own. An app whose quota has no room is refused before
//! the fetch: the contract answers 403 before a fetch failure or 413, and
//! such an app should not make the service send requests for it.

use mediavault_fetch::FetchError;
use mediavault_storage::{AdminError, App, Upload, UploadError};

use crate::ApiState;
use crate::error::ApiError;

/// Fetches `url` into a new upload of `app`, ready to finish. Every fetch
/// made is counted once in `mediavault_url_fetches_total`, however it ends.
pub(crate) async fn receive(state: &ApiState, app: &App, url: &str) -> Result<Upload, ApiError> {
    let room = check_room(state, app).await?;
    let mut count = FetchCount(None);
    let received = fetch_into_upload(state, app, url, room).await;
    count.0 = Some(match &received {
        Ok(_) => "ok",
        Err((result, _)) => result,
    });
    received.map_err(|(_, error)| error)
}

/// `receive`'s work from the fetch on; an error comes with the result it
/// is counted under.
async fn fetch_into_upload(
    state: &ApiState,
    app: &App,
    url: &str,
    room: Option<u64>,
) -> Result<Upload, (&'static str, ApiError)> {
    let fetched = until_shutdown(state, state.fetcher.fetch(url))
        .await
        .map_err(refused)?;
    let mut fetched = fetched.map_err(failed)?;
    // Refused before a byte of the body is read, or any row written, as a
    // sent file of that length would be: for the quota when the app's room
    // ends before the size limit does (the sent file's growing reservation
    // meets the quota first), else for its size.
    if fetched
        .content_length
        .is_some_and(|length| length > app.max_file_bytes)
    {
        if room.is_some_and(|room| room < app.max_file_bytes) {
            return Err(refused(UploadError::QuotaExceeded));
        }
        return Err(refused(UploadError::TooLarge {
            limit: app.max_file_bytes,
        }));
    }
    // The quota is reserved from the announced length, when there is one.
    let mut upload = state
        .vault
        .begin_sized_upload(app, fetched.filename.as_deref(), fetched.content_length)
        .await
        .map_err(refused)?;
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
                return Err(refused(error));
            }
        };
        // Past the app's limit this refuses, and the rest is never fetched.
        if let Err(error) = upload.write(&chunk).await {
            upload.abort().await;
            return Err(refused(error));
        }
    }
    Ok(upload)
}

/// Refuses, as the reservation would, an app with no room for another
/// medium or for one more byte; otherwise the bytes it has room for
/// (`None`: no byte limit). Advisory: another upload may take the room
/// before this one reserves, and the reservation after the fetch decides.
async fn check_room(state: &ApiState, app: &App) -> Result<Option<u64>, ApiError> {
    let stats = match state.vault.app_stats(&app.id).await {
        Ok(stats) => stats,
        Err(AdminError::Unavailable(error)) => return Err(UploadError::Unavailable(error).into()),
        // Deleted since it authenticated: the reservation answers for that.
        Err(_) => return Ok(None),
    };
    let full = |used: u64, max: Option<u64>| max.is_some_and(|max| used >= max);
    if full(stats.media_used, stats.max_media) || full(stats.bytes_used, stats.max_bytes_stored) {
        // Not counted: no fetch was made.
        return Err(UploadError::QuotaExceeded.into());
    }
    Ok(stats.max_bytes_stored.map(|max| max - stats.bytes_used))
}

/// `work`, unless the drain time after SIGTERM ends first.
async fn until_shutdown<T>(state: &ApiState, work: impl Future<Output = T>) -> Result<T, UploadError> {
    tokio::select! {
        done = work => Ok(done),
        () = state.shutdown.cancelled() => Err(UploadError::Interrupted),
    }
}

/// A fetch that failed, counted under the class of its failure.
fn failed(error: FetchError) -> (&'static str, ApiError) {
    (error.reason(), error.into())
}

/// A fetch made whose file the vault refused or could not keep.
fn refused(error: UploadError) -> (&'static str, ApiError) {
    let result = match error {
        UploadError::TooLarge { .. } => "too_large",
        UploadError::QuotaExceeded => "quota",
        UploadError::Interrupted => "interrupted",
        _ => "not_stored",
    };
    (result, error.into())
}

/// One fetch by URL, counted by how it ended when dropped: `ok`, the
/// refusal or failure set in it, or, when nothing was (the client went
/// away, and its handler with it), `aborted`.
struct FetchCount(Option<&'static str>);

impl Drop for FetchCount {
    fn drop(&mut self) {
        let result = self.0.unwrap_or("aborted");
        metrics::counter!("mediavault_url_fetches_total", "result" => result).increment(1);
    }
}
