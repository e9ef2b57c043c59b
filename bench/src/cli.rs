#![cfg(feature = "host")]
//! Arguments. `make bench` passes every path explicitly; the defaults are
//! what the Makefile would pass. [`TAKES`] lists the options each command
//! takes; [`USAGE`] says what they are.

use crate::boots::{Init, Root};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

/// The help text (bench/usage.txt).
pub const USAGE: &str = include_str!("../usage.txt");

const PATHS: &str = "--build --handoff --fragment --modules-dir --kconfig --busybox";

const RUN: &str = "--out --runs --scale-runs --hash-rounds --hash-mib --agent-runs --upgrade-runs --parts --sizes";

/// The options each command takes.
const TAKES: [(&str, &[&str]); 4] = [
    ("help", &[]),
    ("run", &[PATHS, RUN]),
    ("boot", &[PATHS, "--init --size --root"]),
    ("render", &["--json --out"]),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Run(RunOptions),
    Boot(BootOptions),
    Render(RenderOptions),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    pub json: PathBuf,
    pub out: PathBuf,
}

/// The parts of the suite `--parts` selects: 1, 2 and 7 (the boots), 8
/// (the slot disk's boots), 3 (hashing), 4 (sizes), 5 and 6 (the agent's
/// memory and apply latency), 9 (upgrades).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    pub boot: bool,
    pub disk: bool,
    pub hash: bool,
    pub sizes: bool,
    pub agent: bool,
    pub upgrade: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub build: PathBuf,
    pub handoff: PathBuf,
    pub fragment: PathBuf,
    pub modules_dir: PathBuf,
    pub kconfig: PathBuf,
    pub busybox: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    pub paths: Paths,
    pub out: PathBuf,
    pub runs: usize,
    pub scale_runs: usize,
    pub hash_rounds: usize,
    pub hash_mib: u64,
    pub agent_runs: usize,
    /// Upgrades and raw copies of part 9, each.
    pub upgrade_runs: usize,
    pub parts: Parts,
    /// The image sizes to boot (MiB).
    pub sizes: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOptions {
    pub paths: Paths,
    pub init: Init,
    pub root: Root,
    pub size_mib: u64,
}

/// The issue asks for at least five boots of each init per size.
pub const MIN_RUNS: usize = 5;

/// `--flag value` pairs, each at most once, each one the command takes.
struct Flags(BTreeMap<String, String>);

impl Flags {
    fn parse(takes: &[&str], args: &[String]) -> Result<Flags, String> {
        let mut flags = BTreeMap::new();
        for pair in args.chunks(2) {
            let flag = &pair[0];
            if !flag.starts_with("--") {
                return Err(format!("unexpected argument {flag:?}"));
            }
            if !takes.iter().any(|t| t.split(' ').any(|f| f == flag)) {
                return Err(format!("unknown option {flag}"));
            }
            let value = pair.get(1).ok_or_else(|| format!("{flag} needs a value"))?;
            if flags.insert(flag.clone(), value.clone()).is_some() {
                return Err(format!("{flag} given twice"));
            }
        }
        Ok(Flags(flags))
    }

    fn get(&self, flag: &str) -> Option<String> {
        self.0.get(flag).cloned()
    }

    fn path(&self, flag: &str, default: impl Into<PathBuf>) -> PathBuf {
        self.get(flag).map_or_else(|| default.into(), PathBuf::from)
    }

    fn required(&self, flag: &str) -> Result<PathBuf, String> {
        self.get(flag)
            .map(PathBuf::from)
            .ok_or_else(|| format!("{flag} is required"))
    }

