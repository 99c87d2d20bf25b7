//! Fencing of job attempts and cancellation races, driven through the job system itself: two
//! nodes (two `Application`s in this process) share one database, so the test decides exactly
//! when each claims, commits and cancels.

use std::path::Path;

use extility::fetch::ImageFormat;
use extility::jobs::queue::{self, Finish, Lease};
use extility::jobs::{CancelRequest, JobOutcome, JobStatus, Lane, NewJob, RunningJob};
use extility::ops::accounts::customer;
use extility::ops::jobs::fetch::FetchDiskJob;
use extility::ops::server::{StopHow, StopServerJob};
use extility::ops::state::AppState;
use extility::progress::ProgressSnapshot;

use crate::support::catalogue::{DISK_20GB, DISK_20GB_SIZE};
use crate::support::in_process::in_process_node;
use crate::support::{Backend, TestDatabase, db_test};

struct TwoNodes {
    a: AppState,
    b: AppState,
    customer_id: i64,
    vdc_id: i64,
    _db: TestDatabase,
    dir: tempfile::TempDir,
}

async fn two_nodes(backend: Backend) -> TwoNodes {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(backend, dir.path()).await;
    let a = in_process_node(&db, &dir.path().join("a"), "node-a", &[]).await;
    let b = in_process_node(&db, &dir.path().join("b"), "node-b", &[]).await;
    let made = customer::create_customer(
        &a.state().db,
        "alice@example.com",
        "alice-password",
        false,
        "Default",
    )
    .await
    .unwrap();
    TwoNodes {
        a: a.state().clone(),
        b: b.state().clone(),
        customer_id: made.customer_id,
        vdc_id: made.vdc_id,
        _db: db,
        dir,
    }
}

