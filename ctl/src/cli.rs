//! The `basaltctl` command line.
//!
//! Exit codes: 0 success; 1 the agent answered with an error (printed as
//! `basaltctl: <code>: <message>`); 2 usage; 3 the agent could not be
//! reached or the conversation failed; 4 a local file, key or config is bad.

use crate::client::{Client, ClientError};
use crate::endpoint::Endpoint;
use crate::render;
use basalt_common::command::{Command, CommandKind};
use basalt_common::config;
use basalt_common::envelope::SignedEnvelope;
use basalt_common::keys::SigningKey;
use basalt_common::proto::Response;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const EXIT_AGENT: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_TRANSPORT: i32 = 3;
pub const EXIT_LOCAL: i32 = 4;

pub const USAGE: &str = "\
usage: basaltctl [--endpoint E] [--json] [--timeout SECS] COMMAND ...

commands:
  keygen --out NAME               write NAME.key (PKCS#8 PEM, 0600) and NAME.pub (SPKI PEM)
  sign --key KEY CONFIG [--out F] sign a config (offline); prints the envelope
  apply (CONFIG --key KEY | --envelope FILE) [--try DURATION]
                                  send a signed config; with --try (60s, 5m) nothing is
                                  persisted and the node goes back after DURATION
  confirm --key KEY               signed: keep the config on trial (persist it)
  reset --var --key KEY           signed: stop every service, empty /var, reboot
  status                          node state, services, versions
  node-id                         print the node id (for the config's \"node\")
  logs SOURCE [-n N] [-f]         a service's log, or \"agent\" / \"init\"
  reboot --key KEY                signed reboot, bound to this node and a fresh nonce
  poweroff --key KEY              signed poweroff, likewise
  upgrade --bundle FILE --key KEY [--reboot] [--allow-downgrade] [--health-window DURATION]
                                  signed: write the bundle into the slot not running and
                                  stage it with 3 tries; --reboot boots it; it is blessed
                                  after DURATION healthy (default 60s). A rerun resumes.
  rollback --key KEY              signed: make the other slot the default and reboot

endpoints (--endpoint, or $BASALT_ENDPOINT):
  unix:PATH             QEMU's chardev socket for the serial port, or --listen-unix
  vsock-uds:PATH:PORT   vhost-device-vsock's socket (CONNECT handshake)
  vsock:CID:PORT        AF_VSOCK
  serial:/dev/ttyX      a serial device

exit codes: 0 ok, 1 agent error, 2 usage, 3 cannot talk to the agent, 4 bad local input
";

/// A failure, with the exit code it maps to.
#[derive(Debug)]
pub enum CliError {
    Usage(String),
    Local(String),
    Transport(ClientError),
    Agent { code: String, message: String },
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Local(_) => EXIT_LOCAL,
            CliError::Transport(_) => EXIT_TRANSPORT,
            CliError::Agent { .. } => EXIT_AGENT,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) => write!(f, "{m} (see basaltctl --help)"),
            CliError::Local(m) => write!(f, "{m}"),
            CliError::Transport(e) => write!(f, "{e}"),
            CliError::Agent { code, message } => write!(f, "{code}: {message}"),
        }
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError::Transport(e)
    }
}

#[derive(Debug, Default)]
struct Opts {
    endpoint: Option<String>,
    json: bool,
    timeout: Option<Duration>,
    key: Option<PathBuf>,
    envelope: Option<PathBuf>,
    out: Option<PathBuf>,
    tail: Option<u64>,
    follow: bool,
    help: bool,
    /// `reset --var`.
    var: bool,
    /// `apply --try DURATION`: a trial of that many milliseconds.
    try_ms: Option<u64>,
    bundle: Option<PathBuf>,
    upgrade: crate::upgrade::UpgradeFlags,
    positional: Vec<String>,
}

