//! The application state every request handler and job shares: the configuration and the
//! engines the operation layer drives (database, storage, hypervisor, job queue), and the
//! audit trail's queue of failed logins.

use std::ops::Deref;
use std::sync::Arc;

use crate::config::Config;
use crate::db::Db;
use crate::fetch::FetchTls;
use crate::hypervisor::Hypervisor;
use crate::jobs::JobQueue;
use crate::network::Network;
use crate::ops::accounts::credentials::CredentialCache;
use crate::ops::accounts::quota;
use crate::ops::audit::AuditLog;
use crate::ops::inflight::CallsInFlight;
use crate::storage::Storage;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub db: Db,
    pub storage: Arc<dyn Storage>,
    pub hypervisor: Arc<dyn Hypervisor>,
    /// What connects servers' NICs to their VLANs (bridges and taps, or QEMU's confined
    /// user-mode network).
    pub network: Arc<dyn Network>,
    pub jobs: JobQueue,
    pub credentials: CredentialCache,
    /// The failed logins waiting for the audit trail's writer.
    pub audit: AuditLog,
    /// What https and ftps fetches trust: the system's roots and `--fetch-ca-file`.
    pub fetch_tls: FetchTls,
    /// `http://<address this node is bound to>`.
    pub local_url: String,
    /// The quotas of customers without limits of their own (`--quota-*`).
    pub quota_defaults: quota::Limits,
    /// Bytes the volume file system keeps free: fetches and copies refuse to start below it
    /// (`--min-free-space`).
    pub min_free_space: u64,
    /// Each customer's API calls in flight on this node (`--max-calls-in-flight`).
    pub calls_in_flight: Arc<CallsInFlight>,
    /// The interactive consoles open on this node, by customer and by VM
    /// (`--max-consoles-per-customer`, `--max-consoles-per-server`).
    pub consoles: Arc<crate::ops::server::console::OpenConsoles>,
    /// This node's network applies, one at a time, bursts of changes coalesced.
    pub network_applier: Arc<crate::ops::network::plan::Applier>,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        AppState(Arc::new(inner))
    }
}

impl Inner {
    /// The URL this node is reached at: `--public-url`, else its bound address.
    pub fn base_url(&self) -> String {
        self.config
            .public_url
            .as_deref()
            .unwrap_or(&self.local_url)
            .trim_end_matches('/')
            .to_string()
    }
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}
