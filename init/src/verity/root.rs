//! Mounting a checked slot: verity over the RAM copy or over the partition,
//! then the SquashFS read-only from the mapped device.

use super::corruption::{self, Corruption};
use super::dm::{self, DeviceMapper, MappedDevice, RealDm};
use super::slot::{open_sized, CheckedSlot};
use super::table::{verity_target, VerityTable};
use crate::boot_params::{RootMode, Verify};
use crate::digest;
use crate::image::{self, ImageError};
use crate::loopdev::{self, LoopDevice, LoopError};
use crate::mounts::{self, MountError};
use basalt_common::disk::verity::{ALGORITHM, BLOCK_SIZE, VERSION};
use basalt_common::hex;
use basalt_common::manifest::ImageDigest;
use nix::fcntl::{FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The device-mapper name of the root.
pub const DM_NAME: &str = "basalt-root";
/// Copy buffer: big reads keep the copy at the device's speed.
const COPY_CHUNK: usize = 1 << 20;

/// The root, mounted.
#[derive(Debug)]
pub struct VerityRoot {
    pub mapped: MappedDevice,
    /// `/dev/dm-N`.
    pub node: String,
    pub mode: RootMode,
    /// The loop device over the RAM copy (ram mode).
    pub loop_device: Option<LoopDevice>,
    /// Bytes copied into RAM (ram mode).
    pub copied: u64,
    /// Whether the image's SHA-256 was checked up front (`basalt.verify=full`).
    pub hashed: bool,
    pub root_hash: [u8; 32],
}

#[derive(Debug)]
pub enum RootCause {
    Open(io::Error),
    Copy(io::Error),
    ShortCopy { copied: u64, need: u64 },
    Memfd(io::Error),
    Loop(LoopError),
    FullHash(Box<ImageError>),
    DevNumber { path: String, source: io::Error },
    Table(super::table::TableError),
    Dm(dm::DmError),
    NodeTimeout { node: String },
    Mount(Box<MountFailure>),
}

/// The SquashFS would not mount from the verity device.
#[derive(Debug)]
pub struct MountFailure {
    pub node: String,
    pub source: MountError,
    /// The verity target's status says a block failed.
    pub corrupted: bool,
    /// The block, when the kernel's log line could be read back.
    pub block: Option<Corruption>,
}

#[derive(Debug)]
pub struct RootError {
    pub label: String,
    pub node: String,
    pub cause: Box<RootCause>,
}

impl std::fmt::Display for RootError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "root slot {} ({}): ", self.label, self.node)?;
        match &*self.cause {
            RootCause::Open(e) => write!(f, "open: {e}"),
            RootCause::Copy(e) => write!(f, "copy into RAM: {e}"),
            RootCause::ShortCopy { copied, need } => {
                write!(f, "copy into RAM: the partition ended after {copied} of {need} bytes")
            }
            RootCause::Memfd(e) => write!(f, "copy into RAM: {e}"),
            RootCause::Loop(e) => write!(f, "{e}"),
            RootCause::FullHash(e) => write!(f, "basalt.verify=full: {e}"),
            RootCause::DevNumber { path, source } => write!(f, "stat {path}: {source}"),
            RootCause::Table(e) => write!(f, "{e}"),
            RootCause::Dm(e) => write!(f, "{e}"),
            RootCause::NodeTimeout { node } => write!(f, "{node} did not appear within 2 s"),
            RootCause::Mount(m) => {
                let MountFailure {
                    node,
                    source,
                    corrupted,
                    block,
                } = &**m;
                write!(f, "verity device {node}: {source}")?;
                match (corrupted, block) {
                    // Data and tree share the slot's offsets (the RAM copy
                    // keeps them), so the block says where in the partition.
                    (_, Some(b)) => write!(
                        f,
                        " (dm-verity: {b}, at byte {} of the partition)",
                        b.block * BLOCK_SIZE as u64
                    ),
                    (true, None) => write!(f, " (dm-verity found a corrupted block)"),
                    (false, None) => Ok(()),
                }
            }
        }
    }
}

/// `major:minor` of a block device node, as a table line names devices.
fn dev_numbers(path: &str) -> io::Result<String> {
    let rdev = std::fs::metadata(path)?.rdev();
    Ok(format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    ))
}

