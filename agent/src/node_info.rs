//! Facts about the node that `status` reports, read from /proc and /sys.
//! The parsers are pure; the paths come from the settings.

use std::path::Path;

/// `VmHWM` (peak resident set) in KiB, from a `/proc/<pid>/status` text.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|n| n.trim().parse().ok())
}

pub fn peak_rss_kib(status_file: &Path) -> Option<u64> {
    parse_vm_hwm(&std::fs::read_to_string(status_file).ok()?)
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
    fn vm_hwm_table() {
        let cases = [
            (
                "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    1234 kB\nVmRSS:\t 1000 kB\n",
                Some(1234),
            ),
            ("VmHWM:\t0 kB", Some(0)),
            ("Name:\tkthreadd\nState:\tS\n", None),
            ("VmHWM:\t12 MB\n", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_vm_hwm(text), want, "{text:?}");
        }
        assert!(peak_rss_kib(Path::new("/proc/self/status")).unwrap() > 0);
    }
}
