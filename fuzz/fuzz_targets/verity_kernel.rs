//! What basalt-init reads back from the kernel while it sets up and watches
//! the dm-verity root (init/src/verity/): device-mapper ioctl answers
//! (dm.rs), kmsg records naming a corrupted block (corruption.rs) and sysfs
//! uevent files (partition.rs).
//!
//! The first byte picks the mode:
//! - 0: the rest is a `DM_TABLE_STATUS` answer, for `parse_status` and
//!   `parse_header`;
//! - 1: targets made from the input (`[flags u8][count u8]`, then per target
//!   `[start u64][length u64][type_len u8][type][status_len u8][status]`),
//!   written into an answer the way the kernel's retrieve_status does;
//! - 2: the rest is a kmsg record or log line, for `corruption::parse_line`;
//! - 3: `[device major u16][minor u32][kind u8][block u64][prefix_len u8]
//!   [prefix][tail]`: the line dm-verity logs, for `parse_line`;
//! - 4 and up: `[key_len u8][key][uevent]` for `uevent_value`, and the
//!   first 8 bytes as a `dev_t` for `decode_dev`.
//!
//! Checked:
//! - `parse_status` never panics and never returns more targets than the
//!   answer has room for (a header that claims four billion targets is not
//!   four billion allocations); every status is NUL-free and every type at
//!   most 16 bytes;
//! - an answer laid out as the kernel lays one out reads back to exactly the
//!   targets written, and a full buffer is refused;
//! - a kmsg line that names a corrupted block names it again when written
//!   back in the kernel's format; the kernel's format, behind any record
//!   prefix, reads back to the device, kind and block it was made from;
//! - `uevent_value` finds the first `KEY=` line's value and nothing that is
//!   not one; `decode_dev` inverts the kernel's huge_encode_dev.
#![no_main]

use basalt_fuzz::Input;
use basalt_init::verity::corruption::{parse_line, Corruption};
use basalt_init::verity::dm::{
    build_request, decode_dev, offset, parse_header, parse_status, TargetStatus, DM_BUFFER_FULL_FLAG, DM_IOCTL_SIZE,
    DM_MAX_TYPE_NAME, TARGET_SPEC_SIZE,
};
use basalt_init::verity::partition::uevent_value;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.byte() {
        0 => {
            let _ = check_status(input.rest());
        }
        1 => check_kernel_answer(&mut input),
        2 => check_line(&String::from_utf8_lossy(input.rest())),
        3 => check_kernel_line(&mut input),
        _ => {
            let rest = input.rest();
            check_dev(u64_of(&mut Input::new(rest)));
            let mut input = Input::new(rest);
            let key_len = usize::from(input.byte());
            let key = String::from_utf8_lossy(input.bytes(key_len)).into_owned();
            check_uevent(&String::from_utf8_lossy(input.rest()), &key);
        }
    }
});

fn u64_of(input: &mut Input) -> u64 {
    let mut b = [0u8; 8];
    for x in &mut b {
        *x = input.byte();
    }
    u64::from_le_bytes(b)
}

fn check_status(buf: &[u8]) -> Result<Vec<TargetStatus>, String> {
    let got = parse_status(buf);
    let header = parse_header(buf);
    assert_eq!(header.is_some(), buf.len() >= DM_IOCTL_SIZE);
    if let Ok(targets) = &got {
        let h = header.expect("an answer that parses has a header");
        assert_eq!(h.flags & DM_BUFFER_FULL_FLAG, 0);
        assert_eq!(targets.len(), h.target_count as usize);
        // Each target's spec lies in the answer, after the header.
        let room = buf.len().saturating_sub(DM_IOCTL_SIZE) / TARGET_SPEC_SIZE;
        assert!(
            targets.len() <= room,
            "{} targets from {} bytes",
            targets.len(),
            buf.len()
        );
        for t in targets {
            assert!(!t.status.contains('\0') && !t.target_type.contains('\0'));
            // Lossy UTF-8 may widen each of the 16 bytes to three.
            assert!(t.target_type.len() <= 3 * DM_MAX_TYPE_NAME);
        }
    }
    got
}

