//! Image hygiene through the API and the panel: who may check, clean and read reports
//! (customers are hostile), what ListImages shows before and after, `--publish-requires-clean`,
//! and, with the engine reading real file systems in libguestfs's appliance
//! (`support::hygiene_images`' fixtures, shared by the run): the planted findings found, a
//! cleaned copy clean and the original unchanged (on files and on Ceph RBD), a disk made from
//! the planted image checked with the same findings, a corrupt image unreadable, a server made
//! from a cleaned image booting, and the panel's Check and Clean. Each appliance run takes
//! tens of seconds under TCG: the tests make few.

use std::time::{Duration, Instant};

use extility::ops::storage::hygiene::OPERATION_NAMES;
use serde_json::{Value, json};

use crate::support::browser::Browser;
use crate::support::catalogue::{BLANK_IMAGE, DISK_1GB};
use crate::support::fetch_disk::fetch;
use crate::support::guest::{guest_init, qemu_options};
use crate::support::hygiene_images;
use crate::support::image_server::ImageServer;
use crate::support::server_db::ServerDb;
use crate::support::test_app::{Boot, screenshot_path};
use crate::support::{Api, Backend, ServerOptions, Store, TestApp, db_test, id, storage_test};

/// A server that fetches from the test's own HTTP server on loopback, with `extra` options.
async fn app(backend: Backend, extra: &[&str]) -> TestApp {
    app_on(backend, Store::Files, extra).await
}

async fn app_on(backend: Backend, store: Store, extra: &[&str]) -> TestApp {
    let mut args = vec!["--allow-fetch-from", "127.0.0.0/8"];
    args.extend(extra);
    let options = ServerOptions {
        args: args.into_iter().map(str::to_string).collect(),
        ..ServerOptions::default()
    };
    TestApp::start_on_with(backend, store, options).await
}

/// A private image of alice's holding `bytes`, fetched; returns its id.
async fn fetch_image(app: &TestApp, bytes: Vec<u8>, name: &str) -> i64 {
    let files = ImageServer::start().await;
    let url = files.put_data("image.img", bytes);
    let alice = app.alice();
    let job = fetch(
        &alice,
        json!({"url": url, "name": name, "disk_productoffer_id": DISK_1GB,
               "vdc_id": app.alice.vdc_id, "make_image": true}),
    )
    .await;
    id(&alice.job_ok(job).await, "item_id")
}

/// The image as `api` lists it.
async fn listed(api: &Api, image_id: i64) -> Value {
    let images = api.call("ListImages", json!({})).await;
    images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image_id"] == image_id)
        .cloned()
        .unwrap_or_else(|| panic!("image {image_id} is not listed: {images}"))
}

