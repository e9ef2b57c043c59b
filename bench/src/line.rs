//! What the in-guest fixture (`bench-handoff`) prints on the console and how
//! the host reads it back, plus the kernel log records it reads. Shared by
//! both sides so there is one definition of each format; pure functions only.
//!
//! The fixture prints, in order:
//! - `BENCH-PHASE run_init_us=.. handoff_us=.. mono_us=.. pid=.. pid1_hwm_kib=..`
//! - zero or more `BENCH-MARK <name> <printk_us>` (the baseline's step marks)
//! - `BENCH-REPORT <json>` when basalt-init's boot report exists
//! - `BENCH-DONE`, or `BENCH-ERROR <why>` when it could not measure.

/// The message the kernel logs (KERN_INFO, so it is in the ring even with
/// `quiet`) just before it execs `/init`: the start of the PID1 phase.
pub const RUN_INIT: &str = "Run /init as init process";
/// Prefix of the step marks the baseline /init writes to /dev/kmsg.
pub const MARK_PREFIX: &str = "bench-mark ";

pub const PHASE_TAG: &str = "BENCH-PHASE ";
pub const MARK_TAG: &str = "BENCH-MARK ";
pub const REPORT_TAG: &str = "BENCH-REPORT ";
pub const DONE: &str = "BENCH-DONE";
pub const ERROR_TAG: &str = "BENCH-ERROR ";

/// One record read from /dev/kmsg: `prio,seq,ts_us,flags[,...];message`,
/// then optional continuation lines (` KEY=value`) that are ignored here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsgRecord {
    pub seq: u64,
    /// printk timestamp: microseconds on the kernel's local clock.
    pub ts_us: u64,
    pub message: String,
}

/// Parses one /dev/kmsg record; `None` if it is not one.
pub fn parse_kmsg(record: &str) -> Option<KmsgRecord> {
    let (prefix, rest) = record.split_once(';')?;
    let mut fields = prefix.split(',');
    let _prio: u32 = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let ts_us = fields.next()?.parse().ok()?;
    fields.next()?; // flags: '-' or 'c'
    let message = rest.split('\n').next().unwrap_or_default().to_string();
    Some(KmsgRecord { seq, ts_us, message })
}

/// The two ends of the PID1 phase found in the kernel log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseEnds {
    pub run_init_us: u64,
    pub handoff_us: u64,
}

/// Finds the kernel's "Run /init" record and the fixture's own `marker`
/// record (the first of each; the marker must come after it).
pub fn find_phase(records: &[KmsgRecord], marker: &str) -> Result<PhaseEnds, String> {
    let run_init = records
        .iter()
        .find(|r| r.message == RUN_INIT)
        .ok_or_else(|| format!("no {RUN_INIT:?} record in the kernel log (ring overwritten?)"))?;
    let handoff = records
        .iter()
        .find(|r| r.message == marker)
        .ok_or_else(|| format!("no {marker:?} record in the kernel log"))?;
    if handoff.seq < run_init.seq {
        return Err(format!("{marker:?} was logged before {RUN_INIT:?}"));
    }
    Ok(PhaseEnds {
        run_init_us: run_init.ts_us,
        handoff_us: handoff.ts_us,
    })
}

/// The baseline's step marks, `(name, printk_us)` in log order.
pub fn find_marks(records: &[KmsgRecord]) -> Vec<(String, u64)> {
    records
        .iter()
        .filter_map(|r| {
            let name = r.message.strip_prefix(MARK_PREFIX)?.trim();
            (!name.is_empty() && !name.contains(char::is_whitespace)).then(|| (name.to_string(), r.ts_us))
        })
        .collect()
}

/// What the fixture measured in one boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phase {
    /// printk time of the kernel's "Run /init": PID1 starts.
    pub run_init_us: u64,
    /// printk time of the fixture's first log line: the handoff program runs.
    pub handoff_us: u64,
    /// CLOCK_MONOTONIC right after that line was logged (basalt-init's
    /// boot report uses this clock; the difference is the clocks' offset).
    pub mono_us: u64,
    /// The fixture's pid: 1 when the baseline exec'd it, not 1 under basalt-init.
    pub pid: u32,
    /// VmHWM of PID 1 at the handoff, when PID 1 is not the fixture itself.
    pub pid1_hwm_kib: Option<u64>,
}

