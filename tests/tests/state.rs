//! The node remembers (issue 12), in QEMU: a second virtio disk carries a
//! GPT partition named STATE, as the disk layout's STATE partition does.
//! Reboots are real (the guest reboots, QEMU exits, the same disk boots
//! again); power cuts are SIGKILL to QEMU in the middle of applies.

use basalt_common::command::CommandKind;
use basalt_common::state_record::{self, slot_offset};
use basalt_tests::node::*;
use basalt_tests::robustness::{report, seed_from_env, Profile, SplitMix64};
use basalt_tests::*;
use serde_json::{json, Map, Value};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);
const DEFAULT_SEED: u64 = 0x6261_7361_6c74_0012;

fn with_disk(disk: PathBuf) -> impl Fn(basalt_qemu::VmConfig) -> basalt_qemu::VmConfig {
    move |cfg| cfg.writable_disk(&disk)
}

fn config(node: &Node, generation: u64) -> Value {
    let mut c = node_config(&node.id, generation, &format!("gen-{generation}"), (100, 30_000));
    c["files"] = json!([
        {"path": "/var/lib/kubelet/config.yaml", "mode": "0644", "contents": "kind: KubeletConfiguration\n"},
        {"path": "/var/lib/basalt-test/generation", "mode": "0644", "contents": generation.to_string()}
    ]);
    c
}

use basalt_common::proto::Response;

fn kubelet_running(node: &Node) -> Value {
    node.wait_status("kubelet running", WAIT, |s| {
        Node::service(s, "kubelet")["state"] == "running"
    })
}

/// The seq of the record in `slot` of the STATE partition at `part`.
fn slot_seq(disk: &Path, part: u64, slot: u64) -> Option<u64> {
    let f = std::fs::File::open(disk).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    f.read_exact_at(&mut buf, part + slot_offset(slot)).unwrap();
    let len = state_record::claimed_len(&buf)?;
    let mut bytes = vec![0u8; len];
    f.read_exact_at(&mut bytes, part + slot_offset(slot)).unwrap();
    state_record::decode(&bytes).ok().map(|s| s.seq)
}

fn flip(disk: &Path, at: u64) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(disk).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
}

/// Apply, reboot: configured with no operator, same generation; a replay is
/// refused; a flipped byte in the newest record falls back to the other;
/// both bad is maintenance mode with the reasons in status.
#[test]
fn a_rebooted_node_comes_back_configured() {
    let build = Build::from_env();
    let scratch = Scratch::new("state-reboot-disk");
    let disk = scratch.path("state.img");
    let part = state_disk(&disk, 16);
    let more = with_disk(disk.clone());
    let mut node = Node::boot_with(&build, "state-reboot", "", &more);
    for g in [1, 2] {
        let r = ok(&node.vm, node.apply(&mut node.vsock(), &node.sign(&config(&node, g))));
        assert_eq!(r["generation"], g);
    }
    kubelet_running(&node);
    let s = node.status();
    assert_eq!(s["persistence"]["device"], "/dev/vda1", "{}", s["persistence"]);
    ok(&node.vm, node.signed(CommandKind::Reboot));
    node.vm.expect_exit(WAIT);

    // Second boot: configured before anyone asks.
    node.boot_again(&build, &more);
    node.vm.expect("booted configured: generation 2", WAIT);
    let s = kubelet_running(&node);
    assert_eq!(s["state"], "configured");
    assert_eq!(s["config"]["generation"], 2);
    assert_eq!(s["generation_floor"], 2);
    assert_eq!(s["config"]["hostname"], "gen-2");
    assert_eq!(
        node.hands("read /var/lib/basalt-test/generation")["contents"],
        "2",
        "the config's files are written again"
    );
    // The floor survived the reboot: the old generation is a replay.
    let (code, _) = err_code(&node.apply(&mut node.vsock(), &node.sign(&config(&node, 1))));
    assert_eq!(code, "stale_generation");

    // One flipped byte in the newest record: the agent falls back to the
    // other one. (Both hold generation 2 by now: the signed reboot and
    // poweroff each wrote a record of the last shutdown.)
    ok(&node.vm, node.signed(CommandKind::Poweroff));
    node.vm.expect_exit(WAIT);
    let seqs: Vec<Option<u64>> = (0..2).map(|i| slot_seq(&disk, part, i)).collect();
    let newest = if seqs[0] > seqs[1] { 0 } else { 1 };
    let other_seq = seqs[1 - newest].expect("both slots hold a record");
    flip(&disk, part + slot_offset(newest as u64) + 80);
    node.boot_again(&build, &more);
    node.vm.expect("checksum mismatch", WAIT);
    let s = kubelet_running(&node);
    assert_eq!(s["config"]["generation"], 2, "{}", s["persistence"]);
    assert_eq!(
        s["persistence"]["slots"][newest]["state"], "invalid",
        "{}",
        s["persistence"]
    );
    assert_eq!(s["persistence"]["in_force"]["seq"], other_seq, "{}", s["persistence"]);
    assert_eq!(s["persistence"]["in_force"]["slot"], 1 - newest);

    // Both records bad: maintenance mode, and status says why.
    ok(&node.vm, node.signed(CommandKind::Poweroff));
    node.vm.expect_exit(WAIT);
    // (The poweroff just wrote a fresh record over the bad one: damage both.)
    for i in 0..2 {
        flip(&disk, part + slot_offset(i) + 80);
    }
    node.boot_again(&build, &more);
    node.vm.expect(
        "no valid record (2 damaged, kept as they are): starting in maintenance mode",
        WAIT,
    );
    let s = node.status();
    assert_eq!(s["state"], "maintenance");
    for i in 0..2 {
        assert_eq!(s["persistence"]["slots"][i]["state"], "invalid", "{}", s["persistence"]);
    }
}

