//! Tenant networks (issue 10), with real guests and real packets: a server runs `extility
//! serve --network bridge` in a network namespace of its own (so its bridges, taps, dnsmasq
//! and nftables tables are the test's alone, and no packet leaves the machine), reached from
//! the test over a veth pair. Four Linux guests (Debian's kernel, a busybox initramfs) boot on
//! three VLANs of two customers; each gets its address by DHCP, reads its metadata at
//! 169.254.169.254, serves a page on port 7000 and probes the others and the host, printing
//! what it found on its serial console.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::catalogue::{BLANK_IMAGE, DISK_20GB, SERVER_1CPU_512MB};
use crate::support::fetch_disk::{disks, fetch, fetch_args};
use crate::support::guest::{guest_disk_with, guest_init};
use crate::support::image_server::ImageServer;
use crate::support::{Api, Backend, ServerOptions, TestApp};

pub(crate) const GUEST_TIMEOUT: Duration = Duration::from_secs(420);
/// A port of the host (the namespace) that guests must not reach on any of its addresses.
const HOST_PORT: u16 = 4444;
/// A stand-in for PostgreSQL on the host.
const POSTGRES_PORT: u16 = 5432;
const METADATA_PORT: u16 = 8775;

/// Probes come from the kernel command line: `flood=FROM,N` has the guest whose address is
/// FROM hold N connections to the metadata address (each reopened when it closes), printing
/// `FLOODING N`, before it reads its own; `probe=FROM,HOST,PORT,TRIES` runs on the guest
/// whose address is FROM, trying up to TRIES times, a second apart, and printing `OPEN HOST
/// PORT` at the first connection or `CLOSED HOST PORT`; `dns=FROM,NAME` looks NAME up; once
/// done, `world=FROM,HOST,PORT` tries HOST:PORT every second until it connects and prints
/// `WORLD OPEN`. `inject=FROM,CONTROL,TO...` (before the probes) sends `/vxlan.bin` to UDP 4789
/// of each TO three times with `/usr/bin/socat`, then once to UDP 4790 of CONTROL.
pub(crate) const INIT: &str = guest_init!(
    r#"echo "GUEST INIT"
for m in $(cat /etc/modules); do insmod /lib/modules/$m.ko || echo "INSMOD FAILED $m"; done
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -s /etc/udhcpc.sh -q -n -t 10 -T 2 >/dev/null 2>&1
ADDR=$(cat /tmp/addr 2>/dev/null)
GW=$(cat /tmp/router 2>/dev/null)
echo "ADDR $ADDR"
mkdir -p /tmp/www
echo "hello from $ADDR" > /tmp/www/index.html
httpd -p 7000 -h /tmp/www && echo "LISTENING"
for t in $(cat /proc/cmdline); do
  case "$t" in flood=$ADDR,*)
    n=${t##*,}; i=0
    while [ $i -lt $n ]; do
      (while :; do sleep 600 | nc 169.254.169.254 80 >/dev/null 2>&1; sleep 1; done) &
      i=$((i+1))
    done
    sleep 5; echo "FLOODING $n";;
  esac
done
printf 'GET /metadata/v1/server.xml HTTP/1.0\r\nHost: 169.254.169.254\r\n\r\n' | nc -w 10 169.254.169.254 80 > /tmp/md
if grep -q '<initial-password>' /tmp/md; then
  echo "METADATA $(grep -o '<server-name>[^<]*' /tmp/md | cut -d '>' -f 2) $(grep -o '<initial-password>[^<]*' /tmp/md | cut -d '>' -f 2)"
else
  echo "METADATA FAILED $(head -c 200 /tmp/md | tr '\r\n' '  ')"
fi
seed=$(cat /sys/class/dmi/id/product_serial); seed=${seed#*;s=}
if wget -q -O /tmp/nc "${seed}network-config"; then
  echo "NOCLOUD $seed $(grep -o '"[0-9.]*/[0-9]*"' /tmp/nc | head -n 1 | tr -d '"')"
else
  echo "NOCLOUD FAILED"
fi
for t in $(cat /proc/cmdline); do
  case "$t" in inject=$ADDR,*)
    set -- $(echo "${t#inject=}" | tr ',' ' '); shift; control=$1; shift
    for round in 1 2 3; do
      for to in "$@"; do
        /usr/bin/socat -u OPEN:/vxlan.bin UDP4-SENDTO:$to:4789 && echo "SENT $to"
      done
    done
    /usr/bin/socat -u OPEN:/vxlan.bin UDP4-SENDTO:$control:4790 && echo "SENT CONTROL";;
  esac
done
probe() {
  i=0
  while [ $i -lt $3 ]; do
    if nc -w 2 "$1" "$2" </dev/null >/dev/null 2>&1; then echo "OPEN $1 $2"; return; fi
    i=$((i+1)); sleep 1
  done
  echo "CLOSED $1 $2"
}
for t in $(cat /proc/cmdline); do
  case "$t" in
    probe=$ADDR,*) set -- $(echo "${t#probe=}" | tr ',' ' '); probe "$2" "$3" "$4" & ;;
    dns=$ADDR,*) n=${t##*,}; echo "DNS $n $(nslookup "$n" "$GW" 2>/dev/null | grep -A3 "^Name:" | grep -o '[0-9][0-9.]*$' | head -n 1)" ;;
  esac
done
wait
echo "GUEST DONE"
for t in $(cat /proc/cmdline); do
  case "$t" in world=$ADDR,*)
    set -- $(echo "${t#world=}" | tr ',' ' ')
    until nc -w 2 "$2" "$3" </dev/null >/dev/null 2>&1; do sleep 1; done
    echo "WORLD OPEN";;
  esac
