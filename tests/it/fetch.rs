//! FetchDisk end to end: the real server fetches from an HTTP server in this process and from
//! a real FTP server, on SQLite and PostgreSQL.

use std::time::Duration;

use serde_json::json;

use crate::support::catalogue::DISK_1GB_SIZE;
use crate::support::fetch_disk::{
    allowing, assert_thin_disk_holds, disks, fetch, fetch_args, gzip_two_members, make_iso,
    md5_hex, sparse_image,
};
use crate::support::ftp_server::FtpServer;
use crate::support::image_server::{ImageServer, Served};
use crate::support::server_db::ServerDb;
use crate::support::{Backend, GIB, MIB, Store, TestApp, db_test, files_in, run_php, storage_test};

async fn start(backend: Backend) -> TestApp {
    TestApp::start_with(backend, allowing("127.0.0.0/8")).await
}

async fn plain_and_compressed_images_become_thin_disks(backend: Backend, store: Store) {
    let app = TestApp::start_on_with(backend, store, allowing("127.0.0.0/8")).await;
    let db = ServerDb::open(&app.server).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let server = ImageServer::start().await;
    // Not a multiple of 4,096: the final partial block (which holds data) is padded.
    let (image, data_blocks) = sparse_image(6 * MIB + 1000, 8, 7);
    assert_eq!(data_blocks, 193);
    let md5 = md5_hex(&image);
    let sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&image))
    };
    let gz = gzip_two_members(&image);
    let xz = liblzma::encode_all(&image[..], 1).unwrap();
    let zst = zstd::encode_all(&image[..], 1).unwrap();
    let cases = [
        ("plain.img", image.clone(), Some(md5.to_uppercase())),
        ("image.gz.download", gz, Some(md5.clone())),
        ("image.xz", xz, Some(format!("sha256:{sha256}"))),
        ("image.zst", zst, None),
    ];
    for (path, body, checksum) in cases {
        let served_len = body.len() as i64;
        server.put_data(path, body);
        let mut args = fetch_args(&server.url(path), vdc, path);
        args["checksum"] = json!(checksum);
        let job_id = fetch(&alice, args).await;
        let job = alice.job_ok(job_id).await;
        assert_eq!(job["item_type"], "disk");
        assert_eq!(job["progress"], 100);
        assert_eq!(
            job["bytes_done"], served_len,
            "{path}: bytes_done counts the download"
        );
        assert_eq!(job["bytes_total"], served_len);
        let disk = alice
            .call("GetDisk", json!({"disk_id": job["item_id"]}))
            .await;
        assert_eq!(disk["disk_name"], path);
        assert_eq!(disk["media"], "disk");
        assert_eq!(disk["vdc_id"], vdc);
        assert_thin_disk_holds(&app, &disk, &image, data_blocks).await;
        let charged = db
            .query_i64(
            "SELECT CAST(SUM(quantity) AS BIGINT) FROM usage_records WHERE kind = 'bytes_fetched' AND job_id = $1",
            job_id,
        )
        .await;
        assert_eq!(
            charged,
            Some(served_len),
            "{path}: bytes over the wire are recorded"
        );
    }
    assert_eq!(disks(&alice, vdc).await.len(), 4);
    assert!(files_in(&app.server.data_dir.join("staging")).is_empty());
    assert_eq!(db.stored().len(), 4, "four volumes, no staging left");
}
storage_test!(
    plain_and_compressed_images_become_thin_disks,
    plain_and_compressed_images_become_thin_disks
);

