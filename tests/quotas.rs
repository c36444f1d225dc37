//! Per-app storage quotas, on SQLite + files and on Postgres + Garage: what
//! is admitted and refused, that every way a medium stops counting gives its
//! share back, that concurrent uploads near the limit never pass it, and the
//! settings through the CLI and the admin API.

use crate::support;

use std::sync::Arc;

use mediavault_storage::{
    App, AppId, AppUpdate, Defaults, MediaId, NewApp, RESERVATION_STEP, UploadError, Vault, now_millis,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Backends, Fixture, Stores, cli, cli_with, fetch_rows, png_bytes};

const BACKENDS: [Backends; 2] = [Backends::SqliteFiles, Backends::PostgresS3];

async fn each_backend<F, Fut>(test: F)
where
    F: Fn(Stores) -> Fut,
    Fut: Future<Output = ()>,
{
    for backends in BACKENDS {
        eprintln!("backends: {backends:?}");
        test(Stores::new(backends).await).await;
    }
}

/// A CAPI app with the given quota.
async fn app(vault: &Vault, max_bytes_stored: Option<u64>, max_media: Option<u64>) -> App {
    vault
        .create_app(NewApp {
            name: "quota".into(),
            capi: true,
            max_bytes_stored,
            max_media,
            ..NewApp::default()
        })
        .await
        .unwrap()
}

/// Stores `len` bytes of PNG in pieces of `piece`, announced at `expected`
/// bytes; an upload refused part way is undone, as the HTTP layer does.
async fn store_as(
    vault: &Vault,
    app: &App,
    len: usize,
    piece: usize,
    expected: Option<u64>,
) -> Result<MediaId, UploadError> {
    let bytes = png_bytes(len);
    let mut upload = vault.begin_sized_upload(app, None, expected).await?;
    for chunk in bytes.chunks(piece) {
        if let Err(error) = upload.write(chunk).await {
            upload.abort().await;
            return Err(error);
        }
        tokio::task::yield_now().await;
    }
    upload.finish("image/png").await
}

/// Stores `len` bytes announced at their size.
async fn store(vault: &Vault, app: &App, len: usize) -> Result<MediaId, UploadError> {
    store_as(vault, app, len, 100_003, Some(len as u64)).await
}

/// The app's usage against its quota: (media, bytes).
async fn usage(vault: &Vault, app: &App) -> (u64, u64) {
    let stats = vault.app_stats(&app.id).await.unwrap();
    (stats.media_used, stats.bytes_used)
}

/// Fails unless the counters are the sum over the rows that count: a
/// recount, which sets them to that sum, finds them already so.
async fn assert_counters_match_rows(vault: &Vault, app: &App) {
    let before = usage(vault, app).await;
    let recounted = vault.recount_usage().await.unwrap();
    let (_, media, bytes) = recounted.iter().find(|(id, _, _)| *id == app.id).unwrap();
    assert_eq!((*media, *bytes), before, "counters against rows");
}

/// Fails unless there are exactly `rows` media rows, each with its blob,
/// and no other blob.
async fn assert_stored(vault: &Vault, rows: usize) {
    let row_keys = vault.referenced_blob_keys().await.unwrap();
    let mut blob_keys = vault.stored_blob_keys().await.unwrap();
    blob_keys.sort();
    assert_eq!(row_keys.len(), rows, "media rows: {row_keys:?}");
    assert_eq!(
        row_keys, blob_keys,
        "every row has its blob and no blob lacks a row"
    );
}

fn refused(result: Result<MediaId, UploadError>) -> bool {
    matches!(result, Err(UploadError::QuotaExceeded))
}

/// The usage counters a database holds for an app, deleted or not: (media, bytes).
async fn counters(stores: &Stores, app_id: &AppId) -> (i64, i64) {
    let rows: Vec<(i64, i64)> = fetch_rows(
        stores,
        "SELECT used_media, used_bytes FROM apps WHERE id = $1",
        Some(app_id.as_str()),
    )
    .await;
    rows[0]
}

