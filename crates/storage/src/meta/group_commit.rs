//! Group commit on SQLite: concurrent uploads' writes share a transaction,
//! and so one sync of the WAL.
//!
//! SQLite takes one writer at a time and, with `synchronous = FULL`, syncs
//! the WAL at every commit. Each upload commits twice (its intent, then its
//! completion), so uploads queued behind each other's fsyncs, and a writer
//! that found the lock taken slept in SQLite's busy handler (1, 2, 5, 10 ms
//! ...) however soon the lock came free. Here the upload path's writes run
//! one after another on one connection, each in its own savepoint (or as a
//! single statement, which writes all or nothing), inside a
//! transaction that stays open while more arrive; one task commits it, and
//! every write in it waits for that commit.
//!
//! That connection commits with `synchronous = NORMAL`: the commit appends
//! the batch to the WAL without syncing it, and the committer then syncs the
//! WAL file itself (`WalSync`) after letting go of the write lock, so the
//! next batch's statements run while the disk works. A write is answered
//! only once a sync that began after its commit has returned, so an
//! acknowledged write is exactly as durable as when it committed alone with
//! `FULL`; only the fsync is shared. (Another connection may read a batch
//! between its commit and its sync; a crash in that moment loses only writes
//! nobody was told of: the upload path's rows name media whose ids have not
//! been answered yet.)
//!
//! A write that asks only to be committed (`Answered::Committed`: an
//! upload's intent) is answered at its batch's commit, and a batch of such
//! writes alone is not synced at all. The WAL is appended to in order, so
//! the sync that answers the upload's completion makes its intent durable
//! too; a power cut before then loses an intent nobody was told of, as
//! `synchronous_commit = off` does for the same row on PostgreSQL.
//!
//! Writes queue on a fair lock in arrival order, and the committer queues on
//! the same lock: everything that arrived before it goes into the batch, and
//! whatever arrives while the batch commits and syncs forms the next one.
//! The process's other writes take a turn on the same lock between batches
//! (`turn`), on the main pool, which commits with `FULL`.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::sqlite::{SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};
use tokio::sync::{Mutex, MutexGuard, mpsc, watch};

use crate::error::StoreError;

/// Where one batch has got to, shared by every write in it (an error as its
/// message: every waiter gets its own copy).
#[derive(Clone, Debug)]
enum Outcome {
    Open,
    Committed,
    Synced,
    Failed(Arc<str>),
}

/// When a write is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Answered {
    /// Once a sync of the WAL that began after its batch's commit has
    /// returned: a power cut cannot take it.
    Synced,
    /// Once its batch has committed: a crash of the process cannot take it,
    /// a power cut before the next sync can. Only for a write whose loss
    /// loses nothing anyone was told of, and which a later synced write of
    /// the same caller depends on (an upload's intent, then its completion).
    Committed,
}

impl Outcome {
    /// Whether a write that is `answered` so can be told.
    fn answers(&self, answered: Answered) -> bool {
        match self {
            Outcome::Open => false,
            Outcome::Committed => answered == Answered::Committed,
            Outcome::Synced | Outcome::Failed(_) => true,
        }
    }
}

pub(crate) struct GroupCommit {
    open: Arc<Mutex<Option<Batch>>>,
    /// The batches' one connection, which commits without syncing.
    batches: SqlitePool,
    /// The last batch did not commit cleanly: its connection is closed
    /// before the next batch begins (see `GroupCommit::join`).
    renew: Arc<AtomicBool>,
    wal: Arc<WalSync>,
    /// Tells the committer a batch may be open; a full channel means it has
    /// already been told. Closing it (dropping this) ends the committer.
    wake: mpsc::Sender<()>,
}

/// The open transaction and what its writes wait on.
struct Batch {
    tx: Transaction<'static, Sqlite>,
    /// A write in the batch failed: SQLite may have rolled back the whole
    /// transaction with it (a full disk or an I/O error does), so the batch
    /// is rolled back and every write in it fails rather than trusting it.
    failed: bool,
    /// A write in the batch is answered only once synced.
    needs_sync: bool,
    outcome: watch::Sender<Outcome>,
}

