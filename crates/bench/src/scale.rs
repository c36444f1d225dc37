//! `mediavault-bench scale`: how cost grows with the size of the Postgres
//! tables. Two fresh databases get the same run: "empty", which holds only
//! the media due to the reaper (1% of `--rows`), and "full", which holds
//! `--rows` media across `--apps` apps (each with a token) of which 1% are
//! due. The rows are written by SQL (`generate_series`), with wrapped keys
//! and blobs that are never read; the latency figures come from real uploads
//! through a release `mediavault serve` on the same Garage as production.
//!
//! Measured on each: start-up to listening, upload and `/info` latency at
//! one client, the reaper's database work per claimed medium (claim, shred,
//! row delete, with blobs in memory so that Garage does not hide it), the
//! operator's CLI commands and admin listings, and the database's size.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use mediavault_storage::{BlobConfig, Defaults, Keyring, Vault, VaultConfig, now_millis};
use serde_json::json;

use crate::clients::{MediaClient, png_file, stamped};
use crate::report::{Figure, RunStart, Target};
use crate::scenarios::closed_loop;
use crate::server::{self, Server};
use crate::stores::{Backend, Stores};

#[derive(Args, Clone)]
pub struct ScaleArgs {
    /// Media rows of the full database.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Apps the rows are spread across.
    #[arg(long, default_value_t = 1000)]
    apps: u64,
    /// One row in this many is due to the reaper (expired).
    #[arg(long, default_value_t = 100)]
    due_every: u64,
    /// How the full database's rows lie in the table's pages.
    #[arg(long, value_enum, default_value_t = Layout::ByApp)]
    layout: Layout,
    /// Uploads through the server, one at a time, for the latency figures.
    #[arg(long, default_value_t = 2000)]
    uploads: usize,
    /// `/info` requests of each kind, one at a time.
    #[arg(long, default_value_t = 2000)]
    infos: usize,
    /// Rounds of the latency measures on each database, alternating; the
    /// best of each figure counts.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Media the reaper claims for the claim-rate figure (at most the due ones).
    #[arg(long, default_value_t = 20_000)]
    claims: u64,
    /// The `mediavault` binary (default: the one beside this one).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Where the results go.
    #[arg(long, default_value = "bench/results")]
    results: PathBuf,
    /// Leaves both databases (and their objects) in place at the end and
    /// prints their URLs, to profile statements on them (`EXPLAIN`); drop
    /// them by hand after (`DROP DATABASE … WITH (FORCE)`).
    #[arg(long)]
    keep_databases: bool,
}

/// Where the rows written by SQL lie in the `media` table's pages, which
/// sets how many pages the reaper's work touches.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Layout {
    /// As the fill's join writes them: each app's rows together, so that
    /// the due rows (one in `due_every` of each app's) lie one to a page,
    /// as rows deleted on request would.
    ByApp,
    /// In order of expiry, as uploads over the retention period write
    /// them: the due rows, the oldest, lie together.
    ByExpiry,
}

/// The reaper's batch (`mediavault_reaper`'s own).
const CLAIM_BATCH: u32 = 500;
/// Starts of the server timed on each database; the median counts.
const STARTS: usize = 3;
/// Runs of each operator command; the median counts.
const COMMAND_RUNS: usize = 3;
/// At least 32 characters, as `admin.token` requires.
const ADMIN_TOKEN: &str = "scale-benchmark-admin-token-0123456789";

