//! The web control panel (`/panel/`, issue 13), in a real browser: headless Chromium driven
//! over WebDriver (`support::browser`), against the real server. The forged-form and cookie
//! checks use plain HTTP (reqwest) with the session's cookie, on both database engines.
//!
//! The fetch test saves the book's two screenshots, `panel-fetch-disk.png` (the Fetch
//! Disk/Server dialog) and `panel-jobs.png` (the Jobs tab during the fetch), in
//! `target/tmp/screenshots/`; `scripts/refresh-screenshots.sh` runs it to refresh the
//! committed ones in `docs/src/screenshots/`.

use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use reqwest::header;
use serde_json::json;

use crate::support::browser::{Browser, DEADLINE};
use crate::support::catalogue::{BLANK_IMAGE, DISK_1GB, IMAGE_OFFER, SERVER_1CPU_512MB};
use crate::support::image_server::{ImageServer, Served};
use crate::support::test_app::{csrf_field, screenshot_path, set_cookie};
use crate::support::{Backend, ServerOptions, TestApp, db_test, id};

/// A server for panel tests: servers only record their state (`--hypervisor none`), and
/// FetchDisk may fetch from the test's own HTTP server on loopback.
async fn app() -> TestApp {
    app_on(Backend::Sqlite, &[]).await
}

async fn app_on(backend: Backend, extra: &[&str]) -> TestApp {
    let mut args: Vec<String> = ["--hypervisor", "none", "--allow-fetch-from", "127.0.0.0/8"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    TestApp::start_with(
        backend,
        ServerOptions {
            args,
            ..Default::default()
        },
    )
    .await
}

/// Bytes that look like a disk image (no long runs of zeros), `len` of them.
fn image_bytes(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8 | 1
        })
        .collect()
}

