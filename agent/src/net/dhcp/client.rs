//! A DHCPv4 client as a pure state machine (RFC 2131 section 4.4).
//!
//! The caller owns the socket and the clock. It calls [`Client::start`],
//! then [`Client::on_packet`] for every datagram that reaches port 68 and
//! [`Client::on_timer`] when the deadline it was last given passes, and
//! [`Client::shutdown`] on a clean stop. Each returns the [`Action`]s to
//! carry out, in order. Times are milliseconds on the caller's monotonic
//! clock; randomness (transaction ids, retransmission jitter) comes from the
//! caller's seed, so a test replays an exchange exactly.
//!
//! ```text
//! INIT ─DISCOVER─▶ SELECTING ─OFFER/REQUEST─▶ REQUESTING ─ACK─▶ BOUND
//!   ▲                  │ no answer: DISCOVER again, backoff  │ NAK, no answer
//!   └──────────────────┴─────────────────────────────────────┘
//! BOUND ─T1─▶ RENEWING (unicast REQUEST) ─T2─▶ REBINDING (broadcast) ─expiry─▶ INIT
//!   ▲ ACK ◀──────┴─────────────────────────────────┘       NAK ─▶ INIT
//! ```
//!
//! A packet is ignored unless it is a reply, carries this client's MAC and
//! the transaction id in flight, parses, and is the answer the state waits
//! for. Anything else, garbage included, changes nothing.

use super::message::{self, Message, MessageType, Op, Options, FLAG_BROADCAST};
use basalt_common::backoff::Backoff;
use basalt_common::splitmix::SplitMix64;
use std::net::Ipv4Addr;

/// What the client asks for in option 55.
pub const REQUESTED_OPTIONS: [u8; 9] = [
    message::OPT_SUBNET_MASK,
    message::OPT_ROUTERS,
    message::OPT_DNS_SERVERS,
    message::OPT_HOSTNAME,
    message::OPT_DOMAIN_NAME,
    message::OPT_LEASE_TIME,
    message::OPT_SERVER_ID,
    message::OPT_RENEWAL_TIME,
    message::OPT_REBINDING_TIME,
];

/// RFC 2131 section 4.1: 4 s, doubling to 64 s, each plus or minus 1 s.
pub const DEFAULT_BACKOFF: Backoff = Backoff {
    initial_ms: 4_000,
    max_ms: 64_000,
    stable_after_ms: 0,
};
/// The most jitter added to or taken from a retransmission delay.
pub const MAX_JITTER_MS: u64 = 1_000;
/// REQUESTs sent for one OFFER before starting over with a DISCOVER.
pub const REQUEST_TRIES: u32 = 4;
/// RENEWING and REBINDING retransmit no sooner than this (RFC 2131 4.4.5).
pub const MIN_RENEW_RETRY_MS: u64 = 60_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    pub mac: [u8; 6],
    /// Sent in option 12 so the server may register it.
    pub hostname: Option<String>,
    /// Seeds transaction ids and jitter.
    pub seed: u64,
    /// Retransmission delays for DISCOVER and REQUEST; `stable_after_ms`
    /// is not used.
    pub backoff: Backoff,
}

/// Where a packet goes: broadcast to 255.255.255.255, or to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Broadcast,
    Unicast(Ipv4Addr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes from port 68 to port 67.
    Send { to: Destination, bytes: Vec<u8> },
    /// Configure this lease: address, routes, DNS. Replaces any earlier one.
    Apply(Lease),
    /// Remove this lease's address and routes.
    Drop(Lease),
    /// Call [`Client::on_timer`] at this time.
    SetTimer { at_ms: u64 },
    /// No timer is needed (an infinite lease, or stopped).
    CancelTimer,
}

