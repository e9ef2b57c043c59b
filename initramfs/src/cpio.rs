//! A streaming writer for the "newc" cpio format (magic `070701`), the one
//! the kernel unpacks into rootfs before it runs `/init`.
//!
//! Every record is a 110-byte ASCII header of thirteen 8-digit hex fields,
//! the NUL-terminated name, padding to a multiple of 4, the data, and padding
//! to a multiple of 4 again. The archive ends with a record named
//! `TRAILER!!!`. Every entry written here is owned by root (uid 0, gid 0);
//! inode numbers count up from 1 in write order, so the same entries in the
//! same order always give the same bytes.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;
const S_IFLNK: u32 = 0o120000;

/// Bytes copied per read when streaming a file into the archive.
const CHUNK: usize = 1 << 20;

/// Where a regular file's data comes from.
#[derive(Debug, Clone, Copy)]
pub enum Data<'a> {
    Bytes(&'a [u8]),
    /// Streamed from this file in chunks; its length is taken when it is opened.
    File(&'a Path),
}

/// What kind of entry to write, with what it needs.
#[derive(Debug, Clone, Copy)]
pub enum Kind<'a> {
    Dir,
    File(Data<'a>),
    CharDevice { major: u32, minor: u32 },
    Symlink { target: &'a str },
}

/// One archive member. `name` is relative (`dev/console`, not `/dev/console`),
/// as the kernel and `cpio -i` expect; `mode` holds the permission bits only.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub name: &'a str,
    pub mode: u32,
    pub kind: Kind<'a>,
}

impl<'a> Entry<'a> {
    pub fn dir(name: &'a str, mode: u32) -> Self {
        Entry {
            name,
            mode,
            kind: Kind::Dir,
        }
    }

    pub fn bytes(name: &'a str, mode: u32, data: &'a [u8]) -> Self {
        Entry {
            name,
            mode,
            kind: Kind::File(Data::Bytes(data)),
        }
    }

    pub fn file(name: &'a str, mode: u32, path: &'a Path) -> Self {
        Entry {
            name,
            mode,
            kind: Kind::File(Data::File(path)),
        }
    }

    pub fn char_device(name: &'a str, mode: u32, major: u32, minor: u32) -> Self {
        Entry {
            name,
            mode,
            kind: Kind::CharDevice { major, minor },
        }
    }

    pub fn symlink(name: &'a str, target: &'a str) -> Self {
        Entry {
            name,
            mode: 0o777,
            kind: Kind::Symlink { target },
        }
    }
}

/// Why an entry could not be written.
#[derive(Debug)]
pub enum CpioError {
    /// The name cannot be stored: empty, containing NUL, or the trailer's.
    BadName {
        name: String,
        why: &'static str,
    },
    /// Permission bits outside 0o7777.
    BadMode {
        name: String,
        mode: u32,
    },
    /// newc sizes are 32-bit.
    TooLarge {
        name: String,
        size: u64,
    },
    OpenSource {
        path: PathBuf,
        source: io::Error,
    },
    ReadSource {
        path: PathBuf,
        source: io::Error,
    },
    /// The source file changed length while it was being copied.
    SourceChanged {
        path: PathBuf,
        expected: u64,
        copied: u64,
    },
    Write {
        name: String,
        source: io::Error,
    },
}

impl fmt::Display for CpioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpioError::BadName { name, why } => {
                write!(f, "adding cpio entry: {name:?}: {why}")
            }
            CpioError::BadMode { name, mode } => {
                write!(f, "adding cpio entry: {name}: mode {mode:o} has bits outside 7777")
            }
            CpioError::TooLarge { name, size } => write!(
                f,
                "adding cpio entry: {name}: {size} bytes is more than newc's 32-bit size field holds"
            ),
            CpioError::OpenSource { path, source } => {
                write!(f, "opening file to archive: {}: {source}", path.display())
            }
            CpioError::ReadSource { path, source } => {
                write!(f, "reading file to archive: {}: {source}", path.display())
            }
            CpioError::SourceChanged { path, expected, copied } => write!(
                f,
                "reading file to archive: {}: it was {expected} bytes when opened but {copied} could be read",
                path.display()
            ),
            CpioError::Write { name, source } => {
                write!(f, "writing cpio entry: {name}: {source}")
            }
        }
    }
}

