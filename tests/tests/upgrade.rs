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
use basaltctl::client::Client;
use basaltctl::upgrade::{self, BundleFile, UpgradeFlags};
use serde_json::Value;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
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

/// A bundle of `rootfs` as `(slot, version, version_seq)`, signed with
/// `key`, in the scratch directory.
fn bundle(build: &Build, scratch: &Scratch, rootfs: &Path, what: (&str, &str, u64), key: &SigningKey) -> PathBuf {
    let out = scratch.path(&format!("{}.bundle", what.1));
    build_bundle(build, rootfs, &out, what, ON_ERROR, key)
}

fn slot<'a>(s: &'a Value, label: &str) -> &'a Value {
    s["upgrades"]["slots"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["slot"] == label))
        .unwrap_or_else(|| panic!("no slot {label} in {:#}", s["upgrades"]))
}

fn send(node: &Node, bundle: &Path, flags: UpgradeFlags) -> Result<Value, CliError> {
    send_on(node, &mut node.vsock(), &BundleFile::open(bundle)?, flags)
}

/// basaltctl's upgrade of `file` over `client`, and the agent's last answer.
fn send_on(node: &Node, client: &mut Client, file: &BundleFile, flags: UpgradeFlags) -> Result<Value, CliError> {
    upgrade::upgrade(client, &node.key, file, flags, true, &mut std::io::sink()).map(|(answer, _)| answer)
}