/// What one database gave.
struct Measured {
    rows: u64,
    fill_s: f64,
    start_s: f64,
    starts_s: Vec<f64>,
    upload_ms: [f64; 2],
    info_recent_ms: [f64; 2],
    /// `/info` of rows written by SQL (none on the empty database).
    info_spread_ms: Option<[f64; 2]>,
    claims_per_s: f64,
    claimed: u64,
    /// WAL the reaper's batches wrote per claimed medium: KiB, and
    /// full-page images.
    reaper_wal_kib: f64,
    reaper_fpi: f64,
    /// The reaper's rewrite of `media_keys`, which every read waits for.
    rewrite_s: f64,
    commands_s: Vec<(&'static str, f64)>,
    /// `mediavault reap --sweep`: seconds, and the process's peak RSS (MiB).
    sweep_s: f64,
    sweep_peak_mib: f64,
    admin_ms: Vec<(&'static str, f64)>,
    database_bytes: f64,
    media_bytes: f64,
    keys_bytes: f64,
}

pub async fn scale(args: &ScaleArgs, command_line: &str) -> anyhow::Result<()> {
    let binary = match &args.server {
        Some(binary) => binary.clone(),
        None => server::default_binary()?,
    };
    let start = RunStart::now(command_line);
    let due = args.rows / args.due_every.max(1);
    // Both databases exist together, so that the rounds of measures can
    // alternate between them and a change of the machine's load falls on
    // both alike.
    let mut databases = Vec::new();
    for (name, rows, due_every) in [("empty", due, 1), ("full", args.rows, args.due_every)] {
        eprintln!("== scale: {name} ({rows} media, 1 in {due_every} due)");
        let stores = Stores::create(Backend::PostgresS3).await?;
        let prepared = prepare(args, &binary, &stores, rows, due_every).await;
        let failed = prepared.is_err();
        databases.push((stores, prepared));
        if failed {
            break;
        }
    }
    let result = measure_both(args, &binary, &databases).await;
    for (stores, prepared) in databases {
        if result.is_err() || prepared.is_err() {
            let log = stores.dir().join("server.log");
            eprintln!("{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        if args.keep_databases {
            eprintln!("kept: {}", setting(&stores, "MEDIAVAULT__DATABASE__URL")?);
        } else {
            stores.cleanup().await?;
        }
    }
    let [empty, full] = result?;

    let mut figures = vec![
        Figure::alone("full: rows written by SQL, with indexes", "s", full.fill_s, None),
        Figure::against(
            "start-up to listening",
            "s",
            full.start_s,
            empty.start_s,
            Some(Target::AtMost(2.0)),
        ),
    ];
    let mut latencies = vec![
        (
            "upload 16 KiB, 1 client, p50",
            full.upload_ms[0],
            empty.upload_ms[0],
        ),
        (
            "upload 16 KiB, 1 client, p99",
            full.upload_ms[1],
            empty.upload_ms[1],
        ),
        (
            "/info of recent uploads, p50",
            full.info_recent_ms[0],
            empty.info_recent_ms[0],
        ),
        (
            "/info of recent uploads, p99",
            full.info_recent_ms[1],
            empty.info_recent_ms[1],
        ),
    ];
    if let Some([p50, p99]) = full.info_spread_ms {
        latencies.extend([
            ("/info of any stored media, p50", p50, empty.info_recent_ms[0]),
            ("/info of any stored media, p99", p99, empty.info_recent_ms[1]),
        ]);
    }
    // Each: name, unit, full, empty, target.
    let mut compared: Vec<(String, &str, f64, f64, Option<Target>)> = latencies
        .into_iter()
        .map(|(name, full, empty)| (name.to_owned(), "ms", full, empty, Some(Target::RatioAtMost(1.2))))
        .collect();
    compared.push((
        "reaper database work (claim, shred, delete)".into(),
        "media/s",
        full.claims_per_s,
        empty.claims_per_s,
        Some(Target::RatioAtLeast(0.83)),
    ));
    compared.push((
        "reaper WAL per claimed medium".into(),
        "KiB",
        full.reaper_wal_kib,
        empty.reaper_wal_kib,
        None,
    ));
    compared.push((
        "reaper WAL full-page images per claimed medium".into(),
        "images",
        full.reaper_fpi,
        empty.reaper_fpi,
        None,
    ));
    compared.push((
        "key table rewrite (reads and writes wait)".into(),
        "s",
        full.rewrite_s,
        empty.rewrite_s,
        None,
    ));
    for ((name, full), (_, empty)) in full.commands_s.iter().zip(&empty.commands_s) {
        compared.push((
            format!("`mediavault {name}`"),
            "s",
            *full,
            *empty,
            Some(Target::AtMost(2.0)),
        ));
    }
    compared.push((
        "`mediavault reap --sweep`".into(),
        "s",
        full.sweep_s,
        empty.sweep_s,
        Some(Target::AtMost(2.0)),
    ));
    compared.push((
        "`mediavault reap --sweep`, peak RSS".into(),
        "MiB",
        full.sweep_peak_mib,
        empty.sweep_peak_mib,
        Some(Target::RatioAtMost(1.2)),
    ));
    for ((name, full), (_, empty)) in full.admin_ms.iter().zip(&empty.admin_ms) {
        compared.push((
            format!("admin {name}"),
            "ms",
            *full,
            *empty,
            Some(Target::AtMost(200.0)),
        ));
    }
    for (name, unit, full, empty, target) in compared {
        figures.push(Figure::against(name, unit, full, empty, target));
    }
    let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
    let per_million = |bytes: f64, rows: u64| mib(bytes) / (rows as f64 / 1e6);
    figures.extend([
        Figure::against(
            "database size",
            "MiB",
            mib(full.database_bytes),
            mib(empty.database_bytes),
            None,
        ),
        Figure::alone(
            "media table with indexes, per million rows",
            "MiB",
            per_million(full.media_bytes, full.rows),
            None,
        ),
        Figure::alone(
            "media_keys table with indexes, per million rows",
            "MiB",
            per_million(full.keys_bytes, full.rows),
            None,
        ),
        Figure::alone(
            "database, per million media rows",
            "MiB",
            per_million(full.database_bytes - empty.database_bytes, full.rows - empty.rows),
            None,
        ),
    ]);
    let samples = json!({
        "rows": { "full": full.rows, "empty": empty.rows },
        "apps": args.apps,
        "due_every": args.due_every,
        "layout": format!("{:?}", args.layout),
        "uploads": args.uploads,
        "infos": args.infos,
        "rounds": args.rounds,
        "claimed": { "full": full.claimed, "empty": empty.claimed },
        "starts_s": { "full": full.starts_s, "empty": empty.starts_s },
        "bytes": {
            "full": { "database": full.database_bytes, "media": full.media_bytes, "media_keys": full.keys_bytes },
            "empty": { "database": empty.database_bytes, "media": empty.media_bytes, "media_keys": empty.keys_bytes },
        },
    });
    let report = start.report(
        format!("scale-{}", args.rows),
        format!(
            "raw = the empty database ({} due media only); 1 in {} of the full one's media due, laid out {:?}",
            empty.rows, args.due_every, args.layout
        ),
        Vec::new(),
        figures,
        samples,
    );
    let path = report.write(&args.results)?;
    println!("{}", report.table());
    println!("   raw results: {}\n", path.display());
    Ok(())
}

fn setting<'a>(stores: &'a Stores, key: &str) -> anyhow::Result<&'a str> {
    stores
        .server_env
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .with_context(|| format!("{key} in the stores' settings"))
}

/// A database filled and ready to measure.
struct Prepared {
    url: String,
    app_id: String,
    token: String,
    rows: u64,
    fill_s: f64,
}

/// Server settings of every start: the reaper would take the due rows
/// while they are measured; the admin API answers only with a token.
fn server_settings() -> [(String, String); 2] {
    [
        ("MEDIAVAULT__REAPER__ENABLED", "false"),
        ("MEDIAVAULT__ADMIN__TOKEN", ADMIN_TOKEN),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
}

async fn prepare(
    args: &ScaleArgs,
    binary: &Path,
    stores: &Stores,
    rows: u64,
    due_every: u64,
) -> anyhow::Result<Prepared> {
    let url = setting(stores, "MEDIAVAULT__DATABASE__URL")?.to_owned();
    let (app_id, token) = server::app_and_token(binary, stores)?;
    // A first start records the key's fingerprint, which rows written by
    // SQL (their wrapped keys random bytes) could not prove.
    drop(Server::start_with(binary, stores, &server_settings())?);
    let fill_started = Instant::now();
    psql_script(&url, &fill_sql(rows, args.apps, due_every, args.layout, &app_id))?;
    psql_script(&url, "VACUUM ANALYZE")?;
    let fill_s = fill_started.elapsed().as_secs_f64();
    eprintln!("   {rows} rows written in {fill_s:.1} s");
    Ok(Prepared {
        url,
        app_id,
        token,
        rows,
        fill_s,
    })
}

/// What one round on one database gave.
struct Round {
    starts_s: Vec<f64>,
    upload_ms: [f64; 2],
    info_recent_ms: [f64; 2],
    info_spread_ms: Option<[f64; 2]>,
    admin_ms: Vec<(&'static str, f64)>,
}

/// `--rounds` rounds on each database in turn, the best of each figure
/// kept; then, once, the reaper, the operator's commands and the sizes.
async fn measure_both(
    args: &ScaleArgs,
    binary: &Path,
    databases: &[(Stores, anyhow::Result<Prepared>)],
) -> anyhow::Result<[Measured; 2]> {
    let mut rounds: [Vec<Round>; 2] = [Vec::new(), Vec::new()];
    for round in 0..args.rounds {
        for (i, (stores, prepared)) in databases.iter().enumerate() {
            let prepared = prepared.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
            eprintln!("== round {} on {} media", round + 1, prepared.rows);
            rounds[i].push(measure_round(args, binary, stores, prepared).await?);
        }
    }
    let mut measured = Vec::new();
    for ((stores, prepared), rounds) in databases.iter().zip(rounds) {
        let prepared = prepared.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        measured.push(finish(args, binary, stores, prepared, rounds).await?);
    }
    let [empty, full]: [Measured; 2] = measured
        .try_into()
        .map_err(|_| anyhow::anyhow!("two databases"))?;
    Ok([empty, full])
}

async fn measure_round(
    args: &ScaleArgs,
    binary: &Path,
    stores: &Stores,
    prepared: &Prepared,
) -> anyhow::Result<Round> {
    let settings = server_settings();
    let mut starts_s = Vec::new();
    let mut server = None;
    for _ in 0..STARTS {
        drop(server.take());
        let started = Instant::now();
        server = Some(Server::start_with(binary, stores, &settings)?);
        starts_s.push(started.elapsed().as_secs_f64());
    }
    let mut server = server.context("no start")?;
    eprintln!("   start-up {starts_s:.2?} s");

    let media = MediaClient::new(&server.base_url, &prepared.app_id, &prepared.token)?;
    let file = png_file(16 << 10);
    for _ in 0..20 {
        media.upload(stamped(&file)).await?;
    }
    let ids = Arc::new(Mutex::new(Vec::with_capacity(args.uploads)));
    let uploads = {
        let (media, ids) = (media.clone(), ids.clone());
        closed_loop(args.uploads, 1, move |_| {
            let (media, ids, file) = (media.clone(), ids.clone(), stamped(&file));
            async move {
                let id = media.upload(file).await?;
                ids.lock().expect("ids").push(id);
                Ok(())
            }
        })
        .await?
    };
    check(&uploads)?;
    let upload_ms = [uploads.ms(0.5), uploads.ms(0.99)];
    eprintln!("   upload p50 {:.2} ms, p99 {:.2} ms", upload_ms[0], upload_ms[1]);

    let recent = ids.lock().expect("ids").clone();
    let info_recent_ms = infos(&media, recent, args.infos).await?;
    eprintln!(
        "   /info recent p50 {:.2} ms, p99 {:.2} ms",
        info_recent_ms[0], info_recent_ms[1]
    );
    let spread = psql_lines(
        &prepared.url,
        &format!(
            "SELECT id FROM media WHERE app_id = '{}' AND state = 'ready' AND expires_at > {} \
             AND blob_key LIKE 'media/scale-%' ORDER BY random() LIMIT {}",
            prepared.app_id,
            now_millis() + 600_000,
            args.infos
        ),
    )?;
    let info_spread_ms = if spread.is_empty() {
        None
    } else {
        let ms = infos(&media, spread, args.infos).await?;
        eprintln!("   /info any p50 {:.2} ms, p99 {:.2} ms", ms[0], ms[1]);
        Some(ms)
    };

    let mut admin_ms = Vec::new();
    let http = reqwest::Client::new();
    let app_id = &prepared.app_id;
    for (name, path) in [
        ("GET /admin/apps", "/admin/apps".to_owned()),
        (
            "GET /admin/apps/{id}/stats",
            format!("/admin/apps/{app_id}/stats"),
        ),
        (
            "GET /admin/apps/{id}/tokens",
            format!("/admin/apps/{app_id}/tokens"),
        ),
    ] {
        let mut times = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let response = http
                .get(format!("{}{path}", server.base_url))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await?;
            let status = response.status();
            response.bytes().await?;
            anyhow::ensure!(status.is_success(), "{name} answered {status}");
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        admin_ms.push((name, median(&mut times)));
    }
    eprintln!("   admin {admin_ms:.1?}");
    server.check_running()?;
    Ok(Round {
        starts_s,
        upload_ms,
        info_recent_ms,
        info_spread_ms,
        admin_ms,
    })
}

/// The best of the rounds, and what is measured once.
async fn finish(
    args: &ScaleArgs,
    binary: &Path,
    stores: &Stores,
    prepared: &Prepared,
    rounds: Vec<Round>,
) -> anyhow::Result<Measured> {
    let best = |pick: &dyn Fn(&Round) -> [f64; 2]| {
        let mut best = [f64::INFINITY; 2];
        for round in &rounds {
            let [p50, p99] = pick(round);
            best = [best[0].min(p50), best[1].min(p99)];
        }
        best
    };
    let upload_ms = best(&|r| r.upload_ms);
    let info_recent_ms = best(&|r| r.info_recent_ms);
    let info_spread_ms = rounds
        .iter()
        .all(|r| r.info_spread_ms.is_some())
        .then(|| best(&|r| r.info_spread_ms.unwrap_or_default()));
    let mut starts_s: Vec<f64> = rounds.iter().flat_map(|r| r.starts_s.clone()).collect();
    let start_s = median(&mut starts_s);
    let admin_ms = rounds[0]
        .admin_ms
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let least = rounds
                .iter()
                .map(|r| r.admin_ms[i].1)
                .fold(f64::INFINITY, f64::min);
            (*name, least)
        })
        .collect();

    let mut commands_s = Vec::new();
    let app_id = prepared.app_id.as_str();
    for (name, command) in [
        ("apps stats", vec!["apps", "stats", "--app", app_id]),
        ("keys usage", vec!["keys", "usage"]),
        ("apps list", vec!["apps", "list"]),
        ("tokens list", vec!["tokens", "list", "--app", app_id]),
    ] {
        let mut times = Vec::new();
        for _ in 0..COMMAND_RUNS {
            let started = Instant::now();
            server::cli_with(binary, stores, &[], &command)?;
            times.push(started.elapsed().as_secs_f64());
        }
        commands_s.push((name, median(&mut times)));
    }
    eprintln!("   {} media: commands {commands_s:.2?}", prepared.rows);
    // The orphan sweep lists the blobs (the uploads of the rounds, all of
    // them referenced) and looks them up among the rows.
    let mut sweeps = Vec::new();
    for _ in 0..COMMAND_RUNS {
        sweeps.push(server::cli_peak(binary, stores, &["reap", "--sweep"])?);
    }
    let sweep_s = median(&mut sweeps.iter().map(|s| s.0).collect::<Vec<_>>());
    let sweep_peak_mib = median(&mut sweeps.iter().map(|s| s.1).collect::<Vec<_>>());
    eprintln!("   orphan sweep: {sweep_s:.2} s, peak RSS {sweep_peak_mib:.1} MiB");

    let reaper = reaper_work(&prepared.url, stores, args.claims).await?;
    let (claimed, claims_per_s, rewrite_s) = (reaper.claimed, reaper.per_s, reaper.rewrite_s);
    let per_claimed = |value: f64| value / claimed.max(1) as f64;
    let (reaper_wal_kib, reaper_fpi) = (per_claimed(reaper.wal[0]) / 1024.0, per_claimed(reaper.wal[1]));
    eprintln!("   reaper: {claimed} media at {claims_per_s:.0}/s; key table rewritten in {rewrite_s:.1} s");
    eprintln!("   reaper WAL: {reaper_wal_kib:.1} KiB and {reaper_fpi:.1} full-page images a medium");

    let sizes = psql_numbers(
        &prepared.url,
        "SELECT pg_database_size(current_database()) || ' ' || pg_total_relation_size('media') \
         || ' ' || (SELECT SUM(pg_total_relation_size(inhrelid)) FROM pg_inherits \
         WHERE inhparent = 'media_keys'::regclass)",
        3,
    )?;
    Ok(Measured {
        rows: prepared.rows,
        fill_s: prepared.fill_s,
        start_s,
        starts_s,
        upload_ms,
        info_recent_ms,
        info_spread_ms,
        claims_per_s,
        claimed,
        reaper_wal_kib,
        reaper_fpi,
        rewrite_s,
        commands_s,
        sweep_s,
        sweep_peak_mib,
        admin_ms,
        database_bytes: sizes[0],
        media_bytes: sizes[1],
        keys_bytes: sizes[2],
    })
}

fn check(timing: &crate::scenarios::Timing) -> anyhow::Result<()> {
    if timing.failures > 0 {
        bail!(
            "{} requests failed, the first: {}",
            timing.failures,
            timing.first_failure.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}

/// `count` `/info` requests, one at a time, over `ids` in turn: p50, p99 (ms).
async fn infos(media: &MediaClient, ids: Vec<String>, count: usize) -> anyhow::Result<[f64; 2]> {
    let ids = Arc::new(ids);
    let media = media.clone();
    let timing = closed_loop(count, 1, move |i| {
        let (media, ids) = (media.clone(), ids.clone());
        async move { media.info(&ids[i % ids.len()]).await }
    })
    .await?;
    check(&timing)?;
    Ok([timing.ms(0.5), timing.ms(0.99)])
}

/// What the reaper's work gave.
struct ReaperWork {
    claimed: u64,
    /// Media a second over the batches.
    per_s: f64,
    /// WAL the batches wrote: bytes, and full-page images.
    wal: [f64; 2],
    /// The rewrite of the key table.
    rewrite_s: f64,
}

/// Reaper batches until `limit` media are claimed or none are due: how
/// many, media per second of the whole, and the WAL they wrote. Blobs are
/// in memory: the rows written by SQL have none, and what is timed is the
/// database's part. Then the rewrite of the key table (`VACUUM FULL
/// media_keys`), in seconds.
async fn reaper_work(url: &str, stores: &Stores, limit: u64) -> anyhow::Result<ReaperWork> {
    let open = || async {
        Vault::open(VaultConfig {
            database_url: url.parse()?,
            blobs: BlobConfig::local("memory://"),
            keys: Keyring::parse(setting(stores, "MEDIAVAULT__CRYPTO__KEYS")?)?,
            defaults: Defaults::default(),
            stale_upload_after: Duration::from_secs(3600),
        })
        .await
        .map_err(anyhow::Error::from)
    };
    let vault = open().await?;
    let now = now_millis();
    let wal_before = wal_written(url)?;
    let started = Instant::now();
    let mut claimed = 0;
    while claimed < limit {
        let counts = vault.reap_batch(now, CLAIM_BATCH).await?;
        claimed += counts.claimed;
        if counts.claimed < u64::from(CLAIM_BATCH) {
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // A backend adds its WAL to `pg_stat_wal` when it reports its
    // statistics, at most once a second, and at the latest when it exits:
    // the vault's connections are closed first.
    vault.close().await;
    wait_for_no_other_connections(url)?;
    let wal_after = wal_written(url)?;
    let vault = open().await?;
    let started = Instant::now();
    anyhow::ensure!(
        vault.rewrite_key_table(Duration::from_secs(10)).await?,
        "the key table's rewrite found its turn taken"
    );
    let rewrite_s = started.elapsed().as_secs_f64();
    vault.close().await;
    Ok(ReaperWork {
        claimed,
        per_s: claimed as f64 / elapsed,
        wal: [wal_after[0] - wal_before[0], wal_after[1] - wal_before[1]],
        rewrite_s,
    })
}

/// Waits until no connection but psql's own is open to `url`'s database
/// (a closed pool's backends exit a moment after it is closed).
fn wait_for_no_other_connections(url: &str) -> anyhow::Result<()> {
    const OTHERS: &str = "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()";
    let deadline = Instant::now() + Duration::from_secs(10);
    while psql_numbers(url, OTHERS, 1)?[0] > 0.0 {
        anyhow::ensure!(Instant::now() < deadline, "connections still open after 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The server's WAL written so far, in bytes (from the insert position,
/// exact at any moment), and its full-page images (`pg_stat_wal`, as
/// backends have reported them). Both are the whole server's, so a
/// difference is this run's only where nothing else writes meanwhile.
fn wal_written(url: &str) -> anyhow::Result<[f64; 2]> {
    let values = psql_numbers(
        url,
        "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0') || ' ' || wal_fpi FROM pg_stat_wal",
        2,
    )?;
    Ok([values[0], values[1]])
}

/// The `count` numbers of the first line `query` answers, separated by
/// spaces.
fn psql_numbers(url: &str, query: &str, count: usize) -> anyhow::Result<Vec<f64>> {
    let lines = psql_lines(url, query)?;
    let line = lines.first().with_context(|| format!("no answer to {query}"))?;
    let values: Vec<f64> = line.split(' ').map(str::parse).collect::<Result<_, _>>()?;
    anyhow::ensure!(values.len() == count, "{count} numbers expected, not {line:?}");
    Ok(values)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The full database's rows. Its constraints and indexes (as the
/// migrations made them) are dropped while the rows go in and made again
/// after, which is much faster than keeping them up row by row; the apps'
/// usage counters are then set from the rows, as `apps recount` would.
/// Media ids are numbers like the vault's; blob keys start `media/scale-`.
/// One row of each app's in `due_every` is due to the reaper (expired an hour ago); the others expire within 30
/// days; `layout` says where the due ones lie. The measured app (`bench_app`) is the first of `apps`.
fn fill_sql(rows: u64, apps: u64, due_every: u64, layout: Layout, bench_app: &str) -> String {
    let now = now_millis();
    // The due rows first, in order of expiry, then the others (in the
    // join's order: only where the due rows lie matters to the reaper),
    // or all of them at once.
    let media = match layout {
        Layout::ByApp => media_rows_sql(rows, apps, due_every, now, "true, false", ""),
        Layout::ByExpiry => {
            media_rows_sql(rows, apps, due_every, now, "true", "ORDER BY e")
                + &media_rows_sql(rows, apps, due_every, now, "false", "")
        }
    };
    format!(
        r#"
SET maintenance_work_mem = '512MB';
BEGIN;
INSERT INTO apps (id, name, capi, retention_seconds, max_file_bytes, created_at)
    SELECT gen_random_uuid()::text, 'scale ' || a, true, 2592000, 104857600, {now}
    FROM generate_series(2, {apps}) a;
INSERT INTO tokens (token_sha256, app_id, label, created_at, id)
    SELECT h, id, 'scale', {now}, substr(h, 1, 16)
    FROM (SELECT id, encode(sha256(convert_to('scale-token-' || id, 'UTF8')), 'hex') AS h
          FROM apps WHERE name LIKE 'scale %') t;
CREATE TEMP TABLE scale_apps AS
    SELECT (row_number() OVER (ORDER BY id = '{bench_app}' DESC, id) - 1) AS n, id FROM apps;
CREATE TEMP TABLE scale_constraints AS
    SELECT conrelid::regclass::text AS tbl, conname::text AS name, pg_get_constraintdef(oid) AS def,
           contype::text AS kind
    FROM pg_constraint
    WHERE conrelid IN ('media'::regclass, 'media_keys'::regclass) AND contype IN ('p', 'u', 'f');
-- The definition of a partitioned table's index reads `ON ONLY`, which
-- would make it again without its partitions' indexes.
CREATE TEMP TABLE scale_indexes AS
    SELECT indexname::text AS name, replace(indexdef, ' ON ONLY ', ' ON ') AS indexdef FROM pg_indexes
    WHERE tablename IN ('media', 'media_keys') AND indexname NOT IN (SELECT name FROM scale_constraints);
DO $$ DECLARE r record; BEGIN
    FOR r IN SELECT * FROM scale_constraints ORDER BY kind <> 'f' LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', r.tbl, r.name);
    END LOOP;
    FOR r IN SELECT * FROM scale_indexes LOOP
        EXECUTE format('DROP INDEX %I', r.name);
    END LOOP;
END $$;
{media}INSERT INTO media_keys (media_id, kek_id, wrapped_dek)
    SELECT (1000000000000000000 + i * 2654435761)::text, (SELECT kek_id FROM key_fingerprints LIMIT 1),
           decode(h || h || h || substr(h, 1, 24), 'hex')
    FROM generate_series(1::bigint, {rows}) i CROSS JOIN LATERAL (SELECT md5(i::text) AS h) x;
DO $$ DECLARE r record; BEGIN
    FOR r IN SELECT * FROM scale_constraints WHERE kind <> 'f' LOOP
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', r.tbl, r.name, r.def);
    END LOOP;
    FOR r IN SELECT * FROM scale_indexes LOOP
        EXECUTE r.indexdef;
    END LOOP;
    FOR r IN SELECT * FROM scale_constraints WHERE kind = 'f' LOOP
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', r.tbl, r.name, r.def);
    END LOOP;
END $$;
UPDATE apps SET used_media = u.media, used_bytes = u.bytes
    FROM (SELECT app_id, COUNT(*) AS media, CAST(SUM(reserved_bytes) AS BIGINT) AS bytes FROM media
          WHERE state <> 'deleting' AND reserved_bytes IS NOT NULL GROUP BY app_id) u
    WHERE apps.id = u.app_id;
COMMIT;
"#
    )
}

/// The `INSERT` of those media rows whose being due is among `due` (SQL
/// booleans), in `order`.
fn media_rows_sql(rows: u64, apps: u64, due_every: u64, now: i64, due: &str, order: &str) -> String {
    format!(
        r#"
INSERT INTO media (id, app_id, state, mime_type, filename, size_bytes, sha256, blob_key, format_version,
                   segment_size, salt, nonce_prefix, created_at, expires_at, due_at, reserved_bytes)
    SELECT (1000000000000000000 + i * 2654435761)::text, a.id, 'ready', 'image/png', 'IMG_' || i || '.png',
           16384 + i % 4096, h || h2, 'media/scale-' || h, 1, 65536, decode(h2 || h, 'hex'),
           decode(substr(h, 1, 14), 'hex'), e - 2592000000, e, e, 16384 + i % 4096
    FROM generate_series(1::bigint, {rows}) i
    CROSS JOIN LATERAL (SELECT md5(i::text) AS h, md5((-i)::text) AS h2,
        CASE WHEN (i / {apps}) % {due_every} = 0 THEN {now} - 3600000 - i % 3600000
             ELSE {now} + 3600000 + (i * 7919) % 2592000000 END AS e) x
    JOIN scale_apps a ON a.n = i % {apps}
    WHERE ((i / {apps}) % {due_every} = 0) IN ({due}) {order};
"#
    )
}

/// Runs `sql` (psql's script language) against `url`.
fn psql_script(url: &str, sql: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("psql")
        .args(["-q", "-X", "-v", "ON_ERROR_STOP=1", url])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("running psql")?;
    child
        .stdin
        .take()
        .context("psql's stdin")?
        .write_all(sql.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("psql failed on the script");
    }
    Ok(())
}

/// The rows of `query`, one line each.
fn psql_lines(url: &str, query: &str) -> anyhow::Result<Vec<String>> {
    let output = Command::new("psql")
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", url, "-c", query])
        .output()
        .context("running psql")?;
    if !output.status.success() {
        bail!(
            "psql failed: {query}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect())
}
