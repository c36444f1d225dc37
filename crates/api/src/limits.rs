//! Rate limits, per replica: each app's uploads per second (a GCRA token
//! bucket from `governor`), and a lock-out for a client address that keeps
//! failing to authenticate to one app, so tokens cannot be guessed at speed.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hashlink::LinkedHashMap;
use ipnet::IpNet;
use mediavault_storage::{App, AppId};
use sha2::{Digest, Sha256};

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
/// Client-and-scope pairs still counting towards a lock-out, at most. Past
/// it, the pair whose last failure is oldest makes room: a flood of new
/// pairs can wipe counts that have not reached a lock-out (each wipe costs
/// the flooder this many requests), never a lock-out itself.
const MAX_COUNTING: usize = 65_536;
/// Pairs locked out, at most. Filling this takes `auth_failures_per_hour`
/// failures per pair, from `MAX_LOCKED / MAX_LOCKED_PER_NETWORK` networks
/// at least; past it, the oldest lock-out goes. Scopes are at most 64
/// bytes (`could_be_app_id`), so both tiers together hold a few tens of
/// MiB at worst, whatever clients send.
const MAX_LOCKED: usize = 65_536;
/// Scopes one client network may be locked out of one by one. The next
/// locks it out of every scope at once, in one pair (`EVERY_SCOPE`), and
/// it takes no more room: a client failing under app ids of its own
/// making cannot fill the tier and push out the lock-outs before its own.
const MAX_LOCKED_PER_NETWORK: usize = 16;
/// The scope of a network locked out of every scope (no app id has a `~`).
const EVERY_SCOPE: &str = "~every";

struct AppLimiter {
    rate: NonZeroU32,
    limiter: DefaultDirectRateLimiter,
}

#[derive(Debug, Clone, Copy)]
struct FailureWindow {
    started: Instant,
    failures: u32,
}

/// A client network (see `client_network`) and the scope it failed on.
type FailureKey = (IpAddr, String);

/// Failed authentications in two tiers, each bounded and each kept in
/// order (of last failure, or of lock-out), so that making room is taking
/// the front: O(1) per request whatever the flood. Keys are hashed with
/// SipHash under a random key, as they are chosen by clients.
struct Failures {
    /// Pairs with fewer failures than the threshold.
    counting: LinkedHashMap<FailureKey, FailureWindow, RandomState>,
    /// Pairs locked out, with the start of their window (the lock-out
    /// ends `FAILURE_WINDOW` after it).
    locked: LinkedHashMap<FailureKey, Instant, RandomState>,
    /// How many pairs of `locked` each network has.
    locked_per_network: HashMap<IpAddr, usize, RandomState>,
    max_counting: usize,
    max_locked: usize,
}

impl Failures {
    fn new(max_counting: usize, max_locked: usize) -> Failures {
        Failures {
            counting: LinkedHashMap::with_hasher(RandomState::new()),
            locked: LinkedHashMap::with_hasher(RandomState::new()),
            locked_per_network: HashMap::with_hasher(RandomState::new()),
            max_counting,
            max_locked,
        }
    }

    /// How long the lock-out of `key`, or of its network from every scope,
    /// has to run, if either is locked out.
    fn lock_out_left(&mut self, key: &FailureKey) -> Option<Duration> {
        // Asked on every authenticated request: a network with no lock-out
        // at all, the common case, is answered by one lookup.
        if !self.locked_per_network.contains_key(&key.0) {
            return None;
        }
        let every = (key.0, EVERY_SCOPE.to_owned());
        self.pair_lock_out_left(key)
            .or_else(|| self.pair_lock_out_left(&every))
    }

    fn pair_lock_out_left(&mut self, key: &FailureKey) -> Option<Duration> {
        let elapsed = self.locked.get(key)?.elapsed();
        if elapsed >= FAILURE_WINDOW {
            self.unlock(key);
            return None;
        }
        Some(FAILURE_WINDOW - elapsed)
    }

    /// Ends the lock-out at the front: the first made.
    fn unlock_oldest(&mut self) {
        if let Some((front, _)) = self.locked.front() {
            let front = front.clone();
            self.unlock(&front);
        }
    }

    /// Ends the lock-out of `key`.
    fn unlock(&mut self, key: &FailureKey) {
        if self.locked.remove(key).is_some()
            && let Some(count) = self.locked_per_network.get_mut(&key.0)
        {
            *count -= 1;
            if *count == 0 {
                self.locked_per_network.remove(&key.0);
            }
        }
    }

