#![cfg(feature = "host")]
//! Booting an image once and reading what the fixture printed.

use crate::error::BenchError;
use crate::line::{self, Phase};
use basalt_qemu::{AccelChoice, Vm, VmConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Which /init an image boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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

/// The same command line for both inits. basalt.* keys mean nothing to
/// the baseline (the kernel keeps dotted keys from init's environment).
pub const CMDLINE: &str = "quiet basalt.on_error=poweroff basalt.error_delay=0";

/// One step of basalt-init's boot report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub start_us: u64,
    pub duration_us: u64,
}

/// The parts of /run/basalt/boot.json the suite uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootReport {
    pub init_start_us: u64,
    pub handoff_us: u64,
    pub pid1_phase_us: u64,
    pub steps: Vec<Step>,
}

pub fn parse_boot_report(v: &Value) -> Result<BootReport, String> {
    let num = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("{key} missing or not a whole number"))
    };
    let steps = v
        .get("steps")
        .and_then(Value::as_array)
        .ok_or("steps missing or not a list")?
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let name = s
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("steps[{i}].name missing"))?;
            Ok(Step {
                name: name.to_string(),
                start_us: num(s, "start_us").map_err(|e| format!("steps[{i}].{e}"))?,
                duration_us: num(s, "duration_us").map_err(|e| format!("steps[{i}].{e}"))?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(BootReport {
        init_start_us: num(v, "init_start_us")?,
        handoff_us: num(v, "handoff_us")?,
        pid1_phase_us: num(v, "pid1_phase_us")?,
        steps,
    })
}

/// What one boot's console said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOutcome {
    pub phase: Phase,
    /// The baseline's step marks (printk µs), in order.
    pub marks: Vec<(String, u64)>,
    pub report: Option<BootReport>,
}

/// Reads the fixture's lines out of a whole console transcript.
pub fn parse_console(text: &str) -> Result<BootOutcome, String> {
    let mut phase = None;
    let mut marks = Vec::new();
    let mut report = None;
    let mut done = false;
    for raw in text.lines() {
        let l = raw.trim_end_matches('\r');
        if let Some(at) = l.find(line::ERROR_TAG) {
            return Err(format!("the fixture failed: {}", &l[at + line::ERROR_TAG.len()..]));
        }
        if let Some(at) = l.find(line::PHASE_TAG) {
            phase = Some(line::parse_phase(&l[at..]).map_err(|e| format!("{}: {e}", line::PHASE_TAG.trim()))?);
        } else if let Some(at) = l.find(line::MARK_TAG) {
            marks.push(line::parse_mark(&l[at + line::MARK_TAG.len()..])?);
        } else if let Some(at) = l.find(line::REPORT_TAG) {
            let json = &l[at + line::REPORT_TAG.len()..];
            let v: Value = serde_json::from_str(json).map_err(|e| format!("boot report: {e}"))?;
            report = Some(parse_boot_report(&v).map_err(|e| format!("boot report: {e}"))?);
        } else if l.contains(line::DONE) {
            done = true;
        }
    }
    let phase = phase.ok_or("no BENCH-PHASE line")?;
    if !done {
        return Err("no BENCH-DONE line (console cut short?)".into());
    }
    Ok(BootOutcome { phase, marks, report })
}

/// One boot to run.
#[derive(Debug, Clone)]
pub struct BootPlan {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub memory_mib: u32,
    pub log: PathBuf,
    pub accel_cache: PathBuf,
    pub timeout: Duration,
}

/// A finished boot.
#[derive(Debug, Clone)]
pub struct Booted {
    pub outcome: BootOutcome,
    pub accel: AccelChoice,
    /// QEMU start to exit, for progress lines and the time budget.
    pub wall: Duration,
}

