//! The disk `basalt-mkimage disk` writes (issue 11), booted the way a
//! machine boots it: OVMF finds the ESP, systemd-boot starts the ROOT-A UKI,
//! and basalt-init mounts the slot through dm-verity. Each disk is built
//! here from the test rootfs, as `make disk` builds `build/disk.img`.
//!
//! - it boots to kubelet in both root modes, provisioned over serial or vsock;
//! - a config applied on it survives a real reboot (issue 12's first case):
//!   the agent writes it to the STATE partition, the guest reboots in the
//!   same VM through the firmware again, and comes back configured with no
//!   apply;
//! - /var is the disk's VAR partition: what a service writes there survives
//!   a reboot, and `reset --var` empties it;
//! - a flipped byte in the slot's manifest area refuses the boot with one line.
//!
//! An OVMF boot takes about 11 s under TCG; the direct-kernel verity tests
//! (verity.rs) cover the rest of the tamper matrix.

use basalt_common::command::CommandKind;
use basalt_qemu::VmConfig;
use basalt_tests::node::*;
use basalt_tests::*;
use serde_json::{json, Value};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
/// Added to the UKI's command line: a refused boot powers off at once, so
/// QEMU exits (the UKI's default is a reboot after 10 s).
const ON_ERROR: &str = "basalt.on_error=poweroff basalt.error_delay=0";
/// Under OVMF the boot disk is the only virtio disk.
const SLOT_NODE: &str = "/dev/vda2";
const STATE_NODE: &str = "/dev/vda4";
const VAR_NODE: &str = "/dev/vda5";

/// The node identity (SMBIOS UUID) a test boots as: the same on every boot
/// of its disk, as a machine's is.
fn node_id(tag: u64) -> String {
    format!("{:08x}-0000-4000-8000-d15c{:08x}", std::process::id(), tag)
}

fn running(s: &Value, name: &str) -> bool {
    Node::service(s, name)["state"] == "running"
}

fn disk(build: &Build, scratch: &Scratch, append: &str) -> TestDisk {
    let rootfs = test_rootfs(build, scratch);
    build_disk(
        build,
        &rootfs,
        &scratch.path("disk.img"),
        &format!("{ON_ERROR} {append}"),
    )
}

/// Boots the disk, checks the root came from ROOT-A through dm-verity in
/// `mode` and that the agent found STATE, applies generation 1 over
/// `channel` and waits for kubelet.
fn boots_to_kubelet(name: &str, tag: u64, append: &str, mode: &str, channel: &str) {
    let build = Build::from_env();
    let scratch = Scratch::new(name);
    let disk = disk(&build, &scratch, append);
    let node = Node::boot_uefi(&build, name, VmConfig::uefi(&disk.path), &node_id(tag));
    let root = node.vm.lines_with("root: /dev/dm-");
    assert_eq!(root.len(), 1, "{name}: {root:?}");
    assert!(
        root[0].contains(&format!("through dm-verity on ROOT-A {SLOT_NODE}, {mode} mode")),
        "{name}: {}",
        root[0]
    );
    assert_eq!(root[0].contains("via /dev/loop"), mode == "ram", "{name}: {}", root[0]);

    let s = node.status();
    assert_eq!(s["state"], "maintenance", "{name}: a fresh disk holds no config");
    assert_eq!(s["persistence"]["persistent"], true, "{name}: {:#}", s["persistence"]);
    assert_eq!(s["persistence"]["device"], STATE_NODE, "{name}");

    let mut client = match channel {
        "serial" => node.serial(),
        _ => node.vsock(),
    };
    let envelope = node.sign(&node_config(&node.id, 1, name, (100, 30_000)));
    let r = ok(&node.vm, node.apply(&mut client, &envelope));
    assert_eq!(r["services"]["started"], json!(["testhands", "kubelet"]), "{name}");
    let s = node.wait_status("kubelet running", WAIT, |s| running(s, "kubelet"));
    assert_eq!(s["state"], "configured");
    assert_eq!(s["config"]["generation"], 1);
    assert_eq!(s["persistence"]["writes"], 1, "{name}: {:#}", s["persistence"]);
    node.vm.expect("[kubelet] kubelet stand-in", WAIT);
    let console = node.vm.console();
    assert!(!console.contains("FATAL"), "{name}:\n{console}");
    assert!(
        !console.contains("is corrupted"),
        "{name}: verity refused a block:\n{console}"
    );
}

#[test]
fn disk_boots_to_kubelet_under_ovmf_in_ram_mode() {
    // No basalt.root= added: the UKI's own basalt.root=ram.
    boots_to_kubelet("disk-ram", 1, "", "ram", "serial");
}

