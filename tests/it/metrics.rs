//! `GET /metrics` (issue 14): the node's metrics in the Prometheus text format, for the
//! addresses of `--metrics-allow` only; calls counted by operation, adapter and outcome, jobs
//! by kind and status, fetched bytes, and the node's liveness; on SQLite and PostgreSQL.

use std::collections::HashMap;

use serde_json::json;

use crate::support::fetch_disk::{allowing, fetch, fetch_args};
use crate::support::image_server::ImageServer;
use crate::support::{Backend, ServerOptions, TestApp, db_test};

/// The samples of a Prometheus text page: `name{labels}` to value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(app: &TestApp) -> (u16, String, String) {
    let response = reqwest::get(format!("{}/metrics", app.server.url))
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

db_test!(
    metrics_count_calls_jobs_and_bytes,
    metrics_count_calls_jobs_and_bytes
);
async fn metrics_count_calls_jobs_and_bytes(backend: Backend) {
    let app = TestApp::start_with(backend, allowing("127.0.0.0/8")).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    alice
        .call("CreateVDC", json!({"vdc_name": "counted"}))
        .await;
    alice.fail("GetDisk", json!({"disk_id": 999_999})).await;
    let files = ImageServer::start().await;
    let image = vec![7u8; 1 << 20];
    let url = files.put_data("counted.img", image.clone());
    alice
        .job_ok(fetch(&alice, fetch_args(&url, vdc, "counted")).await)
        .await;

    let (status, content_type, text) = scrape(&app).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let found = samples(&text);
    let value = |name: &str| {
        *found
            .get(name)
            .unwrap_or_else(|| panic!("{name} in the metrics:\n{text}"))
    };
    assert_eq!(
        value(r#"extility_api_requests_total{operation="CreateVDC",outcome="OK",via="json"}"#),
        1.0
    );
    assert_eq!(
        value(r#"extility_api_requests_total{operation="GetDisk",outcome="NOT_FOUND",via="json"}"#),
        1.0
    );
    assert!(value(r#"extility_api_request_seconds_count{operation="FetchDisk"}"#) >= 1.0);
    assert_eq!(
        value(r#"extility_jobs{kind="FetchDisk",status="succeeded"}"#),
        1.0
    );
    assert_eq!(
        value(r#"extility_job_run_seconds_count{kind="FetchDisk",outcome="succeeded"}"#),
        1.0
    );
    assert_eq!(
        value(r#"extility_job_wait_seconds_count{kind="FetchDisk"}"#),
        1.0
    );
    assert!(value("extility_fetch_bytes_total") >= image.len() as f64);
    assert_eq!(
        value("extility_fetch_throughput_bytes_per_second_count"),
        1.0
    );
    assert!(value("extility_storage_volume_bytes") >= (1u64 << 30) as f64);
    assert!(value("extility_storage_free_bytes") > 0.0);
    assert_eq!(value("extility_vms_running"), 0.0);
    let up: Vec<_> = found
        .iter()
        .filter(|(name, _)| name.starts_with("extility_node_up{"))
        .collect();
    assert_eq!(up.len(), 1, "{text}");
    assert_eq!(*up[0].1, 1.0, "this node is alive: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_refused_outside_the_allowed_addresses() {
    let app = TestApp::start_with(
        Backend::Sqlite,
        ServerOptions {
            args: ["--metrics-allow", "192.0.2.0/24"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    )
    .await;
    let (status, _, text) = scrape(&app).await;
    assert_eq!(status, 403, "{text}");
    assert!(!text.contains("extility_"), "{text}");
}
