//! Applying signed configs to a real agent, and every way one is refused.

mod support;

use basalt_common::command::CommandKind;
use basalt_common::envelope::SignedEnvelope;
use basalt_common::keys::SigningKey;
use basalt_common::{b64, hex};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use support::*;

#[test]
fn apply_writes_files_sets_hostname_and_starts_services() {
    let node = TestNode::start("apply", Options::default());
    let s = node.status();
    assert_eq!(s["state"], "maintenance");
    assert_eq!(s["node"], NODE);
    assert_eq!(s["config"], Value::Null);
    assert_eq!(s["nonce"].as_str().unwrap().len(), 32);
    assert_eq!(s["trusted_keys"], json!([node.key.public_key().key_id()]));

    let mut web = node.service_spec(
        "web",
        // Builtins only for the /proc reads: a shell waiting on a child has
        // all signals blocked, which would hide what it started with.
        "echo hello from $0; env; while read -r k v; do case $k in SigBlk:|SigIgn:) echo \"$k $v\";; esac; \
         done < /proc/$$/status; read -r _ _ _ _ _ sid _ < /proc/$$/stat; echo session=$sid pid=$$; \
         while :; do sleep 1; done",
    );
    web["env"] = json!({"GREETING": "hi there"});
    let doc = config(
        1,
        vec![web],
        vec![
            file("/var/lib/app/deep/app.conf", "0600", "x = 1\n"),
            file("/run/app/token", "0644", "t0k3n"),
        ],
    );
    let envelope = node.sign(&doc);
    let result = expect_ok(node.apply_envelope(&envelope));
    assert_eq!(result["generation"], 1);
    assert_eq!(result["node"], NODE);
    assert_eq!(result["services"]["started"], json!(["web"]));
    let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, &envelope.payload).as_ref());
    assert_eq!(result["digest"], digest);

    let web = node.wait_running("web");
    assert_eq!(web["restarts"], 0);
    let conf = node.root.join("var/lib/app/deep/app.conf");
    assert_eq!(read(&conf), "x = 1\n");
    assert_eq!(std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(read(&node.root.join("run/app/token")), "t0k3n");
    assert_eq!(read(&node.scratch.path.join("hostname")), "test-host\n");

    // Wait for the script's last line: its output reaches the log while the
    // agent answers status, so anything earlier may still be on its way.
    let s = node.wait_status("web's output in its log", |_| {
        node.logs("web", 100).iter().any(|l| l.starts_with("session="))
    });
    assert_eq!(s["state"], "configured");
    assert_eq!(s["config"]["generation"], 1);
    assert_eq!(s["config"]["digest"], digest);
    assert!(s["apply_to_exec_ms"]["web"].as_f64().unwrap() > 0.0, "{s:#}");
    let stages = s["config"]["stages_ms"].as_object().expect("stages_ms");
    let names: Vec<&str> = stages.keys().map(String::as_str).collect();
    for stage in ["read", "verify", "validate", "files", "state", "spawn"] {
        assert!(names.contains(&stage), "stage {stage} missing from {names:?}");
    }
    let lines = node.logs("web", 100);
    assert_eq!(lines[0], "hello from web");
    // It starts clean: nothing blocked or ignored (the agent blocks what it
    // reads through signalfd), and in a session of its own.
    assert!(lines.iter().any(|l| l == "SigBlk: 0000000000000000"), "{lines:?}");
    // glibc keeps its two internal real-time signals (32, 33) ignored in a
    // posix_spawn child; musl, which the node runs, ignores nothing.
    let ign = lines.iter().find(|l| l.starts_with("SigIgn: ")).expect("SigIgn line");
    assert!(
        ["SigIgn: 0000000000000000", "SigIgn: 0000000180000000"].contains(&ign.as_str()),
        "{ign}"
    );
    let ids = lines.iter().find(|l| l.starts_with("session=")).expect("session line");
    let (sid, pid) = ids.split_once(' ').unwrap();
    assert_eq!(
        sid.trim_start_matches("session="),
        pid.trim_start_matches("pid="),
        "its own session: {ids}"
    );
    // A clean environment: the test runner's variables do not leak in.
    assert!(
        lines.iter().any(|l| l == "PATH=/usr/sbin:/usr/bin:/sbin:/bin"),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("CARGO")), "{lines:?}");

    // The console shows the service's output with its prefix.
    node.wait_status("console echo", |_| node.stderr().contains("[web] hello from web"));
    // The agent's own log is served too.
    let agent_log = node.logs("agent", 1000).join("\n");
    assert!(agent_log.contains("applied generation 1"), "{agent_log}");
    let (code, _) = expect_error(node.call("logs", json!({"source": "nope"})));
    assert_eq!(code, "not_found");
}

