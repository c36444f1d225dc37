//! End to end: the operator's controls — the admin API under `/admin` and
//! the matching `apps` and `tokens` commands — on SQLite + files and on
//! Postgres + Garage.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Backends, Fixture, Server, Stores, cli, png_bytes};

const ADMIN_TOKEN: &str = "admin-0123456789abcdef0123456789abcdef";

struct Admin {
    fixture: Fixture,
}

impl Admin {
    async fn start(backends: Backends) -> Admin {
        Admin {
            fixture: Fixture::with_env(backends, &[("MEDIAVAULT__ADMIN__TOKEN", ADMIN_TOKEN)]).await,
        }
    }

    /// An admin request with the admin token; returns status and JSON body.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let f = &self.fixture;
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

    /// Uploads `bytes` declared as `file_type` with `token` to `app_id`.
    async fn upload(
        &self,
        app_id: &str,
        token: &str,
        file_type: &str,
        bytes: Vec<u8>,
    ) -> (StatusCode, Value) {
        let f = &self.fixture;
        let form = reqwest::multipart::Form::new()
            .text("file_type", file_type.to_owned())
            .part("file", reqwest::multipart::Part::bytes(bytes).file_name("f"));
        let response = f
            .client
            .post(f.server.url(&format!("/partner/app/{app_id}/media")))
            .header("token", token)
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn error(message: &str) -> Value {
    json!({"message": message, "status": "error"})
}

async fn admin_api_manages_apps_tokens_and_stats(backends: Backends) {
    let admin = Admin::start(backends).await;
    let f = &admin.fixture;

    // Only the admin token opens the admin API; an app token does not.
    for auth in [None, Some("wrong-token"), Some(f.token.as_str())] {
        let mut request = f.client.get(f.server.url("/admin/apps"));
        if let Some(auth) = auth {
            request = request.bearer_auth(auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            error("Authentication Failed")
        );
    }

    let (status, created) = admin
        .call(
            Method::POST,
            "/admin/apps",
            Some(json!({
                "name": "shop",
                "retentionSeconds": 3600,
                "maxFileBytes": 1000,
                "allowedTypes": ["Image/PNG"],
                "uploadsPerSecond": 50,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"], "success");
    let app = &created["app"];
    let app_id = app["appId"].as_str().unwrap().to_owned();
    assert_eq!(app["name"], "shop");
    assert_eq!(app["capi"], true);
    assert_eq!(app["retentionSeconds"], 3600);
    assert_eq!(app["maxFileBytes"], 1000);
    assert_eq!(app["allowedTypes"], json!(["image/png"]));
    assert_eq!(app["uploadsPerSecond"], 50);

    let (status, listed) = admin.call(Method::GET, "/admin/apps", None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = listed["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["appId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [f.app_id.as_str(), app_id.as_str()], "oldest first");
    let (status, got) = admin
        .call(Method::GET, &format!("/admin/apps/{app_id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["app"], *app);

    // A token is shown once, then only by id.
    let (status, issued) = admin
        .call(
            Method::POST,
            &format!("/admin/apps/{app_id}/tokens"),
            Some(json!({"label": "web"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let token = issued["token"]["token"].as_str().unwrap().to_owned();
    let token_id = issued["token"]["tokenId"].as_str().unwrap().to_owned();
    assert!(token.starts_with("mv_"));

    // The app's settings hold for uploads.
    let (status, body) = admin.upload(&app_id, &token, "image/png", png_bytes(1000)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = admin.upload(&app_id, &token, "image/png", png_bytes(1001)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let (status, body) = admin
        .upload(&app_id, &token, "text/plain", b"hello".to_vec())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "Param file must be a file with one of the following types: image/png. Received file of type 'text/plain'."
    );

    let (status, listed) = admin
        .call(Method::GET, &format!("/admin/apps/{app_id}/tokens"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !listed.to_string().contains(&token),
        "a listing never shows the secret"
    );
    let tokens = listed["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["tokenId"], token_id.as_str());
    assert_eq!(tokens[0]["label"], "web");
    assert!(tokens[0]["lastUsedAt"].is_string(), "use is recorded: {listed}");
    assert!(tokens[0]["revokedAt"].is_null());

    // Updates apply to the next upload; null restores a default.
    let (status, updated) = admin
        .call(
            Method::PATCH,
            &format!("/admin/apps/{app_id}"),
            Some(json!({"maxFileBytes": 2000, "allowedTypes": null, "name": "shop 2"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["app"]["name"], "shop 2");
    assert_eq!(updated["app"]["allowedTypes"].as_array().unwrap().len(), 19);
    assert_eq!(updated["app"]["retentionSeconds"], 3600, "left as it was");
    let (status, body) = admin
        .upload(&app_id, &token, "text/plain", b"hello".to_vec())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = admin.upload(&app_id, &token, "image/png", png_bytes(1500)).await;
    assert_eq!(status, StatusCode::OK);

    let (status, stats) = admin
        .call(Method::GET, &format!("/admin/apps/{app_id}/stats"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        stats["stats"],
        json!({"appId": app_id, "mediaCount": 3, "bytesStored": 1000 + 5 + 1500,
               "mediaUsed": 3, "bytesUsed": 1000 + 5 + 1500, "maxMedia": null, "maxBytesStored": null})
    );

    // A revoked token fails at once; revoking twice is fine; unknown is 404.
    let path = format!("/admin/apps/{app_id}/tokens/{token_id}");
    let (status, body) = admin.call(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"message": "Token revoked", "status": "success"}));
    let (status, _) = admin.call(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = admin.upload(&app_id, &token, "image/png", png_bytes(10)).await;
    assert_eq!(
        (status, body),
        (StatusCode::UNAUTHORIZED, error("Authentication Failed"))
    );
    let (status, body) = admin
        .call(
            Method::DELETE,
            &format!("/admin/apps/{app_id}/tokens/0000000000000000"),
            None,
        )
        .await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, error("Token not found")));
    let (_, listed) = admin
        .call(Method::GET, &format!("/admin/apps/{app_id}/tokens"), None)
        .await;
    assert!(listed["tokens"][0]["revokedAt"].is_string(), "{listed}");

    // Deleting the app shreds its media at once; the reaper removes blobs,
    // rows and finally the app; the other app's media stay.
    let kept = f.upload(&png_bytes(100)).await;
    f.assert_stored(4).await;
    let (status, body) = admin
        .call(Method::DELETE, &format!("/admin/apps/{app_id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"message": "App deleted; 3 media shredded", "mediaShredded": 3, "status": "success"})
    );
    let (status, body) = admin
        .call(Method::GET, &format!("/admin/apps/{app_id}"), None)
        .await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, error("App not found")));
    let (status, _) = admin
        .call(Method::DELETE, &format!("/admin/apps/{app_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (ok, out, err) = cli(&f.stores, &["reap", "--once"]);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["deleted"], 3);
    f.assert_stored(1).await;
    assert_eq!(f.download(&kept).await.status(), StatusCode::OK);
    let (_, listed) = admin.call(Method::GET, "/admin/apps", None).await;
    assert_eq!(listed["apps"].as_array().unwrap().len(), 1);

    let log = f.server.log();
    assert!(log.contains(&token_id), "the log names tokens by id");
    assert!(
        !log.contains(ADMIN_TOKEN) && !log.contains(&token),
        "secrets never reach the log"
    );
}

#[tokio::test]
async fn admin_api_manages_apps_tokens_and_stats_on_sqlite_and_files() {
    admin_api_manages_apps_tokens_and_stats(Backends::SqliteFiles).await;
}

#[tokio::test]
async fn admin_api_manages_apps_tokens_and_stats_on_postgres_and_garage() {
    admin_api_manages_apps_tokens_and_stats(Backends::PostgresS3).await;
}

/// The admin API maps WhatsApp phone-number ids to apps (`409` for one
/// another app holds, changing nothing) and sets each app's WhatsApp type
/// limits, an object kept in its order; `null` restores Meta's.
#[tokio::test]
async fn admin_api_maps_phone_numbers_and_sets_whatsapp_type_limits() {
    let admin = Admin::start(Backends::SqliteFiles).await;
    let f = &admin.fixture;
    // Raw bodies, sent and received, to see the order of an object's keys.
    let raw = |method: Method, path: String, body: &'static str| {
        let request = f
            .client
            .request(method, f.server.url(&path))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };

    let (status, plain) = admin
        .call(Method::GET, &format!("/admin/apps/{}", f.app_id), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(plain["app"]["waPhoneNumberIds"], json!([]));
    assert_eq!(plain["app"]["waTypeLimits"], Value::Null, "Meta's");

    let (status, text) = raw(
        Method::POST,
        "/admin/apps".into(),
        r#"{"name": "wa", "waPhoneNumberIds": ["106540352242922", "106540352242911"],
            "waTypeLimits": {"video/mp4": 1000, "Image/GIF": 20}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    assert!(
        text.contains(r#""waPhoneNumberIds":["106540352242911","106540352242922"],"waTypeLimits":{"video/mp4":1000,"image/gif":20}"#),
        "{text}"
    );
    let app_id = serde_json::from_str::<Value>(&text).unwrap()["app"]["appId"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/admin/apps/{app_id}");
    let (_, got) = admin.call(Method::GET, &path, None).await;
    assert_eq!(got["app"], serde_json::from_str::<Value>(&text).unwrap()["app"]);

    // An id another app holds: 409, and nothing of the request applies.
    let taken = error("phone number id 106540352242922 is mapped to another app");
    let (status, body) = admin
        .call(
            Method::POST,
            "/admin/apps",
            Some(json!({"name": "b", "waPhoneNumberIds": ["106540352242922"]})),
        )
        .await;
    assert_eq!((status, body), (StatusCode::CONFLICT, taken.clone()));
    let (status, body) = admin
        .call(
            Method::PATCH,
            &format!("/admin/apps/{}", f.app_id),
            Some(json!({"name": "renamed", "waPhoneNumberIds": ["7", "106540352242922"]})),
        )
        .await;
    assert_eq!((status, body), (StatusCode::CONFLICT, taken));
    let (_, listed) = admin.call(Method::GET, "/admin/apps", None).await;
    let apps = listed["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 2, "no app was made");
    assert_eq!(apps[0]["name"], plain["app"]["name"], "nothing changed");
    assert_eq!(apps[0]["waPhoneNumberIds"], json!([]));
    assert_eq!(
        apps[1]["waPhoneNumberIds"],
        json!(["106540352242911", "106540352242922"])
    );

    // A PATCH replaces the set; leaving a field out leaves it; null clears
    // the set and restores Meta's limits.
    let (status, body) = admin
        .call(Method::PATCH, &path, Some(json!({"waPhoneNumberIds": ["42"]})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["app"]["waPhoneNumberIds"], json!(["42"]));
    assert_eq!(body["app"]["waTypeLimits"]["video/mp4"], 1000);
    let (_, body) = admin
        .call(Method::PATCH, &path, Some(json!({"capi": false})))
        .await;
    assert_eq!(body["app"]["waPhoneNumberIds"], json!(["42"]));
    let (status, text) = raw(
        Method::PATCH,
        path.clone(),
        r#"{"waTypeLimits": {"image/png": 5242880, "application/pdf": 7}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(
        text.contains(r#""waTypeLimits":{"image/png":5242880,"application/pdf":7}"#),
        "{text}"
    );
    let (_, body) = admin
        .call(
            Method::PATCH,
            &path,
            Some(json!({"waPhoneNumberIds": null, "waTypeLimits": null})),
        )
        .await;
    assert_eq!(body["app"]["waPhoneNumberIds"], json!([]));
    assert_eq!(body["app"]["waTypeLimits"], Value::Null);
    // The freed ids are another app's to take.
    let (status, body) = admin
        .call(
            Method::PATCH,
            &format!("/admin/apps/{}", f.app_id),
            Some(json!({"waPhoneNumberIds": ["106540352242922"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["app"]["waPhoneNumberIds"], json!(["106540352242922"]));

    let cases = [
        (
            json!({"waPhoneNumberIds": ["12a"]}),
            StatusCode::BAD_REQUEST,
            "waPhoneNumberIds",
        ),
        (
            json!({"waPhoneNumberIds": "42"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "waPhoneNumberIds",
        ),
        (
            json!({"waTypeLimits": {}}),
            StatusCode::BAD_REQUEST,
            "at least one type",
        ),
        (
            json!({"waTypeLimits": {"image/png": 0}}),
            StatusCode::BAD_REQUEST,
            "waTypeLimits",
        ),
        (
            json!({"waTypeLimits": {"png": 10}}),
            StatusCode::BAD_REQUEST,
            "type/subtype",
        ),
        (
            json!({"waTypeLimits": {"image/png": 1, "IMAGE/PNG": 2}}),
            StatusCode::BAD_REQUEST,
            "listed twice",
        ),
        (
            json!({"waTypeLimits": {"image/png": -1}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "waTypeLimits",
        ),
        (
            json!({"waTypeLimits": [["image/png", 1]]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "waTypeLimits",
        ),
    ];
    for (body, status, mention) in cases {
        let (got, reply) = admin.call(Method::PATCH, &path, Some(body.clone())).await;
        assert_eq!(got, status, "{body}: {reply}");
        assert_eq!(reply["status"], "error", "{reply}");
        assert!(
            reply["message"].as_str().unwrap().contains(mention),
            "{body}: {reply}"
        );
    }
}

#[tokio::test]
async fn bad_admin_requests_get_clear_errors_and_change_nothing() {
    // PostgreSQL refuses some text (a NUL) that SQLite keeps: both.
    for backends in [Backends::SqliteFiles, Backends::PostgresFiles] {
        bad_admin_requests(backends).await;
    }
}

async fn bad_admin_requests(backends: Backends) {
    let admin = Admin::start(backends).await;
    let app_id = admin.fixture.app_id.clone();
    let tokens = format!("/admin/apps/{app_id}/tokens");
    let app = format!("/admin/apps/{app_id}");
    let (_, before) = admin.call(Method::GET, &app, None).await;
    let long_label = "x".repeat(201);
    let cases: &[(Method, &str, Value, StatusCode, &str)] = &[
        // `null` restores a default; these four have none to restore.
        (
            Method::PATCH,
            &app,
            json!({"name": null}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            Method::PATCH,
            &app,
            json!({"capi": null, "maxMedia": 3}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "capi",
        ),
        (
            Method::PATCH,
            &app,
            json!({"retentionSeconds": null}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "retentionSeconds",
        ),
        (
            Method::PATCH,
            &app,
            json!({"maxFileBytes": null}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "maxFileBytes",
        ),
        (
            Method::POST,
            "/admin/apps",
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            Method::POST,
            "/admin/apps",
            json!({"name": "x", "colour": "red"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "colour",
        ),
        (
            Method::POST,
            "/admin/apps",
            json!({"name": " "}),
            StatusCode::BAD_REQUEST,
            "name",
        ),
        (
            Method::POST,
            "/admin/apps",
            json!({"name": "x", "retentionSeconds": 0}),
            StatusCode::BAD_REQUEST,
            "retention",
        ),
        (
            Method::POST,
            "/admin/apps",
            json!({"name": "x", "maxFileBytes": 0}),
            StatusCode::BAD_REQUEST,
            "maxFileBytes",
        ),
        (
            Method::POST,
            "/admin/apps",
            json!({"name": "x", "allowedTypes": []}),
            StatusCode::BAD_REQUEST,
            "allowedTypes",
        ),
        (
            Method::POST,
            "/admin/apps",
            json!({"name": "x", "allowedTypes": ["png"]}),
            StatusCode::BAD_REQUEST,
            "type/subtype",
        ),
        (
            Method::POST,
            "/admin/apps",
            json!({"name": "x", "uploadsPerSecond": 0}),
            StatusCode::BAD_REQUEST,
            "uploadsPerSecond",
        ),
        (
            Method::POST,
            "/admin/apps",
            json!({"name": "x", "maxFileBytes": -1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "maxFileBytes",
        ),
        (
            Method::PATCH,
            "/admin/apps/no-such-app",
            json!({"name": "y"}),
            StatusCode::NOT_FOUND,
            "App not found",
        ),
        (
            Method::GET,
            "/admin/apps/no-such-app/stats",
            Value::Null,
            StatusCode::NOT_FOUND,
            "App not found",
        ),
        (
            Method::POST,
            "/admin/apps/no-such-app/tokens",
            Value::Null,
            StatusCode::NOT_FOUND,
            "App not found",
        ),
        (
            Method::GET,
            "/admin/apps/%00",
            Value::Null,
            StatusCode::NOT_FOUND,
            "App not found",
        ),
        (
            Method::PATCH,
            "/admin/apps/%00",
            json!({"name": "y"}),
            StatusCode::NOT_FOUND,
            "App not found",
        ),
        (
            Method::DELETE,
            "/admin/apps/%00",
            Value::Null,
            StatusCode::NOT_FOUND,
            "App not found",
        ),
        (
            Method::DELETE,
            &format!("{tokens}/%00"),
            Value::Null,
            StatusCode::NOT_FOUND,
            "Token not found",
        ),
        (
            Method::POST,
            "/admin/apps",
            json!({"name": "a\u{0}b"}),
            StatusCode::BAD_REQUEST,
            "control characters",
        ),
        (
            Method::POST,
            &tokens,
            json!({"label": "a\u{0}b"}),
            StatusCode::BAD_REQUEST,
            "label",
        ),
        (
            Method::POST,
            &tokens,
            json!({"label": long_label}),
            StatusCode::BAD_REQUEST,
            "label",
        ),
    ];
    for (method, path, body, status, mention) in cases {
        let body = (!body.is_null()).then(|| body.clone());
        let (got, reply) = admin.call(method.clone(), path, body.clone()).await;
        assert_eq!(got, *status, "{method} {path} {body:?}: {reply}");
        assert_eq!(reply["status"], "error", "{reply}");
        assert!(reply["message"].as_str().unwrap().contains(mention), "{reply}");
    }
    // A body that is not JSON at all.
    let f = &admin.fixture;
    let response = f
        .client
        .post(f.server.url("/admin/apps"))
        .bearer_auth(ADMIN_TOKEN)
        .body("name=x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "error");
    let (_, listed) = admin.call(Method::GET, "/admin/apps", None).await;
    assert_eq!(listed["apps"].as_array().unwrap().len(), 1, "no app was made");
    let (_, after) = admin.call(Method::GET, &app, None).await;
    assert_eq!(after, before, "the app was not changed");
    let (_, tokens) = admin.call(Method::GET, &tokens, None).await;
    assert_eq!(
        tokens["tokens"].as_array().unwrap().len(),
        1,
        "no token was issued: {tokens}"
    );
}

#[tokio::test]
async fn without_an_admin_token_there_is_no_admin_api() {
    let f = Fixture::new(Backends::SqliteFiles).await;
    for path in ["/admin/apps", &format!("/admin/apps/{}", f.app_id)] {
        let response = f
            .client
            .get(f.server.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(response.json::<Value>().await.unwrap(), error("Not found"));
    }
}

#[tokio::test]
async fn a_short_admin_token_is_refused_at_start() {
    let stores = Stores::new(Backends::SqliteFiles).await;
    let output = std::process::Command::new(support::MEDIAVAULT)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(stores.dir())
        .envs(stores.env())
        .env("MEDIAVAULT__ADMIN__TOKEN", "short")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("admin.token"), "{stderr}");
}

/// The CLI does what the admin API does, against the database.
#[tokio::test]
async fn the_cli_updates_apps_and_lists_and_revokes_tokens() {
    for backends in [Backends::SqliteFiles, Backends::PostgresFiles] {
        let stores = Stores::new(backends).await;
        let run = |args: &[&str]| -> Value {
            let (ok, out, err) = cli(&stores, args);
            assert!(ok, "{args:?}: {err}");
            serde_json::from_str(&out).unwrap()
        };
        let app = run(&[
            "apps",
            "create",
            "--name",
            "shop",
            "--allowed-types",
            "image/png,text/plain",
            "--uploads-per-second",
            "7",
        ]);
        let app_id = app["appId"].as_str().unwrap();
        assert_eq!(app["allowedTypes"], json!(["image/png", "text/plain"]));
        assert_eq!(app["uploadsPerSecond"], 7);

        let updated = run(&[
            "apps",
            "update",
            "--app",
            app_id,
            "--max-file-bytes",
            "5",
            "--capi",
            "false",
            "--default-types",
        ]);
        assert_eq!(updated["maxFileBytes"], 5);
        assert_eq!(updated["capi"], false);
        assert_eq!(updated["allowedTypes"].as_array().unwrap().len(), 19);
        assert_eq!(updated["uploadsPerSecond"], 7, "left as it was");
        let updated = run(&["apps", "update", "--app", app_id, "--default-upload-rate"]);
        assert!(updated["uploadsPerSecond"].is_null());

        let first = run(&["tokens", "issue", "--app", app_id, "--label", "a"]);
        let second = run(&["tokens", "issue", "--app", app_id]);
        let listed = run(&["tokens", "list", "--app", app_id]);
        assert_eq!(listed.as_array().unwrap().len(), 2);
        assert!(!listed.to_string().contains(first["token"].as_str().unwrap()));
        let first_id = first["tokenId"].as_str().unwrap();
        let revoked = run(&["tokens", "revoke", "--app", app_id, "--token", first_id]);
        assert_eq!(
            revoked,
            json!({"message": "Token revoked"}),
            "the admin API's reply less its status"
        );
        let listed = run(&["tokens", "list", "--app", app_id]);
        let revoked: Vec<bool> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["revokedAt"].is_string())
            .collect();
        assert_eq!(revoked, [true, false]);

        // A revoked token no longer authenticates; the other still does.
        let server = Server::start(&stores);
        let client = reqwest::Client::new();
        for (token, expected) in [
            (&first, StatusCode::UNAUTHORIZED),
            (&second, StatusCode::NOT_FOUND),
        ] {
            let status = client
                .get(server.url(&format!("/partner/app/{app_id}/media/unknown")))
                .header("token", token["token"].as_str().unwrap())
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, expected);
        }

        let (ok, _, err) = cli(&stores, &["apps", "update", "--app", "nope", "--name", "x"]);
        assert!(!ok && err.contains("no app"), "{err}");
        let (ok, _, err) = cli(&stores, &["tokens", "revoke", "--app", app_id, "--token", "nope"]);
        assert!(!ok && err.contains("no token"), "{err}");
        let deleted = run(&["apps", "delete", "--app", app_id]);
        assert_eq!(
            deleted,
            json!({"message": "App deleted; 0 media shredded", "mediaShredded": 0}),
            "the admin API's reply less its status"
        );
        let apps = run(&["apps", "list"]);
        assert!(apps.as_array().unwrap().is_empty());
    }
}
