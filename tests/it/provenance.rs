//! Image provenance (issue 11, "image laundering"): an image keeps where its bits came from.
//! Billing follows the bits to the original's product offer, an image derived from one only
//! published to its owner is published further only with the original owner's leave
//! (PublishImage's `allow_republish`), and revoking the original stops new servers and disks
//! from everything derived from it. ListImageShares names recipients by uuid and name, never
//! by e-mail address.

use serde_json::{Value, json};

use crate::support::catalogue::{
    BLANK_IMAGE, DISK_1GB, DISK_1GB_SIZE, IMAGE_OFFER, SERVER_1CPU_1GB,
};
use crate::support::images::{boot_disk, create_server, image_ids, listed_image, make_image};
use crate::support::{Api, ApiError, Backend, TestApp, db_test, id};

/// Alice's image, made from a blank 1 GB disk, billed by an administrator under the image
/// offer.
async fn billed_image_of(alice: &Api, vdc: i64, admin: &Api, name: &str) -> i64 {
    let disk = alice
        .call(
            "CreateDisk",
            json!({"vdc_id": vdc, "name": name, "disk_productoffer_id": DISK_1GB,
                   "image_id": BLANK_IMAGE}),
        )
        .await;
    let image = make_image(alice, id(&disk, "disk_id"), name).await;
    let billed = admin
        .call(
            "SetImageProductOffer",
            json!({"image_id": image, "product_offer_id": IMAGE_OFFER}),
        )
        .await;
    assert_eq!(billed["product_offer_id"], IMAGE_OFFER);
    image
}

fn server_args(vdc: i64, name: &str, image: i64) -> Value {
    json!({"vdc_id": vdc, "vlan_id": -1, "server_name": name, "image_id": image,
           "server_productoffer_id": SERVER_1CPU_1GB, "disk_productoffer_ids": [DISK_1GB]})
}

fn disk_args(vdc: i64, name: &str, image: i64) -> Value {
    json!({"vdc_id": vdc, "name": name, "disk_productoffer_id": DISK_1GB, "image_id": image})
}

async fn usage(api: &Api) -> Vec<Value> {
    api.call("ListUsage", json!({}))
        .await
        .as_array()
        .unwrap()
        .clone()
}

/// Asserts a usage line bills `image`'s use under the image offer, for `field` (server_id or
/// disk_id) `item`.
fn assert_billed(line: &Value, image: i64, field: &str, item: i64) {
    assert_eq!(line["kind"], "image_use", "{line}");
    assert_eq!(line["image_id"], image, "{line}");
    assert_eq!(line["product_offer_id"], IMAGE_OFFER, "{line}");
    assert_eq!(line[field], item, "{line}");
    assert_eq!(line["quantity"], 1, "{line}");
}

fn assert_denied_naming(err: &ApiError, source: i64) {
    assert_eq!(err.code, "PERMISSION_DENIED", "{err:?}");
    let pattern = format!("image {source}");
    let names_it = err.message.match_indices(&pattern).any(|(at, _)| {
        !err.message[at + pattern.len()..].starts_with(|c: char| c.is_ascii_digit())
    });
    assert!(
        names_it,
        "the refusal names the source image {source}: {err:?}"
    );
}

