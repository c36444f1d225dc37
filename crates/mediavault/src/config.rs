//! Layered configuration: the embedded `config/default.toml` < `--config FILE`
//! < `MEDIAVAULT__SECTION__KEY` environment variables < command-line flags.
//! Secrets may come from `*_file` paths and never print.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::num::NonZeroU32;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use ipnet::IpNet;
use mediavault_api::{LimitSettings, MinRate, Slots};
use mediavault_fetch::FetchPolicy;
use mediavault_reaper::{ReaperSettings, Schedule};
use mediavault_storage::DatabaseUrl;
use mediavault_storage::keys::{EPOCH_LABEL_PREFIX, EpochSettings, Pkcs11Settings, TokenSelector};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

const EMBEDDED_DEFAULT: &str = include_str!("../../../config/default.toml");
/// The database when none is configured.
const EMBEDDED_DATABASE_URL: &str = "sqlite://data/mediavault.db";

/// The most transfers of a kind `server.max_concurrent_*` may allow at
/// once: far past what one process serves, and within a semaphore's range.
const MAX_SLOTS: usize = 1_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub blobs: BlobsConfig,
    #[serde(default)]
    pub crypto: CryptoConfig,
    pub media: MediaConfig,
    pub reaper: ReaperConfig,
    pub limits: LimitsConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    pub fetch: FetchConfig,
    pub links: LinksConfig,
    pub log: LogConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A response whose client accepts none of it for this long is cut.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    pub max_concurrent_uploads: usize,
    /// Of those, how many one app may have; unset, a quarter (at least 1).
    #[serde(default)]
    pub max_concurrent_uploads_per_app: Option<usize>,
    /// Bytes per second an upload body must bring on average over each
    /// `min_upload_rate_window`; 0 sets no minimum.
    pub min_upload_rate: u64,
    #[serde(with = "humantime_serde")]
    pub min_upload_rate_window: Duration,
    pub max_concurrent_downloads: usize,
    /// Bytes per second a download's client must take on average over each
    /// `min_download_rate_window`, the time its body waits on the store
    /// aside; 0 sets no minimum.
    pub min_download_rate: u64,
    #[serde(with = "humantime_serde")]
    pub min_download_rate_window: Duration,
    /// Of those, how many one app (its signed links included) may have;
    /// unset, a quarter (at least 1).
    #[serde(default)]
    pub max_concurrent_downloads_per_app: Option<usize>,
    /// Peers (addresses or CIDR networks) whose X-Forwarded-For names the
    /// client; their connections count only towards `max_connections`.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Connections open at once, in all; past it, new ones get 503.
    pub max_connections: usize,
    /// Of those, how many one client (IPv4 address, IPv6 /64) may have;
    /// past it, its new ones get 429.
    pub max_connections_per_client: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: Option<SecretString>,
    pub url_file: Option<PathBuf>,
    /// Whether `serve` applies migrations before serving; off, it refuses
    /// a schema older than it knows (other commands never migrate).
    pub migrate_on_start: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobsConfig {
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
    pub secret_access_key_file: Option<PathBuf>,
    pub allow_http: bool,
    /// Unset: unsigned payloads over HTTPS, signed over plain HTTP.
    pub unsigned_payload: Option<bool>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// A local store only: the free space uploads leave on its file system.
    pub min_free_bytes: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptoConfig {
    /// Where the KEKs in use live.
    #[serde(default)]
    pub provider: KeyProviderKind,
    /// With `provider = "config"`, the keys; with `pkcs11`, keys from
    /// before the move to the token, kept only to unwrap what they wrapped.
    pub keys: Option<SecretString>,
    pub keys_file: Option<PathBuf>,
    #[serde(default)]
    pub pkcs11: Option<Pkcs11Config>,
    pub epochs: EpochsConfig,
}

/// `[crypto.epochs]`: each data key wrapped under the KEK of its expiry
/// day, destroyed by the reaper once the day and `grace` have passed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochsConfig {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// How far ahead epoch keys are made before uploads need them.
    #[serde(with = "humantime_serde")]
    pub ahead: Duration,
    #[serde(default, deserialize_with = "digits_as_text")]
    pub label_prefix: Option<String>,
}

/// Off; as `config/default.toml` has it.
impl Default for EpochsConfig {
    fn default() -> EpochsConfig {
        const DAY: u64 = 24 * 3600;
        EpochsConfig {
            enabled: false,
            grace: Duration::from_secs(DAY),
            ahead: Duration::from_secs(32 * DAY),
            label_prefix: None,
        }
    }
}

/// The value of `crypto.provider`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyProviderKind {
    /// `crypto.keys`: key material in the configuration.
    #[default]
    #[serde(alias = "keyring")]
    Config,
    /// A PKCS#11 token (an HSM): `[crypto.pkcs11]`.
    Pkcs11,
}

/// `[crypto.pkcs11]`: the token that holds the KEKs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The vendor's PKCS#11 library.
    pub module: Option<PathBuf>,
    /// The token, by label or by slot id (one of the two).
    #[serde(default, deserialize_with = "digits_as_text")]
    pub token_label: Option<String>,
    pub slot: Option<u64>,
    /// The user PIN, or a file holding it.
    #[serde(default, deserialize_with = "digits_as_secret")]
    pub pin: Option<SecretString>,
    pub pin_file: Option<PathBuf>,
    /// Labels of the KEKs in use, the first active.
    #[serde(default)]
    pub keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    pub max_file_bytes: u64,
    /// The quota of apps that set none; unset: no limit.
    #[serde(default)]
    pub max_bytes_stored: Option<u64>,
    #[serde(default)]
    pub max_media: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaperConfig {
    pub enabled: bool,
    pub schedule: String,
    pub sweep_schedule: String,
    #[serde(with = "humantime_serde")]
    pub pass_budget: Duration,
    #[serde(with = "humantime_serde")]
    pub stale_upload_after: Duration,
    #[serde(with = "humantime_serde")]
    pub rewrite_keys_every: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub uploads_per_second: u32,
    pub upload_burst: u32,
    pub auth_failures_per_hour: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub token: Option<SecretString>,
    pub token_file: Option<PathBuf>,
}

/// `/metrics`: open to all, or to requests bearing `token`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub token: Option<SecretString>,
    pub token_file: Option<PathBuf>,
}

/// Upload by URL: whether the service fetches files, and where it may.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchConfig {
    pub enabled: bool,
    /// Addresses or CIDR networks opened although a default range holds them.
    #[serde(default)]
    pub allow_networks: Vec<String>,
    /// Addresses or CIDR networks never fetched from, whatever else says.
    #[serde(default)]
    pub deny_networks: Vec<String>,
    pub max_redirects: usize,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Bound on the whole fetch, body included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// Signed links: the keys that sign them, how long one may last, and the
/// address they start with.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinksConfig {
    pub keys: Option<SecretString>,
    pub keys_file: Option<PathBuf>,
    /// The longest a link may be asked to last.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// `https://host[:port][/prefix]`; unset: the address of each request.
    #[serde(default)]
    pub public_base_url: Option<String>,
}

/// More redirects than any file server needs; the bound keeps a chain short.
const MAX_REDIRECTS_LIMIT: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// Values given as command-line flags, the top layer.
#[derive(Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
}

