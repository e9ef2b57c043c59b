//! A small rtnetlink codec: the requests the agent sends to configure links,
//! addresses and routes, and the replies and dumps it reads back. Pure
//! functions over bytes, no socket.
//!
//! Layouts are the kernel's (linux/netlink.h, rtnetlink.h, if_link.h,
//! if_addr.h), in host byte order as netlink is: a 16-byte `nlmsghdr`, a
//! fixed family header (`ifinfomsg` 16 bytes, `ifaddrmsg` 8, `rtmsg` 12),
//! then attributes (`rtattr`: length, type, value), each padded to 4 bytes.
//!
//! Hand-written rather than `netlink-packet-route`: the agent needs five
//! requests and three reply kinds, about 500 lines, where that crate is
//! tens of thousands of lines with its own core, bitflags and zerocopy
//! (a proc-macro) under it, and was not in the build's offline cache.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

pub const NLM_F_REQUEST: u16 = 0x01;
pub const NLM_F_MULTI: u16 = 0x02;
pub const NLM_F_ACK: u16 = 0x04;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_CREATE: u16 = 0x400;

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_DELADDR: u16 = 21;
pub const RTM_GETADDR: u16 = 22;
pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_DELROUTE: u16 = 25;
pub const RTM_GETROUTE: u16 = 26;

pub const AF_UNSPEC: u8 = 0;
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

pub const IFF_UP: u32 = 1;
pub const IFF_LOOPBACK: u32 = 1 << 3;
pub const IFF_RUNNING: u32 = 1 << 6;
pub const IFF_LOWER_UP: u32 = 1 << 16;

pub const IFLA_ADDRESS: u16 = 1;
pub const IFLA_IFNAME: u16 = 3;
pub const IFLA_MTU: u16 = 4;
pub const IFLA_OPERSTATE: u16 = 16;

pub const IFA_ADDRESS: u16 = 1;
pub const IFA_LOCAL: u16 = 2;
pub const IFA_LABEL: u16 = 3;
pub const IFA_CACHEINFO: u16 = 6;
pub const IFA_FLAGS: u16 = 8;

pub const RTA_DST: u16 = 1;
pub const RTA_OIF: u16 = 4;
pub const RTA_GATEWAY: u16 = 5;
pub const RTA_PRIORITY: u16 = 6;
pub const RTA_TABLE: u16 = 15;

pub const RT_TABLE_MAIN: u8 = 254;
pub const RTPROT_STATIC: u8 = 4;
pub const RTPROT_DHCP: u8 = 16;
pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RT_SCOPE_LINK: u8 = 253;
pub const RTN_UNICAST: u8 = 1;

/// The attribute type without the nested and byte-order flags.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// `IF_OPER_*` from linux/if.h (RFC 2863).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperState {
    Unknown,
    NotPresent,
    Down,
    LowerLayerDown,
    Testing,
    Dormant,
    Up,
    /// A value this build does not know.
    Other(u8),
}

impl OperState {
    pub fn from_u8(v: u8) -> OperState {
        match v {
            0 => OperState::Unknown,
            1 => OperState::NotPresent,
            2 => OperState::Down,
            3 => OperState::LowerLayerDown,
            4 => OperState::Testing,
            5 => OperState::Dormant,
            6 => OperState::Up,
            other => OperState::Other(other),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OperState::Unknown => "unknown",
            OperState::NotPresent => "notpresent",
            OperState::Down => "down",
            OperState::LowerLayerDown => "lowerlayerdown",
            OperState::Testing => "testing",
            OperState::Dormant => "dormant",
            OperState::Up => "up",
            OperState::Other(_) => "other",
        }
    }
}

/// One link, from `RTM_NEWLINK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    /// ARPHRD_* (1 is Ethernet, 772 loopback).
    pub link_type: u16,
    pub flags: u32,
    pub name: Option<String>,
    /// The hardware address, when it is an Ethernet one (6 bytes).
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub operstate: Option<OperState>,
}

/// One address, from `RTM_NEWADDR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub address: IpAddr,
    pub prefix: u8,
    /// `IFA_F_*`, from `IFA_FLAGS` when present (it holds all 32 bits).
    pub flags: u32,
    pub scope: u8,
    pub label: Option<String>,
    /// Valid and preferred lifetimes in seconds (`u32::MAX`: forever).
    pub lifetime: Option<Lifetime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub preferred_secs: u32,
    pub valid_secs: u32,
}

/// One route, from `RTM_NEWROUTE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub family: u8,
    /// The destination; `None` with `dst_len` 0 for a default route.
    pub dst: Option<IpAddr>,
    pub dst_len: u8,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub priority: Option<u32>,
    pub table: u32,
    pub protocol: u8,
    pub scope: u8,
    pub route_type: u8,
}

