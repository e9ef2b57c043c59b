#![cfg(feature = "host")]
//! What a run measured ([`Raw`], the `raw` of results.json, which `render`
//! reads back) and the figures the suite reports from it: medians, ratios,
//! per-step times and the scaling fit. Pure functions; `targets.rs` says
//! where each target stands, `report.rs` and `svg.rs` render the result.

use crate::boots::{Init, Root};
use crate::hashing::{HashRuns, Tool};
use crate::line::Outcome;
use crate::sizes::{BinarySize, Breakdown};
use crate::stats::linear_fit;
pub use crate::stats::Summary;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One boot, as the suite ran it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootRecord {
    pub init: Init,
    /// Where the root came from (runs before part 8 have none: initramfs).
    #[serde(default)]
    pub root: Root,
    pub mib: u64,
    pub image_bytes: u64,
    pub memory_mib: u32,
    /// 0-based run number within its size and init.
    pub run: usize,
    pub outcome: Outcome,
    pub wall_s: f64,
    /// The host's 1-minute load average as the boot started (our own QEMU
    /// adds about 1 once it runs): how busy the shared machine was.
    pub host_load: Option<f64>,
}

/// Part 5 and 6 as measured through the agent, each value a sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// `basaltctl apply` start → it returned: the agent's ok.
    #[serde(default)]
    pub ack_ms: Vec<f64>,
    /// VM start → kubelet running, through a manual apply.
    #[serde(default)]
    pub boot_to_running_ms: Vec<f64>,
    /// The same apply with a STATE disk attached (runs before issue 12's
    /// part have none; those ran without persistence too).
    #[serde(default)]
    pub persisted: Option<Persisted>,
}

/// The apply with persistence, and the node booted again on its STATE disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    pub ack_ms: Vec<f64>,
    pub apply_to_exec_ms: Vec<f64>,
    pub stages_ms: Vec<(String, Vec<f64>)>,
    /// VM start → kubelet running on the persisted config, no apply.
    pub boot_to_running_ms: Vec<f64>,
}

/// Part 9: upgrades of slot B on one node booted under OVMF, against raw
/// copies of the same bytes over the same vsock transport.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpgradeRuns {
    /// The root image in the bundle's slot part.
    pub image_bytes: u64,
    /// The bundle's parts (UKI and slot part): what each run sends.
    pub bundle_bytes: u64,
    /// The root mode of the node's UKIs.
    pub root: String,
    /// The rebooted upgrade's health window.
    pub health_window_ms: u64,
    /// Upgrades without reboot, in run order.
    pub upgrades: Vec<Transfer>,
    /// The raw copies, in run order.
    pub raw: Vec<RawCopy>,
    /// Upgrades with `--reboot`.
    pub rebooted: Vec<Rebooted>,
}

/// One upgrade without reboot, host-timed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Transfer {
    /// The signed `upgrade` request → the first `upgrade-data` about to go.
    pub begin_s: f64,
    /// Bytes before the last piece.
    pub data_bytes: u64,
    /// First `upgrade-data` → the answer to the last piece but one.
    pub data_s: f64,
    /// First `upgrade-data` → the staged answer.
    pub total_s: f64,
    /// The agent's own split of the transfer (its `costs_ms`: wait, parse,
    /// check, write, verify), summed over the requests.
    #[serde(default)]
    pub node_ms: std::collections::BTreeMap<String, f64>,
}

/// One raw copy through the fixture, host-timed from the first byte sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RawCopy {
    /// → the fixture's answer after its last pwrite.
    pub written_s: f64,
    /// → its answer after the fsync.
    pub synced_s: f64,
    /// The fixture's own times: first byte → last pwrite, and the fsync.
    pub guest_write_ms: Option<f64>,
    pub guest_fsync_ms: Option<f64>,
}

/// One `upgrade --reboot`, host wall time, split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rebooted {
    /// The upgrade call → the staged answer (transfer and checks).
    pub transfer_s: f64,
    /// → the new agent's `ready` line on the console.
    pub reboot_to_agent_s: f64,
    /// → `status` reporting the kubelet running there.
    pub agent_to_kubelet_s: f64,
    /// → the last upgrade's outcome `blessed`.
    pub kubelet_to_blessed_s: f64,
}