impl Config {
    /// Reads every layer and checks the result.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Toml::string(EMBEDDED_DEFAULT));
        if let Some(file) = file {
            if !file.is_file() {
                bail!("config file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(Env::prefixed("MEDIAVAULT__").split("__").lowercase(true));
        if let Some(listen) = overrides.listen {
            figment = figment.merge(Serialized::default("server.listen", listen.to_string()));
        }
        Config::extract(figment)
    }

    /// The embedded default with `toml` over it, checked as `load` checks
    /// it; neither the environment nor any file is read.
    pub fn from_toml_str(toml: &str) -> anyhow::Result<Config> {
        Config::extract(Figment::from(Toml::string(EMBEDDED_DEFAULT)).merge(Toml::string(toml)))
    }

    fn extract(figment: Figment) -> anyhow::Result<Config> {
        let config: Config = figment
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// What `serve` needs beyond `validate`. Its reaper takes an upload as
    /// abandoned once the upload has noted no progress for
    /// `reaper.stale_upload_after`; an upload notes its progress only as its
    /// bytes arrive, every quarter of that, and its client may be silent for
    /// up to `server.idle_timeout` before it is cut. Below twice the idle
    /// timeout, an upload whose client pauses within the idle timeout would
    /// be reaped under it and fail when its bytes come again. (`reap` run by
    /// hand may lower the setting on purpose: it applies to uploads already
    /// running.)
    pub fn check_serving(&self) -> anyhow::Result<()> {
        if self.reaper.enabled && self.reaper.stale_upload_after < 2 * self.server.idle_timeout {
            bail!(
                "reaper.stale_upload_after ({}) must be at least twice server.idle_timeout ({}) where \
                 the reaper runs: an upload whose client pauses within the idle timeout would be taken \
                 as abandoned",
                humantime::format_duration(self.reaper.stale_upload_after),
                humantime::format_duration(self.server.idle_timeout)
            );
        }
        Ok(())
    }

    fn validate(&self) -> anyhow::Result<()> {
        // The ranges an app's own settings have: these are every app's
        // defaults, which creating an app checks as its own.
        if !(1..=i64::MAX as u64).contains(&self.media.max_file_bytes) {
            bail!("media.max_file_bytes must be from 1 to {}", i64::MAX);
        }
        if !(Duration::from_secs(1)..=mediavault_storage::MAX_RETENTION).contains(&self.media.retention) {
            bail!("media.retention must be from 1s to 100 years");
        }
        for (key, limit) in [
            ("media.max_bytes_stored", self.media.max_bytes_stored),
            ("media.max_media", self.media.max_media),
        ] {
            if let Some(limit) = limit
                && !(1..=i64::MAX as u64).contains(&limit)
            {
                bail!("{key} must be from 1 to {}; leave it out for no limit", i64::MAX);
            }
        }
        // Past these, arithmetic on a setting overflows and panics (an
        // instant plus a timeout, a semaphore's permits) where it is used,
        // after the service has said it is listening: refused here, named.
        // Far past any real use; a value meant as "unlimited" gets this.
        for (key, duration) in [
            ("server.shutdown_timeout", self.server.shutdown_timeout),
            ("server.idle_timeout", self.server.idle_timeout),
            ("server.send_timeout", self.server.send_timeout),
            (
                "server.min_upload_rate_window",
                self.server.min_upload_rate_window,
            ),
            (
                "server.min_download_rate_window",
                self.server.min_download_rate_window,
            ),
            ("blobs.timeout", self.blobs.timeout),
            ("crypto.epochs.grace", self.crypto.epochs.grace),
            ("reaper.pass_budget", self.reaper.pass_budget),
            ("reaper.stale_upload_after", self.reaper.stale_upload_after),
            ("reaper.rewrite_keys_every", self.reaper.rewrite_keys_every),
            ("fetch.connect_timeout", self.fetch.connect_timeout),
            ("fetch.timeout", self.fetch.timeout),
            ("links.max_ttl", self.links.max_ttl),
        ] {
            if duration > mediavault_storage::MAX_RETENTION {
                bail!("{key} must be at most 100 years");
            }
        }
        for (key, slots) in [
            (
                "server.max_concurrent_uploads",
                self.server.max_concurrent_uploads,
            ),
            (
                "server.max_concurrent_downloads",
                self.server.max_concurrent_downloads,
            ),
            ("server.max_connections", self.server.max_connections),
        ] {
            if slots > MAX_SLOTS {
                bail!("{key} must be at most {MAX_SLOTS}");
            }
        }
        if !(1..=self.server.max_connections).contains(&self.server.max_connections_per_client) {
            bail!(
                "server.max_connections_per_client must be from 1 to server.max_connections ({})",
                self.server.max_connections
            );
        }
        if self.blobs.timeout.is_zero() {
            bail!("blobs.timeout must be above 0");
        }
        if self.server.idle_timeout.is_zero() {
            bail!("server.idle_timeout must be above 0");
        }
        if self.server.max_concurrent_uploads == 0 {
            bail!("server.max_concurrent_uploads must be above 0");
        }
        if self.reaper.rewrite_keys_every < Duration::from_secs(1) {
            bail!("reaper.rewrite_keys_every must be at least 1s");
        }
        // Below that every upload in progress would be taken as abandoned,
        // and each would note its progress at every write.
        if self.reaper.stale_upload_after < Duration::from_secs(1) {
            bail!("reaper.stale_upload_after must be at least 1s");
        }
        if let Some(per_app) = self.server.max_concurrent_uploads_per_app
            && !(1..=self.server.max_concurrent_uploads).contains(&per_app)
        {
            bail!(
                "server.max_concurrent_uploads_per_app must be from 1 to server.max_concurrent_uploads ({})",
                self.server.max_concurrent_uploads
            );
        }
        for (key, window) in [
            (
                "server.min_upload_rate_window",
                self.server.min_upload_rate_window,
            ),
            (
                "server.min_download_rate_window",
                self.server.min_download_rate_window,
            ),
        ] {
            if window.is_zero() {
                bail!("{key} must be above 0");
            }
        }
        if self.server.send_timeout.is_zero() {
            bail!("server.send_timeout must be above 0");
        }
        if self.server.max_concurrent_downloads == 0 {
            bail!("server.max_concurrent_downloads must be above 0");
        }
        if let Some(per_app) = self.server.max_concurrent_downloads_per_app
            && !(1..=self.server.max_concurrent_downloads).contains(&per_app)
        {
            bail!(
                "server.max_concurrent_downloads_per_app must be from 1 to server.max_concurrent_downloads ({})",
                self.server.max_concurrent_downloads
            );
        }
        if self.links.max_ttl < Duration::from_secs(1) {
            bail!("links.max_ttl must be at least 1s");
        }
        self.reaper_settings()?;
        self.limit_settings()?;
        self.fetch_policy()?;
        self.public_base_url()?;
        let epochs = self.epoch_settings()?;
        if self.crypto.provider == KeyProviderKind::Pkcs11 {
            self.pkcs11_config()?;
            let keys = self.crypto.pkcs11.as_ref().map_or(&[][..], |p| &p.keys[..]);
            if keys.is_empty() && epochs.is_none() {
                bail!(
                    "crypto.pkcs11.keys is empty: name the labels of the KEKs in the token, the active one \
                     first (create one with `mediavault keys generate --provider pkcs11 --label …`)"
                );
            }
        }
        Ok(())
    }

    /// `links.public_base_url`, checked (an http or https URL with a host,
    /// and no query or fragment) and without a trailing slash.
    pub fn public_base_url(&self) -> anyhow::Result<Option<String>> {
        let Some(url) = &self.links.public_base_url else {
            return Ok(None);
        };
        let url = url.trim().trim_end_matches('/');
        let refused = || {
            anyhow::anyhow!(
                "links.public_base_url {url:?} must be an http:// or https:// URL with a host and \
                 at most a path (such as https://media.example.com or https://example.com/media)"
            )
        };
        let parsed: axum::http::Uri = url.parse().map_err(|_| refused())?;
        let scheme_ok = matches!(parsed.scheme_str(), Some("http" | "https"));
        let host_ok = parsed.host().is_some_and(|host| !host.is_empty());
        if !scheme_ok || !host_ok || parsed.query().is_some() || url.contains(['#', '@']) {
            return Err(refused());
        }
        Ok(Some(url.to_owned()))
    }

    /// The configured links key list, if any.
    pub fn links_keys(&self) -> anyhow::Result<Option<SecretString>> {
        secret(
            "links.keys",
            self.links.keys.as_ref(),
            self.links.keys_file.as_deref(),
        )
    }

    /// `[crypto.epochs]`, checked, when epoch keys are on.
    pub fn epoch_settings(&self) -> anyhow::Result<Option<EpochSettings>> {
        let epochs = &self.crypto.epochs;
        if !epochs.enabled {
            return Ok(None);
        }
        if self.crypto.provider != KeyProviderKind::Pkcs11 {
            bail!(
                "crypto.epochs.enabled needs keys the service can make and destroy: set crypto.provider = \"pkcs11\""
            );
        }
        const DAY: u64 = 24 * 3600;
        let ahead_days = epochs.ahead.as_secs().div_ceil(DAY);
        if ahead_days > 3660 {
            bail!("crypto.epochs.ahead must be at most 3660d");
        }
        let settings = EpochSettings {
            label_prefix: epochs
                .label_prefix
                .as_deref()
                .unwrap_or(EPOCH_LABEL_PREFIX)
                .to_owned(),
            grace: epochs.grace,
            ahead_days: u32::try_from(ahead_days).expect("bounded above"),
        };
        settings.check()?;
        Ok(Some(settings))
    }

    /// `[crypto.pkcs11]`, checked for what every use of the token needs:
    /// the module, the token (by label or slot), the PIN (inline or a file).
    fn pkcs11_config(&self) -> anyhow::Result<&Pkcs11Config> {
        let Some(pkcs11) = &self.crypto.pkcs11 else {
            bail!(
                "crypto.pkcs11 is missing: set its module, token_label (or slot), pin (or pin_file) and keys"
            );
        };
        if pkcs11.module.is_none() {
            bail!("crypto.pkcs11.module is missing: the path of the token vendor's PKCS#11 library");
        }
        if pkcs11.token_label.is_some() == pkcs11.slot.is_some() {
            bail!("crypto.pkcs11: give one of token_label and slot");
        }
        if pkcs11.pin.is_none() && pkcs11.pin_file.is_none() {
            bail!("crypto.pkcs11.pin (or crypto.pkcs11.pin_file) is missing");
        }
        Ok(pkcs11)
    }

    /// The token's settings, with the PIN read: at most `sessions` token
    /// calls at once, each on a session of its own.
    pub fn pkcs11_settings(&self, sessions: usize) -> anyhow::Result<Pkcs11Settings> {
        let pkcs11 = self.pkcs11_config()?;
        let pin = secret(
            "crypto.pkcs11.pin",
            pkcs11.pin.as_ref(),
            pkcs11.pin_file.as_deref(),
        )?
        .expect("checked: a PIN or its file");
        Ok(Pkcs11Settings {
            module: pkcs11.module.clone().expect("checked: a module"),
            token: match (&pkcs11.token_label, pkcs11.slot) {
                (Some(label), _) => TokenSelector::Label(label.clone()),
                (None, slot) => TokenSelector::Slot(slot.expect("checked: a label or a slot")),
            },
            pin,
            keys: pkcs11.keys.clone(),
            sessions,
        })
    }

    /// Whether the keys are the development key of embedded mode: no key
    /// provider is configured (a `sqlite://` database then allows it).
    pub fn wants_development_key(&self) -> anyhow::Result<bool> {
        Ok(self.crypto.provider == KeyProviderKind::Config && self.crypto_keys()?.is_none())
    }

    /// Upload by URL's settings, checked: networks parse, timeouts are
    /// above zero, redirects are at most 10.
    pub fn fetch_policy(&self) -> anyhow::Result<FetchPolicy> {
        let fetch = &self.fetch;
        if fetch.connect_timeout.is_zero() {
            bail!("fetch.connect_timeout must be above 0");
        }
        if fetch.timeout.is_zero() {
            bail!("fetch.timeout must be above 0");
        }
        if fetch.max_redirects > MAX_REDIRECTS_LIMIT {
            bail!("fetch.max_redirects must be at most {MAX_REDIRECTS_LIMIT}");
        }
        Ok(FetchPolicy {
            enabled: fetch.enabled,
            allow_networks: networks("fetch.allow_networks", &fetch.allow_networks)?,
            deny_networks: networks("fetch.deny_networks", &fetch.deny_networks)?,
            max_redirects: fetch.max_redirects,
            connect_timeout: fetch.connect_timeout,
            timeout: fetch.timeout,
            ..FetchPolicy::default()
        })
    }

    /// The rate limits, checked: the two rates, and the failures that lock
    /// a client out, must be above zero (with 0 failures allowed, a single
    /// mistyped token would lock its address out for an hour).
    pub fn limit_settings(&self) -> anyhow::Result<LimitSettings> {
        let above_zero = |key: &str, value: u32| {
            NonZeroU32::new(value).ok_or_else(|| anyhow::anyhow!("{key} must be above 0"))
        };
        Ok(LimitSettings {
            uploads_per_second: above_zero("limits.uploads_per_second", self.limits.uploads_per_second)?,
            upload_burst: above_zero("limits.upload_burst", self.limits.upload_burst)?,
            auth_failures_per_hour: above_zero(
                "limits.auth_failures_per_hour",
                self.limits.auth_failures_per_hour,
            )?
            .get(),
            trusted_proxies: networks("server.trusted_proxies", &self.server.trusted_proxies)?,
        })
    }

    /// Open files the service keeps for its own work, out of reach of
    /// connections: two per transfer slot (a blob file or a store
    /// connection, and a spare), and a margin for its pools, database and
    /// logs.
    pub fn open_files_reserved(&self) -> u64 {
        let slots = self.server.max_concurrent_uploads + self.server.max_concurrent_downloads;
        u64::try_from(2 * slots + 128).unwrap_or(u64::MAX)
    }

    /// Uploads one app may have in progress at once on a replica.
    pub fn uploads_per_app(&self) -> usize {
        self.server
            .max_concurrent_uploads_per_app
            .unwrap_or_else(|| Slots::default_per_app(self.server.max_concurrent_uploads))
    }

    /// Downloads one app may have in progress at once on a replica.
    pub fn downloads_per_app(&self) -> usize {
        self.server
            .max_concurrent_downloads_per_app
            .unwrap_or_else(|| Slots::default_per_app(self.server.max_concurrent_downloads))
    }

    /// The minimum download rate; `None` when `server.min_download_rate` is 0.
    pub fn min_download_rate(&self) -> Option<MinRate> {
        min_rate(
            self.server.min_download_rate,
            self.server.min_download_rate_window,
        )
    }

    /// The minimum upload rate; `None` when `server.min_upload_rate` is 0.
    pub fn min_upload_rate(&self) -> Option<MinRate> {
        min_rate(self.server.min_upload_rate, self.server.min_upload_rate_window)
    }

    /// The reaper's schedules, parsed; a bad expression names its key.
    pub fn reaper_settings(&self) -> anyhow::Result<ReaperSettings> {
        let schedule = |key: &str, value: &str| -> anyhow::Result<Schedule> {
            value.parse().map_err(|e| anyhow::anyhow!("{key}: {e}"))
        };
        Ok(ReaperSettings {
            schedule: schedule("reaper.schedule", &self.reaper.schedule)?,
            sweep_schedule: schedule("reaper.sweep_schedule", &self.reaper.sweep_schedule)?,
            budget: self.reaper.pass_budget,
            stale_upload_after: self.reaper.stale_upload_after,
            rewrite_keys_every: self.reaper.rewrite_keys_every,
        })
    }

    /// The database URL, from `database.url` or `database.url_file`; with
    /// neither, the embedded SQLite default. (The default lives here, not in
    /// default.toml, so that a `url_file` from a higher layer never collides
    /// with it.)
    pub fn database_url(&self) -> anyhow::Result<DatabaseUrl> {
        let configured = secret(
            "database.url",
            self.database.url.as_ref(),
            self.database.url_file.as_deref(),
        )?;
        Ok(match configured {
            Some(url) => url.expose_secret().parse()?,
            None => DatabaseUrl::Sqlite(EMBEDDED_DATABASE_URL.to_owned()),
        })
    }

    pub fn blobs_secret_access_key(&self) -> anyhow::Result<Option<SecretString>> {
        secret(
            "blobs.secret_access_key",
            self.blobs.secret_access_key.as_ref(),
            self.blobs.secret_access_key_file.as_deref(),
        )
    }

    /// The admin API's token, if one is configured; a short one is refused,
    /// since it is all that guards every app.
    pub fn admin_token(&self) -> anyhow::Result<Option<SecretString>> {
        bearer_token(
            "admin.token",
            self.admin.token.as_ref(),
            self.admin.token_file.as_deref(),
        )
    }

    /// The token `/metrics` asks for, if one is configured; a short one
    /// is refused.
    pub fn metrics_token(&self) -> anyhow::Result<Option<SecretString>> {
        bearer_token(
            "metrics.token",
            self.metrics.token.as_ref(),
            self.metrics.token_file.as_deref(),
        )
    }

    /// The configured key list, if any.
    pub fn crypto_keys(&self) -> anyhow::Result<Option<SecretString>> {
        secret(
            "crypto.keys",
            self.crypto.keys.as_ref(),
            self.crypto.keys_file.as_deref(),
        )
    }
}

/// Text that may be all digits. An environment variable `…__PIN=0123`
/// reaches serde as the number 123: refused, with the way to quote it,
/// rather than taken without its leading zero.
fn digits_as_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Text(String),
        Other(serde::de::IgnoredAny),
    }
    match Option::<Text>::deserialize(deserializer)? {
        Some(Text::Text(text)) => Ok(Some(text)),
        Some(Text::Other(_)) => Err(serde::de::Error::custom(
            "not text (digits are read as a number): quote them (`pin = \"0123\"`, or the variable as '\"0123\"'), \
             or give the PIN in a file (pin_file)",
        )),
        None => Ok(None),
    }
}

/// A secret that may be all digits, as a PIN is.
fn digits_as_secret<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SecretString>, D::Error> {
    Ok(digits_as_text(deserializer)?.map(SecretString::from))
}

/// A list of addresses or CIDR networks; a bad entry names `key`.
fn networks(key: &str, entries: &[String]) -> anyhow::Result<Vec<IpNet>> {
    entries
        .iter()
        .map(|entry| {
            let entry = entry.trim();
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| anyhow::anyhow!("{key}: {entry:?} is not an address or a CIDR network"))
        })
        .collect()
}