async fn a_wrong_md5_fails_and_makes_nothing(backend: Backend, store: Store) {
    let app = TestApp::start_on_with(backend, store, allowing("127.0.0.0/8")).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let server = ImageServer::start().await;
    let (image, _) = sparse_image(MIB, 4, 3);
    server.put_data("image.gz", gzip_two_members(&image));
    let mut args = fetch_args(&server.url("image.gz"), vdc, "bad");
    args["checksum"] = json!(md5_hex(b"something else"));
    let job_id = fetch(&alice, args).await;
    let (code, message) = alice.job_fails(job_id).await;
    assert_eq!(code, "CHECKSUM_MISMATCH");
    assert!(message.contains(&md5_hex(&image)), "{message}");
    assert!(disks(&alice, vdc).await.is_empty());
    assert!(files_in(&app.server.data_dir.join("staging")).is_empty());
    assert!(ServerDb::open(&app.server).await.stored().is_empty());
}
storage_test!(
    a_wrong_md5_fails_and_makes_nothing,
    a_wrong_md5_fails_and_makes_nothing
);

async fn http_credentials_are_used_and_never_shown(backend: Backend) {
    const PASSWORD: &str = "pa55-w0rd-xyzzy";
    let app = start(backend).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let server = ImageServer::start().await;
    let (image, _) = sparse_image(256 << 10, 2, 5);
    server.put(
        "private/disk.img",
        Served {
            data: image.clone().into(),
            auth: Some(("fetcher".into(), PASSWORD.into())),
            ..Default::default()
        },
    );
    let url = server.url("private/disk.img");

    let job_id = fetch(&alice, fetch_args(&url, vdc, "no-credentials")).await;
    let (code, message) = alice.job_fails(job_id).await;
    assert_eq!(code, "FETCH_FAILED");
    assert!(message.contains("401"), "{message}");

    let mut args = fetch_args(&url, vdc, "with-arguments");
    args["conn_user"] = json!("fetcher");
    args["conn_pass"] = json!(PASSWORD);
    alice.job_ok(fetch(&alice, args).await).await;

    let in_url = url.replace("http://", &format!("http://fetcher:{PASSWORD}@"));
    let job_id = fetch(&alice, fetch_args(&in_url, vdc, "in-url")).await;
    let job = alice.job_ok(job_id).await;
    assert!(!job["name"].as_str().unwrap().contains("fetcher:"));
    assert_eq!(disks(&alice, vdc).await.len(), 2);

    let jobs = alice.call("ListJobs", json!({})).await.to_string();
    assert!(!jobs.contains(PASSWORD), "a job record shows the password");
    assert!(
        !app.server.log_text().contains(PASSWORD),
        "the log shows the password"
    );
    let db = ServerDb::open(&app.server).await;
    let leaked = db
        .query_i64(
        "SELECT COUNT(*) FROM jobs WHERE id > $1 AND (params LIKE '%pa55%' OR name LIKE '%pa55%')",
        0,
    )
    .await;
    assert_eq!(leaked, Some(0));
    let secrets = db
        .query_i64("SELECT COUNT(*) FROM job_secrets WHERE job_id > $1", 0)
        .await;
    assert_eq!(
        secrets,
        Some(0),
        "sealed credentials are deleted when the job ends"
    );
}
db_test!(
    http_credentials_are_used_and_never_shown,
    http_credentials_are_used_and_never_shown
);

