//! mediavault-api: the HTTP surface. Maps requests onto `Vault` calls and
//! their results onto the Gupshup-compatible wire contract. No SQL, crypto or
//! object-store calls here: handlers extract, call the vault, map the result.

mod admin;
mod auth;
mod body;
mod by_url;
mod conditions;
#[cfg(test)]
mod contract;
mod delete;
mod download;
mod error;
mod info;
mod limits;
mod link_routes;
pub mod links;
mod media_path;
mod observe;
mod pace;
mod path;
mod probes;
mod range;
mod reply;
mod slots;
#[cfg(test)]
mod testing;
mod upload;
mod whatsapp;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler as _;
use mediavault_fetch::{FetchPolicy, Fetcher};
use mediavault_storage::Vault;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

pub use admin::{AppDeletedBody, AppView, IssuedTokenView, StatsView, TOKEN_REVOKED, TokenView};
pub use auth::ConfiguredToken;
pub use error::ApiError;
pub use limits::{LimitSettings, Limits};
pub use links::{Disposition, LinkKeys, LinkSigner};
pub use range::{RangeRequest, parse as parse_range};
pub use slots::{MinRate, Slots};

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub vault: Vault,
    /// Renders `/metrics`; `None` serves 404 there.
    pub render_metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// Uploads in progress, in all (past it 503) and per app (past it 429).
    pub uploads: Arc<Slots>,
    /// Downloads in progress, each until its body is sent: in all (past it
    /// 503) and per app, signed links included (past it 429).
    pub downloads: Arc<Slots>,
    /// An upload whose body sends nothing for this long is cut.
    pub idle_timeout: Duration,
    /// An upload whose body comes slower than this is cut; `None`: no minimum.
    pub min_upload_rate: Option<MinRate>,
    /// A download whose client takes its body slower than this is cut;
    /// `None`: no minimum.
    pub min_download_rate: Option<MinRate>,
    /// Cancelled when the drain time after SIGTERM is over: uploads still
    /// running then are undone and answered 503 rather than cut off dead.
    pub shutdown: CancellationToken,
    /// Upload rates and the failed-authentication lock-out.
    pub limits: Arc<Limits>,
    /// `None`: no admin API (every `/admin` route answers 404).
    pub admin_token: Option<ConfiguredToken>,
    /// `Some`: `/metrics` answers only requests bearing this token.
    pub metrics_token: Option<ConfiguredToken>,
    /// Fetches the file of an upload by URL; when disabled, a `file` sent
    /// as text is refused as before.
    pub fetcher: Fetcher,
    /// Signs and checks links; `None`: signed links are not enabled (asking
    /// for one, or following one, answers 404).
    pub links: Option<Arc<LinkSigner>>,
    /// `links.public_base_url`: what links start with (no trailing slash);
    /// `None`: the address each request was sent to.
    pub public_base_url: Option<String>,
}

