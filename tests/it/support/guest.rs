//! Real Linux guests for the tests that boot one: Debian's kernel (package
//! `linux-image-amd64`) and a busybox initramfs (package `busybox-static`) the test builds,
//! made a bootable disk with `fsmaker`. Reading `/boot/vmlinuz-*` needs root on Debian.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::support::tools::{assert_success, ext4_image, fsmaker, output};

/// The guest's network and fw_cfg drivers, in the order they load (dependencies first).
const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
    "qemu_fw_cfg",
];

/// What busybox `udhcpc` runs with the lease: the address, route and `/tmp` notes.
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
  bound|renew)
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route add default via "${router%% *}"
    echo "${router%% *}" > /tmp/router
    echo "$ip" > /tmp/addr;;
esac
"#;

/// A bootable disk whose initramfs runs `init` (a busybox shell script, with the network
/// drivers of [`MODULES`] listed in `/etc/modules` and `/etc/udhcpc.sh` writing `/tmp/addr`
/// and `/tmp/router`), the kernel booting with `append`.
pub(crate) fn guest_disk_with(dir: &Path, init: &str, append: &str) -> PathBuf {
    GuestDisk::new(init).append(append).build(dir, "guest")
}

/// A bootable Linux disk: Debian's kernel, a busybox initramfs running `init` and holding
/// `files`, and a small ext4 root file system, made bootable with `fsmaker`.
pub(crate) struct GuestDisk {
    init: String,
    append: String,
    files: Vec<(String, u32, Vec<u8>)>,
    /// Files and links of the root file system on the disk (beside `/etc/hostname`).
    root_files: Vec<(String, u32, Vec<u8>)>,
    root_links: Vec<(String, String)>,
    /// Modules loaded after the network drivers, in this order.
    modules: Vec<&'static str>,
}

impl GuestDisk {
    pub(crate) fn new(init: &str) -> GuestDisk {
        GuestDisk {
            init: init.to_string(),
            append: String::new(),
            files: Vec::new(),
            root_files: Vec::new(),
            root_links: Vec::new(),
            modules: Vec::new(),
        }
    }

    /// More of the kernel's modules, loaded by `/etc/modules` after the network drivers in
    /// this order (dependencies first): `["llc", "stp", "garp", "mrp", "8021q"]` for 802.1Q.
    pub(crate) fn modules(mut self, names: &[&'static str]) -> GuestDisk {
        self.modules.extend_from_slice(names);
        self
    }

    /// The kernel's command line (`quiet` keeps the console log short).
    pub(crate) fn append(mut self, append: &str) -> GuestDisk {
        self.append = append.to_string();
        self
    }

    /// A file of the initramfs, at `path` (relative; its directories are made).
    pub(crate) fn file(mut self, path: &str, mode: u32, bytes: impl Into<Vec<u8>>) -> GuestDisk {
        self.files.push((path.to_string(), mode, bytes.into()));
        self
    }

    /// A file of the disk's root file system, at `path` (relative).
    pub(crate) fn root_file(
        mut self,
        path: &str,
        mode: u32,
        bytes: impl Into<Vec<u8>>,
    ) -> GuestDisk {
        self.root_files.push((path.to_string(), mode, bytes.into()));
        self
    }

    /// A symbolic link of the disk's root file system, at `path` (relative).
    pub(crate) fn root_link(mut self, path: &str, target: &str) -> GuestDisk {
        self.root_links.push((path.to_string(), target.to_string()));
        self
    }

    /// A dynamically linked program of this host, at its own path in the initramfs, with the
    /// libraries `ldd` names (and the loader) at theirs.
    pub(crate) fn host_program(mut self, path: &str) -> GuestDisk {
        let out = std::process::Command::new("ldd")
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "ldd {path}");
        let libs: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or
                // `/lib64/ld-linux-x86-64.so.2 (0x...)`.
                let l = l.split(" (0x").next()?.trim();
                let lib = l.rsplit("=> ").next()?.trim();
                lib.starts_with('/').then(|| lib.to_string())
            })
            .collect();
        for file in std::iter::once(path.to_string()).chain(libs) {
            let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
            self.files.push((file, 0o755, bytes));
        }
        self
    }

    /// Builds `<dir>/<name>.img` (and its parts beside it) and returns its path.
    pub(crate) fn build(&self, dir: &Path, name: &str) -> PathBuf {
        let (kernel, modules_dir) = debian_kernel();
        let initrd = dir.join(format!("{name}-initrd.gz"));
        std::fs::write(
            &initrd,
            initramfs(&modules_dir, &self.init, &self.files, &self.modules),
        )
        .unwrap();
        let fs = ext4_image(
            dir,
            &format!("{name}-fs"),
            "32M",
            &[("etc/hostname", b"guest\n")],
        );
        if !self.root_files.is_empty() || !self.root_links.is_empty() {
            // The same tree with more in it, made again.
            let root = dir.join(format!("{name}-fs.root"));
            for (path, mode, bytes) in &self.root_files {
                let p = root.join(path);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, bytes).unwrap();
                std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(*mode))
                    .unwrap();
            }
            for (path, target) in &self.root_links {
                let p = root.join(path);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::os::unix::fs::symlink(target, &p).unwrap();
            }
            crate::support::tools::run_tool(
                "mkfs.ext4",
                &[
                    "-q",
                    "-F",
                    "-d",
                    root.to_str().unwrap(),
                    fs.to_str().unwrap(),
                    "32M",
                ],
            );
        }
        let disk = dir.join(format!("{name}.img"));
        let out = output(
            fsmaker()
                .arg("--kernel")
                .arg(&kernel)
                .arg("--initrd")
                .arg(&initrd)
                .arg("--append")
                .arg(&self.append)
                .arg(&fs)
                .arg(&disk),
        );
        assert_success(&out);
        disk
    }
}