impl std::error::Error for CpioError {}

/// The numeric fields of one newc header, in on-disk order after the magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub filesize: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    /// Length of the name including its NUL.
    pub namesize: u32,
    pub check: u32,
}

/// Encodes a header followed by its name, NUL and padding to 4 bytes.
pub fn encode_header(h: &Header, name: &str) -> Vec<u8> {
    let fields = [
        h.ino,
        h.mode,
        h.uid,
        h.gid,
        h.nlink,
        h.mtime,
        h.filesize,
        h.dev_major,
        h.dev_minor,
        h.rdev_major,
        h.rdev_minor,
        h.namesize,
        h.check,
    ];
    let mut out = Vec::with_capacity(HEADER_LEN + name.len() + 4);
    out.extend_from_slice(MAGIC);
    for field in fields {
        out.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.resize(out.len() + pad4(out.len() as u64), 0);
    out
}

/// Bytes of zero padding that bring `len` up to a multiple of 4.
pub fn pad4(len: u64) -> usize {
    ((4 - (len % 4)) % 4) as usize
}

/// Writes entries to `out` one at a time; `finish` adds the trailer.
pub struct CpioWriter<W: Write> {
    out: W,
    mtime: u32,
    next_ino: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    /// Every entry gets `mtime` (seconds since the epoch).
    pub fn new(out: W, mtime: u32) -> Self {
        CpioWriter {
            out,
            mtime,
            next_ino: 1,
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn write_entry(&mut self, entry: &Entry) -> Result<(), CpioError> {
        check_name(entry.name)?;
        if entry.mode & !0o7777 != 0 {
            return Err(CpioError::BadMode {
                name: entry.name.to_string(),
                mode: entry.mode,
            });
        }
        let mut header = Header {
            ino: self.next_ino,
            mode: entry.mode,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: self.mtime,
            filesize: 0,
            dev_major: 0,
            dev_minor: 0,
            rdev_major: 0,
            rdev_minor: 0,
            namesize: name_size(entry.name)?,
            check: 0,
        };
        match entry.kind {
            Kind::Dir => {
                header.mode |= S_IFDIR;
                header.nlink = 2;
                self.put(entry.name, &encode_header(&header, entry.name))?;
            }
            Kind::CharDevice { major, minor } => {
                header.mode |= S_IFCHR;
                header.rdev_major = major;
                header.rdev_minor = minor;
                self.put(entry.name, &encode_header(&header, entry.name))?;
            }
            Kind::Symlink { target } => {
                header.mode |= S_IFLNK;
                header.filesize = file_size(entry.name, target.len() as u64)?;
                self.put(entry.name, &encode_header(&header, entry.name))?;
                self.put_data(entry.name, target.as_bytes())?;
            }
            Kind::File(Data::Bytes(data)) => {
                header.mode |= S_IFREG;
                header.filesize = file_size(entry.name, data.len() as u64)?;
                self.put(entry.name, &encode_header(&header, entry.name))?;
                self.put_data(entry.name, data)?;
            }
            Kind::File(Data::File(path)) => {
                header.mode |= S_IFREG;
                self.stream_file(entry.name, header, path)?;
            }
        }
        self.next_ino += 1;
        Ok(())
    }

    /// Writes the trailer record and returns the underlying writer, flushed.
    pub fn finish(mut self) -> Result<W, CpioError> {
        let header = Header {
            ino: 0,
            mode: 0,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: 0,
            filesize: 0,
            dev_major: 0,
            dev_minor: 0,
            rdev_major: 0,
            rdev_minor: 0,
            namesize: TRAILER.len() as u32 + 1,
            check: 0,
        };
        self.put(TRAILER, &encode_header(&header, TRAILER))?;
        self.out.flush().map_err(|source| CpioError::Write {
            name: TRAILER.to_string(),
            source,
        })?;
        Ok(self.out)
    }

    fn stream_file(&mut self, name: &str, mut header: Header, path: &Path) -> Result<(), CpioError> {
        let file = File::open(path).map_err(|source| CpioError::OpenSource {
            path: path.to_path_buf(),
            source,
        })?;
        let len = file
            .metadata()
            .map_err(|source| CpioError::ReadSource {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        header.filesize = file_size(name, len)?;
        self.put(name, &encode_header(&header, name))?;
        // Read one byte past the expected end so a file that grew is noticed.
        let mut reader = file.take(len + 1);
        let mut buf = vec![0u8; CHUNK];
        let mut copied = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(CpioError::ReadSource {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            };
            copied += n as u64;
            if copied > len {
                break;
            }
            self.put(name, &buf[..n])?;
        }
        if copied != len {
            return Err(CpioError::SourceChanged {
                path: path.to_path_buf(),
                expected: len,
                copied,
            });
        }
        self.put(name, &[0; 3][..pad4(len)])
    }

    fn put_data(&mut self, name: &str, data: &[u8]) -> Result<(), CpioError> {
        self.put(name, data)?;
        self.put(name, &[0; 3][..pad4(data.len() as u64)])
    }

    fn put(&mut self, name: &str, bytes: &[u8]) -> Result<(), CpioError> {
        self.out.write_all(bytes).map_err(|source| CpioError::Write {
            name: name.to_string(),
            source,
        })?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), CpioError> {
    let why = if name.is_empty() {
        "empty name"
    } else if name.contains('\0') {
        "name contains NUL"
    } else if name == TRAILER {
        "name is the trailer's"
    } else {
        return Ok(());
    };
    Err(CpioError::BadName {
        name: name.to_string(),
        why,
    })
}

fn name_size(name: &str) -> Result<u32, CpioError> {
    u32::try_from(name.len() + 1).map_err(|_| CpioError::BadName {
        name: name.to_string(),
        why: "name too long",
    })
}

fn file_size(name: &str, size: u64) -> Result<u32, CpioError> {
    u32::try_from(size).map_err(|_| CpioError::TooLarge {
        name: name.to_string(),
        size,
    })
}

/// One record of a newc archive, as [`read_archive`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub name: String,
    pub ino: u32,
    pub mode: u32,
    pub nlink: u32,
    pub data: &'a [u8],
}

/// Why bytes are not a newc archive, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    NoTrailer { at: usize },
    NotNewc { at: usize },
    BadField { at: usize, text: String },
    NameOverrun { at: usize },
    DataOverrun { name: String },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::NoTrailer { at } => write!(f, "archive ends at byte {at} without a trailer"),
            ReadError::NotNewc { at } => write!(f, "byte {at}: not a newc header"),
            ReadError::BadField { at, text } => write!(f, "byte {at}: field {text:?} is not hex"),
            ReadError::NameOverrun { at } => write!(f, "byte {at}: name runs past the end"),
            ReadError::DataOverrun { name } => write!(f, "{name}: data runs past the end"),
        }
    }
}

impl std::error::Error for ReadError {}

/// Every record of a newc archive before its trailer, in order, and the
/// offset just past the trailer (anything after it is not read). For
/// tools that look at what [`CpioWriter`] made: sizes, listings.
pub fn read_archive(bytes: &[u8]) -> Result<(Vec<Record<'_>>, usize), ReadError> {
    let (mut records, mut at) = (Vec::new(), 0usize);
    loop {
        let header = bytes.get(at..at + HEADER_LEN).ok_or(ReadError::NoTrailer { at })?;
        if &header[..6] != MAGIC {
            return Err(ReadError::NotNewc { at });
        }
        let field = |i: usize| {
            let text = String::from_utf8_lossy(&header[6 + 8 * i..14 + 8 * i]);
            u32::from_str_radix(&text, 16).map_err(|_| ReadError::BadField { at, text: text.into() })
        };
        let (ino, mode, nlink, size, namesize) = (field(0)?, field(1)?, field(4)?, field(6)? as usize, field(11)?);
        let name_end = at + HEADER_LEN + namesize as usize;
        let name = bytes
            .get(at + HEADER_LEN..name_end.saturating_sub(1))
            .ok_or(ReadError::NameOverrun { at })?;
        let name = String::from_utf8_lossy(name).into_owned();
        let data_at = name_end + pad4(HEADER_LEN as u64 + namesize as u64);
        at = data_at + size + pad4(size as u64);
        if at > bytes.len() {
            return Err(ReadError::DataOverrun { name });
        }
        if name == TRAILER {
            return Ok((records, at));
        }
        let data = &bytes[data_at..data_at + size];
        records.push(Record {
            name,
            ino,
            mode,
            nlink,
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header written out by hand, field by field, then the name and data
    /// with their padding spelled out.
    fn expected(fields: [&str; 13], name_padded: &[u8], data_padded: &[u8]) -> Vec<u8> {
        let mut out = b"070701".to_vec();
        for f in fields {
            assert_eq!(f.len(), 8);
            out.extend_from_slice(f.as_bytes());
        }
        out.extend_from_slice(name_padded);
        out.extend_from_slice(data_padded);
        out
    }

    #[test]
    fn the_reader_reads_what_the_writer_wrote_and_refuses_the_rest() {
        let mut w = CpioWriter::new(Vec::new(), 0);
        w.write_entry(&Entry::dir("basalt", 0o755)).unwrap();
        w.write_entry(&Entry::bytes("basalt/init", 0o755, b"0123456789"))
            .unwrap();
        let good = w.finish().unwrap();
        let (records, end) = read_archive(&good).unwrap();
        let got: Vec<(&str, u32, u32, &[u8])> = records.iter().map(|r| (&r.name[..], r.ino, r.mode, r.data)).collect();
        assert_eq!(
            got,
            [
                ("basalt", 1, 0o040755, &b""[..]),
                ("basalt/init", 2, 0o100755, b"0123456789")
            ]
        );
        assert_eq!(end, good.len());
        let cases: [(&[u8], &str); 5] = [
            (b"", "archive ends at byte 0 without a trailer"),
            (&[b'0'; 120], "byte 0: not a newc header"),
            (&good[..250], "basalt/init: data runs past the end"),
            (&good[..260], "archive ends at byte 256 without a trailer"),
            (
                &[&b"070701"[..], &[b'x'; 110]].concat(),
                "byte 0: field \"xxxxxxxx\" is not hex",
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(read_archive(bytes).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn records_match_hand_written_bytes() {
        //            ino         mode        uid         gid         nlink       mtime
        //            filesize    devmaj      devmin      rdevmaj     rdevmin     namesize    check
        let cases: Vec<(Entry, Vec<u8>)> = vec![
            (
                Entry::dir("dev", 0o755),
                expected(
                    [
                        "00000001", "000041ED", "00000000", "00000000", "00000002", "000004D2", "00000000", "00000000",
                        "00000000", "00000000", "00000000", "00000004", "00000000",
                    ],
                    // 110 + 4 = 114: two bytes of padding.
                    b"dev\0\0\0",
                    b"",
                ),
            ),
            (
                Entry::bytes("init", 0o755, b"hello"),
                expected(
                    [
                        "00000001", "000081ED", "00000000", "00000000", "00000001", "000004D2", "00000005", "00000000",
                        "00000000", "00000000", "00000000", "00000005", "00000000",
                    ],
                    // 110 + 5 = 115: one byte; 5 bytes of data: three.
                    b"init\0\0",
                    b"hello\0\0\0",
                ),
            ),
            (
                Entry::bytes("basalt/a.ko", 0o444, b"12345678"),
                expected(
                    [
                        "00000001", "00008124", "00000000", "00000000", "00000001", "000004D2", "00000008", "00000000",
                        "00000000", "00000000", "00000000", "0000000C", "00000000",
                    ],
                    // 110 + 12 = 122: two bytes; data already aligned.
                    b"basalt/a.ko\0\0\0",
                    b"12345678",
                ),
            ),
            (
                Entry::char_device("dev/console", 0o600, 5, 1),
                expected(
                    [
                        "00000001", "00002180", "00000000", "00000000", "00000001", "000004D2", "00000000", "00000000",
                        "00000000", "00000005", "00000001", "0000000C", "00000000",
                    ],
                    b"dev/console\0\0\0",
                    b"",
                ),
            ),
            (
                Entry::symlink("bin/sh", "busybox"),
                expected(
                    [
                        "00000001", "0000A1FF", "00000000", "00000000", "00000001", "000004D2", "00000007", "00000000",
                        "00000000", "00000000", "00000000", "00000007", "00000000",
                    ],
                    // 110 + 7 = 117: three bytes; 7 bytes of target: one.
                    b"bin/sh\0\0\0\0",
                    b"busybox\0",
                ),
            ),
        ];
        for (entry, want) in cases {
            let mut w = CpioWriter::new(Vec::new(), 1234);
            w.write_entry(&entry).unwrap();
            assert_eq!(w.written(), want.len() as u64, "{}", entry.name);
            assert_eq!(
                String::from_utf8_lossy(&w.out),
                String::from_utf8_lossy(&want),
                "{}",
                entry.name
            );
            assert_eq!(w.out.len() % 4, 0, "{}", entry.name);
        }
    }

    #[test]
    fn trailer_matches_hand_written_bytes() {
        let want = expected(
            [
                "00000000", "00000000", "00000000", "00000000", "00000001", "00000000", "00000000", "00000000",
                "00000000", "00000000", "00000000", "0000000B", "00000000",
            ],
            // 110 + 11 = 121: three bytes.
            b"TRAILER!!!\0\0\0\0",
            b"",
        );
        let out = CpioWriter::new(Vec::new(), 99).finish().unwrap();
        assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&want));
    }

    #[test]
    fn inodes_count_up_in_write_order() {
        let mut w = CpioWriter::new(Vec::new(), 0);
        w.write_entry(&Entry::dir("a", 0o755)).unwrap();
        w.write_entry(&Entry::bytes("a/b", 0o644, b"x")).unwrap();
        w.write_entry(&Entry::dir("c", 0o700)).unwrap();
        let out = w.finish().unwrap();
        let text = String::from_utf8_lossy(&out);
        let inos: Vec<&str> = text
            .match_indices("070701")
            .map(|(i, _)| &text[i + 6..i + 14])
            .collect();
        assert_eq!(inos, ["00000001", "00000002", "00000003", "00000000"]);
    }

    #[test]
    fn file_entries_stream_from_disk_like_bytes() {
        let dir = std::env::temp_dir().join(format!("basalt-cpio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Larger than one chunk, and not a multiple of 4.
        let data: Vec<u8> = (0..CHUNK as u32 * 2 + 3).map(|i| (i % 251) as u8).collect();
        let path = dir.join("data");
        std::fs::write(&path, &data).unwrap();
        let mut from_file = CpioWriter::new(Vec::new(), 7);
        from_file.write_entry(&Entry::file("x", 0o444, &path)).unwrap();
        let mut from_bytes = CpioWriter::new(Vec::new(), 7);
        from_bytes.write_entry(&Entry::bytes("x", 0o444, &data)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            from_file.out == from_bytes.out,
            "streamed entry differs from in-memory one"
        );

        let missing = dir.join("missing");
        let err = CpioWriter::new(Vec::new(), 0)
            .write_entry(&Entry::file("x", 0o444, &missing))
            .unwrap_err();
        assert!(matches!(err, CpioError::OpenSource { .. }), "{err}");
    }

    #[test]
    fn rejects_unstorable_entries() {
        let cases: Vec<(Entry, &str)> = vec![
            (Entry::dir("", 0o755), "empty name"),
            (Entry::dir("a\0b", 0o755), "name contains NUL"),
            (Entry::dir("TRAILER!!!", 0o755), "name is the trailer's"),
            (Entry::dir("a", 0o10755), "mode 10755 has bits outside 7777"),
        ];
        for (entry, needle) in cases {
            let mut w = CpioWriter::new(Vec::new(), 0);
            let err = w.write_entry(&entry).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
            assert!(w.out.is_empty(), "nothing written for a refused entry");
        }
    }

    #[test]
    fn sizes_must_fit_32_bits() {
        assert_eq!(file_size("x", u64::from(u32::MAX)).unwrap(), u32::MAX);
        let err = file_size("big", 1 << 32).unwrap_err().to_string();
        assert_eq!(
            err,
            "adding cpio entry: big: 4294967296 bytes is more than newc's 32-bit size field holds"
        );
    }

    #[test]
    fn padding() {
        let cases = [(0, 0), (1, 3), (2, 2), (3, 1), (4, 0), (110, 2), (121, 3)];
        for (len, pad) in cases {
            assert_eq!(pad4(len), pad, "{len}");
        }
    }
}