/// An answer as drivers/md/dm-ioctl.c's retrieve_status writes it: the
/// specs one after another from data_start, each followed by its
/// NUL-terminated status and padded to 8 bytes, `next` counted from the
/// first spec, data_size the bytes used.
fn check_kernel_answer(input: &mut Input) {
    let flags = input.byte();
    let count = usize::from(input.byte() % 40);
    let mut targets = Vec::new();
    for _ in 0..count {
        let start = u64_of(input);
        let length = u64_of(input);
        let type_len = usize::from(input.byte()) % DM_MAX_TYPE_NAME;
        let target_type: String = input.bytes(type_len).iter().map(|&b| char::from(b % 94 + 33)).collect();
        let status_len = usize::from(input.byte());
        let status: String = String::from_utf8_lossy(input.bytes(status_len)).replace('\0', "");
        targets.push(TargetStatus {
            start,
            length,
            target_type,
            status,
        });
    }
    let mut buf = build_request("basalt-root", "", 0, &[], 16 * 1024).expect("a valid request");
    let mut out = Vec::new();
    for t in &targets {
        let mut spec = vec![0u8; TARGET_SPEC_SIZE];
        spec[offset::SPEC_SECTOR_START..offset::SPEC_SECTOR_START + 8].copy_from_slice(&t.start.to_ne_bytes());
        spec[offset::SPEC_LENGTH..offset::SPEC_LENGTH + 8].copy_from_slice(&t.length.to_ne_bytes());
        spec[offset::SPEC_TARGET_TYPE..offset::SPEC_TARGET_TYPE + t.target_type.len()]
            .copy_from_slice(t.target_type.as_bytes());
        spec.extend_from_slice(t.status.as_bytes());
        spec.push(0);
        spec.resize(spec.len().div_ceil(8) * 8, 0);
        let next = (out.len() + spec.len()) as u32;
        spec[offset::SPEC_NEXT..offset::SPEC_NEXT + 4].copy_from_slice(&next.to_ne_bytes());
        out.extend_from_slice(&spec);
    }
    let full = flags & 1 == 1;
    let put = |buf: &mut [u8], at: usize, v: u32| buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    put(&mut buf, offset::TARGET_COUNT, targets.len() as u32);
    put(&mut buf, offset::FLAGS, if full { DM_BUFFER_FULL_FLAG } else { 0 });
    put(&mut buf, offset::DATA_SIZE, (DM_IOCTL_SIZE + out.len()) as u32);
    buf[DM_IOCTL_SIZE..DM_IOCTL_SIZE + out.len()].copy_from_slice(&out);
    let got = check_status(&buf);
    if full {
        assert!(got.is_err(), "a full buffer read as {got:?}");
    } else {
        assert_eq!(got, Ok(targets));
    }
}

/// A corruption written back in the kernel's words.
fn kernel_words(c: &Corruption) -> String {
    format!(
        "device-mapper: verity: {}: {} block {} is corrupted",
        c.device, c.kind, c.block
    )
}

fn check_line(line: &str) {
    let Some(c) = parse_line(line) else {
        return;
    };
    assert!(c.kind == "data" || c.kind == "metadata", "{c:?}");
    assert!(!c.device.contains(": "), "{c:?}");
    assert!(line.contains(&format!(": {} block ", c.kind)));
    assert_eq!(c.to_string(), format!("{} block {} is corrupted", c.kind, c.block));
    // As a kmsg record (the prefix ends at the first ';') and as a bare line.
    let record = format!("3,1,1,-;{}\n", kernel_words(&c));
    assert_eq!(parse_line(&record).as_ref(), Some(&c), "{record:?}");
    if !c.device.contains(';') {
        assert_eq!(parse_line(&kernel_words(&c)).as_ref(), Some(&c));
    }
}

fn check_kernel_line(input: &mut Input) {
    let major = input.u16();
    let minor = u32::from_le_bytes([input.byte(), input.byte(), input.byte(), 0]);
    let kind = if input.byte() & 1 == 1 { "metadata" } else { "data" };
    let block = u64_of(input);
    let prefix_len = usize::from(input.byte());
    let prefix = String::from_utf8_lossy(input.bytes(prefix_len)).replace(';', ",");
    let tail = String::from_utf8_lossy(input.bytes(usize::MAX)).into_owned();
    let want = Corruption {
        device: format!("{major}:{minor}"),
        kind: kind.into(),
        block,
    };
    let record = format!("{prefix};{}", kernel_words(&want));
    assert_eq!(parse_line(&record), Some(want.clone()), "{record:?}");
    assert_eq!(parse_line(&format!("{record}\n")), Some(want.clone()));
    check_line(&format!("{record}{tail}"));
    // Another message from the same target names no block.
    let other = format!("{prefix};device-mapper: verity: {}: {tail}", want.device);
    if let Some(c) = parse_line(&other) {
        assert!(
            tail.contains(" block ") && tail.contains("is corrupted"),
            "{other:?} gave {c:?}"
        );
    }
}

fn check_uevent(uevent: &str, key: &str) {
    let got = uevent_value(uevent, key);
    let prefix = format!("{key}=");
    let first = uevent.lines().find(|l| l.starts_with(&prefix));
    assert_eq!(got, first.map(|l| &l[prefix.len()..]), "{key:?} in {uevent:?}");
    if let Some(v) = got {
        assert!(!v.contains('\n'));
        assert!(uevent.contains(&format!("{key}={v}")));
    }
}

fn check_dev(dev: u64) {
    let (major, minor) = decode_dev(dev);
    assert!(major < 1 << 12 && minor < 1 << 20);
    // huge_encode_dev(MKDEV(major, minor)) gives back the bits decode_dev read.
    let (ma, mi) = (u64::from(major), u64::from(minor));
    let encoded = (mi & 0xff) | (ma << 8) | ((mi & !0xff) << 12);
    assert_eq!(encoded, dev & 0xffff_ffff);
    assert_eq!(decode_dev(encoded), (major, minor));
}
