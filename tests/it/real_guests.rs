//! Real OS images end to end (issue 12): a small bootable Linux disk (Debian's kernel, a
//! busybox initramfs, made bootable with `fsmaker`) converted with `qemu-img` to qcow2
//! (compressed clusters), VMDK (stream-optimized) and VHD (dynamic), gzipped, fetched with
//! FetchDisk (which recognises the format, inspects and converts it into a thin raw disk),
//! attached to a server and booted under QEMU; the test reads the guest's marker with
//! GetConsoleLog.
//!
//! Each format gets a disk of its own, with a string made for this run written into it before
//! conversion twice: in the initramfs (`/etc/real-guest`) and on the kernel command line (the
//! boot loader's configuration). The guest prints both; a disk that was swapped, half converted
//! or booted from elsewhere cannot print the expected line.
//!
//! Needs `linux-image-amd64`, `busybox-static`, `qemu-utils` and `qemu-system-x86`
//! (scripts/test.sh installs them), and root (Debian's `/boot/vmlinuz-*` is readable by root
//! only).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::catalogue::{DISK_1GB, DISK_1GB_SIZE, SERVER_1CPU_512MB};
use crate::support::fetch_disk::{
    assert_thin_disk_holds, convert_file, data_blocks, fetch, fetch_args, gzip,
};
use crate::support::guest::{GuestDisk, qemu_options};
use crate::support::image_server::ImageServer;
use crate::support::server_db::ServerDb;
use crate::support::test_app::Boot;
use crate::support::{Backend, TestApp};

/// Three guests booting at once under TCG, on a machine other tests share.
const GUEST_TIMEOUT: Duration = Duration::from_secs(300);
const DONE: &str = "GUEST DONE";

/// The guest's `/init`: prints the string of its initramfs and the one of its kernel
/// command line (`real_guest=...`), then powers off.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
echo "GUEST INIT"
arg=none
for t in $(cat /proc/cmdline); do
  case "$t" in real_guest=*) arg=${t#real_guest=};; esac
done
echo "MARKER file=$(cat /etc/real-guest) cmdline=$arg"
echo "GUEST DONE"
poweroff -f
"#;

/// A format the test converts the disk to.
struct Format {
    /// The file's extension, and the name of its disk and server.
    ext: &'static str,
    /// `qemu-img convert -f raw` options.
    options: &'static [&'static str],
    /// What GetDisk says it was fetched as.
    source_format: &'static str,
}

const FORMATS: [Format; 3] = [
    Format {
        ext: "qcow2",
        options: &["-O", "qcow2", "-c"],
        source_format: "qcow2",
    },
    Format {
        ext: "vmdk",
        options: &["-O", "vmdk", "-o", "subformat=streamOptimized"],
        source_format: "vmdk",
    },
    // qemu-img calls VHD `vpc`; the platform calls it `vhd`.
    Format {
        ext: "vhd",
        options: &["-O", "vpc", "-o", "subformat=dynamic"],
        source_format: "vhd",
    },
];

/// The disk built for one format: the raw image, and the file served (converted, gzipped).
struct Made {
    raw: Vec<u8>,
    /// SHA-256 of the converted file (what FetchDisk checks: the file as fetched, decompressed).
    sha256: String,
    gzipped: Vec<u8>,
}

/// Builds the guest disk for `format` with `marker` in it, converts and gzips it.
fn make(dir: PathBuf, format: &'static Format, marker: String) -> Made {
    let raw_path = GuestDisk::new(INIT)
        .append(&format!("quiet real_guest={marker}"))
        .file("etc/real-guest", 0o644, marker.clone())
        .build(&dir, &format!("guest-{}", format.ext));
    let converted_path = dir.join(format!("guest.{}", format.ext));
    convert_file(&raw_path, &converted_path, format.options);
    let converted = std::fs::read(&converted_path).unwrap();
    Made {
        raw: std::fs::read(&raw_path).unwrap(),
        sha256: hex::encode(openssl::sha::sha256(&converted)),
        gzipped: gzip(&converted),
    }
}

