//! What a customer's VM can reach on its network, tried from inside a real Linux guest (issue
//! 10): Debian's kernel and a busybox initramfs the test builds, made a bootable disk with
//! `fsmaker`, fetched with FetchDisk, attached to a server with a VLAN and started through the
//! API. The guest's `/init` gets an address by DHCP, reads its metadata document the way the
//! book tells customers to (URL and secret from fw_cfg), then tries TCP connections to the
//! host: the API's port, PostgreSQL and a port this test listens on, on the host's loopback as
//! user-mode networking shows it (10.0.2.2) and on the host's own address. It prints what it
//! found on the serial console and powers off; the test reads it with GetConsoleLog.
//!
//! Needs `linux-image-amd64` and `busybox-static` (scripts/test.sh installs them), and root
//! (Debian's `/boot/vmlinuz-*` is readable by root only).

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::support::guest::{guest_disk_with, guest_init, qemu_options};
use crate::support::test_app::Boot;
use crate::support::{Backend, TestApp};

/// Boot under TCG (KVM can hang a Linux guest on nested hosts), DHCP, metadata, probes.
const GUEST_TIMEOUT: Duration = Duration::from_secs(240);
const DONE: &str = "GUEST DONE";

/// The guest's `/init`. Probes come from the kernel command line (`probe=HOST:PORT`).
const INIT: &str = guest_init!(
    r#"echo "GUEST INIT"
for m in $(cat /etc/modules); do insmod /lib/modules/$m.ko || echo "INSMOD FAILED $m"; done
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -s /etc/udhcpc.sh -q -n -t 5 -T 2 >/dev/null 2>&1
echo "ADDR $(cat /tmp/addr 2>/dev/null)"
F=/sys/firmware/qemu_fw_cfg/by_name/opt/com.extility
url=$(cat $F/metadata-url/raw)
token=$(cat $F/metadata-token/raw)
echo "URL $url"
hp=${url#http://}; path=/${hp#*/}; hp=${hp%%/*}; host=${hp%:*}; port=${hp##*:}
[ "$port" = "$hp" ] && port=80
# The metadata forward never closes a connection (the guest does, once it has read the answer's
# Content-Length bytes, as curl and wget do): nc, which waits for the close, is cut off.
printf 'GET %s HTTP/1.0\r\nHost: %s\r\nX-Extility-Metadata-Token: %s\r\n\r\n' "$path" "$hp" "$token" | timeout 10 nc "$host" "$port" > /tmp/metadata
if grep -q '<initial-password>' /tmp/metadata; then
  echo "METADATA OK"
  echo "PASSWORD $(grep -o '<initial-password>[^<]*' /tmp/metadata | cut -d '>' -f 2)"
else
  echo "METADATA FAILED: $(head -c 300 /tmp/metadata)"
fi
printf 'POST /api/v1/ListServers HTTP/1.0\r\nHost: %s\r\n\r\n' "$hp" | timeout 10 nc "$host" "$port" > /tmp/other
echo "OTHER REQUEST: $(head -n 1 /tmp/other)"
for t in $(cat /proc/cmdline); do
  case "$t" in probe=*)
    p=${t#probe=}; h=${p%:*}; pt=${p##*:}
    if nc -w 3 "$h" "$pt" </dev/null >/dev/null 2>&1; then echo "OPEN $h $pt"; else echo "CLOSED $h $pt"; fi;;
  esac
done
echo "GUEST DONE"
poweroff -f
"#
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_reaches_its_metadata_and_nothing_of_the_host() {
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let app = TestApp::start_with(Backend::Sqlite, qemu_options(&[])).await;
    assert!(
        app.server.log_text().contains(
            "guests get confined user-mode networking: DHCP and the metadata service only"
        ),
        "the log says how guests are networked: {}",
        app.server.log_text()
    );

    // Something of the host's that a confined guest must not reach: a port open on every
    // address (loopback and the host's own).
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let open_port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    let api_port: u16 = app.server.url.rsplit(':').next().unwrap().parse().unwrap();
    let mut probes = vec![
        ("10.0.2.2".to_string(), api_port),
        ("10.0.2.2".to_string(), 5432),
        ("10.0.2.2".to_string(), open_port),
        // The user network's DNS forwarder (TCP): cut too.
        ("10.0.2.3".to_string(), 53),
    ];
    match host_address() {
        Some(ip) => {
            probes.push((ip.to_string(), open_port));
            probes.push((ip.to_string(), api_port));
        }
        None => eprintln!(
            "guest_network: this host has no non-loopback IPv4 address; only its loopback \
             (10.0.2.2) is probed"
        ),
    }
    let append = probes
        .iter()
        .map(|(h, p)| format!("probe={h}:{p}"))
        .collect::<Vec<_>>()
        .join(" ");

    let disk_image = guest_disk(app.dir.path(), &format!("quiet {append}"));
    let disk = app.fetch_guest(&disk_image, "linux guest").await;
    let vlan = app.vlan("lan").await;
    let server = Boot {
        name: "probe",
        vlan_id: vlan,
        ..Boot::default()
    };
    let server_id = app.boot(&disk, server).await;

    let log = app
        .guest_says("guest_network", server_id, DONE, GUEST_TIMEOUT)
        .await;
    let lines: Vec<&str> = log.lines().map(str::trim).collect();

    let addr = lines
        .iter()
        .find_map(|l| l.strip_prefix("ADDR "))
        .unwrap_or_default();
    assert!(
        addr.starts_with("10.0.2."),
        "an address by DHCP ({addr:?}): {log}"
    );
    assert!(
        lines.contains(&"URL http://10.0.2.100/metadata/v1/server.xml"),
        "{log}"
    );
    assert!(lines.contains(&"METADATA OK"), "{log}");
    let password = app
        .alice()
        .call("GetServer", json!({"server_id": server_id}))
        .await["initial_password"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        lines.contains(&format!("PASSWORD {password}").as_str()),
        "the guest read its own first-boot password: {log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("OTHER REQUEST: HTTP/1.0 403")),
        "the metadata forward serves the metadata document only: {log}"
    );
    for (host, port) in &probes {
        assert!(
            lines.contains(&format!("CLOSED {host} {port}").as_str()),
            "{host}:{port} must be out of the guest's reach: {log}"
        );
    }
    assert!(
        !lines.iter().any(|l| l.starts_with("OPEN ")),
        "nothing of the host is reachable: {log}"
    );
}

/// A bootable disk: an ext4 file system with nothing in it, Debian's kernel and the test's
/// initramfs, GRUB by `fsmaker`.
fn guest_disk(dir: &Path, append: &str) -> PathBuf {
    guest_disk_with(dir, INIT, append)
}

/// A non-loopback, non-link-local IPv4 address of this host, if it has one.
fn host_address() -> Option<Ipv4Addr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, which is walked read-only and freed once.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut found = None;
        let mut cur = list;
        while !cur.is_null() {
            let ifa = &*cur;
            if !ifa.ifa_addr.is_null() && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_loopback() && !ip.is_link_local() {
                    found = Some(ip);
                    break;
                }
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(list);
        found
    }
}
