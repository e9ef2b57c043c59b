#![cfg(feature = "host")]
//! results.json read back into [`Raw`], so results.md and the pictures can be
//! rendered again from a run's data without booting anything
//! (`basalt-bench render`). results.json does not record the fixture's pid,
//! the binaries' paths or the agent run's accelerator; none is rendered.

use crate::boots::{BootOutcome, BootReport, Init, Step};
use crate::hashing::{HashRuns, Tool};
use crate::line::Phase;
use crate::results::{AgentRuns, BootRecord, Raw};
use crate::sizes::{BinarySize, Breakdown};
use serde_json::Value;

type Res<T> = Result<T, String>;

fn field<'a>(v: &'a Value, key: &str) -> Res<&'a Value> {
    v.get(key).ok_or_else(|| format!("{key} missing"))
}

fn u64_of(v: &Value, key: &str) -> Res<u64> {
    field(v, key)?
        .as_u64()
        .ok_or_else(|| format!("{key} is not a whole number"))
}

fn f64_of(v: &Value, key: &str) -> Res<f64> {
    field(v, key)?.as_f64().ok_or_else(|| format!("{key} is not a number"))
}

fn str_of(v: &Value, key: &str) -> Res<String> {
    Ok(field(v, key)?
        .as_str()
        .ok_or_else(|| format!("{key} is not a string"))?
        .to_string())
}

/// A list under `key`, each element read by `each`; errors name the element.
fn list_of<T>(v: &Value, key: &str, each: impl Fn(&Value) -> Res<T>) -> Res<Vec<T>> {
    let items = field(v, key)?
        .as_array()
        .ok_or_else(|| format!("{key} is not a list"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, x)| {
            each(x).map_err(|e| match e.starts_with(':') {
                true => format!("{key}[{i}]{e}"),
                false => format!("{key}[{i}].{e}"),
            })
        })
        .collect()
}

fn numbers(v: &Value, key: &str) -> Res<Vec<f64>> {
    list_of(v, key, |x| x.as_f64().ok_or_else(|| ": not a number".to_string()))
}

fn within<T>(key: &str, r: Res<T>) -> Res<T> {
    r.map_err(|e| format!("{key}.{e}"))
}

/// `key`'s value read by `read`, or `None` where it is null.
fn optional<T>(v: &Value, key: &str, read: impl Fn(&Value) -> Res<T>) -> Res<Option<T>> {
    match field(v, key)? {
        Value::Null => Ok(None),
        x => within(key, read(x)).map(Some),
    }
}

pub fn raw_from_json(v: &Value) -> Res<Raw> {
    let mut raw = within("environment", environment(field(v, "environment")?))?;
    raw.boots = list_of(v, "boots", boot)?;
    raw.compare_mib = list_of(v, "pid1_vs_busybox", |c| u64_of(c, "image_mib"))?;
    let scaled = within(
        "scaling",
        list_of(field(v, "scaling")?, "points", |p| u64_of(p, "image_mib")),
    )?;
    raw.scale_mib = scaled.into_iter().filter(|m| !raw.compare_mib.contains(m)).collect();
    raw.hash = optional(v, "hashing", hash)?;
    let sizes = field(v, "sizes")?;
    raw.binaries = within("sizes", list_of(sizes, "binaries", binary))?;
    let missing = |m: &Value| Ok((str_of(m, "name")?, str_of(m, "why")?));
    raw.binaries_missing = within("sizes", list_of(sizes, "missing", missing))?;
    raw.initramfs = within("sizes", optional(sizes, "initramfs", breakdown))?;
    raw.initramfs_missing = sizes.get("initramfs_missing").and_then(Value::as_str).map(String::from);
    let agent = field(v, "agent")?;
    match agent.get("not_measured") {
        None => raw.agent = Some(within("agent", agent_runs(agent))?),
        Some(why) => raw.agent_missing = why.as_str().map(String::from),
    }
    Ok(raw)
}

