//! Ed25519 keys in the forms operators already have: what
//! `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` write.
//!
//! Public keys: 32 raw bytes, DER SubjectPublicKeyInfo, or PEM `PUBLIC KEY`.
//! Private keys: PEM `PRIVATE KEY` holding PKCS#8 v1 (openssl) or v2 (ring).
//! A key id is the first 8 bytes of SHA-256 over the raw public key, in hex.

use crate::{hex, pem};
use ring::signature::{self, Ed25519KeyPair, KeyPair};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the raw key follows.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
/// DER prefix of an Ed25519 PKCS#8 v1 private key (RFC 8410); the seed follows.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

pub const PUBLIC_KEY_LEN: usize = 32;
pub const SIGNATURE_LEN: usize = 64;

/// Why a key did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The PEM armour is broken.
    Pem(pem::PemError),
    /// A PEM block with a label other than the one expected.
    Label { expected: &'static str, found: String },
    /// Encrypted private keys need a passphrase prompt basalt does not have.
    Encrypted,
    /// DER that is not an Ed25519 key of the expected shape.
    NotEd25519 { len: usize },
    /// The PKCS#8 document parsed but the key inside was refused.
    Rejected,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Pem(e) => write!(f, "{e}"),
            KeyError::Label { expected, found } => {
                write!(f, "expected a PEM {expected:?} block, found {found:?}")
            }
            KeyError::Encrypted => write!(f, "encrypted private keys are not supported"),
            KeyError::NotEd25519 { len } => {
                write!(f, "not an Ed25519 key ({len} bytes of DER or raw data)")
            }
            KeyError::Rejected => write!(f, "the PKCS#8 Ed25519 key is invalid"),
        }
    }
}

/// A signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadSignature;

impl std::fmt::Display for BadSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ed25519 signature does not verify")
    }
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; PUBLIC_KEY_LEN]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl PublicKey {
    pub const fn from_raw(raw: [u8; PUBLIC_KEY_LEN]) -> Self {
        PublicKey(raw)
    }

    /// Parses a key file's bytes: raw 32 bytes, DER SPKI, or PEM `PUBLIC KEY`.
    pub fn parse(bytes: &[u8]) -> Result<Self, KeyError> {
        // PEM is recognised first: a 32-byte file that starts with a PEM
        // header is a truncated PEM, not a raw key (2^-80 odds otherwise).
        let looks_pem = bytes.trim_ascii_start().starts_with(b"-----BEGIN");
        if !looks_pem {
            if let Ok(raw) = <[u8; PUBLIC_KEY_LEN]>::try_from(bytes) {
                return Ok(PublicKey(raw));
            }
        }
        let der;
        let der_bytes = if looks_pem {
            let text = std::str::from_utf8(bytes).map_err(|_| KeyError::Pem(pem::PemError::NoBegin))?;
            let block = pem::parse(text).map_err(KeyError::Pem)?;
            if block.label != "PUBLIC KEY" {
                return Err(KeyError::Label {
                    expected: "PUBLIC KEY",
                    found: block.label,
                });
            }
            der = block.der;
            &der[..]
        } else {
            bytes
        };
        match der_bytes.strip_prefix(&SPKI_PREFIX[..]) {
            Some(raw) if raw.len() == PUBLIC_KEY_LEN => {
                let mut key = [0u8; PUBLIC_KEY_LEN];
                key.copy_from_slice(raw);
                Ok(PublicKey(key))
            }
            _ => Err(KeyError::NotEd25519 { len: der_bytes.len() }),
        }
    }

    pub fn raw(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// The short name by which envelopes and logs refer to this key.
    pub fn key_id(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        hex::encode(&digest.as_ref()[..8])
    }

    /// PEM SubjectPublicKeyInfo, byte-identical to `openssl pkey -pubout`.
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        pem::encode("PUBLIC KEY", &der)
    }

    /// Verifies an Ed25519 signature over exactly `message`.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> Result<(), BadSignature> {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(message, sig)
            .map_err(|_| BadSignature)
    }
}

/// An Ed25519 private key, for the host tools that sign.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public_key().key_id())
    }
}

impl SigningKey {
    /// Parses a PEM `PRIVATE KEY` holding PKCS#8 v1 or v2.
    pub fn from_pkcs8_pem(text: &str) -> Result<Self, KeyError> {
        let block = pem::parse(text).map_err(KeyError::Pem)?;
        match block.label.as_str() {
            "PRIVATE KEY" => {}
            "ENCRYPTED PRIVATE KEY" => return Err(KeyError::Encrypted),
            _ => {
                return Err(KeyError::Label {
                    expected: "PRIVATE KEY",
                    found: block.label,
                })
            }
        }
        Self::from_pkcs8_der(&block.der)
    }

    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        if der.len() < PKCS8_V1_PREFIX.len() {
            return Err(KeyError::NotEd25519 { len: der.len() });
        }
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(|pair| SigningKey { pair })
            .map_err(|_| KeyError::Rejected)
    }

    /// Makes a key from 32 seed bytes.
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, KeyError> {
        Self::from_pkcs8_der(&pkcs8_v1(seed))
    }

    /// Generates a fresh key from the OS random source. Returns the key and its
    /// PKCS#8 v1 PEM, the same shape `openssl genpkey -algorithm ed25519` writes.
    pub fn generate() -> Result<(Self, String), KeyError> {
        use ring::rand::SecureRandom;
        let mut seed = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| KeyError::Rejected)?;
        let der = pkcs8_v1(&seed);
        let key = Self::from_pkcs8_der(&der)?;
        Ok((key, pem::encode("PRIVATE KEY", &der)))
    }

    pub fn public_key(&self) -> PublicKey {
        let mut raw = [0u8; PUBLIC_KEY_LEN];
        raw.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(raw)
    }

    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut sig = [0u8; SIGNATURE_LEN];
        sig.copy_from_slice(self.pair.sign(message).as_ref());
        sig
    }
}

