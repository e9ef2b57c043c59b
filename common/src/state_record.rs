//! The records on the STATE partition: what a node remembers across reboots
//! and power cuts (docs/state.md).
//!
//! The partition holds two fixed-size record slots and a quarantine area:
//!
//! ```text
//! offset 0            slot 0   (SLOT_SIZE bytes)
//! offset SLOT_SIZE    slot 1
//! offset 2*SLOT_SIZE  quarantine: a raw copy of the last record found bad
//! ```
//!
//! A slot starts with a 64-byte header, little-endian:
//!
//! ```text
//!  0  magic "BASALTST"        8 bytes
//!  8  format                  u32 (1)
//! 12  reserved                u32 (0)
//! 16  sequence number         u64 (1, 2, 3, ...)
//! 24  payload length          u32
//! 28  reserved                u32 (0)
//! 32  SHA-256 of bytes 0..32 and of the payload
//! 64  payload                 (JSON, see [`StateRecord`])
//! ```
//!
//! A writer puts the next record (sequence + 1) into the slot that does not
//! hold the current one, flushes it to the device, and only then counts it
//! as current. A power cut during the write tears at most that slot; its
//! checksum then fails and the other slot, untouched, is still current.
//! Everything here is pure: the agent does the reads, writes and flushes.

use crate::envelope::SignedEnvelope;
use crate::json::{self, Fields, JsonError};
use serde_json::{json, Value};

pub const MAGIC: &[u8; 8] = b"BASALTST";
pub const FORMAT: u32 = 1;
pub const HEADER_LEN: usize = 64;
/// One record slot. A config envelope is at most 1 MiB on the wire, so a
/// record fits with room to spare.
pub const SLOT_SIZE: u64 = 4 << 20;
/// Slots in use, then the quarantine area.
pub const SLOTS: u64 = 2;
/// The smallest STATE partition: two slots and the quarantine area.
pub const MIN_PARTITION: u64 = (SLOTS + 1) * SLOT_SIZE;
/// The largest payload a slot holds.
pub const MAX_PAYLOAD: usize = SLOT_SIZE as usize - HEADER_LEN;
/// The payload format this build reads and writes.
pub const PAYLOAD_FORMAT: u64 = 1;
/// The highest sequence number a record may carry: one that has no
/// successor would leave the next write nothing to number itself with.
pub const MAX_SEQ: u64 = u64::MAX - 1;

/// What one record says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StateRecord {
    /// Replays and rollbacks must exceed this generation.
    pub generation_floor: Option<u64>,
    /// The last accepted config, exactly as it was signed.
    pub config: Option<SignedEnvelope>,
    /// The kind of the last accepted signed shutdown (`reboot`, `poweroff`).
    pub last_shutdown: Option<String>,
    /// Images below this version are not installed unless a signed
    /// upgrade allows a downgrade; a blessed upgrade raises it.
    pub image_version_floor: Option<u64>,
    /// The last upgrade staged, and what became of it (docs/upgrades.md).
    pub upgrade: Option<UpgradeRecord>,
}

/// What became of an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeOutcome {
    /// Written and checked; its entry has tries left.
    Staged,
    /// Healthy for the window on the new slot: its entry has no counter.
    Blessed,
    /// Out of tries: the loader went back to the old slot.
    Failed,
}

impl UpgradeOutcome {
    pub const ALL: [UpgradeOutcome; 3] = [UpgradeOutcome::Staged, UpgradeOutcome::Blessed, UpgradeOutcome::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            UpgradeOutcome::Staged => "staged",
            UpgradeOutcome::Blessed => "blessed",
            UpgradeOutcome::Failed => "failed",
        }
    }
}

/// The last upgrade: enough for the new slot to bless itself (window,
/// version floor) and for the old one to say what failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRecord {
    /// The PARTLABEL written (`ROOT-A`, `ROOT-B`).
    pub target: String,
    pub version: String,
    pub version_seq: u64,
    /// The version that was running when it was staged.
    pub from_version: String,
    pub health_window_ms: u64,
    pub outcome: UpgradeOutcome,
}

impl UpgradeRecord {
    fn to_json(&self) -> Value {
        json!({
            "target": self.target,
            "version": self.version,
            "version_seq": self.version_seq,
            "from_version": self.from_version,
            "health_window_ms": self.health_window_ms,
            "outcome": self.outcome.as_str(),
        })
    }

