//! `mediavault-chaos soak`: a steady mix of uploads, downloads, `/info` and
//! deletes for a long while, with short retention and a reaper pass every
//! 10 s so that expiry and reaping run all the time. The server's memory
//! and open descriptors are sampled; any failed request is an error, and so
//! is a rising trend of media rows (expiry falling behind), RSS or open
//! descriptors after warm-up. At the end every media must expire and be
//! reaped, leaving no row and no blob.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::client;
use crate::load::{self, AppLoad, MAX_IN_FLIGHT, Mix};
use crate::report::{self, Common};
use crate::services::{Inventory, Services, rss_and_fds};
use crate::trend::{self, Tolerance, Verdict};

#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// How long to keep the load on.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Operations started per second.
    #[arg(long, default_value_t = 20)]
    pub rate: u32,
    /// The app's retention: media expire this long after upload.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub retention: Duration,
    /// Seed of the operation mix and of file contents.
    #[arg(long, default_value_t = 20261127)]
    pub seed: u64,
    /// Smallest file, in bytes.
    #[arg(long, default_value_t = 1024)]
    pub min_size: usize,
    /// Largest file, in bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub max_size: usize,
    /// Time between samples of the server's RSS and descriptors.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub sample_every: Duration,
    /// Samples before this are warm-up; "start" is the first one after
    /// (at most half the duration).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
}

/// How far each sampled series may rise, from the first third of the
/// samples after warm-up to the last, and still count as steady: rows move
/// with each 10 s reaper pass, RSS with the allocator, descriptors with
/// the connections in flight.
const ROWS_TOLERANCE: Tolerance = Tolerance {
    relative: 0.25,
    absolute: 20.0,
};
const RSS_TOLERANCE: Tolerance = Tolerance {
    relative: 0.10,
    absolute: 8.0 * 1024.0,
};
const FDS_TOLERANCE: Tolerance = Tolerance {
    relative: 0.10,
    absolute: 16.0,
};
/// Media are read and deleted only this long before they expire, so that
/// no request races its media's expiry (which is exact, and would be a 404).
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(20);
/// The soak's operations: no ranges (the cluster run has them).
const MIX: Mix = Mix {
    upload: 40,
    download: 30,
    range: 0,
    info: 15,
    delete: 15,
};

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
    rows: i64,
    blobs: usize,
}

