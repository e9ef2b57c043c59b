//! The channel under abuse (issue 5, part 3), in QEMU: random bytes down
//! the serial line, thousands of malformed frames (each answered with its
//! own error code, in order), overlong lines, half frames followed by a
//! hang-up on vsock and on serial, and connections that send nothing.
//! Afterwards the same agent process still answers, its memory is back
//! where it was (within a bound the design gives), the config generation
//! never moved, and a valid signed apply succeeds.
//!
//! Sizes follow `BASALT_ROBUSTNESS` (tests/src/robustness.rs); the long
//! profile is the issue's: 50 MiB, 10 000 frames, 1 000 connects.

use basalt_common::command::{Command, CommandKind};
use basalt_common::envelope::SignedEnvelope;
use basalt_common::keys::SigningKey;
use basalt_common::proto::{self, parse_response, Frame, FrameReader, Response, MAX_FRAME};
use basalt_tests::node::*;
use basalt_tests::robustness::{report, seed_from_env, Profile, SplitMix64};
use basalt_tests::*;
use serde_json::{json, Map, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);
const DEFAULT_SEED: u64 = 0x6261_7361_6c74_0003;
const MIB: usize = 1 << 20;
/// Unread output the agent holds for all channels together at most
/// (TOTAL_OUT_MAX in agent/src/server.rs).
const MAX_PENDING_OUT: usize = 3 * MIB;
/// The agent's peak RSS whatever unauthenticated clients send (docs/protocol.md).
const RSS_BOUND_KIB: u64 = 16 * 1024;
/// The longest console line the agent writes (MAX_CONSOLE_LINE in
/// agent/src/logging.rs), plus its prefix.
const CONSOLE_LINE_BOUND: usize = 1024 + 64;
/// What parsing one line may cost: the agent's JSON parser stops at
/// basalt_common::json::MAX_VALUES values, and the costliest value (a one-key
/// object: a B-tree leaf node of ~630 bytes plus allocator rounding) stays
/// under 1 KiB. Before that limit, a 1 MiB line of nested objects peaked at
/// ~137 MiB in the guest (docs/robustness.md).
const PARSE_BOUND: usize = basalt_common::json::MAX_VALUES * 1024;

struct Sizes {
    serial_garbage: usize,
    frames: usize,
    serial_frames: usize,
    overlong_vsock: usize,
    overlong_serial: usize,
    half_frames: usize,
    silent_connects: usize,
}

impl Sizes {
    fn for_profile(p: Profile) -> Sizes {
        Sizes {
            serial_garbage: p.pick(MIB, 50 * MIB),
            frames: p.pick(2_000, 10_000),
            serial_frames: p.pick(200, 1_000),
            overlong_vsock: p.pick(4, 16),
            overlong_serial: p.pick(1, 2),
            half_frames: p.pick(20, 100),
            silent_connects: p.pick(200, 1_000),
        }
    }
}

/// What a response said, as the reader thread saw it.
#[derive(Debug)]
enum Seen {
    Response(Response),
    /// A line that is not a response (noise on a serial line).
    Noise(Vec<u8>),
    /// A line longer than the reader's cap (never a response of ours).
    TooLarge,
}

/// Reads responses off `stream` in a thread until EOF.
fn reader(stream: UnixStream) -> Receiver<Seen> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stream = stream;
        let mut frames = FrameReader::new(8 * MIB);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            for f in frames.feed(&buf[..n]) {
                let seen = match f {
                    Frame::Line(l) => match parse_response(&l) {
                        Ok(r) => Seen::Response(r),
                        Err(_) => Seen::Noise(l),
                    },
                    Frame::TooLarge { .. } => Seen::TooLarge,
                    // The agent never sends one: noise, if it ever did.
                    Frame::Binary { header, .. } => Seen::Noise(header),
                };
                if tx.send(seen).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

fn code_of(r: &Response) -> &str {
    match r {
        Response::Ok { .. } => "ok",
        Response::Error { code, .. } => code,
    }
}

/// The parts of status that no garbage may change.
fn snapshot(s: &Value) -> Value {
    let k = Node::service(s, "kubelet");
    json!({
        "config": s["config"],
        "floor": s["generation_floor"],
        "kubelet_pid": k["pid"],
        "kubelet_restarts": k["restarts"],
    })
}

/// One malformed request line (no newline), the code it must get, and the
/// id the response must carry.
struct Bad {
    kind: &'static str,
    line: Vec<u8>,
    code: &'static str,
    id: Value,
}

struct Forge<'a> {
    node: &'a str,
    key: &'a SigningKey,
    other: &'a SigningKey,
    rng: SplitMix64,
    next_id: u64,
}

const KINDS: usize = 19;

