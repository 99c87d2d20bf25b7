//! FetchDisk: checks the request and queues the fetch job. The job itself (download,
//! decompression, verification, thin writing) is `crate::fetch`.

use serde_json::json;

use super::{Ctx, args, product_offer, validate, vdc};
use crate::error::ApiResult;
use crate::fetch::{self, Checksum, FetchSource};
use crate::jobs::{JobOutcome, JobQueue, NewJob, RunningJob};

pub async fn fetch_disk(ctx: &Ctx, a: args::FetchDisk) -> ApiResult<i64> {
    let name = validate::name("name", &a.name)?;
    let source = FetchSource::parse(&a.url, a.conn_user.as_deref(), a.conn_pass.as_deref())?;
    let checksum = Checksum::parse(a.checksum.as_deref())?;
    let default_username = match a.image_default_username.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(user) => Some(validate::name("image_default_username", user)?),
    };
    let mut tx = ctx.state.db.begin_write().await?;
    vdc::ensure_own(&mut tx, ctx.customer_id(), a.vdc_id).await?;
    let offer = product_offer::offer_of_kind(
        &mut tx,
        a.disk_productoffer_id,
        "disk",
        "disk_productoffer_id",
    )
    .await?;
    let what = if a.make_image { "image" } else { "disk" };
    let job_id = JobQueue::enqueue(
        &mut tx,
        NewJob {
            customer_id: ctx.customer_id(),
            job_type: "FetchDisk",
            name: format!("Fetch {what} \"{name}\" from {}", source.redacted()),
            item_type: Some(what),
            item_id: None,
            params: json!({
                "url": source.redacted(),
                "checksum": checksum.to_param(),
                "name": name,
                "disk_productoffer_id": offer.product_offer_id,
                "disk_size": offer.disk_size,
                "vdc_id": a.vdc_id,
                "make_image": a.make_image,
                "image_default_username": default_username,
            }),
            target_node: None,
        },
    )
    .await?;
    fetch::secrets::store(&mut tx, &ctx.state, job_id, &source).await?;
    tx.commit().await?;
    ctx.state.jobs.wake();
    Ok(job_id)
}

pub async fn run_job(job: &RunningJob) -> ApiResult<JobOutcome> {
    fetch::run(job).await
}
