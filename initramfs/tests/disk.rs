//! `basalt-mkimage disk` read back by the reference tools: sfdisk and sgdisk
//! for the GPT, mtools for the ESP, objcopy for the UKI sections,
//! veritysetup for each root slot, dumpe2fs and e2fsck for VAR. No QEMU,
//! no root, no loop devices.

mod common;

use basalt_common::disk::gpt;
use basalt_common::disk::slot::{self, Area};
use basalt_common::hex;
use basalt_common::keys::SigningKey;
use basalt_common::manifest::{verify_manifest, Manifest, DEFAULT_HANDOFF};
use basalt_mkimage::disk::{build_disk, DiskReport, DiskSpec};
use basalt_mkimage::varfs::VarfsIds;
use basalt_mkimage::{esp, uki, RootSource};
use common::{fake_kernel, rootfs, FakeKernel, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MIB: u64 = 1 << 20;

fn key() -> SigningKey {
    SigningKey::from_seed(&[0x24; 32]).unwrap()
}

/// A tool from PATH or the sbin directories (sfdisk, sgdisk and veritysetup
/// live in /usr/sbin, which an ordinary user's PATH may lack).
fn tool(name: &str, package: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: this test needs it (apt-get install {package}; `make test` installs it)")
        })
}

fn output(cmd: &mut Command) -> Output {
    cmd.env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn require_boot_files() {
    for path in [uki::DEFAULT_STUB, esp::DEFAULT_LOADER] {
        assert!(
            Path::new(path).is_file(),
            "{path} is not installed: this test needs it (apt-get install systemd-boot-efi; `make test` installs it)"
        );
    }
    tool("objcopy", "binutils");
    tool("mkfs.vfat", "dosfstools");
    tool("mcopy", "mtools");
    tool("mksquashfs", "squashfs-tools");
    tool("mke2fs", "e2fsprogs");
}

fn disk_spec(dir: &TempDir, kernel: &FakeKernel, root: &Path, name: &str, fill_b: bool) -> DiskSpec {
    // The UKIs take any bytes as the kernel; objcopy does not look inside.
    let vmlinuz = dir.write("vmlinuz", &b"MZ stand-in kernel ".repeat(5000));
    DiskSpec {
        init: dir.write("init", b"\x7fELF stand-in for basalt-init"),
        root: RootSource::Rootfs(root.to_path_buf()),
        modules_dir: kernel.modules_dir.clone(),
        kconfig: kernel.kconfig.clone(),
        fragment: kernel.fragment.clone(),
        kernel: vmlinuz,
        stub: uki::DEFAULT_STUB.into(),
        loader: esp::DEFAULT_LOADER.into(),
        version: "0.1.0-disk".into(),
        handoff: DEFAULT_HANDOFF.into(),
        slot_size: 4 * MIB,
        esp_size: 40 * MIB,
        state_size: MIB,
        var_size: 8 * MIB,
        salt: None,
        fill_b,
        append: Some("basalt.on_error=poweroff".into()),
        parts_dir: Some(dir.join(&format!("{name}.parts"))),
        out: dir.join(&format!("{name}.img")),
        source_date_epoch: Some(1_700_000_000),
    }
}

fn build(spec: &DiskSpec) -> DiskReport {
    build_disk(spec, &key()).unwrap_or_else(|e| panic!("disk build failed: {e}"))
}

/// `bytes` bytes of the disk from `offset`.
fn read_at(disk: &Path, offset: u64, len: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(disk).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn gpt_reads_back_with_sfdisk_and_sgdisk() {
    require_boot_files();
    let dir = TempDir::new("disk-gpt");
    let kernel = fake_kernel(&dir);
    let root = rootfs(&dir, "rootfs");
    let spec = disk_spec(&dir, &kernel, &root, "disk", true);
    let report = build(&spec);

    let json = ok(Command::new(tool("sfdisk", "fdisk")).arg("--json").arg(&spec.out));
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let table = &doc["partitiontable"];
    assert_eq!(table["label"], "gpt");
    assert_eq!(table["sectorsize"], 512);
    assert_eq!(table["firstlba"], 34);
    assert_eq!(table["id"], report.gpt.disk_guid.to_string());
    let parts: Vec<(String, String, u64, u64)> = table["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["type"].as_str().unwrap().to_string(),
                p["start"].as_u64().unwrap(),
                p["size"].as_u64().unwrap() * 512 / MIB,
            )
        })
        .collect();
    let want = |name: &str, ty: &str, start: u64, mib: u64| (name.to_string(), ty.to_string(), start, mib);
    assert_eq!(
        parts,
        [
            want("ESP", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", 2048, 40),
            want("ROOT-A", "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", 2048 + 40 * 2048, 4),
            want("ROOT-B", "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", 2048 + 44 * 2048, 4),
            want("STATE", "0FC63DAF-8483-4772-8E79-3D69D8477DE4", 2048 + 48 * 2048, 1),
            want("VAR", "4D21B016-B534-45C2-A9FB-5C16E091FD2D", 2048 + 49 * 2048, 8),
        ]
    );
    let size = std::fs::metadata(&spec.out).unwrap().len();
    assert_eq!(size, (1 + 40 + 4 + 4 + 1 + 8 + 1) * MIB);

    let verify = ok(Command::new(tool("sgdisk", "gdisk")).arg("-v").arg(&spec.out));
    assert!(verify.contains("No problems found."), "{verify}");

    // Our own parser agrees, from the first 34 sectors.
    let head = read_at(&spec.out, 0, 34 * 512);
    let (_, entries) = gpt::parse(&head).unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.partition.name.as_str()).collect();
    assert_eq!(names, ["ESP", "ROOT-A", "ROOT-B", "STATE", "VAR"]);

    // A flipped byte in the primary entries is what sgdisk complains about.
    let broken = dir.join("broken.img");
    std::fs::copy(&spec.out, &broken).unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&broken).unwrap();
        f.seek(SeekFrom::Start(2 * 512 + 60)).unwrap();
        f.write_all(b"X").unwrap();
    }
    let out = output(Command::new(tool("sgdisk", "gdisk")).arg("-v").arg(&broken));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!said.contains("No problems found."), "{said}");
}

