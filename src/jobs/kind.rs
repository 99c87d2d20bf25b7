//! What a kind of job is: a name, a parameter struct and the code that runs it.
//!
//! A job kind is one serde struct implementing [`JobKind`]. The struct is the only schema of
//! the job's parameters: the operation that queues the job fills it in
//! ([`super::JobQueue::enqueue`] stores it as JSON in `jobs.params`), and the worker that runs
//! the job gets it back, typed, as `self` of [`JobKind::run`]. Kinds are listed once, with
//! [`job_kinds!`], the way operations are listed with `operations!`; the worker finds a job's
//! code in that list by the name stored with the job, and nothing else names a kind.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::worker::RunningJob;
use crate::error::{ApiError, ApiResult};

/// The class of concurrency slot a job takes while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Held to no limit but the node's worker count.
    Any,
    /// A transfer from outside (a fetch): held to `--max-fetches` across all nodes and
    /// `--max-fetches-per-customer`; jobs beyond them wait (status 7).
    Transfer,
}

impl Slot {
    /// What `jobs.slot` holds.
    pub fn column(self) -> Option<&'static str> {
        match self {
            Slot::Any => None,
            Slot::Transfer => Some(TRANSFER_SLOT),
        }
    }
}

/// `jobs.slot` of [`Slot::Transfer`] jobs.
pub(crate) const TRANSFER_SLOT: &str = "transfer";

/// Which of a node's worker pools runs a job. Each lane has its own workers, so long work
/// (however many customers queue of it, however slowly a remote server sends) never takes the
/// workers that quick jobs (starting and stopping servers) need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Jobs that take seconds: server power.
    Quick,
    /// Jobs that may take hours: fetches, image copies.
    Long,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Quick, Lane::Long];

    /// What `jobs.lane` holds.
    pub fn column(self) -> &'static str {
        match self {
            Lane::Quick => "quick",
            Lane::Long => "long",
        }
    }
}

/// What a finished job produced (or works on), recorded as its item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobOutcome {
    pub item_type: Option<&'static str>,
    pub item_id: Option<i64>,
}

impl JobOutcome {
    pub fn item(item_type: &'static str, item_id: i64) -> Self {
        JobOutcome {
            item_type: Some(item_type),
            item_id: Some(item_id),
        }
    }
}

/// A kind of job. `Context` is what its code works with (the application state), so that the
/// job system below the operation layer knows nothing of it.
pub trait JobKind: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Stored in `jobs.job_type` and shown as GetJob's `job_type` (the operation's name).
    const NAME: &'static str;
    const LANE: Lane;
    const SLOT: Slot = Slot::Any;
    type Context: Send + Sync + 'static;

    /// Does the work. Whatever it makes visible must be written in
    /// [`RunningJob::begin_commit`]'s transaction and committed with [`RunningJob::commit`],
    /// so that an attempt whose lease was taken over cannot commit anything.
    fn run(
        self,
        job: &RunningJob<Self::Context>,
    ) -> impl Future<Output = ApiResult<JobOutcome>> + Send;

    /// Runs once the job has ended without success (failed, interrupted too often, cancelled)
    /// and before its end is recorded: whatever `run` left half-way that must tell the truth
    /// and allow a retry (a server left "starting") is settled here. `reason` is the error's
    /// public message. Also when `run` never ran (an attempt given up after too many
    /// interruptions). Writes go through [`RunningJob::begin_fenced`]. Nothing by default.
    fn ended_unsuccessfully(
        self,
        job: &RunningJob<Self::Context>,
        reason: &str,
    ) -> impl Future<Output = ()> + Send {
        let _ = (job, reason);
        std::future::ready(())
    }
}

/// One entry of the list of kinds: the name a job is stored under and how to run it.
pub struct KindEntry<C: 'static> {
    pub name: &'static str,
    pub run: fn(Arc<RunningJob<C>>) -> BoxFuture<'static, ApiResult<JobOutcome>>,
    /// [`JobKind::ended_unsuccessfully`], with the reason.
    pub ended_unsuccessfully: fn(Arc<RunningJob<C>>, String) -> BoxFuture<'static, ()>,
}

/// Decodes a job's parameters as kind `K` and runs it: what [`job_kinds!`] lists.
pub fn entry<K: JobKind>() -> KindEntry<K::Context> {
    KindEntry {
        name: K::NAME,
        run: |job| {
            Box::pin(async move {
                let params: K = serde_json::from_str(&job.row.params).map_err(|e| {
                    ApiError::internal(anyhow::anyhow!(
                        "job {} has parameters that are not a {}: {e}",
                        job.row.id,
                        K::NAME
                    ))
                })?;
                params.run(&job).await
            })
        },
        ended_unsuccessfully: |job, reason| {
            Box::pin(async move {
                // Parameters that do not decode made `run` fail before it did anything.
                if let Ok(params) = serde_json::from_str::<K>(&job.row.params) {
                    params.ended_unsuccessfully(&job, &reason).await;
                }
            })
        },
    }
}

/// Lists the job kinds: `job_kinds!(pub static JOB_KINDS: Context = [KindA, KindB]);`
#[macro_export]
macro_rules! job_kinds {
    ($vis:vis static $name:ident : $ctx:ty = [$($kind:ty),* $(,)?]) => {
        $vis static $name: std::sync::LazyLock<Vec<$crate::jobs::KindEntry<$ctx>>> =
            std::sync::LazyLock::new(|| vec![$($crate::jobs::kind::entry::<$kind>()),*]);
    };
}

/// The entry for a stored job type, if it is one of `kinds`.
pub fn find<'a, C>(kinds: &'a [KindEntry<C>], name: &str) -> Option<&'a KindEntry<C>> {
    kinds.iter().find(|k| k.name == name)
}
