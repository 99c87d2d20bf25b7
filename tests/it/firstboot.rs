//! The first-boot package, `extility-firstboot` (issue 12): `packaging/firstboot/build.sh`
//! makes the Debian package and the tarball; their files and modes are checked, the tarball's
//! `install.sh --root` puts them into an image tree, and the script runs
//!
//! - under dash, bash and busybox sh, sourced for its functions: the document read as
//!   untrusted input, the password handed to chpasswd on its standard input, the SSH keys
//!   installed, the document fetched with curl, GNU wget and busybox wget;
//! - on this Debian system's own tools (useradd, chpasswd, usermod, systemctl, update-rc.d,
//!   curl), in a mount namespace whose `/etc`, `/home` and `/var/lib` are copies;
//! - in a real Linux guest (Debian's kernel, a busybox initramfs holding the installed tree)
//!   booted through the API: it reads the server's metadata, sets root's password (printed
//!   hash checked against `GetServer`'s `initial_password`), does nothing the second time,
//!   then, on a document of the guest's own, creates a user and installs its keys with
//!   busybox's tools alone.
//!
//! A guest without the package still boots: every other real-guest test (`guest_network`,
//! `tenant_networks`) boots one.
//!
//! Needs dpkg-deb, curl, wget, busybox-static, openssl, `unshare` and root (the namespace, and
//! Debian's `/boot/vmlinuz-*`), `linux-image-amd64`; scripts/test.sh installs them.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::support::guest::{GuestDisk, guest_init, qemu_options};
use crate::support::test_app::{Boot, LAPTOP_KEY};
use crate::support::tools::{assert_success, output};
use crate::support::{Backend, TestApp};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const GUEST_TIMEOUT: Duration = Duration::from_secs(240);
const DONE: &str = "FIRSTBOOT TEST DONE";

const KEY1: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIC2LHLMZX1m+4utRPDXAvGf6vVlG3EAz2RkPpEp3uufR";
const KEY2: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOInkw4OJfwSJeiOGvzIxo97veLQIoa0fID6zM3m3Tod";
const KEY3: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBE0BGTIdn2n5asSbiDjwH4/UDr+\
                    chVFeBXnaL7grlQ4Tt7fm65qbf4c5b78dG8zW5MztBXc16+cMqUslIQ5D7X0=";

/// What a command the document smuggles in would make (it never may).
const INJECTED: &str = "/tmp/extility-firstboot-injected";

/// The password of the crafted document: everything a shell would act on, and a colon.
fn crafted_password() -> String {
    format!("p&w <>\"'$(touch {INJECTED}-1)`touch {INJECTED}-2`;x:y")
}

