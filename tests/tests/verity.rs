//! A root slot on a GPT disk, mounted through dm-verity (issue 11): boots to
//! the agent in both root modes, and refuses, with one line naming the
//! partition and the cause and no handoff, a flipped byte in the manifest
//! area, in the hash tree, in a data block read at boot, a slot signed by
//! another key, and a truncated partition. A block read first after the
//! handoff, by the agent or only by its background scrub, ends the boot as
//! `basalt.on_error` says, and the scrub's find is in `status`.
//!
//! The disk is built here, by hand, from the build's parts: the image and
//! its tree from basalt-common's verity builder, the manifest area from its
//! slot encoder, the partition table by `sfdisk` on a plain file. Booted by
//! `-kernel/-initrd` with the disk on virtio-blk, so no firmware is needed.

use basalt_common::disk::slot::{encode_area, AREA_SIZE};
use basalt_common::disk::verity::{build_tree, BLOCK_SIZE};
use basalt_common::keys::SigningKey;
use basalt_common::manifest::{build_manifest, Verity};
use basalt_tests::node::{node_config, ok, Node};
use basalt_tests::*;
use std::path::PathBuf;
use std::time::Duration;

const CMDLINE: &str = "quiet basalt.on_error=poweroff basalt.error_delay=0 basalt.image=partlabel:ROOT-A";
/// The slot is partition 2, after a 1 MiB stand-in for the ESP.
const NODE: &str = "/dev/vda2";
const MIB: u64 = 1 << 20;
/// How the mount fails when verity refuses a block it needs (musl's strerror).
const MOUNT_EIO: &str = "verity device /dev/dm-0: mount squashfs on /newroot: I/O error (os error 5)";
const SECTOR: u64 = 512;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tamper {
    None,
    /// One byte of the manifest JSON in the slot's tail.
    ManifestByte,
    /// One byte of the top level of the hash tree.
    TreeByte,
    /// One byte of data block 0 (the SquashFS superblock: read by mount).
    DataByte,
    /// The slot's manifest signed by another key (same JSON).
    OtherKey,
    /// The partition ends one block before the manifest area would.
    Truncated,
    /// One byte of a file that only the agent reads, after the handoff.
    AfterBoot,
    /// One byte of a file nothing reads: only the agent's scrub finds it.
    ScrubOnly,
}

/// A file the agent reads at start (it tries every trusted key file) and
/// nothing reads before the handoff. Random bytes: zstd leaves them as they
/// are, so they can be found in the image.
const JUNK_KEY: &str = "etc/basalt/trusted-keys/zz-junk.pub";
const JUNK_LEN: usize = 16 * 1024;
/// A file no program opens, big enough to span several squashfs blocks.
const UNREAD: &str = "usr/share/basalt-test/unread.bin";
const UNREAD_LEN: usize = 256 * 1024;

struct Disk {
    initramfs: PathBuf,
    disk: PathBuf,
    verity: Verity,
    /// The partition's size as the table says.
    partition_size: u64,
    /// The data block flipped for [`Tamper::AfterBoot`] and [`Tamper::ScrubOnly`].
    after_boot_block: Option<u64>,
    _scratch: Scratch,
}

