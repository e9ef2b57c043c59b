#![cfg(feature = "host")]
//! From raw measurements to the figures the suite reports: medians, ratios,
//! per-step times and the scaling fit (`targets.rs` says where each target
//! stands). Pure functions; `report.rs` renders the result as Markdown and
//! JSON, `svg.rs` as pictures.

use crate::boots::{BootOutcome, Init};
use crate::hashing::{HashRuns, Tool};
use crate::sizes::{BinarySize, Breakdown};
use crate::stats::linear_fit;
pub use crate::stats::Summary;

/// One boot, as the suite ran it.
#[derive(Debug, Clone)]
pub struct BootRecord {
    pub init: Init,
    pub mib: u64,
    pub image_bytes: u64,
    pub memory_mib: u32,
    /// 0-based run number within its size and init.
    pub run: usize,
    pub outcome: BootOutcome,
    pub wall_s: f64,
    /// The host's 1-minute load average as the boot started (our own QEMU
    /// adds about 1 once it runs): how busy the shared machine was.
    pub host_load: Option<f64>,
}

/// Part 5 and 6 as measured through the agent, each value a sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentRuns {
    pub init_hwm_kib: Vec<f64>,
    pub agent_hwm_kib: Vec<f64>,
    /// Agent receives the apply → kubelet exec, from the agent's timestamps.
    pub apply_to_exec_ms: Vec<f64>,
    /// `basaltctl apply` start → status reports the service running.
    pub end_to_end_ms: Vec<f64>,
    /// The agent's split of each apply (`status.config.stages_ms`).
    pub stages_ms: Vec<(String, Vec<f64>)>,
    /// How the end-to-end time was taken (transport, polling).
    pub method: String,
    /// The accelerator these boots ran under, and why.
    pub accel: String,
    pub accel_reason: String,
}

/// Everything measured, before analysis.
#[derive(Debug, Clone, Default)]
pub struct Raw {
    pub accel: String,
    pub accel_reason: String,
    pub host_cpu: String,
    /// CPUs the host has (for reading its load average).
    pub host_cpus: usize,
    pub guest_cpus: u32,
    pub kernel_release: String,
    pub qemu_version: String,
    /// Sizes compared against busybox (part 1), and the extra scaling sizes.
    pub compare_mib: Vec<u64>,
    pub scale_mib: Vec<u64>,
    pub boots: Vec<BootRecord>,
    pub hash: Option<HashRuns>,
    pub binaries: Vec<BinarySize>,
    /// Binaries that were not there to measure, with why.
    pub binaries_missing: Vec<(String, String)>,
    pub initramfs: Option<Breakdown>,
    pub initramfs_missing: Option<String>,
    pub agent: Option<AgentRuns>,
    /// Why parts 5 and 6 were not measured, when they were not.
    pub agent_missing: Option<String>,
    pub suite_seconds: f64,
    /// How long each part took, in the order they ran.
    pub part_seconds: Vec<(String, f64)>,
}

/// The 1-minute load average from /proc/loadavg's text.
pub fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Host load across the boots.
pub fn host_load(raw: &Raw) -> Option<Summary> {
    Summary::of(&raw.boots.iter().filter_map(|b| b.host_load).collect::<Vec<_>>())
}

pub fn ms(us: u64) -> f64 {
    us as f64 / 1e3
}

/// Part 1 for one image size.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub mib: u64,
    pub image_bytes: u64,
    pub memory_mib: u32,
    /// PID1 phase per run, ms, in run order.
    pub basalt_runs: Vec<f64>,
    pub busybox_runs: Vec<f64>,
    pub basalt: Summary,
    pub busybox: Summary,
    /// median(basalt) / median(busybox).
    pub ratio: f64,
    /// Time spent hashing the image: basalt's verify-image step, the
    /// baseline's sha256sum (between its marks).
    pub basalt_hash: Option<Summary>,
    pub busybox_hash: Option<Summary>,
}

impl Comparison {
    /// Median PID1 phase minus median hashing time, per init.
    pub fn rest(&self) -> Option<(f64, f64)> {
        Some((
            self.basalt.median - self.basalt_hash?.median,
            self.busybox.median - self.busybox_hash?.median,
        ))
    }
}