/// Everything measured, before analysis.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    /// Sizes also booted from a slot disk in both root modes (part 8).
    #[serde(default)]
    pub disk_mib: Vec<u64>,
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
    /// Part 9 (runs before it have neither field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeRuns>,
    /// Why part 9 was not measured, when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_missing: Option<String>,
    pub suite_seconds: f64,
    /// How long each part took, in the order they ran.
    pub part_seconds: Vec<(String, f64)>,
}

/// The 1-minute load average from /proc/loadavg's text.
pub fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

pub fn ms(us: u64) -> f64 {
    us as f64 / 1e3
}

fn of(xs: impl Iterator<Item = f64>) -> Option<Summary> {
    Summary::of(&xs.collect::<Vec<_>>())
}

impl Raw {
    /// Host load across the boots.
    pub fn host_load(&self) -> Option<Summary> {
        of(self.boots.iter().filter_map(|b| b.host_load))
    }

    /// The boots of one init, root and size, in run order.
    fn boots_from(&self, init: Init, root: Root, mib: u64) -> Vec<&BootRecord> {
        let of = |b: &&BootRecord| b.init == init && b.root == root && b.mib == mib;
        let mut v: Vec<&BootRecord> = self.boots.iter().filter(of).collect();
        v.sort_by_key(|b| b.run);
        v
    }

    /// basalt's reports from the initramfs, with the phase each was printed with.
    fn reports(&self) -> impl Iterator<Item = (&crate::line::BootReport, &crate::line::Phase)> {
        let basalt = self
            .boots
            .iter()
            .filter(|b| (b.init, b.root) == (Init::Basalt, Root::Initramfs));
        basalt.filter_map(|b| Some((b.outcome.report.as_ref()?, &b.outcome.phase)))
    }
}

impl BootRecord {
    fn phase_ms(&self) -> f64 {
        ms(self.outcome.phase.pid1_phase_us())
    }

    fn step_ms(&self, name: &str) -> Option<f64> {
        let r = self.outcome.report.as_ref()?;
        r.steps.iter().find(|s| s.name == name).map(|s| ms(s.duration_us))
    }

    /// The baseline's hashing time: from the mark before sha256sum
    /// ("modules") to the one after ("verify-image").
    fn busybox_hash_ms(&self) -> Option<f64> {
        let at = |name: &str| self.outcome.marks.iter().find(|(n, _)| n == name).map(|m| m.1);
        Some(ms(at("verify-image")?.checked_sub(at("modules")?)?))
    }
}

/// One image size as booted: nominal MiB, real bytes, the guest's RAM.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Size {
    pub mib: u64,
    pub bytes: u64,
    pub memory_mib: u32,
}

impl Size {
    fn of(b: &BootRecord) -> Size {
        Size {
            mib: b.mib,
            bytes: b.image_bytes,
            memory_mib: b.memory_mib,
        }
    }

    /// The image's real size in MiB.
    pub fn real_mib(&self) -> f64 {
        self.bytes as f64 / (1u64 << 20) as f64
    }
}

/// Part 1 for one image size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub size: Size,
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

pub fn comparisons(raw: &Raw) -> Vec<Comparison> {
    let compare = |&mib: &u64| {
        let (basalt, busybox) = (
            raw.boots_from(Init::Basalt, Root::Initramfs, mib),
            raw.boots_from(Init::Busybox, Root::Initramfs, mib),
        );
        let basalt_runs: Vec<f64> = basalt.iter().map(|b| b.phase_ms()).collect();
        let busybox_runs: Vec<f64> = busybox.iter().map(|b| b.phase_ms()).collect();
        let (bs, bb) = (Summary::of(&basalt_runs)?, Summary::of(&busybox_runs)?);
        Some(Comparison {
            size: Size::of(basalt.first()?),
            ratio: bs.median / bb.median,
            basalt_hash: of(basalt.iter().filter_map(|b| b.step_ms("verify-image"))),
            busybox_hash: of(busybox.iter().filter_map(|b| b.busybox_hash_ms())),
            basalt_runs,
            busybox_runs,
            basalt: bs,
            busybox: bb,
        })
    };
    raw.compare_mib.iter().filter_map(compare).collect()
}

