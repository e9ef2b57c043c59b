#![cfg(feature = "host")]
//! The suite, in order: check inputs, measure sizes, hash, build images and
//! slot disks and boot them, talk to the agent, write the results.

use crate::boots::{self, BootPlan, Init, Root};
use crate::cli::{BootOptions, Paths, RenderOptions, RunOptions};
use crate::error::{io_err, missing, run as run_cmd, BenchError};
use crate::hashing::{self, HashPlan};
use crate::images::{self, BuildInputs};
use crate::results::{self, BootRecord, Raw};
use crate::{agent, report, sizes, svg, upgrade};
use basalt_qemu::{AccelChoice, VmConfig};
use std::path::{Path, PathBuf};
use std::time::Instant;

const MIB: u64 = 1 << 20;

/// Image sizes booted with both inits (part 1), and with basalt only for
/// the scaling curve (part 7, which also uses part 1's boots).
pub const COMPARE_MIB: [u64; 2] = [64, 512];
pub const SCALE_MIB: [u64; 2] = [256, 1024];
/// Sizes also booted from a slot disk, in both root modes (part 8).
pub const DISK_MIB: [u64; 3] = [64, 256, 1024];

/// One padded root image and what was built around it.
#[derive(Debug, Clone)]
pub struct SizedImage {
    pub nominal_mib: u64,
    pub bytes: u64,
    squashfs: PathBuf,
    basalt: PathBuf,
    busybox: Option<PathBuf>,
    /// The slot disk, and the folder of its parts (the UKI's initramfs).
    disk: Option<(PathBuf, PathBuf)>,
}

impl SizedImage {
    /// The initramfs that boots `init` from `root`, and the slot disk.
    fn boots(&self, init: Init, root: Root) -> (PathBuf, Option<PathBuf>) {
        match (root, init, &self.disk) {
            (Root::Initramfs, Init::Basalt, _) => (self.basalt.clone(), None),
            (Root::Initramfs, Init::Busybox, _) => (self.busybox.clone().unwrap_or_default(), None),
            (_, _, Some((disk, parts))) => (parts.join("initrd.img"), Some(disk.clone())),
            _ => Default::default(),
        }
    }

    fn files(&self) -> impl Iterator<Item = &PathBuf> {
        let disk = self.disk.iter().flat_map(|(disk, parts)| [parts, disk]);
        [&self.squashfs, &self.basalt]
            .into_iter()
            .chain(&self.busybox)
            .chain(disk)
    }
}

/// Builds padded images from one staged rootfs, and deletes every image it
/// built when dropped (they run to GiBs).
pub struct ImageFactory {
    stage: PathBuf,
    dir: PathBuf,
    unpadded: u64,
    inputs: BuildInputs,
    busybox: PathBuf,
    pub built: Vec<SizedImage>,
}

impl ImageFactory {
    pub fn prepare(paths: &Paths, dir: &Path) -> Result<ImageFactory, BenchError> {
        std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let stage = dir.join("rootfs");
        let handoff = (paths.handoff.as_path(), images::HANDOFF);
        images::stage_rootfs(&paths.build.join("rootfs"), handoff, &stage)?;
        let scratch = dir.join("unpadded.sqsh");
        let unpadded = images::padded_image(&stage, 0, &scratch)?;
        std::fs::remove_file(&scratch).map_err(io_err("remove", &scratch))?;
        let inputs = BuildInputs::of(paths);
        let (dir, busybox, built) = (dir.to_path_buf(), paths.busybox.clone(), Vec::new());
        Ok(ImageFactory {
            stage,
            dir,
            unpadded,
            inputs,
            busybox,
            built,
        })
    }

