#![cfg(feature = "host")]
//! Part 9 (issue 13): A/B upgrades on a slot disk booted under OVMF.
//!
//! One node, `basalt.root=ram` (the UKI's default), its disk built by
//! `basalt-mkimage disk` around a padded root image, provisioned with the
//! kubelet stand-in and the remote-hands fixture. Then, alternately (ABBA),
//! `runs` times each:
//! - an upgrade of slot B without reboot, sent in-process with basaltctl's
//!   library over vsock, each run a bundle with its own version (so its own
//!   manifest: the agent starts over instead of resuming). Timed from the
//!   first `upgrade-data` request: to the answer to the last piece but one
//!   (the data phase: every byte but the last piece checked and written, not
//!   yet flushed) and to the staged answer (the last piece, the flush, the
//!   read-back and the dm-verity rebuild);
//! - a raw copy of the same bytes over the same vsock transport into the same
//!   partition (ROOT-B, pwrite in 1 MiB pieces) by the fixture's `recv`,
//!   timed from the first byte sent to its answer after the last write, and
//!   to its answer after the fsync.
//!
//! Then one more bundle with `--reboot` and a short health window, timed on
//! the host from the upgrade call to the staged answer, to the new agent's
//! `ready` line on the console, to `status` reporting the kubelet running on
//! ROOT-B, and to the slot being blessed.

use crate::agent::bench_config;
use crate::cli::Paths;
use crate::error::{file_len, io_err, BenchError};
use crate::images::{self, BuildInputs};
use crate::results::{RawCopy, Rebooted, Transfer, UpgradeRuns};
use basalt_common::proto::Response;
use basalt_qemu::{AccelChoice, Vm, VmConfig, DEFAULT_GUEST_CID};
use basaltctl::client::Client;
use basaltctl::endpoint::Endpoint;
use basaltctl::upgrade::{self, BundleFile, UpgradeFlags};
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The root image's nominal size: the bundle carries it, its tree and the
/// UKI.
pub const IMAGE_MIB: u64 = 64;
/// Room in each slot beyond the image and its tree, so the raw copy (UKI
/// and slot part together) fits ROOT-B too.
const SLOT_SPARE: u64 = 32 << 20;
/// The health window the rebooted upgrade asks for.
pub const HEALTH_WINDOW_MS: u64 = 5_000;
const NODE: &str = "b0013000-0000-4000-8000-00000000be9c";
const APPEND: &str = "quiet basalt.on_error=poweroff basalt.error_delay=0";
const HANDS_PORT: u32 = 7000;
const GUEST_RAM_MIB: u32 = 1024;
/// A boot under OVMF and TCG takes about 15 s here.
const BOOT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(100);

/// Whether the part can run: what `make disk` leaves in `build`.
pub fn check_inputs(build: &Path) -> Result<(), BenchError> {
    let need = [
        "vmlinuz",
        "bin/basalt-init",
        "bin/basalt-testhands",
        "keys/config.key",
        "keys/image.key",
        "rootfs",
    ];
    crate::error::missing(
        need.map(|p| ("upgrade input", build.join(p), "run `make disk`"))
            .to_vec(),
    )
}

fn fail(op: &str) -> impl Fn(String) -> BenchError + '_ {
    move |why| BenchError::Agent {
        op: format!("upgrade part: {op}"),
        why,
    }
}

/// The disk, the bundles and the rootfs they are built from, under `work`.
struct Built {
    disk: PathBuf,
    /// One per run without reboot, then the rebooted one.
    bundles: Vec<PathBuf>,
    image_bytes: u64,
    /// ROOT-B's partition number on the disk.
    root_b: u32,
}

fn build(paths: &Paths, work: &Path, runs: usize, progress: &mut dyn FnMut(&str)) -> Result<Built, BenchError> {
    let t = Instant::now();
    let stage = work.join("rootfs");
    let testhands = paths.build.join("bin/basalt-testhands");
    images::stage_rootfs(
        &paths.build.join("rootfs"),
        (&testhands, basalt_tests::TESTHANDS),
        &stage,
    )?;
    let image = work.join("root.sqsh");
    let unpadded = images::padded_image(&stage, 0, &image)?;
    let image_bytes = images::padded_image(&stage, images::padding_for(IMAGE_MIB << 20, unpadded), &image)?;
    let inputs = BuildInputs::of(paths);
    let disk = work.join("disk.img");
    let base = images::disk_spec(&inputs, &image, &disk)?;
    let spec = basalt_mkimage::disk::DiskSpec {
        handoff: basalt_common::manifest::DEFAULT_HANDOFF.into(),
        slot_size: base.slot_size + SLOT_SPARE,
        append: Some(APPEND.into()),
        ..base
    };
    let report = images::build_disk(&inputs, &spec)?;
    let root_b = report
        .gpt
        .find("ROOT-B")
        .map(|(n, _)| n)
        .ok_or_else(|| BenchError::Parse {
            what: disk.display().to_string(),
            why: "no ROOT-B partition".into(),
        })?;
    let mut bundles = Vec::new();
    for n in 0..=runs {
        let out = work.join(format!("b-{n}.bundle"));
        let version = match n == runs {
            true => "bench-reboot".to_string(),
            false => format!("bench-{}", n + 1),
        };
        images::bundle_for(&inputs, &spec, (&version, 2 + n as u64), &out)?;
        bundles.push(out);
    }
    let bytes = file_len(&bundles[0])?;
    progress(&format!(
        "part 9: built the disk and {} bundles of {:.1} MiB in {:.1} s",
        bundles.len(),
        bytes as f64 / (1u64 << 20) as f64,
        t.elapsed().as_secs_f64()
    ));
    Ok(Built {
        disk,
        bundles,
        image_bytes,
        root_b,
    })
}

