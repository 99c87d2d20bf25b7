//! A node cut off from the shared PostgreSQL database while it runs a job (issue 22): its
//! connections through a TCP forwarder dropped and the port closed, as a network partition
//! between it and the database would. The other node takes the job over once the cut-off
//! node's lease has run out and finishes it; when the link is mended the first node serves
//! again and commits nothing of its stale attempt: one disk, one result, no staged file left,
//! and the volume file the stale attempt had made (it could not know whether its commit
//! happened) removed by the orphan sweep, as no row names it.

use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::fetch_disk::{fetch, fetch_args, md5_hex, sparse_image};
use crate::support::image_server::{ImageServer, Served};
use crate::support::server_db::ServerDb;
use crate::support::tcp_cut::TcpCut;
use crate::support::{Backend, ServerOptions, TestDatabase, TestServer};

fn node(db: &TestDatabase, data_dir: &std::path::Path, name: &str) -> TestServer {
    TestServer::spawn(
        db,
        data_dir,
        ServerOptions {
            node_id: Some(name.to_string()),
            args: [
                "--job-lease-seconds",
                "3",
                "--allow-fetch-from",
                "127.0.0.0/8",
                "--hypervisor",
                "none",
                // A volume file a cut-off attempt could not commit is the orphan sweep's: the
                // sweep runs often here, as in the soak test.
                "--orphan-sweep-seconds",
                "2",
                "--orphan-min-age-seconds",
                "5",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_database_loses_its_job_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut db = TestDatabase::new(Backend::Postgres, &data_dir).await;
    let direct = db.url.clone();
    let mut url = url::Url::parse(&db.url).unwrap();
    let postgres = (url.host_str().unwrap(), url.port().unwrap_or(5432))
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let link = TcpCut::start(postgres).await;
    url.set_ip_host(link.listen.ip()).unwrap();
    url.set_port(Some(link.listen.port())).unwrap();
    // Node A reaches the database through the link; node B (started later) directly.
    db.url = url.to_string();
    let a = node(&db, &data_dir, "node-a");
    db.url = direct;
    let customer = a.add_customer("erin@example.com", "erin-password", &[]);
    let via_a = a.api(&customer.email, &customer.password);

    let images = ImageServer::start().await;
    let (image, _) = sparse_image(4 << 20, 2, 9);
    // A slow source: the fetch is still running when the link is cut.
    images.put(
        "slow.img",
        Served {
            data: image.clone().into(),
            pace: Some((128 << 10, Duration::from_millis(40))),
            ..Default::default()
        },
    );
    let mut args = fetch_args(&images.url("slow.img"), customer.vdc_id, "partitioned");
    args["checksum"] = json!(md5_hex(&image));
    let job_id = fetch(&via_a, args).await;
    via_a.job_until(job_id, |j| j["bytes_done"] != 0).await;
    link.cut();

    // Cut off, A answers at once that the database is out of reach.
    let started = Instant::now();
    let err = via_a.fail("ListVDCs", json!({})).await;
    assert_eq!(err.code, "SERVICE_UNAVAILABLE", "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(15));

    // B takes the job over once A's lease has run out, and finishes it.
    let b = node(&db, &data_dir, "node-b");
    let via_b = b.api(&customer.email, &customer.password);
    let job = via_b.job_ok(job_id).await;
    assert_eq!(job["item_type"], "disk", "{job}");

    // The link mended, A serves again and its stale attempt made nothing.
    link.mend().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while via_a.try_call("ListVDCs", json!({})).await.is_err() {
        assert!(Instant::now() < deadline, "node A never served again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let disks = via_a
        .call("ListDisks", json!({"vdc_id": customer.vdc_id}))
        .await;
    assert_eq!(disks.as_array().unwrap().len(), 1, "one disk: {disks}");
    let db_view = ServerDb::open(&b).await;
    assert_eq!(db_view.job_attempts(job_id).await, 2, "A's, then B's");
    let job = via_a.call("GetJob", json!({"job_id": job_id})).await;
    assert_eq!(job["status"], 1, "still B's result: {job}");
    // No staged file of either attempt is left, and, once the sweep has run, one volume file
    // for the one disk.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let staged = std::fs::read_dir(data_dir.join("staging")).unwrap().count();
        let volumes = std::fs::read_dir(data_dir.join("volumes")).unwrap().count();
        if staged == 0 && volumes == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{staged} staged files and {volumes} volume files left"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop((a, b));
}
