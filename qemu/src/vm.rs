//! A running VM: QEMU, its console capture, and the vsock daemon if any.
//! Dropping a `Vm` stops and reaps every process it started.

use crate::accel::{self, AccelChoice, ProbeGuest, ProbeRun, PROBE_TIMEOUT};
use crate::argv::{qemu_args, LaunchPlan};
use crate::capture::{spawn_reader, Capture, Found, Sinks};
use crate::daemon::{self, VsockDaemon};
use crate::error::{QemuError, WaitError, WaitFailure};
use crate::programs::{cargo_bin_dirs, describe_search, find_program};
use crate::sys;
use crate::vm_config::{Console, VmConfig};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Console lines a failed wait shows.
pub const CONSOLE_TAIL_LINES: usize = 200;
/// How long QEMU gets to exit after SIGTERM when a `Vm` is dropped.
const DROP_GRACE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);
/// After QEMU exits, how long its output pipes get to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A running VM. All methods take `&self`, so a `Vm` can be shared between
/// threads (one waiting on the console, another on the provisioning
/// socket).
pub struct Vm {
    qemu: Mutex<Child>,
    qemu_pid: u32,
    console: Arc<Capture>,
    stderr: Arc<Capture>,
    readers: Mutex<Vec<JoinHandle<()>>>,
    accel: AccelChoice,
    started: Instant,
    prov_socket: Option<PathBuf>,
    vsock_uds: Option<PathBuf>,
    uuid: Option<String>,
    // Dropped in this order after `Drop::drop` stopped QEMU: the daemon,
    // then the work dir holding its sockets.
    daemon: Mutex<Option<DaemonGuard>>,
    work_dir: Option<WorkDir>,
}

impl Vm {
    /// Checks the inputs, settles the accelerator (see [`crate::accel`]),
    /// starts vhost-device-vsock if vsock is asked for, then QEMU.
    pub fn start(mut cfg: VmConfig) -> Result<Vm, QemuError> {
        check_inputs(&cfg)?;
        if cfg.uuid.is_none() {
            cfg.uuid = Some(crate::vm_config::random_uuid().map_err(|source| QemuError::Uuid { source })?);
        }
        let qemu = find_program(&cfg.qemu_program, std::env::var_os("PATH").as_deref(), &[]).ok_or_else(|| {
            QemuError::ProgramNotFound {
                program: "qemu-system-x86_64",
                searched: describe_search(&cfg.qemu_program, &[]),
                hint: "install qemu-system-x86",
            }
        })?;
        let accel = accel::resolve(&cfg, &|probe| Vm::boot_probe(probe, &qemu))?;
        let firmware = cfg.qboot.is_file().then(|| cfg.qboot.clone());
        Vm::launch(cfg, firmware, accel, &qemu)
    }

