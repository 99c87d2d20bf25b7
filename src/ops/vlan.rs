//! VLANs inside a VDC.

use super::{Ctx, args, validate, vdc};
use crate::db::now_ms;
use crate::error::ApiResult;
use crate::wire_struct;

wire_struct! {
    /// A virtual LAN in a VDC; servers on the same VLAN share a network.
    pub struct Vlan as "Vlan" {
        pub vlan_id: i64,
        pub vlan_name: String,
        pub vlan_uuid: String,
        pub vdc_id: i64,
    }
}

pub async fn list_vlans(ctx: &Ctx, a: args::ListVLANs) -> ApiResult<Vec<Vlan>> {
    let mut conn = ctx.state.db.pool().acquire().await?;
    vdc::ensure_own(&mut conn, ctx.customer_id(), a.vdc_id).await?;
    let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
        "SELECT id, name, uuid, vdc_id FROM vlans WHERE vdc_id = $1 AND customer_id = $2 ORDER BY id",
    )
    .bind(a.vdc_id)
    .bind(ctx.customer_id())
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(vlan_id, vlan_name, vlan_uuid, vdc_id)| Vlan {
            vlan_id,
            vlan_name,
            vlan_uuid,
            vdc_id,
        })
        .collect())
}

pub async fn create_vlan(ctx: &Ctx, a: args::CreateVLAN) -> ApiResult<Vlan> {
    let name = validate::name("vlan_name", &a.vlan_name)?;
    let mut tx = ctx.state.db.begin_write().await?;
    vdc::ensure_own(&mut tx, ctx.customer_id(), a.vdc_id).await?;
    let uuid = uuid::Uuid::new_v4().to_string();
    let vlan_id: i64 = sqlx::query_scalar(
        "INSERT INTO vlans (uuid, customer_id, vdc_id, name, created) VALUES ($1, $2, $3, $4, $5) \
         RETURNING id",
    )
    .bind(&uuid)
    .bind(ctx.customer_id())
    .bind(a.vdc_id)
    .bind(&name)
    .bind(now_ms())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Vlan {
        vlan_id,
        vlan_name: name,
        vlan_uuid: uuid,
        vdc_id: a.vdc_id,
    })
}
