//! The boot report, `/run/basalt/boot.json`: what this boot did, how long
//! each step took, and what it trusted. The agent serves it as part of
//! `status`; the benchmarks read it. Times are microseconds on
//! CLOCK_MONOTONIC, i.e. since the kernel started.

use crate::harden::SysctlReport;
use crate::modules::LoadOutcome;
use crate::switchroot::Removed;
use crate::var::VarMounted;
use basalt_common::hex;
use serde_json::{json, Value};
use std::time::Duration;

pub const PATH: &str = "/run/basalt/boot.json";
pub const FORMAT: u64 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepTiming {
    pub name: &'static str,
    pub start: Duration,
    pub duration: Duration,
}

/// Everything the report says, gathered by main.
#[derive(Debug, Clone)]
pub struct BootFacts<'a> {
    pub init_start: Duration,
    pub handoff_at: Duration,
    pub steps: &'a [StepTiming],
    pub kernel_release: String,
    pub image_version: &'a str,
    pub image_sha256: [u8; 32],
    pub image_size: u64,
    pub image_origin: &'a str,
    pub image_copied: bool,
    pub loop_device: Option<&'a str>,
    /// The device the root is mounted from (the loop device, or /dev/dm-N).
    pub root_device: &'a str,
    pub verity: Option<VerityFacts<'a>>,
    pub var: &'a VarMounted,
    pub modules: &'a [(String, LoadOutcome)],
    pub lockdown: &'a str,
    pub sysctls: &'a SysctlReport,
    pub initramfs_removed: Removed,
    pub handoff: &'a str,
}

/// A root slot mounted through dm-verity.
#[derive(Debug, Clone)]
pub struct VerityFacts<'a> {
    pub partition: &'a str,
    pub mode: &'a str,
    pub device: &'a str,
    pub root_hash: [u8; 32],
    pub data_blocks: u64,
    pub copied_bytes: u64,
    pub hashed_up_front: bool,
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

pub fn build(f: &BootFacts) -> Value {
    let steps: Vec<Value> = f
        .steps
        .iter()
        .map(|s| json!({"name": s.name, "start_us": us(s.start), "duration_us": us(s.duration)}))
        .collect();
    let modules: Vec<Value> = f
        .modules
        .iter()
        .map(|(name, outcome)| {
            json!({"name": name, "status": match outcome {
                LoadOutcome::Loaded => "loaded",
                LoadOutcome::AlreadyLoaded => "already-loaded",
            }})
        })
        .collect();
    let failed: Vec<Value> = f
        .sysctls
        .failed
        .iter()
        .map(|x| json!({"key": x.key, "error": x.reason}))
        .collect();
    json!({
        "format": FORMAT,
        "init_version": env!("CARGO_PKG_VERSION"),
        "kernel": f.kernel_release,
        "clock": "CLOCK_MONOTONIC",
        "init_start_us": us(f.init_start),
        "handoff_us": us(f.handoff_at),
        "pid1_phase_us": us(f.handoff_at.saturating_sub(f.init_start)),
        "steps": steps,
        "image": {
            "version": f.image_version,
            "sha256": hex::encode(&f.image_sha256),
            "size": f.image_size,
            "origin": f.image_origin,
            "copied_to_ram": f.image_copied,
            "loop_device": f.loop_device,
            "device": f.root_device,
            "verity": f.verity.as_ref().map(|v| json!({
                "partition": v.partition,
                "mode": v.mode,
                "device": v.device,
                "root_hash": hex::encode(&v.root_hash),
                "data_blocks": v.data_blocks,
                "copied_bytes": v.copied_bytes,
                "hashed_up_front": v.hashed_up_front,
            })),
        },
        "var": {
            "fstype": f.var.fstype,
            "source": f.var.source,
            "device": f.var.device,
            "chosen_by": f.var.chosen_by,
            "note": f.var.note,
        },
        "modules": modules,
        "lockdown": f.lockdown,
        "sysctls": {"applied": f.sysctls.applied.len(), "failed": failed},
        "initramfs_removed": {
            "files": f.initramfs_removed.files,
            "dirs": f.initramfs_removed.dirs,
            "bytes": f.initramfs_removed.bytes,
        },
        "handoff": f.handoff,
    })
}

/// Writes the report atomically (temp file, then rename).
pub fn write(path: &str, report: &Value) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    if let Some(dir) = std::path::Path::new(path).parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harden::{Need, SysctlFailure};

    #[test]
    fn report_shape() {
        let ms = Duration::from_millis;
        let steps = [
            StepTiming {
                name: "mount-early",
                start: ms(2000),
                duration: ms(3),
            },
            StepTiming {
                name: "verify-image",
                start: ms(2010),
                duration: ms(400),
            },
        ];
        let sysctls = SysctlReport {
            applied: vec!["kernel.kptr_restrict"],
            failed: vec![SysctlFailure {
                key: "dev.tty.legacy_tiocsti",
                reason: "not present in this kernel".into(),
                need: Need::BestEffort,
            }],
        };
        let modules = [
            ("loop".to_string(), LoadOutcome::Loaded),
            ("virtio".to_string(), LoadOutcome::AlreadyLoaded),
        ];
        let facts = BootFacts {
            init_start: ms(2000),
            handoff_at: ms(2500),
            steps: &steps,
            kernel_release: "6.1.0-56-amd64".into(),
            image_version: "0.1.0",
            image_sha256: [0xab; 32],
            image_size: 4096,
            image_origin: "/basalt/root.sqsh",
            image_copied: false,
            loop_device: Some("/dev/loop0"),
            root_device: "/dev/dm-0",
            verity: Some(VerityFacts {
                partition: "ROOT-A",
                mode: "ram",
                device: "/dev/dm-0",
                root_hash: [0xcd; 32],
                data_blocks: 1,
                copied_bytes: 8192,
                hashed_up_front: false,
            }),
            var: &VarMounted {
                fstype: "ext4",
                source: "partlabel:VAR".into(),
                device: Some("/dev/vdb5".into()),
                chosen_by: "default",
                note: "partition VAR (/dev/vdb5)".into(),
            },
            modules: &modules,
            lockdown: "integrity",
            sysctls: &sysctls,
            initramfs_removed: Removed {
                files: 5,
                dirs: 2,
                bytes: 100,
            },
            handoff: "/sbin/basalt-agent",
        };
        let r = build(&facts);
        assert_eq!(r["pid1_phase_us"], 500_000);
        assert_eq!(r["steps"][1]["name"], "verify-image");
        assert_eq!(r["steps"][1]["duration_us"], 400_000);
        assert_eq!(r["image"]["sha256"], "ab".repeat(32));
        assert_eq!(r["modules"][1]["status"], "already-loaded");
        assert_eq!(r["sysctls"]["failed"][0]["key"], "dev.tty.legacy_tiocsti");
        assert_eq!(r["sysctls"]["applied"], 1);
        assert_eq!(r["lockdown"], "integrity");
        assert_eq!(r["image"]["verity"]["partition"], "ROOT-A");
        assert_eq!(r["image"]["verity"]["root_hash"], "cd".repeat(32));
        assert_eq!(r["image"]["device"], "/dev/dm-0");
        assert_eq!(r["var"]["fstype"], "ext4");
        assert_eq!(r["var"]["device"], "/dev/vdb5");
        assert_eq!(r["var"]["chosen_by"], "default");
    }
}
