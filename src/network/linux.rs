//! `--network bridge`: Linux bridges, persistent taps, dnsmasq and nftables, driven by the
//! `ip`, `nft` and `dnsmasq` programs (as Proxmox and libvirt do).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use ipnet::Ipv4Net;

use super::nft::{self, FirewallConfig};
use super::ruleset::{self, Ruleset};
use super::{
    MAX_VNI, Mode, Network, NetworkError, NetworkPlan, Nic, TUNNELED_MTU, Tunnel, VXLAN_PORT,
    VlanNet, dnsmasq, is_own_link, vxlan_name,
};

#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// dnsmasq's files (`--network-run-dir`): made readable by everyone, as dnsmasq drops its
    /// privileges before it reads some of them.
    pub state_dir: PathBuf,
    /// Where an earlier release kept them (`<data-dir>/network/<node>`): the daemons found
    /// there are stopped, and the sync starts them again from `state_dir`.
    pub legacy_state_dir: PathBuf,
    pub metadata_port: u16,
    pub egress: bool,
    pub pool: Ipv4Net,
    /// Networks guests never reach besides the host's own (`--guest-deny`).
    pub deny: Vec<Ipv4Net>,
}

pub struct LinuxBridges {
    config: BridgeConfig,
    /// What the host was last made to match, which the next change is made against; `None`
    /// before the first apply and after a failed one (the next writes everything). The lock
    /// makes one change at a time.
    applied: Mutex<Option<Applied>>,
}

/// The state of the host after an apply.
struct Applied {
    plan: NetworkPlan,
    firewall: FirewallConfig,
    rules: Ruleset,
    /// The kernel's listing of `rules` (normalized), once known: what the resync compares
    /// the kernel's tables with.
    listing: Option<(Ruleset, String)>,
}

/// The programs this engine runs.
const TOOLS: &[&str] = &["ip", "nft", dnsmasq::BINARY];

impl LinuxBridges {
    /// Why this process cannot manage bridges here, if it cannot.
    pub fn unavailable() -> Option<String> {
        if !has_net_admin() {
            return Some("this process is not root and lacks CAP_NET_ADMIN".into());
        }
        if let Some(tool) = TOOLS.iter().find(|tool| !on_path(tool)) {
            return Some(format!("`{tool}` is not installed"));
        }
        if !forwarding_possible() {
            return Some(format!(
                "IPv4 forwarding is off and /proc/sys/{IP_FORWARD} is read-only (in a \
                 container, turn it on with the sysctl net.ipv4.ip_forward=1)"
            ));
        }
        None
    }