    fn number(&self, flag: &str, default: u64) -> Result<u64, String> {
        match self.get(flag) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("{flag} {v:?}: not a whole number")),
        }
    }

    /// A count of something the suite repeats: at least 1.
    fn count(&self, flag: &str, default: u64) -> Result<usize, String> {
        Ok(self.number(flag, default)?.max(1) as usize)
    }

    fn paths(&self) -> Result<Paths, String> {
        let build = self.required("--build")?;
        Ok(Paths {
            handoff: self.required("--handoff")?,
            fragment: self.required("--fragment")?,
            modules_dir: self.path("--modules-dir", build.join("kernel/modules")),
            kconfig: self.path("--kconfig", build.join("kernel/config")),
            busybox: self.path("--busybox", "/bin/busybox"),
            build,
        })
    }

    fn run(&self) -> Result<RunOptions, String> {
        let runs = self.number("--runs", MIN_RUNS as u64)? as usize;
        if runs < MIN_RUNS {
            return Err(format!(
                "--runs {runs}: at least {MIN_RUNS} boots of each init are needed"
            ));
        }
        Ok(RunOptions {
            paths: self.paths()?,
            out: self.path("--out", "bench"),
            runs,
            scale_runs: self.count("--scale-runs", 3)?,
            hash_rounds: self.count("--hash-rounds", 5)?,
            hash_mib: self.count("--hash-mib", 1024)? as u64,
            agent_runs: self.count("--agent-runs", 5)?,
            upgrade_runs: self.count("--upgrade-runs", 3)?,
            parts: parse_parts(&self.get("--parts").unwrap_or(ALL_PARTS.join(",")))?,
            sizes: parse_sizes(&self.get("--sizes").unwrap_or("64,256,512,1024".into()))?,
        })
    }

    fn boot(&self) -> Result<BootOptions, String> {
        let init = match self.get("--init").as_deref() {
            Some("basalt") => Init::Basalt,
            Some("busybox") => Init::Busybox,
            Some(other) => return Err(format!("--init {other:?}: basalt or busybox")),
            None => return Err("--init is required".into()),
        };
        let root = match self.get("--root").as_deref() {
            None | Some("initramfs") => Root::Initramfs,
            Some("ram") => Root::Ram,
            Some("disk") => Root::Disk,
            Some(other) => return Err(format!("--root {other:?}: initramfs, ram or disk")),
        };
        if init == Init::Busybox && root != Root::Initramfs {
            return Err("--root: the busybox baseline boots from the initramfs only".into());
        }
        let (paths, size_mib) = (self.paths()?, self.number("--size", 64)?);
        Ok(BootOptions {
            paths,
            init,
            root,
            size_mib,
        })
    }
}

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.into_string().map_err(|a| format!("argument {a:?} is not UTF-8")))
        .collect::<Result<_, _>>()?;
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(Command::Help);
    }
    let Some((command, rest)) = args.split_first() else {
        return Err("no command given".into());
    };
    let Some((_, takes)) = TAKES.iter().find(|(c, _)| c == command) else {
        return Err(format!("unknown command {command:?}"));
    };
    let flags = Flags::parse(takes, rest)?;
    Ok(match command.as_str() {
        "run" => Command::Run(flags.run()?),
        "boot" => Command::Boot(flags.boot()?),
        "render" => Command::Render(RenderOptions {
            json: flags.required("--json")?,
            out: flags.path("--out", "bench"),
        }),
        _ => Command::Help,
    })
}

pub fn parse_parts(list: &str) -> Result<Parts, String> {
    let names: Vec<&str> = list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if let Some(other) = names.iter().find(|n| !ALL_PARTS.contains(n)) {
        return Err(format!("--parts: unknown part {other:?} ({})", ALL_PARTS.join(", ")));
    }
    if names.is_empty() {
        return Err("--parts: no part named".into());
    }
    let has = |part: &str| names.contains(&part);
    Ok(Parts {
        boot: has("boot"),
        disk: has("disk"),
        hash: has("hash"),
        sizes: has("sizes"),
        agent: has("agent"),
        upgrade: has("upgrade"),
    })
}

pub fn parse_sizes(list: &str) -> Result<Vec<u64>, String> {
    let sizes = list
        .split(',')
        .map(|s| s.trim().parse().ok().filter(|m| ALL_MIB.contains(m)));
    let sizes: Option<Vec<u64>> = sizes.collect();
    sizes.ok_or_else(|| format!("--sizes {list:?}: MiB, each one of 64, 256, 512, 1024"))
}

/// Every part `--parts` names.
const ALL_PARTS: [&str; 6] = ["boot", "disk", "hash", "sizes", "agent", "upgrade"];

