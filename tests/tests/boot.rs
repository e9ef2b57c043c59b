//! The boot path, from the outside and the inside: the happy path checked by
//! an in-guest checker, weakened images that the checker must catch, and
//! tampered images that basalt-init must refuse before mounting anything.

use basalt_mkimage::{Content, InitramfsParts};
use basalt_tests::*;
use std::path::Path;
use std::time::Duration;

/// Test images end in the checker, which powers the VM off when done.
const CHECKER_CMDLINE: &str = "quiet basalt.on_error=poweroff basalt.error_delay=0";

fn checker_image(build: &Build, scratch: &Scratch, rootfs: &Path) -> TestImage {
    let opts = ImageOptions {
        handoff: CHECKER.into(),
        ..Default::default()
    };
    build_image(build, rootfs, &scratch.0, &opts)
}

#[test]
fn happy_path_passes_every_check_and_powers_off() {
    let build = Build::from_env();
    let scratch = Scratch::new("happy");
    let rootfs = test_rootfs(&build, &scratch);
    let image = checker_image(&build, &scratch, &rootfs);
    let (vm, result) = run_checker(
        &build,
        "happy",
        TestVm::config(&build, &image.initramfs, CHECKER_CMDLINE),
    );
    assert!(
        result.failed.is_empty(),
        "checks failed: {:?}\n{}",
        result.failed,
        vm.console()
    );
    for check in [
        "pid1-is-basalt-init",
        "root-squashfs-ro",
        "root-loop-ro",
        "remount-rw-refused",
        "usr-not-writable",
        "writable-tmpfs",
        "api-mount-flags",
        "lockdown",
        "sysctls",
        "dev-mem-unreadable",
        "no-shell",
        "boot-report",
        "initramfs-gone",
    ] {
        assert!(
            result.passed.iter().any(|p| p == check),
            "check {check} did not run: {:?}",
            result.passed
        );
    }
    // The checker SIGTERMs PID1: that is a clean poweroff, bounded.
    vm.expect("shutdown: power off after", Duration::from_secs(30));
    assert!(vm.expect_exit(Duration::from_secs(30)).success());
    assert!(vm.console().contains("reboot: Power down"));
}

/// The checks can fail: on a node booted with lockdown off, the checker must
/// report lockdown and /dev/mem (and nothing else).
#[test]
fn checker_catches_lockdown_off() {
    let build = Build::from_env();
    let scratch = Scratch::new("weak-lockdown");
    let rootfs = test_rootfs(&build, &scratch);
    let image = checker_image(&build, &scratch, &rootfs);
    let cmdline = format!("{CHECKER_CMDLINE} basalt.lockdown=none");
    let (vm, result) = run_checker(
        &build,
        "weak-lockdown",
        TestVm::config(&build, &image.initramfs, &cmdline),
    );
    let failed: Vec<&str> = result.failed.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        failed,
        ["lockdown", "dev-mem-unreadable", "boot-report"],
        "{:?}\n{}",
        result.failed,
        vm.console()
    );
}

/// ...and on an image that carries a shell, it must report the shell.
#[test]
fn checker_catches_a_shell_in_the_image() {
    let build = Build::from_env();
    let scratch = Scratch::new("weak-shell");
    let rootfs = test_rootfs(&build, &scratch);
    install(Path::new("/bin/busybox"), &rootfs, "/usr/lib/tools/helper", 0o755);
    std::os::unix::fs::symlink("../lib/tools/helper", rootfs.join("usr/bin/sh")).unwrap();
    let image = checker_image(&build, &scratch, &rootfs);
    let (vm, result) = run_checker(
        &build,
        "weak-shell",
        TestVm::config(&build, &image.initramfs, CHECKER_CMDLINE),
    );
    assert_eq!(result.failed.len(), 1, "{:?}\n{}", result.failed, vm.console());
    let (check, why) = &result.failed[0];
    assert_eq!(check, "no-shell");
    assert!(
        why.contains("/usr/bin/sh") && why.contains("/usr/lib/tools/helper (BusyBox)"),
        "{why}"
    );
}

/// The root image on a virtio disk: copied into RAM while hashed, then the
/// same checks pass, and the boot report says where it came from.
#[test]
fn image_on_a_block_device_is_copied_verified_and_mounted() {
    let build = Build::from_env();
    let scratch = Scratch::new("blockdev");
    let rootfs = test_rootfs(&build, &scratch);
    let opts = ImageOptions {
        handoff: CHECKER.into(),
        embed_image: false,
    };
    let image = build_image(&build, &rootfs, &scratch.0, &opts);
    let cmdline = format!("{CHECKER_CMDLINE} basalt.image=/dev/vda");
    let cfg = TestVm::config(&build, &image.initramfs, &cmdline).disk(&image.squashfs);
    let (vm, result) = run_checker(&build, "blockdev", cfg);
    assert!(result.failed.is_empty(), "{:?}\n{}", result.failed, vm.console());
    assert!(
        !vm.console().contains("/basalt/root.sqsh"),
        "the initramfs held no image"
    );
    vm.expect_exit(Duration::from_secs(30));
}

