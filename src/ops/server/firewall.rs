//! ApplyFirewallTemplate: which firewall template a server's NIC is under (the templates
//! themselves are the network domain's, `ops::network::firewall`); the change is applied at
//! once on this node if it runs the server, and through a job aimed at the node that does
//! otherwise.

use super::Server;
use crate::error::{ApiError, ApiResult};
use crate::ops::network::{firewall, plan};
use crate::ops::{Ctx, args};

pub async fn apply_firewall_template(
    ctx: &Ctx,
    a: args::ApplyFirewallTemplate,
) -> ApiResult<Server> {
    let mut tx = ctx.begin_write().await?;
    let server = super::own_server(&mut tx, ctx.customer_id(), a.server_id).await?;
    if let Some(template_id) = a.template_id {
        let vdc_id = firewall::lock_own_template(&mut tx, ctx.customer_id(), template_id).await?;
        if vdc_id != server.vdc_id {
            return Err(ApiError::invalid(
                "template_id",
                format!(
                    "firewall template {template_id} is in VDC {vdc_id}, server {} in VDC {}",
                    server.id, server.vdc_id
                ),
            ));
        }
    }
    super::set_firewall_template(&mut tx, server.id, a.template_id).await?;
    let nodes = firewall::running_nodes(&mut tx, firewall::Using::Server(server.id)).await?;
    let here = firewall::aim_jobs(ctx, &mut tx, &nodes, &format!("server {}", server.id)).await?;
    tx.commit().await?;
    if here {
        plan::sync(&ctx.state).await?;
    }
    super::get_server(
        ctx,
        args::GetServer {
            server_id: server.id,
        },
    )
    .await
}
