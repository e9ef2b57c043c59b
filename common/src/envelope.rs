//! Signed envelopes: how a configuration or a command reaches the agent.
//!
//! ```json
//! {"payload": "<base64 of the payload bytes>",
//!  "signature": "<base64 of the 64-byte Ed25519 signature over those bytes>",
//!  "key_id": "<16 hex digits naming the signing key>"}
//! ```
//!
//! The signature covers the exact payload bytes, so no JSON canonicalisation
//! is involved and `openssl pkeyutl -sign -rawin` can produce one. The agent
//! checks the signature before it parses a single byte of the payload.

use crate::json::{self, Fields, JsonError};
use crate::keys::{PublicKey, SigningKey, SIGNATURE_LEN};
use crate::{b64, hex};
use serde_json::{json, Value};

/// Length of a key id in hex digits (see [`PublicKey::key_id`]).
pub const KEY_ID_LEN: usize = 16;

/// A payload with its signature, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEnvelope {
    pub payload: Vec<u8>,
    pub signature: [u8; SIGNATURE_LEN],
    pub key_id: String,
}

/// Why an envelope's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// No trusted key has this id.
    UnknownKey { key_id: String },
    /// A trusted key has this id, but the signature does not verify with it.
    BadSignature { key_id: String },
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyError::UnknownKey { key_id } => {
                write!(f, "key {key_id} is not among this node's trusted keys")
            }
            VerifyError::BadSignature { key_id } => {
                write!(f, "signature does not verify with trusted key {key_id}")
            }
        }
    }
}

impl SignedEnvelope {
    /// Signs `payload` with `key`.
    pub fn sign(key: &SigningKey, payload: Vec<u8>) -> Self {
        let signature = key.sign(&payload);
        SignedEnvelope {
            payload,
            signature,
            key_id: key.public_key().key_id(),
        }
    }

    /// Reads an envelope from its JSON object, strictly: all three fields are
    /// required, nothing else is allowed, and every encoding must be canonical.
    pub fn from_json(value: &Value, path: &str) -> Result<Self, JsonError> {
        let f = Fields::new(value, path, &["payload", "signature", "key_id"])?;
        let payload =
            b64::decode(f.str("payload")?).map_err(|e| JsonError::new(f.path_of("payload"), e.to_string()))?;
        let sig =
            b64::decode(f.str("signature")?).map_err(|e| JsonError::new(f.path_of("signature"), e.to_string()))?;
        let signature: [u8; SIGNATURE_LEN] = sig.as_slice().try_into().map_err(|_| {
            JsonError::new(
                f.path_of("signature"),
                format!("signature is {} bytes, expected {SIGNATURE_LEN}", sig.len()),
            )
        })?;
        let key_id = f.str("key_id")?;
        let well_formed =
            key_id.len() == KEY_ID_LEN && key_id.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
        if !well_formed {
            return Err(JsonError::new(
                f.path_of("key_id"),
                format!("key id must be {KEY_ID_LEN} lower-case hex digits"),
            ));
        }
        Ok(SignedEnvelope {
            payload,
            signature,
            key_id: key_id.to_string(),
        })
    }

    /// Parses an envelope file (one JSON object).
    pub fn parse(bytes: &[u8]) -> Result<Self, JsonError> {
        Self::from_json(&json::parse_strict(bytes)?, "$")
    }

    pub fn to_json(&self) -> Value {
        json!({
            "payload": b64::encode(&self.payload),
            "signature": b64::encode(&self.signature),
            "key_id": self.key_id,
        })
    }

    /// Checks the signature against the trusted keys. Returns the key that
    /// signed, so callers can log which one was used.
    pub fn verify<'k>(&self, trusted: &'k [PublicKey]) -> Result<&'k PublicKey, VerifyError> {
        let mut candidates = trusted.iter().filter(|k| k.key_id() == self.key_id).peekable();
        if candidates.peek().is_none() {
            return Err(VerifyError::UnknownKey {
                key_id: self.key_id.clone(),
            });
        }
        // Two keys sharing a 64-bit id is not expected, but trying each costs nothing.
        candidates
            .find(|k| k.verify(&self.payload, &self.signature).is_ok())
            .ok_or_else(|| VerifyError::BadSignature {
                key_id: self.key_id.clone(),
            })
    }

    /// SHA-256 of the payload, in hex: how status and logs name a config.
    pub fn digest(&self) -> String {
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &self.payload).as_ref())
    }
}

