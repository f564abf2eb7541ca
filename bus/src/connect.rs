//! Connecting to NATS the same way in every process (node, edge, `cartwheel cluster`,
//! the bench): one identity at most, TLS with a custom CA and client certificates, fast
//! dead-connection detection, a bounded wait for a server that is still starting, and
//! refused credentials reported at once. [`NatsAuth`] is the one set of flags and
//! `CARTWHEEL_NATS_*` variables for it (named after the `nats` CLI's).

use async_nats::{Client, ConnectErrorKind, ConnectOptions};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How often a client pings its NATS server; two pings without an answer end the
/// connection and the client moves to another server of the cluster.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);
/// How long one connect attempt (also a reconnect to one server) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long [`connect`] keeps trying a server that does not answer yet.
pub const CONNECT_WAIT: Duration = Duration::from_secs(30);

/// How a process authenticates to NATS and secures the connection. At most one
/// identity: a `.creds` file, an NKey seed, a user and password, or a token.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NatsAuth {
    /// A `.creds` file (decentralised JWT auth: the user JWT and its NKey seed).
    #[arg(long, env = "CARTWHEEL_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// A file holding an NKey user seed (`SU…`).
    #[arg(long, env = "CARTWHEEL_NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,
    /// User name (with `--nats-password`).
    #[arg(long, env = "CARTWHEEL_NATS_USER")]
    pub nats_user: Option<String>,
    /// Password of `--nats-user`.
    #[arg(long, env = "CARTWHEEL_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// Authentication token.
    #[arg(long, env = "CARTWHEEL_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// PEM CA certificate(s) to verify the servers with; requires TLS.
    #[arg(long, env = "CARTWHEEL_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// PEM client certificate (mTLS), with `--nats-tls-key`.
    #[arg(long, env = "CARTWHEEL_NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,
    /// PEM private key of `--nats-tls-cert`.
    #[arg(long, env = "CARTWHEEL_NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The settings contradict each other or name a file that cannot be read.
    #[error("{0}")]
    Settings(String),
    /// The server refused the credentials or the certificates: waiting does not help.
    #[error("connecting to NATS at {url} was refused: {message} ({hint})")]
    Refused {
        /// The URL(s), passwords hidden.
        url: String,
        /// The client's error.
        message: String,
        /// What to check.
        hint: &'static str,
    },
    /// No server answered within [`CONNECT_WAIT`].
    #[error("connecting to NATS at {url} (gave up after {} s): {message}", CONNECT_WAIT.as_secs())]
    Unreachable {
        /// The URL(s), passwords hidden.
        url: String,
        /// The last attempt's error.
        message: String,
    },
}

