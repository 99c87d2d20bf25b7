//! A root file system's `/etc/fstab`, read for the other file systems of its tree (a separate
//! `/var`, `/home`): which device each names, and where it mounts. The text is the image's, so
//! hostile: bounded in entries, and a mount point that could escape the tree or that no system
//! mounts a disk on is refused.

/// The most entries read from one fstab.
const MAX_ENTRIES: usize = 64;
/// The longest mount point, and the deepest.
const MAX_MOUNT_POINT: usize = 1024;
const MAX_DEPTH: usize = 16;
/// Where the kernel's own file systems go, never a disk's.
const PSEUDO: &[&str] = &["proc", "sys", "dev", "run"];

/// How an entry names its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Uuid(String),
    Label(String),
    /// A device path, as the image's system names it (`/dev/vda2`, `/dev/mapper/vg-var`).
    Device(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) source: Source,
    /// Normalised: absolute, no `.`, `..` or empty part, not `/`.
    pub(crate) mount_point: String,
}

/// fstab's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            out.push(v.min(255) as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `mount_point` normalised, or `None` when it is the root, relative, has a `.` or `..` part,
/// a control character, is too long or too deep, or lies under `/proc`, `/sys`, `/dev` or
/// `/run`.
pub(crate) fn mount_point(mount_point: &str) -> Option<String> {
    if !mount_point.starts_with('/')
        || mount_point.len() > MAX_MOUNT_POINT
        || mount_point.chars().any(char::is_control)
    {
        return None;
    }
    let parts: Vec<&str> = mount_point.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty()
        || parts.len() > MAX_DEPTH
        || parts.iter().any(|p| *p == "." || *p == "..")
        || PSEUDO.contains(&parts[0])
    {
        return None;
    }
    Some(format!("/{}", parts.join("/")))
}

fn source(spec: &str) -> Option<Source> {
    let value = |s: &str| (!s.is_empty() && s.len() <= 256).then(|| s.to_string());
    if let Some(u) = spec
        .strip_prefix("UUID=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-uuid/"))
    {
        return value(&u.trim_matches('"').to_ascii_lowercase()).map(Source::Uuid);
    }
    if let Some(l) = spec
        .strip_prefix("LABEL=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-label/"))
    {
        return value(l.trim_matches('"')).map(Source::Label);
    }
    if spec.starts_with("/dev/") && !spec.contains("/../") {
        return value(spec).map(Source::Device);
    }
    None
}

/// The entries of an fstab that mount a disk's file system somewhere below `/`, in order: no
/// swap, no pseudo file system, no network source, no bind mount.
pub(crate) fn parse(text: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    for line in String::from_utf8_lossy(text).lines().take(10_000) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 || fields[0].starts_with('#') {
            continue;
        }
        let (spec, mp, vfstype) = (unescape(fields[0]), unescape(fields[1]), fields[2]);
        let options = fields.get(3).copied().unwrap_or("");
        if matches!(
            vfstype,
            "swap" | "none" | "tmpfs" | "proc" | "sysfs" | "devpts" | "nfs"
        ) || options.split(',').any(|o| o == "bind" || o == "rbind")
        {
            continue;
        }
        let (Some(source), Some(mount_point)) = (source(&spec), mount_point(&mp)) else {
            continue;
        };
        out.push(Entry {
            source,
            mount_point,
        });
        if out.len() == MAX_ENTRIES {
            break;
        }
    }
    out
}

/// The appliance's name for a device the image's system names `device` (its one disk is the
/// appliance's `/dev/sda`, whatever bus the system expected): `/dev/vda2`, `/dev/xvda2`,
/// `/dev/hda2` and `/dev/nvme0n1p2` are `/dev/sda2`; other names stay as they are.
pub(crate) fn appliance_device(device: &str) -> String {
    let partition = |rest: &str| {
        let (letter, number) = rest.split_at(rest.len().min(1));
        (letter.chars().all(|c| c.is_ascii_lowercase())
            && !letter.is_empty()
            && number.chars().all(|c| c.is_ascii_digit()))
        .then(|| format!("/dev/sd{letter}{number}"))
    };
    for prefix in ["/dev/vd", "/dev/xvd", "/dev/hd", "/dev/sd"] {
        if let Some(rest) = device.strip_prefix(prefix)
            && let Some(d) = partition(rest)
        {
            return d;
        }
    }
    if let Some(rest) = device.strip_prefix("/dev/nvme0n1") {
        let number = rest.strip_prefix('p').unwrap_or(rest);
        if number.chars().all(|c| c.is_ascii_digit()) {
            return format!("/dev/sda{number}");
        }
    }
    device.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_name_disks_below_the_root() {
        let fstab = b"# / on sda1\n\
            UUID=0AB1-CD /  ext4 defaults 0 1\n\
            UUID=5B3E1C9A-0000-4000-8000-00000000000A /var ext4 defaults 0 2\n\
            LABEL=home\\040dir /home//alice/ xfs defaults 0 2\n\
            /dev/vda3 /srv/data ext4 defaults\n\
            /dev/vda4 none swap sw\n\
            proc /proc proc defaults\n\
            /dev/vda5 /mnt/../etc ext4 defaults\n\
            /dev/vda6 /proc/x ext4 defaults\n\
            /dev/vda7 relative ext4 defaults\n\
            /srv/a /srv/b none bind\n\
            server:/x /net nfs defaults\n";
        let entries = parse(fstab);
        assert_eq!(
            entries,
            vec![
                Entry {
                    source: Source::Uuid("5b3e1c9a-0000-4000-8000-00000000000a".into()),
                    mount_point: "/var".into()
                },
                Entry {
                    source: Source::Label("home dir".into()),
                    mount_point: "/home/alice".into()
                },
                Entry {
                    source: Source::Device("/dev/vda3".into()),
                    mount_point: "/srv/data".into()
                },
            ]
        );
        let deep = "/a".repeat(17);
        assert_eq!(mount_point(&deep), None);
        assert_eq!(mount_point("/a\nb"), None);
        let many: String = (0..100)
            .map(|i| format!("/dev/sda2 /m{i} ext4\n"))
            .collect();
        assert_eq!(parse(many.as_bytes()).len(), MAX_ENTRIES);
    }

    #[test]
    fn devices_are_named_as_the_appliance_names_them() {
        assert_eq!(appliance_device("/dev/vda2"), "/dev/sda2");
        assert_eq!(appliance_device("/dev/xvda1"), "/dev/sda1");
        assert_eq!(appliance_device("/dev/nvme0n1p3"), "/dev/sda3");
        assert_eq!(appliance_device("/dev/mapper/vg-var"), "/dev/mapper/vg-var");
        assert_eq!(appliance_device("/dev/vdab"), "/dev/vdab");
    }
}
