//! Node configuration: the signed document `basalt-agent` applies.
//!
//! Strict, versioned JSON (docs/config.md describes every field):
//!
//! ```json
//! {"kind": "config", "version": 1, "generation": 3, "node": "<node id>",
//!  "hostname": "node-1",
//!  "files": [{"path": "/var/lib/kubelet/kubeconfig", "mode": "0600", "contents": "..."}],
//!  "services": [{"name": "kubelet", "exec": ["/usr/bin/kubelet", "--v=2"],
//!                "env": {"HOME": "/var/lib/kubelet"}, "after": [],
//!                "restart": {"policy": "always"}}]}
//! ```
//!
//! Everything is checked here, before the agent changes anything: unknown
//! fields, types, limits, file paths, service names and the `after` graph.
//! Every error names the JSON path it is about. What depends on the node (its
//! identity, the generation already applied) is checked by
//! [`Config::check_applicable`]; what depends on the node's filesystem
//! (symlinks on the way to a file) is checked by the agent.
//!
//! [`network`] parses the `network` section on its own; `parse_config` does
//! not accept that section yet (docs/network.md says why).

pub mod network;

use crate::b64;
use crate::backoff::Backoff;
use crate::envelope::payload_kind;
use crate::json::{self, Fields, JsonError};
use crate::text::clip;
use serde_json::Value;
use std::collections::BTreeMap;

/// The payload kind of a config.
pub const KIND: &str = "config";
/// The only config version this build reads.
pub const CONFIG_VERSION: u64 = 1;
/// Files may only be written under these mounts (the writable tmpfs ones;
/// the root image, `/etc` included, is read-only).
pub const WRITABLE_ROOTS: [&str; 3] = ["/run", "/var", "/tmp"];
/// Under a writable root, but the agent's own: state, logs, boot report.
pub const RESERVED_DIR: &str = "/run/basalt";
/// Log sources the agent serves itself, so no service may take these names.
pub const RESERVED_SERVICE_NAMES: [&str; 2] = ["agent", "init"];

pub const MAX_FILES: usize = 256;
pub const MAX_SERVICES: usize = 64;
pub const MAX_ARGS: usize = 256;
pub const MAX_ENV: usize = 256;
pub const MAX_PATH: usize = 4096;
pub const MAX_NAME: usize = 48;
pub const MAX_NODE_ID: usize = 128;
pub const MAX_HOSTNAME: usize = 64;
/// The longest single argument or environment value.
pub const MAX_ARG_BYTES: usize = 64 * 1024;
pub const DEFAULT_MODE: u32 = 0o644;
pub const DEFAULT_STOP_TIMEOUT_MS: u64 = 10_000;
pub const MAX_STOP_TIMEOUT_MS: u64 = 300_000;
/// Upper bound for every backoff duration (one day).
pub const MAX_BACKOFF_MS: u64 = 86_400_000;

/// A validated configuration. Services are in start order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub generation: u64,
    pub node: String,
    pub hostname: String,
    pub files: Vec<FileSpec>,
    pub services: Vec<ServiceSpec>,
}

/// A file the agent writes before starting services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Absolute, normalised, under one of [`WRITABLE_ROOTS`].
    pub path: String,
    /// Permission bits only (at most 0o777).
    pub mode: u32,
    pub contents: Vec<u8>,
}

/// A supervised service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    /// Program (an absolute path) and its arguments.
    pub exec: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Services that must be running before this one starts.
    pub after: Vec<String>,
    pub restart: RestartSpec,
    /// How long a stop waits after SIGTERM before SIGKILL.
    pub stop_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartSpec {
    pub policy: RestartPolicy,
    pub backoff: Backoff,
}

/// When a service that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Whatever the exit status.
    Always,
    /// Unless it exited with status 0.
    OnFailure,
    /// Never: an exited service stays exited.
    Never,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        }
    }
}

/// What the node knows when it decides whether a config applies to it.
#[derive(Debug, Clone, Copy)]
pub struct ApplyContext<'a> {
    /// This node's identity.
    pub node: &'a str,
    /// The generation applied so far, if any.
    pub applied_generation: Option<u64>,
}

/// Why a (verified) config was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The signed payload is not a config (a command, say).
    WrongKind { found: String },
    /// The document breaks a rule; the error names the JSON path.
    Invalid(JsonError),
    /// The config is bound to another node.
    WrongNode { config: String, node: String },
    /// The generation does not exceed the one applied: a replay or a rollback.
    StaleGeneration { offered: u64, applied: u64 },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::WrongKind { found } => {
                write!(f, "signed payload is of kind {:?}, expected {KIND:?}", clip(found))
            }
            ConfigError::Invalid(e) => write!(f, "{e}"),
            ConfigError::WrongNode { config, node } => {
                write!(f, "config is for node {:?}, this node is {node:?}", clip(config))
            }
            ConfigError::StaleGeneration { offered, applied } => write!(
                f,
                "config generation {offered} is not above the applied generation {applied}"
            ),
        }
    }
}