#[test]
fn esp_holds_the_loader_its_config_and_one_uki_per_filled_slot() {
    require_boot_files();
    let dir = TempDir::new("disk-esp");
    let kernel = fake_kernel(&dir);
    let root = rootfs(&dir, "rootfs");
    for fill_b in [true, false] {
        let name = if fill_b { "both" } else { "a-only" };
        let spec = disk_spec(&dir, &kernel, &root, name, fill_b);
        let report = build(&spec);
        let esp_at = report.gpt.find("ESP").unwrap().1.offset_bytes();
        let image = format!("{}@@{esp_at}", spec.out.display());
        let mdir = |path: &str| ok(Command::new(tool("mdir", "mtools")).args(["-b", "-i", &image, path]));
        let mtype = |path: &str| ok(Command::new(tool("mtype", "mtools")).args(["-i", &image, path]));

        assert_eq!(mdir("::/EFI/BOOT").trim(), "::/EFI/BOOT/BOOTX64.EFI");
        assert_eq!(mtype("::/loader/loader.conf"), "timeout 0\neditor no\n");
        let ukis = mdir("::/EFI/Linux");
        let mut ukis: Vec<&str> = ukis.lines().collect();
        ukis.sort();
        let want: &[&str] = if fill_b {
            &["::/EFI/Linux/basalt-0-b.efi", "::/EFI/Linux/basalt-1-a.efi"]
        } else {
            &["::/EFI/Linux/basalt-1-a.efi"]
        };
        assert_eq!(ukis, want, "{name}");
        let names: Vec<&str> = report.ukis.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), want.len());

        // The loader on the ESP is systemd-boot, byte for byte.
        let loader = dir.join(&format!("{name}.loader"));
        ok(Command::new(tool("mcopy", "mtools"))
            .args(["-n", "-i", &image, "::/EFI/BOOT/BOOTX64.EFI"])
            .arg(&loader));
        assert!(std::fs::read(&loader).unwrap() == std::fs::read(esp::DEFAULT_LOADER).unwrap());

        // Each UKI's sections, as objcopy reads them back.
        for (uki_name, letter) in names.iter().zip(["A", "B"]) {
            let uki = dir.join(&format!("{name}-{uki_name}"));
            ok(Command::new(tool("mcopy", "mtools"))
                .args(["-n", "-i", &image, &format!("::/EFI/Linux/{uki_name}")])
                .arg(&uki));
            let section = |s: &str| {
                let out = dir.join(&format!("{name}-{uki_name}{s}"));
                ok(Command::new(tool("objcopy", "binutils"))
                    .args(["-O", "binary", &format!("--only-section={s}")])
                    .arg(&uki)
                    .arg(&out));
                std::fs::read(&out).unwrap()
            };
            assert_eq!(
                String::from_utf8(section(".cmdline")).unwrap(),
                format!(
                    "console=ttyS0 quiet basalt.image=partlabel:ROOT-{letter} basalt.root=ram \
                     basalt.var=partlabel:VAR basalt.on_error=poweroff"
                )
            );
            let osrel = String::from_utf8(section(".osrel")).unwrap();
            assert!(osrel.contains(&format!("(slot {letter})")), "{osrel}");
            assert!(section(".linux") == std::fs::read(&spec.kernel).unwrap());
            let initrd = section(".initrd");
            assert!(initrd == std::fs::read(spec.parts_dir.as_ref().unwrap().join("initrd.img")).unwrap());
            // The initramfs holds the slot's signed manifest, and no root image.
            let text = String::from_utf8_lossy(&initrd);
            assert!(text.contains("basalt/manifest.json"));
            assert!(!text.contains("basalt/root.sqsh"));
            let json = String::from_utf8_lossy(&report.signed.json);
            assert!(text.contains(json.as_ref()), "the UKI's manifest is the slot's");
        }
    }
}