/// The crafted document's keys, in order: what the script must do with each.
fn crafted_keys() -> Vec<(String, &'static str)> {
    vec![
        (format!("ssh-ed25519 {KEY1} user1@example.com"), "added"),
        (format!("ssh-ed25519 {KEY1} the same key again"), "present"),
        (
            format!("command=\"touch {INJECTED}-3\" ssh-ed25519 {KEY2}"),
            "refused",
        ),
        (format!("ssh-ed25519 AAAA;touch {INJECTED}-4"), "refused"),
        (
            format!("ecdsa-sha2-nistp256 {KEY3} ec@example.com"),
            "added",
        ),
        (
            format!("ssh-rsa AAAA\nssh-ed25519 {KEY2} sneaky"),
            "refused",
        ),
        ("ssh-dss AAAAB3NzaC1kc3M= old".to_string(), "refused"),
        (
            format!("ssh-ed25519 {KEY2} $(touch {INJECTED}-5) user2"),
            "added",
        ),
    ]
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// A metadata document as `src/api/metadata.rs` renders it.
fn document(user: &str, password: &str, keys: &[String]) -> String {
    let keys = if keys.is_empty() {
        "  <ssh-public-keys/>\n".to_string()
    } else {
        let mut s = "  <ssh-public-keys>\n".to_string();
        for k in keys {
            s.push_str(&format!(
                "    <ssh-public-key>{}</ssh-public-key>\n",
                escape(k)
            ));
        }
        s + "  </ssh-public-keys>\n"
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <server-metadata xmlns=\"http://extility.flexiant.com/metadata\">\n\
         \x20 <server-uuid>477d7be8-7f93-4f97-8752-196b7a50b1ae</server-uuid>\n\
         \x20 <server-name>a &amp; b $(touch {INJECTED}-6)</server-name>\n\
         \x20 <initial-user>{}</initial-user>\n\
         \x20 <initial-password>{}</initial-password>\n\
         {keys}</server-metadata>\n",
        escape(user),
        escape(password)
    )
}

fn crafted_document() -> String {
    let keys: Vec<String> = crafted_keys().into_iter().map(|(k, _)| k).collect();
    document("alice", &crafted_password(), &keys)
}

/// The keys the crafted document adds to an empty authorized_keys, in order.
fn crafted_added() -> Vec<String> {
    crafted_keys()
        .into_iter()
        .filter(|(_, what)| *what == "added")
        .map(|(k, _)| k)
        .collect()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn script() -> PathBuf {
    repo().join("packaging/firstboot/extility-firstboot")
}

/// `build.sh OUT`: the two packages' paths.
fn build_packages(out: &Path) -> (PathBuf, PathBuf) {
    let built = output(
        Command::new("sh")
            .arg(repo().join("packaging/firstboot/build.sh"))
            .arg(out),
    );
    assert_success(&built);
    let deb = out.join(format!("extility-firstboot_{VERSION}_all.deb"));
    let tarball = out.join(format!("extility-firstboot-{VERSION}.tar.gz"));
    assert!(deb.is_file() && tarball.is_file(), "{built:?}");
    (deb, tarball)
}

/// The tarball unpacked under `dir` and installed with `install.sh --root`: the tree.
fn installed_tree(dir: &Path, tarball: &Path) -> PathBuf {
    assert_success(&output(
        Command::new("tar")
            .arg("-C")
            .arg(dir)
            .arg("-xzf")
            .arg(tarball),
    ));
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let installed = output(
        Command::new(dir.join(format!("extility-firstboot-{VERSION}/install.sh")))
            .arg("--root")
            .arg(&tree),
    );
    assert_success(&installed);
    tree
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether `hash` is the SHA-512 crypt (`$6$salt$...`) of `password` (`openssl passwd -6`).
fn sha512_crypt_matches(hash: &str, password: &str) -> bool {
    let salt = hash
        .strip_prefix("$6$")
        .and_then(|rest| rest.split('$').next())
        .unwrap_or_else(|| panic!("not a SHA-512 crypt hash: {hash:?}"));
    assert!(!salt.starts_with("rounds="), "{hash}");
    let mut openssl = Command::new("openssl")
        .args(["passwd", "-6", "-salt", salt, "-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    writeln!(openssl.stdin.take().unwrap(), "{password}").unwrap();
    let out = openssl.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim() == hash
}

fn no_injection() {
    for n in 1..=6 {
        let path = format!("{INJECTED}-{n}");
        assert!(
            !Path::new(&path).exists(),
            "{path} exists: the document ran a command"
        );
    }
}

/// A metadata service: answers `document` to requests carrying `token`, 403 to others; keeps
/// the token each request carried.
struct MetadataServer {
    url: String,
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl MetadataServer {
    fn start(document: String, token: &'static str) -> MetadataServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://127.0.0.1:{}/metadata/v1/server.xml",
            listener.local_addr().unwrap().port()
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_by_thread = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request).into_owned();
                let sent = request.lines().find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("x-extility-metadata-token")
                        .then(|| value.trim().to_string())
                });
                let answer = if sent.as_deref() == Some(token) {
                    format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: application/xml\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{document}",
                        document.len()
                    )
                } else {
                    "HTTP/1.0 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string()
                };
                seen_by_thread.lock().unwrap().push(sent);
                let _ = conn.write_all(answer.as_bytes());
            }
        });
        MetadataServer { url, seen }
    }

    /// A fw_cfg folder as the guest's kernel shows it, naming this service.
    fn fw_cfg(&self, dir: &Path, token: &str) -> PathBuf {
        let fw = dir.join("fw_cfg");
        for (name, value) in [
            ("metadata-url", self.url.as_str()),
            ("metadata-token", token),
        ] {
            std::fs::create_dir_all(fw.join(name)).unwrap();
            std::fs::write(fw.join(name).join("raw"), value).unwrap();
        }
        fw
    }
}

