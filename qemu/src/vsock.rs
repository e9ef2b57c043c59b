//! Host-to-guest vsock connections through vhost-device-vsock's unix
//! socket (`--uds-path`): connect, send `CONNECT <port>\n`, read
//! `OK <port>\n`, and the stream then carries the guest connection.
//!
//! vhost-device-vsock 0.3 never answers with an error line. It closes the
//! connection instead, both when the guest driver is not up yet (it accepts
//! and closes at once: the client sees EPIPE or ECONNRESET) and when no
//! guest program listens on the port (the guest answers RST and the daemon
//! drops the stream: the client reads EOF). All of those mean "not yet", so
//! they are retried until the timeout; a reply that is not `OK <number>` is
//! an error at once. The number is the guest port for vhost-device-vsock
//! (Firecracker's hybrid vsock sends its host-side port), so it is not
//! compared with the port asked for.

use crate::error::QemuError;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

const RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// A reply longer than this without a newline is not an `OK` line.
const MAX_REPLY: usize = 32;

/// What the daemon said to `CONNECT`.
#[derive(Debug, PartialEq, Eq)]
pub enum ConnectReply {
    /// `OK <port>\n`.
    Ok(u32),
    /// Closed without a byte: nobody (yet) listening on the guest port.
    Closed,
    /// Anything else, including a line cut short by EOF.
    Invalid,
}

/// Classifies the bytes read after `CONNECT`, up to and including the
/// first newline (or everything before EOF).
pub fn parse_connect_reply(reply: &[u8]) -> ConnectReply {
    if reply.is_empty() {
        return ConnectReply::Closed;
    }
    let Some(line) = reply.strip_suffix(b"\n") else {
        return ConnectReply::Invalid;
    };
    let Some(port) = line.strip_prefix(b"OK ") else {
        return ConnectReply::Invalid;
    };
    if port.is_empty() || !port.iter().all(u8::is_ascii_digit) {
        return ConnectReply::Invalid;
    }
    std::str::from_utf8(port)
        .ok()
        .and_then(|p| p.parse().ok())
        .map_or(ConnectReply::Invalid, ConnectReply::Ok)
}

/// Connects to guest vsock `port` through the daemon socket `uds_path`,
/// retrying until `timeout` while the socket is missing or the guest is not
/// listening yet. The returned stream has no read or write timeout.
pub fn vsock_connect(uds_path: &Path, port: u32, timeout: Duration) -> Result<UnixStream, QemuError> {
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        let last = match attempt(uds_path, port, deadline)? {
            Attempt::Connected(stream) => return Ok(stream),
            Attempt::NotYet(why) => why,
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(QemuError::VsockTimeout {
                path: uds_path.to_path_buf(),
                port,
                waited: now - started,
                last,
            });
        }
        std::thread::sleep(RETRY_INTERVAL.min(deadline - now));
    }
}

enum Attempt {
    Connected(UnixStream),
    NotYet(String),
}

fn attempt(uds_path: &Path, port: u32, deadline: Instant) -> Result<Attempt, QemuError> {
    let mut stream = match UnixStream::connect(uds_path) {
        Ok(stream) => stream,
        Err(e) if retryable_connect(&e) => return Ok(Attempt::NotYet(format!("connect: {e}"))),
        Err(source) => {
            return Err(QemuError::VsockConnect {
                path: uds_path.to_path_buf(),
                source,
            })
        }
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Ok(Attempt::NotYet("out of time before CONNECT".into()));
    }
    let set_timeouts =
        |s: &UnixStream, t: Option<Duration>| s.set_read_timeout(t).and_then(|()| s.set_write_timeout(t));
    set_timeouts(&stream, Some(left)).map_err(|source| QemuError::VsockConnect {
        path: uds_path.to_path_buf(),
        source,
    })?;
    // One write: the daemon reads the request line from a non-blocking
    // socket and drops the connection if it arrives in pieces.
    if let Err(e) = stream.write_all(format!("CONNECT {port}\n").as_bytes()) {
        return Ok(Attempt::NotYet(format!("sending CONNECT: {e}")));
    }
    let reply = match read_reply(&mut stream) {
        Ok(reply) => reply,
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            return Ok(Attempt::NotYet("no reply to CONNECT".into()));
        }
        Err(e) => return Ok(Attempt::NotYet(format!("reading the reply to CONNECT: {e}"))),
    };
    match parse_connect_reply(&reply) {
        ConnectReply::Ok(_) => {
            set_timeouts(&stream, None).map_err(|source| QemuError::VsockConnect {
                path: uds_path.to_path_buf(),
                source,
            })?;
            Ok(Attempt::Connected(stream))
        }
        ConnectReply::Closed => Ok(Attempt::NotYet(format!(
            "closed without a reply (is a guest program listening on port {port}?)"
        ))),
        ConnectReply::Invalid => Err(QemuError::VsockHandshake {
            path: uds_path.to_path_buf(),
            port,
            reply: String::from_utf8_lossy(&reply).into_owned(),
        }),
    }
}

