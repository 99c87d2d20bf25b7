//! Every operation over the JSON mirror, on SQLite and PostgreSQL.

use serde_json::{Value, json};

use crate::support::catalogue::{
    BLANK_IMAGE, DISK_1GB, DISK_1GB_SIZE, DISK_10GB, DISK_10GB_SIZE, DISK_20GB, DISK_20GB_SIZE,
    SERVER_1CPU_1GB, SERVER_2CPU_2GB,
};
use crate::support::{Backend, TestApp, db_test, id};

async fn vdcs_and_vlans(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.alice();
    let vdc = alice
        .call("CreateVDC", json!({"vdc_name": "  Staging  "}))
        .await;
    assert_eq!(vdc["vdc_name"], "Staging", "names are trimmed");
    assert_eq!(vdc["number_of_vlans"], 0);
    assert_eq!(vdc["vdc_uuid"].as_str().unwrap().len(), 36);
    let vdc_id = id(&vdc, "vdc_id");

    let vdcs = alice.call("ListVDCs", json!({})).await;
    let names: Vec<&str> = vdcs
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["vdc_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Default VDC", "Staging"]);

    assert_eq!(
        alice.call("ListVLANs", json!({"vdc_id": vdc_id})).await,
        json!([])
    );
    let vlan = alice
        .call(
            "CreateVLAN",
            json!({"vdc_id": vdc_id, "vlan_name": "backend"}),
        )
        .await;
    assert_eq!(vlan["vdc_id"], vdc_id);
    assert_eq!(vlan["vlan_name"], "backend");
    let vlans = alice.call("ListVLANs", json!({"vdc_id": vdc_id})).await;
    assert_eq!(vlans.as_array().unwrap().len(), 1);
    assert_eq!(vlans[0]["vlan_id"], vlan["vlan_id"]);

    let listed = alice.call("ListVDCs", json!({})).await;
    assert_eq!(listed[1]["number_of_vlans"], 1);

    let err = alice.fail("CreateVDC", json!({"vdc_name": "   "})).await;
    assert_eq!((err.status, err.code.as_str()), (400, "INVALID_ARGUMENT"));
    assert!(err.message.contains("vdc_name"), "{}", err.message);
    let err = alice
        .fail("CreateVLAN", json!({"vdc_id": 99999, "vlan_name": "x"}))
        .await;
    assert_eq!((err.status, err.code.as_str()), (404, "NOT_FOUND"));
}
db_test!(vdcs_and_vlans, vdcs_and_vlans);

async fn product_offers_and_images(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.alice();
    let all = alice.call("ListProductOffers", json!({})).await;
    let servers = alice
        .call("ListProductOffers", json!({"type": "server"}))
        .await;
    let disks = alice
        .call("ListProductOffers", json!({"type": "disk"}))
        .await;
    let count = |v: &Value| v.as_array().unwrap().len();
    assert!(count(&servers) >= 3 && count(&disks) >= 3);
    assert_eq!(count(&all), count(&servers) + count(&disks));
    assert!(
        servers
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["type"] == "server")
    );
    let server_offer = servers
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["product_offer_id"] == SERVER_1CPU_1GB)
        .expect("server offer 18");
    assert_eq!(server_offer["name"], "1 CPU / 1 GB RAM");
    assert_eq!(
        (
            server_offer["processors"].as_i64(),
            server_offer["memory"].as_i64()
        ),
        (Some(1), Some(1024))
    );
    let disk_offer = disks
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["product_offer_id"] == DISK_20GB)
        .expect("disk offer 31");
    assert_eq!(disk_offer["name"], "20 GB disk");
    assert_eq!(disk_offer["disk_size"], DISK_20GB_SIZE);
    let err = alice
        .fail("ListProductOffers", json!({"type": "gpu"}))
        .await;
    assert_eq!(err.code, "INVALID_ARGUMENT");

    let images = alice.call("ListImages", json!({})).await;
    let blank = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image_id"] == BLANK_IMAGE)
        .expect("image 66");
    assert_eq!(blank["image_name"], "Blank disk");
    assert_eq!(blank["visibility"], "platform");
    assert_eq!(blank["owner"], "platform");
}
db_test!(product_offers_and_images, product_offers_and_images);

