//! A customer sees and touches only its own resources: another customer's id answers exactly
//! like an id that does not exist, over JSON and SOAP, and changes nothing.

use crate::support::catalogue::{BLANK_IMAGE, DISK_1GB, DISK_20GB, SERVER_1CPU_1GB};
use crate::support::{Api, ApiError, Backend, TestApp, db_test};
use serde_json::{Value, json};

const MISSING: i64 = 8_000_000;

/// Calls `op` with `args` where every `"$ID"` is replaced by `target`, as `caller`.
async fn attempt(caller: &Api, op: &str, args: &Value, target: i64) -> ApiError {
    let text = args.to_string().replace("\"$ID\"", &target.to_string());
    caller.fail(op, serde_json::from_str(&text).unwrap()).await
}

async fn another_customers_ids_look_missing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (alice, bob) = (app.alice(), app.bob());
    let vdc = app.alice.vdc_id;
    let vlan = alice
        .call("CreateVLAN", json!({"vdc_id": vdc, "vlan_name": "private"}))
        .await;
    let server = alice
        .call(
            "CreateServer",
            json!({"vdc_id": vdc, "vlan_id": vlan["vlan_id"], "server_name": "secret",
                   "image_id": BLANK_IMAGE, "server_productoffer_id": SERVER_1CPU_1GB,
                   "disk_productoffer_ids": [DISK_20GB]}),
        )
        .await;
    let disk = alice
        .call(
            "CreateDisk",
            json!({"vdc_id": vdc, "name": "loose", "disk_productoffer_id": DISK_1GB,
                   "image_id": 0}),
        )
        .await;
    let job = alice
        .call("StartServer", json!({"server_id": server["server_id"]}))
        .await;
    alice.job_ok(job["job_id"].as_i64().unwrap()).await;
    let bob_server = bob
        .call(
            "CreateServer",
            json!({"vdc_id": app.bob.vdc_id, "vlan_id": -1, "server_name": "mine",
                   "image_id": BLANK_IMAGE, "server_productoffer_id": SERVER_1CPU_1GB,
                   "disk_productoffer_ids": [DISK_20GB]}),
        )
        .await;

    let before = snapshot(&alice, vdc).await;
    let ids = |name: &str| -> i64 {
        match name {
            "vdc" => vdc,
            "vlan" => vlan["vlan_id"].as_i64().unwrap(),
            "server" => server["server_id"].as_i64().unwrap(),
            "disk" => disk["disk_id"].as_i64().unwrap(),
            "job" => job["job_id"].as_i64().unwrap(),
            _ => unreachable!(),
        }
    };
    let bob_server_id = bob_server["server_id"].clone();
    let cases: Vec<(&str, &str, Value)> = vec![
        ("ListVLANs", "vdc", json!({"vdc_id": "$ID"})),
        (
            "CreateVLAN",
            "vdc",
            json!({"vdc_id": "$ID", "vlan_name": "x"}),
        ),
        ("ListDisks", "vdc", json!({"vdc_id": "$ID"})),
        ("ListServers", "vdc", json!({"vdc_id": "$ID"})),
        (
            "CreateDisk",
            "vdc",
            json!({"vdc_id": "$ID", "name": "x", "disk_productoffer_id": DISK_20GB,
                   "image_id": 0}),
        ),
        (
            "CreateServer",
            "vdc",
            json!({"vdc_id": "$ID", "vlan_id": -1, "server_name": "x", "image_id": BLANK_IMAGE,
                   "server_productoffer_id": SERVER_1CPU_1GB, "disk_productoffer_ids": [DISK_20GB]}),
        ),
        (
            "CreateServer",
            "vlan",
            json!({"vdc_id": app.bob.vdc_id, "vlan_id": "$ID", "server_name": "x",
                   "image_id": BLANK_IMAGE, "server_productoffer_id": SERVER_1CPU_1GB,
                   "disk_productoffer_ids": [DISK_20GB]}),
        ),
        (
            "FetchDisk",
            "vdc",
            json!({"url": "http://example.com/a.img", "checksum": null, "conn_user": null,
                   "conn_pass": null, "name": "x", "disk_productoffer_id": DISK_20GB,
                   "vdc_id": "$ID", "make_image": false}),
        ),
        ("GetDisk", "disk", json!({"disk_id": "$ID"})),
        ("DeleteDisk", "disk", json!({"disk_id": "$ID"})),
        (
            "AttachDisk",
            "disk",
            json!({"server_id": bob_server_id, "disk_id": "$ID"}),
        ),
        (
            "DetachDisk",
            "disk",
            json!({"server_id": bob_server_id, "disk_id": "$ID"}),
        ),
        ("GetServer", "server", json!({"server_id": "$ID"})),
        ("StartServer", "server", json!({"server_id": "$ID"})),
        (
            "StopServer",
            "server",
            json!({"server_id": "$ID", "stop_method": 2}),
        ),
        ("DestroyServer", "server", json!({"server_id": "$ID"})),
        ("GetJob", "job", json!({"job_id": "$ID"})),
        ("CancelJob", "job", json!({"job_id": "$ID"})),
        (
            "WaitForJob",
            "job",
            json!({"job_id": "$ID", "timeout_seconds": 0}),
        ),
    ];
    for (op, kind, args) in &cases {
        let target = ids(kind);
        let theirs = attempt(&bob, op, args, target).await;
        let missing = attempt(&bob, op, args, MISSING).await;
        assert_eq!(
            theirs.code, "NOT_FOUND",
            "{op} on alice's {kind}: {theirs:?}"
        );
        assert_eq!(theirs.status, missing.status, "{op}");
        assert_eq!(
            theirs.message.replace(&target.to_string(), "N"),
            missing.message.replace(&MISSING.to_string(), "N"),
            "{op}: another customer's {kind} must look like a missing one"
        );
    }

    // Lists show nothing of alice's.
    let listed = |v: Value, key: &str, id: i64| v.as_array().unwrap().iter().any(|x| x[key] == id);
    assert!(!listed(
        bob.call("ListVDCs", json!({})).await,
        "vdc_id",
        vdc
    ));
    assert!(!listed(
        bob.call("ListJobs", json!({})).await,
        "job_id",
        ids("job")
    ));
    assert_eq!(bob.call("ListJobs", json!({})).await, json!([]));

    // And nothing of alice's changed.
    assert_eq!(snapshot(&alice, vdc).await, before);
}
db_test!(
    another_customers_ids_look_missing,
    another_customers_ids_look_missing
);

/// Everything alice can see of her VDC.
async fn snapshot(alice: &Api, vdc: i64) -> Value {
    json!({
        "vdcs": alice.call("ListVDCs", json!({})).await,
        "vlans": alice.call("ListVLANs", json!({"vdc_id": vdc})).await,
        "disks": alice.call("ListDisks", json!({"vdc_id": vdc})).await,
        "servers": alice.call("ListServers", json!({"vdc_id": vdc})).await,
        "jobs": alice.call("ListJobs", json!({})).await,
    })
}
