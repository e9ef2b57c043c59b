//! The background scrub (issue 11): once the node's kubelet (or, in a config
//! without one, its first service) is running, read every block of the
//! dm-verity root, one chunk per tick of the agent's poll loop, at no more
//! than `basalt.scrub_rate=` MiB/s. A block verity refuses fails its read
//! with EIO; the scrub counts it, names it in one log line and goes on. The
//! same refusal makes dm-verity send a uevent, and init's watcher
//! (init/src/verity/watch.rs) treats it as a boot failure: basalt.on_error.
//!
//! The agent calls four things: [`Scrub::from_boot_report`], [`Scrub::tick`],
//! [`Scrub::next_deadline`] and [`Scrub::status`]. A restarted agent scrubs
//! again from the first block.

mod device;
mod pace;

use crate::clock::NS_PER_MS;
use crate::settings::DEFAULT_SCRUB_RATE;
use crate::supervisor::{Run, Service};
use device::{Blocks, Device, Target};
use pace::{Pace, BLOCK};
use serde_json::{json, Value};

/// From the service being up to the first read: let it settle first.
const START_DELAY_NS: u64 = 2_000 * NS_PER_MS;
/// Refused blocks named in status, and in the log.
const MAX_LISTED: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// `basalt.scrub_rate=0`.
    Off,
    /// Nothing to scrub (the root is not on verity), or its device cannot be opened.
    Unavailable(String),
    /// For the service; then for `start_at`.
    Waiting {
        start_at: Option<u64>,
    },
    Running,
    Done,
    /// A read failed other than by EIO, or the device is shorter than said.
    Failed(String),
}

pub struct Scrub<B: Blocks = Device> {
    state: State,
    device: String,
    blocks: Option<B>,
    blocks_total: u64,
    blocks_done: u64,
    /// Blocks that failed with EIO.
    errors: u64,
    bad_blocks: Vec<u64>,
    /// Bytes per second, `None` when off.
    rate: Option<u64>,
    pace: Option<Pace>,
    started_ns: Option<u64>,
    ended_ns: Option<u64>,
}

impl Scrub {
    /// The scrub of the root the boot report names, at `rate` bytes per
    /// second (`None`: off). The device is opened now, read only later.
    pub fn from_boot_report(report: Option<&Value>, rate: Option<u64>) -> Scrub {
        let target = device::target(report);
        let chunk = rate.map_or(BLOCK, pace::chunk_for) as usize;
        let opened = target.and_then(|t| {
            Device::open(&t.device, chunk)
                .map(|d| (t.clone(), d))
                .map_err(|e| format!("cannot open {}: {e}", t.device))
        });
        let scrub = Scrub::new(opened, rate);
        match &scrub.state {
            State::Off => log::info!("scrub: off (basalt.scrub_rate=0)"),
            State::Unavailable(why) => log::info!("scrub: nothing to scrub: {why}"),
            _ => log::info!(
                "scrub: {} blocks of {} at {} MiB/s once kubelet runs",
                scrub.blocks_total,
                scrub.device,
                mib(rate.unwrap_or(0))
            ),
        }
        scrub
    }
}

impl<B: Blocks> Scrub<B> {
    fn new(opened: Result<(Target, B), String>, rate: Option<u64>) -> Scrub<B> {
        let (state, target, blocks) = match (rate, opened) {
            (None, Ok((t, _))) => (State::Off, Some(t), None),
            (None, Err(_)) => (State::Off, None, None),
            (Some(_), Err(why)) => (State::Unavailable(why), None, None),
            (Some(_), Ok((t, b))) => (State::Waiting { start_at: None }, Some(t), Some(b)),
        };
        Scrub {
            state,
            device: target.as_ref().map(|t| t.device.clone()).unwrap_or_default(),
            blocks_total: target.map_or(0, |t| t.blocks),
            blocks,
            blocks_done: 0,
            errors: 0,
            bad_blocks: Vec::new(),
            rate,
            pace: None,
            started_ns: None,
            ended_ns: None,
        }
    }

    /// One step: start once `service_up` has held for a moment, then at most
    /// one read when the rate allows it.
    pub fn tick(&mut self, now: u64, service_up: bool) {
        match self.state {
            State::Waiting { start_at: None } if service_up => {
                self.state = State::Waiting {
                    start_at: Some(now + START_DELAY_NS),
                };
            }
            State::Waiting { start_at: Some(at) } if now >= at => {
                let rate = self.rate.unwrap_or(DEFAULT_SCRUB_RATE);
                log::info!(
                    "scrub: reading {} blocks of {} at {} MiB/s",
                    self.blocks_total,
                    self.device,
                    mib(rate)
                );
                self.state = State::Running;
                self.pace = Some(Pace::new(rate, now));
                self.started_ns = Some(now);
                self.step(now);
            }
            State::Running => self.step(now),
            _ => {}
        }
    }

