//! The fetcher: one HTTP client whose every connection goes through the
//! guard, and what a fetch hands back (the answer's metadata and its body,
//! a chunk at a time, never held whole).

use std::sync::Arc;

use bytes::Bytes;
use reqwest::header::{CONTENT_DISPOSITION, CONTENT_TYPE};

use crate::error::FetchError;
use crate::guard::AddressGuard;
use crate::policy::FetchPolicy;
use crate::resolve::{GuardedResolver, Resolver, SystemResolver};
use crate::{filename, redirect, target};

/// The HTTP client could not be built (no TLS roots, say).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up fetching by URL: {0}")]
pub struct SetupError(#[from] reqwest::Error);

/// Fetches files by URL under a [`FetchPolicy`]. Cheap to clone.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    guard: Arc<AddressGuard>,
    enabled: bool,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("enabled", &self.enabled)
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// Resolving names with the operating system's resolver.
    pub fn new(policy: FetchPolicy) -> Result<Fetcher, SetupError> {
        Fetcher::with_resolver(policy, Arc::new(SystemResolver))
    }

    /// Resolving names with `resolver`.
    pub fn with_resolver(policy: FetchPolicy, resolver: Arc<dyn Resolver>) -> Result<Fetcher, SetupError> {
        let guard = Arc::new(AddressGuard::new(policy.allow_networks, policy.deny_networks));
        let client = reqwest::Client::builder()
            // A proxy from the environment would connect for us, to
            // addresses the guard never saw.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                resolver,
                guard: guard.clone(),
            }))
            .redirect(redirect::policy(guard.clone(), policy.max_redirects))
            // The URLs of earlier hops may carry tokens: the next host
            // does not get them.
            .referer(false)
            .connect_timeout(policy.connect_timeout)
            .timeout(policy.timeout)
            .user_agent(policy.user_agent)
            // Fetches go to arbitrary hosts, rarely twice: no connection to
            // them is kept open between fetches.
            .pool_max_idle_per_host(0)
            .build()?;
        Ok(Fetcher {
            client,
            guard,
            enabled: policy.enabled,
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Requests `url` and returns once the answer's head is in: a 2xx, with
    /// its body still to read. Nothing is sent anywhere the guard refuses.
    pub async fn fetch(&self, url: &str) -> Result<Fetched, FetchError> {
        if !self.enabled {
            return Err(FetchError::Disabled);
        }
        let url = target::parse(url, &self.guard)?;
        // URLs may carry secrets (signed query strings): only the host is logged.
        let host = url.host_str().unwrap_or_default().to_owned();
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|error| failed(error, &host, "fetch by URL failed"))?;
        let status = response.status();
        if !status.is_success() {
            tracing::info!(host, %status, "fetch by URL: the server did not answer 2xx");
            return Err(FetchError::Status(status.as_u16()));
        }
        let headers = response.headers();
        let filename = filename::of_response(
            headers.get(CONTENT_DISPOSITION).map(|v| v.as_bytes()),
            response.url(),
        );
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Fetched {
            content_length: response.content_length(),
            content_type,
            filename,
            host,
            response,
        })
    }
}

/// A 2xx answer whose body is yet to be read.
#[derive(Debug)]
pub struct Fetched {
    /// The `Content-Length` the server declared, if any. The body may still
    /// end short of it (an error) but never runs past it.
    pub content_length: Option<u64>,
    pub content_type: Option<String>,
    /// From `Content-Disposition`, else the last URL segment; cleaned.
    pub filename: Option<String>,
    host: String,
    response: reqwest::Response,
}

impl Fetched {
    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, FetchError> {
        let host = &self.host;
        self.response
            .chunk()
            .await
            .map_err(|error| failed(error, host, "fetch by URL broke off"))
    }
}

/// The class of a client error, logged with its causes but not its URL.
fn failed(error: reqwest::Error, host: &str, what: &str) -> FetchError {
    let class = FetchError::classify(&error);
    let error = error.without_url();
    tracing::info!(host, reason = class.reason(), error = ?error, "{what}");
    class
}