/// An address bound from a server, with its times (absolute, caller's clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub routers: Vec<Ipv4Addr>,
    pub dns_servers: Vec<Ipv4Addr>,
    pub domain_name: Option<String>,
    pub hostname: Option<String>,
    pub server: Ipv4Addr,
    pub obtained_ms: u64,
    /// T1, T2 and expiry; `None` for an infinite lease.
    pub times: Option<LeaseTimes>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimes {
    pub renew_at_ms: u64,
    pub rebind_at_ms: u64,
    pub expires_at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateName {
    Init,
    Selecting,
    Requesting,
    Bound,
    Renewing,
    Rebinding,
    Stopped,
}

#[derive(Debug, Clone)]
enum State {
    Init,
    Selecting,
    Requesting {
        offer: Ipv4Addr,
        server: Ipv4Addr,
        tries: u32,
    },
    Bound(Lease),
    Renewing(Lease),
    Rebinding(Lease),
    Stopped,
}

/// What a REQUEST asks for.
#[derive(Debug, Clone, Copy)]
enum RequestFor {
    /// The address an OFFER made, from the server that made it (SELECTING).
    Offer { address: Ipv4Addr, server: Ipv4Addr },
    /// The lease held, from its server (RENEWING).
    Renew { address: Ipv4Addr, server: Ipv4Addr },
    /// The lease held, from any server (REBINDING).
    Rebind { address: Ipv4Addr },
}

pub struct Client {
    settings: ClientSettings,
    rng: SplitMix64,
    state: State,
    xid: u32,
    /// When the current transaction started (for `secs`).
    started_ms: u64,
    /// DISCOVERs sent without an OFFER: the backoff streak.
    streak: u32,
    /// NAKs since the last lease.
    naks: u32,
    deadline: Option<u64>,
}

impl Client {
    pub fn new(settings: ClientSettings) -> Client {
        let rng = SplitMix64::new(settings.seed);
        Client {
            settings,
            rng,
            state: State::Init,
            xid: 0,
            started_ms: 0,
            streak: 0,
            naks: 0,
            deadline: None,
        }
    }

    pub fn state(&self) -> StateName {
        match self.state {
            State::Init => StateName::Init,
            State::Selecting => StateName::Selecting,
            State::Requesting { .. } => StateName::Requesting,
            State::Bound(_) => StateName::Bound,
            State::Renewing(_) => StateName::Renewing,
            State::Rebinding(_) => StateName::Rebinding,
            State::Stopped => StateName::Stopped,
        }
    }

    /// The lease in force, if any.
    pub fn lease(&self) -> Option<&Lease> {
        match &self.state {
            State::Bound(l) | State::Renewing(l) | State::Rebinding(l) => Some(l),
            _ => None,
        }
    }

    /// The transaction id in flight.
    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// Starts discovery from INIT. Does nothing in any other state.
    pub fn start(&mut self, now: u64) -> Vec<Action> {
        match self.state {
            State::Init => self.discover(now),
            _ => Vec::new(),
        }
    }

    /// The deadline given in the last [`Action::SetTimer`] has passed (or the
    /// caller woke early: then the timer is simply set again).
    pub fn on_timer(&mut self, now: u64) -> Vec<Action> {
        match self.deadline {
            None => return Vec::new(),
            Some(at) if now < at => return vec![Action::SetTimer { at_ms: at }],
            Some(_) => {}
        }
        match std::mem::replace(&mut self.state, State::Init) {
            State::Init | State::Selecting => self.discover(now),
            State::Requesting { offer, server, tries } if tries < REQUEST_TRIES => {
                self.state = State::Requesting {
                    offer,
                    server,
                    tries: tries + 1,
                };
                let mut out = vec![self.send_request(now, RequestFor::Offer { address: offer, server })];
                let delay = self.retry_delay(tries + 1);
                out.push(self.set_timer(now.saturating_add(delay)));
                out
            }
            State::Requesting { .. } => {
                self.streak = 0;
                self.discover(now)
            }
            State::Bound(lease) => self.lease_timer(now, lease, StateName::Bound),
            State::Renewing(lease) => self.lease_timer(now, lease, StateName::Renewing),
            State::Rebinding(lease) => self.lease_timer(now, lease, StateName::Rebinding),
            State::Stopped => {
                self.state = State::Stopped;
                Vec::new()
            }
        }
    }

    /// A datagram arrived on port 68.
    pub fn on_packet(&mut self, now: u64, bytes: &[u8]) -> Vec<Action> {
        let Ok(m) = message::parse(bytes) else {
            return Vec::new();
        };
        if m.op != Op::Reply || m.xid != self.xid || m.chaddr != self.settings.mac {
            return Vec::new();
        }
        let Some(kind) = m.options.message_type else {
            return Vec::new();
        };
        match (&self.state, kind) {
            (State::Selecting, MessageType::Offer) => {
                let Some(server) = m.options.server_id else {
                    return Vec::new();
                };
                if !usable(m.yiaddr) {
                    return Vec::new();
                }
                self.streak = 0;
                self.state = State::Requesting {
                    offer: m.yiaddr,
                    server,
                    tries: 1,
                };
                let send = self.send_request(
                    now,
                    RequestFor::Offer {
                        address: m.yiaddr,
                        server,
                    },
                );
                let delay = self.retry_delay(1);
                vec![send, self.set_timer(now.saturating_add(delay))]
            }
            (State::Requesting { offer, server, .. }, MessageType::Ack) => {
                let (offer, server) = (*offer, *server);
                if m.yiaddr != offer || m.options.server_id.is_some_and(|s| s != server) {
                    return Vec::new();
                }
                match lease_from(&m, server, now) {
                    Some(lease) => self.bind(lease, None),
                    None => Vec::new(),
                }
            }
            (State::Requesting { server, .. }, MessageType::Nak) => {
                if m.options.server_id.is_some_and(|s| s != *server) {
                    return Vec::new();
                }
                self.nak(now, None)
            }
            (State::Renewing(lease) | State::Rebinding(lease), MessageType::Ack) => {
                if m.yiaddr != lease.address {
                    return Vec::new();
                }
                let renewing = matches!(self.state, State::Renewing(_));
                if renewing && m.options.server_id.is_some_and(|s| s != lease.server) {
                    return Vec::new();
                }
                // In REBINDING any server may answer; it becomes the lease's server.
                let server = m.options.server_id.unwrap_or(lease.server);
                let old = lease.clone();
                match lease_from(&m, server, now) {
                    Some(new) => self.bind(new, Some(old)),
                    None => Vec::new(),
                }
            }
            (State::Renewing(lease), MessageType::Nak) => {
                if m.options.server_id.is_some_and(|s| s != lease.server) {
                    return Vec::new();
                }
                let old = lease.clone();
                self.nak(now, Some(old))
            }
            (State::Rebinding(lease), MessageType::Nak) => {
                let old = lease.clone();
                self.nak(now, Some(old))
            }
            _ => Vec::new(),
        }
    }

    /// A clean stop: release the lease, if one is held, and stop.
    pub fn shutdown(&mut self, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(lease) = self.lease().cloned() {
            self.xid = self.next_xid();
            self.started_ms = now;
            let m = self.message(
                now,
                MessageType::Release,
                lease.address,
                Options {
                    server_id: Some(lease.server),
                    ..Options::default()
                },
            );
            out.push(Action::Send {
                to: Destination::Unicast(lease.server),
                bytes: message::encode(&m),
            });
            out.push(Action::Drop(lease));
        }
        self.state = State::Stopped;
        self.deadline = None;
        out.push(Action::CancelTimer);
        out
    }

    fn discover(&mut self, now: u64) -> Vec<Action> {
        self.state = State::Selecting;
        self.xid = self.next_xid();
        self.started_ms = now;
        self.streak = self.streak.saturating_add(1);
        let options = Options {
            hostname: self.settings.hostname.clone(),
            ..Options::default()
        };
        let mut m = self.message(now, MessageType::Discover, Ipv4Addr::UNSPECIFIED, options);
        m.flags = FLAG_BROADCAST;
        let send = Action::Send {
            to: Destination::Broadcast,
            bytes: message::encode(&m),
        };
        let delay = self.retry_delay(self.streak);
        vec![send, self.set_timer(now.saturating_add(delay))]
    }

    /// A REQUEST: for an offer (broadcast, options 50 and 54), or for the
    /// lease held (its address in ciaddr; unicast to its server when
    /// renewing, broadcast when rebinding).
    fn send_request(&mut self, now: u64, what: RequestFor) -> Action {
        let mut options = Options {
            hostname: self.settings.hostname.clone(),
            ..Options::default()
        };
        let (ciaddr, to) = match what {
            RequestFor::Offer { address, server } => {
                options.requested_ip = Some(address);
                options.server_id = Some(server);
                (Ipv4Addr::UNSPECIFIED, Destination::Broadcast)
            }
            RequestFor::Renew { address, server } => (address, Destination::Unicast(server)),
            RequestFor::Rebind { address } => (address, Destination::Broadcast),
        };
        let mut m = self.message(now, MessageType::Request, ciaddr, options);
        if ciaddr.is_unspecified() {
            m.flags = FLAG_BROADCAST;
        }
        Action::Send {
            to,
            bytes: message::encode(&m),
        }
    }

    fn message(&self, now: u64, kind: MessageType, ciaddr: Ipv4Addr, mut options: Options) -> Message {
        options.message_type = Some(kind);
        options.client_id = Some([&[1u8][..], &self.settings.mac].concat());
        if kind != MessageType::Release {
            options.parameter_request_list = REQUESTED_OPTIONS.to_vec();
        }
        let secs = (now.saturating_sub(self.started_ms) / 1000).min(u64::from(u16::MAX)) as u16;
        Message {
            op: Op::Request,
            xid: self.xid,
            secs,
            flags: 0,
            ciaddr,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: self.settings.mac,
            options,
        }
    }

    fn bind(&mut self, lease: Lease, old: Option<Lease>) -> Vec<Action> {
        self.streak = 0;
        self.naks = 0;
        let mut out = Vec::new();
        if let Some(old) = old.filter(|o| o.address != lease.address || o.prefix != lease.prefix) {
            out.push(Action::Drop(old));
        }
        out.push(Action::Apply(lease.clone()));
        match lease.times {
            Some(t) => out.push(self.set_timer(t.renew_at_ms)),
            None => {
                self.deadline = None;
                out.push(Action::CancelTimer);
            }
        }
        self.state = State::Bound(lease);
        out
    }

    fn nak(&mut self, now: u64, held: Option<Lease>) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(lease) = held {
            out.push(Action::Drop(lease));
        }
        // Back to INIT; discovery resumes after a delay that grows with NAKs
        // in a row, so a server that refuses everything is not hammered.
        self.state = State::Init;
        self.streak = 0;
        self.naks = self.naks.saturating_add(1);
        let delay = self.retry_delay(self.naks);
        let at = now.saturating_add(delay);
        out.push(self.set_timer(at));
        out
    }

    /// T1, T2 or expiry passed (or a renewal retransmission is due).
    fn lease_timer(&mut self, now: u64, lease: Lease, was: StateName) -> Vec<Action> {
        let Some(t) = lease.times else {
            self.state = State::Bound(lease);
            self.deadline = None;
            return vec![Action::CancelTimer];
        };
        if now >= t.expires_at_ms {
            self.streak = 0;
            let mut out = vec![Action::Drop(lease)];
            out.extend(self.discover(now));
            return out;
        }
        let rebinding = now >= t.rebind_at_ms;
        let now_in = if rebinding {
            StateName::Rebinding
        } else {
            StateName::Renewing
        };
        // A new transaction on entering RENEWING or REBINDING; retransmissions keep it.
        if was != now_in {
            self.xid = self.next_xid();
            self.started_ms = now;
        }
        let what = if rebinding {
            RequestFor::Rebind { address: lease.address }
        } else {
            RequestFor::Renew {
                address: lease.address,
                server: lease.server,
            }
        };
        let send = self.send_request(now, what);
        let until = if rebinding { t.expires_at_ms } else { t.rebind_at_ms };
        let retry = now.saturating_add(((until - now) / 2).max(MIN_RENEW_RETRY_MS));
        let timer = self.set_timer(retry.min(until));
        self.state = if rebinding {
            State::Rebinding(lease)
        } else {
            State::Renewing(lease)
        };
        vec![send, timer]
    }

    fn set_timer(&mut self, at_ms: u64) -> Action {
        self.deadline = Some(at_ms);
        Action::SetTimer { at_ms }
    }

    /// The backoff delay for this attempt, plus or minus up to a quarter of
    /// it (at most [`MAX_JITTER_MS`]).
    fn retry_delay(&mut self, attempt: u32) -> u64 {
        let base = self.settings.backoff.delay_ms(attempt).max(1);
        let span = (base / 4).min(MAX_JITTER_MS);
        let r = self.rng.next_u64() % (2 * span + 1);
        base - span + r
    }

    fn next_xid(&mut self) -> u32 {
        (self.rng.next_u64() >> 32) as u32
    }
}

