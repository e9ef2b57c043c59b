//! The `network` section of a node config: links, addresses, routes, MTU,
//! DNS (docs/network.md describes every field).
//!
//! ```json
//! {"interfaces": [
//!    {"name": "eth0", "dhcp4": true},
//!    {"mac": "52:54:00:12:34:56", "mtu": 9000,
//!     "addresses": ["192.168.10.5/24", "fd00:10::5/64"],
//!     "routes": [{"to": "default", "via": "192.168.10.1"},
//!                {"to": "10.20.0.0/16", "via": "192.168.10.254", "metric": 50}]}],
//!  "dns": {"servers": ["192.168.10.1"], "search": ["cluster.local"]},
//!  "hostname_from_dhcp": false}
//! ```
//!
//! Like the rest of the config this is checked whole before anything is
//! applied, and every error names its JSON path. What depends on the node
//! (whether an interface exists) is the agent's to check at apply time.
//!
//! The main config does not accept this section yet: the agent cannot apply
//! it, and a section that parses but does nothing would be a lie. [`parse`]
//! is the parser that `parse_config` will call once it can.

use crate::json::{self, Fields, JsonError};
use crate::text::clip;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const MAX_INTERFACES: usize = 16;
pub const MAX_ADDRESSES: usize = 32;
pub const MAX_ROUTES: usize = 64;
/// resolv.conf's MAXNS: a resolver reads no more than three.
pub const MAX_DNS_SERVERS: usize = 3;
/// The most search domains glibc's resolver used to read.
pub const MAX_SEARCH_DOMAINS: usize = 6;
/// IFNAMSIZ less the NUL.
pub const MAX_IFNAME: usize = 15;
/// The smallest MTU IPv4 allows (RFC 791).
pub const MIN_MTU: u32 = 68;
/// The smallest MTU a link that carries IPv6 may have (RFC 8200).
pub const MIN_MTU_IPV6: u32 = 1280;
pub const MAX_MTU: u32 = 65535;

/// The validated network section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkConfig {
    pub interfaces: Vec<InterfaceSpec>,
    pub dns: DnsSpec,
    /// Take the hostname from the DHCP lease (option 12) when the config
    /// sets none. Only allowed when some interface uses DHCP.
    pub hostname_from_dhcp: bool,
}

/// How a config names a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkMatch {
    Name(String),
    /// Lower-case, as the kernel reports it.
    Mac([u8; 6]),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceSpec {
    pub link: LinkMatch,
    pub dhcp4: bool,
    /// Static addresses, with the prefix that gives their subnet.
    pub addresses: Vec<Cidr>,
    pub routes: Vec<RouteSpec>,
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// The destination: `0.0.0.0/0` or `::/0` for a default route.
    pub to: Cidr,
    /// The gateway; none for a route straight onto the link.
    pub via: Option<IpAddr>,
    pub metric: Option<u32>,
}

