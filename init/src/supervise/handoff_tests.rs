//! The handoff program's restarts and PID1's reaping, against a fake
//! [`Host`]: scripted signals and exits, and a clock that moves only when a
//! wait would have let time pass. Nothing is spawned and nothing sleeps.

use super::*;
use nix::errno::Errno;
use std::collections::VecDeque;
use std::ffi::OsStr;

const PROGRAM: &str = "/usr/bin/basalt-agent";

/// What one `wait_signal` does: how much time passes, what it returns, and
/// which children exit meanwhile.
struct Wait {
    takes: Duration,
    signal: Option<Signal>,
    exits: Vec<WaitStatus>,
}

#[derive(Default)]
struct FakeHost {
    now: Duration,
    next_pid: i32,
    spawned: Vec<Pid>,
    spawn_errors: VecDeque<Errno>,
    /// Scripted waits; with none left, a wait times out.
    waits: VecDeque<Wait>,
    /// The timeout of every wait, in order.
    timeouts: Vec<Duration>,
    exited: VecDeque<WaitStatus>,
    /// Children not yet reaped.
    children: usize,
}

impl FakeHost {
    fn new() -> Self {
        FakeHost {
            now: Duration::from_secs(5),
            next_pid: 200,
            ..Default::default()
        }
    }

    /// The next wait ends after `ms` with `signal`, `exits` having happened.
    fn then(&mut self, ms: u64, signal: Option<Signal>, exits: Vec<WaitStatus>) {
        self.waits.push_back(Wait {
            takes: Duration::from_millis(ms),
            signal,
            exits,
        });
    }
}

impl Host for FakeHost {
    fn spawn(&mut self, cmd: &mut Command) -> std::io::Result<Pid> {
        assert_eq!(cmd.get_program(), OsStr::new(PROGRAM));
        let envs: Vec<_> = cmd.get_envs().collect();
        assert_eq!(envs, [(OsStr::new("PATH"), Some(OsStr::new(PATH)))]);
        assert_eq!(cmd.get_current_dir(), Some(std::path::Path::new("/")));
        if let Some(errno) = self.spawn_errors.pop_front() {
            return Err(std::io::Error::from_raw_os_error(errno as i32));
        }
        self.next_pid += 1;
        let pid = Pid::from_raw(self.next_pid);
        self.spawned.push(pid);
        self.children += 1;
        Ok(pid)
    }

    fn wait_signal(&mut self, timeout: Duration) -> Option<Signal> {
        self.timeouts.push(timeout);
        match self.waits.pop_front() {
            Some(w) => {
                assert!(w.takes <= timeout, "a wait of {timeout:?} cannot take {:?}", w.takes);
                self.now += w.takes;
                self.children += w.exits.len();
                self.exited.extend(w.exits);
                w.signal
            }
            None => {
                self.now += timeout;
                None
            }
        }
    }

    fn try_reap(&mut self) -> nix::Result<WaitStatus> {
        match self.exited.pop_front() {
            Some(status) => {
                self.children -= 1;
                Ok(status)
            }
            None if self.children == 0 => Err(Errno::ECHILD),
            None => Ok(WaitStatus::StillAlive),
        }
    }

    fn now(&self) -> Duration {
        self.now
    }
}

fn exited(pid: Pid, code: i32) -> WaitStatus {
    WaitStatus::Exited(pid, code)
}

/// Runs `wakes` turns of the loop; none may ask for a shutdown.
fn turns(h: &mut Handoff, host: &mut FakeHost, wakes: usize) {
    for _ in 0..wakes {
        assert_eq!(h.wake(host), None);
    }
}

#[test]
fn the_handoff_restarts_with_growing_backoff_and_resets_after_a_stable_run() {
    let mut host = FakeHost::new();
    let mut h = Handoff::new(PROGRAM, HANDOFF_BACKOFF, host.now());
    let mut delays = Vec::new();
    // Quick crashes, then a run of 30 s (stable), then quick ones again.
    for ran_ms in [10, 10, 10, 10, 10, 10, 10, 10, 30_000, 10] {
        assert_eq!(h.pid(), None);
        host.timeouts.clear();
        // Starts, and crashes `ran_ms` later; then waits out the backoff.
        let before = host.spawned.len();
        let pid = Pid::from_raw(host.next_pid + 1);
        host.then(ran_ms, Some(Signal::SIGCHLD), vec![exited(pid, 1)]);
        turns(&mut h, &mut host, 1);
        assert_eq!(host.spawned.len(), before + 1);
        assert_eq!(
            host.timeouts[0],
            Duration::from_secs(3600),
            "nothing is due while it runs"
        );
        // The next wake waits exactly the delay, and starts nothing.
        turns(&mut h, &mut host, 1);
        assert_eq!(host.spawned.len(), before + 1);
        delays.push(host.timeouts[1].as_millis() as u64);
    }
    assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 100, 200]);
    turns(&mut h, &mut host, 1);
    assert_eq!(h.pid(), host.spawned.last().copied());
}