/// An address a server may hand out: not 0, broadcast, multicast, loopback.
fn usable(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback())
}

/// The prefix of a contiguous netmask.
fn mask_prefix(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    (m.checked_shl(ones).unwrap_or(0) == 0 && ones > 0).then_some(ones as u8)
}

/// The subnet of a classful address, for a lease that gives no mask.
fn classful_prefix(ip: Ipv4Addr) -> u8 {
    match ip.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// The lease an ACK grants, or `None` if it grants none this client takes
/// (no lease time, an unusable address, a mask with holes).
fn lease_from(m: &Message, server: Ipv4Addr, now: u64) -> Option<Lease> {
    let o = &m.options;
    let secs = o.lease_time.filter(|&s| s > 0)?;
    if !usable(m.yiaddr) {
        return None;
    }
    let prefix = match o.subnet_mask {
        Some(mask) => mask_prefix(mask)?,
        None => classful_prefix(m.yiaddr),
    };
    let times = (secs != u32::MAX).then(|| {
        let lease_ms = u64::from(secs) * 1000;
        // T1 < T2 < lease, or the defaults of RFC 2131 4.4.5 (1/2, 7/8).
        let mut t1 = o.renewal_time.map(|s| u64::from(s) * 1000).unwrap_or(lease_ms / 2);
        let mut t2 = o
            .rebinding_time
            .map(|s| u64::from(s) * 1000)
            .unwrap_or(lease_ms / 8 * 7);
        if t2 >= lease_ms || t2 == 0 {
            t2 = lease_ms / 8 * 7;
        }
        if t1 >= t2 || t1 == 0 {
            t1 = (lease_ms / 2).min(t2);
        }
        LeaseTimes {
            renew_at_ms: now.saturating_add(t1),
            rebind_at_ms: now.saturating_add(t2),
            expires_at_ms: now.saturating_add(lease_ms),
        }
    });
    Some(Lease {
        address: m.yiaddr,
        prefix,
        routers: o.routers.iter().copied().filter(|&r| usable(r)).collect(),
        dns_servers: o.dns_servers.iter().copied().filter(|&r| usable(r)).collect(),
        domain_name: o.domain_name.clone(),
        hostname: o.hostname.clone(),
        server,
        obtained_ms: now,
        times,
    })
}

#[cfg(test)]
mod tests;
