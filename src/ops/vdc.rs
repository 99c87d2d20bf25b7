//! Virtual data centres.

use sqlx::AnyConnection;

use super::{Ctx, args, validate};
use crate::db::{Tx, now_ms};
use crate::error::{ApiError, ApiResult};
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

pub async fn list_vdcs(ctx: &Ctx, _: args::ListVDCs) -> ApiResult<Vec<Vdc>> {
    let rows: Vec<VdcRow> = sqlx::query_as(select_vdc!("v.customer_id = $1 ORDER BY v.id"))
        .bind(ctx.customer_id())
        .fetch_all(ctx.state.db.pool())
        .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

pub async fn create_vdc(ctx: &Ctx, a: args::CreateVDC) -> ApiResult<Vdc> {
    let name = validate::name("vdc_name", &a.vdc_name)?;
    let mut tx = ctx.state.db.begin_write().await?;
    let vdc = insert_vdc(&mut tx, ctx.customer_id(), &name).await?;
    tx.commit().await?;
    Ok(vdc)
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