fn parse(args: &[String]) -> Result<Opts, CliError> {
    let mut o = Opts::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| CliError::Usage(format!("option {name} needs a value")))
        };
        match name {
            "--endpoint" | "-e" => o.endpoint = Some(value()?),
            "--json" => o.json = true,
            "--var" => o.var = true,
            "--bundle" => o.bundle = Some(PathBuf::from(value()?)),
            "--reboot" => o.upgrade.reboot = true,
            "--allow-downgrade" => o.upgrade.allow_downgrade = true,
            "--health-window" => {
                let v = value()?;
                o.upgrade.health_window_ms = Some(parse_duration_ms(&v).ok_or_else(|| {
                    CliError::Usage(format!("--health-window {v:?} is not a duration such as 60s or 5m"))
                })?);
            }
            "--timeout" => {
                let v = value()?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s > 0.0 && s.is_finite())
                    .ok_or_else(|| CliError::Usage(format!("--timeout {v:?} is not a positive number of seconds")))?;
                o.timeout = Some(Duration::from_secs_f64(secs));
            }
            "--key" | "-k" => o.key = Some(PathBuf::from(value()?)),
            "--envelope" => o.envelope = Some(PathBuf::from(value()?)),
            "--try" => {
                let v = value()?;
                o.try_ms = Some(parse_duration_ms(&v).ok_or_else(|| {
                    CliError::Usage(format!("--try {v:?} is not a duration such as 60s, 5m or 90000ms"))
                })?);
            }
            "--out" | "-o" => o.out = Some(PathBuf::from(value()?)),
            "-n" | "--tail" => {
                let v = value()?;
                o.tail = Some(
                    v.parse()
                        .map_err(|_| CliError::Usage(format!("-n {v:?} is not a line count")))?,
                );
            }
            "-f" | "--follow" => o.follow = true,
            "--help" | "-h" => o.help = true,
            s if s.starts_with('-') && s.len() > 1 => return Err(CliError::Usage(format!("unknown option {s:?}"))),
            _ => o.positional.push(arg.clone()),
        }
    }
    Ok(o)
}

/// Runs one command. `env_endpoint` is `$BASALT_ENDPOINT`.
pub fn run(args: &[String], env_endpoint: Option<String>, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let result = parse(args).and_then(|opts| dispatch(opts, env_endpoint, out));
    match result {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "basaltctl: {e}");
            e.exit_code()
        }
    }
}

fn dispatch(mut o: Opts, env_endpoint: Option<String>, out: &mut dyn Write) -> Result<(), CliError> {
    if o.help || o.positional.is_empty() {
        let _ = out.write_all(USAGE.as_bytes());
        return if o.help {
            Ok(())
        } else {
            Err(CliError::Usage("no command given".into()))
        };
    }
    let command = o.positional.remove(0);
    let args = std::mem::take(&mut o.positional);
    let want_args = |n: usize, what: &str| {
        if args.len() == n {
            Ok(())
        } else {
            Err(CliError::Usage(format!("{command} takes {what}")))
        }
    };
    match command.as_str() {
        "keygen" => {
            want_args(0, "no arguments besides --out NAME")?;
            keygen(&o, out)
        }
        "sign" => {
            want_args(1, "one config file")?;
            sign(&o, Path::new(&args[0]), out)
        }
        "apply" => {
            let envelope = match (&o.envelope, args.as_slice()) {
                (Some(file), []) => read_envelope(file)?,
                (None, [config]) => sign_config(Path::new(config), key_path(&o)?)?,
                _ => {
                    return Err(CliError::Usage(
                        "apply takes CONFIG --key KEY, or --envelope FILE".into(),
                    ))
                }
            };
            let mut client = connect(&o, env_endpoint)?;
            let mut fields = obj(json!({"envelope": envelope.to_json()}));
            if let Some(ms) = o.try_ms {
                fields.insert("try_ms".into(), json!(ms));
            }
            let resp = client.call("apply", fields)?;
            respond(&o, resp, out, render::applied)
        }
        "status" => {
            want_args(0, "no arguments")?;
            let mut client = connect(&o, env_endpoint)?;
            let resp = client.call("status", Map::new())?;
            respond(&o, resp, out, render::status)
        }
        "node-id" => {
            want_args(0, "no arguments")?;
            let mut client = connect(&o, env_endpoint)?;
            let status = ok_result(client.call("status", Map::new())?)?;
            match status.get("node").and_then(Value::as_str) {
                Some(id) => {
                    let _ = writeln!(out, "{id}");
                    Ok(())
                }
                None => Err(CliError::Agent {
                    code: "no_node_identity".into(),
                    message: status
                        .get("node_problem")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown")
                        .into(),
                }),
            }
        }
        "logs" => {
            want_args(1, "one log source (a service, \"agent\" or \"init\")")?;
            let mut client = connect(&o, env_endpoint)?;
            let tail = o.tail.unwrap_or(basalt_common::proto::DEFAULT_TAIL);
            follow_logs(&mut client, &args[0], tail, o.follow, o.json, out, None)
        }
        "reboot" | "poweroff" | "confirm" => {
            want_args(0, "no arguments besides --key KEY")?;
            let kind = match command.as_str() {
                "reboot" => CommandKind::Reboot,
                "poweroff" => CommandKind::Poweroff,
                _ => CommandKind::Confirm,
            };
            let key = load_key(key_path(&o)?)?;
            let mut client = connect(&o, env_endpoint)?;
            let resp = signed_command(&mut client, &key, kind)?;
            respond(&o, resp, out, render::command)
        }
        "reset" => {
            if !(o.var && args.is_empty()) {
                return Err(CliError::Usage(
                    "reset takes --var --key KEY (/var is what it empties)".into(),
                ));
            }
            let key = load_key(key_path(&o)?)?;
            let mut client = connect(&o, env_endpoint)?;
            let resp = signed_command(&mut client, &key, CommandKind::ResetVar)?;
            respond(&o, resp, out, render::command)
        }
        "upgrade" => {
            want_args(0, "--bundle FILE --key KEY")?;
            let path = o
                .bundle
                .clone()
                .ok_or_else(|| CliError::Usage("upgrade needs --bundle FILE".into()))?;
            let bundle = crate::upgrade::BundleFile::open(&path)?;
            let key = load_key(key_path(&o)?)?;
            let mut client = connect(&o, env_endpoint)?;
            let result = if o.json {
                crate::upgrade::upgrade(&mut client, &key, &bundle, o.upgrade, true, out)?.0
            } else {
                crate::upgrade::upgrade(&mut client, &key, &bundle, o.upgrade, false, &mut std::io::stderr())?.0
            };
            print_upgrade(&o, &result, out);
            Ok(())
        }
        "rollback" => {
            want_args(0, "no arguments besides --key KEY")?;
            let key = load_key(key_path(&o)?)?;
            let mut client = connect(&o, env_endpoint)?;
            let result = crate::upgrade::rollback(&mut client, &key)?;
            print_upgrade(&o, &result, out);
            Ok(())
        }
        other => Err(CliError::Usage(format!("unknown command {other:?}"))),
    }
}

