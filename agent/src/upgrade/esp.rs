//! The ESP's `/EFI/Linux`, where basalt's boot entries are files
//! (basalt_common::disk::boot_entry). The agent mounts the ESP when it
//! first needs it; a test hands it a plain directory instead.

use basalt_common::disk::boot_entry::{BootEntry, SlotId};
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Where the ESP's UKIs live, under its root.
pub const UKI_DIR: &str = "EFI/Linux";

pub struct Esp {
    root: PathBuf,
}

impl Esp {
    /// The ESP mounted at (or copied to) `root`.
    pub fn at(root: &Path) -> Esp {
        Esp {
            root: root.to_path_buf(),
        }
    }

    /// Mounts the ESP partition `device` at `mountpoint` (vfat, noexec,
    /// nosuid, nodev), unless something is mounted there already.
    pub fn mount(device: &Path, mountpoint: &Path) -> Result<Esp, String> {
        use nix::mount::{mount, MsFlags};
        std::fs::create_dir_all(mountpoint).map_err(|e| format!("cannot make {}: {e}", mountpoint.display()))?;
        let esp = Esp::at(mountpoint);
        if esp.dir().is_dir() {
            return Ok(esp);
        }
        let flags = MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        mount(Some(device), mountpoint, Some("vfat"), flags, Some("umask=0077")).map_err(|e| {
            format!(
                "cannot mount the ESP {} at {}: {}",
                device.display(),
                mountpoint.display(),
                e.desc()
            )
        })?;
        Ok(esp)
    }

    fn dir(&self) -> PathBuf {
        self.root.join(UKI_DIR)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// basalt's entries, with their file names as found (FAT keeps case).
    pub fn entries(&self) -> Result<Vec<(String, BootEntry)>, String> {
        let dir = self.dir();
        let list = std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let mut out: Vec<(String, BootEntry)> = list
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                BootEntry::parse(&name).map(|entry| (name, entry))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Removes every entry of `slot`, and its staging file, then flushes:
    /// done before the slot is written, so nothing points at it meanwhile.
    pub fn remove_slot(&self, slot: SlotId) -> Result<(), String> {
        for (name, entry) in self.entries()? {
            if entry.slot == slot {
                self.remove(&name)?;
            }
        }
        match std::fs::remove_file(self.path(&slot.staging_name())) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", slot.staging_name())),
        }
        self.sync()
    }

    fn remove(&self, name: &str) -> Result<(), String> {
        std::fs::remove_file(self.path(name)).map_err(|e| format!("cannot remove {UKI_DIR}/{name}: {e}"))
    }

    /// Creates (empty) the staging file of `slot`.
    pub fn create_staging(&self, slot: SlotId) -> Result<File, String> {
        let path = self.path(&slot.staging_name());
        File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))
    }

    pub fn open_staging(&self, slot: SlotId) -> Result<File, String> {
        let path = self.path(&slot.staging_name());
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))
    }

    /// The staged UKI's SHA-256, read back after it is flushed.
    pub fn staged_sha256(&self, slot: SlotId) -> Result<[u8; 32], String> {
        let mut file = self.open_staging(slot)?;
        file.sync_all()
            .map_err(|e| format!("cannot flush {}: {e}", slot.staging_name()))?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| format!("cannot read {}: {e}", slot.staging_name()))?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Ok(out)
    }

    /// Gives the staged UKI of `entry.slot` its entry name: from here on
    /// the loader may boot it.
    pub fn promote(&self, entry: &BootEntry) -> Result<(), String> {
        let from = entry.slot.staging_name();
        self.rename(&from, &entry.file_name())
    }

    pub fn rename(&self, from: &str, to: &str) -> Result<(), String> {
        std::fs::rename(self.path(from), self.path(to))
            .map_err(|e| format!("cannot rename {UKI_DIR}/{from} to {to}: {e}"))?;
        self.sync()
    }

    /// Flushes the whole ESP (FAT has no per-directory durability).
    pub fn sync(&self) -> Result<(), String> {
        let dir = File::open(self.dir()).map_err(|e| format!("cannot open {}: {e}", self.dir().display()))?;
        nix::unistd::syncfs(dir.as_raw_fd()).map_err(|e| format!("cannot flush the ESP: {}", e.desc()))
    }
}

/// Writes `bytes` at `offset` of a staging file.
pub fn write_staged(file: &File, offset: u64, bytes: &[u8]) -> Result<(), String> {
    file.write_all_at(bytes, offset)
        .map_err(|e| format!("cannot write the staged UKI at {offset}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_staging_promotion_and_removal() {
        let root = std::env::temp_dir().join(format!("basalt-esp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join(UKI_DIR)).unwrap();
        for name in ["basalt-1-a.efi", "basalt-0-b+0-3.efi", "linux.efi"] {
            std::fs::write(root.join(UKI_DIR).join(name), name).unwrap();
        }
        let esp = Esp::at(&root);
        let names = |esp: &Esp| esp.entries().unwrap().into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(names(&esp), ["basalt-0-b+0-3.efi", "basalt-1-a.efi"]);

        let staged = esp.create_staging(SlotId::B).unwrap();
        write_staged(&staged, 0, b"new uki").unwrap();
        esp.remove_slot(SlotId::B).unwrap();
        assert_eq!(names(&esp), ["basalt-1-a.efi"]);
        assert!(!root.join(UKI_DIR).join("basalt-b.efi.new").exists());

        let staged = esp.create_staging(SlotId::B).unwrap();
        write_staged(&staged, 0, b"new uki").unwrap();
        let want: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, b"new uki")
            .as_ref()
            .try_into()
            .unwrap();
        assert_eq!(esp.staged_sha256(SlotId::B).unwrap(), want);
        let entries: Vec<BootEntry> = esp.entries().unwrap().into_iter().map(|(_, e)| e).collect();
        esp.promote(&BootEntry::trial_above(SlotId::B, &entries)).unwrap();
        assert_eq!(names(&esp), ["basalt-1-a.efi", "basalt-2-b+3.efi"]);
        assert!(
            root.join(UKI_DIR).join("linux.efi").exists(),
            "other files are never touched"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
