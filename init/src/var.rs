//! /var (issue 12): the ext4 partition labelled `VAR` when there is one,
//! else a tmpfs, as `basalt.var=` says. Mounted nosuid,nodev either way; exec
//! stays allowed (container runtimes run images from /var/lib).
//!
//! Named on the command line (`basalt.var=partlabel:NAME`), the partition
//! must appear within `basalt.image_wait` and mount, or the boot stops. Found
//! by default, a VAR partition that does not mount is logged and replaced by
//! a tmpfs for this boot: the node stays reachable, so the operator can see
//! why (boot report `var.problem`) and reset it.

use crate::boot_params::{VarSource, DEFAULT_VAR_LABEL};
use crate::mounts::{self, MountError, MountOps};
use crate::verity::partition::{self, Partition, PartitionError};
use basalt_common::manifest::ModuleEntry;
use std::path::Path;
use std::time::Duration;

/// The modules an ext4 /var needs (ext4, what its `.modinfo` says it
/// depends on, and the crc32c its checksums ask the crypto API for). They
/// are the largest the node has; loaded only when /var is a partition, a
/// boot without one does not pay for them.
pub const MODULES: &[&str] = &["crc16", "jbd2", "mbcache", "ext4", "crc32c_generic"];

/// The manifest's modules, in its load order: those to load at boot, and
/// [`MODULES`], for when /var is a partition.
pub fn split_modules(all: &[ModuleEntry]) -> (Vec<ModuleEntry>, Vec<ModuleEntry>) {
    all.iter().cloned().partition(|m| !MODULES.contains(&m.name.as_str()))
}

/// What /var will be, before it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarChoice {
    Partition {
        part: Partition,
        /// `basalt.var=partlabel:` named it (a failure is fatal).
        named: bool,
    },
    Tmpfs {
        why: String,
    },
}

/// Resolves `basalt.var` against the partitions under `class_block`
/// (`/sys/class/block`). By default the VAR partition is looked for once,
/// with no wait: the disks' partition tables were read when their drivers
/// loaded, so a VAR that is not listed by now is not there.
pub fn choose(source: &VarSource, class_block: &Path, dev: &Path, wait: Duration) -> Result<VarChoice, PartitionError> {
    match source {
        VarSource::Tmpfs => Ok(VarChoice::Tmpfs {
            why: "basalt.var=tmpfs".into(),
        }),
        VarSource::PartLabel(label) => {
            partition::wait_for(class_block, dev, label, wait).map(|part| VarChoice::Partition { part, named: true })
        }
        VarSource::Default => match partition::find(class_block, dev, DEFAULT_VAR_LABEL)? {
            None => Ok(VarChoice::Tmpfs {
                why: format!("no partition labelled {DEFAULT_VAR_LABEL}"),
            }),
            // Listed: its node may still be on its way.
            Some(_) => partition::wait_for(class_block, dev, DEFAULT_VAR_LABEL, wait)
                .map(|part| VarChoice::Partition { part, named: false }),
        },
    }
}

/// What /var is, for the log and the boot report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarMounted {
    pub fstype: &'static str,
    /// `partlabel:NAME` or `tmpfs`.
    pub source: String,
    /// The partition's node, when /var is on one.
    pub device: Option<String>,
    /// `basalt.var` or `default`.
    pub chosen_by: &'static str,
    /// Why /var is not what was found or asked for (a default VAR that did
    /// not mount), or why it is a tmpfs.
    pub note: String,
}

/// /var cannot be mounted.
#[derive(Debug)]
pub enum VarError {
    /// The partition `basalt.var=partlabel:` named.
    Partition {
        part: Partition,
        source: MountError,
    },
    Tmpfs(MountError),
}

impl std::fmt::Display for VarError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VarError::Partition { part, source } => write!(
                f,
                "var partition {} ({}): {source} (basalt.var=partlabel:{} needs an ext4 filesystem there)",
                part.label, part.node, part.label
            ),
            VarError::Tmpfs(e) => write!(f, "var tmpfs: {e}"),
        }
    }
}