impl From<JsonError> for ConfigError {
    fn from(e: JsonError) -> Self {
        ConfigError::Invalid(e)
    }
}

/// Parses and checks a config payload, then checks it applies to this node.
pub fn validate(payload: &[u8], ctx: &ApplyContext) -> Result<Config, ConfigError> {
    let config = parse_config(payload)?;
    config.check_applicable(ctx)?;
    Ok(config)
}

impl Config {
    /// Checks node binding and the generation floor.
    pub fn check_applicable(&self, ctx: &ApplyContext) -> Result<(), ConfigError> {
        if self.node != ctx.node {
            return Err(ConfigError::WrongNode {
                config: self.node.clone(),
                node: ctx.node.into(),
            });
        }
        match ctx.applied_generation {
            Some(applied) if self.generation <= applied => Err(ConfigError::StaleGeneration {
                offered: self.generation,
                applied,
            }),
            _ => Ok(()),
        }
    }

    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// Parses a config payload and checks everything that does not depend on
/// the node.
pub fn parse_config(payload: &[u8]) -> Result<Config, ConfigError> {
    let doc = json::parse_strict(payload)?;
    let kind = payload_kind(&doc)?;
    if kind != KIND {
        return Err(ConfigError::WrongKind { found: kind.into() });
    }
    // The version is read before unknown fields are refused, so a newer
    // config fails on its version rather than on whatever field it added.
    let version = doc
        .get("version")
        .ok_or_else(|| JsonError::new("$.version", "missing field"))?;
    let version = json::as_u64(version, "$.version")?;
    if version != CONFIG_VERSION {
        let what = format!("config version {version} is not supported (this build reads {CONFIG_VERSION})");
        return Err(JsonError::new("$.version", what).into());
    }
    let top = Fields::new(
        &doc,
        "$",
        &["kind", "version", "generation", "node", "hostname", "files", "services"],
    )?;
    let generation = top.u64("generation")?;
    if generation == 0 {
        return Err(JsonError::new("$.generation", "generation starts at 1").into());
    }
    let node = top.str("node")?;
    check_node_id(node).map_err(|what| JsonError::new("$.node", what))?;
    let hostname = top.str("hostname")?;
    check_hostname(hostname).map_err(|what| JsonError::new("$.hostname", what))?;
    let files = parse_files(top.opt_array("files")?, &top.path_of("files"))?;
    let services = parse_services(top.opt_array("services")?, &top.path_of("services"))?;
    Ok(Config {
        generation,
        node: node.into(),
        hostname: hostname.into(),
        files,
        services,
    })
}

fn parse_files(items: &[Value], path: &str) -> Result<Vec<FileSpec>, JsonError> {
    if items.len() > MAX_FILES {
        return Err(JsonError::new(path, format!("at most {MAX_FILES} files")));
    }
    let mut files: Vec<FileSpec> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = json::index(path, i);
        let f = Fields::new(item, &at, &["path", "mode", "contents", "contents_base64"])?;
        let file_path = f.str("path")?;
        check_file_path(file_path).map_err(|what| JsonError::new(f.path_of("path"), what))?;
        for (j, earlier) in files.iter().enumerate() {
            let clash = if earlier.path == file_path {
                Some("the same path as")
            } else if is_beneath(file_path, &earlier.path) {
                Some("beneath the file written by")
            } else if is_beneath(&earlier.path, file_path) {
                Some("a parent directory of the file written by")
            } else {
                None
            };
            if let Some(how) = clash {
                let what = format!("{} is {how} {}", clip(file_path), json::index(path, j));
                return Err(JsonError::new(f.path_of("path"), what));
            }
        }
        let mode = match f.opt_str("mode")? {
            None => DEFAULT_MODE,
            Some(text) => parse_mode(text).map_err(|what| JsonError::new(f.path_of("mode"), what))?,
        };
        let contents = match (f.opt_str("contents")?, f.opt_str("contents_base64")?) {
            (Some(text), None) => text.as_bytes().to_vec(),
            (None, Some(encoded)) => {
                b64::decode(encoded).map_err(|e| JsonError::new(f.path_of("contents_base64"), e.to_string()))?
            }
            (None, None) => {
                return Err(JsonError::new(&at, "needs contents or contents_base64"));
            }
            (Some(_), Some(_)) => {
                let what = "give either contents or contents_base64, not both";
                return Err(JsonError::new(f.path_of("contents_base64"), what));
            }
        };
        files.push(FileSpec {
            path: file_path.into(),
            mode,
            contents,
        });
    }
    Ok(files)
}

