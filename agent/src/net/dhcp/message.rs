//! DHCPv4 messages (RFC 2131, options from RFC 2132): the BOOTP header, the
//! magic cookie and the options a client needs, as pure functions over
//! bytes.
//!
//! Only Ethernet hardware addresses are read (htype 1, hlen 6). An option
//! that appears more than once is one long option split in pieces
//! (RFC 3396): the pieces are joined before the option is read, and
//! [`encode`] splits options longer than 255 bytes the same way, so what
//! [`parse`] reads [`encode`] writes back to the same message. Option
//! overload (52, options carried in `sname`/`file`) is refused: no server
//! this client talks to needs it, and it doubles what the parser reads.

use std::net::Ipv4Addr;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The fixed BOOTP header: op to file.
pub const HEADER_LEN: usize = 236;
/// BOOTP's minimum message (RFC 1542): relays may drop shorter ones.
pub const MIN_MESSAGE_LEN: usize = 300;
/// The broadcast bit of `flags`.
pub const FLAG_BROADCAST: u16 = 0x8000;

pub const OPT_PAD: u8 = 0;
pub const OPT_SUBNET_MASK: u8 = 1;
pub const OPT_ROUTERS: u8 = 3;
pub const OPT_DNS_SERVERS: u8 = 6;
pub const OPT_HOSTNAME: u8 = 12;
pub const OPT_DOMAIN_NAME: u8 = 15;
pub const OPT_REQUESTED_IP: u8 = 50;
pub const OPT_LEASE_TIME: u8 = 51;
pub const OPT_OVERLOAD: u8 = 52;
pub const OPT_MESSAGE_TYPE: u8 = 53;
pub const OPT_SERVER_ID: u8 = 54;
pub const OPT_PARAMETER_REQUEST_LIST: u8 = 55;
pub const OPT_RENEWAL_TIME: u8 = 58;
pub const OPT_REBINDING_TIME: u8 = 59;
pub const OPT_CLIENT_ID: u8 = 61;
pub const OPT_END: u8 = 255;

/// BOOTP's op field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Request = 1,
    Reply = 2,
}

/// Option 53.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<MessageType> {
        Some(match v {
            1 => MessageType::Discover,
            2 => MessageType::Offer,
            3 => MessageType::Request,
            4 => MessageType::Decline,
            5 => MessageType::Ack,
            6 => MessageType::Nak,
            7 => MessageType::Release,
            8 => MessageType::Inform,
            _ => return None,
        })
    }
}

/// One DHCP message. `sname`, `file` and `hops` are not kept: a client
/// neither reads nor sends them (they are written as zeros).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub op: Op,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    pub options: Options,
}

/// The options this client reads and writes; others are skipped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    pub message_type: Option<MessageType>,
    pub subnet_mask: Option<Ipv4Addr>,
    pub routers: Vec<Ipv4Addr>,
    pub dns_servers: Vec<Ipv4Addr>,
    pub hostname: Option<String>,
    pub domain_name: Option<String>,
    pub requested_ip: Option<Ipv4Addr>,
    /// Seconds; `u32::MAX` is an infinite lease.
    pub lease_time: Option<u32>,
    pub server_id: Option<Ipv4Addr>,
    pub parameter_request_list: Vec<u8>,
    pub renewal_time: Option<u32>,
    pub rebinding_time: Option<u32>,
    pub client_id: Option<Vec<u8>>,
}

/// Why bytes are not a DHCP message this client reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpError {
    /// Shorter than the header and the cookie.
    Short {
        len: usize,
    },
    BadOp(u8),
    /// Not Ethernet (htype 1, hlen 6).
    NotEthernet {
        htype: u8,
        hlen: u8,
    },
    BadCookie,
    /// An option's length runs past the end of the message.
    Truncated {
        code: u8,
    },
    /// An option of the wrong length for its type.
    BadLength {
        code: u8,
        len: usize,
    },
    /// An option whose value is not one it may have.
    BadValue {
        code: u8,
    },
    /// Option 52: options carried in `sname` or `file`.
    Overload,
}

