#![cfg(feature = "host")]
//! Parts 5 and 6, through the agent, on the image `make image` built (the
//! agent as handoff, the kubelet stand-in at /usr/bin/kubelet).
//!
//! Each run boots a fresh node, so every apply is a first apply: the agent
//! in maintenance mode receives a signed config and starts the kubelet. The
//! host drives it with basaltctl over vsock (vhost-device-vsock):
//! - end to end: from spawning `basaltctl apply` to the first `status` that
//!   reports the kubelet `running`, polled back to back;
//! - in the guest: `status.apply_to_exec_ms.kubelet`, the agent's own time
//!   from the apply request's arrival to the kubelet's exec;
//! - where the apply's time goes: `status.config.stages_ms`, the agent's
//!   split of it into read, verify, validate, files, state, persist and
//!   spawn;
//! - with persistence (issue 12): the same apply on a node with a fresh
//!   STATE disk, against `basalt.state=none`, and that node booted again on
//!   its disk to the kubelet running with no apply;
//! - memory: `status.agent_peak_rss_kib` and `init_peak_rss_kib` (VmHWM),
//!   read in that same status, after the config is applied.

use crate::boots::CMDLINE;
use crate::error::{io_err, missing, run, BenchError};
use crate::results::{AgentRuns, Persisted};
use basalt_qemu::{AccelChoice, Vm, VmConfig, DEFAULT_GUEST_CID};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The agent's default vsock port (docs/protocol.md).
pub const VSOCK_PORT: u32 = 1024;
const NODE: &str = "bench-node";
const SERVICE: &str = "kubelet";
/// How long a fresh node gets to answer its first status.
const AGENT_UP: Duration = Duration::from_secs(120);
const RUNNING: Duration = Duration::from_secs(30);
const METHOD: &str = "End to end is timed on the host from spawning `basaltctl apply CONFIG --key KEY` (which \
                      signs the config, then sends it over vsock) to the first `basaltctl status` that reports the \
                      kubelet running, polled back to back; every run is a first apply on a freshly booted node.";

/// Whether the parts can run: every input `make image` leaves in `build`.
pub fn check_inputs(build: &Path) -> Result<(), BenchError> {
    let need = [
        "vmlinuz",
        "initramfs.img",
        "bin/basaltctl",
        "keys/config.key",
        "bin/basalt-agent",
    ];
    missing(
        need.map(|p| ("agent input", build.join(p), "run `make image`"))
            .to_vec(),
    )
}

/// The config each run applies: generation 1, bound to the node's
/// `basalt.node=`, one service, the kubelet stand-in.
pub fn bench_config(node: &str) -> String {
    let config = serde_json::json!({
        "kind": "config",
        "version": 1,
        "generation": 1,
        "node": node,
        "hostname": "basalt-bench",
        "files": [
            {"path": "/var/lib/kubelet/config.yaml", "mode": "0644",
             "contents": "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"}
        ],
        "services": [
            {"name": SERVICE,
             "exec": ["/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml"],
             "env": {"HOME": "/var/lib/kubelet", "KUBELET_STANDIN_HEARTBEAT": "/run/kubelet/heartbeat"}}
        ]
    });
    serde_json::to_string_pretty(&config).unwrap_or_default() + "\n"
}

/// The stages the agent splits an apply into (`status.config.stages_ms`,
/// docs/protocol.md), in the order they run.
pub const STAGES: &[&str] = &["read", "verify", "validate", "files", "state", "persist", "spawn"];

