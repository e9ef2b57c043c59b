//! Byte-exact tests against messages assembled by hand from the kernel's
//! struct layouts (little-endian hosts: x86_64, aarch64).
#![cfg(target_endian = "little")]

use super::*;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn fd00_5() -> IpAddr {
    "fd00::5".parse().unwrap()
}

#[test]
fn dump_requests() {
    #[rustfmt::skip]
    let links: Vec<u8> = vec![
        32, 0, 0, 0,  18, 0,  0x01, 0x03,  7, 0, 0, 0,  0, 0, 0, 0, // nlmsghdr: RTM_GETLINK, REQUEST|DUMP, seq 7
        0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,          // ifinfomsg, all zero
    ];
    #[rustfmt::skip]
    let addrs: Vec<u8> = vec![
        24, 0, 0, 0,  22, 0,  0x01, 0x03,  8, 0, 0, 0,  0, 0, 0, 0,
        0, 0, 0, 0,  0, 0, 0, 0,                                    // ifaddrmsg
    ];
    #[rustfmt::skip]
    let routes: Vec<u8> = vec![
        28, 0, 0, 0,  26, 0,  0x01, 0x03,  9, 0, 0, 0,  0, 0, 0, 0,
        0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,                       // rtmsg
    ];
    assert_eq!(dump_links(7), links);
    assert_eq!(dump_addresses(8), addrs);
    assert_eq!(dump_routes(9), routes);
}

#[test]
fn link_requests() {
    #[rustfmt::skip]
    let up_mtu: Vec<u8> = vec![
        40, 0, 0, 0,  16, 0,  0x05, 0x00,  1, 0, 0, 0,  0, 0, 0, 0, // RTM_NEWLINK, REQUEST|ACK
        0, 0,  0, 0,  2, 0, 0, 0,  1, 0, 0, 0,  1, 0, 0, 0,         // index 2, flags IFF_UP, change IFF_UP
        8, 0,  4, 0,  0x78, 0x05, 0, 0,                             // IFLA_MTU 1400
    ];
    #[rustfmt::skip]
    let down: Vec<u8> = vec![
        32, 0, 0, 0,  16, 0,  0x05, 0x00,  2, 0, 0, 0,  0, 0, 0, 0,
        0, 0,  0, 0,  3, 0, 0, 0,  0, 0, 0, 0,  1, 0, 0, 0,         // flags 0, change IFF_UP
    ];
    assert_eq!(set_link(1, 2, true, Some(1400)), up_mtu);
    assert_eq!(set_link(2, 3, false, None), down);
}

