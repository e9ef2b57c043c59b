//! Choosing the accelerator. KVM can exist and still not work (nested
//! virtualisation here: /dev/kvm opens, guests hang), so `Accel::Auto`
//! boots the kernel once under KVM with no initramfs and `panic=-1`: a
//! working KVM panics ("VFS: Unable to mount root fs") and, with
//! `-no-reboot`, exits within a second; a broken one is killed after
//! [`PROBE_TIMEOUT`] and TCG is used. The answer is cached in a file so a
//! test suite probes once, and for the life of the process.
//!
//! This module decides; it does not launch. `Vm::start` drives it and
//! hands it a function that boots the probe guest (see [`ProbeBoot`]).

use crate::error::QemuError;
use crate::vm_config::{Accel, Console, VmConfig};
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long the KVM probe guest gets to panic and exit.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The environment variable that overrides the configured accelerator.
pub const ACCEL_ENV: &str = "BASALT_ACCEL";

/// The accelerator a VM actually runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accelerator {
    Kvm,
    Tcg,
}

impl fmt::Display for Accelerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accelerator::Kvm => "kvm",
            Accelerator::Tcg => "tcg",
        })
    }
}

/// The accelerator used and why (for logs and benchmark reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelChoice {
    pub accel: Accelerator,
    pub reason: String,
}

/// The probe guest to boot under KVM: its config, its firmware, and the
/// accelerator choice to launch it with.
pub(crate) struct ProbeGuest {
    pub cfg: VmConfig,
    pub firmware: Option<PathBuf>,
    pub choice: AccelChoice,
}

/// What booting the probe guest showed.
#[derive(Debug)]
pub(crate) enum ProbeRun {
    /// QEMU did not start; the error said this.
    NotStarted(String),
    /// The guest exited within [`PROBE_TIMEOUT`].
    Exited {
        status: String,
        console: String,
        qemu_stderr: String,
    },
    /// The guest was still running after [`PROBE_TIMEOUT`].
    StillRunning,
}

/// Boots a probe guest under KVM, waits up to [`PROBE_TIMEOUT`] for it to
/// exit, and stops it.
pub(crate) type ProbeBoot<'a> = &'a dyn Fn(ProbeGuest) -> ProbeRun;

/// Parses `auto`, `kvm` or `tcg` (surrounding whitespace ignored).
pub fn parse_accel(s: &str) -> Option<Accel> {
    match s.trim() {
        "auto" => Some(Accel::Auto),
        "kvm" => Some(Accel::Kvm),
        "tcg" => Some(Accel::Tcg),
        _ => None,
    }
}

/// The value of BASALT_ACCEL: unset or empty means no override.
pub fn accel_from_env(value: Option<&OsStr>) -> Result<Option<Accel>, QemuError> {
    let Some(value) = value else { return Ok(None) };
    let text = value.to_string_lossy();
    if text.trim().is_empty() {
        return Ok(None);
    }
    parse_accel(&text).map(Some).ok_or_else(|| QemuError::BadAccelEnv {
        value: text.into_owned(),
    })
}

/// The accelerator named by a cache file's first word.
pub fn parse_cache(text: &str) -> Option<Accelerator> {
    match text.split_whitespace().next()? {
        "kvm" => Some(Accelerator::Kvm),
        "tcg" => Some(Accelerator::Tcg),
        _ => None,
    }
}

/// BASALT_ACCEL if set, else `cfg.accel`; `Auto` is settled by the probe.
pub(crate) fn resolve(cfg: &VmConfig, boot: ProbeBoot) -> Result<AccelChoice, QemuError> {
    let (requested, source) = match accel_from_env(std::env::var_os(ACCEL_ENV).as_deref())? {
        Some(accel) => (accel, format!("{ACCEL_ENV} set")),
        None => (cfg.accel, "requested".to_string()),
    };
    let fixed = |accel| {
        Ok(AccelChoice {
            accel,
            reason: source.clone(),
        })
    };
    match requested {
        Accel::Kvm => fixed(Accelerator::Kvm),
        Accel::Tcg => fixed(Accelerator::Tcg),
        Accel::Auto => Ok(auto(cfg, boot)),
    }
}

/// The probe result for this process. Held locked while probing, so VMs
/// started in parallel wait for one probe instead of running several.
static PROBED: Mutex<Option<AccelChoice>> = Mutex::new(None);

fn auto(cfg: &VmConfig, boot: ProbeBoot) -> AccelChoice {
    if !cfg.kvm_device.exists() {
        return AccelChoice {
            accel: Accelerator::Tcg,
            reason: format!("no {}", cfg.kvm_device.display()),
        };
    }
    let mut probed = PROBED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(choice) = probed.as_ref() {
        return choice.clone();
    }
    if let Some(cache) = &cfg.accel_cache {
        if let Some(accel) = fs::read_to_string(cache).ok().as_deref().and_then(parse_cache) {
            let choice = AccelChoice {
                accel,
                reason: format!("cached in {}", cache.display()),
            };
            *probed = Some(choice.clone());
            return choice;
        }
    }
    // The probe boots a bare kernel; a UEFI boot has none (and its answer
    // is not cached, so a later -kernel boot still probes).
    if cfg.uefi.is_some() {
        return AccelChoice {
            accel: Accelerator::Tcg,
            reason: "UEFI boot: no kernel to probe kvm with (BASALT_ACCEL=kvm forces it)".into(),
        };
    }
    let choice = probe_kvm(cfg, boot);
    if let Some(cache) = &cfg.accel_cache {
        // Best effort: without the file the next process probes again.
        if let Err(e) = write_cache(cache, &choice) {
            eprintln!("basalt-qemu: not caching the kvm probe in {}: {e}", cache.display());
        }
    }
    *probed = Some(choice.clone());
    choice
}

