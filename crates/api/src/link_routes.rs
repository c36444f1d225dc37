//! The routes of signed links: an app asks for a link to one of its files
//! (`POST …/media/{media_id}/link`, with its token), and whoever holds the
//! link downloads the file with it (`GET|HEAD /l/{token}`, no other
//! credential) through the same response path as an authenticated download.

use std::fmt;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use mediavault_storage::{AuthError, ReadError, now_millis};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use crate::ApiState;
use crate::auth::{authenticate, presented_token_id};
use crate::body::read_whole;
use crate::download::{DownloadHeaders, Payload, deliver};
use crate::error::{ApiError, ErrorBody, Task};
use crate::limits::ClientAddr;
use crate::links::{self, Disposition, LinkError};
use crate::media_path::{MediaPath, plausible};
use crate::path::ApiPath;
use crate::reply::{Success, rfc3339};

/// A link lasts this long unless asked otherwise.
const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);
/// The longest body a link request may have: two small fields.
const MAX_REQUEST_BODY: usize = 4096;

/// The fields of `LinkBody`, then `"status": "success"`.
pub type LinkReply = Success<LinkBody>;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = LinkReply)]
pub struct LinkBody {
    /// The link: `{base}/l/{token}`; it downloads the file with no other
    /// credential until `expiresAt`.
    url: String,
    /// When the link stops working (a whole second, never past the file's
    /// own expiry).
    expires_at: String,
}

/// What a link request may set, as a JSON body, a form body or query
/// parameters (a body's fields win over the query's).
#[derive(Default, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
#[schema(as = LinkRequest)]
pub struct LinkRequest {
    /// How long the link lasts: seconds, or a duration such as `"10m"`.
    /// Default 5 minutes; at most `links.max_ttl`; never past the file's
    /// own expiry.
    #[param(value_type = Option<String>, example = "10m")]
    #[schema(inline)]
    ttl: Option<Ttl>,
    /// `attachment` (the default: saved, under the file's name) or `inline`
    /// (shown in the browser where it can be).
    #[param(inline)]
    #[schema(inline)]
    disposition: Option<Disposition>,
}

impl LinkRequest {
    /// The request from the query and the body, which wins field by field;
    /// the body must arrive `within`.
    async fn read(
        query: Option<&str>,
        headers: &HeaderMap,
        body: Body,
        within: Duration,
    ) -> Result<LinkRequest, ApiError> {
        let from_query: LinkRequest = match query {
            Some(query) => serde_urlencoded::from_str(query).map_err(invalid)?,
            None => LinkRequest::default(),
        };
        let bytes = read_whole(body, MAX_REQUEST_BODY, within, "link request").await?;
        let text = bytes.trim_ascii();
        let from_body: LinkRequest = if text.is_empty() {
            LinkRequest::default()
        } else if is_json(headers) || text.starts_with(b"{") {
            // Also when sent as a form: `curl -d '{…}'` labels JSON so.
            serde_json::from_slice(text).map_err(invalid)?
        } else {
            serde_urlencoded::from_bytes(text).map_err(invalid)?
        };
        Ok(LinkRequest {
            ttl: from_body.ttl.or(from_query.ttl),
            disposition: from_body.disposition.or(from_query.disposition),
        })
    }