/// Part 2: one of basalt-init's steps across the boots of one size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepAt {
    pub mib: u64,
    pub duration_ms: Summary,
    /// From init's start.
    pub start_ms: Summary,
}

/// Part 2: one of basalt-init's steps, per size (ascending).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepStats {
    pub name: String,
    pub per_size: Vec<StepAt>,
}

/// Steps in the order the boot reports list them.
pub fn step_stats(raw: &Raw) -> Vec<StepStats> {
    let basalt = raw
        .boots
        .iter()
        .filter(|b| (b.init, b.root) == (Init::Basalt, Root::Initramfs));
    let sizes: BTreeSet<u64> = basalt.map(|b| b.mib).collect();
    let mut names: Vec<&str> = Vec::new();
    for s in raw.reports().flat_map(|(r, _)| &r.steps) {
        if !names.contains(&s.name.as_str()) {
            names.push(&s.name);
        }
    }
    let at = |name: &str, mib: u64| {
        let boots = raw.boots_from(Init::Basalt, Root::Initramfs, mib);
        let reports = boots.iter().filter_map(|b| b.outcome.report.as_ref());
        let found: Vec<(f64, f64)> = reports
            .filter_map(|r| {
                let s = r.steps.iter().find(|s| s.name == name)?;
                Some((ms(s.duration_us), ms(s.start_us.saturating_sub(r.init_start_us))))
            })
            .collect();
        Some(StepAt {
            mib,
            duration_ms: of(found.iter().map(|f| f.0))?,
            start_ms: of(found.iter().map(|f| f.1))?,
        })
    };
    let stats = |name: &&str| StepStats {
        name: name.to_string(),
        per_size: sizes.iter().filter_map(|&mib| at(name, mib)).collect(),
    };
    names.iter().map(stats).collect()
}

/// What basalt's own report does not see, from the same boots: the
/// kernel's exec of /init up to init's first clock reading, and from the
/// handoff's spawn to the fixture running. Bridged through the fixture's
/// CLOCK_MONOTONIC reading taken beside its printk line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edges {
    pub exec_to_main_ms: Summary,
    pub spawn_to_handoff_ms: Summary,
    /// The printk clock minus CLOCK_MONOTONIC, per boot.
    pub clock_offset_ms: Summary,
    /// Fixture-measured phase minus the report's pid1_phase_us.
    pub fixture_minus_report_ms: Summary,
}

pub fn edges(raw: &Raw) -> Option<Edges> {
    // printk time = monotonic time + offset
    let offset = |p: &crate::line::Phase| p.handoff_us as f64 - p.mono_us as f64;
    let each = |f: &dyn Fn(&crate::line::BootReport, &crate::line::Phase) -> f64| {
        of(raw.reports().map(|(r, p)| f(r, p) / 1e3))
    };
    Some(Edges {
        exec_to_main_ms: each(&|r, p| r.init_start_us as f64 + offset(p) - p.run_init_us as f64)?,
        spawn_to_handoff_ms: each(&|r, p| p.handoff_us as f64 - (r.handoff_us as f64 + offset(p)))?,
        clock_offset_ms: each(&|_, p| offset(p))?,
        fixture_minus_report_ms: each(&|r, p| p.pid1_phase_us() as f64 - r.pid1_phase_us as f64)?,
    })
}

/// Part 7: one image size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScalePoint {
    pub size: Size,
    pub phase: Summary,
    pub verify: Option<Summary>,
    /// The kernel's share before /init (unpacking the initramfs), ms.
    pub kernel: Summary,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scaling {
    pub points: Vec<ScalePoint>,
    /// PID1 phase ms = intercept + slope × image MiB, and r².
    pub fit: Option<(f64, f64, f64)>,
    /// Same for verify-image alone.
    pub verify_fit: Option<(f64, f64, f64)>,
}

