//! mediavault-storage: the domain core. `Vault` is its one public entry
//! point: apps and tokens, uploads (encrypt and stream to a blob, crash-safe
//! row ordering), and reads (verify and decrypt, by byte range).
//!
//! Only this crate talks to the metadata database (sqlx), the blob store
//! (object_store) and the ciphers (aes-gcm); the HTTP layer and the reaper
//! see only the types exported here.

mod apps;
mod blobs;
mod database_url;
mod delete_turns;
mod download;
mod epoch_keys;
mod error;
pub mod format;
mod ids;
mod key_table;
pub mod keys;
mod meta;
mod model;
mod multipart;
mod part_blocks;
pub mod policy;
mod reads;
mod reap;
mod rotation;
pub mod seal;
mod sniff;
mod store_room;
#[cfg(test)]
mod testing;
mod token_cache;
mod upload;
mod vault;

pub use apps::{MAX_RETENTION, token_id_of};
pub use blobs::{BlobConfig, PART_SIZE};
pub use database_url::{DatabaseUrl, UnsupportedDatabaseUrl};
pub use download::{PlaintextStream, StoredMedia};
pub use epoch_keys::{EpochUpkeep, EpochUpkeepError};
pub use error::{AdminError, AuthError, ReadError, StoreError, UploadError};
pub use ids::{AppId, MediaId, TokenId};
pub use keys::{ConfiguredKeys, Dek, EpochSettings, KeyError, KeyListError, Keyring};
pub use meta::ReaperLock;
pub use model::{
    App, AppStats, AppUpdate, IssuedToken, KeyUse, MediaInfo, Millis, NewApp, RewrapCounts, SchemaVersions,
    TokenInfo, TypeLimit, now_millis, to_datetime, type_limits_object,
};
pub use reap::{CLAIM_LEASE, ClaimedBatch, ReapCounts};
pub use upload::{RESERVATION_STEP, Upload};
pub use vault::{Defaults, Readiness, Vault, VaultConfig};
