//! The integration tests, as one test binary (`cargo test --test it`): each module below was a
//! test file of its own; `support` holds the helpers they share. A module's tests run with
//! `cargo test --test it fetch::` (its path is the test names' prefix).

mod support;

mod api_bad_input;
mod api_isolation;
mod api_json;
mod api_smoke;
mod audit;
mod cloud_init;
mod cluster_networks;
mod compose;
mod confinement;
mod decompression_limits;
mod fair_scheduling;
mod fetch;
mod fetch_budgets;
mod fetch_tls;
mod firstboot;
mod fsmaker;
mod fuzz;
mod guest_network;
mod image_formats;
mod image_jobs;
mod images;
mod images_soap;
mod interface_docs;
mod jobs_cluster;
mod jobs_fencing;
mod layers;
mod list_paging;
mod login_throttling;
mod metrics;
mod nodes;
mod panel;
mod panel_ops;
mod provenance;
mod qemu_driver;
mod qemu_servers;
mod quotas;
mod rbd_storage;
mod real_guests;
mod snapshots;
mod soak_findings;
mod soap_axis;
mod soap_php;
mod soap_zeep;
mod sparsecopy;
mod ssh_keys;
mod tenant_networks;
mod tokens;
