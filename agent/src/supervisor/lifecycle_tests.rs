//! The supervisor's decisions over time, against the fake processes and
//! clock of `fake.rs`: crash loops, backoff growth and reset, `after`
//! order, stops (in order, with SIGKILL, during a backoff) and adoption.
//! The real agent runs the same paths in agent/tests/supervision.rs.

use super::fake::{Call, FakeProcesses, TestDir};
use super::*;
use basalt_common::backoff::Backoff;
use basalt_common::config::RestartSpec;

/// A supervisor on fake processes, with the clock as the test sets it.
struct Rig {
    sup: Supervisor<FakeProcesses>,
    logs: PathBuf,
    proc_dir: PathBuf,
    _dirs: Vec<TestDir>,
}

impl Rig {
    fn new(name: &str) -> Self {
        let logs = TestDir::new(&format!("{name}-logs"));
        let proc_dir = TestDir::new(&format!("{name}-proc"));
        let mut rig = Rig::on(logs.path(), proc_dir.path(), 100);
        rig._dirs = vec![logs, proc_dir];
        rig
    }

    /// A rig whose first tick has started `specs`, as far as their order allows.
    fn started(name: &str, specs: &[ServiceSpec]) -> Self {
        let mut rig = Rig::new(name);
        rig.apply(specs);
        rig.tick();
        rig
    }

    /// A second agent on the same log and proc directories: `self` after a restart.
    fn restarted(&self) -> Self {
        let mut next = Rig::on(&self.logs, &self.proc_dir, 500);
        next.fake().now_ns = self.now();
        next
    }

    fn on(logs: &Path, proc_dir: &Path, first_pid: i32) -> Self {
        let fake = FakeProcesses::new(first_pid, proc_dir);
        Rig {
            sup: Supervisor::with_processes(fake, logs.to_path_buf(), proc_dir.to_path_buf()),
            logs: logs.to_path_buf(),
            proc_dir: proc_dir.to_path_buf(),
            _dirs: Vec::new(),
        }
    }

    fn fake(&mut self) -> &mut FakeProcesses {
        &mut self.sup.procs
    }

    fn now(&self) -> u64 {
        self.sup.procs.now_ns
    }

    fn advance_ms(&mut self, ms: u64) {
        self.fake().advance_ms(ms);
    }

    fn apply(&mut self, specs: &[ServiceSpec]) -> Plan {
        let now = self.now();
        self.sup.apply(specs, now)
    }

    fn tick(&mut self) {
        let now = self.now();
        self.sup.tick(now);
    }

    fn reap(&mut self) {
        let now = self.now();
        self.sup.reap(now);
    }

    fn service(&self, name: &str) -> &Service {
        self.sup
            .services
            .iter()
            .find(|s| s.spec.name == name)
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    fn state(&self, name: &str) -> &'static str {
        self.service(name).run.name()
    }

    fn pid(&self, name: &str) -> Pid {
        self.sup.procs.pid_of(&program(name))
    }
}

fn program(name: &str) -> String {
    format!("/bin/{name}")
}

fn svc(name: &str, after: &[&str], policy: RestartPolicy) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        exec: vec![program(name)],
        env: Default::default(),
        after: after.iter().map(|s| s.to_string()).collect(),
        restart: RestartSpec {
            policy,
            backoff: Backoff::default(),
        },
        stop_timeout_ms: 1000,
    }
}

fn always(name: &str) -> ServiceSpec {
    svc(name, &[], RestartPolicy::Always)
}

