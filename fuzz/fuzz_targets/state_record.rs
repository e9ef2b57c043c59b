//! The STATE partition's record slots (common/src/state_record.rs), which
//! the agent reads back at every boot from a disk anyone with the disk can
//! write.
//!
//! The first byte picks the mode:
//! - 0: the rest is one slot's bytes, for `decode` and `claimed_len`;
//! - 1: `[seq u64][flip u16][payload]`: the payload is sealed with a correct
//!   header and checksum, so `decode` reaches `StateRecord::parse`; then one
//!   bit of the sealed bytes (the one `flip` picks) is flipped;
//! - 2: a record built from the input (floors, a last shutdown, a config
//!   envelope signed with the fixed key), encoded and decoded;
//! - 3 and up: two slots, each empty, damaged or holding a record whose
//!   sequence number the input picks, and the slot in force, for
//!   `Slots::newest_first` and `Slots::next_write`.
//!
//! Checked:
//! - `decode` never panics; each error is true of the bytes (short, empty,
//!   magic, format, length); `claimed_len` is the header's length, capped;
//! - whatever decodes decodes the same from just `claimed_len` bytes, and
//!   `encode(seq, record)` writes it back to bytes that decode to the same
//!   sequence number and record, and that `encode` writes again unchanged;
//! - a sealed payload decodes exactly when `StateRecord::parse` accepts it,
//!   to what it gives; any one flipped bit of a sealed record is refused;
//! - no record carries a sequence number above `MAX_SEQ`, so the next
//!   always has one;
//! - `next_write` never picks the slot in force, never the newest valid
//!   record when none is in force, and numbers the write above every valid
//!   record.
#![no_main]

use basalt_common::envelope::SignedEnvelope;
use basalt_common::state_record::{
    claimed_len, decode, encode, RecordError, Sealed, Slots, StateRecord, FORMAT, HEADER_LEN, MAGIC, MAX_PAYLOAD,
    MAX_SEQ,
};
use basalt_fuzz::{signing_key, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.byte() {
        0 => {
            let _ = check_decode(input.rest());
        }
        1 => {
            let seq = u64_of(&mut input);
            let flip = input.u16();
            check_sealed(seq, flip, input.rest());
        }
        2 => check_encode(input),
        _ => check_slots(&mut input),
    }
});

fn u64_of(input: &mut Input) -> u64 {
    let mut b = [0u8; 8];
    for x in &mut b {
        *x = input.byte();
    }
    u64::from_le_bytes(b)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `decode` of any bytes, checked against what the bytes say.
fn check_decode(bytes: &[u8]) -> Option<Sealed> {
    let got = decode(bytes);
    let claimed = claimed_len(bytes);
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        assert_eq!(claimed, None);
    } else {
        let len = u32_at(bytes, 24) as usize;
        assert_eq!(claimed, Some(HEADER_LEN + len.min(MAX_PAYLOAD)));
    }
    match &got {
        Err(RecordError::Short { len }) => assert!(*len == bytes.len() && *len < HEADER_LEN),
        Err(RecordError::Empty) => assert!(bytes[..HEADER_LEN].iter().all(|&b| b == 0)),
        Err(RecordError::BadMagic) => assert_ne!(&bytes[..8], MAGIC),
        Err(RecordError::Format(f)) => assert!(*f != FORMAT && *f == u32_at(bytes, 8)),
        Err(RecordError::Length { len }) => {
            assert_eq!(*len, u64::from(u32_at(bytes, 24)));
            assert!(*len > MAX_PAYLOAD as u64 || HEADER_LEN as u64 + *len > bytes.len() as u64);
        }
        Err(RecordError::Checksum | RecordError::Payload(_)) => {
            assert!(bytes.len() >= HEADER_LEN && &bytes[..8] == MAGIC)
        }
        Err(RecordError::Sequence(seq)) => {
            assert!(*seq > MAX_SEQ);
            assert_eq!(bytes[16..24], seq.to_le_bytes());
        }
        Ok(sealed) => {
            let n = claimed.expect("a record has a claimed length");
            assert!(n <= bytes.len());
            assert_eq!(
                decode(&bytes[..n]).as_ref(),
                Ok(sealed),
                "read back from claimed_len bytes"
            );
            check_round_trip(sealed);
        }
    }
    got.ok()
}

/// What decoded writes back to bytes that decode to the same.
fn check_round_trip(sealed: &Sealed) {
    let written = encode(sealed.seq, &sealed.record).expect("a record that decoded fits its slot");
    assert_eq!(claimed_len(&written), Some(written.len()));
    assert_eq!(
        decode(&written).as_ref(),
        Ok(sealed),
        "written as {:?}",
        String::from_utf8_lossy(&written)
    );
    assert_eq!(
        encode(sealed.seq, &sealed.record).as_ref(),
        Ok(&written),
        "encode is deterministic"
    );
}

