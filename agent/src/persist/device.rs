//! Finding the STATE partition: by its GPT partition name, the way the
//! kernel reports it in `/sys/class/block/<dev>/uevent` (`PARTNAME=STATE`).
//! Both roots are parameters, so a test points them at a scratch directory.

use std::path::{Path, PathBuf};

/// Where the agent's records live, from `basalt.state=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateSource {
    /// The partition with this GPT name (default `STATE`).
    PartLabel(String),
    /// A device or file named outright.
    Path(PathBuf),
    /// No persistence: configs last until the next boot.
    Disabled,
}

impl Default for StateSource {
    fn default() -> Self {
        StateSource::PartLabel(DEFAULT_LABEL.into())
    }
}

pub const DEFAULT_LABEL: &str = "STATE";

impl StateSource {
    /// Reads a `basalt.state=` value: `none`, `partlabel:NAME`, or an absolute path.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value == "none" {
            return Ok(StateSource::Disabled);
        }
        if let Some(label) = value.strip_prefix("partlabel:") {
            let ok = !label.is_empty()
                && label.len() <= 36
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            return if ok {
                Ok(StateSource::PartLabel(label.into()))
            } else {
                Err(format!("partition name {label:?} must be 1 to 36 of A-Z a-z 0-9 - _ ."))
            };
        }
        if value.starts_with('/') && !value.contains('\0') {
            return Ok(StateSource::Path(value.into()));
        }
        Err(format!(
            "{:?} is not none, partlabel:NAME or an absolute path",
            basalt_common::text::clip(value)
        ))
    }
}

/// The block device whose uevent names partition `label`, as a path under
/// `dev` (e.g. `/dev/vdb4`). `None` if no partition has that name.
pub fn find_partition(sys_class_block: &Path, dev: &Path, label: &str) -> Option<PathBuf> {
    let mut names: Vec<String> = std::fs::read_dir(sys_class_block)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // The same answer every boot, whatever order the directory lists in.
    names.sort();
    names.into_iter().find_map(|name| {
        let uevent = std::fs::read_to_string(sys_class_block.join(&name).join("uevent")).ok()?;
        let named = uevent.lines().any(|l| l.strip_prefix("PARTNAME=") == Some(label));
        let devname = uevent
            .lines()
            .find_map(|l| l.strip_prefix("DEVNAME="))
            .unwrap_or(&name)
            .to_string();
        named.then(|| dev.join(devname))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        let cases = [
            ("none", Ok(StateSource::Disabled)),
            ("partlabel:STATE", Ok(StateSource::PartLabel("STATE".into()))),
            ("/dev/vdb", Ok(StateSource::Path("/dev/vdb".into()))),
            ("partlabel:", Err(())),
            ("partlabel:a b", Err(())),
            ("vdb", Err(())),
        ];
        for (text, want) in cases {
            assert_eq!(StateSource::parse(text).map_err(|_| ()), want, "{text}");
        }
    }

    #[test]
    fn finds_the_partition_by_name() {
        let root = std::env::temp_dir().join(format!("basalt-persist-dev-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (dev, uevent) in [
            ("vda", "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n"),
            (
                "vda1",
                "MAJOR=254\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=ESP\n",
            ),
            (
                "vda4",
                "MAJOR=254\nMINOR=4\nDEVNAME=vda4\nDEVTYPE=partition\nPARTN=4\nPARTNAME=STATE\n",
            ),
            ("vdb1", "DEVNAME=vdb1\nPARTNAME=STATE-OLD\n"),
        ] {
            std::fs::create_dir_all(root.join(dev)).unwrap();
            std::fs::write(root.join(dev).join("uevent"), uevent).unwrap();
        }
        let dev = Path::new("/dev");
        assert_eq!(find_partition(&root, dev, "STATE"), Some(PathBuf::from("/dev/vda4")));
        assert_eq!(find_partition(&root, dev, "ESP"), Some(PathBuf::from("/dev/vda1")));
        assert_eq!(find_partition(&root, dev, "VAR"), None);
        assert_eq!(find_partition(&root.join("missing"), dev, "STATE"), None);
        let _ = std::fs::remove_dir_all(&root);
    }
}
