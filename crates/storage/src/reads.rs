//! Reads in progress in this process, by media id, so that deleting media
//! stops every stream of it here at once. (Streams on other replicas find
//! out by re-checking the row; see `download`.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::ids::{AppId, MediaId};

#[derive(Default)]
pub(crate) struct ActiveReads {
    by_media: Mutex<HashMap<MediaId, Streams>>,
}

/// The streams of one medium: one token cancels them all.
struct Streams {
    app_id: AppId,
    cancel: CancellationToken,
    count: usize,
}

/// One stream's place in `ActiveReads`, given up when it drops.
pub(crate) struct Registration {
    reads: Arc<ActiveReads>,
    media_id: MediaId,
    cancel: CancellationToken,
}

impl ActiveReads {
    /// Records a stream of `media_id`; its token is cancelled when the media
    /// is deleted.
    pub(crate) fn register(self: &Arc<Self>, app_id: &AppId, media_id: &MediaId) -> Registration {
        let mut by_media = self.by_media.lock().unwrap_or_else(|e| e.into_inner());
        let streams = by_media.entry(media_id.clone()).or_insert_with(|| Streams {
            app_id: app_id.clone(),
            cancel: CancellationToken::new(),
            count: 0,
        });
        streams.count += 1;
        Registration {
            reads: self.clone(),
            media_id: media_id.clone(),
            cancel: streams.cancel.clone(),
        }
    }

    /// Stops every stream of `media_id`.
    pub(crate) fn cancel(&self, media_id: &MediaId) {
        let mut by_media = self.by_media.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(streams) = by_media.remove(media_id) {
            streams.cancel.cancel();
        }
    }

    /// Stops every stream of every medium of `app_id`.
    pub(crate) fn cancel_app(&self, app_id: &AppId) {
        let mut by_media = self.by_media.lock().unwrap_or_else(|e| e.into_inner());
        by_media.retain(|_, streams| {
            let keep = streams.app_id != *app_id;
            if !keep {
                streams.cancel.cancel();
            }
            keep
        });
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("media_id", &self.media_id)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl Registration {
    /// Resolves once the media has been deleted.
    pub(crate) async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // A cancelled stream's entry is gone already (and its id may have a
        // new entry, for streams opened since, that is not ours to count).
        if self.cancel.is_cancelled() {
            return;
        }
        let mut by_media = self.reads.by_media.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(streams) = by_media.get_mut(&self.media_id) {
            streams.count -= 1;
            if streams.count == 0 {
                by_media.remove(&self.media_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleting_cancels_the_streams_of_that_media_only() {
        let reads = Arc::new(ActiveReads::default());
        let (app, other) = (AppId::new("app"), AppId::new("other"));
        let (a, b_id) = (MediaId::new("a"), MediaId::new("b"));
        let (a1, a2, b) = (
            reads.register(&app, &a),
            reads.register(&app, &a),
            reads.register(&other, &b_id),
        );
        reads.cancel(&a);
        assert!(a1.is_cancelled() && a2.is_cancelled() && !b.is_cancelled());
        let again = reads.register(&app, &a);
        drop((a1, a2));
        assert!(!again.is_cancelled(), "a stream opened since has its own entry");
        reads.cancel_app(&other);
        assert!(b.is_cancelled() && !again.is_cancelled());
        drop(again);
        assert!(reads.by_media.lock().unwrap().is_empty(), "nothing left behind");
    }
}
