//! Reads the `.modinfo` section of a kernel module (`.ko`): an ELF64
//! little-endian relocatable object whose `.modinfo` holds NUL-separated
//! `key=value` strings (`name=`, `depends=`, `vermagic=`, `alias=`...).
//!
//! Debian ships no `modules.dep`; each module's `depends=` is the only record
//! of what must be loaded first. The input is untrusted bytes (and fuzzed):
//! every offset and length is checked before it is used.

use std::fmt;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_REL: u16 = 1;
const ELF64_HEADER_LEN: usize = 64;
const ELF64_SHDR_LEN: usize = 64;
const SHT_NOBITS: u32 = 8;
/// `e_shstrndx` value meaning "the real index is in section 0's `sh_link`".
const SHN_XINDEX: u16 = 0xffff;
const MODINFO: &[u8] = b".modinfo";

/// Why a module's `.modinfo` could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModinfoError {
    /// Shorter than the thing being read; `what` names it.
    Truncated {
        what: &'static str,
        need: u64,
        len: usize,
    },
    NotElf,
    NotElf64,
    NotLittleEndian,
    /// Modules are relocatable objects (ET_REL); this is another ELF type.
    NotRelocatable {
        e_type: u16,
    },
    BadSectionHeaderSize {
        size: u16,
    },
    NoSections,
    BadStringTableIndex {
        index: u32,
        sections: u64,
    },
    /// A section name offset points outside the string table or lacks a NUL.
    BadSectionName {
        section: u64,
    },
    NoModinfo,
    /// `.modinfo` is NOBITS: it has no bytes in the file.
    ModinfoEmpty,
    /// An entry in `.modinfo` without `=`, or with a key that is not an identifier.
    BadEntry {
        offset: usize,
        entry: String,
    },
}

impl fmt::Display for ModinfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModinfoError::Truncated { what, need, len } => {
                write!(f, "truncated: {what} needs {need} bytes, the file has {len}")
            }
            ModinfoError::NotElf => write!(f, "not an ELF file"),
            ModinfoError::NotElf64 => write!(f, "not a 64-bit ELF file"),
            ModinfoError::NotLittleEndian => write!(f, "not a little-endian ELF file"),
            ModinfoError::NotRelocatable { e_type } => {
                write!(f, "ELF type {e_type} is not a relocatable object (a .ko is type 1)")
            }
            ModinfoError::BadSectionHeaderSize { size } => {
                write!(f, "section headers are {size} bytes, expected {ELF64_SHDR_LEN}")
            }
            ModinfoError::NoSections => write!(f, "no section header table"),
            ModinfoError::BadStringTableIndex { index, sections } => write!(
                f,
                "section name table index {index} is out of range ({sections} sections)"
            ),
            ModinfoError::BadSectionName { section } => {
                write!(f, "section {section} has a name outside the section name table")
            }
            ModinfoError::NoModinfo => write!(f, "no .modinfo section"),
            ModinfoError::ModinfoEmpty => write!(f, ".modinfo section has no file data"),
            ModinfoError::BadEntry { offset, entry } => {
                write!(f, ".modinfo entry at offset {offset} is not key=value: {entry:?}")
            }
        }
    }
}

impl std::error::Error for ModinfoError {}

/// The `key=value` entries of a module's `.modinfo`, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModInfo {
    entries: Vec<(String, String)>,
}

impl ModInfo {
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    /// The first value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn name(&self) -> Option<&str> {
        self.get("name")
    }

    pub fn vermagic(&self) -> Option<&str> {
        self.get("vermagic")
    }

    /// The modules this one needs loaded first. Empty when `depends=` is
    /// empty or absent.
    pub fn depends(&self) -> Vec<&str> {
        match self.get("depends") {
            None => Vec::new(),
            Some(list) => list.split(',').filter(|d| !d.is_empty()).collect(),
        }
    }
}

/// Finds `.modinfo` in a module's bytes and splits it into entries.
pub fn parse_modinfo(elf: &[u8]) -> Result<ModInfo, ModinfoError> {
    let section = modinfo_section(elf)?;
    split_entries(section).map(|entries| ModInfo { entries })
}

/// Splits a `.modinfo` body: NUL-separated `key=value` strings, with runs of
/// NULs (alignment padding) between them. Values that are not UTF-8 are
/// kept lossily: only `name`, `depends` and `vermagic` are read, and those
/// are checked where they are used.
pub fn split_entries(section: &[u8]) -> Result<Vec<(String, String)>, ModinfoError> {
    let mut entries = Vec::new();
    let mut offset = 0;
    for raw in section.split(|&b| b == 0) {
        let start = offset;
        offset += raw.len() + 1;
        if raw.is_empty() {
            continue;
        }
        let bad = || ModinfoError::BadEntry {
            offset: start,
            entry: String::from_utf8_lossy(raw).into_owned(),
        };
        let eq = raw.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        let key = &raw[..eq];
        let key_ok = !key.is_empty() && key.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
        if !key_ok {
            return Err(bad());
        }
        let key = String::from_utf8_lossy(key).into_owned();
        let value = String::from_utf8_lossy(&raw[eq + 1..]).into_owned();
        entries.push((key, value));
    }
    Ok(entries)
}

