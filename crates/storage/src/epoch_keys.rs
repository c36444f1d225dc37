//! The upkeep of epoch keys (`keys/epochs.rs`), which the reaper runs in
//! each pass under its cluster-wide lock: the keys of today and the days
//! ahead are made before uploads need them, and the key of every epoch
//! whose day and grace have passed is destroyed in the provider. From then
//! on the data keys wrapped under it, in the database and in every backup
//! of it, unwrap under no key there is.

use crate::error::StoreError;
use crate::model::Millis;
use crate::vault::Vault;

/// What one upkeep did, by label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochUpkeep {
    /// Keys made ahead of need.
    pub made: Vec<String>,
    /// Keys destroyed: their epoch is over.
    pub destroyed: Vec<String>,
    /// Keys whose epoch is over that live media still need, so kept until
    /// they expire: an upload still running, or one finished after its
    /// key's day (its key was chosen by the expiry at its start; finishing
    /// sets a later one) — or a clock set back, or rows changed by hand.
    pub kept: Vec<String>,
    /// Keys whose epoch is over that could not be destroyed (the provider
    /// failed to, or whether live media need them could not be told): kept
    /// until a later pass destroys them.
    pub failed: Vec<String>,
}

/// An upkeep that failed in part: what it did all the same, and the first
/// of its failures (each is logged).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct EpochUpkeepError {
    /// What was done, and the keys that could not be destroyed.
    pub upkeep: EpochUpkeep,
    pub error: StoreError,
}

