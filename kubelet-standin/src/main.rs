//! A stand-in for the kubelet in basalt's default image. It is NOT a kubelet.
//!
//! No kubelet binary can be obtained where basalt is built, so the default
//! image carries this program at /usr/bin/kubelet. It shows that the agent
//! starts, supervises and stops the kubelet as configured: it says plainly
//! what it is, logs its arguments and environment, reports whether the files
//! its flags name exist, writes a heartbeat, and exits 0 on SIGTERM.
//!
//! Environment (ignored by a real kubelet, so one config serves both):
//! - `KUBELET_STANDIN_HEARTBEAT`: heartbeat file (default /run/kubelet/heartbeat)
//! - `KUBELET_STANDIN_INTERVAL_MS`: heartbeat period (default 10000)

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::time::{clock_gettime, ClockId};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const DEFAULT_HEARTBEAT: &str = "/run/kubelet/heartbeat";
const DEFAULT_INTERVAL_MS: u64 = 10_000;
/// Flags whose values are files the kubelet reads at start.
const FILE_FLAGS: [&str; 5] = [
    "--config",
    "--kubeconfig",
    "--bootstrap-kubeconfig",
    "--client-ca-file",
    "--cert-dir",
];

fn banner() -> String {
    format!(
        "kubelet stand-in {} (basalt): this is NOT a real kubelet. It logs its arguments and \
         environment, writes a heartbeat and exits on SIGTERM. Build the image from a rootfs with \
         the real kubelet at /usr/bin/kubelet to run Kubernetes.",
        env!("CARGO_PKG_VERSION")
    )
}

fn monotonic_ms() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

/// The files named by kubelet flags, as (flag, path), in either
/// `--flag=value` or `--flag value` form.
fn referenced_files(args: &[String]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut it = args.iter().peekable();
    while let Some(arg) = it.next() {
        let (flag, value) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        if !FILE_FLAGS.contains(&flag) {
            continue;
        }
        let value = match value {
            Some(v) => Some(v),
            None => it.next_if(|next| !next.starts_with("--")).cloned(),
        };
        if let Some(v) = value {
            found.push((flag.to_string(), v));
        }
    }
    found
}

fn write_heartbeat(path: &Path, beat: u64) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let text = format!(
        "pid={} beat={beat} monotonic_ms={}\n",
        std::process::id(),
        monotonic_ms()
    );
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn say(line: &str) {
    // One write per line; a closed stdout must not kill a stand-in kubelet.
    let _ = std::io::stdout().write_all(format!("{line}\n").as_bytes());
}

fn main() -> ExitCode {
    let start_ms = monotonic_ms();
    let args: Vec<String> = std::env::args().collect();
    if args.iter().skip(1).any(|a| a == "--version" || a == "--help") {
        say(&banner());
        return ExitCode::SUCCESS;
    }
    // Taken as events rather than handled, so the exit is an orderly one.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    let signals = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .and_then(|()| SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC));
    let signals = match signals {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("kubelet stand-in: cannot take SIGTERM: {}", e.desc());
            return ExitCode::FAILURE;
        }
    };

    say(&banner());
    say(&format!(
        "pid {}, started at monotonic {start_ms} ms",
        std::process::id()
    ));
    for (i, a) in args.iter().enumerate() {
        say(&format!("argv[{i}] = {a}"));
    }
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.sort();
    for (k, v) in &env {
        say(&format!("env {k}={v}"));
    }
    for (flag, path) in referenced_files(&args[1..]) {
        match std::fs::metadata(&path) {
            Ok(m) => say(&format!("{flag} {path}: present, {} bytes", m.len())),
            Err(e) => say(&format!("{flag} {path}: not readable ({e})")),
        }
    }

    let heartbeat = std::env::var_os("KUBELET_STANDIN_HEARTBEAT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_HEARTBEAT));
    let interval_ms = std::env::var("KUBELET_STANDIN_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .unwrap_or(DEFAULT_INTERVAL_MS);
    let mut beat = 0u64;
    loop {
        beat += 1;
        match write_heartbeat(&heartbeat, beat) {
            Ok(()) => say(&format!("heartbeat {beat} -> {}", heartbeat.display())),
            Err(e) => say(&format!("heartbeat {beat}: cannot write {}: {e}", heartbeat.display())),
        }
        let deadline = monotonic_ms() + interval_ms;
        loop {
            let left = deadline.saturating_sub(monotonic_ms());
            if left == 0 {
                break;
            }
            let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
            let timeout = PollTimeout::from(u16::try_from(left).unwrap_or(u16::MAX));
            if let Ok(n) = poll(&mut fds, timeout) {
                if n > 0 {
                    if let Ok(Some(info)) = signals.read_signal() {
                        let name = Signal::try_from(info.ssi_signo as i32).map_or("a signal", |s| s.as_str());
                        say(&format!(
                            "received {name}: exiting cleanly (stand-in, after {beat} heartbeats)"
                        ));
                        return ExitCode::SUCCESS;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Arguments, and the (flag, file) pairs expected from them.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);

    #[test]
    fn referenced_files_table() {
        let cases: &[Case] = &[
            (&["--v=2"], &[]),
            (
                &["--config=/var/lib/kubelet/config.yaml"],
                &[("--config", "/var/lib/kubelet/config.yaml")],
            ),
            (&["--kubeconfig", "/k", "--v=2"], &[("--kubeconfig", "/k")]),
            (&["--kubeconfig", "--v=2"], &[]),
            (
                &["--cert-dir=/var/lib/kubelet/pki", "--config", "/c"],
                &[("--cert-dir", "/var/lib/kubelet/pki"), ("--config", "/c")],
            ),
        ];
        for (args, want) in cases {
            let want: Vec<(String, String)> = want.iter().map(|(f, p)| (f.to_string(), p.to_string())).collect();
            assert_eq!(referenced_files(&strings(args)), want, "{args:?}");
        }
    }
}
