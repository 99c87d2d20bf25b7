//! Fetch budgets end to end (issue 11, starvation): a source that dribbles past the deadline,
//! one below the minimum throughput after the grace period, one that breaks off every request
//! and one that sends padding without end each fail FetchDisk with `FETCH_TIMEOUT`, naming the
//! budget, and make nothing; sources within the budgets are fetched. On SQLite and PostgreSQL.
//!
//! The servers run with small budgets (`--fetch-deadline 3`, `--fetch-grace 1`, ...) so the
//! tests are quick; every slow source here would finish, given long enough, so a budget that
//! is not enforced makes its test fail rather than hang.

use std::time::Duration;

use serde_json::json;

use crate::support::fetch_disk::{
    allowing, assert_thin_disk_holds, disks, fetch, fetch_args, gzip, md5_hex, sparse_image,
};
use crate::support::ftp_server::FtpServer;
use crate::support::image_server::{ImageServer, Served};
use crate::support::{Backend, MIB, ServerOptions, TestApp, db_test, files_in};

/// A server allowed to fetch from loopback, with these `--fetch-*` flags.
fn with_budgets(flags: &[&str]) -> ServerOptions {
    let mut options = allowing("127.0.0.0/8");
    options.args.extend(flags.iter().map(|f| f.to_string()));
    options
}

/// No disk, no volume, no staging file.
fn assert_nothing_made(app: &TestApp, disks: &[serde_json::Value]) {
    assert!(disks.is_empty(), "{disks:?}");
    assert!(files_in(&app.server.data_dir.join("staging")).is_empty());
    assert!(files_in(&app.server.data_dir.join("volumes")).is_empty());
}

async fn a_source_that_dribbles_forever_meets_the_deadline(backend: Backend) {
    let app = TestApp::start_with(backend, with_budgets(&["--fetch-deadline", "3"])).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;

    // HTTP: 1 KiB every 100 ms, 30 s for the whole file.
    let server = ImageServer::start().await;
    let (image, _) = sparse_image(300 << 10, 1, 41);
    server.put(
        "dribble.img",
        Served {
            data: image.into(),
            pace: Some((1 << 10, Duration::from_millis(100))),
            ..Default::default()
        },
    );
    let job_id = fetch(&alice, fetch_args(&server.url("dribble.img"), vdc, "http")).await;
    let (code, message) = alice.job_fails(job_id).await;
    assert_eq!(code, "FETCH_TIMEOUT", "{message}");
    assert_eq!(message, "the fetch took longer than its 3 s deadline");
    assert!(server.bytes_sent() > 0, "the source was sending");

    // FTP (a blocking downloader of its own): 32 KiB/s, about two minutes for the file.
    let root = app.dir.path().join("ftp-root");
    std::fs::create_dir_all(&root).unwrap();
    let (image, _) = sparse_image(4 * MIB, 1, 43);
    std::fs::write(root.join("dribble.img"), image).unwrap();
    let ftp = FtpServer::start_throttled(&root, "ftpuser", "ftp-s3cret", 32 << 10);
    let mut args = fetch_args(&ftp.url("dribble.img"), vdc, "ftp");
    args["conn_user"] = json!("ftpuser");
    args["conn_pass"] = json!("ftp-s3cret");
    let (code, message) = alice.job_fails(fetch(&alice, args).await).await;
    assert_eq!(code, "FETCH_TIMEOUT", "{message}");
    assert_eq!(message, "the fetch took longer than its 3 s deadline");

    assert_nothing_made(&app, &disks(&alice, vdc).await);
}
db_test!(
    a_source_that_dribbles_forever_meets_the_deadline,
    a_source_that_dribbles_forever_meets_the_deadline
);

