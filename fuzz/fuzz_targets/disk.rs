//! The disk's own structures (common/src/disk/): the GPT the node reads to
//! find its partitions (gpt.rs) and the 64 KiB signed manifest area at the
//! end of a root slot (slot.rs).
//!
//! The first byte picks the mode:
//! - 0: the rest is the start of a disk, for `gpt::parse`;
//! - 1: a GPT header and entry array made from the input, with correct
//!   CRCs, so the parser gets past them: `[entries_lba u8][count u16]
//!   [size_units u8][my_lba u8][header_size u16][array...]`;
//! - 2: a partition list (`[count u8]` then per partition `[flags u8]
//!   [size u32 LE][name_len u8][name]`) for `plan` and `build`, read back by
//!   `parse` and `parse_header`/`parse_entries` on the backup copy;
//! - 3: a manifest area: the rest, zero-padded or cut to 64 KiB (or as it is
//!   when the second byte is odd), for `decode_area`;
//! - 4 and up: `[json_len u16][signature 64][json]` for `encode_area`, and
//!   `[slot_size u64][image_size u64]` first for `layout`.
//!
//! Checked:
//! - `parse` never panics; what it accepts keeps the header's promises
//!   (read from LBA 1, entry sizes a multiple of 128, an array of at most
//!   1 MiB, entries numbered in order within it, none of the zero type);
//! - tables with correct CRCs give exactly the entries a direct reading of
//!   the array gives, or the first entry whose name is not UTF-16;
//! - `plan` refuses exactly the bad sizes, names and counts, aligns every
//!   partition to 1 MiB in order without overlap, and `build` writes tables
//!   whose both copies parse back to the same partitions and header fields;
//! - `decode_area` is exact: an area it reads `encode_area` writes back byte
//!   for byte, only zeros are empty, and each error is true of the bytes;
//!   `encode_area` output always decodes to its input;
//! - `layout` never panics and what it lays out fits before the area.
#![no_main]

use basalt_common::disk::crc32::crc32;
use basalt_common::disk::gpt::{
    self, GptError, Guid, Partition, PartitionSpec, ALIGN_SECTORS, ENTRY_COUNT, ENTRY_SIZE, NAME_UNITS, SECTOR_SIZE,
};
use basalt_common::disk::slot::{self, Area, SlotError, AREA_HEADER_LEN, AREA_SIZE, MAX_JSON};
use basalt_common::disk::verity;
use basalt_common::keys::SIGNATURE_LEN;
use basalt_fuzz::Input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.byte() {
        0 => {
            let _ = check_parse(input.rest());
        }
        1 => check_sealed_table(&mut input),
        2 => check_plan(&mut input),
        3 => {
            let raw = input.byte() & 1 == 1;
            let rest = input.rest();
            if raw {
                check_area(rest);
            } else {
                let mut area = rest.to_vec();
                area.resize(AREA_SIZE as usize, 0);
                check_area(&area);
            }
        }
        _ => {
            check_layout(&mut input);
            check_encode_area(&mut input);
        }
    }
});

fn u64_of(input: &mut Input) -> u64 {
    let mut b = [0u8; 8];
    for x in &mut b {
        *x = input.byte();
    }
    u64::from_le_bytes(b)
}

fn check_parse(head: &[u8]) -> Result<(gpt::Header, Vec<gpt::Entry>), GptError> {
    let got = gpt::parse(head);
    if let Ok((h, entries)) = &got {
        assert_eq!(h.my_lba, 1);
        assert!(
            h.entry_size > 0 && (h.entry_size as usize).is_multiple_of(ENTRY_SIZE),
            "{h:?}"
        );
        assert!(h.entry_array_bytes() <= 1 << 20, "{h:?}");
        assert!(entries.windows(2).all(|w| w[0].number < w[1].number));
        for e in entries {
            assert!(e.number >= 1 && e.number <= h.entry_count, "{e:?} of {h:?}");
            assert_ne!(e.partition.type_guid, Guid::ZERO);
            assert!(!e.partition.name.contains('\0'));
            assert!(e.partition.name.encode_utf16().count() <= NAME_UNITS);
        }
    }
    got
}

