//! [`ChildProcess`]: any binary run by a test, with its output in a log file.
//!
//! Black-box tests start the `cartwheel` binary with this, stop it gracefully (SIGTERM) or
//! crash it (SIGKILL), and read its log when something fails. The child runs in its own
//! process group so that dropping the handle also ends what the child started itself (the
//! private `nats-server` of `cartwheel up`), even after the child was killed.
//!
//! Signals are sent with the `kill` program (procps) rather than a libc binding: this
//! workspace has no `unsafe` and no signal crate.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::wait::POLL_INTERVAL;

/// A running child process whose stdout and stderr go to a log file.
///
/// Dropping it sends SIGKILL to the child's whole process group and reaps the child.
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
    /// The program as given, for error messages.
    program: String,
    log_path: PathBuf,
    /// Set once the child has been reaped; after that its pid may belong to someone else,
    /// so no more signals are sent to it.
    exit_status: Option<ExitStatus>,
}

impl ChildProcess {
    /// Starts `program` with `args` and the extra environment variables `envs` (on top of
    /// this process's environment), stdin closed and stdout and stderr appended to
    /// `log_path` (created with its parent directories if missing).
    ///
    /// ```no_run
    /// # fn demo(nats_url: &str, log: &std::path::Path) -> anyhow::Result<()> {
    /// let app = cartwheel_testkit::ChildProcess::spawn(
    ///     "target/debug/cartwheel",
    ///     ["node"],
    ///     [("CARTWHEEL_NATS_URL", nats_url)],
    ///     log,
    /// )?;
    /// # Ok(()) }
    /// ```
    pub fn spawn<P, A, S, E, K, V>(
        program: P,
        args: A,
        envs: E,
        log_path: impl Into<PathBuf>,
    ) -> anyhow::Result<Self>
    where
        P: AsRef<OsStr>,
        A: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
        E: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut command = Command::new(program);
        command.args(args).envs(envs);
        Self::spawn_command(command, log_path)
    }

    /// Starts a prepared [`Command`] the same way as [`ChildProcess::spawn`]; its stdin,
    /// stdout, stderr and process group are replaced.
    pub fn spawn_command(
        mut command: Command,
        log_path: impl Into<PathBuf>,
    ) -> anyhow::Result<Self> {
        let log_path = log_path.into();
        let program = command.get_program().to_string_lossy().into_owned();
        let log = open_log(&log_path)?;
        let log_for_stderr = log
            .try_clone()
            .with_context(|| format!("duplicating the handle of {}", log_path.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr)
            // Its own process group: see the module doc.
            .process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("starting {program} (log: {})", log_path.display()))?;
        Ok(Self {
            child,
            program,
            log_path,
            exit_status: None,
        })
    }

    /// The child's process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Crashes the child: SIGKILL to the child alone, then reaps it. What the child started
    /// itself keeps running, as it would after a real crash; see [`ChildProcess::kill9_group`].
    /// Does nothing if the child has already exited.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if self.try_exit_status()?.is_some() {
            return Ok(());
        }
        self.child
            .kill()
            .with_context(|| format!("sending SIGKILL to {} (pid {})", self.program, self.pid()))?;
        self.reap()
    }

    /// SIGKILL to the child's whole process group (the child and everything it started that
    /// stayed in the group), then reaps the child.
    pub fn kill9_group(&mut self) -> anyhow::Result<()> {
        signal(&format!("-{}", self.pid()), "KILL")
            .with_context(|| format!("killing the process group of {}", self.program))?;
        if self.exit_status.is_none() {
            self.reap()?;
        }
        Ok(())
    }

    /// Asks the child to shut down gracefully: SIGTERM to the child alone. Use
    /// [`ChildProcess::wait_exit`] to see it go. Fails if the child has already exited.
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.try_exit_status()? {
            anyhow::bail!(
                "{} already exited ({status}); cannot send SIGTERM",
                self.program
            );
        }
        signal(&self.pid().to_string(), "TERM")
            .with_context(|| format!("sending SIGTERM to {} (pid {})", self.program, self.pid()))
    }

    /// The exit status if the child has exited, without waiting.
    pub fn try_exit_status(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.exit_status.is_none() {
            self.exit_status = self
                .child
                .try_wait()
                .with_context(|| format!("checking whether {} exited", self.program))?;
        }
        Ok(self.exit_status)
    }

    /// Waits up to `timeout` for the child to exit, polling every [`POLL_INTERVAL`]: its
    /// exit status, or `None` if it is still running at the deadline (it is not killed).
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status()? {
                return Ok(Some(status));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::time::sleep_until((now + POLL_INTERVAL).min(deadline)).await;
        }
    }

    /// Where the child's stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The child's output so far, for debugging a failed test. Tests should not assert on
    /// log text; a log that cannot be read yields a note saying why.
    pub fn log_contents(&self) -> String {
        read_log(&self.log_path)
    }

    /// Waits for the child after a SIGKILL, which ends it at once.
    fn reap(&mut self) -> anyhow::Result<()> {
        let status = self
            .child
            .wait()
            .with_context(|| format!("waiting for {} to exit", self.program))?;
        self.exit_status = Some(status);
        Ok(())
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // The group may outlive the child (see `kill9`), so it is killed either way; errors
        // are ignored because there is nothing left to do about them here.
        let _ = signal(&format!("-{}", self.pid()), "KILL");
        if self.exit_status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Opens (creating if needed) a log file for appending, so a process restarted with the
/// same log keeps the earlier output.
pub(crate) fn open_log(path: &Path) -> anyhow::Result<File> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening log file {}", path.display()))
}

