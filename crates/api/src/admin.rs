//! The admin API under `/admin`: apps, their tokens and their stats, for
//! the operator (`admin.token`). It mirrors the `apps` and `tokens` commands
//! of the CLI, which print the same JSON less the `status` envelope.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use mediavault_storage::{
    App, AppId, AppStats, AppUpdate, IssuedToken, NewApp, TokenId, TokenInfo, TypeLimit, type_limits_object,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::auth::Admin;
use crate::body::read_whole;
use crate::error::{ApiError, ErrorBody};
use crate::path::ApiPath;
use crate::reply::Success;
use crate::reply::rfc3339;

/// An app as the admin API and the CLI show it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppView {
    pub app_id: String,
    pub name: String,
    /// Only CAPI apps may upload.
    pub capi: bool,
    /// How long new media live.
    pub retention_seconds: u64,
    /// Largest accepted file.
    pub max_file_bytes: u64,
    /// Accepted `file_type`s, in the order error messages list them.
    pub allowed_types: Vec<String>,
    /// The app's own upload rate; `null`: the configured default.
    pub uploads_per_second: Option<u32>,
    /// Most bytes the app may hold at once; `null`: the configured
    /// default (`media.max_bytes_stored`; unset there, no limit).
    pub max_bytes_stored: Option<u64>,
    /// Most media the app may hold at once; `null`: the configured default
    /// (`media.max_media`; unset there, no limit).
    pub max_media: Option<u64>,
    /// The WhatsApp phone-number ids whose requests are this app's (each
    /// maps to one app at most), in order.
    pub wa_phone_number_ids: Vec<String>,
    /// The types the WhatsApp Cloud surface accepts from this app, each
    /// with its largest file in bytes, in the order error messages list
    /// them; `null`: Meta's list and limits.
    #[schema(value_type = Option<HashMap<String, u64>>, example = json!({"image/jpeg": 5242880, "application/pdf": 104857600}))]
    pub wa_type_limits: Option<TypeLimits>,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// Type limits as the admin API writes and reads them: one object,
/// `{"type/subtype": bytes, …}`, in the list's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TypeLimits(#[serde(with = "type_limits_object")] pub Vec<TypeLimit>);

impl AppView {
    /// The app with the phone-number ids mapped to it.
    pub fn new(app: &App, wa_phone_number_ids: Vec<String>) -> AppView {
        AppView {
            app_id: app.id.to_string(),
            name: app.name.clone(),
            capi: app.capi,
            retention_seconds: app.retention.as_secs(),
            max_file_bytes: app.max_file_bytes,
            allowed_types: app.allowed_types(),
            uploads_per_second: app.uploads_per_second,
            max_bytes_stored: app.max_bytes_stored,
            max_media: app.max_media,
            wa_phone_number_ids,
            wa_type_limits: app.wa_type_limits.clone().map(TypeLimits),
            created_at: rfc3339(app.created_at),
        }
    }

    /// Every app, each with the phone-number ids mapped to it (as one map
    /// for all, from `Vault::all_phone_number_ids`).
    pub fn all(apps: &[App], mut phone_number_ids: HashMap<AppId, Vec<String>>) -> Vec<AppView> {
        apps.iter()
            .map(|app| AppView::new(app, phone_number_ids.remove(&app.id).unwrap_or_default()))
            .collect()
    }
}

/// A token as listed: never its secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    pub token_id: String,
    pub app_id: String,
    pub label: Option<String>,
    pub created_at: String,
    pub revoked_at: Option<String>,
    /// Updated at most once a minute.
    pub last_used_at: Option<String>,
}

impl From<&TokenInfo> for TokenView {
    fn from(token: &TokenInfo) -> TokenView {
        TokenView {
            token_id: token.id.to_string(),
            app_id: token.app_id.to_string(),
            label: token.label.clone(),
            created_at: rfc3339(token.created_at),
            revoked_at: token.revoked_at.map(rfc3339),
            last_used_at: token.last_used_at.map(rfc3339),
        }
    }
}

/// A token just issued: the secret is shown this once.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedTokenView {
    pub token_id: String,
    pub app_id: String,
    pub label: Option<String>,
    /// The secret; only its SHA-256 is kept.
    pub token: String,
}