async fn a_source_below_the_minimum_throughput_fails_after_the_grace_period(backend: Backend) {
    let flags = ["--fetch-grace", "1", "--fetch-min-throughput", "1M"];
    let app = TestApp::start_with(backend, with_budgets(&flags)).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let server = ImageServer::start().await;

    // About 160 KiB/s: 25 s for the file, far below 1 MiB/s.
    let (image, _) = sparse_image(4 * MIB, 1, 47);
    server.put(
        "slow.img",
        Served {
            data: image.into(),
            pace: Some((16 << 10, Duration::from_millis(100))),
            ..Default::default()
        },
    );
    let job_id = fetch(&alice, fetch_args(&server.url("slow.img"), vdc, "slow")).await;
    let (code, message) = alice.job_fails(job_id).await;
    assert_eq!(code, "FETCH_TIMEOUT", "{message}");
    assert!(
        message.starts_with("the source sent ")
            && message.contains("/s on average over ")
            && message.ends_with(", below the minimum of 1 MiB/s"),
        "{message}"
    );
    assert_nothing_made(&app, &disks(&alice, vdc).await);

    // A source as fast as loopback, under the same flags, is fetched.
    let (image, blocks) = sparse_image(8 * MIB, 8, 53);
    server.put_data("fast.img", image.clone());
    let mut args = fetch_args(&server.url("fast.img"), vdc, "fast");
    args["checksum"] = json!(md5_hex(&image));
    let job = alice.job_ok(fetch(&alice, args).await).await;
    let disk = alice
        .call("GetDisk", json!({"disk_id": job["item_id"]}))
        .await;
    assert_thin_disk_holds(&app, &disk, &image, blocks).await;
}
db_test!(
    a_source_below_the_minimum_throughput_fails_after_the_grace_period,
    a_source_below_the_minimum_throughput_fails_after_the_grace_period
);

async fn a_source_that_breaks_off_every_request_runs_out_of_retries(backend: Backend) {
    let app = TestApp::start_with(backend, with_budgets(&["--fetch-max-retries", "2"])).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let server = ImageServer::start().await;
    const PIECE: usize = 64 << 10;
    let flaky = |data: Vec<u8>| Served {
        data: data.into(),
        break_every_after: Some(PIECE),
        ..Default::default()
    };

    // 16 pieces: every request makes progress, and the third retry is one too many.
    let (image, _) = sparse_image(16 * PIECE as u64, 1, 59);
    server.put("long.img", flaky(image));
    let job_id = fetch(&alice, fetch_args(&server.url("long.img"), vdc, "long")).await;
    let (code, message) = alice.job_fails(job_id).await;
    assert_eq!(code, "FETCH_TIMEOUT", "{message}");
    assert!(
        message.starts_with("the fetch failed after 2 retries in all (the last: "),
        "{message}"
    );
    let starts: Vec<usize> = server
        .seen()
        .iter()
        .filter(|s| s.path == "long.img")
        .map(|s| {
            s.range.as_deref().map_or(0, |r| {
                r.strip_prefix("bytes=")
                    .and_then(|r| r.strip_suffix('-'))
                    .and_then(|n| n.parse().ok())
                    .unwrap()
            })
        })
        .collect();
    assert_eq!(
        starts.len(),
        3,
        "the first request and 2 retries: {starts:?}"
    );
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "every retry resumed further on: {starts:?}"
    );
    assert_nothing_made(&app, &disks(&alice, vdc).await);

    // 3 pieces: the first request and 2 retries fetch it.
    let (image, _) = sparse_image(3 * PIECE as u64, 1, 61);
    server.put("short.img", flaky(image.clone()));
    let mut args = fetch_args(&server.url("short.img"), vdc, "short");
    args["checksum"] = json!(md5_hex(&image));
    alice.job_ok(fetch(&alice, args).await).await;
    let requests = server
        .seen()
        .iter()
        .filter(|s| s.path == "short.img")
        .count();
    assert_eq!(requests, 3);
}
db_test!(
    a_source_that_breaks_off_every_request_runs_out_of_retries,
    a_source_that_breaks_off_every_request_runs_out_of_retries
);

/// A zstd skippable frame of `len` bytes of content (RFC 8878, 3.1.2).
fn skippable_frame(len: usize) -> Vec<u8> {
    let mut frame = 0x184D_2A50u32.to_le_bytes().to_vec();
    frame.extend((len as u32).to_le_bytes());
    frame.resize(8 + len, 0xaa);
    frame
}

