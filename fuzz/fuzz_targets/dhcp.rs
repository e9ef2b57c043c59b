//! The agent's DHCPv4 codec and client (agent/src/net/dhcp/): every byte
//! the client reads comes from the network, from anyone on the link.
//!
//! The first byte picks the mode:
//! - 0: the rest is one datagram for `message::parse`;
//! - 1 and up: a script of events for one client (seeded from the input):
//!   raw datagrams, replies built from the input that carry the client's
//!   transaction id and MAC (so OFFERs, ACKs and NAKs reach every state),
//!   timers after a chosen delay, and at the end a shutdown.
//!
//! Checked:
//! - whatever `parse` reads, `encode` writes back to at least 300 bytes
//!   that read back to the same message, option 53 first;
//! - every packet the client sends reads back as a request from its MAC in
//!   the transaction it is in; no timer is set in the past; a lease it
//!   applies is a usable unicast address with a prefix of 1 to 32 and times
//!   in order (T1 <= T2 < expiry); it drops only the lease it applied, and
//!   applies a new one only over a dropped one or the same address; its
//!   `lease()` is the lease applied and not dropped; after shutdown it holds
//!   no lease and does nothing.
#![no_main]

use basalt_fuzz::agent_net::dhcp::client::{Action, Client, ClientSettings, Lease, StateName, DEFAULT_BACKOFF};
use basalt_fuzz::agent_net::dhcp::message::{self, Message, MessageType, Op, Options, MIN_MESSAGE_LEN};
use basalt_fuzz::Input;
use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// Two servers, so replies from the wrong one are tried too.
const SERVERS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 0, 2, 2), Ipv4Addr::new(10, 0, 2, 4)];

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.byte() {
        0 => check_message(input.rest()),
        _ => check_client(&mut input),
    }
});

fn check_message(bytes: &[u8]) {
    let Ok(m) = message::parse(bytes) else {
        return;
    };
    let written = message::encode(&m);
    assert!(written.len() >= MIN_MESSAGE_LEN);
    if m.options.message_type.is_some() {
        assert_eq!(written[240], message::OPT_MESSAGE_TYPE, "option 53 first");
    }
    assert_eq!(message::parse(&written).as_ref(), Ok(&m));
}

fn u32_of(input: &mut Input) -> u32 {
    u32::from(input.u16()) << 16 | u32::from(input.u16())
}

/// A reply from the input: the client's xid and MAC (mostly), a message
/// type, an address near the server's, a server, a mask and lease times.
fn reply(input: &mut Input, xid: u32) -> Vec<u8> {
    let shape = input.byte();
    let kind = match shape % 4 {
        0 => MessageType::Offer,
        1 => MessageType::Ack,
        2 => MessageType::Nak,
        _ => MessageType::Inform,
    };
    let server = SERVERS[usize::from(shape >> 2 & 1)];
    let yiaddr = Ipv4Addr::new(10, 0, 2, input.byte());
    let mut chaddr = MAC;
    if shape & 0x80 != 0 {
        chaddr[5] ^= 1;
    }
    let lease = match input.byte() {
        0 => None,
        1 => Some(u32::MAX),
        n => Some(u32::from(n) * 4),
    };
    let opt_secs = |input: &mut Input| match input.byte() {
        0 => None,
        n => Some(u32::from(n) * 2),
    };
    let m = Message {
        op: Op::Reply,
        xid: if shape & 0x40 != 0 { xid ^ 1 } else { xid },
        secs: 0,
        flags: 0,
        ciaddr: Ipv4Addr::UNSPECIFIED,
        yiaddr,
        siaddr: server,
        giaddr: Ipv4Addr::UNSPECIFIED,
        chaddr,
        options: Options {
            message_type: Some(kind),
            server_id: (shape & 0x20 == 0).then_some(server),
            subnet_mask: Some(Ipv4Addr::from(u32::MAX << (input.byte() % 33).min(31))),
            routers: vec![server],
            dns_servers: vec![Ipv4Addr::new(10, 0, 2, 3)],
            lease_time: lease,
            renewal_time: opt_secs(input),
            rebinding_time: opt_secs(input),
            ..Options::default()
        },
    };
    message::encode(&m)
}

fn check_client(input: &mut Input) {
    let seed = u64::from(u32_of(input));
    let mut c = Client::new(ClientSettings {
        mac: MAC,
        hostname: Some("node-1".into()),
        seed,
        backoff: DEFAULT_BACKOFF,
    });
    let mut now: u64 = u64::from(input.u16());
    let mut applied: Option<Lease> = None;
    let mut deadline: Option<u64> = None;
    let out = c.start(now);
    check_actions(&c, now, &out, &mut applied, &mut deadline);
    for _ in 0..64 {
        if input.is_empty() {
            break;
        }
        let out = match input.byte() % 4 {
            0 => {
                let len = usize::from(input.u16() % 600);
                c.on_packet(now, input.bytes(len))
            }
            1 => {
                let bytes = reply(input, c.xid());
                c.on_packet(now, &bytes)
            }
            2 => {
                // Fire the timer that was set, or wake early or late.
                let jump = u64::from(input.u16()) * 100;
                now = match (input.byte() % 3, deadline) {
                    (0, Some(at)) => at.max(now),
                    (1, Some(at)) => at.saturating_sub(jump).max(now),
                    _ => now + jump,
                };
                c.on_timer(now)
            }
            _ => {
                now += u64::from(input.byte());
                c.on_timer(now)
            }
        };
        check_actions(&c, now, &out, &mut applied, &mut deadline);
    }
    let out = c.shutdown(now);
    check_actions(&c, now, &out, &mut applied, &mut deadline);
    assert_eq!(c.state(), StateName::Stopped);
    assert_eq!(applied, None, "shutdown dropped the lease");
    assert_eq!(c.on_timer(now + 1_000_000), []);
    assert!(c.on_packet(now, &reply(input, c.xid())).is_empty());
}

fn check_actions(c: &Client, now: u64, out: &[Action], applied: &mut Option<Lease>, deadline: &mut Option<u64>) {
    for a in out {
        match a {
            Action::Send { bytes, .. } => {
                let m = message::parse(bytes).expect("what the client sends parses");
                assert_eq!((m.op, m.chaddr, m.xid), (Op::Request, MAC, c.xid()));
                assert!(m.options.message_type.is_some());
            }
            Action::SetTimer { at_ms } => {
                assert!(*at_ms >= now, "timer at {at_ms} set at {now}");
                *deadline = Some(*at_ms);
            }
            Action::CancelTimer => *deadline = None,
            Action::Apply(lease) => {
                let ip = lease.address;
                assert!(!(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback()));
                assert!((1..=32).contains(&lease.prefix));
                if let Some(t) = lease.times {
                    assert!(
                        t.renew_at_ms <= t.rebind_at_ms && t.rebind_at_ms < t.expires_at_ms,
                        "{t:?}"
                    );
                    assert!(t.renew_at_ms >= now);
                }
                if let Some(old) = applied {
                    assert!(
                        old.address == lease.address && old.prefix == lease.prefix,
                        "applied over {old:?}"
                    );
                }
                *applied = Some(lease.clone());
            }
            Action::Drop(lease) => {
                assert_eq!(applied.as_ref(), Some(lease), "dropped a lease not applied");
                *applied = None;
            }
        }
    }
    assert_eq!(c.lease(), applied.as_ref());
}
