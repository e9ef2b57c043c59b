//! The GUID Partition Table (UEFI 2.10 §5.3) with 512-byte sectors: a
//! protective MBR at LBA 0, the primary header at LBA 1 and its 128 entries
//! at LBA 2..33, the backup entries and header in the last 33 sectors.
//!
//! [`plan`] lays partitions out on 1 MiB boundaries, [`build`] turns a table
//! into the bytes of both copies, and [`parse`] reads the primary copy back
//! (how the node finds its partitions without trusting the kernel's names).

use super::crc32::crc32;
use std::fmt;

pub const SECTOR_SIZE: u64 = 512;
/// Entries in the array basalt writes (the minimum UEFI allows).
pub const ENTRY_COUNT: u32 = 128;
pub const ENTRY_SIZE: usize = 128;
/// 128 entries of 128 bytes.
pub const ENTRY_ARRAY_SECTORS: u64 = 32;
pub const HEADER_SIZE: usize = 92;
/// Partitions start on 1 MiB boundaries, as fdisk and sgdisk place them.
pub const ALIGN_SECTORS: u64 = 2048;
/// Longest name: 36 UTF-16 code units.
pub const NAME_UNITS: usize = 36;
const SIGNATURE: &[u8; 8] = b"EFI PART";
const REVISION: u32 = 0x0001_0000;
/// The parser refuses entry arrays larger than this (a header is outside input).
const MAX_ENTRY_ARRAY_BYTES: usize = 1 << 20;

/// A GUID, held in its on-disk byte order (first three fields little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid([u8; 16]);

impl Guid {
    pub const ZERO: Guid = Guid([0; 16]);

    /// From the fields of the canonical text form `d1-d2-d3-d4[0..2]-d4[2..8]`.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5], d4[6], d4[7],
        ])
    }

    pub const fn from_disk_bytes(bytes: [u8; 16]) -> Guid {
        Guid(bytes)
    }

    pub fn disk_bytes(&self) -> [u8; 16] {
        self.0
    }

    /// Parses `C12A7328-F81F-11D2-BA4B-00A0C93EC93B` (either case).
    pub fn parse(text: &str) -> Option<Guid> {
        let groups: Vec<&str> = text.split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lens != [8, 4, 4, 4, 12] {
            return None;
        }
        let hex = crate::hex::decode(&groups.concat())?;
        let d1 = u32::from_be_bytes(hex[0..4].try_into().ok()?);
        let d2 = u16::from_be_bytes(hex[4..6].try_into().ok()?);
        let d3 = u16::from_be_bytes(hex[6..8].try_into().ok()?);
        Some(Guid::from_fields(d1, d2, d3, hex[8..16].try_into().ok()?))
    }

    /// A random-looking (version 4, RFC 4122 variant) GUID that depends only
    /// on `seed` and `label`, so the same inputs give the same disk.
    pub fn derive(seed: &[u8], label: &str) -> Guid {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"basalt gpt guid\0");
        ctx.update(label.as_bytes());
        ctx.update(b"\0");
        ctx.update(seed);
        let digest = ctx.finish();
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest.as_ref()[..16]);
        // Byte 7 is the high byte of the little-endian third field.
        b[7] = (b[7] & 0x0F) | 0x40;
        b[8] = (b[8] & 0x3F) | 0x80;
        Guid(b)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// Partition type GUIDs basalt uses (UEFI, and the Discoverable Partitions Specification).
pub mod types {
    use super::Guid;
    /// EFI System Partition.
    pub const ESP: Guid = Guid::from_fields(
        0xC12A7328,
        0xF81F,
        0x11D2,
        [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B],
    );
    /// Root partition, x86-64.
    pub const ROOT_X86_64: Guid = Guid::from_fields(
        0x4F68BCE3,
        0xE8CD,
        0x4DB1,
        [0x96, 0xE7, 0xFB, 0xCA, 0xF9, 0x84, 0xB7, 0x09],
    );
    /// Generic Linux data.
    pub const LINUX_DATA: Guid = Guid::from_fields(
        0x0FC63DAF,
        0x8483,
        0x4772,
        [0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4],
    );
    /// `/var` (the Discoverable Partitions Specification's "Variable Data").
    pub const VAR: Guid = Guid::from_fields(
        0x4D21B016,
        0xB534,
        0x45C2,
        [0xA9, 0xFB, 0x5C, 0x16, 0xE0, 0x91, 0xFD, 0x2D],
    );
}

