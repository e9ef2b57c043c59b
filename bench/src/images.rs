#![cfg(feature = "host")]
//! The images the boots compare: one padded root image per size, packed
//! twice, once for basalt-init and once for the busybox baseline.
//!
//! Both initramfs hold the same kernel modules at the same paths and the
//! same root image at /basalt/root.sqsh; only /init differs (and basalt's
//! also holds the signed manifest, which it verifies and the baseline has no
//! way to). The root image is the build's rootfs plus the handoff fixture
//! plus a file of seeded pseudo-random bytes, which SquashFS cannot
//! compress, sized so the image reaches the target.

use crate::error::{file_len, io_err, run, BenchError};
use basalt_common::hex;
use basalt_common::splitmix::SplitMix64;
use basalt_mkimage::cpio::{CpioWriter, Entry};
use basalt_mkimage::modules::ModuleFile;
use basalt_mkimage::{BuildReport, BuildSpec, Compression, RootSource};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Where the handoff fixture lives in the bench root image.
pub const HANDOFF: &str = "/usr/libexec/basalt-bench/handoff";
/// The padding file, relative to the rootfs.
pub const PADDING: &str = "usr/share/basalt-bench/padding";
/// mksquashfs's default block size: the padding is whole blocks, so it
/// leaves no fragment and its size is predictable.
const SQUASHFS_BLOCK: u64 = 128 * 1024;
/// The seed of the padding bytes: the same bytes in every run.
pub const PADDING_SEED: u64 = 0x6261_7361_6c74_2d62; // "basalt-b"

/// Writes `len` seeded pseudo-random bytes to `path`.
pub fn write_random_file(path: &Path, len: u64, seed: u64) -> Result<(), BenchError> {
    let file = File::create(path).map_err(io_err("create", path))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut rng = SplitMix64::new(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        out.write_all(&buf[..n]).map_err(io_err("write", path))?;
        left -= n as u64;
    }
    out.flush().map_err(io_err("write", path))
}

/// Bytes of padding that bring an image of `unpadded` bytes (the same tree
/// without padding) up to at most `target`: whole SquashFS blocks, each
/// costing its size plus a 4-byte entry in the file's block list, with a
/// 4 KiB page of slack for the image's rounding.
pub fn padding_for(target: u64, unpadded: u64) -> u64 {
    let room = target.saturating_sub(unpadded + 4096);
    room / (SQUASHFS_BLOCK + 4) * SQUASHFS_BLOCK
}

/// Copies the build's rootfs to `stage` and installs a fixture there:
/// `(program, where)`, the handoff fixture at [`HANDOFF`] for the boots.
pub fn stage_rootfs(rootfs: &Path, (bin, dest): (&Path, &str), stage: &Path) -> Result<(), BenchError> {
    if stage.exists() {
        std::fs::remove_dir_all(stage).map_err(io_err("remove", stage))?;
    }
    run(std::process::Command::new("cp").arg("-a").arg(rootfs).arg(stage))?;
    let dest = stage.join(dest.trim_start_matches('/'));
    run(std::process::Command::new("install")
        .args(["-D", "-m", "0755"])
        .arg(bin)
        .arg(dest))?;
    let padding_dir = stage.join(PADDING).parent().map(Path::to_path_buf).unwrap_or_default();
    std::fs::create_dir_all(&padding_dir).map_err(io_err("create", &padding_dir))
}

/// Builds the staged rootfs into `out` with `padding` bytes of padding
/// (the size of the same tree built without padding gives how many to
/// reach a target: [`padding_for`]). Returns the image's size.
pub fn padded_image(stage: &Path, padding: u64, out: &Path) -> Result<u64, BenchError> {
    let file = stage.join(PADDING);
    write_random_file(&file, padding, PADDING_SEED)?;
    let built = basalt_mkimage::squashfs::build_squashfs(stage, out, 0).map_err(BenchError::Squashfs);
    std::fs::remove_file(&file).map_err(io_err("remove", &file))?;
    built?;
    file_len(out)
}

/// What building an image needs from `make image`'s build directory.
#[derive(Debug, Clone)]
pub struct BuildInputs {
    pub init: PathBuf,
    pub modules_dir: PathBuf,
    pub kconfig: PathBuf,
    pub fragment: PathBuf,
    pub image_key: PathBuf,
    /// The kernel, for the slot disk's UKIs.
    pub kernel: PathBuf,
}

