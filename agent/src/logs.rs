//! Service logs: one bounded file per source in `/run/basalt/log/`.
//!
//! A service's stdout and stderr are `<name>.log`, opened `O_APPEND` for the
//! child itself, so a service never blocks on or dies of a pipe when the
//! agent is busy or restarting. The agent
//! - echoes new lines to the console as `[<name>] line` ([`Echo`]);
//! - keeps each file bounded like a ring: once more than the cap is stored,
//!   it punches the oldest data out at a line boundary with
//!   `fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)` ([`trim`]). The
//!   size keeps growing, so offsets stay valid as cursors; `SEEK_DATA` finds
//!   where live data starts, and the zeroed rest of a partly punched page is
//!   skipped by readers;
//! - serves the tail, or what came after a cursor, to `logs` requests.

use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};
use nix::unistd::{lseek, Whence};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The most bytes one `logs` response reads.
pub const MAX_READ: usize = 256 * 1024;
/// Console echo budget per pump, across all sources: the serial console is slow.
pub const ECHO_BUDGET: usize = 16 * 1024;
/// When the echo falls further behind than this, it skips ahead.
const MAX_BACKLOG: u64 = 64 * 1024;
/// A line longer than this is echoed in pieces.
const MAX_PARTIAL: usize = 4096;

/// Lines read from a log, and the cursor to continue from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub lines: Vec<String>,
    /// Offset just past the last complete line returned.
    pub cursor: u64,
    /// Data between the requested cursor and the first line was lost to the ring.
    pub truncated: bool,
}

pub fn log_path(dir: &Path, source: &str) -> PathBuf {
    dir.join(format!("{source}.log"))
}

/// Opens a log for appending (a child's stdout and stderr, or the agent's own log).
pub fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).mode(0o640).open(path)
}

/// Where live data starts: after the holes [`trim`] punched.
fn data_start(file: &File, size: u64) -> u64 {
    match lseek(file.as_raw_fd(), 0, Whence::SeekData) {
        Ok(at) => at as u64,
        // ENXIO: nothing but holes from 0 to the end.
        Err(Errno::ENXIO) => size,
        Err(_) => 0,
    }
}

