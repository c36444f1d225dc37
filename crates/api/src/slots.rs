//! Transfer slots: a bound on uploads (or downloads) in progress on this
//! replica, and on how many of them one app may hold, so that one app's
//! transfers — slow ones above all — can never take every slot from the
//! others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// The slowest transfer kept: an upload body that brings, or a download
/// whose client takes, on average at least `bytes_per_second` over every
/// `window`. A window long enough to ride out a stalled mobile link, a rate
/// far below any real transfer, still cuts a transfer that trickles to hold
/// its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    pub bytes_per_second: u64,
    pub window: Duration,
}

impl MinRate {
    /// The bytes a window must bring.
    pub(crate) fn per_window(&self) -> u64 {
        let bytes = self.bytes_per_second as f64 * self.window.as_secs_f64();
        bytes.ceil() as u64
    }
}

/// Transfers of one kind in progress, in all and per app.
pub struct Slots {
    /// What the slots are for, plural, as refusals name it: "uploads".
    what: &'static str,
    total: Arc<Semaphore>,
    per_app: usize,
    /// Slots each app holds now; an app holding none has no entry, so the
    /// map is as large as the number of apps uploading at the moment.
    held: Arc<Mutex<HashMap<String, usize>>>,
}

/// One transfer's slot; given back when dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    app_id: String,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

impl Slots {
    /// `total` slots for uploads, of which one app may hold `per_app` (at
    /// least one).
    pub fn uploads(total: usize, per_app: usize) -> Slots {
        Slots::new("uploads", total, per_app)
    }

    /// `total` slots for downloads (each held until its body is sent), of
    /// which one app may hold `per_app` (at least one). Downloads by signed
    /// link count against the app whose file they send.
    pub fn downloads(total: usize, per_app: usize) -> Slots {
        Slots::new("downloads", total, per_app)
    }

    fn new(what: &'static str, total: usize, per_app: usize) -> Slots {
        Slots {
            what,
            total: Arc::new(Semaphore::new(total)),
            per_app: per_app.max(1),
            held: Arc::default(),
        }
    }

    /// The default share of one app: a quarter of the slots, at least one.
    pub fn default_per_app(total: usize) -> usize {
        (total / 4).max(1)
    }

    /// A slot for a transfer of `app_id`, or the refusal to answer: 503
    /// when the replica is full, else 429 when the app holds its share
    /// (other apps still may). Neither queues.
    pub fn try_acquire(&self, app_id: &str) -> Result<Slot, ApiError> {
        let Ok(permit) = self.total.clone().try_acquire_owned() else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("Too many {} in progress; retry shortly", self.what),
            )
            .with_retry_after(1));
        };
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mine = held.get(app_id).copied().unwrap_or(0);
        if mine >= self.per_app {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "This app has {} {} in progress, its most at once; retry when one completes",
                    self.per_app, self.what
                ),
            )
            .with_retry_after(1));
        }
        held.insert(app_id.to_owned(), mine + 1);
        Ok(Slot {
            _permit: permit,
            app_id: app_id.to_owned(),
            held: self.held.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.app_id) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.app_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_holds_at_most_its_share_and_gives_slots_back() {
        let slots = Slots::uploads(3, 2);
        let a1 = slots.try_acquire("a").unwrap();
        let _a2 = slots.try_acquire("a").unwrap();
        assert_eq!(
            slots.try_acquire("a").err().unwrap().status,
            StatusCode::TOO_MANY_REQUESTS
        );
        let b1 = slots.try_acquire("b").unwrap();
        for app in ["a", "b"] {
            assert_eq!(
                slots.try_acquire(app).err().unwrap().status,
                StatusCode::SERVICE_UNAVAILABLE,
                "the replica is full"
            );
        }
        drop(a1);
        drop(b1);
        let _a3 = slots.try_acquire("a").unwrap();
        assert_eq!(
            slots.held.lock().unwrap().len(),
            1,
            "apps with no slot leave the map"
        );
    }

    #[test]
    fn the_default_share_is_a_quarter_and_at_least_one() {
        assert_eq!(Slots::default_per_app(64), 16);
        assert_eq!(Slots::default_per_app(2), 1);
    }
}
