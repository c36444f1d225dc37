//! The path of one stored file, shared by every route that names one, and
//! the check that its media id could name stored media at all.

use mediavault_storage::{MediaId, ReadError};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ApiError;

/// The path of one stored file, for every route that names one.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MediaPath {
    /// The app's id.
    pub app_id: String,
    /// The media id from the upload.
    pub media_id: String,
}

/// Longest media id looked up; ids the service makes have 16 to 19
/// digits (the UUIDs it made before, 36 characters).
const MEDIA_ID_LIMIT: usize = 128;

/// The id, if it could name stored media at all; anything else is 404
/// without asking the store (PostgreSQL refuses a NUL in text, for one).
pub fn plausible(media_id: &str) -> Result<MediaId, ApiError> {
    if media_id.is_empty() || media_id.len() > MEDIA_ID_LIMIT || media_id.chars().any(char::is_control) {
        return Err(ReadError::NotFound.into());
    }
    Ok(MediaId::new(media_id))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn implausible_ids_are_not_looked_up() {
        for id in ["", "a\0b", "line\nbreak", &"x".repeat(129)] {
            assert_eq!(plausible(id).unwrap_err().status, StatusCode::NOT_FOUND, "{id:?}");
        }
        assert!(plausible("1037543291543636").is_ok());
        assert!(plausible("9999999999999999999").is_ok());
        assert!(
            plausible("4c3f0b1e-52c8-4c57-9d2a-3f1c2b7a9e10").is_ok(),
            "ids issued before"
        );
        assert!(plausible("été").is_ok());
    }
}