fn read_window(file: &File, from: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match file.read_at(&mut buf[got..], from + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// Splits file bytes that start at offset `start` into complete lines.
/// Leading NULs (the zeroed part of a punched page) are skipped; unless
/// `clean_start`, the first (partial) line is dropped. Returns the lines and
/// the offset just past the last newline, or `start` if there was none.
pub fn split_lines(window: &[u8], start: u64, clean_start: bool) -> (Vec<String>, u64) {
    let Some(last_nl) = window.iter().rposition(|&b| b == b'\n') else {
        return (Vec::new(), start);
    };
    let cursor = start + last_nl as u64 + 1;
    let mut body = &window[..last_nl];
    let zeros = body.iter().take_while(|&&b| b == 0).count();
    let after_zeros = &window[zeros..=last_nl];
    if !clean_start {
        match after_zeros.iter().position(|&b| b == b'\n') {
            Some(first_nl) if zeros + first_nl == last_nl => return (Vec::new(), cursor),
            Some(first_nl) => body = &window[zeros + first_nl + 1..last_nl],
            None => return (Vec::new(), cursor),
        }
    } else {
        body = &window[zeros..last_nl];
    }
    let lines = body
        .split(|&b| b == b'\n')
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    (lines, cursor)
}

/// The last `n` complete lines of a log.
pub fn read_tail(file: &File, n: usize) -> io::Result<LogChunk> {
    let size = file.metadata()?.len();
    let live = data_start(file, size);
    let from = live.max(size.saturating_sub(MAX_READ as u64));
    // Zeros only ever precede a line boundary: they are what a punch left.
    let clean = from == live || matches!(read_window(file, from - 1, 1)?.first(), Some(b'\n' | 0));
    let window = read_window(file, from, (size - from) as usize)?;
    let (mut lines, cursor) = split_lines(&window, from, clean);
    if lines.len() > n {
        lines.drain(..lines.len() - n);
    }
    Ok(LogChunk {
        lines,
        cursor,
        truncated: false,
    })
}

/// Complete lines after `cursor` (an offset an earlier chunk returned).
pub fn read_since(file: &File, cursor: u64) -> io::Result<LogChunk> {
    let size = file.metadata()?.len();
    let live = data_start(file, size);
    // A cursor past the end belongs to an older file (a previous boot, say).
    let (from, truncated) = if cursor > size || cursor < live {
        (live, true)
    } else {
        (cursor, false)
    };
    let len = ((size - from) as usize).min(MAX_READ);
    let window = read_window(file, from, len)?;
    let (lines, next) = split_lines(&window, from, true);
    if lines.is_empty() && window.len() == MAX_READ {
        // One line longer than a whole read: hand it over in pieces.
        let piece = String::from_utf8_lossy(&window).into_owned();
        return Ok(LogChunk {
            lines: vec![piece],
            cursor: from + len as u64,
            truncated,
        });
    }
    Ok(LogChunk {
        lines,
        cursor: next,
        truncated,
    })
}

/// Opens a log to trim it: punching holes needs a writable descriptor.
pub fn open_for_trim(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// Keeps a log at most `cap` bytes of live data: when it holds more, the
/// oldest data is punched out down to three quarters of the cap, cut at a
/// line boundary. Returns how many bytes were released. `file` must be open
/// for reading and writing ([`open_for_trim`]).
pub fn trim(file: &File, cap: u64) -> io::Result<u64> {
    let size = file.metadata()?.len();
    let live = data_start(file, size);
    if size - live <= cap {
        return Ok(0);
    }
    let target = size - cap / 4 * 3;
    let probe = read_window(file, target, 64 * 1024)?;
    let cut = match probe.iter().position(|&b| b == b'\n') {
        Some(at) => target + at as u64 + 1,
        None => target,
    };
    // Start at the page holding the first live byte, so nothing is punched twice.
    let from = live & !4095;
    fallocate(
        file.as_raw_fd(),
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        from as i64,
        (cut - from) as i64,
    )
    .map_err(io::Error::from)?;
    Ok(cut - live)
}

/// Copies new lines of one log to the console, prefixed with its source.
#[derive(Debug)]
pub struct Echo {
    source: String,
    path: PathBuf,
    file: Option<File>,
    /// Next offset to echo.
    offset: u64,
    partial: Vec<u8>,
}

impl Echo {
    /// A log that already exists was echoed by an earlier agent, or holds an
    /// earlier generation's output: the echo starts at its end. A log that
    /// does not exist yet is echoed from its first byte.
    pub fn new(source: &str, path: PathBuf) -> Self {
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Echo {
            source: source.into(),
            path,
            file: None,
            offset,
            partial: Vec::new(),
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Echoes what was appended since the last pump, within `budget` bytes.
    pub fn pump(&mut self, budget: &mut usize, out: &mut dyn Write) -> io::Result<()> {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        let Some(file) = &self.file else { return Ok(()) };
        let size = file.metadata()?.len();
        let mut offset = self.offset;
        if size < offset {
            offset = 0;
            self.partial.clear();
        }
        let live = data_start(file, size);
        if offset < live {
            offset = live;
            self.partial.clear();
        }
        let backlog = size - offset;
        if backlog > MAX_BACKLOG {
            let note = format!(
                "[{}] ... {backlog} bytes not shown here; `basaltctl logs {}` has them\n",
                self.source, self.source
            );
            out.write_all(note.as_bytes())?;
            self.offset = size;
            self.partial.clear();
            return Ok(());
        }
        let take = (backlog as usize).min(*budget);
        self.offset = offset;
        if take == 0 {
            return Ok(());
        }
        let bytes = read_window(file, offset, take)?;
        *budget -= bytes.len();
        self.offset = offset + bytes.len() as u64;
        let mut text = Vec::new();
        for &b in &bytes {
            match b {
                0 => {}
                b'\n' => {
                    self.line_into(&mut text);
                }
                _ => {
                    self.partial.push(b);
                    if self.partial.len() >= MAX_PARTIAL {
                        self.line_into(&mut text);
                    }
                }
            }
        }
        out.write_all(&text)
    }

    fn line_into(&mut self, text: &mut Vec<u8>) {
        text.extend_from_slice(format!("[{}] ", self.source).as_bytes());
        text.append(&mut self.partial);
        text.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    /// Window, its start offset, whether it starts clean, lines and cursor expected.
    type SplitCase<'a> = (&'a [u8], u64, bool, &'a [&'a str], u64);

    #[test]
    fn split_lines_table() {
        let cases: &[SplitCase] = &[
            (b"a\nb\n", 0, true, &["a", "b"], 4),
            (b"a\nb\npart", 10, true, &["a", "b"], 14),
            (b"tial\nb\n", 10, false, &["b"], 17),
            (b"tial\n", 10, false, &[], 15),
            (b"no newline", 3, true, &[], 3),
            (b"\0\0\0a\nb\n", 0, true, &["a", "b"], 7),
            (b"\0\0x\ny\n", 0, false, &["y"], 6),
            (b"\n\n", 0, true, &["", ""], 2),
            (b"\xffx\n", 0, true, &["\u{fffd}x"], 3),
        ];
        for (window, start, clean, lines, cursor) in cases {
            assert_eq!(split_lines(window, *start, *clean), (s(lines), *cursor), "{window:?}");
        }
    }

    fn temp_file(name: &str) -> (PathBuf, File) {
        let dir = std::env::temp_dir().join(format!("basalt-logs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.log");
        let file = open_append(&path).unwrap();
        (path, file)
    }

    #[test]
    fn ring_keeps_the_newest_lines_and_cursors_stay_valid() {
        let (path, mut writer) = temp_file("ring");
        let reader = open_for_trim(&path).unwrap();
        let cap = 64 * 1024;
        let mut cursor = 0;
        for i in 0..20_000 {
            writeln!(writer, "line {i:05} {}", "x".repeat(20)).unwrap();
            if i % 1000 == 999 {
                trim(&reader, cap).unwrap();
            }
            if i == 100 {
                cursor = read_tail(&reader, 1).unwrap().cursor;
            }
        }
        trim(&reader, cap).unwrap();
        let size = reader.metadata().unwrap().len();
        let live = size - data_start(&reader, size);
        assert!(live <= cap + 4096, "{live} bytes live");
        // Punching really released the space, where the filesystem supports it.
        use std::os::unix::fs::MetadataExt;
        let allocated = reader.metadata().unwrap().blocks() * 512;
        assert!(allocated <= cap + 64 * 1024, "{allocated} bytes allocated");

        let tail = read_tail(&reader, 3).unwrap();
        let want: Vec<String> = (19_997..20_000)
            .map(|i| format!("line {i:05} {}", "x".repeat(20)))
            .collect();
        assert_eq!(tail.lines, want);
        assert_eq!(tail.cursor, size);

        // An old cursor now points into the punched region: truncated, and
        // the first line returned is a whole line.
        let since = read_since(&reader, cursor).unwrap();
        assert!(since.truncated);
        assert!(
            since.lines[0].starts_with("line ") && since.lines[0].len() == 31,
            "{:?}",
            since.lines[0]
        );

        writeln!(writer, "after").unwrap();
        writer.write_all(b"unfinished").unwrap();
        let next = read_since(&reader, tail.cursor).unwrap();
        assert_eq!((next.lines, next.truncated), (s(&["after"]), false));
        assert_eq!(next.cursor, size + 6);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn tail_of_short_and_empty_logs() {
        let (path, mut writer) = temp_file("short");
        let reader = File::open(&path).unwrap();
        assert_eq!(
            read_tail(&reader, 10).unwrap(),
            LogChunk {
                lines: vec![],
                cursor: 0,
                truncated: false
            }
        );
        writer.write_all(b"one\ntwo\nthr").unwrap();
        assert_eq!(read_tail(&reader, 10).unwrap().lines, s(&["one", "two"]));
        assert_eq!(read_tail(&reader, 1).unwrap().lines, s(&["two"]));
        assert!(read_since(&reader, 99).unwrap().truncated);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn echo_prefixes_lines_and_skips_old_content() {
        let (path, mut writer) = temp_file("echo");
        writer.write_all(b"before the agent looked\n").unwrap();
        let mut echo = Echo::new("svc", path.clone());
        let mut out = Vec::new();
        let mut budget = ECHO_BUDGET;
        echo.pump(&mut budget, &mut out).unwrap();
        assert!(out.is_empty());
        writer.write_all(b"hello\nwor").unwrap();
        echo.pump(&mut budget, &mut out).unwrap();
        writer.write_all(b"ld\n").unwrap();
        echo.pump(&mut budget, &mut out).unwrap();
        assert_eq!(String::from_utf8(out.clone()).unwrap(), "[svc] hello\n[svc] world\n");
        assert_eq!(budget, ECHO_BUDGET - 12);

        // Far behind: skip ahead with a note instead of flooding the console.
        writer.write_all(&vec![b'z'; 100_000]).unwrap();
        writer.write_all(b"\nlatest\n").unwrap();
        out.clear();
        let mut budget = ECHO_BUDGET;
        echo.pump(&mut budget, &mut out).unwrap();
        assert!(String::from_utf8_lossy(&out).contains("bytes not shown here"));
        writer.write_all(b"fresh\n").unwrap();
        out.clear();
        echo.pump(&mut budget, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "[svc] fresh\n");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
