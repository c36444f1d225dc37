//! Where a media row is in its life, the statement that completes it and
//! the one that ends it. The state names are written here and in the migrations' CHECK, nowhere
//! else: SQL takes them from `state_sql!`, Rust from `MediaState`.

/// The `state` column of a media row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub(crate) enum MediaState {
    /// The intent row: blob bytes may still be arriving.
    Uploading,
    /// Complete and readable until it expires.
    Ready,
    /// Shredded: its key is gone; the reaper removes its blob, then the row.
    Deleting,
}

/// A state as an SQL literal, for statements built at compile time (a
/// literal, not a bind, so that the planner can match partial indexes such
/// as `media_uploading_active`).
macro_rules! state_sql {
    (Uploading) => {
        "'uploading'"
    };
    (Ready) => {
        "'ready'"
    };
    (Deleting) => {
        "'deleting'"
    };
}

/// The crypto-shred of the media rows that `$rest` selects (a `WHERE`, or
/// `FROM … WHERE`, and any `RETURNING`): marked `deleting`, due to the
/// reaper at `$2`, deleted at `$1` (now) unless it was deleted before.
/// Binds `$1` and `$2` come first; the caller's own start at `$3`. Run it
/// in the transaction that deletes the rows' `media_keys`: that delete is
/// what makes the data unreadable.
macro_rules! shred_media {
    ($rest:expr) => {
        concat!(
            "UPDATE media SET state = ",
            state_sql!(Deleting),
            ", deleted_at = COALESCE(deleted_at, $1), due_at = $2 ",
            $rest
        )
    };
}

/// Lowers an uploading row's reservation to its size (binds: id, size,
/// the unused rest), if it still holds size + rest; the caller gives the
/// rest back to the app in the same transaction (`RELEASE`). The app's
/// usage is the sum of its rows' reservations before and after. SQLite's:
/// there every reservation commits synced, so the row holds what its
/// upload believes. (Postgres's reads what the row holds instead: see
/// `postgres::SETTLE_RESERVATION_SQL`.)
macro_rules! settle_reservation_sql {
    () => {
        concat!(
            "UPDATE media SET reserved_bytes = $2 WHERE id = $1 AND state = ",
            state_sql!(Uploading),
            " AND reserved_bytes = $2 + $3"
        )
    };
}

/// Binds `settle_reservation_sql!`'s `$1`-`$3` on `$query` for the
/// completion `$ready`.
macro_rules! bind_settlement {
    ($query:expr, $ready:expr) => {
        $query
            .bind($ready.id)
            .bind($ready.size_bytes)
            .bind($ready.unused_bytes)
    };
}

/// Turns an uploading row ready (binds: id, mime type, size, SHA-256,
/// expiry), unless its app was deleted. It leaves the app's row alone: its
/// reservation was settled before (`settle_reservation_sql!`).
macro_rules! mark_ready_sql {
    () => {
        concat!(
            "UPDATE media SET state = ",
            state_sql!(Ready),
            ", mime_type = $2, size_bytes = $3, sha256 = $4, expires_at = $5, due_at = $5 \
             WHERE id = $1 AND state = ",
            state_sql!(Uploading),
            " AND EXISTS (SELECT 1 FROM apps WHERE apps.id = media.app_id AND apps.deleted_at IS NULL)"
        )
    };
}

/// Binds `mark_ready_sql!`'s `$1`-`$5` on `$query` for the completion
/// `$ready`.
macro_rules! bind_ready {
    ($query:expr, $ready:expr) => {
        $query
            .bind($ready.id)
            .bind($ready.mime_type)
            .bind($ready.size_bytes)
            .bind($ready.sha256)
            .bind($ready.expires_at)
    };
}

/// Deletes one medium's wrapped key: the crypto-shred proper, run in the
/// transaction of its `shred_media!`.
pub(super) const DROP_KEY: &str = "DELETE FROM media_keys WHERE media_id = $1";

#[cfg(test)]
mod tests {
    use super::MediaState;

    /// The literals SQL is built with are the names sqlx reads and writes.
    #[tokio::test]
    async fn sql_literals_are_the_names_sqlx_decodes() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        for (sql, state) in [
            (concat!("SELECT ", state_sql!(Uploading)), MediaState::Uploading),
            (concat!("SELECT ", state_sql!(Ready)), MediaState::Ready),
            (concat!("SELECT ", state_sql!(Deleting)), MediaState::Deleting),
        ] {
            let read: MediaState = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
            assert_eq!(read, state);
            let bound: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("{sql} = $1")))
                .bind(state)
                .fetch_one(&pool)
                .await
                .unwrap();
            assert!(bound, "{sql}");
        }
    }
}
