//! Quotas: how much each customer may hold and run, checked where things are made.
//!
//! Nine quotas ([`QuotaName`]), each counted from what the database holds when it is checked:
//!
//! - `storage_bytes`: the sizes promised, not the blocks written: the capacity of the
//!   customer's disks, the size of its own images, and what its unfinished FetchDisk and
//!   CreateImage jobs will make (the offer's size; the disk's capacity), reserved when they are
//!   queued. A job that has committed its result counts through the disk or image it made,
//!   never twice. A snapshot counts the size its volume can grow to (the disk's capacity when
//!   it was taken): the disk's writes after it land in a new layer, so the blocks the snapshot
//!   keeps are the host's to hold however the disk is rewritten; a clone of one is a disk and
//!   counts its capacity. Platform images count for nobody.
//! - `servers`: the customer's servers, running or not.
//! - `running_vcpus`, `running_memory_mb`: the processors and memory (MiB) of its servers that
//!   are starting, running or stopping; StartServer counts the server when it is called.
//! - `concurrent_jobs`: its jobs not finished (queued, waiting or running). StartServer,
//!   FetchDisk and CreateImage are refused over it; StopServer and DestroyServer never are:
//!   they give resources back, and a server has at most one of them at a time, so they are
//!   bounded by the `servers` quota.
//! - `vlans`: its VLANs, each a subnet cut from the pool every customer shares
//!   (`--vlan-subnets`).
//! - `port_forwards`: its port forwards, each a host port of the range every customer shares
//!   (`--port-forward-ports`).
//! - `firewall_templates`: its firewall templates.
//! - `firewall_rules`: the rules of one firewall template (a bound per template, not a sum:
//!   its use is the customer's largest template, and AddFirewallRule asks for the template's
//!   count after the rule, see [`QuotaName::is_per_item`]).
//!
//! A customer's limit is its own (a row of `customer_quotas`, which only this module writes,
//! set by `extility customer set-quota`) or else the platform default (the `serve --quota-*`
//! flags, in [`crate::ops::state::Inner::quota_defaults`]).
//!
//! [`ensure_room`] is the check: it runs inside the write transaction that makes the thing or
//! queues the job, after locking the customer's row, so two concurrent calls cannot both
//! squeeze under a limit, and a refused call has made nothing. [`precheck`] is the same check
//! without the lock, before a call makes storage it would have to throw away.
//!
//! The node's own reserve of free space (`--min-free-space`, [`ensure_node_free_space`]) is
//! the counterpart for the platform: a nearly full node refuses new fetches and copies.

use sqlx::AnyConnection;

use crate::db::{Db, Tx, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::jobs::JobStatus;
use crate::ops::server_status::ServerStatus;
use crate::ops::state::AppState;
use crate::ops::{Ctx, accounts::customer, args};
use crate::wire_struct;

/// The quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaName {
    StorageBytes,
    Servers,
    RunningVcpus,
    RunningMemoryMb,
    ConcurrentJobs,
    Vlans,
    PortForwards,
    FirewallTemplates,
    FirewallRules,
}

/// How many quotas there are.
const COUNT: usize = 9;

impl QuotaName {
    pub const ALL: [QuotaName; COUNT] = [
        QuotaName::StorageBytes,
        QuotaName::Servers,
        QuotaName::RunningVcpus,
        QuotaName::RunningMemoryMb,
        QuotaName::ConcurrentJobs,
        QuotaName::Vlans,
        QuotaName::PortForwards,
        QuotaName::FirewallTemplates,
        QuotaName::FirewallRules,
    ];