/// The manifest in a slot's area, verified with the image key.
fn slot_manifest(disk: &Path, report: &DiskReport, label: &str) -> Option<(Vec<u8>, Manifest)> {
    let p = report.gpt.find(label).unwrap().1;
    let area_at = slot::area_offset(p.size_bytes()).unwrap();
    let area = read_at(disk, p.offset_bytes() + area_at, slot::AREA_SIZE);
    match slot::decode_area(&area).unwrap() {
        Area::Empty => None,
        Area::Signed { json, signature } => {
            let m = verify_manifest(json, signature, &key().public_key()).unwrap();
            Some((json.to_vec(), m))
        }
    }
}

#[test]
fn veritysetup_accepts_each_slot() {
    require_boot_files();
    let veritysetup = tool("veritysetup", "cryptsetup-bin");
    let dir = TempDir::new("disk-verity");
    let kernel = fake_kernel(&dir);
    let root = rootfs(&dir, "rootfs");
    // Incompressible files, so the image is over 128 blocks: a two-level tree.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..30 {
        let noise: Vec<u8> = (0..30_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        dir.write(&format!("rootfs/usr/lib/noise{i}"), &noise);
    }
    let spec = disk_spec(&dir, &kernel, &root, "disk", true);
    let report = build(&spec);
    let verity = report.manifest.verity.clone().unwrap();
    assert!(verity.data_blocks > 128, "want a two-level tree: {verity:?}");
    assert_eq!(
        verity.hash_blocks,
        basalt_common::disk::verity::hash_blocks(verity.data_blocks)
    );

    for label in ["ROOT-A", "ROOT-B"] {
        let (json, m) = slot_manifest(&spec.out, &report, label).unwrap();
        assert!(
            json == report.signed.json,
            "{label}: the slot holds the signed manifest"
        );
        assert_eq!(m, report.manifest);
        let v = m.verity.unwrap();

        let p = report.gpt.find(label).unwrap().1;
        let slot_file = dir.join(&format!("{label}.slot"));
        std::fs::write(&slot_file, read_at(&spec.out, p.offset_bytes(), p.size_bytes())).unwrap();
        let verify = |file: &Path| {
            output(
                Command::new(&veritysetup)
                    .args([
                        "verify",
                        "--no-superblock",
                        "--data-block-size=4096",
                        "--hash-block-size=4096",
                    ])
                    .arg(format!("--data-blocks={}", v.data_blocks))
                    .arg(format!("--hash-offset={}", v.hash_offset))
                    .arg(format!("--salt={}", hex::encode(&v.salt)))
                    .arg(file)
                    .arg(file)
                    .arg(hex::encode(&v.root_hash)),
            )
        };
        let out = verify(&slot_file);
        assert!(
            out.status.success(),
            "{label}: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        // veritysetup format over the same data and salt gives the same root hash.
        let data = dir.join(&format!("{label}.data"));
        std::fs::write(&data, read_at(&slot_file, 0, v.hash_offset)).unwrap();
        let hash = dir.join(&format!("{label}.hash"));
        let formatted = ok(Command::new(&veritysetup)
            .args([
                "format",
                "--no-superblock",
                "--data-block-size=4096",
                "--hash-block-size=4096",
            ])
            .arg(format!("--salt={}", hex::encode(&v.salt)))
            .arg(&data)
            .arg(&hash));
        let root_hash = formatted
            .lines()
            .find_map(|l| l.strip_prefix("Root hash:"))
            .map(str::trim)
            .unwrap_or_default()
            .to_string();
        assert_eq!(root_hash, hex::encode(&v.root_hash), "{label}");

        // One flipped byte in a data block, and verify refuses.
        let mut bytes = std::fs::read(&slot_file).unwrap();
        bytes[5 * 4096 + 17] ^= 0x01;
        std::fs::write(&slot_file, &bytes).unwrap();
        assert!(!verify(&slot_file).status.success(), "{label}: a corrupt block passed");
    }

    // An empty slot B: all zeros, so no manifest and no UKI.
    let a_only = disk_spec(&dir, &kernel, &root, "a-only", false);
    let report = build(&a_only);
    assert!(slot_manifest(&a_only.out, &report, "ROOT-A").is_some());
    assert!(slot_manifest(&a_only.out, &report, "ROOT-B").is_none());
    let b = report.gpt.find("ROOT-B").unwrap().1;
    assert!(read_at(&a_only.out, b.offset_bytes(), b.size_bytes())
        .iter()
        .all(|&x| x == 0));
    let state = report.gpt.find("STATE").unwrap().1;
    assert!(read_at(&a_only.out, state.offset_bytes(), state.size_bytes())
        .iter()
        .all(|&x| x == 0));
}

/// VAR, cut out of the disk: an ext4 that e2fsck passes, with the UUID,
/// hash seed and timestamps the build pinned, holding only lost+found.
#[test]
fn var_is_an_empty_ext4_that_e2fsck_accepts() {
    require_boot_files();
    let dir = TempDir::new("disk-var");
    let kernel = fake_kernel(&dir);
    let root = rootfs(&dir, "rootfs");
    let spec = disk_spec(&dir, &kernel, &root, "disk", false);
    let report = build(&spec);
    let p = report.gpt.find("VAR").unwrap().1;
    let var = dir.join("var.ext4");
    std::fs::write(&var, read_at(&spec.out, p.offset_bytes(), p.size_bytes())).unwrap();

    let fsck = ok(Command::new(tool("e2fsck", "e2fsprogs")).arg("-fn").arg(&var));
    assert!(fsck.contains("VAR: 11/"), "{fsck}");
    let header = ok(Command::new(tool("dumpe2fs", "e2fsprogs"))
        .env("TZ", "UTC")
        .arg("-h")
        .arg(&var));
    let field = |name: &str| {
        header
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("dumpe2fs -h has no {name}:\n{header}"))
    };
    let ids = VarfsIds::derive(&report.manifest.image.sha256);
    assert_eq!(field("Filesystem volume name"), "VAR");
    assert_eq!(field("Filesystem UUID"), ids.uuid.to_string().to_lowercase());
    assert_eq!(field("Directory Hash Seed"), ids.hash_seed.to_string().to_lowercase());
    assert_eq!(field("Block size"), "4096");
    assert_eq!(field("Block count"), (8 * MIB / 4096).to_string());
    assert_eq!(field("Filesystem state"), "clean");
    let features = field("Filesystem features");
    for want in ["has_journal", "extent", "metadata_csum"] {
        assert!(features.split(' ').any(|f| f == want), "{want} missing: {features}");
    }
    // E2FSPROGS_FAKE_TIME: the build's SOURCE_DATE_EPOCH, 1700000000.
    assert_eq!(field("Filesystem created"), "Tue Nov 14 22:13:20 2023");

    // The root directory: 0755, root's, and nothing in it but lost+found.
    let debugfs = |request: &str| {
        ok(Command::new(tool("debugfs", "e2fsprogs"))
            .args(["-R", request])
            .arg(&var))
    };
    let listing = debugfs("ls -p /");
    let names: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split('/').nth(5))
        .filter(|n| !n.is_empty())
        .collect();
    assert_eq!(names, [".", "..", "lost+found"], "{listing}");
    let root_line = listing.lines().find(|l| l.split('/').nth(5) == Some(".")).unwrap();
    let fields: Vec<&str> = root_line.split('/').collect();
    assert_eq!(&fields[2..5], ["040755", "0", "0"], "{root_line}");
}

