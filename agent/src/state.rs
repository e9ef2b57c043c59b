//! What the agent remembers across its own restarts, in
//! `/run/basalt/agent/state.json` (tmpfs: it lasts exactly one boot).
//!
//! It holds the generation floor, the applied config as it was signed (the
//! envelope, re-verified on load), and every service process the agent
//! started, with the pid and `/proc/<pid>/stat` start time that let a
//! restarted agent adopt a process instead of starting it twice.

use basalt_common::command::CommandKind;
use basalt_common::envelope::SignedEnvelope;
use basalt_common::json::{self, Fields, JsonError};
use serde_json::{json, Value};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

pub const STATE_FORMAT: u64 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SavedState {
    /// The highest generation applied this boot: replays must exceed it.
    pub floor: Option<u64>,
    pub applied: Option<SavedApply>,
    pub services: Vec<SavedService>,
    /// A signed poweroff or reboot the agent accepted and had not finished:
    /// an agent restarted mid-shutdown carries it out instead of starting
    /// the services again.
    pub shutdown: Option<CommandKind>,
    /// The config in force is on trial until this CLOCK_MONOTONIC time (ns).
    pub trial_until_ns: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedApply {
    pub envelope: SignedEnvelope,
    /// When the apply request arrived (CLOCK_MONOTONIC ns).
    pub received_ns: u64,
    pub applied_unix: u64,
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitKind {
    Code(i32),
    Signal(i32),
    /// An adopted process: init reaped it, so its status never reached the agent.
    Unknown,
    SpawnFailed(String),
}

impl ExitKind {
    pub fn success(&self) -> bool {
        matches!(self, ExitKind::Code(0))
    }

    pub fn describe(&self) -> String {
        match self {
            ExitKind::Code(c) => format!("exited with status {c}"),
            ExitKind::Signal(s) => match nix::sys::signal::Signal::try_from(*s) {
                Ok(sig) => format!("killed by {}", sig.as_str()),
                Err(_) => format!("killed by signal {s}"),
            },
            ExitKind::Unknown => "exited, status unknown (adopted after an agent restart)".into(),
            ExitKind::SpawnFailed(why) => format!("could not be started: {why}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitRecord {
    pub kind: ExitKind,
    pub at_ns: u64,
    pub ran_ms: u64,
}

/// A service's run state, as far as a restarted agent needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SavedRun {
    /// Has a process (pid and starttime are set).
    Running,
    /// Waiting to start or restart.
    Waiting,
    /// Exited for good under its restart policy.
    Exited,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedService {
    pub name: String,
    /// Being stopped: removed or replaced by the last apply.
    pub retiring: bool,
    pub run: SavedRun,
    pub pid: Option<i32>,
    pub starttime: Option<u64>,
    pub started_ns: Option<u64>,
    pub restarts: u32,
    pub streak: u32,
    pub last_exit: Option<ExitRecord>,
    pub recent_starts_ns: Vec<u64>,
    pub apply_to_exec_ns: Option<u64>,
    /// The spec's stop timeout, so that a restarted agent finishing a stop
    /// gives the process the time its config promised.
    pub stop_timeout_ms: Option<u64>,
}

impl SavedState {
    pub fn to_json(&self) -> Value {
        json!({
            "format": STATE_FORMAT,
            "floor": self.floor,
            "applied": self.applied.as_ref().map(|a| json!({
                "envelope": a.envelope.to_json(),
                "received_ns": a.received_ns,
                "applied_unix": a.applied_unix,
            })),
            "services": self.services.iter().map(service_json).collect::<Vec<_>>(),
            "shutdown": self.shutdown.map(CommandKind::as_str),
            "trial_until_ns": self.trial_until_ns,
        })
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, JsonError> {
        let doc = json::parse_strict(bytes)?;
        let f = Fields::new(
            &doc,
            "$",
            &["format", "floor", "applied", "services", "shutdown", "trial_until_ns"],
        )?;
        let format = f.u64("format")?;
        if format != STATE_FORMAT {
            return Err(JsonError::new(
                "$.format",
                format!("state format {format} is not {STATE_FORMAT}"),
            ));
        }
        let floor = opt(&f, "floor", json::as_u64)?;
        let applied = match f.opt("applied") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let a = Fields::new(v, "$.applied", &["envelope", "received_ns", "applied_unix"])?;
                Some(SavedApply {
                    envelope: SignedEnvelope::from_json(a.req("envelope")?, "$.applied.envelope")?,
                    received_ns: a.u64("received_ns")?,
                    applied_unix: a.u64("applied_unix")?,
                })
            }
        };
        let mut services = Vec::new();
        for (i, v) in f.array("services")?.iter().enumerate() {
            services.push(parse_service(v, &json::index("$.services", i))?);
        }
        let shutdown = match f.opt("shutdown") {
            None | Some(Value::Null) => None,
            Some(v) => match json::as_str(v, "$.shutdown")? {
                "poweroff" => Some(CommandKind::Poweroff),
                "reboot" => Some(CommandKind::Reboot),
                "reset-var" => Some(CommandKind::ResetVar),
                other => return Err(JsonError::new("$.shutdown", format!("unknown shutdown {other:?}"))),
            },
        };
        Ok(SavedState {
            floor,
            applied,
            services,
            shutdown,
            trial_until_ns: opt(&f, "trial_until_ns", json::as_u64)?,
        })
    }
}

fn opt<T>(f: &Fields, key: &str, read: impl Fn(&Value, &str) -> Result<T, JsonError>) -> Result<Option<T>, JsonError> {
    match f.opt(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => read(v, &f.path_of(key)).map(Some),
    }
}

fn as_u32(v: &Value, path: &str) -> Result<u32, JsonError> {
    u32::try_from(json::as_u64(v, path)?).map_err(|_| JsonError::new(path, "out of range"))
}

fn as_i32(v: &Value, path: &str) -> Result<i32, JsonError> {
    v.as_i64()
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| JsonError::new(path, "expected a 32-bit integer"))
}

fn service_json(s: &SavedService) -> Value {
    json!({
        "name": s.name,
        "retiring": s.retiring,
        "run": match s.run { SavedRun::Running => "running", SavedRun::Waiting => "waiting", SavedRun::Exited => "exited" },
        "pid": s.pid,
        "starttime": s.starttime,
        "started_ns": s.started_ns,
        "restarts": s.restarts,
        "streak": s.streak,
        "last_exit": s.last_exit.as_ref().map(|e| {
            let (kind, value, detail) = match &e.kind {
                ExitKind::Code(c) => ("code", *c, ""),
                ExitKind::Signal(sig) => ("signal", *sig, ""),
                ExitKind::Unknown => ("unknown", 0, ""),
                ExitKind::SpawnFailed(why) => ("spawn_failed", 0, why.as_str()),
            };
            json!({"kind": kind, "value": value, "detail": detail, "at_ns": e.at_ns, "ran_ms": e.ran_ms})
        }),
        "recent_starts_ns": s.recent_starts_ns,
        "apply_to_exec_ns": s.apply_to_exec_ns,
        "stop_timeout_ms": s.stop_timeout_ms,
    })
}

fn parse_service(v: &Value, path: &str) -> Result<SavedService, JsonError> {
    let f = Fields::new(
        v,
        path,
        &[
            "name",
            "retiring",
            "run",
            "pid",
            "starttime",
            "started_ns",
            "restarts",
            "streak",
            "last_exit",
            "recent_starts_ns",
            "apply_to_exec_ns",
            "stop_timeout_ms",
        ],
    )?;
    let run = match f.str("run")? {
        "running" => SavedRun::Running,
        "waiting" => SavedRun::Waiting,
        "exited" => SavedRun::Exited,
        other => return Err(JsonError::new(f.path_of("run"), format!("unknown run state {other:?}"))),
    };
    let last_exit = match f.opt("last_exit") {
        None | Some(Value::Null) => None,
        Some(e) => {
            let e = Fields::new(
                e,
                &f.path_of("last_exit"),
                &["kind", "value", "detail", "at_ns", "ran_ms"],
            )?;
            let value = as_i32(e.req("value")?, &e.path_of("value"))?;
            let kind = match e.str("kind")? {
                "code" => ExitKind::Code(value),
                "signal" => ExitKind::Signal(value),
                "unknown" => ExitKind::Unknown,
                "spawn_failed" => ExitKind::SpawnFailed(e.str("detail")?.into()),
                other => {
                    return Err(JsonError::new(
                        e.path_of("kind"),
                        format!("unknown exit kind {other:?}"),
                    ))
                }
            };
            Some(ExitRecord {
                kind,
                at_ns: e.u64("at_ns")?,
                ran_ms: e.u64("ran_ms")?,
            })
        }
    };
    let mut recent_starts_ns = Vec::new();
    for (i, t) in f.opt_array("recent_starts_ns")?.iter().enumerate() {
        recent_starts_ns.push(json::as_u64(t, &json::index(&f.path_of("recent_starts_ns"), i))?);
    }
    Ok(SavedService {
        name: f.str("name")?.into(),
        retiring: f.bool("retiring")?.unwrap_or(false),
        run,
        pid: opt(&f, "pid", as_i32)?,
        starttime: opt(&f, "starttime", json::as_u64)?,
        started_ns: opt(&f, "started_ns", json::as_u64)?,
        restarts: as_u32(f.req("restarts")?, &f.path_of("restarts"))?,
        streak: as_u32(f.req("streak")?, &f.path_of("streak"))?,
        last_exit,
        recent_starts_ns,
        apply_to_exec_ns: opt(&f, "apply_to_exec_ns", json::as_u64)?,
        stop_timeout_ms: opt(&f, "stop_timeout_ms", json::as_u64)?,
    })
}

/// Writes `bytes` to `path` so that a reader sees the old or the new file,
/// never half of one: a temporary file in the same directory, then rename.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_common::keys::SigningKey;

    fn sample() -> SavedState {
        let key = SigningKey::from_seed(&[3; 32]).unwrap();
        SavedState {
            floor: Some(4),
            applied: Some(SavedApply {
                envelope: SignedEnvelope::sign(&key, b"{\"kind\":\"config\"}".to_vec()),
                received_ns: 123,
                applied_unix: 1_700_000_000,
            }),
            services: vec![
                SavedService {
                    name: "kubelet".into(),
                    retiring: false,
                    run: SavedRun::Running,
                    pid: Some(321),
                    starttime: Some(98765),
                    started_ns: Some(456),
                    restarts: 2,
                    streak: 3,
                    last_exit: Some(ExitRecord {
                        kind: ExitKind::Signal(9),
                        at_ns: 400,
                        ran_ms: 12,
                    }),
                    recent_starts_ns: vec![1, 2, 456],
                    apply_to_exec_ns: Some(333),
                    stop_timeout_ms: Some(2500),
                },
                SavedService {
                    name: "old".into(),
                    retiring: true,
                    run: SavedRun::Waiting,
                    pid: None,
                    starttime: None,
                    started_ns: None,
                    restarts: 0,
                    streak: 0,
                    last_exit: Some(ExitRecord {
                        kind: ExitKind::SpawnFailed("No such file".into()),
                        at_ns: 1,
                        ran_ms: 0,
                    }),
                    recent_starts_ns: vec![],
                    apply_to_exec_ns: None,
                    stop_timeout_ms: None,
                },
            ],
            shutdown: Some(CommandKind::Reboot),
            trial_until_ns: Some(123_456),
        }
    }

    #[test]
    fn round_trip() {
        let state = sample();
        let bytes = serde_json::to_vec(&state.to_json()).unwrap();
        assert_eq!(SavedState::parse(&bytes).unwrap(), state);
        let empty = SavedState::default();
        let bytes = serde_json::to_vec(&empty.to_json()).unwrap();
        assert_eq!(SavedState::parse(&bytes).unwrap(), empty);
        let poweroff = SavedState {
            shutdown: Some(CommandKind::Poweroff),
            trial_until_ns: None,
            ..SavedState::default()
        };
        let bytes = serde_json::to_vec(&poweroff.to_json()).unwrap();
        assert_eq!(SavedState::parse(&bytes).unwrap(), poweroff);
    }

    #[test]
    fn rejects() {
        let cases = [
            (r#"{"format":2,"services":[]}"#, "$.format: state format 2 is not 1"),
            (r#"{"format":1}"#, "$.services: missing field"),
            (
                r#"{"format":1,"services":[{"name":"a"}]}"#,
                "$.services[0].run: missing field",
            ),
            (r#"{"format":1,"services":[],"x":1}"#, "$.x: unknown field"),
            (
                r#"{"format":1,"services":[],"shutdown":"halt"}"#,
                "$.shutdown: unknown shutdown \"halt\"",
            ),
            (
                r#"{"format":1,"services":[],"shutdown":1}"#,
                "$.shutdown: expected a string, found a non-negative integer",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(SavedState::parse(text.as_bytes()).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn exit_descriptions() {
        assert_eq!(ExitKind::Code(0).describe(), "exited with status 0");
        assert_eq!(ExitKind::Signal(9).describe(), "killed by SIGKILL");
        assert!(ExitKind::Code(0).success() && !ExitKind::Unknown.success());
    }
}
