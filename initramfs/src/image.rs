//! The initramfs itself: the signed manifest and the cpio archive around it.
//!
//! `pack_initramfs` writes whatever parts it is given, without checking that
//! they agree with each other, so tests can pack a tampered image under the
//! original manifest and watch basalt-init refuse it.

use crate::cpio::{CpioError, CpioWriter, Entry};
use crate::modules::ModuleFile;
use basalt_common::keys::{SigningKey, SIGNATURE_LEN};
use basalt_common::manifest::{self, ImageDigest, Manifest, ModuleEntry};
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Directory and file modes inside the initramfs.
const DIR_MODE: u32 = 0o755;
const INIT_MODE: u32 = 0o755;
const DATA_MODE: u32 = 0o444;
const CONSOLE_MODE: u32 = 0o600;
/// /dev/console: the kernel opens it for init's stdio before running /init.
const CONSOLE_MAJOR: u32 = 5;
const CONSOLE_MINOR: u32 = 1;

/// Where each part lives in the archive (names are relative, as cpio stores them).
pub const INIT_PATH: &str = "init";
pub const MANIFEST_PATH: &str = "basalt/manifest.json";
pub const SIGNATURE_PATH: &str = "basalt/manifest.sig";
pub const IMAGE_PATH: &str = "basalt/root.sqsh";
pub const MODULES_DIR: &str = "basalt/modules";

/// Whether to compress the archive. The root image inside is already zstd,
/// so the default is none: the kernel unpacks plain cpio fastest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    /// gzip with a fixed header (mtime 0, no file name, OS "unknown").
    Gzip,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
        })
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            other => Err(format!("unknown compression {other:?} (none or gzip)")),
        }
    }
}

/// A part's bytes: in memory, or in a file that is streamed when packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Bytes(Vec<u8>),
    File(PathBuf),
}

impl Content {
    fn entry<'a>(&'a self, name: &'a str, mode: u32) -> Entry<'a> {
        match self {
            Content::Bytes(b) => Entry::bytes(name, mode, b),
            Content::File(p) => Entry::file(name, mode, p),
        }
    }
}

/// Everything that goes into an initramfs, already made.
#[derive(Debug, Clone)]
pub struct InitramfsParts {
    pub init: Content,
    pub manifest_json: Vec<u8>,
    /// Normally 64 bytes; not checked, so tests can pack a bad one.
    pub manifest_sig: Vec<u8>,
    /// `None` when the image lives on a block device.
    pub image: Option<Content>,
    /// Module name → its `.ko`, packed at `basalt/modules/<name>.ko`.
    pub modules: Vec<(String, Content)>,
}

#[derive(Debug)]
pub enum PackError {
    BadModuleName { name: String },
    DuplicateModule { name: String },
    Cpio(CpioError),
    Compress { source: io::Error },
    CreateOutput { path: PathBuf, source: io::Error },
    WriteOutput { path: PathBuf, source: io::Error },
}

