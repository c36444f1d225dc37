//! A steady mix of requests at a fixed rate against one or more servers of
//! the service on one set of stores: uploads, downloads checked against
//! their SHA-256, ranged downloads checked against the bytes they cover,
//! `/info`, and deletes each followed by a download (from the next server)
//! that must be 404. Requests go to the servers in turn. Every request is
//! recorded with when it started, how long it took and how it ended, and
//! every acknowledged upload is kept, for the run to judge.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::client::{self, App, Failure};
use crate::files::FileSpec;
use crate::report;

/// Operations in flight at most; past it the rate drops, and the run says so.
pub const MAX_IN_FLIGHT: usize = 64;
/// Files above this size reach the store as multipart uploads (the
/// service's `PART_SIZE`, in `crates/storage/src/blobs.rs`).
pub const MULTIPART_ABOVE: usize = 5 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Upload,
    Download,
    Range,
    Info,
    Delete,
}

impl Op {
    /// Whether the operation only reads what is stored.
    pub fn is_read(self) -> bool {
        matches!(self, Op::Download | Op::Range | Op::Info)
    }
}

/// The share of each operation, in percent; they add up to 100.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub upload: u32,
    pub download: u32,
    pub range: u32,
    pub info: u32,
    pub delete: u32,
}

impl Mix {
    fn shares(&self) -> [(Op, u32); 5] {
        [
            (Op::Upload, self.upload),
            (Op::Download, self.download),
            (Op::Range, self.range),
            (Op::Info, self.info),
            (Op::Delete, self.delete),
        ]
    }

    /// The operation a roll in 0..100 falls on.
    fn pick(&self, roll: u32) -> Op {
        let mut below = 0;
        for (op, share) in self.shares() {
            below += share;
            if roll < below {
                return op;
            }
        }
        Op::Upload
    }

    /// "40% upload, 30% download, …", without the operations left out.
    pub fn describe(&self) -> String {
        self.shares()
            .iter()
            .filter(|(_, share)| *share > 0)
            .map(|(op, share)| format!("{share}% {}", format!("{op:?}").to_lowercase()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// An app the load uploads to (each upload picks one at random).
#[derive(Debug, Clone)]
pub struct AppLoad {
    pub app: App,
    /// How long after its upload a media is still read or deleted, so that
    /// no request races its expiry (which is exact, and would be a 404);
    /// `None` for media that outlive the run.
    pub readable_for: Option<Duration>,
}

/// What to send and how fast.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Operations started per second.
    pub rate: u32,
    /// Seed of the operation mix and of file contents.
    pub seed: u64,
    pub min_size: usize,
    pub max_size: usize,
    pub mix: Mix,
}

/// One request and how it ended.
#[derive(Debug, Clone)]
pub struct Record {
    pub op: Op,
    /// Which of the servers it went to.
    pub server: usize,
    pub started: Instant,
    pub took: Duration,
    pub failure: Option<Failure>,
}

/// An upload the service acknowledged with a media id.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: String,
    /// Index of its app in the load's apps.
    pub app: usize,
    pub spec: FileSpec,
    pub sha256: String,
}

/// Everything the load saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub ops: BTreeMap<Op, u64>,
    pub errors: u64,
    pub examples: Vec<String>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub records: Vec<Record>,
    pub stored: Vec<Stored>,
    /// Media whose delete was acknowledged.
    pub deleted: HashSet<String>,
    /// Media whose delete failed: stored or gone, no one can say.
    pub delete_failed: HashSet<String>,
    /// File indices of uploads that failed.
    pub failed_uploads: HashSet<u64>,
}

impl Tally {
    fn record(&mut self, op: Op, server: usize, started: Instant, result: Result<(), Failure>) {
        *self.ops.entry(op).or_default() += 1;
        if let Err(failure) = &result {
            self.errors += 1;
            if self.examples.len() < 20 {
                self.examples.push(format!("{op:?}: {failure}"));
            }
        }
        self.records.push(Record {
            op,
            server,
            started,
            took: started.elapsed(),
            failure: result.err(),
        });
    }
}

/// Multipart uploads in flight, by server: a fault timed to strike while
/// one is under way hits requests to the store mid-transfer.
#[derive(Debug)]
pub struct Gauge {
    multipart: Vec<AtomicUsize>,
}

impl Gauge {
    pub fn new(servers: usize) -> Arc<Gauge> {
        Arc::new(Gauge {
            multipart: (0..servers).map(|_| AtomicUsize::new(0)).collect(),
        })
    }

