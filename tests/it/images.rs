//! Images over the JSON API: from a configured server to a published image (the seed's main
//! story), deleting images that disks depend on, platform publishing and billing.

use serde_json::json;

use crate::support::catalogue::{
    BLANK_IMAGE, DISK_1GB, DISK_20GB, DISK_20GB_SIZE, IMAGE_OFFER, SERVER_1CPU_1GB,
};
use crate::support::images::{
    Contents, boot_disk, create_server, first_vdc, image_ids, listed_image, make_image, start, stop,
};
use crate::support::server_db::ServerDb;
use crate::support::{Api, Backend, MIB, ServerOptions, Store, TestApp, db_test, id, storage_test};

/// Server from an image, configure, stop, the seed's detach/modify/reattach workflow,
/// CreateImage, a new server from the image, publishing to a customer of another billing
/// entity, what that customer may and may not do, revoking, and a third customer who never
/// sees the image.
async fn image_path_from_server_to_published_image(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, bob) = (app.alice(), app.bob());
    let db = ServerDb::open(&app.server).await;
    let vdc = first_vdc(&alice).await;

    // Billing entities come from the CLI; customers name theirs.
    let acme_uuid = app.server.add_billing_entity("Acme").unwrap();
    let again = app.server.add_billing_entity("Acme").unwrap_err();
    assert!(again.contains("exists"), "{again}");
    let (carol, carol_api) = app.add_customer("carol@example.com", &["--billing-entity", "Acme"]);
    assert_eq!(carol.billing_entity_uuid, acme_uuid);
    assert_ne!(carol.billing_entity_uuid, app.alice.billing_entity_uuid);
    assert_eq!(app.alice.billing_entity_uuid, app.bob.billing_entity_uuid);
    let me = carol_api.call("GetCustomer", json!({})).await;
    assert_eq!(me["customer_id"], carol.customer_id);
    assert_eq!(me["customer_uuid"], carol.customer_uuid.as_str());
    assert_eq!(me["billing_entity_uuid"], acme_uuid.as_str());
    assert_eq!(me["billing_entity_name"], "Acme");
    assert_eq!(me["is_admin"], false);

    // A test server from the blank image; "install" onto its boot disk.
    let test = create_server(&alice, vdc, "test", BLANK_IMAGE, DISK_20GB).await;
    let test_id = id(&test, "server_id");
    let boot = boot_disk(&test).await;
    let boot_volume = db.of_disk(boot).await;
    assert_eq!(boot_volume.format, "raw");
    boot_volume.write(0, Contents::BOOT);
    for (offset, len, byte) in Contents::SCATTERED[..2].iter().copied() {
        boot_volume.write_pattern(offset, len, byte);
    }
    start(&alice, test_id).await;
    let err = alice
        .fail(
            "CreateImage",
            json!({"disk_id": boot, "name": "too early", "generate_password": true}),
        )
        .await;
    assert_eq!(err.code, "CONFLICT", "{err:?}");
    stop(&alice, test_id).await;

    // The seed's workflow: move the disk to a utility server, modify it there, move it back.
    let utility = create_server(&alice, vdc, "utility", BLANK_IMAGE, DISK_1GB).await;
    let utility_id = id(&utility, "server_id");
    alice
        .call("DetachDisk", json!({"server_id": test_id, "disk_id": boot}))
        .await;
    alice
        .call(
            "AttachDisk",
            json!({"server_id": utility_id, "disk_id": boot}),
        )
        .await;
    start(&alice, utility_id).await;
    let (offset, len, byte) = Contents::SCATTERED[2];
    db.of_disk(boot).await.write_pattern(offset, len, byte); // mounted and changed
    stop(&alice, utility_id).await;
    alice
        .call(
            "DetachDisk",
            json!({"server_id": utility_id, "disk_id": boot}),
        )
        .await;
    alice
        .call(
            "AttachDisk",
            json!({"server_id": test_id, "disk_id": boot, "index": 0}),
        )
        .await;
    let got = alice.call("GetServer", json!({"server_id": test_id})).await;
    assert_eq!(got["disks"][0]["disk_id"], boot);

    // The image: listed, private, a flat copy that is thin and reads like the disk.
    let image = make_image(&alice, boot, "golden").await;
    let listed = listed_image(&alice, image)
        .await
        .expect("alice lists her image");
    assert_eq!(listed["image_name"], "golden");
    assert_eq!(listed["owner"], app.alice.customer_uuid.as_str());
    assert_eq!(listed["visibility"], "private");
    assert_eq!(listed["size"], DISK_20GB_SIZE);
    assert_eq!(listed["default_username"], "admin");
    assert_eq!(listed["generate_password"], true);
    let image_volume = db.of_image(image).await;
    assert_eq!(image_volume.format, "raw");
    assert_ne!(image_volume.path, db.of_disk(boot).await.path);
    assert_eq!(image_volume.virtual_size(), DISK_20GB_SIZE);
    assert!(
        image_volume.allocated() < MIB,
        "a 20 GB disk holding 76 KiB made an image taking {} bytes",
        image_volume.allocated()
    );
    Contents::check(&image_volume, "the image");

    // It keeps no reference to the disk: destroying the server and its disk changes nothing.
    let job = alice
        .call("DestroyServer", json!({"server_id": test_id}))
        .await;
    alice.job_ok(id(&job, "job_id")).await;
    assert!(!disk_exists(&alice, boot).await);
    Contents::check(&image_volume, "the image after its disk was deleted");

    // A new server from the image: a thin clone that reads like it.
    let from_image = create_server(&alice, vdc, "from golden", image, DISK_20GB).await;
    assert_eq!(from_image["image_id"], image);
    assert_eq!(from_image["initial_user"], "admin");
    assert!(
        from_image["initial_password"]
            .as_str()
            .is_some_and(|p| p.len() >= 12)
    );
    let clone = db.of_disk(boot_disk(&from_image).await).await;
    assert_eq!(clone.format, "qcow2");
    assert!(clone.allocated() < MIB, "{} bytes", clone.allocated());
    Contents::check(&clone, "a server made from the image");

    // Publishing to another billing entity: its customer lists and uses the image.
    assert!(!image_ids(&carol_api).await.contains(&image));
    let published = alice
        .call(
            "PublishImage",
            json!({"image_id": image, "publish_to": acme_uuid}),
        )
        .await;
    assert_eq!(published["result"], 1);
    assert_eq!(
        listed_image(&alice, image).await.unwrap()["visibility"],
        "shared"
    );
    let seen = listed_image(&carol_api, image)
        .await
        .expect("carol lists the published image");
    assert_eq!(seen["owner"], app.alice.customer_uuid.as_str());
    assert_eq!(seen["visibility"], "shared");
    // The owner sees whom the image is published to.
    let shares = alice
        .call("ListImageShares", json!({"image_id": image}))
        .await;
    assert_eq!(shares.as_array().unwrap().len(), 1, "{shares}");
    assert_eq!(shares[0]["kind"], "billing_entity");
    assert_eq!(shares[0]["uuid"], acme_uuid.as_str());
    assert_eq!(shares[0]["name"], "Acme");
    let carol_vdc = carol.vdc_id;
    let carol_server = create_server(&carol_api, carol_vdc, "mine", image, DISK_20GB).await;
    let carol_boot = boot_disk(&carol_server).await;
    Contents::check(&db.of_disk(carol_boot).await, "carol's server");
    let carol_disk = carol_api
        .call(
            "CreateDisk",
            json!({"vdc_id": carol_vdc, "name": "data", "disk_productoffer_id": DISK_20GB,
                   "image_id": image}),
        )
        .await;
    Contents::check(
        &db.of_disk(id(&carol_disk, "disk_id")).await,
        "carol's disk",
    );

    // ... but may not change, delete or republish it.
    for (op, args) in [
        ("DeleteImage", json!({"image_id": image})),
        ("RenameImage", json!({"image_id": image, "name": "stolen"})),
        (
            "PublishImage",
            json!({"image_id": image, "publish_to": app.bob.customer_uuid}),
        ),
        (
            "PublishImage",
            json!({"image_id": image, "publish_to": carol.customer_uuid}),
        ),
        (
            "RevokeImage",
            json!({"image_id": image, "publish_to": acme_uuid}),
        ),
        ("ListImageShares", json!({"image_id": image})),
    ] {
        let err = carol_api.fail(op, args).await;
        assert_eq!(err.code, "PERMISSION_DENIED", "{op}: {err:?}");
    }
    assert!(!image_ids(&bob).await.contains(&image));

    // Only administrators publish to the whole platform (unless the operator allows it).
    let err = alice
        .fail(
            "PublishImage",
            json!({"image_id": image, "publish_to": "platform"}),
        )
        .await;
    assert_eq!(err.code, "PERMISSION_DENIED", "{err:?}");
    let err = alice
        .fail(
            "PublishImage",
            json!({"image_id": image, "publish_to": "nobody"}),
        )
        .await;
    assert_eq!(err.code, "INVALID_ARGUMENT", "{err:?}");
    let err = alice
        .fail(
            "PublishImage",
            json!({"image_id": image, "publish_to": uuid::Uuid::new_v4().to_string()}),
        )
        .await;
    assert_eq!(err.code, "INVALID_ARGUMENT", "{err:?}");

    // Revoking stops new use and leaves what was made alone.
    let revoked = alice
        .call(
            "RevokeImage",
            json!({"image_id": image, "publish_to": acme_uuid}),
        )
        .await;
    assert_eq!(revoked["result"], 1);
    let err = alice
        .fail(
            "RevokeImage",
            json!({"image_id": image, "publish_to": acme_uuid}),
        )
        .await;
    assert_eq!(err.code, "INVALID_ARGUMENT", "{err:?}");
    assert!(!image_ids(&carol_api).await.contains(&image));
    let err = carol_api
        .fail(
            "CreateServer",
            json!({"vdc_id": carol_vdc, "vlan_id": -1, "server_name": "again", "image_id": image,
                   "server_productoffer_id": SERVER_1CPU_1GB, "disk_productoffer_ids": [DISK_20GB]}),
        )
        .await;
    assert_eq!(err.code, "NOT_FOUND", "{err:?}");
    let still = carol_api
        .call("GetServer", json!({"server_id": carol_server["server_id"]}))
        .await;
    assert_eq!(still["disks"][0]["disk_id"], carol_boot);
    start(&carol_api, id(&still, "server_id")).await;
    Contents::check(
        &db.of_disk(carol_boot).await,
        "carol's server after the revoke",
    );

    // Bob, in alice's billing entity but never published to, never saw it.
    assert!(!image_ids(&bob).await.contains(&image));
    let err = bob
        .fail(
            "CreateDisk",
            json!({"vdc_id": app.bob.vdc_id, "name": "x", "disk_productoffer_id": DISK_20GB,
                   "image_id": image}),
        )
        .await;
    assert_eq!(err.code, "NOT_FOUND", "{err:?}");

    // The owner renames it.
    let renamed = alice
        .call(
            "RenameImage",
            json!({"image_id": image, "name": "golden v2"}),
        )
        .await;
    assert_eq!(renamed["image_name"], "golden v2");
    let err = alice
        .fail("RenameImage", json!({"image_id": image, "name": "  "}))
        .await;
    assert_eq!(err.code, "INVALID_ARGUMENT", "{err:?}");
}
db_test!(
    image_path_from_server_to_published_image,
    image_path_from_server_to_published_image
);

