use super::message::{parse, DhcpError};
use super::*;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const OTHER_SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 4);
const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const HOUR_MS: u64 = 3_600_000;

fn client() -> Client {
    Client::new(ClientSettings {
        mac: MAC,
        hostname: Some("node-1".into()),
        seed: 42,
        backoff: DEFAULT_BACKOFF,
    })
}

/// A reply from the server in the style of QEMU's: mask, router, DNS, lease.
fn reply(xid: u32, kind: MessageType, yiaddr: Ipv4Addr, server: Ipv4Addr, lease_secs: u32) -> Message {
    Message {
        op: Op::Reply,
        xid,
        secs: 0,
        flags: 0,
        ciaddr: Ipv4Addr::UNSPECIFIED,
        yiaddr,
        siaddr: server,
        giaddr: Ipv4Addr::UNSPECIFIED,
        chaddr: MAC,
        options: Options {
            message_type: Some(kind),
            server_id: Some(server),
            subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            routers: vec![SERVER],
            dns_servers: vec![Ipv4Addr::new(10, 0, 2, 3)],
            lease_time: Some(lease_secs),
            ..Options::default()
        },
    }
}

fn bytes_of(m: &Message) -> Vec<u8> {
    message::encode(m)
}

/// The one packet among the actions, parsed, with where it goes.
fn sent(actions: &[Action]) -> (Destination, Message) {
    let sends: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, bytes } => Some((*to, parse(bytes).unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(sends.len(), 1, "{actions:?}");
    sends.into_iter().next().unwrap()
}

fn timer(actions: &[Action]) -> u64 {
    match actions.last() {
        Some(Action::SetTimer { at_ms }) => *at_ms,
        other => panic!("last action is not a timer: {other:?}"),
    }
}

fn assert_within(got: u64, want: u64, jitter: u64, what: &str) {
    assert!(
        got + jitter >= want && got <= want + jitter,
        "{what}: {got} is not {want} +- {jitter}"
    );
}

/// Drives a client from INIT to BOUND at time `t0`, with a lease of `secs`.
fn bound(secs: u32, t0: u64) -> (Client, Lease) {
    let mut c = client();
    c.start(t0);
    let offer = reply(c.xid(), MessageType::Offer, ADDR, SERVER, secs);
    c.on_packet(t0 + 10, &bytes_of(&offer));
    let ack = reply(c.xid(), MessageType::Ack, ADDR, SERVER, secs);
    let out = c.on_packet(t0 + 20, &bytes_of(&ack));
    let Some(Action::Apply(lease)) = out.first().cloned() else {
        panic!("{out:?}");
    };
    (c, lease)
}

#[test]
fn full_exchange() {
    let mut c = client();
    assert_eq!(c.state(), StateName::Init);
    let out = c.start(1_000);
    assert_eq!(c.state(), StateName::Selecting);
    let (to, discover) = sent(&out);
    assert_eq!(to, Destination::Broadcast);
    assert_eq!(discover.op, Op::Request);
    assert_eq!(discover.xid, c.xid());
    assert_eq!(discover.chaddr, MAC);
    assert_eq!(discover.flags, FLAG_BROADCAST);
    assert_eq!(discover.ciaddr, Ipv4Addr::UNSPECIFIED);
    let o = &discover.options;
    assert_eq!(o.message_type, Some(MessageType::Discover));
    assert_eq!(
        o.client_id.as_deref(),
        Some(&[1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56][..])
    );
    assert_eq!(o.hostname.as_deref(), Some("node-1"));
    assert_eq!(o.parameter_request_list, REQUESTED_OPTIONS);
    assert_eq!((o.requested_ip, o.server_id), (None, None));
    assert_within(timer(&out), 5_000, 1_000, "first DISCOVER retry");

    let xid = c.xid();
    let out = c.on_packet(1_500, &bytes_of(&reply(xid, MessageType::Offer, ADDR, SERVER, 3600)));
    assert_eq!(c.state(), StateName::Requesting);
    let (to, request) = sent(&out);
    assert_eq!(to, Destination::Broadcast);
    assert_eq!(request.xid, xid, "the REQUEST answers the OFFER's transaction");
    assert_eq!(request.options.message_type, Some(MessageType::Request));
    assert_eq!(request.options.requested_ip, Some(ADDR));
    assert_eq!(request.options.server_id, Some(SERVER));
    assert_eq!(request.ciaddr, Ipv4Addr::UNSPECIFIED);
    assert_within(timer(&out), 5_500, 1_000, "first REQUEST retry");

    let out = c.on_packet(2_000, &bytes_of(&reply(xid, MessageType::Ack, ADDR, SERVER, 3600)));
    assert_eq!(c.state(), StateName::Bound);
    let want = Lease {
        address: ADDR,
        prefix: 24,
        routers: vec![SERVER],
        dns_servers: vec![Ipv4Addr::new(10, 0, 2, 3)],
        domain_name: None,
        hostname: None,
        server: SERVER,
        obtained_ms: 2_000,
        times: Some(LeaseTimes {
            renew_at_ms: 2_000 + HOUR_MS / 2,
            rebind_at_ms: 2_000 + HOUR_MS / 8 * 7,
            expires_at_ms: 2_000 + HOUR_MS,
        }),
    };
    assert_eq!(
        out,
        [
            Action::Apply(want.clone()),
            Action::SetTimer {
                at_ms: 2_000 + HOUR_MS / 2
            }
        ]
    );
    assert_eq!(c.lease(), Some(&want));
}

#[test]
fn renews_at_t1() {
    let (mut c, lease) = bound(3600, 0);
    let t = lease.times.unwrap();
    let old_xid = c.xid();
    let out = c.on_timer(t.renew_at_ms);
    assert_eq!(c.state(), StateName::Renewing);
    let (to, req) = sent(&out);
    assert_eq!(to, Destination::Unicast(SERVER));
    assert_ne!(req.xid, old_xid, "renewing is a new transaction");
    assert_eq!(req.ciaddr, ADDR);
    assert_eq!(req.flags, 0);
    assert_eq!((req.options.requested_ip, req.options.server_id), (None, None));
    // Half the time to T2 (787.5 s, over the 60 s floor).
    assert_eq!(timer(&out), t.renew_at_ms + (t.rebind_at_ms - t.renew_at_ms) / 2);

    // No answer: retransmitted in the same transaction.
    let retry = c.on_timer(timer(&out));
    assert_eq!(sent(&retry).1.xid, req.xid);
    assert_eq!(c.state(), StateName::Renewing);

    let now = timer(&out) + 5;
    let out = c.on_packet(now, &bytes_of(&reply(req.xid, MessageType::Ack, ADDR, SERVER, 3600)));
    assert_eq!(c.state(), StateName::Bound);
    let renewed = c.lease().unwrap().clone();
    assert_eq!(renewed.obtained_ms, now);
    assert_eq!(renewed.times.unwrap().expires_at_ms, now + HOUR_MS);
    assert_eq!(
        out,
        [
            Action::Apply(renewed),
            Action::SetTimer {
                at_ms: now + HOUR_MS / 2
            }
        ],
        "the same address is not dropped first"
    );
}

#[test]
fn renewal_retries_respect_the_floor_and_t2() {
    // A 100 s lease: T1 50 s, T2 87.5 s. Half of 37.5 s is under the 60 s
    // floor, so the one retransmission waits until T2 itself.
    let (mut c, lease) = bound(100, 0);
    let t = lease.times.unwrap();
    let out = c.on_timer(t.renew_at_ms);
    assert_eq!(timer(&out), t.rebind_at_ms);
}

#[test]
fn rebinds_at_t2_and_takes_any_server() {
    let (mut c, lease) = bound(3600, 0);
    let t = lease.times.unwrap();
    let mut at = timer(&c.on_timer(t.renew_at_ms));
    while at < t.rebind_at_ms {
        at = timer(&c.on_timer(at));
    }
    let renew_xid = c.xid();
    let out = c.on_timer(at);
    assert_eq!(c.state(), StateName::Rebinding);
    let (to, req) = sent(&out);
    assert_eq!(to, Destination::Broadcast);
    assert_ne!(req.xid, renew_xid, "rebinding is a new transaction");
    assert_eq!(req.ciaddr, ADDR);
    assert_eq!(timer(&out), at + ((t.expires_at_ms - at) / 2).max(MIN_RENEW_RETRY_MS));

    // Another server's ACK is taken while rebinding, and becomes the lease's server.
    let now = at + 100;
    let out = c.on_packet(
        now,
        &bytes_of(&reply(req.xid, MessageType::Ack, ADDR, OTHER_SERVER, 600)),
    );
    assert_eq!(c.state(), StateName::Bound);
    assert_eq!(c.lease().unwrap().server, OTHER_SERVER);
    assert_eq!(timer(&out), now + 300_000);
}

#[test]
fn renewing_ignores_other_servers_and_other_addresses() {
    let (mut c, lease) = bound(3600, 0);
    c.on_timer(lease.times.unwrap().renew_at_ms);
    let xid = c.xid();
    let other = reply(xid, MessageType::Ack, ADDR, OTHER_SERVER, 3600);
    assert_eq!(c.on_packet(1, &bytes_of(&other)), []);
    let moved = reply(xid, MessageType::Ack, Ipv4Addr::new(10, 0, 2, 16), SERVER, 3600);
    assert_eq!(c.on_packet(1, &bytes_of(&moved)), []);
    let nak_other = reply(xid, MessageType::Nak, Ipv4Addr::UNSPECIFIED, OTHER_SERVER, 0);
    assert_eq!(c.on_packet(1, &bytes_of(&nak_other)), []);
    assert_eq!(c.state(), StateName::Renewing);
}

#[test]
fn expiry_drops_the_lease_and_starts_over() {
    let (mut c, lease) = bound(3600, 0);
    let t = lease.times.unwrap();
    let mut at = t.renew_at_ms;
    let mut sends = 0;
    let out = loop {
        let out = c.on_timer(at);
        if out.iter().any(|a| matches!(a, Action::Drop(_))) {
            break out;
        }
        sends += 1;
        at = timer(&out);
        assert!(at <= t.expires_at_ms, "no timer past expiry: {at}");
    };
    assert_eq!(at, t.expires_at_ms);
    assert!((3..20).contains(&sends), "{sends} renew and rebind requests");
    assert_eq!(out[0], Action::Drop(lease));
    let (to, discover) = sent(&out);
    assert_eq!(to, Destination::Broadcast);
    assert_eq!(discover.options.message_type, Some(MessageType::Discover));
    assert_eq!(c.state(), StateName::Selecting);
    assert_eq!(c.lease(), None);
}

#[test]
fn nak_while_requesting_goes_back_to_init() {
    let mut c = client();
    c.start(0);
    let xid = c.xid();
    c.on_packet(10, &bytes_of(&reply(xid, MessageType::Offer, ADDR, SERVER, 3600)));
    let nak = reply(xid, MessageType::Nak, Ipv4Addr::UNSPECIFIED, SERVER, 0);
    let out = c.on_packet(20, &bytes_of(&nak));
    assert_eq!(c.state(), StateName::Init);
    assert_eq!(out.len(), 1, "nothing was bound, so nothing is dropped: {out:?}");
    let at = timer(&out);
    assert_within(at, 20 + 4_000, 1_000, "wait after a NAK");
    let out = c.on_timer(at);
    let (_, discover) = sent(&out);
    assert_eq!(discover.options.message_type, Some(MessageType::Discover));
    assert_ne!(discover.xid, xid);
    assert_eq!(c.state(), StateName::Selecting);

    // A second NAK in a row waits longer.
    let xid = c.xid();
    c.on_packet(at + 10, &bytes_of(&reply(xid, MessageType::Offer, ADDR, SERVER, 3600)));
    let out = c.on_packet(at + 20, &bytes_of(&reply(xid, MessageType::Nak, ADDR, SERVER, 0)));
    assert_within(timer(&out), at + 20 + 8_000, 1_000, "wait after a second NAK");
}

#[test]
fn nak_while_renewing_drops_the_lease() {
    let (mut c, lease) = bound(3600, 0);
    let t1 = lease.times.unwrap().renew_at_ms;
    c.on_timer(t1);
    let nak = reply(c.xid(), MessageType::Nak, Ipv4Addr::UNSPECIFIED, SERVER, 0);
    let out = c.on_packet(t1 + 1, &bytes_of(&nak));
    assert_eq!(out[0], Action::Drop(lease));
    assert_eq!(c.state(), StateName::Init);
    assert_eq!(c.lease(), None);
}

#[test]
fn no_server_backs_off_to_the_cap() {
    let mut c = client();
    let mut now = 0;
    let mut out = c.start(now);
    let xid = c.xid();
    let mut delays = Vec::new();
    for _ in 0..8 {
        let at = timer(&out);
        delays.push(at - now);
        now = at;
        out = c.on_timer(now);
        let (_, m) = sent(&out);
        assert_eq!(m.options.message_type, Some(MessageType::Discover));
        assert_ne!(m.xid, xid, "each DISCOVER is a new transaction");
    }
    let want = [4_000, 8_000, 16_000, 32_000, 64_000, 64_000, 64_000, 64_000];
    for (got, want) in delays.iter().zip(want) {
        assert_within(*got, want, 1_000, "DISCOVER backoff");
    }
    assert!(
        delays.windows(2).any(|w| w[0] != w[1]),
        "jitter varies the delays: {delays:?}"
    );
}

#[test]
fn requests_are_retried_then_discovery_restarts() {
    let mut c = client();
    c.start(0);
    let xid = c.xid();
    let mut out = c.on_packet(10, &bytes_of(&reply(xid, MessageType::Offer, ADDR, SERVER, 3600)));
    for _ in 1..REQUEST_TRIES {
        out = c.on_timer(timer(&out));
        let (_, m) = sent(&out);
        assert_eq!((m.options.message_type, m.xid), (Some(MessageType::Request), xid));
        assert_eq!(c.state(), StateName::Requesting);
    }
    let at = timer(&out);
    out = c.on_timer(at);
    assert_eq!(sent(&out).1.options.message_type, Some(MessageType::Discover));
    assert_within(timer(&out), at + 4_000, 1_000, "backoff starts over");
}

#[test]
fn garbage_and_strangers_are_ignored() {
    let mut c = client();
    c.start(0);
    let xid = c.xid();
    let offer = reply(xid, MessageType::Offer, ADDR, SERVER, 3600);
    let mut wrong_xid = offer.clone();
    wrong_xid.xid ^= 1;
    let mut wrong_mac = offer.clone();
    wrong_mac.chaddr[5] ^= 1;
    let mut a_request = offer.clone();
    a_request.op = Op::Request;
    let mut untyped = offer.clone();
    untyped.options.message_type = None;
    let mut no_server = offer.clone();
    no_server.options.server_id = None;
    let ack_first = reply(xid, MessageType::Ack, ADDR, SERVER, 3600);
    let mut broadcast_addr = offer.clone();
    broadcast_addr.yiaddr = Ipv4Addr::BROADCAST;
    let mut zero_addr = offer.clone();
    zero_addr.yiaddr = Ipv4Addr::UNSPECIFIED;
    let mut noise = vec![0u8; 600];
    let mut rng = SplitMix64::new(7);
    let mut packets: Vec<Vec<u8>> = [
        wrong_xid,
        wrong_mac,
        a_request,
        untyped,
        no_server,
        ack_first,
        broadcast_addr,
        zero_addr,
    ]
    .iter()
    .map(bytes_of)
    .collect();
    for len in [0, 1, 239, 240, 300, 600] {
        rng.fill(&mut noise);
        packets.push(noise[..len].to_vec());
    }
    let mut truncated = bytes_of(&offer);
    truncated.truncate(242);
    assert_eq!(parse(&truncated), Err(DhcpError::Truncated { code: 53 }));
    packets.push(truncated);
    for p in &packets {
        assert_eq!(c.on_packet(5, p), [], "{p:?}");
        assert_eq!((c.state(), c.xid()), (StateName::Selecting, xid));
    }

    // Bound: an ACK or OFFER out of turn changes nothing either.
    let (mut c, lease) = bound(3600, 0);
    for kind in [MessageType::Offer, MessageType::Ack, MessageType::Nak] {
        assert_eq!(c.on_packet(50, &bytes_of(&reply(c.xid(), kind, ADDR, SERVER, 60))), []);
    }
    assert_eq!(c.lease(), Some(&lease));
}

#[test]
fn acks_that_grant_no_usable_lease_are_ignored() {
    let mut cases: Vec<(&str, Message)> = Vec::new();
    let base = |c: &Client| reply(c.xid(), MessageType::Ack, ADDR, SERVER, 3600);
    let mut c = client();
    c.start(0);
    c.on_packet(1, &bytes_of(&reply(c.xid(), MessageType::Offer, ADDR, SERVER, 3600)));
    let mut m = base(&c);
    m.options.lease_time = None;
    cases.push(("no lease time", m));
    let mut m = base(&c);
    m.options.lease_time = Some(0);
    cases.push(("a zero lease", m));
    let mut m = base(&c);
    m.options.subnet_mask = Some(Ipv4Addr::new(255, 0, 255, 0));
    cases.push(("a mask with holes", m));
    let mut m = base(&c);
    m.yiaddr = Ipv4Addr::new(10, 0, 2, 16);
    cases.push(("another address than offered", m));
    let mut m = base(&c);
    m.options.server_id = Some(OTHER_SERVER);
    cases.push(("another server", m));
    for (what, m) in cases {
        assert_eq!(c.on_packet(2, &bytes_of(&m)), [], "{what}");
        assert_eq!(c.state(), StateName::Requesting, "{what}");
    }
}

#[test]
fn release_on_shutdown() {
    let (mut c, lease) = bound(3600, 0);
    let out = c.shutdown(5_000);
    let (to, release) = sent(&out);
    assert_eq!(to, Destination::Unicast(SERVER));
    assert_eq!(release.options.message_type, Some(MessageType::Release));
    assert_eq!(release.options.server_id, Some(SERVER));
    assert_eq!(release.ciaddr, ADDR);
    assert!(release.options.parameter_request_list.is_empty());
    assert_eq!(out[1..], [Action::Drop(lease), Action::CancelTimer]);
    assert_eq!(c.state(), StateName::Stopped);
    assert_eq!(c.on_timer(HOUR_MS * 2), []);
    assert_eq!(c.start(0), []);

    // Without a lease there is nothing to release.
    let mut c = client();
    c.start(0);
    assert_eq!(c.shutdown(10), [Action::CancelTimer]);
}

#[test]
fn early_wakeups_and_infinite_leases() {
    let (mut c, lease) = bound(3600, 0);
    let t1 = lease.times.unwrap().renew_at_ms;
    assert_eq!(c.on_timer(t1 - 1), [Action::SetTimer { at_ms: t1 }]);
    assert_eq!(c.state(), StateName::Bound);

    let (mut c, lease) = bound(u32::MAX, 0);
    assert_eq!(lease.times, None);
    assert_eq!(c.on_timer(u64::MAX / 2), []);
    assert_eq!(c.state(), StateName::Bound);
}

#[test]
fn the_seed_decides_everything() {
    let run = |seed: u64| {
        let mut c = Client::new(ClientSettings {
            seed,
            ..client().settings
        });
        let mut out = c.start(0);
        out.extend(c.on_timer(timer(&out)));
        out
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn lease_times_table() {
    // (lease, T1 option, T2 option) -> (T1, T2) in seconds.
    type Case = (u32, Option<u32>, Option<u32>, u64, u64);
    let cases: &[Case] = &[
        (3600, None, None, 1800, 3150),
        (3600, Some(600), Some(1200), 600, 1200),
        (3600, Some(600), None, 600, 3150),
        (3600, None, Some(3000), 1800, 3000),
        (3600, Some(3000), Some(2000), 1800, 2000),
        (3600, Some(100), Some(4000), 100, 3150),
        (3600, Some(0), Some(0), 1800, 3150),
        (3600, None, Some(1000), 1000, 1000),
        (1, None, None, 0, 0),
    ];
    for &(lease, t1, t2, want_t1, want_t2) in cases {
        let mut m = reply(1, MessageType::Ack, ADDR, SERVER, lease);
        m.options.renewal_time = t1;
        m.options.rebinding_time = t2;
        let l = lease_from(&m, SERVER, 0).unwrap();
        let t = l.times.unwrap();
        let (got_t1, got_t2) = (t.renew_at_ms / 1000, t.rebind_at_ms / 1000);
        assert_eq!(
            (got_t1, got_t2),
            (want_t1, want_t2),
            "lease {lease} T1 {t1:?} T2 {t2:?}"
        );
        assert!(t.renew_at_ms <= t.rebind_at_ms && t.rebind_at_ms < t.expires_at_ms);
    }
}

#[test]
fn prefixes() {
    let masks: &[([u8; 4], Option<u8>)] = &[
        ([255, 255, 255, 0], Some(24)),
        ([255, 255, 255, 255], Some(32)),
        ([128, 0, 0, 0], Some(1)),
        ([255, 255, 252, 0], Some(22)),
        ([0, 0, 0, 0], None),
        ([255, 0, 255, 0], None),
        ([255, 255, 255, 1], None),
    ];
    for (mask, want) in masks {
        assert_eq!(mask_prefix(Ipv4Addr::from(*mask)), *want, "{mask:?}");
    }
    assert_eq!(classful_prefix(Ipv4Addr::new(10, 1, 2, 3)), 8);
    assert_eq!(classful_prefix(Ipv4Addr::new(172, 16, 0, 1)), 16);
    assert_eq!(classful_prefix(Ipv4Addr::new(192, 168, 0, 1)), 24);
}
