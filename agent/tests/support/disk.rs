//! A disk-booted node on the host, for the upgrade tests: synthetic root
//! slots and update bundles built with basalt-common's own codecs, and a
//! scratch root that looks like a node booted from one slot of a GPT disk:
//!
//! - `<root>/etc/basalt/image.pub`, the image key bundles are checked with;
//! - `<root>/run/basalt/boot.json`, whose `image.verity.partition` says
//!   which slot booted;
//! - `<root>/sys/class/block/vda{2,3}/uevent` naming ROOT-A and ROOT-B, and
//!   `<root>/dev/vda{2,3}` as plain files standing in for the partitions;
//! - `<scratch>/esp`, passed as `--esp-dir`: its `EFI/Linux` holds the
//!   boot entries;
//! - `<scratch>/state.img`, the STATE partition (`basalt.state=`).

use super::{Options, TestNode, NODE};
use basalt_common::bundle::{self, Arch, BundleManifest, SlotPart};
use basalt_common::disk::boot_entry::SlotId;
use basalt_common::disk::slot::{self, AREA_SIZE};
use basalt_common::disk::verity::{self, BLOCK_SIZE};
use basalt_common::keys::SigningKey;
use basalt_common::manifest::{self, ImageDigest, Manifest, DEFAULT_HANDOFF};
use basalt_common::splitmix::SplitMix64;
use basalt_common::state_record::{self, StateRecord};
use serde_json::json;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const MIB: u64 = 1 << 20;
/// The image key the node trusts, and another.
pub const IMAGE_SEED: [u8; 32] = [3; 32];
pub const OTHER_IMAGE_SEED: [u8; 32] = [4; 32];
/// Each root partition.
pub const PARTITION_BYTES: u64 = 4 * MIB;
/// A UKI of two chunks, the second short.
pub const UKI_BYTES: usize = (MIB + MIB / 4) as usize;
/// A root image that is not a whole number of blocks: a slot part of one
/// chunk. (Small: the agent and this test are debug builds, and base64 is
/// most of their work.)
pub const IMAGE_BYTES: usize = (MIB / 4) as usize + 100;

pub fn image_key() -> SigningKey {
    SigningKey::from_seed(&IMAGE_SEED).unwrap()
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    SplitMix64::new(seed).fill(&mut bytes);
    bytes
}

/// A root slot's contents: the image zero-padded to 4096 and its verity
/// tree (`tree_end` bytes), then the 64 KiB signed manifest area.
#[derive(Clone)]
pub struct Slot {
    pub part: Vec<u8>,
    pub tree_end: u64,
    pub root_hash: [u8; 32],
}

impl Slot {
    /// A slot holding `version`, signed with `key`; `seed` varies the image.
    pub fn build(key: &SigningKey, version: &str, seed: u64) -> Slot {
        let image = noise(seed, IMAGE_BYTES);
        let sha256: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &image)
            .as_ref()
            .try_into()
            .unwrap();
        let tree = verity::build_tree(&image, &verity::default_salt(&sha256)).unwrap();
        let m = Manifest {
            version: version.into(),
            kernel: "6.1.0-test".into(),
            image: ImageDigest {
                size: image.len() as u64,
                sha256,
            },
            modules: Vec::new(),
            handoff: DEFAULT_HANDOFF.into(),
            verity: Some(tree.params()),
        };
        let json = manifest::build_manifest(&m);
        let area = slot::encode_area(&json, &key.sign(&json)).unwrap();
        let mut part = image;
        part.resize(tree.data_blocks as usize * BLOCK_SIZE, 0);
        part.extend_from_slice(&tree.tree);
        let tree_end = part.len() as u64;
        part.extend_from_slice(&area);
        Slot {
            part,
            tree_end,
            root_hash: tree.root_hash,
        }
    }

    pub fn data_and_tree(&self) -> &[u8] {
        &self.part[..self.tree_end as usize]
    }

    pub fn area(&self) -> &[u8] {
        &self.part[self.tree_end as usize..]
    }

    /// Writes the slot where it goes on a partition: data and tree at its
    /// start, the area at its end.
    pub fn write_to(&self, partition: &Path) {
        let f = std::fs::OpenOptions::new().write(true).open(partition).unwrap();
        f.write_all_at(self.data_and_tree(), 0).unwrap();
        f.write_all_at(self.area(), PARTITION_BYTES - AREA_SIZE).unwrap();
    }
}

