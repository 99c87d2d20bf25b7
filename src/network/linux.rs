//! `--network bridge`: Linux bridges, persistent taps, dnsmasq and nftables, driven by the
//! `ip`, `nft` and `dnsmasq` programs (as Proxmox and libvirt do).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use ipnet::Ipv4Net;

use super::nft::{self, FirewallConfig};
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
    /// One change at a time: each makes the whole host match its plan.
    applying: Mutex<()>,
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
            applying: Mutex::new(()),
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

    fn firewall(&self, plan: &NetworkPlan) -> Result<(), NetworkError> {
        if plan.is_empty() {
            return nft_script(&nft::removal());
        }
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
        let config = FirewallConfig {
            metadata_port: self.config.metadata_port,
            egress: self.config.egress,
            pool: self.config.pool,
            deny,
            underlay,
        };
        nft_script(&nft::ruleset(plan, &config))
    }
}

impl Network for LinuxBridges {
    fn mode(&self) -> Mode {
        Mode::Bridged
    }

    fn apply(&self, plan: &NetworkPlan) -> Result<(), NetworkError> {
        let _one_at_a_time = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        let links = own_links()?;
        // Rules first: a new tap is guarded before it carries a packet, and what goes away
        // stops being reachable at once.
        self.firewall(plan)?;
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
        Ok(())
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