/// One partition: where it is and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub type_guid: Guid,
    pub unique_guid: Guid,
    /// The PARTLABEL, at most 36 UTF-16 code units.
    pub name: String,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    pub attributes: u64,
}

impl Partition {
    pub fn offset_bytes(&self) -> u64 {
        self.first_lba * SECTOR_SIZE
    }

    pub fn size_bytes(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR_SIZE
    }
}

/// A whole table: the disk's GUID and size, and the partitions in entry order
/// (entry i is partition number i + 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpt {
    pub disk_guid: Guid,
    pub total_sectors: u64,
    pub partitions: Vec<Partition>,
}

impl Gpt {
    pub fn first_usable_lba(&self) -> u64 {
        2 + ENTRY_ARRAY_SECTORS
    }

    pub fn last_usable_lba(&self) -> u64 {
        self.total_sectors.saturating_sub(2 + ENTRY_ARRAY_SECTORS)
    }

    /// The partition with this PARTLABEL, and its number (1-based).
    pub fn find(&self, name: &str) -> Option<(u32, &Partition)> {
        self.partitions
            .iter()
            .enumerate()
            .find(|(_, p)| p.name == name)
            .map(|(i, p)| (i as u32 + 1, p))
    }
}

/// What [`plan`] lays out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    pub name: String,
    pub type_guid: Guid,
    pub unique_guid: Guid,
    /// A multiple of 512.
    pub size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GptError {
    /// A partition size that is zero or not whole sectors.
    BadSize {
        name: String,
        size: u64,
    },
    NameTooLong {
        name: String,
    },
    BadName {
        name: String,
    },
    TooManyPartitions(usize),
    /// A partition outside the usable sectors, overlapping another, or backwards.
    BadExtent {
        name: String,
        why: String,
    },
    ZeroType {
        name: String,
    },
    /// The bytes given do not reach what the header says is there.
    Short {
        what: &'static str,
        need: u64,
        have: u64,
    },
    BadSignature,
    BadHeaderSize(u32),
    HeaderCrc {
        stored: u32,
        computed: u32,
    },
    WrongLba {
        stored: u64,
        expected: u64,
    },
    BadEntrySize(u32),
    EntryArrayTooLarge {
        count: u32,
        size: u32,
    },
    EntriesCrc {
        stored: u32,
        computed: u32,
    },
    BadEntryName {
        number: u32,
    },
    DiskTooLarge,
}

