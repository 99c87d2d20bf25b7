//! Where a fetch may connect: every address a URL's host resolves to is checked against the
//! internal ranges (loopback, private, link-local and the metadata address, CGNAT, ULA,
//! multicast, unspecified, ...), and the connection then goes to exactly the addresses that
//! were checked, so a second DNS answer cannot swap in an internal address (DNS rebinding).
//!
//! An operator (and the tests) can open ranges with `--allow-fetch-from CIDR`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::fetch::error::FetchError;

/// A refused address or host, as an error type that can travel inside other libraries' errors
/// (reqwest's resolver, suppaftp's stream builder) and be recognised again afterwards.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl From<Refused> for FetchError {
    fn from(r: Refused) -> Self {
        FetchError::FetchRefused(r.0)
    }
}

/// Finds a [`Refused`] anywhere in an error's chain of sources.
pub fn find_refused(err: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r.clone());
        }
        next = e.source();
    }
    None
}

#[derive(Debug, Clone, Default)]
pub struct AddressGuard {
    allow: Arc<Vec<IpNet>>,
}

/// Why an address is internal, or `None` when it is a public unicast address.
fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => {
            // Addresses that carry an IPv4 address are judged by it.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_kind(v4);
            }
            let seg = v6.segments();
            if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0; 4] {
                return v4_kind(Ipv4Addr::from(u128::from(v6) as u32)); // NAT64
            }
            if seg[0] == 0x2002 {
                return v4_kind(Ipv4Addr::new(
                    (seg[1] >> 8) as u8,
                    seg[1] as u8,
                    (seg[2] >> 8) as u8,
                    seg[2] as u8,
                )); // 6to4
            }
            v6_kind(v6)
        }
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(match o {
        [0, ..] => "an unspecified (0.0.0.0/8)",
        [127, ..] => "a loopback",
        [10, ..] => "a private",
        [172, b, ..] if (16..32).contains(&b) => "a private",
        [192, 168, ..] => "a private",
        [169, 254, ..] => "a link-local (metadata)",
        [100, b, ..] if (64..128).contains(&b) => "a carrier-grade NAT",
        [192, 0, 0, _] => "an IETF protocol",
        [198, 18 | 19, ..] => "a benchmarking",
        [a, ..] if (224..240).contains(&a) => "a multicast",
        [a, ..] if a >= 240 => "a reserved or broadcast",
        _ => return None,
    })
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(if ip.is_unspecified() {
        "an unspecified"
    } else if ip.is_loopback() {
        "a loopback"
    } else if first & 0xfe00 == 0xfc00 {
        "a unique local (ULA)"
    } else if first & 0xffc0 == 0xfe80 {
        "a link-local"
    } else if first & 0xffc0 == 0xfec0 {
        "a site-local"
    } else if first & 0xff00 == 0xff00 {
        "a multicast"
    } else if ip.segments()[..6] == [0; 6] {
        "an IPv4-compatible"
    } else {
        return None;
    })
}

impl AddressGuard {
    pub fn new(allow: Vec<IpNet>) -> Self {
        AddressGuard {
            allow: Arc::new(allow),
        }
    }

    /// Accepts a public address, or any address inside an allowed range.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        let canonical = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if self
            .allow
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
        {
            return Ok(());
        }
        match internal_kind(ip) {
            None => Ok(()),
            Some(kind) => Err(Refused(format!(
                "fetching from {ip} is refused: it is {kind} address \
                 (an operator can allow it with --allow-fetch-from)"
            ))),
        }
    }

    /// Checks every address of an answer; one internal address refuses the whole host, since
    /// a mixed answer is what a rebinding attack looks like.
    pub fn check_all(&self, host: &str, addrs: &[SocketAddr]) -> Result<(), Refused> {
        if addrs.is_empty() {
            return Err(Refused(format!("the host {host} has no address")));
        }
        for addr in addrs {
            self.check(addr.ip()).map_err(|r| {
                Refused(format!(
                    "the host {host} resolves to {}; {}",
                    addr.ip(),
                    r.0
                ))
            })?;
        }
        Ok(())
    }

    /// Resolves `host` and returns its addresses when all of them may be fetched from.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        let host_only = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host_only.parse::<IpAddr>() {
            self.check(ip)?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host_only, port))
            .await
            .map_err(|e| ResolveError::Lookup(format!("cannot resolve the host {host}: {e}")))?
            .collect();
        self.check_all(host, &addrs)?;
        Ok(addrs)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("{0}")]
    Lookup(String),
}

impl From<ResolveError> for FetchError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::Refused(r) => r.into(),
            ResolveError::Lookup(m) => FetchError::FetchFailed(m),
        }
    }
}

/// reqwest's DNS hook: resolves with the system resolver and answers only with checked
/// addresses, so the HTTP client connects to nothing else.
pub struct GuardedResolver(pub AddressGuard);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            match guard.resolve(&host, 0).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                Err(ResolveError::Refused(r)) => Err(Box::new(r) as _),
                Err(e) => Err(e.to_string().into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(guard: &AddressGuard, ip: &str) -> bool {
        guard.check(ip.parse().unwrap()).is_err()
    }

    #[test]
    fn internal_ranges_are_refused_and_public_ones_accepted() {
        let g = AddressGuard::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
        ] {
            assert!(refused(&g, ip), "{ip} should be refused");
        }
        for ip in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2001:4860::8888"] {
            assert!(!refused(&g, ip), "{ip} should be accepted");
        }
    }

    #[test]
    fn the_allowlist_opens_ranges() {
        let g = AddressGuard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(!refused(&g, "127.0.0.1"));
        assert!(!refused(&g, "::ffff:127.0.0.1"));
        assert!(refused(&g, "10.0.0.1"));
        assert!(refused(&g, "::1"));
    }

    #[tokio::test]
    async fn resolved_names_are_checked() {
        let g = AddressGuard::default();
        let err = g.resolve("localhost", 80).await.unwrap_err();
        assert!(matches!(err, ResolveError::Refused(_)), "{err}");
        let err = g.resolve("[::1]", 80).await.unwrap_err();
        assert!(matches!(err, ResolveError::Refused(_)), "{err}");
    }
}
