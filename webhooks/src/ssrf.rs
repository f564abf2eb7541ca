//! Server-side request forgery guard: a webhook URL may only reach public addresses.
//!
//! Loopback, private (RFC 1918, unique local), link-local, carrier-grade NAT,
//! unspecified, broadcast, multicast and documentation addresses are refused unless they
//! are in a network the service is told to allow (`CARTWHEEL_WEBHOOK_ALLOW_NETWORKS`,
//! e.g. `127.0.0.0/8` in the tests, or an internal range for receivers inside the
//! cluster). The check
//! runs when an endpoint is registered and again on every delivery, on each address the
//! name resolves to at that moment (so a name re-pointed at an internal address after
//! registration is refused too): the delivery client resolves the name itself and
//! connects only to allowed addresses.

use crate::error::WebhookError;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            is_public_v6(v6)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // 100.64.0.0/10: carrier-grade NAT.
        || (a == 100 && (64..128).contains(&b))
        // 192.0.0.0/24: IETF protocol assignments.
        || (a == 192 && b == 0 && c == 0)
        // 198.18.0.0/15: benchmarking.
        || (a == 198 && (b == 18 || b == 19))
        // 240.0.0.0/4: reserved.
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        // 2001:db8::/32: documentation.
        || (first == 0x2001 && ip.segments()[1] == 0x0db8))
}

/// Whether a delivery may connect to `ip`: a public address, or one in `allow`.
pub fn allowed(ip: IpAddr, allow: &[IpNet]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    is_public(ip) || allow.iter().any(|net| net.contains(&ip))
}

/// Parses a comma-separated list of networks (`127.0.0.0/8,10.1.0.0/16,::1/128`); a
/// bare address is a network of one.
pub fn parse_networks(text: &str) -> Result<Vec<IpNet>, WebhookError> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    WebhookError::invalid(
                        "networks",
                        format!("{s:?} is not a network such as 10.0.0.0/8"),
                    )
                })
        })
        .collect()
}

/// Checks a URL's shape: `http` or `https`, a host, no user or password, at most 2 KiB.
pub fn parse_url(url: &str) -> Result<url::Url, WebhookError> {
    if url.len() > 2048 {
        return Err(WebhookError::invalid(
            "url",
            "must be at most 2048 characters",
        ));
    }
    let parsed = url::Url::parse(url)
        .map_err(|e| WebhookError::invalid("url", format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(WebhookError::invalid("url", "must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(WebhookError::invalid("url", "must name a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(WebhookError::invalid(
            "url",
            "must not carry a user or password (sign requests with the secret instead)",
        ));
    }
    Ok(parsed)
}

/// Every address `url`'s host stands for now, on its port: the host itself when it is
/// an address (a literal is never resolved), else what the system resolver answers.
/// Errors say the host does not resolve.
pub async fn addresses(url: &url::Url) -> Result<Vec<SocketAddr>, String> {
    let host = url.host_str().unwrap_or_default();
    let port = url
        .port_or_known_default()
        .unwrap_or(if url.scheme() == "https" { 443 } else { 80 });
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let found: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| format!("{host} does not resolve: {e}"))?
            .collect(),
    };
    if found.is_empty() {
        return Err(format!("{host} does not resolve"));
    }
    Ok(found)
}

/// Checks a URL for registration: its shape, and every address its host resolves to now.
pub async fn check_url(url: &str, allow: &[IpNet]) -> Result<url::Url, WebhookError> {
    let parsed = parse_url(url)?;
    let addrs = addresses(&parsed)
        .await
        .map_err(|e| WebhookError::invalid("url", e))?;
    if let Some(ip) = addrs
        .iter()
        .map(SocketAddr::ip)
        .find(|ip| !allowed(*ip, allow))
    {
        let host = parsed.host_str().unwrap_or_default();
        return Err(WebhookError::invalid(
            "url",
            format!(
                "{host} resolves to {ip}, a loopback, private or link-local address; \
                 such targets are refused (CARTWHEEL_WEBHOOK_ALLOW_NETWORKS can allow a network)"
            ),
        ));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn urls_are_checked_for_shape_and_target() {
        assert!(parse_url("ftp://example.com/x").is_err());
        assert!(parse_url("http://user:pw@example.com/").is_err());
        assert!(parse_url("not a url").is_err());
        let e = check_url("http://127.0.0.1:9/hook", &[]).await.unwrap_err();
        assert!(e.to_string().contains("127.0.0.1"), "{e}");
        assert!(check_url("http://[::1]:9/hook", &[]).await.is_err());
        assert!(
            check_url("http://169.254.169.254/latest", &[])
                .await
                .is_err()
        );
        assert!(check_url("http://localhost:9/hook", &[]).await.is_err());
        let loopback = parse_networks("127.0.0.0/8, ::1").unwrap();
        assert!(
            check_url("http://127.0.0.1:9/hook", &loopback)
                .await
                .is_ok()
        );
        assert!(
            check_url("http://10.0.0.1:9/hook", &loopback)
                .await
                .is_err()
        );
        assert!(allowed("::ffff:127.0.0.1".parse().unwrap(), &loopback));
        assert!(parse_networks("10.0.0.0/33").is_err());
    }
}