/// Boots, waits for the fixture's BENCH-DONE and for QEMU to exit.
pub fn boot(plan: &BootPlan) -> Result<Booted, BenchError> {
    let _ = std::fs::remove_file(&plan.log);
    let what = format!("boot {}", plan.initrd.display());
    let cfg = VmConfig::new(&plan.kernel)
        .initrd(&plan.initrd)
        .append(CMDLINE)
        .memory_mib(plan.memory_mib)
        .console_log(&plan.log)
        .accel_cache(&plan.accel_cache);
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
    if let Err(e) = vm.wait_for_console(line::DONE, plan.timeout) {
        // A fixture that failed printed BENCH-ERROR and powered off: say why.
        let why = parse_console(&vm.console_text()).err().unwrap_or_default();
        return Err(fail(format!("{why}; {}", first_line(&e.to_string()))));
    }
    vm.wait_for_exit(Duration::from_secs(60)).map_err(|e| {
        fail(format!(
            "QEMU did not exit after the fixture powered off: {}",
            first_line(&e.to_string())
        ))
    })?;
    let wall = started.elapsed();
    let outcome = parse_console(&vm.console_text()).map_err(fail)?;
    Ok(Booted {
        outcome,
        accel: vm.accel().clone(),
        wall,
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
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

pub fn log_path(dir: &Path, init: Init, image_mib: u64, run: usize) -> PathBuf {
    dir.join(format!("{}-{image_mib}m-{run}.log", init.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"{"format":1,"init_start_us":5100000,"handoff_us":5900000,"pid1_phase_us":800000,"steps":[{"name":"mount-early","start_us":5100100,"duration_us":900},{"name":"verify-image","start_us":5200000,"duration_us":600000}]}"#;

    #[test]
    fn console_with_everything() {
        let text = format!(
            "[    5.0] Run /init\r\nnoise\r\nBENCH-PHASE run_init_us=5000000 handoff_us=5950000 mono_us=5950400 pid=77 pid1_hwm_kib=900\r\n\
             BENCH-MARK mount-early 5001000\r\nBENCH-REPORT {REPORT}\r\nBENCH-DONE\r\n[    6.0] reboot: Power down\r\n"
        );
        let got = parse_console(&text).unwrap();
        assert_eq!(got.phase.pid1_phase_us(), 950_000);
        assert_eq!(got.phase.pid1_hwm_kib, Some(900));
        assert_eq!(got.marks, vec![("mount-early".to_string(), 5_001_000)]);
        let report = got.report.unwrap();
        assert_eq!(report.pid1_phase_us, 800_000);
        assert_eq!(
            report.steps[1],
            Step {
                name: "verify-image".into(),
                start_us: 5_200_000,
                duration_us: 600_000
            }
        );
    }

    #[test]
    fn console_failures() {
        let phase = "BENCH-PHASE run_init_us=1 handoff_us=2 mono_us=3 pid=1 pid1_hwm_kib=-";
        let cases = [
            (String::new(), "no BENCH-PHASE line"),
            (format!("{phase}\n"), "no BENCH-DONE"),
            ("BENCH-ERROR no kmsg\n".to_string(), "the fixture failed: no kmsg"),
            (
                format!("{phase}\nBENCH-MARK x\nBENCH-DONE\n"),
                "is not `<name> <printk_us>`",
            ),
            (
                format!("{phase}\nBENCH-REPORT {{\"steps\":[]}}\nBENCH-DONE\n"),
                "init_start_us missing",
            ),
            (
                format!("{phase}\nBENCH-REPORT {{not json\nBENCH-DONE\n"),
                "boot report: key must be a string",
            ),
            (
                "BENCH-PHASE pid=1\nBENCH-DONE\n".to_string(),
                "BENCH-PHASE: run_init_us missing",
            ),
        ];
        for (text, needle) in cases {
            let err = parse_console(&text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn boot_report_fields() {
        let v: Value = serde_json::from_str(REPORT).unwrap();
        let r = parse_boot_report(&v).unwrap();
        assert_eq!(
            (r.init_start_us, r.handoff_us, r.steps.len()),
            (5_100_000, 5_900_000, 2)
        );
        let bad = r#"{"init_start_us":1,"handoff_us":2,"pid1_phase_us":1,"steps":[{"name":"a","start_us":1}]}"#;
        let err = parse_boot_report(&serde_json::from_str(bad).unwrap()).unwrap_err();
        assert_eq!(err, "steps[0].duration_us missing or not a whole number");
    }

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
