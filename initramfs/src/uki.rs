//! Unified kernel images (Boot Loader Specification type #2): systemd's EFI
//! stub with `.osrel`, `.cmdline`, `.initrd` and `.linux` sections added by
//! `objcopy`, each at a page-aligned address after the stub's own sections.
//!
//! The placement is computed here from the stub's PE headers, so the objcopy
//! call is a plain function of its inputs. The result is an ordinary PE
//! image: `sbsign` can sign it later.

use crate::tools::{self, ToolError};
use std::fmt;
use std::path::{Path, PathBuf};

/// Where the stub lives in Debian's systemd-boot-efi.
pub const DEFAULT_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// Added sections start on page boundaries (a multiple of any PE
/// SectionAlignment up to 4096, which the stub's 512 is).
const PAGE: u64 = 4096;

/// The PE facts the placement needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeLayout {
    pub image_base: u64,
    pub section_alignment: u32,
    /// First address past the last section (unaligned).
    pub end_of_sections: u64,
}

#[derive(Debug)]
pub enum UkiError {
    /// The stub is not a PE32+ image this code understands.
    Stub {
        path: PathBuf,
        why: String,
    },
    ReadStub {
        path: PathBuf,
        source: std::io::Error,
    },
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    Tool(ToolError),
}

impl fmt::Display for UkiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UkiError::Stub { path, why } => write!(f, "reading the EFI stub: {}: {why}", path.display()),
            UkiError::ReadStub { path, source } => {
                write!(f, "reading the EFI stub: {}: {source}", path.display())
            }
            UkiError::Write { path, source } => write!(f, "writing a UKI part: {}: {source}", path.display()),
            UkiError::Tool(e) => write!(f, "building the UKI: {e}"),
        }
    }
}

impl std::error::Error for UkiError {}

/// Reads the image base, section alignment and the end of the last section
/// from a PE32+ file's headers.
pub fn pe_layout(bytes: &[u8]) -> Result<PeLayout, String> {
    let u16_at = |o: usize| bytes.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if bytes.get(0..2) != Some(b"MZ") {
        return Err("no MZ header".into());
    }
    let pe = u32_at(0x3c).ok_or("truncated DOS header")? as usize;
    if bytes.get(pe..pe + 4) != Some(b"PE\0\0") {
        return Err(format!("no PE signature at offset {pe}"));
    }
    let sections = u16_at(pe + 6).ok_or("truncated COFF header")? as usize;
    let optional_size = u16_at(pe + 20).ok_or("truncated COFF header")? as usize;
    let opt = pe + 24;
    let magic = u16_at(opt).ok_or("truncated optional header")?;
    if magic != 0x20b {
        return Err(format!("optional header magic {magic:#x}, not PE32+ (0x20b)"));
    }
    let image_base = u64_at(opt + 24).ok_or("truncated optional header")?;
    let section_alignment = u32_at(opt + 32).ok_or("truncated optional header")?;
    if section_alignment == 0 || !section_alignment.is_power_of_two() || u64::from(section_alignment) > PAGE {
        return Err(format!(
            "section alignment {section_alignment} is not a power of two up to {PAGE}"
        ));
    }
    let table = opt + optional_size;
    let mut end = 0u64;
    for i in 0..sections {
        let s = table + 40 * i;
        let (virtual_size, address, raw_size) = match (u32_at(s + 8), u32_at(s + 12), u32_at(s + 16)) {
            (Some(v), Some(a), Some(r)) => (v, a, r),
            _ => return Err(format!("section table truncated at section {i}")),
        };
        end = end.max(u64::from(address) + u64::from(virtual_size.max(raw_size)));
    }
    if end == 0 {
        return Err("no sections".into());
    }
    Ok(PeLayout {
        image_base,
        section_alignment,
        end_of_sections: end,
    })
}

