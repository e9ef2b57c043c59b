//! The agent's wire protocol: newline-delimited JSON, one request or
//! response per line, over serial, vsock or a unix socket.
//!
//! Framing is enforced before parsing: a line longer than [`MAX_FRAME`] bytes
//! is discarded as it streams in (the reader never holds more than the cap),
//! answered with `frame_too_large`, and the reader resynchronises at the next
//! newline. A line that is not JSON is answered with `malformed_json`; the
//! channel stays usable either way.
//!
//! A request that carries bulk bytes (`upgrade-data`) may instead be one
//! binary frame: the two bytes [`BINARY_MAGIC`] (a NUL never starts a JSON
//! line), the header's and the payload's lengths as big-endian u32, the
//! request's JSON (no newline), then the payload's raw bytes. The lengths
//! together are held to the same cap; a frame over it is skipped by its
//! declared length and answered with `frame_too_large`.
//!
//! Request: `{"id": 7, "op": "status"}` (plus op-specific fields).
//! Response: `{"id": 7, "ok": true, "result": {...}}` or
//! `{"id": 7, "ok": false, "error": {"code": "bad_signature", "message": "..."}}`.
//! See docs/protocol.md for every op and field.

use crate::envelope::SignedEnvelope;
use crate::json::{self, Fields, JsonError};
use crate::text::clip;
use serde_json::{json, Value};

/// The largest request line the agent reads, newline excluded.
pub const MAX_FRAME: usize = 1 << 20;
/// The largest request id string.
pub const MAX_ID_LEN: usize = 64;
/// `logs` returns this many lines when `tail` is not given.
pub const DEFAULT_TAIL: u64 = 100;
/// The most lines one `logs` request may ask for.
pub const MAX_TAIL: u64 = 10_000;
/// The shortest and longest trial (`apply` with `try_ms`).
pub const MIN_TRY_MS: u64 = 1_000;
pub const MAX_TRY_MS: u64 = 3_600_000;

/// The first two bytes of a binary frame.
pub const BINARY_MAGIC: [u8; 2] = [0, b'B'];
/// The magic and the two lengths before a binary frame's header.
pub const BINARY_PREAMBLE: usize = 10;

/// One frame taken off a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, without its newline or a trailing carriage return.
    Line(Vec<u8>),
    /// A binary frame: the request's JSON and the raw bytes it carries.
    Binary { header: Vec<u8>, payload: Vec<u8> },
    /// A line (or binary frame) longer than the cap. Its bytes were dropped
    /// as they arrived; `len` is how many there were.
    TooLarge { len: usize },
}

/// How far into a binary frame the reader is.
#[derive(Debug)]
enum Binary {
    /// The NUL was read; the next byte says whether this is a binary frame.
    Magic,
    /// Reading the two lengths.
    Lengths { got: [u8; 8], n: usize },
    /// Reading the header, then the payload (into the reader's buffer).
    Body {
        header_len: usize,
        header: Vec<u8>,
        payload_len: usize,
    },
    /// Dropping a frame over the cap: `left` of its `len` bytes to go.
    Skip { left: usize, len: usize },
}

/// Splits a byte stream into lines, holding at most `cap` bytes.
///
/// Blank lines are skipped: a client may send a lone newline to flush
/// whatever partial garbage a serial line left behind.
#[derive(Debug)]
pub struct FrameReader {
    cap: usize,
    buf: Vec<u8>,
    /// `Some(n)` while discarding an oversized line of `n` bytes so far.
    discarding: Option<usize>,
    /// `Some` while inside a binary frame.
    binary: Option<Binary>,
}

impl FrameReader {
    pub fn new(cap: usize) -> Self {
        FrameReader {
            cap,
            buf: Vec::new(),
            discarding: None,
            binary: None,
        }
    }

