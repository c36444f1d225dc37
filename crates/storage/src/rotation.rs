//! Key rotation. New data keys are wrapped by the active key (the first in
//! `crypto.keys`); older keys stay configured while media wrapped by them
//! live. `rewrap` moves every live data key to the active key, after which
//! older keys can be dropped from the configuration; `check_keys` refuses to
//! serve with a keyring that lacks a key live media still need, and
//! `check_key_fingerprints` to run with a key that is not the one its id
//! stood for.

use std::collections::HashMap;

use crate::error::StoreError;
use crate::ids::MediaId;
use crate::keys::EpochSettings;
use crate::meta::Rewrapped;
use crate::model::{KeyUse, RewrapCounts, now_millis};
use crate::vault::Vault;

impl Vault {
    /// The key that wraps new data keys, unless epoch keys do.
    pub fn active_key_id(&self) -> Option<&str> {
        self.inner.keys.active_id()
    }

    /// The epoch keys' settings, when new data keys go under epoch keys.
    pub fn epoch_settings(&self) -> Option<&EpochSettings> {
        self.inner.keys.epochs()
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
    /// are wrapped by a key the configuration lacks (or, for an epoch key,
    /// the provider): serving would answer 500 for every one of them.
    /// Media that have expired but are not yet reaped do not count: none of
    /// them is read again, and the reaper destroys an epoch key they alone
    /// need (`keep_epoch_keys`, by the same rule) before it reaps them.
    pub async fn check_keys(&self) -> Result<(), StoreError> {
        let keys = &self.inner.keys;
        let configured = keys.ids();
        let held = match keys.epochs() {
            Some(_) => keys.labels().await?,
            None => Vec::new(),
        };
        let is_held_epoch_key = |id: &str| {
            keys.epochs().is_some_and(|epochs| epochs.epoch_of(id).is_some())
                && held.binary_search_by(|label| label.as_str().cmp(id)).is_ok()
        };
        let meta = &self.inner.meta;
        let now = now_millis();
        let mut unknown = Vec::new();
        for used in meta.keys_in_use().await? {
            if !configured.contains(&used.as_str())
                && !is_held_epoch_key(&used)
                && meta.live_media_need(&used, now).await?
            {
                unknown.push(used);
            }
        }
        if unknown.is_empty() {
            return Ok(());
        }
        // Counted only to say so: a count reads every key's index entries.
        let mut missing = Vec::with_capacity(unknown.len());
        for kek_id in unknown {
            let media = meta.key_use_of(&kek_id).await?;
            missing.push(format!("{kek_id:?} ({media} media)"));
        }
        Err(StoreError::Config(format!(
            "{} lacks {} that stored media still need: {}. Add it back after the active \
             key; once `mediavault keys rewrap` has moved those media to the active key, it can go",
            keys.source(),
            if missing.len() == 1 { "a key" } else { "keys" },
            missing.join(", ")
        )))
    }

    /// Records the fingerprint of each configured key that wraps data keys —
    /// the active one, and any that live media need — the first time it is
    /// seen; then fails, naming each id, when a configured key is not the
    /// key recorded under its id. A key in use before fingerprints were
    /// recorded is first checked against a data key it wrapped. With such a
    /// key every read of its media would fail (and new media would be
    /// wrapped by a key that reads none of the old).
    pub async fn check_key_fingerprints(&self) -> Result<(), StoreError> {
        let (meta, keys) = (&self.inner.meta, &self.inner.keys);
        let recorded: HashMap<String, String> = meta.key_fingerprints().await?.into_iter().collect();
        let in_use: Vec<String> = meta.keys_in_use().await?;
        let fingerprints = keys.fingerprints().await?;
        for (id, fingerprint) in &fingerprints {
            let used = in_use.contains(id);
            if recorded.contains_key(id) || !(used || keys.active_id() == Some(id.as_str())) {
                continue;
            }
            if let Some((media_id, wrapped)) = meta.one_wrapped(id).await? {
                match keys.unwrap(media_id.as_str(), id, &wrapped).await {
                    Ok(_) => {}
                    Err(error) if error.is_provider_failure() => return Err(error.into()),
                    Err(_) => {
                        return Err(StoreError::Config(format!(
                            "{}: key {id:?} does not unwrap the data keys stored under that id: it \
                             is other material than the key that wrapped them. Configure that key \
                             under {id:?}, or give this one a new id",
                            keys.source()
                        )));
                    }
                }
            }
            meta.record_fingerprint(id, fingerprint, now_millis()).await?;
        }
        // Read back: another process may have recorded a key first.
        let recorded: HashMap<String, String> = meta.key_fingerprints().await?.into_iter().collect();
        let wrong: Vec<String> = fingerprints
            .iter()
            .filter_map(|(id, fingerprint)| {
                let expected = recorded.get(id).filter(|expected| *expected != fingerprint)?;
                Some(format!("{id:?} (fingerprint {fingerprint}, recorded {expected})"))
            })
            .collect();
        if wrong.is_empty() {
            return Ok(());
        }
        Err(StoreError::Config(format!(
            "{}: {} not the key recorded under {}: {}. Configure the key each id stood \
             for (the media it wrapped need it), or give other material a new id",
            keys.source(),
            if wrong.len() == 1 { "a key is" } else { "keys are" },
            if wrong.len() == 1 { "its id" } else { "their ids" },
            wrong.join(", ")
        )))
    }

    /// Whether stored media, or a recorded fingerprint, need key `id`: a
    /// key that must never be replaced by new material under the same id.
    pub async fn key_needed(&self, id: &str) -> Result<bool, StoreError> {
        let meta = &self.inner.meta;
        Ok(meta
            .key_fingerprints()
            .await?
            .iter()
            .any(|(recorded, _)| recorded == id)
            || meta.keys_in_use().await?.iter().any(|used| used == id))
    }

    /// Re-wraps every live data key not wrapped by the active key (with
    /// epoch keys: not wrapped by an epoch key, which then becomes the key
    /// of its media's expiry day), `batch` rows per transaction. Safe while
    /// serving: a row is rewritten only if it still holds the wrapping that
    /// was read, and readers unwrap with whichever key their row names.
    /// Resumable: a second run picks up what the first did not reach. Keys
    /// that cannot be unwrapped are counted and left as they are.
    pub async fn rewrap(&self, batch: u32) -> Result<RewrapCounts, StoreError> {
        let keys = &self.inner.keys;
        let settled = keys.settled();
        let mut counts = RewrapCounts::default();
        let mut after = MediaId::default();
        loop {
            let rows = self
                .inner
                .meta
                .wrapped_unsettled(&settled, &after, batch.max(1))
                .await?;
            let Some(last) = rows.last() else { break };
            after = last.id.clone();
            let mut rewrapped = Vec::with_capacity(rows.len());
            for row in rows {
                match keys.unwrap(row.id.as_str(), &row.kek_id, &row.wrapped_dek).await {
                    Ok(dek) => {
                        let wrapped = keys.wrap(row.id.as_str(), row.expires_at, &dek).await?;
                        rewrapped.push(Rewrapped {
                            id: row.id,
                            old_kek_id: row.kek_id,
                            new_kek_id: wrapped.kek_id,
                            wrapped_dek: wrapped.bytes,
                        });
                    }
                    // Nothing wrong with the key: the provider is away.
                    Err(error) if error.is_provider_failure() => return Err(error.into()),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::model::{KeyUse, NewApp, now_millis};
    use crate::testing::{capi_app, on_each_dialect_with_epoch_keys};

    /// Media expired but not yet reaped need no key to start: the reaper
    /// destroys their epoch key once their day is over, even when it has
    /// not reaped them yet. Live media whose key is gone still stop it.
    #[tokio::test]
    async fn media_expired_but_not_reaped_need_no_key_at_start() {
        on_each_dialect_with_epoch_keys(|vault| async move {
            let brief = vault
                .create_app(NewApp {
                    name: "brief".into(),
                    capi: true,
                    retention: Some(Duration::from_secs(1)),
                    ..NewApp::default()
                })
                .await
                .unwrap();
            let mut upload = vault.begin_upload(&brief, None).await.unwrap();
            upload.write(b"gone soon").await.unwrap();
            upload.finish("text/plain").await.unwrap();
            let [KeyUse { kek_id: expired, .. }] = &vault.key_use().await.unwrap()[..] else {
                panic!("one data key");
            };
            let expired = expired.clone();
            tokio::time::sleep(Duration::from_millis(1500)).await;

            // Not reaped: its row and wrapped key stay; its key goes.
            let epoch = vault.epoch_settings().unwrap().epoch_of(&expired).unwrap();
            let upkeep = vault
                .keep_epoch_keys(epoch.ends_at().max(now_millis()))
                .await
                .unwrap();
            assert!(upkeep.destroyed.contains(&expired), "{upkeep:?}");
            vault.check_keys().await.unwrap();

            let lasting = capi_app(&vault).await;
            let mut upload = vault.begin_upload(&lasting, None).await.unwrap();
            upload.write(b"still here").await.unwrap();
            upload.finish("text/plain").await.unwrap();
            let live = vault
                .key_use()
                .await
                .unwrap()
                .into_iter()
                .find(|used| used.kek_id != expired)
                .unwrap()
                .kek_id;
            vault.inner.keys.destroy(&live).await.unwrap();
            let error = vault.check_keys().await.unwrap_err().to_string();
            assert!(
                error.contains(&format!("{live:?} (1 media)")) && !error.contains(&expired),
                "{error}"
            );
        })
        .await;
    }
}
