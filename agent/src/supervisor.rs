//! Services: start in `after` order, restart with backoff, stop in reverse.
//!
//! Services are children of the agent, each in a session of its own (so a
//! stop signals the whole process group), with stdout and stderr on its log
//! file. The agent reaps them with `waitpid(-1, WNOHANG)` on SIGCHLD.
//!
//! If the agent dies, its services live on as children of init. A restarted
//! agent finds them in its state file and adopts each one whose pid still
//! has the recorded `/proc/<pid>/stat` start time, watching it through a
//! pidfd instead of starting it again; when it exits, init reaps it, so its
//! exit status is unknown to the agent.
//!
//! Stops go one service at a time, in reverse start order: SIGTERM to the
//! group, then SIGKILL after the service's `stop_timeout_ms`. Starts wait
//! until every pending stop is done.
//!
//! Every effect on a process (spawn, signal, reap, pidfd) and the clock read
//! at a start go through [`sys::Processes`], so the decisions here are unit
//! tested against a fake in `supervisor/lifecycle_tests.rs`.

use crate::clock::{self, NS_PER_MS};
use crate::logs;
use crate::state::{ExitKind, ExitRecord, SavedRun, SavedService};
use crate::sys::{self, Processes};
use basalt_common::config::{RestartPolicy, ServiceSpec, DEFAULT_STOP_TIMEOUT_MS};
use basalt_common::procfs;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The environment's PATH for services (the same init gives the agent).
pub const SERVICE_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// Start times kept per service, for status.
pub const RECENT_STARTS: usize = 8;
/// After SIGKILL, how long to wait before giving up on a process.
const KILL_GRACE_NS: u64 = 5_000 * NS_PER_MS;

/// A running service process.
#[derive(Debug)]
pub struct Proc {
    pub pid: Pid,
    /// From /proc/<pid>/stat: with the pid, names the process across pid reuse.
    pub starttime: Option<u64>,
    pub started_ns: u64,
    /// Set for adopted processes, which are not the agent's children.
    pub pidfd: Option<OwnedFd>,
}

#[derive(Debug)]
pub enum Run {
    /// Not started yet: waiting for its `after` services or for stops to finish.
    Waiting,
    Running(Proc),
    Stopping {
        proc: Proc,
        deadline_ns: u64,
        killed: bool,
    },
    /// Exited; restarts at `until_ns`.
    Backoff {
        until_ns: u64,
    },
    /// Exited, and its restart policy says that is final.
    Exited,
}

impl Run {
    fn proc(&self) -> Option<&Proc> {
        match self {
            Run::Running(p) | Run::Stopping { proc: p, .. } => Some(p),
            _ => None,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Run::Waiting => "waiting",
            Run::Running(_) => "running",
            Run::Stopping { .. } => "stopping",
            Run::Backoff { .. } => "backoff",
            Run::Exited => "exited",
        }
    }
}

#[derive(Debug)]
pub struct Service {
    pub spec: ServiceSpec,
    pub run: Run,
    /// Starts after the first one.
    pub restarts: u32,
    /// Consecutive quick exits (see basalt_common::backoff).
    pub streak: u32,
    pub last_exit: Option<ExitRecord>,
    pub recent_starts_ns: VecDeque<u64>,
    /// The delay before the pending (or last) restart.
    pub backoff_ms: Option<u64>,
    /// When the apply that asked for this service arrived, until it starts.
    pending_apply_ns: Option<u64>,
    /// From that apply's arrival to this service's exec.
    pub apply_to_exec_ns: Option<u64>,
    pub adopted: bool,
    started_once: bool,
}

impl Service {
    fn new(spec: ServiceSpec, apply_ns: Option<u64>) -> Self {
        Service {
            spec,
            run: Run::Waiting,
            restarts: 0,
            streak: 0,
            last_exit: None,
            recent_starts_ns: VecDeque::new(),
            backoff_ms: None,
            pending_apply_ns: apply_ns,
            apply_to_exec_ns: None,
            adopted: false,
            started_once: false,
        }
    }