fn build_disk(build: &Build, name: &str, tamper: Tamper) -> Disk {
    let scratch = Scratch::new(name);
    let rootfs = test_rootfs(build, &scratch);
    let mut junk = vec![0u8; JUNK_LEN];
    basalt_common::splitmix::SplitMix64::new(11).fill(&mut junk);
    if tamper == Tamper::AfterBoot {
        std::fs::write(rootfs.join(JUNK_KEY), &junk).unwrap();
    }
    let mut unread = vec![0u8; UNREAD_LEN];
    basalt_common::splitmix::SplitMix64::new(12).fill(&mut unread);
    if tamper == Tamper::ScrubOnly {
        std::fs::create_dir_all(rootfs.join(UNREAD).parent().unwrap()).unwrap();
        std::fs::write(rootfs.join(UNREAD), &unread).unwrap();
    }
    let opts = ImageOptions {
        embed_image: false,
        ..Default::default()
    };
    let image = build_image(build, &rootfs, &scratch.0, &opts);
    let squashfs = std::fs::read(&image.squashfs).unwrap();
    let mut data = squashfs.clone();
    data.resize(squashfs.len().div_ceil(BLOCK_SIZE) * BLOCK_SIZE, 0);
    let tree = build_tree(&data, &[0x5a; 32]).unwrap();
    let verity = tree.params();

    // The manifest the initramfs carries, now with the tree's parameters.
    let key = build.image_key();
    let mut manifest = image.report.manifest.clone();
    manifest.verity = Some(verity.clone());
    let json = build_manifest(&manifest);
    let signature = key.sign(&json);
    let initramfs = scratch.path("disk-initramfs.img");
    repack(build, &image, &initramfs, |parts| {
        parts.manifest_json = json.clone();
        parts.manifest_sig = signature.to_vec();
        parts.image = None;
    });

    // The slot: data, tree, zeros, manifest area in the last 64 KiB.
    let tree_end = data.len() + tree.tree.len();
    let slot_size = (tree_end as u64 + AREA_SIZE).div_ceil(MIB) * MIB + MIB;
    let area_sig = if tamper == Tamper::OtherKey {
        SigningKey::from_seed(&[0x42; 32]).unwrap().sign(&json)
    } else {
        signature
    };
    let mut slot = data;
    slot.extend_from_slice(&tree.tree);
    slot.resize((slot_size - AREA_SIZE) as usize, 0);
    slot.extend_from_slice(&encode_area(&json, &area_sig).unwrap());
    let area_at = (slot_size - AREA_SIZE) as usize;
    let mut after_boot_block = None;
    match tamper {
        Tamper::ManifestByte => slot[area_at + 20 + json.len() / 2] ^= 0x01,
        Tamper::TreeByte => slot[verity.hash_offset as usize + 100] ^= 0x01,
        Tamper::DataByte => slot[1000] ^= 0x01,
        Tamper::AfterBoot => {
            let at = squashfs
                .windows(64)
                .position(|w| w == &junk[..64])
                .expect("the random key file is stored as it is in the image");
            slot[at + JUNK_LEN / 2] ^= 0x01;
            after_boot_block = Some((at + JUNK_LEN / 2) as u64 / BLOCK_SIZE as u64);
        }
        Tamper::ScrubOnly => {
            // The middle of the file, found by its own bytes (zstd stores
            // random blocks as they are, each where the squashfs put it).
            let mid = UNREAD_LEN / 2 + 1000;
            let at = squashfs
                .windows(64)
                .position(|w| w == &unread[mid..mid + 64])
                .expect("the unread file is stored as it is in the image");
            slot[at] ^= 0x01;
            after_boot_block = Some(at as u64 / BLOCK_SIZE as u64);
        }
        _ => {}
    }
    let partition_size = if tamper == Tamper::Truncated {
        tree_end as u64 + AREA_SIZE - BLOCK_SIZE as u64
    } else {
        slot_size
    };

    // The disk: GPT by sfdisk, a 1 MiB "ESP", the slot, room for the backup table.
    let disk = scratch.path("disk.img");
    let slot_start = 2 * MIB;
    let disk_size = slot_start + slot_size + MIB;
    let f = std::fs::File::create(&disk).unwrap();
    f.set_len(disk_size).unwrap();
    drop(f);
    let script = format!(
        "label: gpt\nunit: sectors\n\
         start=2048, size=2048, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"ESP\"\n\
         start={}, size={}, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=\"ROOT-A\"\n",
        slot_start / SECTOR,
        partition_size / SECTOR
    );
    let mut child = std::process::Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("sfdisk (Debian fdisk)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk {}", disk.display());
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    // A truncated partition still has its bytes on the disk beyond its end.
    f.write_all_at(&slot, slot_start).unwrap();
    Disk {
        initramfs,
        disk,
        verity,
        partition_size,
        after_boot_block,
        _scratch: scratch,
    }
}

fn boot(build: &Build, name: &str, disk: &Disk, extra: &str) -> TestVm {
    let cfg = TestVm::config(build, &disk.initramfs, &format!("{CMDLINE} {extra}")).disk(&disk.disk);
    TestVm::boot(build, name, cfg)
}

