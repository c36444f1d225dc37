//! What the operator decides about fetching by URL.

use std::time::Duration;

use ipnet::IpNet;

/// The settings of the `[fetch]` section.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    /// Off: no URL is fetched ([`crate::FetchError::Disabled`]).
    pub enabled: bool,
    /// Networks opened although a default range holds them (an internal
    /// media server, say).
    pub allow_networks: Vec<IpNet>,
    /// Networks never connected to, whatever `allow_networks` says.
    pub deny_networks: Vec<IpNet>,
    /// Redirects followed, each checked like the first URL.
    pub max_redirects: usize,
    /// Bound on setting up one TCP connection. 5 s: a reachable server
    /// answers in milliseconds, and by then two lost SYNs have been resent.
    pub connect_timeout: Duration,
    /// Bound on the whole fetch: resolving, connecting, every redirect, and
    /// the body to its last byte. 50 s: the caller waits for it without a
    /// byte of answer, and reverse proxies commonly give up on a silent
    /// upstream after 60 s (nginx's `proxy_read_timeout`); ending first
    /// leaves time to store the file and answer. It still fetches 100 MiB
    /// from a server that sends 17 Mbit/s.
    pub timeout: Duration,
    pub user_agent: String,
}

impl Default for FetchPolicy {
    /// The defaults of `config/default.toml`.
    fn default() -> FetchPolicy {
        FetchPolicy {
            enabled: true,
            allow_networks: Vec::new(),
            deny_networks: Vec::new(),
            max_redirects: 3,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(50),
            user_agent: user_agent(),
        }
    }
}

/// `mediavault/<version>`, so the servers fetched from can tell who asks.
pub fn user_agent() -> String {
    format!("mediavault/{}", env!("CARGO_PKG_VERSION"))
}
