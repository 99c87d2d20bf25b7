//! Address arithmetic: VLAN subnets cut from the pool (`--vlan-subnets`, `--vlan-prefix`), a
//! subnet's gateway, and the addresses NICs get.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The first NIC address of a subnet is its network address plus this (the gateway is plus
/// one; the rest below is kept for the platform).
const FIRST_NIC_OFFSET: u32 = 10;

/// The first subnet of the pool not in `taken`.
pub fn free_subnet(pool: Ipv4Net, prefix: u8, taken: &HashSet<Ipv4Net>) -> Option<Ipv4Net> {
    pool.subnets(prefix).ok()?.find(|net| !taken.contains(net))
}

/// A VLAN's gateway: the host's address on its bridge, the guests' router, DHCP and DNS.
pub fn gateway(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// The first address of the subnet a NIC may get that is not in `taken`.
pub fn free_address(subnet: Ipv4Net, taken: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let network = u32::from(subnet.network());
    let broadcast = u32::from(subnet.broadcast());
    let size = broadcast - network + 1;
    let first = if size >= 64 { FIRST_NIC_OFFSET } else { 2 };
    (network + first..broadcast)
        .map(Ipv4Addr::from)
        .find(|a| !taken.contains(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_cut_from_the_pool_in_order_skipping_taken_ones() {
        let pool: Ipv4Net = "10.64.0.0/10".parse().unwrap();
        let mut taken = HashSet::new();
        let first = free_subnet(pool, 24, &taken).unwrap();
        assert_eq!(first.to_string(), "10.64.0.0/24");
        assert_eq!(gateway(first).to_string(), "10.64.0.1");
        taken.insert(first);
        assert_eq!(
            free_subnet(pool, 24, &taken).unwrap().to_string(),
            "10.64.1.0/24"
        );
        let tiny: Ipv4Net = "10.0.0.0/24".parse().unwrap();
        let all: HashSet<_> = tiny.subnets(25).unwrap().collect();
        assert_eq!(free_subnet(tiny, 25, &all), None);
    }

    #[test]
    fn nic_addresses_skip_the_gateway_and_reserved_ones() {
        let net: Ipv4Net = "10.64.3.0/24".parse().unwrap();
        let mut taken = HashSet::new();
        let a = free_address(net, &taken).unwrap();
        assert_eq!(a.to_string(), "10.64.3.10");
        taken.insert(a);
        assert_eq!(free_address(net, &taken).unwrap().to_string(), "10.64.3.11");
        let small: Ipv4Net = "10.64.3.0/30".parse().unwrap();
        assert_eq!(
            free_address(small, &HashSet::new()).unwrap().to_string(),
            "10.64.3.2"
        );
        let full: HashSet<_> = ["10.64.3.2".parse().unwrap()].into();
        assert_eq!(free_address(small, &full), None);
    }
}
