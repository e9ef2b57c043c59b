#![cfg(feature = "host")]
//! Arguments. `make bench` passes every path explicitly; the defaults are
//! what the Makefile would pass.

use crate::boots::Init;
use std::ffi::OsString;
use std::path::PathBuf;

pub const USAGE: &str = "usage:
  basalt-bench run --build DIR --handoff FILE --fragment FILE [options]
      runs the suite and writes results.md, results.json, timeline.svg and
      scaling.svg into --out (default: bench)
  basalt-bench boot --build DIR --handoff FILE --fragment FILE --init basalt|busybox --size MiB
      builds one image and boots it once (for debugging the suite)
  basalt-bench render --json FILE [--out DIR]
      writes results.md, results.json, timeline.svg and scaling.svg again
      from a run's results.json, booting nothing

options:
  --build DIR         make's build directory (vmlinuz, bin/, keys/, rootfs/, kernel/)
  --handoff FILE      the bench-handoff fixture (static, x86_64-unknown-linux-musl)
  --fragment FILE     kernel-config/basalt.config
  --modules-dir DIR   kernel modules (default: BUILD/kernel/modules)
  --kconfig FILE      kernel config (default: BUILD/kernel/config)
  --busybox FILE      a static busybox (default: /bin/busybox)
  --out DIR           where the results go (default: bench)
  --runs N            boots per init per image size, alternating (default: 5, at least 5)
  --scale-runs N      boots per extra size for the scaling curve (default: 3)
  --hash-rounds N     rounds of the hashing comparison (default: 5)
  --hash-mib N        size of the hashed file (default: 1024)
  --agent-runs N      fresh nodes configured for parts 5 and 6 (default: 5)
  --parts LIST        comma-separated subset of: boot,hash,sizes,agent (default: all)";

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

/// The parts of the suite `--parts` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    /// 1, 2 and 7: the boots.
    pub boot: bool,
    /// 3: hashing.
    pub hash: bool,
    /// 4: sizes.
    pub sizes: bool,
    /// 5 and 6: the agent's memory and apply latency.
    pub agent: bool,
}

impl Parts {
    pub const ALL: Parts = Parts {
        boot: true,
        hash: true,
        sizes: true,
        agent: true,
    };
    const NONE: Parts = Parts {
        boot: false,
        hash: false,
        sizes: false,
        agent: false,
    };
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
    pub parts: Parts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOptions {
    pub paths: Paths,
    pub init: Init,
    pub size_mib: u64,
}

/// The issue asks for at least five boots of each init per size.
pub const MIN_RUNS: usize = 5;

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
    let mut flags = Flags::parse(rest)?;
    let command = match command.as_str() {
        "help" => Command::Help,
        "run" => {
            let paths = paths(&mut flags)?;
            let runs = flags.number("--runs", MIN_RUNS as u64)? as usize;
            if runs < MIN_RUNS {
                return Err(format!(
                    "--runs {runs}: at least {MIN_RUNS} boots of each init are needed"
                ));
            }
            let opts = RunOptions {
                out: flags.take("--out").unwrap_or_else(|| "bench".into()).into(),
                runs,
                scale_runs: flags.number("--scale-runs", 3)?.max(1) as usize,
                hash_rounds: flags.number("--hash-rounds", 5)?.max(1) as usize,
                hash_mib: flags.number("--hash-mib", 1024)?.max(1),
                agent_runs: flags.number("--agent-runs", 5)?.max(1) as usize,
                parts: match flags.take("--parts") {
                    None => Parts::ALL,
                    Some(list) => parse_parts(&list)?,
                },
                paths,
            };
            Command::Run(opts)
        }
        "boot" => {
            let paths = paths(&mut flags)?;
            let init = match flags.take("--init").as_deref() {
                Some("basalt") => Init::Basalt,
                Some("busybox") => Init::Busybox,
                Some(other) => return Err(format!("--init {other:?}: basalt or busybox")),
                None => return Err("--init is required".into()),
            };
            let size_mib = flags.number("--size", 64)?;
            Command::Boot(BootOptions { paths, init, size_mib })
        }
        "render" => Command::Render(RenderOptions {
            json: flags.required("--json")?.into(),
            out: flags.take("--out").unwrap_or_else(|| "bench".into()).into(),
        }),
        other => return Err(format!("unknown command {other:?}")),
    };
    flags.finish()?;
    Ok(command)
}