impl fmt::Display for GptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GptError::BadSize { name, size } => {
                write!(
                    f,
                    "laying out the GPT: partition {name}: size {size} is not a positive multiple of 512"
                )
            }
            GptError::NameTooLong { name } => {
                write!(
                    f,
                    "laying out the GPT: partition {name}: name longer than {NAME_UNITS} UTF-16 units"
                )
            }
            GptError::BadName { name } => {
                write!(f, "laying out the GPT: partition {name:?}: empty name or a NUL in it")
            }
            GptError::TooManyPartitions(n) => {
                write!(f, "laying out the GPT: {n} partitions, at most {ENTRY_COUNT} fit")
            }
            GptError::BadExtent { name, why } => write!(f, "laying out the GPT: partition {name}: {why}"),
            GptError::ZeroType { name } => {
                write!(
                    f,
                    "laying out the GPT: partition {name}: the zero type GUID marks an unused entry"
                )
            }
            GptError::Short { what, need, have } => {
                write!(f, "reading the GPT: {what}: needs {need} bytes, only {have} given")
            }
            GptError::BadSignature => write!(f, "reading the GPT: header: no \"EFI PART\" signature"),
            GptError::BadHeaderSize(n) => write!(f, "reading the GPT: header: size {n} is not 92..=512"),
            GptError::HeaderCrc { stored, computed } => write!(
                f,
                "reading the GPT: header: CRC32 {stored:08x} stored, {computed:08x} computed"
            ),
            GptError::WrongLba { stored, expected } => {
                write!(
                    f,
                    "reading the GPT: header: says it is at LBA {stored}, read from LBA {expected}"
                )
            }
            GptError::BadEntrySize(n) => {
                write!(f, "reading the GPT: header: entry size {n} is not a multiple of 128")
            }
            GptError::EntryArrayTooLarge { count, size } => write!(
                f,
                "reading the GPT: header: {count} entries of {size} bytes is more than {MAX_ENTRY_ARRAY_BYTES} bytes"
            ),
            GptError::EntriesCrc { stored, computed } => write!(
                f,
                "reading the GPT: entry array: CRC32 {stored:08x} stored, {computed:08x} computed"
            ),
            GptError::BadEntryName { number } => {
                write!(f, "reading the GPT: partition {number}: name is not UTF-16")
            }
            GptError::DiskTooLarge => write!(f, "laying out the GPT: the disk size overflows"),
        }
    }
}

impl std::error::Error for GptError {}

/// Places `specs` in order, each on a 1 MiB boundary starting at 1 MiB, and
/// sizes the disk to end 1 MiB after the last one (room for the backup GPT).
pub fn plan(disk_guid: Guid, specs: &[PartitionSpec]) -> Result<Gpt, GptError> {
    let mut partitions = Vec::with_capacity(specs.len());
    let mut next = ALIGN_SECTORS;
    for s in specs {
        if s.size_bytes == 0 || !s.size_bytes.is_multiple_of(SECTOR_SIZE) {
            return Err(GptError::BadSize {
                name: s.name.clone(),
                size: s.size_bytes,
            });
        }
        let sectors = s.size_bytes / SECTOR_SIZE;
        let last = next.checked_add(sectors - 1).ok_or(GptError::DiskTooLarge)?;
        partitions.push(Partition {
            type_guid: s.type_guid,
            unique_guid: s.unique_guid,
            name: s.name.clone(),
            first_lba: next,
            last_lba: last,
            attributes: 0,
        });
        next = align_up(last + 1, ALIGN_SECTORS).ok_or(GptError::DiskTooLarge)?;
    }
    let total_sectors = next.checked_add(ALIGN_SECTORS).ok_or(GptError::DiskTooLarge)?;
    // Every offset on the disk must fit in a u64 of bytes, not only of sectors.
    total_sectors.checked_mul(SECTOR_SIZE).ok_or(GptError::DiskTooLarge)?;
    let gpt = Gpt {
        disk_guid,
        total_sectors,
        partitions,
    };
    check(&gpt)?;
    Ok(gpt)
}

fn align_up(n: u64, to: u64) -> Option<u64> {
    n.checked_add(to - 1).map(|v| v / to * to)
}

/// Both copies of a table, ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptBytes {
    /// LBA 0..=33: protective MBR, primary header, primary entries.
    pub primary: Vec<u8>,
    /// The last 33 sectors: backup entries, then the backup header.
    pub backup: Vec<u8>,
    /// Where `backup` starts.
    pub backup_lba: u64,
}

/// Builds the protective MBR and both GPT copies for `gpt`.
pub fn build(gpt: &Gpt) -> Result<GptBytes, GptError> {
    check(gpt)?;
    let entries = entry_array(gpt);
    let entries_crc = crc32(&entries);
    let last = gpt.total_sectors - 1;
    let backup_entries_lba = gpt.total_sectors - 1 - ENTRY_ARRAY_SECTORS;

    let mut primary = protective_mbr(gpt.total_sectors);
    primary.extend_from_slice(&header(gpt, 1, last, 2, entries_crc));
    primary.extend_from_slice(&entries);

    let mut backup = entries;
    backup.extend_from_slice(&header(gpt, last, 1, backup_entries_lba, entries_crc));
    Ok(GptBytes {
        primary,
        backup,
        backup_lba: backup_entries_lba,
    })
}

