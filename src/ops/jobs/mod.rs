//! Jobs as customers see them, and the fetches they run. Uses `core`, `accounts` and
//! `storage` (a fetch makes a disk or an image).
//!
//! Owns: GetJob, ListJobs, CancelJob, WaitForJob and the wiring of the worker pool (`job`),
//! and FetchDisk with its job kind (`fetch`). The `jobs` table itself is written by the job
//! engine (`crate::jobs`), through `ops::enqueue` when an operation queues a job.

pub mod fetch;
pub mod job;
