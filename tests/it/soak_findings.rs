//! Regressions for what the soak test (`benches/soak.sh`) found: nodes starting together on a
//! new database, and jobs whose database went away under them (one while it set up the
//! server's network).

use extility::db::Db;
use extility::jobs::queue::{self, Lease};
use extility::jobs::{Lane, NewJob};
use extility::ops::accounts::customer;
use extility::ops::server::{StopHow, StopServerJob};
use extility::ops::storage::catalogue::demo_catalogue;

use crate::support::in_process::in_process_node;
use crate::support::{Backend, TestDatabase, db_test};

/// Two nodes started at once on a new database both create the demo catalogue; the one that
/// loses the race carries on with the other's instead of failing to start ("duplicate key
/// value violates unique constraint product_offers_pkey").
async fn nodes_starting_together_share_one_demo_catalogue(backend: Backend) {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDatabase::new(backend, dir.path()).await;
        let a = Db::connect(&db.url).await.unwrap();
        a.migrate().await.unwrap();
        let b = Db::connect(&db.url).await.unwrap();
        let (made_a, made_b) = tokio::join!(demo_catalogue(&a), demo_catalogue(&b));
        let (made_a, made_b) = (made_a.unwrap(), made_b.unwrap());
        assert!(
            made_a ^ made_b,
            "round {round}: made by a {made_a}, by b {made_b}"
        );
        let offers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM product_offers")
            .fetch_one(a.pool())
            .await
            .unwrap();
        assert_eq!(offers, 10, "round {round}");
        a.pool().close().await;
        b.pool().close().await;
    }
}
db_test!(
    nodes_starting_together_share_one_demo_catalogue,
    nodes_starting_together_share_one_demo_catalogue
);

