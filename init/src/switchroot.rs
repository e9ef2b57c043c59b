//! Leaving the initramfs for the verified root, the way Talos and busybox's
//! switch_root do it. Order matters:
//! 1. move /dev, /proc, /sys, /run into the new root (their children follow);
//! 2. delete the initramfs contents, never crossing into another mount: the
//!    new root is mounted inside it, and rootfs cannot be unmounted, so its
//!    RAM is only returned by deleting the files (the image file is deleted
//!    too: the loop device keeps its own reference);
//! 3. move the new root onto `/` and chroot into it.

use crate::mounts::MOVED;
use nix::mount::MsFlags;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What deleting the initramfs freed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
}

#[derive(Debug)]
pub enum SwitchError {
    MissingMountPoint {
        path: String,
    },
    Move {
        from: String,
        to: String,
        source: io::Error,
    },
    NotRamfs {
        magic: i64,
    },
    Remove {
        path: String,
        source: io::Error,
    },
    Chroot {
        source: io::Error,
    },
}

impl std::fmt::Display for SwitchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SwitchError::MissingMountPoint { path } => write!(f, "the root image has no mount point {path}"),
            SwitchError::Move { from, to, source } => write!(f, "move mount {from} to {to}: {source}"),
            SwitchError::NotRamfs { magic } => {
                write!(
                    f,
                    "/ is not the initramfs (statfs magic {magic:#x}); refusing to delete it"
                )
            }
            SwitchError::Remove { path, source } => write!(f, "delete initramfs file {path}: {source}"),
            SwitchError::Chroot { source } => write!(f, "chroot into the new root: {source}"),
        }
    }
}

/// The operations a switch needs, so its order is testable without root.
pub trait RootOps {
    fn is_dir(&mut self, path: &str) -> bool;
    fn move_mount(&mut self, from: &str, to: &str) -> io::Result<()>;
    fn remove_initramfs(&mut self, keep: &str) -> Result<Removed, SwitchError>;
    /// chdir(newroot); mount(".", "/", MS_MOVE); chroot("."); chdir("/").
    fn enter(&mut self, newroot: &str) -> Result<(), SwitchError>;
}

pub fn switch_root(ops: &mut dyn RootOps, newroot: &str) -> Result<Removed, SwitchError> {
    for m in MOVED {
        let to = format!("{newroot}{m}");
        if !ops.is_dir(&to) {
            return Err(SwitchError::MissingMountPoint { path: m.to_string() });
        }
    }
    for m in MOVED {
        let to = format!("{newroot}{m}");
        ops.move_mount(m, &to).map_err(|source| SwitchError::Move {
            from: m.to_string(),
            to,
            source,
        })?;
    }
    let removed = ops.remove_initramfs(newroot)?;
    ops.enter(newroot)?;
    Ok(removed)
}

pub struct RealRoot;

const RAMFS_MAGIC: i64 = 0x858458f6;
const TMPFS_MAGIC: i64 = 0x01021994;

impl RootOps for RealRoot {
    fn is_dir(&mut self, path: &str) -> bool {
        Path::new(path).is_dir()
    }

