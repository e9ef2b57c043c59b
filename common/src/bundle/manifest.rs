//! The bundle manifest: strict JSON, signed with the image key over its
//! exact bytes, checked before a byte of it is parsed.
//!
//! ```json
//! {"format":1,"version":"0.1.0+g1a2b3c4","version_seq":42,"arch":"x86_64",
//!  "target":"ROOT-B","chunk_size":1048576,
//!  "uki":{"size":N,"sha256":"hex","chunks":["hex",...]},
//!  "slot":{"size":N,"tree_end":N,"root_hash":"hex","sha256":"hex","chunks":["hex",...]}}
//! ```

use super::header::MAX_MANIFEST_BYTES;
use super::{chunks, BundleError, Part, CHUNK_SIZE, MAX_SLOT_BYTES, MAX_UKI_BYTES};
use crate::disk::{slot, verity};
use crate::hex;
use crate::json::{self, Fields, JsonError};
use crate::keys::{PublicKey, SIGNATURE_LEN};
use crate::text::clip;
use serde_json::{json, Value};

pub const MANIFEST_FORMAT: u64 = 1;
/// The root slots a bundle can target (docs/disk-layout.md).
pub const TARGETS: [&str; 2] = ["ROOT-A", "ROOT-B"];

/// The machine a bundle is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    pub fn parse(text: &str) -> Option<Arch> {
        match text {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Aarch64),
            _ => None,
        }
    }
}

/// Size, SHA-256 and per-chunk SHA-256 of one part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartDigest {
    pub size: u64,
    pub sha256: [u8; 32],
    /// `chunks[i]` = SHA-256 of bytes `i * CHUNK_SIZE ..` of the part.
    pub chunks: Vec<[u8; 32]>,
}

/// The slot part: the SquashFS and its verity tree (`tree_end` bytes, which
/// go at the start of the inactive root partition), then the 64 KiB signed
/// manifest area (which goes in the partition's last 64 KiB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotPart {
    pub digest: PartDigest,
    pub tree_end: u64,
    /// The verity root hash the slot's own signed manifest names.
    pub root_hash: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleManifest {
    /// Free-form, as in the image manifest.
    pub version: String,
    /// Monotonic: what anti-rollback compares.
    pub version_seq: u64,
    pub arch: Arch,
    /// The PARTLABEL of the root slot the UKI boots (`ROOT-A` or `ROOT-B`):
    /// the UKI's command line names its slot, so a bundle is built for one.
    pub target: String,
    pub uki: PartDigest,
    pub slot: SlotPart,
}

impl BundleManifest {
    pub fn part(&self, part: Part) -> &PartDigest {
        match part {
            Part::Uki => &self.uki,
            Part::Slot => &self.slot.digest,
        }
    }

    /// Where `part` starts, counted from the first byte after the signature.
    pub fn part_offset(&self, part: Part) -> u64 {
        match part {
            Part::Uki => 0,
            Part::Slot => self.uki.size,
        }
    }

    /// The bytes of all parts together.
    pub fn parts_len(&self) -> u64 {
        self.uki.size + self.slot.digest.size
    }
}

