//! Extility: a server implementing the Extility cloud control API.
//!
//! Layout: `ops` is the operation layer (one function per API call); `api` holds the thin
//! SOAP and JSON adapters over it; `jobs` runs long work from a queue kept in the database;
//! `storage` and `hypervisor` are the traits behind disks and virtual machines; `fetch` is the
//! image writer; `sparse` is the thin writer shared with the tool-chain; `tools` is that
//! tool-chain (`sparsecopy` and `fsmaker`, whose binaries are in `src/bin/`).

pub mod api;
pub mod config;
pub mod db;
pub mod error;
pub mod fetch;
pub mod hypervisor;
pub mod jobs;
pub mod ops;
pub mod progress;
pub mod sparse;
pub mod startup;
pub mod state;
pub mod storage;
pub mod tools;