/// A primary GPT made from fuzzer fields, with both CRCs right.
fn check_sealed_table(input: &mut Input) {
    let entries_lba = u64::from(input.byte() % 40);
    let count = u32::from(input.u16() % 600);
    let size = u32::from(input.byte() % 10) * ENTRY_SIZE as u32;
    let my_lba: u64 = if input.byte() == 0 { 2 } else { 1 };
    let header_size = match input.u16() {
        n @ 0..=1023 => 92 + u32::from(n) % 430,
        _ => 92,
    };
    let array_len = count as usize * size as usize;
    let mut array = input.bytes(usize::MAX).to_vec();
    array.resize(array_len.min(1 << 20), 0);
    let mut head = vec![0u8; 512];
    let mut h = vec![0u8; 512];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&header_size.to_le_bytes());
    h[24..32].copy_from_slice(&my_lba.to_le_bytes());
    h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    h[80..84].copy_from_slice(&count.to_le_bytes());
    h[84..88].copy_from_slice(&size.to_le_bytes());
    h[88..92].copy_from_slice(&crc32(&array).to_le_bytes());
    let hs = (header_size as usize).min(512);
    let crc = crc32(&h[..hs]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    head.extend_from_slice(&h);
    let at = (entries_lba * SECTOR_SIZE) as usize;
    head.resize(head.len().max(at), 0);
    head.truncate(at.max(1024));
    // The array overwrites the header when the header says it starts there.
    let overlaps = at < 1024 && array_len > 0;
    head.resize(head.len().max(at + array.len()), 0);
    head[at..at + array.len()].copy_from_slice(&array);

    let got = check_parse(&head);
    if overlaps {
        return;
    }
    let expected = if header_size > 512 {
        Some(GptError::BadHeaderSize(header_size))
    } else if my_lba != 1 {
        Some(GptError::WrongLba { stored: 2, expected: 1 })
    } else if size == 0 {
        Some(GptError::BadEntrySize(0))
    } else if array_len > 1 << 20 {
        Some(GptError::EntryArrayTooLarge { count, size })
    } else {
        None
    };
    if let Some(e) = expected {
        assert_eq!(got.map(drop), Err(e));
        return;
    }
    let want = model_entries(&array, size as usize);
    match (got, want) {
        (Ok((_, entries)), Ok(model)) => assert_eq!(entries, model),
        (Err(GptError::BadEntryName { number }), Err(n)) => assert_eq!(number, n),
        (got, want) => panic!("parse gave {got:?}, a direct reading {want:?}"),
    }
}