/// A STATE partition too small for the second slot: the second apply
/// cannot be recorded, so it fails, and nothing changes.
#[test]
fn a_full_state_partition_fails_the_apply_and_changes_nothing() {
    let build = Build::from_env();
    let scratch = Scratch::new("state-full-disk");
    let disk = scratch.path("state.img");
    state_disk(&disk, 1);
    let node = Node::boot_with(&build, "state-full", "", &with_disk(disk.clone()));
    ok(&node.vm, node.apply(&mut node.vsock(), &node.sign(&config(&node, 1))));
    let before = kubelet_running(&node);
    let r = node.apply(&mut node.vsock(), &node.sign(&config(&node, 2)));
    let (code, message) = err_code(&r);
    assert_eq!(code, "apply_failed", "{message}");
    assert!(message.contains("nothing was changed"), "{message}");
    let after = node.status();
    assert_eq!(after["config"], before["config"]);
    assert_eq!(after["generation_floor"], 1);
    let (k0, k1) = (Node::service(&before, "kubelet"), Node::service(&after, "kubelet"));
    assert_eq!((&k1["pid"], &k1["restarts"]), (&k0["pid"], &k0["restarts"]));
    assert_eq!(node.hands("hostname")["hostname"], "gen-1");
    assert_eq!(node.hands("read /var/lib/basalt-test/generation")["contents"], "1");
}

