//! Every `unsafe` block of the agent. Each wrapper names the exact call it
//! makes and turns a -1 into an error.

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::SigSet;
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// `openat(dir, name, flags | O_CLOEXEC, mode)`, owning the new descriptor.
pub fn openat(dir: BorrowedFd, name: &CStr, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
    let raw = nix::fcntl::openat(Some(dir.as_raw_fd()), name, flags | OFlag::O_CLOEXEC, mode)?;
    // SAFETY: `raw` was just returned by a successful openat(2); nothing else
    // owns it, so the OwnedFd becomes its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)`.
pub fn accept(listener: BorrowedFd) -> nix::Result<OwnedFd> {
    use nix::sys::socket::SockFlag;
    let raw = nix::sys::socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC)?;
    // SAFETY: `raw` was just returned by a successful accept4(2) and is owned
    // by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `pidfd_open(pid, 0)`: a descriptor that becomes readable when the
/// process exits, whoever its parent is.
pub fn pidfd_open(pid: Pid) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and a flags word by value and touches no
    // memory of ours.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let raw = Errno::result(raw)?;
    let raw = i32::try_from(raw).map_err(|_| Errno::EBADF)?;
    // SAFETY: a successful pidfd_open returns a new descriptor that nobody
    // else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Makes `cmd`'s child start clean: an empty signal mask (the agent blocks
/// the signals it reads through signalfd, and a mask survives exec) and a
/// session of its own (`setsid`), so a stop can signal its whole process
/// group and the console's job control never reaches it.
pub fn isolate_child(cmd: &mut Command) {
    let hook = || {
        SigSet::empty().thread_set_mask().map_err(std::io::Error::from)?;
        nix::unistd::setsid().map_err(std::io::Error::from)?;
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec and calls only
    // pthread_sigmask(3) and setsid(2), both async-signal-safe; it allocates
    // nothing and touches no lock.
    unsafe {
        cmd.pre_exec(hook);
    }
}