    /// Counts one failure of `key`, and locks it out at `threshold`.
    fn record(&mut self, key: FailureKey, threshold: u32) {
        if self.lock_out_left(&key).is_some() {
            return;
        }
        let counted = match self.counting.to_back(&key) {
            Some(window) if window.started.elapsed() < FAILURE_WINDOW => {
                window.failures = window.failures.saturating_add(1);
                Some(*window)
            }
            _ => None,
        };
        let window = counted.unwrap_or_else(|| {
            if !self.counting.contains_key(&key) && self.counting.len() >= self.max_counting {
                self.counting.pop_front();
            }
            let fresh = FailureWindow {
                started: Instant::now(),
                failures: 1,
            };
            self.counting.insert(key.clone(), fresh);
            fresh
        });
        if window.failures >= threshold {
            self.counting.remove(&key);
            self.lock(key, window.started);
        }
    }

    fn lock(&mut self, mut key: FailureKey, started: Instant) {
        while self
            .locked
            .front()
            .is_some_and(|(_, at)| at.elapsed() >= FAILURE_WINDOW)
        {
            self.unlock_oldest();
        }
        if self.locked_per_network.get(&key.0).copied().unwrap_or(0) >= MAX_LOCKED_PER_NETWORK {
            key.1 = EVERY_SCOPE.to_owned();
        }
        if self.locked.len() >= self.max_locked {
            self.unlock_oldest();
        }
        *self.locked_per_network.entry(key.0).or_default() += 1;
        self.locked.insert(key, started);
    }
}

/// What a lock-out counts: an IPv4 address, or an IPv6 /64 (a subscriber's
/// prefix, in which a client picks any address it likes).
fn client_network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

/// One `X-Forwarded-For` hop: `ip`, `ip:port`, `[v6]` or `[v6]:port`.
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let hop = std::str::from_utf8(hop).ok()?.trim();
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    let v6 = hop.strip_prefix('[')?.strip_suffix(']')?;
    v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

pub struct Limits {
    settings: LimitSettings,
    uploads: Mutex<HashMap<AppId, AppLimiter>>,
    failures: Mutex<Failures>,
    live_tokens: Mutex<LiveTokens>,
}

/// Tokens most recently accepted: at most this many are known to be live.
const MAX_LIVE_TOKENS: usize = 65_536;

/// Tokens this process accepted within `FAILURE_WINDOW`, by SHA-256, in
/// order of their last acceptance. A lock-out is against guessing, and a
/// client presenting one of these is not guessing: it is checked whatever
/// its network's lock-out, so that one client failing from an address
/// many share (a NAT, a proxy not listed in `server.trusted_proxies`)
/// does not lock the others' working tokens out for an hour. A token not
/// known here is still refused while locked out, so a guesser's tries
/// never reach the database. A token refused since is forgotten.
struct LiveTokens {
    accepted: LinkedHashMap<[u8; 32], Instant, RandomState>,
}

