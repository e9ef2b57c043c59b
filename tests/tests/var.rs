//! /var on disk (issue 12), in QEMU: a second virtio disk carries a GPT
//! partition labelled VAR (the disk layout's partition 5), an ext4 made on
//! the host by `mke2fs -d`. Found by default, it is mounted at /var with
//! nosuid,nodev, and what is written there is still there on the next boot
//! of the same disk. Named by `basalt.var=partlabel:VAR`, a missing or
//! unmountable partition stops the boot with one line.

use basalt_common::command::CommandKind;
use basalt_common::disk::gpt::{self, Guid, PartitionSpec};
use basalt_tests::node::*;
use basalt_tests::*;
use serde_json::{json, Value};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
/// The Discoverable Partitions Specification's type for /var.
const VAR_TYPE: Guid = Guid::from_fields(
    0x4D21B016,
    0xB534,
    0x45C2,
    [0xA9, 0xFB, 0x5C, 0x16, 0xE0, 0x91, 0xFD, 0x2D],
);
const VAR_MIB: u64 = 64;
const SEED: &str = "lib/basalt-test/seed";
const SEED_TEXT: &str = "put here by mke2fs -d on the host\n";

/// A GPT disk at `path` with one partition labelled `label`: an ext4 of
/// `seed`'s files when `ext4`, zeros otherwise.
fn var_disk(path: &Path, scratch: &Scratch, label: &str, ext4: bool) {
    let spec = PartitionSpec {
        name: label.into(),
        type_guid: VAR_TYPE,
        unique_guid: Guid::derive(b"basalt-test-var", label),
        size_bytes: VAR_MIB << 20,
    };
    let table = gpt::plan(Guid::derive(b"basalt-test-var", "disk"), &[spec]).expect("plan the VAR disk");
    let bytes = gpt::build(&table).expect("build the VAR disk's GPT");
    let file = std::fs::File::create(path).unwrap();
    file.set_len(table.total_sectors * gpt::SECTOR_SIZE).unwrap();
    file.write_all_at(&bytes.primary, 0).unwrap();
    file.write_all_at(&bytes.backup, bytes.backup_lba * gpt::SECTOR_SIZE)
        .unwrap();
    if !ext4 {
        return;
    }
    let seed = scratch.path("var-seed");
    std::fs::create_dir_all(seed.join(SEED).parent().unwrap()).unwrap();
    std::fs::write(seed.join(SEED), SEED_TEXT).unwrap();
    let fs = scratch.path("var.ext4");
    let out = std::process::Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", label, "-d"])
        .arg(&seed)
        .arg(&fs)
        .arg(format!("{VAR_MIB}M"))
        .output()
        .expect("mke2fs (e2fsprogs)");
    assert!(out.status.success(), "mke2fs: {}", String::from_utf8_lossy(&out.stderr));
    let fs_bytes = std::fs::read(&fs).unwrap();
    file.write_all_at(&fs_bytes, table.partitions[0].offset_bytes())
        .unwrap();
}

fn with_disk(disk: PathBuf) -> impl Fn(basalt_qemu::VmConfig) -> basalt_qemu::VmConfig {
    move |cfg| cfg.writable_disk(&disk)
}

/// Applies a config whose files are `files`, and waits for testhands.
fn configure(node: &Node, files: Value) {
    let mut c = node_config(&node.id, 1, "var-node", (100, 30_000));
    c["files"] = files;
    ok(&node.vm, node.apply(&mut node.serial(), &node.sign(&c)));
    node.wait_status("testhands running", WAIT, |s| {
        Node::service(s, "testhands")["state"] == "running"
    });
}

fn read(node: &Node, path: &str) -> Value {
    node.hands(&format!("read {path}"))["contents"].clone()
}

/// The /var line of /proc/self/mountinfo: (mount options, fstype, source).
fn var_mount(node: &Node) -> (String, String, String) {
    let info = read(node, "/proc/self/mountinfo");
    let info = info.as_str().expect("mountinfo");
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/var"))
        .unwrap_or_else(|| panic!("no /var in mountinfo:\n{info}"));
    let (mine, fs) = line.split_once(" - ").unwrap();
    let fs: Vec<&str> = fs.split(' ').collect();
    (mine.split(' ').nth(5).unwrap().to_string(), fs[0].into(), fs[1].into())
}

