//! This node's metrics, in the Prometheus text format (`GET /metrics`).
//!
//! One process-wide registry of the `prometheus` crate. Events are counted where they happen:
//! API calls by the operation table's entry points (`crate::ops::registry`), jobs by the worker
//! pool (`crate::jobs::worker`), fetched bytes by FetchDisk's job. What is state rather than
//! event (jobs by kind and status, VMs, storage, nodes) is read from the database when scraped
//! (`crate::ops::platform::metrics`), so every node reports the same cluster-wide job counts and its own
//! VMs and storage.
//!
//! Labels are bounded: operation names come from the operation table (unknown names are never
//! labels), error codes from `ApiError::code`, job kinds from the job kind list.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric of this process.
pub struct Metrics {
    registry: Registry,
    /// API calls by operation, adapter (`soap`, `json`, `panel`, `cli`) and outcome (`OK` or
    /// the error's code).
    pub api_requests: IntCounterVec,
    /// How long API calls took, by operation.
    pub api_request_seconds: HistogramVec,
    /// API calls in flight on this node, all customers together (each customer's are bounded
    /// by `--max-calls-in-flight`: `crate::ops::inflight`).
    pub api_calls_in_flight: IntGauge,
    /// Jobs by kind and status, in the whole cluster (set when scraped).
    pub jobs: IntGaugeVec,
    /// How long jobs waited between being queued and starting, by kind.
    pub job_wait_seconds: HistogramVec,
    /// How long job attempts ran on this node, by kind and outcome (`succeeded`, `failed`,
    /// `cancelled`).
    pub job_run_seconds: HistogramVec,
    /// Bytes FetchDisk received on this node (compressed, as they came over the network).
    pub fetch_bytes: IntCounter,
    /// Each successful fetch's throughput, in bytes of image per second.
    pub fetch_throughput: Histogram,
    /// VMs running on this node (set when scraped).
    pub vms_running: IntGauge,
    /// Bytes of volumes this node's storage holds, as the volumes table sizes them, and bytes
    /// free on the file system of the data directory (set when scraped).
    pub storage_volume_bytes: IntGauge,
    pub storage_free_bytes: IntGauge,
    /// Nodes known to the cluster: 1 when its heartbeat is recent, 0 otherwise (set when
    /// scraped).
    pub node_up: IntGaugeVec,
    /// Seconds since each node's last heartbeat (set when scraped).
    pub node_heartbeat_age_seconds: IntGaugeVec,
    /// Applies of this node's network plan, by kind: `change` (what changes asked for, each
    /// apply taking in every change made before it began) and `resync` (the periodic check).
    pub network_applies: IntCounterVec,
    /// Resyncs that found the host no longer holding what was applied (and wrote it all
    /// again).
    pub network_drifts: IntCounter,
}

/// Buckets for API latencies: 1 ms to 30 s.
const API_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets for job waits and runs: 10 ms to 2 h.
const JOB_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0,
];
/// Buckets for fetch throughput: 1 MB/s to 2 GB/s.
const THROUGHPUT_BUCKETS: &[f64] = &[1e6, 5e6, 1e7, 2.5e7, 5e7, 1e8, 2e8, 4e8, 8e8, 2e9];