#[tokio::test]
async fn uploads_past_the_quota_are_refused_and_leave_nothing() {
    each_backend(|stores| async move {
        let vault = stores.vault().await;
        let bytes = app(&vault, Some(2500), None).await;
        store(&vault, &bytes, 1000).await.unwrap();
        store(&vault, &bytes, 1000).await.unwrap();
        assert_eq!(usage(&vault, &bytes).await, (2, 2000));
        // Admitted with a byte (a file that fits may follow a generous
        // guess), refused as the file passes what is left.
        assert!(refused(store(&vault, &bytes, 1000).await));
        assert_eq!(usage(&vault, &bytes).await, (2, 2000), "its reservation released");
        assert_stored(&vault, 2).await;
        // Exactly the limit is stored, whatever was guessed.
        store_as(&vault, &bytes, 500, 100, Some(10_000)).await.unwrap();
        assert_eq!(usage(&vault, &bytes).await, (3, 2500));
        // No room for a byte: refused at admission, nothing written.
        assert!(matches!(
            vault.begin_sized_upload(&bytes, None, Some(1)).await,
            Err(UploadError::QuotaExceeded)
        ));
        assert_stored(&vault, 3).await;
        assert_counters_match_rows(&vault, &bytes).await;

        let media = app(&vault, None, Some(2)).await;
        store(&vault, &media, 10).await.unwrap();
        store(&vault, &media, 10).await.unwrap();
        assert!(matches!(
            vault.begin_upload(&media, None).await,
            Err(UploadError::QuotaExceeded)
        ));
        assert_eq!(usage(&vault, &media).await, (2, 20));
        assert_stored(&vault, 5).await;
        vault.close().await;
    })
    .await;
}

#[tokio::test]
async fn deleting_media_gives_its_share_back() {
    each_backend(|stores| async move {
        let vault = stores.vault().await;
        let app = app(&vault, Some(2000), Some(2)).await;
        let first = store(&vault, &app, 1000).await.unwrap();
        store(&vault, &app, 1000).await.unwrap();
        assert!(refused(store(&vault, &app, 1).await));
        vault.delete(&app.id, &first).await.unwrap();
        assert_eq!(usage(&vault, &app).await, (1, 1000));
        store(&vault, &app, 1000).await.unwrap();
        assert_eq!(usage(&vault, &app).await, (2, 2000));
        assert_counters_match_rows(&vault, &app).await;
        vault.close().await;
    })
    .await;
}

