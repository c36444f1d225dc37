//! Benchmarks of mediavault against the real stores this machine runs
//! (`scripts/test-services.sh`: PostgreSQL and Garage), printed as figures,
//! never asserted.
//!
//! - `mediavault-bench http`: starts the release `mediavault serve` on fresh
//!   stores and measures large-file throughput, small-file throughput and
//!   latency, and server memory, each next to object_store used directly on
//!   the same bucket or directory; and a large file uploaded by URL from a
//!   loopback origin, next to the same file sent directly.
//! - `mediavault-bench crypto`: the blob format's per-core figures: runs
//!   `cargo bench -p mediavault-storage --bench seal` and reads criterion's
//!   estimates.
//! - `mediavault-bench providers`: 16 KiB uploads at 16 clients and 100 MiB
//!   uploads with configured keys and with KEKs in a PKCS#11 token
//!   (SoftHSM2), on the same Postgres + Garage stores in one run.
//! - `mediavault-bench all`: `http`, `providers` and `crypto` (what `make
//!   bench` runs).
//! - `mediavault-bench reap [N] [--backend B]`: one reaper pass over N
//!   expired media.
//! - `mediavault-bench scale`: an empty database against one of
//!   `--rows` media (10 million by default): latency, start-up, reaper,
//!   operator commands and size.
//!
//! Results go to stdout as a table and to `bench/results/<date>-<name>.json`
//! and `.txt`.

mod clients;
mod cpu;
mod providers;
mod reap;
mod report;
mod scale;
mod scenarios;
mod server;
mod stores;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::clients::{MediaClient, RawClient};
use crate::report::{Figure, Report, RunStart, Target, load_average};
use crate::server::Server;
use crate::stores::{Backend, Stores};

#[derive(Parser)]
#[command(about = "Benchmarks of mediavault against the real stores")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The HTTP figures, on each backend.
    Http(HttpArgs),
    /// The crypto-core figures from criterion's estimates.
    Crypto(CryptoArgs),
    /// Uploads with configured keys against KEKs in a PKCS#11 token.
    Providers(ProvidersArgs),
    /// `http` on every backend, `providers`, then `crypto`.
    All {
        #[command(flatten)]
        http: HttpArgs,
        #[command(flatten)]
        crypto: CryptoArgs,
    },
    /// One reaper pass over N expired media.
    Reap {
        #[arg(default_value_t = 100_000)]
        count: usize,
        #[arg(long, value_enum, default_value_t = Backend::PostgresS3)]
        backend: Backend,
    },
    /// The same run on an empty database and on one of `--rows` media.
    Scale(scale::ScaleArgs),
}

#[derive(Args, Clone)]
struct HttpArgs {
    /// Backends to measure (default: both).
    #[arg(long, value_enum, value_delimiter = ',')]
    backend: Vec<Backend>,
    /// The `mediavault` binary (default: the one beside this one).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Size of a large file, in bytes (100 MiB is the default upload limit).
    #[arg(long, default_value_t = 100 << 20)]
    large_size: usize,
    /// Uploads and downloads of the large file, each way; the median counts.
    #[arg(long, default_value_t = 3)]
    large_reps: usize,
    /// Size of a small file, in bytes.
    #[arg(long, default_value_t = 16 << 10)]
    small_size: usize,
    /// Small uploads per concurrency level, on each side.
    #[arg(long, default_value_t = 2000)]
    small_count: usize,
    /// Concurrency levels of the small uploads.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Large uploads at once while the server's memory is watched.
    #[arg(long, default_value_t = 16)]
    memory_clients: usize,
    /// Scenarios to run (default: all), e.g. `--only large` for the large
    /// files alone; the report then holds their figures only.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Where the results go.
    #[arg(long, default_value = "bench/results")]
    results: PathBuf,
}

/// The scenarios of `http`, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    Memory,
    Large,
    ByUrl,
    Small,
    /// Small uploads with and without deletes beside them; only when named
    /// in `--only` (it has no target, and `make bench` measures those).
    Deletes,
}

impl HttpArgs {
    fn runs(&self, scenario: Scenario) -> bool {
        self.only.contains(&scenario) || (self.only.is_empty() && scenario != Scenario::Deletes)
    }
}

#[derive(Args, Clone)]
struct ProvidersArgs {
    /// The `mediavault` binary (default: the one beside this one).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Small uploads on each side, each round.
    #[arg(long, default_value_t = 2000)]
    small_count: usize,
    /// Large uploads on each side, each round; the median counts.
    #[arg(long, default_value_t = 3)]
    large_reps: usize,
    /// Rounds, the sides alternating which goes first; the best counts.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Where the results go.
    #[arg(long, default_value = "bench/results")]
    results: PathBuf,
}

