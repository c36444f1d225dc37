//! mediavault-reaper: removes what must go — expired media, media deleted on
//! request, abandoned uploads — and sweeps orphaned blobs, through the
//! primitives `Vault` exposes. It never talks to a store directly and never
//! imports the HTTP layer.
//!
//! Passes run on a cron schedule inside every replica; a Postgres advisory
//! lock lets one run at a time per cluster, and claims use `SKIP LOCKED`, so
//! even overlapping passes never reap a row twice. In one process the
//! schedule is a single loop, so a pass never overlaps the previous one.

mod key_table;

use std::str::FromStr;
use std::time::{Duration, Instant};

use mediavault_storage::{ReapCounts, StoreError, Vault, now_millis};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;

pub use key_table::rewrite_keys;

/// Rows claimed per batch: one S3 DeleteObjects request holds 1,000 keys.
const BATCH: u32 = 1000;

/// Batches whose blobs and rows are being removed at once. The time of a
/// batch is the store's bulk delete; a few in flight keep the store busy
/// while the next claim runs, as S3 clients do for bulk deletes.
const BATCHES_IN_FLIGHT: usize = 4;

/// What a pass did, by reason; printed by `mediavault reap --once`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PassReport {
    pub expired: u64,
    pub deleted: u64,
    pub abandoned: u64,
    #[serde(skip)]
    pub blob_failures: u64,
    /// Epoch keys made ahead of need, and destroyed once their epoch was
    /// over; printed only when there were some.
    #[serde(rename = "epochKeysMade", skip_serializing_if = "is_zero")]
    pub epoch_keys_made: u64,
    #[serde(rename = "epochKeysDestroyed", skip_serializing_if = "is_zero")]
    pub epoch_keys_destroyed: u64,
    /// Another replica's pass held the lock; this one did nothing.
    #[serde(skip)]
    pub skipped: bool,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

impl PassReport {
    fn add(&mut self, counts: ReapCounts) {
        self.expired += counts.expired;
        self.deleted += counts.deleted;
        self.abandoned += counts.abandoned;
        self.blob_failures += counts.blob_failures;
    }
}

/// The least time the epoch-key upkeep is given, whatever the pass budget:
/// a token's calls take a few milliseconds each, a network HSM's more, and
/// a budget set small for the claims must not leave keys never made.
const MIN_UPKEEP_BUDGET: Duration = Duration::from_secs(10);

/// One pass at `now` (milliseconds): batches until nothing is due, a batch
/// fails to delete a blob (the store is likely down; the next pass retries),
/// or `budget` is spent; then the epoch-key upkeep, within `budget` too
/// (at least `MIN_UPKEEP_BUDGET`). Batches are claimed one at a time and finished
/// (blobs, then rows) up to [`BATCHES_IN_FLIGHT`] at once.
pub async fn reap_once(vault: &Vault, now: i64, budget: Duration) -> Result<PassReport, StoreError> {
    let Some(_lock) = vault.try_reaper_lock().await? else {
        return Ok(PassReport {
            skipped: true,
            ..PassReport::default()
        });
    };
    let reaped = match reap_due(vault, now, budget).await {
        Ok(report) => vault.reap_deleted_apps().await.map(|_| report),
        failed => failed,
    };
    // The epoch-key upkeep runs whatever became of the reaping: a metadata
    // store failing the claims must not hold a day's key past its deadline.
    // It is bounded by the budget too: a token that stops answering (a
    // device hung in a call) must not hold the pass, and with it the lock
    // every replica's passes take, for ever.
    let mut report = reaped.as_ref().copied().unwrap_or_default();
    let upkeep_budget = budget.max(MIN_UPKEEP_BUDGET);
    if tokio::time::timeout(upkeep_budget, keep_epoch_keys(vault, now, &mut report))
        .await
        .is_err()
    {
        metrics::counter!("mediavault_epoch_key_upkeep_failures_total").increment(1);
        tracing::warn!(
            budget = ?upkeep_budget,
            "epoch key upkeep took longer than the pass budget (the key provider may have stopped answering); \
             given up for this pass, the next retries"
        );
    }
    reaped.map(|_| report)
}

