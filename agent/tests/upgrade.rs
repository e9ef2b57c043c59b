//! A/B upgrades on the host (docs/upgrades.md): the real agent on a fake
//! disk-booted node (support::disk), driven by basaltctl's upgrade client
//! and by raw `upgrade` / `upgrade-data` requests. The partitions are plain
//! files and the ESP a directory; what the loader does between boots (count
//! a try down) the test does by renaming the entry.

mod support;

use basalt_common::b64;
use basalt_common::bundle::Arch;
use basalt_common::command::{Command, CommandKind, UpgradeTerms};
use basalt_common::disk::boot_entry::SlotId;
use basalt_common::disk::slot::AREA_SIZE;
use basalt_common::envelope::SignedEnvelope;
use basalt_common::hex;
use basalt_common::keys::SigningKey;
use basalt_common::proto::{self, Response, MAX_UPGRADE_DATA};
use basalt_common::state_record::{StateRecord, UpgradeOutcome, UpgradeRecord};
use basaltctl::cli::CliError;
use basaltctl::client::Client;
use basaltctl::upgrade::{self, BundleFile, UpgradeFlags};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use support::disk::{Boot, Bundle, DiskNode, Slot, MIB};
use support::*;

const PIECE: usize = MAX_UPGRADE_DATA;

fn image_key() -> SigningKey {
    support::disk::image_key()
}

/// A on disk A (booted, version 1.0), B empty, one entry.
fn booted_a(tag: &str, slot_a: &Slot) -> DiskNode {
    DiskNode::start(
        tag,
        Boot {
            booted: Some(SlotId::A),
            version: "1.0",
            entries: &["basalt-1-a.efi"],
            slots: [Some(slot_a), None],
            record: None,
        },
    )
}

fn bundle_file(n: &DiskNode, name: &str, b: &Bundle) -> PathBuf {
    b.write(&n.node.scratch.path.join(name), |_| {})
}

/// `basaltctl upgrade`, through its library: the answer, or the agent's
/// error code and message.
fn ctl_upgrade(n: &TestNode, path: &Path, flags: UpgradeFlags) -> Result<Value, (String, String)> {
    ctl_upgrade_progress(n, path, flags).0
}

fn ctl_upgrade_progress(
    n: &TestNode,
    path: &Path,
    flags: UpgradeFlags,
) -> (Result<Value, (String, String)>, Vec<Value>) {
    let bundle = BundleFile::open(path).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let r = match upgrade::upgrade(&mut n.client(), &n.key, &bundle, flags, true, &mut out) {
        Ok((v, _)) => Ok(v),
        Err(CliError::Agent { code, message }) => Err((code, message)),
        Err(e) => panic!("basaltctl upgrade: {e}\n{}", n.stderr()),
    };
    let lines = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (r, lines)
}

fn ctl_rollback(n: &TestNode) -> Result<Value, (String, String)> {
    match upgrade::rollback(&mut n.client(), &n.key) {
        Ok(v) => Ok(v),
        Err(CliError::Agent { code, message }) => Err((code, message)),
        Err(e) => panic!("basaltctl rollback: {e}"),
    }
}

fn refused(r: Result<Value, (String, String)>, code: &str) -> String {
    match r {
        Err((c, message)) if c == code => message,
        other => panic!("expected {code}, got {other:?}"),
    }
}

fn flags(health_window_ms: u64) -> UpgradeFlags {
    UpgradeFlags {
        health_window_ms: Some(health_window_ms),
        ..UpgradeFlags::default()
    }
}

