#![cfg(feature = "host")]
//! One variant per operation of the suite that can fail, carrying what it
//! failed on. Display is one line: what failed, on what, and why.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug)]
pub enum BenchError {
    /// An input the suite needs is not where `make` leaves it.
    MissingInput {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
    },
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A program the suite runs could not be started or failed.
    Command {
        program: String,
        why: String,
    },
    Squashfs(basalt_mkimage::squashfs::SquashfsError),
    Mkimage {
        what: String,
        source: basalt_mkimage::BuildError,
    },
    Cpio {
        what: String,
        source: basalt_mkimage::cpio::CpioError,
    },
    Disk {
        what: String,
        source: basalt_mkimage::disk::DiskError,
    },
    Vm {
        what: String,
        source: basalt_qemu::QemuError,
    },
    /// A boot did not end with the fixture's report.
    Boot {
        what: String,
        why: String,
        log: PathBuf,
    },
    /// Two tools disagree on a digest: the measurement is void.
    DigestMismatch {
        tool: String,
        got: String,
        want: String,
    },
    /// A file the suite reads back is not what it should be.
    Parse {
        what: String,
        why: String,
    },
    /// The agent or basaltctl did not do what part 5 or 6 needs.
    Agent {
        op: String,
        why: String,
    },
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::MissingInput { what, path, hint } => {
                write!(f, "{what} {} not found ({hint})", path.display())
            }
            BenchError::Io { op, path, source } => write!(f, "{op} {}: {source}", path.display()),
            BenchError::Command { program, why } => write!(f, "running {program}: {why}"),
            BenchError::Squashfs(e) => write!(f, "{e}"),
            BenchError::Mkimage { what, source } => write!(f, "building {what}: {source}"),
            BenchError::Cpio { what, source } => write!(f, "packing {what}: {source}"),
            BenchError::Disk { what, source } => write!(f, "building {what}: {source}"),
            BenchError::Vm { what, source } => write!(f, "{what}: {source}"),
            BenchError::Boot { what, why, log } => {
                write!(f, "{what}: {why} (console: {})", log.display())
            }
            BenchError::DigestMismatch { tool, got, want } => {
                write!(f, "{tool} computed sha256 {got}, basalt's routine {want}: results void")
            }
            BenchError::Parse { what, why } => write!(f, "reading {what}: {why}"),
            BenchError::Agent { op, why } => write!(f, "{op}: {why}"),
        }
    }
}

impl std::error::Error for BenchError {}

/// Shorthand for an `Io` error's closure.
pub fn io_err(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> BenchError {
    let path = path.into();
    move |source| BenchError::Io { op, path, source }
}

/// The first input in `need` (what, path, how to get it) that is missing.
pub fn missing(need: Vec<(&'static str, PathBuf, &'static str)>) -> Result<(), BenchError> {
    match need.into_iter().find(|(_, path, _)| !path.exists()) {
        Some((what, path, hint)) => Err(BenchError::MissingInput { what, path, hint }),
        None => Ok(()),
    }
}

/// Runs `cmd` (no stdin) to its exit; its stdout if it succeeded.
pub fn run(cmd: &mut Command) -> Result<String, BenchError> {
    let fail = |cmd: &Command, why: String| BenchError::Command {
        program: format!("{cmd:?}"),
        why,
    };
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail(cmd, e.to_string()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(fail(cmd, format!("{}: {}", out.status, stderr.trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A file's size.
pub fn file_len(path: &Path) -> Result<u64, BenchError> {
    Ok(std::fs::metadata(path).map_err(io_err("stat", path))?.len())
}
