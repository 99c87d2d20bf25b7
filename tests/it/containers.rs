//! The `Dockerfile` and `docker-compose.yml` really built and started (issue 22, item 1), the
//! way README "Running in containers" says to without a registry: a Debian base image made
//! with `mmdebstrap` and `podman import` (kept in podman's store between runs), the server's
//! image built from the `Dockerfile` by `podman build --target prebuilt` on the binary this
//! test run built, PostgreSQL's from `containers/postgres`, and the stack started with
//! `podman-compose`. The stack serves `/?wsdl`, fetches a disk from an HTTP server on the
//! host, boots it (a real Linux guest) under QEMU in a node's container on a tenant network
//! whose DHCP gives it its address, and a node stopped with `podman stop` in the middle of a
//! fetch hands it to the other.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};

use crate::qemu_servers::{attach, start, wait_console};
use crate::support::Api;
use crate::support::catalogue::{BLANK_IMAGE, DISK_20GB, SERVER_1CPU_512MB};
use crate::support::fetch_disk::{fetch, fetch_args, md5_hex, sparse_image};
use crate::support::guest::guest_disk_with;
use crate::support::image_server::{ImageServer, Served};
use crate::tenant_networks::INIT;

/// The base image the Dockerfiles start `FROM` (podman finds `debian:bookworm-slim` under
/// `localhost/`).
const BASE_IMAGE: &str = "localhost/debian:bookworm-slim";
const NODE_IMAGE: &str = "localhost/extility:latest";
const POSTGRES_IMAGE: &str = "localhost/extility-postgres:15";
fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// podman's settings for this host: runc (crun refuses a hybrid cgroup v1 layout) and
/// ulimits under the host's own (podman's default of 1048576 open files is above them).
fn containers_conf() -> PathBuf {
    let path = std::env::temp_dir().join("extility-test-containers.conf");
    std::fs::write(
        &path,
        "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n\
         [engine]\nruntime = \"runc\"\n",
    )
    .unwrap();
    path
}

fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(repo())
        .env("CONTAINERS_CONF", containers_conf());
    for (name, value) in env {
        command.env(name, value);
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("running {program} {args:?}: {e}"))
}