/// The used entries of an array, read directly, or the number of the
/// first one whose name is not UTF-16.
fn model_entries(array: &[u8], size: usize) -> Result<Vec<gpt::Entry>, u32> {
    let mut out = Vec::new();
    for (i, e) in array.chunks_exact(size).enumerate() {
        if e[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let number = i as u32 + 1;
        let mut units = Vec::new();
        for c in e[56..128].chunks_exact(2) {
            match u16::from_le_bytes([c[0], c[1]]) {
                0 => break,
                u => units.push(u),
            }
        }
        let name = char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map_err(|_| number)?;
        let g = |o: usize| Guid::from_disk_bytes(e[o..o + 16].try_into().expect("16 bytes"));
        let n = |o: usize| u64::from_le_bytes(e[o..o + 8].try_into().expect("8 bytes"));
        out.push(gpt::Entry {
            number,
            partition: Partition {
                type_guid: g(0),
                unique_guid: g(16),
                name,
                first_lba: n(32),
                last_lba: n(40),
                attributes: n(48),
            },
        });
    }
    Ok(out)
}

fn check_plan(input: &mut Input) {
    let count = usize::from(input.byte() % 132);
    let mut specs = Vec::with_capacity(count);
    for i in 0..count {
        let flags = input.byte();
        let raw = u32::from_le_bytes([input.byte(), input.byte(), input.byte(), input.byte()]);
        let size_bytes = match flags & 3 {
            // Whole sectors (most), up to 2 TiB.
            0 | 1 => u64::from(raw) * SECTOR_SIZE,
            2 => u64::from(raw),
            // Sizes near the end of what 64 bits of bytes can address.
            _ => u64::from(raw) << 31,
        };
        let name_len = usize::from(input.byte() % 48);
        let name = match (flags >> 2) & 3 {
            0 => format!("P{i}"),
            _ => String::from_utf8_lossy(input.bytes(name_len)).into_owned(),
        };
        let type_guid = if flags & 0x10 != 0 && flags & 0x20 != 0 {
            Guid::ZERO
        } else {
            Guid::derive(&[flags], "type")
        };
        specs.push(PartitionSpec {
            name,
            type_guid,
            unique_guid: Guid::derive(&[i as u8], "unique"),
            size_bytes,
        });
    }
    let disk_guid = Guid::derive(input.bytes(usize::MAX), "disk");
    let planned = gpt::plan(disk_guid, &specs);
    // What plan must refuse, in the order it looks.
    let first_bad = specs.iter().find_map(|s| {
        if s.size_bytes == 0 || !s.size_bytes.is_multiple_of(SECTOR_SIZE) {
            Some("size")
        } else if s.name.is_empty() || s.name.contains('\0') {
            Some("name")
        } else if s.name.encode_utf16().count() > NAME_UNITS {
            Some("long")
        } else if s.type_guid == Guid::ZERO {
            Some("type")
        } else {
            None
        }
    });
    let g = match planned {
        Ok(g) => {
            assert!(
                first_bad.is_none() && specs.len() <= ENTRY_COUNT as usize,
                "{first_bad:?}"
            );
            g
        }
        Err(GptError::DiskTooLarge) => {
            // Each partition takes at most its size plus 1 MiB of alignment.
            let bytes: u128 = specs.iter().map(|s| u128::from(s.size_bytes) + (1 << 20)).sum();
            assert!(
                bytes + (2 << 20) > u128::from(u64::MAX),
                "{bytes} bytes is not too large"
            );
            return;
        }
        Err(GptError::TooManyPartitions(n)) => {
            assert!(n == specs.len() && n > ENTRY_COUNT as usize);
            return;
        }
        Err(e) => {
            let kind = match e {
                GptError::BadSize { .. } => "size",
                GptError::BadName { .. } => "name",
                GptError::NameTooLong { .. } => "long",
                GptError::ZeroType { .. } => "type",
                other => panic!("plan: {other}"),
            };
            // Sizes are checked while laying out, names afterwards.
            let size_bad = specs
                .iter()
                .any(|s| s.size_bytes == 0 || !s.size_bytes.is_multiple_of(SECTOR_SIZE));
            if kind == "size" {
                assert!(size_bad);
            } else {
                assert!(!size_bad && first_bad == Some(kind), "{e}, expected {first_bad:?}");
            }
            return;
        }
    };
    assert_eq!(g.partitions.len(), specs.len());
    assert!(
        g.total_sectors.checked_mul(SECTOR_SIZE).is_some(),
        "a disk of {} sectors has more bytes than u64 holds",
        g.total_sectors
    );
    let mut next = ALIGN_SECTORS;
    for (p, s) in g.partitions.iter().zip(&specs) {
        assert_eq!(
            (&p.name, p.type_guid, p.unique_guid),
            (&s.name, s.type_guid, s.unique_guid)
        );
        assert!(
            p.first_lba >= next && p.first_lba.is_multiple_of(ALIGN_SECTORS),
            "{p:?}"
        );
        assert_eq!(p.size_bytes(), s.size_bytes);
        next = p.last_lba + 1;
    }
    assert!(g.last_usable_lba() >= next.saturating_sub(1));

    let bytes = gpt::build(&g).expect("build takes what plan lays out");
    let (h, entries) = check_parse(&bytes.primary).expect("the primary copy parses");
    let numbers: Vec<u32> = entries.iter().map(|e| e.number).collect();
    assert_eq!(numbers, (1..=g.partitions.len() as u32).collect::<Vec<_>>());
    let back: Vec<Partition> = entries.into_iter().map(|e| e.partition).collect();
    assert_eq!(back, g.partitions);
    assert_eq!(h.disk_guid, g.disk_guid);
    assert_eq!((h.alternate_lba, h.entries_lba), (g.total_sectors - 1, 2));
    assert_eq!(
        (h.first_usable_lba, h.last_usable_lba),
        (g.first_usable_lba(), g.last_usable_lba())
    );

    let last = g.total_sectors - 1;
    let split = bytes.backup.len() - SECTOR_SIZE as usize;
    let bh = gpt::parse_header(&bytes.backup[split..], last).expect("the backup header parses");
    assert_eq!(
        (bh.my_lba, bh.alternate_lba, bh.entries_lba),
        (last, 1, bytes.backup_lba)
    );
    let backup: Vec<Partition> = gpt::parse_entries(&bh, &bytes.backup[..split])
        .expect("the backup entries parse")
        .into_iter()
        .map(|e| e.partition)
        .collect();
    assert_eq!(backup, g.partitions);
}

fn check_area(area: &[u8]) {
    let u32_at = |o: usize| u32::from_le_bytes([area[o], area[o + 1], area[o + 2], area[o + 3]]);
    match slot::decode_area(area) {
        Ok(Area::Empty) => assert!(area.len() == AREA_SIZE as usize && area.iter().all(|&b| b == 0)),
        Ok(Area::Signed { json, signature }) => {
            let written = slot::encode_area(json, signature).expect("what decodes encodes");
            assert!(written == area, "encode_area does not write back the area it read");
        }
        Err(SlotError::AreaSize(n)) => assert!(n == area.len() && n != AREA_SIZE as usize),
        Err(SlotError::BadMagic) => assert_ne!(&area[..8], slot::MAGIC),
        Err(SlotError::Format(f)) => assert!(f == u32_at(8) && f != slot::AREA_FORMAT),
        Err(SlotError::SignatureLength(n)) => assert!(n == u32_at(16) && n as usize != SIGNATURE_LEN),
        Err(SlotError::JsonLength(n)) => assert!(n == u32_at(12) && (n == 0 || n as usize > MAX_JSON)),
        Err(SlotError::TrailingBytes { offset }) => {
            assert_ne!(area[offset], 0);
            assert!(offset >= AREA_HEADER_LEN + u32_at(12) as usize + SIGNATURE_LEN);
        }
        Err(e @ (SlotError::TooSmall { .. } | SlotError::SlotSize(_))) => panic!("decode_area: {e}"),
    }
}

fn check_encode_area(input: &mut Input) {
    let json_len = usize::from(input.u16());
    let signature: [u8; SIGNATURE_LEN] = std::array::from_fn(|_| input.byte());
    let mut json = input.bytes(usize::MAX).to_vec();
    json.resize(json_len, b' ');
    match slot::encode_area(&json, &signature) {
        Ok(area) => {
            assert!(!json.is_empty() && json.len() <= MAX_JSON);
            assert_eq!(area.len(), AREA_SIZE as usize);
            let back = slot::decode_area(&area);
            assert_eq!(
                back,
                Ok(Area::Signed {
                    json: &json,
                    signature: &signature
                })
            );
        }
        Err(SlotError::JsonLength(n)) => {
            assert!(n as usize == json.len() && (json.is_empty() || json.len() > MAX_JSON))
        }
        Err(e) => panic!("encode_area: {e}"),
    }
}

fn check_layout(input: &mut Input) {
    let slot_size = u64_of(input);
    let image_size = u64_of(input);
    if let Ok(l) = slot::layout(slot_size, image_size) {
        let block = verity::BLOCK_SIZE as u64;
        assert!(l.data_blocks * block >= image_size);
        assert_eq!(l.hash_offset, l.data_blocks * block);
        assert!(l.hash_offset + l.hash_blocks * block <= l.area_offset);
        assert_eq!(l.area_offset + AREA_SIZE, slot_size);
    }
}