/// Builds the disk and bundles, boots the node, measures, stops it.
pub fn measure(
    paths: &Paths,
    dir: &Path,
    runs: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<(UpgradeRuns, AccelChoice), BenchError> {
    let work = dir.join("upgrade");
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(io_err("remove", &work))?;
    }
    std::fs::create_dir_all(&work).map_err(io_err("create", &work))?;
    let built = build(paths, &work, runs, progress)?;
    let log = dir.join("logs/upgrade.log");
    let _ = std::fs::create_dir_all(dir.join("logs"));
    let cfg = VmConfig::uefi(&built.disk)
        .stay_on_reboot()
        .memory_mib(GUEST_RAM_MIB)
        .vsock(DEFAULT_GUEST_CID)
        .uuid(NODE)
        .console_log(&log)
        .work_dir(work.join("vm"))
        .accel_cache(paths.build.join("qemu-accel"));
    let vm = Vm::start(cfg).map_err(|source| BenchError::Vm {
        what: format!("boot {} under OVMF", built.disk.display()),
        source,
    })?;
    let node = Node::new(&vm, paths, &log)?;
    let measured = node.measure(&built, runs, progress);
    let _ = vm.terminate(Duration::from_secs(5));
    let accel = vm.accel().clone();
    for file in built.bundles.iter().chain([&built.disk]) {
        let _ = std::fs::remove_file(file);
    }
    Ok((measured?, accel))
}

struct Node<'a> {
    vm: &'a Vm,
    agent: Endpoint,
    uds: PathBuf,
    key: basalt_common::keys::SigningKey,
    log: PathBuf,
}

