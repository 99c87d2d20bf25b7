//! Tenant networks: the VLANs of a VDC and what this node must wire for them. Uses `core` and
//! `accounts` (a VLAN is in a customer's VDC and counts against the quota).
//!
//! Owns: `vlans` and their subnets (`vlan`), and the network plan (`plan`): read from the
//! database, with the NICs' MAC addresses (`plan::mac_address`), and applied through the
//! network engine before a VM starts, after one ends, at start and every 10 s.

pub mod firewall;
pub mod plan;
pub mod vlan;