/// Who may check, clean and read: the owner does all; a customer the image is published to
/// reads its report and sees its status, but neither checks nor cleans it; anyone else sees
/// nothing (NOT_FOUND, like an id that does not exist). Bad arguments make no job.
async fn only_owners_check_and_receivers_read(backend: Backend) {
    let app = app(backend, &["--hypervisor", "none"]).await;
    let (alice, bob) = (app.alice(), app.bob());
    let (_, carol) = app.add_customer("carol@example.com", &[]);
    let image = fetch_image(&app, vec![0x5a; 1 << 20], "golden").await;

    let shown = listed(&alice, image).await;
    assert_eq!(shown["hygiene_status"], "not_checked", "{shown}");
    assert_eq!(shown["hygiene_severity"], Value::Null, "{shown}");
    let report = alice
        .call("GetImageReport", json!({"image_id": image}))
        .await;
    assert_eq!(report["status"], "not_checked", "{report}");
    assert_eq!(report["findings"], json!([]), "{report}");
    assert_eq!(report["checked"], Value::Null, "{report}");

    // Not bob's: it does not exist for him.
    for (op, args) in [
        ("CheckImage", json!({"image_id": image})),
        ("CleanImage", json!({"image_id": image})),
        ("GetImageReport", json!({"image_id": image})),
    ] {
        let err = bob.fail(op, args).await;
        assert_eq!(err.code, "NOT_FOUND", "{op}: {err:?}");
    }
    let disk = app.fetch_bytes(vec![0x11; 1 << 20], "alice's disk").await;
    let disk_id = id(&disk, "disk_id");
    for op in ["CheckDisk", "GetDiskReport"] {
        let err = bob.fail(op, json!({"disk_id": disk_id})).await;
        assert_eq!(err.code, "NOT_FOUND", "{op}: {err:?}");
    }
    let report = alice
        .call("GetDiskReport", json!({"disk_id": disk_id}))
        .await;
    assert_eq!(report["status"], "not_checked", "{report}");

    // Published to bob: he reads, he does not check or clean.
    alice
        .call(
            "PublishImage",
            json!({"image_id": image, "publish_to": app.bob.customer_uuid}),
        )
        .await;
    assert_eq!(listed(&bob, image).await["hygiene_status"], "not_checked");
    let report = bob.call("GetImageReport", json!({"image_id": image})).await;
    assert_eq!(report["image_id"], image);
    for op in ["CheckImage", "CleanImage"] {
        let err = bob.fail(op, json!({"image_id": image})).await;
        assert_eq!(err.code, "PERMISSION_DENIED", "{op}: {err:?}");
    }
    let err = carol
        .fail("GetImageReport", json!({"image_id": image}))
        .await;
    assert_eq!(err.code, "NOT_FOUND", "{err:?}");

    // The platform's blank image holds nothing; bad steps and paths are refused; no job.
    let err = alice
        .fail("CheckImage", json!({"image_id": BLANK_IMAGE}))
        .await;
    assert_eq!(err.code, "PERMISSION_DENIED", "{err:?}");
    let err = alice
        .fail(
            "CleanImage",
            json!({"image_id": image, "operations": ["format_disk"]}),
        )
        .await;
    assert_eq!(err.code, "INVALID_ARGUMENT", "{err:?}");
    assert!(err.message.contains("lock_passwords"), "{err:?}");
    let err = alice
        .fail(
            "CleanImage",
            json!({"image_id": image, "remove_paths": ["/root/../etc"]}),
        )
        .await;
    assert_eq!(err.code, "INVALID_ARGUMENT", "{err:?}");
    let jobs = alice.call("ListJobs", json!({})).await;
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .all(|j| j["job_type"] == "FetchDisk"),
        "{jobs}"
    );
}
db_test!(
    only_owners_check_and_receivers_read,
    only_owners_check_and_receivers_read
);

/// `--publish-requires-clean` refuses an image nobody checked, with IMAGE_NOT_CLEAN saying
/// what to do, and publishes nothing.
async fn publishing_requires_a_check(backend: Backend) {
    let app = app(
        backend,
        &["--hypervisor", "none", "--publish-requires-clean"],
    )
    .await;
    let (alice, bob) = (app.alice(), app.bob());
    let image = fetch_image(&app, vec![0x5a; 1 << 20], "unchecked").await;
    let err = alice
        .fail(
            "PublishImage",
            json!({"image_id": image, "publish_to": app.bob.customer_uuid}),
        )
        .await;
    assert_eq!(err.code, "IMAGE_NOT_CLEAN", "{err:?}");
    assert!(err.message.contains("CheckImage"), "{err:?}");
    let err = bob.fail("GetImageReport", json!({"image_id": image})).await;
    assert_eq!(err.code, "NOT_FOUND", "nothing was published: {err:?}");
}
db_test!(publishing_requires_a_check, publishing_requires_a_check);

// ---- with the engine: real file systems read by libguestfs's appliance ----

