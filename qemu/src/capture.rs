//! Capturing an output stream of QEMU: a thread reads the pipe into memory
//! (raw bytes, nothing stripped, partial lines included), appends each chunk
//! to an optional log file and an optional tee (our stdout), and wakes
//! waiters.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Default)]
pub(crate) struct Capture {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    bytes: Vec<u8>,
    /// The writer closed the pipe (QEMU exited) or reading it failed.
    closed: bool,
}

/// Outcome of waiting for a needle.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// The needle ends at this offset.
    At(usize),
    Closed,
    TimedOut,
}

impl Capture {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        self.lock().bytes.clone()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().bytes.len()
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock().bytes).into_owned()
    }

    pub(crate) fn tail(&self, lines: usize) -> String {
        tail_lines(&self.lock().bytes, lines)
    }

    fn push(&self, chunk: &[u8]) {
        self.lock().bytes.extend_from_slice(chunk);
        self.changed.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Waits up to `timeout` for the stream to close; whether it did.
    pub(crate) fn wait_closed(&self, timeout: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |s| !s.closed)
            .unwrap_or_else(PoisonError::into_inner);
        state.closed
    }

    /// Waits until `needle` occurs at or after byte `from`, the stream
    /// closes, or `timeout` passes.
    pub(crate) fn wait_for(&self, needle: &[u8], from: usize, timeout: Duration) -> Found {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.lock();
        // Bytes before `scanned` cannot start a match: each wake searches
        // only the new bytes plus a needle's length of overlap.
        let mut scanned = from;
        loop {
            if let Some(end) = find(&state.bytes, needle, scanned) {
                return Found::At(end);
            }
            scanned = state.bytes.len().saturating_sub(needle.len()).max(from);
            if state.closed {
                return Found::Closed;
            }
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return Found::TimedOut;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// The end offset of the first `needle` starting at or after `from`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from > haystack.len() {
        return None;
    }
    if needle.is_empty() {
        return Some(from);
    }
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|at| from + at + needle.len())
}

/// The last `n` lines of `bytes` as lossy UTF-8 (a partial last line counts
/// as a line).
pub(crate) fn tail_lines(bytes: &[u8], n: usize) -> String {
    if n == 0 {
        return String::new();
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|&(_, &b)| b == b'\n')
        .nth(n - 1)
        .map_or(0, |(i, _)| i + 1);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// Where a captured stream is copied besides memory.
pub(crate) struct Sinks {
    pub(crate) log: Option<(PathBuf, File)>,
    pub(crate) tee: Option<Box<dyn Write + Send>>,
}

/// Starts the thread that drains `pipe` into `capture` until EOF.
pub(crate) fn spawn_reader(
    name: &str,
    mut pipe: impl Read + Send + 'static,
    capture: Arc<Capture>,
    mut sinks: Sinks,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.to_string()).spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let chunk = &buf[..n];
            capture.push(chunk);
            if let Some((path, file)) = &mut sinks.log {
                if let Err(e) = file.write_all(chunk) {
                    // The console is still kept in memory; only the log stops.
                    eprintln!("basalt-qemu: console log {}: {e}; no longer writing it", path.display());
                    sinks.log = None;
                }
            }
            if let Some(tee) = &mut sinks.tee {
                if tee.write_all(chunk).and_then(|()| tee.flush()).is_err() {
                    sinks.tee = None;
                }
            }
        }
        capture.close();
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_needles() {
        // (haystack, needle, from, end of match)
        type Case = (&'static [u8], &'static [u8], usize, Option<usize>);
        let cases: &[Case] = &[
            (b"hello world", b"world", 0, Some(11)),
            (b"hello world", b"world", 6, Some(11)),
            (b"hello world", b"world", 7, None),
            (b"abcabc", b"abc", 1, Some(6)),
            (b"abc", b"", 2, Some(2)),
            (b"abc", b"abcd", 0, None),
            (b"abc", b"a", 9, None),
        ];
        for (hay, needle, from, want) in cases {
            assert_eq!(find(hay, needle, *from), *want, "{hay:?} {needle:?} from {from}");
        }
    }

    #[test]
    fn tails() {
        let cases: &[(&[u8], usize, &str)] = &[
            (b"", 3, ""),
            (b"a\nb\nc\n", 2, "b\nc\n"),
            (b"a\nb\nc", 2, "b\nc"),
            (b"a\nb\nc\n", 5, "a\nb\nc\n"),
            (b"a\nb\nc\n", 0, ""),
            (b"one line, no newline", 1, "one line, no newline"),
            (b"x\n\xff\xfe\n", 1, "\u{fffd}\u{fffd}\n"),
        ];
        for (bytes, n, want) in cases {
            assert_eq!(tail_lines(bytes, *n), *want, "{bytes:?} last {n}");
        }
    }

    #[test]
    fn waiting_sees_partial_lines_split_across_chunks_and_closing() {
        let capture = Arc::new(Capture::default());
        let writer = {
            let capture = capture.clone();
            std::thread::spawn(move || {
                for chunk in [&b"boot: MAR"[..], b"KER-", b"UP", b" tail without newline"] {
                    std::thread::sleep(Duration::from_millis(20));
                    capture.push(chunk);
                }
                capture.close();
            })
        };
        let end = capture.wait_for(b"MARKER-UP", 0, Duration::from_secs(10));
        assert_eq!(end, Found::At(15));
        assert_eq!(
            capture.wait_for(b"MARKER-UP", 15, Duration::from_secs(10)),
            Found::Closed
        );
        writer.join().unwrap();
        assert_eq!(capture.text(), "boot: MARKER-UP tail without newline");
    }

    #[test]
    fn waiting_times_out() {
        let capture = Capture::default();
        capture.push(b"nothing here");
        let started = Instant::now();
        assert_eq!(capture.wait_for(b"x", 0, Duration::from_millis(50)), Found::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
