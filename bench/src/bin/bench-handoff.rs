//! bench-handoff: the program both inits hand off to in `make bench`.
//!
//! basalt-init spawns it as its handoff; the busybox baseline's /init execs
//! it through switch_root. Its first act is to log a line to /dev/kmsg, so
//! the end of the PID1 phase is a printk timestamp on the same clock as the
//! kernel's "Run /init as init process", the phase's start, for both inits.
//! It then reads the kernel log back, prints what it found as one JSON line
//! (`basalt_bench::line::Outcome`), and powers the VM off with reboot(2) directly, the
//! same way under both inits.

use basalt_bench::line::{self, KmsgRecord, Outcome, Phase};
use basalt_common::procfs;
use nix::sys::reboot::{reboot, RebootMode};
use nix::time::{clock_gettime, ClockId};
use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;

const KMSG: &str = "/dev/kmsg";
const BOOT_REPORT: &str = "/run/basalt/boot.json";
/// A kmsg read must fit a whole record or it fails with EINVAL.
const RECORD_MAX: usize = 16 * 1024;

fn main() {
    let marker = format!("bench-handoff pid={}", std::process::id());
    let result = mark(&marker).and_then(|mono_us| measure(&marker, mono_us));
    let mut out = std::io::stdout().lock();
    let _ = match result {
        Ok(o) => {
            let json = serde_json::to_string(&o).unwrap_or_default();
            writeln!(out, "{}{json}\n{}", line::RESULT_TAG, line::DONE)
        }
        Err(e) => writeln!(out, "{}{e}", line::ERROR_TAG),
    };
    let _ = out.flush();
    drop(out);
    // The console is a serial port: let it drain before the power goes.
    let _ = nix::sys::termios::tcdrain(std::io::stdout());
    nix::unistd::sync();
    let err = reboot(RebootMode::RB_POWER_OFF).err();
    eprintln!("bench-handoff: reboot(RB_POWER_OFF): {err:?}");
    std::process::exit(1);
}

/// Logs `marker` to the kernel log; returns CLOCK_MONOTONIC just after.
fn mark(marker: &str) -> Result<u64, String> {
    let mut kmsg = OpenOptions::new()
        .write(true)
        .open(KMSG)
        .map_err(|e| format!("open {KMSG} for writing: {e}"))?;
    kmsg.write_all(format!("<6>{marker}\n").as_bytes())
        .map_err(|e| format!("write {KMSG}: {e}"))?;
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC).map_err(|e| format!("clock_gettime: {e}"))?;
    Ok(now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1000)
}

fn measure(marker: &str, mono_us: u64) -> Result<Outcome, String> {
    let records = read_kmsg()?;
    let (run_init_us, handoff_us) = line::find_phase(&records, marker)?;
    let phase = Phase {
        run_init_us,
        handoff_us,
        mono_us,
        pid1_hwm_kib: if std::process::id() == 1 {
            None
        } else {
            vm_hwm_kib("/proc/1/status")
        },
    };
    let report = match std::fs::read(BOOT_REPORT) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| format!("parse {BOOT_REPORT}: {e}"))?),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(format!("read {BOOT_REPORT}: {e}")),
    };
    let marks = line::find_marks(&records);
    Ok(Outcome { phase, marks, report })
}

/// Every record in the kernel log, oldest first: /dev/kmsg opened anew
/// starts at the oldest record still in the ring; non-blocking, the read
/// that would wait for a new one ends the loop.
fn read_kmsg() -> Result<Vec<KmsgRecord>, String> {
    let mut kmsg = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(KMSG)
        .map_err(|e| format!("open {KMSG} for reading: {e}"))?;
    let mut buf = vec![0u8; RECORD_MAX];
    let mut records = Vec::new();
    loop {
        match kmsg.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Some(r) = line::parse_kmsg(&String::from_utf8_lossy(&buf[..n])) {
                    records.push(r);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            // EPIPE: records were overwritten while we read; carry on.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read {KMSG}: {e}")),
        }
    }
    Ok(records)
}

fn vm_hwm_kib(status: &str) -> Option<u64> {
    procfs::status_kib(&std::fs::read_to_string(status).ok()?, "VmHWM")
}