/// A service runs only code from the verified root: a program under a
/// writable mount (which a config can write) is refused, so a config cannot
/// write a file and then run it. The agent checks the resolved path too.
pub fn check_program_on_root(program: &str) -> Result<(), String> {
    match WRITABLE_ROOTS.iter().find(|w| program == **w || is_beneath(program, w)) {
        Some(w) => Err(format!(
            "program {:?} is under {w}, a writable mount; services run only programs from the verified root image",
            clip(program)
        )),
        None => Ok(()),
    }
}

fn is_beneath(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

/// Checks where a config may write a file, on the path text alone: absolute,
/// normalised (no `.`, `..` or empty components), under a writable root, and
/// outside the agent's own directory. Symlinks are the agent's check.
pub fn check_file_path(path: &str) -> Result<(), String> {
    if path.len() > MAX_PATH {
        return Err(format!("path is longer than {MAX_PATH} bytes"));
    }
    if path.contains('\0') {
        return Err("path contains a NUL byte".into());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("{:?} is not an absolute path", clip(path)));
    };
    let components: Vec<&str> = rest.split('/').collect();
    for c in &components {
        match *c {
            "" => return Err(format!("{:?} has an empty component (// or a trailing /)", clip(path))),
            "." | ".." => return Err(format!("{:?} has a {c:?} component", clip(path))),
            c if c.len() > 255 => return Err(format!("{:?} has a component longer than 255 bytes", clip(path))),
            _ => {}
        }
    }
    let top = format!("/{}", components[0]);
    if !WRITABLE_ROOTS.contains(&top.as_str()) || components.len() < 2 {
        return Err(format!(
            "{} is not beneath a writable mount ({})",
            clip(path),
            WRITABLE_ROOTS.join(", ")
        ));
    }
    if path == RESERVED_DIR || is_beneath(path, RESERVED_DIR) {
        return Err(format!(
            "{} is inside {RESERVED_DIR}, which belongs to the agent",
            clip(path)
        ));
    }
    Ok(())
}

/// Reads a mode written as octal text: "644" or "0644". Only permission
/// bits: set-id and sticky bits have no business on config files.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix('0').filter(|d| d.len() == 3).unwrap_or(text);
    if digits.len() != 3 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!(
            "mode {:?} is not 3 octal digits (with an optional leading 0), e.g. \"0644\"",
            clip(text)
        ));
    }
    u32::from_str_radix(digits, 8).map_err(|e| e.to_string())
}

/// A node id: 1 to 128 of `A-Z a-z 0-9 . _ : -`. SMBIOS UUIDs fit.
pub fn check_node_id(id: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if id.is_empty() || id.len() > MAX_NODE_ID || !id.chars().all(ok_char) {
        return Err(format!(
            "node id {:?} must be 1 to {MAX_NODE_ID} characters of A-Z a-z 0-9 . _ : -",
            clip(id)
        ));
    }
    Ok(())
}

/// A hostname: dot-separated labels of letters, digits and inner hyphens,
/// each 1 to 63 long, at most 64 in all (the kernel's limit).
pub fn check_hostname(name: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > MAX_HOSTNAME || !name.split('.').all(label_ok) {
        return Err(format!(
            "hostname {:?} must be at most {MAX_HOSTNAME} characters of dot-separated labels \
             (letters, digits, inner hyphens)",
            clip(name)
        ));
    }
    Ok(())
}

/// A service name: lower-case letter or digit first, then letters, digits,
/// `-` and `_`. It names the log file, so nothing else is allowed.
pub fn check_service_name(name: &str) -> Result<(), String> {
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !first_ok || !rest_ok || name.len() > MAX_NAME {
        return Err(format!(
            "service name {:?} must be 1 to {MAX_NAME} of a-z 0-9 - _, starting with a letter or digit",
            clip(name)
        ));
    }
    if RESERVED_SERVICE_NAMES.contains(&name) {
        return Err(format!("service name {name:?} is reserved for the agent's own logs"));
    }
    Ok(())
}

