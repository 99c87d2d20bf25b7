//! How an [`ApiError`] is shown: the HTTP status of a JSON error, and the SOAP fault's code
//! and `errorType`. One mapping for every adapter, so the same error reads the same way over
//! SOAP, JSON and in the panel; the stable `errorCode` is [`ApiError::code`].

use axum::http::StatusCode;

use crate::error::ApiError;

/// Who is to blame, in SOAP 1.1 terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultCode {
    Client,
    Server,
}

/// The family of the error, sent as `errorType` in SOAP faults.
pub fn error_type(err: &ApiError) -> &'static str {
    match err {
        ApiError::NotFound { .. } | ApiError::UnknownCustomer(_) => "NotFoundException",
        ApiError::MissingArgument(_)
        | ApiError::InvalidArgument { .. }
        | ApiError::UnknownOperation { .. }
        | ApiError::NotInVersion { .. }
        | ApiError::MalformedRequest(_)
        | ApiError::PayloadTooLarge(_) => "ValidationException",
        ApiError::CredentialsMissing
        | ApiError::Unauthenticated
        | ApiError::PermissionDenied(_) => "PermissionException",
        ApiError::Conflict(_) | ApiError::ImageNotClean { .. } => "InvalidStateException",
        ApiError::ImageUnreadable(_) => "ImageException",
        ApiError::LimitExceeded(_)
        | ApiError::QuotaExceeded { .. }
        | ApiError::TooManyLoginAttempts { .. }
        | ApiError::TooManyCalls { .. } => "LimitException",
        ApiError::ChecksumMismatch { .. }
        | ApiError::ImageTooLarge { .. }
        | ApiError::UnsafeImage(_)
        | ApiError::DecompressionLimit { .. }
        | ApiError::FetchRefused(_)
        | ApiError::FetchFailed(_)
        | ApiError::FetchTimeout(_) => "FetchException",
        ApiError::Cancelled | ApiError::Interrupted(_) => "JobException",
        ApiError::Hypervisor(_)
        | ApiError::Storage(_)
        | ApiError::InsufficientStorage { .. }
        | ApiError::ConversionSpace { .. }
        | ApiError::StorageFull { .. }
        | ApiError::DatabaseUnavailable(_)
        | ApiError::Internal(_) => "ServerException",
    }
}

