//! The event loop: one thread, one `poll(2)` over signals, listeners,
//! connections, the serial port and the pidfds of adopted services.
//!
//! Channels are independent: each has its own frame reader (bounded by the
//! frame cap) and its own output buffer, every descriptor is non-blocking,
//! and one poll round reads at most one buffer's worth per channel. A client
//! that sends garbage gets error frames; one that stops reading gets its
//! output buffered up to a bound and is then dropped; neither delays the
//! others. The serial port has no connections: whatever arrives is framed,
//! answered and resynchronised at the next newline.

use crate::agent::Agent;
use crate::clock::{self, NS_PER_MS};
use crate::sys;
use basalt_common::proto::{FrameReader, MAX_FRAME};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, VsockAddr};
use nix::sys::termios::{self, BaudRate, SetArg};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Simultaneous stream connections; the least recently active one makes room.
const MAX_CONNS: usize = 16;
/// A connection silent for this long is closed.
const IDLE_NS: u64 = 600_000 * NS_PER_MS;
/// Bytes read from one channel at a time. Bytes read but not yet answered
/// wait in the connection's inbox, so this also bounds each inbox.
const READ_CHUNK: usize = 16 * 1024;
/// At most this many reads in a row for one channel while a line is
/// unfinished: one frame (1 MiB) in READ_CHUNK reads.
const LINE_ROUNDS: usize = MAX_FRAME / READ_CHUNK;
/// Unread output at which a connection's next request waits: nothing more
/// is read from it, mid-batch included, until its client reads.
const CONN_OUT_HIGH: usize = 256 * 1024;
/// Unread output of all channels together above which only a channel with
/// nothing unread is answered.
const TOTAL_OUT_HIGH: usize = 1 << 20;
/// Above this, nobody is answered until clients read (or are dropped).
const TOTAL_OUT_MAX: usize = 3 << 20;
/// Unfinished request lines held across all channels. Past it, the
/// connection holding the most is closed (the serial line's is dropped).
const TOTAL_IN_MAX: usize = 2 << 20;
/// Output that nobody reads for this long: the connection is closed (the
/// serial line's output is dropped), so a stalled client cannot hold the
/// shared output budget.
const STALL_NS: u64 = 10_000 * NS_PER_MS;
/// Retry period for a serial port or vsock listener that could not be opened.
const RETRY_NS: u64 = 2_000 * NS_PER_MS;
/// A serial line cannot tell that its client went away, so an unfinished
/// request that sees no new byte for this long is dropped: half a request
/// from one client must not swallow the next client's first.
const SERIAL_PARTIAL_NS: u64 = 2_000 * NS_PER_MS;
/// The serial line's connection id (stream connections count from 1).
const SERIAL_ID: u64 = 0;

/// Why the agent could not set up its event loop.
#[derive(Debug)]
pub enum ServerError {
    BlockSignals(Errno),
    SignalFd(Errno),
    ListenUnix { path: PathBuf, err: std::io::Error },
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::BlockSignals(e) => write!(f, "cannot block signals: {}", e.desc()),
            ServerError::SignalFd(e) => write!(f, "cannot create a signalfd: {}", e.desc()),
            ServerError::ListenUnix { path, err } => write!(f, "cannot listen on {}: {err}", path.display()),
        }
    }
}

/// Blocks the signals the loop reads through a signalfd. Must run before the
/// first child is started, so no SIGCHLD can be missed.
pub fn take_signals() -> Result<SignalFd, ServerError> {
    let mut mask = SigSet::empty();
    for sig in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(sig);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).map_err(ServerError::BlockSignals)?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).map_err(ServerError::SignalFd)
}

/// One byte stream speaking the protocol.
struct Conn {
    id: u64,
    label: String,
    fd: OwnedFd,
    reader: FrameReader,
    /// Bytes read but not yet fed to the reader: what follows a request
    /// whose answer found the output budget full.
    inbox: Vec<u8>,
    /// Answers not yet written, oldest first (a queue of lines, so no
    /// buffer doubles past what it holds).
    out: VecDeque<Vec<u8>>,
    out_len: usize,
    last_active_ns: u64,
    /// When output last went out, or became pending.
    last_progress_ns: u64,
    closed: bool,
}

/// The output budget as it stands, for one channel's turn.
#[derive(Debug, Clone, Copy)]
struct Budget {
    total_out: usize,
}

impl Budget {
    /// May a channel holding `own` unread bytes have its next request answered?
    fn admits(&self, own: usize) -> bool {
        if self.total_out >= TOTAL_OUT_MAX {
            return false;
        }
        own == 0 || (own < CONN_OUT_HIGH && self.total_out < TOTAL_OUT_HIGH)
    }
}