/// Every image size the suite boots.
const ALL_MIB: [u64; 4] = [64, 256, 512, 1024];

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    const BASE: &str = "--build /b --handoff /h --fragment /f";

    #[test]
    fn run_defaults_and_overrides() {
        let Command::Run(o) = parse(args(&format!("run {BASE}"))).unwrap() else {
            panic!("not run")
        };
        assert_eq!(o.paths.modules_dir, PathBuf::from("/b/kernel/modules"));
        assert_eq!(o.paths.kconfig, PathBuf::from("/b/kernel/config"));
        assert_eq!(o.paths.busybox, PathBuf::from("/bin/busybox"));
        let numbers = (
            o.runs,
            o.scale_runs,
            o.hash_rounds,
            o.hash_mib,
            o.agent_runs,
            o.upgrade_runs,
        );
        assert_eq!(numbers, (5, 3, 5, 1024, 5, 3));
        assert_eq!(o.out, PathBuf::from("bench"));
        assert_eq!(o.parts, parse_parts("boot,disk,hash,sizes,agent,upgrade").unwrap());
        assert_eq!(o.sizes, [64, 256, 512, 1024]);
        assert!(o.parts.boot && o.parts.disk && o.parts.hash && o.parts.sizes && o.parts.agent && o.parts.upgrade);

        let line =
            format!("run {BASE} --runs 7 --scale-runs 0 --parts hash,sizes --out /o --modules-dir /m --sizes 64");
        let Command::Run(o) = parse(args(&line)).unwrap() else {
            panic!("not run")
        };
        assert_eq!((o.runs, o.scale_runs, o.sizes), (7, 1, vec![64]));
        assert!(o.parts.hash && o.parts.sizes && !o.parts.boot && !o.parts.disk && !o.parts.agent && !o.parts.upgrade);
        assert_eq!((o.paths.modules_dir, o.out), (PathBuf::from("/m"), PathBuf::from("/o")));
    }

    #[test]
    fn boot_and_render_commands() {
        let got = parse(args(&format!("boot {BASE} --init busybox --size 512"))).unwrap();
        let Command::Boot(o) = got else { panic!("not boot") };
        assert_eq!((o.init, o.root, o.size_mib), (Init::Busybox, Root::Initramfs, 512));
        let got = parse(args(&format!("boot {BASE} --init basalt --root disk"))).unwrap();
        let Command::Boot(o) = got else { panic!("not boot") };
        assert_eq!((o.init, o.root, o.size_mib), (Init::Basalt, Root::Disk, 64));
        let got = parse(args("render --json /r.json --out /o")).unwrap();
        let want = RenderOptions {
            json: "/r.json".into(),
            out: "/o".into(),
        };
        assert_eq!(got, Command::Render(want));
        // The help says what every option is.
        for flag in TAKES.iter().flat_map(|(_, t)| t.iter().flat_map(|t| t.split(' '))) {
            assert!(USAGE.contains(&format!("\n  {flag} ")), "{flag}");
        }
    }

    #[test]
    fn errors() {
        let cases = [
            ("", "no command given"),
            ("frob", "unknown command \"frob\""),
            ("run --handoff /h --fragment /f", "--build is required"),
            (&format!("run {BASE} --runs 3"), "at least 5"),
            (&format!("run {BASE} --runs 0"), "--runs 0: at least 5"),
            (&format!("run {BASE} --runs x"), "--runs \"x\": not a whole number"),
            (&format!("run {BASE} --parts boot,cake"), "unknown part \"cake\""),
            (&format!("run {BASE} --parts ,"), "no part named"),
            (
                &format!("run {BASE} --sizes 64,100"),
                "--sizes \"64,100\": MiB, each one of",
            ),
            (&format!("run {BASE} --what 1"), "unknown option --what"),
            (&format!("run {BASE} --init basalt"), "unknown option --init"),
            (&format!("run {BASE} --out"), "--out needs a value"),
            (&format!("run {BASE} --build /c"), "--build given twice"),
            (&format!("run {BASE} stray"), "unexpected argument \"stray\""),
            (&format!("boot {BASE} --init systemd"), "--init \"systemd\""),
            (&format!("boot {BASE}"), "--init is required"),
            (
                &format!("boot {BASE} --init basalt --root nfs"),
                "--root \"nfs\": initramfs, ram or disk",
            ),
            (
                &format!("boot {BASE} --init busybox --root ram"),
                "from the initramfs only",
            ),
            ("render --out /o", "--json is required"),
        ];
        for (line, needle) in cases {
            let err = parse(args(line)).unwrap_err();
            assert!(err.contains(needle), "{line}: {err}");
        }
        assert_eq!(parse(args("run --help")).unwrap(), Command::Help);
    }
}