    pub fn pid(&self) -> Option<Pid> {
        self.run.proc().map(|p| p.pid)
    }
}

/// What an apply does to the services.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub started: Vec<String>,
    pub restarted: Vec<String>,
    pub stopped: Vec<String>,
    pub unchanged: Vec<String>,
}

impl Plan {
    pub fn to_json(&self) -> Value {
        json!({
            "started": self.started,
            "restarted": self.restarted,
            "stopped": self.stopped,
            "unchanged": self.unchanged,
        })
    }
}

/// The services and their processes. `P` is how processes are started,
/// signalled and reaped: the node's own ([`sys::Os`]) or, in the unit
/// tests, a fake (`supervisor/fake.rs`).
#[derive(Debug)]
pub struct Supervisor<P: Processes = sys::Os> {
    procs: P,
    /// The applied config's services, in start order.
    services: Vec<Service>,
    /// Services to stop, first in front.
    retiring: VecDeque<Service>,
    /// Shutting down: everything is retiring and nothing starts again.
    stopping_all: bool,
    log_dir: PathBuf,
    proc_dir: PathBuf,
    /// Something the state file records changed.
    changed: bool,
}

impl Supervisor {
    pub fn new(log_dir: PathBuf, proc_dir: PathBuf) -> Self {
        Supervisor::with_processes(sys::Os, log_dir, proc_dir)
    }
}