/// Each rejection has its own code and leaves generation, services, files
/// and hostname exactly as they were.
#[test]
fn every_rejection_has_its_own_code_and_changes_nothing() {
    let node = TestNode::start("reject", Options::default());
    let svc = node.service_spec("svc", "while :; do sleep 1; done");
    let good = config(2, vec![svc.clone()], vec![file("/var/lib/app/conf", "0644", "v1")]);
    let applied = node.sign(&good);
    expect_ok(node.apply_envelope(&applied));
    let before = node.wait_running("svc");

    let outside = node.scratch.path.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, node.root.join("var/lib/evil")).unwrap();

    let next = |f: fn(&mut Value)| {
        let mut doc = config(3, vec![svc.clone()], vec![file("/var/lib/app/conf", "0644", "v2")]);
        f(&mut doc);
        doc
    };
    let other = SigningKey::from_seed(&OTHER_SEED).unwrap();
    let by_other = SignedEnvelope::sign(&other, serde_json::to_vec(&next(|_| {})).unwrap());
    let mut forged = by_other.clone();
    forged.key_id = node.key.public_key().key_id();
    let mut tampered = node.sign(&next(|_| {}));
    let text = String::from_utf8(tampered.payload.clone()).unwrap().replace("v2", "v9");
    tampered.payload = text.into_bytes();
    let rollback = node.sign(&config(1, vec![svc.clone()], vec![]));
    let command = node.command(CommandKind::Poweroff);

    let apply_line = |env: &SignedEnvelope| {
        let mut line = json!({"id": 7, "op": "apply", "envelope": env.to_json()})
            .to_string()
            .into_bytes();
        line.push(b'\n');
        line
    };
    let mut oversized = br#"{"id":8,"op":"apply","envelope":{"payload":""#.to_vec();
    oversized.resize(oversized.len() + (1 << 20) + 16, b'A');
    oversized.extend_from_slice(b"\"}}\n");
    let mut bad_b64 = apply_line(&node.sign(&next(|_| {})));
    let at = bad_b64.windows(11).position(|w| w == b"\"payload\":\"").unwrap() + 11;
    bad_b64[at] = b'!';

    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "unknown key",
            apply_line(&by_other),
            "unknown_key",
            "not among this node's trusted keys",
        ),
        ("forged key id", apply_line(&forged), "bad_signature", "does not verify"),
        (
            "tampered payload",
            apply_line(&tampered),
            "bad_signature",
            "does not verify",
        ),
        (
            "replayed generation",
            apply_line(&applied),
            "stale_generation",
            "generation 2 is not above the applied generation 2",
        ),
        (
            "rollback",
            apply_line(&rollback),
            "stale_generation",
            "generation 1 is not above",
        ),
        (
            "wrong node",
            apply_line(&node.sign(&next(|d| d["node"] = json!("other-node")))),
            "wrong_node",
            "\"other-node\"",
        ),
        (
            "command as config",
            apply_line(&command),
            "wrong_kind",
            "of kind \"poweroff\", expected \"config\"",
        ),
        (
            "unknown field",
            apply_line(&node.sign(&next(|d| d["services"][0]["user"] = json!("root")))),
            "invalid_config",
            "$.services[0].user: unknown field",
        ),
        (
            "symlink escape",
            apply_line(&node.sign(&next(|d| d["files"][0]["path"] = json!("/var/lib/evil/passwd")))),
            "invalid_config",
            "$.files[0].path: /var/lib/evil is a symbolic link",
        ),
        (
            "missing program",
            apply_line(&node.sign(&next(|d| d["services"][0]["exec"][0] = json!("/nonexistent/kubelet")))),
            "invalid_config",
            "$.services[?(@.name==\"svc\")].exec[0]: /nonexistent/kubelet does not exist",
        ),
        (
            "bad base64",
            bad_b64,
            "bad_envelope",
            "$.envelope.payload: invalid base64",
        ),
        (
            "malformed JSON",
            b"{\"id\":9,\"op\":\"apply\",\n".to_vec(),
            "malformed_json",
            "EOF while parsing",
        ),
        (
            "binary garbage",
            b"\x00\xff\xfegarbage\n".to_vec(),
            "malformed_json",
            "malformed JSON",
        ),
        (
            "oversized frame",
            oversized,
            "frame_too_large",
            "exceeds the 1048576-byte limit",
        ),
        (
            "unknown op",
            b"{\"id\":10,\"op\":\"format-disk\"}\n".to_vec(),
            "unknown_op",
            "format-disk",
        ),
    ];

    let snapshot = || {
        let s = node.status();
        let svc = service_in(&s, "svc").unwrap();
        (
            s["config"].clone(),
            s["generation_floor"].clone(),
            svc["pid"].clone(),
            svc["restarts"].clone(),
            read(&node.root.join("var/lib/app/conf")),
            read(&node.scratch.path.join("hostname")),
        )
    };
    let baseline = snapshot();
    assert_eq!(baseline.2, before["pid"]);
    let mut client = node.client();
    for (name, line, code, needle) in cases {
        client.send(&line).unwrap();
        let (got, message) = expect_error(next_response(&mut client));
        assert_eq!(got, code, "{name}: {message}");
        assert!(message.contains(needle), "{name}: {message:?} lacks {needle:?}");
        assert_eq!(snapshot(), baseline, "{name} changed the node");
    }
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "a file was written through the symlink"
    );

    // After all that, a good config still applies.
    let r = expect_ok(node.apply(&next(|_| {})));
    assert_eq!(r["generation"], 3);
    assert_eq!(read(&node.root.join("var/lib/app/conf")), "v2");
}

