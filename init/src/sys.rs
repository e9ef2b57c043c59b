//! Every `unsafe` call basalt-init makes, each behind a small safe wrapper.
//!
//! Most syscalls go through nix, which is safe; what is here is what nix does
//! not wrap: the loop-device and device-mapper ioctls, BLKGETSIZE64 and
//! sigtimedwait.
#![allow(unsafe_code, reason = "the sys module holds all of this crate's unsafe code")]

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::process::Command;
use std::time::Duration;

/// What PID1's supervision loop does to the system: start the handoff
/// program, wait for a signal, reap, read the clock. The seam that lets
/// supervise.rs's restarts and reaping be unit-tested against a fake;
/// [`Pid1`] is the real one.
pub trait Host {
    /// Spawns `cmd` with an empty signal mask (see [`unblock_signals_in_child`]).
    fn spawn(&mut self, cmd: &mut Command) -> io::Result<Pid>;
    /// [`wait_any_signal`], as a signal.
    fn wait_signal(&mut self, timeout: Duration) -> Option<Signal>;
    /// `waitpid(-1, WNOHANG)`: one exited child, `StillAlive`, or ECHILD.
    fn try_reap(&mut self) -> nix::Result<WaitStatus>;
    /// Time since boot on CLOCK_MONOTONIC (see crate::uptime).
    fn now(&self) -> Duration;
}

/// The node's own processes, signals and clock.
#[derive(Debug, Default)]
pub struct Pid1;

impl Host for Pid1 {
    fn spawn(&mut self, cmd: &mut Command) -> io::Result<Pid> {
        unblock_signals_in_child(cmd);
        let child = cmd.spawn()?;
        Ok(Pid::from_raw(child.id() as i32))
    }

    fn wait_signal(&mut self, timeout: Duration) -> Option<Signal> {
        wait_any_signal(timeout).and_then(|n| Signal::try_from(n).ok())
    }

    fn try_reap(&mut self) -> nix::Result<WaitStatus> {
        waitpid(None, Some(WaitPidFlag::WNOHANG))
    }

    fn now(&self) -> Duration {
        crate::uptime::now()
    }
}

const LOOP_CTL_GET_FREE: libc::Ioctl = 0x4C82;
const LOOP_CONFIGURE: libc::Ioctl = 0x4C0A;
/// `_IOR(0x12, 114, size_t)`
// The request number exceeds i32::MAX; musl's ioctl takes an int, glibc's an
// unsigned long, and both pass the same 32 bits to the kernel.
const BLKGETSIZE64: libc::Ioctl = 0x8008_1272_u32 as libc::Ioctl;

pub const LO_FLAGS_READ_ONLY: u32 = 1;
pub const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

/// `struct loop_info64` from <linux/loop.h>.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config` from <linux/loop.h> (Linux 5.8+).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `ioctl(control, LOOP_CTL_GET_FREE)`: the number of a free loop device.
pub fn loop_get_free(control: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
    let n = check(unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) })?;
    Ok(n as u32)
}

/// `ioctl(loopdev, LOOP_CONFIGURE, &cfg)`: binds `backing` to the loop device
/// with the given flags, exposing exactly `size_limit` bytes.
pub fn loop_configure(
    loopdev: BorrowedFd<'_>,
    backing: BorrowedFd<'_>,
    flags: u32,
    size_limit: u64,
    name: &str,
) -> io::Result<()> {
    let mut file_name = [0u8; LO_NAME_SIZE];
    let n = name.len().min(LO_NAME_SIZE - 1);
    file_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let cfg = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: size_limit,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: flags,
            lo_file_name: file_name,
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; LO_KEY_SIZE],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: cfg is a fully initialised loop_config that outlives the call;
    // the kernel only reads it.
    check(unsafe { libc::ioctl(loopdev.as_raw_fd(), LOOP_CONFIGURE, &cfg as *const LoopConfig) })?;
    Ok(())
}

/// `ioctl(dev, BLKGETSIZE64)`: the size of a block device in bytes.
pub fn block_device_size(dev: BorrowedFd<'_>) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which is valid.
    check(unsafe { libc::ioctl(dev.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) })?;
    Ok(size)
}