/// Whether GetDisk still finds the disk.
async fn disk_exists(api: &Api, disk_id: i64) -> bool {
    api.try_call("GetDisk", json!({"disk_id": disk_id}))
        .await
        .is_ok()
}

/// Deleting an image leaves the disks and servers made from it readable; its data goes when
/// the last of them does.
async fn deleting_a_source_image_keeps_its_disks(backend: Backend, store: Store) {
    let app = TestApp::start_on(backend, store).await;
    let (alice, bob) = (app.alice(), app.bob());
    let db = ServerDb::open(&app.server).await;
    let vdc = first_vdc(&alice).await;
    let source = alice
        .call(
            "CreateDisk",
            json!({"vdc_id": vdc, "name": "source", "disk_productoffer_id": DISK_20GB,
                   "image_id": BLANK_IMAGE}),
        )
        .await;
    let source = id(&source, "disk_id");
    Contents::write(&db.of_disk(source).await);
    let image = make_image(&alice, source, "base").await;
    let image_volume = db.of_image(image).await;

    let disk = alice
        .call(
            "CreateDisk",
            json!({"vdc_id": vdc, "name": "from base", "disk_productoffer_id": DISK_20GB,
                   "image_id": image}),
        )
        .await;
    let disk = id(&disk, "disk_id");
    let server = create_server(&alice, vdc, "from base", image, DISK_20GB).await;
    let server_id = id(&server, "server_id");

    // Neither another customer nor a customer for a platform image may delete.
    let err = bob.fail("DeleteImage", json!({"image_id": image})).await;
    assert_eq!(err.code, "NOT_FOUND", "{err:?}");
    let err = alice
        .fail("DeleteImage", json!({"image_id": BLANK_IMAGE}))
        .await;
    assert_eq!(err.code, "PERMISSION_DENIED", "{err:?}");

    let deleted = alice.call("DeleteImage", json!({"image_id": image})).await;
    assert_eq!(deleted["result"], 1);
    assert!(!image_ids(&alice).await.contains(&image));
    let err = alice.fail("DeleteImage", json!({"image_id": image})).await;
    assert_eq!(err.code, "NOT_FOUND", "{err:?}");
    let err = alice
        .fail(
            "CreateDisk",
            json!({"vdc_id": vdc, "name": "late", "disk_productoffer_id": DISK_20GB,
                   "image_id": image}),
        )
        .await;
    assert_eq!(err.code, "NOT_FOUND", "{err:?}");

    // The disks still read the image's data: its volume lives on under them.
    Contents::check(&db.of_disk(disk).await, "a disk of the deleted image");
    let boot = boot_disk(&server).await;
    Contents::check(&db.of_disk(boot).await, "a server of the deleted image");
    start(&alice, server_id).await;
    stop(&alice, server_id).await;
    assert!(image_volume.exists());

    // ... until the last of them is gone.
    alice.call("DeleteDisk", json!({"disk_id": disk})).await;
    assert!(image_volume.exists());
    let job = alice
        .call("DestroyServer", json!({"server_id": server_id}))
        .await;
    alice.job_ok(id(&job, "job_id")).await;
    assert!(
        !image_volume.exists(),
        "the deleted image's data outlived its disks"
    );

    // An image nothing was made from goes at once.
    let unused = make_image(&alice, source, "unused").await;
    let unused_volume = db.of_image(unused).await;
    Contents::check(&unused_volume, "a second image of the disk");
    alice.call("DeleteImage", json!({"image_id": unused})).await;
    assert!(!unused_volume.exists());
}
storage_test!(
    deleting_a_source_image_keeps_its_disks,
    deleting_a_source_image_keeps_its_disks
);

