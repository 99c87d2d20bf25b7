//! Nodes built in the test's own process (`Application::build`, never run): no workers, no
//! listener serving, so a test drives the job system or the operation layer itself.

use std::path::Path;

use clap::Parser;
use extility::config::{Cli, Command};
use extility::startup::Application;

use super::TestDatabase;

/// A node on `db` with its files in `data_dir`, named `node_id`, with `extra` arguments of
/// `serve`; it runs no workers and serves nothing (the test drives it).
pub async fn in_process_node(
    db: &TestDatabase,
    data_dir: &Path,
    node_id: &str,
    extra: &[&str],
) -> Application {
    let data_dir = data_dir.to_str().unwrap();
    let mut args = vec![
        "extility",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_dir,
        "--database-url",
        &db.url,
        "--hypervisor",
        "none",
        "--node-id",
        node_id,
        // Tests share the host's network namespace: no bridges or firewall rules of theirs.
        "--network",
        "user",
    ];
    args.extend_from_slice(extra);
    let Command::Serve(config) = Cli::try_parse_from(args).unwrap().command else {
        unreachable!("parsed a serve command")
    };
    Application::build(*config).await.unwrap()
}
