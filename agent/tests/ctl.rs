//! basaltctl's command line against a real agent: keys, signing, apply,
//! status, logs, poweroff, and its exit codes.

mod support;

use basalt_common::keys::{PublicKey, SigningKey};
use basaltctl::client::Client;
use basaltctl::endpoint::Endpoint;
use serde_json::Value;
use support::*;

fn run(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = basaltctl::cli::run(&args, None, &mut out, &mut err);
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

#[test]
fn operator_workflow() {
    let keys = Scratch::new("ctl-keys");
    let name = keys.path.join("operator");
    let name = name.to_str().unwrap();
    let (code, out, err) = run(&["keygen", "--out", name]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("operator.key") && out.contains("operator.pub"), "{out}");
    let private = keys.path.join("operator.key");
    let public = keys.path.join("operator.pub");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&private).unwrap().permissions().mode() & 0o777, 0o600);
    // keygen never overwrites a key.
    let (code, _, err) = run(&["keygen", "--out", name]);
    assert_eq!(code, 4, "{err}");

    let node = TestNode::start(
        "ctl",
        Options {
            trust: vec![public.clone()],
            ..Options::default()
        },
    );
    let (code, out, _) = node.ctl(&["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("state       maintenance"), "{out}");
    let (code, out, _) = node.ctl(&["node-id"]);
    assert_eq!((code, out.as_str()), (0, format!("{NODE}\n").as_str()));
    let (code, out, _) = node.ctl(&["--json", "status"]);
    assert_eq!(code, 0);
    let raw: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(raw["ok"], true);
    assert_eq!(raw["result"]["node"], NODE);

    // Sign offline, then apply the envelope file.
    let cfg = keys.path.join("node.json");
    let doc = config(
        1,
        vec![node.service_spec("svc", "echo line one; echo line two; while :; do sleep 1; done")],
        vec![],
    );
    std::fs::write(&cfg, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let env = keys.path.join("node.env.json");
    let key = private.to_str().unwrap();
    let (code, _, err) = run(&[
        "sign",
        "--key",
        key,
        cfg.to_str().unwrap(),
        "--out",
        env.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = node.ctl(&["apply", "--envelope", env.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("applied generation 1 to node {NODE}")),
        "{out}"
    );
    assert!(out.contains("started: svc"), "{out}");
    node.wait_running("svc");

    // The same config again: the agent's error code, exit status 1.
    let (code, _, err) = node.ctl(&["apply", cfg.to_str().unwrap(), "--key", key]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("basaltctl: stale_generation: config generation 1 is not above"),
        "{err}"
    );

    // sign refuses an invalid config, naming the path.
    let bad = keys.path.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"kind":"config","version":1,"generation":1,"node":"n","hostname":"h","servces":[]}"#,
    )
    .unwrap();
    let (code, _, err) = run(&["sign", "--key", key, bad.to_str().unwrap()]);
    assert_eq!(code, 4);
    assert!(err.contains("$.servces: unknown field"), "{err}");

    node.wait_status("svc logged", |_| node.logs("svc", 10).len() == 2);
    let (code, out, _) = node.ctl(&["logs", "svc", "-n", "1"]);
    assert_eq!((code, out.as_str()), (0, "line two\n"));
    let (code, _, err) = node.ctl(&["logs", "nosuch"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("basaltctl: not_found:"), "{err}");

    // logs -f: the first batch, then lines that arrive while following.
    let mut client = Client::connect(&Endpoint::Unix(node.sock.clone()), TIMEOUT).unwrap();
    let log = node.root.join("run/basalt/log/svc.log");
    let appender = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(log).unwrap();
        f.write_all(b"line three\n").unwrap();
    });
    let mut out = Vec::new();
    basaltctl::cli::follow_logs(&mut client, "svc", 10, true, false, &mut out, Some(3)).unwrap();
    appender.join().unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "line one\nline two\nline three\n");

    // Signed poweroff through the command line.
    let (code, out, err) = node.ctl(&["poweroff", "--key", key]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("poweroff accepted"), "{out}");
    let s = node.wait_status("services stopped", |s| s["services"].as_array().unwrap().is_empty());
    assert_eq!(s["shutting_down"], "poweroff");
}

