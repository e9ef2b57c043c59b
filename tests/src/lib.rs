//! The QEMU test suite's harness.
//!
//! Everything comes from `make` through one variable, `BASALT_BUILD` (the
//! absolute build directory), laid out as the Makefile leaves it:
//! `kernel/{config,modules}`, `vmlinuz`, `bin/*`, `keys/*`, `rootfs/`.
//! Tests build their own image variants from those parts in a temp dir, so
//! each test says exactly what it boots.

pub mod node;
pub mod robustness;

use basalt_common::keys::SigningKey;
use basalt_mkimage::disk::{DiskReport, DiskSpec};
use basalt_mkimage::{pack_initramfs_file, BuildReport, BuildSpec, Compression, Content, InitramfsParts, RootSource};
use basalt_qemu::{Vm, VmConfig};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A full TCG boot to the handoff takes ~5 s here; give slow CI machines 10x.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Paths of everything `make image` built.
#[derive(Debug, Clone)]
pub struct Build {
    pub dir: PathBuf,
}

impl Build {
    /// Reads `BASALT_BUILD`. Panics with how to get one: these tests are run
    /// by `make test`, never skipped.
    pub fn from_env() -> Build {
        let dir = std::env::var_os("BASALT_BUILD").map(PathBuf::from).unwrap_or_else(|| {
            panic!("BASALT_BUILD is not set: run the QEMU suite with `make vmtest` (or `make test`)")
        });
        let b = Build { dir };
        for needed in [
            "vmlinuz",
            "bin/basalt-init",
            "bin/basalt-checker",
            "keys/image.key",
            "rootfs",
        ] {
            assert!(
                b.dir.join(needed).exists(),
                "{} missing: run `make image` first",
                b.dir.join(needed).display()
            );
        }
        b
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn kernel(&self) -> PathBuf {
        self.path("vmlinuz")
    }

    /// The kernel's modules and config: `MODULES_DIR=`/`KCONFIG=` as the
    /// Makefile passes them (BASALT_MODULES_DIR, BASALT_KCONFIG), else the
    /// fetched Debian kernel's.
    pub fn modules_dir(&self) -> PathBuf {
        std::env::var_os("BASALT_MODULES_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.path("kernel/modules"))
    }

    pub fn kconfig(&self) -> PathBuf {
        std::env::var_os("BASALT_KCONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.path("kernel/config"))
    }

    pub fn image_key(&self) -> SigningKey {
        key_from(&self.path("keys/image.key"))
    }

    /// Where each test's console logs go, to read after a failure.
    pub fn log_dir(&self) -> PathBuf {
        let d = self.path("test-logs");
        let _ = std::fs::create_dir_all(&d);
        d
    }
}

pub fn key_from(path: &Path) -> SigningKey {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    SigningKey::from_pkcs8_pem(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

static SCRATCH_SEQ: AtomicU32 = AtomicU32::new(0);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let n = SCRATCH_SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("basalt-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies a directory tree (files, dirs, symlinks), as `cp -a` would.
pub fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success(), "cp -a {} {}", from.display(), to.display());
}

/// Installs a file into a rootfs with a mode, creating parent directories.
pub fn install(src: &Path, rootfs: &Path, dest: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let to = rootfs.join(dest.trim_start_matches('/'));
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(src, &to).unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), to.display()));
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Where the checker fixture lives in test images.
pub const CHECKER: &str = "/usr/libexec/basalt-test/checker";
/// Where the remote-hands fixture lives in test images.
pub const TESTHANDS: &str = "/usr/libexec/basalt-test/testhands";

/// The default rootfs plus the in-guest checker: the image the boot tests use.
pub fn test_rootfs(build: &Build, scratch: &Scratch) -> PathBuf {
    let rootfs = scratch.path("rootfs");
    copy_tree(&build.path("rootfs"), &rootfs);
    install(&build.path("bin/basalt-checker"), &rootfs, CHECKER, 0o755);
    install(&build.path("bin/basalt-testhands"), &rootfs, TESTHANDS, 0o755);
    rootfs
}

/// Builds an initramfs from a rootfs with the build's image key.
pub struct ImageOptions {
    pub embed_image: bool,
    pub handoff: String,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            embed_image: true,
            handoff: basalt_common::manifest::DEFAULT_HANDOFF.into(),
        }
    }
}