/// The pipeline of [`reap_once`]. On an error no new batch is claimed; the
/// batches in flight are finished before the first error is returned, so
/// that what was claimed is not left to wait out its lease.
async fn reap_due(vault: &Vault, now: i64, budget: Duration) -> Result<PassReport, StoreError> {
    let started = Instant::now();
    let mut report = PassReport::default();
    let mut in_flight = JoinSet::new();
    let mut claiming = true;
    let mut first_error = None;
    loop {
        while claiming && in_flight.len() < BATCHES_IN_FLIGHT {
            match vault.claim_due_batch(now, BATCH).await {
                Ok(batch) => {
                    claiming = batch.len() == BATCH as usize && started.elapsed() < budget;
                    if !batch.is_empty() {
                        let vault = vault.clone();
                        in_flight.spawn(async move { vault.finish_reaped(batch).await });
                    }
                }
                Err(error) => {
                    claiming = false;
                    first_error.get_or_insert(error);
                }
            }
        }
        let Some(joined) = in_flight.join_next().await else {
            break;
        };
        // A batch's task ends only by finishing or by panicking (none is
        // aborted): a panic goes on as the pass's own.
        let finished = joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        match finished {
            Ok(counts) => {
                report.add(counts);
                if counts.blob_failures > 0 {
                    claiming = false;
                }
            }
            Err(error) => {
                claiming = false;
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(report),
    }
}

/// Destroys and makes epoch keys as `now` needs. A failure (the provider
/// away) is logged, counted and left to the next pass; it fails no pass.
/// What an upkeep that failed in part did is counted all the same.
async fn keep_epoch_keys(vault: &Vault, now: i64, report: &mut PassReport) {
    let upkeep = match vault.keep_epoch_keys(now).await {
        Ok(upkeep) => upkeep,
        Err(failed) => {
            metrics::counter!("mediavault_epoch_key_upkeep_failures_total").increment(1);
            tracing::warn!(error = %failed.error, "epoch key upkeep failed; the next pass retries");
            failed.upkeep
        }
    };
    report.epoch_keys_made = upkeep.made.len() as u64;
    report.epoch_keys_destroyed = upkeep.destroyed.len() as u64;
    metrics::counter!("mediavault_epoch_keys_made_total").increment(report.epoch_keys_made);
    metrics::counter!("mediavault_epoch_keys_destroyed_total").increment(report.epoch_keys_destroyed);
}

/// A six-field cron expression (`sec min hour day month weekday`).
#[derive(Debug, Clone)]
pub struct Schedule(cron::Schedule);

impl FromStr for Schedule {
    type Err = String;

    fn from_str(expression: &str) -> Result<Schedule, String> {
        if expression.split_whitespace().count() != 6 {
            return Err(format!(
                "{expression:?} must have six fields: sec min hour day month weekday"
            ));
        }
        cron::Schedule::from_str(expression)
            .map(Schedule)
            .map_err(|e| format!("{expression:?}: {e}"))
    }
}

impl Schedule {
    fn until_next(&self) -> Option<Duration> {
        let next = self.0.upcoming(chrono::Utc).next()?;
        (next - chrono::Utc::now()).to_std().ok().or(Some(Duration::ZERO))
    }
}

/// How the reaper runs inside `serve`.
#[derive(Debug, Clone)]
pub struct ReaperSettings {
    pub schedule: Schedule,
    pub sweep_schedule: Schedule,
    /// Bound on one pass; what is left waits for the next.
    pub budget: Duration,
    /// A blob younger than this may belong to an upload in progress.
    pub stale_upload_after: Duration,
    /// How often the key table is rewritten (Postgres), and so how long a
    /// shredded key may stay in its pages.
    pub rewrite_keys_every: Duration,
}

/// Runs reaper passes on `settings.schedule`, orphan sweeps on
/// `settings.sweep_schedule` and key-table rewrites every
/// `settings.rewrite_keys_every` until the task is aborted. The sweeps and
/// rewrites run on tasks of their own, which end with it however it ends:
/// left running at shutdown, a rewrite would hold a connection that
/// closing the database waits for.
pub fn spawn(vault: Vault, settings: ReaperSettings) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _sweeper = AbortOnDropHandle::new({
            let vault = vault.clone();
            let settings = settings.clone();
            tokio::spawn(async move {
                while let Some(wait) = settings.sweep_schedule.until_next() {
                    tokio::time::sleep(wait).await;
                    sweep(&vault, settings.stale_upload_after).await;
                }
            })
        });
        let _rewriter = AbortOnDropHandle::new(tokio::spawn(key_table::run(
            vault.clone(),
            settings.rewrite_keys_every,
        )));
        while let Some(wait) = settings.schedule.until_next() {
            tokio::time::sleep(wait).await;
            run_pass(&vault, settings.budget).await;
        }
    })
}

