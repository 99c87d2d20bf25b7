//! Several `extility serve` processes on one database share the job queue: every job is
//! claimed and run exactly once.

mod common;

use common::{Api, Backend, ServerOptions, TestDatabase, TestServer};
use serde_json::json;
use sqlx::Connection;

async fn two_nodes_run_each_job_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let db = TestDatabase::new(backend, &data).await;
    let node = |name: &str| ServerOptions {
        node_id: Some(name.to_string()),
        args: vec!["--workers".into(), "3".into()],
        ..ServerOptions::default()
    };
    let a = TestServer::spawn(&db, &data, node("node-a"));
    let b = TestServer::spawn(&db, &data, node("node-b"));
    let customer = a.add_customer("carol@example.com", "carol-password");
    let via_a = a.api(&customer.email, &customer.password);
    let via_b: Api = b.api(&customer.email, &customer.password);

    const SERVERS: usize = 24;
    let mut servers = Vec::new();
    for i in 0..SERVERS {
        let server = via_a
            .call(
                "CreateServer",
                json!({"vdc_id": customer.vdc_id, "vlan_id": -1, "server_name": format!("s{i}"),
                       "image_id": 66, "server_productoffer_id": 18, "disk_productoffer_ids": [29]}),
            )
            .await;
        servers.push(server["server_id"].as_i64().unwrap());
    }
    // Queue the starts through both nodes at once, so both claim from the same queue.
    let starts = servers.iter().enumerate().map(|(i, id)| {
        let api = if i % 2 == 0 {
            via_a.clone()
        } else {
            via_b.clone()
        };
        let id = *id;
        async move {
            api.call("StartServer", json!({"server_id": id})).await["job_id"]
                .as_i64()
                .unwrap()
        }
    });
    let jobs = futures::future::join_all(starts).await;
    for job in &jobs {
        via_b.job_ok(*job).await;
    }
    for id in &servers {
        assert_eq!(
            via_a.call("GetServer", json!({"server_id": id})).await["status"],
            2
        );
    }

    // The database shows each job claimed once, and by one of the two nodes.
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as("SELECT id, attempts, status FROM jobs")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows.len(), SERVERS);
    for (id, attempts, status) in &rows {
        assert_eq!(
            (*attempts, *status),
            (1, 1),
            "job {id} ran {attempts} times"
        );
    }
    let nodes: Vec<(String,)> = sqlx::query_as("SELECT DISTINCT node FROM servers")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(
        nodes.iter().all(|(n,)| n == "node-a" || n == "node-b"),
        "{nodes:?}"
    );
    conn.close().await.unwrap();
}
db_test!(two_nodes_run_each_job_once, two_nodes_run_each_job_once);