/// An attempt that lost the database gives its job up without ending it (what it did is
/// unknown, as when its node dies) and releases the lease once the database answers: another
/// node takes the job at once, as a new attempt, and the old attempt's lease can release
/// nothing any more.
async fn a_released_lease_is_taken_at_once_by_a_new_attempt(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(backend, dir.path()).await;
    let a = in_process_node(&db, &dir.path().join("a"), "node-a", &[]).await;
    let b = in_process_node(&db, &dir.path().join("b"), "node-b", &[]).await;
    let (a, b) = (a.state().clone(), b.state().clone());
    let made = customer::create_customer(&a.db, "soak@example.com", "soak-password", false, "D")
        .await
        .unwrap();
    let mut tx = a.db.begin_write().await.unwrap();
    let job_id = a
        .jobs
        .enqueue(
            &mut tx,
            NewJob {
                customer_id: made.customer_id,
                name: "Stop server".into(),
                item_type: None,
                item_id: None,
                params: StopServerJob {
                    server_id: 1,
                    method: StopHow::Poweroff,
                },
                target_node: None,
                reserved_bytes: 0,
                vdc_id: None,
            },
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let row = a.jobs.claim(Lane::Quick).await.unwrap().expect("A claims");
    assert_eq!((row.id, row.attempts), (job_id, 1));
    // Within its lease, nobody else may take it.
    assert!(b.jobs.claim(Lane::Quick).await.unwrap().is_none());
    let lease_a = Lease {
        job_id,
        node: "node-a".into(),
        attempt: 1,
    };
    assert!(queue::release_lease(&a.db, &lease_a).await.unwrap());
    let row = b
        .jobs
        .claim(Lane::Quick)
        .await
        .unwrap()
        .expect("B takes it at once");
    assert_eq!((row.id, row.attempts, row.status), (job_id, 2, 2));
    // A's stale lease releases nothing of B's attempt.
    assert!(!queue::release_lease(&a.db, &lease_a).await.unwrap());
    assert!(a.jobs.claim(Lane::Quick).await.unwrap().is_none());
}
db_test!(
    a_released_lease_is_taken_at_once_by_a_new_attempt,
    a_released_lease_is_taken_at_once_by_a_new_attempt
);

/// A server job given up after too many interruptions (`INTERRUPTED`) leaves its server in a
/// state that says what happened and allows the call again: the server was "starting" with no
/// VM anywhere, and becomes "error" with the reason, and StartServer then starts it.
async fn an_interrupted_start_leaves_its_server_startable(backend: Backend) {
    use crate::support::catalogue::{BLANK_IMAGE, DISK_1GB};
    use crate::support::server_db::ServerDb;
    use crate::support::{ServerOptions, TestApp, id};
    use serde_json::json;

    let options = ServerOptions {
        args: ["--hypervisor", "none"].map(String::from).to_vec(),
        ..ServerOptions::default()
    };
    let mut app = TestApp::start_with(backend, options).await;
    let alice = app.alice();
    let vdc = crate::support::images::first_vdc(&alice).await;
    let server =
        crate::support::images::create_server(&alice, vdc, "s", BLANK_IMAGE, DISK_1GB).await;
    let server_id = id(&server, "server_id");
    let job = alice
        .call("StartServer", json!({"server_id": server_id}))
        .await;
    let job_id = id(&job, "job_id");
    alice.job_ok(job_id).await;

    // The node dies; its start looks, to the next node, interrupted as often as a job may be
    // and still running: the server "starting", the job running with its lease run out.
    app.server.kill9();
    let db = ServerDb::open(&app.server).await;
    sqlx::query("UPDATE servers SET status = 3 WHERE id = $1")
        .bind(server_id)
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query(
        "UPDATE jobs SET status = 2, attempts = 3, lease_expires = 0, result_committed = 0, finished = NULL, \
         error_code = NULL WHERE id = $1",
    )
    .bind(job_id)
    .execute(db.pool())
    .await
    .unwrap();
    app.server.restart();
    let alice = app.alice();

    let (code, _) = alice.job_fails(job_id).await;
    assert_eq!(code, "INTERRUPTED");
    let server = alice
        .call("GetServer", json!({"server_id": server_id}))
        .await;
    assert_eq!(server["status_name"], "error", "{server}");
    let reason = server["status_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("starting the server did not complete: the job was interrupted"),
        "{reason}"
    );
    crate::support::images::start(&alice, server_id).await;
    let server = alice
        .call("GetServer", json!({"server_id": server_id}))
        .await;
    assert_eq!(server["status_name"], "running", "{server}");
}
db_test!(
    an_interrupted_start_leaves_its_server_startable,
    an_interrupted_start_leaves_its_server_startable
);

/// Found by the soak with PostgreSQL restarting (2026-12-07): a start whose attempt lost the
/// database while it set up the server's network marked the server "error" before it was
/// given up and resumed; the next attempt started the VM, but only a "starting" server becomes
/// "running", so the server stayed "error" with a running VM and a successful job. Now the
/// lost attempt leaves the server "starting" for the next. PostgreSQL only: the fault is a
/// statement answered with SQLSTATE 57P01 (the server shutting down), once, by a trigger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_loses_the_database_while_networking_is_resumed_and_runs() {
    use crate::support::catalogue::{BLANK_IMAGE, DISK_1GB};
    use crate::support::server_db::ServerDb;
    use crate::support::{ServerOptions, TestApp, id};
    use serde_json::json;

    let options = ServerOptions {
        args: ["--hypervisor", "none"].map(String::from).to_vec(),
        ..ServerOptions::default()
    };
    let app = TestApp::start_with(Backend::Postgres, options).await;
    let alice = app.alice();
    let vdc = crate::support::images::first_vdc(&alice).await;
    let server =
        crate::support::images::create_server(&alice, vdc, "s", BLANK_IMAGE, DISK_1GB).await;
    let server_id = id(&server, "server_id");
    let db = ServerDb::open(&app.server).await;
    // The start's job records its node on the "starting" server before it sets up the network:
    // that update meets a database shutting down, once.
    for statement in [
        // A sequence, as what a failed statement did is rolled back, and its count is not.
        "CREATE SEQUENCE fault_once",
        "CREATE FUNCTION fault_once() RETURNS trigger AS $$ BEGIN \
         IF OLD.status = 3 AND NEW.status = 3 AND nextval('fault_once') = 1 THEN \
         RAISE EXCEPTION 'terminating connection due to administrator command' \
         USING ERRCODE = '57P01'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER fault_once BEFORE UPDATE ON servers \
         FOR EACH ROW EXECUTE FUNCTION fault_once()",
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(db.pool())
            .await
            .unwrap();
    }

    let job = alice
        .call("StartServer", json!({"server_id": server_id}))
        .await;
    let job_id = id(&job, "job_id");
    alice.job_ok(job_id).await;
    let met: bool = sqlx::query_scalar("SELECT is_called FROM fault_once")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(met, "the fault was met");
    assert_eq!(
        db.job_attempts(job_id).await,
        2,
        "the lost attempt, then the next"
    );
    let server = alice
        .call("GetServer", json!({"server_id": server_id}))
        .await;
    assert_eq!(server["status_name"], "running", "{server}");
}

/// A FetchDisk job is billed its fetched bytes once. The soak found a job billed twice: its
/// first attempt billed its failed transfer (a wrong checksum) and its node was killed before
/// the job's end was written; the next attempt fetched the same bytes again and billed them
/// again. Each attempt bills in its own fenced transaction, as here.
async fn a_job_is_billed_its_fetched_bytes_once(backend: Backend) {
    use extility::ops::storage::usage::record_bytes_fetched;

    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(backend, dir.path()).await;
    let node = in_process_node(&db, &dir.path().join("a"), "node-a", &[]).await;
    let state = node.state().clone();
    let made =
        customer::create_customer(&state.db, "bill@example.com", "bill-password", false, "D")
            .await
            .unwrap();
    for (job_id, attempts) in [(41, [4096, 4096]), (42, [8192, 0])] {
        for bytes in attempts {
            let mut tx = state.db.begin_write().await.unwrap();
            record_bytes_fetched(&mut tx, made.customer_id, job_id, bytes)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    }
    let lines: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT job_id, quantity FROM usage_records WHERE kind = 'bytes_fetched' ORDER BY job_id",
    )
    .fetch_all(state.db.pool())
    .await
    .unwrap();
    assert_eq!(lines, vec![(41, 4096), (42, 8192)]);
}
db_test!(
    a_job_is_billed_its_fetched_bytes_once,
    a_job_is_billed_its_fetched_bytes_once
);
