//! Service supervision by the real agent: restarts with backoff, adoption by
//! a restarted agent, ordered stops, signed poweroff and reboot, log rings.

mod support;

use basalt_common::command::CommandKind;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::os::unix::process::ExitStatusExt;
use support::*;

#[test]
fn a_crashing_service_restarts_with_growing_backoff() {
    let node = TestNode::start("backoff", Options::default());
    let mut crasher = node.service_spec("crasher", "echo crash; exit 3");
    crasher["restart"] = json!({"policy": "always", "backoff_initial_ms": 100, "backoff_max_ms": 400});
    expect_ok(node.apply(&config(1, vec![crasher], vec![])));
    let s = node.wait_status("five starts", |s| {
        service_in(s, "crasher").is_some_and(|c| c["recent_starts_ms"].as_array().unwrap().len() >= 5)
    });
    let c = service_in(&s, "crasher").unwrap();
    let starts: Vec<u64> = c["recent_starts_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    // Start-to-start gap = run time + delay: at least the delay, 100 ms doubling to 400.
    for (i, delay) in [100u64, 200, 400, 400].iter().enumerate() {
        let gap = starts[i + 1] - starts[i];
        assert!(
            gap + 1 >= *delay && gap < delay + 2_000,
            "gap {i} is {gap} ms, delay {delay} ms: {starts:?}"
        );
    }
    assert!(c["restarts"].as_u64().unwrap() >= 4, "{c}");
    assert_eq!(c["last_exit"]["status"], "exited with status 3");
    let s = node.wait_status("degraded while backing off", |s| {
        service_in(s, "crasher").is_some_and(|c| c["state"] == "backoff")
    });
    assert_eq!(s["state"], "degraded");
    assert_eq!(service_in(&s, "crasher").unwrap()["backoff_ms"], 400);

    // A one-shot with policy never stays exited, and a success is not degraded.
    let mut once = node.service_spec("once", "echo done; exit 0");
    once["restart"] = json!({"policy": "never"});
    expect_ok(node.apply(&config(2, vec![once], vec![])));
    let s = node.wait_status("one-shot exited", |s| {
        service_in(s, "once").is_some_and(|o| o["state"] == "exited")
    });
    assert_eq!(s["state"], "configured");
    assert_eq!(service_in(&s, "once").unwrap()["restarts"], 0);
}

#[test]
fn a_restarted_agent_adopts_services_instead_of_starting_them_twice() {
    let mut node = TestNode::start("adopt", Options::default());
    let mut keeper = node.service_spec("keeper", "echo started; while :; do sleep 1; done");
    keeper["restart"] = json!({"backoff_initial_ms": 100});
    expect_ok(node.apply(&config(1, vec![keeper], vec![])));
    let pid = node.wait_running("keeper")["pid"].as_i64().unwrap() as i32;

    let status = node.stop_agent(Signal::SIGKILL);
    assert_eq!(status.signal(), Some(9));
    assert!(alive(pid), "the service died with the agent");

    node.start_agent();
    let s = node.status();
    let keeper = service_in(&s, "keeper").unwrap();
    assert_eq!(keeper["pid"], pid, "{s:#}");
    assert_eq!(keeper["state"], "running");
    assert_eq!(keeper["adopted"], true);
    assert_eq!(keeper["restarts"], 0);
    assert_eq!(s["state"], "configured");
    assert_eq!(s["config"]["generation"], 1);
    let procs = node.marked_processes();
    assert_eq!(procs.len(), 1, "started twice: {procs:?}");
    assert!(node.stderr().contains("adopted keeper"), "{}", node.stderr());
    // The generation floor survived too.
    let (code, _) = expect_error(node.apply(&config(1, vec![], vec![])));
    assert_eq!(code, "stale_generation");

    // The adopted process dies: the new agent notices through its pidfd and
    // restarts it, once.
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let s = node.wait_status("keeper restarted", |s| {
        service_in(s, "keeper").is_some_and(|k| k["state"] == "running" && k["pid"] != pid)
    });
    let keeper = service_in(&s, "keeper").unwrap();
    assert_eq!(keeper["restarts"], 1);
    assert_eq!(keeper["adopted"], false);
    assert!(
        keeper["last_exit"]["status"]
            .as_str()
            .unwrap()
            .contains("status unknown"),
        "{keeper}"
    );
    let procs = node.marked_processes();
    assert_eq!(procs.len(), 1, "{procs:?}");
}

#[test]
fn sigterm_stops_services_in_reverse_order_and_exits() {
    let mut node = TestNode::start("sigterm", Options::default());
    let first = node.service_spec("first", "while :; do sleep 1; done");
    let mut second = node.service_spec(
        "second",
        "trap 'echo got TERM; exit 0' TERM; echo trap set; while :; do sleep 0.1; done",
    );
    second["after"] = json!(["first"]);
    expect_ok(node.apply(&config(1, vec![second, first], vec![])));
    let p1 = node.wait_running("first")["pid"].as_i64().unwrap() as i32;
    let p2 = node.wait_running("second")["pid"].as_i64().unwrap() as i32;
    node.wait_status("second's trap set", |_| node.logs("second", 1) == ["trap set"]);
    let status = node.stop_agent(Signal::SIGTERM);
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(!alive(p1) && !alive(p2));
    let log = node.stderr();
    let stop2 = log.find("stopped second").expect("second stopped");
    let stop1 = log.find("stopped first").expect("first stopped");
    assert!(stop2 < stop1, "stop order:\n{log}");
    assert!(
        log.contains("stopped second (pid") && log.contains("exited with status 0"),
        "{log}"
    );
}

#[test]
fn signed_poweroff_stops_services_then_signals_init_and_cannot_be_replayed() {
    let mut node = TestNode::start("poweroff", Options::default());
    let a = node.service_spec("a", "while :; do sleep 1; done");
    let mut b = node.service_spec("b", "while :; do sleep 1; done");
    b["after"] = json!(["a"]);
    expect_ok(node.apply(&config(1, vec![a, b], vec![])));
    node.wait_running("a");
    node.wait_running("b");

    // Refusals first: none of them may start a shutdown.
    let mut wrong_node = basalt_common::command::Command {
        kind: CommandKind::Poweroff,
        node: "other-node".into(),
        nonce: node.status()["nonce"].as_str().unwrap().into(),
    };
    let env = basalt_common::envelope::SignedEnvelope::sign(&node.key, wrong_node.to_payload());
    let (code, _) = expect_error(node.call("poweroff", json!({"envelope": env.to_json()})));
    assert_eq!(code, "wrong_node");
    wrong_node.node = NODE.into();
    wrong_node.nonce = "00".repeat(16);
    let env = basalt_common::envelope::SignedEnvelope::sign(&node.key, wrong_node.to_payload());
    let (code, msg) = expect_error(node.call("poweroff", json!({"envelope": env.to_json()})));
    assert_eq!((code.as_str(), msg.contains("not outstanding")), ("bad_nonce", true));
    let reboot_as_poweroff = node.command(CommandKind::Reboot);
    let (code, _) = expect_error(node.call("poweroff", json!({"envelope": reboot_as_poweroff.to_json()})));
    assert_eq!(code, "wrong_kind");
    assert!(
        node.init.try_wait().unwrap().is_none(),
        "init was signalled by a refused command"
    );
    assert_eq!(node.status()["shutting_down"], Value::Null);

    let poweroff = node.command(CommandKind::Poweroff);
    let r = expect_ok(node.call("poweroff", json!({"envelope": poweroff.to_json()})));
    assert_eq!(r, json!({"accepted": "poweroff", "stopping": ["b", "a"]}));
    let init_status = wait_child(&mut node.init, TIMEOUT).expect("init was not signalled");
    assert_eq!(init_status.signal(), Some(Signal::SIGTERM as i32));
    let log = node.stderr();
    let (b_at, a_at) = (log.find("stopped b").unwrap(), log.find("stopped a").unwrap());
    let signalled = log.find("sent SIGTERM to init").unwrap();
    assert!(b_at < a_at && a_at < signalled, "order:\n{log}");
    assert!(node.marked_processes().is_empty());

    // The same signed command again: its nonce was used up.
    let (code, _) = expect_error(node.call("poweroff", json!({"envelope": poweroff.to_json()})));
    assert_eq!(code, "bad_nonce");
    let s = node.status();
    assert_eq!(s["shutting_down"], "poweroff");
    let (code, _) = expect_error(node.apply(&config(2, vec![], vec![])));
    assert_eq!(code, "shutting_down");
    // Init then asks the agent to exit, and it does.
    assert_eq!(node.stop_agent(Signal::SIGTERM).code(), Some(0));
}

#[test]
fn a_signed_poweroff_survives_an_agent_crash_mid_shutdown() {
    let mut node = TestNode::start("poweroff-crash", Options::default());
    let a = node.service_spec("a", "while :; do sleep 1; done");
    // Ignores SIGTERM (and so does each sleep it runs): the stop waits out
    // its timeout, and the agent dies in the middle of it.
    let mut stubborn = node.service_spec("stubborn", "trap '' TERM; echo trap set; while :; do sleep 0.2; done");
    stubborn["after"] = json!(["a"]);
    stubborn["stop_timeout_ms"] = json!(1500);
    expect_ok(node.apply(&config(1, vec![a, stubborn], vec![])));
    node.wait_running("a");
    node.wait_running("stubborn");
    // "running" means exec'd, not that the shell has run its trap yet: a
    // SIGTERM before it kills stubborn, and the restarted agent then has
    // nothing of it left to stop.
    node.wait_status("stubborn's trap set", |_| node.logs("stubborn", 1) == ["trap set"]);

    let poweroff = node.command(CommandKind::Poweroff);
    let r = expect_ok(node.call("poweroff", json!({"envelope": poweroff.to_json()})));
    assert_eq!(r["stopping"], json!(["stubborn", "a"]));
    assert_eq!(node.stop_agent(Signal::SIGKILL).signal(), Some(9));
    assert!(node.init.try_wait().unwrap().is_none(), "init signalled too early");

    // The restarted agent finishes the accepted poweroff: it starts nothing,
    // stops what is left (with the stop timeout the config gave), then
    // signals init.
    node.start_agent();
    let s = node.status();
    assert_eq!(s["shutting_down"], "poweroff", "{s:#}");
    let (code, _) = expect_error(node.apply(&config(2, vec![], vec![])));
    assert_eq!(code, "shutting_down");
    let init_status = wait_child(&mut node.init, TIMEOUT).expect("init was not signalled");
    assert_eq!(init_status.signal(), Some(Signal::SIGTERM as i32));
    // Each stop ends with SIGKILL to the service's whole group, but the agent
    // waits only for the service's own pid: a member the kill caught between
    // fork and exec (it still has the shell's argv) can take a moment to be
    // scheduled and die on a loaded machine. Nothing else kills them here.
    node.wait_status("every service process gone", |_| node.marked_processes().is_empty());
    let log = node.stderr();
    let resumed = log.find("resuming the signed poweroff").expect(&log);
    let after = &log[resumed..];
    assert!(!after.contains("started "), "a service started again:\n{log}");
    assert!(
        after.contains("stopping stubborn") && after.contains("SIGKILL after 1500 ms"),
        "{log}"
    );
    assert!(after.contains("sent SIGTERM to init"), "{log}");
    assert_eq!(node.stop_agent(Signal::SIGTERM).code(), Some(0));
}

#[test]
fn signed_reboot_sends_sigint_to_init() {
    let mut node = TestNode::start("reboot", Options::default());
    expect_ok(node.apply(&config(
        1,
        vec![node.service_spec("svc", "while :; do sleep 1; done")],
        vec![],
    )));
    node.wait_running("svc");
    let reboot = node.command(CommandKind::Reboot);
    let r = expect_ok(node.call("reboot", json!({"envelope": reboot.to_json()})));
    assert_eq!(r["accepted"], "reboot");
    let status = wait_child(&mut node.init, TIMEOUT).expect("init was not signalled");
    assert_eq!(status.signal(), Some(Signal::SIGINT as i32));
}

#[test]
fn service_logs_stay_bounded_and_serve_the_newest_lines() {
    let cap = 64 * 1024;
    let opts = Options {
        extra_args: vec!["--log-cap".into(), cap.to_string()],
        ..Options::default()
    };
    let node = TestNode::start("logring", opts);
    let chatty = node.service_spec("chatty", "seq 1 100000; echo finished; while :; do sleep 1; done");
    expect_ok(node.apply(&config(1, vec![chatty], vec![])));
    node.wait_status("all output logged", |_| node.logs("chatty", 1) == ["finished"]);
    assert_eq!(node.logs("chatty", 3), ["99999", "100000", "finished"]);
    let path = node.root.join("run/basalt/log/chatty.log");
    use std::os::unix::fs::MetadataExt;
    node.wait_status("log trimmed", |_| {
        let m = std::fs::metadata(&path).unwrap();
        m.size() > 500_000 && m.blocks() * 512 <= cap + 64 * 1024
    });
    // The console got a note instead of half a megabyte.
    assert!(node.stderr().contains("bytes not shown here"), "{}", node.stderr());

    // A cursor from before the trim says lines were lost, then continues.
    let r = expect_ok(node.call("logs", json!({"source": "chatty", "since": 0})));
    assert_eq!(r["truncated"], true);
    let first = r["lines"][0].as_str().unwrap();
    assert!(first.parse::<u32>().unwrap() > 80_000, "{first}");
}

#[test]
fn peak_rss_is_reported_and_small() {
    let node = TestNode::start("rss", Options::default());
    expect_ok(node.apply(&config(
        1,
        vec![node.service_spec("svc", "while :; do sleep 1; done")],
        vec![],
    )));
    node.wait_running("svc");
    let s = node.status();
    let rss = s["agent_peak_rss_kib"].as_u64().unwrap();
    println!("agent peak RSS (debug build): {rss} KiB");
    assert!(rss > 0 && rss < 16 * 1024, "{rss} KiB");
    // --init-pid is the test's sleep; its VmHWM is reported as init's.
    assert!(s["init_peak_rss_kib"].as_u64().unwrap() > 0);
}
