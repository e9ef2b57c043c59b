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
//!   split of it into read, verify, validate, files, state and spawn;
//! - memory: `status.agent_peak_rss_kib` and `init_peak_rss_kib` (VmHWM),
//!   read in that same status, after the config is applied.

use crate::boots::CMDLINE;
use crate::cli::Paths;
use crate::error::{io_err, BenchError};
use crate::results::AgentRuns;
use basalt_qemu::{Vm, VmConfig, DEFAULT_GUEST_CID};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The agent's default vsock port (docs/protocol.md).
pub const VSOCK_PORT: u32 = 1024;
const NODE: &str = "bench-node";
const SERVICE: &str = "kubelet";
/// How long a fresh node gets to answer its first status.
const AGENT_UP: Duration = Duration::from_secs(120);
const RUNNING: Duration = Duration::from_secs(30);

/// Parts 5 and 6 could not run, and why (an input is missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

/// What the parts need from the build directory.
pub struct AgentInputs {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub basaltctl: PathBuf,
    pub config_key: PathBuf,
    pub accel_cache: PathBuf,
}

pub fn inputs(paths: &Paths) -> Result<AgentInputs, Unavailable> {
    let b = &paths.build;
    let i = AgentInputs {
        kernel: b.join("vmlinuz"),
        initramfs: b.join("initramfs.img"),
        basaltctl: b.join("bin/basaltctl"),
        config_key: b.join("keys/config.key"),
        accel_cache: b.join("qemu-accel"),
    };
    for p in [
        &i.kernel,
        &i.initramfs,
        &i.basaltctl,
        &i.config_key,
        &b.join("bin/basalt-agent"),
    ] {
        if !p.exists() {
            return Err(Unavailable(format!("{} is missing (run `make image`)", p.display())));
        }
    }
    Ok(i)
}

/// The config each run applies: generation 1, bound to the node's
/// `basalt.node=`, one service, the kubelet stand-in.
pub fn bench_config(node: &str) -> String {
    let config = json!({
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
    let mut text = serde_json::to_string_pretty(&config).unwrap_or_default();
    text.push('\n');
    text
}

/// The stages the agent splits an apply into (`status.config.stages_ms`,
/// docs/protocol.md), in the order they run.
pub const STAGES: &[&str] = &["read", "verify", "validate", "files", "state", "spawn"];

/// The figures one `status` result holds for this benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusFigures {
    pub service_running: bool,
    pub apply_to_exec_ms: Option<f64>,
    pub agent_hwm_kib: Option<f64>,
    pub init_hwm_kib: Option<f64>,
    /// The last apply's stages, in [`STAGES`] order then any others by name.
    pub stages_ms: Vec<(String, f64)>,
}

/// Reads `basaltctl --json status` output: `{"id":..,"ok":true,"result":{..}}`.
pub fn parse_status(stdout: &str) -> Result<StatusFigures, String> {
    let v: Value = serde_json::from_str(stdout.trim()).map_err(|e| format!("not JSON: {e}"))?;
    if v.get("ok") != Some(&Value::Bool(true)) {
        return Err(format!("agent error: {}", v.get("error").unwrap_or(&Value::Null)));
    }
    let r = v.get("result").ok_or("no result")?;
    let running = r
        .get("services")
        .and_then(Value::as_array)
        .ok_or("result.services missing")?
        .iter()
        .any(|s| s.get("name") == Some(&json!(SERVICE)) && s.get("state") == Some(&json!("running")));
    let num = |v: Option<&Value>| v.and_then(Value::as_f64);
    let mut stages_ms: Vec<(String, f64)> = Vec::new();
    if let Some(map) = r.pointer("/config/stages_ms").and_then(Value::as_object) {
        let rank = |name: &str| STAGES.iter().position(|s| *s == name).unwrap_or(STAGES.len());
        stages_ms = map
            .iter()
            .filter_map(|(name, v)| Some((name.clone(), v.as_f64()?)))
            .collect();
        stages_ms.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then_with(|| a.0.cmp(&b.0)));
    }
    Ok(StatusFigures {
        service_running: running,
        apply_to_exec_ms: num(r.get("apply_to_exec_ms").and_then(|m| m.get(SERVICE))),
        agent_hwm_kib: num(r.get("agent_peak_rss_kib")),
        init_hwm_kib: num(r.get("init_peak_rss_kib")),
        stages_ms,
    })
}

