//! The image writer: fetches a disk image from a URL and writes it thinly into a new disk or
//! image.

pub mod secrets;
mod source;

pub use source::{Checksum, FetchSource};

use crate::error::{ApiError, ApiResult};
use crate::jobs::{JobOutcome, RunningJob};

/// Runs a FetchDisk job.
pub async fn run(job: &RunningJob) -> ApiResult<JobOutcome> {
    let _ = job;
    Err(ApiError::FetchFailed(
        "fetching is not implemented yet".into(),
    ))
}
