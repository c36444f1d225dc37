//! What a run measures, each against the raw store where there is one:
//! large files one at a time, small files at several concurrencies, and the
//! server's memory while many large uploads arrive at once.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use mediavault_fetch::origin::{Answer, Origin};
use serde_json::json;

use crate::clients::{MediaClient, RawClient, png_file, stamped};
use crate::cpu::{CpuSeconds, settle};
use crate::report::{Figure, Target, load_average};
use crate::server::{Server, proc_status_kib};

const MIB: f64 = 1024.0 * 1024.0;

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// Runs `work`; returns its value, wall time, and the CPU time every process
/// group used meanwhile (added to `cpu`).
async fn timed<T>(
    server_pid: u32,
    cpu: &mut CpuSeconds,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, Duration)> {
    let before = CpuSeconds::now(server_pid);
    let started = Instant::now();
    let value = work.await?;
    let elapsed = started.elapsed();
    *cpu = cpu.plus(&CpuSeconds::now(server_pid).since(&before));
    Ok((value, elapsed))
}

/// Opens connections and lets the server settle its pools before anything
/// is timed.
pub async fn warm_up(media: &MediaClient, raw: &RawClient) -> anyhow::Result<()> {
    let file = png_file(16 * 1024);
    for i in 0..16 {
        let id = media.upload(file.clone()).await?;
        media.download(&id, &file).await?;
        media.delete(&id).await?;
        raw.put(&format!("warm-up/{i}"), file.clone()).await?;
        raw.get(&format!("warm-up/{i}"), &file).await?;
        raw.delete(&format!("warm-up/{i}")).await?;
    }
    Ok(())
}

/// Uploads and downloads of one large file, `reps` times each way, through
/// mediavault and raw; the figures are medians.
pub async fn large(
    server_pid: u32,
    media: &MediaClient,
    raw: &RawClient,
    size: usize,
    reps: usize,
) -> anyhow::Result<(Vec<Figure>, serde_json::Value)> {
    let mibs = |d: Duration| size as f64 / MIB / d.as_secs_f64();
    let (mut up, mut down, mut raw_put, mut raw_get) = (vec![], vec![], vec![], vec![]);
    let mut cpu = [CpuSeconds::default(); 4];
    for rep in 0..reps {
        let file = png_file(size);
        let key = format!("large/{rep}");
        // Alternate which side goes first, so drift in the machine's state
        // (page cache, the store's compaction) falls on both alike.
        let media_first = rep % 2 == 0;
        let [cpu_up, cpu_down, cpu_put, cpu_get] = &mut cpu;
        if !media_first {
            raw_put.push(mibs(
                timed(server_pid, cpu_put, raw.put_multipart(&key, file.clone()))
                    .await?
                    .1,
            ));
            raw_get.push(mibs(timed(server_pid, cpu_get, raw.get(&key, &file)).await?.1));
        }
        let (id, elapsed) = timed(server_pid, cpu_up, media.upload(file.clone())).await?;
        up.push(mibs(elapsed));
        down.push(mibs(
            timed(server_pid, cpu_down, media.download(&id, &file)).await?.1,
        ));
        if media_first {
            raw_put.push(mibs(
                timed(server_pid, cpu_put, raw.put_multipart(&key, file.clone()))
                    .await?
                    .1,
            ));
            raw_get.push(mibs(timed(server_pid, cpu_get, raw.get(&key, &file)).await?.1));
        }
        media.delete(&id).await?;
        raw.delete(&key).await?;
        eprintln!(
            "  large {rep}: upload {:.0} MiB/s (raw {:.0}), download {:.0} MiB/s (raw {:.0})",
            up[rep], raw_put[rep], down[rep], raw_get[rep]
        );
    }
    let size_mib = size as f64 / MIB;
    let figures = vec![
        Figure::against(
            format!("upload {size_mib:.0} MiB, median of {reps}"),
            "MiB/s",
            median(&up),
            median(&raw_put),
            Some(Target::RatioAtLeast(0.9)),
        ),
        Figure::against(
            format!("download {size_mib:.0} MiB, median of {reps}"),
            "MiB/s",
            median(&down),
            median(&raw_get),
            // Against one raw stream: the server may read in parallel.
            Some(Target::RatioAtLeast(1.0)),
        ),
    ];
    let per_file = cpu.map(|c| c.per_operation_ms(reps));
    for (what, c) in ["upload", "download", "raw put", "raw get"].iter().zip(&per_file) {
        eprintln!("  large {what}, CPU per file: {}", c.brief("ms"));
    }
    let samples = json!({
        "size_bytes": size,
        "upload_mib_s": up, "raw_put_mib_s": raw_put,
        "download_mib_s": down, "raw_get_mib_s": raw_get,
        "cpu_ms_per_file": {
            "upload": per_file[0], "download": per_file[1], "raw_put": per_file[2], "raw_get": per_file[3],
        },
    });
    Ok((figures, samples))
}

