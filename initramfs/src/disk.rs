//! `basalt-mkimage disk`: a bootable GPT disk image, built as an ordinary
//! user into a plain file (docs/disk-layout.md).
//!
//! In order: the kernel's modules; the root image; its manifest with the
//! dm-verity tree's parameters, signed; the small initramfs (no root image)
//! and one UKI per filled slot; the ESP; the empty ext4 of VAR; then the
//! disk itself, written beside `--out` and renamed into place.

use crate::assemble::{self, BuildError, RootSource, TempFile};
use crate::esp::{self, EspError, EspFile};
use crate::image::{self, Compression, Content, InitramfsParts, ManifestInputs, SignedManifest};
use crate::modules::ModuleFile;
use crate::squashfs;
use crate::uki::{self, UkiError, UkiInputs};
use crate::varfs::{self, VarfsError, VarfsIds};
use basalt_common::disk::gpt::{self, types, Gpt, GptError, Guid, PartitionSpec};
use basalt_common::disk::slot::{self, SlotError, SlotLayout};
use basalt_common::disk::verity::{self, TreeBuilder, VerityError};
use basalt_common::keys::SigningKey;
use basalt_common::manifest::Manifest;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;
pub const DEFAULT_SLOT_SIZE: u64 = 256 * MIB;
pub const DEFAULT_ESP_SIZE: u64 = 128 * MIB;
pub const DEFAULT_STATE_SIZE: u64 = 16 * MIB;
pub const DEFAULT_VAR_SIZE: u64 = 256 * MIB;
pub const ESP_LABEL: &str = "ESP";
pub const STATE_LABEL: &str = "STATE";
/// What basalt-init mounts at /var (`basalt.var=partlabel:VAR`).
pub const VAR_LABEL: &str = "VAR";

/// The two root slots: PARTLABEL, the UKI's file name in the parts
/// directory and on the ESP, the letter users see. The ESP names are boot
/// entries (`basalt_common::disk::boot_entry`): A above B, both blessed, so
/// a fresh disk boots A.
pub const SLOTS: [Slot; 2] = [
    Slot {
        label: "ROOT-A",
        uki: "basalt-a.efi",
        esp_name: "basalt-1-a.efi",
        letter: "A",
    },
    Slot {
        label: "ROOT-B",
        uki: "basalt-b.efi",
        esp_name: "basalt-0-b.efi",
        letter: "B",
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub label: &'static str,
    pub uki: &'static str,
    pub esp_name: &'static str,
    pub letter: &'static str,
}

/// Everything `build_disk` needs besides the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    pub init: PathBuf,
    pub root: RootSource,
    pub modules_dir: PathBuf,
    pub kconfig: PathBuf,
    pub fragment: PathBuf,
    /// The kernel (bzImage with its EFI stub) for the UKIs' `.linux`.
    pub kernel: PathBuf,
    pub stub: PathBuf,
    pub loader: PathBuf,
    pub version: String,
    pub handoff: String,
    pub slot_size: u64,
    pub esp_size: u64,
    pub state_size: u64,
    pub var_size: u64,
    /// `None`: derived from the image.
    pub salt: Option<Vec<u8>>,
    /// Write the same image into slot B too (else B starts empty, with no UKI).
    pub fill_b: bool,
    /// Appended to each UKI's command line.
    pub append: Option<String>,
    /// Keep the parts (UKIs, ESP image, initramfs, manifest) here; else they
    /// are made in a temporary directory beside `out` and removed.
    pub parts_dir: Option<PathBuf>,
    pub out: PathBuf,
    pub source_date_epoch: Option<u64>,
}

/// What a disk build made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskReport {
    pub manifest: Manifest,
    pub signed: SignedManifest,
    pub modules: Vec<ModuleFile>,
    pub gpt: Gpt,
    pub slot: SlotLayout,
    /// UKI file name and size.
    pub ukis: Vec<(String, u64)>,
    pub initramfs_size: u64,
}

