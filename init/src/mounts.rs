//! The filesystems basalt-init mounts, as tables, with the flags Talos uses
//! (see shared notes/anchors.md): nothing is exec-able except the verified
//! root and /var, nothing but the root carries device nodes or setuid bits.

use nix::mount::MsFlags;
use std::io;

/// One mount, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub source: String,
    pub target: String,
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub data: String,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV).union(MsFlags::MS_NOEXEC);

/// (source, target, fstype, flags, data) of the early API filesystems, in
/// mount order: parents before children.
const EARLY: &[(&str, &str, &str, MsFlags, &str)] = &[
    ("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, ""),
    ("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC, ""),
    ("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, "mode=0755"),
    (
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        "ptmxmode=000,mode=620,gid=5",
    ),
    ("shm", "/dev/shm", "tmpfs", NOSUID_NODEV_NOEXEC, "mode=1777"),
    (
        "securityfs",
        "/sys/kernel/security",
        "securityfs",
        NOSUID_NODEV_NOEXEC,
        "",
    ),
    (
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        NOSUID_NODEV_NOEXEC,
        "nsdelegate,memory_recursiveprot",
    ),
    // /run carries the boot report and logs from the first step on, and is
    // moved into the new root whole.
    ("run", "/run", "tmpfs", NOSUID_NODEV_NOEXEC, "mode=0755"),
];

/// Top-level mounts moved from the initramfs into the new root (their
/// children move with them).
pub const MOVED: &[&str] = &["/dev", "/proc", "/sys", "/run"];

/// The early API filesystems. `run_size` is a validated tmpfs size.
pub fn early_mounts(run_size: &str) -> Vec<MountSpec> {
    EARLY
        .iter()
        .map(|&(source, target, fstype, flags, data)| {
            let data = if target == "/run" {
                format!("{data},size={run_size}")
            } else {
                data.to_string()
            };
            MountSpec {
                source: source.to_string(),
                target: target.to_string(),
                fstype,
                flags,
                data,
            }
        })
        .collect()
}

/// The writable tmpfs mounts in the new root, but /var (var.rs decides
/// what /var is: [`var_tmpfs`] or [`var_ext4`]).
pub fn writable_mounts(newroot: &str, tmp_size: &str) -> Vec<MountSpec> {
    vec![MountSpec {
        source: "tmpfs".into(),
        target: format!("{newroot}/tmp"),
        fstype: "tmpfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: format!("mode=1777,size={tmp_size}"),
    }]
}

/// /var stays exec-able: container runtimes unpack and run images from
/// /var/lib. No setuid, no device nodes, whichever filesystem it is.
const VAR_FLAGS: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

/// /var in RAM: gone at the next boot.
pub fn var_tmpfs(newroot: &str, size: &str) -> MountSpec {
    MountSpec {
        source: "tmpfs".into(),
        target: format!("{newroot}/var"),
        fstype: "tmpfs",
        flags: VAR_FLAGS,
        data: format!("mode=0755,size={size}"),
    }
}

/// /var on the VAR partition.
pub fn var_ext4(newroot: &str, device: &str) -> MountSpec {
    MountSpec {
        source: device.into(),
        target: format!("{newroot}/var"),
        fstype: "ext4",
        flags: VAR_FLAGS,
        data: String::new(),
    }
}

/// The root image's mount: read-only, no setuid, no device nodes.
pub fn root_mount(loopdev: &str, newroot: &str) -> MountSpec {
    MountSpec {
        source: loopdev.to_string(),
        target: newroot.to_string(),
        fstype: "squashfs",
        flags: MsFlags::MS_RDONLY.union(MsFlags::MS_NOSUID).union(MsFlags::MS_NODEV),
        data: String::new(),
    }
}

/// The privileged operations mounting needs, so the sequence can be checked
/// without root against a recording fake.
pub trait MountOps {
    fn mkdir_all(&mut self, path: &str, mode: u32) -> io::Result<()>;
    fn mount(&mut self, spec: &MountSpec) -> io::Result<()>;
}

/// Why a mount step failed.
#[derive(Debug)]
pub enum MountError {
    Mkdir {
        path: String,
        source: io::Error,
    },
    Mount {
        fstype: &'static str,
        target: String,
        source: io::Error,
    },
}

impl std::fmt::Display for MountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MountError::Mkdir { path, source } => write!(f, "mkdir {path}: {source}"),
            MountError::Mount { fstype, target, source } => write!(f, "mount {fstype} on {target}: {source}"),
        }
    }
}

/// Creates each mount point and mounts each spec, in order.
pub fn mount_all(ops: &mut dyn MountOps, specs: &[MountSpec]) -> Result<(), MountError> {
    for spec in specs {
        ops.mkdir_all(&spec.target, 0o755).map_err(|source| MountError::Mkdir {
            path: spec.target.clone(),
            source,
        })?;
        ops.mount(spec).map_err(|source| MountError::Mount {
            fstype: spec.fstype,
            target: spec.target.clone(),
            source,
        })?;
    }
    Ok(())
}

/// The real thing.
pub struct RealMounts;

impl MountOps for RealMounts {
    fn mkdir_all(&mut self, path: &str, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(mode).create(path)
    }