    fn parse(v: &Value, path: &str) -> Result<Self, JsonError> {
        let keys = [
            "target",
            "version",
            "version_seq",
            "from_version",
            "health_window_ms",
            "outcome",
        ];
        let f = Fields::new(v, path, &keys)?;
        let outcome = f.str("outcome")?;
        let outcome = UpgradeOutcome::ALL
            .into_iter()
            .find(|o| o.as_str() == outcome)
            .ok_or_else(|| JsonError::new(f.path_of("outcome"), "expected staged, blessed or failed"))?;
        Ok(UpgradeRecord {
            target: f.str("target")?.into(),
            version: f.str("version")?.into(),
            version_seq: f.u64("version_seq")?,
            from_version: f.str("from_version")?.into(),
            health_window_ms: f.u64("health_window_ms")?,
            outcome,
        })
    }
}

/// Why a slot's bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// All zeros: never written.
    Empty,
    Short {
        len: usize,
    },
    BadMagic,
    Format(u32),
    Length {
        len: u64,
    },
    Checksum,
    Payload(JsonError),
    /// A sequence number above [`MAX_SEQ`].
    Sequence(u64),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Empty => write!(f, "empty (never written)"),
            RecordError::Short { len } => write!(f, "only {len} bytes, less than the {HEADER_LEN}-byte header"),
            RecordError::BadMagic => write!(f, "no record magic (not a basalt state record)"),
            RecordError::Format(v) => write!(f, "record format {v}, this build reads {FORMAT}"),
            RecordError::Length { len } => {
                write!(f, "payload length {len} exceeds the slot's {MAX_PAYLOAD} bytes")
            }
            RecordError::Checksum => write!(f, "checksum mismatch (torn or corrupted write)"),
            RecordError::Payload(e) => write!(f, "payload: {e}"),
            RecordError::Sequence(n) => write!(
                f,
                "sequence number {n} leaves none for the next record (at most {MAX_SEQ})"
            ),
        }
    }
}

/// A slot's record as read: its sequence number and contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub seq: u64,
    pub record: StateRecord,
}

/// The bytes of one slot holding `record` as number `seq`: header and
/// payload, not padded (the rest of the slot is never read).
pub fn encode(seq: u64, record: &StateRecord) -> Result<Vec<u8>, RecordError> {
    if seq > MAX_SEQ {
        return Err(RecordError::Sequence(seq));
    }
    let payload = serde_json::to_vec(&record.to_json()).unwrap_or_default();
    if payload.len() > MAX_PAYLOAD {
        return Err(RecordError::Length {
            len: payload.len() as u64,
        });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let sum = checksum(&out, &payload);
    out.extend_from_slice(&sum);
    out.extend_from_slice(&payload);
    Ok(out)
}

fn checksum(head: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(head);
    h.update(payload);
    let mut out = [0u8; 32];
    out.copy_from_slice(h.finish().as_ref());
    out
}

/// Reads one slot's bytes (at least the header; more is ignored past the
/// payload's length).
pub fn decode(bytes: &[u8]) -> Result<Sealed, RecordError> {
    if bytes.len() < HEADER_LEN {
        return Err(RecordError::Short { len: bytes.len() });
    }
    let head = &bytes[..HEADER_LEN];
    if head.iter().all(|&b| b == 0) {
        return Err(RecordError::Empty);
    }
    if &head[..8] != MAGIC {
        return Err(RecordError::BadMagic);
    }
    let u32_at = |at: usize| u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    let format = u32_at(8);
    if format != FORMAT {
        return Err(RecordError::Format(format));
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&head[16..24]);
    let seq = u64::from_le_bytes(seq);
    let len = u32_at(24) as usize;
    if len > MAX_PAYLOAD || HEADER_LEN + len > bytes.len() {
        return Err(RecordError::Length { len: len as u64 });
    }
    let payload = &bytes[HEADER_LEN..HEADER_LEN + len];
    if checksum(&head[..32], payload) != head[32..64] {
        return Err(RecordError::Checksum);
    }
    if seq > MAX_SEQ {
        return Err(RecordError::Sequence(seq));
    }
    let record = StateRecord::parse(payload).map_err(RecordError::Payload)?;
    Ok(Sealed { seq, record })
}

/// The payload length a slot's header claims, if the header is a record's;
/// so a reader can fetch just that much.
pub fn claimed_len(head: &[u8]) -> Option<usize> {
    if head.len() < HEADER_LEN || &head[..8] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes([head[24], head[25], head[26], head[27]]) as usize;
    Some(HEADER_LEN + len.min(MAX_PAYLOAD))
}

/// Where slot `i` starts on the partition.
pub fn slot_offset(i: u64) -> u64 {
    i * SLOT_SIZE
}

/// Where the quarantine area starts.
pub fn quarantine_offset() -> u64 {
    SLOTS * SLOT_SIZE
}

/// Both slots as read, and which one is current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slots {
    pub read: [Result<Sealed, RecordError>; 2],
}

