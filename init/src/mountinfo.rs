//! Reading `/proc/self/mountinfo`, for unmounting at shutdown.

/// One line of mountinfo: just what shutdown needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: String,
    pub fstype: String,
}

/// Parses mountinfo text, in file order (parents before children).
/// Malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = unescape(fields.get(4)?);
            let sep = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(sep + 1)?.to_string();
            Some(MountEntry { mount_point, fstype })
        })
        .collect()
}

/// The kernel escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') as u32 * 64 + (bytes[i + 2] - b'0') as u32 * 8 + (bytes[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points to unmount, deepest last-mounted first, never `/`.
pub fn unmount_order(entries: &[MountEntry]) -> Vec<String> {
    entries
        .iter()
        .rev()
        .filter(|e| e.mount_point != "/")
        .map(|e| e.mount_point.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 7:0 / / ro,nosuid,nodev,relatime - squashfs /dev/loop0 ro,errors=continue
23 22 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw,mode=755
24 23 0:20 / /dev/pts rw,nosuid,noexec - devpts devpts rw,gid=5,mode=620,ptmxmode=000
30 22 0:25 / /var rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,mode=755
31 30 0:26 / /var/with\\040space rw - tmpfs tmpfs rw
garbage line
";

    #[test]
    fn parses_and_orders() {
        let entries = parse(SAMPLE);
        assert_eq!(entries.len(), 5);
        assert_eq!(
            entries[0],
            MountEntry {
                mount_point: "/".into(),
                fstype: "squashfs".into()
            }
        );
        assert_eq!(entries[3].fstype, "tmpfs", "optional fields before '-' are skipped");
        assert_eq!(entries[4].mount_point, "/var/with space");
        assert_eq!(unmount_order(&entries), ["/var/with space", "/var", "/dev/pts", "/dev"]);
    }

    #[test]
    fn unescape_table() {
        let cases = [
            ("a\\040b", "a b"),
            ("a\\134b", "a\\b"),
            ("trail\\04", "trail\\04"),
            ("\\011", "\t"),
            ("x", "x"),
        ];
        for (raw, want) in cases {
            assert_eq!(unescape(raw), want);
        }
    }
}
