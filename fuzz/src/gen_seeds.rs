//! Writes the seed corpora: `gen-seeds DIR` replaces DIR/<target>/ for every
//! target; `gen-seeds --check DIR` exits non-zero if DIR differs from what
//! would be written (scripts/fuzz.sh runs the check before fuzzing).

use basalt_fuzz::seeds::{self, TARGETS};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::{fs, io};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [flag, dir] if flag == "--check" => check(Path::new(dir)),
        [dir] if !dir.starts_with('-') => write(Path::new(dir)),
        _ => Err("usage: gen-seeds [--check] DIR".to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen-seeds: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What the directory should hold: relative path -> bytes.
fn wanted() -> BTreeMap<PathBuf, Vec<u8>> {
    seeds::all()
        .into_iter()
        .map(|s| (Path::new(s.target).join(&s.name), s.bytes))
        .collect()
}

fn write(dir: &Path) -> Result<(), String> {
    let err = |p: &Path, e: io::Error| format!("{}: {e}", p.display());
    for target in TARGETS {
        let sub = dir.join(target);
        if sub.exists() {
            fs::remove_dir_all(&sub).map_err(|e| err(&sub, e))?;
        }
        fs::create_dir_all(&sub).map_err(|e| err(&sub, e))?;
    }
    let files = wanted();
    for (rel, bytes) in &files {
        let path = dir.join(rel);
        fs::write(&path, bytes).map_err(|e| err(&path, e))?;
    }
    println!("gen-seeds: wrote {} seeds under {}", files.len(), dir.display());
    Ok(())
}

fn check(dir: &Path) -> Result<(), String> {
    let want = wanted();
    let mut have = BTreeMap::new();
    for target in TARGETS {
        let sub = dir.join(target);
        let entries = fs::read_dir(&sub).map_err(|e| format!("{}: {e}", sub.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| format!("{}: {e}", sub.display()))?.path();
            let bytes = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let rel = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
            have.insert(rel, bytes);
        }
    }
    let stale: Vec<String> = want
        .keys()
        .chain(have.keys())
        .filter(|k| want.get(*k) != have.get(*k))
        .map(|k| k.display().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if stale.is_empty() {
        println!("gen-seeds: {} seeds under {} are current", want.len(), dir.display());
        Ok(())
    } else {
        Err(format!(
            "seeds under {} are stale ({}); regenerate with gen-seeds {}",
            dir.display(),
            stale.join(", "),
            dir.display()
        ))
    }
}