impl GroupCommit {
    /// Starts the committer on the current runtime, for the database
    /// `pool` opens (the batches get a connection of their own to it).
    pub(super) async fn start(pool: &SqlitePool) -> Result<GroupCommit, StoreError> {
        let wal = Arc::new(WalSync::of(pool).await?);
        let options = (*pool.connect_options())
            .clone()
            .synchronous(SqliteSynchronous::Normal);
        // One connection, kept for the process's life; it is never shared,
        // so it needs no test before each batch (a round trip to SQLite's
        // thread).
        let batches = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .connect_lazy_with(options);
        let open = Arc::new(Mutex::new(None));
        let renew = Arc::new(AtomicBool::new(false));
        let (wake, woken) = mpsc::channel(1);
        tokio::spawn(commit_batches(open.clone(), woken, wal.clone(), renew.clone()));
        Ok(GroupCommit {
            open,
            batches,
            renew,
            wal,
            wake,
        })
    }

    /// Fails once a sync of the WAL has failed: no batch commits after that
    /// until a restart (see `WalSync::failed`).
    pub(super) fn check(&self) -> Result<(), StoreError> {
        if self.wal.has_failed() {
            return Err(StoreError::GroupCommit(WAL_SYNC_FAILED.into()));
        }
        Ok(())
    }

    /// Closes the batches' connection (the main pool is its owner's).
    pub(super) async fn close(&self) {
        self.batches.close().await;
    }

    /// Runs `statements` in the open batch (opening one if none is) and
    /// returns what they returned once the batch holding them has
    /// committed, and synced unless `answered` says otherwise; an error
    /// fails the batch. Unless they are one statement, they begin a
    /// savepoint of their own on the connection, so that writing nothing
    /// leaves the others' writes alone.
    pub(super) async fn write<T>(
        &self,
        answered: Answered,
        statements: impl AsyncFnOnce(&mut SqliteConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut write = self.join().await?;
        let result = statements(write.conn()).await;
        write.settle(result, answered).await
    }

    /// Joins the open batch, opening one if none is: the caller runs its
    /// statements on `Write::conn` (in a savepoint of its own, so that
    /// writing nothing leaves the others' writes alone) and hands the result
    /// to `Write::settle`. The batch is locked to the caller until then.
    async fn join(&self) -> Result<Write<'_>, StoreError> {
        let mut open = self.open.lock().await;
        // After a failed sync every write fails (see `WalSync::failed`), so
        // none may leave a row behind: it is refused before its statements
        // run, and no batch begins. A batch already open is rolled back by
        // `commit`.
        self.check()?;
        if open.is_none() {
            if self.renew.swap(false, Ordering::AcqRel) {
                // After a batch that failed, SQLite may have ended the
                // transaction under sqlx (a full disk or an I/O error rolls
                // it back), whose count of the connection's transactions is
                // then wrong for good: every BEGIN on it would be refused. A
                // new connection starts clean.
                if let Ok(connection) = self.batches.acquire().await {
                    let _ = connection.close().await;
                }
            }
            // IMMEDIATE: take the write lock now, not at the first write,
            // which could then fail at once if another connection wrote.
            let tx = self
                .batches
                .begin_with("BEGIN IMMEDIATE")
                .await
                .inspect_err(|_| self.renew.store(true, Ordering::Release))?;
            *open = Some(Batch {
                tx,
                failed: false,
                needs_sync: false,
                outcome: watch::channel(Outcome::Open).0,
            });
        }
        Ok(Write {
            batch: open,
            wake: &self.wake,
        })
    }

    /// A turn for a write that runs on a pool connection of its own (a
    /// delete, the reaper, an operator's change): the open batch, if any, is
    /// committed first, and no batch opens until the turn ends. Every writer
    /// of the process thus queues in one fair line; left to SQLite's busy
    /// handler, which sleeps and retries, such a write found the lock taken
    /// by batch after batch (deletes under a full upload load took 1.4 s at
    /// the median, up to the 5 s busy timeout).
    pub(crate) async fn turn(&self) -> Turn<'_> {
        let mut open = self.open.lock().await;
        if let Some(batch) = open.take() {
            // On a task of its own: a caller that goes away mid-commit
            // must not leave the batch's writes without an answer.
            let (wal, renew) = (self.wal.clone(), self.renew.clone());
            let _ = tokio::spawn(async move { commit_and_sync(batch, &wal, &renew).await }).await;
        }
        Turn { _open: open }
    }
}

/// One write's turn on the open batch.
struct Write<'a> {
    batch: MutexGuard<'a, Option<Batch>>,
    wake: &'a mpsc::Sender<()>,
}