fn paths(flags: &mut Flags) -> Result<Paths, String> {
    let build: PathBuf = flags.required("--build")?.into();
    Ok(Paths {
        handoff: flags.required("--handoff")?.into(),
        fragment: flags.required("--fragment")?.into(),
        modules_dir: flags
            .take("--modules-dir")
            .map_or_else(|| build.join("kernel/modules"), PathBuf::from),
        kconfig: flags
            .take("--kconfig")
            .map_or_else(|| build.join("kernel/config"), PathBuf::from),
        busybox: flags.take("--busybox").unwrap_or_else(|| "/bin/busybox".into()).into(),
        build,
    })
}

pub fn parse_parts(list: &str) -> Result<Parts, String> {
    let mut parts = Parts::NONE;
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match name {
            "boot" => parts.boot = true,
            "hash" => parts.hash = true,
            "sizes" => parts.sizes = true,
            "agent" => parts.agent = true,
            other => return Err(format!("--parts: unknown part {other:?} (boot, hash, sizes, agent)")),
        }
    }
    if parts == Parts::NONE {
        return Err("--parts: no part named".into());
    }
    Ok(parts)
}

/// `--flag value` pairs, each at most once.
struct Flags(Vec<(String, String)>);

impl Flags {
    fn parse(args: &[String]) -> Result<Flags, String> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if !flag.starts_with("--") {
                return Err(format!("unexpected argument {flag:?}"));
            }
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            if out.iter().any(|(f, _)| f == flag) {
                return Err(format!("{flag} given twice"));
            }
            out.push((flag.clone(), value.clone()));
        }
        Ok(Flags(out))
    }

    fn take(&mut self, flag: &str) -> Option<String> {
        let at = self.0.iter().position(|(f, _)| f == flag)?;
        Some(self.0.remove(at).1)
    }

    fn required(&mut self, flag: &str) -> Result<String, String> {
        self.take(flag).ok_or_else(|| format!("{flag} is required"))
    }

    fn number(&mut self, flag: &str, default: u64) -> Result<u64, String> {
        match self.take(flag) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("{flag} {v:?}: not a whole number")),
        }
    }

    fn finish(self) -> Result<(), String> {
        match self.0.first() {
            None => Ok(()),
            Some((flag, _)) => Err(format!("unknown option {flag}")),
        }
    }
}

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
        assert_eq!(
            (o.runs, o.scale_runs, o.hash_rounds, o.hash_mib, o.agent_runs),
            (5, 3, 5, 1024, 5)
        );
        assert_eq!(o.out, PathBuf::from("bench"));
        assert_eq!(o.parts, Parts::ALL);

        let line = format!("run {BASE} --runs 7 --scale-runs 2 --parts hash,sizes --out /o --modules-dir /m");
        let Command::Run(o) = parse(args(&line)).unwrap() else {
            panic!("not run")
        };
        assert_eq!((o.runs, o.scale_runs), (7, 2));
        assert!(o.parts.hash && o.parts.sizes && !o.parts.boot && !o.parts.agent);
        assert_eq!(o.paths.modules_dir, PathBuf::from("/m"));
        assert_eq!(o.out, PathBuf::from("/o"));
    }

    #[test]
    fn boot_command() {
        let got = parse(args(&format!("boot {BASE} --init busybox --size 512"))).unwrap();
        let Command::Boot(o) = got else { panic!("not boot") };
        assert_eq!((o.init, o.size_mib), (Init::Busybox, 512));
        let got = parse(args("render --json /r.json --out /o")).unwrap();
        let want = RenderOptions {
            json: "/r.json".into(),
            out: "/o".into(),
        };
        assert_eq!(got, Command::Render(want));
    }

    #[test]
    fn errors() {
        let cases = [
            ("", "no command given"),
            ("frob", "unknown command \"frob\""),
            ("run --handoff /h --fragment /f", "--build is required"),
            (&format!("run {BASE} --runs 3"), "at least 5"),
            (&format!("run {BASE} --runs x"), "--runs \"x\": not a whole number"),
            (&format!("run {BASE} --parts boot,cake"), "unknown part \"cake\""),
            (&format!("run {BASE} --parts ,"), "no part named"),
            (&format!("run {BASE} --what 1"), "unknown option --what"),
            (&format!("run {BASE} --out"), "--out needs a value"),
            (&format!("run {BASE} --build /c"), "--build given twice"),
            (&format!("run {BASE} stray"), "unexpected argument \"stray\""),
            (&format!("boot {BASE} --init systemd"), "--init \"systemd\""),
            (&format!("boot {BASE}"), "--init is required"),
            ("render --out /o", "--json is required"),
        ];
        for (line, needle) in cases {
            let err = parse(args(line)).unwrap_err();
            assert!(err.contains(needle), "{line}: {err}");
        }
        assert_eq!(parse(args("run --help")).unwrap(), Command::Help);
    }
}