#[test]
fn exit_codes_for_usage_and_transport_errors() {
    let cases: &[(&[&str], i32, &str)] = &[
        (&[], 2, "no command given"),
        (&["frobnicate", "--endpoint", "unix:/x"], 2, "unknown command"),
        (&["status", "--bogus"], 2, "unknown option"),
        (&["status"], 2, "no endpoint"),
        (&["status", "--endpoint", "tcp:1.2.3.4"], 2, "unknown endpoint scheme"),
        (
            &["status", "--endpoint", "unix:/nonexistent/agent.sock"],
            3,
            "cannot connect to unix:/nonexistent/agent.sock",
        ),
        (
            &["apply", "--endpoint", "unix:/x"],
            2,
            "apply takes CONFIG --key KEY, or --envelope FILE",
        ),
        (
            &["sign", "/nonexistent.json", "--key", "/k"],
            4,
            "cannot read config /nonexistent.json",
        ),
        (&["status", "--timeout", "-1", "--endpoint", "unix:/x"], 2, "--timeout"),
    ];
    for (args, want, needle) in cases {
        let (code, _, err) = run(args);
        assert_eq!(code, *want, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("vsock-uds:PATH:PORT"));
}

#[test]
fn timeouts_are_reported() {
    // A socket that accepts but never answers.
    let dir = Scratch::new("ctl-timeout");
    let path = dir.path.join("mute.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let endpoint = format!("unix:{}", path.display());
    let (code, _, err) = run(&["status", "--endpoint", &endpoint, "--timeout", "0.3"]);
    assert_eq!(code, 3);
    assert!(err.contains("no response to status within 0.3 s"), "{err}");
}

#[test]
fn vsock_uds_handshake() {
    // vhost-device-vsock's side of the handshake, played by a thread: read
    // "CONNECT <port>\n", answer "OK <port>\n", then act as the agent.
    let dir = Scratch::new("ctl-vsock-uds");
    let path = dir.path.join("vsock.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut w = stream;
        w.write_all(b"OK 1234\n").unwrap();
        let mut request = String::new();
        while request.trim().is_empty() {
            request.clear();
            reader.read_line(&mut request).unwrap();
        }
        let id = serde_json::from_str::<Value>(&request).unwrap()["id"].clone();
        let reply = serde_json::json!({"id": id, "ok": true, "result": {"state": "maintenance"}});
        w.write_all(format!("{reply}\n").as_bytes()).unwrap();
        line
    });
    let endpoint = format!("vsock-uds:{}:1024", path.display());
    let (code, out, err) = run(&["status", "--endpoint", &endpoint]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("state       maintenance"), "{out}");
    assert_eq!(server.join().unwrap(), "CONNECT 1024\n");
}

#[test]
fn keygen_keys_work_with_openssl() {
    let dir = Scratch::new("ctl-openssl");
    let name = dir.path.join("k");
    let (code, _, err) = run(&["keygen", "--out", name.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let private = dir.path.join("k.key");
    let message = dir.path.join("msg");
    std::fs::write(&message, b"basalt").unwrap();
    let out = std::process::Command::new("openssl")
        .args(["pkeyutl", "-sign", "-rawin", "-inkey"])
        .arg(&private)
        .arg("-in")
        .arg(&message)
        .output()
        .unwrap_or_else(|e| panic!("openssl not runnable ({e}): the interop test needs openssl 3 on PATH"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = PublicKey::parse(&std::fs::read(dir.path.join("k.pub")).unwrap()).unwrap();
    assert!(public.verify(b"basalt", &out.stdout).is_ok());
    let ours = SigningKey::from_pkcs8_pem(&std::fs::read_to_string(&private).unwrap()).unwrap();
    assert_eq!(ours.sign(b"basalt").to_vec(), out.stdout);
}

#[test]
fn the_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/examples/node.json");
    let c = basalt_common::config::parse_config(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(c.node, "REPLACE-WITH-NODE-ID", "the demo substitutes this placeholder");
    assert_eq!(c.services[0].name, "kubelet");
    assert_eq!(c.services[0].exec[0], "/usr/bin/kubelet");
    assert!(c
        .files
        .iter()
        .any(|f| f.path == "/var/lib/kubelet/kubeconfig" && f.mode == 0o600));
}
