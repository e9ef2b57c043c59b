//! Finding the programs the launcher runs.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// `program` itself if it has a slash, else the first executable file of
/// that name in `path_var`'s directories, then in `extra_dirs`.
pub(crate) fn find_program(program: &Path, path_var: Option<&OsStr>, extra_dirs: &[PathBuf]) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return is_executable(program).then(|| program.to_path_buf());
    }
    let path_dirs = path_var.map(|p| std::env::split_paths(p).collect::<Vec<_>>());
    path_dirs
        .iter()
        .flatten()
        .chain(extra_dirs)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Where `cargo install` puts programs: $CARGO_HOME/bin, else ~/.cargo/bin.
/// vhost-device-vsock is installed that way and that directory is often
/// not in PATH under make or CI.
pub(crate) fn cargo_bin_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(Path::new(&home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs
}

/// How a search is described in a "not found" error.
pub(crate) fn describe_search(program: &Path, extra_dirs: &[PathBuf]) -> String {
    if program.components().count() > 1 {
        return program.display().to_string();
    }
    let mut places = vec!["PATH".to_string()];
    places.extend(extra_dirs.iter().map(|d| d.display().to_string()));
    places.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn lookup_order_and_executable_bit() {
        let root = std::env::temp_dir().join(format!("basalt-qemu-programs-{}", std::process::id()));
        let (a, b, extra) = (root.join("a"), root.join("b"), root.join("extra"));
        for dir in [&a, &b, &extra] {
            fs::create_dir_all(dir).unwrap();
        }
        let make = |path: &Path, mode: u32| {
            fs::write(path, "#!/bin/sh\n").unwrap();
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        };
        make(&a.join("tool"), 0o644); // not executable: skipped
        make(&b.join("tool"), 0o755);
        make(&extra.join("tool"), 0o755);
        make(&extra.join("only-extra"), 0o755);
        let path_var = std::env::join_paths([&a, &b]).unwrap();
        let extra_dirs = vec![extra.clone()];

        let cases: Vec<(PathBuf, Option<PathBuf>)> = vec![
            ("tool".into(), Some(b.join("tool"))),
            ("only-extra".into(), Some(extra.join("only-extra"))),
            ("missing".into(), None),
            (a.join("tool"), None),
            (extra.join("tool"), Some(extra.join("tool"))),
        ];
        for (program, want) in cases {
            assert_eq!(
                find_program(&program, Some(&path_var), &extra_dirs),
                want,
                "{}",
                program.display()
            );
        }
        assert_eq!(find_program(Path::new("tool"), None, &[]), None);
        fs::remove_dir_all(&root).unwrap();
    }
}
