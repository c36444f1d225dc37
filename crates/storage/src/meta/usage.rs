//! Usage against per-app quotas: the counters on the app row (`used_bytes`,
//! `used_media`) and what each media row adds to them (`reserved_bytes`).
//!
//! A media row counts while it is `uploading` or `ready` and its
//! `reserved_bytes` is set: it adds one medium and those bytes. Every
//! statement that moves a row into or out of counting changes the counters
//! in the same transaction (or the same statement), so that usage is always
//! the sum over the rows that count:
//!
//! - an intent row reserves at once (`RESERVE`, a conditional UPDATE: the
//!   check and the claim are one step, whichever replica runs it);
//! - an upload that outgrows its reservation reserves more the same way;
//! - completion settles the reservation to the file's size;
//! - every way a row stops counting (a failed upload removed or abandoned,
//!   a delete, the reaper's claim, an app's deletion) releases what it holds.
//!
//! Locks: a transaction that changes media rows and the app row changes the
//! media rows first and the app row last (an intent row, new and unseen by
//! others, is the exception), so that no two transactions wait on each other.

/// Raises an app's usage by `$2` bytes and `$3` media (0 or 1), only if the
/// result stays within the app's limits, or the configured defaults `$4`
/// (bytes) and `$5` (media) where it sets none; no limit when neither is
/// set. Adding no medium never fails on the media limit, so an upload
/// admitted before a lowered limit may still grow. `$1`: the app.
///
/// Each bound is compared with the room left (`limit - used`), never with
/// `used + $2`: an app may take files up to 2^63 − 1 bytes, and a declared
/// length that large beside bytes already held would overflow the sum
/// (PostgreSQL answers an error; SQLite makes the counter a float). Such a
/// reservation is refused like any other that does not fit, and the upload
/// goes on reserving as its bytes arrive.
macro_rules! reserve_sql {
    () => {
        "UPDATE apps SET used_bytes = used_bytes + $2, used_media = used_media + $3 \
         WHERE id = $1 \
         AND $2 <= 9223372036854775807 - used_bytes \
         AND (COALESCE(max_bytes_stored, $4) IS NULL OR $2 <= COALESCE(max_bytes_stored, $4) - used_bytes) \
         AND ($3 = 0 OR COALESCE(max_media, $5) IS NULL OR $3 <= COALESCE(max_media, $5) - used_media)"
    };
}

pub(super) const RESERVE: &str = reserve_sql!();

/// Binds `reserve_sql!`'s `$1`–`$5` on `$query`: `$bytes` and `$media`
/// more for app `$app_id`, under the configured defaults `$quota`.
macro_rules! bind_reservation {
    ($query:expr, $app_id:expr, $bytes:expr, $media:expr, $quota:expr) => {
        $query
            .bind($app_id)
            .bind($bytes)
            .bind($media)
            .bind($quota.max_bytes_stored)
            .bind($quota.max_media)
    };
}

/// Lowers an app's usage by `$2` bytes and `$3` media. `$1`: the app.
pub(super) const RELEASE: &str =
    "UPDATE apps SET used_bytes = used_bytes - $2, used_media = used_media - $3 WHERE id = $1";

/// The configured default limits, for apps that set none; `None`: no limit.
/// They go with each reservation as binds: each replica applies its own
/// configuration, so replicas should agree on it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct QuotaDefaults {
    pub max_bytes_stored: Option<i64>,
    pub max_media: Option<i64>,
}

/// Releases what `$held` (an `Option<Held>`, of a row that has just stopped
/// counting) held, on `$tx`.
macro_rules! release_held {
    ($tx:expr, $held:expr) => {
        if let Some(super::usage::Held {
            app_id,
            reserved_bytes: Some(bytes),
        }) = $held
        {
            sqlx::query(super::usage::RELEASE)
                .bind(app_id)
                .bind(bytes)
                .bind(1_i64)
                .execute(&mut *$tx)
                .await?;
        }
    };
}

/// What a row that stopped counting held: its app, and its reservation
/// (`None`: the row never counted).
#[derive(sqlx::FromRow)]
pub(super) struct Held {
    pub app_id: crate::ids::AppId,
    pub reserved_bytes: Option<i64>,
}

/// What one reservation of more bytes for an upload came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Growth {
    Granted,
    /// The app's quota has no room for it.
    Refused,
    /// The row is no longer uploading: the reaper or an app deletion took it.
    Gone,
}
