//! Nodes built in the test's own process (`Application::build`, never run): no workers, no
//! listener serving, so a test drives the job system or the operation layer itself.

use std::path::Path;

use clap::Parser;
use extility::config::{Cli, Command};
use extility::startup::Application;

use super::TestDatabase;

/// A node on `db` with its files in `data_dir`; it runs no workers (the test claims).
pub async fn in_process_node(db: &TestDatabase, data_dir: &Path, node_id: &str) -> Application {
    let data_dir = data_dir.to_str().unwrap();
    let cli = Cli::try_parse_from([
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
    ])
    .unwrap();
    let Command::Serve(config) = cli.command else {
        unreachable!("parsed a serve command")
    };
    Application::build(*config).await.unwrap()
}
