//! Key rotation. New data keys are wrapped by the active key (the first in
//! `crypto.keys`); older keys stay configured while media wrapped by them
//! live. `rewrap` moves every live data key to the active key, after which
//! older keys can be dropped from the configuration; `check_keys` refuses to
//! serve with a keyring that lacks a key live media still need.

use crate::error::StoreError;
use crate::meta::Rewrapped;
use crate::model::{KeyUse, RewrapCounts};
use crate::vault::Vault;

impl Vault {
    /// The key that wraps new data keys.
    pub fn active_key_id(&self) -> &str {
        self.inner.keys.active_id()
    }

    /// How many live (not yet shredded) media each key wraps.
    pub async fn key_use(&self) -> Result<Vec<KeyUse>, StoreError> {
        Ok(self
            .inner
            .meta
            .key_use()
            .await?
            .into_iter()
            .map(|(kek_id, media)| KeyUse {
                kek_id,
                media: u64::try_from(media).unwrap_or(0),
            })
            .collect())
    }

    /// Fails, naming each key and how many media need it, when live media
    /// are wrapped by a key the configuration lacks: serving would answer
    /// 500 for every one of them.
    pub async fn check_keys(&self) -> Result<(), StoreError> {
        let configured: Vec<&str> = self.inner.keys.ids().collect();
        let missing: Vec<String> = self
            .key_use()
            .await?
            .into_iter()
            .filter(|used| !configured.contains(&used.kek_id.as_str()))
            .map(|used| format!("{:?} ({} media)", used.kek_id, used.media))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(StoreError::Config(format!(
            "crypto.keys lacks {} that stored media still need: {}. Add it back after the active \
             key; once `mediavault keys rewrap` has moved those media to the active key, it can go",
            if missing.len() == 1 { "a key" } else { "keys" },
            missing.join(", ")
        )))
    }

    /// Re-wraps every live data key not wrapped by the active key, `batch`
    /// rows per transaction. Safe while serving: a row is rewritten only if
    /// it still holds the wrapping that was read, and readers unwrap with
    /// whichever key their row names. Resumable: a second run picks up what
    /// the first did not reach. Keys that cannot be unwrapped are counted
    /// and left as they are.
    pub async fn rewrap(&self, batch: u32) -> Result<RewrapCounts, StoreError> {
        let keys = &self.inner.keys;
        let active = keys.active_id().to_owned();
        let mut counts = RewrapCounts::default();
        let mut after = String::new();
        loop {
            let rows = self
                .inner
                .meta
                .wrapped_by_others(&active, &after, batch.max(1))
                .await?;
            let Some(last) = rows.last() else { break };
            after = last.id.clone();
            let mut rewrapped = Vec::with_capacity(rows.len());
            for row in rows {
                match keys.unwrap(&row.id, &row.kek_id, &row.wrapped_dek) {
                    Ok(dek) => {
                        let wrapped = keys.wrap(&row.id, &dek);
                        rewrapped.push(Rewrapped {
                            id: row.id,
                            old_kek_id: row.kek_id,
                            new_kek_id: wrapped.kek_id,
                            wrapped_dek: wrapped.bytes,
                        });
                    }
                    Err(error) => {
                        tracing::warn!(media_id = %row.id, kek_id = %row.kek_id, %error, "cannot re-wrap");
                        counts.failed += 1;
                    }
                }
            }
            counts.rewrapped += self.inner.meta.replace_wrapped(&rewrapped).await?;
            tracing::info!(
                rewrapped = counts.rewrapped,
                failed = counts.failed,
                "re-wrapping"
            );
        }
        Ok(counts)
    }
}