/// A built test image: the initramfs, the squashfs beside it, the report.
pub struct TestImage {
    pub initramfs: PathBuf,
    pub squashfs: PathBuf,
    pub report: BuildReport,
}

pub fn build_image(build: &Build, rootfs: &Path, out_dir: &Path, opts: &ImageOptions) -> TestImage {
    let spec = BuildSpec {
        init: build.path("bin/basalt-init"),
        root: RootSource::Rootfs(rootfs.to_path_buf()),
        modules_dir: build.modules_dir(),
        kconfig: build.kconfig(),
        fragment: Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-config/basalt.config"),
        version: "test".into(),
        handoff: opts.handoff.clone(),
        compression: Compression::None,
        embed_image: opts.embed_image,
        image_out: Some(out_dir.join("root.sqsh")),
        manifest_out: None,
        out: out_dir.join("initramfs.img"),
        source_date_epoch: None,
    };
    let report = basalt_mkimage::build(&spec, &build.image_key()).unwrap_or_else(|e| panic!("build image: {e}"));
    TestImage {
        initramfs: spec.out,
        squashfs: out_dir.join("root.sqsh"),
        report,
    }
}

/// Root slots of test disks: the test image and its tree need about 4 MiB.
pub const TEST_SLOT_SIZE: u64 = 32 << 20;
/// The VAR of test disks: room for what a test writes, little to copy.
pub const TEST_VAR_SIZE: u64 = 32 << 20;

/// A GPT disk built as `basalt-mkimage disk` builds `build/disk.img` (ESP
/// with systemd-boot and the ROOT-A UKI, ROOT-A, an empty ROOT-B, STATE,
/// VAR),
/// from `rootfs`, with the build's kernel and image key, into `out`.
/// `append` goes on the UKI's command line (after its own `basalt.root=ram`).
pub struct TestDisk {
    pub path: PathBuf,
    pub report: DiskReport,
}

pub fn build_disk(build: &Build, rootfs: &Path, out: &Path, append: &str) -> TestDisk {
    let spec = DiskSpec {
        init: build.path("bin/basalt-init"),
        root: RootSource::Rootfs(rootfs.to_path_buf()),
        modules_dir: build.modules_dir(),
        kconfig: build.kconfig(),
        fragment: Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-config/basalt.config"),
        kernel: build.kernel(),
        stub: basalt_mkimage::uki::DEFAULT_STUB.into(),
        loader: basalt_mkimage::esp::DEFAULT_LOADER.into(),
        version: "test".into(),
        handoff: basalt_common::manifest::DEFAULT_HANDOFF.into(),
        slot_size: TEST_SLOT_SIZE,
        esp_size: basalt_mkimage::disk::DEFAULT_ESP_SIZE,
        state_size: basalt_mkimage::disk::DEFAULT_STATE_SIZE,
        var_size: TEST_VAR_SIZE,
        salt: None,
        fill_b: false,
        append: Some(append.to_string()).filter(|a| !a.trim().is_empty()),
        parts_dir: None,
        out: out.to_path_buf(),
        source_date_epoch: None,
    };
    let report = basalt_mkimage::disk::build_disk(&spec, &build.image_key())
        .unwrap_or_else(|e| panic!("build disk {}: {e}", out.display()));
    TestDisk { path: spec.out, report }
}

impl TestDisk {
    /// Where partition `label` starts on the disk, in bytes.
    pub fn partition_offset(&self, label: &str) -> u64 {
        let (_, p) = self
            .report
            .gpt
            .find(label)
            .unwrap_or_else(|| panic!("{}: no partition {label}", self.path.display()));
        p.offset_bytes()
    }
}

