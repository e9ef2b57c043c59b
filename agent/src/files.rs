//! Writing a config's files without ever following a symbolic link.
//!
//! basalt_common::config already checked each path's text (absolute,
//! normalised, under /run, /var or /tmp). What the text cannot show is a
//! symlink on the way, e.g. `/var/lib` pointing at `/etc`. So every
//! component is opened relative to the previous one with
//! `O_DIRECTORY | O_NOFOLLOW`, and the file itself is created with
//! `O_NOFOLLOW | O_EXCL` under a temporary name, then renamed into place.
//!
//! Applying is split so that nothing changes before everything is known to
//! work: [`preflight`] walks what exists, [`stage`] writes temporary files
//! (creating missing directories), and [`Staged::commit`] renames them all.

use crate::sys;
use basalt_common::config::FileSpec;
use nix::errno::Errno;
use nix::fcntl::{renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::linkat;
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileError {
    /// The path leads through a symlink or a non-directory: the config is
    /// refused (`files[index].path`).
    Unsafe { index: usize, path: String, why: String },
    /// A filesystem operation failed.
    Io {
        path: String,
        op: &'static str,
        errno: Errno,
    },
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::Unsafe { path, why, .. } => write!(f, "{path}: {why}"),
            FileError::Io { path, op, errno } => write!(f, "cannot {op} {path}: {}", errno.desc()),
        }
    }
}

fn open_root(root: &Path) -> Result<OwnedFd, FileError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(root)
        .map(OwnedFd::from)
        .map_err(|e| FileError::Io {
            path: root.display().to_string(),
            op: "open",
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })
}

fn cstr(s: &str) -> CString {
    // Config validation refused NUL bytes in paths.
    CString::new(s).unwrap_or_default()
}

/// Splits `/var/lib/x` into `["var", "lib"]` and `"x"`.
fn split(path: &str) -> (Vec<&str>, &str) {
    let mut parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let name = parts.pop().unwrap_or_default();
    (parts, name)
}

/// Opens directory `dirs` beneath `root`, refusing symlinks. With `create`,
/// missing directories are made (mode 0755); without, a missing one ends the
/// walk with `None`: everything below it would be new.
fn walk(root: &OwnedFd, dirs: &[&str], create: bool, index: usize, path: &str) -> Result<Option<OwnedFd>, FileError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
    let mut here = root.try_clone().map_err(|e| FileError::Io {
        path: path.into(),
        op: "duplicate a descriptor for",
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
    })?;
    for (depth, comp) in dirs.iter().enumerate() {
        let prefix = format!("/{}", dirs[..=depth].join("/"));
        let name = cstr(comp);
        let opened = match sys::openat(here.as_fd(), &name, flags, Mode::empty()) {
            Err(Errno::ENOENT) if create => {
                match mkdirat(Some(here.as_raw_fd()), name.as_c_str(), Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(errno) => {
                        return Err(FileError::Io {
                            path: prefix,
                            op: "create directory",
                            errno,
                        })
                    }
                }
                sys::openat(here.as_fd(), &name, flags, Mode::empty())
            }
            Err(Errno::ENOENT) => return Ok(None),
            other => other,
        };
        here = match opened {
            Ok(fd) => fd,
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                let why = match kind_of(&here, &name) {
                    Some(SFlag::S_IFLNK) => format!("{prefix} is a symbolic link; files are never written through one"),
                    _ => format!("{prefix} is not a directory"),
                };
                return Err(FileError::Unsafe {
                    index,
                    path: path.into(),
                    why,
                });
            }
            Err(errno) => {
                return Err(FileError::Io {
                    path: prefix,
                    op: "open directory",
                    errno,
                })
            }
        };
    }
    Ok(Some(here))
}

/// The file type of `name` in `dir`, without following a symlink.
fn kind_of(dir: &OwnedFd, name: &CString) -> Option<SFlag> {
    let st = fstatat(Some(dir.as_raw_fd()), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
    Some(SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()))
}

/// Checks every file's path against the filesystem as it is, changing nothing.
pub fn preflight(root: &Path, files: &[FileSpec]) -> Result<(), FileError> {
    let root_fd = open_root(root)?;
    for (index, file) in files.iter().enumerate() {
        let (dirs, name) = split(&file.path);
        let Some(dir) = walk(&root_fd, &dirs, false, index, &file.path)? else {
            continue;
        };
        check_target(&dir, name, index, &file.path)?;
    }
    Ok(())
}

