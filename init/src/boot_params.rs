//! `basalt.*` kernel command-line keys that basalt-init understands.
//!
//! Unknown keys, including other programs' `basalt.*` keys (the agent reads
//! its own), are ignored. A known key with a bad value is an error that names
//! the key, the value and what was expected. See docs/cmdline.md.

use basalt_common::cmdline::{self, Param};
use basalt_common::manifest::valid_absolute_path;
use std::time::Duration;

/// Where the root image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// `/basalt/root.sqsh` inside the initramfs: already in RAM.
    Initramfs,
    /// A block device (e.g. `/dev/vda`), copied into RAM while it is hashed.
    Device(String),
    /// A root slot: the GPT partition with this PARTLABEL, holding the
    /// image, its dm-verity tree and a signed manifest (docs/disk-layout.md).
    PartLabel(String),
}

/// `basalt.var=`: what /var is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarSource {
    /// No key: the partition labelled `VAR` if there is one, else a tmpfs.
    Default,
    /// `partlabel:NAME`: that partition (ext4), or the boot stops.
    PartLabel(String),
    /// `tmpfs`: in RAM, whatever partitions there are.
    Tmpfs,
}

/// The label `basalt.var` looks for when the command line names none.
pub const DEFAULT_VAR_LABEL: &str = "VAR";

/// `basalt.root=`: where a root slot's blocks are read from once verity is
/// set up over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootMode {
    /// Copied into a sealed memfd first: the node never reads its disk again.
    Ram,
    /// Read from the partition as needed.
    Disk,
}

impl RootMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RootMode::Ram => "ram",
            RootMode::Disk => "disk",
        }
    }
}

/// `basalt.verify=`: how much of a root slot is checked before it is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Each block as it is read (dm-verity), nothing up front.
    Verity,
    /// The manifest's SHA-256 over the whole image up front, and verity.
    Full,
}

impl Verify {
    pub fn as_str(self) -> &'static str {
        match self {
            Verify::Verity => "verity",
            Verify::Full => "full",
        }
    }
}

/// What a PARTLABEL may be here: GPT allows 36 UTF-16 units; basalt's are
/// short ASCII names such as `ROOT-A`.
pub fn valid_partlabel(v: &str) -> bool {
    (1..=36).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lockdown {
    None,
    Integrity,
    Confidentiality,
}

impl Lockdown {
    pub fn as_str(self) -> &'static str {
        match self {
            Lockdown::None => "none",
            Lockdown::Integrity => "integrity",
            Lockdown::Confidentiality => "confidentiality",
        }
    }
}

/// What to do after a fatal boot error has been printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Reboot,
    Poweroff,
    Halt,
}

impl OnError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Reboot => "reboot",
            OnError::Poweroff => "poweroff",
            OnError::Halt => "halt",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootParams {
    pub image: ImageSource,
    /// How long to wait for `basalt.image=` to appear.
    pub image_wait: Duration,
    pub root: RootMode,
    pub verify: Verify,
    pub var: VarSource,
    /// `basalt.agent=`: overrides the manifest's handoff program.
    pub agent: Option<String>,
    pub lockdown: Lockdown,
    pub on_error: OnError,
    /// Countdown before acting on a fatal error.
    pub error_delay: Duration,
    /// Bound on each phase of shutdown (agent, then everything else).
    pub shutdown_timeout: Duration,
    /// tmpfs `size=` options.
    pub run_size: String,
    pub tmp_size: String,
    pub var_size: String,
    pub debug: bool,
}

impl Default for BootParams {
    fn default() -> Self {
        BootParams {
            image: ImageSource::Initramfs,
            image_wait: Duration::from_secs(10),
            root: RootMode::Ram,
            verify: Verify::Verity,
            var: VarSource::Default,
            agent: None,
            lockdown: Lockdown::Integrity,
            on_error: OnError::Reboot,
            error_delay: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
            run_size: "20%".into(),
            tmp_size: "64m".into(),
            var_size: "50%".into(),
            debug: false,
        }
    }
}