    /// Multipart uploads in flight on `server`.
    pub fn multipart(&self, server: usize) -> usize {
        self.multipart[server].load(Ordering::SeqCst)
    }
}

/// Counts one multipart upload in flight on a server, for as long as it lives.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(count: &'a AtomicUsize) -> Counted<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Counted(count)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The load's result.
pub struct Outcome {
    pub tally: Tally,
    /// Ticks that found `MAX_IN_FLIGHT` operations running (the rate held back).
    pub saturated: u64,
    /// From the first operation started to the last one ended.
    pub took: Duration,
}

impl Outcome {
    /// The report's lines on operations and bytes.
    pub fn summary(&self) -> String {
        let tally = &self.tally;
        let ops: u64 = tally.ops.values().sum();
        let seconds = self.took.as_secs_f64();
        let by_op = tally
            .ops
            .iter()
            .map(|(op, n)| format!("{op:?} {n}").to_lowercase())
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "ops               {ops} in {seconds:.0} s ({:.1}/s): {by_op}\n\
             bytes             {} uploaded, {} downloaded and checked\n",
            ops as f64 / seconds,
            report::bytes(tally.bytes_up),
            report::bytes(tally.bytes_down)
        )
    }
}

/// Media uploaded and not yet deleted or near expiry.
struct Live {
    id: String,
    app: usize,
    spec: FileSpec,
    sha256: String,
    uploaded: Instant,
    /// Downloads and infos running on it: it is not deleted under them.
    readers: u32,
}

/// A media lent to a read.
struct Borrowed {
    id: String,
    app: usize,
    spec: FileSpec,
    sha256: String,
}

#[derive(Default)]
struct Pool {
    media: Vec<Live>,
}

impl Pool {
    /// Forgets media too close to expiry (the reaper takes them).
    fn prune(&mut self, apps: &[AppLoad]) {
        self.media.retain(|m| {
            m.readers > 0
                || apps[m.app]
                    .readable_for
                    .is_none_or(|readable| m.uploaded.elapsed() < readable)
        });
    }

    fn borrow(&mut self, rng: &mut StdRng) -> Option<Borrowed> {
        if self.media.is_empty() {
            return None;
        }
        let pick = rng.random_range(0..self.media.len());
        let media = &mut self.media[pick];
        media.readers += 1;
        Some(Borrowed {
            id: media.id.clone(),
            app: media.app,
            spec: media.spec,
            sha256: media.sha256.clone(),
        })
    }

    fn give_back(&mut self, id: &str) {
        if let Some(media) = self.media.iter_mut().find(|m| m.id == id) {
            media.readers -= 1;
        }
    }

    /// A media no read is using, taken out of the pool: its id and app.
    fn take_unread(&mut self, rng: &mut StdRng) -> Option<(String, usize)> {
        let unread: Vec<usize> = (0..self.media.len())
            .filter(|&i| self.media[i].readers == 0)
            .collect();
        if unread.is_empty() {
            return None;
        }
        let taken = self.media.swap_remove(unread[rng.random_range(0..unread.len())]);
        Some((taken.id, taken.app))
    }
}

/// Sends `plan`'s mix to `servers` in turn until `until` completes, then
/// waits for the operations in flight; `gauge` (made for as many servers)
/// follows the multipart uploads meanwhile.
pub async fn run(
    plan: &Plan,
    http: &reqwest::Client,
    servers: &[String],
    apps: &[AppLoad],
    gauge: Arc<Gauge>,
    until: impl Future<Output = ()>,
) -> anyhow::Result<Outcome> {
    let pool = Arc::new(Mutex::new(Pool::default()));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let servers: Arc<[String]> = servers.into();
    let apps: Arc<[AppLoad]> = apps.into();
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(plan.rate.max(1))));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running = tokio::task::JoinSet::new();
    let mut saturated = 0u64;
    let mut next_file = 0u64;
    let mut next_server = 0usize;
    let started = Instant::now();
    let mut until = std::pin::pin!(until);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = &mut until => break,
        }
        let op = {
            let mut pool = pool.lock().expect("pool");
            pool.prune(&apps);
            match pool.media.is_empty() {
                true => Op::Upload,
                false => plan.mix.pick(rng.random_range(0..100)),
            }
        };
        if in_flight.available_permits() == 0 {
            saturated += 1;
        }
        let permit = in_flight.clone().acquire_owned().await?;
        let client = Client {
            http: http.clone(),
            gauge: gauge.clone(),
            servers: servers.clone(),
            server: next_server % servers.len(),
            apps: apps.clone(),
            pool: pool.clone(),
            tally: tally.clone(),
            rng: StdRng::seed_from_u64(rng.random()),
        };
        next_server += 1;
        let spec = FileSpec::new(plan.seed, next_file, plan.min_size, plan.max_size);
        next_file += u64::from(op == Op::Upload);
        running.spawn(async move {
            client.run(op, spec).await;
            drop(permit);
        });
        while running.try_join_next().is_some() {}
    }
    running.join_all().await;
    let took = started.elapsed();
    let tally = std::mem::take(&mut *tally.lock().expect("tally"));
    Ok(Outcome {
        tally,
        saturated,
        took,
    })
}

/// What one operation needs: the servers, the apps and the shared records.
struct Client {
    http: reqwest::Client,
    gauge: Arc<Gauge>,
    servers: Arc<[String]>,
    /// The server this operation goes to.
    server: usize,
    apps: Arc<[AppLoad]>,
    pool: Arc<Mutex<Pool>>,
    tally: Arc<Mutex<Tally>>,
    rng: StdRng,
}

