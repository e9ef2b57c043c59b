//! basalt-init's logger: every line goes to the console, to the kernel log
//! (`/dev/kmsg`, so `dmesg` and the agent see it) and to
//! `/run/basalt/log/init.log` (served by the agent's `logs init`).
//!
//! Before /dev and /run exist, lines go to the console and are kept in memory
//! until the other sinks open. When the kernel itself will echo a kmsg line on
//! the console (its console_loglevel is above the line's level), the direct
//! console write is skipped so no line appears twice.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

use crate::uptime;

const TAG: &str = "basalt-init";
/// Lines kept in memory until /run is mounted; early boot logs far fewer.
const MAX_EARLY_LINES: usize = 512;

struct Sinks {
    kmsg: Option<File>,
    file: Option<File>,
    /// The kernel's console_loglevel; kmsg lines below it reach the console anyway.
    console_loglevel: u8,
    early: Vec<String>,
}

static SINKS: Mutex<Sinks> = Mutex::new(Sinks {
    kmsg: None,
    file: None,
    console_loglevel: 0,
    early: Vec::new(),
});

struct InitLogger;
static LOGGER: InitLogger = InitLogger;

/// Installs the logger. Only the console works until [`open_kmsg`] and [`open_file`].
pub fn install(debug: bool) {
    // set_logger fails only if a logger is already set, which is then fine.
    let _ = log::set_logger(&LOGGER);
    set_debug(debug);
}

pub fn set_debug(debug: bool) {
    log::set_max_level(if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    });
}

/// Opens `/dev/kmsg`, turns off its rate limit (`printk_devkmsg=on`; by
/// default the kernel drops user lines after a burst of 10 in 5 s, which a
/// boot easily exceeds), and reads the console log level. The kernel's echo
/// is only relied on when the rate limit is off: a dropped line must never be
/// one that was not printed directly either.
pub fn open_kmsg(kmsg: &str, proc_kernel: &str) {
    let devkmsg = format!("{proc_kernel}/printk_devkmsg");
    // The sysctl wants the trailing newline: "on" alone is EINVAL.
    let _ = OpenOptions::new()
        .write(true)
        .open(&devkmsg)
        .and_then(|mut f| f.write_all(b"on\n"));
    let unlimited = std::fs::read_to_string(&devkmsg).is_ok_and(|s| s.trim() == "on");
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(kmsg)
        .ok();
    let level = std::fs::read_to_string(format!("{proc_kernel}/printk"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .filter(|_| unlimited)
        .unwrap_or(0);
    if let Ok(mut s) = SINKS.lock() {
        s.kmsg = file;
        s.console_loglevel = level;
    }
}

/// Opens the log file and flushes what was logged before it existed.
pub fn open_file(path: &str) {
    if let Some(dir) = std::path::Path::new(path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(path);
    if let (Ok(mut file), Ok(mut s)) = (file, SINKS.lock()) {
        for line in s.early.drain(..) {
            let _ = file.write_all(line.as_bytes());
        }
        s.file = Some(file);
    }
}

/// Writes straight to the console, whatever the kernel's log level. For the
/// one-line fatal message, which must be seen even if kmsg is not.
pub fn console(line: &str) {
    let _ = std::io::stderr().write_all(format!("{TAG}: {line}\n").as_bytes());
}

fn kmsg_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

impl log::Log for InitLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let msg = record.args().to_string();
        let prio = kmsg_priority(record.level());
        let Ok(mut s) = SINKS.lock() else { return };
        let mut kernel_echoes = false;
        if let Some(kmsg) = s.kmsg.as_mut() {
            // One write(2) per record: /dev/kmsg takes each write as one line.
            kernel_echoes =
                kmsg.write_all(format!("<{prio}>{TAG}: {msg}\n").as_bytes()).is_ok() && prio < s.console_loglevel;
        }
        if !kernel_echoes {
            let prefix = match record.level() {
                log::Level::Error => "error: ",
                log::Level::Warn => "warning: ",
                _ => "",
            };
            let _ = std::io::stderr().write_all(format!("{TAG}: {prefix}{msg}\n").as_bytes());
        }
        let line = format!("[{:>12.6}] {:<5} {msg}\n", uptime::now().as_secs_f64(), record.level());
        if let Some(file) = s.file.as_mut() {
            let _ = file.write_all(line.as_bytes());
        } else if s.early.len() < MAX_EARLY_LINES {
            s.early.push(line);
        }
    }

    fn flush(&self) {}
}
