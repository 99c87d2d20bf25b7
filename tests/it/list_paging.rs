//! Paging and filters of the List operations (issue 13): every list read a page at a time
//! covers everything exactly once, in the list's order; the name, status and type filters keep
//! what they say (LIKE wildcards are plain characters); page sizes and cursors out of range
//! are INVALID_ARGUMENT, and a list called without them answers what it answered before
//! paging existed (at most 1,000 items); a cursor naming another customer's item tells
//! nothing about it. On SQLite and PostgreSQL, over JSON (zeep, Axis and PHP call them over
//! SOAP in their own tests).

use std::process::Command;

use serde_json::{Value, json};

use crate::support::catalogue::{BLANK_IMAGE, DISK_1GB, SERVER_1CPU_512MB};
use crate::support::server_db::ServerDb;
use crate::support::{Api, ApiError, Backend, ServerOptions, TestApp, db_test, id};

fn options() -> ServerOptions {
    ServerOptions {
        args: vec!["--hypervisor".into(), "none".into()],
        ..Default::default()
    }
}

/// `args` with `more` added.
fn with(args: &Value, more: Value) -> Value {
    let mut args = args.clone();
    for (k, v) in more.as_object().unwrap() {
        args[k] = v.clone();
    }
    args
}

fn ids(list: &Value, field: &str) -> Vec<i64> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|item| id(item, field))
        .collect()
}

/// Which way a list runs, and so which cursor it takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// By id, ascending: `after_id`.
    Ascending,
    /// By id, newest first: `before_id`.
    Descending,
    /// By something else (guest port, time): `after_id`, resolved by the server.
    Other,
}

/// Reads `op` a page of `page_size` at a time, each page after the previous one's last item,
/// and returns the items' ids in the order the pages gave them.
async fn paged(
    api: &Api,
    op: &str,
    args: &Value,
    field: &str,
    order: Order,
    page_size: i64,
) -> Vec<i64> {
    let cursor = if order == Order::Descending {
        "before_id"
    } else {
        "after_id"
    };
    let mut seen = Vec::new();
    let mut last: Option<i64> = None;
    loop {
        let mut call = with(args, json!({"page_size": page_size}));
        if let Some(last) = last {
            call[cursor] = json!(last);
        }
        let page = ids(&api.call(op, call).await, field);
        assert!(
            page.len() as i64 <= page_size,
            "{op}: a page of {page_size} had {}",
            page.len()
        );
        seen.extend(&page);
        match page.last() {
            Some(&id) if page.len() as i64 == page_size => last = Some(id),
            _ => return seen,
        }
        assert!(seen.len() < 10_000, "{op} never ends");
    }
}

/// Every page size reads exactly the list the call without paging arguments answers, each
/// item once and in its order; the page after the last item is empty.
async fn pages_cover(api: &Api, op: &str, args: Value, field: &str, order: Order) -> Vec<i64> {
    let all = ids(&api.call(op, args.clone()).await, field);
    assert!(
        all.len() >= 3,
        "{op}: the test needs at least 3 items, has {all:?}"
    );
    match order {
        Order::Ascending => assert!(all.windows(2).all(|w| w[0] < w[1]), "{op}: {all:?}"),
        Order::Descending => assert!(all.windows(2).all(|w| w[0] > w[1]), "{op}: {all:?}"),
        Order::Other => {}
    }
    for page_size in [1, 2, 3, all.len() as i64, 1000] {
        let pages = paged(api, op, &args, field, order, page_size).await;
        assert_eq!(pages, all, "{op} in pages of {page_size}");
    }
    let cursor = if order == Order::Descending {
        "before_id"
    } else {
        "after_id"
    };
    let after_last = with(&args, json!({cursor: all.last().unwrap()}));
    assert_eq!(
        api.call(op, after_last).await,
        json!([]),
        "{op} after its last item"
    );
    all
}