#[derive(Args, Clone)]
struct CryptoArgs {
    /// criterion's output directory (default: `$CRITERION_HOME`, else
    /// `$CARGO_TARGET_DIR/criterion`, else `target/criterion`).
    #[arg(long)]
    criterion: Option<PathBuf>,
    /// Only read the estimates of an earlier `cargo bench`.
    #[arg(long)]
    no_run: bool,
}

impl CryptoArgs {
    fn criterion_dir(&self) -> PathBuf {
        self.criterion
            .clone()
            .unwrap_or_else(|| match std::env::var_os("CRITERION_HOME") {
                Some(home) => home.into(),
                None => {
                    PathBuf::from(std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into()))
                        .join("criterion")
                }
            })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    match Cli::parse().command {
        Command::Http(args) => http(&args, &command_line).await,
        Command::Crypto(args) => crypto(&args, Path::new("bench/results"), &command_line),
        Command::Providers(args) => {
            let plan = providers::Plan {
                small_size: 16 << 10,
                small_count: args.small_count,
                concurrency: 16,
                large_size: 100 << 20,
                large_reps: args.large_reps,
                rounds: args.rounds,
            };
            compare_providers(args.server.as_deref(), &plan, &args.results, &command_line).await
        }
        Command::All {
            http: args,
            crypto: crypto_args,
        } => {
            http(&args, &command_line).await?;
            let plan = providers::Plan {
                small_size: args.small_size,
                small_count: args.small_count,
                concurrency: 16,
                large_size: args.large_size,
                large_reps: args.large_reps,
                rounds: 2,
            };
            compare_providers(args.server.as_deref(), &plan, &args.results, &command_line).await?;
            crypto(&crypto_args, &args.results, &command_line)
        }
        Command::Reap { count, backend } => reap::reap(count, backend).await,
        Command::Scale(args) => scale::scale(&args, &command_line).await,
    }
}

async fn compare_providers(
    server: Option<&Path>,
    plan: &providers::Plan,
    results: &Path,
    command_line: &str,
) -> anyhow::Result<()> {
    let binary = match server {
        Some(binary) => binary.to_owned(),
        None => server::default_binary()?,
    };
    eprintln!("== key-providers");
    let report = providers::compare(&binary, plan, command_line).await?;
    let path = report.write(results)?;
    println!("{}", report.table());
    println!(
        "   raw results: {}
",
        path.display()
    );
    Ok(())
}

async fn http(args: &HttpArgs, command_line: &str) -> anyhow::Result<()> {
    let binary = match &args.server {
        Some(binary) => binary.clone(),
        None => server::default_binary()?,
    };
    let backends = if args.backend.is_empty() {
        vec![Backend::PostgresS3, Backend::SqliteFiles]
    } else {
        args.backend.clone()
    };
    for backend in backends {
        eprintln!("== {}", backend.name());
        let stores = Stores::create(backend).await?;
        let result = measure(args, &binary, &stores, command_line).await;
        // The server's log lives in the run's directory, which cleanup
        // removes: keep it beside the results, where a failure can be read.
        let log = stores.dir().join("server.log");
        let kept = args
            .results
            .join(format!("{}-{}-server.log", &report::now()[..10], backend.name()));
        if std::fs::create_dir_all(&args.results).is_ok() && std::fs::copy(&log, &kept).is_ok() {
            eprintln!("   server log: {}", kept.display());
        }
        let cleaned = stores.cleanup().await;
        let report = result?;
        cleaned?;
        let path = report.write(&args.results)?;
        println!("{}", report.table());
        println!("   raw results: {}\n", path.display());
    }
    Ok(())
}

