//! The firewall of tenant networks with real frames and the kernel's nftables, in seconds: the
//! ruleset `extility` generates is loaded into a network namespace standing for a host, whose
//! bridge `extbr7` has veth pairs standing for taps and for the VLAN's tunnel. Frames are
//! crafted byte by byte (802.1Q and 802.1ad tags, spoofed MACs and addresses, IPv6, LLDP,
//! STP, DHCP) and sent from the far ends; a counter after the product's rules shows which were
//! admitted. Then a "guest" namespace with egress on tries a tunnel's port and a platform
//! address in a "world" namespace. The same defences with real guests: `tagged_spoofing` and
//! `cluster_networks::a_guest_cannot_inject_into_another_nodes_vlans`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use extility::network::nft::{FirewallConfig, ruleset};
use extility::network::{NetworkPlan, Nic, Tunnel, VlanNet};

use crate::tenant_networks::{nft_in, remove_netns, sh};

/// Sends one Ethernet frame: `IFNAME DST SRC TAGS KIND ARGS...`; TAGS is `-` or
/// `TPID:VID[,TPID:VID]`; KIND is `ip SRC DST SPORT DPORT` (UDP), `arp SHA SPA TPA` (a reply),
/// `ipv6`, `lldp` or `stp`. Pinned to CPU 0, so that frames sent one after the other reach the
/// bridge in that order (veth queues a frame on the sending CPU's backlog).
const SEND_FRAME: &str = r#"
import os, socket, struct, sys
os.sched_setaffinity(0, {0})
def mac(s): return bytes.fromhex(s.replace(':', ''))
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
def udp(sport, dport, data): return struct.pack('!HHHH', sport, dport, 8 + len(data), 0) + data
ifname, dst, src, tags, kind = sys.argv[1:6]; rest = sys.argv[6:]
if kind == 'ip':
    payload = udp(int(rest[2]), int(rest[3]), b'extility-probe')
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), 1, 0, 64, 17, 0,
                    socket.inet_aton(rest[0]), socket.inet_aton(rest[1]))
    etype, body = 0x0800, h[:10] + struct.pack('!H', csum(h)) + h[12:] + payload
elif kind == 'arp':
    etype, body = 0x0806, struct.pack('!HHBBH6s4s6s4s', 1, 0x0800, 6, 4, 2, mac(rest[0]),
                                      socket.inet_aton(rest[1]), b'\0' * 6, socket.inet_aton(rest[2]))
elif kind == 'ipv6':
    etype, body = 0x86dd, struct.pack('!IHBB', 0x60000000, 8, 17, 64) + b'\xfe\x80' + b'\0' * 13 \
        + b'\x01' + b'\xff\x02' + b'\0' * 13 + b'\x01' + udp(1, 2, b'')
elif kind == 'lldp':
    etype, body = 0x88cc, b'\x02\x07\x04' + mac(src) + b'\x00\x00'
elif kind == 'stp':
    body = b'\x42\x42\x03' + b'\0' * 35
    etype = len(body)
frame = mac(dst) + mac(src)
for t in ([] if tags == '-' else tags.split(',')):
    tpid, vid = t.split(':')
    frame += struct.pack('!HH', int(tpid, 16), int(vid))
frame = (frame + struct.pack('!H', etype) + body).ljust(60, b'\0')
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
s.send(frame)
"#;