async fn redirects_are_followed_and_credentials_stay_at_their_origin(backend: Backend) {
    let app = start(backend).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let origin = ImageServer::start().await;
    let other = ImageServer::start().await;
    let (image, blocks) = sparse_image(2 * MIB, 3, 9);
    origin.put(
        "files/secret.img",
        Served {
            data: image.clone().into(),
            auth: Some(("u".into(), "p".into())),
            ..Default::default()
        },
    );
    origin.redirect("hop1", "/hop2");
    origin.redirect("hop2", &origin.url("files/secret.img"));
    let mut args = fetch_args(&origin.url("hop1"), vdc, "same-origin");
    args["conn_user"] = json!("u");
    args["conn_pass"] = json!("p");
    args["checksum"] = json!(md5_hex(&image));
    let job = alice.job_ok(fetch(&alice, args).await).await;
    let disk = alice
        .call("GetDisk", json!({"disk_id": job["item_id"]}))
        .await;
    assert_thin_disk_holds(&app, &disk, &image, blocks).await;

    other.put_data("mirror.img", image.clone());
    origin.redirect("away", &other.url("mirror.img"));
    let mut args = fetch_args(&origin.url("away"), vdc, "other-origin");
    args["conn_user"] = json!("u");
    args["conn_pass"] = json!("p");
    alice.job_ok(fetch(&alice, args).await).await;
    let asked_origin = origin
        .seen()
        .into_iter()
        .find(|s| s.path == "away")
        .unwrap();
    assert!(
        asked_origin.authorization.is_some(),
        "the origin gets the credentials"
    );
    let asked_other = other.seen();
    assert_eq!(asked_other.len(), 1);
    assert_eq!(
        asked_other[0].authorization, None,
        "credentials must not follow a redirect to another origin"
    );

    origin.redirect("loop", "/loop");
    let job_id = fetch(&alice, fetch_args(&origin.url("loop"), vdc, "loop")).await;
    let (code, message) = alice.job_fails(job_id).await;
    assert_eq!(code, "FETCH_FAILED");
    assert!(message.contains("redirects"), "{message}");
    let hops = origin.seen().iter().filter(|s| s.path == "loop").count();
    assert_eq!(hops, 6, "the first request and 5 redirects");
}
db_test!(
    redirects_are_followed_and_credentials_stay_at_their_origin,
    redirects_are_followed_and_credentials_stay_at_their_origin
);

async fn redirects_to_refused_addresses_fail(backend: Backend) {
    // Only 127.0.0.1 is allowed; 127.0.0.2 is loopback like it, and refused.
    let app = TestApp::start_with(backend, allowing("127.0.0.1/32")).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let origin = ImageServer::start().await;
    let refused = ImageServer::start_on("127.0.0.2:0").await;
    refused.put_data("inside.img", vec![1u8; 8192]);
    origin.redirect("to-inside", &refused.url("inside.img"));
    origin.redirect("to-metadata", "http://169.254.169.254/latest/meta-data/");
    for (path, address) in [
        ("to-inside", "127.0.0.2"),
        ("to-metadata", "169.254.169.254"),
    ] {
        let job_id = fetch(&alice, fetch_args(&origin.url(path), vdc, path)).await;
        let (code, message) = alice.job_fails(job_id).await;
        assert_eq!(code, "FETCH_REFUSED", "{path}: {message}");
        assert!(message.contains(address), "{message}");
    }
    assert!(
        refused.seen().is_empty(),
        "nothing reached the refused address"
    );
    assert!(disks(&alice, vdc).await.is_empty());
}
db_test!(
    redirects_to_refused_addresses_fail,
    redirects_to_refused_addresses_fail
);

async fn private_addresses_and_other_schemes_are_refused(backend: Backend) {
    // No --allow-fetch-from: loopback is refused like any internal range.
    let app = TestApp::start(backend).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let server = ImageServer::start().await;
    server.put_data("disk.img", vec![1u8; 8192]);
    let by_name = server.url("disk.img").replace("127.0.0.1", "localhost");
    for url in [server.url("disk.img"), by_name] {
        let job_id = fetch(&alice, fetch_args(&url, vdc, "internal")).await;
        let (code, message) = alice.job_fails(job_id).await;
        assert_eq!(code, "FETCH_REFUSED", "{url}: {message}");
        assert!(message.contains("127.0.0.1"), "{message}");
    }
    assert!(
        server.seen().is_empty(),
        "no request reached the internal server"
    );
    for url in ["file:///etc/passwd", "gopher://example.com/disk"] {
        let err = alice
            .fail("FetchDisk", fetch_args(url, vdc, "scheme"))
            .await;
        assert_eq!(err.code, "FETCH_REFUSED", "{url}");
    }
}
db_test!(
    private_addresses_and_other_schemes_are_refused,
    private_addresses_and_other_schemes_are_refused
);