pub async fn run(common: &Common, args: &SoakArgs) -> anyhow::Result<bool> {
    let run_started = Instant::now();
    let mut services = Services::start(&common.mediavault()?, common.ports(), 1, common.keep).await?;
    let mut server = services
        .serve(&[("MEDIAVAULT__REAPER__SCHEDULE", "*/10 * * * * *")])
        .await?;
    let retention = humantime::format_duration(args.retention).to_string();
    let app = services.app(&["--retention", &retention]).await?;
    let inventory = services.inventory().await?;
    let http = client::http(Duration::from_secs(60));
    let base = server.base_url().to_owned();
    eprintln!(
        "soak: {} ops/s for {}; sampling every {:?}",
        args.rate,
        humantime::format_duration(args.duration),
        args.sample_every
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let sampler = tokio::spawn(sample(
        server.pid(),
        inventory.clone(),
        args.sample_every,
        stop_rx,
    ));

    let plan = load::Plan {
        rate: args.rate,
        seed: args.seed,
        min_size: args.min_size,
        max_size: args.max_size,
        mix: MIX,
    };
    let apps = [AppLoad {
        app,
        readable_for: Some(args.retention.saturating_sub(EXPIRY_MARGIN)),
    }];
    let outcome = load::run(
        &plan,
        &http,
        &[base],
        &apps,
        load::Gauge::new(1),
        tokio::time::sleep(args.duration),
    )
    .await?;
    let _ = stop_tx.send(true);
    let samples = sampler.await??;

    // Everything left expires; the scheduled reaper must remove all of it.
    let drain_started = Instant::now();
    let drain_deadline = args.retention + Duration::from_secs(60);
    let drained = loop {
        let (rows, blobs) = (inventory.count_rows().await?, inventory.blob_keys().await?.len());
        if rows == 0 && blobs == 0 {
            break Ok(drain_started.elapsed());
        }
        if drain_started.elapsed() > drain_deadline {
            break Err((rows, blobs));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    inventory.close().await;
    let exited = server.exited();
    let panics = services.panics();

    let tally = &outcome.tally;
    let saturated = outcome.saturated;
    let warmup = args.warmup.min(args.duration / 2);
    let start = samples
        .iter()
        .find(|s| s.at >= warmup)
        .or(samples.first())
        .copied();
    let end = samples.last().copied();
    let max_rss = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let max_fds = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let live: Vec<Sample> = samples.iter().filter(|s| s.at >= warmup).copied().collect();
    let series = |value: fn(&Sample) -> f64| live.iter().map(value).collect::<Vec<f64>>();
    let trends = [
        (
            "media rows",
            trend::judge(&series(|s| s.rows as f64), ROWS_TOLERANCE),
            ROWS_TOLERANCE,
            1.0,
            "",
        ),
        (
            "server RSS",
            trend::judge(&series(|s| s.rss_kib as f64), RSS_TOLERANCE),
            RSS_TOLERANCE,
            1024.0,
            " MiB",
        ),
        (
            "server fds",
            trend::judge(&series(|s| s.fds as f64), FDS_TOLERANCE),
            FDS_TOLERANCE,
            1.0,
            "",
        ),
    ];
    let rising = trends.iter().any(|(_, verdict, ..)| verdict.is_rising());
    let passed = tally.errors == 0 && drained.is_ok() && panics.is_empty() && exited.is_none() && !rising;

    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut out = report::header("soak");
    let _ = writeln!(
        out,
        "services: own PostgreSQL 15 cluster (127.0.0.1:{}), own Garage (127.0.0.1:{}), mediavault serve (release), \
         reaper every 10 s, app retention {retention}",
        common.postgres_port, common.s3_port
    );
    let _ = writeln!(
        out,
        "load: {} ops/s for {} ({} — uploads of {}..{} log-uniform), seed {}",
        args.rate,
        humantime::format_duration(Duration::from_secs(args.duration.as_secs())),
        MIX.describe(),
        report::bytes(args.min_size as u64),
        report::bytes(args.max_size as u64),
        args.seed
    );
    let _ = writeln!(out);
    out.push_str(&outcome.summary());
    let _ = writeln!(out, "errors            {}", tally.errors);
    for example in &tally.examples {
        let _ = writeln!(out, "  {}", report::clip(example, 300));
    }
    if saturated > 0 {
        let _ = writeln!(
            out,
            "rate held back    {saturated} times ({MAX_IN_FLIGHT} ops in flight)"
        );
    }
    if let (Some(start), Some(end)) = (start, end) {
        let _ = writeln!(
            out,
            "server RSS        start {:.1} MiB (at {:.0} s) -> end {:.1} MiB, max {:.1} MiB",
            mib(start.rss_kib),
            start.at.as_secs_f64(),
            mib(end.rss_kib),
            mib(max_rss)
        );
        let _ = writeln!(
            out,
            "server fds        start {} -> end {}, max {}",
            start.fds, end.fds, max_fds
        );
    }
    let (min_rows, max_rows) = live
        .iter()
        .fold((i64::MAX, 0), |(lo, hi), s| (lo.min(s.rows), hi.max(s.rows)));
    let _ = writeln!(out, "media rows        {min_rows}..{max_rows} after warm-up");
    let _ = writeln!(
        out,
        "trends            mean of the last third of the {} samples after warm-up against the first third",
        live.len()
    );
    for (name, verdict, tolerance, scale, unit) in trends {
        let _ = writeln!(out, "  {name:<15} {}", describe(verdict, tolerance, scale, unit));
    }
    match drained {
        Ok(after) => {
            let _ = writeln!(
                out,
                "drained           0 rows, 0 blobs {:.0} s after the load stopped",
                after.as_secs_f64()
            );
        }
        Err((rows, blobs)) => {
            let _ = writeln!(
                out,
                "NOT drained       {rows} rows, {blobs} blobs left {:.0} s after the load stopped",
                drain_deadline.as_secs_f64()
            );
        }
    }
    let _ = writeln!(out, "server panics     {}", panics.len());
    for line in panics.iter().take(5) {
        let _ = writeln!(out, "  {}", report::clip(line, 300));
    }
    if let Some(status) = exited {
        let _ = writeln!(out, "server exited by itself: {status}\n{}", server.log_tail(30));
    }
    let _ = writeln!(
        out,
        "whole run         {:.0} s",
        run_started.elapsed().as_secs_f64()
    );
    let _ = writeln!(out, "result: {}", if passed { "PASS" } else { "FAIL" });
    let _ = writeln!(out, "\nsamples (t, RSS MiB, fds, media rows, blobs):");
    for s in &samples {
        let _ = writeln!(
            out,
            "  {:>6.0} s  {:>7.1}  {:>4}  {:>6}  {:>6}",
            s.at.as_secs_f64(),
            mib(s.rss_kib),
            s.fds,
            s.rows,
            s.blobs
        );
    }
    report::publish(common, "soak", &out)?;
    drop(server);
    Ok(passed)
}

/// A trend's verdict for the report, in units of `scale` named `unit`.
fn describe(verdict: Verdict, tolerance: Tolerance, scale: f64, unit: &str) -> String {
    let allowed = format!(
        "(steady up to +{:.0}% +{:.0}{unit})",
        tolerance.relative * 100.0,
        tolerance.absolute / scale
    );
    match verdict {
        Verdict::Steady { earlier, later } => format!(
            "steady: {:.1} -> {:.1}{unit} {allowed}",
            earlier / scale,
            later / scale
        ),
        Verdict::Rising { earlier, later } => format!(
            "RISING: {:.1} -> {:.1}{unit}, above {:.1}{unit} {allowed}",
            earlier / scale,
            later / scale,
            tolerance.limit(earlier) / scale
        ),
        Verdict::TooFew(n) => format!(
            "not judged: {n} samples after warm-up, {} needed",
            trend::MIN_SAMPLES
        ),
    }
}

/// Samples the server every `every` until told to stop, then once more.
async fn sample(
    pid: u32,
    inventory: Inventory,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Vec<Sample>> {
    let started = Instant::now();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples = Vec::new();
    loop {
        let stopping = tokio::select! {
            _ = ticker.tick() => false,
            _ = stop.changed() => true,
        };
        let (rss_kib, fds) = rss_and_fds(pid)?;
        samples.push(Sample {
            at: started.elapsed(),
            rss_kib,
            fds,
            rows: inventory.count_rows().await?,
            blobs: inventory.blob_keys().await?.len(),
        });
        if stopping {
            return Ok(samples);
        }
    }
}