#[test]
fn a_crash_loop_backs_off_doubling_to_the_cap() {
    let mut rig = Rig::new("crashloop");
    let mut crasher = always("crasher");
    crasher.restart.backoff = Backoff {
        initial_ms: 100,
        max_ms: 400,
        stable_after_ms: 60_000,
    };
    rig.apply(&[crasher]);
    rig.tick();
    let mut delays = Vec::new();
    for _ in 0..10 {
        let pid = rig.pid("crasher");
        rig.advance_ms(5);
        rig.fake().exit(pid, 3);
        rig.reap();
        assert_eq!(rig.state("crasher"), "backoff");
        assert!(rig.sup.degraded());
        let delay = rig.service("crasher").backoff_ms.unwrap();
        delays.push(delay);
        // Due exactly `delay` after the exit, and not a nanosecond before.
        let due = rig.now() + delay * NS_PER_MS;
        assert_eq!(rig.sup.next_deadline(), Some(due));
        rig.fake().now_ns = due - 1;
        rig.tick();
        assert_eq!(rig.state("crasher"), "backoff");
        rig.fake().now_ns = due;
        rig.tick();
        assert_eq!(rig.state("crasher"), "running");
        assert!(!rig.sup.degraded());
    }
    assert_eq!(delays, [100, 200, 400, 400, 400, 400, 400, 400, 400, 400]);
    let s = rig.service("crasher");
    assert_eq!(s.restarts, 10);
    assert_eq!(s.streak, 10);
    let last = s.last_exit.as_ref().unwrap();
    assert_eq!((&last.kind, last.ran_ms), (&ExitKind::Code(3), 5));
    assert_eq!(rig.sup.procs.started().len(), 11);
    // Status keeps only the newest starts, the current one last.
    assert_eq!(s.recent_starts_ns.len(), RECENT_STARTS);
    assert_eq!(s.recent_starts_ns.back().copied(), Some(rig.now()));
    // Each exit took down whatever the crasher left in its process group.
    let kills = rig.sup.procs.signals();
    assert_eq!(kills.len(), 10);
    assert!(kills.iter().all(|&(_, sig)| sig == Signal::SIGKILL), "{kills:?}");
}

#[test]
fn a_stable_minute_resets_the_backoff() {
    let mut rig = Rig::started("reset", &[always("flaky")]);
    let mut delays = Vec::new();
    for ran_ms in [5, 5, 5, 60_000, 5, 59_999, 5] {
        let pid = rig.pid("flaky");
        rig.advance_ms(ran_ms);
        rig.fake().exit(pid, 1);
        rig.reap();
        let delay = rig.service("flaky").backoff_ms.unwrap();
        delays.push(delay);
        rig.advance_ms(delay);
        rig.tick();
        assert_eq!(rig.state("flaky"), "running");
    }
    // A run of a full minute (the default stable_after) starts the schedule
    // over; one millisecond less does not.
    assert_eq!(delays, [100, 200, 400, 100, 200, 400, 800]);
}

#[test]
fn services_start_only_after_what_they_come_after() {
    // Listed against their order: each tick can start only the next one.
    let mut rig = Rig::new("after");
    let specs = [
        svc("c", &["b"], RestartPolicy::Always),
        svc("b", &["a"], RestartPolicy::Always),
        always("a"),
    ];
    rig.apply(&specs);
    let mut seen = Vec::new();
    for _ in 0..4 {
        rig.tick();
        seen.push(rig.sup.procs.started().join(" "));
    }
    assert_eq!(
        seen,
        [
            "/bin/a",
            "/bin/a /bin/b",
            "/bin/a /bin/b /bin/c",
            "/bin/a /bin/b /bin/c"
        ]
    );

    // Listed in order, all start in one tick, in that order.
    let mut rig = Rig::new("after-in-order");
    rig.apply(&[
        always("a"),
        svc("b", &["a"], RestartPolicy::Always),
        svc("c", &["a", "b"], RestartPolicy::Always),
    ]);
    rig.tick();
    assert_eq!(rig.sup.procs.started(), ["/bin/a", "/bin/b", "/bin/c"]);
}

#[test]
fn a_dependency_in_backoff_holds_back_what_comes_after_it() {
    let mut rig = Rig::started(
        "after-backoff",
        &[svc("app", &["db"], RestartPolicy::Always), always("db")],
    );
    let db = rig.pid("db");
    rig.fake().exit(db, 1);
    rig.reap();
    for _ in 0..3 {
        rig.tick();
        assert_eq!(rig.state("app"), "waiting");
    }
    rig.advance_ms(100);
    rig.tick();
    assert_eq!((rig.state("db"), rig.state("app")), ("running", "waiting"));
    rig.tick();
    assert_eq!(rig.state("app"), "running");
    assert_eq!(rig.sup.procs.started(), ["/bin/db", "/bin/db", "/bin/app"]);
}