/// An `upgrade-data` request's fields: `data` at `offset` of upgrade `id`.
fn piece(id: &str, offset: u64, data: &[u8]) -> serde_json::Map<String, Value> {
    let fields = serde_json::json!({"upgrade": id, "offset": offset, "data": basalt_common::b64::encode(data)});
    fields.as_object().unwrap().clone()
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
    let good = bundle(&build, &scratch, &rootfs, ("B", "test-b", 5), &key);

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
    let foreign = bundle(&build, &scratch, &rootfs, ("B", "x", 6), &other_key);
    let m = refused(&node, &foreign, "bad_bundle");
    assert!(m.contains("signature does not verify"), "{m}");
    let to_a = bundle(&build, &scratch, &rootfs, ("A", "test-a2", 6), &key);
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
    let old = bundle(&build, &scratch, &rootfs, ("A", "test-old", 3), &key);
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

/// A bundle whose kubelet exits at start: each boot of B fails its health
/// window and reboots, the loader counts the tries down, and out of tries
/// it boots A, whose agent reports the failure and marks B bad.
#[test]
fn an_upgrade_whose_kubelet_fails_falls_back_to_a_after_3_tries() {
    let build = Build::from_env();
    let scratch = Scratch::new("upgrade-fallback");
    let rootfs = test_rootfs(&build, &scratch);
    let disk = build_disk(&build, &rootfs, &scratch.path("disk.img"), ON_ERROR);
    let broken_root = scratch.path("broken-rootfs");
    copy_tree(&rootfs, &broken_root);
    install(
        &build.path("bin/basalt-broken-kubelet"),
        &broken_root,
        "/usr/bin/kubelet",
        0o755,
    );
    let broken = bundle(
        &build,
        &scratch,
        &broken_root,
        ("B", "test-broken", 7),
        &build.image_key(),
    );

    let id = node_id(2);
    let node = Node::boot_uefi(
        &build,
        "upgrade-fallback",
        VmConfig::uefi(&disk.path).stay_on_reboot(),
        &id,
    );
    let envelope = node.sign(&node_config(&id, 1, "node-a", (100, 30_000)));
    ok(&node.vm, node.apply(&mut node.vsock(), &envelope));
    node.wait_status("kubelet running on A", WAIT, |s| running(s, "kubelet"));
    let flags = UpgradeFlags {
        reboot: true,
        allow_downgrade: false,
        health_window_ms: Some(5_000),
    };
    let r = send(&node, &broken, flags).unwrap_or_else(|e| panic!("{e}\n{}", node.vm.console()));
    assert_eq!(r["staged"]["entry"], "basalt-2-b+3.efi", "{r:#}");
    // Three boots of B, each failing its window, then A.
    node.vm.expect_count("through dm-verity on ROOT-B", 3, 3 * BOOT_TIMEOUT);
    let failed_trials = node.vm.lines_with("trial of this slot failed: service kubelet exited");
    assert!(failed_trials.len() >= 2, "{}", node.vm.console());
    node.vm
        .expect_count("through dm-verity on ROOT-A", 2, BOOT_TIMEOUT + WAIT);
    node.vm
        .expect("upgrade to test-broken failed after 3 tries; running test", WAIT);
    let s = node.wait_status("kubelet running on A again", WAIT, |s| {
        s["upgrades"]["booted"] == "ROOT-A" && running(s, "kubelet")
    });
    assert_eq!(slot(&s, "ROOT-A")["state"], "booted, default", "{:#}", s["upgrades"]);
    assert_eq!(slot(&s, "ROOT-B")["state"], "bad", "{:#}", s["upgrades"]);
    assert_eq!(slot(&s, "ROOT-B")["entry"], "basalt-2-b+0-3.efi");
    assert_eq!(s["upgrades"]["last"]["upgrade"]["outcome"], "failed");
    assert_eq!(
        s["upgrades"]["notice"],
        "upgrade to test-broken failed after 3 tries; running test"
    );
    assert_eq!(
        s["upgrades"]["last"]["image_version_floor"],
        Value::Null,
        "no bless, no floor"
    );
    assert_eq!(
        node.vm.lines_with("through dm-verity on ROOT-B").len(),
        3,
        "exactly 3 tries"
    );
    // A bad slot is no rollback target.
    let e = upgrade::rollback(&mut node.vsock(), &node.key).unwrap_err();
    assert!(
        matches!(&e, CliError::Agent { code, .. } if code == "rollback_refused"),
        "{e}"
    );
}

/// Starts an upgrade by hand (what basaltctl does first): a signed request
/// for this node and a fresh nonce. Returns the upgrade's id.
fn begin(node: &Node, client: &mut basaltctl::client::Client, file: &BundleFile) -> String {
    use basalt_common::command::{Command, CommandKind, UpgradeTerms};
    let status = ok(&node.vm, call(client, "status", serde_json::Map::new()));
    let cmd = Command {
        kind: CommandKind::Upgrade,
        node: node.id.clone(),
        nonce: status["nonce"].as_str().unwrap().into(),
    };
    let terms = UpgradeTerms {
        bundle: file.manifest_digest(),
        reboot: false,
        allow_downgrade: false,
        health_window_ms: 60_000,
    };
    let envelope = basalt_common::envelope::SignedEnvelope::sign(&node.key, cmd.to_upgrade_payload(&terms));
    let fields = serde_json::json!({
        "envelope": envelope.to_json(),
        "manifest": basalt_common::b64::encode(&file.manifest_bytes),
        "signature": basalt_common::b64::encode(&file.signature),
    });
    let r = ok(&node.vm, call(client, "upgrade", fields.as_object().unwrap().clone()));
    r["upgrade"].as_str().unwrap().to_string()
}

/// SIGKILL to QEMU at a random byte of the write into B, again and again
/// (2 cuts here, 10 in `make robustness`): the disk always boots A, with B
/// empty, and the next upgrade starts over cleanly.
#[test]
fn power_cuts_during_an_upgrade_always_boot_a() {
    use basalt_tests::robustness::Profile;
    let build = Build::from_env();
    let cuts = Profile::from_env().pick(2, 10);
    let mut rng = basalt_common::splitmix::SplitMix64::new(0xb5a1_7c07 ^ std::process::id() as u64);
    let scratch = Scratch::new("upgrade-cuts");
    let rootfs = test_rootfs(&build, &scratch);
    let disk = build_disk(&build, &rootfs, &scratch.path("disk.img"), ON_ERROR);
    let bundle = bundle(&build, &scratch, &rootfs, ("B", "test-b", 5), &build.image_key());
    let total = BundleFile::open(&bundle).unwrap().manifest.parts_len();
    let id = node_id(3);
    let cfg = || {
        let mut cfg = VmConfig::uefi(&disk.path);
        if let Some(uefi) = cfg.uefi.as_mut() {
            uefi.writable = true;
        }
        cfg
    };
    for cut in 0..cuts {
        let node = Node::boot_uefi(&build, &format!("upgrade-cut{cut}"), cfg(), &id);
        let s = node.status();
        assert_eq!(s["upgrades"]["booted"], "ROOT-A", "cut {cut}: {:#}", s["upgrades"]);
        assert_eq!(
            slot(&s, "ROOT-A")["state"],
            "booted, default",
            "cut {cut}: {:#}",
            s["upgrades"]
        );
        assert_eq!(
            slot(&s, "ROOT-B")["entry"],
            Value::Null,
            "cut {cut}: {:#}",
            s["upgrades"]
        );
        // Send pieces up to a random byte, then one more without waiting
        // for its answer, and cut the power a random moment later.
        let at = rng.below(total - (512 << 10));
        let file = BundleFile::open(&bundle).unwrap();
        let mut client = node.vsock();
        let id = begin(&node, &mut client, &file);
        let mut offset = 0u64;
        loop {
            let len = (total - offset).min(512 << 10);
            let data = file.read_parts(offset, len as usize).unwrap();
            let fields = piece(&id, offset, &data);
            if offset >= at {
                let line = basalt_common::proto::request_line(&serde_json::json!("cut"), "upgrade-data", fields);
                client.send(&line).unwrap();
                std::thread::sleep(Duration::from_millis(rng.below(200)));
                break;
            }
            ok(&node.vm, call(&mut client, "upgrade-data", fields));
            offset += len;
        }
        node.vm.vm.kill().unwrap();
        eprintln!("cut {cut}: power cut while writing bytes {offset}.. of {total}");
    }
    // After the last cut: A boots, B is empty, and a whole upgrade works.
    let node = Node::boot_uefi(&build, "upgrade-cut-last", cfg(), &id);
    let s = node.status();
    assert_eq!(slot(&s, "ROOT-A")["state"], "booted, default", "{:#}", s["upgrades"]);
    assert_eq!(slot(&s, "ROOT-B")["state"], "empty", "{:#}", s["upgrades"]);
    let r = send(&node, &bundle, UpgradeFlags::default()).unwrap_or_else(|e| panic!("{e}\n{}", node.vm.console()));
    assert_eq!(r["staged"]["slot"], "ROOT-B", "{r:#}");
}

/// Over the serial line (115200 baud, about 11 KiB/s): the first 1 MiB
/// chunk of a bundle goes down it and is checked and written, then the
/// transfer is resumed over vsock from that chunk. `make robustness` sends
/// the whole bundle over serial (about 17 minutes: the UKI alone holds the
/// kernel) and stages it.
#[test]
fn an_upgrade_over_serial_resumes_over_vsock() {
    use basalt_tests::robustness::Profile;
    let build = Build::from_env();
    let whole = Profile::from_env().pick(false, true);
    let scratch = Scratch::new("upgrade-serial");
    let rootfs = test_rootfs(&build, &scratch);
    let disk = build_disk(&build, &rootfs, &scratch.path("disk.img"), ON_ERROR);
    let bundle = bundle(&build, &scratch, &rootfs, ("B", "test-b", 5), &build.image_key());
    let node = Node::boot_uefi(&build, "upgrade-serial", VmConfig::uefi(&disk.path), &node_id(4));
    let file = BundleFile::open(&bundle).unwrap();
    let mut serial = node.serial();
    // A stall, not the transfer, is what the timeout bounds; an answer
    // comes once a piece is in.
    serial.set_timeout(Duration::from_secs(120));
    let started = std::time::Instant::now();
    if whole {
        let r = send_on(&node, &mut serial, &file, UpgradeFlags::default())
            .unwrap_or_else(|e| panic!("{e}\n{}", node.vm.console()));
        assert_eq!(r["staged"]["slot"], "ROOT-B", "{r:#}");
        eprintln!(
            "serial: {} bytes in {:.0} s",
            file.manifest.parts_len(),
            started.elapsed().as_secs_f64()
        );
        return;
    }
    let id = begin(&node, &mut serial, &file);
    for offset in [0u64, 512 << 10] {
        let data = file.read_parts(offset, 512 << 10).unwrap();
        let r = ok(&node.vm, call(&mut serial, "upgrade-data", piece(&id, offset, &data)));
        assert_eq!(r["next"], offset + (512 << 10), "{r:#}");
    }
    eprintln!("serial: 1 MiB in {:.0} s", started.elapsed().as_secs_f64());
    let s = node.status();
    assert_eq!(s["upgrades"]["transfer"]["received"], 1 << 20, "{:#}", s["upgrades"]);
    assert_eq!(slot(&s, "ROOT-B")["state"], "writing");
    // The same bundle over vsock: resumed at the chunk serial finished.
    let r = send_on(&node, &mut node.vsock(), &file, UpgradeFlags::default())
        .unwrap_or_else(|e| panic!("{e}\n{}", node.vm.console()));
    assert_eq!(r["staged"]["slot"], "ROOT-B", "{r:#}");
    node.vm.expect("resumed at byte 1048576", WAIT);
}
