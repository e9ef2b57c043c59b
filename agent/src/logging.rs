//! The agent's own log: one line per event on stderr (the console, through
//! init) and in `/run/basalt/log/agent.log`, which `logs agent` serves.

use crate::clock;
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

struct AgentLogger {
    file: Mutex<Option<File>>,
}

static LOGGER: AgentLogger = AgentLogger { file: Mutex::new(None) };

/// Installs the logger (stderr only until [`attach_file`]).
pub fn init() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(LevelFilter::Info);
    }
}

/// Also writes every line to `path` (appending).
pub fn attach_file(path: &Path) -> std::io::Result<()> {
    let file = crate::logs::open_append(path)?;
    if let Ok(mut slot) = LOGGER.file.lock() {
        *slot = Some(file);
    }
    Ok(())
}

impl Log for AgentLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= Level::Info
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let tag = match record.level() {
            Level::Error => "error: ",
            Level::Warn => "warning: ",
            _ => "",
        };
        // One write per line, so lines from the agent and echoed service
        // output never interleave mid-line on the console.
        let text = record.args().to_string();
        let text = bounded(&text);
        let console = format!("basalt-agent: {tag}{text}\n");
        let _ = std::io::stderr().write_all(console.as_bytes());
        if let Ok(mut slot) = self.file.lock() {
            if let Some(file) = slot.as_mut() {
                let ms = clock::ms(clock::now_ns());
                let line = format!("[{:>6}.{:03}] {tag}{text}\n", ms / 1000, ms % 1000);
                let _ = file.write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// The longest line the agent writes to the console; longer ones are cut
/// with a marker. A backstop: client text in a line is clipped already
/// (basalt_common::text), so only a bug makes a line this long.
pub const MAX_CONSOLE_LINE: usize = 1024;

/// One token bucket: holds at most `burst`, earns `per_sec`.
#[derive(Debug)]
struct Bucket {
    burst: u64,
    per_sec: u64,
    tokens: u64,
    /// Time up to which tokens have been earned.
    earned_to_ns: u64,
}

impl Bucket {
    const fn new(burst: u64, per_sec: u64) -> Self {
        Bucket {
            burst,
            per_sec,
            tokens: burst,
            earned_to_ns: 0,
        }
    }

    fn refill(&mut self, now_ns: u64) {
        let per_token = (1_000_000_000 / self.per_sec.max(1)).max(1);
        let earned = now_ns.saturating_sub(self.earned_to_ns) / per_token;
        if earned > 0 {
            self.tokens = self.tokens.saturating_add(earned).min(self.burst);
            self.earned_to_ns = self.earned_to_ns.saturating_add(earned * per_token);
        }
    }
}

/// Bounds what a noisy source writes, in lines and in bytes: a burst, then
/// a steady rate, and a count of what was held back. A flood of bad
/// requests must not turn into a flood of console output: on a real 115200
/// baud console (about 11 KiB/s) each line costs the agent's one thread its
/// length in time, so counting lines alone lets long lines through.
#[derive(Debug)]
pub struct RateLimit {
    lines: Bucket,
    bytes: Bucket,
    held_back: u64,
}

impl RateLimit {
    /// `burst` lines then `per_sec` a second, and at most `burst_bytes` then
    /// `bytes_per_sec` bytes a second.
    pub const fn new(burst: u64, per_sec: u64, burst_bytes: u64, bytes_per_sec: u64) -> Self {
        RateLimit {
            lines: Bucket::new(burst, per_sec),
            bytes: Bucket::new(burst_bytes, bytes_per_sec),
            held_back: 0,
        }
    }

    /// `Some(n)` if a line of `len` bytes may be written now, `n` being how
    /// many were held back since the last one written; `None` if this one is
    /// held back. A line longer than the byte burst is charged the burst.
    pub fn admit(&mut self, now_ns: u64, len: usize) -> Option<u64> {
        self.lines.refill(now_ns);
        self.bytes.refill(now_ns);
        let cost = (len as u64).min(self.bytes.burst);
        if self.lines.tokens == 0 || self.bytes.tokens < cost {
            self.held_back += 1;
            return None;
        }
        self.lines.tokens -= 1;
        self.bytes.tokens -= cost;
        Some(std::mem::take(&mut self.held_back))
    }
}

/// Cuts a console line to [`MAX_CONSOLE_LINE`] bytes on a character boundary.
fn bounded(line: &str) -> std::borrow::Cow<'_, str> {
    if line.len() <= MAX_CONSOLE_LINE {
        return line.into();
    }
    let mut end = MAX_CONSOLE_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…(line cut, {} bytes in all)", &line[..end], line.len()).into()
}

#[cfg(test)]
mod rate_tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn burst_then_rate_then_count() {
        let mut r = RateLimit::new(3, 10, 1 << 20, 1 << 20);
        let at = |r: &mut RateLimit, ms: u64| r.admit(ms * MS, 10);
        assert_eq!([at(&mut r, 0), at(&mut r, 0), at(&mut r, 0)], [Some(0); 3], "the burst");
        assert_eq!(at(&mut r, 1), None);
        assert_eq!(at(&mut r, 50), None);
        assert_eq!(
            at(&mut r, 100),
            Some(2),
            "one token per 100 ms, and the two held back are counted"
        );
        assert_eq!(at(&mut r, 150), None);
        assert_eq!(at(&mut r, 10_000), Some(1));
        assert_eq!(
            [at(&mut r, 10_000), at(&mut r, 10_000), at(&mut r, 10_000)],
            [Some(0), Some(0), None],
            "refilled to the burst, not beyond"
        );
    }

    #[test]
    fn bytes_count_too() {
        // Plenty of lines, 1000 bytes of burst and 1000 bytes a second.
        let mut r = RateLimit::new(100, 100, 1000, 1000);
        assert_eq!(r.admit(0, 600), Some(0));
        assert_eq!(r.admit(0, 600), None, "a second long line does not fit the byte budget");
        assert_eq!(r.admit(0, 300), Some(1), "a short one still does");
        assert_eq!(r.admit(100 * MS, 200), Some(0), "100 ms earned 100 bytes: 200 fit now");
        assert_eq!(r.admit(100 * MS, 50), None);
        assert_eq!(
            r.admit(2_000 * MS, 50_000),
            Some(1),
            "an overlong line is charged the burst"
        );
        assert_eq!(r.admit(2_000 * MS, 1), None, "and empties it");
    }

    #[test]
    fn console_lines_are_bounded() {
        assert_eq!(bounded("short"), "short");
        let long = "é".repeat(MAX_CONSOLE_LINE);
        let cut = bounded(&long);
        assert!(cut.len() < MAX_CONSOLE_LINE + 64, "{}", cut.len());
        assert!(cut.ends_with(&format!("…(line cut, {} bytes in all)", long.len())));
    }
}
