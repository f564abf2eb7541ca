//! A NATS cluster on loopback: three (or more) `nats-server -js` processes routed
//! together, for tests of replicated streams and buckets and of losing a server.

use crate::nats::{TEST_USER, test_password, try_nats_server_bin};
use crate::port::try_free_port;
use crate::process::ChildProcess;
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tempfile::TempDir;

struct Member {
    port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<ChildProcess>,
}

/// A running cluster of `nats-server` processes sharing JetStream (meta group and R3
/// assets), each with its own store dir, killed and cleaned up on drop.
pub struct NatsCluster {
    bin: PathBuf,
    members: Vec<Member>,
    /// The password every member requires of user [`TEST_USER`].
    password: String,
    _tmp: TempDir,
}

impl std::fmt::Debug for NatsCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCluster")
            .field("urls", &self.urls())
            .finish_non_exhaustive()
    }
}

impl NatsCluster {
    /// Starts `size` servers routed into one cluster and waits until JetStream has a
    /// metadata leader.
    pub async fn start(size: usize) -> anyhow::Result<NatsCluster> {
        Self::start_with(size, false).await
    }

    /// The same; with `sync_always` every JetStream write is flushed to disk before it is
    /// acknowledged (`sync_interval: always`), as a cluster that must survive power loss
    /// runs. Servers do not advertise their client URLs to clients (`no_advertise`), so a
    /// client that reaches them through proxies keeps doing so after a reconnect.
    pub async fn start_with(size: usize, sync_always: bool) -> anyhow::Result<NatsCluster> {
        let bin = try_nats_server_bin()?;
        let tmp = tempfile::Builder::new()
            .prefix("cartwheel-nats-cluster-")
            .tempdir()?;
        let ports: Vec<(u16, u16)> = (0..size)
            .map(|_| Ok((try_free_port()?, try_free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, c)| format!("nats-route://127.0.0.1:{c}"))
            .collect();
        let mut members = Vec::new();
        let password = test_password();
        for (i, (port, cport)) in ports.iter().enumerate() {
            let dir = tmp.path().join(format!("n{i}"));
            std::fs::create_dir_all(dir.join("js"))?;
            let config = dir.join("nats-server.conf");
            std::fs::write(
                &config,
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{port}\nauthorization {{\n  user: {TEST_USER}\n  password: {password:?}\n}}\njetstream {{\n  store_dir: {:?}\n{}}}\ncluster {{\n  name: cw-test\n  listen: 127.0.0.1:{cport}\n  no_advertise: true\n  routes: [{}]\n}}\n",
                    dir.join("js"),
                    if sync_always {
                        "  sync_interval: always\n"
                    } else {
                        ""
                    },
                    routes.join(", ")
                ),
            )?;
            members.push(Member {
                port: *port,
                config,
                log: dir.join("nats-server.log"),
                child: None,
            });
        }
        let mut cluster = NatsCluster {
            bin,
            members,
            password,
            _tmp: tmp,
        };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &mut self.members[i];
        let child = ChildProcess::spawn(
            &self.bin,
            ["-c".to_string(), m.config.display().to_string()],
            std::iter::empty::<(String, String)>(),
            m.log.clone(),
        )?;
        m.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut up = 0;
            let mut leader = false;
            for m in &self.members {
                if m.child.is_none() {
                    continue;
                }
                let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                if log.contains("Server is ready")
                    && tokio::net::TcpStream::connect(("127.0.0.1", m.port))
                        .await
                        .is_ok()
                {
                    up += 1;
                }
                if log.contains("JetStream cluster new metadata leader")
                    || log.contains("new metadata leader")
                {
                    leader = true;
                }
            }
            let wanted = self.members.iter().filter(|m| m.child.is_some()).count();
            if up == wanted && leader {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "cluster not ready after 30 s ({up}/{wanted} up, leader: {leader}); log of n0:\n{}",
                    std::fs::read_to_string(&self.members[0].log).unwrap_or_default()
                );
            }
            tokio::time::sleep(crate::POLL_INTERVAL).await;
        }
    }

    /// Every member's URL, comma-separated (what a client connects to), with the user
    /// and password every member requires (see [`crate::connect`]).
    pub fn urls(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("nats://{TEST_USER}:{}@127.0.0.1:{}", self.password, m.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The user and password every member requires.
    pub fn credentials(&self) -> (&str, &str) {
        (TEST_USER, &self.password)
    }

    /// Every member's client port, in member order.
    pub fn ports(&self) -> Vec<u16> {
        self.members.iter().map(|m| m.port).collect()
    }

    /// Kills member `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let m = self.members.get_mut(i).context("no such member")?;
        if let Some(mut c) = m.child.take() {
            c.kill9()?;
        }
        Ok(())
    }

    /// Starts member `i` again on its port and store dir, and waits until it is ready.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i)?;
        self.spawn(i)?;
        self.wait_ready().await
    }
}
