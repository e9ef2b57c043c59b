//! Runs the stand-in as the agent would: it must announce what it is, log
//! its arguments, beat, and exit 0 on SIGTERM.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn beats_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("kubelet-standin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, "apiVersion: v1\n").unwrap();
    let heartbeat = dir.join("hb/heartbeat");

    let child = Command::new(env!("CARGO_BIN_EXE_kubelet"))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg("--config")
        .arg(dir.join("missing.yaml"))
        .arg("--v=2")
        .env("KUBELET_STANDIN_HEARTBEAT", &heartbeat)
        .env("KUBELET_STANDIN_INTERVAL_MS", "100")
        .env("MARKER", "xyz")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let beat = std::fs::read_to_string(&heartbeat).unwrap_or_default();
        if beat.contains(" beat=3 ") {
            assert!(beat.starts_with(&format!("pid={pid} ")), "{beat}");
            break;
        }
        assert!(Instant::now() < deadline, "no third heartbeat: {beat:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let text = String::from_utf8(out.stdout).unwrap();
    let first = text.lines().next().unwrap();
    assert!(first.contains("this is NOT a real kubelet"), "{first}");
    for needle in [
        "argv[4] = --v=2",
        "env MARKER=xyz",
        &format!("--kubeconfig {}: present, 15 bytes", kubeconfig.display()),
        "missing.yaml: not readable",
        "heartbeat 3 ->",
        "received SIGTERM: exiting cleanly",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