/// Runs a command that must succeed; returns its standard output.
fn must(program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(program, args, env);
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Why podman cannot run containers here, if it cannot.
fn podman_impossible() -> Option<String> {
    match Command::new("podman").arg("--version").output() {
        Err(e) => {
            return Some(format!(
                "podman is not installed ({e}): scripts/test.sh installs it"
            ));
        }
        Ok(out) if !out.status.success() => return Some("podman --version fails".into()),
        Ok(_) => {}
    }
    if Command::new("podman-compose")
        .arg("version")
        .output()
        .is_err()
    {
        return Some("podman-compose is not installed: scripts/test.sh installs it".into());
    }
    let out = run("podman", &["info"], &[]);
    (!out.status.success()).then(|| {
        format!(
            "podman info fails: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// The Debian base image, from Debian's packages: made once, then found in podman's store.
fn ensure_base_image() {
    if run("podman", &["image", "exists", BASE_IMAGE], &[])
        .status
        .success()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tarball = dir.path().join("bookworm.tar");
    let tarball = tarball.to_str().unwrap();
    must(
        "mmdebstrap",
        &["--variant=minbase", "--quiet", "bookworm", tarball],
        &[],
    );
    must("podman", &["import", tarball, BASE_IMAGE], &[]);
    eprintln!("containers: made {BASE_IMAGE} with mmdebstrap");
}

/// The binary this test run built, as a path inside the build context (the repository).
fn binary_in_context() -> String {
    let binary = Path::new(env!("CARGO_BIN_EXE_extility"));
    binary
        .strip_prefix(repo())
        .unwrap_or_else(|_| {
            panic!(
                "{} is outside the repository: the Dockerfile's prebuilt stage copies it from \
                 the build context (unset CARGO_TARGET_DIR)",
                binary.display()
            )
        })
        .to_str()
        .unwrap()
        .to_string()
}

/// The two images, built side by side (both from the base image; the first build of each
/// spends its time downloading Debian's packages).
fn build_images() {
    let binary = format!("BINARY={}", binary_in_context());
    let (_, took) = timed(|| {
        std::thread::scope(|scope| {
            let postgres = scope.spawn(|| {
                must(
                    "podman",
                    &[
                        "build",
                        "--format",
                        "docker",
                        "-t",
                        POSTGRES_IMAGE,
                        "containers/postgres",
                    ],
                    &[],
                )
            });
            must(
                "podman",
                &[
                    "build",
                    "--format",
                    "docker",
                    "--target",
                    "prebuilt",
                    "--build-arg",
                    &binary,
                    "-t",
                    NODE_IMAGE,
                    ".",
                ],
                &[],
            );
            postgres.join().unwrap()
        })
    });
    eprintln!("containers: built {NODE_IMAGE} and {POSTGRES_IMAGE} in {took:?}");
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = std::time::Instant::now();
    let value = f();
    (value, start.elapsed())
}

/// A compose project started from `docker-compose.yml` and an override, taken down (with
/// its volumes and network) when dropped.
struct Stack {
    project: String,
    env: Vec<(&'static str, String)>,
    files: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Stack {
    fn compose(&self, args: &[&str]) -> Output {
        let mut all = vec!["-p", &self.project];
        for file in &self.files {
            all.extend(["-f", file.as_str()]);
        }
        all.extend(args);
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run("podman-compose", &all, &env)
    }

    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.project)
    }

    fn logs(&self, service: &str) -> String {
        let out = run("podman", &["logs", &self.container(service)], &[]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// The JSON log lines of a node.
    fn log_lines(&self, service: &str) -> Vec<Value> {
        self.logs(service)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The container's address on the stack's network (the host reaches it directly).
    fn address(&self, service: &str) -> String {
        must(
            "podman",
            &[
                "inspect",
                "--format",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                &self.container(service),
            ],
            &[],
        )
        .trim()
        .to_string()
    }

    fn exec(&self, service: &str, args: &[&str]) -> String {
        let container = self.container(service);
        let mut all = vec!["exec", container.as_str()];
        all.extend(args);
        must("podman", &all, &[])
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for service in ["postgres", "node1", "node2"] {
                eprintln!("---- {service} ----\n{}", self.logs(service));
            }
        }
        self.compose(&["down", "-v"]);
        run(
            "podman",
            &["network", "rm", "-f", &format!("{}_default", self.project)],
            &[],
        );
        for volume in ["postgres-data", "extility-data"] {
            run(
                "podman",
                &["volume", "rm", "-f", &format!("{}_{volume}", self.project)],
                &[],
            );
        }
    }
}

/// Starts the stack: the repository's compose file as it is, and an override with what only
/// this test needs (fetches from the host's address on the stack's network; a short job lease
/// so that a stopped node's job moves within seconds; QEMU under TCG).
fn start_stack(api_port: u16) -> (Stack, String) {
    let project = format!("extility-test-{}", std::process::id());
    let network = format!("{project}_default");
    // Made before `up` (podman-compose uses it as the default network) to know its gateway.
    run("podman", &["network", "rm", "-f", &network], &[]);
    must(
        "podman",
        &[
            "network",
            "create",
            "--label",
            &format!("io.podman.compose.project={project}"),
            &network,
        ],
        &[],
    );
    let gateway = must(
        "podman",
        &[
            "network",
            "inspect",
            "--format",
            "{{range .Subnets}}{{.Gateway}}{{end}}",
            &network,
        ],
        &[],
    )
    .trim()
    .to_string();
    assert!(!gateway.is_empty(), "no gateway on {network}");
    let dir = tempfile::tempdir().unwrap();
    let override_file = dir.path().join("test.override.yml");
    // TCG: KVM can hang a Linux guest on these nested hosts (tests/it/support/guest.rs).
    let node = format!(
        "    environment:\n      EXTILITY_ALLOW_FETCH_FROM: {gateway}/32\n      \
         EXTILITY_JOB_LEASE_SECONDS: \"3\"\n      EXTILITY_QEMU_ACCEL: tcg\n"
    );
    std::fs::write(
        &override_file,
        format!("services:\n  node1:\n{node}  node2:\n{node}"),
    )
    .unwrap();
    let stack = Stack {
        project,
        env: vec![
            ("POSTGRES_PASSWORD", "compose-test-pw".to_string()),
            ("EXTILITY_SECRET_KEY", "5e".repeat(32)),
            ("POSTGRES_IMAGE", POSTGRES_IMAGE.to_string()),
            ("EXTILITY_PORT", api_port.to_string()),
        ],
        files: vec![
            "docker-compose.yml".to_string(),
            override_file.to_str().unwrap().to_string(),
        ],
        _dir: dir,
    };
    let out = stack.compose(&["up", "-d", "--no-build"]);
    assert!(
        out.status.success(),
        "podman-compose up:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (stack, gateway)
}

/// A port free on the host for the published API (`EXTILITY_PORT`).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `url/?wsdl` answers with the WSDL (the nodes start once PostgreSQL is up).
async fn wait_for_wsdl(url: &str, what: &str) {
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        match client
            .get(format!("{url}/?wsdl"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => {
                let wsdl = response.text().await.unwrap();
                assert!(wsdl.contains("definitions"), "{what}: {wsdl}");
                return;
            }
            Ok(response) => last = format!("HTTP {}", response.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("timed out waiting for {what}; last seen: {last}");
}

/// The node whose log says it started job `job_id`.
fn runs_job(lines: &[Value], job_id: i64) -> bool {
    lines
        .iter()
        .any(|l| l["message"] == "job started" && l["job_id"] == job_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compose_stack_starts_serves_fetches_and_fails_over() {
    if let Some(why) = podman_impossible() {
        eprintln!("SKIPPED: containers cannot run here: {why}");
        return;
    }
    tokio::task::spawn_blocking(|| {
        ensure_base_image();
        build_images();
    })
    .await
    .unwrap();
    let api_port = free_port();
    let (stack, gateway) = tokio::task::spawn_blocking(move || start_stack(api_port))
        .await
        .unwrap();
    let node1 = format!("http://127.0.0.1:{api_port}");
    wait_for_wsdl(&node1, "node1's /?wsdl on the published port").await;
    let node2 = format!("http://{}:8080", stack.address("node2"));
    wait_for_wsdl(&node2, "node2's /?wsdl on its address").await;
    // What each node chose inside its container (hypervisor, acceleration, network), for
    // whoever reads the output.
    for service in ["node1", "node2"] {
        for line in stack.log_lines(service).iter().filter(|l| {
            l["level"] == "WARN"
                || l["message"] == "serving"
                || l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("hypervisor"))
        }) {
            eprintln!("containers: {service}: {line}");
        }
    }

    let added = stack.exec(
        "node1",
        &[
            "extility",
            "customer",
            "add",
            "--email",
            "ops@example.com",
            "--password",
            "ops-password-1",
        ],
    );
    let vdc: i64 = added
        .lines()
        .find_map(|l| l.strip_prefix("vdc_id="))
        .unwrap_or_else(|| panic!("customer add printed no vdc_id: {added}"))
        .trim()
        .parse()
        .unwrap();
    let via_node1 = Api::new(&node1, "ops@example.com", "ops-password-1");
    let via_node2 = Api::new(&node2, "ops@example.com", "ops-password-1");

    // FetchDisk from an HTTP server on the host, at its address on the stack's network: a
    // real Linux guest that prints the address DHCP gave it and reads its metadata.
    let images = ImageServer::start_on(&format!("{gateway}:0")).await;
    let scratch = tempfile::tempdir().unwrap();
    let image = std::fs::read(guest_disk_with(scratch.path(), INIT, "quiet")).unwrap();
    let url = images.put_data("guest.img", image.clone());
    let mut args = fetch_args(&url, vdc, "fetched");
    args["checksum"] = json!(md5_hex(&image));
    let job_id = fetch(&via_node1, args).await;
    let job = via_node1.job_ok(job_id).await;
    assert_eq!(job["item_type"], "disk", "{job}");
    let disks = via_node2.call("ListDisks", json!({"vdc_id": vdc})).await;
    assert_eq!(disks.as_array().unwrap().len(), 1, "{disks}");

    // QEMU in a node's container boots it on a tenant network: the node's bridge, tap,
    // nftables tables and dnsmasq in its container's network namespace.
    let lan = via_node1
        .call("CreateVLAN", json!({"vdc_id": vdc, "vlan_name": "lan"}))
        .await;
    let server = via_node1
        .call(
            "CreateServer",
            json!({"vdc_id": vdc, "vlan_id": lan["vlan_id"], "server_name": "in-a-container",
                   "image_id": BLANK_IMAGE, "server_productoffer_id": SERVER_1CPU_512MB,
                   "disk_productoffer_ids": [DISK_20GB]}),
        )
        .await;
    let server_id = server["server_id"].as_i64().unwrap();
    attach(&via_node1, server_id, &disks[0], Some(0)).await;
    start(&via_node1, server_id).await;
    let address = server["ip_address"].as_str().unwrap();
    let console = wait_console(&via_node2, server_id, "METADATA").await;
    let said: Vec<&str> = console
        .lines()
        .skip_while(|l| !l.contains("GUEST INIT"))
        .collect();
    eprintln!("containers: the guest said:\n{}", said.join("\n"));
    assert!(
        console
            .lines()
            .any(|l| l.trim_end() == format!("ADDR {address}")),
        "the guest got {address} by DHCP: {console}"
    );
    assert!(
        console.contains("METADATA in-a-container "),
        "the guest read its metadata: {console}"
    );
    let tap = format!("extap{server_id}");
    let with_tap: Vec<&str> = ["node1", "node2"]
        .into_iter()
        .filter(|node| stack.exec(node, &["ip", "-br", "link"]).contains(&tap))
        .collect();
    assert_eq!(with_tap.len(), 1, "the VM's tap is on the node running it");
    let ruleset = stack.exec(with_tap[0], &["nft", "list", "tables"]);
    assert!(ruleset.contains("extility"), "{ruleset}");

    // A slow fetch; the node running it is stopped with `podman stop` and the other one
    // takes it over once its lease has run out.
    let (slow, _) = sparse_image(6 << 20, 2, 23);
    images.put(
        "slow.img",
        Served {
            data: slow.clone().into(),
            pace: Some((128 << 10, Duration::from_millis(40))),
            ..Default::default()
        },
    );
    let mut args = fetch_args(&images.url("slow.img"), vdc, "moved");
    args["checksum"] = json!(md5_hex(&slow));
    let job_id = fetch(&via_node1, args).await;
    via_node1.job_until(job_id, |j| j["bytes_done"] != 0).await;
    let running = ["node1", "node2"]
        .into_iter()
        .find(|s| runs_job(&stack.log_lines(s), job_id))
        .expect("a node logged the job's start");
    let (survivor, via_survivor) = if running == "node1" {
        ("node2", &via_node2)
    } else {
        ("node1", &via_node1)
    };
    eprintln!("containers: job {job_id} runs on {running}; podman stop {running}");
    must("podman", &["stop", &stack.container(running)], &[]);
    let job = via_survivor.job_ok(job_id).await;
    assert_eq!(job["item_type"], "disk", "{job}");
    assert!(
        runs_job(&stack.log_lines(survivor), job_id),
        "{survivor} ran job {job_id} after {running} stopped"
    );
    let attempts = stack.exec(
        "postgres",
        &[
            "psql",
            "-U",
            "extility",
            "-d",
            "extility",
            "-tAc",
            &format!("SELECT attempts FROM jobs WHERE id = {job_id}"),
        ],
    );
    assert_eq!(
        attempts.trim(),
        "2",
        "claimed by {running}, then by {survivor}"
    );
    let disks = via_survivor.call("ListDisks", json!({"vdc_id": vdc})).await;
    let moved: Vec<&Value> = disks
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["disk_name"] == "moved")
        .collect();
    assert_eq!(
        moved.len(),
        1,
        "exactly one disk of the moved fetch: {disks}"
    );
    tokio::task::spawn_blocking(move || drop(stack))
        .await
        .unwrap();
}
