//! The keys whose signatures the agent accepts. They are files in
//! `/etc/basalt/trusted-keys/` of the root image, so the image's own
//! verification covers them. Each file holds one Ed25519 public key: 32 raw
//! bytes, DER SubjectPublicKeyInfo, or PEM (`openssl pkey -pubout`).

use basalt_common::keys::PublicKey;
use std::path::Path;

/// A key file larger than this is not a public key.
const MAX_KEY_FILE: u64 = 16 * 1024;

/// Loads every key in `dir`. Returns the keys and a description of every
/// file that was skipped; a missing directory means no trusted keys.
pub fn load_trusted_keys(dir: &Path) -> (Vec<PublicKey>, Vec<String>) {
    let mut keys = Vec::new();
    let mut problems = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push(format!("cannot read trusted key directory {}: {e}", dir.display()));
            return (keys, problems);
        }
    };
    let mut paths: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        // Hidden files (editor backups, `.keep`) and unreadable names are not keys.
        let hidden = match path.file_name().and_then(|n| n.to_str()) {
            Some(name) => name.starts_with('.'),
            None => true,
        };
        if hidden {
            continue;
        }
        let loaded = std::fs::metadata(&path)
            .map_err(|e| e.to_string())
            .and_then(|m| {
                if !m.is_file() {
                    Err("not a regular file".into())
                } else if m.len() > MAX_KEY_FILE {
                    Err(format!("{} bytes is too large for a public key", m.len()))
                } else {
                    std::fs::read(&path).map_err(|e| e.to_string())
                }
            })
            .and_then(|bytes| PublicKey::parse(&bytes).map_err(|e| e.to_string()));
        match loaded {
            Ok(key) if keys.contains(&key) => {}
            Ok(key) => keys.push(key),
            Err(why) => problems.push(format!("skipping trusted key {}: {why}", path.display())),
        }
    }
    (keys, problems)
}
