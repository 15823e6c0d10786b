//! Which addresses the gateway connects to on someone else's behalf: subscription
//! targets (set through `/v1` by an API key holder) and plugin `http-fetch` requests.
//!
//! Loopback, private (RFC 1918), link-local, CGNAT, multicast, unspecified, broadcast,
//! documentation and other reserved ranges, and their IPv6 counterparts (ULA,
//! link-local, IPv4-mapped, NAT64), are refused unless the operator allows a network
//! explicitly (`allow_networks`). A URL whose host is an address literal is checked
//! before any request ([`NetworkPolicy::check_url`]); a host name is checked on every
//! connection by a resolver that drops refused addresses ([`GuardedResolver`]), so a
//! name that resolves (or later re-resolves) to an internal address is never reached.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::{Deserialize, Deserializer};
use url::{Host, Url};

/// A destination the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetRefused {
    /// The address is internal and not in `allow_networks`.
    #[error("target not allowed: {0} is not a public address and not in `allow_networks`")]
    Address(IpAddr),
    /// The name resolved to no address at all.
    #[error("target not allowed: `{0}` resolves to no address")]
    Unresolved(String),
}

/// Ranges that are not the public internet (IPv4).
const INTERNAL_V4: [Ipv4Net; 16] = [
    Ipv4Net::new_assert(Ipv4Addr::new(0, 0, 0, 0), 8), // "this network", unspecified
    Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 0, 0), 8), // private
    Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 10), // CGNAT
    Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8), // loopback
    Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16), // link-local (cloud metadata)
    Ipv4Net::new_assert(Ipv4Addr::new(172, 16, 0, 0), 12), // private
    Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 0, 0), 24), // IETF protocol assignments
    Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 2, 0), 24), // documentation
    Ipv4Net::new_assert(Ipv4Addr::new(192, 88, 99, 0), 24), // 6to4 relay anycast
    Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 0, 0), 16), // private
    Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 15), // benchmarking
    Ipv4Net::new_assert(Ipv4Addr::new(198, 51, 100, 0), 24), // documentation
    Ipv4Net::new_assert(Ipv4Addr::new(203, 0, 113, 0), 24), // documentation
    Ipv4Net::new_assert(Ipv4Addr::new(224, 0, 0, 0), 4), // multicast
    Ipv4Net::new_assert(Ipv4Addr::new(240, 0, 0, 0), 4), // reserved, broadcast
    Ipv4Net::new_assert(Ipv4Addr::new(255, 255, 255, 255), 32), // broadcast
];

/// Ranges that are not the public internet (IPv6); IPv4-mapped, IPv4-compatible and NAT64
/// addresses are judged by the IPv4 address they carry (see [`embedded_v4`]).
const INTERNAL_V6: [Ipv6Net; 8] = [
    Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 128),
    Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128),
    Ipv6Net::new_assert(Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64), // discard
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    Ipv6Net::new_assert(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7), // unique local
    Ipv6Net::new_assert(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), // link-local
    Ipv6Net::new_assert(Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10), // site-local
    Ipv6Net::new_assert(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8), // multicast
];

/// The IPv4 address an IPv6 address stands for, if any: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`, deprecated but still routed by some stacks) and the
/// NAT64 well-known prefix (`64:ff9b::/96`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let segments = ip.segments();
    let tail = Ipv4Addr::new(
        (segments[6] >> 8) as u8,
        segments[6] as u8,
        (segments[7] >> 8) as u8,
        segments[7] as u8,
    );
    let compatible = segments[..6].iter().all(|s| *s == 0) && u32::from(tail) > 1;
    let nat64 = segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    (compatible || nat64).then_some(tail)
}

/// Whether `ip` is outside the public internet.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => INTERNAL_V4.iter().any(|net| net.contains(&v4)),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_internal(IpAddr::V4(v4)),
            None => INTERNAL_V6.iter().any(|net| net.contains(&v6)),
        },
    }
}

/// The networks an operator allows besides the public internet (`allow_networks`,
/// e.g. `["127.0.0.0/8", "10.1.2.3"]`); empty (the default) allows none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    allow: Arc<[IpNet]>,
}

impl NetworkPolicy {
    /// Parse CIDR entries (`10.0.0.0/8`, `fd00::/8`); a bare address is a single host.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let allow = entries
            .iter()
            .map(|entry| {
                let entry = entry.trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| format!("allow_networks: `{entry}` is not a CIDR network"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            allow: allow.into(),
        })
    }

