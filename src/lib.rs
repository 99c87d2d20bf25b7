//! Extility: a server implementing the Extility cloud control API.
//!
//! Layers, each depending only on those below it (ARCHITECTURE.md has the whole map):
//! `api` holds the thin SOAP and JSON adapters; `ops` is the operation layer (one function per
//! API call, and the kinds of job); `jobs` runs long work from a queue kept in the database,
//! `fetch` is the image writer, `storage` and `hypervisor` are the traits behind disks and
//! virtual machines; `db`, `sparse` (the thin writer shared with the tool-chain), `progress`,
//! `metrics` and `error` are the bottom. `tools` is the tool-chain (`sparsecopy` and `fsmaker`, whose binaries
//! are in `src/bin/`).

pub mod api;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod fetch;
pub mod hygiene;
pub mod hypervisor;
pub mod jobs;
pub mod metrics;
pub mod network;
pub mod ops;
pub mod progress;
pub mod qemu_img;
pub mod size;
pub mod sparse;
pub mod startup;
pub mod storage;
pub mod tools;