/// The story. Bob makes a server from Alice's billed image (published to him), images
/// its disk and tries to publish the copy to Carol: refused until Alice allows
/// re-publication. With her leave, Carol's server from Bob's copy records a usage line under
/// Alice's offer, naming the copy. After Alice revokes Bob, nobody makes anything new from the
/// copy; what was made stays.
async fn bob_cannot_launder_alices_image_through_carol(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, bob) = (app.alice(), app.bob());
    let (_, admin) = app.add_customer("admin@example.com", &["--admin"]);
    app.server.add_billing_entity("Acme").unwrap();
    let (carol, carol_api) = app.add_customer("carol@example.com", &["--billing-entity", "Acme"]);
    let bob_uuid = app.bob.customer_uuid.as_str();
    let (bob_vdc, carol_vdc) = (app.bob.vdc_id, carol.vdc_id);

    let original = billed_image_of(&alice, app.alice.vdc_id, &admin, "alice's os").await;
    alice
        .call(
            "PublishImage",
            json!({"image_id": original, "publish_to": bob_uuid}),
        )
        .await;

    // Bob: a server from Alice's image (billed), then an image of its boot disk.
    let server = create_server(&bob, bob_vdc, "from alice", original, DISK_1GB).await;
    let lines = usage(&bob).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_billed(&lines[0], original, "server_id", id(&server, "server_id"));
    let copy = make_image(&bob, boot_disk(&server).await, "bob's os").await;
    let listed = listed_image(&bob, copy).await.expect("bob lists his copy");
    assert_eq!(listed["owner"], bob_uuid);
    assert_eq!(listed["source_image_id"], original);
    assert_eq!(
        listed["product_offer_id"], IMAGE_OFFER,
        "the copy is billed under the original's offer"
    );

    // Without Alice's leave, the copy goes nowhere.
    for publish_to in [
        carol.customer_uuid.as_str(),
        carol.billing_entity_uuid.as_str(),
    ] {
        let err = bob
            .fail(
                "PublishImage",
                json!({"image_id": copy, "publish_to": publish_to, "allow_republish": true}),
            )
            .await;
        assert_denied_naming(&err, original);
    }
    assert!(!image_ids(&carol_api).await.contains(&copy));
    // Bob himself uses it, billed under Alice's offer, the line naming his copy.
    let own = create_server(&bob, bob_vdc, "from my copy", copy, DISK_1GB).await;
    let lines = usage(&bob).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_billed(&lines[1], copy, "server_id", id(&own, "server_id"));

    // Alice allows re-publication (publishing again changes what the publication allows).
    alice
        .call(
            "PublishImage",
            json!({"image_id": original, "publish_to": bob_uuid, "allow_republish": true}),
        )
        .await;
    let shares = alice
        .call("ListImageShares", json!({"image_id": original}))
        .await;
    assert_eq!(shares.as_array().unwrap().len(), 1, "{shares}");
    assert_eq!(shares[0]["allow_republish"], true);
    let published = bob
        .call(
            "PublishImage",
            json!({"image_id": copy, "publish_to": carol.customer_uuid}),
        )
        .await;
    assert_eq!(published["result"], 1);
    let seen = listed_image(&carol_api, copy)
        .await
        .expect("carol lists bob's copy");
    assert_eq!(seen["owner"], bob_uuid);
    assert_eq!(seen["product_offer_id"], IMAGE_OFFER);
    // Carol cannot pass it on: Bob did not allow it.
    let carol_server = create_server(&carol_api, carol_vdc, "from bob", copy, DISK_1GB).await;
    let carol_copy = make_image(&carol_api, boot_disk(&carol_server).await, "carol's").await;
    let err = carol_api
        .fail(
            "PublishImage",
            json!({"image_id": carol_copy, "publish_to": app.alice.customer_uuid}),
        )
        .await;
    assert_denied_naming(&err, copy);
    // Carol's server and disk from Bob's copy are billed to her under Alice's offer.
    let carol_disk = carol_api
        .call("CreateDisk", disk_args(carol_vdc, "data", copy))
        .await;
    let lines = usage(&carol_api).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_billed(&lines[0], copy, "server_id", id(&carol_server, "server_id"));
    assert_billed(&lines[1], copy, "disk_id", id(&carol_disk, "disk_id"));

    // Alice revokes Bob: nothing new from the copy, for Carol or for Bob.
    alice
        .call(
            "RevokeImage",
            json!({"image_id": original, "publish_to": bob_uuid}),
        )
        .await;
    let err = carol_api
        .fail("CreateServer", server_args(carol_vdc, "again", copy))
        .await;
    assert_denied_naming(&err, original);
    let err = carol_api
        .fail("CreateDisk", disk_args(carol_vdc, "again", copy))
        .await;
    assert_denied_naming(&err, original);
    // ... nor from Carol's own copy of the copy, further down.
    let err = carol_api
        .fail("CreateServer", server_args(carol_vdc, "deeper", carol_copy))
        .await;
    assert_denied_naming(&err, original);
    let err = bob
        .fail("CreateServer", server_args(bob_vdc, "again", copy))
        .await;
    assert_denied_naming(&err, original);
    let err = bob
        .fail("CreateServer", server_args(bob_vdc, "again", original))
        .await;
    assert_eq!(err.code, "NOT_FOUND", "{err:?}");
    let err = bob
        .fail(
            "PublishImage",
            json!({"image_id": copy, "publish_to": app.alice.customer_uuid}),
        )
        .await;
    assert_denied_naming(&err, original);
    // No line was recorded for the refusals; what was made stays.
    assert_eq!(usage(&carol_api).await.len(), 2);
    assert_eq!(usage(&bob).await.len(), 2);
    carol_api
        .call("GetServer", json!({"server_id": carol_server["server_id"]}))
        .await;
    bob.call("GetServer", json!({"server_id": own["server_id"]}))
        .await;

    // Published to Bob again, without leave to publish further: Bob uses his copy again, the
    // publication to Carol it reached does not.
    alice
        .call(
            "PublishImage",
            json!({"image_id": original, "publish_to": bob_uuid}),
        )
        .await;
    let again = create_server(&bob, bob_vdc, "allowed again", copy, DISK_1GB).await;
    let lines = usage(&bob).await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_billed(&lines[2], copy, "server_id", id(&again, "server_id"));
    let err = carol_api
        .fail("CreateServer", server_args(carol_vdc, "still not", copy))
        .await;
    assert_denied_naming(&err, original);
    assert_eq!(usage(&carol_api).await.len(), 2);
}
db_test!(
    bob_cannot_launder_alices_image_through_carol,
    bob_cannot_launder_alices_image_through_carol
);