/// Administrators publish to the whole platform and bill images under an image product
/// offer; each server made from a billed image is a usage line its creator sees.
async fn platform_publishing_and_billing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, bob) = (app.alice(), app.bob());
    let (admin, admin_api) = app.add_customer("admin@example.com", &["--admin"]);
    let db = ServerDb::open(&app.server).await;
    assert_eq!(
        admin_api.call("GetCustomer", json!({})).await["is_admin"],
        true
    );

    let source = admin_api
        .call(
            "CreateDisk",
            json!({"vdc_id": admin.vdc_id, "name": "os", "disk_productoffer_id": DISK_1GB,
                   "image_id": 0}),
        )
        .await;
    let image = make_image(&admin_api, id(&source, "disk_id"), "licensed os").await;
    let alice_disk = alice
        .call(
            "CreateDisk",
            json!({"vdc_id": app.alice.vdc_id, "name": "own", "disk_productoffer_id": DISK_1GB,
                   "image_id": 0}),
        )
        .await;
    let alice_image = make_image(&alice, id(&alice_disk, "disk_id"), "alice's").await;

    // Image offers are listed when asked for.
    let offers = alice
        .call("ListProductOffers", json!({"type": "image"}))
        .await;
    assert_eq!(offers[0]["product_offer_id"], IMAGE_OFFER);
    let all = alice.call("ListProductOffers", json!({})).await;
    assert!(all.as_array().unwrap().iter().all(|o| o["type"] != "image"));

    // Only administrators set product offers, and only image offers.
    let set = json!({"image_id": image, "product_offer_id": IMAGE_OFFER});
    let err = alice.fail("SetImageProductOffer", set.clone()).await;
    assert_eq!(err.code, "PERMISSION_DENIED", "{err:?}");
    let err = admin_api
        .fail(
            "SetImageProductOffer",
            json!({"image_id": image, "product_offer_id": DISK_1GB}),
        )
        .await;
    assert_eq!(err.code, "INVALID_ARGUMENT", "{err:?}");
    let err = admin_api
        .fail(
            "SetImageProductOffer",
            json!({"image_id": 999_999, "product_offer_id": IMAGE_OFFER}),
        )
        .await;
    assert_eq!(err.code, "NOT_FOUND", "{err:?}");
    let billed = admin_api.call("SetImageProductOffer", set).await;
    assert_eq!(billed["product_offer_id"], IMAGE_OFFER);

    // Publishing to the platform: administrators only.
    let err = alice
        .fail(
            "PublishImage",
            json!({"image_id": alice_image, "publish_to": "platform"}),
        )
        .await;
    assert_eq!(err.code, "PERMISSION_DENIED", "{err:?}");
    let published = admin_api
        .call(
            "PublishImage",
            json!({"image_id": image, "publish_to": "platform"}),
        )
        .await;
    assert_eq!(published["result"], 1);
    // Publishing again changes nothing.
    admin_api
        .call(
            "PublishImage",
            json!({"image_id": image, "publish_to": "PLATFORM"}),
        )
        .await;
    for api in [&alice, &bob] {
        let seen = listed_image(api, image)
            .await
            .expect("a public image is listed");
        assert_eq!(seen["visibility"], "public");
        assert_eq!(seen["owner"], admin.customer_uuid.as_str());
        assert_eq!(seen["product_offer_id"], IMAGE_OFFER);
    }

    // Each server bob makes from the billed image is a usage line of his.
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let first = create_server(&bob, app.bob.vdc_id, "one", image, DISK_1GB).await;
    let second = create_server(&bob, app.bob.vdc_id, "two", image, DISK_1GB).await;
    create_server(&bob, app.bob.vdc_id, "unbilled", BLANK_IMAGE, DISK_1GB).await;
    // A disk made from the image is billed too: there is no way round the offer.
    let disk = bob
        .call(
            "CreateDisk",
            json!({"vdc_id": app.bob.vdc_id, "name": "bare copy", "disk_productoffer_id": DISK_1GB,
                   "image_id": image}),
        )
        .await;
    let usage = bob.call("ListUsage", json!({})).await;
    let lines = usage.as_array().unwrap();
    assert_eq!(lines.len(), 3, "{usage}");
    for line in lines {
        assert_eq!(line["kind"], "image_use");
        assert_eq!(line["image_id"], image);
        assert_eq!(line["image_name"], "licensed os");
        assert_eq!(line["product_offer_id"], IMAGE_OFFER);
        assert_eq!(line["quantity"], 1);
    }
    for (line, server) in lines.iter().zip([&first, &second]) {
        assert_eq!(line["server_id"], server["server_id"]);
        assert_eq!(line["disk_id"], serde_json::Value::Null);
    }
    assert_eq!(lines[2]["disk_id"], disk["disk_id"]);
    assert_eq!(lines[2]["server_id"], serde_json::Value::Null);
    assert_eq!(alice.call("ListUsage", json!({})).await, json!([]));

    // Bytes fetched (recorded by FetchDisk) show too, and the period selects lines.
    let now_ms = chrono::Utc::now().timestamp_millis();
    db.record_bytes_fetched(app.alice.customer_id, 123_456_789, now_ms)
        .await;
    db.record_bytes_fetched(app.alice.customer_id, 5, now_ms - 86_400_000)
        .await;
    let today = alice
        .call(
            "ListUsage",
            json!({"from": before.to_rfc3339(), "to": null}),
        )
        .await;
    assert_eq!(today.as_array().unwrap().len(), 1, "{today}");
    assert_eq!(today[0]["kind"], "bytes_fetched");
    assert_eq!(today[0]["quantity"], 123_456_789);
    let all = alice.call("ListUsage", json!({})).await;
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let future = bob.call("ListUsage", json!({"from": later})).await;
    assert_eq!(future, json!([]));
    let past = bob
        .call("ListUsage", json!({"to": before.to_rfc3339()}))
        .await;
    assert_eq!(past, json!([]));
    let err = bob
        .fail(
            "ListUsage",
            json!({"from": later, "to": before.to_rfc3339()}),
        )
        .await;
    assert_eq!(err.code, "INVALID_ARGUMENT", "{err:?}");
    let err = bob.fail("ListUsage", json!({"from": "yesterday"})).await;
    assert_eq!(err.code, "INVALID_ARGUMENT", "{err:?}");

    // Revoking the platform publication: bob's servers stay, new ones are refused.
    admin_api
        .call(
            "RevokeImage",
            json!({"image_id": image, "publish_to": "platform"}),
        )
        .await;
    assert!(listed_image(&bob, image).await.is_none());
    bob.call("GetServer", json!({"server_id": first["server_id"]}))
        .await;
    let err = bob
        .fail(
            "CreateServer",
            json!({"vdc_id": app.bob.vdc_id, "vlan_id": -1, "server_name": "three",
                   "image_id": image, "server_productoffer_id": SERVER_1CPU_1GB,
                   "disk_productoffer_ids": [DISK_1GB]}),
        )
        .await;
    assert_eq!(err.code, "NOT_FOUND", "{err:?}");

    // Removing the offer stops the billing.
    admin_api
        .call(
            "SetImageProductOffer",
            json!({"image_id": image, "product_offer_id": 0}),
        )
        .await;
    create_server(&admin_api, admin.vdc_id, "free now", image, DISK_1GB).await;
    assert_eq!(admin_api.call("ListUsage", json!({})).await, json!([]));
}
db_test!(
    platform_publishing_and_billing,
    platform_publishing_and_billing
);