#[test]
fn build_sh_makes_the_deb_and_the_tarball_and_install_sh_fills_an_image_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (deb, tarball) = build_packages(&dir.path().join("out"));

    let info = output(Command::new("dpkg-deb").arg("--info").arg(&deb));
    assert_success(&info);
    let info = text(&info);
    for field in [
        "Package: extility-firstboot",
        &format!("Version: {VERSION}"),
        "Architecture: all",
    ] {
        assert!(info.contains(field), "{field}: {info}");
    }
    for script in ["postinst", "prerm", "postrm", "conffiles", "md5sums"] {
        assert!(
            info.contains(script),
            "{script} in the control archive: {info}"
        );
    }

    // `-rwxr-xr-x root/root 14485 2025-01-01 00:00 ./usr/sbin/extility-firstboot`
    let contents = output(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    assert_success(&contents);
    let contents = text(&contents);
    let files: BTreeMap<&str, (&str, &str)> = contents
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 6 && f[0].starts_with('-')).then(|| (f[5], (f[0], f[1])))
        })
        .collect();
    let expected = [
        ("./usr/sbin/extility-firstboot", "-rwxr-xr-x"),
        (
            "./usr/lib/systemd/system/extility-firstboot.service",
            "-rw-r--r--",
        ),
        ("./etc/init.d/extility-firstboot", "-rwxr-xr-x"),
    ];
    assert_eq!(files.len(), expected.len(), "{contents}");
    for (path, mode) in expected {
        assert_eq!(files.get(path), Some(&(mode, "root/root")), "{contents}");
    }
    let unit =
        std::fs::read_to_string(repo().join("packaging/firstboot/extility-firstboot.service"))
            .unwrap();
    for line in [
        "After=network-online.target",
        "Type=oneshot",
        "ConditionPathExists=!/var/lib/extility-firstboot/done",
        "ExecStart=/usr/sbin/extility-firstboot",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line}: {unit}");
    }
    assert!(unit.contains("Before=ssh.service"), "{unit}");

    // The tarball: install.sh --root puts the same files into an image tree and enables the
    // unit by its link.
    let tree = installed_tree(dir.path(), &tarball);
    for (path, mode) in expected {
        let meta = std::fs::metadata(tree.join(path)).unwrap();
        let want = if mode == "-rwxr-xr-x" { 0o755 } else { 0o644 };
        assert_eq!(meta.permissions().mode() & 0o7777, want, "{path}");
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{path}");
    }
    let link = tree.join("etc/systemd/system/multi-user.target.wants/extility-firstboot.service");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("/usr/lib/systemd/system/extility-firstboot.service")
    );
    // The packaged script is the repository's.
    assert_eq!(
        std::fs::read(tree.join("usr/sbin/extility-firstboot")).unwrap(),
        std::fs::read(script()).unwrap()
    );
}

/// Runs `commands` in `shell` after sourcing the script for its functions.
fn run_sourced(shell: &[&str], commands: &str, env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(shell[0]);
    cmd.args(&shell[1..])
        .arg("-c")
        .arg(format!(". \"$SCRIPT\"\n{commands}"))
        .env("EXTILITY_FIRSTBOOT_LIB", "1")
        .env("SCRIPT", script());
    for (name, value) in env {
        cmd.env(name, value);
    }
    output(&mut cmd)
}

