//! The EFI System Partition as a FAT32 image file, made and filled with
//! `mkfs.vfat -C` and mtools: no loop device, no mount, no root.
//!
//! `--invariant` and SOURCE_DATE_EPOCH keep the bytes reproducible; the
//! volume id comes from the caller (derived from the image).

use crate::tools::{self, ToolError};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// systemd-boot, from Debian's systemd-boot-efi.
pub const DEFAULT_LOADER: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// Where firmware looks for a loader on removable media (and on a disk without boot entries).
pub const LOADER_PATH: &str = "/EFI/BOOT/BOOTX64.EFI";
pub const LOADER_CONF_PATH: &str = "/loader/loader.conf";
/// Type #2 entries: one UKI per slot.
pub const UKI_DIR: &str = "/EFI/Linux";
/// No menu; no pinned default, so boot counting and the newest entry decide;
/// no editing of the command line at the menu.
pub const LOADER_CONF: &str = "timeout 0\neditor no\n";

#[derive(Debug)]
pub enum EspError {
    BadPath { path: String },
    Size { bytes: u64 },
    Remove { path: PathBuf, source: std::io::Error },
    Tool(ToolError),
}

impl fmt::Display for EspError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EspError::BadPath { path } => {
                write!(f, "building the ESP: {path:?}: not an absolute path of plain names")
            }
            EspError::Size { bytes } => {
                write!(f, "building the ESP: size {bytes} is not a whole number of KiB")
            }
            EspError::Remove { path, source } => {
                write!(f, "building the ESP: removing the old {}: {source}", path.display())
            }
            EspError::Tool(e) => write!(f, "building the ESP: {e}"),
        }
    }
}

impl std::error::Error for EspError {}

/// One file to put on the ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspFile {
    /// Absolute path on the ESP, e.g. `/EFI/BOOT/BOOTX64.EFI`.
    pub dest: String,
    pub source: PathBuf,
}

/// The directories `files` need, parents first, each once.
pub fn directories(files: &[EspFile]) -> Result<Vec<String>, EspError> {
    let mut dirs: Vec<String> = Vec::new();
    for f in files {
        let parts: Vec<&str> = match f.dest.strip_prefix('/') {
            Some(rest) if !rest.is_empty() => rest.split('/').collect(),
            _ => return Err(EspError::BadPath { path: f.dest.clone() }),
        };
        if parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains(':'))
        {
            return Err(EspError::BadPath { path: f.dest.clone() });
        }
        for depth in 1..parts.len() {
            let dir = format!("/{}", parts[..depth].join("/"));
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    Ok(dirs)
}

/// Makes a FAT32 image of `size_bytes` at `out` holding `files`, every
/// timestamp `time` (seconds since the epoch; FAT cannot go before 1980).
pub fn build_esp(out: &Path, size_bytes: u64, volume_id: u32, time: u64, files: &[EspFile]) -> Result<(), EspError> {
    if size_bytes == 0 || !size_bytes.is_multiple_of(1024) {
        return Err(EspError::Size { bytes: size_bytes });
    }
    let dirs = directories(files)?;
    // mkfs.vfat -C refuses to overwrite.
    match std::fs::remove_file(out) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(EspError::Remove {
                path: out.to_path_buf(),
                source,
            })
        }
    }
    let image: OsString = out.into();
    let env = [("SOURCE_DATE_EPOCH", time.to_string())];
    let run = |tool, args: Vec<OsString>| tools::run_env(tool, &args, &env).map(|_| ()).map_err(EspError::Tool);
    run(
        "mkfs.vfat",
        vec![
            "-C".into(),
            "-F".into(),
            "32".into(),
            "-S".into(),
            "512".into(),
            "-n".into(),
            "ESP".into(),
            // --invariant fixes the volume id too: the -i after it wins.
            "--invariant".into(),
            "-i".into(),
            format!("{volume_id:08x}").into(),
            image.clone(),
            (size_bytes / 1024).to_string().into(),
        ],
    )?;
    if !dirs.is_empty() {
        let mut args: Vec<OsString> = vec!["-i".into(), image.clone()];
        args.extend(dirs.iter().map(|d| OsString::from(format!("::{d}"))));
        run("mmd", args)?;
    }
    for f in files {
        run(
            "mcopy",
            vec![
                "-i".into(),
                image.clone(),
                f.source.clone().into(),
                format!("::{}", f.dest).into(),
            ],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dest: &str) -> EspFile {
        EspFile {
            dest: dest.into(),
            source: PathBuf::from("x"),
        }
    }

    #[test]
    fn directories_parents_first() {
        let files = [
            file("/EFI/BOOT/BOOTX64.EFI"),
            file("/loader/loader.conf"),
            file("/EFI/Linux/basalt-a.efi"),
            file("/EFI/Linux/basalt-b.efi"),
            file("/top.txt"),
        ];
        assert_eq!(
            directories(&files).unwrap(),
            ["/EFI", "/EFI/BOOT", "/loader", "/EFI/Linux"]
        );
        for bad in ["", "/", "EFI/x", "/EFI//x", "/EFI/../x", "/a:b", "/EFI/"] {
            let err = directories(&[file(bad)]).unwrap_err().to_string();
            assert!(err.contains("not an absolute path of plain names"), "{bad:?}: {err}");
        }
    }
}
