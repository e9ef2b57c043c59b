//! Key files and their encodings: common/src/keys.rs (public keys raw, DER
//! and PEM; PKCS#8 private keys in PEM and DER), common/src/pem.rs,
//! common/src/b64.rs and common/src/hex.rs. Every input goes through all of
//! them.
//!
//! Checked:
//! - base64 is canonical: decode(encode(x)) == x, and a text that decodes is
//!   exactly the encoding of what it decodes to; the same for hex (modulo case);
//! - a PEM block writes back (pem::encode) to text that parses to the same block;
//! - a public key that parses, in any form, reads back the same from its
//!   raw bytes, its DER and its PEM, and has a 16-hex-digit id;
//! - a private key that parses signs messages its public key verifies;
//! - any 32 bytes are a usable seed.
#![no_main]

use basalt_common::keys::{PublicKey, SigningKey};
use basalt_common::{b64, hex, pem};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_b64(data);
    check_hex(data);
    if let Ok(key) = PublicKey::parse(data) {
        check_public(&key);
    }
    if let Ok(key) = SigningKey::from_pkcs8_der(data) {
        check_signing(&key, data);
    }
    if let Ok(seed) = <[u8; 32]>::try_from(data.get(..32).unwrap_or_default()) {
        let key = SigningKey::from_seed(&seed).expect("any 32 bytes are a seed");
        check_signing(&key, &data[32..]);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(block) = pem::parse(text) {
        let written = pem::encode(&block.label, &block.der);
        assert_eq!(pem::parse(&written).as_ref(), Ok(&block), "written as {written:?}");
    }
    if let Ok(key) = SigningKey::from_pkcs8_pem(text) {
        check_signing(&key, data);
    }
});

fn check_b64(data: &[u8]) {
    let encoded = b64::encode(data);
    assert_eq!(encoded.len(), data.len().div_ceil(3) * 4);
    assert_eq!(b64::decode(&encoded).as_deref(), Ok(data));
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(decoded) = b64::decode(text) {
            assert_eq!(b64::encode(&decoded), text, "non-canonical base64 accepted");
        }
    }
}

fn check_hex(data: &[u8]) {
    let encoded = hex::encode(data);
    assert_eq!(hex::decode(&encoded).as_deref(), Some(data));
    assert_eq!(hex::decode(&encoded.to_ascii_uppercase()).as_deref(), Some(data));
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(decoded) = hex::decode(text) {
            assert_eq!(hex::encode(&decoded), text.to_ascii_lowercase());
        }
        if let Some(array) = hex::decode_array::<32>(text) {
            assert_eq!(hex::decode(text).as_deref(), Some(&array[..]));
        }
    }
}

fn check_public(key: &PublicKey) {
    let id = key.key_id();
    assert_eq!(id.len(), 16);
    assert!(id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')), "{id}");
    let pem_text = key.to_pem();
    assert_eq!(PublicKey::parse(pem_text.as_bytes()).as_ref(), Ok(key));
    // A raw key whose bytes begin like a PEM header is read as (broken) PEM:
    // keys.rs documents the 2^-80 odds of that for a real key.
    if !key.raw().trim_ascii_start().starts_with(b"-----BEGIN") {
        assert_eq!(PublicKey::parse(key.raw()).as_ref(), Ok(key));
    }
    let der = pem::parse(&pem_text).expect("to_pem writes PEM").der;
    assert_eq!(PublicKey::parse(&der).as_ref(), Ok(key));
}

fn check_signing(key: &SigningKey, message: &[u8]) {
    let public = key.public_key();
    check_public(&public);
    let sig = key.sign(message);
    assert!(public.verify(message, &sig).is_ok());
    let mut bad = sig;
    bad[0] ^= 1;
    assert!(public.verify(message, &bad).is_err());
}