/// Lineage runs through disks and servers: an image of a disk made from a server made from an
/// image descends from it, and so on down. The nearest offer up the lineage bills a
/// derivative; a snapshot's clone is billed like its disk; a deleted image still bills what
/// was derived from it.
async fn lineage_and_billing_follow_the_bits(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, bob) = (app.alice(), app.bob());
    let (_, admin) = app.add_customer("admin@example.com", &["--admin"]);
    let (alice_vdc, bob_vdc) = (app.alice.vdc_id, app.bob.vdc_id);

    // An image of a blank disk descends from the blank platform image, which bills nothing.
    let blank = alice
        .call("CreateDisk", disk_args(alice_vdc, "blank", BLANK_IMAGE))
        .await;
    let root = make_image(&alice, id(&blank, "disk_id"), "root").await;
    let listed = listed_image(&alice, root).await.unwrap();
    assert_eq!(listed["source_image_id"], BLANK_IMAGE);
    assert_eq!(listed["product_offer_id"], Value::Null);
    let unbilled = create_server(&alice, alice_vdc, "unbilled", root, DISK_1GB).await;
    assert!(usage(&alice).await.is_empty());

    // Three generations, all Alice's: root -> (server) -> child -> (server) -> grandchild.
    let child = make_image(&alice, boot_disk(&unbilled).await, "child").await;
    let server = create_server(&alice, alice_vdc, "of child", child, DISK_1GB).await;
    let grandchild = make_image(&alice, boot_disk(&server).await, "grandchild").await;
    let listed = listed_image(&alice, grandchild).await.unwrap();
    assert_eq!(listed["source_image_id"], child);
    assert_eq!(listed["product_offer_id"], Value::Null);
    let disk = alice
        .call(
            "CreateDisk",
            disk_args(alice_vdc, "of grandchild", grandchild),
        )
        .await;
    assert_eq!(disk["image_id"], grandchild);

    // Billing the root bills every generation below it, naming the image used.
    admin
        .call(
            "SetImageProductOffer",
            json!({"image_id": root, "product_offer_id": IMAGE_OFFER}),
        )
        .await;
    for image in [child, grandchild] {
        let listed = listed_image(&alice, image).await.unwrap();
        assert_eq!(listed["product_offer_id"], IMAGE_OFFER, "{listed}");
    }
    let billed = create_server(&alice, alice_vdc, "billed", grandchild, DISK_1GB).await;
    let lines = usage(&alice).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_billed(&lines[0], grandchild, "server_id", id(&billed, "server_id"));

    // A snapshot's clone carries its disk's bits, and its lineage: billed likewise.
    let boot = boot_disk(&billed).await;
    let snapshot = alice
        .call("CreateDiskSnapshot", json!({"disk_id": boot, "name": "s"}))
        .await;
    let clone = alice
        .call(
            "CloneDisk",
            json!({"snapshot_id": snapshot["snapshot_id"], "new_disk_name": "clone",
                   "vdc_id": alice_vdc}),
        )
        .await;
    assert_eq!(clone["image_id"], grandchild);
    let lines = usage(&alice).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_billed(&lines[1], grandchild, "disk_id", id(&clone, "disk_id"));
    // An image of the clone descends from the grandchild.
    let of_clone = make_image(&alice, id(&clone, "disk_id"), "of clone").await;
    assert_eq!(
        listed_image(&alice, of_clone).await.unwrap()["source_image_id"],
        grandchild
    );

    // The root's offer removed, nothing below is billed; the nearest offer bills.
    admin
        .call(
            "SetImageProductOffer",
            json!({"image_id": root, "product_offer_id": 0}),
        )
        .await;
    create_server(&alice, alice_vdc, "free", grandchild, DISK_1GB).await;
    assert_eq!(usage(&alice).await.len(), 2);
    admin
        .call(
            "SetImageProductOffer",
            json!({"image_id": child, "product_offer_id": IMAGE_OFFER}),
        )
        .await;
    assert_eq!(
        listed_image(&alice, root).await.unwrap()["product_offer_id"],
        Value::Null
    );
    let billed = create_server(&alice, alice_vdc, "billed again", grandchild, DISK_1GB).await;
    let lines = usage(&alice).await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_billed(&lines[2], grandchild, "server_id", id(&billed, "server_id"));

    // Deleting the billed image does not free what descends from it: its owner's own
    // derivatives are still billed under its offer. (Its storage is no longer counted.)
    let used = |quota: Value| quota["storage_bytes_used"].as_i64().unwrap();
    let before = used(alice.call("GetQuota", json!({})).await);
    alice.call("DeleteImage", json!({"image_id": child})).await;
    let after = used(alice.call("GetQuota", json!({})).await);
    assert_eq!(before - after, DISK_1GB_SIZE as i64);
    assert!(!image_ids(&alice).await.contains(&child));
    let err = alice
        .fail("CreateServer", server_args(alice_vdc, "gone", child))
        .await;
    assert_eq!(err.code, "NOT_FOUND", "{err:?}");
    let listed = listed_image(&alice, grandchild).await.unwrap();
    assert_eq!(listed["source_image_id"], child);
    assert_eq!(listed["product_offer_id"], IMAGE_OFFER);
    let billed = create_server(&alice, alice_vdc, "after delete", grandchild, DISK_1GB).await;
    let lines = usage(&alice).await;
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_billed(&lines[3], grandchild, "server_id", id(&billed, "server_id"));
    let err = admin
        .fail(
            "SetImageProductOffer",
            json!({"image_id": child, "product_offer_id": 0}),
        )
        .await;
    assert_eq!(err.code, "NOT_FOUND", "{err:?}");

    // Published to Bob (with leave to publish further), the grandchild bills Bob too; once
    // Alice deletes the image it was published from, Bob's copies of it make nothing new.
    alice
        .call(
            "PublishImage",
            json!({"image_id": grandchild, "publish_to": app.bob.customer_uuid,
                   "allow_republish": true}),
        )
        .await;
    let bobs = create_server(&bob, bob_vdc, "bob's", grandchild, DISK_1GB).await;
    let bob_copy = make_image(&bob, boot_disk(&bobs).await, "bob's copy").await;
    let from_copy = create_server(&bob, bob_vdc, "from copy", bob_copy, DISK_1GB).await;
    let lines = usage(&bob).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_billed(&lines[0], grandchild, "server_id", id(&bobs, "server_id"));
    assert_billed(
        &lines[1],
        bob_copy,
        "server_id",
        id(&from_copy, "server_id"),
    );
    alice
        .call("DeleteImage", json!({"image_id": grandchild}))
        .await;
    let err = bob
        .fail("CreateServer", server_args(bob_vdc, "orphan", bob_copy))
        .await;
    assert_denied_naming(&err, grandchild);
    assert!(err.message.contains("deleted"), "{err:?}");
    assert_eq!(usage(&bob).await.len(), 2);
    // Alice's own derivatives of it are hers: still usable.
    let of_clone_server = create_server(&alice, alice_vdc, "mine", of_clone, DISK_1GB).await;
    assert_eq!(of_clone_server["image_id"], of_clone);
}
db_test!(
    lineage_and_billing_follow_the_bits,
    lineage_and_billing_follow_the_bits
);

