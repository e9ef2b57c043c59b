//! PID1's own process setup: signals and standard descriptors.

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use nix::sys::stat::Mode;

/// Blocks every signal (PID1 takes them with sigtimedwait) and turns
/// Ctrl-Alt-Del into SIGINT instead of an immediate kernel reboot.
pub fn take_signals() {
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), None);
    let _ = nix::sys::reboot::set_cad_enabled(false);
}

/// Makes sure fds 0, 1 and 2 are open. The kernel opens /dev/console for init
/// when the initramfs has it; if not, they are closed, and the first file we
/// open would silently become stdout. Call once /dev is mounted.
pub fn ensure_stdio(console: &str) {
    for fd in 0..=2 {
        if fcntl(fd, FcntlArg::F_GETFD).is_ok() {
            continue;
        }
        if let Ok(opened) = nix::fcntl::open(console, OFlag::O_RDWR | OFlag::O_NOCTTY, Mode::empty()) {
            if opened != fd {
                let _ = nix::unistd::dup2(opened, fd);
                let _ = nix::unistd::close(opened);
            }
        }
    }
}
