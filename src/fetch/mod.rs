//! The image writer: fetches a disk image from a URL and writes it thinly into a file. What
//! the file becomes is decided by FetchDisk's job kind in the operation layer.
//!
//! - [`source`]: the URL, its credentials and the expected checksum, as FetchDisk takes them.
//! - [`guard`]: which addresses may be fetched from, and DNS answers pinned to checked ones.
//! - [`http`], [`ftp`]: the downloaders (redirects, timeouts, resumption).
//! - [`budget`]: how long, how slow and how flaky a fetch may be (`FETCH_TIMEOUT`).
//! - [`tls`]: the certificates https and ftps sources are checked against.
//! - [`decode`]: compression recognised by magic bytes (gzip, xz, zstd); xz and zstd decoders
//!   under a memory limit, and a bound on input that decodes to nothing.
//! - [`pipeline`]: download → decompress → hash → thin write on threads with bounded buffers,
//!   into a staging file or straight into a staging volume (RBD) for raw images;
//!   the image's format is recognised from its first bytes.
//! - [`inspect`]: the image inspector: the format by its bytes, and whether a qcow2, VMDK,
//!   VHD or VHDX image is safe to convert (`UNSAFE_IMAGE` when not).
//! - [`convert`]: `qemu-img convert -f <format> -O raw` into a thin file, with progress and
//!   cancellation.
//! - [`writer`]: source in, verified, inspected and converted thin raw file out
//!   ([`fetch_image`]).

pub mod budget;
mod convert;
pub mod decode;
pub mod error;
pub mod ftp;
pub mod guard;
pub mod http;
pub mod inspect;
pub mod pipeline;
mod source;
pub mod tls;
mod writer;

pub use budget::{FetchBudget, FetchLimits};
pub use error::{FetchError, FetchResult};
pub use inspect::ImageFormat;
pub use pipeline::{MakeVolume, Streamed, Volume, Written};
pub use source::{Algorithm, Checksum, Credentials, FetchSource, display_url};
pub use tls::FetchTls;
pub use writer::{FetchPolicy, Fetched, fetch_image, scratch_path};

/// An error and its causes on one line ("error sending request: connection refused").
pub(crate) fn describe_error(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        next = cause.source();
    }
    text
}