impl Conn {
    fn new(id: u64, label: String, fd: OwnedFd, now: u64) -> Self {
        Conn {
            id,
            label,
            fd,
            reader: FrameReader::new(MAX_FRAME),
            inbox: Vec::new(),
            out: VecDeque::new(),
            out_len: 0,
            last_active_ns: now,
            last_progress_ns: now,
            closed: false,
        }
    }

    /// Memory held for requests not yet answered.
    fn held_in(&self) -> usize {
        self.reader.capacity() + self.inbox.capacity()
    }

    /// True if the next read may happen: everything read so far is answered
    /// and the budget lets this channel have more answers.
    fn wants_read(&self, budget: Budget) -> bool {
        self.inbox.is_empty() && budget.admits(self.out_len)
    }

    /// Reads what is there into the inbox. Returns false on end of stream
    /// or error.
    fn read(&mut self, now: u64) -> bool {
        let mut buf = std::mem::take(&mut self.inbox);
        buf.resize(READ_CHUNK, 0);
        let ok = match nix::unistd::read(self.fd.as_raw_fd(), &mut buf) {
            Ok(0) => {
                buf.clear();
                false
            }
            Ok(n) => {
                self.last_active_ns = now;
                buf.truncate(n);
                true
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {
                buf.clear();
                true
            }
            Err(e) => {
                log::info!("{}: read failed: {}", self.label, e.desc());
                buf.clear();
                false
            }
        };
        if buf.is_empty() {
            buf = Vec::new();
        }
        self.inbox = buf;
        ok
    }

    /// Answers the requests in the inbox, one at a time, for as long as the
    /// budget admits another answer; the rest waits in the inbox.
    fn answer(&mut self, agent: &mut Agent, budget: &mut Budget, now: u64) {
        let mut used = 0;
        while used < self.inbox.len() && budget.admits(self.out_len) {
            let (n, frame) = self.reader.feed_one(&self.inbox[used..]);
            used += n;
            if let Some(frame) = frame {
                let mut reply = agent.handle(frame, self.id, now);
                reply.shrink_to_fit();
                if self.out_len == 0 {
                    self.last_progress_ns = now;
                }
                self.out_len += reply.len();
                budget.total_out += reply.len();
                self.out.push_back(reply);
                // Out now, not after the rest of the inbox: a client with
                // requests in flight learns of this one while the agent works
                // on the next (a failed write shows at the next flush).
                self.flush(budget, now);
            }
        }
        self.inbox.drain(..used);
        if self.inbox.is_empty() {
            self.inbox = Vec::new();
        }
    }

    /// Writes as much pending output as the descriptor takes. Returns false
    /// if the peer is gone.
    fn flush(&mut self, budget: &mut Budget, now: u64) -> bool {
        while let Some(front) = self.out.front_mut() {
            match nix::unistd::write(&self.fd, front) {
                Ok(n) => {
                    self.last_progress_ns = now;
                    self.out_len -= n;
                    budget.total_out -= n;
                    if n == front.len() {
                        self.out.pop_front();
                    } else {
                        front.drain(..n);
                    }
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::info!("{}: write failed: {}", self.label, e.desc());
                    return false;
                }
            }
        }
        true
    }

    /// Pending output that has not moved for [`STALL_NS`].
    fn stalled(&self, now: u64) -> bool {
        self.out_len > 0 && now.saturating_sub(self.last_progress_ns) >= STALL_NS
    }

    fn drop_output(&mut self, budget: &mut Budget) -> usize {
        let n = self.out_len;
        budget.total_out -= n;
        self.out.clear();
        self.out_len = 0;
        n
    }

    fn poll_flags(&self, budget: Budget) -> PollFlags {
        let mut flags = PollFlags::empty();
        if self.wants_read(budget) {
            flags |= PollFlags::POLLIN;
        }
        if self.out_len > 0 {
            flags |= PollFlags::POLLOUT;
        }
        flags
    }
}

struct Listener {
    label: String,
    fd: OwnedFd,
}

/// The serial port: always "connected", reopened if it fails.
struct Serial {
    path: PathBuf,
    port: Option<Conn>,
    retry_at_ns: u64,
    failing: bool,
}

enum Token {
    Signals,
    Listener(usize),
    Conn(u64),
    Serial,
    Pidfd(Pid),
}

pub struct Server {
    signals: SignalFd,
    listeners: Vec<Listener>,
    conns: Vec<Conn>,
    serial: Option<Serial>,
    vsock_port: Option<u32>,
    vsock_retry_at_ns: u64,
    vsock_failing: bool,
    next_id: u64,
}

impl Server {
    pub fn new(
        signals: SignalFd,
        unix: Option<&Path>,
        serial: Option<&Path>,
        vsock_port: Option<u32>,
    ) -> Result<Self, ServerError> {
        let mut server = Server {
            signals,
            listeners: Vec::new(),
            conns: Vec::new(),
            serial: serial.map(|p| Serial {
                path: p.into(),
                port: None,
                retry_at_ns: 0,
                failing: false,
            }),
            vsock_port,
            vsock_retry_at_ns: 0,
            vsock_failing: false,
            next_id: 1,
        };
        if let Some(path) = unix {
            let fd = listen_unix(path).map_err(|err| ServerError::ListenUnix { path: path.into(), err })?;
            log::info!("listening on unix socket {}", path.display());
            server.listeners.push(Listener {
                label: format!("unix:{}", path.display()),
                fd,
            });
        }
        server.maintain(clock::now_ns());
        Ok(server)
    }