#[test]
fn a_one_shot_dependency_must_succeed() {
    for (code, app_state) in [(0, "running"), (1, "waiting")] {
        let mut rig = Rig::new(&format!("oneshot-{code}"));
        // Listed first, app is looked at before setup has started; setup then
        // exits before the next tick, as a quick one-shot does.
        rig.apply(&[
            svc("app", &["setup"], RestartPolicy::Always),
            svc("setup", &[], RestartPolicy::Never),
        ]);
        rig.tick();
        assert_eq!(rig.state("app"), "waiting");
        let setup = rig.pid("setup");
        rig.advance_ms(50);
        rig.fake().exit(setup, code);
        rig.reap();
        rig.advance_ms(60_000);
        rig.tick();
        assert_eq!(rig.state("setup"), "exited");
        assert_eq!(rig.state("app"), app_state, "setup exited {code}");
        assert_eq!(rig.sup.degraded(), code != 0);
    }
}

#[test]
fn a_stop_during_backoff_cancels_the_restart() {
    let mut rig = Rig::started("stop-backoff", &[always("a"), always("b")]);
    let (a, b) = (rig.pid("a"), rig.pid("b"));
    rig.fake().exit(a, 1);
    rig.reap();
    assert_eq!(rig.state("a"), "backoff");
    rig.fake().clear_calls();

    rig.sup.stop_all();
    rig.tick();
    // b (started last) is signalled; a has no process to stop.
    assert_eq!(rig.sup.procs.signals(), [(b, Signal::SIGTERM)]);
    rig.fake().kill(b, Signal::SIGTERM);
    rig.reap();
    rig.tick();
    assert!(rig.sup.all_stopped());
    assert_eq!(rig.sup.next_deadline(), None);
    // Long past a's restart time, and after b's exit: nothing starts again.
    rig.advance_ms(60_000);
    rig.tick();
    assert_eq!(rig.sup.procs.started(), Vec::<&str>::new());
    assert!(!rig.sup.procs.calls.iter().any(|c| matches!(c, Call::Spawn { .. })));
}

#[test]
fn an_apply_that_drops_a_service_in_backoff_never_restarts_it() {
    let mut rig = Rig::started("drop-backoff", &[always("a")]);
    let a = rig.pid("a");
    rig.fake().exit(a, 1);
    rig.reap();
    let plan = rig.apply(&[]);
    assert_eq!(plan.stopped, ["a"]);
    rig.fake().clear_calls();
    rig.advance_ms(1_000);
    rig.tick();
    assert!(rig.sup.all_stopped());
    assert_eq!(rig.sup.procs.calls, []);
}

#[test]
fn stops_go_one_at_a_time_in_reverse_start_order_with_sigkill_after_the_timeout() {
    let mut rig = Rig::started("stop-order", &[always("a"), always("b"), always("c")]);
    let (a, b, c) = (rig.pid("a"), rig.pid("b"), rig.pid("c"));
    rig.fake().clear_calls();
    rig.sup.stop_all();

    // c stops first, and nothing else is signalled until it has exited.
    rig.tick();
    rig.tick();
    assert_eq!(rig.sup.procs.signals(), [(c, Signal::SIGTERM)]);
    assert_eq!(rig.sup.next_deadline(), Some(rig.now() + 1000 * NS_PER_MS));
    rig.advance_ms(20);
    rig.fake().kill(c, Signal::SIGTERM);
    rig.reap();
    rig.fake().clear_calls();

    // b ignores SIGTERM: SIGKILL at its stop timeout, not before.
    rig.tick();
    assert_eq!(rig.sup.procs.signals(), [(b, Signal::SIGTERM)]);
    rig.advance_ms(999);
    rig.tick();
    assert_eq!(rig.sup.procs.signals().len(), 1);
    rig.advance_ms(1);
    rig.tick();
    assert_eq!(rig.sup.procs.signals(), [(b, Signal::SIGTERM), (b, Signal::SIGKILL)]);
    rig.fake().kill(b, Signal::SIGKILL);
    rig.reap();
    rig.fake().clear_calls();

    // a survives even SIGKILL (stuck in the kernel): given up on after the grace.
    rig.tick();
    rig.advance_ms(1000);
    rig.tick();
    assert_eq!(rig.sup.procs.signals(), [(a, Signal::SIGTERM), (a, Signal::SIGKILL)]);
    rig.fake().now_ns += KILL_GRACE_NS - 1;
    rig.tick();
    assert!(!rig.sup.all_stopped());
    rig.fake().now_ns += 1;
    rig.tick();
    assert!(rig.sup.all_stopped());
    assert_eq!(rig.sup.procs.started(), Vec::<&str>::new());
}

