//! The private `nats-server -js` child of `cartwheel up`: loopback only, and with
//! authentication on — a user and a random password generated into the data dir on the
//! first start (`nats-credentials`, mode 0600) and kept, so other processes on the
//! machine cannot reach the buckets and streams without reading that file.

use crate::config::NatsSync;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// A running private nats-server.
pub struct NatsChild {
    child: Child,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    /// The user `up` connects as.
    pub user: String,
    /// Its password.
    pub password: String,
}

/// The user of the private server.
const USER: &str = "cartwheel";
/// Where its password is kept.
const CREDENTIALS_FILE: &str = "nats-credentials";

/// The password of the private server: read from the data dir, or generated there (0600).
fn password(data_dir: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = data_dir.join(CREDENTIALS_FILE);
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Some(p) = text
            .lines()
            .find_map(|l| l.strip_prefix("password="))
            .filter(|p| p.len() >= 32)
    {
        return Ok(p.to_owned());
    }
    let password = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let text = format!(
        "# The private nats-server of `cartwheel up` (loopback only). For the nats CLI:\n\
         #   nats --server nats://127.0.0.1:PORT --user {USER} --password PASSWORD\n\
         user={USER}\npassword={password}\n"
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(password)
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(l.local_addr()?.port())
}

fn check_version(bin: &Path) -> anyhow::Result<()> {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "cannot run {} (install nats-server 2.10+; `scripts/setup` does, or set CARTWHEEL_NATS_SERVER)",
                bin.display()
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "nats-server: v2.12.8"
    let version = text.trim().rsplit('v').next().unwrap_or_default();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (2, 10) {
        bail!(
            "{} is version {version}; Cartwheel needs nats-server 2.10 or newer (scripts/setup installs one)",
            bin.display()
        );
    }
    Ok(())
}

const PID_FILE: &str = "nats-server.pid";

/// A `cartwheel up` killed with `kill -9` leaves its nats-server running on the data dir.
/// Stop that one (SIGTERM, then wait) before starting a new one on the same store.
async fn stop_stale(data_dir: &Path) {
    let Ok(pid) = std::fs::read_to_string(data_dir.join(PID_FILE)) else {
        return;
    };
    let pid = pid.trim().to_owned();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    let ours = data_dir.join("nats-server.conf");
    if !cmdline.contains("nats-server") || !cmdline.contains(&*ours.to_string_lossy()) {
        return;
    }
    tracing::warn!(pid = %pid, "stopping a nats-server left running on this data dir by an earlier crash");
    let _ = Command::new("kill").arg("-TERM").arg(&pid).status().await;
    let started = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && started.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl NatsChild {
    /// Starts `bin` with JetStream under `data_dir/nats`, listening on a free loopback
    /// port, and waits until it accepts connections.
    pub async fn start(bin: &Path, data_dir: &Path, sync: NatsSync) -> anyhow::Result<NatsChild> {
        check_version(bin)?;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data dir {}", data_dir.display()))?;
        let data_dir: PathBuf = std::fs::canonicalize(data_dir)?;
        let port = free_port()?;
        let store = data_dir.join("nats");
        let sync_line = match sync {
            NatsSync::Always => "  sync_interval: always\n",
            NatsSync::Default => "",
        };
        let password = password(&data_dir)?;
        let conf = format!(
            "# Written by `cartwheel up`; rewritten on every start.\nlisten: 127.0.0.1:{port}\nauthorization {{\n  user: {USER:?}\n  password: {password:?}\n}}\njetstream {{\n  store_dir: {store:?}\n{sync_line}}}\n"
        );
        stop_stale(&data_dir).await;
        let conf_path = data_dir.join("nats-server.conf");
        std::fs::write(&conf_path, conf).context("writing nats-server.conf")?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&conf_path, std::fs::Permissions::from_mode(0o600))?;
        }
        let log = std::fs::File::create(data_dir.join("nats-server.log"))?;
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "nats-server exited at start ({status}); see {}",
                    data_dir.join("nats-server.log").display()
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(15) {
                bail!("nats-server did not accept connections within 15 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(pid) = child.id() {
            let _ = std::fs::write(data_dir.join(PID_FILE), pid.to_string());
        }
        Ok(NatsChild {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            user: USER.to_owned(),
            password,
        })
    }

    /// Asks the server to shut down (SIGTERM) and waits for it, killing it after `timeout`.
    pub async fn stop(mut self, timeout: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        if tokio::time::timeout(timeout, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!("nats-server did not stop in time; killing it");
            let _ = self.child.kill().await;
        }
    }
}
