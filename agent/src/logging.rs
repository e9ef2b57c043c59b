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
        let console = format!("basalt-agent: {tag}{}\n", record.args());
        let _ = std::io::stderr().write_all(console.as_bytes());
        if let Ok(mut slot) = self.file.lock() {
            if let Some(file) = slot.as_mut() {
                let ms = clock::ms(clock::now_ns());
                let line = format!("[{:>6}.{:03}] {tag}{}\n", ms / 1000, ms % 1000, record.args());
                let _ = file.write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// Bounds how many lines a noisy source writes: a burst of `burst`, then
/// `per_sec` a second, and a count of what was held back. A flood of bad
/// requests must not turn into a flood of console lines: on a real 115200
/// baud console each line costs the agent's one thread about 10 ms.
#[derive(Debug)]
pub struct RateLimit {
    burst: u64,
    per_sec: u64,
    tokens: u64,
    last_ns: u64,
    held_back: u64,
}

impl RateLimit {
    pub const fn new(burst: u64, per_sec: u64) -> Self {
        RateLimit {
            burst,
            per_sec,
            tokens: burst,
            last_ns: 0,
            held_back: 0,
        }
    }

    /// `Some(n)` if a line may be written now, `n` being how many were held
    /// back since the last one written; `None` if this one is held back.
    pub fn admit(&mut self, now_ns: u64) -> Option<u64> {
        let per_token = 1_000_000_000 / self.per_sec.max(1);
        let earned = now_ns.saturating_sub(self.last_ns) / per_token;
        if earned > 0 {
            self.tokens = (self.tokens + earned).min(self.burst);
            self.last_ns = self.last_ns.saturating_add(earned * per_token);
        }
        if self.tokens == 0 {
            self.held_back += 1;
            return None;
        }
        self.tokens -= 1;
        Some(std::mem::take(&mut self.held_back))
    }
}

#[cfg(test)]
mod rate_tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn burst_then_rate_then_count() {
        let mut r = RateLimit::new(3, 10);
        let at = |r: &mut RateLimit, ms: u64| r.admit(ms * MS);
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
}
