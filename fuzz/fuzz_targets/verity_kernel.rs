//! What basalt-init reads back from the kernel while it sets up and watches
//! the dm-verity root (init/src/verity/): device-mapper ioctl answers
//! (dm.rs), kmsg records naming a corrupted block (corruption.rs), the
//! netlink uevents dm-verity sends for a refused block (watch.rs) and sysfs
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
//! - 4: `[key_len u8][key][uevent]` for `uevent_value`, and the first 8
//!   bytes as a `dev_t` for `decode_dev`;
//! - 5: the rest is a netlink uevent, for `watch::parse_uevent`;
//! - 6 and up: `[kind u8][block u64][devname_len u8][devname][fields]`: the
//!   uevent dm-verity sends, with the input's other NUL-separated fields
//!   before it, for `parse_uevent`.
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
//! - a netlink uevent `parse_uevent` accepts is a `change` carrying a block
//!   number of a known kind, and written back as the kernel would send it
//!   reads back the same; the kernel's uevent, whatever other fields it
//!   carries, reads back to the device, kind and block it was made from;
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
use basalt_init::verity::watch::{parse_uevent, BlockError};
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
        4 => {
            let rest = input.rest();
            check_dev(u64_of(&mut Input::new(rest)));
            let mut input = Input::new(rest);
            let key_len = usize::from(input.byte());
            let key = String::from_utf8_lossy(input.bytes(key_len)).into_owned();
            check_uevent(&String::from_utf8_lossy(input.rest()), &key);
        }
        5 => {
            let _ = check_netlink(input.rest());
        }
        _ => check_kernel_uevent(&mut input),
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

/// A uevent as the kernel's netlink broadcast carries it.
fn netlink(fields: &[&str]) -> Vec<u8> {
    let mut v = Vec::new();
    for f in fields {
        v.extend_from_slice(f.as_bytes());
        v.push(0);
    }
    v
}

fn kind_number(kind: &str) -> &'static str {
    match kind {
        "data" => "0",
        "metadata" => "1",
        other => panic!("parse_uevent gave kind {other:?}"),
    }
}

fn check_netlink(msg: &[u8]) -> Option<BlockError> {
    let got = parse_uevent(msg)?;
    assert!(!got.devname.contains('\0'));
    let nr = format!("DM_VERITY_ERR_BLOCK_NR={},{}", kind_number(got.kind), got.block);
    let devname = format!("DEVNAME={}", got.devname);
    let fields = msg.split(|&b| b == 0).map(|f| std::str::from_utf8(f).ok());
    assert!(
        fields.clone().flatten().any(|f| f.starts_with("change@")),
        "{:?} is not a change",
        String::from_utf8_lossy(msg)
    );
    assert!(fields.flatten().any(|f| f == devname));
    let written = netlink(&["change@/devices/virtual/block/x", "ACTION=change", &nr, &devname]);
    assert_eq!(parse_uevent(&written).as_ref(), Some(&got));
    Some(got)
}

fn check_kernel_uevent(input: &mut Input) {
    let kind = if input.byte() & 1 == 1 { "metadata" } else { "data" };
    let block = u64_of(input);
    let devname_len = usize::from(input.byte());
    let devname = String::from_utf8_lossy(input.bytes(devname_len)).replace('\0', "");
    // Other fields, none of them a DEVNAME or a block number.
    let extra: Vec<String> = String::from_utf8_lossy(input.bytes(usize::MAX))
        .split('\0')
        .filter(|f| !f.starts_with("DEVNAME=") && !f.starts_with("DM_VERITY_ERR_BLOCK_NR="))
        .map(str::to_string)
        .collect();
    let nr = format!("DM_VERITY_ERR_BLOCK_NR={},{block}", kind_number(kind));
    let dev = format!("DEVNAME={devname}");
    let mut fields = vec!["change@/devices/virtual/block/dm-0", "ACTION=change"];
    fields.extend(extra.iter().map(String::as_str));
    fields.push(&nr);
    fields.push(&dev);
    let msg = netlink(&fields);
    let want = BlockError { devname, kind, block };
    assert_eq!(
        check_netlink(&msg),
        Some(want.clone()),
        "{:?}",
        String::from_utf8_lossy(&msg)
    );
    // The same event as any other action reports nothing.
    fields[0] = "add@/devices/virtual/block/dm-0";
    assert_eq!(parse_uevent(&netlink(&fields)), None);
}
