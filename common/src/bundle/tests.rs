use super::*;
use crate::disk::slot::AREA_SIZE;
use crate::hex;
use crate::keys::SigningKey;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_seed(&[seed; 32]).unwrap()
}

/// A UKI of 2.5 chunks and a slot of 3 tree blocks + the area.
fn parts() -> (Vec<u8>, Vec<u8>) {
    let uki: Vec<u8> = (0..(2 * CHUNK_SIZE + CHUNK_SIZE / 2))
        .map(|i| (i % 251) as u8)
        .collect();
    let slot: Vec<u8> = (0..(3 * 4096 + AREA_SIZE)).map(|i| (i % 13) as u8).collect();
    (uki, slot)
}

fn manifest_for(uki: &[u8], slot: &[u8]) -> BundleManifest {
    BundleManifest {
        version: "0.1.0+gabc".into(),
        version_seq: 42,
        arch: Arch::X86_64,
        target: "ROOT-B".into(),
        uki: digest_part(uki),
        slot: SlotPart {
            digest: digest_part(slot),
            tree_end: slot.len() as u64 - AREA_SIZE,
            root_hash: [7; 32],
        },
    }
}

fn good() -> (BundleManifest, Vec<u8>) {
    let (uki, slot) = parts();
    let m = manifest_for(&uki, &slot);
    let b = build_bundle(&m, &key(1), &uki, &slot).unwrap();
    (m, b)
}

#[test]
fn round_trip_and_layout() {
    let (m, b) = good();
    let h = read_header(&b).unwrap();
    assert_eq!(&b[..8], b"BASALTUB");
    assert_eq!(&b[8..12], &1u32.to_le_bytes());
    assert_eq!(&b[16..20], &64u32.to_le_bytes());
    assert_eq!(h.parts_offset(), 20 + h.manifest_len as u64 + 64);
    assert_eq!(b.len() as u64, h.parts_offset() + m.parts_len());
    assert_eq!(verify_bundle(&b, &key(1).public_key()).unwrap(), m);
    assert_eq!(m.uki.chunks.len(), 3);
    assert_eq!(m.slot.digest.chunks.len(), 1);
    let json = &b[20..h.signature_offset() as usize];
    assert_eq!(parse_manifest(json).unwrap(), m);
    assert_eq!(encode_manifest(&m), json);
}

#[test]
fn hasher_is_split_independent() {
    let (uki, _) = parts();
    let whole = digest_part(&uki);
    let mut h = PartHasher::new();
    for piece in uki.chunks(4093) {
        h.update(piece);
    }
    assert_eq!(h.finish(), whole);
    let exact = digest_part(&uki[..2 * CHUNK_SIZE as usize]);
    assert_eq!(exact.chunks.len(), 2);
}

#[test]
fn each_chunk_checks_alone() {
    let (uki, slot) = parts();
    let m = manifest_for(&uki, &slot);
    // In reverse order: no chunk needs another.
    for i in (0..3u64).rev() {
        let r = chunk_range(&m, Part::Uki, i).unwrap();
        check_chunk(&m, Part::Uki, i, &uki[r.start as usize..r.end as usize]).unwrap();
    }
    check_chunk(&m, Part::Slot, 0, &slot).unwrap();
    let c0 = &uki[..CHUNK_SIZE as usize];
    let cases: Vec<(Part, u64, Vec<u8>, BundleError)> = vec![
        (
            Part::Uki,
            3,
            c0.to_vec(),
            BundleError::ChunkIndex {
                part: Part::Uki,
                index: 3,
                count: 3,
            },
        ),
        (
            Part::Slot,
            1,
            vec![],
            BundleError::ChunkIndex {
                part: Part::Slot,
                index: 1,
                count: 1,
            },
        ),
        (
            Part::Uki,
            u64::MAX,
            vec![],
            BundleError::ChunkIndex {
                part: Part::Uki,
                index: u64::MAX,
                count: 3,
            },
        ),
        // The right bytes under the wrong index.
        (
            Part::Uki,
            1,
            c0.to_vec(),
            BundleError::ChunkDigest {
                part: Part::Uki,
                index: 1,
            },
        ),
        (
            Part::Uki,
            0,
            c0[1..].to_vec(),
            BundleError::ChunkLength {
                part: Part::Uki,
                index: 0,
                want: CHUNK_SIZE,
                got: CHUNK_SIZE - 1,
            },
        ),
        (
            Part::Uki,
            2,
            c0[..CHUNK_SIZE as usize / 2].to_vec(),
            BundleError::ChunkDigest {
                part: Part::Uki,
                index: 2,
            },
        ),
        (
            Part::Slot,
            0,
            uki[..slot.len()].to_vec(),
            BundleError::ChunkDigest {
                part: Part::Slot,
                index: 0,
            },
        ),
    ];
    for (part, index, bytes, want) in cases {
        assert_eq!(check_chunk(&m, part, index, &bytes), Err(want));
    }
    assert_eq!(
        check_chunk(&m, Part::Uki, 7, c0).unwrap_err().to_string(),
        "bundle: uki chunk 7 is out of range (the part has 3)"
    );
}