#[test]
fn orphans_are_reaped_without_touching_the_handoff() {
    let mut host = FakeHost::new();
    let mut h = Handoff::new(PROGRAM, HANDOFF_BACKOFF, host.now());
    turns(&mut h, &mut host, 1);
    let handoff = host.spawned[0];
    // Reparented orphans exit, one SIGCHLD for several, and one exit
    // whose SIGCHLD a timeout hid.
    let (a, b, c) = (Pid::from_raw(900), Pid::from_raw(901), Pid::from_raw(902));
    host.then(
        5,
        Some(Signal::SIGCHLD),
        vec![exited(a, 0), WaitStatus::Signaled(b, Signal::SIGKILL, false)],
    );
    host.then(3_600_000, None, vec![exited(c, 3)]);
    turns(&mut h, &mut host, 3);
    assert!(host.exited.is_empty(), "every exit was reaped");
    assert_eq!(host.children, 1, "only the handoff is left");
    assert_eq!(h.pid(), Some(handoff));
    assert_eq!(host.spawned, [handoff]);
    assert_eq!(host.timeouts.len(), 4);
    assert!(
        host.timeouts.iter().all(|t| *t == Duration::from_secs(3600)),
        "{:?}",
        host.timeouts
    );

    // The handoff's own exit, among orphans', is the one that restarts.
    host.then(
        1,
        Some(Signal::SIGCHLD),
        vec![exited(Pid::from_raw(903), 0), exited(handoff, 0)],
    );
    turns(&mut h, &mut host, 1);
    assert_eq!(h.pid(), None);
    turns(&mut h, &mut host, 2);
    assert_eq!(host.spawned.len(), 2);
    assert_eq!(h.pid(), Some(host.spawned[1]));
}

#[test]
fn a_failed_start_retries_with_backoff() {
    let mut host = FakeHost::new();
    host.spawn_errors.extend([Errno::ENOENT, Errno::ENOENT, Errno::EACCES]);
    let mut h = Handoff::new(PROGRAM, HANDOFF_BACKOFF, host.now());
    turns(&mut h, &mut host, 4);
    assert_eq!(host.spawned.len(), 1);
    let ms: Vec<u128> = host.timeouts.iter().map(|t| t.as_millis()).collect();
    assert_eq!(ms, [100, 200, 400, 3_600_000]);
    assert!(h.pid().is_some());
}

#[test]
fn sigterm_powers_off_and_sigint_reboots_with_the_running_handoff() {
    for (signal, want) in [(Signal::SIGTERM, Action::Poweroff), (Signal::SIGINT, Action::Reboot)] {
        let mut host = FakeHost::new();
        let mut h = Handoff::new(PROGRAM, HANDOFF_BACKOFF, host.now());
        host.then(0, Some(Signal::SIGHUP), vec![]);
        host.then(0, Some(Signal::SIGUSR1), vec![]);
        host.then(0, Some(signal), vec![]);
        turns(&mut h, &mut host, 2);
        assert_eq!(h.wake(&mut host), Some(want), "{signal}");
        assert_eq!(h.pid(), Some(host.spawned[0]));
    }
    // During a backoff there is no handoff to stop first.
    let mut host = FakeHost::new();
    let mut h = Handoff::new(PROGRAM, HANDOFF_BACKOFF, host.now());
    host.then(1, None, vec![exited(Pid::from_raw(201), 1)]);
    host.then(50, Some(Signal::SIGTERM), vec![]);
    turns(&mut h, &mut host, 1);
    assert_eq!(h.wake(&mut host), Some(Action::Poweroff));
    assert_eq!(h.pid(), None);
}
