//! One conformance suite for the storage core, run against every pair of
//! metadata and blob backends CI starts: SQLite or Postgres, with a local
//! directory or Garage. Each test builds fresh stores of its own.

use crate::support;

use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use mediavault_storage::{AppId, AuthError, MediaId, NewApp, ReadError, UploadError, Vault};
use support::{ALL_BACKENDS, Backends, Stores, png_bytes};

async fn capi_app(vault: &Vault) -> mediavault_storage::App {
    vault
        .create_app(NewApp {
            name: "conformance".into(),
            capi: true,
            ..NewApp::default()
        })
        .await
        .unwrap()
}

/// Stores `bytes` (as text/plain when too short to carry a PNG signature).
async fn store(vault: &Vault, app: &mediavault_storage::App, bytes: &[u8]) -> MediaId {
    let mut upload = vault.begin_upload(app, Some("f.png")).await.unwrap();
    for chunk in bytes.chunks(100_003) {
        upload.write(chunk).await.unwrap();
    }
    upload
        .finish(if bytes.len() < 64 {
            "text/plain"
        } else {
            "image/png"
        })
        .await
        .unwrap()
}

async fn read(
    vault: &Vault,
    app_id: &AppId,
    id: &MediaId,
    range: std::ops::Range<u64>,
) -> Result<Bytes, ReadError> {
    let media = vault.find(app_id, id).await?;
    let pieces: Vec<Bytes> = vault.read(&media, range).await?.try_collect().await?;
    Ok(pieces.concat().into())
}

async fn each_backend<F, Fut>(test: F)
where
    F: Fn(Stores) -> Fut,
    Fut: Future<Output = ()>,
{
    for backends in ALL_BACKENDS {
        eprintln!("backends: {backends:?}");
        test(Stores::new(backends).await).await;
    }
}

#[tokio::test]
async fn tokens_authenticate_only_their_own_app() {
    each_backend(|stores| async move {
        let vault = stores.vault().await;
        let (a, b) = (capi_app(&vault).await, capi_app(&vault).await);
        let token = vault.issue_token(&a.id, Some("ci")).await.unwrap().token;
        assert!(token.starts_with("mv_") && token.len() > 40);
        assert_eq!(vault.authenticate(&a.id, &token).await.unwrap(), a);
        assert!(matches!(
            vault.authenticate(&b.id, &token).await,
            Err(AuthError::Failed)
        ));
        assert!(matches!(
            vault.authenticate(&a.id, "mv_nope").await,
            Err(AuthError::Failed)
        ));
        assert!(matches!(
            vault.authenticate(&a.id, "").await,
            Err(AuthError::Failed)
        ));
        assert!(vault.issue_token(&AppId::new("no-such-app"), None).await.is_err());
        vault.close().await;
    })
    .await;
}

#[tokio::test]
async fn stored_files_read_back_whole_and_by_range() {
    each_backend(|stores| async move {
        let vault = stores.vault().await;
        let app = capi_app(&vault).await;
        // Below one segment, across segments, and past one blob part (multipart).
        for len in [1usize, 65_481, 5 * 1024 * 1024 + 3] {
            let bytes = png_bytes(len);
            let id = store(&vault, &app, &bytes).await;
            let info = vault.find(&app.id, &id).await.unwrap().info;
            assert_eq!(info.size_bytes, len as u64);
            assert_eq!(info.mime_type, if len < 64 { "text/plain" } else { "image/png" });
            assert_eq!(info.filename.as_deref(), Some("f.png"));
            assert_eq!(
                info.sha256,
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
            );
            assert!(info.expires_at - info.created_at >= 30 * 86_400 * 1000 - 10_000);
            assert!(read(&vault, &app.id, &id, 0..len as u64).await.unwrap() == bytes);
            let len = len as u64;
            for range in [
                0..1,
                len - 1..len,
                len / 3..len / 2,
                65_479.min(len - 1)..len.min(65_482),
            ] {
                let got = read(&vault, &app.id, &id, range.clone()).await.unwrap();
                assert!(
                    got == bytes[range.start as usize..range.end as usize],
                    "{range:?} of {len}"
                );
            }
        }
        let (rows, blobs) = (
            vault.referenced_blob_keys().await.unwrap(),
            vault.stored_blob_keys().await.unwrap(),
        );
        assert_eq!(rows.len(), 3);
        let mut blobs = blobs;
        blobs.sort();
        assert_eq!(rows, blobs);
        vault.close().await;
    })
    .await;
}

