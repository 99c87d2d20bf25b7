//! Firewall templates as nftables rules: a customer's ordered rules and default policies,
//! enforced on the packets that reach and leave a NIC, after the platform's own rules.
//!
//! The rules live in the `inet extility` table, in two base chains of their own at priority 0,
//! after the platform's filter chains (priority -5): a packet a platform chain drops never gets
//! here, and these chains only ever drop, so a template can narrow what the platform lets
//! through and never widen it (anti-spoofing, host protection, DHCP, DNS and metadata stay
//! the platform's). They are stateful through conntrack: a connection a template allowed
//! carries its replies both ways (`ct state established,related accept` comes first).
//!
//! - `firewall_forward` (hook forward) sees what guests exchange with each other on a VLAN
//!   (the bridges have `nf_call_iptables` on, so bridged IPv4 passes the inet hooks, with the
//!   bridge as both interfaces), what they send to the world and what port forwards bring
//!   them.
//! - `firewall_output` (hook output) sees what this host itself sends to a guest (a port
//!   forward used from this host: the output NAT chain rewrote it to the guest's address).
//!
//! A NIC is found by its address in one named verdict map per direction (`firewall_out`,
//! `ip saddr vmap`, for what leaves it; `firewall_in`, `ip daddr vmap`, for what reaches it): addresses are unique on a node (VLAN
//! subnets never overlap, and the bridge table lets a tap send only its own address), and one
//! lookup dispatches whatever the number of NICs. Each template is two chains, shared by the
//! NICs that use it: a rule that allows `return`s (so that the packet still meets the other
//! end's template), a rule that denies drops, and the default policy ends the chain. What a
//! guest sends to this host (DHCP, DNS, metadata) goes through the input hook, which these
//! chains leave alone; DHCP answers from the gateway always reach the guest.

use ipnet::Ipv4Net;

use super::Nic;
use super::ruleset::{Set, Table};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// What reaches the NIC; the rule's network is the source.
    In,
    /// What leaves the NIC; the rule's network is the destination.
    Out,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Any,
}

/// One rule of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub direction: Direction,
    pub protocol: Protocol,
    /// Destination ports, first to last (TCP and UDP only; `None`: every port).
    pub ports: Option<(u16, u16)>,
    /// The other end: the source of what comes in, the destination of what goes out.
    pub network: Ipv4Net,
    pub action: Action,
}

/// A template: its rules in order (the first that matches decides) and default policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub template_id: i64,
    pub default_inbound: Action,
    pub default_outbound: Action,
    pub rules: Vec<Rule>,
}

fn chain_name(template_id: i64, direction: Direction) -> String {
    match direction {
        Direction::In => format!("template_{template_id}_in"),
        Direction::Out => format!("template_{template_id}_out"),
    }
}

/// The rule's match and verdict, as one nft rule.
fn rule_line(rule: &Rule) -> String {
    let mut parts: Vec<String> = Vec::new();
    if rule.network.prefix_len() > 0 {
        let side = match rule.direction {
            Direction::In => "saddr",
            Direction::Out => "daddr",
        };
        parts.push(format!("ip {side} {}", rule.network));
    }
    let ports = |proto: &str| match rule.ports {
        Some((from, to)) if from == to => format!("{proto} dport {from}"),
        Some((from, to)) => format!("{proto} dport {from}-{to}"),
        None => format!("meta l4proto {proto}"),
    };
    match rule.protocol {
        Protocol::Tcp => parts.push(ports("tcp")),
        Protocol::Udp => parts.push(ports("udp")),
        Protocol::Icmp => parts.push("meta l4proto icmp".into()),
        Protocol::Any => {}
    }
    parts.push(
        match rule.action {
            Action::Allow => "return",
            Action::Deny => "drop",
        }
        .into(),
    );
    parts.join(" ")
}

/// The firewall of the NICs that have a template, into the `inet` table: two base chains
/// that dispatch by address through the maps `firewall_out` and `firewall_in` (empty when no
/// NIC has a template, and the chains then let everything through), and each used template's
/// two chains. A NIC given or rid of a template changes its elements only; a template's rules
/// changed rewrite its chains only.
pub fn add(table: &mut Table, nics: &[&Nic]) {
    let mut outbound = Set::map("type ipv4_addr : verdict;");
    let mut inbound = Set::map("type ipv4_addr : verdict;");
    for nic in nics {
        let Some(template) = &nic.firewall else {
            continue;
        };
        let id = template.template_id;
        for (direction, default) in [
            (Direction::In, template.default_inbound),
            (Direction::Out, template.default_outbound),
        ] {
            let name = chain_name(id, direction);
            if !table.chains.contains_key(&name) {
                let chain = table.chain(&name);
                for rule in template.rules.iter().filter(|r| r.direction == direction) {
                    chain.rule(rule_line(rule));
                }
                if default == Action::Deny {
                    chain.rule("drop");
                }
            }
        }
        outbound.insert_pair(
            nic.address.to_string(),
            format!("jump {}", chain_name(id, Direction::Out)),
        );
        inbound.insert_pair(
            nic.address.to_string(),
            format!("jump {}", chain_name(id, Direction::In)),
        );
    }
    table.sets.insert("firewall_out".into(), outbound);
    table.sets.insert("firewall_in".into(), inbound);
    let bridges = "\"extbr*\"";
    let forward = table.chain("firewall_forward");
    forward.hook = Some("type filter hook forward priority 0; policy accept;".into());
    forward.rule("ct state established,related accept");
    forward.rule(format!("iifname {bridges} ip saddr vmap @firewall_out"));
    forward.rule(format!("oifname {bridges} ip daddr vmap @firewall_in"));
    // From this host only: DHCP answers (to an address or broadcast, which conntrack does not
    // pair with the request) come from the gateway's dnsmasq, and always pass. No `oifname`
    // on the map: a port forward used from this host is rewritten by the output NAT chain,
    // after which the hook still names the interface first routed to (`lo`); a NIC's address
    // is routed to its bridge whatever the hook says.
    let output = table.chain("firewall_output");
    output.hook = Some("type filter hook output priority 0; policy accept;".into());
    output.rule("ct state established,related accept");
    output.rule(format!(
        "oifname {bridges} udp sport 67 udp dport 68 accept"
    ));
    output.rule("ip daddr vmap @firewall_in");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(direction: Direction, protocol: Protocol, ports: Option<(u16, u16)>) -> Rule {
        Rule {
            direction,
            protocol,
            ports,
            network: "10.64.6.0/24".parse().unwrap(),
            action: Action::Allow,
        }
    }

    #[test]
    fn rules_match_the_other_end_protocol_and_ports() {
        assert_eq!(
            rule_line(&rule(Direction::In, Protocol::Tcp, Some((22, 22)))),
            "ip saddr 10.64.6.0/24 tcp dport 22 return"
        );
        assert_eq!(
            rule_line(&rule(Direction::Out, Protocol::Udp, Some((1000, 2000)))),
            "ip daddr 10.64.6.0/24 udp dport 1000-2000 return"
        );
        let mut any = rule(Direction::Out, Protocol::Any, None);
        any.network = "0.0.0.0/0".parse().unwrap();
        any.action = Action::Deny;
        assert_eq!(rule_line(&any), "drop");
        assert_eq!(
            rule_line(&rule(Direction::In, Protocol::Icmp, None)),
            "ip saddr 10.64.6.0/24 meta l4proto icmp return"
        );
        assert_eq!(
            rule_line(&rule(Direction::In, Protocol::Tcp, None)),
            "ip saddr 10.64.6.0/24 meta l4proto tcp return"
        );
    }
}
