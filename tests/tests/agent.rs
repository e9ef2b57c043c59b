//! The agent on a booted node: provisioning over serial and vsock, every
//! kind of bad input refused without changing anything, supervision through
//! crashes of kubelet and of the agent itself, and signed shutdowns.

use basalt_common::command::CommandKind;
use basalt_common::envelope::SignedEnvelope;
use basalt_common::keys::SigningKey;
use basalt_common::proto::Response;
use basalt_tests::node::*;
use basalt_tests::*;
use basaltctl::client::Client;
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

fn running(s: &Value, name: &str) -> bool {
    Node::service(s, name)["state"] == "running"
}

fn apply_ok(node: &Node, client: &mut Client, doc: &Value) -> Value {
    let envelope = node.sign(doc);
    ok(&node.vm, node.apply(client, &envelope))
}

/// Sends one raw line and returns the agent's error code for it.
fn raw_line_error(client: &mut Client, bytes: &[u8]) -> (String, String) {
    client.send(bytes).unwrap();
    let mut skipped = 0;
    let line = client
        .read_line("error response", Instant::now() + Duration::from_secs(30), &mut skipped)
        .unwrap();
    err_code(&basalt_common::proto::parse_response(&line).unwrap())
}

#[test]
fn apply_over_serial_then_vsock_and_signed_poweroff() {
    let build = Build::from_env();
    let node = Node::boot(&build, "agent-apply", "");
    let s = node.status();
    assert_eq!(s["state"], "maintenance");
    assert_eq!(s["node"], node.id, "the node id is the SMBIOS UUID QEMU was given");
    assert_eq!(s["lockdown"], "integrity");
    assert_eq!(s["boot"]["lockdown"], "integrity", "init's boot report is served");

    // Generation 1 over the serial line.
    let mut serial = node.serial();
    let r = apply_ok(&node, &mut serial, &node_config(&node.id, 1, "node-one", (100, 30_000)));
    assert_eq!(r["services"]["started"], json!(["testhands", "kubelet"]));
    let s = node.wait_status("kubelet running", WAIT, |s| running(s, "kubelet"));
    assert_eq!(s["state"], "configured");
    assert_eq!(s["config"]["generation"], 1);
    let kubelet = Node::service(&s, "kubelet");
    let pid = kubelet["pid"].as_i64().expect("kubelet pid");
    assert_eq!(kubelet["restarts"], 0);
    assert!(s["apply_to_exec_ms"]["kubelet"].as_f64().unwrap() > 0.0, "{s:#}");
    assert_eq!(
        node.pids("kubelet"),
        vec![pid],
        "the pid status reports is the kubelet running in the guest"
    );
    node.vm.expect("[kubelet] kubelet stand-in", WAIT);

    // Generation 2 over vsock changes only the hostname: kubelet keeps running.
    let mut vsock = node.vsock();
    let r = apply_ok(&node, &mut vsock, &node_config(&node.id, 2, "node-two", (100, 30_000)));
    assert_eq!(r["services"]["unchanged"], json!(["testhands", "kubelet"]));
    let s = node.status();
    assert_eq!(s["config"]["generation"], 2);
    assert_eq!(s["config"]["hostname"], "node-two");
    assert_eq!(Node::service(&s, "kubelet")["pid"], pid);

    // Garbage on the serial line does not disturb vsock, nor the serial line after it.
    let garbage: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    serial.send(&garbage).unwrap();
    serial.send(b"\n").unwrap();
    assert_eq!(
        ok(&node.vm, call(&mut vsock, "status", Map::new()))["config"]["generation"],
        2
    );
    assert_eq!(
        ok(&node.vm, call(&mut serial, "status", Map::new()))["config"]["generation"],
        2
    );

    // A signed poweroff over vsock: services stop, init powers off, QEMU exits.
    let nonce = ok(&node.vm, call(&mut vsock, "status", Map::new()))["nonce"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, r) = {
        let (e, f) = node.command_envelope(CommandKind::Poweroff, &nonce);
        (e, call(&mut vsock, CommandKind::Poweroff.as_str(), f))
    };
    ok(&node.vm, r);
    let status = node.vm.expect_exit(WAIT);
    assert!(status.success(), "QEMU exit {status:?}");
    let console = node.vm.console();
    assert!(
        console.contains("received SIGTERM: exiting cleanly"),
        "kubelet was stopped with SIGTERM"
    );
    assert!(console.contains("shutdown: power off after"));
    assert!(console.contains("reboot: Power down"));
}