/// A secret given inline or as a file, never both.
fn secret(
    key: &str,
    inline: Option<&SecretString>,
    file: Option<&Path>,
) -> anyhow::Result<Option<SecretString>> {
    match (inline, file) {
        (Some(_), Some(_)) => bail!("{key} and {key}_file are both set; give one"),
        (Some(value), None) => Ok(Some(value.clone())),
        (None, Some(path)) => {
            let value = SecretString::from(
                std::fs::read_to_string(path)
                    .with_context(|| format!("{key}_file: cannot read {}", path.display()))?,
            );
            Ok(Some(value.expose_secret().trim().into()))
        }
        (None, None) => Ok(None),
    }
}

/// A token the service asks clients to bear, given as `secret` reads it;
/// one under 32 characters is refused, as one a guesser could find.
fn bearer_token(
    key: &str,
    inline: Option<&SecretString>,
    file: Option<&Path>,
) -> anyhow::Result<Option<SecretString>> {
    let token = secret(key, inline, file)?;
    if let Some(token) = &token
        && token.expose_secret().len() < 32
    {
        bail!("{key} must be at least 32 characters (try `openssl rand -base64 32`)");
    }
    Ok(token)
}

/// A minimum rate of `bytes_per_second` over `window`; `None` for 0.
fn min_rate(bytes_per_second: u64, window: Duration) -> Option<MinRate> {
    (bytes_per_second > 0).then_some(MinRate {
        bytes_per_second,
        window,
    })
}

