//! RBD clones as the storage makes them, on the test run's real cluster: for its own images it
//! writes a clone's objects itself (librbd's clone costs ten times the CPU), and the clone is
//! what librbd's would be: `rbd info` says the same of both, `rbd object-map check` passes,
//! `rbd children` lists it, the parent's snapshot cannot be unprotected under it, it reads its
//! parent's data and keeps its own writes, flattening detaches it, and removal leaves nothing.
//! Images librbd must clone (striped, with metadata) are cloned by librbd, and a clone that
//! fails half way leaves not one object behind.

use std::path::PathBuf;
use std::process::Command;

use extility::storage::rbd::{RbdConfig, RbdStorage};
use extility::storage::{Storage, VolumeFile, VolumeFormat};
use serde_json::Value;

use crate::support::ceph::{self, Ceph};
use crate::support::server_db::{RbdPool, Volume};
use crate::support::{GIB, MIB};

fn volume(cluster: &Ceph, pool: &str, image: &str) -> Volume {
    Volume {
        path: PathBuf::from(image),
        format: "raw".into(),
        rbd: Some(RbdPool {
            pool: pool.to_string(),
            conf: cluster.conf.clone(),
        }),
    }
}

/// `rbd info` of an image, without what differs between any two images.
fn info_of_a_clone(cluster: &Ceph, pool: &str, image: &str) -> Value {
    let mut info: Value = serde_json::from_str(&cluster.rbd(&[
        "info",
        "--format",
        "json",
        &format!("{pool}/{image}"),
    ]))
    .unwrap();
    let fields = info.as_object_mut().unwrap();
    for own in [
        "name",
        "id",
        "block_name_prefix",
        "create_timestamp",
        "access_timestamp",
        "modify_timestamp",
    ] {
        assert!(
            fields.remove(own).is_some(),
            "rbd info shows {own}: {info:?}"
        );
    }
    info
}