impl Metrics {
    fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let api_requests = IntCounterVec::new(
            Opts::new(
                "extility_api_requests_total",
                "API calls by operation, adapter and outcome",
            ),
            &["operation", "via", "outcome"],
        )?;
        let api_request_seconds = HistogramVec::new(
            HistogramOpts::new("extility_api_request_seconds", "How long API calls took")
                .buckets(API_BUCKETS.to_vec()),
            &["operation"],
        )?;
        let jobs = IntGaugeVec::new(
            Opts::new("extility_jobs", "Jobs in the cluster by kind and status"),
            &["kind", "status"],
        )?;
        let job_wait_seconds = HistogramVec::new(
            HistogramOpts::new(
                "extility_job_wait_seconds",
                "How long jobs waited in the queue before starting",
            )
            .buckets(JOB_BUCKETS.to_vec()),
            &["kind"],
        )?;
        let job_run_seconds = HistogramVec::new(
            HistogramOpts::new(
                "extility_job_run_seconds",
                "How long job attempts ran on this node",
            )
            .buckets(JOB_BUCKETS.to_vec()),
            &["kind", "outcome"],
        )?;
        let fetch_bytes = IntCounter::new(
            "extility_fetch_bytes_total",
            "Bytes FetchDisk received on this node",
        )?;
        let fetch_throughput = Histogram::with_opts(
            HistogramOpts::new(
                "extility_fetch_throughput_bytes_per_second",
                "Throughput of each successful fetch, in image bytes per second",
            )
            .buckets(THROUGHPUT_BUCKETS.to_vec()),
        )?;
        let api_calls_in_flight = IntGauge::new(
            "extility_api_calls_in_flight",
            "API calls in flight on this node",
        )?;
        let vms_running = IntGauge::new("extility_vms_running", "VMs running on this node")?;
        let storage_volume_bytes = IntGauge::new(
            "extility_storage_volume_bytes",
            "Virtual size of the volumes in this node's storage",
        )?;
        let storage_free_bytes = IntGauge::new(
            "extility_storage_free_bytes",
            "Bytes free on the file system of this node's data directory",
        )?;
        let node_up = IntGaugeVec::new(
            Opts::new("extility_node_up", "1 when the node's heartbeat is recent"),
            &["node"],
        )?;
        let node_heartbeat_age_seconds = IntGaugeVec::new(
            Opts::new(
                "extility_node_heartbeat_age_seconds",
                "Seconds since the node's last heartbeat",
            ),
            &["node"],
        )?;
        let network_applies = IntCounterVec::new(
            Opts::new(
                "extility_network_applies_total",
                "Applies of this node's network plan, by kind (change, resync)",
            ),
            &["kind"],
        )?;
        let network_drifts = IntCounter::new(
            "extility_network_drifts_total",
            "Resyncs that found the host's networks drifted from what was applied",
        )?;
        registry.register(Box::new(network_applies.clone()))?;
        registry.register(Box::new(network_drifts.clone()))?;
        registry.register(Box::new(api_requests.clone()))?;
        registry.register(Box::new(api_request_seconds.clone()))?;
        registry.register(Box::new(api_calls_in_flight.clone()))?;
        registry.register(Box::new(jobs.clone()))?;
        registry.register(Box::new(job_wait_seconds.clone()))?;
        registry.register(Box::new(job_run_seconds.clone()))?;
        registry.register(Box::new(fetch_bytes.clone()))?;
        registry.register(Box::new(fetch_throughput.clone()))?;
        registry.register(Box::new(vms_running.clone()))?;
        registry.register(Box::new(storage_volume_bytes.clone()))?;
        registry.register(Box::new(storage_free_bytes.clone()))?;
        registry.register(Box::new(node_up.clone()))?;
        registry.register(Box::new(node_heartbeat_age_seconds.clone()))?;
        Ok(Metrics {
            registry,
            api_requests,
            api_request_seconds,
            api_calls_in_flight,
            jobs,
            job_wait_seconds,
            job_run_seconds,
            fetch_bytes,
            fetch_throughput,
            vms_running,
            storage_volume_bytes,
            storage_free_bytes,
            node_up,
            node_heartbeat_age_seconds,
            network_applies,
            network_drifts,
        })
    }

    /// Every metric, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "encoding the metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// This process's metrics.
pub static METRICS: LazyLock<Metrics> =
    LazyLock::new(|| Metrics::new().expect("the metrics' names and labels are valid"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_in_the_text_format() {
        METRICS
            .api_requests
            .with_label_values(&["GetJob", "json", "OK"])
            .inc();
        METRICS.fetch_bytes.inc_by(5);
        let text = METRICS.render();
        assert!(
            text.contains("# TYPE extility_api_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"extility_api_requests_total{operation="GetJob",outcome="OK",via="json"}"#
            ),
            "{text}"
        );
        assert!(text.contains("extility_fetch_bytes_total"), "{text}");
    }
}