#[tokio::test]
async fn other_apps_and_unknown_ids_are_not_found() {
    each_backend(|stores| async move {
        let vault = stores.vault().await;
        let (a, b) = (capi_app(&vault).await, capi_app(&vault).await);
        let id = store(&vault, &a, &png_bytes(100)).await;
        assert!(matches!(vault.find(&b.id, &id).await, Err(ReadError::NotFound)));
        assert!(matches!(
            vault
                .find(&a.id, &MediaId::new("00000000-0000-0000-0000-000000000000"))
                .await,
            Err(ReadError::NotFound)
        ));
        assert!(vault.find(&a.id, &id).await.is_ok());
        vault.close().await;
    })
    .await;
}

/// Aborted, refused and dropped uploads leave no row and no blob — also
/// when they had already gone past one blob part (a live multipart upload).
#[tokio::test]
async fn failed_uploads_leave_nothing() {
    each_backend(|stores| async move {
        let vault = stores.vault().await;
        let app = capi_app(&vault).await;
        let big = png_bytes(6 * 1024 * 1024);

        let mut upload = vault.begin_upload(&app, None).await.unwrap();
        upload.write(&big).await.unwrap();
        upload.abort().await;

        let mut upload = vault.begin_upload(&app, None).await.unwrap();
        upload.write(&big).await.unwrap();
        assert!(matches!(
            upload.finish("application/pdf").await,
            Err(UploadError::ContentMismatch { .. })
        ));

        let upload = vault.begin_upload(&app, None).await.unwrap();
        assert!(matches!(
            upload.finish("image/png").await,
            Err(UploadError::EmptyFile)
        ));

        let small = vault.create_app(NewApp {
            name: "s".into(),
            capi: true,
            max_file_bytes: Some(1000),
            ..NewApp::default()
        });
        let small = small.await.unwrap();
        let mut upload = vault.begin_upload(&small, None).await.unwrap();
        upload.write(&big[..1000]).await.unwrap();
        assert!(matches!(
            upload.write(&big[..1]).await,
            Err(UploadError::TooLarge { limit: 1000 })
        ));
        upload.abort().await;

        let mut dropped = vault.begin_upload(&app, None).await.unwrap();
        dropped.write(&big).await.unwrap();
        drop(dropped);

        let non_capi = vault
            .create_app(NewApp {
                name: "n".into(),
                capi: false,
                ..NewApp::default()
            })
            .await
            .unwrap();
        assert!(matches!(
            vault.begin_upload(&non_capi, None).await,
            Err(UploadError::NotCapi)
        ));

        // The dropped upload is undone in the background.
        let mut settled = false;
        for _ in 0..50 {
            let rows = vault.referenced_blob_keys().await.unwrap();
            let blobs = vault.stored_blob_keys().await.unwrap();
            if rows.is_empty() && blobs.is_empty() {
                settled = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            settled,
            "{:?} {:?}",
            vault.referenced_blob_keys().await,
            vault.stored_blob_keys().await
        );
        vault.close().await;
    })
    .await;
}

/// The blob holds ciphertext only: the plaintext appears nowhere in it.
#[tokio::test]
async fn blobs_on_disk_hold_no_plaintext() {
    let stores = Stores::new(Backends::SqliteFiles).await;
    let vault = stores.vault().await;
    let app = capi_app(&vault).await;
    let secret = b"TOP-SECRET-MARKER-0123456789".repeat(5000);
    let mut upload = vault.begin_upload(&app, None).await.unwrap();
    upload.write(&secret).await.unwrap();
    upload.finish("text/plain").await.unwrap();
    let mut found = 0;
    for entry in walk(stores.dir()) {
        let content = std::fs::read(&entry).unwrap();
        assert!(
            !content.windows(18).any(|w| w == b"TOP-SECRET-MARKER-"),
            "plaintext found in {}",
            entry.display()
        );
        found += 1;
    }
    assert!(found >= 2, "expected the database and one blob");
    vault.close().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path))
        } else {
            files.push(path)
        }
    }
    files
}

