//! Why a fetch failed, by class. The text of each is safe to show the
//! caller: it never holds an address the name resolved to, a detail of the
//! remote server, or a byte of its answer. The detail goes to the log.

use std::error::Error as StdError;

/// Why a fetch by URL failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Fetching by URL is turned off (`fetch.enabled = false`).
    #[error("fetching by URL is turned off")]
    Disabled,
    /// The URL, or a redirect's, is not one that may be fetched.
    #[error("{0}")]
    BadUrl(BadUrl),
    /// The host is an address the guard refuses.
    #[error("address not allowed")]
    DeniedAddress,
    /// The host name resolves only to addresses the guard refuses. The
    /// caller is told what an unknown name tells it: which names resolve
    /// inside the service's network is not the caller's to learn.
    #[error("host name not found")]
    DeniedName,
    /// The name did not resolve.
    #[error("host name not found")]
    Dns,
    /// No connection: refused, unreachable, or reset before an answer.
    #[error("could not connect")]
    Connect,
    /// The connection or the whole fetch took too long.
    #[error("timed out")]
    Timeout,
    /// The TLS handshake failed (a bad certificate, say).
    #[error("TLS handshake failed")]
    Tls,
    /// The server answered with a status other than 2xx.
    #[error("the server answered HTTP {0}")]
    Status(u16),
    #[error("too many redirects")]
    TooManyRedirects,
    /// The connection failed or was closed while the body came.
    #[error("the transfer broke off")]
    Body,
}

/// What is wrong with a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadUrl {
    #[error("not a valid URL")]
    Invalid,
    #[error("only http and https URLs can be fetched")]
    Scheme,
    #[error("URLs with credentials are not allowed")]
    Credentials,
}

impl FetchError {
    /// A short label of the class, for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            FetchError::Disabled => "disabled",
            FetchError::BadUrl(_) => "bad_url",
            FetchError::DeniedAddress | FetchError::DeniedName => "denied_address",
            FetchError::Dns => "dns",
            FetchError::Connect => "connect",
            FetchError::Timeout => "timeout",
            FetchError::Tls => "tls",
            FetchError::Status(_) => "status",
            FetchError::TooManyRedirects => "too_many_redirects",
            FetchError::Body => "body",
        }
    }

    /// The class of a client error. A refusal of the guard's own travels
    /// inside reqwest's error (from the resolver or the redirect policy) and
    /// is taken out as it was made.
    pub(crate) fn classify(error: &reqwest::Error) -> FetchError {
        let mut tls = false;
        for cause in causes(error) {
            if let Some(own) = cause.downcast_ref::<FetchError>() {
                return *own;
            }
            tls |= cause.is::<rustls::Error>();
        }
        if error.is_timeout() {
            FetchError::Timeout
        } else if tls {
            FetchError::Tls
        } else if error.is_builder() {
            // A redirect's Location that is no URL.
            FetchError::BadUrl(BadUrl::Invalid)
        } else if error.is_body() || error.is_decode() {
            FetchError::Body
        } else {
            FetchError::Connect
        }
    }
}

/// The error and its causes. An `io::Error` that wraps another hides it
/// from `source()`: it is taken out with `get_ref`.
fn causes<'a>(error: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut all = Vec::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        all.push(cause);
        next = match cause.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => cause.source(),
        };
    }
    all
}
