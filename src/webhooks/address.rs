//! Where a webhook may go: not loopback, private networks, link-local addresses or the metadata
//! server (a receiver URL must not turn the service into a way into its own network), unless
//! `WEBHOOK_ALLOW_PRIVATE=true`. Checked at start-up on the URL and again on every connection,
//! on the addresses it resolves to (a name that later resolves elsewhere is caught there).

use std::net::{IpAddr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Host names of cloud metadata servers, refused whatever they resolve to.
const METADATA_HOSTS: &[&str] = &["metadata.google.internal", "metadata", "metadata.goog"];

/// True for an address the service must not send webhooks to: loopback, unspecified, private
/// (RFC 1918, shared CGNAT, IPv6 unique-local), link-local (the 169.254.169.254 metadata
/// server), multicast and broadcast; an IPv4-mapped IPv6 address as its IPv4 one.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Why `url` may not be a webhook receiver, from its text alone (scheme, metadata host, an
/// address literal); `None` if the text is fine (its name is checked when resolved).
pub fn refused_by_name(url: &Url, allow_private: bool) -> Option<String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Some(format!("{url} is not an http:// or https:// URL"));
    }
    let Some(host) = url.host_str() else {
        return Some(format!("{url} has no host"));
    };
    if allow_private {
        return None;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let private = match host.parse::<IpAddr>() {
        Ok(ip) => is_private(ip),
        Err(_) => {
            let name = host.trim_end_matches('.').to_ascii_lowercase();
            METADATA_HOSTS.contains(&name.as_str()) || name == "localhost"
        }
    };
    private.then(|| {
        format!(
            "{url} points at loopback, a private network or the metadata server; \
             set WEBHOOK_ALLOW_PRIVATE=true if that is meant"
        )
    })
}

/// Resolves `url`'s host and says why it may not be a receiver: one of its addresses is
/// private. A name that does not resolve now is let through (it is checked at each delivery).
pub async fn refused_at_start(url: &Url, allow_private: bool) -> Option<String> {
    if let Some(why) = refused_by_name(url, allow_private) {
        return Some(why);
    }
    if allow_private {
        return None;
    }
    let host = url.host_str()?;
    let port = url.port_or_known_default().unwrap_or(443);
    match tokio::net::lookup_host((host, port)).await {
        Ok(addresses) => addresses
            .map(|a| a.ip())
            .find(|ip| is_private(*ip))
            .map(|ip| {
                format!(
                    "{url} resolves to {ip}: loopback, a private network or the metadata server; \
                 set WEBHOOK_ALLOW_PRIVATE=true if that is meant"
                )
            }),
        Err(e) => {
            tracing::warn!(%url, "webhook receiver does not resolve now: {e}");
            None
        }
    }
}

/// The webhook client's name resolver: the system's, refusing a name any of whose addresses
/// is private, so the connection is never made to one.
#[derive(Debug)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let lowered = host.trim_end_matches('.').to_ascii_lowercase();
            if METADATA_HOSTS.contains(&lowered.as_str()) {
                return Err(format!("{host} is a metadata server").into());
            }
            if let Some(ip) = addresses
                .iter()
                .map(SocketAddr::ip)
                .find(|ip| is_private(*ip))
            {
                return Err(format!("{host} resolves to the private address {ip}").into());
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_private_link_local_and_metadata_are_private() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "34.120.1.2",
            "2001:4860:4860::8888",
            "172.32.0.1",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_naming_private_hosts_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://[::1]/hook",
            "http://169.254.169.254/computeMetadata/v1/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://localhost/hook",
        ] {
            let url = Url::parse(url).unwrap();
            assert!(refused_by_name(&url, false).is_some(), "{url}");
            assert!(refused_by_name(&url, true).is_none(), "{url}");
        }
        let ftp = Url::parse("ftp://example.com/").unwrap();
        assert!(refused_by_name(&ftp, true).is_some());
        let public = Url::parse("https://hooks.example.com/transcoder").unwrap();
        assert!(refused_by_name(&public, false).is_none());
    }
}
