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

    /// No operation has this name; `nearest` is one whose name is a few letters from it.
    #[error("unknown operation '{name}'{}", did_you_mean(nearest))]
    UnknownOperation {
        name: String,
        nearest: Option<&'static str>,
    },

    /// A SOAP call of an operation the endpoint's API version does not have yet.
    #[error(
        "operation '{operation}' is not in version {version} of the API: it came in version \
         {since} (POST /v{since}/, WSDL /v{since}/?wsdl)"
    )]
    NotInVersion {
        operation: &'static str,
        version: u32,
        since: u32,
    },

    #[error("malformed request: {0}")]
    MalformedRequest(String),

    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),

    /// The request carried no credentials (or a header that is not Basic or Bearer).
    #[error(
        "authentication required: send HTTP Basic credentials (customer e-mail and password, or \
         an authentication token as the user name) or a Bearer token"
    )]
    CredentialsMissing,

    /// The credentials were read but are wrong: an unknown e-mail, a wrong password, or a
    /// token that is unknown, expired or revoked (which of them is not said).
    #[error(
        "the e-mail address and password, or the token, are not right (a token may have \
         expired or been revoked)"
    )]
    Unauthenticated,

    /// A command named a customer by an e-mail address no customer has.
    #[error("no customer has the e-mail {0}")]
    UnknownCustomer(String),

    #[error("{0}")]
    PermissionDenied(String),

    /// The request is well formed but the resource is in the wrong state for it.
    #[error("{0}")]
    Conflict(String),

    #[error("{0}")]
    LimitExceeded(String),

    /// A call or job would take the customer past one of its quotas (`crate::ops::accounts::quota`);
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

    /// The customer has as many API calls in flight on this node as it may
    /// (`--max-calls-in-flight`, `crate::ops::inflight`), and none ended while this one
    /// waited: nothing was done. Shown with HTTP 429 and `Retry-After`.
    #[error(
        "too many calls in flight: this customer has {limit} API calls running on this node, \
         the most it may; nothing was done, retry in {retry_after} s"
    )]
    TooManyCalls { limit: usize, retry_after: u64 },

    // ---- failures of long-running work (job error codes) ----
    #[error("checksum mismatch: expected {expected}, computed {actual}")]
    ChecksumMismatch { expected: String, actual: String },

    #[error("the image is larger than the disk ({disk_size} bytes)")]
    ImageTooLarge { disk_size: u64 },

    /// The image inspector refused the fetched image (`crate::fetch::inspect`): a backing or
    /// external data file, extents in other files, a virtual size beyond the disk, tables
    /// outside the file, two formats in one file, ... Nothing was created.
    #[error("the image is refused as unsafe: {0}")]
    UnsafeImage(String),

    /// Converting a fetched image (qcow2, VMDK, ...) into a raw volume needs more free space
    /// than this node has, besides its reserve (`--min-free-space`).
    #[error(
        "this node's volume storage has {free} bytes free; converting the image needs up to \
         {needed} bytes and the {reserve} bytes it keeps in reserve; nothing was written"
    )]
    ConversionSpace {
        free: u64,
        needed: u64,
        reserve: u64,
    },

    /// The node's volume file system filled up while an image was written into it: what was
    /// written is removed, and the file system was taken no lower than the reserve
    /// (`--min-free-space`) when the node's own writing filled it.
    #[error(
        "this node's volume storage is full: the image's first {written} bytes took it down \
         to the {reserve} bytes it keeps in reserve; what was written is removed. Free space \
         on the node (or fetch to another) and retry"
    )]
    StorageFull { written: u64, reserve: u64 },

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

    /// PublishImage under the operator's `--publish-requires-clean`: the image was never
    /// checked (CheckImage), could not be read, or has high-severity findings, listed in
    /// `findings` ("PASSWORD_HASH: /etc/shadow (root); SSH_HOST_KEYS: ..."). Nothing was
    /// published.
    #[error(
        "image {image_id} may not be published until it is clean (this platform requires it): \
         {findings}"
    )]
    ImageNotClean { image_id: i64, findings: String },

    /// An image's (or disk's) file systems could not be read by the image checker: corrupt,
    /// hostile, not a disk, or past the checker's memory or time (`--hygiene-memory`,
    /// `--hygiene-timeout`). The message says which.
    #[error("the image cannot be read: {0}")]
    ImageUnreadable(String),

    #[error("{0}")]
    FetchFailed(String),

    /// A fetch ran out of one of its budgets (`--fetch-deadline`, `--fetch-min-throughput`,
    /// `--fetch-max-retries`, `--fetch-max-padding`): the source was too slow, too flaky, or
    /// sent data that decodes to nothing, for longer than the server allows. The message says
    /// which budget (the fetch engine's `FetchBudget`).
    #[error("{0}")]
    FetchTimeout(String),

    #[error("{0}")]
    Hypervisor(String),

    #[error("{0}")]
    Storage(String),

    #[error("the job was cancelled")]
    Cancelled,

    #[error("{0}")]
    Interrupted(String),

    /// The database is out of reach (restarting, failing over, a dropped connection, no
    /// connection within `crate::db`'s wait for one): nothing the request did. A write that failed so
    /// may or may not have been committed. Shown as HTTP 503 with `Retry-After`; the cause is
    /// logged.
    #[error(
        "the service's database cannot be reached at the moment: retry in {} s (a change made \
         by this call may or may not have been kept: read before repeating it)",
        RETRY_AFTER_UNAVAILABLE
    )]
    DatabaseUnavailable(#[source] anyhow::Error),

    /// Anything unexpected. The message shown to callers stays generic; the cause is logged.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// Seconds a caller is asked to wait (`Retry-After`) when the database is out of reach.
pub const RETRY_AFTER_UNAVAILABLE: u64 = 5;

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

    /// An unexpected failure; [`ApiError::DatabaseUnavailable`] when its cause is the
    /// database being out of reach.
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        let err = err.into();
        if cause_is_database_unavailable(&err) {
            ApiError::DatabaseUnavailable(err)
        } else {
            ApiError::Internal(err)
        }
    }

    /// This error, with an internal one whose cause is the database being out of reach made
    /// [`ApiError::DatabaseUnavailable`] (for errors made as `ApiError::Internal(..)`
    /// directly): what the adapters show.
    pub fn classified(self) -> Self {
        match self {
            ApiError::Internal(err) => ApiError::internal(err),
            other => other,
        }
    }

    /// The stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "NOT_FOUND",
            ApiError::MissingArgument(_) => "MISSING_ARGUMENT",
            ApiError::InvalidArgument { .. } => "INVALID_ARGUMENT",
            ApiError::UnknownOperation { .. } | ApiError::NotInVersion { .. } => {
                "UNKNOWN_OPERATION"
            }
            ApiError::MalformedRequest(_) => "MALFORMED_REQUEST",
            ApiError::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            ApiError::CredentialsMissing => "AUTHENTICATION_REQUIRED",
            ApiError::Unauthenticated => "UNAUTHENTICATED",
            ApiError::UnknownCustomer(_) => "NOT_FOUND",
            ApiError::PermissionDenied(_) => "PERMISSION_DENIED",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::LimitExceeded(_) => "LIMIT_EXCEEDED",
            ApiError::QuotaExceeded { .. } => "QUOTA_EXCEEDED",
            ApiError::InsufficientStorage { .. } => "INSUFFICIENT_STORAGE",
            ApiError::TooManyLoginAttempts { .. } => "TOO_MANY_LOGIN_ATTEMPTS",
            ApiError::TooManyCalls { .. } => "TOO_MANY_REQUESTS",
            ApiError::ChecksumMismatch { .. } => "CHECKSUM_MISMATCH",
            ApiError::ImageTooLarge { .. } => "IMAGE_TOO_LARGE",
            ApiError::UnsafeImage(_) => "UNSAFE_IMAGE",
            ApiError::ConversionSpace { .. } => "INSUFFICIENT_STORAGE",
            ApiError::StorageFull { .. } => "INSUFFICIENT_STORAGE",
            ApiError::DecompressionLimit { .. } => "DECOMPRESSION_LIMIT",
            ApiError::FetchRefused(_) => "FETCH_REFUSED",
            ApiError::ImageNotClean { .. } => "IMAGE_NOT_CLEAN",
            ApiError::ImageUnreadable(_) => "IMAGE_UNREADABLE",
            ApiError::FetchFailed(_) => "FETCH_FAILED",
            ApiError::FetchTimeout(_) => "FETCH_TIMEOUT",
            ApiError::Hypervisor(_) => "HYPERVISOR_ERROR",
            ApiError::Storage(_) => "STORAGE_ERROR",
            ApiError::Cancelled => "CANCELLED",
            ApiError::Interrupted(_) => "INTERRUPTED",
            ApiError::DatabaseUnavailable(_) => "SERVICE_UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// Whether this is the database being out of reach (restarting, failing over, a dropped
    /// connection) rather than anything the request or job did. A write that failed so may or
    /// may not have been committed: its outcome is unknown until the database answers again.
    pub fn is_database_unavailable(&self) -> bool {
        match self {
            ApiError::DatabaseUnavailable(_) => true,
            ApiError::Internal(cause) => cause_is_database_unavailable(cause),
            _ => false,
        }
    }

    /// Seconds the client should wait before trying again (HTTP `Retry-After`), if any.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::TooManyLoginAttempts { retry_after, .. }
            | ApiError::TooManyCalls { retry_after, .. } => Some(*retry_after),
            ApiError::DatabaseUnavailable(_) => Some(RETRY_AFTER_UNAVAILABLE),
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
            ApiError::DatabaseUnavailable(cause) => {
                tracing::warn!(error = %format!("{cause:#}"), "the database is unavailable");
                self.to_string()
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
        ApiError::internal(err)
    }
}