/// What varies one test bundle's bytes from another's.
fn seed(target: SlotId, version_seq: u64) -> u64 {
    version_seq * 2 + (target == SlotId::B) as u64
}

/// An update bundle and what went into it.
pub struct Bundle {
    pub manifest: BundleManifest,
    pub uki: Vec<u8>,
    pub slot: Slot,
    /// The whole file.
    pub bytes: Vec<u8>,
}

impl Bundle {
    /// A bundle of `version` for `target`, signed with `key` (the same key
    /// signs the slot's own manifest).
    pub fn build(key: &SigningKey, target: SlotId, version: &str, version_seq: u64) -> Bundle {
        let slot = Slot::build(key, version, seed(target, version_seq));
        Bundle::with_slot(key, target, version, version_seq, slot, |_| {})
    }

    /// A bundle carrying `slot` as it is, whatever it holds, with `edit`
    /// applied to the manifest before it is signed.
    pub fn with_slot(
        key: &SigningKey,
        target: SlotId,
        version: &str,
        version_seq: u64,
        slot: Slot,
        edit: impl FnOnce(&mut BundleManifest),
    ) -> Bundle {
        let uki = noise(seed(target, version_seq) << 32, UKI_BYTES);
        let mut manifest = BundleManifest {
            version: version.into(),
            version_seq,
            arch: if cfg!(target_arch = "aarch64") {
                Arch::Aarch64
            } else {
                Arch::X86_64
            },
            target: target.label().into(),
            uki: bundle::digest_part(&uki),
            slot: SlotPart {
                digest: bundle::digest_part(&slot.part),
                tree_end: slot.tree_end,
                root_hash: slot.root_hash,
            },
        };
        edit(&mut manifest);
        let bytes = bundle::build_bundle(&manifest, key, &uki, &slot.part).unwrap();
        Bundle {
            manifest,
            uki,
            slot,
            bytes,
        }
    }

    /// Where the parts start in the file.
    pub fn parts_offset(&self) -> usize {
        self.bytes.len() - self.uki.len() - self.slot.part.len()
    }

    pub fn manifest_bytes(&self) -> &[u8] {
        let h = bundle::read_header(&self.bytes).unwrap();
        &self.bytes[h.manifest_offset() as usize..h.signature_offset() as usize]
    }

    pub fn signature(&self) -> &[u8] {
        let h = bundle::read_header(&self.bytes).unwrap();
        &self.bytes[h.signature_offset() as usize..h.parts_offset() as usize]
    }

    /// The parts as one stream, as `upgrade-data` carries them.
    pub fn stream(&self) -> &[u8] {
        &self.bytes[self.parts_offset()..]
    }

    /// Writes the file at `path` (with `edit` applied to its bytes).
    pub fn write(&self, path: &Path, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
        let mut bytes = self.bytes.clone();
        edit(&mut bytes);
        std::fs::write(path, bytes).unwrap();
        path.to_path_buf()
    }
}

/// How the fake disk looks when the agent starts.
pub struct Boot<'a> {
    /// The slot the boot report says booted; `None`: not booted from a disk
    /// slot (no verity in the boot report).
    pub booted: Option<SlotId>,
    /// The booted image's version.
    pub version: &'a str,
    /// The files in the ESP's `EFI/Linux`.
    pub entries: &'a [&'a str],
    /// What each partition holds.
    pub slots: [Option<&'a Slot>; 2],
    /// A record to put on STATE (slot 0, seq 1).
    pub record: Option<StateRecord>,
}

/// A test node whose root came from a disk slot.
pub struct DiskNode {
    pub node: TestNode,
    /// The ESP's `EFI/Linux`.
    pub esp: PathBuf,
    pub state: PathBuf,
}