#[test]
fn disk_boots_to_kubelet_under_ovmf_in_disk_mode() {
    boots_to_kubelet("disk-disk", 2, "basalt.root=disk", "disk", "vsock");
}

/// The first `len` bytes of partition `label`.
fn partition_bytes(disk: &TestDisk, label: &str, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    std::fs::File::open(&disk.path)
        .unwrap()
        .read_exact_at(&mut buf, disk.partition_offset(label))
        .unwrap();
    buf
}

/// Issue 12's first case, on the real disk layout: apply two generations,
/// a signed reboot (the guest restarts in the same VM: firmware,
/// systemd-boot, the UKI, init, the agent), and the node comes back
/// configured on generation 2 with kubelet running and nothing applied; an
/// older generation is still refused, so the floor survived too.
#[test]
fn config_on_state_survives_a_reboot_of_the_disk() {
    let build = Build::from_env();
    let scratch = Scratch::new("disk-persist");
    let disk = disk(&build, &scratch, "");
    assert!(
        partition_bytes(&disk, "STATE", 1 << 20).iter().all(|&b| b == 0),
        "STATE starts empty"
    );
    let id = node_id(3);
    let node = Node::boot_uefi(&build, "disk-persist", writable_in_place(&disk), &id);
    let mut serial = node.serial();
    for (generation, hostname) in [(1, "node-one"), (2, "node-two")] {
        let envelope = node.sign(&node_config(&id, generation, hostname, (100, 30_000)));
        ok(&node.vm, node.apply(&mut serial, &envelope));
    }
    drop(serial);
    let s = node.wait_status("kubelet running", WAIT, |s| running(s, "kubelet"));
    assert_eq!(s["config"]["generation"], 2);
    assert_eq!(s["persistence"]["writes"], 2, "{:#}", s["persistence"]);
    assert!(
        partition_bytes(&disk, "STATE", 1 << 20).iter().any(|&b| b != 0),
        "the acknowledged records are on the disk file"
    );

    // The second boot: configured from STATE before any request is read.
    reboot_configured(&node, CommandKind::Reboot, 2, 0);
    let s = node.wait_status("kubelet running after the reboot", WAIT, |s| {
        s["persistence"]["writes"] == 0 && running(s, "kubelet")
    });
    // The console up to here holds whole lines of both boots.
    assert_eq!(node.vm.lines_with("booted configured:").len(), 1);
    assert_eq!(
        node.vm.lines_with("BdsDxe: starting").len(),
        2,
        "the firmware booted the disk twice"
    );
    assert_eq!(s["state"], "configured", "{s:#}");
    assert_eq!(s["config"]["generation"], 2);
    assert_eq!(s["config"]["hostname"], "node-two");
    let persistence = &s["persistence"];
    assert!(persistence["in_force"].is_object(), "{persistence:#}");
    assert_eq!(
        persistence["in_force"]["why"], "the newest valid record",
        "{persistence:#}"
    );
    assert_eq!(persistence["generation_floor"], 2, "{persistence:#}");
    assert_eq!(node.pids("kubelet").len(), 1, "one kubelet in the guest");

    let stale = node.sign(&node_config(&id, 1, "node-one", (100, 30_000)));
    let (code, message) = err_code(&node.apply(&mut node.vsock(), &stale));
    assert_eq!(code, "stale_generation", "{message}");
}

/// The disk under OVMF, rebooting in the same VM, its writes reaching the
/// file so that the test can see them land.
fn writable_in_place(disk: &TestDisk) -> VmConfig {
    let mut cfg = VmConfig::uefi(&disk.path).stay_on_reboot();
    if let Some(uefi) = cfg.uefi.as_mut() {
        uefi.writable = true;
    }
    cfg
}

/// A signed `kind` (a reboot or a reset), then the next boot up to the
/// agent applying generation `generation` from STATE, and testhands
/// running again. `from` is where this boot's console starts; returns the
/// next boot's.
fn reboot_configured(node: &Node, kind: CommandKind, generation: u64, from: usize) -> usize {
    ok(&node.vm, node.signed(kind));
    let from = node.vm.expect_after("reboot: Restarting system", from, WAIT);
    let from = node.vm.expect_after(
        &format!("basalt-agent: booted configured: generation {generation} from STATE {STATE_NODE} slot "),
        from,
        BOOT_TIMEOUT,
    );
    node.wait_status("testhands running after the reboot", WAIT, |s| running(s, "testhands"));
    from
}