impl Write<'_> {
    /// The batch's connection, inside its open transaction.
    fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.open_batch().tx
    }

    /// Ends this write's turn with what its statements returned: an error
    /// fails the batch at once; a value is returned once the batch holding
    /// it has got as far as `answered` asks.
    async fn settle<T>(mut self, result: Result<T, StoreError>, answered: Answered) -> Result<T, StoreError> {
        let batch = self.open_batch();
        if result.is_err() {
            batch.failed = true;
        }
        batch.needs_sync |= answered == Answered::Synced;
        let mut outcome = batch.outcome.subscribe();
        drop(self);
        let value = result?;
        let reached = outcome
            .wait_for(|outcome| outcome.answers(answered))
            .await
            .map(|outcome| outcome.clone());
        match reached {
            Ok(Outcome::Failed(message)) => Err(StoreError::GroupCommit(message.to_string())),
            Ok(_) => Ok(value),
            Err(_) => Err(StoreError::GroupCommit("the committer stopped".into())),
        }
    }

    fn open_batch(&mut self) -> &mut Batch {
        self.batch.as_mut().expect("a write holds an open batch")
    }
}

impl Drop for Write<'_> {
    /// However the turn ends (settled, or the caller gone mid-way, whose
    /// savepoint sqlx then rolls back), the batch must be committed.
    fn drop(&mut self) {
        let _ = self.wake.try_send(());
    }
}

/// A write's turn of its own, between batches; see `GroupCommit::turn`.
pub(crate) struct Turn<'a> {
    _open: MutexGuard<'a, Option<Batch>>,
}

/// Commits whatever batch is open each time a write ends its turn, until
/// the `GroupCommit` is dropped. The lock is let go as soon as the batch has
/// committed, so that the next batch fills while this one's WAL syncs; the
/// next commit waits for this sync, so syncs run one at a time.
async fn commit_batches(
    open: Arc<Mutex<Option<Batch>>>,
    mut woken: mpsc::Receiver<()>,
    wal: Arc<WalSync>,
    renew: Arc<AtomicBool>,
) {
    while woken.recv().await.is_some() {
        let batch = open.lock().await.take();
        if let Some(batch) = batch {
            commit_and_sync(batch, &wal, &renew).await;
        }
    }
}

/// Commits a batch and answers its writes, once the batch before it has
/// been answered. A batch `turn` commits must not commit while the last
/// one's sync runs: were that sync to fail, this batch, committed, would be
/// answered as failed (no later sync is trusted), and a client told its
/// upload or delete failed would find it done. Waiting, it sees the failure
/// and rolls back.
async fn commit_and_sync(batch: Batch, wal: &Arc<WalSync>, renew: &AtomicBool) {
    let _in_order = wal.one_at_a_time.lock().await;
    commit(batch, wal, renew).await.finish(wal).await;
}

/// A batch committed (or not) but not yet synced, with its writes' answer.
struct Committed {
    result: Result<(), Arc<str>>,
    needs_sync: bool,
    outcome: watch::Sender<Outcome>,
}

/// Commits a batch (rolls it back if a write in it failed, or a sync of the
/// WAL has). Its writes are told how that went only by `Committed::finish`.
/// A batch that does not commit cleanly sets `renew`.
async fn commit(batch: Batch, wal: &WalSync, renew: &AtomicBool) -> Committed {
    let result = if wal.has_failed() {
        // Its writes will be told they failed, so none may be left
        // committed. `join` refuses writes once the sync has failed, but
        // this batch may have begun before: the next batch fills while one
        // syncs.
        let _ = batch.tx.rollback().await;
        Err(Arc::from(WAL_SYNC_FAILED))
    } else if batch.failed {
        let _ = batch.tx.rollback().await;
        Err(Arc::from(
            "rolled back with a write in the same batch that failed",
        ))
    } else {
        batch.tx.commit().await.map_err(|e| Arc::from(e.to_string()))
    };
    if result.is_err() {
        renew.store(true, Ordering::Release);
    }
    Committed {
        result,
        needs_sync: batch.needs_sync,
        outcome: batch.outcome,
    }
}

