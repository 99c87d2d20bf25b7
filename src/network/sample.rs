//! A synthetic node for the network benchmarks (`benches/network.sh`, through the hidden
//! `extility network-rules` command): `nics` NICs on one VLAN and `forwards` port forwards,
//! written by the same code as a real node's rules.

use std::net::Ipv4Addr;

use super::{Forward, NetworkPlan, Nic, VlanNet};

/// The VLAN of the sample node, its subnet and the host port of its first forward.
pub const VLAN_ID: i64 = 7;
pub const SUBNET: &str = "10.64.0.0/16";
pub const FIRST_HOST_PORT: u16 = 20000;

/// NIC `i` (server id `i`, from 1): address 10.64.x.y from 10.64.0.2 on, MAC
/// 52:54:00:00:HH:LL of `i`.
pub fn nic(i: u32) -> Nic {
    let n = i + 1;
    Nic {
        server_id: i64::from(i),
        mac: format!("52:54:00:00:{:02x}:{:02x}", (i >> 8) & 0xff, i & 0xff),
        address: Ipv4Addr::new(10, 64, (n / 250) as u8, (n % 250 + 1) as u8),
        hostname: format!("server-{i}"),
        firewall: None,
    }
}

/// `nics` NICs (ids 1 to `nics`) and `forwards` forwards (to NIC 1's port 22 onwards).
pub fn plan(nics: u32, forwards: u16) -> NetworkPlan {
    NetworkPlan {
        vlans: vec![VlanNet {
            vlan_id: VLAN_ID,
            subnet: SUBNET.parse().expect("a valid subnet"),
            nics: (1..=nics).map(nic).collect(),
            remote_nics: Vec::new(),
        }],
        forwards: (0..forwards)
            .map(|k| Forward {
                host_port: FIRST_HOST_PORT + k,
                address: nic(1).address,
                guest_port: 22 + k,
            })
            .collect(),
        tunnel: None,
        platform: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_and_macs_are_distinct() {
        let plan = super::plan(600, 3);
        let nics = &plan.vlans[0].nics;
        let addresses: std::collections::BTreeSet<_> = nics.iter().map(|n| n.address).collect();
        let macs: std::collections::BTreeSet<_> = nics.iter().map(|n| n.mac.clone()).collect();
        assert_eq!((addresses.len(), macs.len()), (600, 600));
        assert_eq!(nics[0].address.to_string(), "10.64.0.3");
        assert!(!addresses.contains(&"10.64.0.1".parse().unwrap()));
    }
}