/// A delete gives its app's share back on the app's row, so one app's
/// deletes wait on each other. They wait for their turn holding no
/// database connection: with the app's row held (as a slow flush or a
/// reaper claim holds it) and 40 of its deletes waiting, another app is
/// answered at once. Before, the waiting deletes took all 16 pooled
/// connections, and the other app's request waited out the pool's 10 s
/// acquire timeout and got 500.
#[tokio::test]
async fn one_apps_waiting_deletes_leave_connections_for_other_apps() {
    use sqlx::Connection as _;

    let f = Fixture::new(Backends::PostgresS3).await;
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(f.upload(&png_bytes(100)).await);
    }
    let (other_app, other_token) = support::app_and_token(&f.stores, true);
    let mut db = sqlx::PgConnection::connect(&f.stores.database_url).await.unwrap();
    let mut held = db.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM apps WHERE id = $1 FOR UPDATE")
        .bind(&f.app_id)
        .execute(&mut *held)
        .await
        .unwrap();
    let deletes: Vec<_> = ids
        .iter()
        .map(|id| {
            let call = f
                .client
                .delete(f.media_url_with(&format!("/{id}")))
                .header("token", &f.token)
                .send();
            tokio::spawn(call)
        })
        .collect();
    // Long enough for every delete to reach the row, and for the other
    // app's token to need the database.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;

    let info = f
        .client
        .get(
            f.server
                .url(&format!("/partner/app/{other_app}/media/1234567890/info")),
        )
        .header("token", &other_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        info.status(),
        StatusCode::NOT_FOUND,
        "answered while the first app's row is held: {}",
        info.text().await.unwrap()
    );
    held.rollback().await.unwrap();
    for delete in deletes {
        assert_eq!(delete.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    f.assert_stored(0).await;
}

/// An upload that fails, however, gives back what it reserved, also what
/// it reserved as it grew; a completed one holds exactly its size.
#[tokio::test]
async fn failed_uploads_give_their_reservation_back() {
    each_backend(|stores| async move {
        let vault = stores.vault().await;
        let app = app(&vault, Some(1 << 40), Some(1000)).await;
        let big = png_bytes(RESERVATION_STEP as usize + 1000);

        // Unannounced, it reserves a step, and a step more as it passes it.
        let mut upload = vault.begin_upload(&app, None).await.unwrap();
        assert_eq!(usage(&vault, &app).await, (1, RESERVATION_STEP));
        upload.write(&big).await.unwrap();
        assert_eq!(usage(&vault, &app).await, (1, 2 * RESERVATION_STEP));
        upload.abort().await;
        assert_eq!(usage(&vault, &app).await, (0, 0), "aborted");

        let mut upload = vault.begin_upload(&app, None).await.unwrap();
        upload.write(&big).await.unwrap();
        assert!(matches!(
            upload.finish("application/pdf").await,
            Err(UploadError::ContentMismatch { .. })
        ));
        assert_eq!(usage(&vault, &app).await, (0, 0), "refused content");

        let upload = vault.begin_upload(&app, None).await.unwrap();
        assert!(matches!(
            upload.finish("image/png").await,
            Err(UploadError::EmptyFile)
        ));
        assert_eq!(usage(&vault, &app).await, (0, 0), "empty");

        let small = vault
            .create_app(NewApp {
                name: "small".into(),
                capi: true,
                max_file_bytes: Some(1000),
                max_media: Some(10),
                ..NewApp::default()
            })
            .await
            .unwrap();
        let mut upload = vault.begin_upload(&small, None).await.unwrap();
        assert_eq!(
            usage(&vault, &small).await,
            (1, 1000),
            "a step, at most the size limit"
        );
        upload.write(&big[..1000]).await.unwrap();
        assert!(matches!(
            upload.write(&big[..1]).await,
            Err(UploadError::TooLarge { .. })
        ));
        upload.abort().await;
        assert_eq!(usage(&vault, &small).await, (0, 0), "too large");

        let mut dropped = vault.begin_upload(&app, None).await.unwrap();
        dropped.write(&big[..100]).await.unwrap();
        drop(dropped);
        // Closing waits for the clean-up of dropped uploads.
        vault.close().await;
        let vault = stores.vault().await;
        assert_eq!(usage(&vault, &app).await, (0, 0), "dropped");

        store_as(&vault, &app, big.len(), 1 << 20, None).await.unwrap();
        assert_eq!(
            usage(&vault, &app).await,
            (1, big.len() as u64),
            "settled to its size"
        );
        assert_stored(&vault, 1).await;
        assert_counters_match_rows(&vault, &app).await;
        vault.close().await;
    })
    .await;
}

/// The reaper's claim gives back what abandoned uploads and expired media
/// held. Expired media count until a pass claims them.
#[tokio::test]
async fn the_reaper_gives_back_what_abandoned_and_expired_media_held() {
    each_backend(|stores| async move {
        let vault = stores.vault().await;
        let app = vault
            .create_app(NewApp {
                name: "short-lived".into(),
                capi: true,
                retention: Some(std::time::Duration::from_secs(1)),
                max_media: Some(10),
                ..NewApp::default()
            })
            .await
            .unwrap();
        store(&vault, &app, 700).await.unwrap();
        let mut running = vault.begin_sized_upload(&app, None, Some(5000)).await.unwrap();
        running.write(&png_bytes(100)).await.unwrap();
        assert_eq!(usage(&vault, &app).await, (2, 5700));

        // Past reaper.stale_upload_after (1 h) the upload is abandoned.
        let later = now_millis() + 2 * 3600 * 1000;
        let counts = vault.reap_batch(later, 100).await.unwrap();
        assert_eq!((counts.abandoned, counts.expired), (1, 1));
        assert_eq!(usage(&vault, &app).await, (0, 0));
        assert!(matches!(
            running.finish("image/png").await,
            Err(UploadError::Reclaimed)
        ));
        assert_eq!(usage(&vault, &app).await, (0, 0), "released once");

        store(&vault, &app, 300).await.unwrap();
        // Once its second of retention is over the file is gone for readers,
        // but it counts until a pass claims it.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let stats = vault.app_stats(&app.id).await.unwrap();
        assert_eq!(
            (stats.media_count, stats.media_used, stats.bytes_used),
            (0, 1, 300)
        );
        let counts = vault.reap_batch(now_millis(), 100).await.unwrap();
        assert_eq!(counts.expired, 1);
        assert_eq!(usage(&vault, &app).await, (0, 0));
        assert_stored(&vault, 0).await;
        vault.close().await;
    })
    .await;
}

#[tokio::test]
async fn deleting_an_app_gives_back_everything_it_held() {
    each_backend(|stores| async move {
        let vault = stores.vault().await;
        let app = app(&vault, Some(1 << 30), None).await;
        store(&vault, &app, 1000).await.unwrap();
        store(&vault, &app, 2000).await.unwrap();
        let mut running = vault.begin_sized_upload(&app, None, Some(4000)).await.unwrap();
        running.write(&png_bytes(100)).await.unwrap();
        assert_eq!(counters(&stores, &app.id).await, (3, 7000));

        assert_eq!(vault.delete_app(&app.id).await.unwrap(), 3);
        assert_eq!(counters(&stores, &app.id).await, (0, 0));
        assert!(matches!(
            running.finish("image/png").await,
            Err(UploadError::Reclaimed)
        ));
        assert_eq!(counters(&stores, &app.id).await, (0, 0), "released once");
        vault.close().await;
    })
    .await;
}

/// A changed quota judges the next upload, whichever replica takes it; the
/// usage stays as it is. An app that sets none takes the configured default.
#[tokio::test]
async fn a_changed_quota_applies_to_the_next_upload() {
    each_backend(|stores| async move {
        let mut config = stores.vault_config();
        config.defaults = Defaults {
            max_media: Some(3),
            ..Defaults::default()
        };
        let vault = Vault::open(config).await.unwrap();
        let app = app(&vault, None, None).await;
        let stats = vault.app_stats(&app.id).await.unwrap();
        assert_eq!((stats.max_media, stats.max_bytes_stored), (Some(3), None));
        let mut stored = Vec::new();
        for _ in 0..3 {
            stored.push(store(&vault, &app, 100).await.unwrap());
        }
        assert!(refused(store(&vault, &app, 100).await), "the default");

        let update = |max_media, max_bytes_stored| AppUpdate {
            max_media,
            max_bytes_stored,
            ..AppUpdate::default()
        };
        let raised = vault
            .update_app(&app.id, update(Some(Some(5)), None))
            .await
            .unwrap();
        assert_eq!(raised.max_media, Some(5));
        stored.push(store(&vault, &app, 100).await.unwrap());
        assert_eq!(usage(&vault, &app).await, (4, 400));

        vault
            .update_app(&app.id, update(Some(Some(2)), None))
            .await
            .unwrap();
        assert!(refused(store(&vault, &app, 100).await), "below the usage");
        assert_eq!(usage(&vault, &app).await, (4, 400), "usage stays");
        let restored = vault.update_app(&app.id, update(Some(None), None)).await.unwrap();
        assert_eq!(restored.max_media, None);
        assert!(refused(store(&vault, &app, 100).await), "the default again");
        for id in stored.drain(..2) {
            vault.delete(&app.id, &id).await.unwrap();
        }
        store(&vault, &app, 100).await.unwrap();
        assert_eq!(usage(&vault, &app).await, (3, 300));

        vault
            .update_app(&app.id, update(Some(Some(100)), Some(Some(350))))
            .await
            .unwrap();
        assert!(refused(store(&vault, &app, 51).await));
        store(&vault, &app, 50).await.unwrap();
        vault.update_app(&app.id, update(None, Some(None))).await.unwrap();
        store(&vault, &app, 1000).await.unwrap();
        assert_eq!(usage(&vault, &app).await, (5, 1350));
        let stats = vault.app_stats(&app.id).await.unwrap();
        assert_eq!((stats.max_media, stats.max_bytes_stored), (Some(100), None));
        vault.close().await;
    })
    .await;
}

/// 64 uploads at once against an app with room for ten: never more is
/// stored or held than the quota allows, and what is held is what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_near_the_quota_never_pass_it() {
    each_backend(|stores| async move {
        let vault = stores.vault().await;
        let by_bytes = app(&vault, Some(10 * 1000 + 500), None).await;
        let by_media = app(&vault, None, Some(10)).await;
        let unannounced = app(&vault, Some(10 * 1000 + 500), None).await;
        let race = |app: App, announced: bool| {
            let vault = vault.clone();
            async move {
                let app = Arc::new(app);
                let uploads: Vec<_> = (0..64)
                    .map(|_| {
                        let (vault, app) = (vault.clone(), app.clone());
                        tokio::spawn(async move {
                            let expected = announced.then_some(1000);
                            store_as(&vault, &app, 1000, 250, expected).await
                        })
                    })
                    .collect();
                let mut stored: u64 = 0;
                for upload in uploads {
                    match upload.await.unwrap() {
                        Ok(_) => stored += 1,
                        Err(error) => assert!(matches!(error, UploadError::QuotaExceeded), "{error}"),
                    }
                }
                stored
            }
        };

        // Announced uploads reserve their size at once: the first ten in win.
        assert_eq!(race(by_bytes.clone(), true).await, 10);
        assert_eq!(usage(&vault, &by_bytes).await, (10, 10_000));
        assert_eq!(race(by_media.clone(), true).await, 10);
        assert_eq!(usage(&vault, &by_media).await, (10, 10_000));
        // Unannounced ones cannot reserve a step near the quota: the first
        // to find the room takes all that is left, so it finishes (at least
        // one is stored, however the 64 interleave), and none passes it.
        let stored = race(unannounced.clone(), false).await;
        assert!((1..=10).contains(&stored), "{stored} stored");
        assert_eq!(usage(&vault, &unannounced).await, (stored, stored * 1000));

        assert_stored(&vault, 20 + usize::try_from(stored).unwrap()).await;
        for app in [&by_bytes, &by_media, &unannounced] {
            assert_counters_match_rows(&vault, app).await;
        }
        vault.close().await;
    })
    .await;
}