/// Reads a log file for a human: lossy UTF-8, and a note instead of an error.
pub(crate) fn read_log(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(err) => format!("<could not read log {}: {err}>", path.display()),
    }
}

/// Sends `signal` (a name such as `TERM`) to `target`: a pid, or `-pgid` for a group.
fn signal(target: &str, signal: &str) -> anyhow::Result<()> {
    let output = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(target)
        .stdin(Stdio::null())
        .output()
        .context("running `kill` (is procps installed?)")?;
    if !output.status.success() {
        anyhow::bail!(
            "`kill -{signal} -- {target}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;

    use super::*;
    use crate::wait_for;

    const NO_ENV: [(&str, &str); 0] = [];

    fn sh(script: &str, log: &Path) -> ChildProcess {
        ChildProcess::spawn("sh", ["-c", script], [("TESTKIT_GREETING", "hello")], log)
            .expect("sh starts")
    }

    #[tokio::test]
    async fn output_and_env_reach_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs/child.log");
        let mut child = sh("echo \"$TESTKIT_GREETING out\"; echo err >&2", &log);
        let status = child.wait_exit(Duration::from_secs(10)).await.unwrap();
        assert!(status.is_some_and(|s| s.success()), "{status:?}");
        let contents = child.log_contents();
        assert!(contents.contains("hello out"), "{contents}");
        assert!(contents.contains("err"), "{contents}");
    }

    #[tokio::test]
    async fn terminate_sends_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let mut child =
            ChildProcess::spawn("sleep", ["30"], NO_ENV, dir.path().join("log")).unwrap();
        assert_eq!(
            child.wait_exit(Duration::from_millis(50)).await.unwrap(),
            None
        );
        child.terminate().unwrap();
        let status = child.wait_exit(Duration::from_secs(10)).await.unwrap();
        assert_eq!(status.and_then(|s| s.signal()), Some(15), "{status:?}");
        assert!(
            child.terminate().is_err(),
            "a second SIGTERM to an exited child must fail"
        );
    }

    #[tokio::test]
    async fn kill9_sends_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let mut child =
            ChildProcess::spawn("sleep", ["30"], NO_ENV, dir.path().join("log")).unwrap();
        child.kill9().unwrap();
        let status = child.try_exit_status().unwrap();
        assert_eq!(status.and_then(|s| s.signal()), Some(9), "{status:?}");
        child.kill9().unwrap();
    }

    #[tokio::test]
    async fn drop_kills_what_the_child_started() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild.pid");
        // The grandchild runs in the background and outlives a SIGKILL of the shell.
        let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let mut child = sh(&script, &dir.path().join("log"));
        wait_for("the grandchild's pid", Duration::from_secs(10), || async {
            fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
        })
        .await
        .unwrap();
        let grandchild = fs::read_to_string(&pid_file).unwrap().trim().to_owned();
        let proc_dir = PathBuf::from(format!("/proc/{grandchild}"));

        child.kill9().unwrap();
        assert!(proc_dir.exists(), "kill9 must hit the child alone");
        drop(child);
        wait_for(
            "the grandchild to be gone",
            Duration::from_secs(10),
            || async {
                // Gone, or a zombie waiting for init to reap it.
                fs::read_to_string(proc_dir.join("stat"))
                    .map_or(true, |stat| stat.split_whitespace().nth(2) == Some("Z"))
            },
        )
        .await
        .unwrap();
    }

    #[test]
    fn a_missing_program_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let result = ChildProcess::spawn(
            "/nonexistent/cartwheel-testkit-no-such-program",
            ["x"],
            NO_ENV,
            dir.path().join("log"),
        );
        assert!(result.is_err());
    }
}