    /// The image of `mib` MiB, basalt's initramfs, and the baseline's and
    /// the slot disk if asked.
    pub fn build(&mut self, mib: u64, with_baseline: bool, with_disk: bool) -> Result<&SizedImage, BenchError> {
        let t = Instant::now();
        let at = |name: String| self.dir.join(name);
        let (squashfs, basalt) = (at(format!("root-{mib}m.sqsh")), at(format!("basalt-{mib}m.img")));
        let busybox = with_baseline.then(|| at(format!("busybox-{mib}m.img")));
        let disk = with_disk.then(|| (at(format!("disk-{mib}m.img")), at(format!("disk-{mib}m"))));
        let padding = images::padding_for(mib * MIB, self.unpadded);
        let bytes = images::padded_image(&self.stage, padding, &squashfs)?;
        let report = images::basalt_initramfs(&self.inputs, &squashfs, &basalt)?;
        if let Some(out) = &busybox {
            let digest = &report.manifest.image.sha256;
            images::baseline_initramfs(&self.busybox, &squashfs, digest, &report.modules, out)?;
        }
        if let Some((disk, parts)) = &disk {
            images::slot_disk(&self.inputs, &squashfs, parts, disk)?;
        }
        let secs = t.elapsed().as_secs_f64();
        progress(&format!("built the {mib} MiB image ({bytes} bytes) in {secs:.1} s"));
        let nominal_mib = mib;
        let image = SizedImage {
            nominal_mib,
            bytes,
            squashfs,
            basalt,
            busybox,
            disk,
        };
        self.built.push(image);
        Ok(&self.built[self.built.len() - 1])
    }
}

impl Drop for ImageFactory {
    fn drop(&mut self) {
        for file in self.built.iter().flat_map(SizedImage::files) {
            let _ = std::fs::remove_file(file).or_else(|_| std::fs::remove_dir_all(file));
        }
    }
}

pub fn check_inputs(paths: &Paths) -> Result<(), BenchError> {
    let b = |rel: &str| paths.build.join(rel);
    missing(vec![
        ("kernel", b("vmlinuz"), "run `make image`"),
        ("basalt-init", b("bin/basalt-init"), "run `make image`"),
        ("image key", b("keys/image.key"), "run `make image`"),
        ("rootfs", b("rootfs"), "run `make image`"),
        ("handoff fixture", paths.handoff.clone(), "run `make bench`"),
        ("option fragment", paths.fragment.clone(), "kernel-config/basalt.config"),
        ("kernel modules", paths.modules_dir.clone(), "run `make kernel`"),
        ("busybox", paths.busybox.clone(), "install busybox-static"),
        (
            "UKI stub",
            basalt_mkimage::uki::DEFAULT_STUB.into(),
            "install systemd-boot-efi",
        ),
        (
            "systemd-boot",
            basalt_mkimage::esp::DEFAULT_LOADER.into(),
            "install systemd-boot-efi",
        ),
    ])
}

pub fn plan(paths: &Paths, image: &SizedImage, init: Init, root: Root, log: PathBuf) -> BootPlan {
    let (initrd, disk) = image.boots(init, root);
    BootPlan {
        kernel: paths.build.join("vmlinuz"),
        initrd,
        disk,
        append: root.cmdline(),
        memory_mib: boots::memory_for(image.bytes),
        log,
        accel_cache: paths.build.join("qemu-accel"),
        timeout: boots::timeout_for(image.bytes),
    }
}

/// `basalt-bench boot`: one image, one boot, what the fixture printed.
pub fn boot_one(o: &BootOptions) -> Result<(), BenchError> {
    check_inputs(&o.paths)?;
    let dir = o.paths.build.join("bench");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(io_err("create", &logs))?;
    let mut factory = ImageFactory::prepare(&o.paths, &dir)?;
    let image = factory.build(o.size_mib, o.init == Init::Busybox, o.root != Root::Initramfs)?;
    let log = boots::log_path(&logs, o.init, o.root, o.size_mib, 0);
    let plan = plan(&o.paths, image, o.init, o.root, log);
    let booted = boots::boot(&plan)?;
    let (p, wall) = (booted.outcome.phase, booted.wall.as_secs_f64());
    println!(
        "{} {} MiB: pid1 phase {:.1} ms, wall {wall:.1} s, accel {} ({})",
        o.root.label(o.init),
        o.size_mib,
        results::ms(p.pid1_phase_us()),
        booted.accel.accel,
        booted.accel.reason
    );
    println!("{}", serde_json::to_string_pretty(&booted.outcome).unwrap_or_default());
    Ok(())
}

fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}

/// Runs one part of the suite and records how long it took.
fn part(raw: &mut Raw, name: &str, f: impl FnOnce(&mut Raw) -> Result<(), BenchError>) -> Result<(), BenchError> {
    let t = Instant::now();
    f(raw)?;
    raw.part_seconds.push((name.into(), t.elapsed().as_secs_f64()));
    Ok(())
}

