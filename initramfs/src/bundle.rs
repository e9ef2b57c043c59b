//! `basalt-mkimage bundle`: the signed update bundle (docs/upgrades.md).
//!
//! The root slot's contents and the UKI are made by the same steps as
//! `disk` (`disk::build_root`, `disk::build_slot_uki`); this file only
//! digests them chunk by chunk and writes header, manifest, signature, UKI
//! and slot part beside `--out`, then renames it into place.

use crate::assemble::{RootSource, TempFile};
use crate::disk::{self, DiskError, RootSpec, Slot, UkiSpec};
use crate::image;
use basalt_common::bundle::{self, Arch, BundleError, BundleManifest, PartDigest, PartHasher, SlotPart};
use basalt_common::disk::slot::SlotLayout;
use basalt_common::keys::SigningKey;
use basalt_common::manifest::Manifest;
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleSpec {
    pub init: PathBuf,
    pub root: RootSource,
    pub modules_dir: PathBuf,
    pub kconfig: PathBuf,
    pub fragment: PathBuf,
    pub kernel: PathBuf,
    pub stub: PathBuf,
    pub version: String,
    /// The monotonic version anti-rollback compares.
    pub version_seq: u64,
    pub arch: Arch,
    pub handoff: String,
    /// The size of the target partition: the slot part must fit it.
    pub slot_size: u64,
    pub salt: Option<Vec<u8>>,
    /// The slot the UKI boots.
    pub target: Slot,
    pub append: Option<String>,
    pub parts_dir: Option<PathBuf>,
    pub out: PathBuf,
    pub source_date_epoch: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleReport {
    pub manifest: BundleManifest,
    /// The image manifest inside the slot part.
    pub image: Manifest,
    pub layout: SlotLayout,
    pub bundle_size: u64,
}

#[derive(Debug)]
pub enum MakeBundleError {
    Disk(DiskError),
    Bundle(BundleError),
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for MakeBundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MakeBundleError::Disk(e) => write!(f, "{e}"),
            MakeBundleError::Bundle(e) => write!(f, "{e}"),
            MakeBundleError::Io { what, path, source } => write!(f, "{what}: {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for MakeBundleError {}

impl From<DiskError> for MakeBundleError {
    fn from(e: DiskError) -> Self {
        MakeBundleError::Disk(e)
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> MakeBundleError + 'a {
    move |source| MakeBundleError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

const WRITING: &str = "writing the bundle";

/// Builds the bundle `spec` describes, signing both manifests with `key`.
pub fn build_bundle(spec: &BundleSpec, key: &SigningKey) -> Result<BundleReport, MakeBundleError> {
    disk::check_append(spec.append.as_deref())?;
    let (parts, _temp_parts) = disk::parts_dir(spec.parts_dir.as_deref(), &spec.out)?;
    let root = disk::build_root(
        &RootSpec {
            init: &spec.init,
            root: &spec.root,
            modules_dir: &spec.modules_dir,
            kconfig: &spec.kconfig,
            fragment: &spec.fragment,
            version: &spec.version,
            handoff: &spec.handoff,
            slot_size: spec.slot_size,
            salt: spec.salt.as_deref(),
            source_date_epoch: spec.source_date_epoch,
        },
        &parts,
        key,
    )?;
    let (uki_path, _) = disk::build_slot_uki(
        &UkiSpec {
            kernel: &spec.kernel,
            stub: &spec.stub,
            version: &spec.version,
            append: spec.append.as_deref(),
            source_date_epoch: spec.source_date_epoch,
        },
        &spec.target,
        &root.initrd,
        &parts,
    )?;

    let slot_part = SlotPartSource {
        image: &root.image_path,
        hash_offset: root.layout.hash_offset,
        tree: &root.tree.tree,
        area: &root.area,
    };
    let uki = digest_file(&uki_path)?;
    let mut hasher = PartHasher::new();
    slot_part.stream(&mut |bytes| {
        hasher.update(bytes);
        Ok(())
    })?;
    let slot_digest = hasher.finish();
    let manifest = BundleManifest {
        version: spec.version.clone(),
        version_seq: spec.version_seq,
        arch: spec.arch,
        target: spec.target.label.to_string(),
        uki,
        slot: SlotPart {
            tree_end: root.layout.hash_offset + root.tree.tree.len() as u64,
            digest: slot_digest,
            root_hash: root.tree.root_hash,
        },
    };
    let prefix = bundle::bundle_prefix(&manifest, key).map_err(MakeBundleError::Bundle)?;

    let tmp = image::temp_beside(&spec.out, "partial");
    let guard = TempFile(tmp.clone());
    let file = File::create(&tmp).map_err(io_err(WRITING, &tmp))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&prefix).map_err(io_err(WRITING, &tmp))?;
    copy_file(&uki_path, &mut |bytes| {
        out.write_all(bytes).map_err(io_err(WRITING, &tmp))
    })?;
    slot_part.stream(&mut |bytes| out.write_all(bytes).map_err(io_err(WRITING, &tmp)))?;
    let file = out.into_inner().map_err(|e| io_err(WRITING, &tmp)(e.into_error()))?;
    file.sync_all().map_err(io_err(WRITING, &tmp))?;
    drop(file);
    std::fs::rename(&tmp, &spec.out).map_err(io_err(WRITING, &spec.out))?;
    std::mem::forget(guard);
    Ok(BundleReport {
        bundle_size: prefix.len() as u64 + manifest.parts_len(),
        manifest,
        image: root.manifest,
        layout: root.layout,
    })
}

/// The slot part as a stream: the image zero-padded to the tree, the tree,
/// the manifest area.
struct SlotPartSource<'a> {
    image: &'a Path,
    hash_offset: u64,
    tree: &'a [u8],
    area: &'a [u8],
}

impl SlotPartSource<'_> {
    fn stream(&self, sink: &mut dyn FnMut(&[u8]) -> Result<(), MakeBundleError>) -> Result<(), MakeBundleError> {
        let size = copy_file(self.image, sink)?;
        let mut pad = self.hash_offset.checked_sub(size).ok_or_else(|| MakeBundleError::Io {
            what: "reading the root image",
            path: self.image.to_path_buf(),
            source: io::Error::other("it grew after its tree was made"),
        })?;
        let zeros = [0u8; 4096];
        while pad > 0 {
            let n = pad.min(zeros.len() as u64) as usize;
            sink(&zeros[..n])?;
            pad -= n as u64;
        }
        sink(self.tree)?;
        sink(self.area)
    }
}

fn digest_file(path: &Path) -> Result<PartDigest, MakeBundleError> {
    let mut h = PartHasher::new();
    copy_file(path, &mut |bytes| {
        h.update(bytes);
        Ok(())
    })?;
    Ok(h.finish())
}

/// Feeds a file to `sink` in 1 MiB pieces; returns its length.
fn copy_file(path: &Path, sink: &mut dyn FnMut(&[u8]) -> Result<(), MakeBundleError>) -> Result<u64, MakeBundleError> {
    let mut file = File::open(path).map_err(io_err("reading a bundle part", path))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                sink(&buf[..n])?;
                total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("reading a bundle part", path)(e)),
        }
    }
}
