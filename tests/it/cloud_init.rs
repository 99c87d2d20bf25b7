//! The cloud-init NoCloud datasource (issue 12), read by a real Linux guest the way cloud-init
//! reads it: the guest finds `ds=nocloud-net;s=URL` in its SMBIOS serial number
//! (`/sys/class/dmi/id/product_serial`), fetches `meta-data`, `user-data`, `vendor-data` and
//! `network-config` from there with no secret (the VM's metadata forward vouches for it), and
//! prints them on its console. The test then checks them with cloud-init's own tools (Debian's
//! package `cloud-init`, which scripts/test.sh installs): `cloud-init schema` for the
//! user-data, `cloud-init devel net-convert` for the network config, and cloud-init's YAML
//! loader for the meta-data; and that they carry the server's host name, password (as a hash
//! of it) and SSH key. The guest also reads the Extility document without a secret, which
//! now lists the key.
//!
//! Needs `linux-image-amd64` and `busybox-static`, as the other guest tests.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use sha_crypt::{PasswordHashRef, PasswordVerifier, ShaCrypt};

use crate::support::catalogue::DISK_1GB;
use crate::support::fetch_disk::fetch;
use crate::support::guest::{GuestDisk, guest_init, qemu_options};
use crate::support::image_server::ImageServer;
use crate::support::test_app::{Boot, LAPTOP_KEY};
use crate::support::{Backend, TestApp};

const GUEST_TIMEOUT: Duration = Duration::from_secs(240);
const DONE: &str = "GUEST DONE";