fn phase_ms(b: &BootRecord) -> f64 {
    ms(b.outcome.phase.pid1_phase_us())
}

fn boots_of(raw: &Raw, init: Init, mib: u64) -> Vec<&BootRecord> {
    let mut v: Vec<&BootRecord> = raw.boots.iter().filter(|b| b.init == init && b.mib == mib).collect();
    v.sort_by_key(|b| b.run);
    v
}

fn step_ms(b: &BootRecord, name: &str) -> Option<f64> {
    let r = b.outcome.report.as_ref()?;
    r.steps.iter().find(|s| s.name == name).map(|s| ms(s.duration_us))
}

/// The baseline's hashing time: from the mark before sha256sum ("modules")
/// to the one after ("verify-image").
fn busybox_hash_ms(b: &BootRecord) -> Option<f64> {
    let at = |name: &str| b.outcome.marks.iter().find(|(n, _)| n == name).map(|m| m.1);
    Some(ms(at("verify-image")?.checked_sub(at("modules")?)?))
}

pub fn comparisons(raw: &Raw) -> Vec<Comparison> {
    raw.compare_mib
        .iter()
        .filter_map(|&mib| {
            let basalt = boots_of(raw, Init::Basalt, mib);
            let busybox = boots_of(raw, Init::Busybox, mib);
            let first = basalt.first()?;
            let basalt_runs: Vec<f64> = basalt.iter().map(|b| phase_ms(b)).collect();
            let busybox_runs: Vec<f64> = busybox.iter().map(|b| phase_ms(b)).collect();
            let bs = Summary::of(&basalt_runs)?;
            let bb = Summary::of(&busybox_runs)?;
            let hashes: Vec<f64> = basalt.iter().filter_map(|b| step_ms(b, "verify-image")).collect();
            let bb_hashes: Vec<f64> = busybox.iter().filter_map(|b| busybox_hash_ms(b)).collect();
            Some(Comparison {
                mib,
                image_bytes: first.image_bytes,
                memory_mib: first.memory_mib,
                ratio: bs.median / bb.median,
                basalt_runs,
                busybox_runs,
                basalt: bs,
                busybox: bb,
                basalt_hash: Summary::of(&hashes),
                busybox_hash: Summary::of(&bb_hashes),
            })
        })
        .collect()
}

/// Part 2: one of basalt-init's steps across the boots of each size.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStats {
    pub name: String,
    /// (size MiB, duration ms, start offset from init's start ms)
    pub per_size: Vec<(u64, Summary, Summary)>,
}

/// Steps in the order the boot report lists them; sizes ascending.
pub fn step_stats(raw: &Raw) -> Vec<StepStats> {
    let mut sizes: Vec<u64> = raw
        .boots
        .iter()
        .filter(|b| b.init == Init::Basalt)
        .map(|b| b.mib)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut names: Vec<String> = Vec::new();
    for b in raw.boots.iter().filter(|b| b.init == Init::Basalt) {
        for s in b.outcome.report.iter().flat_map(|r| &r.steps) {
            if !names.contains(&s.name) {
                names.push(s.name.clone());
            }
        }
    }
    names
        .into_iter()
        .map(|name| {
            let per_size = sizes
                .iter()
                .filter_map(|&mib| {
                    let (mut dur, mut start) = (Vec::new(), Vec::new());
                    for b in boots_of(raw, Init::Basalt, mib) {
                        let Some(r) = &b.outcome.report else { continue };
                        if let Some(s) = r.steps.iter().find(|s| s.name == name) {
                            dur.push(ms(s.duration_us));
                            start.push(ms(s.start_us.saturating_sub(r.init_start_us)));
                        }
                    }
                    Some((mib, Summary::of(&dur)?, Summary::of(&start)?))
                })
                .collect();
            StepStats { name, per_size }
        })
        .collect()
}