impl LiveTokens {
    fn digest(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    fn contains(&mut self, token: &str) -> bool {
        self.forget_expired();
        self.accepted.contains_key(&LiveTokens::digest(token))
    }

    fn accepted(&mut self, token: &str) {
        let digest = LiveTokens::digest(token);
        self.accepted.remove(&digest);
        self.forget_expired();
        if self.accepted.len() >= MAX_LIVE_TOKENS {
            self.accepted.pop_front();
        }
        self.accepted.insert(digest, Instant::now());
    }

    fn refused(&mut self, token: &str) {
        self.accepted.remove(&LiveTokens::digest(token));
    }

    fn forget_expired(&mut self) {
        while self
            .accepted
            .front()
            .is_some_and(|(_, at)| at.elapsed() >= FAILURE_WINDOW)
        {
            self.accepted.pop_front();
        }
    }
}

/// Whole seconds to wait, at least one (Retry-After has no fractions).
fn retry_after(wait: Duration) -> u32 {
    u32::try_from(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        .unwrap_or(u32::MAX)
        .max(1)
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Limits {
        Limits::bounded(settings, MAX_COUNTING, MAX_LOCKED)
    }

    fn bounded(settings: LimitSettings, max_counting: usize, max_locked: usize) -> Limits {
        Limits {
            settings,
            uploads: Mutex::new(HashMap::new()),
            failures: Mutex::new(Failures::new(max_counting, max_locked)),
            live_tokens: Mutex::new(LiveTokens {
                accepted: LinkedHashMap::with_hasher(RandomState::new()),
            }),
        }
    }

    /// Whether `token` was accepted within the last hour and not refused
    /// since: it is checked whatever the lock-out of the network sending it.
    pub fn is_live_token(&self, token: &str) -> bool {
        let mut live = self.live_tokens.lock().unwrap_or_else(|e| e.into_inner());
        live.contains(token)
    }

    /// `token` was accepted, or (`live` false) refused.
    pub fn token_checked(&self, token: &str, live: bool) {
        let mut tokens = self.live_tokens.lock().unwrap_or_else(|e| e.into_inner());
        if live {
            tokens.accepted(token);
        } else {
            tokens.refused(token);
        }
    }

    /// Takes one upload from the app's allowance, or answers 429.
    pub fn check_upload(&self, app: &App) -> Result<(), ApiError> {
        let rate = app
            .uploads_per_second
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
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let Some(left) = failures.lock_out_left(&(client_network(client), scope.to_owned())) else {
            return Ok(());
        };
        let wait = retry_after(left);
        Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many failed authentications from this address; retry in {wait} s"),
        )
        .with_retry_after(wait))
    }

    /// Counts a failed authentication of `client` to `scope`.
    pub fn record_auth_failure(&self, client: IpAddr, scope: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.record(
            (client_network(client), scope.to_owned()),
            self.settings.auth_failures_per_hour,
        );
    }