/// Sets up verity over the slot as `mode` says and mounts it at `newroot`.
pub fn mount_root(
    newroot: &str,
    slot: &CheckedSlot,
    image: &ImageDigest,
    mode: RootMode,
    verify: Verify,
) -> Result<VerityRoot, RootError> {
    let fail = |cause| RootError {
        label: slot.partition.label.clone(),
        node: slot.partition.node.clone(),
        cause: Box::new(cause),
    };
    let part = &slot.partition.node;
    let full = (verify == Verify::Full).then_some(image);
    let (device, loop_device, copied) = match mode {
        RootMode::Ram => {
            let (mut src, _) = open_sized(part).map_err(|e| fail(RootCause::Open(e)))?;
            let ram = copy_into_ram(&mut src, slot.tree_end(), full, part).map_err(fail)?;
            // The partition is closed here: from now on only RAM is read.
            drop(src);
            let dev = loopdev::attach_read_only(&ram, slot.tree_end()).map_err(|e| fail(RootCause::Loop(e)))?;
            (dev.path.clone(), Some(dev), slot.tree_end())
        }
        RootMode::Disk => {
            if let Some(expected) = full {
                let (mut src, _) = open_sized(part).map_err(|e| fail(RootCause::Open(e)))?;
                hash_up_front(&mut src, expected, part).map_err(fail)?;
            }
            (part.clone(), None, 0)
        }
    };
    let numbers = dev_numbers(&device).map_err(|source| {
        fail(RootCause::DevNumber {
            path: device.clone(),
            source,
        })
    })?;
    let v = &slot.verity;
    let table = VerityTable {
        version: VERSION as u32,
        data_dev: numbers.clone(),
        hash_dev: numbers,
        data_block_size: BLOCK_SIZE as u32,
        hash_block_size: BLOCK_SIZE as u32,
        data_blocks: v.data_blocks,
        hash_start_block: v.hash_offset / BLOCK_SIZE as u64,
        algorithm: ALGORITHM.into(),
        root_hash: v.root_hash.to_vec(),
        salt: v.salt.clone(),
        // No mode option: a block that fails is an EIO to its reader, which
        // at boot is the mount below and fails the boot.
        options: vec![],
    };
    let target = verity_target(&table).map_err(|e| fail(RootCause::Table(e)))?;
    let uuid = format!("BASALT-VERITY-{}-{}", slot.partition.label, hex::encode(&v.root_hash));
    let mut dm = RealDm::open(dm::CONTROL).map_err(|e| fail(RootCause::Dm(e)))?;
    let mapped = dm::activate(&mut dm, DM_NAME, &uuid, &[target]).map_err(|e| fail(RootCause::Dm(e)))?;
    let node = mapped.node();
    if !wait_for_node(&node, Duration::from_secs(2)) {
        return Err(fail(RootCause::NodeTimeout { node }));
    }
    if let Err(source) = mounts::mount_all(&mut mounts::RealMounts, &[mounts::root_mount(&node, newroot)]) {
        let corrupted = reports_corruption(&mut dm);
        let block = corrupted.then(|| corruption::first_logged("/dev/kmsg")).flatten();
        return Err(fail(RootCause::Mount(Box::new(MountFailure {
            node,
            source,
            corrupted,
            block,
        }))));
    }
    log::info!(
        "root: {node} on {newroot} (squashfs, ro,nosuid,nodev) through dm-verity on {} {part}, {} mode{}",
        slot.partition.label,
        mode.as_str(),
        loop_device
            .as_ref()
            .map(|l| format!(" via {} ({} MiB in RAM)", l.path, copied >> 20))
            .unwrap_or_default()
    );
    Ok(VerityRoot {
        mapped,
        node,
        mode,
        loop_device,
        copied,
        hashed: full.is_some(),
        root_hash: v.root_hash,
    })
}

/// Whether the verity target's status says a block failed ("C").
pub fn reports_corruption(dm: &mut dyn DeviceMapper) -> bool {
    dm.status(DM_NAME)
        .map(|targets| {
            targets
                .iter()
                .any(|t| t.target_type == "verity" && t.status.trim() == "C")
        })
        .unwrap_or(false)
}

fn wait_for_node(node: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while !Path::new(node).exists() {
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// The image's SHA-256 up front, against the manifest (`basalt.verify=full`).
fn hash_up_front(src: &mut File, expected: &ImageDigest, part: &str) -> Result<(), RootCause> {
    let hashed = digest::hash_stream(src, expected.size, None::<&mut File>).map_err(RootCause::Copy)?;
    image::check(part, expected, hashed).map_err(|e| RootCause::FullHash(Box::new(e)))
}

/// Copies the first `len` bytes of `src` (image and tree) into a sealed
/// memfd, hashing the image on the way when `full` asks for it, and gives
/// it back open read-only.
pub fn copy_into_ram(src: &mut File, len: u64, full: Option<&ImageDigest>, part: &str) -> Result<File, RootCause> {
    let memfd = memfd_create(
        c"basalt-root",
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )
    .map_err(|e| RootCause::Memfd(e.into()))?;
    let mut ram = File::from(memfd);
    ram.set_len(len).map_err(RootCause::Memfd)?;
    let mut done = 0;
    if let Some(expected) = full {
        // One pass: what is hashed is what is copied.
        let hashed = digest::hash_stream(src, expected.size.min(len), Some(&mut ram)).map_err(RootCause::Copy)?;
        done = hashed.len;
        image::check(part, expected, hashed).map_err(|e| RootCause::FullHash(Box::new(e)))?;
    }
    let mut buf = vec![0u8; COPY_CHUNK];
    while done < len {
        let want = (len - done).min(COPY_CHUNK as u64) as usize;
        let n = match src.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(RootCause::Copy(e)),
        };
        ram.write_all(&buf[..n]).map_err(RootCause::Memfd)?;
        done += n as u64;
    }
    if done < len {
        return Err(RootCause::ShortCopy {
            copied: done,
            need: len,
        });
    }
    let seals = SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL;
    nix::fcntl::fcntl(ram.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals)).map_err(|e| RootCause::Memfd(e.into()))?;
    File::open(format!("/proc/self/fd/{}", ram.as_raw_fd())).map_err(RootCause::Memfd)
}