/// Whether an error's chain says the database is out of reach rather than that a statement
/// went wrong.
fn cause_is_database_unavailable(cause: &anyhow::Error) -> bool {
    cause
        .chain()
        .any(|e| match e.downcast_ref::<sqlx::Error>() {
            Some(
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed,
            ) => true,
            // PostgreSQL's SQLSTATE classes 08 (connection exception) and 57P (the server
            // shutting down, crashed, or not accepting connections yet), and 57014 (a statement
            // cancelled by its `statement_timeout`: the database too slow to answer).
            Some(sqlx::Error::Database(db)) => db.code().is_some_and(|code| {
                code.starts_with("08") || code.starts_with("57P") || code == "57014"
            }),
            _ => false,
        })
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(err: tokio::task::JoinError) -> Self {
        ApiError::Internal(err.into())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// ` (did you mean 'X'?)` for a suggestion, or nothing.
fn did_you_mean(nearest: &Option<&'static str>) -> String {
    nearest
        .map(|name| format!(" (did you mean '{name}'?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_the_database_being_unavailable() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(ApiError::from(sqlx::Error::Io(reset)).is_database_unavailable());
        assert!(ApiError::from(sqlx::Error::PoolTimedOut).is_database_unavailable());
        // Wrapped with context, as `anyhow` callers do.
        let wrapped = anyhow::Error::from(sqlx::Error::PoolClosed).context("claiming a job");
        assert!(ApiError::Internal(wrapped).is_database_unavailable());
        assert!(!ApiError::from(sqlx::Error::RowNotFound).is_database_unavailable());
        assert!(!ApiError::internal(anyhow::anyhow!("a bug")).is_database_unavailable());
        assert!(!ApiError::Cancelled.is_database_unavailable());
    }
}
