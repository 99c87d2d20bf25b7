//! Test harness: starts the real `extility` binary on a free port against a fresh database
//! (SQLite in a temporary data directory, or a new PostgreSQL database), and talks to it over
//! HTTP.
//!
//! Every test that touches the database runs on both engines through [`db_test!`].
//!
//! Here: servers ([`TestApp`], [`TestServer`], [`Cluster`]), the JSON client [`Api`] with the
//! job waits (`wait_job`, `job_ok`, `job_fails`, `job_until`), and small helpers. In the
//! submodules: the demo catalogue's ids and sizes ([`catalogue`]), the server's database and
//! the volume files behind disks, images and snapshots ([`server_db`]), FetchDisk and what it
//! fetches from ([`fetch_disk`], [`image_server`], [`ftp_server`], [`tls`]), images and servers
//! ([`images`]), QEMU boot media ([`boot_media`]), real Linux guests ([`guest`]), images for the hygiene checks ([`hygiene_images`]), the
//! tool-chain binaries ([`tools`]) and a real browser for the control panel ([`browser`]).

pub mod boot_media;
pub mod browser;
pub mod catalogue;
pub mod ceph;
pub mod fetch_disk;
pub mod ftp_server;
pub mod guest;
pub mod hygiene_images;
pub mod image_server;
pub mod images;
pub mod in_process;
pub mod netns;
pub mod server_db;
pub mod tcp_cut;
pub mod test_app;
pub mod tls;
pub mod tools;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;

pub const GIB: u64 = 1 << 30;
pub const MIB: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an async test body once on SQLite and once on PostgreSQL:
/// `db_test!(name, body_fn);` where `async fn body_fn(backend: Backend)`.
macro_rules! db_test {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body($crate::support::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body($crate::support::Backend::Postgres).await
            }
        }
    };
}
pub(crate) use db_test;

/// Where a test server keeps its volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// Files in its data directory (the embedded default).
    Files,
    /// A pool of its own on the test run's Ceph cluster ([`ceph`]).
    Rbd,
}

/// Runs a storage test body on each database with files, and on PostgreSQL with Ceph RBD (the
/// engines of a cluster): `storage_test!(name, body_fn);` where
/// `async fn body_fn(backend: Backend, store: Store)`.
macro_rules! storage_test {
    ($name:ident, $body:ident) => {
        mod $name {
            use $crate::support::{Backend, Store};
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body(Backend::Sqlite, Store::Files).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body(Backend::Postgres, Store::Files).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_rbd() {
                super::$body(Backend::Postgres, Store::Rbd).await
            }
        }
    };
}
pub(crate) use storage_test;

/// The PostgreSQL server tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("EXTILITY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

fn postgres_url_for(database: &str) -> String {
    let admin = postgres_admin_url();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{database}")
}

async fn create_postgres_database() -> String {
    let name = format!("extility_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&postgres_admin_url())
        .await
        .expect("PostgreSQL must run for the PostgreSQL tests (see scripts/test.sh)");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("creating a test database");
    name
}

fn drop_postgres_database(name: String) {
    // Drop runs outside any runtime the test may still be driving: use a thread of our own.
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await;
            }
        })
    })
    .join();
}

/// The database a test's servers use: one per test, shared by all the nodes the test starts.
pub struct TestDatabase {
    pub url: String,
    pg_name: Option<String>,
}

impl TestDatabase {
    pub async fn new(backend: Backend, data_dir: &Path) -> Self {
        match backend {
            Backend::Sqlite => TestDatabase {
                url: format!(
                    "sqlite://{}?mode=rwc",
                    data_dir.join("extility.db").display()
                ),
                pg_name: None,
            },
            Backend::Postgres => {
                let name = create_postgres_database().await;
                TestDatabase {
                    url: postgres_url_for(&name),
                    pg_name: Some(name),
                }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            drop_postgres_database(name);
        }
    }
}

/// Options for starting a server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    pub args: Vec<String>,
    /// Run the server in this network namespace (`ip netns exec`), listening on `listen`; a
    /// server whose args say no `--network` gets `--network user` (tests share the host's
    /// network namespace otherwise).
    pub netns: Option<String>,
    pub listen: Option<String>,
    pub env: Vec<(String, String)>,
    /// Node id (default: kept in the data directory).
    pub node_id: Option<String>,
}

