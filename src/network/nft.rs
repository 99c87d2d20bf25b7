//! The nftables rules of tenant networks: two tables the product owns (`inet extility` and
//! `bridge extility`), built as data ([`model`], a [`Ruleset`]) and given to the kernel in one
//! atomic `nft -f` transaction: whole at start-up and after a drift ([`ruleset`]), and
//! otherwise only what changed ([`super::ruleset::changes`]). Nothing else of the host's
//! firewall is touched.
//!
//! A packet meets a constant number of rules whatever the number of VLANs, NICs and port
//! forwards (issue 23): what is per NIC, per VLAN or per forward is an element of a named set
//! or map (or a chain behind a verdict map), never a rule of a shared chain. Adding or removing
//! a NIC, a VLAN or a forward changes its elements and its own chain only.
//! - `bridge`: `ports` (a tap or tunnel to its chain), one chain per NIC and per tunnel.
//! - `inet`: `dhcp` and `gateways` (a bridge with the addresses its guests may ask for DHCP and
//!   DNS), `intra` (a bridge with itself: traffic inside a VLAN), `forwards` (a host port to
//!   the NIC address and port it reaches), `firewall_in` and `firewall_out` (a NIC's address to
//!   its firewall template's chain: [`super::firewall`]).
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

use ipnet::Ipv4Net;

use super::ruleset::{Ruleset, Set, Table};
use super::{METADATA_ADDR, METADATA_PORT, NetworkPlan, Nic, VXLAN_PORT, vxlan_name};

pub const TABLE: &str = "extility";

/// The bit of the conntrack mark that says a connection began at a guest (one bit, so that
/// other users of the mark keep theirs).
pub const GUEST_MARK: u32 = 0x1000_0000;

/// What the rules need besides the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    model(&NetworkPlan::default(), &empty_config()).removal()
}

fn empty_config() -> FirewallConfig {
    FirewallConfig {
        metadata_port: 0,
        egress: false,
        pool: Ipv4Net::default(),
        deny: Vec::new(),
        underlay: None,
    }
}

/// The script that replaces both tables with the rules of `plan`.
pub fn ruleset(plan: &NetworkPlan, config: &FirewallConfig) -> String {
    model(plan, config).script()
}