/// The same bits of the script under every shell it is for: reading the document, handing
/// the password to chpasswd, installing keys, fetching.
#[test]
fn the_script_reads_an_untrusted_document_under_dash_bash_and_busybox_sh() {
    const TOKEN: &str = "0123abcd-token";
    let doc = crafted_document();
    let server = MetadataServer::start(doc.clone(), TOKEN);
    for shell in [&["dash"][..], &["bash"], &["busybox", "sh"]] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("doc.xml"), &doc).unwrap();
        // A chpasswd that keeps its arguments and its standard input.
        let stubs = d.join("stubs");
        std::fs::create_dir(&stubs).unwrap();
        std::fs::write(
            stubs.join("chpasswd"),
            "#!/bin/sh\nprintf '%s\\n' \"$*\" > \"$OUT/chpasswd.args\"\ncat > \"$OUT/chpasswd.stdin\"\n",
        )
        .unwrap();
        std::fs::set_permissions(stubs.join("chpasswd"), PermissionsExt::from_mode(0o755)).unwrap();
        // A home whose authorized_keys holds one of the keys already, without a final line
        // break.
        let home = d.join("home");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::write(
            home.join(".ssh/authorized_keys"),
            format!("ssh-ed25519 {KEY2} from before"),
        )
        .unwrap();
        // Folders where the only fetcher is GNU wget, or busybox's.
        let tools = ["rm", "grep", "timeout", "head", "tr", "sleep", "cat"];
        for (name, wget) in [("gnu", "/usr/bin/wget"), ("busybox", "/bin/busybox")] {
            let bin = d.join(format!("bin-{name}"));
            std::fs::create_dir(&bin).unwrap();
            std::os::unix::fs::symlink(wget, bin.join("wget")).unwrap();
            for tool in tools {
                std::os::unix::fs::symlink(which::which(tool).unwrap(), bin.join(tool)).unwrap();
            }
        }
        let fw = server.fw_cfg(d, TOKEN);
        let out = run_sourced(
            shell,
            r#"
set -e
doc=$DIR/doc.xml
echo "USER[$(xml_value initial-user "$doc")]"
echo "NAME[$(xml_value server-name "$doc")]"
password=$(xml_value initial-password "$doc")
PATH=$DIR/stubs:$PATH
set_password alice
passwd_field() {
	case $2 in 1) echo alice ;; 3) id -u ;; 4) id -g ;; 6) echo "$DIR/home" ;; esac
}
xml_values ssh-public-key < "$doc" > "$DIR/keys"
install_keys alice "$DIR/keys"
for u in root alice _svc a-b_c9 Alice 9lives 'a b' 'a;b' '' "$(printf 'a\nb')" \
	abcdefghijabcdefghijabcdefghijab abcdefghijabcdefghijabcdefghijabc; do
	if valid_user "$u"; then echo "USER OK [$u]"; else echo "USER REFUSED [$u]"; fi