/// The file bytes of the `.modinfo` section.
fn modinfo_section(elf: &[u8]) -> Result<&[u8], ModinfoError> {
    if elf.len() < 4 || &elf[..4] != ELF_MAGIC {
        return Err(ModinfoError::NotElf);
    }
    let header = slice(elf, 0, ELF64_HEADER_LEN as u64, "ELF header")?;
    if header[4] != ELFCLASS64 {
        return Err(ModinfoError::NotElf64);
    }
    if header[5] != ELFDATA2LSB {
        return Err(ModinfoError::NotLittleEndian);
    }
    let e_type = u16_at(header, 16);
    if e_type != ET_REL {
        return Err(ModinfoError::NotRelocatable { e_type });
    }
    let shoff = u64_at(header, 0x28);
    let shentsize = u16_at(header, 0x3a);
    let shnum = u16_at(header, 0x3c);
    let shstrndx = u16_at(header, 0x3e);
    if shoff == 0 {
        return Err(ModinfoError::NoSections);
    }
    if usize::from(shentsize) != ELF64_SHDR_LEN {
        return Err(ModinfoError::BadSectionHeaderSize { size: shentsize });
    }
    // With 0xff00 sections or more the real counts live in section 0.
    let first = SectionHeader::read(elf, shoff, 0)?;
    let count = if shnum == 0 { first.size } else { u64::from(shnum) };
    let strndx = if shstrndx == SHN_XINDEX {
        first.link
    } else {
        u32::from(shstrndx)
    };
    if count == 0 {
        return Err(ModinfoError::NoSections);
    }
    if u64::from(strndx) >= count {
        return Err(ModinfoError::BadStringTableIndex {
            index: strndx,
            sections: count,
        });
    }
    // The table must fit in the file before we walk it.
    let table_len = count
        .checked_mul(ELF64_SHDR_LEN as u64)
        .ok_or(ModinfoError::Truncated {
            what: "section header table",
            need: u64::MAX,
            len: elf.len(),
        })?;
    slice(elf, shoff, table_len, "section header table")?;

    let strtab_header = SectionHeader::read(elf, shoff, u64::from(strndx))?;
    let strtab = strtab_header.data(elf, "section name table")?;
    for index in 0..count {
        let section = SectionHeader::read(elf, shoff, index)?;
        let name = section_name(strtab, section.name).ok_or(ModinfoError::BadSectionName { section: index })?;
        if name == MODINFO {
            if section.kind == SHT_NOBITS {
                return Err(ModinfoError::ModinfoEmpty);
            }
            return section.data(elf, ".modinfo section");
        }
    }
    Err(ModinfoError::NoModinfo)
}

/// The fields of an ELF64 section header this parser uses.
struct SectionHeader {
    name: u32,
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
}

impl SectionHeader {
    fn read(elf: &[u8], shoff: u64, index: u64) -> Result<Self, ModinfoError> {
        let at = index
            .checked_mul(ELF64_SHDR_LEN as u64)
            .and_then(|o| o.checked_add(shoff))
            .ok_or(ModinfoError::Truncated {
                what: "section header",
                need: u64::MAX,
                len: elf.len(),
            })?;
        let h = slice(elf, at, ELF64_SHDR_LEN as u64, "section header")?;
        Ok(SectionHeader {
            name: u32_at(h, 0),
            kind: u32_at(h, 4),
            offset: u64_at(h, 24),
            size: u64_at(h, 32),
            link: u32_at(h, 40),
        })
    }

    fn data<'a>(&self, elf: &'a [u8], what: &'static str) -> Result<&'a [u8], ModinfoError> {
        slice(elf, self.offset, self.size, what)
    }
}

/// The NUL-terminated name at `offset` in the section name table.
fn section_name(strtab: &[u8], offset: u32) -> Option<&[u8]> {
    let rest = strtab.get(usize::try_from(offset).ok()?..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    Some(&rest[..end])
}

/// `len` bytes at `offset`, or a Truncated error naming `what`.
fn slice<'a>(bytes: &'a [u8], offset: u64, len: u64, what: &'static str) -> Result<&'a [u8], ModinfoError> {
    let truncated = || ModinfoError::Truncated {
        what,
        need: offset.saturating_add(len),
        len: bytes.len(),
    };
    let start = usize::try_from(offset).map_err(|_| truncated())?;
    let len = usize::try_from(len).map_err(|_| truncated())?;
    let end = start.checked_add(len).ok_or_else(truncated)?;
    bytes.get(start..end).ok_or_else(truncated)
}

// The callers slice a whole header first, so these offsets are in range.
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(raw)
}

