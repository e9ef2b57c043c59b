#![cfg(feature = "host")]
//! The suite, in order: check inputs, build images, boot, hash, measure
//! sizes, talk to the agent, write the results.

use crate::agent;
use crate::boots::{self, BootPlan, Booted, Init};
use crate::cli::{BootOptions, Paths, RenderOptions, RunOptions};
use crate::error::{io_err, BenchError};
use crate::hashing::{self, HashPlan};
use crate::images::{self, BuildInputs};
use crate::results::{self, BootRecord, Raw};
use crate::{report, sizes, svg};
use basalt_qemu::VmConfig;
use std::path::{Path, PathBuf};
use std::time::Instant;

const MIB: u64 = 1 << 20;

/// One padded root image and the initramfs built around it.
#[derive(Debug, Clone)]
pub struct SizedImage {
    pub nominal_mib: u64,
    pub squashfs: PathBuf,
    pub bytes: u64,
    pub basalt: PathBuf,
    pub busybox: Option<PathBuf>,
}

/// Builds padded images on demand from one staged rootfs.
pub struct ImageFactory {
    stage: PathBuf,
    dir: PathBuf,
    unpadded: u64,
    inputs: BuildInputs,
    busybox: PathBuf,
}

impl ImageFactory {
    pub fn prepare(paths: &Paths, dir: &Path) -> Result<ImageFactory, BenchError> {
        std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let stage = dir.join("rootfs");
        images::stage_rootfs(&paths.build.join("rootfs"), &paths.handoff, &stage)?;
        let unpadded = images::unpadded_size(&stage, &dir.join("unpadded.sqsh"))?;
        Ok(ImageFactory {
            stage,
            dir: dir.to_path_buf(),
            unpadded,
            inputs: BuildInputs {
                init: paths.build.join("bin/basalt-init"),
                modules_dir: paths.modules_dir.clone(),
                kconfig: paths.kconfig.clone(),
                fragment: paths.fragment.clone(),
                image_key: paths.build.join("keys/image.key"),
            },
            busybox: paths.busybox.clone(),
        })
    }

    /// The image of `mib` MiB, basalt's initramfs, and the baseline's if asked.
    pub fn build(&self, mib: u64, with_baseline: bool) -> Result<SizedImage, BenchError> {
        let squashfs = self.dir.join(format!("root-{mib}m.sqsh"));
        let bytes = images::padded_image(&self.stage, mib * MIB, self.unpadded, &squashfs)?;
        let basalt = self.dir.join(format!("basalt-{mib}m.img"));
        let report = images::basalt_initramfs(&self.inputs, &squashfs, &basalt)?;
        let busybox = if with_baseline {
            let out = self.dir.join(format!("busybox-{mib}m.img"));
            images::baseline_initramfs(
                &self.busybox,
                &squashfs,
                &report.manifest.image.sha256,
                &report.modules,
                &out,
            )?;
            Some(out)
        } else {
            None
        };
        Ok(SizedImage {
            nominal_mib: mib,
            squashfs,
            bytes,
            basalt,
            busybox,
        })
    }

    /// Removes a size's files once its boots are done (they run to GiBs).
    pub fn discard(&self, image: &SizedImage) {
        for p in [Some(&image.squashfs), Some(&image.basalt), image.busybox.as_ref()]
            .into_iter()
            .flatten()
        {
            let _ = std::fs::remove_file(p);
        }
    }
}

pub fn check_inputs(paths: &Paths) -> Result<(), BenchError> {
    let need: [(&'static str, PathBuf, &'static str); 8] = [
        ("kernel", paths.build.join("vmlinuz"), "run `make image`"),
        ("basalt-init", paths.build.join("bin/basalt-init"), "run `make image`"),
        ("image key", paths.build.join("keys/image.key"), "run `make image`"),
        ("rootfs", paths.build.join("rootfs"), "run `make image`"),
        ("handoff fixture", paths.handoff.clone(), "run `make bench`"),
        ("option fragment", paths.fragment.clone(), "kernel-config/basalt.config"),
        ("kernel modules", paths.modules_dir.clone(), "run `make kernel`"),
        ("busybox", paths.busybox.clone(), "install busybox-static"),
    ];
    for (what, path, hint) in need {
        if !path.exists() {
            return Err(BenchError::MissingInput { what, path, hint });
        }
    }
    Ok(())
}