    /// Bytes held for the frame in progress.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.binary_header().map_or(0, Vec::len)
    }

    /// Memory held for the frame in progress (never more than the cap).
    pub fn capacity(&self) -> usize {
        self.buf.capacity() + self.binary_header().map_or(0, Vec::capacity)
    }

    fn binary_header(&self) -> Option<&Vec<u8>> {
        match &self.binary {
            Some(Binary::Body { header, .. }) => Some(header),
            _ => None,
        }
    }

    /// Feeds bytes read from the channel and returns the frames they complete.
    pub fn feed(&mut self, mut input: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        while !input.is_empty() {
            let (used, frame) = self.feed_one(input);
            frames.extend(frame);
            input = &input[used..];
        }
        frames
    }

    /// Feeds bytes up to the end of the first line in `input` (or all of
    /// it, if it holds no newline) and returns how many it took, with the
    /// frame that line completed, if any. A reader that must stop between
    /// two requests (because their answers are piling up) keeps the rest.
    pub fn feed_one(&mut self, input: &[u8]) -> (usize, Option<Frame>) {
        if input.is_empty() {
            return (0, None);
        }
        let at_start = self.buf.is_empty() && self.discarding.is_none();
        if self.binary.is_none() && at_start && input[0] == BINARY_MAGIC[0] {
            self.binary = Some(Binary::Magic);
            return (1, None);
        }
        if let Some(state) = self.binary.take() {
            return self.feed_binary(state, input);
        }
        let newline = input.iter().position(|&b| b == b'\n');
        let chunk = &input[..newline.unwrap_or(input.len())];
        if let Some(seen) = self.discarding.as_mut() {
            *seen += chunk.len();
        } else if self.buf.len() + chunk.len() > self.cap {
            self.discarding = Some(self.buf.len() + chunk.len());
            self.buf = Vec::new();
        } else {
            self.append(chunk);
        }
        let Some(at) = newline else {
            return (input.len(), None);
        };
        if let Some(len) = self.discarding.take() {
            return (at + 1, Some(Frame::TooLarge { len }));
        }
        let mut line = std::mem::take(&mut self.buf);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return (at + 1, None);
        }
        (at + 1, Some(Frame::Line(line)))
    }

    /// One step through a binary frame; `input` is not empty.
    fn feed_binary(&mut self, state: Binary, input: &[u8]) -> (usize, Option<Frame>) {
        match state {
            Binary::Magic if input[0] == BINARY_MAGIC[1] => {
                self.binary = Some(Binary::Lengths { got: [0; 8], n: 0 });
                (1, None)
            }
            // Not a binary frame: the NUL begins an ordinary (malformed) line.
            Binary::Magic => {
                if self.cap == 0 {
                    self.discarding = Some(1);
                } else {
                    self.append(&[BINARY_MAGIC[0]]);
                }
                (0, None)
            }
            Binary::Lengths { mut got, n } => {
                let take = (8 - n).min(input.len());
                got[n..n + take].copy_from_slice(&input[..take]);
                if n + take < 8 {
                    self.binary = Some(Binary::Lengths { got, n: n + take });
                    return (take, None);
                }
                let len = |b: &[u8]| {
                    b.iter()
                        .fold(0usize, |acc, &x| acc.saturating_mul(256).saturating_add(x.into()))
                };
                let (header_len, payload_len) = (len(&got[..4]), len(&got[4..]));
                let total = header_len.saturating_add(payload_len);
                if total > self.cap {
                    self.binary = Some(Binary::Skip {
                        left: total,
                        len: total,
                    });
                    return (take, None);
                }
                self.buf = Vec::with_capacity(payload_len);
                let state = Binary::Body {
                    header_len,
                    header: Vec::with_capacity(header_len),
                    payload_len,
                };
                (take, self.binary_done(state))
            }
            Binary::Body {
                header_len,
                mut header,
                payload_len,
            } => {
                let take = if header.len() < header_len {
                    let take = (header_len - header.len()).min(input.len());
                    header.extend_from_slice(&input[..take]);
                    take
                } else {
                    let take = (payload_len - self.buf.len()).min(input.len());
                    self.buf.extend_from_slice(&input[..take]);
                    take
                };
                let state = Binary::Body {
                    header_len,
                    header,
                    payload_len,
                };
                (take, self.binary_done(state))
            }
            Binary::Skip { left, len } => {
                let take = left.min(input.len());
                if take == left {
                    return (take, Some(Frame::TooLarge { len }));
                }
                self.binary = Some(Binary::Skip { left: left - take, len });
                (take, None)
            }
        }
    }

    /// The frame, if `state` holds all of its bytes; else `state` is kept.
    fn binary_done(&mut self, state: Binary) -> Option<Frame> {
        match state {
            Binary::Body {
                header_len,
                header,
                payload_len,
            } if header.len() == header_len && self.buf.len() == payload_len => Some(Frame::Binary {
                header,
                payload: std::mem::take(&mut self.buf),
            }),
            other => {
                self.binary = Some(other);
                None
            }
        }
    }

    /// True while a frame has started but not ended (including an oversized
    /// one being discarded).
    pub fn in_line(&self) -> bool {
        !self.buf.is_empty() || self.discarding.is_some() || self.binary.is_some()
    }

    /// Drops the line in progress and returns how many bytes it had. For a
    /// channel that cannot tell its client left (a serial line): half a
    /// request from one client must not swallow the next client's first.
    pub fn abandon(&mut self) -> usize {
        let n = match self.binary.take() {
            Some(Binary::Skip { left, len }) => len - left,
            Some(Binary::Body { header, .. }) => BINARY_PREAMBLE + header.len() + self.buf.len(),
            Some(Binary::Lengths { n, .. }) => 2 + n,
            Some(Binary::Magic) => 1,
            None => self.discarding.take().unwrap_or(self.buf.len()),
        };
        self.discarding = None;
        self.buf = Vec::new();
        n
    }

    /// Appends without letting the buffer's allocation grow past the cap
    /// (plain `extend` may double it).
    fn append(&mut self, chunk: &[u8]) {
        let need = self.buf.len() + chunk.len();
        if need > self.buf.capacity() {
            let target = need.max(self.buf.capacity() * 2).min(self.cap).max(need);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(chunk);
    }
}

