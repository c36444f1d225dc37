//! Apps found by token, remembered for a moment: a client sending many
//! requests costs the database one token lookup per `FRESH_FOR`, not one
//! per request.
//!
//! Why a short lifetime rather than notifications between replicas: a
//! revoked token, or a changed or deleted app, must take effect within one
//! second on every replica. An entry is never used once older than
//! `FRESH_FOR`, so that bound holds whatever happens between processes:
//! there is no channel to lose a message on or to reconnect, and it holds
//! on SQLite too, where the CLI writes from another process. A change made
//! through this process (the admin API) empties the cache at once.
//!
//! Only tokens that were accepted are remembered: a refused token asks the
//! database every time, so guessing fills nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::App;

/// How long an answer from the database is used; with the lookup's own
/// time, well inside the one second a revocation may take to apply.
pub(crate) const FRESH_FOR: Duration = Duration::from_millis(500);
/// Most tokens remembered; past it, stale entries go, and if none are,
/// everything does (a lookup refills what is in use).
const CAPACITY: usize = 10_000;

#[derive(Default)]
pub(crate) struct TokenCache {
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// By the token's SHA-256: the app, and when the lookup that found it
    /// began.
    apps: HashMap<String, (App, Instant)>,
    /// Counts `forget_all`: a lookup that began before one must not store
    /// what it read.
    generation: u64,
}

/// Where a lookup began: its time and the cache's generation.
pub(crate) struct Lookup {
    began: Instant,
    generation: u64,
}

impl TokenCache {
    /// The app of the token with this digest, if looked up less than
    /// `FRESH_FOR` ago.
    pub(crate) fn get(&self, digest: &str) -> Option<App> {
        let entries = self.entries.lock().expect("token cache lock");
        let (app, began) = entries.apps.get(digest)?;
        (began.elapsed() < FRESH_FOR).then(|| app.clone())
    }

    /// Marks the start of a database lookup, before it is sent.
    pub(crate) fn begin(&self) -> Lookup {
        Lookup {
            began: Instant::now(),
            generation: self.entries.lock().expect("token cache lock").generation,
        }
    }

    /// Remembers what a lookup found, unless the cache was emptied since it
    /// began (it may have read the row before the change).
    pub(crate) fn store(&self, digest: &str, app: &App, lookup: Lookup) {
        let mut entries = self.entries.lock().expect("token cache lock");
        if entries.generation != lookup.generation {
            return;
        }
        if entries.apps.len() >= CAPACITY && !entries.apps.contains_key(digest) {
            entries.apps.retain(|_, (_, began)| began.elapsed() < FRESH_FOR);
            if entries.apps.len() >= CAPACITY {
                entries.apps.clear();
            }
        }
        entries
            .apps
            .insert(digest.to_owned(), (app.clone(), lookup.began));
    }

    /// Forgets every answer: an app or token changed through this process.
    pub(crate) fn forget_all(&self) {
        let mut entries = self.entries.lock().expect("token cache lock");
        entries.generation += 1;
        entries.apps.clear();
    }
}
