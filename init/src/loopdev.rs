//! Putting the verified image behind a read-only loop device.

use crate::sys;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub enum LoopError {
    Control { source: io::Error },
    Open { path: String, source: io::Error },
    Configure { path: String, source: io::Error },
    NotReadOnly { path: String, ro: String },
}

impl std::fmt::Display for LoopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoopError::Control { source } => write!(f, "/dev/loop-control: {source}"),
            LoopError::Open { path, source } => write!(f, "open {path}: {source}"),
            LoopError::Configure { path, source } => write!(f, "LOOP_CONFIGURE {path}: {source}"),
            LoopError::NotReadOnly { path, ro } => {
                write!(f, "{path} is not read-only after setup (sysfs ro={ro:?})")
            }
        }
    }
}

/// A configured loop device. The kernel holds its own reference to the
/// backing file; with AUTOCLEAR it detaches once the last user (the root
/// mount) lets go.
#[derive(Debug)]
pub struct LoopDevice {
    pub path: String,
    pub number: u32,
    _dev: File,
}

/// Binds `backing` read-only to a free loop device, exposing `size` bytes.
pub fn attach_read_only(backing: &File, size: u64) -> Result<LoopDevice, LoopError> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/loop-control")
        .map_err(|source| LoopError::Control { source })?;
    // Another opener can win a device between GET_FREE and CONFIGURE (EBUSY);
    // at boot nobody else runs, but retrying costs nothing.
    let mut attempt = 0;
    let (number, path, dev) = loop {
        let number = sys::loop_get_free(control.as_fd()).map_err(|source| LoopError::Control { source })?;
        let path = format!("/dev/loop{number}");
        let dev = open_when_present(&path)?;
        let flags = sys::LO_FLAGS_READ_ONLY | sys::LO_FLAGS_AUTOCLEAR;
        match sys::loop_configure(dev.as_fd(), backing.as_fd(), flags, size, "basalt-root") {
            Ok(()) => break (number, path, dev),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 3 => attempt += 1,
            Err(source) => return Err(LoopError::Configure { path, source }),
        }
    };
    let ro = std::fs::read_to_string(format!("/sys/block/loop{number}/ro")).unwrap_or_default();
    if ro.trim() != "1" {
        return Err(LoopError::NotReadOnly {
            path,
            ro: ro.trim().to_string(),
        });
    }
    Ok(LoopDevice {
        path,
        number,
        _dev: dev,
    })
}

/// devtmpfs creates /dev/loopN asynchronously after the device is added.
fn open_when_present(path: &str) -> Result<File, LoopError> {
    let start = Instant::now();
    loop {
        match OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC).open(path) {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound && start.elapsed() < Duration::from_secs(2) => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(source) => {
                return Err(LoopError::Open {
                    path: path.into(),
                    source,
                })
            }
        }
    }
}

#[derive(Debug)]
pub enum RootError {
    Loop(LoopError),
    Mount(crate::mounts::MountError),
}

impl std::fmt::Display for RootError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootError::Loop(e) => write!(f, "{e}"),
            RootError::Mount(e) => write!(f, "{e}"),
        }
    }
}

/// Attaches the verified image read-only and mounts it at `newroot`.
pub fn mount_root(newroot: &str, image: &crate::image::VerifiedImage) -> Result<LoopDevice, RootError> {
    use crate::mounts::{mount_all, root_mount, RealMounts};
    let dev = attach_read_only(&image.file, image.size).map_err(RootError::Loop)?;
    mount_all(&mut RealMounts, &[root_mount(&dev.path, newroot)]).map_err(RootError::Mount)?;
    log::info!("root: {} on {} (squashfs, ro,nosuid,nodev)", dev.path, newroot);
    Ok(dev)
}
