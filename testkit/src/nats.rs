//! [`NatsServer`]: a real `nats-server` with JetStream for one test.
//!
//! Each server listens on its own loopback port and keeps its JetStream data in its own
//! directory, so tests run in parallel. It can be killed with SIGKILL and restarted on the
//! same port and data to test what survives a crash. Dropping it kills the process and
//! deletes its temporary directory (log, config and, unless the caller supplied one, the
//! store dir).
//!
//! Like nats-io/nats.rs's `nats-server` test crate, the first start lets the server pick its
//! own port (`-p -1`) and reads it from the log, which avoids the race of choosing a free
//! port in advance; restarts ask for that port again.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use tempfile::TempDir;

use crate::process::{open_log, read_log};
use crate::wait::POLL_INTERVAL;

/// The environment variable that names the `nats-server` binary to use.
const BIN_ENV: &str = "CARTWHEEL_NATS_SERVER";

/// What to tell a developer whose machine has no usable `nats-server`.
const INSTALL_HINT: &str = "run scripts/setup (it installs the pinned nats-server into .tools/bin), or set CARTWHEEL_NATS_SERVER";

/// How long a server may take from spawn to "Server is ready".
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The log line that carries the client port, followed by `host:port`.
const LISTENING_LINE: &str = "Listening for client connections on ";

/// The log line nats-server writes once JetStream is up and clients are accepted.
const READY_LINE: &str = "Server is ready";

/// The `nats-server` binary tests should run.
///
/// In order: the `CARTWHEEL_NATS_SERVER` environment variable (a path, or a name looked up
/// on `PATH`); `.tools/bin/nats-server` in this workspace (where `scripts/setup` puts it);
/// `nats-server` on `PATH`.
///
/// # Panics
///
/// When none of these is an executable file, with a hint to run `scripts/setup`. Use
/// [`try_nats_server_bin`] to get an error instead.
pub fn nats_server_bin() -> PathBuf {
    match try_nats_server_bin() {
        Ok(bin) => bin,
        Err(err) => panic!("{err:#}"),
    }
}

/// Like [`nats_server_bin`], but an error instead of a panic when there is none.
pub fn try_nats_server_bin() -> anyhow::Result<PathBuf> {
    let workspace_root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")));
    resolve_bin(
        std::env::var_os(BIN_ENV),
        workspace_root,
        std::env::var_os("PATH"),
    )
}