/// Sets a PE image's COFF TimeDateStamp to `time` and recomputes its
/// checksum: objcopy stamps the current time, which would make every build
/// differ. (sbsign recomputes the checksum when it signs.)
pub fn stamp_pe(bytes: &mut [u8], time: u32) -> Result<(), String> {
    let pe = bytes
        .get(0x3c..0x40)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("truncated DOS header")?;
    let checksum_at = pe + 24 + 64;
    if bytes.get(pe..pe + 4) != Some(b"PE\0\0") || bytes.len() < checksum_at + 4 {
        return Err("no PE header to stamp".into());
    }
    bytes[pe + 8..pe + 12].copy_from_slice(&time.to_le_bytes());
    bytes[checksum_at..checksum_at + 4].fill(0);
    let sum = pe_checksum(bytes);
    bytes[checksum_at..checksum_at + 4].copy_from_slice(&sum.to_le_bytes());
    Ok(())
}

/// The PE checksum (as imagehlp's CheckSumMappedFile): 16-bit one's
/// complement sum of the file with the checksum field zero, plus its length.
fn pe_checksum(bytes: &[u8]) -> u32 {
    let mut sum: u64 = 0;
    for pair in bytes.chunks(2) {
        let word = u64::from(pair[0]) | u64::from(*pair.get(1).unwrap_or(&0)) << 8;
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    (sum as u32).wrapping_add(bytes.len() as u32)
}

/// One section to add: its name and the file that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: &'static str,
    pub file: PathBuf,
    pub size: u64,
}

/// The virtual address of each section, in order, each on a page after the last.
pub fn place(layout: &PeLayout, sections: &[Section]) -> Vec<u64> {
    let mut next = layout.end_of_sections.div_ceil(PAGE) * PAGE;
    sections
        .iter()
        .map(|s| {
            let at = next;
            next = (at + s.size.max(1)).div_ceil(PAGE) * PAGE;
            layout.image_base + at
        })
        .collect()
}

/// objcopy's arguments for adding `sections` at `vmas` to `stub`, writing `out`.
pub fn objcopy_args(stub: &Path, out: &Path, sections: &[Section], vmas: &[u64]) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    for (s, vma) in sections.iter().zip(vmas) {
        let mut add = std::ffi::OsString::from(format!("--add-section={}=", s.name));
        add.push(&s.file);
        args.push(add);
        args.push(format!("--change-section-vma={}={vma:#x}", s.name).into());
    }
    args.push(stub.into());
    args.push(out.into());
    args
}

/// The os-release a UKI carries: systemd-boot shows PRETTY_NAME. It has no
/// `ID=` or `IMAGE_ID=` on purpose: with one, systemd-boot sorts entries by
/// version first, and a rollback to an older version could never become
/// the default; without, it sorts by file name, which the agent controls
/// (basalt_common::disk::boot_entry).
pub fn os_release(version: &str, slot: &str) -> String {
    format!("NAME=basalt\nVERSION_ID={version}\nPRETTY_NAME=\"basalt {version} (slot {slot})\"\n")
}

/// What goes into one UKI.
#[derive(Debug, Clone)]
pub struct UkiInputs<'a> {
    pub stub: &'a Path,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub cmdline: &'a str,
    pub os_release: &'a str,
    /// Holds the small sections' files while objcopy runs.
    pub work_dir: &'a Path,
    /// The PE timestamp (SOURCE_DATE_EPOCH).
    pub time: u32,
    pub out: &'a Path,
}