fn check(gpt: &Gpt) -> Result<(), GptError> {
    if gpt.partitions.len() > ENTRY_COUNT as usize {
        return Err(GptError::TooManyPartitions(gpt.partitions.len()));
    }
    let min_sectors = 1 + 2 * (1 + ENTRY_ARRAY_SECTORS) + 1;
    let (first, last) = (gpt.first_usable_lba(), gpt.last_usable_lba());
    for (i, p) in gpt.partitions.iter().enumerate() {
        let bad = |why: String| {
            Err(GptError::BadExtent {
                name: p.name.clone(),
                why,
            })
        };
        if p.name.is_empty() || p.name.contains('\0') {
            return Err(GptError::BadName { name: p.name.clone() });
        }
        if p.name.encode_utf16().count() > NAME_UNITS {
            return Err(GptError::NameTooLong { name: p.name.clone() });
        }
        if p.type_guid == Guid::ZERO {
            return Err(GptError::ZeroType { name: p.name.clone() });
        }
        if gpt.total_sectors < min_sectors {
            return bad(format!(
                "the disk has {} sectors, fewer than a GPT needs",
                gpt.total_sectors
            ));
        }
        if p.first_lba > p.last_lba {
            return bad(format!("first LBA {} is after last LBA {}", p.first_lba, p.last_lba));
        }
        if p.first_lba < first || p.last_lba > last {
            return bad(format!(
                "LBA {}..={} is outside the usable {first}..={last}",
                p.first_lba, p.last_lba
            ));
        }
        if let Some(o) = gpt.partitions[..i]
            .iter()
            .find(|o| o.first_lba <= p.last_lba && p.first_lba <= o.last_lba)
        {
            return bad(format!("overlaps partition {}", o.name));
        }
    }
    Ok(())
}

