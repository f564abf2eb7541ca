//! Free loopback ports for servers started by tests.
//!
//! The port is free when this returns, not reserved: another process may take it before
//! the caller binds it. That race is rare on loopback (the kernel hands out ephemeral ports
//! in turn) and acceptable in a harness; where a server can pick its own port (`-p -1`,
//! `127.0.0.1:0`), prefer that.

use std::net::{Ipv4Addr, TcpListener};

use anyhow::Context as _;

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// # Panics
///
/// When no listener can be bound on 127.0.0.1, which means the machine cannot run the
/// tests at all. Use [`try_free_port`] to get an error instead.
pub fn free_port() -> u16 {
    match try_free_port() {
        Ok(port) => port,
        Err(err) => panic!("no free loopback port: {err:#}"),
    }
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago: binds port 0, reads the
/// port the kernel chose and closes the listener again.
pub fn try_free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("binding 127.0.0.1:0 to find a free port")?;
    let port = listener
        .local_addr()
        .context("reading the address of a listener on 127.0.0.1:0")?
        .port();
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_can_be_bound() {
        let port = free_port();
        assert_ne!(port, 0);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port));
        assert!(listener.is_ok(), "port {port} was not free: {listener:?}");
    }
}
