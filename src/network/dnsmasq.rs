//! One dnsmasq per VLAN bridge: DHCP that hands each known MAC the address the platform chose
//! (and nothing to unknown ones), the gateway as router and DNS server, and the VLAN's server
//! names in DNS. Its files live in the network state directory, named after the bridge; the
//! daemon outlives `extility serve` (VMs keep their DHCP across a restart) and is found again
//! by its pid file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{NetworkError, VlanNet};

pub const BINARY: &str = "dnsmasq";

/// DNS names of servers: `<hostname>.internal`.
pub const DOMAIN: &str = "internal";

/// The files of one bridge's dnsmasq.
pub struct Files {
    pub conf: PathBuf,
    pub hosts: PathBuf,
    pub names: PathBuf,
    pub pid: PathBuf,
    pub leases: PathBuf,
}

impl Files {
    pub fn of(dir: &Path, bridge: &str) -> Files {
        Files {
            conf: dir.join(format!("{bridge}.conf")),
            hosts: dir.join(format!("{bridge}.dhcp-hosts")),
            names: dir.join(format!("{bridge}.names")),
            pid: dir.join(format!("{bridge}.pid")),
            leases: dir.join(format!("{bridge}.leases")),
        }
    }

    fn all(&self) -> [&PathBuf; 5] {
        [
            &self.conf,
            &self.hosts,
            &self.names,
            &self.pid,
            &self.leases,
        ]
    }
}

/// Makes the directory of the dnsmasq files (mode 0755, as are the directories made above
/// it), and checks dnsmasq can reach it once it has dropped its privileges: every directory
/// above must be searchable by other users. Else it says which is not, and the fix.
pub fn make_state_dir(dir: &Path) -> Result<(), NetworkError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| NetworkError(format!("creating {}: {e}", dir.display())))?;
    for above in dir.ancestors().skip(1) {
        let searchable = std::fs::metadata(above)
            .map(|meta| meta.permissions().mode() & 0o001 != 0)
            .unwrap_or(true);
        if !searchable {
            return Err(NetworkError(format!(
                "{} is not searchable by other users, so dnsmasq (which drops its privileges to \
                 nobody) could not read its files under {} and guests would get no address: \
                 `chmod o+x {}`, or choose another --network-run-dir",
                above.display(),
                dir.display(),
                above.display()
            )));
        }
    }
    Ok(())
}

/// The configuration file: everything but the hosts, which SIGHUP reloads.
pub fn config(vlan: &VlanNet, files: &Files, egress: bool) -> String {
    let bridge = vlan.bridge();
    let gateway = vlan.gateway();
    let mut conf = format!(
        "# Written by extility for VLAN {id}; replaced at each change.\n\
         interface={bridge}\n\
         bind-interfaces\n\
         except-interface=lo\n\
         listen-address={gateway}\n\
         no-hosts\n\
         addn-hosts={names}\n\
         domain={DOMAIN}\n\
         local=/{DOMAIN}/\n\
         domain-needed\n\
         bogus-priv\n\
         dhcp-authoritative\n\
         dhcp-range={network},static,{mask},1h\n\
         dhcp-hostsfile={hosts}\n\
         dhcp-leasefile={leases}\n\
         dhcp-option=option:router,{gateway}\n\
         dhcp-option=option:dns-server,{gateway}\n\
         dhcp-option=option:domain-name,{DOMAIN}\n\
         pid-file={pid}\n",
        id = vlan.vlan_id,
        names = files.names.display(),
        network = vlan.subnet.network(),
        mask = vlan.subnet.netmask(),
        hosts = files.hosts.display(),
        leases = files.leases.display(),
        pid = files.pid.display(),
    );
    if !egress {
        // Names of this VLAN only: nothing is asked of resolvers outside.
        conf.push_str("no-resolv\n");
    }
    conf
}

