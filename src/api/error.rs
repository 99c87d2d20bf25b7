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
        ApiError::NotFound { .. } => "NotFoundException",
        ApiError::MissingArgument(_)
        | ApiError::InvalidArgument { .. }
        | ApiError::UnknownOperation(_)
        | ApiError::MalformedRequest(_)
        | ApiError::PayloadTooLarge(_) => "ValidationException",
        ApiError::Unauthenticated | ApiError::PermissionDenied(_) => "PermissionException",
        ApiError::Conflict(_) => "InvalidStateException",
        ApiError::LimitExceeded(_) | ApiError::TooManyLoginAttempts { .. } => "LimitException",
        ApiError::ChecksumMismatch { .. }
        | ApiError::ImageTooLarge { .. }
        | ApiError::FetchRefused(_)
        | ApiError::FetchFailed(_) => "FetchException",
        ApiError::Cancelled | ApiError::Interrupted(_) => "JobException",
        ApiError::Hypervisor(_) | ApiError::Storage(_) | ApiError::Internal(_) => "ServerException",
    }
}

pub fn http_status(err: &ApiError) -> StatusCode {
    match err {
        ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
        ApiError::UnknownOperation(_) => StatusCode::NOT_FOUND,
        ApiError::MissingArgument(_)
        | ApiError::InvalidArgument { .. }
        | ApiError::MalformedRequest(_)
        | ApiError::ChecksumMismatch { .. }
        | ApiError::ImageTooLarge { .. }
        | ApiError::FetchRefused(_) => StatusCode::BAD_REQUEST,
        ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
        ApiError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        ApiError::Conflict(_) | ApiError::Cancelled => StatusCode::CONFLICT,
        ApiError::LimitExceeded(_) | ApiError::TooManyLoginAttempts { .. } => {
            StatusCode::TOO_MANY_REQUESTS
        }
        ApiError::FetchFailed(_) => StatusCode::BAD_GATEWAY,
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