#[test]
fn an_exit_while_waiting_to_be_stopped_is_not_restarted() {
    let mut rig = Rig::started("exit-in-stop", &[always("a"), always("b")]);
    let (a, b) = (rig.pid("a"), rig.pid("b"));
    rig.fake().clear_calls();
    rig.sup.stop_all();
    rig.tick();
    // a crashes while b is being stopped.
    rig.fake().exit(a, 1);
    rig.reap();
    rig.fake().kill(b, Signal::SIGTERM);
    rig.reap();
    rig.advance_ms(10_000);
    rig.tick();
    assert!(rig.sup.all_stopped());
    assert_eq!(
        rig.sup.procs.signals(),
        [(b, Signal::SIGTERM), (a, Signal::SIGKILL), (b, Signal::SIGKILL)],
        "only the exits' group cleanup follows b's SIGTERM"
    );
    assert_eq!(rig.sup.procs.started(), Vec::<&str>::new());
}

#[test]
fn a_changed_service_starts_again_only_after_its_old_process_stopped() {
    let mut rig = Rig::new("change");
    rig.fake().spawn_ns = 2 * NS_PER_MS;
    rig.apply(&[always("a")]);
    rig.tick();
    let old = rig.pid("a");
    assert_eq!(rig.service("a").apply_to_exec_ns, Some(2 * NS_PER_MS));
    rig.advance_ms(10);

    let mut changed = always("a");
    changed.env.insert("X".into(), "1".into());
    let plan = rig.apply(&[changed]);
    assert_eq!(plan.restarted, ["a"]);
    rig.fake().clear_calls();
    rig.tick();
    assert_eq!(rig.sup.procs.calls, [Call::Signal(old, Signal::SIGTERM)]);
    rig.advance_ms(30);
    rig.fake().kill(old, Signal::SIGTERM);
    rig.reap();
    rig.tick();
    let new = rig.pid("a");
    assert_ne!(new, old);
    let env = rig.sup.procs.calls.iter().find_map(|c| match c {
        Call::Spawn { env, .. } => Some(env.clone()),
        _ => None,
    });
    let want = vec![("PATH".to_string(), SERVICE_PATH.to_string()), ("X".into(), "1".into())];
    assert_eq!(env, Some(want));
    // apply→exec spans the wait for the old process and the exec itself.
    let s = rig.service("a");
    assert_eq!(s.apply_to_exec_ns, Some(32 * NS_PER_MS));
    assert_eq!((s.restarts, s.adopted), (0, false));
}

#[test]
fn a_failed_start_counts_as_an_exit_and_backs_off() {
    let mut rig = Rig::new("spawn-fails");
    rig.fake().fail_next_spawn(Errno::ENOENT);
    rig.apply(&[always("a")]);
    rig.tick();
    assert_eq!(rig.state("a"), "backoff");
    let why = format!("/bin/a: {}", std::io::Error::from_raw_os_error(Errno::ENOENT as i32));
    let last = rig.service("a").last_exit.clone().unwrap();
    assert_eq!(last.kind, ExitKind::SpawnFailed(why));
    assert!(rig.sup.degraded());
    rig.advance_ms(100);
    rig.tick();
    assert_eq!(rig.state("a"), "running");
    assert_eq!(rig.service("a").restarts, 1);

    // Without its log the service is not spawned at all.
    let mut rig = Rig::new("no-log");
    std::fs::remove_dir_all(&rig.logs).unwrap();
    rig.apply(&[always("a")]);
    rig.tick();
    assert_eq!(rig.sup.procs.calls, []);
    let last = rig.service("a").last_exit.clone().unwrap();
    let ExitKind::SpawnFailed(why) = last.kind else {
        panic!("{last:?}");
    };
    assert!(why.starts_with("cannot open log "), "{why}");
}