pub fn plan(paths: &Paths, image: &SizedImage, init: Init, log: PathBuf) -> BootPlan {
    let initrd = match init {
        Init::Basalt => image.basalt.clone(),
        Init::Busybox => image.busybox.clone().unwrap_or_default(),
    };
    BootPlan {
        kernel: paths.build.join("vmlinuz"),
        initrd,
        memory_mib: boots::memory_for(image.bytes),
        log,
        accel_cache: paths.build.join("qemu-accel"),
        timeout: boots::timeout_for(image.bytes),
    }
}

/// `basalt-bench boot`: one image, one boot, the parsed result printed.
pub fn boot_one(o: &BootOptions) -> Result<(), BenchError> {
    check_inputs(&o.paths)?;
    let dir = o.paths.build.join("bench");
    let t = Instant::now();
    let factory = ImageFactory::prepare(&o.paths, &dir)?;
    let image = factory.build(o.size_mib, o.init == Init::Busybox)?;
    eprintln!(
        "built {} MiB image ({} bytes) in {:.1} s",
        o.size_mib,
        image.bytes,
        t.elapsed().as_secs_f64()
    );
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(io_err("create", &logs))?;
    let plan = plan(&o.paths, &image, o.init, boots::log_path(&logs, o.init, o.size_mib, 0));
    let booted: Booted = boots::boot(&plan)?;
    let p = booted.outcome.phase;
    println!(
        "{} {} MiB: pid1 phase {:.1} ms (run_init {} us, handoff {} us, mono-printk {} us), wall {:.1} s, accel {} ({})",
        o.init.as_str(),
        o.size_mib,
        p.pid1_phase_us() as f64 / 1e3,
        p.run_init_us,
        p.handoff_us,
        p.mono_us as i64 - p.handoff_us as i64,
        booted.wall.as_secs_f64(),
        booted.accel.accel,
        booted.accel.reason
    );
    for (name, ts) in &booted.outcome.marks {
        println!("  mark {name}: +{:.1} ms", (ts - p.run_init_us) as f64 / 1e3);
    }
    if let Some(r) = &booted.outcome.report {
        println!(
            "  report: init_start {} us, handoff {} us, phase {:.1} ms",
            r.init_start_us,
            r.handoff_us,
            r.pid1_phase_us as f64 / 1e3
        );
        for s in &r.steps {
            println!("  step {}: {:.1} ms", s.name, s.duration_us as f64 / 1e3);
        }
    }
    factory.discard(&image);
    Ok(())
}

/// Image sizes booted with both inits (part 1), and with basalt only for
/// the scaling curve (part 7, which also uses part 1's boots).
pub const COMPARE_MIB: [u64; 2] = [64, 512];
pub const SCALE_MIB: [u64; 2] = [256, 1024];

fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}

/// `basalt-bench run`: the whole suite, then the results files.
pub fn run(o: &RunOptions) -> Result<(), BenchError> {
    let started = Instant::now();
    let dir = o.paths.build.join("bench");
    std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let mut raw = Raw {
        guest_cpus: VmConfig::new("").cpus,
        kernel_release: basalt_mkimage::assemble::kernel_release(&o.paths.modules_dir).unwrap_or_default(),
        qemu_version: first_line_of("qemu-system-x86_64", &["--version"]),
        host_cpu: hashing::cpu_model(Path::new("/proc/cpuinfo")),
        host_cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        ..Raw::default()
    };
    if o.parts.sizes {
        progress("part 4: sizes");
        let t = Instant::now();
        measure_sizes(&o.paths, &dir, &mut raw)?;
        raw.part_seconds.push(("sizes".into(), t.elapsed().as_secs_f64()));
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
        let t = Instant::now();
        raw.hash = Some(hashing::run(&plan, &mut |m| progress(m))?);
        raw.part_seconds.push(("hashing".into(), t.elapsed().as_secs_f64()));
    }
    if o.parts.boot {
        check_inputs(&o.paths)?;
        let t = Instant::now();
        run_boots(o, &dir, &mut raw)?;
        raw.part_seconds.push(("boots".into(), t.elapsed().as_secs_f64()));
    }
    // Parts 5 and 6 last. A failure there still writes everything else.
    let mut failure = None;
    if o.parts.agent {
        progress("parts 5 and 6: memory and apply latency through the agent");
        match agent::inputs(&o.paths) {
            Err(agent::Unavailable(why)) => {
                progress(&format!("parts 5 and 6 not measured: {why}"));
                raw.agent_missing = Some(why);
            }
            Ok(inputs) => {
                let t = Instant::now();
                match agent::measure(&inputs, &dir, o.agent_runs, &mut |m| progress(m)) {
                    Ok(runs) => {
                        if raw.accel.is_empty() {
                            raw.accel = runs.accel.clone();
                            raw.accel_reason = runs.accel_reason.clone();
                        }
                        raw.agent = Some(runs);
                    }
                    Err(e) => {
                        raw.agent_missing = Some(format!("failed: {e}"));
                        failure = Some(e);
                    }
                }
                raw.part_seconds.push(("agent".into(), t.elapsed().as_secs_f64()));
            }
        }
    } else {
        raw.agent_missing = Some("not run (--parts)".into());
    }
    raw.suite_seconds = started.elapsed().as_secs_f64();
    write_results(&o.out, &raw)?;
    progress(&format!(
        "done in {:.1} min: {}",
        raw.suite_seconds / 60.0,
        o.out.join("results.md").display()
    ));
    failure.map_or(Ok(()), Err)
}

