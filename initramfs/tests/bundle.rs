//! `basalt-mkimage bundle` read back: the signature by this crate and by
//! openssl, every chunk digest, and the slot part by veritysetup with the
//! root hash its own signed manifest names. No QEMU, no root.

mod common;

use basalt_common::bundle::{self, check_chunk, chunk_range, read_header, verify_bundle, Arch, Part};
use basalt_common::disk::slot::{self, Area};
use basalt_common::hex;
use basalt_common::keys::SigningKey;
use basalt_common::manifest::{verify_manifest, DEFAULT_HANDOFF};
use basalt_mkimage::bundle::{build_bundle, BundleSpec};
use basalt_mkimage::disk::SLOTS;
use basalt_mkimage::{uki, RootSource};
use common::{fake_kernel, require_tool, rootfs, TempDir};
use std::path::PathBuf;
use std::process::Command;

const MIB: u64 = 1 << 20;

fn key() -> SigningKey {
    SigningKey::from_seed(&[0x31; 32]).unwrap()
}

fn veritysetup() -> PathBuf {
    ["/usr/sbin/veritysetup", "/sbin/veritysetup", "/usr/bin/veritysetup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("veritysetup is not installed: this test needs it (apt-get install cryptsetup-bin)")
}

#[test]
fn a_built_bundle_verifies_chunk_by_chunk_and_its_slot_with_veritysetup() {
    require_tool("openssl", "openssl");
    require_tool("objcopy", "binutils");
    require_tool("mksquashfs", "squashfs-tools");
    assert!(
        std::path::Path::new(uki::DEFAULT_STUB).is_file(),
        "{} is not installed (apt-get install systemd-boot-efi)",
        uki::DEFAULT_STUB
    );
    let veritysetup = veritysetup();
    let dir = TempDir::new("bundle");
    let kernel = fake_kernel(&dir);
    let root = rootfs(&dir, "rootfs");
    // Incompressible files: a root image of several MiB, so the slot part
    // has several chunks and the tree two levels.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..24 {
        let noise: Vec<u8> = (0..120_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(root.join(format!("noise{i}")), noise).unwrap();
    }
    // The UKI takes any bytes as the kernel: 1.5 MiB, so it has two chunks.
    let vmlinuz = dir.write("vmlinuz", &b"MZ stand-in kernel ".repeat(80_000));
    let spec = BundleSpec {
        init: dir.write("init", b"\x7fELF stand-in for basalt-init"),
        root: RootSource::Rootfs(root),
        modules_dir: kernel.modules_dir.clone(),
        kconfig: kernel.kconfig.clone(),
        fragment: kernel.fragment.clone(),
        kernel: vmlinuz,
        stub: uki::DEFAULT_STUB.into(),
        version: "0.2.0-bundle".into(),
        version_seq: 7,
        arch: Arch::X86_64,
        handoff: DEFAULT_HANDOFF.into(),
        slot_size: 8 * MIB,
        salt: None,
        target: SLOTS[1],
        append: None,
        parts_dir: Some(dir.join("parts")),
        out: dir.join("update.bundle"),
        source_date_epoch: Some(1_700_000_000),
    };
    let report = build_bundle(&spec, &key()).unwrap_or_else(|e| panic!("bundle build failed: {e}"));
    let bytes = std::fs::read(&spec.out).unwrap();
    assert_eq!(bytes.len() as u64, report.bundle_size);

    // The whole bundle, as the node would check it.
    let m = verify_bundle(&bytes, &key().public_key()).unwrap();
    assert_eq!(m, report.manifest);
    assert_eq!(
        (m.version.as_str(), m.version_seq, m.target.as_str()),
        ("0.2.0-bundle", 7, "ROOT-B")
    );
    assert!(m.uki.chunks.len() >= 2, "{} UKI chunks", m.uki.chunks.len());
    assert!(
        m.slot.digest.chunks.len() >= 3,
        "{} slot chunks",
        m.slot.digest.chunks.len()
    );
    let uki_file = std::fs::read(dir.join("parts/basalt-b.efi")).unwrap();
    assert_eq!(uki_file.len() as u64, m.uki.size);

    // Every chunk, alone, in reverse order; a chunk under another index fails.
    let h = read_header(&bytes).unwrap();
    let parts_at = h.parts_offset();
    for part in Part::ALL {
        for i in (0..bundle::chunk_count(m.part(part).size)).rev() {
            let r = chunk_range(&m, part, i).unwrap();
            let at = parts_at + m.part_offset(part);
            let chunk = &bytes[(at + r.start) as usize..(at + r.end) as usize];
            check_chunk(&m, part, i, chunk).unwrap();
            if i > 0 {
                assert!(check_chunk(&m, part, i - 1, chunk).is_err());
            }
        }
    }
    let uki_at = parts_at as usize;
    assert_eq!(&bytes[uki_at..uki_at + uki_file.len()], &uki_file[..]);

    // openssl checks the manifest's signature with the image key's public half.
    let mdir = dir.join("m");
    std::fs::create_dir_all(&mdir).unwrap();
    std::fs::write(mdir.join("bundle.json"), &bytes[20..h.signature_offset() as usize]).unwrap();
    std::fs::write(
        mdir.join("bundle.sig"),
        &bytes[h.signature_offset() as usize..parts_at as usize],
    )
    .unwrap();
    std::fs::write(mdir.join("image.pub"), key().public_key().to_pem()).unwrap();
    let openssl = |json: &str| {
        Command::new("openssl")
            .args([
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                "image.pub",
                "-rawin",
                "-in",
                json,
            ])
            .args(["-sigfile", "bundle.sig"])
            .current_dir(&mdir)
            .output()
            .unwrap()
    };
    let out = openssl("bundle.json");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut tampered = std::fs::read(mdir.join("bundle.json")).unwrap();
    tampered[30] ^= 1;
    std::fs::write(mdir.join("tampered.json"), tampered).unwrap();
    assert!(
        !openssl("tampered.json").status.success(),
        "openssl accepted a flipped byte"
    );

    // The slot part: data and tree, then the manifest area; the area's
    // manifest verifies and names the root hash the bundle carries.
    let slot_at = (parts_at + m.part_offset(Part::Slot)) as usize;
    let slot_part = &bytes[slot_at..];
    assert_eq!(slot_part.len() as u64, m.slot.tree_end + slot::AREA_SIZE);
    let Area::Signed { json, signature } = slot::decode_area(&slot_part[m.slot.tree_end as usize..]).unwrap() else {
        panic!("the slot part's manifest area is empty")
    };
    let image = verify_manifest(json, signature, &key().public_key()).unwrap();
    assert_eq!(image, report.image);
    let v = image.verity.unwrap();
    assert_eq!(v.root_hash, m.slot.root_hash);
    assert_eq!(v.hash_offset + v.hash_blocks * 4096, m.slot.tree_end);

    let slot_file = dir.join("slot.part");
    std::fs::write(&slot_file, slot_part).unwrap();
    let verify = || {
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
            .arg(&slot_file)
            .arg(&slot_file)
            .arg(hex::encode(&v.root_hash))
            .output()
            .unwrap()
    };
    let out = verify();
    assert!(
        out.status.success(),
        "veritysetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One flipped data byte and veritysetup refuses it too.
    let mut bad = slot_part.to_vec();
    bad[4096 * 3 + 17] ^= 1;
    std::fs::write(&slot_file, &bad).unwrap();
    assert!(!verify().status.success(), "veritysetup accepted a flipped data byte");
}