    /// Starts a VM whose accelerator and firmware are already decided.
    fn launch(cfg: VmConfig, firmware: Option<PathBuf>, accel: AccelChoice, qemu: &Path) -> Result<Vm, QemuError> {
        let work_dir = WorkDir::prepare(&cfg)?;
        let daemon = match (cfg.vsock_cid, &work_dir) {
            (Some(cid), Some(dir)) => {
                let extra = cargo_bin_dirs();
                let program = find_program(&cfg.vsock_daemon_program, std::env::var_os("PATH").as_deref(), &extra)
                    .ok_or_else(|| QemuError::ProgramNotFound {
                        program: "vhost-device-vsock",
                        searched: describe_search(&cfg.vsock_daemon_program, &extra),
                        hint: "cargo install vhost-device-vsock",
                    })?;
                Some(DaemonGuard(daemon::start(&program, cid, &dir.path)?))
            }
            _ => None,
        };
        let uefi_vars = match (&cfg.uefi, &work_dir) {
            (Some(uefi), Some(dir)) => {
                let copy = dir.path.join("OVMF_VARS.fd");
                fs::copy(&uefi.vars_template, &copy).map_err(|source| QemuError::CopyUefiVars {
                    from: uefi.vars_template.clone(),
                    to: copy.clone(),
                    source,
                })?;
                Some(copy)
            }
            _ => None,
        };
        let plan = LaunchPlan {
            accel: accel.accel,
            firmware,
            vhost_socket: daemon.as_ref().map(|d| d.0.vhost_socket.clone()),
            uefi_vars,
        };
        let log = match &cfg.console_log {
            Some(path) => Some((path.clone(), open_log(path)?)),
            None => None,
        };

        let interactive = cfg.console == Console::Stdio;
        let mut child = Command::new(qemu)
            .args(qemu_args(&cfg, &plan))
            .stdin(if interactive { Stdio::inherit() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| QemuError::Spawn {
                program: qemu.to_path_buf(),
                source,
            })?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let vm = Vm {
            qemu_pid: child.id(),
            qemu: Mutex::new(child),
            console: Arc::default(),
            stderr: Arc::default(),
            readers: Mutex::default(),
            accel,
            started: Instant::now(),
            prov_socket: cfg.prov_socket.clone(),
            vsock_uds: daemon.as_ref().map(|d| d.0.uds_path.clone()),
            uuid: cfg.uuid.clone(),
            daemon: Mutex::new(daemon),
            work_dir,
        };
        // From here on an error drops `vm`, which stops QEMU and the daemon.
        let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
            return Err(QemuError::CapturePipe {
                program: "qemu-system-x86_64",
            });
        };
        let console_sinks = Sinks {
            log,
            tee: interactive.then(|| Box::new(io::stdout()) as Box<dyn io::Write + Send>),
        };
        let stderr_sinks = Sinks {
            log: None,
            tee: interactive.then(|| Box::new(io::stderr()) as Box<dyn io::Write + Send>),
        };
        let spawn_failed = |source| QemuError::ReaderThread { source };
        let console_reader =
            spawn_reader("qemu-console", stdout, vm.console.clone(), console_sinks).map_err(spawn_failed)?;
        vm.lock_readers().push(console_reader);
        let stderr_reader =
            spawn_reader("qemu-stderr", stderr, vm.stderr.clone(), stderr_sinks).map_err(spawn_failed)?;
        vm.lock_readers().push(stderr_reader);
        Ok(vm)
    }

    /// Boots the KVM probe guest for [`accel::resolve`] and waits for it.
    fn boot_probe(probe: ProbeGuest, qemu: &Path) -> ProbeRun {
        let vm = match Vm::launch(probe.cfg, probe.firmware, probe.choice, qemu) {
            Ok(vm) => vm,
            Err(e) => return ProbeRun::NotStarted(e.to_string()),
        };
        match vm.wait_for_exit(PROBE_TIMEOUT) {
            Ok(status) => ProbeRun::Exited {
                status: status.to_string(),
                console: vm.console_text(),
                qemu_stderr: vm.qemu_stderr(),
            },
            Err(_) => ProbeRun::StillRunning,
        }
        // Dropping the probe VM kills QEMU if it is still running.
    }

    /// The accelerator this VM runs under, and why.
    pub fn accel(&self) -> &AccelChoice {
        &self.accel
    }

    pub fn pid(&self) -> u32 {
        self.qemu_pid
    }

    /// When QEMU was started.
    pub fn started_at(&self) -> Instant {
        self.started
    }

    /// The SMBIOS system UUID the guest sees (its default node identity).
    pub fn uuid(&self) -> Option<&str> {
        self.uuid.as_deref()
    }

    /// The unix socket behind the guest's ttyS1 (see [`crate::connect_prov`]).
    pub fn prov_socket_path(&self) -> Option<&Path> {
        self.prov_socket.as_deref()
    }

    /// The host-side vsock socket (see [`crate::vsock_connect`]).
    pub fn vsock_uds_path(&self) -> Option<&Path> {
        self.vsock_uds.as_deref()
    }

    /// The pid of the vhost-device-vsock daemon this VM started, while it
    /// runs.
    pub fn vsock_daemon_pid(&self) -> Option<u32> {
        self.lock_daemon().as_ref().map(|d| d.0.child.id())
    }

    /// The directory holding the vsock sockets and the daemon's log.
    pub fn work_dir(&self) -> Option<&Path> {
        self.work_dir.as_ref().map(|w| w.path.as_path())
    }

    /// Everything the console printed so far, as lossy UTF-8.
    pub fn console_text(&self) -> String {
        self.console.text()
    }

    /// Everything the console printed so far, raw.
    pub fn console_bytes(&self) -> Vec<u8> {
        self.console.bytes()
    }

    /// Bytes of console so far: an offset for [`Vm::wait_for_console_after`].
    pub fn console_len(&self) -> usize {
        self.console.len()
    }