pub fn scaling(raw: &Raw) -> Scaling {
    let sizes: BTreeSet<u64> = raw.compare_mib.iter().chain(&raw.scale_mib).copied().collect();
    let point = |&mib: &u64| {
        let boots = raw.boots_from(Init::Basalt, Root::Initramfs, mib);
        Some(ScalePoint {
            size: Size::of(boots.first()?),
            phase: of(boots.iter().map(|b| b.phase_ms()))?,
            verify: of(boots.iter().filter_map(|b| b.step_ms("verify-image"))),
            kernel: of(boots.iter().map(|b| ms(b.outcome.phase.run_init_us)))?,
        })
    };
    let points: Vec<ScalePoint> = sizes.iter().filter_map(point).collect();
    let line = |y: &dyn Fn(&ScalePoint) -> Option<f64>| {
        let xy: Vec<(f64, f64)> = points.iter().filter_map(|p| Some((p.size.real_mib(), y(p)?))).collect();
        linear_fit(&xy)
    };
    Scaling {
        fit: line(&|p| Some(p.phase.median)),
        verify_fit: line(&|p| Some(p.verify?.median)),
        points,
    }
}

/// Part 8: one path at one size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathPoint {
    pub init: Init,
    pub root: Root,
    pub size: Size,
    pub phase: Summary,
    /// Boot to `Run /init`.
    pub kernel: Summary,
}

/// Part 8: every path booted at the disk sizes, path by path, then by size.
pub fn disk_paths(raw: &Raw) -> Vec<PathPoint> {
    let paths = [
        (Init::Basalt, Root::Initramfs),
        (Init::Busybox, Root::Initramfs),
        (Init::Basalt, Root::Ram),
        (Init::Basalt, Root::Disk),
    ];
    let point = |(init, root, mib): (Init, Root, u64)| {
        let boots = raw.boots_from(init, root, mib);
        Some(PathPoint {
            init,
            root,
            size: Size::of(boots.first()?),
            phase: of(boots.iter().map(|b| b.phase_ms()))?,
            kernel: of(boots.iter().map(|b| ms(b.outcome.phase.run_init_us)))?,
        })
    };
    let each = paths
        .iter()
        .flat_map(|&(i, r)| raw.disk_mib.iter().map(move |&m| (i, r, m)));
    each.filter_map(point).collect()
}

/// Part 3, one tool.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    let row = |&(tool, _): &(Tool, Vec<f64>)| {
        let seconds = secs(tool)?;
        let gib_per_s = gib / seconds.median;
        let vs_openssl = openssl.map_or(f64::NAN, |o| gib_per_s / o);
        Some(HashRow {
            tool,
            seconds,
            gib_per_s,
            vs_openssl,
        })
    };
    h.times.iter().filter_map(row).collect()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentSummary {
    pub init_hwm_kib: Option<Summary>,
    pub agent_hwm_kib: Option<Summary>,
    pub apply_to_exec_ms: Option<Summary>,
    pub end_to_end_ms: Option<Summary>,
    pub stages_ms: Vec<(String, Summary)>,
    pub ack_ms: Option<Summary>,
    pub boot_to_running_ms: Option<Summary>,
    pub persisted: Option<PersistedSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PersistedSummary {
    pub ack_ms: Summary,
    pub apply_to_exec_ms: Summary,
    pub stages_ms: Vec<(String, Summary)>,
    pub boot_to_running_ms: Summary,
    /// ack with persistence / ack without, at the medians.
    pub ack_ratio: Option<f64>,
}

fn stage_summaries(stages: &[(String, Vec<f64>)]) -> Vec<(String, Summary)> {
    stages
        .iter()
        .filter_map(|(n, v)| Some((n.clone(), Summary::of(v)?)))
        .collect()
}

fn agent_summary(a: &AgentRuns) -> AgentSummary {
    let ack_ms = Summary::of(&a.ack_ms);
    let persisted = a.persisted.as_ref().and_then(|p| {
        let with = Summary::of(&p.ack_ms)?;
        Some(PersistedSummary {
            ack_ms: with,
            apply_to_exec_ms: Summary::of(&p.apply_to_exec_ms)?,
            stages_ms: stage_summaries(&p.stages_ms),
            boot_to_running_ms: Summary::of(&p.boot_to_running_ms)?,
            ack_ratio: ack_ms.map(|without| with.median / without.median),
        })
    });
    AgentSummary {
        init_hwm_kib: Summary::of(&a.init_hwm_kib),
        agent_hwm_kib: Summary::of(&a.agent_hwm_kib),
        apply_to_exec_ms: Summary::of(&a.apply_to_exec_ms),
        end_to_end_ms: Summary::of(&a.end_to_end_ms),
        stages_ms: stage_summaries(&a.stages_ms),
        ack_ms,
        boot_to_running_ms: Summary::of(&a.boot_to_running_ms),
        persisted,
    }
}

/// Issue 12's floor for an apply: one signature check, one program
/// start and one flushed write, as the agent's own stages measured them in
/// the persisted applies of this run (medians). basalt-init's manifest step
/// and its spawn of the handoff (part 2) do more than these (they read and
/// parse files, and the spawn runs to the program's first line), so they
/// are no floor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Floor {
    /// Stage `verify`: the envelope's Ed25519 signature checked.
    pub signature_ms: f64,
    /// Stage `spawn`: the kubelet started.
    pub spawn_ms: f64,
    /// Stage `persist`: one STATE record written and fdatasync'd.
    pub flushed_write_ms: f64,
    pub total_ms: f64,
    /// The persisted apply→exec over `total_ms`.
    pub ratio: f64,
}

