//! The image manifest: what basalt-init must find before it trusts a root.
//!
//! `basalt-mkimage` writes `manifest.json` and `manifest.sig` (64 raw bytes,
//! Ed25519 over exactly the JSON bytes) into the initramfs. basalt-init checks
//! the signature against the key compiled into it *before* parsing a byte of
//! the JSON, then holds the image and every module to the digests listed here.
//! Because the signature covers raw bytes, `openssl pkeyutl -verify -rawin`
//! can check a manifest too.

use crate::hex;
use crate::json::{self, Fields, JsonError};
use crate::keys::{PublicKey, SIGNATURE_LEN};
use crate::text::clip;
use serde_json::{json, Value};

/// The only manifest format this build reads or writes.
pub const FORMAT: u64 = 1;
/// A manifest larger than this is refused unread.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// What runs after switch-root unless the manifest or command line names another.
pub const DEFAULT_HANDOFF: &str = "/sbin/basalt-agent";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Free-form version of the image, e.g. `0.1.0+g1a2b3c4`.
    pub version: String,
    /// The kernel release the modules were taken from (`uname -r`).
    pub kernel: String,
    pub image: ImageDigest,
    /// Modules in load order: every module comes after its dependencies.
    pub modules: Vec<ModuleEntry>,
    /// Absolute path, inside the root image, of the program init hands off to.
    pub handoff: String,
}

/// Size and SHA-256 of the SquashFS root image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDigest {
    pub size: u64,
    pub sha256: [u8; 32],
}

/// One kernel module, packed at `/basalt/modules/<name>.ko`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleEntry {
    /// Module name as the kernel knows it (dashes normalised to underscores).
    pub name: String,
    pub sha256: [u8; 32],
}

impl ModuleEntry {
    /// Where the module lives inside the initramfs.
    pub fn initramfs_path(&self) -> String {
        format!("/basalt/modules/{}.ko", self.name)
    }
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestError {
    TooLarge(usize),
    SignatureLength(usize),
    /// The signature does not verify with the trusted key (named by its id).
    BadSignature {
        key_id: String,
    },
    Json(JsonError),
    Format(u64),
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManifestError::TooLarge(n) => {
                write!(f, "manifest is {n} bytes, more than the {MAX_MANIFEST_BYTES} allowed")
            }
            ManifestError::SignatureLength(n) => {
                write!(f, "manifest signature is {n} bytes, expected {SIGNATURE_LEN}")
            }
            ManifestError::BadSignature { key_id } => {
                write!(f, "manifest signature does not verify with image key {key_id}")
            }
            ManifestError::Json(e) => write!(f, "manifest {e}"),
            ManifestError::Format(n) => {
                write!(f, "manifest format {n} is not supported (this build reads {FORMAT})")
            }
        }
    }
}

impl From<JsonError> for ManifestError {
    fn from(e: JsonError) -> Self {
        ManifestError::Json(e)
    }
}

/// Checks the signature over the exact bytes, then parses them.
pub fn verify_manifest(json_bytes: &[u8], signature: &[u8], key: &PublicKey) -> Result<Manifest, ManifestError> {
    if json_bytes.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge(json_bytes.len()));
    }
    if signature.len() != SIGNATURE_LEN {
        return Err(ManifestError::SignatureLength(signature.len()));
    }
    key.verify(json_bytes, signature)
        .map_err(|_| ManifestError::BadSignature { key_id: key.key_id() })?;
    parse_manifest(json_bytes)
}