fn environment(env: &Value) -> Res<Raw> {
    Ok(Raw {
        accel: str_of(env, "accel")?,
        accel_reason: str_of(env, "accel_reason")?,
        host_cpu: str_of(env, "host_cpu")?,
        host_cpus: u64_of(env, "host_cpus")? as usize,
        guest_cpus: u64_of(env, "guest_cpus")? as u32,
        kernel_release: str_of(env, "kernel")?,
        qemu_version: str_of(env, "qemu")?,
        suite_seconds: f64_of(env, "suite_seconds")?,
        part_seconds: list_of(env, "part_seconds", |p| Ok((str_of(p, "part")?, f64_of(p, "seconds")?)))?,
        ..Raw::default()
    })
}

fn boot(b: &Value) -> Res<BootRecord> {
    let init = match str_of(b, "init")?.as_str() {
        "basalt" => Init::Basalt,
        "busybox" => Init::Busybox,
        other => return Err(format!("init: {other:?} is neither basalt nor busybox")),
    };
    let report = optional(b, "report", boot_report)?;
    Ok(BootRecord {
        init,
        mib: u64_of(b, "image_mib")?,
        image_bytes: u64_of(b, "image_bytes")?,
        memory_mib: u64_of(b, "memory_mib")? as u32,
        run: u64_of(b, "run")? as usize,
        outcome: BootOutcome {
            phase: Phase {
                run_init_us: u64_of(b, "run_init_us")?,
                handoff_us: u64_of(b, "handoff_us")?,
                mono_us: u64_of(b, "mono_us")?,
                pid: 0,
                pid1_hwm_kib: field(b, "pid1_hwm_kib")?.as_u64(),
            },
            marks: list_of(b, "marks", |m| Ok((str_of(m, "name")?, u64_of(m, "printk_us")?)))?,
            report,
        },
        wall_s: f64_of(b, "wall_s")?,
        host_load: field(b, "host_load")?.as_f64(),
    })
}

fn boot_report(r: &Value) -> Res<BootReport> {
    Ok(BootReport {
        init_start_us: u64_of(r, "init_start_us")?,
        handoff_us: u64_of(r, "handoff_us")?,
        pid1_phase_us: u64_of(r, "pid1_phase_us")?,
        steps: list_of(r, "steps", |s| {
            Ok(Step {
                name: str_of(s, "name")?,
                start_us: u64_of(s, "start_us")?,
                duration_us: u64_of(s, "duration_us")?,
            })
        })?,
    })
}

fn hash(h: &Value) -> Res<HashRuns> {
    Ok(HashRuns {
        bytes: u64_of(h, "bytes")?,
        rounds: u64_of(h, "rounds")? as usize,
        times: list_of(h, "tools", |t| {
            let key = str_of(t, "tool")?;
            let tool = Tool::from_key(&key).ok_or_else(|| format!("tool: unknown tool {key:?}"))?;
            Ok((tool, numbers(t, "seconds")?))
        })?,
        sha256: str_of(h, "sha256")?,
        openssl_version: str_of(h, "openssl")?,
        cpu: str_of(h, "cpu")?,
    })
}

fn binary(b: &Value) -> Res<BinarySize> {
    Ok(BinarySize {
        name: str_of(b, "name")?,
        path: Default::default(),
        as_built: u64_of(b, "as_built")?,
        stripped: u64_of(b, "strip_all")?,
    })
}

fn breakdown(b: &Value) -> Res<Breakdown> {
    let keys = [
        "total",
        "image",
        "modules",
        "module_count",
        "init",
        "manifest",
        "framing",
    ];
    let v: Vec<u64> = keys.iter().map(|k| u64_of(b, k)).collect::<Res<_>>()?;
    let &[total, image, modules, count, init, manifest, framing] = &v[..] else {
        unreachable!("one value per key")
    };
    Ok(Breakdown {
        total,
        image,
        modules,
        module_count: count as usize,
        init,
        manifest,
        framing,
    })
}