/// ListImageShares names customers by uuid and billing entities by name: no e-mail address
/// appears. It shows whether each publication allows re-publication.
async fn image_shares_show_uuids_and_names_not_emails(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.alice();
    let acme = app.server.add_billing_entity("Acme").unwrap();
    let disk = alice
        .call("CreateDisk", disk_args(app.alice.vdc_id, "d", BLANK_IMAGE))
        .await;
    let image = make_image(&alice, id(&disk, "disk_id"), "shared").await;
    alice
        .call(
            "PublishImage",
            json!({"image_id": image, "publish_to": app.bob.customer_uuid}),
        )
        .await;
    alice
        .call(
            "PublishImage",
            json!({"image_id": image, "publish_to": acme, "allow_republish": true}),
        )
        .await;
    // Publishing again without the flag leaves what the publication allows as it was.
    alice
        .call(
            "PublishImage",
            json!({"image_id": image, "publish_to": acme, "allow_republish": null}),
        )
        .await;
    let shares = alice
        .call("ListImageShares", json!({"image_id": image}))
        .await;
    assert!(
        !shares.to_string().contains('@'),
        "ListImageShares shows an e-mail address: {shares}"
    );
    let shares = shares.as_array().unwrap();
    assert_eq!(shares.len(), 2, "{shares:?}");
    assert_eq!(shares[0]["kind"], "customer");
    assert_eq!(shares[0]["uuid"], app.bob.customer_uuid.as_str());
    assert_eq!(shares[0]["name"], app.bob.customer_uuid.as_str());
    assert_eq!(shares[0]["allow_republish"], false);
    assert_eq!(shares[1]["kind"], "billing_entity");
    assert_eq!(shares[1]["uuid"], acme.as_str());
    assert_eq!(shares[1]["name"], "Acme");
    assert_eq!(shares[1]["allow_republish"], true);

    // Withdrawing the leave explicitly.
    alice
        .call(
            "PublishImage",
            json!({"image_id": image, "publish_to": acme, "allow_republish": false}),
        )
        .await;
    let shares = alice
        .call("ListImageShares", json!({"image_id": image}))
        .await;
    assert_eq!(shares[1]["allow_republish"], false);
}
db_test!(
    image_shares_show_uuids_and_names_not_emails,
    image_shares_show_uuids_and_names_not_emails
);

