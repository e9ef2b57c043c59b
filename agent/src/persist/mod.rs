//! The node's memory across reboots: the records on the STATE partition
//! (format: basalt_common::state_record; design: docs/state.md).
//!
//! The agent reads both record slots at boot, tries the newest valid one
//! first (re-verifying it as if it had just arrived: signature, node,
//! generation against the floor), falls back to the other, and says in
//! status which it used and why. Each accepted apply is written to the slot
//! that does not hold the record in force and flushed to the device before
//! the apply is answered: an ok means the config survives a power cut. A
//! record found bad is copied to the quarantine area before its slot is
//! reused, so it can still be inspected.

pub mod device;

use crate::settings::StateSource;
use basalt_common::state_record::{self, RecordError, Sealed, Slots, StateRecord, HEADER_LEN};
use serde_json::{json, Value};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Why a record could not be written.
#[derive(Debug)]
pub enum PersistError {
    Open {
        path: PathBuf,
        err: std::io::Error,
    },
    Encode(RecordError),
    Write {
        path: PathBuf,
        offset: u64,
        err: std::io::Error,
    },
    Flush {
        path: PathBuf,
        err: std::io::Error,
    },
}

impl std::fmt::Display for PersistError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PersistError::Open { path, err } => write!(f, "cannot open STATE device {}: {err}", path.display()),
            PersistError::Encode(e) => write!(f, "cannot encode the state record: {e}"),
            PersistError::Write { path, offset, err } => {
                write!(
                    f,
                    "cannot write the state record to {} at offset {offset}: {err}",
                    path.display()
                )
            }
            PersistError::Flush { path, err } => {
                write!(f, "cannot flush the state record to {}: {err}", path.display())
            }
        }
    }
}

/// What one slot held when it was read, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SlotState {
    NotRead,
    Valid {
        seq: u64,
    },
    Invalid(String),
    /// A valid record the agent would not apply, and why.
    Refused {
        seq: u64,
        why: String,
    },
}

/// The record in force and why.
#[derive(Debug, Clone)]
struct InForce {
    slot: usize,
    seq: u64,
    why: String,
}

pub struct Store {
    device: Option<PathBuf>,
    /// Why there is no device.
    absent: Option<String>,
    slots: Slots,
    states: [SlotState; 2],
    in_force: Option<InForce>,
    /// The record in force (the next write builds on it).
    record: StateRecord,
    quarantined: Option<String>,
    writes: u64,
}

impl Store {
    /// Locates the STATE device; reads nothing yet.
    pub fn open(source: &StateSource, sys_class_block: &Path, dev: &Path) -> Store {
        let (device, absent) = match source {
            StateSource::Disabled => (None, Some("basalt.state=none".to_string())),
            StateSource::Path(p) => (Some(p.clone()), None),
            StateSource::PartLabel(label) => match device::find_partition(sys_class_block, dev, label) {
                Some(p) => (Some(p), None),
                None => (None, Some(format!("no partition named {label}"))),
            },
        };
        Store {
            device,
            absent,
            slots: Slots {
                read: [Err(RecordError::Empty), Err(RecordError::Empty)],
            },
            states: [SlotState::NotRead, SlotState::NotRead],
            in_force: None,
            record: StateRecord::default(),
            quarantined: None,
            writes: 0,
        }
    }

    /// True if applies are written to a device.
    pub fn persistent(&self) -> bool {
        self.device.is_some()
    }

    pub fn device(&self) -> Option<&Path> {
        self.device.as_deref()
    }