fn parse_services(items: &[Value], path: &str) -> Result<Vec<ServiceSpec>, JsonError> {
    if items.len() > MAX_SERVICES {
        return Err(JsonError::new(path, format!("at most {MAX_SERVICES} services")));
    }
    let mut services: Vec<ServiceSpec> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = json::index(path, i);
        let service = parse_service(item, &at)?;
        if let Some(j) = services.iter().position(|s| s.name == service.name) {
            let what = format!(
                "service {:?} is already defined at {}",
                service.name,
                json::index(path, j)
            );
            return Err(JsonError::new(format!("{at}.name"), what));
        }
        services.push(service);
    }
    for (i, s) in services.iter().enumerate() {
        for (j, dep) in s.after.iter().enumerate() {
            let dep_path = json::index(&format!("{}.after", json::index(path, i)), j);
            if dep == &s.name {
                return Err(JsonError::new(dep_path, "a service cannot come after itself"));
            }
            if !services.iter().any(|o| &o.name == dep) {
                return Err(JsonError::new(dep_path, format!("no service is named {:?}", clip(dep))));
            }
        }
    }
    let order = start_order(&services, path)?;
    let mut slots: Vec<Option<ServiceSpec>> = services.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

fn parse_service(item: &Value, at: &str) -> Result<ServiceSpec, JsonError> {
    let f = Fields::new(
        item,
        at,
        &["name", "exec", "env", "after", "restart", "stop_timeout_ms"],
    )?;
    let name = f.str("name")?;
    check_service_name(name).map_err(|what| JsonError::new(f.path_of("name"), what))?;

    let exec_path = f.path_of("exec");
    let exec_items = f.array("exec")?;
    if exec_items.is_empty() || exec_items.len() > MAX_ARGS {
        return Err(JsonError::new(
            &exec_path,
            format!("needs 1 to {MAX_ARGS} strings: the program and its arguments"),
        ));
    }
    let mut exec = Vec::with_capacity(exec_items.len());
    for (i, arg) in exec_items.iter().enumerate() {
        let arg_path = json::index(&exec_path, i);
        let arg = json::as_str(arg, &arg_path)?;
        check_arg(arg).map_err(|what| JsonError::new(&arg_path, what))?;
        if i == 0 && !arg.starts_with('/') {
            return Err(JsonError::new(
                &arg_path,
                format!("program {:?} must be an absolute path", clip(arg)),
            ));
        }
        if i == 0 {
            check_program_on_root(arg).map_err(|what| JsonError::new(&arg_path, what))?;
        }
        exec.push(arg.to_string());
    }

    let mut env = BTreeMap::new();
    if let Some(v) = f.opt("env") {
        let env_path = f.path_of("env");
        let map = v
            .as_object()
            .ok_or_else(|| JsonError::new(&env_path, "expected an object of strings"))?;
        if map.len() > MAX_ENV {
            return Err(JsonError::new(&env_path, format!("at most {MAX_ENV} variables")));
        }
        for (key, value) in map {
            let var_path = json::join(&env_path, key);
            check_env_name(key).map_err(|what| JsonError::new(&var_path, what))?;
            let value = json::as_str(value, &var_path)?;
            check_arg(value).map_err(|what| JsonError::new(&var_path, what))?;
            env.insert(key.clone(), value.to_string());
        }
    }

    let after_path = f.path_of("after");
    let mut after: Vec<String> = Vec::new();
    for (i, dep) in f.opt_array("after")?.iter().enumerate() {
        let dep_path = json::index(&after_path, i);
        let dep = json::as_str(dep, &dep_path)?;
        if after.iter().any(|d| d == dep) {
            return Err(JsonError::new(dep_path, format!("{:?} is listed twice", clip(dep))));
        }
        after.push(dep.to_string());
    }

    let restart = match f.opt("restart") {
        None => RestartSpec {
            policy: RestartPolicy::Always,
            backoff: Backoff::default(),
        },
        Some(v) => parse_restart(v, &f.path_of("restart"))?,
    };
    let stop_timeout_ms = f.opt_u64("stop_timeout_ms")?.unwrap_or(DEFAULT_STOP_TIMEOUT_MS);
    if stop_timeout_ms == 0 || stop_timeout_ms > MAX_STOP_TIMEOUT_MS {
        let what = format!("must be 1 to {MAX_STOP_TIMEOUT_MS} ms");
        return Err(JsonError::new(f.path_of("stop_timeout_ms"), what));
    }
    Ok(ServiceSpec {
        name: name.into(),
        exec,
        env,
        after,
        restart,
        stop_timeout_ms,
    })
}