impl fmt::Display for PackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackError::BadModuleName { name } => {
                write!(f, "packing module: {name:?}: not a kernel module name")
            }
            PackError::DuplicateModule { name } => {
                write!(f, "packing module: {name}: listed twice")
            }
            PackError::Cpio(e) => write!(f, "{e}"),
            PackError::Compress { source } => {
                write!(f, "compressing the initramfs: gzip: {source}")
            }
            PackError::CreateOutput { path, source } => {
                write!(f, "creating the initramfs: {}: {source}", path.display())
            }
            PackError::WriteOutput { path, source } => {
                write!(f, "writing the initramfs: {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for PackError {}

/// Writes the initramfs for `parts` to `out`: a newc cpio archive, entries
/// in byte order of their names, all owned by root with mtime `mtime`.
pub fn pack_initramfs<W: Write>(
    parts: &InitramfsParts,
    mtime: u32,
    compression: Compression,
    out: W,
) -> Result<W, PackError> {
    let module_names: Vec<String> = module_paths(parts)?;
    let mut entries: Vec<Entry> = vec![
        parts.init.entry(INIT_PATH, INIT_MODE),
        Entry::dir("dev", DIR_MODE),
        Entry::char_device("dev/console", CONSOLE_MODE, CONSOLE_MAJOR, CONSOLE_MINOR),
        Entry::dir("basalt", DIR_MODE),
        Entry::bytes(MANIFEST_PATH, DATA_MODE, &parts.manifest_json),
        Entry::bytes(SIGNATURE_PATH, DATA_MODE, &parts.manifest_sig),
        Entry::dir(MODULES_DIR, DIR_MODE),
    ];
    if let Some(image) = &parts.image {
        entries.push(image.entry(IMAGE_PATH, DATA_MODE));
    }
    for (path, (_, content)) in module_names.iter().zip(&parts.modules) {
        entries.push(content.entry(path, DATA_MODE));
    }
    // Sorted names put every directory before what it holds.
    entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));

    match compression {
        Compression::None => write_entries(&entries, mtime, out),
        Compression::Gzip => {
            let gz = flate2::GzBuilder::new()
                .mtime(0)
                .write(out, flate2::Compression::default());
            write_entries(&entries, mtime, gz)?
                .finish()
                .map_err(|source| PackError::Compress { source })
        }
    }
}

