//! End to end: the reaper deletes what must go and nothing else, survives
//! crashes and outages at every step, and runs safely on many replicas.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    Backends, Fixture, Gate, Server, Stores, app_with_retention, blob_key_of, cli, cli_with, fanned_out_key,
    fetch_rows, png_bytes, service_can_decrypt, wrapped_key_of,
};

fn reap_once(stores: &Stores) -> Value {
    let (ok, out, err) = cli(stores, &["reap", "--once"]);
    assert!(ok, "reap --once failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|_| panic!("not JSON: {out}"))
}

/// `mediavault reap MODE` with `reaper.stale_upload_after` set to `stale`;
/// its JSON report.
fn reap_with_stale(stores: &Stores, mode: &str, stale: &str) -> Value {
    let (ok, out, err) = cli_with(
        stores,
        &["reap", mode],
        &[("MEDIAVAULT__REAPER__STALE_UPLOAD_AFTER", stale)],
    );
    assert!(ok, "reap {mode} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|_| panic!("not JSON: {out}"))
}

/// `reap --sweep` with `reaper.stale_upload_after` set to `stale`; its report.
fn sweep(stores: &Stores, stale: &str) -> Value {
    reap_with_stale(stores, "--sweep", stale)
}

/// A fixture whose app keeps media for `retention`.
async fn fixture_with_retention(backends: Backends, retention: &str, env: &[(&str, &str)]) -> Fixture {
    let stores = Stores::new(backends).await;
    let (app_id, token) = app_with_retention(&stores, retention);
    Fixture::serve(stores, app_id, token, env)
}

#[tokio::test]
async fn expired_media_are_reaped_and_nothing_else() {
    for backends in [Backends::SqliteFiles, Backends::PostgresS3] {
        let f = fixture_with_retention(backends, "1s", &[("MEDIAVAULT__REAPER__ENABLED", "false")]).await;
        for len in [100, 70_000, 6 * 1024 * 1024] {
            f.upload(&png_bytes(len)).await;
        }
        // Another app's media, far from expiry, must survive.
        let (keeper_app, keeper_token) = app_with_retention(&f.stores, "30d");
        let keeper_url = f.server.url(&format!("/partner/app/{keeper_app}/media"));
        let part = reqwest::multipart::Part::bytes(png_bytes(500)).file_name("k.png");
        let form = reqwest::multipart::Form::new()
            .text("file_type", "image/png")
            .part("file", part);
        let response = f
            .client
            .post(&keeper_url)
            .header("token", &keeper_token)
            .multipart(form)
            .send()
            .await
            .unwrap();
        let kept = response.json::<Value>().await.unwrap()["mediaId"]
            .as_str()
            .unwrap()
            .to_owned();
        let kept_url = format!("{keeper_url}/{kept}");
        tokio::time::sleep(Duration::from_millis(1200)).await;

        assert_eq!(
            reap_once(&f.stores),
            json!({"expired": 3, "deleted": 0, "abandoned": 0}),
            "{backends:?}"
        );
        f.assert_stored(1).await;
        let response = f
            .client
            .get(&kept_url)
            .header("token", &keeper_token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            reap_once(&f.stores),
            json!({"expired": 0, "deleted": 0, "abandoned": 0})
        );
    }
}

/// Deleted while the blob store was down: the key is shredded at once (the
/// row keeps no wrapped key, and nothing the service holds decrypts the
/// blob that stays); a pass while the store is still down keeps the row and
/// fails cleanly; the first pass after it returns removes both.
#[tokio::test]
async fn deletion_with_the_blob_store_down_is_finished_by_the_reaper() {
    let mut stores = Stores::new(Backends::PostgresS3).await;
    let garage = stores.blobs.endpoint.clone().unwrap();
    let gate = Gate::new(garage.trim_start_matches("http://"), true).await;
    stores.blobs.endpoint = Some(format!("http://{}", gate.addr));
    let (app_id, token) = app_with_retention(&stores, "30d");
    let env = [
        ("MEDIAVAULT__BLOBS__TIMEOUT", "2s"),
        ("MEDIAVAULT__REAPER__ENABLED", "false"),
    ];
    let mut f = Fixture::serve(stores, app_id, token, &env);
    let gone = f.upload(&png_bytes(1000)).await;
    let kept = f.upload(&png_bytes(2000)).await;

    gate.close();
    let response = f.request(reqwest::Method::DELETE, &format!("/{gone}"), &[]).await;
    assert_eq!(response.status(), 200, "the shred needs only the database");
    assert_eq!(f.download(&gone).await.status(), 404);

    let mut direct = Stores::new(Backends::PostgresS3).await;
    direct.database_url = f.stores.database_url.clone();
    direct.blobs = f.stores.blobs.clone();
    direct.blobs.endpoint = Some(garage.clone());
    direct.keys = f.stores.keys.clone();
    let (rows, blobs) = direct.inventory().await;
    assert_eq!(
        (rows.len(), blobs.len()),
        (2, 2),
        "the row and blob wait for the reaper"
    );
    assert_eq!(wrapped_key_of(&direct, &gone).await, None, "the key is shredded");
    let stored = async |id: &str| {
        let key = blob_key_of(&direct, id).await.expect("the row stays");
        direct.read_blob(&key).await
    };
    let (left, kept_blob) = (stored(&gone).await, stored(&kept).await);
    assert!(
        !service_can_decrypt(&direct, &gone, &left, 1000).await,
        "the blob left behind no longer decrypts"
    );
    assert!(service_can_decrypt(&direct, &kept, &kept_blob, 2000).await);

    let (ok, out, err) = cli_with(
        &f.stores,
        &["reap", "--once"],
        &[("MEDIAVAULT__BLOBS__TIMEOUT", "2s")],
    );
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report,
        json!({"expired": 0, "deleted": 0, "abandoned": 0}),
        "nothing reaped while down"
    );
    assert_eq!(
        direct.inventory().await.0.len(),
        2,
        "the row stays for the next pass"
    );

    gate.open();
    assert_eq!(
        reap_once(&direct),
        json!({"expired": 0, "deleted": 1, "abandoned": 0})
    );
    let (rows, blobs) = direct.inventory().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows, blobs);
    assert_eq!(f.download(&kept).await.status(), 200);
    // Clean-up runs after this runtime stops serving the gate: go direct.
    f.stores.blobs.endpoint = Some(garage);
}

