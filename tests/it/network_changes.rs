//! Incremental network changes (issue 23), with real nft in network namespaces of the test's
//! own: a change names only its elements and chains, and the kernel holding the rules made by
//! a chain of changes lists exactly what it lists after the whole script; on a running server,
//! a burst of 100 port forwards makes at most 5 applies, touches only the forwards and no
//! VLAN's DHCP server, and the periodic resync finds no drift after it (and finds one made by
//! hand, and repairs it).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use extility::network::firewall::{Action, Direction, Protocol, Rule, Template};
use extility::network::nft::{FirewallConfig, model};
use extility::network::ruleset::{changes, normalize};
use extility::network::{Forward, NetworkPlan, Nic, VlanNet, sample};
use serde_json::json;

use crate::support::catalogue::{BLANK_IMAGE, DISK_20GB, SERVER_1CPU_512MB};
use crate::support::{Backend, ServerOptions, TestApp};
use crate::tenant_networks::{Netns, nft_in, remove_netns, sh};

/// A bare network namespace, removed when dropped.
struct Scratch(String);

impl Scratch {
    fn new() -> Scratch {
        let name = format!("ext-nc-{:x}", rand::random::<u32>() & 0xfffff);
        sh(&["ip", "netns", "add", &name]);
        Scratch(name)
    }

    fn nft(&self, script: &str) {
        nft_in(&self.0, script);
    }

    fn listing(&self) -> String {
        listing(&self.0)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        remove_netns(&self.0);
    }
}

/// The `extility` tables of a namespace, normalized (`ruleset::normalize`).
fn listing(netns: &str) -> String {
    let json = sh(&["ip", "netns", "exec", netns, "nft", "-j", "list", "ruleset"]);
    normalize(&json, "extility").unwrap()
}

fn config() -> FirewallConfig {
    FirewallConfig {
        metadata_port: 8775,
        egress: true,
        pool: "10.64.0.0/10".parse().unwrap(),
        deny: vec!["192.168.1.0/24".parse().unwrap()],
        underlay: None,
    }
}

fn nic(server_id: i64, address: &str) -> Nic {
    Nic {
        server_id,
        mac: format!("52:54:00:00:00:{server_id:02x}"),
        address: address.parse().unwrap(),
        hostname: format!("s{server_id}"),
        firewall: None,
    }
}

fn vlan(vlan_id: i64, subnet: &str, nics: Vec<Nic>) -> VlanNet {
    VlanNet {
        vlan_id,
        subnet: subnet.parse().unwrap(),
        nics,
        remote_nics: Vec::new(),
    }
}

fn forward(host_port: u16, address: &str, guest_port: u16) -> Forward {
    Forward {
        host_port,
        address: address.parse().unwrap(),
        guest_port,
    }
}

