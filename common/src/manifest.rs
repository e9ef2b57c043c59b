//! The image manifest: what basalt-init must find before it trusts a root.
//!
//! `basalt-mkimage` writes `manifest.json` and `manifest.sig` (64 raw bytes,
//! Ed25519 over exactly the JSON bytes) into the initramfs. basalt-init checks
//! the signature against the key compiled into it *before* parsing a byte of
//! the JSON, then holds the image and every module to the digests listed here.
//! Because the signature covers raw bytes, `openssl pkeyutl -verify -rawin`
//! can check a manifest too.
//!
//! A manifest for a disk slot also carries `verity`: the dm-verity tree's
//! parameters and root hash. The same signed bytes sit in the UKI's
//! initramfs and in the slot's manifest area (`disk::slot`).

use crate::disk::verity;
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
    /// The dm-verity tree of the image, when it sits on a disk slot.
    pub verity: Option<Verity>,
}

/// The dm-verity parameters of a root slot (docs/disk-layout.md). The
/// algorithm (`sha256`), format version (1) and block sizes (4096) are fixed:
/// they are written out and must read back exactly so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verity {
    pub data_blocks: u64,
    /// Byte offset of the tree in the partition: `data_blocks * 4096`.
    pub hash_offset: u64,
    pub hash_blocks: u64,
    pub salt: Vec<u8>,
    pub root_hash: [u8; 32],
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
        &["format", "version", "kernel", "image", "modules", "handoff", "verity"],
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
    let verity = match top.opt("verity") {
        None => None,
        Some(v) => Some(parse_verity(v, &top.path_of("verity"), image.size)?),
    };
    Ok(Manifest {
        version: top.str("version")?.to_string(),
        kernel: top.str("kernel")?.to_string(),
        image,
        modules,
        handoff: handoff.to_string(),
        verity,
    })
}

/// The `verity` object: the fixed parameters must be what this build
/// writes, and the sizes must agree with each other and with the image.
fn parse_verity(value: &Value, path: &str, image_size: u64) -> Result<Verity, JsonError> {
    let f = Fields::new(
        value,
        path,
        &[
            "algorithm",
            "version",
            "data_block_size",
            "hash_block_size",
            "data_blocks",
            "hash_offset",
            "hash_blocks",
            "salt",
            "root_hash",
        ],
    )?;
    let algorithm = f.str("algorithm")?;
    if algorithm != verity::ALGORITHM {
        return Err(JsonError::new(
            f.path_of("algorithm"),
            format!("{algorithm:?} is not supported (only {:?})", verity::ALGORITHM),
        ));
    }
    let block = verity::BLOCK_SIZE as u64;
    for (key, want) in [
        ("version", verity::VERSION),
        ("data_block_size", block),
        ("hash_block_size", block),
    ] {
        let n = f.u64(key)?;
        if n != want {
            return Err(JsonError::new(
                f.path_of(key),
                format!("{n} is not supported (only {want})"),
            ));
        }
    }
    let data_blocks = f.u64("data_blocks")?;
    let want_blocks = verity::data_blocks(image_size);
    if data_blocks == 0 || data_blocks != want_blocks {
        return Err(JsonError::new(
            f.path_of("data_blocks"),
            format!("{data_blocks}, but an image of {image_size} bytes is {want_blocks} blocks of {block}"),
        ));
    }
    let hash_offset = f.u64("hash_offset")?;
    if Some(hash_offset) != data_blocks.checked_mul(block) {
        return Err(JsonError::new(
            f.path_of("hash_offset"),
            format!("{hash_offset}, expected data_blocks * {block}"),
        ));
    }
    let hash_blocks = f.u64("hash_blocks")?;
    let want_hash = verity::hash_blocks(data_blocks);
    if hash_blocks != want_hash {
        return Err(JsonError::new(
            f.path_of("hash_blocks"),
            format!("{hash_blocks}, but a tree over {data_blocks} blocks has {want_hash}"),
        ));
    }
    let salt = hex::decode(f.str("salt")?)
        .filter(|s| !s.is_empty() && s.len() <= verity::MAX_SALT)
        .ok_or_else(|| {
            JsonError::new(
                f.path_of("salt"),
                format!("expected 1 to {} bytes of hex", verity::MAX_SALT),
            )
        })?;
    Ok(Verity {
        data_blocks,
        hash_offset,
        hash_blocks,
        salt,
        root_hash: digest(&f, "root_hash")?,
    })
}

