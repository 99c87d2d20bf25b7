//! Firewall templates: a customer's named set of ordered rules with default inbound and
//! outbound policies, applied to servers (ApplyFirewallTemplate). The first rule that matches
//! a new connection decides; replies to an allowed connection pass (conntrack). The rules
//! themselves are the network engine's (`network::firewall`), which puts them after the
//! platform's own, so a template only narrows.
//!
//! This module is the only one that writes `firewall_templates` and `firewall_rules` (a
//! server's template is written through `server::set_firewall_template`). A change reaches
//! the nodes running the servers concerned at once: this node applies its networks before the
//! call returns, and an [`ApplyFirewallJob`] aimed at each other node does it there (their
//! idle workers look for work every second), without waiting for the periodic resync.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

use super::plan as network;
use crate::db::{Tx, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::jobs::{JobKind, JobOutcome, JobStatus, Lane, RunningJob};
use crate::network::firewall::{Action, Direction, Protocol, Rule, Template};
use crate::ops::accounts::quota::{self, Need};
use crate::ops::accounts::vdc;
use crate::ops::server_status::ServerStatus;
use crate::ops::state::AppState;
use crate::ops::wire::Timestamp;
use crate::ops::{Ctx, args, page, validate};
use crate::wire_struct;

wire_struct! {
    /// A rule of a firewall template. `direction`: `IN` (what reaches the server; `cidr` is
    /// the source) or `OUT` (what it sends; `cidr` is the destination). `protocol`: `TCP`,
    /// `UDP`, `ICMP` or `ANY`; `port_from` to `port_to` are destination ports (TCP and UDP;
    /// nil: every port). `action`: `ALLOW` or `DENY`. `position` is its place in the
    /// template's order, from 1 (the first rule that matches decides).
    pub struct FirewallRule as "FirewallRule" {
        pub firewall_rule_id: i64,
        pub firewall_template_id: i64,
        pub position: i64,
        pub direction: String,
        pub protocol: String,
        pub port_from: Option<i64>,
        pub port_to: Option<i64>,
        pub cidr: String,
        pub action: String,
    }
}

wire_struct! {
    /// A firewall template: `rules` in order, and what happens to a new connection no rule
    /// matches (`default_inbound`, `default_outbound`: `ALLOW` or `DENY`). `server_ids` are
    /// the servers using it.
    pub struct FirewallTemplate as "FirewallTemplate" {
        pub firewall_template_id: i64,
        pub vdc_id: i64,
        pub name: String,
        pub default_inbound: String,
        pub default_outbound: String,
        pub rules: Vec<FirewallRule>,
        pub server_ids: Vec<i64>,
        pub created: Timestamp,
    }
}

/// `(id, vdc_id, name, default_inbound, default_outbound, created)`
type TemplateRow = (i64, i64, String, String, String, i64);
/// `(id, template_id, position, direction, protocol, port_from, port_to, cidr, action)`
type RuleRow = (
    i64,
    i64,
    i64,
    String,
    String,
    Option<i64>,
    Option<i64>,
    String,
    String,
);

macro_rules! select_rules {
    ($where:literal) => {
        concat!(
            "SELECT id, template_id, position, direction, protocol, port_from, port_to, cidr, \
             action FROM firewall_rules WHERE ",
            $where
        )
    };
}

fn to_rule(r: RuleRow) -> FirewallRule {
    FirewallRule {
        firewall_rule_id: r.0,
        firewall_template_id: r.1,
        position: r.2,
        direction: r.3,
        protocol: r.4,
        port_from: r.5,
        port_to: r.6,
        cidr: r.7,
        action: r.8,
    }
}

// ---- Arguments -------------------------------------------------------------------------

fn policy(argument: &str, value: &str) -> ApiResult<Action> {
    match value.trim().to_ascii_uppercase().as_str() {
        "ALLOW" => Ok(Action::Allow),
        "DENY" => Ok(Action::Deny),
        _ => Err(ApiError::invalid(
            argument,
            format!("must be ALLOW or DENY, got '{}'", value.trim()),
        )),
    }
}

fn action_text(action: Action) -> &'static str {
    match action {
        Action::Allow => "ALLOW",
        Action::Deny => "DENY",
    }
}