/// An ed25519 public key made by `ssh-keygen`.
fn ssh_key(dir: &std::path::Path, name: &str) -> String {
    let file = dir.join(format!("key-{name}"));
    let out = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "ed25519", "-C", name, "-f"])
        .arg(&file)
        .output()
        .expect("running ssh-keygen (install openssh-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(file.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

async fn create_disk(api: &Api, vdc: i64, name: &str) -> Value {
    api.call(
        "CreateDisk",
        json!({"vdc_id": vdc, "name": name, "disk_productoffer_id": DISK_1GB, "image_id": 0}),
    )
    .await
}

async fn create_server(api: &Api, vdc: i64, vlan: i64, name: &str, disks: Value) -> Value {
    api.call(
        "CreateServer",
        json!({"vdc_id": vdc, "vlan_id": vlan, "server_name": name, "image_id": BLANK_IMAGE,
               "server_productoffer_id": SERVER_1CPU_512MB, "disk_productoffer_ids": disks}),
    )
    .await
}

/// A FetchDisk the server refuses to fetch (a loopback address): a FetchDisk job that fails.
async fn failing_fetch(api: &Api, vdc: i64) -> i64 {
    let job = api
        .call(
            "FetchDisk",
            json!({"url": "http://127.0.0.1:9/a.img", "name": "refused",
                   "disk_productoffer_id": DISK_1GB, "vdc_id": vdc, "make_image": false}),
        )
        .await;
    let job_id = id(&job, "job_id");
    api.job_fails(job_id).await;
    job_id
}

/// Starts and then stops a server: a StartServer and a StopServer job that succeed.
async fn start_and_stop(api: &Api, server: i64) -> (i64, i64) {
    let start = id(
        &api.call("StartServer", json!({"server_id": server})).await,
        "job_id",
    );
    api.job_ok(start).await;
    let stop = id(
        &api.call("StopServer", json!({"server_id": server, "stop_method": 2}))
            .await,
        "job_id",
    );
    api.job_ok(stop).await;
    (start, stop)
}

async fn every_list_pages_through_everything_once_in_order(backend: Backend) {
    let app = TestApp::start_with(backend, options()).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let db = ServerDb::open(&app.server).await;

    for n in 0..3 {
        alice
            .call("CreateVDC", json!({"vdc_name": format!("vdc {n}")}))
            .await;
    }
    let mut vlans = Vec::new();
    for n in 0..3 {
        let vlan = alice
            .call(
                "CreateVLAN",
                json!({"vdc_id": vdc, "vlan_name": format!("vlan {n}")}),
            )
            .await;
        vlans.push(id(&vlan, "vlan_id"));
    }
    let mut servers = Vec::new();
    servers.push(create_server(&alice, vdc, vlans[0], "web", json!([DISK_1GB, DISK_1GB])).await);
    servers.push(create_server(&alice, vdc, -1, "db", json!([DISK_1GB])).await);
    servers.push(
        create_server(
            &alice,
            vdc,
            vlans[1],
            "cache",
            json!([DISK_1GB, DISK_1GB, DISK_1GB]),
        )
        .await,
    );
    let loose = create_disk(&alice, vdc, "loose").await;
    for n in 0..3 {
        let snapshot = json!({"disk_id": loose["disk_id"], "name": format!("snapshot {n}")});
        alice.call("CreateDiskSnapshot", snapshot).await;
    }
    // Forwards listed by guest port, made in another order.
    for port in [443, 22, 8080, 80] {
        alice
            .call(
                "AddPortForward",
                json!({"server_id": servers[0]["server_id"], "guest_port": port}),
            )
            .await;
    }
    for n in 0..3 {
        let key = ssh_key(app.dir.path(), &format!("alice-{n}"));
        alice
            .call(
                "CreateSSHKey",
                json!({"name": format!("key {n}"), "public_key": key}),
            )
            .await;
    }
    for n in 0..3 {
        alice
            .call(
                "GetAuthenticationToken",
                json!({"name": format!("token {n}")}),
            )
            .await;
    }
    let mut jobs = Vec::new();
    for server in &servers {
        let (start, stop) = start_and_stop(&alice, id(server, "server_id")).await;
        jobs.extend([start, stop]);
    }
    jobs.push(failing_fetch(&alice, vdc).await);
    // An image, published three times.
    let image_job = alice
        .call(
            "CreateImage",
            json!({"disk_id": loose["disk_id"], "name": "golden", "generate_password": false}),
        )
        .await;
    let image = id(&alice.job_ok(id(&image_job, "job_id")).await, "item_id");
    let (carol, _) = app.add_customer("carol@example.com", &[]);
    for to in [
        &app.bob.customer_uuid,
        &carol.customer_uuid,
        &app.bob.billing_entity_uuid,
    ] {
        alice
            .call("PublishImage", json!({"image_id": image, "publish_to": to}))
            .await;
    }
    // Usage lines, some at the same millisecond and one older than those before it: listed by
    // time, then id.
    let now = chrono::Utc::now().timestamp_millis();
    for at in [now, now, now + 1, now - 5_000, now, now + 1] {
        db.record_bytes_fetched(app.alice.customer_id, 1, at).await;
    }

    let server_id = servers[0]["server_id"].clone();
    pages_cover(&alice, "ListVDCs", json!({}), "vdc_id", Order::Ascending).await;
    pages_cover(
        &alice,
        "ListVLANs",
        json!({"vdc_id": vdc}),
        "vlan_id",
        Order::Ascending,
    )
    .await;
    pages_cover(
        &alice,
        "ListDisks",
        json!({"vdc_id": vdc}),
        "disk_id",
        Order::Ascending,
    )
    .await;
    let listed = pages_cover(
        &alice,
        "ListServers",
        json!({"vdc_id": vdc}),
        "server_id",
        Order::Ascending,
    )
    .await;
    assert_eq!(listed.len(), 3);
    let listed_jobs = pages_cover(&alice, "ListJobs", json!({}), "job_id", Order::Descending).await;
    jobs.push(id(&image_job, "job_id"));
    jobs.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(listed_jobs, jobs);
    pages_cover(
        &alice,
        "ListSnapshots",
        json!({"disk_id": loose["disk_id"]}),
        "snapshot_id",
        Order::Ascending,
    )
    .await;
    pages_cover(
        &alice,
        "ListSSHKeys",
        json!({}),
        "ssh_key_id",
        Order::Ascending,
    )
    .await;
    pages_cover(
        &alice,
        "ListAuthenticationTokens",
        json!({}),
        "token_id",
        Order::Ascending,
    )
    .await;
    pages_cover(
        &alice,
        "ListImageShares",
        json!({"image_id": image}),
        "share_id",
        Order::Ascending,
    )
    .await;
    pages_cover(
        &alice,
        "ListProductOffers",
        json!({}),
        "product_offer_id",
        Order::Ascending,
    )
    .await;
    pages_cover(
        &alice,
        "ListProductOffers",
        json!({"type": "disk"}),
        "product_offer_id",
        Order::Ascending,
    )
    .await;

    // Port forwards: by guest port, whatever their ids.
    let forwards = alice
        .call("ListPortForwards", json!({"server_id": server_id}))
        .await;
    let ports: Vec<i64> = forwards
        .as_array()
        .unwrap()
        .iter()
        .map(|f| id(f, "guest_port"))
        .collect();
    assert_eq!(ports, [22, 80, 443, 8080]);
    pages_cover(
        &alice,
        "ListPortForwards",
        json!({"server_id": server_id}),
        "port_forward_id",
        Order::Other,
    )
    .await;

    // Usage: by time, then id.
    let usage = alice.call("ListUsage", json!({})).await;
    let times: Vec<(String, i64)> = usage
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["created"].as_str().unwrap().to_string(),
                id(u, "usage_id"),
            )
        })
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "ListUsage is by time, then id");
    assert_eq!(times.len(), 6);
    pages_cover(&alice, "ListUsage", json!({}), "usage_id", Order::Other).await;
    // Paging within a window of time.
    let from = usage[1]["created"].clone();
    let window = ids(
        &alice.call("ListUsage", json!({"from": from})).await,
        "usage_id",
    );
    let paged_window = paged(
        &alice,
        "ListUsage",
        &json!({"from": from}),
        "usage_id",
        Order::Other,
        2,
    )
    .await;
    assert_eq!(paged_window, window);

    // Images: the platform's and alice's, by id.
    let images = ids(&alice.call("ListImages", json!({})).await, "image_id");
    assert!(
        images.contains(&BLANK_IMAGE) && images.contains(&image),
        "{images:?}"
    );
    for page_size in [1, 2] {
        assert_eq!(
            paged(
                &alice,
                "ListImages",
                &json!({}),
                "image_id",
                Order::Ascending,
                page_size
            )
            .await,
            images
        );
    }

    // A page of servers carries its servers' disks, forwards and keys, as GetServer does.
    for page_size in [1, 2] {
        let mut after = 0;
        loop {
            let page = alice
                .call(
                    "ListServers",
                    json!({"vdc_id": vdc, "page_size": page_size, "after_id": after}),
                )
                .await;
            let page = page.as_array().unwrap();
            for server in page {
                let got = alice
                    .call("GetServer", json!({"server_id": server["server_id"]}))
                    .await;
                assert_eq!(server, &got, "a listed server is what GetServer shows");
            }
            match page.last() {
                Some(last) => after = id(last, "server_id"),
                None => break,
            }
        }
    }
}
db_test!(
    every_list_pages_through_everything_once_in_order,
    every_list_pages_through_everything_once_in_order
);

