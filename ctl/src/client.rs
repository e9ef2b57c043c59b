//! A protocol client over any endpoint: send one request line, read lines
//! until the response with the same id arrives, all under a deadline.
//!
//! A serial line (and QEMU's socket for it) is a shared byte stream: it can
//! hold the tail of an earlier session's output, or a response to a request
//! another client sent. So the client starts with a lone newline (the agent
//! skips blank lines, and any partial garbage before it becomes one error
//! response), gives every request a unique id, and skips lines that are not
//! the response it waits for.

use crate::endpoint::Endpoint;
use basalt_common::proto::{self, Frame, FrameReader, Response};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, VsockAddr};
use nix::sys::termios::{self, BaudRate, FlushArg, SetArg};
use serde_json::{Map, Value};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

/// Responses can be larger than requests (logs); this bounds what the
/// client holds for one line.
const MAX_RESPONSE: usize = 16 << 20;

#[derive(Debug)]
pub enum ClientError {
    Connect {
        endpoint: String,
        err: std::io::Error,
    },
    Handshake {
        endpoint: String,
        reply: String,
    },
    Timeout {
        endpoint: String,
        waiting_for: String,
        after: Duration,
        skipped: usize,
    },
    Closed {
        endpoint: String,
        waiting_for: String,
    },
    Io {
        endpoint: String,
        op: &'static str,
        err: std::io::Error,
    },
    BadResponse {
        endpoint: String,
        why: String,
    },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect { endpoint, err } => write!(f, "cannot connect to {endpoint}: {err}"),
            ClientError::Handshake { endpoint, reply } => {
                write!(
                    f,
                    "{endpoint}: vsock CONNECT refused ({reply:?}); is the agent listening on that port?"
                )
            }
            ClientError::Timeout {
                endpoint,
                waiting_for,
                after,
                skipped,
            } => {
                write!(f, "{endpoint}: no {waiting_for} within {} s", after.as_secs_f64())?;
                if *skipped > 0 {
                    write!(f, " ({skipped} unrelated lines skipped)")?;
                }
                Ok(())
            }
            ClientError::Closed { endpoint, waiting_for } => {
                write!(f, "{endpoint}: connection closed while waiting for {waiting_for}")
            }
            ClientError::Io { endpoint, op, err } => write!(f, "{endpoint}: {op} failed: {err}"),
            ClientError::BadResponse { endpoint, why } => write!(f, "{endpoint}: unreadable response: {why}"),
        }
    }
}

pub struct Client {
    endpoint: String,
    fd: OwnedFd,
    reader: FrameReader,
    pending: std::collections::VecDeque<Frame>,
    timeout: Duration,
    next_id: u64,
    /// A serial line: bulk data goes as base64 in JSON, not as binary
    /// frames, since a serial path need not be 8-bit clean.
    serial: bool,
}

fn io_err(e: Errno) -> std::io::Error {
    std::io::Error::from(e)
}

