//! The addresses of a Ceph cluster's daemons, read from its monitor and OSD maps (`ceph mon
//! dump`, `ceph osd dump` in JSON): every address a monitor or an OSD listens on (public,
//! cluster and heartbeat networks), which guests must never reach.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

#[derive(Deserialize)]
struct MonMap {
    #[serde(default)]
    mons: Vec<Daemon>,
}

#[derive(Deserialize)]
struct OsdMap {
    #[serde(default)]
    osds: Vec<Daemon>,
}

/// A monitor or an OSD: the address vectors it has (a monitor has only public ones).
#[derive(Deserialize)]
struct Daemon {
    #[serde(default)]
    public_addrs: Option<AddrVec>,
    #[serde(default)]
    cluster_addrs: Option<AddrVec>,
    #[serde(default)]
    heartbeat_back_addrs: Option<AddrVec>,
    #[serde(default)]
    heartbeat_front_addrs: Option<AddrVec>,
}

#[derive(Deserialize)]
struct AddrVec {
    #[serde(default)]
    addrvec: Vec<Addr>,
}

#[derive(Deserialize)]
struct Addr {
    /// `127.0.0.1:6800`, `[fd00::1]:6800`; `-` or `0.0.0.0:0` for an OSD that is down.
    addr: String,
}

/// Every daemon address of a monitor map and an OSD map, sorted, without duplicates and
/// without the unspecified address that stands for "not bound".
pub fn daemon_addresses(mon_dump: &[u8], osd_dump: &[u8]) -> serde_json::Result<Vec<IpAddr>> {
    let mons: MonMap = serde_json::from_slice(mon_dump)?;
    let osds: OsdMap = serde_json::from_slice(osd_dump)?;
    let mut addresses: Vec<IpAddr> = mons
        .mons
        .iter()
        .chain(&osds.osds)
        .flat_map(|d| {
            [
                &d.public_addrs,
                &d.cluster_addrs,
                &d.heartbeat_back_addrs,
                &d.heartbeat_front_addrs,
            ]
        })
        .flatten()
        .flat_map(|v| &v.addrvec)
        .filter_map(|a| a.addr.parse::<SocketAddr>().ok())
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
        .collect();
    addresses.sort();
    addresses.dedup();
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from the test cluster's own `ceph mon dump -f json` / `ceph osd dump -f json`
    /// (Ceph 16.2), with addresses changed so that every network is told apart.
    const MON_DUMP: &str = r#"{"epoch":1,"mons":[{"rank":0,"name":"a","public_addrs":{"addrvec":[
        {"type":"v2","addr":"10.1.0.1:3300","nonce":0},{"type":"v1","addr":"10.1.0.1:6789","nonce":0}]},
        "addr":"10.1.0.1:6789/0","public_addr":"10.1.0.1:6789/0"}],"quorum":[0]}"#;
    const OSD_DUMP: &str = r#"{"epoch":6,"pools":[],"osds":[{"osd":0,"up":1,"in":1,
        "public_addrs":{"addrvec":[{"type":"v2","addr":"10.1.0.7:6800","nonce":414},{"type":"v1","addr":"10.1.0.7:6801","nonce":414}]},
        "cluster_addrs":{"addrvec":[{"type":"v2","addr":"10.2.0.7:6802","nonce":414}]},
        "heartbeat_back_addrs":{"addrvec":[{"type":"v2","addr":"10.2.0.7:6806","nonce":414}]},
        "heartbeat_front_addrs":{"addrvec":[{"type":"v2","addr":"10.1.0.7:6804","nonce":414}]},
        "public_addr":"10.1.0.7:6801/414","state":["exists","up"]},
        {"osd":1,"up":0,"in":0,"public_addrs":{"addrvec":[]},"cluster_addrs":{"addrvec":[{"type":"v1","addr":"0.0.0.0:0","nonce":0}]},
        "state":["exists"]},
        {"osd":2,"up":1,"in":1,"public_addrs":{"addrvec":[{"type":"v2","addr":"[fd00::9]:6800","nonce":1}]}}]}"#;

    #[test]
    fn every_monitor_and_osd_network_is_read_and_unbound_addresses_are_not() {
        let found = daemon_addresses(MON_DUMP.as_bytes(), OSD_DUMP.as_bytes()).unwrap();
        let want: Vec<IpAddr> = ["10.1.0.1", "10.1.0.7", "10.2.0.7", "fd00::9"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(found, want);
    }

    #[test]
    fn maps_that_are_not_json_are_an_error() {
        assert!(daemon_addresses(b"not json", OSD_DUMP.as_bytes()).is_err());
        assert!(daemon_addresses(MON_DUMP.as_bytes(), b"{\"osds\":7}").is_err());
    }
}
