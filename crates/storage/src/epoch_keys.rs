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
}

impl Vault {
    /// Makes the epoch keys of today through the days ahead, and destroys
    /// those whose epoch ended `crypto.epochs.grace` ago or more, as of
    /// `now`. Nothing to do without epoch keys.
    pub async fn keep_epoch_keys(&self, now: Millis) -> Result<EpochUpkeep, StoreError> {
        let keys = &self.inner.keys;
        let Some(epochs) = keys.epochs() else {
            return Ok(EpochUpkeep::default());
        };
        // One listing of the token serves both: keys made now are not over.
        let held = keys.labels().await?;
        let mut upkeep = EpochUpkeep {
            made: keys.make_epoch_keys_ahead(now, &held).await?,
            ..EpochUpkeep::default()
        };
        for label in held {
            let Some(epoch) = epochs.epoch_of(&label) else {
                continue;
            };
            if !epoch.is_over(now, epochs.grace) {
                continue;
            }
            if self.inner.meta.live_media_need(&label, now).await? {
                tracing::warn!(
                    label,
                    %epoch,
                    "live media (uploading, or finished after the day their key was chosen for) are \
                     wrapped under an epoch key whose day is over; keeping it until they expire"
                );
                upkeep.kept.push(label);
                continue;
            }
            keys.destroy(&label).await?;
            tracing::info!(label, %epoch, "epoch key destroyed");
            upkeep.destroyed.push(label);
        }
        Ok(upkeep)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::model::{KeyUse, NewApp};
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
}