/// What one netlink message from the kernel says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// `NLMSG_ERROR` with error 0: the request with this sequence succeeded.
    Ack,
    /// `NLMSG_ERROR`: the request failed with this errno (positive).
    Error(i32),
    /// The end of a dump.
    Done,
    Link(Link),
    Address(Address),
    Route(Route),
    /// A message of another type (a NOOP, a deletion notice, ...).
    Other(u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub seq: u32,
    pub flags: u16,
    pub body: Body,
}

/// Why bytes from the socket are not netlink messages this codec reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetlinkError {
    /// A message header claims a length under 16 or past the buffer.
    BadLength { at: usize, len: u32 },
    /// A family header shorter than its type needs.
    ShortPayload { kind: u16, len: usize },
    /// An attribute's length is under 4 or runs past its message.
    BadAttribute { kind: u16, at: usize },
    /// An attribute of the wrong size or content for its type.
    BadValue { kind: u16, len: usize },
}

impl std::fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetlinkError::BadLength { at, len } => {
                write!(f, "netlink message at byte {at} claims length {len}")
            }
            NetlinkError::ShortPayload { kind, len } => {
                write!(f, "netlink message of type {kind} has a {len} byte payload, too short")
            }
            NetlinkError::BadAttribute { kind, at } => {
                write!(f, "netlink message of type {kind}: attribute at byte {at} is malformed")
            }
            NetlinkError::BadValue { kind, len } => {
                write!(f, "netlink attribute of type {kind} has a bad value ({len} bytes)")
            }
        }
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A request being assembled: header, family header, attributes. The
/// header's length is filled in by [`Builder::finish`].
struct Builder(Vec<u8>);

impl Builder {
    fn new(kind: u16, flags: u16, seq: u32) -> Builder {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        // nlmsg_pid 0: the message is for the kernel.
        b.extend_from_slice(&0u32.to_ne_bytes());
        Builder(b)
    }

    fn bytes(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }

    fn attr(mut self, kind: u16, value: &[u8]) -> Self {
        let len = 4 + value.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(align4(self.0.len()), 0);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[0] = AF_UNSPEC;
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    m[8..12].copy_from_slice(&flags.to_ne_bytes());
    m[12..16].copy_from_slice(&change.to_ne_bytes());
    m
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn family_of(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    }
}

/// `RTM_GETLINK` dump: every link.
pub fn dump_links(seq: u32) -> Vec<u8> {
    Builder::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq)
        .bytes(&ifinfomsg(0, 0, 0))
        .finish()
}

/// `RTM_GETADDR` dump: every address of every family.
pub fn dump_addresses(seq: u32) -> Vec<u8> {
    Builder::new(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq)
        .bytes(&[AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0])
        .finish()
}

/// `RTM_GETROUTE` dump: every route of every family and table.
pub fn dump_routes(seq: u32) -> Vec<u8> {
    Builder::new(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq)
        .bytes(&[0; 12])
        .finish()
}

/// `RTM_NEWLINK` on an existing link: bring it up (or down) and set its MTU.
/// Only `IFF_UP` is changed (`ifi_change`), no other flag.
pub fn set_link(seq: u32, index: u32, up: bool, mtu: Option<u32>) -> Vec<u8> {
    let flags = if up { IFF_UP } else { 0 };
    let b = Builder::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq).bytes(&ifinfomsg(index, flags, IFF_UP));
    match mtu {
        Some(m) => b.attr(IFLA_MTU, &m.to_ne_bytes()),
        None => b,
    }
    .finish()
}

/// An address to add to or remove from a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressChange {
    pub index: u32,
    pub address: IpAddr,
    pub prefix: u8,
    /// A lease's lifetime, so the kernel drops the address if the agent
    /// cannot renew it; `None` for a static address (permanent).
    pub lifetime: Option<Lifetime>,
}

/// `RTM_NEWADDR` (create or replace), `IFA_LOCAL` and `IFA_ADDRESS` both
/// the address, as `ip address add` sends them.
pub fn new_address(seq: u32, a: &AddressChange) -> Vec<u8> {
    address_message(
        RTM_NEWADDR,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        seq,
        a,
    )
}

/// `RTM_DELADDR`.
pub fn del_address(seq: u32, a: &AddressChange) -> Vec<u8> {
    address_message(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, seq, a)
}

