//! Changes to a server's own row: RenameServer, ChangeServerProductOffer.

use super::*;

pub async fn rename_server(ctx: &Ctx, a: args::RenameServer) -> ApiResult<Server> {
    let name = validate::name("server_name", &a.server_name)?;
    let customer_id = ctx.customer_id();
    let mut tx = ctx.begin_write().await?;
    let renamed = sqlx::query("UPDATE servers SET name = $1 WHERE id = $2 AND customer_id = $3")
        .bind(&name)
        .bind(a.server_id)
        .bind(customer_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if renamed != 1 {
        return Err(ApiError::not_found("server", a.server_id));
    }
    let server = load_server(&mut tx, customer_id, a.server_id).await?;
    let node = own_server(&mut tx, customer_id, a.server_id).await?.node;
    tx.commit().await?;
    // Its name on its VLAN (DNS): at once when it runs here, else at its node's next resync.
    if server.vlan_id.is_some() && node.as_deref() == Some(ctx.state.jobs.node_id()) {
        plan::sync_logged(&ctx.state).await;
    }
    Ok(server)
}

/// Gives a stopped server another server offer's processors and memory. A stopped server uses
/// none of the running quotas, which StartServer checks; an offer that alone is over one of
/// them is refused now, since such a server could never start.
pub async fn change_server_product_offer(
    ctx: &Ctx,
    a: args::ChangeServerProductOffer,
) -> ApiResult<Server> {
    let customer_id = ctx.customer_id();
    let mut tx = ctx.begin_write().await?;
    let server = own_server(&mut tx, customer_id, a.server_id).await?;
    let offer = product_offer::offer_of_kind(
        &mut tx,
        a.server_productoffer_id,
        "server",
        "server_productoffer_id",
    )
    .await?;
    lock_stopped_server(&mut tx, server.id, "changing its product offer").await?;
    let need = Need {
        running_vcpus: offer.processors,
        running_memory_mb: offer.memory,
        ..Need::default()
    };
    quota::ensure_within_limits(&mut tx, &ctx.state, customer_id, need).await?;
    sqlx::query(
        "UPDATE servers SET processors = $1, memory = $2, product_offer_id = $3 WHERE id = $4",
    )
    .bind(offer.processors)
    .bind(offer.memory)
    .bind(offer.product_offer_id)
    .bind(server.id)
    .execute(&mut *tx)
    .await?;
    let changed = load_server(&mut tx, customer_id, server.id).await?;
    tx.commit().await?;
    Ok(changed)
}
