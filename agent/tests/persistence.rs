//! The node remembers (issue 12), on the host: the STATE "partition" is a
//! file named by `basalt.state=`, and a reboot is the agent stopped, this
//! boot's tmpfs state wiped, and the agent started again.

mod support;

use basalt_common::state_record::{self, slot_offset};
use serde_json::Value;
use std::os::unix::fs::FileExt;
use std::path::Path;
use support::*;

fn persistent_node(tag: &str, state: &str) -> TestNode {
    let opts = Options {
        cmdline: format!("basalt.node={NODE} basalt.serial=none basalt.vsock_port=none basalt.state={state}"),
        ..Options::default()
    };
    TestNode::start(tag, opts)
}

/// Stops the agent (its services with it) and forgets everything a reboot
/// forgets: this boot's state file, the hostname, the config's files.
fn reboot(node: &mut TestNode) {
    node.stop_agent(nix::sys::signal::Signal::SIGTERM);
    let _ = std::fs::remove_file(node.root.join("run/basalt/agent/state.json"));
    let _ = std::fs::remove_file(node.scratch.path.join("hostname"));
    let _ = std::fs::remove_dir_all(node.root.join("var/lib/app"));
    node.start_agent();
}

fn cfg(node: &TestNode, generation: u64) -> Value {
    config(
        generation,
        vec![node.service_spec("svc", "while :; do sleep 1; done")],
        vec![file("/var/lib/app/generation", "0644", &generation.to_string())],
    )
}

fn flip(path: &Path, offset: u64) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ 0x20], offset).unwrap();
}

/// The slot holding sequence number `seq`.
fn slot_of(path: &Path, seq: u64) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    (0..2)
        .find(|&i| {
            let at = slot_offset(i) as usize;
            state_record::decode(&bytes[at..]).is_ok_and(|s| s.seq == seq)
        })
        .unwrap_or_else(|| panic!("no slot holds seq {seq}"))
}

#[test]
fn a_rebooted_node_comes_back_configured_and_refuses_older_generations() {
    let scratch_state = Scratch::new("persist-img");
    let img = scratch_state.path.join("state.img");
    std::fs::write(&img, []).unwrap();
    let mut node = persistent_node("persist-reboot", &img.display().to_string());
    for g in [1, 2] {
        expect_ok(node.apply(&cfg(&node, g)));
    }
    let before = node.wait_running("svc");
    let s = node.status();
    assert_eq!(s["persistence"]["persistent"], true, "{s}");
    assert_eq!(s["persistence"]["writes"], 2);

    reboot(&mut node);
    // Configured with no request: generation 2, its file, its hostname, its service.
    let after = node.wait_running("svc");
    assert_ne!(after["pid"], before["pid"], "a new process after the reboot");
    let s = node.status();
    assert_eq!(s["state"], "configured");
    assert_eq!(s["config"]["generation"], 2);
    assert_eq!(s["generation_floor"], 2);
    assert_eq!(s["persistence"]["in_force"]["seq"], 2, "{s}");
    assert_eq!(read(&node.root.join("var/lib/app/generation")), "2");
    assert_eq!(read(&node.scratch.path.join("hostname")), "test-host\n");
    assert!(
        node.stderr().contains("booted configured: generation 2"),
        "{}",
        node.stderr()
    );

    // The floor came back with it: an older generation, or the same, is a replay.
    for g in [1, 2] {
        let (code, message) = expect_error(node.apply(&cfg(&node, g)));
        assert_eq!(code, "stale_generation", "generation {g}: {message}");
    }
    expect_ok(node.apply(&cfg(&node, 3)));
}

