//! Whole builds: the same inputs give the same bytes, and what is inside
//! verifies and matches what went in.

mod common;

use basalt_common::keys::SigningKey;
use basalt_common::manifest::{verify_manifest, DEFAULT_HANDOFF};
use basalt_mkimage::image::{sha256_file, Compression, Content, InitramfsParts};
use basalt_mkimage::{build, pack_initramfs_file, BuildReport, BuildSpec, RootSource};
use common::{extract, fake_kernel, require_tool, rootfs, run, FakeKernel, TempDir, RELEASE};
use std::path::Path;
use std::process::Command;

fn key() -> SigningKey {
    SigningKey::from_seed(&[0x42; 32]).unwrap()
}

fn spec(dir: &TempDir, kernel: &FakeKernel, rootfs: &Path, out: &str) -> BuildSpec {
    BuildSpec {
        init: dir.write("init", b"\x7fELF stand-in for basalt-init"),
        root: RootSource::Rootfs(rootfs.to_path_buf()),
        modules_dir: kernel.modules_dir.clone(),
        kconfig: kernel.kconfig.clone(),
        fragment: kernel.fragment.clone(),
        version: "0.1.0-test".into(),
        handoff: DEFAULT_HANDOFF.into(),
        compression: Compression::None,
        embed_image: true,
        image_out: None,
        manifest_out: None,
        out: dir.join(out),
        source_date_epoch: None,
    }
}

fn build_ok(spec: &BuildSpec) -> BuildReport {
    require_tool("mksquashfs", "squashfs-tools");
    build(spec, &key()).unwrap_or_else(|e| panic!("build failed: {e}"))
}

#[test]
fn same_inputs_same_bytes() {
    let dir = TempDir::new("repro");
    let kernel = fake_kernel(&dir);
    let first_root = rootfs(&dir, "rootfs-a");
    let a = build_ok(&spec(&dir, &kernel, &first_root, "a.cpio"));
    // A second copy of the rootfs, made later: new inodes, new mtimes.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second_root = rootfs(&dir, "rootfs-b");
    let b = build_ok(&spec(&dir, &kernel, &second_root, "b.cpio"));
    assert_eq!(a, b);
    let (bytes_a, bytes_b) = (
        std::fs::read(dir.join("a.cpio")).unwrap(),
        std::fs::read(dir.join("b.cpio")).unwrap(),
    );
    assert!(bytes_a == bytes_b, "initramfs differs between identical builds");
    // No leftovers beside the output.
    let mut names: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "a.cpio",
            "b.cpio",
            "basalt.config",
            "config",
            "init",
            "lib",
            "rootfs-a",
            "rootfs-b"
        ]
    );

    // gzip is reproducible too, and SOURCE_DATE_EPOCH changes the bytes.
    let mut gz = spec(&dir, &kernel, &first_root, "a.cpio.gz");
    gz.compression = Compression::Gzip;
    build_ok(&gz);
    gz.out = dir.join("b.cpio.gz");
    build_ok(&gz);
    assert_eq!(
        std::fs::read(dir.join("a.cpio.gz")).unwrap(),
        std::fs::read(dir.join("b.cpio.gz")).unwrap()
    );
    let mut dated = spec(&dir, &kernel, &first_root, "dated.cpio");
    dated.source_date_epoch = Some(1_700_000_000);
    build_ok(&dated);
    assert_ne!(std::fs::read(dir.join("dated.cpio")).unwrap(), bytes_a);
    // Same manifest apart from the image digest: times live in the image.
    assert_ne!(build_ok(&dated).manifest.image, a.manifest.image);
}

