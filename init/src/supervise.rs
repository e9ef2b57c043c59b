//! basalt-init's life after the handoff: one reaper for every child (in
//! reap.rs), the handoff program kept alive with backoff, and the signals
//! that end it all: SIGTERM powers off, SIGINT (also what Ctrl-Alt-Del
//! becomes) reboots, both through shutdown.rs.
//!
//! All signals stay blocked in PID1 and are taken synchronously with
//! sigtimedwait, as tini does; children get a clean mask before exec.

use crate::reap::{describe, reap_from};
use crate::shutdown::{self, Action};
use crate::sys::{self, Host};
use basalt_common::backoff::Backoff;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use std::process::{Command, Stdio};
use std::time::Duration;

#[cfg(test)]
mod handoff_tests;

/// The environment the handoff program starts with; nothing else leaks from
/// the kernel's environment for init.
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// The handoff program is the only way into the node: bring it back fast.
pub const HANDOFF_BACKOFF: Backoff = Backoff {
    initial_ms: 100,
    max_ms: 10_000,
    stable_after_ms: 30_000,
};

struct Running {
    pid: Pid,
    since: Duration,
}

/// Supervises `handoff` until a shutdown signal, then shuts down. Never returns.
pub fn run(handoff: &str, backoff: Backoff, shutdown_timeout: Duration) -> ! {
    let mut host = sys::Pid1;
    let mut supervisor = Handoff::new(handoff, backoff, host.now());
    loop {
        if let Some(action) = supervisor.wake(&mut host) {
            shutdown::run(action, supervisor.pid(), shutdown_timeout);
        }
    }
}

/// The handoff program kept alive: whether it runs, the streak of quick
/// exits, and when the next start is due (on the CLOCK_MONOTONIC scale).
struct Handoff<'a> {
    program: &'a str,
    backoff: Backoff,
    running: Option<Running>,
    failures: u32,
    next_start: Option<Duration>,
}

impl<'a> Handoff<'a> {
    /// The first start is due at once.
    fn new(program: &'a str, backoff: Backoff, now: Duration) -> Self {
        Handoff {
            program,
            backoff,
            running: None,
            failures: 0,
            next_start: Some(now),
        }
    }

    fn pid(&self) -> Option<Pid> {
        self.running.as_ref().map(|r| r.pid)
    }

    /// One turn of PID1's loop: start the program if it is due, wait for a
    /// signal (or the next start), reap. Returns the shutdown a signal asked for.
    fn wake(&mut self, host: &mut impl Host) -> Option<Action> {
        if self.next_start.is_some_and(|at| host.now() >= at) {
            self.next_start = None;
            self.start(host);
        }
        let timeout = self
            .next_start
            .map_or(Duration::from_secs(3600), |at| at.saturating_sub(host.now()));
        match host.wait_signal(timeout) {
            Some(Signal::SIGTERM) => return Some(Action::Poweroff),
            Some(Signal::SIGINT) => return Some(Action::Reboot),
            _ => {}
        }
        // SIGCHLD coalesces, and a timeout may hide one: reap on every wake.
        for (pid, status) in reap_from(host) {
            self.reaped(pid, &status, host.now());
        }
        None
    }

    fn start(&mut self, host: &mut impl Host) {
        let handoff = self.program;
        match host.spawn(&mut handoff_command(handoff)) {
            Ok(pid) => {
                log::info!("handoff {handoff} started (pid {pid})");
                self.running = Some(Running { pid, since: host.now() });
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                let delay = Duration::from_millis(self.backoff.delay_ms(self.failures));
                log::error!("start handoff {handoff}: {e}; retrying in {} ms", delay.as_millis());
                self.next_start = Some(host.now() + delay);
            }
        }
    }

    /// A child ended: the handoff program is due again after its backoff;
    /// anything else is an orphan that only needed reaping.
    fn reaped(&mut self, pid: Pid, status: &WaitStatus, now: Duration) {
        let handoff = self.program;
        match &self.running {
            Some(r) if r.pid == pid => {
                let ran = now.saturating_sub(r.since);
                self.failures = self.backoff.next_streak(self.failures, ran.as_millis() as u64);
                let delay = Duration::from_millis(self.backoff.delay_ms(self.failures));
                log::warn!(
                    "handoff {handoff} (pid {pid}) {} after {:.1} s; restarting in {} ms",
                    describe(status),
                    ran.as_secs_f64(),
                    delay.as_millis()
                );
                self.running = None;
                self.next_start = Some(now + delay);
            }
            _ => log::debug!("reaped pid {pid}: {}", describe(status)),
        }
    }
}

/// The handoff program's command: a clean environment with only PATH,
/// stdin on /dev/null, the console for output, `/` as working directory.
fn handoff_command(path: &str) -> Command {
    let mut cmd = Command::new(path);
    cmd.env_clear()
        .env("PATH", PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .current_dir("/");
    cmd
}