fn direction(value: &str) -> ApiResult<Direction> {
    match value.trim().to_ascii_uppercase().as_str() {
        "IN" => Ok(Direction::In),
        "OUT" => Ok(Direction::Out),
        _ => Err(ApiError::invalid(
            "direction",
            format!("must be IN or OUT, got '{}'", value.trim()),
        )),
    }
}

fn protocol(value: &str) -> ApiResult<Protocol> {
    match value.trim().to_ascii_uppercase().as_str() {
        "TCP" => Ok(Protocol::Tcp),
        "UDP" => Ok(Protocol::Udp),
        "ICMP" => Ok(Protocol::Icmp),
        "ANY" => Ok(Protocol::Any),
        _ => Err(ApiError::invalid(
            "protocol",
            format!("must be TCP, UDP, ICMP or ANY, got '{}'", value.trim()),
        )),
    }
}

fn protocol_text(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Icmp => "ICMP",
        Protocol::Any => "ANY",
    }
}

/// The destination ports of a rule: for TCP and UDP, `port_from` alone is one port, both a
/// range, neither every port; ICMP and ANY have none (whatever was sent).
fn ports(protocol: Protocol, from: Option<i64>, to: Option<i64>) -> ApiResult<Option<(u16, u16)>> {
    if matches!(protocol, Protocol::Icmp | Protocol::Any) {
        return Ok(None);
    }
    let port = |argument: &str, value: i64| {
        u16::try_from(value)
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| {
                ApiError::invalid(
                    argument,
                    format!("must be a port from 1 to 65535, got {value}"),
                )
            })
    };
    match (from, to) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(ApiError::invalid(
            "port_from",
            "must be given when port_to is",
        )),
        (Some(from), to) => {
            let first = port("port_from", from)?;
            let last = port("port_to", to.unwrap_or(from))?;
            if last < first {
                return Err(ApiError::invalid(
                    "port_to",
                    format!("must not be below port_from ({first}), got {last}"),
                ));
            }
            Ok(Some((first, last)))
        }
    }
}

/// An IPv4 network (`10.0.0.0/24`; an address alone is its /32), without host bits.
fn network(value: &str) -> ApiResult<Ipv4Net> {
    let value = value.trim();
    let net = match value.parse::<Ipv4Net>() {
        Ok(net) => net,
        Err(_) => match value.parse::<Ipv4Addr>() {
            Ok(address) => Ipv4Net::from(address),
            Err(_) => {
                return Err(ApiError::invalid(
                    "cidr",
                    format!("must be an IPv4 network like 10.0.0.0/24, got '{value}'"),
                ));
            }
        },
    };
    if net.trunc() != net {
        return Err(ApiError::invalid(
            "cidr",
            format!(
                "'{value}' has host bits set: the network is {}",
                net.trunc()
            ),
        ));
    }
    Ok(net)
}

// ---- Reading ---------------------------------------------------------------------------