/// One logged pass; failures are logged and left to the next pass. Each
/// pass also refreshes the `mediavault_media_stored` gauge, once it has
/// reaped: counted before, the gauge would hold the media the pass removes.
pub async fn run_pass(vault: &Vault, budget: Duration) -> Option<PassReport> {
    let started = Instant::now();
    let report = logged_pass(vault, budget, started).await;
    if let Ok(stored) = vault.media_stored().await {
        metrics::gauge!("mediavault_media_stored").set(stored as f64);
    }
    report
}

async fn logged_pass(vault: &Vault, budget: Duration, started: Instant) -> Option<PassReport> {
    let pass = async { reap_once(vault, vault.reaping_now(now_millis()).await?, budget).await };
    match pass.await {
        Ok(report) if report.skipped => {
            tracing::debug!("reaper pass skipped: another replica's pass is running");
            Some(report)
        }
        Ok(report) => {
            let seconds = started.elapsed().as_secs_f64();
            metrics::histogram!("mediavault_reaper_pass_duration_seconds").record(seconds);
            for (reason, count) in [
                ("expired", report.expired),
                ("deleted", report.deleted),
                ("abandoned", report.abandoned),
            ] {
                metrics::counter!("mediavault_reaped_total", "reason" => reason).increment(count);
            }
            metrics::counter!("mediavault_reaper_blob_delete_failures_total").increment(report.blob_failures);
            tracing::info!(
                expired = report.expired,
                deleted = report.deleted,
                abandoned = report.abandoned,
                blob_failures = report.blob_failures,
                seconds,
                "reaper pass"
            );
            Some(report)
        }
        Err(error) => {
            metrics::counter!("mediavault_reaper_pass_failures_total").increment(1);
            tracing::warn!(%error, "reaper pass failed; the next pass retries");
            None
        }
    }
}

/// One logged orphan sweep: blobs no row references, then incomplete
/// multipart uploads, each older than `older_than`. Either failing leaves
/// the other to run.
pub async fn sweep(vault: &Vault, older_than: Duration) -> Option<u64> {
    let removed = match vault.sweep_orphans(older_than).await {
        Ok(removed) => {
            tracing::info!(removed, "orphan sweep");
            Some(removed)
        }
        Err(error) => {
            tracing::warn!(%error, "orphan sweep failed");
            None
        }
    };
    match vault.abort_stale_multipart_uploads(older_than).await {
        Ok(aborted) => tracing::info!(aborted, "stale multipart uploads aborted"),
        Err(error) => tracing::warn!(%error, "aborting stale multipart uploads failed"),
    }
    removed
}

#[cfg(test)]
mod tests {
    use mediavault_test_support::services::{Pkcs11Fault, test_env};

    use super::*;

    /// Aborting the reaper's task ends its sweeps (and key-table rewrites)
    /// too: a stray blob left after the abort is still there seconds later,
    /// while a reaper left running sweeps it within the second.
    #[tokio::test]
    async fn aborting_the_reaper_ends_its_sweeps() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs");
        let vault = Vault::open(mediavault_storage::VaultConfig {
            database_url: format!("sqlite://{}/mv.db?mode=rwc", dir.path().display())
                .parse()
                .unwrap(),
            blobs: mediavault_storage::BlobConfig::local(blobs.to_str().unwrap()),
            keys: mediavault_storage::Keyring::parse(&mediavault_storage::Keyring::generate_line("k"))
                .unwrap(),
            defaults: mediavault_storage::Defaults::default(),
            stale_upload_after: Duration::from_secs(1),
        })
        .await
        .unwrap();
        vault.migrate().await.unwrap();
        let settings = ReaperSettings {
            schedule: "0 0 0 1 1 *".parse().unwrap(),
            sweep_schedule: "* * * * * *".parse().unwrap(),
            budget: Duration::from_secs(10),
            stale_upload_after: Duration::from_secs(1),
            rewrite_keys_every: Duration::from_secs(3600),
        };
        // Named as blob keys are: the sweep deletes nothing else.
        let stray = blobs
            .join("media")
            .join("5e")
            .join("5e0d4c3b2a19f8e7d6c5b4a39281706f");
        let leave_stray = || {
            std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
            std::fs::write(&stray, b"left by a crash").unwrap();
            let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
            std::fs::File::options()
                .write(true)
                .open(&stray)
                .unwrap()
                .set_modified(an_hour_ago)
                .unwrap();
        };

