//! The signed image manifest (common/src/manifest.rs) that basalt-init reads
//! from the initramfs.
//!
//! The first byte picks the mode:
//! - 0: the rest is manifest JSON for `parse_manifest`;
//! - 1: a signature (64 or no bytes, or a length of 0 to 127 picked by the
//!   second byte) and
//!   then the JSON, for `verify_manifest` with the fixed key: it must refuse
//!   unless the signature really verifies;
//! - 2 and up: the rest is JSON, signed with the fixed key: `verify_manifest`
//!   must then give exactly what `parse_manifest` gives, and refuse the same
//!   bytes under another key.
//!
//! Whatever parses obeys the manifest's rules (clean module names listed
//! once, a clean absolute handoff path) and `build_manifest` writes it back
//! to bytes that parse to the same manifest, deterministically.
#![no_main]

use basalt_common::keys::SIGNATURE_LEN;
use basalt_common::manifest::{
    build_manifest, parse_manifest, valid_absolute_path, valid_module_name, verify_manifest, Manifest, ManifestError,
    MAX_MANIFEST_BYTES,
};
use basalt_fuzz::{other_key, signing_key, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.byte() {
        0 => {
            let _ = check_parse(input.rest());
        }
        1 => {
            let sig_len = match input.byte() {
                n @ 0..=127 => usize::from(n % 2) * SIGNATURE_LEN,
                n => usize::from(n - 128),
            };
            let sig = input.bytes(sig_len);
            check_random_signature(input.rest(), sig);
        }
        _ => check_signed(input.rest()),
    }
});

fn check_parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    let parsed = parse_manifest(bytes);
    match &parsed {
        Ok(m) => check_manifest(m),
        Err(ManifestError::TooLarge(n)) => assert!(*n > MAX_MANIFEST_BYTES && *n == bytes.len()),
        Err(ManifestError::Json(e)) => assert!(e.path.starts_with('$'), "{e}"),
        Err(ManifestError::Format(n)) => assert_ne!(*n, basalt_common::manifest::FORMAT),
        Err(e @ (ManifestError::SignatureLength(_) | ManifestError::BadSignature { .. })) => {
            panic!("parse_manifest looked at a signature: {e}")
        }
    }
    parsed
}

fn check_manifest(m: &Manifest) {
    for (i, module) in m.modules.iter().enumerate() {
        assert!(valid_module_name(&module.name), "{:?}", module.name);
        assert!(m.modules[..i].iter().all(|e| e.name != module.name));
        assert!(valid_absolute_path(&module.initramfs_path()));
    }
    assert!(valid_absolute_path(&m.handoff), "{:?}", m.handoff);
    let written = build_manifest(m);
    // Long free-form strings can grow past the cap once escaped.
    if written.len() <= MAX_MANIFEST_BYTES {
        assert_eq!(parse_manifest(&written).as_ref(), Ok(m));
        assert_eq!(build_manifest(m), written, "build_manifest is deterministic");
    }
}

fn check_random_signature(json: &[u8], sig: &[u8]) {
    let key = signing_key().public_key();
    let got = verify_manifest(json, sig, &key);
    if json.len() > MAX_MANIFEST_BYTES {
        assert_eq!(got, Err(ManifestError::TooLarge(json.len())));
    } else if sig.len() != SIGNATURE_LEN {
        assert_eq!(got, Err(ManifestError::SignatureLength(sig.len())));
    } else if key.verify(json, sig).is_err() {
        assert_eq!(got, Err(ManifestError::BadSignature { key_id: key.key_id() }));
    } else {
        assert_eq!(got, check_parse(json));
    }
}

fn check_signed(json: &[u8]) {
    let signer = signing_key();
    let sig = signer.sign(json);
    let got = verify_manifest(json, &sig, &signer.public_key());
    assert_eq!(got, check_parse(json));
    let other = other_key().public_key();
    let refused = verify_manifest(json, &sig, &other);
    if json.len() <= MAX_MANIFEST_BYTES {
        assert_eq!(refused, Err(ManifestError::BadSignature { key_id: other.key_id() }));
    } else {
        assert_eq!(refused, Err(ManifestError::TooLarge(json.len())));
    }
}