    pub fn new(config: BridgeConfig) -> Result<Self, NetworkError> {
        dnsmasq::make_state_dir(&config.state_dir)?;
        if config.legacy_state_dir != config.state_dir {
            for bridge in dnsmasq::known_bridges(&config.legacy_state_dir) {
                dnsmasq::remove(&config.legacy_state_dir, &bridge);
            }
            let _ = std::fs::remove_dir(&config.legacy_state_dir);
        }
        // Routing between the VLANs' gateways and the world (the firewall decides what may).
        // Already on in a container given the sysctl, whose /proc/sys is read-only.
        if read_sysctl(IP_FORWARD).as_deref() != Some("1") {
            write_sysctl(IP_FORWARD, "1")?;
        }
        Ok(LinuxBridges {
            config,
            applied: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &BridgeConfig {
        &self.config
    }

    fn ensure_bridge(&self, vlan: &VlanNet, exists: bool) -> Result<(), NetworkError> {
        let bridge = vlan.bridge();
        if !exists {
            ip(&["link", "add", "name", &bridge, "type", "bridge"])?;
        }
        // The host is on the VLAN as its gateway, over IPv4 only.
        let _ = write_sysctl(&format!("net/ipv6/conf/{bridge}/disable_ipv6"), "1");
        // Bridged IPv4 passes the inet hooks (br_netfilter), whatever the host's
        // `bridge-nf-call-iptables`: firewall templates filter what guests exchange on a VLAN.
        ip(&[
            "link",
            "set",
            &bridge,
            "type",
            "bridge",
            "nf_call_iptables",
            "1",
        ])?;
        let address = format!("{}/{}", vlan.gateway(), vlan.subnet.prefix_len());
        ip(&["addr", "replace", &address, "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        Ok(())
    }

    fn ensure_tap(&self, nic: &Nic, bridge: &str, exists: bool) -> Result<(), NetworkError> {
        let tap = nic.tap();
        if !exists {
            // Persistent: it outlives QEMU's open file and this process, so a VM keeps its
            // network across a restart of `extility serve`.
            ip(&["tuntap", "add", "dev", &tap, "mode", "tap", "vnet_hdr"])?;
        }
        let _ = write_sysctl(&format!("net/ipv6/conf/{tap}/disable_ipv6"), "1");
        ip(&["link", "set", &tap, "master", bridge])?;
        ip(&["link", "set", &tap, "up"])?;
        Ok(())
    }

    /// Joins the VLAN's bridge to the other nodes' by its VXLAN interface, which copies
    /// broadcasts to each peer and learns where the other MACs are. `false` when the VLAN
    /// cannot have one (its id is past the 24 bits of a VNI).
    fn ensure_vxlan(
        &self,
        vlan: &VlanNet,
        tunnel: &Tunnel,
        exists: bool,
    ) -> Result<bool, NetworkError> {
        if vlan.vlan_id > MAX_VNI {
            tracing::warn!(
                vlan_id = vlan.vlan_id,
                "a VLAN id past 2^24 has no VXLAN network identifier: it stays on each node"
            );
            return Ok(false);
        }
        let vxlan = vxlan_name(vlan.vlan_id);
        if !exists {
            ip(&[
                "link",
                "add",
                &vxlan,
                "type",
                "vxlan",
                "id",
                &vlan.vlan_id.to_string(),
                "local",
                &tunnel.local.to_string(),
                "dstport",
                &VXLAN_PORT.to_string(),
            ])?;
        }
        let _ = write_sysctl(&format!("net/ipv6/conf/{vxlan}/disable_ipv6"), "1");
        ip(&["link", "set", &vxlan, "master", &vlan.bridge()])?;
        ip(&["link", "set", &vxlan, "up"])?;
        // The peers broadcasts go to: an all-zeros entry per node.
        let out = run(
            Command::new("bridge").args(["-j", "fdb", "show", "dev", &vxlan]),
            None,
        )?;
        let entries: Vec<serde_json::Value> = serde_json::from_str(&out)
            .map_err(|e| NetworkError(format!("reading `bridge -j fdb show`: {e}")))?;
        let have: BTreeSet<String> = entries
            .iter()
            .filter(|e| e["mac"] == "00:00:00:00:00:00")
            .filter_map(|e| e["dst"].as_str().map(str::to_string))
            .collect();
        let want: BTreeSet<String> = tunnel.peers.iter().map(|p| p.to_string()).collect();
        for peer in want.difference(&have) {
            bridge_fdb("append", &vxlan, peer)?;
        }
        for gone in have.difference(&want) {
            bridge_fdb("del", &vxlan, gone)?;
        }
        Ok(true)
    }

    /// What the rules need of the host: its own networks (which guests never reach) and the
    /// interface holding the tunnel address.
    fn firewall_config(&self, plan: &NetworkPlan) -> Result<FirewallConfig, NetworkError> {
        let addresses = host_addresses()?;
        let mut deny: Vec<Ipv4Net> = addresses.iter().map(|(_, net)| net.trunc()).collect();
        deny.extend(self.config.deny.iter().copied());
        let underlay = plan.tunnel.as_ref().and_then(|tunnel| {
            let found = addresses
                .iter()
                .find(|(_, net)| net.addr() == tunnel.local)
                .map(|(link, _)| link.clone());
            if found.is_none() {
                tracing::warn!(
                    tunnel_address = %tunnel.local,
                    "no interface holds the tunnel address: VXLAN is taken on none"
                );
            }
            found
        });
        Ok(FirewallConfig {
            metadata_port: self.config.metadata_port,
            egress: self.config.egress,
            pool: self.config.pool,
            deny,
            underlay,
        })
    }

    /// Makes the whole host match `plan`: every rule written, every link checked, every
    /// dnsmasq reloaded, and what the plan does not name removed.
    fn full(&self, plan: &NetworkPlan) -> Result<Applied, NetworkError> {
        let links = own_links()?;
        let firewall = self.firewall_config(plan)?;
        let rules = nft::model(plan, &firewall);
        // Rules first: a new tap is guarded before it carries a packet, and what goes away
        // stops being reachable at once.
        nft_script(&if plan.is_empty() {
            rules.removal()
        } else {
            rules.script()
        })?;
        let mut wanted = BTreeSet::new();
        for vlan in &plan.vlans {
            let bridge = vlan.bridge();
            self.ensure_bridge(vlan, links.contains(&bridge))?;
            for nic in &vlan.nics {
                self.ensure_tap(nic, &bridge, links.contains(&nic.tap()))?;
                wanted.insert(nic.tap());
            }
            let mut mtu = None;
            if let Some(tunnel) = plan.tunnel.as_ref().filter(|t| !t.peers.is_empty()) {
                let vxlan = vxlan_name(vlan.vlan_id);
                if self.ensure_vxlan(vlan, tunnel, links.contains(&vxlan))? {
                    wanted.insert(vxlan);
                    // The guests' frames must fit in the tunnel's packets.
                    mtu = Some(TUNNELED_MTU);
                }
            }
            dnsmasq::ensure(&self.config.state_dir, vlan, self.config.egress, mtu)?;
            wanted.insert(bridge);
        }
        // Taps and tunnels before bridges: a bridge goes once nothing is attached to it.
        let mut stale: Vec<&String> = links.difference(&wanted).collect();
        stale.sort_by_key(|name| name.starts_with("extbr"));
        for link in stale {
            if link.starts_with("extbr") {
                dnsmasq::remove(&self.config.state_dir, link);
            }
            ip(&["link", "del", link])?;
        }
        for bridge in dnsmasq::known_bridges(&self.config.state_dir) {
            if !wanted.contains(&bridge) {
                dnsmasq::remove(&self.config.state_dir, &bridge);
            }
        }
        Ok(Applied {
            plan: plan.clone(),
            firewall,
            rules,
            listing: None,
        })
    }

    /// Makes the host go from `prev` to `plan` touching only what differs: the rules' changes
    /// in one transaction, the links of NICs and VLANs that came or went, the dnsmasq of the
    /// VLANs whose hosts changed.
    fn change(&self, prev: &Applied, plan: &NetworkPlan) -> Result<Applied, NetworkError> {
        let rules = nft::model(plan, &prev.firewall);
        if let Some(script) = ruleset::changes(&prev.rules, &rules) {
            nft_script(&script)?;
        }
        let before: BTreeMap<i64, &VlanNet> =
            prev.plan.vlans.iter().map(|v| (v.vlan_id, v)).collect();
        let after: BTreeMap<i64, &VlanNet> = plan.vlans.iter().map(|v| (v.vlan_id, v)).collect();
        let tunnel = plan.tunnel.as_ref().filter(|t| !t.peers.is_empty());
        for vlan in &plan.vlans {
            let old = before.get(&vlan.vlan_id);
            let bridge = vlan.bridge();
            if old.is_none_or(|o| o.subnet != vlan.subnet) {
                self.ensure_bridge(vlan, link_exists(&bridge))?;
            }
            for nic in &vlan.nics {
                if !old.is_some_and(|o| o.nics.iter().any(|n| n.server_id == nic.server_id)) {
                    self.ensure_tap(nic, &bridge, link_exists(&nic.tap()))?;
                }
            }
            let mut mtu = None;
            if let Some(tunnel) = tunnel {
                let tunneled = if old.is_none() {
                    self.ensure_vxlan(vlan, tunnel, link_exists(&vxlan_name(vlan.vlan_id)))?
                } else {
                    vlan.vlan_id <= MAX_VNI
                };
                if tunneled {
                    mtu = Some(TUNNELED_MTU);
                }
            }
            if old.is_none_or(|o| {
                dnsmasq::dhcp_hosts(o) != dnsmasq::dhcp_hosts(vlan)
                    || dnsmasq::names(o) != dnsmasq::names(vlan)
                    || o.subnet != vlan.subnet
            }) {
                dnsmasq::ensure(&self.config.state_dir, vlan, self.config.egress, mtu)?;
            }
        }
        let taps: BTreeSet<String> = plan
            .vlans
            .iter()
            .flat_map(|v| v.nics.iter().map(Nic::tap))
            .collect();
        for nic in prev.plan.vlans.iter().flat_map(|v| &v.nics) {
            if !taps.contains(&nic.tap()) && link_exists(&nic.tap()) {
                ip(&["link", "del", &nic.tap()])?;
            }
        }
        for vlan in &prev.plan.vlans {
            if after.contains_key(&vlan.vlan_id) {
                continue;
            }
            let (bridge, vxlan) = (vlan.bridge(), vxlan_name(vlan.vlan_id));
            dnsmasq::remove(&self.config.state_dir, &bridge);
            for link in [vxlan, bridge] {
                if link_exists(&link) {
                    ip(&["link", "del", &link])?;
                }
            }
        }
        Ok(Applied {
            plan: plan.clone(),
            firewall: prev.firewall.clone(),
            rules,
            listing: prev.listing.clone(),
        })
    }

    /// `prev`'s plan, or the whole host, made to match `plan`.
    fn apply_locked(
        &self,
        prev: Option<Applied>,
        plan: &NetworkPlan,
    ) -> Result<Applied, NetworkError> {
        match prev {
            // A change of the tunnel (nodes came or went) or to or from nothing at all
            // touches everything: written whole.
            Some(prev)
                if prev.plan.tunnel == plan.tunnel && !prev.plan.is_empty() && !plan.is_empty() =>
            {
                self.change(&prev, plan).or_else(|err| {
                    tracing::warn!(
                        error = %err,
                        "a change of this node's networks failed: everything is written again"
                    );
                    self.full(plan)
                })
            }
            _ => self.full(plan),
        }
    }

    /// What differs between the host and `applied`: the `extility` tables as the kernel
    /// lists them, the product's links, and each VLAN's dnsmasq (running, with its hosts).
    fn drift(&self, applied: &mut Applied) -> Result<Vec<String>, NetworkError> {
        let mut drift = Vec::new();
        let plan = &applied.plan;
        let listed = ruleset::normalize(&nft_list()?, nft::TABLE).map_err(NetworkError)?;
        let expected = if plan.is_empty() {
            Some(String::new())
        } else {
            match &applied.listing {
                Some((rules, listing)) if *rules == applied.rules => Some(listing.clone()),
                _ => match scratch_listing(&applied.rules.script()) {
                    Ok(listing) => {
                        applied.listing = Some((applied.rules.clone(), listing.clone()));
                        Some(listing)
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "listing the rules in a scratch namespace");
                        None
                    }
                },
            }
        };
        match expected {
            Some(expected) if expected == listed => {}
            Some(_) => drift.push("the nftables tables".to_string()),
            None => drift.push("the nftables tables (not comparable here)".to_string()),
        }
        let mut wanted = BTreeSet::new();
        let tunneled = plan.tunnel.as_ref().is_some_and(|t| !t.peers.is_empty());
        for vlan in &plan.vlans {
            wanted.insert(vlan.bridge());
            wanted.extend(vlan.nics.iter().map(Nic::tap));
            if tunneled && vlan.vlan_id <= MAX_VNI {
                wanted.insert(vxlan_name(vlan.vlan_id));
            }
            let files = dnsmasq::Files::of(&self.config.state_dir, &vlan.bridge());
            let same = |path: &std::path::Path, text: String| {
                std::fs::read_to_string(path).is_ok_and(|found| found == text)
            };
            if dnsmasq::running(&files).is_none()
                || !same(&files.hosts, dnsmasq::dhcp_hosts(vlan))
                || !same(&files.names, dnsmasq::names(vlan))
            {
                drift.push(format!("the dnsmasq of {}", vlan.bridge()));
            }
        }
        let links = own_links()?;
        for link in links.symmetric_difference(&wanted) {
            drift.push(format!("the link {link}"));
        }
        for bridge in dnsmasq::known_bridges(&self.config.state_dir) {
            if !wanted.contains(&bridge) {
                drift.push(format!("the dnsmasq files of {bridge}"));
            }
        }
        Ok(drift)
    }
}

impl Network for LinuxBridges {
    fn mode(&self) -> Mode {
        Mode::Bridged
    }

    fn apply(&self, plan: &NetworkPlan) -> Result<(), NetworkError> {
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        // Taken: a failure leaves `None`, and the next apply writes everything.
        let prev = applied.take();
        *applied = Some(self.apply_locked(prev, plan)?);
        Ok(())
    }

    fn resync(&self, plan: &NetworkPlan) -> Result<Vec<String>, NetworkError> {
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let prev = applied.take();
        let host = self.firewall_config(plan)?;
        // The host's own addresses changed, or nothing was applied yet: written whole.
        let mut current = match prev {
            Some(prev) if prev.firewall == host => self.apply_locked(Some(prev), plan)?,
            _ => self.full(plan)?,
        };
        let drift = self.drift(&mut current)?;
        if !drift.is_empty() {
            tracing::warn!(
                ?drift,
                "this node's networks drifted: everything is written again"
            );
            current = self.full(plan)?;
            // What the kernel lists now is what these rules list as.
            if let Ok(listing) = ruleset::normalize(&nft_list()?, nft::TABLE) {
                current.listing = Some((current.rules.clone(), listing));
            }
        }
        *applied = Some(current);
        Ok(drift)
    }
}

/// The links of this product on the host.
fn own_links() -> Result<BTreeSet<String>, NetworkError> {
    let out = ip(&["-j", "link", "show"])?;
    let links: Vec<serde_json::Value> = serde_json::from_str(&out)
        .map_err(|e| NetworkError(format!("reading `ip -j link show`: {e}")))?;
    Ok(links
        .iter()
        .filter_map(|l| l["ifname"].as_str())
        .filter(|name| is_own_link(name))
        .map(str::to_string)
        .collect())
}

/// The IPv4 addresses of the host's own interfaces (its LANs, the platform's networks), with
/// their interface: no guest reaches their networks, and the one holding the tunnel address
/// is the only one VXLAN is taken on.
fn host_addresses() -> Result<Vec<(String, Ipv4Net)>, NetworkError> {
    let out = ip(&["-j", "-4", "addr", "show"])?;
    let links: Vec<serde_json::Value> = serde_json::from_str(&out)
        .map_err(|e| NetworkError(format!("reading `ip -j addr show`: {e}")))?;
    let mut found = Vec::new();
    for link in &links {
        let Some(name) = link["ifname"].as_str() else {
            continue;
        };
        if is_own_link(name) {
            continue;
        }
        for addr in link["addr_info"].as_array().into_iter().flatten() {
            let (Some(local), Some(prefix)) = (addr["local"].as_str(), addr["prefixlen"].as_u64())
            else {
                continue;
            };
            if let Ok(net) = format!("{local}/{prefix}").parse::<Ipv4Net>() {
                found.push((name.to_string(), net));
            }
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

fn ip(args: &[&str]) -> Result<String, NetworkError> {
    run(Command::new("ip").args(args), None)
}

fn bridge_fdb(verb: &str, vxlan: &str, peer: &str) -> Result<(), NetworkError> {
    run(
        Command::new("bridge").args(["fdb", verb, "00:00:00:00:00:00", "dev", vxlan, "dst", peer]),
        None,
    )
    .map(drop)
}

/// Whether a link exists (of any kind).
fn link_exists(name: &str) -> bool {
    ip(&["link", "show", "dev", name]).is_ok()
}

/// `nft -j list ruleset`.
fn nft_list() -> Result<String, NetworkError> {
    run(Command::new("nft").args(["-j", "list", "ruleset"]), None)
}

/// How the kernel lists `script` (normalized), loaded in a network namespace of its own that
/// goes with the command: what the tables list as once written whole, whatever changes made
/// them since.
fn scratch_listing(script: &str) -> Result<String, NetworkError> {
    let listing = run(
        Command::new("unshare").args([
            "--net",
            "--",
            "sh",
            "-c",
            "nft -f - && nft -j list ruleset",
        ]),
        Some(script),
    )?;
    ruleset::normalize(&listing, nft::TABLE).map_err(NetworkError)
}

fn nft_script(script: &str) -> Result<(), NetworkError> {
    run(Command::new("nft").args(["-f", "-"]), Some(script)).map(|_| ())
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<String, NetworkError> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetworkError(format!("{shown}: {e}")))?;
    if let Some(text) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        pipe.write_all(text.as_bytes())
            .map_err(|e| NetworkError(format!("{shown}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetworkError(format!("{shown}: {e}")))?;
    if !out.status.success() {
        return Err(NetworkError(format!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The sysctl that lets the host route between its bridges.
const IP_FORWARD: &str = "net/ipv4/ip_forward";

fn read_sysctl(key: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/{key}"))
        .ok()
        .map(|value| value.trim().to_string())
}

/// IPv4 forwarding is on, or this process may turn it on (opening the file for writing
/// changes nothing; a read-only /proc/sys refuses it).
fn forwarding_possible() -> bool {
    read_sysctl(IP_FORWARD).as_deref() == Some("1")
        || std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/sys/{IP_FORWARD}"))
            .is_ok()
}

fn write_sysctl(key: &str, value: &str) -> Result<(), NetworkError> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).map_err(|e| NetworkError(format!("writing {path}: {e}")))
}

/// CAP_NET_ADMIN (bit 12) among this process's effective capabilities.
fn has_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
