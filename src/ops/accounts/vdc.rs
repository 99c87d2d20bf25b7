//! Virtual data centres.

use sqlx::AnyConnection;

use crate::db::{Backend, Tx, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::jobs::JobStatus;
use crate::ops::{Ctx, args, page, validate};
use crate::wire_struct;

wire_struct! {
    /// A virtual data centre: the customer's container for VLANs, disks and servers.
    pub struct Vdc as "VDC" {
        pub vdc_id: i64,
        pub vdc_name: String,
        pub vdc_uuid: String,
        pub number_of_vlans: i64,
        pub number_of_disks: i64,
        pub number_of_servers: i64,
    }
}

type VdcRow = (i64, String, String, i64, i64, i64);

fn from_row((vdc_id, vdc_name, vdc_uuid, vlans, disks, servers): VdcRow) -> Vdc {
    Vdc {
        vdc_id,
        vdc_name,
        vdc_uuid,
        number_of_vlans: vlans,
        number_of_disks: disks,
        number_of_servers: servers,
    }
}

macro_rules! select_vdc {
    ($where:literal) => {
        concat!(
            "SELECT v.id, v.name, v.uuid, \
             (SELECT COUNT(*) FROM vlans WHERE vdc_id = v.id), \
             (SELECT COUNT(*) FROM disks WHERE vdc_id = v.id), \
             (SELECT COUNT(*) FROM servers WHERE vdc_id = v.id) \
             FROM vdcs v WHERE ",
            $where
        )
    };
}

pub async fn list_vdcs(ctx: &Ctx, a: args::ListVDCs) -> ApiResult<Vec<Vdc>> {
    let page = page::ascending(a.page_size, a.after_id)?;
    let rows: Vec<VdcRow> = sqlx::query_as(select_vdc!(
        "v.customer_id = $1 AND v.id > $2 ORDER BY v.id LIMIT $3"
    ))
    .bind(ctx.customer_id())
    .bind(page.cursor)
    .bind(page.limit)
    .fetch_all(ctx.state.db.pool())
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

pub async fn create_vdc(ctx: &Ctx, a: args::CreateVDC) -> ApiResult<Vdc> {
    let name = validate::name("vdc_name", &a.vdc_name)?;
    let mut tx = ctx.begin_write().await?;
    let vdc = insert_vdc(&mut tx, ctx.customer_id(), &name).await?;
    tx.commit().await?;
    Ok(vdc)
}

/// Deletes a VDC that holds nothing: no server, disk or VLAN, and no FetchDisk still to make a
/// disk in it. Otherwise CONFLICT, naming what is left.
pub async fn delete_vdc(ctx: &Ctx, a: args::DeleteVDC) -> ApiResult<i64> {
    let customer_id = ctx.customer_id();
    let mut tx = ctx.begin_write().await?;
    // Locked, so that on PostgreSQL what is made in the VDC meanwhile (which names the row)
    // either was committed before and is counted, or waits and then finds no VDC. (SQLite
    // write transactions hold the database lock anyway.)
    let lock = match ctx.state.db.backend() {
        Backend::Postgres => "SELECT id FROM vdcs WHERE id = $1 AND customer_id = $2 FOR UPDATE",
        Backend::Sqlite => "SELECT id FROM vdcs WHERE id = $1 AND customer_id = $2",
    };
    let found: Option<i64> = sqlx::query_scalar(lock)
        .bind(a.vdc_id)
        .bind(customer_id)
        .fetch_optional(&mut *tx)
        .await?;
    if found.is_none() {
        return Err(ApiError::not_found("VDC", a.vdc_id));
    }
    let (servers, disks, vlans, templates): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM servers WHERE vdc_id = $1), \
                (SELECT COUNT(*) FROM disks WHERE vdc_id = $1), \
                (SELECT COUNT(*) FROM vlans WHERE vdc_id = $1), \
                (SELECT COUNT(*) FROM firewall_templates WHERE vdc_id = $1)",
    )
    .bind(a.vdc_id)
    .fetch_one(&mut *tx)
    .await?;
    let fetches = fetches_into(&mut tx, customer_id, a.vdc_id).await?;
    let left: Vec<String> = [
        (servers, "server"),
        (disks, "disk"),
        (vlans, "VLAN"),
        (templates, "firewall template"),
        (fetches, "unfinished FetchDisk job"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}{}", if n == 1 { "" } else { "s" }))
    .collect();
    if !left.is_empty() {
        return Err(ApiError::Conflict(format!(
            "VDC {} still holds {}; delete them first",
            a.vdc_id,
            left.join(", ")
        )));
    }
    sqlx::query("DELETE FROM vdcs WHERE id = $1")
        .bind(a.vdc_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(1)
}

/// The customer's unfinished jobs that will make a disk in the VDC (FetchDisk's, written in
/// `jobs.vdc_id` when queued).
async fn fetches_into(conn: &mut AnyConnection, customer_id: i64, vdc_id: i64) -> ApiResult<i64> {
    let [a, b, c] = JobStatus::UNFINISHED.map(JobStatus::code);
    let count = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE customer_id = $1 AND vdc_id = $2 \
         AND status IN ($3, $4, $5) AND result_committed = 0",
    )
    .bind(customer_id)
    .bind(vdc_id)
    .bind(a)
    .bind(b)
    .bind(c)
    .fetch_one(conn)
    .await?;
    Ok(count)
}

pub async fn insert_vdc(tx: &mut Tx, customer_id: i64, name: &str) -> ApiResult<Vdc> {
    let uuid = uuid::Uuid::new_v4().to_string();
    let vdc_id: i64 = sqlx::query_scalar(
        "INSERT INTO vdcs (uuid, customer_id, name, created) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(&uuid)
    .bind(customer_id)
    .bind(name)
    .bind(now_ms())
    .fetch_one(&mut **tx)
    .await?;
    Ok(Vdc {
        vdc_id,
        vdc_name: name.to_string(),
        vdc_uuid: uuid,
        number_of_vlans: 0,
        number_of_disks: 0,
        number_of_servers: 0,
    })
}

/// Fails with NOT_FOUND unless the VDC exists and belongs to the customer.
pub async fn ensure_own(conn: &mut AnyConnection, customer_id: i64, vdc_id: i64) -> ApiResult<()> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT id FROM vdcs WHERE id = $1 AND customer_id = $2")
            .bind(vdc_id)
            .bind(customer_id)
            .fetch_optional(conn)
            .await?;
    found.map(|_| ()).ok_or(ApiError::not_found("VDC", vdc_id))
}
