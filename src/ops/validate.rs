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

/// An e-mail address as customers sign in with it: trimmed and lower-cased, with a local part,
/// one `@`, and a domain of dot-separated labels (`a@@b`, `@example.com` and `me@localhost`
/// are refused). Not RFC 5322 in full: what the platform can send mail to and people type.
pub fn email(value: &str) -> ApiResult<String> {
    let email = value.trim().to_ascii_lowercase();
    let refuse = |why: &str| {
        Err(ApiError::invalid(
            "email",
            format!("'{}' is not an e-mail address: {why}", value.trim()),
        ))
    };
    if email.len() > 254 {
        return refuse("it is longer than 254 characters");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return refuse("it has no '@' (like someone@example.com)");
    };
    if local.is_empty() {
        return refuse("nothing comes before the '@'");
    }
    if domain.contains('@') {
        return refuse("it has more than one '@'");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return refuse("it contains spaces");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 || labels.iter().any(|l| l.is_empty()) {
        return refuse("its domain needs a dot, like example.com");
    }
    let label_ok = |l: &&str| {
        l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    if !labels.iter().all(label_ok) {
        return refuse("its domain has a character a domain name cannot have");
    }
    Ok(email)
}

/// Passwords people pick first, which any password-guessing list tries first.
const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");

/// A new password: at least 8 characters, and not one of the passwords every guessing list
/// starts with (compared ignoring case), nor the e-mail address or its local part.
pub fn new_password(password: &str, email: &str) -> ApiResult<()> {
    if password.chars().count() < 8 {
        return Err(ApiError::invalid(
            "password",
            "must have at least 8 characters",
        ));
    }
    let lower = password.to_lowercase();
    let local = email.split('@').next().unwrap_or_default();
    if lower == email.to_lowercase() || (!local.is_empty() && lower == local.to_lowercase()) {
        return Err(ApiError::invalid(
            "password",
            "must not be the e-mail address or its name part",
        ));
    }
    if COMMON_PASSWORDS
        .lines()
        .any(|common| common.trim() == lower)
    {
        return Err(ApiError::invalid(
            "password",
            "is one of the most common passwords, which attackers try first: choose another              (a few unrelated words, or a password manager's)",
        ));
    }
    Ok(())
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

    #[test]
    fn e_mail_addresses_need_a_local_part_one_at_and_a_dotted_domain() {
        assert_eq!(
            email(" Someone@Example.COM ").unwrap(),
            "someone@example.com"
        );
        assert_eq!(
            email("a.b+c@mail.example.co.uk").unwrap(),
            "a.b+c@mail.example.co.uk"
        );
        for bad in [
            "a@@b.com",
            " @example.com",
            "@example.com",
            "someone",
            "me@localhost",
            "me@example..com",
            "me@.example.com",
            "me @example.com",
            "me@exa mple.com",
            "me@-example.com",
            "",
        ] {
            assert!(email(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn common_passwords_are_refused() {
        for bad in [
            "password",
            "Password",
            "12345678",
            "qwertyuiop",
            "iloveyou",
            "short",
        ] {
            let err = new_password(bad, "someone@example.com").unwrap_err();
            assert_eq!(err.code(), "INVALID_ARGUMENT", "{bad}");
        }
        assert!(new_password("someone1", "someone1@example.com").is_err());
        assert!(new_password("correct horse battery staple", "someone@example.com").is_ok());
        assert!(new_password("mysecretpassword", "someone@example.com").is_ok());
    }
}
