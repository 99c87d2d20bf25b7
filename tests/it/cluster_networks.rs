//! A cluster as hosts run one: two nodes, each `extility serve --network bridge` in a network
//! namespace of its own (a host of its own, with its own data directory), joined by a veth
//! link (the network between hosts, over which VXLAN runs), sharing PostgreSQL and a Ceph RBD
//! pool (reached at 127.0.0.1 through [`LoopbackForwarder`]s, as a host reaches its database).
//! Three Linux guests boot from disks fetched by either node: two of one customer's VLAN on
//! different nodes, which reach each other over the tunnel, and one of another customer's
//! VLAN, which reaches neither. Their consoles are read through one node. On the same hosts,
//! a server of a lost node starts again on the other, its old VM fenced off its disk.

use std::time::Instant;

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::catalogue::DISK_1GB;
use crate::support::guest::{GuestDisk, guest_disk_with};
use crate::support::image_server::ImageServer;
use crate::support::netns::LoopbackForwarder;
use crate::support::{Api, Backend, Cluster, TestServer, ceph, id};
use crate::tenant_networks::{Guest, INIT, boot, console, remove_netns, server, sh, vlan};

/// Two namespaces standing for two hosts: each joined to the test's namespace by a veth pair
/// (`outside` here, `inside` there), and to each other by one more (`underlay`), or, routed,
/// through a third namespace (`router`) in which each host's underlay is a subnet of its own.
struct Hosts {
    names: [String; 2],
    outside: [String; 2],
    inside: [String; 2],
    underlay: [String; 2],
    /// The router between the hosts' underlays, when they are routed.
    router: Option<String>,
}

/// An address of the router's own (the world beyond it), when the hosts are routed.
const ROUTER_WORLD: &str = "198.51.100.1";

impl Hosts {
    fn create() -> Hosts {
        Self::create_with(false)
    }

    /// The hosts, their tunnel addresses in different subnets behind a router.
    fn create_routed() -> Hosts {
        Self::create_with(true)
    }

    fn create_with(routed: bool) -> Hosts {
        let tag = format!("{:x}", rand::random::<u32>() & 0xfffff);
        let k = rand::random::<u8>();
        let hosts = Hosts {
            names: [format!("ext-n{tag}a"), format!("ext-n{tag}b")],
            outside: [format!("10.252.{k}.1"), format!("10.252.{k}.5")],
            inside: [format!("10.252.{k}.2"), format!("10.252.{k}.6")],
            underlay: if routed {
                [format!("10.253.{k}.1"), format!("10.253.{k}.5")]
            } else {
                [format!("10.253.{k}.1"), format!("10.253.{k}.2")]
            },
            router: routed.then(|| format!("ext-n{tag}r")),
        };
        for i in 0..2 {
            let (name, host_if, ns_if) = (
                &hosts.names[i],
                format!("xn{tag}{i}h"),
                format!("xn{tag}{i}n"),
            );
            sh(&["ip", "netns", "add", name]);
            sh(&[
                "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ]);
            sh(&["ip", "link", "set", &ns_if, "netns", name]);
            sh(&[
                "ip",
                "addr",
                "add",
                &format!("{}/30", hosts.outside[i]),
                "dev",
                &host_if,
            ]);
            sh(&["ip", "link", "set", &host_if, "up"]);
            hosts.exec(
                i,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{}/30", hosts.inside[i]),
                    "dev",
                    &ns_if,
                ],
            );
            hosts.exec(i, &["ip", "link", "set", &ns_if, "up"]);
            hosts.exec(i, &["ip", "link", "set", "lo", "up"]);
        }
        // Both reach the test's image server at the first host's outside address.
        hosts.exec(
            1,
            &[
                "ip",
                "route",
                "add",
                &format!("{}/32", hosts.outside[0]),
                "via",
                &hosts.outside[1],
            ],
        );
        if let Some(router) = &hosts.router {
            hosts.route_through(router, &tag, k);
            return hosts;
        }
        // The network between the hosts.
        let (a_if, b_if) = (format!("xu{tag}a"), format!("xu{tag}b"));
        sh(&[
            "ip",
            "link",
            "add",
            &a_if,
            "netns",
            &hosts.names[0],
            "type",
            "veth",
            "peer",
            "name",
            &b_if,
            "netns",
            &hosts.names[1],
        ]);
        for (i, link) in [(0, &a_if), (1, &b_if)] {
            hosts.exec(
                i,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{}/24", hosts.underlay[i]),
                    "dev",
                    link,
                ],
            );
            hosts.exec(i, &["ip", "link", "set", link, "up"]);
        }
        // Each node reaches the other's API (where it reads the consoles of its VMs).
        for (i, j) in [(0, 1), (1, 0)] {
            let to = format!("{}/32", hosts.inside[j]);
            hosts.exec(i, &["ip", "route", "add", &to, "via", &hosts.underlay[j]]);
        }
        hosts
    }