/// The file itself may be absent or a regular file, nothing else.
fn check_target(dir: &OwnedFd, name: &str, index: usize, path: &str) -> Result<(), FileError> {
    let why = match kind_of(dir, &cstr(name)) {
        None | Some(SFlag::S_IFREG) => return Ok(()),
        Some(SFlag::S_IFLNK) => "is a symbolic link; files are never written through one",
        Some(SFlag::S_IFDIR) => "is a directory",
        Some(_) => "is not a regular file",
    };
    Err(FileError::Unsafe {
        index,
        path: path.into(),
        why: format!("{path} {why}"),
    })
}

/// Temporary files written and waiting to be renamed into place.
#[derive(Debug)]
pub struct Staged {
    items: Vec<StagedFile>,
}

#[derive(Debug)]
struct StagedFile {
    dir: OwnedFd,
    tmp: CString,
    name: CString,
    path: String,
}

/// Writes every file under a temporary name next to its final place.
/// On failure, the temporary files written so far are removed.
pub fn stage(root: &Path, files: &[FileSpec]) -> Result<Staged, FileError> {
    let root_fd = open_root(root)?;
    let mut staged = Staged { items: Vec::new() };
    for (index, file) in files.iter().enumerate() {
        match stage_one(&root_fd, index, file) {
            Ok(item) => staged.items.push(item),
            Err(e) => {
                staged.abort();
                return Err(e);
            }
        }
    }
    Ok(staged)
}

