//! basalt-mkimage: the command line around the basalt_mkimage library.

use basalt_common::bundle::Arch;
use basalt_common::hex;
use basalt_common::manifest::DEFAULT_HANDOFF;
use basalt_mkimage::assemble::{self, BuildSpec, RootSource};
use basalt_mkimage::image::{self, Compression};
use basalt_mkimage::squashfs;
use basalt_mkimage::{bundle, disk, esp, uki};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage:
  basalt-mkimage build --init FILE (--rootfs DIR | --squashfs FILE) --modules-dir DIR
                       --kconfig FILE --fragment FILE --key FILE --version STR
                       [--handoff PATH] [--compress none|gzip] [--no-embed-image]
                       [--image-out FILE] [--manifest-out DIR] --out FILE
  basalt-mkimage disk --init FILE (--rootfs DIR | --squashfs FILE) --modules-dir DIR
                      --kconfig FILE --fragment FILE --key FILE --version STR --kernel FILE
                      [--handoff PATH] [--slot-size SIZE] [--esp-size SIZE] [--state-size SIZE]
                      [--var-size SIZE] [--salt HEX] [--fill-b] [--append STR] [--stub FILE] [--loader FILE]
                      [--parts-dir DIR] --out FILE
  basalt-mkimage bundle --init FILE (--rootfs DIR | --squashfs FILE) --modules-dir DIR
                        --kconfig FILE --fragment FILE --key FILE --version STR --kernel FILE
                        --version-seq N [--arch x86_64|aarch64] [--target A|B]
                        [--handoff PATH] [--slot-size SIZE] [--salt HEX] [--append STR]
                        [--stub FILE] [--parts-dir DIR] --out FILE
  basalt-mkimage kernel-check --kconfig FILE --fragment FILE [--modules-dir DIR]
  basalt-mkimage squashfs --rootfs DIR --out FILE

disk writes a GPT disk image: ESP (systemd-boot, one UKI per filled slot), ROOT-A,
ROOT-B (empty unless --fill-b), STATE, VAR (an empty ext4). SIZE is bytes or N[KMG];
defaults 256M, 128M, 16M, 256M.
bundle writes a signed update bundle (docs/upgrades.md): the UKI for --target (default B)
and that slot's contents, built as disk builds them, with SHA-256 per 1 MiB chunk.
Timestamps in the output are SOURCE_DATE_EPOCH when set, else 0.";