fn first_line_of(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// The boots of parts 1 and 7, in order: round by round, each round
/// visiting every size from the smallest, so a spell of load on the shared
/// machine falls on all sizes alike rather than on one. Compared sizes boot
/// both inits, basalt first in even rounds and busybox first in odd ones
/// (ABBA); the extra sizes boot basalt only.
pub fn schedule(compare: &[u64], scale: &[u64], runs: usize, scale_runs: usize) -> Vec<(u64, Init, usize)> {
    let mut sizes: Vec<(u64, bool)> = compare
        .iter()
        .map(|&m| (m, true))
        .chain(scale.iter().map(|&m| (m, false)))
        .collect();
    sizes.sort_unstable();
    let mut out = Vec::new();
    for run in 0..runs.max(scale_runs) {
        for &(mib, both) in &sizes {
            match (both, run % 2) {
                (true, _) if run >= runs => {}
                (false, _) if run >= scale_runs => {}
                (false, _) => out.push((mib, Init::Basalt, run)),
                (true, 0) => out.extend([(mib, Init::Basalt, run), (mib, Init::Busybox, run)]),
                (true, _) => out.extend([(mib, Init::Busybox, run), (mib, Init::Basalt, run)]),
            }
        }
    }
    out
}

/// Deletes the built images however the boots end.
struct Built<'a> {
    factory: &'a ImageFactory,
    images: Vec<SizedImage>,
}

impl Drop for Built<'_> {
    fn drop(&mut self) {
        for image in &self.images {
            self.factory.discard(image);
        }
    }
}

/// Parts 1, 2 and 7: build every size, boot them as [`schedule`] says,
/// delete them.
fn run_boots(o: &RunOptions, dir: &Path, raw: &mut Raw) -> Result<(), BenchError> {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(io_err("create", &logs))?;
    raw.compare_mib = COMPARE_MIB.to_vec();
    raw.scale_mib = SCALE_MIB.to_vec();
    progress("parts 1, 2, 7: staging the rootfs");
    let factory = ImageFactory::prepare(&o.paths, dir)?;
    let mut built = Built {
        factory: &factory,
        images: Vec::new(),
    };
    for &mib in COMPARE_MIB.iter().chain(&SCALE_MIB) {
        let t = Instant::now();
        let image = factory.build(mib, COMPARE_MIB.contains(&mib))?;
        progress(&format!(
            "built the {mib} MiB image ({} bytes) in {:.1} s",
            image.bytes,
            t.elapsed().as_secs_f64()
        ));
        built.images.push(image);
    }
    let order = schedule(&COMPARE_MIB, &SCALE_MIB, o.runs, o.scale_runs);
    for (done, &(mib, init, run)) in order.iter().enumerate() {
        let Some(image) = built.images.iter().find(|i| i.nominal_mib == mib) else {
            continue;
        };
        let plan = plan(&o.paths, image, init, boots::log_path(&logs, init, mib, run));
        let host_load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|t| results::parse_loadavg(&t));
        let booted = boots::boot(&plan)?;
        progress(&format!(
            "boot {}/{}: {} {mib} MiB run {}: PID1 phase {:.0} ms ({:.1} s wall, {})",
            done + 1,
            order.len(),
            init.as_str(),
            run + 1,
            booted.outcome.phase.pid1_phase_us() as f64 / 1e3,
            booted.wall.as_secs_f64(),
            booted.accel.accel
        ));
        if raw.accel.is_empty() {
            raw.accel = booted.accel.accel.to_string();
            raw.accel_reason = booted.accel.reason.clone();
        }
        raw.boots.push(BootRecord {
            init,
            mib,
            image_bytes: image.bytes,
            memory_mib: plan.memory_mib,
            run,
            outcome: booted.outcome,
            wall_s: booted.wall.as_secs_f64(),
            host_load,
        });
    }
    Ok(())
}

