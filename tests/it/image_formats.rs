//! FetchDisk of qcow2, VMDK, VHD and VHDX images (converted into thin raw disks), the image
//! inspector's refusals (`UNSAFE_IMAGE`, nothing made), and checksums of every algorithm and
//! spelling; on SQLite and PostgreSQL (the formats on RBD too: raw images and fixed VHDs stream
//! into their staging image, the others are converted from a local file).

use std::path::Path;
use std::process::Command;

use openssl::hash::{MessageDigest, hash};
use serde_json::{Value, json};

use crate::support::fetch_disk::{
    allowing, assert_thin_disk_holds, converted, disks, fetch, fetch_args, gzip, qemu_img,
    sparse_image,
};
use crate::support::image_server::ImageServer;
use crate::support::{Api, Backend, MIB, Store, TestApp, db_test, files_in, storage_test};

async fn start(backend: Backend) -> TestApp {
    TestApp::start_with(backend, allowing("127.0.0.0/8")).await
}

fn digest(md: MessageDigest, data: &[u8]) -> String {
    hex::encode(hash(md, data).unwrap())
}

/// The staging and volume folders hold nothing, and the VDC no disk.
async fn nothing_made(app: &TestApp, api: &Api, vdc: i64) {
    assert!(disks(api, vdc).await.is_empty());
    assert!(files_in(&app.server.data_dir.join("staging")).is_empty());
    assert!(files_in(&app.server.data_dir.join("volumes")).is_empty());
}

async fn container_formats_become_thin_raw_disks(backend: Backend, store: Store) {
    let app = TestApp::start_on_with(backend, store, allowing("127.0.0.0/8")).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let server = ImageServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // 6 MiB, every 8th block data: a size every format keeps exactly (VHD's geometry too).
    let (image, data_blocks) = sparse_image(6 * MIB, 8, 11);
    let cases: &[(&str, &[&str], &str)] = &[
        ("disk.qcow2", &["-O", "qcow2"], "qcow2"),
        ("compressed.qcow2", &["-O", "qcow2", "-c"], "qcow2"),
        ("v2.qcow2", &["-O", "qcow2", "-o", "compat=0.10"], "qcow2"),
        ("disk.vmdk", &["-O", "vmdk"], "vmdk"),
        (
            "stream.vmdk",
            &["-O", "vmdk", "-o", "subformat=streamOptimized"],
            "vmdk",
        ),
        ("dynamic.vhd", &["-O", "vpc"], "vhd"),
        ("fixed.vhd", &["-O", "vpc", "-o", "subformat=fixed"], "vhd"),
        ("disk.vhdx", &["-O", "vhdx"], "vhdx"),
        ("disk.img", &["-O", "raw"], "raw"),
    ];
    for (index, (name, options, format)) in cases.iter().enumerate() {
        let file = converted(dir.path(), &image, name, options);
        // Every other one gzipped: the format is found after decompression.
        let (path, body) = if index % 2 == 0 {
            (format!("{name}.gz"), gzip(&file))
        } else {
            (name.to_string(), file.clone())
        };
        server.put_data(&path, body);
        let mut args = fetch_args(&server.url(&path), vdc, name);
        // The checksum is over the file as fetched (decompressed, not converted).
        args["checksum"] = json!(format!("sha256:{}", digest(MessageDigest::sha256(), &file)));
        let job = alice.job_ok(fetch(&alice, args).await).await;
        let disk = alice
            .call("GetDisk", json!({"disk_id": job["item_id"]}))
            .await;
        assert_eq!(disk["source_format"], *format, "{name}");
        assert_eq!(disk["media"], "disk");
        eprintln!("checking the disk fetched from {path}");
        assert_thin_disk_holds(&app, &disk, &image, data_blocks).await;
    }
    assert_eq!(disks(&alice, vdc).await.len(), cases.len());
    assert!(files_in(&app.server.data_dir.join("staging")).is_empty());

    // An image keeps its source format, and ListImages shows it.
    let file = converted(dir.path(), &image, "image.qcow2", &["-O", "qcow2"]);
    server.put_data("image.qcow2", file);
    let mut args = fetch_args(&server.url("image.qcow2"), vdc, "an image");
    args["make_image"] = json!(true);
    let job = alice.job_ok(fetch(&alice, args).await).await;
    let images = alice.call("ListImages", json!({})).await;
    let listed = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image_id"] == job["item_id"])
        .cloned()
        .unwrap();
    assert_eq!(listed["source_format"], "qcow2");
    assert_eq!(listed["media"], "disk");
}
storage_test!(
    container_formats_become_thin_raw_disks,
    container_formats_become_thin_raw_disks
);

