//! What the agent is told: its command line (paths, mostly for tests) and
//! the `basalt.*` keys of the kernel command line (channels, node id,
//! scrub rate).
//!
//! A bad kernel command line key is reported and replaced by its default,
//! never fatal: an agent that refuses to start locks the operator out.

use basalt_common::cmdline::{self, Param};
use basalt_common::config::check_node_id;
use std::path::{Path, PathBuf};

/// The provisioning serial port when the command line names none.
pub const DEFAULT_SERIAL: &str = "ttyS1";
/// The vsock port the agent listens on when the command line names none.
pub const DEFAULT_VSOCK_PORT: u32 = 1024;
/// How much of each log is kept.
pub const DEFAULT_LOG_CAP: u64 = 256 * 1024;
/// `basalt.scrub_rate=` when the command line has none: 8 MiB/s.
pub const DEFAULT_SCRUB_RATE: u64 = 8 << 20;

pub const USAGE: &str = "\
usage: basalt-agent [OPTIONS]

basalt's node agent. Reads basalt.serial=, basalt.vsock_port= and basalt.node=
from the kernel command line. Options exist for tests and debugging:

  --root DIR            root for config files, trusted keys, /run/basalt, /sys (default /)
  --proc DIR            procfs (default /proc)
  --cmdline FILE        kernel command line to read (default <proc>/cmdline)
  --listen-unix PATH    also listen on this unix socket
  --init-pid PID        process to signal for poweroff (SIGTERM) and reboot (SIGINT) (default 1)
  --hostname-file FILE  write the hostname to FILE instead of calling sethostname(2)
  --log-cap BYTES       bytes kept per log (default 262144)
  --esp-dir DIR         use DIR as the mounted ESP (default: mount it at /run/basalt/esp)
  --help, --version
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub root: PathBuf,
    pub proc_dir: PathBuf,
    pub cmdline: PathBuf,
    pub listen_unix: Option<PathBuf>,
    pub init_pid: i32,
    pub hostname_file: Option<PathBuf>,
    pub log_cap: u64,
    /// A directory that stands in for the mounted ESP (tests); by default
    /// the agent mounts the ESP partition at /run/basalt/esp.
    pub esp_dir: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            root: PathBuf::from("/"),
            proc_dir: PathBuf::from("/proc"),
            cmdline: PathBuf::from("/proc/cmdline"),
            listen_unix: None,
            init_pid: 1,
            hostname_file: None,
            log_cap: DEFAULT_LOG_CAP,
            esp_dir: None,
        }
    }
}

impl Settings {
    /// A path of the node's filesystem, under `--root`.
    pub fn node_path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }
    pub fn trusted_keys_dir(&self) -> PathBuf {
        self.node_path("/etc/basalt/trusted-keys")
    }
    pub fn state_file(&self) -> PathBuf {
        self.node_path("/run/basalt/agent/state.json")
    }
    pub fn log_dir(&self) -> PathBuf {
        self.node_path("/run/basalt/log")
    }
    pub fn boot_report(&self) -> PathBuf {
        self.node_path("/run/basalt/boot.json")
    }
    pub fn smbios_uuid(&self) -> PathBuf {
        self.node_path("/sys/class/dmi/id/product_uuid")
    }
    pub fn lockdown(&self) -> PathBuf {
        self.node_path("/sys/kernel/security/lockdown")
    }
    pub fn proc_path(&self, rel: &str) -> PathBuf {
        self.proc_dir.join(rel)
    }
}

/// What the agent's own command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    Run(Settings),
    Help,
    Version,
}

/// A command line the agent cannot run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    UnknownOption(String),
    MissingValue(String),
    BadValue { option: String, value: String, why: String },
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UsageError::UnknownOption(o) => write!(f, "unknown option {o:?} (see --help)"),
            UsageError::MissingValue(o) => write!(f, "option {o} needs a value"),
            UsageError::BadValue { option, value, why } => {
                write!(f, "option {option} {value:?}: {why}")
            }
        }
    }
}