/// The bytes of a slot holding `payload` as record `seq`, sealed correctly.
fn seal(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(&out);
    h.update(payload);
    out.extend_from_slice(h.finish().as_ref());
    out.extend_from_slice(payload);
    out
}

fn check_sealed(seq: u64, flip: u16, payload: &[u8]) {
    let bytes = seal(seq, payload);
    let got = check_decode(&bytes);
    let parsed = StateRecord::parse(payload);
    match (&got, &parsed) {
        (None, _) if seq > MAX_SEQ => assert_eq!(decode(&bytes), Err(RecordError::Sequence(seq))),
        (Some(sealed), Ok(record)) => {
            assert_eq!(sealed.seq, seq);
            assert_eq!(&sealed.record, record);
        }
        (None, Err(e)) => match decode(&bytes) {
            Err(RecordError::Payload(d)) => assert_eq!(&d, e),
            other => panic!("payload refused by parse ({e}), decode said {other:?}"),
        },
        (None, Ok(_)) => panic!("parse accepts the payload, decode said {:?}", decode(&bytes)),
        (Some(s), Err(e)) => panic!("decode gave {s:?} for a payload parse refuses ({e})"),
    }
    let at = usize::from(flip) % (bytes.len() * 8);
    let mut damaged = bytes.clone();
    damaged[at / 8] ^= 1 << (at % 8);
    let d = check_decode(&damaged);
    assert!(d.is_none(), "bit {at} flipped still decodes: {d:?}");
}

fn opt_u64(input: &mut Input) -> Option<u64> {
    let mode = input.byte();
    let v = u64_of(input);
    (mode & 1 == 1).then_some(v)
}

fn opt_text(input: &mut Input) -> Option<String> {
    let len = input.byte();
    let text = String::from_utf8_lossy(input.bytes(usize::from(len >> 1))).into_owned();
    (len & 1 == 1).then_some(text)
}

fn check_encode(mut input: Input) {
    let seq = u64_of(&mut input);
    let generation_floor = opt_u64(&mut input);
    let image_version_floor = opt_u64(&mut input);
    let last_shutdown = opt_text(&mut input);
    let with_config = input.byte() & 1 == 1;
    let payload = input.rest().to_vec();
    let record = StateRecord {
        generation_floor,
        config: with_config.then(|| SignedEnvelope::sign(&signing_key(), payload)),
        last_shutdown,
        image_version_floor,
        upgrade: None,
    };
    match encode(seq, &record) {
        Ok(bytes) => {
            let sealed = check_decode(&bytes).expect("what encode writes decodes");
            assert_eq!(sealed, Sealed { seq, record });
        }
        Err(RecordError::Length { len }) => assert!(len > MAX_PAYLOAD as u64),
        Err(RecordError::Sequence(s)) => assert!(s == seq && seq > MAX_SEQ),
        Err(e) => panic!("encode refused a record: {e}"),
    }
}

fn check_slots(input: &mut Input) {
    let slot = |input: &mut Input| -> Result<Sealed, RecordError> {
        let kind = input.byte();
        let seq = u64_of(input);
        match kind % 4 {
            0 => Err(RecordError::Empty),
            1 => Err(RecordError::Checksum),
            // A record as the agent reads one: written by encode, then decoded.
            _ => match encode(seq, &StateRecord::default()) {
                Ok(bytes) => decode(&bytes),
                Err(e) => Err(e),
            },
        }
    };
    let slots = Slots {
        read: [slot(input), slot(input)],
    };
    let valid: Vec<usize> = (0..2).filter(|&i| slots.read[i].is_ok()).collect();
    let seq = |i: usize| slots.read[i].as_ref().map(|s| s.seq).ok();

    let order = slots.newest_first();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, valid, "newest_first lists exactly the valid slots");
    assert!(
        order.windows(2).all(|w| seq(w[0]) >= seq(w[1])),
        "{order:?} of {slots:?}"
    );

    // The agent only ever holds a valid record in force.
    let pick = input.byte();
    let current = match pick % 3 {
        2 => None,
        i if slots.read[usize::from(i)].is_ok() => Some(usize::from(i)),
        _ => None,
    };
    let (next, next_seq) = slots.next_write(current);
    assert!(next < 2);
    assert_ne!(
        Some(next),
        current,
        "the next write goes over the record in force: {slots:?}"
    );
    if current.is_none() {
        assert_ne!(
            Some(&next),
            order.first(),
            "the next write goes over the newest record: {slots:?}"
        );
    }
    for i in valid {
        assert!(
            next_seq > seq(i).unwrap_or(0),
            "next sequence {next_seq} is not above slot {i}: {slots:?}"
        );
    }
}