impl From<&IssuedToken> for IssuedTokenView {
    fn from(issued: &IssuedToken) -> IssuedTokenView {
        IssuedTokenView {
            token_id: issued.id.to_string(),
            app_id: issued.app_id.to_string(),
            label: issued.label.clone(),
            token: issued.token.clone(),
        }
    }
}

/// What an app stores, and its usage against its quota.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsView {
    pub app_id: String,
    /// Readable media.
    pub media_count: u64,
    /// Their plaintext bytes.
    pub bytes_stored: u64,
    /// Media counted against the quota: uploads in progress, and stored
    /// media until the reaper removes them (expired ones until its next pass).
    pub media_used: u64,
    /// Bytes counted against the quota: each stored file's size, and what
    /// each upload in progress has reserved.
    pub bytes_used: u64,
    /// The media limit that applies (the app's own, else the configured
    /// default); `null`: none.
    pub max_media: Option<u64>,
    /// The byte limit that applies (the app's own, else the configured
    /// default); `null`: none.
    pub max_bytes_stored: Option<u64>,
}

impl StatsView {
    pub fn new(app_id: &AppId, stats: AppStats) -> StatsView {
        StatsView {
            app_id: app_id.to_string(),
            media_count: stats.media_count,
            bytes_stored: stats.bytes_stored,
            media_used: stats.media_used,
            bytes_used: stats.bytes_used,
            max_media: stats.max_media,
            max_bytes_stored: stats.max_bytes_stored,
        }
    }
}

/// The fields of `AppBody`, then `"status": "success"`.
pub type AppReply = Success<AppBody>;

#[derive(Serialize, ToSchema)]
#[schema(as = AppReply)]
pub struct AppBody {
    app: AppView,
}

/// The fields of `AppsBody`, then `"status": "success"`.
pub type AppsReply = Success<AppsBody>;

#[derive(Serialize, ToSchema)]
#[schema(as = AppsReply)]
pub struct AppsBody {
    apps: Vec<AppView>,
}

/// The fields of `TokensBody`, then `"status": "success"`.
pub type TokensReply = Success<TokensBody>;

#[derive(Serialize, ToSchema)]
#[schema(as = TokensReply)]
pub struct TokensBody {
    tokens: Vec<TokenView>,
}

/// The fields of `IssuedTokenBody`, then `"status": "success"`.
pub type IssuedTokenReply = Success<IssuedTokenBody>;

#[derive(Serialize, ToSchema)]
#[schema(as = IssuedTokenReply)]
pub struct IssuedTokenBody {
    token: IssuedTokenView,
}

/// The fields of `StatsBody`, then `"status": "success"`.
pub type StatsReply = Success<StatsBody>;

#[derive(Serialize, ToSchema)]
#[schema(as = StatsReply)]
pub struct StatsBody {
    stats: StatsView,
}

/// The fields of `AppDeletedBody`, then `"status": "success"`.
pub type AppDeletedReply = Success<AppDeletedBody>;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AppDeletedReply)]
pub struct AppDeletedBody {
    message: String,
    /// Media whose keys were shredded; the reaper removes their blobs.
    media_shredded: u64,
}

impl AppDeletedBody {
    pub fn new(media_shredded: u64) -> AppDeletedBody {
        AppDeletedBody {
            message: format!("App deleted; {media_shredded} media shredded"),
            media_shredded,
        }
    }
}

/// The fields of `TokenRevokedBody`, then `"status": "success"`.
pub type TokenRevokedReply = Success<TokenRevokedBody>;

#[derive(Serialize, ToSchema)]
#[schema(as = TokenRevokedReply)]
pub struct TokenRevokedBody {
    message: &'static str,
}

/// What revoking a token answers.
pub const TOKEN_REVOKED: TokenRevokedBody = TokenRevokedBody {
    message: "Token revoked",
};