/// Starts a 50 MB upload and sends its first 12 MiB (past two blob parts),
/// leaving it unfinished; returns the connection.
async fn start_large_upload(server: &Server, app_id: &str, token: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = server.base_url.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /partner/app/{app_id}/media HTTP/1.1\r\nHost: {addr}\r\ntoken: {token}\r\n\
         Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 50000000\r\n\r\n\
         --XyZ\r\nContent-Disposition: form-data; name=\"file_type\"\r\n\r\nimage/png\r\n--XyZ\r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&png_bytes(12 * 1024 * 1024)).await.unwrap();
    socket.flush().await.unwrap();
    socket
}

/// A server killed mid-upload leaves an `uploading` row (and perhaps an
/// unfinished multipart upload); once stale, one pass removes it.
#[tokio::test]
async fn uploads_cut_by_a_crash_are_reaped_as_abandoned() {
    let stores = Stores::new(Backends::PostgresS3).await;
    let (app_id, token) = app_with_retention(&stores, "30d");
    let env = [
        ("MEDIAVAULT__REAPER__STALE_UPLOAD_AFTER", "1s"),
        ("MEDIAVAULT__REAPER__ENABLED", "false"),
    ];
    let mut server = Server::start_with(&stores, &env);
    let socket = start_large_upload(&server, &app_id, &token).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.kill();
    drop(socket);

    let (rows, _) = stores.inventory().await;
    assert_eq!(rows.len(), 1, "the intent row outlives the crash");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The pass judges staleness by its own setting, the same as the server's.
    assert_eq!(
        reap_with_stale(&stores, "--once", "1s"),
        json!({"expired": 0, "deleted": 0, "abandoned": 1})
    );
    let (rows, blobs) = stores.inventory().await;
    assert!(
        rows.is_empty() && blobs.is_empty(),
        "rows {rows:?} blobs {blobs:?}"
    );
}