/// One large file uploaded by URL from an HTTP origin on loopback (in this
/// process), against the same file sent directly, `reps` times each; the
/// figure is the by-URL median with the direct one as its baseline. Every
/// stored file is read back and compared, outside the timing. The CPU of
/// the by-URL side includes the origin's, as it runs in this process.
pub async fn by_url(
    server_pid: u32,
    media: &MediaClient,
    size: usize,
    reps: usize,
) -> anyhow::Result<(Vec<Figure>, serde_json::Value)> {
    let mibs = |d: Duration| size as f64 / MIB / d.as_secs_f64();
    let serving: Arc<Mutex<Bytes>> = Arc::default();
    let served = serving.clone();
    let origin = Origin::start(move |_| Answer::file(served.lock().unwrap().clone())).await;
    let (mut fetched, mut direct) = (vec![], vec![]);
    let mut cpu = [CpuSeconds::default(); 2];
    for rep in 0..reps {
        let file = png_file(size);
        *serving.lock().unwrap() = file.clone();
        let url = origin.url(&format!("/bench-{rep}.png"));
        let [cpu_url, cpu_direct] = &mut cpu;
        // Alternate which side goes first, as `large` does.
        let url_first = rep % 2 == 0;
        let mut ids = Vec::new();
        for side in if url_first { [true, false] } else { [false, true] } {
            if side {
                let (id, elapsed) = timed(server_pid, cpu_url, media.upload_by_url(&url)).await?;
                fetched.push(mibs(elapsed));
                ids.push(id);
            } else {
                let (id, elapsed) = timed(server_pid, cpu_direct, media.upload(file.clone())).await?;
                direct.push(mibs(elapsed));
                ids.push(id);
            }
        }
        for id in ids {
            media.download(&id, &file).await?;
            media.delete(&id).await?;
        }
        eprintln!(
            "  by URL {rep}: {:.0} MiB/s (sent directly {:.0})",
            fetched[rep], direct[rep]
        );
    }
    let size_mib = size as f64 / MIB;
    let figures = vec![Figure::against(
        format!("upload {size_mib:.0} MiB by URL (raw: sent), median of {reps}"),
        "MiB/s",
        median(&fetched),
        median(&direct),
        None,
    )];
    let per_file = cpu.map(|c| c.per_operation_ms(reps));
    for (what, c) in ["by URL", "sent directly"].iter().zip(&per_file) {
        eprintln!("  upload {what}, CPU per file: {}", c.brief("ms"));
    }
    let samples = json!({
        "size_bytes": size,
        "by_url_mib_s": fetched, "direct_mib_s": direct,
        "cpu_ms_per_file": { "by_url": per_file[0], "direct": per_file[1] },
    });
    Ok((figures, samples))
}

/// Latencies (µs) and wall time of `count` operations run by `concurrency`
/// workers, each taking the next operation as soon as its last one is done.
pub(crate) struct Timing {
    pub elapsed: Duration,
    pub latencies: Histogram<u64>,
    /// Operations that failed, and the first failure: counted and reported
    /// rather than ending the run, since an error under load is a finding.
    pub failures: usize,
    pub first_failure: Option<String>,
}