/// A new app. Omitted settings take the configured defaults.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateAppRequest {
    name: String,
    #[serde(default = "yes")]
    capi: bool,
    retention_seconds: Option<u64>,
    max_file_bytes: Option<u64>,
    allowed_types: Option<Vec<String>>,
    uploads_per_second: Option<u32>,
    /// Omitted: the configured default (`media.max_bytes_stored`; unset
    /// there, no limit).
    max_bytes_stored: Option<u64>,
    /// Omitted: the configured default (`media.max_media`; unset there, no limit).
    max_media: Option<u64>,
    /// WhatsApp phone-number ids to map to the app (1 to 64 digits each);
    /// one mapped to another app is 409 and no app is made.
    #[serde(default)]
    wa_phone_number_ids: Vec<String>,
    /// The types the WhatsApp Cloud surface accepts and the largest file of
    /// each, in bytes, in order; omitted or `null`: Meta's.
    #[schema(value_type = Option<HashMap<String, u64>>)]
    wa_type_limits: Option<TypeLimits>,
}

fn yes() -> bool {
    true
}

/// A change to an app: omitted fields stay as they are; `null` for
/// `allowedTypes`, `uploadsPerSecond`, `maxBytesStored`, `maxMedia` or
/// `waTypeLimits` restores the default, and is refused (422) for `name`,
/// `capi`, `retentionSeconds` and `maxFileBytes`, which have none to
/// restore. `waPhoneNumberIds` replaces the app's set (`[]` or `null`: none).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateAppRequest {
    #[serde(default, deserialize_with = "not_null")]
    name: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    capi: Option<bool>,
    #[serde(default, deserialize_with = "not_null")]
    retention_seconds: Option<u64>,
    #[serde(default, deserialize_with = "not_null")]
    max_file_bytes: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    allowed_types: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>)]
    uploads_per_second: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    max_bytes_stored: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    max_media: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    wa_phone_number_ids: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<HashMap<String, u64>>)]
    wa_type_limits: Option<Option<TypeLimits>>,
}

/// Refuses `null` for a field that has no default to restore, where taking
/// it as "leave as is" would answer 200 to a change that was not made.
fn not_null<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueTokenRequest {
    /// What the token is for, e.g. the host that uses it.
    label: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AppPath {
    /// The app's id.
    #[param(value_type = String)]
    app_id: AppId,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TokenPath {
    /// The app's id.
    #[param(value_type = String)]
    app_id: AppId,
    /// The token's id, as issued or listed.
    #[param(value_type = String)]
    token_id: TokenId,
}

/// The longest body an admin request may have: an app's settings.
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// A JSON body whose rejections use the service's error shape, read within
/// the idle timeout.
pub struct AdminJson<T>(T);

impl<T: DeserializeOwned> FromRequest<ApiState> for AdminJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &ApiState) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let body = read_whole(body, MAX_ADMIN_BODY, state.idle_timeout, "admin request").await?;
        let request = Request::from_parts(parts, Body::from(body));
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(AdminJson(value)),
            Err(rejection @ JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                rejection.status(),
                "Send the body as application/json",
            )),
            Err(rejection) => Err(ApiError::new(rejection.status(), rejection.body_text())),
        }
    }
}