    /// The name errors, `GetQuota`'s fields and `customer_quotas` use.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaName::StorageBytes => "storage_bytes",
            QuotaName::Servers => "servers",
            QuotaName::RunningVcpus => "running_vcpus",
            QuotaName::RunningMemoryMb => "running_memory_mb",
            QuotaName::ConcurrentJobs => "concurrent_jobs",
            QuotaName::Vlans => "vlans",
            QuotaName::PortForwards => "port_forwards",
            QuotaName::FirewallTemplates => "firewall_templates",
            QuotaName::FirewallRules => "firewall_rules",
        }
    }

    /// What its numbers count.
    pub fn unit(self) -> &'static str {
        match self {
            QuotaName::StorageBytes => "bytes",
            QuotaName::Servers => "servers",
            QuotaName::RunningVcpus => "vCPUs",
            QuotaName::RunningMemoryMb => "MiB",
            QuotaName::ConcurrentJobs => "unfinished jobs",
            QuotaName::Vlans => "VLANs",
            QuotaName::PortForwards => "port forwards",
            QuotaName::FirewallTemplates => "firewall templates",
            QuotaName::FirewallRules => "rules in one firewall template",
        }
    }

    /// A quota by its name (`running_vcpus`, `running-vcpus`), or by the flag that sets it
    /// (`running-memory`).
    pub fn parse(text: &str) -> Option<QuotaName> {
        let name = text.trim().to_ascii_lowercase().replace('-', "_");
        if name == "running_memory" {
            return Some(QuotaName::RunningMemoryMb);
        }
        QuotaName::ALL.into_iter().find(|q| q.as_str() == name)
    }

    /// A bound on each item (a template's rules), not on a sum over the customer: a [`Need`]
    /// of it is the whole count the item would have, checked against the limit alone.
    pub fn is_per_item(self) -> bool {
        self == QuotaName::FirewallRules
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A limit for each quota; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits([Option<i64>; COUNT]);

impl Limits {
    pub fn get(&self, quota: QuotaName) -> Option<i64> {
        self.0[quota.index()]
    }

    pub fn set(&mut self, quota: QuotaName, limit: Option<i64>) {
        self.0[quota.index()] = limit;
    }
}

/// What a change adds to a customer's use.
#[derive(Debug, Clone, Copy, Default)]
pub struct Need {
    pub storage_bytes: i64,
    pub servers: i64,
    pub running_vcpus: i64,
    pub running_memory_mb: i64,
    pub concurrent_jobs: i64,
    pub vlans: i64,
    pub port_forwards: i64,
    pub firewall_templates: i64,
    /// The number of rules one template would have (see [`QuotaName::is_per_item`]).
    pub firewall_rules: i64,
}

impl Need {
    /// A disk or image of `bytes`, made at once.
    pub fn storage(bytes: i64) -> Need {
        Need {
            storage_bytes: bytes,
            ..Need::default()
        }
    }

    /// A job that will make a disk or image of `bytes`.
    pub fn job_making(bytes: i64) -> Need {
        Need {
            storage_bytes: bytes,
            concurrent_jobs: 1,
            ..Need::default()
        }
    }

    /// `count` new VLANs.
    pub fn vlans(count: i64) -> Need {
        Need {
            vlans: count,
            ..Need::default()
        }
    }

    /// `count` new port forwards.
    pub fn port_forwards(count: i64) -> Need {
        Need {
            port_forwards: count,
            ..Need::default()
        }
    }

    fn of(&self, quota: QuotaName) -> i64 {
        match quota {
            QuotaName::StorageBytes => self.storage_bytes,
            QuotaName::Servers => self.servers,
            QuotaName::RunningVcpus => self.running_vcpus,
            QuotaName::RunningMemoryMb => self.running_memory_mb,
            QuotaName::ConcurrentJobs => self.concurrent_jobs,
            QuotaName::Vlans => self.vlans,
            QuotaName::PortForwards => self.port_forwards,
            QuotaName::FirewallTemplates => self.firewall_templates,
            QuotaName::FirewallRules => self.firewall_rules,
        }
    }
}

wire_struct! {
    /// The caller's quotas: for each, the limit (-1: no limit) and what is in use now.
    /// `storage_bytes`: the capacity of its disks, the size of its own images and of its
    /// snapshots (the disk's capacity when taken), with what its unfinished FetchDisk and
    /// CreateImage jobs will make; `servers`: its servers; `running_vcpus` and
    /// `running_memory_mb` (MiB): its servers that are starting, running or stopping;
    /// `concurrent_jobs`: its jobs not finished; `vlans`: its VLANs; `port_forwards`: its port
    /// forwards. A call that would go past a limit fails with QUOTA_EXCEEDED and makes nothing.
    pub struct Quota as "Quota" {
        pub storage_bytes_limit: i64,
        pub storage_bytes_used: i64,
        pub servers_limit: i64,
        pub servers_used: i64,
        pub running_vcpus_limit: i64,
        pub running_vcpus_used: i64,
        pub running_memory_mb_limit: i64,
        pub running_memory_mb_used: i64,
        pub concurrent_jobs_limit: i64,
        pub concurrent_jobs_used: i64,
        pub vlans_limit: i64,
        pub vlans_used: i64,
        pub port_forwards_limit: i64,
        pub port_forwards_used: i64,
        pub firewall_templates_limit: i64,
        pub firewall_templates_used: i64,
        /// Rules one firewall template may have; `used`: the most any of the caller's has.
        pub firewall_rules_limit: i64,
        pub firewall_rules_used: i64,
    }
}

/// The customer's own limits: the quotas it has a row for (a `None` limit is no limit).
async fn own_limits(
    conn: &mut AnyConnection,
    customer_id: i64,
) -> ApiResult<Vec<(QuotaName, Option<i64>)>> {
    let rows: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT quota, quota_limit FROM customer_quotas WHERE customer_id = $1")
            .bind(customer_id)
            .fetch_all(conn)
            .await?;
    let mut own: Vec<_> = rows
        .into_iter()
        .filter_map(|(name, limit)| QuotaName::parse(&name).map(|q| (q, limit)))
        .collect();
    own.sort_by_key(|(q, _)| q.index());
    Ok(own)
}

/// The limits that apply to the customer: its own, else the platform's defaults.
pub async fn limits(
    conn: &mut AnyConnection,
    defaults: &Limits,
    customer_id: i64,
) -> ApiResult<Limits> {
    let mut limits = *defaults;
    for (quota, limit) in own_limits(conn, customer_id).await? {
        limits.set(quota, limit);
    }
    Ok(limits)
}

/// What the customer uses of a quota now. (Sums are NUMERIC on PostgreSQL: they are cast back
/// to the BIGINT both engines decode.)
pub async fn used(conn: &mut AnyConnection, customer_id: i64, quota: QuotaName) -> ApiResult<i64> {
    let [a, b, c] = JobStatus::UNFINISHED.map(JobStatus::code);
    let running = ServerStatus::HOLDING_A_NODE;
    let used = match quota {
        QuotaName::StorageBytes => {
            // Disks, own images (not tombstones of deleted ones), snapshots (their volume's
            // size: what the disk held when it was taken, all of which the snapshot may come to
            // keep), and what unfinished jobs will make (`reserved_bytes`, written when they
            // were queued: a fetch's disk or image, the image a CreateImage copies from its
            // disk). A job whose result is committed (it has not ended yet) counts through what
            // it made, not twice.
            sqlx::query_scalar(
                "SELECT CAST(COALESCE((SELECT SUM(capacity) FROM disks WHERE customer_id = $1), 0) \
                 + COALESCE((SELECT SUM(size) FROM images WHERE customer_id = $1 \
                   AND deleted IS NULL), 0) \
                 + COALESCE((SELECT SUM(v.size) FROM snapshots s \
                   JOIN volumes v ON v.id = s.volume_id WHERE s.customer_id = $1), 0) \
                 + COALESCE((SELECT SUM(reserved_bytes) FROM jobs WHERE customer_id = $1 \
                   AND status IN ($2, $3, $4) AND result_committed = 0), 0) AS BIGINT)",
            )
            .bind(customer_id)
            .bind(a)
            .bind(b)
            .bind(c)
            .fetch_one(&mut *conn)
            .await?
        }
        QuotaName::Servers => {
            sqlx::query_scalar("SELECT COUNT(*) FROM servers WHERE customer_id = $1")
                .bind(customer_id)
                .fetch_one(&mut *conn)
                .await?
        }
        QuotaName::RunningVcpus | QuotaName::RunningMemoryMb => {
            let sql = if quota == QuotaName::RunningVcpus {
                "SELECT CAST(COALESCE(SUM(processors), 0) AS BIGINT) FROM servers \
                 WHERE customer_id = $1 AND status IN ($2, $3, $4)"
            } else {
                "SELECT CAST(COALESCE(SUM(memory), 0) AS BIGINT) FROM servers \
                 WHERE customer_id = $1 AND status IN ($2, $3, $4)"
            };
            sqlx::query_scalar(sql)
                .bind(customer_id)
                .bind(running[0])
                .bind(running[1])
                .bind(running[2])
                .fetch_one(&mut *conn)
                .await?
        }
        QuotaName::ConcurrentJobs => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM jobs WHERE customer_id = $1 AND status IN ($2, $3, $4)",
            )
            .bind(customer_id)
            .bind(a)
            .bind(b)
            .bind(c)
            .fetch_one(&mut *conn)
            .await?
        }
        QuotaName::Vlans => {
            sqlx::query_scalar("SELECT COUNT(*) FROM vlans WHERE customer_id = $1")
                .bind(customer_id)
                .fetch_one(&mut *conn)
                .await?
        }
        QuotaName::PortForwards => {
            sqlx::query_scalar("SELECT COUNT(*) FROM port_forwards WHERE customer_id = $1")
                .bind(customer_id)
                .fetch_one(&mut *conn)
                .await?
        }
        QuotaName::FirewallTemplates => {
            sqlx::query_scalar("SELECT COUNT(*) FROM firewall_templates WHERE customer_id = $1")
                .bind(customer_id)
                .fetch_one(&mut *conn)
                .await?
        }
        QuotaName::FirewallRules => {
            sqlx::query_scalar(
                "SELECT CAST(COALESCE(MAX(n), 0) AS BIGINT) FROM (SELECT COUNT(*) AS n \
             FROM firewall_rules r JOIN firewall_templates t ON t.id = r.template_id \
             WHERE t.customer_id = $1 GROUP BY r.template_id) counts",
            )
            .bind(customer_id)
            .fetch_one(&mut *conn)
            .await?
        }
    };
    Ok(used)
}