impl RouteSpec {
    pub fn is_default(&self) -> bool {
        self.to.prefix == 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DnsSpec {
    pub servers: Vec<IpAddr>,
    pub search: Vec<String>,
}

/// An address with a prefix length, `192.168.1.5/24` or `fd00::1/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Reads `ADDR/PREFIX`. The address is std's strict form (no leading
    /// zeros in IPv4 octets, no zone index in IPv6).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let bad = || {
            format!(
                "{:?} is not an address in CIDR form, e.g. 192.168.1.5/24 or fd00::5/64",
                clip(text)
            )
        };
        let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        // u8's parser takes a leading '+', which is no CIDR.
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let too_long = |p: &str| (p.len() > 1 && p.starts_with('0')) || p.len() > 3;
        let value: Option<u8> = prefix
            .parse()
            .ok()
            .filter(|&p| !too_long(prefix) && p <= max_prefix(addr));
        let Some(prefix) = value else {
            return Err(format!(
                "{:?}: the prefix length must be 0 to {} without leading zeros",
                clip(text),
                max_prefix(addr)
            ));
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is in this subnet (same family, same leading `prefix` bits).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => mask_v4(a, self.prefix) == mask_v4(b, self.prefix),
            (IpAddr::V6(a), IpAddr::V6(b)) => mask_v6(a, self.prefix) == mask_v6(b, self.prefix),
            _ => false,
        }
    }

    /// The subnet itself: host bits cleared.
    pub fn network(&self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(mask_v4(a, self.prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(mask_v6(a, self.prefix))),
        };
        Cidr {
            addr,
            prefix: self.prefix,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

fn mask_v4(a: Ipv4Addr, prefix: u8) -> u32 {
    let bits = u32::from(a);
    match prefix {
        0 => 0,
        p => bits & (u32::MAX << (32 - u32::from(p.min(32)))),
    }
}

fn mask_v6(a: Ipv6Addr, prefix: u8) -> u128 {
    let bits = u128::from(a);
    match prefix {
        0 => 0,
        p => bits & (u128::MAX << (128 - u32::from(p.min(128)))),
    }
}

/// Parses the `network` section found at `path` (`$.network` in a config).
pub fn parse(v: &Value, path: &str) -> Result<NetworkConfig, JsonError> {
    let top = Fields::new(v, path, &["interfaces", "dns", "hostname_from_dhcp"])?;
    let items = top.opt_array("interfaces")?;
    let ifaces_path = top.path_of("interfaces");
    if items.len() > MAX_INTERFACES {
        return Err(JsonError::new(
            &ifaces_path,
            format!("at most {MAX_INTERFACES} interfaces"),
        ));
    }
    let mut interfaces: Vec<InterfaceSpec> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = json::index(&ifaces_path, i);
        let iface = parse_interface(item, &at)?;
        if let Some(j) = interfaces.iter().position(|o| o.link == iface.link) {
            let field = match iface.link {
                LinkMatch::Name(_) => "name",
                LinkMatch::Mac(_) => "mac",
            };
            let what = format!("the same interface as {}", json::index(&ifaces_path, j));
            return Err(JsonError::new(json::join(&at, field), what));
        }
        interfaces.push(iface);
    }
    check_across_interfaces(&interfaces, &ifaces_path)?;
    let dns = match top.opt("dns") {
        None => DnsSpec::default(),
        Some(v) => parse_dns(v, &top.path_of("dns"))?,
    };
    let hostname_from_dhcp = top.bool("hostname_from_dhcp")?.unwrap_or(false);
    if hostname_from_dhcp && !interfaces.iter().any(|i| i.dhcp4) {
        return Err(JsonError::new(
            top.path_of("hostname_from_dhcp"),
            "no interface uses dhcp4, so there is no lease to take a hostname from",
        ));
    }
    Ok(NetworkConfig {
        interfaces,
        dns,
        hostname_from_dhcp,
    })
}

fn parse_interface(item: &Value, at: &str) -> Result<InterfaceSpec, JsonError> {
    let f = Fields::new(item, at, &["name", "mac", "dhcp4", "addresses", "routes", "mtu"])?;
    let link = match (f.opt_str("name")?, f.opt_str("mac")?) {
        (Some(name), None) => {
            check_ifname(name).map_err(|what| JsonError::new(f.path_of("name"), what))?;
            LinkMatch::Name(name.into())
        }
        (None, Some(mac)) => LinkMatch::Mac(parse_mac(mac).map_err(|what| JsonError::new(f.path_of("mac"), what))?),
        (None, None) => return Err(JsonError::new(at, "needs name or mac")),
        (Some(_), Some(_)) => {
            return Err(JsonError::new(f.path_of("mac"), "give either name or mac, not both"));
        }
    };
    let dhcp4 = f.bool("dhcp4")?.unwrap_or(false);

    let addr_path = f.path_of("addresses");
    let addr_items = f.opt_array("addresses")?;
    if addr_items.len() > MAX_ADDRESSES {
        return Err(JsonError::new(&addr_path, format!("at most {MAX_ADDRESSES} addresses")));
    }
    let mut addresses: Vec<Cidr> = Vec::with_capacity(addr_items.len());
    for (i, a) in addr_items.iter().enumerate() {
        let a_path = json::index(&addr_path, i);
        let cidr = Cidr::parse(json::as_str(a, &a_path)?).map_err(|what| JsonError::new(&a_path, what))?;
        check_host_address(&cidr).map_err(|what| JsonError::new(&a_path, what))?;
        if dhcp4 && cidr.addr.is_ipv4() {
            let what = "a static IPv4 address on an interface with dhcp4: choose one";
            return Err(JsonError::new(&a_path, what));
        }
        if let Some(j) = addresses.iter().position(|o| o.addr == cidr.addr) {
            let what = format!("{} is already listed at {}", cidr.addr, json::index(&addr_path, j));
            return Err(JsonError::new(&a_path, what));
        }
        addresses.push(cidr);
    }

    let route_path = f.path_of("routes");
    let route_items = f.opt_array("routes")?;
    if route_items.len() > MAX_ROUTES {
        return Err(JsonError::new(&route_path, format!("at most {MAX_ROUTES} routes")));
    }
    let mut routes: Vec<RouteSpec> = Vec::with_capacity(route_items.len());
    for (i, r) in route_items.iter().enumerate() {
        let r_path = json::index(&route_path, i);
        let route = parse_route(r, &r_path, dhcp4, &addresses)?;
        if let Some(j) = routes.iter().position(|o| o.to == route.to && o.metric == route.metric) {
            let what = format!(
                "a route to {} is already listed at {}",
                route.to,
                json::index(&route_path, j)
            );
            return Err(JsonError::new(json::join(&r_path, "to"), what));
        }
        routes.push(route);
    }

    let mtu = match f.opt_u64("mtu")? {
        None => None,
        Some(m) => {
            let has_v6 = addresses.iter().any(|a| a.addr.is_ipv6());
            let min = if has_v6 { MIN_MTU_IPV6 } else { MIN_MTU };
            if m < u64::from(min) || m > u64::from(MAX_MTU) {
                let why = if has_v6 { " (the link carries IPv6)" } else { "" };
                return Err(JsonError::new(
                    f.path_of("mtu"),
                    format!("must be {min} to {MAX_MTU}{why}"),
                ));
            }
            Some(m as u32)
        }
    };
    Ok(InterfaceSpec {
        link,
        dhcp4,
        addresses,
        routes,
        mtu,
    })
}

fn parse_route(v: &Value, at: &str, dhcp4: bool, addresses: &[Cidr]) -> Result<RouteSpec, JsonError> {
    let f = Fields::new(v, at, &["to", "via", "metric"])?;
    let via = match f.opt_str("via")? {
        None => None,
        Some(text) => {
            let bad = || format!("gateway {:?} is not an IPv4 or IPv6 address", clip(text));
            let ip: IpAddr = text.parse().map_err(|_| JsonError::new(f.path_of("via"), bad()))?;
            if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
                let what = format!("gateway {ip} cannot be a next hop");
                return Err(JsonError::new(f.path_of("via"), what));
            }
            Some(ip)
        }
    };
    let to_text = f.str("to")?;
    let to = if to_text == "default" {
        match via {
            Some(IpAddr::V4(_)) => Cidr {
                addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                prefix: 0,
            },
            Some(IpAddr::V6(_)) => Cidr {
                addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                prefix: 0,
            },
            None => return Err(JsonError::new(f.path_of("via"), "a default route needs a gateway")),
        }
    } else {
        let cidr = Cidr::parse(to_text).map_err(|what| JsonError::new(f.path_of("to"), what))?;
        if cidr.network() != cidr {
            let what = format!("{cidr} has host bits set: the subnet is {}", cidr.network());
            return Err(JsonError::new(f.path_of("to"), what));
        }
        cidr
    };
    if let Some(gw) = via {
        if gw.is_ipv4() != to.addr.is_ipv4() {
            let what = format!("gateway {gw} is not of the same family as {to}");
            return Err(JsonError::new(f.path_of("via"), what));
        }
        if !on_link(gw, dhcp4, addresses) {
            let what = format!("gateway {gw} is off-link: it is in no subnet of this interface's static addresses");
            return Err(JsonError::new(f.path_of("via"), what));
        }
    }
    let metric = match f.opt_u64("metric")? {
        None => None,
        Some(m) => {
            Some(u32::try_from(m).map_err(|_| JsonError::new(f.path_of("metric"), "must be at most 4294967295"))?)
        }
    };
    Ok(RouteSpec { to, via, metric })
}

