//! `mediavault-chaos cluster`: the service on a replicated store that loses
//! one node at a time. Three Garage nodes on loopback with replication
//! factor 3 (a read or a write needs 2 of the 3), and two `mediavault serve`
//! replicas on one PostgreSQL. Each replica's S3 endpoint is a failover
//! proxy (`failover.rs`) that prefers a node of its own: replica 1 node 1,
//! replica 2 node 2; no replica prefers node 3.
//!
//! A steady mix of requests runs throughout, to both replicas in turn:
//! uploads (half to an app whose media outlive the run, half to one whose
//! media expire during it), downloads, ranged downloads, `/info` and
//! deletes, with each replica's reaper every 10 s. After a baseline, node 3
//! is SIGKILLed, kept down, and started again; once the cluster is whole and
//! the load has run steady again, node 1 (replica 1's preferred endpoint)
//! goes the same way. Every request must succeed throughout.
//!
//! Afterwards: every acknowledged upload of the lasting app that was not
//! deleted downloads byte-exact, with `/info` agreeing; every media of the
//! expiring app is reaped; every row has its blob and every blob its row.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mediavault_test_support::ServeProcess;

use crate::client::{self, Failure};
use crate::files::FileSpec;
use crate::garage::Garage;
use crate::load::{self, AppLoad, Mix, Record};
use crate::report::{self, Common};
use crate::services::Services;
use crate::soak::EXPIRY_MARGIN;

#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Operations started per second.
    #[arg(long, default_value_t = 10)]
    pub rate: u32,
    /// Seed of the operation mix and of file contents.
    #[arg(long, default_value_t = 20261127)]
    pub seed: u64,
    /// Smallest file, in bytes.
    #[arg(long, default_value_t = 1024)]
    pub min_size: usize,
    /// Largest file, in bytes; above 5 MiB an upload is a multipart upload.
    #[arg(long, default_value_t = 12 * 1024 * 1024)]
    pub max_size: usize,
    /// Load with every node up: before the first loss, and after each node
    /// is back and the cluster whole.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub steady: Duration,
    /// How long a killed node stays down.
    #[arg(long, default_value = "25s", value_parser = humantime::parse_duration)]
    pub downtime: Duration,
    /// The nodes killed, one after the other (1 to 3). Node 3 is no
    /// replica's preferred endpoint; node 1 is replica 1's.
    #[arg(long, value_delimiter = ',', default_values_t = vec![3, 1])]
    pub kill: Vec<usize>,
    /// Retention of the app whose media expire during the run.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub retention: Duration,
    /// reaper.stale_upload_after for the servers and the run's reaper pass.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub stale_upload_after: Duration,
    /// A request still unanswered after this long counts as a hang.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
}

const NODES: usize = 3;
/// How long a node loss waits for a multipart upload to strike.
const AIM_WITHIN: Duration = Duration::from_secs(10);
const REPLICAS: usize = 2;
/// The apps of the load, by index.
const LASTING: usize = 0;
const EXPIRING: usize = 1;
const MIX: Mix = Mix {
    upload: 35,
    download: 25,
    range: 15,
    info: 10,
    delete: 15,
};

/// A stretch of the run, by what the store was going through.
struct Phase {
    name: String,
    from: Instant,
    to: Instant,
    /// A node was down or not yet rejoined.
    degraded: bool,
}

/// One node lost and brought back.
struct Loss {
    node: usize,
    /// Multipart uploads in flight when it was killed: on the replica
    /// that prefers the node, or on all of them for a node none prefers.
    multipart: usize,
    killed: Instant,
    /// When it was started again.
    restarted: Instant,
    /// When its S3 API answered again.
    answering: Instant,
    /// When every node saw every other again.
    whole: Instant,
}