/// What basalt's own report does not see, from the same boots: the
/// kernel's exec of /init up to init's first clock reading, and from the
/// handoff's spawn to the fixture running. Bridged through the fixture's
/// CLOCK_MONOTONIC reading taken beside its printk line.
#[derive(Debug, Clone, PartialEq)]
pub struct Edges {
    pub exec_to_main_ms: Summary,
    pub spawn_to_handoff_ms: Summary,
    /// The printk clock minus CLOCK_MONOTONIC, per boot.
    pub clock_offset_ms: Summary,
    /// Fixture-measured phase minus the report's pid1_phase_us.
    pub fixture_minus_report_ms: Summary,
}

pub fn edges(raw: &Raw) -> Option<Edges> {
    let (mut exec, mut spawn, mut offset, mut diff) = (vec![], vec![], vec![], vec![]);
    for b in raw.boots.iter().filter(|b| b.init == Init::Basalt) {
        let Some(r) = &b.outcome.report else { continue };
        let p = &b.outcome.phase;
        // printk time = monotonic time + off
        let off = p.handoff_us as f64 - p.mono_us as f64;
        exec.push((r.init_start_us as f64 + off - p.run_init_us as f64) / 1e3);
        spawn.push((p.handoff_us as f64 - (r.handoff_us as f64 + off)) / 1e3);
        offset.push(off / 1e3);
        diff.push((p.pid1_phase_us() as f64 - r.pid1_phase_us as f64) / 1e3);
    }
    Some(Edges {
        exec_to_main_ms: Summary::of(&exec)?,
        spawn_to_handoff_ms: Summary::of(&spawn)?,
        clock_offset_ms: Summary::of(&offset)?,
        fixture_minus_report_ms: Summary::of(&diff)?,
    })
}

/// Part 7: one image size.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalePoint {
    pub mib: u64,
    pub image_bytes: u64,
    pub memory_mib: u32,
    pub phase: Summary,
    pub verify: Option<Summary>,
    /// The kernel's share before /init (unpacking the initramfs), ms.
    pub kernel: Summary,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scaling {
    pub points: Vec<ScalePoint>,
    /// PID1 phase ms = intercept + slope × image MiB, and r².
    pub fit: Option<(f64, f64, f64)>,
    /// Same for verify-image alone.
    pub verify_fit: Option<(f64, f64, f64)>,
}

pub fn scaling(raw: &Raw) -> Scaling {
    let mut sizes: Vec<u64> = raw.compare_mib.iter().chain(&raw.scale_mib).copied().collect();
    sizes.sort_unstable();
    sizes.dedup();
    let points: Vec<ScalePoint> = sizes
        .iter()
        .filter_map(|&mib| {
            let boots = boots_of(raw, Init::Basalt, mib);
            let first = boots.first()?;
            let phase: Vec<f64> = boots.iter().map(|b| phase_ms(b)).collect();
            let verify: Vec<f64> = boots.iter().filter_map(|b| step_ms(b, "verify-image")).collect();
            let kernel: Vec<f64> = boots.iter().map(|b| ms(b.outcome.phase.run_init_us)).collect();
            Some(ScalePoint {
                mib,
                image_bytes: first.image_bytes,
                memory_mib: first.memory_mib,
                phase: Summary::of(&phase)?,
                verify: Summary::of(&verify),
                kernel: Summary::of(&kernel)?,
            })
        })
        .collect();
    let mib_of = |p: &ScalePoint| p.image_bytes as f64 / (1u64 << 20) as f64;
    let fit = linear_fit(&points.iter().map(|p| (mib_of(p), p.phase.median)).collect::<Vec<_>>());
    let verify_fit = linear_fit(
        &points
            .iter()
            .filter_map(|p| Some((mib_of(p), p.verify?.median)))
            .collect::<Vec<_>>(),
    );
    Scaling {
        points,
        fit,
        verify_fit,
    }
}

/// Part 3, one tool.
#[derive(Debug, Clone, PartialEq)]
pub struct HashRow {
    pub tool: Tool,
    pub seconds: Summary,
    /// At the median time.
    pub gib_per_s: f64,
    /// This tool's throughput over openssl's (both at their medians).
    pub vs_openssl: f64,
}