/// The manifest's JSON bytes, as they are signed.
pub fn encode_manifest(m: &BundleManifest) -> Vec<u8> {
    let hexes = |d: &PartDigest| d.chunks.iter().map(|c| Value::from(hex::encode(c))).collect::<Vec<_>>();
    let doc = json!({
        "format": MANIFEST_FORMAT,
        "version": m.version,
        "version_seq": m.version_seq,
        "arch": m.arch.name(),
        "target": m.target,
        "chunk_size": CHUNK_SIZE,
        "uki": {
            "size": m.uki.size,
            "sha256": hex::encode(&m.uki.sha256),
            "chunks": hexes(&m.uki),
        },
        "slot": {
            "size": m.slot.digest.size,
            "tree_end": m.slot.tree_end,
            "root_hash": hex::encode(&m.slot.root_hash),
            "sha256": hex::encode(&m.slot.digest.sha256),
            "chunks": hexes(&m.slot.digest),
        },
    });
    let mut bytes = serde_json::to_vec(&doc).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Checks the signature over the exact bytes with the image key, then parses them.
pub fn verify_manifest(json_bytes: &[u8], signature: &[u8], key: &PublicKey) -> Result<BundleManifest, BundleError> {
    if json_bytes.is_empty() || json_bytes.len() > MAX_MANIFEST_BYTES {
        return Err(BundleError::ManifestLength(
            u32::try_from(json_bytes.len()).unwrap_or(u32::MAX),
        ));
    }
    if signature.len() != SIGNATURE_LEN {
        return Err(BundleError::SignatureLength(
            u32::try_from(signature.len()).unwrap_or(u32::MAX),
        ));
    }
    key.verify(json_bytes, signature)
        .map_err(|_| BundleError::BadSignature { key_id: key.key_id() })?;
    parse_manifest(json_bytes)
}

/// Parses manifest JSON strictly. Does not check any signature: callers
/// on the node use [`verify_manifest`].
pub fn parse_manifest(bytes: &[u8]) -> Result<BundleManifest, BundleError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(BundleError::ManifestLength(
            u32::try_from(bytes.len()).unwrap_or(u32::MAX),
        ));
    }
    let doc = json::parse_strict(bytes)?;
    let top = Fields::new(
        &doc,
        "$",
        &[
            "format",
            "version",
            "version_seq",
            "arch",
            "target",
            "chunk_size",
            "uki",
            "slot",
        ],
    )?;
    let format = top.u64("format")?;
    if format != MANIFEST_FORMAT {
        return Err(BundleError::ManifestFormat(format));
    }
    let chunk_size = top.u64("chunk_size")?;
    if chunk_size != CHUNK_SIZE {
        return Err(JsonError::new(
            top.path_of("chunk_size"),
            format!("{chunk_size}, expected {CHUNK_SIZE}"),
        )
        .into());
    }
    let version = top.str("version")?;
    if version.is_empty() || version.len() > 128 || version.chars().any(char::is_control) {
        return Err(JsonError::new(
            top.path_of("version"),
            format!("not a printable version of 1..=128 bytes: {:?}", clip(version)),
        )
        .into());
    }
    let arch_text = top.str("arch")?;
    let arch = Arch::parse(arch_text).ok_or_else(|| {
        JsonError::new(
            top.path_of("arch"),
            format!("unknown architecture {:?}", clip(arch_text)),
        )
    })?;

    let target = top.str("target")?;
    if !TARGETS.contains(&target) {
        return Err(JsonError::new(
            top.path_of("target"),
            format!("{:?} is not a root slot ({})", clip(target), TARGETS.join(", ")),
        )
        .into());
    }
    let uki_f = Fields::new(top.req("uki")?, &top.path_of("uki"), &["size", "sha256", "chunks"])?;
    let uki = part_digest(&uki_f, Part::Uki, MAX_UKI_BYTES)?;
    let slot_f = Fields::new(
        top.req("slot")?,
        &top.path_of("slot"),
        &["size", "tree_end", "root_hash", "sha256", "chunks"],
    )?;
    let digest = part_digest(&slot_f, Part::Slot, MAX_SLOT_BYTES)?;
    let tree_end = slot_f.u64("tree_end")?;
    if tree_end == 0
        || !tree_end.is_multiple_of(verity::BLOCK_SIZE as u64)
        || tree_end.checked_add(slot::AREA_SIZE) != Some(digest.size)
    {
        return Err(BundleError::SlotShape {
            size: digest.size,
            tree_end,
        });
    }
    Ok(BundleManifest {
        version: version.to_string(),
        version_seq: top.u64("version_seq")?,
        arch,
        target: target.to_string(),
        uki,
        slot: SlotPart {
            digest,
            tree_end,
            root_hash: sha256_field(&slot_f, "root_hash")?,
        },
    })
}

fn part_digest(f: &Fields, part: Part, max: u64) -> Result<PartDigest, BundleError> {
    let size = f.u64("size")?;
    if size == 0 || size > max {
        return Err(BundleError::PartSize { part, size, max });
    }
    let list = f.array("chunks")?;
    let want = chunks::chunk_count(size);
    if list.len() as u64 != want {
        return Err(BundleError::ChunkList {
            part,
            want,
            got: list.len() as u64,
        });
    }
    let mut digests = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let path = json::index(&f.path_of("chunks"), i);
        let text = json::as_str(v, &path)?;
        digests.push(hex::decode_array(text).ok_or_else(|| JsonError::new(path, "expected 64 hex digits of SHA-256"))?);
    }
    Ok(PartDigest {
        size,
        sha256: sha256_field(f, "sha256")?,
        chunks: digests,
    })
}

fn sha256_field(f: &Fields, key: &str) -> Result<[u8; 32], JsonError> {
    hex::decode_array(f.str(key)?).ok_or_else(|| JsonError::new(f.path_of(key), "expected 64 hex digits of SHA-256"))
}