#[derive(Debug)]
pub enum DiskError {
    Build(BuildError),
    Slot(SlotError),
    Verity(VerityError),
    Gpt(GptError),
    Uki(UkiError),
    Esp(EspError),
    Varfs(VarfsError),
    Cmdline {
        append: String,
    },
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskError::Build(e) => write!(f, "{e}"),
            DiskError::Slot(e) => write!(f, "{e}"),
            DiskError::Verity(e) => write!(f, "{e}"),
            DiskError::Gpt(e) => write!(f, "{e}"),
            DiskError::Uki(e) => write!(f, "{e}"),
            DiskError::Esp(e) => write!(f, "{e}"),
            DiskError::Varfs(e) => write!(f, "{e}"),
            DiskError::Cmdline { append } => {
                write!(
                    f,
                    "building the command line: --append {append:?}: no newlines or NULs allowed"
                )
            }
            DiskError::Io { what, path, source } => write!(f, "{what}: {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for DiskError {}

impl From<BuildError> for DiskError {
    fn from(e: BuildError) -> Self {
        DiskError::Build(e)
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DiskError + 'a {
    move |source| DiskError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Parses a size: bytes, or a number with K, M or G (powers of 1024).
pub fn parse_size(text: &str) -> Option<u64> {
    let (digits, shift) = match text.as_bytes().last()? {
        b'K' | b'k' => (&text[..text.len() - 1], 10),
        b'M' | b'm' => (&text[..text.len() - 1], 20),
        b'G' | b'g' => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// The kernel command line of a slot's UKI. It names VAR outright, so a
/// VAR that does not mount stops the boot instead of leaving /var a tmpfs.
pub fn slot_cmdline(slot: &Slot, append: Option<&str>) -> String {
    let mut line = format!(
        "console=ttyS0 quiet basalt.image=partlabel:{} basalt.root=ram basalt.var=partlabel:{VAR_LABEL}",
        slot.label
    );
    if let Some(extra) = append.map(str::trim).filter(|e| !e.is_empty()) {
        line.push(' ');
        line.push_str(extra);
    }
    line
}

/// The sizes of the partitions [`partition_specs`] lays out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSizes {
    pub esp: u64,
    pub slot: u64,
    pub state: u64,
    pub var: u64,
}

/// The partitions, in order, their GUIDs derived from `seed` (the image digest).
pub fn partition_specs(seed: &[u8], sizes: &PartitionSizes) -> Vec<PartitionSpec> {
    let spec = |name: &str, type_guid, size_bytes| PartitionSpec {
        name: name.to_string(),
        type_guid,
        unique_guid: Guid::derive(seed, name),
        size_bytes,
    };
    vec![
        spec(ESP_LABEL, types::ESP, sizes.esp),
        spec(SLOTS[0].label, types::ROOT_X86_64, sizes.slot),
        spec(SLOTS[1].label, types::ROOT_X86_64, sizes.slot),
        spec(STATE_LABEL, types::LINUX_DATA, sizes.state),
        spec(VAR_LABEL, types::VAR, sizes.var),
    ]
}

/// Builds the disk `spec` describes, signing its manifest with `key`.
pub fn build_disk(spec: &DiskSpec, key: &SigningKey) -> Result<DiskReport, DiskError> {
    let time = spec.source_date_epoch.unwrap_or(0);
    check_append(spec.append.as_deref())?;
    // The parts directory: kept when asked for, else removed at the end.
    let (parts, _temp_parts) = parts_dir(spec.parts_dir.as_deref(), &spec.out)?;
    let root = build_root(&spec.root_spec(), &parts, key)?;
    let RootBuild {
        manifest,
        signed,
        modules,
        image_path,
        tree,
        layout,
        area,
        initrd,
        initramfs_size,
    } = root;

    let filled: &[Slot] = if spec.fill_b { &SLOTS } else { &SLOTS[..1] };
    let mut ukis = Vec::new();
    let mut esp_files = vec![
        EspFile {
            dest: esp::LOADER_PATH.into(),
            source: spec.loader.clone(),
        },
        EspFile {
            dest: esp::LOADER_CONF_PATH.into(),
            source: write_part(&parts, "loader.conf", esp::LOADER_CONF.as_bytes())?,
        },
    ];
    for s in filled {
        let (out, size) = build_slot_uki(&spec.uki_spec(), s, &initrd, &parts)?;
        ukis.push((s.esp_name.to_string(), size));
        esp_files.push(EspFile {
            dest: format!("{}/{}", esp::UKI_DIR, s.esp_name),
            source: out,
        });
    }
    let seed = manifest.image.sha256;
    let volume_id = u32::from_le_bytes(
        Guid::derive(&seed, "ESP volume id").disk_bytes()[..4]
            .try_into()
            .unwrap_or([0; 4]),
    );
    let esp_image = parts.join("esp.img");
    esp::build_esp(&esp_image, spec.esp_size, volume_id, time, &esp_files).map_err(DiskError::Esp)?;
    let var_image = parts.join("var.ext4");
    varfs::build_varfs(&var_image, spec.var_size, &VarfsIds::derive(&seed), time).map_err(DiskError::Varfs)?;

    let table =
        gpt::plan(Guid::derive(&seed, "disk"), &partition_specs(&seed, &spec.sizes())).map_err(DiskError::Gpt)?;
    write_disk(
        &spec.out,
        &table,
        &[(ESP_LABEL, &esp_image), (VAR_LABEL, &var_image)],
        &SlotContents {
            image: &image_path,
            tree: &tree.tree,
            layout: &layout,
            area: &area,
        },
        filled,
    )?;
    Ok(DiskReport {
        manifest,
        signed,
        modules,
        gpt: table,
        slot: layout,
        ukis,
        initramfs_size,
    })
}

impl DiskSpec {
    pub fn sizes(&self) -> PartitionSizes {
        PartitionSizes {
            esp: self.esp_size,
            slot: self.slot_size,
            state: self.state_size,
            var: self.var_size,
        }
    }

    /// The inputs of the root slot's contents.
    pub fn root_spec(&self) -> RootSpec<'_> {
        RootSpec {
            init: &self.init,
            root: &self.root,
            modules_dir: &self.modules_dir,
            kconfig: &self.kconfig,
            fragment: &self.fragment,
            version: &self.version,
            handoff: &self.handoff,
            slot_size: self.slot_size,
            salt: self.salt.as_deref(),
            source_date_epoch: self.source_date_epoch,
        }
    }

    /// The inputs of a slot's UKI.
    pub fn uki_spec(&self) -> UkiSpec<'_> {
        UkiSpec {
            kernel: &self.kernel,
            stub: &self.stub,
            version: &self.version,
            append: self.append.as_deref(),
            source_date_epoch: self.source_date_epoch,
        }
    }
}

/// What a root slot's contents are made from (shared by `disk` and `bundle`).
#[derive(Debug, Clone, Copy)]
pub struct RootSpec<'a> {
    pub init: &'a Path,
    pub root: &'a RootSource,
    pub modules_dir: &'a Path,
    pub kconfig: &'a Path,
    pub fragment: &'a Path,
    pub version: &'a str,
    pub handoff: &'a str,
    pub slot_size: u64,
    pub salt: Option<&'a [u8]>,
    pub source_date_epoch: Option<u64>,
}

/// What a slot's UKI is made from, besides the initramfs.
#[derive(Debug, Clone, Copy)]
pub struct UkiSpec<'a> {
    pub kernel: &'a Path,
    pub stub: &'a Path,
    pub version: &'a str,
    pub append: Option<&'a str>,
    pub source_date_epoch: Option<u64>,
}

/// A root slot's contents, built: the signed manifest, the image, its
/// tree, the manifest area, and the initramfs every UKI of it carries.
#[derive(Debug)]
pub struct RootBuild {
    pub manifest: Manifest,
    pub signed: SignedManifest,
    pub modules: Vec<ModuleFile>,
    /// The SquashFS (in the parts directory, or the one given).
    pub image_path: PathBuf,
    pub tree: verity::VerityTree,
    pub layout: SlotLayout,
    pub area: Vec<u8>,
    pub initrd: PathBuf,
    pub initramfs_size: u64,
}

fn mtime_of(source_date_epoch: Option<u64>) -> Result<u32, DiskError> {
    let time = source_date_epoch.unwrap_or(0);
    Ok(u32::try_from(time).map_err(|_| BuildError::SourceDateEpoch {
        value: time.to_string(),
    })?)
}

/// Refuses an `--append` that would break the command line.
pub fn check_append(append: Option<&str>) -> Result<(), DiskError> {
    match append {
        Some(a) if a.contains(['\n', '\0']) => Err(DiskError::Cmdline { append: a.to_string() }),
        _ => Ok(()),
    }
}

/// The parts directory: `given`, kept; else a temporary one beside `out`,
/// removed when the returned guard drops.
pub fn parts_dir(given: Option<&Path>, out: &Path) -> Result<(PathBuf, Option<TempDir>), DiskError> {
    let (parts, guard) = match given {
        Some(dir) => (dir.to_path_buf(), None),
        None => {
            let dir = image::temp_beside(out, "parts");
            (dir.clone(), Some(TempDir(dir)))
        }
    };
    std::fs::create_dir_all(&parts).map_err(io_err("creating the parts directory", &parts))?;
    Ok((parts, guard))
}

/// Builds a root slot's contents in `parts`: the kernel's modules; the root
/// image; its manifest with the dm-verity tree's parameters, signed; the
/// manifest area; the small initramfs (no root image).
pub fn build_root(spec: &RootSpec, parts: &Path, key: &SigningKey) -> Result<RootBuild, DiskError> {
    let time = spec.source_date_epoch.unwrap_or(0);
    let mtime = mtime_of(spec.source_date_epoch)?;
    let (release, modules) = assemble::kernel_modules(spec.kconfig, spec.fragment, spec.modules_dir)?;

    let image_path = match spec.root {
        RootSource::Rootfs(rootfs) => {
            let path = parts.join("root.sqsh");
            squashfs::build_squashfs(rootfs, &path, time).map_err(BuildError::Squashfs)?;
            path
        }
        RootSource::Squashfs(given) => {
            squashfs::check_magic(given).map_err(BuildError::Squashfs)?;
            given.clone()
        }
    };

    let mut manifest = image::describe(&ManifestInputs {
        version: spec.version,
        kernel: &release,
        handoff: spec.handoff,
        image: &image_path,
        modules: &modules,
    })
    .map_err(BuildError::Manifest)?;
    // Refuse a slot too small before hashing anything.
    let layout = slot::layout(spec.slot_size, manifest.image.size).map_err(DiskError::Slot)?;
    let salt = match spec.salt {
        Some(s) => s.to_vec(),
        None => verity::default_salt(&manifest.image.sha256).to_vec(),
    };
    let tree = hash_tree(&image_path, &salt)?;
    manifest.verity = Some(tree.params());
    let signed = image::sign_manifest(&manifest, key);
    assemble::write_manifest_copy(parts, &signed, key)?;
    let area = slot::encode_area(&signed.json, &signed.signature).map_err(DiskError::Slot)?;

    // The initramfs every UKI carries: init, modules, manifest; no image.
    let initrd = parts.join("initrd.img");
    let initramfs_size = image::pack_initramfs_file(
        &InitramfsParts {
            init: Content::File(spec.init.to_path_buf()),
            manifest_json: signed.json.clone(),
            manifest_sig: signed.signature.to_vec(),
            image: None,
            modules: modules
                .iter()
                .map(|m| (m.name.clone(), Content::File(m.path.clone())))
                .collect(),
        },
        mtime,
        Compression::None,
        &initrd,
    )
    .map_err(BuildError::Pack)?;

    Ok(RootBuild {
        manifest,
        signed,
        modules,
        image_path,
        tree,
        layout,
        area,
        initrd,
        initramfs_size,
    })
}

/// Builds the UKI of `slot` in `parts` (named `slot.uki`): the stub, the
/// kernel, `initrd`, the slot's command line. Returns its path and size.
pub fn build_slot_uki(spec: &UkiSpec, slot: &Slot, initrd: &Path, parts: &Path) -> Result<(PathBuf, u64), DiskError> {
    let out = parts.join(slot.uki);
    let size = uki::build_uki(&UkiInputs {
        stub: spec.stub,
        kernel: spec.kernel,
        initrd,
        cmdline: &slot_cmdline(slot, spec.append),
        os_release: &uki::os_release(spec.version, slot.letter),
        work_dir: parts,
        time: mtime_of(spec.source_date_epoch)?,
        out: &out,
    })
    .map_err(DiskError::Uki)?;
    Ok((out, size))
}

/// The dm-verity tree of the image file, read in 1 MiB pieces.
fn hash_tree(image: &Path, salt: &[u8]) -> Result<verity::VerityTree, DiskError> {
    let mut builder = TreeBuilder::new(salt).map_err(DiskError::Verity)?;
    let mut file = File::open(image).map_err(io_err("hashing the root image", image))?;
    let mut buf = vec![0u8; MIB as usize];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => builder.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("hashing the root image", image)(e)),
        }
    }
    builder.finish().map_err(DiskError::Verity)
}