pub fn floor(a: &Analysis) -> Option<Floor> {
    let p = a.agent.as_ref()?.persisted.as_ref()?;
    let stage = |name: &str| Some(p.stages_ms.iter().find(|(n, _)| n == name)?.1.median);
    let (signature_ms, spawn_ms, flushed_write_ms) = (stage("verify")?, stage("spawn")?, stage("persist")?);
    let total_ms = signature_ms + spawn_ms + flushed_write_ms;
    Some(Floor {
        signature_ms,
        spawn_ms,
        flushed_write_ms,
        total_ms,
        ratio: p.apply_to_exec_ms.median / total_ms,
    })
}

/// Part 9's figures: MiB/s are MiB (2^20 bytes) per second, each run's
/// bytes over its time; ratios are of the medians.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpgradeSummary {
    pub image_bytes: u64,
    pub bundle_bytes: u64,
    pub root: String,
    pub health_window_ms: u64,
    /// The upgrade's data phase and up to the staged answer.
    pub upgrade_data_mib_s: Summary,
    pub upgrade_total_mib_s: Summary,
    /// The raw copy, written and synced.
    pub raw_written_mib_s: Summary,
    pub raw_synced_mib_s: Summary,
    /// Data phase over the raw copy written: the target's figure.
    pub ratio: f64,
    /// Staged over synced: with the flush, and the upgrade's read-back.
    pub end_to_end_ratio: f64,
    pub begin_ms: Summary,
    /// The agent's split, each stage's median over the upgrades.
    pub node_ms: Vec<(String, Summary)>,
    pub rebooted: Option<RebootedSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RebootedSummary {
    pub transfer_s: Summary,
    pub reboot_to_agent_s: Summary,
    pub agent_to_kubelet_s: Summary,
    /// The upgrade call → kubelet running on the new slot.
    pub upgrade_to_kubelet_s: Summary,
    pub kubelet_to_blessed_s: Summary,
    /// The upgrade call → blessed.
    pub upgrade_to_blessed_s: Summary,
}

