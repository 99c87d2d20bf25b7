//! The one error type of the operation layer.
//!
//! Every failure an API caller can see is an [`ApiError`]. Each variant has a stable `code`
//! (what clients match on). How an error is shown (an HTTP status and JSON body, a SOAP fault)
//! is the API adapters' business: `crate::api::error`. Job failures use the same type: a job's
//! `error_code` / `error_message` are `code()` and `public_message()` of the error that ended
//! it.

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The resource does not exist *for this caller*: another customer's id answers the same.
    #[error("{kind} {id} does not exist")]
    NotFound { kind: &'static str, id: i64 },

    #[error("missing argument '{0}'")]
    MissingArgument(String),

    #[error("argument '{name}' {problem}")]
    InvalidArgument { name: String, problem: String },

    #[error("unknown operation '{0}'")]
    UnknownOperation(String),

    #[error("malformed request: {0}")]
    MalformedRequest(String),

    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),

    #[error("authentication required: send HTTP Basic credentials (customer e-mail and password)")]
    Unauthenticated,

    #[error("{0}")]
    PermissionDenied(String),

    /// The request is well formed but the resource is in the wrong state for it.
    #[error("{0}")]
    Conflict(String),

    #[error("{0}")]
    LimitExceeded(String),

    /// A call or job would take the customer past one of its quotas (`crate::ops::quota`);
    /// nothing was made. `quota` is the quota's name, `would_use` what would then be in use,
    /// in `unit`s.
    #[error("quota {quota} exceeded: {would_use} of {limit} {unit} would be in use")]
    QuotaExceeded {
        quota: &'static str,
        limit: i64,
        would_use: i64,
        unit: &'static str,
    },

    /// The node's volume file system has less free space than the reserve it keeps
    /// (`--min-free-space`): it takes on no new fetches or copies.
    #[error(
        "this node's volume storage is nearly full: {free} bytes free, below the {reserve} \
         bytes it keeps in reserve; nothing was written"
    )]
    InsufficientStorage { free: u64, reserve: u64 },

    /// The login throttle refused to check a password (too many recent failures from the
    /// client's address, or for the account from that address, or too many checks waiting).
    /// Shown with HTTP 429 and `Retry-After`.
    #[error("{reason}: retry in {retry_after} s")]
    TooManyLoginAttempts {
        reason: &'static str,
        /// Seconds until the client may try again.
        retry_after: u64,
    },

    // ---- failures of long-running work (job error codes) ----
    #[error("checksum mismatch: expected {expected}, computed {actual}")]
    ChecksumMismatch { expected: String, actual: String },

    #[error("the image is larger than the disk ({disk_size} bytes)")]
    ImageTooLarge { disk_size: u64 },

    /// An xz stream or a zstd frame asks for more decoder memory (its dictionary or window)
    /// than the server allows (`--max-decompression-memory`).
    #[error(
        "decompressing the {compression} data needs more than {} of memory, this server's limit: \
         recompress it with a smaller {}",
        mebibytes(*.limit),
        smaller_what(.compression)
    )]
    DecompressionLimit {
        compression: &'static str,
        limit: u64,
    },

    /// The URL or an address it resolves to is not allowed (scheme, private range, ...).
    #[error("{0}")]
    FetchRefused(String),

    #[error("{0}")]
    FetchFailed(String),

    #[error("{0}")]
    Hypervisor(String),

    #[error("{0}")]
    Storage(String),

    #[error("the job was cancelled")]
    Cancelled,

    #[error("{0}")]
    Interrupted(String),

    /// Anything unexpected. The message shown to callers stays generic; the cause is logged.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn not_found(kind: &'static str, id: i64) -> Self {
        ApiError::NotFound { kind, id }
    }

    pub fn invalid(name: impl Into<String>, problem: impl Into<String>) -> Self {
        ApiError::InvalidArgument {
            name: name.into(),
            problem: problem.into(),
        }
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(err.into())
    }

    /// The stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "NOT_FOUND",
            ApiError::MissingArgument(_) => "MISSING_ARGUMENT",
            ApiError::InvalidArgument { .. } => "INVALID_ARGUMENT",
            ApiError::UnknownOperation(_) => "UNKNOWN_OPERATION",
            ApiError::MalformedRequest(_) => "MALFORMED_REQUEST",
            ApiError::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            ApiError::Unauthenticated => "UNAUTHENTICATED",
            ApiError::PermissionDenied(_) => "PERMISSION_DENIED",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::LimitExceeded(_) => "LIMIT_EXCEEDED",
            ApiError::QuotaExceeded { .. } => "QUOTA_EXCEEDED",
            ApiError::InsufficientStorage { .. } => "INSUFFICIENT_STORAGE",
            ApiError::TooManyLoginAttempts { .. } => "TOO_MANY_LOGIN_ATTEMPTS",
            ApiError::ChecksumMismatch { .. } => "CHECKSUM_MISMATCH",
            ApiError::ImageTooLarge { .. } => "IMAGE_TOO_LARGE",
            ApiError::DecompressionLimit { .. } => "DECOMPRESSION_LIMIT",
            ApiError::FetchRefused(_) => "FETCH_REFUSED",
            ApiError::FetchFailed(_) => "FETCH_FAILED",
            ApiError::Hypervisor(_) => "HYPERVISOR_ERROR",
            ApiError::Storage(_) => "STORAGE_ERROR",
            ApiError::Cancelled => "CANCELLED",
            ApiError::Interrupted(_) => "INTERRUPTED",
            ApiError::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// Seconds the client should wait before trying again (HTTP `Retry-After`), if any.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::TooManyLoginAttempts { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The message shown to API callers. Internal errors are logged with their cause and a
    /// reference, and callers see only the reference.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Internal(cause) => {
                let reference = uuid::Uuid::new_v4();
                tracing::error!(%reference, error = ?cause, "internal error");
                format!("internal error (reference {reference})")
            }
            other => other.to_string(),
        }
    }
}

/// `256 MiB`, or bytes when not a whole number of MiB.
fn mebibytes(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// What to make smaller, with what the common settings take.
fn smaller_what(compression: &str) -> &'static str {
    match compression {
        "xz" => "dictionary (xz -9 uses 64 MiB)",
        "zstd" => "window (zstd --long uses 128 MiB)",
        _ => "window",
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        ApiError::Internal(err.into())
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(err: tokio::task::JoinError) -> Self {
        ApiError::Internal(err.into())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
