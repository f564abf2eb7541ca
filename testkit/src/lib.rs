//! Test harness for Cartwheel: real processes on loopback, cleaned up on drop.
//!
//! - [`NatsServer`] runs a real `nats-server -js` on a free loopback port with its own
//!   store dir, and can be killed with SIGKILL and restarted on the same port and data to
//!   test durability. [`nats_server_bin`] finds the binary (`CARTWHEEL_NATS_SERVER`, then
//!   the workspace's `.tools/bin`, then `PATH`). Servers and [`NatsCluster`]s require a
//!   user and a generated password (as production should) unless a server's options
//!   bring their own auth flags: their URLs carry them, and [`connect`] signs in with
//!   them.
//! - [`RedisServer`] runs a real `redis-server` (append-only file on, snapshots off) and
//!   [`MongoServer`] a MongoDB-wire-compatible server (`secantusd-py`), each on a free
//!   loopback port with its own data dir, with the same kill -9 and restart. Their
//!   binaries are found like nats-server's: `CARTWHEEL_REDIS_SERVER` /
//!   `CARTWHEEL_SECANTUSD`, then `.tools/bin`, then `PATH`.
//! - [`ChildProcess`] runs any binary (the `cartwheel` binary in black-box tests) with its
//!   output in a log file, and offers SIGTERM, SIGKILL and waiting for the exit.
//! - [`wait_for`] polls a condition until it holds or a timeout passes: tests poll, they
//!   don't sleep.
//! - [`TcpProxy`] sits between a client and a server and can black-hole, heal and reset
//!   its connections: a network partition on loopback.
//! - [`free_port`] hands out a loopback port that was free a moment ago.
//!
//! This crate is for tests only: it may panic with a clear message where a test cannot go
//! on, but it knows nothing about Cartwheel's subjects, messages or storage.

#![warn(missing_docs)]

mod cluster;
mod daemon;
mod mongo;
mod nats;
mod port;
mod process;
mod proxy;
mod redis;
mod wait;

pub use cluster::NatsCluster;
pub use mongo::{MongoServer, try_secantusd_bin};
pub use nats::{
    NatsServer, NatsServerOptions, connect, connect_options, nats_server_bin, try_nats_server_bin,
};
pub use port::{free_port, try_free_port};
pub use process::ChildProcess;
pub use proxy::TcpProxy;
pub use redis::{RedisServer, RedisServerOptions, try_redis_server_bin};
pub use wait::{POLL_INTERVAL, wait_for};