/// A running `extility serve`.
pub struct TestServer {
    pub url: String,
    pub data_dir: PathBuf,
    pub db_url: String,
    options: ServerOptions,
    child: Option<Child>,
    log: PathBuf,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_extility")
}

impl TestServer {
    /// Starts a server on `db` with its files in `data_dir`.
    /// What the server was started with.
    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    pub fn spawn(db: &TestDatabase, data_dir: &Path, options: ServerOptions) -> TestServer {
        let mut server = TestServer {
            url: String::new(),
            data_dir: data_dir.to_path_buf(),
            db_url: db.url.clone(),
            options,
            child: None,
            log: data_dir.join(format!("server-{}.log", uuid::Uuid::new_v4().simple())),
        };
        server.start();
        server
    }

    fn start(&mut self) {
        std::fs::create_dir_all(&self.data_dir).unwrap();
        let log = std::fs::File::create(&self.log).unwrap();
        let mut cmd = match &self.options.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(binary());
                cmd
            }
            None => Command::new(binary()),
        };
        cmd.arg("serve")
            .arg("--listen")
            .arg(self.options.listen.as_deref().unwrap_or("127.0.0.1:0"))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--database-url")
            .arg(&self.db_url)
            .args(&self.options.args)
            .args(
                (!self.options.args.iter().any(|a| a == "--network"))
                    .then_some(["--network", "user"])
                    .into_iter()
                    .flatten(),
            )
            .env("RUST_LOG", "info,sqlx=warn,tower_http=warn")
            // The test VMs that boot nothing ignore ACPI: don't wait a minute to power them off.
            // (A test's own --vm-shutdown-timeout wins over this.)
            .env("EXTILITY_VM_SHUTDOWN_TIMEOUT", "5")
            .env_remove("DATABASE_URL")
            .env_remove("EXTILITY_HYPERVISOR")
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(node) = &self.options.node_id {
            cmd.arg("--node-id").arg(node);
        }
        for (k, v) in &self.options.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("starting extility serve");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("extility listening on ") {
                        break url.trim().to_string();
                    }
                }
                _ => {
                    let _ = child.wait();
                    panic!("the server did not start:\n{}", self.log_text());
                }
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.url = url;
        self.child = Some(child);
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data directory and database.
    pub fn restart(&mut self) {
        self.kill9();
        self.start();
    }

    /// Gives `flag` (one of the server's own options) `value` from the next (re)start on.
    pub fn set_option(&mut self, flag: &str, value: &str) {
        let args = &mut self.options.args;
        match args.iter().position(|a| a == flag) {
            Some(at) => args[at + 1] = value.to_string(),
            None => args.extend([flag.to_string(), value.to_string()]),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where the QEMU driver keeps this server's VMs.
    pub fn vms_dir(&self) -> PathBuf {
        self.data_dir.join("vms")
    }

    /// Runs `extility ARGS` against this server's data directory and database.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(binary())
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--database-url")
            .arg(&self.db_url)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap_or_else(|e| panic!("running extility {args:?}: {e}"))
    }

    /// Runs `extility customer add` against this server's database, with `extra` arguments
    /// (`--billing-entity NAME`, `--admin`).
    pub fn add_customer(&self, email: &str, password: &str, extra: &[&str]) -> Customer {
        let mut args = vec!["customer", "add", "--email", email, "--password", password];
        args.extend(extra);
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "customer add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |key: &str| -> String {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("customer add printed no {key}: {text}"))
                .trim()
                .to_string()
        };
        Customer {
            email: email.to_string(),
            password: password.to_string(),
            customer_id: field("customer_id").parse().unwrap(),
            customer_uuid: field("customer_uuid"),
            billing_entity_uuid: field("billing_entity_uuid"),
            vdc_id: field("vdc_id").parse().unwrap(),
        }
    }

    /// Runs `extility billing-entity add NAME`; returns the new entity's uuid, or what the
    /// command printed on stderr when it failed.
    pub fn add_billing_entity(&self, name: &str) -> Result<String, String> {
        let out = self.cli(&["billing-entity", "add", name]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("billing_entity_id="), "{text}");
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("billing_entity_uuid="))
            .expect("billing_entity_uuid= line")
            .trim()
            .to_string())
    }

    pub fn api(&self, email: &str, password: &str) -> Api {
        Api::new(&self.url, email, password)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
        // VMs outlive `extility serve` (that is the point), so the test's end must end them.
        kill_vms(&self.vms_dir());
        if std::thread::panicking() {
            eprintln!("---- server log ({}) ----\n{}", self.url, self.log_text());
        }
    }
}

