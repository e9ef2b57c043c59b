//! Raising the kernel's defences once the root is in place and the last
//! module is loaded: KSPP sysctls (the set Talos enforces), no more modules,
//! no kexec, and lockdown.

use crate::boot_params::Lockdown;
use std::io;

/// How much a sysctl matters to basalt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Reported when missing or refused; the boot goes on (e.g. a key the
    /// running kernel does not have, like dev.tty.legacy_tiocsti on 6.1).
    BestEffort,
    /// Must take effect, or the boot stops: basalt promises it.
    Required,
    /// Fine if the kernel lacks the feature entirely (the key is absent);
    /// fatal if it is present and cannot be set.
    RequiredIfPresent,
}

/// In the order applied. modules_disabled is last: it can never be undone.
pub const SYSCTLS: &[(&str, &str, Need)] = &[
    ("dev.tty.ldisc_autoload", "0", Need::BestEffort),
    ("dev.tty.legacy_tiocsti", "0", Need::BestEffort),
    ("fs.protected_symlinks", "1", Need::BestEffort),
    ("fs.protected_hardlinks", "1", Need::BestEffort),
    ("fs.protected_fifos", "2", Need::BestEffort),
    ("fs.protected_regular", "2", Need::BestEffort),
    ("fs.suid_dumpable", "0", Need::BestEffort),
    ("kernel.kptr_restrict", "2", Need::BestEffort),
    // No magic SysRq: from a console it can reboot, sync or kill all tasks
    // with no signed command (docs/threat-model.md).
    ("kernel.sysrq", "0", Need::BestEffort),
    ("kernel.dmesg_restrict", "1", Need::BestEffort),
    ("kernel.perf_event_paranoid", "3", Need::BestEffort),
    ("kernel.randomize_va_space", "2", Need::BestEffort),
    ("kernel.yama.ptrace_scope", "2", Need::BestEffort),
    ("user.max_user_namespaces", "0", Need::BestEffort),
    ("kernel.unprivileged_bpf_disabled", "1", Need::BestEffort),
    ("net.core.bpf_jit_harden", "2", Need::BestEffort),
    ("vm.unprivileged_userfaultfd", "0", Need::BestEffort),
    ("kernel.kexec_load_disabled", "1", Need::RequiredIfPresent),
    ("kernel.modules_disabled", "1", Need::Required),
];

/// A sysctl that did not take, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlFailure {
    pub key: &'static str,
    pub reason: String,
    pub need: Need,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SysctlReport {
    pub applied: Vec<&'static str>,
    pub failed: Vec<SysctlFailure>,
}

impl SysctlReport {
    /// The first failure that must stop the boot, if any.
    pub fn fatal(&self) -> Option<&SysctlFailure> {
        self.failed.iter().find(|f| match f.need {
            Need::BestEffort => false,
            Need::Required => true,
            Need::RequiredIfPresent => f.reason != ABSENT,
        })
    }
}

const ABSENT: &str = "not present in this kernel";

/// Writes each sysctl under `proc_sys` (normally `/proc/sys`) and reads it
/// back; a value that reads back different counts as a failure.
pub fn apply_sysctls(proc_sys: &str, list: &[(&'static str, &str, Need)]) -> SysctlReport {
    let mut report = SysctlReport::default();
    for &(key, value, need) in list {
        let path = format!("{proc_sys}/{}", key.replace('.', "/"));
        // Never O_CREAT: a key the kernel lacks must show up as absent.
        let result = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, value.as_bytes()))
            .and_then(|()| std::fs::read_to_string(&path));
        let reason = match result {
            Ok(now) if now.trim() == value => None,
            Ok(now) => Some(format!("wrote {value}, reads back {}", now.trim())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Some(ABSENT.to_string()),
            Err(e) => Some(e.to_string()),
        };
        match reason {
            None => report.applied.push(key),
            Some(reason) => {
                log::warn!("sysctl {key}={value}: {reason}");
                report.failed.push(SysctlFailure { key, reason, need });
            }
        }
    }
    report
}

#[derive(Debug)]
pub enum LockdownError {
    Read {
        path: String,
        source: io::Error,
    },
    Unparsable {
        path: String,
        text: String,
    },
    Write {
        path: String,
        level: &'static str,
        source: io::Error,
    },
    NotRaised {
        wanted: &'static str,
        now: String,
    },
}

impl std::fmt::Display for LockdownError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockdownError::Read { path, source } => write!(f, "read {path}: {source}"),
            LockdownError::Unparsable { path, text } => write!(f, "{path} reads {text:?}: no [level]"),
            LockdownError::Write { path, level, source } => write!(f, "write {level:?} to {path}: {source}"),
            LockdownError::NotRaised { wanted, now } => write!(f, "lockdown is {now:?} after raising it to {wanted:?}"),
        }
    }
}

fn rank(level: &str) -> u8 {
    match level {
        "integrity" => 1,
        "confidentiality" => 2,
        _ => 0,
    }
}

