//! The nftables rules of tenant networks, as one `nft -f` script: two tables the product owns
//! (`inet extility` and `bridge extility`), replaced whole and atomically at each change, and
//! nothing else of the host's firewall touched.
//!
//! - From a guest to the host (`input`): DHCP, DNS on its own gateway, the metadata service
//!   (169.254.169.254:80, redirected to this node's metadata listener), and answers to
//!   connections the host opened (port forwards from this host). Nothing else.
//! - From a guest through the host (`forward`): never to another VLAN, to loopback,
//!   link-local, multicast, the VLAN pool or the host's own networks; to the rest of the
//!   world only with egress on, masqueraded.
//! - To a guest: only what a port forward let in, and answers.
//! - On each tap (`bridge` table): the NIC's own MAC and address only (no spoofing, no ARP
//!   for other addresses, no DHCP server of its own, no IPv6), so an address names a server.
//! - Between nodes (VXLAN, `--tunnel-address`): UDP 4789 is taken from the other nodes'
//!   addresses only (anyone else could put frames on a VLAN), and a tunnel carries guests'
//!   frames to guests only: never this host's own (its gateway, DHCP and DNS serve its own
//!   guests; each node is the gateway of its guests), never anything to this host.

use std::fmt::Write;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::{METADATA_ADDR, METADATA_PORT, NetworkPlan, VXLAN_PORT};

pub const TABLE: &str = "extility";

/// What the rules need besides the plan.
#[derive(Debug, Clone)]
pub struct FirewallConfig {
    /// Where this node's metadata listener takes the redirected connections.
    pub metadata_port: u16,
    /// Guests may reach the world outside this host (NAT).
    pub egress: bool,
    /// All VLAN subnets.
    pub pool: Ipv4Net,
    /// Never reachable from guests: the host's own networks and the operator's `--guest-deny`.
    pub deny: Vec<Ipv4Net>,
}

/// Networks no guest reaches whatever the configuration.
const ALWAYS_DENIED: &[&str] = &["0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3"];

/// The script that removes both tables (if they exist).
pub fn removal() -> String {
    format!(
        "table inet {TABLE}\ndelete table inet {TABLE}\n\
         table bridge {TABLE}\ndelete table bridge {TABLE}\n"
    )
}