async fn an_image_larger_than_the_disk_stops_early(backend: Backend) {
    let app = start(backend).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let server = ImageServer::start().await;
    let four_gib = 4 * GIB;
    let job_id = fetch(
        &alice,
        fetch_args(&server.url(&format!("zeros/{four_gib}")), vdc, "huge"),
    )
    .await;
    let (code, _) = alice.job_fails(job_id).await;
    assert_eq!(code, "IMAGE_TOO_LARGE");
    assert!(
        server.bytes_sent() < DISK_1GB_SIZE + DISK_1GB_SIZE / 4,
        "the fetch stopped soon after the disk size, not after {} bytes",
        server.bytes_sent()
    );
    assert!(disks(&alice, vdc).await.is_empty());
    assert!(files_in(&app.server.data_dir.join("staging")).is_empty());
}
db_test!(
    an_image_larger_than_the_disk_stops_early,
    an_image_larger_than_the_disk_stops_early
);

async fn iso_images_become_cd_media_disks_and_images(backend: Backend) {
    let app = start(backend).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let server = ImageServer::start().await;
    let iso = make_iso(app.dir.path());
    assert_eq!(&iso[32769..32774], b"CD001");
    server.put_data("installer.iso", iso.clone());
    let job = alice
        .job_ok(
            fetch(
                &alice,
                fetch_args(&server.url("installer.iso"), vdc, "installer"),
            )
            .await,
        )
        .await;
    let disk = alice
        .call("GetDisk", json!({"disk_id": job["item_id"]}))
        .await;
    assert_eq!(disk["media"], "iso");

    server.put_data("installer.iso.gz", gzip_two_members(&iso));
    let mut args = fetch_args(&server.url("installer.iso.gz"), vdc, "installer-image");
    args["make_image"] = json!(true);
    args["image_default_username"] = json!("ubuntu");
    let job = alice.job_ok(fetch(&alice, args).await).await;
    assert_eq!(job["item_type"], "image");
    let images = alice.call("ListImages", json!({})).await;
    let image = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image_id"] == job["item_id"])
        .expect("the fetched image is listed");
    assert_eq!(image["media"], "iso");
    assert_eq!(disks(&alice, vdc).await.len(), 1, "an image is not a disk");
    let bobs = app.bob().call("ListImages", json!({})).await;
    assert!(
        !bobs
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["image_id"] == job["item_id"]),
        "the image is private"
    );
}
db_test!(
    iso_images_become_cd_media_disks_and_images,
    iso_images_become_cd_media_disks_and_images
);

/// 32 MiB at 64 KiB every 50 ms: about 25 s, far longer than the tests wait.
fn slow(data: Vec<u8>) -> Served {
    Served {
        data: data.into(),
        pace: Some((64 << 10, Duration::from_millis(50))),
        ..Default::default()
    }
}

async fn cancel_stops_within_two_seconds_and_removes_partial_data(backend: Backend) {
    let app = start(backend).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let server = ImageServer::start().await;
    let (image, _) = sparse_image(32 * MIB, 1, 11);
    server.put("slow.img", slow(image));
    let job_id = fetch(&alice, fetch_args(&server.url("slow.img"), vdc, "slow")).await;
    let running = alice
        .job_until(job_id, |j| j["bytes_done"].as_i64().unwrap() > 0)
        .await;
    assert_eq!(running["status"], 2);
    assert_eq!(running["phase"], "downloading");
    assert_eq!(running["bytes_total"], 32 * MIB);
    let progress = running["progress"].as_i64().unwrap();
    assert!((0..100).contains(&progress), "{running}");
    let staging = app.server.data_dir.join("staging");
    assert_eq!(
        files_in(&staging).len(),
        1,
        "the data goes to a staging file"
    );

    alice.call("CancelJob", json!({"job_id": job_id})).await;
    let job = alice
        .call(
            "WaitForJob",
            json!({"job_id": job_id, "timeout_seconds": 2}),
        )
        .await;
    assert_eq!(job["status"], 4, "the job did not stop within 2 s: {job}");
    assert!(files_in(&staging).is_empty(), "partial data is removed");
    assert!(disks(&alice, vdc).await.is_empty());
}
db_test!(
    cancel_stops_within_two_seconds_and_removes_partial_data,
    cancel_stops_within_two_seconds_and_removes_partial_data
);