fn upgrade_summary(u: &UpgradeRuns) -> Option<UpgradeSummary> {
    let mib = |bytes: u64, s: f64| bytes as f64 / (1u64 << 20) as f64 / s;
    let rate = |f: &dyn Fn(&Transfer) -> (u64, f64)| of(u.upgrades.iter().map(f).map(|(b, s)| mib(b, s)));
    let raw = |f: fn(&RawCopy) -> f64| of(u.raw.iter().map(|r| mib(u.bundle_bytes, f(r))));
    let (data, total) = (
        rate(&|t| (t.data_bytes, t.data_s))?,
        rate(&|t| (u.bundle_bytes, t.total_s))?,
    );
    let (written, synced) = (raw(|r| r.written_s)?, raw(|r| r.synced_s)?);
    let r = &u.rebooted;
    let each = |f: fn(&Rebooted) -> f64| of(r.iter().map(f));
    let rebooted = (|| {
        Some(RebootedSummary {
            transfer_s: each(|x| x.transfer_s)?,
            reboot_to_agent_s: each(|x| x.reboot_to_agent_s)?,
            agent_to_kubelet_s: each(|x| x.agent_to_kubelet_s)?,
            upgrade_to_kubelet_s: each(|x| x.transfer_s + x.reboot_to_agent_s + x.agent_to_kubelet_s)?,
            kubelet_to_blessed_s: each(|x| x.kubelet_to_blessed_s)?,
            upgrade_to_blessed_s: each(|x| {
                x.transfer_s + x.reboot_to_agent_s + x.agent_to_kubelet_s + x.kubelet_to_blessed_s
            })?,
        })
    })();
    Some(UpgradeSummary {
        image_bytes: u.image_bytes,
        bundle_bytes: u.bundle_bytes,
        root: u.root.clone(),
        health_window_ms: u.health_window_ms,
        upgrade_data_mib_s: data,
        upgrade_total_mib_s: total,
        raw_written_mib_s: written,
        raw_synced_mib_s: synced,
        ratio: data.median / written.median,
        end_to_end_ratio: total.median / synced.median,
        begin_ms: of(u.upgrades.iter().map(|t| t.begin_s * 1e3))?,
        node_ms: ["wait", "parse", "check", "write", "verify"]
            .into_iter()
            .filter_map(|k| {
                Some((
                    k.to_string(),
                    of(u.upgrades.iter().filter_map(|t| t.node_ms.get(k).copied()))?,
                ))
            })
            .collect(),
        rebooted,
    })
}

/// Everything the reports show.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub comparisons: Vec<Comparison>,
    pub steps: Vec<StepStats>,
    pub edges: Option<Edges>,
    pub scaling: Scaling,
    pub hash: Vec<HashRow>,
    pub disk: Vec<PathPoint>,
    pub agent: Option<AgentSummary>,
    pub floor: Option<Floor>,
    /// basalt-init's VmHWM at the handoff, from part 1's boots.
    pub handoff_hwm_kib: Option<Summary>,
    /// Part 9 (left out of results.json when the run has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeSummary>,
    pub targets: Vec<crate::targets::Target>,
}

impl Analysis {
    pub fn hash_of(&self, tool: Tool) -> Option<&HashRow> {
        self.hash.iter().find(|r| r.tool == tool)
    }

    /// Part 8's figures for one path at one size.
    pub fn path_at(&self, init: Init, root: Root, mib: u64) -> Option<&PathPoint> {
        self.disk
            .iter()
            .find(|p| (p.init, p.root, p.size.mib) == (init, root, mib))
    }
}

pub fn analyse(raw: &Raw) -> Analysis {
    let agent = raw.agent.as_ref().map(agent_summary);
    let basalt = raw.boots.iter().filter(|b| b.init == Init::Basalt);
    let mut a = Analysis {
        comparisons: comparisons(raw),
        steps: step_stats(raw),
        edges: edges(raw),
        scaling: scaling(raw),
        hash: raw.hash.as_ref().map(hash_rows).unwrap_or_default(),
        disk: disk_paths(raw),
        agent,
        floor: None,
        handoff_hwm_kib: of(basalt.filter_map(|b| b.outcome.phase.pid1_hwm_kib.map(|k| k as f64))),
        upgrade: raw.upgrade.as_ref().and_then(upgrade_summary),
        targets: Vec::new(),
    };
    a.floor = floor(&a);
    a.targets = crate::targets::targets(raw, &a);
    a
}

/// Made-up boots for the builders' tests.
#[cfg(test)]
pub mod tests_support {
    use super::*;
    use crate::line::{BootReport, Phase, Step};