impl Vault {
    /// Destroys the epoch keys whose epoch ended `crypto.epochs.grace` ago
    /// or more, and makes those of today through the days ahead, as of
    /// `now`. Nothing to do without epoch keys.
    ///
    /// Each key to destroy is tried whatever became of the others, and
    /// before any key is made: a key the provider fails to destroy, or a
    /// token that cannot make more (out of room, which destroying frees),
    /// holds back no other key past its deadline. Failures are returned
    /// once everything was tried, with what was done.
    pub async fn keep_epoch_keys(&self, now: Millis) -> Result<EpochUpkeep, EpochUpkeepError> {
        let keys = &self.inner.keys;
        let mut upkeep = EpochUpkeep::default();
        let Some(epochs) = keys.epochs() else {
            return Ok(upkeep);
        };
        // One listing of the token serves both: keys made now are not over.
        let held = match keys.labels().await {
            Ok(held) => held,
            Err(error) => {
                return Err(EpochUpkeepError {
                    upkeep,
                    error: error.into(),
                });
            }
        };
        let mut first_error = None;
        for label in &held {
            let Some(epoch) = epochs.epoch_of(label) else {
                continue;
            };
            if !epoch.is_over(now, epochs.grace) {
                continue;
            }
            // A key is destroyed only once it is known that no live media
            // need it; a failed check keeps it.
            let destroyed = match self.inner.meta.live_media_need(label, now).await {
                Ok(true) => {
                    tracing::warn!(
                        label,
                        %epoch,
                        "live media (uploading, or finished after the day their key was chosen for) are \
                         wrapped under an epoch key whose day is over; keeping it until they expire"
                    );
                    upkeep.kept.push(label.clone());
                    continue;
                }
                Ok(false) => keys.destroy(label).await.map_err(StoreError::from),
                Err(error) => Err(error),
            };
            match destroyed {
                Ok(()) => {
                    tracing::info!(label, %epoch, "epoch key destroyed");
                    upkeep.destroyed.push(label.clone());
                }
                Err(error) => {
                    tracing::warn!(label, %epoch, %error, "epoch key not destroyed; the next pass retries");
                    upkeep.failed.push(label.clone());
                    first_error.get_or_insert(error);
                }
            }
        }
        match keys.make_epoch_keys_ahead(now, &held).await {
            Ok(made) => upkeep.made = made,
            Err(error) => {
                tracing::warn!(%error, "epoch keys not made ahead; the next pass retries");
                first_error.get_or_insert(error.into());
            }
        }
        match first_error {
            Some(error) => Err(EpochUpkeepError { upkeep, error }),
            None => Ok(upkeep),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::error::StoreError;
    use crate::keys::{Epoch, KeyError};
    use crate::meta::Metadata;
    use crate::model::{KeyUse, NewApp, now_millis};
    use crate::testing::{on_each_dialect_with_epoch_keys, read_all};

    /// An upload still running when the day of the expiry it began with
    /// (whose key wraps its data key) and the grace have passed keeps that
    /// key: its row's expiry is set anew only when it finishes, and it
    /// finishes readable.
    #[tokio::test]
    async fn an_upload_running_past_its_keys_day_keeps_the_key() {
        on_each_dialect_with_epoch_keys(|vault| async move {
            let app = vault
                .create_app(NewApp {
                    name: "brief".into(),
                    capi: true,
                    retention: Some(Duration::from_secs(60)),
                    ..NewApp::default()
                })
                .await
                .unwrap();
            let mut upload = vault.begin_upload(&app, None).await.unwrap();
            upload.write(b"words that arrive slowly").await.unwrap();
            let [KeyUse { kek_id, .. }] = &vault.key_use().await.unwrap()[..] else {
                panic!("one data key");
            };
            let epoch = vault.epoch_settings().unwrap().epoch_of(kek_id).unwrap();

            let upkeep = vault.keep_epoch_keys(epoch.ends_at()).await.unwrap();
            let id = upload.finish("text/plain").await.unwrap();
            assert_eq!(read_all(&vault, &app, &id).await, b"words that arrive slowly");
            assert_eq!(upkeep.kept, std::slice::from_ref(kek_id), "{upkeep:?}");
        })
        .await;
    }

    /// A token that makes no key (in service, one out of room; here, a day
    /// past 9999, whose label `…+10000…` no key may have) keeps none past
    /// its day: the keys whose day is over are destroyed before any is made.
    #[tokio::test]
    async fn keys_over_are_destroyed_though_none_can_be_made() {
        on_each_dialect_with_epoch_keys(|vault| async move {
            let keys = &vault.inner.keys;
            let today = keys.make_epoch_keys_ahead(now_millis(), &[]).await.unwrap();
            assert_eq!(today.len(), 1, "{today:?}");
            let beyond = chrono::NaiveDate::from_ymd_opt(10_000, 1, 1)
                .unwrap()
                .and_hms_opt(12, 0, 0)
                .unwrap()
                .and_utc()
                .timestamp_millis();

            let failed = vault.keep_epoch_keys(beyond).await.unwrap_err();
            assert!(
                matches!(&failed.error, StoreError::Keys(KeyError::BadLabel(label)) if label.contains("+10000")),
                "{failed:?}"
            );
            assert_eq!(failed.upkeep.destroyed, today, "{failed:?}");
            assert!(!keys.labels().await.unwrap().contains(&today[0]));
        })
        .await;
    }

    /// A key the provider fails to destroy holds back no other: the upkeep
    /// goes on to the later days' keys and the keys ahead, then fails
    /// naming it. Here the key is gone when its turn comes: another
    /// installation sharing the label prefix destroyed it after the upkeep
    /// listed the token, while the check of the key waited on a lock of the
    /// keys' table (on PostgreSQL only, where a read waits so).
    #[tokio::test]
    async fn a_key_that_fails_to_go_holds_back_no_other() {
        on_each_dialect_with_epoch_keys(|vault| async move {
            let Metadata::Postgres { pool, .. } = &vault.inner.meta else {
                return;
            };
            let (keys, epochs) = (&vault.inner.keys, vault.epoch_settings().unwrap());
            let now = now_millis();
            let end_of_today = Epoch::of(now).ends_at();
            let [gone, today, tomorrow] = [0, now, end_of_today].map(|at| epochs.label(Epoch::of(at)));
            keys.create(&gone).await.unwrap();
            keys.create(&today).await.unwrap();

            let mut lock = pool.begin().await.unwrap();
            sqlx::query("LOCK TABLE media_keys IN ACCESS EXCLUSIVE MODE")
                .execute(&mut *lock)
                .await
                .unwrap();
            let upkeep = tokio::spawn({
                let vault = vault.clone();
                async move { vault.keep_epoch_keys(end_of_today).await }
            });
            let checking = async {
                while sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
                     AND wait_event_type = 'Lock' AND query LIKE '%FROM media_keys k JOIN media m%'",
                )
                .fetch_one(pool)
                .await
                .unwrap()
                    == 0
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(10), checking)
                .await
                .expect("the upkeep's check waits for the lock");
            keys.destroy(&gone).await.unwrap();
            lock.rollback().await.unwrap();

            let failed = upkeep.await.unwrap().unwrap_err();
            assert!(
                matches!(&failed.error, StoreError::Keys(KeyError::Unknown(label)) if *label == gone),
                "{failed:?}"
            );
            assert_eq!(failed.upkeep.failed, [gone], "{failed:?}");
            assert_eq!(failed.upkeep.destroyed, [today], "{failed:?}");
            assert_eq!(failed.upkeep.made, [tomorrow], "{failed:?}");
        })
        .await;
    }
}
