//! FetchDisk through the API: its arguments, waiting for the job, and what the disk holds.

use std::os::unix::fs::MetadataExt;

use serde_json::{Value, json};

use super::image_server::disk_volume_path;
use crate::support::{Api, ServerOptions, TestApp};

/// The demo catalogue's smallest disk offer: 1 GiB.
pub const OFFER_1G: i64 = 29;
pub const GIB: u64 = 1 << 30;
pub const MIB: usize = 1 << 20;

pub fn allowing(cidr: &str) -> ServerOptions {
    ServerOptions {
        args: vec!["--allow-fetch-from".into(), cidr.into()],
        ..Default::default()
    }
}

pub fn fetch_args(url: &str, vdc: i64, name: &str) -> Value {
    json!({"url": url, "name": name, "disk_productoffer_id": OFFER_1G, "vdc_id": vdc,
           "make_image": false})
}

/// Queues a fetch and returns its job id.
pub async fn fetch(api: &Api, args: Value) -> i64 {
    api.call("FetchDisk", args).await["job_id"]
        .as_i64()
        .unwrap()
}

/// Waits for a job that must fail, and returns its error code and message.
pub async fn job_fails(api: &Api, job_id: i64) -> (String, String) {
    let job = api.wait_job(job_id).await;
    assert_eq!(job["status"], 3, "job {job_id} should have failed: {job}");
    (
        job["error_code"].as_str().unwrap().to_string(),
        job["error_message"].as_str().unwrap().to_string(),
    )
}

pub async fn disks(api: &Api, vdc: i64) -> Vec<Value> {
    api.call("ListDisks", json!({"vdc_id": vdc}))
        .await
        .as_array()
        .unwrap()
        .clone()
}

pub fn round_up_4k(n: usize) -> usize {
    n.div_ceil(4096) * 4096
}

/// The disk holds `image` at its start, zero padding to the block, and takes no more space
/// than its non-zero blocks (+1%, which is where the file system's own blocks go: ext4 needs
/// a 4 KiB extent block once a file has more than 4 runs of data, so test images have over
/// 100 runs).
pub async fn assert_thin_disk_holds(app: &TestApp, disk: &Value, image: &[u8], data_blocks: usize) {
    assert_eq!(disk["capacity"], GIB);
    let path = disk_volume_path(
        &app.db.url,
        &app.server.data_dir,
        disk["disk_id"].as_i64().unwrap(),
    )
    .await;
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), GIB, "the volume has the disk's size");
    let allocated = meta.blocks() * 512;
    let limit = (data_blocks * 4096) as u64 * 101 / 100;
    assert!(
        allocated <= limit,
        "volume allocates {allocated} bytes; its data is {} bytes",
        data_blocks * 4096
    );
    let mut head = vec![0u8; round_up_4k(image.len()) + 8192];
    use std::os::unix::fs::FileExt;
    std::fs::File::open(&path)
        .unwrap()
        .read_exact_at(&mut head, 0)
        .unwrap();
    assert!(
        head[..image.len()] == *image,
        "the image is at the disk's start"
    );
    assert!(
        head[image.len()..].iter().all(|&b| b == 0),
        "the rest reads as zeros"
    );
}