/// A blob as stored, with the data key unwrapped from its row, decrypts with
/// an independent implementation of the Tink streaming format.
#[tokio::test]
async fn stored_blob_decrypts_with_an_independent_tink_implementation() {
    use sqlx::Connection;
    use std::io::Read;
    use tink_core::StreamingAead;

    let stores = Stores::new(Backends::SqliteFiles).await;
    let vault = stores.vault().await;
    let app = capi_app(&vault).await;
    let bytes = png_bytes(200_000);
    let id = store(&vault, &app, &bytes).await;
    vault.close().await;

    let mut db = sqlx::SqliteConnection::connect(&stores.database_url)
        .await
        .unwrap();
    let (blob_key, kek_id, wrapped): (String, String, Vec<u8>) = sqlx::query_as(
        "SELECT m.blob_key, k.kek_id, k.wrapped_dek FROM media m \
             JOIN media_keys k ON k.media_id = m.id WHERE m.id = $1",
    )
    .bind(&id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    let keys = mediavault_storage::ConfiguredKeys::parse(&stores.keys).unwrap();
    let dek = keys.unwrap(id.as_str(), &kek_id, &wrapped).unwrap();
    let blob = std::fs::read(std::path::Path::new(&stores.blobs.url).join(&blob_key)).unwrap();

    let tink = tink_streaming_aead::subtle::AesGcmHkdf::new(
        dek.as_bytes(),
        tink_proto::HashType::Sha256,
        32,
        65_536,
        0,
    )
    .unwrap();
    let aad = mediavault_storage::format::blob_aad(id.as_str());
    let mut reader = tink
        .new_decrypting_reader(Box::new(std::io::Cursor::new(blob)), &aad)
        .unwrap();
    let mut plain = Vec::new();
    reader.read_to_end(&mut plain).unwrap();
    assert!(plain == bytes);
}

/// A 1-byte range of a 100 MiB file fetches at most two segments from the
/// blob store (one, unless the byte's segment is the last).
#[tokio::test]
async fn range_reads_fetch_only_the_segments_they_overlap() {
    for backends in [Backends::SqliteFiles, Backends::PostgresS3] {
        let stores = Stores::new(backends).await;
        let vault = stores.vault().await;
        let app = capi_app(&vault).await;
        let len = 100u64 << 20;
        let bytes = png_bytes(len as usize);
        let id = store(&vault, &app, &bytes).await;
        for offset in [0, 65_479, 65_480, len / 2, len - 1] {
            let before = vault.blob_bytes_read();
            let got = read(&vault, &app.id, &id, offset..offset + 1).await.unwrap();
            let fetched = vault.blob_bytes_read() - before;
            assert_eq!(got[..], bytes[offset as usize..offset as usize + 1]);
            assert!(
                fetched <= 2 * 65_536,
                "{backends:?}: offset {offset} fetched {fetched} bytes"
            );
        }
        vault.close().await;
    }
}

/// The wrapped keys found in any page of `table`, read raw (pageinspect),
/// out of `keys`: what someone with a copy of the table's files would find.
async fn keys_in_pages(db: &mut sqlx::PgConnection, table: &str, keys: &[Vec<u8>]) -> usize {
    // A partitioned table keeps its rows in its partitions; a plain one is
    // its own only leaf.
    let leaves: Vec<(String, i64)> = sqlx::query_as(
        "SELECT relid::regclass::text, pg_relation_size(relid) / current_setting('block_size')::bigint \
         FROM pg_partition_tree($1::regclass) WHERE isleaf",
    )
    .bind(table)
    .fetch_all(&mut *db)
    .await
    .unwrap();
    let mut pages: Vec<Vec<u8>> = Vec::new();
    for (leaf, blocks) in leaves {
        for block in 0..blocks {
            pages.push(
                sqlx::query_scalar("SELECT get_raw_page($1, $2::int)")
                    .bind(&leaf)
                    .bind(block)
                    .fetch_one(&mut *db)
                    .await
                    .unwrap(),
            );
        }
    }
    keys.iter()
        .filter(|key| {
            pages
                .iter()
                .any(|page| page.windows(key.len()).any(|window| window == key.as_slice()))
        })
        .count()
}

/// The wrapped keys of media `ids`, from the key table.
async fn wrapped_keys(db: &mut sqlx::PgConnection, ids: &[MediaId]) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    for id in ids {
        keys.push(
            sqlx::query_scalar("SELECT wrapped_dek FROM media_keys WHERE media_id = $1")
                .bind(id)
                .fetch_one(&mut *db)
                .await
                .unwrap(),
        );
    }
    keys
}