/// A recount sets usage to what the rows hold, counting rows that a
/// version without quotas wrote, and a stored row reserving nothing (an
/// upload that such a version finished after the quota migration had set
/// its reservation to 0), whatever the counters said.
#[tokio::test]
async fn a_recount_sets_usage_to_what_the_rows_hold() {
    each_backend(|stores| async move {
        let vault = stores.vault().await;
        let app = app(&vault, None, None).await;
        store(&vault, &app, 1000).await.unwrap();
        let uncounted = store(&vault, &app, 500).await.unwrap();
        let unsettled = store(&vault, &app, 250).await.unwrap();
        // As an older version leaves things: a row without a reservation,
        // one it finished without settling, and counters that missed a
        // release.
        let _: Vec<(String,)> = fetch_rows(
            &stores,
            "UPDATE media SET reserved_bytes = NULL WHERE id = $1 RETURNING id",
            Some(uncounted.as_str()),
        )
        .await;
        let _: Vec<(String,)> = fetch_rows(
            &stores,
            "UPDATE media SET reserved_bytes = 0 WHERE id = $1 RETURNING id",
            Some(unsettled.as_str()),
        )
        .await;
        let _: Vec<(String,)> = fetch_rows(
            &stores,
            "UPDATE apps SET used_media = 7, used_bytes = 99999 WHERE id = $1 RETURNING id",
            Some(app.id.as_str()),
        )
        .await;
        assert_eq!(usage(&vault, &app).await, (7, 99_999));
        let recounted = vault.recount_usage().await.unwrap();
        assert_eq!(recounted, [(app.id.clone(), 3, 1750)]);
        assert_eq!(usage(&vault, &app).await, (3, 1750));
        vault.delete(&app.id, &uncounted).await.unwrap();
        vault.delete(&app.id, &unsettled).await.unwrap();
        assert_eq!(usage(&vault, &app).await, (1, 1000), "counted now, released too");
        vault.close().await;
    })
    .await;
}