/// Where a server on `data_dir` keeps node `node`'s dnsmasq files (`--network-run-dir`'s
/// default): `/run/extility/network/<8 hex digits of the SHA-256 of the data directory's
/// canonical path>/<node>`.
pub fn dnsmasq_dir(data_dir: &Path, node: &str) -> PathBuf {
    use sha2::Digest;
    let path = data_dir.canonicalize().unwrap();
    let digest = sha2::Sha256::digest(path.as_os_str().as_encoded_bytes());
    Path::new("/run/extility/network")
        .join(hex::encode(&digest[..4]))
        .join(node)
}

/// The QEMU processes running for VMs under `vms_dir` (`<data-dir>/vms`): every process
/// whose command line names a file there, found in /proc (a QEMU still starting has no pid
/// file yet).
pub fn running_vms(vms_dir: &Path) -> Vec<i32> {
    use std::os::unix::ffi::OsStrExt;
    // The QEMU driver names its files by the canonical path.
    let Ok(vms_dir) = vms_dir.canonicalize() else {
        return Vec::new();
    };
    let mut prefix = vms_dir.as_os_str().as_bytes().to_vec();
    prefix.push(b'/');
    // A confined VM's QEMU names no file of the data directory (it is passed descriptors), but
    // its pid file is in this server's directory under the runtime root.
    let run_prefix = format!(
        "/run/extility/vms/{}/",
        extility::hypervisor::qemu::confine::server_run_name(&vms_dir)
    );
    qemu_processes(|arg| {
        arg.windows(prefix.len()).any(|w| w == prefix) || arg.starts_with(run_prefix.as_bytes())
    })
}

/// The pids of the QEMU processes (found in /proc) with an argument `names_it` accepts.
pub fn qemu_processes(names_it: impl Fn(&[u8]) -> bool) -> Vec<i32> {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    processes
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let mut args = cmdline.split(|b| *b == 0);
            let is_qemu = args.next()?.ends_with(b"qemu-system-x86_64");
            (is_qemu && args.any(&names_it)).then_some(pid)
        })
        .collect()
}

/// Where the server `server_uuid`'s VM may keep its runtime files: its directory under
/// `/run/extility/vms/<server's directory>/` when the server runs as root (a confined VM), else
/// under `vms_dir`.
pub fn vm_runtime_dirs(vms_dir: &Path, server_uuid: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/run/extility/vms")
        .into_iter()
        .flatten()
        .flatten()
        .map(|server| server.path().join(server_uuid))
        .collect();
    dirs.push(vms_dir.join(server_uuid));
    dirs
}

/// Kills (SIGKILL) the QEMU processes running for VMs under `vms_dir`, until none is left:
/// one being started when extility died may still fork its daemon.
pub fn kill_vms(vms_dir: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pids = running_vms(vms_dir);
        if pids.is_empty() || std::time::Instant::now() > deadline {
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) on a pid just found to be one of this test's QEMUs.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Customer {
    pub email: String,
    pub password: String,
    pub customer_id: i64,
    pub customer_uuid: String,
    pub billing_entity_uuid: String,
    pub vdc_id: i64,
}