/// A signed `upgrade` command for `b`, for node `node`.
fn signed_upgrade(n: &TestNode, b: &Bundle, node: &str, allow_downgrade: bool) -> SignedEnvelope {
    let nonce = n.status()["nonce"].as_str().unwrap().to_string();
    let terms = UpgradeTerms {
        bundle: ring::digest::digest(&ring::digest::SHA256, b.manifest_bytes())
            .as_ref()
            .try_into()
            .unwrap(),
        reboot: false,
        allow_downgrade,
        health_window_ms: 1000,
    };
    let cmd = Command {
        kind: CommandKind::Upgrade,
        node: node.into(),
        nonce,
    };
    SignedEnvelope::sign(&n.key, cmd.to_upgrade_payload(&terms))
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

/// The raw `upgrade` request.
fn begin(client: &mut Client, envelope: &SignedEnvelope, b: &Bundle) -> Response {
    let fields = json!({
        "envelope": envelope.to_json(),
        "manifest": b64::encode(b.manifest_bytes()),
        "signature": b64::encode(b.signature()),
    });
    client.call("upgrade", obj(fields)).unwrap()
}

/// A raw `upgrade-data` request.
fn data(client: &mut Client, id: &str, offset: u64, bytes: &[u8]) -> Response {
    let fields = json!({"upgrade": id, "offset": offset, "data": b64::encode(bytes)});
    client.call("upgrade-data", obj(fields)).unwrap()
}

fn code_of(r: Response) -> String {
    expect_error(r).0
}

fn upgrades(n: &TestNode) -> Value {
    n.status()["upgrades"].clone()
}

/// Nothing signalled the stand-in init (no reboot).
fn init_running(n: &mut TestNode) -> bool {
    n.init.try_wait().unwrap().is_none()
}

#[test]
fn a_bundle_is_staged_booted_on_trial_blessed_and_raises_the_floor() {
    let key = image_key();
    let slot_a = Slot::build(&key, "1.0", 1);
    let mut n = booted_a("upgrade-stage", &slot_a);
    let b = Bundle::build(&key, SlotId::B, "2.0", 7);
    let path = bundle_file(&n, "b.bundle", &b);
    let r = ctl_upgrade(&n.node, &path, flags(1000)).unwrap();
    assert_eq!(
        r["staged"],
        json!({"slot": "ROOT-B", "version": "2.0", "version_seq": 7, "entry": "basalt-2-b+3.efi", "tries": 3}),
        "{r}"
    );
    assert_eq!(r["rebooting"], false);
    assert!(init_running(&mut n.node), "no reboot without --reboot");

    // The UKI on the ESP under its trial name, the staging file gone.
    assert_eq!(n.entries(), ["basalt-1-a.efi", "basalt-2-b+3.efi"]);
    assert!(std::fs::read(n.esp.join("basalt-2-b+3.efi")).unwrap() == b.uki);
    // The slot part where it goes: data and tree at the start, the area at
    // the end, the gap between untouched.
    let part = std::fs::read(n.partition(SlotId::B)).unwrap();
    let tree_end = b.slot.tree_end as usize;
    assert!(part[..tree_end] == *b.slot.data_and_tree(), "data and tree at offset 0");
    assert!(n.area(SlotId::B) == b.slot.area(), "the manifest area at the end");
    let gap = &part[tree_end..part.len() - AREA_SIZE as usize];
    assert!(gap.iter().all(|&x| x == 0), "nothing written in the gap");
    assert!(std::fs::read(n.partition(SlotId::A)).unwrap()[..tree_end] == *slot_a.data_and_tree());

    let u = upgrades(&n.node);
    assert_eq!(
        u["last"]["upgrade"],
        json!({"target": "ROOT-B", "version": "2.0", "version_seq": 7, "from_version": "1.0", "outcome": "staged"}),
        "{u}"
    );
    assert_eq!(
        u["last"]["image_version_floor"],
        Value::Null,
        "staging does not raise the floor"
    );
    assert_eq!(u["booted"], "ROOT-A");
    assert_eq!(u["transfer"], Value::Null);
    let (a, bs) = (&u["slots"][0], &u["slots"][1]);
    assert_eq!(
        (a["state"].as_str(), a["default"].as_bool()),
        (Some("booted"), Some(false)),
        "{u}"
    );
    assert_eq!(a["version"], "1.0");
    assert_eq!(bs["state"], "default, trying, 3 left", "{u}");
    assert_eq!(
        (bs["booted"].as_bool(), bs["default"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(bs["entry"], "basalt-2-b+3.efi");
    assert_eq!(bs["tries_left"], 3);
    assert_eq!(bs["version"], "2.0");
    assert_eq!(bs["root_hash"], hex::encode(&b.slot.root_hash));

    // The loader boots B and counts a try; B's agent runs its trial and,
    // healthy for the 1 s window (no config stored, no services), blesses it.
    n.reboot(SlotId::B, "2.0", &[("basalt-2-b+3.efi", "basalt-2-b+2-1.efi")]);
    assert!(
        n.node
            .stderr()
            .contains("ROOT-B 2.0 is on trial (2 tries left after this boot); it is blessed after 1 s healthy"),
        "{}",
        n.node.stderr()
    );
    let s = n.node.wait_status("the trial blessed", |s| {
        s["upgrades"]["last"]["upgrade"]["outcome"] == "blessed"
    });
    let u = &s["upgrades"];
    assert_eq!(u["last"]["image_version_floor"], 7, "{u}");
    assert_eq!(u["trial"], Value::Null);
    assert_eq!(n.entries(), ["basalt-1-a.efi", "basalt-2-b.efi"]);
    assert_eq!(u["slots"][1]["state"], "booted, default", "{u}");
    assert_eq!(u["slots"][0]["state"], "installed", "{u}");
    assert!(
        u["notice"]
            .as_str()
            .unwrap()
            .contains("blessed after its health window"),
        "{u}"
    );

    // Now the floor is 7: a bundle with version_seq 5 is a downgrade, and A
    // (the fallback) is left as it is.
    let older = Bundle::build(&key, SlotId::A, "1.5", 5);
    let path = bundle_file(&n, "a.bundle", &older);
    let message = refused(ctl_upgrade(&n.node, &path, flags(1000)), "downgrade");
    assert!(message.contains("below this node's image version floor 7"), "{message}");
    assert_eq!(n.entries(), ["basalt-1-a.efi", "basalt-2-b.efi"]);
    assert!(n.area(SlotId::A) == slot_a.area(), "A untouched by a refusal");

    // A signed --allow-downgrade starts it; a later request for the same
    // bundle without it may not resume it.
    let mut c = n.node.client();
    let started = expect_ok(begin(&mut c, &signed_upgrade(&n.node, &older, NODE, true), &older));
    let id = started["upgrade"].as_str().unwrap().to_string();
    expect_ok(data(&mut c, &id, 0, &older.stream()[..PIECE]));
    assert_eq!(
        code_of(begin(&mut c, &signed_upgrade(&n.node, &older, NODE, false), &older)),
        "downgrade"
    );
    let r = ctl_upgrade(
        &n.node,
        &path,
        UpgradeFlags {
            allow_downgrade: true,
            ..flags(1000)
        },
    )
    .unwrap();
    assert_eq!(r["staged"]["entry"], "basalt-3-a+3.efi", "{r}");
    assert_eq!(n.entries(), ["basalt-2-b.efi", "basalt-3-a+3.efi"]);
}

#[test]
fn refused_bundles_and_requests_change_nothing() {
    let key = image_key();
    let slot_a = Slot::build(&key, "1.0", 1);
    let slot_b = Slot::build(&key, "0.9", 2);
    let n = DiskNode::start(
        "upgrade-refuse",
        Boot {
            booted: Some(SlotId::A),
            version: "1.0",
            entries: &["basalt-1-a.efi", "basalt-0-b.efi"],
            slots: [Some(&slot_a), Some(&slot_b)],
            record: None,
        },
    );
    let before = n.entries();
    let unchanged = |what: &str| {
        assert_eq!(n.entries(), before, "{what}: the ESP as it was");
        assert!(
            n.area(SlotId::B) == slot_b.area(),
            "{what}: B's manifest area as it was"
        );
    };
    let good = Bundle::build(&key, SlotId::B, "2.0", 7);

    // A flipped byte in the manifest: its signature fails.
    let path = good.write(&n.node.scratch.path.join("manifest.bundle"), |bytes| {
        let at = bytes.windows(5).position(|w| w == b"\"2.0\"").unwrap();
        bytes[at + 3] = b'1';
    });
    let message = refused(ctl_upgrade(&n.node, &path, flags(1000)), "bad_bundle");
    assert!(message.contains("signature"), "{message}");
    unchanged("a flipped manifest byte");

    // Signed with another image key.
    let other_key = SigningKey::from_seed(&support::disk::OTHER_IMAGE_SEED).unwrap();
    let other = Bundle::build(&other_key, SlotId::B, "2.0", 7);
    let path = bundle_file(&n, "other.bundle", &other);
    let message = refused(ctl_upgrade(&n.node, &path, flags(1000)), "bad_bundle");
    assert!(message.contains("signature"), "{message}");
    unchanged("another image key");

    // Built for the slot this node runs from.
    let for_a = Bundle::build(&key, SlotId::A, "2.0", 7);
    let path = bundle_file(&n, "a.bundle", &for_a);
    let message = refused(ctl_upgrade(&n.node, &path, flags(1000)), "not_upgradable");
    assert!(message.contains("the slot this node runs from"), "{message}");
    unchanged("a bundle for the booted slot");

    // For another architecture.
    let foreign = Bundle::with_slot(&key, SlotId::B, "2.0", 7, good.slot.clone(), |m| {
        m.arch = if m.arch == Arch::X86_64 {
            Arch::Aarch64
        } else {
            Arch::X86_64
        };
    });
    let path = bundle_file(&n, "arch.bundle", &foreign);
    let message = refused(ctl_upgrade(&n.node, &path, flags(1000)), "not_upgradable");
    assert!(message.starts_with("the bundle is for"), "{message}");
    unchanged("a bundle for another architecture");

    // Signed for another node.
    let mut c = n.node.client();
    assert_eq!(
        code_of(begin(
            &mut c,
            &signed_upgrade(&n.node, &good, "another-node", false),
            &good
        )),
        "wrong_node"
    );
    unchanged("a request for another node");

    // A request whose signed digest names another manifest.
    let envelope = signed_upgrade(&n.node, &other, NODE, false);
    let (code, message) = expect_error(begin(&mut c, &envelope, &good));
    assert_eq!(code, "bad_bundle", "{message}");
    assert!(message.contains("the signed request names"), "{message}");
    unchanged("a request signed for another bundle");

    // A flipped byte in the UKI's second chunk: the first is written, the
    // second refused, and B is left empty, with no entry that boots it.
    let path = good.write(&n.node.scratch.path.join("uki.bundle"), |bytes| {
        bytes[good.parts_offset() + MIB as usize + 10] ^= 1;
    });
    let message = refused(ctl_upgrade(&n.node, &path, flags(1000)), "bad_bundle");
    assert!(message.contains("uki chunk 1 does not match"), "{message}");
    assert_eq!(n.entries(), ["basalt-1-a.efi", "basalt-b.efi.new"]);
    assert!(n.area(SlotId::B).iter().all(|&x| x == 0), "B reads as empty");
    assert_eq!(upgrades(&n.node)["slots"][1]["state"], "writing");

    // The good bundle resumes at that chunk; its request replayed is refused.
    let envelope = signed_upgrade(&n.node, &good, NODE, false);
    let r = expect_ok(begin(&mut c, &envelope, &good));
    assert_eq!(r["next"], MIB, "{r}");
    assert_eq!(code_of(begin(&mut c, &envelope, &good)), "bad_nonce");

    // Bundles whose every chunk matches their signed manifest, but whose
    // slot does not hold up once written: its own manifest area signed by
    // another key, a tree that does not match its data, a root hash other
    // than the bundle's. Each is refused after the read-back, and B is
    // left empty.
    let mut stale_tree = good.slot.clone();
    stale_tree.part[5000] ^= 1;
    let cases = [
        (
            "another key's slot",
            Bundle::with_slot(&key, SlotId::B, "2.0", 7, Slot::build(&other_key, "2.0", 9), |_| {}),
            "signature",
        ),
        (
            "a stale tree",
            Bundle::with_slot(&key, SlotId::B, "2.0", 7, stale_tree, |_| {}),
            "the data read back gives root hash",
        ),
        (
            "another root hash",
            Bundle::with_slot(&key, SlotId::B, "2.0", 7, good.slot.clone(), |m| {
                m.slot.root_hash[0] ^= 1
            }),
            "the slot's own manifest names root hash",
        ),
    ];
    for (what, bad, why) in cases {
        let path = bundle_file(&n, "bad-slot.bundle", &bad);
        let message = refused(ctl_upgrade(&n.node, &path, flags(1000)), "bad_bundle");
        assert!(message.contains(why), "{what}: {message}");
        assert_eq!(n.entries(), ["basalt-1-a.efi", "basalt-b.efi.new"], "{what}");
        assert!(n.area(SlotId::B).iter().all(|&x| x == 0), "{what}: B reads as empty");
        let u = upgrades(&n.node);
        assert_eq!(u["slots"][1]["state"], "empty", "{what}: {u}");
        assert_eq!(u["last"]["upgrade"], Value::Null, "{what}: nothing recorded");
    }

    let path = bundle_file(&n, "good.bundle", &good);
    let r = ctl_upgrade(&n.node, &path, flags(1000)).unwrap();
    assert_eq!(r["staged"]["entry"], "basalt-2-b+3.efi", "{r}");
    assert!(std::fs::read(n.esp.join("basalt-2-b+3.efi")).unwrap() == good.uki);
    assert_eq!(n.entries(), ["basalt-1-a.efi", "basalt-2-b+3.efi"]);
}

/// A booted, and the `upgrade` of 2.0 into B begun on connection `c`:
/// the node, the bundle, the connection and the answer.
fn begun(tag: &str) -> (DiskNode, Bundle, Client, Value) {
    let key = image_key();
    let n = booted_a(tag, &Slot::build(&key, "1.0", 1));
    let b = Bundle::build(&key, SlotId::B, "2.0", 7);
    let mut c = n.node.client();
    let r = expect_ok(begin(&mut c, &signed_upgrade(&n.node, &b, NODE, false), &b));
    (n, b, c, r)
}

#[test]
fn an_interrupted_transfer_resumes_at_the_last_checked_chunk() {
    let (n, b, c, r) = begun("upgrade-resume");
    {
        let mut c = c;
        assert_eq!(
            (r["next"].as_u64(), r["total"].as_u64()),
            (Some(0), Some(b.stream().len() as u64)),
            "{r}"
        );
        let id = r["upgrade"].as_str().unwrap().to_string();
        for i in 0..3 {
            let r = expect_ok(data(
                &mut c,
                &id,
                (i * PIECE) as u64,
                &b.stream()[i * PIECE..(i + 1) * PIECE],
            ));
            assert_eq!(r["next"], ((i + 1) * PIECE) as u64);
        }
        let u = upgrades(&n.node);
        assert_eq!(u["transfer"]["received"], 3 * PIECE as u64, "{u}");
        assert_eq!(u["slots"][1]["state"], "writing", "{u}");
        let message = refused(ctl_rollback(&n.node), "rollback_refused");
        assert!(message.contains("being written"), "{message}");
        // The connection drops here, part way into the slot part.
    }
    // A new request for the same bundle: from the first chunk not checked,
    // the slot part's first.
    let uki = b.uki.len() as u64;
    let mut c = n.node.client();
    let r = expect_ok(begin(&mut c, &signed_upgrade(&n.node, &b, NODE, false), &b));
    assert_eq!(r["next"], uki, "{r}");
    drop(c);
    let path = bundle_file(&n, "b.bundle", &b);
    let (r, progress) = ctl_upgrade_progress(&n.node, &path, flags(1000));
    assert_eq!(r.unwrap()["staged"]["entry"], "basalt-2-b+3.efi");
    // From the slot part on, which is one piece: from 0, the first line
    // would say 512 KiB.
    let total = b.stream().len() as u64;
    assert!(total - uki <= PIECE as u64);
    assert_eq!(progress.len(), 1, "{progress:?}");
    assert_eq!(progress[0]["progress"]["bytes"], total, "{progress:?}");
    assert_eq!(progress[0]["progress"]["done"], true);
    assert!(std::fs::read(n.esp.join("basalt-2-b+3.efi")).unwrap() == b.uki);
    assert!(n.area(SlotId::B) == b.slot.area());
}

#[test]
fn garbage_upgrade_data_is_refused_and_the_transfer_goes_on() {
    let (n, b, mut c, r) = begun("upgrade-garbage");
    let id = r["upgrade"].as_str().unwrap().to_string();
    let piece = &b.stream()[..PIECE];
    let (code, message) = expect_error(data(&mut c, &id, 4096, piece));
    assert_eq!(code, "no_upgrade");
    assert!(message.contains("expects offset 0"), "{message}");
    assert_eq!(code_of(data(&mut c, "0123456789abcdef", 0, piece)), "no_upgrade");
    assert_eq!(code_of(data(&mut c, &id, 0, &[])), "bad_request");
    assert_eq!(code_of(data(&mut c, &id, 0, &b.stream()[..PIECE + 1])), "bad_request");
    let raw = c.call(
        "upgrade-data",
        obj(json!({"upgrade": id, "offset": 0, "data": "no*base64"})),
    );
    assert_eq!(code_of(raw.unwrap()), "bad_request");
    // Binary frames: data twice, a payload where none belongs, one over the
    // frame cap (skipped by its declared length), a NUL that is not the magic.
    let binary = |c: &mut Client, op: &str, fields: Value, payload: &[u8]| {
        let rid = c.request_binary(op, obj(fields), payload).unwrap();
        c.response(&rid, op).unwrap()
    };
    let both = json!({"upgrade": id, "offset": 0, "data": b64::encode(&piece[..4096])});
    assert_eq!(
        code_of(binary(&mut c, "upgrade-data", both, &piece[..4096])),
        "bad_request"
    );
    assert_eq!(code_of(binary(&mut c, "status", json!({}), b"x")), "bad_request");
    let mut over = proto::BINARY_MAGIC.to_vec();
    over.extend_from_slice(&2u32.to_be_bytes());
    over.extend_from_slice(&(proto::MAX_FRAME as u32).to_be_bytes());
    over.extend_from_slice(b"{}");
    over.extend(std::iter::repeat_n(b'\n', proto::MAX_FRAME));
    c.send(&over).unwrap();
    assert_eq!(
        code_of(c.response(&Value::Null, "oversized").unwrap()),
        "frame_too_large"
    );
    c.send(b"\0{\"id\":1,\"op\":\"status\"}\n").unwrap();
    assert_eq!(code_of(c.response(&Value::Null, "NUL").unwrap()), "malformed_json");
    // More than the parts hold.
    let stream = b.stream();
    let mut at = 0;
    while stream.len() - at > PIECE {
        expect_ok(data(&mut c, &id, at as u64, &stream[at..at + PIECE]));
        at += PIECE;
    }
    let mut tail = stream[at..].to_vec();
    tail.push(0);
    assert_eq!(code_of(data(&mut c, &id, at as u64, &tail)), "no_upgrade");
    // None of it moved the transfer: the right bytes still stage it.
    let r = expect_ok(data(&mut c, &id, at as u64, &stream[at..]));
    assert_eq!(r["staged"]["entry"], "basalt-2-b+3.efi", "{r}");
    assert!(std::fs::read(n.esp.join("basalt-2-b+3.efi")).unwrap() == b.uki);
}

#[test]
fn rollback_needs_a_good_other_slot_and_reboots_into_it() {
    let key = image_key();
    let slot_b = Slot::build(&key, "0.9", 2);
    let mut n = booted_a("upgrade-rollback", &Slot::build(&key, "1.0", 1));
    let message = refused(ctl_rollback(&n.node), "rollback_refused");
    assert!(message.contains("no boot entry"), "{message}");

    // An entry, but nothing in the slot.
    std::fs::write(n.esp.join("basalt-2-b+3.efi"), "uki").unwrap();
    let message = refused(ctl_rollback(&n.node), "rollback_refused");
    assert!(message.contains("holds no image"), "{message}");

    // A slot whose data does not match its tree.
    slot_b.write_to(&n.partition(SlotId::B));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(n.partition(SlotId::B))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"x", 5000).unwrap();
    let message = refused(ctl_rollback(&n.node), "rollback_refused");
    assert!(message.contains("the data read back gives root hash"), "{message}");
    slot_b.write_to(&n.partition(SlotId::B));

    // Out of tries: marked bad.
    std::fs::rename(n.esp.join("basalt-2-b+3.efi"), n.esp.join("basalt-2-b+0-3.efi")).unwrap();
    let message = refused(ctl_rollback(&n.node), "rollback_refused");
    assert!(message.contains("marked bad"), "{message}");
    assert_eq!(upgrades(&n.node)["slots"][1]["state"], "bad");
    assert!(init_running(&mut n.node));

    // With tries left and a slot that verifies: blessed on top, and a reboot.
    std::fs::rename(n.esp.join("basalt-2-b+0-3.efi"), n.esp.join("basalt-2-b+3.efi")).unwrap();
    let r = ctl_rollback(&n.node).unwrap();
    assert_eq!(
        r["rollback"],
        json!({"slot": "ROOT-B", "version": "0.9", "entry": "basalt-3-b.efi",
               "root_hash": hex::encode(&slot_b.root_hash)}),
        "{r}"
    );
    assert_eq!(n.entries(), ["basalt-1-a.efi", "basalt-3-b.efi"]);
    wait_child(&mut n.node.init, TIMEOUT).expect("init was signalled to reboot");
}

#[test]
fn a_node_not_booted_from_a_disk_slot_is_not_upgradable() {
    let key = image_key();
    let n = DiskNode::start(
        "upgrade-noslot",
        Boot {
            booted: None,
            version: "1.0",
            entries: &["basalt-1-a.efi"],
            slots: [None, None],
            record: None,
        },
    );
    let u = upgrades(&n.node);
    assert_eq!(u["available"], false, "{u}");
    assert!(
        u["why_not"].as_str().unwrap().contains("did not boot from a disk slot"),
        "{u}"
    );
    let b = Bundle::build(&key, SlotId::B, "2.0", 7);
    let path = bundle_file(&n, "b.bundle", &b);
    let message = refused(ctl_upgrade(&n.node, &path, flags(1000)), "not_upgradable");
    assert!(message.contains("did not boot from a disk slot"), "{message}");
    refused(ctl_rollback(&n.node), "not_upgradable");
    assert_eq!(n.entries(), ["basalt-1-a.efi"]);
}

/// Both slots hold an image, STATE says 2.0 (version_seq 7) was staged
/// for ROOT-B from 1.0, and the node booted `booted` from `entries`.
fn after_staging_b(tag: &str, booted: SlotId, entries: &[&str], health_window_ms: u64) -> DiskNode {
    let key = image_key();
    let staged = UpgradeRecord {
        target: "ROOT-B".into(),
        version: "2.0".into(),
        version_seq: 7,
        from_version: "1.0".into(),
        health_window_ms,
        outcome: UpgradeOutcome::Staged,
    };
    DiskNode::start(
        tag,
        Boot {
            booted: Some(booted),
            version: if booted == SlotId::A { "1.0" } else { "2.0" },
            entries,
            slots: [Some(&Slot::build(&key, "1.0", 1)), Some(&Slot::build(&key, "2.0", 2))],
            record: Some(StateRecord {
                upgrade: Some(staged),
                ..StateRecord::default()
            }),
        },
    )
}

#[test]
fn a_trial_out_of_tries_is_reported_by_the_old_slot() {
    let n = after_staging_b(
        "upgrade-failed",
        SlotId::A,
        &["basalt-1-a.efi", "basalt-2-b+0-3.efi"],
        1000,
    );
    let u = upgrades(&n.node);
    assert_eq!(u["notice"], "upgrade to 2.0 failed after 3 tries; running 1.0", "{u}");
    assert_eq!(u["last"]["upgrade"]["outcome"], "failed", "{u}");
    assert_eq!(u["last"]["image_version_floor"], Value::Null, "{u}");
    assert_eq!(u["slots"][1]["state"], "bad", "{u}");
    assert_eq!(u["slots"][0]["state"], "booted, default", "{u}");
    assert_eq!(u["trial"], Value::Null);
    assert!(n.node.stderr().contains("upgrade to 2.0 failed after 3 tries"));
    // On STATE, for the next boot.
    let bytes = std::fs::read(&n.state).unwrap();
    let newest = (0..2)
        .filter_map(|i| {
            let at = basalt_common::state_record::slot_offset(i) as usize;
            bytes
                .get(at..)
                .and_then(|b| basalt_common::state_record::decode(b).ok())
        })
        .max_by_key(|s| s.seq)
        .unwrap();
    assert_eq!(newest.record.upgrade.unwrap().outcome, UpgradeOutcome::Failed);
}

#[test]
fn a_slot_on_trial_says_so_and_takes_no_upgrade() {
    let key = image_key();
    let n = after_staging_b(
        "upgrade-trial",
        SlotId::B,
        &["basalt-1-a.efi", "basalt-2-b+2-1.efi"],
        60_000,
    );
    let u = upgrades(&n.node);
    assert_eq!(u["booted"], "ROOT-B");
    assert_eq!(u["trial"]["entry"], "basalt-2-b+2-1.efi", "{u}");
    assert_eq!(u["slots"][1]["state"], "booted, default, trying, 2 left", "{u}");
    assert_eq!(u["slots"][1]["tries_left"], 2);
    assert_eq!(u["slots"][0]["state"], "installed", "{u}");
    // Until it is blessed or falls back, the other slot is its fallback.
    let b = Bundle::build(&key, SlotId::A, "3.0", 8);
    let path = bundle_file(&n, "a.bundle", &b);
    let message = refused(ctl_upgrade(&n.node, &path, flags(1000)), "not_upgradable");
    assert!(message.contains("ROOT-B is on trial"), "{message}");
    assert_eq!(n.entries(), ["basalt-1-a.efi", "basalt-2-b+2-1.efi"]);
    assert!(
        n.area(SlotId::A) != vec![0u8; AREA_SIZE as usize],
        "A still holds its image"
    );
}