impl std::fmt::Display for DhcpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DhcpError::Short { len } => write!(
                f,
                "DHCP message of {len} bytes is shorter than its {} byte header and cookie",
                HEADER_LEN + 4
            ),
            DhcpError::BadOp(op) => write!(f, "DHCP op {op} is neither request (1) nor reply (2)"),
            DhcpError::NotEthernet { htype, hlen } => {
                write!(f, "DHCP hardware type {htype} length {hlen} is not Ethernet (1, 6)")
            }
            DhcpError::BadCookie => write!(f, "DHCP magic cookie missing"),
            DhcpError::Truncated { code } => write!(f, "DHCP option {code} runs past the end of the message"),
            DhcpError::BadLength { code, len } => write!(f, "DHCP option {code} has a bad length {len}"),
            DhcpError::BadValue { code } => write!(f, "DHCP option {code} has a value it may not have"),
            DhcpError::Overload => write!(f, "DHCP option overload (52) is not supported"),
        }
    }
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// Reads a DHCP message. Anything after the END option is padding.
pub fn parse(b: &[u8]) -> Result<Message, DhcpError> {
    if b.len() < HEADER_LEN + MAGIC_COOKIE.len() {
        return Err(DhcpError::Short { len: b.len() });
    }
    let op = match b[0] {
        1 => Op::Request,
        2 => Op::Reply,
        other => return Err(DhcpError::BadOp(other)),
    };
    if b[1] != 1 || b[2] != 6 {
        return Err(DhcpError::NotEthernet {
            htype: b[1],
            hlen: b[2],
        });
    }
    if b[HEADER_LEN..HEADER_LEN + 4] != MAGIC_COOKIE {
        return Err(DhcpError::BadCookie);
    }
    let mut chaddr = [0u8; 6];
    chaddr.copy_from_slice(&b[28..34]);
    let options = parse_options(&b[HEADER_LEN + 4..])?;
    Ok(Message {
        op,
        xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        secs: u16::from_be_bytes([b[8], b[9]]),
        flags: u16::from_be_bytes([b[10], b[11]]),
        ciaddr: ip_at(b, 12),
        yiaddr: ip_at(b, 16),
        siaddr: ip_at(b, 20),
        giaddr: ip_at(b, 24),
        chaddr,
        options,
    })
}

/// The options area: code, length, value, until END or the bytes run out.
/// Pieces of one code are joined in order (RFC 3396).
fn parse_options(mut b: &[u8]) -> Result<Options, DhcpError> {
    let mut raw: Vec<(u8, Vec<u8>)> = Vec::new();
    while let Some((&code, rest)) = b.split_first() {
        match code {
            OPT_PAD => b = rest,
            OPT_END => break,
            _ => {
                let (&len, rest) = rest.split_first().ok_or(DhcpError::Truncated { code })?;
                let len = usize::from(len);
                if rest.len() < len {
                    return Err(DhcpError::Truncated { code });
                }
                match raw.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, value)) => value.extend_from_slice(&rest[..len]),
                    None => raw.push((code, rest[..len].to_vec())),
                }
                b = &rest[len..];
            }
        }
    }
    let mut o = Options::default();
    for (code, v) in raw {
        match code {
            OPT_OVERLOAD => return Err(DhcpError::Overload),
            OPT_MESSAGE_TYPE => {
                let [t] = v[..] else {
                    return Err(DhcpError::BadLength { code, len: v.len() });
                };
                o.message_type = Some(MessageType::from_u8(t).ok_or(DhcpError::BadValue { code })?);
            }
            OPT_SUBNET_MASK => o.subnet_mask = Some(one_ip(code, &v)?),
            OPT_REQUESTED_IP => o.requested_ip = Some(one_ip(code, &v)?),
            OPT_SERVER_ID => o.server_id = Some(one_ip(code, &v)?),
            OPT_ROUTERS => o.routers = ip_list(code, &v)?,
            OPT_DNS_SERVERS => o.dns_servers = ip_list(code, &v)?,
            OPT_LEASE_TIME => o.lease_time = Some(one_u32(code, &v)?),
            OPT_RENEWAL_TIME => o.renewal_time = Some(one_u32(code, &v)?),
            OPT_REBINDING_TIME => o.rebinding_time = Some(one_u32(code, &v)?),
            OPT_HOSTNAME => o.hostname = Some(name(code, v)?),
            OPT_DOMAIN_NAME => o.domain_name = Some(name(code, v)?),
            OPT_PARAMETER_REQUEST_LIST => o.parameter_request_list = v,
            OPT_CLIENT_ID => {
                if v.is_empty() {
                    return Err(DhcpError::BadLength { code, len: 0 });
                }
                o.client_id = Some(v);
            }
            _ => {}
        }
    }
    Ok(o)
}

