//! `mediavault-chaos chaos`: uploads under fire. Concurrent clients upload
//! files of mixed sizes while the stores and the service itself are killed
//! and restarted; afterwards, with everything back, one reaper pass runs and
//! the run checks the service's promise: every upload that was answered 200
//! reads back intact, and every other one left nothing behind — no row, no
//! blob. Clients retry nothing: each attempt is recorded as it ended.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mediavault_test_support::ServeProcess;
use tokio::sync::watch;

use crate::client::{self, App, Failure};
use crate::files::FileSpec;
use crate::report::{self, Common};
use crate::services::{MediaRow, Services};

#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Upload attempts made while faults are injected.
    #[arg(long, default_value_t = 1000)]
    pub uploads: usize,
    /// Clients uploading at once.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seed of file sizes, types and contents.
    #[arg(long, default_value_t = 20261127)]
    pub seed: u64,
    /// Smallest file, in bytes.
    #[arg(long, default_value_t = 1024)]
    pub min_size: usize,
    /// Largest file, in bytes.
    #[arg(long, default_value_t = 20 * 1024 * 1024)]
    pub max_size: usize,
    /// Uploads (each downloaded back) once every service is up again.
    #[arg(long, default_value_t = 50)]
    pub final_uploads: usize,
    /// How long a killed store stays down before it is started again.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub downtime: Duration,
    /// reaper.stale_upload_after for the servers and the run's reaper pass
    /// (a pass judges uploads stale by its own setting); the run waits it
    /// out before that pass. Longer than any upload here takes, barring
    /// faults.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub stale_upload_after: Duration,
    /// A request still unanswered after this long counts as a hang.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Garage,
    Postgres,
    Mediavault,
}

/// Three Garage crashes, two PostgreSQL crashes and two service crashes,
/// interleaved and spread evenly over the attempts.
const SCHEDULE: [Fault; 7] = [
    Fault::Garage,
    Fault::Postgres,
    Fault::Mediavault,
    Fault::Garage,
    Fault::Postgres,
    Fault::Mediavault,
    Fault::Garage,
];

/// How long after a fault a failure is still put down to it.
const FAULT_GRACE: Duration = Duration::from_secs(1);

struct Injected {
    fault: Fault,
    at: Duration,
    attempt: usize,
    in_flight: usize,
    took: Duration,
}

impl Injected {
    fn describe(&self, downtime: Duration) -> String {
        let what = match self.fault {
            Fault::Garage => format!("Garage SIGKILLed, down {downtime:?}, restarted"),
            Fault::Postgres => format!("PostgreSQL `pg_ctl stop -m immediate`, down {downtime:?}, started"),
            Fault::Mediavault => "mediavault SIGKILLed, restarted on a new port".to_owned(),
        };
        format!(
            "+{:>6.1} s  {what} (back after {:.1} s); at attempt {}, {} uploads in flight",
            self.at.as_secs_f64(),
            self.took.as_secs_f64(),
            self.attempt,
            self.in_flight
        )
    }
}

/// One upload attempt and how it ended.
struct Attempt {
    index: usize,
    size: usize,
    sha256: String,
    outcome: Result<String, Failure>,
    /// When the request was sent and when it ended, from the run's start.
    sent: Duration,
    ended: Duration,
}

/// What workers and the fault injector share.
struct Progress {
    /// Attempts claimed so far (the next attempt's index).
    claimed: AtomicUsize,
    in_flight: AtomicUsize,
}

