#![cfg(feature = "host")]
//! Where each target stands: the figure that decides it and, where it is
//! missed, why and what would close it, from the measurements themselves.

use crate::hashing::Tool;
use crate::results::{Analysis, HashRow, Raw};
use crate::stats::Summary;

/// Where a target stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Met,
    Missed,
    NotMeasured,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Met => "met",
            Status::Missed => "missed",
            Status::NotMeasured => "not measured",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: &'static str,
    pub goal: &'static str,
    pub measured: String,
    pub status: Status,
    pub note: String,
}

impl Target {
    /// Met or missed by `measured`; a missed one says why in `why_missed`.
    fn judged(
        name: &'static str,
        goal: &'static str,
        measured: String,
        met: bool,
        why_missed: impl FnOnce() -> String,
    ) -> Target {
        let (status, note) = if met {
            (Status::Met, String::new())
        } else {
            (Status::Missed, why_missed())
        };
        Target {
            name,
            goal,
            measured,
            status,
            note,
        }
    }

    fn not_measured(name: &'static str, goal: &'static str, why: &str) -> Target {
        Target {
            name,
            goal,
            measured: "—".into(),
            status: Status::NotMeasured,
            note: why.to_string(),
        }
    }
}

pub fn targets(raw: &Raw, a: &Analysis) -> Vec<Target> {
    let mut out = vec![init_phase(raw, a), hashing(raw, a)];
    for (name, bin, goal, limit) in [
        ("basalt-init size", "basalt-init", "≤ 1 MiB stripped", 1u64 << 20),
        ("basalt-agent size", "basalt-agent", "≤ 2 MiB stripped", 2 << 20),
    ] {
        out.push(binary_size(raw, name, bin, goal, limit));
    }
    let agent = a.agent.as_ref();
    for (name, goal, limit, value, unit) in [
        (
            "init peak RSS",
            "≤ 2 MiB",
            2048.0,
            agent.and_then(|s| s.init_hwm_kib),
            "KiB",
        ),
        (
            "agent peak RSS",
            "≤ 6 MiB",
            6144.0,
            agent.and_then(|s| s.agent_hwm_kib),
            "KiB",
        ),
        (
            "apply-to-exec in the guest",
            "≤ 50 ms",
            50.0,
            agent.and_then(|s| s.apply_to_exec_ms),
            "ms",
        ),
    ] {
        out.push(through_the_agent(raw, a, (name, goal, limit, unit), value));
    }
    out
}

/// Init phase ≤ 0.25× busybox, at every size compared.
fn init_phase(raw: &Raw, a: &Analysis) -> Target {
    let (name, goal) = ("init phase vs busybox", "≤ 0.25× busybox");
    if a.comparisons.is_empty() {
        return Target::not_measured(name, goal, "the boots were not run");
    }
    let worst = a.comparisons.iter().map(|c| c.ratio).fold(f64::MIN, f64::max);
    let measured: Vec<String> = a
        .comparisons
        .iter()
        .map(|c| format!("{:.2}× at {} MiB", c.ratio, c.mib))
        .collect();
    Target::judged(name, goal, measured.join(", "), worst <= 0.25, || {
        init_phase_note(raw, a)
    })
}

fn find_hash(a: &Analysis, tool: Tool) -> Option<&HashRow> {
    a.hash.iter().find(|r| r.tool == tool)
}

/// Hashing ≥ 0.95× openssl natively.
fn hashing(raw: &Raw, a: &Analysis) -> Target {
    let (name, goal) = ("hashing vs openssl (native)", "≥ 0.95× openssl");
    let (Some(b), Some(o)) = (find_hash(a, Tool::Basalt), find_hash(a, Tool::Openssl)) else {
        return Target::not_measured(name, goal, "part 3 was not run");
    };
    let measured = format!("{:.2}× ({:.2} vs {:.2} GiB/s)", b.vs_openssl, b.gib_per_s, o.gib_per_s);
    Target::judged(name, goal, measured, b.vs_openssl >= 0.95, || {
        format!(
            "basalt's routine (ring, {} KiB reads) reached {:.2} GiB/s against openssl's {:.2}; both use the CPU's \
             SHA extensions when it has them ({}), so the gap is the read size or the copy: see the per-tool spread \
             before changing CHUNK in init/src/digest.rs",
            basalt_init::digest::CHUNK / 1024,
            b.gib_per_s,
            o.gib_per_s,
            raw.hash.as_ref().map(|h| h.cpu.as_str()).unwrap_or("unknown CPU")
        )
    })
}

