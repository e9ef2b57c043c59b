//! Builds the root image with the system `mksquashfs`, reproducibly.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The first four bytes of every SquashFS image (little-endian "hsqs").
pub const MAGIC: &[u8; 4] = b"hsqs";

#[derive(Debug)]
pub enum SquashfsError {
    NotADirectory {
        rootfs: PathBuf,
    },
    /// `mksquashfs` is not on PATH.
    ToolMissing,
    Spawn {
        source: io::Error,
    },
    /// `mksquashfs` ran and failed; `stderr` is what it said.
    Failed {
        out: PathBuf,
        status: String,
        stderr: String,
    },
    ReadImage {
        path: PathBuf,
        source: io::Error,
    },
    BadMagic {
        path: PathBuf,
        found: Vec<u8>,
    },
}

impl fmt::Display for SquashfsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SquashfsError::NotADirectory { rootfs } => {
                write!(f, "building the root image: {}: not a directory", rootfs.display())
            }
            SquashfsError::ToolMissing => write!(
                f,
                "building the root image: mksquashfs: not found on PATH (install the squashfs-tools package)"
            ),
            SquashfsError::Spawn { source } => {
                write!(f, "building the root image: mksquashfs: {source}")
            }
            SquashfsError::Failed { out, status, stderr } => {
                let said = stderr
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no message");
                write!(
                    f,
                    "building the root image: {}: mksquashfs {status}: {}",
                    out.display(),
                    said.trim()
                )
            }
            SquashfsError::ReadImage { path, source } => {
                write!(f, "reading the root image: {}: {source}", path.display())
            }
            SquashfsError::BadMagic { path, found } => write!(
                f,
                "checking the root image: {}: starts with {found:02x?}, not the SquashFS magic \"hsqs\"",
                path.display()
            ),
        }
    }
}

impl std::error::Error for SquashfsError {}

/// The `mksquashfs` arguments for `rootfs` → `out`. All times are `time`
/// (SOURCE_DATE_EPOCH, or 0), every file is owned by root, xattrs dropped.
pub fn mksquashfs_args(rootfs: &Path, out: &Path, time: u64) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec![rootfs.into(), out.into()];
    let time = time.to_string();
    for a in [
        "-comp",
        "zstd",
        "-all-root",
        "-noappend",
        "-no-xattrs",
        "-no-progress",
        "-quiet",
        "-reproducible",
        "-mkfs-time",
        &time,
        "-all-time",
        &time,
    ] {
        args.push(a.into());
    }
    args
}

/// Runs `mksquashfs` and checks that what it wrote is a SquashFS image.
pub fn build_squashfs(rootfs: &Path, out: &Path, time: u64) -> Result<(), SquashfsError> {
    if !rootfs.is_dir() {
        return Err(SquashfsError::NotADirectory {
            rootfs: rootfs.to_path_buf(),
        });
    }
    let output = Command::new("mksquashfs")
        .args(mksquashfs_args(rootfs, out, time))
        // The times are passed explicitly; mksquashfs refuses to run when
        // SOURCE_DATE_EPOCH is also in its environment.
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => SquashfsError::ToolMissing,
            _ => SquashfsError::Spawn { source },
        })?;
    if !output.status.success() {
        return Err(SquashfsError::Failed {
            out: out.to_path_buf(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    check_magic(out)
}

/// Checks that the file at `path` starts with the SquashFS magic.
pub fn check_magic(path: &Path) -> Result<(), SquashfsError> {
    let read = |source| SquashfsError::ReadImage {
        path: path.to_path_buf(),
        source,
    };
    let mut head = Vec::with_capacity(4);
    std::fs::File::open(path)
        .map_err(read)?
        .take(4)
        .read_to_end(&mut head)
        .map_err(read)?;
    if head != MAGIC {
        return Err(SquashfsError::BadMagic {
            path: path.to_path_buf(),
            found: head,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args() {
        let got: Vec<String> = mksquashfs_args(Path::new("/r"), Path::new("/o.sqsh"), 1700000000)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            got.join(" "),
            "/r /o.sqsh -comp zstd -all-root -noappend -no-xattrs -no-progress -quiet -reproducible \
             -mkfs-time 1700000000 -all-time 1700000000"
        );
    }

    #[test]
    fn magic_is_checked() {
        let dir = std::env::temp_dir().join(format!("basalt-sqsh-magic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases: &[(&[u8], bool)] = &[
            (b"hsqs\0\0\0\0", true),
            (b"hsq", false),
            (b"\x1f\x8b\x08\0", false),
            (b"", false),
        ];
        for (i, (bytes, ok)) in cases.iter().enumerate() {
            let path = dir.join(i.to_string());
            std::fs::write(&path, bytes).unwrap();
            assert_eq!(check_magic(&path).is_ok(), *ok, "{bytes:?}");
        }
        let err = check_magic(&dir.join("absent")).unwrap_err();
        assert!(matches!(err, SquashfsError::ReadImage { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        let err = build_squashfs(&dir.join("no-such-rootfs"), &dir.join("x"), 0).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }
}