fn stage_one(root: &OwnedFd, index: usize, file: &FileSpec) -> Result<StagedFile, FileError> {
    let (dirs, name) = split(&file.path);
    let Some(dir) = walk(root, &dirs, true, index, &file.path)? else {
        return Err(FileError::Io {
            path: file.path.clone(),
            op: "create the directories of",
            errno: Errno::ENOENT,
        });
    };
    let io = |op, errno| FileError::Io {
        path: file.path.clone(),
        op,
        errno,
    };
    check_target(&dir, name, index, &file.path)?;
    let tmp = cstr(&format!(".basalt-tmp.{index}.{}", std::process::id()));
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
    let mode = Mode::from_bits_truncate(file.mode);
    let fd = match sys::openat(dir.as_fd(), &tmp, flags, mode) {
        Err(Errno::EEXIST) => {
            // Left over from an agent that died mid-apply with the same pid.
            unlinkat(Some(dir.as_raw_fd()), tmp.as_c_str(), UnlinkatFlags::NoRemoveDir)
                .map_err(|e| io("remove stale temporary file for", e))?;
            sys::openat(dir.as_fd(), &tmp, flags, mode)
        }
        other => other,
    }
    .map_err(|e| io("create", e))?;
    // The umask may have cleared bits the config asked for.
    fchmod(fd.as_raw_fd(), mode).map_err(|e| io("set the mode of", e))?;
    let mut out = std::fs::File::from(fd);
    out.write_all(&file.contents)
        .map_err(|e| io("write", Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
    Ok(StagedFile {
        dir,
        tmp,
        name: cstr(name),
        path: file.path.clone(),
    })
}

impl Staged {
    /// Renames every staged file into place, keeping each file it replaces
    /// under a backup name (a hard link, so the old file stays in place
    /// until the rename swaps it). If any rename fails, the ones done are
    /// undone and the remaining temporary files removed: the files are as
    /// they were before.
    pub fn commit(self) -> Result<Committed, FileError> {
        let mut done = Committed { items: Vec::new() };
        let mut items = self.items.into_iter();
        while let Some(item) = items.next() {
            match commit_one(&item) {
                Ok(backup) => done.items.push(Replaced { item, backup }),
                Err(e) => {
                    Staged {
                        items: std::iter::once(item).chain(items).collect(),
                    }
                    .abort();
                    done.undo();
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    /// Removes the staged files.
    pub fn abort(self) {
        for item in &self.items {
            let _ = unlinkat(
                Some(item.dir.as_raw_fd()),
                item.tmp.as_c_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

/// Links the file `item` replaces (if there is one) to a backup name, then
/// renames the staged file over it. Returns the backup's name.
fn commit_one(item: &StagedFile) -> Result<Option<CString>, FileError> {
    let dir = Some(item.dir.as_raw_fd());
    let io = |op, errno| FileError::Io {
        path: item.path.clone(),
        op,
        errno,
    };
    let backup = backup_name(&item.tmp);
    // Left over from an agent that died mid-apply with the same pid.
    let _ = unlinkat(dir, backup.as_c_str(), UnlinkatFlags::NoRemoveDir);
    let kept = match linkat(dir, item.name.as_c_str(), dir, backup.as_c_str(), AtFlags::empty()) {
        Ok(()) => Some(backup),
        Err(Errno::ENOENT) => None,
        Err(e) => return Err(io("keep a copy of the file replaced at", e)),
    };
    if let Err(e) = renameat(dir, item.tmp.as_c_str(), dir, item.name.as_c_str()) {
        if let Some(b) = &kept {
            let _ = unlinkat(dir, b.as_c_str(), UnlinkatFlags::NoRemoveDir);
        }
        return Err(io("rename into place", e));
    }
    Ok(kept)
}

fn backup_name(tmp: &CString) -> CString {
    let text = tmp.to_string_lossy().replacen(".basalt-tmp.", ".basalt-old.", 1);
    cstr(&text)
}

/// Files renamed into place, with what they replaced kept until the apply
/// as a whole succeeds ([`keep`](Self::keep)) or fails ([`undo`](Self::undo)).
#[derive(Debug)]
pub struct Committed {
    items: Vec<Replaced>,
}

#[derive(Debug)]
struct Replaced {
    item: StagedFile,
    backup: Option<CString>,
}

impl Committed {
    /// The apply succeeded: the backups go.
    pub fn keep(self) {
        for r in &self.items {
            if let Some(b) = &r.backup {
                let _ = unlinkat(Some(r.item.dir.as_raw_fd()), b.as_c_str(), UnlinkatFlags::NoRemoveDir);
            }
        }
    }

    /// The apply failed after the renames: each file goes back to what it
    /// was (restored from its backup, or removed if it was new), newest
    /// first. A step that fails here is logged; nothing else can be done.
    pub fn undo(self) {
        for r in self.items.iter().rev() {
            let dir = Some(r.item.dir.as_raw_fd());
            let name = r.item.name.as_c_str();
            let result = match &r.backup {
                Some(b) => renameat(dir, b.as_c_str(), dir, name),
                None => unlinkat(dir, name, UnlinkatFlags::NoRemoveDir),
            };
            if let Err(e) = result {
                log::error!("cannot restore {} after a failed apply: {}", r.item.path, e.desc());
            }
        }
    }
}

/// Removes everything in `dir` (not `dir` itself), without following a
/// symlink or crossing into another filesystem mounted below it. Returns
/// how many entries of `dir` were removed.
pub fn empty_dir(dir: &Path) -> Result<u64, FileError> {
    use std::os::unix::fs::MetadataExt;
    let io = |path: &Path, op, e: std::io::Error| FileError::Io {
        path: path.display().to_string(),
        op,
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
    };
    let dev = std::fs::symlink_metadata(dir).map_err(|e| io(dir, "inspect", e))?.dev();
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, "list", e))? {
        let entry = entry.map_err(|e| io(dir, "list", e))?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io(&path, "inspect", e))?;
        if meta.dev() != dev {
            log::warn!("{} is another filesystem: left alone", path.display());
            continue;
        }
        let done = if meta.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        done.map_err(|e| io(&path, "remove", e))?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    fn root(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("basalt-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["var/lib", "run", "tmp", "etc"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        dir
    }

    fn file(path: &str, contents: &str) -> FileSpec {
        FileSpec {
            path: path.into(),
            mode: 0o640,
            contents: contents.as_bytes().to_vec(),
        }
    }

    #[test]
    fn writes_files_and_directories() {
        let r = root("write");
        std::fs::write(r.join("var/lib/old"), "old").unwrap();
        let files = [
            file("/var/lib/kubelet/deep/config", "hello"),
            file("/var/lib/old", "new"),
        ];
        preflight(&r, &files).unwrap();
        stage(&r, &files).unwrap().commit().unwrap().keep();
        assert_eq!(
            std::fs::read_to_string(r.join("var/lib/kubelet/deep/config")).unwrap(),
            "hello"
        );
        assert_eq!(std::fs::read_to_string(r.join("var/lib/old")).unwrap(), "new");
        let mode = std::fs::metadata(r.join("var/lib/old")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        let leftovers: Vec<_> = std::fs::read_dir(r.join("var/lib"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".basalt-tmp"))
            .collect();
        assert!(leftovers.is_empty());
        let _ = std::fs::remove_dir_all(&r);
    }

    /// A rename that fails part way puts back every file already renamed:
    /// replaced ones from their backups, new ones removed.
    #[test]
    fn a_failed_commit_restores_what_it_replaced() {
        let r = root("rollback");
        std::fs::write(r.join("var/lib/old"), "old").unwrap();
        let files = [
            file("/var/lib/old", "new"),
            file("/var/lib/fresh", "fresh"),
            file("/var/lib/blocked", "x"),
            file("/var/lib/never", "y"),
        ];
        let staged = stage(&r, &files).unwrap();
        // Something appears where the third file goes after staging: its
        // commit fails (a directory can be neither linked nor replaced by a file).
        std::fs::create_dir_all(r.join("var/lib/blocked/inside")).unwrap();
        let err = staged.commit().unwrap_err();
        assert!(
            matches!(&err, FileError::Io { path, .. } if path == "/var/lib/blocked"),
            "{err:?}"
        );
        assert_eq!(std::fs::read_to_string(r.join("var/lib/old")).unwrap(), "old");
        assert!(!r.join("var/lib/fresh").exists(), "a new file is removed again");
        assert!(!r.join("var/lib/never").exists());
        let mut names: Vec<String> = std::fs::read_dir(r.join("var/lib"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["blocked", "old"], "no temporary or backup file is left");
        let _ = std::fs::remove_dir_all(&r);
    }

    /// After a commit, undo() puts the old files back; keep() drops the backups.
    #[test]
    fn undo_and_keep() {
        let r = root("undo");
        std::fs::write(r.join("var/lib/a"), "a0").unwrap();
        let files = [file("/var/lib/a", "a1"), file("/var/lib/b", "b1")];
        let done = stage(&r, &files).unwrap().commit().unwrap();
        assert_eq!(std::fs::read_to_string(r.join("var/lib/a")).unwrap(), "a1");
        done.undo();
        assert_eq!(std::fs::read_to_string(r.join("var/lib/a")).unwrap(), "a0");
        assert!(!r.join("var/lib/b").exists());
        stage(&r, &files).unwrap().commit().unwrap().keep();
        let names: Vec<String> = std::fs::read_dir(r.join("var/lib"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".basalt"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
        assert_eq!(std::fs::read_to_string(r.join("var/lib/b")).unwrap(), "b1");
        let _ = std::fs::remove_dir_all(&r);
    }

    #[test]
    fn empty_dir_removes_everything_below_and_follows_no_link() {
        let r = root("empty");
        let outside = r.join("etc/keep");
        std::fs::write(&outside, "keep").unwrap();
        std::fs::create_dir_all(r.join("var/lib/deep/er")).unwrap();
        std::fs::write(r.join("var/lib/deep/er/f"), "x").unwrap();
        std::fs::write(r.join("var/top"), "x").unwrap();
        std::os::unix::fs::symlink(r.join("etc"), r.join("var/link")).unwrap();
        assert_eq!(empty_dir(&r.join("var")).unwrap(), 3);
        assert!(std::fs::read_dir(r.join("var")).unwrap().next().is_none());
        assert_eq!(
            std::fs::read_to_string(&outside).unwrap(),
            "keep",
            "a link's target is not touched"
        );
        let _ = std::fs::remove_dir_all(&r);
    }

    #[test]
    fn refuses_symlinks_anywhere() {
        let r = root("links");
        let outside = r.join("etc");
        std::os::unix::fs::symlink(&outside, r.join("var/lib/escape")).unwrap();
        std::os::unix::fs::symlink(outside.join("target"), r.join("run/link")).unwrap();
        std::fs::create_dir_all(r.join("tmp/dir")).unwrap();
        std::fs::write(r.join("tmp/plain"), "x").unwrap();
        let cases = [
            ("/var/lib/escape/passwd", "/var/lib/escape is a symbolic link"),
            ("/var/lib/escape/a/b", "/var/lib/escape is a symbolic link"),
            ("/run/link", "/run/link is a symbolic link"),
            ("/tmp/dir", "/tmp/dir is a directory"),
            ("/tmp/plain/x", "/tmp/plain is not a directory"),
        ];
        for (path, want) in cases {
            let files = [file("/var/lib/fine", "x"), file(path, "pwned")];
            let err = preflight(&r, &files).unwrap_err();
            assert!(
                matches!(&err, FileError::Unsafe { index: 1, why, .. } if why.starts_with(want)),
                "{path}: {err:?}"
            );
            // stage() checks again, for whatever changed after preflight.
            let err = stage(&r, &files).unwrap_err();
            assert!(matches!(err, FileError::Unsafe { index: 1, .. }), "{path}: {err:?}");
        }
        assert!(
            std::fs::read_dir(&outside).unwrap().next().is_none(),
            "nothing written outside"
        );
        assert!(!r.join("var/lib/fine").exists(), "failed stage leaves no file");
        let _ = std::fs::remove_dir_all(&r);
    }
}
