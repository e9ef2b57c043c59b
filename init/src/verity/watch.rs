//! After the handoff: a block that fails verity is a boot failure too.
//!
//! dm-verity (in its default mode, which fails the read with EIO) sends a
//! `change` uevent for the mapped disk with `DM_VERITY_ERR_BLOCK_NR=<type>,<block>`
//! for each refused block. A thread of PID1 listens for it on the kernel's
//! uevent netlink socket and ends in the one fatal handler (boot.rs), so
//! `basalt.on_error` applies and one line names the partition and the block.

use crate::boot;
use crate::boot_params::OnError;
use nix::sys::socket::{bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

/// A refused block, as the uevent says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockError {
    /// The mapped disk, e.g. `dm-0`.
    pub devname: String,
    /// `data`, or `metadata` (a hash block).
    pub kind: &'static str,
    pub block: u64,
}

/// Reads a kernel uevent (`ACTION@DEVPATH\0KEY=value\0...`); Some when it
/// is dm-verity reporting a block.
pub fn parse_uevent(msg: &[u8]) -> Option<BlockError> {
    let mut fields = msg.split(|&b| b == 0).filter_map(|f| std::str::from_utf8(f).ok());
    let header = fields.next()?;
    if !header.starts_with("change@") {
        return None;
    }
    let (mut devname, mut err) = (None, None);
    for f in fields {
        if let Some(v) = f.strip_prefix("DEVNAME=") {
            devname = Some(v);
        } else if let Some(v) = f.strip_prefix("DM_VERITY_ERR_BLOCK_NR=") {
            err = Some(v);
        }
    }
    let (kind, block) = err?.split_once(',')?;
    // enum verity_block_type in drivers/md/dm-verity.h
    let kind = match kind {
        "0" => "data",
        "1" => "metadata",
        _ => return None,
    };
    Some(BlockError {
        devname: devname?.to_string(),
        kind,
        block: block.parse().ok()?,
    })
}

/// The kernel's uevent broadcast (group 1), bound before it is needed.
pub fn open_uevents() -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkKObjectUEvent,
    )?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1))?;
    Ok(fd)
}

/// What the watcher names in its one line.
#[derive(Debug, Clone)]
pub struct Watched {
    pub label: String,
    pub node: String,
    /// `dm-N`, the mapped root.
    pub devname: String,
}

/// The cause the fatal line gives.
pub fn describe(w: &Watched, e: &BlockError) -> String {
    format!(
        "root slot {} ({}): dm-verity refused {} block {} of {} after boot",
        w.label, w.node, e.kind, e.block, e.devname
    )
}

/// Starts the watcher thread. The socket is opened here, so a failure to
/// watch is the caller's to report, and no event after this call is missed.
pub fn spawn(w: Watched, on_error: OnError, delay: Duration) -> io::Result<()> {
    let fd = open_uevents()?;
    std::thread::Builder::new().name("verity-watch".into()).spawn(move || {
        let mut buf = vec![0u8; 8192];
        loop {
            let n = match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => n,
                // ENOBUFS: the kernel dropped events while we were slow; keep listening.
                Err(_) => continue,
            };
            if let Some(e) = parse_uevent(&buf[..n]).filter(|e| e.devname == w.devname) {
                boot::fatal("verity-watch", &describe(&w, &e), on_error, delay);
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uevent(fields: &[&str]) -> Vec<u8> {
        let mut v = Vec::new();
        for f in fields {
            v.extend_from_slice(f.as_bytes());
            v.push(0);
        }
        v
    }

    #[test]
    fn uevents_table() {
        let verity = |nr: &str| {
            uevent(&[
                "change@/devices/virtual/block/dm-0",
                "ACTION=change",
                "DEVPATH=/devices/virtual/block/dm-0",
                "SUBSYSTEM=block",
                &format!("DM_VERITY_ERR_BLOCK_NR={nr}"),
                "MAJOR=254",
                "MINOR=0",
                "DEVNAME=dm-0",
                "DEVTYPE=disk",
                "SEQNUM=1234",
            ])
        };
        // (uevent, what it reports: devname, kind, block)
        type Case = (Vec<u8>, Option<(&'static str, &'static str, u64)>);
        let cases: Vec<Case> = vec![
            (verity("0,123"), Some(("dm-0", "data", 123))),
            (verity("1,283"), Some(("dm-0", "metadata", 283))),
            (verity("2,1"), None),
            (verity("0,x"), None),
            (verity("0"), None),
            (
                uevent(&[
                    "add@/devices/virtual/block/dm-0",
                    "DM_VERITY_ERR_BLOCK_NR=0,1",
                    "DEVNAME=dm-0",
                ]),
                None,
            ),
            (
                uevent(&["change@/devices/virtual/block/dm-0", "ACTION=change", "DEVNAME=dm-0"]),
                None,
            ),
            (uevent(&["change@/x", "DM_VERITY_ERR_BLOCK_NR=0,1"]), None),
            (b"libudev\0\xfe\xed\xca\xfe".to_vec(), None),
            (vec![], None),
        ];
        for (msg, want) in cases {
            let got = parse_uevent(&msg);
            let got = got.as_ref().map(|e| (e.devname.as_str(), e.kind, e.block));
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&msg));
        }
    }

    #[test]
    fn the_line_names_partition_and_block() {
        let w = Watched {
            label: "ROOT-A".into(),
            node: "/dev/vda2".into(),
            devname: "dm-0".into(),
        };
        let e = parse_uevent(&uevent(&["change@/d", "DM_VERITY_ERR_BLOCK_NR=0,77", "DEVNAME=dm-0"])).unwrap();
        assert_eq!(
            describe(&w, &e),
            "root slot ROOT-A (/dev/vda2): dm-verity refused data block 77 of dm-0 after boot"
        );
    }
}