/// Three replicas on one database and bucket, each with its own reaper on
/// a one-second schedule: every expired file is reaped exactly once and no
/// pass fails.
#[tokio::test]
async fn three_replicas_reap_each_file_exactly_once() {
    let stores = Stores::new(Backends::PostgresS3).await;
    let (app_id, token) = app_with_retention(&stores, "2s");
    let env = [("MEDIAVAULT__REAPER__SCHEDULE", "* * * * * *")];
    let replicas: Vec<Server> = (0..3).map(|_| Server::start_with(&stores, &env)).collect();
    let client = reqwest::Client::new();
    for i in 0..30 {
        let url = replicas[i % 3].url(&format!("/partner/app/{app_id}/media"));
        let part = reqwest::multipart::Part::bytes(png_bytes(1000 + i)).file_name("a.png");
        let form = reqwest::multipart::Form::new()
            .text("file_type", "image/png")
            .part("file", part);
        let response = client
            .post(url)
            .header("token", &token)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (rows, blobs) = stores.inventory().await;
        if rows.is_empty() && blobs.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not reaped in time: {} rows, {} blobs",
            rows.len(),
            blobs.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A replica's last pass may still be writing its log line.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut reaped = 0;
    for replica in &replicas {
        let log = replica.log();
        assert!(!log.contains("reaper pass failed"), "{log}");
        for line in log.lines().filter(|l| l.contains("reaper pass")) {
            let count = line
                .split("expired=")
                .nth(1)
                .and_then(|s| s.split_whitespace().next());
            reaped += count.and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    assert_eq!(
        reaped, 30,
        "each expired file reaped exactly once across replicas"
    );
}

/// The orphan sweep deletes blobs no row references, once they are older
/// than the stale threshold, and keeps every referenced one.
#[tokio::test]
async fn orphan_sweep_removes_only_unreferenced_blobs() {
    let f = fixture_with_retention(Backends::SqliteFiles, "30d", &[]).await;
    let kept = f.upload(&png_bytes(800)).await;
    let name = uuid::Uuid::new_v4().simple().to_string();
    let blob_dir = std::path::Path::new(&f.stores.blobs.url)
        .join("media")
        .join(&name[..2]);
    std::fs::create_dir_all(&blob_dir).unwrap();
    std::fs::write(blob_dir.join(&name), b"left by a crash").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(sweep(&f.stores, "1s"), json!({"removed": 1, "abortedUploads": 0}));
    assert!(!blob_dir.join(&name).exists());
    f.assert_stored(1).await;
    assert_eq!(f.download(&kept).await.status(), 200);
}

/// The sweep lists and deletes only under the service's own prefix
/// (`media/`), and there only keys the service makes: whatever else shares
/// the directory or the bucket survives it, however old (another
/// installation's blobs under a nested prefix among them), while an orphan
/// goes.
#[tokio::test]
async fn the_sweep_touches_nothing_outside_the_media_prefix() {
    const FOREIGN: [&str; 6] = [
        "notes.txt",
        "mediavault.db",
        "backup/dev.key",
        "media-old/blob",
        "media/notes.txt",
        "media/media/4f/4fd1c6b0a7e24c3f9e8d2b1a0c9f8e7d",
    ];
    for backends in [Backends::SqliteFiles, Backends::SqliteS3] {
        let f = fixture_with_retention(backends, "30d", &[("MEDIAVAULT__REAPER__ENABLED", "false")]).await;
        let kept = f.upload(&png_bytes(800)).await;
        for key in FOREIGN {
            f.stores.write_blob(key, b"not the service's".to_vec()).await;
        }
        let name = uuid::Uuid::new_v4().simple().to_string();
        f.stores
            .write_blob(
                &format!("media/{}/{name}", &name[..2]),
                b"left by a crash".to_vec(),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            sweep(&f.stores, "1s"),
            json!({"removed": 1, "abortedUploads": 0}),
            "{backends:?}"
        );
        for key in FOREIGN {
            assert_eq!(f.stores.read_blob(key).await, b"not the service's", "{key}");
        }
        assert_eq!(f.download(&kept).await.status(), 200);
    }
}

/// Blob keys were flat (`media/<name>`) before they fanned out over
/// directories (`media/<xy>/<name>`). A medium whose row names a blob of the
/// old layout is served, kept by the sweep however old, and deleted with its
/// blob; a stray of the old layout is still an orphan.
#[tokio::test]
async fn blobs_of_the_flat_layout_are_served_kept_and_deleted() {
    for backends in [Backends::SqliteFiles, Backends::PostgresS3] {
        let f = fixture_with_retention(backends, "30d", &[("MEDIAVAULT__REAPER__ENABLED", "false")]).await;
        let bytes = png_bytes(3000);
        let id = f.upload(&bytes).await;
        let key = blob_key_of(&f.stores, &id).await.expect("a stored row");
        let (_, name) = fanned_out_key(&key);
        let flat = format!("media/{name}");
        let blob = f.stores.read_blob(&key).await;
        f.stores.write_blob(&flat, blob).await;
        f.stores.delete_blob(&key).await;
        let moved: Vec<(String,)> = fetch_rows(
            &f.stores,
            "UPDATE media SET blob_key = 'media/' || substr(blob_key, 10) WHERE id = $1 RETURNING blob_key",
            Some(&id),
        )
        .await;
        assert_eq!(moved, [(flat.clone(),)]);
        let stray = format!("media/{}", uuid::Uuid::new_v4().simple());
        f.stores.write_blob(&stray, b"left by a crash".to_vec()).await;

        let download = f.download(&id).await;
        assert_eq!(download.status(), 200, "{backends:?}");
        assert_eq!(download.bytes().await.unwrap(), bytes);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            sweep(&f.stores, "1s"),
            json!({"removed": 1, "abortedUploads": 0}),
            "{backends:?}"
        );
        f.assert_stored(1).await;
        let delete = f.request(reqwest::Method::DELETE, &format!("/{id}"), &[]).await;
        assert_eq!(delete.status(), 200);
        f.assert_stored(0).await;
    }
}

/// A server killed while writing a blob to the file backend leaves the
/// local store's staging file (`media/<xy>/<name>#1`), which listings do not show.
/// The sweep removes it once older than `reaper.stale_upload_after` and its
/// upload's row is gone (the reaper takes it once the upload has shown no
/// progress for as long); it keeps a younger one, and an old one whose
/// upload still runs (a slow upload writes a 5 MiB part at a time). (The
/// crashed one is aged by its modification time rather than by waiting.)
#[tokio::test]
async fn the_sweep_removes_staging_files_of_crashed_uploads() {
    let stores = Stores::new(Backends::SqliteFiles).await;
    let (app_id, token) = app_with_retention(&stores, "30d");
    let mut server = Server::start_with(&stores, &[("MEDIAVAULT__REAPER__ENABLED", "false")]);
    let socket = start_large_upload(&server, &app_id, &token).await;
    let media_dir = std::path::Path::new(&stores.blobs.url).join("media");
    let staging_files = || -> Vec<std::path::PathBuf> {
        walkdir::WalkDir::new(&media_dir)
            .into_iter()
            .filter_map(|entry| Some(entry.ok()?.into_path()))
            .filter(|path| path.to_string_lossy().ends_with("#1"))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while staging_files().is_empty() {
        assert!(Instant::now() < deadline, "no staging file was written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill();
    drop(socket);
    let crashed = staging_files().remove(0);
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&crashed)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    // Beside the crashed one, in its fan-out directory.
    let young = crashed.with_file_name(format!("{}#1", uuid::Uuid::new_v4().simple()));
    std::fs::write(&young, b"an upload being written").unwrap();

    assert_eq!(
        reap_once(&stores),
        json!({"expired": 0, "deleted": 0, "abandoned": 0})
    );
    assert_eq!(sweep(&stores, "1h"), json!({"removed": 0, "abortedUploads": 0}));
    assert!(crashed.exists(), "kept while its upload's row runs");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        reap_with_stale(&stores, "--once", "1s"),
        json!({"expired": 0, "deleted": 0, "abandoned": 1})
    );
    assert_eq!(sweep(&stores, "1h"), json!({"removed": 1, "abortedUploads": 0}));
    assert!(!crashed.exists(), "the crashed upload's staging file is gone");
    assert!(young.exists(), "a young staging file is kept");
}

/// With the metadata store gone, passes fail cleanly and the server keeps
/// serving what it can; once the store is back, the next pass finishes the
/// work. (Multi-threaded: the gate must forward while the test thread waits
/// for the server to start.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_fail_cleanly_while_the_database_is_down_and_recover() {
    let direct = Stores::new(Backends::PostgresS3).await;
    // Long enough that neither upload expires before the gate closes, even
    // on a loaded machine where the second takes a while: with 1 s, a pass
    // between the uploads could reap the first while the database was
    // still there.
    let (app_id, token) = app_with_retention(&direct, "3s");
    // The gate stands before the server the tests were given, wherever it listens.
    let (server, database) = direct.database_url.rsplit_once('/').unwrap();
    let (_, address) = server.rsplit_once('@').unwrap();
    let gate = Gate::new(address, true).await;
    let mut gated = Stores::new(Backends::SqliteFiles).await;
    gated.database_url = format!("postgres://postgres@{}/{database}", gate.addr);
    gated.blobs = direct.blobs.clone();
    gated.keys = direct.keys.clone();
    let env = [("MEDIAVAULT__REAPER__SCHEDULE", "* * * * * *")];
    let mut f = Fixture::serve(gated, app_id, token, &env);
    f.upload(&png_bytes(300)).await;
    f.upload(&png_bytes(400)).await;

    gate.close();
    // Past both expiries, with the database away all along.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    assert!(
        f.server.is_running(),
        "a failed pass must not take the server down"
    );
    assert!(
        f.server.log().contains("reaper pass failed"),
        "{}",
        f.server.log()
    );
    assert_eq!(
        direct.inventory().await.0.len(),
        2,
        "nothing reaped while the database is away"
    );

    gate.open();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (rows, blobs) = direct.inventory().await;
        if rows.is_empty() && blobs.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "not recovered: {rows:?} {blobs:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `reaper.stale_upload_after` is the pass's setting, not the one the upload
/// started under: an upload begun while it was an hour is abandoned by a
/// pass run with one second, once it is older than that.
#[tokio::test]
async fn a_lowered_stale_upload_after_applies_to_uploads_already_running() {
    for backends in [Backends::SqliteFiles, Backends::PostgresS3] {
        let stores = Stores::new(backends).await;
        let (app_id, _) = app_with_retention(&stores, "30d");
        // Started under the fixture's setting of an hour, and still running.
        let vault = stores.vault().await;
        let app = vault.get_app(&app_id.parse().unwrap()).await.unwrap();
        let mut upload = vault.begin_upload(&app, Some("slow.png")).await.unwrap();
        upload.write(&png_bytes(1000)).await.unwrap();

        assert_eq!(
            reap_with_stale(&stores, "--once", "1h"),
            json!({"expired": 0, "deleted": 0, "abandoned": 0}),
            "{backends:?}: young under the old setting"
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            reap_with_stale(&stores, "--once", "1s"),
            json!({"expired": 0, "deleted": 0, "abandoned": 1}),
            "{backends:?}: stale under the new one"
        );
        assert!(
            upload.finish("image/png").await.is_err(),
            "the reaped upload cannot complete"
        );
        let (rows, blobs) = stores.inventory().await;
        assert!(
            rows.is_empty() && blobs.is_empty(),
            "rows {rows:?} blobs {blobs:?}"
        );
        vault.close().await;
    }
}

/// Incomplete multipart uploads under the service's `media/` prefix — what
/// an upload leaves when its abort fails with the store down — are aborted
/// by the sweep once older than `reaper.stale_upload_after`, without any
/// bucket lifecycle rule; younger ones, one outside the prefix, and those
/// of uploads still running (their rows uploading), however old, are left
/// alone.
#[tokio::test]
async fn the_sweep_aborts_stale_multipart_uploads_under_the_media_prefix() {
    use object_store::ObjectStoreExt;
    let stores = Stores::new(Backends::SqliteS3).await;
    let store = stores.raw_blob_store();
    let mut left_behind = store.put_multipart(&"media/left-behind".into()).await.unwrap();
    left_behind.put_part(png_bytes(1000).into()).await.unwrap();
    let mut elsewhere = store.put_multipart(&"elsewhere/kept".into()).await.unwrap();
    elsewhere.put_part(png_bytes(1000).into()).await.unwrap();
    // An upload past its first 5 MiB part, so stored as a multipart upload.
    let (app_id, _) = app_with_retention(&stores, "30d");
    let vault = stores.vault().await;
    let app = vault.get_app(&app_id.parse().unwrap()).await.unwrap();
    let file = png_bytes(7 * 1024 * 1024);
    let mut running = vault.begin_upload(&app, None).await.unwrap();
    running.write(&file[..6 * 1024 * 1024]).await.unwrap();

    assert_eq!(
        reap_with_stale(&stores, "--sweep", "1h"),
        json!({"removed": 0, "abortedUploads": 0}),
        "young uploads may still be running"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        reap_with_stale(&stores, "--sweep", "1s"),
        json!({"removed": 0, "abortedUploads": 1})
    );
    assert_eq!(
        reap_with_stale(&stores, "--sweep", "1s"),
        json!({"removed": 0, "abortedUploads": 0}),
        "the listing no longer shows it"
    );

    // The store no longer knows the aborted upload; the others are intact.
    assert!(left_behind.complete().await.is_err(), "aborted");
    elsewhere.complete().await.unwrap();
    assert_eq!(stores.read_blob("elsewhere/kept").await, png_bytes(1000));
    running.write(&file[6 * 1024 * 1024..]).await.unwrap();
    let id = running.finish("image/png").await.unwrap();
    let media = vault.find(&app.id, &id).await.unwrap();
    assert_eq!(media.info.size_bytes, file.len() as u64);
    vault.close().await;
}

/// One pass reaps thousands of expired media: several batches claimed one
/// after another and finished (blobs, then rows) at once, each row exactly
/// once, and nothing left behind. On SQLite a claim reads, then writes,
/// while other batches' finishes write: it must wait its turn, not fail.
#[tokio::test]
async fn one_pass_reaps_many_batches_at_once_and_each_row_once() {
    use futures::{StreamExt, TryStreamExt};
    use mediavault_storage::{NewApp, now_millis};

    const MEDIA: usize = 3_500;
    for backends in [Backends::SqliteFiles, Backends::PostgresS3] {
        let stores = Stores::new(backends).await;
        let vault = stores.vault().await;
        let app = vault
            .create_app(NewApp {
                name: "many".into(),
                capi: true,
                retention: Some(Duration::from_secs(1)),
                ..NewApp::default()
            })
            .await
            .unwrap();
        futures::stream::iter(0..MEDIA)
            .map(|i| {
                let (vault, app) = (vault.clone(), app.clone());
                async move {
                    let mut upload = vault.begin_upload(&app, None).await?;
                    upload.write(format!("file {i}\n").as_bytes()).await?;
                    upload.finish("text/plain").await
                }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        let later = now_millis() + 2_000;
        let report = mediavault_reaper::reap_once(&vault, later, Duration::from_secs(600))
            .await
            .unwrap();
        assert_eq!(
            (
                report.expired,
                report.deleted,
                report.abandoned,
                report.blob_failures
            ),
            (MEDIA as u64, 0, 0, 0),
            "{backends:?}"
        );
        assert!(
            vault.referenced_blob_keys().await.unwrap().is_empty(),
            "{backends:?}: rows left"
        );
        assert!(
            vault.stored_blob_keys().await.unwrap().is_empty(),
            "{backends:?}: blobs left"
        );
        let again = mediavault_reaper::reap_once(&vault, later, Duration::from_secs(600))
            .await
            .unwrap();
        assert_eq!(again.expired, 0, "{backends:?}");
        vault.close().await;
    }
}
