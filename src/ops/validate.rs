//! Checks of argument values shared by several operations.

use crate::error::{ApiError, ApiResult};

pub const MAX_NAME_CHARS: usize = 100;

/// A resource name: trimmed, 1 to 100 characters, no control characters.
pub fn name(argument: &str, value: &str) -> ApiResult<String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ApiError::invalid(argument, "must not be empty"));
    }
    if trimmed.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid(
            argument,
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            argument,
            "must not contain control characters",
        ));
    }
    Ok(trimmed.to_string())
}

/// An id argument: positive.
pub fn id(argument: &str, value: i64) -> ApiResult<i64> {
    if value <= 0 {
        return Err(ApiError::invalid(
            argument,
            format!("must be a positive id, got {value}"),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(name("n", "  web  ").unwrap(), "web");
        assert!(name("n", "   ").is_err());
        assert!(name("n", &"x".repeat(101)).is_err());
        assert!(name("n", "a\u{0}b").is_err());
        assert_eq!(name("n", &"é".repeat(100)).unwrap().chars().count(), 100);
    }
}