/// `basalt-bench run`: the whole suite, then the results files.
pub fn run(o: &RunOptions) -> Result<(), BenchError> {
    let started = Instant::now();
    let dir = o.paths.build.join("bench");
    std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let qemu = run_cmd(std::process::Command::new("qemu-system-x86_64").arg("--version")).unwrap_or_default();
    let mut raw = Raw {
        guest_cpus: VmConfig::new("").cpus,
        kernel_release: basalt_mkimage::assemble::kernel_release(&o.paths.modules_dir).unwrap_or_default(),
        qemu_version: qemu.lines().next().unwrap_or_default().trim().to_string(),
        host_cpu: hashing::cpu_model(Path::new("/proc/cpuinfo")),
        host_cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        ..Raw::default()
    };
    if o.parts.sizes {
        progress("part 4: sizes");
        part(&mut raw, "sizes", |raw| measure_sizes(&o.paths, &dir, raw))?;
    }
    if o.parts.hash {
        progress(&format!(
            "part 3: hashing a {} MiB file, {} rounds",
            o.hash_mib, o.hash_rounds
        ));
        let plan = HashPlan {
            file: PathBuf::from("/dev/shm/basalt-bench-hash.bin"),
            copy_to: PathBuf::from("/dev/shm/basalt-bench-hash.copy"),
            bytes: o.hash_mib * MIB,
            rounds: o.hash_rounds,
            busybox: o.paths.busybox.clone(),
        };
        part(&mut raw, "hashing", |raw| {
            raw.hash = Some(hashing::run_all(&plan, &mut |m| progress(m))?);
            Ok(())
        })?;
    }
    if o.parts.boot || o.parts.disk {
        check_inputs(&o.paths)?;
        part(&mut raw, "boots", |raw| run_boots(o, &dir, raw))?;
    }
    // Parts 5, 6 and 9 last. A failure there still writes everything else.
    let failure = match o.parts.agent {
        true => agent_part(o, &dir, &mut raw),
        false => {
            raw.agent_missing = Some("not run (--parts)".into());
            None
        }
    };
    let failure = match o.parts.upgrade {
        true => upgrade_part(o, &dir, &mut raw).or(failure),
        false => {
            raw.upgrade_missing = Some("not run (--parts)".into());
            failure
        }
    };
    raw.suite_seconds = started.elapsed().as_secs_f64();
    write_results(&o.out, &raw)?;
    let results = o.out.join("results.md");
    progress(&format!(
        "done in {:.1} min: {}",
        raw.suite_seconds / 60.0,
        results.display()
    ));
    failure.map_or(Ok(()), Err)
}

/// Parts 5 and 6: their figures, or why there are none (and the error
/// that ended them, if one did).
fn agent_part(o: &RunOptions, dir: &Path, raw: &mut Raw) -> Option<BenchError> {
    progress("parts 5 and 6: memory and apply latency through the agent");
    let checked = agent::check_inputs(&o.paths.build);
    let measure = || agent::measure(&o.paths.build, dir, o.agent_runs, &mut |m| progress(m));
    guarded(
        raw,
        ("agent", "parts 5 and 6"),
        checked,
        measure,
        |raw| &mut raw.agent_missing,
        |raw, runs| raw.agent = Some(runs),
    )
}

/// Part 9: the same.
fn upgrade_part(o: &RunOptions, dir: &Path, raw: &mut Raw) -> Option<BenchError> {
    progress(&format!("part 9: upgrades over vsock, {} runs", o.upgrade_runs));
    let checked = upgrade::check_inputs(&o.paths.build);
    let measure = || {
        let (runs, accel) = upgrade::measure(&o.paths, dir, o.upgrade_runs, &mut |m| progress(m))?;
        Ok((runs, Some(accel)))
    };
    guarded(
        raw,
        ("upgrade", "part 9"),
        checked,
        measure,
        |raw| &mut raw.upgrade_missing,
        |raw, runs| raw.upgrade = Some(runs),
    )
}

