//! `docker-compose.yml` and the `Dockerfile` (issue 14), checked as CI can without a
//! registry: `docker-compose config` (Debian's docker-compose 1.29, which validates without a
//! daemon) accepts the file with its two secrets set and refuses it without them, and the
//! resolved file is what the book promises: PostgreSQL with a health check and a volume, two
//! nodes that wait for it, share it and one secret key, and one published API port.
//! `containers.rs` builds the images and starts the stack.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn compose_config(env: &[(&str, &str)]) -> Output {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new("docker-compose");
    command
        .current_dir(repo)
        .args(["-f", "docker-compose.yml", "config"])
        .env_remove("POSTGRES_PASSWORD")
        .env_remove("EXTILITY_SECRET_KEY")
        .env_remove("POSTGRES_IMAGE")
        .env_remove("EXTILITY_PORT");
    for (name, value) in env {
        command.env(name, value);
    }
    command
        .output()
        .expect("running docker-compose (scripts/test.sh installs Debian's docker-compose)")
}

/// YAML as JSON, by the YAML library docker-compose itself uses (Debian's python3-yaml).
fn yaml_to_json(yaml: &[u8]) -> Value {
    let mut child = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(yaml).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_compose_file_is_valid_and_runs_postgres_and_two_nodes() {
    let key = "ab".repeat(32);
    let out = compose_config(&[
        ("POSTGRES_PASSWORD", "pw-123"),
        ("EXTILITY_SECRET_KEY", &key),
    ]);
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = yaml_to_json(&out.stdout);
    let services = &config["services"];
    let postgres = &services["postgres"];
    assert!(
        postgres["healthcheck"]["test"]
            .to_string()
            .contains("pg_isready"),
        "{postgres}"
    );
    assert!(
        postgres["volumes"]
            .to_string()
            .contains("/var/lib/postgresql/data"),
        "{postgres}"
    );
    let mut node_ids = Vec::new();
    for name in ["node1", "node2"] {
        let node = &services[name];
        assert_eq!(
            node["depends_on"]["postgres"]["condition"], "service_healthy",
            "{name} waits for PostgreSQL"
        );
        let env = &node["environment"];
        assert_eq!(env["EXTILITY_SECRET_KEY"], key.as_str(), "{name}: one key");
        assert_eq!(
            env["DATABASE_URL"], "postgres://extility:pw-123@postgres:5432/extility",
            "{name} shares the database"
        );
        assert!(
            node["build"]["context"].is_string(),
            "{name} is built here: {node}"
        );
        assert!(
            node["volumes"].to_string().contains("/var/lib/extility"),
            "{node}"
        );
        node_ids.push(env["EXTILITY_NODE_ID"].as_str().unwrap().to_string());
    }
    assert_ne!(node_ids[0], node_ids[1], "each node has its own id");
    let published: Vec<&Value> = services
        .as_object()
        .unwrap()
        .values()
        .filter(|s| s.get("ports").is_some())
        .collect();
    assert_eq!(published.len(), 1, "the API on one port: {services}");
    assert!(published[0]["ports"].to_string().contains("8080"));
}

#[test]
fn the_compose_file_refuses_to_run_without_its_secrets() {
    let out = compose_config(&[]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("POSTGRES_PASSWORD") || said.contains("EXTILITY_SECRET_KEY"),
        "{said}"
    );
}

#[test]
fn the_image_is_built_from_the_sources_or_a_host_binary_and_runs_on_debian_with_qemu() {
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    // The runtime, the host's binary on it (`--target prebuilt`, before the build stage so
    // that a builder without BuildKit stops there), the cargo build, and the default target.
    assert_eq!(
        stages,
        [
            "FROM debian:bookworm-slim AS runtime",
            "FROM runtime AS prebuilt",
            "FROM rust:1-bookworm AS build",
            "FROM runtime",
        ]
    );
    assert!(dockerfile.contains("cargo build --release --locked"));
    assert!(dockerfile.contains("COPY --from=build /usr/local/bin/extility"));
    for package in [
        "qemu-system-x86",
        "qemu-utils",
        "qemu-block-extra",
        "ceph-common",
    ] {
        assert!(dockerfile.contains(package), "{package}");
    }
}

#[test]
fn postgres_is_the_official_image_unless_postgres_image_names_another() {
    let key = "ab".repeat(32);
    let secrets = [
        ("POSTGRES_PASSWORD", "pw-123"),
        ("EXTILITY_SECRET_KEY", key.as_str()),
    ];
    let image = |extra: &[(&str, &str)]| {
        let env: Vec<(&str, &str)> = secrets.iter().chain(extra).copied().collect();
        let out = compose_config(&env);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        yaml_to_json(&out.stdout)["services"]["postgres"]["image"].clone()
    };
    assert_eq!(image(&[]), "postgres:15");
    assert_eq!(
        image(&[("POSTGRES_IMAGE", "localhost/extility-postgres:15")]),
        "localhost/extility-postgres:15"
    );
}