    /// Opens what is not open yet (serial port, vsock listener) and closes
    /// idle connections.
    fn maintain(&mut self, now: u64) {
        if let Some(serial) = self.serial.as_mut() {
            if serial.port.is_none() && now >= serial.retry_at_ns {
                match open_serial(&serial.path) {
                    Ok(fd) => {
                        log::info!("provisioning on serial {}", serial.path.display());
                        serial.port = Some(Conn::new(
                            SERIAL_ID,
                            format!("serial:{}", serial.path.display()),
                            fd,
                            now,
                        ));
                        serial.failing = false;
                    }
                    Err(e) => {
                        if !serial.failing {
                            log::warn!(
                                "cannot open serial {}: {e}; retrying every {} s",
                                serial.path.display(),
                                RETRY_NS / 1_000_000_000
                            );
                        }
                        serial.failing = true;
                        serial.retry_at_ns = now + RETRY_NS;
                    }
                }
            }
        }
        if let Some(port) = self.serial.as_mut().and_then(|s| s.port.as_mut()) {
            if port.reader.in_line() && now.saturating_sub(port.last_active_ns) >= SERIAL_PARTIAL_NS {
                let dropped = port.reader.abandon();
                log::warn!(
                    "{}: dropped {dropped} bytes of an unfinished request after {} s without a newline",
                    port.label,
                    SERIAL_PARTIAL_NS / 1_000_000_000
                );
            }
        }
        if let Some(port) = self.vsock_port {
            let bound = self.listeners.iter().any(|l| l.label.starts_with("vsock:"));
            if !bound && now >= self.vsock_retry_at_ns {
                match listen_vsock(port) {
                    Ok(fd) => {
                        log::info!("listening on vsock port {port}");
                        self.listeners.push(Listener {
                            label: format!("vsock:{port}"),
                            fd,
                        });
                        self.vsock_failing = false;
                    }
                    Err(e) => {
                        if !self.vsock_failing {
                            log::warn!(
                                "cannot listen on vsock port {port}: {}; retrying every {} s",
                                e.desc(),
                                RETRY_NS / 1_000_000_000
                            );
                        }
                        self.vsock_failing = true;
                        self.vsock_retry_at_ns = now + RETRY_NS;
                    }
                }
            }
        }
        for c in self.conns.iter_mut().filter(|c| !c.closed) {
            if now.saturating_sub(c.last_active_ns) > IDLE_NS {
                log::info!("{}: closed after {} s idle", c.label, IDLE_NS / 1_000_000_000);
                c.closed = true;
            }
        }
    }

    /// Every channel's unread output, added up.
    fn budget(&self) -> Budget {
        let serial = self.serial.iter().filter_map(|s| s.port.as_ref());
        Budget {
            total_out: self.conns.iter().chain(serial).map(|c| c.out_len).sum(),
        }
    }

    /// Holds unfinished requests to [`TOTAL_IN_MAX`] across all channels:
    /// while they hold more, the channel holding the most loses its line
    /// (a connection is closed; the serial line, which cannot be, drops it).
    fn bound_input(&mut self) {
        loop {
            let serial = self.serial.iter().filter_map(|s| s.port.as_ref());
            let open = self.conns.iter().filter(|c| !c.closed);
            let held: usize = open.clone().chain(serial).map(Conn::held_in).sum();
            if held <= TOTAL_IN_MAX {
                return;
            }
            let biggest = self
                .conns
                .iter_mut()
                .filter(|c| !c.closed)
                .chain(self.serial.iter_mut().filter_map(|s| s.port.as_mut()))
                .max_by_key(|c| c.reader.capacity());
            let Some(c) = biggest else { return };
            log::warn!(
                "{}: unfinished requests of all channels hold {held} bytes, more than the {TOTAL_IN_MAX} allowed; \
                 dropping this channel's {} bytes, the most",
                c.label,
                c.reader.buffered()
            );
            if c.id == SERIAL_ID {
                c.reader.abandon();
                c.inbox = Vec::new();
            } else {
                c.closed = true;
                c.reader.abandon();
                c.inbox = Vec::new();
            }
        }
    }