/// A started server with its database and data directory, and two customers.
pub struct TestApp {
    pub server: TestServer,
    /// Held for its drop, which comes after the server's (`server.db_url` names it).
    _db: TestDatabase,
    pub dir: tempfile::TempDir,
    pub alice: Customer,
    pub bob: Customer,
}

impl TestApp {
    pub async fn start(backend: Backend) -> TestApp {
        Self::start_with(backend, ServerOptions::default()).await
    }

    /// A server keeping its volumes in `store`.
    pub async fn start_on(backend: Backend, store: Store) -> TestApp {
        Self::start_on_with(backend, store, ServerOptions::default()).await
    }

    pub async fn start_on_with(
        backend: Backend,
        store: Store,
        mut options: ServerOptions,
    ) -> TestApp {
        if store == Store::Rbd {
            let args = tokio::task::spawn_blocking(|| {
                let cluster = ceph::cluster();
                cluster.server_args(&cluster.new_pool())
            })
            .await
            .unwrap();
            options.args.extend(args);
        }
        Self::start_with(backend, options).await
    }

    pub async fn start_with(backend: Backend, options: ServerOptions) -> TestApp {
        let (dir, data_dir, db) = data_dir_and_database(backend).await;
        let server = TestServer::spawn(&db, &data_dir, options);
        let alice = server.add_customer("alice@example.com", "alice-password", &[]);
        let bob = server.add_customer("bob@example.com", "bob-password", &[]);
        TestApp {
            server,
            _db: db,
            dir,
            alice,
            bob,
        }
    }

    pub fn alice(&self) -> Api {
        self.server.api(&self.alice.email, &self.alice.password)
    }

    pub fn bob(&self) -> Api {
        self.server.api(&self.bob.email, &self.bob.password)
    }

    /// Adds a customer with `extra` arguments for `customer add` (`--billing-entity NAME`,
    /// `--admin`); returns it and its client.
    pub fn add_customer(&self, email: &str, extra: &[&str]) -> (Customer, Api) {
        let customer = self
            .server
            .add_customer(email, "long-enough-password", extra);
        let api = self.server.api(&customer.email, &customer.password);
        (customer, api)
    }
}

/// A fresh data directory (`data` in a new temporary folder) and a database for it.
async fn data_dir_and_database(backend: Backend) -> (tempfile::TempDir, PathBuf, TestDatabase) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let db = TestDatabase::new(backend, &data_dir).await;
    (dir, data_dir, db)
}

/// Nodes of one cluster: `extility serve` processes on one database and data directory, each
/// with its node id and the same arguments.
pub struct Cluster {
    db: TestDatabase,
    data_dir: PathBuf,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn new(backend: Backend, args: &[&str]) -> Cluster {
        Self::with_args(backend, args.iter().map(|a| a.to_string()).collect()).await
    }

    pub async fn with_args(backend: Backend, args: Vec<String>) -> Cluster {
        let (dir, data_dir, db) = data_dir_and_database(backend).await;
        Cluster {
            db,
            data_dir,
            args,
            _dir: dir,
        }
    }

    /// Starts node `name` in the network namespace `netns` (a host of its own: its own data
    /// directory, the cluster's secret key), listening on `listen` there, with `extra`
    /// arguments of its own.
    pub fn node_in_netns(
        &self,
        name: &str,
        netns: &str,
        listen: &str,
        extra: &[String],
    ) -> TestServer {
        let options = ServerOptions {
            node_id: Some(name.to_string()),
            args: [self.args.clone(), extra.to_vec()].concat(),
            netns: Some(netns.to_string()),
            listen: Some(listen.to_string()),
            env: vec![("EXTILITY_SECRET_KEY".into(), "5e".repeat(32))],
        };
        TestServer::spawn(&self.db, &self._dir.path().join(name), options)
    }