/// Parses manifest JSON strictly. Does not check any signature.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge(bytes.len()));
    }
    let doc = json::parse_strict(bytes)?;
    let top = Fields::new(
        &doc,
        "$",
        &["format", "version", "kernel", "image", "modules", "handoff"],
    )?;
    let format = top.u64("format")?;
    if format != FORMAT {
        return Err(ManifestError::Format(format));
    }
    let image_fields = Fields::new(top.req("image")?, &top.path_of("image"), &["size", "sha256"])?;
    let image = ImageDigest {
        size: image_fields.u64("size")?,
        sha256: digest(&image_fields, "sha256")?,
    };
    let mut modules = Vec::new();
    for (i, entry) in top.array("modules")?.iter().enumerate() {
        let path = json::index(&top.path_of("modules"), i);
        let m = Fields::new(entry, &path, &["name", "sha256"])?;
        let name = m.str("name")?;
        if !valid_module_name(name) {
            return Err(JsonError::new(m.path_of("name"), format!("invalid module name {:?}", clip(name))).into());
        }
        if modules.iter().any(|e: &ModuleEntry| e.name == name) {
            return Err(JsonError::new(m.path_of("name"), format!("module {:?} listed twice", clip(name))).into());
        }
        modules.push(ModuleEntry {
            name: name.to_string(),
            sha256: digest(&m, "sha256")?,
        });
    }
    let handoff = top.opt_str("handoff")?.unwrap_or(DEFAULT_HANDOFF);
    if !valid_absolute_path(handoff) {
        return Err(JsonError::new(
            top.path_of("handoff"),
            format!("not a clean absolute path: {handoff:?}"),
        )
        .into());
    }
    Ok(Manifest {
        version: top.str("version")?.to_string(),
        kernel: top.str("kernel")?.to_string(),
        image,
        modules,
        handoff: handoff.to_string(),
    })
}

/// Writes the manifest as deterministic JSON (sorted keys, two-space indent).
pub fn build_manifest(m: &Manifest) -> Vec<u8> {
    let modules: Vec<Value> = m
        .modules
        .iter()
        .map(|e| json!({"name": e.name, "sha256": hex::encode(&e.sha256)}))
        .collect();
    let doc = json!({
        "format": FORMAT,
        "version": m.version,
        "kernel": m.kernel,
        "image": {"size": m.image.size, "sha256": hex::encode(&m.image.sha256)},
        "modules": modules,
        "handoff": m.handoff,
    });
    let mut out = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    out.push(b'\n');
    out
}

fn digest(f: &Fields, key: &str) -> Result<[u8; 32], JsonError> {
    let text = f.str(key)?;
    hex::decode_array(text).ok_or_else(|| JsonError::new(f.path_of(key), "expected 64 hex digits of SHA-256"))
}