    fn next_wakeup(&self, now: u64) -> u64 {
        let mut at = now + 1_000 * NS_PER_MS;
        if let Some(s) = &self.serial {
            match &s.port {
                None => at = at.min(s.retry_at_ns),
                Some(port) if port.reader.in_line() => at = at.min(port.last_active_ns + SERIAL_PARTIAL_NS),
                Some(_) => {}
            }
        }
        if self.vsock_port.is_some() && self.vsock_failing {
            at = at.min(self.vsock_retry_at_ns);
        }
        at
    }

    fn accept(&mut self, i: usize, now: u64) {
        loop {
            let fd = match sys::accept(self.listeners[i].fd.as_fd()) {
                Ok(fd) => fd,
                Err(Errno::EAGAIN | Errno::ECONNABORTED) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("{}: accept failed: {}", self.listeners[i].label, e.desc());
                    return;
                }
            };
            if self.conns.iter().filter(|c| !c.closed).count() >= MAX_CONNS {
                let oldest = self
                    .conns
                    .iter_mut()
                    .filter(|c| !c.closed)
                    .min_by_key(|c| c.last_active_ns);
                if let Some(c) = oldest {
                    log::warn!("{}: closed to make room for a new connection", c.label);
                    c.closed = true;
                }
            }
            let id = self.next_id;
            self.next_id += 1;
            let label = format!("{} connection {id}", self.listeners[i].label);
            self.conns.push(Conn::new(id, label, fd, now));
        }
    }

    /// Writes out what is pending, for a bounded time, before the agent exits.
    fn drain(&mut self) {
        let deadline = clock::now_ns() + 2_000 * NS_PER_MS;
        let ports = self
            .conns
            .iter_mut()
            .chain(self.serial.iter_mut().filter_map(|s| s.port.as_mut()));
        let mut budget = Budget { total_out: 0 };
        for c in ports {
            budget.total_out = c.out_len;
            while c.out_len > 0 && clock::now_ns() < deadline {
                if !c.flush(&mut budget, clock::now_ns()) {
                    break;
                }
                if c.out_len > 0 {
                    let mut fds = [PollFd::new(c.fd.as_fd(), PollFlags::POLLOUT)];
                    let _ = poll(&mut fds, PollTimeout::from(100u16));
                }
            }
        }
    }
}

fn listen_unix(path: &Path) -> std::io::Result<OwnedFd> {
    // A socket file left by a previous agent would make bind fail.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    Ok(OwnedFd::from(listener))
}

fn listen_vsock(port: u32) -> nix::Result<OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::bind(fd.as_raw_fd(), &VsockAddr::new(libc::VMADDR_CID_ANY, port))?;
    socket::listen(&fd, Backlog::new(8)?)?;
    Ok(fd)
}

/// Opens the serial port raw: no echo, no line editing, no signals from
/// special characters, 8 bits, 115200 baud. `O_NOCTTY` keeps it from
/// becoming the agent's controlling terminal.
fn open_serial(path: &Path) -> std::io::Result<OwnedFd> {
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
    Ok(fd)
}