done
while :; do sleep 3600; done
"#
);

/// A network namespace standing for the host, joined to the test's by a veth pair
/// (`outside` on the test's side, `inside` on the namespace's), with no route anywhere else.
pub(crate) struct Netns {
    pub(crate) name: String,
    pub(crate) outside: String,
    pub(crate) inside: String,
    /// A second namespace beyond the first: the world outside the host, reached only by
    /// routing through it (`WORLD` on its loopback).
    pub(crate) world: String,
    listeners: Vec<Child>,
}

/// An address of the world outside the host (TEST-NET-2), and a port listening there.
pub(crate) const WORLD: &str = "198.51.100.1";
pub(crate) const WORLD_PORT: u16 = 8000;

pub(crate) fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Netns {
    pub(crate) fn create() -> Netns {
        let tag = format!("{:x}", rand::random::<u32>() & 0xfffff);
        let k = rand::random::<u8>();
        let name = format!("ext-test-{tag}");
        let (host_if, ns_if) = (format!("xv{tag}h"), format!("xv{tag}n"));
        let ns = Netns {
            name: name.clone(),
            outside: format!("10.250.{k}.1"),
            inside: format!("10.250.{k}.2"),
            world: format!("ext-world-{tag}"),
            listeners: Vec::new(),
        };
        sh(&["ip", "netns", "add", &name]);
        sh(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        sh(&["ip", "link", "set", &ns_if, "netns", &name]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", ns.outside),
            "dev",
            &host_if,
        ]);
        sh(&["ip", "link", "set", &host_if, "up"]);
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", ns.inside),
            "dev",
            &ns_if,
        ]);
        ns.exec(&["ip", "link", "set", &ns_if, "up"]);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        // The world: a namespace routed through the host's namespace, as the internet is.
        let (to_world, from_host) = (format!("xw{tag}n"), format!("xw{tag}w"));
        sh(&["ip", "netns", "add", &ns.world]);
        ns.exec(&[
            "ip", "link", "add", &to_world, "type", "veth", "peer", "name", &from_host,
        ]);
        ns.exec(&["ip", "link", "set", &from_host, "netns", &ns.world]);
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("10.251.{k}.1/30"),
            "dev",
            &to_world,
        ]);
        ns.exec(&["ip", "link", "set", &to_world, "up"]);
        ns.exec(&[
            "ip",
            "route",
            "add",
            &format!("{WORLD}/32"),
            "via",
            &format!("10.251.{k}.2"),
        ]);
        let world = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", ns.world.as_str()];
            all.extend_from_slice(args);
            sh(&all);
        };
        world(&[
            "ip",
            "addr",
            "add",
            &format!("10.251.{k}.2/30"),
            "dev",
            &from_host,
        ]);
        world(&["ip", "link", "set", &from_host, "up"]);
        world(&["ip", "link", "set", "lo", "up"]);
        world(&["ip", "addr", "add", &format!("{WORLD}/32"), "dev", "lo"]);
        world(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &format!("10.251.{k}.1"),
        ]);
        ns
    }

    /// The host's address on its link to the world: what the world sees of masqueraded
    /// guests.
    pub(crate) fn toward_world(&self) -> String {
        let k = self.inside.split('.').nth(2).unwrap();
        format!("10.251.{k}.1")
    }

    pub(crate) fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        sh(&all)
    }

    /// A TCP listener on every address of the namespace, answering HTTP.
    pub(crate) fn listen(&mut self, port: u16) {
        self.listen_in(&self.name.clone(), port);
        // Reachable from outside: what guests are refused, the host's own side is not.
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect((self.inside.as_str(), port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the namespace's listener on {port} never came up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A TCP listener in the world.
    pub(crate) fn listen_in_world(&mut self, port: u16) {
        self.listen_in(&self.world.clone(), port);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.world_listening(port) {
            assert!(
                Instant::now() < deadline,
                "the world's listener on {port} never came up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn world_listening(&self, port: u16) -> bool {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.world, "ss", "-Hltn"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!(":{port} "))
    }

    fn listen_in(&mut self, netns: &str, port: u16) {
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "python3", "-m", "http.server"])
            .args([&port.to_string(), "--bind", "0.0.0.0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.listeners.push(child);
    }

    fn links(&self) -> String {
        self.exec(&["ip", "-br", "link"])
    }

    fn ruleset(&self) -> String {
        self.exec(&["nft", "list", "ruleset"])
    }

    /// The command names of the processes in the namespace.
    fn processes(&self) -> Vec<String> {
        self.exec(&["ip", "netns", "pids", &self.name])
            .split_whitespace()
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok())
            .map(|c| c.trim().to_string())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for child in &mut self.listeners {
            let _ = child.kill();
            let _ = child.wait();
        }
        remove_netns(&self.name);
    }
}

/// Loads the nft `script` in the network namespace `netns`; fails the test if nft refuses it.
pub(crate) fn nft_in(netns: &str, script: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft refused:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deletes a namespace the test made, with what still runs in it: VMs and dnsmasq daemons a
/// server left (a failed test) go with it.
pub(crate) fn remove_netns(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", name]).status();
}

pub(crate) struct Guest {
    pub api: Api,
    pub id: i64,
    pub address: String,
}

/// A server in `ns` on tenant networks (bridges), booting guests with QEMU's TCG and fetching
/// from the test's side of the veth pair, with `extra` arguments.
pub(crate) async fn bridged_app(ns: &Netns, extra: &[&str]) -> TestApp {
    let mut args: Vec<String> = [
        "--network",
        "bridge",
        "--hypervisor",
        "qemu",
        "--qemu-accel",
        "tcg",
        "--metadata-port",
        &METADATA_PORT.to_string(),
        "--allow-fetch-from",
        &format!("{}/32", ns.outside),
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    TestApp::start_with(
        Backend::Sqlite,
        ServerOptions {
            netns: Some(ns.name.clone()),
            listen: Some(format!("{}:0", ns.inside)),
            args,
            ..Default::default()
        },
    )
    .await
}

pub(crate) async fn vlan(api: &Api, vdc: i64, name: &str) -> Value {
    api.call("CreateVLAN", json!({"vdc_id": vdc, "vlan_name": name}))
        .await
}

pub(crate) async fn server(api: Api, vdc: i64, vlan: &Value, name: &str) -> Guest {
    let server = api
        .call(
            "CreateServer",
            json!({"vdc_id": vdc, "vlan_id": vlan["vlan_id"], "server_name": name,
                   "image_id": BLANK_IMAGE, "server_productoffer_id": SERVER_1CPU_512MB,
                   "disk_productoffer_ids": [DISK_20GB]}),
        )
        .await;
    let address = server["ip_address"].as_str().unwrap().to_string();
    let subnet: ipnet::Ipv4Net = vlan["subnet"].as_str().unwrap().parse().unwrap();
    assert!(
        subnet.contains(&address.parse::<std::net::Ipv4Addr>().unwrap()),
        "{name}'s address {address} is in its VLAN's subnet {subnet}"
    );
    assert!(
        server["mac_address"]
            .as_str()
            .unwrap()
            .starts_with("52:54:00:")
    );
    Guest {
        api,
        id: server["server_id"].as_i64().unwrap(),
        address,
    }
}

/// Fetches the guest disk into the guest's VDC, makes it the boot disk and starts the server.
pub(crate) async fn boot(guest: &Guest, vdc: i64, url: &str) {
    let name = format!("boot {}", guest.id);
    guest
        .api
        .job_ok(fetch(&guest.api, fetch_args(url, vdc, &name)).await)
        .await;
    let disk = disks(&guest.api, vdc)
        .await
        .into_iter()
        .find(|d| d["disk_name"] == name.as_str())
        .unwrap();
    guest
        .api
        .call(
            "AttachDisk",
            json!({"server_id": guest.id, "disk_id": disk["disk_id"], "index": 0}),
        )
        .await;
    let job = guest
        .api
        .call("StartServer", json!({"server_id": guest.id}))
        .await;
    guest.api.job_ok(job["job_id"].as_i64().unwrap()).await;
}

/// The guest's console lines once it printed GUEST DONE.
pub(crate) async fn console(guest: &Guest) -> Vec<String> {
    let deadline = Instant::now() + GUEST_TIMEOUT;
    loop {
        let log = guest
            .api
            .call("GetConsoleLog", json!({"server_id": guest.id}))
            .await["console_log"]
            .as_str()
            .unwrap()
            .replace(['\r', '\u{240d}'], "");
        if log.contains("GUEST DONE") {
            let lines: Vec<String> = log.lines().map(|l| l.trim().to_string()).collect();
            let from = lines.iter().position(|l| l == "GUEST INIT").unwrap_or(0);
            return lines[from..].to_vec();
        }
        assert!(
            Instant::now() < deadline,
            "guest {} did not finish in {GUEST_TIMEOUT:?}: {log}",
            guest.id
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn http_get(host: &str, port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(
        &format!("{host}:{port}").parse().unwrap(),
        Duration::from_secs(5),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vlans_isolate_guests_and_keep_the_platform_out_of_reach() {
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let mut ns = Netns::create();
    ns.listen(HOST_PORT);
    ns.listen(POSTGRES_PORT);
    ns.listen_in_world(WORLD_PORT);
    let mut app = bridged_app(
        &ns,
        &[
            "--guest-egress",
            "off",
            "--port-forward-ports",
            "20000-20099",
        ],
    )
    .await;
    assert!(
        app.server
            .log_text()
            .contains("tenant networks: a bridge per VLAN"),
        "{}",
        app.server.log_text()
    );
    let api_port: u16 = app.server.url.rsplit(':').next().unwrap().parse().unwrap();

    // Alice: two VLANs; Bob: one.
    let (alice_vdc, bob_vdc) = (app.alice.vdc_id, app.bob.vdc_id);
    let lan = vlan(&app.alice(), alice_vdc, "lan").await;
    let dmz = vlan(&app.alice(), alice_vdc, "dmz").await;
    let bobs = vlan(&app.bob(), bob_vdc, "bob's lan").await;
    let subnets: Vec<&str> = [&lan, &dmz, &bobs]
        .iter()
        .map(|v| v["subnet"].as_str().unwrap())
        .collect();
    assert!(
        subnets[0] != subnets[1] && subnets[1] != subnets[2] && subnets[0] != subnets[2],
        "each VLAN has its own subnet: {subnets:?}"
    );
    let mut a1 = server(app.alice(), alice_vdc, &lan, "a1").await;
    let mut a2 = server(app.alice(), alice_vdc, &lan, "a2").await;
    let mut a3 = server(app.alice(), alice_vdc, &dmz, "a3").await;
    let mut b1 = server(app.bob(), bob_vdc, &bobs, "b1").await;
    let gateway = |v: &Value| v["gateway"].as_str().unwrap().to_string();

    // Who probes what: (from, host, port, tries). Reachable ones are retried while the others
    // boot; unreachable ones are tried for as long.
    let tries = 25;
    let mut probes: Vec<(&Guest, String, u16)> = vec![
        (&a1, a2.address.clone(), 7000),
        (&a2, a1.address.clone(), 7000),
        (&a1, a3.address.clone(), 7000),
        (&a1, b1.address.clone(), 7000),
        (&a3, a1.address.clone(), 7000),
        (&b1, a1.address.clone(), 7000),
        (&b1, a3.address.clone(), 7000),
    ];
    for (guest, vlan) in [(&a1, &lan), (&b1, &bobs)] {
        for host in [gateway(vlan), ns.inside.clone()] {
            for port in [HOST_PORT, POSTGRES_PORT, api_port, METADATA_PORT] {
                probes.push((guest, host.clone(), port));
            }
        }
        // Another VLAN's gateway is the host too.
        probes.push((guest, gateway(&dmz), HOST_PORT));
        // The world, with egress off.
        probes.push((guest, WORLD.to_string(), WORLD_PORT));
    }
    let mut append: Vec<String> = probes
        .iter()
        .map(|(g, h, p)| format!("probe={},{h},{p},{tries}", g.address))
        .collect();
    append.push(format!("dns={},a2.internal", a1.address));
    append.push(format!("dns={},b1.internal", a1.address));
    append.push(format!("world={},{WORLD},{WORLD_PORT}", a1.address));
    let disk = guest_disk_with(app.dir.path(), INIT, &format!("quiet {}", append.join(" ")));
    let files = ImageServer::start_on(&format!("{}:0", ns.outside)).await;
    let url = files.put_data("guest.img", std::fs::read(&disk).unwrap());

    let started = Instant::now();
    let guests = [
        (&a1, alice_vdc),
        (&a2, alice_vdc),
        (&a3, alice_vdc),
        (&b1, bob_vdc),
    ];
    futures::future::join_all(guests.iter().map(|(g, vdc)| boot(g, *vdc, &url))).await;
    let consoles = futures::future::join_all(guests.iter().map(|(g, _)| console(g))).await;
    eprintln!(
        "tenant_networks: four guests booted and probed in {:?}",
        started.elapsed()
    );
    for ((guest, _), lines) in guests.iter().zip(&consoles) {
        eprintln!(
            "tenant_networks: guest {} said:\n{}",
            guest.id,
            lines.join("\n")
        );
        let has = |line: &str| lines.iter().any(|l| l == line);
        assert!(
            has(&format!("ADDR {}", guest.address)),
            "the guest got its platform-assigned address by DHCP: {lines:?}"
        );
        assert!(has("LISTENING"), "{lines:?}");
        let server = guest
            .api
            .call("GetServer", json!({"server_id": guest.id}))
            .await;
        assert!(
            has(&format!(
                "METADATA {} {}",
                server["server_name"].as_str().unwrap(),
                server["initial_password"].as_str().unwrap()
            )),
            "the guest read its own metadata at 169.254.169.254, known by its NIC: {lines:?}"
        );
        // cloud-init's datasource, announced in the SMBIOS serial, gives the NIC its address.
        assert!(
            lines.iter().any(|l| l.starts_with(&format!(
                "NOCLOUD http://169.254.169.254/metadata/v1/nocloud/ {}/",
                guest.address
            ))),
            "the guest's NoCloud network-config has its static address: {lines:?}"
        );
    }
    let said = |guest: &Guest| {
        let at = guests.iter().position(|(g, _)| g.id == guest.id).unwrap();
        consoles[at].clone()
    };
    for (guest, host, port) in &probes {
        let lines = said(guest);
        let same_vlan = [(&a1, &a2), (&a2, &a1)]
            .iter()
            .any(|(from, to)| from.id == guest.id && to.address == *host);
        let expected = if same_vlan { "OPEN" } else { "CLOSED" };
        assert!(
            lines.contains(&format!("{expected} {host} {port}")),
            "guest {} to {host}:{port} must be {expected}: {lines:?}",
            guest.id
        );
    }
    assert!(said(&a1).contains(&format!("DNS a2.internal {}", a2.address)));
    assert!(
        said(&a1).contains(&"DNS b1.internal".to_string()),
        "another VLAN's names are not in this VLAN's DNS: {:?}",
        said(&a1)
    );

    // Inbound: a port forward reaches a1's web server from outside the host.
    let forward = app
        .alice()
        .call(
            "AddPortForward",
            json!({"server_id": a1.id, "guest_port": 7000}),
        )
        .await;
    let host_port = forward["host_port"].as_u64().unwrap() as u16;
    assert!((20000..20100).contains(&host_port), "{forward}");
    let listed = app
        .alice()
        .call("GetServer", json!({"server_id": a1.id}))
        .await["port_forwards"]
        .clone();
    assert_eq!(listed[0]["host_port"], host_port, "{listed}");
    let error = app
        .bob()
        .try_call(
            "AddPortForward",
            json!({"server_id": a1.id, "guest_port": 22}),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code, "NOT_FOUND", "{error:?}");
    let page = http_get(&ns.inside, host_port).unwrap();
    assert!(
        page.contains(&format!("hello from {}", a1.address)),
        "{page}"
    );
    assert!(
        ns.ruleset()
            .contains(&format!("{host_port} : {} . 7000", a1.address)),
        "{}",
        ns.ruleset()
    );

    // A restart of the server keeps the VMs, their taps and the forward; turned on, egress
    // lets a1 reach the world, where it was refused until then.
    assert!(!console(&a1).await.contains(&"WORLD OPEN".to_string()));
    app.server.set_option("--guest-egress", "on");
    app.server.restart();
    for guest in [&mut a1, &mut a2, &mut a3, &mut b1] {
        guest.api.base = app.server.url.clone();
    }
    let page = http_get(&ns.inside, host_port).unwrap();
    assert!(
        page.contains(&format!("hello from {}", a1.address)),
        "{page}"
    );
    let running = app
        .alice()
        .call("GetServer", json!({"server_id": a1.id}))
        .await;
    assert_eq!(running["status"], 2, "{running}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !console(&a1).await.contains(&"WORLD OPEN".to_string()) {
        assert!(
            Instant::now() < deadline,
            "with egress on, a1 reaches the world"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Destroying a1 takes its tap and its rules.
    let job = app
        .alice()
        .call("DestroyServer", json!({"server_id": a1.id}))
        .await;
    app.alice().job_ok(job["job_id"].as_i64().unwrap()).await;
    assert!(
        !ns.links().contains(&format!("extap{} ", a1.id)),
        "{}",
        ns.links()
    );
    // The forward was an element of the `forwards` map (`PORT : ADDRESS . PORT`).
    assert!(
        !ns.ruleset().contains(&format!("{host_port} : ")),
        "{}",
        ns.ruleset()
    );
    assert!(http_get(&ns.inside, host_port).is_err());

    // And once every server and VLAN is gone, nothing of them is left.
    for guest in [&a2, &a3, &b1] {
        let job = guest
            .api
            .call("DestroyServer", json!({"server_id": guest.id}))
            .await;
        guest.api.job_ok(job["job_id"].as_i64().unwrap()).await;
    }
    for (api, vlan) in [(app.alice(), &lan), (app.alice(), &dmz), (app.bob(), &bobs)] {
        api.call("DeleteVLAN", json!({"vlan_id": vlan["vlan_id"]}))
            .await;
    }
    let links = ns.links();
    assert!(
        !links.contains("extbr") && !links.contains("extap"),
        "{links}"
    );
    assert!(!ns.ruleset().contains("extility"), "{}", ns.ruleset());
    let processes = ns.processes();
    assert!(
        !processes
            .iter()
            .any(|p| p == "dnsmasq" || p.starts_with("qemu")),
        "{processes:?}"
    );
}

/// The rules the firewall is given are ones the kernel takes, with and without egress, with
/// forwards and without VLANs: `nft --check` in a namespace of the test's own.
#[test]
fn the_kernel_takes_the_generated_rules() {
    use extility::network::nft::{FirewallConfig, removal, ruleset};
    use extility::network::{Forward, NetworkPlan, Nic, VlanNet};

    let ns = Netns::create();
    let plan = NetworkPlan {
        vlans: vec![
            VlanNet {
                vlan_id: 7,
                subnet: "10.64.0.0/24".parse().unwrap(),
                nics: vec![Nic {
                    server_id: 3,
                    mac: "52:54:00:aa:bb:cc".into(),
                    address: "10.64.0.10".parse().unwrap(),
                    hostname: "web".into(),
                    firewall: Some(extility::network::firewall::Template {
                        template_id: 2,
                        default_inbound: extility::network::firewall::Action::Deny,
                        default_outbound: extility::network::firewall::Action::Allow,
                        rules: vec![extility::network::firewall::Rule {
                            direction: extility::network::firewall::Direction::In,
                            protocol: extility::network::firewall::Protocol::Tcp,
                            ports: Some((22, 23)),
                            network: "10.64.0.0/24".parse().unwrap(),
                            action: extility::network::firewall::Action::Allow,
                        }],
                    }),
                }],
                remote_nics: Vec::new(),
            },
            VlanNet {
                vlan_id: 8,
                subnet: "10.64.1.0/24".parse().unwrap(),
                nics: Vec::new(),
                remote_nics: vec![Nic {
                    server_id: 4,
                    mac: "52:54:00:aa:bb:dd".into(),
                    address: "10.64.1.11".parse().unwrap(),
                    hostname: "db".into(),
                    firewall: None,
                }],
            },
        ],
        forwards: vec![Forward {
            host_port: 20001,
            address: "10.64.0.10".parse().unwrap(),
            guest_port: 22,
        }],
        tunnel: None,
        platform: vec!["192.168.1.7".parse().unwrap(), "10.9.0.3".parse().unwrap()],
    };
    let mut tunneled = plan.clone();
    tunneled.tunnel = Some(extility::network::Tunnel {
        local: "10.77.0.1".parse().unwrap(),
        peers: vec!["10.77.0.2".parse().unwrap()],
    });
    for egress in [true, false] {
        let config = FirewallConfig {
            metadata_port: 8775,
            egress,
            pool: "10.64.0.0/10".parse().unwrap(),
            deny: vec!["192.168.1.0/24".parse().unwrap()],
            underlay: Some("lo".into()),
        };
        for script in [
            ruleset(&plan, &config),
            ruleset(&tunneled, &config),
            ruleset(&NetworkPlan::default(), &config),
        ] {
            nft_in(&ns.name, &script);
        }
    }
    let loaded = ns.ruleset();
    assert!(loaded.contains("table inet extility"), "{loaded}");
    let removed = Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(removal().as_bytes())?;
            c.wait()
        })
        .unwrap();
    assert!(removed.success());
    assert!(!ns.ruleset().contains("extility"));
}

/// The metadata flood on a bridge (issue 20): a guest holding 12 connections to
/// 169.254.169.254 (each reopened as soon as it closes) does not stop another server of the same
/// customer and VLAN from reading its metadata. Connections are bounded per guest NIC, with no
/// count that crosses guests (`api::metadata`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_flooding_the_metadata_service_holds_up_only_itself() {
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let ns = Netns::create();
    let app = bridged_app(&ns, &[]).await;
    let vdc = app.alice.vdc_id;
    let lan = vlan(&app.alice(), vdc, "lan").await;
    let flooder = server(app.alice(), vdc, &lan, "flooder").await;
    let victim = server(app.alice(), vdc, &lan, "victim").await;
    let disk = guest_disk_with(
        app.dir.path(),
        INIT,
        &format!("quiet flood={},12", flooder.address),
    );
    let files = ImageServer::start_on(&format!("{}:0", ns.outside)).await;
    let url = files.put_data("guest.img", std::fs::read(&disk).unwrap());

    // The flood first; the other guest boots only once it is on.
    boot(&flooder, vdc, &url).await;
    // (Not `console`: the flooder's own reads may wait on the flood it holds.)
    let deadline = Instant::now() + GUEST_TIMEOUT;
    loop {
        let log = flooder
            .api
            .call("GetConsoleLog", json!({"server_id": flooder.id}))
            .await["console_log"]
            .as_str()
            .unwrap()
            .to_string();
        if log.lines().any(|l| l.trim() == "FLOODING 12") {
            break;
        }
        assert!(Instant::now() < deadline, "the flood never started: {log}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    boot(&victim, vdc, &url).await;
    let lines = console(&victim).await;
    let record = victim
        .api
        .call("GetServer", json!({"server_id": victim.id}))
        .await;
    assert!(
        lines.iter().any(|l| *l
            == format!(
                "METADATA victim {}",
                record["initial_password"].as_str().unwrap()
            )),
        "the victim read its metadata during the flood: {lines:?}"
    );
    // The flood still runs: its loops are the flooder's background jobs, which never end.
    let log = flooder
        .api
        .call("GetServer", json!({"server_id": flooder.id}))
        .await;
    assert_eq!(log["status"], 2, "the flooder still runs");
}

/// A data directory whose parent only root may enter (as `mktemp -d` makes it, or an
/// operator's `/srv/extility` at 0700) still gives guests their addresses: dnsmasq, which
/// drops its privileges, reads its files from the runtime directory (`--network-run-dir`),
/// not from the data directory (issue 22, item 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_gets_its_address_when_the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let ns = Netns::create();
    let app = bridged_app(&ns, &[]).await;
    std::fs::set_permissions(app.dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let vdc = app.alice.vdc_id;
    let lan = vlan(&app.alice(), vdc, "lan").await;
    // Two guests: the second one's host entry reaches a dnsmasq already running (SIGHUP,
    // reread as nobody).
    let first = server(app.alice(), vdc, &lan, "first").await;
    let second = server(app.alice(), vdc, &lan, "second").await;
    let disk = guest_disk_with(app.dir.path(), INIT, "quiet");
    let files = ImageServer::start_on(&format!("{}:0", ns.outside)).await;
    let url = files.put_data("guest.img", std::fs::read(&disk).unwrap());
    boot(&first, vdc, &url).await;
    boot(&second, vdc, &url).await;
    for guest in [&first, &second] {
        let lines = console(guest).await;
        assert!(
            lines.contains(&format!("ADDR {}", guest.address)),
            "guest {} got its address by DHCP under a private data directory: {lines:?}",
            guest.id
        );
    }
    let node = std::fs::read_to_string(app.server.data_dir.join("node-id")).unwrap();
    let dir = crate::support::dnsmasq_dir(&app.server.data_dir, node.trim());
    let hosts: Vec<_> = walk(&dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".dhcp-hosts"))
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|text| text.contains(&first.address)))
        .collect();
    assert_eq!(
        hosts.len(),
        1,
        "dnsmasq's hosts file is in the runtime directory"
    );
    assert!(
        !app.server.data_dir.join("network").exists(),
        "nothing of dnsmasq's in the data directory"
    );
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