    /// What QEMU itself wrote to stderr.
    pub fn qemu_stderr(&self) -> String {
        self.stderr.text()
    }

    /// Waits until `needle` appears anywhere in the console.
    pub fn wait_for_console(&self, needle: &str, timeout: Duration) -> Result<(), WaitError> {
        self.wait_for_console_after(needle, 0, timeout).map(|_end| ())
    }

    /// Waits until `needle` appears at or after console byte `from`, and
    /// returns the offset just past it (the `from` for the next wait).
    /// Fails early if QEMU exits first.
    pub fn wait_for_console_after(&self, needle: &str, from: usize, timeout: Duration) -> Result<usize, WaitError> {
        match self.console.wait_for(needle.as_bytes(), from, timeout) {
            Found::At(end) => Ok(end),
            Found::TimedOut => Err(self.wait_error(WaitFailure::ConsoleTimeout {
                needle: needle.to_string(),
                timeout,
            })),
            Found::Closed => {
                // The console closes when QEMU exits; give it a moment to be
                // reapable so the error can say how it ended.
                let status = self.wait_for_exit(Duration::from_millis(500)).ok();
                Err(self.wait_error(WaitFailure::ExitedBeforeNeedle {
                    needle: needle.to_string(),
                    status,
                }))
            }
        }
    }

    /// Waits for QEMU to exit by itself (guest poweroff or reboot, or a
    /// guest panic with `panic=-1`), then for the console to drain.
    pub fn wait_for_exit(&self, timeout: Duration) -> Result<ExitStatus, WaitError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            match self.lock_qemu().try_wait() {
                Ok(Some(status)) => {
                    self.console.wait_closed(DRAIN_TIMEOUT);
                    return Ok(status);
                }
                Ok(None) => {}
                Err(source) => {
                    let pid = self.qemu_pid;
                    return Err(self.wait_error(WaitFailure::Reap { pid, source }));
                }
            }
            let left = deadline.map_or(POLL, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Err(self.wait_error(WaitFailure::ExitTimeout { timeout }));
            }
            std::thread::sleep(POLL.min(left));
        }
    }

    /// QEMU's exit status if it has exited, without waiting.
    pub fn try_exit_status(&self) -> Result<Option<ExitStatus>, QemuError> {
        self.lock_qemu().try_wait().map_err(|source| QemuError::Reap {
            what: "qemu-system-x86_64",
            pid: self.qemu_pid,
            source,
        })
    }

    /// Stops QEMU with SIGKILL and the vsock daemon, and reaps both.
    pub fn kill(&self) -> Result<ExitStatus, QemuError> {
        self.terminate(Duration::ZERO)
    }

    /// Sends QEMU SIGTERM (it exits cleanly and restores an interactive
    /// terminal), waits up to `grace`, then SIGKILLs it; then stops the
    /// vsock daemon. Returns QEMU's exit status.
    pub fn terminate(&self, grace: Duration) -> Result<ExitStatus, QemuError> {
        let status = self.stop_qemu(grace);
        self.lock_daemon().take(); // DaemonGuard's drop kills and reaps it
        status
    }

    fn stop_qemu(&self, grace: Duration) -> Result<ExitStatus, QemuError> {
        let what = "qemu-system-x86_64";
        let pid = self.qemu_pid;
        let reap_err = |source| QemuError::Reap { what, pid, source };
        let mut child = self.lock_qemu();
        if let Some(status) = child.try_wait().map_err(reap_err)? {
            return Ok(status);
        }
        if !grace.is_zero() {
            // Unreaped (checked above, under the lock), so `pid` is still ours.
            sys::send_signal(pid, libc::SIGTERM).map_err(|source| QemuError::Signal { what, pid, source })?;
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait().map_err(reap_err)? {
                    return Ok(status);
                }
                std::thread::sleep(POLL);
            }
        }
        child.kill().map_err(|source| QemuError::Signal { what, pid, source })?;
        child.wait().map_err(reap_err)
    }

    fn wait_error(&self, failure: WaitFailure) -> WaitError {
        WaitError {
            failure,
            console_tail: self.console.tail(CONSOLE_TAIL_LINES),
            qemu_stderr: self.stderr.tail(20),
        }
    }

    fn lock_qemu(&self) -> MutexGuard<'_, Child> {
        self.qemu.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_daemon(&self) -> MutexGuard<'_, Option<DaemonGuard>> {
        self.daemon.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_readers(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.readers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Err(e) = self.terminate(DROP_GRACE) {
            eprintln!("basalt-qemu: stopping the VM: {e}");
        }
        // QEMU is gone, so its pipes are closed and the readers finish; a
        // reader that does not is left behind rather than hanging the drop.
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        for reader in self.lock_readers().drain(..) {
            while !reader.is_finished() && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
    }
}