fn address_message(kind: u16, flags: u16, seq: u32, a: &AddressChange) -> Vec<u8> {
    let mut hdr = [0u8; 8];
    hdr[0] = family_of(&a.address);
    hdr[1] = a.prefix;
    hdr[3] = RT_SCOPE_UNIVERSE;
    hdr[4..8].copy_from_slice(&a.index.to_ne_bytes());
    let ip = ip_bytes(&a.address);
    let b = Builder::new(kind, flags, seq)
        .bytes(&hdr)
        .attr(IFA_LOCAL, &ip)
        .attr(IFA_ADDRESS, &ip);
    match a.lifetime {
        Some(l) => {
            // struct ifa_cacheinfo: ifa_prefered, ifa_valid, cstamp, tstamp.
            let mut info = [0u8; 16];
            info[..4].copy_from_slice(&l.preferred_secs.to_ne_bytes());
            info[4..8].copy_from_slice(&l.valid_secs.to_ne_bytes());
            b.attr(IFA_CACHEINFO, &info)
        }
        None => b,
    }
    .finish()
}

/// A route to add or remove, in the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteChange {
    /// The destination and its prefix length; prefix 0 is a default route.
    pub dst: IpAddr,
    pub dst_len: u8,
    pub gateway: Option<IpAddr>,
    pub oif: u32,
    pub metric: Option<u32>,
    /// `RTPROT_STATIC` for the config's routes, `RTPROT_DHCP` for a lease's.
    pub protocol: u8,
}

/// `RTM_NEWROUTE` (create or replace). A route with a gateway has universe
/// scope; one without goes straight onto the link.
pub fn new_route(seq: u32, r: &RouteChange) -> Vec<u8> {
    route_message(
        RTM_NEWROUTE,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        seq,
        r,
    )
}

/// `RTM_DELROUTE`.
pub fn del_route(seq: u32, r: &RouteChange) -> Vec<u8> {
    route_message(RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK, seq, r)
}

fn route_message(kind: u16, flags: u16, seq: u32, r: &RouteChange) -> Vec<u8> {
    let scope = if r.gateway.is_some() {
        RT_SCOPE_UNIVERSE
    } else {
        RT_SCOPE_LINK
    };
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    let mut hdr = [0u8; 12];
    hdr[0] = family_of(&r.dst);
    hdr[1] = r.dst_len;
    hdr[4] = RT_TABLE_MAIN;
    hdr[5] = r.protocol;
    hdr[6] = scope;
    hdr[7] = RTN_UNICAST;
    let mut b = Builder::new(kind, flags, seq).bytes(&hdr);
    if r.dst_len > 0 {
        b = b.attr(RTA_DST, &ip_bytes(&r.dst));
    }
    if let Some(gw) = &r.gateway {
        b = b.attr(RTA_GATEWAY, &ip_bytes(gw));
    }
    b = b.attr(RTA_OIF, &r.oif.to_ne_bytes());
    if let Some(m) = r.metric {
        b = b.attr(RTA_PRIORITY, &m.to_ne_bytes());
    }
    b.finish()
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads every message in one datagram from a netlink socket.
pub fn parse(buf: &[u8]) -> Result<Vec<Reply>, NetlinkError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        if rest.len() < NLMSG_HDRLEN {
            return Err(NetlinkError::BadLength {
                at,
                len: rest.len() as u32,
            });
        }
        let len = u32_at(rest, 0);
        if (len as usize) < NLMSG_HDRLEN || len as usize > rest.len() {
            return Err(NetlinkError::BadLength { at, len });
        }
        let msg = &rest[..len as usize];
        let kind = u16_at(msg, 4);
        let flags = u16_at(msg, 6);
        let seq = u32_at(msg, 8);
        let body = parse_body(kind, &msg[NLMSG_HDRLEN..])?;
        out.push(Reply { seq, flags, body });
        at += align4(len as usize).min(rest.len());
    }
    Ok(out)
}

fn parse_body(kind: u16, payload: &[u8]) -> Result<Body, NetlinkError> {
    let need = |n: usize| {
        if payload.len() < n {
            Err(NetlinkError::ShortPayload {
                kind,
                len: payload.len(),
            })
        } else {
            Ok(())
        }
    };
    match kind {
        NLMSG_ERROR => {
            // struct nlmsgerr: the error, then the request's header.
            need(4 + NLMSG_HDRLEN)?;
            let error = u32_at(payload, 0) as i32;
            Ok(if error == 0 {
                Body::Ack
            } else {
                // The kernel sends -errno; a positive value is taken as the errno.
                Body::Error(error.checked_abs().unwrap_or(i32::MAX))
            })
        }
        NLMSG_DONE => Ok(Body::Done),
        RTM_NEWLINK => {
            need(16)?;
            parse_link(kind, payload).map(Body::Link)
        }
        RTM_NEWADDR => {
            need(8)?;
            parse_address(kind, payload).map(Body::Address)
        }
        RTM_NEWROUTE => {
            need(12)?;
            parse_route(kind, payload).map(Body::Route)
        }
        other => Ok(Body::Other(other)),
    }
}

