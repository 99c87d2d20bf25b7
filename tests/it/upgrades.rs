//! Upgrades (issue 22, item 5): a node refuses a database a newer release migrated, naming
//! both versions; a job of a kind a node has not got (queued by a newer node during a rolling
//! upgrade) waits for a node that knows it instead of failing.

use std::process::Command;

use extility::error::ApiResult;
use extility::jobs::queue::{self, ConcurrencyLimits};
use extility::jobs::{JobKind, JobOutcome, Lane, NewJob, RunningJob};
use extility::ops::customer;
use extility::ops::server::{StopHow, StopServerJob};
use extility::state::AppState;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyPoolOptions;

use crate::support::in_process::in_process_node;
use crate::support::{Backend, ServerOptions, TestDatabase, TestServer, binary, db_test};

/// The schema version this build makes: its newest migration.
const KNOWN: &str = "19";

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
                 to version {KNOWN})"
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
    NewJob {
        customer_id,
        name,
        item_type: None,
        item_id: None,
        params,
        target_node: None,
    }
}

db_test!(
    a_job_of_an_unknown_kind_waits_for_a_node_that_knows_it,
    a_job_of_an_unknown_kind_waits_for_a_node_that_knows_it
);