/// Shredding deletes a key's row, and Postgres keeps a deleted tuple's
/// bytes in its page; the reaper's scheduled rewrite of the key table is
/// what removes them. Keys shredded both ways (a delete on request, and a
/// reaper pass over expired media) are searched for in every page of the key
/// table and of `media`: before the rewrite the key table still holds them,
/// after it no page of either does, while live keys are still found.
#[tokio::test]
async fn shredded_keys_leave_postgres_pages_with_the_key_table_rewrite() {
    use sqlx::Connection;

    let stores = Stores::new(Backends::PostgresFiles).await;
    let vault = stores.vault().await;
    let app = capi_app(&vault).await;
    let mut db = sqlx::PgConnection::connect(&stores.database_url).await.unwrap();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pageinspect")
        .execute(&mut db)
        .await
        .unwrap();
    let mut deleted = Vec::new();
    for i in 0..10 {
        deleted.push(store(&vault, &app, &png_bytes(1_000 + i)).await);
    }
    let mut shredded = wrapped_keys(&mut db, &deleted).await;
    for id in &deleted {
        vault.delete(&app.id, id).await.unwrap();
    }
    let mut expired = Vec::new();
    for i in 0..10 {
        expired.push(store(&vault, &app, &png_bytes(2_000 + i)).await);
    }
    shredded.extend(wrapped_keys(&mut db, &expired).await);
    // A pass a century on: every stored medium has expired by then.
    let century = 100 * 365 * 24 * 3600 * 1000;
    let pass = mediavault_reaper::reap_once(
        &vault,
        mediavault_storage::now_millis() + century,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(pass.expired, 10);
    let live = vec![store(&vault, &app, &png_bytes(3_000)).await];
    let live_keys = wrapped_keys(&mut db, &live).await;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM media_keys")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(rows, 1, "only the live medium keeps a key row");

    let before = keys_in_pages(&mut db, "media_keys", &shredded).await;
    eprintln!("before the rewrite: {before} of 20 shredded keys in the key table's pages");
    assert!(
        before > 0,
        "deleted tuples keep their bytes until the table is rewritten"
    );
    // A rewrite copies a deleted row that a snapshot still open in the same
    // database may see, and the next scheduled rewrite removes it; a few
    // rewrites give a snapshot of a test running alongside time to end.
    let mut left = before;
    for _ in 0..5 {
        assert_eq!(mediavault_reaper::rewrite_keys(&vault).await, Some(true));
        left = keys_in_pages(&mut db, "media_keys", &shredded).await;
        if left == 0 {
            break;
        }
        let holders: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT backend_type, state, left(query, 80) FROM pg_stat_activity \
             WHERE datname = current_database() AND backend_xmin IS NOT NULL AND pid <> pg_backend_pid()",
        )
        .fetch_all(&mut db)
        .await
        .unwrap();
        eprintln!("{left} shredded keys left after a rewrite; snapshots open in the database: {holders:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        left, 0,
        "{before} of 20 shredded keys were in the key table's pages before the rewrites"
    );
    assert_eq!(
        keys_in_pages(&mut db, "media", &shredded).await,
        0,
        "media rows never hold keys"
    );
    assert_eq!(
        keys_in_pages(&mut db, "media_keys", &live_keys).await,
        1,
        "the scan finds a live key"
    );
    assert_eq!(
        read(&vault, &app.id, &live[0], 0..3_000).await.unwrap()[..],
        png_bytes(3_000)[..]
    );
    vault.close().await;
}

/// How many of `keys` the planner's statistics of `media_keys` (and its
/// partitions) hold, as histogram bounds or common values.
async fn keys_in_statistics(db: &mut sqlx::PgConnection, keys: &[Vec<u8>]) -> usize {
    let sampled: Vec<String> = sqlx::query_scalar(
        "SELECT concat(histogram_bounds::text, most_common_vals::text) FROM pg_stats \
         WHERE tablename LIKE 'media_keys%' AND attname = 'wrapped_dek'",
    )
    .fetch_all(&mut *db)
    .await
    .unwrap();
    let sampled = sampled.concat();
    keys.iter()
        .filter(|key| {
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            sampled.contains(&hex)
        })
        .count()
}

/// ANALYZE (which autovacuum runs as the key table grows) samples every
/// column into `pg_statistic`, where a shredded key would outlive its row
/// and the key table's rewrite. The key column is never sampled, and the
/// migration that stops it removes the samples an earlier version made.
#[tokio::test]
async fn the_planners_statistics_hold_no_wrapped_key() {
    use sqlx::Connection;

    let stores = Stores::new(Backends::PostgresFiles).await;
    let vault = stores.vault().await;
    let app = capi_app(&vault).await;
    let mut db = sqlx::PgConnection::connect(&stores.database_url).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(store(&vault, &app, &png_bytes(1_000 + i)).await);
    }
    let keys = wrapped_keys(&mut db, &ids).await;
    sqlx::raw_sql("ANALYZE media_keys")
        .execute(&mut db)
        .await
        .unwrap();
    assert_eq!(
        keys_in_statistics(&mut db, &keys).await,
        0,
        "sampled after the migration"
    );

    // As an earlier version left it: the column sampled.
    sqlx::raw_sql("ALTER TABLE media_keys ALTER COLUMN wrapped_dek SET STATISTICS -1; ANALYZE media_keys")
        .execute(&mut db)
        .await
        .unwrap();
    let sampled = keys_in_statistics(&mut db, &keys).await;
    assert!(sampled > 0, "an earlier version's statistics hold keys");
    let migration = include_str!("../migrations/postgres/20261207000010_no_statistics_of_wrapped_keys.sql");
    sqlx::raw_sql(migration).execute(&mut db).await.unwrap();
    assert_eq!(
        keys_in_statistics(&mut db, &keys).await,
        0,
        "{sampled} keys were in the statistics before the migration"
    );
    sqlx::raw_sql("ANALYZE media_keys")
        .execute(&mut db)
        .await
        .unwrap();
    assert_eq!(keys_in_statistics(&mut db, &keys).await, 0, "sampled again");
    vault.close().await;
}

