//! Servers under QEMU through the API, end to end: boot media built by the test are fetched
//! with FetchDisk from an HTTP server inside the test, attached to a server made from image 66,
//! and booted; the test watches the serial console through GetConsoleLog.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::boot_media::{ACPI_PRESSED, ACPI_READY, BOOT_TIMEOUT, boot_sector, iso};
use crate::support::catalogue::{BLANK_IMAGE, DISK_20GB, SERVER_1CPU_1GB};
use crate::support::fetch_disk::{disks, fetch, fetch_args};
use crate::support::image_server::ImageServer;
use crate::support::{
    Api, Backend, ServerOptions, Store, TestApp, TestDatabase, binary, db_test, kill_vms, run_php,
    running_vms, storage_test,
};

/// A server on the QEMU driver that may fetch from the test's loopback HTTP server.
pub(crate) async fn start_app(backend: Backend) -> TestApp {
    start_app_on(backend, Store::Files).await
}

async fn start_app_on(backend: Backend, store: Store) -> TestApp {
    TestApp::start_on_with(
        backend,
        store,
        ServerOptions {
            args: [
                "--hypervisor",
                "qemu",
                "--allow-fetch-from",
                "127.0.0.0/8",
                // StopServer 1 tests use guests that honour ACPI: the guest ends them.
                "--vm-shutdown-timeout",
                "600",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        },
    )
    .await
}

/// A hard disk image that boots and prints `marker`: the boot sector, padded to 4 KiB (the
/// platform writes whole 4 KiB blocks).
pub(crate) fn disk_image(app: &TestApp, marker: &str, acpi: bool) -> Vec<u8> {
    let mut bytes = boot_sector(app.dir.path(), marker, acpi);
    bytes.resize(4096, 0);
    bytes
}

fn iso_image(app: &TestApp, marker: &str, acpi: bool) -> Vec<u8> {
    std::fs::read(iso(app.dir.path(), marker, acpi)).unwrap()
}

/// FetchDisk onto a 1 GB disk offer, as a disk; returns the new disk.
pub(crate) async fn fetch_disk(api: &Api, url: &str, name: &str, vdc_id: i64) -> Value {
    api.job_ok(fetch(api, fetch_args(url, vdc_id, name)).await)
        .await;
    let disks = disks(api, vdc_id).await;
    disks
        .iter()
        .find(|d| d["disk_name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no disk named {name} after FetchDisk: {disks:?}"))
}

/// CreateServer from image 66 (blank boot disk) with the Appendix 1 offers.
pub(crate) async fn create_server(api: &Api, vdc_id: i64, vlan_id: i64, name: &str) -> i64 {
    let server = api
        .call(
            "CreateServer",
            json!({"vdc_id": vdc_id, "vlan_id": vlan_id, "server_name": name,
                   "image_id": BLANK_IMAGE, "server_productoffer_id": SERVER_1CPU_1GB,
                   "disk_productoffer_ids": [DISK_20GB]}),
        )
        .await;
    server["server_id"].as_i64().unwrap()
}

pub(crate) async fn attach(api: &Api, server_id: i64, disk: &Value, index: Option<i64>) {
    let mut args = json!({"server_id": server_id, "disk_id": disk["disk_id"]});
    if let Some(index) = index {
        args["index"] = json!(index);
    }
    assert_eq!(api.call("AttachDisk", args).await["result"], 1);
}

async fn status(api: &Api, server_id: i64) -> Value {
    api.call("GetServer", json!({"server_id": server_id})).await
}

pub(crate) async fn start(api: &Api, server_id: i64) {
    let job = api
        .call("StartServer", json!({"server_id": server_id}))
        .await;
    api.job_ok(job["job_id"].as_i64().unwrap()).await;
    assert_eq!(status(api, server_id).await["status"], 2);
}

async fn stop(api: &Api, server_id: i64, method: i64) {
    let job = api
        .call(
            "StopServer",
            json!({"server_id": server_id, "stop_method": method}),
        )
        .await;
    api.job_ok(job["job_id"].as_i64().unwrap()).await;
    assert_eq!(status(api, server_id).await["status"], 5);
}

async fn console(api: &Api, server_id: i64) -> String {
    let log = api
        .call("GetConsoleLog", json!({"server_id": server_id}))
        .await;
    log["console_log"].as_str().unwrap().to_string()
}

/// Polls `check` until it gives a value or `timeout` has passed.
async fn poll<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Waits until the server's console shows `text`; returns the console log.
pub(crate) async fn wait_console(api: &Api, server_id: i64, text: &str) -> String {
    poll(
        BOOT_TIMEOUT,
        &format!("'{text}' on the console"),
        || async {
            let log = console(api, server_id).await;
            if log.contains(text) {
                Ok(log)
            } else {
                Err(log)
            }
        },
    )
    .await
}

async fn boots_a_fetched_disk(backend: Backend, store: Store) {
    let app = start_app_on(backend, store).await;
    let files = ImageServer::start().await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let url = files.put_data("boot.img", disk_image(&app, "FETCHED-DISK-BOOTS", false));
    let disk = fetch_disk(&alice, &url, "boot sector", vdc).await;
    assert_eq!(disk["media"], "disk");
    let server_id = create_server(&alice, vdc, -1, "disk-boot").await;
    // At index 0: the BIOS boots the first hard disk, and image 66's disk is blank.
    attach(&alice, server_id, &disk, Some(0)).await;
    start(&alice, server_id).await;
    wait_console(&alice, server_id, "FETCHED-DISK-BOOTS").await;
    let vms = running_vms(&app.server.vms_dir());
    assert_eq!(vms.len(), 1);
    // On RBD, QEMU reads the disk from the pool through librbd, as raw.
    let command_line = std::fs::read(format!("/proc/{}/cmdline", vms[0])).unwrap();
    let command_line = String::from_utf8_lossy(&command_line).replace('\0', " ");
    assert_eq!(
        command_line.contains("format=raw,file.driver=rbd,file.pool="),
        store == Store::Rbd,
        "{command_line}"
    );

    let err = app
        .bob()
        .fail("GetConsoleLog", json!({"server_id": server_id}))
        .await;
    assert_eq!(err.code, "NOT_FOUND");
    let err = alice
        .fail(
            "DetachDisk",
            json!({"server_id": server_id, "disk_id": disk["disk_id"]}),
        )
        .await;
    assert_eq!(err.code, "CONFLICT", "no hot-unplug: {err:?}");
    let err = alice
        .fail("DeleteDisk", json!({"disk_id": disk["disk_id"]}))
        .await;
    assert_eq!(err.code, "CONFLICT", "an attached disk stays: {err:?}");

    stop(&alice, server_id, 2).await;
    assert!(
        running_vms(&app.server.vms_dir()).is_empty(),
        "StopServer leaves no QEMU"
    );
    assert!(
        console(&alice, server_id)
            .await
            .contains("FETCHED-DISK-BOOTS"),
        "the console log of the last boot stays readable"
    );
}
storage_test!(boots_a_fetched_disk, boots_a_fetched_disk);

async fn the_cd_boots_before_the_disk(backend: Backend, store: Store) {
    let app = start_app_on(backend, store).await;
    let files = ImageServer::start().await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let disk_url = files.put_data("disk.img", disk_image(&app, "BOOTED-FROM-DISK", false));
    let iso_url = files.put_data("install.iso", iso_image(&app, "BOOTED-FROM-CD", true));
    let disk = fetch_disk(&alice, &disk_url, "system disk", vdc).await;
    let cd = fetch_disk(&alice, &iso_url, "install cd", vdc).await;
    assert_eq!(cd["media"], "iso", "FetchDisk recognises an ISO: {cd}");
    let server_id = create_server(&alice, vdc, -1, "installer").await;
    attach(&alice, server_id, &disk, Some(0)).await;
    attach(&alice, server_id, &cd, None).await;
    let disks = status(&alice, server_id).await["disks"].clone();
    assert_eq!(disks[0]["disk_id"], disk["disk_id"]);
    assert_eq!(disks[2]["disk_id"], cd["disk_id"]);

    start(&alice, server_id).await;
    let log = wait_console(&alice, server_id, ACPI_READY).await;
    assert!(log.contains("BOOTED-FROM-CD"), "{log}");
    assert!(!log.contains("BOOTED-FROM-DISK"), "CD first: {log}");

    // StopServer 1: the guest gets the ACPI power button and powers itself off.
    stop(&alice, server_id, 1).await;
    assert!(console(&alice, server_id).await.contains(ACPI_PRESSED));
    assert!(running_vms(&app.server.vms_dir()).is_empty());

    // Installed: without the CD the hard disk boots, on a fresh console.
    alice
        .call(
            "DetachDisk",
            json!({"server_id": server_id, "disk_id": cd["disk_id"]}),
        )
        .await;
    start(&alice, server_id).await;
    let log = wait_console(&alice, server_id, "BOOTED-FROM-DISK").await;
    assert!(!log.contains("BOOTED-FROM-CD"), "{log}");
    stop(&alice, server_id, 2).await;
}
storage_test!(the_cd_boots_before_the_disk, the_cd_boots_before_the_disk);

async fn a_running_vm_survives_a_crash_of_extility(backend: Backend) {
    let mut app = start_app(backend).await;
    let files = ImageServer::start().await;
    let vdc = app.alice.vdc_id;
    let url = files.put_data("boot.img", disk_image(&app, "STILL-RUNNING", false));
    let alice = app.alice();
    let disk = fetch_disk(&alice, &url, "boot sector", vdc).await;
    let server_id = create_server(&alice, vdc, -1, "survivor").await;
    attach(&alice, server_id, &disk, Some(0)).await;
    start(&alice, server_id).await;
    wait_console(&alice, server_id, "STILL-RUNNING").await;
    let vms = running_vms(&app.server.vms_dir());
    assert_eq!(vms.len(), 1);

    app.server.kill9();
    assert_eq!(
        running_vms(&app.server.vms_dir()),
        vms,
        "the VM outlives extility"
    );
    app.server.restart();
    let alice = app.alice();
    assert_eq!(status(&alice, server_id).await["status"], 2);
    assert_eq!(running_vms(&app.server.vms_dir()), vms, "the same QEMU");
    assert!(console(&alice, server_id).await.contains("STILL-RUNNING"));
    // Under supervision again: StopServer reaches it.
    stop(&alice, server_id, 2).await;
    assert!(running_vms(&app.server.vms_dir()).is_empty());

    // A VM that dies while extility is down is found stopped, never a stale "running".
    start(&alice, server_id).await;
    wait_console(&alice, server_id, "STILL-RUNNING").await;
    app.server.kill9();
    kill_vms(&app.server.vms_dir());
    poll(
        Duration::from_secs(30),
        "the killed QEMU to be gone",
        || async {
            let left = running_vms(&app.server.vms_dir());
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    )
    .await;
    app.server.restart();
    let alice = app.alice();
    let server = status(&alice, server_id).await;
    assert_eq!(server["status"], 5, "{server}");
}
db_test!(
    a_running_vm_survives_a_crash_of_extility,
    a_running_vm_survives_a_crash_of_extility
);

async fn a_vm_that_dies_is_noticed(backend: Backend) {
    let app = start_app(backend).await;
    let files = ImageServer::start().await;
    let vdc = app.alice.vdc_id;
    let url = files.put_data("boot.img", disk_image(&app, "ABOUT-TO-DIE", false));
    let alice = app.alice();
    let disk = fetch_disk(&alice, &url, "boot sector", vdc).await;
    let server_id = create_server(&alice, vdc, -1, "victim").await;
    attach(&alice, server_id, &disk, Some(0)).await;
    start(&alice, server_id).await;
    wait_console(&alice, server_id, "ABOUT-TO-DIE").await;
    kill_vms(&app.server.vms_dir());
    let server = poll(Duration::from_secs(60), "the server in error", || async {
        let server = status(&alice, server_id).await;
        if server["status"] == 1 {
            Ok(server)
        } else {
            Err(server.to_string())
        }
    })
    .await;
    let reason = server["status_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("killed"), "{server}");
    // It can be started again.
    start(&alice, server_id).await;
    wait_console(&alice, server_id, "ABOUT-TO-DIE").await;
    stop(&alice, server_id, 2).await;
}
db_test!(a_vm_that_dies_is_noticed, a_vm_that_dies_is_noticed);

/// The metadata document as `token` reads it: (HTTP status, body).
async fn metadata(
    app: &TestApp,
    token: Option<&str>,
    basic: Option<(&str, &str)>,
) -> (u16, String) {
    let mut request =
        reqwest::Client::new().get(format!("{}/metadata/v1/server.xml", app.server.url));
    if let Some(token) = token {
        request = request.header("X-Extility-Metadata-Token", token);
    }
    if let Some((user, password)) = basic {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().await.unwrap();
    (
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
    )
}

/// The line `key=value` of a console log.
fn console_value(log: &str, key: &str) -> Option<String> {
    log.lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim().to_string())
}

async fn metadata_is_for_that_vm_alone(backend: Backend) {
    let app = start_app(backend).await;
    let files = ImageServer::start().await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let vlan = alice
        .call("CreateVLAN", json!({"vdc_id": vdc, "vlan_name": "lan"}))
        .await["vlan_id"]
        .as_i64()
        .unwrap();
    let url = files.put_data("boot.img", disk_image(&app, "READS-METADATA", false));
    let disk = fetch_disk(&alice, &url, "boot sector", vdc).await;
    let server_id = create_server(&alice, vdc, vlan, "with-metadata").await;
    attach(&alice, server_id, &disk, Some(0)).await;
    start(&alice, server_id).await;
    // The guest prints what it read from fw_cfg; the secret is 64 hex digits.
    let log = poll(
        BOOT_TIMEOUT,
        "the metadata secret on the console",
        || async {
            let log = console(&alice, server_id).await;
            match console_value(&log, "metadata-token") {
                Some(token) if token.len() == 64 => Ok(log),
                _ => Err(log),
            }
        },
    )
    .await;
    let token = console_value(&log, "metadata-token").unwrap();
    assert_eq!(
        console_value(&log, "metadata-url").unwrap(),
        "http://10.0.2.100/metadata/v1/server.xml",
        "the guest reaches the metadata service at its forward on the user-mode network"
    );

    let server = status(&alice, server_id).await;
    let password = server["initial_password"].as_str().unwrap();
    let uuid = server["server_uuid"].as_str().unwrap();
    assert!(password.len() >= 12, "{server}");
    let (code, xml) = metadata(&app, Some(&token), None).await;
    assert_eq!(code, 200, "{xml}");
    assert!(
        xml.contains(&format!("<initial-password>{password}</initial-password>")),
        "{xml}"
    );
    assert!(
        xml.contains(&format!("<server-uuid>{uuid}</server-uuid>")),
        "{xml}"
    );
    assert!(
        xml.contains("<server-name>with-metadata</server-name>"),
        "{xml}"
    );
    assert!(xml.contains("<ssh-public-keys"), "{xml}");

    // Nobody else: no token, customers' credentials, a made-up token.
    let (code, body) = metadata(&app, None, None).await;
    assert_eq!(code, 401, "{body}");
    for (email, pass) in [
        (&app.alice.email, &app.alice.password),
        (&app.bob.email, &app.bob.password),
    ] {
        let (code, body) = metadata(&app, None, Some((email, pass))).await;
        assert_eq!(code, 401, "{body}");
        assert!(!body.contains(password));
    }
    let (code, body) = metadata(&app, Some(&"0".repeat(64)), None).await;
    assert_eq!(code, 403, "{body}");

    // Another server's VM reads its own document, not this one.
    let bob = app.bob();
    let bob_server = create_server(&bob, app.bob.vdc_id, -1, "bobs").await;
    start(&bob, bob_server).await;
    let bob_uuid = status(&bob, bob_server).await["server_uuid"]
        .as_str()
        .unwrap()
        .to_string();
    // What Bob's VM got through fw_cfg (its BIOS finds nothing to boot, so it cannot print it):
    // in its runtime directory, under /run when the server runs as root (a confined VM).
    let bob_token = crate::support::vm_runtime_dirs(&app.server.vms_dir(), &bob_uuid)
        .iter()
        .find_map(|dir| std::fs::read_to_string(dir.join("metadata-token")).ok())
        .expect("Bob's VM's metadata secret");
    let (code, xml) = metadata(&app, Some(bob_token.trim()), None).await;
    assert_eq!(code, 200, "{xml}");
    assert!(xml.contains(&bob_uuid), "{xml}");
    assert!(!xml.contains(password) && !xml.contains(uuid), "{xml}");

    // The secret ends with the VM.
    stop(&alice, server_id, 2).await;
    let (code, _) = metadata(&app, Some(&token), None).await;
    assert_eq!(code, 403);
    stop(&bob, bob_server, 2).await;
}
db_test!(metadata_is_for_that_vm_alone, metadata_is_for_that_vm_alone);

async fn appendix1_flow_boots_the_iso(backend: Backend) {
    let app = start_app(backend).await;
    let files = ImageServer::start().await;
    let iso_url = files.put_data(
        "ubuntu-10.04-desktop-amd64.iso",
        iso_image(&app, "APPENDIX-1-CD", false),
    );
    let wsdl = format!("{}/?wsdl", app.server.url);
    let (email, password) = (app.alice.email.clone(), app.alice.password.clone());
    let output = tokio::task::spawn_blocking(move || {
        run_php(
            "appendix1_boot.php",
            &[
                ("EXTILITY_USERNAME", &email),
                ("EXTILITY_PASSWORD", &password),
                ("EXTILITY_WSDL", &wsdl),
                ("EXTILITY_ISO_URL", &iso_url),
                ("EXTILITY_MARKER", "APPENDIX-1-CD"),
            ],
        )
    })
    .await
    .unwrap();
    assert!(output.contains("Disk Attached Success"), "{output}");
    assert!(output.contains("Console shows APPENDIX-1-CD"), "{output}");
    assert!(output.contains("Server stopped"), "{output}");
    assert!(running_vms(&app.server.vms_dir()).is_empty());
}
db_test!(appendix1_flow_boots_the_iso, appendix1_flow_boots_the_iso);

async fn auto_without_qemu_only_records(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        ServerOptions {
            args: vec!["--hypervisor".into(), "auto".into()],
            env: vec![("PATH".into(), "/nonexistent".into())],
            ..Default::default()
        },
    )
    .await;
    let log = app.server.log_text();
    assert!(log.contains("qemu-system-x86_64 is not on PATH"), "{log}");
    assert!(log.contains("hypervisor 'none'"), "{log}");
    let alice = app.alice();
    let server_id = create_server(&alice, app.alice.vdc_id, -1, "recorded").await;
    start(&alice, server_id).await;
    assert!(
        console(&alice, server_id)
            .await
            .contains("hypervisor 'none'")
    );
    assert!(running_vms(&app.server.vms_dir()).is_empty());
}
db_test!(
    auto_without_qemu_only_records,
    auto_without_qemu_only_records
);

async fn qemu_required_but_missing_refuses_to_serve(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(backend, dir.path()).await;
    let out = std::process::Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--hypervisor", "qemu"])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--database-url")
        .arg(&db.url)
        .env("PATH", "/nonexistent")
        .env_remove("EXTILITY_HYPERVISOR")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("qemu-system-x86_64 is not on PATH"),
        "{stderr}"
    );
}
db_test!(
    qemu_required_but_missing_refuses_to_serve,
    qemu_required_but_missing_refuses_to_serve
);