impl Client {
    /// Connects, and for vsock-uds performs the CONNECT handshake.
    pub fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Self, ClientError> {
        let name = endpoint.to_string();
        let connect_err = |err| ClientError::Connect {
            endpoint: name.clone(),
            err,
        };
        let fd = match endpoint {
            Endpoint::Unix(path) | Endpoint::VsockUds { path, .. } => {
                let s = std::os::unix::net::UnixStream::connect(path).map_err(connect_err)?;
                s.set_nonblocking(true).map_err(connect_err)?;
                OwnedFd::from(s)
            }
            Endpoint::Vsock { cid, port } => {
                let fd = socket::socket(AddressFamily::Vsock, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
                    .map_err(|e| connect_err(io_err(e)))?;
                socket::connect(fd.as_raw_fd(), &VsockAddr::new(*cid, *port)).map_err(|e| connect_err(io_err(e)))?;
                set_nonblocking(&fd).map_err(|e| connect_err(io_err(e)))?;
                fd
            }
            Endpoint::Serial(path) => open_serial(path).map_err(connect_err)?,
        };
        let mut client = Client {
            endpoint: name,
            fd,
            reader: FrameReader::new(MAX_RESPONSE),
            pending: Default::default(),
            timeout,
            next_id: 1,
            serial: matches!(endpoint, Endpoint::Serial(_)),
        };
        if let Endpoint::VsockUds { port, .. } = endpoint {
            client.send(format!("CONNECT {port}\n").as_bytes())?;
            let reply = client.read_line("the vsock CONNECT reply", Instant::now() + timeout, &mut 0)?;
            let reply = String::from_utf8_lossy(&reply).into_owned();
            if !reply.starts_with("OK ") {
                return Err(ClientError::Handshake {
                    endpoint: client.endpoint,
                    reply,
                });
            }
        }
        client.resync()?;
        Ok(client)
    }

    /// Speaks the protocol over a descriptor that is already open (a pty
    /// master, say). `label` names it in errors.
    pub fn from_fd(label: &str, fd: OwnedFd, timeout: Duration) -> Result<Self, ClientError> {
        set_nonblocking(&fd).map_err(|e| ClientError::Io {
            endpoint: label.into(),
            op: "fcntl",
            err: io_err(e),
        })?;
        let mut client = Client {
            endpoint: label.into(),
            fd,
            reader: FrameReader::new(MAX_RESPONSE),
            pending: Default::default(),
            timeout,
            next_id: 1,
            // A descriptor of unknown kind is treated like a serial line.
            serial: true,
        };
        client.resync()?;
        Ok(client)
    }

    /// Ends whatever partial line an earlier session left on a shared stream.
    fn resync(&mut self) -> Result<(), ClientError> {
        self.send(b"\n")
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// How long to wait for the next response (or for a stalled send).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    pub fn is_serial(&self) -> bool {
        self.serial
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends a request and waits for its response.
    pub fn call(&mut self, op: &str, fields: Map<String, Value>) -> Result<Response, ClientError> {
        let id = self.request(op, fields)?;
        self.response(&id, op)
    }

    /// Sends a request without waiting; returns the id its response will
    /// carry, for [`response`](Self::response). Responses come in request
    /// order, so a client may keep a few requests in flight.
    pub fn request(&mut self, op: &str, fields: Map<String, Value>) -> Result<Value, ClientError> {
        let id = Value::String(format!("ctl-{}-{}", std::process::id(), self.next_id));
        self.next_id += 1;
        self.send(&proto::request_line(&id, op, fields))?;
        Ok(id)
    }

    /// [`request`](Self::request) as a binary frame carrying `payload` raw
    /// (docs/protocol.md; `upgrade-data` only).
    pub fn request_binary(
        &mut self,
        op: &str,
        fields: Map<String, Value>,
        payload: &[u8],
    ) -> Result<Value, ClientError> {
        let id = Value::String(format!("ctl-{}-{}", std::process::id(), self.next_id));
        self.next_id += 1;
        self.send(&proto::binary_request(&id, op, fields, payload))?;
        Ok(id)
    }

    /// Waits for the response to request `id` (an `op`, for messages).
    pub fn response(&mut self, id: &Value, op: &str) -> Result<Response, ClientError> {
        let deadline = Instant::now() + self.timeout;
        let waiting_for = format!("response to {op}");
        let mut skipped = 0;
        loop {
            let line = self.read_line(&waiting_for, deadline, &mut skipped)?;
            match proto::parse_response(&line) {
                Ok(resp) if resp.id() == id => return Ok(resp),
                // Not ours: a stale response, or noise on a serial line.
                _ => skipped += 1,
            }
        }
    }

    /// Sends raw bytes (tests use this to send garbage). The timeout bounds
    /// a stall, not the transfer: a 1 MiB config takes about 90 s down a
    /// 115200-baud serial line, and that is fine as long as bytes move.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let mut deadline = Instant::now() + self.timeout;
        let mut rest = bytes;
        while !rest.is_empty() {
            match nix::unistd::write(&self.fd, rest) {
                Ok(n) => {
                    rest = &rest[n..];
                    deadline = Instant::now() + self.timeout;
                }
                Err(Errno::EAGAIN) => self.wait(PollFlags::POLLOUT, deadline, "a writable connection", 0)?,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    return Err(ClientError::Io {
                        endpoint: self.endpoint.clone(),
                        op: "write",
                        err: io_err(e),
                    })
                }
            }
        }
        Ok(())
    }