/// `apps create|update|stats|recount`: the settings, their defaults, and
/// usage against them.
#[tokio::test]
async fn the_cli_sets_quotas_and_shows_usage_against_them() {
    for backends in BACKENDS {
        let stores = Stores::new(backends).await;
        let run = |args: &[&str], env: &[(&str, &str)]| -> Value {
            let (ok, out, err) = cli_with(&stores, args, env);
            assert!(ok, "{args:?}: {err}");
            serde_json::from_str(&out).unwrap()
        };
        let created = run(
            &[
                "apps",
                "create",
                "--name",
                "shop",
                "--max-bytes-stored",
                "5000",
                "--max-media",
                "3",
            ],
            &[],
        );
        assert_eq!(
            (&created["maxBytesStored"], &created["maxMedia"]),
            (&json!(5000), &json!(3))
        );
        let app_id = created["appId"].as_str().unwrap();
        let stats = run(&["apps", "stats", "--app", app_id], &[]);
        assert_eq!(
            stats,
            json!({"appId": app_id, "mediaCount": 0, "bytesStored": 0, "mediaUsed": 0, "bytesUsed": 0,
                   "maxMedia": 3, "maxBytesStored": 5000})
        );

        let updated = run(&["apps", "update", "--app", app_id, "--max-media", "4"], &[]);
        assert_eq!(
            (&updated["maxBytesStored"], &updated["maxMedia"]),
            (&json!(5000), &json!(4))
        );
        let updated = run(
            &[
                "apps",
                "update",
                "--app",
                app_id,
                "--default-max-bytes-stored",
                "--default-max-media",
            ],
            &[],
        );
        assert!(updated["maxBytesStored"].is_null() && updated["maxMedia"].is_null());
        let stats = run(
            &["apps", "stats", "--app", app_id],
            &[("MEDIAVAULT__MEDIA__MAX_MEDIA", "7")],
        );
        assert_eq!(
            (&stats["maxMedia"], &stats["maxBytesStored"]),
            (&json!(7), &Value::Null)
        );

        let (ok, _, err) = cli(
            &stores,
            &[
                "apps",
                "update",
                "--app",
                app_id,
                "--max-media",
                "2",
                "--default-max-media",
            ],
        );
        assert!(!ok && err.contains("--default-max-media"), "{err}");
        let (ok, _, err) = cli(&stores, &["apps", "update", "--app", app_id, "--max-media", "0"]);
        assert!(!ok && err.contains("maxMedia"), "{err}");

        let recounted = run(&["apps", "recount"], &[]);
        assert_eq!(
            recounted,
            json!([{"appId": app_id, "mediaUsed": 0, "bytesUsed": 0}])
        );
    }
}