async fn queue_fetch(nodes: &TwoNodes, name: &str) -> (i64, FetchDiskJob) {
    let params = FetchDiskJob {
        url: "http://images.example.com/disk.img".parse().unwrap(),
        checksum: extility::fetch::Checksum::None,
        name: name.to_string(),
        disk_productoffer_id: DISK_20GB,
        disk_size: DISK_20GB_SIZE as i64,
        vdc_id: nodes.vdc_id,
        make_image: false,
        image_default_username: None,
    };
    let mut tx = nodes.a.db.begin_write().await.unwrap();
    let job_id = nodes
        .a
        .jobs
        .enqueue(
            &mut tx,
            NewJob {
                customer_id: nodes.customer_id,
                name: format!("Fetch disk \"{name}\""),
                item_type: Some("disk"),
                item_id: None,
                params: params.clone(),
                target_node: None,
                reserved_bytes: params.disk_size,
                vdc_id: (!params.make_image).then_some(params.vdc_id),
            },
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    (job_id, params)
}

/// Makes the lease of a running job run out, as it does for a node that stalls longer than
/// the lease (its heartbeat no longer renews it).
async fn lease_runs_out(state: &AppState, job_id: i64) {
    sqlx::query("UPDATE jobs SET lease_expires = 0 WHERE id = $1")
        .bind(job_id)
        .execute(state.db.pool())
        .await
        .unwrap();
}

/// A staged, fetched image of `bytes` bytes for an attempt.
fn stage(job: &RunningJob<AppState>, bytes: usize) -> std::path::PathBuf {
    let path = job.state.storage.staging_path(&job.staging_name());
    std::fs::write(&path, vec![0x5au8; bytes]).unwrap();
    path
}

async fn count(state: &AppState, sql: &str, id: i64) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .bind(id)
        .fetch_one(state.db.pool())
        .await
        .unwrap()
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// Node A claims a fetch and stalls past its lease; node B takes the job over. Both attempts
/// then try to commit their disk at the same moment: only B's may. A's commit, heartbeat and
/// end are all refused, and A leaves no volume file behind.
async fn a_stale_attempt_cannot_commit(backend: Backend) {
    let nodes = two_nodes(backend).await;
    let (job_id, params) = queue_fetch(&nodes, "raced").await;

    let row_a = nodes
        .a
        .jobs
        .claim(Lane::Long)
        .await
        .unwrap()
        .expect("A claims the job");
    assert_eq!((row_a.id, row_a.attempts), (job_id, 1));
    lease_runs_out(&nodes.a, job_id).await;
    let row_b = nodes
        .b
        .jobs
        .claim(Lane::Long)
        .await
        .unwrap()
        .expect("B takes it over");
    assert_eq!((row_b.id, row_b.attempts), (job_id, 2));

    let attempt_a = RunningJob::new(nodes.a.clone(), row_a, nodes.a.jobs.clone());
    let attempt_b = RunningJob::new(nodes.b.clone(), row_b, nodes.b.jobs.clone());
    let (staged_a, staged_b) = (stage(&attempt_a, 4096), stage(&attempt_b, 8192));
    let (committed_a, committed_b) = tokio::join!(
        params.commit(&attempt_a, &staged_a, ImageFormat::Raw, 1111),
        params.commit(&attempt_b, &staged_b, ImageFormat::Raw, 2222),
    );
    let err = committed_a.expect_err("the stale attempt must not commit");
    assert_eq!(err.code(), "INTERRUPTED", "{err}");
    let outcome = committed_b.expect("the attempt holding the lease commits");
    assert_eq!(outcome.item_type, Some("disk"));

    let state = &nodes.a;
    let disks = count(
        state,
        "SELECT COUNT(*) FROM disks WHERE customer_id = $1",
        nodes.customer_id,
    );
    assert_eq!(disks.await, 1, "exactly one disk");
    let usage = count(
        state,
        "SELECT COUNT(*) FROM usage_records WHERE job_id = $1",
        job_id,
    );
    assert_eq!(usage.await, 1, "exactly one usage line");
    let billed = count(
        state,
        "SELECT quantity FROM usage_records WHERE job_id = $1",
        job_id,
    );
    assert_eq!(
        billed.await,
        2222,
        "the bytes of the attempt that owns the job"
    );
    let dir = nodes.dir.path();
    assert_eq!(
        files_in(&dir.join("a/volumes")),
        0,
        "A's volume file was removed"
    );
    assert_eq!(files_in(&dir.join("b/volumes")), 1);

    // A can no longer renew the lease, write progress or end the job.
    let lease_a = Lease {
        job_id,
        node: "node-a".into(),
        attempt: 1,
    };
    let progress = ProgressSnapshot {
        bytes_done: 1,
        bytes_total: None,
        percent: 0,
        phase: "downloading",
    };
    let beat = queue::heartbeat(&state.db, &lease_a, 30_000, &progress).await;
    assert_eq!(beat.unwrap(), None, "A's heartbeat finds its lease lost");
    let failed = extility::error::ApiError::FetchFailed("stale".into());
    let end = Finish {
        status: JobStatus::Failed,
        error: Some(&failed),
        outcome: JobOutcome::default(),
        progress: progress.clone(),
    };
    assert!(!queue::finish(&state.db, &lease_a, &end).await.unwrap());
    let row = nodes.b.jobs.get(job_id, nodes.customer_id).await.unwrap();
    assert_eq!(
        row.status,
        JobStatus::InProgress.code(),
        "A did not end the job"
    );
    assert_eq!(row.result_committed, 1);
    assert_eq!(row.item_id, outcome.item_id);
}
db_test!(a_stale_attempt_cannot_commit, a_stale_attempt_cannot_commit);

/// A job whose attempt committed its result and then died is reported, not run again: the
/// next attempt finds the result in the job's row.
async fn a_committed_result_survives_its_node(backend: Backend) {
    let nodes = two_nodes(backend).await;
    let (job_id, params) = queue_fetch(&nodes, "committed").await;
    let row_a = nodes.a.jobs.claim(Lane::Long).await.unwrap().unwrap();
    let attempt_a = RunningJob::new(nodes.a.clone(), row_a, nodes.a.jobs.clone());
    let staged = stage(&attempt_a, 4096);
    let outcome = params
        .commit(&attempt_a, &staged, ImageFormat::Raw, 10)
        .await
        .unwrap();
    // A dies before recording the job's end.
    lease_runs_out(&nodes.a, job_id).await;
    let row_b = nodes.b.jobs.claim(Lane::Long).await.unwrap().unwrap();
    assert_eq!(row_b.attempts, 2);
    assert_eq!(row_b.result_committed, 1);
    assert_eq!(row_b.item_id, outcome.item_id);
}
db_test!(
    a_committed_result_survives_its_node,
    a_committed_result_survives_its_node
);

/// CancelJob and a worker's claim at the same instant: either the claim wins (the job runs
/// and is asked to stop) or the cancel does (the job is cancelled and never claimed). A job is
/// never left running with status cancelled.
async fn cancel_racing_a_claim(backend: Backend) {
    let nodes = two_nodes(backend).await;
    let (mut claimed_first, mut cancelled_first) = (0, 0);
    for _ in 0..30 {
        let mut tx = nodes.a.db.begin_write().await.unwrap();
        let job_id = nodes
            .a
            .jobs
            .enqueue(
                &mut tx,
                NewJob {
                    customer_id: nodes.customer_id,
                    name: "Stop server".into(),
                    item_type: Some("server"),
                    item_id: None,
                    params: StopServerJob {
                        server_id: 0,
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

        let (claimed, cancelled) = tokio::join!(
            nodes.b.jobs.claim(Lane::Quick),
            nodes.a.jobs.cancel(job_id, nodes.customer_id)
        );
        let (claimed, cancelled) = (claimed.unwrap(), cancelled.unwrap());
        let row = nodes.a.jobs.get(job_id, nodes.customer_id).await.unwrap();
        match claimed {
            Some(claimed) => {
                assert_eq!(claimed.id, job_id);
                assert_eq!(cancelled, CancelRequest::Requested);
                assert_eq!(row.status, JobStatus::InProgress.code());
                assert_eq!(row.cancel_requested, 1, "the running job is asked to stop");
                claimed_first += 1;
                // Ends it, as its worker would, so that the next job is the oldest claimable.
                let lease = Lease {
                    job_id,
                    node: "node-b".into(),
                    attempt: claimed.attempts,
                };
                let end = Finish {
                    status: JobStatus::Cancelled,
                    error: None,
                    outcome: JobOutcome::default(),
                    progress: ProgressSnapshot {
                        bytes_done: 0,
                        bytes_total: None,
                        percent: 0,
                        phase: "cancelled",
                    },
                };
                assert!(queue::finish(&nodes.b.db, &lease, &end).await.unwrap());
            }
            None => {
                assert_eq!(cancelled, CancelRequest::CancelledBeforeStart);
                assert_eq!(row.status, JobStatus::Cancelled.code());
                assert!(nodes.b.jobs.claim(Lane::Quick).await.unwrap().is_none());
                cancelled_first += 1;
            }
        }
    }
    eprintln!("claim first {claimed_first} times, cancel first {cancelled_first} times");
}
db_test!(cancel_racing_a_claim, cancel_racing_a_claim);