/// A known key with a value basalt-init cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdlineError {
    pub key: String,
    pub value: String,
    pub expected: &'static str,
}

impl std::fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "kernel command line {}={:?}: expected {}",
            self.key, self.value, self.expected
        )
    }
}

/// Parses the command line. `on_error` is read first and separately (see
/// [`on_error_policy`]) so that a fatal cmdline error still honours it.
pub fn parse(line: &str) -> Result<BootParams, CmdlineError> {
    let params = cmdline::tokenize(line);
    let mut p = BootParams::default();
    for Param { key, value } in &params {
        let Some(name) = key.strip_prefix("basalt.") else {
            continue;
        };
        let value = value.as_deref().unwrap_or("");
        let err = |expected| CmdlineError {
            key: key.clone(),
            value: value.to_string(),
            expected,
        };
        match name {
            "image" => {
                p.image =
                    match value {
                        "initramfs" => ImageSource::Initramfs,
                        v if v.starts_with("/dev/") && valid_absolute_path(v) => ImageSource::Device(v.into()),
                        v if v.strip_prefix("partlabel:").is_some_and(valid_partlabel) => {
                            ImageSource::PartLabel(v["partlabel:".len()..].into())
                        }
                        _ => return Err(err(
                            "\"initramfs\", a device path under /dev/, or partlabel:NAME (1-36 of A-Z a-z 0-9 . _ -)",
                        )),
                    }
            }
            "root" => {
                p.root = match value {
                    "ram" => RootMode::Ram,
                    "disk" => RootMode::Disk,
                    _ => return Err(err("ram or disk")),
                }
            }
            "verify" => {
                p.verify = match value {
                    "verity" => Verify::Verity,
                    "full" => Verify::Full,
                    _ => return Err(err("verity or full")),
                }
            }
            "var" => {
                p.var = match value {
                    "tmpfs" => VarSource::Tmpfs,
                    v if v.strip_prefix("partlabel:").is_some_and(valid_partlabel) => {
                        VarSource::PartLabel(v["partlabel:".len()..].into())
                    }
                    _ => return Err(err("partlabel:NAME (1-36 of A-Z a-z 0-9 . _ -) or tmpfs")),
                }
            }
            "image_wait" => p.image_wait = seconds(value).ok_or_else(|| err("seconds, 0 to 600"))?,
            "agent" => {
                if !valid_absolute_path(value) {
                    return Err(err("an absolute path with no . or .. components"));
                }
                p.agent = Some(value.into());
            }
            "lockdown" => {
                p.lockdown = match value {
                    "none" => Lockdown::None,
                    "integrity" => Lockdown::Integrity,
                    "confidentiality" => Lockdown::Confidentiality,
                    _ => return Err(err("integrity, confidentiality or none")),
                }
            }
            "on_error" => p.on_error = on_error_value(value).ok_or_else(|| err("reboot, poweroff or halt"))?,
            "error_delay" => p.error_delay = seconds(value).ok_or_else(|| err("seconds, 0 to 600"))?,
            "shutdown_timeout" => p.shutdown_timeout = seconds(value).ok_or_else(|| err("seconds, 0 to 600"))?,
            "run_size" | "tmp_size" | "var_size" => {
                if !valid_tmpfs_size(value) {
                    return Err(err("a tmpfs size: bytes with optional k/m/g, or 1% to 100%"));
                }
                let slot = match name {
                    "run_size" => &mut p.run_size,
                    "tmp_size" => &mut p.tmp_size,
                    _ => &mut p.var_size,
                };
                *slot = value.to_string();
            }
            "debug" => {
                p.debug = match value {
                    "" | "1" | "on" => true,
                    "0" | "off" => false,
                    _ => return Err(err("1/on or 0/off")),
                }
            }
            _ => {}
        }
    }
    Ok(p)
}