/// The migration that moves wrapped keys into their own table, run on a
/// database that holds media in the layout before it (rebuilt by hand from
/// a migrated one): live keys move across and still unwrap, a shredded
/// medium gets no key, and no key is left in `media`.
#[tokio::test]
async fn the_key_table_migration_moves_existing_keys() {
    use sqlx::Connection;

    let stores = Stores::new(Backends::PostgresFiles).await;
    let vault = stores.vault().await;
    let app = capi_app(&vault).await;
    let bytes = png_bytes(150_000);
    let kept = store(&vault, &app, &bytes).await;
    let shredded = store(&vault, &app, &png_bytes(1_000)).await;
    vault.close().await;
    let mut db = sqlx::PgConnection::connect(&stores.database_url).await.unwrap();
    let earlier_layout = [
        "ALTER TABLE media ADD COLUMN kek_id TEXT",
        "ALTER TABLE media ADD COLUMN wrapped_dek BYTEA",
        "UPDATE media SET kek_id = k.kek_id, wrapped_dek = k.wrapped_dek \
         FROM media_keys k WHERE k.media_id = media.id",
        "ALTER TABLE media ALTER COLUMN kek_id SET NOT NULL",
        "CREATE INDEX media_kek_id ON media (kek_id) WHERE wrapped_dek IS NOT NULL",
        "DROP TABLE media_keys",
        "DROP TABLE key_fingerprints",
        "DELETE FROM _sqlx_migrations WHERE version = 20261129000020",
    ];
    for statement in earlier_layout {
        sqlx::query(statement).execute(&mut db).await.unwrap();
    }
    sqlx::query("UPDATE media SET state = 'deleting', wrapped_dek = NULL WHERE id = $1")
        .bind(&shredded)
        .execute(&mut db)
        .await
        .unwrap();

    let vault = stores.vault().await;
    assert_eq!(
        read(&vault, &app.id, &kept, 0..bytes.len() as u64).await.unwrap()[..],
        bytes[..]
    );
    let keyed: Vec<MediaId> = sqlx::query_scalar("SELECT media_id FROM media_keys")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(keyed, [kept]);
    let columns: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.columns \
         WHERE table_name = 'media' AND column_name IN ('kek_id', 'wrapped_dek')",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(columns, 0);
    vault.close().await;
}