async fn disks(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let blank = alice
        .call(
            "CreateDisk",
            json!({"vdc_id": vdc, "name": "data", "disk_productoffer_id": DISK_10GB,
                   "image_id": 0}),
        )
        .await;
    assert_eq!(blank["capacity"], DISK_10GB_SIZE);
    assert_eq!(blank["status"], "available");
    assert_eq!(blank["media"], "disk");
    assert_eq!(blank["server_id"], Value::Null);
    let from_image = alice
        .call(
            "CreateDisk",
            json!({"vdc_id": vdc, "name": "from 66", "disk_productoffer_id": DISK_20GB,
                   "image_id": BLANK_IMAGE}),
        )
        .await;
    assert_eq!(from_image["image_id"], BLANK_IMAGE);

    let listed = alice.call("ListDisks", json!({"vdc_id": vdc})).await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let got = alice
        .call("GetDisk", json!({"disk_id": blank["disk_id"]}))
        .await;
    assert_eq!(got, blank);

    // Wrong kinds of offers and unknown images are refused, and nothing is made.
    let err = alice
        .fail(
            "CreateDisk",
            json!({"vdc_id": vdc, "name": "x", "disk_productoffer_id": SERVER_1CPU_1GB,
                   "image_id": 0}),
        )
        .await;
    assert_eq!(err.code, "INVALID_ARGUMENT");
    assert!(
        err.message.contains("disk_productoffer_id"),
        "{}",
        err.message
    );
    let err = alice
        .fail(
            "CreateDisk",
            json!({"vdc_id": vdc, "name": "x", "disk_productoffer_id": DISK_20GB,
                   "image_id": 12345}),
        )
        .await;
    assert_eq!(err.code, "NOT_FOUND");
    assert_eq!(
        alice
            .call("ListDisks", json!({"vdc_id": vdc}))
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );

    assert_eq!(
        alice
            .call("DeleteDisk", json!({"disk_id": blank["disk_id"]}))
            .await,
        json!({"result": 1})
    );
    let err = alice
        .fail("GetDisk", json!({"disk_id": blank["disk_id"]}))
        .await;
    assert_eq!((err.status, err.code.as_str()), (404, "NOT_FOUND"));
    let volumes = std::fs::read_dir(app.server.data_dir.join("volumes"))
        .unwrap()
        .count();
    assert_eq!(volumes, 1, "the deleted disk's file is gone");
}
db_test!(disks, disks);

