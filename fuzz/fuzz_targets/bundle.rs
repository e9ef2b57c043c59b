//! The update bundle (common/src/bundle/): its header, its signed manifest
//! and the per-chunk checks the agent makes as a bundle arrives.
//!
//! The first byte picks the mode:
//! - 0: the rest is a bundle for `read_header` and `verify_bundle` with the
//!   fixed key: every error is true of the bytes, and the header's lengths
//!   are within their limits whenever it reads;
//! - 1: the rest is manifest JSON, signed with the fixed key, so
//!   `parse_manifest` is reached: `verify_manifest` gives exactly what
//!   `parse_manifest` gives, another key refuses, and whatever parses keeps
//!   the manifest's promises (a digest per chunk, a slot part of data and
//!   tree plus one manifest area, sizes within limits) and writes back to
//!   bytes that parse to the same manifest;
//! - 2 and up: a bundle built from the input (a UKI of up to 2 MiB and 4 KiB and a
//!   slot of 1 to 8 blocks plus its area): it verifies whole; one flipped
//!   byte anywhere, a cut anywhere, or one byte more is refused; a chunk checks under its
//!   own index exactly, and is refused under any other or with a byte flipped.
#![no_main]

use basalt_common::bundle::{
    build_bundle, check_chunk, chunk_count, chunk_range, digest_part, encode_manifest, parse_manifest, read_header,
    verify_bundle, verify_manifest, Arch, BundleError, BundleManifest, Part, SlotPart, CHUNK_SIZE, FORMAT, HEADER_LEN,
    MAGIC, MAX_MANIFEST_BYTES, MAX_SLOT_BYTES, MAX_UKI_BYTES, TARGETS,
};
use basalt_common::disk::slot::AREA_SIZE;
use basalt_common::keys::SIGNATURE_LEN;
use basalt_fuzz::{other_key, signing_key, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.byte() {
        0 => check_any(input.rest()),
        1 => check_signed(input.rest()),
        _ => check_built(input),
    }
});

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn check_any(bytes: &[u8]) {
    let header = read_header(bytes);
    match &header {
        Ok(h) => {
            assert_eq!(&bytes[..8], MAGIC);
            assert_eq!(u32_at(bytes, 8), FORMAT);
            assert!(h.manifest_len > 0 && h.manifest_len <= MAX_MANIFEST_BYTES);
            assert_eq!(h.manifest_len, u32_at(bytes, 12) as usize);
            assert_eq!(h.signature_len, SIGNATURE_LEN);
            assert_eq!(h.parts_offset(), (HEADER_LEN + h.manifest_len + SIGNATURE_LEN) as u64);
        }
        Err(BundleError::Truncated { need, have, .. }) => {
            assert!(bytes.len() < HEADER_LEN && *need == 20 && *have == bytes.len() as u64)
        }
        Err(BundleError::BadMagic) => assert_ne!(&bytes[..8], MAGIC),
        Err(BundleError::Format(n)) => assert!(*n != FORMAT && *n == u32_at(bytes, 8)),
        Err(BundleError::ManifestLength(n)) => assert!(*n == 0 || *n as usize > MAX_MANIFEST_BYTES),
        Err(BundleError::SignatureLength(n)) => assert_ne!(*n as usize, SIGNATURE_LEN),
        Err(e) => panic!("read_header looked past the header: {e}"),
    }
    let whole = verify_bundle(bytes, &signing_key().public_key());
    match (&header, &whole) {
        (Err(e), _) => assert_eq!(whole.as_ref(), Err(e)),
        (Ok(h), Ok(m)) => {
            // Only a bundle signed with the fixed key gets here.
            assert_eq!(bytes.len() as u64, h.parts_offset() + m.parts_len());
            check_manifest(m);
        }
        (Ok(_), Err(BundleError::Truncated { need, have, .. })) => {
            assert!(*need > *have && *have == bytes.len() as u64);
        }
        (Ok(_), Err(_)) => {}
    }
}

fn check_manifest(m: &BundleManifest) {
    for (part, max) in [(Part::Uki, MAX_UKI_BYTES), (Part::Slot, MAX_SLOT_BYTES)] {
        let d = m.part(part);
        assert!(d.size > 0 && d.size <= max);
        assert_eq!(d.chunks.len() as u64, chunk_count(d.size));
        let last = chunk_range(m, part, d.chunks.len() as u64 - 1).unwrap();
        assert_eq!(last.end, d.size);
        assert!(last.end - last.start <= CHUNK_SIZE && last.end > last.start);
        assert!(matches!(
            chunk_range(m, part, d.chunks.len() as u64),
            Err(BundleError::ChunkIndex { .. })
        ));
    }
    assert_eq!(m.slot.tree_end % 4096, 0);
    assert_eq!(m.slot.tree_end + AREA_SIZE, m.slot.digest.size);
    assert!(TARGETS.contains(&m.target.as_str()));
    assert!(!m.version.is_empty() && !m.version.chars().any(char::is_control));
    let written = encode_manifest(m);
    if written.len() <= MAX_MANIFEST_BYTES {
        assert_eq!(parse_manifest(&written).as_ref(), Ok(m));
        assert_eq!(encode_manifest(m), written, "encode_manifest is deterministic");
    }
}