pub fn hash_rows(h: &HashRuns) -> Vec<HashRow> {
    let gib = h.bytes as f64 / (1u64 << 30) as f64;
    let secs = |tool: Tool| {
        h.times
            .iter()
            .find(|(t, _)| *t == tool)
            .and_then(|(_, v)| Summary::of(v))
    };
    let openssl = secs(Tool::Openssl).map(|s| gib / s.median);
    h.times
        .iter()
        .filter_map(|(tool, _)| {
            let s = secs(*tool)?;
            let rate = gib / s.median;
            Some(HashRow {
                tool: *tool,
                seconds: s,
                gib_per_s: rate,
                vs_openssl: openssl.map_or(f64::NAN, |o| rate / o),
            })
        })
        .collect()
}

/// Everything the reports show.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub comparisons: Vec<Comparison>,
    pub steps: Vec<StepStats>,
    pub edges: Option<Edges>,
    pub scaling: Scaling,
    pub hash: Vec<HashRow>,
    pub agent: Option<AgentSummary>,
    pub targets: Vec<crate::targets::Target>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentSummary {
    pub init_hwm_kib: Option<Summary>,
    pub agent_hwm_kib: Option<Summary>,
    pub apply_to_exec_ms: Option<Summary>,
    pub end_to_end_ms: Option<Summary>,
    pub stages_ms: Vec<(String, Summary)>,
}

pub fn analyse(raw: &Raw) -> Analysis {
    let comparisons = comparisons(raw);
    let steps = step_stats(raw);
    let edges = edges(raw);
    let scaling = scaling(raw);
    let hash = raw.hash.as_ref().map(hash_rows).unwrap_or_default();
    let agent = raw.agent.as_ref().map(|a| AgentSummary {
        init_hwm_kib: Summary::of(&a.init_hwm_kib),
        agent_hwm_kib: Summary::of(&a.agent_hwm_kib),
        apply_to_exec_ms: Summary::of(&a.apply_to_exec_ms),
        end_to_end_ms: Summary::of(&a.end_to_end_ms),
        stages_ms: a
            .stages_ms
            .iter()
            .filter_map(|(n, v)| Some((n.clone(), Summary::of(v)?)))
            .collect(),
    });
    let mut a = Analysis {
        comparisons,
        steps,
        edges,
        scaling,
        hash,
        agent,
        targets: Vec::new(),
    };
    a.targets = crate::targets::targets(raw, &a);
    a
}

/// Made-up boots for the builders' tests.
#[cfg(test)]
pub mod tests_support {
    use super::*;
    use crate::boots::{BootReport, Step};
    use crate::line::Phase;

    pub fn boot(init: Init, mib: u64, run: usize, phase_ms: u64, verify_ms: u64) -> BootRecord {
        let run_init = 5_000_000;
        let handoff = run_init + phase_ms * 1000;
        let report = (init == Init::Basalt).then(|| BootReport {
            init_start_us: run_init + 40_000 - 20_000,
            handoff_us: handoff - 60_000 - 20_000,
            pid1_phase_us: phase_ms * 1000 - 100_000,
            steps: vec![
                Step {
                    name: "manifest".into(),
                    start_us: run_init + 22_000,
                    duration_us: 5_000,
                },
                Step {
                    name: "modules".into(),
                    start_us: run_init + 30_000,
                    duration_us: 100_000,
                },
                Step {
                    name: "verify-image".into(),
                    start_us: run_init + 130_000,
                    duration_us: verify_ms * 1000,
                },
            ],
        });
        let marks = if init == Init::Busybox {
            vec![
                ("modules".to_string(), run_init + 200_000),
                ("verify-image".to_string(), run_init + 200_000 + verify_ms * 1000),
            ]
        } else {
            vec![]
        };
        BootRecord {
            init,
            mib,
            image_bytes: mib << 20,
            memory_mib: 512,
            run,
            outcome: BootOutcome {
                // monotonic runs 20 ms behind printk
                phase: Phase {
                    run_init_us: run_init,
                    handoff_us: handoff,
                    mono_us: handoff - 20_000,
                    pid: if init == Init::Basalt { 90 } else { 1 },
                    pid1_hwm_kib: None,
                },
                marks,
                report,
            },
            wall_s: 10.0,
            host_load: Some(1.5),
        }
    }