/// The statements the server ran that name the `images` table, from its JSON log (sqlx logs
/// each statement at debug level).
fn image_statements(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("\"target\":\"sqlx::query\"") && l.contains("images"))
        .count()
}

/// A lineage 64 images deep (issue 20): every image inherits the root's offer, and listing
/// them all reads their lineages in a bounded number of statements (one recursive walk for
/// the page), not one per step (about 2,000 here).
async fn deep_lineages_are_read_in_bounded_queries(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        crate::support::ServerOptions {
            args: vec!["--hypervisor".into(), "none".into()],
            env: vec![("RUST_LOG".into(), "info,sqlx::query=debug".into())],
            ..Default::default()
        },
    )
    .await;
    let alice = app.alice();
    let db = crate::support::server_db::ServerDb::open(&app.server).await;
    let mut chain: Vec<i64> = Vec::new();
    for depth in 0..=64 {
        let image: i64 = sqlx::query_scalar(
            "INSERT INTO images (uuid, customer_id, name, size, created, product_offer_id, \
             source_image_id) VALUES ($1, $2, $3, 1073741824, 0, $4, $5) RETURNING id",
        )
        .bind(format!("deep-{depth}"))
        .bind(app.alice.customer_id)
        .bind(format!("copy {depth}"))
        .bind((depth == 0).then_some(IMAGE_OFFER))
        .bind(chain.last().copied())
        .fetch_one(db.pool())
        .await
        .unwrap();
        chain.push(image);
    }
    // Signed in first, so that the listing below is all that runs.
    alice.call("GetQuota", json!({})).await;

    let before = image_statements(&app.server.log_text());
    let listed = alice.call("ListImages", json!({})).await;
    let statements = image_statements(&app.server.log_text()) - before;
    for image in &chain {
        let found = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["image_id"] == *image)
            .unwrap_or_else(|| panic!("image {image} listed: {listed}"));
        assert_eq!(found["product_offer_id"], IMAGE_OFFER, "{found}");
    }
    assert!(
        (1..=4).contains(&statements),
        "{statements} statements on images for one ListImages"
    );

    // The deepest one's lineage decides what a disk made from it is billed under.
    let deepest = *chain.last().unwrap();
    let disk = alice
        .call("CreateDisk", disk_args(app.alice.vdc_id, "deep", deepest))
        .await;
    let lines = usage(&alice).await;
    let line = lines
        .iter()
        .find(|l| l["kind"] == "image_use")
        .unwrap_or_else(|| panic!("an image_use line: {lines:?}"));
    assert_billed(line, deepest, "disk_id", id(&disk, "disk_id"));
}
db_test!(
    deep_lineages_are_read_in_bounded_queries,
    deep_lineages_are_read_in_bounded_queries
);
