//! Reads in progress in this process, by media id, so that deleting media
//! stops every stream of it here at once. (Streams on other replicas find
//! out by re-checking the row; see `download`.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::ids::{AppId, MediaId};

/// By media id, then by the app that asked: a read registers before its
/// lookup has found whose the medium is, so an app asking for another's
/// medium (and about to be told it is not found) must not share, or take
/// over, the entry of the medium's own app.
#[derive(Default)]
pub(crate) struct ActiveReads {
    by_media: Mutex<HashMap<MediaId, HashMap<AppId, Streams>>>,
}

/// The streams of one medium read by one app: one token cancels them all.
struct Streams {
    cancel: CancellationToken,
    count: usize,
}

/// One stream's place in `ActiveReads`, given up when it drops.
pub(crate) struct Registration {
    reads: Arc<ActiveReads>,
    media_id: MediaId,
    app_id: AppId,
    cancel: CancellationToken,
}

impl ActiveReads {
    /// Records a stream of `media_id` for `app_id`; its token is cancelled
    /// when the media is deleted, or the app.
    pub(crate) fn register(self: &Arc<Self>, app_id: &AppId, media_id: &MediaId) -> Registration {
        let mut by_media = self.by_media.lock().unwrap_or_else(|e| e.into_inner());
        let streams = by_media
            .entry(media_id.clone())
            .or_default()
            .entry(app_id.clone())
            .or_insert_with(|| Streams {
                cancel: CancellationToken::new(),
                count: 0,
            });
        streams.count += 1;
        Registration {
            reads: self.clone(),
            media_id: media_id.clone(),
            app_id: app_id.clone(),
            cancel: streams.cancel.clone(),
        }
    }

    /// Stops every stream of `media_id`.
    pub(crate) fn cancel(&self, media_id: &MediaId) {
        let mut by_media = self.by_media.lock().unwrap_or_else(|e| e.into_inner());
        for streams in by_media
            .remove(media_id)
            .into_iter()
            .flat_map(HashMap::into_values)
        {
            streams.cancel.cancel();
        }
    }

    /// Stops every stream of every medium of `app_id`.
    pub(crate) fn cancel_app(&self, app_id: &AppId) {
        let mut by_media = self.by_media.lock().unwrap_or_else(|e| e.into_inner());
        by_media.retain(|_, by_app| {
            if let Some(streams) = by_app.remove(app_id) {
                streams.cancel.cancel();
            }
            !by_app.is_empty()
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
        let Some(by_app) = by_media.get_mut(&self.media_id) else {
            return;
        };
        if let Some(streams) = by_app.get_mut(&self.app_id) {
            streams.count -= 1;
            if streams.count == 0 {
                by_app.remove(&self.app_id);
            }
        }
        if by_app.is_empty() {
            by_media.remove(&self.media_id);
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

    /// An app that asks for another app's medium registers before its
    /// lookup tells it the medium is not its own: deleting that app stops
    /// none of the owner's streams, and deleting the owner stops all of
    /// them, whoever registered first.
    #[test]
    fn a_read_by_another_app_neither_shares_nor_takes_the_owners_entry() {
        let reads = Arc::new(ActiveReads::default());
        let (owner, asker) = (AppId::new("owner"), AppId::new("asker"));
        let id = MediaId::new("m");
        let asking = reads.register(&asker, &id);
        let reading = reads.register(&owner, &id);
        drop(asking);
        reads.cancel_app(&asker);
        assert!(!reading.is_cancelled(), "another app's deletion");
        reads.cancel_app(&owner);
        assert!(reading.is_cancelled());
        drop(reading);
        assert!(reads.by_media.lock().unwrap().is_empty(), "nothing left behind");

        let (asking, reading) = (reads.register(&asker, &id), reads.register(&owner, &id));
        reads.cancel(&id);
        assert!(
            asking.is_cancelled() && reading.is_cancelled(),
            "a delete stops every read"
        );
    }
}
