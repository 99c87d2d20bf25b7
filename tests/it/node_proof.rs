//! Node-to-node requests (a console read on the node that runs the VM) carry a proof that is
//! bound to the node asked, the method, the path and the body, and that the node accepts
//! once. Node-a's `--node-url` points at a recorder standing between the nodes, so the test
//! holds the requests node-b really sent: it replays them, and sends their proofs with other
//! paths, bodies and nodes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::catalogue::{BLANK_IMAGE, DISK_1GB, SERVER_1CPU_512MB};
use crate::support::{Backend, Cluster, id};

/// Sits at node-a's advertised address: records each request's head and either passes the
/// connection on to node-a or answers 502 itself (so the proof it recorded is still unused).
#[derive(Default)]
struct Recorder {
    target: Mutex<String>,
    forward: AtomicBool,
    heads: Mutex<Vec<String>>,
}

impl Recorder {
    async fn start() -> (Arc<Recorder>, String) {
        let recorder = Arc::new(Recorder::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = recorder.clone();
        tokio::spawn(async move {
            loop {
                let (conn, _) = listener.accept().await.unwrap();
                tokio::spawn(shared.clone().relay(conn));
            }
        });
        (recorder, url)
    }

    async fn relay(self: Arc<Self>, mut conn: TcpStream) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
            if conn.read(&mut byte).await.unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        self.heads
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&head).into_owned());
        if self.forward.load(Ordering::SeqCst) {
            let target = self.target.lock().unwrap().clone();
            let mut upstream = TcpStream::connect(target).await.unwrap();
            upstream.write_all(&head).await.unwrap();
            let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
        } else {
            let _ = conn
                .write_all(
                    b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
        }
    }

    /// The path and proof of the last request recorded.
    fn last(&self) -> (String, String) {
        let heads = self.heads.lock().unwrap();
        let head = heads.last().expect("a request between the nodes");
        let mut lines = head.lines();
        let path = lines.next().unwrap().split(' ').nth(1).unwrap().to_string();
        let proof = lines
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("x-extility-node-proof")
                    .then(|| value.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no proof in {head}"));
        (path, proof)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_proof_holds_once_for_its_own_request() {
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let (recorder, recorder_url) = Recorder::start().await;
    let cluster = Cluster::new(
        Backend::Postgres,
        &["--hypervisor", "qemu", "--qemu-accel", "tcg"],
    )
    .await;
    let mut a = cluster.node("node-a");
    a.set_option("--node-url", &recorder_url);
    a.restart();
    *recorder.target.lock().unwrap() = a.url.trim_start_matches("http://").to_string();
    let b = cluster.node("node-b");
    let customer = a.add_customer("nia@example.com", "nia-password", &[]);
    let on_a = a.api(&customer.email, &customer.password);
    let on_b = b.api(&customer.email, &customer.password);

    let created = on_a
        .call(
            "CreateServer",
            json!({"vdc_id": customer.vdc_id, "vlan_id": -1, "server_name": "proved",
                   "image_id": BLANK_IMAGE, "server_productoffer_id": SERVER_1CPU_512MB,
                   "disk_productoffer_ids": [DISK_1GB]}),
        )
        .await;
    let server_id = id(&created, "server_id");
    let job = on_a
        .call("StartServer", json!({"server_id": server_id}))
        .await;
    on_a.job_ok(id(&job, "job_id")).await;
    let server = on_a
        .call("GetServer", json!({"server_id": server_id}))
        .await;
    assert_eq!(
        server["node"], "node-a",
        "equal loads: the first node by id"
    );
    let uuid = created["server_uuid"].as_str().unwrap();

    // Node-b reads the console on node-a, through the recorder.
    recorder.forward.store(true, Ordering::SeqCst);
    on_b.call("GetConsoleLog", json!({"server_id": server_id}))
        .await;
    let failed_over = "reading a console on its node failed";
    assert!(!b.log_text().contains(failed_over), "{}", b.log_text());
    let (path, proof) = recorder.last();
    assert_eq!(path, format!("/internal/v1/console/{uuid}"));

    let http = reqwest::Client::new();
    let send = |node: &str, path: &str, proof: &str, body: &'static str| {
        http.get(format!("{node}{path}"))
            .header("x-extility-node-proof", proof)
            .body(body)
            .send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();
    // Replayed, the request node-b sent is refused.
    assert_eq!(status(send(&a.url, &path, &proof, "").await.unwrap()), 403);

    // A request node-a never saw: its proof is good, once, for that request only.
    recorder.forward.store(false, Ordering::SeqCst);
    on_b.call("GetConsoleLog", json!({"server_id": server_id}))
        .await;
    assert!(b.log_text().contains(failed_over), "the recorder kept it");
    let (path, proof) = recorder.last();
    let other_path = format!("/internal/v1/console/{}", uuid::Uuid::new_v4());
    for (node, path, body, what) in [
        (&a.url, other_path.as_str(), "", "another path"),
        (&a.url, path.as_str(), "x", "another body"),
        (&b.url, path.as_str(), "", "another node"),
    ] {
        let answer = send(node, path, &proof, body).await.unwrap();
        assert_eq!(status(answer), 403, "{what}");
    }
    let answer = send(&a.url, &path, &proof, "").await.unwrap();
    assert_eq!(answer.status().as_u16(), 200, "the proof itself was good");
    assert_eq!(
        status(send(&a.url, &path, &proof, "").await.unwrap()),
        403,
        "and is spent"
    );
}
