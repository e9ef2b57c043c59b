//! Reaping PID1's children: the one place basalt-init calls waitpid, and
//! how a child's end is told in the log. The supervisor and the shutdown
//! both reap through here.

use crate::sys::{self, Host};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

/// Reaps every child that has exited; every waitpid of PID1 goes through here.
pub fn reap() -> Vec<(Pid, WaitStatus)> {
    reap_from(&mut sys::Pid1)
}

/// [`reap`] through `host`, so that supervise.rs's tests can fake it.
pub fn reap_from(host: &mut impl Host) -> Vec<(Pid, WaitStatus)> {
    let mut out = Vec::new();
    loop {
        match host.try_reap() {
            Ok(WaitStatus::StillAlive) | Err(_) => return out,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    out.push((pid, status));
                }
            }
        }
    }
}

/// Shell-style: `exited with status N` or `killed by SIGX (128+n)`.
pub fn describe(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("killed by {} ({})", sig.as_str(), 128 + *sig as i32),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn describe_follows_the_shell() {
        let pid = Pid::from_raw(7);
        assert_eq!(describe(&WaitStatus::Exited(pid, 3)), "exited with status 3");
        assert_eq!(
            describe(&WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            "killed by SIGKILL (137)"
        );
    }
}