/// The finding codes of a report, in its order.
fn codes(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

/// The paths of a report's finding `code`, without the file system's device.
fn paths_of(report: &Value, code: &str) -> Vec<String> {
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == code)
        .unwrap_or_else(|| panic!("no {code} in {report}"));
    let mut paths: Vec<String> = finding["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let p = p.as_str().unwrap();
            p.rsplit_once(':').map_or(p, |(_, path)| path).to_string()
        })
        .collect();
    paths.sort();
    paths
}

/// Runs CheckImage to its end; returns the job.
async fn check(api: &Api, image_id: i64) -> Value {
    let job = api.call("CheckImage", json!({"image_id": image_id})).await;
    api.wait_job(id(&job, "job_id")).await
}

/// Asserts that `report` holds exactly what the dirty images plant.
fn assert_planted(report: &Value) {
    let planted = hygiene_images::planted();
    let mut expected: Vec<&str> = planted.iter().map(|(code, _)| *code).collect();
    let mut found = codes(report);
    expected.sort();
    found.sort();
    assert_eq!(found, expected, "exactly what was planted: {report}");
    for (code, paths) in &planted {
        assert_eq!(paths_of(report, code), *paths, "{code}: {report}");
    }
}

/// The dirty image, and a disk made from it (on SQLite and on RBD), are checked side by side
/// and found to hold exactly what was planted (and ListImages and GetDiskReport say so); a cleaned copy is a new
/// image whose report is clean while the original, unchanged, keeps its findings;
/// `--publish-requires-clean` refuses the dirty one, listing its high-severity findings, and
/// publishes the cleaned one. On files and on Ceph RBD (read through the cluster, the cleaned
/// copy a new RBD image, the pool left with nothing but the volumes rows name).
async fn a_dirty_image_is_checked_cleaned_and_published(backend: Backend, store: Store) {
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let app = app_on(
        backend,
        store,
        &["--hypervisor", "none", "--publish-requires-clean"],
    )
    .await;
    let (alice, bob) = (app.alice(), app.bob());
    let db = ServerDb::open(&app.server).await;
    let dirty = fetch_image(
        &app,
        std::fs::read(hygiene_images::dirty_ext4()).unwrap(),
        "dirty",
    )
    .await;
    let disk = alice
        .call(
            "CreateDisk",
            json!({"vdc_id": app.alice.vdc_id, "name": "from dirty",
                   "disk_productoffer_id": DISK_1GB, "image_id": dirty}),
        )
        .await;
    let disk = id(&disk, "disk_id");
    // The disk's two paths: on files a flat copy of its thin overlay (SQLite), on RBD the
    // clone read in place (PostgreSQL). PostgreSQL on files would repeat SQLite's appliance.
    let disk_checked = backend == Backend::Sqlite || store == Store::Rbd;

    let check_disk = async {
        if !disk_checked {
            return Value::Null;
        }
        let job = alice.call("CheckDisk", json!({"disk_id": disk})).await;
        alice.wait_job(id(&job, "job_id")).await
    };
    let (job, disk_job) = futures::future::join(check(&alice, dirty), check_disk).await;
    assert_eq!(job["status"], 1, "{job}");
    assert_eq!(
        (job["item_type"].as_str(), job["item_id"].as_i64()),
        (Some("image"), Some(dirty))
    );
    let report = alice
        .call("GetImageReport", json!({"image_id": dirty}))
        .await;
    assert_eq!(report["status"], "findings", "{report}");
    assert_eq!(report["highest_severity"], "high", "{report}");
    assert_eq!(report["job_id"], job["job_id"]);
    assert_planted(&report);
    if disk_checked {
        assert_eq!(disk_job["status"], 1, "{disk_job}");
        assert_eq!(
            (disk_job["item_type"].as_str(), disk_job["item_id"].as_i64()),
            (Some("disk"), Some(disk))
        );
        let disk_report = alice.call("GetDiskReport", json!({"disk_id": disk})).await;
        assert_eq!(disk_report["status"], "findings", "{disk_report}");
        assert_eq!(disk_report["job_id"], disk_job["job_id"]);
        assert_planted(&disk_report);
    }
    let severities: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["severity"].as_str().unwrap())
        .collect();
    let rank = |s: &str| {
        ["high", "medium", "low"]
            .iter()
            .position(|r| *r == s)
            .unwrap()
    };
    assert!(
        severities.windows(2).all(|w| rank(w[0]) <= rank(w[1])),
        "highest first: {severities:?}"
    );
    let shown = listed(&alice, dirty).await;
    assert_eq!(
        (
            shown["hygiene_status"].as_str(),
            shown["hygiene_severity"].as_str()
        ),
        (Some("findings"), Some("high")),
        "{shown}"
    );

    // Refused for publishing, with the list.
    let err = alice
        .fail(
            "PublishImage",
            json!({"image_id": dirty, "publish_to": app.bob.customer_uuid}),
        )
        .await;
    assert_eq!(err.code, "IMAGE_NOT_CLEAN", "{err:?}");
    for code in ["PASSWORD_HASH", "AUTHORIZED_KEYS", "SSH_HOST_KEYS"] {
        assert!(err.message.contains(code), "{code}: {err:?}");
    }
    assert!(
        !err.message.contains("MACHINE_ID"),
        "only the high ones: {err:?}"
    );

    // Clean a copy, every step and the maker's test scripts.
    let original = db.of_image(dirty).await;
    let before = original.read(0, original.virtual_size());
    let job = alice
        .call(
            "CleanImage",
            json!({"image_id": dirty, "operations": OPERATION_NAMES,
                   "remove_paths": ["/opt/tests"], "name": "golden"}),
        )
        .await;
    let job = alice.job_ok(id(&job, "job_id")).await;
    assert_eq!(job["job_type"], "CleanImage");
    let cleaned = id(&job, "item_id");
    assert_ne!(cleaned, dirty);
    let shown = listed(&alice, cleaned).await;
    assert_eq!(shown["image_name"], "golden");
    assert_eq!(shown["visibility"], "private");
    assert_eq!(shown["source_image_id"], dirty);
    assert_eq!(shown["hygiene_status"], "clean", "{shown}");
    let report = alice
        .call("GetImageReport", json!({"image_id": cleaned}))
        .await;
    assert_eq!(report["status"], "clean", "{report}");
    assert_eq!(report["findings"], json!([]), "{report}");
    assert!(
        !report["filesystems"].as_array().unwrap().is_empty(),
        "{report}"
    );
    // The original: not a byte changed, its report as it was.
    assert!(
        original.read(0, original.virtual_size()) == before,
        "the original is unchanged"
    );
    assert_eq!(listed(&alice, dirty).await["hygiene_status"], "findings");

    // The cleaned one is published, and its receiver sees it clean.
    alice
        .call(
            "PublishImage",
            json!({"image_id": cleaned, "publish_to": app.bob.customer_uuid}),
        )
        .await;
    assert_eq!(listed(&bob, cleaned).await["hygiene_status"], "clean");
    assert_eq!(
        bob.call("GetImageReport", json!({"image_id": cleaned}))
            .await["status"],
        "clean"
    );

    // The store holds the volumes rows name and nothing else: neither the disk's flat copy
    // nor the clean's staging copy is left (on RBD: images of the pool).
    let stored: std::collections::BTreeSet<String> = db.stored().into_iter().collect();
    assert_eq!(stored, db.volume_files().await, "the store's volumes");

    // Deleting an image takes its report with it.
    alice.call("DeleteDisk", json!({"disk_id": disk})).await;
    alice.call("DeleteImage", json!({"image_id": dirty})).await;
    assert_eq!(
        db.query_i64(
            "SELECT COUNT(*) FROM hygiene_reports WHERE image_id = $1",
            dirty
        )
        .await,
        Some(0)
    );
}
storage_test!(
    a_dirty_image_is_checked_cleaned_and_published,
    a_dirty_image_is_checked_cleaned_and_published
);