/// Builds minimal ELF64 relocatable objects: a null section, the given
/// sections, and a section name table last. For tests and fuzz seeds; the
/// result is nothing a kernel would load.
pub mod synthetic {
    /// One section to place in the object.
    pub struct Section<'a> {
        pub name: &'a str,
        pub kind: u32,
        pub data: &'a [u8],
    }

    pub const PROGBITS: u32 = 1;

    /// An object holding `sections`, in order, after the null section.
    pub fn elf(sections: &[Section]) -> Vec<u8> {
        let mut names = vec![0u8];
        let mut name_offsets = Vec::new();
        for s in sections {
            name_offsets.push(names.len() as u32);
            names.extend_from_slice(s.name.as_bytes());
            names.push(0);
        }
        let shstrtab_name = names.len() as u32;
        names.extend_from_slice(b".shstrtab\0");

        let mut out = vec![0u8; 64];
        let mut placed = Vec::new();
        for s in sections {
            placed.push((out.len() as u64, s.data.len() as u64));
            out.extend_from_slice(s.data);
        }
        let names_at = out.len() as u64;
        out.extend_from_slice(&names);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let shoff = out.len() as u64;
        let count = sections.len() as u16 + 2;
        out.extend_from_slice(&[0u8; 64]); // section 0
        for (i, s) in sections.iter().enumerate() {
            out.extend_from_slice(&shdr(name_offsets[i], s.kind, placed[i].0, placed[i].1));
        }
        out.extend_from_slice(&shdr(shstrtab_name, 3, names_at, names.len() as u64));

        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // ELFCLASS64
        out[5] = 1; // little-endian
        out[6] = 1; // EV_CURRENT
        out[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
        out[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        out[0x34..0x36].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        out[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
        out[0x3c..0x3e].copy_from_slice(&count.to_le_bytes());
        out[0x3e..0x40].copy_from_slice(&(count - 1).to_le_bytes());
        out
    }

    fn shdr(name: u32, kind: u32, offset: u64, size: u64) -> [u8; 64] {
        let mut h = [0u8; 64];
        h[0..4].copy_from_slice(&name.to_le_bytes());
        h[4..8].copy_from_slice(&kind.to_le_bytes());
        h[24..32].copy_from_slice(&offset.to_le_bytes());
        h[32..40].copy_from_slice(&size.to_le_bytes());
        h[48..56].copy_from_slice(&1u64.to_le_bytes()); // sh_addralign
        h
    }

    /// A module with the given `.modinfo` body between two other sections.
    pub fn module(modinfo: &[u8]) -> Vec<u8> {
        elf(&[
            Section {
                name: ".text",
                kind: PROGBITS,
                data: &[0xc3; 5],
            },
            Section {
                name: ".modinfo",
                kind: PROGBITS,
                data: modinfo,
            },
            Section {
                name: ".data",
                kind: PROGBITS,
                data: &[1, 2, 3],
            },
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::synthetic::{self, Section, PROGBITS};
    use super::*;

    const VIRTIO: &[u8] = b"license=GPL\0depends=virtio_ring\0\0\0retpoline=Y\0intree=Y\0name=virtio\0vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions \0";

    #[test]
    fn reads_fields_from_a_synthetic_module() {
        let info = parse_modinfo(&synthetic::module(VIRTIO)).unwrap();
        assert_eq!(info.name(), Some("virtio"));
        assert_eq!(info.depends(), ["virtio_ring"]);
        assert_eq!(
            info.vermagic(),
            Some("6.1.0-56-amd64 SMP preempt mod_unload modversions ")
        );
        assert_eq!(info.get("license"), Some("GPL"));
        assert_eq!(info.entries().len(), 6);
    }

    #[test]
    fn depends_table() {
        let cases: &[(&[u8], &[&str])] = &[
            (b"name=a\0depends=\0", &[]),
            (b"name=a\0", &[]),
            (b"depends=x\0", &["x"]),
            (
                b"depends=virtio_ring,virtio_pci_modern_dev,virtio_pci_legacy_dev,virtio\0",
                &[
                    "virtio_ring",
                    "virtio_pci_modern_dev",
                    "virtio_pci_legacy_dev",
                    "virtio",
                ],
            ),
            (b"depends=a,,b,\0", &["a", "b"]),
            (b"depends=a\0depends=b\0", &["a"]),
        ];
        for (section, want) in cases {
            let info = ModInfo {
                entries: split_entries(section).unwrap(),
            };
            assert_eq!(info.depends(), *want, "{:?}", String::from_utf8_lossy(section));
        }
    }

    #[test]
    fn entry_errors() {
        let cases: &[(&[u8], ModinfoError)] = &[
            (
                b"name=a\0garbage\0",
                ModinfoError::BadEntry {
                    offset: 7,
                    entry: "garbage".into(),
                },
            ),
            (
                b"\0\0=x\0",
                ModinfoError::BadEntry {
                    offset: 2,
                    entry: "=x".into(),
                },
            ),
            (
                b"a b=c\0",
                ModinfoError::BadEntry {
                    offset: 0,
                    entry: "a b=c".into(),
                },
            ),
        ];
        for (section, err) in cases {
            assert_eq!(split_entries(section).unwrap_err(), *err);
        }
        // A non-UTF-8 value (an author's name in Latin-1) is not an error.
        let entries = split_entries(b"author=Jos\xe9\0name=x\0").unwrap();
        assert_eq!(entries[1], ("name".to_string(), "x".to_string()));
    }

    #[test]
    fn header_errors() {
        let good = synthetic::module(VIRTIO);
        let with = |at: usize, bytes: &[u8]| {
            let mut v = good.clone();
            v[at..at + bytes.len()].copy_from_slice(bytes);
            v
        };
        let shoff = u64_at(&good, 0x28) as usize;
        let cases: Vec<(Vec<u8>, ModinfoError)> = vec![
            (Vec::new(), ModinfoError::NotElf),
            (b"\x7fEL".to_vec(), ModinfoError::NotElf),
            (b"#!/bin/sh\n".to_vec(), ModinfoError::NotElf),
            (
                good[..40].to_vec(),
                ModinfoError::Truncated {
                    what: "ELF header",
                    need: 64,
                    len: 40,
                },
            ),
            (with(4, &[1]), ModinfoError::NotElf64),
            (with(5, &[2]), ModinfoError::NotLittleEndian),
            (with(16, &[3, 0]), ModinfoError::NotRelocatable { e_type: 3 }),
            (with(0x3a, &[40, 0]), ModinfoError::BadSectionHeaderSize { size: 40 }),
            (with(0x28, &[0; 8]), ModinfoError::NoSections),
            (
                with(0x3e, &[9, 0]),
                ModinfoError::BadStringTableIndex { index: 9, sections: 5 },
            ),
            (
                good[..shoff + 100].to_vec(),
                ModinfoError::Truncated {
                    what: "section header table",
                    need: shoff as u64 + 5 * 64,
                    len: shoff + 100,
                },
            ),
            (
                with(0x28, &u64::MAX.to_le_bytes()),
                ModinfoError::Truncated {
                    what: "section header",
                    need: u64::MAX,
                    len: good.len(),
                },
            ),
            // .modinfo's sh_size made enormous.
            (
                with(shoff + 2 * 64 + 32, &u64::MAX.to_le_bytes()),
                ModinfoError::Truncated {
                    what: ".modinfo section",
                    need: u64::MAX,
                    len: good.len(),
                },
            ),
            // .modinfo's name offset pointed far past the name table.
            (
                with(shoff + 2 * 64, &[0xff, 0xff, 0, 0]),
                ModinfoError::BadSectionName { section: 2 },
            ),
            // .modinfo made NOBITS.
            (with(shoff + 2 * 64 + 4, &[8, 0, 0, 0]), ModinfoError::ModinfoEmpty),
        ];
        for (bytes, err) in cases {
            assert_eq!(parse_modinfo(&bytes).unwrap_err(), err, "{err}");
        }
    }

    #[test]
    fn no_modinfo() {
        let elf = synthetic::elf(&[Section {
            name: ".text",
            kind: PROGBITS,
            data: b"x",
        }]);
        assert_eq!(parse_modinfo(&elf).unwrap_err(), ModinfoError::NoModinfo);
    }

    #[test]
    fn extended_section_numbering() {
        // e_shnum = 0 and e_shstrndx = SHN_XINDEX: counts come from section 0.
        let mut elf = synthetic::module(VIRTIO);
        let shoff = u64_at(&elf, 0x28) as usize;
        elf[0x3c..0x3e].copy_from_slice(&0u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&SHN_XINDEX.to_le_bytes());
        elf[shoff + 32..shoff + 40].copy_from_slice(&5u64.to_le_bytes());
        elf[shoff + 40..shoff + 44].copy_from_slice(&4u32.to_le_bytes());
        assert_eq!(parse_modinfo(&elf).unwrap().name(), Some("virtio"));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let good = synthetic::module(VIRTIO);
        for len in 0..good.len() {
            assert!(parse_modinfo(&good[..len]).is_err(), "prefix of {len} bytes parsed");
        }
        // Flipping any single byte must not panic either.
        for at in 0..good.len() {
            let mut v = good.clone();
            v[at] ^= 0xff;
            let _ = parse_modinfo(&v);
        }
    }
}