fn write_part(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, DiskError> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(io_err("writing a disk part", &path))?;
    Ok(path)
}

/// What goes into a filled root slot.
struct SlotContents<'a> {
    image: &'a Path,
    tree: &'a [u8],
    layout: &'a SlotLayout,
    area: &'a [u8],
}

/// Writes the disk beside `out` (sparse: unwritten sectors are zeros) and
/// renames it into place. `images` are copied in whole at the start of the
/// partition each is labelled for.
fn write_disk(
    out: &Path,
    table: &Gpt,
    images: &[(&str, &Path)],
    slot: &SlotContents,
    filled: &[Slot],
) -> Result<(), DiskError> {
    let bytes = gpt::build(table).map_err(DiskError::Gpt)?;
    let tmp = image::temp_beside(out, "partial");
    let guard = TempFile(tmp.clone());
    let mut disk = DiskFile {
        file: File::create(&tmp).map_err(io_err(WRITING, &tmp))?,
        path: &tmp,
    };
    disk.file
        .set_len(table.total_sectors * gpt::SECTOR_SIZE)
        .map_err(io_err(WRITING, &tmp))?;
    disk.put(0, &bytes.primary)?;
    disk.put(bytes.backup_lba * gpt::SECTOR_SIZE, &bytes.backup)?;
    let partition = |label: &str| {
        table.find(label).map(|(_, p)| p.offset_bytes()).ok_or_else(|| {
            DiskError::Gpt(GptError::BadName {
                name: label.to_string(),
            })
        })
    };
    for (label, image) in images {
        disk.copy(image, partition(label)?)?;
    }
    for s in filled {
        let at = partition(s.label)?;
        disk.copy(slot.image, at)?;
        disk.put(at + slot.layout.hash_offset, slot.tree)?;
        disk.put(at + slot.layout.area_offset, slot.area)?;
    }
    disk.file.sync_all().map_err(io_err(WRITING, &tmp))?;
    drop(disk);
    std::fs::rename(&tmp, out).map_err(io_err(WRITING, out))?;
    std::mem::forget(guard);
    Ok(())
}

