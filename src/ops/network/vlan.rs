//! VLANs inside a VDC: each an isolated network with a subnet of its own, cut from the pool
//! (`--vlan-subnets`, `--vlan-prefix`) when it is made. This module is the only one that
//! writes `vlans`.

use ipnet::Ipv4Net;
use sqlx::AnyConnection;

use crate::db::{Backend, is_unique_violation, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::network::addresses;
use crate::ops::accounts::quota::{self, Need};
use crate::ops::state::AppState;
use crate::ops::{Ctx, accounts::vdc, args, page, validate};
use crate::wire_struct;

wire_struct! {
    /// A virtual LAN in a VDC: servers on it reach each other and nothing of other VLANs.
    /// `subnet` is its IPv4 network (`10.64.3.0/24`), `gateway` the address of its router,
    /// DHCP and DNS server (and the way to 169.254.169.254, the metadata service).
    pub struct Vlan as "Vlan" {
        pub vlan_id: i64,
        pub vlan_name: String,
        pub vlan_uuid: String,
        pub vdc_id: i64,
        #[since(2)]
        pub subnet: Option<String>,
        #[since(2)]
        pub gateway: Option<String>,
    }
}

type VlanRow = (i64, String, String, i64, Option<String>);

fn to_vlan((vlan_id, vlan_name, vlan_uuid, vdc_id, subnet): VlanRow) -> Vlan {
    let gateway = subnet
        .as_deref()
        .and_then(|s| s.parse::<Ipv4Net>().ok())
        .map(|net| addresses::gateway(net).to_string());
    Vlan {
        vlan_id,
        vlan_name,
        vlan_uuid,
        vdc_id,
        subnet,
        gateway,
    }
}

pub async fn list_vlans(ctx: &Ctx, a: args::ListVLANs) -> ApiResult<Vec<Vlan>> {
    let page = page::ascending(a.page_size, a.after_id)?;
    let mut conn = ctx.state.db.pool().acquire().await?;
    vdc::ensure_own(&mut conn, ctx.customer_id(), a.vdc_id).await?;
    let rows: Vec<VlanRow> = sqlx::query_as(
        "SELECT id, name, uuid, vdc_id, subnet FROM vlans WHERE vdc_id = $1 AND customer_id = $2 \
         AND id > $3 ORDER BY id LIMIT $4",
    )
    .bind(a.vdc_id)
    .bind(ctx.customer_id())
    .bind(page.cursor)
    .bind(page.limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(to_vlan).collect())
}

/// Tries this many times when another node took the same subnet at the same moment.
const SUBNET_ATTEMPTS: usize = 8;

pub async fn create_vlan(ctx: &Ctx, a: args::CreateVLAN) -> ApiResult<Vlan> {
    let name = validate::name("vlan_name", &a.vlan_name)?;
    for _ in 0..SUBNET_ATTEMPTS {
        let mut tx = ctx.begin_write().await?;
        vdc::ensure_own(&mut tx, ctx.customer_id(), a.vdc_id).await?;
        let subnet = free_subnet(&mut tx, &ctx.state).await?;
        // After the subnets' lock (as a server's creation takes them), the customer's last.
        quota::ensure_room(&mut tx, &ctx.state, ctx.customer_id(), Need::vlans(1)).await?;
        let uuid = uuid::Uuid::new_v4().to_string();
        let inserted = sqlx::query_scalar::<_, i64>(
            "INSERT INTO vlans (uuid, customer_id, vdc_id, name, subnet, created) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(&uuid)
        .bind(ctx.customer_id())
        .bind(a.vdc_id)
        .bind(&name)
        .bind(subnet.to_string())
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await;
        match inserted {
            Ok(vlan_id) => {
                tx.commit().await?;
                return Ok(to_vlan((
                    vlan_id,
                    name,
                    uuid,
                    a.vdc_id,
                    Some(subnet.to_string()),
                )));
            }
            Err(err) if is_unique_violation(&err) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(ApiError::Conflict(
        "VLAN subnets are being taken too fast; try again".into(),
    ))
}

/// Deletes a VLAN no server is on. Returns 1.
pub async fn delete_vlan(ctx: &Ctx, a: args::DeleteVLAN) -> ApiResult<i64> {
    let mut tx = ctx.begin_write().await?;
    let found: Option<i64> =
        sqlx::query_scalar("SELECT id FROM vlans WHERE id = $1 AND customer_id = $2")
            .bind(a.vlan_id)
            .bind(ctx.customer_id())
            .fetch_optional(&mut *tx)
            .await?;
    if found.is_none() {
        return Err(ApiError::not_found("VLAN", a.vlan_id));
    }
    let servers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM servers WHERE vlan_id = $1")
        .bind(a.vlan_id)
        .fetch_one(&mut *tx)
        .await?;
    if servers > 0 {
        return Err(ApiError::Conflict(format!(
            "VLAN {} has {servers} server(s) on it; destroy them first",
            a.vlan_id
        )));
    }
    sqlx::query("DELETE FROM vlans WHERE id = $1")
        .bind(a.vlan_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(1)
}

/// Taken by whoever cuts a subnet from the pool, until its transaction ends (PostgreSQL; SQLite's
/// write transactions take turns anyway): two nodes cutting at once, even with different
/// `--vlan-prefix`es, cannot cut overlapping subnets (the unique index only sees equal ones).
/// (The key is arbitrary; no other lock of the crate uses it.)
const SUBNET_LOCK: i64 = 0x5642_4e45_5453;

/// The first subnet of the pool that overlaps no VLAN's.
async fn free_subnet(conn: &mut AnyConnection, state: &AppState) -> ApiResult<Ipv4Net> {
    if state.db.backend() == Backend::Postgres {
        // Counted, so that the row has a type both engines' drivers decode (not `void`).
        sqlx::query("SELECT COUNT(*) FROM (SELECT pg_advisory_xact_lock($1)) AS l")
            .bind(SUBNET_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    let taken: Vec<String> =
        sqlx::query_scalar("SELECT subnet FROM vlans WHERE subnet IS NOT NULL")
            .fetch_all(conn)
            .await?;
    let taken: Vec<Ipv4Net> = taken.iter().filter_map(|s| s.parse().ok()).collect();
    let config = &state.config.network;
    addresses::free_subnet(config.vlan_subnets, config.vlan_prefix, &taken).ok_or_else(|| {
        ApiError::LimitExceeded(format!(
            "no subnet of {} is left for a new VLAN",
            config.vlan_subnets
        ))
    })
}

/// The VLAN's subnet, locked until the transaction ends (so two servers made at once get
/// different addresses); a VLAN made before subnets existed gets one now.
pub async fn lock_subnet(
    conn: &mut AnyConnection,
    state: &AppState,
    vlan_id: i64,
) -> ApiResult<Ipv4Net> {
    sqlx::query("UPDATE vlans SET subnet = subnet WHERE id = $1")
        .bind(vlan_id)
        .execute(&mut *conn)
        .await?;
    let subnet: Option<String> = sqlx::query_scalar("SELECT subnet FROM vlans WHERE id = $1")
        .bind(vlan_id)
        .fetch_one(&mut *conn)
        .await?;
    if let Some(net) = subnet.and_then(|s| s.parse().ok()) {
        return Ok(net);
    }
    let net = free_subnet(&mut *conn, state).await?;
    sqlx::query("UPDATE vlans SET subnet = $1 WHERE id = $2")
        .bind(net.to_string())
        .bind(vlan_id)
        .execute(&mut *conn)
        .await?;
    Ok(net)
}