/// The newest `/boot/vmlinuz-VERSION` that has its `/lib/modules/VERSION`.
fn debian_kernel() -> (PathBuf, PathBuf) {
    let mut found: Vec<(PathBuf, PathBuf)> = std::fs::read_dir("/boot")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name.strip_prefix("vmlinuz-")?;
            let modules = Path::new("/lib/modules").join(version);
            modules.is_dir().then(|| (e.path(), modules))
        })
        .collect();
    found.sort();
    found.pop().expect(
        "no /boot/vmlinuz-* with its /lib/modules: install linux-image-amd64 \
         (scripts/test.sh does)",
    )
}

/// A gzipped newc cpio: static busybox, the modules of `MODULES` (decompressed), `/init`,
/// and `files`.
fn initramfs(
    modules_dir: &Path,
    init: &str,
    files: &[(String, u32, Vec<u8>)],
    extra_modules: &[&str],
) -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox")
        .expect("/bin/busybox: install busybox-static (scripts/test.sh does)");
    let mut cpio = Cpio::default();
    const DIRS: [&str; 8] = [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib/modules",
        "proc",
        "sys",
        "tmp",
    ];
    for dir in DIRS {
        cpio.dir(dir);
    }
    cpio.char_device("dev/console", 5, 1);
    cpio.file("bin/busybox", 0o755, &busybox);
    cpio.file("init", 0o755, init.as_bytes());
    cpio.file("etc/udhcpc.sh", 0o755, UDHCPC_SCRIPT.as_bytes());
    let mut made: BTreeSet<String> = DIRS.map(String::from).into();
    for (path, mode, bytes) in files {
        let path = path.trim_start_matches('/');
        let mut parent = String::new();
        for part in path
            .split('/')
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            if made.insert(parent.clone()) {
                cpio.dir(&parent);
            }
        }
        cpio.file(path, *mode, bytes);
    }
    let builtin = std::fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    let mut loaded = Vec::new();
    for name in MODULES.iter().chain(extra_modules) {
        match find_module(&modules_dir.join("kernel"), name) {
            Some(path) => {
                cpio.file(
                    &format!("lib/modules/{name}.ko"),
                    0o644,
                    &module_bytes(&path),
                );
                loaded.push(*name);
            }
            None => assert!(
                builtin.lines().any(|l| l.ends_with(&format!("/{name}.ko"))),
                "module {name} is neither in {} nor built in",
                modules_dir.display()
            ),
        }
    }
    cpio.file(
        "etc/modules",
        0o644,
        format!("{}\n", loaded.join("\n")).as_bytes(),
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&cpio.finish()).unwrap();
    gz.finish().unwrap()
}

/// `NAME.ko` or `NAME.ko.xz` under `dir`.
fn find_module(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_module(&path, name) {
                return Some(found);
            }
        } else if let Some(file) = path.file_name().and_then(|f| f.to_str())
            && (file == format!("{name}.ko") || file == format!("{name}.ko.xz"))
        {
            return Some(path);
        }
    }
    None
}

/// A module as busybox's `insmod` takes it: xz-compressed ones decompressed.
fn module_bytes(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    if path.extension().is_some_and(|e| e == "xz") {
        let mut out = Vec::new();
        std::io::copy(&mut liblzma::read::XzDecoder::new(&bytes[..]), &mut out).unwrap();
        out
    } else {
        bytes
    }
}

/// A cpio archive in the "newc" format the kernel unpacks as an initramfs.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.inode += 1;
        let fields = [
            self.inode,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

/// A server that boots real guests: QEMU under TCG (KVM can hang a Linux guest on nested
/// hosts), fetching from this host's loopback, with `extra` arguments.
pub(crate) fn qemu_options(extra: &[&str]) -> crate::support::ServerOptions {
    let mut args: Vec<String> = [
        "--hypervisor",
        "qemu",
        "--qemu-accel",
        "tcg",
        "--allow-fetch-from",
        "127.0.0.0/8",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    crate::support::ServerOptions {
        args,
        ..Default::default()
    }
}

/// Polls GetConsoleLog until the guest has printed `marker` (or `timeout` has passed, which
/// fails the test); returns the log. The serial console ends lines with CR LF, which
/// GetConsoleLog shows as U+240D: both are removed.
pub(crate) async fn console_until(
    api: &crate::support::Api,
    server_id: i64,
    marker: &str,
    timeout: std::time::Duration,
) -> String {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let log = api
            .call("GetConsoleLog", serde_json::json!({"server_id": server_id}))
            .await["console_log"]
            .as_str()
            .unwrap()
            .replace(['\r', '\u{240d}'], "");
        if log.contains(marker) {
            return log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server {server_id}: no '{marker}' on the console after {timeout:?}: {log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// A guest's `/init` (a busybox shell script): busybox's commands installed, `/proc`, `/sys`
/// and `/dev` mounted, then `body` (a string literal).
macro_rules! guest_init {
    ($body:literal) => {
        concat!(
            "#!/bin/busybox sh\n",
            "/bin/busybox --install -s /bin\n",
            "export PATH=/bin\n",
            "mount -t proc proc /proc\n",
            "mount -t sysfs sysfs /sys\n",
            "mount -t devtmpfs dev /dev 2>/dev/null\n",
            $body
        )
    };
}
pub(crate) use guest_init;