    pub fn sample_raw() -> Raw {
        let mut boots = Vec::new();
        for run in 0..5 {
            boots.push(boot(Init::Basalt, 64, run, 1900 + run as u64 * 10, 1500));
            boots.push(boot(Init::Busybox, 64, run, 1880 + run as u64 * 10, 1440));
        }
        for run in 0..3 {
            boots.push(boot(Init::Basalt, 256, run, 7000, 6500));
        }
        Raw {
            accel: "tcg".into(),
            compare_mib: vec![64],
            scale_mib: vec![256],
            boots,
            ..Raw::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::sample_raw as raw;
    use super::*;

    #[test]
    fn load_averages() {
        let cases = [
            ("0.52 1.10 1.30 2/345 6789\n", Some(0.52)),
            ("3.15 3.50 3.35 1/200 1\n", Some(3.15)),
            ("", None),
            ("x 1 2", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_loadavg(text), want, "{text:?}");
        }
        assert_eq!(host_load(&raw()).map(|s| s.median), Some(1.5));
    }

    #[test]
    fn comparison_is_a_ratio_of_medians() {
        let c = &comparisons(&raw())[0];
        assert_eq!(c.basalt_runs, vec![1900.0, 1910.0, 1920.0, 1930.0, 1940.0]);
        assert_eq!((c.basalt.median, c.busybox.median), (1920.0, 1900.0));
        assert!((c.ratio - 1920.0 / 1900.0).abs() < 1e-12);
        assert_eq!(c.basalt_hash.unwrap().median, 1500.0);
        assert_eq!(c.busybox_hash.unwrap().median, 1440.0);
        assert_eq!(c.rest(), Some((420.0, 460.0)));
    }

    #[test]
    fn steps_edges_and_scaling() {
        let r = raw();
        let steps = step_stats(&r);
        assert_eq!(
            steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["manifest", "modules", "verify-image"]
        );
        let (mib, dur, start) = steps[2].per_size[1];
        assert_eq!((mib, dur.median, start.median), (256, 6500.0, 110.0));

        let e = edges(&r).unwrap();
        // init_start is 20 ms (mono) after run_init - 20 ms offset → 40 ms.
        assert!((e.exec_to_main_ms.median - 40.0).abs() < 1e-9, "{e:?}");
        assert!((e.spawn_to_handoff_ms.median - 60.0).abs() < 1e-9, "{e:?}");
        assert!((e.clock_offset_ms.median - 20.0).abs() < 1e-9);
        assert!((e.fixture_minus_report_ms.median - 100.0).abs() < 1e-9);

        let s = scaling(&r);
        assert_eq!(s.points.iter().map(|p| p.mib).collect::<Vec<_>>(), [64, 256]);
        let (a, b, r2) = s.fit.unwrap();
        assert!((b - (7000.0 - 1920.0) / 192.0).abs() < 1e-9 && r2 > 0.999 && a > 0.0);
    }

    #[test]
    fn hash_rows_against_openssl() {
        let secs = |v: &[f64]| v.to_vec();
        let h = HashRuns {
            bytes: 1 << 30,
            rounds: 3,
            times: vec![
                (Tool::Basalt, secs(&[1.0, 1.1, 0.9])),
                (Tool::Openssl, secs(&[0.95, 0.95, 0.95])),
                (Tool::Cp, secs(&[0.5, 0.5, 0.5])),
            ],
            sha256: String::new(),
            openssl_version: String::new(),
            cpu: "X (with SHA-NI)".into(),
        };
        let rows = hash_rows(&h);
        assert_eq!(rows.len(), 3);
        assert!((rows[0].gib_per_s - 1.0).abs() < 1e-9);
        assert!((rows[0].vs_openssl - 0.95).abs() < 1e-9);
        assert!((rows[2].gib_per_s - 2.0).abs() < 1e-9);
    }
}
