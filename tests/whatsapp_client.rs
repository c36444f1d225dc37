//! End to end: a public WhatsApp Cloud API client library, as its users run
//! it and changed in nothing but its base URL, round-trips real files through
//! the real binary's WhatsApp Cloud media surface: upload, URL and metadata,
//! download through that URL, delete, and the Graph error after it.
//!
//! The client is @great-detail/whatsapp from the npm registry, pinned by
//! tests/clients/package-lock.json and installed by scripts/client-tools.sh
//! (`make test` runs it first); tests/clients/whatsapp_cloud.mjs drives it
//! with the library's public calls only and prints what it checked.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::{Backends, Fixture, Stores, app_and_token, cli};

/// The phone-number id the app is reached by, as Meta issues them (15 digits).
const PHONE_NUMBER_ID: &str = "123456789012345";

/// (sample file, its MIME type): a photo and a document.
const FILES: &[(&str, &str)] = &[
    ("testsrc.jpg", "image/jpeg"),
    ("libreoffice.pdf", "application/pdf"),
];

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients")
}

fn sample_path(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../storage/tests/samples")
        .join(file)
}

/// Fails the test, naming the script to run, unless the pinned library is installed.
fn require_client_library() {
    let manifest = clients_dir().join("node_modules/@great-detail/whatsapp/package.json");
    assert!(
        manifest.is_file(),
        "the WhatsApp Cloud API client library is not installed ({} is missing): \
         run scripts/client-tools.sh (`make test` runs it before the tests)",
        manifest.display()
    );
}

/// A CAPI app reached by `PHONE_NUMBER_ID`, with a token, served on fresh stores.
async fn fixture(backends: Backends) -> Fixture {
    let stores = Stores::new(backends).await;
    let (app_id, token) = app_and_token(&stores, true);
    let (ok, out, err) = cli(
        &stores,
        &[
            "apps",
            "update",
            "--app",
            &app_id,
            "--wa-phone-number-id",
            PHONE_NUMBER_ID,
        ],
    );
    assert!(ok, "apps update --wa-phone-number-id failed: {out} {err}");
    // The lookup's url is a signed link, which this client follows without
    // its token.
    let links_keys = mediavault_api::LinkKeys::generate_line("wa");
    Fixture::serve(stores, app_id, token, &[("MEDIAVAULT__LINKS__KEYS", &links_keys)])
}

/// Runs the client program on `file`; returns its summary and the bytes it downloaded.
fn run_client(f: &Fixture, file: &str, mime_type: &str) -> (Value, Vec<u8>) {
    let downloaded_to = f.stores.dir().join(format!("downloaded-{file}"));
    let output = Command::new("node")
        .arg(clients_dir().join("whatsapp_cloud.mjs"))
        .args(["--base-url", &f.server.base_url])
        .args(["--phone-number-id", PHONE_NUMBER_ID])
        .arg("--file")
        .arg(sample_path(file))
        .args(["--mime-type", mime_type])
        .arg("--downloaded-to")
        .arg(&downloaded_to)
        .env("WHATSAPP_TOKEN", &f.token)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run node ({e}): install Node.js 20.19+ and run scripts/client-tools.sh")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("{file}: the client printed no summary ({e})\nstdout: {stdout}\nstderr: {stderr}")
    });
    assert!(
        output.status.success() && summary["ok"] == true,
        "{file}: the client's round trip failed ({}): {:#}\nthe failed call: {:#}\nstderr: {stderr}\nserver log:\n{}",
        output.status,
        summary["failures"],
        summary["failed"],
        f.server.log()
    );
    let downloaded = std::fs::read(&downloaded_to)
        .unwrap_or_else(|e| panic!("{file}: no downloaded copy at {}: {e}", downloaded_to.display()));
    (summary, downloaded)
}

/// The file size as the server wrote it: Meta writes a string, some of its
/// documents a number; the client takes both.
fn file_size(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| value.as_str()?.parse().ok())
}

/// Each sample, through the client: what the server says of the file and
/// what comes back through its URL are the file itself, the delete removes
/// row and blob, and the id is then unknown with the Graph error code 100.
async fn round_trip(backends: Backends) {
    require_client_library();
    let f = fixture(backends).await;
    for &(file, mime_type) in FILES {
        let original = std::fs::read(sample_path(file)).unwrap();
        let sha256 = hex::encode(Sha256::digest(&original));
        let (summary, downloaded) = run_client(&f, file, mime_type);

        assert_eq!(summary["library"]["name"], "@great-detail/whatsapp");
        let id = summary["upload"]["id"].as_str().unwrap_or_default();
        assert!(
            (16..=19).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()),
            "{file}: media id {id:?}"
        );
        let media = &summary["media"];
        assert_eq!(media["id"], id, "{file}");
        assert_eq!(media["messaging_product"], "whatsapp", "{file}");
        assert_eq!(media["mime_type"], mime_type, "{file}");
        assert_eq!(media["sha256"], sha256.as_str(), "{file}");
        assert_eq!(
            file_size(&media["file_size"]),
            Some(original.len() as u64),
            "{file}"
        );
        let url = media["url"].as_str().unwrap_or_default();
        assert!(
            url.starts_with(&format!("{}/l/", f.server.base_url)),
            "{file}: the URL {url:?} is not a link of this server"
        );
        assert_eq!(summary["download"]["contentType"], mime_type, "{file}");
        assert!(
            downloaded == original,
            "{file}: the downloaded bytes differ from the uploaded ones"
        );
        assert_eq!(summary["delete"]["success"], true, "{file}");
        let error = &summary["afterDelete"]["body"]["error"];
        assert_eq!(
            summary["afterDelete"]["status"], 400,
            "{file}: {:#}",
            summary["afterDelete"]
        );
        assert_eq!(error["code"], 100, "{file}: {error:#}");
        assert_eq!(error["error_subcode"], 33, "{file}: {error:#}");
    }
    f.assert_stored(0).await;
}

#[tokio::test]
async fn a_public_whatsapp_client_round_trips_media_on_postgres_and_garage() {
    round_trip(Backends::PostgresS3).await;
}

#[tokio::test]
async fn a_public_whatsapp_client_round_trips_media_on_sqlite_and_files() {
    round_trip(Backends::SqliteFiles).await;
}