impl<P: Processes> Supervisor<P> {
    pub fn with_processes(procs: P, log_dir: PathBuf, proc_dir: PathBuf) -> Self {
        Supervisor {
            procs,
            services: Vec::new(),
            retiring: VecDeque::new(),
            stopping_all: false,
            log_dir,
            proc_dir,
            changed: false,
        }
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// Takes the "state changed" flag.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Nothing is running or being stopped.
    pub fn all_stopped(&self) -> bool {
        self.retiring.is_empty() && self.services.iter().all(|s| s.pid().is_none())
    }

    /// A service that should run is not running.
    pub fn degraded(&self) -> bool {
        self.services.iter().any(|s| match s.run {
            Run::Backoff { .. } => true,
            Run::Exited => !s.last_exit.as_ref().is_some_and(|e| e.kind.success()),
            _ => false,
        })
    }

    /// Moves to a new set of services: unchanged ones keep running, changed
    /// and removed ones are stopped (in reverse of the old start order),
    /// changed and new ones start once the stops are done.
    pub fn apply(&mut self, specs: &[ServiceSpec], received_ns: u64) -> Plan {
        let mut plan = Plan::default();
        let mut kept = Vec::new();
        let mut retire = Vec::new();
        for s in std::mem::take(&mut self.services) {
            match specs.iter().find(|n| n.name == s.spec.name) {
                Some(n) if *n == s.spec => kept.push(s),
                Some(_) => {
                    plan.restarted.push(s.spec.name.clone());
                    retire.push(s);
                }
                None => {
                    plan.stopped.push(s.spec.name.clone());
                    retire.push(s);
                }
            }
        }
        self.retiring.extend(retire.into_iter().rev());
        for spec in specs {
            match kept.iter().position(|s| s.spec.name == spec.name) {
                Some(i) => {
                    plan.unchanged.push(spec.name.clone());
                    self.services.push(kept.swap_remove(i));
                }
                None => {
                    if !plan.restarted.contains(&spec.name) {
                        plan.started.push(spec.name.clone());
                    }
                    self.services.push(Service::new(spec.clone(), Some(received_ns)));
                }
            }
        }
        self.changed = true;
        plan
    }

    /// Stops everything, in reverse start order, and starts nothing again.
    pub fn stop_all(&mut self) {
        if self.stopping_all {
            return;
        }
        self.stopping_all = true;
        let all = std::mem::take(&mut self.services);
        self.retiring.extend(all.into_iter().rev());
        self.changed = true;
    }

    /// Drives stops and starts. Call after every event and at each deadline.
    pub fn tick(&mut self, now: u64) {
        while let Some(front) = self.retiring.front_mut() {
            let name = front.spec.name.clone();
            match &mut front.run {
                Run::Running(_) => {
                    let Run::Running(proc) = std::mem::replace(&mut front.run, Run::Waiting) else {
                        break;
                    };
                    let timeout = front.spec.stop_timeout_ms;
                    log::info!(
                        "stopping {name} (pid {}): SIGTERM, SIGKILL after {timeout} ms",
                        proc.pid
                    );
                    signal_group(&mut self.procs, proc.pid, Signal::SIGTERM);
                    front.run = Run::Stopping {
                        proc,
                        deadline_ns: now + timeout * NS_PER_MS,
                        killed: false,
                    };
                    self.changed = true;
                    break;
                }
                Run::Stopping {
                    proc,
                    deadline_ns,
                    killed,
                } => {
                    if now < *deadline_ns {
                        break;
                    }
                    if !*killed {
                        log::warn!("{name} (pid {}) did not stop in time: SIGKILL", proc.pid);
                        signal_group(&mut self.procs, proc.pid, Signal::SIGKILL);
                        *killed = true;
                        *deadline_ns = now + KILL_GRACE_NS;
                        break;
                    }
                    log::error!("{name} (pid {}) survived SIGKILL; no longer waiting for it", proc.pid);
                    self.retiring.pop_front();
                    self.changed = true;
                }
                _ => {
                    self.retiring.pop_front();
                    self.changed = true;
                }
            }
        }
        if !self.retiring.is_empty() || self.stopping_all {
            return;
        }
        for i in 0..self.services.len() {
            let due = match self.services[i].run {
                Run::Waiting => self.after_satisfied(i),
                Run::Backoff { until_ns } => now >= until_ns,
                _ => false,
            };
            if due {
                self.start(i);
            }
        }
    }

    /// A service may start once each service it comes after is running, or
    /// has finished successfully (a one-shot setup step).
    fn after_satisfied(&self, i: usize) -> bool {
        self.services[i].spec.after.iter().all(|dep| {
            self.services
                .iter()
                .find(|s| &s.spec.name == dep)
                .is_some_and(|s| match s.run {
                    Run::Running(_) => true,
                    Run::Exited => s.last_exit.as_ref().is_some_and(|e| e.kind.success()),
                    _ => false,
                })
        })
    }

    fn start(&mut self, i: usize) {
        let s = &mut self.services[i];
        let attempt = if s.started_once { s.restarts + 1 } else { 0 };
        let spawned = spawn(&mut self.procs, &s.spec, &self.log_dir, &self.proc_dir);
        let now = self.procs.now_ns();
        if s.started_once {
            s.restarts += 1;
        }
        s.started_once = true;
        self.changed = true;
        match spawned {
            Ok((pid, starttime)) => {
                if s.recent_starts_ns.len() == RECENT_STARTS {
                    s.recent_starts_ns.pop_front();
                }
                s.recent_starts_ns.push_back(now);
                let measured = s.pending_apply_ns.take().map(|at| now.saturating_sub(at));
                if measured.is_some() {
                    s.apply_to_exec_ns = measured;
                }
                s.adopted = false;
                s.run = Run::Running(Proc {
                    pid,
                    starttime,
                    started_ns: now,
                    pidfd: None,
                });
                match (attempt, measured) {
                    (0, Some(ns)) => log::info!(
                        "started {} (pid {pid}), {:.3} ms after the apply arrived",
                        s.spec.name,
                        clock::ms_f64(ns)
                    ),
                    (0, None) => log::info!("started {} (pid {pid})", s.spec.name),
                    (n, _) => log::info!("restarted {} (pid {pid}), restart {n}", s.spec.name),
                }
            }
            Err(why) => {
                log::error!("cannot start {}: {why}", s.spec.name);
                ended(s, ExitKind::SpawnFailed(why), 0, now, false);
            }
        }
    }

    /// Reaps every child that exited.
    pub fn reap(&mut self, now: u64) {
        loop {
            match self.procs.try_reap() {
                Ok(WaitStatus::Exited(pid, code)) => self.exited(pid, ExitKind::Code(code), now),
                Ok(WaitStatus::Signaled(pid, sig, _)) => self.exited(pid, ExitKind::Signal(sig as i32), now),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Err(Errno::EINTR) => continue,
                Ok(_) => continue,
                Err(e) => {
                    log::error!("waitpid failed: {e}");
                    break;
                }
            }
        }
    }

    /// An adopted process's pidfd became readable: it exited.
    pub fn adopted_exited(&mut self, pid: Pid, now: u64) {
        self.exited(pid, ExitKind::Unknown, now);
    }

    /// The pidfds of adopted processes, to poll.
    pub fn pidfds(&self) -> Vec<(Pid, BorrowedFd<'_>)> {
        self.services
            .iter()
            .chain(self.retiring.iter())
            .filter_map(|s| s.run.proc())
            .filter_map(|p| p.pidfd.as_ref().map(|fd| (p.pid, fd.as_fd())))
            .collect()
    }

    fn exited(&mut self, pid: Pid, kind: ExitKind, now: u64) {
        let ours = self
            .services
            .iter()
            .chain(self.retiring.iter())
            .any(|s| s.pid() == Some(pid));
        if !ours {
            return;
        }
        // Whatever the service left behind in its process group goes with it.
        signal_group(&mut self.procs, pid, Signal::SIGKILL);
        if let Some(i) = self.retiring.iter().position(|s| s.pid() == Some(pid)) {
            if let Some(s) = self.retiring.remove(i) {
                log::info!("stopped {} (pid {pid}): {}", s.spec.name, kind.describe());
            }
            self.changed = true;
            return;
        }
        let stopping_all = self.stopping_all;
        if let Some(s) = self.services.iter_mut().find(|s| s.pid() == Some(pid)) {
            let started = s.run.proc().map_or(now, |p| p.started_ns);
            let ran_ms = now.saturating_sub(started) / NS_PER_MS;
            ended(s, kind, ran_ms, now, stopping_all);
            self.changed = true;
        }
    }

    /// The earliest time something is due: a restart or a stop deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        let restarts = self.services.iter().filter_map(|s| match s.run {
            Run::Backoff { until_ns } => Some(until_ns),
            _ => None,
        });
        let stop = self.retiring.front().and_then(|s| match s.run {
            Run::Stopping { deadline_ns, .. } => Some(deadline_ns),
            _ => None,
        });
        restarts.chain(stop).min()
    }

    /// Per-service status, for the `status` op.
    pub fn status(&self, now: u64) -> Vec<Value> {
        let current = self.services.iter().map(|s| (s, false));
        let retiring = self.retiring.iter().map(|s| (s, true));
        current
            .chain(retiring)
            .map(|(s, retiring)| service_status(s, retiring, now))
            .collect()
    }

    /// apply→exec of each service started by the last apply that named it.
    pub fn apply_to_exec(&self) -> serde_json::Map<String, Value> {
        self.services
            .iter()
            .filter_map(|s| {
                s.apply_to_exec_ns
                    .map(|ns| (s.spec.name.clone(), json!(clock::ms_f64(ns))))
            })
            .collect()
    }

    /// What the state file records.
    pub fn snapshot(&self) -> Vec<SavedService> {
        let current = self.services.iter().map(|s| save(s, false));
        current.chain(self.retiring.iter().map(|s| save(s, true))).collect()
    }

    /// What [`snapshot`](Self::snapshot) will say once [`apply`](Self::apply)
    /// has planned `specs`, without planning them: the new generation goes on
    /// record before anything changes, and if that record cannot be written
    /// the services are as they were.
    pub fn snapshot_after_apply(&self, specs: &[ServiceSpec], received_ns: u64) -> Vec<SavedService> {
        let unchanged = |s: &&Service| specs.contains(&s.spec);
        let current = specs
            .iter()
            .map(|spec| match self.services.iter().find(|s| s.spec == *spec) {
                Some(s) => save(s, false),
                None => save(&Service::new(spec.clone(), Some(received_ns)), false),
            });
        let newly_retiring = self.services.iter().filter(|s| !unchanged(s)).rev();
        current
            .chain(self.retiring.iter().chain(newly_retiring).map(|s| save(s, true)))
            .collect()
    }

    /// Rebuilds the supervisor of an agent that restarted: `specs` are the
    /// applied config's services, `saved` what the previous agent recorded.
    pub fn restore(&mut self, specs: &[ServiceSpec], saved: &[SavedService], now: u64) {
        for spec in specs {
            let mut s = Service::new(spec.clone(), None);
            if let Some(old) = saved.iter().find(|o| o.name == spec.name && !o.retiring) {
                s.restarts = old.restarts;
                s.streak = old.streak;
                s.last_exit = old.last_exit.clone();
                s.recent_starts_ns = old.recent_starts_ns.iter().copied().collect();
                s.apply_to_exec_ns = old.apply_to_exec_ns;
                s.started_once = old.started_ns.is_some() || old.last_exit.is_some();
                match old.run {
                    SavedRun::Exited => s.run = Run::Exited,
                    SavedRun::Waiting => {}
                    SavedRun::Running => match self.adopt(old) {
                        Some(proc) => {
                            log::info!(
                                "adopted {} (pid {}), still running from before the agent restarted",
                                spec.name,
                                proc.pid
                            );
                            s.adopted = true;
                            s.run = Run::Running(proc);
                        }
                        None => {
                            log::warn!("{} exited while the agent was down", spec.name);
                            let ran_ms = old.started_ns.map_or(0, |t| now.saturating_sub(t) / NS_PER_MS);
                            ended(&mut s, ExitKind::Unknown, ran_ms, now, false);
                        }
                    },
                }
            }
            self.services.push(s);
        }
        for old in saved.iter().filter(|o| o.retiring) {
            if let Some(proc) = self.adopt(old) {
                log::info!("adopted {} (pid {}) to finish stopping it", old.name, proc.pid);
                // Only the name and the stop timeout matter for a service being stopped.
                let spec = ServiceSpec {
                    name: old.name.clone(),
                    exec: Vec::new(),
                    env: Default::default(),
                    after: Vec::new(),
                    restart: basalt_common::config::RestartSpec {
                        policy: RestartPolicy::Never,
                        backoff: Default::default(),
                    },
                    stop_timeout_ms: old.stop_timeout_ms.unwrap_or(DEFAULT_STOP_TIMEOUT_MS),
                };
                let mut s = Service::new(spec, None);
                s.run = Run::Running(proc);
                s.adopted = true;
                self.retiring.push_back(s);
            }
        }
        self.changed = true;
    }

    /// Takes over a process recorded by a previous agent if it is still the
    /// same process: same pid, same start time, not a zombie.
    fn adopt(&mut self, old: &SavedService) -> Option<Proc> {
        let pid = Pid::from_raw(old.pid?);
        let starttime = old.starttime?;
        let alive = |pid| {
            read_stat(&self.proc_dir, pid).is_some_and(|(state, t)| t == starttime && !matches!(state, 'Z' | 'X'))
        };
        if !alive(pid) {
            return None;
        }
        let pidfd = self.procs.pidfd_open(pid).ok()?;
        // The pidfd names whatever process had the pid when it was opened;
        // checking again proves that is still the one recorded.
        if !alive(pid) {
            return None;
        }
        Some(Proc {
            pid,
            starttime: Some(starttime),
            started_ns: old.started_ns.unwrap_or(0),
            pidfd: Some(pidfd),
        })
    }
}