/// Writes the manifest as deterministic JSON (sorted keys, two-space indent).
pub fn build_manifest(m: &Manifest) -> Vec<u8> {
    let modules: Vec<Value> = m
        .modules
        .iter()
        .map(|e| json!({"name": e.name, "sha256": hex::encode(&e.sha256)}))
        .collect();
    let mut doc = json!({
        "format": FORMAT,
        "version": m.version,
        "kernel": m.kernel,
        "image": {"size": m.image.size, "sha256": hex::encode(&m.image.sha256)},
        "modules": modules,
        "handoff": m.handoff,
    });
    if let (Some(v), Some(map)) = (&m.verity, doc.as_object_mut()) {
        map.insert(
            "verity".to_string(),
            json!({
                "algorithm": verity::ALGORITHM,
                "version": verity::VERSION,
                "data_block_size": verity::BLOCK_SIZE,
                "hash_block_size": verity::BLOCK_SIZE,
                "data_blocks": v.data_blocks,
                "hash_offset": v.hash_offset,
                "hash_blocks": v.hash_blocks,
                "salt": hex::encode(&v.salt),
                "root_hash": hex::encode(&v.root_hash),
            }),
        );
    }
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
            verity: None,
        }
    }

    /// The sample with a 300 000-byte image on a slot: 74 data blocks, one hash block.
    fn with_verity() -> Manifest {
        Manifest {
            image: ImageDigest {
                size: 300_000,
                sha256: [7; 32],
            },
            verity: Some(Verity {
                data_blocks: 74,
                hash_offset: 74 * 4096,
                hash_blocks: 1,
                salt: vec![0xab; 32],
                root_hash: [0xcd; 32],
            }),
            ..sample()
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
    fn verity_round_trips_and_is_left_out_when_absent() {
        let bytes = build_manifest(&with_verity());
        assert_eq!(parse_manifest(&bytes).unwrap(), with_verity());
        let text = String::from_utf8(bytes).unwrap();
        let want = format!(
            "  \"verity\": {{\n    \"algorithm\": \"sha256\",\n    \"data_block_size\": 4096,\n    \"data_blocks\": 74,\n    \"hash_block_size\": 4096,\n    \"hash_blocks\": 1,\n    \"hash_offset\": 303104,\n    \"root_hash\": \"{}\",\n    \"salt\": \"{}\",\n    \"version\": 1\n  }},\n  \"version\": \"0.1.0\"\n}}\n",
            "cd".repeat(32),
            "ab".repeat(32)
        );
        assert!(text.ends_with(&want), "{text}");
        // A manifest written before verity existed reads the same as before.
        let old = String::from_utf8(build_manifest(&sample())).unwrap();
        assert!(!old.contains("verity"));
        assert_eq!(parse_manifest(old.as_bytes()).unwrap().verity, None);
    }

    #[test]
    fn verity_rejects_table() {
        let good = String::from_utf8(build_manifest(&with_verity())).unwrap();
        let cases: Vec<(String, &str)> = vec![
            (
                good.replace("\"sha256\",", "\"sha512\","),
                "$.verity.algorithm: \"sha512\" is not supported (only \"sha256\")",
            ),
            (
                good.replace("\"version\": 1\n", "\"version\": 0\n"),
                "$.verity.version: 0 is not supported (only 1)",
            ),
            (
                good.replace("\"data_block_size\": 4096", "\"data_block_size\": 512"),
                "$.verity.data_block_size: 512 is not supported (only 4096)",
            ),
            (
                good.replace("\"hash_block_size\": 4096", "\"hash_block_size\": 1024"),
                "$.verity.hash_block_size: 1024 is not supported",
            ),
            (
                good.replace("\"data_blocks\": 74", "\"data_blocks\": 73"),
                "$.verity.data_blocks: 73, but an image of 300000 bytes is 74 blocks of 4096",
            ),
            (
                good.replace("\"hash_offset\": 303104", "\"hash_offset\": 0"),
                "$.verity.hash_offset: 0, expected data_blocks * 4096",
            ),
            (
                good.replace("\"hash_blocks\": 1", "\"hash_blocks\": 2"),
                "$.verity.hash_blocks: 2, but a tree over 74 blocks has 1",
            ),
            (
                good.replace(&"ab".repeat(32), ""),
                "$.verity.salt: expected 1 to 256 bytes of hex",
            ),
            (
                good.replace(&"ab".repeat(32), "abc"),
                "$.verity.salt: expected 1 to 256 bytes of hex",
            ),
            (
                good.replace(&"ab".repeat(32), &"ab".repeat(257)),
                "$.verity.salt: expected 1 to 256",
            ),
            (
                good.replace(&"cd".repeat(32), &"cd".repeat(31)),
                "$.verity.root_hash: expected 64 hex digits",
            ),
            (good.replace("\"salt\"", "\"pepper\""), "$.verity.pepper: unknown field"),
            (
                good.replace("\"root_hash\"", "\"root\""),
                "$.verity.root: unknown field",
            ),
            (
                good.replace(",\n    \"salt\": \"", ",\n    \"x\": 1, \"salt\": \""),
                "$.verity.x: unknown field",
            ),
        ];
        for (text, needle) in cases {
            assert_ne!(text, good, "{needle}: the replacement did not apply");
            let err = parse_manifest(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(needle), "wanted {needle:?} in {err:?}");
        }
        let gone = {
            let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
            v["verity"].as_object_mut().unwrap().remove("root_hash");
            serde_json::to_string(&v).unwrap()
        };
        assert_eq!(
            parse_manifest(gone.as_bytes()).unwrap_err().to_string(),
            "manifest $.verity.root_hash: missing field"
        );
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