/// Create an app.
#[utoipa::path(
    post, path = "/admin/apps", tag = "admin",
    request_body = CreateAppRequest,
    responses(
        (status = 201, description = "Created", body = AppReply),
        (status = 400, description = "A setting is out of range, or the body is over 64 KiB", body = ErrorBody),
        (status = 401, description = "Authentication Failed", body = ErrorBody),
        (status = 408, description = "The body did not arrive within server.idle_timeout", body = ErrorBody),
        (status = 404, description = "No admin token is configured", body = ErrorBody),
        (status = 409, description = "A phone number id is mapped to another app", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
        (status = 422, description = "The body is not the request's JSON: an unknown field, or a value of the wrong type", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_app(
    _: Admin,
    State(state): State<ApiState>,
    AdminJson(request): AdminJson<CreateAppRequest>,
) -> Result<(StatusCode, Json<AppReply>), ApiError> {
    let app = state
        .vault
        .create_app(NewApp {
            name: request.name,
            capi: request.capi,
            retention: request.retention_seconds.map(Duration::from_secs),
            max_file_bytes: request.max_file_bytes,
            allowed_types: request.allowed_types,
            uploads_per_second: request.uploads_per_second,
            max_bytes_stored: request.max_bytes_stored,
            max_media: request.max_media,
            wa_phone_number_ids: request.wa_phone_number_ids,
            wa_type_limits: request.wa_type_limits.map(|limits| limits.0),
        })
        .await?;
    tracing::info!(app_id = %app.id, "app created");
    let phone_number_ids = state.vault.phone_number_ids(&app.id).await?;
    Ok((
        StatusCode::CREATED,
        Json(Success::new(AppBody {
            app: AppView::new(&app, phone_number_ids),
        })),
    ))
}

/// List apps.
#[utoipa::path(
    get, path = "/admin/apps", tag = "admin",
    responses(
        (status = 200, description = "Every app, oldest first", body = AppsReply),
        (status = 401, description = "Authentication Failed", body = ErrorBody),
        (status = 404, description = "No admin token is configured", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_apps(_: Admin, State(state): State<ApiState>) -> Result<Json<AppsReply>, ApiError> {
    let apps = state.vault.list_apps().await?;
    let phone_number_ids = state.vault.all_phone_number_ids().await?;
    Ok(Json(Success::new(AppsBody {
        apps: AppView::all(&apps, phone_number_ids),
    })))
}

/// Get an app.
#[utoipa::path(
    get, path = "/admin/apps/{app_id}", tag = "admin", params(AppPath),
    responses(
        (status = 200, description = "The app", body = AppReply),
        (status = 401, description = "Authentication Failed", body = ErrorBody),
        (status = 404, description = "App not found, or no admin token is configured", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_app(
    _: Admin,
    State(state): State<ApiState>,
    ApiPath(AppPath { app_id }): ApiPath<AppPath>,
) -> Result<Json<AppReply>, ApiError> {
    let app = state.vault.get_app(&app_id).await?;
    let phone_number_ids = state.vault.phone_number_ids(&app_id).await?;
    Ok(Json(Success::new(AppBody {
        app: AppView::new(&app, phone_number_ids),
    })))
}

/// Change an app's settings; they apply to uploads from now on.
#[utoipa::path(
    patch, path = "/admin/apps/{app_id}", tag = "admin", params(AppPath),
    request_body = UpdateAppRequest,
    responses(
        (status = 200, description = "The app as it now is", body = AppReply),
        (status = 400, description = "A setting is out of range, or the body is over 64 KiB", body = ErrorBody),
        (status = 401, description = "Authentication Failed", body = ErrorBody),
        (status = 408, description = "The body did not arrive within server.idle_timeout", body = ErrorBody),
        (status = 404, description = "App not found, or no admin token is configured", body = ErrorBody),
        (status = 409, description = "A phone number id is mapped to another app; nothing is changed", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
        (status = 422, description = "The body is not the request's JSON: an unknown field, or a value of the wrong type", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update_app(
    _: Admin,
    State(state): State<ApiState>,
    ApiPath(AppPath { app_id }): ApiPath<AppPath>,
    AdminJson(request): AdminJson<UpdateAppRequest>,
) -> Result<Json<AppReply>, ApiError> {
    let app = state
        .vault
        .update_app(
            &app_id,
            AppUpdate {
                name: request.name,
                capi: request.capi,
                retention: request.retention_seconds.map(Duration::from_secs),
                max_file_bytes: request.max_file_bytes,
                allowed_types: request.allowed_types,
                uploads_per_second: request.uploads_per_second,
                max_bytes_stored: request.max_bytes_stored,
                max_media: request.max_media,
                wa_phone_number_ids: request.wa_phone_number_ids.map(Option::unwrap_or_default),
                wa_type_limits: request.wa_type_limits.map(|limits| limits.map(|limits| limits.0)),
            },
        )
        .await?;
    tracing::info!(app_id = %app.id, "app updated");
    let phone_number_ids = state.vault.phone_number_ids(&app.id).await?;
    Ok(Json(Success::new(AppBody {
        app: AppView::new(&app, phone_number_ids),
    })))
}

/// Delete an app: its tokens stop working and all its media are
/// crypto-shredded at once; the reaper removes the blobs.
#[utoipa::path(
    delete, path = "/admin/apps/{app_id}", tag = "admin", params(AppPath),
    responses(
        (status = 200, description = "Deleted", body = AppDeletedReply),
        (status = 401, description = "Authentication Failed", body = ErrorBody),
        (status = 404, description = "App not found, or no admin token is configured", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_app(
    _: Admin,
    State(state): State<ApiState>,
    ApiPath(AppPath { app_id }): ApiPath<AppPath>,
) -> Result<Json<AppDeletedReply>, ApiError> {
    let shredded = state.vault.delete_app(&app_id).await?;
    tracing::info!(%app_id, media_shredded = shredded, "app deleted");
    Ok(Json(Success::new(AppDeletedBody::new(shredded))))
}

/// What an app stores now, and its usage against its quota.
#[utoipa::path(
    get, path = "/admin/apps/{app_id}/stats", tag = "admin", params(AppPath),
    responses(
        (status = 200, description = "Readable media and their bytes; media and bytes counted against the quota, and its limits", body = StatsReply),
        (status = 401, description = "Authentication Failed", body = ErrorBody),
        (status = 404, description = "App not found, or no admin token is configured", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn app_stats(
    _: Admin,
    State(state): State<ApiState>,
    ApiPath(AppPath { app_id }): ApiPath<AppPath>,
) -> Result<Json<StatsReply>, ApiError> {
    let stats = state.vault.app_stats(&app_id).await?;
    Ok(Json(Success::new(StatsBody {
        stats: StatsView::new(&app_id, stats),
    })))
}

/// Issue a token; its secret is in this reply only.
#[utoipa::path(
    post, path = "/admin/apps/{app_id}/tokens", tag = "admin", params(AppPath),
    request_body(content = Option<IssueTokenRequest>, description = "Optional"),
    responses(
        (status = 201, description = "Issued", body = IssuedTokenReply),
        (status = 400, description = "A label over 200 characters or with control characters, or a body over 64 KiB", body = ErrorBody),
        (status = 401, description = "Authentication Failed", body = ErrorBody),
        (status = 408, description = "The body did not arrive within server.idle_timeout", body = ErrorBody),
        (status = 404, description = "App not found, or no admin token is configured", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn issue_token(
    _: Admin,
    State(state): State<ApiState>,
    ApiPath(AppPath { app_id }): ApiPath<AppPath>,
    body: Body,
) -> Result<(StatusCode, Json<IssuedTokenReply>), ApiError> {
    let body = read_whole(body, MAX_ADMIN_BODY, state.idle_timeout, "admin request").await?;
    // The body is optional: a token needs no settings.
    let request: IssueTokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        IssueTokenRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))?
    };
    let issued = state.vault.issue_token(&app_id, request.label.as_deref()).await?;
    tracing::info!(%app_id, token_id = %issued.id, "token issued");
    Ok((
        StatusCode::CREATED,
        Json(Success::new(IssuedTokenBody {
            token: IssuedTokenView::from(&issued),
        })),
    ))
}

/// List an app's tokens, revoked ones included.
#[utoipa::path(
    get, path = "/admin/apps/{app_id}/tokens", tag = "admin", params(AppPath),
    responses(
        (status = 200, description = "The tokens, oldest first", body = TokensReply),
        (status = 401, description = "Authentication Failed", body = ErrorBody),
        (status = 404, description = "App not found, or no admin token is configured", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_tokens(
    _: Admin,
    State(state): State<ApiState>,
    ApiPath(AppPath { app_id }): ApiPath<AppPath>,
) -> Result<Json<TokensReply>, ApiError> {
    let tokens = state.vault.list_tokens(&app_id).await?;
    Ok(Json(Success::new(TokensBody {
        tokens: tokens.iter().map(TokenView::from).collect(),
    })))
}

/// Revoke a token: requests carrying it fail from now on.
#[utoipa::path(
    delete, path = "/admin/apps/{app_id}/tokens/{token_id}", tag = "admin", params(TokenPath),
    responses(
        (status = 200, description = "Revoked", body = TokenRevokedReply),
        (status = 401, description = "Authentication Failed", body = ErrorBody),
        (status = 404, description = "App or token not found, or no admin token is configured", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn revoke_token(
    _: Admin,
    State(state): State<ApiState>,
    ApiPath(TokenPath { app_id, token_id }): ApiPath<TokenPath>,
) -> Result<Json<TokenRevokedReply>, ApiError> {
    state.vault.revoke_token(&app_id, &token_id).await?;
    tracing::info!(%app_id, %token_id, "token revoked");
    Ok(Json(Success::new(TOKEN_REVOKED)))
}