/// The attributes after a family header: (type, value) in order.
fn attributes(kind: u16, b: &[u8], offset: usize) -> Result<Vec<(u16, &[u8])>, NetlinkError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let rest = &b[at..];
        let bad = NetlinkError::BadAttribute { kind, at: offset + at };
        if rest.len() < 4 {
            return Err(bad);
        }
        let len = usize::from(u16_at(rest, 0));
        if len < 4 || len > rest.len() {
            return Err(bad);
        }
        out.push((u16_at(rest, 2) & NLA_TYPE_MASK, &rest[4..len]));
        at += align4(len).min(rest.len());
    }
    Ok(out)
}

fn value_u32(kind: u16, v: &[u8]) -> Result<u32, NetlinkError> {
    match v {
        [a, b, c, d] => Ok(u32::from_ne_bytes([*a, *b, *c, *d])),
        _ => Err(NetlinkError::BadValue { kind, len: v.len() }),
    }
}

/// A NUL-terminated name: what precedes the first NUL, UTF-8.
fn value_name(kind: u16, v: &[u8]) -> Result<String, NetlinkError> {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8(v[..end].to_vec()).map_err(|_| NetlinkError::BadValue { kind, len: v.len() })
}

fn value_ip(kind: u16, family: u8, v: &[u8]) -> Result<IpAddr, NetlinkError> {
    match (family, v.len()) {
        (AF_INET, 4) => Ok(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]))),
        (AF_INET6, 16) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(v);
            Ok(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => Err(NetlinkError::BadValue { kind, len: v.len() }),
    }
}

fn parse_link(kind: u16, p: &[u8]) -> Result<Link, NetlinkError> {
    let mut link = Link {
        index: u32_at(p, 4),
        link_type: u16_at(p, 2),
        flags: u32_at(p, 8),
        name: None,
        mac: None,
        mtu: None,
        operstate: None,
    };
    for (t, v) in attributes(kind, &p[16..], NLMSG_HDRLEN + 16)? {
        match t {
            IFLA_IFNAME => link.name = Some(value_name(t, v)?),
            IFLA_ADDRESS => {
                // Other lengths (tunnels, none at all) are not Ethernet MACs.
                if let Ok(mac) = <[u8; 6]>::try_from(v) {
                    link.mac = Some(mac);
                }
            }
            IFLA_MTU => link.mtu = Some(value_u32(t, v)?),
            IFLA_OPERSTATE => match v {
                [s] => link.operstate = Some(OperState::from_u8(*s)),
                _ => return Err(NetlinkError::BadValue { kind: t, len: v.len() }),
            },
            _ => {}
        }
    }
    Ok(link)
}

fn parse_address(kind: u16, p: &[u8]) -> Result<Address, NetlinkError> {
    let family = p[0];
    let (mut local, mut address, mut label, mut flags, mut lifetime) = (None, None, None, u32::from(p[2]), None);
    for (t, v) in attributes(kind, &p[8..], NLMSG_HDRLEN + 8)? {
        match t {
            IFA_LOCAL => local = Some(value_ip(t, family, v)?),
            IFA_ADDRESS => address = Some(value_ip(t, family, v)?),
            IFA_LABEL => label = Some(value_name(t, v)?),
            IFA_FLAGS => flags = value_u32(t, v)?,
            IFA_CACHEINFO => {
                if v.len() != 16 {
                    return Err(NetlinkError::BadValue { kind: t, len: v.len() });
                }
                lifetime = Some(Lifetime {
                    preferred_secs: u32_at(v, 0),
                    valid_secs: u32_at(v, 4),
                });
            }
            _ => {}
        }
    }
    // On a point-to-point link IFA_ADDRESS is the peer: the host's own
    // address is IFA_LOCAL when there is one.
    let address = local.or(address).ok_or(NetlinkError::BadValue {
        kind: IFA_ADDRESS,
        len: 0,
    })?;
    Ok(Address {
        index: u32_at(p, 4),
        address,
        prefix: p[1],
        flags,
        scope: p[3],
        label,
        lifetime,
    })
}

fn parse_route(kind: u16, p: &[u8]) -> Result<Route, NetlinkError> {
    let family = p[0];
    let mut r = Route {
        family,
        dst: None,
        dst_len: p[1],
        gateway: None,
        oif: None,
        priority: None,
        table: u32::from(p[4]),
        protocol: p[5],
        scope: p[6],
        route_type: p[7],
    };
    for (t, v) in attributes(kind, &p[12..], NLMSG_HDRLEN + 12)? {
        match t {
            RTA_DST => r.dst = Some(value_ip(t, family, v)?),
            RTA_GATEWAY => r.gateway = Some(value_ip(t, family, v)?),
            RTA_OIF => r.oif = Some(value_u32(t, v)?),
            RTA_PRIORITY => r.priority = Some(value_u32(t, v)?),
            RTA_TABLE => r.table = value_u32(t, v)?,
            _ => {}
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests;
