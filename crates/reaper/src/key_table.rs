//! The scheduled rewrite of the key table (Postgres): it bounds how long a
//! shredded key stays in the table's pages to `rewrite_keys_every`.

use std::time::{Duration, Instant};

use mediavault_storage::Vault;

/// How long a rewrite waits for its exclusive lock before it gives up until
/// the next period: reads queue behind a waiting rewrite, so this bounds the
/// stall a busy table can see.
const REWRITE_LOCK_TIMEOUT: Duration = Duration::from_secs(1);

/// Rewrites the key table every `every` until the task is aborted.
pub(crate) async fn run(vault: Vault, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: skip it, a fresh start has little to remove.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        rewrite_keys(&vault).await;
    }
}

/// One logged and counted rewrite; `Some(true)` if it ran, `Some(false)` if
/// another replica's was running, `None` if it failed (the next one retries).
pub async fn rewrite_keys(vault: &Vault) -> Option<bool> {
    let started = Instant::now();
    match vault.rewrite_key_table(REWRITE_LOCK_TIMEOUT).await {
        Ok(true) => {
            let seconds = started.elapsed().as_secs_f64();
            metrics::histogram!("mediavault_key_table_rewrite_duration_seconds").record(seconds);
            tracing::info!(seconds, "key table rewritten");
            Some(true)
        }
        Ok(false) => {
            tracing::debug!("key table rewrite skipped: another replica's is running");
            Some(false)
        }
        Err(error) => {
            metrics::counter!("mediavault_key_table_rewrite_failures_total").increment(1);
            tracing::warn!(%error, "key table rewrite failed; the next one retries");
            None
        }
    }
}
