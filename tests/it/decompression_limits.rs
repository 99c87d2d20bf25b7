//! Decompression limits end to end: an xz image whose header asks for a huge dictionary, or a
//! zstd image with a huge window, fails FetchDisk with `DECOMPRESSION_LIMIT` as soon as the
//! header is read, and makes nothing; `--max-decompression-memory` (or its variable) moves the
//! limit. On SQLite and PostgreSQL.
//!
//! The hostile images are a few KiB of data whose header declares the dictionary or window: the
//! limit is checked against what the header asks for, and the decoders touch only the memory
//! the data fills, so letting one through with a raised limit costs this test next to nothing.

use std::io::Write;

use liblzma::stream::{Check, Filters, LzmaOptions, Stream};
use serde_json::json;

use crate::support::fetch_disk::{
    allowing, assert_thin_disk_holds, disks, fetch, fetch_args, sparse_image,
};
use crate::support::image_server::ImageServer;
use crate::support::{Backend, MIB, ServerOptions, TestApp, db_test, files_in};

/// What follows a hostile header in the served file, never to be downloaded in full.
const TAIL: usize = 64 * MIB as usize;

/// An xz stream of `data` whose LZMA2 header asks for a dictionary of `dict_size` bytes.
fn xz_with_dictionary(data: &[u8], dict_size: u32) -> Vec<u8> {
    let mut options = LzmaOptions::new_preset(0).unwrap();
    options.dict_size(dict_size);
    let mut filters = Filters::new();
    filters.lzma2(&options);
    let stream = Stream::new_stream_encoder(&filters, Check::Crc64).unwrap();
    let mut enc = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// A zstd frame of `data` with a window of 2^`window_log` bytes (written in a streaming call,
/// so the encoder does not shrink the window to the data's size).
fn zstd_with_window(data: &[u8], window_log: u32) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    enc.window_log(window_log).unwrap();
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// `TAIL` bytes after `head`: xz stream padding (zeros) or, for zstd, bytes that would be
/// refused as a frame; either way the decoder has failed before it gets there.
fn with_tail(mut head: Vec<u8>) -> Vec<u8> {
    head.resize(head.len() + TAIL, 0);
    head
}

fn with_limit(options: ServerOptions, limit: &str) -> ServerOptions {
    let mut options = options;
    options
        .args
        .extend(["--max-decompression-memory".into(), limit.into()]);
    options
}

async fn hostile_dictionaries_and_windows_fail_at_once_and_make_nothing(backend: Backend) {
    // The default limit: 256 MiB.
    let app = TestApp::start_with(backend, allowing("127.0.0.0/8")).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let server = ImageServer::start().await;
    let (image, _) = sparse_image(MIB, 8, 11);
    let cases = [
        // What `xz --lzma2=dict=512MiB` writes; xz -9 asks for 64 MiB.
        ("dictionary.xz", xz_with_dictionary(&image, 512 << 20), "xz"),
        // `zstd --long=30`
        ("window.zst", zstd_with_window(&image, 30), "zstd"),
    ];
    for (path, hostile, compression) in cases {
        assert!(hostile.len() < 256 << 10, "{path}: the header does it");
        let served = with_tail(hostile);
        let served_len = served.len() as u64;
        server.put_data(path, served);
        let sent_before = server.bytes_sent();
        let job_id = fetch(&alice, fetch_args(&server.url(path), vdc, path)).await;
        let (code, message) = alice.job_fails(job_id).await;
        assert_eq!(code, "DECOMPRESSION_LIMIT", "{path}: {message}");
        assert!(
            message.starts_with(&format!(
                "decompressing the {compression} data needs more than 256 MiB of memory"
            )),
            "{path}: {message}"
        );
        let sent = server.bytes_sent() - sent_before;
        assert!(
            sent < served_len / 2,
            "{path}: the fetch stopped at the header, not after {sent} of {served_len} bytes"
        );
    }
    assert!(disks(&alice, vdc).await.is_empty());
    assert!(files_in(&app.server.data_dir.join("staging")).is_empty());
    assert!(files_in(&app.server.data_dir.join("volumes")).is_empty());
}
db_test!(
    hostile_dictionaries_and_windows_fail_at_once_and_make_nothing,
    hostile_dictionaries_and_windows_fail_at_once_and_make_nothing
);

async fn the_limit_is_the_servers_to_set(backend: Backend) {
    let server = ImageServer::start().await;
    // Over 100 runs of data, as assert_thin_disk_holds needs.
    let (image, data_blocks) = sparse_image(4 * MIB, 8, 13);
    server.put_data("dictionary.xz", xz_with_dictionary(&image, 512 << 20));
    server.put_data("xz9-ish.xz", xz_with_dictionary(&image, 128 << 20));

    // Raised above what the header asks for, the same image goes through.
    let raised = with_limit(allowing("127.0.0.0/8"), "1G");
    let app = TestApp::start_with(backend, raised).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let job_id = fetch(
        &alice,
        fetch_args(&server.url("dictionary.xz"), vdc, "raised"),
    )
    .await;
    let job = alice.job_ok(job_id).await;
    let disk = alice
        .call("GetDisk", json!({"disk_id": job["item_id"]}))
        .await;
    assert_thin_disk_holds(&app, &disk, &image, data_blocks).await;
    drop(app);

    // Lowered (by the variable), what the default lets through fails.
    let mut lowered = allowing("127.0.0.0/8");
    lowered
        .env
        .push(("EXTILITY_MAX_DECOMPRESSION_MEMORY".into(), "64MiB".into()));
    let app = TestApp::start_with(backend, lowered).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let job_id = fetch(
        &alice,
        fetch_args(&server.url("xz9-ish.xz"), vdc, "lowered"),
    )
    .await;
    let (code, message) = alice.job_fails(job_id).await;
    assert_eq!(code, "DECOMPRESSION_LIMIT", "{message}");
    assert!(message.contains("more than 64 MiB"), "{message}");
    assert!(disks(&alice, vdc).await.is_empty());
    assert!(files_in(&app.server.data_dir.join("staging")).is_empty());
}
db_test!(
    the_limit_is_the_servers_to_set,
    the_limit_is_the_servers_to_set
);