/// Issue 12's /var, on the real disk layout: the UKI names VAR
/// (`basalt.var=partlabel:VAR`), so /var is partition 5's ext4. A file a
/// service writes there is still there after a reboot; `reset --var`
/// empties /var and reboots, and the persisted config (which writes
/// nothing under /var) leaves it empty. The guest leaves VAR clean for
/// e2fsck.
#[test]
fn var_on_the_disk_survives_a_reboot_and_reset_var_empties_it() {
    let build = Build::from_env();
    let scratch = Scratch::new("disk-var");
    let disk = disk(&build, &scratch, "");
    let id = node_id(4);
    let node = Node::boot_uefi(&build, "disk-var", writable_in_place(&disk), &id);
    let var = node.vm.lines_with("var: ext4 on /var");
    assert_eq!(var.len(), 1, "{var:?}");
    assert!(
        var[0].ends_with(&format!("var: ext4 on /var (nosuid,nodev): partition VAR ({VAR_NODE})")),
        "{var:?}"
    );
    assert_eq!(node.status()["boot"]["var"]["chosen_by"], "basalt.var");

    let mut config = node_config(&id, 1, "disk-var", (100, 30_000));
    config["files"] = json!([]);
    ok(&node.vm, node.apply(&mut node.serial(), &node.sign(&config)));
    node.wait_status("testhands running", WAIT, |s| running(s, "testhands"));
    let mark = "/var/lib/basalt-test/mark";
    let text = format!("written-by-a-service-on-{id}");
    assert_eq!(node.hands(&format!("write {mark} {text}"))["written"], mark);

    let from = reboot_configured(&node, CommandKind::Reboot, 1, 0);
    assert_eq!(node.hands(&format!("read {mark}"))["contents"], format!("{text}\n"));

    reboot_configured(&node, CommandKind::ResetVar, 1, from);
    assert_eq!(node.vm.lines_with("entries removed from /var; rebooting").len(), 1);
    assert_eq!(node.hands("list /var")["entries"], json!([]), "/var after the reset");
    let boot = &node.status()["boot"]["var"];
    assert_eq!((&boot["fstype"], &boot["device"]), (&json!("ext4"), &json!(VAR_NODE)));
    assert_eq!(node.vm.lines_with("BdsDxe: starting").len(), 3, "three firmware boots");
    assert!(!node.vm.console().contains("FATAL"));

    ok(&node.vm, node.signed(CommandKind::Poweroff));
    assert!(node.vm.expect_exit(WAIT).success());
    let var_size = disk.report.gpt.find("VAR").unwrap().1.size_bytes();
    let extracted = scratch.path("var.ext4");
    std::fs::write(&extracted, partition_bytes(&disk, "VAR", var_size as usize)).unwrap();
    let fsck = std::process::Command::new("e2fsck")
        .arg("-fn")
        .arg(&extracted)
        .output()
        .expect("e2fsck (e2fsprogs)");
    assert!(
        fsck.status.success(),
        "e2fsck -fn on VAR after the poweroff: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
}

/// One byte of the manifest JSON in ROOT-A's manifest area, flipped on the
/// built disk: the slot's copy no longer verifies, and the boot stops with
/// one line before any root is mounted.
#[test]
fn disk_refuses_a_flipped_manifest_byte_under_ovmf() {
    let build = Build::from_env();
    let scratch = Scratch::new("disk-tamper");
    let disk = disk(&build, &scratch, "");
    let at =
        disk.partition_offset("ROOT-A") + disk.report.slot.area_offset + 20 + disk.report.signed.json.len() as u64 / 2;
    flip(&disk.path, at);

    let name = "disk-tamper-manifest";
    let vm = TestVm::boot(&build, name, VmConfig::uefi(&disk.path));
    vm.expect("FATAL: step", WAIT);
    vm.expect_exit(Duration::from_secs(30));
    let fatal = vm.lines_with("FATAL: step");
    assert_eq!(fatal.len(), 1, "exactly one fatal line: {fatal:?}");
    let want = format!(
        "FATAL: step slot-manifest: root slot ROOT-A ({SLOT_NODE}): bad slot manifest: \
         manifest signature does not verify with image key"
    );
    assert!(fatal[0].contains(&want), "wanted {want:?}\n got {:?}", fatal[0]);
    let console = vm.console();
    assert!(!console.contains("root: /dev/"), "the root was mounted");
    assert!(!console.contains("handing off"), "handed off");
    assert!(console.contains("reboot: Power down"), "did not power off");
}

fn flip(path: &Path, at: u64) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x01], at).unwrap();
}