    fn mount(&mut self, spec: &MountSpec) -> io::Result<()> {
        let data = (!spec.data.is_empty()).then_some(spec.data.as_str());
        nix::mount::mount(
            Some(spec.source.as_str()),
            spec.target.as_str(),
            Some(spec.fstype),
            spec.flags,
            data,
        )
        .map_err(io::Error::from)
    }
}

#[cfg(test)]
pub mod fake {
    use super::*;

    /// Records what would have been done; fails the mount at `fail_at` if set.
    #[derive(Default)]
    pub struct Recorder {
        pub ops: Vec<String>,
        pub fail_at: Option<String>,
    }

    impl MountOps for Recorder {
        fn mkdir_all(&mut self, path: &str, mode: u32) -> io::Result<()> {
            self.ops.push(format!("mkdir {path} {mode:o}"));
            Ok(())
        }
        fn mount(&mut self, spec: &MountSpec) -> io::Result<()> {
            if self.fail_at.as_deref() == Some(spec.target.as_str()) {
                return Err(io::Error::from_raw_os_error(libc::ENODEV));
            }
            self.ops.push(format!(
                "mount {} {} {:?} {}",
                spec.fstype, spec.target, spec.flags, spec.data
            ));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::Recorder;
    use super::*;

    #[test]
    fn early_sequence() {
        let mut rec = Recorder::default();
        mount_all(&mut rec, &early_mounts("20%")).unwrap();
        let mounts: Vec<&str> = rec
            .ops
            .iter()
            .filter(|o| o.starts_with("mount"))
            .map(|s| s.as_str())
            .collect();
        let targets: Vec<&str> = mounts.iter().map(|m| m.split(' ').nth(2).unwrap()).collect();
        assert_eq!(
            targets,
            [
                "/proc",
                "/sys",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/sys/kernel/security",
                "/sys/fs/cgroup",
                "/run"
            ]
        );
        assert!(rec.ops[0].starts_with("mkdir /proc"), "mount points are created first");
        assert!(mounts.last().unwrap().ends_with("mode=0755,size=20%"));
    }

    #[test]
    fn flags_follow_talos() {
        let all: Vec<MountSpec> = early_mounts("1%")
            .into_iter()
            .chain(writable_mounts("/r", "1m"))
            .chain([var_tmpfs("/r", "1m"), var_ext4("/r", "/dev/vdb5")])
            .collect();
        for m in &all {
            assert!(m.flags.contains(MsFlags::MS_NOSUID), "{} must be nosuid", m.target);
            let exec_ok = ["/dev", "/r/var"].contains(&m.target.as_str());
            assert_eq!(!m.flags.contains(MsFlags::MS_NOEXEC), exec_ok, "{} noexec", m.target);
            let dev_ok = ["/dev", "/dev/pts"].contains(&m.target.as_str());
            assert_eq!(!m.flags.contains(MsFlags::MS_NODEV), dev_ok, "{} nodev", m.target);
        }
        let pts = all.iter().find(|m| m.target == "/dev/pts").unwrap();
        assert_eq!(pts.data, "ptmxmode=000,mode=620,gid=5");
        let cg = all.iter().find(|m| m.fstype == "cgroup2").unwrap();
        assert_eq!(cg.data, "nsdelegate,memory_recursiveprot");
        let root = root_mount("/dev/loop0", "/newroot");
        assert_eq!(root.fstype, "squashfs");
        assert!(root
            .flags
            .contains(MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV));
        assert!(!root.flags.contains(MsFlags::MS_NOEXEC));
    }

    #[test]
    fn writable_sizes_are_substituted() {
        let m = writable_mounts("/newroot", "64m");
        assert_eq!(m[0].target, "/newroot/tmp");
        assert_eq!(m[0].data, "mode=1777,size=64m");
        let var = var_tmpfs("/newroot", "50%");
        assert_eq!(var.target, "/newroot/var");
        assert_eq!(var.data, "mode=0755,size=50%");
        let var = var_ext4("/newroot", "/dev/vdb5");
        assert_eq!(
            (var.source.as_str(), var.fstype, var.data.as_str()),
            ("/dev/vdb5", "ext4", "")
        );
    }

    #[test]
    fn failure_names_the_mount_and_stops() {
        let mut rec = Recorder {
            fail_at: Some("/dev".into()),
            ..Default::default()
        };
        let err = mount_all(&mut rec, &early_mounts("20%")).unwrap_err();
        assert_eq!(err.to_string(), "mount devtmpfs on /dev: No such device (os error 19)");
        assert!(
            !rec.ops.iter().any(|o| o.contains("/dev/pts")),
            "nothing after the failure"
        );
    }

    #[test]
    fn every_moved_mount_is_an_early_mount() {
        let early = early_mounts("1%");
        for m in MOVED {
            assert!(early.iter().any(|e| e.target == *m), "{m}");
        }
    }
}

/// Changes a mounted tmpfs's size (for `basalt.run_size=`: /run is mounted
/// before the command line can be read).
pub fn resize_tmpfs(target: &str, size: &str) -> Result<(), MountError> {
    let flags = MsFlags::MS_REMOUNT | NOSUID_NODEV_NOEXEC;
    nix::mount::mount(
        None::<&str>,
        target,
        None::<&str>,
        flags,
        Some(format!("size={size}").as_str()),
    )
    .map_err(|e| MountError::Mount {
        fstype: "tmpfs",
        target: target.into(),
        source: e.into(),
    })
}
