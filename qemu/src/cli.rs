//! The `basalt-qemu` command line.

use basalt_qemu::{parse_accel, Accel, Console, VmConfig};
use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

pub const USAGE: &str = "\
usage: basalt-qemu --kernel FILE [--initrd FILE] [--append PARAMS]... [--mem MIB] [--cpus N]
                   [--accel auto|kvm|tcg] [--console-log FILE] [--prov-socket PATH]
                   [--vsock-cid CID] [--work-dir DIR] [--disk FILE]... [--uuid UUID]
       basalt-qemu [--ovmf] --disk FILE [--disk FILE]... [--writable] [--stay-on-reboot] [options as above]

Boots the kernel in the foreground with the console (ttyS0) on this terminal
and exits with QEMU's status. Without --kernel (or with --ovmf), OVMF boots
the first --disk (a GPT image, e.g. build/disk.img) with the command line of
its UKI; the guest's writes to it are discarded unless --writable. QEMU exits
when the guest powers off or reboots; with --stay-on-reboot a reboot restarts
the guest in the same VM (a panic too, so it may loop). --prov-socket puts the guest's ttyS1 on a unix
socket; --vsock-cid starts vhost-device-vsock with its sockets in --work-dir
(default: a temp dir). --uuid sets the SMBIOS system UUID the guest sees
(default: random). BASALT_ACCEL=auto|kvm|tcg overrides --accel.";

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cli {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub append: Vec<String>,
    pub mem_mib: Option<u32>,
    pub cpus: Option<u32>,
    pub accel: Option<Accel>,
    pub console_log: Option<PathBuf>,
    pub prov_socket: Option<PathBuf>,
    pub vsock_cid: Option<u32>,
    pub work_dir: Option<PathBuf>,
    pub disks: Vec<PathBuf>,
    pub uuid: Option<String>,
    /// Boot the first disk under OVMF.
    pub ovmf: bool,
    pub writable: bool,
    pub stay_on_reboot: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Run(Box<Cli>),
    Help,
}

#[derive(Debug, PartialEq, Eq)]
pub enum UsageError {
    MissingKernel,
    /// --ovmf with --kernel, or --writable without a UEFI boot.
    Conflict(&'static str),
    UnknownArgument(String),
    MissingValue(&'static str),
    NotUnicode(&'static str),
    BadNumber {
        flag: &'static str,
        value: String,
    },
    BadAccel(String),
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::MissingKernel => write!(f, "--kernel or --disk is required"),
            UsageError::Conflict(what) => write!(f, "{what}"),
            UsageError::UnknownArgument(arg) => write!(f, "unknown argument {arg:?}"),
            UsageError::MissingValue(flag) => write!(f, "{flag} needs a value"),
            UsageError::NotUnicode(flag) => write!(f, "the value of {flag} is not valid UTF-8"),
            UsageError::BadNumber { flag, value } => {
                write!(f, "{flag} {value:?}: expected a positive whole number")
            }
            UsageError::BadAccel(value) => {
                write!(f, "--accel {value:?}: expected auto, kvm or tcg")
            }
        }
    }
}

/// Parses the arguments after the program name. Values come as
/// `--flag VALUE` or `--flag=VALUE`.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, UsageError> {
    const FLAGS: &[&str] = &[
        "--kernel",
        "--initrd",
        "--append",
        "--mem",
        "--cpus",
        "--accel",
        "--console-log",
        "--prov-socket",
        "--vsock-cid",
        "--work-dir",
        "--disk",
        "--uuid",
    ];
    let mut cli = Cli::default();
    let mut kernel = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy().into_owned();
        if text == "-h" || text == "--help" {
            return Ok(Parsed::Help);
        }
        // `--flag=VALUE`, split on the raw bytes so a non-UTF-8 path survives.
        let raw = arg.as_bytes();
        let (name, inline) = match raw.iter().position(|&b| b == b'=') {
            Some(eq) if raw.starts_with(b"--") => (
                String::from_utf8_lossy(&raw[..eq]).into_owned(),
                Some(OsString::from_vec(raw[eq + 1..].to_vec())),
            ),
            _ => (text.clone(), None),
        };
        match (name.as_str(), &inline) {
            ("--ovmf", None) => {
                cli.ovmf = true;
                continue;
            }
            ("--writable", None) => {
                cli.writable = true;
                continue;
            }
            ("--stay-on-reboot", None) => {
                cli.stay_on_reboot = true;
                continue;
            }
            _ => {}
        }
        let Some(&flag) = FLAGS.iter().find(|&&f| f == name) else {
            return Err(UsageError::UnknownArgument(text));
        };
        let value = match inline {
            Some(value) => value,
            None => args.next().ok_or(UsageError::MissingValue(flag))?,
        };
        let string = || value.clone().into_string().map_err(|_| UsageError::NotUnicode(flag));
        let number = || -> Result<u32, UsageError> {
            let s = string()?;
            s.parse::<u32>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or(UsageError::BadNumber { flag, value: s })
        };
        match flag {
            "--kernel" => kernel = Some(PathBuf::from(&value)),
            "--initrd" => cli.initrd = Some(PathBuf::from(&value)),
            "--append" => cli.append.push(string()?),
            "--mem" => cli.mem_mib = Some(number()?),
            "--cpus" => cli.cpus = Some(number()?),
            "--accel" => {
                let s = string()?;
                cli.accel = Some(parse_accel(&s).ok_or(UsageError::BadAccel(s))?);
            }
            "--console-log" => cli.console_log = Some(PathBuf::from(&value)),
            "--prov-socket" => cli.prov_socket = Some(PathBuf::from(&value)),
            "--vsock-cid" => cli.vsock_cid = Some(number()?),
            "--work-dir" => cli.work_dir = Some(PathBuf::from(&value)),
            "--disk" => cli.disks.push(PathBuf::from(&value)),
            "--uuid" => cli.uuid = Some(string()?),
            _ => unreachable!("every name in FLAGS has an arm"),
        }
    }
    match kernel {
        Some(_) if cli.ovmf => return Err(UsageError::Conflict("--ovmf boots a --disk: give no --kernel")),
        Some(k) => cli.kernel = k,
        None if cli.disks.is_empty() => return Err(UsageError::MissingKernel),
        None => cli.ovmf = true,
    }
    if cli.writable && !cli.ovmf {
        return Err(UsageError::Conflict(
            "--writable is for the UEFI boot disk: give no --kernel",
        ));
    }
    Ok(Parsed::Run(Box::new(cli)))
}