    /// Reads both slots. Returns the valid records, newest first, for the
    /// agent to try in turn. A slot that cannot be read counts as invalid.
    pub fn read(&mut self) -> Vec<(usize, Sealed)> {
        let Some(path) = self.device.clone() else {
            return Vec::new();
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                log::error!("cannot open STATE device {}: {e}; no record read", path.display());
                return Vec::new();
            }
        };
        for i in 0..2 {
            let read = read_slot(&file, i as u64);
            self.states[i] = match &read {
                Ok(s) => SlotState::Valid { seq: s.seq },
                Err(RecordError::Empty) => SlotState::Invalid("empty".into()),
                Err(e) => {
                    log::error!("STATE {} slot {i}: {e}", path.display());
                    SlotState::Invalid(e.to_string())
                }
            };
            self.slots.read[i] = read;
        }
        self.slots
            .newest_first()
            .into_iter()
            .filter_map(|i| self.slots.read[i].clone().ok().map(|s| (i, s)))
            .collect()
    }

    /// Slots that hold something other than a record or nothing.
    pub fn invalid_slots(&self) -> usize {
        self.states
            .iter()
            .filter(|s| matches!(s, SlotState::Invalid(why) if why != "empty"))
            .count()
    }

    /// The agent applied the record in `slot`.
    pub fn chose(&mut self, slot: usize, why: String) {
        if let Ok(sealed) = &self.slots.read[slot] {
            self.record = sealed.record.clone();
            self.in_force = Some(InForce {
                slot,
                seq: sealed.seq,
                why,
            });
        }
    }

    /// The agent would not apply the valid record in `slot`.
    pub fn refused(&mut self, slot: usize, why: String) {
        if let Ok(sealed) = &self.slots.read[slot] {
            self.states[slot] = SlotState::Refused { seq: sealed.seq, why };
        }
    }

    /// Keeps what the records said about floors even if no record is in
    /// force (say, both configs were refused).
    pub fn keep_floors(&mut self, generation_floor: Option<u64>, image_version_floor: Option<u64>) {
        self.record.generation_floor = self.record.generation_floor.max(generation_floor);
        self.record.image_version_floor = self.record.image_version_floor.max(image_version_floor);
    }

    /// The record in force, or the empty one.
    pub fn record(&self) -> &StateRecord {
        &self.record
    }

    /// Writes `record` as the next one and flushes it; only then is it the
    /// record in force. Without a device this does nothing.
    pub fn write(&mut self, record: StateRecord) -> Result<(), PersistError> {
        let Some(path) = self.device.clone() else {
            self.record = record;
            return Ok(());
        };
        let (slot, seq) = self.slots.next_write(self.in_force.as_ref().map(|f| f.slot));
        let bytes = state_record::encode(seq, &record).map_err(PersistError::Encode)?;
        let file = File::options()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|err| PersistError::Open {
                path: path.clone(),
                err,
            })?;
        self.keep_for_inspection(&file, &path, slot);
        let offset = state_record::slot_offset(slot as u64);
        file.write_all_at(&bytes, offset).map_err(|err| PersistError::Write {
            path: path.clone(),
            offset,
            err,
        })?;
        // fdatasync on a block device also flushes the device's write cache.
        file.sync_data().map_err(|err| PersistError::Flush {
            path: path.clone(),
            err,
        })?;
        self.slots.read[slot] = Ok(Sealed {
            seq,
            record: record.clone(),
        });
        self.states[slot] = SlotState::Valid { seq };
        self.in_force = Some(InForce {
            slot,
            seq,
            why: "written by this agent".into(),
        });
        self.record = record;
        self.writes += 1;
        Ok(())
    }

    /// Before a slot whose record was found bad is written over, its bytes
    /// go to the quarantine area (best effort: a failure is logged).
    fn keep_for_inspection(&mut self, file: &File, path: &Path, slot: usize) {
        let why = match &self.states[slot] {
            SlotState::Invalid(why) if why != "empty" => why.clone(),
            SlotState::Refused { why, .. } => why.clone(),
            _ => return,
        };
        let mut head = [0u8; HEADER_LEN];
        let offset = state_record::slot_offset(slot as u64);
        let len = match file.read_exact_at(&mut head, offset) {
            Ok(()) => state_record::claimed_len(&head).unwrap_or(64 * 1024),
            Err(_) => return,
        };
        let mut raw = vec![0u8; len];
        let copied = file
            .read_exact_at(&mut raw, offset)
            .and_then(|()| file.write_all_at(&raw, state_record::quarantine_offset()))
            .and_then(|()| file.sync_data());
        match copied {
            Ok(()) => {
                log::warn!(
                    "STATE {} slot {slot} ({why}): {len} bytes kept in the quarantine area before it is reused",
                    path.display()
                );
                self.quarantined = Some(format!("slot {slot}: {why}"));
            }
            Err(e) => log::error!("cannot keep STATE slot {slot} for inspection: {e}"),
        }
        self.states[slot] = SlotState::NotRead;
    }

    pub fn status(&self) -> Value {
        let slot = |s: &SlotState| match s {
            SlotState::NotRead => json!({"state": "not read"}),
            SlotState::Valid { seq } => json!({"state": "valid", "seq": seq}),
            SlotState::Invalid(why) => json!({"state": "invalid", "why": why}),
            SlotState::Refused { seq, why } => json!({"state": "refused", "seq": seq, "why": why}),
        };
        json!({
            "persistent": self.persistent(),
            "device": self.device.as_ref().map(|p| p.display().to_string()),
            "why_not": self.absent,
            "slots": [slot(&self.states[0]), slot(&self.states[1])],
            "in_force": self.in_force.as_ref().map(|f| json!({"slot": f.slot, "seq": f.seq, "why": f.why})),
            "quarantined": self.quarantined,
            "generation_floor": self.record.generation_floor,
            "writes": self.writes,
        })
    }
}