/// Records an exit and decides, by the restart policy, what comes next.
fn ended(s: &mut Service, kind: ExitKind, ran_ms: u64, now: u64, stopping_all: bool) {
    let restart = !stopping_all
        && match s.spec.restart.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !kind.success(),
            RestartPolicy::Never => false,
        };
    let what = kind.describe();
    s.last_exit = Some(ExitRecord {
        kind,
        at_ns: now,
        ran_ms,
    });
    if restart {
        let backoff = s.spec.restart.backoff;
        s.streak = backoff.next_streak(s.streak, ran_ms);
        let delay = backoff.delay_ms(s.streak);
        s.backoff_ms = Some(delay);
        s.run = Run::Backoff {
            until_ns: now + delay * NS_PER_MS,
        };
        log::warn!("{} {what} after {ran_ms} ms; restarting in {delay} ms", s.spec.name);
    } else {
        s.run = Run::Exited;
        log::info!(
            "{} {what}; restart policy {} leaves it stopped",
            s.spec.name,
            s.spec.restart.policy.as_str()
        );
    }
}

fn signal_group(procs: &mut impl Processes, pid: Pid, sig: Signal) {
    match procs.signal_group(pid, sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => log::warn!("cannot send {sig} to process group {pid}: {e}"),
    }
}

