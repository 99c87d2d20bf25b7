pub mod fetch;
pub mod job;