fn main() -> ExitCode {
    match run(std::env::args_os().skip(1).collect()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("basalt-mkimage: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<OsString>) -> Result<ExitCode, String> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    }
    let Some((command, rest)) = args.split_first() else {
        return Err("reading arguments: no command given (see basalt-mkimage --help)".to_string());
    };
    match command.to_str() {
        Some("build") => build(Flags::parse(rest, BUILD_VALUES, &["--no-embed-image"])?),
        Some("disk") => disk(Flags::parse(rest, DISK_VALUES, &["--fill-b"])?),
        Some("bundle") => make_bundle(Flags::parse(rest, BUNDLE_VALUES, &[])?),
        Some("kernel-check") => kernel_check(Flags::parse(rest, &["--kconfig", "--fragment", "--modules-dir"], &[])?),
        Some("squashfs") => make_squashfs(Flags::parse(rest, &["--rootfs", "--out"], &[])?),
        Some("help") => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(format!(
            "reading arguments: {}: unknown command (see basalt-mkimage --help)",
            command.to_string_lossy()
        )),
    }
}

const BUILD_VALUES: &[&str] = &[
    "--init",
    "--rootfs",
    "--squashfs",
    "--modules-dir",
    "--kconfig",
    "--fragment",
    "--key",
    "--version",
    "--handoff",
    "--compress",
    "--image-out",
    "--manifest-out",
    "--out",
];

fn build(mut flags: Flags) -> Result<ExitCode, String> {
    let root = root_source(&mut flags)?;
    let compression: Compression = match flags.take_str("--compress")? {
        None => Compression::None,
        Some(c) => c.parse().map_err(|e| format!("reading arguments: --compress: {e}"))?,
    };
    let key_path = flags.path("--key")?;
    let spec = BuildSpec {
        init: flags.path("--init")?,
        root,
        modules_dir: flags.path("--modules-dir")?,
        kconfig: flags.path("--kconfig")?,
        fragment: flags.path("--fragment")?,
        version: flags.take_str("--version")?.ok_or_else(|| missing("--version"))?,
        handoff: flags
            .take_str("--handoff")?
            .unwrap_or_else(|| DEFAULT_HANDOFF.to_string()),
        compression,
        embed_image: !flags.switch("--no-embed-image"),
        image_out: flags.take("--image-out").map(PathBuf::from),
        manifest_out: flags.take("--manifest-out").map(PathBuf::from),
        out: flags.path("--out")?,
        source_date_epoch: source_date_epoch()?,
    };
    let key = assemble::read_signing_key(&key_path).map_err(|e| e.to_string())?;
    let report = assemble::build(&spec, &key).map_err(|e| e.to_string())?;

    let image = &report.manifest.image;
    let placement = match (&spec.image_out, &spec.root, spec.embed_image) {
        (_, _, true) => "embedded as /basalt/root.sqsh".to_string(),
        (Some(p), _, false) | (None, RootSource::Squashfs(p), false) => {
            format!("not embedded: put {} on a block device", p.display())
        }
        // build() refuses this combination before getting here.
        (None, RootSource::Rootfs(_), false) => "not embedded".to_string(),
    };
    println!(
        "root image  {} bytes, sha256 {}, {placement}",
        image.size,
        hex::encode(&image.sha256)
    );
    let names: Vec<&str> = report.modules.iter().map(|m| m.name.as_str()).collect();
    println!("modules     {} in load order: {}", names.len(), names.join(" "));
    println!("kernel      {}", report.manifest.kernel);
    println!("signed by   {}", key.public_key().key_id());
    println!(
        "initramfs   {} ({} bytes, compression {})",
        spec.out.display(),
        report.initramfs_size,
        spec.compression
    );
    Ok(ExitCode::SUCCESS)
}

const DISK_VALUES: &[&str] = &[
    "--init",
    "--rootfs",
    "--squashfs",
    "--modules-dir",
    "--kconfig",
    "--fragment",
    "--key",
    "--version",
    "--kernel",
    "--handoff",
    "--slot-size",
    "--esp-size",
    "--state-size",
    "--var-size",
    "--salt",
    "--append",
    "--stub",
    "--loader",
    "--parts-dir",
    "--out",
];

fn disk(mut flags: Flags) -> Result<ExitCode, String> {
    let root = root_source(&mut flags)?;
    let slot_size = size_flag(&mut flags, "--slot-size", disk::DEFAULT_SLOT_SIZE)?;
    let esp_size = size_flag(&mut flags, "--esp-size", disk::DEFAULT_ESP_SIZE)?;
    let state_size = size_flag(&mut flags, "--state-size", disk::DEFAULT_STATE_SIZE)?;
    let var_size = size_flag(&mut flags, "--var-size", disk::DEFAULT_VAR_SIZE)?;
    let salt = salt_flag(&mut flags)?;
    let key_path = flags.path("--key")?;
    let spec = disk::DiskSpec {
        init: flags.path("--init")?,
        root,
        modules_dir: flags.path("--modules-dir")?,
        kconfig: flags.path("--kconfig")?,
        fragment: flags.path("--fragment")?,
        kernel: flags.path("--kernel")?,
        stub: flags
            .take("--stub")
            .map(PathBuf::from)
            .unwrap_or_else(|| uki::DEFAULT_STUB.into()),
        loader: flags
            .take("--loader")
            .map(PathBuf::from)
            .unwrap_or_else(|| esp::DEFAULT_LOADER.into()),
        version: flags.take_str("--version")?.ok_or_else(|| missing("--version"))?,
        handoff: flags
            .take_str("--handoff")?
            .unwrap_or_else(|| DEFAULT_HANDOFF.to_string()),
        slot_size,
        esp_size,
        state_size,
        var_size,
        salt,
        fill_b: flags.switch("--fill-b"),
        append: flags.take_str("--append")?,
        parts_dir: flags.take("--parts-dir").map(PathBuf::from),
        out: flags.path("--out")?,
        source_date_epoch: source_date_epoch()?,
    };
    let key = assemble::read_signing_key(&key_path).map_err(|e| e.to_string())?;
    let report = disk::build_disk(&spec, &key).map_err(|e| e.to_string())?;

    let image = &report.manifest.image;
    println!(
        "root image  {} bytes, sha256 {}",
        image.size,
        hex::encode(&image.sha256)
    );
    if let Some(v) = &report.manifest.verity {
        println!(
            "verity      {} data blocks, {} hash blocks at offset {}, root hash {}, salt {}",
            v.data_blocks,
            v.hash_blocks,
            v.hash_offset,
            hex::encode(&v.root_hash),
            hex::encode(&v.salt)
        );
    }
    let names: Vec<&str> = report.modules.iter().map(|m| m.name.as_str()).collect();
    println!("modules     {} in load order: {}", names.len(), names.join(" "));
    println!("signed by   {}", key.public_key().key_id());
    println!("initramfs   {} bytes (in each UKI)", report.initramfs_size);
    for (name, size) in &report.ukis {
        println!("uki         /EFI/Linux/{name} ({size} bytes)");
    }
    for (i, p) in report.gpt.partitions.iter().enumerate() {
        println!(
            "partition   {} {:<7} {} LBA {}..={} ({} MiB)",
            i + 1,
            p.name,
            p.type_guid,
            p.first_lba,
            p.last_lba,
            p.size_bytes() >> 20
        );
    }
    println!(
        "disk        {} ({} bytes)",
        spec.out.display(),
        report.gpt.total_sectors * 512
    );
    Ok(ExitCode::SUCCESS)
}

fn size_flag(flags: &mut Flags, flag: &str, default: u64) -> Result<u64, String> {
    match flags.take_str(flag)? {
        None => Ok(default),
        Some(text) => disk::parse_size(&text)
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("reading arguments: {flag}: {text:?} is not a size (bytes, or N with K, M or G)")),
    }
}

fn salt_flag(flags: &mut Flags) -> Result<Option<Vec<u8>>, String> {
    match flags.take_str("--salt")? {
        None => Ok(None),
        Some(text) => hex::decode(&text)
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .map(Some)
            .ok_or_else(|| format!("reading arguments: --salt: {text:?} is not 1 to 256 bytes of hex")),
    }
}

const BUNDLE_VALUES: &[&str] = &[
    "--init",
    "--rootfs",
    "--squashfs",
    "--modules-dir",
    "--kconfig",
    "--fragment",
    "--key",
    "--version",
    "--version-seq",
    "--arch",
    "--target",
    "--kernel",
    "--handoff",
    "--slot-size",
    "--salt",
    "--append",
    "--stub",
    "--parts-dir",
    "--out",
];

fn make_bundle(mut flags: Flags) -> Result<ExitCode, String> {
    let root = root_source(&mut flags)?;
    let slot_size = size_flag(&mut flags, "--slot-size", disk::DEFAULT_SLOT_SIZE)?;
    let salt = salt_flag(&mut flags)?;
    let seq_text = flags
        .take_str("--version-seq")?
        .ok_or_else(|| missing("--version-seq"))?;
    let version_seq = seq_text
        .parse::<u64>()
        .map_err(|_| format!("reading arguments: --version-seq: {seq_text:?} is not a non-negative integer"))?;
    let arch = match flags.take_str("--arch")? {
        None => Arch::X86_64,
        Some(text) => {
            Arch::parse(&text).ok_or_else(|| format!("reading arguments: --arch: {text:?} is not x86_64 or aarch64"))?
        }
    };
    let target = match flags.take_str("--target")?.as_deref() {
        None | Some("B") | Some("ROOT-B") => disk::SLOTS[1],
        Some("A") | Some("ROOT-A") => disk::SLOTS[0],
        Some(other) => return Err(format!("reading arguments: --target: {other:?} is not A or B")),
    };
    let key_path = flags.path("--key")?;
    let spec = bundle::BundleSpec {
        init: flags.path("--init")?,
        root,
        modules_dir: flags.path("--modules-dir")?,
        kconfig: flags.path("--kconfig")?,
        fragment: flags.path("--fragment")?,
        kernel: flags.path("--kernel")?,
        stub: flags
            .take("--stub")
            .map(PathBuf::from)
            .unwrap_or_else(|| uki::DEFAULT_STUB.into()),
        version: flags.take_str("--version")?.ok_or_else(|| missing("--version"))?,
        version_seq,
        arch,
        handoff: flags
            .take_str("--handoff")?
            .unwrap_or_else(|| DEFAULT_HANDOFF.to_string()),
        slot_size,
        salt,
        target,
        append: flags.take_str("--append")?,
        parts_dir: flags.take("--parts-dir").map(PathBuf::from),
        out: flags.path("--out")?,
        source_date_epoch: source_date_epoch()?,
    };
    let key = assemble::read_signing_key(&key_path).map_err(|e| e.to_string())?;
    let report = bundle::build_bundle(&spec, &key).map_err(|e| e.to_string())?;
    let m = &report.manifest;
    println!(
        "version     {} (version_seq {}) {}",
        m.version,
        m.version_seq,
        m.arch.name()
    );
    println!("target      {} ({})", m.target, spec.target.uki);
    println!(
        "uki         {} bytes, sha256 {}, {} chunks",
        m.uki.size,
        hex::encode(&m.uki.sha256),
        m.uki.chunks.len()
    );
    println!(
        "slot        {} bytes (data and tree {}, manifest area 65536), sha256 {}, {} chunks, root hash {}",
        m.slot.digest.size,
        m.slot.tree_end,
        hex::encode(&m.slot.digest.sha256),
        m.slot.digest.chunks.len(),
        hex::encode(&m.slot.root_hash)
    );
    println!("signed by   {}", key.public_key().key_id());
    println!("bundle      {} ({} bytes)", spec.out.display(), report.bundle_size);
    Ok(ExitCode::SUCCESS)
}

fn root_source(flags: &mut Flags) -> Result<RootSource, String> {
    match (flags.take("--rootfs"), flags.take("--squashfs")) {
        (Some(dir), None) => Ok(RootSource::Rootfs(dir.into())),
        (None, Some(file)) => Ok(RootSource::Squashfs(file.into())),
        _ => Err("reading arguments: --rootfs, --squashfs: give exactly one (see basalt-mkimage --help)".to_string()),
    }
}

fn kernel_check(mut flags: Flags) -> Result<ExitCode, String> {
    let kconfig = flags.path("--kconfig")?;
    let fragment = flags.path("--fragment")?;
    let modules_dir = flags.take("--modules-dir").map(PathBuf::from);
    let report = assemble::kernel_check(&kconfig, &fragment, modules_dir.as_deref()).map_err(|e| e.to_string())?;
    let (text, ok) = report.render();
    print!("{text}");
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn make_squashfs(mut flags: Flags) -> Result<ExitCode, String> {
    let rootfs = flags.path("--rootfs")?;
    let out = flags.path("--out")?;
    let time = source_date_epoch()?.unwrap_or(0);
    squashfs::build_squashfs(&rootfs, &out, time).map_err(|e| e.to_string())?;
    let (size, digest) =
        image::sha256_file(&out).map_err(|e| format!("hashing the root image: {}: {e}", out.display()))?;
    println!("{}: {size} bytes, sha256 {}", out.display(), hex::encode(&digest));
    Ok(ExitCode::SUCCESS)
}

fn source_date_epoch() -> Result<Option<u64>, String> {
    let value = std::env::var_os("SOURCE_DATE_EPOCH");
    let text = value.as_ref().map(|v| v.to_string_lossy().into_owned());
    assemble::parse_source_date_epoch(text.as_deref()).map_err(|e| e.to_string())
}

fn missing(flag: &str) -> String {
    format!("reading arguments: {flag}: required (see basalt-mkimage --help)")
}

/// `--flag VALUE`, `--flag=VALUE` and bare switches, each given at most once.
struct Flags {
    values: BTreeMap<&'static str, OsString>,
    switches: Vec<&'static str>,
}

impl Flags {
    fn parse(args: &[OsString], with_value: &[&'static str], switches: &[&'static str]) -> Result<Self, String> {
        let mut flags = Flags {
            values: BTreeMap::new(),
            switches: Vec::new(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let text = arg.to_string_lossy();
            let (name, inline) = match text.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(OsString::from(v))),
                _ => (text.to_string(), None),
            };
            if let Some(flag) = switches.iter().find(|s| **s == name) {
                if inline.is_some() {
                    return Err(format!("reading arguments: {flag}: takes no value"));
                }
                flags.switches.push(flag);
            } else if let Some(flag) = with_value.iter().find(|s| **s == name) {
                let value = match inline {
                    Some(v) => v,
                    None => args
                        .next()
                        .cloned()
                        .ok_or_else(|| format!("reading arguments: {flag}: needs a value"))?,
                };
                if flags.values.insert(flag, value).is_some() {
                    return Err(format!("reading arguments: {flag}: given twice"));
                }
            } else {
                return Err(format!(
                    "reading arguments: {name}: unknown option (see basalt-mkimage --help)"
                ));
            }
        }
        Ok(flags)
    }

    fn take(&mut self, flag: &str) -> Option<OsString> {
        self.values.remove(flag)
    }

    fn path(&mut self, flag: &str) -> Result<PathBuf, String> {
        self.take(flag).map(PathBuf::from).ok_or_else(|| missing(flag))
    }

    fn take_str(&mut self, flag: &str) -> Result<Option<String>, String> {
        self.take(flag)
            .map(|v| {
                v.into_string()
                    .map_err(|_| format!("reading arguments: {flag}: not UTF-8"))
            })
            .transpose()
    }

    fn switch(&self, flag: &str) -> bool {
        self.switches.contains(&flag)
    }
}