#[test]
fn contents_verify_and_match_the_inputs() {
    let dir = TempDir::new("contents");
    let kernel = fake_kernel(&dir);
    let root = rootfs(&dir, "rootfs");
    let mut s = spec(&dir, &kernel, &root, "initramfs.cpio");
    s.image_out = Some(dir.join("root.sqsh"));
    s.manifest_out = Some(dir.join("manifest"));
    s.source_date_epoch = Some(1_600_000_000);
    let report = build_ok(&s);
    let names: Vec<&str> = report.modules.iter().map(|m| m.name.as_str()).collect();
    // loop is built in; virtio_ring comes before virtio; virtio_net is not wanted.
    assert_eq!(names, ["squashfs", "virtio_ring", "virtio"]);

    let out = dir.join("x");
    extract(&dir.join("initramfs.cpio"), &out);
    let json = std::fs::read(out.join("basalt/manifest.json")).unwrap();
    let sig = std::fs::read(out.join("basalt/manifest.sig")).unwrap();
    assert_eq!(sig.len(), 64);
    let manifest = verify_manifest(&json, &sig, &key().public_key()).unwrap();
    assert_eq!(manifest, report.manifest);
    assert_eq!(manifest.kernel, RELEASE);
    assert_eq!(manifest.version, "0.1.0-test");
    assert_eq!(manifest.handoff, "/sbin/basalt-agent");
    assert_eq!(
        sha256_file(&out.join("basalt/root.sqsh")).unwrap(),
        (manifest.image.size, manifest.image.sha256)
    );
    assert_eq!(
        std::fs::read(out.join("basalt/root.sqsh")).unwrap(),
        std::fs::read(dir.join("root.sqsh")).unwrap()
    );
    assert_eq!(&std::fs::read(out.join("basalt/root.sqsh")).unwrap()[..4], b"hsqs");
    for m in &manifest.modules {
        let packed = out.join(format!("basalt/modules/{}.ko", m.name));
        assert_eq!(sha256_file(&packed).unwrap().1, m.sha256, "{}", m.name);
    }
    assert_eq!(
        std::fs::read(out.join("init")).unwrap(),
        std::fs::read(&s.init).unwrap()
    );
    // The copies written for inspection are the packed bytes.
    assert_eq!(std::fs::read(dir.join("manifest/manifest.json")).unwrap(), json);
    assert_eq!(std::fs::read(dir.join("manifest/manifest.sig")).unwrap(), sig);

    // The listing is exactly the documented layout, in order.
    let list = run(Command::new("cpio")
        .args(["-t", "--quiet"])
        .stdin(std::fs::File::open(dir.join("initramfs.cpio")).unwrap()));
    assert_eq!(
        String::from_utf8(list).unwrap(),
        "basalt\nbasalt/manifest.json\nbasalt/manifest.sig\nbasalt/modules\nbasalt/modules/squashfs.ko\n\
         basalt/modules/virtio.ko\nbasalt/modules/virtio_ring.ko\nbasalt/root.sqsh\ndev\ndev/console\ninit\n"
    );
}

#[test]
fn openssl_verifies_the_manifest() {
    require_tool("openssl", "openssl");
    let dir = TempDir::new("openssl");
    let kernel = fake_kernel(&dir);
    let root = rootfs(&dir, "rootfs");
    let mut s = spec(&dir, &kernel, &root, "initramfs.cpio");
    s.manifest_out = Some(dir.join("m"));
    build_ok(&s);
    let verify = |json: &str| {
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
                "-sigfile",
                "manifest.sig",
            ])
            .current_dir(dir.join("m"))
            .output()
            .unwrap()
    };
    let ok = verify("manifest.json");
    assert!(ok.status.success(), "openssl: {}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "Signature Verified Successfully"
    );
    let mut tampered = std::fs::read(dir.join("m/manifest.json")).unwrap();
    tampered[20] ^= 1;
    std::fs::write(dir.join("m/tampered.json"), tampered).unwrap();
    assert!(
        !verify("tampered.json").status.success(),
        "openssl accepted a tampered manifest"
    );
}

#[test]
fn image_on_a_block_device_and_tampered_packs() {
    let dir = TempDir::new("parts");
    let kernel = fake_kernel(&dir);
    let root = rootfs(&dir, "rootfs");

    // --no-embed-image from a rootfs needs somewhere to keep the image.
    let mut s = spec(&dir, &kernel, &root, "disk.cpio");
    s.embed_image = false;
    let err = build(&s, &key()).unwrap_err().to_string();
    assert!(err.contains("give --image-out"), "{err}");
    s.image_out = Some(dir.join("disk.sqsh"));
    let report = build_ok(&s);
    let out = dir.join("disk");
    extract(&dir.join("disk.cpio"), &out);
    assert!(!out.join("basalt/root.sqsh").exists());
    assert_eq!(
        sha256_file(&dir.join("disk.sqsh")).unwrap().1,
        report.manifest.image.sha256
    );

    // The same image given ready-made gives the same manifest.
    let mut given = spec(&dir, &kernel, &root, "given.cpio");
    given.root = RootSource::Squashfs(dir.join("disk.sqsh"));
    assert_eq!(build_ok(&given).manifest, report.manifest);

    // A tampered image packed under the original manifest: the signature
    // still verifies, the image digest no longer matches.
    let mut bad_image = std::fs::read(dir.join("disk.sqsh")).unwrap();
    let last = bad_image.len() - 1;
    bad_image[last] ^= 0xff;
    let parts = InitramfsParts {
        init: Content::File(s.init.clone()),
        manifest_json: report.signed.json.clone(),
        manifest_sig: report.signed.signature.to_vec(),
        image: Some(Content::Bytes(bad_image)),
        modules: report
            .modules
            .iter()
            .map(|m| (m.name.clone(), Content::File(m.path.clone())))
            .collect(),
    };
    pack_initramfs_file(&parts, 0, Compression::None, &dir.join("tampered.cpio")).unwrap();
    let out = dir.join("tampered");
    extract(&dir.join("tampered.cpio"), &out);
    let json = std::fs::read(out.join("basalt/manifest.json")).unwrap();
    let sig = std::fs::read(out.join("basalt/manifest.sig")).unwrap();
    let manifest = verify_manifest(&json, &sig, &key().public_key()).unwrap();
    assert_ne!(
        sha256_file(&out.join("basalt/root.sqsh")).unwrap().1,
        manifest.image.sha256
    );
}
