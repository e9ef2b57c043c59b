#![cfg(feature = "host")]
//! Part 4: binary sizes, and what the initramfs costs beyond the root image
//! and the kernel modules it has to carry.

use crate::error::{io_err, BenchError};
use std::path::{Path, PathBuf};

/// One member of a newc archive, as far as sizes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    /// File data, without padding.
    pub data: u64,
    /// Everything else the member costs: header, name, padding.
    pub overhead: u64,
}

/// Lists a newc ("070701") archive, stopping at its trailer.
pub fn list_newc(bytes: &[u8]) -> Result<Vec<Member>, String> {
    let pad4 = |n: usize| (4 - n % 4) % 4;
    let mut out = Vec::new();
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
        let (filesize, namesize) = (field(6)?, field(11)?);
        let name_end = at + 110 + namesize;
        let name_bytes = bytes
            .get(at + 110..name_end.saturating_sub(1))
            .ok_or_else(|| format!("byte {at}: name runs past the end"))?;
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        let data_at = name_end + pad4(110 + namesize);
        let next = data_at + filesize + pad4(filesize);
        if next > bytes.len() {
            return Err(format!("{name}: data runs past the end"));
        }
        out.push(Member {
            name: name.clone(),
            data: filesize as u64,
            overhead: (next - at - filesize) as u64,
        });
        at = next;
        if name == "TRAILER!!!" {
            return Ok(out);
        }
    }
}

/// Where an initramfs's bytes go.
#[derive(Debug, Clone, PartialEq, Eq)]
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

pub fn breakdown(total: u64, members: &[Member]) -> Breakdown {
    let data = |pred: &dyn Fn(&str) -> bool| members.iter().filter(|m| pred(&m.name)).map(|m| m.data).sum::<u64>();
    let is_module = |n: &str| n.starts_with("basalt/modules/") && n.ends_with(".ko");
    let image = data(&|n| n == "basalt/root.sqsh");
    let modules = data(&is_module);
    let init = data(&|n| n == "init");
    let manifest = data(&|n| n == "basalt/manifest.json" || n == "basalt/manifest.sig");
    Breakdown {
        total,
        image,
        modules,
        module_count: members.iter().filter(|m| is_module(&m.name)).count(),
        init,
        manifest,
        framing: total - image - modules - init - manifest,
    }
}

/// Reads and lists an initramfs (plain, or gzip as `--compress gzip` makes).
pub fn initramfs_breakdown(path: &Path) -> Result<Breakdown, BenchError> {
    let raw = std::fs::read(path).map_err(io_err("read", path))?;
    let total = raw.len() as u64;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut out)
            .map_err(io_err("gunzip", path))?;
        out
    } else {
        raw
    };
    let members = list_newc(&bytes).map_err(|why| BenchError::Parse {
        what: path.display().to_string(),
        why,
    })?;
    let mut b = breakdown(bytes.len() as u64, &members);
    if total != b.total {
        // Compressed: the image and modules barely shrink (already zstd, or
        // not worth it); charge the saving to the overhead's framing.
        b.framing = b.framing.saturating_sub(b.total - total);
        b.total = total;
    }
    Ok(b)
}

/// A binary's size as built and after `strip --strip-all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinarySize {
    pub name: String,
    pub path: PathBuf,
    pub as_built: u64,
    pub stripped: u64,
}

pub fn binary_size(name: &str, path: &Path, scratch: &Path) -> Result<BinarySize, BenchError> {
    let as_built = std::fs::metadata(path).map_err(io_err("stat", path))?.len();
    std::fs::create_dir_all(scratch).map_err(io_err("create", scratch))?;
    let copy = scratch.join(format!("{name}.stripped"));
    std::fs::copy(path, &copy).map_err(io_err("copy to", &copy))?;
    crate::images::run_tool(std::process::Command::new("strip").arg("--strip-all").arg(&copy))?;
    let stripped = std::fs::metadata(&copy).map_err(io_err("stat", &copy))?.len();
    let _ = std::fs::remove_file(&copy);
    Ok(BinarySize {
        name: name.to_string(),
        path: path.to_path_buf(),
        as_built,
        stripped,
    })
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
    fn lists_what_the_writer_wrote() {
        let bytes = archive(&[
            Entry::dir("basalt", 0o755),
            Entry::bytes("basalt/root.sqsh", 0o444, b"hsqs12345"),
            Entry::bytes("basalt/modules/loop.ko", 0o444, b"ko"),
            Entry::bytes("init", 0o755, b"#!x"),
        ]);
        let members = list_newc(&bytes).unwrap();
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "basalt",
                "basalt/root.sqsh",
                "basalt/modules/loop.ko",
                "init",
                "TRAILER!!!"
            ]
        );
        let data: Vec<u64> = members.iter().map(|m| m.data).collect();
        assert_eq!(data, [0, 9, 2, 3, 0]);
        // Every byte is some member's data or overhead.
        let sum: u64 = members.iter().map(|m| m.data + m.overhead).sum();
        assert_eq!(sum, bytes.len() as u64);
        // "basalt": 110 + 7 bytes of name, padded to 120.
        assert_eq!(members[0].overhead, 120);

        let b = breakdown(bytes.len() as u64, &members);
        assert_eq!(
            (b.image, b.modules, b.module_count, b.init, b.manifest),
            (9, 2, 1, 3, 0)
        );
        assert_eq!(b.overhead(), bytes.len() as u64 - 11);
        assert_eq!(b.framing + b.init + b.manifest, b.overhead());
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
            let err = list_newc(&bytes).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }
}
