//! The command line: `mediavault serve`, `migrate`, `apps …`, `tokens …`, `keys …`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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
    /// Migrate the database, then serve HTTP until SIGTERM or SIGINT.
    Serve {
        /// Bind address (overrides server.listen; port 0 picks a free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Apply the database migrations and exit.
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
    /// One pass: delete expired, deleted and abandoned media; prints counts as JSON.
    #[arg(long)]
    pub once: bool,
    /// Delete blobs no row references (older than reaper.stale_upload_after).
    #[arg(long)]
    pub sweep: bool,
}

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// Create an app; prints it as JSON.
    Create(CreateApp),
    /// List apps as JSON.
    List,
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
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Issue a token for an app; prints it once, as JSON.
    Issue {
        #[arg(long = "app", value_name = "APP_ID")]
        app_id: String,
        #[arg(long)]
        label: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new `id:base64` key line for crypto.keys.
    Generate {
        /// The key's id (default: k followed by today's date).
        #[arg(long)]
        id: Option<String>,
    },
}