impl Phase {
    /// PID1 start to handoff, in microseconds.
    pub fn pid1_phase_us(&self) -> u64 {
        self.handoff_us.saturating_sub(self.run_init_us)
    }
}

pub fn format_phase(p: &Phase) -> String {
    let hwm = p.pid1_hwm_kib.map_or("-".to_string(), |k| k.to_string());
    format!(
        "{PHASE_TAG}run_init_us={} handoff_us={} mono_us={} pid={} pid1_hwm_kib={hwm}",
        p.run_init_us, p.handoff_us, p.mono_us, p.pid
    )
}

/// Parses the text after [`PHASE_TAG`] (or a whole console line holding it).
pub fn parse_phase(line: &str) -> Result<Phase, String> {
    let body = match line.find(PHASE_TAG) {
        Some(at) => &line[at + PHASE_TAG.len()..],
        None => line,
    };
    let mut run_init_us = None;
    let mut handoff_us = None;
    let mut mono_us = None;
    let mut pid = None;
    let mut pid1_hwm_kib = None;
    for token in body.split_whitespace() {
        let (key, value) = token
            .split_once('=')
            .ok_or_else(|| format!("{token:?} is not key=value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{key}={value:?} is not a whole number"))
        };
        match key {
            "run_init_us" => run_init_us = Some(number()?),
            "handoff_us" => handoff_us = Some(number()?),
            "mono_us" => mono_us = Some(number()?),
            "pid" => {
                pid = Some(
                    value
                        .parse::<u32>()
                        .map_err(|_| format!("pid={value:?} is not a pid"))?,
                )
            }
            "pid1_hwm_kib" => pid1_hwm_kib = if value == "-" { None } else { Some(number()?) },
            _ => return Err(format!("unknown key {key:?}")),
        }
    }
    let need = |v: Option<u64>, key: &str| v.ok_or_else(|| format!("{key} missing"));
    let phase = Phase {
        run_init_us: need(run_init_us, "run_init_us")?,
        handoff_us: need(handoff_us, "handoff_us")?,
        mono_us: need(mono_us, "mono_us")?,
        pid: pid.ok_or("pid missing")?,
        pid1_hwm_kib,
    };
    if phase.handoff_us < phase.run_init_us {
        return Err(format!(
            "handoff_us={} is before run_init_us={}",
            phase.handoff_us, phase.run_init_us
        ));
    }
    Ok(phase)
}

pub fn format_mark(name: &str, ts_us: u64) -> String {
    format!("{MARK_TAG}{name} {ts_us}")
}

