//! basalt-init: the boot script. Each line is one step of docs/architecture.md;
//! each step is timed, logged, and fatal on failure (boot.rs).
// A node program that panics takes the node down: failures are values.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use basalt_init::boot_params::ImageSource;
use basalt_init::root::MountedRoot;
use basalt_init::{
    boot::Boot, boot_params, boot_report, console, harden, image, log, loopdev, modules, mounts, supervise, switchroot,
    uptime, var, verity,
};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Where the verified root is mounted before it becomes `/`.
const NEWROOT: &str = "/newroot";

fn main() {
    let init_start = uptime::now();
    if std::process::id() != 1 {
        // Mounting and deleting "the initramfs" anywhere else would be a disaster.
        eprintln!("basalt-init: must run as PID 1 (this is pid {})", std::process::id());
        std::process::exit(1);
    }
    console::take_signals();
    log::install(false);
    let mut boot = Boot::new(init_start);
    let outcome = catch_unwind(AssertUnwindSafe(|| boot_node(&mut boot)));
    // boot_node never returns; only a panic (a bug) gets here.
    let cause = outcome.err().map(|p| panic_text(&*p)).unwrap_or_default();
    boot.fatal("panic", &cause)
}

fn boot_node(boot: &mut Boot) -> ! {
    // a. Early filesystems, then the sinks that need them.
    boot.step("mount-early", || {
        mounts::mount_all(&mut mounts::RealMounts, &mounts::early_mounts("20%"))
    });
    console::ensure_stdio("/dev/console");
    log::open_kmsg("/dev/kmsg", "/proc/sys/kernel");
    log::open_file("/run/basalt/log/init.log");
    ::log::info!(
        "basalt-init {} started at {:.3} s",
        env!("CARGO_PKG_VERSION"),
        boot.init_start.as_secs_f64()
    );

    // b. Kernel command line.
    let line = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    boot.on_error = boot_params::on_error_policy(&line);
    let params = boot.step("cmdline", || boot_params::parse(&line));
    boot.error_delay = params.error_delay;
    log::set_debug(params.debug);
    if params.run_size != "20%" {
        boot.step("resize-run", || mounts::resize_tmpfs("/run", &params.run_size));
    }

    // c. The signed manifest, then its modules.
    let signed = boot.step("manifest", || image::load_signed_manifest("/", image::baked_key()));
    let manifest = &signed.manifest;
    ::log::info!(
        "manifest: image {} ({} bytes), {} modules",
        manifest.version,
        manifest.image.size,
        manifest.modules.len()
    );
    // ext4's modules wait for a VAR partition (var.rs).
    let (boot_modules, var_modules) = var::split_modules(&manifest.modules);
    let mut loaded = boot.step("modules", || modules::load_all("/", &boot_modules));

    // d, e. The root, checked and mounted read-only at NEWROOT.
    let root = match &params.image {
        // A root slot: its signed tail must be the initramfs's manifest;
        // dm-verity then checks each block as it is read.
        ImageSource::PartLabel(label) => {
            let part = boot.step("find-slot", || verity::find_slot(label, params.image_wait));
            let slot = boot.step("slot-manifest", || {
                verity::check_slot(&part, &signed, image::baked_key())
            });
            let root = boot.step("mount-root", || {
                verity::mount_root(NEWROOT, &slot, &manifest.image, params.root, params.verify)
            });
            // A block refused from here on is fatal as well (watch.rs).
            let (on_error, delay) = (boot.on_error, boot.error_delay);
            boot.step("verity-watch", || {
                let watched = verity::watch::Watched {
                    label: slot.partition.label.clone(),
                    node: slot.partition.node.clone(),
                    devname: format!("dm-{}", root.mapped.minor),
                };
                verity::watch::spawn(watched, on_error, delay)
            });
            MountedRoot::Slot { slot, root }
        }
        // An image file: hashed whole (and copied into RAM if it is on a
        // disk), then a read-only loop device and a read-only squashfs.
        _ => {
            let image = boot.step("verify-image", || {
                image::verify_image("/", &params.image, &manifest.image, params.image_wait)
            });
            let loopdev = boot.step("mount-root", || loopdev::mount_root(NEWROOT, &image));
            MountedRoot::Image { image, loopdev }
        }
    };

    // f. The writable mounts: /tmp, then /var (the VAR partition or a tmpfs).
    boot.step("mount-writable", || {
        mounts::mount_all(
            &mut mounts::RealMounts,
            &mounts::writable_mounts(NEWROOT, &params.tmp_size),
        )
    });
    let var = boot.step("find-var", || {
        var::choose(
            &params.var,
            Path::new("/sys/class/block"),
            Path::new("/dev"),
            params.image_wait,
        )
    });
    if matches!(var, var::VarChoice::Partition { .. }) {
        loaded.extend(boot.step("var-modules", || modules::load_all("/", &var_modules)));
    }
    let var = boot.step("mount-var", || {
        var::mount(&mut mounts::RealMounts, NEWROOT, var, &params.var_size)
    });
    ::log::info!("var: {} on /var (nosuid,nodev): {}", var.fstype, var.note);

    // g. Switch root.
    let removed = boot.step("switch-root", || {
        switchroot::switch_root(&mut switchroot::RealRoot, NEWROOT)
    });
    ::log::info!(
        "initramfs removed: {} files, {} KiB freed",
        removed.files,
        removed.bytes / 1024
    );

    // h. Harden.
    let sysctls = boot.step("sysctls", || {
        let report = harden::apply_sysctls("/proc/sys", harden::SYSCTLS);
        match report.fatal() {
            Some(f) => Err(format!("sysctl {}: {}", f.key, f.reason)),
            None => Ok(report),
        }
    });
    let lockdown = boot.step("lockdown", || {
        harden::raise_lockdown("/sys/kernel/security/lockdown", params.lockdown)
    });
    ::log::info!("lockdown: {lockdown}");

    // i. The boot report. It names the handoff program, so that is checked first.
    let handoff = params.agent.clone().unwrap_or_else(|| manifest.handoff.clone());
    boot.step("handoff-check", || executable(&handoff));
    let handoff_at = uptime::now();
    let facts = boot_report::BootFacts {
        init_start: boot.init_start,
        handoff_at,
        steps: &boot.steps,
        kernel_release: kernel_release(),
        image_version: &manifest.version,
        image_sha256: manifest.image.sha256,
        image_size: manifest.image.size,
        image_origin: root.origin(),
        image_copied: root.copied_to_ram(),
        loop_device: root.loop_device(),
        root_device: root.device(),
        verity: root.verity(),
        var: &var,
        modules: &loaded,
        lockdown: &lockdown,
        sysctls: &sysctls,
        initramfs_removed: removed,
        handoff: &handoff,
    };
    // Written before the handoff, which serves it.
    if let Err(e) = boot_report::write(boot_report::PATH, &boot_report::build(&facts)) {
        ::log::error!("write {}: {e}", boot_report::PATH);
    }
    ::log::info!(
        "pid1 phase {:.1} ms; handing off to {handoff}",
        handoff_at.saturating_sub(boot.init_start).as_secs_f64() * 1e3
    );
    drop(root);
    // j. Hand off, and stay PID1.
    supervise::run(&handoff, supervise::HANDOFF_BACKOFF, params.shutdown_timeout)
}

fn executable(path: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err(format!("handoff {path} is not an executable file")),
        Err(e) => Err(format!("handoff {path}: {e}")),
    }
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("bug: panic: {msg}")
}