impl Forge<'_> {
    fn word(&mut self, max: u64) -> String {
        let len = 1 + self.rng.below(max);
        (0..len).map(|_| (b'a' + self.rng.below(26) as u8) as char).collect()
    }

    fn env_line(&mut self, id: u64, op: &str, envelope: Value) -> Vec<u8> {
        line(&json!({"id": id, "op": op, "envelope": envelope}))
    }

    fn config(&mut self, node: &str, generation: u64) -> Vec<u8> {
        let hostname = self.word(12);
        serde_json::to_vec(&node_config(node, generation, &hostname, (20, 200))).unwrap()
    }

    fn command(&mut self, kind: CommandKind) -> Vec<u8> {
        let mut nonce = [0u8; 16];
        self.rng.fill(&mut nonce);
        Command {
            kind,
            node: self.node.to_string(),
            nonce: basalt_common::hex::encode(&nonce),
        }
        .to_payload()
    }

    /// The i-th malformed frame: kinds in turn, details from the generator.
    fn bad(&mut self, i: usize) -> Bad {
        self.next_id += 1;
        let n = self.next_id;
        let null = Value::Null;
        let pick = self.rng.below(8);
        let (kind, line, code, id): (&str, Vec<u8>, &str, Value) = match i % KINDS {
            0 => {
                let len = self.rng.below(200) as usize;
                let mut l = vec![b'#'];
                l.extend((0..len).map(|_| 0x20 + self.rng.below(0x5f) as u8));
                ("not-json", l, "malformed_json", null)
            }
            1 => {
                let mut junk = vec![0u8; 1 + self.rng.below(40) as usize];
                self.rng.fill(&mut junk);
                junk.iter_mut().filter(|b| **b == b'\n').for_each(|b| *b = 0xff);
                junk.push(0xff);
                let mut l = format!("{{\"id\":{n},\"op\":\"st").into_bytes();
                l.extend(junk);
                l.extend(b"\"}");
                ("invalid-utf8", l, "malformed_json", null)
            }
            2 => {
                let full = line(&json!({"id": n, "op": "status"}));
                let cut = 1 + self.rng.below(full.len() as u64 - 1) as usize;
                ("truncated", full[..cut].to_vec(), "malformed_json", null)
            }
            3 => (
                "duplicate-key",
                format!("{{\"id\":{n},\"op\":\"status\",\"op\":\"status\"}}").into_bytes(),
                "malformed_json",
                null,
            ),
            4 => {
                let depth = 129 + self.rng.below(20_000) as usize;
                let unit: &[u8] = if pick.is_multiple_of(2) { b"[" } else { b"{\"a\":" };
                ("deep-nesting", unit.repeat(depth), "malformed_json", null)
            }
            5 => {
                let docs = ["[]", "[1,2,3]", "42", "-1", "\"status\"", "null", "true", "{}"];
                let l = docs[pick as usize].as_bytes().to_vec();
                ("not-an-object", l, "bad_request", null)
            }
            6 => {
                let long = "x".repeat(proto::MAX_ID_LEN + 1);
                let docs = [
                    json!({"id": -1, "op": "status"}),
                    json!({"id": 1.5, "op": "status"}),
                    json!({"id": "", "op": "status"}),
                    json!({"id": long, "op": "status"}),
                    json!({"id": {}, "op": "status"}),
                    json!({"id": [n], "op": "status"}),
                    json!({"id": null, "op": "status"}),
                    json!({"op": "status"}),
                ];
                ("bad-id", line(&docs[pick as usize]), "bad_request", null)
            }
            7 => {
                let op = format!("x-{}", self.word(20));
                ("unknown-op", line(&json!({"id": n, "op": op})), "unknown_op", json!(n))
            }
            8 => {
                let doc = match pick % 3 {
                    0 => json!({"id": n}),
                    1 => json!({"id": n, "op": 5}),
                    _ => json!({"id": n, "op": null}),
                };
                ("bad-op", line(&doc), "bad_request", json!(n))
            }
            9 => {
                let field = format!("z{}", self.word(10));
                let doc = json!({"id": n, "op": "status", field: 1});
                ("unknown-field", line(&doc), "bad_request", json!(n))
            }
            10 => match pick % 3 {
                0 => {
                    let doc = json!({"id": n, "op": "logs", "source": "../../etc/passwd"});
                    ("logs-bad-source", line(&doc), "not_found", json!(n))
                }
                1 => {
                    let doc = json!({"id": n, "op": "logs", "source": "agent", "tail": proto::MAX_TAIL + 1});
                    ("logs-bad-tail", line(&doc), "bad_request", json!(n))
                }
                _ => {
                    let doc = json!({"id": n, "op": "logs", "source": "agent", "tail": 1, "since": 0});
                    ("logs-tail-and-since", line(&doc), "bad_request", json!(n))
                }
            },
            11 => {
                let good = SignedEnvelope::sign(self.key, self.config(self.node, 1)).to_json();
                let mut env = good.clone();
                match pick % 6 {
                    0 => env["payload"] = json!("not base64!"),
                    1 => env["signature"] = json!("AAAA"),
                    2 => env["key_id"] = json!("XYZ"),
                    3 => {
                        env.as_object_mut().unwrap().remove("signature");
                    }
                    4 => env = json!("an envelope"),
                    _ => env["extra"] = json!(1),
                }
                ("bad-envelope", self.env_line(n, "apply", env), "bad_envelope", json!(n))
            }
            12 => {
                let payload = self.config(self.node, 1_000_000 + n);
                let env = SignedEnvelope::sign(self.other, payload).to_json();
                ("unknown-key", self.env_line(n, "apply", env), "unknown_key", json!(n))
            }
            13 => {
                let mut env = SignedEnvelope::sign(self.key, self.config(self.node, 1_000_000 + n));
                let at = self.rng.below(env.payload.len() as u64) as usize;
                env.payload[at] ^= 1 + self.rng.below(255) as u8;
                (
                    "bad-signature",
                    self.env_line(n, "apply", env.to_json()),
                    "bad_signature",
                    json!(n),
                )
            }
            14 => {
                let payload = if pick.is_multiple_of(2) {
                    let mut p = vec![0u8; 1 + self.rng.below(300) as usize];
                    self.rng.fill(&mut p);
                    p
                } else {
                    br#"{"kind":"config","version":1}"#.to_vec()
                };
                let env = SignedEnvelope::sign(self.key, payload).to_json();
                (
                    "invalid-config",
                    self.env_line(n, "apply", env),
                    "invalid_config",
                    json!(n),
                )
            }
            15 => {
                if pick.is_multiple_of(2) {
                    let env = SignedEnvelope::sign(self.key, self.command(CommandKind::Poweroff)).to_json();
                    (
                        "command-as-config",
                        self.env_line(n, "apply", env),
                        "wrong_kind",
                        json!(n),
                    )
                } else {
                    let env = SignedEnvelope::sign(self.key, self.config(self.node, 1_000_000 + n)).to_json();
                    (
                        "config-as-command",
                        self.env_line(n, "reboot", env),
                        "wrong_kind",
                        json!(n),
                    )
                }
            }
            16 => {
                let env = SignedEnvelope::sign(self.key, self.config(self.node, 1)).to_json();
                (
                    "stale-generation",
                    self.env_line(n, "apply", env),
                    "stale_generation",
                    json!(n),
                )
            }
            17 => {
                let other_node = format!("node-{}", self.word(8));
                let env = SignedEnvelope::sign(self.key, self.config(&other_node, 1_000_000 + n)).to_json();
                ("wrong-node", self.env_line(n, "apply", env), "wrong_node", json!(n))
            }
            _ => {
                let (op, kind) = if pick.is_multiple_of(2) {
                    ("poweroff", CommandKind::Poweroff)
                } else {
                    ("reboot", CommandKind::Reboot)
                };
                let env = SignedEnvelope::sign(self.key, self.command(kind)).to_json();
                ("bad-nonce", self.env_line(n, op, env), "bad_nonce", json!(n))
            }
        };
        assert!(
            !line.contains(&b'\n') && !line.iter().all(u8::is_ascii_whitespace),
            "{kind}"
        );
        Bad { kind, line, code, id }
    }
}

