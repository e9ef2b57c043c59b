//! Which block dm-verity refused. The target says only "corrupted" in its
//! status; the block number is in its kernel log line
//! (`device-mapper: verity: 7:0: data block 12 is corrupted`), read back
//! from /dev/kmsg.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

/// One block dm-verity refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// `major:minor` of the device verity read from.
    pub device: String,
    /// `data`, or `metadata` (a hash block).
    pub kind: String,
    /// In 4096-byte blocks from the start of that device (for metadata,
    /// counted from the device's start too, hash_start_block included).
    pub block: u64,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} block {} is corrupted", self.kind, self.block)
    }
}

/// Reads one kmsg record (`prio,seq,usec,flags;text`) or a plain log line.
pub fn parse_line(line: &str) -> Option<Corruption> {
    let text = line.split_once(';').map_or(line, |(_, t)| t);
    let rest = text.split("device-mapper: verity: ").nth(1)?;
    let (device, rest) = rest.split_once(": ")?;
    let (kind, rest) = rest.split_once(" block ")?;
    let (block, tail) = rest.split_once(' ')?;
    if tail.trim_end() != "is corrupted" || !matches!(kind, "data" | "metadata") {
        return None;
    }
    Some(Corruption {
        device: device.to_string(),
        kind: kind.to_string(),
        block: block.parse().ok()?,
    })
}

/// The first corruption dm-verity logged, if /dev/kmsg (at `path`) still
/// holds it. Reads what is buffered without waiting for more.
pub fn first_logged(path: &str) -> Option<Corruption> {
    let mut kmsg = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    // Each read returns one record; the ring buffer bounds how many there are.
    let mut buf = vec![0u8; 8192];
    for _ in 0..100_000 {
        match kmsg.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => {
                if let Some(c) = parse_line(&String::from_utf8_lossy(&buf[..n])) {
                    return Some(c);
                }
            }
            // EPIPE: a record was overwritten before we read it; go on.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_lines() {
        let cases = [
            (
                "3,412,2470346,-;device-mapper: verity: 7:0: metadata block 283 is corrupted\n",
                Some(("7:0", "metadata", 283)),
            ),
            (
                "[    2.47] device-mapper: verity: 254:2: data block 0 is corrupted",
                Some(("254:2", "data", 0)),
            ),
            ("3,1,1,-;device-mapper: verity: 7:0: reached maximum errors", None),
            ("3,1,1,-;device-mapper: verity: 7:0: data block x is corrupted", None),
            ("3,1,1,-;device-mapper: verity: 7:0: other block 3 is corrupted", None),
            ("6,2,2,-;SQUASHFS error: Failed to read block 0x0: -5", None),
            ("", None),
        ];
        for (line, want) in cases {
            let got = parse_line(line);
            let got = got.as_ref().map(|c| (c.device.as_str(), c.kind.as_str(), c.block));
            assert_eq!(got, want, "{line:?}");
        }
        let c = parse_line("device-mapper: verity: 7:0: data block 12 is corrupted").unwrap();
        assert_eq!(c.to_string(), "data block 12 is corrupted");
    }

    #[test]
    fn a_missing_kmsg_names_no_block() {
        assert_eq!(first_logged("/nonexistent/kmsg"), None);
    }
}