    fn wait(&self, flags: PollFlags, deadline: Instant, what: &str, skipped: usize) -> Result<(), ClientError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::Timeout {
                endpoint: self.endpoint.clone(),
                waiting_for: what.into(),
                after: self.timeout,
                skipped,
            });
        }
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.fd.as_fd(), flags)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(Errno::EINTR) => Ok(()),
            Err(e) => Err(ClientError::Io {
                endpoint: self.endpoint.clone(),
                op: "poll",
                err: io_err(e),
            }),
        }
    }

    /// The next complete line, by the deadline.
    pub fn read_line(&mut self, what: &str, deadline: Instant, skipped: &mut usize) -> Result<Vec<u8>, ClientError> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            while let Some(frame) = self.pending.pop_front() {
                match frame {
                    Frame::Line(line) => return Ok(line),
                    // The agent never sends binary frames.
                    Frame::TooLarge { .. } | Frame::Binary { .. } => *skipped += 1,
                }
            }
            match nix::unistd::read(self.fd.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    return Err(ClientError::Closed {
                        endpoint: self.endpoint.clone(),
                        waiting_for: what.into(),
                    })
                }
                Ok(n) => {
                    let frames = self.reader.feed(&buf[..n]);
                    self.pending.extend(frames);
                }
                Err(Errno::EAGAIN) => self.wait(PollFlags::POLLIN, deadline, what, *skipped)?,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    return Err(ClientError::Io {
                        endpoint: self.endpoint.clone(),
                        op: "read",
                        err: io_err(e),
                    })
                }
            }
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

/// Opens a serial device raw at 115200 baud, dropping stale input.
fn open_serial(path: &std::path::Path) -> std::io::Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)?;
    let fd = OwnedFd::from(file);
    let mut tio = termios::tcgetattr(&fd)?;
    termios::cfmakeraw(&mut tio);
    termios::cfsetspeed(&mut tio, BaudRate::B115200)?;
    termios::tcsetattr(&fd, SetArg::TCSANOW, &tio)?;
    termios::tcflush(&fd, FlushArg::TCIFLUSH)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    fn pair(timeout: Duration) -> (Client, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        (Client::from_fd("test", OwnedFd::from(ours), timeout).unwrap(), theirs)
    }

    #[test]
    fn a_slow_but_moving_transfer_outlasts_the_timeout() {
        let (mut client, mut peer) = pair(Duration::from_millis(1500));
        let total = 1 << 20;
        // 8 KiB every 25 ms: about 3 s for 1 MiB (less what the socket
        // buffers), well past the 1.5 s timeout, with no stall near it.
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 8192];
            while got.len() < total + 1 {
                std::thread::sleep(Duration::from_millis(25));
                match peer.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            got
        });
        let started = Instant::now();
        let payload = vec![b'x'; total];
        client.send(&payload).expect("bytes kept moving");
        let got = reader.join().unwrap();
        assert_eq!(got.len(), total + 1, "the resync newline and every byte");
        assert!(got[1..].iter().all(|&b| b == b'x'));
        // Only meaningful if the transfer really took longer than one timeout.
        assert!(
            started.elapsed() > Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_stalled_transfer_times_out() {
        let (mut client, _peer) = pair(Duration::from_millis(300));
        match client.send(&vec![b'x'; 16 << 20]) {
            Err(ClientError::Timeout { waiting_for, .. }) => assert_eq!(waiting_for, "a writable connection"),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
}