impl ApiState {
    /// State with the defaults of `config/default.toml` and no metrics.
    pub fn new(vault: Vault) -> ApiState {
        ApiState {
            vault,
            render_metrics: None,
            uploads: Arc::new(Slots::uploads(64, Slots::default_per_app(64))),
            downloads: Arc::new(Slots::downloads(256, Slots::default_per_app(256))),
            idle_timeout: Duration::from_secs(60),
            min_upload_rate: Some(MinRate {
                bytes_per_second: 1024,
                window: Duration::from_secs(30),
            }),
            min_download_rate: Some(MinRate {
                bytes_per_second: 1024,
                window: Duration::from_secs(60),
            }),
            shutdown: CancellationToken::new(),
            limits: Arc::new(Limits::new(LimitSettings::default())),
            admin_token: None,
            metrics_token: None,
            fetcher: Fetcher::new(FetchPolicy::default()).expect("the default fetcher builds"),
            links: None,
            public_base_url: None,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mediavault",
        description = "Self-hosted media-ID service: the Gupshup Partner API's media endpoints, and the WhatsApp Cloud API's (tag `whatsapp`, Graph errors)."
    ),
    paths(openapi_json),
    modifiers(&Security)
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("token"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The whole HTTP API. Every route is registered together with its OpenAPI
/// description, so the document served at `/openapi.json` cannot miss one.
pub fn router(state: ApiState) -> Router {
    let (router, _) = api().split_for_parts();
    router
        .route("/openapi.json", axum::routing::get(openapi_json))
        // The route layer wraps the routes alone: the fallback is counted
        // (as `unmatched`) by a layer of its own.
        .fallback(error::not_found.layer(axum::middleware::from_fn(observe::record)))
        .method_not_allowed_fallback(error::method_not_allowed)
        .route_layer(axum::middleware::from_fn(observe::record))
        .layer(PropagateRequestIdLayer::new(observe::REQUEST_ID))
        .layer(
            // One line per request, at info: its status and latency, inside the
            // span that carries the request id.
            TraceLayer::new_for_http()
                .make_span_with(observe::request_span)
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(SetRequestIdLayer::new(observe::REQUEST_ID, MakeRequestUuid))
        // Before an id is taken from the caller, it is checked.
        .layer(axum::middleware::map_request(
            observe::drop_unacceptable_request_id,
        ))
        .layer(axum::middleware::map_request_with_state(
            state.clone(),
            links::drop_untrusted_forwarding,
        ))
        .with_state(state)
}

/// The documented routes.
fn api() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        // The file size limit is enforced while streaming, per app; the
        // generic 2 MB body limit would cut every real upload short.
        .routes(routes!(upload::upload).layer(DefaultBodyLimit::disable()))
        .routes(routes!(
            download::download,
            download::download_head,
            delete::delete
        ))
        .routes(routes!(info::info))
        .routes(routes!(link_routes::issue_link))
        .routes(routes!(link_routes::follow_link, link_routes::follow_link_head))
        .routes(routes!(probes::livez))
        .routes(routes!(probes::readyz))
        .routes(routes!(observe::metrics))
        .routes(routes!(admin::list_apps, admin::create_app))
        .routes(routes!(admin::get_app, admin::update_app, admin::delete_app))
        .routes(routes!(admin::app_stats))
        .routes(routes!(admin::list_tokens, admin::issue_token))
        .routes(routes!(admin::revoke_token))
        // The WhatsApp Cloud API surface: its errors are Graph errors,
        // finished by `whatsapp::graph_route`.
        .routes(
            routes!(whatsapp::upload::upload_media)
                .layer(DefaultBodyLimit::disable())
                .map(whatsapp::graph_route),
        )
        .routes(routes!(whatsapp::media::media_url, whatsapp::media::delete_media).map(whatsapp::graph_route))
}

/// The document, rendered once.
static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| openapi().to_json().expect("the OpenAPI document serialises"));

/// This document (OpenAPI 3.1).
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "The OpenAPI document")))]
async fn openapi_json() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}