/// Module names are what the kernel reports: `[a-z0-9_]`, at most 55 bytes
/// (MODULE_NAME_LEN - 1). This also keeps them safe to join into a path.
pub fn valid_module_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 55
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// An absolute path with no empty, `.` or `..` components.
pub fn valid_absolute_path(path: &str) -> bool {
    match path.strip_prefix('/') {
        None => false,
        Some(rest) => {
            !rest.is_empty() && !path.contains('\0') && rest.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;

    fn sample() -> Manifest {
        Manifest {
            version: "0.1.0".into(),
            kernel: "6.1.0-56-amd64".into(),
            image: ImageDigest {
                size: 4096,
                sha256: [7; 32],
            },
            modules: vec![
                ModuleEntry {
                    name: "virtio_ring".into(),
                    sha256: [1; 32],
                },
                ModuleEntry {
                    name: "virtio".into(),
                    sha256: [2; 32],
                },
            ],
            handoff: "/sbin/basalt-agent".into(),
        }
    }

    fn key(n: u8) -> SigningKey {
        SigningKey::from_seed(&[n; 32]).unwrap()
    }

    #[test]
    fn build_then_parse_round_trips() {
        let bytes = build_manifest(&sample());
        assert_eq!(parse_manifest(&bytes).unwrap(), sample());
        assert_eq!(build_manifest(&sample()), bytes, "deterministic");
        assert_eq!(sample().modules[0].initramfs_path(), "/basalt/modules/virtio_ring.ko");
    }

    #[test]
    fn signature_is_checked_before_parsing() {
        let bytes = build_manifest(&sample());
        let sig = key(1).sign(&bytes);
        assert_eq!(verify_manifest(&bytes, &sig, &key(1).public_key()).unwrap(), sample());
        let other = key(2).public_key();
        assert_eq!(
            verify_manifest(&bytes, &sig, &other),
            Err(ManifestError::BadSignature { key_id: other.key_id() })
        );
        // Garbage that is correctly signed still fails to parse; unsigned garbage
        // fails on the signature without reaching the parser.
        let garbage = b"{not json";
        assert_eq!(
            verify_manifest(garbage, &key(1).sign(b"other"), &key(1).public_key()),
            Err(ManifestError::BadSignature {
                key_id: key(1).public_key().key_id()
            })
        );
        assert!(matches!(
            verify_manifest(garbage, &key(1).sign(garbage), &key(1).public_key()),
            Err(ManifestError::Json(_))
        ));
        assert_eq!(
            verify_manifest(&bytes, &sig[..63], &key(1).public_key()),
            Err(ManifestError::SignatureLength(63))
        );
        let mut flipped = bytes.clone();
        flipped[10] ^= 1;
        assert!(matches!(
            verify_manifest(&flipped, &sig, &key(1).public_key()),
            Err(ManifestError::BadSignature { .. })
        ));
    }

    #[test]
    fn parse_rejects_table() {
        let good = String::from_utf8(build_manifest(&sample())).unwrap();
        let digest7 = hex::encode(&[7; 32]);
        let cases: Vec<(String, &str)> = vec![
            (
                good.replace("\"format\": 1", "\"format\": 2"),
                "manifest format 2 is not supported",
            ),
            (good.replace("\"version\"", "\"versoin\""), "$.versoin: unknown field"),
            (good.replace(&digest7, "abc"), "$.image.sha256: expected 64 hex digits"),
            (
                good.replace("\"size\": 4096", "\"size\": \"4096\""),
                "$.image.size: expected a non-negative integer",
            ),
            (
                good.replace("\"virtio\"", "\"../etc\""),
                "$.modules[1].name: invalid module name",
            ),
            (
                good.replace("\"virtio\"", "\"virtio_ring\""),
                "$.modules[1].name: module \"virtio_ring\" listed twice",
            ),
            (
                good.replace("/sbin/basalt-agent", "sbin/agent"),
                "$.handoff: not a clean absolute path",
            ),
            (
                good.replace("/sbin/basalt-agent", "/sbin/../bin/sh"),
                "$.handoff: not a clean absolute path",
            ),
            (
                good.replace("\"kernel\"", "\"kernel\": \"x\", \"kernel\""),
                "duplicate key \"kernel\"",
            ),
        ];
        for (text, needle) in cases {
            let err = parse_manifest(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(needle), "wanted {needle:?} in {err:?}");
        }
        let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert_eq!(
            parse_manifest(&big),
            Err(ManifestError::TooLarge(MAX_MANIFEST_BYTES + 1))
        );
    }

    #[test]
    fn handoff_defaults() {
        let text = String::from_utf8(build_manifest(&sample())).unwrap();
        let without = text.replace(",\n  \"handoff\": \"/sbin/basalt-agent\"", "");
        assert_ne!(without, text);
        assert_eq!(parse_manifest(without.as_bytes()).unwrap().handoff, DEFAULT_HANDOFF);
    }

    #[test]
    fn path_and_name_rules() {
        for ok in ["/sbin/basalt-agent", "/a", "/usr/lib/x.y"] {
            assert!(valid_absolute_path(ok), "{ok}");
        }
        for bad in ["", "/", "a/b", "/a//b", "/a/./b", "/a/../b", "/a/", "/a\0b"] {
            assert!(!valid_absolute_path(bad), "{bad:?}");
        }
        assert!(valid_module_name("vmw_vsock_virtio_transport_common"));
        for bad in ["", "dm-mod", "Loop", "a/b", &"x".repeat(56)] {
            assert!(!valid_module_name(bad), "{bad:?}");
        }
    }
}
