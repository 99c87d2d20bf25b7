//! Issue 20's first finding, tried again with real guests: a busybox guest tags its frames
//! (802.1Q, VLAN ids 0 and 5) and wears its neighbour's address, with the neighbour's MAC and
//! with its own, and then a foreign address. It must not read the neighbour's metadata
//! document (the 169.254.169.254 redirect), change the host's neighbour entry for the
//! neighbour or its bridge's idea of where the neighbour's MAC is, nor get a packet with a
//! foreign source address out of the host: a "world" namespace counts what reaches it with
//! egress on. Untagged, as itself, the same guest reads its own metadata and reaches the world.

use serde_json::json;

use crate::support::guest::{GuestDisk, guest_init};
use crate::support::image_server::ImageServer;
use crate::tenant_networks::{Netns, WORLD, WORLD_PORT, boot, bridged_app, console, server, vlan};

/// The attacker is the guest whose address is the first of `attack=SELF,VICTIM_IP,VICTIM_MAC,
/// WORLD,PORT`; any other guest idles.
const INIT: &str = guest_init!(
    r#"echo "GUEST INIT"
for m in $(cat /etc/modules); do insmod /lib/modules/$m.ko || echo "INSMOD FAILED $m"; done
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -s /etc/udhcpc.sh -q -n -t 10 -T 2 >/dev/null 2>&1
ADDR=$(cat /tmp/addr 2>/dev/null)
GW=$(cat /tmp/router 2>/dev/null)
echo "ADDR $ADDR"
metadata() {
  printf 'GET /metadata/v1/server.xml HTTP/1.0\r\nHost: 169.254.169.254\r\n\r\n' \
    | nc -w 5 169.254.169.254 80 2>/dev/null | grep -o '<initial-password>[^<]*' | cut -d '>' -f 2
}
for t in $(cat /proc/cmdline); do
  case "$t" in attack=$ADDR,*)
    set -- $(echo "${t#attack=}" | tr ',' ' '); VIP=$2; VMAC=$3; WORLD=$4; WPORT=$5;;
  esac