/// `image`'s parts (our basalt-init, its signed manifest, root image and
/// modules), with `f` applied, packed uncompressed into `out`: how tests
/// make a tampered initramfs.
pub fn repack(build: &Build, image: &TestImage, out: &Path, f: impl FnOnce(&mut InitramfsParts)) {
    let mut parts = InitramfsParts {
        init: Content::File(build.path("bin/basalt-init")),
        manifest_json: image.report.signed.json.clone(),
        manifest_sig: image.report.signed.signature.to_vec(),
        image: Some(Content::File(image.squashfs.clone())),
        modules: image
            .report
            .modules
            .iter()
            .map(|m| (m.name.clone(), Content::File(m.path.clone())))
            .collect(),
    };
    f(&mut parts);
    pack_initramfs_file(&parts, 0, Compression::None, out).unwrap();
}

/// A VM under test. Every wait has a timeout, a failed wait panics with the
/// end of the console, the whole console is kept in `test-logs/<name>.log`,
/// and dropping it kills QEMU (basalt_qemu::Vm's Drop).
pub struct TestVm {
    pub vm: Vm,
    pub name: String,
    pub log: PathBuf,
}

impl TestVm {
    pub fn boot(build: &Build, name: &str, cfg: VmConfig) -> TestVm {
        let log = build.log_dir().join(format!("{name}.log"));
        let _ = std::fs::remove_file(&log);
        let vm = Vm::start(cfg.console_log(&log)).unwrap_or_else(|e| panic!("{name}: start VM: {e}"));
        TestVm {
            vm,
            name: name.into(),
            log,
        }
    }

    /// A VM with the build's kernel, the given initramfs and command line.
    pub fn config(build: &Build, initramfs: &Path, append: &str) -> VmConfig {
        VmConfig::new(build.kernel()).initrd(initramfs).append(append)
    }

    /// Waits for `needle` on the console or panics with the console's tail.
    pub fn expect(&self, needle: &str, timeout: Duration) {
        if let Err(e) = self.vm.wait_for_console(needle, timeout) {
            panic!("{}: {e}\n(full console: {})", self.name, self.log.display());
        }
    }

