#![cfg(feature = "host")]
//! Booting an image once and reading what the fixture printed.

use crate::error::BenchError;
use crate::line::{self, Outcome};
use basalt_qemu::{AccelChoice, Vm, VmConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Which /init an image boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    Basalt,
    Busybox,
}

impl Init {
    pub fn as_str(self) -> &'static str {
        match self {
            Init::Basalt => "basalt",
            Init::Busybox => "busybox",
        }
    }
}

/// Where basalt-init finds the root image: in the initramfs (today's
/// path, and the baseline's), or in ROOT-A of a GPT disk on virtio-blk
/// through dm-verity, copied into RAM first (`basalt.root=ram`) or read in
/// place (`basalt.root=disk`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Root {
    #[default]
    Initramfs,
    Ram,
    Disk,
}

impl Root {
    pub fn as_str(self) -> &'static str {
        match self {
            Root::Initramfs => "initramfs",
            Root::Ram => "ram",
            Root::Disk => "disk",
        }
    }

    /// What the boot adds to [`CMDLINE`]. /var stays a tmpfs, as on the
    /// initramfs path: the disk is attached read-only, so its VAR could not
    /// mount, and the figures compare root paths only.
    pub fn cmdline(self) -> &'static str {
        match self {
            Root::Initramfs => "",
            Root::Ram => "basalt.image=partlabel:ROOT-A basalt.root=ram basalt.var=tmpfs",
            Root::Disk => "basalt.image=partlabel:ROOT-A basalt.root=disk basalt.var=tmpfs",
        }
    }

    pub fn label(self, init: Init) -> &'static str {
        match (self, init) {
            (Root::Initramfs, Init::Basalt) => "basalt, initramfs",
            (Root::Initramfs, Init::Busybox) => "busybox, initramfs",
            (Root::Ram, _) => "basalt, disk, ram mode",
            (Root::Disk, _) => "basalt, disk, disk mode",
        }
    }
}

/// The same command line for both inits. basalt.* keys mean nothing to
/// the baseline (the kernel keeps dotted keys from init's environment).
pub const CMDLINE: &str = "quiet basalt.on_error=poweroff basalt.error_delay=0";

/// One boot to run.
#[derive(Debug, Clone)]
pub struct BootPlan {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The slot disk, attached read-only on virtio-blk, and what the
    /// command line adds for it.
    pub disk: Option<PathBuf>,
    pub append: &'static str,
    pub memory_mib: u32,
    pub log: PathBuf,
    pub accel_cache: PathBuf,
    pub timeout: Duration,
}

/// A finished boot.
#[derive(Debug, Clone)]
pub struct Booted {
    pub outcome: Outcome,
    pub accel: AccelChoice,
    /// QEMU start to exit, for progress lines and the time budget.
    pub wall: Duration,
}

/// Boots, waits for the fixture's BENCH-DONE and for QEMU to exit.
pub fn boot(plan: &BootPlan) -> Result<Booted, BenchError> {
    let _ = std::fs::remove_file(&plan.log);
    let what = format!("boot {}", plan.initrd.display());
    let mut cfg = VmConfig::new(&plan.kernel)
        .initrd(&plan.initrd)
        .append(CMDLINE)
        .memory_mib(plan.memory_mib)
        .console_log(&plan.log)
        .accel_cache(&plan.accel_cache);
    if let Some(disk) = &plan.disk {
        cfg = cfg.disk(disk).append(plan.append);
    }
    let started = Instant::now();
    let vm = Vm::start(cfg).map_err(|source| BenchError::Vm {
        what: what.clone(),
        source,
    })?;
    let fail = |why: String| BenchError::Boot {
        what: what.clone(),
        why,
        log: plan.log.clone(),
    };
    let first_line = |e: &dyn std::fmt::Display| e.to_string().lines().next().unwrap_or_default().to_string();
    if let Err(e) = vm.wait_for_console(line::DONE, plan.timeout) {
        // A fixture that failed printed BENCH-ERROR and powered off: say why.
        let why = line::parse_console(&vm.console_text()).err().unwrap_or_default();
        return Err(fail(format!("{why}; {}", first_line(&e))));
    }
    vm.wait_for_exit(Duration::from_secs(60)).map_err(|e| {
        fail(format!(
            "QEMU did not exit after the fixture powered off: {}",
            first_line(&e)
        ))
    })?;
    let wall = started.elapsed();
    let outcome = line::parse_console(&vm.console_text()).map_err(fail)?;
    let accel = vm.accel().clone();
    Ok(Booted { outcome, accel, wall })
}

/// Guest memory for an image: the initramfs (image inside) is unpacked into
/// RAM and the loop device reads it from there, so the image is held
/// about twice over; three times plus 512 MiB leaves room. The same for
/// both inits.
pub fn memory_for(image_bytes: u64) -> u32 {
    let mib = image_bytes.div_ceil(1 << 20);
    u32::try_from(mib * 3 + 512).unwrap_or(u32::MAX)
}

/// How long a boot may take before it counts as hung: generous, since
/// TCG unpacks and hashes the image at tens of MiB/s.
pub fn timeout_for(image_bytes: u64) -> Duration {
    Duration::from_secs(120) + Duration::from_millis(image_bytes / (1 << 20) * 500)
}

pub fn log_path(dir: &Path, init: Init, root: Root, image_mib: u64, run: usize) -> PathBuf {
    dir.join(format!("{}-{}-{image_mib}m-{run}.log", init.as_str(), root.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_and_timeouts_grow_with_the_image() {
        let mib = 1u64 << 20;
        let cases = [
            (64 * mib, 704),
            (512 * mib, 2048),
            (1024 * mib, 3584),
            (64 * mib + 1, 707),
        ];
        for (bytes, want) in cases {
            assert_eq!(memory_for(bytes), want, "{bytes}");
        }
        assert_eq!(timeout_for(0), Duration::from_secs(120));
        assert_eq!(timeout_for(1024 * mib), Duration::from_secs(632));
    }
}