/// A monolithic sparse VMDK of `raw` whose embedded descriptor gains `line` after its extent.
fn vmdk_with_extra_line(dir: &Path, raw: &[u8], line: &str) -> Vec<u8> {
    let mut file = converted(dir, raw, "extra.vmdk", &["-O", "vmdk"]);
    let at = 512 * u64::from_le_bytes(file[28..36].try_into().unwrap()) as usize;
    let size = 512 * u64::from_le_bytes(file[36..44].try_into().unwrap()) as usize;
    let area = &file[at..at + size];
    let end = area.iter().position(|&b| b == 0).unwrap();
    let text = String::from_utf8(area[..end].to_vec()).unwrap();
    let extent_end = text.find("\nRW ").unwrap() + 1;
    let extent_end = extent_end + text[extent_end..].find('\n').unwrap() + 1;
    let patched = format!("{}{line}\n{}", &text[..extent_end], &text[extent_end..]);
    assert!(patched.len() < size);
    file[at..at + patched.len()].copy_from_slice(patched.as_bytes());
    file
}

async fn unsafe_images_are_refused_and_make_nothing(backend: Backend) {
    let app = start(backend).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let server = ImageServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let (image, _) = sparse_image(2 * MIB, 4, 5);

    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "/etc/passwd",
        "-F",
        "raw",
        &path("b.qcow2"),
    ]);
    let backing = std::fs::read(path("b.qcow2")).unwrap();
    let data_file = format!("data_file={}", path("x.raw"));
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        &data_file,
        &path("d.qcow2"),
        "1M",
    ]);
    let external = std::fs::read(path("d.qcow2")).unwrap();
    let extra_extent = vmdk_with_extra_line(dir.path(), &image, "RW 4096 FLAT \"/etc/passwd\" 0");
    // Larger than the 1 GB offer.
    qemu_img(&["create", "-f", "qcow2", &path("big.qcow2"), "2G"]);
    let too_big = std::fs::read(path("big.qcow2")).unwrap();
    let good = converted(dir.path(), &image, "good.qcow2", &["-O", "qcow2"]);
    // The L1 table's offset moved far beyond the file.
    let mut l1_outside = good.clone();
    l1_outside[40..48].copy_from_slice(&(1u64 << 40).to_be_bytes());
    // Cut after the header cluster.
    let truncated = good[..64 << 10].to_vec();
    // A qcow2 that is also an ISO 9660 image.
    let mut two_formats = good.clone();
    two_formats[32_769..32_774].copy_from_slice(b"CD001");

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("backing.qcow2", backing, "backing file (\"/etc/passwd\")"),
        ("data-file.qcow2.gz", gzip(&external), "external data file"),
        ("extent.vmdk", extra_extent, "names 2 extents"),
        ("big.qcow2", too_big, "is larger than the disk"),
        ("l1.qcow2", l1_outside, "L1 table"),
        ("short.qcow2", truncated, "outside the file"),
        (
            "iso.qcow2",
            two_formats,
            "both a qcow2 image and an ISO 9660 image",
        ),
    ];
    for (name, body, reason) in cases {
        server.put_data(name, body);
        let job_id = fetch(&alice, fetch_args(&server.url(name), vdc, name)).await;
        let (code, message) = alice.job_fails(job_id).await;
        assert_eq!(code, "UNSAFE_IMAGE", "{name}: {message}");
        assert!(message.contains(reason), "{name}: {message}");
        nothing_made(&app, &alice, vdc).await;
    }
}
db_test!(
    unsafe_images_are_refused_and_make_nothing,
    unsafe_images_are_refused_and_make_nothing
);