/// The VM the command line describes, console on this terminal.
pub fn to_config(mut cli: Cli) -> VmConfig {
    let mut cfg = if cli.ovmf && !cli.disks.is_empty() {
        let mut cfg = VmConfig::uefi(cli.disks.remove(0));
        if let Some(uefi) = cfg.uefi.as_mut() {
            uefi.writable = cli.writable;
        }
        cfg
    } else {
        VmConfig::new(cli.kernel)
    }
    .console(Console::Stdio);
    cfg.initrd = cli.initrd;
    for params in &cli.append {
        cfg = cfg.append(params);
    }
    if let Some(mib) = cli.mem_mib {
        cfg.memory_mib = mib;
    }
    if let Some(cpus) = cli.cpus {
        cfg.cpus = cpus;
    }
    if let Some(accel) = cli.accel {
        cfg.accel = accel;
    }
    cfg.console_log = cli.console_log;
    cfg.prov_socket = cli.prov_socket;
    cfg.vsock_cid = cli.vsock_cid;
    cfg.work_dir = cli.work_dir;
    cfg.disks = cli.disks;
    cfg.uuid = cli.uuid;
    cfg.exit_on_reboot = !cli.stay_on_reboot;
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, UsageError> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn command_lines() {
        let full = Cli {
            kernel: "k".into(),
            initrd: Some("i".into()),
            append: vec!["a=1".into(), "b c".into()],
            mem_mib: Some(1024),
            cpus: Some(2),
            accel: Some(Accel::Tcg),
            console_log: Some("c.log".into()),
            prov_socket: Some("/p.sock".into()),
            vsock_cid: Some(5),
            work_dir: Some("/w".into()),
            disks: vec!["d1".into(), "d2".into()],
            uuid: Some("u".into()),
            ovmf: false,
            writable: false,
            stay_on_reboot: false,
        };
        let cases: Vec<(Vec<&str>, Result<Parsed, UsageError>)> = vec![
            (
                vec!["--kernel", "k"],
                Ok(Parsed::Run(Box::new(Cli {
                    kernel: "k".into(),
                    ..Cli::default()
                }))),
            ),
            (
                vec![
                    "--kernel",
                    "k",
                    "--initrd",
                    "i",
                    "--append",
                    "a=1",
                    "--append=b c",
                    "--mem",
                    "1024",
                    "--cpus=2",
                    "--accel",
                    "tcg",
                    "--console-log",
                    "c.log",
                    "--prov-socket",
                    "/p.sock",
                    "--vsock-cid",
                    "5",
                    "--work-dir",
                    "/w",
                    "--disk",
                    "d1",
                    "--disk=d2",
                    "--uuid",
                    "u",
                ],
                Ok(Parsed::Run(Box::new(full))),
            ),
            (
                vec!["--append=x=y", "--kernel=k"],
                Ok(Parsed::Run(Box::new(Cli {
                    kernel: "k".into(),
                    append: vec!["x=y".into()],
                    ..Cli::default()
                }))),
            ),
            (
                vec!["--disk", "d.img", "--mem=256"],
                Ok(Parsed::Run(Box::new(Cli {
                    disks: vec!["d.img".into()],
                    mem_mib: Some(256),
                    ovmf: true,
                    ..Cli::default()
                }))),
            ),
            (
                vec!["--ovmf", "--disk", "d.img", "--writable"],
                Ok(Parsed::Run(Box::new(Cli {
                    disks: vec!["d.img".into()],
                    ovmf: true,
                    writable: true,
                    ..Cli::default()
                }))),
            ),
            (
                vec!["--disk", "d.img", "--stay-on-reboot"],
                Ok(Parsed::Run(Box::new(Cli {
                    disks: vec!["d.img".into()],
                    ovmf: true,
                    stay_on_reboot: true,
                    ..Cli::default()
                }))),
            ),
            (
                vec!["--ovmf", "--kernel", "k", "--disk", "d"],
                Err(UsageError::Conflict("--ovmf boots a --disk: give no --kernel")),
            ),
            (
                vec!["--kernel", "k", "--writable"],
                Err(UsageError::Conflict(
                    "--writable is for the UEFI boot disk: give no --kernel",
                )),
            ),
            (vec!["--ovmf"], Err(UsageError::MissingKernel)),
            (
                vec!["--ovmf=1", "--disk", "d"],
                Err(UsageError::UnknownArgument("--ovmf=1".into())),
            ),
            (vec!["--kernel", "k", "--help"], Ok(Parsed::Help)),
            (vec!["-h"], Ok(Parsed::Help)),
            (vec![], Err(UsageError::MissingKernel)),
            (vec!["--initrd", "i"], Err(UsageError::MissingKernel)),
            (vec!["--kernel"], Err(UsageError::MissingValue("--kernel"))),
            (
                vec!["--kernel", "k", "--bogus"],
                Err(UsageError::UnknownArgument("--bogus".into())),
            ),
            (vec!["k"], Err(UsageError::UnknownArgument("k".into()))),
            (
                vec!["--kernel", "k", "--mem", "lots"],
                Err(UsageError::BadNumber {
                    flag: "--mem",
                    value: "lots".into(),
                }),
            ),
            (
                vec!["--kernel", "k", "--vsock-cid", "0"],
                Err(UsageError::BadNumber {
                    flag: "--vsock-cid",
                    value: "0".into(),
                }),
            ),
            (
                vec!["--kernel", "k", "--accel", "hvf"],
                Err(UsageError::BadAccel("hvf".into())),
            ),
        ];
        for (args, want) in cases {
            assert_eq!(parse(&args), want, "{args:?}");
        }
    }

    #[test]
    fn config_from_command_line() {
        let Ok(Parsed::Run(cli)) = parse(&[
            "--kernel",
            "k",
            "--append",
            "a=1",
            "--append",
            "b=2",
            "--mem",
            "256",
            "--vsock-cid",
            "7",
            "--disk",
            "d",
        ]) else {
            panic!("should parse");
        };
        let cfg = to_config(*cli);
        assert_eq!(cfg.cmdline(), "console=ttyS0 panic=-1 a=1 b=2");
        assert_eq!(cfg.memory_mib, 256);
        assert_eq!(cfg.vsock_cid, Some(7));
        assert_eq!(cfg.disks, vec![PathBuf::from("d")]);
        assert_eq!(cfg.console, Console::Stdio);
        assert_eq!(cfg.accel, Accel::Auto);
        assert_eq!(cfg.uefi, None);
        assert!(cfg.exit_on_reboot);

        let Ok(Parsed::Run(cli)) = parse(&["--disk", "boot.img", "--disk", "extra.img"]) else {
            panic!("should parse");
        };
        let cfg = to_config(*cli);
        let uefi = cfg.uefi.clone().unwrap();
        assert_eq!(uefi.disk, PathBuf::from("boot.img"));
        assert!(!uefi.writable);
        assert!(cfg.exit_on_reboot);
        assert_eq!(uefi.code, PathBuf::from("/usr/share/OVMF/OVMF_CODE_4M.fd"));
        assert_eq!(cfg.disks, vec![PathBuf::from("extra.img")]);
    }
}
