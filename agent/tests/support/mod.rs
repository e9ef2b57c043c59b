//! A node on the host: the real basalt-agent binary, run without root in a
//! scratch directory that stands in for the node's filesystem.
//!
//! - `--root` points at `<scratch>/root` (trusted keys, /run/basalt, /var,
//!   /sys files for lockdown and the SMBIOS UUID);
//! - `--cmdline` at a file holding `basalt.*` keys;
//! - `--listen-unix` at `<scratch>/agent.sock`, the channel tests talk on;
//! - `--init-pid` at a `sleep` the test owns, so poweroff and reboot signal
//!   it and not the host's init;
//! - `--hostname-file` instead of sethostname(2).
//!
//! Services are `/bin/sh -c SCRIPT NAME <scratch>`: the scratch path in
//! their argv lets a test count them and lets `Drop` sweep up any left over.
#![allow(dead_code, reason = "each test binary uses only some of these helpers")]

pub mod disk;

use basalt_common::command::{Command as SignedCommand, CommandKind};
use basalt_common::envelope::SignedEnvelope;
use basalt_common::keys::SigningKey;
use basalt_common::procfs;
use basalt_common::proto::{parse_response, Response};
use basaltctl::client::Client;
use basaltctl::endpoint::Endpoint;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const AGENT: &str = env!("CARGO_BIN_EXE_basalt-agent");
pub const NODE: &str = "test-node-1";
pub const TRUSTED_SEED: [u8; 32] = [1; 32];
pub const OTHER_SEED: [u8; 32] = [2; 32];
pub const TIMEOUT: Duration = Duration::from_secs(15);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A directory removed when dropped.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("basalt-agent-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch { path }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// How to set up a test node.
#[derive(Clone)]
pub struct Options {
    /// The kernel command line (basalt.* keys).
    pub cmdline: String,
    /// Contents of /sys/class/dmi/id/product_uuid, if any.
    pub smbios_uuid: Option<String>,
    /// Extra public key files to trust.
    pub trust: Vec<PathBuf>,
    pub extra_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cmdline: format!("console=ttyS0 basalt.node={NODE} basalt.serial=none basalt.vsock_port=none"),
            smbios_uuid: None,
            trust: Vec::new(),
            extra_args: Vec::new(),
        }
    }
}

pub struct TestNode {
    pub scratch: Scratch,
    pub root: PathBuf,
    pub sock: PathBuf,
    pub key: SigningKey,
    /// The stand-in for PID 1.
    pub init: Child,
    /// How the agent is started (by [`TestNode::start_agent`]).
    pub opts: Options,
    agent: Option<Child>,
    runs: usize,
}

impl TestNode {
    pub fn start(tag: &str, opts: Options) -> Self {
        let mut node = TestNode::create(tag, opts);
        node.start_agent();
        node
    }

