#![cfg(feature = "host")]
//! Part 4: binary sizes, and what the initramfs costs beyond the root image
//! and the kernel modules it has to carry.

use crate::error::{file_len, io_err, run, BenchError};
use basalt_mkimage::cpio::{read_archive, ReadError};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Where an initramfs's bytes go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breakdown {
    pub total: u64,
    pub image: u64,
    pub modules: u64,
    pub module_count: usize,
    pub init: u64,
    pub manifest: u64,
    /// Headers, names, padding, the trailer and anything unaccounted for.
    pub framing: u64,
}

impl Breakdown {
    /// Everything except the root image and the modules.
    pub fn overhead(&self) -> u64 {
        self.total - self.image - self.modules
    }
}

/// Sorts each member's data of a newc archive by what it is; headers,
/// names, padding and the trailer are framing.
pub fn breakdown(bytes: &[u8]) -> Result<Breakdown, ReadError> {
    let mut b = Breakdown {
        total: bytes.len() as u64,
        ..Breakdown::default()
    };
    for record in read_archive(bytes)?.0 {
        let size = record.data.len() as u64;
        match record.name.as_str() {
            "basalt/root.sqsh" => b.image += size,
            "init" => b.init += size,
            "basalt/manifest.json" | "basalt/manifest.sig" => b.manifest += size,
            n if n.starts_with("basalt/modules/") && n.ends_with(".ko") => {
                b.modules += size;
                b.module_count += 1;
            }
            _ => {}
        }
    }
    b.framing = b.total - b.image - b.modules - b.init - b.manifest;
    Ok(b)
}

/// Reads and lists an initramfs (plain, or gzip as `--compress gzip` makes).
pub fn initramfs_breakdown(path: &Path) -> Result<Breakdown, BenchError> {
    let raw = std::fs::read(path).map_err(io_err("read", path))?;
    let mut bytes = Vec::new();
    if raw.starts_with(&[0x1f, 0x8b]) {
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut bytes)
            .map_err(io_err("gunzip", path))?;
    }
    let plain = if bytes.is_empty() { &raw } else { &bytes };
    let what = path.display().to_string();
    let mut b = breakdown(plain).map_err(|e| BenchError::Parse {
        what,
        why: e.to_string(),
    })?;
    // Compressed: the image and modules barely shrink (already zstd, or not
    // worth it); charge the saving to the overhead's framing.
    b.framing = b.framing.saturating_sub(b.total.saturating_sub(raw.len() as u64));
    b.total = raw.len() as u64;
    Ok(b)
}

/// A binary's size as built and after `strip --strip-all`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinarySize {
    pub name: String,
    pub as_built: u64,
    pub stripped: u64,
}

pub fn binary_size(name: &str, path: &Path, scratch: &Path) -> Result<BinarySize, BenchError> {
    std::fs::create_dir_all(scratch).map_err(io_err("create", scratch))?;
    let copy = scratch.join(format!("{name}.stripped"));
    std::fs::copy(path, &copy).map_err(io_err("copy to", &copy))?;
    run(std::process::Command::new("strip").arg("--strip-all").arg(&copy))?;
    let size = BinarySize {
        name: name.to_string(),
        as_built: file_len(path)?,
        stripped: file_len(&copy)?,
    };
    let _ = std::fs::remove_file(&copy);
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_mkimage::cpio::{CpioWriter, Entry};

    fn archive(entries: &[Entry]) -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new(), 0);
        for e in entries {
            w.write_entry(e).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn sorts_what_the_writer_wrote() {
        let bytes = archive(&[
            Entry::dir("basalt", 0o755),
            Entry::bytes("basalt/root.sqsh", 0o444, b"hsqs12345"),
            Entry::bytes("basalt/modules/loop.ko", 0o444, b"ko"),
            Entry::bytes("basalt/manifest.sig", 0o444, b"sig"),
            Entry::bytes("init", 0o755, b"#!x"),
        ]);
        let b = breakdown(&bytes).unwrap();
        let got = (b.image, b.modules, b.module_count, b.init, b.manifest);
        assert_eq!(got, (9, 2, 1, 3, 3));
        // Every byte is some member's data or framing.
        assert_eq!(b.total, bytes.len() as u64);
        assert_eq!(b.framing + b.init + b.manifest, b.overhead());
        // "basalt": 110 + 7 bytes of name, padded to 120; the trailer 124.
        let dir = archive(&[Entry::dir("basalt", 0o755)]);
        assert_eq!(breakdown(&dir).unwrap().framing, 120 + 124);
    }
}