    /// Each host's underlay is a /30 with the router (`10.253.k.0/30` and `10.253.k.4/30`):
    /// the other host's tunnel and API addresses, and [`ROUTER_WORLD`], are routed through it.
    fn route_through(&self, router: &str, tag: &str, k: u8) {
        sh(&["ip", "netns", "add", router]);
        let in_router = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", router];
            all.extend_from_slice(args);
            sh(&all);
        };
        in_router(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
        in_router(&["ip", "link", "set", "lo", "up"]);
        in_router(&[
            "ip",
            "addr",
            "add",
            &format!("{ROUTER_WORLD}/32"),
            "dev",
            "lo",
        ]);
        for i in 0..2 {
            let (host_if, router_if) = (format!("xu{tag}{i}"), format!("xr{tag}{i}"));
            let router_side = format!("10.253.{k}.{}", 4 * i + 2);
            sh(&[
                "ip",
                "link",
                "add",
                &host_if,
                "netns",
                &self.names[i],
                "type",
                "veth",
                "peer",
                "name",
                &router_if,
                "netns",
                router,
            ]);
            self.exec(
                i,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{}/30", self.underlay[i]),
                    "dev",
                    &host_if,
                ],
            );
            self.exec(i, &["ip", "link", "set", &host_if, "up"]);
            in_router(&[
                "ip",
                "addr",
                "add",
                &format!("{router_side}/30"),
                "dev",
                &router_if,
            ]);
            in_router(&["ip", "link", "set", &router_if, "up"]);
            // Each host's API address is beyond its underlay.
            in_router(&[
                "ip",
                "route",
                "add",
                &format!("{}/32", self.inside[i]),
                "via",
                &self.underlay[i],
            ]);
            let j = 1 - i;
            for to in [
                format!("10.253.{k}.{}/30", 4 * j),
                format!("{}/32", self.inside[j]),
                format!("{ROUTER_WORLD}/32"),
            ] {
                self.exec(i, &["ip", "route", "add", &to, "via", &router_side]);
            }
        }
    }

    fn exec(&self, host: usize, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.names[host]];
        all.extend_from_slice(args);
        sh(&all)
    }
}

/// The cluster of the two hosts: PostgreSQL and a new pool of the test Ceph cluster, reached
/// from both at 127.0.0.1 (while the forwarders live); QEMU nodes with a 6 s lease that fetch
/// from the test's image server, with `extra` arguments.
async fn cluster_on(hosts: &Hosts, extra: &[&str]) -> (Cluster, [LoopbackForwarder; 2]) {
    let (rbd, ports) = ceph::new_pool_for_nodes().await;
    let forwarders = hosts
        .names
        .each_ref()
        .map(|name| LoopbackForwarder::start(name, &ports));
    let allow = format!("{}/32", hosts.outside[0]);
    let mut args: Vec<String> = [
        "--hypervisor",
        "qemu",
        "--qemu-accel",
        "tcg",
        "--job-lease-seconds",
        "6",
        "--allow-fetch-from",
        &allow,
    ]
    .iter()
    .chain(extra)
    .map(|a| a.to_string())
    .collect();
    args.extend(rbd);
    (
        Cluster::with_args(Backend::Postgres, args).await,
        forwarders,
    )
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for name in self.names.iter().chain(&self.router) {
            remove_netns(name);
        }
    }
}