fn boots_to_the_agent(name: &str, extra: &str, mode: &str) {
    let build = Build::from_env();
    let disk = build_disk(&build, name, Tamper::None);
    let vm = boot(&build, name, &disk, extra);
    vm.expect("basalt-agent: ready", BOOT_TIMEOUT);
    let console = vm.console();
    let root = vm.lines_with("root: /dev/dm-");
    assert_eq!(root.len(), 1, "{name}: {root:?}");
    assert!(
        root[0].contains(&format!("through dm-verity on ROOT-A {NODE}, {mode} mode")),
        "{name}: {}",
        root[0]
    );
    assert_eq!(root[0].contains("via /dev/loop"), mode == "ram", "{name}: {}", root[0]);
    assert!(!console.contains("FATAL"), "{name}:\n{console}");
    for module in ["dm_mod", "dm_bufio", "dm_verity", "virtio_blk"] {
        assert!(
            console.contains(&format!("module {module} loaded")),
            "{name}: {module} not loaded"
        );
    }
    assert!(
        !console.contains("is corrupted"),
        "{name}: verity reported corruption:\n{console}"
    );
}

#[test]
fn slot_boots_to_the_agent_in_ram_mode() {
    boots_to_the_agent("verity-ram", "basalt.root=ram", "ram");
}

#[test]
fn slot_boots_to_the_agent_in_disk_mode_with_full_hash() {
    boots_to_the_agent("verity-disk-full", "basalt.root=disk basalt.verify=full", "disk");
}

/// Boots a tampered disk: one FATAL line at `step` containing `cause`, no
/// root mounted, no handoff, a poweroff.
fn refused(name: &str, tamper: Tamper, extra: &str, step: &str, cause: impl Fn(&Disk) -> String) {
    let build = Build::from_env();
    let disk = build_disk(&build, name, tamper);
    let vm = boot(&build, name, &disk, extra);
    vm.expect("FATAL: step", BOOT_TIMEOUT);
    vm.expect_exit(Duration::from_secs(30));
    let fatal = vm.lines_with("FATAL: step");
    assert_eq!(fatal.len(), 1, "{name}: exactly one fatal line: {fatal:?}");
    let want = format!("FATAL: step {step}: root slot ROOT-A ({NODE}): {}", cause(&disk));
    assert!(fatal[0].contains(&want), "{name}: wanted {want:?}\n got {:?}", fatal[0]);
    let console = vm.console();
    assert!(!console.contains("root: /dev/"), "{name}: the root was mounted");
    assert!(!console.contains("handing off"), "{name}: handed off");
    assert!(console.contains("reboot: Power down"), "{name}: did not power off");
}

#[test]
fn slot_refuses_a_flipped_manifest_byte() {
    refused(
        "verity-manifest-byte",
        Tamper::ManifestByte,
        "",
        "slot-manifest",
        |_| "bad slot manifest: manifest signature does not verify with image key".into(),
    );
}

#[test]
fn slot_refuses_another_key() {
    refused("verity-other-key", Tamper::OtherKey, "", "slot-manifest", |_| {
        "bad slot manifest: manifest signature does not verify with image key".into()
    });
}

#[test]
fn slot_refuses_a_truncated_partition() {
    refused("verity-truncated", Tamper::Truncated, "", "slot-manifest", |d| {
        let tree_end = d.verity.hash_offset + d.verity.hash_blocks * BLOCK_SIZE as u64;
        format!(
            "partition is truncated: {} bytes, the image, its verity tree and the manifest area need {}",
            d.partition_size,
            tree_end + AREA_SIZE
        )
    });
}

/// The top level of the tree is its first block, read before any other.
#[test]
fn slot_refuses_a_flipped_tree_byte() {
    refused(
        "verity-tree-byte",
        Tamper::TreeByte,
        "basalt.root=ram",
        "mount-root",
        |d| {
            let block = d.verity.hash_offset / BLOCK_SIZE as u64;
            format!(
                "{MOUNT_EIO} (dm-verity: metadata block {block} is corrupted, at byte {} of the partition)",
                d.verity.hash_offset
            )
        },
    );
}

#[test]
fn slot_refuses_a_flipped_data_byte_in_both_modes() {
    for mode in ["ram", "disk"] {
        refused(
            &format!("verity-data-byte-{mode}"),
            Tamper::DataByte,
            &format!("basalt.root={mode}"),
            "mount-root",
            |_| format!("{MOUNT_EIO} (dm-verity: data block 0 is corrupted, at byte 0 of the partition)"),
        );
    }
}