/// Compact JSON, no newline.
fn line(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// Sends `bad` down `stream` from a thread while checking the responses in
/// order. Returns how many were answered as expected; panics on the first
/// that was not.
fn send_and_check(name: &str, stream: UnixStream, bad: Vec<Bad>, timeout: Duration) -> usize {
    let rx = reader(stream.try_clone().unwrap());
    let lines: Vec<Vec<u8>> = bad.iter().map(|b| b.line.clone()).collect();
    let mut w = stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for l in lines {
            w.write_all(&l)?;
            w.write_all(b"\n")?;
        }
        w.flush()
    });
    let deadline = Instant::now() + timeout;
    let mut good = 0;
    for (i, b) in bad.iter().enumerate() {
        let seen = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                // A serial line may carry noise (none was seen so far).
                Ok(Seen::Noise(_)) if name == "serial" => continue,
                Ok(Seen::Noise(l)) => panic!(
                    "{name}: frame {i} ({}): not a response: {:?}",
                    b.kind,
                    String::from_utf8_lossy(&l[..l.len().min(300)])
                ),
                Ok(seen) => break seen,
                Err(RecvTimeoutError::Timeout) => panic!("{name}: no response to frame {i} ({}) in time", b.kind),
                Err(RecvTimeoutError::Disconnected) => panic!("{name}: stream closed before frame {i} ({})", b.kind),
            }
        };
        let Seen::Response(r) = &seen else {
            panic!("{name}: frame {i} ({}): not a response: {seen:?}", b.kind)
        };
        assert_eq!(
            (code_of(r), r.id()),
            (b.code, &b.id),
            "{name}: frame {i} ({}) {:?}: {r:?}",
            b.kind,
            String::from_utf8_lossy(&b.line[..b.line.len().min(300)])
        );
        good += 1;
    }
    writer.join().unwrap().unwrap();
    let _ = stream.shutdown(std::net::Shutdown::Both);
    good
}