impl Timing {
    /// Successful operations per second.
    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn ms(&self, quantile: f64) -> f64 {
        self.latencies.value_at_quantile(quantile) as f64 / 1000.0
    }
}

pub(crate) async fn closed_loop<F, Fut>(count: usize, concurrency: usize, op: F) -> anyhow::Result<Timing>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (op, next) = (op.clone(), next.clone());
            tokio::spawn(async move {
                // One microsecond to ten minutes, three significant digits.
                let mut latencies = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
                let mut failures = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let one = Instant::now();
                    match op(i).await {
                        Ok(()) => latencies.record(one.elapsed().as_micros().max(1) as u64)?,
                        Err(error) => failures.push(format!("{error:#}")),
                    }
                }
                anyhow::Ok((latencies, failures))
            })
        })
        .collect();
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut failures = Vec::new();
    for worker in workers {
        let (worker_latencies, worker_failures) = worker.await??;
        latencies.add(worker_latencies)?;
        failures.extend(worker_failures);
    }
    Ok(Timing {
        elapsed: started.elapsed(),
        latencies,
        failures: failures.len(),
        first_failure: failures.into_iter().next(),
    })
}

/// `count` uploads of a `size`-byte file at each concurrency, through
/// mediavault and as raw PUTs.
pub async fn small(
    server_pid: u32,
    media: &MediaClient,
    raw: &RawClient,
    size: usize,
    count: usize,
    concurrencies: &[usize],
) -> anyhow::Result<(Vec<Figure>, serde_json::Value)> {
    let file = png_file(size);
    let mut figures = Vec::new();
    let mut samples = Vec::new();
    let kib = size / 1024;
    for (round, &concurrency) in concurrencies.iter().enumerate() {
        let settled = settle(server_pid).await;
        let load = load_average();
        let upload = |media: MediaClient, file: Bytes| {
            closed_loop(count, concurrency, move |_| {
                let (media, file) = (media.clone(), stamped(&file));
                async move { media.upload(file).await.map(drop) }
            })
        };
        let put = |raw: RawClient, file: Bytes| {
            closed_loop(count, concurrency, move |i| {
                let (raw, file) = (raw.clone(), stamped(&file));
                async move { raw.put(&format!("small/{concurrency}/{i}"), file).await }
            })
        };
        let (mut cpu_ours, mut cpu_theirs) = (CpuSeconds::default(), CpuSeconds::default());
        let (ours, theirs) = if round % 2 == 0 {
            let ours = timed(server_pid, &mut cpu_ours, upload(media.clone(), file.clone()))
                .await?
                .0;
            let theirs = timed(server_pid, &mut cpu_theirs, put(raw.clone(), file.clone()))
                .await?
                .0;
            (ours, theirs)
        } else {
            let theirs = timed(server_pid, &mut cpu_theirs, put(raw.clone(), file.clone()))
                .await?
                .0;
            let ours = timed(server_pid, &mut cpu_ours, upload(media.clone(), file.clone()))
                .await?
                .0;
            (ours, theirs)
        };
        let (cpu_ours, cpu_theirs) = (
            cpu_ours.per_operation_ms(count),
            cpu_theirs.per_operation_ms(count),
        );
        // The targets are set at 16 clients and, for throughput, at 1; the
        // other levels show the trend.
        let (throughput_target, p99_target) = match concurrency {
            16 => (Some(Target::RatioAtLeast(0.8)), Some(Target::RatioAtMost(2.0))),
            1 => (Some(Target::RatioAtLeast(0.7)), None),
            _ => (None, None),
        };
        let label = |what: &str| format!("{kib} KiB uploads, {concurrency} clients, {what}");
        figures.push(Figure::against(
            label("throughput"),
            "req/s",
            ours.per_second(),
            theirs.per_second(),
            throughput_target,
        ));
        figures.push(Figure::against(
            label("p50 latency"),
            "ms",
            ours.ms(0.5),
            theirs.ms(0.5),
            None,
        ));
        if ours.failures + theirs.failures > 0 {
            figures.push(Figure::against(
                label("failed requests"),
                "count",
                ours.failures as f64,
                theirs.failures as f64,
                None,
            ));
            eprintln!(
                "  small x{concurrency}: {} uploads and {} raw puts failed; first: {:?} / {:?}",
                ours.failures, theirs.failures, ours.first_failure, theirs.first_failure
            );
        }
        figures.push(Figure::against(
            label("p99 latency"),
            "ms",
            ours.ms(0.99),
            theirs.ms(0.99),
            p99_target,
        ));
        eprintln!(
            "  small x{concurrency}: {:.0} req/s p50 {:.1} ms p99 {:.1} ms (raw {:.0} req/s p50 {:.1} ms p99 {:.1} ms)",
            ours.per_second(),
            ours.ms(0.5),
            ours.ms(0.99),
            theirs.per_second(),
            theirs.ms(0.5),
            theirs.ms(0.99)
        );
        eprintln!("    CPU per upload: {}", cpu_ours.brief("ms"));
        eprintln!("    CPU per raw put: {}", cpu_theirs.brief("ms"));
        let summary = |t: &Timing| {
            json!({
                "count": t.latencies.len(), "seconds": t.elapsed.as_secs_f64(),
                "failures": t.failures, "first_failure": t.first_failure,
                "per_second": t.per_second(),
                "ms": { "p50": t.ms(0.5), "p90": t.ms(0.9), "p99": t.ms(0.99), "max": t.latencies.max() as f64 / 1000.0 },
            })
        };
        samples.push(json!({
            "concurrency": concurrency, "size_bytes": size, "settled": settled, "load_before": load,
            "mediavault": summary(&ours), "raw": summary(&theirs),
            "cpu_ms_per_request": { "mediavault": cpu_ours, "raw": cpu_theirs },
        }));
    }
    Ok((figures, serde_json::Value::Array(samples)))
}

