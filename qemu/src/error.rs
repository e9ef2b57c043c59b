//! Errors. `QemuError` is one failed operation of the launcher; `WaitError`
//! is a failed wait on a running VM and carries the end of its console, so a
//! failing test shows what the guest was doing.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// A launcher operation that failed, with what it failed on.
#[derive(Debug)]
pub enum QemuError {
    KernelMissing {
        path: PathBuf,
    },
    InitrdMissing {
        path: PathBuf,
    },
    DiskMissing {
        path: PathBuf,
    },
    /// OVMF's code or variable store is not there.
    FirmwareMissing {
        path: PathBuf,
    },
    CopyUefiVars {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    /// A program was not found; `hint` says how to install it.
    ProgramNotFound {
        program: &'static str,
        searched: String,
        hint: &'static str,
    },
    BadAccelEnv {
        value: String,
    },
    /// Reading /dev/urandom for a VM's UUID failed.
    Uuid {
        source: io::Error,
    },
    /// A unix socket path longer than `sockaddr_un.sun_path` allows.
    SocketPathTooLong {
        path: PathBuf,
    },
    CreateWorkDir {
        path: PathBuf,
        source: io::Error,
    },
    OpenConsoleLog {
        path: PathBuf,
        source: io::Error,
    },
    CreateDaemonLog {
        path: PathBuf,
        source: io::Error,
    },
    RemoveStaleSocket {
        path: PathBuf,
        source: io::Error,
    },
    Spawn {
        program: PathBuf,
        source: io::Error,
    },
    CapturePipe {
        program: &'static str,
    },
    ReaderThread {
        source: io::Error,
    },
    VsockDaemonExited {
        status: ExitStatus,
        log: PathBuf,
        log_tail: String,
    },
    VsockDaemonNoSocket {
        path: PathBuf,
        waited: Duration,
    },
    Signal {
        what: &'static str,
        pid: u32,
        source: io::Error,
    },
    Reap {
        what: &'static str,
        pid: u32,
        source: io::Error,
    },
    ProvConnect {
        path: PathBuf,
        source: io::Error,
    },
    ProvTimeout {
        path: PathBuf,
        waited: Duration,
        last: io::Error,
    },
    VsockConnect {
        path: PathBuf,
        source: io::Error,
    },
    VsockTimeout {
        path: PathBuf,
        port: u32,
        waited: Duration,
        last: String,
    },
    VsockHandshake {
        path: PathBuf,
        port: u32,
        reply: String,
    },
}

impl fmt::Display for QemuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use QemuError::*;
        match self {
            KernelMissing { path } => write!(
                f,
                "kernel {} does not exist: run `make kernel` or set BASALT_KERNEL",
                path.display()
            ),
            InitrdMissing { path } => write!(f, "initrd {} does not exist", path.display()),
            DiskMissing { path } => write!(f, "disk image {} does not exist", path.display()),
            FirmwareMissing { path } => write!(
                f,
                "UEFI firmware {} does not exist (install the ovmf package)",
                path.display()
            ),
            CopyUefiVars { from, to, source } => write!(
                f,
                "copying the UEFI variable store {} to {}: {source}",
                from.display(),
                to.display()
            ),
            ProgramNotFound {
                program,
                searched,
                hint,
            } => {
                write!(f, "{program} not found (searched {searched}): {hint}")
            }
            BadAccelEnv { value } => {
                write!(f, "BASALT_ACCEL={value:?} is not one of auto, kvm, tcg")
            }
            Uuid { source } => write!(f, "reading /dev/urandom for the VM's UUID: {source}"),
            SocketPathTooLong { path } => write!(
                f,
                "unix socket path {} is {} bytes, longer than the 107 a socket address holds: use a shorter work dir",
                path.display(),
                path.as_os_str().len()
            ),
            CreateWorkDir { path, source } => {
                write!(f, "creating work dir {}: {source}", path.display())
            }
            OpenConsoleLog { path, source } => {
                write!(f, "opening console log {}: {source}", path.display())
            }
            CreateDaemonLog { path, source } => {
                write!(f, "creating vhost-device-vsock log {}: {source}", path.display())
            }
            RemoveStaleSocket { path, source } => {
                write!(f, "removing stale socket {}: {source}", path.display())
            }
            Spawn { program, source } => write!(f, "starting {}: {source}", program.display()),
            ReaderThread { source } => write!(f, "starting a qemu output reader thread: {source}"),
            CapturePipe { program } => write!(f, "{program} started without its output pipe"),
            VsockDaemonExited { status, log, log_tail } => write!(
                f,
                "vhost-device-vsock exited at startup ({status}); log {}: {}",
                log.display(),
                log_tail.trim().replace('\n', " | ")
            ),
            VsockDaemonNoSocket { path, waited } => write!(
                f,
                "vhost-device-vsock did not create {} within {waited:?}",
                path.display()
            ),
            Signal { what, pid, source } => write!(f, "signalling {what} (pid {pid}): {source}"),
            Reap { what, pid, source } => write!(f, "waiting for {what} (pid {pid}): {source}"),
            ProvConnect { path, source } => {
                write!(f, "connecting to provisioning socket {}: {source}", path.display())
            }
            ProvTimeout { path, waited, last } => write!(
                f,
                "provisioning socket {} not accepting connections after {waited:?}: {last}",
                path.display()
            ),
            VsockConnect { path, source } => {
                write!(f, "connecting to vsock socket {}: {source}", path.display())
            }
            VsockTimeout {
                path,
                port,
                waited,
                last,
            } => write!(
                f,
                "no vsock connection to guest port {port} via {} within {waited:?}: {last}",
                path.display()
            ),
            VsockHandshake { path, port, reply } => write!(
                f,
                "vsock CONNECT {port} via {} got {reply:?}, expected \"OK <port>\"",
                path.display()
            ),
        }
    }
}

