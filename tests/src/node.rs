//! A booted node running the real agent, driven the way an operator would:
//! through basaltctl's client over the serial line or vsock. The only extra
//! is the remote-hands fixture (test images only), which can kill processes
//! and count them from inside the guest.

use crate::*;
use basalt_common::command::{Command, CommandKind};
use basalt_common::envelope::SignedEnvelope;
use basalt_common::keys::SigningKey;
use basalt_common::proto::Response;
use basalt_qemu::VmConfig;
use basaltctl::client::Client;
use basaltctl::endpoint::Endpoint;
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

/// The agent's default vsock port, and the fixture's.
pub const AGENT_VSOCK_PORT: u32 = 1024;
pub const HANDS_VSOCK_PORT: u32 = 7000;
/// Kernel parameters every agent test boots with.
pub const AGENT_CMDLINE: &str = "quiet basalt.on_error=poweroff basalt.error_delay=0";

pub struct Node {
    pub vm: TestVm,
    pub id: String,
    pub key: SigningKey,
    name: String,
    initramfs: std::path::PathBuf,
    cmdline: String,
    boots: usize,
    /// Kept alive for the life of the VM: it holds the image.
    _scratch: Scratch,
}

impl Node {
    /// Builds the test image (default rootfs + fixtures, handoff = the
    /// agent), boots it with a provisioning socket and vsock, and waits for
    /// the agent to be ready.
    pub fn boot(build: &Build, name: &str, extra_cmdline: &str) -> Node {
        Node::boot_with(build, name, extra_cmdline, &|cfg| cfg)
    }

    /// [`boot`](Self::boot), with `more` adding to the VM's config (disks, say).
    pub fn boot_with(build: &Build, name: &str, extra_cmdline: &str, more: &dyn Fn(VmConfig) -> VmConfig) -> Node {
        let scratch = Scratch::new(name);
        let rootfs = test_rootfs(build, &scratch);
        let image = build_image(build, &rootfs, &scratch.0, &ImageOptions::default());
        let cmdline = format!("{AGENT_CMDLINE} {extra_cmdline}");
        Node::boot_image(build, name, &image.initramfs, &cmdline, scratch, more)
    }

