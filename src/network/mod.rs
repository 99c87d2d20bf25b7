//! Tenant networks: what connects a server's NIC to its VLAN and nothing else.
//!
//! Two engines implement [`Network`]:
//! - [`linux::LinuxBridges`] (`--network bridge`, the default when this process may manage
//!   links): one Linux bridge per VLAN with the VLAN's gateway address, one persistent tap
//!   per NIC, one dnsmasq per bridge handing each NIC the address the platform chose, and
//!   the `extility` nftables tables: isolation, the metadata redirect, port forwards and
//!   egress NAT. [`linux::LinuxBridges::apply`] makes the host match a [`NetworkPlan`]: what
//!   the plan does not name (a stopped server's tap, a VLAN left empty) is removed. It keeps
//!   the plan it applied last and touches only what differs from it (the rules' elements and
//!   chains in one `nft -f` transaction, the links that came or went, the dnsmasq of a VLAN
//!   whose hosts changed); [`Network::resync`] also checks the host still holds it, and
//!   writes everything again when not.
//! - [`UserConfined`] (`--network user`, or without the privileges): QEMU's user-mode
//!   network with `restrict=on`; the hypervisor does everything and there is nothing to apply.
//!
//! The engine knows nothing of the database: the operation layer (`ops::network::plan`) reads
//! what should exist on this node into a plan. Methods block (they run `ip`, `nft` and
//! `dnsmasq`), so async code calls them through `spawn_blocking`.

pub mod addresses;
pub mod dnsmasq;
pub mod firewall;
pub mod linux;
pub mod nft;
pub mod ruleset;
pub mod sample;

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Where guests reach the metadata service, as every cloud has it.
pub const METADATA_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const METADATA_PORT: u16 = 80;

/// The bridge of a VLAN on every node: `extbr<vlan id>` (at most 15 characters for any id
/// below 10^10).
pub fn bridge_name(vlan_id: i64) -> String {
    format!("extbr{vlan_id}")
}

/// The VXLAN interface joining a VLAN's bridges on every node: `extvx<vlan id>`.
pub fn vxlan_name(vlan_id: i64) -> String {
    format!("extvx{vlan_id}")
}

/// The UDP port of VXLAN between nodes (IANA's).
pub const VXLAN_PORT: u16 = 4789;

/// The largest VXLAN network identifier (24 bits); a VLAN's VNI is its id.
pub const MAX_VNI: i64 = (1 << 24) - 1;

/// The MTU guests get on a VLAN that spans nodes: 1500 less VXLAN's 50 bytes.
pub const TUNNELED_MTU: u16 = 1450;

/// The tap device of a server's NIC: `extap<server id>`.
pub fn tap_name(server_id: i64) -> String {
    format!("extap{server_id}")
}