/// The clean image is reported clean; an image with random bytes over its superblock fails
/// its check with IMAGE_UNREADABLE (and ListImages says `unreadable`), and the node goes on
/// checking: the two checks run side by side.
async fn a_clean_image_is_clean_and_a_corrupt_one_unreadable(backend: Backend) {
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let app = app(backend, &["--hypervisor", "none"]).await;
    let alice = app.alice();
    let clean = fetch_image(
        &app,
        std::fs::read(hygiene_images::clean_ext4()).unwrap(),
        "clean",
    )
    .await;
    let corrupt = fetch_image(
        &app,
        std::fs::read(hygiene_images::bad_superblock()).unwrap(),
        "corrupt",
    )
    .await;
    let (clean_job, corrupt_job) =
        futures::future::join(check(&alice, clean), check(&alice, corrupt)).await;
    assert_eq!(clean_job["status"], 1, "{clean_job}");
    let report = alice
        .call("GetImageReport", json!({"image_id": clean}))
        .await;
    assert_eq!(
        (report["status"].as_str(), report["findings"].clone()),
        (Some("clean"), json!([])),
        "{report}"
    );
    assert_eq!(corrupt_job["status"], 3, "{corrupt_job}");
    assert_eq!(
        corrupt_job["error_code"], "IMAGE_UNREADABLE",
        "{corrupt_job}"
    );
    let report = alice
        .call("GetImageReport", json!({"image_id": corrupt}))
        .await;
    assert_eq!(report["status"], "unreadable", "{report}");
    assert!(
        report["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{report}"
    );
    assert_eq!(
        listed(&alice, corrupt).await["hygiene_status"],
        "unreadable"
    );
    assert_eq!(listed(&alice, clean).await["hygiene_status"], "clean");
}
db_test!(
    a_clean_image_is_clean_and_a_corrupt_one_unreadable,
    a_clean_image_is_clean_and_a_corrupt_one_unreadable
);

/// A guest's init: network, then the server's metadata (its first-boot password), printed.
const FIRST_BOOT_INIT: &str = guest_init!(
    r#"echo "GUEST INIT"
for m in $(cat /etc/modules); do insmod /lib/modules/$m.ko || echo "INSMOD FAILED $m"; done
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -s /etc/udhcpc.sh -q -n -t 5 -T 2 >/dev/null 2>&1
F=/sys/firmware/qemu_fw_cfg/by_name/opt/com.extility
token=$(cat $F/metadata-token/raw)
printf 'GET /metadata/v1/server.xml HTTP/1.0\r\nHost: 10.0.2.100\r\nX-Extility-Metadata-Token: %s\r\n\r\n' "$token" | timeout 10 nc 10.0.2.100 80 > /tmp/md
echo "PASSWORD $(grep -o '<initial-password>[^<]*' /tmp/md | cut -d '>' -f 2)"
echo "GUEST DONE"
while :; do sleep 3600; done
"#
);

/// A real guest's disk, dirty, fetched as an image and cleaned: a server made from the
/// cleaned image boots and is handed its own first-boot password. SQLite only: the jobs' rows
/// are the other tests'; here the bytes the cleaning wrote must still boot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_made_from_a_cleaned_image_boots_and_gets_its_password() {
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let app = TestApp::start_with(Backend::Sqlite, qemu_options(&[])).await;
    let alice = app.alice();
    let disk = hygiene_images::bootable_dirty(app.dir.path(), FIRST_BOOT_INIT, "quiet");
    let dirty = fetch_image(&app, std::fs::read(disk).unwrap(), "dirty guest").await;
    let job = alice
        .call(
            "CleanImage",
            json!({"image_id": dirty, "operations": OPERATION_NAMES}),
        )
        .await;
    let cleaned = id(&alice.job_ok(id(&job, "job_id")).await, "item_id");
    assert_eq!(listed(&alice, cleaned).await["hygiene_status"], "clean");
    // A NIC (on a VLAN) to reach the metadata service by.
    let vlan = app.vlan("lan").await;
    let server = app
        .create_server(Boot {
            name: "from-clean",
            vlan_id: vlan,
            image_id: cleaned,
            disk_offer: DISK_1GB,
            ..Boot::default()
        })
        .await;
    let server_id = id(&server, "server_id");
    let password = server["initial_password"].as_str().unwrap().to_string();
    assert!(!password.is_empty(), "{server}");
    app.start_server(server_id).await;
    let log = app
        .console_until(server_id, "GUEST DONE", Duration::from_secs(300))
        .await;
    assert!(log.contains(&format!("PASSWORD {password}")), "{log}");
}