#[test]
fn a_flipped_byte_anywhere_is_refused() {
    let (_, b) = good();
    let h = read_header(&b).unwrap();
    let pk = key(1).public_key();
    let json_at = 20usize;
    let sig_at = h.signature_offset() as usize;
    let parts_at = h.parts_offset() as usize;
    let slot_at = parts_at + 2 * CHUNK_SIZE as usize + CHUNK_SIZE as usize / 2;
    let flip = |at: usize| {
        let mut c = b.clone();
        c[at] ^= 0x01;
        c
    };
    let bad_sig = BundleError::BadSignature { key_id: pk.key_id() };
    let cases: Vec<(&str, usize, BundleError)> = vec![
        ("magic", 3, BundleError::BadMagic),
        ("format", 8, BundleError::Format(0)),
        ("signature length", 16, BundleError::SignatureLength(65)),
        ("manifest", json_at + 10, bad_sig.clone()),
        ("manifest end", sig_at - 1, bad_sig.clone()),
        ("signature", sig_at + 5, bad_sig.clone()),
        (
            "uki first byte",
            parts_at,
            BundleError::ChunkDigest {
                part: Part::Uki,
                index: 0,
            },
        ),
        (
            "uki last chunk",
            slot_at - 1,
            BundleError::ChunkDigest {
                part: Part::Uki,
                index: 2,
            },
        ),
        (
            "slot",
            slot_at + 4096,
            BundleError::ChunkDigest {
                part: Part::Slot,
                index: 0,
            },
        ),
        (
            "slot last byte",
            b.len() - 1,
            BundleError::ChunkDigest {
                part: Part::Slot,
                index: 0,
            },
        ),
    ];
    for (what, at, want) in cases {
        assert_eq!(verify_bundle(&flip(at), &pk), Err(want), "{what}");
    }
    // The manifest length: one more or one less moves the JSON's end.
    let mut longer = b.clone();
    longer[12] ^= 0x01;
    assert!(verify_bundle(&longer, &pk).is_err());
}

#[test]
fn truncation_wrong_key_and_trailing_bytes() {
    let (m, b) = good();
    let h = read_header(&b).unwrap();
    let pk = key(1).public_key();
    let parts_at = h.parts_offset();
    let cases: Vec<(usize, BundleError)> = vec![
        (
            0,
            BundleError::Truncated {
                what: "header",
                need: 20,
                have: 0,
            },
        ),
        (
            19,
            BundleError::Truncated {
                what: "header",
                need: 20,
                have: 19,
            },
        ),
        (
            100,
            BundleError::Truncated {
                what: "manifest and signature",
                need: parts_at,
                have: 100,
            },
        ),
        (
            parts_at as usize - 1,
            BundleError::Truncated {
                what: "manifest and signature",
                need: parts_at,
                have: parts_at - 1,
            },
        ),
        (
            parts_at as usize,
            BundleError::Truncated {
                what: "uki",
                need: parts_at + CHUNK_SIZE,
                have: parts_at,
            },
        ),
        (
            b.len() - 1,
            BundleError::Truncated {
                what: "slot",
                need: b.len() as u64,
                have: b.len() as u64 - 1,
            },
        ),
    ];
    for (len, want) in cases {
        assert_eq!(verify_bundle(&b[..len], &pk), Err(want), "length {len}");
    }
    let other = key(2).public_key();
    assert_eq!(
        verify_bundle(&b, &other),
        Err(BundleError::BadSignature { key_id: other.key_id() })
    );
    let mut extra = b.clone();
    extra.push(0);
    assert_eq!(
        verify_bundle(&extra, &pk),
        Err(BundleError::TrailingBytes {
            at: parts_at + m.parts_len()
        })
    );
}