#[cfg(test)]
// figment::Jail fixes the closure's error type; its size is not ours to choose.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    /// Figment's `Jail` isolates environment and working directory per test.
    #[test]
    fn layers_apply_in_order_and_name_bad_keys() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
            assert_eq!(config.media.retention, Duration::from_secs(30 * 86400));
            assert!(
                matches!(config.database_url().unwrap(), DatabaseUrl::Sqlite(url) if url == "sqlite://data/mediavault.db")
            );
            assert_eq!(config.log.format, LogFormat::Text);

            jail.create_file("file.toml", "[media]\nretention = \"2d\"\nmax_file_bytes = 10\n")?;
            jail.set_env("MEDIAVAULT__MEDIA__MAX_FILE_BYTES", "20");
            jail.set_env("MEDIAVAULT__SERVER__LISTEN", "127.0.0.1:9000");
            let overrides = Overrides {
                listen: Some("127.0.0.1:0".parse().unwrap()),
            };
            let config = Config::load(Some(Path::new("file.toml")), &overrides).unwrap();
            assert_eq!(config.media.retention, Duration::from_secs(2 * 86400));
            assert_eq!(config.media.max_file_bytes, 20, "environment beats file");
            assert_eq!(config.server.listen.port(), 0, "flag beats environment");

            jail.set_env("MEDIAVAULT__REAPER__SCHEDULE", "* * * * *");
            let error = Config::load(None, &Overrides::default()).unwrap_err().to_string();
            assert!(
                error.contains("reaper.schedule") && error.contains("six fields"),
                "{error}"
            );
            jail.set_env("MEDIAVAULT__REAPER__SCHEDULE", "*/5 * * * * *");

            assert!(config.database.migrate_on_start, "serve migrates unless told");
            assert_eq!(config.reaper.rewrite_keys_every, Duration::from_secs(3600));
            jail.set_env("MEDIAVAULT__REAPER__REWRITE_KEYS_EVERY", "0s");
            let error = Config::load(None, &Overrides::default()).unwrap_err().to_string();
            assert!(error.contains("reaper.rewrite_keys_every"), "{error}");
            jail.set_env("MEDIAVAULT__REAPER__REWRITE_KEYS_EVERY", "10m");
            jail.set_env("MEDIAVAULT__REAPER__STALE_UPLOAD_AFTER", "500ms");
            let error = Config::load(None, &Overrides::default()).unwrap_err().to_string();
            assert!(error.contains("reaper.stale_upload_after"), "{error}");
            jail.set_env("MEDIAVAULT__REAPER__STALE_UPLOAD_AFTER", "1s");
            jail.set_env("MEDIAVAULT__DATABASE__MIGRATE_ON_START", "false");
            let config = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(config.reaper.rewrite_keys_every, Duration::from_secs(600));
            assert!(!config.database.migrate_on_start);

            jail.set_env("MEDIAVAULT__MEDIA__RETENTION", "soon");
            let error = Config::load(None, &Overrides::default()).unwrap_err().to_string();
            assert!(error.to_lowercase().contains("media.retention"), "{error}");
            // Defaults past an app's own ranges, which would refuse every
            // app created without its own values.
            jail.set_env("MEDIAVAULT__MEDIA__RETENTION", "200y");
            let error = Config::load(None, &Overrides::default()).unwrap_err().to_string();
            assert!(error.contains("media.retention"), "{error}");
            jail.set_env("MEDIAVAULT__MEDIA__RETENTION", "36500d");
            Config::load(None, &Overrides::default()).unwrap();
            jail.set_env("MEDIAVAULT__MEDIA__MAX_FILE_BYTES", "9223372036854775808");
            let error = Config::load(None, &Overrides::default()).unwrap_err().to_string();
            assert!(error.contains("media.max_file_bytes"), "{error}");
            jail.set_env("MEDIAVAULT__MEDIA__MAX_FILE_BYTES", "1000");
            // Values meant as "unlimited", which panicked where they were
            // used (a semaphore's permits, an instant plus a timeout).
            for (variable, value, key) in [
                (
                    "MEDIAVAULT__SERVER__MAX_CONCURRENT_UPLOADS",
                    "18446744073709551615",
                    "server.max_concurrent_uploads",
                ),
                (
                    "MEDIAVAULT__SERVER__MAX_CONCURRENT_DOWNLOADS",
                    "1000001",
                    "server.max_concurrent_downloads",
                ),
                ("MEDIAVAULT__SERVER__IDLE_TIMEOUT", "1000y", "server.idle_timeout"),
                ("MEDIAVAULT__FETCH__TIMEOUT", "101y", "fetch.timeout"),
            ] {
                jail.set_env(variable, value);
                let error = Config::load(None, &Overrides::default()).unwrap_err().to_string();
                assert!(error.contains(key), "{variable}={value}: {error}");
                jail.clear_env();
            }
            Ok(())
        });
    }

    #[test]
    fn secrets_come_from_files_and_not_twice() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("keys", "k1:AAAA\n")?;
            jail.set_env("MEDIAVAULT__CRYPTO__KEYS_FILE", "keys");
            let config = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(config.crypto_keys().unwrap().unwrap().expose_secret(), "k1:AAAA");
            jail.set_env("MEDIAVAULT__CRYPTO__KEYS", "k2:BBBB");
            let config = Config::load(None, &Overrides::default()).unwrap();
            assert!(
                config
                    .crypto_keys()
                    .unwrap_err()
                    .to_string()
                    .contains("crypto.keys_file")
            );
            assert!(!format!("{config:?}").contains("k2:BBBB"), "secrets never print");
            Ok(())
        });
    }

    #[test]
    fn a_database_url_file_alone_is_enough() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("db-url", "postgres://u@h/db\n")?;
            jail.set_env("MEDIAVAULT__DATABASE__URL_FILE", "db-url");
            let config = Config::load(None, &Overrides::default()).unwrap();
            let url = config.database_url().unwrap();
            assert!(matches!(&url, DatabaseUrl::Postgres(url) if url.expose_secret() == "postgres://u@h/db"));

            jail.create_file("db-url", "mysql://u:hunter2@h/db\n")?;
            let error = Config::load(None, &Overrides::default())
                .unwrap()
                .database_url()
                .unwrap_err()
                .to_string();
            assert!(error.contains("database.url"), "{error}");
            assert!(!error.contains("hunter2"), "{error}");
            Ok(())
        });
    }

    /// `serve` with its reaper on refuses a stale-upload time under twice
    /// the idle timeout; other commands, and a server whose reaper is off,
    /// take it.
    #[test]
    fn a_serving_reaper_keeps_stale_uploads_apart_from_pauses() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MEDIAVAULT__REAPER__STALE_UPLOAD_AFTER", "100s");
            let config = Config::load(None, &Overrides::default()).unwrap();
            let error = config.check_serving().unwrap_err().to_string();
            assert!(
                error.contains(
                    "reaper.stale_upload_after (1m 40s) must be at least twice server.idle_timeout (1m)"
                ),
                "{error}"
            );
            jail.set_env("MEDIAVAULT__REAPER__ENABLED", "false");
            Config::load(None, &Overrides::default())
                .unwrap()
                .check_serving()
                .unwrap();
            jail.set_env("MEDIAVAULT__REAPER__ENABLED", "true");
            jail.set_env("MEDIAVAULT__SERVER__IDLE_TIMEOUT", "50s");
            Config::load(None, &Overrides::default())
                .unwrap()
                .check_serving()
                .unwrap();
            Ok(())
        });
    }

    #[test]
    fn limits_admin_token_and_trusted_proxies_are_read_and_checked() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None, &Overrides::default()).unwrap();
            let limits = config.limit_settings().unwrap();
            assert_eq!(
                (
                    limits.uploads_per_second.get(),
                    limits.upload_burst.get(),
                    limits.auth_failures_per_hour
                ),
                (10, 10, 20)
            );
            assert!(limits.trusted_proxies.is_empty());
            assert!(config.admin_token().unwrap().is_none());
            assert!(config.metrics_token().unwrap().is_none());

            jail.set_env("MEDIAVAULT__METRICS__TOKEN", "too short");
            let error = Config::load(None, &Overrides::default())
                .unwrap()
                .metrics_token()
                .unwrap_err()
                .to_string();
            assert!(error.contains("metrics.token must be at least 32"), "{error}");
            jail.set_env("MEDIAVAULT__METRICS__TOKEN", "0123456789abcdef0123456789abcdef");
            let config = Config::load(None, &Overrides::default()).unwrap();
            assert!(config.metrics_token().unwrap().is_some());

            jail.set_env("MEDIAVAULT__LIMITS__UPLOADS_PER_SECOND", "3");
            jail.set_env(
                "MEDIAVAULT__SERVER__TRUSTED_PROXIES",
                "[\"10.0.0.0/8\", \"192.0.2.1\"]",
            );
            jail.create_file("admin-token", "0123456789abcdef0123456789abcdef\n")?;
            jail.set_env("MEDIAVAULT__ADMIN__TOKEN_FILE", "admin-token");
            let config = Config::load(None, &Overrides::default()).unwrap();
            let limits = config.limit_settings().unwrap();
            assert_eq!(limits.uploads_per_second.get(), 3);
            assert_eq!(limits.trusted_proxies.len(), 2);
            assert_eq!(
                config.admin_token().unwrap().unwrap().expose_secret(),
                "0123456789abcdef0123456789abcdef"
            );

            jail.set_env("MEDIAVAULT__LIMITS__UPLOAD_BURST", "0");
            let error = Config::load(None, &Overrides::default()).unwrap_err().to_string();
            assert!(error.contains("limits.upload_burst"), "{error}");
            jail.set_env("MEDIAVAULT__LIMITS__UPLOAD_BURST", "5");

            jail.set_env("MEDIAVAULT__LIMITS__AUTH_FAILURES_PER_HOUR", "0");
            let error = Config::load(None, &Overrides::default()).unwrap_err().to_string();
            assert!(
                error.contains("limits.auth_failures_per_hour must be above 0"),
                "{error}"
            );
            jail.set_env("MEDIAVAULT__LIMITS__AUTH_FAILURES_PER_HOUR", "20");

            jail.set_env("MEDIAVAULT__SERVER__TRUSTED_PROXIES", "[\"not-a-network\"]");
            let error = Config::load(None, &Overrides::default()).unwrap_err().to_string();
            assert!(error.contains("trusted_proxies"), "{error}");
            jail.set_env("MEDIAVAULT__SERVER__TRUSTED_PROXIES", "[]");

            jail.create_file("short-token", "short\n")?;
            jail.set_env("MEDIAVAULT__ADMIN__TOKEN_FILE", "short-token");
            let config = Config::load(None, &Overrides::default()).unwrap();
            assert!(
                config
                    .admin_token()
                    .unwrap_err()
                    .to_string()
                    .contains("admin.token")
            );
            Ok(())
        });
    }

    /// The shipped production example is a valid configuration.
    #[test]
    fn the_production_example_loads() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/production.example.toml");
        let config = Config::load(Some(&example), &Overrides::default()).unwrap();
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.limit_settings().unwrap().trusted_proxies.len(), 1);
        assert_eq!(config.fetch_policy().unwrap().allow_networks.len(), 1);
    }

    #[test]
    fn download_bounds_are_read_and_checked() {
        let config = Config::from_toml_str("").unwrap();
        assert_eq!(config.server.send_timeout, Duration::from_secs(60));
        assert_eq!(config.server.max_concurrent_downloads, 256);
        let config =
            Config::from_toml_str("[server]\nsend_timeout = \"5s\"\nmax_concurrent_downloads = 3\n").unwrap();
        assert_eq!(config.server.send_timeout, Duration::from_secs(5));
        assert_eq!(config.server.max_concurrent_downloads, 3);
        for (toml, key) in [
            ("[server]\nsend_timeout = \"0s\"\n", "server.send_timeout"),
            (
                "[server]\nmax_concurrent_downloads = 0\n",
                "server.max_concurrent_downloads",
            ),
        ] {
            let error = Config::from_toml_str(toml).unwrap_err().to_string();
            assert!(error.contains(key), "{error}");
        }
    }

    #[test]
    fn a_toml_text_is_layered_over_the_default() {
        let config = Config::from_toml_str("[media]\nmax_file_bytes = 7\n").unwrap();
        assert_eq!(config.media.max_file_bytes, 7);
        assert_eq!(config.media.retention, Duration::from_secs(30 * 86400));
        let error = Config::from_toml_str("[media]\nmax_file_bytes = 0\n").unwrap_err();
        assert!(error.to_string().contains("media.max_file_bytes"), "{error}");
    }

    #[test]
    fn default_quotas_are_read_and_checked() {
        let config = Config::from_toml_str("").unwrap();
        assert_eq!(
            (config.media.max_bytes_stored, config.media.max_media),
            (None, None),
            "no limit unless configured"
        );
        let config = Config::from_toml_str("[media]\nmax_bytes_stored = 1000000\nmax_media = 50\n").unwrap();
        assert_eq!(
            (config.media.max_bytes_stored, config.media.max_media),
            (Some(1_000_000), Some(50))
        );
        for (toml, key) in [
            ("max_bytes_stored = 0", "media.max_bytes_stored"),
            ("max_media = 0", "media.max_media"),
        ] {
            let error = Config::from_toml_str(&format!("[media]\n{toml}\n")).unwrap_err();
            assert!(error.to_string().contains(key), "{error}");
        }
    }

    #[test]
    fn transfer_slots_per_app_and_the_minimum_rates_are_read_and_checked() {
        let config = Config::from_toml_str("[server]\nmax_concurrent_uploads = 10\n").unwrap();
        assert_eq!(config.uploads_per_app(), 2, "a quarter by default");
        assert_eq!(config.downloads_per_app(), 64, "a quarter by default");
        assert_eq!(
            config.min_upload_rate(),
            Some(MinRate {
                bytes_per_second: 1024,
                window: Duration::from_secs(30)
            })
        );
        assert_eq!(
            config.min_download_rate(),
            Some(MinRate {
                bytes_per_second: 1024,
                window: Duration::from_secs(60)
            })
        );
        let config = Config::from_toml_str(
            "[server]\nmax_concurrent_uploads_per_app = 5\nmin_upload_rate = 0\nmax_concurrent_downloads_per_app = 7\nmin_download_rate = 0\n",
        )
        .unwrap();
        assert_eq!(config.uploads_per_app(), 5);
        assert_eq!(config.downloads_per_app(), 7);
        assert_eq!(config.min_upload_rate(), None);
        assert_eq!(config.min_download_rate(), None);
        for (toml, key) in [
            (
                "max_concurrent_uploads_per_app = 0",
                "server.max_concurrent_uploads_per_app",
            ),
            (
                "max_concurrent_uploads_per_app = 65",
                "server.max_concurrent_uploads_per_app",
            ),
            ("min_upload_rate_window = \"0s\"", "server.min_upload_rate_window"),
            (
                "min_download_rate_window = \"0s\"",
                "server.min_download_rate_window",
            ),
            (
                "max_concurrent_downloads_per_app = 0",
                "server.max_concurrent_downloads_per_app",
            ),
            (
                "max_concurrent_downloads_per_app = 257",
                "server.max_concurrent_downloads_per_app",
            ),
        ] {
            let error = Config::from_toml_str(&format!("[server]\n{toml}\n")).unwrap_err();
            assert!(error.to_string().contains(key), "{error}");
        }
    }

    #[test]
    fn fetch_settings_are_read_and_checked() {
        let policy = Config::from_toml_str("").unwrap().fetch_policy().unwrap();
        assert!(policy.enabled);
        assert!(policy.allow_networks.is_empty() && policy.deny_networks.is_empty());
        assert_eq!(policy.max_redirects, 3);
        assert_eq!(policy.connect_timeout, Duration::from_secs(5));
        assert_eq!(policy.timeout, Duration::from_secs(50));
        assert_eq!(
            policy.user_agent,
            format!("mediavault/{}", env!("CARGO_PKG_VERSION"))
        );

        figment::Jail::expect_with(|jail| {
            jail.set_env("MEDIAVAULT__FETCH__ENABLED", "false");
            jail.set_env(
                "MEDIAVAULT__FETCH__ALLOW_NETWORKS",
                "[\"10.20.0.0/16\", \"fd00:1::/32\", \"192.168.1.7\"]",
            );
            jail.set_env("MEDIAVAULT__FETCH__DENY_NETWORKS", "[\"10.20.9.0/24\"]");
            jail.set_env("MEDIAVAULT__FETCH__MAX_REDIRECTS", "0");
            jail.set_env("MEDIAVAULT__FETCH__CONNECT_TIMEOUT", "2s");
            jail.set_env("MEDIAVAULT__FETCH__TIMEOUT", "2m");
            let policy = Config::load(None, &Overrides::default())
                .unwrap()
                .fetch_policy()
                .unwrap();
            assert!(!policy.enabled);
            let shown = |nets: &[IpNet]| nets.iter().map(ToString::to_string).collect::<Vec<_>>();
            assert_eq!(
                shown(&policy.allow_networks),
                ["10.20.0.0/16", "fd00:1::/32", "192.168.1.7/32"]
            );
            assert_eq!(shown(&policy.deny_networks), ["10.20.9.0/24"]);
            assert_eq!(policy.max_redirects, 0);
            assert_eq!(policy.connect_timeout, Duration::from_secs(2));
            assert_eq!(policy.timeout, Duration::from_secs(120));
            Ok(())
        });

        for (toml, key) in [
            ("allow_networks = [\"10.0.0.0/33\"]", "fetch.allow_networks"),
            ("deny_networks = [\"example.com\"]", "fetch.deny_networks"),
            ("max_redirects = 11", "fetch.max_redirects"),
            ("connect_timeout = \"0s\"", "fetch.connect_timeout"),
            ("timeout = \"0s\"", "fetch.timeout"),
            ("timeout = \"soon\"", "fetch.timeout"),
            ("allow = []", "allow"),
        ] {
            let error = Config::from_toml_str(&format!("[fetch]\n{toml}\n"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(key), "{toml}: {error}");
        }
    }

    #[test]
    fn link_settings_are_read_and_checked() {
        let config = Config::from_toml_str("").unwrap();
        assert_eq!(config.links.max_ttl, Duration::from_secs(86_400));
        assert!(config.links_keys().unwrap().is_none());
        assert_eq!(config.public_base_url().unwrap(), None);

        let config = Config::from_toml_str(
            "[links]\nkeys = \"l1:AAAA\"\nmax_ttl = \"2h\"\npublic_base_url = \"https://example.com/media/\"\n",
        )
        .unwrap();
        assert_eq!(config.links.max_ttl, Duration::from_secs(7200));
        assert_eq!(config.links_keys().unwrap().unwrap().expose_secret(), "l1:AAAA");
        assert_eq!(
            config.public_base_url().unwrap().as_deref(),
            Some("https://example.com/media"),
            "without the trailing slash"
        );
        assert!(!format!("{config:?}").contains("l1:AAAA"), "secrets never print");

        for (toml, key) in [
            ("max_ttl = \"0s\"", "links.max_ttl"),
            ("public_base_url = \"media.example.com\"", "links.public_base_url"),
            (
                "public_base_url = \"ftp://media.example.com\"",
                "links.public_base_url",
            ),
            (
                "public_base_url = \"https://media.example.com/?a=b\"",
                "links.public_base_url",
            ),
            (
                "public_base_url = \"https://user@media.example.com\"",
                "links.public_base_url",
            ),
            ("public_base_url = \"https://\"", "links.public_base_url"),
        ] {
            let error = Config::from_toml_str(&format!("[links]\n{toml}\n"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(key), "{toml}: {error}");
        }
        figment::Jail::expect_with(|jail| {
            jail.create_file("links", "l1:BBBB\n")?;
            jail.set_env("MEDIAVAULT__LINKS__KEYS_FILE", "links");
            let config = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(config.links_keys().unwrap().unwrap().expose_secret(), "l1:BBBB");
            Ok(())
        });
    }

    #[test]
    fn epoch_keys_need_a_token_and_a_label_prefix_that_makes_labels() {
        assert_eq!(Config::from_toml_str("").unwrap().epoch_settings().unwrap(), None);
        let token = "[crypto]\nprovider = \"pkcs11\"\n[crypto.pkcs11]\nmodule = \"/m.so\"\n\
                     token_label = \"t\"\npin = \"1\"\n";
        // No KEK labels: epoch keys wrap everything.
        let config = Config::from_toml_str(&format!(
            "{token}[crypto.epochs]\nenabled = true\ngrace = \"36h\"\nahead = \"45d 1h\"\n"
        ))
        .unwrap();
        let epochs = config.epoch_settings().unwrap().unwrap();
        assert_eq!(
            epochs,
            EpochSettings {
                label_prefix: "epoch-".into(),
                grace: Duration::from_secs(36 * 3600),
                ahead_days: 46,
            }
        );
        let config = Config::from_toml_str(&format!(
            "{token}[crypto.epochs]\nenabled = true\nlabel_prefix = \"prod.e_\"\n"
        ))
        .unwrap();
        assert_eq!(config.epoch_settings().unwrap().unwrap().label_prefix, "prod.e_");
        for (toml, expected) in [
            (
                "[crypto.epochs]\nenabled = true\n",
                "crypto.provider = \"pkcs11\"",
            ),
            (
                &format!("{token}[crypto.epochs]\nenabled = true\nlabel_prefix = \"a b\"\n"),
                "crypto.epochs.label_prefix",
            ),
            (
                &format!("{token}[crypto.epochs]\nenabled = true\nlabel_prefix = \"\"\n"),
                "crypto.epochs.label_prefix",
            ),
            (
                &format!("{token}[crypto.epochs]\nenabled = false\n"),
                "crypto.pkcs11.keys",
            ),
        ] {
            let error = Config::from_toml_str(toml).unwrap_err().to_string();
            assert!(error.contains(expected), "{toml}: {error}");
        }
    }

    #[test]
    fn pkcs11_settings_are_read_and_checked() {
        let config = Config::from_toml_str("").unwrap();
        assert_eq!(config.crypto.provider, KeyProviderKind::Config);
        let toml = "[crypto]\nprovider = \"pkcs11\"\n[crypto.pkcs11]\nmodule = \"/lib/p11.so\"\n\
                    token_label = \"mv\"\npin = \"1234\"\nkeys = [\"hsm-1\", \"hsm-0\"]\n";
        let config = Config::from_toml_str(toml).unwrap();
        assert!(!config.wants_development_key().unwrap());
        let settings = config.pkcs11_settings(64).unwrap();
        assert_eq!(settings.module, PathBuf::from("/lib/p11.so"));
        assert!(matches!(&settings.token, TokenSelector::Label(label) if label == "mv"));
        assert_eq!(settings.pin.expose_secret(), "1234");
        assert_eq!(settings.keys, ["hsm-1", "hsm-0"]);
        assert_eq!(settings.sessions, 64);
        assert!(!format!("{config:?}").contains("1234"), "the PIN never prints");

        figment::Jail::expect_with(|jail| {
            jail.create_file("pin", "4321\n")?;
            jail.set_env("MEDIAVAULT__CRYPTO__PROVIDER", "pkcs11");
            jail.set_env("MEDIAVAULT__CRYPTO__PKCS11__MODULE", "/lib/p11.so");
            jail.set_env("MEDIAVAULT__CRYPTO__PKCS11__SLOT", "3");
            jail.set_env("MEDIAVAULT__CRYPTO__PKCS11__PIN_FILE", "pin");
            jail.set_env("MEDIAVAULT__CRYPTO__PKCS11__KEYS", "[\"hsm-1\"]");
            let settings = Config::load(None, &Overrides::default())
                .unwrap()
                .pkcs11_settings(1)
                .unwrap();
            assert!(matches!(settings.token, TokenSelector::Slot(3)));
            assert_eq!(settings.pin.expose_secret(), "4321");
            assert_eq!(settings.keys, ["hsm-1"]);

            // A PIN of digits in a variable: refused unquoted (it would be
            // read as a number, without its leading zero), taken quoted.
            jail.clear_env();
            jail.set_env("MEDIAVAULT__CRYPTO__PROVIDER", "pkcs11");
            jail.set_env("MEDIAVAULT__CRYPTO__PKCS11__MODULE", "/m.so");
            jail.set_env("MEDIAVAULT__CRYPTO__PKCS11__TOKEN_LABEL", "t");
            jail.set_env("MEDIAVAULT__CRYPTO__PKCS11__KEYS", "[\"hsm-1\"]");
            jail.set_env("MEDIAVAULT__CRYPTO__PKCS11__PIN", "0123");
            let error = Config::load(None, &Overrides::default()).unwrap_err().to_string();
            assert!(error.contains("quote"), "{error}");
            jail.set_env("MEDIAVAULT__CRYPTO__PKCS11__PIN", "\"0123\"");
            let settings = Config::load(None, &Overrides::default())
                .unwrap()
                .pkcs11_settings(1)
                .unwrap();
            assert_eq!(settings.pin.expose_secret(), "0123");
            Ok(())
        });

        let pkcs11 = "[crypto]\nprovider = \"pkcs11\"\n[crypto.pkcs11]\n";
        for (rest, key) in [
            ("", "crypto.pkcs11.module"),
            (
                "module = \"/m.so\"\npin = \"1\"\nkeys = [\"k\"]\n",
                "token_label and slot",
            ),
            (
                "module = \"/m.so\"\ntoken_label = \"t\"\nslot = 1\npin = \"1\"\nkeys = [\"k\"]\n",
                "token_label and slot",
            ),
            (
                "module = \"/m.so\"\ntoken_label = \"t\"\nkeys = [\"k\"]\n",
                "crypto.pkcs11.pin",
            ),
            (
                "module = \"/m.so\"\ntoken_label = \"t\"\npin = \"1\"\n",
                "crypto.pkcs11.keys",
            ),
        ] {
            let error = Config::from_toml_str(&format!("{pkcs11}{rest}"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(key), "{rest}: {error}");
        }
        let keyring = Config::from_toml_str("[crypto]\nprovider = \"keyring\"\n").unwrap();
        assert_eq!(
            keyring.crypto.provider,
            KeyProviderKind::Config,
            "the name of the design"
        );
        let error = Config::from_toml_str("[crypto]\nprovider = \"vault\"\n").unwrap_err();
        assert!(error.to_string().contains("provider"), "{error}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MEDIAVAULT__MEDIA__RETENTON", "1d");
            let error = Config::load(None, &Overrides::default()).unwrap_err().to_string();
            assert!(error.contains("retenton"), "{error}");
            Ok(())
        });
    }

    /// What the Helm chart gives the service with every value set
    /// (deploy/helm/mediavault/ci/all-keys-values.yaml: its env, its
    /// ConfigMap and its Secret's files, as scripts/lint-deploy.sh reads
    /// them off the render) loads, and means what the values say: every
    /// section, and the PKCS#11 token with epoch keys, whose label of
    /// digits and JSON list must reach the service as text and as a list.
    #[test]
    fn the_helm_charts_settings_load_as_its_values_mean_them() {
        let rendered =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/lint-tools/renders/all-keys-env.json");
        let text = std::fs::read_to_string(&rendered).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; scripts/lint-deploy.sh writes it (`make test` runs it first)",
                rendered.display()
            )
        });
        let rendered: serde_json::Value = serde_json::from_str(&text).unwrap();
        let secret_dir = rendered["secret_dir"].as_str().unwrap().to_owned();
        figment::Jail::expect_with(|jail| {
            let here = jail.directory().to_owned();
            for (name, value) in rendered["secret_files"].as_object().unwrap() {
                jail.create_file(name, value.as_str().unwrap())?;
            }
            for (name, value) in rendered["env"].as_object().unwrap() {
                let value = value
                    .as_str()
                    .unwrap()
                    .replace(&secret_dir, &here.display().to_string());
                jail.set_env(name, value);
            }
            let config = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(config.crypto.provider, KeyProviderKind::Pkcs11);
            let token = config.pkcs11_settings(8).unwrap();
            assert_eq!(token.module, PathBuf::from("/opt/hsm-client/lib/libpkcs11.so"));
            assert!(
                matches!(&token.token, TokenSelector::Label(label) if label == "0042"),
                "{:?}",
                token.token
            );
            assert_eq!(token.pin.expose_secret(), "0123");
            assert_eq!(token.keys, ["hsm-2026q1", "hsm-2025q4"]);
            let epochs = config.epoch_settings().unwrap().expect("epoch keys on");
            assert_eq!(epochs.label_prefix, "day-");
            assert_eq!(epochs.grace, Duration::from_secs(2 * 24 * 3600));
            assert_eq!(epochs.ahead_days, 40);
            let keys = config
                .crypto_keys()
                .unwrap()
                .expect("configured keys kept beside the token");
            assert!(keys.expose_secret().starts_with("k2:"));
            assert!(config.admin_token().unwrap().is_some());
            assert!(config.metrics_token().unwrap().is_some());
            assert!(config.links_keys().unwrap().is_some());
            assert!(config.blobs_secret_access_key().unwrap().is_some());
            assert_eq!(config.media.retention, Duration::from_secs(7 * 24 * 3600));
            assert!(!config.reaper.enabled);
            Ok(())
        });
    }
}
