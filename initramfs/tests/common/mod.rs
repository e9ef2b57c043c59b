//! Helpers shared by the integration tests.
#![allow(dead_code, reason = "each test binary uses only some of these helpers")]

use basalt_mkimage::modinfo::synthetic;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("basalt-mkimage-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    /// Writes `data` at `rel`, making parent directories.
    pub fn write(&self, rel: &str, data: &[u8]) -> PathBuf {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, data).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fails the test, naming the tool and its package, when a tool is missing.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not on PATH: this test needs it (apt-get install {package}; `make test` installs it)"
    );
}

/// Runs a command, failing the test with its stderr if it fails.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Extracts a cpio archive with the system `cpio -idm` into `dir`.
pub fn extract(archive: &Path, dir: &Path) {
    require_tool("cpio", "cpio");
    std::fs::create_dir_all(dir).unwrap();
    let file = std::fs::File::open(archive).unwrap();
    run(Command::new("cpio")
        .args(["-idm", "--quiet"])
        .current_dir(dir)
        .stdin(file));
}

pub const RELEASE: &str = "6.1.0-test";

/// A kernel's inputs: modules dir, .config and fragment, all synthetic.
pub struct FakeKernel {
    pub modules_dir: PathBuf,
    pub kconfig: PathBuf,
    pub fragment: PathBuf,
}

pub fn fake_kernel(dir: &TempDir) -> FakeKernel {
    let vermagic = format!("vermagic={RELEASE} SMP preempt mod_unload modversions \0");
    let modules = [
        ("kernel/fs/squashfs/squashfs.ko", "name=squashfs\0depends=\0"),
        ("kernel/drivers/virtio/virtio.ko", "name=virtio\0depends=virtio_ring\0"),
        ("kernel/drivers/virtio/virtio_ring.ko", "name=virtio_ring\0depends=\0"),
        (
            "kernel/drivers/net/virtio_net.ko",
            "name=virtio_net\0depends=virtio,virtio_ring\0",
        ),
    ];
    let modules_dir = dir.join(&format!("lib/modules/{RELEASE}"));
    for (rel, info) in modules {
        let elf = synthetic::module(format!("license=GPL\0{info}{vermagic}").as_bytes());
        dir.write(&format!("lib/modules/{RELEASE}/{rel}"), &elf);
    }
    dir.write(
        &format!("lib/modules/{RELEASE}/modules.builtin"),
        b"kernel/drivers/block/loop.ko\n",
    );
    let kconfig = dir.write(
        "config",
        b"# generated\nCONFIG_BLK_DEV_INITRD=y\nCONFIG_RD_ZSTD=y\nCONFIG_SQUASHFS=m\nCONFIG_BLK_DEV_LOOP=y\nCONFIG_VIRTIO=m\n# CONFIG_RD_GZIP is not set\n",
    );
    let fragment = dir.write(
        "basalt.config",
        b"# test fragment\nCONFIG_BLK_DEV_INITRD=y\nCONFIG_RD_GZIP=y|CONFIG_RD_ZSTD=y\nCONFIG_SQUASHFS=m  # modules: squashfs\nCONFIG_BLK_DEV_LOOP=m # modules: loop\nCONFIG_VIRTIO=m # modules: virtio\n",
    );
    FakeKernel {
        modules_dir,
        kconfig,
        fragment,
    }
}

/// A small root filesystem.
pub fn rootfs(dir: &TempDir, rel: &str) -> PathBuf {
    dir.write(&format!("{rel}/etc/hostname"), b"basalt\n");
    dir.write(&format!("{rel}/sbin/basalt-agent"), b"#!/bin/sh\nexit 0\n");
    dir.write(&format!("{rel}/usr/share/doc/big"), &vec![0x5a; 200_000]);
    std::fs::create_dir_all(dir.join(&format!("{rel}/var/empty"))).unwrap();
    dir.join(rel)
}