    /// Whether `peer` is one of `server.trusted_proxies`, whose forwarding
    /// headers (`X-Forwarded-For`, `-Host`, `-Proto`) are believed. An
    /// unknown peer is not. An IPv4 peer of a dual-stack listener (`[::]`)
    /// arrives as an IPv4-mapped IPv6 address, and is judged as the IPv4
    /// address it is.
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| {
            self.settings
                .trusted_proxies
                .iter()
                .any(|net| net.contains(&ip) || net.contains(&ip.to_canonical()))
        })
    }

    /// Pairs tracked, as (counting, locked out).
    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        (failures.counting.len(), failures.locked.len())
    }

    /// The client's address: the peer's, or, when the peer is a trusted
    /// proxy, the nearest untrusted hop of `X-Forwarded-For`, read from
    /// the right across every line of it in order (a proxy may append a
    /// line of its own; the hops further left are whatever the client
    /// chose to send).
    fn client_address<'h>(
        &self,
        peer: Option<IpAddr>,
        forwarded_for: impl DoubleEndedIterator<Item = &'h [u8]>,
    ) -> IpAddr {
        let peer = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        if !self.trusts(Some(peer)) {
            return peer;
        }
        let mut client = peer;
        for hop in forwarded_for.rev().flat_map(|line| line.rsplit(|&b| b == b',')) {
            match parse_hop(hop) {
                Some(ip) => {
                    client = ip;
                    if !self.trusts(Some(ip)) {
                        break;
                    }
                }
                // Past an unreadable hop nothing can be believed.
                None => break,
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
        let forwarded_for = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|line| line.as_bytes());
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

    fn app(id: &str, rate: Option<u32>) -> App {
        App {
            id: AppId::new(id),
            name: id.into(),
            capi: true,
            retention: Duration::from_secs(60),
            max_file_bytes: 1,
            allowed_types: None,
            uploads_per_second: rate,
            max_bytes_stored: None,
            max_media: None,
            wa_type_limits: None,
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

    /// The client `limits` sees behind peer 192.0.2.9 given these
    /// `X-Forwarded-For` lines.
    fn behind_peer(limits: &Limits, lines: &[&str]) -> IpAddr {
        let peer = "192.0.2.9".parse().unwrap();
        limits.client_address(Some(peer), lines.iter().map(|line| line.as_bytes()))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let direct = limits(&[]);
        assert_eq!(behind_peer(&direct, &["203.0.113.5"]), ip("192.0.2.9"));

        let proxied = limits(&["192.0.2.0/24", "10.0.0.0/8"]);
        let client = ip("203.0.113.5");
        assert_eq!(behind_peer(&proxied, &["203.0.113.5"]), client);
        // A client-chosen hop on the left is ignored; trusted hops are skipped.
        assert_eq!(behind_peer(&proxied, &["1.2.3.4, 203.0.113.5, 10.1.1.1"]), client);
        assert_eq!(behind_peer(&proxied, &["garbage"]), ip("192.0.2.9"));
        assert_eq!(behind_peer(&proxied, &[]), ip("192.0.2.9"));
    }

    /// A proxy that appends a line of its own (HAProxy's `option
    /// forwardfor`) is read last line first: the client's own line cannot
    /// name the address that is counted.
    #[test]
    fn forwarded_for_lines_are_one_list_read_from_the_right() {
        let proxied = limits(&["192.0.2.0/24", "10.0.0.0/8"]);
        assert_eq!(
            behind_peer(&proxied, &["198.51.100.77", "203.0.113.5"]),
            ip("203.0.113.5")
        );
        assert_eq!(
            behind_peer(&proxied, &["198.51.100.77, 203.0.113.5", "10.1.1.1"]),
            ip("203.0.113.5")
        );
        assert_eq!(
            behind_peer(&proxied, &["203.0.113.5", "10.1.1.1, 10.2.2.2"]),
            ip("203.0.113.5")
        );
    }

    #[test]
    fn forwarded_for_hops_may_carry_ports_and_brackets() {
        let proxied = limits(&["192.0.2.0/24", "10.0.0.0/8"]);
        assert_eq!(behind_peer(&proxied, &["203.0.113.5:51234"]), ip("203.0.113.5"));
        assert_eq!(behind_peer(&proxied, &["[2001:db8::7]"]), ip("2001:db8::7"));
        assert_eq!(behind_peer(&proxied, &["[2001:db8::7]:443"]), ip("2001:db8::7"));
        assert_eq!(behind_peer(&proxied, &["2001:db8::7"]), ip("2001:db8::7"));
        // A trusted hop with a port is skipped like one without.
        assert_eq!(
            behind_peer(&proxied, &["203.0.113.5, 10.1.1.1:8080"]),
            ip("203.0.113.5")
        );
        // An unreadable hop stops the walk at the last hop believed.
        assert_eq!(
            behind_peer(&proxied, &["203.0.113.5, [2001:db8::7", "10.1.1.1"]),
            ip("10.1.1.1")
        );
    }

    /// A token accepted is live until refused; the most recently accepted
    /// are kept when there are too many.
    #[test]
    fn a_token_accepted_is_live_until_refused() {
        let limits = limits(&[]);
        assert!(!limits.is_live_token("mv_a"));
        limits.token_checked("mv_a", true);
        assert!(limits.is_live_token("mv_a"));
        assert!(!limits.is_live_token("mv_b"), "only the token accepted");
        limits.token_checked("mv_a", false);
        assert!(!limits.is_live_token("mv_a"));

        for n in 0..=MAX_LIVE_TOKENS {
            limits.token_checked(&format!("mv_{n}"), true);
        }
        assert!(!limits.is_live_token("mv_0"), "the oldest made room");
        assert!(limits.is_live_token("mv_1"));
        assert!(limits.is_live_token(&format!("mv_{MAX_LIVE_TOKENS}")));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let limits = limits(&[]);
        limits.record_auth_failure(ip("2001:db8:1:2::1"), "a");
        limits.record_auth_failure(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), "a");
        let refused = limits.check_not_locked_out(ip("2001:db8:1:2::99"), "a");
        assert_eq!(refused.unwrap_err().status, StatusCode::TOO_MANY_REQUESTS);
        limits
            .check_not_locked_out(ip("2001:db8:1:3::1"), "a")
            .expect("the next /64 is another client");
        // An IPv4 client seen as an IPv4-mapped IPv6 address is the same client.
        limits.record_auth_failure(ip("192.0.2.1"), "a");
        limits.record_auth_failure(ip("::ffff:192.0.2.1"), "a");
        assert!(limits.check_not_locked_out(ip("192.0.2.1"), "a").is_err());
    }

    /// Single failures from ever new pairs fill only the counting tier,
    /// which stays within its bound, and never push out a lock-out.
    #[test]
    fn a_flood_of_new_pairs_is_bounded_and_keeps_lock_outs() {
        let limits = Limits::bounded(limits(&[]).settings, 8, 4);
        let locked = ip("203.0.113.1");
        limits.record_auth_failure(locked, "a");
        limits.record_auth_failure(locked, "a");
        for n in 0..10_000u32 {
            let flooder = IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0000 + n));
            limits.record_auth_failure(flooder, &format!("app-{n}"));
            let (counting, locked_out) = limits.tracked();
            assert!(counting <= 8 && locked_out <= 4, "{counting} {locked_out}");
        }
        assert_eq!(
            limits.check_not_locked_out(locked, "a").unwrap_err().status,
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    /// When the counting tier is full, the pair whose last failure is
    /// oldest makes room; a pair that keeps failing stays.
    #[test]
    fn the_longest_quiet_count_makes_room() {
        let limits = Limits::bounded(
            LimitSettings {
                auth_failures_per_hour: 3,
                ..LimitSettings::default()
            },
            2,
            2,
        );
        let (quiet, busy, new) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
        limits.record_auth_failure(quiet, "a");
        limits.record_auth_failure(busy, "a");
        limits.record_auth_failure(busy, "a");
        limits.record_auth_failure(new, "a");
        assert_eq!(limits.tracked(), (2, 0));
        // `busy` kept its two failures: a third locks it out.
        limits.record_auth_failure(busy, "a");
        assert!(limits.check_not_locked_out(busy, "a").is_err());
        // `quiet` lost its one: two more do not lock it out yet.
        limits.record_auth_failure(quiet, "a");
        limits.record_auth_failure(quiet, "a");
        limits.check_not_locked_out(quiet, "a").unwrap();
    }

    /// A trusted proxy is trusted whether the listener sees it as an IPv4
    /// address or, listening on `[::]`, as the IPv4-mapped IPv6 one.
    #[test]
    fn a_trusted_proxy_is_trusted_through_a_dual_stack_listener() {
        let limits = limits(&["10.0.0.0/8", "2001:db8::/32"]);
        for trusted in ["10.1.2.3", "::ffff:10.1.2.3", "2001:db8::1"] {
            assert!(limits.trusts(Some(ip(trusted))), "{trusted}");
        }
        for untrusted in ["11.1.2.3", "::ffff:11.1.2.3", "2001:db9::1"] {
            assert!(!limits.trusts(Some(ip(untrusted))), "{untrusted}");
        }
        assert!(!limits.trusts(None));
    }

    /// A network locked out of `MAX_LOCKED_PER_NETWORK` scopes is locked
    /// out of every scope by its next lock-out, and takes no more room:
    /// failing under ever new app ids, it cannot push out the lock-out of
    /// another client made before.
    #[test]
    fn a_network_failing_under_many_scopes_is_locked_out_of_all() {
        let max_locked = 64;
        let limits = Limits::bounded(limits(&[]).settings, 8, max_locked);
        let (earlier, flooder) = (ip("203.0.113.1"), ip("198.51.100.7"));
        limits.record_auth_failure(earlier, "a");
        limits.record_auth_failure(earlier, "a");
        for n in 0..2 * max_locked {
            let scope = format!("made-up-{n}");
            limits.record_auth_failure(flooder, &scope);
            limits.record_auth_failure(flooder, &scope);
        }
        assert!(
            limits.check_not_locked_out(earlier, "a").is_err(),
            "the lock-out made before stays"
        );
        let (_, locked_out) = limits.tracked();
        assert_eq!(locked_out, 1 + MAX_LOCKED_PER_NETWORK + 1);
        for scope in ["a", "never-failed", "~admin"] {
            assert!(limits.check_not_locked_out(flooder, scope).is_err(), "{scope}");
        }
        limits.check_not_locked_out(ip("198.51.100.8"), "a").unwrap();
    }

    /// The locked-out tier has its own bound; past it the oldest lock-out
    /// goes first.
    #[test]
    fn lock_outs_are_bounded_too() {
        let limits = Limits::bounded(limits(&[]).settings, 2, 2);
        let clients = ["10.0.0.1", "10.0.0.2", "10.0.0.3"].map(ip);
        for client in clients {
            limits.record_auth_failure(client, "a");
            limits.record_auth_failure(client, "a");
        }
        assert_eq!(limits.tracked(), (0, 2));
        limits.check_not_locked_out(clients[0], "a").unwrap();
        assert!(limits.check_not_locked_out(clients[1], "a").is_err());
        assert!(limits.check_not_locked_out(clients[2], "a").is_err());
    }
}
