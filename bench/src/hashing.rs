#![cfg(feature = "host")]
//! Part 3: basalt-init's hash routine on the host, against openssl,
//! coreutils sha256sum, busybox sha256sum and a plain copy into tmpfs.
//!
//! The routine is `basalt_init::digest::hash_stream`, the function init
//! calls: once with no sink (an image already in the initramfs) and once
//! copying into a memfd, as init does with an image on a block device. The
//! file lives in /dev/shm, so every tool reads it from RAM (a warm page
//! cache by construction), and each round runs the tools in a rotated order
//! so none always goes first.

use crate::error::{io_err, BenchError};
use crate::images::write_random_file;
use basalt_common::hex;
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tool {
    /// hash_stream with no copy: the initramfs path.
    Basalt,
    /// hash_stream copying into a memfd: the block-device path.
    BasaltCopy,
    Openssl,
    Sha256sum,
    Busybox,
    /// `cp` into /dev/shm: the cost of moving the bytes, no hashing.
    Cp,
}

pub const TOOLS: [Tool; 6] = [
    Tool::Basalt,
    Tool::BasaltCopy,
    Tool::Openssl,
    Tool::Sha256sum,
    Tool::Busybox,
    Tool::Cp,
];

impl Tool {
    pub fn key(self) -> &'static str {
        match self {
            Tool::Basalt => "basalt",
            Tool::BasaltCopy => "basalt_copy",
            Tool::Openssl => "openssl",
            Tool::Sha256sum => "sha256sum",
            Tool::Busybox => "busybox_sha256sum",
            Tool::Cp => "cp",
        }
    }

    pub fn from_key(key: &str) -> Option<Tool> {
        TOOLS.into_iter().find(|t| t.key() == key)
    }

    pub fn label(self) -> &'static str {
        match self {
            Tool::Basalt => "basalt hash_stream (initramfs path)",
            Tool::BasaltCopy => "basalt hash_stream + copy into memfd (block-device path)",
            Tool::Openssl => "openssl dgst -sha256",
            Tool::Sha256sum => "sha256sum (coreutils)",
            Tool::Busybox => "busybox sha256sum",
            Tool::Cp => "cp into /dev/shm (no hash)",
        }
    }
}

/// The order the tools run in during round `round`: rotated by one each round.
pub fn round_order(round: usize) -> Vec<Tool> {
    let mut order = TOOLS.to_vec();
    order.rotate_left(round % TOOLS.len());
    order
}

/// Each tool's time in each round (seconds), in TOOLS order.
#[derive(Debug, Clone)]
pub struct HashRuns {
    pub bytes: u64,
    pub rounds: usize,
    pub times: Vec<(Tool, Vec<f64>)>,
    pub sha256: String,
    pub openssl_version: String,
    pub cpu: String,
}

pub struct HashPlan {
    pub file: PathBuf,
    pub copy_to: PathBuf,
    pub bytes: u64,
    pub rounds: usize,
    pub busybox: PathBuf,
}

/// Removes the bench's files in /dev/shm on every path out.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

