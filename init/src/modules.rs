//! Loading the manifest's modules, in its order, each checked against its
//! signed digest first. After the last one, harden.rs sets
//! `kernel.modules_disabled=1`, so these are the only modules this boot gets.

use crate::digest;
use basalt_common::hex;
use basalt_common::manifest::ModuleEntry;
use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Seek};
use std::os::fd::AsFd;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadOutcome {
    Loaded,
    /// The kernel already had it (EEXIST): loaded earlier or by a dependency.
    AlreadyLoaded,
}

#[derive(Debug)]
pub enum ModuleError {
    Open {
        path: String,
        source: io::Error,
    },
    Read {
        path: String,
        source: io::Error,
    },
    Digest {
        name: String,
        expected: [u8; 32],
        actual: [u8; 32],
    },
    Load {
        name: String,
        source: nix::Error,
    },
}

impl std::fmt::Display for ModuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModuleError::Open { path, source } => write!(f, "open module {path}: {source}"),
            ModuleError::Read { path, source } => write!(f, "read module {path}: {source}"),
            ModuleError::Digest { name, expected, actual } => write!(
                f,
                "module {name}: sha256 {} does not match the manifest's {}",
                hex::encode(actual),
                hex::encode(expected)
            ),
            ModuleError::Load { name, source } => write!(f, "finit_module {name}: {source}"),
        }
    }
}

/// Loads each module from under `root` (the initramfs root, `/` at boot).
pub fn load_all(root: &str, modules: &[ModuleEntry]) -> Result<Vec<(String, LoadOutcome)>, ModuleError> {
    let mut loaded = Vec::with_capacity(modules.len());
    for m in modules {
        let path = format!("{}{}", root.trim_end_matches('/'), m.initramfs_path());
        let mut file = File::open(&path).map_err(|source| ModuleError::Open {
            path: path.clone(),
            source,
        })?;
        let actual = digest::hash_stream(&mut file, u64::MAX, None::<&mut Vec<u8>>)
            .map_err(|source| ModuleError::Read {
                path: path.clone(),
                source,
            })?
            .sha256;
        if actual != m.sha256 {
            return Err(ModuleError::Digest {
                name: m.name.clone(),
                expected: m.sha256,
                actual,
            });
        }
        // finit_module reads the file again from offset 0 of this same fd.
        // Nothing else runs yet, so the bytes cannot change between the two.
        file.rewind().map_err(|source| ModuleError::Read {
            path: path.clone(),
            source,
        })?;
        let outcome = finit(&file, &m.name)?;
        log::info!(
            "module {} {}",
            m.name,
            if outcome == LoadOutcome::Loaded {
                "loaded"
            } else {
                "already loaded"
            }
        );
        loaded.push((m.name.clone(), outcome));
    }
    Ok(loaded)
}

fn finit(file: &File, name: &str) -> Result<LoadOutcome, ModuleError> {
    let params: &CStr = c"";
    match nix::kmod::finit_module(file.as_fd(), params, nix::kmod::ModuleInitFlags::empty()) {
        Ok(()) => Ok(LoadOutcome::Loaded),
        Err(nix::Error::EEXIST) => Ok(LoadOutcome::AlreadyLoaded),
        Err(source) => Err(ModuleError::Load {
            name: name.to_string(),
            source,
        }),
    }
}