/// Fails with QUOTA_EXCEEDED, naming the first quota `need` would take the customer past.
///
/// Call it in the write transaction that makes the thing (or queues the job), before making
/// it. It first locks the customer's row (on PostgreSQL; SQLite write transactions are
/// serialized anyway), so what it reads cannot change before the transaction ends: of two
/// concurrent calls, the second waits and then sees the first's. Callers take this lock last
/// of the rows they lock (after a server's or a disk's), so that it never closes a cycle.
pub async fn ensure_room(
    tx: &mut Tx,
    state: &AppState,
    customer_id: i64,
    need: Need,
) -> ApiResult<()> {
    check(tx, state, customer_id, need, true).await
}

/// [`ensure_room`] without the lock, for a call about to make storage before its
/// transaction: what fails here makes nothing at all; what passes is checked again.
pub async fn precheck(
    conn: &mut AnyConnection,
    state: &AppState,
    customer_id: i64,
    need: Need,
) -> ApiResult<()> {
    check(conn, state, customer_id, need, false).await
}

async fn check(
    conn: &mut AnyConnection,
    state: &AppState,
    customer_id: i64,
    need: Need,
    lock: bool,
) -> ApiResult<()> {
    let limits = limits(&mut *conn, &state.quota_defaults, customer_id).await?;
    let limited: Vec<(QuotaName, i64)> = QuotaName::ALL
        .into_iter()
        .filter(|q| need.of(*q) > 0)
        .filter_map(|q| limits.get(q).map(|limit| (q, limit)))
        .collect();
    if limited.is_empty() {
        return Ok(());
    }
    if lock {
        customer::lock_customer(&mut *conn, customer_id).await?;
    }
    for (quota, limit) in limited {
        let would_use = if quota.is_per_item() {
            need.of(quota)
        } else {
            used(&mut *conn, customer_id, quota)
                .await?
                .saturating_add(need.of(quota))
        };
        if would_use > limit {
            return Err(ApiError::QuotaExceeded {
                quota: quota.as_str(),
                limit,
                would_use,
                unit: quota.unit(),
            });
        }
    }
    Ok(())
}