#[test]
fn var_partition_is_ext4_nosuid_nodev_and_survives_a_reboot() {
    let build = Build::from_env();
    let scratch = Scratch::new("var-disk");
    let disk = scratch.path("var.img");
    var_disk(&disk, &scratch, "VAR", true);
    let more = with_disk(disk.clone());
    let mut node = Node::boot_with(&build, "var-disk", "", &more);

    let var = node.vm.lines_with("var: ext4 on /var");
    assert_eq!(var.len(), 1, "one line says what /var is: {var:?}");
    assert!(
        var[0].ends_with("basalt-init: var: ext4 on /var (nosuid,nodev): partition VAR (/dev/vda1)"),
        "{var:?}"
    );
    let boot = &node.status()["boot"]["var"];
    assert_eq!(
        boot,
        &json!({"fstype": "ext4", "source": "partlabel:VAR", "device": "/dev/vda1",
                "chosen_by": "default", "note": "partition VAR (/dev/vda1)"}),
        "boot report"
    );

    let mark = format!("written in the first boot of {}\n", node.id);
    configure(
        &node,
        json!([
            {"path": "/var/lib/kubelet/config.yaml", "mode": "0644", "contents": "kind: KubeletConfiguration\n"},
            {"path": "/var/lib/basalt-test/mark", "mode": "0644", "contents": mark},
        ]),
    );
    let (opts, fstype, source) = var_mount(&node);
    assert_eq!((fstype.as_str(), source.as_str()), ("ext4", "/dev/vda1"));
    let opts: Vec<&str> = opts.split(',').collect();
    for want in ["rw", "nosuid", "nodev"] {
        assert!(opts.contains(&want), "/var options {opts:?} lack {want}");
    }
    assert!(!opts.contains(&"noexec"), "/var stays exec-able: {opts:?}");
    assert_eq!(read(&node, &format!("/var/{SEED}")), SEED_TEXT, "mke2fs -d's file");

    // A clean poweroff, then the same disk again: the mark is there although
    // the second config does not write it.
    ok(&node.vm, node.signed(CommandKind::Poweroff));
    assert!(node.vm.expect_exit(WAIT).success());
    node.boot_again(&build, &more);
    configure(
        &node,
        json!([{"path": "/var/lib/kubelet/config.yaml", "mode": "0644", "contents": "kind: KubeletConfiguration\n"}]),
    );
    assert_eq!(
        read(&node, "/var/lib/basalt-test/mark"),
        mark.as_str(),
        "survived the reboot"
    );
    assert_eq!(var_mount(&node).1, "ext4");
    assert!(!node.vm.console().contains("FATAL"));
}

/// Boots with `basalt.var=partlabel:VAR` and `disk` (if any): one fatal
/// line at `step`, ending with `cause`, and a poweroff.
fn refused(name: &str, disk: Option<&Path>, step: &str, cause: &str) {
    let build = Build::from_env();
    let scratch = Scratch::new(name);
    let rootfs = test_rootfs(&build, &scratch);
    let image = build_image(&build, &rootfs, &scratch.0, &ImageOptions::default());
    let mut cfg = TestVm::config(
        &build,
        &image.initramfs,
        &format!("{AGENT_CMDLINE} basalt.var=partlabel:VAR basalt.image_wait=2"),
    );
    if let Some(d) = disk {
        cfg = cfg.writable_disk(d);
    }
    let vm = TestVm::boot(&build, name, cfg);
    vm.expect("FATAL: step", BOOT_TIMEOUT);
    vm.expect_exit(Duration::from_secs(30));
    let fatal = vm.lines_with("FATAL: step");
    assert_eq!(fatal.len(), 1, "{name}: one fatal line: {fatal:?}");
    assert!(
        fatal[0].contains(&format!("FATAL: step {step}: {cause}")),
        "{name}: wanted step {step}: {cause:?}\n got {:?}",
        fatal[0]
    );
    let console = vm.console();
    assert!(!console.contains("handing off"), "{name}: handed off");
    assert!(console.contains("reboot: Power down"), "{name}: did not power off");
}

#[test]
fn a_named_var_partition_that_is_missing_or_not_ext4_stops_the_boot() {
    refused(
        "var-missing",
        None,
        "find-var",
        "no partition labelled VAR appeared within 2.0 s",
    );
    let scratch = Scratch::new("var-zeros");
    let disk = scratch.path("var.img");
    var_disk(&disk, &scratch, "VAR", false);
    refused(
        "var-zeros",
        Some(&disk),
        "mount-var",
        "var partition VAR (/dev/vda1): mount ext4 on /newroot/var: Invalid argument (os error 22) \
         (basalt.var=partlabel:VAR needs an ext4 filesystem there)",
    );
}

/// Found by default but not mountable: a tmpfs this boot, and the reason
/// in the log and the boot report; the node stays reachable.
#[test]
fn a_default_var_partition_that_does_not_mount_falls_back_to_tmpfs() {
    let build = Build::from_env();
    let scratch = Scratch::new("var-fallback");
    let disk = scratch.path("var.img");
    var_disk(&disk, &scratch, "VAR", false);
    let node = Node::boot_with(&build, "var-fallback", "", &with_disk(disk.clone()));
    let var = &node.status()["boot"]["var"];
    assert_eq!(var["fstype"], "tmpfs", "{var}");
    assert_eq!(var["chosen_by"], "default", "{var}");
    let note = var["note"].as_str().unwrap();
    assert!(
        note.starts_with("partition VAR (/dev/vda1) does not mount (mount ext4 on /newroot/var: Invalid argument"),
        "{note}"
    );
    assert_eq!(node.vm.lines_with(&format!("var: {note}")).len(), 1, "one error line");
    assert!(!node.vm.console().contains("FATAL"));
}
