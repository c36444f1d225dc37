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
    /// Keys whose epoch is over that media which have not expired still
    /// need, so kept. Only a clock set back, or rows changed by hand, can
    /// give one.
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
            if self.inner.meta.unexpired_media_need(&label, now).await? {
                tracing::error!(
                    label,
                    %epoch,
                    "media that have not expired are wrapped under an epoch key whose day is over; keeping it"
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