const WRITING: &str = "writing the disk image";

struct DiskFile<'a> {
    file: File,
    path: &'a Path,
}

impl DiskFile<'_> {
    fn put(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.write_all(data))
            .map_err(io_err(WRITING, self.path))
    }

    /// Copies a file in at `offset`, skipping 64 KiB runs of zeros: the
    /// disk file starts as zeros, so a mostly empty ESP or VAR stays sparse.
    fn copy(&mut self, from: &Path, offset: u64) -> Result<(), DiskError> {
        let mut src = File::open(from).map_err(io_err("reading a disk part", from))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut at = offset;
        loop {
            let n = read_full(&mut src, &mut buf).map_err(io_err("reading a disk part", from))?;
            if n == 0 {
                return Ok(());
            }
            if buf[..n].iter().any(|&b| b != 0) {
                self.put(at, &buf[..n])?;
            }
            at += n as u64;
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(src: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match src.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Removes the directory when dropped.
pub struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases = [
            ("4096", Some(4096)),
            ("64K", Some(65536)),
            ("256M", Some(256 << 20)),
            ("1g", Some(1 << 30)),
            ("", None),
            ("M", None),
            ("-1M", None),
            ("1.5M", None),
            ("1T", None),
            ("99999999999G", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), want, "{text:?}");
        }
    }

    #[test]
    fn command_lines() {
        assert_eq!(
            slot_cmdline(&SLOTS[0], None),
            "console=ttyS0 quiet basalt.image=partlabel:ROOT-A basalt.root=ram basalt.var=partlabel:VAR"
        );
        assert_eq!(
            slot_cmdline(&SLOTS[1], Some(" basalt.root=disk basalt.on_error=poweroff ")),
            "console=ttyS0 quiet basalt.image=partlabel:ROOT-B basalt.root=ram basalt.var=partlabel:VAR \
             basalt.root=disk basalt.on_error=poweroff"
        );
        assert_eq!(slot_cmdline(&SLOTS[0], Some("  ")), slot_cmdline(&SLOTS[0], None));
    }

    #[test]
    fn the_five_partitions() {
        let sizes = PartitionSizes {
            esp: 128 << 20,
            slot: 256 << 20,
            state: 16 << 20,
            var: 64 << 20,
        };
        let specs = partition_specs(b"seed", &sizes);
        let got: Vec<(&str, String, u64)> = specs
            .iter()
            .map(|s| (s.name.as_str(), s.type_guid.to_string(), s.size_bytes >> 20))
            .collect();
        assert_eq!(
            got,
            [
                ("ESP", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B".to_string(), 128),
                ("ROOT-A", "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709".to_string(), 256),
                ("ROOT-B", "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709".to_string(), 256),
                ("STATE", "0FC63DAF-8483-4772-8E79-3D69D8477DE4".to_string(), 16),
                ("VAR", "4D21B016-B534-45C2-A9FB-5C16E091FD2D".to_string(), 64),
            ]
        );
        assert_ne!(specs[1].unique_guid, specs[2].unique_guid);
        assert_eq!(specs, partition_specs(b"seed", &sizes));
        let table = gpt::plan(Guid::ZERO, &specs).unwrap();
        assert_eq!(table.total_sectors * 512, (1 + 128 + 256 + 256 + 16 + 64 + 1) << 20);
    }
}