/// Packs into the file at `path` (written beside it, then renamed into
/// place). Returns the file's size.
pub fn pack_initramfs_file(
    parts: &InitramfsParts,
    mtime: u32,
    compression: Compression,
    path: &Path,
) -> Result<u64, PackError> {
    let tmp = temp_beside(path, "partial");
    let file = File::create(&tmp).map_err(|source| PackError::CreateOutput {
        path: tmp.clone(),
        source,
    })?;
    let result = pack_initramfs(parts, mtime, compression, BufWriter::with_capacity(1 << 20, file))
        .and_then(|w| {
            let file = w.into_inner().map_err(|e| PackError::WriteOutput {
                path: tmp.clone(),
                source: e.into_error(),
            })?;
            file.sync_all().map_err(|source| PackError::WriteOutput {
                path: tmp.clone(),
                source,
            })?;
            file.metadata()
                .map(|m| m.len())
                .map_err(|source| PackError::WriteOutput {
                    path: tmp.clone(),
                    source,
                })
        })
        .and_then(|size| {
            std::fs::rename(&tmp, path).map_err(|source| PackError::WriteOutput {
                path: path.to_path_buf(),
                source,
            })?;
            Ok(size)
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_entries<W: Write>(entries: &[Entry], mtime: u32, out: W) -> Result<W, PackError> {
    let mut writer = CpioWriter::new(out, mtime);
    for entry in entries {
        writer.write_entry(entry).map_err(PackError::Cpio)?;
    }
    writer.finish().map_err(PackError::Cpio)
}

/// The archive path of each module, checking that names are kernel module
/// names (which also keeps them inside basalt/modules/).
fn module_paths(parts: &InitramfsParts) -> Result<Vec<String>, PackError> {
    let mut out: Vec<String> = Vec::with_capacity(parts.modules.len());
    for (name, _) in &parts.modules {
        if !manifest::valid_module_name(name) {
            return Err(PackError::BadModuleName { name: name.clone() });
        }
        let path = format!("{MODULES_DIR}/{name}.ko");
        if out.contains(&path) {
            return Err(PackError::DuplicateModule { name: name.clone() });
        }
        out.push(path);
    }
    Ok(out)
}

/// `<path>.<tag>.tmp` in the same directory, so a rename replaces `path` atomically.
pub(crate) fn temp_beside(path: &Path, tag: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{tag}.tmp"));
    path.with_file_name(name)
}

/// Size and SHA-256 of a file, read in chunks (root images run to a GiB).
pub fn sha256_file(path: &Path) -> io::Result<(u64, [u8; 32])> {
    let mut file = File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        ctx.update(&buf[..n]);
        size += n as u64;
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(ctx.finish().as_ref());
    Ok((size, digest))
}

#[derive(Debug)]
pub enum ManifestError {
    BadVersion {
        version: String,
    },
    BadHandoff {
        handoff: String,
    },
    HashFile {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestError::BadVersion { version } => {
                write!(
                    f,
                    "building the manifest: version {version:?}: must be non-empty, without control characters"
                )
            }
            ManifestError::BadHandoff { handoff } => {
                write!(
                    f,
                    "building the manifest: handoff {handoff:?}: not a clean absolute path"
                )
            }
            ManifestError::HashFile { what, path, source } => {
                write!(f, "hashing {what}: {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for ManifestError {}

/// What the manifest says, before any file is hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInputs<'a> {
    pub version: &'a str,
    pub kernel: &'a str,
    pub handoff: &'a str,
    pub image: &'a Path,
    /// In load order.
    pub modules: &'a [ModuleFile],
}

/// Hashes the image and every module and fills in a manifest.
pub fn describe(inputs: &ManifestInputs) -> Result<Manifest, ManifestError> {
    if inputs.version.is_empty() || inputs.version.chars().any(char::is_control) {
        return Err(ManifestError::BadVersion {
            version: inputs.version.to_string(),
        });
    }
    if !manifest::valid_absolute_path(inputs.handoff) {
        return Err(ManifestError::BadHandoff {
            handoff: inputs.handoff.to_string(),
        });
    }
    let (size, sha256) = sha256_file(inputs.image).map_err(|source| ManifestError::HashFile {
        what: "the root image",
        path: inputs.image.to_path_buf(),
        source,
    })?;
    let mut modules = Vec::with_capacity(inputs.modules.len());
    for m in inputs.modules {
        let (_, sha256) = sha256_file(&m.path).map_err(|source| ManifestError::HashFile {
            what: "a kernel module",
            path: m.path.clone(),
            source,
        })?;
        modules.push(ModuleEntry {
            name: m.name.clone(),
            sha256,
        });
    }
    Ok(Manifest {
        version: inputs.version.to_string(),
        kernel: inputs.kernel.to_string(),
        image: ImageDigest { size, sha256 },
        modules,
        handoff: inputs.handoff.to_string(),
        verity: None,
    })
}

/// A manifest's exact bytes and the Ed25519 signature over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedManifest {
    pub json: Vec<u8>,
    pub signature: [u8; SIGNATURE_LEN],
}

pub fn sign_manifest(m: &Manifest, key: &SigningKey) -> SignedManifest {
    let json = manifest::build_manifest(m);
    let signature = key.sign(&json);
    SignedManifest { json, signature }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> InitramfsParts {
        InitramfsParts {
            init: Content::Bytes(b"#!init".to_vec()),
            manifest_json: b"{}\n".to_vec(),
            manifest_sig: vec![7; 64],
            image: Some(Content::Bytes(b"hsqs....".to_vec())),
            modules: vec![
                ("virtio_ring".into(), Content::Bytes(b"ring".to_vec())),
                ("virtio".into(), Content::Bytes(b"virtio".to_vec())),
            ],
        }
    }

    /// Names, modes and sizes of each record, read back from the archive.
    fn listing(archive: &[u8]) -> Vec<(String, u32, u32, u32, u32)> {
        let (records, end) = crate::cpio::read_archive(archive).unwrap();
        assert_eq!(end, archive.len());
        let row = |r: crate::cpio::Record| (r.name, r.ino, r.mode, r.nlink, r.data.len() as u32);
        records.into_iter().map(row).collect()
    }

    #[test]
    fn layout() {
        let archive = pack_initramfs(&parts(), 0, Compression::None, Vec::new()).unwrap();
        let want: Vec<(String, u32, u32, u32, u32)> = [
            ("basalt", 1, 0o040755, 2, 0),
            ("basalt/manifest.json", 2, 0o100444, 1, 3),
            ("basalt/manifest.sig", 3, 0o100444, 1, 64),
            ("basalt/modules", 4, 0o040755, 2, 0),
            ("basalt/modules/virtio.ko", 5, 0o100444, 1, 6),
            ("basalt/modules/virtio_ring.ko", 6, 0o100444, 1, 4),
            ("basalt/root.sqsh", 7, 0o100444, 1, 8),
            ("dev", 8, 0o040755, 2, 0),
            ("dev/console", 9, 0o020600, 1, 0),
            ("init", 10, 0o100755, 1, 6),
        ]
        .into_iter()
        .map(|(n, i, m, l, s)| (n.to_string(), i, m, l, s))
        .collect();
        assert_eq!(listing(&archive), want);

        let mut no_image = parts();
        no_image.image = None;
        no_image.modules.clear();
        let archive = pack_initramfs(&no_image, 0, Compression::None, Vec::new()).unwrap();
        let names: Vec<String> = listing(&archive).into_iter().map(|e| e.0).collect();
        assert_eq!(
            names,
            [
                "basalt",
                "basalt/manifest.json",
                "basalt/manifest.sig",
                "basalt/modules",
                "dev",
                "dev/console",
                "init"
            ]
        );
    }

    #[test]
    fn gzip_is_deterministic_and_round_trips() {
        let plain = pack_initramfs(&parts(), 5, Compression::None, Vec::new()).unwrap();
        let gz = pack_initramfs(&parts(), 5, Compression::Gzip, Vec::new()).unwrap();
        assert_eq!(gz, pack_initramfs(&parts(), 5, Compression::Gzip, Vec::new()).unwrap());
        // magic, deflate, no flags (so no file name), mtime 0.
        assert_eq!(&gz[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut back).unwrap();
        assert!(back == plain);
    }

    #[test]
    fn refuses_bad_module_names() {
        let cases = [
            ("../etc", "not a kernel module name"),
            ("dm-mod", "not a kernel module name"),
        ];
        for (name, needle) in cases {
            let mut p = parts();
            p.modules.push((name.into(), Content::Bytes(vec![])));
            let err = pack_initramfs(&p, 0, Compression::None, Vec::new())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
        let mut p = parts();
        p.modules.push(("virtio".into(), Content::Bytes(vec![])));
        let err = pack_initramfs(&p, 0, Compression::None, Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("listed twice"), "{err}");
    }

    #[test]
    fn manifest_is_signed_over_its_exact_bytes() {
        let dir = std::env::temp_dir().join(format!("basalt-image-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("root.sqsh"), b"abc").unwrap();
        std::fs::write(dir.join("m.ko"), b"").unwrap();
        let modules = vec![ModuleFile {
            name: "m".into(),
            path: dir.join("m.ko"),
        }];
        let inputs = ManifestInputs {
            version: "1.2.3",
            kernel: "6.1.0-test",
            handoff: "/sbin/basalt-agent",
            image: &dir.join("root.sqsh"),
            modules: &modules,
        };
        let m = describe(&inputs).unwrap();
        // SHA-256("abc") and SHA-256("") from FIPS 180-2.
        assert_eq!(
            basalt_common::hex::encode(&m.image.sha256),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(m.image.size, 3);
        assert_eq!(
            basalt_common::hex::encode(&m.modules[0].sha256),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let key = SigningKey::from_seed(&[3; 32]).unwrap();
        let signed = sign_manifest(&m, &key);
        assert_eq!(
            manifest::verify_manifest(&signed.json, &signed.signature, &key.public_key()).unwrap(),
            m
        );

        let bad = [
            ManifestInputs {
                version: "",
                ..inputs.clone()
            },
            ManifestInputs {
                version: "1\n2",
                ..inputs.clone()
            },
            ManifestInputs {
                handoff: "sbin/agent",
                ..inputs.clone()
            },
            ManifestInputs {
                image: &dir.join("absent"),
                ..inputs.clone()
            },
        ];
        let needles = [
            "version \"\"",
            "version \"1\\n2\"",
            "handoff \"sbin/agent\"",
            "hashing the root image",
        ];
        for (inputs, needle) in bad.iter().zip(needles) {
            let err = describe(inputs).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