/// The stable error codes. Clients may match on these strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// A request line exceeded the frame cap; it was discarded unread.
    FrameTooLarge,
    /// A request line is not JSON (or not UTF-8).
    MalformedJson,
    /// JSON, but not a well-formed request: missing id, wrong field type, unknown field.
    BadRequest,
    /// The `op` is not one the agent knows.
    UnknownOp,
    /// The signed envelope is malformed (fields, base64, lengths).
    BadEnvelope,
    /// The envelope names a key id that is not trusted on this node.
    UnknownKey,
    /// The signature does not verify with the trusted key it names.
    BadSignature,
    /// The signed payload is of another kind (a command sent as a config, ...).
    WrongKind,
    /// The signed config fails validation; the message names the JSON path.
    InvalidConfig,
    /// The signed payload is bound to another node.
    WrongNode,
    /// The config's generation is not above the applied one.
    StaleGeneration,
    /// The command's nonce was not issued by this agent, already used, or expired.
    BadNonce,
    /// This node has no identity, so nothing can be bound to it.
    NoNodeIdentity,
    /// The config was valid but applying it failed (I/O error).
    ApplyFailed,
    /// The log source does not exist.
    NotFound,
    /// The node is powering off or rebooting.
    ShuttingDown,
    /// A `confirm` arrived with no config on trial.
    NoTrial,
    /// An update bundle failed a check: its signature, its manifest, a
    /// chunk's SHA-256, a part's, or the slot's own signed manifest.
    BadBundle,
    /// The bundle is below the node's image version floor, and the signed
    /// request does not allow a downgrade.
    Downgrade,
    /// This node cannot take that bundle: not booted from a disk slot, another
    /// architecture, the booted slot as target, or too big for the disk.
    NotUpgradable,
    /// `upgrade-data` for no upgrade in progress, or at the wrong offset.
    NoUpgrade,
    /// `rollback` with nothing to roll back to: the other slot is empty,
    /// marked bad, or fails verification.
    RollbackRefused,
    /// An unexpected failure inside the agent.
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 23] = [
        ErrorCode::FrameTooLarge,
        ErrorCode::MalformedJson,
        ErrorCode::BadRequest,
        ErrorCode::UnknownOp,
        ErrorCode::BadEnvelope,
        ErrorCode::UnknownKey,
        ErrorCode::BadSignature,
        ErrorCode::WrongKind,
        ErrorCode::InvalidConfig,
        ErrorCode::WrongNode,
        ErrorCode::StaleGeneration,
        ErrorCode::BadNonce,
        ErrorCode::NoNodeIdentity,
        ErrorCode::ApplyFailed,
        ErrorCode::NotFound,
        ErrorCode::ShuttingDown,
        ErrorCode::NoTrial,
        ErrorCode::BadBundle,
        ErrorCode::Downgrade,
        ErrorCode::NotUpgradable,
        ErrorCode::NoUpgrade,
        ErrorCode::RollbackRefused,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::BadEnvelope => "bad_envelope",
            ErrorCode::UnknownKey => "unknown_key",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::WrongKind => "wrong_kind",
            ErrorCode::InvalidConfig => "invalid_config",
            ErrorCode::WrongNode => "wrong_node",
            ErrorCode::StaleGeneration => "stale_generation",
            ErrorCode::BadNonce => "bad_nonce",
            ErrorCode::NoNodeIdentity => "no_node_identity",
            ErrorCode::ApplyFailed => "apply_failed",
            ErrorCode::NotFound => "not_found",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::NoTrial => "no_trial",
            ErrorCode::BadBundle => "bad_bundle",
            ErrorCode::Downgrade => "downgrade",
            ErrorCode::NotUpgradable => "not_upgradable",
            ErrorCode::NoUpgrade => "no_upgrade",
            ErrorCode::RollbackRefused => "rollback_refused",
            ErrorCode::Internal => "internal",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Status,
    /// A log's last `tail` lines, or everything after the cursor `since`.
    Logs {
        source: String,
        tail: u64,
        since: Option<u64>,
    },
    /// With `try_ms`, a trial: nothing is persisted, and the node goes
    /// back to the persisted config after that long unless confirmed.
    Apply {
        envelope: SignedEnvelope,
        try_ms: Option<u64>,
    },
    /// Makes the config on trial the persisted one (a signed command).
    Confirm {
        envelope: SignedEnvelope,
    },
    Reboot {
        envelope: SignedEnvelope,
    },
    Poweroff {
        envelope: SignedEnvelope,
    },
    /// Stops the services, empties /var and reboots (a signed command).
    ResetVar {
        envelope: SignedEnvelope,
    },
    /// Starts (or resumes) installing an update bundle: a signed command
    /// naming the bundle, and the bundle's manifest and its signature.
    Upgrade {
        envelope: SignedEnvelope,
        manifest: Vec<u8>,
        signature: Vec<u8>,
    },
    /// The next bytes of the bundle's parts (UKI, then slot), at `offset`.
    UpgradeData {
        upgrade: String,
        offset: u64,
        data: Vec<u8>,
    },
    /// Boots the other slot (a signed command).
    Rollback {
        envelope: SignedEnvelope,
    },
}

/// The most bundle bytes one `upgrade-data` request carries: 512 KiB, whose
/// base64 (683 KiB) leaves room in a 1 MiB frame.
pub const MAX_UPGRADE_DATA: usize = 512 * 1024;

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Status => "status",
            Op::Logs { .. } => "logs",
            Op::Apply { .. } => "apply",
            Op::Confirm { .. } => "confirm",
            Op::Reboot { .. } => "reboot",
            Op::Poweroff { .. } => "poweroff",
            Op::ResetVar { .. } => "reset-var",
            Op::Upgrade { .. } => "upgrade",
            Op::UpgradeData { .. } => "upgrade-data",
            Op::Rollback { .. } => "rollback",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Echoed in the response: a non-negative integer or a short string.
    pub id: Value,
    pub op: Op,
}