impl BuildInputs {
    /// What `make image` left in the build directory, and the paths given.
    pub fn of(paths: &crate::cli::Paths) -> BuildInputs {
        BuildInputs {
            init: paths.build.join("bin/basalt-init"),
            modules_dir: paths.modules_dir.clone(),
            kconfig: paths.kconfig.clone(),
            fragment: paths.fragment.clone(),
            image_key: paths.build.join("keys/image.key"),
            kernel: paths.build.join("vmlinuz"),
        }
    }
}

/// basalt's initramfs around `image`, exactly as `make image` builds one
/// except for the handoff (the fixture).
pub fn basalt_initramfs(inputs: &BuildInputs, image: &Path, out: &Path) -> Result<BuildReport, BenchError> {
    let what = out.display().to_string();
    let key = basalt_mkimage::assemble::read_signing_key(&inputs.image_key).map_err(|source| BenchError::Mkimage {
        what: what.clone(),
        source,
    })?;
    let spec = BuildSpec {
        init: inputs.init.clone(),
        root: RootSource::Squashfs(image.to_path_buf()),
        modules_dir: inputs.modules_dir.clone(),
        kconfig: inputs.kconfig.clone(),
        fragment: inputs.fragment.clone(),
        version: "bench".into(),
        handoff: HANDOFF.into(),
        compression: Compression::None,
        embed_image: true,
        image_out: None,
        manifest_out: None,
        out: out.to_path_buf(),
        source_date_epoch: None,
    };
    basalt_mkimage::build(&spec, &key).map_err(|source| BenchError::Mkimage { what, source })
}

/// The smallest slot that holds `image_bytes` of SquashFS, its hash tree
/// and the manifest area, in whole MiB.
pub fn slot_size_for(image_bytes: u64) -> u64 {
    use basalt_common::disk::{slot::AREA_SIZE, verity};
    let blocks = verity::data_blocks(image_bytes);
    let need = (blocks + verity::hash_blocks(blocks)) * verity::BLOCK_SIZE as u64 + AREA_SIZE;
    need.div_ceil(1 << 20) << 20
}

/// `basalt-mkimage disk` around `image`, as `make disk` builds one except
/// for the handoff (the fixture) and the slot size (just enough). Returns
/// the small initramfs the UKIs carry, kept in `parts`: the boots load it
/// with `-kernel/-initrd` beside the disk, as tests/tests/verity.rs does,
/// so that no firmware time is counted.
pub fn slot_disk(inputs: &BuildInputs, image: &Path, parts: &Path, out: &Path) -> Result<PathBuf, BenchError> {
    let spec = basalt_mkimage::disk::DiskSpec {
        parts_dir: Some(parts.to_path_buf()),
        ..disk_spec(inputs, image, out)?
    };
    build_disk(inputs, &spec)?;
    Ok(parts.join("initrd.img"))
}

fn image_key(inputs: &BuildInputs, what: &Path) -> Result<basalt_common::keys::SigningKey, BenchError> {
    basalt_mkimage::assemble::read_signing_key(&inputs.image_key).map_err(|source| BenchError::Mkimage {
        what: what.display().to_string(),
        source,
    })
}

/// The spec [`slot_disk`] builds from: `image` in ROOT-A of a slot just
/// big enough, the fixture as handoff, into `out`.
pub fn disk_spec(inputs: &BuildInputs, image: &Path, out: &Path) -> Result<basalt_mkimage::disk::DiskSpec, BenchError> {
    use basalt_mkimage::disk::{DiskSpec, DEFAULT_ESP_SIZE, DEFAULT_STATE_SIZE, DEFAULT_VAR_SIZE};
    Ok(DiskSpec {
        init: inputs.init.clone(),
        root: RootSource::Squashfs(image.to_path_buf()),
        modules_dir: inputs.modules_dir.clone(),
        kconfig: inputs.kconfig.clone(),
        fragment: inputs.fragment.clone(),
        kernel: inputs.kernel.clone(),
        stub: basalt_mkimage::uki::DEFAULT_STUB.into(),
        loader: basalt_mkimage::esp::DEFAULT_LOADER.into(),
        version: "bench".into(),
        handoff: HANDOFF.into(),
        slot_size: slot_size_for(crate::error::file_len(image)?),
        esp_size: DEFAULT_ESP_SIZE,
        state_size: DEFAULT_STATE_SIZE,
        var_size: DEFAULT_VAR_SIZE,
        salt: None,
        fill_b: false,
        append: None,
        parts_dir: None,
        out: out.to_path_buf(),
        source_date_epoch: None,
    })
}

