//! Redirects: each hop is checked as the first URL was (scheme, credentials,
//! an address-literal host), and at most `max_redirects` are followed. A
//! hop to a name is checked again by the resolver when it connects.

use std::sync::Arc;

use reqwest::redirect::{Attempt, Policy};

use crate::error::FetchError;
use crate::guard::AddressGuard;
use crate::target;

pub(crate) fn policy(guard: Arc<AddressGuard>, max_redirects: usize) -> Policy {
    Policy::custom(move |attempt: Attempt| {
        // `previous` holds the first URL and every hop followed so far.
        if attempt.previous().len() > max_redirects {
            tracing::info!(max_redirects, "fetch by URL: too many redirects");
            return attempt.error(FetchError::TooManyRedirects);
        }
        match target::check(attempt.url(), &guard) {
            Ok(()) => attempt.follow(),
            Err(refusal) => attempt.error(refusal),
        }
    })
}
