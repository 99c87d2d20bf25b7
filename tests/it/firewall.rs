//! Firewall templates (issue 25): the operations and their refusals on both engines, and real
//! guests on a bridge whose packets obey a template: a peer on the VLAN reaches the port a
//! rule allows and no other, a port forward to a port the template closes is refused from the
//! host's side and opens again at once when the template is taken away, and what a guest sends
//! to the world is denied for one address and allowed for another, while replies to the
//! connections it accepted still get out under a default outbound DENY.

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Api, Backend, ServerOptions, TestApp, db_test};
use crate::tenant_networks::{
    Guest, INIT, Netns, WORLD, WORLD_PORT, boot, bridged_app, console, server, vlan,
};

async fn template(api: &Api, vdc: i64, name: &str, inbound: &str, outbound: &str) -> Value {
    api.call(
        "CreateFirewallTemplate",
        json!({"vdc_id": vdc, "name": name, "default_inbound": inbound,
               "default_outbound": outbound}),
    )
    .await
}

fn rule(template: &Value, direction: &str, protocol: &str, ports: (i64, i64), cidr: &str) -> Value {
    json!({"template_id": template["firewall_template_id"], "direction": direction,
           "protocol": protocol, "port_from": ports.0, "port_to": ports.1, "cidr": cidr,
           "action": "ALLOW"})
}

async fn listed(api: &Api) -> Vec<Value> {
    api.call("ListFirewallTemplates", json!({}))
        .await
        .as_array()
        .unwrap()
        .clone()
}

