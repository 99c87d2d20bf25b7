//! VLAN subnets are cut from the pool by overlap, not equality (issue 20): after
//! `--vlan-prefix` changed, a new VLAN never gets a subnet inside, or around, one cut before.

use serde_json::json;

use crate::support::{Backend, ServerOptions, TestApp, db_test};

async fn subnet_of_new_vlan(app: &TestApp, name: &str) -> String {
    let vlan = app
        .alice()
        .call(
            "CreateVLAN",
            json!({"vdc_id": app.alice.vdc_id, "vlan_name": name}),
        )
        .await;
    vlan["subnet"].as_str().unwrap().to_string()
}

async fn subnets_never_overlap_across_prefix_changes(backend: Backend) {
    let mut app = TestApp::start_with(
        backend,
        ServerOptions {
            args: ["--hypervisor", "none", "--vlan-prefix", "22"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(subnet_of_new_vlan(&app, "wide").await, "10.64.0.0/22");

    // Narrower: the /24s inside the /22 are taken.
    app.server.set_option("--vlan-prefix", "24");
    app.server.restart();
    assert_eq!(subnet_of_new_vlan(&app, "narrow").await, "10.64.4.0/24");
    assert_eq!(subnet_of_new_vlan(&app, "next").await, "10.64.5.0/24");

    // Wider again: the /22 around those /24s is taken, and so is the first.
    app.server.set_option("--vlan-prefix", "22");
    app.server.restart();
    assert_eq!(subnet_of_new_vlan(&app, "wide again").await, "10.64.8.0/22");

    // Narrower still: the first /28 in the gap the two /24s left (10.64.6.0/23 is free),
    // none inside the networks taken.
    app.server.set_option("--vlan-prefix", "28");
    app.server.restart();
    assert_eq!(subnet_of_new_vlan(&app, "tiny").await, "10.64.6.0/28");
    let subnets: Vec<String> = app
        .alice()
        .call("ListVLANs", json!({"vdc_id": app.alice.vdc_id}))
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["subnet"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        subnets,
        [
            "10.64.0.0/22",
            "10.64.4.0/24",
            "10.64.5.0/24",
            "10.64.8.0/22",
            "10.64.6.0/28"
        ]
    );
}
db_test!(
    subnets_never_overlap_across_prefix_changes,
    subnets_never_overlap_across_prefix_changes
);
