//! A/B upgrades on the real disk layout under OVMF (issue 13): a signed
//! bundle written into ROOT-B over vsock, booted on trial through
//! systemd-boot's counter, blessed after its health window, and rolled back.
//!
//! One VM goes through the whole story, so the firmware boots the disk three
//! times (about 12 s each under TCG):
//! 1. on A: bundles with a flipped byte, another image key, the booted slot
//!    as target, or for another node are refused, and nothing changes;
//! 2. the good bundle is staged as `basalt-2-b+3.efi` and the node reboots
//!    into B, which re-applies the persisted config, stays healthy for the
//!    window and blesses itself (floor raised to its version_seq);
//! 3. on B: a bundle below the floor is refused; `rollback` makes A the
//!    default again and the node boots A.

use basalt_common::keys::SigningKey;
use basalt_qemu::VmConfig;
use basalt_tests::node::*;
use basalt_tests::*;
use basaltctl::cli::CliError;
use basaltctl::upgrade::{self, BundleFile, UpgradeFlags};
use serde_json::Value;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const ON_ERROR: &str = "basalt.on_error=poweroff basalt.error_delay=0";

fn node_id(tag: u64) -> String {
    format!("{:08x}-0000-4000-8000-0b9a{:08x}", std::process::id(), tag)
}

fn running(s: &Value, name: &str) -> bool {
    Node::service(s, name)["state"] == "running"
}

fn flip(path: &Path, at: u64) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x01], at).unwrap();
}

fn slot<'a>(s: &'a Value, label: &str) -> &'a Value {
    s["upgrades"]["slots"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["slot"] == label))
        .unwrap_or_else(|| panic!("no slot {label} in {:#}", s["upgrades"]))
}

fn send(node: &Node, bundle: &Path, flags: UpgradeFlags) -> Result<Value, CliError> {
    let file = BundleFile::open(bundle)?;
    upgrade::upgrade(&mut node.vsock(), &node.key, &file, flags, true, &mut std::io::sink()).map(|(answer, _)| answer)
}

fn refused(node: &Node, bundle: &Path, want: &str) -> String {
    match send(node, bundle, UpgradeFlags::default()) {
        Err(CliError::Agent { code, message }) => {
            assert_eq!(code, want, "{}: {message}", bundle.display());
            message
        }
        other => panic!(
            "{}: expected {want}, got {other:?}\n{}",
            bundle.display(),
            node.vm.console()
        ),
    }
}