/// Kills and reaps vhost-device-vsock when dropped.
struct DaemonGuard(VsockDaemon);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        let child = &mut self.0.child;
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Its sockets would make the next daemon's bind fail in a reused
        // work dir.
        let _ = fs::remove_file(&self.0.vhost_socket);
        let _ = fs::remove_file(&self.0.uds_path);
    }
}

/// The VM's work dir; removed when dropped if the launcher created it.
struct WorkDir {
    path: PathBuf,
    remove: bool,
}

impl WorkDir {
    /// The configured dir (created if missing), or a fresh temp dir when
    /// vsock or a UEFI variable store needs one, or none.
    fn prepare(cfg: &VmConfig) -> Result<Option<WorkDir>, QemuError> {
        if let Some(dir) = &cfg.work_dir {
            // Absolute, because the daemon and QEMU get socket paths in it.
            let path = std::path::absolute(dir).map_err(|source| QemuError::CreateWorkDir {
                path: dir.clone(),
                source,
            })?;
            fs::create_dir_all(&path).map_err(|source| QemuError::CreateWorkDir {
                path: path.clone(),
                source,
            })?;
            return Ok(Some(WorkDir { path, remove: false }));
        }
        if cfg.vsock_cid.is_none() && cfg.uefi.is_none() {
            return Ok(None);
        }
        static NEXT: AtomicU64 = AtomicU64::new(0);
        loop {
            let path = std::env::temp_dir().join(format!(
                "basalt-qemu.{}.{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Some(WorkDir { path, remove: true })),
                // Left by an earlier process with our pid: take the next name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(QemuError::CreateWorkDir { path, source }),
            }
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn check_inputs(cfg: &VmConfig) -> Result<(), QemuError> {
    if let Some(uefi) = &cfg.uefi {
        if !uefi.disk.is_file() {
            return Err(QemuError::DiskMissing {
                path: uefi.disk.clone(),
            });
        }
        if let Some(path) = [&uefi.code, &uefi.vars_template].into_iter().find(|p| !p.is_file()) {
            return Err(QemuError::FirmwareMissing { path: path.clone() });
        }
    } else if !cfg.kernel.is_file() {
        return Err(QemuError::KernelMissing {
            path: cfg.kernel.clone(),
        });
    }
    if let Some(initrd) = cfg.initrd.as_ref().filter(|p| !p.is_file()) {
        return Err(QemuError::InitrdMissing { path: initrd.clone() });
    }
    if let Some(disk) = cfg.disks.iter().find(|p| !p.is_file()) {
        return Err(QemuError::DiskMissing { path: disk.clone() });
    }
    if let Some(sock) = &cfg.prov_socket {
        daemon::check_socket_path(sock)?;
    }
    Ok(())
}

fn open_log(path: &Path) -> Result<File, QemuError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| QemuError::OpenConsoleLog {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Vm>();
    }

    #[test]
    fn missing_inputs_are_named() {
        let dir = std::env::temp_dir().join(format!("basalt-qemu-inputs-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let kernel = dir.join("vmlinuz");
        fs::write(&kernel, b"").unwrap();
        let long_socket = PathBuf::from(format!("/tmp/{}", "s".repeat(120)));
        let cases: Vec<(VmConfig, &str)> = vec![
            (VmConfig::new(dir.join("nope")), "kernel"),
            (VmConfig::new(&kernel).initrd(dir.join("nope")), "initrd"),
            (
                VmConfig::new(&kernel).disk(&kernel).disk(dir.join("nope")),
                "disk image",
            ),
            (VmConfig::new(&kernel).prov_socket(&long_socket), "unix socket path"),
        ];
        for (cfg, what) in cases {
            let err = check_inputs(&cfg).unwrap_err().to_string();
            assert!(err.starts_with(what), "{what}: {err}");
        }
        assert!(check_inputs(&VmConfig::new(&kernel).disk(&kernel)).is_ok());
        fs::remove_dir_all(&dir).unwrap();
    }
}