/// Each change of a node's plan, made as a change in one namespace and written whole in
/// another: the kernels list the same tables; and what each change sends names only what it
/// changes.
#[test]
fn a_change_names_only_its_elements_and_ends_where_the_whole_script_does() {
    let incremental = Scratch::new();
    let whole = Scratch::new();
    let config = config();
    let template = Template {
        template_id: 4,
        default_inbound: Action::Deny,
        default_outbound: Action::Allow,
        rules: vec![Rule {
            direction: Direction::In,
            protocol: Protocol::Tcp,
            ports: Some((22, 22)),
            network: "10.64.0.0/24".parse().unwrap(),
            action: Action::Allow,
        }],
    };
    let mut plan = NetworkPlan {
        vlans: vec![vlan(
            7,
            "10.64.0.0/24",
            vec![nic(1, "10.64.0.2"), nic(2, "10.64.0.3")],
        )],
        forwards: vec![forward(20000, "10.64.0.2", 22)],
        tunnel: None,
        platform: vec!["10.9.0.3".parse().unwrap()],
    };
    incremental.nft(&model(&plan, &config).script());
    // (what changes, the plan after it, what the change must send: every line, or None to
    // check only that it is no whole script)
    type Step = (
        &'static str,
        Box<dyn Fn(&mut NetworkPlan)>,
        Option<&'static str>,
    );
    let steps: Vec<Step> = vec![
        (
            "a port forward added",
            Box::new(|p| p.forwards.push(forward(20001, "10.64.0.3", 80))),
            Some("add element inet extility forwards { 20001 : 10.64.0.3 . 80 }\n"),
        ),
        (
            "a port forward removed",
            Box::new(|p| p.forwards.retain(|f| f.host_port != 20000)),
            Some("delete element inet extility forwards { 20000 }\n"),
        ),
        (
            "a NIC added",
            Box::new(|p| p.vlans[0].nics.push(nic(3, "10.64.0.4"))),
            Some(
                "table bridge extility {\n  chain nic_3 {\n    ether saddr != 52:54:00:00:00:03 drop\n    \
                 ether type arp arp hlen 6 arp plen 4 arp saddr ether 52:54:00:00:00:03 arp saddr ip 10.64.0.4 accept\n    \
                 ether type ip ip saddr 10.64.0.4 udp sport 67 drop\n    \
                 ether type ip ip saddr 10.64.0.4 accept\n    \
                 ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept\n    \
                 drop\n  }\n}\n\
                 add element bridge extility ports { \"extap3\" : jump nic_3 }\n",
            ),
        ),
        (
            "a VLAN added",
            Box::new(|p| {
                p.vlans
                    .push(vlan(9, "10.64.1.0/24", vec![nic(5, "10.64.1.2")]))
            }),
            None,
        ),
        (
            "a template given to a NIC",
            {
                let template = template.clone();
                Box::new(move |p| p.vlans[0].nics[0].firewall = Some(template.clone()))
            },
            None,
        ),
        (
            "a NIC removed",
            Box::new(|p| p.vlans[0].nics.retain(|n| n.server_id != 2)),
            Some(
                "delete element bridge extility ports { \"extap2\" }\n\
                 delete chain bridge extility nic_2\n",
            ),
        ),
        (
            "a forward's NIC changed",
            Box::new(|p| p.forwards[0].address = "10.64.1.2".parse().unwrap()),
            Some(
                "delete element inet extility forwards { 20001 }\n\
                 add element inet extility forwards { 20001 : 10.64.1.2 . 80 }\n",
            ),
        ),
        (
            "a VLAN removed",
            Box::new(|p| p.vlans.retain(|v| v.vlan_id != 9)),
            None,
        ),
        (
            "a platform address added",
            Box::new(|p| p.platform.push("10.9.0.4".parse().unwrap())),
            None,
        ),
    ];
    for (what, change, expected) in steps {
        let before = model(&plan, &config);
        change(&mut plan);
        let after = model(&plan, &config);
        let script = changes(&before, &after).unwrap_or_else(|| panic!("{what}: no change"));
        assert!(
            !script.contains("delete table"),
            "{what}: a change, not the whole script:\n{script}"
        );
        if let Some(expected) = expected {
            assert_eq!(script, expected, "{what}");
        }
        incremental.nft(&script);
        whole.nft(&after.script());
        assert_eq!(
            incremental.listing(),
            whole.listing(),
            "{what}: the kernel holds what the whole script makes, after\n{script}"
        );
    }
    // The VLAN added then removed left nothing of it.
    let left = incremental.listing();
    assert!(
        !left.contains("extbr9") && !left.contains("nic_5"),
        "{left}"
    );
}

/// With 500 NICs on the node, a port forward is still one element.
#[test]
fn a_port_forward_on_a_full_node_is_one_element() {
    let scratch = Scratch::new();
    let config = config();
    let before = model(&sample::plan(500, 10), &config);
    scratch.nft(&before.script());
    let after = model(&sample::plan(500, 11), &config);
    let script = changes(&before, &after).unwrap();
    assert_eq!(
        script,
        format!(
            "add element inet extility forwards {{ 20010 : {} . 32 }}\n",
            sample::nic(1).address
        )
    );
    scratch.nft(&script);
    let whole = Scratch::new();
    whole.nft(&after.script());
    assert_eq!(scratch.listing(), whole.listing());
}

