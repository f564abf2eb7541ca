//! A TCP proxy on loopback that can stop forwarding: the network partition of a chaos
//! test. Put it between a client and a server, then [`TcpProxy::black_hole`] it
//! (connections stay open, no byte is delivered either way: what a pulled cable or a
//! dropped route looks like to both ends), and later [`TcpProxy::heal`] it (bytes held
//! back flow again) or [`TcpProxy::reset`] it (every connection is closed; new ones are
//! forwarded).

use crate::port::try_free_port;
use anyhow::Context;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with bytes, and which connections are current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    forwarding: bool,
    /// Connections accepted under an older generation are closed.
    generation: u64,
}

/// A running proxy; stops (closing every connection) on drop.
#[derive(Debug)]
pub struct TcpProxy {
    port: u16,
    state: watch::Sender<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<TcpProxy> {
        let port = try_free_port()?;
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("binding the proxy to 127.0.0.1:{port}"))?;
        let (state, _) = watch::channel(State {
            forwarding: true,
            generation: 0,
        });
        let watcher = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let rx = watcher.subscribe();
                tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(target).await {
                        connection(inbound, outbound, rx).await;
                    }
                });
            }
        });
        Ok(TcpProxy {
            port,
            state,
            accept,
        })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:PORT`: the proxy as a NATS URL.
    pub fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops delivering bytes in both directions; connections stay open.
    pub fn black_hole(&self) {
        self.state.send_modify(|s| s.forwarding = false);
    }

    /// Delivers again, starting with what was held back.
    pub fn heal(&self) {
        self.state.send_modify(|s| s.forwarding = true);
    }

    /// Closes every open connection (what was held back is dropped) and forwards new ones.
    pub fn reset(&self) {
        self.state.send_modify(|s| {
            s.forwarding = true;
            s.generation += 1;
        });
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset();
    }
}

/// Pipes both directions until either side closes or the generation changes.
async fn connection(inbound: TcpStream, outbound: TcpStream, rx: watch::Receiver<State>) {
    let generation = rx.borrow().generation;
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    tokio::select! {
        () = pump(in_read, out_write, rx.clone(), generation) => {}
        () = pump(out_read, in_write, rx, generation) => {}
    }
}

/// One direction: reads only while forwarding, and holds a chunk read just before a
/// black hole until it heals.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut rx: watch::Receiver<State>,
    generation: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Wait until bytes may flow (or this connection is reset).
        match rx
            .wait_for(|s| s.generation != generation || s.forwarding)
            .await
        {
            Ok(s) if s.generation == generation => {}
            _ => return,
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        match rx
            .wait_for(|s| s.generation != generation || s.forwarding)
            .await
        {
            Ok(s) if s.generation == generation => {}
            _ => return,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