    fn step(&mut self, now: u64) {
        let Some(pace) = &self.pace else { return };
        if !pace.ready(now) || self.blocks_done >= self.blocks_total {
            return;
        }
        let first = self.blocks_done;
        let count = (pace.chunk() / BLOCK).min(self.blocks_total - first);
        match self.read_chunk(first, count) {
            Ok(read) => {
                self.blocks_done = first + read;
                if let Some(pace) = self.pace.as_mut() {
                    pace.read(read * BLOCK, now);
                }
            }
            Err(why) => return self.fail(why, now),
        }
        if self.blocks_done >= self.blocks_total {
            self.state = State::Done;
            self.ended_ns = Some(now);
            self.blocks = None;
            let secs = self.seconds(now);
            match self.errors {
                0 => log::info!("scrub: done: {} blocks in {secs:.1} s, no errors", self.blocks_total),
                e => log::error!(
                    "scrub: done: {} blocks in {secs:.1} s, {e} refused (first {:?})",
                    self.blocks_total,
                    &self.bad_blocks
                ),
            }
        }
    }

    /// Reads blocks `first..first + count` (fewer if the read comes back
    /// short) and says how many it got through, refused ones included.
    fn read_chunk(&mut self, first: u64, count: u64) -> Result<u64, String> {
        let Some(blocks) = self.blocks.as_mut() else {
            return Err("the device is closed".into());
        };
        let eio = |e: &std::io::Error| e.raw_os_error() == Some(libc::EIO);
        match blocks.read(first * BLOCK, (count * BLOCK) as usize) {
            Ok(n) if n as u64 >= BLOCK => return Ok(n as u64 / BLOCK),
            Ok(_) => {
                return Err(format!(
                    "{} ends at block {first}; the boot report says {} blocks",
                    self.device, self.blocks_total
                ))
            }
            Err(e) if eio(&e) => {}
            Err(e) => return Err(format!("read {} block {first}: {e}", self.device)),
        }
        // Some block of the chunk was refused: find which, one by one.
        for block in first..first + count {
            match blocks.read(block * BLOCK, BLOCK as usize) {
                Ok(n) if n as u64 == BLOCK => {}
                Ok(_) => return Err(format!("{} ends inside block {block}", self.device)),
                Err(e) if eio(&e) => {
                    self.errors += 1;
                    if self.bad_blocks.len() < MAX_LISTED {
                        self.bad_blocks.push(block);
                        log::error!(
                            "scrub: {} block {block} (byte {}) cannot be read: {e}: dm-verity refused it, \
                             or the disk under it failed",
                            self.device,
                            block * BLOCK
                        );
                    }
                }
                Err(e) => return Err(format!("read {} block {block}: {e}", self.device)),
            }
        }
        Ok(count)
    }

    fn fail(&mut self, why: String, now: u64) {
        log::error!("scrub: stopped: {why}");
        self.state = State::Failed(why);
        self.ended_ns = Some(now);
        self.blocks = None;
    }

    /// When [`tick`](Self::tick) next has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        match self.state {
            State::Waiting { start_at } => start_at,
            State::Running => self.pace.as_ref().map(Pace::due),
            _ => None,
        }
    }

    fn seconds(&self, now: u64) -> f64 {
        let Some(start) = self.started_ns else { return 0.0 };
        let end = self.ended_ns.unwrap_or(now);
        (end.saturating_sub(start) / NS_PER_MS) as f64 / 1e3
    }

    /// The `scrub` object of `status`.
    pub fn status(&self, now: u64) -> Value {
        let (state, problem) = match &self.state {
            State::Off => ("off", None),
            State::Unavailable(why) => ("unavailable", Some(why.as_str())),
            State::Waiting { .. } => ("waiting", None),
            State::Running => ("running", None),
            State::Done => ("done", None),
            State::Failed(why) => ("failed", Some(why.as_str())),
        };
        json!({
            "state": state,
            "device": (!self.device.is_empty()).then_some(&self.device),
            "blocks_done": self.blocks_done,
            "blocks_total": self.blocks_total,
            "errors": self.errors,
            "bad_blocks": self.bad_blocks,
            "seconds": self.seconds(now),
            "rate_mib_s": self.rate.map(mib),
            "problem": problem,
        })
    }
}

/// The scrub starts when the config's `kubelet`, or else its first
/// service, is running.
pub fn service_up(services: &[Service]) -> bool {
    let watched = services
        .iter()
        .find(|s| s.spec.name == "kubelet")
        .or_else(|| services.first());
    watched.is_some_and(|s| matches!(s.run, Run::Running(_)))
}

fn mib(bytes_per_s: u64) -> f64 {
    (bytes_per_s as f64 / (1u64 << 20) as f64 * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests;
