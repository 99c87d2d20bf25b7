//! Port forwards: a host port of the node running a server that reaches a port of the
//! server's NIC, so customers can reach their VMs (SSH, say) from outside. Host ports come
//! from `--port-forward-ports`, are unique across the platform and go with their server. This
//! module is the only one that writes `port_forwards`; the rules themselves are the network
//! engine's (`ops::network::plan` applies them on the server's node).

use std::collections::{HashMap, HashSet};

use sqlx::AnyConnection;

use crate::db::is_unique_violation;
use crate::db::now_ms;
use crate::error::{ApiError, ApiResult};
use crate::ops::accounts::quota::{self, Need};
use crate::ops::server::own_server;
use crate::ops::wire::Timestamp;
use crate::ops::{Ctx, args, page};
use crate::wire_struct;

wire_struct! {
    /// TCP connections to `host_port` on the address of the node running the server reach
    /// `guest_port` of the server's NIC.
    pub struct PortForward as "PortForward" {
        pub port_forward_id: i64,
        pub server_id: i64,
        pub protocol: String,
        pub guest_port: i64,
        pub host_port: i64,
        pub created: Timestamp,
    }
}

/// Port forwards one server may have.
pub const MAX_PER_SERVER: i64 = 16;

type Row = (i64, i64, i64, i64, i64);

fn to_forward((port_forward_id, server_id, guest_port, host_port, created): Row) -> PortForward {
    PortForward {
        port_forward_id,
        server_id,
        protocol: "tcp".into(),
        guest_port,
        host_port,
        created: Timestamp(created),
    }
}

macro_rules! select_forwards {
    ($where:literal) => {
        concat!(
            "SELECT id, server_id, guest_port, host_port, created FROM port_forwards WHERE ",
            $where
        )
    };
}

