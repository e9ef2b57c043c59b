//! The command line: exit codes, the one-line error form, kernel-check output.

mod common;

use common::{fake_kernel, require_tool, rootfs, TempDir};
use std::process::{Command, Output};

fn mkimage(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_basalt-mkimage"))
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn errors_are_one_line_and_exit_1() {
    let dir = TempDir::new("cli-errors");
    let kernel = fake_kernel(&dir);
    let key = dir.write(
        "key.pem",
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    );
    let p = |x: &std::path::Path| x.to_str().unwrap().to_string();
    let (modules, kconfig, fragment, key) = (p(&kernel.modules_dir), p(&kernel.kconfig), p(&kernel.fragment), p(&key));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["frobnicate"],
            "basalt-mkimage: reading arguments: frobnicate: unknown command",
        ),
        (
            vec!["kernel-check", "--kconfig"],
            "basalt-mkimage: reading arguments: --kconfig: needs a value",
        ),
        (
            vec!["kernel-check", "--fragment", "x"],
            "basalt-mkimage: reading arguments: --kconfig: required",
        ),
        (
            vec!["kernel-check", "--kconfig", "x", "--kconfig", "y"],
            "basalt-mkimage: reading arguments: --kconfig: given twice",
        ),
        (
            vec![
                "kernel-check",
                "--kconfig",
                "/nonexistent/config",
                "--fragment",
                &fragment,
            ],
            "basalt-mkimage: reading the kernel config: /nonexistent/config: No such file or directory (os error 2)",
        ),
        (
            vec![
                "build",
                "--init",
                "/bin/sh",
                "--squashfs",
                "/nonexistent.sqsh",
                "--modules-dir",
                &modules,
                "--kconfig",
                &kconfig,
                "--fragment",
                &fragment,
                "--key",
                &key,
                "--version",
                "1",
                "--out",
                "/tmp/x",
            ],
            "basalt-mkimage: reading the image key: ",
        ),
        (
            vec![
                "build",
                "--init",
                "/bin/sh",
                "--modules-dir",
                &modules,
                "--kconfig",
                &kconfig,
                "--fragment",
                &fragment,
                "--key",
                &key,
                "--version",
                "1",
                "--out",
                "/tmp/x",
            ],
            "basalt-mkimage: reading arguments: --rootfs, --squashfs: give exactly one",
        ),
        (
            vec!["build", "--compress", "xz", "--squashfs", "a"],
            "basalt-mkimage: reading arguments: --compress: unknown compression \"xz\" (none or gzip)",
        ),
    ];
    for (args, want) in cases {
        let out = mkimage(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = text(&out.stderr);
        let first = stderr.lines().next().unwrap_or("");
        assert!(first.starts_with(want), "{args:?}: {stderr}");
    }
}

#[test]
fn kernel_check_reports_each_requirement() {
    let dir = TempDir::new("cli-kcheck");
    let kernel = fake_kernel(&dir);
    let (kconfig, fragment, modules) = (
        kernel.kconfig.to_str().unwrap(),
        kernel.fragment.to_str().unwrap(),
        kernel.modules_dir.to_str().unwrap(),
    );
    let out = mkimage(&[
        "kernel-check",
        "--kconfig",
        kconfig,
        "--fragment",
        fragment,
        "--modules-dir",
        modules,
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let lines: Vec<String> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        [
            "CONFIG_BLK_DEV_INITRD built-in",
            "CONFIG_RD_GZIP|CONFIG_RD_ZSTD built-in (CONFIG_RD_ZSTD)",
            "CONFIG_SQUASHFS module (squashfs.ko)",
            "CONFIG_BLK_DEV_LOOP built-in",
            "CONFIG_VIRTIO module (virtio.ko)",
            "modules to pack, in load order: squashfs virtio_ring virtio",
            "5 requirements: 3 built-in, 2 module, 0 missing",
        ]
    );

    // A kernel without squashfs, with tmpfs as a module, and no virtio.ko.
    let broken = dir.write(
        "broken-config",
        b"CONFIG_BLK_DEV_INITRD=m\nCONFIG_RD_ZSTD=y\n# CONFIG_SQUASHFS is not set\nCONFIG_BLK_DEV_LOOP=y\nCONFIG_VIRTIO=m\n",
    );
    std::fs::remove_file(kernel.modules_dir.join("kernel/drivers/virtio/virtio.ko")).unwrap();
    let out = mkimage(&[
        "kernel-check",
        "--kconfig",
        broken.to_str().unwrap(),
        "--fragment",
        fragment,
        "--modules-dir",
        modules,
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let lines: Vec<String> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(lines[0], "CONFIG_BLK_DEV_INITRD MISSING (=m, must be built in)");
    assert_eq!(lines[2], "CONFIG_SQUASHFS MISSING (not set)");
    assert_eq!(
        lines[4],
        "CONFIG_VIRTIO MISSING (=m but no virtio.ko in the modules dir)"
    );
    assert!(
        lines[5].starts_with("modules cannot be ordered: ordering modules: "),
        "{}",
        lines[5]
    );
    assert_eq!(
        lines[6],
        "5 requirements: 2 built-in, 0 module, 3 missing: this kernel cannot boot basalt"
    );
}

#[test]
fn build_prints_a_summary_and_matches_the_library() {
    require_tool("mksquashfs", "squashfs-tools");
    let dir = TempDir::new("cli-build");
    let kernel = fake_kernel(&dir);
    let root = rootfs(&dir, "rootfs");
    let init = dir.write("init", b"init");
    let key = dir.write(
        "key.pem",
        basalt_common::pem::encode("PRIVATE KEY", &pkcs8(&[9; 32])).as_bytes(),
    );
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let out = dir.join("out.cpio");
    let args = [
        "build",
        "--init",
        &s(&init),
        "--rootfs",
        &s(&root),
        "--modules-dir",
        &s(&kernel.modules_dir),
        "--kconfig",
        &s(&kernel.kconfig),
        "--fragment",
        &s(&kernel.fragment),
        "--key",
        &s(&key),
        "--version=2.0",
        "--out",
        &s(&out),
    ];
    let run = mkimage(&args);
    let stdout = text(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{stdout}{}", text(&run.stderr));
    assert!(
        stdout.contains("modules     3 in load order: squashfs virtio_ring virtio"),
        "{stdout}"
    );
    let size = std::fs::metadata(&out).unwrap().len();
    assert!(
        stdout.contains(&format!("({size} bytes, compression none)")),
        "{stdout}"
    );

    let spec = basalt_mkimage::BuildSpec {
        init,
        root: basalt_mkimage::RootSource::Rootfs(root),
        modules_dir: kernel.modules_dir.clone(),
        kconfig: kernel.kconfig.clone(),
        fragment: kernel.fragment.clone(),
        version: "2.0".into(),
        handoff: "/sbin/basalt-agent".into(),
        compression: basalt_mkimage::Compression::None,
        embed_image: true,
        image_out: None,
        manifest_out: None,
        out: dir.join("lib.cpio"),
        source_date_epoch: None,
    };
    let key = basalt_common::keys::SigningKey::from_seed(&[9; 32]).unwrap();
    basalt_mkimage::build(&spec, &key).unwrap();
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(dir.join("lib.cpio")).unwrap(),
        "CLI and library builds differ"
    );
}

/// PKCS#8 v1 of an Ed25519 seed, as `openssl genpkey` writes it.
fn pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ];
    der.extend_from_slice(seed);
    der
}