/// Reads the `kind` member that every signed payload carries, so that a
/// signed config can never be taken for a command or the other way round.
pub fn payload_kind(doc: &Value) -> Result<&str, JsonError> {
    match doc {
        Value::Object(map) => match map.get("kind") {
            Some(v) => json::as_str(v, "$.kind"),
            None => Err(JsonError::new("$.kind", "missing field")),
        },
        _ => Err(JsonError::new("$", "expected an object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_seed(&[n; 32]).unwrap()
    }

    #[test]
    fn sign_round_trip_and_verify() {
        let k = key(1);
        let env = SignedEnvelope::sign(&k, b"{\"kind\":\"config\"}".to_vec());
        let text = serde_json::to_vec(&env.to_json()).unwrap();
        let back = SignedEnvelope::parse(&text).unwrap();
        assert_eq!(back, env);
        let trusted = [key(2).public_key(), k.public_key()];
        assert_eq!(back.verify(&trusted).unwrap(), &k.public_key());
        assert_eq!(back.digest().len(), 64);
    }

    #[test]
    fn verification_failures() {
        let signer = key(1);
        let other = key(2);
        let good = SignedEnvelope::sign(&signer, b"payload".to_vec());
        let mut tampered = good.clone();
        tampered.payload[0] ^= 1;
        let mut flipped_sig = good.clone();
        flipped_sig.signature[10] ^= 0x40;
        // Signed by `other` but claiming `signer`'s id.
        let mut forged = SignedEnvelope::sign(&other, b"payload".to_vec());
        forged.key_id = signer.public_key().key_id();
        let id = signer.public_key().key_id();
        let cases = [
            (
                &good,
                &[other.public_key()][..],
                VerifyError::UnknownKey { key_id: id.clone() },
            ),
            (&good, &[][..], VerifyError::UnknownKey { key_id: id.clone() }),
            (
                &tampered,
                &[signer.public_key()][..],
                VerifyError::BadSignature { key_id: id.clone() },
            ),
            (
                &flipped_sig,
                &[signer.public_key()][..],
                VerifyError::BadSignature { key_id: id.clone() },
            ),
            (
                &forged,
                &[signer.public_key()][..],
                VerifyError::BadSignature { key_id: id.clone() },
            ),
        ];
        for (env, trusted, err) in cases {
            assert_eq!(env.verify(trusted).unwrap_err(), err);
        }
    }

    #[test]
    fn parse_rejects_with_paths() {
        let sig = b64::encode(&[0u8; 64]);
        let id = "0123456789abcdef";
        let cases: Vec<(String, &str)> = vec![
            ("[]".into(), "$: expected an object, found an array"),
            (
                format!(r#"{{"signature":"{sig}","key_id":"{id}"}}"#),
                "$.payload: missing field",
            ),
            (
                format!(r#"{{"payload":"","signature":"{sig}","key_id":"{id}","extra":1}}"#),
                "$.extra: unknown field",
            ),
            (
                format!(r#"{{"payload":"e30","signature":"{sig}","key_id":"{id}"}}"#),
                "$.payload: base64 length 3 is not a multiple of 4",
            ),
            (
                format!(r#"{{"payload":"e30=","signature":"AAAA","key_id":"{id}"}}"#),
                "$.signature: signature is 3 bytes, expected 64",
            ),
            (
                format!(r#"{{"payload":"e30=","signature":"{sig}","key_id":"0123456789ABCDEF"}}"#),
                "$.key_id: key id must be 16 lower-case hex digits",
            ),
            (
                format!(r#"{{"payload":"e30=","signature":"{sig}","key_id":"0123"}}"#),
                "$.key_id: key id must be 16 lower-case hex digits",
            ),
            (
                format!(r#"{{"payload":1,"signature":"{sig}","key_id":"{id}"}}"#),
                "$.payload: expected a string, found a non-negative integer",
            ),
            (
                format!(r#"{{"payload":"e30=","payload":"e30=","signature":"{sig}","key_id":"{id}"}}"#),
                "duplicate key \"payload\"",
            ),
        ];
        for (text, want) in cases {
            let err = SignedEnvelope::parse(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: got {err}, want {want}");
        }
        let ok = format!(r#"{{"payload":"e30=","signature":"{sig}","key_id":"{id}"}}"#);
        assert_eq!(SignedEnvelope::parse(ok.as_bytes()).unwrap().payload, b"{}");
    }

    #[test]
    fn payload_kind_table() {
        let cases = [
            (r#"{"kind":"config"}"#, Ok("config")),
            (r#"{"kind":"reboot","node":"x"}"#, Ok("reboot")),
            (r#"{"node":"x"}"#, Err("$.kind: missing field")),
            (
                r#"{"kind":7}"#,
                Err("$.kind: expected a string, found a non-negative integer"),
            ),
            (r#"[1]"#, Err("$: expected an object")),
        ];
        for (text, want) in cases {
            let doc = json::parse_strict(text.as_bytes()).unwrap();
            let got = payload_kind(&doc).map_err(|e| e.to_string());
            assert_eq!(got.as_deref().map_err(String::as_str), want, "{text}");
        }
    }
}
