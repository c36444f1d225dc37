//! Rate limits, per replica: each app's uploads per second (a GCRA token
//! bucket from `governor`), and a lock-out for a client address that keeps
//! failing to authenticate to one app, so tokens cannot be guessed at speed.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use mediavault_storage::App;

use crate::ApiState;
use crate::error::ApiError;

/// What the limits are; `limits.*` and `server.trusted_proxies` in config.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// Each app's sustained upload rate, unless the app sets its own.
    pub uploads_per_second: NonZeroU32,
    /// Uploads an app may make at once above the sustained rate.
    pub upload_burst: NonZeroU32,
    /// Failed authentications one client address may make to one app in
    /// an hour; past them, that client gets 429 for that app until the
    /// hour is over.
    pub auth_failures_per_hour: u32,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for LimitSettings {
    fn default() -> LimitSettings {
        LimitSettings {
            uploads_per_second: NonZeroU32::new(10).expect("non-zero"),
            upload_burst: NonZeroU32::new(10).expect("non-zero"),
            auth_failures_per_hour: 20,
            trusted_proxies: Vec::new(),
        }
    }
}

/// How long failed authentications are counted, and a lock-out lasts,
/// from the first failure.
const FAILURE_WINDOW: Duration = Duration::from_secs(3600);
/// Client-and-app pairs tracked at most. Past it, expired windows are
/// dropped first, then pairs with a single failure (typos rather than a
/// guessing run), so memory stays bounded under a flood of addresses.
const MAX_TRACKED: usize = 100_000;

struct AppLimiter {
    rate: NonZeroU32,
    limiter: DefaultDirectRateLimiter,
}

struct FailureWindow {
    started: Instant,
    failures: u32,
}

pub struct Limits {
    settings: LimitSettings,
    uploads: Mutex<HashMap<String, AppLimiter>>,
    failures: Mutex<HashMap<(IpAddr, String), FailureWindow>>,
}

/// Whole seconds to wait, at least one (Retry-After has no fractions).
fn retry_after(wait: Duration) -> u32 {
    u32::try_from(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        .unwrap_or(u32::MAX)
        .max(1)
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Limits {
        Limits {
            settings,
            uploads: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one upload from the app's allowance, or answers 429.
    pub fn check_upload(&self, app: &App) -> Result<(), ApiError> {
        let rate = app
            .uploads_per_second
            .and_then(|n| u32::try_from(n).ok())
            .and_then(NonZeroU32::new)
            .unwrap_or(self.settings.uploads_per_second);
        let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        let entry = uploads.entry(app.id.clone()).or_insert_with(|| AppLimiter {
            rate,
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(self.settings.upload_burst)),
        });
        // An operator changed the app's rate: start its bucket afresh.
        if entry.rate != rate {
            *entry = AppLimiter {
                rate,
                limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(self.settings.upload_burst)),
            };
        }
        entry.limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many uploads for this app; retry in {} s", retry_after(wait)),
            )
            .with_retry_after(retry_after(wait))
        })
    }

    /// 429 while `client` is locked out of `scope` (an app id, or the admin API).
    pub fn check_not_locked_out(&self, client: IpAddr, scope: &str) -> Result<(), ApiError> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let Some(window) = failures.get(&(client, scope.to_owned())) else {
            return Ok(());
        };
        let elapsed = window.started.elapsed();
        if elapsed >= FAILURE_WINDOW || window.failures < self.settings.auth_failures_per_hour {
            return Ok(());
        }
        let wait = retry_after(FAILURE_WINDOW - elapsed);
        Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many failed authentications from this address; retry in {wait} s"),
        )
        .with_retry_after(wait))
    }

    /// Counts a failed authentication of `client` to `scope`.
    pub fn record_auth_failure(&self, client: IpAddr, scope: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, w| w.started.elapsed() < FAILURE_WINDOW);
        }
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, w| w.failures > 1);
        }
        let window = failures
            .entry((client, scope.to_owned()))
            .or_insert_with(|| FailureWindow {
                started: Instant::now(),
                failures: 0,
            });
        if window.started.elapsed() >= FAILURE_WINDOW {
            *window = FailureWindow {
                started: Instant::now(),
                failures: 0,
            };
        }
        window.failures = window.failures.saturating_add(1);
    }

    /// The client's address: the peer's, or, when the peer is a trusted
    /// proxy, the nearest untrusted hop of `X-Forwarded-For` (the hops
    /// further left are whatever the client chose to send).
    fn client_address(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> IpAddr {
        let peer = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let trusted = |ip: &IpAddr| self.settings.trusted_proxies.iter().any(|net| net.contains(ip));
        if !trusted(&peer) {
            return peer;
        }
        let mut client = peer;
        for hop in forwarded_for.unwrap_or_default().split(',').rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !trusted(&ip) {
                        break;
                    }
                }
                // Past an unreadable hop nothing can be believed.
                Err(_) => break,
            }
        }
        client
    }
}

/// The address a request comes from, for rate limits (see `client_address`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<ApiState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let forwarded_for = parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
        Ok(ClientAddr(state.limits.client_address(peer, forwarded_for)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(trusted: &[&str]) -> Limits {
        Limits::new(LimitSettings {
            uploads_per_second: NonZeroU32::new(2).unwrap(),
            upload_burst: NonZeroU32::new(3).unwrap(),
            auth_failures_per_hour: 2,
            trusted_proxies: trusted.iter().map(|n| n.parse().unwrap()).collect(),
        })
    }

    fn app(id: &str, rate: Option<i32>) -> App {
        App {
            id: id.into(),
            name: id.into(),
            capi: true,
            retention_seconds: 60,
            max_file_bytes: 1,
            allowed_types: None,
            uploads_per_second: rate,
            created_at: 0,
        }
    }

    #[test]
    fn uploads_beyond_the_burst_wait_per_app() {
        let limits = limits(&[]);
        for _ in 0..3 {
            limits.check_upload(&app("a", None)).unwrap();
        }
        let refused = limits.check_upload(&app("a", None)).unwrap_err();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.retry_after, Some(1));
        limits
            .check_upload(&app("b", None))
            .expect("another app has its own allowance");
        // A new rate for the app takes effect at once, with a fresh bucket.
        limits.check_upload(&app("a", Some(100))).unwrap();
    }

    #[test]
    fn failed_authentications_lock_out_one_client_for_one_app() {
        let limits = limits(&[]);
        let (client, other): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        limits.record_auth_failure(client, "a");
        limits.check_not_locked_out(client, "a").unwrap();
        limits.record_auth_failure(client, "a");
        let refused = limits.check_not_locked_out(client, "a").unwrap_err();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.retry_after.unwrap() > 3500);
        limits.check_not_locked_out(other, "a").unwrap();
        limits.check_not_locked_out(client, "b").unwrap();
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let direct = limits(&[]);
        let peer: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(direct.client_address(Some(peer), Some("203.0.113.5")), peer);

        let proxied = limits(&["192.0.2.0/24", "10.0.0.0/8"]);
        let client: IpAddr = "203.0.113.5".parse().unwrap();
        assert_eq!(proxied.client_address(Some(peer), Some("203.0.113.5")), client);
        // A client-chosen hop on the left is ignored; trusted hops are skipped.
        assert_eq!(
            proxied.client_address(Some(peer), Some("1.2.3.4, 203.0.113.5, 10.1.1.1")),
            client
        );
        assert_eq!(proxied.client_address(Some(peer), Some("garbage")), peer);
        assert_eq!(proxied.client_address(Some(peer), None), peer);
    }
}