    /// The scratch root and the stand-in init, without the agent: for a
    /// test that sets up more of the node before [`TestNode::start_agent`].
    pub fn create(tag: &str, opts: Options) -> Self {
        let scratch = Scratch::new(tag);
        let root = scratch.path.join("root");
        for dir in [
            "etc/basalt/trusted-keys",
            "run",
            "var/lib",
            "tmp",
            "sys/kernel/security",
            "sys/class/dmi/id",
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        let key = SigningKey::from_seed(&TRUSTED_SEED).unwrap();
        let keys = root.join("etc/basalt/trusted-keys");
        std::fs::write(keys.join("dev.pub"), key.public_key().to_pem()).unwrap();
        for (i, extra) in opts.trust.iter().enumerate() {
            std::fs::copy(extra, keys.join(format!("extra{i}.pub"))).unwrap();
        }
        std::fs::write(
            root.join("sys/kernel/security/lockdown"),
            "none [integrity] confidentiality\n",
        )
        .unwrap();
        if let Some(uuid) = &opts.smbios_uuid {
            std::fs::write(root.join("sys/class/dmi/id/product_uuid"), uuid).unwrap();
        }
        std::fs::write(scratch.path.join("cmdline"), &opts.cmdline).unwrap();
        // Both signals the agent sends init (SIGINT, SIGTERM) at their default
        // action: a shell that starts `make test` in the background (`&`, no
        // job control) ignores SIGINT, and sleep would inherit that.
        let init = Command::new("env")
            .args(["--default-signal=INT,TERM", "sleep", "600"])
            .spawn()
            .unwrap();
        let sock = scratch.path.join("agent.sock");
        TestNode {
            scratch,
            root,
            sock,
            key,
            init,
            opts,
            agent: None,
            runs: 0,
        }
    }

    /// Starts (or restarts) the agent and waits until it answers status.
    pub fn start_agent(&mut self) {
        assert!(self.agent.is_none(), "agent already running");
        let _ = std::fs::remove_file(&self.sock);
        self.runs += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.scratch.path.join(format!("agent-{}.stderr", self.runs)))
            .unwrap();
        let child = Command::new(AGENT)
            .arg("--root")
            .arg(&self.root)
            .arg("--cmdline")
            .arg(self.scratch.path.join("cmdline"))
            .arg("--listen-unix")
            .arg(&self.sock)
            .arg("--init-pid")
            .arg(self.init.id().to_string())
            .arg("--hostname-file")
            .arg(self.scratch.path.join("hostname"))
            .args(&self.opts.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agent = Some(child);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if std::os::unix::net::UnixStream::connect(&self.sock).is_ok() {
                let s = self.status();
                assert!(s.get("state").is_some(), "{s}");
                return;
            }
            if let Some(status) = self.agent.as_mut().unwrap().try_wait().unwrap() {
                panic!("agent exited at start ({status}):\n{}", self.stderr());
            }
            assert!(Instant::now() < deadline, "agent did not start:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn agent_pid(&self) -> Pid {
        Pid::from_raw(self.agent.as_ref().expect("agent running").id() as i32)
    }

    /// Sends `sig` to the agent and waits for it to exit.
    pub fn stop_agent(&mut self, sig: Signal) -> std::process::ExitStatus {
        let mut child = self.agent.take().expect("agent running");
        kill(Pid::from_raw(child.id() as i32), sig).unwrap();
        wait_child(&mut child, TIMEOUT).unwrap_or_else(|| panic!("agent did not exit on {sig}"))
    }

    /// Everything the agent wrote to stderr, over all its runs.
    pub fn stderr(&self) -> String {
        (1..=self.runs)
            .map(|i| std::fs::read_to_string(self.scratch.path.join(format!("agent-{i}.stderr"))).unwrap_or_default())
            .collect()
    }

    /// The marker in every test service's argv.
    pub fn marker(&self) -> String {
        self.scratch.path.display().to_string()
    }

    pub fn client(&self) -> Client {
        Client::connect(&Endpoint::Unix(self.sock.clone()), TIMEOUT).unwrap()
    }

    pub fn call(&self, op: &str, fields: Value) -> Response {
        let fields: Map<String, Value> = fields.as_object().cloned().unwrap_or_default();
        self.client().call(op, fields).unwrap()
    }

    pub fn status(&self) -> Value {
        expect_ok(self.call("status", json!({})))
    }

    pub fn service(&self, name: &str) -> Value {
        let status = self.status();
        status["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Polls status until `done` holds.
    pub fn wait_status(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let s = self.status();
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last status:\n{s:#}\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until service `name` runs, and returns its status.
    pub fn wait_running(&self, name: &str) -> Value {
        let s = self.wait_status(&format!("{name} running"), |s| {
            service_in(s, name).is_some_and(|svc| svc["state"] == "running" && svc["pid"].is_u64())
        });
        service_in(&s, name).unwrap()
    }

    pub fn sign(&self, doc: &Value) -> SignedEnvelope {
        SignedEnvelope::sign(&self.key, serde_json::to_vec(doc).unwrap())
    }

    pub fn apply_envelope(&self, envelope: &SignedEnvelope) -> Response {
        self.call("apply", json!({"envelope": envelope.to_json()}))
    }

    pub fn apply(&self, doc: &Value) -> Response {
        self.apply_envelope(&self.sign(doc))
    }

    /// A command envelope bound to this node and a fresh nonce.
    pub fn command(&self, kind: CommandKind) -> SignedEnvelope {
        let nonce = self.status()["nonce"].as_str().unwrap().to_string();
        let cmd = SignedCommand {
            kind,
            node: NODE.into(),
            nonce,
        };
        SignedEnvelope::sign(&self.key, cmd.to_payload())
    }

    pub fn logs(&self, source: &str, tail: u64) -> Vec<String> {
        let r = expect_ok(self.call("logs", json!({"source": source, "tail": tail})));
        r["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect()
    }

    /// Runs the basaltctl command line in-process against this node.
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let mut full = vec!["--endpoint".to_string(), format!("unix:{}", self.sock.display())];
        full.extend(args.iter().map(|s| s.to_string()));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = basaltctl::cli::run(&full, None, &mut out, &mut err);
        (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    /// A service running `script` under /bin/sh, tagged with this node's marker.
    pub fn service_spec(&self, name: &str, script: &str) -> Value {
        json!({
            "name": name,
            "exec": ["/bin/sh", "-c", script, name, self.marker()],
            "stop_timeout_ms": 3000,
        })
    }

    /// Live service processes (argv carries this node's marker).
    pub fn marked_processes(&self) -> Vec<(i32, String)> {
        marked(&self.marker())
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            if wait_child(&mut child, TIMEOUT).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = self.init.kill();
        let _ = self.init.wait();
        for (pid, _) in marked(&self.marker()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn marked(marker: &str) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        // Services run under /bin/sh; the agent's own argv carries the marker too.
        if argv.starts_with("/bin/sh ") && argv.contains(marker) && alive(pid) {
            found.push((pid, parent(pid), argv));
        }
    }
    // A shell forks before it execs `sleep`: for a moment the child has the
    // shell's argv. Only processes whose parent is not a service count.
    let pids: Vec<i32> = found.iter().map(|(pid, _, _)| *pid).collect();
    found
        .into_iter()
        .filter(|(_, ppid, _)| !pids.contains(ppid))
        .map(|(pid, _, argv)| (pid, argv))
        .collect()
}

fn stat(pid: i32) -> Option<procfs::Stat> {
    procfs::parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parent(pid: i32) -> i32 {
    stat(pid).and_then(|s| s.ppid).unwrap_or(0)
}

/// The process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| !s.is_dead())
}

pub fn service_in(status: &Value, name: &str) -> Option<Value> {
    status["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
}

pub fn expect_ok(resp: Response) -> Value {
    match resp {
        Response::Ok { result, .. } => result,
        Response::Error { code, message, .. } => panic!("expected ok, got {code}: {message}"),
    }
}

/// The error code and message of an error response.
pub fn expect_error(resp: Response) -> (String, String) {
    match resp {
        Response::Error { code, message, .. } => (code, message),
        Response::Ok { result, .. } => panic!("expected an error, got ok: {result}"),
    }
}

/// Reads the next response line from a raw stream.
pub fn next_response(client: &mut Client) -> Response {
    let line = client
        .read_line("a response", Instant::now() + TIMEOUT, &mut 0)
        .unwrap();
    parse_response(&line).unwrap_or_else(|e| panic!("not a response: {e}: {}", String::from_utf8_lossy(&line)))
}

/// A config for the test node.
pub fn config(generation: u64, services: Vec<Value>, files: Vec<Value>) -> Value {
    json!({
        "kind": "config",
        "version": 1,
        "generation": generation,
        "node": NODE,
        "hostname": "test-host",
        "files": files,
        "services": services,
    })
}

pub fn file(path: &str, mode: &str, contents: &str) -> Value {
    json!({"path": path, "mode": mode, "contents": contents})
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("<{e}>"))
}
