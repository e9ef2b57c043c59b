//! Every `unsafe` block of the agent. Each wrapper names the exact call it
//! makes and turns a -1 into an error.

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{killpg, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Everything the supervisor does to processes, and the clock it reads when
/// it records a start: the seam that lets its decisions (order, backoff,
/// stops) be tested against a fake that records calls and scripts exits.
/// [`Os`] is the real one.
pub trait Processes {
    /// Starts a service process; see [`spawn_service`].
    fn spawn(&mut self, spec: &SpawnSpec) -> std::io::Result<Pid>;
    /// `killpg(pgrp, sig)`: a service and whatever it left in its group.
    fn signal_group(&mut self, pgrp: Pid, sig: Signal) -> nix::Result<()>;
    /// `waitpid(-1, WNOHANG)`: one exited child, `StillAlive`, or ECHILD.
    fn try_reap(&mut self) -> nix::Result<WaitStatus>;
    /// [`pidfd_open`]: watches a process that is not our child.
    fn pidfd_open(&mut self, pid: Pid) -> nix::Result<OwnedFd>;
    /// CLOCK_MONOTONIC nanoseconds (see crate::clock).
    fn now_ns(&self) -> u64;
}

/// The node's processes and clock.
#[derive(Debug, Default)]
pub struct Os;

impl Processes for Os {
    fn spawn(&mut self, spec: &SpawnSpec) -> std::io::Result<Pid> {
        spawn_service(spec)
    }

    fn signal_group(&mut self, pgrp: Pid, sig: Signal) -> nix::Result<()> {
        killpg(pgrp, sig)
    }

    fn try_reap(&mut self) -> nix::Result<WaitStatus> {
        waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG))
    }

    fn pidfd_open(&mut self, pid: Pid) -> nix::Result<OwnedFd> {
        pidfd_open(pid)
    }

    fn now_ns(&self) -> u64 {
        crate::clock::now_ns()
    }
}

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

/// What a service process starts with: its argv (argv[0] is an absolute
/// path), its whole environment, and the descriptor its stdout and stderr
/// go to. stdin is /dev/null, the working directory `/`.
pub struct SpawnSpec<'a> {
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub output: BorrowedFd<'a>,
}

/// Starts a service with `posix_spawn(3)`: no fork of the agent (musl clones
/// with CLONE_VM|CLONE_VFORK, so the agent's memory is never copied and the
/// call returns once the child has exec'd, or with exec's error). The child
/// starts clean: an empty signal mask (the agent blocks the signals it reads
/// through signalfd, and a mask survives exec), every signal at its default
/// action, and a session of its own (POSIX_SPAWN_SETSID), so a stop can
/// signal its whole process group and the console's job control never
/// reaches it. Under TCG this is 3 to 8 times faster than fork+exec.
pub fn spawn_service(spec: &SpawnSpec) -> std::io::Result<Pid> {
    use std::ffi::CString;
    use std::io::{Error, ErrorKind};
    let cstr = |s: &str| CString::new(s).map_err(|_| Error::new(ErrorKind::InvalidInput, "NUL byte in argument"));
    let program = cstr(
        spec.argv
            .first()
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "empty argv"))?,
    )?;
    let argv: Vec<CString> = spec.argv.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?;
    let envp: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}")))
        .collect::<Result<_, _>>()?;
    let mut argv_ptrs: Vec<*mut libc::c_char> = argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut envp_ptrs: Vec<*mut libc::c_char> = envp.iter().map(|e| e.as_ptr().cast_mut()).collect();
    envp_ptrs.push(std::ptr::null_mut());
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(Error::from_raw_os_error(rc))
        }
    };

    // SAFETY: the attribute and file-action objects are initialised before
    // use and destroyed on every path below; every pointer handed to
    // posix_spawn (program, argv, envp and their NUL-terminated arrays) lives
    // in this frame until it returns; `spec.output` is an open descriptor
    // borrowed for the call.
    unsafe {
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        check(libc::posix_spawnattr_init(&mut attr))?;
        if let Err(e) = check(libc::posix_spawn_file_actions_init(&mut actions)) {
            libc::posix_spawnattr_destroy(&mut attr);
            return Err(e);
        }
        let result = (|| {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigfillset(&mut all);
            check(libc::posix_spawnattr_setsigmask(&mut attr, &empty))?;
            check(libc::posix_spawnattr_setsigdefault(&mut attr, &all))?;
            let flags =
                libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF | libc::POSIX_SPAWN_SETSID as libc::c_int;
            check(libc::posix_spawnattr_setflags(&mut attr, flags as libc::c_short))?;
            check(libc::posix_spawn_file_actions_addopen(
                &mut actions,
                0,
                c"/dev/null".as_ptr(),
                libc::O_RDONLY,
                0,
            ))?;
            check(libc::posix_spawn_file_actions_adddup2(
                &mut actions,
                spec.output.as_raw_fd(),
                1,
            ))?;
            check(libc::posix_spawn_file_actions_adddup2(
                &mut actions,
                spec.output.as_raw_fd(),
                2,
            ))?;
            check(libc::posix_spawn_file_actions_addchdir_np(&mut actions, c"/".as_ptr()))?;
            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawn(
                &mut pid,
                program.as_ptr(),
                &actions,
                &attr,
                argv_ptrs.as_ptr(),
                envp_ptrs.as_ptr(),
            ))?;
            Ok(Pid::from_raw(pid))
        })();
        libc::posix_spawn_file_actions_destroy(&mut actions);
        libc::posix_spawnattr_destroy(&mut attr);
        result
    }
}
