//! [`RedisServer`]: a real `redis-server` for one test.
//!
//! Each server listens on its own loopback port and keeps its data in its own directory,
//! with the append-only file on (`appendfsync everysec`) and RDB snapshots off, as
//! Cartwheel's carts want it in production. It can be killed with SIGKILL and restarted on
//! the same port and data. Dropping it kills the process and deletes its temporary
//! directory.
//!
//! redis-server cannot pick its own port and report it (`--port 0` turns TCP off), so the
//! first start takes a free port from [`try_free_port`] and tries another if that one was
//! taken meanwhile.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tempfile::TempDir;

use crate::daemon::{Daemon, Tool};
use crate::port::try_free_port;

const TOOL: Tool = Tool {
    name: "redis-server",
    env: "CARTWHEEL_REDIS_SERVER",
    install_hint: "run scripts/setup (it installs Debian's redis-server), or set CARTWHEEL_REDIS_SERVER",
};

/// How long a server may take from spawn to "Ready to accept connections".
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The log line redis-server writes once it accepts clients (after loading its data).
const READY_LINE: &str = "Ready to accept connections";

/// How many ports the first start tries.
const PORT_ATTEMPTS: usize = 5;

/// The `redis-server` binary tests should run: `CARTWHEEL_REDIS_SERVER` (a path, or a name
/// looked up on `PATH`), else `.tools/bin/redis-server` in this workspace, else
/// `redis-server` on `PATH`.
pub fn try_redis_server_bin() -> anyhow::Result<PathBuf> {
    TOOL.find()
}

/// How to start a [`RedisServer`]; `Default` is what [`RedisServer::start`] uses.
#[derive(Debug, Clone)]
pub struct RedisServerOptions {
    /// Turn the append-only file on (`appendonly yes`, the default). Off, a restart loses
    /// everything: for testing the start-up warning.
    pub append_only: bool,
    /// More `--name value` arguments for redis-server, e.g. `["--rename-command", "CONFIG",
    /// ""]` to disable `CONFIG` as managed Redis services do.
    pub extra_args: Vec<String>,
}

impl Default for RedisServerOptions {
    fn default() -> Self {
        RedisServerOptions {
            append_only: true,
            extra_args: Vec::new(),
        }
    }
}

/// A running `redis-server` on 127.0.0.1, killed and cleaned up on drop.
#[derive(Debug)]
pub struct RedisServer {
    options: RedisServerOptions,
    port: u16,
    data_dir: PathBuf,
    daemon: Daemon,
    /// Holds the log and the data. Declared last so it is deleted only after the daemon
    /// was killed.
    tmp: TempDir,
}

impl RedisServer {
    /// Starts a server with the append-only file on, in a fresh temporary data dir, and
    /// waits until it accepts clients.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(RedisServerOptions::default()).await
    }

    /// Starts a server as `options` say and waits until it accepts clients.
    pub async fn start_with(options: RedisServerOptions) -> anyhow::Result<Self> {
        let bin = try_redis_server_bin()?;
        let tmp = tempfile::Builder::new()
            .prefix("cartwheel-redis-")
            .tempdir()
            .context("creating a temporary directory for redis-server")?;
        let data_dir = tmp.path().join("data");
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let daemon = Daemon::new(bin, tmp.path().join("redis-server.log"));
        let mut server = RedisServer {
            options,
            port: 0,
            data_dir,
            daemon,
            tmp,
        };
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            server.port = try_free_port()?;
            match server.run().await {
                Ok(()) => return Ok(server),
                // Most likely someone took the port between choosing and binding it.
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error
            .unwrap_or_else(|| anyhow::anyhow!("no attempt made"))
            .context(format!(
                "redis-server did not start in {PORT_ATTEMPTS} attempts"
            )))
    }

    /// The URL clients connect to: `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port on 127.0.0.1; the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the server keeps its data (the append-only file's folder is inside).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's temporary directory (log and data); deleted on drop.
    pub fn temp_dir(&self) -> &Path {
        self.tmp.path()
    }

    /// The process id of the running server, or `None` after [`RedisServer::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// The server's output so far, across restarts.
    pub fn log_contents(&self) -> String {
        self.daemon.log_contents()
    }

    /// Crashes the server: SIGKILL, then waits for it to be gone. No shutdown, no final
    /// fsync: what survives is what a real crash of the process would leave.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.daemon.kill()
    }

    /// Starts the server again on the same port with the same data and options (after
    /// killing it if it still runs) and waits until it accepts clients.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.run().await
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let append_only = if self.options.append_only {
            "yes"
        } else {
            "no"
        };
        let port = self.port.to_string();
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "--bind".as_ref(),
            "127.0.0.1".as_ref(),
            "--port".as_ref(),
            port.as_ref(),
            "--dir".as_ref(),
            self.data_dir.as_os_str(),
            "--appendonly".as_ref(),
            append_only.as_ref(),
            "--appendfsync".as_ref(),
            "everysec".as_ref(),
            "--save".as_ref(),
            "".as_ref(),
            "--daemonize".as_ref(),
            "no".as_ref(),
        ];
        args.extend(self.options.extra_args.iter().map(std::ffi::OsStr::new));
        let expected = self.port;
        self.daemon
            .run(args, READY_TIMEOUT, |log| {
                log.contains(READY_LINE).then_some(expected)
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    use tokio::net::TcpStream;

    /// Sends one inline command and reads the first line of the reply.
    async fn command(port: u16, line: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        let mut reader = BufReader::new(stream);
        let mut reply = String::new();
        reader.read_line(&mut reply).await.unwrap();
        if reply.starts_with('$') {
            reply.clear();
            reader.read_line(&mut reply).await.unwrap();
        }
        reply.trim_end().to_owned()
    }

    #[tokio::test]
    async fn starts_with_aof_and_keeps_acknowledged_writes_across_kill_9() {
        let mut server = RedisServer::start().await.unwrap();
        assert_eq!(
            server.url(),
            format!("redis://127.0.0.1:{}/", server.port())
        );
        assert!(server.data_dir().starts_with(server.temp_dir()));
        assert_eq!(command(server.port(), "CONFIG GET appendonly").await, "*2");
        assert_eq!(command(server.port(), "SET k v").await, "+OK");

        let pid = server.pid();
        server.kill().unwrap();
        assert!(server.pid().is_none());
        assert!(
            TcpStream::connect(("127.0.0.1", server.port()))
                .await
                .is_err()
        );
        server.restart().await.unwrap();
        assert_ne!(server.pid(), pid);
        assert_eq!(command(server.port(), "GET k").await, "v");
    }

    #[tokio::test]
    async fn two_servers_get_different_ports_and_dirs() {
        let (a, b) = tokio::join!(
            RedisServer::start(),
            RedisServer::start_with(RedisServerOptions {
                append_only: false,
                ..RedisServerOptions::default()
            })
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_ne!(a.port(), b.port());
        assert_ne!(a.data_dir(), b.data_dir());
    }
}