pub async fn add_port_forward(ctx: &Ctx, a: args::AddPortForward) -> ApiResult<PortForward> {
    if !(1..=65535).contains(&a.guest_port) {
        return Err(ApiError::invalid(
            "guest_port",
            format!("must be a port from 1 to 65535, got {}", a.guest_port),
        ));
    }
    let (first, last) = ctx.state.config.network.port_forward_ports;
    // The apply running when this commits waits for it (a burst coalesces).
    let change = ctx.state.network_applier.announce();
    for _ in 0..8 {
        let mut tx = ctx.begin_write().await?;
        let server = own_server(&mut tx, ctx.customer_id(), a.server_id).await?;
        if server.vlan_id.is_none() {
            return Err(ApiError::invalid(
                "server_id",
                format!(
                    "server {} is on no VLAN: it has no NIC to forward to",
                    server.id
                ),
            ));
        }
        let existing = of_server(&mut tx, server.id).await?;
        if let Some(f) = existing.iter().find(|f| f.guest_port == a.guest_port) {
            return Err(ApiError::Conflict(format!(
                "port {} of server {} is already forwarded from host port {}",
                a.guest_port, server.id, f.host_port
            )));
        }
        if existing.len() as i64 >= MAX_PER_SERVER {
            return Err(ApiError::LimitExceeded(format!(
                "server {} has {MAX_PER_SERVER} port forwards, the most a server may have",
                server.id
            )));
        }
        // The customer's row is locked last, after the server's.
        quota::ensure_room(
            &mut tx,
            &ctx.state,
            ctx.customer_id(),
            Need::port_forwards(1),
        )
        .await?;
        let taken: Vec<i64> = sqlx::query_scalar("SELECT host_port FROM port_forwards")
            .fetch_all(&mut *tx)
            .await?;
        let taken: HashSet<i64> = taken.into_iter().collect();
        let Some(host_port) = (i64::from(first)..=i64::from(last)).find(|p| !taken.contains(p))
        else {
            return Err(ApiError::LimitExceeded(format!(
                "every host port of {first}-{last} is forwarded already"
            )));
        };
        let created = now_ms();
        let inserted = sqlx::query_scalar::<_, i64>(
            "INSERT INTO port_forwards (customer_id, server_id, guest_port, host_port, created) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(ctx.customer_id())
        .bind(server.id)
        .bind(a.guest_port)
        .bind(host_port)
        .bind(created)
        .fetch_one(&mut *tx)
        .await;
        let id = match inserted {
            Ok(id) => id,
            Err(err) if is_unique_violation(&err) => continue,
            Err(err) => return Err(err.into()),
        };
        tx.commit().await?;
        change.apply(&ctx.state, server.node.as_deref()).await?;
        return Ok(to_forward((
            id,
            server.id,
            a.guest_port,
            host_port,
            created,
        )));
    }
    Err(ApiError::Conflict(
        "host ports are being taken too fast; try again".into(),
    ))
}

pub async fn remove_port_forward(ctx: &Ctx, a: args::RemovePortForward) -> ApiResult<i64> {
    let change = ctx.state.network_applier.announce();
    let mut tx = ctx.begin_write().await?;
    let server_id: Option<i64> = sqlx::query_scalar(
        "SELECT server_id FROM port_forwards WHERE id = $1 AND customer_id = $2",
    )
    .bind(a.port_forward_id)
    .bind(ctx.customer_id())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(server_id) = server_id else {
        return Err(ApiError::not_found("port forward", a.port_forward_id));
    };
    let server = own_server(&mut tx, ctx.customer_id(), server_id).await?;
    sqlx::query("DELETE FROM port_forwards WHERE id = $1")
        .bind(a.port_forward_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    change.apply(&ctx.state, server.node.as_deref()).await?;
    Ok(1)
}

pub async fn list_port_forwards(
    ctx: &Ctx,
    a: args::ListPortForwards,
) -> ApiResult<Vec<PortForward>> {
    let page = page::ascending(a.page_size, a.after_id)?;
    let mut conn = ctx.state.db.pool().acquire().await?;
    let server = own_server(&mut conn, ctx.customer_id(), a.server_id).await?;
    // The list is by guest port: the page goes on after the cursor's guest port.
    let after_port = match a.after_id {
        None => 0,
        Some(id) => sqlx::query_scalar(
            "SELECT guest_port FROM port_forwards WHERE id = $1 AND server_id = $2",
        )
        .bind(id)
        .bind(server.id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| page::unknown_cursor("port forwards", id))?,
    };
    let rows: Vec<Row> = sqlx::query_as(select_forwards!(
        "server_id = $1 AND guest_port > $2 ORDER BY guest_port LIMIT $3"
    ))
    .bind(server.id)
    .bind(after_port)
    .bind(page.limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(to_forward).collect())
}

/// A server's port forwards, by guest port.
pub async fn of_server(conn: &mut AnyConnection, server_id: i64) -> ApiResult<Vec<PortForward>> {
    let rows: Vec<Row> = sqlx::query_as(select_forwards!("server_id = $1 ORDER BY guest_port"))
        .bind(server_id)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(to_forward).collect())
}

/// The port forwards of a customer's servers in a VDC (`None`: in any) whose ids are in
/// `first..=last` (a page of ListServers or ListAllServers), by server.
pub async fn of_vdc(
    conn: &mut AnyConnection,
    customer_id: i64,
    vdc_id: Option<i64>,
    (first, last): (i64, i64),
) -> ApiResult<HashMap<i64, Vec<PortForward>>> {
    let rows: Vec<Row> = match vdc_id {
        Some(vdc_id) => {
            sqlx::query_as(select_forwards!(
                "customer_id = $1 AND server_id IN (SELECT id FROM servers WHERE vdc_id = $2) \
                 AND server_id BETWEEN $3 AND $4 ORDER BY guest_port"
            ))
            .bind(customer_id)
            .bind(vdc_id)
            .bind(first)
            .bind(last)
            .fetch_all(conn)
            .await?
        }
        None => {
            sqlx::query_as(select_forwards!(
                "customer_id = $1 AND server_id BETWEEN $2 AND $3 ORDER BY guest_port"
            ))
            .bind(customer_id)
            .bind(first)
            .bind(last)
            .fetch_all(conn)
            .await?
        }
    };
    let mut by_server: HashMap<i64, Vec<PortForward>> = HashMap::new();
    for row in rows {
        by_server.entry(row.1).or_default().push(to_forward(row));
    }
    Ok(by_server)
}

/// Removes a server's port forwards (it is being destroyed).
pub async fn delete_of_server(conn: &mut AnyConnection, server_id: i64) -> ApiResult<()> {
    sqlx::query("DELETE FROM port_forwards WHERE server_id = $1")
        .bind(server_id)
        .execute(conn)
        .await?;
    Ok(())
}