/// One refused boot: the initramfs must stop at `step` with `cause`, never
/// mount the root, and power off as basalt.on_error=poweroff says.
fn assert_refused(
    build: &Build,
    name: &str,
    initramfs: &Path,
    extra: &str,
    disk: Option<&Path>,
    step: &str,
    cause: &str,
) {
    let cmdline = format!("quiet basalt.on_error=poweroff basalt.error_delay=0 {extra}");
    let mut cfg = TestVm::config(build, initramfs, &cmdline);
    if let Some(d) = disk {
        cfg = cfg.disk(d);
    }
    let vm = TestVm::boot(build, name, cfg);
    vm.expect("FATAL: step", BOOT_TIMEOUT);
    vm.expect_exit(Duration::from_secs(30));
    let fatal = vm.lines_with("FATAL: step");
    assert_eq!(fatal.len(), 1, "{name}: exactly one fatal line: {fatal:?}");
    let line = &fatal[0];
    assert!(
        line.contains(&format!("FATAL: step {step}: ")),
        "{name}: wrong step: {line}"
    );
    assert!(line.contains(cause), "{name}: wanted {cause:?} in {line}");
    let console = vm.console();
    assert!(
        !console.contains("root: /dev/loop"),
        "{name}: the root was mounted:\n{console}"
    );
    assert!(!console.contains("handing off"), "{name}: handed off:\n{console}");
    assert!(
        console.contains("reboot: Power down"),
        "{name}: did not power off:\n{console}"
    );
}

#[test]
fn tampered_images_are_refused_before_mount() {
    let build = Build::from_env();
    let scratch = Scratch::new("tamper");
    let rootfs = test_rootfs(&build, &scratch);
    let image = checker_image(&build, &scratch, &rootfs);
    let good = std::fs::read(&image.squashfs).unwrap();
    let size = good.len();
    let flipped = |at: usize| {
        let mut b = good.clone();
        b[at] ^= 0x01;
        b
    };
    let other_key = basalt_common::keys::SigningKey::from_seed(&[0x5a; 32]).unwrap();
    // (name, how the initramfs is tampered with, the step that must refuse it, the cause it must print)
    type Case<'a> = (&'a str, Box<dyn FnOnce(&mut InitramfsParts) + 'a>, &'a str, String);
    let cases: Vec<Case> = vec![
        (
            "flip-start",
            Box::new(|p| p.image = Some(Content::Bytes(flipped(0)))),
            "verify-image",
            "does not match the manifest's".into(),
        ),
        (
            "flip-middle",
            Box::new(|p| p.image = Some(Content::Bytes(flipped(size / 2)))),
            "verify-image",
            "does not match the manifest's".into(),
        ),
        (
            "flip-end",
            Box::new(|p| p.image = Some(Content::Bytes(flipped(size - 1)))),
            "verify-image",
            "does not match the manifest's".into(),
        ),
        (
            "truncated",
            Box::new(|p| p.image = Some(Content::Bytes(good[..size - 4096].to_vec()))),
            "verify-image",
            format!("is truncated: {} bytes, manifest says {size}", size - 4096),
        ),
        (
            "missing-image",
            Box::new(|p| p.image = None),
            "verify-image",
            "root image /basalt/root.sqsh not found".into(),
        ),
        (
            "other-key",
            Box::new(|p| p.manifest_sig = other_key.sign(&p.manifest_json).to_vec()),
            "manifest",
            "manifest signature does not verify with image key".into(),
        ),
        (
            "edited-manifest",
            Box::new(|p| {
                p.manifest_json = String::from_utf8(p.manifest_json.clone())
                    .unwrap()
                    .replace("\"test\"", "\"evil\"")
                    .into_bytes()
            }),
            "manifest",
            "manifest signature does not verify".into(),
        ),
    ];
    for (name, tamper, step, cause) in cases {
        let out = scratch.path(&format!("{name}.img"));
        repack(&build, &image, &out, tamper);
        assert_refused(&build, name, &out, "", None, step, &cause);
    }
}

#[test]
fn tampered_disk_image_is_refused() {
    let build = Build::from_env();
    let scratch = Scratch::new("tamper-disk");
    let rootfs = test_rootfs(&build, &scratch);
    let opts = ImageOptions {
        handoff: CHECKER.into(),
        embed_image: false,
    };
    let image = build_image(&build, &rootfs, &scratch.0, &opts);
    let mut bytes = std::fs::read(&image.squashfs).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x80;
    let disk = scratch.path("tampered.sqsh");
    std::fs::write(&disk, &bytes).unwrap();
    assert_refused(
        &build,
        "tamper-disk",
        &image.initramfs,
        "basalt.image=/dev/vda",
        Some(&disk),
        "verify-image",
        "root image /dev/vda sha256",
    );
}

#[test]
fn bad_command_line_value_is_refused() {
    let build = Build::from_env();
    let scratch = Scratch::new("bad-cmdline");
    let rootfs = test_rootfs(&build, &scratch);
    let image = checker_image(&build, &scratch, &rootfs);
    assert_refused(
        &build,
        "bad-cmdline",
        &image.initramfs,
        "basalt.lockdown=maybe",
        None,
        "cmdline",
        "basalt.lockdown=\"maybe\": expected integrity, confidentiality or none",
    );
}
