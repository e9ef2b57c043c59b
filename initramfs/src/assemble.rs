//! The whole build, in order: check the kernel's options, choose the
//! modules, make (or take) the root image, describe and sign it, pack.

use crate::image::{self, Compression, Content, InitramfsParts, ManifestInputs, SignedManifest};
use crate::kconfig::{self, Finding, KconfigError, Status};
use crate::modules::{ModuleFile, ModuleIndex, ModulesError};
use crate::squashfs::{self, SquashfsError};
use basalt_common::keys::{KeyError, SigningKey};
use basalt_common::manifest::Manifest;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Where the root image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    /// A directory, made into SquashFS with mksquashfs.
    Rootfs(PathBuf),
    /// A ready SquashFS image.
    Squashfs(PathBuf),
}

/// Everything `build` needs besides the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpec {
    /// basalt-init, packed as /init.
    pub init: PathBuf,
    pub root: RootSource,
    /// `lib/modules/<release>` of the kernel the image boots.
    pub modules_dir: PathBuf,
    /// That kernel's `.config`.
    pub kconfig: PathBuf,
    /// basalt's requirements (kernel-config/basalt.config).
    pub fragment: PathBuf,
    pub version: String,
    pub handoff: String,
    pub compression: Compression,
    /// false: the image is left out of the initramfs and must be on a block device.
    pub embed_image: bool,
    /// Keep a copy of the image here.
    pub image_out: Option<PathBuf>,
    /// Write manifest.json, manifest.sig and image.pub here.
    pub manifest_out: Option<PathBuf>,
    pub out: PathBuf,
    /// Every timestamp in the output (SOURCE_DATE_EPOCH); 0 when `None`.
    pub source_date_epoch: Option<u64>,
}

/// What a build made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildReport {
    pub manifest: Manifest,
    pub signed: SignedManifest,
    /// In load order.
    pub modules: Vec<ModuleFile>,
    pub initramfs_size: u64,
}

