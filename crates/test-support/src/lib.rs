//! mediavault-test-support: what the project's tests, `mediavault-bench` and
//! `mediavault-chaos` share. Here, a running `mediavault serve`, started the
//! one way they all start it; in [`services`], the test services' env and
//! the test token's fault switches.
//!
//! For `serve`, the caller builds the command (arguments, environment,
//! directory, where stderr goes); this crate owns the rest: reading the
//! address the server announces on its first stdout line, giving up on a
//! start that hangs, saying why a start failed, and killing the process on
//! drop.
//!
//! It is synchronous and needs only the standard library, so blocking and
//! async callers use it alike: the first line is read on a thread of its
//! own and waited for with a bound, never on an async runtime.

pub mod services;

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// What `mediavault serve` prints first, once it accepts connections.
const ANNOUNCEMENT: &str = "listening on ";

/// How long a start may take: migrating a fresh database on a machine busy
/// with other tests takes seconds; a minute means the start hangs.
pub const START_WITHIN: Duration = Duration::from_secs(60);

/// How much of the stderr log a failed start reports.
const FAILURE_LOG_LINES: usize = 50;

/// A `mediavault serve` child that has announced its address; SIGKILLed
/// when dropped.
pub struct ServeProcess {
    child: Child,
    base_url: String,
    stderr_log: Option<PathBuf>,
}

impl ServeProcess {
    /// Spawns `command` with stdout piped and waits up to `within` for its
    /// first stdout line, `listening on <url>`. Everything else about the
    /// command is the caller's: arguments, environment, directory, stderr.
    ///
    /// `stderr_log` names the file the caller sent stderr to, if it did: it
    /// backs [`log`](Self::log) and the report of a failed start. With
    /// stderr piped instead, a failed start reports all the pipe held.
    ///
    /// Past the first line, stdout is drained for the life of the child, so
    /// a later write neither fails on a closed pipe nor blocks on a full one.
    pub fn start(
        command: &mut Command,
        stderr_log: Option<&Path>,
        within: Duration,
    ) -> Result<ServeProcess, StartFailure> {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|error| StartFailure {
                cause: format!("could not run {}: {error}", command.get_program().display()),
                stdout_line: String::new(),
                status: None,
                stderr: String::new(),
            })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let first_line = match first_line_then_drain(stdout) {
            Ok(first_line) => first_line,
            Err(error) => {
                let cause = format!("could not start the stdout reader: {error}");
                return Err(StartFailure::of(child, stderr_log, cause, String::new()));
            }
        };
        let (cause, line) = match first_line.recv_timeout(within) {
            Ok(Ok(line)) => {
                let line = line.trim().to_owned();
                match line.strip_prefix(ANNOUNCEMENT) {
                    Some(url) => {
                        return Ok(ServeProcess {
                            base_url: url.to_owned(),
                            child,
                            stderr_log: stderr_log.map(Path::to_owned),
                        });
                    }
                    None if line.is_empty() => {
                        ("it closed stdout without announcing an address".to_owned(), line)
                    }
                    None => ("its first stdout line announces no address".to_owned(), line),
                }
            }
            Ok(Err(error)) => (format!("reading its stdout failed: {error}"), String::new()),
            Err(RecvTimeoutError::Timeout) => {
                (format!("no address announced within {within:?}"), String::new())
            }
            Err(RecvTimeoutError::Disconnected) => ("the stdout reader stopped".to_owned(), String::new()),
        };
        Err(StartFailure::of(child, stderr_log, cause, line))
    }

    /// `http://127.0.0.1:PORT`, as announced.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How the process ended, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn is_running(&mut self) -> bool {
        self.exited().is_none()
    }

    /// Waits for the process to end; returns how it ended.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait()
    }

    /// SIGKILL, then waits: no drain, no clean-up, as a crash or an OOM kill.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The read end of a piped stderr, for a caller that reads it while the
    /// server runs (and so keeps the pipe from filling).
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// Everything in the stderr log so far; empty without one.
    pub fn log(&self) -> String {
        self.stderr_log.as_deref().map(read_lossy).unwrap_or_default()
    }

    /// The last `lines` lines of the stderr log.
    pub fn log_tail(&self, lines: usize) -> String {
        last_lines(&self.log(), lines)
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Why a start failed, with what the process said: its first stdout line,
/// how it ended, and its stderr.
#[derive(Debug)]
pub struct StartFailure {
    pub cause: String,
    /// The first stdout line, trimmed; empty if none came.
    pub stdout_line: String,
    /// How the process ended: by itself, or by the SIGKILL that gave up on
    /// it. `None` if it never ran.
    pub status: Option<ExitStatus>,
    /// The tail of the stderr log, or all a piped stderr held.
    pub stderr: String,
}

impl StartFailure {
    fn of(mut child: Child, stderr_log: Option<&Path>, cause: String, stdout_line: String) -> StartFailure {
        // Killed before anything is read: a hung start must not outlive its
        // report, and a piped stderr only ends once the process has.
        let _ = child.kill();
        let status = child.wait().ok();
        let stderr = match (stderr_log, child.stderr.take()) {
            (Some(log), _) => last_lines(&read_lossy(log), FAILURE_LOG_LINES),
            (None, Some(mut pipe)) => {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                String::from_utf8_lossy(&bytes).into_owned()
            }
            (None, None) => String::new(),
        };
        StartFailure {
            cause,
            stdout_line,
            status,
            stderr,
        }
    }
}

impl fmt::Display for StartFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mediavault did not start: {}\nstdout: {:?}",
            self.cause, self.stdout_line
        )?;
        if let Some(status) = self.status {
            write!(f, "\nexit: {status}")?;
        }
        write!(f, "\nstderr:\n{}", self.stderr)
    }
}