fn vsock_stream(node: &Node) -> UnixStream {
    let uds = node.vm.vm.vsock_uds_path().expect("vsock");
    basalt_qemu::vsock_connect(uds, AGENT_VSOCK_PORT, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{}: vsock: {e}", node.vm.name))
}

fn serial_stream(node: &Node) -> UnixStream {
    let sock = node.vm.vm.prov_socket_path().expect("prov socket");
    basalt_qemu::connect_prov(sock, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{}: serial: {e}", node.vm.name))
}

/// Waits on a serial reader until a response with `id` arrives, sending
/// the status request again every few seconds (bytes may be lost on a
/// flooded serial line). Returns the responses seen meanwhile, by code.
fn serial_sync(stream: &mut UnixStream, rx: &Receiver<Seen>, id: &str, timeout: Duration) -> Map<String, Value> {
    let mut counts = Map::new();
    let mut bump = |k: &str| {
        let c = counts.entry(k.to_string()).or_insert(json!(0));
        *c = json!(c.as_u64().unwrap() + 1);
    };
    let deadline = Instant::now() + timeout;
    loop {
        let mut req = b"\n".to_vec();
        req.extend(proto::request_line(&json!(id), "status", Map::new()));
        stream.write_all(&req).unwrap();
        let resend = Instant::now() + Duration::from_secs(5);
        while Instant::now() < resend {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Seen::Response(r)) if r.id() == &json!(id) => {
                    assert_eq!(code_of(&r), "ok", "serial sync: {r:?}");
                    return counts;
                }
                Ok(Seen::Response(r)) => bump(code_of(&r)),
                Ok(Seen::Noise(_)) => bump("noise"),
                Ok(Seen::TooLarge) => bump("too_large_response"),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => panic!("serial closed while waiting for {id}"),
            }
        }
        assert!(
            Instant::now() < deadline,
            "serial: no answer to {id} in {timeout:?}: {counts:?}"
        );
    }
}