/// `image` compressed, followed by at least `padding` bytes that decode to nothing: zstd
/// skippable frames, xz stream padding, empty gzip members.
fn padded(image: &[u8], padding: usize) -> Vec<(&'static str, Vec<u8>)> {
    let mut zst = zstd::encode_all(image, 1).unwrap();
    let end = zst.len() + padding;
    while zst.len() < end {
        zst.extend(skippable_frame(64 << 10));
    }
    let mut xz = liblzma::encode_all(image, 1).unwrap();
    xz.resize(xz.len() + padding, 0);
    let mut gz = gzip(image);
    let empty = gzip(b"");
    for _ in 0..padding.div_ceil(empty.len()) {
        gz.extend(&empty);
    }
    vec![("zstd", zst), ("xz", xz), ("gzip", gz)]
}

async fn padding_without_end_fails_and_padding_within_the_bound_passes(backend: Backend) {
    let app = TestApp::start_with(backend, with_budgets(&["--fetch-max-padding", "1M"])).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let server = ImageServer::start().await;
    // Over 100 runs of data, as assert_thin_disk_holds needs.
    let (image, blocks) = sparse_image(2 * MIB, 4, 67);

    // 64 MiB of padding after the image: the decoder stops 1 MiB into it (what the pipeline
    // and the sockets buffered meanwhile comes on top: a few MiB, up to 20 on a busy machine).
    for (kind, data) in padded(&image, 64 * MIB as usize) {
        let path = format!("endless.{kind}");
        let served_len = data.len() as u64;
        server.put_data(&path, data);
        let sent_before = server.bytes_sent();
        let job_id = fetch(&alice, fetch_args(&server.url(&path), vdc, &path)).await;
        let (code, message) = alice.job_fails(job_id).await;
        assert_eq!(code, "FETCH_TIMEOUT", "{kind}: {message}");
        assert_eq!(
            message,
            "the source sent more than 1 MiB without a byte of image (padding, skippable \
             frames or empty members)",
            "{kind}"
        );
        let sent = server.bytes_sent() - sent_before;
        assert!(
            sent < served_len / 2,
            "{kind}: the fetch stopped in the padding, not after {sent} of {served_len} bytes"
        );
    }
    assert_nothing_made(&app, &disks(&alice, vdc).await);

    // Half a MiB of padding is within the bound.
    for (kind, data) in padded(&image, (MIB / 2) as usize) {
        let path = format!("padded.{kind}");
        server.put_data(&path, data);
        let mut args = fetch_args(&server.url(&path), vdc, &path);
        args["checksum"] = json!(md5_hex(&image));
        let job = alice.job_ok(fetch(&alice, args).await).await;
        let disk = alice
            .call("GetDisk", json!({"disk_id": job["item_id"]}))
            .await;
        assert_thin_disk_holds(&app, &disk, &image, blocks).await;
    }

    // A sparse image's zeros are image bytes, however well they compress: 64 MiB of mostly
    // zeros in a few hundred KiB of zstd.
    let (sparse, sparse_blocks) = sparse_image(64 * MIB, 128, 71);
    let zst = zstd::encode_all(&sparse[..], 3).unwrap();
    assert!(zst.len() < MIB as usize, "{} bytes", zst.len());
    server.put_data("sparse.zst", zst);
    let mut args = fetch_args(&server.url("sparse.zst"), vdc, "sparse");
    args["checksum"] = json!(md5_hex(&sparse));
    let job = alice.job_ok(fetch(&alice, args).await).await;
    let disk = alice
        .call("GetDisk", json!({"disk_id": job["item_id"]}))
        .await;
    assert_thin_disk_holds(&app, &disk, &sparse, sparse_blocks).await;
}
db_test!(
    padding_without_end_fails_and_padding_within_the_bound_passes,
    padding_without_end_fails_and_padding_within_the_bound_passes
);
