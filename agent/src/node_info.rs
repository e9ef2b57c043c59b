//! Facts about the node that `status` reports, read from /proc and /sys.
//! The parsers are pure; the paths come from the settings.

use basalt_common::procfs;
use std::path::Path;

/// `VmHWM` (peak resident set) in KiB, from a `/proc/<pid>/status` file.
pub fn peak_rss_kib(status_file: &Path) -> Option<u64> {
    procfs::status_kib(&std::fs::read_to_string(status_file).ok()?, "VmHWM")
}

pub fn lockdown(file: &Path) -> Option<String> {
    basalt_common::lockdown::active_level(&std::fs::read_to_string(file).ok()?).map(str::to_string)
}

pub fn kernel_release(proc_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(proc_dir.join("sys/kernel/osrelease")).ok()?;
    Some(text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_peak_rss() {
        assert!(peak_rss_kib(Path::new("/proc/self/status")).unwrap() > 0);
    }
}
