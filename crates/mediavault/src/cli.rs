//! The command line: `mediavault serve`, `migrate`, `apps …`, `tokens …`, `keys …`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use mediavault_storage::{AppId, TokenId, TypeLimit};

#[derive(Debug, Parser)]
#[command(name = "mediavault", version, about = "Self-hosted media-ID service")]
pub struct Cli {
    /// A TOML file layered over the embedded defaults.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate the database (unless database.migrate_on_start is off), then
    /// serve HTTP until SIGTERM or SIGINT.
    Serve {
        /// Bind address (overrides server.listen; port 0 picks a free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Apply the database migrations and exit: the one command besides
    /// `serve` that changes the schema; the others refuse one they do not know.
    Migrate,
    /// Manage apps.
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Manage app tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Manage key-encryption keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run the reaper by hand: one pass, or one orphan sweep.
    Reap(Reap),
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Reap {
    /// One pass: delete expired, deleted and abandoned media; prints counts as JSON,
    /// with `skipped` when another replica's pass holds the lock.
    #[arg(long)]
    pub once: bool,
    /// Delete blobs no row references and abort incomplete S3 multipart
    /// uploads (both older than reaper.stale_upload_after).
    #[arg(long)]
    pub sweep: bool,
}

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// Create an app; prints it as JSON.
    Create(CreateApp),
    /// List apps as JSON.
    List,
    /// Print one app as JSON.
    Show {
        #[arg(long = "app", value_name = "APP_ID")]
        app_id: AppId,
    },
    /// Change an app's settings (for uploads from now on); prints it as JSON.
    Update(UpdateApp),
    /// Print an app's stats (readable media and their bytes, usage against
    /// its quota and its limits) as JSON.
    Stats {
        #[arg(long = "app", value_name = "APP_ID")]
        app_id: AppId,
    },
    /// Set every app's quota usage to what its media rows hold; prints each
    /// app's usage as JSON. Needed only once replicas of a version without
    /// quotas have stopped; safe while serving.
    Recount,
    /// Delete an app: its tokens stop working and all its media are
    /// crypto-shredded at once; the reaper removes the blobs.
    Delete {
        #[arg(long = "app", value_name = "APP_ID")]
        app_id: AppId,
    },
}

#[derive(Debug, Args)]
pub struct CreateApp {
    #[arg(long)]
    pub name: String,
    /// Only CAPI apps may upload.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub capi: bool,
    /// How long its media live, e.g. 30d, 12h, 90s (default media.retention).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub retention: Option<Duration>,
    /// Largest accepted file in bytes (default media.max_file_bytes).
    #[arg(long)]
    pub max_file_bytes: Option<u64>,
    /// Accepted file_types, comma-separated (default: the Gupshup list).
    #[arg(long, value_delimiter = ',')]
    pub allowed_types: Option<Vec<String>>,
    /// The app's own upload rate (default limits.uploads_per_second).
    #[arg(long)]
    pub uploads_per_second: Option<u32>,
    /// Most bytes the app may hold at once (default media.max_bytes_stored;
    /// unset there, no limit).
    #[arg(long)]
    pub max_bytes_stored: Option<u64>,
    /// Most media the app may hold at once (default media.max_media; unset
    /// there, no limit).
    #[arg(long)]
    pub max_media: Option<u64>,
    /// A WhatsApp phone-number id whose requests are this app's (repeat
    /// for several; each maps to one app at most).
    #[arg(long = "wa-phone-number-id", value_name = "ID")]
    pub wa_phone_number_ids: Vec<String>,
    /// A type the WhatsApp surface accepts and its largest file in bytes,
    /// e.g. image/jpeg=5242880 (repeat for several, in the order errors
    /// list them; default: Meta's types and limits).
    #[arg(long = "wa-type-limit", value_name = "TYPE=BYTES", value_parser = type_limit)]
    pub wa_type_limits: Vec<TypeLimit>,
}

/// `TYPE=BYTES`, as `--wa-type-limit` takes it; the vault checks the type.
fn type_limit(arg: &str) -> Result<TypeLimit, String> {
    let (mime_type, bytes) = arg
        .split_once('=')
        .ok_or_else(|| format!("{arg:?} is not TYPE=BYTES"))?;
    let max_bytes = bytes
        .trim()
        .parse()
        .map_err(|_| format!("{bytes:?} is not a number of bytes"))?;
    Ok(TypeLimit {
        mime_type: mime_type.to_owned(),
        max_bytes,
    })
}

#[derive(Debug, Args)]
pub struct UpdateApp {
    #[arg(long = "app", value_name = "APP_ID")]
    pub app_id: AppId,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, action = clap::ArgAction::Set)]
    pub capi: Option<bool>,
    #[arg(long, value_parser = humantime::parse_duration)]
    pub retention: Option<Duration>,
    #[arg(long)]
    pub max_file_bytes: Option<u64>,
    /// Accepted file_types, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "default_types")]
    pub allowed_types: Option<Vec<String>>,
    /// Accept the default (Gupshup) list again.
    #[arg(long)]
    pub default_types: bool,
    #[arg(long, conflicts_with = "default_upload_rate")]
    pub uploads_per_second: Option<u32>,
    /// Use limits.uploads_per_second again.
    #[arg(long)]
    pub default_upload_rate: bool,
    #[arg(long, conflicts_with = "default_max_bytes_stored")]
    pub max_bytes_stored: Option<u64>,
    /// Use media.max_bytes_stored again (unset there: no limit).
    #[arg(long)]
    pub default_max_bytes_stored: bool,
    #[arg(long, conflicts_with = "default_max_media")]
    pub max_media: Option<u64>,
    /// Use media.max_media again (unset there: no limit).
    #[arg(long)]
    pub default_max_media: bool,
    /// Replaces the app's WhatsApp phone-number ids (repeat for several).
    #[arg(
        long = "wa-phone-number-id",
        value_name = "ID",
        conflicts_with = "no_wa_phone_number_ids"
    )]
    pub wa_phone_number_ids: Vec<String>,
    /// Map no WhatsApp phone-number id to the app.
    #[arg(long)]
    pub no_wa_phone_number_ids: bool,
    /// Replaces the app's WhatsApp types and limits, as TYPE=BYTES (repeat
    /// for several).
    #[arg(
        long = "wa-type-limit",
        value_name = "TYPE=BYTES",
        value_parser = type_limit,
        conflicts_with = "default_wa_type_limits"
    )]
    pub wa_type_limits: Vec<TypeLimit>,
    /// Use Meta's WhatsApp types and limits again.
    #[arg(long)]
    pub default_wa_type_limits: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Issue a token for an app; prints it once, as JSON.
    Issue {
        #[arg(long = "app", value_name = "APP_ID")]
        app_id: AppId,
        #[arg(long)]
        label: Option<String>,
    },
    /// List an app's tokens (never their secrets) as JSON.
    List {
        #[arg(long = "app", value_name = "APP_ID")]
        app_id: AppId,
    },
    /// Revoke a token by its id: requests carrying it fail from now on.
    Revoke {
        #[arg(long = "app", value_name = "APP_ID")]
        app_id: AppId,
        #[arg(long = "token", value_name = "TOKEN_ID")]
        token_id: TokenId,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new KEK: print an `id:base64` key line for crypto.keys, or,
    /// with `--provider pkcs11`, generate the key inside the token of
    /// crypto.pkcs11 (it never leaves it) and print its label and fingerprint.
    Generate {
        /// The key's id (default: k followed by today's date).
        #[arg(long, conflicts_with = "label")]
        id: Option<String>,
        /// Where the key is made.
        #[arg(long, value_enum, default_value_t = GenerateIn::Config)]
        provider: GenerateIn,
        /// The key's label in the token (its id), with `--provider pkcs11`.
        #[arg(long, required_if_eq("provider", "pkcs11"))]
        label: Option<String>,
    },
    #[command(flatten)]
    Stored(StoredKeysCommand),
}

/// Where `keys generate` makes a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenerateIn {
    /// A key line to add to crypto.keys.
    Config,
    /// A key inside the PKCS#11 token of crypto.pkcs11.
    Pkcs11,
}

/// The key commands that work on the database (generating a key needs none).
#[derive(Debug, Subcommand)]
pub enum StoredKeysCommand {
    /// Re-wrap every live data key under the active (first) key, in
    /// batches; safe while serving, resumable. Prints counts as JSON. After
    /// it, older keys can be removed from crypto.keys.
    Rewrap {
        /// Data keys re-wrapped per transaction.
        #[arg(long, default_value_t = 500)]
        batch: u32,
    },
    /// Print how many live media each key wraps, as JSON.
    Usage,
}