    /// Starts node `name`.
    pub fn node(&self, name: &str) -> TestServer {
        let options = ServerOptions {
            node_id: Some(name.to_string()),
            args: self.args.clone(),
            ..ServerOptions::default()
        };
        TestServer::spawn(&self.db, &self.data_dir, options)
    }
}

/// An error the JSON API answered with.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

/// A JSON API client for one customer.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub email: String,
    pub password: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, email: &str, password: &str) -> Api {
        Api {
            base: base.to_string(),
            email: email.to_string(),
            password: password.to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        }
    }

    /// Calls an operation; `Err` carries the API's error.
    pub async fn try_call(&self, op: &str, args: Value) -> Result<Value, ApiError> {
        let response = self
            .http
            .post(format!("{}/api/v1/{op}", self.base))
            .basic_auth(&self.email, Some(&self.password))
            .json(&args)
            .send()
            .await
            .expect("sending a request");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("a JSON body");
        if status == 200 {
            Ok(body)
        } else {
            Err(ApiError {
                status,
                code: body["error"]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                message: body["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            })
        }
    }

    /// Calls an operation that must succeed.
    pub async fn call(&self, op: &str, args: Value) -> Value {
        match self.try_call(op, args.clone()).await {
            Ok(v) => v,
            Err(e) => panic!("{op}({args}) failed: {e:?}"),
        }
    }

    /// Calls an operation that must fail, and returns its error.
    pub async fn fail(&self, op: &str, args: Value) -> ApiError {
        match self.try_call(op, args.clone()).await {
            Ok(v) => panic!("{op}({args}) should have failed, returned {v}"),
            Err(e) => e,
        }
    }

    /// Waits (server side) until the job has finished, and returns it.
    pub async fn wait_job(&self, job_id: i64) -> Value {
        for _ in 0..10 {
            let job = self
                .call(
                    "WaitForJob",
                    json!({"job_id": job_id, "timeout_seconds": 60}),
                )
                .await;
            let status = job["status"].as_i64().unwrap();
            if [1, 3, 4].contains(&status) {
                return job;
            }
        }
        panic!("job {job_id} did not finish in 10 minutes");
    }

    /// Waits for a job that must succeed.
    pub async fn job_ok(&self, job_id: i64) -> Value {
        let job = self.wait_job(job_id).await;
        assert_eq!(job["status"], 1, "job {job_id} did not succeed: {job}");
        job
    }

    /// Waits for a job that must fail, and returns its error code and message.
    pub async fn job_fails(&self, job_id: i64) -> (String, String) {
        let job = self.wait_job(job_id).await;
        assert_eq!(job["status"], 3, "job {job_id} should have failed: {job}");
        (
            job["error_code"].as_str().unwrap().to_string(),
            job["error_message"].as_str().unwrap().to_string(),
        )
    }

    /// Polls GetJob until `ready` says yes (at most a minute), and returns the job as it was.
    pub async fn job_until(&self, job_id: i64, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let job = self.call("GetJob", json!({"job_id": job_id})).await;
            if ready(&job) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id} never got there: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The integer `field` of an API answer.
pub fn id(value: &Value, field: &str) -> i64 {
    value[field]
        .as_i64()
        .unwrap_or_else(|| panic!("no {field} in {value}"))
}

/// The names of the files in a folder (none if it does not exist).
pub fn files_in(dir: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// Runs a PHP script from `tests/php/` with the given environment; returns its output and
/// fails the test if it exits non-zero.
pub fn run_php(script: &str, env: &[(&str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/php")
        .join(script);
    let out = Command::new("php")
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .expect("running php (install php-cli and php-soap: scripts/test.sh does)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Tests that keep the machine's cores busy for minutes (Linux guests under TCG) hold this
/// for reading; the one test that measures wall-clock time holds it for writing, so it never
/// measures them.
pub static CPU_HEAVY: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
