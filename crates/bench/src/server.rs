//! The real `mediavault` binary under measurement: `serve` on a free loopback
//! port, and the CLI for an app and its token.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use mediavault_test_support::{START_WITHIN, ServeProcess};

use crate::stores::Stores;

/// Server settings the benchmark needs that differ from the defaults. Each
/// applies only when the environment does not already set it, so a
/// `MEDIAVAULT__…` variable exported around `make bench` always wins.
const SERVER_DEFAULTS: &[(&str, &str)] = &[
    // 64 clients at once plus the 16 concurrent large uploads must never
    // meet the 503 "too many uploads" guard.
    ("MEDIAVAULT__SERVER__MAX_CONCURRENT_UPLOADS", "1024"),
    // The benchmark measures throughput, not the per-app rate limit.
    ("MEDIAVAULT__LIMITS__UPLOADS_PER_SECOND", "1000000"),
    ("MEDIAVAULT__LIMITS__UPLOAD_BURST", "1000000"),
    // Uploads by URL fetch from an origin the harness runs on loopback.
    ("MEDIAVAULT__FETCH__ALLOW_NETWORKS", "[\"127.0.0.1/32\"]"),
];

/// The `mediavault` built beside this binary (`target/release`).
pub fn default_binary() -> anyhow::Result<PathBuf> {
    let binary = std::env::current_exe()?.with_file_name("mediavault");
    if !binary.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p mediavault`",
            binary.display()
        );
    }
    Ok(binary)
}

/// A `mediavault` process for `stores`: the harness's own environment
/// (so any `MEDIAVAULT__*` passes through), then the benchmark defaults,
/// then the store coordinates, which nothing overrides.
fn command(binary: &Path, stores: &Stores) -> Command {
    let mut command = Command::new(binary);
    command.current_dir(stores.dir());
    for (key, value) in SERVER_DEFAULTS {
        if std::env::var_os(key).is_none() {
            command.env(key, value);
        }
    }
    command.envs(stores.server_env.iter().map(|(k, v)| (k, v)));
    command
}

/// The `MEDIAVAULT__*` settings a server of this run sees, secrets hidden:
/// recorded with the results so a figure says what it was measured with.
pub fn settings(stores: &Stores) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("MEDIAVAULT__"))
        .collect();
    for (key, value) in SERVER_DEFAULTS {
        if std::env::var_os(key).is_none() {
            settings.push((key.to_string(), value.to_string()));
        }
    }
    settings.retain(|(k, _)| !stores.server_env.iter().any(|(s, _)| s == k));
    settings.extend(stores.server_env.iter().cloned());
    for (key, value) in &mut settings {
        if key.contains("KEYS") || key.contains("SECRET") || key.contains("PIN") {
            *value = "(hidden)".into();
        }
    }
    settings.sort();
    settings
}

/// Runs `mediavault ARGS`; returns its stdout as JSON.
fn cli(binary: &Path, stores: &Stores, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    cli_with(binary, stores, &[], args)
}

/// Runs `mediavault ARGS` with `settings` added; returns its stdout as JSON.
pub fn cli_with(
    binary: &Path,
    stores: &Stores,
    settings: &[(String, String)],
    args: &[&str],
) -> anyhow::Result<serde_json::Value> {
    let output = command(binary, stores)
        .envs(settings.iter().map(|(k, v)| (k, v)))
        .args(args)
        .output()?;
    if !output.status.success() {
        bail!(
            "mediavault {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// Runs `mediavault ARGS` to its end, sampling its peak RSS (`VmHWM`)
/// every 2 ms; returns the seconds it took and the last peak seen, in MiB.
pub fn cli_peak(binary: &Path, stores: &Stores, args: &[&str]) -> anyhow::Result<(f64, f64)> {
    let started = std::time::Instant::now();
    let mut child = command(binary, stores)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut peak_kib = 0;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        // The process may end between the two calls: the last sample stands.
        if let Ok(kib) = proc_status_kib(child.id(), "VmHWM") {
            peak_kib = peak_kib.max(kib);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().context("stderr")?, &mut stderr)?;
        bail!("mediavault {} failed: {stderr}", args.join(" "));
    }
    Ok((seconds, peak_kib as f64 / 1024.0))
}

/// A CAPI app and a token for it.
pub fn app_and_token(binary: &Path, stores: &Stores) -> anyhow::Result<(String, String)> {
    // Only `migrate` and `serve` migrate: the other commands need it done.
    cli(binary, stores, &["migrate"])?;
    let app = cli(binary, stores, &["apps", "create", "--name", "bench"])?;
    let app_id = app["appId"].as_str().context("appId")?.to_owned();
    let token = cli(binary, stores, &["tokens", "issue", "--app", &app_id])?;
    let token = token["token"].as_str().context("token")?.to_owned();
    Ok((app_id, token))
}

/// A running `mediavault serve`; killed on drop.
pub struct Server {
    process: ServeProcess,
    pub base_url: String,
}

impl Server {
    pub fn start(binary: &Path, stores: &Stores) -> anyhow::Result<Server> {
        Server::start_with(binary, stores, &[])
    }

    /// As `start`, with `settings` added to the server's environment.
    pub fn start_with(
        binary: &Path,
        stores: &Stores,
        settings: &[(String, String)],
    ) -> anyhow::Result<Server> {
        let log = stores.dir().join("server.log");
        let mut command = command(binary, stores);
        command
            .envs(settings.iter().map(|(k, v)| (k, v)))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stderr(std::fs::File::create(&log)?);
        let process = ServeProcess::start(&mut command, Some(&log), START_WITHIN)?;
        Ok(Server {
            base_url: process.base_url().to_owned(),
            process,
        })
    }

    /// A line of `/proc/PID/status` in KiB: `VmRSS` now, `VmHWM` the peak.
    pub fn memory_kib(&self, field: &str) -> anyhow::Result<u64> {
        proc_status_kib(self.process.pid(), field)
    }

    /// Makes `VmHWM` start again from the current RSS.
    pub fn reset_peak(&self) -> anyhow::Result<()> {
        std::fs::write(format!("/proc/{}/clear_refs", self.process.pid()), "5")
            .context("resetting the peak RSS (clear_refs)")
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Fails if the server has exited (it should outlive every scenario).
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.process.exited() {
            bail!("mediavault exited ({status}):\n{}", self.process.log());
        }
        Ok(())
    }
}

pub fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{field} in /proc/{pid}/status"))
}