/// A part that may not run (`checked`: its inputs are missing) or may fail
/// without ending the suite: why goes into `missing`, the figures through
/// `store`, the accelerator into `raw` if no boot set it; the error that
/// ended it is returned.
fn guarded<T>(
    raw: &mut Raw,
    (name, label): (&str, &str),
    checked: Result<(), BenchError>,
    measure: impl FnOnce() -> Result<(T, Option<AccelChoice>), BenchError>,
    missing: fn(&mut Raw) -> &mut Option<String>,
    store: impl FnOnce(&mut Raw, T),
) -> Option<BenchError> {
    if let Err(why) = checked {
        progress(&format!("{label} not measured: {why}"));
        *missing(raw) = Some(why.to_string());
        return None;
    }
    let mut failure = None;
    let measured = part(raw, name, |raw| {
        match measure() {
            Ok((runs, accel)) => {
                if let (true, Some(accel)) = (raw.accel.is_empty(), accel) {
                    (raw.accel, raw.accel_reason) = (accel.accel.to_string(), accel.reason);
                }
                store(raw, runs);
            }
            Err(e) => {
                *missing(raw) = Some(format!("failed: {e}"));
                failure = Some(e);
            }
        }
        Ok(())
    });
    measured.err().or(failure)
}

/// One boot of the schedule: image size, init, root, 0-based run.
pub type Planned = (u64, Init, Root, usize);

/// The boots of parts 1, 7 and 8, in order: round by round, each round
/// visiting every size from the smallest, so a spell of load on the shared
/// machine falls on all sizes and paths alike rather than on one. Compared
/// sizes boot both inits, basalt first in even rounds and busybox first in
/// odd ones (ABBA); the extra sizes boot basalt only; disk sizes then boot
/// the slot disk in both root modes, ram first in even rounds.
pub fn schedule(compare: &[u64], scale: &[u64], disk: &[u64], runs: usize, scale_runs: usize) -> Vec<Planned> {
    let mut sizes: Vec<u64> = [compare, scale, disk].concat();
    sizes.sort_unstable();
    sizes.dedup();
    let mut out = Vec::new();
    for run in 0..runs.max(scale_runs) {
        for &mib in &sizes {
            let mut push = |init, root| out.push((mib, init, root, run));
            if compare.contains(&mib) && run < runs {
                for init in abba(run, Init::Basalt, Init::Busybox) {
                    push(init, Root::Initramfs);
                }
            } else if scale.contains(&mib) && run < scale_runs {
                push(Init::Basalt, Root::Initramfs);
            }
            if disk.contains(&mib) && run < runs {
                for root in abba(run, Root::Ram, Root::Disk) {
                    push(Init::Basalt, root);
                }
            }
        }
    }
    out
}

/// `a` first in even rounds, `b` first in odd ones.
fn abba<T>(run: usize, a: T, b: T) -> [T; 2] {
    match run % 2 {
        0 => [a, b],
        _ => [b, a],
    }
}

/// Parts 1, 2, 7 and 8: build every size, boot them as [`schedule`]
/// says, delete them.
fn run_boots(o: &RunOptions, dir: &Path, raw: &mut Raw) -> Result<(), BenchError> {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(io_err("create", &logs))?;
    let chosen = |sizes: &[u64], part: bool| {
        let chosen = sizes.iter().copied().filter(|m| part && o.sizes.contains(m));
        chosen.collect::<Vec<_>>()
    };
    (raw.compare_mib, raw.scale_mib) = (chosen(&COMPARE_MIB, o.parts.boot), chosen(&SCALE_MIB, o.parts.boot));
    raw.disk_mib = chosen(&DISK_MIB, o.parts.disk);
    progress("parts 1, 2, 7, 8: staging the rootfs");
    let mut factory = ImageFactory::prepare(&o.paths, dir)?;
    let mut sizes = [&raw.compare_mib[..], &raw.scale_mib, &raw.disk_mib].concat();
    sizes.sort_unstable();
    sizes.dedup();
    for mib in sizes {
        factory.build(mib, raw.compare_mib.contains(&mib), raw.disk_mib.contains(&mib))?;
    }
    let order = schedule(&raw.compare_mib, &raw.scale_mib, &raw.disk_mib, o.runs, o.scale_runs);
    for (done, &(mib, init, root, run)) in order.iter().enumerate() {
        let Some(image) = factory.built.iter().find(|i| i.nominal_mib == mib) else {
            continue;
        };
        let plan = plan(
            &o.paths,
            image,
            init,
            root,
            boots::log_path(&logs, init, root, mib, run),
        );
        let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let booted = boots::boot(&plan)?;
        progress(&format!(
            "boot {}/{}: {} {mib} MiB run {}: kernel to /init {:.0} ms, PID1 phase {:.0} ms ({:.1} s wall, {})",
            done + 1,
            order.len(),
            root.label(init),
            run + 1,
            results::ms(booted.outcome.phase.run_init_us),
            results::ms(booted.outcome.phase.pid1_phase_us()),
            booted.wall.as_secs_f64(),
            booted.accel.accel
        ));
        if raw.accel.is_empty() {
            (raw.accel, raw.accel_reason) = (booted.accel.accel.to_string(), booted.accel.reason.clone());
        }
        raw.boots.push(BootRecord {
            init,
            root,
            mib,
            image_bytes: image.bytes,
            memory_mib: plan.memory_mib,
            run,
            outcome: booted.outcome,
            wall_s: booted.wall.as_secs_f64(),
            host_load: results::parse_loadavg(&loadavg),
        });
    }
    Ok(())
}