/// The script that replaces both tables with the rules of `plan`.
pub fn ruleset(plan: &NetworkPlan, config: &FirewallConfig) -> String {
    let mut s = removal();
    let bridges = "\"extbr*\"";
    let mut deny: Vec<String> = ALWAYS_DENIED.iter().map(|n| n.to_string()).collect();
    deny.push(config.pool.to_string());
    deny.extend(config.deny.iter().map(|n| n.to_string()));
    let deny = set(&deny);
    let meta = METADATA_ADDR;
    let meta_port = config.metadata_port;

    let _ = writeln!(s, "table inet {TABLE} {{");
    // Guests to this host.
    let _ = writeln!(
        s,
        "  chain input {{\n    type filter hook input priority -5; policy accept;\n    \
         iifname {bridges} jump guest_to_host\n    \
         tcp dport {meta_port} iifname != \"lo\" drop"
    );
    if let Some(tunnel) = &plan.tunnel {
        let peers: Vec<String> = tunnel.peers.iter().map(|p| p.to_string()).collect();
        if peers.is_empty() {
            let _ = writeln!(s, "    udp dport {VXLAN_PORT} drop");
        } else {
            let _ = writeln!(
                s,
                "    udp dport {VXLAN_PORT} ip saddr != {} drop",
                set(&peers)
            );
        }
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "  chain guest_to_host {{");
    let _ = writeln!(s, "    ct state established,related accept");
    let _ = writeln!(s, "    meta nfproto ipv6 drop");
    let _ = writeln!(s, "    udp sport 68 udp dport 67 accept");
    for vlan in &plan.vlans {
        let _ = writeln!(
            s,
            "    iifname \"{}\" ip daddr {} meta l4proto {{ tcp, udp }} th dport 53 accept",
            vlan.bridge(),
            vlan.gateway()
        );
    }
    let _ = writeln!(
        s,
        "    ct original ip daddr {meta} tcp dport {meta_port} accept\n    drop\n  }}"
    );

    // Through this host.
    let _ = writeln!(
        s,
        "  chain forward {{\n    type filter hook forward priority -5; policy accept;"
    );
    for vlan in &plan.vlans {
        // Bridged traffic inside one VLAN, when br_netfilter shows it here.
        let b = vlan.bridge();
        let _ = writeln!(s, "    iifname \"{b}\" oifname \"{b}\" accept");
    }
    let _ = writeln!(
        s,
        "    iifname {bridges} jump from_guest\n    oifname {bridges} jump to_guest\n  }}"
    );
    let _ = writeln!(s, "  chain from_guest {{");
    let _ = writeln!(s, "    ct state established,related accept");
    let _ = writeln!(s, "    oifname {bridges} drop");
    let _ = writeln!(s, "    ip daddr {deny} drop");
    let _ = writeln!(s, "    fib daddr type local drop");
    let _ = writeln!(s, "    {}", if config.egress { "accept" } else { "drop" });
    let _ = writeln!(s, "  }}");
    let _ = writeln!(
        s,
        "  chain to_guest {{\n    ct state established,related accept\n    \
         ct status dnat accept\n    drop\n  }}"
    );

    // Addresses: the metadata redirect, port forwards, egress NAT.
    let _ = writeln!(
        s,
        "  chain prerouting {{\n    type nat hook prerouting priority -105; policy accept;\n    \
         iifname {bridges} ip daddr {meta} tcp dport {METADATA_PORT} redirect to :{meta_port}"
    );
    for f in &plan.forwards {
        let _ = writeln!(
            s,
            "    iifname != {bridges} fib daddr type local tcp dport {} dnat ip to {}",
            f.host_port,
            target(f.address, f.guest_port)
        );
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(
        s,
        "  chain output {{\n    type nat hook output priority -105; policy accept;"
    );
    for f in &plan.forwards {
        let _ = writeln!(
            s,
            "    ip daddr != 127.0.0.0/8 fib daddr type local tcp dport {} dnat ip to {}",
            f.host_port,
            target(f.address, f.guest_port)
        );
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(
        s,
        "  chain postrouting {{\n    type nat hook postrouting priority 95; policy accept;"
    );
    if config.egress {
        let _ = writeln!(
            s,
            "    ip saddr {} oifname != {bridges} masquerade",
            config.pool
        );
    }
    let _ = writeln!(s, "  }}\n}}");

    // Each tap carries its NIC's own addresses only.
    let _ = writeln!(
        s,
        "table bridge {TABLE} {{\n  chain prerouting {{\n    \
         type filter hook prerouting priority -205; policy accept;"
    );
    for vlan in &plan.vlans {
        for nic in &vlan.nics {
            let t = nic.tap();
            let mac = &nic.mac;
            let ip = nic.address;
            let _ = writeln!(s, "    iifname \"{t}\" ether saddr != {mac} drop");
            let _ = writeln!(s, "    iifname \"{t}\" ether type ip6 drop");
            let _ = writeln!(
                s,
                "    iifname \"{t}\" ether type arp arp saddr ether != {mac} drop"
            );
            let _ = writeln!(
                s,
                "    iifname \"{t}\" ether type arp arp saddr ip != {ip} drop"
            );
            let _ = writeln!(
                s,
                "    iifname \"{t}\" ether type ip ip saddr != {{ 0.0.0.0, {ip} }} drop"
            );
            let _ = writeln!(s, "    iifname \"{t}\" udp sport {{ 67, 547 }} drop");
        }
    }
    // What comes from other nodes: guests' frames, IPv4 and ARP.
    let _ = writeln!(s, "    iifname \"extvx*\" ether type ip6 drop");
    // A tap of ours that no plan names carries nothing.
    let _ = writeln!(s, "  }}");
    // A tunnel joins guests to guests: this host neither hears other nodes' guests nor
    // speaks to them (its gateway is its own guests').
    let _ = writeln!(
        s,
        "  chain input {{\n    type filter hook input priority -205; policy accept;\n    \
         iifname \"extvx*\" drop\n  }}\n  \
         chain output {{\n    type filter hook output priority -205; policy accept;\n    \
         oifname \"extvx*\" drop\n  }}"
    );
    let _ = writeln!(s, "}}");
    s
}

fn target(address: Ipv4Addr, port: u16) -> String {
    format!("{address}:{port}")
}

fn set(items: &[String]) -> String {
    format!("{{ {} }}", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{Forward, Nic, VlanNet};

    fn plan() -> NetworkPlan {
        NetworkPlan {
            vlans: vec![VlanNet {
                vlan_id: 7,
                subnet: "10.64.6.0/24".parse().unwrap(),
                nics: vec![Nic {
                    server_id: 3,
                    mac: "52:54:00:aa:bb:cc".into(),
                    address: "10.64.6.10".parse().unwrap(),
                    hostname: "web".into(),
                }],
            }],
            forwards: vec![Forward {
                host_port: 20001,
                address: "10.64.6.10".parse().unwrap(),
                guest_port: 22,
            }],
            tunnel: None,
        }
    }

    #[test]
    fn tunnels_take_only_the_peers_and_carry_only_guests() {
        let mut tunneled = plan();
        tunneled.tunnel = Some(crate::network::Tunnel {
            local: "10.77.0.1".parse().unwrap(),
            peers: vec!["10.77.0.2".parse().unwrap(), "10.77.0.3".parse().unwrap()],
        });
        let rules = ruleset(&tunneled, &config(false));
        for line in [
            "udp dport 4789 ip saddr != { 10.77.0.2, 10.77.0.3 } drop",
            "iifname \"extvx*\" ether type ip6 drop",
            "iifname \"extvx*\" drop",
            "oifname \"extvx*\" drop",
        ] {
            assert!(rules.contains(line), "{line} missing from:\n{rules}");
        }
        tunneled.tunnel.as_mut().unwrap().peers.clear();
        assert!(ruleset(&tunneled, &config(false)).contains("udp dport 4789 drop"));
        assert!(!ruleset(&plan(), &config(false)).contains("4789"));
    }

    fn config(egress: bool) -> FirewallConfig {
        FirewallConfig {
            metadata_port: 8775,
            egress,
            pool: "10.64.0.0/10".parse().unwrap(),
            deny: vec!["192.168.1.0/24".parse().unwrap()],
        }
    }

    #[test]
    fn the_ruleset_names_each_bridge_tap_and_forward() {
        let rules = ruleset(&plan(), &config(true));
        assert!(rules.starts_with(&removal()));
        for line in [
            "iifname \"extbr7\" ip daddr 10.64.6.1 meta l4proto { tcp, udp } th dport 53 accept",
            "iifname \"extbr7\" oifname \"extbr7\" accept",
            "ip daddr { 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/3, 10.64.0.0/10, \
             192.168.1.0/24 } drop",
            "iifname \"extbr*\" ip daddr 169.254.169.254 tcp dport 80 redirect to :8775",
            "fib daddr type local tcp dport 20001 dnat ip to 10.64.6.10:22",
            "ip saddr 10.64.0.0/10 oifname != \"extbr*\" masquerade",
            "iifname \"extap3\" ether saddr != 52:54:00:aa:bb:cc drop",
            "iifname \"extap3\" ether type ip ip saddr != { 0.0.0.0, 10.64.6.10 } drop",
        ] {
            assert!(rules.contains(line), "missing {line:?} in\n{rules}");
        }
    }

    #[test]
    fn without_egress_guests_reach_nothing_beyond_the_host() {
        let rules = ruleset(&plan(), &config(false));
        assert!(!rules.contains("masquerade"));
        let from_guest = rules.split("chain from_guest {").nth(1).unwrap();
        let last = from_guest
            .lines()
            .map(str::trim)
            .take_while(|l| *l != "}")
            .last();
        assert_eq!(last, Some("drop"), "{from_guest}");
    }
}