/// The OpenAPI document of this API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().into_openapi()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    async fn state(dir: &std::path::Path) -> ApiState {
        let vault = crate::testing::vault(dir).await;
        vault.migrate().await.unwrap();
        ApiState {
            admin_token: Some(ConfiguredToken::new("admin")),
            links: Some(Arc::new(LinkSigner::new(
                LinkKeys::parse(&LinkKeys::generate_line("l1")).unwrap(),
                Duration::from_secs(86_400),
            ))),
            ..ApiState::new(vault)
        }
    }

    /// `/openapi.json` as the router serves it.
    async fn served_document(app: &Router) -> axum::body::Bytes {
        let response = app
            .clone()
            .oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
    }

    /// Client generators key operations by id: two operations with one id
    /// make the document invalid.
    #[test]
    fn operation_ids_are_unique() {
        let mut seen = std::collections::HashMap::new();
        for (path, item) in openapi().paths.paths {
            let operations = [
                ("GET", item.get),
                ("PUT", item.put),
                ("POST", item.post),
                ("DELETE", item.delete),
                ("OPTIONS", item.options),
                ("HEAD", item.head),
                ("PATCH", item.patch),
                ("TRACE", item.trace),
            ];
            for (method, operation) in operations {
                let Some(operation) = operation else { continue };
                let id = operation.operation_id.unwrap_or_default();
                assert!(!id.is_empty(), "{method} {path} has no operation id");
                let here = format!("{method} {path}");
                if let Some(first) = seen.insert(id.clone(), here.clone()) {
                    panic!("operation id {id:?} is used by {first} and {here}");
                }
            }
        }
    }

    /// The served document passes the standard validator
    /// (openapi-spec-validator, installed pinned by `make lint` into the
    /// venv that scripts/lint-deploy.sh keeps under target/lint-venv).
    #[tokio::test]
    async fn the_served_document_is_valid_openapi() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let validator = root.join("target/lint-venv/bin/openapi-spec-validator");
        assert!(
            validator.is_file(),
            "{} is missing: run `make lint` (scripts/lint-deploy.sh) to install it",
            validator.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(dir.path()).await);
        let document = dir.path().join("openapi.json");
        std::fs::write(&document, served_document(&app).await).unwrap();
        let output = std::process::Command::new(&validator)
            .arg(&document)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "openapi-spec-validator rejects /openapi.json:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Every operation in the document is served by the router (none falls
    /// through to the 404/405 fallbacks), and the document is OpenAPI 3.1
    /// with every route of the API in it.
    /// Every admin operation documents what its guard answers (401 for a
    /// wrong token, 404 with no admin token configured, 429 once locked
    /// out), and those that take a JSON body what its reader answers (415
    /// for another content type, 422 for an unknown field or a wrong type).
    #[tokio::test]
    async fn admin_operations_document_their_guards_answers() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(dir.path()).await);
        let document: serde_json::Value = serde_json::from_slice(&served_document(&app).await).unwrap();
        let mut checked = 0;
        for (path, item) in document["paths"].as_object().unwrap() {
            if !path.starts_with("/admin") {
                continue;
            }
            for (method, operation) in item.as_object().unwrap() {
                let with_json = operation["requestBody"]["content"]
                    .get("application/json")
                    .is_some_and(|_| operation["requestBody"]["required"] == true);
                let mut expected = vec!["401", "404", "429"];
                if with_json {
                    expected.extend(["415", "422"]);
                }
                for status in expected {
                    assert!(
                        operation["responses"].get(status).is_some(),
                        "{method} {path} does not document {status}"
                    );
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 9);
    }

    #[tokio::test]
    async fn the_document_and_the_router_agree() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(dir.path()).await);
        let bytes = served_document(&app).await;
        let document: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));

        let mut operations = Vec::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys().filter(|k| *k != "parameters") {
                operations.push(format!("{} {path}", method.to_uppercase()));
                let uri = path
                    .replace("{app_id}", "some-app")
                    .replace("{media_id}", "some-media")
                    .replace("{token_id}", "some-token")
                    .replace("{token}", "some-link")
                    .replace("{version}", "v23.0")
                    .replace("{id}", "1234567890123456");
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let request = Request::builder()
                    .method(method.clone())
                    .uri(&uri)
                    .body(Body::empty())
                    .unwrap();
                let response = app.clone().oneshot(request).await.unwrap();
                assert_ne!(
                    response.status(),
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {uri}"
                );
                let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap();
                assert!(
                    !body.starts_with(br#"{"message":"Not found""#),
                    "{method} {uri} fell through"
                );
            }
        }
        operations.sort();
        assert_eq!(
            operations,
            [
                "DELETE /admin/apps/{app_id}",
                "DELETE /admin/apps/{app_id}/tokens/{token_id}",
                "DELETE /partner/app/{app_id}/media/{media_id}",
                "DELETE /{version}/{id}",
                "GET /admin/apps",
                "GET /admin/apps/{app_id}",
                "GET /admin/apps/{app_id}/stats",
                "GET /admin/apps/{app_id}/tokens",
                "GET /l/{token}",
                "GET /livez",
                "GET /metrics",
                "GET /openapi.json",
                "GET /partner/app/{app_id}/media/{media_id}",
                "GET /partner/app/{app_id}/media/{media_id}/info",
                "GET /readyz",
                "GET /{version}/{id}",
                "HEAD /l/{token}",
                "HEAD /partner/app/{app_id}/media/{media_id}",
                "PATCH /admin/apps/{app_id}",
                "POST /admin/apps",
                "POST /admin/apps/{app_id}/tokens",
                "POST /partner/app/{app_id}/media",
                "POST /partner/app/{app_id}/media/{media_id}/link",
                "POST /{version}/{id}/media",
            ]
        );
        for path in ["/partner/app/{app_id}/media/{media_id}", "/l/{token}"] {
            for method in ["get", "head"] {
                let headers: Vec<_> = document["paths"][path][method]["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|p| p["in"] == "header")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                assert_eq!(
                    headers,
                    [
                        "Range",
                        "If-None-Match",
                        "If-Modified-Since",
                        "If-Match",
                        "If-Unmodified-Since",
                        "If-Range"
                    ],
                    "{method} {path}"
                );
            }
        }
        let schemas = document["components"]["schemas"].as_object().unwrap();
        for schema in [
            "ErrorBody",
            "UploadReply",
            "InfoReply",
            "DeleteReply",
            "UploadForm",
            "AppReply",
            "AppsReply",
            "CreateAppRequest",
            "UpdateAppRequest",
            "TokensReply",
            "IssuedTokenReply",
            "StatsReply",
            "LinkReply",
            "LinkRequest",
            "MediaUrlReply",
            "DeletedReply",
            "UploadedReply",
            "WhatsAppUploadForm",
            "GraphErrorReply",
        ] {
            assert!(schemas.contains_key(schema), "{schema}");
        }
    }
}