/// Whether a link name is one this product made (and may remove).
pub fn is_own_link(name: &str) -> bool {
    ["extbr", "extap", "extvx"].iter().any(|prefix| {
        name.strip_prefix(prefix)
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// What should exist on this node: the VLANs that have a NIC here, and the port forwards to
/// those NICs; with several nodes, the tunnel joining each VLAN's bridges across them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPlan {
    pub vlans: Vec<VlanNet>,
    pub forwards: Vec<Forward>,
    pub tunnel: Option<Tunnel>,
    /// Addresses the platform itself uses, which no guest reaches even with egress on: the
    /// database, Ceph's monitors, every node's API and tunnel address, this node's listener.
    pub platform: Vec<Ipv4Addr>,
}

/// VXLAN between nodes: each VLAN's bridge gets a VXLAN interface (VNI: the VLAN's id) that
/// sends to the other live nodes' addresses (unicast; broadcasts are copied to each), so the
/// servers of one VLAN on different nodes share one Ethernet segment, and nothing else does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// This node's address on the network between nodes (`--tunnel-address`).
    pub local: Ipv4Addr,
    /// The other live nodes' addresses.
    pub peers: Vec<Ipv4Addr>,
}

impl NetworkPlan {
    pub fn is_empty(&self) -> bool {
        self.vlans.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanNet {
    pub vlan_id: i64,
    pub subnet: Ipv4Net,
    /// The VLAN's NICs on this node.
    pub nics: Vec<Nic>,
    /// The VLAN's NICs elsewhere: the only MAC and address pairs its tunnel lets in.
    pub remote_nics: Vec<Nic>,
}

impl VlanNet {
    pub fn bridge(&self) -> String {
        bridge_name(self.vlan_id)
    }

    pub fn gateway(&self) -> Ipv4Addr {
        addresses::gateway(self.subnet)
    }
}

/// A server's NIC on its VLAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub server_id: i64,
    pub mac: String,
    pub address: Ipv4Addr,
    /// The server's name as a DNS label.
    pub hostname: String,
    /// The firewall template the server uses (only for NICs on this node).
    pub firewall: Option<firewall::Template>,
}

impl Nic {
    pub fn tap(&self) -> String {
        tap_name(self.server_id)
    }
}

/// `host_port` on this node's addresses reaches `address:guest_port` (TCP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub host_port: u16,
    pub address: Ipv4Addr,
    pub guest_port: u16,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NetworkError(pub String);

impl From<NetworkError> for crate::error::ApiError {
    fn from(err: NetworkError) -> Self {
        crate::error::ApiError::Internal(anyhow::anyhow!("network: {}", err.0))
    }
}

/// How a node connects its servers' NICs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bridges, taps and firewall rules per VLAN.
    Bridged,
    /// QEMU's user-mode network, restricted to DHCP and the metadata service.
    UserConfined,
}

pub trait Network: Send + Sync + 'static {
    fn mode(&self) -> Mode;

    /// Makes this node's networks what the plan says, removing what it does not name:
    /// only what differs from the last plan applied is touched.
    fn apply(&self, plan: &NetworkPlan) -> Result<(), NetworkError>;

    /// [`Network::apply`], then a check that the host still holds what was applied (rules,
    /// links, DHCP servers), everything written again if not: what had drifted (nothing,
    /// when nothing had).
    fn resync(&self, plan: &NetworkPlan) -> Result<Vec<String>, NetworkError> {
        self.apply(plan).map(|()| Vec::new())
    }
}

/// `--network user`: nothing of the host to manage.
#[derive(Debug, Default)]
pub struct UserConfined;

impl Network for UserConfined {
    fn mode(&self) -> Mode {
        Mode::UserConfined
    }

    fn apply(&self, _plan: &NetworkPlan) -> Result<(), NetworkError> {
        Ok(())
    }
}

/// A server name as a DNS label: lower-case letters, digits and inner hyphens, at most 63
/// characters; `server-<id>` when nothing of the name is left.
pub fn hostname(name: &str, server_id: i64) -> String {
    let mut label = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            label.push(c);
        } else if !label.is_empty() && !label.ends_with('-') {
            label.push('-');
        }
    }
    let label: String = label.trim_end_matches('-').chars().take(63).collect();
    let label = label.trim_end_matches('-').to_string();
    if label.is_empty() || label.bytes().all(|b| b.is_ascii_digit()) {
        format!("server-{server_id}")
    } else {
        label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_and_are_recognised() {
        assert_eq!(bridge_name(9_999_999_999).len(), 15);
        assert_eq!(tap_name(9_999_999_999).len(), 15);
        assert!(is_own_link("extbr12") && is_own_link("extap3"));
        assert!(!is_own_link("extbr") && !is_own_link("extbr1x") && !is_own_link("eth0"));
    }

    #[test]
    fn hostnames_are_dns_labels() {
        assert_eq!(hostname("Web Server #1", 4), "web-server-1");
        assert_eq!(hostname("--", 4), "server-4");
        assert_eq!(hostname("123", 4), "server-4");
        assert_eq!(hostname(&"a".repeat(80), 1).len(), 63);
    }
}
