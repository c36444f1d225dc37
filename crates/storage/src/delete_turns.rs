//! Turns for deletes, per app: at most `DELETES_PER_APP` deletes of one app
//! run at once in this process; the rest wait their turn, holding nothing.
//! A turn is held by the task that runs its delete to its end, so a caller
//! that hangs up does not hand it on while its delete still runs.
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

/// The turns of each app with deletes running or waiting.
type Apps = Mutex<HashMap<AppId, Arc<Semaphore>>>;

/// The turns of each app with deletes running or waiting. An app's entry
/// goes when its last turn ends with no delete waiting (one whose last
/// waiter gave up stays, one per app at most, and serves its next delete).
#[derive(Default)]
pub(crate) struct DeleteTurns {
    apps: Arc<Apps>,
}

/// One delete's turn; the next waiting delete of the app goes when dropped.
/// It owns what it needs, so that it moves into the task that runs the
/// delete to its end: the turn must last as long as the delete's work, not
/// as long as its caller, who may hang up while the work goes on.
pub(crate) struct DeleteTurn {
    permit: Option<OwnedSemaphorePermit>,
    app_id: AppId,
    apps: Arc<Apps>,
}

impl DeleteTurns {
    /// Waits until a delete of `app_id` may run.
    pub(crate) async fn take(&self, app_id: &AppId) -> DeleteTurn {
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
            app_id: app_id.clone(),
            apps: self.apps.clone(),
        }
    }

    /// The turns of `app_id` taken now.
    #[cfg(test)]
    pub(crate) fn taken(&self, app_id: &AppId) -> usize {
        let apps = self.apps.lock().expect("delete turns lock");
        apps.get(app_id)
            .map_or(0, |turns| DELETES_PER_APP - turns.available_permits())
    }

    #[cfg(test)]
    fn apps(&self) -> usize {
        self.apps.lock().expect("delete turns lock").len()
    }
}

impl Drop for DeleteTurn {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut apps = self.apps.lock().expect("delete turns lock");
        // Only the map still holds it: no delete of the app runs or waits.
        if apps
            .get(&self.app_id)
            .is_some_and(|turns| Arc::strong_count(turns) == 1)
        {
            apps.remove(&self.app_id);
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
