//! What the storage servers of the harness share: finding a binary (environment variable,
//! then the workspace's `.tools/bin`, then `PATH`), and one server process with its output
//! appended to a log file, started, awaited until ready, and killed with SIGKILL.
//!
//! [`NatsServer`](crate::NatsServer) predates this module and keeps its own copy.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::process::{open_log, read_log};
use crate::wait::POLL_INTERVAL;

/// A server binary: `tool` (its file name), the environment variable that overrides it,
/// and how to install it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tool {
    pub name: &'static str,
    pub env: &'static str,
    pub install_hint: &'static str,
}

impl Tool {
    /// The binary: `self.env` (a path, or a name looked up on `PATH`), else
    /// `.tools/bin/{name}` in this workspace, else `{name}` on `PATH`.
    pub fn find(&self) -> anyhow::Result<PathBuf> {
        let workspace_root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")));
        self.resolve(
            std::env::var_os(self.env),
            workspace_root,
            std::env::var_os("PATH"),
        )
    }

    /// The lookup behind [`Tool::find`], with its inputs passed in.
    pub fn resolve(
        &self,
        from_env: Option<OsString>,
        workspace_root: &Path,
        path_var: Option<OsString>,
    ) -> anyhow::Result<PathBuf> {
        let (name, env, hint) = (self.name, self.env, self.install_hint);
        if let Some(value) = from_env.filter(|v| !v.is_empty()) {
            let named = PathBuf::from(&value);
            let found = if named.components().count() == 1 && !named.is_absolute() {
                find_on_path(&named, path_var.as_ref())
            } else {
                Some(named.clone()).filter(|p| is_executable(p))
            };
            return found.with_context(|| {
                format!(
                    "{env}={} is not an executable {name}; {hint}",
                    named.display()
                )
            });
        }
        let tools_bin = workspace_root.join(".tools/bin").join(name);
        if is_executable(&tools_bin) {
            return Ok(tools_bin);
        }
        find_on_path(Path::new(name), path_var.as_ref()).with_context(|| {
            format!(
                "{name} not found ({env} unset, no {}, none on PATH); {hint}",
                tools_bin.display()
            )
        })
    }
}

fn find_on_path(name: &Path, path_var: Option<&OsString>) -> Option<PathBuf> {
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// An existing file (after following links) with an execute bit.
fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// One server process at a time, its runs' output appended to one log.
#[derive(Debug)]
pub(crate) struct Daemon {
    bin: PathBuf,
    log_path: PathBuf,
    /// `None` when not running.
    child: Option<Child>,
}

impl Daemon {
    pub fn new(bin: PathBuf, log_path: PathBuf) -> Daemon {
        Daemon {
            bin,
            log_path,
            child: None,
        }
    }

    pub fn log_contents(&self) -> String {
        read_log(&self.log_path)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Spawns the binary with `args` (after killing a running one), then polls until
    /// `ready` finds what it looks for in this run's output and a TCP connect to the port
    /// it returns succeeds. On failure the process is killed and the error carries the log.
    pub async fn run<I, S>(
        &mut self,
        args: I,
        timeout: Duration,
        ready: impl Fn(&str) -> Option<u16>,
    ) -> anyhow::Result<u16>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.kill()?;
        let log_offset = fs::metadata(&self.log_path).map_or(0, |m| m.len());
        let log = open_log(&self.log_path)?;
        let log_for_stderr = log.try_clone().context("duplicating a log handle")?;
        let child = Command::new(&self.bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        match self.wait_ready(log_offset, timeout, ready).await {
            Ok(port) => Ok(port),
            Err(err) => {
                let _ = self.kill();
                Err(err.context(format!(
                    "{} did not become ready; its log:\n{}",
                    self.bin.display(),
                    self.log_contents()
                )))
            }
        }
    }

    async fn wait_ready(
        &mut self,
        log_offset: u64,
        timeout: Duration,
        ready: impl Fn(&str) -> Option<u16>,
    ) -> anyhow::Result<u16> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait().context("checking on the server")?,
                None => anyhow::bail!("the server is not running"),
            };
            if let Some(status) = exited {
                self.child = None;
                anyhow::bail!("the server exited early ({status})");
            }
            let log = read_log_from(&self.log_path, log_offset);
            if let Some(port) = ready(&log)
                && tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            {
                return Ok(port);
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("timed out after {timeout:?}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// SIGKILL, then waits for the process to be gone. Does nothing if it is not running.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            // Fails only if it already exited, which is as good.
            let _ = child.kill();
            child
                .wait()
                .context("waiting for a killed server to exit")?;
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// The log from byte `offset` on (all of it if the file shrank).
fn read_log_from(path: &Path, offset: u64) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset).unwrap_or(0);
    let tail = bytes.get(start..).unwrap_or(&bytes);
    String::from_utf8_lossy(tail).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOOL: Tool = Tool {
        name: "some-server",
        env: "SOME_SERVER",
        install_hint: "install it",
    };

    fn executable(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn env_then_tools_bin_then_path() {
        let root = tempfile::tempdir().unwrap();
        let on_path = tempfile::tempdir().unwrap();
        let path_var = Some(on_path.path().as_os_str().to_owned());
        let in_path = executable(on_path.path(), "some-server");
        assert_eq!(
            TOOL.resolve(None, root.path(), path_var.clone()).unwrap(),
            in_path
        );

        fs::create_dir_all(root.path().join(".tools/bin")).unwrap();
        let tools = executable(&root.path().join(".tools/bin"), "some-server");
        assert_eq!(
            TOOL.resolve(None, root.path(), path_var.clone()).unwrap(),
            tools
        );

        let other = executable(on_path.path(), "other");
        let by_path = TOOL.resolve(Some(other.clone().into()), root.path(), path_var.clone());
        assert_eq!(by_path.unwrap(), other);
        let by_name = TOOL.resolve(Some("other".into()), root.path(), path_var.clone());
        assert_eq!(by_name.unwrap(), other);
        let missing = TOOL.resolve(Some("/nope/x".into()), root.path(), path_var);
        let err = format!("{:#}", missing.unwrap_err());
        assert!(
            err.contains("SOME_SERVER") && err.contains("install it"),
            "{err}"
        );
    }

    #[test]
    fn nothing_found_names_the_variable_and_the_hint() {
        let root = tempfile::tempdir().unwrap();
        let err = TOOL.resolve(None, root.path(), None).unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("SOME_SERVER") && err.contains("install it"),
            "{err}"
        );
    }
}
