//! Image hygiene through the API: who may check, clean and read reports (customers are
//! hostile), what ListImages shows before and after, and `--publish-requires-clean`.

use serde_json::{Value, json};

use crate::support::catalogue::{BLANK_IMAGE, DISK_1GB};
use crate::support::fetch_disk::fetch;
use crate::support::image_server::ImageServer;
use crate::support::{Api, Backend, ServerOptions, TestApp, db_test, id};

/// A server that fetches from the test's own HTTP server on loopback, with `extra` options.
async fn app(backend: Backend, extra: &[&str]) -> TestApp {
    let mut args = vec!["--allow-fetch-from", "127.0.0.0/8"];
    args.extend(extra);
    let options = ServerOptions {
        args: args.into_iter().map(str::to_string).collect(),
        ..ServerOptions::default()
    };
    TestApp::start_with(backend, options).await
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
