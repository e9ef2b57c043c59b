//! What the scrub reads: the dm-verity device init mapped the root on, as
//! the boot report names it, read with O_DIRECT so that every block goes
//! through verity (none is answered from the page cache) and the scrub
//! leaves the cache as it found it.

use serde_json::Value;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};

/// The mapped root, from `/run/basalt/boot.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `image.verity.device`, e.g. `/dev/dm-0`.
    pub device: String,
    /// `image.verity.data_blocks`: 4 KiB blocks verity maps.
    pub blocks: u64,
}

/// The verity device and its size, or why there is nothing to scrub.
pub fn target(report: Option<&Value>) -> Result<Target, String> {
    let report = report.ok_or("no boot report")?;
    let verity = &report["image"]["verity"];
    if verity.is_null() {
        return Err("the root is not on dm-verity (an image file, hashed whole at boot)".into());
    }
    let device = verity["device"].as_str().filter(|d| d.starts_with("/dev/"));
    let blocks = verity["data_blocks"].as_u64().filter(|&b| b > 0);
    match (device, blocks) {
        (Some(device), Some(blocks)) => Ok(Target {
            device: device.to_string(),
            blocks,
        }),
        _ => Err(format!("boot report's image.verity is incomplete: {verity}")),
    }
}

/// Reads and drops `len` bytes at `offset` (the scrub wants the reading,
/// not the bytes). The device, or a fake in the tests.
pub trait Blocks {
    fn read(&mut self, offset: u64, len: usize) -> io::Result<usize>;
}

/// The device, opened read-only and O_DIRECT, with a buffer aligned for it.
pub struct Device {
    file: std::fs::File,
    buf: Vec<u8>,
    /// Where the aligned part of `buf` starts.
    at: usize,
    chunk: usize,
}

impl Device {
    pub fn open(path: &str, chunk: usize) -> io::Result<Device> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
            .open(path)?;
        let align = super::pace::BLOCK as usize;
        let buf = vec![0u8; chunk + align];
        let at = buf.as_ptr().align_offset(align);
        Ok(Device { file, buf, at, chunk })
    }
}

impl Blocks for Device {
    /// Reads into the aligned buffer; `offset` and `len` are multiples of
    /// 4 KiB, as O_DIRECT wants. At most the chunk size given to `open`.
    fn read(&mut self, offset: u64, len: usize) -> io::Result<usize> {
        let len = len.min(self.chunk);
        self.file.read_at(&mut self.buf[self.at..self.at + len], offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn target_table() {
        let slot = json!({"image": {"verity": {"device": "/dev/dm-0", "data_blocks": 1234}}});
        assert_eq!(
            target(Some(&slot)),
            Ok(Target {
                device: "/dev/dm-0".into(),
                blocks: 1234
            })
        );
        let errors = [
            (None, "no boot report".to_string()),
            (
                Some(json!({"image": {"verity": null}})),
                "the root is not on dm-verity (an image file, hashed whole at boot)".into(),
            ),
            (
                Some(json!({"image": {}})),
                "the root is not on dm-verity (an image file, hashed whole at boot)".into(),
            ),
            (
                Some(json!({"image": {"verity": {"device": "dm-0", "data_blocks": 3}}})),
                r#"boot report's image.verity is incomplete: {"data_blocks":3,"device":"dm-0"}"#.into(),
            ),
            (
                Some(json!({"image": {"verity": {"device": "/dev/dm-0", "data_blocks": 0}}})),
                r#"boot report's image.verity is incomplete: {"data_blocks":0,"device":"/dev/dm-0"}"#.into(),
            ),
        ];
        for (report, want) in errors {
            assert_eq!(target(report.as_ref()), Err(want));
        }
    }

    #[test]
    fn device_reads_aligned_chunks_of_a_file() {
        // tmpfs refuses O_DIRECT; the build directory is on a disk filesystem.
        let dir = std::env::temp_dir();
        let path = dir.join(format!("basalt-scrub-{}.img", std::process::id()));
        let data: Vec<u8> = (0..3 * 4096u32).map(|i| (i / 4096) as u8 + 1).collect();
        std::fs::write(&path, &data).unwrap();
        let mut dev = match Device::open(path.to_str().unwrap(), 8192) {
            Ok(d) => d,
            // A filesystem without O_DIRECT (tmpfs): nothing to learn here.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                std::fs::remove_file(&path).unwrap();
                return;
            }
            Err(e) => panic!("{e}"),
        };
        assert_eq!((dev.buf.as_ptr() as usize + dev.at) % 4096, 0);
        assert_eq!(dev.read(4096, 8192).unwrap(), 8192);
        assert_eq!(dev.buf[dev.at], 2);
        assert_eq!(dev.buf[dev.at + 4096], 3);
        // The end of the file: a short read, then none.
        assert_eq!(dev.read(8192, 8192).unwrap(), 4096);
        assert_eq!(dev.read(12288, 8192).unwrap(), 0);
        // Never more than the buffer holds.
        assert_eq!(dev.read(0, 1 << 20).unwrap(), 8192);
        std::fs::remove_file(&path).unwrap();
    }
}