/// The guest's `/init`: DHCP, then the datasource as cloud-init finds it.
const INIT: &str = guest_init!(
    r#"for m in $(cat /etc/modules); do insmod /lib/modules/$m.ko || echo "INSMOD FAILED $m"; done
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -s /etc/udhcpc.sh -q -n -t 5 -T 2 >/dev/null 2>&1
serial=$(cat /sys/class/dmi/id/product_serial)
echo "SERIAL $serial"
seed=${serial#*;s=}
for f in meta-data user-data vendor-data network-config; do
  if wget -q -O /tmp/$f "$seed$f"; then
    echo "BEGIN $f"; base64 /tmp/$f; echo "END $f"
  else
    echo "FAILED $f"
  fi
done
if wget -q -O /tmp/xml "${seed%nocloud/}server.xml"; then
  echo "BEGIN server.xml"; base64 /tmp/xml; echo "END server.xml"
fi
echo "GUEST DONE"
poweroff -f
"#
);

/// The text between `BEGIN name` and `END name` on the console, base64-decoded.
fn printed(log: &str, name: &str) -> Option<String> {
    let lines: Vec<&str> = log.lines().map(str::trim).collect();
    let start = lines.iter().position(|l| *l == format!("BEGIN {name}"))?;
    let end = start
        + lines[start..]
            .iter()
            .position(|l| *l == format!("END {name}"))?;
    let encoded: String = lines[start + 1..end].concat();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// Runs one of cloud-init's commands, which must succeed; its output.
fn cloud_init(args: &[&str]) -> String {
    let out = Command::new("cloud-init")
        .args(args)
        .output()
        .expect("running cloud-init (install the cloud-init package; scripts/test.sh does)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "cloud-init {args:?}: {text}");
    text
}

/// A YAML file as cloud-init's own loader reads it, as JSON.
fn cloud_init_yaml(path: &Path) -> Value {
    // Debian's python3, which has cloud-init's modules.
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(
            "import json, sys\nfrom cloudinit import util\n\
             print(json.dumps(util.load_yaml(open(sys.argv[1]).read())))",
        )
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_guest_finds_its_nocloud_datasource_and_it_passes_cloud_inits_checks() {
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let app = TestApp::start_with(Backend::Sqlite, qemu_options(&[])).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let dir = app.dir.path();

    // The customer's flow: fetch an image whose default user is `debian`, store a key, make a
    // server of the image with the key, start it.
    let disk = GuestDisk::new(INIT).append("quiet").build(dir, "nocloud");
    let files = ImageServer::start().await;
    let url = files.put_data("nocloud.img", std::fs::read(&disk).unwrap());
    let job = fetch(
        &alice,
        json!({"url": url, "name": "stock image", "disk_productoffer_id": DISK_1GB,
               "vdc_id": vdc, "make_image": true, "image_default_username": "debian"}),
    )
    .await;
    let image = alice.job_ok(job).await["item_id"].as_i64().unwrap();
    let public_key = LAPTOP_KEY;
    let key = app.laptop_key().await;
    let vlan = app.vlan("lan").await;
    let server = app
        .create_server(Boot {
            name: "Web Server #1",
            vlan_id: vlan,
            image_id: image,
            disk_offer: DISK_1GB,
            ssh_key_ids: vec![key],
            ..Boot::default()
        })
        .await;
    let server_id = server["server_id"].as_i64().unwrap();
    assert_eq!(server["initial_user"], "debian");
    let password = server["initial_password"].as_str().unwrap().to_string();
    app.start_server(server_id).await;

    let log = app.console_until(server_id, DONE, GUEST_TIMEOUT).await;
    assert!(
        log.contains("SERIAL ds=nocloud-net;s=http://10.0.2.100/metadata/v1/nocloud/"),
        "the SMBIOS serial announces the datasource: {log}"
    );
    assert!(!log.contains("FAILED"), "{log}");

    // meta-data: the instance and its host name.
    let documents = dir.join("nocloud");
    std::fs::create_dir_all(&documents).unwrap();
    let save = |name: &str| {
        let text = printed(&log, name).unwrap_or_else(|| panic!("{name} on the console: {log}"));
        let path = documents.join(name);
        std::fs::write(&path, &text).unwrap();
        (path, text)
    };
    let (meta_path, _) = save("meta-data");
    let meta = cloud_init_yaml(&meta_path);
    assert_eq!(meta["instance-id"], server["server_uuid"], "{meta}");
    assert_eq!(meta["local-hostname"], "web-server-1", "{meta}");

    // user-data: valid cloud-config, the password as a hash of it, the key for the user.
    let (user_path, user_text) = save("user-data");
    assert!(user_text.starts_with("#cloud-config\n"), "{user_text}");
    let checked = cloud_init(&["schema", "-c", user_path.to_str().unwrap()]);
    assert!(checked.contains("Valid cloud-config"), "{checked}");
    let user_data = cloud_init_yaml(&user_path);
    let chpasswd = &user_data["chpasswd"]["users"][0];
    assert_eq!(chpasswd["name"], "debian", "{user_data}");
    assert_eq!(chpasswd["type"], "hash", "{user_data}");
    let hash = chpasswd["password"].as_str().unwrap();
    assert!(
        !user_text.contains(&password),
        "only a hash of it: {user_text}"
    );
    let hash = PasswordHashRef::new(hash).unwrap();
    assert!(
        ShaCrypt::default()
            .verify_password(password.as_bytes(), hash)
            .is_ok(),
        "the hash is of the server's first-boot password"
    );
    assert_eq!(user_data["users"][1]["name"], "debian", "{user_data}");
    assert_eq!(
        user_data["users"][1]["ssh_authorized_keys"],
        json!([public_key])
    );
    assert_eq!(user_data["ssh_authorized_keys"], json!([public_key]));
    assert_eq!(user_data["hostname"], "web-server-1");

    // network-config: cloud-init turns it into Debian's configuration for the NIC.
    let (net_path, _) = save("network-config");
    let out_dir = documents.join("rendered");
    cloud_init(&[
        "devel",
        "net-convert",
        "--network-data",
        net_path.to_str().unwrap(),
        "--kind",
        "yaml",
        "--output-kind",
        "eni",
        "--distro",
        "debian",
        "--directory",
        out_dir.to_str().unwrap(),
    ]);
    let rendered = std::fs::read_to_string(out_dir.join("etc/network/interfaces.d/50-cloud-init"))
        .or_else(|_| std::fs::read_to_string(out_dir.join("etc/network/interfaces")))
        .unwrap();
    assert!(
        rendered.contains("dhcp"),
        "user-mode NICs use DHCP: {rendered}"
    );
    let mac = server["mac_address"].as_str().unwrap();
    let network = cloud_init_yaml(&net_path);
    assert_eq!(network["ethernets"]["eth0"]["match"]["macaddress"], mac);

    // vendor-data is there, and empty; the Extility document lists the key.
    assert_eq!(save("vendor-data").1, "");
    let (_, xml) = save("server.xml");
    assert!(
        xml.contains(&format!("<ssh-public-key>{public_key}</ssh-public-key>")),
        "{xml}"
    );
    assert!(xml.contains("<initial-user>debian</initial-user>"), "{xml}");
}