/// Starts a service: clean environment, stdin on /dev/null, stdout and
/// stderr appended to its log, its own session. Returns once the program
/// has been exec'd (std reports a failed exec as an error here).
fn spawn(
    procs: &mut impl Processes,
    spec: &ServiceSpec,
    log_dir: &Path,
    proc_dir: &Path,
) -> Result<(Pid, Option<u64>), String> {
    let path = logs::log_path(log_dir, &spec.name);
    let out = logs::open_append(&path).map_err(|e| format!("cannot open log {}: {e}", path.display()))?;
    let env = service_env(&spec.env);
    let pid = procs
        .spawn(&sys::SpawnSpec {
            argv: &spec.exec,
            env: &env,
            output: out.as_fd(),
        })
        .map_err(|e| format!("{}: {e}", spec.exec[0]))?;
    Ok((pid, read_stat(proc_dir, pid).map(|(_, t)| t)))
}

/// A service's whole environment: PATH, then the config's variables (which
/// may override it), in a stable order. Nothing of the agent's leaks in.
fn service_env(env: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    out.insert("PATH".into(), SERVICE_PATH.into());
    out.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    out.into_iter().collect()
}

/// State letter and start time (field 22) of `/proc/<pid>/stat`.
pub fn read_stat(proc_dir: &Path, pid: Pid) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(proc_dir.join(pid.to_string()).join("stat")).ok()?;
    let stat = procfs::parse_stat(&text)?;
    Some((stat.state, stat.starttime?))
}