#[test]
fn header_lengths_refused_before_allocating() {
    let mut h = encode_header(100).unwrap().to_vec();
    h[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(read_header(&h), Err(BundleError::ManifestLength(u32::MAX)));
    h[12..16].copy_from_slice(&(MAX_MANIFEST_BYTES as u32 + 1).to_le_bytes());
    assert_eq!(
        read_header(&h),
        Err(BundleError::ManifestLength(MAX_MANIFEST_BYTES as u32 + 1))
    );
    h[12..16].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(read_header(&h), Err(BundleError::ManifestLength(0)));
    h[12..16].copy_from_slice(&(MAX_MANIFEST_BYTES as u32).to_le_bytes());
    assert_eq!(read_header(&h).unwrap().manifest_len, MAX_MANIFEST_BYTES);
    assert_eq!(encode_header(0), Err(BundleError::ManifestLength(0)));
    assert!(encode_header(MAX_MANIFEST_BYTES + 1).is_err());
    assert_eq!(
        read_header(&h[..5]).unwrap_err().to_string(),
        "bundle: truncated in the header: needs 20 bytes, has 5"
    );
}

#[test]
fn manifest_refusals_table() {
    let (uki, slot) = parts();
    let m = manifest_for(&uki, &slot);
    let text = String::from_utf8(encode_manifest(&m)).unwrap();
    let edit = |from: &str, to: &str| {
        assert!(text.contains(from), "{from}");
        text.replacen(from, to, 1)
    };
    let uki_size = m.uki.size.to_string();
    let chunk0 = hex::encode(&m.uki.chunks[0]);
    let cases: Vec<(String, &str)> = vec![
        (edit("\"format\":1", "\"format\":2"), "format 2 is not supported"),
        (
            edit("\"chunk_size\":1048576", "\"chunk_size\":4096"),
            "$.chunk_size: 4096, expected 1048576",
        ),
        (
            edit("\"arch\":\"x86_64\"", "\"arch\":\"riscv64\""),
            "unknown architecture",
        ),
        (
            edit("\"target\":\"ROOT-B\"", "\"target\":\"STATE\""),
            "$.target: \"STATE\" is not a root slot (ROOT-A, ROOT-B)",
        ),
        (
            edit("\"version\":\"0.1.0+gabc\"", "\"version\":\"\""),
            "$.version: not a printable version",
        ),
        (edit("\"version_seq\":42", "\"version_seq\":-1"), "$.version_seq"),
        (edit("\"format\":1", "\"format\":1,\"extra\":0"), "extra"),
        (edit("\"format\":1", "\"format\":1,\"format\":1"), "duplicate"),
        (
            edit(&format!("\"size\":{uki_size}"), "\"size\":0"),
            "uki part is 0 bytes",
        ),
        (
            edit(
                &format!("\"size\":{uki_size}"),
                &format!("\"size\":{}", MAX_UKI_BYTES + 1),
            ),
            "uki part is 536870913 bytes",
        ),
        (
            edit(&format!("\"size\":{uki_size}"), &format!("\"size\":{}", 2 * CHUNK_SIZE)),
            "uki part lists 3 chunk digests, its size needs 2",
        ),
        (
            edit(&format!("\"{chunk0}\","), ""),
            "uki part lists 2 chunk digests, its size needs 3",
        ),
        (edit(&chunk0, "00"), "$.uki.chunks[0]: expected 64 hex digits"),
        (
            edit("\"tree_end\":12288", "\"tree_end\":12287"),
            "slot part of 77824 bytes is not data and tree (12287 bytes",
        ),
        (
            edit("\"tree_end\":12288", "\"tree_end\":8192"),
            "slot part of 77824 bytes",
        ),
        (edit("\"root_hash\":\"07", "\"root_hash\":\"0"), "$.slot.root_hash"),
        (format!("{text} x"), "malformed JSON"),
    ];
    for (json, want) in cases {
        let err = parse_manifest(json.as_bytes()).unwrap_err().to_string();
        assert!(err.contains(want), "{want:?} not in {err:?}");
    }
    // A signed manifest that is only refused by parsing says so after the signature passed.
    let bad = edit("\"format\":1", "\"format\":9");
    let sig = key(1).sign(bad.as_bytes());
    assert_eq!(
        verify_manifest(bad.as_bytes(), &sig, &key(1).public_key()),
        Err(BundleError::ManifestFormat(9))
    );
    assert_eq!(
        verify_manifest(text.as_bytes(), &sig[..63], &key(1).public_key()),
        Err(BundleError::SignatureLength(63))
    );
    assert!(matches!(
        verify_manifest(&vec![b' '; MAX_MANIFEST_BYTES + 1], &sig, &key(1).public_key()),
        Err(BundleError::ManifestLength(_))
    ));
}