/// NATS URL(s) as logs may show them: every password replaced by `***`.
pub fn redacted(urls: &str) -> String {
    urls.split(',')
        .map(|u| crate::redact::redact(u.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The `user:password` (or a lone token) of the first URL that has one, percent-decoded
/// (`p%40ss` is `p@ss`, as the nats CLI reads it).
fn url_credentials(servers: &[String]) -> Option<(String, Option<String>)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    servers.iter().find_map(|url| {
        let (user, password) = crate::redact::userinfo(url)?;
        Some((decode(user), password.map(decode)))
    })
}

/// Whether a connect error is a TLS handshake that failed on a certificate (unknown
/// issuer, a client certificate the server wants): it comes wrapped in an I/O error.
fn tls_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Applies `auth` to connection options: one identity at most (with none given, the
/// `user:password` or token of a server URL, as the nats CLI reads it), TLS when a CA or
/// a client certificate is given.
async fn with_auth(
    mut o: ConnectOptions,
    auth: &NatsAuth,
    servers: &[String],
) -> Result<ConnectOptions, ConnectError> {
    let identities = [
        auth.nats_creds.is_some(),
        auth.nats_nkey.is_some(),
        auth.nats_user.is_some() || auth.nats_password.is_some(),
        auth.nats_token.is_some(),
    ];
    let given = identities.iter().filter(|x| **x).count();
    if given > 1 {
        return Err(ConnectError::Settings(
            "give one NATS identity: CARTWHEEL_NATS_CREDS, CARTWHEEL_NATS_NKEY, \
             CARTWHEEL_NATS_USER with CARTWHEEL_NATS_PASSWORD, or CARTWHEEL_NATS_TOKEN"
                .to_owned(),
        ));
    }
    if given == 0 {
        match url_credentials(servers) {
            Some((user, Some(password))) => o = o.user_and_password(user, password),
            Some((token, None)) => o = o.token(token),
            None => {}
        }
    }
    if let Some(path) = &auth.nats_creds {
        o = o.credentials_file(path).await.map_err(|e| {
            ConnectError::Settings(format!("reading NATS credentials {}: {e}", path.display()))
        })?;
    }
    if let Some(path) = &auth.nats_nkey {
        let seed = std::fs::read_to_string(path).map_err(|e| {
            ConnectError::Settings(format!("reading the NKey seed {}: {e}", path.display()))
        })?;
        o = o.nkey(seed.trim().to_owned());
    }
    match (&auth.nats_user, &auth.nats_password) {
        (Some(u), Some(p)) => o = o.user_and_password(u.clone(), p.clone()),
        (None, None) => {}
        _ => {
            return Err(ConnectError::Settings(
                "CARTWHEEL_NATS_USER and CARTWHEEL_NATS_PASSWORD go together".to_owned(),
            ));
        }
    }
    if let Some(token) = &auth.nats_token {
        o = o.token(token.clone());
    }
    if let Some(ca) = &auth.nats_tls_ca {
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    match (&auth.nats_tls_cert, &auth.nats_tls_key) {
        (Some(cert), Some(key)) => {
            o = o
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        (None, None) => {}
        _ => {
            return Err(ConnectError::Settings(
                "CARTWHEEL_NATS_TLS_CERT and CARTWHEEL_NATS_TLS_KEY go together".to_owned(),
            ));
        }
    }
    Ok(o)
}

/// Connects to NATS (`url` may list several servers, comma-separated) as `name`. Retries
/// for up to [`CONNECT_WAIT`] so processes may start before their NATS server, then
/// fails with a clear error; refused credentials or certificates fail at once. Passwords
/// in `url` never reach a log line or an error.
pub async fn connect(url: &str, name: &str, auth: &NatsAuth) -> Result<Client, ConnectError> {
    let shown = redacted(url);
    let servers: Vec<String> = url
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if servers.is_empty() {
        return Err(ConnectError::Settings("no NATS URL given".to_owned()));
    }
    let started = Instant::now();
    loop {
        let options = ConnectOptions::new()
            .name(name)
            // A dead connection (a server gone without a FIN, a black-holed route) is
            // noticed after two unanswered pings: within 2–3 s, not the default 2 minutes.
            .ping_interval(PING_INTERVAL)
            .connection_timeout(CONNECT_TIMEOUT);
        let attempt = with_auth(options, auth, &servers)
            .await?
            .connect(servers.clone())
            .await;
        match attempt {
            Ok(c) => return Ok(c),
            Err(e)
                if matches!(
                    e.kind(),
                    ConnectErrorKind::Authentication
                        | ConnectErrorKind::AuthorizationViolation
                        | ConnectErrorKind::Tls
                ) || tls_refused(&e) =>
            {
                let hint = if tls_refused(&e) {
                    "TLS: check CARTWHEEL_NATS_TLS_CA, CARTWHEEL_NATS_TLS_CERT and CARTWHEEL_NATS_TLS_KEY"
                } else {
                    "check the NATS credentials"
                };
                return Err(ConnectError::Refused {
                    url: shown,
                    message: e.to_string(),
                    hint,
                });
            }
            Err(e) if started.elapsed() < CONNECT_WAIT => {
                tracing::warn!(url = %shown, error = %e, "NATS not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(ConnectError::Unreachable {
                    url: shown,
                    message: e.to_string(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_come_from_the_first_url_that_has_them() {
        let urls = |s: &[&str]| s.iter().map(|u| (*u).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            url_credentials(&urls(&["nats://a:4222", "nats://u:p%40@b:4222"])),
            Some(("u".to_owned(), Some("p@".to_owned())))
        );
        assert_eq!(
            url_credentials(&urls(&["nats://tok@a:4222"])),
            Some(("tok".to_owned(), None))
        );
        assert_eq!(url_credentials(&urls(&["nats://a:4222/x@y"])), None);
        assert_eq!(
            redacted("nats://u:secret@a:4222, nats://b:4222"),
            "nats://u:***@a:4222,nats://b:4222"
        );
    }
}
