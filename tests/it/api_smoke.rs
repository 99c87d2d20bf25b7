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

/// Not on a terminal, the server logs one JSON object per line (for log collectors), with the
/// time, the level, the message and the event's fields as keys of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_json_lines_when_not_on_a_terminal() {
    let app = TestApp::start(Backend::Sqlite).await;
    app.alice()
        .call("CreateVDC", serde_json::json!({"vdc_name": "logged"}))
        .await;
    let log = app.server.log_text();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() >= 2, "{log}");
    for line in &lines {
        for key in ["timestamp", "level", "message", "target"] {
            assert!(line.get(key).is_some(), "{key} in {line}");
        }
    }
    let serving = lines
        .iter()
        .find(|l| l["message"] == "serving")
        .unwrap_or_else(|| panic!("a 'serving' line: {log}"));
    assert_eq!(serving["url"], app.server.url.as_str(), "{serving}");
    assert!(
        log.lines()
            .all(|l| l.starts_with('{') || l.starts_with("extility listening on ")),
        "nothing but JSON lines (and the address line on stdout): {log}"
    );
}
