//! Turns for deletes, per app: at most `DELETES_PER_APP` deletes of one app
//! run at once in this process; the rest wait their turn, holding nothing.
//!
//! Why: on PostgreSQL a delete gives its app's quota back in the statement
//! that shreds the key, so it locks the app's row until its commit is
//! flushed, and the deletes of one app run one after another whatever their
//! number. Each waiting delete held a pool connection while it waited: a
//! few hundred deletes of one app at once took every connection, and every
//! other app's token lookups, reads and uploads waited behind them. Waiting
//! here instead, one app's burst of deletes holds at most this many
//! connections, and slows only that app. It costs that app nothing: its
//! deletes were serialised on its row anyway (and on SQLite, on the one
//! writer).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ids::AppId;

/// Deletes of one app that may run at once in a process: a quarter of the
/// main PostgreSQL pool's connections.
pub(crate) const DELETES_PER_APP: usize = 4;

/// The turns of each app with deletes running or waiting. An app's entry
/// goes when its last turn ends with no delete waiting (one whose last
/// waiter gave up stays, one per app at most, and serves its next delete).
#[derive(Default)]
pub(crate) struct DeleteTurns {
    apps: Mutex<HashMap<AppId, Arc<Semaphore>>>,
}

/// One delete's turn; the next waiting delete of the app goes when dropped.
pub(crate) struct DeleteTurn<'a> {
    permit: Option<OwnedSemaphorePermit>,
    app_id: &'a AppId,
    turns: &'a DeleteTurns,
}

impl DeleteTurns {
    /// Waits until a delete of `app_id` may run.
    pub(crate) async fn take<'a>(&'a self, app_id: &'a AppId) -> DeleteTurn<'a> {
        let turns = self
            .apps
            .lock()
            .expect("delete turns lock")
            .entry(app_id.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(DELETES_PER_APP)))
            .clone();
        // Waiting holds a clone: the entry stays while anyone waits on it.
        let permit = turns.acquire_owned().await.expect("never closed");
        DeleteTurn {
            permit: Some(permit),
            app_id,
            turns: self,
        }
    }

    #[cfg(test)]
    fn apps(&self) -> usize {
        self.apps.lock().expect("delete turns lock").len()
    }
}

impl Drop for DeleteTurn<'_> {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut apps = self.turns.apps.lock().expect("delete turns lock");
        // Only the map still holds it: no delete of the app runs or waits.
        if apps
            .get(self.app_id)
            .is_some_and(|turns| Arc::strong_count(turns) == 1)
        {
            apps.remove(self.app_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Past its turns an app's next delete waits, another app's does not,
    /// and apps with nothing running leave the map.
    #[tokio::test]
    async fn an_app_runs_at_most_its_turns_and_others_are_not_held() {
        let turns = DeleteTurns::default();
        let (a, b) = (AppId::new("a"), AppId::new("b"));
        let mut held = Vec::new();
        for _ in 0..DELETES_PER_APP {
            held.push(turns.take(&a).await);
        }
        let waiting = tokio::time::timeout(Duration::from_millis(50), turns.take(&a)).await;
        assert!(waiting.is_err(), "a fifth delete of the app waits");
        let other = tokio::time::timeout(Duration::from_secs(5), turns.take(&b))
            .await
            .expect("another app's delete does not wait");
        drop(other);
        assert_eq!(turns.apps(), 1, "b left the map");
        held.pop();
        let next = tokio::time::timeout(Duration::from_secs(5), turns.take(&a))
            .await
            .expect("a turn given back is taken");
        drop(next);
        held.clear();
        assert_eq!(turns.apps(), 0, "apps with nothing running leave the map");
    }
}
