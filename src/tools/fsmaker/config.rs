//! Which kernel the image boots, and the `grub.cfg` fsmaker writes for it.

use std::cmp::Ordering;

/// A kernel (and initrd) inside the file system, as absolute paths there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    pub path: String,
    pub initrd: Option<String>,
}

/// The newest kernel among the names in `/boot` (`vmlinuz-6.1.0-13-amd64`, or a plain
/// `vmlinuz`), with the initrd of the same version (`initrd.img-V`, `initramfs-V.img`,
/// `initrd-V`).
pub fn newest_kernel(boot_names: &[String]) -> Option<Kernel> {
    let kernel = boot_names
        .iter()
        .filter(|n| *n == "vmlinuz" || n.starts_with("vmlinuz-"))
        .filter(|n| !n.ends_with(".old") && !n.ends_with(".bak"))
        .max_by(|a, b| natural_cmp(a, b))?;
    let version = kernel.strip_prefix("vmlinuz").unwrap_or("");
    let version = version.strip_prefix('-').unwrap_or(version);
    let candidates = if version.is_empty() {
        vec!["initrd.img".to_string(), "initramfs.img".to_string()]
    } else {
        vec![
            format!("initrd.img-{version}"),
            format!("initramfs-{version}.img"),
            format!("initrd-{version}"),
            format!("initrd-{version}.img"),
        ]
    };
    let initrd = candidates
        .into_iter()
        .find(|c| boot_names.contains(c))
        .map(|c| format!("/boot/{c}"));
    Some(Kernel {
        path: format!("/boot/{kernel}"),
        initrd,
    })
}

/// Orders `vmlinuz-6.10` after `vmlinuz-6.9`: runs of digits compare as numbers.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (trim_zeros(&a[..da]), trim_zeros(&b[..db]));
                let order = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if order != Ordering::Equal {
                    return order;
                }
                (a, b) = (&a[da..], &b[db..]);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros..]
}

/// A file name that is safe in a debugfs command and a GRUB path.
pub fn safe_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The `grub.cfg` for an image: output on the screen and the first serial port (what a cloud
/// console shows), one entry booting `kernel` with the root file system found by the MBR
/// partition id, which the kernel understands with or without an initrd.
pub fn grub_cfg(kernel: Option<&Kernel>, root_partuuid: &str, append: Option<&str>) -> String {
    let mut cfg = String::from(
        "# Written by fsmaker. GRUB reads this file from partition 1 of the boot disk.\n\
         serial --unit=0 --speed=115200\n\
         terminal_input console serial\n\
         terminal_output console serial\n\
         set timeout=3\n\
         set default=0\n\n",
    );
    let Some(kernel) = kernel else {
        cfg.push_str(
            "echo 'fsmaker: this file system has no kernel in /boot.'\n\
             echo 'Make the image again with fsmaker --kernel (and --initrd).'\n",
        );
        return cfg;
    };
    let name = kernel.path.rsplit('/').next().unwrap_or(&kernel.path);
    let mut line = format!("root=PARTUUID={root_partuuid} ro console=tty0 console=ttyS0,115200");
    if let Some(extra) = append.map(str::trim).filter(|a| !a.is_empty()) {
        line.push(' ');
        line.push_str(extra);
    }
    cfg.push_str(&format!("menuentry '{name}' {{\n"));
    cfg.push_str(&format!("    echo 'fsmaker: loading {}'\n", kernel.path));
    cfg.push_str(&format!("    linux {} {line}\n", kernel.path));
    if let Some(initrd) = &kernel.initrd {
        cfg.push_str(&format!("    echo 'fsmaker: loading {initrd}'\n"));
        cfg.push_str(&format!("    initrd {initrd}\n"));
    }
    cfg.push_str("}\n");
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_newest_kernel_and_its_initrd_are_chosen() {
        let boot = names(&[
            "config-6.1.0-9-amd64",
            "vmlinuz-6.1.0-9-amd64",
            "vmlinuz-6.1.0-13-amd64",
            "initrd.img-6.1.0-9-amd64",
            "initrd.img-6.1.0-13-amd64",
            "grub",
        ]);
        let kernel = newest_kernel(&boot).unwrap();
        assert_eq!(kernel.path, "/boot/vmlinuz-6.1.0-13-amd64");
        assert_eq!(
            kernel.initrd.as_deref(),
            Some("/boot/initrd.img-6.1.0-13-amd64")
        );
        assert_eq!(newest_kernel(&names(&["grub", "config-1"])), None);
        let bare = newest_kernel(&names(&["vmlinuz"])).unwrap();
        assert_eq!((bare.path.as_str(), bare.initrd), ("/boot/vmlinuz", None));
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert_eq!(
            natural_cmp("vmlinuz-6.10", "vmlinuz-6.9"),
            Ordering::Greater
        );
        assert_eq!(natural_cmp("a-007", "a-7"), Ordering::Equal);
        assert_eq!(natural_cmp("abc", "abd"), Ordering::Less);
    }

    #[test]
    fn the_config_boots_the_kernel_on_the_serial_console() {
        let kernel = Kernel {
            path: "/boot/vmlinuz-6.1".into(),
            initrd: Some("/boot/initrd.img-6.1".into()),
        };
        let cfg = grub_cfg(Some(&kernel), "1234abcd-01", Some("quiet"));
        assert!(cfg.contains("terminal_output console serial"));
        assert!(cfg.contains(
            "linux /boot/vmlinuz-6.1 root=PARTUUID=1234abcd-01 ro console=tty0 \
             console=ttyS0,115200 quiet"
        ));
        assert!(cfg.contains("initrd /boot/initrd.img-6.1"));
        assert!(grub_cfg(None, "1234abcd-01", None).contains("no kernel"));
    }

    #[test]
    fn odd_names_are_made_safe() {
        assert_eq!(safe_name("my kernel;rm"), "my_kernel_rm");
        assert_eq!(safe_name("vmlinuz-6.1+deb"), "vmlinuz-6.1+deb");
    }
}
