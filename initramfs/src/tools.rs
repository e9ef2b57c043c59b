//! Running the host tools the disk build needs (objcopy, mkfs.vfat, mtools, mke2fs),
//! with errors that name the tool, the package it comes from, and what it said.

use std::ffi::OsString;
use std::fmt;
use std::process::Command;

#[derive(Debug)]
pub enum ToolError {
    Missing {
        tool: &'static str,
        package: Option<&'static str>,
    },
    Spawn {
        tool: &'static str,
        source: std::io::Error,
    },
    Failed {
        tool: &'static str,
        status: String,
        said: String,
    },
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolError::Missing { tool, package: Some(p) } => {
                write!(f, "{tool}: not found on PATH (install the {p} package)")
            }
            ToolError::Missing { tool, package: None } => write!(f, "{tool}: not found on PATH"),
            ToolError::Spawn { tool, source } => write!(f, "{tool}: {source}"),
            ToolError::Failed { tool, status, said } => write!(f, "{tool} {status}: {said}"),
        }
    }
}

impl std::error::Error for ToolError {}

/// The Debian package each tool comes from.
fn package(tool: &str) -> Option<&'static str> {
    match tool {
        "objcopy" => Some("binutils"),
        "mkfs.vfat" => Some("dosfstools"),
        "mmd" | "mcopy" | "mdir" | "mtype" => Some("mtools"),
        "mke2fs" => Some("e2fsprogs"),
        _ => None,
    }
}

/// Runs `tool` with `args` and an environment that keeps its output stable
/// (mtools skips its geometry check, which refuses unpartitioned images).
pub fn run(tool: &'static str, args: &[OsString]) -> Result<Vec<u8>, ToolError> {
    run_env(tool, args, &[])
}

/// [`run`] with more environment, e.g. SOURCE_DATE_EPOCH for mtools'
/// timestamps, E2FSPROGS_FAKE_TIME for mke2fs's.
pub fn run_env(tool: &'static str, args: &[OsString], env: &[(&str, String)]) -> Result<Vec<u8>, ToolError> {
    let output = Command::new(tool)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("LC_ALL", "C")
        .output()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ToolError::Missing {
                tool,
                package: package(tool),
            },
            _ => ToolError::Spawn { tool, source },
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let said = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message")
            .trim()
            .to_string();
        return Err(ToolError::Failed {
            tool,
            status: output.status.to_string(),
            said,
        });
    }
    Ok(output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_tool() {
        let err = run("mkfs.vfat-not-here", &[]).unwrap_err().to_string();
        assert_eq!(err, "mkfs.vfat-not-here: not found on PATH");
        assert_eq!(package("mcopy"), Some("mtools"));
        assert_eq!(package("mke2fs"), Some("e2fsprogs"));
        let err = run("sh", &["-c".into(), "echo first >&2; echo last >&2; exit 3".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "sh exit status: 3: last");
        assert_eq!(run("sh", &["-c".into(), "printf ok".into()]).unwrap(), b"ok");
    }
}