#[test]
fn same_inputs_same_disk_and_a_full_slot_is_refused() {
    require_boot_files();
    let dir = TempDir::new("disk-repro");
    let kernel = fake_kernel(&dir);
    let root = rootfs(&dir, "rootfs");
    let a = disk_spec(&dir, &kernel, &root, "first", true);
    let b = DiskSpec {
        parts_dir: None,
        out: dir.join("second.img"),
        ..a.clone()
    };
    build(&a);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    build(&b);
    assert!(
        std::fs::read(&a.out).unwrap() == std::fs::read(&b.out).unwrap(),
        "two builds of the same inputs differ"
    );
    // Without --parts-dir nothing is left beside the output.
    let leftovers: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("second") && n != "second.img")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A root image that leaves no room for its tree and the manifest area.
    let mut big = b"hsqs".to_vec();
    big.extend((0..1_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let sqsh = dir.write("big.sqsh", &big);
    let too_small = DiskSpec {
        root: RootSource::Squashfs(sqsh),
        slot_size: MIB,
        parts_dir: None,
        out: dir.join("small.img"),
        ..a.clone()
    };
    let err = build_disk(&too_small, &key()).unwrap_err().to_string();
    assert_eq!(
        err,
        "laying out the root slot: image and verity tree need 1015808 bytes plus the 65536-byte manifest area, the slot has 1048576"
    );
    assert!(!too_small.out.exists());
}