#[test]
fn upgrade_to_b_is_checked_blessed_and_rolled_back() {
    let build = Build::from_env();
    let scratch = Scratch::new("upgrade");
    let rootfs = test_rootfs(&build, &scratch);
    let disk = build_disk(&build, &rootfs, &scratch.path("disk.img"), ON_ERROR);
    let key = build.image_key();
    let good = build_bundle(
        &build,
        &rootfs,
        &scratch.path("b.bundle"),
        ("B", "test-b", 5),
        ON_ERROR,
        &key,
    );

    let id = node_id(1);
    let node = Node::boot_uefi(&build, "upgrade", VmConfig::uefi(&disk.path).stay_on_reboot(), &id);
    let envelope = node.sign(&node_config(&id, 1, "node-a", (100, 30_000)));
    ok(&node.vm, node.apply(&mut node.vsock(), &envelope));
    let s = node.wait_status("kubelet running on A", WAIT, |s| running(s, "kubelet"));
    assert_eq!(s["upgrades"]["booted"], "ROOT-A", "{:#}", s["upgrades"]);
    assert_eq!(slot(&s, "ROOT-A")["state"], "booted, default");
    assert_eq!(slot(&s, "ROOT-B")["state"], "empty");

    // Refused before anything becomes bootable.
    let flipped = scratch.path("flipped.bundle");
    std::fs::copy(&good, &flipped).unwrap();
    let size = std::fs::metadata(&flipped).unwrap().len();
    flip(&flipped, size - 100_000);
    let m = refused(&node, &flipped, "bad_bundle");
    assert!(m.contains("does not match its SHA-256"), "{m}");
    let other_key = SigningKey::from_seed(&[9; 32]).unwrap();
    let foreign = build_bundle(
        &build,
        &rootfs,
        &scratch.path("foreign.bundle"),
        ("B", "x", 6),
        ON_ERROR,
        &other_key,
    );
    let m = refused(&node, &foreign, "bad_bundle");
    assert!(m.contains("signature does not verify"), "{m}");
    let to_a = build_bundle(
        &build,
        &rootfs,
        &scratch.path("a.bundle"),
        ("A", "test-a2", 6),
        ON_ERROR,
        &key,
    );
    let m = refused(&node, &to_a, "not_upgradable");
    assert!(m.contains("the slot this node runs from"), "{m}");
    let s = node.status();
    assert_eq!(slot(&s, "ROOT-A")["state"], "booted, default", "{:#}", s["upgrades"]);
    assert_eq!(slot(&s, "ROOT-B")["entry"], Value::Null, "{:#}", s["upgrades"]);

    // The good one, with a reboot and a short health window.
    let flags = UpgradeFlags {
        reboot: true,
        allow_downgrade: false,
        health_window_ms: Some(5_000),
    };
    let r = send(&node, &good, flags).unwrap_or_else(|e| panic!("{e}\n{}", node.vm.console()));
    assert_eq!(r["staged"]["entry"], "basalt-2-b+3.efi", "{r:#}");
    node.vm.expect("reboot: Restarting system", WAIT);
    node.vm.expect("through dm-verity on ROOT-B", BOOT_TIMEOUT);
    node.vm.expect("basalt-agent: ready", WAIT);
    let s = node.status();
    assert_eq!(
        slot(&s, "ROOT-B")["state"],
        "booted, default, trying, 2 left",
        "{:#}",
        s["upgrades"]
    );
    node.vm.expect("is on trial", WAIT);
    node.vm.expect("blessed after its health window", WAIT);
    let s = node.wait_status("kubelet running on B", WAIT, |s| running(s, "kubelet"));
    assert_eq!(s["config"]["generation"], 1, "the persisted config re-applied on B");
    assert_eq!(s["upgrades"]["booted"], "ROOT-B");
    assert_eq!(slot(&s, "ROOT-B")["state"], "booted, default", "{:#}", s["upgrades"]);
    assert_eq!(slot(&s, "ROOT-B")["version"], "test-b");
    assert_eq!(slot(&s, "ROOT-B")["entry"], "basalt-2-b.efi");
    assert_eq!(slot(&s, "ROOT-A")["state"], "installed");
    assert_eq!(s["upgrades"]["last"]["image_version_floor"], 5, "{:#}", s["upgrades"]);
    assert_eq!(s["upgrades"]["last"]["upgrade"]["outcome"], "blessed");

    // Below the floor: refused without --allow-downgrade.
    let old = build_bundle(
        &build,
        &rootfs,
        &scratch.path("old.bundle"),
        ("A", "test-old", 3),
        ON_ERROR,
        &key,
    );
    let m = refused(&node, &old, "downgrade");
    assert!(m.contains("below this node's image version floor 5"), "{m}");

    // Rollback: A is the default again, and boots.
    let r = upgrade::rollback(&mut node.vsock(), &node.key).unwrap_or_else(|e| panic!("{e}\n{}", node.vm.console()));
    assert_eq!(r["rollback"]["slot"], "ROOT-A", "{r:#}");
    assert_eq!(r["rollback"]["entry"], "basalt-3-a.efi", "{r:#}");
    node.vm.expect_count("reboot: Restarting system", 2, WAIT);
    let console_before = node.vm.lines_with("through dm-verity on ROOT-A").len();
    assert_eq!(console_before, 1, "A booted once so far");
    node.vm.expect_count("through dm-verity on ROOT-A", 2, BOOT_TIMEOUT);
    let s = node.wait_status("kubelet running on A again", WAIT, |s| {
        s["upgrades"]["booted"] == "ROOT-A" && running(s, "kubelet")
    });
    assert_eq!(slot(&s, "ROOT-A")["state"], "booted, default", "{:#}", s["upgrades"]);
    assert_eq!(slot(&s, "ROOT-B")["state"], "installed");
}