async fn checksums_of_every_algorithm_and_spelling(backend: Backend) {
    let app = start(backend).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let server = ImageServer::start().await;
    let (image, _) = sparse_image(MIB, 4, 9);
    server.put_data("disk.img.gz", gzip(&image));
    let url = server.url("disk.img.gz");
    let md5 = digest(MessageDigest::md5(), &image);
    let sha1 = digest(MessageDigest::sha1(), &image);
    let sha256 = digest(MessageDigest::sha256(), &image);
    let sha512 = digest(MessageDigest::sha512(), &image);
    let right: Vec<String> = vec![
        md5.clone(),
        md5.to_uppercase(),
        format!("md5:{md5}"),
        format!("{{MD5}}{md5}"),
        sha1.clone(),
        format!("SHA1:{sha1}"),
        format!("{{SHA-1}}{sha1}"),
        sha256.clone(),
        format!("sha256:{sha256}"),
        format!("{{SHA-256}}{}", sha256.to_uppercase()),
        sha512.clone(),
        format!("sha512:{sha512}"),
        format!("{{sha-512}}{sha512}"),
    ];
    let mut jobs = Vec::new();
    for checksum in &right {
        let mut args = fetch_args(&url, vdc, "checked");
        args["checksum"] = json!(checksum);
        jobs.push(fetch(&alice, args).await);
    }
    for job_id in jobs {
        alice.job_ok(job_id).await;
    }
    // The right length and spelling, another file's digest.
    let other = b"another image";
    let wrong: Vec<(String, &str)> = vec![
        (digest(MessageDigest::md5(), other), "md5"),
        (
            format!("{{SHA-1}}{}", digest(MessageDigest::sha1(), other)),
            "sha1",
        ),
        (
            format!("sha256:{}", digest(MessageDigest::sha256(), other)),
            "sha256",
        ),
        (digest(MessageDigest::sha512(), other), "sha512"),
    ];
    for (checksum, algorithm) in wrong {
        let mut args = fetch_args(&url, vdc, "wrong");
        args["checksum"] = json!(checksum);
        let (code, message) = alice.job_fails(fetch(&alice, args).await).await;
        assert_eq!(code, "CHECKSUM_MISMATCH");
        assert!(message.contains(algorithm), "{message}");
    }
    // Bad syntax is refused by the call itself: no job.
    let jobs_before = alice
        .call("ListJobs", json!({}))
        .await
        .as_array()
        .unwrap()
        .len();
    for bad in [
        "abc".to_string(),
        format!("sha256:{md5}"),
        format!("{{SHA-384}}{}", "a".repeat(96)),
        format!("sha1:{}", "z".repeat(40)),
        "a".repeat(50),
    ] {
        let mut args: Value = fetch_args(&url, vdc, "bad");
        args["checksum"] = json!(bad);
        let err = alice.fail("FetchDisk", args).await;
        assert_eq!(err.code, "INVALID_ARGUMENT", "{bad}: {err:?}");
        assert!(err.message.contains("checksum"), "{err:?}");
    }
    let jobs_after = alice
        .call("ListJobs", json!({}))
        .await
        .as_array()
        .unwrap()
        .len();
    assert_eq!(jobs_before, jobs_after);
    assert_eq!(disks(&alice, vdc).await.len(), right.len());
}
db_test!(
    checksums_of_every_algorithm_and_spelling,
    checksums_of_every_algorithm_and_spelling
);

/// A compressed qcow2 of 256 MiB of non-zero data, a file of 400 KiB whose conversion takes
/// a while (made once: compressing takes seconds).
fn slow_to_convert() -> &'static [u8] {
    static IMAGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let raw = vec![1u8; 256 * MIB as usize];
        converted(dir.path(), &raw, "ones.qcow2", &["-O", "qcow2", "-c"])
    })
}

/// A `qemu-img` first on the server's PATH whose `convert` never ends (until it is killed),
/// and which passes anything else to the real one: a conversion that is certainly still
/// running when the test looks, however fast the machine.
fn stalled_conversion(dir: &Path) -> (String, String) {
    let bin = dir.join("stalled-qemu-img");
    std::fs::create_dir_all(&bin).unwrap();
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v qemu-img"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let script = bin.join("qemu-img");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ \"$1\" = convert ]; then exec sleep 3600; fi\nexec {} \"$@\"\n",
            real.trim()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    ("PATH".to_string(), path)
}

async fn a_conversion_shows_its_phase_and_can_be_cancelled(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut options = allowing("127.0.0.0/8");
    options.env.push(stalled_conversion(dir.path()));
    let app = TestApp::start_with(backend, options).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let server = ImageServer::start().await;
    server.put_data("ones.qcow2", slow_to_convert().to_vec());
    let job_id = fetch(&alice, fetch_args(&server.url("ones.qcow2"), vdc, "ones")).await;
    let job = alice
        .job_until(job_id, |job| {
            // Until it converts, or ends (queued 6, waiting for a slot 7, running 2).
            job["phase"] == "converting" || ![2, 6, 7].contains(&job["status"].as_i64().unwrap())
        })
        .await;
    assert_eq!(job["phase"], "converting", "{job}");
    assert_eq!(
        job["bytes_total"],
        256 * MIB,
        "conversion counts the virtual size"
    );
    alice.call("CancelJob", json!({"job_id": job_id})).await;
    let job = alice.wait_job(job_id).await;
    assert_eq!(job["status"], 4, "{job}");
    nothing_made(&app, &alice, vdc).await;
}
db_test!(
    a_conversion_shows_its_phase_and_can_be_cancelled,
    a_conversion_shows_its_phase_and_can_be_cancelled
);
