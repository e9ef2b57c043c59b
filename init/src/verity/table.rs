//! The dm-verity table line (Documentation/admin-guide/device-mapper/verity.rst):
//! `<version> <data_dev> <hash_dev> <data_block_size> <hash_block_size>
//!  <num_data_blocks> <hash_start_block> <algorithm> <root_digest> <salt>
//!  [<#opt_params> <opt_params>...]`.

use super::dm::Target;
use basalt_common::hex;

/// What the verity target needs, in the units the kernel takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityTable {
    /// Hash format version: 1 hashes salt || block (what veritysetup writes).
    pub version: u32,
    /// `major:minor` (or a path) of the data and hash devices.
    pub data_dev: String,
    pub hash_dev: String,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    /// Where the tree starts on the hash device, in hash blocks.
    pub hash_start_block: u64,
    pub algorithm: String,
    pub root_hash: Vec<u8>,
    pub salt: Vec<u8>,
    /// Optional arguments, e.g. `ignore_zero_blocks`, `restart_on_corruption`.
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableError {
    /// A device, the algorithm or an option is empty or would split the line.
    Token {
        what: &'static str,
        value: String,
    },
    BlockSize {
        what: &'static str,
        size: u32,
    },
    NoDataBlocks,
    RootHash,
    Overflow,
}

impl std::fmt::Display for TableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TableError::Token { what, value } => {
                write!(f, "verity {what} {value:?} is empty or contains whitespace")
            }
            TableError::BlockSize { what, size } => {
                write!(f, "verity {what} {size} is not a power of two from 512 to 4096")
            }
            TableError::NoDataBlocks => write!(f, "verity table has no data blocks"),
            TableError::RootHash => write!(f, "verity root hash is empty"),
            TableError::Overflow => write!(f, "verity data size overflows 64 bits"),
        }
    }
}

fn token(what: &'static str, value: &str) -> Result<(), TableError> {
    if value.is_empty() || value.bytes().any(|b| b.is_ascii_whitespace() || b == 0) {
        return Err(TableError::Token {
            what,
            value: value.into(),
        });
    }
    Ok(())
}

fn block_size(what: &'static str, size: u32) -> Result<(), TableError> {
    // The kernel takes 512 up to PAGE_SIZE; 4096 is PAGE_SIZE on x86-64.
    if !size.is_power_of_two() || !(512..=4096).contains(&size) {
        return Err(TableError::BlockSize { what, size });
    }
    Ok(())
}

/// The parameter string of the verity target.
pub fn verity_params(t: &VerityTable) -> Result<String, TableError> {
    token("data device", &t.data_dev)?;
    token("hash device", &t.hash_dev)?;
    token("algorithm", &t.algorithm)?;
    for o in &t.options {
        token("option", o)?;
    }
    block_size("data block size", t.data_block_size)?;
    block_size("hash block size", t.hash_block_size)?;
    if t.data_blocks == 0 {
        return Err(TableError::NoDataBlocks);
    }
    if t.root_hash.is_empty() {
        return Err(TableError::RootHash);
    }
    // "-" is how the kernel spells an empty salt.
    let salt = if t.salt.is_empty() {
        "-".to_string()
    } else {
        hex::encode(&t.salt)
    };
    let mut line = format!(
        "{} {} {} {} {} {} {} {} {} {}",
        t.version,
        t.data_dev,
        t.hash_dev,
        t.data_block_size,
        t.hash_block_size,
        t.data_blocks,
        t.hash_start_block,
        t.algorithm,
        hex::encode(&t.root_hash),
        salt
    );
    if !t.options.is_empty() {
        line.push_str(&format!(" {} {}", t.options.len(), t.options.join(" ")));
    }
    Ok(line)
}

/// The whole table: one verity target covering the data, in 512-byte sectors.
pub fn verity_target(t: &VerityTable) -> Result<Target, TableError> {
    let params = verity_params(t)?;
    let length = t
        .data_blocks
        .checked_mul(u64::from(t.data_block_size))
        .ok_or(TableError::Overflow)?
        / 512;
    Ok(Target {
        start: 0,
        length,
        target_type: "verity".into(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> VerityTable {
        VerityTable {
            version: 1,
            data_dev: "7:0".into(),
            hash_dev: "7:0".into(),
            data_block_size: 4096,
            hash_block_size: 4096,
            data_blocks: 16384,
            hash_start_block: 16384,
            algorithm: "sha256".into(),
            root_hash: vec![0xab; 32],
            salt: vec![0x01, 0x02],
            options: vec![],
        }
    }

    #[test]
    fn params_table() {
        let ab = "ab".repeat(32);
        let cases: Vec<(&str, VerityTable, String)> = vec![
            (
                "same device, tree after data",
                table(),
                format!("1 7:0 7:0 4096 4096 16384 16384 sha256 {ab} 0102"),
            ),
            (
                "separate hash device",
                VerityTable {
                    data_dev: "254:1".into(),
                    hash_dev: "/dev/vdb".into(),
                    hash_start_block: 0,
                    ..table()
                },
                format!("1 254:1 /dev/vdb 4096 4096 16384 0 sha256 {ab} 0102"),
            ),
            (
                "empty salt",
                VerityTable {
                    salt: vec![],
                    ..table()
                },
                format!("1 7:0 7:0 4096 4096 16384 16384 sha256 {ab} -"),
            ),
            (
                "options",
                VerityTable {
                    options: vec!["ignore_zero_blocks".into(), "restart_on_corruption".into()],
                    ..table()
                },
                format!("1 7:0 7:0 4096 4096 16384 16384 sha256 {ab} 0102 2 ignore_zero_blocks restart_on_corruption"),
            ),
        ];
        for (name, t, want) in cases {
            assert_eq!(verity_params(&t).unwrap(), want, "{name}");
        }
    }

    #[test]
    fn target_covers_the_data_in_sectors() {
        let t = verity_target(&table()).unwrap();
        assert_eq!((t.start, t.length, t.target_type.as_str()), (0, 16384 * 8, "verity"));
        let small = verity_target(&VerityTable {
            data_block_size: 512,
            hash_block_size: 1024,
            data_blocks: 3,
            ..table()
        })
        .unwrap();
        assert_eq!(small.length, 3);
    }

    #[test]
    fn refused_tables() {
        let cases: Vec<(VerityTable, &str)> = vec![
            (
                VerityTable {
                    data_dev: "".into(),
                    ..table()
                },
                "verity data device \"\" is empty or contains whitespace",
            ),
            (
                VerityTable {
                    hash_dev: "7:0 0".into(),
                    ..table()
                },
                "verity hash device \"7:0 0\"",
            ),
            (
                VerityTable {
                    algorithm: "sha 256".into(),
                    ..table()
                },
                "verity algorithm",
            ),
            (
                VerityTable {
                    options: vec!["a b".into()],
                    ..table()
                },
                "verity option \"a b\"",
            ),
            (
                VerityTable {
                    data_block_size: 3000,
                    ..table()
                },
                "verity data block size 3000 is not a power of two",
            ),
            (
                VerityTable {
                    hash_block_size: 8192,
                    ..table()
                },
                "verity hash block size 8192",
            ),
            (
                VerityTable {
                    data_blocks: 0,
                    ..table()
                },
                "no data blocks",
            ),
            (
                VerityTable {
                    root_hash: vec![],
                    ..table()
                },
                "root hash is empty",
            ),
            (
                VerityTable {
                    data_blocks: u64::MAX,
                    ..table()
                },
                "overflows",
            ),
        ];
        for (t, needle) in cases {
            let err = verity_target(&t).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
