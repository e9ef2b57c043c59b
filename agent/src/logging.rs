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
