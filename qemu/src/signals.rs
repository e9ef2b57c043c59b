//! Noticing SIGINT, SIGTERM and SIGHUP, so a foreground launcher can tear
//! down QEMU and the vsock daemon (and restore the terminal) instead of
//! dying with its children still running. Handlers are reset to the
//! default across exec, so children are unaffected.

use crate::sys;
use std::io;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicI32, Ordering};

static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn record(signal: c_int) {
    // An atomic store is async-signal-safe.
    RECEIVED.store(signal, Ordering::SeqCst);
}

/// From now on SIGINT, SIGTERM and SIGHUP are recorded instead of killing
/// the process; poll [`termination_signal`].
pub fn catch_termination() -> io::Result<()> {
    sys::catch_signals(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP], record)
}

/// The last termination signal received since [`catch_termination`].
pub fn termination_signal() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}