    /// How long the link lasts: 1 s to `max`.
    fn ttl(&self, max: Duration) -> Result<Duration, ApiError> {
        let ttl = match &self.ttl {
            None => return Ok(DEFAULT_TTL.min(max)),
            Some(ttl) => ttl.duration().ok_or_else(|| ApiError::bad_request(TTL_FORM))?,
        };
        if ttl < Duration::from_secs(1) {
            return Err(ApiError::bad_request("Param ttl must be at least 1s"));
        }
        if ttl > max {
            return Err(ApiError::bad_request(format!(
                "Param ttl must be at most {}",
                humantime::format_duration(max)
            )));
        }
        Ok(ttl)
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
}

fn invalid(error: impl fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Invalid link request: {error}"))
}

const TTL_FORM: &str = "Param ttl must be a number of seconds or a duration such as \"10m\"";

/// A `ttl` as sent: a JSON number, or text (every form and query value is).
enum Ttl {
    Seconds(u64),
    Text(String),
}

impl Ttl {
    /// The duration meant, if the text reads as one.
    fn duration(&self) -> Option<Duration> {
        match self {
            Ttl::Seconds(seconds) => Some(Duration::from_secs(*seconds)),
            Ttl::Text(text) => {
                let text = text.trim();
                match text.parse::<u64>() {
                    Ok(seconds) => Some(Duration::from_secs(seconds)),
                    Err(_) => humantime::parse_duration(text).ok(),
                }
            }
        }
    }
}

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Ttl, D::Error> {
        struct TtlVisitor;

        impl Visitor<'_> for TtlVisitor {
            type Value = Ttl;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("ttl as a number of seconds or a duration such as \"10m\"")
            }

            fn visit_u64<E: de::Error>(self, seconds: u64) -> Result<Ttl, E> {
                Ok(Ttl::Seconds(seconds))
            }

            fn visit_i64<E: de::Error>(self, seconds: i64) -> Result<Ttl, E> {
                u64::try_from(seconds)
                    .map(Ttl::Seconds)
                    .map_err(|_| E::custom(TTL_FORM))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Ttl, E> {
                Ok(Ttl::Text(text.to_owned()))
            }
        }

        deserializer.deserialize_any(TtlVisitor)
    }
}

/// In the document: whole seconds, or a duration as text.
impl PartialSchema for Ttl {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)))
            .item(ObjectBuilder::new().schema_type(Type::String).examples(["10m"]))
            .into()
    }
}

impl ToSchema for Ttl {}

/// Make a signed link to a file: a URL that downloads it with no other
/// credential until it expires (or the file is deleted or expires).
#[utoipa::path(
    post,
    path = "/partner/app/{app_id}/media/{media_id}/link",
    tag = "media",
    params(MediaPath, LinkRequest),
    request_body(content = Option<LinkRequest>, description = "Optional; the same fields may come as a form body or in the query"),
    responses(
        (status = 200, description = "The link", body = LinkReply),
        (status = 400, description = "A ttl that is not a duration, under 1s or over links.max_ttl; an unknown disposition or field; no Host to build the link on", body = ErrorBody),
        (status = 401, description = "Authentication Failed", body = ErrorBody),
        (status = 408, description = "The body did not arrive within server.idle_timeout", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address (see Retry-After)", body = ErrorBody),
        (status = 404, description = "Media not found (unknown, expired, deleted, or another app's), or signed links are not enabled", body = ErrorBody),
        (status = 500, description = "Unable to fetch requested Media", body = ErrorBody),
    ),
    security(("token" = []), ("bearer" = []))
)]
pub async fn issue_link(
    State(state): State<ApiState>,
    ApiPath(MediaPath { app_id, media_id }): ApiPath<MediaPath>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    client: ClientAddr,
    body: Body,
) -> Result<Json<LinkReply>, ApiError> {
    let max_ttl = links::signer(&state)?.max_ttl();
    let app = authenticate(&state, &app_id, &headers, client, Task::Fetch).await?;
    let token_id =
        presented_token_id(&headers).ok_or_else(|| ApiError::from_auth(AuthError::Failed, Task::Fetch))?;
    let request = LinkRequest::read(query.as_deref(), &headers, body, state.idle_timeout).await?;
    let ttl = request.ttl(max_ttl)?;
    let media_id = plausible(&media_id)?;
    let info = state.vault.info(&app.id, &media_id).await?;
    let wanted = now_millis().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    // Whole seconds, as the link holds them; rounded down, so never past
    // the file's own expiry.
    let expires_at = wanted.min(info.expires_at).div_euclid(1000) * 1000;
    let disposition = request.disposition.unwrap_or_default();
    let url = links::url(
        &state,
        &headers,
        &app.id,
        &media_id,
        &token_id,
        expires_at,
        disposition,
    )?;
    metrics::counter!("mediavault_links_issued_total").increment(1);
    Ok(Json(Success::new(LinkBody {
        url,
        expires_at: rfc3339(expires_at),
    })))
}