fn agent_runs(a: &Value) -> Res<AgentRuns> {
    let [init, agent, apply, end_to_end] =
        ["init_hwm_kib", "agent_hwm_kib", "apply_to_exec_ms", "end_to_end_ms"].map(|k| numbers(a, k));
    Ok(AgentRuns {
        init_hwm_kib: init?,
        agent_hwm_kib: agent?,
        apply_to_exec_ms: apply?,
        end_to_end_ms: end_to_end?,
        stages_ms: list_of(a, "stages_ms", |s| Ok((str_of(s, "stage")?, numbers(s, "ms")?)))?,
        method: str_of(a, "method")?,
        ..AgentRuns::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{report, results, svg};

    /// The committed run renders to the committed files, byte for byte: the
    /// loader loses nothing the reports show, and the layout is the one
    /// bench/results.md has.
    #[test]
    fn the_committed_run_renders_to_the_committed_files() {
        let v: Value = serde_json::from_str(include_str!("../results.json")).unwrap();
        let raw = raw_from_json(&v).unwrap();
        let a = results::analyse(&raw);
        let md = report::markdown(&raw, &a);
        let want_md = include_str!("../results.md");
        let headings = |s: &str| {
            s.lines()
                .filter(|l| l.starts_with('#'))
                .map(String::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(headings(&md), headings(want_md));
        let tables = |s: &str| s.lines().filter(|l| l.starts_with("|---")).count();
        assert_eq!(tables(&md), 8);
        for figure in [
            "**0.94×**",
            "**1.08×**",
            "| verify-image | 1775 (1514–2597) |",
            "r² = 0.9976",
            "852 (848–904)",
        ] {
            assert!(md.contains(figure), "{figure}");
        }
        for (got, want) in md.lines().zip(want_md.lines()) {
            assert_eq!(got, want);
        }
        assert_eq!(md, want_md);
        let mut json = serde_json::to_string_pretty(&report::json(&raw, &a)).unwrap();
        json.push('\n');
        assert_eq!(json, include_str!("../results.json"));
        assert_eq!(svg::timeline(&a, &raw.accel), include_str!("../timeline.svg"));
        assert_eq!(svg::scaling(&a, &raw.accel), include_str!("../scaling.svg"));
    }

    /// Partial runs too: what is written is read back, whatever is missing.
    #[test]
    fn json_round_trips() {
        let mut partial = results::tests_support::sample_raw();
        partial.agent_missing = Some("not run (--parts)".into());
        partial.initramfs_missing = Some("not built".into());
        partial.binaries_missing = vec![("basaltctl".into(), "not built".into())];
        for raw in [partial, Raw::default()] {
            let written = report::json(&raw, &results::analyse(&raw));
            let back = raw_from_json(&written).unwrap();
            assert_eq!(report::json(&back, &results::analyse(&back)), written);
            assert_eq!(
                report::markdown(&back, &results::analyse(&back)),
                report::markdown(&raw, &results::analyse(&raw))
            );
        }
    }

    #[test]
    fn errors_name_the_field() {
        let v: Value = serde_json::from_str(include_str!("../results.json")).unwrap();
        let cases: &[(&str, Value, &str)] = &[
            ("/environment", Value::Null, "environment.accel missing"),
            (
                "/boots/3/init",
                "systemd".into(),
                "boots[3].init: \"systemd\" is neither",
            ),
            (
                "/boots/0/report/steps/2/start_us",
                "x".into(),
                "boots[0].report.steps[2].start_us is not a whole",
            ),
            (
                "/hashing/tools/1/tool",
                "md5".into(),
                "hashing.tools[1].tool: unknown tool \"md5\"",
            ),
            (
                "/agent/stages_ms/0/ms/1",
                Value::Null,
                "agent.stages_ms[0].ms[1]: not a number",
            ),
        ];
        for (at, value, want) in cases {
            let mut bad = v.clone();
            *bad.pointer_mut(at).unwrap() = value.clone();
            let err = raw_from_json(&bad).unwrap_err();
            assert!(err.starts_with(want), "{at}: {err}");
        }
    }
}