impl<'a> Node<'a> {
    fn new(vm: &'a Vm, paths: &Paths, log: &Path) -> Result<Node<'a>, BenchError> {
        let uds = vm.vsock_uds_path().map(Path::to_path_buf).unwrap_or_default();
        let key_path = paths.build.join("keys/config.key");
        let pem = std::fs::read_to_string(&key_path).map_err(io_err("read", &key_path))?;
        let key = basalt_common::keys::SigningKey::from_pkcs8_pem(&pem).map_err(|e| BenchError::Parse {
            what: key_path.display().to_string(),
            why: e.to_string(),
        })?;
        Ok(Node {
            vm,
            agent: Endpoint::VsockUds {
                path: uds.clone(),
                port: crate::agent::VSOCK_PORT,
            },
            uds,
            key,
            log: log.to_path_buf(),
        })
    }

    fn why(&self, what: String) -> String {
        format!("{what} (console: {})", self.log.display())
    }

    fn client(&self, timeout: Duration) -> Result<Client, String> {
        Client::connect(&self.agent, timeout).map_err(|e| e.to_string())
    }

    /// One `status`, on a fresh connection.
    fn status(&self) -> Result<Value, String> {
        let mut c = self.client(Duration::from_secs(2))?;
        match c.call("status", Map::new()).map_err(|e| e.to_string())? {
            Response::Ok { result, .. } => Ok(result),
            Response::Error { code, message, .. } => Err(format!("status: {code}: {message}")),
        }
    }

    /// Polls `status` until `pred` holds; when it first did.
    fn wait(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Result<Instant, BenchError> {
        let start = Instant::now();
        loop {
            match self.status() {
                Ok(s) if pred(&s) => return Ok(Instant::now()),
                Ok(_) | Err(_) if start.elapsed() < timeout => std::thread::sleep(POLL),
                Ok(s) => {
                    return Err(fail(what)(
                        self.why(format!("not reached in {timeout:?}: {}", s["upgrades"])),
                    ))
                }
                Err(e) => return Err(fail(what)(self.why(e))),
            }
            if self.vm.try_exit_status().ok().flatten().is_some() {
                return Err(fail(what)(self.why("the VM exited".into())));
            }
        }
    }

    fn measure(&self, built: &Built, runs: usize, progress: &mut dyn FnMut(&str)) -> Result<UpgradeRuns, BenchError> {
        let booted = self.vm.started_at();
        self.wait("agent ready", BOOT, |_| true)?;
        self.provision()?;
        self.wait("kubelet running on ROOT-A", BOOT, |s| on(s, "ROOT-A") && running(s))?;
        let boot_s = booted.elapsed().as_secs_f64();
        progress(&format!("part 9: node up and provisioned in {boot_s:.1} s"));
        let mut out = UpgradeRuns {
            image_bytes: built.image_bytes,
            health_window_ms: HEALTH_WINDOW_MS,
            root: "ram".into(),
            ..UpgradeRuns::default()
        };
        let target = format!("/dev/vda{}", built.root_b);
        for (run, bundle) in built.bundles[..runs].iter().enumerate() {
            let file = BundleFile::open(bundle).map_err(|e| fail("open the bundle")(e.to_string()))?;
            out.bundle_bytes = file.manifest.parts_len();
            let upgrade_first = run % 2 == 0;
            let mut up = None;
            let mut raw = None;
            for step in [upgrade_first, !upgrade_first] {
                match step {
                    true => up = Some(self.upgrade(&file, UpgradeFlags::default())?.0),
                    false => raw = Some(self.raw_copy(bundle, out.bundle_bytes, &target)?),
                }
            }
            let (Some(up), Some(raw)) = (up, raw) else { continue };
            let mib = |bytes: u64, s: f64| bytes as f64 / (1u64 << 20) as f64 / s;
            progress(&format!(
                "part 9 run {}/{runs}: upgrade {:.1} MiB/s (data phase), {:.1} MiB/s to staged; raw copy {:.1} MiB/s \
                 written, {:.1} MiB/s synced; the agent's split (ms): {:?}",
                run + 1,
                mib(up.data_bytes, up.data_s),
                mib(out.bundle_bytes, up.total_s),
                mib(out.bundle_bytes, raw.written_s),
                mib(out.bundle_bytes, raw.synced_s),
                up.node_ms,
            ));
            out.upgrades.push(up);
            out.raw.push(raw);
        }
        let last = &built.bundles[runs];
        let file = BundleFile::open(last).map_err(|e| fail("open the bundle")(e.to_string()))?;
        let flags = UpgradeFlags {
            reboot: true,
            allow_downgrade: false,
            health_window_ms: Some(HEALTH_WINDOW_MS),
        };
        let from = self.vm.console_len();
        let (_, start, staged) = self.upgrade(&file, flags)?;
        // No vsock connection until the new agent is up: vhost-device-vsock
        // stops answering CONNECT for good when one is attempted while the
        // guest resets its device. The console line is host-timed too.
        let console = |needle: &str, from: usize| {
            let wait = self.vm.wait_for_console_after(needle, from, BOOT);
            wait.map_err(|e| fail("reboot into ROOT-B")(self.why(e.to_string())))
        };
        let at = console("reboot: Restarting system", from)?;
        console("basalt-agent: ready", at)?;
        let ready = Instant::now();
        self.wait("agent on ROOT-B", BOOT, |s| on(s, "ROOT-B"))?;
        let kubelet = self.wait("kubelet running on ROOT-B", BOOT, |s| on(s, "ROOT-B") && running(s))?;
        let window = Duration::from_millis(HEALTH_WINDOW_MS) + BOOT;
        let blessed = self.wait("ROOT-B blessed", window, |s| {
            on(s, "ROOT-B") && s["upgrades"]["last"]["upgrade"]["outcome"] == "blessed"
        })?;
        let s = |a: Instant, b: Instant| b.duration_since(a).as_secs_f64();
        let r = Rebooted {
            transfer_s: s(start, staged),
            reboot_to_agent_s: s(staged, ready),
            agent_to_kubelet_s: s(ready, kubelet),
            kubelet_to_blessed_s: s(kubelet, blessed),
        };
        progress(&format!(
            "part 9: upgrade --reboot → kubelet on ROOT-B in {:.1} s (transfer and checks {:.1}, reboot to agent {:.1}, \
             agent to kubelet {:.1}), blessed {:.1} s later",
            r.transfer_s + r.reboot_to_agent_s + r.agent_to_kubelet_s,
            r.transfer_s,
            r.reboot_to_agent_s,
            r.agent_to_kubelet_s,
            r.kubelet_to_blessed_s
        ));
        out.rebooted.push(r);
        Ok(out)
    }

    /// The bench config plus the remote hands, applied over vsock.
    fn provision(&self) -> Result<(), BenchError> {
        let mut config: Value = serde_json::from_str(&bench_config(NODE)).unwrap_or_default();
        if let Some(services) = config["services"].as_array_mut() {
            let hands = json!({"name": "testhands", "exec": [basalt_tests::TESTHANDS, HANDS_PORT.to_string()]});
            services.insert(0, hands);
        }
        let doc = serde_json::to_vec(&config).unwrap_or_default();
        let envelope = basalt_common::envelope::SignedEnvelope::sign(&self.key, doc);
        let mut fields = Map::new();
        fields.insert("envelope".into(), envelope.to_json());
        let mut c = self.client(Duration::from_secs(30)).map_err(fail("connect"))?;
        match c.call("apply", fields) {
            Ok(Response::Ok { .. }) => Ok(()),
            Ok(Response::Error { code, message, .. }) => Err(fail("apply")(self.why(format!("{code}: {message}")))),
            Err(e) => Err(fail("apply")(self.why(e.to_string()))),
        }
    }

    /// One upgrade; its figures, when the call started and when it was staged.
    fn upgrade(&self, file: &BundleFile, flags: UpgradeFlags) -> Result<(Transfer, Instant, Instant), BenchError> {
        let start = Instant::now();
        let mut c = self.client(Duration::from_secs(60)).map_err(fail("connect"))?;
        let sink = &mut std::io::sink();
        let (staged, t) = upgrade::upgrade(&mut c, &self.key, file, flags, true, sink)
            .map_err(|e| fail("upgrade")(self.why(e.to_string())))?;
        if t.resumed_at != 0 {
            return Err(fail("upgrade")(format!("resumed at byte {}, not 0", t.resumed_at)));
        }
        let (before, data_bytes) = t.before_last.unwrap_or((t.staged, file.manifest.parts_len()));
        let secs = |a: Instant, b: Instant| b.duration_since(a).as_secs_f64();
        let transfer = Transfer {
            begin_s: secs(start, t.data_started),
            data_bytes,
            data_s: secs(t.data_started, before),
            total_s: secs(t.data_started, t.staged),
            node_ms: staged["costs_ms"]
                .as_object()
                .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect())
                .unwrap_or_default(),
        };
        Ok((transfer, start, t.staged))
    }

    /// The bundle's parts, as raw bytes, into `target` through the fixture.
    fn raw_copy(&self, bundle: &Path, bytes: u64, target: &str) -> Result<RawCopy, BenchError> {
        let why = |e: std::io::Error| fail("raw copy")(self.why(e.to_string()));
        let stream = basalt_qemu::vsock_connect(&self.uds, HANDS_PORT, Duration::from_secs(30))
            .map_err(|e| fail("raw copy")(self.why(e.to_string())))?;
        stream.set_read_timeout(Some(Duration::from_secs(300))).map_err(why)?;
        let mut w = stream.try_clone().map_err(why)?;
        let mut answers = BufReader::new(stream);
        let file = std::fs::File::open(bundle).map_err(io_err("open", bundle))?;
        let from = file_len(bundle)? - bytes;
        w.write_all(format!("recv {target} {bytes}\n").as_bytes())
            .map_err(why)?;
        let mut buf = vec![0u8; 1 << 20];
        let start = Instant::now();
        let mut at = 0;
        while at < bytes {
            let n = buf.len().min((bytes - at) as usize);
            file.read_exact_at(&mut buf[..n], from + at)
                .map_err(io_err("read", bundle))?;
            w.write_all(&buf[..n]).map_err(why)?;
            at += n as u64;
        }
        let mut answer = |key: &str| -> Result<(Instant, Value), BenchError> {
            let mut line = String::new();
            answers.read_line(&mut line).map_err(why)?;
            let v: Value = serde_json::from_str(&line).unwrap_or_default();
            match v.get(key) {
                Some(_) => Ok((Instant::now(), v)),
                None => Err(fail("raw copy")(self.why(format!("testhands answered {line:?}")))),
            }
        };
        let (written, first) = answer("received")?;
        let (synced, second) = answer("synced")?;
        Ok(RawCopy {
            written_s: written.duration_since(start).as_secs_f64(),
            synced_s: synced.duration_since(start).as_secs_f64(),
            guest_write_ms: first["write_ms"].as_f64(),
            guest_fsync_ms: second["fsync_ms"].as_f64(),
        })
    }
}

fn on(s: &Value, slot: &str) -> bool {
    s["upgrades"]["booted"] == slot
}

fn running(s: &Value) -> bool {
    let services = s["services"].as_array().into_iter().flatten();
    services
        .filter(|x| x["name"] == "kubelet")
        .any(|x| x["state"] == "running")
}