/// Node `name` on host `i`, with that host's tunnel address.
fn tunneled_node(cluster: &Cluster, hosts: &Hosts, i: usize, name: &str) -> TestServer {
    cluster.node_in_netns(
        name,
        &hosts.names[i],
        &format!("{}:0", hosts.inside[i]),
        &["--tunnel-address".to_string(), hosts.underlay[i].clone()],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vlan_spans_nodes_and_nothing_else_crosses() {
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let hosts = Hosts::create();
    let (cluster, _forwarders) =
        cluster_on(&hosts, &["--network", "bridge", "--guest-egress", "off"]).await;
    // The nodes differ in their tunnel address.
    let node = |i: usize, name: &str| tunneled_node(&cluster, &hosts, i, name);
    let (a, b) = (node(0, "node-a"), node(1, "node-b"));
    let alice = a.add_customer("ann@example.com", "ann-password", &[]);
    let bob = a.add_customer("bo@example.com", "bo-password", &[]);
    let (alice_api, bob_api) = (
        a.api(&alice.email, &alice.password),
        a.api(&bob.email, &bob.password),
    );
    let lan = vlan(&alice_api, alice.vdc_id, "lan").await;
    let other = vlan(&bob_api, bob.vdc_id, "other").await;
    let a1 = server(alice_api.clone(), alice.vdc_id, &lan, "a1").await;
    let a2 = server(alice_api.clone(), alice.vdc_id, &lan, "a2").await;
    let b1 = server(bob_api.clone(), bob.vdc_id, &other, "b1").await;

    let tries = 20;
    let probes: Vec<(&Guest, &Guest)> = vec![(&a1, &a2), (&a2, &a1), (&b1, &a1), (&b1, &a2)];
    let append: Vec<String> = probes
        .iter()
        .map(|(from, to)| format!("probe={},{},7000,{tries}", from.address, to.address))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let disk = guest_disk_with(dir.path(), INIT, &format!("quiet {}", append.join(" ")));
    let files = ImageServer::start_on(&format!("{}:0", hosts.outside[0])).await;
    let url = files.put_data("guest.img", std::fs::read(&disk).unwrap());

    // One after the other, so that placement alternates: a1 on one node, a2 on the other.
    let started = Instant::now();
    let guests = [(&a1, alice.vdc_id), (&a2, alice.vdc_id), (&b1, bob.vdc_id)];
    for (guest, vdc) in guests {
        boot(guest, vdc, &url).await;
    }
    let node_of = |g: &Guest| {
        let api = g.api.clone();
        let id = g.id;
        async move {
            api.call("GetServer", json!({"server_id": id})).await["node"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let (n1, n2) = (node_of(&a1).await, node_of(&a2).await);
    assert_ne!(n1, n2, "a1 and a2 run on different nodes");
    let consoles = futures::future::join_all(guests.iter().map(|(g, _)| console(g))).await;
    eprintln!(
        "cluster_networks: three guests on two nodes booted and probed in {:?}",
        started.elapsed()
    );
    for ((guest, _), lines) in guests.iter().zip(&consoles) {
        eprintln!(
            "cluster_networks: guest {} said:\n{}",
            guest.id,
            lines.join("\n")
        );
        assert!(
            lines.contains(&format!("ADDR {}", guest.address)),
            "each node's DHCP gives its own guests their addresses: {lines:?}"
        );
    }
    let said = |g: &Guest| {
        let at = guests.iter().position(|(x, _)| x.id == g.id).unwrap();
        consoles[at].clone()
    };
    for (from, to) in &probes {
        let expected = if from.id == b1.id { "CLOSED" } else { "OPEN" };
        assert!(
            said(from).contains(&format!("{expected} {} 7000", to.address)),
            "guest {} to {} must be {expected}: {:?}",
            from.id,
            to.address,
            said(from)
        );
    }

    // A firewall template is applied on the node running its server, whichever node takes
    // the call: the other one here, which aims a job at it.
    let runs = usize::from(n2 != "node-a");
    let caller = if runs == 0 { &b } else { &a };
    crate::firewall::applied_on_the_right_node(
        &caller.api(&alice.email, &alice.password),
        &a2,
        alice.vdc_id,
        &hosts.names[runs],
        &hosts.names[1 - runs],
    )
    .await;

    // What made it so: a VXLAN interface per VLAN on its bridge, with the other node as its
    // peer, and the tunnel's port taken from that node only.
    let vni = lan["vlan_id"].as_i64().unwrap();
    for (i, peer) in [(0, &hosts.underlay[1]), (1, &hosts.underlay[0])] {
        let link = hosts.exec(i, &["ip", "-d", "link", "show", &format!("extvx{vni}")]);
        assert!(
            link.contains(&format!("vxlan id {vni} local {}", hosts.underlay[i])),
            "{link}"
        );
        assert!(link.contains(&format!("master extbr{vni}")), "{link}");
        let fdb = hosts.exec(i, &["bridge", "fdb", "show", "dev", &format!("extvx{vni}")]);
        assert!(
            fdb.contains(&format!("00:00:00:00:00:00 dst {peer}")),
            "{fdb}"
        );
        let rules = hosts.exec(i, &["nft", "list", "chain", "inet", "extility", "vxlan_in"]);
        assert!(
            rules.contains(&format!("ip saddr != {peer} drop")),
            "{rules}"
        );
        assert!(
            rules.contains("iifname != \"xu"),
            "only on the underlay: {rules}"
        );
    }
    // Guests of a spanned VLAN are told to leave room for VXLAN's 50 bytes.
    for (server, name) in [(&a, "node-a"), (&b, "node-b")] {
        let conf =
            crate::support::dnsmasq_dir(&server.data_dir, name).join(format!("extbr{vni}.conf"));
        let conf = std::fs::read_to_string(&conf).unwrap();
        assert!(conf.contains("dhcp-option=option:mtu,1450"), "{conf}");
    }
    // `extility nodes` shows where each node's tunnels end.
    let out = a.cli(&["nodes", "--json"]);
    let listed: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (name, address) in [
        ("node-a", &hosts.underlay[0]),
        ("node-b", &hosts.underlay[1]),
    ] {
        assert!(
            listed
                .iter()
                .any(|n| n["node"] == name && n["tunnel_address"] == address.as_str()),
            "{listed:?}"
        );
    }
    drop((a, b));
}

/// The frame a guest tries to put on another VLAN: a VXLAN header with `vni` and an ARP reply
/// claiming that VLAN's gateway address for [`INJECTED_MAC`].
fn vxlan_injection(vni: i64, gateway: std::net::Ipv4Addr) -> Vec<u8> {
    let vni = vni as u32;
    let mut bytes = vec![
        0x08,
        0,
        0,
        0,
        (vni >> 16) as u8,
        (vni >> 8) as u8,
        vni as u8,
        0,
    ];
    let mac = INJECTED_MAC;
    bytes.extend_from_slice(&[0xff; 6]);
    bytes.extend_from_slice(&mac);
    bytes.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
    bytes.extend_from_slice(&mac);
    bytes.extend_from_slice(&gateway.octets());
    bytes.extend_from_slice(&[0; 6]);
    bytes.extend_from_slice(&gateway.octets());
    bytes.resize(8 + 60, 0);
    bytes
}

/// The source MAC of the injected frame.
const INJECTED_MAC: [u8; 6] = [0x02, 0xde, 0xad, 0xbe, 0xef, 0x01];

/// A counter in `ns`'s nftables table `observe`.
fn counted(exec: impl Fn(&[&str]) -> String, family: &str, name: &str) -> u64 {
    exec(&["nft", "list", "counter", family, "observe", name])
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap()
}

fn nft_in(exec: impl Fn(&[&str]) -> String, script: &str) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), script).unwrap();
    exec(&["nft", "-f", file.path().to_str().unwrap()]);
}

/// Issue 20: with the nodes' tunnel addresses in different subnets behind a router, a guest
/// with egress on sends VXLAN packets with another customer's VNI to both nodes' tunnel
/// addresses (masqueraded, they would arrive as its node). Nothing reaches the router or any
/// VLAN's bridge, and the guest reaches neither node's API nor PostgreSQL nor Ceph.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_inject_into_another_nodes_vlans() {
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let hosts = Hosts::create_routed();
    let (cluster, _forwarders) =
        cluster_on(&hosts, &["--network", "bridge", "--guest-egress", "on"]).await;
    let node = |i: usize, name: &str| tunneled_node(&cluster, &hosts, i, name);
    let nodes = [node(0, "node-a"), node(1, "node-b")];
    let mallory = nodes[0].add_customer("mal@example.com", "mal-password", &[]);
    let bob = nodes[0].add_customer("bo@example.com", "bo-password", &[]);
    let (mal_api, bob_api) = (
        nodes[0].api(&mallory.email, &mallory.password),
        nodes[0].api(&bob.email, &bob.password),
    );
    let lan = vlan(&mal_api, mallory.vdc_id, "lan").await;
    let other = vlan(&bob_api, bob.vdc_id, "other").await;
    let m1 = server(mal_api.clone(), mallory.vdc_id, &lan, "m1").await;
    let b1 = server(bob_api.clone(), bob.vdc_id, &other, "b1").await;
    let vni = other["vlan_id"].as_i64().unwrap();
    let gateway = other["gateway"].as_str().unwrap().parse().unwrap();

    // What the guest must not reach: each node's API (on its API and tunnel addresses),
    // PostgreSQL and Ceph where the nodes reach them.
    let ceph_ports = tokio::task::spawn_blocking(|| ceph::cluster().client_ports())
        .await
        .unwrap();
    let mut platform: Vec<(String, u16)> = vec![("127.0.0.1".into(), 5432)];
    platform.extend(ceph_ports.iter().map(|p| ("127.0.0.1".to_string(), *p)));
    for (i, n) in nodes.iter().enumerate() {
        let port: u16 = n.url.rsplit(':').next().unwrap().parse().unwrap();
        platform.push((hosts.inside[i].clone(), port));
        platform.push((hosts.underlay[i].clone(), port));
        platform.push((hosts.inside[i].clone(), 5432));
    }
    let mut append = vec![format!(
        "inject={},{ROUTER_WORLD},{},{}",
        m1.address, hosts.underlay[0], hosts.underlay[1]
    )];
    append.extend(
        platform
            .iter()
            .map(|(host, port)| format!("probe={},{host},{port},3", m1.address)),
    );
    let dir = tempfile::tempdir().unwrap();
    let disk = GuestDisk::new(INIT)
        .append(&format!("quiet {}", append.join(" ")))
        .host_program("/usr/bin/socat")
        .file("vxlan.bin", 0o644, vxlan_injection(vni, gateway))
        .build(dir.path(), "guest");
    let files = ImageServer::start_on(&format!("{}:0", hosts.outside[0])).await;
    let url = files.put_data("guest.img", std::fs::read(&disk).unwrap());

    // The router counts what crosses it: the injected frames by their inner source MAC, and
    // the control packet; each node's bridges count the injected frames before any rule.
    let router = hosts.router.clone().unwrap();
    let in_router = |args: &[&str]| {
        let mut all = vec!["ip", "netns", "exec", router.as_str()];
        all.extend_from_slice(args);
        sh(&all)
    };
    let mac = hex::encode(INJECTED_MAC);
    nft_in(
        in_router,
        &format!(
            "table inet observe {{\n  counter injected {{}}\n  counter control {{}}\n  \
             chain seen {{\n    type filter hook prerouting priority -300; policy accept;\n    \
             udp dport 4789 @th,176,48 0x{mac} counter name \"injected\"\n    \
             udp dport 4790 counter name \"control\"\n  }}\n}}\n"
        ),
    );
    for i in 0..2 {
        nft_in(
            |args| hosts.exec(i, args),
            "table bridge observe {\n  counter injected {}\n  \
             chain seen {\n    type filter hook prerouting priority -300; policy accept;\n    \
             ether saddr 02:de:ad:be:ef:01 counter name \"injected\"\n  }\n}\n",
        );
    }

    // One after the other, so that placement alternates: b1 on one node, m1 on the other.
    boot(&b1, bob.vdc_id, &url).await;
    boot(&m1, mallory.vdc_id, &url).await;
    let where_ = |g: &Guest| {
        let (api, id) = (g.api.clone(), g.id);
        async move {
            api.call("GetServer", json!({"server_id": id})).await["node"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    assert_ne!(
        where_(&m1).await,
        where_(&b1).await,
        "{m1:?} {b1:?}",
        m1 = m1.id,
        b1 = b1.id
    );
    let said = console(&m1).await;
    eprintln!(
        "cluster_networks: the injecting guest said:\n{}",
        said.join("\n")
    );
    for to in &hosts.underlay {
        assert!(said.contains(&format!("SENT {to}")), "{said:?}");
    }
    assert!(said.contains(&"SENT CONTROL".to_string()), "{said:?}");
    // Sent after the injections, on the same path: once the router has it, it would have
    // had them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while counted(in_router, "inet", "control") == 0 {
        assert!(
            Instant::now() < deadline,
            "the control packet never crossed the router"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        counted(in_router, "inet", "injected"),
        0,
        "a guest's VXLAN left its node"
    );
    for i in 0..2 {
        assert_eq!(
            counted(|args| hosts.exec(i, args), "bridge", "injected"),
            0,
            "a frame with the guest's VNI reached a bridge of {}",
            hosts.names[i]
        );
    }
    for (host, port) in &platform {
        assert!(
            said.contains(&format!("CLOSED {host} {port}")),
            "{host}:{port} must be out of the guest's reach: {said:?}"
        );
    }
    drop(nodes);
}

/// What GetServer says of a server.
async fn get_server(api: &Api, server_id: i64) -> Value {
    api.call("GetServer", json!({"server_id": server_id})).await
}

/// Waits until the console of the server (on the node `api` talks to) shows `text`.
async fn console_shows(api: &Api, server_id: i64, text: &str) {
    let timeout = crate::support::boot_media::BOOT_TIMEOUT;
    crate::support::guest::console_until(api, server_id, text, timeout).await;
}

fn blocklisted() -> String {
    let out = std::process::Command::new("ceph")
        .arg("--conf")
        .arg(&ceph::cluster().conf)
        .args(["osd", "blocklist", "ls"])
        .output()
        .unwrap();
    // `ceph osd blocklist ls` prints its count on stderr, the entries on stdout.
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// On the same two hosts, sharing PostgreSQL and an RBD pool: a disk fetched by one node boots
/// a server on the node placement picks, whose console any node reads; when that node is lost
/// (kill -9 of its `extility serve`: its VM goes on running), StartServer starts the server on
/// the other node, after cutting the lost node's VM off the disks. When the lost node comes
/// back, it powers its old VM off and leaves the server to the other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_of_a_lost_node_starts_again_on_another_node() {
    use crate::support::boot_media::boot_sector;
    use crate::support::catalogue::{BLANK_IMAGE, SERVER_1CPU_512MB};
    use crate::support::fetch_disk::{fetch, fetch_args};
    use crate::support::image_server::ImageServer;
    use crate::support::running_vms;

    let _heavy = crate::support::CPU_HEAVY.read().await;
    let hosts = Hosts::create();
    let (cluster, _forwarders) = cluster_on(&hosts, &[]).await;
    let node = |i: usize, name: &str| {
        cluster.node_in_netns(
            name,
            &hosts.names[i],
            &format!("{}:0", hosts.inside[i]),
            &[],
        )
    };
    let mut nodes = [node(0, "node-a"), node(1, "node-b")];
    let customer = nodes[0].add_customer("lou@example.com", "lou-password", &[]);
    let apis = nodes
        .each_ref()
        .map(|n| n.api(&customer.email, &customer.password));
    let vdc = customer.vdc_id;

    let files = ImageServer::start_on(&format!("{}:0", hosts.outside[0])).await;
    let dir = tempfile::tempdir().unwrap();
    let mut sector = boot_sector(dir.path(), "BOOTS-FROM-RBD", false);
    sector.resize(4096, 0);
    let url = files.put_data("boot.img", sector);
    let job = fetch(&apis[1], fetch_args(&url, vdc, "boot")).await;
    let disk = apis[1].job_ok(job).await["item_id"].as_i64().unwrap();
    let created = apis[0]
        .call(
            "CreateServer",
            json!({"vdc_id": vdc, "vlan_id": -1, "server_name": "moves",
                   "image_id": BLANK_IMAGE, "server_productoffer_id": SERVER_1CPU_512MB,
                   "disk_productoffer_ids": [DISK_1GB]}),
        )
        .await;
    let server_id = id(&created, "server_id");
    apis[0]
        .call(
            "AttachDisk",
            json!({"server_id": server_id, "disk_id": disk, "index": 0}),
        )
        .await;
    let job = apis[0]
        .call("StartServer", json!({"server_id": server_id}))
        .await;
    apis[0].job_ok(id(&job, "job_id")).await;
    let first = get_server(&apis[0], server_id).await["node"]
        .as_str()
        .unwrap()
        .to_string();
    let (lost, other) = if first == "node-a" { (0, 1) } else { (1, 0) };
    // Its console is read on its node, whichever node is asked.
    console_shows(&apis[other], server_id, "BOOTS-FROM-RBD").await;
    let uuid = created["server_uuid"].as_str().unwrap();
    let http = reqwest::Client::new();
    for proof in [None, Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")] {
        let expires = chrono::Utc::now().timestamp_millis() + 10_000;
        let mut request = http.get(format!(
            "{}/internal/v1/console/{uuid}?expires={expires}",
            nodes[lost].url
        ));
        if let Some(proof) = proof {
            request = request.header("x-extility-node-proof", proof);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(
            answer.status(),
            403,
            "only the nodes read consoles directly"
        );
    }
    let err = apis[other]
        .fail("StartServer", json!({"server_id": server_id}))
        .await;
    assert_eq!(err.code, "CONFLICT", "it runs, on a live node: {err:?}");

    // Its node is lost; its VM is not.
    nodes[lost].kill9();
    let old_vm = running_vms(&nodes[lost].vms_dir());
    assert_eq!(old_vm.len(), 1, "the VM outlives its node's extility");
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        match apis[other]
            .try_call("StartServer", json!({"server_id": server_id}))
            .await
        {
            Ok(job) => break job,
            Err(err) => {
                assert_eq!(err.code, "CONFLICT", "{err:?}");
                assert!(
                    Instant::now() < deadline,
                    "never started elsewhere: {err:?}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    apis[other].job_ok(id(&job, "job_id")).await;
    let moved = get_server(&apis[other], server_id).await;
    assert_eq!(moved["status"], 2, "{moved}");
    assert_eq!(
        moved["node"],
        ["node-a", "node-b"][other],
        "started on the other node: {moved}"
    );
    console_shows(&apis[other], server_id, "BOOTS-FROM-RBD").await;
    assert_eq!(running_vms(&nodes[other].vms_dir()).len(), 1);
    // Only the lost node's VM had the disk open when the start cut its clients off.
    assert!(
        nodes[other]
            .log_text()
            .contains("cut off clients that still had a starting server's volume open"),
        "the lost node's VM was not fenced"
    );
    assert!(blocklisted().contains("127.0.0.1:0/"), "{}", blocklisted());

    // The lost node comes back: its old VM is powered off, the server stays where it runs.
    nodes[lost].restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !running_vms(&nodes[lost].vms_dir()).is_empty() {
        assert!(Instant::now() < deadline, "the old VM still runs");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = get_server(&apis[other], server_id).await;
    assert_eq!(after["status"], 2, "{after}");
    assert_eq!(after["node"], moved["node"], "{after}");
    assert_eq!(running_vms(&nodes[other].vms_dir()).len(), 1);
    let job = apis[other]
        .call(
            "StopServer",
            json!({"server_id": server_id, "stop_method": 2}),
        )
        .await;
    apis[other].job_ok(id(&job, "job_id")).await;
}
