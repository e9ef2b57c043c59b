//! The agent under pressure from clients that hold no key: output nobody
//! reads, client text echoed back, nonces fetched by the hundred; and an
//! apply whose last step fails.

mod support;

use basalt_common::command::CommandKind;
use serde_json::{json, Map};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use support::*;

/// The bound docs/protocol.md promises for the agent's peak RSS, whatever
/// unauthenticated clients send.
const RSS_BOUND_KIB: u64 = 16 * 1024;

fn status_kib(pid: nix::unistd::Pid, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// 16 connections pipeline 64 KiB of `logs` requests for a 256 KiB log and
/// never read. Without a bound on output each would be answered ~1 400
/// times (hundreds of MiB); with it, reading stops mid-batch, and the agent
/// stays small and keeps answering everyone else.
#[test]
fn an_output_flood_is_bounded_for_all_connections_together() {
    let node = TestNode::start("flood", Options::default());
    // A service whose log holds the whole ring: 256 KiB of output.
    let noisy = node.service_spec(
        "noisy",
        "i=0; while [ $i -lt 4000 ]; do echo \"line $i: 0123456789012345678901234567890123456789012345678901234567890\"; i=$((i+1)); done; sleep 1000",
    );
    expect_ok(node.apply(&config(1, vec![noisy], vec![])));
    node.wait_status("the noisy log full", |_| node.logs("noisy", 10_000).len() >= 3000);
    let before = status_kib(node.agent_pid(), "VmHWM:");

    let request = b"{\"id\":1,\"op\":\"logs\",\"source\":\"noisy\",\"tail\":10000}\n";
    let batch: Vec<u8> = request
        .iter()
        .copied()
        .cycle()
        .take(64 * 1024 / request.len() * request.len())
        .collect();
    let mut floods = Vec::new();
    for _ in 0..16 {
        let mut s = UnixStream::connect(&node.sock).unwrap();
        s.set_nonblocking(true).unwrap();
        // Whatever the socket takes; the agent stops reading once its answers pile up.
        let mut sent = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while sent < batch.len() && Instant::now() < deadline {
            match s.write(&batch[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("flood write: {e}"),
            }
        }
        floods.push(s);
    }
    // Everyone else is still answered, promptly.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(node.status()["config"]["generation"], 1);
        slowest = slowest.max(started.elapsed());
    }
    let peak = status_kib(node.agent_pid(), "VmHWM:");
    println!("agent VmHWM {before} KiB before the flood, {peak} KiB after; slowest status {slowest:?}");
    assert!(
        peak < RSS_BOUND_KIB,
        "agent peak RSS {peak} KiB, bound {RSS_BOUND_KIB} KiB"
    );
    assert!(
        slowest < Duration::from_secs(5),
        "a status took {slowest:?} during the flood"
    );
    drop(floods);
}

/// Client text comes back clipped, in answers and on the console, however
/// long it was.
#[test]
fn long_client_text_is_clipped_in_answers_and_console_lines() {
    let node = TestNode::start("clip", Options::default());
    let big = "o".repeat(200_000);
    let lines = [
        format!(r#"{{"id":1,"op":"{big}"}}"#),
        format!(r#"{{"id":2,"op":"status","{big}":true}}"#),
        format!(r#"{{"id":3,"op":"status","{big}":1,"{big}":2}}"#),
        format!(r#"{{"id":4,"op":"logs","source":"{big}"}}"#),
    ];
    let mut c = node.client();
    for line in &lines {
        c.send(format!("{line}\n").as_bytes()).unwrap();
        let (code, message) = expect_error(next_response(&mut c));
        assert!(message.len() <= 400, "{code}: a {}-byte message", message.len());
        assert!(message.contains("…(+"), "{code}: no marker in {message}");
    }
    node.wait_status("the rejections logged", |_| {
        node.stderr().matches("rejected").count() >= lines.len()
    });
    let stderr = node.stderr();
    let longest = stderr.lines().map(str::len).max().unwrap_or(0);
    assert!(longest <= 512, "a {longest}-byte console line");
}

/// A nonce is safe from other clients: B asking for 64 more does not push
/// out the one A holds.
#[test]
fn another_client_cannot_evict_a_nonce() {
    let node = TestNode::start("nonce", Options::default());
    let mut a = node.client();
    let nonce = expect_ok(a.call("status", Map::new()).unwrap())["nonce"]
        .as_str()
        .unwrap()
        .to_string();
    let mut b = node.client();
    for _ in 0..64 {
        expect_ok(b.call("status", Map::new()).unwrap());
    }
    let cmd = basalt_common::command::Command {
        kind: CommandKind::Reboot,
        node: NODE.into(),
        nonce,
    };
    let envelope = basalt_common::envelope::SignedEnvelope::sign(&node.key, cmd.to_payload());
    let fields = json!({"envelope": envelope.to_json()}).as_object().cloned().unwrap();
    let r = expect_ok(a.call("reboot", fields).unwrap());
    assert_eq!(r["accepted"], "reboot");
}

/// The last step of an apply, recording the new generation, fails: the
/// files, the hostname, the generation and the services stay as they were.
#[test]
fn an_apply_whose_state_write_fails_changes_nothing() {
    let node = TestNode::start("state-fails", Options::default());
    let v1 = config(
        1,
        vec![node.service_spec("one", "while :; do sleep 1; done")],
        vec![file("/var/lib/app/conf", "0644", "one")],
    );
    expect_ok(node.apply(&v1));
    let one = node.wait_running("one");
    let state = node.root.join("run/basalt/agent/state.json");
    let hostname = node.scratch.path.join("hostname");
    let conf = node.root.join("var/lib/app/conf");
    assert_eq!(read(&hostname), "test-host\n");

    // A non-empty directory where the state file goes: its rename fails.
    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir_all(state.join("blocker")).unwrap();
    let mut v2 = config(
        2,
        vec![
            node.service_spec("one", "while :; do sleep 2; done"),
            node.service_spec("two", "while :; do sleep 1; done"),
        ],
        vec![
            file("/var/lib/app/conf", "0644", "two"),
            file("/var/lib/app/new", "0644", "new"),
        ],
    );
    v2["hostname"] = json!("other-host");
    let (code, message) = expect_error(node.apply(&v2));
    assert_eq!(code, "apply_failed", "{message}");
    assert!(message.contains("cannot save state"), "{message}");
    assert!(message.len() < 400, "{message}");

    assert_eq!(read(&conf), "one", "the file it replaced is back");
    assert!(!node.root.join("var/lib/app/new").exists(), "the new file is gone");
    assert_eq!(read(&hostname), "test-host\n");
    let s = node.status();
    assert_eq!(s["config"]["generation"], 1);
    assert_eq!(s["generation_floor"], 1, "the floor did not move");
    let services: Vec<&str> = s["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["one"]);
    let still = service_in(&s, "one").unwrap();
    assert_eq!(
        (&still["pid"], &still["state"]),
        (&one["pid"], &json!("running")),
        "one was not restarted"
    );
    let leftovers: Vec<String> = std::fs::read_dir(node.root.join("var/lib/app"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".basalt"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Once the state can be written again, the same config applies.
    std::fs::remove_dir_all(&state).unwrap();
    expect_ok(node.apply(&v2));
    node.wait_running("two");
    assert_eq!(read(&conf), "two");
    assert_eq!(read(&hostname), "other-host\n");
}
