//! App authentication: the token travels as `token: <t>`, `Authorization: <t>`
//! or `Authorization: Bearer <t>`, as Gupshup clients send it.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use mediavault_storage::App;

use crate::ApiState;
use crate::error::ApiError;
use mediavault_storage::AuthError;

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

/// The app `app_id` if the request carries one of its live tokens; 401 otherwise.
pub async fn authenticate(state: &ApiState, app_id: &str, headers: &HeaderMap) -> Result<App, ApiError> {
    let token = presented_token(headers).ok_or(AuthError::Failed)?;
    Ok(state.vault.authenticate(app_id, token).await?)
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
}
