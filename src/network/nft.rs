//! The nftables rules of tenant networks, as one `nft -f` script: two tables the product owns
//! (`inet extility` and `bridge extility`), replaced whole and atomically at each change, and
//! nothing else of the host's firewall touched.
//!
//! - Frame admission (`bridge` table) is an allow-list. `iifname vmap` sends each frame of a
//!   tap to its NIC's chain and each frame of a tunnel to its VLAN's chain (one lookup,
//!   whatever the number of NICs; issue 23 measured a linear chain at a fifth of the
//!   throughput with 500 NICs). A tap passes IPv4 and ARP whose MAC and address are its NIC's,
//!   and DHCP discovery from 0.0.0.0; nothing else: no 802.1Q or 802.1ad tag, no IPv6, LLDP,
//!   STP or any other ethertype. The match is on `ether type`, the frame's own type: for a
//!   tagged frame that is the tag's (0x8100, 0x88a8), while `meta protocol` is the inner type
//!   (the kernel strips the tag into the packet's metadata before the bridge sees it), so a
//!   rule on `meta protocol` would let tagged frames in. A tap or tunnel no plan names passes
//!   nothing. A tunnel passes IPv4 and ARP of the VLAN's NICs on other nodes only, and no
//!   DHCP server.
//! - Strict reverse-path filtering of what guests send to be routed: an nft `fib` rule, not
//!   the `rp_filter` sysctl, whose effective value is the larger of `all` and the interface's
//!   (a host with `all` at 2, loose, would silently weaken it) and which lives outside this
//!   atomic ruleset.
//! - From a guest to the host (`input`): DHCP to its gateway, DNS on its own gateway, the
//!   metadata service (169.254.169.254:80, redirected to this node's metadata listener), and
//!   answers to connections the host opened (port forwards from this host). Nothing else.
//! - From a guest through the host (`forward`): never to another VLAN, to loopback,
//!   link-local, multicast, the VLAN pool, the host's own networks or any address the
//!   platform uses ([`NetworkPlan::platform`]); to the rest of the world only with egress on,
//!   masqueraded.
//! - To a guest: only what a port forward let in, and answers.
//! - Between nodes (VXLAN, `--tunnel-address`): UDP 4789 is taken only on the underlay
//!   interface (the one holding the tunnel address), from the other nodes' addresses, and
//!   never from a packet a guest originated: guests' connections get [`GUEST_MARK`] in their
//!   conntrack mark where they enter, and a marked packet to UDP 4789 is dropped wherever it
//!   goes (forward, input, output). The conntrack mark, not the packet mark: the packet mark
//!   would stay on a guest's frame when the VXLAN device encapsulates it (same namespace), while
//!   encapsulation gives the outer packet a conntrack entry of its own. A tunnel carries guests'
//!   frames to guests only: never this host's own (its gateway, DHCP and DNS serve its own
//!   guests; each node is the gateway of its guests), never anything to this host.

use std::fmt::Write;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::{METADATA_ADDR, METADATA_PORT, NetworkPlan, Nic, VXLAN_PORT, vxlan_name};

pub const TABLE: &str = "extility";

/// The bit of the conntrack mark that says a connection began at a guest (one bit, so that
/// other users of the mark keep theirs).
pub const GUEST_MARK: u32 = 0x1000_0000;

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
    /// The interface holding the tunnel address, the only one VXLAN is taken on (`None`: no
    /// interface holds it, and VXLAN is taken on none).
    pub underlay: Option<String>,
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
    inet_table(&mut s, plan, config);
    bridge_table(&mut s, plan);
    s
}

/// Everything guests may not reach, as an nft set.
fn denied(plan: &NetworkPlan, config: &FirewallConfig) -> String {
    let mut deny: Vec<Ipv4Net> = ALWAYS_DENIED.iter().map(|n| n.parse().unwrap()).collect();
    deny.push(config.pool);
    deny.extend(config.deny.iter().copied());
    deny.extend(plan.platform.iter().map(|a| Ipv4Net::from(*a)));
    // nft refuses overlapping elements in an interval set: keep the widest of each.
    let deny = Ipv4Net::aggregate(&deny);
    set(&deny.iter().map(ToString::to_string).collect::<Vec<_>>())
}

