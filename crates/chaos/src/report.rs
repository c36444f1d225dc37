//! What every run shares: where things are, and how results are written
//! (to stdout and to `bench/results/<run>-<date>.txt`).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;

use crate::services::Ports;

#[derive(Debug, clap::Args)]
pub struct Common {
    /// The `mediavault` binary (default: the one next to this program).
    #[arg(long)]
    pub mediavault_bin: Option<PathBuf>,
    /// Where the results file goes.
    #[arg(long, default_value = "bench/results")]
    pub results_dir: PathBuf,
    /// Port of the run's own PostgreSQL cluster (loopback; below the
    /// ephemeral range, where outgoing connections could hold it).
    #[arg(long, default_value_t = 15432)]
    pub postgres_port: u16,
    /// Port of the run's own Garage S3 API (loopback); its RPC port is the
    /// next. A cluster's node N (from 0) takes the three from s3_port + 3N
    /// (S3, RPC, admin).
    #[arg(long, default_value_t = 29200)]
    pub s3_port: u16,
    /// Keep the temporary directory (data and logs) after the run.
    #[arg(long)]
    pub keep: bool,
}

impl Common {
    pub fn mediavault(&self) -> anyhow::Result<PathBuf> {
        let path = match &self.mediavault_bin {
            Some(path) => path.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("this program has no directory")?
                .join("mediavault"),
        };
        anyhow::ensure!(
            path.is_file(),
            "{} does not exist: build it (cargo build --release -p mediavault)",
            path.display()
        );
        Ok(path)
    }

    pub fn ports(&self) -> Ports {
        Ports {
            postgres: self.postgres_port,
            s3: self.s3_port,
        }
    }
}

/// The first lines of a results file: what ran, when, where.
pub fn header(what: &str) -> String {
    let mut out = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let _ = writeln!(
        out,
        "mediavault {what}, {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    let _ = writeln!(out, "command: mediavault-chaos {}", args.join(" "));
    let _ = writeln!(out, "machine: {cores} cores, {}", memory());
    out
}

fn memory() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let kib: u64 = info
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(format!("{:.0} GiB RAM", kib as f64 / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "RAM unknown".into())
}

/// Prints the report and writes it to `<results_dir>/<name>-<date>.txt`.
pub fn publish(common: &Common, name: &str, text: &str) -> anyhow::Result<()> {
    println!("{text}");
    std::fs::create_dir_all(&common.results_dir)?;
    let path = common
        .results_dir
        .join(format!("{name}-{}.txt", chrono::Utc::now().format("%Y-%m-%d")));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("written to {}", path.display());
    Ok(())
}

/// Bytes in binary units, as sizes are given.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// At most `max` characters of `text`, on one line.
pub fn clip(text: &str, max: usize) -> String {
    let flat = text.replace('\n', " | ");
    match flat.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}