async fn measure(
    args: &HttpArgs,
    binary: &Path,
    stores: &Stores,
    command_line: &str,
) -> anyhow::Result<Report> {
    let start = RunStart::now(command_line);
    let (app_id, token) = server::app_and_token(binary, stores)?;
    let mut server = Server::start(binary, stores)?;
    let media = MediaClient::new(&server.base_url, &app_id, &token)?;
    let raw = RawClient::new(stores.raw.clone());

    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_kib = server.memory_kib("VmRSS")?;
    scenarios::warm_up(&media, &raw).await?;

    let mut figures = Vec::new();
    let mut samples = serde_json::Map::new();
    // Memory first: the peak then belongs to these uploads alone, not to
    // what earlier scenarios left in the allocator.
    if args.runs(Scenario::Memory) {
        let settled = cpu::settle(server.pid()).await;
        let load = load_average();
        let (f, s) =
            scenarios::memory(&server, &media, args.large_size, args.memory_clients, idle_kib).await?;
        figures.extend(f);
        samples.insert(
            "memory".into(),
            json!({ "settled": settled, "load_before": load, "result": s }),
        );
        server.check_running()?;
    }

    if args.runs(Scenario::Large) {
        let settled = cpu::settle(server.pid()).await;
        let load = load_average();
        let (f, s) = scenarios::large(server.pid(), &media, &raw, args.large_size, args.large_reps).await?;
        figures.extend(f);
        samples.insert(
            "large".into(),
            json!({ "settled": settled, "load_before": load, "result": s }),
        );
        server.check_running()?;
    }

    if args.runs(Scenario::ByUrl) {
        let settled = cpu::settle(server.pid()).await;
        let load = load_average();
        let (f, s) = scenarios::by_url(server.pid(), &media, args.large_size, args.large_reps).await?;
        figures.extend(f);
        samples.insert(
            "by_url".into(),
            json!({ "settled": settled, "load_before": load, "result": s }),
        );
        server.check_running()?;
    }

    if args.runs(Scenario::Small) {
        let (f, s) = scenarios::small(
            server.pid(),
            &media,
            &raw,
            args.small_size,
            args.small_count,
            &args.concurrency,
        )
        .await?;
        figures.extend(f);
        samples.insert("small".into(), s);
        server.check_running()?;
    }

    if args.runs(Scenario::Deletes) {
        let concurrency = 16;
        let (f, s) = scenarios::deletes(
            server.pid(),
            &media,
            args.small_size,
            args.small_count,
            concurrency,
            3,
        )
        .await?;
        figures.extend(f);
        samples.insert("deletes".into(), s);
        server.check_running()?;
    }

    if stores.backend == Backend::SqliteFiles {
        // The ratio targets are set for production, Postgres + Garage. Next
        // to a local file write the embedded default's ratios show what
        // metadata and encryption cost, and no network hides it.
        for figure in &mut figures {
            if matches!(
                figure.target,
                Some(Target::RatioAtLeast(_) | Target::RatioAtMost(_))
            ) {
                figure.target = None;
                figure.met = None;
            }
        }
    }

    let lifetime_peak = server.memory_kib("VmHWM")? as f64 / 1024.0;
    figures.push(Figure::alone(
        "server peak RSS since the memory run",
        "MiB",
        lifetime_peak,
        None,
    ));
    Ok(start.report(
        stores.backend.name(),
        format!("raw = {}", stores.backend.baseline()),
        server::settings(stores),
        figures,
        samples.into(),
    ))
}

/// Reads `seal/{encrypt,decrypt}` from criterion's estimates: the median
/// time of one pass over the benchmark's plaintext.
fn crypto(args: &CryptoArgs, results: &Path, command_line: &str) -> anyhow::Result<()> {
    let start = RunStart::now(command_line);
    let bench = ["bench", "-p", "mediavault-storage", "--bench", "seal"];
    if !args.no_run {
        eprintln!("== crypto: cargo {}", bench.join(" "));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo).args(bench).status()?;
        anyhow::ensure!(status.success(), "cargo {} failed", bench.join(" "));
    }
    let mut figures = Vec::new();
    let mut samples = serde_json::Map::new();
    for name in ["encrypt", "decrypt"] {
        let dir = args.criterion_dir().join("seal").join(name).join("new");
        let read = |file: &str| -> anyhow::Result<serde_json::Value> {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "{}: no estimates from `cargo {}`",
                    path.display(),
                    bench.join(" ")
                )
            })?;
            Ok(serde_json::from_str(&text)?)
        };
        let estimates = read("estimates.json")?;
        let bytes = read("benchmark.json")?["throughput"]["Bytes"]
            .as_f64()
            .context("throughput in benchmark.json")?;
        let median_ns = estimates["median"]["point_estimate"]
            .as_f64()
            .context("median in estimates.json")?;
        let measured: chrono::DateTime<chrono::Local> =
            std::fs::metadata(dir.join("estimates.json"))?.modified()?.into();
        // Bytes per nanosecond is GB/s.
        let gb_per_s = bytes / median_ns;
        figures.push(Figure::alone(
            format!("{name}, one core"),
            "GB/s",
            gb_per_s,
            Some(Target::AtLeast(2.0)),
        ));
        samples.insert(
            name.into(),
            json!({ "bytes": bytes, "median_ns": median_ns, "measured": measured.to_rfc3339(), "estimates": estimates }),
        );
    }
    let report = start.report(
        "crypto",
        "criterion group `seal` of crates/storage/benches/seal.rs, median",
        Vec::new(),
        figures,
        samples.into(),
    );
    let path = report.write(results)?;
    println!("{}", report.table());
    println!("   raw results: {}\n", path.display());
    Ok(())
}