    fn move_mount(&mut self, from: &str, to: &str) -> io::Result<()> {
        nix::mount::mount(Some(from), to, None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(io::Error::from)
    }

    fn remove_initramfs(&mut self, _keep: &str) -> Result<Removed, SwitchError> {
        // The new root is a different mount (st_dev) and so is skipped, like
        // every other mount point; `keep` is implied by that rule.
        let st = nix::sys::statfs::statfs("/").map_err(|e| SwitchError::Remove {
            path: "/".into(),
            source: e.into(),
        })?;
        let magic = st.filesystem_type().0 as i64;
        if magic != RAMFS_MAGIC && magic != TMPFS_MAGIC {
            return Err(SwitchError::NotRamfs { magic });
        }
        let dev = std::fs::symlink_metadata("/")
            .map_err(|source| SwitchError::Remove {
                path: "/".into(),
                source,
            })?
            .dev();
        let mut removed = Removed::default();
        remove_contents(Path::new("/"), dev, &mut removed)?;
        Ok(removed)
    }

    fn enter(&mut self, newroot: &str) -> Result<(), SwitchError> {
        let chroot_err = |e: nix::Error| SwitchError::Chroot { source: e.into() };
        nix::unistd::chdir(newroot).map_err(chroot_err)?;
        nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(|e| {
            SwitchError::Move {
                from: newroot.into(),
                to: "/".into(),
                source: e.into(),
            }
        })?;
        nix::unistd::chroot(".").map_err(chroot_err)?;
        nix::unistd::chdir("/").map_err(chroot_err)
    }
}

/// Deletes everything under `dir` that lives on device `dev`, without
/// following symlinks and without entering other mounts. `dir` itself stays.
pub fn remove_contents(dir: &Path, dev: u64, removed: &mut Removed) -> Result<(), SwitchError> {
    let fail = |path: &Path, source: io::Error| SwitchError::Remove {
        path: path.display().to_string(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(|e| fail(dir, e))? {
        let path = entry.map_err(|e| fail(dir, e))?.path();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| fail(&path, e))?;
        if meta.dev() != dev {
            continue; // a mount point: not ours to delete
        }
        if meta.is_dir() {
            remove_contents(&path, dev, removed)?;
            std::fs::remove_dir(&path).map_err(|e| fail(&path, e))?;
            removed.dirs += 1;
        } else {
            std::fs::remove_file(&path).map_err(|e| fail(&path, e))?;
            removed.files += 1;
            removed.bytes += meta.len();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        ops: Vec<String>,
        missing: Option<&'static str>,
    }

    impl RootOps for Recorder {
        fn is_dir(&mut self, path: &str) -> bool {
            self.missing.is_none_or(|m| !path.ends_with(m))
        }
        fn move_mount(&mut self, from: &str, to: &str) -> io::Result<()> {
            self.ops.push(format!("move {from} {to}"));
            Ok(())
        }
        fn remove_initramfs(&mut self, keep: &str) -> Result<Removed, SwitchError> {
            self.ops.push(format!("remove-initramfs keep={keep}"));
            Ok(Removed {
                files: 3,
                dirs: 1,
                bytes: 10,
            })
        }
        fn enter(&mut self, newroot: &str) -> Result<(), SwitchError> {
            self.ops.push(format!("enter {newroot}"));
            Ok(())
        }
    }

    #[test]
    fn order_is_move_delete_enter() {
        let mut rec = Recorder::default();
        let removed = switch_root(&mut rec, "/newroot").unwrap();
        assert_eq!(
            rec.ops,
            [
                "move /dev /newroot/dev",
                "move /proc /newroot/proc",
                "move /sys /newroot/sys",
                "move /run /newroot/run",
                "remove-initramfs keep=/newroot",
                "enter /newroot",
            ]
        );
        assert_eq!(removed.files, 3);
    }

    #[test]
    fn missing_mount_point_stops_before_anything_moves() {
        let mut rec = Recorder {
            missing: Some("/run"),
            ..Default::default()
        };
        let err = switch_root(&mut rec, "/newroot").unwrap_err();
        assert_eq!(err.to_string(), "the root image has no mount point /run");
        assert!(rec.ops.is_empty());
    }

    #[test]
    fn deletion_does_not_follow_symlinks() {
        let base = std::env::temp_dir().join(format!("basalt-switch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let initramfs = base.join("initramfs");
        let outside = base.join("outside");
        std::fs::create_dir_all(initramfs.join("basalt/modules")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("precious"), b"keep me").unwrap();
        std::fs::write(initramfs.join("init"), b"12345").unwrap();
        std::fs::write(initramfs.join("basalt/modules/loop.ko"), b"123").unwrap();
        std::os::unix::fs::symlink(&outside, initramfs.join("link-to-outside")).unwrap();
        let dev = std::fs::metadata(&initramfs).unwrap().dev();
        let mut removed = Removed::default();
        remove_contents(&initramfs, dev, &mut removed).unwrap();
        // init, loop.ko and the symlink itself (whose size is its target's length).
        assert_eq!(
            removed,
            Removed {
                files: 3,
                dirs: 2,
                bytes: 5 + 3 + link_len(&outside)
            }
        );
        assert_eq!(std::fs::read_dir(&initramfs).unwrap().count(), 0);
        assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep me");
        std::fs::remove_dir_all(&base).unwrap();
    }

    fn link_len(target: &Path) -> u64 {
        target.as_os_str().len() as u64
    }

    #[test]
    fn other_devices_are_skipped() {
        let base = std::env::temp_dir().join(format!("basalt-switch-dev-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("d")).unwrap();
        std::fs::write(base.join("d/f"), b"x").unwrap();
        // Pretend the tree is on another device: nothing may be removed.
        let dev = std::fs::metadata(&base).unwrap().dev() + 1;
        let mut removed = Removed::default();
        remove_contents(&base, dev, &mut removed).unwrap();
        assert_eq!(removed, Removed::default());
        assert!(base.join("d/f").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