async fn a_killed_server_finishes_the_fetch_after_restart(backend: Backend) {
    let mut app = start(backend).await;
    let vdc = app.alice.vdc_id;
    let server = ImageServer::start().await;
    let (image, blocks) = sparse_image(4 * MIB, 2, 13);
    // About 2 s per attempt.
    server.put(
        "slow.img",
        Served {
            data: image.clone().into(),
            pace: Some((128 << 10, Duration::from_millis(60))),
            ..Default::default()
        },
    );
    let mut args = fetch_args(&server.url("slow.img"), vdc, "survivor");
    args["checksum"] = json!(md5_hex(&image));
    let job_id = fetch(&app.alice(), args).await;
    app.alice()
        .job_until(job_id, |j| j["bytes_done"].as_i64().unwrap() > 0)
        .await;
    let staging = app.server.data_dir.join("staging");
    assert_eq!(files_in(&staging).len(), 1);

    app.server.kill9();
    app.server.restart();
    let alice = app.alice();
    let job = alice.wait_job(job_id).await;
    assert_eq!(
        job["status"], 1,
        "the fetch finished after the restart: {job}"
    );
    let all = disks(&alice, vdc).await;
    assert_eq!(all.len(), 1, "exactly one disk");
    assert_thin_disk_holds(&app, &all[0], &image, blocks).await;
    assert!(files_in(&staging).is_empty(), "no orphan staging file");
    let requests = server
        .seen()
        .iter()
        .filter(|s| s.path == "slow.img")
        .count();
    assert!(requests >= 2, "the fetch ran again after the restart");
}
db_test!(
    a_killed_server_finishes_the_fetch_after_restart,
    a_killed_server_finishes_the_fetch_after_restart
);

async fn a_broken_transfer_resumes_with_range(backend: Backend) {
    let app = start(backend).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let server = ImageServer::start().await;
    let (image, _) = sparse_image(2 * MIB, 1, 17);
    let gz = gzip_two_members(&image);
    let break_at = gz.len() / 3;
    server.put(
        "flaky.gz",
        Served {
            data: gz.clone().into(),
            break_first_after: Some(break_at),
            ..Default::default()
        },
    );
    let mut args = fetch_args(&server.url("flaky.gz"), vdc, "flaky");
    args["checksum"] = json!(md5_hex(&image));
    alice.job_ok(fetch(&alice, args).await).await;
    let asked: Vec<_> = server
        .seen()
        .into_iter()
        .filter(|s| s.path == "flaky.gz")
        .collect();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert_eq!(asked[0].range, None);
    let range = asked[1].range.clone().expect("the retry asks for a range");
    let from: usize = range
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(from > 0 && from <= break_at, "resumed from {from}");
}
db_test!(
    a_broken_transfer_resumes_with_range,
    a_broken_transfer_resumes_with_range
);

