//! Figures, their targets, and the two forms a run's results take: a table
//! on stdout and `bench/results/<date>-<name>.{json,txt}`.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

/// What a figure should reach. Ratios are mediavault / raw.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    RatioAtLeast(f64),
    RatioAtMost(f64),
    AtLeast(f64),
    AtMost(f64),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::RatioAtLeast(x) => write!(f, ">= {x} x raw"),
            Target::RatioAtMost(x) => write!(f, "<= {x} x raw"),
            Target::AtLeast(x) => write!(f, ">= {x}"),
            Target::AtMost(x) => write!(f, "<= {x}"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub unit: &'static str,
    pub mediavault: f64,
    pub baseline: Option<f64>,
    pub ratio: Option<f64>,
    pub target: Option<Target>,
    pub met: Option<bool>,
}

impl Figure {
    /// A figure of mediavault alone.
    pub fn alone(name: impl Into<String>, unit: &'static str, value: f64, target: Option<Target>) -> Figure {
        let met = target.map(|t| match t {
            Target::AtLeast(x) => value >= x,
            Target::AtMost(x) => value <= x,
            Target::RatioAtLeast(_) | Target::RatioAtMost(_) => unreachable!("a ratio needs a baseline"),
        });
        Figure {
            name: name.into(),
            unit,
            mediavault: value,
            baseline: None,
            ratio: None,
            target,
            met,
        }
    }

    /// A figure of mediavault next to the same measure of the raw store.
    pub fn against(
        name: impl Into<String>,
        unit: &'static str,
        value: f64,
        baseline: f64,
        target: Option<Target>,
    ) -> Figure {
        let ratio = value / baseline;
        let met = target.map(|t| match t {
            Target::RatioAtLeast(x) => ratio >= x,
            Target::RatioAtMost(x) => ratio <= x,
            Target::AtLeast(x) => value >= x,
            Target::AtMost(x) => value <= x,
        });
        Figure {
            name: name.into(),
            unit,
            mediavault: value,
            baseline: Some(baseline),
            ratio: Some(ratio),
            target,
            met,
        }
    }
}

/// The machine a run measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
}

impl Machine {
    pub fn this() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0);
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: memory_kib / (1024.0 * 1024.0),
        }
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut fields = text.split_whitespace().map(|f| f.parse().unwrap_or(f64::NAN));
    [(); 3].map(|()| fields.next().unwrap_or(f64::NAN))
}

/// Where a report starts: when its run began, the command, and the load
/// before it. Taken as the run begins; [`RunStart::report`] adds the rest.
pub struct RunStart {
    started: String,
    command: String,
    load_before: [f64; 3],
}

impl RunStart {
    pub fn now(command_line: &str) -> RunStart {
        RunStart {
            started: now(),
            command: command_line.into(),
            load_before: load_average(),
        }
    }

    /// The report of the run begun here, ending now: with the commit, the
    /// machine and the load after it.
    pub fn report(
        self,
        name: impl Into<String>,
        baseline: impl Into<String>,
        settings: Vec<(String, String)>,
        figures: Vec<Figure>,
        samples: serde_json::Value,
    ) -> Report {
        Report {
            name: name.into(),
            baseline: baseline.into(),
            started: self.started,
            command: self.command,
            commit: commit(),
            machine: Machine::this(),
            load_before: self.load_before,
            load_after: load_average(),
            settings,
            figures,
            samples,
        }
    }
}

/// The short hash of the checked-out commit, if this is a git work tree.
fn commit() -> Option<String> {
    let output = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The local time, to the second, with its offset.
pub fn now() -> String {
    chrono::Local::now().format("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// Everything one run of one backend (or of the crypto core) produced.
#[derive(Debug, Serialize)]
pub struct Report {
    pub name: String,
    pub baseline: String,
    pub started: String,
    pub command: String,
    pub commit: Option<String>,
    pub machine: Machine,
    pub load_before: [f64; 3],
    pub load_after: [f64; 3],
    pub settings: Vec<(String, String)>,
    pub figures: Vec<Figure>,
    /// The measurements the figures were made from.
    pub samples: serde_json::Value,
}

impl Report {
    /// The figures as a Markdown table (readable as it is in a terminal),
    /// under a line that says where, when and how they were measured.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let [b1, b5, b15] = self.load_before;
        let [a1, a5, a15] = self.load_after;
        let _ = writeln!(out, "### {} ({}; {})\n", self.name, self.started, self.baseline);
        let _ = writeln!(
            out,
            "{} x {}, {:.0} GiB; load average {b1:.2} {b5:.2} {b15:.2} before, {a1:.2} {a5:.2} {a15:.2} after; \
             commit {}; `{}`\n",
            self.machine.cores,
            self.machine.cpu,
            self.machine.memory_gib,
            self.commit.as_deref().unwrap_or("?"),
            self.command
        );
        let _ = writeln!(
            out,
            "| {:<56} | {:>10} | {:>10} | {:>6} | {:<13} | {:<6} |",
            "figure", "mediavault", "raw", "ratio", "target", "met"
        );
        let _ = writeln!(
            out,
            "|{:-<58}|{:->11}:|{:->11}:|{:->7}:|{:-<15}|{:-<8}|",
            "", "", "", "", "", ""
        );
        for f in &self.figures {
            let number = |v: f64| {
                if v >= 100.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            };
            let _ = writeln!(
                out,
                "| {:<56} | {:>10} | {:>10} | {:>6} | {:<13} | {:<6} |",
                format!("{} ({})", f.name, f.unit),
                number(f.mediavault),
                f.baseline.map(number).unwrap_or_else(|| "-".into()),
                f.ratio.map(|r| format!("{r:.2}")).unwrap_or_else(|| "-".into()),
                f.target.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
                match f.met {
                    Some(true) => "met",
                    Some(false) => "MISSED",
                    None => "",
                }
            );
        }
        out
    }

    /// Writes `<dir>/<date>-<name>.json` and `.txt`; returns the JSON path.
    pub fn write(&self, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir)?;
        let date = &self.started[..10];
        let json = dir.join(format!("{date}-{}.json", self.name));
        std::fs::write(&json, serde_json::to_string_pretty(self)? + "\n")?;
        std::fs::write(dir.join(format!("{date}-{}.txt", self.name)), self.table())?;
        Ok(json)
    }
}
