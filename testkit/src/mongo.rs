//! [`MongoServer`]: a MongoDB-wire-compatible server for one test.
//!
//! No MongoDB server package installs on our machines, so the harness runs `secantusd-py`
//! (PyPI `secantusdb`, a MongoDB-wire-compatible document database on WiredTiger;
//! `scripts/setup` installs it into `.tools/bin`). It advertises itself as the primary of
//! a one-node replica set named `secantus`, which the URL names so that the driver's
//! replica-set code paths (majority writes, retryable writes) are the ones exercised.
//!
//! Like [`NatsServer`](crate::NatsServer), the first start lets the server pick its port
//! (`--port 0`) and reads it from the log; restarts ask for that port again. Each server
//! has its own data dir and an empty config file (so no `secantusd.toml` of the machine is
//! picked up). It can be killed with SIGKILL and restarted on the same port and data.
//! Dropping it kills the process and deletes its temporary directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tempfile::TempDir;

use crate::daemon::{Daemon, Tool};

const TOOL: Tool = Tool {
    name: "secantusd-py",
    env: "CARTWHEEL_SECANTUSD",
    install_hint: "run scripts/setup (it installs PyPI secantusdb into .tools/bin), or set CARTWHEEL_SECANTUSD",
};

/// How long a server may take from spawn to listening (it is a Python program).
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The log line that carries the address, followed by `host:port`.
const LISTENING_LINE: &str = "listening on ";

/// The replica set the server advertises.
pub const REPLICA_SET: &str = "secantus";

/// The `secantusd-py` binary tests should run: `CARTWHEEL_SECANTUSD` (a path, or a name
/// looked up on `PATH`), else `.tools/bin/secantusd-py` in this workspace, else
/// `secantusd-py` on `PATH`.
pub fn try_secantusd_bin() -> anyhow::Result<PathBuf> {
    TOOL.find()
}

/// A running MongoDB-wire-compatible server on 127.0.0.1, killed and cleaned up on drop.
#[derive(Debug)]
pub struct MongoServer {
    port: u16,
    data_dir: PathBuf,
    config_path: PathBuf,
    daemon: Daemon,
    /// Holds the log, the config and the data. Declared last so it is deleted only after
    /// the daemon was killed.
    tmp: TempDir,
}

impl MongoServer {
    /// Starts a server in a fresh temporary data dir and waits until it accepts clients.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = try_secantusd_bin()?;
        let tmp = tempfile::Builder::new()
            .prefix("cartwheel-mongo-")
            .tempdir()
            .context("creating a temporary directory for secantusd")?;
        let data_dir = tmp.path().join("data");
        let config_path = tmp.path().join("secantusd.toml");
        std::fs::write(&config_path, "")
            .with_context(|| format!("writing {}", config_path.display()))?;
        let daemon = Daemon::new(bin, tmp.path().join("secantusd.log"));
        let mut server = MongoServer {
            port: 0,
            data_dir,
            config_path,
            daemon,
            tmp,
        };
        server.run().await?;
        Ok(server)
    }

    /// The URL clients connect to:
    /// `mongodb://127.0.0.1:PORT/?replicaSet=secantus`.
    pub fn url(&self) -> String {
        format!(
            "mongodb://127.0.0.1:{}/?replicaSet={REPLICA_SET}",
            self.port
        )
    }

    /// Like [`MongoServer::url`], naming `database` as the default database.
    pub fn url_with_database(&self, database: &str) -> String {
        format!(
            "mongodb://127.0.0.1:{}/{database}?replicaSet={REPLICA_SET}",
            self.port
        )
    }

    /// The port on 127.0.0.1; the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the server keeps its data.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's temporary directory (log, config and data); deleted on drop.
    pub fn temp_dir(&self) -> &Path {
        self.tmp.path()
    }

    /// The process id of the running server, or `None` after [`MongoServer::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// The server's output so far, across restarts.
    pub fn log_contents(&self) -> String {
        self.daemon.log_contents()
    }

    /// Crashes the server: SIGKILL, then waits for it to be gone.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.daemon.kill()
    }

    /// Starts the server again on the same port with the same data (after killing it if it
    /// still runs) and waits until it accepts clients.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.run().await
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let port = self.port.to_string();
        let args: Vec<&std::ffi::OsStr> = vec![
            "--config".as_ref(),
            self.config_path.as_os_str(),
            "--host".as_ref(),
            "127.0.0.1".as_ref(),
            "--port".as_ref(),
            port.as_ref(),
            "--storage-path".as_ref(),
            self.data_dir.as_os_str(),
            // INFO: the line that names the port is logged at that level.
            "--log-level".as_ref(),
            "INFO".as_ref(),
        ];
        let port = self.daemon.run(args, READY_TIMEOUT, listening_port).await?;
        self.port = port;
        Ok(())
    }
}

/// The port from "… listening on 127.0.0.1:PORT".
fn listening_port(log: &str) -> Option<u16> {
    let rest = &log[log.find(LISTENING_LINE)? + LISTENING_LINE.len()..];
    let addr = rest.lines().next()?.trim();
    addr.rsplit_once(':')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_port_from_the_log() {
        let log =
            "2026-11-22 02:12:29,128 INFO secantus.server: secantus listening on 127.0.0.1:33689\n";
        assert_eq!(listening_port(log), Some(33689));
        assert_eq!(listening_port("starting\n"), None);
    }

    #[tokio::test]
    async fn starts_and_restarts_on_the_same_port() {
        let mut server = MongoServer::start().await.unwrap();
        let port = server.port();
        assert_ne!(port, 0);
        assert_eq!(
            server.url(),
            format!("mongodb://127.0.0.1:{port}/?replicaSet=secantus")
        );
        server.kill().unwrap();
        assert!(server.pid().is_none());
        server.restart().await.unwrap();
        assert_eq!(server.port(), port);
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        );
    }
}