done
FW_CFG=$FW
work=$DIR
read_platform
[ "$token" = 0123abcd-token ] && echo "TOKEN READ"
fetch_metadata "$DIR/by-curl.xml"
PATH=$DIR/bin-gnu
fetch_metadata "$DIR/by-gnu-wget.xml"
PATH=$DIR/bin-busybox
fetch_metadata "$DIR/by-busybox-wget.xml"
"#,
            &[("DIR", d), ("OUT", d), ("FW", &fw)],
        );
        let said = text(&out);
        assert_success(&out);
        let name = shell.join(" ");
        assert!(said.contains("USER[alice]"), "{name}: {said}");
        assert!(
            said.contains(&format!("NAME[a & b $(touch {INJECTED}-6)]")),
            "{name}: {said}"
        );
        // chpasswd got `user:password` on its standard input, and SHA-512 asked of it.
        assert_eq!(
            std::fs::read_to_string(d.join("chpasswd.args")).unwrap(),
            "-c SHA512\n",
            "{name}"
        );
        assert_eq!(
            std::fs::read_to_string(d.join("chpasswd.stdin")).unwrap(),
            format!("alice:{}\n", crafted_password()),
            "{name}"
        );
        assert!(
            said.contains("user alice: password set (SHA-512, chpasswd)"),
            "{name}: {said}"
        );
        // The keys: the one already there (whose line gets its line break) and the
        // duplicate are not added again, the refused ones never.
        let mut want = vec![format!("ssh-ed25519 {KEY2} from before")];
        want.extend(crafted_added().into_iter().filter(|k| !k.contains(KEY2)));
        let keys = std::fs::read_to_string(home.join(".ssh/authorized_keys")).unwrap();
        assert_eq!(keys, want.join("\n") + "\n", "{name}: {said}");
        assert!(
            said.contains("user alice: 2 SSH keys installed, 2 already there, 4 refused"),
            "{name}: {said}"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&home.join(".ssh")), 0o700, "{name}");
        assert_eq!(mode(&home.join(".ssh/authorized_keys")), 0o600, "{name}");
        for (u, ok) in [
            ("root", true),
            ("alice", true),
            ("_svc", true),
            ("a-b_c9", true),
            ("Alice", false),
            ("9lives", false),
            ("a b", false),
            ("a;b", false),
            ("", false),
            ("a\nb", false),
            ("abcdefghijabcdefghijabcdefghijab", true),
            ("abcdefghijabcdefghijabcdefghijabc", false),
        ] {
            let line = format!("USER {} [{u}]", if ok { "OK" } else { "REFUSED" });
            assert!(said.contains(&line), "{name}: {line}: {said}");
        }
        assert!(said.contains("TOKEN READ"), "{name}: {said}");
        for fetched in ["by-curl.xml", "by-gnu-wget.xml", "by-busybox-wget.xml"] {
            assert_eq!(
                std::fs::read_to_string(d.join(fetched)).unwrap_or_default(),
                doc,
                "{name}: {fetched}: {said}"
            );
        }
        assert!(!said.contains(&crafted_password()), "{name}: {said}");
        assert!(!said.contains(TOKEN), "{name}: {said}");
    }
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.len(), 9, "three fetches under each shell: {seen:?}");
    assert!(seen.iter().all(|t| t.as_deref() == Some(TOKEN)), "{seen:?}");
    no_injection();
}