impl DiskNode {
    pub fn start(tag: &str, boot: Boot) -> DiskNode {
        let mut node = TestNode::create(tag, Options::default());
        let scratch = node.scratch.path.clone();
        let state = scratch.join("state.img");
        std::fs::write(&state, []).unwrap();
        if let Some(record) = &boot.record {
            std::fs::write(&state, state_record::encode(1, record).unwrap()).unwrap();
        }
        std::fs::write(
            scratch.join("cmdline"),
            format!(
                "basalt.node={NODE} basalt.serial=none basalt.vsock_port=none basalt.state={}",
                state.display()
            ),
        )
        .unwrap();
        let esp = scratch.join("esp/EFI/Linux");
        std::fs::create_dir_all(&esp).unwrap();
        for name in boot.entries {
            std::fs::write(esp.join(name), format!("UKI {name}")).unwrap();
        }
        let root = node.root.clone();
        std::fs::write(root.join("etc/basalt/image.pub"), image_key().public_key().to_pem()).unwrap();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        for (i, slot) in SlotId::ALL.into_iter().enumerate() {
            let dev = format!("vda{}", i + 2);
            let class = root.join("sys/class/block").join(&dev);
            std::fs::create_dir_all(&class).unwrap();
            std::fs::write(
                class.join("uevent"),
                format!(
                    "DEVNAME={dev}\nDEVTYPE=partition\nPARTN={}\nPARTNAME={}\n",
                    i + 2,
                    slot.label()
                ),
            )
            .unwrap();
            let f = std::fs::File::create(root.join("dev").join(&dev)).unwrap();
            f.set_len(PARTITION_BYTES).unwrap();
            if let Some(contents) = boot.slots[i] {
                contents.write_to(&root.join("dev").join(&dev));
            }
        }
        write_boot_report(&root, boot.booted, boot.version);
        node.opts.extra_args = vec!["--esp-dir".into(), scratch.join("esp").display().to_string()];
        node.start_agent();
        DiskNode { node, esp, state }
    }

    pub fn partition(&self, slot: SlotId) -> PathBuf {
        let dev = match slot {
            SlotId::A => "vda2",
            SlotId::B => "vda3",
        };
        self.node.root.join("dev").join(dev)
    }

    /// The 64 KiB manifest area at the end of a partition.
    pub fn area(&self, slot: SlotId) -> Vec<u8> {
        let bytes = std::fs::read(self.partition(slot)).unwrap();
        bytes[(PARTITION_BYTES - AREA_SIZE) as usize..].to_vec()
    }

    /// The ESP's `EFI/Linux`, sorted.
    pub fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.esp)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// A reboot into `booted`: the agent stopped, this boot's tmpfs state
    /// gone, the boot report rewritten, the ESP as the loader leaves it
    /// (`renames`), the agent started again.
    pub fn reboot(&mut self, booted: SlotId, version: &str, renames: &[(&str, &str)]) {
        self.node.stop_agent(nix::sys::signal::Signal::SIGTERM);
        let _ = std::fs::remove_file(self.node.root.join("run/basalt/agent/state.json"));
        for (from, to) in renames {
            std::fs::rename(self.esp.join(from), self.esp.join(to)).unwrap();
        }
        write_boot_report(&self.node.root, Some(booted), version);
        self.node.start_agent();
    }
}

/// `/run/basalt/boot.json` as init writes it, as far as the agent reads it.
fn write_boot_report(root: &Path, booted: Option<SlotId>, version: &str) {
    let verity = booted.map(|slot| {
        json!({
            "partition": slot.label(),
            "mode": "verify",
            // Not under /dev: the scrub leaves it alone.
            "device": root.join("dev/dm-0").display().to_string(),
            "root_hash": "00".repeat(32),
            "data_blocks": 65,
            "copied_bytes": 0,
            "hashed_up_front": false,
        })
    });
    let report = json!({
        "format": 1,
        "image": {"version": version, "origin": "disk", "verity": verity},
    });
    std::fs::create_dir_all(root.join("run/basalt")).unwrap();
    std::fs::write(root.join("run/basalt/boot.json"), report.to_string()).unwrap();
}