/// The lookup behind [`try_nats_server_bin`], with its inputs passed in so it can be tested
/// without touching the process environment.
fn resolve_bin(
    from_env: Option<OsString>,
    workspace_root: &Path,
    path_var: Option<OsString>,
) -> anyhow::Result<PathBuf> {
    if let Some(value) = from_env.filter(|v| !v.is_empty()) {
        let named = PathBuf::from(&value);
        // A bare name is looked up on PATH, as a shell would; anything else is a path.
        let found = if named.components().count() == 1 && !named.is_absolute() {
            find_on_path(&named, path_var.as_ref())
        } else {
            Some(named.clone()).filter(|p| is_executable(p))
        };
        return found.with_context(|| {
            format!(
                "{BIN_ENV}={} is not an executable nats-server; {INSTALL_HINT}",
                named.display()
            )
        });
    }
    let tools_bin = workspace_root.join(".tools/bin/nats-server");
    if is_executable(&tools_bin) {
        return Ok(tools_bin);
    }
    find_on_path(Path::new("nats-server"), path_var.as_ref()).with_context(|| {
        format!(
            "nats-server not found ({BIN_ENV} unset, no {}, none on PATH); {INSTALL_HINT}",
            tools_bin.display()
        )
    })
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

/// How to start a [`NatsServer`]; `Default` is what [`NatsServer::start`] uses.
#[derive(Debug, Clone, Default)]
pub struct NatsServerOptions {
    /// Flush every JetStream write to disk before acknowledging it (`sync_interval:
    /// always`), so acknowledged data survives a power cut, not only a process crash.
    /// Slower; the default flushes every two minutes like a stock server.
    pub sync_always: bool,
    /// Keep JetStream data here instead of in the server's temporary directory. The
    /// directory is created if missing and is not deleted on drop.
    pub store_dir: Option<PathBuf>,
    /// More command-line flags (`--user`/`--pass`, `--auth`, `--tls…`, `-c FILE`), as
    /// given; they come after the port and store flags, which win over a config file's.
    /// With none, the server requires the generated user and password that [`NatsServer::url`]
    /// carries; with some, the flags say how clients authenticate (and the URL has no
    /// credentials).
    pub extra_args: Vec<String>,
    /// Environment variables for the server (a config file's `$VARIABLE`s).
    pub envs: Vec<(String, String)>,
}

/// A running `nats-server -js` on 127.0.0.1, killed and cleaned up on drop.
#[derive(Debug)]
pub struct NatsServer {
    bin: PathBuf,
    /// The client port; chosen by the server at the first start and reused by restarts.
    port: u16,
    store_dir: PathBuf,
    /// The config file that turns on `sync_interval: always`, if asked for.
    config_path: Option<PathBuf>,
    /// More flags, for every run.
    extra_args: Vec<String>,
    /// Its environment, for every run.
    envs: Vec<(String, String)>,
    /// The user and password it requires (none when `extra_args` say how to sign in).
    credentials: Option<(String, String)>,
    /// stdout and stderr of every run, appended.
    log_path: PathBuf,
    /// `None` after [`NatsServer::kill`].
    child: Option<Child>,
    /// Holds the log, the config and the default store dir. Declared last so it is deleted
    /// only after `Drop::drop` has killed the server.
    tmp: TempDir,
}

impl NatsServer {
    /// Starts a server with JetStream in a fresh temporary store dir and waits until it is
    /// ready to accept clients.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(NatsServerOptions::default()).await
    }

    /// Starts a server whose JetStream data lives in `dir` (kept after drop), so a later
    /// server can be started on the same data.
    pub async fn start_with_dir(dir: PathBuf) -> anyhow::Result<Self> {
        Self::start_with(NatsServerOptions {
            store_dir: Some(dir),
            ..NatsServerOptions::default()
        })
        .await
    }

    /// Starts a server as `options` say and waits until it is ready to accept clients.
    pub async fn start_with(options: NatsServerOptions) -> anyhow::Result<Self> {
        let bin = try_nats_server_bin()?;
        let tmp = tempfile::Builder::new()
            .prefix("cartwheel-nats-")
            .tempdir()
            .context("creating a temporary directory for nats-server")?;
        let store_dir = options.store_dir.unwrap_or_else(|| tmp.path().join("js"));
        fs::create_dir_all(&store_dir)
            .with_context(|| format!("creating store dir {}", store_dir.display()))?;
        let config_path = if options.sync_always {
            let path = tmp.path().join("nats-server.conf");
            fs::write(&path, sync_always_config(&store_dir))
                .with_context(|| format!("writing {}", path.display()))?;
            Some(path)
        } else {
            None
        };
        let mut server = Self {
            bin,
            port: 0,
            store_dir,
            config_path,
            credentials: options
                .extra_args
                .is_empty()
                .then(|| (TEST_USER.to_owned(), test_password())),
            extra_args: options.extra_args,
            envs: options.envs,
            log_path: tmp.path().join("nats-server.log"),
            child: None,
            tmp,
        };
        server.run().await?;
        Ok(server)
    }

    /// The URL clients connect to: `nats://USER:PASSWORD@127.0.0.1:PORT` (or without
    /// credentials when the options' flags say how to sign in). Cartwheel's processes read
    /// the credentials from the URL; test code connects with [`connect`], which does too
    /// (async-nats itself ignores credentials in URLs).
    pub fn url(&self) -> String {
        match &self.credentials {
            Some((user, password)) => format!("nats://{user}:{password}@127.0.0.1:{}", self.port),
            None => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    /// The user and password the server requires, if it was started with them.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The client port on 127.0.0.1; the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where JetStream keeps its data (nats-server adds a `jetstream/` folder inside).
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// The server's temporary directory (log, config, default store dir); deleted on drop.
    pub fn temp_dir(&self) -> &Path {
        self.tmp.path()
    }

    /// The process id of the running server, or `None` after [`NatsServer::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Where the server's output goes, across restarts.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The server's output so far, for debugging a failed test.
    pub fn log_contents(&self) -> String {
        read_log(&self.log_path)
    }

    /// Crashes the server: SIGKILL, then waits for it to be gone. No shutdown, no flush:
    /// what survives is what a real crash would leave. Does nothing if it is not running.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            // Fails only if it already exited, which is as good.
            let _ = child.kill();
            child
                .wait()
                .context("waiting for the killed nats-server to exit")?;
        }
        Ok(())
    }

    /// Starts the server again on the same port with the same store dir and options (after
    /// killing it if it still runs) and waits until it is ready.
    ///
    /// Fails if another process took the port meanwhile; the error includes the log.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        self.run().await
    }

    /// Spawns nats-server (on `self.port`, or a port of its choosing if that is 0) and
    /// waits until it is ready.
    async fn run(&mut self) -> anyhow::Result<()> {
        // Only the output of this run counts when looking for the ready lines.
        let log_offset = fs::metadata(&self.log_path).map_or(0, |m| m.len());
        let log = open_log(&self.log_path)?;
        let log_for_stderr = log
            .try_clone()
            .context("duplicating the nats-server log handle")?;

        let port_arg = if self.port == 0 {
            "-1".to_owned()
        } else {
            self.port.to_string()
        };
        let mut command = Command::new(&self.bin);
        command.args(["-a", "127.0.0.1", "-p", &port_arg, "-js"]);
        match &self.config_path {
            Some(config) => command.arg("-c").arg(config),
            None => command.arg("-sd").arg(&self.store_dir),
        };
        if let Some((user, password)) = &self.credentials {
            command.args(["--user", user, "--pass", password]);
        }
        command.args(&self.extra_args);
        command.envs(self.envs.iter().map(|(k, v)| (k, v)));
        command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);

        match self.wait_ready(log_offset).await {
            Ok(port) => {
                self.port = port;
                Ok(())
            }
            Err(err) => {
                let _ = self.kill();
                Err(err.context(format!(
                    "nats-server {} did not become ready; its log:\n{}",
                    self.bin.display(),
                    self.log_contents()
                )))
            }
        }
    }

    /// Polls until the log of this run (from `log_offset`) says the server is ready and a
    /// TCP connect to its port succeeds; returns the port.
    async fn wait_ready(&mut self, log_offset: u64) -> anyhow::Result<u16> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait().context("checking on nats-server")?,
                None => anyhow::bail!("nats-server is not running"),
            };
            if let Some(status) = exited {
                self.child = None;
                anyhow::bail!("nats-server exited early ({status})");
            }
            let log = read_log_from(&self.log_path, log_offset);
            if let Some(port) = listening_port(&log).filter(|_| log.contains(READY_LINE))
                && tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            {
                return Ok(port);
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("timed out after {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // Nothing useful to do with an error here; the temporary directory goes next.
        let _ = self.kill();
    }
}