    pub fn boot(init: Init, mib: u64, run: usize, phase_ms: u64, verify_ms: u64) -> BootRecord {
        boot_from(init, Root::Initramfs, mib, run, phase_ms, verify_ms)
    }

    pub fn boot_from(init: Init, root: Root, mib: u64, run: usize, phase_ms: u64, verify_ms: u64) -> BootRecord {
        // The kernel takes 5 s to /init from the initramfs, 4 s beside a disk.
        let run_init = if root == Root::Initramfs { 5_000_000 } else { 4_000_000 };
        let handoff = run_init + phase_ms * 1000;
        let step = |name: &str, start: u64, duration_us: u64| Step {
            name: name.into(),
            start_us: run_init + start,
            duration_us,
        };
        let report = (init == Init::Basalt).then(|| BootReport {
            init_start_us: run_init + 40_000 - 20_000,
            handoff_us: handoff - 60_000 - 20_000,
            pid1_phase_us: phase_ms * 1000 - 100_000,
            steps: vec![
                step("manifest", 22_000, 5_000),
                step("modules", 30_000, 100_000),
                step("verify-image", 130_000, verify_ms * 1000),
            ],
        });
        let mark = |name: &str, at: u64| (name.to_string(), run_init + at);
        let marks = match init {
            Init::Busybox => vec![
                mark("modules", 200_000),
                mark("verify-image", 200_000 + verify_ms * 1000),
            ],
            Init::Basalt => vec![],
        };
        // monotonic runs 20 ms behind printk
        let phase = Phase {
            run_init_us: run_init,
            handoff_us: handoff,
            mono_us: handoff - 20_000,
            pid1_hwm_kib: None,
        };
        BootRecord {
            init,
            root,
            mib,
            image_bytes: mib << 20,
            memory_mib: 512,
            run,
            outcome: Outcome { phase, marks, report },
            wall_s: 10.0,
            host_load: Some(1.5),
        }
    }

    /// The sample, plus slot-disk boots at 64 MiB and 1 GiB: ram mode
    /// 950 ms and 1500 ms, disk mode 400 ms at both.
    pub fn disk_raw() -> Raw {
        let mut raw = sample_raw();
        for run in 0..5 {
            for (mib, ram) in [(64, 950), (1024, 1500)] {
                raw.boots.push(boot_from(Init::Basalt, Root::Ram, mib, run, ram, 0));
                raw.boots.push(boot_from(Init::Basalt, Root::Disk, mib, run, 400, 0));
            }
        }
        raw.disk_mib = vec![64, 1024];
        raw
    }

    /// The disk sample, with the agent's figures (persisted applies too)
    /// and an initramfs breakdown.
    pub fn agent_raw() -> Raw {
        let mut raw = disk_raw();
        let stages = |s: &[(&str, f64)]| s.iter().map(|&(n, x)| (n.to_string(), vec![x])).collect();
        raw.agent = Some(AgentRuns {
            init_hwm_kib: vec![900.0, 1000.0, 1100.0],
            agent_hwm_kib: vec![7000.0],
            apply_to_exec_ms: vec![20.0],
            end_to_end_ms: vec![300.0],
            stages_ms: stages(&[("verify", 16.0), ("spawn", 28.0)]),
            method: "Timed on the host.".into(),
            ack_ms: vec![30.0],
            boot_to_running_ms: vec![9500.0],
            persisted: Some(Persisted {
                ack_ms: vec![40.0],
                apply_to_exec_ms: vec![100.0],
                stages_ms: stages(&[("verify", 15.0), ("persist", 20.0), ("spawn", 50.0)]),
                boot_to_running_ms: vec![9000.0],
            }),
        });
        let (total, image, modules, init) = (70_000_000, 67_000_000, 2_000_000, 900_000);
        let (module_count, manifest, framing) = (9, 1200, 98_800);
        raw.initramfs = Some(crate::sizes::Breakdown {
            total,
            image,
            modules,
            module_count,
            init,
            manifest,
            framing,
        });
        raw
    }