#[test]
fn bad_input_is_refused_with_its_own_code_and_changes_nothing() {
    let build = Build::from_env();
    let node = Node::boot(&build, "agent-reject", "");
    let mut serial = node.serial();
    apply_ok(&node, &mut serial, &node_config(&node.id, 1, "node-one", (100, 30_000)));
    let before = node.wait_status("kubelet running", WAIT, |s| running(s, "kubelet"));
    let snapshot = |s: &Value| {
        let k = Node::service(s, "kubelet");
        (
            s["config"].clone(),
            s["generation_floor"].clone(),
            k["pid"].clone(),
            k["restarts"].clone(),
        )
    };
    let good = node.sign(&node_config(&node.id, 1, "node-one", (100, 30_000)));

    let other_key = SigningKey::from_seed(&[0x42; 32]).unwrap();
    let mut tampered = node.sign(&node_config(&node.id, 5, "node-five", (100, 30_000)));
    let text = String::from_utf8(tampered.payload.clone())
        .unwrap()
        .replace("node-five", "node-evil");
    tampered.payload = text.into_bytes();
    let mut bad_field = node_config(&node.id, 6, "node-six", (100, 30_000));
    bad_field["services"][1]["exec"] = json!("not-a-list");
    let cases: Vec<(&str, SignedEnvelope, &str, &str)> = vec![
        (
            "wrong key",
            SignedEnvelope::sign(
                &other_key,
                serde_json::to_vec(&node_config(&node.id, 3, "x", (100, 30_000))).unwrap(),
            ),
            "unknown_key",
            "",
        ),
        ("tampered payload", tampered, "bad_signature", ""),
        ("replayed generation", good, "stale_generation", "generation 1"),
        (
            "wrong node",
            node.sign(&node_config("someone-else", 4, "x", (100, 30_000))),
            "wrong_node",
            "someone-else",
        ),
        (
            "invalid config",
            node.sign(&bad_field),
            "invalid_config",
            "$.services[1].exec",
        ),
    ];
    for (what, envelope, code, needle) in cases {
        for (channel, client) in [("serial", &mut serial), ("vsock", &mut node.vsock())] {
            let (got, message) = err_code(&node.apply(client, &envelope));
            assert_eq!(got, code, "{what} over {channel}: {message}");
            assert!(message.contains(needle), "{what}: {message:?} lacks {needle:?}");
            assert!(!message.contains('\n'), "one-line message: {message:?}");
            assert_eq!(
                snapshot(&node.status()),
                snapshot(&before),
                "{what} over {channel} changed the node"
            );
        }
    }

    // Malformed JSON and an oversized frame, raw on the line; the line resyncs.
    assert_eq!(
        raw_line_error(&mut serial, b"{\"id\": 1, \"op\": \n").0,
        "malformed_json"
    );
    let mut huge = vec![b'x'; 1024 * 1024 + 16];
    huge.push(b'\n');
    assert_eq!(raw_line_error(&mut serial, &huge).0, "frame_too_large");
    let mut vsock = node.vsock();
    assert_eq!(raw_line_error(&mut vsock, &huge).0, "frame_too_large");
    assert_eq!(snapshot(&node.status()), snapshot(&before), "garbage changed the node");

    // A signed command is bound to its nonce: the same envelope twice fails.
    // (A config sent as a command is the wrong kind.)
    let (code, _) = err_code(&call(&mut serial, "reboot", {
        let mut f = Map::new();
        f.insert(
            "envelope".into(),
            node.sign(&node_config(&node.id, 9, "x", (100, 30_000))).to_json(),
        );
        f
    }));
    assert_eq!(code, "wrong_kind");
    let (_, r) = {
        let (e, f) = node.command_envelope(CommandKind::Reboot, "00112233445566778899aabbccddeeff");
        (e, call(&mut serial, CommandKind::Reboot.as_str(), f))
    };
    let (code, _) = err_code(&r);
    assert_eq!(code, "bad_nonce", "a nonce this agent never issued");
    let nonce = node.status()["nonce"].as_str().unwrap().to_string();
    let (envelope, r) = {
        let (e, f) = node.command_envelope(CommandKind::Reboot, &nonce);
        (e, call(&mut serial, CommandKind::Reboot.as_str(), f))
    };
    ok(&node.vm, r);
    // The node is going down; a replay of the same envelope must not be
    // accepted by whatever still answers. (It usually finds nobody.)
    let mut fields = Map::new();
    fields.insert("envelope".into(), envelope.to_json());
    if let Ok(Response::Ok { .. }) = serial.call("reboot", fields) {
        panic!("a replayed reboot was accepted");
    }
    node.vm.expect_exit(WAIT);
    assert!(
        node.vm.console().contains("reboot: Restarting system"),
        "reboot, not poweroff"
    );
}