/// The samples of a Prometheus page named `name` (with its labels).
fn sample_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn metrics(app: &TestApp) -> String {
    reqwest::get(format!("{}/metrics", app.server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

const CHANGES: &str = "extility_network_applies_total{kind=\"change\"}";
const RESYNCS: &str = "extility_network_applies_total{kind=\"resync\"}";
const DRIFTS: &str = "extility_network_drifts_total";

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// Waits (60 s at most) for the metric to pass `above`, and returns the page.
async fn until_metric_above(app: &TestApp, name: &str, above: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page = metrics(app).await;
        if sample_value(&page, name) > above {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never passed {above}:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_port_forwards_coalesces_and_the_resync_finds_no_drift() {
    let ns = Netns::create();
    let run_dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_with(
        Backend::Sqlite,
        ServerOptions {
            netns: Some(ns.name.clone()),
            listen: Some(format!("{}:0", ns.inside)),
            args: [
                "--network",
                "bridge",
                "--hypervisor",
                "none",
                "--max-calls-in-flight",
                "0",
                "--quota-port-forwards",
                "unlimited",
                "--port-forward-ports",
                "20000-20199",
                "--metrics-allow",
                "10.250.0.0/16",
                "--network-run-dir",
                run_dir.path().to_str().unwrap(),
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        },
    )
    .await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let lan = crate::tenant_networks::vlan(&alice, vdc, "lan").await;
    let other = crate::tenant_networks::vlan(&alice, vdc, "other").await;
    let mut servers = Vec::new();
    for (i, vlan) in [&lan; 7].into_iter().chain([&other]).enumerate() {
        let server = alice
            .call(
                "CreateServer",
                json!({"vdc_id": vdc, "vlan_id": vlan["vlan_id"], "server_name": format!("s{i}"),
                       "image_id": BLANK_IMAGE, "server_productoffer_id": SERVER_1CPU_512MB,
                       "disk_productoffer_ids": [DISK_20GB]}),
            )
            .await;
        servers.push(server["server_id"].as_i64().unwrap());
    }
    let (others, servers) = (servers[7], &servers[..7]);
    for id in servers {
        app.start_server(*id).await;
    }
    let lan_bridge = format!("extbr{}", lan["vlan_id"]);
    let other_bridge = format!("extbr{}", other["vlan_id"]);
    // The dnsmasq files are in a folder of the node's under the run directory.
    let files_of = |bridge: &str| {
        [".dhcp-hosts", ".names"].map(|ext| {
            let name = format!("{bridge}{ext}");
            let path = walk(run_dir.path())
                .into_iter()
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == name))
                .unwrap_or_else(|| panic!("no {name} under {}", run_dir.path().display()));
            std::fs::metadata(path).unwrap().modified().unwrap()
        })
    };
    let lan_files = files_of(&lan_bridge);

    // A server started on the other VLAN: the other VLAN's DHCP server is made; the first
    // VLAN's hosts are not written again (so its dnsmasq is not reloaded).
    app.start_server(others).await;
    assert_eq!(files_of(&lan_bridge), lan_files);
    let other_files = files_of(&other_bridge);

    // The burst: 100 port forwards at once, over seven servers.
    let page = metrics(&app).await;
    let (changes_before, drifts_before) =
        (sample_value(&page, CHANGES), sample_value(&page, DRIFTS));
    let before = listing(&ns.name);
    let calls = (0..100).map(|k| {
        let alice = alice.clone();
        let server_id = servers[k % 7];
        async move {
            alice
                .call(
                    "AddPortForward",
                    json!({"server_id": server_id, "guest_port": 1000 + k}),
                )
                .await["host_port"]
                .as_i64()
                .unwrap()
        }
    });
    let ports: BTreeSet<i64> = futures::future::join_all(calls).await.into_iter().collect();
    assert_eq!(ports.len(), 100);
    let page = metrics(&app).await;
    let applies = sample_value(&page, CHANGES) - changes_before;
    assert!(
        (1.0..=5.0).contains(&applies),
        "100 port forwards at once made {applies} applies"
    );
    // Each returned once its forward was in the kernel: all 100 are there, and nothing
    // else of the tables changed.
    let after = listing(&ns.name);
    let changed: Vec<(&str, &str)> = before
        .lines()
        .zip(after.lines())
        .filter(|(b, a)| b != a)
        .collect();
    assert_eq!(before.lines().count(), after.lines().count());
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(
        changed[0].1.starts_with("inet map forwards:"),
        "{changed:?}"
    );
    for port in &ports {
        assert!(
            changed[0].1.contains(&format!("[{port},")),
            "{port}: {after}"
        );
    }
    assert_eq!(files_of(&lan_bridge), lan_files);
    assert_eq!(files_of(&other_bridge), other_files);

    // The next resync finds nothing to repair.
    let resyncs = sample_value(&metrics(&app).await, RESYNCS);
    let page = until_metric_above(&app, RESYNCS, resyncs).await;
    assert_eq!(sample_value(&page, DRIFTS), drifts_before, "{page}");
    assert_eq!(listing(&ns.name), after);
    assert_eq!(files_of(&lan_bridge), lan_files);

    // A forward taken out by hand is a drift: the resync finds it and writes it back.
    let gone = ports.iter().next().unwrap();
    ns.exec(&[
        "nft",
        "delete",
        "element",
        "inet",
        "extility",
        "forwards",
        &format!("{{ {gone} }}"),
    ]);
    assert_ne!(listing(&ns.name), after);
    until_metric_above(&app, DRIFTS, drifts_before).await;
    assert_eq!(listing(&ns.name), after);
}
