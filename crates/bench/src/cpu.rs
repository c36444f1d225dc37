//! Where the machine's CPU time goes during a measurement: the server, the
//! stores (Garage, PostgreSQL) and this harness, read from `/proc/PID/stat`.
//! On a machine this small every process shares the same cores, so a ratio
//! below 1 is often just the server's CPU time per request added to the
//! store's; this says how much.

use std::time::Duration;

use serde::Serialize;

/// Clock ticks per second of `/proc/PID/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds used so far, by process group.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuSeconds {
    pub server: f64,
    pub garage: f64,
    pub postgres: f64,
    pub harness: f64,
    /// Everything else on the machine (other builds, the kernel's own threads).
    pub other: f64,
}

impl CpuSeconds {
    pub fn now(server_pid: u32) -> CpuSeconds {
        let own = std::process::id();
        let mut seconds = CpuSeconds::default();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return seconds;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Some((comm, used)) = process_seconds(pid) else {
                continue;
            };
            let group = if pid == server_pid {
                &mut seconds.server
            } else if pid == own {
                &mut seconds.harness
            } else if comm == "garage" {
                &mut seconds.garage
            } else if comm == "postgres" {
                &mut seconds.postgres
            } else {
                &mut seconds.other
            };
            *group += used;
        }
        seconds
    }

    /// CPU seconds used between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuSeconds) -> CpuSeconds {
        // A process that ended in between (a PostgreSQL backend, a build
        // step) takes its time with it: a group never counts below zero.
        let used = |now: f64, then: f64| (now - then).max(0.0);
        CpuSeconds {
            server: used(self.server, earlier.server),
            garage: used(self.garage, earlier.garage),
            postgres: used(self.postgres, earlier.postgres),
            harness: used(self.harness, earlier.harness),
            other: used(self.other, earlier.other),
        }
    }

    pub fn plus(&self, other: &CpuSeconds) -> CpuSeconds {
        CpuSeconds {
            server: self.server + other.server,
            garage: self.garage + other.garage,
            postgres: self.postgres + other.postgres,
            harness: self.harness + other.harness,
            other: self.other + other.other,
        }
    }

    /// The same, in milliseconds per one of `count` operations.
    pub fn per_operation_ms(&self, count: usize) -> CpuSeconds {
        let ms = |s: f64| s * 1000.0 / count as f64;
        CpuSeconds {
            server: ms(self.server),
            garage: ms(self.garage),
            postgres: ms(self.postgres),
            harness: ms(self.harness),
            other: ms(self.other),
        }
    }

    pub fn brief(&self, unit: &str) -> String {
        format!(
            "server {:.2}, garage {:.2}, postgres {:.2}, harness {:.2}, other {:.2} {unit}",
            self.server, self.garage, self.postgres, self.harness, self.other
        )
    }
}

/// How quiet the machine was before a measurement, and how long the
/// harness waited for it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Settled {
    pub waited_s: f64,
    /// Cores busy outside this harness over the last second waited.
    pub busy_cores: f64,
    /// The same, by process group.
    pub busy: CpuSeconds,
    /// Still busy after `SETTLE_WITHIN`: measured anyway.
    pub gave_up: bool,
}

/// Busy below this many cores (outside this harness), the machine is quiet.
/// Idle, the stores and the system's own threads use about 0.02.
const QUIET_CORES: f64 = 0.15;
/// The longest wait for quiet.
const SETTLE_WITHIN: Duration = Duration::from_secs(60);

/// Waits until the machine outside this harness is quiet: under
/// `QUIET_CORES` over a second, for at most `SETTLE_WITHIN`. A store's
/// work in the background is measured with whatever runs beside it: after
/// an earlier run deleted its blobs, Garage resyncs its blocks (67,000
/// queued blocks kept a quarter of a core busy for 50 minutes and more), and
/// PostgreSQL vacuums after many writes. Waiting out what passes keeps a
/// run's figures about what they measure; what does not pass is recorded.
pub async fn settle(server_pid: u32) -> Settled {
    let started = std::time::Instant::now();
    let mut first_busy: Option<CpuSeconds> = None;
    loop {
        let before = CpuSeconds::now(server_pid);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let used = CpuSeconds::now(server_pid).since(&before);
        let busy_cores = used.server + used.garage + used.postgres + used.other;
        let waited_s = started.elapsed().as_secs_f64();
        let gave_up = started.elapsed() >= SETTLE_WITHIN;
        if busy_cores < QUIET_CORES || gave_up {
            if gave_up {
                eprintln!(
                    "   the machine stayed busy ({}); measuring anyway",
                    used.brief("cores")
                );
            } else if let Some(busy) = first_busy {
                eprintln!(
                    "   waited {waited_s:.0} s for the machine to settle (busy at first: {})",
                    busy.brief("cores")
                );
            }
            return Settled {
                waited_s,
                busy_cores,
                busy: used,
                gave_up,
            };
        }
        first_busy.get_or_insert(used);
    }
}

/// A process's command name and its user + system CPU seconds.
fn process_seconds(pid: u32) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name is in parentheses and may itself hold spaces or ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // After the name: state is field 3 of the line; utime and stime are 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / TICKS_PER_SECOND))
}
