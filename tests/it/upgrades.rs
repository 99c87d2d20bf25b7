//! Upgrades (issue 22, item 5): a node refuses a database a newer release migrated, naming
//! both versions; a job of a kind a node has not got (queued by a newer node during a rolling
//! upgrade) waits for a node that knows it instead of failing.

use std::process::Command;

use extility::error::ApiResult;
use extility::jobs::queue::{self, ConcurrencyLimits};
use extility::jobs::{JobKind, JobOutcome, Lane, NewJob, RunningJob};
use extility::ops::accounts::customer;
use extility::ops::server::{StopHow, StopServerJob};
use extility::ops::state::AppState;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyPoolOptions;

use crate::support::in_process::in_process_node;
use crate::support::{Backend, ServerOptions, TestDatabase, TestServer, binary, db_test};

/// The schema version this build makes: its newest migration's number.
fn known() -> i64 {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.split('_').next()?.parse().ok())
        .max()
        .unwrap()
}

/// A database with a migration from a release newer than this one is refused by `serve` and
/// `migrate`, with both versions named, and left as it was.
async fn a_database_from_a_newer_release_is_refused(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let db = TestDatabase::new(backend, &data_dir).await;
    drop(TestServer::spawn(&db, &data_dir, ServerOptions::default()));
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new().connect(&db.url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from a newer release', $1, $2, 0)",
    )
    .bind(true)
    .bind(vec![0u8; 48])
    .execute(&pool)
    .await
    .unwrap();

    for command in [
        &["migrate"][..],
        &["serve", "--listen", "127.0.0.1:0", "--network", "user"],
    ] {
        let out = Command::new(binary())
            .args(command)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--database-url")
            .arg(&db.url)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command:?} ran: {stderr}");
        assert!(
            stderr.contains(&format!(
                "the database's schema is at version 9999, newer than this extility knows (up \
                 to version {})",
                known()
            )),
            "{command:?}: {stderr}"
        );
    }
    let newest: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(newest, 9999);
}
db_test!(
    a_database_from_a_newer_release_is_refused,
    a_database_from_a_newer_release_is_refused
);

/// A kind of job only a newer release has.
#[derive(Serialize, Deserialize)]
struct FromANewerRelease {
    server_id: i64,
}

impl JobKind for FromANewerRelease {
    const NAME: &'static str = "FromANewerRelease";
    const LANE: Lane = Lane::Quick;
    type Context = AppState;

    async fn run(self, _job: &RunningJob<AppState>) -> ApiResult<JobOutcome> {
        unreachable!("only claimed by the test, never run")
    }
}