/// Mounts /var under `newroot` as `choice` says; a tmpfs of `tmpfs_size`
/// when there is no partition, or when a default one does not mount.
pub fn mount(
    ops: &mut dyn MountOps,
    newroot: &str,
    choice: VarChoice,
    tmpfs_size: &str,
) -> Result<VarMounted, VarError> {
    let tmpfs = |ops: &mut dyn MountOps, chosen_by, note: String| {
        mounts::mount_all(ops, &[mounts::var_tmpfs(newroot, tmpfs_size)]).map(|()| VarMounted {
            fstype: "tmpfs",
            source: "tmpfs".into(),
            device: None,
            chosen_by,
            note,
        })
    };
    match choice {
        VarChoice::Tmpfs { why } => {
            let chosen_by = if why.starts_with("basalt.var") {
                "basalt.var"
            } else {
                "default"
            };
            tmpfs(ops, chosen_by, why).map_err(VarError::Tmpfs)
        }
        VarChoice::Partition { part, named } => {
            let chosen_by = if named { "basalt.var" } else { "default" };
            match mounts::mount_all(ops, &[mounts::var_ext4(newroot, &part.node)]) {
                Ok(()) => Ok(VarMounted {
                    fstype: "ext4",
                    source: format!("partlabel:{}", part.label),
                    device: Some(part.node.clone()),
                    chosen_by,
                    note: format!("partition {} ({})", part.label, part.node),
                }),
                Err(source) if named => Err(VarError::Partition { part, source }),
                Err(e) => {
                    let note = format!(
                        "partition {} ({}) does not mount ({e}); /var is a tmpfs this boot",
                        part.label, part.node
                    );
                    log::error!("var: {note}");
                    tmpfs(ops, chosen_by, note).map_err(VarError::Tmpfs)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounts::fake::Recorder;

    /// A /sys/class/block with `vdb` and its partitions labelled as given,
    /// and the /dev nodes of those in `nodes`.
    fn sysfs(tag: &str, labels: &[(&str, &str)], nodes: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
        let root = std::env::temp_dir().join(format!("basalt-var-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (class, dev) = (root.join("class"), root.join("dev"));
        std::fs::create_dir_all(class.join("vdb")).unwrap();
        std::fs::write(class.join("vdb/uevent"), "DEVTYPE=disk\nDEVNAME=vdb\n").unwrap();
        for (name, label) in labels {
            std::fs::create_dir_all(class.join(name)).unwrap();
            let uevent = format!("DEVTYPE=partition\nDEVNAME={name}\nPARTNAME={label}\n");
            std::fs::write(class.join(name).join("uevent"), uevent).unwrap();
        }
        std::fs::create_dir_all(&dev).unwrap();
        for n in nodes {
            std::fs::write(dev.join(n), "").unwrap();
        }
        (class, dev)
    }

    fn part(name: &str, label: &str, dev: &Path) -> Partition {
        Partition {
            label: label.into(),
            name: name.into(),
            node: dev.join(name).display().to_string(),
        }
    }

    #[test]
    fn choice_table() {
        let wait = Duration::from_millis(30);
        let (class, dev) = sysfs(
            "with",
            &[("vdb4", "STATE"), ("vdb5", "VAR"), ("vdb6", "DATA")],
            &["vdb5", "vdb6"],
        );
        let cases = [
            (
                VarSource::Default,
                VarChoice::Partition {
                    part: part("vdb5", "VAR", &dev),
                    named: false,
                },
            ),
            (
                VarSource::PartLabel("DATA".into()),
                VarChoice::Partition {
                    part: part("vdb6", "DATA", &dev),
                    named: true,
                },
            ),
            (
                VarSource::Tmpfs,
                VarChoice::Tmpfs {
                    why: "basalt.var=tmpfs".into(),
                },
            ),
        ];
        for (source, want) in cases {
            assert_eq!(choose(&source, &class, &dev, wait).unwrap(), want, "{source:?}");
        }
        // Named but absent, or listed without a node: the bounded wait ends it.
        for label in ["NOPE", "STATE"] {
            let e = choose(&VarSource::PartLabel(label.into()), &class, &dev, wait).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("no partition labelled {label} appeared within 0.0 s")
            );
        }

        let (class, dev) = sysfs("without", &[("vdb4", "STATE")], &[]);
        assert_eq!(
            choose(&VarSource::Default, &class, &dev, wait).unwrap(),
            VarChoice::Tmpfs {
                why: "no partition labelled VAR".into()
            }
        );
        let (class, dev) = sysfs("two", &[("vdb5", "VAR"), ("vdb6", "VAR")], &["vdb5", "vdb6"]);
        let e = choose(&VarSource::Default, &class, &dev, wait).unwrap_err();
        assert!(e.to_string().starts_with("partition label VAR is on both"), "{e}");
    }

    #[test]
    fn a_partition_mounts_ext4_nosuid_nodev() {
        let mut rec = Recorder::default();
        let dev = Path::new("/dev");
        let choice = VarChoice::Partition {
            part: part("vdb5", "VAR", dev),
            named: false,
        };
        let got = mount(&mut rec, "/newroot", choice, "50%").unwrap();
        assert_eq!(
            got,
            VarMounted {
                fstype: "ext4",
                source: "partlabel:VAR".into(),
                device: Some("/dev/vdb5".into()),
                chosen_by: "default",
                note: "partition VAR (/dev/vdb5)".into(),
            }
        );
        assert_eq!(
            rec.ops,
            [
                "mkdir /newroot/var 755",
                "mount ext4 /newroot/var MsFlags(MS_NOSUID | MS_NODEV) "
            ]
        );
    }

    #[test]
    fn a_named_partition_that_does_not_mount_is_fatal_a_default_one_is_not() {
        let dev = Path::new("/dev");
        let mut rec = Recorder {
            fail_at: Some("/newroot/var".into()),
            ..Default::default()
        };
        let named = VarChoice::Partition {
            part: part("vdb5", "VAR", dev),
            named: true,
        };
        let e = mount(&mut rec, "/newroot", named, "50%").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "var partition VAR (/dev/vdb5): mount ext4 on /newroot/var: {} \
                 (basalt.var=partlabel:VAR needs an ext4 filesystem there)",
                std::io::Error::from_raw_os_error(libc::ENODEV)
            )
        );

        // The fake fails every mount on /newroot/var: a tmpfs as well.
        let default = VarChoice::Partition {
            part: part("vdb5", "VAR", dev),
            named: false,
        };
        assert!(mount(&mut rec, "/newroot", default.clone(), "50%").is_err());
        let mut rec = FailExt4(Recorder::default());
        let got = mount(&mut rec, "/newroot", default, "50%").unwrap();
        assert_eq!((got.fstype, got.chosen_by), ("tmpfs", "default"));
        assert!(
            got.note
                .starts_with("partition VAR (/dev/vdb5) does not mount (mount ext4 on /newroot/var: "),
            "{}",
            got.note
        );
        assert!(got.note.ends_with("); /var is a tmpfs this boot"), "{}", got.note);
        assert_eq!(
            rec.0.ops.last().unwrap(),
            "mount tmpfs /newroot/var MsFlags(MS_NOSUID | MS_NODEV) mode=0755,size=50%"
        );
    }

    /// Refuses ext4, mounts anything else.
    struct FailExt4(Recorder);

    impl MountOps for FailExt4 {
        fn mkdir_all(&mut self, path: &str, mode: u32) -> std::io::Result<()> {
            self.0.mkdir_all(path, mode)
        }
        fn mount(&mut self, spec: &crate::mounts::MountSpec) -> std::io::Result<()> {
            if spec.fstype == "ext4" {
                return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
            }
            self.0.mount(spec)
        }
    }

    #[test]
    fn ext4_modules_wait_for_a_partition_in_load_order() {
        let entry = |name: &str| ModuleEntry {
            name: name.into(),
            sha256: [0; 32],
        };
        let all: Vec<ModuleEntry> = [
            "loop",
            "crc16",
            "jbd2",
            "dm_mod",
            "mbcache",
            "ext4",
            "crc32c_generic",
            "virtio",
        ]
        .iter()
        .map(|n| entry(n))
        .collect();
        let (boot, var) = split_modules(&all);
        let names = |v: &[ModuleEntry]| v.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&boot), ["loop", "dm_mod", "virtio"]);
        assert_eq!(names(&var), ["crc16", "jbd2", "mbcache", "ext4", "crc32c_generic"]);
    }

    #[test]
    fn tmpfs_says_who_chose_it() {
        for (why, by) in [
            ("basalt.var=tmpfs", "basalt.var"),
            ("no partition labelled VAR", "default"),
        ] {
            let mut rec = Recorder::default();
            let got = mount(&mut rec, "/n", VarChoice::Tmpfs { why: why.into() }, "1g").unwrap();
            assert_eq!((got.fstype, got.source.as_str(), got.chosen_by), ("tmpfs", "tmpfs", by));
            assert_eq!(got.note, why);
            assert_eq!(
                rec.ops[1],
                "mount tmpfs /n/var MsFlags(MS_NOSUID | MS_NODEV) mode=0755,size=1g"
            );
        }
    }
}