impl Committed {
    /// Answers the writes that asked only for the commit, then, if any
    /// write asked for more, syncs the WAL and answers the rest.
    async fn finish(self, wal: &Arc<WalSync>) {
        let outcome = match self.result {
            // After a failed sync nothing is trusted, synced or not (a
            // batch that `turn` committed while another one's sync failed).
            Ok(()) if wal.has_failed() => Outcome::Failed(Arc::from(WAL_SYNC_FAILED)),
            Ok(()) if !self.needs_sync => Outcome::Committed,
            Ok(()) => {
                self.outcome.send_replace(Outcome::Committed);
                #[cfg(test)]
                let _gate = wal.gate.acquire().await;
                let wal = wal.clone();
                match tokio::task::spawn_blocking(move || wal.sync()).await {
                    Ok(Ok(())) => Outcome::Synced,
                    Ok(Err(error)) => {
                        Outcome::Failed(Arc::from(format!("the WAL could not be synced: {error}")))
                    }
                    Err(error) => Outcome::Failed(Arc::from(format!("the WAL sync stopped: {error}"))),
                }
            }
            Err(error) => Outcome::Failed(error),
        };
        if let Outcome::Failed(error) = &outcome {
            tracing::warn!(%error, "SQLite group commit failed; every write in it fails");
        }
        self.outcome.send_replace(outcome);
    }
}

/// Why every batch fails after a failed sync of the WAL.
const WAL_SYNC_FAILED: &str =
    "an earlier sync of SQLite's WAL failed; check the disk, then restart the service";

/// Syncs the database's WAL file, which the batches' connection appends to
/// without syncing.
struct WalSync {
    /// None for a database in memory, which has nothing to sync.
    path: Option<PathBuf>,
    /// The WAL file (device, inode) whose directory entry has been synced.
    /// SQLite syncs the directory the first time it syncs a new WAL; so
    /// does this, once per file, since a WAL that a power cut unlinks takes
    /// its frames with it.
    entry_synced: std::sync::Mutex<Option<(u64, u64)>>,
    /// A sync failed: no later one is trusted. Linux may drop the pages it
    /// failed to write and report the next sync clean (why PostgreSQL stops
    /// on such a failure), and SQLite's recovery drops every frame after a
    /// missing one, so a later "synced" batch could still be lost. Every
    /// batch fails from then on, until a restart has SQLite recover the WAL
    /// from what the disk holds.
    failed: std::sync::atomic::AtomicBool,
    /// Held from a batch's commit to its answer (`commit_and_sync`).
    one_at_a_time: Mutex<()>,
    /// Makes the next sync fail, for tests.
    #[cfg(test)]
    fail_next: std::sync::atomic::AtomicBool,
    /// Each sync takes this gate's one permit; a test holds it to keep
    /// syncs waiting.
    #[cfg(test)]
    gate: tokio::sync::Semaphore,
    /// The syncs made, for tests to count.
    #[cfg(test)]
    syncs: std::sync::atomic::AtomicU64,
}

