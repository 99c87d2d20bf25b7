pub mod billing;
pub mod credentials;
pub mod customer;
pub mod quota;
pub mod ssh_key;
pub mod throttle;
pub mod token;
pub mod vdc;
