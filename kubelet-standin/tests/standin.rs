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

fn scratch(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kubelet-standin-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("hooks")).unwrap();
    dir
}

#[test]
fn kill_self_hook_counts_down() {
    use std::os::unix::process::ExitStatusExt;
    let dir = scratch("kill-self");
    std::fs::write(dir.join("hooks/kill-self"), "2\n").unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_kubelet"))
            .env("KUBELET_STANDIN_HEARTBEAT", dir.join("heartbeat"))
            .env("KUBELET_STANDIN_HOOKS", dir.join("hooks"))
            .stdout(Stdio::null())
            .status()
            .unwrap()
    };
    assert_eq!(run().signal(), Some(9));
    assert_eq!(std::fs::read_to_string(dir.join("hooks/kill-self")).unwrap(), "1\n");
    assert_eq!(run().signal(), Some(9));
    assert!(!dir.join("hooks/kill-self").exists());
    // No hook left: it runs until stopped.
    let child = Command::new(env!("CARGO_BIN_EXE_kubelet"))
        .env("KUBELET_STANDIN_HEARTBEAT", dir.join("heartbeat"))
        .env("KUBELET_STANDIN_HOOKS", dir.join("hooks"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kill_agent_hook_kills_the_parent_once() {
    use std::os::unix::process::ExitStatusExt;
    let dir = scratch("kill-agent");
    std::fs::write(dir.join("hooks/kill-agent"), "300\n").unwrap();
    // sh plays the agent: the stand-in's parent.
    let parent = Command::new("/bin/sh")
        .arg("-c")
        // The stand-in's stdout is not the pipe, or reading it would wait for the orphan.
        .arg("\"$0\" >/dev/null & wait $!; echo parent survived")
        .arg(env!("CARGO_BIN_EXE_kubelet"))
        .env("KUBELET_STANDIN_HEARTBEAT", dir.join("heartbeat"))
        .env("KUBELET_STANDIN_HOOKS", dir.join("hooks"))
        .env("KUBELET_STANDIN_INTERVAL_MS", "100")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = parent.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), Some(9), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(dir.join("hooks/kill-agent.done").exists());
    assert!(!dir.join("hooks/kill-agent").exists());
    // The stand-in itself lives on (now init's child); stop it via its heartbeat's pid.
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        let beat = std::fs::read_to_string(dir.join("heartbeat")).unwrap_or_default();
        if let Some(pid) = beat
            .strip_prefix("pid=")
            .and_then(|r| r.split(' ').next())
            .and_then(|p| p.parse::<i32>().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    };
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
