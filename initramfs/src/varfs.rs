//! The VAR partition's contents: an empty ext4 image file, made with
//! `mke2fs -d` from an empty directory: no loop device, no mount, no root.
//!
//! Reproducible: the UUID and the directory hash seed come from the caller
//! (derived from the image), every timestamp is `time` (mke2fs 1.47 reads
//! E2FSPROGS_FAKE_TIME, not SOURCE_DATE_EPOCH; see [`fake_time`]), and the
//! root directory is owned by 0:0 whoever runs the build.

use crate::tools::{self, ToolError};
use basalt_common::disk::gpt::Guid;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// The filesystem label, the same as the partition's.
pub const FS_LABEL: &str = "VAR";
/// 4 KiB blocks at every size: mke2fs would pick 1 KiB for a "small" one
/// (under 512 MiB), so a test's VAR and a node's would differ in layout.
const BLOCK_SIZE: &str = "4096";

#[derive(Debug)]
pub enum VarfsError {
    Size { bytes: u64 },
    Prepare { path: PathBuf, source: std::io::Error },
    Tool(ToolError),
}

impl fmt::Display for VarfsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VarfsError::Size { bytes } => {
                write!(
                    f,
                    "building the VAR filesystem: size {bytes} is not a whole number of 4 KiB blocks"
                )
            }
            VarfsError::Prepare { path, source } => {
                write!(f, "building the VAR filesystem: {}: {source}", path.display())
            }
            VarfsError::Tool(e) => write!(f, "building the VAR filesystem: {e}"),
        }
    }
}

impl std::error::Error for VarfsError {}

/// What the ext4 is made of besides its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VarfsIds {
    pub uuid: Guid,
    pub hash_seed: Guid,
}

impl VarfsIds {
    /// Both derived from `seed` (the image digest), like the GPT's GUIDs.
    pub fn derive(seed: &[u8]) -> VarfsIds {
        VarfsIds {
            uuid: Guid::derive(seed, "VAR ext4 uuid"),
            hash_seed: Guid::derive(seed, "VAR ext4 hash seed"),
        }
    }
}

/// mke2fs's arguments for an empty ext4 of `size_bytes` at `out`, filled
/// from the (empty) directory `empty`.
pub fn mke2fs_args(out: &Path, empty: &Path, size_bytes: u64, ids: &VarfsIds) -> Vec<OsString> {
    vec![
        "-q".into(),
        "-F".into(),
        "-t".into(),
        "ext4".into(),
        "-b".into(),
        BLOCK_SIZE.into(),
        "-L".into(),
        FS_LABEL.into(),
        "-U".into(),
        ids.uuid.to_string().into(),
        "-E".into(),
        format!("root_owner=0:0,hash_seed={}", ids.hash_seed).into(),
        "-d".into(),
        empty.into(),
        out.into(),
        format!("{}k", size_bytes / 1024).into(),
    ]
}

/// Makes the empty ext4 of `size_bytes` at `out`, every timestamp `time`.
/// The empty source directory is made (and removed) beside `out`.
pub fn build_varfs(out: &Path, size_bytes: u64, ids: &VarfsIds, time: u64) -> Result<(), VarfsError> {
    if size_bytes == 0 || !size_bytes.is_multiple_of(4096) {
        return Err(VarfsError::Size { bytes: size_bytes });
    }
    // mke2fs writes into an existing file in place, keeping its length:
    // start from none. A directory left by an interrupted build may not be empty.
    let empty = crate::image::temp_beside(out, "empty");
    gone(out, std::fs::remove_file(out))?;
    gone(&empty, std::fs::remove_dir_all(&empty))?;
    std::fs::create_dir(&empty).map_err(prepare(&empty))?;
    let made = tools::run_env(
        "mke2fs",
        &mke2fs_args(out, &empty, size_bytes, ids),
        &[("E2FSPROGS_FAKE_TIME", fake_time(time))],
    )
    .map(|_| ())
    .map_err(VarfsError::Tool);
    let removed = std::fs::remove_dir(&empty).map_err(prepare(&empty));
    made.and(removed)
}

fn prepare(path: &Path) -> impl FnOnce(std::io::Error) -> VarfsError {
    let path = path.to_path_buf();
    move |source| VarfsError::Prepare { path, source }
}

/// E2FSPROGS_FAKE_TIME for `time`. mke2fs takes 0 for "not set" and uses
/// the clock, so the epoch itself (`make disk`'s default
/// SOURCE_DATE_EPOCH=0) becomes 1 s after it.
pub fn fake_time(time: u64) -> String {
    time.max(1).to_string()
}

/// A removal's result: what was not there is gone too.
fn gone(path: &Path, removed: std::io::Result<()>) -> Result<(), VarfsError> {
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(prepare(path)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_pin_everything_that_would_vary() {
        let ids = VarfsIds::derive(b"seed");
        assert_eq!(ids, VarfsIds::derive(b"seed"));
        assert_ne!(ids.uuid, ids.hash_seed);
        assert_ne!(ids, VarfsIds::derive(b"other"));
        let args = mke2fs_args(Path::new("/b/var.ext4"), Path::new("/b/empty"), 32 << 20, &ids);
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args,
            [
                "-q",
                "-F",
                "-t",
                "ext4",
                "-b",
                "4096",
                "-L",
                "VAR",
                "-U",
                &ids.uuid.to_string(),
                "-E",
                &format!("root_owner=0:0,hash_seed={}", ids.hash_seed),
                "-d",
                "/b/empty",
                "/b/var.ext4",
                "32768k",
            ]
        );
    }

    #[test]
    fn the_epoch_is_faked_as_one_second_after_it() {
        assert_eq!(fake_time(0), "1");
        assert_eq!(fake_time(1), "1");
        assert_eq!(fake_time(1_700_000_000), "1700000000");
    }

    #[test]
    fn sizes_that_are_not_whole_blocks_are_refused() {
        let ids = VarfsIds::derive(b"seed");
        for bytes in [0, 512, 4097] {
            let err = build_varfs(Path::new("/nonexistent/var.ext4"), bytes, &ids, 0).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("building the VAR filesystem: size {bytes} is not a whole number of 4 KiB blocks")
            );
        }
    }
}