fn read_slot(file: &File, slot: u64) -> Result<Sealed, RecordError> {
    let offset = state_record::slot_offset(slot);
    let mut head = [0u8; HEADER_LEN];
    if let Err(e) = file.read_exact_at(&mut head, offset) {
        // A device shorter than the slots reads as nothing written there.
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Err(RecordError::Empty),
            _ => Err(RecordError::Short { len: 0 }),
        };
    }
    let Some(len) = state_record::claimed_len(&head) else {
        return state_record::decode(&head);
    };
    let mut bytes = vec![0u8; len];
    match file.read_exact_at(&mut bytes, offset) {
        Ok(()) => state_record::decode(&bytes),
        Err(_) => Err(RecordError::Length { len: len as u64 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_common::envelope::SignedEnvelope;
    use basalt_common::keys::SigningKey;

    fn temp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("basalt-persist-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    fn record(floor: u64) -> StateRecord {
        let key = SigningKey::from_seed(&[3; 32]).unwrap();
        StateRecord {
            generation_floor: Some(floor),
            config: Some(SignedEnvelope::sign(&key, format!("{{\"g\":{floor}}}").into_bytes())),
            ..StateRecord::default()
        }
    }

    fn store(path: &Path) -> Store {
        Store::open(
            &StateSource::Path(path.into()),
            Path::new("/nonexistent"),
            Path::new("/dev"),
        )
    }

    #[test]
    fn writes_alternate_and_survive_a_reopen() {
        let dev = temp("alternate");
        std::fs::write(&dev, []).unwrap();
        let mut s = store(&dev);
        assert!(s.read().is_empty());
        for floor in 1..=3 {
            s.write(record(floor)).unwrap();
        }
        let mut again = store(&dev);
        let found = again.read();
        let seen: Vec<(usize, u64, Option<u64>)> = found
            .iter()
            .map(|(i, r)| (*i, r.seq, r.record.generation_floor))
            .collect();
        assert_eq!(
            seen,
            [(0, 3, Some(3)), (1, 2, Some(2))],
            "newest first, in alternating slots"
        );
        let _ = std::fs::remove_file(&dev);
    }

    /// A torn write (here: garbage over the slot being written) leaves the
    /// other slot's record in force; the bad one is kept in quarantine when
    /// its slot is reused.
    #[test]
    fn a_torn_record_falls_back_and_is_kept_for_inspection() {
        let dev = temp("torn");
        std::fs::write(&dev, []).unwrap();
        let mut s = store(&dev);
        s.read();
        s.write(record(1)).unwrap();
        s.write(record(2)).unwrap();
        // Slot 1 holds seq 2: tear it.
        let f = File::options().read(true).write(true).open(&dev).unwrap();
        f.write_all_at(&[0x5a; 100], state_record::slot_offset(1) + 70).unwrap();
        let mut s = store(&dev);
        let found = s.read();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].0, found[0].1.seq), (0, 1));
        s.chose(0, "the only valid record".into());
        assert_eq!(s.status()["slots"][1]["state"], "invalid");
        s.write(record(3)).unwrap();
        assert!(s.status()["quarantined"].as_str().unwrap().contains("checksum"));
        let mut raw = vec![0u8; 170];
        f.read_exact_at(&mut raw, state_record::quarantine_offset()).unwrap();
        assert_eq!(&raw[..8], b"BASALTST");
        assert_eq!(&raw[70..170], &[0x5a; 100][..], "the torn bytes, as they were");
        let _ = std::fs::remove_file(&dev);
    }

    #[test]
    fn a_failing_device_fails_the_write_and_keeps_the_record_in_force() {
        let mut s = store(Path::new("/dev/full"));
        assert!(s.read().is_empty());
        let err = s.write(record(1)).unwrap_err();
        assert!(err.to_string().contains("/dev/full"), "{err}");
        assert_eq!(s.record(), &StateRecord::default());
        let mut none = Store::open(&StateSource::Disabled, Path::new("/x"), Path::new("/dev"));
        assert!(!none.persistent());
        none.write(record(1)).unwrap();
    }
}