/// Builds a UKI with objcopy. Returns its size.
pub fn build_uki(inputs: &UkiInputs) -> Result<u64, UkiError> {
    let stub = std::fs::read(inputs.stub).map_err(|source| UkiError::ReadStub {
        path: inputs.stub.to_path_buf(),
        source,
    })?;
    let layout = pe_layout(&stub).map_err(|why| UkiError::Stub {
        path: inputs.stub.to_path_buf(),
        why,
    })?;
    let stem = inputs
        .out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "uki".into());
    let write = |suffix: &str, text: &str| {
        let path = inputs.work_dir.join(format!("{stem}.{suffix}"));
        std::fs::write(&path, text).map_err(|source| UkiError::Write {
            path: path.clone(),
            source,
        })?;
        Ok::<PathBuf, UkiError>(path)
    };
    let osrel = write("osrel", inputs.os_release)?;
    let cmdline = write("cmdline", inputs.cmdline)?;
    let size_of = |path: &Path| {
        std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|source| UkiError::Write {
                path: path.to_path_buf(),
                source,
            })
    };
    let sections = vec![
        Section {
            name: ".osrel",
            size: size_of(&osrel)?,
            file: osrel,
        },
        Section {
            name: ".cmdline",
            size: size_of(&cmdline)?,
            file: cmdline,
        },
        Section {
            name: ".initrd",
            size: size_of(inputs.initrd)?,
            file: inputs.initrd.to_path_buf(),
        },
        Section {
            name: ".linux",
            size: size_of(inputs.kernel)?,
            file: inputs.kernel.to_path_buf(),
        },
    ];
    let vmas = place(&layout, &sections);
    tools::run("objcopy", &objcopy_args(inputs.stub, inputs.out, &sections, &vmas)).map_err(UkiError::Tool)?;
    let mut bytes = std::fs::read(inputs.out).map_err(|source| UkiError::Write {
        path: inputs.out.to_path_buf(),
        source,
    })?;
    stamp_pe(&mut bytes, inputs.time).map_err(|why| UkiError::Stub {
        path: inputs.out.to_path_buf(),
        why,
    })?;
    std::fs::write(inputs.out, &bytes).map_err(|source| UkiError::Write {
        path: inputs.out.to_path_buf(),
        source,
    })?;
    Ok(bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PE32+ header with the given sections (address, virtual size, raw size).
    fn pe(base: u64, align: u32, sections: &[(u32, u32, u32)]) -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[0..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        b[0x86..0x88].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        b[0x94..0x96].copy_from_slice(&240u16.to_le_bytes());
        let opt = 0x98;
        b[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        b[opt + 24..opt + 32].copy_from_slice(&base.to_le_bytes());
        b[opt + 32..opt + 36].copy_from_slice(&align.to_le_bytes());
        for (i, (addr, vsize, raw)) in sections.iter().enumerate() {
            let s = opt + 240 + 40 * i;
            b[s + 8..s + 12].copy_from_slice(&vsize.to_le_bytes());
            b[s + 12..s + 16].copy_from_slice(&addr.to_le_bytes());
            b[s + 16..s + 20].copy_from_slice(&raw.to_le_bytes());
        }
        b
    }

    #[test]
    fn layout_of_a_stub() {
        // The last two sections of Debian's linuxx64.efi.stub (systemd 252):
        // .sbat at 0x19000 (0xe2 bytes), .sdmagic at 0x19100 (0x34 bytes).
        let stub = pe(
            0,
            512,
            &[(0x4000, 0xbff0, 0xc000), (0x19000, 0xe2, 0x200), (0x19100, 0x34, 0x200)],
        );
        let l = pe_layout(&stub).unwrap();
        assert_eq!(
            l,
            PeLayout {
                image_base: 0,
                section_alignment: 512,
                end_of_sections: 0x19300
            }
        );
        let s = |name, size| Section {
            name,
            file: PathBuf::from(name),
            size,
        };
        let sections = [
            s(".osrel", 80),
            s(".cmdline", 70),
            s(".initrd", 0x2345),
            s(".linux", 7_000_000),
        ];
        assert_eq!(place(&l, &sections), [0x1a000, 0x1b000, 0x1c000, 0x1f000]);
        let based = PeLayout {
            image_base: 0x1_0000_0000,
            ..l
        };
        assert_eq!(place(&based, &sections[..1]), [0x1_0001_a000]);
        // An empty section still gets its own page.
        assert_eq!(place(&l, &[s(".a", 0), s(".b", 1)]), [0x1a000, 0x1b000]);

        let args = objcopy_args(
            Path::new("stub"),
            Path::new("out.efi"),
            &sections[..2],
            &[0x1a000, 0x1b000],
        );
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args,
            [
                "--add-section=.osrel=.osrel",
                "--change-section-vma=.osrel=0x1a000",
                "--add-section=.cmdline=.cmdline",
                "--change-section-vma=.cmdline=0x1b000",
                "stub",
                "out.efi"
            ]
        );
    }

    #[test]
    fn layout_refuses_table() {
        let good = pe(0, 512, &[(0x1000, 0x10, 0x200)]);
        let with = |at: usize, bytes: &[u8]| {
            let mut b = good.clone();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            b
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"ELF".to_vec(), "no MZ header"),
            (with(0x80, b"PX"), "no PE signature at offset 128"),
            (with(0x98, &0x10bu16.to_le_bytes()), "magic 0x10b, not PE32+"),
            (with(0x98 + 32, &3u32.to_le_bytes()), "section alignment 3"),
            (with(0x98 + 32, &8192u32.to_le_bytes()), "section alignment 8192"),
            (with(0x86, &0u16.to_le_bytes()), "no sections"),
            (with(0x86, &100u16.to_le_bytes()), "section table truncated at section"),
            (good[..0x90].to_vec(), "truncated COFF header"),
        ];
        for (bytes, needle) in cases {
            let err = pe_layout(&bytes).unwrap_err();
            assert!(err.contains(needle), "{needle:?} in {err:?}");
        }
    }

    #[test]
    fn stamp_sets_time_and_checksum() {
        let mut b = pe(0, 512, &[(0x1000, 0x10, 0x200)]);
        b[0x88..0x8c].copy_from_slice(&0x6b0f_3570u32.to_le_bytes());
        stamp_pe(&mut b, 0).unwrap();
        assert_eq!(&b[0x88..0x8c], &[0, 0, 0, 0]);
        // The checksum of this buffer as imagehlp computes it: one's
        // complement sum of its 16-bit words (0x5a4d + 0x80 + 0x4550 + 1 +
        // 0xf0 + 0x20b + 0x200 + 0x10 + 0x1000 + 0x200), plus 0x400 bytes.
        let want: u32 = 0x5a4d + 0x80 + 0x4550 + 1 + 0xf0 + 0x20b + 0x200 + 0x10 + 0x1000 + 0x200 + 0x400;
        assert_eq!(u32::from_le_bytes(b[0x98 + 64..0x98 + 68].try_into().unwrap()), want);
        stamp_pe(&mut b, 7).unwrap();
        assert_eq!(&b[0x88..0x8c], &[7, 0, 0, 0]);
        assert!(stamp_pe(&mut b"MZ".to_vec(), 0).is_err());
        assert!(stamp_pe(&mut b[..0x90].to_vec(), 0).is_err());
    }

    #[test]
    fn os_release_names_the_slot() {
        assert_eq!(
            os_release("0.1.0", "A"),
            "NAME=basalt\nVERSION_ID=0.1.0\nPRETTY_NAME=\"basalt 0.1.0 (slot A)\"\n"
        );
    }

    /// The real stub, when systemd-boot-efi is installed: its sections end
    /// where objdump says (.sdmagic at 0x19100, 0x34 bytes in a 0x200 raw block).
    #[test]
    fn debian_stub_when_present() {
        let Ok(bytes) = std::fs::read(DEFAULT_STUB) else {
            eprintln!("{DEFAULT_STUB} not installed (systemd-boot-efi): checked by the disk host test");
            return;
        };
        let l = pe_layout(&bytes).unwrap();
        assert_eq!(l.section_alignment, 512);
        assert!(l.end_of_sections > 0x4000, "{l:?}");
    }
}