    /// The disk sample plus part 9: 64 MiB of bundle, upgrades at 8, 10
    /// and 16 MiB/s in the data phase, raw copies at 16, 20 and 32.
    pub fn upgrade_raw() -> Raw {
        let mut raw = disk_raw();
        let mib = 1u64 << 20;
        let upgrades = [8.0, 4.0, 6.4].map(|s| Transfer {
            begin_s: 0.1,
            data_bytes: 63 * mib + mib / 2,
            data_s: s * 63.5 / 64.0,
            total_s: s + 2.0,
            node_ms: [("check", s * 300.0), ("write", s * 200.0)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        });
        let raw_copies = [4.0, 2.0, 3.2].map(|s| RawCopy {
            written_s: s,
            synced_s: s + 1.0,
            guest_write_ms: Some(s * 1e3 - 10.0),
            guest_fsync_ms: Some(990.0),
        });
        raw.upgrade = Some(UpgradeRuns {
            image_bytes: 50 * mib,
            bundle_bytes: 64 * mib,
            root: "ram".into(),
            health_window_ms: 5000,
            upgrades: upgrades.to_vec(),
            raw: raw_copies.to_vec(),
            rebooted: vec![Rebooted {
                transfer_s: 10.0,
                reboot_to_agent_s: 20.0,
                agent_to_kubelet_s: 0.5,
                kubelet_to_blessed_s: 5.5,
            }],
        });
        raw
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
        assert_eq!(raw().host_load().map(|s| s.median), Some(1.5));
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
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["manifest", "modules", "verify-image"]);
        let at = steps[2].per_size[1];
        assert_eq!(
            (at.mib, at.duration_ms.median, at.start_ms.median),
            (256, 6500.0, 110.0)
        );

        let e = edges(&r).unwrap();
        // init_start is 20 ms (mono) after run_init - 20 ms offset → 40 ms.
        assert!((e.exec_to_main_ms.median - 40.0).abs() < 1e-9, "{e:?}");
        assert!((e.spawn_to_handoff_ms.median - 60.0).abs() < 1e-9, "{e:?}");
        assert!((e.clock_offset_ms.median - 20.0).abs() < 1e-9);
        assert!((e.fixture_minus_report_ms.median - 100.0).abs() < 1e-9);

        let s = scaling(&r);
        assert_eq!(s.points.iter().map(|p| p.size.mib).collect::<Vec<_>>(), [64, 256]);
        let (a, b, r2) = s.fit.unwrap();
        assert!((b - (7000.0 - 1920.0) / 192.0).abs() < 1e-9 && r2 > 0.999 && a > 0.0);
    }

    #[test]
    fn upgrade_rates_are_ratios_of_medians() {
        let u = analyse(&tests_support::upgrade_raw()).upgrade.unwrap();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(u.upgrade_data_mib_s.median, 10.0) && close(u.upgrade_data_mib_s.max, 16.0));
        assert!(close(u.raw_written_mib_s.median, 20.0) && close(u.raw_synced_mib_s.median, 64.0 / 4.2));
        assert!(close(u.ratio, 0.5) && close(u.end_to_end_ratio, (64.0 / 8.4) / (64.0 / 4.2)));
        let r = u.rebooted.unwrap();
        assert!(close(r.upgrade_to_kubelet_s.median, 30.5) && close(r.upgrade_to_blessed_s.median, 36.0));
        // No rebooted upgrade: the rest still stands; no raw copy: nothing.
        let mut raw = tests_support::upgrade_raw();
        raw.upgrade.as_mut().unwrap().rebooted.clear();
        assert!(analyse(&raw).upgrade.unwrap().rebooted.is_none());
        raw.upgrade.as_mut().unwrap().raw.clear();
        assert!(analyse(&raw).upgrade.is_none());
    }

    #[test]
    fn hash_rows_against_openssl() {
        let h = HashRuns {
            bytes: 1 << 30,
            rounds: 3,
            times: vec![
                (Tool::Basalt, vec![1.0, 1.1, 0.9]),
                (Tool::Openssl, vec![0.95, 0.95, 0.95]),
                (Tool::Cp, vec![0.5, 0.5, 0.5]),
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