/// With `--customers-may-publish-to-platform`, customers publish to everyone.
async fn customers_may_publish_to_the_platform_when_allowed(backend: Backend) {
    let options = ServerOptions {
        args: vec!["--customers-may-publish-to-platform".into()],
        ..Default::default()
    };
    let app = TestApp::start_with(backend, options).await;
    let (alice, bob) = (app.alice(), app.bob());
    let disk = alice
        .call(
            "CreateDisk",
            json!({"vdc_id": app.alice.vdc_id, "name": "d", "disk_productoffer_id": DISK_1GB,
                   "image_id": 0}),
        )
        .await;
    let image = make_image(&alice, id(&disk, "disk_id"), "for everyone").await;
    assert!(listed_image(&bob, image).await.is_none());
    alice
        .call(
            "PublishImage",
            json!({"image_id": image, "publish_to": "platform"}),
        )
        .await;
    let seen = listed_image(&bob, image).await.expect("bob sees it");
    assert_eq!(seen["visibility"], "public");
    // Only the owner administers it, even so.
    let err = bob
        .fail(
            "RevokeImage",
            json!({"image_id": image, "publish_to": "platform"}),
        )
        .await;
    assert_eq!(err.code, "PERMISSION_DENIED", "{err:?}");
}
db_test!(
    customers_may_publish_to_the_platform_when_allowed,
    customers_may_publish_to_the_platform_when_allowed
);