/// Part 4, from what `make image` left in the build directory.
fn measure_sizes(paths: &Paths, dir: &Path, raw: &mut Raw) -> Result<(), BenchError> {
    for name in ["basalt-init", "basalt-agent", "basaltctl"] {
        let path = paths.build.join("bin").join(name);
        match path.exists() {
            true => raw.binaries.push(sizes::binary_size(name, &path, &dir.join("strip"))?),
            false => raw
                .binaries_missing
                .push((name.into(), format!("{} not built", path.display()))),
        }
    }
    let initramfs = paths.build.join("initramfs.img");
    match initramfs.exists() {
        true => raw.initramfs = Some(sizes::initramfs_breakdown(&initramfs)?),
        false => raw.initramfs_missing = Some(format!("{} not built (run `make image`)", initramfs.display())),
    }
    Ok(())
}

/// `basalt-bench render`: the results files again, from a run's results.json.
pub fn render(o: &RenderOptions) -> Result<(), BenchError> {
    let text = std::fs::read_to_string(&o.json).map_err(io_err("read", &o.json))?;
    let what = o.json.display().to_string();
    let raw = report::load(&text).map_err(|why| BenchError::Parse { what, why })?;
    write_results(&o.out, &raw)
}

pub fn write_results(out: &Path, raw: &Raw) -> Result<(), BenchError> {
    std::fs::create_dir_all(out).map_err(io_err("create", out))?;
    let a = results::analyse(raw);
    let files = [
        ("results.md", report::markdown(raw, &a)),
        ("results.json", report::json(raw, &a)),
        ("timeline.svg", svg::timeline(&a, &raw.accel)),
        ("scaling.svg", svg::scaling(&a, &raw.accel)),
        ("disk.svg", svg::disk(&a, &raw.accel)),
    ];
    for (name, body) in files {
        let path = out.join(name);
        std::fs::write(&path, body).map_err(io_err("write", &path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boots_alternate_and_rounds_visit_every_size() {
        use Init::{Basalt as A, Busybox as B};
        use Root::{Disk as D, Initramfs as I, Ram as R};
        let got = schedule(&[64, 512], &[256], &[64], 3, 2);
        let want = [
            [
                (64, A, I, 0),
                (64, B, I, 0),
                (64, A, R, 0),
                (64, A, D, 0),
                (256, A, I, 0),
            ],
            [
                (64, B, I, 1),
                (64, A, I, 1),
                (64, A, D, 1),
                (64, A, R, 1),
                (256, A, I, 1),
            ],
        ];
        let mid = [(512, A, I, 0), (512, B, I, 0)];
        let last = [(64, A, I, 2), (64, B, I, 2), (64, A, R, 2), (64, A, D, 2)];
        let round1 = [(512, B, I, 1), (512, A, I, 1)];
        let tail = [(512, A, I, 2), (512, B, I, 2)];
        assert_eq!(got, [&want[0][..], &mid, &want[1], &round1, &last, &tail].concat());
        // The default suite: five of each init per compared size, three
        // basalt boots per extra size, five per root mode per disk size.
        let all = schedule(&COMPARE_MIB, &SCALE_MIB, &DISK_MIB, 5, 3);
        assert_eq!(all.len(), 2 * 5 * 2 + 2 * 3 + 3 * 2 * 5);
        for mib in COMPARE_MIB {
            for init in [A, B] {
                assert_eq!(all.iter().filter(|b| b.0 == mib && b.1 == init && b.2 == I).count(), 5);
            }
        }
        // More extra-size runs than compared ones: the later rounds hold
        // only the extra sizes.
        let tail = schedule(&[64], &[256], &[], 1, 2);
        assert_eq!(tail, [(64, A, I, 0), (64, B, I, 0), (256, A, I, 0), (256, A, I, 1)]);
    }
}