fn parse_restart(v: &Value, at: &str) -> Result<RestartSpec, JsonError> {
    let f = Fields::new(
        v,
        at,
        &["policy", "backoff_initial_ms", "backoff_max_ms", "stable_after_ms"],
    )?;
    let policy = match f.opt_str("policy")? {
        None | Some("always") => RestartPolicy::Always,
        Some("on-failure") => RestartPolicy::OnFailure,
        Some("never") => RestartPolicy::Never,
        Some(other) => {
            let what = format!("policy {:?} is not one of always, on-failure, never", clip(other));
            return Err(JsonError::new(f.path_of("policy"), what));
        }
    };
    let d = Backoff::default();
    let backoff = Backoff {
        initial_ms: f.opt_u64("backoff_initial_ms")?.unwrap_or(d.initial_ms),
        max_ms: f.opt_u64("backoff_max_ms")?.unwrap_or(d.max_ms.max(d.initial_ms)),
        stable_after_ms: f.opt_u64("stable_after_ms")?.unwrap_or(d.stable_after_ms),
    };
    if backoff.initial_ms == 0 || backoff.initial_ms > MAX_BACKOFF_MS {
        let what = format!("must be 1 to {MAX_BACKOFF_MS} ms");
        return Err(JsonError::new(f.path_of("backoff_initial_ms"), what));
    }
    if backoff.max_ms < backoff.initial_ms || backoff.max_ms > MAX_BACKOFF_MS {
        let what = format!(
            "must be from backoff_initial_ms ({}) to {MAX_BACKOFF_MS} ms",
            backoff.initial_ms
        );
        return Err(JsonError::new(f.path_of("backoff_max_ms"), what));
    }
    if backoff.stable_after_ms > MAX_BACKOFF_MS {
        let what = format!("must be at most {MAX_BACKOFF_MS} ms");
        return Err(JsonError::new(f.path_of("stable_after_ms"), what));
    }
    Ok(RestartSpec { policy, backoff })
}

fn check_arg(text: &str) -> Result<(), String> {
    if text.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if text.len() > MAX_ARG_BYTES {
        return Err(format!("longer than {MAX_ARG_BYTES} bytes"));
    }
    Ok(())
}

fn check_env_name(name: &str) -> Result<(), String> {
    let first_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "environment variable name {:?} must match [A-Za-z_][A-Za-z0-9_]*",
            clip(name)
        ));
    }
    Ok(())
}