pub fn http_status(err: &ApiError) -> StatusCode {
    match err {
        ApiError::NotFound { .. } | ApiError::UnknownCustomer(_) => StatusCode::NOT_FOUND,
        ApiError::UnknownOperation { .. } | ApiError::NotInVersion { .. } => StatusCode::NOT_FOUND,
        ApiError::MissingArgument(_)
        | ApiError::InvalidArgument { .. }
        | ApiError::MalformedRequest(_)
        | ApiError::ChecksumMismatch { .. }
        | ApiError::ImageTooLarge { .. }
        | ApiError::UnsafeImage(_)
        | ApiError::DecompressionLimit { .. }
        | ApiError::FetchRefused(_) => StatusCode::BAD_REQUEST,
        ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ApiError::CredentialsMissing | ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
        // A quota is what this customer is allowed, like a permission: retrying the same call
        // does not help until the customer frees something or the operator raises it (429
        // would invite retries; 409 here means the resource's state).
        ApiError::PermissionDenied(_) | ApiError::QuotaExceeded { .. } => StatusCode::FORBIDDEN,
        // The image is as it is: it must be cleaned (a new image) before it is published.
        ApiError::Conflict(_) | ApiError::ImageNotClean { .. } | ApiError::Cancelled => {
            StatusCode::CONFLICT
        }
        // What the customer's image holds, not the platform's trouble.
        ApiError::ImageUnreadable(_) => StatusCode::UNPROCESSABLE_ENTITY,
        ApiError::LimitExceeded(_)
        | ApiError::TooManyLoginAttempts { .. }
        | ApiError::TooManyCalls { .. } => StatusCode::TOO_MANY_REQUESTS,
        ApiError::FetchFailed(_) => StatusCode::BAD_GATEWAY,
        // The source was too slow or too flaky for the fetch's budgets: the upstream's fault.
        ApiError::FetchTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        // The node's own disk is short of space: the platform's trouble, not the caller's.
        ApiError::InsufficientStorage { .. }
        | ApiError::ConversionSpace { .. }
        | ApiError::StorageFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
        // The database is out of reach: the same call may succeed in a few seconds.
        ApiError::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ApiError::Interrupted(_)
        | ApiError::Hypervisor(_)
        | ApiError::Storage(_)
        | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub fn fault_code(err: &ApiError) -> FaultCode {
    if http_status(err).is_server_error() || matches!(err, ApiError::FetchFailed(_)) {
        FaultCode::Server
    } else {
        FaultCode::Client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_timeout_is_the_sources_fault() {
        let err = ApiError::FetchTimeout("the fetch took longer than its 1 min deadline".into());
        assert_eq!(err.code(), "FETCH_TIMEOUT");
        assert_eq!(http_status(&err), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(fault_code(&err), FaultCode::Server);
        assert_eq!(error_type(&err), "FetchException");
        assert_eq!(
            err.public_message(),
            "the fetch took longer than its 1 min deadline"
        );
    }

    #[test]
    fn an_unsafe_image_is_the_callers_fetch_problem() {
        let err = ApiError::UnsafeImage("it names a backing file (\"/etc/passwd\")".into());
        assert_eq!(err.code(), "UNSAFE_IMAGE");
        assert_eq!(http_status(&err), StatusCode::BAD_REQUEST);
        assert_eq!(fault_code(&err), FaultCode::Client);
        assert_eq!(error_type(&err), "FetchException");
        assert!(err.public_message().contains("/etc/passwd"));
    }

    #[test]
    fn hygiene_refusals_are_the_callers() {
        let err = ApiError::ImageNotClean {
            image_id: 7,
            findings: "PASSWORD_HASH: /etc/shadow".into(),
        };
        assert_eq!(err.code(), "IMAGE_NOT_CLEAN");
        assert_eq!(http_status(&err), StatusCode::CONFLICT);
        assert_eq!(fault_code(&err), FaultCode::Client);
        assert_eq!(error_type(&err), "InvalidStateException");
        assert!(err.public_message().contains("PASSWORD_HASH: /etc/shadow"));
        let err = ApiError::ImageUnreadable("no file system found".into());
        assert_eq!(err.code(), "IMAGE_UNREADABLE");
        assert_eq!(http_status(&err), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(fault_code(&err), FaultCode::Client);
        assert_eq!(error_type(&err), "ImageException");
        assert_eq!(
            err.public_message(),
            "the image cannot be read: no file system found"
        );
    }

    #[test]
    fn a_decompression_limit_is_the_callers_fetch_problem() {
        let err = ApiError::DecompressionLimit {
            compression: "xz",
            limit: 256 << 20,
        };
        assert_eq!(err.code(), "DECOMPRESSION_LIMIT");
        assert_eq!(http_status(&err), StatusCode::BAD_REQUEST);
        assert_eq!(fault_code(&err), FaultCode::Client);
        assert_eq!(error_type(&err), "FetchException");
        assert_eq!(
            err.public_message(),
            "decompressing the xz data needs more than 256 MiB of memory, this server's limit: \
             recompress it with a smaller dictionary (xz -9 uses 64 MiB)"
        );
        let err = ApiError::DecompressionLimit {
            compression: "zstd",
            limit: 3 << 19,
        };
        assert!(
            err.to_string()
                .contains("more than 1572864 bytes of memory")
        );
        assert!(
            err.to_string()
                .ends_with("smaller window (zstd --long uses 128 MiB)")
        );
    }
}