/// A block first read after the handoff (by the agent) fails verity: the
/// watcher in PID1 ends the boot as a boot-time failure would, naming the
/// partition and the block.
#[test]
fn slot_corruption_after_boot_follows_on_error() {
    let build = Build::from_env();
    let name = "verity-after-boot";
    let disk = build_disk(&build, name, Tamper::AfterBoot);
    let block = disk.after_boot_block.unwrap();
    let vm = boot(&build, name, &disk, "basalt.root=disk");
    vm.expect("FATAL: step verity-watch", BOOT_TIMEOUT);
    vm.expect_exit(Duration::from_secs(30));
    let fatal = vm.lines_with("FATAL: step");
    assert_eq!(fatal.len(), 1, "{name}: exactly one fatal line: {fatal:?}");
    let want = format!(
        "FATAL: step verity-watch: root slot ROOT-A ({NODE}): dm-verity refused data block {block} of dm-0 after boot"
    );
    assert!(
        fatal[0].ends_with(&want),
        "{name}: wanted {want:?}\n got {:?}",
        fatal[0]
    );
    let console = vm.console();
    assert!(
        console.contains("handing off"),
        "{name}: the corruption was meant to be read after the handoff"
    );
    assert!(console.contains("reboot: Power down"), "{name}: did not power off");
}

/// A block that nothing reads at boot or after: the agent's background
/// scrub reads it once kubelet runs, reports it in status, and PID1's
/// watcher ends the boot, as a boot-time failure would (basalt.on_error,
/// here after 30 s so that status can still be read).
#[test]
fn scrub_reports_a_block_only_it_reads_and_on_error_applies() {
    let build = Build::from_env();
    let name = "verity-scrub";
    let disk = build_disk(&build, name, Tamper::ScrubOnly);
    let block = disk.after_boot_block.unwrap();
    let cmdline = format!("{CMDLINE} basalt.root=ram basalt.scrub_rate=1 basalt.error_delay=30");
    let scratch = Scratch::new(&format!("{name}-node"));
    let node = Node::boot_image(&build, name, &disk.initramfs, &cmdline, scratch, &|cfg| {
        cfg.disk(&disk.disk)
    });

    let scrub = &node.status()["scrub"];
    assert_eq!(scrub["state"], "waiting", "{name}: before any config: {scrub}");
    assert_eq!(scrub["blocks_total"], disk.verity.data_blocks, "{name}: {scrub}");
    assert_eq!(scrub["rate_mib_s"], 1.0, "{name}: {scrub}");
    assert_eq!(scrub["device"], "/dev/dm-0", "{name}: {scrub}");

    let config = node_config(&node.id, 1, "scrubbed", (100, 1000));
    ok(&node.vm, node.apply(&mut node.serial(), &node.sign(&config)));
    let status = node.wait_status("the scrub's end", Duration::from_secs(120), |s| {
        s["scrub"]["state"] != "waiting" && s["scrub"]["state"] != "running"
    });
    let scrub = &status["scrub"];
    assert_eq!(scrub["state"], "done", "{name}: {scrub}");
    assert_eq!(scrub["blocks_done"], disk.verity.data_blocks, "{name}: {scrub}");
    assert_eq!(scrub["errors"], 1, "{name}: {scrub}");
    assert_eq!(scrub["bad_blocks"], serde_json::json!([block]), "{name}: {scrub}");
    let seconds = scrub["seconds"].as_f64().unwrap();
    let mib = disk.verity.data_blocks as f64 * BLOCK_SIZE as f64 / MIB as f64;
    // At 1 MiB/s, in 32 KiB reads; the last read starts one read's time
    // before the whole would take.
    assert!(
        seconds >= mib - 0.1 && seconds <= mib + 5.0,
        "{name}: {mib:.2} MiB in {seconds} s at 1 MiB/s"
    );
    let line = node.vm.lines_with("scrub: /dev/dm-0 block");
    assert_eq!(line.len(), 1, "{name}: one line names the block: {line:?}");
    assert!(
        line[0].contains(&format!("block {block} (byte {})", block * BLOCK_SIZE as u64)),
        "{name}: {line:?}"
    );

    node.vm.expect("FATAL: step verity-watch", Duration::from_secs(30));
    node.vm.expect_exit(Duration::from_secs(90));
    let fatal = node.vm.lines_with("FATAL: step");
    assert_eq!(fatal.len(), 1, "{name}: exactly one fatal line: {fatal:?}");
    let want = format!(
        "FATAL: step verity-watch: root slot ROOT-A ({NODE}): dm-verity refused data block {block} of dm-0 after boot"
    );
    assert!(
        fatal[0].ends_with(&want),
        "{name}: wanted {want:?}\n got {:?}",
        fatal[0]
    );
    assert!(
        node.vm.console().contains("reboot: Power down"),
        "{name}: did not power off"
    );
}