    /// Whether the gateway may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if !is_internal(ip) {
            return true;
        }
        let v4 = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.allow
            .iter()
            .any(|net| net.contains(&ip) || v4.is_some_and(|v4| net.contains(&v4)))
    }

    /// Checks a URL whose host is an address literal (`http://127.1/`, `http://[::1]/`,
    /// `http://2130706433/` — the URL parser has already turned every numeric form into
    /// an address). A host name passes here and is checked when it is resolved.
    pub fn check_url(&self, url: &Url) -> Result<(), TargetRefused> {
        let ip = match url.host() {
            Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
            _ => return Ok(()),
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(TargetRefused::Address(ip))
        }
    }

    /// The configured networks, for display.
    pub fn describe(&self) -> Vec<String> {
        self.allow.iter().map(ToString::to_string).collect()
    }

    /// A resolver for an HTTP client that applies this policy to every name it resolves.
    pub fn resolver(&self) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver {
            policy: self.clone(),
        })
    }
}

impl<'de> Deserialize<'de> for NetworkPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = Vec::<String>::deserialize(deserializer)?;
        Self::parse(&entries).map_err(serde::de::Error::custom)
    }
}

/// A DNS resolver (the system's, through tokio) that returns only the addresses the
/// policy permits, and fails with [`TargetRefused`] when none is left: the HTTP client
/// then connects to nothing but checked addresses, whatever the name resolves to.
#[derive(Debug)]
pub struct GuardedResolver {
    policy: NetworkPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(resolve_permitted(
            self.policy.clone(),
            name.as_str().to_owned(),
        ))
    }
}

/// Resolves `host` and keeps the addresses `policy` permits.
async fn resolve_permitted(
    policy: NetworkPolicy,
    host: String,
) -> Result<Addrs, Box<dyn std::error::Error + Send + Sync>> {
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
    let (permitted, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
        .into_iter()
        .partition(|addr| policy.permits(addr.ip()));
    if permitted.is_empty() {
        let error = match refused.first() {
            Some(addr) => TargetRefused::Address(addr.ip()),
            None => TargetRefused::Unresolved(host),
        };
        return Err(error.into());
    }
    Ok(Box::new(permitted.into_iter()))
}

/// Whether `error` (or one of its sources) is a refusal by the policy.
pub fn is_refusal(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<TargetRefused>() {
            return true;
        }
        current = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    fn url(text: &str) -> Url {
        Url::parse(text).expect("url")
    }

    #[test]
    fn internal_ranges_are_refused_by_default() {
        let policy = NetworkPolicy::default();
        for internal in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fc12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!policy.permits(ip(internal)), "{internal} permitted");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(policy.permits(ip(public)), "{public} refused");
        }
    }

    #[test]
    fn allowed_networks_open_exactly_their_range() {
        let policy =
            NetworkPolicy::parse(&["127.0.0.0/8".into(), "10.1.2.3".into()]).expect("valid");
        assert!(policy.permits(ip("127.0.0.1")));
        assert!(policy.permits(ip("::ffff:127.0.0.1")));
        assert!(policy.permits(ip("10.1.2.3")));
        assert!(!policy.permits(ip("10.1.2.4")));
        assert!(!policy.permits(ip("::1")));
        assert!(!policy.permits(ip("169.254.169.254")));
        assert!(NetworkPolicy::parse(&["127.0.0.0/33".into()]).is_err());
        assert!(NetworkPolicy::parse(&["localhost".into()]).is_err());
    }

    #[test]
    fn numeric_host_forms_are_literals() {
        let policy = NetworkPolicy::default();
        for literal in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://[::1]/",
            "http://[::ffff:7f00:1]/",
            "http://0.0.0.0/",
            "http://169.254.169.254/latest/meta-data/",
        ] {
            assert!(
                matches!(
                    policy.check_url(&url(literal)),
                    Err(TargetRefused::Address(_))
                ),
                "{literal} passed"
            );
        }
        assert!(policy.check_url(&url("https://example.com/")).is_ok());
        assert!(policy.check_url(&url("http://8.8.8.8/")).is_ok());
    }

    #[tokio::test]
    async fn resolver_drops_refused_addresses() {
        let refused = NetworkPolicy::default()
            .resolver()
            .resolve("localhost".parse().expect("name"))
            .await;
        let Err(error) = refused else {
            panic!("localhost resolved to a permitted address");
        };
        assert!(is_refusal(error.as_ref()), "{error}");
        let allowed = NetworkPolicy::parse(&["127.0.0.0/8".into(), "::1/128".into()])
            .expect("valid")
            .resolver()
            .resolve("localhost".parse().expect("name"))
            .await
            .expect("allowed");
        assert!(allowed.into_iter().all(|addr| addr.ip().is_loopback()));
    }
}