/// The migration that splits the key table into partitions, run on a
/// database whose key table is one plain table (rebuilt by hand from a
/// migrated one): every key moves across and still unwraps, into 64
/// partitions, and the rewrite then runs over them.
#[tokio::test]
async fn the_key_table_partition_migration_moves_existing_keys() {
    use sqlx::Connection;

    let stores = Stores::new(Backends::PostgresFiles).await;
    let vault = stores.vault().await;
    let app = capi_app(&vault).await;
    let mut kept = Vec::new();
    for i in 0..20 {
        kept.push((
            store(&vault, &app, &png_bytes(1_000 + i)).await,
            png_bytes(1_000 + i),
        ));
    }
    vault.close().await;
    let mut db = sqlx::PgConnection::connect(&stores.database_url).await.unwrap();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pageinspect")
        .execute(&mut db)
        .await
        .unwrap();
    let keys_before = wrapped_keys(
        &mut db,
        &kept.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
    )
    .await;
    let earlier_layout = [
        "CREATE TABLE media_keys_plain (media_id TEXT PRIMARY KEY REFERENCES media (id) ON DELETE CASCADE, \
         kek_id TEXT NOT NULL, wrapped_dek BYTEA NOT NULL)",
        "INSERT INTO media_keys_plain SELECT media_id, kek_id, wrapped_dek FROM media_keys",
        "DROP TABLE media_keys",
        "ALTER TABLE media_keys_plain RENAME TO media_keys",
        "ALTER INDEX media_keys_plain_pkey RENAME TO media_keys_pkey",
        "CREATE INDEX media_keys_kek_id ON media_keys (kek_id)",
        "DELETE FROM _sqlx_migrations WHERE version = 20261204000010",
    ];
    for statement in earlier_layout {
        sqlx::query(statement).execute(&mut db).await.unwrap();
    }

    let vault = stores.vault().await;
    let partitions: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM pg_partition_tree('media_keys') WHERE isleaf AND level = 1")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(partitions, 64);
    let ids: Vec<MediaId> = kept.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(wrapped_keys(&mut db, &ids).await, keys_before);
    for (id, bytes) in &kept {
        assert_eq!(
            read(&vault, &app.id, id, 0..bytes.len() as u64).await.unwrap()[..],
            bytes[..]
        );
    }
    assert_eq!(mediavault_reaper::rewrite_keys(&vault).await, Some(true));
    assert_eq!(
        keys_in_pages(&mut db, "media_keys", &keys_before).await,
        kept.len()
    );
    vault.close().await;
}