/// A request that could not be read, with the id to answer it under (null
/// when the id itself could not be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub id: Value,
    pub code: ErrorCode,
    pub message: String,
}

impl RequestError {
    fn new(id: &Value, code: ErrorCode, message: impl Into<String>) -> Self {
        RequestError {
            id: id.clone(),
            code,
            message: message.into(),
        }
    }
}

/// Reads one request line.
pub fn parse_request(line: &[u8]) -> Result<Request, RequestError> {
    parse_request_with(line, None)
}

/// Reads a binary frame's request: its header is the request's JSON, and
/// the payload is the data of an `upgrade-data` request (which then has no
/// `data` field). No other op carries a payload.
pub fn parse_binary_request(header: &[u8], payload: Vec<u8>) -> Result<Request, RequestError> {
    parse_request_with(header, Some(payload))
}

fn parse_request_with(line: &[u8], mut payload: Option<Vec<u8>>) -> Result<Request, RequestError> {
    let null = Value::Null;
    let doc =
        json::parse_strict(line).map_err(|e| RequestError::new(&null, ErrorCode::MalformedJson, e.to_string()))?;
    let bad = |id: &Value, e: JsonError| RequestError::new(id, ErrorCode::BadRequest, e.to_string());
    let obj = doc
        .as_object()
        .ok_or_else(|| bad(&null, JsonError::new("$", "a request must be a JSON object")))?;
    let id = match obj.get("id") {
        None => return Err(bad(&null, JsonError::new("$.id", "missing field"))),
        Some(v @ Value::Number(n)) if n.is_u64() => v.clone(),
        Some(v @ Value::String(s)) if !s.is_empty() && s.len() <= MAX_ID_LEN => v.clone(),
        Some(_) => {
            let what = format!("expected a non-negative integer or a string of 1 to {MAX_ID_LEN} bytes");
            return Err(bad(&null, JsonError::new("$.id", what)));
        }
    };
    let op_name = match obj.get("op") {
        None => return Err(bad(&id, JsonError::new("$.op", "missing field"))),
        Some(v) => json::as_str(v, "$.op").map_err(|e| bad(&id, e))?,
    };
    let fields = |extra: &[&str]| {
        let mut allowed = vec!["id", "op"];
        allowed.extend_from_slice(extra);
        Fields::new(&doc, "$", &allowed).map_err(|e| bad(&id, e))
    };
    let envelope = |f: &Fields| {
        let v = f.req("envelope").map_err(|e| bad(&id, e))?;
        SignedEnvelope::from_json(v, &f.path_of("envelope"))
            .map_err(|e| RequestError::new(&id, ErrorCode::BadEnvelope, e.to_string()))
    };
    let op = match op_name {
        "status" => {
            fields(&[])?;
            Op::Status
        }
        "logs" => {
            let f = fields(&["source", "tail", "since"])?;
            let source = f.str("source").map_err(|e| bad(&id, e))?.to_string();
            let tail = f.opt_u64("tail").map_err(|e| bad(&id, e))?;
            let since = f.opt_u64("since").map_err(|e| bad(&id, e))?;
            if tail.is_some() && since.is_some() {
                let e = JsonError::new("$.since", "give either tail or since, not both");
                return Err(bad(&id, e));
            }
            let tail = tail.unwrap_or(DEFAULT_TAIL);
            if tail > MAX_TAIL {
                let e = JsonError::new("$.tail", format!("at most {MAX_TAIL} lines"));
                return Err(bad(&id, e));
            }
            Op::Logs { source, tail, since }
        }
        "apply" => {
            let f = fields(&["envelope", "try_ms"])?;
            let try_ms = f.opt_u64("try_ms").map_err(|e| bad(&id, e))?;
            if let Some(ms) = try_ms {
                if !(MIN_TRY_MS..=MAX_TRY_MS).contains(&ms) {
                    let what = format!("a trial lasts {MIN_TRY_MS} to {MAX_TRY_MS} ms");
                    return Err(bad(&id, JsonError::new("$.try_ms", what)));
                }
            }
            Op::Apply {
                envelope: envelope(&f)?,
                try_ms,
            }
        }
        "confirm" => Op::Confirm {
            envelope: envelope(&fields(&["envelope"])?)?,
        },
        "reboot" => Op::Reboot {
            envelope: envelope(&fields(&["envelope"])?)?,
        },
        "poweroff" => Op::Poweroff {
            envelope: envelope(&fields(&["envelope"])?)?,
        },
        "reset-var" => Op::ResetVar {
            envelope: envelope(&fields(&["envelope"])?)?,
        },
        "rollback" => Op::Rollback {
            envelope: envelope(&fields(&["envelope"])?)?,
        },
        "upgrade" => {
            let f = fields(&["envelope", "manifest", "signature"])?;
            let bytes = |key: &str| {
                crate::b64::decode(f.str(key).map_err(|e| bad(&id, e))?)
                    .map_err(|e| bad(&id, JsonError::new(f.path_of(key), e.to_string())))
            };
            Op::Upgrade {
                envelope: envelope(&f)?,
                manifest: bytes("manifest")?,
                signature: bytes("signature")?,
            }
        }
        "upgrade-data" => {
            let f = fields(&["upgrade", "offset", "data"])?;
            let data = match payload.take() {
                Some(_) if f.opt("data").is_some() => {
                    let what = "not allowed with a binary payload, which carries the data";
                    return Err(bad(&id, JsonError::new("$.data", what)));
                }
                Some(p) => p,
                None => crate::b64::decode(f.str("data").map_err(|e| bad(&id, e))?)
                    .map_err(|e| bad(&id, JsonError::new("$.data", e.to_string())))?,
            };
            if data.is_empty() || data.len() > MAX_UPGRADE_DATA {
                let what = format!("1 to {MAX_UPGRADE_DATA} bytes of bundle per request");
                return Err(bad(&id, JsonError::new("$.data", what)));
            }
            Op::UpgradeData {
                upgrade: clip(f.str("upgrade").map_err(|e| bad(&id, e))?).to_string(),
                offset: f.u64("offset").map_err(|e| bad(&id, e))?,
                data,
            }
        }
        other => {
            let message = format!(
                "unknown op {:?} (known: status, logs, apply, confirm, reboot, poweroff, reset-var, upgrade, upgrade-data, rollback)",
                clip(other)
            );
            return Err(RequestError::new(&id, ErrorCode::UnknownOp, message));
        }
    };
    if payload.is_some() {
        let what = format!("{op_name} carries no binary payload (only upgrade-data does)");
        return Err(bad(&id, JsonError::new("$", what)));
    }
    Ok(Request { id, op })
}