/// basaltctl against one node.
struct Ctl<'a> {
    program: &'a Path,
    endpoint: String,
}

impl Ctl<'_> {
    fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(self.program)
            .arg("--endpoint")
            .arg(&self.endpoint)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("spawn {}: {e}", self.program.display()))?;
        if !out.status.success() {
            return Err(format!(
                "basaltctl {}: {}: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn status(&self) -> Result<StatusFigures, String> {
        parse_status(&self.run(&["--json", "status"])?)
    }
}

const METHOD: &str =
    "End to end is timed on the host from spawning `basaltctl apply CONFIG --key KEY` (which signs the \
                      config, then sends it over vsock) to the first `basaltctl status` that reports the kubelet \
                      running, polled back to back; every run is a first apply on a freshly booted node.";

/// Boots `runs` fresh nodes and applies the bench config to each.
pub fn measure(
    i: &AgentInputs,
    dir: &Path,
    runs: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<AgentRuns, BenchError> {
    let work = dir.join("agent");
    std::fs::create_dir_all(&work).map_err(io_err("create", &work))?;
    let config_path = work.join("config.json");
    std::fs::write(&config_path, bench_config(NODE)).map_err(io_err("write", &config_path))?;
    let mut out = AgentRuns {
        method: METHOD.into(),
        ..AgentRuns::default()
    };
    for run in 0..runs {
        let r = apply_once(i, &work, &config_path, run)?;
        (out.accel, out.accel_reason) = (r.accel, r.accel_reason);
        out.apply_to_exec_ms.push(r.apply_to_exec_ms);
        out.agent_hwm_kib.push(r.agent_hwm_kib);
        out.init_hwm_kib.push(r.init_hwm_kib);
        out.end_to_end_ms.push(r.end_to_end.as_secs_f64() * 1e3);
        for (name, ms) in &r.stages_ms {
            match out.stages_ms.iter_mut().find(|(n, _)| n == name) {
                Some((_, v)) => v.push(*ms),
                None => out.stages_ms.push((name.clone(), vec![*ms])),
            }
        }
        progress(&format!(
            "agent run {}/{runs}: apply returned in {:.0} ms, kubelet running after {:.0} ms; in the guest apply→exec {:.1} ms; VmHWM agent {} KiB, init {} KiB",
            run + 1,
            r.applied.as_secs_f64() * 1e3,
            r.end_to_end.as_secs_f64() * 1e3,
            r.apply_to_exec_ms,
            r.agent_hwm_kib,
            r.init_hwm_kib,
        ));
    }
    Ok(out)
}

/// What one fresh node's apply gave.
struct Applied {
    accel: String,
    accel_reason: String,
    /// `basaltctl apply` returning, and the kubelet reported running.
    applied: Duration,
    end_to_end: Duration,
    apply_to_exec_ms: f64,
    agent_hwm_kib: f64,
    init_hwm_kib: f64,
    stages_ms: Vec<(String, f64)>,
}

/// Boots a fresh node, waits for its agent, applies the config and polls
/// until the kubelet runs. The VM is stopped on return.
fn apply_once(i: &AgentInputs, work: &Path, config_path: &Path, run: usize) -> Result<Applied, BenchError> {
    let log = work.join(format!("agent-{run}.log"));
    let _ = std::fs::remove_file(&log);
    let cfg = VmConfig::new(&i.kernel)
        .initrd(&i.initramfs)
        .append(CMDLINE)
        .append(&format!("basalt.node={NODE}"))
        .vsock(DEFAULT_GUEST_CID)
        .console_log(&log)
        .work_dir(work.join(format!("vm-{run}")))
        .accel_cache(&i.accel_cache);
    let fail = |why: String| BenchError::Agent {
        op: format!("agent run {}", run + 1),
        why: format!("{why} (console: {})", log.display()),
    };
    let vm = Vm::start(cfg).map_err(|source| BenchError::Vm {
        what: format!("boot {}", i.initramfs.display()),
        source,
    })?;
    let uds = vm.vsock_uds_path().map(Path::to_path_buf).unwrap_or_default();
    let ctl = Ctl {
        program: &i.basaltctl,
        endpoint: format!("vsock-uds:{}:{VSOCK_PORT}", uds.display()),
    };
    wait_for_agent(&vm, &ctl).map_err(fail)?;
    let config = config_path.display().to_string();
    let key = i.config_key.display().to_string();
    let t0 = Instant::now();
    ctl.run(&["apply", &config, "--key", &key]).map_err(fail)?;
    let applied = t0.elapsed();
    let figures = loop {
        let f = ctl.status().map_err(fail)?;
        if f.service_running {
            break f;
        }
        if t0.elapsed() >= RUNNING {
            return Err(fail(format!(
                "{SERVICE} not running {} s after the apply",
                RUNNING.as_secs()
            )));
        }
    };
    let end_to_end = t0.elapsed();
    let need = |v: Option<f64>, what: &str| v.ok_or_else(|| fail(format!("status has no {what}")));
    Ok(Applied {
        accel: vm.accel().accel.to_string(),
        accel_reason: vm.accel().reason.clone(),
        applied,
        end_to_end,
        apply_to_exec_ms: need(figures.apply_to_exec_ms, "apply_to_exec_ms.kubelet")?,
        agent_hwm_kib: need(figures.agent_hwm_kib, "agent_peak_rss_kib")?,
        init_hwm_kib: need(figures.init_hwm_kib, "init_peak_rss_kib")?,
        stages_ms: figures.stages_ms,
    })
}

/// Polls `status` until the fresh node's agent answers.
fn wait_for_agent(vm: &Vm, ctl: &Ctl) -> Result<(), String> {
    let up = Instant::now();
    loop {
        match ctl.status() {
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
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["node"], "n-1");
        assert_eq!(v["generation"], 1);
        assert_eq!(v["services"][0]["exec"][0], "/usr/bin/kubelet");
        // The agent's own validation accepts it.
        basalt_common::config::parse_config(text.as_bytes()).unwrap();
    }

    #[test]
    fn status_figures() {
        let ok = r#"{"id":"ctl-1-1","ok":true,"result":{"services":[{"name":"kubelet","state":"running"}],
            "apply_to_exec_ms":{"kubelet":12.5},"agent_peak_rss_kib":3000,"init_peak_rss_kib":900,
            "config":{"generation":1,"stages_ms":{"files":3.0,"read":0.5,"spawn":28.0,"state":14.0,"validate":8.0,"verify":15.0,"zz":1.0}}}}"#;
        let stages = |v: &[(&str, f64)]| v.iter().map(|(n, x)| (n.to_string(), *x)).collect::<Vec<_>>();
        assert_eq!(
            parse_status(ok),
            Ok(StatusFigures {
                service_running: true,
                apply_to_exec_ms: Some(12.5),
                agent_hwm_kib: Some(3000.0),
                init_hwm_kib: Some(900.0),
                stages_ms: stages(&[
                    ("read", 0.5),
                    ("verify", 15.0),
                    ("validate", 8.0),
                    ("files", 3.0),
                    ("state", 14.0),
                    ("spawn", 28.0),
                    ("zz", 1.0)
                ]),
            })
        );
        let waiting =
            r#"{"id":1,"ok":true,"result":{"services":[{"name":"kubelet","state":"waiting"}],"apply_to_exec_ms":{}}}"#;
        let f = parse_status(waiting).unwrap();
        assert!(!f.service_running && f.apply_to_exec_ms.is_none() && f.agent_hwm_kib.is_none());
        assert!(f.stages_ms.is_empty());
        let cases = [
            ("", "not JSON"),
            (r#"{"id":1,"ok":false,"error":{"code":"internal"}}"#, "agent error"),
            (r#"{"id":1,"ok":true}"#, "no result"),
            (r#"{"id":1,"ok":true,"result":{}}"#, "result.services missing"),
        ];
        for (text, needle) in cases {
            let err = parse_status(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