/// Peak RSS of the server while `clients` uploads of `size` bytes arrive at
/// once: the larger of the kernel's high-water mark (reset just before) and
/// the largest RSS sampled every 10 ms.
pub async fn memory(
    server: &Server,
    media: &MediaClient,
    size: usize,
    clients: usize,
    idle_kib: u64,
) -> anyhow::Result<(Vec<Figure>, serde_json::Value)> {
    let file = png_file(size);
    server.reset_peak()?;
    let pid = server.pid();
    let (sampled, done) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let sampler = {
        let (sampled, done) = (sampled.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Ok(rss) = proc_status_kib(pid, "VmRSS") {
                    sampled.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let cpu_before = CpuSeconds::now(pid);
    let started = Instant::now();
    let uploads = (0..clients).map(|_| {
        let (media, file) = (media.clone(), file.clone());
        tokio::spawn(async move { media.upload(file).await })
    });
    let ids = futures::future::join_all(uploads).await;
    let elapsed = started.elapsed();
    let cpu = CpuSeconds::now(pid).since(&cpu_before);
    done.store(true, Ordering::Relaxed);
    sampler.await?;
    let high_water = server.memory_kib("VmHWM")?;
    let peak_kib = high_water.max(sampled.load(Ordering::Relaxed));
    for id in ids {
        media.delete(&id?.context("a concurrent upload failed")?).await?;
    }
    let to_mib = |kib: u64| kib as f64 / 1024.0;
    let aggregate = (clients * size) as f64 / MIB / elapsed.as_secs_f64();
    let size_mib = size as f64 / MIB;
    eprintln!(
        "  memory: idle {:.1} MiB, peak {:.1} MiB with {clients} x {size_mib:.0} MiB uploads ({aggregate:.0} MiB/s together)",
        to_mib(idle_kib),
        to_mib(peak_kib)
    );
    let figures = vec![
        Figure::alone("server RSS, idle", "MiB", to_mib(idle_kib), None),
        Figure::alone(
            format!("server peak RSS, {clients} x {size_mib:.0} MiB uploads at once"),
            "MiB",
            to_mib(peak_kib),
            // The process's 64 MiB and 8 MiB an upload.
            Some(Target::AtMost(64.0 + 8.0 * clients as f64)),
        ),
        Figure::alone(
            format!("{clients} x {size_mib:.0} MiB uploads at once, aggregate"),
            "MiB/s",
            aggregate,
            None,
        ),
    ];
    let samples = json!({
        "clients": clients, "size_bytes": size, "seconds": elapsed.as_secs_f64(),
        "idle_rss_kib": idle_kib, "vm_hwm_kib": high_water, "sampled_max_rss_kib": sampled.load(Ordering::Relaxed),
        "cpu_seconds": cpu,
    });
    Ok((figures, samples))
}

/// What one server's uploads measured, for one side of a comparison of two
/// servers: `count` small uploads at one concurrency, and the median of
/// `reps` large uploads.
pub struct UploadRates {
    pub small_per_second: f64,
    pub small_p99_ms: f64,
    pub large_mib_s: f64,
    pub samples: serde_json::Value,
}

/// `count` uploads of `small_size` bytes by `concurrency` clients, then
/// `reps` uploads of `large_size` bytes one at a time, through mediavault.
pub async fn uploads(
    server_pid: u32,
    media: &MediaClient,
    (small_size, count, concurrency): (usize, usize, usize),
    (large_size, reps): (usize, usize),
) -> anyhow::Result<UploadRates> {
    let file = png_file(small_size);
    let mut cpu_small = CpuSeconds::default();
    let upload = {
        let media = media.clone();
        closed_loop(count, concurrency, move |_| {
            let (media, file) = (media.clone(), stamped(&file));
            async move { media.upload(file).await.map(drop) }
        })
    };
    let (small, _) = timed(server_pid, &mut cpu_small, upload).await?;
    if small.failures > 0 {
        eprintln!(
            "  {} small uploads failed; first: {:?}",
            small.failures, small.first_failure
        );
    }
    let mut large = Vec::new();
    let mut cpu_large = CpuSeconds::default();
    for _ in 0..reps {
        let file = png_file(large_size);
        let (id, elapsed) = timed(server_pid, &mut cpu_large, media.upload(file)).await?;
        large.push(large_size as f64 / MIB / elapsed.as_secs_f64());
        media.delete(&id).await?;
    }
    let rates = UploadRates {
        small_per_second: small.per_second(),
        small_p99_ms: small.ms(0.99),
        large_mib_s: median(&large),
        samples: json!({
            "small": {
                "count": count, "concurrency": concurrency, "size_bytes": small_size,
                "per_second": small.per_second(), "failures": small.failures,
                "ms": { "p50": small.ms(0.5), "p99": small.ms(0.99) },
                "cpu_ms_per_request": cpu_small.per_operation_ms(count),
            },
            "large": {
                "size_bytes": large_size, "mib_s": large,
                "cpu_ms_per_file": cpu_large.per_operation_ms(reps),
            },
        }),
    };
    eprintln!(
        "  {} KiB x{concurrency}: {:.0} req/s p99 {:.1} ms; {:.0} MiB upload: {:.0} MiB/s",
        small_size / 1024,
        rates.small_per_second,
        rates.small_p99_ms,
        large_size as f64 / MIB,
        rates.large_mib_s
    );
    Ok(rates)
}

/// Deletes among uploads: small uploads at `concurrency` clients alone,
/// then the same uploads while as many more clients delete `count` media
/// stored beforehand, each of those deleting one at a time. What deletes
/// take from everyone else's uploads (on SQLite each delete truncates the
/// WAL, between the upload path's batches), and how long a delete takes
/// under a full upload load. The two upload runs alternate in order from
/// round to round; the best of `rounds` is kept of each figure.
pub async fn deletes(
    server_pid: u32,
    media: &MediaClient,
    size: usize,
    count: usize,
    concurrency: usize,
    rounds: usize,
) -> anyhow::Result<(Vec<Figure>, serde_json::Value)> {
    let file = png_file(size);
    let uploads = |media: MediaClient, file: Bytes| {
        closed_loop(count, concurrency, move |_| {
            let (media, file) = (media.clone(), stamped(&file));
            async move { media.upload(file).await.map(drop) }
        })
    };
    let (mut alone, mut among, mut deleted) = (Vec::new(), Vec::new(), Vec::new());
    let mut samples = Vec::new();
    for round in 0..rounds {
        // What the deletes will remove, stored first.
        let stored = Arc::new(Mutex::new(Vec::with_capacity(count)));
        let store = {
            let (media, file, stored) = (media.clone(), file.clone(), stored.clone());
            closed_loop(count, concurrency, move |_| {
                let (media, file, stored) = (media.clone(), stamped(&file), stored.clone());
                async move {
                    let id = media.upload(file).await?;
                    stored.lock().unwrap().push(id);
                    Ok(())
                }
            })
        };
        anyhow::ensure!(store.await?.failures == 0, "storing the media to delete failed");
        let ids: Arc<Vec<String>> = Arc::new(std::mem::take(&mut *stored.lock().unwrap()));
        settle(server_pid).await;
        let delete_all = {
            let media = media.clone();
            closed_loop(ids.len(), concurrency, move |i| {
                let (media, ids) = (media.clone(), ids.clone());
                async move { media.delete(&ids[i]).await }
            })
        };
        let run_alone = async { uploads(media.clone(), file.clone()).await };
        let run_among = async { tokio::try_join!(uploads(media.clone(), file.clone()), delete_all) };
        let (lone, (mixed, deletes)) = if round % 2 == 0 {
            let lone = run_alone.await?;
            settle(server_pid).await;
            (lone, run_among.await?)
        } else {
            let mixed = run_among.await?;
            settle(server_pid).await;
            (run_alone.await?, mixed)
        };
        let failures = lone.failures + mixed.failures + deletes.failures;
        if failures > 0 {
            eprintln!(
                "  deletes: {failures} requests failed; first: {:?}",
                [&lone.first_failure, &mixed.first_failure, &deletes.first_failure]
            );
        }
        eprintln!(
            "  deletes round {round}: uploads {:.0} req/s alone, {:.0} among deletes; deletes {:.0}/s p50 {:.1} ms p99 {:.1} ms",
            lone.per_second(),
            mixed.per_second(),
            deletes.per_second(),
            deletes.ms(0.5),
            deletes.ms(0.99)
        );
        samples.push(json!({
            "round": round, "concurrency": concurrency, "size_bytes": size, "failures": failures,
            "uploads_alone_per_second": lone.per_second(),
            "uploads_among_deletes_per_second": mixed.per_second(),
            "deletes_per_second": deletes.per_second(),
            "delete_ms": { "p50": deletes.ms(0.5), "p99": deletes.ms(0.99), "max": deletes.latencies.max() as f64 / 1000.0 },
        }));
        alone.push(lone.per_second());
        among.push(mixed.per_second());
        deleted.push(deletes);
    }
    let best = |values: &[f64]| values.iter().copied().fold(f64::NAN, f64::max);
    let least = |quantile: f64| deleted.iter().map(|t| t.ms(quantile)).fold(f64::NAN, f64::min);
    let kib = size / 1024;
    let figures = vec![
        Figure::against(
            format!(
                "{kib} KiB uploads, {concurrency} clients, among {concurrency} deleting (raw: alone), best of {rounds} (req/s)"
            ),
            "req/s",
            best(&among),
            best(&alone),
            None,
        ),
        Figure::alone(
            format!("deletes, {concurrency} clients among the uploads, best of {rounds} (req/s)"),
            "req/s",
            best(&deleted.iter().map(Timing::per_second).collect::<Vec<_>>()),
            None,
        ),
        Figure::alone(
            format!("deletes among the uploads, p50, least of {rounds} (ms)"),
            "ms",
            least(0.5),
            None,
        ),
        Figure::alone(
            format!("deletes among the uploads, p99, least of {rounds} (ms)"),
            "ms",
            least(0.99),
            None,
        ),
    ];
    Ok((figures, serde_json::Value::Array(samples)))
}