#[test]
fn address_requests() {
    let lease = AddressChange {
        index: 2,
        address: v4(10, 0, 2, 15),
        prefix: 24,
        lifetime: Some(Lifetime {
            preferred_secs: 3600,
            valid_secs: 3600,
        }),
    };
    #[rustfmt::skip]
    let want: Vec<u8> = vec![
        60, 0, 0, 0,  20, 0,  0x05, 0x05,  4, 0, 0, 0,  0, 0, 0, 0, // RTM_NEWADDR, REQUEST|ACK|REPLACE|CREATE
        2, 24, 0, 0,  2, 0, 0, 0,                                   // AF_INET /24, scope universe, index 2
        8, 0,  2, 0,  10, 0, 2, 15,                                 // IFA_LOCAL
        8, 0,  1, 0,  10, 0, 2, 15,                                 // IFA_ADDRESS
        20, 0,  6, 0,  0x10, 0x0e, 0, 0,  0x10, 0x0e, 0, 0,         // IFA_CACHEINFO 3600, 3600
        0, 0, 0, 0,  0, 0, 0, 0,
    ];
    assert_eq!(new_address(4, &lease), want);

    let fixed = AddressChange {
        index: 3,
        address: fd00_5(),
        prefix: 64,
        lifetime: None,
    };
    let mut ip6 = vec![0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
    #[rustfmt::skip]
    let mut want: Vec<u8> = vec![
        64, 0, 0, 0,  21, 0,  0x05, 0x00,  5, 0, 0, 0,  0, 0, 0, 0, // RTM_DELADDR, REQUEST|ACK
        10, 64, 0, 0,  3, 0, 0, 0,                                  // AF_INET6 /64, index 3
        20, 0,  2, 0,
    ];
    want.append(&mut ip6.clone());
    want.extend_from_slice(&[20, 0, 1, 0]);
    want.append(&mut ip6);
    assert_eq!(del_address(5, &fixed), want);
}

#[test]
fn route_requests() {
    let default = RouteChange {
        dst: v4(0, 0, 0, 0),
        dst_len: 0,
        gateway: Some(v4(10, 0, 2, 2)),
        oif: 2,
        metric: Some(100),
        protocol: RTPROT_DHCP,
    };
    #[rustfmt::skip]
    let want: Vec<u8> = vec![
        52, 0, 0, 0,  24, 0,  0x05, 0x05,  6, 0, 0, 0,  0, 0, 0, 0, // RTM_NEWROUTE, REQUEST|ACK|REPLACE|CREATE
        2, 0, 0, 0,  254, 16, 0, 1,  0, 0, 0, 0,                    // AF_INET, main, dhcp, universe, unicast
        8, 0,  5, 0,  10, 0, 2, 2,                                  // RTA_GATEWAY
        8, 0,  4, 0,  2, 0, 0, 0,                                   // RTA_OIF
        8, 0,  6, 0,  100, 0, 0, 0,                                 // RTA_PRIORITY
    ];
    assert_eq!(new_route(6, &default), want);

    let on_link = RouteChange {
        dst: v4(10, 20, 0, 0),
        dst_len: 16,
        gateway: None,
        oif: 2,
        metric: None,
        protocol: RTPROT_STATIC,
    };
    #[rustfmt::skip]
    let want: Vec<u8> = vec![
        44, 0, 0, 0,  25, 0,  0x05, 0x00,  7, 0, 0, 0,  0, 0, 0, 0, // RTM_DELROUTE, REQUEST|ACK
        2, 16, 0, 0,  254, 4, 253, 1,  0, 0, 0, 0,                  // /16, static, scope link
        8, 0,  1, 0,  10, 20, 0, 0,                                 // RTA_DST
        8, 0,  4, 0,  2, 0, 0, 0,                                   // RTA_OIF
    ];
    assert_eq!(del_route(7, &on_link), want);
}

/// One dump datagram as the kernel sends it: two links, an address, a
/// route, DONE; then an error and an ACK.
#[rustfmt::skip]
fn kernel_datagram() -> Vec<u8> {
    let mut b = vec![
        // RTM_NEWLINK lo: ARPHRD_LOOPBACK (772), UP|LOOPBACK|RUNNING|LOWER_UP
        60, 0, 0, 0,  16, 0,  0x02, 0x00,  9, 0, 0, 0,  0x10, 0, 0, 0,
        0, 0,  0x04, 0x03,  1, 0, 0, 0,  0x49, 0, 1, 0,  0, 0, 0, 0,
        7, 0,  3, 0,  b'l', b'o', 0, 0,                             // IFLA_IFNAME "lo\0" + pad
        8, 0,  4, 0,  0, 0, 1, 0,                                   // IFLA_MTU 65536
        10, 0,  1, 0,  0, 0, 0, 0, 0, 0, 0, 0,                      // IFLA_ADDRESS 00:..:00 + pad
        // RTM_NEWLINK eth0: Ethernet, UP only; a nested attribute skipped
        80, 0, 0, 0,  16, 0,  0x02, 0x00,  9, 0, 0, 0,  0x10, 0, 0, 0,
        0, 0,  1, 0,  2, 0, 0, 0,  1, 0, 0, 0,  0, 0, 0, 0,
        9, 0,  3, 0,  b'e', b't', b'h', b'0', 0, 0, 0, 0,           // IFLA_IFNAME
        8, 0,  4, 0,  0xdc, 0x05, 0, 0,                             // IFLA_MTU 1500
        10, 0,  1, 0,  0x52, 0x54, 0, 0x12, 0x34, 0x56, 0, 0,       // IFLA_ADDRESS
        5, 0,  16, 0,  2, 0, 0, 0,                                  // IFLA_OPERSTATE down
        8, 0,  18, 0x80,  4, 0, 0, 0,                               // IFLA_LINKINFO, NLA_F_NESTED
        // RTM_NEWADDR 10.0.2.15/24 on 2
        60, 0, 0, 0,  20, 0,  0x02, 0x00,  10, 0, 0, 0,  0x10, 0, 0, 0,
        2, 24, 0x80, 0,  2, 0, 0, 0,
        8, 0,  1, 0,  10, 0, 2, 15,                                 // IFA_ADDRESS
        8, 0,  2, 0,  10, 0, 2, 15,                                 // IFA_LOCAL
        9, 0,  3, 0,  b'e', b't', b'h', b'0', 0, 0, 0, 0,           // IFA_LABEL
        8, 0,  8, 0,  0x80, 0x02, 0, 0,                             // IFA_FLAGS PERMANENT|NOPREFIXROUTE
        // RTM_NEWROUTE default via 10.0.2.2 dev 2, table in RTA_TABLE
        52, 0, 0, 0,  24, 0,  0x02, 0x00,  11, 0, 0, 0,  0x10, 0, 0, 0,
        2, 0, 0, 0,  254, 16, 0, 1,  0, 0, 0, 0,
        8, 0,  15, 0,  254, 0, 0, 0,                                // RTA_TABLE
        8, 0,  5, 0,  10, 0, 2, 2,                                  // RTA_GATEWAY
        8, 0,  4, 0,  2, 0, 0, 0,                                   // RTA_OIF
        // NLMSG_DONE
        20, 0, 0, 0,  3, 0,  0x02, 0x00,  11, 0, 0, 0,  0x10, 0, 0, 0,
        0, 0, 0, 0,
    ];
    // NLMSG_ERROR -EACCES for seq 12, then an ACK for seq 13 (each with
    // the request's header echoed, capped).
    for (error, seq) in [(-13i32, 12u8), (0, 13)] {
        b.extend_from_slice(&[36, 0, 0, 0,  2, 0,  0x00, 0x01,  seq, 0, 0, 0,  0x10, 0, 0, 0]);
        b.extend_from_slice(&error.to_le_bytes());
        b.extend_from_slice(&[40, 0, 0, 0,  16, 0,  0x05, 0,  seq, 0, 0, 0,  0, 0, 0, 0]);
    }
    b
}

#[test]
fn reads_a_kernel_datagram() {
    let got = parse(&kernel_datagram()).unwrap();
    let multi = NLM_F_MULTI;
    let want = vec![
        Reply {
            seq: 9,
            flags: multi,
            body: Body::Link(Link {
                index: 1,
                link_type: 772,
                flags: IFF_UP | IFF_LOOPBACK | IFF_RUNNING | IFF_LOWER_UP,
                name: Some("lo".into()),
                mac: Some([0; 6]),
                mtu: Some(65536),
                operstate: None,
            }),
        },
        Reply {
            seq: 9,
            flags: multi,
            body: Body::Link(Link {
                index: 2,
                link_type: 1,
                flags: IFF_UP,
                name: Some("eth0".into()),
                mac: Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
                mtu: Some(1500),
                operstate: Some(OperState::Down),
            }),
        },
        Reply {
            seq: 10,
            flags: multi,
            body: Body::Address(Address {
                index: 2,
                address: v4(10, 0, 2, 15),
                prefix: 24,
                flags: 0x280,
                scope: 0,
                label: Some("eth0".into()),
                lifetime: None,
            }),
        },
        Reply {
            seq: 11,
            flags: multi,
            body: Body::Route(Route {
                family: AF_INET,
                dst: None,
                dst_len: 0,
                gateway: Some(v4(10, 0, 2, 2)),
                oif: Some(2),
                priority: None,
                table: 254,
                protocol: RTPROT_DHCP,
                scope: RT_SCOPE_UNIVERSE,
                route_type: RTN_UNICAST,
            }),
        },
        Reply {
            seq: 11,
            flags: multi,
            body: Body::Done,
        },
        Reply {
            seq: 12,
            flags: 0x100,
            body: Body::Error(13),
        },
        Reply {
            seq: 13,
            flags: 0x100,
            body: Body::Ack,
        },
    ];
    assert_eq!(got, want);
    assert_eq!(OperState::Down.as_str(), "down");
}

#[test]
fn requests_read_back() {
    // A request has the layout of the reply of the same type, so parse
    // reads back what the builders wrote.
    let a = AddressChange {
        index: 3,
        address: fd00_5(),
        prefix: 64,
        lifetime: Some(Lifetime {
            preferred_secs: 10,
            valid_secs: 20,
        }),
    };
    let r = RouteChange {
        dst: "fd00:20::".parse().unwrap(),
        dst_len: 48,
        gateway: Some("fe80::1".parse().unwrap()),
        oif: 3,
        metric: Some(7),
        protocol: RTPROT_STATIC,
    };
    let mut datagram = set_link(1, 3, true, Some(9000));
    datagram.extend(new_address(2, &a));
    datagram.extend(new_route(3, &r));
    let got: Vec<Body> = parse(&datagram).unwrap().into_iter().map(|m| m.body).collect();
    assert_eq!(
        got,
        [
            Body::Link(Link {
                index: 3,
                link_type: 0,
                flags: IFF_UP,
                name: None,
                mac: None,
                mtu: Some(9000),
                operstate: None,
            }),
            Body::Address(Address {
                index: 3,
                address: fd00_5(),
                prefix: 64,
                flags: 0,
                scope: 0,
                label: None,
                lifetime: a.lifetime,
            }),
            Body::Route(Route {
                family: AF_INET6,
                dst: Some(r.dst),
                dst_len: 48,
                gateway: r.gateway,
                oif: Some(3),
                priority: Some(7),
                table: 254,
                protocol: RTPROT_STATIC,
                scope: RT_SCOPE_UNIVERSE,
                route_type: RTN_UNICAST,
            }),
        ]
    );
}

#[test]
fn refusals() {
    let good = kernel_datagram();
    let patched = |at: usize, v: &[u8]| {
        let mut b = good.clone();
        b[at..at + v.len()].copy_from_slice(v);
        b
    };
    #[rustfmt::skip]
    let cases: Vec<(Vec<u8>, NetlinkError)> = vec![
        (good[..15].to_vec(), NetlinkError::BadLength { at: 0, len: 15 }),
        (patched(0, &[15, 0, 0, 0]), NetlinkError::BadLength { at: 0, len: 15 }),
        (patched(0, &[0xff, 0xff, 0, 0]), NetlinkError::BadLength { at: 0, len: 0xffff }),
        (good[..59].to_vec(), NetlinkError::BadLength { at: 0, len: 60 }),
        // The first link's message cut to its header and 15 bytes of ifinfomsg.
        (patched(0, &[31, 0, 0, 0]), NetlinkError::ShortPayload { kind: RTM_NEWLINK, len: 15 }),
        // IFLA_IFNAME claiming 3 bytes (under the attribute header's 4).
        (patched(32, &[3, 0]), NetlinkError::BadAttribute { kind: RTM_NEWLINK, at: 32 }),
        // IFLA_IFNAME claiming more than the message holds.
        (patched(32, &[40, 0]), NetlinkError::BadAttribute { kind: RTM_NEWLINK, at: 32 }),
        // IFLA_MTU of 2 bytes (its padding keeps the next attribute in place).
        (patched(40, &[6, 0]), NetlinkError::BadValue { kind: IFLA_MTU, len: 2 }),
        // An interface name that is not UTF-8.
        (patched(36, &[0xff]), NetlinkError::BadValue { kind: IFLA_IFNAME, len: 3 }),
        // IFA_ADDRESS of 4 bytes in an AF_INET6 message.
        (patched(156, &[10]), NetlinkError::BadValue { kind: IFA_ADDRESS, len: 4 }),
    ];
    for (bytes, want) in cases {
        assert_eq!(parse(&bytes), Err(want.clone()), "{want}");
    }
    // An error message too short to hold the request's header.
    #[rustfmt::skip]
    let short_error = vec![20, 0, 0, 0,  2, 0,  0, 0,  1, 0, 0, 0,  0, 0, 0, 0,  0xf3, 0xff, 0xff, 0xff];
    assert_eq!(
        parse(&short_error),
        Err(NetlinkError::ShortPayload {
            kind: NLMSG_ERROR,
            len: 4
        })
    );
    // An address with neither IFA_LOCAL nor IFA_ADDRESS.
    #[rustfmt::skip]
    let bare = vec![24, 0, 0, 0,  20, 0,  0, 0,  1, 0, 0, 0,  0, 0, 0, 0,  2, 24, 0, 0,  2, 0, 0, 0];
    assert_eq!(
        parse(&bare),
        Err(NetlinkError::BadValue {
            kind: IFA_ADDRESS,
            len: 0
        })
    );
    assert_eq!(parse(&[]), Ok(vec![]));
}

#[test]
fn error_values_are_errnos() {
    for (error, errno) in [(-13i32, 13), (5, 5), (i32::MIN, i32::MAX), (-1, 1)] {
        let mut b = vec![36, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&error.to_le_bytes());
        b.extend_from_slice(&[0; 16]);
        assert_eq!(parse(&b).unwrap()[0].body, Body::Error(errno), "{error}");
    }
}
