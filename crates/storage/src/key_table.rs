//! What crypto-shredding leaves behind in the key table, and the rewrite that
//! bounds it. Shredding deletes a key's row, but Postgres never erases a
//! deleted or updated tuple: its bytes stay in the table's pages until the
//! page is pruned and reused, which may be never. Rewriting the table into a
//! new file drops them; the table is narrow, so that is cheap enough to do
//! on a schedule.

use std::time::Duration;

use crate::error::StoreError;
use crate::vault::Vault;

impl Vault {
    /// Rewrites the key table so that no page of it still holds a shredded
    /// (or re-wrapped) key; waits at most `lock_timeout` for its lock, and
    /// fails past it. Returns `false` when another replica's rewrite is
    /// running. On SQLite this does nothing: what a delete leaves in its
    /// file is the business of how the database is opened (`secure_delete`).
    pub async fn rewrite_key_table(&self, lock_timeout: Duration) -> Result<bool, StoreError> {
        self.inner.meta.rewrite_key_table(lock_timeout).await
    }
}
