//! What the in-guest fixture (`bench-handoff`) prints on the console and how
//! the host reads it back, plus the kernel log records it reads. Shared by
//! both sides so there is one definition of each format; pure functions only.
//!
//! The fixture prints `BENCH-RESULT <json>` (an [`Outcome`]) and then
//! `BENCH-DONE`, or `BENCH-ERROR <why>` when it could not measure.

use serde::{Deserialize, Serialize};

/// The message the kernel logs (KERN_INFO, so it is in the ring even with
/// `quiet`) just before it execs `/init`: the start of the PID1 phase.
pub const RUN_INIT: &str = "Run /init as init process";
/// Prefix of the step marks the baseline /init writes to /dev/kmsg.
pub const MARK_PREFIX: &str = "bench-mark ";

pub const RESULT_TAG: &str = "BENCH-RESULT ";
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

/// The printk times of the kernel's "Run /init" record and of the fixture's
/// own `marker` record (the first of each; the marker must come after it).
pub fn find_phase(records: &[KmsgRecord], marker: &str) -> Result<(u64, u64), String> {
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
    Ok((run_init.ts_us, handoff.ts_us))
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    /// printk time of the kernel's "Run /init": PID1 starts.
    pub run_init_us: u64,
    /// printk time of the fixture's first log line: the handoff program runs.
    pub handoff_us: u64,
    /// CLOCK_MONOTONIC right after that line was logged (basalt-init's
    /// boot report uses this clock; the difference is the clocks' offset).
    pub mono_us: u64,
    /// VmHWM of PID 1 at the handoff, when PID 1 is not the fixture itself
    /// (the baseline execs it as PID 1; basalt-init spawns it).
    pub pid1_hwm_kib: Option<u64>,
}

impl Phase {
    /// PID1 start to handoff, in microseconds.
    pub fn pid1_phase_us(&self) -> u64 {
        self.handoff_us.saturating_sub(self.run_init_us)
    }
}

/// One step of basalt-init's boot report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub start_us: u64,
    pub duration_us: u64,
}

/// The parts of /run/basalt/boot.json the suite uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootReport {
    pub init_start_us: u64,
    pub handoff_us: u64,
    pub pid1_phase_us: u64,
    pub steps: Vec<Step>,
}

/// Everything one boot's fixture printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub phase: Phase,
    /// The baseline's step marks (printk µs), in order.
    pub marks: Vec<(String, u64)>,
    /// basalt-init's boot report; the baseline writes none.
    pub report: Option<BootReport>,
}

/// Reads the fixture's result out of a whole console transcript.
pub fn parse_console(text: &str) -> Result<Outcome, String> {
    let mut outcome = None;
    for l in text.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(at) = l.find(ERROR_TAG) {
            return Err(format!("the fixture failed: {}", &l[at + ERROR_TAG.len()..]));
        }
        if let Some(at) = l.find(RESULT_TAG) {
            let json = &l[at + RESULT_TAG.len()..];
            outcome = Some(serde_json::from_str::<Outcome>(json).map_err(|e| format!("{}: {e}", RESULT_TAG.trim()))?);
        }
    }
    let outcome = outcome.ok_or("no BENCH-RESULT line")?;
    if !text.contains(DONE) {
        return Err("no BENCH-DONE line (console cut short?)".into());
    }
    let p = outcome.phase;
    if p.handoff_us < p.run_init_us {
        return Err(format!(
            "handoff_us={} is before run_init_us={}",
            p.handoff_us, p.run_init_us
        ));
    }
    Ok(outcome)
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

    fn log(records: &[(u64, &str)]) -> Vec<KmsgRecord> {
        let rec = |(i, &(ts_us, m)): (usize, &(u64, &str))| KmsgRecord {
            seq: i as u64 + 1,
            ts_us,
            message: m.into(),
        };
        records.iter().enumerate().map(rec).collect()
    }

    #[test]
    fn phase_ends_and_marks_from_the_log() {
        let records = [
            (100, "Linux version 6.1"),
            (5_000_000, RUN_INIT),
            (5_100_000, "bench-mark early"),
            (5_100_001, "bench-mark two words"),
            (5_100_002, "bench-mark "),
            (6_250_000, "bench-handoff 7"),
        ];
        let l = log(&records);
        assert_eq!(find_phase(&l, "bench-handoff 7"), Ok((5_000_000, 6_250_000)));
        let err = find_phase(&l[..5], "bench-handoff 7").unwrap_err();
        assert!(err.contains("no \"bench-handoff 7\""), "{err}");
        let err = find_phase(&l[2..], "bench-handoff 7").unwrap_err();
        assert!(err.contains("ring overwritten"), "{err}");
        let swapped = log(&[(1, "bench-handoff 7"), (2, RUN_INIT)]);
        assert!(find_phase(&swapped, "bench-handoff 7").is_err());
        assert_eq!(find_marks(&l), vec![("early".to_string(), 5_100_000)]);
    }

    fn outcome(pid1_hwm_kib: Option<u64>, report: Option<BootReport>) -> Outcome {
        let phase = Phase {
            run_init_us: 5_000_000,
            handoff_us: 5_950_000,
            mono_us: 5_950_400,
            pid1_hwm_kib,
        };
        let marks = vec![("mount-early".to_string(), 5_001_000)];
        Outcome { phase, marks, report }
    }

    #[test]
    fn console_round_trips_what_the_fixture_prints() {
        let step = |name: &str, start_us, duration_us| Step {
            name: name.into(),
            start_us,
            duration_us,
        };
        let report = BootReport {
            init_start_us: 5_100_000,
            handoff_us: 5_900_000,
            pid1_phase_us: 800_000,
            steps: vec![
                step("mount-early", 5_100_100, 900),
                step("verify-image", 5_200_000, 600_000),
            ],
        };
        for o in [outcome(Some(900), Some(report)), outcome(None, None)] {
            let json = serde_json::to_string(&o).unwrap();
            let text = format!("[    5.0] Run /init\r\nnoise\r\n{RESULT_TAG}{json}\r\n{DONE}\r\n[    6.0] reboot\r\n");
            assert_eq!(parse_console(&text), Ok(o.clone()));
            assert_eq!(o.phase.pid1_phase_us(), 950_000);
        }
        // The boot report as basalt-init writes it, extra keys and all.
        let boot_json = r#"{"format":1,"init_start_us":5,"handoff_us":9,"pid1_phase_us":4,"steps":[]}"#;
        let r: BootReport = serde_json::from_str(boot_json).unwrap();
        assert_eq!((r.init_start_us, r.handoff_us, r.steps.len()), (5, 9, 0));
    }

    #[test]
    fn console_failures() {
        let json = serde_json::to_string(&outcome(None, None)).unwrap();
        let result = format!("{RESULT_TAG}{json}");
        let backwards = result.replace("\"handoff_us\":5950000", "\"handoff_us\":1");
        let no_mono = result.replace("\"mono_us\":5950400,", "");
        let cases = [
            (String::new(), "no BENCH-RESULT line"),
            (format!("{result}\n"), "no BENCH-DONE"),
            ("BENCH-ERROR no kmsg\n".to_string(), "the fixture failed: no kmsg"),
            (
                format!("{RESULT_TAG}{{not json\n{DONE}\n"),
                "BENCH-RESULT: key must be a string",
            ),
            (format!("{no_mono}\n{DONE}\n"), "BENCH-RESULT: missing field `mono_us`"),
            (
                format!("{backwards}\n{DONE}\n"),
                "handoff_us=1 is before run_init_us=5000000",
            ),
        ];
        for (text, needle) in cases {
            let err = parse_console(&text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