/// `_IOWR(DM_IOCTL, nr, struct dm_ioctl)` from <linux/dm-ioctl.h>: the
/// device-mapper request numbers carry the 312-byte size of the header.
const fn dm_request(nr: u8) -> libc::Ioctl {
    const DM_IOCTL: u32 = 0xfd;
    const IOC_READ_WRITE: u32 = 3 << 30;
    let size = crate::verity::dm::DM_IOCTL_SIZE as u32;
    (IOC_READ_WRITE | (size << 16) | (DM_IOCTL << 8) | nr as u32) as libc::Ioctl
}

/// `ioctl(control, DM_*, buf)` on /dev/mapper/control. `buf` is a whole
/// request as verity::dm builds it: a `struct dm_ioctl` whose `data_size`
/// is `buf.len()`, then its payload. The kernel writes its answer into the
/// same buffer, never past `data_size`.
pub fn dm_ioctl(control: BorrowedFd<'_>, nr: u8, buf: &mut [u8]) -> io::Result<()> {
    let declared = buf
        .get(12..16)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize);
    if buf.len() < crate::verity::dm::DM_IOCTL_SIZE || declared != Some(buf.len()) {
        // The kernel trusts data_size for how much it may write back.
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: buf is a live, exclusively borrowed buffer of buf.len() bytes,
    // and its data_size field (checked just above) tells the kernel exactly
    // that length, so the kernel neither reads nor writes beyond it. The
    // kernel copies the buffer in and out, so its alignment does not matter.
    check(unsafe { libc::ioctl(control.as_raw_fd(), dm_request(nr), buf.as_mut_ptr()) })?;
    Ok(())
}

/// `sigtimedwait(all signals, timeout)`. Returns the signal number, or `None`
/// when the timeout passed first (or a stray EINTR woke us).
pub fn wait_any_signal(timeout: Duration) -> Option<libc::c_int> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    // SAFETY: the sigset is initialised by sigfillset before use; info and ts
    // are valid for the duration of the call.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let sig = libc::sigtimedwait(&set, &mut info, &ts);
        (sig > 0).then_some(sig)
    }
}

/// Makes the child unblock every signal between fork and exec. PID1 blocks
/// them all, and std's Command passes the mask on unchanged, so without this
/// the handoff program could not be stopped with SIGTERM.
pub fn unblock_signals_in_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child after fork; it only calls
    // sigemptyset and sigprocmask, both async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            check(libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()))?;
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn loop_config_matches_the_kernel_abi() {
        // <linux/loop.h>: loop_info64 is 232 bytes, loop_config 304.
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn dm_request_numbers_match_the_kernel_header() {
        // DM_VERSION and DM_TABLE_LOAD as the C preprocessor computes them.
        assert_eq!(dm_request(0) as u32, 0xc138_fd00);
        assert_eq!(dm_request(9) as u32, 0xc138_fd09);
    }

    #[test]
    fn dm_ioctl_refuses_a_buffer_whose_size_field_lies() {
        let null = std::fs::File::open("/dev/null").unwrap();
        let mut short = vec![0u8; 100];
        let mut lying = vec![0u8; 400];
        lying[12..16].copy_from_slice(&1000u32.to_ne_bytes());
        for buf in [&mut short, &mut lying] {
            let err = dm_ioctl(null.as_fd(), 0, buf).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        }
    }

    #[test]
    fn child_starts_with_an_empty_signal_mask() {
        // The mask is per thread and fork copies the calling thread's: block
        // SIGTERM in this test thread, spawn, and read the child's SigBlk.
        // SAFETY: an all-zero sigset_t is a valid value; sigemptyset below
        // sets it properly.
        let mut block: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: plain libc calls on a local sigset.
        unsafe {
            libc::sigemptyset(&mut block);
            libc::sigaddset(&mut block, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &block, std::ptr::null_mut());
        }
        let sigblk = |cmd: &mut std::process::Command| {
            let out = cmd.arg("SigBlk").arg("/proc/self/status").output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let inherited = sigblk(&mut std::process::Command::new("grep"));
        let mut cmd = std::process::Command::new("grep");
        unblock_signals_in_child(&mut cmd);
        let cleared = sigblk(&mut cmd);
        // SAFETY: undo the block for the rest of this test thread.
        unsafe {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &block, std::ptr::null_mut());
        }
        assert_eq!(
            inherited, "SigBlk:\t0000000000004000",
            "std passes the mask on: the reason for this wrapper"
        );
        assert_eq!(cleared, "SigBlk:\t0000000000000000");
    }
}