#[test]
fn a_restarted_agent_adopts_what_still_runs_and_restarts_it_after_it_exits() {
    let mut before = Rig::new("adopt");
    let specs = [always("keeper"), always("reused"), always("zombie")];
    before.apply(&specs);
    before.tick();
    before.advance_ms(40);
    let saved = before.sup.snapshot();
    let (keeper, reused, zombie) = (before.pid("keeper"), before.pid("reused"), before.pid("zombie"));
    // While the agent was down, one pid went to another process and one
    // process exited without being reaped yet.
    before.fake().set_stat(reused, 'S', 12_345);
    before.fake().set_stat(zombie, 'Z', 0);

    let mut after = before.restarted();
    let now = after.now();
    after.sup.restore(&specs, &saved, now);
    assert_eq!(after.sup.procs.calls, [Call::PidfdOpen(keeper)]);
    assert_eq!(
        (after.state("keeper"), after.service("keeper").adopted),
        ("running", true)
    );
    assert_eq!(after.service("keeper").pid(), Some(keeper));
    let watched: Vec<Pid> = after.sup.pidfds().into_iter().map(|(pid, _)| pid).collect();
    assert_eq!(watched, [keeper]);
    for gone in ["reused", "zombie"] {
        let s = after.service(gone);
        assert_eq!(s.run.name(), "backoff", "{gone}");
        assert_eq!(s.last_exit.as_ref().map(|e| &e.kind), Some(&ExitKind::Unknown));
    }
    assert_eq!(after.sup.procs.started(), Vec::<&str>::new(), "nothing starts twice");

    after.advance_ms(100);
    after.tick();
    assert_eq!(after.sup.procs.started(), ["/bin/reused", "/bin/zombie"]);
    assert!(![reused, zombie].contains(&after.pid("reused")));

    // The adopted keeper exits: init reaps it, so its status is unknown.
    after.advance_ms(1_000);
    let now = after.now();
    after.sup.adopted_exited(keeper, now);
    let s = after.service("keeper");
    assert_eq!(s.run.name(), "backoff");
    assert_eq!(
        s.last_exit.as_ref().map(|e| (&e.kind, e.ran_ms)),
        Some((&ExitKind::Unknown, 1_140))
    );
    assert!(after.sup.procs.signals().contains(&(keeper, Signal::SIGKILL)));
    after.advance_ms(100);
    after.tick();
    assert_eq!(
        (after.state("keeper"), after.service("keeper").adopted),
        ("running", false)
    );
    assert_eq!(after.service("keeper").restarts, 1);
    assert_eq!(keeper, before.pid("keeper"), "the first agent's record is untouched");
    assert_ne!(after.pid("keeper"), keeper);
}

#[test]
fn a_restarted_agent_finishes_a_stop_the_previous_one_began() {
    let mut before = Rig::started("adopt-stop", &[always("old")]);
    let old = before.pid("old");
    before.apply(&[]);
    before.tick();
    assert_eq!(before.sup.procs.signals(), [(old, Signal::SIGTERM)]);
    let saved = before.sup.snapshot();

    let mut after = before.restarted();
    let now = after.now();
    after.sup.restore(&[], &saved, now);
    assert!(!after.sup.all_stopped());
    after.tick();
    assert_eq!(
        after.sup.procs.calls,
        [Call::PidfdOpen(old), Call::Signal(old, Signal::SIGTERM)]
    );
    after.advance_ms(1000);
    after.tick();
    assert_eq!(
        after.sup.procs.signals(),
        [(old, Signal::SIGTERM), (old, Signal::SIGKILL)]
    );
    let now = after.now();
    after.sup.adopted_exited(old, now);
    assert!(after.sup.all_stopped());
}
