//! The platform as its operator sees it: the nodes of a cluster (`node`), the gauges
//! `/metrics` reads from the database (`metrics`), and backups (`backup`, `rbd_backup`, and
//! `prune`, which removes old ones). Reads the other domains' tables and writes none of them;
//! uses only `core`.

pub mod backup;
pub mod metrics;
pub mod node;
pub mod prune;
pub mod rbd_backup;