async fn templates_rules_and_refusals(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        ServerOptions {
            args: ["--hypervisor", "none", "--quota-firewall-rules", "3"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    )
    .await;
    let (alice, bob) = (app.alice(), app.bob());
    let vdc = app.alice.vdc_id;
    let web = template(&alice, vdc, "web", "deny", "ALLOW").await;
    assert_eq!(web["default_inbound"], "DENY");
    assert_eq!(web["default_outbound"], "ALLOW");
    let id = web["firewall_template_id"].as_i64().unwrap();

    // Rules go where `position` says; the first is first.
    let ssh = alice
        .call(
            "AddFirewallRule",
            rule(&web, "IN", "TCP", (22, 22), "10.0.0.0/8"),
        )
        .await;
    let mut https = rule(&web, "in", "tcp", (443, 443), "0.0.0.0/0");
    https["position"] = json!(1);
    let https = alice.call("AddFirewallRule", https).await;
    let mut icmp = rule(&web, "IN", "ICMP", (5, 1), "192.0.2.7");
    icmp["port_from"] = json!(5);
    let icmp = alice.call("AddFirewallRule", icmp).await;
    assert_eq!(icmp["port_from"], Value::Null, "ports are ignored for ICMP");
    assert_eq!(icmp["cidr"], "192.0.2.7/32");
    let order = |t: &Value| -> Vec<i64> {
        t["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["firewall_rule_id"].as_i64().unwrap())
            .collect()
    };
    let ids = |rules: &[&Value]| -> Vec<i64> {
        rules
            .iter()
            .map(|r| r["firewall_rule_id"].as_i64().unwrap())
            .collect()
    };
    let now = listed(&alice).await;
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(order(&now[0]), ids(&[&https, &ssh, &icmp]));
    assert_eq!(now[0]["rules"][0]["position"], 1);
    assert_eq!(now[0]["rules"][1]["protocol"], "TCP");

    // Reordered, and a rule removed: positions close up.
    alice
        .call(
            "MoveFirewallRule",
            json!({"rule_id": icmp["firewall_rule_id"], "position": 1}),
        )
        .await;
    assert_eq!(order(&listed(&alice).await[0]), ids(&[&icmp, &https, &ssh]));
    alice
        .call(
            "RemoveFirewallRule",
            json!({"rule_id": https["firewall_rule_id"]}),
        )
        .await;
    let now = listed(&alice).await;
    assert_eq!(order(&now[0]), ids(&[&icmp, &ssh]));
    assert_eq!(now[0]["rules"][1]["position"], 2);
    let renamed = alice
        .call(
            "RenameFirewallTemplate",
            json!({"template_id": id, "name": "web servers"}),
        )
        .await;
    assert_eq!(renamed["name"], "web servers");

    // Invalid values: INVALID_ARGUMENT, naming the argument, and nothing added.
    for (field, value) in [
        ("cidr", json!("10.0.0.1/24")),
        ("cidr", json!("10.0.0.0/33")),
        ("cidr", json!("fe80::/64")),
        ("cidr", json!("anywhere")),
        ("port_from", json!(0)),
        ("port_to", json!(70000)),
        ("port_to", json!(21)),
        ("direction", json!("BOTH")),
        ("protocol", json!("SCTP")),
        ("action", json!("PERMIT")),
        ("position", json!(0)),
    ] {
        let mut bad = rule(&web, "IN", "TCP", (22, 80), "10.0.0.0/8");
        bad[field] = value.clone();
        let err = alice.fail("AddFirewallRule", bad).await;
        assert_eq!(err.code, "INVALID_ARGUMENT", "{field}={value}: {err:?}");
        assert!(err.message.contains(field), "{field}: {}", err.message);
    }
    let err = alice
        .fail(
            "CreateFirewallTemplate",
            json!({"vdc_id": vdc, "name": "x", "default_inbound": "maybe",
                   "default_outbound": "DENY"}),
        )
        .await;
    assert_eq!(err.code, "INVALID_ARGUMENT", "{err:?}");
    assert_eq!(
        listed(&alice).await[0]["rules"].as_array().unwrap().len(),
        2
    );

    // The rules quota (3 here): a third rule fits, a fourth is refused.
    alice
        .call(
            "AddFirewallRule",
            rule(&web, "OUT", "UDP", (53, 53), "0.0.0.0/0"),
        )
        .await;
    let err = alice
        .fail(
            "AddFirewallRule",
            rule(&web, "OUT", "ANY", (0, 0), "0.0.0.0/0"),
        )
        .await;
    assert_eq!(err.code, "QUOTA_EXCEEDED", "{err:?}");
    assert!(err.message.contains("firewall_rules"), "{}", err.message);
    let quota = alice.call("GetQuota", json!({})).await;
    assert_eq!(quota["firewall_rules_limit"], 3, "{quota}");
    assert_eq!(quota["firewall_rules_used"], 3, "{quota}");
    assert_eq!(quota["firewall_templates_used"], 1, "{quota}");

    // Another customer's template, rule or server is not found, and its list is its own.
    let server = alice
        .call(
            "CreateServer",
            json!({"vdc_id": vdc, "vlan_id": -1, "server_name": "s",
                   "image_id": crate::support::catalogue::BLANK_IMAGE,
                   "server_productoffer_id": crate::support::catalogue::SERVER_1CPU_512MB,
                   "disk_productoffer_ids": [crate::support::catalogue::DISK_1GB]}),
        )
        .await;
    let server_id = server["server_id"].as_i64().unwrap();
    assert_eq!(server["firewall_template_id"], Value::Null);
    let bobs = template(&bob, app.bob.vdc_id, "bob's", "DENY", "DENY").await;
    for (op, args) in [
        (
            "AddFirewallRule",
            rule(&web, "IN", "TCP", (22, 22), "0.0.0.0/0"),
        ),
        (
            "RenameFirewallTemplate",
            json!({"template_id": id, "name": "mine"}),
        ),
        ("DeleteFirewallTemplate", json!({"template_id": id})),
        (
            "RemoveFirewallRule",
            json!({"rule_id": ssh["firewall_rule_id"]}),
        ),
        (
            "MoveFirewallRule",
            json!({"rule_id": ssh["firewall_rule_id"], "position": 1}),
        ),
        (
            "ApplyFirewallTemplate",
            json!({"server_id": server_id, "template_id": bobs["firewall_template_id"]}),
        ),
    ] {
        let err = bob.fail(op, args.clone()).await;
        assert_eq!(err.code, "NOT_FOUND", "{op}({args}): {err:?}");
    }
    let err = alice
        .fail(
            "ApplyFirewallTemplate",
            json!({"server_id": server_id, "template_id": bobs["firewall_template_id"]}),
        )
        .await;
    assert_eq!(err.code, "NOT_FOUND", "{err:?}");
    assert_eq!(listed(&bob).await.len(), 1);

    // Applied, it shows on the server; it cannot be deleted while applied.
    let applied = alice
        .call(
            "ApplyFirewallTemplate",
            json!({"server_id": server_id, "template_id": id}),
        )
        .await;
    assert_eq!(applied["firewall_template_id"], id);
    let servers = alice.call("ListServers", json!({"vdc_id": vdc})).await;
    assert_eq!(servers[0]["firewall_template_id"], id, "{servers}");
    assert_eq!(listed(&alice).await[0]["server_ids"], json!([server_id]));
    let err = alice
        .fail("DeleteFirewallTemplate", json!({"template_id": id}))
        .await;
    assert_eq!(err.code, "CONFLICT", "{err:?}");
    assert!(
        err.message.contains(&server_id.to_string()),
        "{}",
        err.message
    );
    let removed = alice
        .call(
            "ApplyFirewallTemplate",
            json!({"server_id": server_id, "template_id": -1}),
        )
        .await;
    assert_eq!(removed["firewall_template_id"], Value::Null);
    alice
        .call("DeleteFirewallTemplate", json!({"template_id": id}))
        .await;
    assert!(listed(&alice).await.is_empty());

    // The templates quota.
    let limited = TestApp::start_with(
        backend,
        ServerOptions {
            args: ["--hypervisor", "none", "--quota-firewall-templates", "1"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    )
    .await;
    template(
        &limited.alice(),
        limited.alice.vdc_id,
        "one",
        "ALLOW",
        "ALLOW",
    )
    .await;
    let err = limited
        .alice()
        .fail(
            "CreateFirewallTemplate",
            json!({"vdc_id": limited.alice.vdc_id, "name": "two",
                   "default_inbound": "ALLOW", "default_outbound": "ALLOW"}),
        )
        .await;
    assert_eq!(err.code, "QUOTA_EXCEEDED", "{err:?}");
    // A VDC holding a template is not deleted.
    let err = limited
        .alice()
        .fail("DeleteVDC", json!({"vdc_id": limited.alice.vdc_id}))
        .await;
    assert_eq!(err.code, "CONFLICT", "{err:?}");
    assert!(
        err.message.contains("1 firewall template"),
        "{}",
        err.message
    );

    // Every change left an audit row, refusals too.
    let events = alice.call("ListAuditEvents", json!({})).await;
    let operations: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["operation"].as_str().unwrap())
        .collect();
    for op in [
        "CreateFirewallTemplate",
        "AddFirewallRule",
        "MoveFirewallRule",
        "RemoveFirewallRule",
        "RenameFirewallTemplate",
        "ApplyFirewallTemplate",
        "DeleteFirewallTemplate",
    ] {
        assert!(
            operations.contains(&op),
            "no audit row of {op}: {operations:?}"
        );
    }
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["operation"] == "DeleteFirewallTemplate" && e["outcome"] == "CONFLICT"),
        "{events}"
    );
}
db_test!(templates_rules_and_refusals, templates_rules_and_refusals);

/// Another address of the world, beside [`WORLD`], reached the same way.
const WORLD_TOO: &str = "198.51.100.2";

/// Whether a TCP connection from this side to `host:port` opens within 3 s.
fn opens(host: &str, port: u16) -> bool {
    let address: SocketAddr = format!("{host}:{port}").parse().unwrap();
    TcpStream::connect_timeout(&address, Duration::from_secs(3)).is_ok()
}

/// Whether a TCP connection from inside namespace `ns` to `host:port` opens within 3 s.
fn opens_in(ns: &str, host: &str, port: u16) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c"])
        .arg("import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)")
        .args([host, &port.to_string()])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Waits (up to 5 s) until `check` holds: rules applied on another node arrive by a job.
async fn within_seconds(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_packets_obey_a_template() {
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let mut ns = Netns::create();
    ns.listen_in_world(WORLD_PORT);
    // A second address in the world, routed the same way as the first.
    let k = ns.inside.split('.').nth(2).unwrap().to_string();
    crate::tenant_networks::sh(&[
        "ip",
        "netns",
        "exec",
        &ns.world,
        "ip",
        "addr",
        "add",
        &format!("{WORLD_TOO}/32"),
        "dev",
        "lo",
    ]);
    ns.exec(&[
        "ip",
        "route",
        "add",
        &format!("{WORLD_TOO}/32"),
        "via",
        &format!("10.251.{k}.2"),
    ]);
    let app = bridged_app(
        &ns,
        &[
            "--guest-egress",
            "on",
            "--port-forward-ports",
            "20100-20199",
        ],
    )
    .await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let lan = vlan(&alice, vdc, "lan").await;
    let subnet = lan["subnet"].as_str().unwrap();
    let locked = server(alice.clone(), vdc, &lan, "locked").await;
    let peer = server(alice.clone(), vdc, &lan, "peer").await;

    // Inbound: SSH from the VLAN only. Outbound denied but for TCP 8000 to the world's
    // network, and never to WORLD: the first rule that matches decides.
    let web = template(&alice, vdc, "ssh only", "DENY", "DENY").await;
    let web_id = web["firewall_template_id"].as_i64().unwrap();
    alice
        .call("AddFirewallRule", rule(&web, "IN", "TCP", (22, 22), subnet))
        .await;
    let mut world = rule(&web, "OUT", "ANY", (0, 0), &format!("{WORLD}/32"));
    world["action"] = json!("DENY");
    alice.call("AddFirewallRule", world).await;
    let port = i64::from(WORLD_PORT);
    alice
        .call(
            "AddFirewallRule",
            rule(&web, "OUT", "TCP", (port, port), "198.51.100.0/24"),
        )
        .await;
    alice
        .call(
            "ApplyFirewallTemplate",
            json!({"server_id": locked.id, "template_id": web_id}),
        )
        .await;

    // `locked` serves 22 and 7777 too; `peer` probes them, `locked` probes the world.
    let init = INIT.replace(
        "httpd -p 7000 -h /tmp/www && echo \"LISTENING\"",
        "httpd -p 7000 -h /tmp/www && httpd -p 22 -h /tmp/www && httpd -p 7777 -h /tmp/www \
         && echo \"LISTENING\"",
    );
    let tries = 20;
    let probes: Vec<(&Guest, &str, u16)> = vec![
        (&peer, &locked.address, 22),
        (&peer, &locked.address, 7777),
        (&peer, &locked.address, 7000),
        (&locked, WORLD, WORLD_PORT),
        (&locked, WORLD_TOO, WORLD_PORT),
        (&locked, &peer.address, 7000),
    ];
    let append: Vec<String> = probes
        .iter()
        .map(|(g, h, p)| format!("probe={},{h},{p},{tries}", g.address))
        .collect();
    let disk = crate::support::guest::guest_disk_with(
        app.dir.path(),
        &init,
        &format!("quiet {}", append.join(" ")),
    );
    let files =
        crate::support::image_server::ImageServer::start_on(&format!("{}:0", ns.outside)).await;
    let url = files.put_data("guest.img", std::fs::read(&disk).unwrap());
    let started = Instant::now();
    futures::future::join_all([&locked, &peer].map(|g| boot(g, vdc, &url))).await;
    let (locked_says, peer_says) = (console(&locked).await, console(&peer).await);
    eprintln!(
        "firewall: two guests booted and probed in {:?}\nlocked:\n{}\npeer:\n{}",
        started.elapsed(),
        locked_says.join("\n"),
        peer_says.join("\n")
    );
    let a = &locked.address;
    // The platform's own services still serve the locked-down guest: DHCP and metadata.
    assert!(
        locked_says.contains(&format!("ADDR {a}")),
        "{locked_says:?}"
    );
    assert!(
        locked_says
            .iter()
            .any(|l| l.starts_with("METADATA locked ")),
        "{locked_says:?}"
    );
    for (says, line) in [
        // A peer reaches SSH (its replies get out under outbound DENY), nothing else.
        (&peer_says, format!("OPEN {a} 22")),
        (&peer_says, format!("CLOSED {a} 7777")),
        (&peer_says, format!("CLOSED {a} 7000")),
        // Outbound: WORLD denied, the other address of its network allowed.
        (&locked_says, format!("CLOSED {WORLD} {WORLD_PORT}")),
        (&locked_says, format!("OPEN {WORLD_TOO} {WORLD_PORT}")),
        // Nothing else goes out.
        (&locked_says, format!("CLOSED {} 7000", peer.address)),
    ] {
        assert!(says.contains(&line), "expected {line:?} in {says:?}");
    }

    // A port forward to 7777 is refused from the host's side, from outside the host and from
    // the host itself, while one to the peer's 7777 opens.
    let forward = |guest: &Guest| {
        let api = alice.clone();
        let id = guest.id;
        async move {
            api.call(
                "AddPortForward",
                json!({"server_id": id, "guest_port": 7777}),
            )
            .await["host_port"]
                .as_u64()
                .unwrap() as u16
        }
    };
    let (to_locked, to_peer) = (forward(&locked).await, forward(&peer).await);
    assert!(opens(&ns.inside, to_peer), "the peer's forward opens");
    assert!(!opens(&ns.inside, to_locked), "the template refuses 7777");
    assert!(!opens_in(&ns.name, &ns.inside, to_locked));

    // Taken away, 7777 opens at once, without a restart; applied again, it closes; a rule
    // added to the template opens it.
    let apply = |template: Value| {
        let api = alice.clone();
        let id = locked.id;
        async move {
            api.call(
                "ApplyFirewallTemplate",
                json!({"server_id": id, "template_id": template}),
            )
            .await
        }
    };
    let none = apply(json!(-1)).await;
    assert_eq!(none["firewall_template_id"], Value::Null);
    assert!(opens(&ns.inside, to_locked), "no template: 7777 opens");
    assert!(opens_in(&ns.name, &ns.inside, to_locked));
    assert_eq!(apply(json!(web_id)).await["firewall_template_id"], web_id);
    assert!(!opens(&ns.inside, to_locked), "applied again: refused");
    let mut anyone = rule(&web, "IN", "TCP", (7777, 7777), "0.0.0.0/0");
    anyone["position"] = json!(1);
    alice.call("AddFirewallRule", anyone).await;
    within_seconds("a rule added to the template opens 7777", || {
        opens(&ns.inside, to_locked)
    })
    .await;
    let status = alice
        .call("GetServer", json!({"server_id": locked.id}))
        .await;
    assert_eq!(status["status"], 2, "never restarted: {status}");
}

/// A server with a template on a node other than the one taking the call: the rules are
/// applied there (by a job aimed at it), not on the node that took the call.
pub(crate) async fn applied_on_the_right_node(
    api: &Api,
    guest: &Guest,
    vdc: i64,
    runs_in: &str,
    elsewhere: &str,
) {
    let template = template(api, vdc, "closed", "DENY", "ALLOW").await;
    let id = template["firewall_template_id"].as_i64().unwrap();
    assert!(opens_in(runs_in, &guest.address, 7000), "open before");
    api.call(
        "ApplyFirewallTemplate",
        json!({"server_id": guest.id, "template_id": id}),
    )
    .await;
    within_seconds("the node running the server closes 7000", || {
        !opens_in(runs_in, &guest.address, 7000)
    })
    .await;
    let chain = format!("template_{id}_in");
    let ruleset = |ns: &str| {
        String::from_utf8(
            Command::new("ip")
                .args([
                    "netns", "exec", ns, "nft", "list", "table", "inet", "extility",
                ])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
    };
    assert!(ruleset(runs_in).contains(&chain), "{}", ruleset(runs_in));
    assert!(
        !ruleset(elsewhere).contains(&chain),
        "{}",
        ruleset(elsewhere)
    );
    api.call(
        "ApplyFirewallTemplate",
        json!({"server_id": guest.id, "template_id": -1}),
    )
    .await;
    within_seconds("taken away, 7000 opens again", || {
        opens_in(runs_in, &guest.address, 7000)
    })
    .await;
}
