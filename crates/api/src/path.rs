//! A `Path` extractor whose rejections use the service's error shape, and
//! what a path segment must look like to name an app.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use mediavault_storage::AppId;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::new(rejection.status(), rejection.body_text())),
        }
    }
}

/// Longest path segment that can name an app. App ids are UUIDs (36
/// characters); some room is left for ids made elsewhere.
const MAX_APP_ID_LEN: usize = 64;

/// Whether `id` could name an app: at most 64 ASCII letters, digits, `-`,
/// `_` or `.`. Anything else names no app, and is refused before it is
/// looked up or counted against the caller, so that clients cannot grow
/// the failure counts with ids of their choosing.
pub fn could_be_app_id(id: &str) -> bool {
    (1..=MAX_APP_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `id` as an app id, if it could name an app at all.
pub fn app_id(id: &str) -> Option<AppId> {
    could_be_app_id(id).then(|| AppId::new(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_are_short_and_plain() {
        assert!(could_be_app_id("0b6f3c1e-5d2a-4f7e-9a41-2c8d7e6f5a10"));
        assert!(could_be_app_id("legacy_app.v2"));
        assert!(could_be_app_id(&"a".repeat(64)));
        assert!(!could_be_app_id(&"a".repeat(65)));
        assert!(!could_be_app_id(""));
        for bad in ["a b", "a/b", "a%2Fb", "é", "a\nb", "a\"b"] {
            assert!(!could_be_app_id(bad), "{bad:?}");
        }
    }
}