/// The whole script on this Debian system's own tools, in a mount namespace where `/etc`,
/// `/home`, `/var/lib` and the systemd units' folder are the test's.
#[test]
fn the_script_sets_up_a_user_on_a_debian_system() {
    const TOKEN: &str = "9f8e7d6c5b4a";
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "this test needs root (a mount namespace)"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, tarball) = build_packages(&d.join("out"));
    let tree = installed_tree(d, &tarball);
    let server = MetadataServer::start(crafted_document(), TOKEN);
    let fw = server.fw_cfg(d, TOKEN);
    let root = d.join("root");
    std::fs::create_dir(&root).unwrap();
    let out = output(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(
                r#"
set -eu
T=$1 TREE=$2 FW=$3
cp -a /etc "$T/etc"
# The copy's password hashes are not this host's.
for f in shadow gshadow; do
	[ -f "$T/etc/$f" ] && awk -F: -v OFS=: '{ if ($2 != "") $2 = "*"; print }' /etc/$f > "$T/etc/$f"
done
mkdir -p "$T/home" "$T/varlib" "$T/units"
cp "$TREE/usr/lib/systemd/system/extility-firstboot.service" "$T/units/"
mount --bind "$T/etc" /etc
mount --bind "$T/home" /home
mount --bind "$T/varlib" /var/lib
if command -v systemctl >/dev/null && [ -d /usr/lib/systemd/system ]; then
	mount --bind "$T/units" /usr/lib/systemd/system
	echo "SYSTEMD yes"
fi
cp "$TREE/etc/init.d/extility-firstboot" /etc/init.d/
if getent passwd alice >/dev/null; then userdel alice; fi
if getent group alice >/dev/null; then groupdel alice; fi
getent group sudo >/dev/null || groupadd sudo
"$TREE/usr/sbin/extility-firstboot" --rearm
echo "WANTS $(ls /etc/systemd/system/multi-user.target.wants/ 2>/dev/null | grep -c extility-firstboot)"
echo "RC $(ls /etc/rc2.d | grep -c extility-firstboot)"
export EXTILITY_FIRSTBOOT_FW_CFG=$FW
"$TREE/usr/sbin/extility-firstboot" > "$T/run1.log" 2>&1 || echo "FIRST RUN FAILED"
cp -p /etc/shadow "$T/shadow.1"
"$TREE/usr/sbin/extility-firstboot" > "$T/run2.log" 2>&1 || echo "SECOND RUN FAILED"
echo "WANTS $(ls /etc/systemd/system/multi-user.target.wants/ 2>/dev/null | grep -c extility-firstboot)"
echo "RC $(ls /etc/rc2.d | grep -c extility-firstboot)"
echo "GROUPS $(id -nG alice)"
"#,
            )
            .arg("sh")
            .arg(&root)
            .arg(&tree)
            .arg(&fw),
    );
    let said = text(&out);
    assert_success(&out);
    let run1 = std::fs::read_to_string(root.join("run1.log")).unwrap();
    let run2 = std::fs::read_to_string(root.join("run2.log")).unwrap();
    let all = format!("{said}\n--- first run:\n{run1}\n--- second run:\n{run2}");
    eprintln!("firstboot on Debian's tools:\n{all}");
    assert!(!said.contains("RUN FAILED"), "{all}");
    // --rearm enabled the unit and the init script; the run disabled both.
    let lines: Vec<&str> = said.lines().collect();
    let at = |prefix: &str| -> Vec<&str> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(prefix))
            .collect()
    };
    if said.lines().any(|l| l == "SYSTEMD yes") {
        assert_eq!(at("WANTS "), ["1", "0"], "{all}");
    } else {
        eprintln!("firstboot: no systemctl here: the unit's enabling is not checked");
    }
    assert_eq!(at("RC "), ["1", "0"], "{all}");
    let groups = at("GROUPS ");
    assert!(
        groups.len() == 1 && groups[0].split(' ').any(|g| g == "sudo"),
        "alice is in group sudo: {all}"
    );
    for line in [
        "user alice created",
        "user alice added to group sudo",
        "user alice: password set (SHA-512, chpasswd)",
        "user alice: 3 SSH keys installed, 1 already there, 4 refused",
        "done: /var/lib/extility-firstboot/done written",
    ] {
        assert!(run1.contains(line), "{line}: {all}");
    }
    assert!(run2.contains("already done"), "{all}");
    assert!(root.join("varlib/extility-firstboot/done").is_file());

    // The password: a SHA-512 hash of it in the copy of /etc/shadow, unchanged by the
    // second run.
    let shadow = std::fs::read_to_string(root.join("etc/shadow")).unwrap();
    let hash = shadow
        .lines()
        .find_map(|l| l.strip_prefix("alice:"))
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no alice in /etc/shadow: {all}"));
    assert!(sha512_crypt_matches(hash, &crafted_password()), "{hash}");
    assert_eq!(
        std::fs::read_to_string(root.join("shadow.1")).unwrap(),
        shadow
    );
    // The keys, the user's, 700 and 600.
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let alice: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("alice:"))
        .unwrap()
        .split(':')
        .collect();
    let (uid, gid): (u32, u32) = (alice[2].parse().unwrap(), alice[3].parse().unwrap());
    assert_eq!(alice[5], "/home/alice");
    let ssh = root.join("home/alice/.ssh");
    for (path, mode) in [(ssh.clone(), 0o700), (ssh.join("authorized_keys"), 0o600)] {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "{path:?}");
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{path:?}");
    }
    assert_eq!(
        std::fs::read_to_string(ssh.join("authorized_keys")).unwrap(),
        crafted_added().join("\n") + "\n"
    );
    assert!(!all.contains(&crafted_password()), "{all}");
    assert!(!all.contains(TOKEN), "{all}");
    assert_eq!(server.seen.lock().unwrap().len(), 1);
    no_injection();
}