fn protective_mbr(total_sectors: u64) -> Vec<u8> {
    let mut mbr = vec![0u8; SECTOR_SIZE as usize];
    let rec = &mut mbr[446..462];
    rec[0] = 0x00; // not bootable
    rec[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
    rec[4] = 0xEE; // GPT protective
    rec[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    rec[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = u32::try_from(total_sectors - 1).unwrap_or(u32::MAX);
    rec[12..16].copy_from_slice(&size.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    mbr
}

fn header(gpt: &Gpt, my_lba: u64, alternate_lba: u64, entries_lba: u64, entries_crc: u32) -> Vec<u8> {
    let mut h = vec![0u8; SECTOR_SIZE as usize];
    h[0..8].copy_from_slice(SIGNATURE);
    h[8..12].copy_from_slice(&REVISION.to_le_bytes());
    h[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
    h[24..32].copy_from_slice(&my_lba.to_le_bytes());
    h[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
    h[40..48].copy_from_slice(&gpt.first_usable_lba().to_le_bytes());
    h[48..56].copy_from_slice(&gpt.last_usable_lba().to_le_bytes());
    h[56..72].copy_from_slice(&gpt.disk_guid.0);
    h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    h[80..84].copy_from_slice(&ENTRY_COUNT.to_le_bytes());
    h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
    h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
    let crc = crc32(&h[..HEADER_SIZE]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

fn entry_array(gpt: &Gpt) -> Vec<u8> {
    let mut out = vec![0u8; ENTRY_COUNT as usize * ENTRY_SIZE];
    for (p, e) in gpt.partitions.iter().zip(out.chunks_exact_mut(ENTRY_SIZE)) {
        e[0..16].copy_from_slice(&p.type_guid.0);
        e[16..32].copy_from_slice(&p.unique_guid.0);
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
        for (i, unit) in p.name.encode_utf16().enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
    }
    out
}

/// A GPT header as read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub disk_guid: Guid,
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
}

impl Header {
    /// Bytes of the entry array this header describes.
    pub fn entry_array_bytes(&self) -> usize {
        self.entry_count as usize * self.entry_size as usize
    }
}

/// Parses and checks the header in `sector`, which was read from LBA `lba`.
pub fn parse_header(sector: &[u8], lba: u64) -> Result<Header, GptError> {
    if sector.len() < HEADER_SIZE {
        return Err(GptError::Short {
            what: "header",
            need: HEADER_SIZE as u64,
            have: sector.len() as u64,
        });
    }
    if &sector[0..8] != SIGNATURE {
        return Err(GptError::BadSignature);
    }
    let u32_at = |o: usize| u32::from_le_bytes(sector[o..o + 4].try_into().unwrap_or([0; 4]));
    let u64_at = |o: usize| u64::from_le_bytes(sector[o..o + 8].try_into().unwrap_or([0; 8]));
    let size = u32_at(12);
    if !(HEADER_SIZE as u32..=SECTOR_SIZE as u32).contains(&size) || size as usize > sector.len() {
        return Err(GptError::BadHeaderSize(size));
    }
    let mut copy = sector[..size as usize].to_vec();
    copy[16..20].fill(0);
    let (stored, computed) = (u32_at(16), crc32(&copy));
    if stored != computed {
        return Err(GptError::HeaderCrc { stored, computed });
    }
    let my_lba = u64_at(24);
    if my_lba != lba {
        return Err(GptError::WrongLba {
            stored: my_lba,
            expected: lba,
        });
    }
    let (entry_count, entry_size) = (u32_at(80), u32_at(84));
    if entry_size == 0 || !entry_size.is_multiple_of(ENTRY_SIZE as u32) {
        return Err(GptError::BadEntrySize(entry_size));
    }
    if u64::from(entry_count) * u64::from(entry_size) > MAX_ENTRY_ARRAY_BYTES as u64 {
        return Err(GptError::EntryArrayTooLarge {
            count: entry_count,
            size: entry_size,
        });
    }
    let mut disk_guid = [0u8; 16];
    disk_guid.copy_from_slice(&sector[56..72]);
    Ok(Header {
        my_lba,
        alternate_lba: u64_at(32),
        first_usable_lba: u64_at(40),
        last_usable_lba: u64_at(48),
        disk_guid: Guid(disk_guid),
        entries_lba: u64_at(72),
        entry_count,
        entry_size,
        entries_crc: u32_at(88),
    })
}

/// A partition as found in an entry array, with its number (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub number: u32,
    pub partition: Partition,
}

/// Checks the array's CRC against the header and returns the used entries.
pub fn parse_entries(header: &Header, array: &[u8]) -> Result<Vec<Entry>, GptError> {
    let len = header.entry_array_bytes();
    if array.len() < len {
        return Err(GptError::Short {
            what: "entry array",
            need: len as u64,
            have: array.len() as u64,
        });
    }
    let array = &array[..len];
    let computed = crc32(array);
    if computed != header.entries_crc {
        return Err(GptError::EntriesCrc {
            stored: header.entries_crc,
            computed,
        });
    }
    let mut out = Vec::new();
    for (i, e) in array.chunks_exact(header.entry_size as usize).enumerate() {
        let guid = |o: usize| {
            let mut g = [0u8; 16];
            g.copy_from_slice(&e[o..o + 16]);
            Guid(g)
        };
        let type_guid = guid(0);
        if type_guid == Guid::ZERO {
            continue;
        }
        let number = i as u32 + 1;
        let u64_at = |o: usize| u64::from_le_bytes(e[o..o + 8].try_into().unwrap_or([0; 8]));
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let name = String::from_utf16(&units).map_err(|_| GptError::BadEntryName { number })?;
        out.push(Entry {
            number,
            partition: Partition {
                type_guid,
                unique_guid: guid(16),
                name,
                first_lba: u64_at(32),
                last_lba: u64_at(40),
                attributes: u64_at(48),
            },
        });
    }
    Ok(out)
}

/// Reads the primary table from the start of a disk: `head` holds LBA 0
/// onwards, at least up to the end of the entry array the header names.
pub fn parse(head: &[u8]) -> Result<(Header, Vec<Entry>), GptError> {
    let sector = SECTOR_SIZE as usize;
    if head.len() < 2 * sector {
        return Err(GptError::Short {
            what: "header",
            need: 2 * SECTOR_SIZE,
            have: head.len() as u64,
        });
    }
    let header = parse_header(&head[sector..2 * sector], 1)?;
    let start = header.entries_lba.saturating_mul(SECTOR_SIZE);
    let end = start.saturating_add(header.entry_array_bytes() as u64);
    if end > head.len() as u64 {
        return Err(GptError::Short {
            what: "entry array",
            need: end,
            have: head.len() as u64,
        });
    }
    let entries = parse_entries(&header, &head[start as usize..end as usize])?;
    Ok((header, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, type_guid: Guid, mib: u64) -> PartitionSpec {
        PartitionSpec {
            name: name.into(),
            type_guid,
            unique_guid: Guid::derive(b"test", name),
            size_bytes: mib << 20,
        }
    }

    fn sample() -> Gpt {
        plan(
            Guid::derive(b"test", "disk"),
            &[
                spec("ESP", types::ESP, 2),
                spec("ROOT-A", types::ROOT_X86_64, 3),
                spec("STATE", types::LINUX_DATA, 1),
            ],
        )
        .unwrap()
    }

    #[test]
    fn guid_text_and_bytes() {
        // The on-disk bytes of the ESP type GUID, as UEFI lists them.
        assert_eq!(
            types::ESP.disk_bytes(),
            [0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B]
        );
        for (g, text) in [
            (types::ESP, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            (types::ROOT_X86_64, "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
            (types::LINUX_DATA, "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
            (types::VAR, "4D21B016-B534-45C2-A9FB-5C16E091FD2D"),
        ] {
            assert_eq!(g.to_string(), text);
            assert_eq!(Guid::parse(text), Some(g));
            assert_eq!(Guid::parse(&text.to_lowercase()), Some(g));
        }
        for bad in [
            "",
            "C12A7328F81F11D2BA4B00A0C93EC93B",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93",
            "G12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        ] {
            assert_eq!(Guid::parse(bad), None, "{bad}");
        }
        let d = Guid::derive(b"seed", "ROOT-A");
        assert_eq!(d, Guid::derive(b"seed", "ROOT-A"));
        assert_ne!(d, Guid::derive(b"seed", "ROOT-B"));
        assert_ne!(d, Guid::derive(b"seeds", "ROOT-A"));
        let text = d.to_string();
        assert_eq!(&text[14..15], "4", "version 4: {text}");
        assert!("89AB".contains(&text[19..20]), "RFC 4122 variant: {text}");
    }

    #[test]
    fn plan_aligns_to_mib() {
        let g = sample();
        let extents: Vec<(&str, u64, u64)> = g
            .partitions
            .iter()
            .map(|p| (p.name.as_str(), p.first_lba, p.last_lba))
            .collect();
        assert_eq!(
            extents,
            [("ESP", 2048, 6143), ("ROOT-A", 6144, 12287), ("STATE", 12288, 14335)]
        );
        assert_eq!(g.total_sectors, 16384);
        assert_eq!(g.last_usable_lba(), 16384 - 34);
        assert_eq!(g.partitions[1].offset_bytes(), 3 << 20);
        assert_eq!(g.partitions[1].size_bytes(), 3 << 20);
        assert_eq!(g.find("ROOT-A").map(|(n, _)| n), Some(2));
        assert_eq!(g.find("ROOT-B"), None);
        // A size that is not whole MiB still starts the next one on a boundary.
        let odd = plan(
            Guid::ZERO,
            &[
                PartitionSpec {
                    size_bytes: 512,
                    ..spec("A", types::ESP, 0)
                },
                spec("B", types::ESP, 1),
            ],
        )
        .unwrap();
        assert_eq!(odd.partitions[1].first_lba, 4096);
    }

    #[test]
    fn plan_and_build_refuse_table() {
        let long = "x".repeat(37);
        let cases: Vec<(Vec<PartitionSpec>, &str)> = vec![
            (
                vec![spec("A", types::ESP, 0)],
                "size 0 is not a positive multiple of 512",
            ),
            (
                vec![PartitionSpec {
                    size_bytes: 1000,
                    ..spec("A", types::ESP, 1)
                }],
                "size 1000",
            ),
            (vec![spec(&long, types::ESP, 1)], "name longer than 36 UTF-16 units"),
            (vec![spec("", types::ESP, 1)], "empty name or a NUL"),
            (vec![spec("A", Guid::ZERO, 1)], "the zero type GUID"),
            (
                (0..129).map(|i| spec(&format!("P{i}"), types::ESP, 1)).collect(),
                "129 partitions",
            ),
        ];
        for (specs, needle) in cases {
            let err = plan(Guid::ZERO, &specs).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle:?} in {err:?}");
        }
        // Found by the disk fuzz target: sectors that fit a u64, bytes that do not.
        let huge = plan(
            Guid::ZERO,
            &[
                PartitionSpec {
                    size_bytes: 1 << 63,
                    ..spec("A", types::ESP, 0)
                },
                PartitionSpec {
                    size_bytes: 1 << 63,
                    ..spec("B", types::ESP, 0)
                },
            ],
        );
        assert_eq!(huge, Err(GptError::DiskTooLarge));
        // A name of 36 units, beyond ASCII, fits exactly.
        assert!(plan(Guid::ZERO, &[spec(&"é".repeat(36), types::ESP, 1)]).is_ok());

        let mut overlap = sample();
        overlap.partitions[1].first_lba = 6000;
        let mut outside = sample();
        outside.partitions[2].last_lba = outside.total_sectors - 10;
        let mut backwards = sample();
        backwards.partitions[0].last_lba = 100;
        let mut early = sample();
        early.partitions[0].first_lba = 33;
        for (g, needle) in [
            (overlap, "partition ROOT-A: overlaps partition ESP"),
            (
                outside,
                "partition STATE: LBA 12288..=16374 is outside the usable 34..=16350",
            ),
            (backwards, "partition ESP: first LBA 2048 is after last LBA 100"),
            (early, "partition ESP: LBA 33..=6143 is outside"),
        ] {
            let err = build(&g).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle:?} in {err:?}");
        }
    }

    #[test]
    fn bytes_of_mbr_headers_and_entries() {
        let g = sample();
        let bytes = build(&g).unwrap();
        assert_eq!(bytes.primary.len(), 34 * 512);
        assert_eq!(bytes.backup.len(), 33 * 512);
        assert_eq!(bytes.backup_lba, 16384 - 33);

        let mbr = &bytes.primary[..512];
        assert!(mbr[..446].iter().all(|&b| b == 0));
        assert_eq!(
            &mbr[446..462],
            &[0, 0, 2, 0, 0xEE, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0, 0xFF, 0x3F, 0, 0]
        );
        assert!(mbr[462..510].iter().all(|&b| b == 0));
        assert_eq!(&mbr[510..], &[0x55, 0xAA]);

        let h = &bytes.primary[512..1024];
        let le64 = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let le32 = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        assert_eq!(&h[..8], b"EFI PART");
        assert_eq!(&h[8..16], &[0, 0, 1, 0, 92, 0, 0, 0]);
        assert_eq!(le32(h, 20), 0);
        assert_eq!(
            [le64(h, 24), le64(h, 32), le64(h, 40), le64(h, 48), le64(h, 72)],
            [1, 16383, 34, 16350, 2]
        );
        assert_eq!(&h[56..72], &g.disk_guid.disk_bytes());
        assert_eq!([le32(h, 80), le32(h, 84)], [128, 128]);
        let entries = &bytes.primary[1024..];
        assert_eq!(le32(h, 88), crc32(entries));
        let mut zeroed = h[..92].to_vec();
        zeroed[16..20].fill(0);
        assert_eq!(le32(h, 16), crc32(&zeroed));
        assert!(h[92..].iter().all(|&b| b == 0));

        let e = &entries[128..256];
        assert_eq!(&e[..16], &types::ROOT_X86_64.disk_bytes());
        assert_eq!(&e[16..32], &Guid::derive(b"test", "ROOT-A").disk_bytes());
        assert_eq!([le64(e, 32), le64(e, 40), le64(e, 48)], [6144, 12287, 0]);
        assert_eq!(&e[56..70], b"R\0O\0O\0T\0-\0A\0\0\0");
        assert!(entries[3 * 128..].iter().all(|&b| b == 0));

        // The backup: same entries, then a header that points back at LBA 1.
        assert_eq!(&bytes.backup[..32 * 512], entries);
        let b = &bytes.backup[32 * 512..];
        assert_eq!([le64(b, 24), le64(b, 32), le64(b, 72)], [16383, 1, 16384 - 33]);
        assert_eq!(le32(b, 88), le32(h, 88));
        assert_ne!(le32(b, 16), le32(h, 16));
        assert_eq!(parse_header(b, 16383).unwrap().entries_lba, 16351);
    }

    #[test]
    fn parse_reads_back_what_build_wrote() {
        let g = sample();
        let bytes = build(&g).unwrap();
        let (header, entries) = parse(&bytes.primary).unwrap();
        assert_eq!(header.disk_guid, g.disk_guid);
        assert_eq!(header.alternate_lba, g.total_sectors - 1);
        assert_eq!(
            (header.first_usable_lba, header.last_usable_lba),
            (34, g.last_usable_lba())
        );
        let numbers: Vec<u32> = entries.iter().map(|e| e.number).collect();
        assert_eq!(numbers, [1, 2, 3]);
        let back: Vec<Partition> = entries.into_iter().map(|e| e.partition).collect();
        assert_eq!(back, g.partitions);
    }

    #[test]
    fn parse_refuses_table() {
        let good = build(&sample()).unwrap().primary;
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            b
        };
        let reseal = |b: &mut Vec<u8>| {
            b[528..532].fill(0);
            let crc = crc32(&b[512..604]);
            b[528..532].copy_from_slice(&crc.to_le_bytes());
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..1000].to_vec(), "header: needs 1024 bytes, only 1000 given"),
            (good[..4096].to_vec(), "entry array: needs 17408 bytes, only 4096 given"),
            (with(&|b| b[512] = b'X'), "no \"EFI PART\" signature"),
            (with(&|b| b[600] ^= 1), "header: CRC32"),
            (
                with(&|b| {
                    b[524] = 91;
                    reseal(b)
                }),
                "header: size 91 is not 92..=512",
            ),
            (
                with(&|b| {
                    b[536] = 2;
                    reseal(b)
                }),
                "says it is at LBA 2, read from LBA 1",
            ),
            (
                with(&|b| {
                    b[596] = 100;
                    reseal(b)
                }),
                "entry size 100 is not a multiple of 128",
            ),
            (
                with(&|b| {
                    b[594] = 0xFF;
                    reseal(b)
                }),
                "is more than 1048576 bytes",
            ),
            (with(&|b| b[1024 + 200] ^= 1), "entry array: CRC32"),
            (
                with(&|b| {
                    b[1024 + 56..1024 + 58].copy_from_slice(&0xD800u16.to_le_bytes());
                    let crc = crc32(&b[1024..1024 + 16384]);
                    b[600..604].copy_from_slice(&crc.to_le_bytes());
                    reseal(b)
                }),
                "partition 1: name is not UTF-16",
            ),
        ];
        for (bytes, needle) in cases {
            let err = parse(&bytes).unwrap_err().to_string();
            assert!(err.starts_with("reading the GPT: "), "{err}");
            assert!(err.contains(needle), "{needle:?} in {err:?}");
        }
    }
}
