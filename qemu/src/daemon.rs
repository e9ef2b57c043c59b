//! The userspace vsock device. This host has no /dev/vhost-vsock, so QEMU's
//! `vhost-user-vsock-pci` talks to `vhost-device-vsock` over a vhost-user
//! socket, and host programs reach guest ports through the daemon's second
//! socket (`--uds-path`, see [`crate::vsock_connect`]).

use crate::capture::tail_lines;
use crate::error::QemuError;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the daemon gets to start listening.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);
/// `sockaddr_un.sun_path` is 108 bytes including the terminating NUL.
pub(crate) const MAX_SOCKET_PATH: usize = 107;

pub(crate) struct VsockDaemon {
    pub(crate) child: Child,
    /// QEMU connects here (vhost-user control).
    pub(crate) vhost_socket: PathBuf,
    /// Host programs connect here and send `CONNECT <port>`.
    pub(crate) uds_path: PathBuf,
}

/// Socket and log names inside the work dir.
pub(crate) fn paths(work_dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        work_dir.join("vhost.sock"),
        work_dir.join("vsock.sock"),
        work_dir.join("vhost-device-vsock.log"),
    )
}

pub(crate) fn check_socket_path(path: &Path) -> Result<(), QemuError> {
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(QemuError::SocketPathTooLong {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Starts the daemon and waits until its vhost-user socket is listening,
/// so QEMU's connect cannot race its bind.
pub(crate) fn start(program: &Path, guest_cid: u32, work_dir: &Path) -> Result<VsockDaemon, QemuError> {
    let (vhost_socket, uds_path, log) = paths(work_dir);
    for sock in [&vhost_socket, &uds_path] {
        check_socket_path(sock)?;
        // A socket left by an earlier run would make the daemon's bind fail.
        match fs::remove_file(sock) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(QemuError::RemoveStaleSocket {
                    path: sock.clone(),
                    source,
                })
            }
        }
    }
    let open_log = || {
        File::create(&log).map_err(|source| QemuError::CreateDaemonLog {
            path: log.clone(),
            source,
        })
    };
    let (stdout, stderr) = (open_log()?, open_log()?);
    let mut child = Command::new(program)
        .arg(format!("--guest-cid={guest_cid}"))
        .arg(format!("--socket={}", vhost_socket.display()))
        .arg(format!("--uds-path={}", uds_path.display()))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|source| QemuError::Spawn {
            program: program.to_path_buf(),
            source,
        })?;

    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        // Not by connecting: the daemon would take a connection on its
        // vhost-user socket for QEMU's.
        if fs::read_to_string("/proc/net/unix").is_ok_and(|t| is_listening(&t, &vhost_socket)) {
            return Ok(VsockDaemon {
                child,
                vhost_socket,
                uds_path,
            });
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                let log_tail = fs::read(&log).map(|b| tail_lines(&b, 5)).unwrap_or_default();
                return Err(QemuError::VsockDaemonExited { status, log, log_tail });
            }
            Ok(None) => {}
            Err(source) => {
                let pid = child.id();
                let _ = child.kill();
                let _ = child.wait();
                return Err(QemuError::Reap {
                    what: "vhost-device-vsock",
                    pid,
                    source,
                });
            }
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(QemuError::VsockDaemonNoSocket {
                path: vhost_socket,
                waited: STARTUP_TIMEOUT,
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Whether /proc/net/unix (`proc_net_unix`, its text) lists a listening
/// socket bound to `path`. Columns: Num RefCount Protocol Flags Type St
/// Inode [Path]; Flags has __SO_ACCEPTCON (0x10000) once listen() ran.
pub(crate) fn is_listening(proc_net_unix: &str, path: &Path) -> bool {
    const ACCEPTCON: u32 = 0x10000;
    let Some(path) = path.to_str() else {
        return false;
    };
    proc_net_unix.lines().skip(1).any(|line| {
        let mut rest = line;
        let mut fields = Vec::with_capacity(7);
        for _ in 0..7 {
            rest = rest.trim_start();
            let end = rest.find(' ').unwrap_or(rest.len());
            fields.push(&rest[..end]);
            rest = &rest[end..];
        }
        let listening = u32::from_str_radix(fields[3], 16).is_ok_and(|f| f & ACCEPTCON != 0);
        listening && rest.trim_start() == path
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_NET_UNIX: &str = "\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 21337 /run/w/vhost.sock
0000000000000000: 00000002 00000000 00000000 0001 01 21338 /run/w/bound-only.sock
0000000000000000: 00000003 00000000 00000000 0001 03 21339 /run/w/vhost.sock
0000000000000000: 00000002 00000000 00010000 0001 01 21340 /run/w/with space.sock
0000000000000000: 00000002 00000000 00010000 0001 01 21341 @abstract
0000000000000000: 00000003 00000000 00000000 0001 03 21342
";

    #[test]
    fn listening_sockets_in_proc_net_unix() {
        let cases = [
            ("/run/w/vhost.sock", true),
            ("/run/w/bound-only.sock", false),
            ("/run/w/with space.sock", true),
            ("/run/w/vhost", false),
            ("/run/w/missing.sock", false),
            ("@abstract", true),
        ];
        for (path, want) in cases {
            assert_eq!(is_listening(PROC_NET_UNIX, Path::new(path)), want, "{path}");
        }
        assert!(!is_listening("", Path::new("/x")));
    }

    #[test]
    fn socket_path_length_limit() {
        assert!(check_socket_path(Path::new(&"/".repeat(107))).is_ok());
        let err = check_socket_path(Path::new(&"/".repeat(108))).unwrap_err();
        assert!(err.to_string().contains("108 bytes"), "{err}");
    }
}
