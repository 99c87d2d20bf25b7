//! Address arithmetic: VLAN subnets cut from the pool (`--vlan-subnets`, `--vlan-prefix`), a
//! subnet's gateway, and the addresses NICs get.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The first NIC address of a subnet is its network address plus this (the gateway is plus
/// one; the rest below is kept for the platform).
const FIRST_NIC_OFFSET: u32 = 10;

/// The first subnet of the pool that overlaps none of `taken`. Overlap, not equality: a
/// subnet cut when `--vlan-prefix` was different (a /22 then, /24s now) still holds every
/// smaller network inside it, and a small one taken holds the larger ones around it.
pub fn free_subnet(pool: Ipv4Net, prefix: u8, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    let taken = merged_ranges(taken);
    pool.subnets(prefix)
        .ok()?
        .find(|net| !overlaps_any(&taken, range(*net)))
}

/// A network's first and last address, as numbers.
fn range(net: Ipv4Net) -> (u32, u32) {
    (u32::from(net.network()), u32::from(net.broadcast()))
}

/// The address ranges of `nets`, sorted and merged where they overlap or touch: disjoint, so
/// one binary search finds whether a range overlaps any (however many VLANs there are).
fn merged_ranges(nets: &[Ipv4Net]) -> Vec<(u32, u32)> {
    let mut ranges: Vec<(u32, u32)> = nets.iter().map(|n| range(*n)).collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match merged.last_mut() {
            Some(prev) if u64::from(first) <= u64::from(prev.1) + 1 => prev.1 = prev.1.max(last),
            _ => merged.push((first, last)),
        }
    }
    merged
}

/// Whether `(first, last)` overlaps one of the disjoint, sorted `ranges`.
fn overlaps_any(ranges: &[(u32, u32)], (first, last): (u32, u32)) -> bool {
    // The ranges starting at or before `last`; only the latest of them can reach `first`.
    let before = ranges.partition_point(|r| r.0 <= last);
    before > 0 && ranges[before - 1].1 >= first
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
        let mut taken = Vec::new();
        let first = free_subnet(pool, 24, &taken).unwrap();
        assert_eq!(first.to_string(), "10.64.0.0/24");
        assert_eq!(gateway(first).to_string(), "10.64.0.1");
        taken.push(first);
        assert_eq!(
            free_subnet(pool, 24, &taken).unwrap().to_string(),
            "10.64.1.0/24"
        );
        let tiny: Ipv4Net = "10.0.0.0/24".parse().unwrap();
        let all: Vec<_> = tiny.subnets(25).unwrap().collect();
        assert_eq!(free_subnet(tiny, 25, &all), None);
    }

    fn nets(list: &[&str]) -> Vec<Ipv4Net> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn a_subnet_inside_a_larger_one_taken_is_skipped() {
        // Cut when --vlan-prefix was 22: the four /24s inside it are all taken.
        let pool: Ipv4Net = "10.64.0.0/10".parse().unwrap();
        let taken = nets(&["10.64.0.0/22"]);
        assert_eq!(
            free_subnet(pool, 24, &taken).unwrap().to_string(),
            "10.64.4.0/24"
        );
        // A /22 inside a /16 taken, and others after it, skipped in one go.
        let taken = nets(&["10.64.0.0/16", "10.65.0.0/24", "10.65.1.0/25"]);
        assert_eq!(
            free_subnet(pool, 24, &taken).unwrap().to_string(),
            "10.65.2.0/24"
        );
        assert_eq!(
            free_subnet(pool, 22, &taken).unwrap().to_string(),
            "10.65.4.0/22"
        );
    }

    #[test]
    fn a_larger_subnet_around_a_small_one_taken_is_skipped() {
        // Cut when --vlan-prefix was 28: the /24 and /22 that hold it are taken too.
        let pool: Ipv4Net = "10.64.0.0/10".parse().unwrap();
        let taken = nets(&["10.64.0.48/28"]);
        assert_eq!(
            free_subnet(pool, 24, &taken).unwrap().to_string(),
            "10.64.1.0/24"
        );
        assert_eq!(
            free_subnet(pool, 22, &taken).unwrap().to_string(),
            "10.64.4.0/22"
        );
        // Nested and unsorted: the larger one wins.
        let taken = nets(&["10.64.2.0/24", "10.64.0.0/22", "10.64.1.128/25"]);
        assert_eq!(
            free_subnet(pool, 24, &taken).unwrap().to_string(),
            "10.64.4.0/24"
        );
        // The last free one of a small pool is found; then none is left.
        let small: Ipv4Net = "10.0.0.0/24".parse().unwrap();
        let taken = nets(&["10.0.0.0/26", "10.0.0.64/27", "10.0.0.128/25"]);
        assert_eq!(
            free_subnet(small, 27, &taken).unwrap().to_string(),
            "10.0.0.96/27"
        );
        assert_eq!(free_subnet(small, 26, &taken), None);
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