        let reaper = spawn(vault.clone(), settings.clone());
        tokio::time::sleep(Duration::from_millis(100)).await;
        reaper.abort();
        let _ = reaper.await;
        leave_stray();
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert!(stray.exists(), "swept after the reaper was aborted");

        let reaper = spawn(vault.clone(), settings);
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert!(!stray.exists(), "a running reaper sweeps it");
        reaper.abort();
        vault.close().await;
    }

    #[test]
    fn schedules_need_six_valid_fields() {
        assert!("0 * * * * *".parse::<Schedule>().is_ok());
        assert!("*/5 * * * * *".parse::<Schedule>().is_ok());
        assert!(
            "* * * * *"
                .parse::<Schedule>()
                .unwrap_err()
                .contains("six fields")
        );
        assert!("0 * * * * nonsense".parse::<Schedule>().is_err());
    }

    #[test]
    fn the_next_run_is_within_the_period() {
        let every_second: Schedule = "* * * * * *".parse().unwrap();
        assert!(every_second.until_next().unwrap() <= Duration::from_secs(1));
    }

    /// A key provider that stops answering during the epoch-key upkeep (a
    /// hung device: the test module's C_FindObjectsInit while its hang
    /// switch is on) holds a pass no longer than its budget (for the upkeep,
    /// at least `MIN_UPKEEP_BUDGET`): the pass ends, and with it the lock
    /// every replica's passes take, so the next one runs and, the token
    /// answering again, makes the day's key.
    #[tokio::test]
    async fn a_hung_key_provider_holds_a_pass_no_longer_than_its_budget() {
        use mediavault_storage::keys::{EpochSettings, Keyring, Pkcs11Keys, Pkcs11Settings, TokenSelector};
        let prefix = format!("rh{}-", std::process::id());
        let settings = Pkcs11Settings {
            module: test_env("MEDIAVAULT_TEST_PKCS11_FAULTY_MODULE").into(),
            token: TokenSelector::Label(test_env("MEDIAVAULT_TEST_PKCS11_TOKEN")),
            pin: test_env("MEDIAVAULT_TEST_PKCS11_PIN").into(),
            keys: Vec::new(),
            sessions: 2,
        };
        let epochs = EpochSettings {
            grace: Duration::ZERO,
            ahead_days: 0,
            ..EpochSettings::new(&prefix)
        };
        let keys = Keyring::pkcs11(
            Pkcs11Keys::open(settings.clone()).await.unwrap(),
            None,
            Some(epochs),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(mediavault_storage::VaultConfig {
            database_url: format!("sqlite://{}/mv.db?mode=rwc", dir.path().display())
                .parse()
                .unwrap(),
            blobs: mediavault_storage::BlobConfig::local("memory://"),
            keys,
            defaults: mediavault_storage::Defaults::default(),
            stale_upload_after: Duration::from_secs(3600),
        })
        .await
        .unwrap();
        vault.migrate().await.unwrap();
        let budget = Duration::from_secs(1);

        let hang = Pkcs11Fault::hung_device();
        let started = Instant::now();
        let report = tokio::time::timeout(Duration::from_secs(60), reap_once(&vault, now_millis(), budget))
            .await
            .expect("the pass never ended")
            .unwrap();
        assert!(
            started.elapsed() >= MIN_UPKEEP_BUDGET,
            "the pass ended before the upkeep's budget"
        );
        assert_eq!(report.epoch_keys_made, 0);
        drop(hang);
        let report = reap_once(&vault, now_millis(), budget).await.unwrap();
        assert!(!report.skipped, "the hung pass left the lock held");
        assert_eq!(report.epoch_keys_made, 1, "today's key, once the token answers");

        vault.close().await;
        let token = Pkcs11Keys::open(settings).await.unwrap();
        for label in token.labels().await.unwrap() {
            if label.starts_with(&prefix) {
                token.destroy(&label).await.unwrap();
            }
        }
    }
}