/// The path of a link.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct LinkPath {
    /// The link's token, as issued.
    token: String,
}

/// Download a file by a signed link: whole or one byte range. No other
/// credential is read (an `Authorization` or `token` header is ignored).
#[utoipa::path(
    get,
    path = "/l/{token}",
    tag = "links",
    params(LinkPath, DownloadHeaders),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 304, description = "The cached copy is current"),
        (status = 412, description = "Precondition failed (If-Match or If-Unmodified-Since)", body = ErrorBody),
        (status = 403, description = "Invalid link (malformed, altered, or signed by no configured key), or the API token it was made with has been revoked", body = ErrorBody),
        (status = 404, description = "Media not found (expired or deleted since), or signed links are not enabled", body = ErrorBody),
        (status = 410, description = "Link expired", body = ErrorBody),
        (status = 416, description = "Requested range not satisfiable", body = ErrorBody),
        (status = 429, description = "The app whose file this is has its most downloads in progress (see Retry-After)", body = ErrorBody),
        (status = 500, description = "Unable to fetch requested Media", body = ErrorBody),
        (status = 503, description = "Too many downloads in progress (see Retry-After)", body = ErrorBody),
    )
)]
pub async fn follow_link(
    State(state): State<ApiState>,
    ApiPath(LinkPath { token }): ApiPath<LinkPath>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    follow(&state, &token, &headers, Payload::File).await
}

/// The headers a download by this link would send, without the file.
#[utoipa::path(
    head,
    path = "/l/{token}",
    tag = "links",
    params(LinkPath, DownloadHeaders),
    responses(
        (status = 200, description = "The file's headers"),
        (status = 206, description = "The requested range's headers"),
        (status = 304, description = "The cached copy is current"),
        (status = 412, description = "Precondition failed (If-Match or If-Unmodified-Since)"),
        (status = 403, description = "Invalid link, or its API token revoked"),
        (status = 404, description = "Media not found, or signed links are not enabled"),
        (status = 410, description = "Link expired"),
        (status = 416, description = "Requested range not satisfiable"),
        (status = 500, description = "Unable to fetch requested Media"),
    )
)]
pub async fn follow_link_head(
    State(state): State<ApiState>,
    ApiPath(LinkPath { token }): ApiPath<LinkPath>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    follow(&state, &token, &headers, Payload::HeadersOnly).await
}

/// The link checked (403, then 410), then the token it was made with (403
/// once revoked), then the medium looked up afresh and served as any
/// download is.
async fn follow(
    state: &ApiState,
    token: &str,
    headers: &HeaderMap,
    payload: Payload,
) -> Result<Response, ApiError> {
    let link = links::signer(state)?
        .verify(token, now_millis())
        .inspect_err(|error| {
            refused(*error);
        })?;
    if let Some(token_id) = &link.token_id
        && !state
            .vault
            .token_is_live(&link.app_id, token_id)
            .await
            .map_err(|e| ApiError::from_read(ReadError::Unavailable(e), Task::Fetch))?
    {
        refused(LinkError::Revoked);
        return Err(LinkError::Revoked.into());
    }
    deliver(
        state,
        &link.app_id,
        &link.media_id,
        link.token_id,
        headers,
        payload,
        link.disposition,
    )
    .await
}

/// Counts a refused link by why.
fn refused(error: LinkError) {
    let reason = match error {
        LinkError::Invalid => "invalid",
        LinkError::Expired => "expired",
        LinkError::Revoked => "revoked",
    };
    metrics::counter!("mediavault_links_refused_total", "reason" => reason).increment(1);
}
