//! The cpio writer's output, read by GNU cpio: an independent reader.

mod common;

use basalt_mkimage::cpio::{CpioWriter, Entry};
use common::{extract, require_tool, run, TempDir};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

/// Files with every data-padding remainder, a streamed file, a symlink.
fn archive(dir: &TempDir, with_device: bool) -> Vec<u8> {
    let streamed = dir.write(
        "source/streamed",
        &(0..70_001u32).map(|i| (i % 253) as u8).collect::<Vec<_>>(),
    );
    let mut w = CpioWriter::new(Vec::new(), 1_700_000_000);
    w.write_entry(&Entry::dir("d", 0o755)).unwrap();
    for (name, data) in [
        ("d/a", &b""[..]),
        ("d/b", b"1"),
        ("d/c", b"12"),
        ("d/dd", b"123"),
        ("d/eeee", b"1234"),
    ] {
        w.write_entry(&Entry::bytes(name, 0o644, data)).unwrap();
    }
    w.write_entry(&Entry::file("d/streamed", 0o400, &streamed)).unwrap();
    w.write_entry(&Entry::symlink("d/link", "eeee")).unwrap();
    if with_device {
        w.write_entry(&Entry::char_device("console", 0o600, 5, 1)).unwrap();
    }
    w.write_entry(&Entry::bytes("init", 0o755, b"#!/bin/sh\n")).unwrap();
    w.finish().unwrap()
}

#[test]
fn cpio_lists_every_entry() {
    require_tool("cpio", "cpio");
    let dir = TempDir::new("cpio-list");
    let path = dir.write("a.cpio", &archive(&dir, true));
    let list = run(Command::new("cpio")
        .args(["-t", "--quiet"])
        .stdin(std::fs::File::open(&path).unwrap()));
    assert_eq!(
        String::from_utf8(list).unwrap(),
        "d\nd/a\nd/b\nd/c\nd/dd\nd/eeee\nd/streamed\nd/link\nconsole\ninit\n"
    );
    let verbose = run(Command::new("cpio")
        .args(["-tv", "--quiet"])
        .stdin(std::fs::File::open(&path).unwrap()));
    let verbose = String::from_utf8(verbose).unwrap();
    let console = verbose.lines().find(|l| l.ends_with(" console")).unwrap();
    assert!(console.starts_with("crw-------"), "{console}");
    assert!(console.contains(" 5,   1 "), "{console}");
    let link = verbose.lines().find(|l| l.contains("d/link")).unwrap();
    assert!(
        link.starts_with("lrwxrwxrwx") && link.ends_with("d/link -> eeee"),
        "{link}"
    );
    for line in verbose.lines() {
        assert!(line.contains(" root     root "), "owner: {line}");
    }
}

#[test]
fn cpio_extracts_the_same_bytes() {
    let dir = TempDir::new("cpio-extract");
    let path = dir.write("a.cpio", &archive(&dir, false));
    let out = dir.join("out");
    extract(&path, &out);
    for (name, data) in [
        ("d/a", &b""[..]),
        ("d/b", b"1"),
        ("d/c", b"12"),
        ("d/dd", b"123"),
        ("d/eeee", b"1234"),
    ] {
        assert_eq!(std::fs::read(out.join(name)).unwrap(), data, "{name}");
    }
    assert_eq!(
        std::fs::read(out.join("d/streamed")).unwrap(),
        std::fs::read(dir.join("source/streamed")).unwrap()
    );
    assert_eq!(std::fs::read_link(out.join("d/link")).unwrap().to_str(), Some("eeee"));
    let modes = [("d", 0o755), ("d/b", 0o644), ("d/streamed", 0o400), ("init", 0o755)];
    for (name, mode) in modes {
        let meta = std::fs::symlink_metadata(out.join(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "{name}");
        // GNU cpio sets a directory's time before filling it, so only files keep theirs.
        if !meta.is_dir() {
            assert_eq!(meta.mtime(), 1_700_000_000, "{name}");
        }
    }
}