/// Part 4, from what `make image` left in the build directory.
fn measure_sizes(paths: &Paths, dir: &Path, raw: &mut Raw) -> Result<(), BenchError> {
    let scratch = dir.join("strip");
    for name in ["basalt-init", "basalt-agent", "basaltctl"] {
        let path = paths.build.join("bin").join(name);
        if path.exists() {
            raw.binaries.push(sizes::binary_size(name, &path, &scratch)?);
        } else {
            raw.binaries_missing
                .push((name.to_string(), format!("{} not built", path.display())));
        }
    }
    let initramfs = paths.build.join("initramfs.img");
    if initramfs.exists() {
        raw.initramfs = Some(sizes::initramfs_breakdown(&initramfs)?);
    } else {
        raw.initramfs_missing = Some(format!("{} not built (run `make image`)", initramfs.display()));
    }
    Ok(())
}

/// `basalt-bench render`: the results files again, from a run's results.json.
pub fn render(o: &RenderOptions) -> Result<(), BenchError> {
    let text = std::fs::read_to_string(&o.json).map_err(io_err("read", &o.json))?;
    let parse = |why: String| BenchError::Parse {
        what: o.json.display().to_string(),
        why,
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| parse(e.to_string()))?;
    write_results(&o.out, &crate::load::raw_from_json(&v).map_err(parse)?)
}

pub fn write_results(out: &Path, raw: &Raw) -> Result<(), BenchError> {
    std::fs::create_dir_all(out).map_err(io_err("create", out))?;
    let a = results::analyse(raw);
    let mut json = serde_json::to_string_pretty(&report::json(raw, &a)).unwrap_or_default();
    json.push('\n');
    let files = [
        ("results.md", report::markdown(raw, &a)),
        ("results.json", json),
        ("timeline.svg", svg::timeline(&a, &raw.accel)),
        ("scaling.svg", svg::scaling(&a, &raw.accel)),
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
        let got = schedule(&[64, 512], &[256], 3, 2);
        let want = [
            (64, Init::Basalt, 0),
            (64, Init::Busybox, 0),
            (256, Init::Basalt, 0),
            (512, Init::Basalt, 0),
            (512, Init::Busybox, 0),
            (64, Init::Busybox, 1),
            (64, Init::Basalt, 1),
            (256, Init::Basalt, 1),
            (512, Init::Busybox, 1),
            (512, Init::Basalt, 1),
            (64, Init::Basalt, 2),
            (64, Init::Busybox, 2),
            (512, Init::Basalt, 2),
            (512, Init::Busybox, 2),
        ];
        assert_eq!(got, want);
        // The default suite: five of each init per compared size, three
        // basalt boots per extra size.
        let all = schedule(&COMPARE_MIB, &SCALE_MIB, 5, 3);
        assert_eq!(all.len(), 2 * 5 * 2 + 2 * 3);
        for mib in COMPARE_MIB {
            for init in [Init::Basalt, Init::Busybox] {
                assert_eq!(all.iter().filter(|b| b.0 == mib && b.1 == init).count(), 5);
            }
        }
        // More extra-size runs than compared ones: the later rounds hold
        // only the extra sizes.
        let tail = schedule(&[64], &[256], 1, 2);
        assert_eq!(
            tail,
            [
                (64, Init::Basalt, 0),
                (64, Init::Busybox, 0),
                (256, Init::Basalt, 0),
                (256, Init::Basalt, 1)
            ]
        );
    }
}