/// Orders services so each comes after those it names in `after`, keeping
/// the listed order otherwise. Refuses cycles, naming one.
fn start_order(services: &[ServiceSpec], path: &str) -> Result<Vec<usize>, JsonError> {
    let index_of = |name: &str| services.iter().position(|s| s.name == name);
    let mut placed = vec![false; services.len()];
    let mut order = Vec::with_capacity(services.len());
    while order.len() < services.len() {
        let ready = (0..services.len())
            .find(|&i| !placed[i] && services[i].after.iter().all(|d| index_of(d).is_some_and(|j| placed[j])));
        match ready {
            Some(i) => {
                placed[i] = true;
                order.push(i);
            }
            None => {
                // Every unplaced service waits on another unplaced one: walk
                // those edges from the first until a service repeats.
                let mut walk = vec![(0..services.len()).find(|&i| !placed[i]).unwrap_or(0)];
                loop {
                    let here = walk[walk.len() - 1];
                    let next = services[here]
                        .after
                        .iter()
                        .filter_map(|d| index_of(d))
                        .find(|&j| !placed[j])
                        .unwrap_or(here);
                    if let Some(start) = walk.iter().position(|&k| k == next) {
                        let cycle: Vec<&str> = walk[start..]
                            .iter()
                            .chain(std::iter::once(&next))
                            .map(|&k| services[k].name.as_str())
                            .collect();
                        let at = format!("{}.after", json::index(path, walk[start]));
                        return Err(JsonError::new(at, format!("dependency cycle: {}", cycle.join(" -> "))));
                    }
                    walk.push(next);
                }
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NODE: &str = "4c4c4544-0042-3510-8056-b4c04f4e4d32";

    fn base() -> Value {
        json!({
            "kind": "config",
            "version": 1,
            "generation": 2,
            "node": NODE,
            "hostname": "node-1",
            "files": [
                {"path": "/var/lib/kubelet/kubeconfig", "mode": "0600", "contents": "apiVersion: v1\n"},
                {"path": "/run/kubelet/ca.crt", "contents_base64": "AAEC"}
            ],
            "services": [
                {"name": "kubelet", "exec": ["/usr/bin/kubelet", "--v=2"], "env": {"HOME": "/var/lib/kubelet"},
                 "after": ["containerd"], "restart": {"policy": "always", "backoff_initial_ms": 200}},
                {"name": "containerd", "exec": ["/usr/bin/containerd"], "stop_timeout_ms": 3000}
            ]
        })
    }

    fn with(mut doc: Value, pointer: &str, value: Value) -> Value {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let target = doc.pointer_mut(parent).unwrap();
        match target {
            Value::Object(map) => {
                if value.is_null() {
                    map.remove(key);
                } else {
                    map.insert(key.to_string(), value);
                }
            }
            Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
            _ => panic!("{pointer}"),
        }
        doc
    }

    fn bytes(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    #[test]
    fn parses_the_base_config() {
        let c = parse_config(&bytes(&base())).unwrap();
        assert_eq!(c.generation, 2);
        assert_eq!(c.hostname, "node-1");
        assert_eq!(c.files[0].mode, 0o600);
        assert_eq!(c.files[1].mode, DEFAULT_MODE);
        assert_eq!(c.files[1].contents, [0, 1, 2]);
        // containerd is listed second but kubelet comes after it.
        let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["containerd", "kubelet"]);
        let kubelet = c.service("kubelet").unwrap();
        assert_eq!(
            kubelet.restart.backoff,
            Backoff {
                initial_ms: 200,
                ..Backoff::default()
            }
        );
        assert_eq!(kubelet.stop_timeout_ms, DEFAULT_STOP_TIMEOUT_MS);
        assert_eq!(kubelet.env["HOME"], "/var/lib/kubelet");
        assert_eq!(c.service("containerd").unwrap().stop_timeout_ms, 3000);
        assert_eq!(c.service("containerd").unwrap().restart.policy, RestartPolicy::Always);
    }

    #[test]
    fn minimal_config() {
        let doc = json!({"kind":"config","version":1,"generation":1,"node":"n","hostname":"h"});
        let c = parse_config(&bytes(&doc)).unwrap();
        assert!(c.files.is_empty() && c.services.is_empty());
    }

    /// Each case changes one thing in the base config and names the exact
    /// path and message the error must carry.
    #[test]
    fn validation_table() {
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "/version",
                json!(2),
                "$.version: config version 2 is not supported (this build reads 1)",
            ),
            ("/version", Value::Null, "$.version: missing field"),
            (
                "/version",
                json!("1"),
                "$.version: expected a non-negative integer, found a string",
            ),
            ("/extra", json!(true), "$.extra: unknown field"),
            // Parsed by network::parse, but not accepted until the agent applies it.
            ("/network", json!({}), "$.network: unknown field"),
            ("/generation", json!(0), "$.generation: generation starts at 1"),
            (
                "/generation",
                json!(-3),
                "$.generation: expected a non-negative integer, found a number",
            ),
            (
                "/generation",
                json!(1.5),
                "$.generation: expected a non-negative integer, found a number",
            ),
            ("/generation", Value::Null, "$.generation: missing field"),
            ("/node", json!(""), "$.node: node id \"\" must be 1 to 128 characters"),
            ("/node", json!("a b"), "$.node: node id \"a b\" must be"),
            ("/hostname", json!("-bad"), "$.hostname: hostname \"-bad\" must be"),
            ("/hostname", json!("a..b"), "$.hostname: hostname \"a..b\" must be"),
            ("/hostname", json!("x".repeat(65)), "$.hostname: hostname"),
            ("/hostname", Value::Null, "$.hostname: missing field"),
            ("/files", json!({}), "$.files: expected an array, found an object"),
            (
                "/files/0/path",
                json!("/etc/passwd"),
                "$.files[0].path: /etc/passwd is not beneath a writable mount (/run, /var, /tmp)",
            ),
            (
                "/files/0/path",
                json!("/var/lib/../../etc/shadow"),
                "$.files[0].path: \"/var/lib/../../etc/shadow\" has a \"..\" component",
            ),
            (
                "/files/0/path",
                json!("var/lib/x"),
                "$.files[0].path: \"var/lib/x\" is not an absolute path",
            ),
            (
                "/files/0/path",
                json!("/var//x"),
                "$.files[0].path: \"/var//x\" has an empty component",
            ),
            (
                "/files/0/path",
                json!("/var/x/"),
                "$.files[0].path: \"/var/x/\" has an empty component",
            ),
            (
                "/files/0/path",
                json!("/var"),
                "$.files[0].path: /var is not beneath a writable mount",
            ),
            (
                "/files/0/path",
                json!("/variable/x"),
                "$.files[0].path: /variable/x is not beneath a writable mount",
            ),
            (
                "/files/0/path",
                json!("/run/basalt/agent/state.json"),
                "$.files[0].path: /run/basalt/agent/state.json is inside /run/basalt, which belongs to the agent",
            ),
            (
                "/files/0/path",
                json!("/var/a\u{0}b"),
                "$.files[0].path: path contains a NUL byte",
            ),
            (
                "/files/1/path",
                json!("/var/lib/kubelet/kubeconfig"),
                "$.files[1].path: /var/lib/kubelet/kubeconfig is the same path as $.files[0]",
            ),
            (
                "/files/1/path",
                json!("/var/lib/kubelet/kubeconfig/x"),
                "$.files[1].path: /var/lib/kubelet/kubeconfig/x is beneath the file written by $.files[0]",
            ),
            (
                "/files/1/path",
                json!("/var/lib"),
                "$.files[1].path: /var/lib is a parent directory of the file written by $.files[0]",
            ),
            (
                "/files/0/mode",
                json!("4755"),
                "$.files[0].mode: mode \"4755\" is not 3 octal digits",
            ),
            (
                "/files/0/mode",
                json!("0800"),
                "$.files[0].mode: mode \"0800\" is not 3 octal digits",
            ),
            (
                "/files/0/mode",
                json!(420),
                "$.files[0].mode: expected a string, found a non-negative integer",
            ),
            (
                "/files/0/contents",
                Value::Null,
                "$.files[0]: needs contents or contents_base64",
            ),
            (
                "/files/1/contents",
                json!("x"),
                "$.files[1].contents_base64: give either contents or contents_base64, not both",
            ),
            (
                "/files/1/contents_base64",
                json!("AAE"),
                "$.files[1].contents_base64: base64 length 3 is not a multiple of 4",
            ),
            ("/files/0/owner", json!("root"), "$.files[0].owner: unknown field"),
            (
                "/services/0/name",
                json!("Kubelet"),
                "$.services[0].name: service name \"Kubelet\" must be",
            ),
            (
                "/services/0/name",
                json!("agent"),
                "$.services[0].name: service name \"agent\" is reserved",
            ),
            (
                "/services/0/name",
                json!("../x"),
                "$.services[0].name: service name \"../x\" must be",
            ),
            (
                "/services/1/name",
                json!("kubelet"),
                "$.services[1].name: service \"kubelet\" is already defined at $.services[0]",
            ),
            (
                "/services/0/exec",
                json!([]),
                "$.services[0].exec: needs 1 to 256 strings",
            ),
            (
                "/services/0/exec",
                json!(["kubelet"]),
                "$.services[0].exec[0]: program \"kubelet\" must be an absolute path",
            ),
            (
                "/services/0/exec",
                json!(["/bin/x", 5]),
                "$.services[0].exec[1]: expected a string, found a non-negative integer",
            ),
            (
                "/services/0/exec",
                json!(["/bin/x", "a\u{0}"]),
                "$.services[0].exec[1]: contains a NUL byte",
            ),
            (
                "/services/0/env",
                json!({"A=B": "x"}),
                "$.services[0].env[\"A=B\"]: environment variable name \"A=B\" must match",
            ),
            (
                "/services/0/env",
                json!({"HOME": 1}),
                "$.services[0].env.HOME: expected a string, found a non-negative integer",
            ),
            (
                "/services/0/env",
                json!(["HOME=/"]),
                "$.services[0].env: expected an object of strings",
            ),
            (
                "/services/0/after",
                json!(["kubelet"]),
                "$.services[0].after[0]: a service cannot come after itself",
            ),
            (
                "/services/0/after",
                json!(["etcd"]),
                "$.services[0].after[0]: no service is named \"etcd\"",
            ),
            (
                "/services/0/after",
                json!(["containerd", "containerd"]),
                "$.services[0].after[1]: \"containerd\" is listed twice",
            ),
            (
                "/services/0/restart",
                json!({"policy": "sometimes"}),
                "$.services[0].restart.policy: policy \"sometimes\" is not one of always, on-failure, never",
            ),
            (
                "/services/0/restart",
                json!({"backoff_initial_ms": 0}),
                "$.services[0].restart.backoff_initial_ms: must be 1 to 86400000 ms",
            ),
            (
                "/services/0/restart",
                json!({"backoff_initial_ms": 500, "backoff_max_ms": 100}),
                "$.services[0].restart.backoff_max_ms: must be from backoff_initial_ms (500) to 86400000 ms",
            ),
            (
                "/services/0/restart",
                json!({"retries": 3}),
                "$.services[0].restart.retries: unknown field",
            ),
            (
                "/services/0/stop_timeout_ms",
                json!(0),
                "$.services[0].stop_timeout_ms: must be 1 to 300000 ms",
            ),
            (
                "/services/1/after",
                json!(["kubelet"]),
                "$.services[0].after: dependency cycle: kubelet -> containerd -> kubelet",
            ),
            ("/services/0/user", json!("root"), "$.services[0].user: unknown field"),
        ];
        for (pointer, value, want) in cases {
            let doc = with(base(), pointer, value.clone());
            let err = match parse_config(&bytes(&doc)) {
                Err(ConfigError::Invalid(e)) => e.to_string(),
                other => panic!("{pointer} = {value}: expected an invalid-config error, got {other:?}"),
            };
            assert!(err.starts_with(want), "{pointer} = {value}:\n got  {err}\n want {want}");
        }
    }

    #[test]
    fn longer_cycle_is_named() {
        let doc = json!({"kind":"config","version":1,"generation":1,"node":"n","hostname":"h","services":[
            {"name":"ok","exec":["/bin/true"]},
            {"name":"a","exec":["/bin/true"],"after":["c"]},
            {"name":"b","exec":["/bin/true"],"after":["a","ok"]},
            {"name":"c","exec":["/bin/true"],"after":["b"]}
        ]});
        let err = parse_config(&bytes(&doc)).unwrap_err().to_string();
        assert_eq!(err, "$.services[1].after: dependency cycle: a -> c -> b -> a");
    }

    #[test]
    fn start_order_is_stable() {
        let doc = json!({"kind":"config","version":1,"generation":1,"node":"n","hostname":"h","services":[
            {"name":"d","exec":["/bin/true"],"after":["c"]},
            {"name":"a","exec":["/bin/true"]},
            {"name":"c","exec":["/bin/true"],"after":["a"]},
            {"name":"b","exec":["/bin/true"]}
        ]});
        let c = parse_config(&bytes(&doc)).unwrap();
        let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "c", "d", "b"]);
    }

    #[test]
    fn kind_and_syntax() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"kind":"poweroff","version":1,"node":"n","nonce":"x"}"#,
                "signed payload is of kind \"poweroff\", expected \"config\"",
            ),
            (r#"{"version":1}"#, "$.kind: missing field"),
            (
                r#"{"kind":"config","version":1,"generation":1,"generation":2}"#,
                "$: malformed JSON: duplicate key",
            ),
            ("{\"kind\":\"config\"", "$: malformed JSON: EOF while parsing"),
        ];
        for (text, want) in cases {
            let err = parse_config(text.as_bytes()).unwrap_err().to_string();
            assert!(err.starts_with(want), "{text}: {err}");
        }
        assert!(matches!(
            parse_config(br#"{"kind":"reboot"}"#),
            Err(ConfigError::WrongKind { found }) if found == "reboot"
        ));
    }

    #[test]
    fn applicability() {
        let c = parse_config(&bytes(&base())).unwrap();
        let cases: &[(&str, Option<u64>, Result<(), ConfigError>)] = &[
            (NODE, None, Ok(())),
            (NODE, Some(1), Ok(())),
            (
                NODE,
                Some(2),
                Err(ConfigError::StaleGeneration { offered: 2, applied: 2 }),
            ),
            (
                NODE,
                Some(9),
                Err(ConfigError::StaleGeneration { offered: 2, applied: 9 }),
            ),
            (
                "other",
                None,
                Err(ConfigError::WrongNode {
                    config: NODE.into(),
                    node: "other".into(),
                }),
            ),
        ];
        for (node, applied, want) in cases {
            let ctx = ApplyContext {
                node,
                applied_generation: *applied,
            };
            assert_eq!(&c.check_applicable(&ctx), want, "{node} {applied:?}");
        }
        let ctx = ApplyContext {
            node: NODE,
            applied_generation: Some(5),
        };
        assert_eq!(
            validate(&bytes(&base()), &ctx).unwrap_err().to_string(),
            "config generation 2 is not above the applied generation 5"
        );
    }

    #[test]
    fn path_rules() {
        let ok = [
            "/var/lib/kubelet/config.yaml",
            "/run/kubelet/x",
            "/tmp/a",
            "/run/basaltx/y",
            "/var/a.b/..c",
        ];
        for p in ok {
            assert_eq!(check_file_path(p), Ok(()), "{p}");
        }
        let bad = [
            "/",
            "",
            "/run",
            "/run/basalt",
            "/run/basalt/x",
            "/etc/x",
            "/usr/bin/kubelet",
            "/var/./x",
            "/tmp/..",
            "//var/x",
        ];
        for p in bad {
            assert!(check_file_path(p).is_err(), "{p}");
        }
        assert!(check_file_path(&format!("/var/{}", "a".repeat(256))).is_err());
        assert!(check_file_path(&format!("/var/{}", "a".repeat(255))).is_ok());
    }

    #[test]
    fn mode_table() {
        let cases = [
            ("644", Ok(0o644)),
            ("0600", Ok(0o600)),
            ("0777", Ok(0o777)),
            ("000", Ok(0)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_mode(text), want, "{text}");
        }
        for bad in ["", "64", "1644", "00644", "0o644", "rw-", "0x1a4", "-644"] {
            assert!(parse_mode(bad).is_err(), "{bad}");
        }
    }
}