pub fn parse_args(args: &[String]) -> Result<Invocation, UsageError> {
    let mut s = Settings::default();
    let mut cmdline: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| UsageError::MissingValue(name.into()))
        };
        match name {
            "--help" | "-h" => return Ok(Invocation::Help),
            "--version" => return Ok(Invocation::Version),
            "--root" => s.root = PathBuf::from(value()?),
            "--proc" => s.proc_dir = PathBuf::from(value()?),
            "--cmdline" => cmdline = Some(PathBuf::from(value()?)),
            "--listen-unix" => s.listen_unix = Some(PathBuf::from(value()?)),
            "--hostname-file" => s.hostname_file = Some(PathBuf::from(value()?)),
            "--esp-dir" => s.esp_dir = Some(PathBuf::from(value()?)),
            "--init-pid" => {
                let v = value()?;
                s.init_pid = match v.parse::<i32>() {
                    Ok(pid) if pid > 0 => pid,
                    _ => return Err(bad(name, &v, "not a process id")),
                };
            }
            "--log-cap" => {
                let v = value()?;
                s.log_cap = match v.parse::<u64>() {
                    Ok(n) if n >= 4096 => n,
                    _ => return Err(bad(name, &v, "not a byte count of at least 4096")),
                };
            }
            other => return Err(UsageError::UnknownOption(other.into())),
        }
    }
    s.cmdline = cmdline.unwrap_or_else(|| s.proc_dir.join("cmdline"));
    Ok(Invocation::Run(s))
}

fn bad(option: &str, value: &str, why: &str) -> UsageError {
    UsageError::BadValue {
        option: option.into(),
        value: value.into(),
        why: why.into(),
    }
}

/// Where the agent's records live, from `basalt.state=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateSource {
    /// The partition with this GPT name (default `STATE`).
    PartLabel(String),
    /// A device or file named outright.
    Path(PathBuf),
    /// No persistence: configs last until the next boot.
    Disabled,
}

impl Default for StateSource {
    fn default() -> Self {
        StateSource::PartLabel(DEFAULT_LABEL.into())
    }
}

pub const DEFAULT_LABEL: &str = "STATE";

impl StateSource {
    /// Reads a `basalt.state=` value: `none`, `partlabel:NAME`, or an absolute path.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value == "none" {
            return Ok(StateSource::Disabled);
        }
        if let Some(label) = value.strip_prefix("partlabel:") {
            let ok = !label.is_empty()
                && label.len() <= 36
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            return if ok {
                Ok(StateSource::PartLabel(label.into()))
            } else {
                Err(format!("partition name {label:?} must be 1 to 36 of A-Z a-z 0-9 - _ ."))
            };
        }
        if value.starts_with('/') && !value.contains('\0') {
            return Ok(StateSource::Path(value.into()));
        }
        Err(format!(
            "{:?} is not none, partlabel:NAME or an absolute path",
            basalt_common::text::clip(value)
        ))
    }
}

/// The `basalt.*` kernel command line keys the agent reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootParams {
    /// Serial device to provision over, or `None` when disabled.
    pub serial: Option<PathBuf>,
    /// vsock port to listen on, or `None` when disabled.
    pub vsock_port: Option<u32>,
    /// `basalt.node=`, unchecked (identity.rs decides what it is worth).
    pub node: Option<String>,
    /// `basalt.scrub_rate=`, in bytes per second; `None` when off.
    pub scrub_rate: Option<u64>,
    /// `basalt.state=`: where configs persist across reboots.
    pub state: StateSource,
}

/// Reads the agent's keys from a kernel command line. Returns the values and
/// one warning per key that was ignored.
pub fn boot_params(line: &str) -> (BootParams, Vec<String>) {
    let params = cmdline::tokenize(line);
    let mut warnings = Vec::new();
    let value = |key: &str| cmdline::last(&params, key).map(|p: &Param| p.value.clone().unwrap_or_default());

    let serial = match value("basalt.serial") {
        None => Some(Path::new("/dev").join(DEFAULT_SERIAL)),
        Some(v) if v == "none" => None,
        Some(v) if v.starts_with('/') && !v.contains('\0') => Some(PathBuf::from(v)),
        Some(v) if !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') => {
            Some(Path::new("/dev").join(v))
        }
        Some(v) => {
            warnings.push(format!(
                "basalt.serial={v:?} is neither a device name, an absolute path nor \"none\"; using {DEFAULT_SERIAL}"
            ));
            Some(Path::new("/dev").join(DEFAULT_SERIAL))
        }
    };
    let vsock_port = match value("basalt.vsock_port") {
        None => Some(DEFAULT_VSOCK_PORT),
        Some(v) if v == "none" => None,
        // VMADDR_PORT_ANY (u32::MAX) is not a port one can be reached on.
        Some(v) => match v.parse::<u32>() {
            Ok(port) if port != u32::MAX => Some(port),
            _ => {
                warnings.push(format!(
                    "basalt.vsock_port={v:?} is not a port number or \"none\"; using {DEFAULT_VSOCK_PORT}"
                ));
                Some(DEFAULT_VSOCK_PORT)
            }
        },
    };
    let node = value("basalt.node");
    if let Some(n) = &node {
        if let Err(why) = check_node_id(n) {
            warnings.push(format!("basalt.node: {why}"));
        }
    }
    let scrub_rate = match value("basalt.scrub_rate").map(|v| parse_scrub_rate(&v)) {
        None => Some(DEFAULT_SCRUB_RATE),
        Some(Ok(rate)) => rate,
        Some(Err(why)) => {
            warnings.push(format!("{why}; using 8"));
            Some(DEFAULT_SCRUB_RATE)
        }
    };
    let state = match value("basalt.state") {
        None => StateSource::default(),
        Some(v) => StateSource::parse(&v).unwrap_or_else(|why| {
            warnings.push(format!("basalt.state: {why}; using partlabel:{DEFAULT_LABEL}"));
            StateSource::default()
        }),
    };
    (
        BootParams {
            serial,
            vsock_port,
            node,
            scrub_rate,
            state,
        },
        warnings,
    )
}