/// How long each step took for one format.
struct Timing {
    /// The guest's marker line.
    said: String,
    made: Duration,
    fetched: Duration,
    booted: Duration,
}

/// One format, end to end: made, fetched and checked, booted, its marker read.
async fn fetch_and_boot(app: &TestApp, files: &ImageServer, format: &'static Format) -> Timing {
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let started = Instant::now();
    let marker = format!("{}-{}", format.ext, uuid::Uuid::new_v4().simple());
    let dir = app.dir.path().join(format.ext);
    std::fs::create_dir_all(&dir).unwrap();
    let made = {
        let marker = marker.clone();
        tokio::task::spawn_blocking(move || make(dir, format, marker))
            .await
            .unwrap()
    };
    let made_in = started.elapsed();

    let gzipped_len = made.gzipped.len();
    let url = files.put_data(&format!("guest.{}.gz", format.ext), made.gzipped);
    let mut args = fetch_args(&url, vdc, format.ext);
    args["checksum"] = json!(format!("sha256:{}", made.sha256));
    let job = alice.job_ok(fetch(&alice, args).await).await;
    let disk = alice
        .call("GetDisk", json!({"disk_id": job["item_id"]}))
        .await;
    let fetched_in = started.elapsed() - made_in;
    assert_eq!(disk["source_format"], format.source_format, "{disk}");
    assert_eq!(disk["media"], "disk", "{disk}");
    // The raw image is at the disk's start, and the volume allocates its data only.
    assert_thin_disk_holds(app, &disk, &made.raw, data_blocks(&made.raw)).await;
    let allocated = ServerDb::open(&app.server)
        .await
        .of_disk(disk["disk_id"].as_i64().unwrap())
        .await
        .allocated();
    assert!(
        allocated < DISK_1GB_SIZE / 10,
        "{}: the volume allocates {allocated} bytes of {DISK_1GB_SIZE}",
        format.ext
    );
    eprintln!(
        "real_guests: {}: a {}-byte image, {gzipped_len} bytes gzipped; the disk allocates {} of \
         {} bytes",
        format.ext,
        made.raw.len(),
        allocated,
        DISK_1GB_SIZE
    );

    let name = format!("guest-{}", format.ext);
    let server = Boot {
        name: &name,
        server_offer: SERVER_1CPU_512MB,
        disk_offer: DISK_1GB,
        ..Boot::default()
    };
    let server_id = app.boot(&disk, server).await;
    let booting = Instant::now();
    let log = app.console_until(server_id, DONE, GUEST_TIMEOUT).await;
    let booted_in = booting.elapsed();
    let lines: Vec<&str> = log.lines().map(str::trim).collect();
    let expected = format!("MARKER file={marker} cmdline={marker}");
    assert!(
        lines.contains(&expected.as_str()),
        "{}: the guest must print {expected:?}: {log}",
        format.ext
    );
    Timing {
        said: expected,
        made: made_in,
        fetched: fetched_in,
        booted: booted_in,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qcow2_vmdk_and_vhd_images_are_fetched_converted_and_boot() {
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let started = Instant::now();
    // SQLite only: what is under test is the image's path from the file served to the booted
    // guest (inspection, conversion, the thin volume, QEMU), none of which depends on the
    // database engine; FetchDisk's jobs and disks on PostgreSQL are image_formats's.
    let app = TestApp::start_with(
        Backend::Sqlite,
        // The three fetches at once (the default lets a customer run two).
        qemu_options(&["--max-fetches-per-customer", "3"]),
    )
    .await;
    let files = ImageServer::start().await;
    // The three at once: wall time is the slowest one's, not the sum.
    let timings =
        futures::future::join_all(FORMATS.iter().map(|f| fetch_and_boot(&app, &files, f))).await;
    for (format, t) in FORMATS.iter().zip(&timings) {
        eprintln!(
            "real_guests: {}: image made in {:?}, fetched in {:?}, {:?} on the console {:?} \
             after StartServer",
            format.ext, t.made, t.fetched, t.said, t.booted
        );
    }
    eprintln!("real_guests: {:?} in all", started.elapsed());
}