impl std::error::Error for StartFailure {}

/// Reads `stdout`'s first line on a thread of its own and sends it, then
/// reads on to the end, which comes when the child does.
fn first_line_then_drain(stdout: ChildStdout) -> io::Result<mpsc::Receiver<io::Result<String>>> {
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("mediavault-stdout".into())
        .spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = sender.send(reader.read_line(&mut line).map(|_| line));
            let _ = io::copy(&mut reader, &mut io::sink());
        })?;
    Ok(receiver)
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

fn last_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    //! A shell stands in for `mediavault serve`: all this crate relies on is
    //! the first stdout line and the life of the process.

    use std::os::unix::process::ExitStatusExt;

    use super::*;

    fn shell(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    #[test]
    fn the_announced_address_is_the_base_url() {
        let mut command = shell("echo 'listening on http://127.0.0.1:9'; exec sleep 600");
        let mut server = ServeProcess::start(&mut command, None, START_WITHIN).unwrap();
        assert_eq!(server.base_url(), "http://127.0.0.1:9");
        assert_eq!(server.url("/healthz"), "http://127.0.0.1:9/healthz");
        assert!(server.is_running());
        server.kill();
        assert_eq!(server.exited().and_then(|status| status.signal()), Some(9));
    }

    #[test]
    fn a_start_that_hangs_is_killed_and_reports_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let mut command = shell("echo 'opening the database' >&2; exec sleep 600");
        command.stderr(std::fs::File::create(&log).unwrap());
        let failure = ServeProcess::start(&mut command, Some(&log), Duration::from_millis(200))
            .err()
            .expect("a start that never announces an address fails");
        assert!(failure.cause.contains("within"), "{failure}");
        assert!(failure.stderr.contains("opening the database"), "{failure}");
        assert_eq!(
            failure.status.and_then(|status| status.signal()),
            Some(9),
            "{failure}"
        );
    }

    #[test]
    fn a_refused_start_reports_its_exit_and_piped_stderr() {
        let mut command = shell("echo 'blobs.url holds the database' >&2; exit 3");
        command.stderr(Stdio::piped());
        let failure = ServeProcess::start(&mut command, None, START_WITHIN)
            .err()
            .expect("a process that exits without an address fails to start");
        assert_eq!(failure.stdout_line, "");
        assert_eq!(
            failure.status.and_then(|status| status.code()),
            Some(3),
            "{failure}"
        );
        assert_eq!(failure.stderr, "blobs.url holds the database\n");
    }

    #[test]
    fn a_first_line_that_is_no_address_is_reported() {
        let mut command = shell("echo '{\"removed\": 0}'; exec sleep 600");
        let failure = ServeProcess::start(&mut command, None, START_WITHIN)
            .err()
            .expect("a first line without an address fails the start");
        assert_eq!(failure.stdout_line, "{\"removed\": 0}");
        assert!(failure.to_string().contains("{\\\"removed\\\": 0}"), "{failure}");
    }

    /// A megabyte on stdout after the address: undrained it would fill the
    /// pipe and block; closed, `head` would die of SIGPIPE.
    #[test]
    fn stdout_after_the_address_neither_fails_nor_blocks() {
        let mut command =
            shell("echo 'listening on http://127.0.0.1:9'; head -c 1000000 /dev/zero || exit 4; exit 3");
        let mut server = ServeProcess::start(&mut command, None, START_WITHIN).unwrap();
        assert_eq!(server.wait().unwrap().code(), Some(3));
    }
}