pub async fn run(common: &Common, args: &ChaosArgs) -> anyhow::Result<bool> {
    let run_started = Instant::now();
    let mut services = Services::start(&common.mediavault()?, common.ports(), 1, common.keep).await?;
    let stale = humantime::format_duration(args.stale_upload_after).to_string();
    // A serving reaper needs the idle timeout at most half the stale time.
    let idle = humantime::format_duration(args.stale_upload_after / 2).to_string();
    let server_env = [
        ("MEDIAVAULT__REAPER__STALE_UPLOAD_AFTER", stale.as_str()),
        ("MEDIAVAULT__SERVER__IDLE_TIMEOUT", idle.as_str()),
    ];
    let mut server = services.serve(&server_env).await?;
    let app = services.app(&[]).await?;
    let http = client::http(args.request_timeout);
    eprintln!(
        "chaos: {} uploads from {} clients; services up after {:.1} s",
        args.uploads,
        args.clients,
        run_started.elapsed().as_secs_f64()
    );

    // Uploads under faults.
    let (url_tx, url_rx) = watch::channel(Some(server.base_url().to_owned()));
    let progress = Arc::new(Progress {
        claimed: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
    });
    let upload_started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.clients {
        workers.spawn(worker(
            progress.clone(),
            url_rx.clone(),
            http.clone(),
            app.clone(),
            WorkerPlan {
                run_started,
                uploads: args.uploads,
                seed: args.seed,
                min_size: args.min_size,
                max_size: args.max_size,
            },
        ));
    }
    let mut unexpected_exits = Vec::new();
    let injected = inject_faults(
        &mut services,
        &mut server,
        &server_env,
        &url_tx,
        &progress,
        args,
        run_started,
        &mut unexpected_exits,
    )
    .await?;
    let mut attempts: Vec<Attempt> = workers.join_all().await.into_iter().flatten().collect();
    attempts.sort_by_key(|a| a.index);
    let upload_phase = upload_started.elapsed();
    check_running(&mut services, &mut server, &server_env, &mut unexpected_exits).await?;
    let base = server.base_url().to_owned();
    eprintln!(
        "chaos: upload phase done in {:.0} s; reaping and verifying",
        upload_phase.as_secs_f64()
    );

    // Services are all back. Let every upload row left by a killed server
    // pass its abandonment time, then reap.
    let inventory = services.inventory().await?;
    tokio::time::sleep(args.stale_upload_after + Duration::from_secs(2)).await;
    let mut reaper_passes = Vec::new();
    for _ in 0..3 {
        let report = services.cli(&["reap", "--once"], &server_env).await?;
        reaper_passes.push(report.to_string());
        // A pass that found the server's scheduled pass holding the lock
        // did nothing; another one settles what is left.
        if inventory.count_unsettled().await? == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // Every 200 reads back intact.
    let succeeded: Vec<&Attempt> = attempts.iter().filter(|a| a.outcome.is_ok()).collect();
    let lost: Vec<(usize, Failure)> = futures::stream::iter(succeeded.iter().map(|attempt| {
        let (http, app, base) = (&http, &app, &base);
        async move {
            let id = attempt.outcome.as_ref().expect("succeeded");
            client::verify(http, base, app, id, &attempt.sha256, attempt.size as u64)
                .await
                .err()
                .map(|failure| (attempt.index, failure))
        }
    }))
    .buffer_unordered(8)
    .filter_map(|lost| async move { lost })
    .collect()
    .await;

    // With everything back, nothing fails.
    let finals = final_batch(&http, &base, &app, args).await;
    let final_errors: Vec<&Failure> = finals.iter().filter_map(|r| r.as_ref().err()).collect();

    // Rows and blobs against the uploads that succeeded.
    let mut expected: HashSet<&str> = succeeded
        .iter()
        .map(|a| a.outcome.as_deref().expect("succeeded"))
        .collect();
    expected.extend(finals.iter().filter_map(|r| r.as_deref().ok()));
    let rows = inventory.rows().await?;
    let blobs: HashSet<String> = inventory.blob_keys().await?.into_iter().collect();
    let row_keys: HashSet<&str> = rows.iter().map(|r| r.blob_key.as_str()).collect();
    let rows_without_blob: Vec<_> = rows.iter().filter(|r| !blobs.contains(&r.blob_key)).collect();
    let blobs_without_row: Vec<_> = blobs.iter().filter(|k| !row_keys.contains(k.as_str())).collect();
    // A row of a failed attempt can be consistent and intact all the same:
    // the service sent the commit that made it ready, and then the server
    // was killed or the database crashed before the reply came back. No
    // service can tell its client about such a commit; the file is whole
    // and expires with its retention. It is counted apart, not as an orphan,
    // once it reads back as exactly the file that attempt sent.
    let mut unacknowledged: Vec<(&MediaRow, &Attempt)> = Vec::new();
    let mut stray_rows: Vec<&MediaRow> = Vec::new();
    for row in rows
        .iter()
        .filter(|r| !expected.contains(r.id.as_str()) || r.state != "ready")
    {
        let attempt = row
            .filename
            .as_deref()
            .and_then(FileSpec::index_of)
            .and_then(|index| attempts.iter().find(|a| a.index as u64 == index))
            .filter(|a| a.outcome.is_err());
        match attempt {
            Some(attempt) if row.state == "ready" && blobs.contains(&row.blob_key) => {
                let intact =
                    client::verify(&http, &base, &app, &row.id, &attempt.sha256, attempt.size as u64).await;
                match intact {
                    Ok(()) => unacknowledged.push((row, attempt)),
                    Err(_) => stray_rows.push(row),
                }
            }
            _ => stray_rows.push(row),
        }
    }
    let orphan_rows: HashSet<&str> = rows_without_blob
        .iter()
        .chain(&stray_rows)
        .map(|r| r.id.as_str())
        .collect();
    let orphans = orphan_rows.len() + blobs_without_row.len();
    inventory.close().await;
    check_running(&mut services, &mut server, &server_env, &mut unexpected_exits).await?;
    let panics = services.panics();

    // The report.
    let mut failures: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
    for attempt in &attempts {
        if let Err(failure) = &attempt.outcome {
            let entry = failures.entry(failure.kind()).or_default();
            entry.0 += 1;
            if entry.1.len() < 3 {
                entry.1.push(format!("#{}: {failure}", attempt.index));
            }
        }
    }
    let hung = attempts
        .iter()
        .filter(|a| matches!(a.outcome, Err(Failure::Timeout)))
        .count();
    // Every failure must be explained by a fault under way while its
    // request ran (with a second's grace for a store that just came back).
    let unexplained: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.outcome.is_err())
        .filter(|a| {
            !injected
                .iter()
                .any(|f| a.sent <= f.at + f.took + FAULT_GRACE && a.ended >= f.at)
        })
        .collect();
    let total_bytes: usize = attempts.iter().map(|a| a.size).sum();
    let passed = lost.is_empty()
        && orphans == 0
        && unexplained.is_empty()
        && final_errors.is_empty()
        && hung == 0
        && panics.is_empty()
        && unexpected_exits.is_empty();

    let mut out = report::header("fault run");
    let _ = writeln!(
        out,
        "services: own PostgreSQL 15 cluster (127.0.0.1:{}), own Garage (127.0.0.1:{}), mediavault serve (release)",
        common.postgres_port, common.s3_port
    );
    let _ = writeln!(
        out,
        "files: {} attempts, log-uniform {}..{}, {} in all, seed {}, {} clients, no retries",
        args.uploads,
        report::bytes(args.min_size as u64),
        report::bytes(args.max_size as u64),
        report::bytes(total_bytes as u64),
        args.seed,
        args.clients
    );
    let _ = writeln!(out, "\nfaults injected: {}", injected.len());
    for fault in &injected {
        let _ = writeln!(out, "  {}", fault.describe(args.downtime));
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "uploads tried     {:>6}", attempts.len());
    let _ = writeln!(out, "succeeded         {:>6}", succeeded.len());
    let _ = writeln!(out, "cleanly failed    {:>6}", attempts.len() - succeeded.len());
    for (kind, (count, examples)) in &failures {
        let _ = writeln!(out, "  {kind}: {count}");
        for example in examples {
            let _ = writeln!(out, "    e.g. {}", report::clip(example, 200));
        }
    }
    let _ = writeln!(
        out,
        "  with no fault under way: {} (must be 0)",
        unexplained.len()
    );
    for attempt in unexplained.iter().take(5) {
        let failure = attempt
            .outcome
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "    #{} sent +{:.1} s, ended +{:.1} s: {}",
            attempt.index,
            attempt.sent.as_secs_f64(),
            attempt.ended.as_secs_f64(),
            report::clip(&failure, 160)
        );
    }
    let _ = writeln!(out, "lost              {:>6}", lost.len());
    for (index, failure) in lost.iter().take(10) {
        let _ = writeln!(out, "  #{index}: {}", report::clip(&failure.to_string(), 300));
    }
    let _ = writeln!(
        out,
        "final batch       {:>6} of {} uploaded and read back",
        finals.len() - final_errors.len(),
        finals.len()
    );
    for failure in final_errors.iter().take(5) {
        let _ = writeln!(out, "  {}", report::clip(&failure.to_string(), 300));
    }
    let mut unacknowledged_by: BTreeMap<String, usize> = BTreeMap::new();
    for (_, attempt) in &unacknowledged {
        if let Err(failure) = &attempt.outcome {
            *unacknowledged_by.entry(failure.kind()).or_default() += 1;
        }
    }
    let _ = writeln!(
        out,
        "stored, reply lost {:>5}  (failed attempts whose commit went through: ready, blob present, content intact{})",
        unacknowledged.len(),
        unacknowledged_by
            .iter()
            .map(|(kind, n)| format!("; {kind}: {n}"))
            .collect::<String>()
    );
    for (row, attempt) in &unacknowledged {
        let failure = attempt
            .outcome
            .as_ref()
            .err()
            .map(Failure::kind)
            .unwrap_or_default();
        let _ = writeln!(out, "  #{} {} ({failure})", attempt.index, row.id);
    }
    let _ = writeln!(
        out,
        "rows              {:>6}  (succeeded {} + final batch {} + stored, reply lost {})",
        rows.len(),
        succeeded.len(),
        finals.len() - final_errors.len(),
        unacknowledged.len()
    );
    let _ = writeln!(out, "blobs             {:>6}", blobs.len());
    let _ = writeln!(
        out,
        "orphans           {:>6}  (rows without blob {}, blobs without row {}, other rows not of a 200 {})",
        orphans,
        rows_without_blob.len(),
        blobs_without_row.len(),
        stray_rows.len()
    );
    for row in stray_rows.iter().chain(&rows_without_blob).take(10) {
        let attempt = row
            .filename
            .as_deref()
            .and_then(FileSpec::index_of)
            .and_then(|index| attempts.iter().find(|a| a.index as u64 == index));
        let outcome = match attempt.map(|a| &a.outcome) {
            Some(Ok(id)) => format!("attempt #{} answered 200 ({id})", attempt.map_or(0, |a| a.index)),
            Some(Err(failure)) => format!(
                "attempt #{} failed: {}",
                attempt.map_or(0, |a| a.index),
                report::clip(&failure.to_string(), 160)
            ),
            None => "no attempt of this run".to_owned(),
        };
        let _ = writeln!(
            out,
            "  row {} state {} blob {}: {outcome}",
            row.id, row.state, row.blob_key
        );
    }
    for key in blobs_without_row.iter().take(10) {
        let _ = writeln!(out, "  blob {key}");
    }
    let _ = writeln!(out, "hung requests     {hung:>6}");
    let _ = writeln!(out, "server panics     {:>6}", panics.len());
    for line in panics.iter().take(5) {
        let _ = writeln!(out, "  {}", report::clip(line, 300));
    }
    let _ = writeln!(out, "unexpected exits  {:>6}", unexpected_exits.len());
    for exit in &unexpected_exits {
        let _ = writeln!(out, "  {}", report::clip(exit, 2000));
    }
    let _ = writeln!(
        out,
        "reaper: `mediavault reap --once` {:.0} s after the last attempt (stale_upload_after {stale}): {}",
        (args.stale_upload_after + Duration::from_secs(2)).as_secs_f64(),
        reaper_passes.join(", ")
    );
    let _ = writeln!(
        out,
        "time: upload phase {:.0} s ({:.0} MB/s offered), whole run {:.0} s",
        upload_phase.as_secs_f64(),
        total_bytes as f64 / 1e6 / upload_phase.as_secs_f64(),
        run_started.elapsed().as_secs_f64()
    );
    let _ = writeln!(out, "result: {}", if passed { "PASS" } else { "FAIL" });
    report::publish(common, "chaos", &out)?;
    drop(server);
    Ok(passed)
}