/// Fails with QUOTA_EXCEEDED when `need` alone is over one of the customer's limits, whatever
/// is in use: what a change to something that uses none of a quota now (a stopped server's
/// offer) checks, so that it never makes what could never be used.
pub async fn ensure_within_limits(
    conn: &mut AnyConnection,
    state: &AppState,
    customer_id: i64,
    need: Need,
) -> ApiResult<()> {
    let limits = limits(&mut *conn, &state.quota_defaults, customer_id).await?;
    for quota in QuotaName::ALL {
        if let Some(limit) = limits.get(quota)
            && need.of(quota) > limit
        {
            return Err(ApiError::QuotaExceeded {
                quota: quota.as_str(),
                limit,
                would_use: need.of(quota),
                unit: quota.unit(),
            });
        }
    }
    Ok(())
}

/// Shows callers their limits and use.
pub async fn get_quota(ctx: &Ctx, _: args::GetQuota) -> ApiResult<Quota> {
    let customer_id = ctx.customer_id();
    let mut conn = ctx.state.db.pool().acquire().await?;
    let limits = limits(&mut conn, &ctx.state.quota_defaults, customer_id).await?;
    let mut shown = [(0i64, 0i64); COUNT];
    for quota in QuotaName::ALL {
        shown[quota.index()] = (
            limits.get(quota).unwrap_or(-1),
            used(&mut conn, customer_id, quota).await?,
        );
    }
    let [
        storage,
        servers,
        vcpus,
        memory,
        jobs,
        vlans,
        forwards,
        templates,
        rules,
    ] = shown;
    Ok(Quota {
        storage_bytes_limit: storage.0,
        storage_bytes_used: storage.1,
        servers_limit: servers.0,
        servers_used: servers.1,
        running_vcpus_limit: vcpus.0,
        running_vcpus_used: vcpus.1,
        running_memory_mb_limit: memory.0,
        running_memory_mb_used: memory.1,
        concurrent_jobs_limit: jobs.0,
        concurrent_jobs_used: jobs.1,
        vlans_limit: vlans.0,
        vlans_used: vlans.1,
        port_forwards_limit: forwards.0,
        port_forwards_used: forwards.1,
        firewall_templates_limit: templates.0,
        firewall_templates_used: templates.1,
        firewall_rules_limit: rules.0,
        firewall_rules_used: rules.1,
    })
}