impl std::error::Error for QemuError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        use QemuError::*;
        match self {
            CreateWorkDir { source, .. }
            | OpenConsoleLog { source, .. }
            | CreateDaemonLog { source, .. }
            | RemoveStaleSocket { source, .. }
            | Spawn { source, .. }
            | ReaderThread { source }
            | Signal { source, .. }
            | Reap { source, .. }
            | ProvConnect { source, .. }
            | VsockConnect { source, .. } => Some(source),
            ProvTimeout { last, .. } => Some(last),
            _ => None,
        }
    }
}

/// What a wait on a running VM was waiting for and why it failed.
#[derive(Debug)]
pub enum WaitFailure {
    /// The console did not show `needle` within `timeout`.
    ConsoleTimeout { needle: String, timeout: Duration },
    /// QEMU closed the console (it exited) before `needle` appeared.
    ExitedBeforeNeedle { needle: String, status: Option<ExitStatus> },
    /// QEMU was still running after `timeout`.
    ExitTimeout { timeout: Duration },
    /// Checking QEMU's exit status failed.
    Reap { pid: u32, source: io::Error },
}

impl fmt::Display for WaitFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitFailure::ConsoleTimeout { needle, timeout } => {
                write!(f, "console did not show {needle:?} within {timeout:?}")
            }
            WaitFailure::ExitedBeforeNeedle {
                needle,
                status: Some(status),
            } => {
                write!(f, "qemu exited ({status}) before the console showed {needle:?}")
            }
            WaitFailure::ExitedBeforeNeedle { needle, status: None } => {
                write!(f, "qemu closed the console before it showed {needle:?}")
            }
            WaitFailure::ExitTimeout { timeout } => {
                write!(f, "qemu did not exit within {timeout:?}")
            }
            WaitFailure::Reap { pid, source } => {
                write!(f, "waiting for qemu (pid {pid}): {source}")
            }
        }
    }
}

/// A failed wait. Display is the failure on the first line, then the last
/// lines of the console (and QEMU's stderr, if it said anything).
#[derive(Debug)]
pub struct WaitError {
    pub failure: WaitFailure,
    /// The last lines of the console at the time of the failure.
    pub console_tail: String,
    /// QEMU's own stderr (empty unless QEMU complained).
    pub qemu_stderr: String,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.failure)?;
        if self.console_tail.is_empty() {
            write!(f, "; the console is empty")?;
        } else {
            write!(f, "; console (last lines):\n{}", self.console_tail.trim_end())?;
        }
        if !self.qemu_stderr.trim().is_empty() {
            write!(f, "\nqemu stderr:\n{}", self.qemu_stderr.trim_end())?;
        }
        Ok(())
    }
}

impl std::error::Error for WaitError {}