/// Raises lockdown to `wanted` (it can only go up) and returns the level now
/// in force. With `Lockdown::None` it only reads the level.
pub fn raise_lockdown(path: &str, wanted: Lockdown) -> Result<String, LockdownError> {
    let read = || -> Result<String, LockdownError> {
        let text = std::fs::read_to_string(path).map_err(|source| LockdownError::Read {
            path: path.into(),
            source,
        })?;
        basalt_common::lockdown::active_level(&text)
            .map(str::to_string)
            .ok_or_else(|| LockdownError::Unparsable {
                path: path.into(),
                text: text.trim().into(),
            })
    };
    if wanted == Lockdown::None {
        return Ok(read().unwrap_or_else(|_| "unavailable".into()));
    }
    let level = wanted.as_str();
    if rank(&read()?) < rank(level) {
        std::fs::write(path, level).map_err(|source| LockdownError::Write {
            path: path.into(),
            level,
            source,
        })?;
    }
    let now = read()?;
    if rank(&now) < rank(level) {
        return Err(LockdownError::NotRaised { wanted: level, now });
    }
    Ok(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("basalt-harden-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn anchors_list_is_complete() {
        let keys: Vec<&str> = SYSCTLS.iter().map(|s| s.0).collect();
        for k in [
            "dev.tty.ldisc_autoload",
            "fs.protected_regular",
            "kernel.kptr_restrict",
            "kernel.yama.ptrace_scope",
            "user.max_user_namespaces",
            "net.core.bpf_jit_harden",
            "vm.unprivileged_userfaultfd",
        ] {
            assert!(keys.contains(&k), "{k}");
        }
        assert_eq!(
            keys.last(),
            Some(&"kernel.modules_disabled"),
            "modules_disabled goes last"
        );
    }

    #[test]
    fn sysctl_outcomes() {
        let dir = temp("sysctl");
        let root = dir.to_str().unwrap();
        std::fs::create_dir_all(dir.join("kernel")).unwrap();
        std::fs::write(dir.join("kernel/kptr_restrict"), "0").unwrap();
        std::fs::write(dir.join("kernel/modules_disabled"), "0").unwrap();
        // A directory where the file should be: the write fails with EISDIR.
        std::fs::create_dir_all(dir.join("kernel/dmesg_restrict")).unwrap();
        let list = [
            ("kernel.kptr_restrict", "2", Need::BestEffort),
            ("dev.tty.legacy_tiocsti", "0", Need::BestEffort),
            ("kernel.dmesg_restrict", "1", Need::BestEffort),
            ("kernel.kexec_load_disabled", "1", Need::RequiredIfPresent),
            ("kernel.modules_disabled", "1", Need::Required),
        ];
        let report = apply_sysctls(root, &list);
        assert_eq!(report.applied, ["kernel.kptr_restrict", "kernel.modules_disabled"]);
        assert_eq!(std::fs::read_to_string(dir.join("kernel/kptr_restrict")).unwrap(), "2");
        let reasons: Vec<(&str, &str)> = report.failed.iter().map(|f| (f.key, f.reason.as_str())).collect();
        assert_eq!(reasons[0], ("dev.tty.legacy_tiocsti", ABSENT));
        assert!(reasons[1].1.contains("Is a directory"), "{reasons:?}");
        assert_eq!(reasons[2], ("kernel.kexec_load_disabled", ABSENT));
        assert_eq!(
            report.fatal(),
            None,
            "absent best-effort and absent-if-present keys are not fatal"
        );

        std::fs::remove_file(dir.join("kernel/modules_disabled")).unwrap();
        let report = apply_sysctls(root, &list);
        assert_eq!(report.fatal().map(|f| f.key), Some("kernel.modules_disabled"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lockdown_raise_checks_the_result() {
        let dir = temp("lockdown");
        let path = dir.join("lockdown");
        let p = path.to_str().unwrap();
        // A plain file stands in for securityfs: the write replaces the text,
        // so "integrity" (no brackets) reads back unparsable, proving the
        // read-back is checked rather than assumed.
        std::fs::write(&path, "[none] integrity confidentiality").unwrap();
        let err = raise_lockdown(p, Lockdown::Integrity).unwrap_err().to_string();
        assert!(err.contains("no [level]"), "{err}");
        std::fs::write(&path, "none [integrity] confidentiality").unwrap();
        assert_eq!(raise_lockdown(p, Lockdown::Integrity).unwrap(), "integrity");
        std::fs::write(&path, "none integrity [confidentiality]").unwrap();
        assert_eq!(
            raise_lockdown(p, Lockdown::Integrity).unwrap(),
            "confidentiality",
            "never lowered"
        );
        std::fs::write(&path, "[none] integrity confidentiality").unwrap();
        assert_eq!(raise_lockdown(p, Lockdown::None).unwrap(), "none");
        let err = raise_lockdown(dir.join("absent").to_str().unwrap(), Lockdown::Integrity).unwrap_err();
        assert!(matches!(err, LockdownError::Read { .. }));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
