//! `basaltctl upgrade` and `basaltctl rollback`: a signed request that names
//! one bundle by its manifest's SHA-256, then the bundle's parts in pieces
//! from wherever the agent says it stands, so a rerun after a cut resumes.

use crate::cli::{node_and_nonce, ok_result, CliError};
use crate::client::Client;
use basalt_common::b64;
use basalt_common::bundle::{self, BundleManifest, Header, HEADER_LEN};
use basalt_common::command::{Command, CommandKind, UpgradeTerms};
use basalt_common::envelope::SignedEnvelope;
use basalt_common::keys::SigningKey;
use basalt_common::proto::MAX_UPGRADE_DATA;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// What `upgrade` asks for, besides the bundle.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpgradeFlags {
    pub reboot: bool,
    pub allow_downgrade: bool,
    pub health_window_ms: Option<u64>,
}

/// The last piece waits for the agent to read the whole slot back and
/// check it: allow for a large slot under emulation.
const FINAL_TIMEOUT: Duration = Duration::from_secs(300);

/// A bundle file, read as far as its manifest.
pub struct BundleFile {
    file: File,
    header: Header,
    pub manifest_bytes: Vec<u8>,
    pub signature: Vec<u8>,
    /// Unverified: the agent checks the signature; this only sizes the transfer.
    pub manifest: BundleManifest,
}

impl BundleFile {
    pub fn open(path: &Path) -> Result<BundleFile, CliError> {
        let local = |why: String| CliError::Local(format!("{}: {why}", path.display()));
        let file = File::open(path).map_err(|e| local(e.to_string()))?;
        let mut head = [0u8; HEADER_LEN];
        file.read_exact_at(&mut head, 0).map_err(|e| local(e.to_string()))?;
        let header = bundle::read_header(&head).map_err(|e| local(e.to_string()))?;
        let read = |at: u64, len: usize| {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, at)
                .map(|()| buf)
                .map_err(|e| local(e.to_string()))
        };
        let manifest_bytes = read(header.manifest_offset(), header.manifest_len)?;
        let signature = read(header.signature_offset(), header.signature_len)?;
        let manifest = bundle::parse_manifest(&manifest_bytes).map_err(|e| local(e.to_string()))?;
        let len = file.metadata().map_err(|e| local(e.to_string()))?.len();
        let want = header.parts_offset() + manifest.parts_len();
        if len != want {
            return Err(local(format!("{len} bytes, its manifest says {want}")));
        }
        Ok(BundleFile {
            file,
            header,
            manifest_bytes,
            signature,
            manifest,
        })
    }

    /// The SHA-256 of the manifest's bytes: what the signed request names.
    pub fn manifest_digest(&self) -> [u8; 32] {
        sha256(&self.manifest_bytes)
    }

    /// `len` bytes of the parts (the UKI, then the slot) from `offset`.
    pub fn read_parts(&self, offset: u64, len: usize) -> Result<Vec<u8>, CliError> {
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, self.header.parts_offset() + offset)
            .map_err(|e| CliError::Local(format!("reading the bundle: {e}")))?;
        Ok(buf)
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// When the pieces of one [`upgrade`] went and came back (the bench times
/// the transfer with it).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The first `upgrade-data` request about to be sent.
    pub data_started: Instant,
    /// The answer to the last piece but one, and the bundle offset it
    /// acknowledged: every byte before it written, none of the final checks.
    pub before_last: Option<(Instant, u64)>,
    /// The staged answer: the last piece written and the slot checked.
    pub staged: Instant,
    /// Where the transfer started (non-zero when it resumed).
    pub resumed_at: u64,
}

