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

use crate::error::{io_err, run, BenchError};
use crate::images::write_random_file;
use basalt_common::hex;
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Serialised as the keys results.json uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tool {
    /// hash_stream with no copy: the initramfs path.
    Basalt,
    /// hash_stream copying into a memfd: the block-device path.
    BasaltCopy,
    Openssl,
    Sha256sum,
    #[serde(rename = "busybox_sha256sum")]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
struct Cleanup<'a>(&'a HashPlan);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0.file);
        let _ = std::fs::remove_file(&self.0.copy_to);
    }
}

pub fn run_all(plan: &HashPlan, progress: &mut dyn FnMut(&str)) -> Result<HashRuns, BenchError> {
    let _cleanup = Cleanup(plan);
    write_random_file(&plan.file, plan.bytes, 0x6861_7368)?;
    // One untimed pass of basalt's routine gives the digest every tool's
    // output is checked against in every round (the file is in RAM already).
    let want = time_tool(Tool::Basalt, plan)?.1.unwrap_or_default();
    let mut times: Vec<(Tool, Vec<f64>)> = TOOLS.iter().map(|&t| (t, Vec::new())).collect();
    for round in 0..plan.rounds {
        for tool in round_order(round) {
            let (took, got) = time_tool(tool, plan)?;
            if let Some(got) = got.filter(|g| *g != want) {
                let (tool, want) = (tool.label().to_string(), want.clone());
                return Err(BenchError::DigestMismatch { tool, got, want });
            }
            times[TOOLS.iter().position(|t| *t == tool).unwrap_or(0)]
                .1
                .push(took.as_secs_f64());
        }
        progress(&format!("hash round {}/{} done", round + 1, plan.rounds));
    }
    let openssl = run(Command::new("openssl").arg("version")).unwrap_or_default();
    Ok(HashRuns {
        bytes: plan.bytes,
        rounds: plan.rounds,
        times,
        sha256: want,
        openssl_version: openssl.trim().to_string(),
        cpu: cpu_model(Path::new("/proc/cpuinfo")),
    })
}

/// Runs one tool once; returns how long it took and its digest (hex).
fn time_tool(tool: Tool, plan: &HashPlan) -> Result<(Duration, Option<String>), BenchError> {
    let file = plan.file.as_path();
    let mut cmd = match tool {
        Tool::Basalt | Tool::BasaltCopy => return hash_stream(file, plan.bytes, tool == Tool::BasaltCopy),
        Tool::Openssl => Command::new("openssl"),
        Tool::Sha256sum => Command::new("sha256sum"),
        Tool::Busybox => Command::new(&plan.busybox),
        Tool::Cp => Command::new("cp"),
    };
    match tool {
        Tool::Openssl => cmd.args(["dgst", "-sha256"]).arg(file),
        Tool::Busybox => cmd.arg("sha256sum").arg(file),
        Tool::Cp => cmd.arg(file).arg(&plan.copy_to),
        _ => cmd.arg(file),
    };
    let _ = std::fs::remove_file(&plan.copy_to);
    let started = Instant::now();
    let out = run(&mut cmd)?;
    let took = started.elapsed();
    if tool == Tool::Cp {
        std::fs::remove_file(&plan.copy_to).map_err(io_err("remove", &plan.copy_to))?;
        return Ok((took, None));
    }
    let digest = digest_in(&out).ok_or_else(|| BenchError::Parse {
        what: format!("{} output", tool.label()),
        why: format!("no digest in {:?}", out.trim()),
    })?;
    Ok((took, Some(digest)))
}

/// basalt's routine over `file`, into a memfd if `copy`.
fn hash_stream(file: &Path, bytes: u64, copy: bool) -> Result<(Duration, Option<String>), BenchError> {
    let started = Instant::now();
    let mut src = File::open(file).map_err(io_err("open", file))?;
    let hashed = if copy {
        let memfd = memfd_create(c"basalt-bench-copy", MemFdCreateFlag::MFD_CLOEXEC)
            .map_err(|e| io_err("memfd_create for", file)(e.into()))?;
        basalt_init::digest::hash_stream(&mut src, bytes, Some(&mut File::from(memfd)))
    } else {
        basalt_init::digest::hash_stream(&mut src, bytes, None::<&mut File>)
    }
    .map_err(io_err("hash", file))?;
    let took = started.elapsed();
    if hashed.len != bytes {
        return Err(BenchError::Parse {
            what: file.display().to_string(),
            why: format!("hash_stream read {} of {bytes} bytes", hashed.len),
        });
    }
    Ok((took, Some(hex::encode(&hashed.sha256))))
}

/// The digest a tool printed: `SHA2-256(file)= <hex>` (OpenSSL 3),
/// `SHA256(file)= <hex>` (1.1), or `<hex>  <file>` (sha256sum), from the
/// first line.
pub fn digest_in(out: &str) -> Option<String> {
    let hex = |s: &str| (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase());
    let first = out.lines().next()?;
    let openssl = first.rsplit_once("= ").and_then(|(_, h)| hex(h.trim()));
    openssl.or_else(|| hex(first.split_whitespace().next()?))
}

/// The first `model name` in a cpuinfo file, and whether it has SHA-NI.
pub fn cpu_model(cpuinfo: &Path) -> String {
    describe_cpu(&std::fs::read_to_string(cpuinfo).unwrap_or_default())
}

pub fn describe_cpu(cpuinfo: &str) -> String {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let model = field("model name").unwrap_or_else(|| "unknown CPU".into());
    let sha_ni = field("flags")
        .unwrap_or_default()
        .split_whitespace()
        .any(|f| f == "sha_ni");
    format!("{model} ({} SHA-NI)", if sha_ni { "with" } else { "without" })
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
        let cases: &[(&str, Option<&str>)] = &[
            (&format!("SHA2-256(/dev/shm/x)= {h}\n"), Some(h)),
            (&format!("SHA256(/dev/shm/a= b)= {h}\n"), Some(h)),
            (&format!("{h}  /dev/shm/x\n"), Some(h)),
            (&format!("{h}  /dev/shm/a= b\n"), Some(h)),
            (&format!("{}  x\n", h.to_uppercase()), Some(h)),
            ("SHA2-256(x)= abc\n", None),
            ("", None),
            ("sha256sum: x: No such file or directory\n", None),
        ];
        for (out, want) in cases {
            assert_eq!(digest_in(out).as_deref(), *want, "{out:?}");
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