pub async fn run(common: &Common, args: &ClusterArgs) -> anyhow::Result<bool> {
    for &node in &args.kill {
        anyhow::ensure!(
            (1..=NODES).contains(&node),
            "--kill {node}: nodes are 1 to {NODES}"
        );
    }
    let run_started = Instant::now();
    let mut services = Services::start(&common.mediavault()?, common.ports(), NODES, common.keep).await?;
    let stale = humantime::format_duration(args.stale_upload_after).to_string();
    // A serving reaper needs the idle timeout at most half the stale time.
    let idle = humantime::format_duration(args.stale_upload_after / 2).to_string();
    let mut servers: Vec<ServeProcess> = Vec::new();
    let mut endpoints = Vec::new();
    for replica in 0..REPLICAS {
        let endpoint = services.garage.endpoint_for(replica);
        let env = [
            ("MEDIAVAULT__BLOBS__ENDPOINT", endpoint.as_str()),
            ("MEDIAVAULT__REAPER__SCHEDULE", "*/10 * * * * *"),
            ("MEDIAVAULT__REAPER__STALE_UPLOAD_AFTER", stale.as_str()),
            ("MEDIAVAULT__SERVER__IDLE_TIMEOUT", idle.as_str()),
        ];
        servers.push(services.serve(&env).await?);
        endpoints.push(endpoint);
    }
    let retention = humantime::format_duration(args.retention).to_string();
    let apps = [
        AppLoad {
            app: services.app(&[]).await?,
            readable_for: None,
        },
        AppLoad {
            app: services.app(&["--retention", &retention]).await?,
            readable_for: Some(args.retention.saturating_sub(EXPIRY_MARGIN)),
        },
    ];
    let http = client::http(args.request_timeout);
    let bases: Vec<String> = servers.iter().map(|s| s.base_url().to_owned()).collect();
    eprintln!(
        "cluster: {NODES} Garage nodes, {REPLICAS} replicas, {} ops/s; services up after {:.1} s",
        args.rate,
        run_started.elapsed().as_secs_f64()
    );

    // The load, with the node losses on its clock.
    let plan = load::Plan {
        rate: args.rate,
        seed: args.seed,
        min_size: args.min_size,
        max_size: args.max_size,
        mix: MIX,
    };
    let load_started = Instant::now();
    let load_started_at = chrono::Utc::now();
    let loadavg_before = loadavg();
    let mut schedule = None;
    let gauge = load::Gauge::new(REPLICAS);
    let outcome = load::run(&plan, &http, &bases, &apps, gauge.clone(), async {
        schedule = Some(lose_nodes(&mut services, args, &gauge, load_started).await);
    })
    .await?;
    let (phases, losses) = schedule.expect("the schedule ran to its end")?;
    let loadavg_after = loadavg();
    let tally = &outcome.tally;
    let mut exits: Vec<String> = Vec::new();
    note_exits(&mut servers, &mut exits);
    eprintln!(
        "cluster: load done after {:.0} s; reaping and verifying",
        outcome.took.as_secs_f64()
    );

    // Uploads cut short by nothing should leave nothing to settle; a pass
    // of the run's own confirms it, once any would have turned stale.
    let inventory = services.inventory().await?;
    let server_env = [("MEDIAVAULT__REAPER__STALE_UPLOAD_AFTER", stale.as_str())];
    tokio::time::sleep(args.stale_upload_after + Duration::from_secs(2)).await;
    let mut reaper_passes = Vec::new();
    for _ in 0..3 {
        reaper_passes.push(services.cli(&["reap", "--once"], &server_env).await?.to_string());
        if inventory.count_unsettled().await? == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // The expiring app's media all expire; the replicas' reapers take them.
    let expiring: HashSet<&str> = tally
        .stored
        .iter()
        .filter(|s| s.app == EXPIRING)
        .map(|s| s.id.as_str())
        .collect();
    let drain_started = Instant::now();
    let drain_deadline = args.retention + Duration::from_secs(60);
    let expiring_left = loop {
        let left = inventory
            .rows()
            .await?
            .into_iter()
            .filter(|row| expiring.contains(row.id.as_str()))
            .count();
        if left == 0 || drain_started.elapsed() > drain_deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };

    // Every lasting upload not deleted reads back byte-exact, from either replica.
    let kept: Vec<&load::Stored> = tally
        .stored
        .iter()
        .filter(|s| {
            s.app == LASTING && !tally.deleted.contains(&s.id) && !tally.delete_failed.contains(&s.id)
        })
        .collect();
    let lost: Vec<(String, Failure)> = futures::stream::iter(kept.iter().enumerate().map(|(n, stored)| {
        let (http, app, base) = (&http, &apps[LASTING].app, &bases[n % bases.len()]);
        async move {
            client::verify(
                http,
                base,
                app,
                &stored.id,
                &stored.sha256,
                stored.spec.size as u64,
            )
            .await
            .err()
            .map(|failure| (stored.id.clone(), failure))
        }
    }))
    .buffer_unordered(8)
    .filter_map(|lost| async move { lost })
    .collect()
    .await;

    // Rows and blobs against what was acknowledged.
    let rows = inventory.rows().await?;
    let mut blobs: HashSet<String> = inventory.blob_keys().await?.into_iter().collect();
    let row_keys: HashSet<&str> = rows.iter().map(|r| r.blob_key.as_str()).collect();
    // A node that was down while blobs were deleted still lists them until
    // Garage's anti-entropy catches it up; a HEAD (read from a quorum)
    // tells a blob that is there from one that is only listed.
    let mut listed_but_gone = 0;
    for key in blobs.clone().iter().filter(|k| !row_keys.contains(k.as_str())) {
        if !inventory.blob_exists(key).await? {
            blobs.remove(key);
            listed_but_gone += 1;
        }
    }
    inventory.close().await;
    let rows_without_blob = rows.iter().filter(|r| !blobs.contains(&r.blob_key)).count();
    let blobs_without_row = blobs.iter().filter(|k| !row_keys.contains(k.as_str())).count();
    let kept_ids: HashSet<&str> = kept.iter().map(|s| s.id.as_str()).collect();
    let unexplained_rows: Vec<_> = rows
        .iter()
        .filter(|r| !kept_ids.contains(r.id.as_str()) && !expiring.contains(r.id.as_str()))
        .filter(|r| !(tally.delete_failed.contains(&r.id) && r.state == "ready"))
        .collect();
    // Of those, the rows of uploads that failed: a reply lost after the
    // commit leaves one, whole; the report names them apart.
    let of_failed_uploads = unexplained_rows
        .iter()
        .filter(|r| {
            r.filename
                .as_deref()
                .and_then(FileSpec::index_of)
                .is_some_and(|index| tally.failed_uploads.contains(&index))
        })
        .count();
    let orphans = rows_without_blob + blobs_without_row + unexplained_rows.len();
    note_exits(&mut servers, &mut exits);
    let panics = services.panics();
    // object_store logs each retry of a store request it makes.
    // Errors and warnings the replicas logged: the why of any failure.
    let mut complaints: Vec<(usize, String)> = services
        .log_lines(" ERROR ")
        .into_iter()
        .chain(services.log_lines(" WARN "))
        .filter(|(_, line)| !line.contains("signed links are off"))
        .collect();
    complaints.sort_by(|a, b| a.1.cmp(&b.1));
    let mut retries = services.log_lines("backing off");
    // Lines open with their timestamp: in time order across the replicas.
    retries.sort_by(|a, b| a.1.cmp(&b.1));

    let passed = tally.errors == 0
        && lost.is_empty()
        && orphans == 0
        && expiring_left == 0
        && panics.is_empty()
        && exits.is_empty();

    // The report.
    let at = |instant: Instant| instant.saturating_duration_since(load_started).as_secs_f64();
    let ports = Garage::ports(common.s3_port, NODES);
    let mut out = report::header("cluster run");
    let _ = writeln!(
        out,
        "services: own PostgreSQL 15 cluster (127.0.0.1:{}); own Garage cluster of {NODES} nodes, replication factor 3 \
         (S3, RPC and admin ports 127.0.0.1:{}-{}), each node the others' bootstrap peer; \
         {REPLICAS} mediavault serve replicas (release), reaper every 10 s each",
        common.postgres_port,
        ports.start,
        ports.end - 1
    );
    for (replica, endpoint) in endpoints.iter().enumerate() {
        let _ = writeln!(
            out,
            "  replica {}: S3 through a failover proxy ({endpoint}) preferring node {}, then the others in turn, \
             each only while its /health answers 200",
            replica + 1,
            replica + 1
        );
    }
    let _ = writeln!(
        out,
        "load: {} ops/s ({}), uploads of {}..{} log-uniform, half to an app that keeps them, half to one with \
         retention {retention}; requests to the replicas in turn; seed {}; no retries",
        args.rate,
        MIX.describe(),
        report::bytes(args.min_size as u64),
        report::bytes(args.max_size as u64),
        args.seed
    );
    let _ = writeln!(
        out,
        "machine load average (1, 5, 15 min): {loadavg_before} as the load started, {loadavg_after} as it ended"
    );
    let _ = writeln!(out, "\nnode losses (SIGKILL):");
    for loss in &losses {
        let _ = writeln!(
            out,
            "  node {}: killed at +{:.1} s with {} multipart uploads in flight{}, down {:.1} s, \
             S3 answering {:.1} s after its start, every node seeing every other {:.1} s later",
            loss.node + 1,
            at(loss.killed),
            loss.multipart,
            match loss.node < REPLICAS {
                true => format!(" on replica {}", loss.node + 1),
                false => String::new(),
            },
            (loss.restarted - loss.killed).as_secs_f64(),
            (loss.answering - loss.restarted).as_secs_f64(),
            (loss.whole - loss.answering).as_secs_f64()
        );
    }
    let _ = writeln!(
        out,
        "\nby phase (p50 / p99 / max in ms; failed counts every request that did not succeed):"
    );
    let _ = writeln!(
        out,
        "  {:<26} {:>13} {:>6} {:>7}   {:<22} {:<22}",
        "phase", "time (s)", "ops", "failed", "reads", "writes"
    );
    let within = |records: &mut dyn Iterator<Item = &Phase>| -> Vec<&Record> {
        let spans: Vec<(Instant, Instant)> = records.map(|p| (p.from, p.to)).collect();
        tally
            .records
            .iter()
            .filter(|r| {
                spans
                    .iter()
                    .any(|(from, to)| r.started >= *from && r.started < *to)
            })
            .collect()
    };
    for phase in &phases {
        let time = format!("{:>6.1}-{:<6.1}", at(phase.from), at(phase.to));
        let records = within(&mut std::iter::once(phase));
        out.push_str(&phase_row(&phase.name, &time, &records));
    }
    for (name, degraded) in [("all steady phases", false), ("all degraded phases", true)] {
        let records = within(&mut phases.iter().filter(|p| p.degraded == degraded));
        out.push_str(&phase_row(name, "", &records));
    }
    let _ = writeln!(out);
    out.push_str(&outcome.summary());
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for record in &tally.records {
        if let Some(failure) = &record.failure {
            *by_kind
                .entry(
                    format!("replica {} {:?} {}", record.server + 1, record.op, failure.kind())
                        .to_lowercase(),
                )
                .or_default() += 1;
        }
    }
    let _ = writeln!(
        out,
        "failed requests   {}{}",
        tally.errors,
        by_kind
            .iter()
            .map(|(kind, n)| format!("; {kind}: {n}"))
            .collect::<String>()
    );
    for example in tally.examples.iter().take(10) {
        let _ = writeln!(out, "  {}", report::clip(example, 300));
    }
    if outcome.saturated > 0 {
        let _ = writeln!(
            out,
            "rate held back    {} times ({} ops in flight)",
            outcome.saturated,
            load::MAX_IN_FLIGHT
        );
    }
    for replica in 0..REPLICAS {
        if let Some(proxy) = services.garage.proxy(replica) {
            let counts = proxy.connections();
            let _ = writeln!(
                out,
                "replica {} S3 connections: {} (refused by every node: {})",
                replica + 1,
                (0..NODES)
                    .map(|k| format!("node {} {}", (replica + k) % NODES + 1, counts[k]))
                    .collect::<Vec<_>>()
                    .join(", "),
                proxy.refused()
            );
        }
    }
    let _ = writeln!(
        out,
        "store retries     {} store requests retried by the replicas' S3 client{}",
        retries.len(),
        (1..=REPLICAS)
            .map(|n| format!(
                "; replica {n}: {}",
                retries.iter().filter(|(server, _)| *server == n).count()
            ))
            .collect::<String>()
    );
    // A log line as "+T s replica N: what", T from the load's start.
    let since = |line: &str, server: usize| {
        let mut words = line.splitn(2, char::is_whitespace);
        let when = words
            .next()
            .and_then(|stamp| chrono::DateTime::parse_from_rfc3339(stamp).ok())
            .map(|stamp| (stamp.with_timezone(&chrono::Utc) - load_started_at).as_seconds_f64())
            .map_or_else(String::new, |secs| format!("+{secs:.1} s "));
        let what = words.next().unwrap_or(line).trim();
        format!("{when}replica {server}: {}", report::clip(what, 400))
    };
    for (server, line) in retries.iter().take(8) {
        let _ = writeln!(out, "  {}", since(line, *server));
    }
    let _ = writeln!(
        out,
        "server errors     {} lines logged at ERROR or WARN by the replicas",
        complaints.len()
    );
    for (server, line) in complaints.iter().take(8) {
        let _ = writeln!(out, "  {}", since(line, *server));
    }
    let acknowledged = tally.stored.len();
    let _ = writeln!(
        out,
        "acknowledged      {acknowledged} uploads: {} to the lasting app, {} to the expiring one",
        tally.stored.iter().filter(|s| s.app == LASTING).count(),
        expiring.len()
    );
    let _ = writeln!(
        out,
        "verified          {} of {} lasting uploads not deleted read back byte-exact (download and /info)",
        kept.len() - lost.len(),
        kept.len()
    );
    let _ = writeln!(out, "lost              {}", lost.len());
    for (id, failure) in lost.iter().take(10) {
        let _ = writeln!(out, "  {id}: {}", report::clip(&failure.to_string(), 300));
    }
    let _ = writeln!(
        out,
        "expiring app      {} of {} left {:.0} s after the load (must be 0)",
        expiring_left,
        expiring.len(),
        drain_started.elapsed().as_secs_f64()
    );
    let _ = writeln!(
        out,
        "rows / blobs      {} / {} (and {listed_but_gone} deleted blobs still listed by a node that was down, \
         404 to a HEAD)",
        rows.len(),
        blobs.len()
    );
    let _ = writeln!(
        out,
        "orphans           {orphans} (rows without blob {rows_without_blob}, blobs without row {blobs_without_row}, \
         rows nothing acknowledged {}, of them from failed uploads {of_failed_uploads})",
        unexplained_rows.len()
    );
    for pass in &reaper_passes {
        let _ = writeln!(out, "reaper pass       {}", report::clip(pass, 300));
    }
    let _ = writeln!(out, "server panics     {}", panics.len());
    for line in panics.iter().take(5) {
        let _ = writeln!(out, "  {}", report::clip(line, 300));
    }
    for exit in &exits {
        let _ = writeln!(out, "server {exit}");
    }
    let _ = writeln!(
        out,
        "whole run         {:.0} s",
        run_started.elapsed().as_secs_f64()
    );
    let _ = writeln!(out, "result: {}", if passed { "PASS" } else { "FAIL" });
    report::publish(common, "cluster", &out)?;
    drop(servers);
    Ok(passed)
}

/// The schedule: a steady stretch, then for each node to kill: SIGKILL
/// (once a multipart upload is under way, see `in_flight`), `downtime`,
/// start it again, wait for the cluster to be whole, and another steady
/// stretch. Returns the phases and the losses.
async fn lose_nodes(
    services: &mut Services,
    args: &ClusterArgs,
    gauge: &load::Gauge,
    load_started: Instant,
) -> anyhow::Result<(Vec<Phase>, Vec<Loss>)> {
    let mut phases = Vec::new();
    let mut losses = Vec::new();
    // The steady stretch under way: its name and start.
    let (mut steady, mut from) = ("all up".to_owned(), load_started);
    for &node in &args.kill {
        let n = node - 1;
        tokio::time::sleep_until((from + args.steady).into()).await;
        let multipart = in_flight(gauge, n).await;
        let killed = Instant::now();
        services.garage.kill_node(n);
        eprintln!(
            "cluster: node {node} SIGKILLed at +{:.1} s, {multipart} multipart uploads in flight",
            killed.duration_since(load_started).as_secs_f64()
        );
        phases.push(Phase {
            name: steady,
            from,
            to: killed,
            degraded: false,
        });
        tokio::time::sleep(args.downtime).await;
        let restarted = Instant::now();
        services.garage.start_node(n).await?;
        let answering = Instant::now();
        services.garage.wait_whole().await?;
        let whole = Instant::now();
        eprintln!(
            "cluster: node {node} back after {:.1} s, cluster whole {:.1} s later",
            answering.duration_since(killed).as_secs_f64(),
            whole.duration_since(answering).as_secs_f64()
        );
        phases.push(Phase {
            name: format!("node {node} down"),
            from: killed,
            to: answering,
            degraded: true,
        });
        phases.push(Phase {
            name: format!("node {node} rejoining"),
            from: answering,
            to: whole,
            degraded: true,
        });
        losses.push(Loss {
            node: n,
            multipart,
            killed,
            restarted,
            answering,
            whole,
        });
        (steady, from) = (format!("all up after node {node}"), whole);
    }
    tokio::time::sleep_until((from + args.steady).into()).await;
    phases.push(Phase {
        name: steady,
        from,
        to: Instant::now(),
        degraded: false,
    });
    Ok((phases, losses))
}

/// The machine's load averages, from /proc/loadavg: other work on the
/// machine weighs on every latency measured.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// A server that died on its own is a defect: note it with its log.
fn note_exits(servers: &mut [ServeProcess], exits: &mut Vec<String>) {
    for server in servers {
        if let Some(status) = server.exited() {
            let note = format!(
                "pid {} exited by itself ({status}):\n{}",
                server.pid(),
                server.log_tail(30)
            );
            if !exits.contains(&note) {
                exits.push(note);
            }
        }
    }
}

/// A line of the table by phase.
fn phase_row(name: &str, time: &str, records: &[&Record]) -> String {
    format!(
        "  {name:<26} {time:>13} {:>6} {:>7}   {:<22} {:<22}\n",
        records.len(),
        records.iter().filter(|r| r.failure.is_some()).count(),
        latencies(records, true),
        latencies(records, false)
    )
}

/// Waits (up to `AIM_WITHIN`) for a multipart upload in flight that loses
/// requests when node `n` dies: on the replica that prefers the node, whose
/// part uploads then go to it; for a node no replica prefers, on any
/// replica, whose blocks Garage then writes to it. Returns how many are in
/// flight.
async fn in_flight(gauge: &load::Gauge, n: usize) -> usize {
    let count = || match n < REPLICAS {
        true => gauge.multipart(n),
        false => (0..REPLICAS).map(|r| gauge.multipart(r)).sum(),
    };
    let deadline = Instant::now() + AIM_WITHIN;
    while count() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    count()
}

/// "p50 / p99 / max" in ms of the reads (or writes) among `records`, and how many.
fn latencies(records: &[&Record], reads: bool) -> String {
    let mut took: Vec<Duration> = records
        .iter()
        .filter(|r| r.op.is_read() == reads && r.failure.is_none())
        .map(|r| r.took)
        .collect();
    let n = took.len();
    let ms = |d: Option<Duration>| d.map_or(0, |d| d.as_millis());
    let p50 = load::quantile(&mut took, 0.50);
    let p99 = load::quantile(&mut took, 0.99);
    let max = took.last().copied();
    format!("{} / {} / {} ({n})", ms(p50), ms(p99), ms(max))
}