fn print_upgrade(o: &Opts, result: &Value, out: &mut dyn Write) {
    let text = if o.json {
        format!("{result}\n")
    } else {
        render::upgrade(result)
    };
    let _ = out.write_all(text.as_bytes());
}

/// `60s`, `5m`, `1h`, `1500ms`, or a bare number of seconds.
fn parse_duration_ms(text: &str) -> Option<u64> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = digits.parse().ok()?;
    let per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    n.checked_mul(per)
}

pub(crate) fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn key_path(o: &Opts) -> Result<&Path, CliError> {
    o.key
        .as_deref()
        .ok_or_else(|| CliError::Usage("--key KEY is required".into()))
}

fn connect(o: &Opts, env_endpoint: Option<String>) -> Result<Client, CliError> {
    let text = o
        .endpoint
        .clone()
        .or(env_endpoint)
        .ok_or_else(|| CliError::Usage("no endpoint: give --endpoint or set BASALT_ENDPOINT".into()))?;
    let endpoint = Endpoint::parse(&text).map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(Client::connect(
        &endpoint,
        o.timeout.unwrap_or(Duration::from_secs(10)),
    )?)
}

pub(crate) fn ok_result(resp: Response) -> Result<Value, CliError> {
    match resp {
        Response::Ok { result, .. } => Ok(result),
        Response::Error { code, message, .. } => Err(CliError::Agent { code, message }),
    }
}

/// Prints a response: raw with --json, else through `human`. An error
/// response is an error either way (and exit code 1).
fn respond(o: &Opts, resp: Response, out: &mut dyn Write, human: fn(&Value) -> String) -> Result<(), CliError> {
    if o.json {
        let raw = match &resp {
            Response::Ok { id, result } => json!({"id": id, "ok": true, "result": result}),
            Response::Error { id, code, message } => {
                json!({"id": id, "ok": false, "error": {"code": code, "message": message}})
            }
        };
        let _ = writeln!(out, "{raw}");
    }
    let result = ok_result(resp)?;
    if !o.json {
        let _ = out.write_all(human(&result).as_bytes());
    }
    Ok(())
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::Local(format!("cannot read {what} {}: {e}", path.display())))
}

fn load_key(path: &Path) -> Result<SigningKey, CliError> {
    let bytes = read_file(path, "private key")?;
    let text =
        String::from_utf8(bytes).map_err(|_| CliError::Local(format!("{} is not a PEM file", path.display())))?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| CliError::Local(format!("{}: {e}", path.display())))
}

fn read_envelope(path: &Path) -> Result<SignedEnvelope, CliError> {
    let bytes = read_file(path, "envelope")?;
    SignedEnvelope::parse(&bytes).map_err(|e| CliError::Local(format!("{}: {e}", path.display())))
}

/// Signs a config file's exact bytes, after checking them with the same
/// validation the agent runs (minus what depends on the node).
fn sign_config(config_path: &Path, key_path: &Path) -> Result<SignedEnvelope, CliError> {
    let payload = read_file(config_path, "config")?;
    config::parse_config(&payload).map_err(|e| CliError::Local(format!("{}: {e}", config_path.display())))?;
    let key = load_key(key_path)?;
    Ok(SignedEnvelope::sign(&key, payload))
}