#[derive(Debug)]
pub enum BuildError {
    ReadInput {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    Fragment {
        path: PathBuf,
        source: KconfigError,
    },
    Kconfig {
        path: PathBuf,
        source: KconfigError,
    },
    /// The kernel lacks options basalt needs; each entry is a finding line.
    KernelOptions {
        path: PathBuf,
        missing: Vec<String>,
    },
    Key {
        path: PathBuf,
        source: KeyError,
    },
    Release {
        modules_dir: PathBuf,
        why: String,
    },
    Modules(ModulesError),
    Squashfs(SquashfsError),
    /// `--no-embed-image` with a rootfs and nowhere to keep the image.
    ImageNowhere,
    /// SOURCE_DATE_EPOCH is not a number of seconds that fits the cpio format.
    SourceDateEpoch {
        value: String,
    },
    CopyImage {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    Manifest(image::ManifestError),
    WriteManifest {
        path: PathBuf,
        source: io::Error,
    },
    Pack(image::PackError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ReadInput { what, path, source } => {
                write!(f, "reading {what}: {}: {source}", path.display())
            }
            BuildError::Fragment { path, source } => {
                write!(f, "parsing the option fragment: {}: {source}", path.display())
            }
            BuildError::Kconfig { path, source } => {
                write!(f, "parsing the kernel config: {}: {source}", path.display())
            }
            BuildError::KernelOptions { path, missing } => write!(
                f,
                "checking kernel options: {}: {} missing: {}",
                path.display(),
                missing.len(),
                missing.join("; ")
            ),
            BuildError::Key { path, source } => {
                write!(f, "reading the image key: {}: {source}", path.display())
            }
            BuildError::Release { modules_dir, why } => {
                write!(f, "finding the kernel release: {}: {why}", modules_dir.display())
            }
            BuildError::Modules(e) => write!(f, "{e}"),
            BuildError::Squashfs(e) => write!(f, "{e}"),
            BuildError::ImageNowhere => write!(
                f,
                "building without an embedded image: --rootfs: the image would be thrown away; give --image-out"
            ),
            BuildError::SourceDateEpoch { value } => write!(
                f,
                "reading SOURCE_DATE_EPOCH: {value:?}: not a whole number of seconds below 2^32"
            ),
            BuildError::CopyImage { from, to, source } => write!(
                f,
                "copying the root image: {} to {}: {source}",
                from.display(),
                to.display()
            ),
            BuildError::Manifest(e) => write!(f, "{e}"),
            BuildError::WriteManifest { path, source } => {
                write!(f, "writing the manifest copy: {}: {source}", path.display())
            }
            BuildError::Pack(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BuildError {}

/// Parses a SOURCE_DATE_EPOCH value (`None`: unset).
pub fn parse_source_date_epoch(value: Option<&str>) -> Result<Option<u64>, BuildError> {
    match value {
        None => Ok(None),
        Some(v) => match v.trim().parse::<u32>() {
            Ok(n) => Ok(Some(u64::from(n))),
            Err(_) => Err(BuildError::SourceDateEpoch { value: v.to_string() }),
        },
    }
}

/// The kernel release of a modules dir: its own name when that is a release
/// (`lib/modules/6.1.0-56-amd64`), else the `release` file beside it
/// (`build/kernel/{modules,release}`).
pub fn kernel_release(modules_dir: &Path) -> Result<String, BuildError> {
    let release_err = |why: String| BuildError::Release {
        modules_dir: modules_dir.to_path_buf(),
        why,
    };
    if let Some(name) = modules_dir.file_name().and_then(|n| n.to_str()) {
        if name.starts_with(|c: char| c.is_ascii_digit()) {
            return Ok(name.to_string());
        }
    }
    let release_file = modules_dir
        .parent()
        .map(|p| p.join("release"))
        .ok_or_else(|| release_err("no parent directory to find a release file in".into()))?;
    let text = std::fs::read_to_string(&release_file).map_err(|e| {
        release_err(format!(
            "the directory name is not a release and {} cannot be read ({e})",
            release_file.display()
        ))
    })?;
    let release = text.trim();
    if release.is_empty() || release.contains(char::is_whitespace) {
        return Err(release_err(format!(
            "{} does not hold one release name",
            release_file.display()
        )));
    }
    Ok(release.to_string())
}

/// Reads the fragment and kernel config and holds one against the other.
pub fn check_options(kconfig_path: &Path, fragment_path: &Path) -> Result<Vec<Finding>, BuildError> {
    let read = |what, path: &Path| {
        std::fs::read_to_string(path).map_err(|source| BuildError::ReadInput {
            what,
            path: path.to_path_buf(),
            source,
        })
    };
    let fragment = kconfig::parse_fragment(&read("the option fragment", fragment_path)?).map_err(|source| {
        BuildError::Fragment {
            path: fragment_path.to_path_buf(),
            source,
        }
    })?;
    let kconfig =
        kconfig::parse_kconfig(&read("the kernel config", kconfig_path)?).map_err(|source| BuildError::Kconfig {
            path: kconfig_path.to_path_buf(),
            source,
        })?;
    Ok(kconfig::check(&fragment, &kconfig))
}

/// What `kernel-check` reports.
#[derive(Debug)]
pub struct KernelReport {
    pub findings: Vec<Finding>,
    /// With a modules dir: what was found there.
    pub modules: Option<ModulesCheck>,
}

#[derive(Debug)]
pub struct ModulesCheck {
    pub dir: PathBuf,
    /// Modules the findings name that are neither a `.ko` there nor built in.
    pub absent: Vec<String>,
    /// All modules to pack, in load order, or why they cannot be ordered.
    pub load_order: Result<Vec<ModuleFile>, BuildError>,
}

impl KernelReport {
    /// One line per requirement, the load order when known, and a summary.
    /// The flag is true when everything basalt needs is there.
    pub fn render(&self) -> (String, bool) {
        let mut out = String::new();
        let (mut builtin, mut module, mut missing) = (0, 0, 0);
        let absent: &[String] = self.modules.as_ref().map(|m| m.absent.as_slice()).unwrap_or(&[]);
        for finding in &self.findings {
            let absent_here: Vec<&String> = match &finding.status {
                Status::Module { modules, .. } => modules.iter().filter(|m| absent.contains(m)).collect(),
                _ => Vec::new(),
            };
            if !absent_here.is_empty() {
                missing += 1;
                let files: Vec<String> = absent_here.iter().map(|m| format!("{m}.ko")).collect();
                let what = finding.requirement.describe();
                out.push_str(&format!(
                    "{what:<40} MISSING (=m but no {} in the modules dir)\n",
                    files.join(" ")
                ));
                continue;
            }
            match finding.status {
                Status::BuiltIn { .. } => builtin += 1,
                Status::Module { .. } => module += 1,
                Status::Missing { .. } => missing += 1,
            }
            out.push_str(&format!("{finding}\n"));
        }
        let mut ok = missing == 0;
        if let Some(check) = &self.modules {
            match &check.load_order {
                Ok(order) => {
                    let names: Vec<&str> = order.iter().map(|m| m.name.as_str()).collect();
                    out.push_str(&format!("modules to pack, in load order: {}\n", names.join(" ")));
                }
                Err(e) => {
                    ok = false;
                    out.push_str(&format!("modules cannot be ordered: {e}\n"));
                }
            }
        }
        out.push_str(&format!(
            "{} requirements: {builtin} built-in, {module} module, {missing} missing{}\n",
            self.findings.len(),
            if ok { "" } else { ": this kernel cannot boot basalt" }
        ));
        (out, ok)
    }
}

/// `kernel-check`: options, and with a modules dir, the `.ko` files and their order.
pub fn kernel_check(
    kconfig_path: &Path,
    fragment_path: &Path,
    modules_dir: Option<&Path>,
) -> Result<KernelReport, BuildError> {
    let findings = check_options(kconfig_path, fragment_path)?;
    let modules = match modules_dir {
        None => None,
        Some(dir) => {
            let index = ModuleIndex::scan(dir).map_err(BuildError::Modules)?;
            let wanted = kconfig::wanted_modules(&findings);
            let absent = wanted
                .iter()
                .filter(|m| index.path(m).is_none() && !index.is_builtin(m))
                .cloned()
                .collect();
            let load_order =
                kernel_release(dir).and_then(|release| index.resolve(&wanted, &release).map_err(BuildError::Modules));
            Some(ModulesCheck {
                dir: dir.to_path_buf(),
                absent,
                load_order,
            })
        }
    };
    Ok(KernelReport { findings, modules })
}

/// Reads a PKCS#8 PEM Ed25519 key file.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, BuildError> {
    let text = std::fs::read_to_string(path).map_err(|source| BuildError::ReadInput {
        what: "the image key",
        path: path.to_path_buf(),
        source,
    })?;
    SigningKey::from_pkcs8_pem(&text).map_err(|source| BuildError::Key {
        path: path.to_path_buf(),
        source,
    })
}

/// Checks that the kernel has what basalt needs, then names its release and
/// the modules to pack, in load order.
pub fn kernel_modules(
    kconfig_path: &Path,
    fragment_path: &Path,
    modules_dir: &Path,
) -> Result<(String, Vec<ModuleFile>), BuildError> {
    // The kernel must have what basalt needs before anything is made for it.
    let findings = check_options(kconfig_path, fragment_path)?;
    let missing: Vec<String> = findings
        .iter()
        .filter(|f| f.is_missing())
        .map(|f| f.to_string().split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    if !missing.is_empty() {
        return Err(BuildError::KernelOptions {
            path: kconfig_path.to_path_buf(),
            missing,
        });
    }
    let release = kernel_release(modules_dir)?;
    let index = ModuleIndex::scan(modules_dir).map_err(BuildError::Modules)?;
    let modules = index
        .resolve(&kconfig::wanted_modules(&findings), &release)
        .map_err(BuildError::Modules)?;
    Ok((release, modules))
}

/// Builds the initramfs `spec` describes, signing its manifest with `key`.
pub fn build(spec: &BuildSpec, key: &SigningKey) -> Result<BuildReport, BuildError> {
    let time = spec.source_date_epoch.unwrap_or(0);
    let mtime = u32::try_from(time).map_err(|_| BuildError::SourceDateEpoch {
        value: time.to_string(),
    })?;
    if !spec.embed_image && spec.image_out.is_none() && matches!(spec.root, RootSource::Rootfs(_)) {
        return Err(BuildError::ImageNowhere);
    }

    let (release, modules) = kernel_modules(&spec.kconfig, &spec.fragment, &spec.modules_dir)?;

    // The image: made from the rootfs (into --image-out, or a temporary file
    // beside --out), or taken as given.
    let mut temp_image = None;
    let image_path = match &spec.root {
        RootSource::Rootfs(rootfs) => {
            let path = match &spec.image_out {
                Some(p) => p.clone(),
                None => {
                    let p = image::temp_beside(&spec.out, "root.sqsh");
                    temp_image = Some(TempFile(p.clone()));
                    p
                }
            };
            squashfs::build_squashfs(rootfs, &path, time).map_err(BuildError::Squashfs)?;
            path
        }
        RootSource::Squashfs(given) => {
            squashfs::check_magic(given).map_err(BuildError::Squashfs)?;
            if let Some(copy) = &spec.image_out {
                copy_file(given, copy)?;
            }
            given.clone()
        }
    };

    let manifest = image::describe(&ManifestInputs {
        version: &spec.version,
        kernel: &release,
        handoff: &spec.handoff,
        image: &image_path,
        modules: &modules,
    })
    .map_err(BuildError::Manifest)?;
    let signed = image::sign_manifest(&manifest, key);
    if let Some(dir) = &spec.manifest_out {
        write_manifest_copy(dir, &signed, key)?;
    }

    let parts = InitramfsParts {
        init: Content::File(spec.init.clone()),
        manifest_json: signed.json.clone(),
        manifest_sig: signed.signature.to_vec(),
        image: spec.embed_image.then(|| Content::File(image_path.clone())),
        modules: modules
            .iter()
            .map(|m| (m.name.clone(), Content::File(m.path.clone())))
            .collect(),
    };
    let initramfs_size =
        image::pack_initramfs_file(&parts, mtime, spec.compression, &spec.out).map_err(BuildError::Pack)?;
    drop(temp_image);
    Ok(BuildReport {
        manifest,
        signed,
        modules,
        initramfs_size,
    })
}

/// Removes the file when dropped, on success and on every error path.
pub(crate) struct TempFile(pub(crate) PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub(crate) fn copy_file(from: &Path, to: &Path) -> Result<(), BuildError> {
    let same = match (std::fs::canonicalize(from), std::fs::canonicalize(to)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Ok(());
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|source| BuildError::CopyImage {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            source,
        })
}

/// manifest.json and manifest.sig as packed, and image.pub to check them with.
pub(crate) fn write_manifest_copy(dir: &Path, signed: &SignedManifest, key: &SigningKey) -> Result<(), BuildError> {
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|source| BuildError::WriteManifest { path, source })
    };
    std::fs::create_dir_all(dir).map_err(|source| BuildError::WriteManifest {
        path: dir.to_path_buf(),
        source,
    })?;
    write("manifest.json", &signed.json)?;
    write("manifest.sig", &signed.signature)?;
    write("image.pub", key.public_key().to_pem().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_date_epoch() {
        assert_eq!(parse_source_date_epoch(None).unwrap(), None);
        assert_eq!(parse_source_date_epoch(Some("1700000000")).unwrap(), Some(1700000000));
        for bad in ["", "-1", "1.5", "4294967296", "soon"] {
            let err = parse_source_date_epoch(Some(bad)).unwrap_err().to_string();
            assert!(err.starts_with("reading SOURCE_DATE_EPOCH: "), "{err}");
        }
    }

    #[test]
    fn release_from_name_or_file() {
        let base = std::env::temp_dir().join(format!("basalt-release-{}", std::process::id()));
        let named = base.join("lib/modules/6.1.0-56-amd64");
        let beside = base.join("kernel/modules");
        std::fs::create_dir_all(&named).unwrap();
        std::fs::create_dir_all(&beside).unwrap();
        assert_eq!(kernel_release(&named).unwrap(), "6.1.0-56-amd64");
        let err = kernel_release(&beside).unwrap_err().to_string();
        assert!(err.contains("the directory name is not a release and"), "{err}");
        std::fs::write(base.join("kernel/release"), "6.1.0-test\n").unwrap();
        assert_eq!(kernel_release(&beside).unwrap(), "6.1.0-test");
        std::fs::write(base.join("kernel/release"), "two words\n").unwrap();
        assert!(kernel_release(&beside).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