/// The names of a list's items.
fn names(list: &Value, field: &str) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|item| item[field].as_str().unwrap().to_string())
        .collect()
}

async fn filters_keep_what_they_say(backend: Backend) {
    let app = TestApp::start_with(backend, options()).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    const NAMES: [&str; 6] = [
        "Web-01",
        "web_02",
        "db 100%",
        "WEBSITE",
        "back\\slash",
        "mail",
    ];
    for name in NAMES {
        create_disk(&alice, vdc, name).await;
    }
    // Servers carry a boot disk each: "<name> boot disk".
    for name in NAMES {
        create_server(&alice, vdc, -1, name, json!([DISK_1GB])).await;
    }
    // Bob's things of the same names are never alice's.
    create_disk(&app.bob(), app.bob.vdc_id, "web-bob").await;

    let disks = |filter: &'static str| {
        let alice = alice.clone();
        async move {
            names(
                &alice
                    .call("ListDisks", json!({"vdc_id": vdc, "name": filter}))
                    .await,
                "disk_name",
            )
        }
    };
    assert_eq!(
        disks("web").await,
        [
            "Web-01",
            "web_02",
            "WEBSITE",
            "Web-01 boot disk",
            "web_02 boot disk",
            "WEBSITE boot disk"
        ]
    );
    assert_eq!(disks("WEB-0").await, ["Web-01", "Web-01 boot disk"]);
    // `_` and `%` are characters, not wildcards.
    assert_eq!(disks("b_0").await, ["web_02", "web_02 boot disk"]);
    assert_eq!(disks("_").await, ["web_02", "web_02 boot disk"]);
    assert_eq!(disks("%").await, ["db 100%", "db 100% boot disk"]);
    assert_eq!(disks("0%").await, ["db 100%", "db 100% boot disk"]);
    assert_eq!(disks("\\").await, ["back\\slash", "back\\slash boot disk"]);
    assert_eq!(disks("%%").await, Vec::<String>::new());
    assert_eq!(disks("nothing like it").await, Vec::<String>::new());
    // An empty filter (or nil) keeps everything.
    assert_eq!(disks("").await.len(), 12);
    assert_eq!(
        names(
            &alice
                .call("ListDisks", json!({"vdc_id": vdc, "name": null}))
                .await,
            "disk_name"
        )
        .len(),
        12
    );
    // A filter pages like the whole list.
    let args = json!({"vdc_id": vdc, "name": "WEB"});
    let all = ids(&alice.call("ListDisks", args.clone()).await, "disk_id");
    assert_eq!(all.len(), 6);
    assert_eq!(
        paged(&alice, "ListDisks", &args, "disk_id", Order::Ascending, 1).await,
        all
    );
    assert_eq!(
        paged(&alice, "ListDisks", &args, "disk_id", Order::Ascending, 4).await,
        all
    );

    let servers = |filter: &'static str| {
        let alice = alice.clone();
        async move {
            names(
                &alice
                    .call("ListServers", json!({"vdc_id": vdc, "name": filter}))
                    .await,
                "server_name",
            )
        }
    };
    assert_eq!(servers("web").await, ["Web-01", "web_02", "WEBSITE"]);
    assert_eq!(servers("B_0").await, ["web_02"]);
    assert_eq!(servers("%").await, ["db 100%"]);
    assert_eq!(servers("boot").await, Vec::<String>::new());
    let args = json!({"vdc_id": vdc, "name": "B"});
    let all = ids(&alice.call("ListServers", args.clone()).await, "server_id");
    assert_eq!(all.len(), 5, "all but mail");
    assert_eq!(
        paged(
            &alice,
            "ListServers",
            &args,
            "server_id",
            Order::Ascending,
            1
        )
        .await,
        all
    );

    // Images: alice's own and the platform's.
    let loose = ids(
        &alice
            .call(
                "ListDisks",
                json!({"vdc_id": vdc, "name": "mail", "page_size": 1}),
            )
            .await,
        "disk_id",
    )[0];
    for name in ["Debian_12", "debian 100%"] {
        let job = alice
            .call(
                "CreateImage",
                json!({"disk_id": loose, "name": name, "generate_password": true}),
            )
            .await;
        alice.job_ok(id(&job, "job_id")).await;
    }
    let images = |filter: &'static str| {
        let alice = alice.clone();
        async move {
            names(
                &alice.call("ListImages", json!({"name": filter})).await,
                "image_name",
            )
        }
    };
    assert_eq!(images("DEBIAN").await, ["Debian_12", "debian 100%"]);
    assert_eq!(images("n_1").await, ["Debian_12"]);
    assert_eq!(images("%").await, ["debian 100%"]);
    assert_eq!(images("blank").await, ["Blank disk"]);
    assert!(
        names(
            &app.bob()
                .call("ListImages", json!({"name": "debian"}))
                .await,
            "image_name"
        )
        .is_empty()
    );

    // Jobs: by status, by type, by both; types in any case.
    let servers_listed = alice
        .call("ListServers", json!({"vdc_id": vdc, "name": "mail"}))
        .await;
    let (start, stop) = start_and_stop(&alice, id(&servers_listed[0], "server_id")).await;
    let fetch = failing_fetch(&alice, vdc).await;
    let jobs = |args: Value| {
        let alice = alice.clone();
        async move { ids(&alice.call("ListJobs", args).await, "job_id") }
    };
    let everything = jobs(json!({})).await;
    assert_eq!(
        everything.len(),
        5,
        "2 CreateImage, StartServer, StopServer, FetchDisk"
    );
    assert_eq!(jobs(json!({"status": 3})).await, [fetch]);
    assert_eq!(jobs(json!({"job_type": "StartServer"})).await, [start]);
    assert_eq!(jobs(json!({"job_type": "stopserver"})).await, [stop]);
    assert_eq!(
        jobs(json!({"status": 1, "job_type": "FetchDisk"})).await,
        Vec::<i64>::new()
    );
    assert_eq!(
        jobs(json!({"status": 3, "job_type": "FETCHDISK"})).await,
        [fetch]
    );
    assert_eq!(jobs(json!({"status": 1})).await.len(), 4);
    assert_eq!(jobs(json!({"status": 6})).await, Vec::<i64>::new());
    // -1 and nil are "not given", as for every optional number.
    assert_eq!(
        jobs(json!({"status": -1, "job_type": null, "page_size": -1, "before_id": -1})).await,
        everything
    );
    let created = json!({"status": 1, "job_type": "CreateImage"});
    let both = jobs(created.clone()).await;
    assert_eq!(both.len(), 2);
    assert_eq!(
        paged(&alice, "ListJobs", &created, "job_id", Order::Descending, 1).await,
        both
    );
}
db_test!(filters_keep_what_they_say, filters_keep_what_they_say);