#[test]
fn killed_kubelet_restarts_with_backoff() {
    let build = Build::from_env();
    let node = Node::boot(&build, "agent-kubelet-crash", "");
    apply_ok(&node, &mut node.serial(), &node_config(&node.id, 1, "n", (500, 4000)));
    node.wait_status("kubelet running", WAIT, |s| running(s, "kubelet"));
    let kills = 4;
    let mut last_pid = node.pids("kubelet");
    assert_eq!(last_pid.len(), 1);
    for i in 1..=kills {
        let killed = node.hands("kill kubelet 9");
        assert_eq!(killed["killed"].as_array().unwrap().len(), 1, "{killed}");
        let s = node.wait_status("kubelet back", WAIT, |s| {
            let k = Node::service(s, "kubelet");
            k["state"] == "running" && k["restarts"] == i
        });
        let pids = node.pids("kubelet");
        assert_eq!(pids.len(), 1, "exactly one kubelet after restart {i}");
        assert_ne!(pids, last_pid);
        last_pid = pids;
        let k = Node::service(&s, "kubelet");
        assert!(k["last_exit"]["status"].as_str().unwrap().contains("SIGKILL"), "{k}");
    }
    // Each restart came no sooner than its backoff: 500, 1000, 2000, 4000 ms.
    let k = Node::service(&node.status(), "kubelet");
    let starts = Node::recent_starts(&k);
    assert_eq!(starts.len(), kills as usize + 1, "{k}");
    for (i, pair) in starts.windows(2).enumerate() {
        let want = 500.0 * f64::from(1u32 << i);
        assert!(
            pair[1] - pair[0] >= want,
            "restart {} after {} ms, backoff says {want}: {k}",
            i + 1,
            pair[1] - pair[0]
        );
    }
}

#[test]
fn killed_agent_is_restarted_by_init_and_adopts_its_services() {
    let build = Build::from_env();
    let node = Node::boot(&build, "agent-crash", "");
    apply_ok(&node, &mut node.serial(), &node_config(&node.id, 1, "n", (100, 1000)));
    let before = node.wait_status("kubelet running", WAIT, |s| running(s, "kubelet"));
    let kubelet_pid = Node::service(&before, "kubelet")["pid"].clone();
    let agent_pids = node.pids("basalt-agent");
    assert_eq!(agent_pids.len(), 1);

    let killed = node.hands("kill basalt-agent 9");
    assert_eq!(killed["killed"].as_array().unwrap().len(), 1, "{killed}");
    node.vm.expect("handoff /sbin/basalt-agent", WAIT);
    // Until the new agent listens, a vsock connection is refused or closed:
    // wait for it to say so on the console before asking it anything.
    node.vm.expect_count("basalt-agent: ready", 2, WAIT);
    let after = node.wait_status("a new agent with kubelet adopted", WAIT, |s| {
        Node::service(s, "kubelet")["adopted"] == true
    });
    let new_agent = node.pids("basalt-agent");
    assert_eq!(new_agent.len(), 1);
    assert_ne!(new_agent, agent_pids, "init started a new agent");
    let k = Node::service(&after, "kubelet");
    assert_eq!(k["pid"], kubelet_pid, "kubelet was adopted, not started again");
    assert_eq!(k["restarts"], 0);
    assert_eq!(node.pids("kubelet").len(), 1, "one kubelet, never two");
    assert_eq!(node.pids("testhands").len(), 1, "one testhands, never two");
    assert_eq!(after["config"]["generation"], 1, "the config survived the agent");
    node.vm.expect("adopted kubelet", WAIT);

    // The new agent still supervises what it adopted.
    node.hands("kill kubelet 9");
    let s = node.wait_status("adopted kubelet restarted", WAIT, |s| {
        let k = Node::service(s, "kubelet");
        k["state"] == "running" && k["restarts"] == 1
    });
    assert_ne!(Node::service(&s, "kubelet")["pid"], kubelet_pid);
    assert_eq!(node.pids("kubelet").len(), 1);
    assert_eq!(node.hands("procs")["zombies"], 0, "init reaped the adopted kubelet");
}