async fn server_lifecycle(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let vlan = alice
        .call("CreateVLAN", json!({"vdc_id": vdc, "vlan_name": "front"}))
        .await;
    let server = alice
        .call(
            "CreateServer",
            json!({"vdc_id": vdc, "vlan_id": vlan["vlan_id"], "server_name": "web",
                   "image_id": BLANK_IMAGE, "server_productoffer_id": SERVER_2CPU_2GB,
                   "disk_productoffer_ids": [DISK_20GB, DISK_1GB]}),
        )
        .await;
    let server_id = id(&server, "server_id");
    assert_eq!(server["status"], 5);
    assert_eq!(server["vlan_id"], vlan["vlan_id"]);
    assert_eq!(
        (server["processors"].as_i64(), server["memory"].as_i64()),
        (Some(2), Some(2048))
    );
    let disks = server["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 2);
    assert_eq!(disks[0]["capacity"], DISK_20GB_SIZE);
    assert_eq!(disks[1]["capacity"], DISK_1GB_SIZE);
    assert!(
        disks
            .iter()
            .all(|d| d["server_id"] == server_id && d["status"] == "attached")
    );
    let password = server["initial_password"].as_str().unwrap();
    assert!(password.len() >= 12, "a real initial password: {password}");
    let other = alice
        .call(
            "CreateServer",
            json!({"vdc_id": vdc, "vlan_id": -1, "server_name": "db", "image_id": BLANK_IMAGE,
                   "server_productoffer_id": SERVER_1CPU_1GB, "disk_productoffer_ids": [DISK_20GB]}),
        )
        .await;
    assert_eq!(other["vlan_id"], Value::Null);
    assert_ne!(other["initial_password"], server["initial_password"]);
    assert_eq!(
        alice
            .call("ListServers", json!({"vdc_id": vdc}))
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Attach a disk at the front, then detach it.
    let extra = alice
        .call(
            "CreateDisk",
            json!({"vdc_id": vdc, "name": "extra", "disk_productoffer_id": DISK_1GB,
                   "image_id": 0}),
        )
        .await;
    let attach = json!({"server_id": server_id, "disk_id": extra["disk_id"], "index": 0});
    assert_eq!(
        alice.call("AttachDisk", attach.clone()).await,
        json!({"result": 1})
    );
    let got = alice
        .call("GetServer", json!({"server_id": server_id}))
        .await;
    let order: Vec<&Value> = got["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["disk_id"])
        .collect();
    assert_eq!(
        order,
        [
            &extra["disk_id"],
            &disks[0]["disk_id"],
            &disks[1]["disk_id"]
        ]
    );
    let err = alice
        .fail(
            "AttachDisk",
            json!({"server_id": other["server_id"], "disk_id": extra["disk_id"]}),
        )
        .await;
    assert_eq!((err.status, err.code.as_str()), (409, "CONFLICT"));
    let err = alice
        .fail("DeleteDisk", json!({"disk_id": extra["disk_id"]}))
        .await;
    assert_eq!(err.code, "CONFLICT", "an attached disk cannot be deleted");
    assert_eq!(
        alice
            .call(
                "DetachDisk",
                json!({"server_id": server_id, "disk_id": extra["disk_id"]})
            )
            .await,
        json!({"result": 1})
    );
    let got = alice
        .call("GetDisk", json!({"disk_id": extra["disk_id"]}))
        .await;
    assert_eq!(got["status"], "available");

    // An optional number's -1 means "not given" (clients that cannot send nil): appended.
    let append = json!({"server_id": server_id, "disk_id": extra["disk_id"], "index": -1});
    assert_eq!(alice.call("AttachDisk", append).await, json!({"result": 1}));
    let got = alice
        .call("GetServer", json!({"server_id": server_id}))
        .await;
    let order: Vec<&Value> = got["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["disk_id"])
        .collect();
    assert_eq!(
        order,
        [
            &disks[0]["disk_id"],
            &disks[1]["disk_id"],
            &extra["disk_id"]
        ]
    );
    alice
        .call(
            "DetachDisk",
            json!({"server_id": server_id, "disk_id": extra["disk_id"]}),
        )
        .await;
    let err = alice
        .fail(
            "AttachDisk",
            json!({"server_id": server_id, "disk_id": extra["disk_id"], "index": -2}),
        )
        .await;
    assert_eq!(err.code, "INVALID_ARGUMENT", "only -1 means not given");

    // Start, refuse changes while running, stop, destroy.
    let job = alice
        .call("StartServer", json!({"server_id": server_id}))
        .await;
    let job = alice.job_ok(id(&job, "job_id")).await;
    assert_eq!(
        (job["job_type"].as_str(), job["item_type"].as_str()),
        (Some("StartServer"), Some("server"))
    );
    assert_eq!(job["item_id"], server_id);
    assert_eq!(
        alice
            .call("GetServer", json!({"server_id": server_id}))
            .await["status"],
        2
    );
    let err = alice
        .fail("StartServer", json!({"server_id": server_id}))
        .await;
    assert_eq!(err.code, "CONFLICT");
    let err = alice
        .fail(
            "AttachDisk",
            json!({"server_id": server_id, "disk_id": extra["disk_id"]}),
        )
        .await;
    assert_eq!(err.code, "CONFLICT");
    assert!(err.message.contains("running"), "{}", err.message);
    let err = alice
        .fail(
            "StopServer",
            json!({"server_id": server_id, "stop_method": 3}),
        )
        .await;
    assert_eq!(err.code, "INVALID_ARGUMENT");
    let job = alice
        .call(
            "StopServer",
            json!({"server_id": server_id, "stop_method": 2}),
        )
        .await;
    alice.job_ok(id(&job, "job_id")).await;
    assert_eq!(
        alice
            .call("GetServer", json!({"server_id": server_id}))
            .await["status"],
        5
    );
    let err = alice
        .fail(
            "StopServer",
            json!({"server_id": server_id, "stop_method": 1}),
        )
        .await;
    assert_eq!(err.code, "CONFLICT");

    // Destroying the server deletes the disks made with it and keeps the others.
    alice
        .call(
            "AttachDisk",
            json!({"server_id": server_id, "disk_id": extra["disk_id"]}),
        )
        .await;
    let job = alice
        .call("DestroyServer", json!({"server_id": server_id}))
        .await;
    alice.job_ok(id(&job, "job_id")).await;
    assert_eq!(
        alice
            .fail("GetServer", json!({"server_id": server_id}))
            .await
            .code,
        "NOT_FOUND"
    );
    let left: Vec<i64> = alice
        .call("ListDisks", json!({"vdc_id": vdc}))
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|d| id(d, "disk_id"))
        .collect();
    assert!(left.contains(&id(&extra, "disk_id")));
    assert!(!left.contains(&id(&disks[0], "disk_id")));
    assert_eq!(
        alice
            .call("GetDisk", json!({"disk_id": extra["disk_id"]}))
            .await["status"],
        "available"
    );
}
db_test!(server_lifecycle, server_lifecycle);

async fn create_server_refusals_make_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let other_vdc = alice.call("CreateVDC", json!({"vdc_name": "other"})).await;
    let vlan = alice
        .call(
            "CreateVLAN",
            json!({"vdc_id": other_vdc["vdc_id"], "vlan_name": "v"}),
        )
        .await;
    let base = json!({"vdc_id": vdc, "vlan_id": -1, "server_name": "s", "image_id": BLANK_IMAGE,
                      "server_productoffer_id": SERVER_1CPU_1GB,
                      "disk_productoffer_ids": [DISK_20GB]});
    let with = |key: &str, value: Value| {
        let mut v = base.clone();
        v[key] = value;
        v
    };
    for (args, code, mentions) in [
        (
            with("disk_productoffer_ids", json!([])),
            "INVALID_ARGUMENT",
            "disk_productoffer_ids",
        ),
        (
            with("disk_productoffer_ids", json!([DISK_20GB, SERVER_1CPU_1GB])),
            "INVALID_ARGUMENT",
            "disk_productoffer_ids[1]",
        ),
        (
            with("server_productoffer_id", json!(DISK_20GB)),
            "INVALID_ARGUMENT",
            "server_productoffer_id",
        ),
        (
            with("vlan_id", vlan["vlan_id"].clone()),
            "INVALID_ARGUMENT",
            "vlan_id",
        ),
        (with("vlan_id", json!(424242)), "NOT_FOUND", "VLAN"),
        (with("image_id", json!(424242)), "NOT_FOUND", "image"),
        (
            with("server_name", json!("")),
            "INVALID_ARGUMENT",
            "server_name",
        ),
    ] {
        let err = alice.fail("CreateServer", args.clone()).await;
        assert_eq!(err.code, code, "{args}: {err:?}");
        assert!(err.message.contains(mentions), "{args}: {}", err.message);
    }
    assert_eq!(
        alice.call("ListServers", json!({"vdc_id": vdc})).await,
        json!([])
    );
    assert_eq!(
        alice.call("ListDisks", json!({"vdc_id": vdc})).await,
        json!([])
    );
    let volumes = std::fs::read_dir(app.server.data_dir.join("volumes"))
        .unwrap()
        .count();
    assert_eq!(volumes, 0, "no volume file is left behind");
}
db_test!(
    create_server_refusals_make_nothing,
    create_server_refusals_make_nothing
);

async fn jobs(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.alice();
    let server = alice
        .call(
            "CreateServer",
            json!({"vdc_id": app.alice.vdc_id, "vlan_id": -1, "server_name": "s",
                   "image_id": BLANK_IMAGE, "server_productoffer_id": SERVER_1CPU_1GB,
                   "disk_productoffer_ids": [DISK_20GB]}),
        )
        .await;
    let start = id(
        &alice
            .call("StartServer", json!({"server_id": server["server_id"]}))
            .await,
        "job_id",
    );
    let done = alice.job_ok(start).await;
    assert_eq!(done["progress"], 100);
    assert!(done["finished"].is_string() && done["started"].is_string());
    assert_eq!(done["error_code"], Value::Null);
    let got = alice.call("GetJob", json!({"job_id": start})).await;
    assert_eq!(got, done);

    let stop = id(
        &alice
            .call(
                "StopServer",
                json!({"server_id": server["server_id"], "stop_method": 1}),
            )
            .await,
        "job_id",
    );
    let stopped = alice.job_ok(stop).await;
    let list = alice.call("ListJobs", json!({})).await;
    let ids: Vec<i64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|j| id(j, "job_id"))
        .collect();
    assert_eq!(ids, [stop, start], "newest first");

    let err = alice.fail("CancelJob", json!({"job_id": stop})).await;
    assert_eq!(err.code, "CONFLICT", "a finished job cannot be cancelled");
    let same = alice
        .call("WaitForJob", json!({"job_id": stop, "timeout_seconds": 0}))
        .await;
    assert_eq!(same, stopped);
    let err = alice
        .fail(
            "WaitForJob",
            json!({"job_id": stop, "timeout_seconds": 301}),
        )
        .await;
    assert_eq!(err.code, "INVALID_ARGUMENT");
    let err = alice.fail("GetJob", json!({"job_id": 987654})).await;
    assert_eq!(err.code, "NOT_FOUND");
}
db_test!(jobs, jobs);

async fn fetch_disk_checks_its_arguments_before_queueing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let alice = app.alice();
    let vdc = app.alice.vdc_id;
    let args = |url: &str, checksum: Value, offer: i64| {
        json!({"url": url, "checksum": checksum, "conn_user": null, "conn_pass": null,
               "name": "img", "disk_productoffer_id": offer, "vdc_id": vdc, "make_image": false})
    };
    let err = alice
        .fail(
            "FetchDisk",
            args("file:///etc/passwd", Value::Null, DISK_20GB),
        )
        .await;
    assert_eq!(err.code, "FETCH_REFUSED");
    let err = alice
        .fail(
            "FetchDisk",
            args("http://h/x.img", json!("not-md5"), DISK_20GB),
        )
        .await;
    assert_eq!(err.code, "INVALID_ARGUMENT");
    assert!(err.message.contains("checksum"));
    let err = alice
        .fail(
            "FetchDisk",
            args("http://h/x.img", Value::Null, SERVER_1CPU_1GB),
        )
        .await;
    assert_eq!(err.code, "INVALID_ARGUMENT");
    let err = alice
        .fail("FetchDisk", json!({"url": "http://h/x.img"}))
        .await;
    assert_eq!(err.code, "MISSING_ARGUMENT");
    assert_eq!(
        alice.call("ListJobs", json!({})).await,
        json!([]),
        "nothing was queued"
    );

    let job = alice
        .call(
            "FetchDisk",
            args(
                "http://user:hunter2@images.example.com/x.img",
                json!("D41D8CD98F00B204E9800998ECF8427E"),
                DISK_20GB,
            ),
        )
        .await;
    let job = alice.call("GetJob", json!({"job_id": job["job_id"]})).await;
    assert_eq!(job["job_type"], "FetchDisk");
    assert_eq!(job["item_type"], "disk");
    assert!(
        !job.to_string().contains("hunter2"),
        "credentials never show in a job: {job}"
    );
}
db_test!(
    fetch_disk_checks_its_arguments_before_queueing,
    fetch_disk_checks_its_arguments_before_queueing
);