const ADMIN_TOKEN: &str = "admin-0123456789abcdef0123456789abcdef";

async fn admin_call(f: &Fixture, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = f
        .client
        .request(method, f.server.url(path))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The admin API sets and restores the quota, the served upload answers
/// 403 past it and leaves nothing, and the stats show usage against it.
#[tokio::test]
async fn the_admin_api_sets_quotas_and_uploads_past_them_get_403() {
    for backends in BACKENDS {
        let f = Fixture::with_env(backends, &[("MEDIAVAULT__ADMIN__TOKEN", ADMIN_TOKEN)]).await;
        let path = format!("/admin/apps/{}", f.app_id);
        let (status, body) = admin_call(
            &f,
            Method::PATCH,
            &path,
            Some(json!({"maxBytesStored": 3000, "maxMedia": 5})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            (&body["app"]["maxBytesStored"], &body["app"]["maxMedia"]),
            (&json!(3000), &json!(5))
        );
        let (status, body) = admin_call(&f, Method::PATCH, &path, Some(json!({"maxMedia": null}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["app"]["maxMedia"].is_null());
        assert_eq!(body["app"]["maxBytesStored"], 3000, "left as it was");
        let (status, body) = admin_call(&f, Method::PATCH, &path, Some(json!({"maxMedia": 0}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["message"].as_str().unwrap().contains("maxMedia"), "{body}");

        f.upload(&png_bytes(2000)).await;
        let (status, body) = f.post(support::png_form(1500)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            body,
            json!({"message": "Storage quota exceeded", "status": "error"})
        );
        f.assert_stored(1).await;

        let (status, body) = admin_call(&f, Method::GET, &format!("{path}/stats"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body["stats"],
            json!({"appId": f.app_id, "mediaCount": 1, "bytesStored": 2000, "mediaUsed": 1, "bytesUsed": 2000,
                   "maxMedia": null, "maxBytesStored": 3000})
        );

        let (status, body) = admin_call(
            &f,
            Method::POST,
            "/admin/apps",
            Some(json!({"name": "capped", "maxBytesStored": 10, "maxMedia": 1})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(
            (&body["app"]["maxBytesStored"], &body["app"]["maxMedia"]),
            (&json!(10), &json!(1))
        );
        let (status, body) = admin_call(
            &f,
            Method::GET,
            &format!("/admin/apps/{}", body["app"]["appId"].as_str().unwrap()),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["app"]["maxMedia"], 1);
    }
}
