//! The room uploads have on a local blob store: the space free on its file
//! system, less `blobs.min_free_bytes`, less what uploads running in this
//! process took. A file system filled to the last block stops more than
//! uploads: the database beside the blobs can no longer write, deletes and
//! the reaper's passes included, so nothing could free it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::StoreError;

/// How long a reading of the free space stands for uploads to be granted
/// room by. Reading it is a file system call on a blocking thread, a
/// hand-off each way that every small upload paid; one reading a second
/// serves them all. What the reading does not see is conservative or
/// small: room given back since it was taken counts as written (whether
/// or not it was), space freed since is seen by the next reading, and what
/// other processes write within the second comes out of the reserve. A
/// refusal is never made on a reused reading: it reads again first.
const READING_STANDS_FOR: Duration = Duration::from_secs(1);

/// Cheap to clone: every clone is the same room.
#[derive(Clone)]
pub(crate) struct StoreRoom {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    /// `blobs.min_free_bytes`.
    reserve: u64,
    /// Bytes that uploads running here have taken, written since or not.
    taken: AtomicU64,
    /// Bytes given back since start: each upload's room, when it ends. Its
    /// bytes may be on disk by then, which a reading older than that misses.
    given_back: AtomicU64,
    last_reading: Mutex<Option<Reading>>,
    #[cfg(test)]
    readings: AtomicU64,
}

#[derive(Clone, Copy)]
struct Reading {
    at: Instant,
    free: u64,
    /// `given_back` when the reading began.
    given_back: u64,
}

/// Room on a local store that one upload took (`StoreRoom::take`), given
/// back when dropped.
pub(crate) struct RoomTaken {
    shared: Option<Arc<Shared>>,
    bytes: u64,
}

impl RoomTaken {
    /// What a store that manages its own capacity grants: everything.
    pub(crate) fn unbounded() -> RoomTaken {
        RoomTaken {
            shared: None,
            bytes: 0,
        }
    }

    /// The bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Holds what `more` took too, until this is dropped.
    pub(crate) fn add(&mut self, mut more: RoomTaken) {
        self.bytes += std::mem::take(&mut more.bytes);
    }
}

impl Drop for RoomTaken {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.given_back.fetch_add(self.bytes, Ordering::Relaxed);
            shared.taken.fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

impl StoreRoom {
    pub(crate) fn new(dir: PathBuf, reserve: u64) -> StoreRoom {
        StoreRoom {
            shared: Arc::new(Shared {
                dir,
                reserve,
                taken: AtomicU64::default(),
                given_back: AtomicU64::default(),
                last_reading: Mutex::default(),
                #[cfg(test)]
                readings: AtomicU64::default(),
            }),
        }
    }

    /// Takes `bytes` of the room, where it holds at least `fits` (`bytes`
    /// or more); `None` where it is too small. What an upload took counts
    /// until it ends, though what it wrote is also gone from the free space
    /// by then: near the reserve, uploads are refused a little early rather
    /// than late.
    pub(crate) async fn take(&self, bytes: u64, fits: u64) -> Result<Option<RoomTaken>, StoreError> {
        // Taken before it is judged, so that uploads asking at once cannot
        // each be granted the same room; given back on refusal.
        let taken_before = self.shared.taken.fetch_add(bytes, Ordering::Relaxed);
        let taken = RoomTaken {
            shared: Some(self.shared.clone()),
            bytes,
        };
        let fits = fits.max(bytes);
        let has_room = |free: u64| {
            free.saturating_sub(self.shared.reserve)
                .saturating_sub(taken_before)
                >= fits
        };
        if let Some(free) = self.recent_free()
            && has_room(free)
        {
            return Ok(Some(taken));
        }
        let free = self.read_free().await?;
        Ok(has_room(free).then_some(taken))
    }

    /// The free space by a reading that still stands, less what was given
    /// back since it began.
    fn recent_free(&self) -> Option<u64> {
        let reading = (*self.shared.last_reading.lock().expect("never poisoned"))?;
        let given_back_since = self.shared.given_back.load(Ordering::Relaxed) - reading.given_back;
        (reading.at.elapsed() < READING_STANDS_FOR).then(|| reading.free.saturating_sub(given_back_since))
    }