/// Prints `UDP <port> <source>` for each datagram to 4789 and 4790 and `TCP <source>` for each
/// connection to 5432, once `READY`.
const WORLD_LISTENER: &str = r#"
import select, socket, sys
socks = []
for port in (4789, 4790):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', port)); socks.append(s)
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(('0.0.0.0', 5432)); t.listen(8); socks.append(t)
print('READY', flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        if s is t:
            c, a = t.accept(); print('TCP', a[0], flush=True); c.close()
        else:
            _, a = s.recvfrom(2048); print('UDP', s.getsockname()[1], a[0], flush=True)
"#;

const MAC_A: &str = "52:54:00:00:00:0a";
const MAC_B: &str = "52:54:00:00:00:0b";
const MAC_C: &str = "52:54:00:00:00:0c";
const IP_A: &str = "10.64.6.10";
const IP_B: &str = "10.64.6.11";
const IP_C: &str = "10.64.6.12";
const GATEWAY: &str = "10.64.6.1";
const BROADCAST: &str = "ff:ff:ff:ff:ff:ff";
const WORLD: &str = "198.51.100.1";
/// An address the platform uses (its database, say), in the world beside [`WORLD`].
const PLATFORM: &str = "10.20.0.5";

/// A host namespace with the bridge and its ports, and one namespace at the far end of each
/// port: `a` (server 3's tap), `b` (server 4's), `stray` (a tap no plan names), `peer` (the
/// tunnel of VLAN 7), and `world`.
struct Lab {
    host: String,
    a: String,
    b: String,
    stray: String,
    peer: String,
    world: String,
}

impl Lab {
    fn create() -> Lab {
        let tag = format!("{:x}", rand::random::<u32>() & 0xfffff);
        let lab = Lab {
            host: format!("ext-fa{tag}h"),
            a: format!("ext-fa{tag}a"),
            b: format!("ext-fa{tag}b"),
            stray: format!("ext-fa{tag}s"),
            peer: format!("ext-fa{tag}p"),
            world: format!("ext-fa{tag}w"),
        };
        for ns in lab.all() {
            sh(&["ip", "netns", "add", ns]);
            // No IPv6 chatter (router solicitations) on the ports: the counters see only
            // the test's frames.
            for conf in ["all", "default"] {
                lab.sysctl(ns, &format!("net/ipv6/conf/{conf}/disable_ipv6"), "1");
            }
            lab.exec(ns, &["ip", "link", "set", "lo", "up"]);
        }
        let h = lab.host.as_str();
        lab.exec(h, &["ip", "link", "add", "extbr7", "type", "bridge"]);
        lab.exec(
            h,
            &[
                "ip",
                "addr",
                "add",
                &format!("{GATEWAY}/24"),
                "dev",
                "extbr7",
            ],
        );
        lab.exec(h, &["ip", "link", "set", "extbr7", "up"]);
        for (port, far, mac) in [
            ("extap3", &lab.a, MAC_A),
            ("extap4", &lab.b, MAC_B),
            ("extap9", &lab.stray, "52:54:00:00:00:99"),
            ("extvx7", &lab.peer, "52:54:00:00:00:77"),
        ] {
            sh(&[
                "ip", "-n", h, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", far,
            ]);
            lab.exec(h, &["ip", "link", "set", port, "master", "extbr7"]);
            lab.exec(h, &["ip", "link", "set", port, "up"]);
            lab.exec(far, &["ip", "link", "set", "eth0", "address", mac]);
            lab.exec(far, &["ip", "link", "set", "eth0", "up"]);
        }
        // The world: reached by routing through the host.
        sh(&[
            "ip", "-n", h, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns",
            &lab.world,
        ]);
        lab.exec(h, &["ip", "addr", "add", "10.251.0.1/30", "dev", "up0"]);
        lab.exec(h, &["ip", "link", "set", "up0", "up"]);
        lab.sysctl(h, "net/ipv4/ip_forward", "1");
        for to in [WORLD, PLATFORM] {
            lab.exec(
                h,
                &[
                    "ip",
                    "route",
                    "add",
                    &format!("{to}/32"),
                    "via",
                    "10.251.0.2",
                ],
            );
        }
        let w = lab.world.as_str();
        lab.exec(w, &["ip", "addr", "add", "10.251.0.2/30", "dev", "eth0"]);
        lab.exec(w, &["ip", "link", "set", "eth0", "up"]);
        for address in [WORLD, PLATFORM] {
            lab.exec(
                w,
                &["ip", "addr", "add", &format!("{address}/32"), "dev", "lo"],
            );
        }
        lab.exec(w, &["ip", "route", "add", "default", "via", "10.251.0.1"]);
        lab
    }

    fn all(&self) -> [&String; 6] {
        [
            &self.host,
            &self.a,
            &self.b,
            &self.stray,
            &self.peer,
            &self.world,
        ]
    }

    /// Writes `/proc/sys/<key>` as seen in `ns` (its own network settings).
    fn sysctl(&self, ns: &str, key: &str, value: &str) {
        self.exec(
            ns,
            &["sh", "-c", &format!("echo {value} > /proc/sys/{key}")],
        );
    }

    fn exec(&self, ns: &str, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", ns];
        all.extend_from_slice(args);
        sh(&all)
    }

    fn nft(&self, script: &str) {
        nft_in(&self.host, script);
    }

    fn send(&self, from: &str, dst: &str, src: &str, tags: &str, kind: &[&str]) {
        let mut args = vec!["python3", "-c", SEND_FRAME, "eth0", dst, src, tags];
        args.extend_from_slice(kind);
        self.exec(from, &args);
    }

    fn counter(&self, name: &str) -> u64 {
        let out = self.exec(
            &self.host,
            &["nft", "list", "counter", "bridge", "observe", name],
        );
        out.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no packets in {out}"))
    }

    /// How many frames `send` made `counter` count: an admitted frame from `a` (a sentinel)
    /// follows it, and once the sentinel is counted, so is anything sent before it.
    fn admitted(&self, counter: &str, send: impl FnOnce()) -> u64 {
        let (before, sentinels) = (self.counter(counter), self.counter("sentinel"));
        send();
        self.send(
            &self.a,
            BROADCAST,
            MAC_A,
            "-",
            &["ip", IP_A, "10.64.6.255", "9", "9"],
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.counter("sentinel") == sentinels {
            assert!(
                Instant::now() < deadline,
                "the sentinel frame never arrived"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.counter(counter) - before
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.all() {
            remove_netns(ns);
        }
    }
}

fn nic(server_id: i64, mac: &str, address: &str) -> Nic {
    Nic {
        server_id,
        mac: mac.into(),
        address: address.parse().unwrap(),
        hostname: format!("s{server_id}"),
        firewall: None,
    }
}

/// Counts what passed the product's rules (a later base chain of the same hook).
const OBSERVE: &str = r#"
table bridge observe {
  counter sentinel {}
  counter from_a {}
  counter from_stray {}
  counter from_tunnel {}
  chain admitted {
    type filter hook prerouting priority 0; policy accept;
    iifname "extap3" udp dport 9 counter name "sentinel" accept
    iifname "extap3" counter name "from_a"
    iifname "extap9" counter name "from_stray"
    iifname "extvx7" counter name "from_tunnel"
  }
}
"#;

#[test]
fn only_a_nics_own_untagged_ipv4_and_arp_pass_its_tap_and_tunnels_carry_only_remote_nics() {
    let lab = Lab::create();
    let plan = NetworkPlan {
        vlans: vec![VlanNet {
            vlan_id: 7,
            subnet: "10.64.6.0/24".parse().unwrap(),
            nics: vec![nic(3, MAC_A, IP_A), nic(4, MAC_B, IP_B)],
            remote_nics: vec![nic(5, MAC_C, IP_C)],
        }],
        forwards: Vec::new(),
        tunnel: Some(Tunnel {
            local: "10.253.0.1".parse().unwrap(),
            peers: vec!["10.253.0.2".parse().unwrap()],
        }),
        platform: vec![PLATFORM.parse().unwrap()],
    };
    let config = FirewallConfig {
        metadata_port: 8775,
        egress: true,
        pool: "10.64.0.0/10".parse().unwrap(),
        deny: vec!["10.251.0.0/30".parse().unwrap()],
        underlay: Some("up0".into()),
    };
    lab.nft(&ruleset(&plan, &config));
    lab.nft(OBSERVE);

    let a = lab.a.as_str();
    let ip = |src: &'static str, dport: &'static str| ["ip", src, "10.64.6.255", "1000", dport];
    // (what, from, source MAC, tags, frame, admitted)
    type Probe<'a> = (&'a str, &'a str, &'a str, &'a str, Vec<&'a str>, u64);
    let probes: Vec<Probe> = vec![
        ("its own IPv4", a, MAC_A, "-", ip(IP_A, "7").to_vec(), 1),
        (
            "its own ARP",
            a,
            MAC_A,
            "-",
            vec!["arp", MAC_A, IP_A, GATEWAY],
            1,
        ),
        (
            "DHCP discovery from 0.0.0.0",
            a,
            MAC_A,
            "-",
            vec!["ip", "0.0.0.0", "255.255.255.255", "68", "67"],
            1,
        ),
        (
            "its own IPv4 tagged with VLAN 0",
            a,
            MAC_A,
            "8100:0",
            ip(IP_A, "7").to_vec(),
            0,
        ),
        (
            "its own IPv4 tagged with VLAN 5",
            a,
            MAC_A,
            "8100:5",
            ip(IP_A, "7").to_vec(),
            0,
        ),
        (
            "its own IPv4 in 802.1ad",
            a,
            MAC_A,
            "88a8:5",
            ip(IP_A, "7").to_vec(),
            0,
        ),
        ("QinQ", a, MAC_A, "88a8:5,8100:0", ip(IP_A, "7").to_vec(), 0),
        (
            "ARP tagged with VLAN 0",
            a,
            MAC_A,
            "8100:0",
            vec!["arp", MAC_A, IP_A, GATEWAY],
            0,
        ),
        (
            "the neighbour's address",
            a,
            MAC_A,
            "-",
            ip(IP_B, "7").to_vec(),
            0,
        ),
        (
            "the neighbour's MAC and address",
            a,
            MAC_B,
            "-",
            ip(IP_B, "7").to_vec(),
            0,
        ),
        (
            "the neighbour's MAC and address, tagged with VLAN 0",
            a,
            MAC_B,
            "8100:0",
            ip(IP_B, "7").to_vec(),
            0,
        ),
        (
            "the neighbour's MAC and address, tagged with VLAN 5",
            a,
            MAC_B,
            "8100:5",
            ip(IP_B, "7").to_vec(),
            0,
        ),
        (
            "a foreign address",
            a,
            MAC_A,
            "-",
            ip("203.0.113.9", "7").to_vec(),
            0,
        ),
        (
            "ARP for the neighbour",
            a,
            MAC_A,
            "-",
            vec!["arp", MAC_A, IP_B, GATEWAY],
            0,
        ),
        (
            "ARP with the neighbour's MAC",
            a,
            MAC_B,
            "-",
            vec!["arp", MAC_B, IP_B, GATEWAY],
            0,
        ),
        ("IPv6", a, MAC_A, "-", vec!["ipv6"], 0),
        ("LLDP", a, MAC_A, "-", vec!["lldp"], 0),
        ("STP", a, MAC_A, "-", vec!["stp"], 0),
    ];
    let mut wrong = Vec::new();
    for (what, from, src, tags, frame, expected) in &probes {
        let got = lab.admitted("from_a", || {
            lab.send(from, BROADCAST, src, tags, frame);
        });
        if got != *expected {
            wrong.push(format!("{what}: {got} admitted, expected {expected}"));
        }
    }
    // A DHCP server's answer (source port 67) from the tap's own address.
    let got = lab.admitted("from_a", || {
        lab.send(
            a,
            BROADCAST,
            MAC_A,
            "-",
            &["ip", IP_A, "255.255.255.255", "67", "68"],
        );
    });
    if got != 0 {
        wrong.push(format!("a DHCP offer: {got} admitted"));
    }
    // A tap no plan names passes nothing, not even its own well-formed frames.
    let stray = lab.stray.as_str();
    for (what, frame) in [
        ("IPv4", vec!["ip", "10.64.6.50", "10.64.6.255", "1000", "7"]),
        (
            "ARP",
            vec!["arp", "52:54:00:00:00:99", "10.64.6.50", GATEWAY],
        ),
    ] {
        let got = lab.admitted("from_stray", || {
            lab.send(stray, BROADCAST, "52:54:00:00:00:99", "-", &frame)
        });
        if got != 0 {
            wrong.push(format!("an unnamed tap's {what}: {got} admitted"));
        }
    }
    // The tunnel: the VLAN's NICs on other nodes only, never a DHCP server, never a tag.
    let peer = lab.peer.as_str();
    for (what, src, tags, frame, expected) in [
        ("a remote NIC's IPv4", MAC_C, "-", ip(IP_C, "7").to_vec(), 1),
        (
            "a remote NIC's ARP",
            MAC_C,
            "-",
            vec!["arp", MAC_C, IP_C, GATEWAY],
            1,
        ),
        (
            "a remote NIC's IPv4, tagged",
            MAC_C,
            "8100:0",
            ip(IP_C, "7").to_vec(),
            0,
        ),
        (
            "a local NIC's identity",
            MAC_A,
            "-",
            ip(IP_A, "7").to_vec(),
            0,
        ),
        (
            "a remote MAC with another address",
            MAC_C,
            "-",
            ip(IP_B, "7").to_vec(),
            0,
        ),
        (
            "ARP for another address",
            MAC_C,
            "-",
            vec!["arp", MAC_C, IP_B, GATEWAY],
            0,
        ),
        (
            "a DHCP server",
            MAC_C,
            "-",
            vec!["ip", IP_C, "255.255.255.255", "67", "68"],
            0,
        ),
        (
            "DHCP discovery",
            MAC_C,
            "-",
            vec!["ip", "0.0.0.0", "255.255.255.255", "68", "67"],
            0,
        ),
        ("IPv6", MAC_C, "-", vec!["ipv6"], 0),
    ] {
        let got = lab.admitted("from_tunnel", || {
            lab.send(peer, BROADCAST, src, tags, &frame)
        });
        if got != expected {
            wrong.push(format!(
                "tunnel, {what}: {got} admitted, expected {expected}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// With egress on, a guest reaches the world but neither a tunnel's port there nor an
/// address the platform uses.
#[test]
fn a_guest_with_egress_reaches_neither_a_tunnel_port_nor_the_platform() {
    let lab = Lab::create();
    let plan = NetworkPlan {
        vlans: vec![VlanNet {
            vlan_id: 7,
            subnet: "10.64.6.0/24".parse().unwrap(),
            nics: vec![nic(3, MAC_A, IP_A)],
            remote_nics: Vec::new(),
        }],
        platform: vec![PLATFORM.parse().unwrap()],
        ..NetworkPlan::default()
    };
    let config = FirewallConfig {
        metadata_port: 8775,
        egress: true,
        pool: "10.64.0.0/10".parse().unwrap(),
        deny: vec!["10.251.0.0/30".parse().unwrap()],
        underlay: None,
    };
    lab.nft(&ruleset(&plan, &config));
    let a = lab.a.as_str();
    lab.exec(
        a,
        &["ip", "addr", "add", &format!("{IP_A}/24"), "dev", "eth0"],
    );
    lab.exec(a, &["ip", "route", "add", "default", "via", GATEWAY]);
    let (mut listener, said) = listen(&lab.world);

    // A tunnel's port, then a port beside it: once the second arrived, so would the first.
    lab.exec(
        a,
        &[
            "python3",
            "-c",
            "import os, socket, sys\nos.sched_setaffinity(0, {0})\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             for port in (4789, 4790): s.sendto(b'x' * 16, (sys.argv[1], port))",
            WORLD,
        ],
    );
    let mut heard = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !heard.iter().any(|l: &String| l.starts_with("UDP 4790")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match said.recv_timeout(left) {
            Ok(line) => heard.push(line),
            Err(_) => panic!("nothing to UDP 4790 arrived in the world: {heard:?}"),
        }
    }
    assert!(
        !heard.iter().any(|l| l.starts_with("UDP 4789")),
        "a guest's packet to UDP 4789 left the host: {heard:?}"
    );
    // Masqueraded: it arrives as the host.
    assert!(
        heard.contains(&"UDP 4790 10.251.0.1".to_string()),
        "{heard:?}"
    );

    let connects = |to: &str| {
        Command::new("ip")
            .args(["netns", "exec", a, "python3", "-c"])
            .arg("import socket, sys\nsocket.create_connection((sys.argv[1], 5432), timeout=3)")
            .arg(to)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(connects(WORLD), "egress is on: the world is reachable");
    assert!(
        !connects(PLATFORM),
        "an address the platform uses is never reachable"
    );
    let _ = listener.kill();
    let _ = listener.wait();
}

/// [`WORLD_LISTENER`] in `ns`, and its lines once it is ready.
fn listen(ns: &str) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-u", "-c", WORLD_LISTENER])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(20));
    assert_eq!(ready.as_deref(), Ok("READY"), "the world's listener");
    (child, rx)
}
