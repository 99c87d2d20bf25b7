//! Queuing a job from an operation: `ctx.enqueue(&mut tx, kind, name)`, with what else the
//! job carries said by name (`.item("disk", id)`, `.on_node(node)`, `.reserving(bytes)`,
//! `.in_vdc(id)`), awaited inside the operation's transaction. The kind's struct is the job's
//! only schema; what the quota and other domains must count across kinds goes into the job's
//! own columns here, never read back out of its parameters.

use std::future::{Future, IntoFuture};
use std::pin::Pin;

use crate::db::Tx;
use crate::error::ApiResult;
use crate::jobs::{JobKind, NewJob};
use crate::ops::Ctx;

/// A job about to be queued for the caller; awaiting it queues it and gives its id.
pub struct Enqueue<'a, K> {
    ctx: &'a Ctx,
    tx: &'a mut Tx,
    job: NewJob<K>,
}

impl Ctx {
    /// Queues `kind` for the caller, shown as `name`, in `tx` (see [`Enqueue`]).
    pub fn enqueue<'a, K: JobKind>(
        &'a self,
        tx: &'a mut Tx,
        kind: K,
        name: String,
    ) -> Enqueue<'a, K> {
        let job = NewJob::new(self.customer_id(), name, kind);
        Enqueue { ctx: self, tx, job }
    }
}

impl<K> Enqueue<'_, K> {
    /// What the job works on until it has a result of its own.
    pub fn item(mut self, item_type: &'static str, item_id: i64) -> Self {
        self.job.item_type = Some(item_type);
        self.job.item_id = Some(item_id);
        self
    }

    /// The type of what the job will make, before it exists.
    pub fn item_type(mut self, item_type: &'static str) -> Self {
        self.job.item_type = Some(item_type);
        self
    }

    /// The node that must run it.
    pub fn on_node(mut self, node: Option<String>) -> Self {
        self.job.target_node = node;
        self
    }

    /// The bytes of storage it will make: the quota counts them until its result is
    /// committed.
    pub fn reserving(mut self, bytes: i64) -> Self {
        self.job.reserved_bytes = bytes;
        self
    }

    /// The VDC it will make a disk in: DeleteVDC refuses while it is unfinished.
    pub fn in_vdc(mut self, vdc_id: i64) -> Self {
        self.job.vdc_id = Some(vdc_id);
        self
    }
}

impl<'a, K: JobKind> IntoFuture for Enqueue<'a, K> {
    type Output = ApiResult<i64>;
    type IntoFuture = Pin<Box<dyn Future<Output = ApiResult<i64>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.ctx.state.jobs.enqueue(self.tx, self.job).await })
    }
}