/// `dhcp-hostsfile`: `MAC,ADDRESS,NAME` per NIC.
pub fn dhcp_hosts(vlan: &VlanNet) -> String {
    vlan.nics
        .iter()
        .map(|n| format!("{},{},{}\n", n.mac, n.address, n.hostname))
        .collect()
}

/// `addn-hosts`: `ADDRESS NAME.internal NAME` per NIC.
pub fn names(vlan: &VlanNet) -> String {
    vlan.nics
        .iter()
        .map(|n| format!("{} {}.{DOMAIN} {}\n", n.address, n.hostname, n.hostname))
        .collect()
}

/// The pid of the dnsmasq running with this configuration, if one does.
pub fn running(files: &Files) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(&files.pid)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let conf = files.conf.to_string_lossy();
    let ours = cmdline
        .split(|b| *b == 0)
        .any(|arg| arg.ends_with(conf.as_bytes()));
    ours.then_some(pid)
}

/// Makes the bridge's dnsmasq serve `vlan`: writes the files, then reloads the hosts of a
/// running one (SIGHUP) or starts one (it daemonizes and writes its pid file).
pub fn ensure(
    dir: &Path,
    vlan: &VlanNet,
    egress: bool,
    mtu: Option<u16>,
) -> Result<(), NetworkError> {
    let files = Files::of(dir, &vlan.bridge());
    let mut conf = config(vlan, &files, egress);
    if let Some(mtu) = mtu {
        conf.push_str(&format!("dhcp-option=option:mtu,{mtu}\n"));
    }
    // Readable by everyone whatever the umask: dnsmasq rereads the hosts as `nobody`.
    let write = |path: &Path, text: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text)
            .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)))
            .map_err(|e| NetworkError(format!("writing {}: {e}", path.display())))
    };
    write(&files.hosts, &dhcp_hosts(vlan))?;
    write(&files.names, &names(vlan))?;
    let same_conf = std::fs::read_to_string(&files.conf).is_ok_and(|old| old == conf);
    match running(&files) {
        Some(pid) if same_conf => {
            // SAFETY: a plain signal to the daemon this configuration started.
            unsafe { libc::kill(pid, libc::SIGHUP) };
            return Ok(());
        }
        Some(pid) => terminate(pid),
        None => {}
    }
    write(&files.conf, &conf)?;
    let out = Command::new(BINARY)
        .arg(format!("--conf-file={}", files.conf.display()))
        .output()
        .map_err(|e| NetworkError(format!("starting {BINARY}: {e}")))?;
    if !out.status.success() {
        return Err(NetworkError(format!(
            "{BINARY} for {} failed: {}",
            vlan.bridge(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Stops the dnsmasq of a bridge that is going away and removes its files.
pub fn remove(dir: &Path, bridge: &str) {
    let files = Files::of(dir, bridge);
    if let Some(pid) = running(&files) {
        terminate(pid);
    }
    for path in files.all() {
        let _ = std::fs::remove_file(path);
    }
}

/// The bridges whose dnsmasq files are in `dir`.
pub fn known_bridges(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut bridges: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".conf").map(str::to_string)
        })
        .filter(|b| super::is_own_link(b))
        .collect();
    bridges.sort();
    bridges
}

/// SIGTERM, and a bounded wait for the process to go.
fn terminate(pid: i32) {
    // SAFETY: a plain signal to a process found by its pid file and command line.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a process runs (a zombie waiting for its parent does not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // `PID (COMM) STATE ...`: the state follows the last parenthesis.
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_state_dir_under_a_private_directory_is_refused_with_the_fix() {
        let top = tempfile::tempdir().unwrap();
        let private = top.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = make_state_dir(&private.join("network/node")).unwrap_err();
        assert!(
            err.0.starts_with(&format!(
                "{} is not searchable by other users",
                private.display()
            )),
            "{}",
            err.0
        );
        assert!(
            err.0
                .contains(&format!("`chmod o+x {}`", private.display()))
        );

        let open = top.path().join("open/network/node");
        make_state_dir(&open).unwrap();
        let mode = std::fs::metadata(&open).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }
}