impl WalSync {
    /// The WAL of the database `pool` opens (its main file's path and
    /// `-wal`, as SQLite names it).
    async fn of(pool: &SqlitePool) -> Result<WalSync, StoreError> {
        let (_, _, file): (i64, String, String) =
            sqlx::query_as("PRAGMA database_list").fetch_one(pool).await?;
        Ok(WalSync {
            path: (!file.is_empty()).then(|| PathBuf::from(format!("{file}-wal"))),
            entry_synced: std::sync::Mutex::new(None),
            failed: std::sync::atomic::AtomicBool::new(false),
            one_at_a_time: Mutex::new(()),
            #[cfg(test)]
            fail_next: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            gate: tokio::sync::Semaphore::new(1),
            #[cfg(test)]
            syncs: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Whether a sync has failed (see `failed`).
    fn has_failed(&self) -> bool {
        self.failed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Makes every frame appended so far durable: a sync of the file's
    /// data through any descriptor covers every write to it. The file is
    /// opened each time, since SQLite may delete and recreate it. A file
    /// that cannot be opened (no descriptor left, say) fails only this
    /// batch: its frames are still in the page cache for the next sync.
    fn sync(&self) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        let Some(path) = &self.path else {
            return Ok(());
        };
        if self.has_failed() {
            return Err(std::io::Error::other(WAL_SYNC_FAILED));
        }
        let trusted = |synced: std::io::Result<()>| {
            #[cfg(test)]
            let synced = match self.fail_next.swap(false, Ordering::AcqRel) {
                true => Err(std::io::Error::other("failure made by a test")),
                false => synced,
            };
            if let Err(error) = &synced {
                self.failed.store(true, Ordering::Release);
                tracing::error!(%error, "syncing SQLite's WAL failed; every upload fails until the service restarts");
            }
            synced
        };
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            // SQLite deletes the WAL only when its last connection closes,
            // after copying every frame into the database file and syncing
            // it: nothing is left to sync.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        trusted(file.sync_data())?;
        #[cfg(test)]
        self.syncs.fetch_add(1, Ordering::Relaxed);
        let metadata = file.metadata()?;
        let id = (metadata.dev(), metadata.ino());
        let mut entry_synced = self.entry_synced.lock().unwrap_or_else(|e| e.into_inner());
        if *entry_synced != Some(id) {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                trusted(std::fs::File::open(dir)?.sync_all())?;
            }
            *entry_synced = Some(id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::Connection;
    use sqlx::sqlite::SqlitePoolOptions;

    use super::*;

    /// A group commit on a fresh database with one table, and a second pool
    /// on the same file that sees only what has been committed.
    async fn setup(dir: &tempfile::TempDir) -> (Arc<GroupCommit>, SqlitePool) {
        let (group, outside) = start_on(dir).await;
        sqlx::query("CREATE TABLE t (x INTEGER PRIMARY KEY)")
            .execute(&outside)
            .await
            .unwrap();
        (group, outside)
    }

    /// A group commit on the database in `dir` (the process's main pool
    /// made as the service makes it), and a second pool on the same file.
    async fn start_on(dir: &tempfile::TempDir) -> (Arc<GroupCommit>, SqlitePool) {
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let pool = super::super::sqlite::connect(&url).await.unwrap();
        let outside = SqlitePoolOptions::new().connect(&url).await.unwrap();
        (Arc::new(GroupCommit::start(&pool).await.unwrap()), outside)
    }

    /// Inserts `x` in its own savepoint; an `x` already there is a write
    /// that writes nothing (`Ok(false)`), as a taken media id is.
    async fn insert(conn: &mut SqliteConnection, x: i64) -> Result<bool, StoreError> {
        let mut tx = conn.begin().await?;
        match sqlx::query("INSERT INTO t (x) VALUES ($1)")
            .bind(x)
            .execute(&mut *tx)
            .await
        {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn write(group: &GroupCommit, x: i64) -> Result<bool, StoreError> {
        group
            .write(Answered::Synced, async |conn| insert(conn, x).await)
            .await
    }

    async fn committed(outside: &SqlitePool, x: i64) -> bool {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM t WHERE x = $1)")
            .bind(x)
            .fetch_one(outside)
            .await
            .unwrap()
    }

    /// Writes at the same time share commits and syncs of the WAL, and each
    /// is committed (seen from another connection) by the time it is
    /// answered; the same writes one after another take a sync each.
    #[tokio::test]
    async fn concurrent_writes_share_commits_and_each_is_committed_when_answered() {
        let dir = tempfile::tempdir().unwrap();
        let (group, outside) = setup(&dir).await;

        let syncs = || group.wal.syncs.load(std::sync::atomic::Ordering::Relaxed);
        let before = syncs();
        for x in 0..64 {
            assert!(write(&group, x).await.unwrap());
        }
        let one_by_one = syncs() - before;
        assert_eq!(one_by_one, 64, "64 writes one by one took {one_by_one} syncs");

        let before = syncs();
        let tasks: Vec<_> = (100..164)
            .map(|x| {
                let (group, outside) = (group.clone(), outside.clone());
                tokio::spawn(async move {
                    assert!(write(&group, x).await.unwrap());
                    assert!(committed(&outside, x).await, "{x} answered before its commit");
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let together = syncs() - before;
        assert!(together < 16, "64 writes at once took {together} syncs");
    }

    /// Writes `x` (answered once synced) on a task of its own, which it
    /// returns with what tells when the write's statements have run.
    fn write_telling_when_run(
        group: &Arc<GroupCommit>,
        x: i64,
    ) -> (
        tokio::task::JoinHandle<Result<bool, StoreError>>,
        tokio::sync::oneshot::Receiver<()>,
    ) {
        let (ran, statements_ran) = tokio::sync::oneshot::channel();
        let group = group.clone();
        let writing = tokio::spawn(async move {
            group
                .write(Answered::Synced, async |conn| {
                    let inserted = insert(conn, x).await;
                    let _ = ran.send(());
                    inserted
                })
                .await
        });
        (writing, statements_ran)
    }

    /// Writes `x` on a task of its own, which it returns once another
    /// connection sees `x` committed (syncs held, it is not answered yet).
    async fn committed_unsynced(
        group: &Arc<GroupCommit>,
        outside: &SqlitePool,
        x: i64,
    ) -> tokio::task::JoinHandle<Result<bool, StoreError>> {
        let writing = tokio::spawn({
            let group = group.clone();
            async move { write(&group, x).await }
        });
        for _ in 0..100 {
            if committed(outside, x).await {
                return writing;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{x} was never committed");
    }

    /// A committed batch's writes are answered only once the WAL has been
    /// synced after the commit: the batches' connection commits without
    /// syncing, so answering at the commit would acknowledge writes a power
    /// cut could still take.
    #[tokio::test]
    async fn a_write_is_answered_only_once_the_wal_is_synced_after_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (group, outside) = setup(&dir).await;
        let syncs_held = group.wal.gate.acquire().await.unwrap();
        let waiting = committed_unsynced(&group, &outside, 7).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !waiting.is_finished(),
            "a write was answered before the WAL was synced"
        );
        drop(syncs_held);
        assert!(waiting.await.unwrap().unwrap());
    }

    /// A write that asks only for its commit (an upload's intent) is
    /// answered while syncs are held, and a batch of such writes alone makes
    /// no sync; the next synced write's sync covers them.
    #[tokio::test]
    async fn a_write_answered_at_its_commit_waits_for_no_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (group, outside) = setup(&dir).await;
        let syncs = || group.wal.syncs.load(std::sync::atomic::Ordering::Relaxed);
        let before = syncs();
        let syncs_held = group.wal.gate.acquire().await.unwrap();
        let committed_only = group.write(Answered::Committed, async |conn| insert(conn, 1).await);
        assert!(
            tokio::time::timeout(Duration::from_secs(5), committed_only)
                .await
                .expect("a write answered at its commit waited for a sync")
                .unwrap()
        );
        assert!(committed(&outside, 1).await);
        drop(syncs_held);
        assert_eq!(syncs(), before, "a batch of unsynced writes alone was synced");
        assert!(write(&group, 2).await.unwrap());
        assert_eq!(syncs(), before + 1);
    }

    /// The write lock is let go once a batch commits, so the next batch's
    /// statements run while the first one's WAL syncs.
    #[tokio::test]
    async fn the_next_batch_runs_its_statements_while_one_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let (group, outside) = setup(&dir).await;
        let syncs_held = group.wal.gate.acquire().await.unwrap();
        let first = committed_unsynced(&group, &outside, 1).await;
        let (ran, statements_ran) = tokio::sync::oneshot::channel();
        let second = tokio::spawn({
            let group = group.clone();
            async move {
                group
                    .write(Answered::Synced, async |conn| {
                        let inserted = insert(conn, 2).await;
                        let _ = ran.send(());
                        inserted
                    })
                    .await
            }
        });
        tokio::time::timeout(Duration::from_secs(5), statements_ran)
            .await
            .expect("the next batch waited for the first one's sync")
            .unwrap();
        assert!(!first.is_finished());
        drop(syncs_held);
        assert!(first.await.unwrap().unwrap());
        assert!(second.await.unwrap().unwrap());
        assert!(committed(&outside, 2).await);
    }

    /// After a sync of the WAL fails, every later batch fails too, though
    /// its own sync would succeed: the failed one may have lost frames that
    /// later ones build on. Those batches write nothing, neither the one
    /// that filled while the sync failed nor any begun after: a write
    /// answered with an error leaves no row behind.
    #[tokio::test]
    async fn after_a_failed_sync_every_batch_fails_until_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (group, outside) = setup(&dir).await;
        assert!(write(&group, 1).await.unwrap());
        assert!(group.check().is_ok());
        group
            .wal
            .fail_next
            .store(true, std::sync::atomic::Ordering::Release);
        // 2's batch commits, then its sync fails (2 stays committed: the
        // failure comes after the commit); 3 runs its statements in the
        // next batch while that sync waits.
        let syncs_held = group.wal.gate.acquire().await.unwrap();
        let synced_last = committed_unsynced(&group, &outside, 2).await;
        let (during, statements_ran) = write_telling_when_run(&group, 3);
        tokio::time::timeout(Duration::from_secs(5), statements_ran)
            .await
            .expect("the next batch waited for the failing sync")
            .unwrap();
        drop(syncs_held);
        for failed in [synced_last.await.unwrap(), during.await.unwrap()] {
            assert!(
                matches!(&failed, Err(StoreError::GroupCommit(_))),
                "a write in or after a failed sync answered {failed:?}"
            );
        }
        let ran = AtomicBool::new(false);
        for (x, answered) in [(4, Answered::Synced), (5, Answered::Committed)] {
            let failed = group
                .write(answered, async |conn| {
                    ran.store(true, Ordering::Relaxed);
                    insert(conn, x).await
                })
                .await;
            assert!(
                matches!(&failed, Err(StoreError::GroupCommit(_))),
                "a write after a failed sync answered {failed:?}"
            );
        }
        for x in 3..=5 {
            assert!(
                !committed(&outside, x).await,
                "{x} was answered with an error after a failed sync, yet committed"
            );
        }
        assert!(
            !ran.into_inner(),
            "a write after a failed sync ran its statements"
        );
        assert!(group.check().is_err(), "the failure is not reported");
        drop(group);
        let (restarted, _) = start_on(&dir).await;
        assert!(write(&restarted, 6).await.unwrap());
    }

    /// A write of its own (`turn`) commits the open batch. While the last
    /// batch's sync runs, it waits for that sync: when it fails, the open
    /// batch is rolled back and its writes fail, as `commit_batches` would
    /// have it. (Committed at once, the batch was then answered as failed:
    /// its rows stayed, and their clients were told they had not.)
    #[tokio::test]
    async fn a_turn_taken_while_a_sync_fails_leaves_no_failed_write_committed() {
        let dir = tempfile::tempdir().unwrap();
        let (group, outside) = setup(&dir).await;
        group
            .wal
            .fail_next
            .store(true, std::sync::atomic::Ordering::Release);
        let syncs_held = group.wal.gate.acquire().await.unwrap();
        let failing = committed_unsynced(&group, &outside, 1).await;
        let (during, statements_ran) = write_telling_when_run(&group, 2);
        statements_ran.await.unwrap();
        let turn = tokio::spawn({
            let group = group.clone();
            async move {
                drop(group.turn().await);
            }
        });
        // The turn has taken the open batch, and holds the line.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(group.open.try_lock().is_err(), "the turn did not begin");
        drop(syncs_held);
        turn.await.unwrap();
        for failed in [failing.await.unwrap(), during.await.unwrap()] {
            assert!(
                matches!(&failed, Err(StoreError::GroupCommit(_))),
                "a write in or after a failed sync answered {failed:?}"
            );
        }
        assert!(
            !committed(&outside, 2).await,
            "2 was answered with an error, yet committed by the turn"
        );
    }

    /// A database in memory (`sqlite::memory:`) has no WAL to sync; the
    /// batches' connection writes to the same database as the main pool.
    #[tokio::test]
    async fn a_database_in_memory_takes_writes_without_a_wal() {
        let pool = super::super::sqlite::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        let group = GroupCommit::start(&pool).await.unwrap();
        assert!(group.wal.path.is_none());
        assert!(write(&group, 5).await.unwrap());
        assert!(committed(&pool, 5).await);
    }

    /// A write that writes nothing (its savepoint rolled back, as when a
    /// quota has no room or an id is taken) leaves the other writes of its
    /// batch committed.
    #[tokio::test]
    async fn a_write_that_writes_nothing_leaves_its_batch_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (group, outside) = setup(&dir).await;
        assert!(write(&group, 7).await.unwrap());
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let group = group.clone();
                // Every other write repeats 7, which is taken.
                let x = if i % 2 == 0 { 7 } else { 100 + i };
                tokio::spawn(async move { (x, write(&group, x).await.unwrap()) })
            })
            .collect();
        for task in tasks {
            let (x, wrote) = task.await.unwrap();
            assert_eq!(wrote, x != 7);
            assert!(committed(&outside, x).await);
        }
    }

    /// A write whose statements fail fails its whole batch (SQLite may have
    /// rolled the transaction back under it), so nothing half-done is
    /// committed or acknowledged; the next batch starts clean.
    #[tokio::test]
    async fn a_failed_write_fails_its_batch_and_the_next_one_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        let (group, outside) = setup(&dir).await;

        let mut failing = group.join().await.unwrap();
        sqlx::query("INSERT INTO t (x) VALUES (1)")
            .execute(failing.conn())
            .await
            .unwrap();
        // The second write queues for the batch behind the first.
        let second = tokio::spawn({
            let group = group.clone();
            async move { write(&group, 2).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let error = sqlx::query("INSERT INTO no_such_table VALUES (1)")
            .execute(failing.conn())
            .await
            .map(|_| ())
            .map_err(StoreError::from);
        assert!(failing.settle(error, Answered::Synced).await.is_err());
        let second = second.await.unwrap();
        assert!(
            matches!(second, Err(StoreError::GroupCommit(_))),
            "a write in a failed batch answered {second:?}"
        );
        assert!(!committed(&outside, 1).await);
        assert!(!committed(&outside, 2).await);

        assert!(write(&group, 3).await.unwrap());
        assert!(committed(&outside, 3).await);
    }

    /// A write that meets a full disk (here: the batches' connection may not
    /// grow the file past `max_page_count`) fails its batch, and SQLite may
    /// roll the whole transaction back under sqlx, which then no longer
    /// knows the connection's state. The next batch gets a connection of
    /// its own and commits; before, every later batch failed to begin.
    #[tokio::test]
    async fn a_batch_a_full_disk_rolled_back_leaves_the_next_one_clean() {
        let dir = tempfile::tempdir().unwrap();
        let (group, outside) = setup(&dir).await;
        sqlx::query("CREATE TABLE big (b BLOB)")
            .execute(&outside)
            .await
            .unwrap();
        let full = group
            .write(Answered::Synced, async |conn| {
                let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
                    .fetch_one(&mut *conn)
                    .await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PRAGMA max_page_count = {pages}")))
                    .execute(&mut *conn)
                    .await?;
                let mut tx = conn.begin().await?;
                sqlx::query("INSERT INTO big VALUES (zeroblob(1000000))")
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            })
            .await;
        assert!(full.is_err(), "{full:?}");
        // The failed batch ends (a turn commits, here rolls back, what is open).
        drop(group.turn().await);
        for x in 1..=3 {
            let written = write(&group, x).await;
            assert!(
                matches!(written, Ok(true)),
                "write {x} after the full disk: {written:?}"
            );
            assert!(committed(&outside, x).await);
        }
    }

    /// A write whose caller goes away mid-way (a client that hangs up)
    /// leaves nothing of its own, holds no lock, and the writes with it in
    /// the batch still commit.
    #[tokio::test]
    async fn a_write_abandoned_mid_way_leaves_nothing_and_blocks_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let (group, outside) = setup(&dir).await;
        let abandoned = tokio::spawn({
            let group = group.clone();
            async move {
                let mut write = group.join().await.unwrap();
                let mut tx = write.conn().begin().await.unwrap();
                sqlx::query("INSERT INTO t (x) VALUES (1)")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                std::future::pending::<()>().await;
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let other = tokio::spawn({
            let group = group.clone();
            async move { write(&group, 2).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        abandoned.abort();
        let _ = abandoned.await;
        assert!(
            tokio::time::timeout(Duration::from_secs(5), other)
                .await
                .expect("a write waited on an abandoned one")
                .unwrap()
                .unwrap()
        );
        assert!(committed(&outside, 2).await);
        assert!(!committed(&outside, 1).await);
    }

    /// A write on a pool connection of its own takes a turn between
    /// batches, so a stream of batches cannot starve it: left to SQLite's
    /// busy handler, such a write waited for seconds, up to the busy timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_of_its_own_gets_a_turn_between_batches() {
        use std::sync::atomic::{AtomicBool, Ordering};

        let dir = tempfile::tempdir().unwrap();
        let (group, outside) = setup(&dir).await;
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..32_i64)
            .map(|w| {
                let (group, stop) = (group.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut x = 1_000_000 * (w + 1);
                    while !stop.load(Ordering::Relaxed) {
                        // Each write holds the batch a millisecond, as a
                        // busy server's do, so batches follow each other
                        // with hardly a gap.
                        let mut turn = group.join().await.unwrap();
                        let result = insert(turn.conn(), x).await;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        assert!(turn.settle(result, Answered::Synced).await.unwrap());
                        x += 1;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut slowest = Duration::ZERO;
        for x in 0..20 {
            let started = std::time::Instant::now();
            let _turn = group.turn().await;
            sqlx::query("INSERT INTO t (x) VALUES ($1)")
                .bind(x)
                .execute(&outside)
                .await
                .unwrap();
            slowest = slowest.max(started.elapsed());
        }
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.await.unwrap();
        }
        assert!(
            slowest < Duration::from_secs(2),
            "a write waited {slowest:?} for its turn"
        );
    }
}
