//! A first walk through the JSON API on both engines.

use crate::support::catalogue::{BLANK_IMAGE, DISK_20GB, SERVER_1CPU_1GB};
use crate::support::{Backend, TestApp, db_test};
use serde_json::json;

async fn create_server_and_start_it(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.alice();
    let vdcs = alice.call("ListVDCs", json!({})).await;
    assert_eq!(vdcs.as_array().unwrap().len(), 1);
    assert_eq!(vdcs[0]["vdc_name"], "Default VDC");
    let vdc = vdcs[0]["vdc_id"].as_i64().unwrap();
    let server = alice
        .call(
            "CreateServer",
            json!({"vdc_id": vdc, "vlan_id": -1, "server_name": "web", "image_id": BLANK_IMAGE,
                   "server_productoffer_id": SERVER_1CPU_1GB, "disk_productoffer_ids": [DISK_20GB]}),
        )
        .await;
    assert_eq!(server["status"], 5);
    let job = alice
        .call("StartServer", json!({"server_id": server["server_id"]}))
        .await;
    alice.job_ok(job["job_id"].as_i64().unwrap()).await;
    let got = alice
        .call("GetServer", json!({"server_id": server["server_id"]}))
        .await;
    assert_eq!(got["status"], 2);
}
db_test!(create_server_and_start_it, create_server_and_start_it);