/// Runs until the agent is done (it was asked to exit and its services are stopped).
pub fn run(agent: &mut Agent, server: &mut Server) {
    loop {
        let now = clock::now_ns();
        agent.tick(now);
        server.maintain(now);
        if agent.done() {
            agent.final_log_pump();
            server.drain();
            log::info!("exiting");
            return;
        }
        let wake = agent.next_wakeup().min(server.next_wakeup(now));
        let timeout_ms = (wake.saturating_sub(now).div_ceil(NS_PER_MS)).min(1_000) as u16;

        let ready = {
            let budget = server.budget();
            let mut tokens = Vec::new();
            let mut fds = Vec::new();
            let mut watch = |token, fd, flags| {
                tokens.push(token);
                fds.push(PollFd::new(fd, flags));
            };
            watch(Token::Signals, server.signals.as_fd(), PollFlags::POLLIN);
            for (i, l) in server.listeners.iter().enumerate() {
                watch(Token::Listener(i), l.fd.as_fd(), PollFlags::POLLIN);
            }
            for c in server.conns.iter().filter(|c| !c.closed) {
                watch(Token::Conn(c.id), c.fd.as_fd(), c.poll_flags(budget));
            }
            if let Some(port) = server.serial.as_ref().and_then(|s| s.port.as_ref()) {
                watch(Token::Serial, port.fd.as_fd(), port.poll_flags(budget));
            }
            for (pid, fd) in agent.supervisor().pidfds() {
                watch(Token::Pidfd(pid), fd, PollFlags::POLLIN);
            }
            match poll(&mut fds, PollTimeout::from(timeout_ms)) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("poll failed: {}", e.desc());
                    continue;
                }
            }
            let flags: Vec<PollFlags> = fds.iter().map(|f| f.revents().unwrap_or(PollFlags::empty())).collect();
            tokens
                .into_iter()
                .zip(flags)
                .filter(|(_, f)| !f.is_empty())
                .collect::<Vec<_>>()
        };

        let now = clock::now_ns();
        let mut budget = server.budget();
        for (token, events) in ready {
            match token {
                Token::Signals => on_signals(server, agent, now),
                Token::Listener(i) => server.accept(i, now),
                Token::Conn(id) => {
                    let Some(c) = server.conns.iter_mut().find(|c| c.id == id) else {
                        continue;
                    };
                    if !serve(c, events, agent, &mut budget, now) {
                        c.closed = true;
                    }
                }
                Token::Serial => {
                    let Some(serial) = server.serial.as_mut() else { continue };
                    let Some(port) = serial.port.as_mut() else { continue };
                    if !serve(port, events, agent, &mut budget, now) {
                        log::warn!("{}: hung up; reopening in {} s", port.label, RETRY_NS / 1_000_000_000);
                        budget.total_out -= port.out_len;
                        serial.port = None;
                        serial.retry_at_ns = now + RETRY_NS;
                    }
                }
                Token::Pidfd(pid) => agent.supervisor_mut().adopted_exited(pid, now),
            }
        }
        // Requests left waiting for budget are answered as soon as it frees,
        // whichever channel freed it.
        let serial = server.serial.iter_mut().filter_map(|s| s.port.as_mut());
        for c in server.conns.iter_mut().filter(|c| !c.closed).chain(serial) {
            if !c.inbox.is_empty() {
                c.answer(agent, &mut budget, now);
            }
            if c.stalled(now) {
                let n = c.drop_output(&mut budget);
                if c.id == SERIAL_ID {
                    log::warn!("{}: nobody is reading; dropped {n} bytes of responses", c.label);
                } else {
                    log::warn!(
                        "{}: closed: {n} bytes of responses unread for {} s",
                        c.label,
                        STALL_NS / 1_000_000_000
                    );
                    c.closed = true;
                }
            }
        }
        server.bound_input();
        server.conns.retain(|c| {
            if c.closed {
                agent.connection_closed(c.id);
            }
            !c.closed
        });
    }
}

/// One channel's turn: write what is pending, read if it may, answer what
/// the budget admits, write again. Returns false if the peer is gone.
fn serve(c: &mut Conn, events: PollFlags, agent: &mut Agent, budget: &mut Budget, now: u64) -> bool {
    if !c.flush(budget, now) {
        return false;
    }
    let readable = events.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR);
    for round in 1..=LINE_ROUNDS {
        if !(readable && c.wants_read(*budget)) {
            c.answer(agent, budget, now);
            break;
        }
        if !c.read(now) {
            return false;
        }
        let full = c.inbox.len() == READ_CHUNK;
        c.answer(agent, budget, now);
        // A long line (a piece of an update bundle is 683 KiB) arrives in
        // 16 KiB reads: while one is unfinished and more is waiting, read on
        // here rather than once per pass of the poll loop. Bounded by one
        // frame's worth of reads, so other channels wait at most that.
        if !(full && c.inbox.is_empty() && c.reader.in_line()) || round == LINE_ROUNDS {
            break;
        }
    }
    c.flush(budget, now)
}

fn on_signals(server: &mut Server, agent: &mut Agent, now: u64) {
    loop {
        match server.signals.read_signal() {
            Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => agent.supervisor_mut().reap(now),
                Ok(Signal::SIGTERM | Signal::SIGINT) => agent.request_exit(),
                Ok(other) => log::info!("ignoring {other}"),
                Err(_) => {}
            },
            Ok(None) => return,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                log::error!("cannot read signals: {}", e.desc());
                return;
            }
        }
    }
}
