//! `sshd_config`, read for where sshd looks for authorized keys (`AuthorizedKeysFile`), and the
//! files it includes (`Include`). The text is the image's, so hostile: bounded in lines,
//! values and patterns, and a pattern with a token sshd would refuse is left out.
//!
//! Every `AuthorizedKeysFile` counts, the global one and those under `Match`, whatever their
//! order: a check would rather name a file sshd reads only for some logins than miss it.

/// The most `AuthorizedKeysFile` patterns read from one image, and the longest one.
pub(crate) const MAX_PATTERNS: usize = 32;
const MAX_PATTERN_LEN: usize = 1024;
/// The most `Include` arguments one file adds.
const MAX_INCLUDES: usize = 32;
/// The longest path a pattern expands to (PATH_MAX).
const MAX_PATH_LEN: usize = 4096;

/// What one configuration file says about authorized keys.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SshdConfig {
    /// `AuthorizedKeysFile` patterns, as written (`none` left out).
    pub(crate) authorized_keys_files: Vec<String>,
    /// `Include` arguments, as written (globs and relative paths too).
    pub(crate) includes: Vec<String>,
}

/// The arguments of a line as sshd splits them: on spaces and tabs, with double quotes
/// around an argument that holds spaces.
fn arguments(rest: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in rest.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' | '\t' if !quoted => {
                if any {
                    args.push(std::mem::take(&mut current));
                    any = false;
                }
            }
            c => {
                current.push(c);
                any = true;
            }
        }
    }
    if any {
        args.push(current);
    }
    args
}

/// Parses one file (its bytes as the image holds them).
pub(crate) fn parse(text: &[u8]) -> SshdConfig {
    let mut out = SshdConfig::default();
    for line in String::from_utf8_lossy(text).lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // `Keyword value`, `Keyword=value` or `Keyword = value`.
        let split = line.find([' ', '\t', '=']).unwrap_or(line.len());
        let (keyword, rest) = line.split_at(split);
        let rest = rest.trim_start_matches([' ', '\t']);
        let rest = rest.strip_prefix('=').unwrap_or(rest);
        let args = arguments(rest);
        if keyword.eq_ignore_ascii_case("AuthorizedKeysFile") {
            for a in args {
                if a != "none"
                    && !a.is_empty()
                    && a.len() <= MAX_PATTERN_LEN
                    && out.authorized_keys_files.len() < MAX_PATTERNS
                    && !out.authorized_keys_files.contains(&a)
                {
                    out.authorized_keys_files.push(a);
                }
            }
        } else if keyword.eq_ignore_ascii_case("Include") {
            for a in args {
                if !a.is_empty() && a.len() <= MAX_PATTERN_LEN && out.includes.len() < MAX_INCLUDES
                {
                    out.includes.push(a);
                }
            }
        }
    }
    out
}

/// Whether `pattern` names a file per user (a token, or a path relative to the home).
pub(crate) fn per_user(pattern: &str) -> bool {
    !pattern.starts_with('/') || pattern.contains('%')
}

/// `pattern` for one user, as sshd expands it: `%%` is `%`, `%h` the home, `%u` the name, `%U`
/// the uid; a relative path is relative to the home. `None` for a token sshd does not take
/// here, a result that is not absolute or is too long, or a user name that could move the
/// path (a `/`, `.`, `..`, a control character): no such account logs in.
pub(crate) fn expand(pattern: &str, user: &str, uid: &str, home: &str) -> Option<Vec<u8>> {
    let plain = |s: &str| !s.is_empty() && !s.chars().any(|c| c == '/' || c.is_control());
    if !plain(user) || user == "." || user == ".." || !uid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '%' => out.push('%'),
            'h' => out.push_str(home),
            'u' => out.push_str(user),
            'U' => out.push_str(uid),
            _ => return None,
        }
    }
    if !out.starts_with('/') {
        if !home.starts_with('/') {
            return None;
        }
        out = format!("{}/{out}", home.trim_end_matches('/'));
    }
    (out.len() <= MAX_PATH_LEN && !out.contains('\0')).then(|| out.into_bytes())
}

/// Whether file name `name` matches glob `glob` (`*` and `?` only, as the last part of an
/// `Include`); at most a few hundred steps whatever the input.
pub(crate) fn glob_matches(glob: &[u8], name: &[u8]) -> bool {
    // Iterative matching with one backtrack point: linear in practice.
    let (mut g, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if g < glob.len() && (glob[g] == b'?' || glob[g] == name[n]) {
            g += 1;
            n += 1;
        } else if g < glob.len() && glob[g] == b'*' {
            star = Some((g, n));
            g += 1;
        } else if let Some((sg, sn)) = star {
            g = sg + 1;
            n = sn + 1;
            star = Some((sg, sn + 1));
        } else {
            return false;
        }
    }
    while g < glob.len() && glob[g] == b'*' {
        g += 1;
    }
    g == glob.len() && !name.starts_with(b".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorized_keys_files_and_includes_are_read_as_sshd_reads_them() {
        let config = parse(
            b"# AuthorizedKeysFile /commented\n\
              Include /etc/ssh/sshd_config.d/*.conf\n\
              authorizedkeysfile=/etc/ssh/keys/%u  .ssh/authorized_keys\n\
              Match User backup\n\
              \tAuthorizedKeysFile \"/srv/keys/%u file\" none\n\
              AuthorizedKeysFile none\n",
        );
        assert_eq!(
            config.authorized_keys_files,
            vec![
                "/etc/ssh/keys/%u",
                ".ssh/authorized_keys",
                "/srv/keys/%u file"
            ]
        );
        assert_eq!(config.includes, vec!["/etc/ssh/sshd_config.d/*.conf"]);
        let many = "AuthorizedKeysFile /k/%u".to_string()
            + &(0..100).map(|i| format!(" /k{i}")).collect::<String>();
        assert_eq!(
            parse(many.as_bytes()).authorized_keys_files.len(),
            MAX_PATTERNS
        );
    }

    #[test]
    fn patterns_expand_per_user_and_refuse_what_sshd_would() {
        let e = |p: &str, u: &str| expand(p, u, "1000", "/home/alice").map(String::from_utf8);
        assert_eq!(
            e("/etc/ssh/keys/%u", "alice"),
            Some(Ok("/etc/ssh/keys/alice".into()))
        );
        assert_eq!(
            e("%h/.ssh/k_%U", "alice"),
            Some(Ok("/home/alice/.ssh/k_1000".into()))
        );
        assert_eq!(
            e(".ssh/keys", "alice"),
            Some(Ok("/home/alice/.ssh/keys".into()))
        );
        assert_eq!(e("/k/100%%", "alice"), Some(Ok("/k/100%".into())));
        assert_eq!(e("/k/%x", "alice"), None);
        assert_eq!(e("/k/%", "alice"), None);
        for bad in ["../../etc/shadow", "..", "", "a\nb"] {
            assert_eq!(e("/etc/ssh/keys/%u", bad), None, "{bad:?}");
        }
        assert_eq!(expand("keys", "alice", "1", "relative"), None);
        assert!(per_user(".ssh/k") && per_user("/k/%u") && !per_user("/etc/keys"));
    }

    #[test]
    fn include_globs_match_names() {
        assert!(glob_matches(b"*.conf", b"50-cloud.conf"));
        assert!(!glob_matches(b"*.conf", b"50-cloud.conf.bak"));
        assert!(!glob_matches(b"*.conf", b".hidden.conf"));
        assert!(glob_matches(b"a?c", b"abc") && !glob_matches(b"a?c", b"abbc"));
        assert!(glob_matches(b"*a*a*a*", b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaab"));
    }
}