#[test]
fn a_damaged_newest_record_falls_back_and_both_damaged_mean_maintenance() {
    let scratch_state = Scratch::new("persist-img");
    let img = scratch_state.path.join("state.img");
    std::fs::write(&img, []).unwrap();
    let mut node = persistent_node("persist-damage", &img.display().to_string());
    for g in [1, 2] {
        expect_ok(node.apply(&cfg(&node, g)));
    }
    node.wait_running("svc");
    // One flipped byte in the newest record's payload.
    let newest = slot_of(&img, 2);
    flip(&img, slot_offset(newest) + 100);
    reboot(&mut node);
    node.wait_running("svc");
    let s = node.status();
    assert_eq!(s["config"]["generation"], 1, "fell back to the other record");
    let p = &s["persistence"];
    assert_eq!(p["in_force"]["seq"], 1, "{p}");
    assert_eq!(p["slots"][newest as usize]["state"], "invalid", "{p}");
    assert!(
        p["slots"][newest as usize]["why"]
            .as_str()
            .unwrap()
            .contains("checksum"),
        "{p}"
    );
    assert!(node.stderr().contains("checksum mismatch"), "one clear line");
    // The bad record is kept, not written over: the next apply goes to
    // its slot only after a copy is in the quarantine area.
    expect_ok(node.apply(&cfg(&node, 3)));
    let s = node.status();
    assert!(s["persistence"]["quarantined"].as_str().is_some(), "{s}");
    let bytes = std::fs::read(&img).unwrap();
    let q = state_record::quarantine_offset() as usize;
    assert_eq!(&bytes[q..q + 8], b"BASALTST", "the damaged record, kept for inspection");

    // Now damage both: maintenance mode, and status says why.
    flip(&img, slot_offset(0) + 90);
    flip(&img, slot_offset(1) + 90);
    reboot(&mut node);
    let s = node.status();
    assert_eq!(s["state"], "maintenance", "{s}");
    for i in 0..2 {
        assert_eq!(s["persistence"]["slots"][i]["state"], "invalid", "{s}");
    }
    assert!(s["services"].as_array().unwrap().is_empty());
}

#[test]
fn a_record_that_fails_its_checks_is_refused_at_boot() {
    // A record written for another node (say, a disk moved between
    // machines): valid on disk, refused by the node binding.
    let scratch_state = Scratch::new("persist-img");
    let img = scratch_state.path.join("state.img");
    std::fs::write(&img, []).unwrap();
    let mut node = persistent_node("persist-refuse", &img.display().to_string());
    expect_ok(node.apply(&cfg(&node, 1)));
    node.wait_running("svc");
    node.stop_agent(nix::sys::signal::Signal::SIGTERM);
    std::fs::write(node.scratch.path.join("cmdline"), {
        let line = std::fs::read_to_string(node.scratch.path.join("cmdline")).unwrap();
        line.replace(&format!("basalt.node={NODE}"), "basalt.node=another-node")
    })
    .unwrap();
    let _ = std::fs::remove_file(node.root.join("run/basalt/agent/state.json"));
    node.start_agent();
    let s = node.status();
    assert_eq!(s["state"], "maintenance");
    let slot = &s["persistence"]["slots"][0];
    assert_eq!(slot["state"], "refused", "{s}");
    assert!(slot["why"].as_str().unwrap().starts_with("wrong_node"), "{slot}");
}

#[test]
fn a_failing_state_device_fails_the_apply_and_changes_nothing() {
    let node = persistent_node("persist-full", "/dev/full");
    let (code, message) = expect_error(node.apply(&cfg(&node, 1)));
    assert_eq!(code, "apply_failed", "{message}");
    assert!(
        message.contains("/dev/full") && message.contains("nothing was changed"),
        "{message}"
    );
    let s = node.status();
    assert_eq!(s["state"], "maintenance");
    assert_eq!(s["generation_floor"], Value::Null);
    assert!(s["services"].as_array().unwrap().is_empty(), "nothing started: {s}");
    assert!(!node.root.join("var/lib/app/generation").exists());
    assert!(
        !node.scratch.path.join("hostname").exists(),
        "the hostname as it was: never set"
    );
}

fn apply_try(node: &TestNode, doc: &Value, try_ms: u64) -> basalt_common::proto::Response {
    node.call(
        "apply",
        serde_json::json!({"envelope": node.sign(doc).to_json(), "try_ms": try_ms}),
    )
}

fn confirm(node: &TestNode) -> basalt_common::proto::Response {
    let envelope = node.command(basalt_common::command::CommandKind::Confirm);
    node.call("confirm", serde_json::json!({"envelope": envelope.to_json()}))
}

