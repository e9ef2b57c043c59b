//! Finding the STATE partition: by its GPT partition name, the way the
//! kernel reports it in `/sys/class/block/<dev>/uevent` (`PARTNAME=STATE`).
//! Both roots are parameters, so a test points them at a scratch directory.
//! (What `basalt.state=` names is settings::StateSource.)

use std::path::{Path, PathBuf};

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
