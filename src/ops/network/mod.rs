pub mod plan;
pub mod vlan;