/// Locks the customer's template (against a concurrent change, application or deletion), or
/// NOT_FOUND; returns its VDC.
pub(crate) async fn lock_own_template(
    conn: &mut AnyConnection,
    customer_id: i64,
    template_id: i64,
) -> ApiResult<i64> {
    let locked =
        sqlx::query("UPDATE firewall_templates SET name = name WHERE id = $1 AND customer_id = $2")
            .bind(template_id)
            .bind(customer_id)
            .execute(&mut *conn)
            .await?;
    if locked.rows_affected() == 0 {
        return Err(ApiError::not_found("firewall template", template_id));
    }
    let vdc_id: i64 = sqlx::query_scalar("SELECT vdc_id FROM firewall_templates WHERE id = $1")
        .bind(template_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(vdc_id)
}

async fn rules_of(conn: &mut AnyConnection, template_id: i64) -> ApiResult<Vec<RuleRow>> {
    Ok(
        sqlx::query_as(select_rules!("template_id = $1 ORDER BY position, id"))
            .bind(template_id)
            .fetch_all(conn)
            .await?,
    )
}

/// The templates of `rows`, with their rules and servers.
async fn assemble(
    conn: &mut AnyConnection,
    customer_id: i64,
    rows: Vec<TemplateRow>,
) -> ApiResult<Vec<FirewallTemplate>> {
    // Rows come in ascending id order: one range of the customer's templates.
    let (Some(first), Some(last)) = (rows.first().map(|r| r.0), rows.last().map(|r| r.0)) else {
        return Ok(Vec::new());
    };
    let rules: Vec<RuleRow> = sqlx::query_as(select_rules!(
        "template_id BETWEEN $1 AND $2 AND template_id IN \
         (SELECT id FROM firewall_templates WHERE customer_id = $3) \
         ORDER BY template_id, position, id"
    ))
    .bind(first)
    .bind(last)
    .bind(customer_id)
    .fetch_all(&mut *conn)
    .await?;
    let servers: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT firewall_template_id, id FROM servers WHERE customer_id = $3 \
         AND firewall_template_id BETWEEN $1 AND $2 ORDER BY id",
    )
    .bind(first)
    .bind(last)
    .bind(customer_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut rules_by: HashMap<i64, Vec<FirewallRule>> = HashMap::new();
    for rule in rules {
        rules_by.entry(rule.1).or_default().push(to_rule(rule));
    }
    let mut servers_by: HashMap<i64, Vec<i64>> = HashMap::new();
    for (template_id, server_id) in servers {
        servers_by.entry(template_id).or_default().push(server_id);
    }
    Ok(rows
        .into_iter()
        .map(
            |(id, vdc_id, name, default_inbound, default_outbound, created)| FirewallTemplate {
                firewall_template_id: id,
                vdc_id,
                name,
                default_inbound,
                default_outbound,
                rules: rules_by.remove(&id).unwrap_or_default(),
                server_ids: servers_by.remove(&id).unwrap_or_default(),
                created: Timestamp(created),
            },
        )
        .collect())
}

async fn load_template(
    conn: &mut AnyConnection,
    customer_id: i64,
    template_id: i64,
) -> ApiResult<FirewallTemplate> {
    let row: Option<TemplateRow> = sqlx::query_as(
        "SELECT id, vdc_id, name, default_inbound, default_outbound, created \
         FROM firewall_templates WHERE id = $1 AND customer_id = $2",
    )
    .bind(template_id)
    .bind(customer_id)
    .fetch_optional(&mut *conn)
    .await?;
    let row = row.ok_or(ApiError::not_found("firewall template", template_id))?;
    Ok(assemble(conn, customer_id, vec![row]).await?.remove(0))
}

pub async fn list_firewall_templates(
    ctx: &Ctx,
    a: args::ListFirewallTemplates,
) -> ApiResult<Vec<FirewallTemplate>> {
    let page = page::ascending(a.page_size, a.after_id)?;
    let mut conn = ctx.state.db.pool().acquire().await?;
    let rows: Vec<TemplateRow> = sqlx::query_as(
        "SELECT id, vdc_id, name, default_inbound, default_outbound, created \
         FROM firewall_templates WHERE customer_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(ctx.customer_id())
    .bind(page.cursor)
    .bind(page.limit)
    .fetch_all(&mut *conn)
    .await?;
    assemble(&mut conn, ctx.customer_id(), rows).await
}

// ---- Changing --------------------------------------------------------------------------

pub async fn create_firewall_template(
    ctx: &Ctx,
    a: args::CreateFirewallTemplate,
) -> ApiResult<FirewallTemplate> {
    let name = validate::name("name", &a.name)?;
    let inbound = action_text(policy("default_inbound", &a.default_inbound)?);
    let outbound = action_text(policy("default_outbound", &a.default_outbound)?);
    let mut tx = ctx.begin_write().await?;
    vdc::ensure_own(&mut tx, ctx.customer_id(), a.vdc_id).await?;
    let need = Need {
        firewall_templates: 1,
        ..Need::default()
    };
    quota::ensure_room(&mut tx, &ctx.state, ctx.customer_id(), need).await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO firewall_templates (customer_id, vdc_id, name, default_inbound, \
         default_outbound, created) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(ctx.customer_id())
    .bind(a.vdc_id)
    .bind(&name)
    .bind(inbound)
    .bind(outbound)
    .bind(now_ms())
    .fetch_one(&mut *tx)
    .await?;
    let template = load_template(&mut tx, ctx.customer_id(), id).await?;
    tx.commit().await?;
    Ok(template)
}

pub async fn rename_firewall_template(
    ctx: &Ctx,
    a: args::RenameFirewallTemplate,
) -> ApiResult<FirewallTemplate> {
    let name = validate::name("name", &a.name)?;
    let mut tx = ctx.begin_write().await?;
    lock_own_template(&mut tx, ctx.customer_id(), a.template_id).await?;
    sqlx::query("UPDATE firewall_templates SET name = $1 WHERE id = $2")
        .bind(&name)
        .bind(a.template_id)
        .execute(&mut *tx)
        .await?;
    let template = load_template(&mut tx, ctx.customer_id(), a.template_id).await?;
    tx.commit().await?;
    Ok(template)
}

pub async fn delete_firewall_template(
    ctx: &Ctx,
    a: args::DeleteFirewallTemplate,
) -> ApiResult<i64> {
    let mut tx = ctx.begin_write().await?;
    lock_own_template(&mut tx, ctx.customer_id(), a.template_id).await?;
    let users: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM servers WHERE firewall_template_id = $1 ORDER BY id LIMIT 5",
    )
    .bind(a.template_id)
    .fetch_all(&mut *tx)
    .await?;
    if !users.is_empty() {
        let ids: Vec<String> = users.iter().map(ToString::to_string).collect();
        return Err(ApiError::Conflict(format!(
            "firewall template {} is applied to server {}: apply another (or -1) first",
            a.template_id,
            ids.join(", ")
        )));
    }
    for table in [
        "DELETE FROM firewall_rules WHERE template_id = $1",
        "DELETE FROM firewall_templates WHERE id = $1",
    ] {
        sqlx::query(table)
            .bind(a.template_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(1)
}

/// Writes the rules' positions 1 to n in the order given.
async fn renumber(conn: &mut AnyConnection, order: &[i64]) -> ApiResult<()> {
    for (index, rule_id) in order.iter().enumerate() {
        sqlx::query("UPDATE firewall_rules SET position = $1 WHERE id = $2 AND position <> $1")
            .bind(index as i64 + 1)
            .bind(rule_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Where a rule goes among `count` others: `position` 1 to `count` + 1 (beyond: last), or last
/// when omitted.
fn place(position: Option<i64>, count: usize) -> ApiResult<usize> {
    match position {
        None => Ok(count),
        Some(p) if p >= 1 => Ok((p as usize - 1).min(count)),
        Some(p) => Err(ApiError::invalid(
            "position",
            format!("must be 1 or more (1 is first), or omitted for last; got {p}"),
        )),
    }
}

pub async fn add_firewall_rule(ctx: &Ctx, a: args::AddFirewallRule) -> ApiResult<FirewallRule> {
    let direction = direction(&a.direction)?;
    let protocol = protocol(&a.protocol)?;
    let ports = ports(protocol, a.port_from, a.port_to)?;
    let cidr = network(&a.cidr)?;
    let action = policy("action", &a.action)?;
    let place_at = a.position;
    if let Some(p) = place_at {
        place(Some(p), 0)?;
    }
    let mut tx = ctx.begin_write().await?;
    lock_own_template(&mut tx, ctx.customer_id(), a.template_id).await?;
    let rules = rules_of(&mut tx, a.template_id).await?;
    let need = Need {
        firewall_rules: rules.len() as i64 + 1,
        ..Need::default()
    };
    quota::ensure_room(&mut tx, &ctx.state, ctx.customer_id(), need).await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO firewall_rules (template_id, position, direction, protocol, port_from, \
         port_to, cidr, action, created) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         RETURNING id",
    )
    .bind(a.template_id)
    .bind(rules.len() as i64 + 1)
    .bind(match direction {
        Direction::In => "IN",
        Direction::Out => "OUT",
    })
    .bind(protocol_text(protocol))
    .bind(ports.map(|p| i64::from(p.0)))
    .bind(ports.map(|p| i64::from(p.1)))
    .bind(cidr.to_string())
    .bind(action_text(action))
    .bind(now_ms())
    .fetch_one(&mut *tx)
    .await?;
    let mut order: Vec<i64> = rules.iter().map(|r| r.0).collect();
    order.insert(place(place_at, order.len())?, id);
    renumber(&mut tx, &order).await?;
    let rule = rule_in(&mut tx, id).await?;
    finish(ctx, tx, a.template_id).await?;
    Ok(rule)
}

async fn rule_in(conn: &mut AnyConnection, rule_id: i64) -> ApiResult<FirewallRule> {
    let row: RuleRow = sqlx::query_as(select_rules!("id = $1"))
        .bind(rule_id)
        .fetch_one(conn)
        .await?;
    Ok(to_rule(row))
}

/// The template of the customer's rule, locked, or NOT_FOUND.
async fn lock_rules_template(
    conn: &mut AnyConnection,
    customer_id: i64,
    rule_id: i64,
) -> ApiResult<i64> {
    let template_id: Option<i64> = sqlx::query_scalar(
        "SELECT r.template_id FROM firewall_rules r \
         JOIN firewall_templates t ON t.id = r.template_id \
         WHERE r.id = $1 AND t.customer_id = $2",
    )
    .bind(rule_id)
    .bind(customer_id)
    .fetch_optional(&mut *conn)
    .await?;
    let template_id = template_id.ok_or(ApiError::not_found("firewall rule", rule_id))?;
    lock_own_template(conn, customer_id, template_id).await?;
    Ok(template_id)
}

pub async fn remove_firewall_rule(ctx: &Ctx, a: args::RemoveFirewallRule) -> ApiResult<i64> {
    let mut tx = ctx.begin_write().await?;
    let template_id = lock_rules_template(&mut tx, ctx.customer_id(), a.rule_id).await?;
    sqlx::query("DELETE FROM firewall_rules WHERE id = $1")
        .bind(a.rule_id)
        .execute(&mut *tx)
        .await?;
    let order: Vec<i64> = rules_of(&mut tx, template_id)
        .await?
        .iter()
        .map(|r| r.0)
        .collect();
    renumber(&mut tx, &order).await?;
    finish(ctx, tx, template_id).await?;
    Ok(1)
}

pub async fn move_firewall_rule(ctx: &Ctx, a: args::MoveFirewallRule) -> ApiResult<FirewallRule> {
    place(Some(a.position), 0)?;
    let mut tx = ctx.begin_write().await?;
    let template_id = lock_rules_template(&mut tx, ctx.customer_id(), a.rule_id).await?;
    let mut order: Vec<i64> = rules_of(&mut tx, template_id)
        .await?
        .iter()
        .map(|r| r.0)
        .filter(|id| *id != a.rule_id)
        .collect();
    order.insert(place(Some(a.position), order.len())?, a.rule_id);
    renumber(&mut tx, &order).await?;
    let rule = rule_in(&mut tx, a.rule_id).await?;
    finish(ctx, tx, template_id).await?;
    Ok(rule)
}

/// Commits a change to a template's rules and has every node running a server that uses it
/// apply it.
async fn finish(ctx: &Ctx, mut tx: Tx, template_id: i64) -> ApiResult<()> {
    let nodes = running_nodes(&mut tx, Using::Template(template_id)).await?;
    let what = format!("firewall template {template_id}");
    let here = aim_jobs(ctx, &mut tx, &nodes, &what).await?;
    tx.commit().await?;
    if here {
        network::sync(&ctx.state).await?;
    }
    Ok(())
}

/// Whose servers' nodes [`running_nodes`] finds.
#[derive(Clone, Copy)]
pub(crate) enum Using {
    /// One server.
    Server(i64),
    /// The servers using a template.
    Template(i64),
}

/// The nodes running (or starting or stopping) the servers `using` names.
pub(crate) async fn running_nodes(
    conn: &mut AnyConnection,
    using: Using,
) -> ApiResult<BTreeSet<String>> {
    let (sql, id) = match using {
        Using::Server(id) => (
            "SELECT DISTINCT node FROM servers WHERE id = $1 AND node IS NOT NULL \
             AND status IN ($2, $3, $4)",
            id,
        ),
        Using::Template(id) => (
            "SELECT DISTINCT node FROM servers WHERE firewall_template_id = $1 \
             AND node IS NOT NULL AND status IN ($2, $3, $4)",
            id,
        ),
    };
    let nodes: Vec<String> = sqlx::query_scalar(sql)
        .bind(id)
        .bind(ServerStatus::Starting.code())
        .bind(ServerStatus::Running.code())
        .bind(ServerStatus::Stopping.code())
        .fetch_all(conn)
        .await?;
    Ok(nodes.into_iter().collect())
}

/// Queues an [`ApplyFirewallJob`] aimed at each of `nodes` but this one (unless one is queued
/// there already and not started: it will read the change); whether this node is among them.
pub(crate) async fn aim_jobs(
    ctx: &Ctx,
    tx: &mut Tx,
    nodes: &BTreeSet<String>,
    what: &str,
) -> ApiResult<bool> {
    let here = ctx.state.jobs.node_id();
    for node in nodes.iter().filter(|n| n.as_str() != here) {
        let pending: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE job_type = $1 AND target_node = $2 AND status = $3 \
             AND customer_id = $4 LIMIT 1",
        )
        .bind(ApplyFirewallJob::NAME)
        .bind(node)
        .bind(JobStatus::NotStarted.code())
        .bind(ctx.customer_id())
        .fetch_optional(&mut **tx)
        .await?;
        if pending.is_some() {
            continue;
        }
        ctx.enqueue(
            tx,
            ApplyFirewallJob { node: node.clone() },
            format!("Apply {what} on node {node}"),
        )
        .on_node(Some(node.clone()))
        .await?;
    }
    Ok(nodes.contains(here))
}

/// Applies a node's networks (with the firewall templates of the servers it runs) on that node:
/// what a change to a template or to a server's template queues for each other node concerned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyFirewallJob {
    /// The node it is aimed at (any node that runs it applies its own networks, which is
    /// harmless should the node be gone).
    pub node: String,
}

impl JobKind for ApplyFirewallJob {
    const NAME: &'static str = "ApplyFirewall";
    const LANE: Lane = Lane::Quick;
    type Context = AppState;

    async fn run(self, job: &RunningJob<AppState>) -> ApiResult<JobOutcome> {
        network::sync(&job.state).await?;
        let tx = job.begin_fenced().await?;
        job.commit(tx, JobOutcome::default()).await
    }
}

// ---- For the network plan --------------------------------------------------------------

/// The templates `ids` name, with their rules in order, as the network engine takes them. A
/// rule whose values are unreadable (never written so) is left out and logged.
pub async fn templates(
    conn: &mut AnyConnection,
    ids: &BTreeSet<i64>,
) -> ApiResult<HashMap<i64, Template>> {
    let mut found = HashMap::new();
    for id in ids {
        let policies: Option<(String, String)> = sqlx::query_as(
            "SELECT default_inbound, default_outbound FROM firewall_templates WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((inbound, outbound)) = policies else {
            continue;
        };
        let mut rules = Vec::new();
        for row in rules_of(&mut *conn, *id).await? {
            match engine_rule(&row) {
                Ok(rule) => rules.push(rule),
                Err(err) => {
                    tracing::error!(rule_id = row.0, error = %err, "an unreadable firewall rule")
                }
            }
        }
        // A policy that cannot be read denies: a template fails closed.
        let read = |p: &str| policy("policy", p).unwrap_or(Action::Deny);
        found.insert(
            *id,
            Template {
                template_id: *id,
                default_inbound: read(&inbound),
                default_outbound: read(&outbound),
                rules,
            },
        );
    }
    Ok(found)
}

fn engine_rule(row: &RuleRow) -> ApiResult<Rule> {
    let protocol = protocol(&row.4)?;
    Ok(Rule {
        direction: direction(&row.3)?,
        protocol,
        ports: ports(protocol, row.5, row.6)?,
        network: network(&row.7)?,
        action: policy("action", &row.8)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_values_are_checked() {
        assert!(matches!(
            ports(Protocol::Tcp, Some(22), None),
            Ok(Some((22, 22)))
        ));
        assert!(matches!(ports(Protocol::Icmp, Some(0), Some(-4)), Ok(None)));
        assert!(ports(Protocol::Tcp, Some(0), None).is_err());
        assert!(ports(Protocol::Udp, Some(100), Some(99)).is_err());
        assert!(ports(Protocol::Tcp, None, Some(99)).is_err());
        assert!(ports(Protocol::Tcp, Some(1), Some(65536)).is_err());
        assert_eq!(network("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert!(network("10.1.2.3/24").is_err());
        assert!(network("10.1.2.0/33").is_err());
        assert!(network("::1/128").is_err());
        assert!(network("").is_err());
        assert!(policy("action", "allow").is_ok() && policy("action", "PERMIT").is_err());
        assert!(direction("in").is_ok() && direction("both").is_err());
        assert!(protocol("any").is_ok() && protocol("SCTP").is_err());
        assert_eq!(place(None, 3).unwrap(), 3);
        assert_eq!(place(Some(1), 3).unwrap(), 0);
        assert_eq!(place(Some(9), 3).unwrap(), 3);
        assert!(place(Some(0), 3).is_err());
    }
}
