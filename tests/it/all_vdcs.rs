//! ListAllDisks and ListAllServers (issue 27): a customer's disks and servers of every VDC in
//! one call, exactly what ListDisks and ListServers give VDC by VDC (servers with their disks,
//! port forwards and SSH keys), in id order, paged and filtered like them, and nothing of
//! another customer's. On SQLite and PostgreSQL, over JSON.

use serde_json::{Value, json};

use crate::support::catalogue::{BLANK_IMAGE, DISK_1GB, SERVER_1CPU_512MB};
use crate::support::{Api, Backend, ServerOptions, TestApp, db_test, id};

async fn server(api: &Api, vdc: i64, vlan: i64, name: &str) -> i64 {
    let server = api
        .call(
            "CreateServer",
            json!({"vdc_id": vdc, "vlan_id": vlan, "server_name": name, "image_id": BLANK_IMAGE,
                   "server_productoffer_id": SERVER_1CPU_512MB,
                   "disk_productoffer_ids": [DISK_1GB, DISK_1GB]}),
        )
        .await;
    id(&server, "server_id")
}

async fn disk(api: &Api, vdc: i64, name: &str) {
    api.call(
        "CreateDisk",
        json!({"vdc_id": vdc, "name": name, "disk_productoffer_id": DISK_1GB, "image_id": 0}),
    )
    .await;
}

/// `op` called VDC by VDC, the items in id order.
async fn vdc_by_vdc(api: &Api, op: &str, vdcs: &[i64], field: &str) -> Vec<Value> {
    let mut all = Vec::new();
    for vdc in vdcs {
        let list = api.call(op, json!({"vdc_id": vdc})).await;
        all.extend(list.as_array().unwrap().iter().cloned());
    }
    all.sort_by_key(|item| id(item, field));
    all
}

/// `op` a page of one at a time.
async fn one_by_one(api: &Api, op: &str, field: &str) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    loop {
        let mut args = json!({"page_size": 1});
        if let Some(last) = all.last() {
            args["after_id"] = json!(id(last, field));
        }
        let page = api.call(op, args).await.as_array().unwrap().clone();
        if page.is_empty() {
            return all;
        }
        assert_eq!(page.len(), 1, "{op}: a page of one had {page:?}");
        all.extend(page);
        assert!(all.len() < 100, "{op} never ends");
    }
}

async fn lists_of_all_vdcs_are_the_lists_of_each(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        ServerOptions {
            args: vec!["--hypervisor".into(), "none".into()],
            ..Default::default()
        },
    )
    .await;
    let alice = app.alice();
    let bob = app.bob();
    let first = app.alice.vdc_id;
    let second = id(
        &alice.call("CreateVDC", json!({"vdc_name": "second"})).await,
        "vdc_id",
    );
    // Made in turns between the VDCs, so that id order mixes them.
    let web = server(&alice, first, -1, "web").await;
    disk(&alice, second, "loose in second").await;
    let lan = alice
        .call("CreateVLAN", json!({"vdc_id": second, "vlan_name": "lan"}))
        .await;
    let db = server(&alice, second, id(&lan, "vlan_id"), "db").await;
    disk(&alice, first, "loose in first").await;
    alice
        .call(
            "AddPortForward",
            json!({"server_id": db, "guest_port": 5432}),
        )
        .await;
    server(&bob, app.bob.vdc_id, -1, "bob's").await;
    disk(&bob, app.bob.vdc_id, "bob's disk").await;

    let disks = alice.call("ListAllDisks", json!({})).await;
    let expected = vdc_by_vdc(&alice, "ListDisks", &[first, second], "disk_id").await;
    assert_eq!(disks.as_array().unwrap(), &expected);
    assert_eq!(
        expected.len(),
        6,
        "two servers' two disks and two loose ones"
    );
    let servers = alice.call("ListAllServers", json!({})).await;
    let expected = vdc_by_vdc(&alice, "ListServers", &[first, second], "server_id").await;
    assert_eq!(servers.as_array().unwrap(), &expected);
    assert_eq!(
        expected
            .iter()
            .map(|s| id(s, "server_id"))
            .collect::<Vec<_>>(),
        [web, db]
    );
    assert_eq!(expected[1]["port_forwards"][0]["guest_port"], 5432);
    assert_eq!(expected[1]["disks"].as_array().unwrap().len(), 2);

    // Paged: a page at a time gives the same, each item once.
    assert_eq!(
        &one_by_one(&alice, "ListAllDisks", "disk_id").await,
        disks.as_array().unwrap()
    );
    assert_eq!(
        &one_by_one(&alice, "ListAllServers", "server_id").await,
        servers.as_array().unwrap()
    );
    // Filtered by name, ignoring case.
    let loose = alice.call("ListAllDisks", json!({"name": "LOOSE"})).await;
    let names: Vec<&str> = loose
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["disk_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["loose in second", "loose in first"]);
    let db_only = alice.call("ListAllServers", json!({"name": "d"})).await;
    assert_eq!(db_only.as_array().unwrap().len(), 1);
    assert_eq!(id(&db_only[0], "server_id"), db);

    // Bob sees only his own.
    let bobs = bob.call("ListAllDisks", json!({})).await;
    assert!(
        bobs.as_array()
            .unwrap()
            .iter()
            .all(|d| id(d, "vdc_id") == app.bob.vdc_id),
        "{bobs}"
    );
    let bobs = bob.call("ListAllServers", json!({})).await;
    assert_eq!(bobs.as_array().unwrap().len(), 1, "{bobs}");
    assert_eq!(bobs[0]["server_name"], "bob's");

    // Out of range, as every list.
    let err = alice.fail("ListAllDisks", json!({"page_size": 1001})).await;
    assert_eq!(err.code, "INVALID_ARGUMENT", "{err:?}");
}

db_test!(
    lists_of_all_vdcs_are_the_lists_of_each,
    lists_of_all_vdcs_are_the_lists_of_each
);