#[track_caller]
fn assert_invalid(err: &ApiError, argument: &str) {
    assert_eq!(err.code, "INVALID_ARGUMENT", "{err:?}");
    assert!(
        err.message.contains(argument),
        "{err:?} should name {argument}"
    );
}

/// Inserts `count` finished jobs of the customer straight into the database.
async fn insert_jobs(db: &ServerDb, customer_id: i64, count: i64) {
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $2) \
         INSERT INTO jobs (uuid, customer_id, job_type, name, status, created, finished) \
         SELECT 'filler-' || CAST($1 AS TEXT) || '-' || CAST(i AS TEXT), $1, 'StartServer', \
                'filler', 1, 0, 0 FROM n",
    )
    .bind(customer_id)
    .bind(count)
    .execute(db.pool())
    .await
    .unwrap();
}

async fn limits_and_the_default_page(backend: Backend) {
    let app = TestApp::start_with(backend, options()).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    for (op, args) in [
        ("ListVDCs", json!({})),
        ("ListDisks", json!({"vdc_id": vdc})),
        ("ListServers", json!({"vdc_id": vdc})),
        ("ListImages", json!({})),
        ("ListJobs", json!({})),
        ("ListUsage", json!({})),
        ("ListSSHKeys", json!({})),
        ("ListProductOffers", json!({})),
    ] {
        for bad in [0, 1001, -2, i64::MAX] {
            let err = alice.fail(op, with(&args, json!({"page_size": bad}))).await;
            assert_invalid(&err, "page_size");
        }
        let cursor = if op == "ListJobs" {
            "before_id"
        } else {
            "after_id"
        };
        let err = alice.fail(op, with(&args, json!({cursor: -7}))).await;
        assert_invalid(&err, cursor);
        let err = alice.fail(op, with(&args, json!({cursor: "seven"}))).await;
        assert_invalid(&err, cursor);
        // The largest page is fine; so is -1, which is "not given".
        alice
            .call(op, with(&args, json!({"page_size": 1000})))
            .await;
        alice
            .call(op, with(&args, json!({"page_size": -1, cursor: -1})))
            .await;
    }
    assert_invalid(
        &alice.fail("ListJobs", json!({"before_id": 0})).await,
        "before_id",
    );
    assert_invalid(
        &alice.fail("ListJobs", json!({"status": 5})).await,
        "status",
    );
    assert_invalid(
        &alice.fail("ListJobs", json!({"job_type": "Reboot"})).await,
        "job_type",
    );
    let long = "x".repeat(101);
    for (op, args) in [
        ("ListDisks", json!({"vdc_id": vdc, "name": long})),
        ("ListServers", json!({"vdc_id": vdc, "name": long})),
        ("ListImages", json!({"name": long})),
        ("ListImages", json!({"name": "a\u{1}b"})),
    ] {
        assert_invalid(&alice.fail(op, args).await, "name");
    }
    // Lists without such an argument refuse it, as before.
    assert_invalid(&alice.fail("ListVDCs", json!({"name": "x"})).await, "name");

    // Without paging arguments, a list answers at most 1,000 items: all of them for a
    // customer with fewer, as before paging.
    let db = ServerDb::open(&app.server).await;
    insert_jobs(&db, app.alice.customer_id, 1_003).await;
    let first = ids(&alice.call("ListJobs", json!({})).await, "job_id");
    assert_eq!(first.len(), 1000);
    assert!(first.windows(2).all(|w| w[0] > w[1]));
    let newest: i64 = sqlx::query_scalar("SELECT MAX(id) FROM jobs WHERE customer_id = $1")
        .bind(app.alice.customer_id)
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(first[0], newest);
    let rest = ids(
        &alice
            .call("ListJobs", json!({"before_id": first[999]}))
            .await,
        "job_id",
    );
    assert_eq!(rest.len(), 3);
    assert!(rest[0] < first[999]);
    assert_eq!(
        ids(
            &alice.call("ListJobs", json!({"page_size": 1000})).await,
            "job_id"
        ),
        first
    );
    // Bob, under the page size, sees all of his (none), as before.
    assert_eq!(app.bob().call("ListJobs", json!({})).await, json!([]));
}
db_test!(limits_and_the_default_page, limits_and_the_default_page);