/// The `basalt.on_error=` policy alone, defaulting to reboot when absent or bad.
pub fn on_error_policy(line: &str) -> OnError {
    let params = cmdline::tokenize(line);
    cmdline::last(&params, "basalt.on_error")
        .and_then(|p| on_error_value(p.value.as_deref()?))
        .unwrap_or(OnError::Reboot)
}

fn on_error_value(v: &str) -> Option<OnError> {
    match v {
        "reboot" => Some(OnError::Reboot),
        "poweroff" => Some(OnError::Poweroff),
        "halt" => Some(OnError::Halt),
        _ => None,
    }
}

fn seconds(v: &str) -> Option<Duration> {
    let n: u64 = v.parse().ok()?;
    (n <= 600).then(|| Duration::from_secs(n))
}

/// What tmpfs accepts for `size=`: `N`, `Nk`, `Nm`, `Ng` (any case), or `N%`
/// with 1 <= N <= 100. Checked here so a typo fails the boot with a clear
/// message instead of an EINVAL from mount(2).
pub fn valid_tmpfs_size(v: &str) -> bool {
    if let Some(pct) = v.strip_suffix('%') {
        return pct.bytes().all(|b| b.is_ascii_digit()) && matches!(pct.parse::<u32>(), Ok(1..=100));
    }
    let digits = v.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G']);
    v.len() - digits.len() <= 1
        && !digits.is_empty()
        && digits.len() <= 15
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.parse::<u64>().is_ok_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let p = parse("console=ttyS0 quiet").unwrap();
        assert_eq!(p, BootParams::default());
        assert_eq!(p.image, ImageSource::Initramfs);
        assert_eq!(p.lockdown, Lockdown::Integrity);
        assert_eq!(p.on_error, OnError::Reboot);
        assert_eq!((p.root, p.verify), (RootMode::Ram, Verify::Verity));
    }

    #[test]
    fn partlabels() {
        let longest = "L".repeat(36);
        for ok in ["ROOT-A", "root_b", "x", "v1.2", longest.as_str()] {
            assert!(valid_partlabel(ok), "{ok}");
        }
        let too_long = "L".repeat(37);
        for bad in ["", "ROOT A", "ROOT/A", "ROOT-Ä", "a\0", too_long.as_str()] {
            assert!(!valid_partlabel(bad), "{bad:?}");
        }
    }

    #[test]
    fn accepted_values() {
        let p = parse(
            "basalt.image=/dev/vda basalt.image_wait=3 basalt.agent=/usr/libexec/check \
             basalt.lockdown=confidentiality basalt.on_error=poweroff basalt.error_delay=0 \
             basalt.shutdown_timeout=5 basalt.run_size=10% basalt.tmp_size=128M basalt.var_size=1g \
             basalt.debug basalt.serial=ttyS1 basalt.unknown=whatever",
        )
        .unwrap();
        assert_eq!(p.image, ImageSource::Device("/dev/vda".into()));
        assert_eq!(p.image_wait, Duration::from_secs(3));
        assert_eq!(p.agent.as_deref(), Some("/usr/libexec/check"));
        assert_eq!(p.lockdown, Lockdown::Confidentiality);
        assert_eq!(p.on_error, OnError::Poweroff);
        assert_eq!(p.error_delay, Duration::ZERO);
        assert_eq!(p.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(
            (p.run_size.as_str(), p.tmp_size.as_str(), p.var_size.as_str()),
            ("10%", "128M", "1g")
        );
        assert!(p.debug);
        assert_eq!(parse("basalt.lockdown=none").unwrap().lockdown, Lockdown::None);
        assert_eq!(parse("basalt.image=initramfs").unwrap().image, ImageSource::Initramfs);
        let p = parse("basalt.image=partlabel:ROOT-B basalt.root=disk basalt.verify=full").unwrap();
        assert_eq!(
            (p.image, p.root, p.verify),
            (ImageSource::PartLabel("ROOT-B".into()), RootMode::Disk, Verify::Full)
        );
        assert_eq!(parse("").unwrap().var, VarSource::Default);
        assert_eq!(parse("basalt.var=tmpfs").unwrap().var, VarSource::Tmpfs);
        assert_eq!(
            parse("basalt.var=partlabel:VAR").unwrap().var,
            VarSource::PartLabel("VAR".into())
        );
        let p = parse("basalt.image=partlabel:a.b_c-1 basalt.root=ram basalt.verify=verity").unwrap();
        assert_eq!(
            (p.image, p.root, p.verify),
            (ImageSource::PartLabel("a.b_c-1".into()), RootMode::Ram, Verify::Verity)
        );
    }

    #[test]
    fn rejected_values_name_key_and_value() {
        let cases = [
            (
                "basalt.lockdown=maybe",
                "basalt.lockdown=\"maybe\": expected integrity, confidentiality or none",
            ),
            ("basalt.lockdown", "basalt.lockdown=\"\": expected integrity"),
            (
                "basalt.image=/etc/passwd",
                "basalt.image=\"/etc/passwd\": expected \"initramfs\", a device",
            ),
            ("basalt.image=/dev/../etc", "basalt.image=\"/dev/../etc\""),
            (
                "basalt.image=partlabel:",
                "basalt.image=\"partlabel:\": expected \"initramfs\", a device path under /dev/, or partlabel:NAME",
            ),
            ("basalt.image=partlabel:ROOT/A", "basalt.image=\"partlabel:ROOT/A\""),
            ("basalt.image=\"partlabel:ROOT A\"", "basalt.image=\"partlabel:ROOT A\""),
            ("basalt.root=usb", "basalt.root=\"usb\": expected ram or disk"),
            (
                "basalt.var=/dev/vdb",
                "basalt.var=\"/dev/vdb\": expected partlabel:NAME (1-36 of A-Z a-z 0-9 . _ -) or tmpfs",
            ),
            (
                "basalt.var=partlabel:",
                "basalt.var=\"partlabel:\": expected partlabel:NAME",
            ),
            ("basalt.var", "basalt.var=\"\": expected partlabel:NAME"),
            ("basalt.root", "basalt.root=\"\": expected ram or disk"),
            ("basalt.verify=none", "basalt.verify=\"none\": expected verity or full"),
            (
                "basalt.agent=bin/sh",
                "basalt.agent=\"bin/sh\": expected an absolute path",
            ),
            (
                "basalt.on_error=explode",
                "basalt.on_error=\"explode\": expected reboot, poweroff or halt",
            ),
            ("basalt.error_delay=-1", "basalt.error_delay=\"-1\": expected seconds"),
            ("basalt.shutdown_timeout=601", "expected seconds, 0 to 600"),
            (
                "basalt.tmp_size=lots",
                "basalt.tmp_size=\"lots\": expected a tmpfs size",
            ),
            ("basalt.debug=maybe", "expected 1/on or 0/off"),
        ];
        for (line, needle) in cases {
            let err = parse(line).unwrap_err().to_string();
            assert!(err.contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn last_occurrence_wins() {
        assert_eq!(
            parse("basalt.lockdown=none basalt.lockdown=integrity")
                .unwrap()
                .lockdown,
            Lockdown::Integrity
        );
    }

    #[test]
    fn on_error_is_read_even_when_other_keys_are_bad() {
        assert_eq!(
            on_error_policy("basalt.lockdown=bad basalt.on_error=poweroff"),
            OnError::Poweroff
        );
        assert_eq!(on_error_policy("basalt.on_error=bad"), OnError::Reboot);
        assert_eq!(on_error_policy(""), OnError::Reboot);
    }

    #[test]
    fn tmpfs_sizes() {
        for ok in ["1", "64m", "64M", "2G", "512k", "1%", "100%", "20%"] {
            assert!(valid_tmpfs_size(ok), "{ok}");
        }
        for bad in [
            "",
            "0",
            "m",
            "64mb",
            "101%",
            "0%",
            "%",
            "-1",
            "1.5g",
            "1 g",
            "9999999999999999",
            "5%%",
        ] {
            assert!(!valid_tmpfs_size(bad), "{bad}");
        }
    }
}
