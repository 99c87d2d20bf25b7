//! `/etc/passwd` and `/etc/shadow`: which accounts a shared image would let anyone log in to,
//! and the same files with those accounts locked.

/// What an account's password field allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Password {
    /// A hash some password matches.
    Usable,
    /// Empty: no password at all.
    Empty,
    /// Locked (`!...`, `*`), or in the shadow file (`x` in passwd).
    None,
}

/// A password field as login reads it: empty lets anyone in; `!` or `*` first, or `x`,
/// matches nothing; anything else is a hash.
pub(crate) fn password(field: &str) -> Password {
    if field.is_empty() {
        Password::Empty
    } else if field.starts_with('!') || field.starts_with('*') || field == "x" {
        Password::None
    } else {
        Password::Usable
    }
}

/// Accounts (name, what their password allows) of a passwd or shadow file, field 2.
pub(crate) fn accounts(file: &[u8]) -> Vec<(String, Password)> {
    String::from_utf8_lossy(file)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#') && !l.starts_with('+'))
        .filter_map(|l| {
            let mut fields = l.split(':');
            let name = fields.next()?;
            let pw = fields.next()?;
            Some((name.to_string(), password(pw)))
        })
        .collect()
}

/// The home directories of passwd's accounts (field 6), absolute ones only.
pub(crate) fn homes(passwd: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(passwd)
        .lines()
        .filter_map(|l| l.split(':').nth(5))
        .filter(|h| h.starts_with('/'))
        .map(str::to_string)
        .collect()
}

/// The accounts of passwd with their uid and home (fields 1, 3 and 6).
pub(crate) fn users(passwd: &[u8]) -> Vec<(String, String, String)> {
    String::from_utf8_lossy(passwd)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('+'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 6).then(|| (f[0].to_string(), f[2].to_string(), f[5].to_string()))
        })
        .collect()
}

/// `file` with each usable or empty password field (field 2) replaced by `lock`: `!` in
/// shadow (chpasswd, and so a first-boot agent, can still set a fresh password; the old hash
/// does not stay behind to be cracked), `x` in passwd for an account shadow has, so login
/// reads shadow. Everything else, byte for byte, as it was. `None` if nothing changed.
pub(crate) fn lock(file: &[u8], lock_for: impl Fn(&str) -> &'static str) -> Option<Vec<u8>> {
    let mut changed = false;
    let mut out = Vec::with_capacity(file.len());
    for line in file.split_inclusive(|b| *b == b'\n') {
        let (body, end) = match line.strip_suffix(b"\n") {
            Some(b) => (b, &b"\n"[..]),
            None => (line, &b""[..]),
        };
        let fields: Vec<&[u8]> = body.split(|b| *b == b':').collect();
        let pw = fields
            .get(1)
            .map(|f| String::from_utf8_lossy(f).into_owned());
        let locked = match pw {
            Some(pw) if !body.starts_with(b"#") && password(&pw) != Password::None => {
                let name = String::from_utf8_lossy(fields[0]).into_owned();
                let mut new = fields.clone();
                new[1] = lock_for(&name).as_bytes();
                Some(new.join(&b':'))
            }
            _ => None,
        };
        match locked {
            Some(new) => {
                changed = true;
                out.extend_from_slice(&new);
            }
            None => out.extend_from_slice(body),
        }
        out.extend_from_slice(end);
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_fields_read_as_login_reads_them() {
        assert_eq!(password("$6$salt$hash"), Password::Usable);
        assert_eq!(password("abJnggxhB/yWI"), Password::Usable);
        assert_eq!(password(""), Password::Empty);
        for locked in ["!", "!!", "*", "!$6$salt$hash", "x"] {
            assert_eq!(password(locked), Password::None, "{locked}");
        }
    }

    #[test]
    fn locking_changes_only_the_password_field_of_open_accounts() {
        let shadow = b"root:$6$s$h:19000:0:99999:7:::\ndaemon:*:19000::::::\nguest::19000::::::\n# c:x\nbin:!:1::::::";
        let locked = lock(shadow, |_| "!").unwrap();
        assert_eq!(
            String::from_utf8(locked).unwrap(),
            "root:!:19000:0:99999:7:::\ndaemon:*:19000::::::\nguest:!:19000::::::\n# c:x\nbin:!:1::::::"
        );
        assert_eq!(lock(b"daemon:*:1::::::\n", |_| "!"), None);
        assert_eq!(
            accounts(shadow),
            vec![
                ("root".into(), Password::Usable),
                ("daemon".into(), Password::None),
                ("guest".into(), Password::Empty),
                ("bin".into(), Password::None),
            ]
        );
        assert_eq!(
            homes(b"root:x:0:0:root:/root:/bin/sh\nx:x:1:1::relative:/bin/sh\n"),
            vec!["/root"]
        );
    }
}