/// `basalt.scrub_rate=` in MiB/s: a decimal number such as `8` or `0.5`,
/// up to 4096; `0` or `off` turns the scrub off (`Ok(None)`). The rate
/// comes back in bytes per second, at least 4096 (one block).
pub fn parse_scrub_rate(value: &str) -> Result<Option<u64>, String> {
    if value == "off" || value == "0" {
        return Ok(None);
    }
    let valid = !value.is_empty()
        && value.chars().all(|c| c.is_ascii_digit() || c == '.')
        && value.matches('.').count() <= 1
        && !value.starts_with('.')
        && !value.ends_with('.');
    let mib = match value.parse::<f64>() {
        Ok(v) if valid && v.is_finite() && (0.0..=4096.0).contains(&v) => v,
        _ => {
            return Err(format!(
                "basalt.scrub_rate={value:?} is not MiB/s (0 to 4096) or \"off\""
            ))
        }
    };
    let bytes = (mib * (1u64 << 20) as f64) as u64;
    Ok((bytes > 0).then_some(bytes.max(4096)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EIGHT: Option<u64> = Some(8 << 20);

    #[test]
    fn sources_parse() {
        let cases = [
            ("none", Ok(StateSource::Disabled)),
            ("partlabel:STATE", Ok(StateSource::PartLabel("STATE".into()))),
            ("/dev/vdb", Ok(StateSource::Path("/dev/vdb".into()))),
            ("partlabel:", Err(())),
            ("partlabel:a b", Err(())),
            ("vdb", Err(())),
        ];
        for (text, want) in cases {
            assert_eq!(StateSource::parse(text).map_err(|_| ()), want, "{text}");
        }
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn args_table() {
        let run = |list: &[&str]| match parse_args(&args(list)) {
            Ok(Invocation::Run(s)) => s,
            other => panic!("{list:?}: {other:?}"),
        };
        assert_eq!(run(&[]), Settings::default());
        let s = run(&[
            "--root",
            "/t/root",
            "--proc=/t/proc",
            "--listen-unix",
            "/t/a.sock",
            "--init-pid",
            "42",
        ]);
        assert_eq!(s.root, PathBuf::from("/t/root"));
        assert_eq!(s.cmdline, PathBuf::from("/t/proc/cmdline"));
        assert_eq!(s.listen_unix, Some(PathBuf::from("/t/a.sock")));
        assert_eq!(s.init_pid, 42);
        assert_eq!(s.trusted_keys_dir(), PathBuf::from("/t/root/etc/basalt/trusted-keys"));
        assert_eq!(s.state_file(), PathBuf::from("/t/root/run/basalt/agent/state.json"));
        assert_eq!(run(&["--cmdline", "/c", "--proc", "/p"]).cmdline, PathBuf::from("/c"));
        assert_eq!(Settings::default().log_dir(), PathBuf::from("/run/basalt/log"));
        assert_eq!(parse_args(&args(&["--help"])), Ok(Invocation::Help));

        let errors = [
            (&["--frobnicate"][..], "unknown option \"--frobnicate\" (see --help)"),
            (&["--root"][..], "option --root needs a value"),
            (&["--init-pid", "0"][..], "option --init-pid \"0\": not a process id"),
            (&["--init-pid=x"][..], "option --init-pid \"x\": not a process id"),
            (
                &["--log-cap", "12"][..],
                "option --log-cap \"12\": not a byte count of at least 4096",
            ),
        ];
        for (list, want) in errors {
            assert_eq!(parse_args(&args(list)).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn boot_params_table() {
        let dev = |n: &str| Some(PathBuf::from(n));
        let cases: &[(&str, BootParams, usize)] = &[
            (
                "console=ttyS0",
                BootParams {
                    serial: dev("/dev/ttyS1"),
                    vsock_port: Some(1024),
                    node: None,
                    scrub_rate: EIGHT,
                    state: StateSource::default(),
                },
                0,
            ),
            (
                "basalt.serial=none basalt.vsock_port=none basalt.node=n1",
                BootParams {
                    serial: None,
                    vsock_port: None,
                    node: Some("n1".into()),
                    scrub_rate: EIGHT,
                    state: StateSource::default(),
                },
                0,
            ),
            (
                "basalt.serial=hvc1 basalt.vsock_port=5000",
                BootParams {
                    serial: dev("/dev/hvc1"),
                    vsock_port: Some(5000),
                    node: None,
                    scrub_rate: EIGHT,
                    state: StateSource::default(),
                },
                0,
            ),
            (
                "basalt.serial=/dev/pts/3",
                BootParams {
                    serial: dev("/dev/pts/3"),
                    vsock_port: Some(1024),
                    node: None,
                    scrub_rate: EIGHT,
                    state: StateSource::default(),
                },
                0,
            ),
            (
                "basalt.serial=../x basalt.vsock_port=http",
                BootParams {
                    serial: dev("/dev/ttyS1"),
                    vsock_port: Some(1024),
                    node: None,
                    scrub_rate: EIGHT,
                    state: StateSource::default(),
                },
                2,
            ),
            (
                "basalt.vsock_port=4294967295 basalt.node=bad/id",
                BootParams {
                    serial: dev("/dev/ttyS1"),
                    vsock_port: Some(1024),
                    node: Some("bad/id".into()),
                    scrub_rate: EIGHT,
                    state: StateSource::default(),
                },
                2,
            ),
            (
                "basalt.vsock_port=1 basalt.vsock_port=2",
                BootParams {
                    serial: dev("/dev/ttyS1"),
                    vsock_port: Some(2),
                    node: None,
                    scrub_rate: EIGHT,
                    state: StateSource::default(),
                },
                0,
            ),
        ];
        for (line, want, warnings) in cases {
            let (got, warned) = boot_params(line);
            assert_eq!(&got, want, "{line}");
            assert_eq!(warned.len(), *warnings, "{line}: {warned:?}");
        }
    }

    #[test]
    fn scrub_rate_values() {
        const MIB: u64 = 1 << 20;
        let ok = [
            ("8", Some(8 * MIB)),
            ("0.5", Some(MIB / 2)),
            ("4096", Some(4096 * MIB)),
            ("16.25", Some(16 * MIB + MIB / 4)),
            ("0", None),
            ("off", None),
            ("0.0", None),
            // Less than a block a second rounds up to one block.
            ("0.000001", Some(4096)),
        ];
        for (v, want) in ok {
            assert_eq!(parse_scrub_rate(v), Ok(want), "{v}");
        }
        for v in ["", "-1", "4097", "1e3", "inf", "NaN", "8MiB", ".5", "5.", "1.2.3", " 8"] {
            let e = parse_scrub_rate(v).unwrap_err();
            assert_eq!(
                e,
                format!("basalt.scrub_rate={v:?} is not MiB/s (0 to 4096) or \"off\"")
            );
        }
    }

    #[test]
    fn scrub_rate_table() {
        let cases = [
            ("", EIGHT, None),
            ("basalt.scrub_rate=0", None, None),
            ("basalt.scrub_rate=off", None, None),
            ("basalt.scrub_rate=64", Some(64 << 20), None),
            ("basalt.scrub_rate=0.5 basalt.scrub_rate=2", Some(2 << 20), None),
            (
                "basalt.scrub_rate=fast",
                EIGHT,
                Some("basalt.scrub_rate=\"fast\" is not MiB/s (0 to 4096) or \"off\"; using 8"),
            ),
        ];
        for (line, rate, warning) in cases {
            let (got, warned) = boot_params(line);
            assert_eq!(got.scrub_rate, rate, "{line}");
            assert_eq!(warned.first().map(String::as_str), warning, "{line}");
        }
    }
}