/// A gateway is reachable without a route when one of the interface's own
/// subnets holds it. A DHCP lease's subnet is unknown until the lease, so an
/// IPv4 gateway on a DHCP interface is taken on trust (the agent checks it
/// against the lease); IPv6 link-local gateways are on-link by definition.
fn on_link(gw: IpAddr, dhcp4: bool, addresses: &[Cidr]) -> bool {
    match gw {
        IpAddr::V4(_) if dhcp4 => true,
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => true,
        _ => addresses.iter().any(|a| a.contains(gw) && a.addr != gw),
    }
}

/// An address a host may hold: not unspecified, multicast, loopback or
/// broadcast, no /0, and on IPv4 subnets of four or more addresses neither
/// the subnet nor its broadcast address.
fn check_host_address(c: &Cidr) -> Result<(), String> {
    let ip = c.addr;
    if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
        return Err(format!("{ip} cannot be a host's address"));
    }
    if c.prefix == 0 {
        return Err(format!("{c}: a prefix length of 0 gives no subnet"));
    }
    if let IpAddr::V4(v4) = ip {
        if v4.is_broadcast() {
            return Err(format!("{ip} cannot be a host's address"));
        }
        if c.prefix <= 30 {
            let host_mask = u32::MAX >> c.prefix;
            let host = u32::from(v4) & host_mask;
            if host == 0 {
                return Err(format!("{c} is the subnet's own address, not a host in it"));
            }
            if host == host_mask {
                return Err(format!("{c} is the subnet's broadcast address"));
            }
        }
    }
    Ok(())
}