async fn ftp_with_username_and_password(backend: Backend) {
    let app = start(backend).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let root = app.dir.path().join("ftp-root");
    std::fs::create_dir_all(root.join("pub")).unwrap();
    let (image, blocks) = sparse_image(3 * MIB + 512, 5, 19);
    std::fs::write(root.join("pub/disk.img.gz"), gzip_two_members(&image)).unwrap();
    let ftp = FtpServer::start(&root, "ftpuser", "ftp-s3cret");

    let mut args = fetch_args(&ftp.url("pub/disk.img.gz"), vdc, "over-ftp");
    args["conn_user"] = json!("ftpuser");
    args["conn_pass"] = json!("ftp-s3cret");
    args["checksum"] = json!(md5_hex(&image));
    let job = alice.job_ok(fetch(&alice, args).await).await;
    let disk = alice
        .call("GetDisk", json!({"disk_id": job["item_id"]}))
        .await;
    assert_thin_disk_holds(&app, &disk, &image, blocks).await;

    let in_url = ftp
        .url("pub/disk.img.gz")
        .replace("ftp://", "ftp://ftpuser:ftp-s3cret@");
    alice
        .job_ok(fetch(&alice, fetch_args(&in_url, vdc, "ftp-url-credentials")).await)
        .await;

    let mut args = fetch_args(&ftp.url("pub/disk.img.gz"), vdc, "wrong-password");
    args["conn_user"] = json!("ftpuser");
    args["conn_pass"] = json!("not-it");
    let (code, message) = alice.job_fails(fetch(&alice, args).await).await;
    assert_eq!(code, "FETCH_FAILED");
    assert!(message.contains("login"), "{message}");
    assert!(!app.server.log_text().contains("ftp-s3cret"));
}
db_test!(
    ftp_with_username_and_password,
    ftp_with_username_and_password
);

async fn extra_fetches_wait_for_a_free_slot(backend: Backend) {
    let mut options = allowing("127.0.0.0/8");
    options
        .args
        .extend(["--max-fetches-per-customer".into(), "1".into()]);
    let app = TestApp::start_with(backend, options).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let server = ImageServer::start().await;
    let (image, _) = sparse_image(32 * MIB, 1, 23);
    server.put("slow.img", slow(image));
    let first = fetch(&alice, fetch_args(&server.url("slow.img"), vdc, "first")).await;
    alice.job_until(first, |j| j["status"] == 2).await;
    let second = fetch(&alice, fetch_args(&server.url("slow.img"), vdc, "second")).await;
    alice.job_until(second, |j| j["status"] == 7).await;
    alice.call("CancelJob", json!({"job_id": first})).await;
    alice.job_until(second, |j| j["status"] == 2).await;
    alice.call("CancelJob", json!({"job_id": second})).await;
    assert_eq!(alice.wait_job(second).await["status"], 4);
}
db_test!(
    extra_fetches_wait_for_a_free_slot,
    extra_fetches_wait_for_a_free_slot
);

/// The how-to's Appendix 1, unchanged but for its URL and credentials, against version 1 of
/// the API (`/?wsdl`, which the how-to names) as alice and the current version as bob.
async fn appendix_1_fetches_an_iso_from_php(backend: Backend) {
    let app = start(backend).await;
    let server = ImageServer::start().await;
    server.put_data("ubuntu-desktop.iso", make_iso(app.dir.path()));
    let iso_url = server.url("ubuntu-desktop.iso");
    let current = format!("/v{}/?wsdl", extility::ops::registry::CURRENT);
    for (customer, wsdl) in [(&app.alice, "/?wsdl"), (&app.bob, current.as_str())] {
        let wsdl = format!("{}{wsdl}", app.server.url);
        let output = run_php(
            "appendix1.php",
            &[
                ("EXTILITY_USERNAME", &customer.email),
                ("EXTILITY_PASSWORD", &customer.password),
                ("EXTILITY_WSDL", &wsdl),
                ("EXTILITY_ISO_URL", &iso_url),
            ],
        );
        assert!(
            output.contains("Disk is successfully fetched"),
            "{wsdl}: {output}"
        );
        assert!(output.contains("Disk Attached Success"), "{wsdl}: {output}");
        let api = app.server.api(&customer.email, &customer.password);
        let all = disks(&api, customer.vdc_id).await;
        let iso = all
            .iter()
            .find(|d| d["disk_name"] == "ubuntu_lucid_desktop_iso")
            .expect("the fetched disk");
        assert_eq!(iso["media"], "iso");
        assert!(
            iso["server_id"].is_i64(),
            "{wsdl}: the ISO is attached: {iso}"
        );
    }
}
db_test!(
    appendix_1_fetches_an_iso_from_php,
    appendix_1_fetches_an_iso_from_php
);
