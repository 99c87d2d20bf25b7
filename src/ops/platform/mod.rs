pub mod backup;
pub mod metrics;
pub mod node;