/// A node leaves a job of a kind it has not got in the queue, untouched, while it runs the
/// jobs it knows; a node that knows the kind claims it.
async fn a_job_of_an_unknown_kind_waits_for_a_node_that_knows_it(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(backend, dir.path()).await;
    let newer = in_process_node(&db, &dir.path().join("newer"), "newer", &[]).await;
    let newer = newer.state().clone();
    let made = customer::create_customer(
        &newer.db,
        "upgrade@example.com",
        "upgrade-password",
        false,
        "D",
    )
    .await
    .unwrap();
    let job = |name: &str| (made.customer_id, name.to_string());
    let mut tx = newer.db.begin_write().await.unwrap();
    let future = newer
        .jobs
        .enqueue(
            &mut tx,
            new_job(
                job("From a newer release"),
                FromANewerRelease { server_id: 1 },
            ),
        )
        .await
        .unwrap();
    // A job this node knows, queued after it: a stop of a server that does not exist.
    let known = newer
        .jobs
        .enqueue(
            &mut tx,
            new_job(
                job("Stop server"),
                StopServerJob {
                    server_id: 999_999,
                    method: StopHow::Poweroff,
                },
            ),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // An older node: this build, which has not got the kind.
    let older = TestServer::spawn(&db, &dir.path().join("older"), ServerOptions::default());
    let api = older.api("upgrade@example.com", "upgrade-password");
    let (code, _) = api.job_fails(known).await;
    assert_eq!(code, "NOT_FOUND");
    let (status, attempts, error): (i64, i64, Option<String>) =
        sqlx::query_as("SELECT status, attempts, error_code FROM jobs WHERE id = $1")
            .bind(future)
            .fetch_one(newer.db.pool())
            .await
            .unwrap();
    assert_eq!(
        (status, attempts, error),
        (6, 0, None),
        "left queued, untouched"
    );

    let row = queue::claim(
        &newer.db,
        "newer",
        30_000,
        ConcurrencyLimits {
            transfers: 1,
            transfers_per_customer: 1,
        },
        Lane::Quick,
        "FromANewerRelease,StopServer",
    )
    .await
    .unwrap()
    .expect("the newer node claims it");
    assert_eq!(
        (row.id, row.job_type.as_str()),
        (future, "FromANewerRelease")
    );
}
fn new_job<K>((customer_id, name): (i64, String), params: K) -> NewJob<K> {
    NewJob::new(customer_id, name, params)
}

db_test!(
    a_job_of_an_unknown_kind_waits_for_a_node_that_knows_it,
    a_job_of_an_unknown_kind_waits_for_a_node_that_knows_it
);

/// The tables of the first release's schema (git 1a019bd, migrations 0001 and 0002).
const FIRST_RELEASE_TABLES: [&str; 15] = [
    "billing_entities",
    "customers",
    "vdcs",
    "vlans",
    "product_offers",
    "volumes",
    "images",
    "image_shares",
    "servers",
    "disks",
    "snapshots",
    "jobs",
    "job_secrets",
    "usage_records",
    "nodes",
];

/// Tables a node adds rows to as it starts (the demo catalogue's newer offers and images,
/// its own row in `nodes`): the old rows must still be there, new ones may join them.
const GROWING_AT_START: [&str; 3] = ["product_offers", "images", "nodes"];

/// The columns a table has, in order.
async fn columns_of(pool: &sqlx::AnyPool, backend: Backend, table: &str) -> Vec<String> {
    let sql = match backend {
        Backend::Sqlite => "SELECT name FROM pragma_table_info($1) ORDER BY cid",
        Backend::Postgres => {
            "SELECT CAST(column_name AS TEXT) FROM information_schema.columns \
             WHERE table_name = $1 AND table_schema = current_schema() ORDER BY ordinal_position"
        }
    };
    sqlx::query_scalar(sql)
        .bind(table)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Every row of a table, its `columns` as text, in a stable order: what "every row kept"
/// compares.
async fn rows_of(pool: &sqlx::AnyPool, table: &str, columns: &[String]) -> Vec<String> {
    use sqlx::Row;
    let sql = format!("SELECT {} FROM {table}", columns.join(", "));
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("reading {table}: {e}"));
    let mut texts: Vec<String> = rows
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    let text = |v: &dyn std::fmt::Debug| format!("{v:?}");
                    row.try_get::<Option<i64>, _>(i)
                        .map(|v| text(&v))
                        .or_else(|_| {
                            row.try_get::<Option<i32>, _>(i)
                                .map(|v| text(&v.map(i64::from)))
                        })
                        .or_else(|_| row.try_get::<Option<String>, _>(i).map(|v| text(&v)))
                        .or_else(|_| row.try_get::<Option<f64>, _>(i).map(|v| text(&v)))
                        .or_else(|_| row.try_get::<Option<bool>, _>(i).map(|v| text(&v)))
                        .or_else(|_| row.try_get::<Option<Vec<u8>>, _>(i).map(|v| text(&v)))
                        .unwrap_or_else(|e| panic!("{table} column {i}: {e}"))
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    texts.sort();
    texts
}

/// A database the first release made (`tests/fixtures/first-release/`, made by its
/// `make.sh` with the first release's binary: two customers, VDCs, a VLAN, servers started
/// and stopped, a disk with a snapshot and a clone, their jobs and usage) migrates to this
/// build's schema with every row kept, and the operations work on the old rows.
async fn a_first_release_database_migrates_with_every_row(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let db = TestDatabase::new(backend, &data_dir).await;
    let dump = match backend {
        Backend::Sqlite => include_str!("../fixtures/first-release/sqlite.sql"),
        Backend::Postgres => include_str!("../fixtures/first-release/postgres.sql"),
    };
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(dump))
        .execute(&pool)
        .await
        .expect("loading the first release's dump");
    // A fresh connection: pg_dump's script empties the search path of the one it ran on.
    pool.close().await;
    let pool = AnyPoolOptions::new().connect(&db.url).await.unwrap();
    let mut before = Vec::new();
    for table in FIRST_RELEASE_TABLES {
        let columns = columns_of(&pool, backend, table).await;
        let rows = rows_of(&pool, table, &columns).await;
        before.push((columns, rows));
    }
    assert!(before[8].1.len() >= 3, "the fixture has servers");
    // The volumes' bytes are not in the fixture: each volume gets a file of its size.
    let volumes: Vec<(String, i64)> = sqlx::query_as("SELECT file, size FROM volumes")
        .fetch_all(&pool)
        .await
        .unwrap();
    std::fs::create_dir_all(data_dir.join("volumes")).unwrap();
    for (file, size) in volumes {
        std::fs::File::create(data_dir.join("volumes").join(file))
            .unwrap()
            .set_len(size as u64)
            .unwrap();
    }
    pool.close().await;

    let options = ServerOptions {
        args: ["--hypervisor", "none"].map(String::from).to_vec(),
        ..ServerOptions::default()
    };
    let server = TestServer::spawn(&db, &data_dir, options);
    let pool = AnyPoolOptions::new().connect(&db.url).await.unwrap();
    for (table, (columns, old_rows)) in FIRST_RELEASE_TABLES.iter().zip(&before) {
        let rows = rows_of(&pool, table, columns).await;
        if GROWING_AT_START.contains(table) {
            let missing: Vec<&String> = old_rows.iter().filter(|r| !rows.contains(r)).collect();
            assert!(missing.is_empty(), "{table} lost {missing:?}");
        } else {
            assert_eq!(&rows, old_rows, "{table}");
        }
    }

    // The old customers sign in with their old passwords and find what they had.
    use crate::support::id;
    use serde_json::json;
    let alice = server.api("alice@example.com", "alice-password");
    let vdcs = alice.call("ListVDCs", json!({})).await;
    let names: Vec<&str> = vdcs
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["vdc_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Default VDC", "Second VDC"]);
    let vdc = id(&vdcs[0], "vdc_id");
    let servers = alice.call("ListServers", json!({"vdc_id": vdc})).await;
    let server_named = |name: &str| {
        servers
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["server_name"] == name)
            .unwrap_or_else(|| panic!("no server {name} in {servers}"))
            .clone()
    };
    let web = server_named("web");
    assert_eq!(web["status_name"], "stopped", "{web}");
    assert_eq!(web["disks"].as_array().unwrap().len(), 2, "{web}");
    let disks = alice.call("ListDisks", json!({"vdc_id": vdc})).await;
    let disk_named = |name: &str| {
        disks
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["disk_name"] == name)
            .unwrap_or_else(|| panic!("no disk {name} in {disks}"))
            .clone()
    };
    let data = disk_named("data");
    let snapshots = alice
        .call("ListSnapshots", json!({"disk_id": id(&data, "disk_id")}))
        .await;
    assert_eq!(snapshots[0]["snapshot_name"], "before", "{snapshots}");
    let jobs = alice.call("ListJobs", json!({})).await;
    assert!(
        jobs.as_array().unwrap().iter().all(|j| j["status"] == 1),
        "{jobs}"
    );

    // Operations on the old rows: start and stop an old server, rename another, delete an
    // old disk, make a new server in an old VDC.
    let web_id = id(&web, "server_id");
    crate::support::images::start(&alice, web_id).await;
    crate::support::images::stop(&alice, web_id).await;
    let db_id = id(&server_named("db"), "server_id");
    let renamed = alice
        .call(
            "RenameServer",
            json!({"server_id": db_id, "server_name": "db2"}),
        )
        .await;
    assert_eq!(renamed["server_name"], "db2");
    alice
        .call(
            "DeleteDisk",
            json!({"disk_id": id(&disk_named("copy"), "disk_id")}),
        )
        .await;
    crate::support::images::create_server(
        &alice,
        vdc,
        "new",
        crate::support::catalogue::BLANK_IMAGE,
        crate::support::catalogue::DISK_1GB,
    )
    .await;
    // Old ownership holds: bob sees his server and not alice's.
    let bob = server.api("bob@example.com", "bob-password");
    let bob_vdc = crate::support::images::first_vdc(&bob).await;
    let bobs = bob.call("ListServers", json!({"vdc_id": bob_vdc})).await;
    assert_eq!(bobs[0]["server_name"], "bobs", "{bobs}");
    let refused = bob.fail("GetServer", json!({"server_id": web_id})).await;
    assert_eq!(refused.code, "NOT_FOUND");
}
db_test!(
    a_first_release_database_migrates_with_every_row,
    a_first_release_database_migrates_with_every_row
);