/// Builds a request line (newline included), for clients.
pub fn request_line(id: &Value, op: &str, mut fields: serde_json::Map<String, Value>) -> Vec<u8> {
    fields.insert("id".into(), id.clone());
    fields.insert("op".into(), Value::String(op.into()));
    line(&Value::Object(fields))
}

/// A binary request frame (see the module docs): the request's JSON, then
/// `payload` raw.
pub fn binary_request(id: &Value, op: &str, fields: serde_json::Map<String, Value>, payload: &[u8]) -> Vec<u8> {
    let mut header = request_line(id, op, fields);
    header.pop();
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
    let mut frame = Vec::with_capacity(BINARY_PREAMBLE + header.len() + payload.len());
    frame.extend_from_slice(&BINARY_MAGIC);
    frame.extend_from_slice(&len(header.len()));
    frame.extend_from_slice(&len(payload.len()));
    frame.extend_from_slice(&header);
    frame.extend_from_slice(payload);
    frame
}

/// A success response line.
pub fn ok_line(id: &Value, result: Value) -> Vec<u8> {
    line(&json!({"id": id, "ok": true, "result": result}))
}

/// An error response line. The message is kept to one line.
pub fn error_line(id: &Value, code: ErrorCode, message: &str) -> Vec<u8> {
    let message = one_line(message);
    line(&json!({"id": id, "ok": false, "error": {"code": code.as_str(), "message": message}}))
}

fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn line(v: &Value) -> Vec<u8> {
    // Serialising a Value cannot fail: every key is a string.
    let mut out = serde_json::to_vec(v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// A response as a client reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Ok {
        id: Value,
        result: Value,
    },
    /// `code` is kept as sent, so a newer agent's codes still reach the user.
    Error {
        id: Value,
        code: String,
        message: String,
    },
}

impl Response {
    pub fn id(&self) -> &Value {
        match self {
            Response::Ok { id, .. } | Response::Error { id, .. } => id,
        }
    }
}

