//! The scrub against a fake device and a fake clock: `now` is whatever the
//! test says, and nothing sleeps.

use super::*;
use std::io;

const MIB: u64 = 1 << 20;
const S: u64 = 1_000 * NS_PER_MS;

/// A device of `size` bytes where reads touching `bad` blocks fail with
/// EIO, and any read at `broken` fails with EBADF. Records every read.
#[derive(Default)]
struct Fake {
    size: u64,
    bad: Vec<u64>,
    broken: Option<u64>,
    reads: Vec<(u64, usize)>,
}

impl Blocks for &mut Fake {
    fn read(&mut self, offset: u64, len: usize) -> io::Result<usize> {
        self.reads.push((offset, len));
        if self.broken == Some(offset) {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        let end = (offset + len as u64).min(self.size);
        if self.bad.iter().any(|b| b * BLOCK < end && (b + 1) * BLOCK > offset) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(end.saturating_sub(offset) as usize)
    }
}

fn scrub(fake: &mut Fake, blocks: u64, rate: Option<u64>) -> Scrub<&mut Fake> {
    let target = Target {
        device: "/dev/dm-0".into(),
        blocks,
    };
    Scrub::new(Ok((target, fake)), rate)
}

/// Ticks whenever the scrub asks to be woken (as the poll loop does),
/// with the service up from `up_at`, until it stops asking or `limit`.
fn run(s: &mut Scrub<&mut Fake>, up_at: u64, limit: u64) -> u64 {
    let mut now = 0;
    s.tick(now, false);
    now = up_at;
    while now < limit {
        s.tick(now, true);
        match s.next_deadline() {
            Some(d) => now = d.max(now + 1),
            None => return now,
        }
    }
    now
}

#[test]
fn waits_for_the_service_then_reads_everything_at_the_rate() {
    let mut fake = Fake {
        size: 1000 * BLOCK,
        ..Default::default()
    };
    let mut s = scrub(&mut fake, 1000, Some(MIB));
    s.tick(0, false);
    assert_eq!(s.next_deadline(), None, "nothing to do until the service runs");
    assert_eq!(s.status(0)["state"], "waiting");
    s.tick(10 * S, true);
    assert_eq!(s.next_deadline(), Some(10 * S + START_DELAY_NS));
    s.tick(11 * S, true);
    assert_eq!(s.status(11 * S)["blocks_done"], 0, "still settling");

    let end = run(&mut s, 12 * S, 100 * S);
    let status = s.status(end + 50 * S);
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["blocks_done"], 1000);
    assert_eq!(status["blocks_total"], 1000);
    assert_eq!(status["errors"], 0);
    assert_eq!(status["rate_mib_s"], 1.0);
    assert_eq!(status["device"], "/dev/dm-0");
    // 4000 KiB at 1 MiB/s, started at 12 s: the last of 125 reads of
    // 32 KiB starts 124 chunk-times after the first.
    let seconds = status["seconds"].as_f64().unwrap();
    assert!((3.8..=3.9).contains(&seconds), "{seconds} s");
    assert_eq!(s.next_deadline(), None);
    drop(s);
    assert_eq!(fake.reads.len(), 125);
    for (i, (offset, len)) in fake.reads.iter().enumerate() {
        assert_eq!((*offset, *len), (i as u64 * 32 * 1024, 32 * 1024));
    }
}

#[test]
fn a_refused_block_is_found_counted_and_the_scrub_goes_on() {
    let mut fake = Fake {
        size: 200 * BLOCK,
        bad: vec![70],
        ..Default::default()
    };
    let mut s = scrub(&mut fake, 200, Some(8 * MIB));
    run(&mut s, 0, 100 * S);
    let status = s.status(100 * S);
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["blocks_done"], 200);
    assert_eq!(status["errors"], 1);
    assert_eq!(status["bad_blocks"], json!([70]));
    assert_eq!(status["problem"], Value::Null);
    drop(s);
    // 64-block chunks; the second (blocks 64..128) fails, then is read a
    // block at a time; the rest in chunks again.
    let chunk = 64 * BLOCK as usize;
    let mut want = vec![(0, chunk), (64 * BLOCK, chunk)];
    want.extend((64..128).map(|b| (b * BLOCK, BLOCK as usize)));
    want.extend([(128 * BLOCK, chunk), (192 * BLOCK, 8 * BLOCK as usize)]);
    assert_eq!(fake.reads, want);
}

#[test]
fn many_refused_blocks_are_all_counted_but_listed_only_so_far() {
    let mut fake = Fake {
        size: 100 * BLOCK,
        bad: (0..40).map(|b| b * 2).collect(),
        ..Default::default()
    };
    let mut s = scrub(&mut fake, 100, Some(8 * MIB));
    run(&mut s, 0, 100 * S);
    let status = s.status(100 * S);
    assert_eq!(status["errors"], 40);
    assert_eq!(status["bad_blocks"].as_array().unwrap().len(), MAX_LISTED);
    assert_eq!(status["bad_blocks"][15], 30);
}

#[test]
fn other_read_errors_and_a_short_device_stop_the_scrub() {
    let mut fake = Fake {
        size: 100 * BLOCK,
        broken: Some(64 * BLOCK),
        ..Default::default()
    };
    let mut s = scrub(&mut fake, 100, Some(8 * MIB));
    let end = run(&mut s, 0, 100 * S);
    let status = s.status(end);
    assert_eq!(status["state"], "failed");
    assert_eq!(status["blocks_done"], 64);
    assert_eq!(
        status["problem"],
        format!("read /dev/dm-0 block 64: {}", io::Error::from_raw_os_error(libc::EBADF))
    );
    assert_eq!(s.next_deadline(), None);

    let mut short = Fake {
        size: 64 * BLOCK,
        ..Default::default()
    };
    let mut s = scrub(&mut short, 100, Some(8 * MIB));
    run(&mut s, 0, 100 * S);
    assert_eq!(
        s.status(0)["problem"],
        "/dev/dm-0 ends at block 64; the boot report says 100 blocks"
    );
}

#[test]
fn off_and_unavailable_never_read() {
    let mut fake = Fake {
        size: 10 * BLOCK,
        ..Default::default()
    };
    let mut s = scrub(&mut fake, 10, None);
    run(&mut s, 0, 100 * S);
    let status = s.status(0);
    assert_eq!(status["state"], "off");
    assert_eq!(status["rate_mib_s"], Value::Null);
    assert_eq!(status["blocks_total"], 10);
    drop(s);
    assert!(fake.reads.is_empty());

    let mut s: Scrub<&mut Fake> = Scrub::new(Err("no boot report".into()), Some(MIB));
    s.tick(0, true);
    s.tick(10 * S, true);
    let status = s.status(10 * S);
    assert_eq!(status["state"], "unavailable");
    assert_eq!(status["problem"], "no boot report");
    assert_eq!(status["device"], Value::Null);
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn a_slow_poll_loop_never_reads_faster_than_the_rate() {
    let mut fake = Fake {
        size: 100_000 * BLOCK,
        ..Default::default()
    };
    let mut s = scrub(&mut fake, 100_000, Some(2 * MIB));
    s.tick(0, true);
    // The loop wakes every 250 ms whatever the scrub asks, for 20 s.
    let mut now = START_DELAY_NS;
    while now < START_DELAY_NS + 20 * S {
        s.tick(now, true);
        now += 250 * NS_PER_MS;
    }
    let done = s.status(now)["blocks_done"].as_u64().unwrap() * BLOCK;
    // One read per tick: 80 reads of 64 KiB, well under 40 MiB.
    assert_eq!(done, 80 * 64 * 1024);
}
