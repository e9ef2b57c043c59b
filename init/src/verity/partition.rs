//! Finding a root slot by its GPT partition label: the kernel puts each
//! partition's PARTLABEL into its uevent as `PARTNAME=`.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

/// A partition found by label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub label: String,
    /// The kernel's name for it, e.g. `vda2`.
    pub name: String,
    /// Its node, e.g. `/dev/vda2`.
    pub node: String,
}

#[derive(Debug)]
pub enum PartitionError {
    Sysfs {
        path: String,
        source: io::Error,
    },
    Ambiguous {
        label: String,
        first: String,
        second: String,
    },
    Timeout {
        label: String,
        waited: Duration,
    },
}

impl std::fmt::Display for PartitionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartitionError::Sysfs { path, source } => write!(f, "read {path}: {source}"),
            PartitionError::Ambiguous { label, first, second } => {
                write!(f, "partition label {label} is on both {first} and {second}")
            }
            PartitionError::Timeout { label, waited } => write!(
                f,
                "no partition labelled {label} appeared within {:.1} s",
                waited.as_secs_f64()
            ),
        }
    }
}

/// The value of `key` in a uevent file's `KEY=value` lines.
pub fn uevent_value<'a>(uevent: &'a str, key: &str) -> Option<&'a str> {
    uevent.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// The partition labelled `label` among `class_block`'s entries
/// (`/sys/class/block` at boot), or None if there is none yet. Two disks
/// with the same label are refused: which one would boot is up to probe order.
pub fn find(class_block: &Path, dev: &Path, label: &str) -> Result<Option<Partition>, PartitionError> {
    let sysfs_err = |source| PartitionError::Sysfs {
        path: class_block.display().to_string(),
        source,
    };
    let mut names: Vec<String> = std::fs::read_dir(class_block)
        .map_err(sysfs_err)?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    let mut found: Option<Partition> = None;
    for name in names {
        // A device can go between readdir and read; what is gone is not it.
        let Ok(uevent) = std::fs::read_to_string(class_block.join(&name).join("uevent")) else {
            continue;
        };
        if uevent_value(&uevent, "DEVTYPE") != Some("partition") || uevent_value(&uevent, "PARTNAME") != Some(label) {
            continue;
        }
        let devname = uevent_value(&uevent, "DEVNAME").unwrap_or(&name);
        let node = dev.join(devname).display().to_string();
        if let Some(first) = found {
            return Err(PartitionError::Ambiguous {
                label: label.into(),
                first: first.node,
                second: node,
            });
        }
        found = Some(Partition {
            label: label.into(),
            name,
            node,
        });
    }
    Ok(found)
}

/// Waits up to `limit` for the partition and its node (the disk driver
/// probes, then the kernel scans the partition table, then devtmpfs adds
/// the nodes).
pub fn wait_for(class_block: &Path, dev: &Path, label: &str, limit: Duration) -> Result<Partition, PartitionError> {
    let start = Instant::now();
    loop {
        // /sys/class/block exists from the start; an error reading it is real.
        if let Some(p) = find(class_block, dev, label)? {
            if Path::new(&p.node).exists() {
                return Ok(p);
            }
        }
        if start.elapsed() >= limit {
            return Err(PartitionError::Timeout {
                label: label.into(),
                waited: limit,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct Tree(PathBuf);
    impl Tree {
        fn new(tag: &str) -> Tree {
            let d = std::env::temp_dir().join(format!("basalt-part-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(d.join("class/block")).unwrap();
            std::fs::create_dir_all(d.join("dev")).unwrap();
            Tree(d)
        }
        fn block(&self, name: &str, uevent: &str) {
            let dir = self.0.join("class/block").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("uevent"), uevent).unwrap();
            std::fs::write(self.0.join("dev").join(name), b"").unwrap();
        }
        fn class(&self) -> PathBuf {
            self.0.join("class/block")
        }
        fn dev(&self) -> PathBuf {
            self.0.join("dev")
        }
    }
    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn part(name: &str, n: u32, label: &str) -> String {
        format!("MAJOR=254\nMINOR={n}\nDEVNAME={name}\nDEVTYPE=partition\nDISKSEQ=9\nPARTN={n}\nPARTNAME={label}\n")
    }

    #[test]
    fn uevent_values() {
        let u = part("vda2", 2, "ROOT-A");
        assert_eq!(uevent_value(&u, "PARTNAME"), Some("ROOT-A"));
        assert_eq!(uevent_value(&u, "PARTN"), Some("2"));
        assert_eq!(uevent_value(&u, "DEV"), None, "a prefix of a key is not the key");
        assert_eq!(uevent_value("PARTNAME=\n", "PARTNAME"), Some(""));
    }

    #[test]
    fn finds_the_partition_by_label() {
        let t = Tree::new("find");
        t.block("vda", "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n");
        t.block("vda1", &part("vda1", 1, "ESP"));
        t.block("vda2", &part("vda2", 2, "ROOT-A"));
        t.block("vda3", &part("vda3", 3, "ROOT-B"));
        t.block("loop0", "MAJOR=7\nMINOR=0\nDEVNAME=loop0\nDEVTYPE=disk\n");
        let cases = [
            ("ROOT-A", Some("vda2")),
            ("ROOT-B", Some("vda3")),
            ("ROOT", None),
            ("root-a", None),
            ("STATE", None),
        ];
        for (label, want) in cases {
            let got = find(&t.class(), &t.dev(), label).unwrap();
            assert_eq!(got.as_ref().map(|p| p.name.as_str()), want, "{label}");
            if let Some(p) = got {
                assert_eq!(p.node, t.dev().join(want.unwrap()).display().to_string());
            }
        }
    }

    #[test]
    fn a_whole_disk_named_like_a_label_is_not_a_partition() {
        let t = Tree::new("disk");
        t.block("vdb", "DEVNAME=vdb\nDEVTYPE=disk\nPARTNAME=ROOT-A\n");
        assert_eq!(find(&t.class(), &t.dev(), "ROOT-A").unwrap(), None);
    }

    #[test]
    fn two_partitions_with_one_label_are_refused() {
        let t = Tree::new("twice");
        t.block("vda2", &part("vda2", 2, "ROOT-A"));
        t.block("vdb2", &part("vdb2", 2, "ROOT-A"));
        let err = find(&t.class(), &t.dev(), "ROOT-A").unwrap_err().to_string();
        let (a, b) = (t.dev().join("vda2"), t.dev().join("vdb2"));
        assert_eq!(
            err,
            format!("partition label ROOT-A is on both {} and {}", a.display(), b.display())
        );
    }

    #[test]
    fn waits_for_the_node_then_gives_up() {
        let t = Tree::new("wait");
        t.block("vda2", &part("vda2", 2, "ROOT-A"));
        let p = wait_for(&t.class(), &t.dev(), "ROOT-A", Duration::ZERO).unwrap();
        assert_eq!(p.name, "vda2");
        // Listed in sysfs but no node yet: not found, and the wait is bounded.
        std::fs::remove_file(t.dev().join("vda2")).unwrap();
        let start = Instant::now();
        let err = wait_for(&t.class(), &t.dev(), "ROOT-A", Duration::from_millis(50)).unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert_eq!(err.to_string(), "no partition labelled ROOT-A appeared within 0.1 s");
        let err = wait_for(&t.0.join("nope"), &t.dev(), "ROOT-A", Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("nope: No such file"), "{err}");
    }
}
