#![cfg(feature = "host")]
//! Part 4: binary sizes, and what the initramfs costs beyond the root image
//! and the kernel modules it has to carry.

use crate::error::{file_len, io_err, run, BenchError};
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

/// Walks a newc ("070701") archive to its trailer, sorting each member's
/// data by what it is; headers, names and padding are framing.
pub fn breakdown(bytes: &[u8]) -> Result<Breakdown, String> {
    let pad4 = |n: usize| (4 - n % 4) % 4;
    let mut b = Breakdown {
        total: bytes.len() as u64,
        ..Breakdown::default()
    };
    let mut at = 0usize;
    loop {
        let header = bytes
            .get(at..at + 110)
            .ok_or_else(|| format!("archive ends at byte {at} without a trailer"))?;
        if &header[..6] != b"070701" {
            return Err(format!("byte {at}: not a newc header"));
        }
        let field = |i: usize| {
            let text =
                std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i]).map_err(|_| format!("byte {at}: bad field"))?;
            usize::from_str_radix(text, 16).map_err(|_| format!("byte {at}: field {text:?} is not hex"))
        };
        let (size, namesize) = (field(6)?, field(11)?);
        let name_end = at + 110 + namesize;
        let name = bytes
            .get(at + 110..name_end.saturating_sub(1))
            .ok_or_else(|| format!("byte {at}: name runs past the end"))?;
        let name = String::from_utf8_lossy(name);
        at = name_end + pad4(110 + namesize) + size + pad4(size);
        if at > bytes.len() {
            return Err(format!("{name}: data runs past the end"));
        }
        let size = size as u64;
        match name.as_ref() {
            "TRAILER!!!" => break,
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
    let mut b = breakdown(plain).map_err(|why| BenchError::Parse {
        what: path.display().to_string(),
        why,
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

    #[test]
    fn refuses_broken_archives() {
        let good = archive(&[Entry::bytes("init", 0o755, b"0123456789")]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (Vec::new(), "without a trailer"),
            (b"070707".repeat(20), "not a newc header"),
            (good[..128].to_vec(), "ends at byte 128 without a trailer"),
            (good[..120].to_vec(), "init: data runs past the end"),
        ];
        for (bytes, needle) in cases {
            let err = breakdown(&bytes).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }
}