impl Slots {
    /// The slots holding a valid record, newest first.
    pub fn newest_first(&self) -> Vec<usize> {
        let mut ok: Vec<(usize, u64)> = (0..2)
            .filter_map(|i| self.read[i].as_ref().ok().map(|s| (i, s.seq)))
            .collect();
        ok.sort_by_key(|&(_, seq)| std::cmp::Reverse(seq));
        ok.into_iter().map(|(i, _)| i).collect()
    }

    /// Where the next record goes, and its sequence number, when slot
    /// `current` holds the record in force (or no slot does): never over
    /// the current one.
    pub fn next_write(&self, current: Option<usize>) -> (usize, u64) {
        let top = (0..2)
            .filter_map(|i| self.read[i].as_ref().ok().map(|s| s.seq))
            .max()
            .unwrap_or(0);
        let slot = match current {
            Some(c) => 1 - c,
            None => self.newest_first().first().map_or(0, |&newest| 1 - newest),
        };
        (slot, top + 1)
    }
}

impl StateRecord {
    pub fn to_json(&self) -> Value {
        json!({
            "format": PAYLOAD_FORMAT,
            "generation_floor": self.generation_floor,
            "config": self.config.as_ref().map(SignedEnvelope::to_json),
            "last_shutdown": self.last_shutdown,
            "image_version_floor": self.image_version_floor,
            "upgrade": self.upgrade.as_ref().map(UpgradeRecord::to_json),
        })
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, JsonError> {
        let doc = json::parse_strict(bytes)?;
        let f = Fields::new(
            &doc,
            "$",
            &[
                "format",
                "generation_floor",
                "config",
                "last_shutdown",
                "image_version_floor",
                "upgrade",
            ],
        )?;
        let format = f.u64("format")?;
        if format != PAYLOAD_FORMAT {
            let what = format!("payload format {format} is not supported (this build reads {PAYLOAD_FORMAT})");
            return Err(JsonError::new(f.path_of("format"), what));
        }
        let opt_u64 = |key: &str| match f.opt(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => json::as_u64(v, &f.path_of(key)).map(Some),
        };
        let config = match f.opt("config") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                SignedEnvelope::from_json(v, &f.path_of("config"))
                    .map_err(|e| JsonError::new(f.path_of("config"), e.to_string()))?,
            ),
        };
        let last_shutdown = match f.opt("last_shutdown") {
            None | Some(Value::Null) => None,
            Some(v) => Some(json::as_str(v, &f.path_of("last_shutdown"))?.to_string()),
        };
        let upgrade = match f.opt("upgrade") {
            None | Some(Value::Null) => None,
            Some(v) => Some(UpgradeRecord::parse(v, &f.path_of("upgrade"))?),
        };
        Ok(StateRecord {
            generation_floor: opt_u64("generation_floor")?,
            config,
            last_shutdown,
            image_version_floor: opt_u64("image_version_floor")?,
            upgrade,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;

    fn sample() -> StateRecord {
        let key = SigningKey::from_seed(&[7; 32]).unwrap();
        StateRecord {
            generation_floor: Some(3),
            config: Some(SignedEnvelope::sign(&key, br#"{"kind":"config"}"#.to_vec())),
            last_shutdown: Some("reboot".into()),
            image_version_floor: Some(40),
            upgrade: Some(UpgradeRecord {
                target: "ROOT-B".into(),
                version: "0.2.0".into(),
                version_seq: 41,
                from_version: "0.1.0".into(),
                health_window_ms: 60_000,
                outcome: UpgradeOutcome::Staged,
            }),
        }
    }

    #[test]
    fn round_trip_and_header_bytes() {
        let rec = sample();
        let bytes = encode(9, &rec).unwrap();
        assert_eq!(&bytes[..8], b"BASALTST");
        assert_eq!(bytes[8..12], [1, 0, 0, 0]);
        assert_eq!(bytes[16..24], 9u64.to_le_bytes());
        assert_eq!(
            u32::from_le_bytes(bytes[24..28].try_into().unwrap()) as usize,
            bytes.len() - 64
        );
        assert_eq!(claimed_len(&bytes), Some(bytes.len()));
        // A slot is read with whatever follows the record (zeros, or an older one).
        let mut slot = bytes.clone();
        slot.extend_from_slice(&[0xee; 100]);
        assert_eq!(decode(&slot), Ok(Sealed { seq: 9, record: rec }));
        let empty = StateRecord::default();
        assert_eq!(decode(&encode(1, &empty).unwrap()).unwrap().record, empty);
    }

    #[test]
    fn every_damage_is_caught() {
        let good = encode(4, &sample()).unwrap();
        let flip = |at: usize| {
            let mut b = good.clone();
            b[at] ^= 0x01;
            b
        };
        let mut other_format = good.clone();
        other_format[8] = 2;
        let mut long = good.clone();
        long[24..28].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        let cases: Vec<(&str, Vec<u8>, RecordError)> = vec![
            ("zeros", vec![0; 4096], RecordError::Empty),
            ("short", good[..10].to_vec(), RecordError::Short { len: 10 }),
            ("magic", flip(0), RecordError::BadMagic),
            ("format", other_format, RecordError::Format(2)),
            (
                "length",
                long,
                RecordError::Length {
                    len: MAX_PAYLOAD as u64 + 1,
                },
            ),
            (
                "truncated payload",
                good[..good.len() - 1].to_vec(),
                RecordError::Length {
                    len: (good.len() - 64) as u64,
                },
            ),
            ("seq", flip(16), RecordError::Checksum),
            ("checksum", flip(40), RecordError::Checksum),
            ("payload first byte", flip(64), RecordError::Checksum),
            ("payload last byte", flip(good.len() - 1), RecordError::Checksum),
        ];
        for (what, bytes, want) in cases {
            assert_eq!(decode(&bytes), Err(want), "{what}");
        }
        // A sealed record numbered u64::MAX: the next write would have no number.
        let mut last = good[..64].to_vec();
        last[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        let sum = checksum(&last[..32], &good[64..]);
        last[32..64].copy_from_slice(&sum);
        last.extend_from_slice(&good[64..]);
        assert_eq!(decode(&last), Err(RecordError::Sequence(u64::MAX)));
        assert_eq!(encode(u64::MAX, &sample()), Err(RecordError::Sequence(u64::MAX)));
        assert_eq!(decode(&encode(MAX_SEQ, &sample()).unwrap()).unwrap().seq, MAX_SEQ);
        // A valid checksum over a payload that is not a record.
        let mut junk = good[..64].to_vec();
        junk[24..28].copy_from_slice(&2u32.to_le_bytes());
        let sum = checksum(&junk[..32], b"{}");
        junk[32..64].copy_from_slice(&sum);
        junk.extend_from_slice(b"{}");
        assert!(
            matches!(decode(&junk), Err(RecordError::Payload(_))),
            "{:?}",
            decode(&junk)
        );
    }

    #[test]
    fn the_next_write_never_goes_over_the_current_record() {
        let rec = |seq| {
            Ok(Sealed {
                seq,
                record: StateRecord::default(),
            })
        };
        type Read = [Result<Sealed, RecordError>; 2];
        /// What the slots hold, the one in force, newest first, next write.
        type Case = (Read, Option<usize>, Vec<usize>, (usize, u64));
        let cases: Vec<Case> = vec![
            ([Err(RecordError::Empty), Err(RecordError::Empty)], None, vec![], (0, 1)),
            ([rec(1), Err(RecordError::Empty)], Some(0), vec![0], (1, 2)),
            ([rec(1), rec(2)], Some(1), vec![1, 0], (0, 3)),
            ([rec(5), rec(4)], Some(0), vec![0, 1], (1, 6)),
            // The newest is valid but was refused (say, a bad signature): the
            // older one is in force, so the next write replaces the refused one.
            ([rec(5), rec(4)], Some(1), vec![0, 1], (0, 6)),
            ([Err(RecordError::Checksum), rec(7)], Some(1), vec![1], (0, 8)),
            // Nothing usable: write beside the newest valid one.
            ([rec(2), rec(3)], None, vec![1, 0], (0, 4)),
        ];
        for (read, current, order, next) in cases {
            let slots = Slots { read };
            assert_eq!(slots.newest_first(), order, "{slots:?}");
            assert_eq!(slots.next_write(current), next, "{slots:?} current {current:?}");
        }
    }

    #[test]
    fn payload_is_strict() {
        let cases = [
            (r#"{"format":1}"#, true),
            (r#"{"format":1,"generation_floor":null,"config":null}"#, true),
            (r#"{"format":2}"#, false),
            (r#"{"format":1,"extra":1}"#, false),
            (r#"{"format":1,"generation_floor":-1}"#, false),
            (r#"{"format":1,"config":{"payload":"e30="}}"#, false),
            (r#"{}"#, false),
        ];
        for (text, ok) in cases {
            assert_eq!(StateRecord::parse(text.as_bytes()).is_ok(), ok, "{text}");
        }
    }
}
