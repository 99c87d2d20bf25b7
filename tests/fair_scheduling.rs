//! Fair scheduling: long jobs never take the workers quick jobs need, and one customer's backlog
//! never makes another customer's jobs wait behind all of it.

mod common;
mod fetch_support;

use std::time::Duration;

use common::{Api, Backend, ServerOptions, TestApp};
use fetch_support::api::{MIB, fetch, fetch_args};
use fetch_support::{ImageServer, Served};
use serde_json::{Value, json};

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
        data: vec![0x42u8; 16 * MIB].into(),
        pace: Some((64 << 10, Duration::from_millis(100))),
        ..Default::default()
    }
}

async fn job(api: &Api, job_id: i64) -> Value {
    api.call("GetJob", json!({"job_id": job_id})).await
}

/// Waits (by asking the server, which answers at once) until `job_id` is running.
async fn until_running(api: &Api, job_id: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let now = job(api, job_id).await;
        if now["status"] == 2 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {job_id} never ran: {now}"
        );
    }
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
    let carol_account = app.customer("carol@example.com", "carol-password");
    let carol = app
        .server
        .api(&carol_account.email, &carol_account.password);

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
                   "image_id": 66, "server_productoffer_id": 18, "disk_productoffer_ids": [31]}),
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
            data: vec![0x42u8; 4 * MIB].into(),
            pace: Some((128 << 10, Duration::from_millis(100))),
            ..Default::default()
        },
    );
    images.put_data("small.img", vec![0x17u8; 64 << 10]);
    let (alice, bob) = (app.alice(), app.bob());
    let first = fetch(
        &alice,
        fetch_args(&images.url("first.img"), app.alice.vdc_id, "first"),
    )
    .await;
    until_running(&alice, first).await;
    let mut alices = vec![first];
    for n in 0..2 {
        let args = fetch_args(&images.url("small.img"), app.alice.vdc_id, &format!("a{n}"));
        alices.push(fetch(&alice, args).await);
    }
    let bobs = fetch(
        &bob,
        fetch_args(&images.url("small.img"), app.bob.vdc_id, "b"),
    )
    .await;

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