fn write_cache(path: &Path, choice: &AccelChoice) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    // Written aside and renamed, so a parallel reader sees all or nothing.
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    fs::write(&tmp, format!("{}\n{}\n", choice.accel, choice.reason))?;
    fs::rename(&tmp, path)
}

fn probe_kvm(cfg: &VmConfig, boot: ProbeBoot) -> AccelChoice {
    let guest = ProbeGuest {
        cfg: VmConfig::new(&cfg.kernel).memory_mib(128).console(Console::Captured),
        firmware: cfg.qboot.is_file().then(|| cfg.qboot.clone()),
        choice: AccelChoice {
            accel: Accelerator::Kvm,
            reason: "kvm probe".into(),
        },
    };
    let started = Instant::now();
    let run = boot(guest);
    judge_probe(run, started.elapsed())
}

/// The accelerator a probe run points to: KVM if the kernel got far enough
/// to print, TCG otherwise.
fn judge_probe(run: ProbeRun, took: Duration) -> AccelChoice {
    let tcg = |reason: String| AccelChoice {
        accel: Accelerator::Tcg,
        reason,
    };
    match run {
        ProbeRun::NotStarted(e) => tcg(format!("kvm probe did not start: {e}")),
        ProbeRun::Exited {
            status,
            console,
            qemu_stderr,
        } => {
            if console.contains("Kernel panic") || console.contains("Linux version") {
                AccelChoice {
                    accel: Accelerator::Kvm,
                    reason: format!("kvm probe booted in {took:.1?}"),
                }
            } else {
                let said = qemu_stderr.lines().next().unwrap_or("nothing");
                tcg(format!(
                    "kvm probe exited ({status}) without kernel output; qemu said: {said}"
                ))
            }
        }
        ProbeRun::StillRunning => tcg(format!("kvm probe guest still running after {PROBE_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn env_override_parsing() {
        // (BASALT_ACCEL, parsed override or Err for a rejected value)
        type Case = (Option<&'static str>, Result<Option<Accel>, ()>);
        let cases: &[Case] = &[
            (None, Ok(None)),
            (Some(""), Ok(None)),
            (Some("  "), Ok(None)),
            (Some("tcg"), Ok(Some(Accel::Tcg))),
            (Some("kvm"), Ok(Some(Accel::Kvm))),
            (Some("auto"), Ok(Some(Accel::Auto))),
            (Some(" tcg\n"), Ok(Some(Accel::Tcg))),
            (Some("TCG"), Err(())),
            (Some("hvf"), Err(())),
            (Some("tcg,thread=multi"), Err(())),
        ];
        for (value, want) in cases {
            let os = value.map(OsString::from);
            let got = accel_from_env(os.as_deref()).map_err(|e| {
                assert!(e.to_string().contains("BASALT_ACCEL"), "{e}");
            });
            assert_eq!(got, *want, "BASALT_ACCEL={value:?}");
        }
    }

    #[test]
    fn cache_file_parsing() {
        let cases = [
            ("kvm\nkvm probe booted in 0.8s\n", Some(Accelerator::Kvm)),
            ("tcg\nno /dev/kvm\n", Some(Accelerator::Tcg)),
            ("tcg", Some(Accelerator::Tcg)),
            ("", None),
            ("auto\n", None),
            ("kvmx\n", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_cache(text), want, "{text:?}");
        }
    }

    #[test]
    fn probe_runs_judged() {
        let exited = |console: &str, stderr: &str| ProbeRun::Exited {
            status: "exit status: 0".into(),
            console: console.into(),
            qemu_stderr: stderr.into(),
        };
        let took = Duration::from_millis(800);
        let cases = [
            (
                exited("...Kernel panic - not syncing: VFS", ""),
                Accelerator::Kvm,
                "kvm probe booted in 800.0ms",
            ),
            (
                exited("[0.0] Linux version 6.1.0", ""),
                Accelerator::Kvm,
                "kvm probe booted in 800.0ms",
            ),
            (
                exited("", "qemu: error: MSR 0x10a\nmore"),
                Accelerator::Tcg,
                "kvm probe exited (exit status: 0) without kernel output; qemu said: qemu: error: MSR 0x10a",
            ),
            (
                exited("", ""),
                Accelerator::Tcg,
                "kvm probe exited (exit status: 0) without kernel output; qemu said: nothing",
            ),
            (
                ProbeRun::NotStarted("no qemu".into()),
                Accelerator::Tcg,
                "kvm probe did not start: no qemu",
            ),
            (
                ProbeRun::StillRunning,
                Accelerator::Tcg,
                "kvm probe guest still running after 5s",
            ),
        ];
        for (run, accel, reason) in cases {
            let what = format!("{run:?}");
            let choice = judge_probe(run, took);
            assert_eq!((choice.accel, choice.reason.as_str()), (accel, reason), "{what}");
        }
    }

    #[test]
    fn missing_kvm_device_means_tcg_without_probing() {
        let mut cfg = VmConfig::new("/nonexistent/vmlinuz");
        cfg.kvm_device = "/nonexistent/kvm".into();
        let choice = auto(&cfg, &|_| panic!("no kvm device: nothing to probe"));
        assert_eq!(choice.accel, Accelerator::Tcg);
        assert_eq!(choice.reason, "no /nonexistent/kvm");
    }
}