/// No address on two interfaces, and no two default routes of one family
/// with the same metric (the kernel would refuse the second).
fn check_across_interfaces(interfaces: &[InterfaceSpec], path: &str) -> Result<(), JsonError> {
    for (i, iface) in interfaces.iter().enumerate() {
        for (k, a) in iface.addresses.iter().enumerate() {
            for (j, other) in interfaces[..i].iter().enumerate() {
                if other.addresses.iter().any(|o| o.addr == a.addr) {
                    let at = json::index(&format!("{}.addresses", json::index(path, i)), k);
                    let what = format!("{} is also an address of {}", a.addr, json::index(path, j));
                    return Err(JsonError::new(at, what));
                }
            }
        }
        for (k, r) in iface.routes.iter().enumerate().filter(|(_, r)| r.is_default()) {
            for (j, other) in interfaces[..i].iter().enumerate() {
                let clash = other
                    .routes
                    .iter()
                    .any(|o| o.is_default() && o.to == r.to && o.metric == r.metric);
                if clash {
                    let at = json::index(&format!("{}.routes", json::index(path, i)), k);
                    let what = format!(
                        "{} also has a default route for this family with the same metric; give one a different metric",
                        json::index(path, j)
                    );
                    return Err(JsonError::new(json::join(&at, "to"), what));
                }
            }
        }
    }
    Ok(())
}

fn parse_dns(v: &Value, at: &str) -> Result<DnsSpec, JsonError> {
    let f = Fields::new(v, at, &["servers", "search"])?;
    let servers_path = f.path_of("servers");
    let items = f.opt_array("servers")?;
    if items.len() > MAX_DNS_SERVERS {
        let what = format!("at most {MAX_DNS_SERVERS} servers (a resolver reads no more)");
        return Err(JsonError::new(&servers_path, what));
    }
    let mut servers: Vec<IpAddr> = Vec::with_capacity(items.len());
    for (i, s) in items.iter().enumerate() {
        let s_path = json::index(&servers_path, i);
        let text = json::as_str(s, &s_path)?;
        let ip: IpAddr = text
            .parse()
            .map_err(|_| JsonError::new(&s_path, format!("{:?} is not an IPv4 or IPv6 address", clip(text))))?;
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(JsonError::new(&s_path, format!("{ip} cannot be a DNS server")));
        }
        if let Some(j) = servers.iter().position(|&o| o == ip) {
            let what = format!("{ip} is already listed at {}", json::index(&servers_path, j));
            return Err(JsonError::new(&s_path, what));
        }
        servers.push(ip);
    }
    let search_path = f.path_of("search");
    let items = f.opt_array("search")?;
    if items.len() > MAX_SEARCH_DOMAINS {
        let what = format!("at most {MAX_SEARCH_DOMAINS} search domains");
        return Err(JsonError::new(&search_path, what));
    }
    let mut search: Vec<String> = Vec::with_capacity(items.len());
    for (i, d) in items.iter().enumerate() {
        let d_path = json::index(&search_path, i);
        let domain = json::as_str(d, &d_path)?;
        check_domain(domain).map_err(|what| JsonError::new(&d_path, what))?;
        if let Some(j) = search.iter().position(|o| o.eq_ignore_ascii_case(domain)) {
            let what = format!("{domain:?} is already listed at {}", json::index(&search_path, j));
            return Err(JsonError::new(&d_path, what));
        }
        search.push(domain.into());
    }
    Ok(DnsSpec { servers, search })
}

/// An interface name as the kernel's `dev_valid_name` takes it: 1 to 15
/// bytes, not `.` or `..`, no `/`, `:` or whitespace. Printable ASCII only,
/// since it is echoed in status and logs.
pub fn check_ifname(name: &str) -> Result<(), String> {
    let ok_char = |b: u8| b.is_ascii_graphic() && b != b'/' && b != b':';
    if name.is_empty() || name.len() > MAX_IFNAME || name == "." || name == ".." || !name.bytes().all(ok_char) {
        return Err(format!(
            "interface name {:?} must be 1 to {MAX_IFNAME} printable characters, without / : or spaces, not . or ..",
            clip(name)
        ));
    }
    Ok(())
}

/// A unicast MAC address, six colon-separated hex pairs.
pub fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let bad = || format!("{:?} is not a MAC address like 52:54:00:12:34:56", clip(text));
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(&parts) {
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 == 1 || mac == [0; 6] {
        return Err(format!("{:?} is not a unicast MAC address", clip(text)));
    }
    Ok(mac)
}