    /// Waits until `needle` has appeared on `count` lines of the console
    /// (a guest that reboots in the same VM prints its boot lines again).
    pub fn expect_count(&self, needle: &str, count: usize, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while self.lines_with(needle).len() < count {
            if std::time::Instant::now() >= deadline {
                panic!(
                    "{}: {needle:?} seen {} times, waited {timeout:?} for {count}\n{}\n(full console: {})",
                    self.name,
                    self.lines_with(needle).len(),
                    self.console(),
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for `needle` at or after console byte `from` (a guest that
    /// reboots in the same VM says the same lines again) or panics with the
    /// console's tail. Returns the offset just past it, the next `from`.
    pub fn expect_after(&self, needle: &str, from: usize, timeout: Duration) -> usize {
        match self.vm.wait_for_console_after(needle, from, timeout) {
            Ok(end) => end,
            Err(e) => panic!("{}: {e}\n(full console: {})", self.name, self.log.display()),
        }
    }

    /// Waits for QEMU to exit (the guest powered off or rebooted).
    pub fn expect_exit(&self, timeout: Duration) -> ExitStatus {
        match self.vm.wait_for_exit(timeout) {
            Ok(status) => status,
            Err(e) => panic!("{}: {e}\n(full console: {})", self.name, self.log.display()),
        }
    }

    pub fn console(&self) -> String {
        self.vm.console_text()
    }

    /// Lines containing `marker`, in order.
    pub fn lines_with(&self, marker: &str) -> Vec<String> {
        self.console()
            .lines()
            .filter(|l| l.contains(marker))
            .map(|l| l.trim_end_matches('\r').to_string())
            .collect()
    }
}

/// What the in-guest checker reported.
#[derive(Debug)]
pub struct CheckerResult {
    pub passed: Vec<String>,
    pub failed: Vec<(String, String)>,
}

/// Boots an image whose handoff is the checker and collects its verdicts.
pub fn run_checker(build: &Build, name: &str, cfg: VmConfig) -> (TestVm, CheckerResult) {
    let vm = TestVm::boot(build, name, cfg);
    vm.expect("BASALT-CHECK DONE", BOOT_TIMEOUT);
    let mut result = CheckerResult {
        passed: Vec::new(),
        failed: Vec::new(),
    };
    for line in vm.lines_with("BASALT-CHECK ") {
        let rest = line.split("BASALT-CHECK ").nth(1).unwrap_or_default();
        if let Some(pass) = rest.strip_prefix("PASS ") {
            result
                .passed
                .push(pass.split(':').next().unwrap_or_default().to_string());
        } else if let Some(fail) = rest.strip_prefix("FAIL ") {
            let (check, why) = fail.split_once(": ").unwrap_or((fail, ""));
            result.failed.push((check.to_string(), why.to_string()));
        }
    }
    (vm, result)
}

/// A raw disk holding a GPT with one partition named STATE of `state_mib`
/// MiB, all zeros: what the agent persists to in direct-kernel tests.
/// Returns the partition's byte offset in the file.
pub fn state_disk(path: &Path, state_mib: u64) -> u64 {
    use basalt_common::disk::gpt::{self, types, Guid, PartitionSpec};
    let spec = PartitionSpec {
        name: "STATE".into(),
        type_guid: types::LINUX_DATA,
        unique_guid: Guid::derive(b"basalt-test-state", "STATE"),
        size_bytes: state_mib << 20,
    };
    let table = gpt::plan(Guid::derive(b"basalt-test-state", "disk"), &[spec]).expect("plan the STATE disk");
    let bytes = gpt::build(&table).expect("build the STATE disk's GPT");
    let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.set_len(table.total_sectors * gpt::SECTOR_SIZE).unwrap();
    use std::os::unix::fs::FileExt;
    file.write_all_at(&bytes.primary, 0).unwrap();
    file.write_all_at(&bytes.backup, bytes.backup_lba * gpt::SECTOR_SIZE)
        .unwrap();
    table.partitions[0].offset_bytes()
}

/// An update bundle built as `make bundle` builds `build/update.bundle`,
/// from `rootfs` with the build's kernel, for slot `target` ("A" or "B"),
/// signed with `key` (the build's image key, or another to test refusals).
/// `(target, version, version_seq)` say what the bundle is.
pub fn build_bundle(
    build: &Build,
    rootfs: &Path,
    out: &Path,
    (target, version, version_seq): (&str, &str, u64),
    append: &str,
    key: &SigningKey,
) -> PathBuf {
    use basalt_mkimage::bundle::{build_bundle, BundleSpec};
    let slot = *basalt_mkimage::disk::SLOTS
        .iter()
        .find(|s| s.letter == target)
        .unwrap_or_else(|| panic!("no slot {target}"));
    let spec = BundleSpec {
        init: build.path("bin/basalt-init"),
        root: RootSource::Rootfs(rootfs.to_path_buf()),
        modules_dir: build.modules_dir(),
        kconfig: build.kconfig(),
        fragment: Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-config/basalt.config"),
        kernel: build.kernel(),
        stub: basalt_mkimage::uki::DEFAULT_STUB.into(),
        version: version.into(),
        version_seq,
        arch: basalt_common::bundle::Arch::X86_64,
        handoff: basalt_common::manifest::DEFAULT_HANDOFF.into(),
        slot_size: TEST_SLOT_SIZE,
        salt: None,
        target: slot,
        append: Some(append.to_string()).filter(|a| !a.trim().is_empty()),
        parts_dir: None,
        out: out.to_path_buf(),
        source_date_epoch: None,
    };
    build_bundle(&spec, key).unwrap_or_else(|e| panic!("build bundle {}: {e}", out.display()));
    out.to_path_buf()
}