fn pkcs8_v1(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = PKCS8_V1_PREFIX.to_vec();
    der.extend_from_slice(seed);
    der
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8032 section 7.1, test 1.
    const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const SIG_EMPTY: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";
    // `openssl pkey -pubout` of that key.
    const PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n";
    // `openssl genpkey`-shaped PKCS#8 v1 of that seed.
    const PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";

    fn seed() -> [u8; 32] {
        hex::decode_array(SEED).unwrap()
    }

    #[test]
    fn rfc8032_vector() {
        let key = SigningKey::from_seed(&seed()).unwrap();
        assert_eq!(hex::encode(key.public_key().raw()), PUBLIC);
        assert_eq!(hex::encode(&key.sign(b"")), SIG_EMPTY);
        let sig = hex::decode(SIG_EMPTY).unwrap();
        assert_eq!(key.public_key().verify(b"", &sig), Ok(()));
        assert_eq!(key.public_key().verify(b"x", &sig), Err(BadSignature));
    }

    #[test]
    fn pem_forms_match_openssl() {
        let key = SigningKey::from_pkcs8_pem(PRIVATE_PEM).unwrap();
        assert_eq!(key.public_key().to_pem(), PUBLIC_PEM);
        assert_eq!(PublicKey::parse(PUBLIC_PEM.as_bytes()).unwrap(), key.public_key());
    }

    #[test]
    fn public_key_forms() {
        let raw: [u8; 32] = hex::decode_array(PUBLIC).unwrap();
        let mut spki = SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&raw);
        let forms: &[&[u8]] = &[&raw, &spki, PUBLIC_PEM.as_bytes()];
        for form in forms {
            assert_eq!(PublicKey::parse(form).unwrap().raw(), &raw);
        }
    }

    #[test]
    fn public_key_rejects() {
        let short_pem = pem::encode("PUBLIC KEY", &SPKI_PREFIX);
        let cert = pem::encode("CERTIFICATE", b"x");
        let cases: &[(&[u8], KeyError)] = &[
            (b"", KeyError::NotEd25519 { len: 0 }),
            (&[0u8; 31], KeyError::NotEd25519 { len: 31 }),
            (&[0u8; 44], KeyError::NotEd25519 { len: 44 }),
            (short_pem.as_bytes(), KeyError::NotEd25519 { len: 12 }),
            (
                cert.as_bytes(),
                KeyError::Label {
                    expected: "PUBLIC KEY",
                    found: "CERTIFICATE".into(),
                },
            ),
            (
                b"-----BEGIN PUBLIC KEY-----\nAAAA\n",
                KeyError::Pem(pem::PemError::NoEnd("PUBLIC KEY".into())),
            ),
        ];
        for (bytes, err) in cases {
            assert_eq!(PublicKey::parse(bytes).unwrap_err(), *err);
        }
    }

    #[test]
    fn private_key_rejects() {
        let encrypted = pem::encode("ENCRYPTED PRIVATE KEY", b"whatever");
        assert_eq!(SigningKey::from_pkcs8_pem(&encrypted).unwrap_err(), KeyError::Encrypted);
        assert_eq!(
            SigningKey::from_pkcs8_pem(PUBLIC_PEM).unwrap_err(),
            KeyError::Label {
                expected: "PRIVATE KEY",
                found: "PUBLIC KEY".into()
            }
        );
        let mut wrong_oid = pkcs8_v1(&seed());
        wrong_oid[10] = 0x71; // Ed448
        let text = pem::encode("PRIVATE KEY", &wrong_oid);
        assert_eq!(SigningKey::from_pkcs8_pem(&text).unwrap_err(), KeyError::Rejected);
    }

    #[test]
    fn generated_keys_differ_and_sign() {
        let (a, pem_a) = SigningKey::generate().unwrap();
        let (b, _) = SigningKey::generate().unwrap();
        assert_ne!(a.public_key(), b.public_key());
        let again = SigningKey::from_pkcs8_pem(&pem_a).unwrap();
        assert_eq!(again.public_key(), a.public_key());
        let sig = a.sign(b"msg");
        assert!(a.public_key().verify(b"msg", &sig).is_ok());
        assert!(b.public_key().verify(b"msg", &sig).is_err());
        assert_eq!(a.public_key().key_id().len(), 16);
    }
}