fn inet_table(s: &mut String, plan: &NetworkPlan, config: &FirewallConfig) {
    let bridges = "\"extbr*\"";
    let deny = denied(plan, config);
    let meta = METADATA_ADDR;
    let meta_port = config.metadata_port;
    let guest = format!("ct mark & {GUEST_MARK:#x} == {GUEST_MARK:#x}");

    let _ = writeln!(s, "table inet {TABLE} {{");
    // Where guests' packets enter: marked, and held to the route back to their source.
    let _ = writeln!(
        s,
        "  chain guard {{\n    type filter hook prerouting priority -160; policy accept;\n    \
         iifname {bridges} ct mark set ct mark | {GUEST_MARK:#x}\n    \
         iifname {bridges} ip saddr != 0.0.0.0 fib saddr . iif oif missing drop\n  }}"
    );
    // Guests to this host.
    let _ = writeln!(
        s,
        "  chain input {{\n    type filter hook input priority -5; policy accept;\n    \
         iifname {bridges} jump guest_to_host\n    \
         tcp dport {meta_port} iifname != \"lo\" drop\n    \
         {guest} udp dport {VXLAN_PORT} drop"
    );
    if plan.tunnel.is_some() {
        let _ = writeln!(s, "    udp dport {VXLAN_PORT} jump vxlan_in");
    }
    let _ = writeln!(s, "  }}");
    if let Some(tunnel) = &plan.tunnel {
        let _ = writeln!(s, "  chain vxlan_in {{");
        match &config.underlay {
            Some(underlay) => {
                let _ = writeln!(s, "    iifname != \"{underlay}\" drop");
            }
            None => {
                let _ = writeln!(s, "    drop");
            }
        }
        let peers: Vec<String> = tunnel.peers.iter().map(|p| p.to_string()).collect();
        if peers.is_empty() {
            let _ = writeln!(s, "    drop");
        } else {
            let _ = writeln!(s, "    ip saddr != {} drop", set(&peers));
        }
        let _ = writeln!(s, "  }}");
    }
    let _ = writeln!(s, "  chain guest_to_host {{");
    let _ = writeln!(s, "    ct state established,related accept");
    let _ = writeln!(s, "    meta nfproto ipv6 drop");
    for vlan in &plan.vlans {
        let (b, gw) = (vlan.bridge(), vlan.gateway());
        let _ = writeln!(
            s,
            "    iifname \"{b}\" ip daddr {{ 255.255.255.255, {gw} }} udp sport 68 udp dport 67 accept"
        );
        let _ = writeln!(
            s,
            "    iifname \"{b}\" ip daddr {gw} meta l4proto {{ tcp, udp }} th dport 53 accept"
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
        "    {guest} udp dport {VXLAN_PORT} drop\n    \
         iifname {bridges} jump from_guest\n    oifname {bridges} jump to_guest\n  }}"
    );
    let _ = writeln!(s, "  chain from_guest {{");
    // Also without a conntrack entry (which the mark needs), never a tunnel's port.
    let _ = writeln!(s, "    udp dport {VXLAN_PORT} drop");
    let _ = writeln!(s, "    ct state invalid drop");
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
    // What this host sends: never a guest's packet to a tunnel's port.
    let _ = writeln!(
        s,
        "  chain output_guard {{\n    type filter hook output priority -5; policy accept;\n    \
         {guest} udp dport {VXLAN_PORT} drop\n  }}"
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
    let _ = writeln!(s, "  }}");
    let nics: Vec<&Nic> = plan.vlans.iter().flat_map(|v| &v.nics).collect();
    super::firewall::chains(s, &nics);
    let _ = writeln!(s, "}}");
}

/// The chain of a tap's frames.
fn nic_chain(nic: &Nic) -> String {
    format!("nic_{}", nic.server_id)
}

/// The chain of a tunnel's frames.
fn tunnel_chain(vlan_id: i64) -> String {
    format!("tunnel_{vlan_id}")
}

fn bridge_table(s: &mut String, plan: &NetworkPlan) {
    let mut dispatch: Vec<String> = Vec::new();
    for vlan in &plan.vlans {
        for nic in &vlan.nics {
            dispatch.push(format!("\"{}\" : jump {}", nic.tap(), nic_chain(nic)));
        }
        if plan.tunnel.is_some() {
            dispatch.push(format!(
                "\"{}\" : jump {}",
                vxlan_name(vlan.vlan_id),
                tunnel_chain(vlan.vlan_id)
            ));
        }
    }
    let _ = writeln!(
        s,
        "table bridge {TABLE} {{\n  chain prerouting {{\n    \
         type filter hook prerouting priority -205; policy accept;"
    );
    if !dispatch.is_empty() {
        let _ = writeln!(s, "    iifname vmap {}", set(&dispatch));
    }
    // A tap or tunnel of ours that no plan names carries nothing.
    let _ = writeln!(
        s,
        "    iifname \"extap*\" drop\n    iifname \"extvx*\" drop\n  }}"
    );
    for vlan in &plan.vlans {
        for nic in &vlan.nics {
            let (mac, ip) = (&nic.mac, nic.address);
            let _ = writeln!(
                s,
                "  chain {} {{\n    \
                 ether saddr != {mac} drop\n    \
                 ether type arp arp hlen 6 arp plen 4 arp saddr ether {mac} arp saddr ip {ip} accept\n    \
                 ether type ip ip saddr {ip} udp sport 67 drop\n    \
                 ether type ip ip saddr {ip} accept\n    \
                 ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept\n    \
                 drop\n  }}",
                nic_chain(nic)
            );
        }
        if plan.tunnel.is_some() {
            let _ = writeln!(s, "  chain {} {{", tunnel_chain(vlan.vlan_id));
            if !vlan.remote_nics.is_empty() {
                let arp: Vec<String> = vlan
                    .remote_nics
                    .iter()
                    .map(|n| format!("{m} . {m} . {}", n.address, m = n.mac))
                    .collect();
                let ip: Vec<String> = vlan
                    .remote_nics
                    .iter()
                    .map(|n| format!("{} . {}", n.mac, n.address))
                    .collect();
                let _ = writeln!(
                    s,
                    "    ether type arp arp hlen 6 arp plen 4 \
                     ether saddr . arp saddr ether . arp saddr ip {} accept\n    \
                     ether type ip udp sport 67 drop\n    \
                     ether type ip ether saddr . ip saddr {} accept",
                    set(&arp),
                    set(&ip)
                );
            }
            let _ = writeln!(s, "    drop\n  }}");
        }
    }
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
    use crate::network::{Forward, Nic, Tunnel, VlanNet};

    fn nic(server_id: i64, mac: &str, address: &str) -> Nic {
        Nic {
            server_id,
            mac: mac.into(),
            address: address.parse().unwrap(),
            hostname: format!("s{server_id}"),
            firewall: None,
        }
    }

    fn plan() -> NetworkPlan {
        NetworkPlan {
            vlans: vec![VlanNet {
                vlan_id: 7,
                subnet: "10.64.6.0/24".parse().unwrap(),
                nics: vec![nic(3, "52:54:00:aa:bb:cc", "10.64.6.10")],
                remote_nics: vec![nic(4, "52:54:00:aa:bb:dd", "10.64.6.11")],
            }],
            forwards: vec![Forward {
                host_port: 20001,
                address: "10.64.6.10".parse().unwrap(),
                guest_port: 22,
            }],
            tunnel: None,
            platform: vec!["10.20.0.5".parse().unwrap(), "192.168.1.7".parse().unwrap()],
        }
    }

    fn tunneled() -> NetworkPlan {
        NetworkPlan {
            tunnel: Some(Tunnel {
                local: "10.77.0.1".parse().unwrap(),
                peers: vec!["10.77.0.2".parse().unwrap(), "10.77.0.3".parse().unwrap()],
            }),
            ..plan()
        }
    }

    fn config(egress: bool) -> FirewallConfig {
        FirewallConfig {
            metadata_port: 8775,
            egress,
            pool: "10.64.0.0/10".parse().unwrap(),
            deny: vec!["192.168.1.0/24".parse().unwrap()],
            underlay: Some("eth1".into()),
        }
    }

    /// The lines of chain `name` (trimmed, without its braces); `bridge/NAME` in the bridge
    /// table (the first of that name otherwise).
    fn chain(rules: &str, name: &str) -> Vec<String> {
        let (rules, name) = match name.strip_prefix("bridge/") {
            Some(name) => (rules.split("table bridge extility {").last().unwrap(), name),
            None => (rules, name),
        };
        let body = rules
            .split(&format!("chain {name} {{\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no chain {name} in\n{rules}"));
        body.lines()
            .map(str::trim)
            .take_while(|l| *l != "}")
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_tap_passes_only_its_nics_ipv4_arp_and_dhcp_discovery() {
        let rules = ruleset(&plan(), &config(true));
        assert_eq!(
            chain(&rules, "nic_3"),
            [
                "ether saddr != 52:54:00:aa:bb:cc drop",
                "ether type arp arp hlen 6 arp plen 4 arp saddr ether 52:54:00:aa:bb:cc \
                 arp saddr ip 10.64.6.10 accept",
                "ether type ip ip saddr 10.64.6.10 udp sport 67 drop",
                "ether type ip ip saddr 10.64.6.10 accept",
                "ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 \
                 udp dport 67 accept",
                "drop",
            ]
        );
        // Nothing is admitted by `meta protocol` (the type inside an 802.1Q tag), nor IPv6.
        assert!(!rules.contains("meta protocol"), "{rules}");
        assert!(!rules.contains("ip6 "), "{rules}");
    }

    #[test]
    fn frames_are_dispatched_by_one_lookup_and_unnamed_ports_pass_nothing() {
        let rules = ruleset(&tunneled(), &config(false));
        assert_eq!(
            chain(&rules, "bridge/prerouting")
                .into_iter()
                .filter(|l| !l.starts_with("type"))
                .collect::<Vec<_>>(),
            [
                "iifname vmap { \"extap3\" : jump nic_3, \"extvx7\" : jump tunnel_7 }",
                "iifname \"extap*\" drop",
                "iifname \"extvx*\" drop",
            ]
        );
        // Without NICs: no map at all, and every tap of ours is dropped.
        let empty = ruleset(&NetworkPlan::default(), &config(false));
        let pre = chain(&empty, "bridge/prerouting");
        assert!(!pre.iter().any(|l| l.contains("vmap")), "{pre:?}");
        assert!(pre.contains(&"iifname \"extap*\" drop".to_string()));
        // 500 NICs make 500 map entries and 500 chains, and still one rule before them.
        let mut many = plan();
        many.vlans[0].nics = (0..500)
            .map(|i| nic(i, "52:54:00:00:00:01", "10.64.6.10"))
            .collect();
        let rules = ruleset(&many, &config(false));
        assert_eq!(chain(&rules, "bridge/prerouting").len(), 4, "{rules}");
        assert!(rules.contains("\"extap499\" : jump nic_499"));
    }

    #[test]
    fn a_tunnel_passes_only_the_vlans_remote_nics_and_no_dhcp_server() {
        let rules = ruleset(&tunneled(), &config(false));
        assert_eq!(
            chain(&rules, "tunnel_7"),
            [
                "ether type arp arp hlen 6 arp plen 4 ether saddr . arp saddr ether . \
                 arp saddr ip { 52:54:00:aa:bb:dd . 52:54:00:aa:bb:dd . 10.64.6.11 } accept",
                "ether type ip udp sport 67 drop",
                "ether type ip ether saddr . ip saddr { 52:54:00:aa:bb:dd . 10.64.6.11 } accept",
                "drop",
            ]
        );
        let mut alone = tunneled();
        alone.vlans[0].remote_nics.clear();
        assert_eq!(
            chain(&ruleset(&alone, &config(false)), "tunnel_7"),
            ["drop"]
        );
        // Without a tunnel, no tunnel chain.
        assert!(!ruleset(&plan(), &config(false)).contains("tunnel_7"));
    }

    #[test]
    fn vxlan_is_taken_on_the_underlay_from_peers_and_never_from_guests() {
        let rules = ruleset(&tunneled(), &config(true));
        assert_eq!(
            chain(&rules, "vxlan_in"),
            [
                "iifname != \"eth1\" drop",
                "ip saddr != { 10.77.0.2, 10.77.0.3 } drop"
            ]
        );
        let marked = "ct mark & 0x10000000 == 0x10000000 udp dport 4789 drop";
        for name in ["input", "forward", "output_guard"] {
            assert!(
                chain(&rules, name).contains(&marked.to_string()),
                "{name}: {rules}"
            );
        }
        let guard = chain(&rules, "guard");
        assert!(
            guard.contains(&"iifname \"extbr*\" ct mark set ct mark | 0x10000000".to_string()),
            "{guard:?}"
        );
        assert!(
            guard.contains(
                &"iifname \"extbr*\" ip saddr != 0.0.0.0 fib saddr . iif oif missing drop"
                    .to_string()
            ),
            "{guard:?}"
        );
        assert_eq!(chain(&rules, "from_guest")[0], "udp dport 4789 drop");
        // No interface holds the tunnel address, or there are no peers: no VXLAN at all.
        let nowhere = FirewallConfig {
            underlay: None,
            ..config(true)
        };
        assert_eq!(
            chain(&ruleset(&tunneled(), &nowhere), "vxlan_in")[0],
            "drop"
        );
        let mut lonely = tunneled();
        lonely.tunnel.as_mut().unwrap().peers.clear();
        assert!(chain(&ruleset(&lonely, &config(true)), "vxlan_in").contains(&"drop".into()));
        assert!(!ruleset(&plan(), &config(false)).contains("vxlan_in"));
    }

    #[test]
    fn the_ruleset_names_each_bridge_tap_and_forward() {
        let rules = ruleset(&plan(), &config(true));
        assert!(rules.starts_with(&removal()));
        for line in [
            "iifname \"extbr7\" ip daddr { 255.255.255.255, 10.64.6.1 } udp sport 68 udp dport 67 accept",
            "iifname \"extbr7\" ip daddr 10.64.6.1 meta l4proto { tcp, udp } th dport 53 accept",
            "iifname \"extbr7\" oifname \"extbr7\" accept",
            "iifname \"extbr*\" ip daddr 169.254.169.254 tcp dport 80 redirect to :8775",
            "fib daddr type local tcp dport 20001 dnat ip to 10.64.6.10:22",
            "ip saddr 10.64.0.0/10 oifname != \"extbr*\" masquerade",
        ] {
            assert!(rules.contains(line), "missing {line:?} in\n{rules}");
        }
    }

    #[test]
    fn guests_never_reach_the_platforms_addresses() {
        let rules = ruleset(&plan(), &config(true));
        // The platform's addresses join the deny set; one inside a denied network is folded
        // into it (nft refuses overlapping intervals).
        assert!(
            chain(&rules, "from_guest").contains(
                &"ip daddr { 0.0.0.0/8, 10.20.0.5/32, 10.64.0.0/10, 127.0.0.0/8, \
                  169.254.0.0/16, 192.168.1.0/24, 224.0.0.0/3 } drop"
                    .to_string()
            ),
            "{rules}"
        );
    }

    #[test]
    fn a_template_filters_after_the_platform_and_only_its_nics() {
        use crate::network::firewall::{Action, Direction, Protocol, Rule, Template};
        let mut plan = plan();
        // No template: no firewall chain at all (a server without one behaves as before).
        assert!(!ruleset(&plan, &config(true)).contains("firewall_"));
        let template = Template {
            template_id: 5,
            default_inbound: Action::Deny,
            default_outbound: Action::Allow,
            rules: vec![
                Rule {
                    direction: Direction::In,
                    protocol: Protocol::Tcp,
                    ports: Some((22, 22)),
                    network: "10.64.6.0/24".parse().unwrap(),
                    action: Action::Allow,
                },
                Rule {
                    direction: Direction::Out,
                    protocol: Protocol::Any,
                    ports: None,
                    network: "198.51.100.7/32".parse().unwrap(),
                    action: Action::Deny,
                },
            ],
        };
        plan.vlans[0].nics[0].firewall = Some(template);
        plan.vlans[0]
            .nics
            .push(nic(8, "52:54:00:aa:bb:ee", "10.64.6.12"));
        let rules = ruleset(&plan, &config(true));
        assert_eq!(
            chain(&rules, "firewall_forward"),
            [
                "type filter hook forward priority 0; policy accept;",
                "ct state established,related accept",
                "iifname \"extbr*\" ip saddr vmap { 10.64.6.10 : jump template_5_out }",
                "oifname \"extbr*\" ip daddr vmap { 10.64.6.10 : jump template_5_in }",
            ]
        );
        assert_eq!(
            chain(&rules, "firewall_output")[1..],
            [
                "ct state established,related accept",
                "oifname \"extbr*\" udp sport 67 udp dport 68 accept",
                "ip daddr vmap { 10.64.6.10 : jump template_5_in }",
            ]
        );
        assert_eq!(
            chain(&rules, "template_5_in"),
            ["ip saddr 10.64.6.0/24 tcp dport 22 return", "drop"]
        );
        assert_eq!(
            chain(&rules, "template_5_out"),
            ["ip daddr 198.51.100.7/32 drop"]
        );
        // After the platform's filters (priority -5): they see every packet first.
        assert!(rules.contains("type filter hook forward priority -5;"));
    }

    #[test]
    fn without_egress_guests_reach_nothing_beyond_the_host() {
        let rules = ruleset(&plan(), &config(false));
        assert!(!rules.contains("masquerade"));
        assert_eq!(
            chain(&rules, "from_guest").last().map(String::as_str),
            Some("drop")
        );
        let with = ruleset(&plan(), &config(true));
        assert_eq!(
            chain(&with, "from_guest").last().map(String::as_str),
            Some("accept")
        );
    }
}