/// Sends the bundle; prints progress to `progress` (JSON lines with `json`).
/// Returns the agent's last answer (the staged slot), and when the pieces
/// went and came back.
pub fn upgrade(
    client: &mut Client,
    key: &SigningKey,
    bundle: &BundleFile,
    flags: UpgradeFlags,
    json: bool,
    progress: &mut dyn Write,
) -> Result<(Value, Timing), CliError> {
    let (node, nonce) = node_and_nonce(client)?;
    let terms = UpgradeTerms {
        bundle: bundle.manifest_digest(),
        reboot: flags.reboot,
        allow_downgrade: flags.allow_downgrade,
        health_window_ms: flags
            .health_window_ms
            .unwrap_or(basalt_common::command::DEFAULT_HEALTH_WINDOW_MS),
    };
    let cmd = Command {
        kind: CommandKind::Upgrade,
        node,
        nonce,
    };
    let envelope = SignedEnvelope::sign(key, cmd.to_upgrade_payload(&terms));
    let begin = json!({
        "envelope": envelope.to_json(),
        "manifest": b64::encode(&bundle.manifest_bytes),
        "signature": b64::encode(&bundle.signature),
    });
    let started = ok_result(client.call("upgrade", crate::cli::obj(begin))?)?;
    let id = started["upgrade"].as_str().unwrap_or_default().to_string();
    let total = bundle.manifest.parts_len();
    let mut next = started["next"].as_u64().unwrap_or(0);
    let resumed_at = next;
    let t0 = Instant::now();
    let mut meter = Meter::new(json, total, resumed_at);
    let mut before_last = None;
    // Pieces in flight: the next is on its way while the agent checks and
    // writes the one before, so neither side waits for the other.
    let mut in_flight: VecDeque<(Value, u64)> = VecDeque::new();
    let mut send_at = next;
    loop {
        while in_flight.len() < WINDOW && send_at < total {
            // Cut at chunk ends, so the node keeps each piece as it came.
            let len = bundle::to_chunk_end(&bundle.manifest, send_at).min(MAX_UPGRADE_DATA as u64) as usize;
            let data = bundle.read_parts(send_at, len)?;
            let fields = json!({"upgrade": id, "offset": send_at});
            let rid = if client.is_serial() {
                let mut fields = crate::cli::obj(fields);
                fields.insert("data".into(), Value::String(b64::encode(&data)));
                client.request("upgrade-data", fields)?
            } else {
                client.request_binary("upgrade-data", crate::cli::obj(fields), &data)?
            };
            send_at += len as u64;
            in_flight.push_back((rid, send_at));
        }
        let Some((rid, end)) = in_flight.pop_front() else {
            return Err(CliError::Agent {
                code: "internal".into(),
                message: "every byte was sent and none of the answers staged the bundle".into(),
            });
        };
        let normal = client.timeout();
        if end == total {
            client.set_timeout(normal.max(FINAL_TIMEOUT));
        }
        let answer = client.response(&rid, "upgrade-data");
        client.set_timeout(normal);
        let result = ok_result(answer?)?;
        if result.get("staged").is_some() {
            meter.show(progress, total, t0.elapsed(), true);
            let timing = Timing {
                data_started: t0,
                before_last,
                staged: Instant::now(),
                resumed_at,
            };
            return Ok((result, timing));
        }
        next = result["next"].as_u64().unwrap_or(total);
        before_last = Some((Instant::now(), next));
        meter.show(progress, next, t0.elapsed(), false);
    }
}

/// `upgrade-data` requests in flight at once.
const WINDOW: usize = 2;

/// Progress: bytes, rate and ETA, on one rewritten line for people or as
/// JSON lines.
struct Meter {
    json: bool,
    total: u64,
    from: u64,
    shown_at: Option<Instant>,
}

impl Meter {
    fn new(json: bool, total: u64, from: u64) -> Self {
        Meter {
            json,
            total,
            from,
            shown_at: None,
        }
    }

    fn show(&mut self, out: &mut dyn Write, at: u64, elapsed: Duration, done: bool) {
        let now = Instant::now();
        if !done && self.shown_at.is_some_and(|t| now - t < Duration::from_millis(250)) {
            return;
        }
        self.shown_at = Some(now);
        let secs = elapsed.as_secs_f64().max(1e-3);
        let rate = (at - self.from) as f64 / secs;
        let eta = if rate > 0.0 {
            (self.total - at) as f64 / rate
        } else {
            0.0
        };
        let mib = |b: f64| b / (1u64 << 20) as f64;
        let _ = if self.json {
            writeln!(
                out,
                "{}",
                json!({"progress": {"bytes": at, "total": self.total, "rate_mib_s": (mib(rate) * 100.0).round() / 100.0,
                                     "eta_s": eta.round(), "done": done}})
            )
        } else {
            write!(
                out,
                "\r{:.1} / {:.1} MiB  {:.2} MiB/s  ETA {:.0} s{}",
                mib(at as f64),
                mib(self.total as f64),
                mib(rate),
                eta,
                if done { "\n" } else { "   " }
            )
        };
        let _ = out.flush();
    }
}

/// `rollback`: signed, with a fresh nonce.
pub fn rollback(client: &mut Client, key: &SigningKey) -> Result<Value, CliError> {
    let (node, nonce) = node_and_nonce(client)?;
    let cmd = Command {
        kind: CommandKind::Rollback,
        node,
        nonce,
    };
    let envelope = SignedEnvelope::sign(key, cmd.to_payload());
    let normal = client.timeout();
    // The agent reads the whole other slot back before it answers.
    client.set_timeout(normal.max(FINAL_TIMEOUT));
    let answer = client.call("rollback", crate::cli::obj(json!({"envelope": envelope.to_json()})));
    client.set_timeout(normal);
    ok_result(answer?)
}
