//! Authentication. App tokens travel as `token: <t>`, `Authorization: <t>`
//! or `Authorization: Bearer <t>`, as Gupshup clients send them; the admin
//! token as `Authorization: Bearer <t>`. Neither is ever logged.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use std::net::IpAddr;

use mediavault_storage::{App, AppId, AuthError, TokenId, token_id_of};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ApiState;
use crate::error::{ApiError, Task};
use crate::limits::ClientAddr;
use crate::path;

fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get("token")
        .or_else(|| headers.get(AUTHORIZATION))?
        .to_str()
        .ok()?
        .trim();
    let token = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ if value.eq_ignore_ascii_case("bearer") => "",
        _ => value,
    };
    (!token.is_empty()).then_some(token)
}

/// The id of the API token the request carries: after `authenticate`, the
/// token it was let in with. Links made by the request name it, so that
/// revoking the token ends them.
pub(crate) fn presented_token_id(headers: &HeaderMap) -> Option<TokenId> {
    presented_token(headers).map(token_id_of)
}

/// Which app a presented token must belong to.
pub(crate) enum TokenOf<'a> {
    /// The app a path names.
    App(&'a AppId),
    /// Whichever app it is a token of (the WhatsApp surface's paths name none).
    AnyApp,
}

/// The app of the token the request carries, as `of` requires. The outer
/// error is the 429 of a client locked out of `scope` (nothing is checked
/// then); each failed check is counted against `client` under `scope`.
///
/// A token this process accepted within the hour (`Limits::is_live_token`)
/// is checked whatever the lock-out: its client may share the address of
/// the one that failed (behind a NAT, say), which must not cost it an
/// hour. That tells a locked-out client which of its tries are such
/// tokens, no help to a guesser: tokens are made by the service, 256
/// random bits (see `mediavault_storage::Vault::issue_token`).
///
/// Where the request names no app (`TokenOf::AnyApp`), `scope` is the
/// address's alone, and a failure is counted there only when the token was
/// never issued. One issued to an app and revoked since is that app's
/// client's: its failures lock the address out of that app
/// alone, as a path naming the app would, and a token of that app is
/// checked against that lock-out. A client still sending its app's revoked
/// token must not lock out every other app used from its address. (A
/// deleted app's tokens go with it, and count as never issued.)
pub(crate) async fn check_token(
    state: &ApiState,
    scope: &str,
    of: TokenOf<'_>,
    headers: &HeaderMap,
    client: IpAddr,
) -> Result<Result<App, AuthError>, ApiError> {
    let token = presented_token(headers);
    let known_live = token.is_some_and(|token| state.limits.is_live_token(token));
    if !known_live {
        state.limits.check_not_locked_out(client, scope)?;
    }
    let outcome = match (token, &of) {
        (Some(token), TokenOf::App(app_id)) => state.vault.authenticate(app_id, token).await,
        (Some(token), TokenOf::AnyApp) => state.vault.authenticate_token(token).await,
        (None, _) => Err(AuthError::Failed),
    };
    // A token refused is forgotten before any lock-out below answers; one
    // accepted is known live only once its request is let through.
    if let (Some(token), Err(AuthError::Failed)) = (token, &outcome) {
        state.limits.token_checked(token, false);
    }
    match (&outcome, of, token) {
        (Ok(app), TokenOf::AnyApp, _) if !known_live => {
            state.limits.check_not_locked_out(client, app.id.as_str())?
        }
        (Err(AuthError::Failed), TokenOf::AnyApp, Some(token)) => {
            let issuer = state
                .vault
                .issuer_of_token(token)
                .await
                .inspect_err(|error| tracing::warn!(%error, "finding a refused token's app"))
                .ok()
                .flatten();
            let charged = issuer.as_ref().map_or(scope, AppId::as_str);
            // A client locked out of the token's app is told so (429), as
            // on a path naming the app, not 401 for ever.
            state.limits.check_not_locked_out(client, charged)?;
            state.limits.record_auth_failure(client, charged);
        }
        (Err(AuthError::Failed), _, _) => state.limits.record_auth_failure(client, scope),
        _ => {}
    }
    if let (Some(token), Ok(_)) = (token, &outcome) {
        state.limits.token_checked(token, true);
    }
    Ok(outcome)
}

