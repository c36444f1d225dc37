//! End to end: a real file of every default type, uploaded to the real
//! binary (SQLite + files) with the type a client would declare, comes back
//! byte for byte; content that contradicts its declared type is refused with
//! a message naming both, and nothing of it is kept. The full matrix of
//! files and declared types is in crates/storage/tests/sniffing.rs.

use crate::support;

use std::path::PathBuf;

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::json;
use support::{Backends, Fixture};

/// (sample file, declared type): every default type, then some other
/// types a client may declare for the same file.
const ACCEPTED: &[(&str, &str)] = &[
    ("aac-adts.aac", "audio/aac"),
    ("aac.m4a", "audio/mp4"),
    ("mp3-id3.mp3", "audio/mpeg"),
    ("amr-nb.amr", "audio/amr"),
    ("vorbis.ogg", "audio/ogg"),
    ("opus.opus", "audio/opus"),
    ("libreoffice.ppt", "application/vnd.ms-powerpoint"),
    ("libreoffice.doc", "application/msword"),
    (
        "libreoffice.docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    (
        "libreoffice.pptx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ),
    (
        "libreoffice.xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    ("libreoffice.pdf", "application/pdf"),
    ("utf8.txt", "text/plain"),
    ("libreoffice.xls", "application/vnd.ms-excel"),
    ("testsrc.jpg", "image/jpeg"),
    ("testsrc.png", "image/png"),
    ("testsrc.webp", "image/webp"),
    ("h264-aac.mp4", "video/mp4"),
    ("h263-aac.3gp", "video/3gpp"),
    // The same content under other names clients use.
    ("aac.m4a", "audio/aac"),
    ("opus.opus", "audio/ogg"),
    ("h263-aac.3gp", "video/mp4"),
    ("mp3-one-frame.mp3", "audio/mpeg"),
    (
        "python-docx.docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    ("libreoffice.xls", "application/msword"),
];

/// (sample file, declared type, what the message calls the content).
const REFUSED: &[(&str, &str, &str)] = &[
    ("exit.elf", "image/png", "application/x-executable"),
    (
        "exit.exe",
        "image/png",
        "application/vnd.microsoft.portable-executable",
    ),
    ("testsrc.png", "application/pdf", "image/png"),
    (
        "plain.zip",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/zip",
    ),
    (
        "libreoffice.docx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    ("script.sh", "text/plain", "text/x-shellscript"),
];

fn sample(file: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../storage/tests/samples")
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn form(file: &str, declared: &str) -> Form {
    let part = Part::bytes(sample(file))
        .file_name(file.to_owned())
        .mime_str("application/octet-stream")
        .unwrap();
    Form::new()
        .text("file_type", declared.to_owned())
        .part("file", part)
}

#[tokio::test]
async fn a_real_file_of_every_type_round_trips_and_contradictions_are_refused() {
    let f = Fixture::new(Backends::SqliteFiles).await;
    for &(file, declared) in ACCEPTED {
        let (status, body) = f.post(form(file, declared)).await;
        assert_eq!(status, StatusCode::OK, "{file} as {declared}: {body}");
        let response = f.download(body["mediaId"].as_str().unwrap()).await;
        assert_eq!(response.status(), StatusCode::OK, "{file}");
        assert_eq!(response.headers()["content-type"], declared, "{file}");
        assert!(
            response.bytes().await.unwrap() == sample(file),
            "{file} came back different"
        );
    }
    for &(file, declared, detected) in REFUSED {
        let (status, body) = f.post(form(file, declared)).await;
        assert_eq!(
            (status, body),
            (
                StatusCode::BAD_REQUEST,
                json!({
                    "message": format!(
                        "Param file content is '{detected}', which does not match file_type '{declared}'."
                    ),
                    "status": "error",
                })
            ),
            "{file} as {declared}"
        );
    }
    f.assert_stored(ACCEPTED.len()).await;
}