/// The guest's `/init`: network, the package's init script twice, then a document of its
/// own (busybox httpd) for a user to create and keys to install with busybox's tools alone.
const INIT: &str = guest_init!(
    r#"echo "GUEST INIT"
for m in $(cat /etc/modules); do insmod /lib/modules/$m.ko || echo "INSMOD FAILED $m"; done
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -s /etc/udhcpc.sh -q -n -t 5 -T 2 >/dev/null 2>&1
echo "ADDR $(cat /tmp/addr 2>/dev/null)"

/etc/init.d/extility-firstboot start; echo "FIRST EXIT $?"
echo "SHADOW $(awk -F: '$1 == "root" { print $2 }' /etc/shadow)"
sed 's/^/ROOT KEY /' /root/.ssh/authorized_keys
md5sum /etc/passwd /etc/shadow /etc/group /var/lib/extility-firstboot/done /root/.ssh/authorized_keys > /tmp/sums
/etc/init.d/extility-firstboot start; echo "SECOND EXIT $?"
md5sum -c -s /tmp/sums && echo "SECOND RUN CHANGED NOTHING"

mkdir -p /tmp/www /tmp/fw/metadata-url /tmp/fw/metadata-token
cp /etc/test-document.xml /tmp/www/server.xml
printf 'http://127.0.0.1:8080/server.xml' > /tmp/fw/metadata-url/raw
printf 'local-token' > /tmp/fw/metadata-token/raw
httpd -p 127.0.0.1:8080 -h /tmp/www
rm /var/lib/extility-firstboot/done
EXTILITY_FIRSTBOOT_FW_CFG=/tmp/fw /usr/sbin/extility-firstboot; echo "LOCAL EXIT $?"
echo "ALICE PASSWD $(grep '^alice:' /etc/passwd)"
echo "ALICE SHADOW $(awk -F: '$1 == "alice" { print $2 }' /etc/shadow)"
echo "SUDO $(grep '^sudo:' /etc/group)"
stat -c 'MODE %a %u %g %n' /home/alice/.ssh /home/alice/.ssh/authorized_keys
sed 's/^/KEY /' /home/alice/.ssh/authorized_keys
ls /tmp/extility-firstboot-injected* >/dev/null 2>&1 && echo "INJECTED"
echo "FIRSTBOOT TEST DONE"
poweroff -f
"#
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busybox_guest_runs_it_at_first_boot_and_prints_the_hash_it_set() {
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let app = TestApp::start_with(Backend::Sqlite, qemu_options(&[])).await;

    // The packages, and the tarball's tree in the guest's initramfs.
    let (_, tarball) = build_packages(&app.dir.path().join("packages"));
    let tree = installed_tree(app.dir.path(), &tarball);
    let mut guest = GuestDisk::new(INIT)
        .append("quiet")
        .file("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n")
        .file("etc/shadow", 0o600, "root:*:19000:0:99999:7:::\n")
        .file("etc/group", 0o644, "root:x:0:\nsudo:x:27:\n")
        .file("etc/test-document.xml", 0o644, crafted_document());
    for path in [
        "usr/sbin/extility-firstboot",
        "usr/lib/systemd/system/extility-firstboot.service",
        "etc/init.d/extility-firstboot",
    ] {
        let meta = std::fs::metadata(tree.join(path)).unwrap();
        guest = guest.file(
            path,
            meta.permissions().mode() & 0o7777,
            std::fs::read(tree.join(path)).unwrap(),
        );
    }
    let disk_image = guest.build(app.dir.path(), "firstboot");

    let alice = app.alice();
    let disk = app.fetch_guest(&disk_image, "firstboot guest").await;
    // A server on a VLAN has a NIC (on the confined user-mode network here).
    let vlan = app.vlan("lan").await;
    // The customer's SSH key, given to the server: the metadata document lists it.
    let public_key = LAPTOP_KEY;
    let server = Boot {
        name: "firstboot",
        vlan_id: vlan,
        ssh_key_ids: vec![app.laptop_key().await],
        ..Boot::default()
    };
    let server_id = app.boot(&disk, server).await;
    // The per-boot secret QEMU hands the guest (the server keeps only its hash), in the VM's
    // runtime directory: under /run when the server runs as root (a confined VM).
    let vms = app.server.data_dir.join("vms");
    let token = std::fs::read_dir(&vms)
        .unwrap()
        .flatten()
        .find_map(|e| {
            crate::support::vm_runtime_dirs(&vms, &e.file_name().to_string_lossy())
                .iter()
                .find_map(|dir| std::fs::read_to_string(dir.join("metadata-token")).ok())
        })
        .unwrap_or_else(|| panic!("no metadata-token for the VMs of {}", vms.display()));
    assert!(token.len() >= 16, "{token:?}");

    let log = app
        .guest_says("firstboot", server_id, DONE, GUEST_TIMEOUT)
        .await;
    let lines: Vec<&str> = log.lines().map(str::trim).collect();
    let at = |prefix: &str| -> Vec<&str> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(prefix))
            .collect()
    };

    // The first run: root's password is the server's initial password.
    assert_eq!(at("FIRST EXIT "), ["0"], "{log}");
    let got = alice
        .call("GetServer", json!({"server_id": server_id}))
        .await;
    let password = got["initial_password"].as_str().unwrap().to_string();
    assert!(password.len() >= 8, "{got}");
    assert_eq!(
        at("ROOT KEY "),
        [public_key],
        "the server's SSH key, from its metadata document, is root's: {log}"
    );
    let shadow = at("SHADOW ");
    assert_eq!(shadow.len(), 1, "{log}");
    assert!(
        sha512_crypt_matches(shadow[0], &password),
        "the hash the guest set ({}) is not the SHA-512 crypt of the server's initial \
         password: {log}",
        shadow[0]
    );
    assert!(
        lines.contains(&"extility-firstboot: user root: password set (SHA-512, /etc/shadow)"),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(
            "extility-firstboot: read the metadata from http://10.0.2.100/metadata/v1/server.xml"
        )),
        "{log}"
    );
    // The second: nothing.
    assert_eq!(at("SECOND EXIT "), ["0"], "{log}");
    assert!(lines.contains(&"SECOND RUN CHANGED NOTHING"), "{log}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("already done at first boot")),
        "{log}"
    );
    // Neither the password nor the secret reached the console.
    assert!(
        !log.contains(&password),
        "the password on the console: {log}"
    );
    assert!(
        !log.contains(token.trim()),
        "the secret on the console: {log}"
    );

    // The guest's own document: user alice made and given keys by busybox's tools alone.
    assert_eq!(at("LOCAL EXIT "), ["0"], "{log}");
    assert_eq!(
        at("ALICE PASSWD "),
        ["alice:x:1000:1000::/home/alice:/bin/sh"],
        "{log}"
    );
    let alice_hash = at("ALICE SHADOW ");
    assert!(
        alice_hash.len() == 1 && sha512_crypt_matches(alice_hash[0], &crafted_password()),
        "{log}"
    );
    assert_eq!(at("SUDO "), ["sudo:x:27:alice"], "{log}");
    assert_eq!(
        at("MODE "),
        [
            "700 1000 1000 /home/alice/.ssh",
            "600 1000 1000 /home/alice/.ssh/authorized_keys"
        ],
        "{log}"
    );
    assert_eq!(at("KEY "), crafted_added(), "{log}");
    assert!(
        lines.contains(
            &"extility-firstboot: user alice: 3 SSH keys installed, 1 already there, 4 refused"
        ),
        "{log}"
    );
    assert!(!lines.contains(&"INJECTED"), "{log}");
    assert!(!log.contains(&crafted_password()), "{log}");
    assert!(!log.contains("local-token"), "{log}");
}
