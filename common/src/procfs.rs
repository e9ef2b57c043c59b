//! `/proc/<pid>/stat` and `/proc/<pid>/status`, parsed. The callers read the
//! files (under a procfs root they are given); these functions only read text.

/// `PF_KTHREAD` from <linux/sched.h>: the process is a kernel thread.
pub const PF_KTHREAD: u64 = 0x0020_0000;

/// The fields of a `/proc/<pid>/stat` line that basalt reads. Fields after
/// the state are `None` when the line stops short or the field is no number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Field 1.
    pub pid: i32,
    /// Field 2, without its parentheses. It is the command name as the
    /// process set it, so it may itself hold spaces and parentheses.
    pub comm: String,
    /// Field 3: `R`, `S`, `D`, `Z`, `X`, ...
    pub state: char,
    /// Field 4.
    pub ppid: Option<i32>,
    /// Field 9: the kernel's `PF_*` flags.
    pub flags: Option<u64>,
    /// Field 22: when the process started, in clock ticks since boot. With
    /// the pid, it names one process across pid reuse.
    pub starttime: Option<u64>,
}

impl Stat {
    /// A zombie, or dead and about to disappear.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }

    /// `Some(true)` for a kernel thread; `None` when the flags are missing.
    pub fn is_kernel_thread(&self) -> Option<bool> {
        self.flags.map(|f| f & PF_KTHREAD != 0)
    }
}

/// Parses one `/proc/<pid>/stat` line. The command name runs from the first
/// `(` to the LAST `)`, so a name like `a) (b` cannot shift the fields after it.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let pid = text[..open].trim().parse().ok()?;
    let comm = text[open + 1..close].to_string();
    // fields[0] is field 3.
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied();
    Some(Stat {
        pid,
        comm,
        state: field(3)?.chars().next()?,
        ppid: field(4).and_then(|f| f.parse().ok()),
        flags: field(9).and_then(|f| f.parse().ok()),
        starttime: field(22).and_then(|f| f.parse().ok()),
    })
}

/// The value of `key` in a `/proc/<pid>/status` text (`SigBlk:\t0000...`),
/// trimmed. `key` is given without its colon.
pub fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

/// A memory field of a `/proc/<pid>/status` text in KiB (`VmHWM:\t  1234 kB`).
/// A value in any other unit is `None`.
pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    status_field(status, key)?.strip_suffix("kB")?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fields 3 to 24 of a real line: state S, ppid 1, flags 4194560,
    /// starttime 98765.
    const TAIL: &str = "S 1 100 100 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000000 200";

    fn stat(pid: i32, comm: &str, state: char, ppid: Option<i32>, flags: Option<u64>, start: Option<u64>) -> Stat {
        Stat {
            pid,
            comm: comm.into(),
            state,
            ppid,
            flags,
            starttime: start,
        }
    }

    #[test]
    fn stat_table() {
        let full = |pid, comm, state| Some(stat(pid, comm, state, Some(1), Some(4194560), Some(98765)));
        let cases = [
            (format!("123 (kubelet) {TAIL}"), full(123, "kubelet", 'S')),
            (format!("123 (a b) (c)) {TAIL}"), full(123, "a b) (c)", 'S')),
            (format!("1 (a) (b) c) {TAIL}"), full(1, "a) (b) c", 'S')),
            (format!("9 () {TAIL}"), full(9, "", 'S')),
            (format!("9 (x)\n{TAIL}\n"), full(9, "x", 'S')),
            (format!("123 (z) {}", TAIL.replacen('S', "Z", 1)), full(123, "z", 'Z')),
            // Short lines, as the fake /proc trees of tests write them.
            (
                "1 (init) S 0 1 1 0 -1 4194560 100 0".into(),
                Some(stat(1, "init", 'S', Some(0), Some(4194560), None)),
            ),
            (
                "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0".into(),
                Some(stat(2, "kthreadd", 'S', Some(0), Some(2129984), None)),
            ),
            (
                "77 (a) b (c)) R 1 77 77 0 -1 4194304 5".into(),
                Some(stat(77, "a) b (c)", 'R', Some(1), Some(4194304), None)),
            ),
            ("5 (x) S 1 2".into(), Some(stat(5, "x", 'S', Some(1), None, None))),
            (
                "123 (short) S 1 2".into(),
                Some(stat(123, "short", 'S', Some(1), None, None)),
            ),
            ("5 (x) S".into(), Some(stat(5, "x", 'S', None, None, None))),
            ("5 (x) S one".into(), Some(stat(5, "x", 'S', None, None, None))),
            ("5 (x)".into(), None),
            ("5 (x) ".into(), None),
            ("x (x) S 1".into(), None),
            (") 5 (x S 1".into(), None),
            ("garbage".into(), None),
            ("".into(), None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_stat(&text), want, "{text:?}");
        }
    }

    #[test]
    fn stat_kinds() {
        let kthreadd = parse_stat("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0").unwrap();
        assert_eq!(kthreadd.is_kernel_thread(), Some(true), "kthreadd is a kernel thread");
        assert!(!kthreadd.is_dead());
        let init = parse_stat("1 (init) S 0 1 1 0 -1 4194560 100 0").unwrap();
        assert_eq!(init.is_kernel_thread(), Some(false));
        assert_eq!(parse_stat("5 (x) S 1 2").unwrap().is_kernel_thread(), None);
        for (state, dead) in [('Z', true), ('X', true), ('R', false), ('S', false), ('D', false)] {
            let line = format!("5 (x) {state} 1");
            assert_eq!(parse_stat(&line).unwrap().is_dead(), dead, "{line}");
        }
    }

    #[test]
    fn own_stat_parses() {
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        let s = parse_stat(&own).unwrap();
        assert_eq!(s.pid, std::process::id() as i32);
        assert!(matches!(s.state, 'R' | 'S'), "{own}");
        assert!(s.ppid.is_some() && s.flags.is_some() && s.starttime.is_some(), "{own}");
    }

    #[test]
    fn status_table() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    1234 kB\nVmRSS:\t 1000 kB\n\
                      RssAnon:\t 300 kB\nSigBlk:\t0000000000004000\nVm:\t1 kB\n";
        let cases = [
            ("VmHWM", Some("1234 kB"), Some(1234)),
            ("VmRSS", Some("1000 kB"), Some(1000)),
            ("RssAnon", Some("300 kB"), Some(300)),
            ("Vm", Some("1 kB"), Some(1)),
            ("SigBlk", Some("0000000000004000"), None),
            ("Name", Some("x"), None),
            ("VmSwap", None, None),
            ("Rss", None, None),
        ];
        for (key, field, kib) in cases {
            assert_eq!(status_field(status, key), field, "{key}");
            assert_eq!(status_kib(status, key), kib, "{key}");
        }
        let kib_cases = [
            ("VmHWM:\t0 kB", Some(0)),
            ("Name:\tkthreadd\nState:\tS\n", None),
            ("VmHWM:\t12 MB\n", None),
            ("VmHWM:\t kB\n", None),
            ("VmHWM:\t-3 kB\n", None),
        ];
        for (text, want) in kib_cases {
            assert_eq!(status_kib(text, "VmHWM"), want, "{text:?}");
        }
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(status_kib(&own, "VmHWM").unwrap() > 0);
    }
}
