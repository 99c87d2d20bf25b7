//! The image tool-chain behind the `sparsecopy` and `fsmaker` binaries: the binaries only
//! parse arguments and print; the work is here so that it can be tested.

pub mod device;
pub mod fsmaker;
pub mod partition;
pub mod sparsecopy;