fn one_ip(code: u8, v: &[u8]) -> Result<Ipv4Addr, DhcpError> {
    match v {
        [a, b, c, d] => Ok(Ipv4Addr::new(*a, *b, *c, *d)),
        _ => Err(DhcpError::BadLength { code, len: v.len() }),
    }
}

fn ip_list(code: u8, v: &[u8]) -> Result<Vec<Ipv4Addr>, DhcpError> {
    if v.is_empty() || !v.len().is_multiple_of(4) {
        return Err(DhcpError::BadLength { code, len: v.len() });
    }
    Ok(v.chunks_exact(4).map(|c| ip_at(c, 0)).collect())
}

fn one_u32(code: u8, v: &[u8]) -> Result<u32, DhcpError> {
    match v {
        [a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(DhcpError::BadLength { code, len: v.len() }),
    }
}

/// A host or domain name: 1 to 255 printable ASCII bytes. They end up in
/// the hostname, resolv.conf and status, so nothing else is taken.
fn name(code: u8, v: Vec<u8>) -> Result<String, DhcpError> {
    if v.is_empty() || v.len() > 255 {
        return Err(DhcpError::BadLength { code, len: v.len() });
    }
    if !v.iter().all(u8::is_ascii_graphic) {
        return Err(DhcpError::BadValue { code });
    }
    String::from_utf8(v).map_err(|_| DhcpError::BadValue { code })
}

/// Writes a message: the header, the cookie, the options (53 first, as
/// RFC 2131 asks), END, and zeros up to [`MIN_MESSAGE_LEN`].
pub fn encode(m: &Message) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    out[0] = m.op as u8;
    out[1] = 1;
    out[2] = 6;
    out[4..8].copy_from_slice(&m.xid.to_be_bytes());
    out[8..10].copy_from_slice(&m.secs.to_be_bytes());
    out[10..12].copy_from_slice(&m.flags.to_be_bytes());
    out[12..16].copy_from_slice(&m.ciaddr.octets());
    out[16..20].copy_from_slice(&m.yiaddr.octets());
    out[20..24].copy_from_slice(&m.siaddr.octets());
    out[24..28].copy_from_slice(&m.giaddr.octets());
    out[28..34].copy_from_slice(&m.chaddr);
    out.extend_from_slice(&MAGIC_COOKIE);
    let o = &m.options;
    if let Some(t) = o.message_type {
        put(&mut out, OPT_MESSAGE_TYPE, &[t as u8]);
    }
    if let Some(id) = &o.client_id {
        put(&mut out, OPT_CLIENT_ID, id);
    }
    let ips = |v: &[Ipv4Addr]| v.iter().flat_map(|ip| ip.octets()).collect::<Vec<u8>>();
    for (code, ip) in [
        (OPT_REQUESTED_IP, o.requested_ip),
        (OPT_SERVER_ID, o.server_id),
        (OPT_SUBNET_MASK, o.subnet_mask),
    ] {
        if let Some(ip) = ip {
            put(&mut out, code, &ip.octets());
        }
    }
    for (code, list) in [(OPT_ROUTERS, &o.routers), (OPT_DNS_SERVERS, &o.dns_servers)] {
        if !list.is_empty() {
            put(&mut out, code, &ips(list));
        }
    }
    for (code, secs) in [
        (OPT_LEASE_TIME, o.lease_time),
        (OPT_RENEWAL_TIME, o.renewal_time),
        (OPT_REBINDING_TIME, o.rebinding_time),
    ] {
        if let Some(s) = secs {
            put(&mut out, code, &s.to_be_bytes());
        }
    }
    for (code, text) in [(OPT_HOSTNAME, &o.hostname), (OPT_DOMAIN_NAME, &o.domain_name)] {
        if let Some(t) = text {
            put(&mut out, code, t.as_bytes());
        }
    }
    if !o.parameter_request_list.is_empty() {
        put(&mut out, OPT_PARAMETER_REQUEST_LIST, &o.parameter_request_list);
    }
    out.push(OPT_END);
    if out.len() < MIN_MESSAGE_LEN {
        out.resize(MIN_MESSAGE_LEN, OPT_PAD);
    }
    out
}

