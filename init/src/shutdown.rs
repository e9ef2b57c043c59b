//! Shutting the node down: the handoff program first (it stops the node's
//! services in reverse order), then everyone else, politely and then not,
//! then sync, unmount, and reboot(2). Every wait is bounded.

use crate::mountinfo;
use crate::reap::reap;
use crate::sys;
use basalt_common::procfs;
use nix::errno::Errno;
use nix::mount::MntFlags;
use nix::sys::reboot::RebootMode;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Poweroff,
    Reboot,
    Halt,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Poweroff => "power off",
            Action::Reboot => "reboot",
            Action::Halt => "halt",
        }
    }
}

/// How long SIGKILLed processes get to disappear.
const KILL_GRACE: Duration = Duration::from_secs(2);

pub fn run(action: Action, handoff: Option<Pid>, timeout: Duration) -> ! {
    let start = Instant::now();
    log::info!("shutdown: {} requested", action.verb());
    if let Some(pid) = handoff {
        let _ = kill(pid, Signal::SIGTERM);
        if !wait_until(timeout, || !alive(pid)) {
            log::warn!(
                "shutdown: handoff (pid {pid}) still running after {} s",
                timeout.as_secs()
            );
        }
    }
    // kill(-1) reaches every process but PID1 and kernel threads.
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    if !wait_until(timeout, nobody_left) {
        log::warn!(
            "shutdown: processes left after SIGTERM and {} s; sending SIGKILL",
            timeout.as_secs()
        );
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        if !wait_until(KILL_GRACE, nobody_left) {
            log::warn!("shutdown: processes survived SIGKILL");
        }
    }
    nix::unistd::sync();
    unmount_all();
    nix::unistd::sync();
    log::info!(
        "shutdown: {} after {:.2} s",
        action.verb(),
        start.elapsed().as_secs_f64()
    );
    finish(action)
}

/// Calls reboot(2). If that somehow returns, PID1 still must not exit.
pub fn finish(action: Action) -> ! {
    let mode = match action {
        Action::Poweroff => RebootMode::RB_POWER_OFF,
        Action::Reboot => RebootMode::RB_AUTOBOOT,
        Action::Halt => RebootMode::RB_HALT_SYSTEM,
    };
    let Err(e) = nix::sys::reboot::reboot(mode);
    log::error!("reboot(2) failed: {e}; halting here");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn alive(pid: Pid) -> bool {
    kill(pid, None).is_ok()
}

/// True when no process but PID1 and kernel threads is left. Our own
/// zombies are reaped first, or they would count. (kill(-1, 0) cannot tell:
/// it succeeds as long as any kernel thread exists.)
fn nobody_left() -> bool {
    reap();
    user_processes("/proc") == 0
}

/// Counts processes other than PID1 that are not kernel threads.
pub fn user_processes(proc_root: &str) -> usize {
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != 1)
        .filter(|pid| {
            std::fs::read_to_string(format!("{proc_root}/{pid}/stat"))
                .ok()
                .and_then(|stat| procfs::parse_stat(&stat)?.is_kernel_thread())
                .is_some_and(|kthread| !kthread)
        })
        .count()
}

/// Polls `done` while reaping, until it holds or `limit` passes.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        reap();
        if done() {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        // Wakes early on SIGCHLD; 50 ms bounds the poll otherwise.
        let _ = sys::wait_any_signal(left.min(Duration::from_millis(50)));
    }
}

fn unmount_all() {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let order = mountinfo::unmount_order(&mountinfo::parse(&text));
    // Busy mounts get a second pass once their children are gone; what is
    // still busy after that is detached. The root is read-only already.
    for pass in 0..2 {
        for target in &order {
            let flags = if pass == 0 {
                MntFlags::empty()
            } else {
                MntFlags::MNT_DETACH
            };
            match nix::mount::umount2(target.as_str(), flags) {
                Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
                Err(e) if pass == 1 => log::warn!("shutdown: unmount {target}: {e}"),
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_user_processes_in_a_fake_proc() {
        let dir = std::env::temp_dir().join(format!("basalt-proc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (pid, stat) in [
            ("1", "1 (init) S 0 1 1 0 -1 4194560 0"),
            ("2", "2 (kthreadd) S 0 0 0 0 -1 2129984 0"),
            ("40", "40 (kubelet) S 1 40 40 0 -1 4194304 0"),
            ("41", "41 (zombie) Z 1 41 41 0 -1 4194372 0"),
        ] {
            std::fs::create_dir_all(dir.join(pid)).unwrap();
            std::fs::write(dir.join(pid).join("stat"), stat).unwrap();
        }
        std::fs::create_dir_all(dir.join("self")).unwrap();
        assert_eq!(user_processes(dir.to_str().unwrap()), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