pub fn run(plan: &HashPlan, progress: &mut dyn FnMut(&str)) -> Result<HashRuns, BenchError> {
    let _cleanup = Cleanup(vec![plan.file.clone(), plan.copy_to.clone()]);
    write_random_file(&plan.file, plan.bytes, 0x6861_7368)?;
    // One untimed pass of basalt's routine gives the digest every tool's
    // output is checked against in every round (the file is in RAM already).
    let (_, want) = time_tool(Tool::Basalt, plan)?;
    let want = want.unwrap_or_default();
    let mut times: Vec<(Tool, Vec<f64>)> = TOOLS.iter().map(|&t| (t, Vec::new())).collect();
    for round in 0..plan.rounds {
        for tool in round_order(round) {
            let (took, got) = time_tool(tool, plan)?;
            check(tool, got.as_deref(), &want)?;
            if let Some((_, v)) = times.iter_mut().find(|(t, _)| *t == tool) {
                v.push(took.as_secs_f64());
            }
        }
        progress(&format!("hash round {}/{} done", round + 1, plan.rounds));
    }
    Ok(HashRuns {
        bytes: plan.bytes,
        rounds: plan.rounds,
        times,
        sha256: want,
        openssl_version: output_of(Command::new("openssl").arg("version"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        cpu: cpu_model(Path::new("/proc/cpuinfo")),
    })
}

fn check(tool: Tool, got: Option<&str>, want: &str) -> Result<(), BenchError> {
    match got {
        None => Ok(()),
        Some(g) if g == want => Ok(()),
        Some(g) => Err(BenchError::DigestMismatch {
            tool: tool.label().to_string(),
            got: g.to_string(),
            want: want.to_string(),
        }),
    }
}

/// Runs one tool once; returns how long it took and its digest (hex).
fn time_tool(tool: Tool, plan: &HashPlan) -> Result<(Duration, Option<String>), BenchError> {
    let file = plan.file.as_path();
    match tool {
        Tool::Basalt | Tool::BasaltCopy => {
            let started = Instant::now();
            let mut src = File::open(file).map_err(io_err("open", file))?;
            let hashed = if tool == Tool::Basalt {
                basalt_init::digest::hash_stream(&mut src, plan.bytes, None::<&mut File>)
            } else {
                let memfd = memfd_create(c"basalt-bench-copy", MemFdCreateFlag::MFD_CLOEXEC)
                    .map_err(|e| io_err("memfd_create for", file)(e.into()))?;
                let mut ram = File::from(memfd);
                basalt_init::digest::hash_stream(&mut src, plan.bytes, Some(&mut ram))
            }
            .map_err(io_err("hash", file))?;
            let took = started.elapsed();
            if hashed.len != plan.bytes {
                return Err(BenchError::Parse {
                    what: file.display().to_string(),
                    why: format!("hash_stream read {} of {} bytes", hashed.len, plan.bytes),
                });
            }
            Ok((took, Some(hex::encode(&hashed.sha256))))
        }
        Tool::Openssl => {
            let mut cmd = Command::new("openssl");
            cmd.args(["dgst", "-sha256"]).arg(file);
            let (took, out) = timed(&mut cmd)?;
            Ok((
                took,
                Some(parse_openssl(&out).ok_or_else(|| unparsed("openssl dgst", &out))?),
            ))
        }
        Tool::Sha256sum | Tool::Busybox => {
            let mut cmd = if tool == Tool::Sha256sum {
                Command::new("sha256sum")
            } else {
                let mut c = Command::new(&plan.busybox);
                c.arg("sha256sum");
                c
            };
            cmd.arg(file);
            let (took, out) = timed(&mut cmd)?;
            Ok((
                took,
                Some(parse_sha256sum(&out).ok_or_else(|| unparsed(tool.label(), &out))?),
            ))
        }
        Tool::Cp => {
            let _ = std::fs::remove_file(&plan.copy_to);
            let mut cmd = Command::new("cp");
            cmd.arg(file).arg(&plan.copy_to);
            let (took, _) = timed(&mut cmd)?;
            std::fs::remove_file(&plan.copy_to).map_err(io_err("remove", &plan.copy_to))?;
            Ok((took, None))
        }
    }
}

fn unparsed(what: &str, out: &str) -> BenchError {
    BenchError::Parse {
        what: format!("{what} output"),
        why: format!("no digest in {:?}", out.trim()),
    }
}

/// Spawn to exit, with stdout captured.
fn timed(cmd: &mut Command) -> Result<(Duration, String), BenchError> {
    let program = format!("{cmd:?}");
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| BenchError::Command {
            program: program.clone(),
            why: e.to_string(),
        })?;
    let took = started.elapsed();
    if !out.status.success() {
        return Err(BenchError::Command {
            program,
            why: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok((took, String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn output_of(cmd: &mut Command) -> Option<String> {
    let out = cmd.stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `SHA2-256(file)= <hex>` (OpenSSL 3) or `SHA256(file)= <hex>` (1.1).
pub fn parse_openssl(out: &str) -> Option<String> {
    let hex = out.lines().next()?.rsplit_once("= ")?.1.trim();
    is_sha256_hex(hex).then(|| hex.to_ascii_lowercase())
}

/// `<hex>  <file>`.
pub fn parse_sha256sum(out: &str) -> Option<String> {
    let hex = out.split_whitespace().next()?;
    is_sha256_hex(hex).then(|| hex.to_ascii_lowercase())
}

/// The first `model name` in a cpuinfo file, and whether it has SHA-NI.
pub fn cpu_model(cpuinfo: &Path) -> String {
    let text = std::fs::read_to_string(cpuinfo).unwrap_or_default();
    describe_cpu(&text)
}

pub fn describe_cpu(cpuinfo: &str) -> String {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let model = field("model name").unwrap_or_else(|| "unknown CPU".into());
    let flags = field("flags").unwrap_or_default();
    let sha = if flags.split_whitespace().any(|f| f == "sha_ni") {
        "with SHA-NI"
    } else {
        "without SHA-NI"
    };
    format!("{model} ({sha})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_rotate_so_no_tool_always_goes_first() {
        let firsts: Vec<Tool> = (0..TOOLS.len()).map(|r| round_order(r)[0]).collect();
        assert_eq!(firsts, TOOLS.to_vec());
        assert_eq!(round_order(TOOLS.len()), TOOLS.to_vec());
        for r in 0..10 {
            let mut o = round_order(r);
            o.sort();
            assert_eq!(o, TOOLS.to_vec(), "round {r} runs every tool once");
        }
    }

    #[test]
    fn digests_from_tool_output() {
        let h = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let cases: &[(&str, Option<&str>, Option<&str>)] = &[
            (&format!("SHA2-256(/dev/shm/x)= {h}\n"), Some(h), None),
            (&format!("SHA256(/dev/shm/a= b)= {h}\n"), Some(h), None),
            (&format!("{h}  /dev/shm/x\n"), None, Some(h)),
            (&format!("{}  x\n", h.to_uppercase()), None, Some(h)),
            ("SHA2-256(x)= abc\n", None, None),
            ("", None, None),
            ("sha256sum: x: No such file or directory\n", None, None),
        ];
        for (out, openssl, sum) in cases {
            assert_eq!(parse_openssl(out).as_deref(), *openssl, "{out:?}");
            assert_eq!(parse_sha256sum(out).as_deref(), *sum, "{out:?}");
        }
    }

    #[test]
    fn cpu_description() {
        let info = "processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\nflags\t\t: fpu sse2 sha_ni avx2\n\nprocessor\t: 1\nmodel name\t: Some CPU @ 2.0GHz\n";
        assert_eq!(describe_cpu(info), "Some CPU @ 2.0GHz (with SHA-NI)");
        assert_eq!(describe_cpu("model name : X\nflags : sse2 sha\n"), "X (without SHA-NI)");
        assert_eq!(describe_cpu(""), "unknown CPU (without SHA-NI)");
    }
}