impl Client {
    async fn run(mut self, op: Op, spec: FileSpec) {
        let started = Instant::now();
        let result = match op {
            Op::Upload => self.upload(spec).await,
            Op::Download | Op::Range | Op::Info => {
                let borrowed = self.pool.lock().expect("pool").borrow(&mut self.rng);
                let Some(media) = borrowed else {
                    return;
                };
                let result = match op {
                    Op::Download => self.download(&media).await,
                    Op::Range => self.range(&media).await,
                    _ => client::info(&self.http, self.base(), &self.apps[media.app].app, &media.id)
                        .await
                        .and_then(|got| expect_same(&media.id, got, (&media.sha256, media.spec.size as u64))),
                };
                self.pool.lock().expect("pool").give_back(&media.id);
                result
            }
            Op::Delete => {
                let taken = self.pool.lock().expect("pool").take_unread(&mut self.rng);
                let Some((id, app)) = taken else { return };
                self.delete(&id, app).await
            }
        };
        self.tally
            .lock()
            .expect("tally")
            .record(op, self.server, started, result);
    }

    fn base(&self) -> &str {
        &self.servers[self.server]
    }

    async fn upload(&mut self, spec: FileSpec) -> Result<(), Failure> {
        let gauge = self.gauge.clone();
        let _multipart = (spec.size > MULTIPART_ABOVE).then(|| Counted::new(&gauge.multipart[self.server]));
        let app = self.rng.random_range(0..self.apps.len());
        let file = tokio::task::spawn_blocking(move || spec.generate())
            .await
            .expect("file generation");
        let uploaded = client::upload(&self.http, self.base(), &self.apps[app].app, &spec, file.bytes).await;
        let id = match uploaded {
            Ok(id) => id,
            Err(failure) => {
                self.tally
                    .lock()
                    .expect("tally")
                    .failed_uploads
                    .insert(spec.index);
                return Err(failure);
            }
        };
        {
            let mut tally = self.tally.lock().expect("tally");
            tally.bytes_up += spec.size as u64;
            tally.stored.push(Stored {
                id: id.clone(),
                app,
                spec,
                sha256: file.sha256.clone(),
            });
        }
        self.pool.lock().expect("pool").media.push(Live {
            id,
            app,
            spec,
            sha256: file.sha256,
            uploaded: Instant::now(),
            readers: 0,
        });
        Ok(())
    }

    async fn download(&self, media: &Borrowed) -> Result<(), Failure> {
        let app = &self.apps[media.app].app;
        let got = client::download(&self.http, self.base(), app, &media.id).await?;
        self.tally.lock().expect("tally").bytes_down += got.1;
        expect_same(&media.id, got, (&media.sha256, media.spec.size as u64))
    }

    /// A random range of the media, checked against the same bytes of the
    /// file that was uploaded.
    async fn range(&mut self, media: &Borrowed) -> Result<(), Failure> {
        let size = media.spec.size as u64;
        let start = self.rng.random_range(0..size);
        let end = self.rng.random_range(start + 1..=size);
        let spec = media.spec;
        let want = tokio::task::spawn_blocking(move || {
            let file = spec.generate();
            hex::encode(Sha256::digest(&file.bytes[start as usize..end as usize]))
        })
        .await
        .expect("file generation");
        let app = &self.apps[media.app].app;
        let got = client::download_range(&self.http, self.base(), app, &media.id, start..end).await?;
        self.tally.lock().expect("tally").bytes_down += got.1;
        expect_same(
            &format!("{} bytes {start}..{end}", media.id),
            got,
            (&want, end - start),
        )
    }

    /// Deletes, then checks (on the next server) that the media is gone.
    async fn delete(&self, id: &str, app: usize) -> Result<(), Failure> {
        let app = &self.apps[app].app;
        if let Err(failure) = client::delete(&self.http, self.base(), app, id).await {
            self.tally
                .lock()
                .expect("tally")
                .delete_failed
                .insert(id.to_owned());
            return Err(failure);
        }
        self.tally.lock().expect("tally").deleted.insert(id.to_owned());
        let next = &self.servers[(self.server + 1) % self.servers.len()];
        match client::download(&self.http, next, app, id).await {
            Err(Failure::Status(404, _)) => Ok(()),
            Err(failure) => Err(failure),
            Ok(_) => Err(Failure::Wrong(format!("{id} still downloads after its delete"))),
        }
    }
}

fn expect_same(what: &str, got: (String, u64), want: (&str, u64)) -> Result<(), Failure> {
    if got.0 == want.0 && got.1 == want.1 {
        Ok(())
    } else {
        Err(Failure::Wrong(format!(
            "{what}: {} bytes, sha256 {}; uploaded {} bytes, sha256 {}",
            got.1, got.0, want.1, want.0
        )))
    }
}

/// The `q` quantile (0..=1) of `values`, by the nearest rank; `None` for none.
pub fn quantile(values: &mut [Duration], q: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}