/// Parses the text after [`MARK_TAG`]: `<name> <printk_us>`.
pub fn parse_mark(body: &str) -> Result<(String, u64), String> {
    let mut parts = body.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(name), Some(ts), None) => ts
            .parse()
            .map(|ts| (name.to_string(), ts))
            .map_err(|_| format!("mark {name}: {ts:?} is not a whole number")),
        _ => Err(format!("{body:?} is not `<name> <printk_us>`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmsg_records() {
        // (record, Some((seq, ts_us, message)) or None)
        type Case<'a> = (&'a str, Option<(u64, u64, &'a str)>);
        let cases: &[Case] = &[
            (
                "6,339,5176123,-;Run /init as init process\n",
                Some((339, 5176123, RUN_INIT)),
            ),
            (
                "6,340,5200000,-,caller=T1;bench-mark modules\n SUBSYSTEM=x\n",
                Some((340, 5200000, "bench-mark modules")),
            ),
            ("12,7,0,c;no newline", Some((7, 0, "no newline"))),
            ("6,1,2,-;", Some((1, 2, ""))),
            ("6,1,2;missing flags", None),
            ("6,x,2,-;bad seq", None),
            ("no separator", None),
            ("", None),
        ];
        for (text, want) in cases {
            let got = parse_kmsg(text).map(|r| (r.seq, r.ts_us, r.message));
            let want = want.map(|(s, t, m)| (s, t, m.to_string()));
            assert_eq!(got, want, "{text:?}");
        }
    }

    fn rec(seq: u64, ts_us: u64, message: &str) -> KmsgRecord {
        KmsgRecord {
            seq,
            ts_us,
            message: message.into(),
        }
    }

    #[test]
    fn phase_ends_from_the_log() {
        let log = vec![
            rec(1, 100, "Linux version 6.1"),
            rec(2, 5_000_000, RUN_INIT),
            rec(3, 5_100_000, "bench-mark early"),
            rec(4, 6_250_000, "bench-handoff 7"),
        ];
        assert_eq!(
            find_phase(&log, "bench-handoff 7"),
            Ok(PhaseEnds {
                run_init_us: 5_000_000,
                handoff_us: 6_250_000
            })
        );
        let err = find_phase(&log[..3], "bench-handoff 7").unwrap_err();
        assert!(err.contains("no \"bench-handoff 7\""), "{err}");
        let err = find_phase(&log[2..], "bench-handoff 7").unwrap_err();
        assert!(err.contains("ring overwritten"), "{err}");
        let swapped = vec![rec(1, 1, "bench-handoff 7"), rec(2, 2, RUN_INIT)];
        assert!(find_phase(&swapped, "bench-handoff 7").is_err());
    }

    #[test]
    fn marks_from_the_log() {
        let log = vec![
            rec(1, 10, "bench-mark early"),
            rec(2, 11, "unrelated"),
            rec(3, 12, "bench-mark two words"),
            rec(4, 13, "bench-mark "),
            rec(5, 14, "bench-mark hashed"),
        ];
        assert_eq!(
            find_marks(&log),
            vec![("early".to_string(), 10), ("hashed".to_string(), 14)]
        );
    }

    #[test]
    fn phase_line_round_trips() {
        let cases = [
            Phase {
                run_init_us: 5_000_000,
                handoff_us: 6_000_000,
                mono_us: 6_000_100,
                pid: 1,
                pid1_hwm_kib: None,
            },
            Phase {
                run_init_us: 1,
                handoff_us: 1,
                mono_us: 0,
                pid: 431,
                pid1_hwm_kib: Some(1234),
            },
        ];
        for p in cases {
            let line = format_phase(&p);
            assert_eq!(parse_phase(&line), Ok(p), "{line}");
            assert_eq!(parse_phase(&format!("[  7.1] {line}\r")), Ok(p));
        }
        assert_eq!(cases[0].pid1_phase_us(), 1_000_000);
    }

    #[test]
    fn phase_line_errors() {
        let cases = [
            ("run_init_us=1 handoff_us=2 mono_us=3", "pid missing"),
            ("run_init_us=1 handoff_us=2 pid=1", "mono_us missing"),
            ("run_init_us=x handoff_us=2 mono_us=3 pid=1", "run_init_us=\"x\""),
            ("run_init_us=1 handoff_us=2 mono_us=3 pid=-1", "pid=\"-1\""),
            (
                "run_init_us=1 handoff_us=2 mono_us=3 pid=1 extra",
                "\"extra\" is not key=value",
            ),
            (
                "run_init_us=1 handoff_us=2 mono_us=3 pid=1 what=1",
                "unknown key \"what\"",
            ),
            ("run_init_us=5 handoff_us=2 mono_us=3 pid=1", "is before"),
        ];
        for (line, needle) in cases {
            let err = parse_phase(line).unwrap_err();
            assert!(err.contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn mark_lines() {
        assert_eq!(
            parse_mark(format_mark("hashed", 42).strip_prefix(MARK_TAG).unwrap()),
            Ok(("hashed".to_string(), 42))
        );
        for bad in ["", "hashed", "hashed x", "a 1 2"] {
            assert!(parse_mark(bad).is_err(), "{bad:?}");
        }
    }
}