/// The app `app_id` if the request carries one of its live tokens; 401
/// otherwise, and 429 once `client` has failed too often for this app. An
/// `app_id` that cannot name an app is 401 at once, and counts nothing.
/// If the token store fails, the 500 is that of `task`.
pub async fn authenticate(
    state: &ApiState,
    app_id: &str,
    headers: &HeaderMap,
    ClientAddr(client): ClientAddr,
    task: Task,
) -> Result<App, ApiError> {
    let Some(app_id) = path::app_id(app_id) else {
        return Err(ApiError::from_auth(AuthError::Failed, task));
    };
    check_token(state, app_id.as_str(), TokenOf::App(&app_id), headers, client)
        .await?
        .map_err(|error| ApiError::from_auth(error, task))
}

/// The admin API's caller, checked against `admin.token`: without one
/// configured the admin API does not exist (404).
pub struct Admin;

/// The SHA-256 of a token the operator configured (the admin API's, or
/// the one `/metrics` asks for). Presented tokens are hashed and compared
/// with this in constant time, so neither the comparison's time nor a
/// length check says anything about the secret.
#[derive(Clone)]
pub struct ConfiguredToken([u8; 32]);

impl ConfiguredToken {
    pub fn new(token: &str) -> ConfiguredToken {
        ConfiguredToken(Sha256::digest(token.as_bytes()).into())
    }

    fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(digest.ct_eq(&self.0))
    }
}

/// Failed admin authentications are counted under this scope (no app id
/// has a `~`, so no path can share it).
const ADMIN_SCOPE: &str = "~admin";

/// Failed authentications to `/metrics` are counted under this scope.
const METRICS_SCOPE: &str = "~metrics";

/// Checks the `Authorization: Bearer` token of a request against the
/// operator's `expected`, counting a failure against `client` under
/// `scope`; a client locked out of `scope` is 429 before its token is
/// looked at.
fn check_configured_token(
    state: &ApiState,
    expected: &ConfiguredToken,
    headers: &HeaderMap,
    client: IpAddr,
    scope: &str,
) -> Result<(), ApiError> {
    state.limits.check_not_locked_out(client, scope)?;
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match presented {
        Some(token) if expected.matches(token) => Ok(()),
        _ => {
            state.limits.record_auth_failure(client, scope);
            Err(ApiError::from_auth(AuthError::Failed, Task::Admin))
        }
    }
}

/// Whether a request may read `/metrics`: always where no token is
/// configured (`metrics.token`), else with that token as a Bearer.
pub(crate) fn check_metrics_token(
    state: &ApiState,
    headers: &HeaderMap,
    client: IpAddr,
) -> Result<(), ApiError> {
    match &state.metrics_token {
        Some(expected) => check_configured_token(state, expected, headers, client, METRICS_SCOPE),
        None => Ok(()),
    }
}

impl FromRequestParts<ApiState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Admin, ApiError> {
        let Some(expected) = &state.admin_token else {
            return Err(crate::error::not_found().await);
        };
        let ClientAddr(client) = ClientAddr::from_request_parts(parts, state)
            .await
            .unwrap_or_else(|never| match never {});
        check_configured_token(state, expected, &parts.headers, client, ADMIN_SCOPE).map(|()| Admin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn every_gupshup_header_form_is_read() {
        assert_eq!(presented_token(&headers(&[("token", "abc")])), Some("abc"));
        assert_eq!(
            presented_token(&headers(&[("authorization", "abc")])),
            Some("abc")
        );
        assert_eq!(
            presented_token(&headers(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            presented_token(&headers(&[("authorization", "bearer  abc ")])),
            Some("abc")
        );
        assert_eq!(
            presented_token(&headers(&[("token", "t"), ("authorization", "a")])),
            Some("t")
        );
        assert_eq!(presented_token(&headers(&[("authorization", "Bearer ")])), None);
        assert_eq!(presented_token(&headers(&[])), None);
    }

    #[test]
    fn the_admin_token_matches_only_itself() {
        let admin = ConfiguredToken::new("s3cret-admin-token");
        assert!(admin.matches("s3cret-admin-token"));
        assert!(!admin.matches("s3cret-admin-tokeN"));
        assert!(!admin.matches("s3cret-admin-token "));
        assert!(!admin.matches(""));
    }
}