/// A config that keeps JetStream in `store_dir` and syncs every write.
fn sync_always_config(store_dir: &Path) -> String {
    let quoted = store_dir
        .to_string_lossy()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!("jetstream {{\n  store_dir: \"{quoted}\"\n  sync_interval: always\n}}\n")
}

/// The log from byte `offset` on (all of it if the file shrank).
fn read_log_from(path: &Path, offset: u64) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset).unwrap_or(0);
    let tail = bytes.get(start..).unwrap_or(&bytes);
    String::from_utf8_lossy(tail).into_owned()
}

/// The client port from "Listening for client connections on 127.0.0.1:PORT".
fn listening_port(log: &str) -> Option<u16> {
    let rest = &log[log.find(LISTENING_LINE)? + LISTENING_LINE.len()..];
    let addr = rest.lines().next()?.trim();
    addr.rsplit_once(':')?.1.parse().ok()
}

/// The user every test server requires (with a password made per server).
pub(crate) const TEST_USER: &str = "cw";

/// A password for one test server: random enough that no other test's client gets in.
pub(crate) fn test_password() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// Connection options for `urls` (comma-separated) with the `user:password` of the first
/// URL that has one, the way Cartwheel's processes read them.
pub fn connect_options(urls: &str) -> async_nats::ConnectOptions {
    let credentials = urls.split(',').find_map(|url| {
        let rest = url.trim().split_once("://")?.1;
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        let (user, password) = authority.rsplit_once('@')?.0.split_once(':')?;
        Some((user.to_owned(), password.to_owned()))
    });
    match credentials {
        Some((user, password)) => {
            async_nats::ConnectOptions::new().user_and_password(user, password)
        }
        None => async_nats::ConnectOptions::new(),
    }
}

/// Connects to `urls` (comma-separated) with their credentials (see [`connect_options`]).
pub async fn connect(urls: &str) -> anyhow::Result<async_nats::Client> {
    let servers = urls
        .split(',')
        .map(|u| u.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad NATS URL(s) {urls}"))?;
    connect_options(urls)
        .connect(servers)
        .await
        .with_context(|| format!("connecting to {urls}"))
}

#[cfg(test)]
mod tests;
