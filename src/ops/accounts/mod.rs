//! Accounts, the lowest domain of `ops`: who the customers are, how they prove it, what they
//! may have and the VDCs everything of theirs lives in. It uses only `core`.
//!
//! Owns (the only writers): `customers` (`customer`), `billing_entities` (`billing`),
//! `customer_quotas` and the quota checks every domain makes in the transaction that makes
//! something (`quota`: limits, use counted from the other domains' tables and the jobs'
//! `reserved_bytes`, never from their code), `auth_tokens` (`token`), `panel_sessions`
//! (`session`), `vdcs` and the ownership check of a VDC (`vdc`), `ssh_keys` and
//! `server_ssh_keys` (`ssh_key`). `credentials` checks passwords and tokens (with their cache),
//! `throttle` bounds login attempts, `secret` hashes the secrets tokens and sessions are
//! found by.

pub mod billing;
pub mod credentials;
pub mod customer;
pub mod quota;
pub mod secret;
pub mod session;
pub mod ssh_key;
pub mod throttle;
pub mod token;
pub mod vdc;