#[cfg(test)]
mod tests {
    use super::super::dm::fake::FakeDm;
    use super::super::dm::TargetStatus;
    use super::*;

    fn digest_of(b: &[u8]) -> ImageDigest {
        ImageDigest {
            size: b.len() as u64,
            sha256: digest::sha256(b),
        }
    }

    #[test]
    fn ram_copy_is_exact_sealed_and_optionally_hashed() {
        let image: Vec<u8> = (0..300_000u32).map(|i| (i % 249) as u8).collect();
        let mut disk = image.clone();
        disk.resize(2 << 20, 0xee);
        let path = std::env::temp_dir().join(format!("basalt-ramcopy-{}", std::process::id()));
        std::fs::write(&path, &disk).unwrap();
        let part = path.display().to_string();
        let len = 400_000u64;
        for full in [None, Some(digest_of(&image))] {
            let mut src = File::open(&path).unwrap();
            let ram = copy_into_ram(&mut src, len, full.as_ref(), &part).unwrap();
            let copy = std::fs::read(format!("/proc/self/fd/{}", ram.as_raw_fd())).unwrap();
            assert_eq!(copy, disk[..len as usize], "full={}", full.is_some());
            let seals = nix::fcntl::fcntl(ram.as_raw_fd(), FcntlArg::F_GET_SEALS).unwrap();
            assert_ne!(seals & libc::F_SEAL_WRITE, 0);
        }
        let mut wrong = image.clone();
        wrong[1234] ^= 1;
        let mut src = File::open(&path).unwrap();
        let err = copy_into_ram(&mut src, len, Some(&digest_of(&wrong)), &part).unwrap_err();
        assert!(
            matches!(&err, RootCause::FullHash(e) if matches!(**e, ImageError::Digest { .. })),
            "{err:?}"
        );
        let mut src = File::open(&path).unwrap();
        let err = copy_into_ram(&mut src, 3 << 20, None, &part).unwrap_err();
        assert!(
            matches!(err, RootCause::ShortCopy { copied, need } if copied == 2 << 20 && need == 3 << 20),
            "{err:?}"
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn corruption_is_read_from_the_status_line() {
        let status = |s: &str| TargetStatus {
            start: 0,
            length: 8,
            target_type: "verity".into(),
            status: s.into(),
        };
        let cases = [(vec![status("V")], false), (vec![status("C")], true), (vec![], false)];
        for (targets, want) in cases {
            let mut dm = FakeDm {
                status: targets,
                ..FakeDm::default()
            };
            assert_eq!(reports_corruption(&mut dm), want);
        }
        let mut failing = FakeDm {
            fail: Some(("status", libc::ENXIO)),
            ..FakeDm::default()
        };
        assert!(!reports_corruption(&mut failing));
    }

    #[test]
    fn errors_name_the_partition_and_the_block() {
        let mount_error = || MountError::Mount {
            fstype: "squashfs",
            target: "/newroot".into(),
            source: io::Error::from_raw_os_error(libc::EIO),
        };
        let e = RootError {
            label: "ROOT-A".into(),
            node: "/dev/vda2".into(),
            cause: Box::new(RootCause::Mount(Box::new(MountFailure {
                node: "/dev/dm-0".into(),
                source: mount_error(),
                corrupted: true,
                block: corruption::parse_line("device-mapper: verity: 7:0: metadata block 283 is corrupted"),
            }))),
        };
        assert!(
            e.to_string().ends_with(
                "(os error 5) (dm-verity: metadata block 283 is corrupted, at byte 1159168 of the partition)"
            ),
            "{e}"
        );
        let e = RootError {
            label: "ROOT-A".into(),
            node: "/dev/vda2".into(),
            cause: Box::new(RootCause::Mount(Box::new(MountFailure {
                node: "/dev/dm-0".into(),
                source: mount_error(),
                corrupted: true,
                block: None,
            }))),
        };
        assert_eq!(
            e.to_string(),
            "root slot ROOT-A (/dev/vda2): verity device /dev/dm-0: mount squashfs on /newroot: Input/output error (os error 5) (dm-verity found a corrupted block)"
        );
    }
}