fn check_signed(json: &[u8]) {
    let signer = signing_key();
    let sig = signer.sign(json);
    let parsed = parse_manifest(json);
    if let Ok(m) = &parsed {
        check_manifest(m);
    }
    if let Err(e) = &parsed {
        assert!(
            !matches!(e, BundleError::BadSignature { .. } | BundleError::SignatureLength(_)),
            "parse_manifest looked at a signature: {e}"
        );
    }
    let got = verify_manifest(json, &sig, &signer.public_key());
    if json.is_empty() || json.len() > MAX_MANIFEST_BYTES {
        assert!(matches!(got, Err(BundleError::ManifestLength(_))));
        return;
    }
    assert_eq!(got, parsed);
    let other = other_key().public_key();
    assert_eq!(
        verify_manifest(json, &sig, &other),
        Err(BundleError::BadSignature { key_id: other.key_id() })
    );
}

fn check_built(mut input: Input) {
    let uki_len = usize::from(input.byte() % 33) * (64 << 10) + usize::from(input.u16()) % 4096 + 1;
    let data_blocks = usize::from(input.byte() % 8) + 1;
    let version_seq = u64::from(input.u16());
    let flip_at = usize::from(input.u16()) | usize::from(input.byte()) << 16;
    let cut_at = usize::from(input.u16()) | usize::from(input.byte()) << 16;
    let part = if input.byte() & 1 == 0 { Part::Uki } else { Part::Slot };
    let index = u64::from(input.byte() % 5);
    let fill = input.rest();
    let pattern = |len: usize, salt: u8| -> Vec<u8> {
        (0..len)
            .map(|i| {
                fill.get(i % fill.len().max(1)).copied().unwrap_or(0)
                    ^ (i as u8).wrapping_mul(salt)
                    ^ (i >> 12) as u8
                    ^ (i >> 20) as u8
            })
            .collect()
    };
    let uki = pattern(uki_len, 31);
    let slot = pattern(data_blocks * 4096 + AREA_SIZE as usize, 7);
    let m = BundleManifest {
        version: format!("fuzz-{version_seq}"),
        version_seq,
        arch: Arch::X86_64,
        target: TARGETS[usize::from(version_seq % 2 == 1)].to_string(),
        uki: digest_part(&uki),
        slot: SlotPart {
            digest: digest_part(&slot),
            tree_end: (data_blocks * 4096) as u64,
            root_hash: [version_seq as u8; 32],
        },
    };
    let key = signing_key();
    let bundle = build_bundle(&m, &key, &uki, &slot).unwrap();
    let pk = key.public_key();
    assert_eq!(verify_bundle(&bundle, &pk).as_ref(), Ok(&m));
    check_manifest(&m);

    let mut flipped = bundle.clone();
    flipped[flip_at % bundle.len()] ^= 1 << (flip_at % 8);
    assert!(
        verify_bundle(&flipped, &pk).is_err(),
        "a flipped byte at {} passed",
        flip_at % bundle.len()
    );
    let cut = cut_at % bundle.len();
    assert!(
        verify_bundle(&bundle[..cut], &pk).is_err(),
        "a bundle cut at {cut} passed"
    );
    let mut longer = bundle.clone();
    longer.push(fill.first().copied().unwrap_or(0));
    assert_eq!(
        verify_bundle(&longer, &pk),
        Err(BundleError::TrailingBytes {
            at: bundle.len() as u64
        })
    );

    let h = read_header(&bundle).unwrap();
    let count = chunk_count(m.part(part).size);
    match chunk_range(&m, part, index) {
        Ok(r) => {
            assert!(index < count);
            let at = h.parts_offset() + m.part_offset(part);
            let chunk = &bundle[(at + r.start) as usize..(at + r.end) as usize];
            assert_eq!(check_chunk(&m, part, index, chunk), Ok(()));
            for other in 0..count {
                if other != index {
                    assert!(check_chunk(&m, part, other, chunk).is_err());
                }
            }
            let mut bad = chunk.to_vec();
            let i = flip_at % bad.len();
            bad[i] ^= 0x80;
            assert_eq!(
                check_chunk(&m, part, index, &bad),
                Err(BundleError::ChunkDigest { part, index })
            );
        }
        Err(e) => {
            assert!(index >= count);
            assert_eq!(e, BundleError::ChunkIndex { part, index, count });
        }
    }
}