/// A change to a customer's own limits (`extility customer set-quota`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaChange {
    /// The customer's own limit (`None`: no limit), in place of the platform default.
    Set(QuotaName, Option<i64>),
    /// Back to the platform default.
    Unset(QuotaName),
}

/// Applies `changes` to the limits of the customer with e-mail `email`, in one transaction,
/// and returns the customer's own limits as they then are.
pub async fn set_customer_quotas(
    db: &Db,
    email: &str,
    changes: &[QuotaChange],
) -> ApiResult<Vec<(QuotaName, Option<i64>)>> {
    let mut tx = crate::ops::audit::begin_write(db).await?;
    let customer_id = customer::id_by_email(&mut tx, email)
        .await?
        .ok_or_else(|| ApiError::UnknownCustomer(email.trim().to_string()))?;
    for change in changes {
        match *change {
            QuotaChange::Set(quota, limit) => {
                if limit.is_some_and(|l| l < 0) {
                    return Err(ApiError::invalid(
                        quota.as_str(),
                        "must be a number of 0 or more, or unlimited",
                    ));
                }
                sqlx::query(
                    "INSERT INTO customer_quotas (customer_id, quota, quota_limit, updated) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (customer_id, quota) \
                     DO UPDATE SET quota_limit = excluded.quota_limit, updated = excluded.updated",
                )
                .bind(customer_id)
                .bind(quota.as_str())
                .bind(limit)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            }
            QuotaChange::Unset(quota) => {
                sqlx::query("DELETE FROM customer_quotas WHERE customer_id = $1 AND quota = $2")
                    .bind(customer_id)
                    .bind(quota.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    let own = own_limits(&mut tx, customer_id).await?;
    tx.commit().await?;
    Ok(own)
}

/// Fails with INSUFFICIENT_STORAGE while this node's volume file system has less free space
/// than `--min-free-space`: what FetchDisk's and CreateImage's jobs check before they write.
pub async fn ensure_node_free_space(state: &AppState) -> ApiResult<()> {
    let (storage, reserve) = (state.storage.clone(), state.min_free_space);
    tokio::task::spawn_blocking(move || storage.ensure_free_space(reserve)).await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_are_found_by_name_and_by_flag() {
        for quota in QuotaName::ALL {
            assert_eq!(QuotaName::parse(quota.as_str()), Some(quota));
        }
        assert_eq!(
            QuotaName::parse("running-memory"),
            Some(QuotaName::RunningMemoryMb)
        );
        assert_eq!(
            QuotaName::parse("Storage-Bytes"),
            Some(QuotaName::StorageBytes)
        );
        assert_eq!(QuotaName::parse("disks"), None);
    }

    #[test]
    fn the_message_names_the_quota() {
        let err = ApiError::QuotaExceeded {
            quota: QuotaName::StorageBytes.as_str(),
            limit: 10 << 30,
            would_use: 20 << 30,
            unit: QuotaName::StorageBytes.unit(),
        };
        assert_eq!(err.code(), "QUOTA_EXCEEDED");
        assert_eq!(
            err.to_string(),
            "quota storage_bytes exceeded: 21474836480 of 10737418240 bytes would be in use"
        );
    }
}