/// Loads `url` again and again until `expression` holds on it (for the tabs that do not poll).
async fn reload_until(b: &Browser, url: &str, expression: &str, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        b.goto(url).await;
        let holds = b
            .js(&format!("return !!({expression});"))
            .await
            .as_bool()
            .unwrap_or(false);
        if holds {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still not so on {url}:\n{}",
            b.text("main").await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// JavaScript: the row of the table `table` whose header cell is `name`.
fn row_named(table: &str, name: &str) -> String {
    format!(
        "Array.from(document.querySelectorAll('table.{table} tbody tr')).find(r => r.querySelector('th') && r.querySelector('th').textContent.trim() === {})",
        json!(name)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_out_browsers_are_sent_to_sign_in() {
    let app = app().await;
    let base = &app.server.url;
    let b = Browser::open(1280, 800).await;

    // A browser asking for / is sent to the panel, and a signed-out one on to sign in.
    b.goto(&format!("{base}/")).await;
    b.wait_until(
        "location.pathname === '/panel/signin'",
        "/ leads to sign-in",
    )
    .await;
    b.goto(&format!("{base}/panel/jobs")).await;
    b.wait_until(
        "location.pathname === '/panel/signin'",
        "a signed-out browser is sent to sign in",
    )
    .await;
    b.assert_console_clean("the sign-in page").await;

    // A wrong password is refused on the form, with the e-mail kept.
    b.fill("#email", &app.alice.email).await;
    b.fill("#password", "not-the-password").await;
    b.click(".signin button[type=submit]").await;
    let error = b.wait_for("#signin-error").await.text().await.unwrap();
    assert!(error.contains("wrong"), "{error}");
    assert_eq!(
        b.js("return document.getElementById('email').value").await,
        json!(app.alice.email)
    );
    // (The refused sign-in's 401 is the one console line expected here.)
    let _ = b.console().await;

    app.sign_in(&b, &app.alice).await;
    let cookie = b
        .cookie("extility_panel")
        .await
        .expect("the session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.path(), Some("/panel"));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    assert_eq!(cookie.value().len(), 43, "256 random bits");
    assert!(b.text("header .email").await.contains("alice@example.com"));

    // Signing out ends the session: every panel page leads to sign-in again.
    b.click("header .who button[type=submit]").await;
    b.wait_until(
        "location.pathname === '/panel/signin'",
        "signed out, on the sign-in page",
    )
    .await;
    for page in [
        "/panel/servers",
        "/panel/disks",
        "/panel/images",
        "/panel/usage",
    ] {
        b.goto(&format!("{base}{page}")).await;
        b.wait_until(
            "location.pathname === '/panel/signin'",
            &format!("{page} after signing out"),
        )
        .await;
    }
    b.assert_console_clean("signing out").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_disk_dialog_and_the_jobs_tab_follow_a_fetch_without_reloading() {
    let app = app().await;
    // 12 MiB sent 192 KiB every 150 ms: about ten seconds of fetching to watch.
    let data = image_bytes(12 << 20);
    let checksum = hex::encode(Md5::digest(&data));
    let source = ImageServer::start().await;
    source.put(
        "disks/panel.img",
        Served {
            data: data.into(),
            pace: Some((192 << 10, Duration::from_millis(150))),
            ..Default::default()
        },
    );

    let b = Browser::open(1280, 800).await;
    app.sign_in(&b, &app.alice).await;
    b.click("ul.tabs a[href='/panel/disks']").await;
    b.wait_until("location.pathname === '/panel/disks'", "on the Disks tab")
        .await;

    // The Fetch Disk/Server button opens the dialog from the keyboard.
    let opener = b.wait_for("a[data-dialog='fetch-disk']").await;
    assert_eq!(opener.text().await.unwrap(), "Fetch Disk/Server");
    opener.send_keys("\u{E007}").await.unwrap();
    b.wait_until(
        "document.getElementById('fetch-disk').matches(':modal')",
        "the Fetch Disk/Server dialog opens",
    )
    .await;
    // Exactly the how-to's fields, each with its label.
    let fields = b
        .js("return Array.from(document.querySelectorAll('#fetch-disk-form input:not([type=hidden]), #fetch-disk-form select')).map(e => [e.name, e.labels[0].textContent.trim()])")
        .await;
    assert_eq!(
        fields,
        json!([
            ["url", "URL"],
            ["conn_user", "User name (optional)"],
            ["conn_pass", "Password (optional)"],
            ["checksum", "Checksum (optional)"],
            ["name", "Name"],
            ["vdc_id", "VDC"],
            ["disk_productoffer_id", "Disk product"],
        ])
    );
    // An error comes back in the dialog, with the API's message and what was typed.
    b.fill("#fetch-disk-url", "gopher://nowhere/disk.img").await;
    b.fill("#fetch-disk-name", "fetched-in-the-panel").await;
    b.click("#fetch-disk-form button[type=submit]").await;
    let error = b.wait_for("#fetch-disk-error").await.text().await.unwrap();
    assert!(error.contains("gopher"), "{error}");
    b.wait_until(
        "document.getElementById('fetch-disk').matches(':modal') && document.getElementById('fetch-disk-name').value === 'fetched-in-the-panel'",
        "the dialog stays open with what was typed",
    )
    .await;
    b.fill("#fetch-disk-url", &source.url("disks/panel.img"))
        .await;
    b.fill("#fetch-disk-checksum", &checksum).await;
    b.fill("#fetch-disk-name", "fetched-in-the-panel").await;
    b.choose("#fetch-disk-vdc_id", &app.alice.vdc_id.to_string())
        .await;
    b.choose("#fetch-disk-disk_productoffer_id", &DISK_1GB.to_string())
        .await;
    b.screenshot(&screenshot_path("panel-fetch-disk.png")).await;
    let add = b.find("#fetch-disk-form button[type=submit]").await;
    assert_eq!(add.text().await.unwrap(), "Add Disk");
    add.click().await.unwrap();
    let notice = b.wait_for("main .notice").await.text().await.unwrap();
    assert!(notice.contains("queued"), "{notice}");
    b.wait_until(
        "!document.getElementById('fetch-disk').open",
        "the dialog closes once the job is queued",
    )
    .await;

    // The Jobs tab: the row moves from running to done while the page stays the same page.
    b.click("ul.tabs a[href='/panel/jobs']").await;
    b.wait_for("#job-rows tr[data-status]").await;
    b.js("window.panelTestMarker = 'not reloaded'; return null;")
        .await;
    b.wait_until(
        "document.querySelector('#job-rows tr[data-status=running] .figures') && /MiB of 12 MiB · [2-9][0-9]%/.test(document.querySelector('#job-rows tr[data-status=running] .figures').textContent)",
        "the fetch's row shows bytes done of total, past a fifth, while it runs",
    )
    .await;
    let cell_width =
        "document.querySelector('#job-rows tr td:nth-child(5)').getBoundingClientRect().width";
    let width_running = b.js(&format!("return {cell_width};")).await;
    b.screenshot(&screenshot_path("panel-jobs.png")).await;
    b.wait_until(
        "document.querySelector('#job-rows tr').dataset.status === 'done'",
        "the fetch's row reaches done",
    )
    .await;
    assert_eq!(
        b.js("return window.panelTestMarker;").await,
        json!("not reloaded"),
        "the Jobs tab was not reloaded"
    );
    assert_eq!(
        b.js(&format!("return {cell_width};")).await,
        width_running,
        "the progress column keeps its width"
    );
    assert!(b.text("#job-rows tr").await.contains("100%"));

    // The disk is on the Disks tab.
    b.click("ul.tabs a[href='/panel/disks']").await;
    b.wait_until(
        &row_named("disks", "fetched-in-the-panel"),
        "the fetched disk is on the Disks tab",
    )
    .await;
    b.assert_console_clean("fetching a disk").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_new_image_and_publishing_to_another_customer() {
    let app = app().await;
    let base = &app.server.url;
    let alice = app.alice();
    let bob_api = app.bob();
    // Bob's own things, which Alice must never see.
    bob_api
        .call(
            "CreateDisk",
            json!({"vdc_id": app.bob.vdc_id, "name": "bobs-secret-disk",
                   "disk_productoffer_id": DISK_1GB, "image_id": 0}),
        )
        .await;

    let b = Browser::open(1280, 900).await;
    app.sign_in(&b, &app.alice).await;

    // A server from the blank image, a server offer and a disk offer.
    b.fill("#create-server-server_name", "web-1").await;
    b.choose("#create-server-image_id", &BLANK_IMAGE.to_string())
        .await;
    b.choose(
        "#create-server-server_productoffer_id",
        &SERVER_1CPU_512MB.to_string(),
    )
    .await;
    b.choose("#create-server-boot-disk", &DISK_1GB.to_string())
        .await;
    b.click("#create-server button[type=submit]").await;
    b.wait_until(&row_named("servers", "web-1"), "the new server is listed")
        .await;
    let servers = alice
        .call("ListServers", json!({"vdc_id": app.alice.vdc_id}))
        .await;
    let server = &servers[0];
    let server_id = id(server, "server_id");
    let disk_id = id(&server["disks"][0], "disk_id");
    let servers_url = format!("{base}/panel/servers?vdc_id={}", app.alice.vdc_id);

    // Start it, and stop it by powering off.
    b.click(&format!("#server-{server_id}-start button[type=submit]"))
        .await;
    b.wait_for(&format!("#server-{server_id} .notice")).await;
    reload_until(
        &b,
        &servers_url,
        &format!("document.getElementById('server-{server_id}').dataset.status === 'running'"),
        "the server runs",
    )
    .await;
    b.choose(&format!("#stop-method-{server_id}"), "2").await;
    b.click(&format!("#server-{server_id}-stop button[type=submit]"))
        .await;
    reload_until(
        &b,
        &servers_url,
        &format!("document.getElementById('server-{server_id}').dataset.status === 'stopped'"),
        "the server is stopped",
    )
    .await;

    // Its page shows the console log's place and the first-boot login's.
    b.click(&format!("#server-{server_id} th a")).await;
    b.wait_for("#console-title").await;
    b.wait_for("#first-boot-title").await;
    b.assert_console_clean("servers").await;

    // New Image from its disk. The dialog offers the disks of every VDC, by VDC, with their
    // servers' state.
    let second = alice.call("CreateVDC", json!({"vdc_name": "second"})).await;
    alice
        .call(
            "CreateDisk",
            json!({"vdc_id": second["vdc_id"], "name": "spare",
                   "disk_productoffer_id": DISK_1GB, "image_id": 0}),
        )
        .await;
    b.goto(&format!("{base}/panel/images")).await;
    b.click("a[data-dialog='new-image']").await;
    b.wait_until(
        "document.getElementById('new-image').matches(':modal')",
        "the New Image dialog opens",
    )
    .await;
    let groups = b
        .js("return Array.from(document.querySelectorAll('#new-image-disk_id optgroup')).map(g => [g.label, Array.from(g.querySelectorAll('option')).map(o => o.textContent)]);")
        .await;
    assert_eq!(groups.as_array().unwrap().len(), 2, "{groups}");
    assert_eq!(groups[1], json!(["VDC second", ["spare (no server)"]]));
    let first = groups[0][1].as_array().unwrap();
    assert!(
        first
            .iter()
            .any(|o| o.as_str().unwrap().ends_with("(server web-1, stopped)")),
        "{groups}"
    );
    assert!(!groups.to_string().contains("bobs-secret-disk"), "{groups}");
    b.choose("#new-image-disk_id", &disk_id.to_string()).await;
    b.fill("#new-image-name", "web-1-image").await;
    b.click("#new-image-form button[type=submit]").await;
    b.wait_for("main .notice").await;
    reload_until(
        &b,
        &format!("{base}/panel/images"),
        &row_named("images", "web-1-image"),
        "the new image is listed",
    )
    .await;
    let images = alice.call("ListImages", json!({})).await;
    let image = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image_name"] == "web-1-image")
        .unwrap();
    let image_id = id(image, "image_id");
    let row = format!("#image-{image_id}");
    assert!(b.text(&row).await.contains("you"), "{}", b.text(&row).await);
    assert!(b.text(&row).await.contains("private"));

    // Publish it to Bob by his customer uuid.
    b.click(&format!("{row} details > summary")).await;
    b.fill(&format!("#publish-{image_id}"), &app.bob.customer_uuid)
        .await;
    b.click(&format!("#image-{image_id}-publish button[type=submit]"))
        .await;
    b.wait_until(
        &format!(
            "document.querySelector('{row} .notice') && document.querySelector('{row}').textContent.includes({})",
            json!(app.bob.customer_uuid)
        ),
        "the image is published to Bob",
    )
    .await;
    assert!(b.text(&row).await.contains("shared"));
    b.assert_console_clean("images").await;

    // Alice never sees Bob's things.
    for page in [
        "/panel/servers",
        "/panel/disks",
        "/panel/images",
        "/panel/jobs",
    ] {
        b.goto(&format!("{base}{page}")).await;
        b.wait_for("#main").await;
        let source = b.client.source().await.unwrap();
        assert!(
            !source.contains("bobs-secret-disk"),
            "{page} shows Bob's disk"
        );
        assert!(!source.contains(&app.bob.email), "{page} names Bob");
    }

    // Bob sees the image, owned by Alice; none of Alice's servers or disks.
    let bob = Browser::open(1280, 900).await;
    app.sign_in(&bob, &app.bob).await;
    assert!(
        !bob.text("table.servers").await.contains("web-1"),
        "Bob's servers show Alice's"
    );
    // Alice's server's own page answers Bob like a server that does not exist.
    bob.goto(&format!("{base}/panel/servers/{server_id}")).await;
    let error = bob.wait_for("main .error").await.text().await.unwrap();
    assert!(error.contains("does not exist"), "{error}");
    assert!(!bob.text("main").await.contains("web-1"));
    let _ = bob.console().await; // (that page's 404)
    bob.goto(&format!("{base}/panel/images")).await;
    bob.wait_until(&row_named("images", "web-1-image"), "Bob sees the image")
        .await;
    let bob_row = bob.text(&row).await;
    assert!(
        bob_row.contains(&format!("customer {}", app.alice.customer_uuid)),
        "{bob_row}"
    );
    assert!(
        !bob_row.contains("Manage"),
        "Bob cannot manage it: {bob_row}"
    );
    bob.goto(&format!("{base}/panel/disks")).await;
    let source = bob.client.source().await.unwrap();
    assert!(source.contains("bobs-secret-disk"));
    assert!(!source.contains("web-1"), "Bob's disks show Alice's");
    bob.assert_console_clean("Bob's pages").await;
    bob.close().await;

    // The audit trail says these calls came through the panel.
    let events = alice.call("ListAuditEvents", json!({})).await;
    let via_panel: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["via"] == "panel")
        .map(|e| e["operation"].as_str().unwrap())
        .collect();
    for op in [
        "CreateServer",
        "StartServer",
        "StopServer",
        "CreateImage",
        "PublishImage",
    ] {
        assert!(
            via_panel.contains(&op),
            "{op} not audited via panel: {via_panel:?}"
        );
    }
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_fetch_is_cancelled_from_the_jobs_tab() {
    let app = app().await;
    let source = ImageServer::start().await;
    // 64 MiB at 16 KiB a tenth of a second: it would take minutes.
    source.put(
        "slow.img",
        Served {
            data: image_bytes(64 << 20).into(),
            pace: Some((16 << 10, Duration::from_millis(100))),
            ..Default::default()
        },
    );
    let job_id = app
        .alice()
        .call(
            "FetchDisk",
            json!({"url": source.url("slow.img"), "name": "slow", "vdc_id": app.alice.vdc_id,
                   "disk_productoffer_id": DISK_1GB, "make_image": false}),
        )
        .await["job_id"]
        .as_i64()
        .unwrap();

    let b = Browser::open(1280, 800).await;
    app.sign_in(&b, &app.alice).await;
    b.click("ul.tabs a[href='/panel/jobs']").await;
    b.js("window.panelTestMarker = 'not reloaded'; return null;")
        .await;
    b.wait_until(
        &format!("document.querySelector('#job-{job_id}[data-status=running]')"),
        "the slow fetch runs",
    )
    .await;
    b.click(&format!("#cancel-{job_id}")).await;
    b.wait_until(
        &format!("document.querySelector('#job-{job_id}').dataset.status === 'cancelled'"),
        "the fetch is cancelled",
    )
    .await;
    assert_eq!(
        b.js("return window.panelTestMarker;").await,
        json!("not reloaded")
    );
    assert!(
        b.text(&format!("#job-{job_id}"))
            .await
            .contains("cancelled")
    );
    let job = app.alice().call("GetJob", json!({"job_id": job_id})).await;
    assert_eq!(job["status"], 4, "{job}");
    b.assert_console_clean("cancelling a fetch").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_page_logs_a_console_error_and_every_page_fits_a_phone() {
    let app = app().await;
    let base = &app.server.url;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let server = alice
        .call(
            "CreateServer",
            json!({"vdc_id": vdc, "vlan_id": -1, "server_name": "console-check",
                   "image_id": BLANK_IMAGE, "server_productoffer_id": SERVER_1CPU_512MB,
                   "disk_productoffer_ids": [DISK_1GB]}),
        )
        .await;
    let server_id = id(&server, "server_id");
    let disk = alice
        .call(
            "CreateDisk",
            json!({"vdc_id": vdc, "name": "spare", "disk_productoffer_id": DISK_1GB,
                   "image_id": 0}),
        )
        .await;
    alice
        .call(
            "CreateDiskSnapshot",
            json!({"disk_id": id(&disk, "disk_id"), "name": "before"}),
        )
        .await;
    let pages = [
        "/panel/servers".to_string(),
        format!("/panel/servers/{server_id}"),
        "/panel/disks".to_string(),
        "/panel/disks?dialog=fetch-disk".to_string(),
        "/panel/images".to_string(),
        "/panel/images?dialog=fetch-image".to_string(),
        "/panel/images?dialog=new-image".to_string(),
        "/panel/jobs".to_string(),
        "/panel/usage".to_string(),
        "/panel/firewall".to_string(),
    ];
    for (width, phone) in [(1280, false), (390, true)] {
        let b = if phone {
            Browser::phone(width, 844).await
        } else {
            Browser::open(width, 800).await
        };
        b.goto(&format!("{base}/panel/signin")).await;
        b.assert_console_clean("the sign-in page").await;
        app.sign_in(&b, &app.alice).await;
        for page in &pages {
            b.goto(&format!("{base}{page}")).await;
            b.wait_for("#main").await;
            // Let htmx poll at least once where it polls.
            if page.starts_with("/panel/jobs") {
                b.js("return new Promise(r => setTimeout(r, 1200)).then(() => null);")
                    .await;
            }
            b.assert_console_clean(page).await;
            let unlabelled = b
                .js("return Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea')).filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.name || e.id)")
                .await;
            assert_eq!(unlabelled, json!([]), "{page}: fields without labels");
            let overflow = b
                .js("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
                .await;
            assert!(
                overflow.as_i64().unwrap_or(0) <= 0,
                "{page} is wider than a {width} px window by {overflow} px"
            );
        }
        b.close().await;
    }
}

async fn forged_forms_are_refused(backend: Backend) {
    let app = app_on(backend, &["--trusted-proxy", "127.0.0.1/32"]).await;
    let base = &app.server.url;
    let alice = app.alice();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // A browser asking for / goes to the panel; API clients keep their answers.
    let root = http
        .get(format!("{base}/"))
        .header(header::ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), 303);
    assert_eq!(root.headers()[header::LOCATION], "/panel/");
    let root = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(root.status(), 200);
    assert!(root.text().await.unwrap().contains("SOAP 1.1"));
    let wsdl = http
        .get(format!("{base}/?wsdl"))
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(wsdl.status(), 200);
    assert!(wsdl.text().await.unwrap().contains("wsdl:definitions"));

    // Signing in without the sign-in form's token is refused.
    let refused = http
        .post(format!("{base}/panel/signin"))
        .form(&[
            ("email", &app.alice.email),
            ("password", &app.alice.password),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(set_cookie(&refused, "extility_panel").is_none());

    let session = app.http_sign_in(&http, &app.alice).await;
    let cookie = format!("extility_panel={session}");
    let page = http
        .get(format!("{base}/panel/disks"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let token = csrf_field(&page.text().await.unwrap());
    let vdc = app.alice.vdc_id.to_string();
    let offer = DISK_1GB.to_string();
    let disk_form = |name: &'static str| {
        vec![
            ("vdc_id", vdc.clone()),
            ("name", name.to_string()),
            ("disk_productoffer_id", offer.clone()),
            ("image_id", "0".to_string()),
        ]
    };

    // A forged POST (the session's cookie, no token or a wrong one) is refused and does nothing.
    let forged = http
        .post(format!("{base}/panel/disks/create"))
        .header(header::COOKIE, &cookie)
        .form(&disk_form("forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let mut wrong = disk_form("forged-too");
    wrong.push(("_csrf", "x".repeat(token.len())));
    let forged = http
        .post(format!("{base}/panel/disks/create"))
        .header(header::COOKIE, &cookie)
        .header("x-csrf-token", "wrong")
        .form(&wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let disks = alice
        .call("ListDisks", json!({"vdc_id": app.alice.vdc_id}))
        .await;
    assert_eq!(disks, json!([]), "a refused form made nothing");
    let events = alice.call("ListAuditEvents", json!({})).await;
    assert!(
        !events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["operation"] == "CreateDisk"),
        "a refused form called nothing: {events}"
    );

    // With the token (as the form sends it, or as htmx's header) it is done, through the panel.
    let mut real = disk_form("made-in-the-panel");
    real.push(("_csrf", token.clone()));
    let done = http
        .post(format!("{base}/panel/disks/create"))
        .header(header::COOKIE, &cookie)
        .form(&real)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 303, "done, back to the page");
    let by_header = http
        .post(format!("{base}/panel/disks/create"))
        .header(header::COOKIE, &cookie)
        .header("x-csrf-token", &token)
        .header("hx-request", "true")
        .form(&disk_form("made-by-htmx"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_header.status(), 200);
    assert!(by_header.text().await.unwrap().contains("made-by-htmx"));
    let disks = alice
        .call("ListDisks", json!({"vdc_id": app.alice.vdc_id}))
        .await;
    assert_eq!(disks.as_array().unwrap().len(), 2, "{disks}");
    let events = alice.call("ListAuditEvents", json!({})).await;
    let create = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["operation"] == "CreateDisk")
        .expect("CreateDisk audited");
    assert_eq!(create["via"], "panel");
    assert_eq!(create["customer_uuid"], json!(app.alice.customer_uuid));

    // An operation's error comes back on the page, with the API's message.
    let mut bad = disk_form("bad");
    bad[2].1 = "999999".into();
    bad.push(("_csrf", token.clone()));
    let failed = http
        .post(format!("{base}/panel/disks/create"))
        .header(header::COOKIE, &cookie)
        .form(&bad)
        .send()
        .await
        .unwrap();
    assert!(failed.status().is_client_error(), "{}", failed.status());
    let text = failed.text().await.unwrap();
    assert!(text.contains("class=\"error\""), "{text}");
    assert!(text.contains("999999"), "{text}");

    // A wrong password through the form is a failed login in the audit trail, via the panel.
    let wrong = app
        .post_sign_in(&http, &app.alice.email, "wrong-password")
        .await;
    assert_eq!(wrong.status(), 401);
    assert!(set_cookie(&wrong, "extility_panel").is_none());
    let deadline = Instant::now() + DEADLINE;
    loop {
        let events = alice.call("ListAuditEvents", json!({})).await;
        if events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["operation"] == "Login" && e["via"] == "panel" && e["outcome"] != "OK")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed login audited: {events}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Cookies: HttpOnly, SameSite=Strict, only for /panel; Secure when a trusted proxy says
    // the request came over TLS.
    let form = http
        .get(format!("{base}/panel/signin"))
        .send()
        .await
        .unwrap();
    let plain = set_cookie(&form, "extility_panel_signin").unwrap();
    assert!(
        plain.contains("HttpOnly") && plain.contains("SameSite=Strict"),
        "{plain}"
    );
    assert!(
        plain.contains("Path=/panel") && !plain.contains("Secure"),
        "{plain}"
    );
    let form = http
        .get(format!("{base}/panel/signin"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let secure = set_cookie(&form, "extility_panel_signin").unwrap();
    assert!(secure.ends_with("; Secure"), "{secure}");

    // Signing out (a POST with the token) ends the session.
    let out = http
        .post(format!("{base}/panel/signout"))
        .header(header::COOKIE, &cookie)
        .form(&[("_csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(out.headers()[header::LOCATION], "/panel/signin");
    let after = http
        .get(format!("{base}/panel/disks"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 303);
    assert_eq!(after.headers()[header::LOCATION], "/panel/signin");
    // htmx's polling is told to go to sign-in too.
    let poll = http
        .get(format!("{base}/panel/jobs/rows"))
        .header(header::COOKIE, &cookie)
        .header("hx-request", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(poll.headers()["hx-redirect"], "/panel/signin");
}
db_test!(
    forged_forms_are_refused_and_change_nothing,
    forged_forms_are_refused
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_set_an_image_product_offer() {
    let app = app().await;
    let base = &app.server.url;
    let (admin, admin_api) = app.add_customer("admin@example.com", &["--admin"]);
    let b = Browser::open(1280, 900).await;

    // A customer has no such control.
    app.sign_in(&b, &app.alice).await;
    b.goto(&format!("{base}/panel/images")).await;
    b.wait_for(&format!("#image-{BLANK_IMAGE}")).await;
    assert!(
        b.client
            .find(fantoccini::Locator::Css(&format!("#offer-{BLANK_IMAGE}")))
            .await
            .is_err()
    );
    b.click("header .who button[type=submit]").await;
    b.wait_until("location.pathname === '/panel/signin'", "signed out")
        .await;

    app.sign_in(&b, &admin).await;
    b.goto(&format!("{base}/panel/images")).await;
    b.click(&format!("#image-{BLANK_IMAGE} details > summary"))
        .await;
    b.choose(&format!("#offer-{BLANK_IMAGE}"), &IMAGE_OFFER.to_string())
        .await;
    b.click(&format!("#image-{BLANK_IMAGE}-offer button[type=submit]"))
        .await;
    b.wait_for(&format!("#image-{BLANK_IMAGE} .notice")).await;
    let images = admin_api.call("ListImages", json!({})).await;
    let blank = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image_id"] == BLANK_IMAGE)
        .unwrap()
        .clone();
    assert_eq!(blank["product_offer_id"], IMAGE_OFFER);
    b.assert_console_clean("setting an image offer").await;
    b.close().await;
}

/// Long lists come a page at a time: a full page links to the next (after its last item),
/// the next to the first, and every disk appears once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_come_a_page_at_a_time() {
    let app = app_on(Backend::Sqlite, &[]).await;
    let base = &app.server.url;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    for n in 1..=5 {
        alice
            .call(
                "CreateDisk",
                json!({"vdc_id": vdc, "name": format!("paged disk {n}"),
                       "disk_productoffer_id": DISK_1GB, "image_id": 0}),
            )
            .await;
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let session = app.http_sign_in(&http, &app.alice).await;
    let get = |path: String| {
        let http = http.clone();
        let session = session.clone();
        async move {
            let response = http
                .get(format!("{base}{path}"))
                .header(header::COOKIE, format!("extility_panel={session}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{path}");
            response.text().await.unwrap()
        }
    };
    let link = |html: &str, text: &str| -> Option<String> {
        let end = html.find(&format!(">{text}</a>"))?;
        let start = html[..end].rfind("href=\"")? + 6;
        Some(html[start..end].split('"').next()?.replace("&amp;", "&"))
    };
    let mut seen = Vec::new();
    let mut path = format!("/panel/disks?vdc_id={vdc}&page_size=2");
    for page in 1..=3 {
        let html = get(path.clone()).await;
        let names: Vec<String> = (1..=5)
            .map(|n| format!("paged disk {n}"))
            .filter(|name| html.contains(name.as_str()))
            .collect();
        assert!(names.len() <= 2, "page {page}: {names:?}");
        seen.extend(names);
        assert_eq!(link(&html, "First page").is_some(), page > 1, "page {page}");
        match link(&html, "Next page") {
            Some(next) => path = next,
            None => {
                assert_eq!(page, 3, "the last page is the third");
                break;
            }
        }
    }
    assert_eq!(
        seen,
        (1..=5)
            .map(|n| format!("paged disk {n}"))
            .collect::<Vec<_>>(),
        "every disk once, in order"
    );
}

/// The Disks and Servers tabs rename, grow and resize through the operations, with the
/// session's anti-forgery token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disks_and_servers_are_renamed_and_resized_from_the_panel() {
    let app = app_on(Backend::Sqlite, &[]).await;
    let base = &app.server.url;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let disk = alice
        .call(
            "CreateDisk",
            json!({"vdc_id": vdc, "name": "small", "disk_productoffer_id": DISK_1GB,
                   "image_id": 0}),
        )
        .await;
    let disk_id = id(&disk, "disk_id");
    let server = alice
        .call(
            "CreateServer",
            json!({"vdc_id": vdc, "vlan_id": -1, "server_name": "web", "image_id": BLANK_IMAGE,
                   "server_productoffer_id": SERVER_1CPU_512MB,
                   "disk_productoffer_ids": [DISK_1GB]}),
        )
        .await;
    let server_id = id(&server, "server_id");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let session = app.http_sign_in(&http, &app.alice).await;
    let cookie = format!("extility_panel={session}");
    let page = http
        .get(format!("{base}/panel/disks?vdc_id={vdc}"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Rename or grow"), "{page}");
    let csrf = csrf_field(&page);
    let post = |path: String, form: Vec<(&'static str, String)>| {
        let (http, cookie, csrf) = (http.clone(), cookie.clone(), csrf.clone());
        async move {
            let mut form = form;
            form.push(("_csrf", csrf));
            form.push(("vdc_id", vdc.to_string()));
            // As htmx sends it: the answer is the tab again, with what happened.
            let response = http
                .post(format!("{base}{path}"))
                .header(header::COOKIE, cookie)
                .header("hx-request", "true")
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{path}");
            response.text().await.unwrap()
        }
    };
    let said = post(
        format!("/panel/disks/{disk_id}/rename"),
        vec![("name", "data".to_string())],
    )
    .await;
    assert!(said.contains("Disk renamed data."), "{said}");
    let said = post(
        format!("/panel/disks/{disk_id}/resize"),
        vec![("disk_productoffer_id", "31".to_string())],
    )
    .await;
    assert!(said.contains("Disk grown to"), "{said}");
    let after = alice.call("GetDisk", json!({"disk_id": disk_id})).await;
    assert_eq!(after["disk_name"], "data");
    assert!(after["capacity"].as_i64().unwrap() > disk["capacity"].as_i64().unwrap());
    // Growing back to the smaller offer is refused, with the API's message next to the disk.
    let said = post(
        format!("/panel/disks/{disk_id}/resize"),
        vec![("disk_productoffer_id", DISK_1GB.to_string())],
    )
    .await;
    assert!(said.contains("role=\"alert\""), "{said}");

    let said = post(
        format!("/panel/servers/{server_id}/rename"),
        vec![("server_name", "www".to_string())],
    )
    .await;
    assert!(said.contains("Server renamed."), "{said}");
    let said = post(
        format!("/panel/servers/{server_id}/resize"),
        vec![("server_productoffer_id", "18".to_string())],
    )
    .await;
    assert!(said.contains("Server size changed."), "{said}");
    let after = alice
        .call("GetServer", json!({"server_id": server_id}))
        .await;
    assert_eq!(after["server_name"], "www");
    assert_eq!(after["product_offer_id"], 18);
}

/// The Firewall tab (issue 25): a template made, two rules added, reordered and one removed,
/// and the template applied to a server from its row on the Servers tab, which then shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firewall_template_is_made_and_applied_from_the_panel() {
    let app = app().await;
    let base = &app.server.url;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let server = alice
        .call(
            "CreateServer",
            json!({"vdc_id": vdc, "vlan_id": -1, "server_name": "web", "image_id": BLANK_IMAGE,
                   "server_productoffer_id": SERVER_1CPU_512MB,
                   "disk_productoffer_ids": [DISK_1GB]}),
        )
        .await;
    let server_id = id(&server, "server_id");
    let b = Browser::open(1280, 900).await;
    app.sign_in(&b, &app.alice).await;
    b.click("nav a[href='/panel/firewall']").await;
    b.wait_for("#create-template").await;
    b.fill("#create-template-name", "ssh only").await;
    b.choose("#create-template-default_inbound", "DENY").await;
    b.click("#create-template button[type=submit]").await;
    b.wait_until(
        "Array.from(document.querySelectorAll('section.card h2')).some(h => h.textContent.trim() === 'ssh only')",
        "the new template is listed",
    )
    .await;
    let templates = alice.call("ListFirewallTemplates", json!({})).await;
    let template_id = id(&templates[0], "firewall_template_id");
    assert_eq!(templates[0]["default_inbound"], "DENY");
    let card = format!("#template-{template_id}");
    let add = format!("#template-{template_id}-add");
    let rules_text = format!(
        "Array.from(document.querySelectorAll('{card} ol.rules li .rule')).map(r => r.textContent.trim()).join(' | ')"
    );

    // SSH from the VLAN's network; then DNS out, placed first.
    b.click(&format!("{card} details summary")).await;
    b.choose(&format!("{add}-direction"), "IN").await;
    b.choose(&format!("{add}-protocol"), "TCP").await;
    b.fill(&format!("{add}-port_from"), "22").await;
    b.fill(&format!("{add}-cidr"), "10.0.0.0/8").await;
    b.click(&format!("{add} button[type=submit]")).await;
    b.wait_until(
        &format!("{rules_text} === 'IN TCP 22 from 10.0.0.0/8: ALLOW'"),
        "the rule is listed",
    )
    .await;
    b.click(&format!("{card} details summary")).await;
    b.choose(&format!("{add}-direction"), "OUT").await;
    b.choose(&format!("{add}-protocol"), "UDP").await;
    b.fill(&format!("{add}-port_from"), "53").await;
    b.fill(&format!("{add}-position"), "1").await;
    b.click(&format!("{add} button[type=submit]")).await;
    b.wait_until(
        &format!(
            "{rules_text} === 'OUT UDP 53 to 0.0.0.0/0: ALLOW | IN TCP 22 from 10.0.0.0/8: ALLOW'"
        ),
        "the second rule comes first",
    )
    .await;
    // A refused rule says why, next to its form.
    b.click(&format!("{card} details summary")).await;
    b.fill(&format!("{add}-port_from"), "99999").await;
    b.click(&format!("{add} button[type=submit]")).await;
    b.wait_for(&format!("{add}-error")).await;
    assert!(
        b.text(&format!("{add}-error")).await.contains("port_from"),
        "{}",
        b.text("main").await
    );

    // Reordered, then the DNS rule removed.
    let rules = alice.call("ListFirewallTemplates", json!({})).await[0]["rules"].clone();
    let dns = id(&rules[0], "firewall_rule_id");
    b.click(&format!("#rule-{dns}-down button[type=submit]"))
        .await;
    b.wait_until(
        &format!(
            "{rules_text} === 'IN TCP 22 from 10.0.0.0/8: ALLOW | OUT UDP 53 to 0.0.0.0/0: ALLOW'"
        ),
        "the DNS rule moved down",
    )
    .await;
    b.click(&format!("#rule-{dns}-remove button[type=submit]"))
        .await;
    b.wait_until(
        &format!("{rules_text} === 'IN TCP 22 from 10.0.0.0/8: ALLOW'"),
        "the DNS rule is gone",
    )
    .await;

    // Applied from the server's row, which then shows it.
    b.goto(&format!("{base}/panel/servers?vdc_id={vdc}")).await;
    b.choose(&format!("#firewall-{server_id}"), &template_id.to_string())
        .await;
    b.click(&format!("#server-{server_id}-firewall button[type=submit]"))
        .await;
    b.wait_for(&format!("#server-{server_id} .notice")).await;
    let after = alice
        .call("GetServer", json!({"server_id": server_id}))
        .await;
    assert_eq!(after["firewall_template_id"], template_id);
    b.goto(&format!("{base}/panel/servers?vdc_id={vdc}")).await;
    let shown = b
        .js(&format!(
            "return document.getElementById('firewall-{server_id}').selectedOptions[0].textContent.trim()"
        ))
        .await;
    assert_eq!(shown, json!("ssh only"));
    b.assert_console_clean("firewall").await;
    b.close().await;
}

/// Signing in again and again keeps at most 20 sessions of a customer: the oldest end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_keeps_a_bounded_number_of_sessions() {
    let app = app_on(Backend::Sqlite, &[]).await;
    let base = &app.server.url;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut sessions = Vec::new();
    for _ in 0..21 {
        sessions.push(app.http_sign_in(&http, &app.alice).await);
    }
    let status = |session: String| {
        let http = http.clone();
        async move {
            http.get(format!("{base}/panel/jobs"))
                .header(header::COOKIE, format!("extility_panel={session}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        status(sessions[0].clone()).await,
        303,
        "the oldest has ended"
    );
    assert_eq!(status(sessions[1].clone()).await, 200);
    assert_eq!(status(sessions[20].clone()).await, 200);
}