fn children(cluster: &Ceph, pool: &str, snapshot: &str) -> Vec<String> {
    cluster
        .rbd(&["children", &format!("{pool}/{snapshot}")])
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

/// Every RADOS object of the pool.
fn objects(cluster: &Ceph, pool: &str) -> Vec<String> {
    let mut names: Vec<String> = cluster
        .rados(&["-p", pool, "ls"])
        .lines()
        .map(String::from)
        .collect();
    names.sort();
    names
}

fn rbd_fails(cluster: &Ceph, args: &[&str]) -> String {
    let out = Command::new("rbd")
        .arg("--conf")
        .arg(&cluster.conf)
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "rbd {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_is_what_librbds_clone_would_be() {
    tokio::task::spawn_blocking(|| {
        let cluster = ceph::cluster();
        let pool = cluster.new_pool();
        let (storage, _data) = cluster.rbd_storage(&pool);
        let image = storage.create_blank(GIB).unwrap();
        let image_volume = volume(cluster, &pool, &image.file);
        image_volume.write_patterns(&[(0, 64 * 1024, 0xab), (700 * MIB, 4096, 0xcd)]);

        // The first clone at a size takes the snapshot, the next are clones of it.
        let first = storage.create_thin_clone(&image, 20 * GIB).unwrap();
        let clone = storage.create_thin_clone(&image, 20 * GIB).unwrap();
        let snapshot = format!("{}@clone-base-{}", image.file, 20 * GIB);
        cluster.rbd(&[
            "clone",
            &format!("{pool}/{snapshot}"),
            &format!("{pool}/by-librbd"),
        ]);
        let ours = info_of_a_clone(cluster, &pool, &clone.file);
        assert_eq!(ours, info_of_a_clone(cluster, &pool, "by-librbd"));
        assert_eq!(ours["size"], 20 * GIB, "{ours}");
        assert_eq!(ours["parent"]["image"], image.file.as_str(), "{ours}");
        cluster.rbd(&["object-map", "check", &format!("{pool}/{}", clone.file)]);
        let mut expected = vec![
            format!("{pool}/{}", first.file),
            format!("{pool}/{}", clone.file),
            format!("{pool}/by-librbd"),
        ];
        expected.sort();
        assert_eq!(children(cluster, &pool, &snapshot), expected);

        // It reads its parent and keeps its own writes.
        let clone_volume = volume(cluster, &pool, &clone.file);
        assert_eq!(clone_volume.read(700 * MIB, 4096), vec![0xcd; 4096]);
        assert_eq!(clone_volume.read(5 * GIB, 4096), vec![0; 4096]);
        clone_volume.write_pattern(0, 4096, 0xef);
        assert_eq!(clone_volume.read(0, 4096), vec![0xef; 4096]);
        assert_eq!(image_volume.read(0, 4096), vec![0xab; 4096]);
        cluster.rbd(&["object-map", "check", &format!("{pool}/{}", clone.file)]);

        // The snapshot holds while a clone stands on it.
        let refused = rbd_fails(
            cluster,
            &["snap", "unprotect", &format!("{pool}/{snapshot}")],
        );
        assert!(refused.contains("Device or resource busy"), "{refused}");

        // Flattened, a clone leaves its parent's children.
        cluster.rbd(&["flatten", &format!("{pool}/{}", first.file)]);
        let flat = info_of_a_clone(cluster, &pool, &first.file);
        assert!(flat.get("parent").is_none(), "{flat}");
        assert_eq!(children(cluster, &pool, &snapshot).len(), 2);

        // Removed, it leaves no object and no entry.
        for volume in [&first, &clone] {
            storage.delete(volume).unwrap();
        }
        cluster.rbd(&["rm", &format!("{pool}/by-librbd")]);
        assert!(children(cluster, &pool, &snapshot).is_empty());
        let left: Vec<String> = objects(cluster, &pool)
            .into_iter()
            .filter(|o| o.starts_with("rbd_id.") || o.starts_with("rbd_header."))
            .collect();
        assert_eq!(left.len(), 2, "the image's id and header only: {left:?}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_librbd_must_clone_are_cloned_by_librbd() {
    tokio::task::spawn_blocking(|| {
        let cluster = ceph::cluster();
        let pool = cluster.new_pool();
        let (storage, _data) = cluster.rbd_storage(&pool);
        // Striped, and with metadata: neither is written by the storage's own clones.
        cluster.rbd(&[
            "create",
            "--size",
            "64M",
            "--stripe-unit",
            "65536",
            "--stripe-count",
            "4",
            &format!("{pool}/striped"),
        ]);
        cluster.rbd(&["create", "--size", "64M", &format!("{pool}/noted")]);
        cluster.rbd(&[
            "image-meta",
            "set",
            &format!("{pool}/noted"),
            "owner",
            "ops",
        ]);
        for image in ["striped", "noted"] {
            let volume = volume(cluster, &pool, image);
            volume.write_pattern(MIB, 4096, 0x5a);
            let backing = VolumeFile {
                file: image.to_string(),
                format: VolumeFormat::Raw,
                size: 64 * MIB,
            };
            let clone = storage.create_thin_clone(&backing, 64 * MIB).unwrap();
            cluster.rbd(&[
                "clone",
                &format!("{pool}/{image}@clone-base"),
                &format!("{pool}/{image}-by-librbd"),
            ]);
            assert_eq!(
                info_of_a_clone(cluster, &pool, &clone.file),
                info_of_a_clone(cluster, &pool, &format!("{image}-by-librbd"))
            );
            let clone_volume = self::volume(cluster, &pool, &clone.file);
            assert_eq!(clone_volume.read(MIB, 4096), vec![0x5a; 4096]);
        }
        let info = info_of_a_clone(cluster, &pool, "striped-by-librbd");
        assert_eq!(info["stripe_count"], 4, "{info}");
        let meta = cluster.rbd(&["image-meta", "list", &format!("{pool}/noted-by-librbd")]);
        assert!(meta.contains("owner"), "{meta}");
    })
    .await
    .unwrap();
}

/// A clone refused half way (its user may not write the pool's `rbd_children`) is undone: the
/// pool holds the same objects before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_that_fails_half_way_leaves_nothing() {
    tokio::task::spawn_blocking(|| {
        let cluster = ceph::cephx_cluster();
        let pool = cluster.new_pool();
        let dir = tempfile::tempdir().unwrap();
        let keyring = dir.path().join("keyring");
        let user = format!("cloner-{pool}");
        let may = |prefix: &str| format!("allow rwx pool={pool} object_prefix {prefix}");
        // (`x` alone would let it call the class's writing methods on any object.)
        let caps = [
            format!("allow r pool={pool}"),
            format!("allow r class-read pool={pool} object_prefix rbd_children"),
            may("rbd_directory"),
            may("rbd_info"),
            may("rbd_trash"),
            may("rbd_id."),
            may("rbd_header."),
            may("rbd_object_map."),
            may("rbd_data."),
        ]
        .join(", ");
        cluster.ceph(&[
            "auth",
            "get-or-create",
            &format!("client.{user}"),
            "mon",
            "profile rbd",
            "osd",
            &caps,
            "-o",
            &keyring.display().to_string(),
        ]);
        let conf = dir.path().join("ceph.conf");
        let text = std::fs::read_to_string(&cluster.conf).unwrap();
        let text: String = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("keyring") && l.contains("admin.keyring") {
                    format!("keyring = {}\n", keyring.display())
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&conf, text).unwrap();

        cluster.rbd(&["create", "--size", "64M", &format!("{pool}/base")]);
        cluster.rbd(&["snap", "create", &format!("{pool}/base@clone-base")]);
        cluster.rbd(&["snap", "protect", &format!("{pool}/base@clone-base")]);
        let data = tempfile::tempdir().unwrap();
        let config = RbdConfig {
            pool: pool.clone(),
            ceph_conf: Some(conf),
            ceph_user: Some(user),
        };
        let storage = RbdStorage::open(config, data.path()).unwrap();
        let before = objects(cluster, &pool);
        let base = VolumeFile {
            file: "base".into(),
            format: VolumeFormat::Raw,
            size: 64 * MIB,
        };
        let failed = storage.create_thin_clone(&base, 64 * MIB).unwrap_err();
        assert!(
            failed.to_string().contains("add_child"),
            "the clone failed where it was refused: {failed}"
        );
        assert_eq!(objects(cluster, &pool), before);
        assert_eq!(cluster.rbd(&["ls", &pool]).trim(), "base");
    })
    .await
    .unwrap();
}