fn binary_size(raw: &Raw, name: &'static str, bin: &str, goal: &'static str, limit: u64) -> Target {
    let Some(b) = raw.binaries.iter().find(|b| b.name == bin) else {
        let why = raw
            .binaries_missing
            .iter()
            .find(|(n, _)| n == bin)
            .map(|(_, why)| why.as_str());
        return Target::not_measured(name, goal, why.unwrap_or("part 4 was not run"));
    };
    let measured = format!("{} KiB", b.stripped.div_ceil(1024));
    Target::judged(name, goal, measured, b.stripped <= limit, || {
        format!(
            "{} KiB over; the largest contributors are found with `cargo bloat --release --target \
             x86_64-unknown-linux-musl -p {bin}`",
            (b.stripped - limit).div_ceil(1024)
        )
    })
}

/// Memory and apply latency, through the agent: a median against a limit.
fn through_the_agent(
    raw: &Raw,
    a: &Analysis,
    (name, goal, limit, unit): (&'static str, &'static str, f64, &str),
    value: Option<Summary>,
) -> Target {
    let Some(s) = value else {
        let why = raw.agent_missing.as_deref().unwrap_or("parts 5 and 6 were not run");
        return Target::not_measured(name, goal, why);
    };
    let measured = format!("{:.0} {unit} (median of {})", s.median, s.n);
    Target::judged(name, goal, measured, s.median <= limit, || match unit {
        "ms" => apply_note(raw, a, s.median - limit),
        _ => format!(
            "{:.0} {unit} over the target at the median; the per-run figures are in results.json",
            s.median - limit
        ),
    })
}

/// `parts` as one sentence: joined by semicolons, capitalised, a full stop.
fn sentence(parts: &[String]) -> String {
    let note = parts.join("; ") + ".";
    let mut chars = note.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().collect::<String>() + chars.as_str(),
        None => String::new(),
    }
}

/// Why the apply is slower than the target, from figures measured in the
/// same guests: what a signature check and a program start cost there.
fn apply_note(raw: &Raw, a: &Analysis, over: f64) -> String {
    let mut parts = vec![format!("{over:.0} ms over at the median")];
    let mut stages: Vec<(&str, f64)> = a
        .agent
        .iter()
        .flat_map(|s| s.stages_ms.iter().map(|(n, x)| (n.as_str(), x.median)))
        .collect();
    stages.sort_by(|x, y| y.1.total_cmp(&x.1));
    if !stages.is_empty() {
        let listed: Vec<String> = stages.iter().map(|(n, x)| format!("{n} {x:.1} ms")).collect();
        parts.push(format!(
            "the agent's own split of the apply, by median, is {}",
            listed.join(", ")
        ));
    }
    let manifest = a
        .steps
        .iter()
        .find(|s| s.name == "manifest")
        .and_then(|s| s.per_size.first())
        .map(|p| p.1.median);
    let spawn = a.edges.as_ref().map(|e| e.spawn_to_handoff_ms.median);
    if let (Some(m), Some(sp)) = (manifest, spawn) {
        parts.push(format!(
            "for scale, in the same {} guests basalt-init's manifest step (reading and checking one Ed25519 \
             signature) takes {m:.0} ms and starting its handoff program {sp:.0} ms (part 2)",
            raw.accel.to_uppercase()
        ));
    }
    if raw.accel == "tcg" {
        parts.push(
            "signature checks, hashing and process creation are all emulated here and take well under a \
             millisecond each on KVM or hardware, so the first step to close it is the same measurement where \
             KVM works (BASALT_ACCEL=kvm); if it still misses there, the largest stages above are where to cut"
                .into(),
        );
    }
    sentence(&parts)
}