/// Reads one response line.
pub fn parse_response(line: &[u8]) -> Result<Response, JsonError> {
    let doc = json::parse_strict(line)?;
    let f = Fields::new(&doc, "$", &["id", "ok", "result", "error"])?;
    let id = f.req("id")?.clone();
    match f.bool("ok")? {
        Some(true) => Ok(Response::Ok {
            id,
            result: f.req("result")?.clone(),
        }),
        Some(false) => {
            let e = Fields::new(f.req("error")?, &f.path_of("error"), &["code", "message"])?;
            Ok(Response::Error {
                id,
                code: e.str("code")?.into(),
                message: e.str("message")?.into(),
            })
        }
        None => Err(JsonError::new("$.ok", "missing field")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abandon_drops_the_partial_line_only() {
        let mut r = FrameReader::new(8);
        assert!(r.feed(b"{\"half").is_empty());
        assert!(r.in_line());
        assert_eq!(r.abandon(), 6);
        assert!(!r.in_line());
        assert_eq!(r.feed(b"ok\n"), vec![Frame::Line(b"ok".to_vec())]);
        // An oversized line being discarded is abandoned too, and counted whole.
        assert!(r.feed(b"0123456789abc").is_empty());
        assert_eq!(r.abandon(), 13);
        assert_eq!(r.feed(b"x\n"), vec![Frame::Line(b"x".to_vec())]);
        assert_eq!(r.abandon(), 0);
    }
    use crate::keys::SigningKey;

    fn lines(frames: &[Frame]) -> Vec<String> {
        frames
            .iter()
            .map(|f| match f {
                Frame::Line(l) => String::from_utf8_lossy(l).into_owned(),
                Frame::TooLarge { len } => format!("<too large: {len}>"),
                Frame::Binary { header, payload } => format!("<binary: {header:?} {payload:?}>"),
            })
            .collect()
    }

    /// Chunks fed in order, the cap, and the frames expected.
    type FrameCase<'a> = (&'a [&'a [u8]], usize, &'a [&'a str]);

    #[test]
    fn frames_table() {
        let cases: &[FrameCase] = &[
            (&[b"a\nb\n"], 8, &["a", "b"]),
            (&[b"ab", b"c\n"], 8, &["abc"]),
            (&[b"abc\r\n"], 8, &["abc"]),
            (&[b"\n\n  \r\n", b"x\n"], 8, &["x"]),
            (&[b"12345678\n"], 8, &["12345678"]),
            (&[b"123456789\n", b"ok\n"], 8, &["<too large: 9>", "ok"]),
            (&[b"1234", b"5678", b"9abc", b"\nok\n"], 8, &["<too large: 12>", "ok"]),
            (&[b"123456789", b"xxxxxxxx", b"x\nok"], 8, &["<too large: 18>"]),
            (&[b"123456789abc\n12\n"], 8, &["<too large: 12>", "12"]),
            (&[b"\xff\xfe\n"], 8, &["\u{fffd}\u{fffd}"]),
            (&[b"no newline yet"], 64, &[]),
        ];
        for (chunks, cap, want) in cases {
            let mut r = FrameReader::new(*cap);
            let mut got = Vec::new();
            for c in *chunks {
                got.extend(r.feed(c));
                assert!(r.capacity() <= *cap, "{chunks:?}: capacity {}", r.capacity());
            }
            assert_eq!(lines(&got), *want, "{chunks:?}");
        }
    }

    fn binary(header: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut f = BINARY_MAGIC.to_vec();
        f.extend_from_slice(&(header.len() as u32).to_be_bytes());
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(header);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn binary_frames_table() {
        let frame = |h: &[u8], p: &[u8]| Frame::Binary {
            header: h.to_vec(),
            payload: p.to_vec(),
        };
        let line = |l: &[u8]| Frame::Line(l.to_vec());
        let mut over = binary(b"{}", &[b'\n'; 20]);
        over.extend_from_slice(b"ok\n");
        let mut two = binary(b"{\"a\":1}", b"\n\0B\n");
        two.extend_from_slice(&binary(b"h", b""));
        two.extend_from_slice(b"\nnext\n");
        let cases: Vec<(&str, Vec<u8>, usize, Vec<Frame>)> = vec![
            (
                "one frame",
                binary(b"{}", b"raw\n\0bytes"),
                64,
                vec![frame(b"{}", b"raw\n\0bytes")],
            ),
            (
                "two frames, a blank line and a line",
                two,
                64,
                vec![frame(b"{\"a\":1}", b"\n\0B\n"), frame(b"h", b""), line(b"next")],
            ),
            ("empty header and payload", binary(b"", b""), 64, vec![frame(b"", b"")]),
            (
                "over the cap: skipped by its length",
                over,
                16,
                vec![Frame::TooLarge { len: 22 }, line(b"ok")],
            ),
            (
                "a NUL without the magic starts a line",
                b"\0x\n{}\n".to_vec(),
                64,
                vec![line(b"\0x"), line(b"{}")],
            ),
            ("a NUL then a newline", b"\0\n".to_vec(), 64, vec![line(b"\0")]),
            (
                "a NUL inside a line is part of it",
                b"a\0B\n".to_vec(),
                64,
                vec![line(b"a\0B")],
            ),
            ("unfinished", binary(b"{}", b"12345")[..12].to_vec(), 64, vec![]),
        ];
        for (what, stream, cap, want) in cases {
            let mut whole = FrameReader::new(cap);
            assert_eq!(whole.feed(&stream), want, "{what}");
            let mut bytewise = FrameReader::new(cap);
            let mut got = Vec::new();
            for b in &stream {
                got.extend(bytewise.feed(std::slice::from_ref(b)));
                assert!(bytewise.capacity() <= cap, "{what}: capacity {}", bytewise.capacity());
            }
            assert_eq!(got, want, "{what}, a byte at a time");
        }
    }

    #[test]
    fn abandon_drops_a_partial_binary_frame() {
        let mut r = FrameReader::new(64);
        let f = binary(b"{}", b"12345");
        assert!(r.feed(&f[..14]).is_empty());
        assert!(r.in_line());
        assert_eq!(r.abandon(), 14);
        assert!(!r.in_line());
        assert_eq!(r.feed(b"ok\n"), vec![Frame::Line(b"ok".to_vec())]);
    }

    #[test]
    fn binary_requests_carry_upgrade_data_only() {
        let header = |fields: Value| {
            let Value::Object(m) = fields else { unreachable!() };
            let mut l = request_line(&json!(1), m["op"].as_str().unwrap(), m.clone());
            l.pop();
            l
        };
        let ok = header(json!({"op": "upgrade-data", "upgrade": "u1", "offset": 5}));
        let req = parse_binary_request(&ok, b"\0\n raw".to_vec()).unwrap();
        assert_eq!(
            req.op,
            Op::UpgradeData {
                upgrade: "u1".into(),
                offset: 5,
                data: b"\0\n raw".to_vec()
            }
        );
        let refused: &[(Value, Vec<u8>, &str)] = &[
            (
                json!({"op": "upgrade-data", "upgrade": "u1", "offset": 5, "data": "AA=="}),
                b"x".to_vec(),
                "$.data: not allowed",
            ),
            (
                json!({"op": "upgrade-data", "upgrade": "u1", "offset": 5}),
                Vec::new(),
                "$.data: 1 to",
            ),
            (
                json!({"op": "upgrade-data", "upgrade": "u1", "offset": 5}),
                vec![0; MAX_UPGRADE_DATA + 1],
                "$.data: 1 to",
            ),
            (
                json!({"op": "status"}),
                b"x".to_vec(),
                "$: status carries no binary payload",
            ),
        ];
        for (fields, payload, want) in refused {
            let e = parse_binary_request(&header(fields.clone()), payload.clone()).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{fields}");
            assert!(e.message.starts_with(want), "{fields}: {}", e.message);
        }
        // What a client builds reads back as the same frame and request.
        let mut fields = serde_json::Map::new();
        fields.insert("upgrade".into(), json!("u1"));
        fields.insert("offset".into(), json!(5));
        let bytes = binary_request(&json!(1), "upgrade-data", fields, b"\0\n raw");
        let frames = FrameReader::new(MAX_FRAME).feed(&bytes);
        let [Frame::Binary { header, payload }] = &frames[..] else {
            panic!("{frames:?}")
        };
        assert_eq!(parse_binary_request(header, payload.clone()).unwrap(), req);
    }

    #[test]
    fn oversize_never_allocates_past_the_cap() {
        let cap = 1000;
        let mut r = FrameReader::new(cap);
        for _ in 0..500 {
            assert!(r.feed(&[b'x'; 37]).is_empty());
            assert!(r.capacity() <= cap);
        }
        assert_eq!(
            r.feed(b"\n{}\n"),
            [Frame::TooLarge { len: 18_500 }, Frame::Line(b"{}".to_vec())]
        );
        // Byte at a time up to exactly the cap still works.
        for _ in 0..cap {
            r.feed(b"y");
            assert!(r.capacity() <= cap);
        }
        assert_eq!(r.feed(b"\n"), [Frame::Line(vec![b'y'; cap])]);
        assert_eq!(r.buffered(), 0);
    }

    fn envelope_json() -> (SignedEnvelope, String) {
        let key = SigningKey::from_seed(&[7; 32]).unwrap();
        let env = SignedEnvelope::sign(&key, b"{}".to_vec());
        let text = serde_json::to_string(&env.to_json()).unwrap();
        (env, text)
    }

    #[test]
    fn requests_parse() {
        let (env, env_text) = envelope_json();
        let cases: Vec<(String, Value, Op)> = vec![
            (r#"{"id":1,"op":"status"}"#.into(), json!(1), Op::Status),
            (
                r#"{"op":"logs","id":"a","source":"kubelet"}"#.into(),
                json!("a"),
                Op::Logs {
                    source: "kubelet".into(),
                    tail: DEFAULT_TAIL,
                    since: None,
                },
            ),
            (
                r#"{"id":2,"op":"logs","source":"init","tail":5}"#.into(),
                json!(2),
                Op::Logs {
                    source: "init".into(),
                    tail: 5,
                    since: None,
                },
            ),
            (
                r#"{"id":2,"op":"logs","source":"init","since":900}"#.into(),
                json!(2),
                Op::Logs {
                    source: "init".into(),
                    tail: DEFAULT_TAIL,
                    since: Some(900),
                },
            ),
            (
                format!(r#"{{"id":3,"op":"apply","envelope":{env_text}}}"#),
                json!(3),
                Op::Apply {
                    envelope: env.clone(),
                    try_ms: None,
                },
            ),
            (
                format!(r#"{{"id":4,"op":"reboot","envelope":{env_text}}}"#),
                json!(4),
                Op::Reboot { envelope: env.clone() },
            ),
            (
                format!(r#"{{"id":5,"op":"poweroff","envelope":{env_text}}}"#),
                json!(5),
                Op::Poweroff { envelope: env.clone() },
            ),
        ];
        for (text, id, op) in cases {
            assert_eq!(parse_request(text.as_bytes()), Ok(Request { id, op }), "{text}");
        }
    }

    #[test]
    fn trials_are_bounded() {
        let (_, env_text) = envelope_json();
        let line = |ms: u64| format!(r#"{{"id":1,"op":"apply","envelope":{env_text},"try_ms":{ms}}}"#);
        for (ms, ok) in [(999, false), (1_000, true), (3_600_000, true), (3_600_001, false)] {
            match parse_request(line(ms).as_bytes()) {
                Ok(Request {
                    op: Op::Apply { try_ms, .. },
                    ..
                }) => assert!(ok && try_ms == Some(ms), "{ms}"),
                Err(e) => assert!(!ok && e.message.contains("$.try_ms"), "{ms}: {}", e.message),
                other => panic!("{ms}: {other:?}"),
            }
        }
    }

    /// Client text comes back clipped: a 200 KB op name, key, duplicate key or
    /// log source never makes a 200 KB message.
    #[test]
    fn echoed_client_text_is_clipped() {
        let big = "o".repeat(200_000);
        let cases = [
            (format!(r#"{{"id":1,"op":"{big}"}}"#), ErrorCode::UnknownOp),
            (format!(r#"{{"id":1,"op":"status","{big}":1}}"#), ErrorCode::BadRequest),
            (
                format!(r#"{{"id":1,"op":"status","k{big}!":1}}"#),
                ErrorCode::BadRequest,
            ),
            (
                format!(r#"{{"id":1,"op":"status","{big}":1,"{big}":2}}"#),
                ErrorCode::MalformedJson,
            ),
        ];
        for (text, code) in cases {
            let e = parse_request(text.as_bytes()).unwrap_err();
            assert_eq!(e.code, code, "{}", e.message);
            assert!(
                e.message.len() < 400,
                "{} bytes: {}",
                e.message.len(),
                &e.message[..400]
            );
            assert!(e.message.contains("…(+"), "{}", e.message);
        }
    }

    #[test]
    fn request_errors() {
        let (_, env_text) = envelope_json();
        let long_id = "x".repeat(MAX_ID_LEN + 1);
        let cases: Vec<(String, Value, ErrorCode, &str)> = vec![
            ("{".into(), Value::Null, ErrorCode::MalformedJson, "$: malformed JSON"),
            (
                "\u{1}garbage".into(),
                Value::Null,
                ErrorCode::MalformedJson,
                "malformed JSON",
            ),
            (
                r#"{"id":1,"id":2,"op":"status"}"#.into(),
                Value::Null,
                ErrorCode::MalformedJson,
                "duplicate key",
            ),
            (
                "[1]".into(),
                Value::Null,
                ErrorCode::BadRequest,
                "$: a request must be a JSON object",
            ),
            (
                r#"{"op":"status"}"#.into(),
                Value::Null,
                ErrorCode::BadRequest,
                "$.id: missing field",
            ),
            (
                r#"{"id":-1,"op":"status"}"#.into(),
                Value::Null,
                ErrorCode::BadRequest,
                "$.id: expected",
            ),
            (
                format!(r#"{{"id":"{long_id}","op":"status"}}"#),
                Value::Null,
                ErrorCode::BadRequest,
                "$.id",
            ),
            (
                r#"{"id":1}"#.into(),
                json!(1),
                ErrorCode::BadRequest,
                "$.op: missing field",
            ),
            (
                r#"{"id":1,"op":3}"#.into(),
                json!(1),
                ErrorCode::BadRequest,
                "$.op: expected a string",
            ),
            (
                r#"{"id":1,"op":"format"}"#.into(),
                json!(1),
                ErrorCode::UnknownOp,
                "unknown op \"format\"",
            ),
            (
                r#"{"id":1,"op":"status","x":1}"#.into(),
                json!(1),
                ErrorCode::BadRequest,
                "$.x: unknown field",
            ),
            (
                r#"{"id":1,"op":"logs"}"#.into(),
                json!(1),
                ErrorCode::BadRequest,
                "$.source: missing field",
            ),
            (
                r#"{"id":1,"op":"logs","source":"a","tail":1,"since":2}"#.into(),
                json!(1),
                ErrorCode::BadRequest,
                "$.since: give either",
            ),
            (
                r#"{"id":1,"op":"logs","source":"a","tail":10001}"#.into(),
                json!(1),
                ErrorCode::BadRequest,
                "$.tail: at most 10000",
            ),
            (
                r#"{"id":1,"op":"apply"}"#.into(),
                json!(1),
                ErrorCode::BadRequest,
                "$.envelope: missing field",
            ),
            (
                r#"{"id":1,"op":"apply","envelope":{"payload":"e30="}}"#.into(),
                json!(1),
                ErrorCode::BadEnvelope,
                "$.envelope.signature: missing field",
            ),
            (
                format!(
                    r#"{{"id":1,"op":"apply","envelope":{}}}"#,
                    env_text.replacen("\"payload\":\"e", "\"payload\":\"!", 1)
                ),
                json!(1),
                ErrorCode::BadEnvelope,
                "$.envelope.payload: invalid base64 symbol at offset 0",
            ),
        ];
        for (text, id, code, needle) in cases {
            let err = parse_request(text.as_bytes()).unwrap_err();
            assert_eq!((&err.id, err.code), (&id, code), "{text}: {}", err.message);
            assert!(err.message.contains(needle), "{text}: {}", err.message);
        }
    }

    #[test]
    fn error_codes_round_trip_and_are_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert!(seen.insert(code.as_str()));
        }
        assert_eq!(ErrorCode::parse("nope"), None);
    }

    #[test]
    fn responses_round_trip() {
        let ok = ok_line(&json!(3), json!({"state": "maintenance"}));
        assert_eq!(ok.last(), Some(&b'\n'));
        assert_eq!(
            parse_response(&ok).unwrap(),
            Response::Ok {
                id: json!(3),
                result: json!({"state": "maintenance"})
            }
        );
        let err = error_line(&json!("x"), ErrorCode::WrongNode, "two\nlines");
        assert_eq!(err.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(
            parse_response(&err).unwrap(),
            Response::Error {
                id: json!("x"),
                code: "wrong_node".into(),
                message: "two lines".into()
            }
        );
        let req = request_line(&json!(9), "logs", json!({"source": "a"}).as_object().unwrap().clone());
        let parsed = parse_request(&req[..req.len() - 1]).unwrap();
        assert_eq!(
            parsed.op,
            Op::Logs {
                source: "a".into(),
                tail: DEFAULT_TAIL,
                since: None
            }
        );
        assert!(parse_response(br#"{"id":1,"result":{}}"#).is_err());
        assert!(parse_response(br#"{"id":1,"ok":false,"error":{"code":"x"}}"#).is_err());
    }
}