/// JavaScript: whether the Images tab's row named `name` shows hygiene `status`.
fn badge_is(name: &str, status: &str) -> String {
    format!(
        "Array.from(document.querySelectorAll('table.images tbody tr')).some(r => r.querySelector('th') && r.querySelector('th').textContent.trim() === {} && r.querySelector('[data-hygiene]').dataset.hygiene === {})",
        json!(name),
        json!(status)
    )
}

/// Loads `url` until `expression` holds (the Images tab does not poll); a check under TCG
/// takes minutes at worst.
async fn reload_until(b: &Browser, url: &str, expression: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        b.goto(url).await;
        let holds = b
            .js(&format!("return !!({expression});"))
            .await
            .as_bool()
            .unwrap_or(false);
        if holds {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {}",
            b.text("main").await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The panel's Images tab in Chromium: Check shows the findings under the badge as a list,
/// Clean makes a copy whose badge turns clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_panel_checks_then_cleans_and_the_badge_turns_clean() {
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let app = app(Backend::Sqlite, &["--hypervisor", "none"]).await;
    let dirty = fetch_image(
        &app,
        std::fs::read(hygiene_images::dirty_ext4()).unwrap(),
        "dirty",
    )
    .await;
    let images = format!("{}/panel/images", app.server.url);
    let b = Browser::open(1280, 900).await;
    app.sign_in(&b, &app.alice).await;
    b.goto(&images).await;
    b.wait_until(&badge_is("dirty", "not_checked"), "not checked yet")
        .await;

    b.click(&format!("#image-{dirty} td.actions > details > summary"))
        .await;
    b.click(&format!("#image-{dirty}-check button[type=submit]"))
        .await;
    let notice = b
        .wait_for(&format!("#image-{dirty} .notice"))
        .await
        .text()
        .await
        .unwrap();
    assert!(notice.contains("Checking the image"), "{notice}");
    reload_until(
        &b,
        &images,
        &badge_is("dirty", "findings"),
        "the check found things",
    )
    .await;
    let listed = b
        .js(&format!("return Array.from(document.querySelectorAll('#image-{dirty} ul.report li')).map(l => l.textContent);"))
        .await;
    let listed = listed.to_string();
    for (code, _) in hygiene_images::planted() {
        assert!(listed.contains(code), "{code}: {listed}");
    }
    b.screenshot(&screenshot_path("panel-image-hygiene.png"))
        .await;

    b.click(&format!("#image-{dirty} td.actions > details > summary"))
        .await;
    b.fill(&format!("#clean-{dirty}"), "golden").await;
    b.fill(&format!("#clean-paths-{dirty}"), "/opt/tests").await;
    b.click(&format!("#image-{dirty}-clean button[type=submit]"))
        .await;
    let notice = b
        .wait_for(&format!("#image-{dirty} .notice"))
        .await
        .text()
        .await
        .unwrap();
    assert!(notice.contains("cleaned copy"), "{notice}");
    reload_until(
        &b,
        &images,
        &badge_is("golden", "clean"),
        "the cleaned copy is clean",
    )
    .await;
    assert!(
        b.js(&format!("return {};", badge_is("dirty", "findings")))
            .await
            == json!(true),
        "the original keeps its findings"
    );
    b.assert_console_clean("images").await;
    b.close().await;
}