#[test]
fn a_new_generation_restarts_only_what_changed() {
    let node = TestNode::start("generations", Options::default());
    let spec = |name: &str| node.service_spec(name, "while :; do sleep 1; done");
    let mut b_first = spec("b");
    b_first["after"] = json!(["a"]);
    expect_ok(node.apply(&config(1, vec![spec("a"), b_first.clone(), spec("c")], vec![])));
    let pids: Vec<Value> = ["a", "b", "c"]
        .iter()
        .map(|n| node.wait_running(n)["pid"].clone())
        .collect();

    let mut b_changed = b_first.clone();
    b_changed["env"] = json!({"VERSION": "2"});
    let r = expect_ok(node.apply(&config(2, vec![spec("a"), b_changed, spec("d")], vec![])));
    assert_eq!(
        r["services"],
        json!({"started": ["d"], "restarted": ["b"], "stopped": ["c"], "unchanged": ["a"]})
    );
    let s = node.wait_status("b restarted, c gone, d running", |s| {
        let b = service_in(s, "b");
        b.is_some_and(|b| b["state"] == "running" && b["pid"] != pids[1])
            && service_in(s, "c").is_none()
            && service_in(s, "d").is_some_and(|d| d["state"] == "running")
    });
    assert_eq!(service_in(&s, "a").unwrap()["pid"], pids[0], "a must not be restarted");
    assert_eq!(service_in(&s, "a").unwrap()["restarts"], 0);
    assert!(!alive(pids[2].as_i64().unwrap() as i32), "c still running");
    assert!(!alive(pids[1].as_i64().unwrap() as i32), "old b still running");
    let procs = node.marked_processes();
    assert_eq!(procs.len(), 3, "{procs:?}");
}

#[test]
fn openssl_signed_config_is_accepted() {
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("openssl not runnable ({e}): the interop test needs openssl 3 on PATH"));
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let work = Scratch::new("openssl");
    let key = work.path.join("op.pem");
    let public = work.path.join("op.pub");
    let (k, p) = (key.to_str().unwrap(), public.to_str().unwrap());
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", k]);
    openssl(&["pkey", "-in", k, "-pubout", "-out", p]);
    let node = TestNode::start(
        "openssl",
        Options {
            trust: vec![public.clone()],
            ..Options::default()
        },
    );

    let payload = work.path.join("config.json");
    let doc = config(1, vec![node.service_spec("svc", "while :; do sleep 1; done")], vec![]);
    std::fs::write(&payload, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let sig = work.path.join("config.sig");
    openssl(&[
        "pkeyutl",
        "-sign",
        "-rawin",
        "-inkey",
        k,
        "-in",
        payload.to_str().unwrap(),
        "-out",
        sig.to_str().unwrap(),
    ]);

    let public_key = basalt_common::keys::PublicKey::parse(&std::fs::read(&public).unwrap()).unwrap();
    let envelope = json!({
        "payload": b64::encode(&std::fs::read(&payload).unwrap()),
        "signature": b64::encode(&std::fs::read(&sig).unwrap()),
        "key_id": public_key.key_id(),
    });
    let r = expect_ok(node.call("apply", json!({"envelope": envelope})));
    assert_eq!(r["key_id"], public_key.key_id());
    node.wait_running("svc");

    // Ed25519 is deterministic: basalt signs those bytes exactly as openssl did.
    let ours = SigningKey::from_pkcs8_pem(&std::fs::read_to_string(&key).unwrap()).unwrap();
    assert_eq!(
        ours.sign(&std::fs::read(&payload).unwrap()).to_vec(),
        std::fs::read(&sig).unwrap()
    );
}