/// `apply --try`: nothing persisted; the node goes back to the persisted
/// config when the trial times out, and a reboot during a trial comes back
/// on the persisted one too. A signed confirm persists it.
#[test]
fn a_trial_reverts_unless_confirmed() {
    let scratch_state = Scratch::new("persist-img");
    let img = scratch_state.path.join("state.img");
    std::fs::write(&img, []).unwrap();
    let mut node = persistent_node("persist-try", &img.display().to_string());
    let (code, _) = expect_error(confirm(&node));
    assert_eq!(code, "no_trial");
    expect_ok(node.apply(&cfg(&node, 1)));
    let first = node.wait_running("svc");

    // A trial of generation 2 that nobody confirms.
    let mut v2 = cfg(&node, 2);
    v2["services"][0]["exec"][2] = serde_json::json!("while :; do sleep 2; done");
    let r = expect_ok(apply_try(&node, &v2, 2_000));
    assert_eq!(r["trial"]["back_to"], 1, "{r}");
    let s = node.status();
    assert_eq!(
        (s["config"]["generation"].clone(), s["trial"]["generation"].clone()),
        (2.into(), 2.into())
    );
    assert_eq!(read(&node.root.join("var/lib/app/generation")), "2");
    assert_eq!(s["persistence"]["writes"], 1, "the trial wrote nothing to STATE");
    let s = node.wait_status("the trial reverted", |s| s["config"]["generation"] == 1);
    assert_eq!(s["trial"], Value::Null);
    assert_eq!(s["generation_floor"], 1);
    assert_eq!(read(&node.root.join("var/lib/app/generation")), "1");
    let back = node.wait_running("svc");
    assert_ne!(back["pid"], first["pid"], "the changed service was restarted back");
    assert!(node
        .stderr()
        .contains("the trial of generation 2 timed out: back on the persisted generation 1"));

    // Generation 2 again, confirmed this time: persisted.
    expect_ok(apply_try(&node, &v2, 60_000));
    let r = expect_ok(confirm(&node));
    assert_eq!(r["confirmed"], 2);
    assert_eq!(node.status()["trial"], Value::Null);

    // A reboot during a trial of generation 3 comes back on generation 2.
    expect_ok(apply_try(&node, &cfg(&node, 3), 60_000));
    reboot(&mut node);
    node.wait_running("svc");
    let s = node.status();
    assert_eq!(s["config"]["generation"], 2, "{s}");
    assert_eq!(s["trial"], Value::Null);
}

/// `basaltctl reset --var`: a signed command that stops every service,
/// empties /var and reboots; the persisted config applies again after it.
#[test]
fn reset_var_empties_var_and_reboots() {
    let scratch_state = Scratch::new("persist-img");
    let img = scratch_state.path.join("state.img");
    std::fs::write(&img, []).unwrap();
    let mut node = persistent_node("persist-reset", &img.display().to_string());
    expect_ok(node.apply(&cfg(&node, 1)));
    node.wait_running("svc");
    std::fs::create_dir_all(node.root.join("var/lib/kubelet/pods")).unwrap();
    std::fs::write(node.root.join("var/lib/kubelet/pods/state"), "old").unwrap();
    let envelope = node.command(basalt_common::command::CommandKind::ResetVar);
    let r = expect_ok(node.call("reset-var", serde_json::json!({"envelope": envelope.to_json()})));
    assert_eq!(r["accepted"], "reset-var");
    // The stand-in init gets SIGINT (reboot) once the services are down.
    // On a timeout, the agent's log says where the reset stopped.
    if wait_child(&mut node.init, TIMEOUT).is_none() {
        panic!(
            "init was not signalled within {TIMEOUT:?}; agent log:\n{}",
            node.stderr()
        );
    }
    assert!(node.stderr().contains("entries removed from"), "{}", node.stderr());
    let left: Vec<_> = std::fs::read_dir(node.root.join("var")).unwrap().collect();
    assert!(left.is_empty(), "/var emptied: {left:?}");
    // basaltctl insists on saying what is reset.
    let (code, _, err) = node.ctl(&["reset", "--key", "/nonexistent"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("reset takes --var"), "{err}");
}
