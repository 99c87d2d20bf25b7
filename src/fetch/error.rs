//! The fetch engine's own error, as storage, the hypervisor and the network have theirs: what
//! can go wrong fetching, decoding, inspecting and converting an image. Each becomes the
//! `ApiError` of the same name (and so the same stable code and message) where the operation
//! layer takes the engine's result.

use super::budget::FetchBudget;
use crate::error::ApiError;

#[derive(Debug)]
pub enum FetchError {
    /// An argument of the fetch (the URL, the checksum) is wrong.
    InvalidArgument {
        name: String,
        problem: String,
    },
    /// The URL or an address it resolves to is not allowed (scheme, private range, ...).
    FetchRefused(String),
    FetchFailed(String),
    /// One of the fetch's budgets ran out.
    FetchTimeout(FetchBudget),
    ChecksumMismatch {
        expected: String,
        actual: String,
    },
    ImageTooLarge {
        disk_size: u64,
    },
    /// The image inspector refused the image.
    UnsafeImage(String),
    ConversionSpace {
        free: u64,
        needed: u64,
        reserve: u64,
    },
    DecompressionLimit {
        compression: &'static str,
        limit: u64,
    },
    /// The staging file system filled up (or reached its reserve) after `written` bytes.
    StorageFull {
        written: u64,
        reserve: u64,
    },
    /// Writing or reading the staged file failed.
    Storage(String),
    Cancelled,
    Internal(anyhow::Error),
}

pub type FetchResult<T> = Result<T, FetchError>;

impl FetchError {
    pub fn invalid(name: impl Into<String>, problem: impl Into<String>) -> Self {
        FetchError::InvalidArgument {
            name: name.into(),
            problem: problem.into(),
        }
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        FetchError::Internal(err.into())
    }

    /// The stable code of the `ApiError` it becomes.
    pub fn code(&self) -> &'static str {
        ApiError::from(self.clone_plain()).code()
    }

    /// The message of the `ApiError` it becomes, as clients see it.
    pub fn public_message(&self) -> String {
        ApiError::from(self.clone_plain()).public_message()
    }

    /// A copy, for the code and the message (an internal error's copy keeps its cause's text,
    /// not its chain).
    fn clone_plain(&self) -> FetchError {
        match self {
            FetchError::InvalidArgument { name, problem } => FetchError::InvalidArgument {
                name: name.clone(),
                problem: problem.clone(),
            },
            FetchError::FetchRefused(m) => FetchError::FetchRefused(m.clone()),
            FetchError::FetchFailed(m) => FetchError::FetchFailed(m.clone()),
            FetchError::FetchTimeout(b) => FetchError::FetchTimeout(b.clone()),
            FetchError::ChecksumMismatch { expected, actual } => FetchError::ChecksumMismatch {
                expected: expected.clone(),
                actual: actual.clone(),
            },
            FetchError::ImageTooLarge { disk_size } => FetchError::ImageTooLarge {
                disk_size: *disk_size,
            },
            FetchError::UnsafeImage(m) => FetchError::UnsafeImage(m.clone()),
            FetchError::ConversionSpace {
                free,
                needed,
                reserve,
            } => FetchError::ConversionSpace {
                free: *free,
                needed: *needed,
                reserve: *reserve,
            },
            FetchError::DecompressionLimit { compression, limit } => {
                FetchError::DecompressionLimit {
                    compression,
                    limit: *limit,
                }
            }
            FetchError::StorageFull { written, reserve } => FetchError::StorageFull {
                written: *written,
                reserve: *reserve,
            },
            FetchError::Storage(m) => FetchError::Storage(m.clone()),
            FetchError::Cancelled => FetchError::Cancelled,
            FetchError::Internal(err) => FetchError::Internal(anyhow::anyhow!("{err:#}")),
        }
    }
}

impl std::fmt::Display for FetchError {
    /// The text of the `ApiError` it becomes, word for word (`internal error` for an internal
    /// one, whose cause is its source).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", ApiError::from(self.clone_plain()))
    }
}

impl std::error::Error for FetchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FetchError::Internal(err) => Some(err.as_ref()),
            _ => None,
        }
    }
}

impl From<FetchBudget> for FetchError {
    fn from(budget: FetchBudget) -> Self {
        FetchError::FetchTimeout(budget)
    }
}

impl From<tokio::task::JoinError> for FetchError {
    fn from(err: tokio::task::JoinError) -> Self {
        FetchError::Internal(err.into())
    }
}

impl From<FetchError> for ApiError {
    fn from(err: FetchError) -> Self {
        match err {
            FetchError::InvalidArgument { name, problem } => {
                ApiError::InvalidArgument { name, problem }
            }
            FetchError::FetchRefused(m) => ApiError::FetchRefused(m),
            FetchError::FetchFailed(m) => ApiError::FetchFailed(m),
            FetchError::FetchTimeout(budget) => ApiError::FetchTimeout(budget.to_string()),
            FetchError::ChecksumMismatch { expected, actual } => {
                ApiError::ChecksumMismatch { expected, actual }
            }
            FetchError::ImageTooLarge { disk_size } => ApiError::ImageTooLarge { disk_size },
            FetchError::UnsafeImage(m) => ApiError::UnsafeImage(m),
            FetchError::ConversionSpace {
                free,
                needed,
                reserve,
            } => ApiError::ConversionSpace {
                free,
                needed,
                reserve,
            },
            FetchError::DecompressionLimit { compression, limit } => {
                ApiError::DecompressionLimit { compression, limit }
            }
            FetchError::StorageFull { written, reserve } => {
                ApiError::StorageFull { written, reserve }
            }
            FetchError::Storage(m) => ApiError::Storage(m),
            FetchError::Cancelled => ApiError::Cancelled,
            FetchError::Internal(err) => ApiError::Internal(err),
        }
    }
}
