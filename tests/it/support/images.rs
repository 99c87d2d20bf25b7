//! Helpers for the image, snapshot and publishing tests: what a source disk holds, servers made
//! from images, started and stopped, and images made from disks.

use serde_json::{Value, json};

use super::catalogue::SERVER_1CPU_1GB;
use super::server_db::Volume;
use super::{Api, GIB, id};

/// What the test writes into a source disk: a boot sector, and data scattered over 20 GB.
pub struct Contents;

impl Contents {
    pub const BOOT: &'static [u8] = b"EXTILITY TEST BOOT SECTOR\x55\xaa";
    pub const SCATTERED: [(u64, u64, u8); 3] = [
        (7 * GIB, 64 * 1024, 0xb2),
        (12 * GIB + 8192, 4096, 0xc3),
        (19 * GIB + 4096, 4096, 0xd4),
    ];

    pub fn write(volume: &Volume) {
        volume.write(0, Self::BOOT);
        for (offset, len, byte) in Self::SCATTERED {
            volume.write_pattern(offset, len, byte);
        }
    }

    /// Asserts the volume reads what [`Contents::write`] wrote, and zeros around it.
    pub fn check(volume: &Volume, what: &str) {
        assert_eq!(
            volume.read(0, Self::BOOT.len() as u64),
            Self::BOOT,
            "{what}: boot sector"
        );
        for (offset, len, byte) in Self::SCATTERED {
            assert_eq!(
                volume.read(offset, len),
                vec![byte; len as usize],
                "{what}: {len} bytes at {offset}"
            );
            assert_eq!(
                volume.read(offset + len, 4096),
                vec![0u8; 4096],
                "{what}: zeros after {offset}"
            );
        }
    }
}

pub async fn first_vdc(api: &Api) -> i64 {
    let vdcs = api.call("ListVDCs", json!({})).await;
    id(&vdcs[0], "vdc_id")
}

pub async fn create_server(api: &Api, vdc: i64, name: &str, image: i64, disk_offer: i64) -> Value {
    api.call(
        "CreateServer",
        json!({"vdc_id": vdc, "vlan_id": -1, "server_name": name, "image_id": image,
               "server_productoffer_id": SERVER_1CPU_1GB, "disk_productoffer_ids": [disk_offer]}),
    )
    .await
}

pub async fn boot_disk(server: &Value) -> i64 {
    id(&server["disks"][0], "disk_id")
}

pub async fn start(api: &Api, server_id: i64) {
    let job = api
        .call("StartServer", json!({"server_id": server_id}))
        .await;
    api.job_ok(id(&job, "job_id")).await;
}

pub async fn stop(api: &Api, server_id: i64) {
    let job = api
        .call(
            "StopServer",
            json!({"server_id": server_id, "stop_method": 2}),
        )
        .await;
    api.job_ok(id(&job, "job_id")).await;
}

/// Queues CreateImage of a disk and returns the job's id.
pub async fn create_image(api: &Api, disk_id: i64, name: &str) -> i64 {
    let job = api
        .call(
            "CreateImage",
            json!({"disk_id": disk_id, "name": name, "default_username": "admin",
                   "generate_password": true}),
        )
        .await;
    id(&job, "job_id")
}

/// Runs CreateImage to the end and returns the new image's id.
pub async fn make_image(api: &Api, disk_id: i64, name: &str) -> i64 {
    let job = api.job_ok(create_image(api, disk_id, name).await).await;
    assert_eq!(job["item_type"], "image", "{job}");
    id(&job, "item_id")
}

pub async fn image_ids(api: &Api) -> Vec<i64> {
    let images = api.call("ListImages", json!({})).await;
    images
        .as_array()
        .unwrap()
        .iter()
        .map(|i| id(i, "image_id"))
        .collect()
}

pub async fn listed_image(api: &Api, image_id: i64) -> Option<Value> {
    let images = api.call("ListImages", json!({})).await;
    images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image_id"] == image_id)
        .cloned()
}
