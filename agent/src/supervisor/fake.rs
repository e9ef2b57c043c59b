//! A fake of [`Processes`] for the supervisor's unit tests: it records every
//! call, hands out pids, lets a test script each exit, and has a clock that
//! moves only when the test moves it. No process is started and nothing
//! sleeps. Like the kernel, it keeps a `<pid>/stat` in a proc directory of
//! its own for each child, which is what adoption reads.

use crate::clock::NS_PER_MS;
use crate::sys::{Processes, SpawnSpec};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// One call the supervisor made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A spawn, and the pid it got (None: the spawn failed).
    Spawn {
        argv: Vec<String>,
        env: Vec<(String, String)>,
        pid: Option<Pid>,
    },
    Signal(Pid, Signal),
    PidfdOpen(Pid),
}

#[derive(Debug)]
pub struct FakeProcesses {
    /// The clock, in CLOCK_MONOTONIC nanoseconds.
    pub now_ns: u64,
    /// How far the clock moves during a spawn (exec is not instant).
    pub spawn_ns: u64,
    pub calls: Vec<Call>,
    next_pid: i32,
    /// Children that exist: running, or exited and not reaped yet.
    children: BTreeSet<Pid>,
    /// Scripted exits, in the order waitpid returns them.
    exits: VecDeque<WaitStatus>,
    /// Errors for the next spawns, first in front.
    spawn_errors: VecDeque<io::Error>,
    proc_dir: PathBuf,
}

impl FakeProcesses {
    /// Pids start above `first_pid`; `proc_dir` stands for /proc.
    pub fn new(first_pid: i32, proc_dir: &Path) -> Self {
        FakeProcesses {
            now_ns: 0,
            spawn_ns: 0,
            calls: Vec::new(),
            next_pid: first_pid,
            children: BTreeSet::new(),
            exits: VecDeque::new(),
            spawn_errors: VecDeque::new(),
            proc_dir: proc_dir.to_path_buf(),
        }
    }

    /// Writes `<proc>/<pid>/stat` with this state letter and start time
    /// (field 22), the fields the supervisor reads.
    pub fn set_stat(&self, pid: Pid, state: char, starttime: u64) {
        let dir = self.proc_dir.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let line =
            format!("{pid} (fake) {state} 1 100 100 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 {starttime} 1000000 200\n");
        std::fs::write(dir.join("stat"), line).unwrap();
    }

    pub fn advance_ms(&mut self, ms: u64) {
        self.now_ns += ms * NS_PER_MS;
    }

    /// The child `pid` exits with `code`; the next reap sees it.
    pub fn exit(&mut self, pid: Pid, code: i32) {
        self.exits.push_back(WaitStatus::Exited(pid, code));
    }

    /// The child `pid` dies of `sig`; the next reap sees it.
    pub fn kill(&mut self, pid: Pid, sig: Signal) {
        self.exits.push_back(WaitStatus::Signaled(pid, sig, false));
    }

    /// The next spawn fails with `errno`, as posix_spawn reports a failed exec.
    pub fn fail_next_spawn(&mut self, errno: Errno) {
        self.spawn_errors.push_back(io::Error::from_raw_os_error(errno as i32));
    }

    /// argv[0] of every spawn that succeeded, in order.
    pub fn started(&self) -> Vec<&str> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Spawn { argv, pid: Some(_), .. } => Some(argv[0].as_str()),
                _ => None,
            })
            .collect()
    }

    /// The pid of the last successful spawn of `program`.
    pub fn pid_of(&self, program: &str) -> Pid {
        self.calls
            .iter()
            .rev()
            .find_map(|c| match c {
                Call::Spawn {
                    argv, pid: Some(pid), ..
                } if argv[0] == program => Some(*pid),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{program} was never started: {:?}", self.calls))
    }

    /// Every signal sent, in order.
    pub fn signals(&self) -> Vec<(Pid, Signal)> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Signal(pid, sig) => Some((*pid, *sig)),
                _ => None,
            })
            .collect()
    }

    /// Forgets the calls so far, so a test asserts only what comes next.
    pub fn clear_calls(&mut self) {
        self.calls.clear();
    }
}

impl Processes for FakeProcesses {
    fn spawn(&mut self, spec: &SpawnSpec) -> io::Result<Pid> {
        self.now_ns += self.spawn_ns;
        let result = match self.spawn_errors.pop_front() {
            Some(e) => Err(e),
            None => {
                self.next_pid += 1;
                let pid = Pid::from_raw(self.next_pid);
                self.children.insert(pid);
                // In clock ticks since boot, as the kernel counts it.
                self.set_stat(pid, 'S', self.now_ns / 10_000_000);
                Ok(pid)
            }
        };
        self.calls.push(Call::Spawn {
            argv: spec.argv.to_vec(),
            env: spec.env.to_vec(),
            pid: result.as_ref().ok().copied(),
        });
        result
    }

    fn signal_group(&mut self, pgrp: Pid, sig: Signal) -> nix::Result<()> {
        self.calls.push(Call::Signal(pgrp, sig));
        if self.children.contains(&pgrp) {
            Ok(())
        } else {
            Err(Errno::ESRCH)
        }
    }

    fn try_reap(&mut self) -> nix::Result<WaitStatus> {
        if let Some(status) = self.exits.pop_front() {
            if let Some(pid) = status.pid() {
                self.children.remove(&pid);
                let _ = std::fs::remove_dir_all(self.proc_dir.join(pid.to_string()));
            }
            return Ok(status);
        }
        if self.children.is_empty() {
            Err(Errno::ECHILD)
        } else {
            Ok(WaitStatus::StillAlive)
        }
    }

    fn pidfd_open(&mut self, pid: Pid) -> nix::Result<OwnedFd> {
        self.calls.push(Call::PidfdOpen(pid));
        // Any descriptor will do: the tests report an adopted exit directly.
        let file = std::fs::File::open("/dev/null").map_err(|_| Errno::EBADF)?;
        Ok(OwnedFd::from(file))
    }

    fn now_ns(&self) -> u64 {
        self.now_ns
    }
}

/// A directory of its own for one test (service logs, a fake /proc),
/// removed when dropped.
pub struct TestDir(PathBuf);

impl TestDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("basalt-supervisor-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TestDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