/// A cursor is compared only with the caller's own items: another customer's id gives what any
/// number would, and where the server must find the cursor among the caller's items (lists not
/// ordered by id), another customer's id is refused exactly like one that does not exist.
async fn cursors_of_another_customers_ids_leak_nothing(backend: Backend) {
    let app = TestApp::start_with(backend, options()).await;
    let (alice, bob) = (app.alice(), app.bob());
    let db = ServerDb::open(&app.server).await;
    // Interleaved: alice's and bob's ids alternate.
    let mut alice_disks = Vec::new();
    let mut bob_disks = Vec::new();
    for n in 0..3 {
        alice_disks.push(id(
            &create_disk(&alice, app.alice.vdc_id, &format!("a{n}")).await,
            "disk_id",
        ));
        bob_disks.push(id(
            &create_disk(&bob, app.bob.vdc_id, &format!("b{n}")).await,
            "disk_id",
        ));
    }
    let alice_server = create_server(&alice, app.alice.vdc_id, -1, "a", json!([DISK_1GB])).await;
    let alice_vlan = alice
        .call(
            "CreateVLAN",
            json!({"vdc_id": app.alice.vdc_id, "vlan_name": "a"}),
        )
        .await;
    let bob_vlan = bob
        .call(
            "CreateVLAN",
            json!({"vdc_id": app.bob.vdc_id, "vlan_name": "b"}),
        )
        .await;
    let alice_web = create_server(
        &alice,
        app.alice.vdc_id,
        id(&alice_vlan, "vlan_id"),
        "web",
        json!([DISK_1GB]),
    )
    .await;
    let bob_web = create_server(
        &bob,
        app.bob.vdc_id,
        id(&bob_vlan, "vlan_id"),
        "web",
        json!([DISK_1GB]),
    )
    .await;
    let alice_forward = alice
        .call(
            "AddPortForward",
            json!({"server_id": alice_web["server_id"], "guest_port": 22}),
        )
        .await;
    bob.call(
        "AddPortForward",
        json!({"server_id": bob_web["server_id"], "guest_port": 22}),
    )
    .await;
    bob.call(
        "AddPortForward",
        json!({"server_id": bob_web["server_id"], "guest_port": 80}),
    )
    .await;
    let alice_job = start_and_stop(&alice, id(&alice_server, "server_id"))
        .await
        .0;
    let now = chrono::Utc::now().timestamp_millis();
    db.record_bytes_fetched(app.alice.customer_id, 1, now).await;
    db.record_bytes_fetched(app.bob.customer_id, 1, now).await;
    let alice_usage = id(&alice.call("ListUsage", json!({})).await[0], "usage_id");

    // Lists by id: bob's own items after (or before) alice's id, as after any number.
    let bob_all = ids(
        &bob.call("ListDisks", json!({"vdc_id": app.bob.vdc_id}))
            .await,
        "disk_id",
    );
    for alice_disk in &alice_disks {
        let after = ids(
            &bob.call(
                "ListDisks",
                json!({"vdc_id": app.bob.vdc_id, "after_id": alice_disk}),
            )
            .await,
            "disk_id",
        );
        let expected: Vec<i64> = bob_all.iter().copied().filter(|d| d > alice_disk).collect();
        assert_eq!(after, expected);
        assert!(after.iter().all(|d| !alice_disks.contains(d)));
    }
    let bob_jobs = ids(
        &bob.call("ListJobs", json!({"before_id": alice_job})).await,
        "job_id",
    );
    assert_eq!(
        bob_jobs,
        Vec::<i64>::new(),
        "bob has no jobs, whatever the cursor"
    );
    let vdcs = ids(
        &bob.call("ListVDCs", json!({"after_id": app.alice.vdc_id}))
            .await,
        "vdc_id",
    );
    assert!(!vdcs.contains(&app.alice.vdc_id));
    // Another customer's VDC as the list's scope is NOT_FOUND, paging or not.
    let theirs = bob
        .fail(
            "ListDisks",
            json!({"vdc_id": app.alice.vdc_id, "page_size": 1, "after_id": 0}),
        )
        .await;
    assert_eq!(theirs.code, "NOT_FOUND");

    // Lists by something else find the cursor among bob's own items only.
    const MISSING: i64 = 8_000_000;
    for (op, args, theirs) in [
        (
            "ListPortForwards",
            json!({"server_id": bob_web["server_id"]}),
            id(&alice_forward, "port_forward_id"),
        ),
        ("ListUsage", json!({}), alice_usage),
    ] {
        let refused = bob.fail(op, with(&args, json!({"after_id": theirs}))).await;
        let missing = bob
            .fail(op, with(&args, json!({"after_id": MISSING})))
            .await;
        assert_invalid(&refused, "after_id");
        assert_eq!(refused.status, missing.status);
        assert_eq!(
            refused.message.replace(&theirs.to_string(), "N"),
            missing.message.replace(&MISSING.to_string(), "N"),
            "{op}: another customer's id must look like a missing one"
        );
    }
    // Bob's own cursors work there.
    let forwards = ids(
        &bob.call(
            "ListPortForwards",
            json!({"server_id": bob_web["server_id"]}),
        )
        .await,
        "port_forward_id",
    );
    let second = bob
        .call(
            "ListPortForwards",
            json!({"server_id": bob_web["server_id"], "after_id": forwards[0]}),
        )
        .await;
    assert_eq!(ids(&second, "port_forward_id"), [forwards[1]]);
    // A forward of another server, even of the caller's own, is no cursor for this one.
    let other_server = json!({"server_id": alice_server["server_id"],
                              "after_id": alice_forward["port_forward_id"]});
    let alice_other = alice.fail("ListPortForwards", other_server).await;
    assert_invalid(&alice_other, "after_id");
}
db_test!(
    cursors_of_another_customers_ids_leak_nothing,
    cursors_of_another_customers_ids_leak_nothing
);
