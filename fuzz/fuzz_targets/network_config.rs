//! The config's `network` section (common/src/config/network.rs), read
//! from JSON an operator signs.
//!
//! Input: JSON text, read strictly and handed to `network::parse` as
//! `$.network`. Checked:
//! - every error names a path inside `$.network`;
//! - what parses keeps every promise of a validated section: counts within
//!   their limits, valid interface names and unicast MACs, no interface
//!   twice, host addresses (no /0, no subnet or broadcast address), no IPv4
//!   address beside dhcp4, route destinations without host bits, gateways of
//!   the destination's family and on-link (in a subnet of the interface's own
//!   addresses, or dhcp4 for IPv4, or IPv6 link-local), MTU in range (1280
//!   up when the link carries IPv6), at most 3 DNS servers and 6 domains;
//! - it writes back (fuzz/src/lib.rs `network_to_json`) to JSON that parses
//!   to the same section.
#![no_main]

use basalt_common::config::network::{
    self, check_domain, check_ifname, LinkMatch, MAX_DNS_SERVERS, MAX_INTERFACES, MAX_MTU, MAX_SEARCH_DOMAINS, MIN_MTU,
    MIN_MTU_IPV6,
};
use basalt_common::json;
use basalt_fuzz::network_to_json;
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = json::parse_strict(data) else {
        return;
    };
    let n = match network::parse(&doc, "$.network") {
        Ok(n) => n,
        Err(e) => {
            assert!(e.path.starts_with("$.network"), "{e}");
            return;
        }
    };
    assert!(n.interfaces.len() <= MAX_INTERFACES);
    assert!(n.dns.servers.len() <= MAX_DNS_SERVERS);
    assert!(n.dns.search.len() <= MAX_SEARCH_DOMAINS);
    assert!(n.dns.search.iter().all(|d| check_domain(d).is_ok()));
    assert!(!n.hostname_from_dhcp || n.interfaces.iter().any(|i| i.dhcp4));
    for (k, iface) in n.interfaces.iter().enumerate() {
        match &iface.link {
            LinkMatch::Name(name) => assert_eq!(check_ifname(name), Ok(())),
            LinkMatch::Mac(mac) => assert!(mac[0] & 1 == 0 && *mac != [0; 6], "{mac:?}"),
        }
        assert!(
            !n.interfaces[..k].iter().any(|o| o.link == iface.link),
            "interface twice"
        );
        for a in &iface.addresses {
            assert!(
                a.prefix > 0 && !a.addr.is_unspecified() && !a.addr.is_multicast(),
                "{a}"
            );
            assert!(!(iface.dhcp4 && a.addr.is_ipv4()), "{a} beside dhcp4");
            if let IpAddr::V4(v4) = a.addr {
                if a.prefix <= 30 {
                    let host = u32::from(v4) & (u32::MAX >> a.prefix);
                    assert!(host != 0 && host != u32::MAX >> a.prefix, "{a}");
                }
            }
        }
        for r in &iface.routes {
            assert_eq!(r.to.network(), r.to, "host bits in {}", r.to);
            if let Some(gw) = r.via {
                assert_eq!(gw.is_ipv4(), r.to.addr.is_ipv4());
                let link_local = matches!(gw, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
                let on_link = iface.addresses.iter().any(|a| a.contains(gw) && a.addr != gw);
                assert!(on_link || link_local || (iface.dhcp4 && gw.is_ipv4()), "{gw} off-link");
            }
        }
        if let Some(mtu) = iface.mtu {
            let min = if iface.addresses.iter().any(|a| a.addr.is_ipv6()) {
                MIN_MTU_IPV6
            } else {
                MIN_MTU
            };
            assert!((min..=MAX_MTU).contains(&mtu), "{mtu}");
        }
    }
    let again = network_to_json(&n);
    assert_eq!(
        network::parse(&again, "$.network").as_ref(),
        Ok(&n),
        "written as {again}"
    );
});