/// A search domain: dot-separated labels of letters, digits, inner hyphens
/// and underscores, each 1 to 63 long, at most 253 in all.
pub fn check_domain(name: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "search domain {:?} must be at most 253 characters of dot-separated labels",
            clip(name)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "interfaces": [
                {"name": "eth0", "dhcp4": true},
                {"mac": "52:54:00:12:34:56", "mtu": 9000,
                 "addresses": ["192.168.10.5/24", "fd00:10::5/64"],
                 "routes": [{"to": "default", "via": "192.168.10.1"},
                            {"to": "10.20.0.0/16", "via": "192.168.10.254", "metric": 50},
                            {"to": "default", "via": "fe80::1"}]}
            ],
            "dns": {"servers": ["192.168.10.1", "fd00:10::1"], "search": ["cluster.local", "example.org"]},
            "hostname_from_dhcp": true
        })
    }

    fn with(mut doc: Value, pointer: &str, value: Value) -> Value {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        match doc.pointer_mut(parent).unwrap() {
            Value::Object(map) if value.is_null() => {
                map.remove(key);
            }
            Value::Object(map) => {
                map.insert(key.to_string(), value);
            }
            Value::Array(items) => {
                let i: usize = key.parse().unwrap();
                if i == items.len() {
                    items.push(value);
                } else {
                    items[i] = value;
                }
            }
            _ => panic!("{pointer}"),
        }
        doc
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    #[test]
    fn parses_the_base_section() {
        let n = parse(&base(), "$.network").unwrap();
        assert_eq!(n.interfaces.len(), 2);
        let eth0 = &n.interfaces[0];
        assert_eq!(eth0.link, LinkMatch::Name("eth0".into()));
        assert!(eth0.dhcp4 && eth0.addresses.is_empty() && eth0.mtu.is_none());
        let second = &n.interfaces[1];
        assert_eq!(second.link, LinkMatch::Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert_eq!(second.mtu, Some(9000));
        assert_eq!(second.addresses, [cidr("192.168.10.5/24"), cidr("fd00:10::5/64")]);
        assert_eq!(
            second.routes,
            [
                RouteSpec {
                    to: cidr("0.0.0.0/0"),
                    via: Some(ip("192.168.10.1")),
                    metric: None
                },
                RouteSpec {
                    to: cidr("10.20.0.0/16"),
                    via: Some(ip("192.168.10.254")),
                    metric: Some(50)
                },
                RouteSpec {
                    to: cidr("::/0"),
                    via: Some(ip("fe80::1")),
                    metric: None
                },
            ]
        );
        assert!(second.routes[0].is_default() && !second.routes[1].is_default());
        assert_eq!(n.dns.servers, [ip("192.168.10.1"), ip("fd00:10::1")]);
        assert_eq!(n.dns.search, ["cluster.local", "example.org"]);
        assert!(n.hostname_from_dhcp);
    }

    #[test]
    fn empty_section() {
        assert_eq!(parse(&json!({}), "$.network"), Ok(NetworkConfig::default()));
    }

    /// Each case changes one thing in the base section and names the exact
    /// path and message the error must start with.
    #[test]
    fn validation_table() {
        let i1 = "/interfaces/1";
        let cases: Vec<(String, Value, &str)> = vec![
            ("/extra".into(), json!(1), "$.network.extra: unknown field"),
            ("/interfaces".into(), json!({}), "$.network.interfaces: expected an array, found an object"),
            ("/interfaces/0".into(), json!({"dhcp4": true}), "$.network.interfaces[0]: needs name or mac"),
            (
                "/interfaces/0/mac".into(),
                json!("52:54:00:00:00:01"),
                "$.network.interfaces[0].mac: give either name or mac, not both",
            ),
            ("/interfaces/0/speed".into(), json!(1000), "$.network.interfaces[0].speed: unknown field"),
            (
                "/interfaces/0/name".into(),
                json!("a/b"),
                "$.network.interfaces[0].name: interface name \"a/b\" must be 1 to 15",
            ),
            ("/interfaces/0/name".into(), json!("eth0:1"), "$.network.interfaces[0].name: interface name"),
            ("/interfaces/0/name".into(), json!(".."), "$.network.interfaces[0].name: interface name"),
            ("/interfaces/0/name".into(), json!(""), "$.network.interfaces[0].name: interface name"),
            ("/interfaces/0/name".into(), json!("e th"), "$.network.interfaces[0].name: interface name"),
            (
                "/interfaces/0/name".into(),
                json!("x".repeat(16)),
                "$.network.interfaces[0].name: interface name",
            ),
            (
                "/interfaces/0/dhcp4".into(),
                json!("yes"),
                "$.network.interfaces[0].dhcp4: expected a boolean, found a string",
            ),
            (
                "/interfaces/2".into(),
                json!({"name": "eth0"}),
                "$.network.interfaces[2].name: the same interface as $.network.interfaces[0]",
            ),
            (
                "/interfaces/2".into(),
                json!({"mac": "52:54:00:12:34:56"}),
                "$.network.interfaces[2].mac: the same interface as $.network.interfaces[1]",
            ),
            (format!("{i1}/mac"), json!("52:54:00:12:34"), "$.network.interfaces[1].mac: \"52:54:00:12:34\" is not a MAC"),
            (format!("{i1}/mac"), json!("52-54-00-12-34-56"), "$.network.interfaces[1].mac: \"52-54-00-12-34-56\" is not a MAC"),
            (format!("{i1}/mac"), json!("52:54:00:12:34:5g"), "$.network.interfaces[1].mac: \"52:54:00:12:34:5g\" is not a MAC"),
            (format!("{i1}/mac"), json!("01:00:5e:00:00:01"), "$.network.interfaces[1].mac: \"01:00:5e:00:00:01\" is not a unicast"),
            (format!("{i1}/mac"), json!("00:00:00:00:00:00"), "$.network.interfaces[1].mac: \"00:00:00:00:00:00\" is not a unicast"),
            (format!("{i1}/mtu"), json!(67), "$.network.interfaces[1].mtu: must be 1280 to 65535 (the link carries IPv6)"),
            (format!("{i1}/mtu"), json!(1279), "$.network.interfaces[1].mtu: must be 1280 to 65535"),
            (format!("{i1}/mtu"), json!(65536), "$.network.interfaces[1].mtu: must be 1280 to 65535"),
            ("/interfaces/0/mtu".into(), json!(67), "$.network.interfaces[0].mtu: must be 68 to 65535"),
            ("/interfaces/0/mtu".into(), json!(-1), "$.network.interfaces[0].mtu: expected a non-negative integer"),
            (
                format!("{i1}/addresses/0"),
                json!("192.168.10.5"),
                "$.network.interfaces[1].addresses[0]: \"192.168.10.5\" is not an address in CIDR form",
            ),
            (
                format!("{i1}/addresses/0"),
                json!("192.168.10.5/33"),
                "$.network.interfaces[1].addresses[0]: \"192.168.10.5/33\": the prefix length must be 0 to 32",
            ),
            (
                format!("{i1}/addresses/0"),
                json!("192.168.10.5/024"),
                "$.network.interfaces[1].addresses[0]: \"192.168.10.5/024\": the prefix length must be 0 to 32 without leading zeros",
            ),
            (format!("{i1}/addresses/0"), json!("192.168.10.5/+24"), "$.network.interfaces[1].addresses[0]: \"192.168.10.5/+24\" is not"),
            (format!("{i1}/addresses/0"), json!("192.168.010.5/24"), "$.network.interfaces[1].addresses[0]: \"192.168.010.5/24\" is not"),
            (format!("{i1}/addresses/0"), json!("300.1.1.1/24"), "$.network.interfaces[1].addresses[0]: \"300.1.1.1/24\" is not"),
            (format!("{i1}/addresses/0"), json!("192.168.10.5/"), "$.network.interfaces[1].addresses[0]: \"192.168.10.5/\" is not"),
            (format!("{i1}/addresses/0"), json!("fe80::1%eth0/64"), "$.network.interfaces[1].addresses[0]: \"fe80::1%eth0/64\" is not"),
            (format!("{i1}/addresses/1"), json!("fd00::5/129"), "$.network.interfaces[1].addresses[1]: \"fd00::5/129\": the prefix length must be 0 to 128"),
            (format!("{i1}/addresses/0"), json!(5), "$.network.interfaces[1].addresses[0]: expected a string"),
            (format!("{i1}/addresses/0"), json!("192.168.10.0/24"), "$.network.interfaces[1].addresses[0]: 192.168.10.0/24 is the subnet's own address"),
            (format!("{i1}/addresses/0"), json!("192.168.10.255/24"), "$.network.interfaces[1].addresses[0]: 192.168.10.255/24 is the subnet's broadcast"),
            (format!("{i1}/addresses/0"), json!("127.0.0.2/8"), "$.network.interfaces[1].addresses[0]: 127.0.0.2 cannot be a host's address"),
            (format!("{i1}/addresses/0"), json!("224.0.0.1/24"), "$.network.interfaces[1].addresses[0]: 224.0.0.1 cannot be"),
            (format!("{i1}/addresses/0"), json!("0.0.0.0/8"), "$.network.interfaces[1].addresses[0]: 0.0.0.0 cannot be"),
            (format!("{i1}/addresses/1"), json!("::/64"), "$.network.interfaces[1].addresses[1]: :: cannot be"),
            (format!("{i1}/addresses/0"), json!("192.168.10.5/0"), "$.network.interfaces[1].addresses[0]: 192.168.10.5/0: a prefix length of 0"),
            (
                format!("{i1}/addresses/2"),
                json!("192.168.10.5/16"),
                "$.network.interfaces[1].addresses[2]: 192.168.10.5 is already listed at $.network.interfaces[1].addresses[0]",
            ),
            (
                "/interfaces/0/addresses".into(),
                json!(["10.0.0.2/24"]),
                "$.network.interfaces[0].addresses[0]: a static IPv4 address on an interface with dhcp4",
            ),
            (
                "/interfaces/2".into(),
                json!({"name": "eth9", "addresses": ["fd00:10::5/64"]}),
                "$.network.interfaces[2].addresses[0]: fd00:10::5 is also an address of $.network.interfaces[1]",
            ),
            (format!("{i1}/routes/0/to"), Value::Null, "$.network.interfaces[1].routes[0].to: missing field"),
            (format!("{i1}/routes/0/dev"), json!("eth0"), "$.network.interfaces[1].routes[0].dev: unknown field"),
            (format!("{i1}/routes/0/via"), Value::Null, "$.network.interfaces[1].routes[0].via: a default route needs a gateway"),
            (
                format!("{i1}/routes/0/via"),
                json!("10.0.0.1"),
                "$.network.interfaces[1].routes[0].via: gateway 10.0.0.1 is off-link",
            ),
            (
                format!("{i1}/routes/0/via"),
                json!("192.168.10.5"),
                "$.network.interfaces[1].routes[0].via: gateway 192.168.10.5 is off-link",
            ),
            (format!("{i1}/routes/1/via"), json!("fd00:10::1"), "$.network.interfaces[1].routes[1].via: gateway fd00:10::1 is not of the same family as 10.20.0.0/16"),
            (format!("{i1}/routes/1/via"), json!("gw"), "$.network.interfaces[1].routes[1].via: gateway \"gw\" is not an IPv4 or IPv6 address"),
            (format!("{i1}/routes/1/via"), json!("0.0.0.0"), "$.network.interfaces[1].routes[1].via: gateway 0.0.0.0 cannot be a next hop"),
            (
                format!("{i1}/routes/1/to"),
                json!("10.20.0.1/16"),
                "$.network.interfaces[1].routes[1].to: 10.20.0.1/16 has host bits set: the subnet is 10.20.0.0/16",
            ),
            (format!("{i1}/routes/1/to"), json!("10.20.0.0"), "$.network.interfaces[1].routes[1].to: \"10.20.0.0\" is not an address in CIDR form"),
            (format!("{i1}/routes/1/metric"), json!(1u64 << 32), "$.network.interfaces[1].routes[1].metric: must be at most 4294967295"),
            (
                format!("{i1}/routes/3"),
                json!({"to": "10.20.0.0/16", "via": "192.168.10.2", "metric": 50}),
                "$.network.interfaces[1].routes[3].to: a route to 10.20.0.0/16 is already listed at $.network.interfaces[1].routes[1]",
            ),
            (
                "/interfaces/2".into(),
                json!({"name": "eth9", "addresses": ["172.16.0.2/24"], "routes": [{"to": "default", "via": "172.16.0.1"}]}),
                "$.network.interfaces[2].routes[0].to: $.network.interfaces[1] also has a default route for this family with the same metric",
            ),
            ("/dns/servers".into(), json!(["1.1.1.1", "8.8.8.8", "9.9.9.9", "1.0.0.1"]), "$.network.dns.servers: at most 3 servers"),
            ("/dns/servers".into(), json!(["1.1.1.1", "1.1.1.1"]), "$.network.dns.servers[1]: 1.1.1.1 is already listed at $.network.dns.servers[0]"),
            ("/dns/servers".into(), json!(["dns.example"]), "$.network.dns.servers[0]: \"dns.example\" is not an IPv4 or IPv6 address"),
            ("/dns/servers".into(), json!(["0.0.0.0"]), "$.network.dns.servers[0]: 0.0.0.0 cannot be a DNS server"),
            ("/dns/search".into(), json!(["a..b"]), "$.network.dns.search[0]: search domain \"a..b\" must be"),
            ("/dns/search".into(), json!(["-a.b"]), "$.network.dns.search[0]: search domain \"-a.b\" must be"),
            ("/dns/search".into(), json!(["a", "b", "c", "d", "e", "f", "g"]), "$.network.dns.search: at most 6 search domains"),
            ("/dns/search".into(), json!(["a.b", "A.B"]), "$.network.dns.search[1]: \"A.B\" is already listed at $.network.dns.search[0]"),
            ("/dns/ttl".into(), json!(1), "$.network.dns.ttl: unknown field"),
            ("/hostname_from_dhcp".into(), json!(1), "$.network.hostname_from_dhcp: expected a boolean"),
            (
                "/interfaces/0/dhcp4".into(),
                json!(false),
                "$.network.hostname_from_dhcp: no interface uses dhcp4",
            ),
        ];
        for (pointer, value, want) in cases {
            let doc = with(base(), &pointer, value.clone());
            let err = match parse(&doc, "$.network") {
                Err(e) => e.to_string(),
                Ok(n) => panic!("{pointer} = {value}: accepted as {n:?}"),
            };
            assert!(err.starts_with(want), "{pointer} = {value}:\n got  {err}\n want {want}");
        }
    }

    #[test]
    fn accepted_variants() {
        let cases: Vec<(&str, Value)> = vec![
            // A gateway on a DHCP interface is checked against the lease, later.
            (
                "/interfaces/0/routes",
                json!([{"to": "10.9.0.0/16", "via": "10.0.2.2"}]),
            ),
            // A static IPv6 address beside DHCPv4.
            ("/interfaces/0/addresses", json!(["fd00:2::15/64"])),
            // A route straight onto the link.
            ("/interfaces/1/routes/1", json!({"to": "10.20.0.0/16"})),
            // Two default routes that differ in metric.
            (
                "/interfaces/2",
                json!({"name": "eth9", "addresses": ["172.16.0.2/24"],
                       "routes": [{"to": "default", "via": "172.16.0.1", "metric": 200}]}),
            ),
            // A link only brought up (MTU), no addresses.
            ("/interfaces/2", json!({"name": "eth9", "mtu": 68})),
            ("/interfaces/1/addresses/0", json!("192.168.10.5/31")),
            ("/interfaces/1/addresses/0", json!("192.168.10.1/32")),
            ("/interfaces/1/mac", json!("52:54:00:AB:cd:EF")),
            ("/dns", json!({})),
        ];
        for (pointer, value) in cases {
            let doc = with(base(), pointer, value.clone());
            // A /31 or /32 leaves the base's gateways off-link: drop its routes.
            let doc = if value == json!("192.168.10.5/31") || value == json!("192.168.10.1/32") {
                with(doc, "/interfaces/1/routes", json!([]))
            } else {
                doc
            };
            let got = parse(&doc, "$.network");
            assert!(got.is_ok(), "{pointer} = {value}: {got:?}");
        }
        let doc = with(base(), "/interfaces/1/mac", json!("52:54:00:AB:cd:EF"));
        let n = parse(&doc, "$.network").unwrap();
        assert_eq!(n.interfaces[1].link, LinkMatch::Mac([0x52, 0x54, 0, 0xab, 0xcd, 0xef]));
    }

    #[test]
    fn cidr_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("192.168.1.5/24", "192.168.1.1", true),
            ("192.168.1.5/24", "192.168.2.1", false),
            ("192.168.1.5/32", "192.168.1.5", true),
            ("192.168.1.5/32", "192.168.1.6", false),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("0.0.0.0/0", "::1", false),
            ("fd00::5/64", "fd00::1", true),
            ("fd00::5/64", "fd00:0:0:1::1", false),
            ("fd00::5/63", "fd00:0:0:1::1", true),
            ("::/0", "2001:db8::1", true),
            ("::/0", "1.2.3.4", false),
        ];
        for (net, addr, want) in cases {
            assert_eq!(cidr(net).contains(ip(addr)), *want, "{net} contains {addr}");
        }
        assert_eq!(cidr("10.1.2.3/9").network(), cidr("10.0.0.0/9"));
        assert_eq!(cidr("fd00::ffff/112").network(), cidr("fd00::/112"));
        assert_eq!(cidr("10.1.2.3/9").to_string(), "10.1.2.3/9");
        for bad in [
            "",
            "/",
            "1.2.3.4",
            "1.2.3.4/",
            "1.2.3.4/x",
            "1.2.3.4/-1",
            "1.2.3.4/1/2",
            "1.2.3/8",
            "::/1280",
            " 1.2.3.4/8",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?}");
        }
    }
}