/// SIGKILL to QEMU at a random moment of an apply, again and again. After
/// each cut the node boots on exactly the old or the new generation (never
/// neither, never a mix of their files), the floor never goes down, and an
/// apply that was answered ok is never lost.
#[test]
fn power_cuts_during_applies_lose_nothing() {
    let build = Build::from_env();
    let profile = Profile::from_env();
    let cuts = profile.pick(10, 50);
    let seed = seed_from_env("BASALT_STATE_SEED", DEFAULT_SEED);
    let mut rng = SplitMix64::new(seed);
    let scratch = Scratch::new("state-cuts-disk");
    let disk = scratch.path("state.img");
    state_disk(&disk, 16);
    let more = with_disk(disk.clone());
    let mut node = Node::boot_with(&build, "state-cuts", "", &more);
    ok(&node.vm, node.apply(&mut node.vsock(), &node.sign(&config(&node, 1))));
    kubelet_running(&node);
    let (mut floor, mut old_kept, mut new_won, mut acked_total) = (1u64, 0, 0, 0);
    let started = Instant::now();
    for cut in 0..cuts {
        let next = floor + 1;
        let envelope = node.sign(&config(&node, next));
        // An apply is answered 30-100 ms after it is sent here: cut anywhere in that.
        let delay = Duration::from_millis(rng.below(80));
        let mut vsock = node.vsock();
        let mut fields = Map::new();
        fields.insert("envelope".into(), envelope.to_json());
        // Send, then cut the power after `delay`, whether or not the answer came.
        let line = basalt_common::proto::request_line(&json!(cut), "apply", fields);
        vsock.send(&line).unwrap();
        std::thread::sleep(delay);
        let acked = vsock
            .read_line("an apply answer", Instant::now(), &mut 0)
            .ok()
            .and_then(|l| basalt_common::proto::parse_response(&l).ok())
            .is_some_and(|r| matches!(r, Response::Ok { .. }));
        node.vm.vm.kill().unwrap();
        node.boot_again(&build, &more);
        let s = node.wait_status("configured after the cut", WAIT, |s| s["state"] == "configured");
        let generation = s["config"]["generation"].as_u64().unwrap();
        let s_floor = s["generation_floor"].as_u64().unwrap();
        assert!(
            generation == floor || generation == next,
            "cut {cut}: generation {generation}, expected {floor} or {next}"
        );
        assert!(
            s_floor >= floor,
            "cut {cut}: the floor went down from {floor} to {s_floor}"
        );
        if acked {
            acked_total += 1;
            assert_eq!(generation, next, "cut {cut}: an apply answered ok was lost");
        }
        let file = node.hands("read /var/lib/basalt-test/generation")["contents"].clone();
        assert_eq!(
            file,
            json!(generation.to_string()),
            "cut {cut}: files of one generation only"
        );
        assert_eq!(s["config"]["hostname"], format!("gen-{generation}"));
        kubelet_running(&node);
        if generation == next {
            new_won += 1;
        } else {
            old_kept += 1;
        }
        eprintln!("cut {cut} after {delay:?}: acked={acked} generation {generation}");
        floor = generation;
    }
    report(
        &build,
        "power-cuts",
        &[
            ("cuts", cuts.to_string()),
            ("old_generation", old_kept.to_string()),
            ("new_generation", new_won.to_string()),
            ("acked_then_cut", acked_total.to_string()),
            ("floor_decreased", "0".into()),
            ("seed", format!("{seed:#x}")),
            ("wall_s", format!("{:.0}", started.elapsed().as_secs_f64())),
        ],
    );
}

/// `apply --try` in QEMU: a trial times out and the node goes back; a
/// confirmed one is what the node boots after a reboot.
#[test]
fn a_trial_times_out_and_a_confirmed_one_persists() {
    let build = Build::from_env();
    let scratch = Scratch::new("state-try-disk");
    let disk = scratch.path("state.img");
    state_disk(&disk, 16);
    let more = with_disk(disk.clone());
    let mut node = Node::boot_with(&build, "state-try", "", &more);
    ok(&node.vm, node.apply(&mut node.vsock(), &node.sign(&config(&node, 1))));
    kubelet_running(&node);
    let try_apply = |node: &Node, g: u64, ms: u64| {
        let mut fields = Map::new();
        fields.insert("envelope".into(), node.sign(&config(node, g)).to_json());
        fields.insert("try_ms".into(), json!(ms));
        call(&mut node.vsock(), "apply", fields)
    };
    let r = ok(&node.vm, try_apply(&node, 2, 3_000));
    assert_eq!(r["trial"]["back_to"], 1);
    assert_eq!(node.hands("hostname")["hostname"], "gen-2");
    node.vm.expect(
        "the trial of generation 2 timed out: back on the persisted generation 1",
        WAIT,
    );
    let s = kubelet_running(&node);
    assert_eq!(
        (s["config"]["generation"].clone(), s["trial"].clone()),
        (json!(1), Value::Null)
    );
    assert_eq!(node.hands("hostname")["hostname"], "gen-1");

    ok(&node.vm, try_apply(&node, 2, 600_000));
    let r = ok(&node.vm, node.signed(CommandKind::Confirm));
    assert_eq!(r["confirmed"], 2);
    ok(&node.vm, node.signed(CommandKind::Reboot));
    node.vm.expect_exit(WAIT);
    node.boot_again(&build, &more);
    node.vm.expect("booted configured: generation 2", WAIT);
    kubelet_running(&node);
}