    /// Boots the caller's initramfs (a root slot's, say) with its whole
    /// command line; `scratch` lives as long as the node.
    pub fn boot_image(
        build: &Build,
        name: &str,
        initramfs: &std::path::Path,
        cmdline: &str,
        scratch: Scratch,
        more: &dyn Fn(VmConfig) -> VmConfig,
    ) -> Node {
        let id = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            std::process::id(),
            name.len() as u64 * 7919
        );
        let vm = Node::start_vm(build, name, initramfs, cmdline, &scratch, &id, more);
        Node {
            vm,
            id,
            key: key_from(&build.path("keys/config.key")),
            name: name.into(),
            initramfs: initramfs.to_path_buf(),
            cmdline: cmdline.into(),
            boots: 1,
            _scratch: scratch,
        }
    }

    fn start_vm(
        build: &Build,
        name: &str,
        initramfs: &std::path::Path,
        cmdline: &str,
        scratch: &Scratch,
        id: &str,
        more: &dyn Fn(VmConfig) -> VmConfig,
    ) -> TestVm {
        let cfg = TestVm::config(build, initramfs, cmdline)
            .prov_socket(scratch.path("prov.sock"))
            .vsock(4)
            .uuid(id.to_string());
        let vm = TestVm::boot(build, name, more(cfg));
        vm.expect("basalt-agent: ready", BOOT_TIMEOUT);
        vm
    }

    /// Boots the same image again, as the same node (after the last VM
    /// exited, or was killed: a power cut), and waits for the agent.
    pub fn boot_again(&mut self, build: &Build, more: &dyn Fn(VmConfig) -> VmConfig) {
        self.boots += 1;
        let name = format!("{}-boot{}", self.name, self.boots);
        self.vm = Node::start_vm(
            build,
            &name,
            &self.initramfs,
            &self.cmdline,
            &self._scratch,
            &self.id,
            more,
        );
    }

    /// The request fields of a signed command of `kind`, bound to this
    /// node and `nonce`, and the envelope itself.
    pub fn command_envelope(&self, kind: CommandKind, nonce: &str) -> (SignedEnvelope, Map<String, Value>) {
        let cmd = Command {
            kind,
            node: self.id.clone(),
            nonce: nonce.to_string(),
        };
        let envelope = SignedEnvelope::sign(&self.key, cmd.to_payload());
        let mut fields = Map::new();
        fields.insert("envelope".into(), envelope.to_json());
        (envelope, fields)
    }

    /// Fetches a nonce over vsock and sends the signed `kind` on the same
    /// connection, as basaltctl does.
    pub fn signed(&self, kind: CommandKind) -> Response {
        let mut vsock = self.vsock();
        let nonce = ok(&self.vm, call(&mut vsock, "status", Map::new()))["nonce"]
            .as_str()
            .expect("status carries a nonce")
            .to_string();
        let (_, fields) = self.command_envelope(kind, &nonce);
        call(&mut vsock, kind.as_str(), fields)
    }

    /// A client on the serial line. QEMU's chardev socket serves one client
    /// at a time: hold at most one of these open.
    pub fn serial(&self) -> Client {
        let sock = self
            .vm
            .vm
            .prov_socket_path()
            .expect("prov socket")
            .display()
            .to_string();
        self.client(&format!("unix:{sock}"))
    }

    pub fn vsock(&self) -> Client {
        let sock = self.vm.vm.vsock_uds_path().expect("vsock").display().to_string();
        self.client(&format!("vsock-uds:{sock}:{AGENT_VSOCK_PORT}"))
    }

    fn client(&self, endpoint: &str) -> Client {
        let ep = Endpoint::parse(endpoint).unwrap_or_else(|e| panic!("{endpoint}: {e}"));
        // The agent may just be (re)starting: retry the connection briefly.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Client::connect(&ep, Duration::from_secs(30)) {
                Ok(c) => return c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("{}: connect {endpoint}: {e}\n{}", self.vm.name, self.vm.console()),
            }
        }
    }

    /// `status` over vsock (a fresh connection each time), as JSON.
    pub fn status(&self) -> Value {
        ok(&self.vm, call(&mut self.vsock(), "status", Map::new()))
    }

    /// Polls status until `pred` holds, or panics after `timeout`.
    pub fn wait_status(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status();
            if pred(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: {what} not reached in {timeout:?}; status:\n{s:#}\nconsole:\n{}",
                    self.vm.name,
                    self.vm.console()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The status entry of one service.
    pub fn service(status: &Value, name: &str) -> Value {
        status["services"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// A service entry's `recent_starts_ms`: its last start times, oldest
    /// first. Panics if the entry has none.
    pub fn recent_starts(service: &Value) -> Vec<f64> {
        service["recent_starts_ms"]
            .as_array()
            .unwrap_or_else(|| panic!("no recent_starts_ms in {service}"))
            .iter()
            .filter_map(Value::as_f64)
            .collect()
    }

    pub fn sign(&self, doc: &Value) -> SignedEnvelope {
        SignedEnvelope::sign(&self.key, serde_json::to_vec(doc).unwrap())
    }

    /// Sends an apply and returns the raw response.
    pub fn apply(&self, client: &mut Client, envelope: &SignedEnvelope) -> Response {
        let mut fields = Map::new();
        fields.insert("envelope".into(), envelope.to_json());
        call(client, "apply", fields)
    }

    /// One command to the remote-hands fixture.
    pub fn hands(&self, command: &str) -> Value {
        let uds = self.vm.vm.vsock_uds_path().expect("vsock");
        let stream = basalt_qemu::vsock_connect(uds, HANDS_VSOCK_PORT, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{}: testhands: {e}\n{}", self.vm.name, self.vm.console()));
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut w = stream.try_clone().unwrap();
        w.write_all(format!("{command}\n").as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("testhands {command:?}: {e}: {line:?}"))
    }

    /// The pids of processes named `comm`, from inside the guest.
    pub fn pids(&self, comm: &str) -> Vec<i64> {
        self.hands(&format!("pids {comm}"))["pids"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_i64)
            .collect()
    }
}

/// Memory of one guest process, from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rss {
    pub pid: i64,
    /// `VmRSS`: resident now.
    pub rss: u64,
    /// `VmHWM`: the peak of `VmRSS`.
    pub hwm: u64,
    /// `RssAnon`: heap, stacks: what a leak grows.
    pub anon: u64,
    /// `RssFile`: pages of the binary (and other files) mapped in.
    pub file: u64,
}

impl Node {
    /// The memory of the one process named `comm`, read inside the guest
    /// by the remote hands.
    pub fn rss(&self, comm: &str) -> Rss {
        let r = self.hands(&format!("rss {comm}"));
        let procs = r["procs"].as_array().cloned().unwrap_or_default();
        assert_eq!(procs.len(), 1, "{}: one {comm} process: {r}", self.vm.name);
        let field = |k: &str| {
            procs[0][k]
                .as_u64()
                .unwrap_or_else(|| panic!("{}: rss {comm}: no {k}: {r}", self.vm.name))
        };
        Rss {
            pid: field("pid") as i64,
            rss: field("rss_kib"),
            hwm: field("hwm_kib"),
            anon: field("anon_kib"),
            file: field("file_kib"),
        }
    }
}

impl Node {
    /// Boots `cfg`, a disk under OVMF ([`VmConfig::uefi`], the UKI's own
    /// command line), as node `id` with a provisioning socket and vsock,
    /// and waits for the agent. Such a node reboots in place
    /// ([`VmConfig::stay_on_reboot`]); [`boot_again`](Self::boot_again)
    /// boots `Node::boot`'s kernel and initramfs, which it has not.
    pub fn boot_uefi(build: &Build, name: &str, cfg: VmConfig, id: &str) -> Node {
        assert!(cfg.uefi.is_some(), "{name}: boot_uefi boots a VmConfig::uefi disk");
        let scratch = Scratch::new(name);
        let cfg = cfg.prov_socket(scratch.path("prov.sock")).vsock(4).uuid(id);
        let vm = TestVm::boot(build, name, cfg);
        vm.expect("basalt-agent: ready", BOOT_TIMEOUT);
        Node {
            vm,
            id: id.to_string(),
            key: key_from(&build.path("keys/config.key")),
            name: name.into(),
            initramfs: std::path::PathBuf::new(),
            cmdline: String::new(),
            boots: 1,
            _scratch: scratch,
        }
    }
}

pub fn call(client: &mut Client, op: &str, fields: Map<String, Value>) -> Response {
    client.call(op, fields).unwrap_or_else(|e| panic!("{op}: {e}"))
}

/// The result of an ok response, or a panic with the error and console.
pub fn ok(vm: &TestVm, r: Response) -> Value {
    match r {
        Response::Ok { result, .. } => result,
        Response::Error { code, message, .. } => panic!("{}: {code}: {message}\n{}", vm.name, vm.console()),
    }
}

/// The error code of an error response, or a panic if it succeeded.
pub fn err_code(r: &Response) -> (String, String) {
    match r {
        Response::Error { code, message, .. } => (code.clone(), message.clone()),
        Response::Ok { result, .. } => panic!("expected an error, got ok: {result}"),
    }
}

/// A service entry for a config.
pub fn service(name: &str, exec: &[&str], after: &[&str], backoff_initial_ms: u64, backoff_max_ms: u64) -> Value {
    json!({
        "name": name,
        "exec": exec,
        "env": {"KUBELET_STANDIN_INTERVAL_MS": "1000"},
        "after": after,
        "restart": {"policy": "always", "backoff_initial_ms": backoff_initial_ms, "backoff_max_ms": backoff_max_ms, "stable_after_ms": 60000},
        "stop_timeout_ms": 5000
    })
}

/// A node config: the remote-hands fixture first, then kubelet after it.
pub fn node_config(node: &str, generation: u64, hostname: &str, kubelet_backoff: (u64, u64)) -> Value {
    json!({
        "kind": "config",
        "version": 1,
        "generation": generation,
        "node": node,
        "hostname": hostname,
        "files": [{"path": "/var/lib/kubelet/config.yaml", "mode": "0644", "contents": "kind: KubeletConfiguration\n"}],
        "services": [
            service("testhands", &[TESTHANDS, "7000"], &[], 100, 1000),
            service("kubelet", &["/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml"], &["testhands"],
                kubelet_backoff.0, kubelet_backoff.1),
        ]
    })
}