/// Reads byte by byte up to the first newline, so nothing the guest sends
/// right after the reply is consumed here.
fn read_reply(stream: &mut UnixStream) -> io::Result<Vec<u8>> {
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while reply.len() < MAX_REPLY {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {
                reply.push(byte[0]);
                if byte[0] == b'\n' {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A reset after the request means the same as EOF: closed.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && reply.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    Ok(reply)
}

/// Connect errors that mean "not there yet": the socket file does not exist
/// or nothing listens on it.
pub(crate) fn retryable_connect(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn connect_replies() {
        let cases: &[(&[u8], ConnectReply)] = &[
            (b"OK 1234\n", ConnectReply::Ok(1234)),
            (b"OK 0\n", ConnectReply::Ok(0)),
            (b"OK 4294967295\n", ConnectReply::Ok(u32::MAX)),
            (b"", ConnectReply::Closed),
            (b"OK 1234", ConnectReply::Invalid),
            (b"OK\n", ConnectReply::Invalid),
            (b"OK \n", ConnectReply::Invalid),
            (b"OK 12a\n", ConnectReply::Invalid),
            (b"OK -1\n", ConnectReply::Invalid),
            (b"OK +1\n", ConnectReply::Invalid),
            (b"OK 4294967296\n", ConnectReply::Invalid),
            (b"OK 1234\r\n", ConnectReply::Invalid),
            (b"ok 1234\n", ConnectReply::Invalid),
            (b"ERROR\n", ConnectReply::Invalid),
            (b"\n", ConnectReply::Invalid),
        ];
        for (reply, want) in cases {
            assert_eq!(
                parse_connect_reply(reply),
                *want,
                "{:?}",
                String::from_utf8_lossy(reply)
            );
        }
    }

    fn temp_socket(name: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("basalt-qemu-{name}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    /// A fake daemon: closes the first `refusals` connections after reading
    /// the request, then answers OK and sends a greeting right behind it.
    fn fake_daemon(path: &Path, refusals: usize) -> std::thread::JoinHandle<Vec<String>> {
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let mut requests = Vec::new();
            for i in 0..=refusals {
                let (mut conn, _) = listener.accept().unwrap();
                let mut buf = [0u8; 64];
                let n = conn.read(&mut buf).unwrap();
                requests.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                if i == refusals {
                    conn.write_all(b"OK 5000\nhello from guest").unwrap();
                }
            }
            requests
        })
    }

    #[test]
    fn handshake_retries_closed_connections_and_keeps_data_after_ok() {
        let path = temp_socket("vsock-ok");
        let daemon = fake_daemon(&path, 2);
        let mut stream = vsock_connect(&path, 5000, Duration::from_secs(10)).unwrap();
        let mut rest = String::new();
        stream.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "hello from guest");
        assert_eq!(daemon.join().unwrap(), vec!["CONNECT 5000\n"; 3]);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn handshake_gives_up_at_the_timeout_when_nobody_answers() {
        let path = temp_socket("vsock-timeout");
        let started = Instant::now();
        let err = vsock_connect(&path, 7, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, QemuError::VsockTimeout { port: 7, .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn handshake_rejects_a_bad_reply_at_once() {
        let path = temp_socket("vsock-bad");
        let listener = UnixListener::bind(&path).unwrap();
        let daemon = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 64];
            let _ = conn.read(&mut buf).unwrap();
            conn.write_all(b"NOPE\n").unwrap();
        });
        let err = vsock_connect(&path, 9, Duration::from_secs(10)).unwrap_err();
        assert!(
            matches!(&err, QemuError::VsockHandshake { reply, .. } if reply == "NOPE\n"),
            "{err}"
        );
        daemon.join().unwrap();
        std::fs::remove_file(&path).unwrap();
    }
}
