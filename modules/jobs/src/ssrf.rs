//! The SSRF guard of outbound requests (`ENRICH_URL`, rule webhooks): which
//! addresses Atlas may connect to.
//!
//! A URL's host is resolved once; every address it resolves to must be
//! public (not loopback, private, shared, link-local — which holds the
//! 169.254.169.254 cloud metadata endpoint —, multicast, unspecified,
//! broadcast or reserved; for IPv6 also unique-local, and the IPv4 address
//! inside IPv4-mapped, NAT64 and 6to4 addresses is checked as IPv4). The
//! connection then goes to exactly the checked addresses, so a second DNS
//! answer cannot swap in another one. `jobs.enrich_allow_networks` and
//! `rules.webhook_allow_networks` let chosen addresses through (tests allow
//! their local server this way).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use url::Url;

/// An error and its causes in one line (`request failed: connect: refused`),
/// for the logs and records of outbound requests.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Why a URL may not be connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardError {
    /// Not http(s), no host, or an address the policy refuses: retrying
    /// cannot help.
    Refused(String),
    /// The host could not be resolved (in time): worth retrying.
    Unresolved(String),
}

/// The checked addresses of a URL's host, to connect to and nowhere else.
#[derive(Debug, Clone)]
pub struct Target {
    domain: Option<String>,
    addrs: Vec<SocketAddr>,
}

impl Target {
    /// Make `builder`'s client connect to exactly the checked addresses (so
    /// a second DNS answer cannot swap in another one).
    pub fn pin(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        match &self.domain {
            Some(d) => builder.resolve_to_addrs(d, &self.addrs),
            None => builder,
        }
    }
}

/// Decides which addresses may be fetched.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
}

impl AddressPolicy {
    /// `allow`: addresses (`10.1.2.3`) or networks (`10.0.0.0/8`) let
    /// through although refused by default. Errors name the bad entry.
    pub fn new(allow: &[String]) -> Result<Self, String> {
        let allow = allow
            .iter()
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("`{s}` is neither an IP address nor a network"))
            })
            .collect::<Result<_, _>>()?;
        Ok(AddressPolicy { allow })
    }

    /// Resolve `url`'s host (before `deadline`) and check every address it
    /// resolves to: all must pass, since a client may try any of them.
    pub async fn resolve(&self, url: &Url, deadline: tokio::time::Instant) -> Result<Target, GuardError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(GuardError::Refused("only http and https".into()));
        }
        let port = url
            .port_or_known_default()
            .ok_or_else(|| GuardError::Refused(format!("{url} has no port")))?;
        let host = url
            .host()
            .ok_or_else(|| GuardError::Refused(format!("{url} has no host")))?;
        let target = match host {
            url::Host::Ipv4(ip) => Target {
                domain: None,
                addrs: vec![SocketAddr::new(IpAddr::V4(ip), port)],
            },
            url::Host::Ipv6(ip) => Target {
                domain: None,
                addrs: vec![SocketAddr::new(IpAddr::V6(ip), port)],
            },
            url::Host::Domain(d) => {
                let resolved = tokio::time::timeout_at(deadline, tokio::net::lookup_host((d, port)))
                    .await
                    .map_err(|_| GuardError::Unresolved(format!("resolving {d} timed out")))?
                    .map_err(|e| GuardError::Unresolved(format!("cannot resolve {d}: {e}")))?;
                let addrs: Vec<SocketAddr> = resolved.collect();
                if addrs.is_empty() {
                    return Err(GuardError::Unresolved(format!("{d} resolves to no address")));
                }
                Target {
                    domain: Some(d.to_string()),
                    addrs,
                }
            }
        };
        for addr in &target.addrs {
            self.check(addr.ip()).map_err(GuardError::Refused)?;
        }
        Ok(target)
    }

    /// `Err(why)` when `ip` must not be connected to.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        let ip = canonical(ip);
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match refusal(ip) {
            Some(kind) => Err(format!("{ip} is a {kind} address")),
            None => Ok(()),
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// What kind of non-public address `ip` is, if it is one.
fn refusal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4),
        IpAddr::V6(v6) => refusal_v6(v6),
    }
}

fn refusal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(if ip.is_unspecified() || a == 0 {
        "unspecified"
    } else if ip.is_loopback() {
        "loopback"
    } else if ip.is_private() {
        "private"
    } else if a == 100 && (64..128).contains(&b) {
        "shared (carrier-grade NAT)"
    } else if ip.is_link_local() {
        "link-local (cloud metadata)"
    } else if ip.is_multicast() {
        "multicast"
    } else if ip.is_broadcast() || a >= 240 {
        "reserved"
    } else if a == 192 && b == 0 && ip.octets()[2] == 0 {
        "reserved (IETF protocol assignments)"
    } else if (a == 198 && (b == 18 || b == 19)) || ip.is_documentation() {
        "reserved (benchmarking or documentation)"
    } else {
        return None;
    })
}

fn refusal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if ip.is_multicast() {
        return Some("multicast");
    }
    if seg[0] & 0xffc0 == 0xfe80 {
        return Some("link-local");
    }
    if seg[0] & 0xfe00 == 0xfc00 {
        return Some("private (unique local)");
    }
    if seg[0] & 0xffc0 == 0xfec0 {
        return Some("site-local");
    }
    // IPv4 inside IPv6: NAT64 (64:ff9b::/96), 6to4 (2002::/16) and the
    // deprecated IPv4-compatible form (::a.b.c.d).
    let embedded = if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        Some(Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        ))
    } else if seg[0] == 0x2002 {
        Some(Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        ))
    } else if seg[..6] == [0, 0, 0, 0, 0, 0] {
        Some(Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        ))
    } else {
        None
    };
    embedded.and_then(refusal_v4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> bool {
        AddressPolicy::default().check(s.parse().unwrap()).is_err()
    }

    #[test]
    fn non_public_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "fe80::1",
            "fd00:ec2::254",
            "ff02::1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "::127.0.0.1",
        ] {
            assert!(refused(ip), "{ip} must be refused");
        }
        for ip in ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111", "172.32.0.1"] {
            assert!(!refused(ip), "{ip} is public");
        }
    }

    #[test]
    fn the_allow_list_lets_chosen_addresses_through() {
        let p = AddressPolicy::new(&["127.0.0.1".into(), "10.0.0.0/8".into()]).unwrap();
        assert!(p.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(p.check("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(p.check("10.200.0.1".parse().unwrap()).is_ok());
        assert!(p.check("127.0.0.2".parse().unwrap()).is_err());
        assert!(p.check("169.254.169.254".parse().unwrap()).is_err());
        assert!(AddressPolicy::new(&["nope".into()]).is_err());
        let why = AddressPolicy::default()
            .check("169.254.169.254".parse().unwrap())
            .unwrap_err();
        assert!(why.contains("link-local"), "{why}");
    }
}