/// The parts of a `status` result this benchmark reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Status {
    pub services: Vec<ServiceState>,
    #[serde(default)]
    pub apply_to_exec_ms: BTreeMap<String, f64>,
    pub agent_peak_rss_kib: Option<f64>,
    pub init_peak_rss_kib: Option<f64>,
    pub config: Option<AppliedConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ServiceState {
    pub name: String,
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AppliedConfig {
    pub stages_ms: Option<BTreeMap<String, f64>>,
}

impl Status {
    fn running(&self) -> bool {
        self.services.iter().any(|s| s.name == SERVICE && s.state == "running")
    }

    /// The last apply's stages, in [`STAGES`] order then any others by name.
    pub fn stages(&self) -> Vec<(String, f64)> {
        let stages = self.config.iter().flat_map(|c| c.stages_ms.iter().flatten());
        let mut v: Vec<(String, f64)> = stages.map(|(n, x)| (n.clone(), *x)).collect();
        v.sort_by_key(|(n, _)| (STAGES.iter().position(|s| s == n).unwrap_or(STAGES.len()), n.clone()));
        v
    }
}

/// Reads `basaltctl --json status` output: `{"id":..,"ok":true,"result":{..}}`.
pub fn parse_status(stdout: &str) -> Result<Status, String> {
    #[derive(Deserialize)]
    struct Reply {
        ok: bool,
        error: Option<serde_json::Value>,
        result: Option<Status>,
    }
    let reply: Reply = serde_json::from_str(stdout.trim()).map_err(|e| format!("status: {e}"))?;
    match (reply.ok, reply.result) {
        (true, Some(status)) => Ok(status),
        (true, None) => Err("status: no result".into()),
        (false, _) => Err(format!("agent error: {}", reply.error.unwrap_or_default())),
    }
}

/// basaltctl against one node.
fn ctl(program: &Path, endpoint: &str, args: &[&str]) -> Result<String, String> {
    run(Command::new(program).arg("--endpoint").arg(endpoint).args(args)).map_err(|e| e.to_string())
}

/// One node's apply, as `apply` reads it.
struct Applied {
    status: Status,
    /// VM start → the kubelet reported running.
    boot_to_running_ms: f64,
    /// `basaltctl apply` start → kubelet running.
    end_to_end_ms: f64,
    /// `basaltctl apply` start → it returned (the agent's ok).
    ack_ms: f64,
    accel: AccelChoice,
}

impl Applied {
    /// The agent's own apply → kubelet exec.
    fn apply_to_exec_ms(&self, run: usize) -> Result<f64, BenchError> {
        let ms = self.status.apply_to_exec_ms.get(SERVICE).copied();
        need(ms, "apply_to_exec_ms.kubelet", run)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn need(v: Option<f64>, what: &str, run: usize) -> Result<f64, BenchError> {
    v.ok_or_else(|| BenchError::Agent {
        op: format!("agent run {}", run + 1),
        why: format!("status has no {what}"),
    })
}

/// Adds one apply's stages to the samples, stage by stage.
fn push_stages(into: &mut Vec<(String, Vec<f64>)>, status: &Status) {
    for (name, ms) in status.stages() {
        match into.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => v.push(ms),
            None => into.push((name, vec![ms])),
        }
    }
}

/// Boots `runs` fresh nodes without persistence (`basalt.state=none`) and
/// applies the bench config to each; then `runs` more with a fresh STATE
/// disk, applies the same config, and boots each of those again on its
/// STATE disk with no apply. The accelerator they ran under.
pub fn measure(
    build: &Path,
    dir: &Path,
    runs: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<(AgentRuns, Option<AccelChoice>), BenchError> {
    let work = dir.join("agent");
    std::fs::create_dir_all(&work).map_err(io_err("create", &work))?;
    let config_path = work.join("config.json");
    std::fs::write(&config_path, bench_config(NODE)).map_err(io_err("write", &config_path))?;
    let mut out = AgentRuns {
        method: METHOD.into(),
        ..AgentRuns::default()
    };
    let mut persisted = Persisted::default();
    let mut accel = None;
    for run in 0..runs {
        let plain = apply_once(build, &work, Some(&config_path), None, run)?;
        let (status, apply_ms) = (&plain.status, plain.apply_to_exec_ms(run)?);
        let agent_kib = need(status.agent_peak_rss_kib, "agent_peak_rss_kib", run)?;
        let init_kib = need(status.init_peak_rss_kib, "init_peak_rss_kib", run)?;
        out.apply_to_exec_ms.push(apply_ms);
        out.agent_hwm_kib.push(agent_kib);
        out.init_hwm_kib.push(init_kib);
        out.end_to_end_ms.push(plain.end_to_end_ms);
        out.ack_ms.push(plain.ack_ms);
        out.boot_to_running_ms.push(plain.boot_to_running_ms);
        push_stages(&mut out.stages_ms, status);

        let disk = work.join(format!("state-{run}.img"));
        basalt_tests::state_disk(&disk, 16);
        let with = apply_once(build, &work, Some(&config_path), Some(&disk), run)?;
        let again = apply_once(build, &work, None, Some(&disk), run)?;
        let _ = std::fs::remove_file(&disk);
        let exec_ms = with.apply_to_exec_ms(run)?;
        persisted.apply_to_exec_ms.push(exec_ms);
        persisted.ack_ms.push(with.ack_ms);
        persisted.boot_to_running_ms.push(again.boot_to_running_ms);
        push_stages(&mut persisted.stages_ms, &with.status);
        progress(&format!(
            "agent run {}/{runs}: ack {:.0} ms without persistence, {:.0} ms with; apply→exec {apply_ms:.1} ms \
             and {exec_ms:.1} ms; boot to kubelet {:.0} ms with a manual apply, {:.0} ms on the persisted config; \
             VmHWM agent {agent_kib} KiB, init {init_kib} KiB",
            run + 1,
            plain.ack_ms,
            with.ack_ms,
            plain.boot_to_running_ms,
            again.boot_to_running_ms,
        ));
        accel = Some(plain.accel);
    }
    out.persisted = Some(persisted);
    Ok((out, accel))
}

/// Boots a fresh node (on `state`, a STATE disk, or with
/// `basalt.state=none`), waits for its agent, applies `config` if given,
/// and polls until the kubelet runs. The VM is stopped on return.
fn apply_once(
    build: &Path,
    work: &Path,
    config: Option<&Path>,
    state: Option<&Path>,
    run: usize,
) -> Result<Applied, BenchError> {
    let name = match (state, config) {
        (None, _) => format!("agent-{run}"),
        (Some(_), Some(_)) => format!("agent-state-{run}"),
        (Some(_), None) => format!("agent-state-{run}-reboot"),
    };
    let log = work.join(format!("{name}.log"));
    let _ = std::fs::remove_file(&log);
    let initramfs = build.join("initramfs.img");
    let mut cfg = VmConfig::new(build.join("vmlinuz"))
        .initrd(&initramfs)
        .append(CMDLINE)
        .append(&format!("basalt.node={NODE}"))
        .vsock(DEFAULT_GUEST_CID)
        .console_log(&log)
        .work_dir(work.join(format!("vm-{name}")))
        .accel_cache(build.join("qemu-accel"));
    cfg = match state {
        Some(disk) => cfg.writable_disk(disk),
        None => cfg.append("basalt.state=none"),
    };
    let fail = |why: String| BenchError::Agent {
        op: format!("agent run {} ({name})", run + 1),
        why: format!("{why} (console: {})", log.display()),
    };
    let booted = Instant::now();
    let vm = Vm::start(cfg).map_err(|source| BenchError::Vm {
        what: format!("boot {}", initramfs.display()),
        source,
    })?;
    let uds = vm.vsock_uds_path().map(Path::to_path_buf).unwrap_or_default();
    let endpoint = format!("vsock-uds:{}:{VSOCK_PORT}", uds.display());
    let basaltctl = build.join("bin/basaltctl");
    let status = || parse_status(&ctl(&basaltctl, &endpoint, &["--json", "status"])?);
    wait_for_agent(&vm, &status).map_err(fail)?;
    let key = build.join("keys/config.key").display().to_string();
    let t0 = Instant::now();
    if let Some(config) = config {
        let config = config.display().to_string();
        ctl(&basaltctl, &endpoint, &["apply", &config, "--key", &key]).map_err(fail)?;
    }
    let ack_ms = ms(t0.elapsed());
    loop {
        let s = status().map_err(fail)?;
        if s.running() {
            let (end_to_end_ms, boot_to_running_ms) = (ms(t0.elapsed()), ms(booted.elapsed()));
            let (status, accel) = (s, vm.accel().clone());
            return Ok(Applied {
                status,
                boot_to_running_ms,
                end_to_end_ms,
                ack_ms,
                accel,
            });
        }
        if t0.elapsed() >= RUNNING {
            return Err(fail(format!(
                "{SERVICE} not running {} s after the apply",
                RUNNING.as_secs()
            )));
        }
    }
}

/// Polls `status` until the fresh node's agent answers.
fn wait_for_agent(vm: &Vm, status: &dyn Fn() -> Result<Status, String>) -> Result<(), String> {
    let up = Instant::now();
    loop {
        match status() {
            Ok(_) => return Ok(()),
            Err(e) if up.elapsed() >= AGENT_UP => return Err(format!("the agent never answered: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
        if vm.try_exit_status().ok().flatten().is_some() {
            return Err("the VM exited before the agent answered".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_what_the_agent_takes() {
        let text = bench_config("n-1");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!((v["node"].as_str(), v["generation"].as_u64()), (Some("n-1"), Some(1)));
        assert_eq!(v["services"][0]["exec"][0], "/usr/bin/kubelet");
        // The agent's own validation accepts it.
        basalt_common::config::parse_config(text.as_bytes()).unwrap();
    }

    #[test]
    fn status_figures() {
        let ok = r#"{"id":"ctl-1-1","ok":true,"result":{"services":[{"name":"kubelet","state":"running"}],
            "apply_to_exec_ms":{"kubelet":12.5},"agent_peak_rss_kib":3000,"init_peak_rss_kib":900,
            "config":{"generation":1,"stages_ms":{"files":3.0,"read":0.5,"spawn":28.0,"state":14.0,"validate":8.0,"verify":15.0,"zz":1.0}}}}"#;
        let s = parse_status(ok).unwrap();
        assert!(s.running());
        assert_eq!(s.apply_to_exec_ms.get(SERVICE), Some(&12.5));
        assert_eq!((s.agent_peak_rss_kib, s.init_peak_rss_kib), (Some(3000.0), Some(900.0)));
        let names: Vec<String> = s.stages().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["read", "verify", "validate", "files", "state", "spawn", "zz"]);
        assert_eq!(s.stages()[5], ("spawn".to_string(), 28.0));
        let waiting = r#"{"id":1,"ok":true,"result":{"services":[{"name":"kubelet","state":"waiting"}],
            "apply_to_exec_ms":{},"config":null}}"#;
        let s = parse_status(waiting).unwrap();
        assert!(!s.running() && s.apply_to_exec_ms.is_empty() && s.agent_peak_rss_kib.is_none());
        assert!(s.stages().is_empty());
        let cases = [
            ("", "status: EOF"),
            (
                r#"{"id":1,"ok":false,"error":{"code":"internal"}}"#,
                "agent error: {\"code\":\"internal\"}",
            ),
            (r#"{"id":1,"ok":true}"#, "no result"),
            (r#"{"id":1,"ok":true,"result":{}}"#, "missing field `services`"),
        ];
        for (text, needle) in cases {
            let err = parse_status(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