    /// Reads the free space afresh, for the uploads that follow too.
    async fn read_free(&self) -> Result<u64, StoreError> {
        // Before the reading: room given back while it runs counts as
        // written after it.
        let given_back = self.shared.given_back.load(Ordering::Relaxed);
        let dir = self.shared.dir.clone();
        // statvfs blocks as any file system call may (a network mount).
        let free = tokio::task::spawn_blocking(move || free_bytes(&dir))
            .await
            .map_err(|e| local_store_error(format!("free space: {e}")))??;
        #[cfg(test)]
        self.shared.readings.fetch_add(1, Ordering::Relaxed);
        let reading = Reading {
            at: Instant::now(),
            free,
            given_back,
        };
        *self.shared.last_reading.lock().expect("never poisoned") = Some(reading);
        Ok(free)
    }
}

/// The bytes free to an unprivileged process on the file system of `dir`.
pub(crate) fn free_bytes(dir: &Path) -> Result<u64, StoreError> {
    let stats = rustix::fs::statvfs(dir)
        .map_err(|e| local_store_error(format!("free space of {}: {e}", dir.display())))?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

pub(crate) fn local_store_error(message: String) -> StoreError {
    StoreError::Blobs(object_store::Error::Generic {
        store: "LocalFileSystem",
        source: message.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * 1024 * 1024;

    /// A room of about 1 GiB in a fresh directory, give or take what others
    /// write meanwhile.
    fn about_a_gib(dir: &Path) -> StoreRoom {
        StoreRoom::new(dir.into(), free_bytes(dir).unwrap().saturating_sub(GIB))
    }

    /// Room taken is held until dropped: two uploads asking at once cannot
    /// both be granted the same room; a request whose whole (`fits`) has no
    /// room is refused.
    #[tokio::test]
    async fn room_taken_is_held_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let room = about_a_gib(dir.path());
        let first = room
            .take(GIB / 2 + GIB / 8, 0)
            .await
            .unwrap()
            .expect("room for the first");
        assert!(
            room.take(GIB / 2 + GIB / 8, 0).await.unwrap().is_none(),
            "the room is held"
        );
        drop(first);
        assert!(
            room.take(GIB / 8, 2 * GIB).await.unwrap().is_none(),
            "no room for all of what is to come"
        );
        let mut again = room.take(GIB / 2, 0).await.unwrap().expect("given back");
        again.add(room.take(GIB / 4, 0).await.unwrap().expect("room for more"));
        assert!(
            room.take(GIB / 2 - GIB / 8, 0).await.unwrap().is_none(),
            "what was added is held too"
        );
    }

    /// Uploads one after another share a reading of the free space while
    /// it stands, counting what those before them gave back as written; a
    /// reading no longer stands after a second, and a refusal reads again,
    /// so space freed since is seen before anyone is refused.
    #[tokio::test]
    async fn a_reading_serves_uploads_until_a_refusal_reads_again() {
        let dir = tempfile::tempdir().unwrap();
        let room = about_a_gib(dir.path());
        for _ in 0..100 {
            room.take(16 * 1024, 0)
                .await
                .unwrap()
                .expect("room for a small file");
        }
        let readings = || room.shared.readings.load(Ordering::Relaxed);
        assert_eq!(readings(), 1, "one reading serves uploads in the same second");

        // Space taken by a file outside the room's accounting, seen by a
        // reading; then freed, which the reading does not know.
        let filler = dir.path().join("filler");
        let file = std::fs::File::create(&filler).unwrap();
        rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, GIB / 2).unwrap();
        file.sync_all().unwrap();
        drop(file);
        tokio::time::sleep(READING_STANDS_FOR).await;
        assert!(
            room.take(3 * GIB / 4, 0).await.unwrap().is_none(),
            "the filler leaves no room for 3/4 GiB"
        );
        let after_refusal = readings();
        assert_eq!(after_refusal, 2, "the refusal was made on a fresh reading");
        std::fs::remove_file(&filler).unwrap();
        rustix::fs::sync();
        room.take(3 * GIB / 4, 0)
            .await
            .unwrap()
            .expect("the space freed is seen before a refusal");
        assert_eq!(readings(), 3, "the stale reading was read again");
    }
}
