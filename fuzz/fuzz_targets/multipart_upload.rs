//! Request bodies and content types POSTed to the upload route of the real
//! router, in process (SQLite in a temp dir, blobs in memory, one app and
//! token made once per process).
//!
//! Input: one byte chooses the content type — `multipart/form-data` with the
//! boundary `mvfuzz` (the seeds' boundary), with a boundary taken from the
//! input, any header value from the input, or none — and the rest is the body.
//!
//! Asserts: no panic; the answer is 200 with `{"mediaId", "status":"success"}`
//! and exactly one new blob, referenced by a row; or 400 or 413 with exactly
//! `{"message": non-empty, "status":"error"}` and nothing stored. The token is
//! valid and the rate limits far above the request rate, so 401, 429 and 503
//! would be faults here; and with SQLite and a memory store, so would a 500.

#![no_main]

mod common;

use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use mediavault_api::{ApiState, LimitSettings, Limits, router};
use mediavault_fetch::{FetchPolicy, Fetcher};
use mediavault_storage::{AppId, MediaId, NewApp, Vault};
use serde_json::Value;
use tower::ServiceExt;

/// Small, so that the fuzzer reaches 413 with short inputs.
const MAX_FILE_BYTES: u64 = 512;
const BOUNDARY: &str = "mvfuzz";

struct Fixture {
    runtime: tokio::runtime::Runtime,
    router: Router,
    vault: Vault,
    app_id: AppId,
    token: String,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let (runtime, vault) = common::vault(dir.path(), "memory://");
        let (app_id, token) = runtime.block_on(async {
            let app = vault
                .create_app(NewApp {
                    name: "fuzz".into(),
                    capi: true,
                    max_file_bytes: Some(MAX_FILE_BYTES),
                    ..NewApp::default()
                })
                .await
                .expect("app");
            let token = vault.issue_token(&app.id, None).await.expect("token").token;
            (app.id, token)
        });
        let many = NonZeroU32::new(1_000_000_000).expect("non-zero");
        let state = ApiState {
            limits: Arc::new(Limits::new(LimitSettings {
                uploads_per_second: many,
                upload_burst: many,
                ..LimitSettings::default()
            })),
            // Off: a URL the fuzzer writes must never reach the network. A
            // `file` sent as text is then a 400, as the assertions expect.
            fetcher: Fetcher::new(FetchPolicy {
                enabled: false,
                ..FetchPolicy::default()
            })
            .expect("fetcher"),
            ..ApiState::new(vault.clone())
        };
        Fixture {
            runtime,
            router: router(state),
            vault,
            app_id,
            token,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(content_type) = content_type(&mut u) else {
        return;
    };
    upload(content_type, u.take_rest());
});

fn content_type(u: &mut Unstructured) -> Result<Option<String>> {
    Ok(match u.int_in_range(0..=7u8)? {
        0 => Some(format!(
            "multipart/form-data; boundary={}",
            u.arbitrary::<&str>()?
        )),
        1 => Some(u.arbitrary()?),
        2 => None,
        _ => Some(format!("multipart/form-data; boundary={BOUNDARY}")),
    })
}

async fn blob_keys(vault: &Vault) -> (BTreeSet<String>, BTreeSet<String>) {
    let referenced = vault.referenced_blob_keys().await.expect("referenced keys");
    let stored = vault.stored_blob_keys().await.expect("stored keys");
    (referenced.into_iter().collect(), stored.into_iter().collect())
}

fn upload(content_type: Option<String>, body: &[u8]) {
    let fixture = fixture();
    let mut request =
        Request::post(format!("/partner/app/{}/media", fixture.app_id)).header("token", &fixture.token);
    if let Some(value) = content_type {
        request = request.header(header::CONTENT_TYPE, value);
    }
    // A content type that is no valid header value never reaches a server.
    let Ok(request) = request.body(Body::from(body.to_vec())) else {
        return;
    };
    fixture.runtime.block_on(async {
        let before = blob_keys(&fixture.vault).await;
        let response = fixture.router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let reply: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "{status}: body is not JSON: {:?}",
                String::from_utf8_lossy(&bytes)
            )
        });
        let after = blob_keys(&fixture.vault).await;
        let reply = reply.as_object().expect("a JSON object");
        match status {
            StatusCode::OK => {
                assert_eq!(reply.len(), 2, "{reply:?}");
                assert_eq!(reply["status"], "success");
                let media_id = reply["mediaId"].as_str().expect("mediaId");
                assert_eq!(
                    after.0.difference(&before.0).count(),
                    1,
                    "one new referenced blob"
                );
                assert_eq!(after.1.difference(&before.1).count(), 1, "one new stored blob");
                assert!(after.0.is_superset(&before.0) && after.1.is_superset(&before.1));
                // Keep the stores small over millions of runs.
                fixture
                    .vault
                    .delete(&fixture.app_id, &MediaId::new(media_id))
                    .await
                    .expect("delete");
                assert_eq!(blob_keys(&fixture.vault).await, before);
            }
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => {
                assert_eq!(reply.len(), 2, "{reply:?}");
                assert_eq!(reply["status"], "error");
                let message = reply["message"].as_str().expect("message");
                assert!(!message.is_empty());
                assert_eq!(after, before, "{status} ({message}) left something stored");
            }
            other => panic!("unexpected status {other}: {reply:?}"),
        }
    });
}
