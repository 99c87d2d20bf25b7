//! FetchDisk through the API: its arguments, what the disk holds, and the images the tests
//! fetch.

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use super::catalogue::{DISK_1GB, DISK_1GB_SIZE};
use super::server_db::ServerDb;
use super::{Api, ServerOptions, TestApp};

/// Server options letting FetchDisk fetch from `cidr` (internal addresses are refused
/// otherwise, loopback included).
pub fn allowing(cidr: &str) -> ServerOptions {
    ServerOptions {
        args: vec!["--allow-fetch-from".into(), cidr.into()],
        ..Default::default()
    }
}

/// FetchDisk's arguments for a disk (not an image) of the 1 GB offer.
pub fn fetch_args(url: &str, vdc: i64, name: &str) -> Value {
    json!({"url": url, "name": name, "disk_productoffer_id": DISK_1GB, "vdc_id": vdc,
           "make_image": false})
}

/// Queues a fetch and returns its job id.
pub async fn fetch(api: &Api, args: Value) -> i64 {
    api.call("FetchDisk", args).await["job_id"]
        .as_i64()
        .unwrap()
}

/// The disks of a VDC.
pub async fn disks(api: &Api, vdc: i64) -> Vec<Value> {
    api.call("ListDisks", json!({"vdc_id": vdc}))
        .await
        .as_array()
        .unwrap()
        .clone()
}

fn round_up_4k(n: usize) -> usize {
    n.div_ceil(4096) * 4096
}

/// The disk holds `image` at its start, zero padding to the block, and takes no more space
/// than its non-zero blocks (+1%, which is where the file system's own blocks go: ext4 needs
/// a 4 KiB extent block once a file has more than 4 runs of data, so test images have over
/// 100 runs).
pub async fn assert_thin_disk_holds(app: &TestApp, disk: &Value, image: &[u8], data_blocks: usize) {
    assert_eq!(disk["capacity"], DISK_1GB_SIZE);
    let volume = ServerDb::open(&app.server)
        .await
        .of_disk(disk["disk_id"].as_i64().unwrap())
        .await;
    assert_eq!(
        volume.virtual_size(),
        DISK_1GB_SIZE,
        "the volume has the disk's size"
    );
    let allocated = volume.data_bytes();
    let limit = if volume.rbd.is_some() {
        // RBD allocates 4 MiB objects: only those the image has data in may exist.
        const OBJECT: usize = 4 << 20;
        let objects = image
            .chunks(OBJECT)
            .filter(|object| object.iter().any(|&b| b != 0))
            .count();
        (objects * OBJECT) as u64
    } else {
        (data_blocks * 4096) as u64 * 101 / 100
    };
    assert!(
        allocated <= limit,
        "volume allocates {allocated} bytes; its data is {} bytes",
        data_blocks * 4096
    );
    let head = volume.read(0, (round_up_4k(image.len()) + 8192) as u64);
    assert!(
        head[..image.len()] == *image,
        "the image is at the disk's start"
    );
    assert!(
        head[image.len()..].iter().all(|&b| b == 0),
        "the rest reads as zeros"
    );
}

/// A deterministic image: `len` bytes where every `every`th 4 KiB block holds pseudo-random
/// data and the rest are zeros. Returns the image and its count of non-zero blocks.
pub fn sparse_image(len: u64, every: usize, seed: u64) -> (Vec<u8>, usize) {
    let mut image = vec![0u8; len as usize];
    let mut state = seed | 1;
    let mut blocks = 0;
    for (i, block) in image.chunks_mut(4096).enumerate() {
        if i % every == 0 {
            blocks += 1;
            for b in block.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = (state >> 24) as u8 | 1;
            }
        }
    }
    (image, blocks)
}

pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

/// `data` gzipped (one member, fast compression).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// The 4 KiB blocks of `image` that hold something other than zeros.
pub fn data_blocks(image: &[u8]) -> usize {
    image
        .chunks(4096)
        .filter(|block| block.iter().any(|&b| b != 0))
        .count()
}

/// Runs qemu-img (package qemu-utils; scripts/test.sh installs it).
pub fn qemu_img(args: &[&str]) {
    let out = std::process::Command::new("qemu-img")
        .args(args)
        .output()
        .expect("running qemu-img (install qemu-utils)");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The raw file `src` converted into `dest` by `qemu-img convert -f raw <options>` (`-O
/// qcow2 -c`, `-O vmdk -o subformat=streamOptimized`, `-O vpc`...).
pub fn convert_file(src: &Path, dest: &Path, options: &[&str]) {
    let mut args = vec!["convert", "-f", "raw"];
    args.extend_from_slice(options);
    let (src, dest) = (src.display().to_string(), dest.display().to_string());
    args.extend([src.as_str(), dest.as_str()]);
    qemu_img(&args);
}

/// `raw` converted by `qemu-img convert -O <options>` into `<dir>/<name>` (by way of
/// `<dir>/source.raw`); returns the converted file.
pub fn converted(dir: &Path, raw: &[u8], name: &str, options: &[&str]) -> Vec<u8> {
    let src = dir.join("source.raw");
    std::fs::write(&src, raw).unwrap();
    let dest = dir.join(name);
    convert_file(&src, &dest, options);
    std::fs::read(&dest).unwrap()
}

/// gzip in two members, as `cat a.gz b.gz` makes, to check every member is read.
pub fn gzip_two_members(data: &[u8]) -> Vec<u8> {
    let half = data.len() / 2;
    let mut out = Vec::new();
    for part in [&data[..half], &data[half..]] {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(part).unwrap();
        out.extend(enc.finish().unwrap());
    }
    out
}

/// A small ISO 9660 image made with `xorriso -as mkisofs` from a folder holding one file.
pub fn make_iso(dir: &Path) -> Vec<u8> {
    let content = dir.join("iso-content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("README.TXT"), b"an installer, say\n").unwrap();
    let iso = dir.join("test.iso");
    let out = std::process::Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "TESTCD", "-o"])
        .arg(&iso)
        .arg(&content)
        .output()
        .expect("running xorriso (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "xorriso failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&iso).unwrap()
}