done
if [ -n "$VIP" ]; then
  echo "OWN $(metadata)"
  GWMAC=$(ip neigh show $GW dev eth0 | grep -o 'lladdr [0-9a-f:]*' | cut -d ' ' -f 2)
  OWNMAC=$(cat /sys/class/net/eth0/address)
  echo "GATEWAY $GW $GWMAC"
  ip addr flush dev eth0
  for vid in 0 5; do
    vconfig add eth0 $vid >/dev/null || echo "VCONFIG FAILED $vid"
    dev=eth0.$vid
    for who in $VMAC,$VIP $OWNMAC,$VIP $OWNMAC,203.0.113.7; do
      mac=${who%,*}; ip=${who#*,}
      ip link set $dev down
      ip link set $dev address $mac
      ip addr flush dev $dev
      ip link set $dev up
      ip addr add $ip/32 dev $dev
      ip route replace default via $GW dev $dev onlink
      # The gateway's MAC is known: the tagged frames go out whatever ARP says.
      arp -i $dev -s $GW $GWMAC || echo "ARP ENTRY FAILED $dev"
      arping -q -U -c 2 -I $dev $ip
      arping -q -c 2 -I $dev -s $ip $GW
      got=$(metadata)
      if [ -n "$got" ]; then echo "STOLEN $vid $mac $ip $got"; else echo "REFUSED $vid $mac $ip"; fi
      nc -w 3 $WORLD $WPORT </dev/null >/dev/null 2>&1 && echo "WORLD REACHED $vid $mac $ip"
    done
    ip link del $dev
  done
  ip addr add $ADDR/24 dev eth0
  ip route replace default via $GW dev eth0
  until nc -w 3 $WORLD $WPORT </dev/null >/dev/null 2>&1; do sleep 1; done
  echo "WORLD OPEN"
  echo "OWN AGAIN $(metadata)"
fi
echo "GUEST DONE"
while :; do sleep 3600; done
"#
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_tags_its_frames_cannot_pass_for_its_neighbour() {
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let mut ns = Netns::create();
    ns.listen_in_world(WORLD_PORT);
    // The world counts connections to its listener by source: the host's (masqueraded
    // guests) and any other.
    let host = ns.toward_world();
    let world_nft = format!(
        "table inet observe {{\n  counter from_host {{}}\n  counter foreign {{}}\n  \
         chain seen {{\n    type filter hook prerouting priority 0; policy accept;\n    \
         tcp dport {WORLD_PORT} ip saddr {host} counter name \"from_host\"\n    \
         tcp dport {WORLD_PORT} ip saddr != {host} counter name \"foreign\"\n  }}\n}}\n"
    );
    let world = |args: &[&str]| {
        let mut all = vec!["ip", "netns", "exec", ns.world.as_str()];
        all.extend_from_slice(args);
        crate::tenant_networks::sh(&all)
    };
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), &world_nft).unwrap();
    world(&["nft", "-f", script.path().to_str().unwrap()]);
    let counted = |name: &str| -> u64 {
        world(&["nft", "list", "counter", "inet", "observe", name])
            .split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap()
    };

    let app = bridged_app(&ns, &["--guest-egress", "on"]).await;
    let vdc = app.alice.vdc_id;
    let lan = vlan(&app.alice(), vdc, "lan").await;
    let victim = server(app.alice(), vdc, &lan, "victim").await;
    let attacker = server(app.alice(), vdc, &lan, "attacker").await;
    let get = |id: i64| {
        let api = app.alice();
        async move { api.call("GetServer", json!({"server_id": id})).await }
    };
    let (v, a) = (get(victim.id).await, get(attacker.id).await);
    let victim_mac = v["mac_address"].as_str().unwrap().to_string();
    let attacker_mac = a["mac_address"].as_str().unwrap().to_string();

    let append = format!(
        "quiet attack={},{},{victim_mac},{WORLD},{WORLD_PORT}",
        attacker.address, victim.address
    );
    let disk = GuestDisk::new(INIT)
        .append(&append)
        .modules(&["llc", "stp", "garp", "mrp", "8021q"])
        .build(app.dir.path(), "spoofer");
    let files = ImageServer::start_on(&format!("{}:0", ns.outside)).await;
    let url = files.put_data("guest.img", std::fs::read(&disk).unwrap());
    futures::future::join_all([&victim, &attacker].map(|g| boot(g, vdc, &url))).await;
    let said = console(&attacker).await;
    eprintln!("tagged_spoofing: the attacker said:\n{}", said.join("\n"));
    let has = |line: &str| said.iter().any(|l| l == line);

    // It is the guest it says: untagged, as itself, it reads its own metadata and reaches
    // the world (so what it was refused, it was refused for its disguise).
    let own_password = a["initial_password"].as_str().unwrap();
    assert!(has(&format!("OWN {own_password}")), "{said:?}");
    assert!(has(&format!("OWN AGAIN {own_password}")), "{said:?}");
    assert!(has("WORLD OPEN"), "{said:?}");
    assert!(
        said.iter()
            .any(|l| l.starts_with("GATEWAY ")
                && l.split(' ').nth(2).is_some_and(|mac| mac.len() == 17)),
        "the gateway's MAC was known before the disguise: {said:?}"
    );
    assert!(
        !said
            .iter()
            .any(|l| l.contains("FAILED") || l.starts_with("ip: ") || l.starts_with("arp: ")),
        "every step of the disguise was taken: {said:?}"
    );
    for vid in [0, 5] {
        for (mac, ip) in [
            (&victim_mac, &victim.address),
            (&attacker_mac, &victim.address),
            (&attacker_mac, &"203.0.113.7".to_string()),
        ] {
            assert!(
                has(&format!("REFUSED {vid} {mac} {ip}")),
                "VLAN {vid} as {mac} {ip}: {said:?}"
            );
        }
    }
    let victim_password = v["initial_password"].as_str().unwrap();
    assert!(
        !said.iter().any(|l| l.contains(victim_password)),
        "the neighbour's metadata leaked: {said:?}"
    );
    assert!(
        !said.iter().any(|l| l.starts_with("WORLD REACHED")),
        "{said:?}"
    );

    // The host still knows the neighbour by its own MAC, and its bridge knows where that MAC
    // is: never the attacker's MAC for the neighbour's address, nor the neighbour's MAC on the
    // attacker's tap.
    let neigh = ns.exec(&["ip", "neigh", "show", &victim.address]);
    assert!(!neigh.contains(&attacker_mac), "{neigh}");
    let fdb = ns.exec(&[
        "bridge",
        "fdb",
        "show",
        "dev",
        &format!("extap{}", attacker.id),
    ]);
    assert!(!fdb.contains(&victim_mac), "{fdb}");
    // The world saw the guest only as the host (masqueraded), never from a foreign address.
    assert!(counted("from_host") > 0, "the control connection arrived");
    assert_eq!(
        counted("foreign"),
        0,
        "a foreign source address left the host"
    );
    drop(app);
}
