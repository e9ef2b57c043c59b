//! basalt-init's life after the handoff: one reaper for every child (in
//! reap.rs), the handoff program kept alive with backoff, and the signals
//! that end it all: SIGTERM powers off, SIGINT (also what Ctrl-Alt-Del
//! becomes) reboots, both through shutdown.rs.
//!
//! All signals stay blocked in PID1 and are taken synchronously with
//! sigtimedwait, as tini does; children get a clean mask before exec.

use crate::reap::{describe, reap};
use crate::shutdown::{self, Action};
use crate::sys;
use basalt_common::backoff::Backoff;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    since: Instant,
}

/// Supervises `handoff` until a shutdown signal, then shuts down. Never returns.
pub fn run(handoff: &str, backoff: Backoff, shutdown_timeout: Duration) -> ! {
    let mut running: Option<Running> = None;
    let mut failures: u32 = 0;
    let mut next_start = Some(Instant::now());
    loop {
        if let Some(at) = next_start {
            if Instant::now() >= at {
                next_start = None;
                match spawn(handoff) {
                    Ok(pid) => {
                        log::info!("handoff {handoff} started (pid {pid})");
                        running = Some(Running {
                            pid,
                            since: Instant::now(),
                        });
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        let delay = Duration::from_millis(backoff.delay_ms(failures));
                        log::error!("start handoff {handoff}: {e}; retrying in {} ms", delay.as_millis());
                        next_start = Some(Instant::now() + delay);
                    }
                }
            }
        }
        let timeout = next_start.map_or(Duration::from_secs(3600), |at| {
            at.saturating_duration_since(Instant::now())
        });
        let signal = sys::wait_any_signal(timeout).and_then(|n| Signal::try_from(n).ok());
        match signal {
            Some(Signal::SIGTERM) => shutdown::run(Action::Poweroff, running.map(|r| r.pid), shutdown_timeout),
            Some(Signal::SIGINT) => shutdown::run(Action::Reboot, running.map(|r| r.pid), shutdown_timeout),
            _ => {}
        }
        // SIGCHLD coalesces, and a timeout may hide one: reap on every wake.
        for (pid, status) in reap() {
            match &running {
                Some(r) if r.pid == pid => {
                    let ran = r.since.elapsed();
                    failures = backoff.next_streak(failures, ran.as_millis() as u64);
                    let delay = Duration::from_millis(backoff.delay_ms(failures));
                    log::warn!(
                        "handoff {handoff} (pid {pid}) {} after {:.1} s; restarting in {} ms",
                        describe(&status),
                        ran.as_secs_f64(),
                        delay.as_millis()
                    );
                    running = None;
                    next_start = Some(Instant::now() + delay);
                }
                _ => log::debug!("reaped pid {pid}: {}", describe(&status)),
            }
        }
    }
}

fn spawn(path: &str) -> std::io::Result<Pid> {
    let mut cmd = Command::new(path);
    sys::unblock_signals_in_child(&mut cmd);
    let child = cmd
        .env_clear()
        .env("PATH", PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .current_dir("/")
        .spawn()?;
    Ok(Pid::from_raw(child.id() as i32))
}