fn save(s: &Service, retiring: bool) -> SavedService {
    let proc = s.run.proc();
    SavedService {
        name: s.spec.name.clone(),
        retiring,
        run: match s.run {
            Run::Running(_) | Run::Stopping { .. } => SavedRun::Running,
            Run::Waiting | Run::Backoff { .. } => SavedRun::Waiting,
            Run::Exited => SavedRun::Exited,
        },
        pid: proc.map(|p| p.pid.as_raw()),
        starttime: proc.and_then(|p| p.starttime),
        started_ns: proc.map(|p| p.started_ns),
        restarts: s.restarts,
        streak: s.streak,
        last_exit: s.last_exit.clone(),
        recent_starts_ns: s.recent_starts_ns.iter().copied().collect(),
        apply_to_exec_ns: s.apply_to_exec_ns,
        stop_timeout_ms: Some(s.spec.stop_timeout_ms),
    }
}

fn service_status(s: &Service, retiring: bool, now: u64) -> Value {
    let proc = s.run.proc();
    let next_start_in_ms = match s.run {
        Run::Backoff { until_ns } => Some(until_ns.saturating_sub(now) / NS_PER_MS),
        _ => None,
    };
    json!({
        "name": s.spec.name,
        "state": s.run.name(),
        "retiring": retiring,
        "pid": proc.map(|p| p.pid.as_raw()),
        "adopted": s.adopted,
        "restarts": s.restarts,
        "policy": s.spec.restart.policy.as_str(),
        "started_ms": proc.map(|p| clock::ms(p.started_ns)),
        "last_exit": s.last_exit.as_ref().map(|e| json!({
            "status": e.kind.describe(),
            "at_ms": clock::ms(e.at_ns),
            "ran_ms": e.ran_ms,
        })),
        "backoff_ms": s.backoff_ms,
        "next_start_in_ms": next_start_in_ms,
        "recent_starts_ms": s.recent_starts_ns.iter().map(|&t| clock::ms(t)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod fake;
#[cfg(test)]
mod lifecycle_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_stat_parses() {
        let me = Pid::this();
        let (state, start) = read_stat(Path::new("/proc"), me).unwrap();
        assert!(matches!(state, 'R' | 'S'), "{state}");
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert_eq!(procfs::parse_stat(&own).and_then(|s| s.starttime), Some(start));
    }

    fn spec(name: &str, after: &[&str]) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            exec: vec!["/bin/true".into()],
            env: Default::default(),
            after: after.iter().map(|s| s.to_string()).collect(),
            restart: basalt_common::config::RestartSpec {
                policy: RestartPolicy::Always,
                backoff: Default::default(),
            },
            stop_timeout_ms: 1000,
        }
    }

    #[test]
    fn apply_plans_only_what_changed() {
        let mut sup = Supervisor::new(PathBuf::from("/nonexistent"), PathBuf::from("/proc"));
        let first = [spec("a", &[]), spec("b", &["a"]), spec("c", &[])];
        let plan = sup.apply(&first, 1);
        assert_eq!(plan.started, ["a", "b", "c"]);
        let mut b2 = spec("b", &["a"]);
        b2.env.insert("X".into(), "1".into());
        let second = [spec("a", &[]), b2, spec("d", &[])];
        let plan = sup.apply(&second, 2);
        assert_eq!(
            plan,
            Plan {
                started: vec!["d".into()],
                restarted: vec!["b".into()],
                stopped: vec!["c".into()],
                unchanged: vec!["a".into()],
            }
        );
        // Reverse of the old start order: c (started after b) stops first.
        let retiring: Vec<&str> = sup.retiring.iter().map(|s| s.spec.name.as_str()).collect();
        assert_eq!(retiring, ["c", "b"]);
        let names: Vec<&str> = sup.services.iter().map(|s| s.spec.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "d"]);
    }

    #[test]
    fn snapshot_after_apply_is_what_apply_records() {
        let mut b2 = spec("b", &["a"]);
        b2.env.insert("X".into(), "1".into());
        let configs = [
            vec![spec("a", &[]), spec("b", &["a"]), spec("c", &[])],
            vec![spec("a", &[]), b2, spec("d", &[])],
            vec![],
            vec![spec("c", &[]), spec("a", &[])],
        ];
        let mut sup = Supervisor::new(PathBuf::from("/nonexistent"), PathBuf::from("/proc"));
        for (i, specs) in configs.iter().enumerate() {
            let predicted = sup.snapshot_after_apply(specs, i as u64);
            sup.apply(specs, i as u64);
            assert_eq!(predicted, sup.snapshot(), "config {i}");
        }
    }

    #[test]
    fn exits_follow_the_restart_policy() {
        let cases = [
            (RestartPolicy::Always, ExitKind::Code(0), "backoff"),
            (RestartPolicy::Always, ExitKind::Signal(9), "backoff"),
            (RestartPolicy::OnFailure, ExitKind::Code(0), "exited"),
            (RestartPolicy::OnFailure, ExitKind::Code(2), "backoff"),
            (RestartPolicy::OnFailure, ExitKind::Unknown, "backoff"),
            (RestartPolicy::Never, ExitKind::Code(1), "exited"),
        ];
        for (policy, kind, want) in cases {
            let mut sp = spec("s", &[]);
            sp.restart.policy = policy;
            let mut s = Service::new(sp, None);
            ended(&mut s, kind.clone(), 10, 0, false);
            assert_eq!(s.run.name(), want, "{policy:?} {kind:?}");
        }
        // Backoff grows with quick exits and resets after a stable run.
        let mut s = Service::new(spec("s", &[]), None);
        let mut delays = Vec::new();
        for ran in [5, 5, 5, 70_000, 5] {
            ended(&mut s, ExitKind::Code(1), ran, 0, false);
            delays.push(s.backoff_ms.unwrap());
        }
        assert_eq!(delays, [100, 200, 400, 100, 200]);
        // Nothing restarts during a shutdown.
        ended(&mut s, ExitKind::Code(1), 5, 0, true);
        assert_eq!(s.run.name(), "exited");
    }
}
