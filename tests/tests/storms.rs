//! Crash storms (issue 5, part 4), in QEMU: kubelet killed over and over
//! (every restart observed, on the backoff schedule, no zombie left), the
//! agent killed over and over (init brings it back on its own schedule, the
//! new agent adopts the services and never starts one twice), and services
//! killed while a signed poweroff is stopping them (the VM still powers off
//! within the bound the stop timeouts give).
//!
//! Sizes follow `BASALT_ROBUSTNESS` (tests/src/robustness.rs): 200 kubelet
//! kills and 20 agent kills in the long profile.

use basalt_common::backoff::Backoff;
use basalt_common::command::CommandKind;
use basalt_common::proto::Response;
use basalt_tests::node::*;
use basalt_tests::robustness::{report, Profile};
use basalt_tests::*;
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

/// Status, polled every 20 ms (the kubelet schedule below is that fast)
/// until `pred` holds; panics with the last status after `timeout`.
fn poll_status(node: &Node, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let s = node.status();
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {what} not reached in {timeout:?}; status:\n{s:#}\nconsole:\n{}",
            node.vm.name,
            node.vm.console()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn zombies(node: &Node) -> u64 {
    node.hands("procs")["zombies"].as_u64().expect("zombie count")
}

fn by_comm(node: &Node, comm: &str) -> u64 {
    node.hands("procs")["by_comm"][comm].as_u64().unwrap_or(0)
}

#[test]
fn kubelet_killed_again_and_again_restarts_on_schedule_without_zombies() {
    let build = Build::from_env();
    let profile = Profile::from_env();
    let kills: u32 = profile.pick(30, 200);
    let started = Instant::now();
    let node = Node::boot(&build, "storm-kubelet", "");
    // A fast schedule, so that 200 kills take minutes: 20 ms doubling to 200 ms.
    let schedule = Backoff {
        initial_ms: 20,
        max_ms: 200,
        stable_after_ms: 60_000,
    };
    let cfg = node_config(&node.id, 1, "storm", (schedule.initial_ms, schedule.max_ms));
    ok(&node.vm, node.apply(&mut node.serial(), &node.sign(&cfg)));
    let s = poll_status(&node, "kubelet running", WAIT, |s| {
        Node::service(s, "kubelet")["state"] == "running"
    });
    let mut pid = Node::service(&s, "kubelet")["pid"].as_i64().unwrap();
    assert_eq!(node.pids("kubelet"), vec![pid]);

    let mut observed = 0u32;
    let mut max_zombies = 0u64;
    let mut spacing_checked = 0u32;
    for i in 1..=kills {
        let killed = node.hands("kill kubelet 9");
        assert_eq!(killed["killed"], json!([pid]), "kill {i}: the kubelet we knew");
        // Every kill is one restart: a new pid, and the count up by exactly one.
        let s = poll_status(&node, &format!("restart {i}"), WAIT, |s| {
            let k = Node::service(s, "kubelet");
            k["state"] == "running" && k["pid"] != json!(pid)
        });
        let k = Node::service(&s, "kubelet");
        assert_eq!(k["restarts"], i, "kill {i}: one restart per kill: {k}");
        assert!(
            k["last_exit"]["status"]
                .as_str()
                .unwrap_or_default()
                .contains("SIGKILL"),
            "kill {i}: {k}"
        );
        // Every run is short, so the streak is the kill count and the delay
        // before this restart is the schedule's for that streak.
        let want = schedule.delay_ms(i);
        assert_eq!(k["backoff_ms"], want, "kill {i}: backoff: {k}");
        let starts = Node::recent_starts(&k);
        if let [.., before, last] = starts[..] {
            assert!(
                last - before >= want as f64,
                "kill {i}: restarted {} ms after the previous start, schedule says at least {want}: {k}",
                last - before
            );
            spacing_checked += 1;
        }
        let new_pid = k["pid"].as_i64().unwrap();
        assert_ne!(new_pid, pid);
        pid = new_pid;
        observed += 1;
        // The old kubelet was reaped before the new one started.
        let z = zombies(&node);
        max_zombies = max_zombies.max(z);
        assert_eq!(z, 0, "kill {i}: zombies in /proc");
    }
    assert_eq!(node.pids("kubelet"), vec![pid], "exactly one kubelet at the end");
    let end_zombies = zombies(&node);
    assert_eq!(end_zombies, 0);
    report(
        &build,
        "storm-kubelet",
        &[
            ("kills", kills.to_string()),
            ("restarts_observed", observed.to_string()),
            ("backoff_checked", spacing_checked.to_string()),
            ("max_backoff_ms", schedule.delay_ms(kills).to_string()),
            ("zombies_max", max_zombies.to_string()),
            ("zombies_end", end_zombies.to_string()),
            ("kubelets_end", by_comm(&node, "kubelet").to_string()),
            ("wall_s", format!("{:.0}", started.elapsed().as_secs_f64())),
        ],
    );
    assert_eq!(observed, kills);
}

/// init's line for each handoff death: `handoff /sbin/basalt-agent (pid N)
/// killed by SIGKILL (137) after X s; restarting in D ms`, as (X s, D ms).
fn handoff_restarts(console: &str) -> Vec<(f64, u64)> {
    console
        .lines()
        .filter(|l| l.contains("basalt-init: warning: handoff "))
        .filter_map(|l| {
            let after = l.split(" after ").nth(1)?;
            let (ran, rest) = after.split_once(" s; restarting in ")?;
            let delay = rest.trim_end_matches('\r').strip_suffix(" ms")?;
            Some((ran.parse().ok()?, delay.parse().ok()?))
        })
        .collect()
}

#[test]
fn agent_killed_again_and_again_is_restarted_and_never_doubles_a_service() {
    let build = Build::from_env();
    let profile = Profile::from_env();
    // init's schedule for the agent: 100 ms doubling to 10 s; quick kills
    // walk it up, so 20 kills wait about 100 + 200 + ... + 6400 + 13 x 10 000
    // ms = 143 s in init's backoff alone.
    let kills: u32 = profile.pick(5, 20);
    let schedule = Backoff {
        initial_ms: 100,
        max_ms: 10_000,
        stable_after_ms: 30_000,
    };
    let started = Instant::now();
    let node = Node::boot(&build, "storm-agent", "");
    ok(
        &node.vm,
        node.apply(
            &mut node.serial(),
            &node.sign(&node_config(&node.id, 1, "storm", (100, 1000))),
        ),
    );
    let s = poll_status(&node, "services running", WAIT, |s| {
        Node::service(s, "kubelet")["state"] == "running" && Node::service(s, "testhands")["state"] == "running"
    });
    let kubelet = Node::service(&s, "kubelet")["pid"].as_i64().unwrap();
    let hands = Node::service(&s, "testhands")["pid"].as_i64().unwrap();
    let mut agent = node.pids("basalt-agent");
    assert_eq!(agent.len(), 1);

    let mut observed = 0u32;
    for i in 1..=kills {
        let killed = node.hands("kill basalt-agent 9");
        assert_eq!(killed["killed"], json!(agent), "kill {i}");
        // kill(2) returns before the agent is gone: wait until it is, so
        // that whoever answers status next is a new agent. init's delay is
        // at most 10 s, and Node::status retries the connection for 30 s.
        let deadline = Instant::now() + WAIT;
        while node.pids("basalt-agent") == agent {
            assert!(Instant::now() < deadline, "kill {i}: the agent did not die");
            std::thread::sleep(Duration::from_millis(20));
        }
        let s = node.status();
        let now = node.pids("basalt-agent");
        assert_eq!(now.len(), 1, "kill {i}: one agent: {now:?}");
        assert_ne!(now, agent, "kill {i}: a new agent");
        agent = now;
        observed += 1;
        for (name, pid) in [("kubelet", kubelet), ("testhands", hands)] {
            let svc = Node::service(&s, name);
            assert_eq!(svc["pid"], pid, "kill {i}: {name} adopted, not started again: {svc}");
            assert_eq!(svc["adopted"], true, "kill {i}: {svc}");
            assert_eq!(svc["restarts"], 0, "kill {i}: {svc}");
            assert_eq!(node.pids(name), vec![pid], "kill {i}: one {name}, never two");
        }
        assert_eq!(s["config"]["generation"], 1, "kill {i}: the config survived");
    }
    let procs = node.hands("procs");
    assert_eq!(procs["zombies"], 0, "{procs}");
    for comm in ["basalt-agent", "kubelet", "testhands"] {
        assert_eq!(procs["by_comm"][comm], 1, "{comm}: {procs}");
    }
    // init restarted the agent on its schedule: the streak grows with each
    // quick death and starts over after a run of 30 s or more.
    let restarts = handoff_restarts(&node.vm.console());
    assert_eq!(restarts.len(), kills as usize, "init saw every death: {restarts:?}");
    let mut streak = 0;
    let mut waited_ms = 0;
    for (k, (ran_s, delay)) in restarts.iter().enumerate() {
        streak = schedule.next_streak(streak, (ran_s * 1000.0) as u64);
        assert_eq!(*delay, schedule.delay_ms(streak), "death {}: {restarts:?}", k + 1);
        waited_ms += delay;
    }
    report(
        &build,
        "storm-agent",
        &[
            ("kills", kills.to_string()),
            ("restarts_observed", observed.to_string()),
            ("init_restarts_logged", restarts.len().to_string()),
            ("init_backoff_total_ms", waited_ms.to_string()),
            ("services_doubled", "0".into()),
            ("zombies_end", procs["zombies"].to_string()),
            ("wall_s", format!("{:.0}", started.elapsed().as_secs_f64())),
        ],
    );
    assert_eq!(observed, kills);
}

/// One remote-hands command, or None if the fixture is gone (it is one of
/// the services a shutdown stops).
fn try_hands(node: &Node, command: &str) -> Option<Value> {
    let uds = node.vm.vm.vsock_uds_path()?;
    let stream = basalt_qemu::vsock_connect(uds, HANDS_VSOCK_PORT, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut w = stream.try_clone().ok()?;
    w.write_all(format!("{command}\n").as_bytes()).ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

/// A service that ignores SIGTERM: only a SIGKILL stops it.
fn stubborn(name: &str, after: &str, stop_timeout_ms: u64) -> Value {
    let mut s = service(name, &[TESTHANDS, "--ignore-sigterm"], &[after], 100, 1000);
    s["stop_timeout_ms"] = json!(stop_timeout_ms);
    s
}

/// The agent's wait for a process that ignores SIGKILL (supervisor.rs).
const AGENT_KILL_GRACE_S: u64 = 5;
/// basalt-init's defaults (boot_params.rs, shutdown.rs).
const INIT_SHUTDOWN_TIMEOUT_S: u64 = 10;
const INIT_KILL_GRACE_S: u64 = 2;
/// sync, unmount, reboot(2) and QEMU's exit: no timeout bounds these in the
/// design; under TCG they take well under a second. This is the slack.
const TEARDOWN_SLACK_S: u64 = 15;

/// The agent's part of a poweroff, at most: each service's stop timeout
/// plus the agent's SIGKILL grace, one service after another.
fn agent_stop_bound_s(cfg: &Value) -> u64 {
    cfg["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stop_timeout_ms"].as_u64().unwrap().div_ceil(1000) + AGENT_KILL_GRACE_S)
        .sum()
}

/// The most a poweroff may take by design: the agent's stops, then init's
/// wait for the agent, SIGTERM to everyone else, SIGKILL grace; then
/// teardown. A correctness bound, not a benchmark: it is what the design
/// promises, and the measured time is reported beside it.
fn shutdown_bound(cfg: &Value) -> Duration {
    Duration::from_secs(agent_stop_bound_s(cfg) + 2 * INIT_SHUTDOWN_TIMEOUT_S + INIT_KILL_GRACE_S + TEARDOWN_SLACK_S)
}

fn signed_poweroff(node: &Node) -> Response {
    node.signed(CommandKind::Poweroff)
}

/// Status, or None if the agent does not answer (it exits at the end of a
/// shutdown).
fn try_status(node: &Node) -> Option<Value> {
    let uds = node.vm.vm.vsock_uds_path()?.display().to_string();
    let ep = basaltctl::endpoint::Endpoint::parse(&format!("vsock-uds:{uds}:{AGENT_VSOCK_PORT}")).ok()?;
    let mut client = basaltctl::client::Client::connect(&ep, Duration::from_secs(5)).ok()?;
    match client.call("status", Map::new()).ok()? {
        Response::Ok { result, .. } => Some(result),
        Response::Error { .. } => None,
    }
}

/// Services die at every point of a signed poweroff: kubelet while it waits
/// its turn (again and again), one stubborn service while the agent is
/// stopping it, another left to the agent's SIGKILL. The stop sequence
/// copes with each, and the VM powers off within the bound.
#[test]
fn services_killed_during_shutdown_still_power_off_within_the_bound() {
    let build = Build::from_env();
    let node = Node::boot(&build, "storm-shutdown", "");
    let mut cfg = node_config(&node.id, 1, "going-down", (100, 1000));
    let services = cfg["services"].as_array_mut().unwrap();
    services.push(stubborn("stubborn-b", "kubelet", 5000));
    services.push(stubborn("stubborn-a", "stubborn-b", 2000));
    ok(&node.vm, node.apply(&mut node.serial(), &node.sign(&cfg)));
    poll_status(&node, "all running", WAIT, |s| {
        ["testhands", "kubelet", "stubborn-b", "stubborn-a"]
            .iter()
            .all(|n| Node::service(s, n)["state"] == "running")
    });
    let bound = shutdown_bound(&cfg);

    let r = ok(&node.vm, signed_poweroff(&node));
    let t = Instant::now();
    assert_eq!(
        r["stopping"],
        json!(["stubborn-a", "stubborn-b", "kubelet", "testhands"])
    );
    // Until the fixture itself is stopped: kill kubelet, whose turn has not
    // come; and once the agent is stopping stubborn-b (it ignores SIGTERM),
    // SIGKILL it before its stop timeout does.
    let mut attempts = 0;
    let mut landed = 0;
    let mut killed_while_stopping = None;
    while t.elapsed() < bound {
        let Some(v) = try_hands(&node, "kill kubelet 9") else {
            break;
        };
        attempts += 1;
        landed += v["killed"].as_array().map_or(0, Vec::len);
        if killed_while_stopping.is_none() {
            let b = try_status(&node).map(|s| Node::service(&s, "stubborn-b"));
            if let Some(b) = b.filter(|b| b["state"] == "stopping") {
                let pid = b["pid"].as_i64().expect("stubborn-b pid");
                let r = try_hands(&node, &format!("signal {pid} 9")).expect("testhands answers");
                assert_eq!(r["signalled"], json!([pid]), "{r}");
                killed_while_stopping = Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = node.vm.expect_exit(bound);
    let took = t.elapsed();
    assert!(status.success(), "QEMU exit {status:?}");
    let console = node.vm.console();
    assert!(landed >= 1, "kubelet was killed during the shutdown");
    let b = killed_while_stopping.expect("stubborn-b was seen stopping and killed");
    for needle in [
        "stubborn-a (pid".to_string(),
        "did not stop in time: SIGKILL".into(),
        format!("stopped stubborn-b (pid {b}): killed by SIGKILL"),
        "stopped kubelet".into(),
        "services stopped; sent SIGTERM to init".into(),
        "shutdown: power off after".into(),
        "reboot: Power down".into(),
    ] {
        assert!(console.contains(&needle), "{needle:?} missing:\n{console}");
    }
    assert!(
        !console.contains(&format!("stubborn-b (pid {b}) did not stop in time")),
        "stubborn-b's stop ended when it died, not at its timeout"
    );
    assert!(
        !console.contains("basalt-agent: restarted "),
        "nothing restarts during a shutdown"
    );
    report(
        &build,
        "storm-shutdown",
        &[
            ("kubelet_kill_attempts", attempts.to_string()),
            ("kubelet_kills_landed", landed.to_string()),
            ("killed_while_being_stopped", "1".into()),
            ("left_to_agent_sigkill", "1".into()),
            ("poweroff_s", format!("{:.1}", took.as_secs_f64())),
            ("bound_s", bound.as_secs().to_string()),
        ],
    );
}

/// The agent dies after it accepted a signed poweroff and before it told
/// init: init restarts it, and the new agent must finish the poweroff, not
/// start the services again.
#[test]
fn agent_killed_during_shutdown_still_powers_off() {
    let build = Build::from_env();
    let node = Node::boot(&build, "storm-shutdown-agent", "");
    let mut cfg = node_config(&node.id, 1, "going-down", (100, 1000));
    cfg["services"]
        .as_array_mut()
        .unwrap()
        .push(stubborn("stubborn", "kubelet", 3000));
    ok(&node.vm, node.apply(&mut node.serial(), &node.sign(&cfg)));
    poll_status(&node, "all running", WAIT, |s| {
        ["testhands", "kubelet", "stubborn"]
            .iter()
            .all(|n| Node::service(s, n)["state"] == "running")
    });
    // The stops may start over once in the new agent, after init's first
    // restart delay (100 ms; 10 s is its most).
    let bound = shutdown_bound(&cfg) + Duration::from_secs(agent_stop_bound_s(&cfg) + 10);
    ok(&node.vm, signed_poweroff(&node));
    let t = Instant::now();
    let killed = try_hands(&node, "kill basalt-agent 9").expect("testhands answers");
    assert_eq!(killed["killed"].as_array().map_or(0, Vec::len), 1, "{killed}");
    let status = node.vm.expect_exit(bound);
    let took = t.elapsed();
    assert!(status.success(), "QEMU exit {status:?}");
    let console = node.vm.console();
    let resumed = console
        .find("resuming the signed poweroff")
        .unwrap_or_else(|| panic!("the new agent did not resume the poweroff:\n{console}"));
    let after = &console[resumed..];
    assert!(
        !after.contains("basalt-agent: started "),
        "a service started again:\n{after}"
    );
    for needle in [
        "sent SIGTERM to init",
        "shutdown: power off after",
        "reboot: Power down",
    ] {
        assert!(after.contains(needle), "{needle:?} missing:\n{after}");
    }
    report(
        &build,
        "storm-shutdown-agent",
        &[
            ("agent_killed_mid_shutdown", "1".into()),
            ("poweroff_s", format!("{:.1}", took.as_secs_f64())),
            ("bound_s", bound.as_secs().to_string()),
        ],
    );
}