#[test]
fn channel_abuse_leaves_the_agent_running_and_the_config_unchanged() {
    let build = Build::from_env();
    let profile = Profile::from_env();
    let sizes = Sizes::for_profile(profile);
    let seed = seed_from_env("BASALT_ABUSE_SEED", DEFAULT_SEED);
    let mut rng = SplitMix64::new(seed);
    let started = Instant::now();
    let node = Node::boot(&build, "abuse", "");
    let mut serial = node.serial();
    let r = ok(
        &node.vm,
        node.apply(
            &mut serial,
            &node.sign(&node_config(&node.id, 1, "abused", (100, 30_000))),
        ),
    );
    assert_eq!(r["generation"], 1);
    drop(serial);
    node.wait_status("kubelet running", WAIT, |s| {
        Node::service(s, "kubelet")["state"] == "running"
    });
    let other = SigningKey::from_seed(&[0xab; 32]).unwrap();
    let mut forge = Forge {
        node: &node.id,
        key: &node.key,
        other: &other,
        rng: SplitMix64::new(seed ^ 0x5eed),
        next_id: 0,
    };

    // Warm up: one of each malformed kind, and the ops a client uses, so
    // that the baseline has every code path these tests take paged in.
    let warm: Vec<Bad> = (0..KINDS * 2).map(|i| forge.bad(i)).collect();
    send_and_check("warm-up", vsock_stream(&node), warm, WAIT);
    let _ = node.status();
    let before = snapshot(&node.status());
    let agent_pid = node.pids("basalt-agent");
    assert_eq!(agent_pid.len(), 1);
    let rss_before = node.rss("basalt-agent");
    let mut phases: Vec<(String, String)> = Vec::new();
    // After each phase: nothing changed, the same agent, and its memory.
    let unchanged = |what: &str| -> Rss {
        let now = snapshot(&node.status());
        assert_eq!(now, before, "{what} changed the node");
        assert_eq!(node.pids("basalt-agent"), agent_pid, "{what}: the agent died");
        let rss = node.rss("basalt-agent");
        eprintln!("after {what}: agent {rss:?}");
        rss
    };
    let mut by_phase: Vec<(&str, Rss)> = Vec::new();

    // 1. Random bytes down the serial line, with a reader draining the
    //    answers; then a status request must get through on the same line.
    let t = Instant::now();
    let mut stream = serial_stream(&node);
    let rx = reader(stream.try_clone().unwrap());
    // The guest takes the bytes as fast as its UART does; a minute without
    // progress means it stopped.
    stream.set_write_timeout(Some(WAIT)).unwrap();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut sent = 0;
    while sent < sizes.serial_garbage {
        let n = chunk.len().min(sizes.serial_garbage - sent);
        rng.fill(&mut chunk[..n]);
        if let Err(e) = stream.write_all(&chunk[..n]) {
            panic!(
                "serial garbage: stuck after {sent} bytes: {e} (console: {})",
                node.vm.log.display()
            );
        }
        sent += n;
    }
    let counts = serial_sync(&mut stream, &rx, "after-garbage", Duration::from_secs(300));
    let _ = stream.shutdown(std::net::Shutdown::Both);
    drop(stream);
    let secs = t.elapsed().as_secs_f64();
    let kib_s = sent as f64 / 1024.0 / secs;
    eprintln!("serial garbage: {sent} bytes in {secs:.1} s ({kib_s:.0} KiB/s), answers {counts:?}");
    phases.push(("serial_garbage_bytes".into(), sent.to_string()));
    phases.push(("serial_kib_per_s".into(), format!("{kib_s:.0}")));
    by_phase.push(("serial", unchanged("serial garbage")));

    // 2. Malformed frames, each answered in order with its own code: most
    //    over vsock, some over serial.
    let t = Instant::now();
    let bad: Vec<Bad> = (0..sizes.frames).map(|i| forge.bad(i)).collect();
    let mut by_kind = std::collections::BTreeMap::<&str, usize>::new();
    for b in &bad {
        *by_kind.entry(b.kind).or_default() += 1;
    }
    let answered = send_and_check("vsock", vsock_stream(&node), bad, Duration::from_secs(600));
    let serial_bad: Vec<Bad> = (0..sizes.serial_frames)
        .map(|i| forge.bad(i))
        .filter(|b| b.line.len() < 4096)
        .collect();
    let serial_n = serial_bad.len();
    let mut stream = serial_stream(&node);
    stream.write_all(b"\n").unwrap();
    let serial_answered = send_and_check("serial", stream, serial_bad, Duration::from_secs(600));
    eprintln!(
        "malformed frames: {answered} over vsock, {serial_answered} over serial in {:.1} s; kinds {by_kind:?}",
        t.elapsed().as_secs_f64()
    );
    assert_eq!((answered, serial_answered), (sizes.frames, serial_n));
    phases.push(("frames".into(), (answered + serial_answered).to_string()));
    by_phase.push(("frames", unchanged("malformed frames")));

    // 3. Overlong lines: at the cap (answered as JSON), one byte over, and
    //    several MiB; and frames at the cap that expand most when parsed.
    let t = Instant::now();
    let mut overlong = Vec::new();
    let mut at_cap = vec![b'#'];
    at_cap.resize(MAX_FRAME, b'a');
    overlong.push(Bad {
        kind: "at-cap",
        line: at_cap,
        code: "malformed_json",
        id: Value::Null,
    });
    // Valid JSON at the cap, as dense in values as JSON gets: the agent
    // parses a line before it knows it is a request, and these expand the
    // most (docs/robustness.md, "peak memory"). Each holds far more than the
    // parser's value limit, so each is refused as malformed_json.
    let nested_unit = format!(",{}0{}", r#"{"":"#.repeat(120), "}".repeat(120)).into_bytes();
    let nested = [&b"["[..], &nested_unit[1..]].concat();
    for (kind, prefix, unit, suffix) in [
        (
            "at-cap-zeros",
            &br#"{"id":1,"op":"status","pad":[0"#[..],
            &b",0"[..],
            &b"]}"[..],
        ),
        ("at-cap-empty-arrays", b"[[]", b",[]", b"]"),
        ("at-cap-one-element-arrays", b"[[0]", b",[0]", b"]"),
        ("at-cap-one-key-objects", br#"[{"a":0}"#, br#",{"a":0}"#, b"]"),
        // Objects nested 120 deep (serde_json stops at 128): one map node
        // for every 5 bytes, the most this representation costs per byte.
        ("at-cap-nested-objects", &nested[..], &nested_unit[..], b"]"),
    ] {
        let mut l = prefix.to_vec();
        while l.len() + unit.len() + suffix.len() <= MAX_FRAME {
            l.extend(unit);
        }
        l.extend(suffix);
        overlong.push(Bad {
            kind,
            line: l,
            code: "malformed_json",
            id: Value::Null,
        });
    }
    let mut too_large = Vec::new();
    for i in 0..sizes.overlong_vsock {
        let len = MAX_FRAME + 1 + i * (MAX_FRAME / 2) + rng.below(4096) as usize;
        too_large.push(len);
        let mut l = vec![0u8; len];
        rng.fill(&mut l);
        l.iter_mut().filter(|b| **b == b'\n').for_each(|b| *b = b'{');
        overlong.push(Bad {
            kind: "overlong",
            line: l,
            code: "frame_too_large",
            id: Value::Null,
        });
    }
    let vsock_overlong = overlong.len();
    assert_eq!(
        send_and_check("vsock", vsock_stream(&node), overlong, Duration::from_secs(600)),
        vsock_overlong
    );
    let serial_overlong: Vec<Bad> = (0..sizes.overlong_serial)
        .map(|i| {
            let mut l = vec![b'x'; MAX_FRAME + 1 + i * 1000];
            l[0] = b'{';
            Bad {
                kind: "overlong",
                line: l,
                code: "frame_too_large",
                id: Value::Null,
            }
        })
        .collect();
    let mut stream = serial_stream(&node);
    stream.write_all(b"\n").unwrap();
    assert_eq!(
        send_and_check("serial", stream, serial_overlong, Duration::from_secs(600)),
        sizes.overlong_serial
    );
    eprintln!(
        "overlong: {vsock_overlong} over vsock (largest {} bytes), {} over serial in {:.1} s",
        too_large.iter().max().unwrap_or(&0),
        sizes.overlong_serial,
        t.elapsed().as_secs_f64()
    );
    phases.push(("overlong".into(), (vsock_overlong + sizes.overlong_serial).to_string()));
    by_phase.push(("overlong", unchanged("overlong lines")));

    // 4. Half a frame, then hang up. Over vsock the connection's partial
    //    line goes with it, large or small.
    let t = Instant::now();
    for i in 0..sizes.half_frames {
        let mut s = vsock_stream(&node);
        let full = line(&json!({"id": i, "op": "status"}));
        let half = if i.is_multiple_of(2) {
            full[..1 + rng.below(full.len() as u64 - 1) as usize].to_vec()
        } else {
            let mut l = br#"{"id":1,"op":"status","pad":""#.to_vec();
            l.resize(l.len() + 256 * 1024 + rng.below(640 * 1024) as usize, b'p');
            l
        };
        s.write_all(&half).unwrap();
        drop(s);
    }
    let s = node.status();
    assert_eq!(snapshot(&s), before);
    // Over serial there is no connection to end: the guest's UART never
    // learns that the host client went away, so the partial line waits for
    // the next client. A client that starts with a newline, as the protocol
    // says and basaltctl does, costs it one error response and is answered.
    let mut s = serial_stream(&node);
    s.write_all(br#"{"id":"half","op":"apply","envelope":{"payload":"AAAA"#)
        .unwrap();
    drop(s);
    let mut serial = node.serial();
    let r = call(&mut serial, "status", Map::new());
    assert_eq!(snapshot(&ok(&node.vm, r)), before);
    drop(serial);
    // A client that does not start with a newline: the agent drops a partial
    // serial line after 2 s without a byte (agent/src/server.rs), so once
    // that has happened the next client's first request is answered.
    // Only a drop after this half line counts: an earlier one (a flood
    // line that stalled for 2 s on a loaded host) says nothing about it.
    let from = node.vm.vm.console_len();
    let mut s = serial_stream(&node);
    s.write_all(br#"{"id":"half-2","op":"sta"#).unwrap();
    drop(s);
    node.vm
        .expect_after("bytes of an unfinished request after 2 s without a newline", from, WAIT);
    let mut s = serial_stream(&node);
    let rx = reader(s.try_clone().unwrap());
    s.write_all(&proto::request_line(&json!("no-resync-1"), "status", Map::new()))
        .unwrap();
    let first_request = "answered";
    let deadline = Instant::now() + WAIT;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Seen::Response(r)) if r.id() == &json!("no-resync-1") => {
                assert_eq!(code_of(&r), "ok", "{r:?}");
                break;
            }
            Ok(_) => {}
            Err(e) => panic!(
                "the first request after a stale half line was not answered: {e:?}\n{}",
                node.vm.console()
            ),
        }
    }
    // The reader thread holds a clone: shut the socket down so QEMU sees
    // the client go and serves the next one.
    let _ = s.shutdown(std::net::Shutdown::Both);
    drop(s);
    eprintln!(
        "half frames: {} over vsock, 2 over serial in {:.1} s; a client's first request without a leading newline is {first_request}",
        sizes.half_frames,
        t.elapsed().as_secs_f64()
    );
    phases.push(("half_frames".into(), (sizes.half_frames + 2).to_string()));
    phases.push(("serial_first_request_without_resync".into(), first_request.into()));
    by_phase.push(("half", unchanged("half frames")));

    // 5. Connections that send nothing and hang up, 50 at a time (more
    //    than the agent's 16, so its eviction of the oldest runs too).
    let t = Instant::now();
    let mut done = 0;
    while done < sizes.silent_connects {
        let batch = 50.min(sizes.silent_connects - done);
        let open: Vec<UnixStream> = (0..batch).map(|_| vsock_stream(&node)).collect();
        drop(open);
        done += batch;
    }
    eprintln!("silent connects: {done} in {:.1} s", t.elapsed().as_secs_f64());
    phases.push(("silent_connects".into(), done.to_string()));
    by_phase.push(("silent", unchanged("silent connections")));

    // Afterwards: the same agent, memory back within the bound, nothing
    // changed, no zombies; and a valid signed apply goes through.
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = node.rss("basalt-agent");
    assert_eq!(rss_after.pid, rss_before.pid, "the same agent process");
    let procs = node.hands("procs");
    assert_eq!(procs["zombies"], 0, "{procs}");
    let mut serial = node.serial();
    let r = ok(
        &node.vm,
        node.apply(
            &mut serial,
            &node.sign(&node_config(&node.id, 2, "still-here", (100, 30_000))),
        ),
    );
    assert_eq!(r["generation"], 2);
    let s = node.status();
    assert_eq!(s["config"]["generation"], 2);
    assert_eq!(s["config"]["hostname"], "still-here");
    assert_eq!(node.pids("basalt-agent"), agent_pid);

    // The bounds (docs/robustness.md, "Channel abuse"). After: once the
    // abusive connections are gone the agent holds nothing of theirs, so
    // its heap may grow by less than one frame cap; at the long profile's
    // ~210 000 requests a leak of 5 bytes per request would exceed it.
    let leak_bound_kib = (MAX_FRAME / 1024) as u64;
    assert!(
        rss_after.anon <= rss_before.anon + leak_bound_kib,
        "the agent's heap grew from {} to {} KiB (bound {leak_bound_kib} KiB more); by phase: {by_phase:?}",
        rss_before.anon,
        rss_after.anon
    );
    // Peak: one channel with data at a time here (plus the serial port),
    // each holding at most a line in progress and its unread output; and
    // one frame being parsed into a serde_json::Value, which the parser's
    // value limit bounds (PARSE_BOUND).
    let peak_bound_kib = rss_before.hwm + ((2 * (MAX_FRAME + MAX_PENDING_OUT) + PARSE_BOUND) / 1024) as u64;
    assert!(
        rss_after.hwm <= peak_bound_kib,
        "peak {} KiB over the bound {peak_bound_kib} KiB; by phase: {by_phase:?}",
        rss_after.hwm
    );
    let anon_growth = rss_after.anon as i64 - rss_before.anon as i64;
    let rss_growth = rss_after.rss as i64 - rss_before.rss as i64;
    let mut fields = vec![
        ("agent_alive", "true".to_string()),
        ("generation_unchanged", "true".into()),
        ("apply_after", "ok".into()),
        ("rss_before_kib", rss_before.rss.to_string()),
        ("rss_after_kib", rss_after.rss.to_string()),
        ("anon_before_kib", rss_before.anon.to_string()),
        ("anon_after_kib", rss_after.anon.to_string()),
        ("hwm_before_kib", rss_before.hwm.to_string()),
        ("hwm_after_kib", rss_after.hwm.to_string()),
        ("leak_bound_kib", leak_bound_kib.to_string()),
        ("peak_bound_kib", peak_bound_kib.to_string()),
        ("seed", format!("{seed:#x}")),
        ("wall_s", format!("{:.0}", started.elapsed().as_secs_f64())),
    ];
    let phase_fields: Vec<(&str, String)> = phases.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    fields.extend(phase_fields);
    let anon_by_phase: Vec<String> = by_phase.iter().map(|(p, r)| format!("{p}:{}", r.anon)).collect();
    let hwm_by_phase: Vec<String> = by_phase.iter().map(|(p, r)| format!("{p}:{}", r.hwm)).collect();
    fields.push(("anon_by_phase_kib", anon_by_phase.join(",")));
    fields.push(("hwm_by_phase_kib", hwm_by_phase.join(",")));
    report(&build, "abuse", &fields);
    eprintln!("rss growth {rss_growth} KiB, anon growth {anon_growth} KiB");
}

/// Issue 8 in QEMU: output nobody reads on 16 connections at once, client
/// text a few hundred KB long, a nonce that another client tries to push
/// out, and an apply that fails on a full /var. The agent's peak RSS stays
/// under 16 MiB, no console line grows with the client's text, the nonce
/// stays good, and the failed apply leaves files, hostname, generation and
/// services as they were.
#[test]
fn pressure_from_clients_is_bounded_and_a_failed_apply_changes_nothing() {
    let build = Build::from_env();
    let profile = Profile::from_env();
    let rounds = profile.pick(1, 3);
    let node = Node::boot(&build, "pressure", "");
    let mut serial = node.serial();
    let cfg1 = node_config(&node.id, 1, "pressed", (100, 30_000));
    ok(&node.vm, node.apply(&mut serial, &node.sign(&cfg1)));
    drop(serial);
    node.wait_status("kubelet running", WAIT, |s| {
        Node::service(s, "kubelet")["state"] == "running"
    });

    // Client text of 200 KB: an op name, an unknown key, a duplicate key, a
    // log source. Each answer and each console line stays short.
    let big = "o".repeat(200_000);
    let lines = [
        format!(r#"{{"id":1,"op":"{big}"}}"#),
        format!(r#"{{"id":2,"op":"status","{big}":true}}"#),
        format!(r#"{{"id":3,"op":"status","{big}":1,"{big}":2}}"#),
        format!(r#"{{"id":4,"op":"logs","source":"{big}"}}"#),
    ];
    let mut vsock = node.vsock();
    for l in &lines {
        vsock.send(format!("{l}\n").as_bytes()).unwrap();
        let reply = vsock.read_line("a response", Instant::now() + WAIT, &mut 0).unwrap();
        let r = parse_response(&reply).unwrap();
        let (code, message) = err_code(&r);
        assert!(message.len() <= 400, "{code}: a {}-byte message", message.len());
        assert!(message.contains("…(+"), "{code}: {message}");
    }
    node.vm.expect("rejected logs", WAIT);
    let console = node.vm.console();
    let longest = console.lines().map(str::len).max().unwrap_or(0);
    assert!(longest <= CONSOLE_LINE_BOUND, "a {longest}-byte console line");

    // 16 connections pipeline `logs` requests and never read.
    let request = b"{\"id\":1,\"op\":\"logs\",\"source\":\"agent\",\"tail\":10000}\n";
    let batch: Vec<u8> = request
        .iter()
        .copied()
        .cycle()
        .take(64 * 1024 / request.len() * request.len())
        .collect();
    let mut peak = 0;
    for round in 0..rounds {
        let mut floods: Vec<UnixStream> = (0..16).map(|_| vsock_stream(&node)).collect();
        for f in &mut floods {
            f.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
            // As much as the socket takes: the agent stops reading once its answers pile up.
            let _ = f.write_all(&batch);
        }
        let s = node.status();
        assert_eq!(s["config"]["generation"], 1, "round {round}");
        peak = node.rss("basalt-agent").hwm;
        eprintln!("flood round {round}: agent VmHWM {peak} KiB");
        assert!(
            peak < RSS_BOUND_KIB,
            "round {round}: agent peak RSS {peak} KiB, bound {RSS_BOUND_KIB} KiB"
        );
        drop(floods);
    }

    // A nonce held on one connection survives 64 status calls on another.
    let mut a = node.vsock();
    let nonce = ok(&node.vm, call(&mut a, "status", Map::new()))["nonce"]
        .as_str()
        .unwrap()
        .to_string();
    let mut b = node.vsock();
    for _ in 0..64 {
        ok(&node.vm, call(&mut b, "status", Map::new()));
    }

    // /var full: an apply that writes there fails, and nothing changes.
    let before = node.status();
    let kubelet = Node::service(&before, "kubelet");
    let filled = node.hands("fill /var/fill");
    assert!(filled["filled"].as_u64().is_some(), "{filled}");
    let mut cfg2 = node_config(&node.id, 2, "changed", (100, 30_000));
    cfg2["files"] = json!([
        {"path": "/var/lib/kubelet/config.yaml", "mode": "0644", "contents": "changed\n".repeat(4096)},
        {"path": "/var/lib/new-file", "mode": "0644", "contents": "new"}
    ]);
    let r = node.apply(&mut node.vsock(), &node.sign(&cfg2));
    let (code, message) = err_code(&r);
    assert_eq!(code, "apply_failed", "{message}");
    let after = node.status();
    assert_eq!(after["config"], before["config"], "the config in force");
    assert_eq!(after["generation_floor"], 1);
    let k = Node::service(&after, "kubelet");
    assert_eq!(
        (&k["pid"], &k["restarts"]),
        (&kubelet["pid"], &kubelet["restarts"]),
        "kubelet untouched"
    );
    assert_eq!(node.hands("hostname")["hostname"], "pressed");
    assert_eq!(
        node.hands("read /var/lib/kubelet/config.yaml")["contents"],
        "kind: KubeletConfiguration\n"
    );
    assert_eq!(node.hands("read /var/lib/new-file")["contents"], Value::Null);
    node.hands("unlink /var/fill");
    let r = ok(&node.vm, node.apply(&mut node.vsock(), &node.sign(&cfg2)));
    assert_eq!(r["generation"], 2);
    assert_eq!(node.hands("hostname")["hostname"], "changed");

    // The nonce fetched before all that still works: a signed poweroff.
    let cmd = Command {
        kind: CommandKind::Poweroff,
        node: node.id.clone(),
        nonce,
    };
    let mut fields = Map::new();
    fields.insert(
        "envelope".into(),
        SignedEnvelope::sign(&node.key, cmd.to_payload()).to_json(),
    );
    ok(&node.vm, call(&mut a, "poweroff", fields));
    node.vm.expect_exit(WAIT);
    report(
        &build,
        "pressure",
        &[
            ("flood_rounds", rounds.to_string()),
            ("agent_peak_rss_kib", peak.to_string()),
            ("rss_bound_kib", RSS_BOUND_KIB.to_string()),
            ("longest_console_line", longest.to_string()),
            ("var_filled_bytes", filled["filled"].to_string()),
        ],
    );
}