/// What each worker uploads.
#[derive(Clone, Copy)]
struct WorkerPlan {
    run_started: Instant,
    uploads: usize,
    seed: u64,
    min_size: usize,
    max_size: usize,
}

/// One client: claims attempts until all are made. It waits for a server
/// address only while the service is being restarted (a client cannot
/// reach a server that is not there); everything else it just tries.
async fn worker(
    progress: Arc<Progress>,
    mut url: watch::Receiver<Option<String>>,
    http: reqwest::Client,
    app: App,
    plan: WorkerPlan,
) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    loop {
        let index = progress.claimed.fetch_add(1, Ordering::SeqCst);
        if index >= plan.uploads {
            return attempts;
        }
        let spec = FileSpec::new(plan.seed, index as u64, plan.min_size, plan.max_size);
        let file = tokio::task::spawn_blocking(move || spec.generate())
            .await
            .expect("file generation");
        let Ok(base) = url
            .wait_for(Option::is_some)
            .await
            .map(|url| url.clone().unwrap_or_default())
        else {
            return attempts;
        };
        progress.in_flight.fetch_add(1, Ordering::SeqCst);
        let sent = plan.run_started.elapsed();
        let outcome = client::upload(&http, &base, &app, &file.spec, file.bytes).await;
        progress.in_flight.fetch_sub(1, Ordering::SeqCst);
        let failed = outcome.is_err();
        attempts.push(Attempt {
            index,
            size: spec.size,
            sha256: file.sha256,
            outcome,
            sent,
            ended: plan.run_started.elapsed(),
        });
        // A failed attempt is final (no retry); a client that just saw one
        // pauses before its next file, as a real one would, rather than
        // spending the run's attempts in a burst against a store that is down.
        if failed {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Runs the schedule, each fault once enough attempts have been claimed.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn inject_faults(
    services: &mut Services,
    server: &mut ServeProcess,
    server_env: &[(&str, &str)],
    url: &watch::Sender<Option<String>>,
    progress: &Progress,
    args: &ChaosArgs,
    run_started: Instant,
    unexpected_exits: &mut Vec<String>,
) -> anyhow::Result<Vec<Injected>> {
    let mut injected = Vec::new();
    for (n, fault) in SCHEDULE.iter().enumerate() {
        let due = args.uploads * (n + 1) / (SCHEDULE.len() + 1);
        while progress.claimed.load(Ordering::SeqCst) < due {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        check_running(services, server, server_env, unexpected_exits).await?;
        let (at, attempt) = (run_started.elapsed(), progress.claimed.load(Ordering::SeqCst));
        let in_flight = progress.in_flight.load(Ordering::SeqCst);
        let started = Instant::now();
        match fault {
            Fault::Garage => {
                services.garage.kill();
                tokio::time::sleep(args.downtime).await;
                services.garage.start().await?;
            }
            Fault::Postgres => {
                services.postgres.stop_immediate().await?;
                tokio::time::sleep(args.downtime).await;
                services.postgres.start().await?;
            }
            Fault::Mediavault => {
                url.send_replace(None);
                server.kill();
                *server = services.serve(server_env).await?;
                url.send_replace(Some(server.base_url().to_owned()));
            }
        }
        let took = started.elapsed();
        let record = Injected {
            fault: *fault,
            at,
            attempt,
            in_flight,
            took,
        };
        eprintln!("chaos: {}", record.describe(args.downtime));
        injected.push(record);
    }
    Ok(injected)
}

/// A server that died on its own is a defect: note it with its log, and
/// start another so the run can finish.
async fn check_running(
    services: &mut Services,
    server: &mut ServeProcess,
    server_env: &[(&str, &str)],
    unexpected_exits: &mut Vec<String>,
) -> anyhow::Result<()> {
    if let Some(status) = server.exited() {
        unexpected_exits.push(format!(
            "pid {} exited by itself ({status}):\n{}",
            server.pid(),
            server.log_tail(30)
        ));
        *server = services.serve(server_env).await?;
    }
    Ok(())
}

/// Uploads with every service up; each must succeed and read back intact.
async fn final_batch(
    http: &reqwest::Client,
    base: &str,
    app: &App,
    args: &ChaosArgs,
) -> Vec<Result<String, Failure>> {
    let first = args.uploads as u64 + 1_000_000;
    futures::stream::iter(first..first + args.final_uploads as u64)
        .map(|index| async move {
            let spec = FileSpec::new(args.seed, index, args.min_size, args.max_size);
            let file = tokio::task::spawn_blocking(move || spec.generate())
                .await
                .expect("file generation");
            let id = client::upload(http, base, app, &spec, file.bytes).await?;
            client::verify(http, base, app, &id, &file.sha256, spec.size as u64).await?;
            Ok(id)
        })
        .buffer_unordered(args.clients)
        .collect()
        .await
}