/// `basalt-mkimage disk` from `spec`, signed with the build's image key.
pub fn build_disk(
    inputs: &BuildInputs,
    spec: &basalt_mkimage::disk::DiskSpec,
) -> Result<basalt_mkimage::disk::DiskReport, BenchError> {
    let key = image_key(inputs, &spec.out)?;
    let what = spec.out.display().to_string();
    basalt_mkimage::disk::build_disk(spec, &key).map_err(|source| BenchError::Disk { what, source })
}

/// `basalt-mkimage bundle` with `disk`'s image, handoff, slot size and
/// command line, for slot B, as `(version, version_seq)`, into `out`:
/// what `make bundle` builds for a node on that disk.
pub fn bundle_for(
    inputs: &BuildInputs,
    disk: &basalt_mkimage::disk::DiskSpec,
    (version, version_seq): (&str, u64),
    out: &Path,
) -> Result<(), BenchError> {
    use basalt_mkimage::bundle::{build_bundle, BundleSpec};
    let key = image_key(inputs, out)?;
    let target = *basalt_mkimage::disk::SLOTS
        .iter()
        .find(|s| s.letter == "B")
        .ok_or_else(|| BenchError::Parse {
            what: "basalt_mkimage::disk::SLOTS".into(),
            why: "no slot B".into(),
        })?;
    let spec = BundleSpec {
        init: disk.init.clone(),
        root: disk.root.clone(),
        modules_dir: disk.modules_dir.clone(),
        kconfig: disk.kconfig.clone(),
        fragment: disk.fragment.clone(),
        kernel: disk.kernel.clone(),
        stub: disk.stub.clone(),
        version: version.into(),
        version_seq,
        arch: basalt_common::bundle::Arch::X86_64,
        handoff: disk.handoff.clone(),
        slot_size: disk.slot_size,
        salt: None,
        target,
        append: disk.append.clone(),
        parts_dir: None,
        out: out.to_path_buf(),
        source_date_epoch: None,
    };
    build_bundle(&spec, &key).map_err(|e| BenchError::Parse {
        what: format!("building {}", out.display()),
        why: e.to_string(),
    })?;
    Ok(())
}

/// Step marks the baseline writes to the kernel log after each step, named
/// as the basalt-init steps they correspond to, in order.
pub const BASELINE_MARKS: &[&str] = &[
    "mount-early",
    "modules",
    "verify-image",
    "mount-root",
    "mount-writable",
    "switch-root",
    "lockdown",
];

/// The busybox baseline's /init (bench/baseline-init.sh): the steps
/// basalt-init takes, as a shell script, with the flags basalt-init uses.
/// Every command is a busybox applet reached through a symlink in /bin.
/// `set -e`: any failure ends /init, the kernel panics, and with
/// `panic=-1 -no-reboot` QEMU exits. switch_root deletes the initramfs,
/// moves /newroot onto / and execs the handoff.
pub fn baseline_script(modules: &[String], image_sha256: &[u8; 32], handoff: &str) -> String {
    let insmod: String = modules
        .iter()
        .map(|m| format!("insmod /basalt/modules/{m}.ko\n"))
        .collect();
    include_str!("../baseline-init.sh")
        .replace("@INSMOD@\n", &insmod)
        .replace("@IMAGE_SHA256@", &hex::encode(image_sha256))
        .replace("@HANDOFF@", handoff)
}

/// The applets the script calls, each a symlink to /bin/busybox.
pub const APPLETS: &[&str] = &["sh", "mount", "insmod", "sha256sum", "losetup", "switch_root"];