fn sign(o: &Opts, config_path: &Path, out: &mut dyn Write) -> Result<(), CliError> {
    let envelope = sign_config(config_path, key_path(o)?)?;
    let mut text = envelope.to_json().to_string();
    text.push('\n');
    match &o.out {
        Some(path) => {
            std::fs::write(path, &text).map_err(|e| CliError::Local(format!("cannot write {}: {e}", path.display())))
        }
        None => out
            .write_all(text.as_bytes())
            .map_err(|e| CliError::Local(format!("cannot write output: {e}"))),
    }
}

fn keygen(o: &Opts, out: &mut dyn Write) -> Result<(), CliError> {
    let name = o
        .out
        .as_ref()
        .ok_or_else(|| CliError::Usage("keygen needs --out NAME".into()))?;
    let (key, private_pem) =
        SigningKey::generate().map_err(|e| CliError::Local(format!("cannot generate a key: {e}")))?;
    let with_ext = |ext: &str| {
        let mut p = name.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    let (private, public) = (with_ext(".key"), with_ext(".pub"));
    // Never overwrite a key: that would silently orphan every node trusting it.
    let write_new = |path: &Path, text: &str, mode: u32| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| CliError::Local(format!("cannot create {}: {e}", path.display())))
    };
    write_new(&private, &private_pem, 0o600)?;
    write_new(&public, &key.public_key().to_pem(), 0o644)?;
    let id = key.public_key().key_id();
    if o.json {
        let _ = writeln!(out, "{}", json!({"private": private, "public": public, "key_id": id}));
    } else {
        let _ = writeln!(
            out,
            "wrote {} (private: keep it secret) and {} (key id {id}); \
             put the .pub file in the image's /etc/basalt/trusted-keys/",
            private.display(),
            public.display()
        );
    }
    Ok(())
}

/// Status's node id and a fresh nonce, for a signed command.
pub(crate) fn node_and_nonce(client: &mut Client) -> Result<(String, String), CliError> {
    let status = ok_result(client.call("status", Map::new())?)?;
    let field = |name: &str| {
        status
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| CliError::Agent {
                code: "no_node_identity".into(),
                message: status
                    .get("node_problem")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("status has no {name}"), str::to_string),
            })
    };
    Ok((field("node")?, field("nonce")?))
}

/// Fetches a nonce with status, signs a command bound to this node and that
/// nonce, and sends it.
pub fn signed_command(client: &mut Client, key: &SigningKey, kind: CommandKind) -> Result<Response, CliError> {
    let (node, nonce) = node_and_nonce(client)?;
    let cmd = Command { kind, node, nonce };
    let envelope = SignedEnvelope::sign(key, cmd.to_payload());
    Ok(client.call(kind.as_str(), obj(json!({"envelope": envelope.to_json()})))?)
}

/// Prints a log's tail, then with `follow` keeps polling for new lines
/// every half second. `polls` bounds the follow loop (tests); `None` follows
/// until interrupted.
pub fn follow_logs(
    client: &mut Client,
    source: &str,
    tail: u64,
    follow: bool,
    json: bool,
    out: &mut dyn Write,
    polls: Option<usize>,
) -> Result<(), CliError> {
    let first = client.call("logs", obj(json!({"source": source, "tail": tail})))?;
    let mut cursor = print_logs(json, first, out)?;
    let mut done = 0;
    let more = |done: usize| match polls {
        Some(max) => done < max,
        None => true,
    };
    while follow && more(done) {
        std::thread::sleep(Duration::from_millis(500));
        let next = client.call("logs", obj(json!({"source": source, "since": cursor})))?;
        cursor = print_logs(json, next, out)?;
        done += 1;
    }
    Ok(())
}

fn print_logs(json: bool, resp: Response, out: &mut dyn Write) -> Result<u64, CliError> {
    if json {
        if let Response::Ok { id, result } = &resp {
            let _ = writeln!(out, "{}", json!({"id": id, "ok": true, "result": result}));
        }
    }
    let result = ok_result(resp)?;
    let cursor = result.get("cursor").and_then(Value::as_u64).unwrap_or(0);
    if !json {
        let mut text = String::new();
        if result.get("truncated").and_then(Value::as_bool) == Some(true) {
            text.push_str("... (older lines were dropped from the log ring)\n");
        }
        for line in result.get("lines").and_then(Value::as_array).into_iter().flatten() {
            text.push_str(line.as_str().unwrap_or_default());
            text.push('\n');
        }
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
    Ok(cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_durations() {
        let cases = [
            ("60s", Some(60_000)),
            ("5m", Some(300_000)),
            ("1h", Some(3_600_000)),
            ("1500ms", Some(1_500)),
            ("90", Some(90_000)),
            ("", None),
            ("1d", None),
            ("-5s", None),
            ("99999999999999999999h", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration_ms(text), want, "{text}");
        }
    }
}