/// Why the init phase is where it is against busybox, from the figures.
fn init_phase_note(raw: &Raw, a: &Analysis) -> String {
    let Some(c) = a.comparisons.iter().max_by_key(|c| c.mib) else {
        return String::new();
    };
    let mut parts = Vec::new();
    if let (Some(bh), Some(bbh)) = (c.basalt_hash, c.busybox_hash) {
        let mib = c.image_bytes as f64 / (1u64 << 20) as f64;
        let share = bh.median / c.basalt.median * 100.0;
        parts.push(format!(
            "at {} MiB hashing the image is {share:.0}% of basalt's phase: {:.0} ms for basalt ({:.0} MiB/s) \
             against {:.0} ms for busybox sha256sum ({:.0} MiB/s) in the guest under {}",
            c.mib,
            bh.median,
            mib / (bh.median / 1e3),
            bbh.median,
            mib / (bbh.median / 1e3),
            raw.accel.to_uppercase()
        ));
        if let Some((rest_b, rest_bb)) = c.rest() {
            parts.push(format!(
                "everything else takes {rest_b:.0} ms (basalt) against {rest_bb:.0} ms (busybox)"
            ));
        }
        if raw.accel == "tcg" {
            parts.push(
                "TCG offers the guest no SHA extensions and emulates vector code slowly, so every SHA-256 runs at \
                 about the same speed and no init can be 4× faster while it reads the whole image"
                    .into(),
            );
        }
    }
    if let (Some(b), Some(bb)) = (find_hash(a, Tool::Basalt), find_hash(a, Tool::Busybox)) {
        parts.push(format!(
            "natively basalt's routine hashes {:.1}× faster than busybox sha256sum (part 3), which a KVM guest \
             would keep",
            b.gib_per_s / bb.gib_per_s
        ));
    }
    parts.push(
        "what would close it on any accelerator: stop hashing the whole image before the mount, with dm-verity \
         (a hash tree checked per block as it is read, its root hash in the signed manifest), which makes the \
         phase independent of the image size"
            .into(),
    );
    sentence(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{analyse, tests_support::sample_raw, AgentRuns};
    use crate::sizes::BinarySize;

    /// The sample boots, two binaries (one too large) and no agent figures.
    fn raw() -> Raw {
        let mut r = sample_raw();
        let size = |name: &str, as_built, stripped| BinarySize {
            name: name.into(),
            path: "/b".into(),
            as_built,
            stripped,
        };
        r.binaries = vec![
            size("basalt-init", 900_000, 800_000),
            size("basalt-agent", 3 << 20, (2 << 20) + 10),
        ];
        r.agent_missing = Some("the agent is not ready".into());
        r
    }

    fn by_name(r: &Raw, n: &str) -> Target {
        analyse(r).targets.iter().find(|t| t.name == n).unwrap().clone()
    }

    #[test]
    fn targets_say_where_they_stand() {
        let r = raw();
        let by_name = |n: &str| by_name(&r, n);
        let phase = by_name("init phase vs busybox");
        assert_eq!(phase.status, Status::Missed);
        assert_eq!(phase.measured, "1.01× at 64 MiB");
        assert!(
            phase
                .note
                .starts_with("At 64 MiB hashing the image is 78% of basalt's phase"),
            "{}",
            phase.note
        );
        assert!(
            phase.note.contains("TCG offers the guest no SHA extensions"),
            "{}",
            phase.note
        );
        assert!(phase.note.contains("dm-verity"), "{}", phase.note);
        assert_eq!(by_name("basalt-init size").status, Status::Met);
        let agent = by_name("basalt-agent size");
        assert_eq!((agent.status, agent.measured.as_str()), (Status::Missed, "2049 KiB"));
        assert!(agent.note.starts_with("1 KiB over"));
        let hash = by_name("hashing vs openssl (native)");
        assert_eq!(
            (hash.status, hash.note.as_str()),
            (Status::NotMeasured, "part 3 was not run")
        );
        let rss = by_name("agent peak RSS");
        assert_eq!(
            (rss.status, rss.note.as_str()),
            (Status::NotMeasured, "the agent is not ready")
        );
    }

    #[test]
    fn agent_targets_say_where_they_stand() {
        let mut r = raw();
        r.agent = Some(AgentRuns {
            init_hwm_kib: vec![900.0, 1000.0, 1100.0],
            agent_hwm_kib: vec![7000.0],
            apply_to_exec_ms: vec![20.0],
            end_to_end_ms: vec![300.0],
            stages_ms: vec![("verify".into(), vec![15.0, 16.0, 17.0]), ("spawn".into(), vec![28.0])],
            method: String::new(),
            accel: "tcg".into(),
            accel_reason: String::new(),
        });
        assert_eq!(by_name(&r, "init peak RSS").status, Status::Met);
        assert_eq!(by_name(&r, "init peak RSS").measured, "1000 KiB (median of 3)");
        let agent_rss = by_name(&r, "agent peak RSS");
        assert_eq!(agent_rss.status, Status::Missed);
        assert!(
            agent_rss.note.starts_with("856 KiB over the target"),
            "{}",
            agent_rss.note
        );
        assert_eq!(by_name(&r, "apply-to-exec in the guest").status, Status::Met);

        r.agent.as_mut().unwrap().apply_to_exec_ms = vec![90.0, 100.0, 110.0];
        let apply = by_name(&r, "apply-to-exec in the guest");
        assert_eq!(apply.status, Status::Missed);
        assert!(
            apply.note.starts_with(
                "50 ms over at the median; the agent's own split of the apply, by median, is spawn 28.0 ms, verify \
                 16.0 ms; for scale, in the same TCG guests basalt-init's manifest step"
            ),
            "{}",
            apply.note
        );
        assert!(
            apply.note.contains("spawn") && apply.note.contains("BASALT_ACCEL=kvm"),
            "{}",
            apply.note
        );
    }
}
