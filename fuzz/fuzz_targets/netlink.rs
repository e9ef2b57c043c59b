//! The agent's rtnetlink codec (agent/src/net/netlink.rs): what the kernel
//! sends back over the netlink socket, and the requests the agent builds.
//!
//! The first byte picks the mode:
//! - 0: the rest is one datagram for `parse`;
//! - 1: requests built from the input (a link change, an address and a
//!   route, IPv4 or IPv6, added or removed), concatenated into one datagram.
//!
//! Checked:
//! - `parse` never panics, and what it reads is true of the bytes: as many
//!   messages as the headers chain through, each reply's sequence number and
//!   flags those of its header, names free of NUL;
//! - every request is one message whose header length is its length, a
//!   multiple of 4, and `parse` reads the datagram back to exactly the link,
//!   address and route fields the builders were given.
#![no_main]

use basalt_fuzz::agent_net::netlink::{
    self, AddressChange, Body, Lifetime, RouteChange, AF_INET, AF_INET6, IFF_UP, RTM_DELADDR, RTM_DELROUTE,
    RTN_UNICAST, RTPROT_STATIC, RT_SCOPE_LINK, RT_SCOPE_UNIVERSE, RT_TABLE_MAIN,
};
use basalt_fuzz::Input;
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.byte() % 2 {
        0 => check_parse(input.rest()),
        _ => check_requests(&mut input),
    }
});

fn check_parse(buf: &[u8]) {
    let Ok(replies) = netlink::parse(buf) else {
        return;
    };
    // Walk the headers independently: each message starts where the last
    // one's aligned length ends.
    let mut at = 0;
    for r in &replies {
        let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        assert!(len >= netlink::NLMSG_HDRLEN && at + len <= buf.len());
        assert_eq!(r.flags, u16::from_ne_bytes([buf[at + 6], buf[at + 7]]));
        assert_eq!(
            r.seq,
            u32::from_ne_bytes([buf[at + 8], buf[at + 9], buf[at + 10], buf[at + 11]])
        );
        match &r.body {
            Body::Link(l) => assert!(!l.name.as_deref().unwrap_or("").contains('\0')),
            Body::Address(a) => assert!(!a.label.as_deref().unwrap_or("").contains('\0')),
            Body::Error(e) => assert!(*e > 0, "errno {e}"),
            _ => {}
        }
        at += ((len + 3) & !3).min(buf.len() - at);
    }
    assert_eq!(at, buf.len(), "every byte belongs to a message");
}

fn u32_of(input: &mut Input) -> u32 {
    u32::from(input.u16()) << 16 | u32::from(input.u16())
}

fn ip_of(input: &mut Input, v6: bool) -> IpAddr {
    if v6 {
        let mut o = [0u8; 16];
        let b = input.bytes(16);
        o[..b.len()].copy_from_slice(b);
        IpAddr::V6(Ipv6Addr::from(o))
    } else {
        IpAddr::V4(Ipv4Addr::from(u32_of(input)))
    }
}

/// The length field of each message equals its length, and lengths are
/// multiples of 4 (every attribute is padded).
fn check_framing(msg: &[u8]) {
    let len = u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize;
    assert_eq!(len, msg.len());
    assert_eq!(len % 4, 0);
}

fn check_requests(input: &mut Input) {
    let flags = input.byte();
    let v6 = flags & 1 == 1;
    let remove = flags & 2 == 2;
    let (up, with_mtu, with_lifetime, with_gateway, with_metric) = (
        flags & 4 != 0,
        flags & 8 != 0,
        flags & 16 != 0,
        flags & 32 != 0,
        flags & 64 != 0,
    );
    let index = u32_of(input);
    let mtu = with_mtu.then(|| u32_of(input));
    let address = AddressChange {
        index,
        address: ip_of(input, v6),
        prefix: input.byte(),
        lifetime: with_lifetime.then(|| Lifetime {
            preferred_secs: u32_of(input),
            valid_secs: u32_of(input),
        }),
    };
    let dst_len = input.byte();
    let route = RouteChange {
        dst: ip_of(input, v6),
        dst_len,
        gateway: if with_gateway { Some(ip_of(input, v6)) } else { None },
        oif: index,
        metric: with_metric.then(|| u32_of(input)),
        protocol: RTPROT_STATIC,
    };
    let link_msg = netlink::set_link(1, index, up, mtu);
    let (addr_msg, route_msg) = if remove {
        (netlink::del_address(2, &address), netlink::del_route(3, &route))
    } else {
        (netlink::new_address(2, &address), netlink::new_route(3, &route))
    };
    for m in [&link_msg, &addr_msg, &route_msg] {
        check_framing(m);
    }
    let datagram = [link_msg, addr_msg, route_msg].concat();
    let replies = netlink::parse(&datagram).expect("the builders' requests parse");
    assert_eq!(replies.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
    match &replies[0].body {
        Body::Link(l) => {
            assert_eq!((l.index, l.flags, l.mtu), (index, if up { IFF_UP } else { 0 }, mtu));
            assert_eq!((&l.name, l.mac, l.operstate), (&None, None, None));
        }
        other => panic!("a link change read back as {other:?}"),
    }
    let family = if v6 { AF_INET6 } else { AF_INET };
    match (&replies[1].body, remove) {
        (Body::Address(a), false) => {
            assert_eq!(
                (a.index, a.address, a.prefix, a.lifetime),
                (index, address.address, address.prefix, address.lifetime)
            );
        }
        (Body::Other(RTM_DELADDR), true) => {}
        (other, _) => panic!("an address change read back as {other:?}"),
    }
    match (&replies[2].body, remove) {
        (Body::Route(r), false) => {
            assert_eq!(r.family, family);
            assert_eq!(r.dst, (dst_len > 0).then_some(route.dst));
            assert_eq!(
                (r.dst_len, r.gateway, r.oif, r.priority),
                (dst_len, route.gateway, Some(index), route.metric)
            );
            let scope = if route.gateway.is_some() {
                RT_SCOPE_UNIVERSE
            } else {
                RT_SCOPE_LINK
            };
            assert_eq!(
                (r.table, r.protocol, r.scope, r.route_type),
                (u32::from(RT_TABLE_MAIN), RTPROT_STATIC, scope, RTN_UNICAST)
            );
        }
        (Body::Other(RTM_DELROUTE), true) => {}
        (other, _) => panic!("a route change read back as {other:?}"),
    }
}