/// One option, split into pieces of at most 255 bytes (RFC 3396).
fn put(out: &mut Vec<u8>, code: u8, value: &[u8]) {
    for piece in value.chunks(255) {
        out.push(code);
        out.push(piece.len() as u8);
        out.extend_from_slice(piece);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    /// A message's fixed header, as a server would write it, by hand.
    fn header(op: u8, xid: u32, yiaddr: [u8; 4]) -> Vec<u8> {
        let mut b = vec![op, 1, 6, 0];
        b.extend_from_slice(&xid.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0x80, 0]); // secs 0, broadcast
        b.extend_from_slice(&[0; 4]); // ciaddr
        b.extend_from_slice(&yiaddr);
        b.extend_from_slice(&[10, 0, 2, 2]); // siaddr
        b.extend_from_slice(&[0; 4]); // giaddr
        b.extend_from_slice(&MAC);
        b.extend_from_slice(&[0; 10]); // chaddr padding
        b.extend_from_slice(&[0; 64 + 128]); // sname, file
        assert_eq!(b.len(), HEADER_LEN);
        b.extend_from_slice(&MAGIC_COOKIE);
        b
    }

    /// QEMU's user-mode server's OFFER, assembled by hand.
    fn slirp_offer() -> Vec<u8> {
        let mut b = header(2, 0x1234_5678, [10, 0, 2, 15]);
        b.extend_from_slice(&[53, 1, 2]);
        b.extend_from_slice(&[54, 4, 10, 0, 2, 2]);
        b.extend_from_slice(&[1, 4, 255, 255, 255, 0]);
        b.extend_from_slice(&[3, 4, 10, 0, 2, 2]);
        b.extend_from_slice(&[6, 4, 10, 0, 2, 3]);
        b.extend_from_slice(&[51, 4, 0, 0, 0x0e, 0x10]);
        b.extend_from_slice(&[255]);
        b
    }

    #[test]
    fn reads_an_offer() {
        let m = parse(&slirp_offer()).unwrap();
        assert_eq!(m.op, Op::Reply);
        assert_eq!(m.xid, 0x1234_5678);
        assert_eq!(m.flags, FLAG_BROADCAST);
        assert_eq!(m.yiaddr, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(m.siaddr, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(m.chaddr, MAC);
        let want = Options {
            message_type: Some(MessageType::Offer),
            server_id: Some(Ipv4Addr::new(10, 0, 2, 2)),
            subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            routers: vec![Ipv4Addr::new(10, 0, 2, 2)],
            dns_servers: vec![Ipv4Addr::new(10, 0, 2, 3)],
            lease_time: Some(3600),
            ..Options::default()
        };
        assert_eq!(m.options, want);
    }

    #[test]
    fn writes_a_discover_byte_for_byte() {
        let m = Message {
            op: Op::Request,
            xid: 0xdead_beef,
            secs: 3,
            flags: FLAG_BROADCAST,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: MAC,
            options: Options {
                message_type: Some(MessageType::Discover),
                client_id: Some([&[1u8][..], &MAC].concat()),
                hostname: Some("node-1".into()),
                parameter_request_list: vec![1, 3, 6, 12, 15, 51, 54, 58, 59],
                ..Options::default()
            },
        };
        let mut want = vec![1, 1, 6, 0, 0xde, 0xad, 0xbe, 0xef, 0, 3, 0x80, 0];
        want.extend_from_slice(&[0; 16]);
        want.extend_from_slice(&MAC);
        want.extend_from_slice(&[0; 10 + 64 + 128]);
        want.extend_from_slice(&MAGIC_COOKIE);
        want.extend_from_slice(&[53, 1, 1]);
        want.extend_from_slice(&[61, 7, 1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        want.extend_from_slice(&[12, 6, b'n', b'o', b'd', b'e', b'-', b'1']);
        want.extend_from_slice(&[55, 9, 1, 3, 6, 12, 15, 51, 54, 58, 59]);
        want.push(255);
        want.resize(MIN_MESSAGE_LEN, 0);
        assert_eq!(encode(&m), want);
        assert_eq!(parse(&want), Ok(m));
    }

    #[test]
    fn long_options_are_split_and_joined() {
        let mut m = parse(&slirp_offer()).unwrap();
        m.options.dns_servers = (0..100).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        m.options.client_id = Some(vec![7; 300]);
        let bytes = encode(&m);
        // 400 bytes of servers: a piece of 255 (63.75 addresses) and one of 145.
        let at = bytes.windows(2).position(|w| w == [6, 255]).unwrap();
        assert_eq!(bytes[at + 2 + 255..at + 4 + 255], [6, 145]);
        assert_eq!(parse(&bytes), Ok(m));
    }

    #[test]
    fn refusals() {
        let offer = slirp_offer();
        let opts = HEADER_LEN + 4;
        let with_options = |o: &[u8]| [&offer[..opts], o].concat();
        let mut bad_op = offer.clone();
        bad_op[0] = 3;
        let mut token_ring = offer.clone();
        token_ring[1] = 6;
        let mut long_hw = offer.clone();
        long_hw[2] = 16;
        let mut cookie = offer.clone();
        cookie[HEADER_LEN + 3] = 0;
        let cases: Vec<(Vec<u8>, DhcpError)> = vec![
            (vec![], DhcpError::Short { len: 0 }),
            (offer[..opts - 1].to_vec(), DhcpError::Short { len: 239 }),
            (bad_op, DhcpError::BadOp(3)),
            (token_ring, DhcpError::NotEthernet { htype: 6, hlen: 6 }),
            (long_hw, DhcpError::NotEthernet { htype: 1, hlen: 16 }),
            (cookie, DhcpError::BadCookie),
            (with_options(&[53]), DhcpError::Truncated { code: 53 }),
            (with_options(&[53, 2, 1]), DhcpError::Truncated { code: 53 }),
            (with_options(&[53, 2, 1, 1]), DhcpError::BadLength { code: 53, len: 2 }),
            (with_options(&[53, 1, 9]), DhcpError::BadValue { code: 53 }),
            (with_options(&[53, 1, 0]), DhcpError::BadValue { code: 53 }),
            (
                with_options(&[54, 3, 1, 2, 3]),
                DhcpError::BadLength { code: 54, len: 3 },
            ),
            (with_options(&[1, 0]), DhcpError::BadLength { code: 1, len: 0 }),
            (
                with_options(&[3, 6, 1, 2, 3, 4, 5, 6]),
                DhcpError::BadLength { code: 3, len: 6 },
            ),
            (with_options(&[6, 0]), DhcpError::BadLength { code: 6, len: 0 }),
            (
                with_options(&[51, 8, 0, 0, 0, 0, 0, 0, 0, 0]),
                DhcpError::BadLength { code: 51, len: 8 },
            ),
            // Two pieces of a lease time join into 8 bytes.
            (
                with_options(&[51, 4, 0, 0, 0, 1, 51, 4, 0, 0, 0, 1]),
                DhcpError::BadLength { code: 51, len: 8 },
            ),
            (
                with_options(&[12, 3, b'a', b' ', b'b']),
                DhcpError::BadValue { code: 12 },
            ),
            (with_options(&[15, 2, 0xc3, 0xa9]), DhcpError::BadValue { code: 15 }),
            (with_options(&[12, 0]), DhcpError::BadLength { code: 12, len: 0 }),
            (with_options(&[61, 0]), DhcpError::BadLength { code: 61, len: 0 }),
            (with_options(&[52, 1, 3, 255]), DhcpError::Overload),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(&bytes), Err(want.clone()), "{want}");
        }
    }

    #[test]
    fn options_tolerated() {
        let offer = slirp_offer();
        let opts = HEADER_LEN + 4;
        let with_options = |o: &[u8]| [&offer[..opts], o].concat();
        let cases: Vec<(Vec<u8>, Options)> = vec![
            // No options at all, not even END.
            (offer[..opts].to_vec(), Options::default()),
            // Pads, an unknown option, and whatever follows END.
            (
                with_options(&[0, 0, 200, 2, 9, 9, 53, 1, 5, 255, 53, 1, 6, 7]),
                Options {
                    message_type: Some(MessageType::Ack),
                    ..Options::default()
                },
            ),
            // A hostname in two pieces.
            (
                with_options(&[12, 2, b'n', b'o', 12, 2, b'd', b'e', 255]),
                Options {
                    hostname: Some("node".into()),
                    ..Options::default()
                },
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(&bytes).map(|m| m.options), Ok(want));
        }
    }
}
