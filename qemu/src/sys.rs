//! The crate's only unsafe code: kill(2) and sigaction(2), which std does
//! not offer (std's `Child::kill` is SIGKILL only, and a SIGKILLed QEMU
//! leaves an interactive terminal in raw mode).

use std::io;
use std::os::raw::c_int;

/// kill(2): sends `signal` to process `pid`.
pub(crate) fn send_signal(pid: u32, signal: c_int) -> io::Result<()> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill takes plain integers and touches no memory of ours. The
    // callers only signal children they have not reaped yet, so the pid
    // cannot have been reused by another process.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// sigaction(2) with SA_RESTART and an empty mask: runs `handler` on each
/// of `signals`. The handler must be async-signal-safe.
pub(crate) fn catch_signals(signals: &[c_int], handler: extern "C" fn(c_int)) -> io::Result<()> {
    for &signal in signals {
        // SAFETY: an all-zero sigaction is a valid value (no flags, empty
        // mask, SIG_DFL) that is then filled in field by field.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = handler as usize;
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: sa_mask is a valid sigset_t owned by `action`.
        if unsafe { libc::sigemptyset(&mut action.sa_mask) } == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `action` is fully initialised and outlives the call; the
        // old action is not asked for (null). `handler` is an extern "C"
        // fn that lives for the whole program.
        if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
