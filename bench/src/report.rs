#![cfg(feature = "host")]
//! results.md and results.json: pure builders over the analysis. The page's
//! layout and prose are bench/results.template.md; [`figures`] names every
//! figure and [`Table`] it fills in, so a rerun changes only the figures.

use crate::boots::{Init, Root, CMDLINE};
use crate::hashing::Tool;
use crate::results::{AgentSummary, Analysis, Raw, Size};
use crate::table::{fmt_kib, fmt_mib, fmt_ms, fmt_summary, Cell, Table, Unit};
use crate::targets::Status;
use crate::template::{self, Figures, Page};

/// results.json's layout; `render` reads only this one.
pub const FORMAT: u64 = 2;

pub const TEMPLATE: &str = include_str!("../results.template.md");

pub fn markdown(raw: &Raw, a: &Analysis) -> String {
    template::render(TEMPLATE, &figures(raw, a)).text
}

/// results.json: the run's raw data (which [`load`] reads back), the
/// figures derived from it, and every table of results.md under its
/// section's heading.
pub fn json(raw: &Raw, a: &Analysis) -> String {
    let figures = figures(raw, a);
    let Page { tables, .. } = template::render(TEMPLATE, &figures);
    let doc = serde_json::json!({
        "format": FORMAT,
        "units": "ms unless a key ends in _us (microseconds since boot), _s, _kib or bytes",
        "raw": raw,
        "analysis": a,
        "tables": tables,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

/// The raw data of a results.json that [`json`] wrote.
pub fn load(text: &str) -> Result<Raw, String> {
    #[derive(serde::Deserialize)]
    struct Stored {
        format: u64,
        raw: Raw,
    }
    let stored: Stored = serde_json::from_str(text).map_err(|e| e.to_string())?;
    match stored.format {
        FORMAT => Ok(stored.raw),
        other => Err(format!("format {other}, and this basalt-bench reads format {FORMAT}")),
    }
}

/// Every figure and table the template names, section by section.
pub fn figures(raw: &Raw, a: &Analysis) -> Figures {
    let mut f = Figures::default();
    environment(&mut f, raw);
    f.table("targets", targets(a));
    f.table("comparisons", comparisons(a));
    steps(&mut f, a);
    hashing(&mut f, raw, a);
    sizes(&mut f, raw);
    agent(&mut f, raw, a);
    scaling(&mut f, a);
    disk(&mut f, raw, a);
    upgrade(&mut f, raw, a);
    f
}

fn environment(f: &mut Figures, raw: &Raw) {
    f.set("accel", raw.accel.to_uppercase());
    f.set("accel_reason", &raw.accel_reason);
    f.set("guest_cpus", raw.guest_cpus);
    f.set("kernel_release", &raw.kernel_release);
    f.set("cmdline", CMDLINE);
    f.set("host_cpu", &raw.host_cpu);
    f.set("qemu_version", &raw.qemu_version);
    f.set("host_cpus", raw.host_cpus);
    if let Some(l) = raw.host_load() {
        f.set("host_load", format!("{:.1}, {:.1}–{:.1}", l.median, l.min, l.max));
    }
    let parts: Vec<String> = raw
        .part_seconds
        .iter()
        .map(|(n, s)| format!("{n} {:.1}", s / 60.0))
        .collect();
    f.set(
        "part_minutes",
        if parts.is_empty() {
            "no part run".into()
        } else {
            parts.join(", ")
        },
    );
    f.set("suite_minutes", format!("{:.1}", raw.suite_seconds / 60.0));
}

fn targets(a: &Analysis) -> Table {
    use Unit::Text as T;
    let mut t = Table::new(&[("Target", T), ("Goal", T), ("Measured", T), ("Status", T), ("Note", T)]);
    for x in &a.targets {
        let status = match x.status {
            Status::Met | Status::Missed => Cell::Strong(x.status.as_str().into()),
            Status::NotMeasured => x.status.as_str().into(),
        };
        let (name, goal, measured, note) = (
            x.name.into(),
            x.goal.into(),
            x.measured.as_str().into(),
            x.note.as_str(),
        );
        t.row(vec![name, goal, measured, status, note.into()]);
    }
    t
}

/// A table with a row per image size: the size, its guest's RAM and the
/// runs first, then `columns`.
fn image_table(columns: &[(&str, Unit)]) -> Table {
    let first = [("Image", Unit::Text), ("Guest RAM", Unit::Text), ("Runs", Unit::Text)];
    Table::new(&[&first, columns].concat())
}

/// A row of an [`image_table`]: "64 MiB (64.0 MiB)" (the nominal size and
/// the image's real one), the RAM, the runs, then `figures`.
fn image_row(size: &Size, runs: String, figures: Vec<Cell>) -> Vec<Cell> {
    let name = format!("{} MiB ({})", size.mib, fmt_mib(size.bytes));
    let first = vec![name.into(), format!("{} MiB", size.memory_mib).into(), runs.into()];
    [first, figures].concat()
}

/// Part 1.
fn comparisons(a: &Analysis) -> Table {
    use Unit::{Ms, Times};
    let mut t = image_table(&[
        ("basalt ms", Ms),
        ("busybox ms", Ms),
        ("basalt / busybox", Times),
        ("hashing: basalt ms", Ms),
        ("hashing: busybox ms", Ms),
    ])
    .bold("basalt / busybox");
    for c in &a.comparisons {
        let runs = format!("{} + {}", c.basalt_runs.len(), c.busybox_runs.len());
        let (basalt, busybox, ratio) = (Cell::Summary(c.basalt), Cell::Summary(c.busybox), Cell::Num(c.ratio));
        t.row(image_row(
            &c.size,
            runs,
            vec![basalt, busybox, ratio, c.basalt_hash.into(), c.busybox_hash.into()],
        ));
    }
    if a.comparisons.is_empty() {
        t.row([vec!["not run".into()], vec![Cell::Blank; 7]].concat());
    }
    t
}

/// Part 2: a column per image size, and the edges the report leaves out.
fn steps(f: &mut Figures, a: &Analysis) {
    let sizes: Vec<u64> = a
        .steps
        .first()
        .map(|s| s.per_size.iter().map(|p| p.mib).collect())
        .unwrap_or_default();
    let titles: Vec<String> = sizes.iter().map(|mib| format!("{mib} MiB")).collect();
    let mut columns = vec![("Step", Unit::Text)];
    columns.extend(titles.iter().map(|t| (t.as_str(), Unit::Ms)));
    let mut t = Table::new(&columns);
    for s in &a.steps {
        let at = |mib: &u64| s.per_size.iter().find(|p| p.mib == *mib).map(|p| p.duration_ms).into();
        t.row([vec![s.name.as_str().into()], sizes.iter().map(at).collect()].concat());
    }
    f.table("steps", t);
    if let Some(e) = &a.edges {
        f.set("fixture_minus_report", fmt_ms(e.fixture_minus_report_ms.median));
        f.set("exec_to_main", fmt_summary(&e.exec_to_main_ms));
        f.set("spawn_to_handoff", fmt_summary(&e.spawn_to_handoff_ms));
        f.set("clock_offset", fmt_summary(&e.clock_offset_ms));
    }
}

/// Part 3.
fn hashing(f: &mut Figures, raw: &Raw, a: &Analysis) {
    f.flag("hash_not_run", raw.hash.is_none());
    let Some(h) = &raw.hash else {
        return;
    };
    f.set("hash_file", fmt_mib(h.bytes));
    f.set("hash_rounds", h.rounds);
    f.set("hash_cpu", &h.cpu);
    f.set("openssl_version", &h.openssl_version);
    use Unit::{GibPerS, Seconds, Text, Times};
    let mut t = Table::new(&[
        ("Tool", Text),
        ("Seconds", Seconds),
        ("GiB/s", GibPerS),
        ("vs openssl", Times),
    ]);
    for r in &a.hash {
        let figures = [
            Cell::Summary(r.seconds),
            Cell::Num(r.gib_per_s),
            Cell::Num(r.vs_openssl),
        ];
        t.row([&[r.tool.label().into()], &figures[..]].concat());
    }
    f.table("hash", t);
    let rate = |t: Tool| a.hash_of(t).map(|r| r.gib_per_s);
    if let (Some(copy), Some(ossl), Some(cp)) = (rate(Tool::BasaltCopy), rate(Tool::Openssl), rate(Tool::Cp)) {
        f.set("copy_rate", format!("{copy:.2}"));
        f.set("two_pass_rate", format!("{:.2}", 1.0 / (1.0 / ossl + 1.0 / cp)));
    }
}

/// Part 4.
fn sizes(f: &mut Figures, raw: &Raw) {
    let columns = [
        ("Binary", Unit::Text),
        ("As built", Unit::Bytes),
        ("`strip --strip-all`", Unit::Bytes),
    ];
    let mut t = Table::new(&columns);
    for b in &raw.binaries {
        t.row(vec![
            b.name.as_str().into(),
            Cell::Num(b.as_built as f64),
            Cell::Num(b.stripped as f64),
        ]);
    }
    for (name, why) in &raw.binaries_missing {
        t.row(vec![
            name.as_str().into(),
            format!("not measured: {why}").into(),
            Cell::Blank,
        ]);
    }
    f.table("binaries", t);
    match (&raw.initramfs, &raw.initramfs_missing) {
        (Some(b), _) => {
            let kib = [
                ("total", b.total),
                ("image", b.image),
                ("modules", b.modules),
                ("init", b.init),
            ];
            for (name, bytes) in kib.into_iter().chain([("overhead", b.overhead())]) {
                f.set(&format!("initramfs_{name}"), fmt_kib(bytes));
            }
            f.set("module_count", b.module_count);
            f.set("initramfs_manifest", b.manifest);
            f.set("initramfs_framing", b.framing);
        }
        (None, Some(why)) => f.set("initramfs_missing", why),
        (None, None) => f.flag("initramfs_unknown", true),
    }
}

/// Parts 5 and 6.
fn agent(f: &mut Figures, raw: &Raw, a: &Analysis) {
    if let Some(hwm) = &a.handoff_hwm_kib {
        f.set("handoff_hwm", fmt_summary(hwm));
    }
    let Some(s) = &a.agent else {
        match &raw.agent_missing {
            Some(why) => f.set("agent_missing", why),
            None => f.flag("agent_not_run", true),
        }
        return;
    };
    f.flag("agent", true);
    let mut t = Table::new(&[("Process", Unit::Text), ("VmHWM KiB", Unit::KiB)]);
    t.row(vec!["basalt-init (PID 1)".into(), s.init_hwm_kib.into()]);
    t.row(vec!["basalt-agent".into(), s.agent_hwm_kib.into()]);
    f.table("memory", t);
    let mut rows = vec![
        (
            "In the guest: agent receives the apply → kubelet exec (agent's timestamps)".into(),
            s.apply_to_exec_ms,
        ),
        (
            "End to end: `basaltctl apply` → service reported running".into(),
            s.end_to_end_ms,
        ),
    ];
    let stages = s
        .stages_ms
        .iter()
        .map(|(n, x)| (format!("In the guest, stage `{n}` (agent's split)"), Some(*x)));
    rows.extend(stages);
    f.table("apply", measures(rows));
    if let Some(method) = raw.agent.as_ref().map(|x| x.method.as_str()).filter(|m| !m.is_empty()) {
        f.set("agent_method", method);
    }
    persisted(f, s, a);
}

/// Issue 12's figures: the same apply with a STATE disk, the node booted
/// again on it, and the floor.
fn persisted(f: &mut Figures, s: &AgentSummary, a: &Analysis) {
    let Some(p) = &s.persisted else {
        return;
    };
    f.flag("persisted", true);
    let mut rows = vec![
        (
            "Apply → ack (`basaltctl apply` returns), `basalt.state=none`".into(),
            s.ack_ms,
        ),
        ("Apply → ack, STATE disk attached".into(), Some(p.ack_ms)),
        (
            "In the guest, apply → kubelet exec, STATE disk attached".into(),
            Some(p.apply_to_exec_ms),
        ),
        (
            "Boot → kubelet running: boot, then a manual apply".into(),
            s.boot_to_running_ms,
        ),
        (
            "Boot → kubelet running: the persisted config, no apply".into(),
            Some(p.boot_to_running_ms),
        ),
    ];
    rows.extend(
        p.stages_ms
            .iter()
            .map(|(n, x)| (format!("STATE disk attached, stage `{n}`"), Some(*x))),
    );
    f.table("persisted", measures(rows));
    if let Some(r) = p.ack_ratio {
        f.set("ack_ratio", format!("{r:.2}"));
    }
    if let Some(fl) = &a.floor {
        let ms = [
            ("signature", fl.signature_ms),
            ("spawn", fl.spawn_ms),
            ("write", fl.flushed_write_ms),
        ];
        for (name, x) in ms.into_iter().chain([("total", fl.total_ms)]) {
            f.set(&format!("floor_{name}"), fmt_ms(x));
        }
        f.set("floor_ratio", format!("{:.2}", fl.ratio));
    }
}

/// A two-column table of what was measured, in ms.
fn measures(rows: Vec<(String, Option<crate::stats::Summary>)>) -> Table {
    let mut t = Table::new(&[("Measure", Unit::Text), ("ms", Unit::Ms)]);
    for (name, x) in rows {
        t.row(vec![name.into(), x.into()]);
    }
    t
}

fn range(xs: &[f64]) -> (f64, f64) {
    let lo = xs.iter().copied().fold(f64::MAX, f64::min);
    (lo, xs.iter().copied().fold(f64::MIN, f64::max))
}

/// Part 7, and whether the phase grows linearly. Linear means
/// verify-image, the only step that reads the image, runs at about the
/// same rate (MiB/s, at the medians) at every size: within 25% of each other.
fn scaling(f: &mut Figures, a: &Analysis) {
    use Unit::{Ms, Percent};
    let columns = [
        ("PID1 phase ms", Ms),
        ("verify-image ms", Ms),
        ("verify share", Percent),
        ("kernel to /init ms", Ms),
    ];
    let mut t = image_table(&columns);
    for p in &a.scaling.points {
        let share = p
            .verify
            .map_or(Cell::Missing, |v| Cell::Num(v.median / p.phase.median * 100.0));
        let figures = vec![Cell::Summary(p.phase), p.verify.into(), share, Cell::Summary(p.kernel)];
        t.row(image_row(&p.size, p.phase.n.to_string(), figures));
    }
    f.table("scaling", t);
    let s = &a.scaling;
    let (Some((intercept, slope, r2)), Some(last)) = (s.fit, s.points.last()) else {
        return f.flag("too_few_sizes", true);
    };
    f.set("fit_intercept", fmt_ms(intercept));
    f.set("fit_slope", format!("{slope:.1}"));
    f.set("fit_r2", format!("{r2:.4}"));
    let with_verify: Vec<(f64, f64)> = s
        .points
        .iter()
        .filter_map(|p| Some((p.size.real_mib(), p.verify?.median)))
        .collect();
    let (Some(last_verify), true) = (
        last.verify,
        with_verify.len() == s.points.len() && with_verify.len() >= 2,
    ) else {
        return f.flag("fit_only", true);
    };
    let rates: Vec<f64> = with_verify.iter().map(|(mib, v)| mib / (v / 1e3)).collect();
    let rest: Vec<f64> = s
        .points
        .iter()
        .zip(&with_verify)
        .map(|(p, (_, v))| p.phase.median - v)
        .collect();
    let ((lo, hi), (rest_lo, rest_hi)) = (range(&rates), range(&rest));
    f.flag("linear", hi <= lo * 1.25);
    f.flag("not_linear", hi > lo * 1.25);
    f.set(
        "verify_rates",
        rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "),
    );
    f.set(
        "scaled_sizes",
        format!("{} to {} MiB", s.points[0].size.mib, last.size.mib),
    );
    f.set("rest_range", format!("{}–{} ms", fmt_ms(rest_lo), fmt_ms(rest_hi)));
    f.set("largest_mib", last.size.mib);
    f.set(
        "largest_share",
        format!("{:.0}", last_verify.median / last.phase.median * 100.0),
    );
}

/// Part 8.
fn disk(f: &mut Figures, raw: &Raw, a: &Analysis) {
    f.flag("disk_not_run", raw.disk_mib.is_empty());
    if raw.disk_mib.is_empty() {
        return;
    }
    f.flag("disk", true);
    use Unit::{Ms, Text, Times};
    let columns = [
        ("Path", Text),
        ("kernel to /init ms", Ms),
        ("PID1 phase ms", Ms),
        ("phase / busybox", Times),
    ];
    let mut t = image_table(&columns);
    let busybox = |mib| a.path_at(Init::Busybox, Root::Initramfs, mib).map(|b| b.phase.median);
    for p in &a.disk {
        let ratio = busybox(p.size.mib).map_or(Cell::Missing, |bb| Cell::Num(p.phase.median / bb));
        let figures = vec![
            p.root.label(p.init).into(),
            Cell::Summary(p.kernel),
            Cell::Summary(p.phase),
            ratio,
        ];
        t.row(image_row(&p.size, p.phase.n.to_string(), figures));
    }
    f.table("disk", t);
}

/// Part 9: a run from before it has neither its figures nor a reason.
fn upgrade(f: &mut Figures, raw: &Raw, a: &Analysis) {
    f.flag(
        "upgrade_section",
        raw.upgrade.is_some() || raw.upgrade_missing.is_some(),
    );
    if let Some(why) = &raw.upgrade_missing {
        f.set("upgrade_missing", why);
    }
    let Some(u) = &a.upgrade else {
        return;
    };
    f.flag("upgrade", true);
    f.set("upgrade_root", &u.root);
    f.set("upgrade_image", fmt_mib(u.image_bytes));
    f.set("upgrade_bundle", fmt_mib(u.bundle_bytes));
    f.set("upgrade_runs", u.upgrade_data_mib_s.n);
    f.set("upgrade_ratio", format!("{:.2}", u.ratio));
    f.set("upgrade_end_ratio", format!("{:.2}", u.end_to_end_ratio));
    f.set("upgrade_begin", fmt_summary(&u.begin_ms));
    let split: Vec<String> = u.node_ms.iter().map(|(k, v)| format!("{k} {:.0}", v.median)).collect();
    f.set(
        "upgrade_split",
        match split.is_empty() {
            true => "not reported by this agent".to_string(),
            false => split.join(", "),
        },
    );
    let mut t = Table::new(&[("Measure", Unit::Text), ("MiB/s", Unit::MibPerS)]);
    let rows = [
        (
            "Upgrade, data phase: first `upgrade-data` → the answer to the last piece but one",
            u.upgrade_data_mib_s,
        ),
        (
            "Raw copy: first byte → the fixture's answer after its last pwrite",
            u.raw_written_mib_s,
        ),
        (
            "Upgrade: first `upgrade-data` → staged (the last piece, flush, read-back, verity rebuild)",
            u.upgrade_total_mib_s,
        ),
        ("Raw copy: first byte → the answer after its fsync", u.raw_synced_mib_s),
    ];
    for (name, x) in rows {
        t.row(vec![name.into(), Cell::Summary(x)]);
    }
    f.table("upgrade", t);
    let Some(r) = &u.rebooted else {
        return;
    };
    f.flag("upgrade_rebooted", true);
    f.set("health_window", format!("{:.0}", u.health_window_ms as f64 / 1e3));
    let mut t = Table::new(&[("Measure", Unit::Text), ("s", Unit::Seconds)]);
    let rows = [
        ("`upgrade --reboot` → staged (transfer and checks)", r.transfer_s),
        (
            "staged → the agent ready on ROOT-B (reboot; its console line)",
            r.reboot_to_agent_s,
        ),
        ("agent ready → kubelet running on ROOT-B", r.agent_to_kubelet_s),
        (
            "**`upgrade --reboot` → kubelet running on ROOT-B**",
            r.upgrade_to_kubelet_s,
        ),
        ("kubelet running → blessed (health window)", r.kubelet_to_blessed_s),
        ("`upgrade --reboot` → blessed", r.upgrade_to_blessed_s),
    ];
    for (name, x) in rows {
        t.row(vec![name.into(), Cell::Summary(x)]);
    }
    f.table("upgrade_reboot", t);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{analyse, tests_support};
    use crate::svg;

    fn headings(md: &str) -> Vec<&str> {
        md.lines().filter(|l| l.starts_with('#')).collect()
    }

    fn has_lines(md: &str, lines: &[&str]) {
        for want in lines {
            assert!(md.lines().any(|l| l == *want), "missing line {want:?} in:\n{md}");
        }
    }

    /// The committed run renders to the committed files, byte for byte: the
    /// loader loses nothing the reports show, and the layout is the one
    /// bench/results.md has.
    #[test]
    fn the_committed_run_renders_to_the_committed_files() {
        let raw = load(include_str!("../results.json")).unwrap();
        let a = analyse(&raw);
        let (md, want_md) = (markdown(&raw, &a), include_str!("../results.md"));
        for (got, want) in md.lines().zip(want_md.lines()) {
            assert_eq!(got, want);
        }
        assert_eq!(md, want_md);
        assert_eq!(json(&raw, &a), include_str!("../results.json"));
        assert_eq!(svg::timeline(&a, &raw.accel), include_str!("../timeline.svg"));
        assert_eq!(svg::scaling(&a, &raw.accel), include_str!("../scaling.svg"));
        assert_eq!(svg::disk(&a, &raw.accel), include_str!("../disk.svg"));
    }

    #[test]
    fn markdown_and_json_layout() {
        let mut raw = tests_support::sample_raw();
        (raw.accel_reason, raw.host_cpus) = ("cached".into(), 2);
        raw.agent_missing = Some("the agent is not ready".into());
        raw.initramfs = tests_support::agent_raw().initramfs;
        let a = analyse(&raw);
        let md = markdown(&raw, &a);
        // Every section, whatever was not measured: the title and eight
        // parts. Part 9 shows only in a run that tried it (this sample
        // predates it; the committed results.md has it).
        let committed = headings(include_str!("../results.md"));
        let without_9: Vec<_> = committed.into_iter().filter(|h| !h.starts_with("## 9.")).collect();
        assert_eq!(headings(&md), without_9);
        assert!(md.ends_with("## 8. Booting from a disk: dm-verity in both root modes\n\nNot measured in this run.\n"));
        has_lines(&md, &[
            "- Accelerator: **TCG** (cached)",
            "- Host load as each boot started (1-minute load average on 2 CPUs; the boot's own QEMU adds about 1 once running): median 1.5, 1.5–1.5",
            "| 64 MiB (64.0 MiB) | 512 MiB | 5 + 5 | 1920 (1900–1940) | 1900 (1880–1920) | **1.01×** | 1500 (1500–1500) | 1440 (1440–1440) |",
            "| Step | 64 MiB | 256 MiB |",
            "| verify-image | 1500 (1500–1500) | 6500 (6500–6500) |",
            "Not run.",
            "initramfs (`make image`): 68360 KiB in all = root image 65430 KiB + 9 kernel modules 1954 KiB + **overhead 977 KiB** (basalt-init 879 KiB, signed manifest 1200 B, cpio headers, names and padding 98800 B).",
            "| agent peak RSS | ≤ 6 MiB | — | not measured | the agent is not ready |",
            "Not measured: the agent is not ready.",
            "| 256 MiB (256.0 MiB) | 512 MiB | 3 | 7000 (7000–7000) | 6500 (6500–6500) | 93% | 5000 (5000–5000) |",
            "The phase grows linearly with the image: verify-image, which reads and hashes every byte, runs at about the same rate at every size (43, 39 MiB/s from 64 to 256 MiB), and everything else takes 420–500 ms whatever the size. A least-squares line through the medians: 227 ms + 26.5 ms per MiB (r² = 1.0000). At 256 MiB verify-image is 93% of the phase: the time goes into SHA-256 over the image.",
            "![boot timeline](timeline.svg)",
            "![PID1 phase against image size](scaling.svg)",
        ]);
        assert!(
            !md.contains("  ") && !md.contains("\n\n\n"),
            "a double space or blank line in:\n{md}"
        );
        for t in &a.targets {
            assert!(!t.note.contains("  "), "a double space in {:?}", t.note);
        }
        let text = json(&raw, &a);
        let j: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!((&j["format"], &j["raw"]["accel"]), (&FORMAT.into(), &"tcg".into()));
        assert_eq!(
            j["analysis"]["comparisons"][0]["basalt_runs"].as_array().unwrap().len(),
            5
        );
        assert_eq!(j["raw"]["boots"].as_array().unwrap().len(), 13);
        assert_eq!(j["analysis"]["targets"][0]["status"], "missed");
        assert_eq!(j["tables"]["Targets"][0]["columns"][0]["title"], "Target");
        assert_eq!(j["tables"]["basalt benchmarks"], serde_json::json!([]));
    }

    /// Part 8: a row per path and size, busybox's phase beside at 64 MiB;
    /// and issue 12's persisted applies.
    #[test]
    fn disk_boots_and_persisted_applies_render() {
        let raw = tests_support::agent_raw();
        let a = analyse(&raw);
        let md = markdown(&raw, &a);
        has_lines(&md, &[
            "| 64 MiB (64.0 MiB) | 512 MiB | 5 | basalt, disk, ram mode | 4000 (4000–4000) | 950 (950–950) | 0.50× |",
            "| 1024 MiB (1024.0 MiB) | 512 MiB | 5 | basalt, disk, disk mode | 4000 (4000–4000) | 400 (400–400) | — |",
            "![kernel to /init and PID1 phase against image size, per path](disk.svg)",
            "| Apply → ack, STATE disk attached | 40.0 (40.0–40.0) |",
            "| STATE disk attached, stage `persist` | 20.0 (20.0–20.0) |",
            "| Boot → kubelet running: the persisted config, no apply | 9000 (9000–9000) |",
        ]);
        let svg = svg::disk(&a, "tcg");
        // Two charts of four series each (both inits from the initramfs at
        // 64 MiB, ram and disk mode at both sizes): one line each.
        assert_eq!(svg.matches("<polyline ").count(), 8);
        assert_eq!(svg.matches("<circle ").count(), 2 * (1 + 1 + 2 + 2));
        assert!(svg.contains("basalt, disk, disk mode (median; bars: min–max)"));
    }

    /// Part 9: its section and tables, a line for each figure; without it,
    /// the section says why, or is not there at all in a run from before.
    #[test]
    fn upgrades_render() {
        let raw = tests_support::upgrade_raw();
        let md = markdown(&raw, &analyse(&raw));
        has_lines(&md, &[
            "## 9. Upgrades: writing slot B over vsock, and booting it",
            "| Upgrade, data phase: first `upgrade-data` → the answer to the last piece but one | 10.0 (8.0–16.0) |",
            "| Raw copy: first byte → the fixture's answer after its last pwrite | 20.0 (16.0–32.0) |",
            "| **`upgrade --reboot` → kubelet running on ROOT-B** | 30.500 (30.500–30.500) |",
            "| kubelet running → blessed (health window) | 5.500 (5.500–5.500) |",
            "The upgrade's data phase writes at **0.50×** the raw copy's rate. To the staged answer, which adds the flush, reading the whole slot back and rebuilding its dm-verity tree, it is 0.50× the raw copy with its fsync. The signed `upgrade` request before the data (the agent checks the manifest, clears the slot and creates the staging file) took 100 (100–100) ms. The agent's own split of an upgrade (its `costs_ms`, median ms over the runs): check 1920, write 1280; wait is from answering one piece to having read the next (the wire and the guest kernel's receive path), parse the request, check each chunk's SHA-256, write into ROOT-B and the ESP, verify the read-back and dm-verity rebuild.",
            "| upgrade write throughput over vsock | ≥ 0.7× a raw vsock copy of the same bytes | 0.50× (10.0 vs 20.0 MiB/s) | **missed** | every 1 MiB chunk is hashed (SHA-256) in the guest before it is written, and the UKI goes through the ESP's vfat, on the same single emulated CPU that receives the bytes; the raw copy does neither; the agent's split of an upgrade: check 1920 ms, write 1280 ms (part 9) |",
        ]);
        assert!(!md.contains("\n\n\n") && !md.contains("Not measured: failed"), "{md}");
        let j: serde_json::Value = serde_json::from_str(&json(&raw, &analyse(&raw))).unwrap();
        let section = &j["tables"]["9. Upgrades: writing slot B over vsock, and booting it"];
        assert_eq!(section.as_array().map(Vec::len), Some(2), "{:#}", j["tables"]);
        assert_eq!(section[0]["columns"][1]["unit"], "MiB/s");
        let mut failed = tests_support::disk_raw();
        failed.upgrade_missing = Some("failed: the VM exited".into());
        let md = markdown(&failed, &analyse(&failed));
        assert!(
            md.ends_with(
                "## 9. Upgrades: writing slot B over vsock, and booting it\n\nNot measured: failed: the VM exited.\n"
            ),
            "{md}"
        );
        let before = markdown(&tests_support::disk_raw(), &analyse(&tests_support::disk_raw()));
        assert!(!before.contains("## 9.") && !before.contains("upgrade"));
    }

    /// Whatever is missing, what is written is read back and renders the
    /// same; and every placeholder of the template is a figure some run has.
    #[test]
    fn json_round_trips_and_the_template_names_real_figures() {
        let mut partial = tests_support::sample_raw();
        partial.agent_missing = Some("not run (--parts)".into());
        partial.initramfs_missing = Some("not built".into());
        partial.binaries_missing = vec![("basaltctl".into(), "not built".into())];
        let committed = load(include_str!("../results.json")).unwrap();
        // One size without verify-image (only a line fits), and one whose
        // rate is far from the other's (not linear).
        let (mut no_verify, mut not_linear) = (tests_support::sample_raw(), tests_support::sample_raw());
        no_verify
            .boots
            .iter_mut()
            .filter(|b| b.mib == 256)
            .for_each(|b| b.outcome.report = None);
        for b in not_linear.boots.iter_mut().filter(|b| b.mib == 256) {
            b.outcome.report.as_mut().unwrap().steps[2].duration_us = 2_000_000;
        }
        let mut named = std::collections::BTreeSet::new();
        let mut no_upgrade = tests_support::disk_raw();
        no_upgrade.upgrade_missing = Some("failed: the VM exited".into());
        for raw in [
            partial,
            Raw::default(),
            no_upgrade,
            tests_support::upgrade_raw(),
            tests_support::disk_raw(),
            tests_support::agent_raw(),
            committed,
            no_verify,
            not_linear,
        ] {
            let written = json(&raw, &analyse(&raw));
            let back = load(&written).unwrap();
            assert_eq!(json(&back, &analyse(&back)), written);
            assert_eq!(markdown(&back, &analyse(&back)), markdown(&raw, &analyse(&raw)));
            named.extend(figures(&raw, &analyse(&raw)).names().map(String::from));
        }
        for name in template::placeholders(TEMPLATE) {
            assert!(named.contains(name), "no run has the figure {{{name}}}");
        }
    }

    /// A results.json that is not one is refused, saying what is wrong.
    #[test]
    fn load_errors_name_the_fault() {
        let v: serde_json::Value = serde_json::from_str(include_str!("../results.json")).unwrap();
        let cases: &[(&str, serde_json::Value, &str)] = &[
            ("/format", 1.into(), "format 1, and this basalt-bench reads format 2"),
            (
                "/raw/accel",
                serde_json::Value::Null,
                "invalid type: null, expected a string",
            ),
            (
                "/raw/boots/3/init",
                "systemd".into(),
                "unknown variant `systemd`, expected `basalt` or `busybox`",
            ),
            (
                "/raw/boots/0/outcome/report/steps/2/start_us",
                "x".into(),
                "invalid type: string \"x\", expected u64",
            ),
            ("/raw/hash/times/1/0", "md5".into(), "unknown variant `md5`"),
        ];
        for (at, value, want) in cases {
            let mut bad = v.clone();
            *bad.pointer_mut(at).unwrap() = value.clone();
            let err = load(&bad.to_string()).unwrap_err();
            assert!(err.starts_with(want), "{at}: {err}");
        }
        let mut bad = v.clone();
        bad["raw"].as_object_mut().unwrap().remove("boots");
        assert!(load(&bad.to_string()).unwrap_err().starts_with("missing field `boots`"));
    }
}