/// Both tables with the rules of `plan`, as data: [`Ruleset::script`] writes them whole,
/// [`super::ruleset::changes`] only what differs from those of another plan.
pub fn model(plan: &NetworkPlan, config: &FirewallConfig) -> Ruleset {
    let mut inet = Table::new("inet", TABLE);
    inet_table(&mut inet, plan, config);
    let mut bridge = Table::new("bridge", TABLE);
    bridge_table(&mut bridge, plan);
    Ruleset {
        tables: vec![inet, bridge],
    }
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

fn inet_table(t: &mut Table, plan: &NetworkPlan, config: &FirewallConfig) {
    let bridges = "\"extbr*\"";
    let deny = denied(plan, config);
    let meta = METADATA_ADDR;
    let meta_port = config.metadata_port;
    let guest = format!("ct mark & {GUEST_MARK:#x} == {GUEST_MARK:#x}");

    // Per VLAN, elements only: where DHCP may go (the bridge's broadcast and gateway), its
    // gateway (DNS), and its bridge to itself (bridged traffic inside the VLAN).
    let mut dhcp = Set::plain("type ifname . ipv4_addr;");
    let mut gateways = Set::plain("type ifname . ipv4_addr;");
    let mut intra = Set::plain("type ifname . ifname;");
    for vlan in &plan.vlans {
        let (b, gw) = (vlan.bridge(), vlan.gateway());
        dhcp.insert(format!("\"{b}\" . 255.255.255.255"));
        dhcp.insert(format!("\"{b}\" . {gw}"));
        gateways.insert(format!("\"{b}\" . {gw}"));
        intra.insert(format!("\"{b}\" . \"{b}\""));
    }
    // Port forwards: one map from the host port to the NIC's address and port.
    let mut forwards = Set::map("type inet_service : ipv4_addr . inet_service;");
    for f in &plan.forwards {
        forwards.insert_pair(
            f.host_port.to_string(),
            format!("{} . {}", f.address, f.guest_port),
        );
    }
    t.sets.insert("dhcp".into(), dhcp);
    t.sets.insert("gateways".into(), gateways);
    t.sets.insert("intra".into(), intra);
    t.sets.insert("forwards".into(), forwards);

    // Where guests' packets enter: marked, and held to the route back to their source.
    let c = t.chain("guard");
    c.hook = Some("type filter hook prerouting priority -160; policy accept;".into());
    c.rule(format!(
        "iifname {bridges} ct mark set ct mark | {GUEST_MARK:#x}"
    ));
    c.rule(format!(
        "iifname {bridges} ip saddr != 0.0.0.0 fib saddr . iif oif missing drop"
    ));
    // Guests to this host.
    let c = t.chain("input");
    c.hook = Some("type filter hook input priority -5; policy accept;".into());
    c.rule(format!("iifname {bridges} jump guest_to_host"));
    c.rule(format!("tcp dport {meta_port} iifname != \"lo\" drop"));
    c.rule(format!("{guest} udp dport {VXLAN_PORT} drop"));
    if let Some(tunnel) = &plan.tunnel {
        c.rule(format!("udp dport {VXLAN_PORT} jump vxlan_in"));
        let c = t.chain("vxlan_in");
        match &config.underlay {
            Some(underlay) => c.rule(format!("iifname != \"{underlay}\" drop")),
            None => c.rule("drop"),
        }
        let peers: Vec<String> = tunnel.peers.iter().map(|p| p.to_string()).collect();
        if peers.is_empty() {
            c.rule("drop");
        } else {
            c.rule(format!("ip saddr != {} drop", set(&peers)));
        }
    }
    let c = t.chain("guest_to_host");
    c.rule("ct state established,related accept");
    c.rule("meta nfproto ipv6 drop");
    c.rule("iifname . ip daddr @dhcp udp sport 68 udp dport 67 accept");
    c.rule("iifname . ip daddr @gateways meta l4proto { tcp, udp } th dport 53 accept");
    c.rule(format!(
        "ct original ip daddr {meta} tcp dport {meta_port} accept"
    ));
    c.rule("drop");

    // Through this host.
    let c = t.chain("forward");
    c.hook = Some("type filter hook forward priority -5; policy accept;".into());
    // Bridged traffic inside one VLAN, when br_netfilter shows it here.
    c.rule("iifname . oifname @intra accept");
    c.rule(format!("{guest} udp dport {VXLAN_PORT} drop"));
    c.rule(format!("iifname {bridges} jump from_guest"));
    c.rule(format!("oifname {bridges} jump to_guest"));
    let c = t.chain("from_guest");
    // Also without a conntrack entry (which the mark needs), never a tunnel's port.
    c.rule(format!("udp dport {VXLAN_PORT} drop"));
    c.rule("ct state invalid drop");
    c.rule("ct state established,related accept");
    c.rule(format!("oifname {bridges} drop"));
    c.rule(format!("ip daddr {deny} drop"));
    c.rule("fib daddr type local drop");
    c.rule(if config.egress { "accept" } else { "drop" });
    let c = t.chain("to_guest");
    c.rule("ct state established,related accept");
    c.rule("ct status dnat accept");
    c.rule("drop");
    // What this host sends: never a guest's packet to a tunnel's port.
    let c = t.chain("output_guard");
    c.hook = Some("type filter hook output priority -5; policy accept;".into());
    c.rule(format!("{guest} udp dport {VXLAN_PORT} drop"));

    // Addresses: the metadata redirect, port forwards (one lookup in `forwards`: a port it
    // does not hold matches nothing), egress NAT.
    let c = t.chain("prerouting");
    c.hook = Some("type nat hook prerouting priority -105; policy accept;".into());
    c.rule(format!(
        "iifname {bridges} ip daddr {meta} tcp dport {METADATA_PORT} redirect to :{meta_port}"
    ));
    c.rule(format!(
        "iifname != {bridges} fib daddr type local dnat ip to tcp dport map @forwards"
    ));
    let c = t.chain("output");
    c.hook = Some("type nat hook output priority -105; policy accept;".into());
    c.rule("ip daddr != 127.0.0.0/8 fib daddr type local dnat ip to tcp dport map @forwards");
    let c = t.chain("postrouting");
    c.hook = Some("type nat hook postrouting priority 95; policy accept;".into());
    if config.egress {
        c.rule(format!(
            "ip saddr {} oifname != {bridges} masquerade",
            config.pool
        ));
    }
    let nics: Vec<&Nic> = plan.vlans.iter().flat_map(|v| &v.nics).collect();
    super::firewall::add(t, &nics);
}

/// The chain of a tap's frames.
fn nic_chain(nic: &Nic) -> String {
    format!("nic_{}", nic.server_id)
}

/// The chain of a tunnel's frames.
fn tunnel_chain(vlan_id: i64) -> String {
    format!("tunnel_{vlan_id}")
}

fn bridge_table(t: &mut Table, plan: &NetworkPlan) {
    // One lookup from the interface a frame came in on to its NIC's (or tunnel's) chain.
    let mut ports = Set::map("type ifname : verdict;");
    for vlan in &plan.vlans {
        for nic in &vlan.nics {
            ports.insert_pair(
                format!("\"{}\"", nic.tap()),
                format!("jump {}", nic_chain(nic)),
            );
        }
        if plan.tunnel.is_some() {
            ports.insert_pair(
                format!("\"{}\"", vxlan_name(vlan.vlan_id)),
                format!("jump {}", tunnel_chain(vlan.vlan_id)),
            );
        }
    }
    t.sets.insert("ports".into(), ports);
    let c = t.chain("prerouting");
    c.hook = Some("type filter hook prerouting priority -205; policy accept;".into());
    c.rule("iifname vmap @ports");
    // A tap or tunnel of ours that the map does not name carries nothing.
    c.rule("iifname \"extap*\" drop");
    c.rule("iifname \"extvx*\" drop");
    for vlan in &plan.vlans {
        for nic in &vlan.nics {
            let (mac, ip) = (&nic.mac, nic.address);
            let c = t.chain(&nic_chain(nic));
            c.rule(format!("ether saddr != {mac} drop"));
            c.rule(format!(
                "ether type arp arp hlen 6 arp plen 4 arp saddr ether {mac} arp saddr ip {ip} accept"
            ));
            c.rule(format!("ether type ip ip saddr {ip} udp sport 67 drop"));
            c.rule(format!("ether type ip ip saddr {ip} accept"));
            c.rule(
                "ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept",
            );
            c.rule("drop");
        }
        if plan.tunnel.is_some() {
            let c = t.chain(&tunnel_chain(vlan.vlan_id));
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
                c.rule(format!(
                    "ether type arp arp hlen 6 arp plen 4 \
                     ether saddr . arp saddr ether . arp saddr ip {} accept",
                    set(&arp)
                ));
                c.rule("ether type ip udp sport 67 drop");
                c.rule(format!(
                    "ether type ip ether saddr . ip saddr {} accept",
                    set(&ip)
                ));
            }
            c.rule("drop");
        }
    }
    // A tunnel joins guests to guests: this host neither hears other nodes' guests nor
    // speaks to them (its gateway is its own guests').
    let c = t.chain("input");
    c.hook = Some("type filter hook input priority -205; policy accept;".into());
    c.rule("iifname \"extvx*\" drop");
    let c = t.chain("output");
    c.hook = Some("type filter hook output priority -205; policy accept;".into());
    c.rule("oifname \"extvx*\" drop");
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

    /// The elements of set or map `name` of the table of `family`.
    fn elements(rules: &Ruleset, family: &str, name: &str) -> Vec<String> {
        let table = rules.tables.iter().find(|t| t.family == family).unwrap();
        table.sets[name]
            .elements
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k} : {v}"),
                None => k.clone(),
            })
            .collect()
    }

    #[test]
    fn frames_are_dispatched_by_one_lookup_and_unnamed_ports_pass_nothing() {
        let rules = ruleset(&tunneled(), &config(false));
        let prerouting = [
            "iifname vmap @ports",
            "iifname \"extap*\" drop",
            "iifname \"extvx*\" drop",
        ];
        assert_eq!(
            chain(&rules, "bridge/prerouting")
                .into_iter()
                .filter(|l| !l.starts_with("type"))
                .collect::<Vec<_>>(),
            prerouting
        );
        assert_eq!(
            elements(&model(&tunneled(), &config(false)), "bridge", "ports"),
            ["\"extap3\" : jump nic_3", "\"extvx7\" : jump tunnel_7"]
        );
        // Without NICs: an empty map, and every tap of ours is dropped.
        let empty = model(&NetworkPlan::default(), &config(false));
        assert!(elements(&empty, "bridge", "ports").is_empty());
        assert_eq!(chain(&empty.script(), "bridge/prerouting")[1..], prerouting);
        // 500 NICs make 500 map entries and 500 chains, and still the same rules before them.
        let mut many = plan();
        many.vlans[0].nics = (0..500)
            .map(|i| nic(i, "52:54:00:00:00:01", "10.64.6.10"))
            .collect();
        let rules = model(&many, &config(false));
        assert_eq!(chain(&rules.script(), "bridge/prerouting")[1..], prerouting);
        assert_eq!(elements(&rules, "bridge", "ports").len(), 500);
        assert!(rules.script().contains("\"extap499\" : jump nic_499"));
    }

    #[test]
    fn no_shared_chain_grows_with_vlans_nics_or_forwards() {
        let one = model(&plan(), &config(true));
        let mut many = plan();
        for v in 0..50 {
            let mut vlan = many.vlans[0].clone();
            vlan.vlan_id = 100 + v;
            vlan.subnet = format!("10.65.{v}.0/24").parse().unwrap();
            vlan.nics = (0..10)
                .map(|i| {
                    nic(
                        1000 + v * 10 + i,
                        "52:54:00:00:00:02",
                        &format!("10.65.{v}.{}", 10 + i),
                    )
                })
                .collect();
            many.vlans.push(vlan);
        }
        many.forwards = (0..500)
            .map(|i| Forward {
                host_port: 20000 + i,
                address: "10.64.6.10".parse().unwrap(),
                guest_port: 22,
            })
            .collect();
        let many = model(&many, &config(true));
        for (a, b) in one.tables.iter().zip(&many.tables) {
            for (name, chain) in &a.chains {
                if name.starts_with("nic_") || name.starts_with("tunnel_") {
                    continue;
                }
                assert_eq!(chain, &b.chains[name], "{name}");
            }
        }
        assert_eq!(elements(&many, "inet", "forwards").len(), 500);
        assert_eq!(elements(&many, "inet", "intra").len(), 51);
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
            "iifname . ip daddr @dhcp udp sport 68 udp dport 67 accept",
            "iifname . ip daddr @gateways meta l4proto { tcp, udp } th dport 53 accept",
            "iifname . oifname @intra accept",
            "iifname \"extbr*\" ip daddr 169.254.169.254 tcp dport 80 redirect to :8775",
            "fib daddr type local dnat ip to tcp dport map @forwards",
            "ip saddr 10.64.0.0/10 oifname != \"extbr*\" masquerade",
        ] {
            assert!(rules.contains(line), "missing {line:?} in\n{rules}");
        }
        let model = model(&plan(), &config(true));
        assert_eq!(
            elements(&model, "inet", "dhcp"),
            ["\"extbr7\" . 10.64.6.1", "\"extbr7\" . 255.255.255.255"]
        );
        assert_eq!(
            elements(&model, "inet", "gateways"),
            ["\"extbr7\" . 10.64.6.1"]
        );
        assert_eq!(
            elements(&model, "inet", "intra"),
            ["\"extbr7\" . \"extbr7\""]
        );
        assert_eq!(
            elements(&model, "inet", "forwards"),
            ["20001 : 10.64.6.10 . 22"]
        );
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
        // No template: empty maps (a server without one behaves as before).
        let none = model(&plan, &config(true));
        assert!(elements(&none, "inet", "firewall_in").is_empty());
        assert!(!none.script().contains("template_"));
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
                "iifname \"extbr*\" ip saddr vmap @firewall_out",
                "oifname \"extbr*\" ip daddr vmap @firewall_in",
            ]
        );
        assert_eq!(
            chain(&rules, "firewall_output")[1..],
            [
                "ct state established,related accept",
                "oifname \"extbr*\" udp sport 67 udp dport 68 accept",
                "ip daddr vmap @firewall_in",
            ]
        );
        let m = model(&plan, &config(true));
        assert_eq!(
            elements(&m, "inet", "firewall_out"),
            ["10.64.6.10 : jump template_5_out"]
        );
        assert_eq!(
            elements(&m, "inet", "firewall_in"),
            ["10.64.6.10 : jump template_5_in"]
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