/// Packs the baseline initramfs: /init (the script), /bin/busybox and its
/// applet links, /dev/console, the mount points, the image and modules.
pub fn baseline_initramfs(
    busybox: &Path,
    image: &Path,
    image_sha256: &[u8; 32],
    modules: &[ModuleFile],
    out: &Path,
) -> Result<u64, BenchError> {
    let names: Vec<String> = modules.iter().map(|m| m.name.clone()).collect();
    let script = baseline_script(&names, image_sha256, HANDOFF);
    let module_paths: Vec<String> = names.iter().map(|n| format!("basalt/modules/{n}.ko")).collect();
    let applet_paths: Vec<String> = APPLETS.iter().map(|a| format!("bin/{a}")).collect();
    let dirs = [
        "bin",
        "dev",
        "proc",
        "sys",
        "run",
        "newroot",
        "basalt",
        "basalt/modules",
    ];
    let mut entries: Vec<Entry> = vec![
        Entry::bytes("init", 0o755, script.as_bytes()),
        Entry::file("bin/busybox", 0o755, busybox),
        Entry::char_device("dev/console", 0o600, 5, 1),
        Entry::file("basalt/root.sqsh", 0o444, image),
    ];
    entries.extend(dirs.iter().map(|d| Entry::dir(d, 0o755)));
    entries.extend(applet_paths.iter().map(|path| Entry::symlink(path, "busybox")));
    entries.extend(
        module_paths
            .iter()
            .zip(modules)
            .map(|(path, m)| Entry::file(path, 0o444, &m.path)),
    );
    // Sorted names put every directory before what it holds.
    entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let cpio = |source| BenchError::Cpio {
        what: out.display().to_string(),
        source,
    };
    let file = File::create(out).map_err(io_err("create", out))?;
    let mut writer = CpioWriter::new(BufWriter::with_capacity(1 << 20, file), 0);
    for entry in &entries {
        writer.write_entry(entry).map_err(cpio)?;
    }
    writer.finish().map_err(cpio)?.flush().map_err(io_err("write", out))?;
    file_len(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_hold_image_tree_and_area() {
        let mib = 1 << 20;
        // (image bytes, slot bytes): 64 MiB of data needs 129 hash blocks.
        let cases = [(64 * mib, 65 * mib), (1, mib), (1024 * mib, 1033 * mib)];
        for (image, want) in cases {
            assert_eq!(slot_size_for(image), want, "{image}");
            basalt_common::disk::slot::layout(want, image).unwrap();
        }
    }

    #[test]
    fn padding_bytes_cover_every_value() {
        // Every byte value turns up in 64 KiB of the padding stream.
        let mut big = vec![0u8; 1 << 16];
        SplitMix64::new(PADDING_SEED).fill(&mut big);
        let mut seen = [false; 256];
        big.iter().for_each(|&v| seen[v as usize] = true);
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn padding_is_whole_blocks_below_the_target() {
        let mib = 1 << 20;
        let cases: &[(u64, u64, u64)] = &[
            // target, unpadded, padding
            (64 * mib, 4 * mib, 479 * SQUASHFS_BLOCK),
            (4 * mib, 4 * mib, 0),
            (mib, 4 * mib, 0),
            (4 * mib + 4096 + SQUASHFS_BLOCK + 4, 4 * mib, SQUASHFS_BLOCK),
            (4 * mib + 4096 + SQUASHFS_BLOCK + 3, 4 * mib, 0),
        ];
        for &(target, unpadded, want) in cases {
            let got = padding_for(target, unpadded);
            assert_eq!(got, want, "target {target} unpadded {unpadded}");
            assert!(unpadded + got + got / SQUASHFS_BLOCK * 4 <= target || got == 0);
        }
    }

    #[test]
    fn baseline_script_does_basalts_steps_in_order() {
        let s = baseline_script(&["virtio_ring".into(), "loop".into()], &[0xab; 32], "/x/handoff");
        let insmod = "insmod /basalt/modules/virtio_ring.ko\ninsmod /basalt/modules/loop.ko\n";
        let digest = format!("[ \"$1\" = {} ]", "ab".repeat(32));
        let pieces = [
            "#!/bin/sh\n",
            "set -e\n",
            "\nmark mount-early\n",
            insmod,
            "mark modules\n",
            &digest,
        ];
        let marks: Vec<String> = BASELINE_MARKS.iter().map(|m| format!("\nmark {m}\n")).collect();
        let mut at = 0;
        for piece in pieces.iter().copied().chain(marks.iter().skip(2).map(String::as_str)) {
            let found = s[at..]
                .find(piece)
                .unwrap_or_else(|| panic!("{piece:?} missing after byte {at}:\n{s}"));
            at += found + piece.len() - 1;
        }
        assert!(s.ends_with("mark lockdown\nexec switch_root /newroot /x/handoff\n") && !s.contains('@'));
        for mark in marks {
            assert_eq!(s.matches(&mark).count(), 1, "{mark}");
        }
        assert!(!baseline_script(&[], &[1; 32], "/h").contains("insmod"));
        // Every command the script runs has an applet link.
        for cmd in ["mount", "insmod", "sha256sum", "losetup", "switch_root"] {
            assert!(APPLETS.contains(&cmd), "{cmd}");
        }
    }
}
