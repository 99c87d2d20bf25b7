//! Fair scheduling: long jobs never take the workers quick jobs need, and one customer's backlog
//! never makes another customer's jobs wait behind all of it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::catalogue::{BLANK_IMAGE, DISK_20GB, SERVER_1CPU_1GB};
use crate::support::fetch_disk::{fetch, fetch_args};
use crate::support::image_server::{ImageServer, Served};
use crate::support::{Api, Backend, MIB, ServerOptions, TestApp, db_test};

fn options(extra: &[&str]) -> ServerOptions {
    let mut args: Vec<String> = ["--allow-fetch-from", "127.0.0.0/8", "--hypervisor", "none"]
        .into_iter()
        .map(String::from)
        .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    ServerOptions {
        args,
        ..Default::default()
    }
}

/// A source that dribbles: 16 MiB at 64 KiB per 100 ms takes about 25 s.
fn dribbling() -> Served {
    Served {
        data: vec![0x42u8; (16 * MIB) as usize].into(),
        pace: Some((64 << 10, Duration::from_millis(100))),
        ..Default::default()
    }
}

async fn job(api: &Api, job_id: i64) -> Value {
    api.call("GetJob", json!({"job_id": job_id})).await
}

/// Waits until `job_id` is running.
async fn until_running(api: &Api, job_id: i64) {
    api.job_until(job_id, |job| job["status"] == 2).await;
}

async fn cancel(api: &Api, job_ids: &[i64]) {
    for &job_id in job_ids {
        let _ = api.try_call("CancelJob", json!({"job_id": job_id})).await;
    }
}

/// Two customers fill every long worker and every transfer limit with slow fetches (and queue
/// more); a third customer's StartServer still runs at once.
async fn fetches_never_hold_up_server_power(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        options(&["--workers", "2", "--max-fetches-per-customer", "1"]),
    )
    .await;
    let images = ImageServer::start().await;
    images.put("slow.img", dribbling());
    let (alice, bob) = (app.alice(), app.bob());
    let (carol_account, carol) = app.add_customer("carol@example.com", &[]);

    let mut fetches = Vec::new();
    for (api, vdc) in [(&alice, app.alice.vdc_id), (&bob, app.bob.vdc_id)] {
        let mut mine = Vec::new();
        for n in 0..3 {
            let args = fetch_args(&images.url("slow.img"), vdc, &format!("slow-{n}"));
            mine.push(fetch(api, args).await);
        }
        until_running(api, mine[0]).await;
        fetches.push((api, mine));
    }

    let server = carol
        .call(
            "CreateServer",
            json!({"vdc_id": carol_account.vdc_id, "vlan_id": -1, "server_name": "web",
                   "image_id": BLANK_IMAGE, "server_productoffer_id": SERVER_1CPU_1GB,
                   "disk_productoffer_ids": [DISK_20GB]}),
        )
        .await;
    let started = carol
        .call("StartServer", json!({"server_id": server["server_id"]}))
        .await;
    let start = carol
        .call(
            "WaitForJob",
            json!({"job_id": started["job_id"], "timeout_seconds": 15}),
        )
        .await;
    // The fetches are still going: the start did not wait for a worker they freed.
    for (api, mine) in &fetches {
        let first = job(api, mine[0]).await;
        assert_eq!(first["status"], 2, "{first}");
    }
    assert_eq!(
        start["status"], 1,
        "StartServer ran beside the fetches: {start}"
    );
    for (api, mine) in &fetches {
        cancel(api, mine).await;
    }
}
db_test!(
    fetches_never_hold_up_server_power,
    fetches_never_hold_up_server_power
);

/// One worker, and Alice queues three fetches before Bob queues one: Bob's runs as soon as the
/// worker is free, before Alice's second.
async fn a_backlog_does_not_make_others_wait(backend: Backend) {
    let app = TestApp::start_with(backend, options(&["--workers", "1"])).await;
    let images = ImageServer::start().await;
    // The first (about 3 s) is slow enough for everything to be queued while it runs.
    images.put(
        "first.img",
        Served {
            data: vec![0x42u8; (4 * MIB) as usize].into(),
            pace: Some((128 << 10, Duration::from_millis(100))),
            ..Default::default()
        },
    );
    let small = images.put_data("small.img", vec![0x17u8; 64 << 10]);
    let (alice, bob) = (app.alice(), app.bob());
    let first = fetch(
        &alice,
        fetch_args(&images.url("first.img"), app.alice.vdc_id, "first"),
    )
    .await;
    until_running(&alice, first).await;
    let mut alices = vec![first];
    for n in 0..2 {
        let args = fetch_args(&small, app.alice.vdc_id, &format!("a{n}"));
        alices.push(fetch(&alice, args).await);
    }
    let bobs = fetch(&bob, fetch_args(&small, app.bob.vdc_id, "b")).await;

    let bob_done = bob.job_ok(bobs).await;
    let alice_second = alice.job_ok(alices[1]).await;
    alice.job_ok(alices[2]).await;
    let started = |j: &Value| j["started"].as_str().unwrap().to_string();
    assert!(
        started(&bob_done) < started(&alice_second),
        "Bob's fetch ran before Alice's second: {bob_done} {alice_second}"
    );
}
db_test!(
    a_backlog_does_not_make_others_wait,
    a_backlog_does_not_make_others_wait
);
