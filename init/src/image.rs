//! Trusting the root image: the signed manifest first, then the image bytes.
//!
//! The chain: the image key is compiled into basalt-init (build.rs), the
//! manifest is signed by it, and the manifest fixes the image's size and
//! SHA-256. An image on a block device is copied into a sealed memfd while it
//! is hashed, in one pass, so the bytes that get mounted are the bytes that
//! were checked; an image in the initramfs is already in RAM and is not copied.

use crate::boot_params::ImageSource;
use crate::digest::{self, Hashed};
use basalt_common::hex;
use basalt_common::keys::PublicKey;
use basalt_common::manifest::{self, ImageDigest, Manifest, ManifestError, MAX_MANIFEST_BYTES};
use nix::fcntl::{FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

mod baked {
    include!(concat!(env!("OUT_DIR"), "/image_key.rs"));
}

pub const MANIFEST_PATH: &str = "/basalt/manifest.json";
pub const SIGNATURE_PATH: &str = "/basalt/manifest.sig";
pub const IMAGE_PATH: &str = "/basalt/root.sqsh";

/// The image key compiled into this binary, if any.
pub fn baked_key() -> Option<PublicKey> {
    baked::IMAGE_KEY.map(PublicKey::from_raw)
}

#[derive(Debug)]
pub enum ImageError {
    NoKey,
    ReadManifest {
        path: &'static str,
        source: io::Error,
    },
    Manifest(ManifestError),
    Missing {
        path: String,
    },
    Open {
        path: String,
        source: io::Error,
    },
    DeviceTimeout {
        path: String,
        waited: Duration,
    },
    Size {
        path: String,
        expected: u64,
        actual: u64,
    },
    Read {
        path: String,
        source: io::Error,
    },
    Digest {
        path: String,
        expected: [u8; 32],
        actual: [u8; 32],
    },
    Memfd {
        source: io::Error,
    },
    /// A root slot is verity's to set up (verity/), never hashed as a file.
    RootSlot {
        label: String,
    },
}

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageError::NoKey => {
                write!(
                    f,
                    "no image key compiled into basalt-init (build it with BASALT_IMAGE_PUBKEY=key.pub)"
                )
            }
            ImageError::ReadManifest { path, source } => write!(f, "read {path}: {source}"),
            ImageError::Manifest(e) => write!(f, "{MANIFEST_PATH}: {e}"),
            ImageError::Missing { path } => write!(f, "root image {path} not found"),
            ImageError::Open { path, source } => write!(f, "open root image {path}: {source}"),
            ImageError::DeviceTimeout { path, waited } => {
                write!(
                    f,
                    "root image device {path} did not appear within {:.1} s",
                    waited.as_secs_f64()
                )
            }
            ImageError::Size { path, expected, actual } if actual < expected => {
                write!(
                    f,
                    "root image {path} is truncated: {actual} bytes, manifest says {expected}"
                )
            }
            ImageError::Size { path, expected, actual } => {
                write!(f, "root image {path} is {actual} bytes, manifest says {expected}")
            }
            ImageError::Read { path, source } => write!(f, "read root image {path}: {source}"),
            ImageError::Digest { path, expected, actual } => write!(
                f,
                "root image {path} sha256 {} does not match the manifest's {}",
                hex::encode(actual),
                hex::encode(expected)
            ),
            ImageError::Memfd { source } => write!(f, "copy root image into RAM: {source}"),
            ImageError::RootSlot { label } => {
                write!(f, "partlabel:{label} is a root slot: it is mounted through dm-verity")
            }
        }
    }
}

/// Reads and verifies `/basalt/manifest.{json,sig}` under `root` with `key`.
pub fn load_manifest(root: &str, key: Option<PublicKey>) -> Result<Manifest, ImageError> {
    load_signed_manifest(root, key).map(|s| s.manifest)
}

/// A verified manifest with the exact bytes that were signed: a root slot's
/// copy must be the same bytes (verity/slot.rs).
#[derive(Debug, Clone)]
pub struct SignedManifest {
    pub manifest: Manifest,
    pub json: Vec<u8>,
    pub signature: Vec<u8>,
}

/// [`load_manifest`], keeping the signed bytes.
pub fn load_signed_manifest(root: &str, key: Option<PublicKey>) -> Result<SignedManifest, ImageError> {
    let key = key.ok_or(ImageError::NoKey)?;
    let read = |path: &'static str, cap: usize| {
        let full = format!("{}{path}", root.trim_end_matches('/'));
        read_capped(&full, cap).map_err(|source| ImageError::ReadManifest { path, source })
    };
    let json = read(MANIFEST_PATH, MAX_MANIFEST_BYTES)?;
    let signature = read(SIGNATURE_PATH, 1024)?;
    let manifest = manifest::verify_manifest(&json, &signature, &key).map_err(ImageError::Manifest)?;
    Ok(SignedManifest {
        manifest,
        json,
        signature,
    })
}

fn read_capped(path: &str, cap: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    File::open(path)?.take(cap as u64 + 1).read_to_end(&mut out)?;
    Ok(out)
}

/// A root image whose bytes match the manifest, open read-only.
#[derive(Debug)]
pub struct VerifiedImage {
    pub file: File,
    pub size: u64,
    pub sha256: [u8; 32],
    /// Where it came from: the initramfs path or the device.
    pub origin: String,
    /// True when it was copied into RAM (from a block device).
    pub copied: bool,
}

/// Finds, hashes and checks the image. `root` prefixes the initramfs path.
pub fn verify_image(
    root: &str,
    source: &ImageSource,
    expected: &ImageDigest,
    wait: Duration,
) -> Result<VerifiedImage, ImageError> {
    match source {
        ImageSource::Initramfs => {
            let path = format!("{}{IMAGE_PATH}", root.trim_end_matches('/'));
            verify_in_place(&path, expected)
        }
        ImageSource::Device(dev) => {
            wait_for(dev, wait)?;
            copy_into_ram(dev, expected)
        }
        ImageSource::PartLabel(label) => Err(ImageError::RootSlot { label: label.clone() }),
    }
}

fn verify_in_place(path: &str, expected: &ImageDigest) -> Result<VerifiedImage, ImageError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ImageError::Missing { path: path.into() }),
        Err(source) => {
            return Err(ImageError::Open {
                path: path.into(),
                source,
            })
        }
    };
    let actual = file
        .metadata()
        .map_err(|source| ImageError::Read {
            path: path.into(),
            source,
        })?
        .len();
    if actual != expected.size {
        return Err(ImageError::Size {
            path: path.into(),
            expected: expected.size,
            actual,
        });
    }
    let hashed =
        digest::hash_stream(&mut file, expected.size, None::<&mut File>).map_err(|source| ImageError::Read {
            path: path.into(),
            source,
        })?;
    check(path, expected, hashed)?;
    Ok(VerifiedImage {
        file,
        size: expected.size,
        sha256: expected.sha256,
        origin: path.into(),
        copied: false,
    })
}

fn copy_into_ram(dev: &str, expected: &ImageDigest) -> Result<VerifiedImage, ImageError> {
    let mut src = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(dev)
        .map_err(|source| ImageError::Open {
            path: dev.into(),
            source,
        })?;
    let meta = src.metadata().map_err(|source| ImageError::Read {
        path: dev.into(),
        source,
    })?;
    let available = if meta.file_type().is_block_device() {
        crate::sys::block_device_size(src.as_fd()).map_err(|source| ImageError::Read {
            path: dev.into(),
            source,
        })?
    } else {
        meta.len()
    };
    // A device may be larger than the image (it is rounded to sectors); only
    // the manifest's size is read, copied and hashed.
    if available < expected.size {
        return Err(ImageError::Size {
            path: dev.into(),
            expected: expected.size,
            actual: available,
        });
    }
    let memfd = memfd_create(
        c"basalt-root",
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )
    .map_err(|e| ImageError::Memfd { source: e.into() })?;
    let mut ram = File::from(memfd);
    let hashed = digest::hash_stream(&mut src, expected.size, Some(&mut ram)).map_err(|source| ImageError::Read {
        path: dev.into(),
        source,
    })?;
    if hashed.len < expected.size {
        return Err(ImageError::Size {
            path: dev.into(),
            expected: expected.size,
            actual: hashed.len,
        });
    }
    check(dev, expected, hashed)?;
    // Seal the copy: from here on nobody can change, grow or shrink it.
    let seals = SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL;
    nix::fcntl::fcntl(ram.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals))
        .map_err(|e| ImageError::Memfd { source: e.into() })?;
    let file =
        File::open(format!("/proc/self/fd/{}", ram.as_raw_fd())).map_err(|source| ImageError::Memfd { source })?;
    Ok(VerifiedImage {
        file,
        size: expected.size,
        sha256: expected.sha256,
        origin: dev.into(),
        copied: true,
    })
}

pub(crate) fn check(path: &str, expected: &ImageDigest, hashed: Hashed) -> Result<(), ImageError> {
    if hashed.len != expected.size {
        return Err(ImageError::Size {
            path: path.into(),
            expected: expected.size,
            actual: hashed.len,
        });
    }
    if hashed.sha256 != expected.sha256 {
        return Err(ImageError::Digest {
            path: path.into(),
            expected: expected.sha256,
            actual: hashed.sha256,
        });
    }
    Ok(())
}

/// Waits for a device node to appear (devtmpfs adds it once the driver probes).
fn wait_for(path: &str, limit: Duration) -> Result<(), ImageError> {
    let start = Instant::now();
    while !Path::new(path).exists() {
        if start.elapsed() >= limit {
            return Err(ImageError::DeviceTimeout {
                path: path.into(),
                waited: limit,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_common::keys::SigningKey;
    use basalt_common::manifest::{build_manifest, ImageDigest, ModuleEntry};

    struct TempRoot(std::path::PathBuf);
    impl TempRoot {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("basalt-init-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("basalt")).unwrap();
            TempRoot(dir)
        }
        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
        fn write(&self, rel: &str, bytes: &[u8]) {
            std::fs::write(self.0.join(rel.trim_start_matches('/')), bytes).unwrap();
        }
    }
    impl Drop for TempRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn image_bytes() -> Vec<u8> {
        (0..300_000u32).map(|i| (i % 253) as u8).collect()
    }

    fn digest_of(bytes: &[u8]) -> ImageDigest {
        ImageDigest {
            size: bytes.len() as u64,
            sha256: digest::sha256(bytes),
        }
    }

    #[test]
    fn manifest_needs_a_key_and_a_good_signature() {
        let root = TempRoot::new("manifest");
        let key = SigningKey::from_seed(&[3; 32]).unwrap();
        let m = Manifest {
            version: "t".into(),
            kernel: "k".into(),
            image: digest_of(b"x"),
            modules: vec![ModuleEntry {
                name: "loop".into(),
                sha256: [0; 32],
            }],
            handoff: "/sbin/basalt-agent".into(),
            verity: None,
        };
        let json = build_manifest(&m);
        root.write(MANIFEST_PATH, &json);
        root.write(SIGNATURE_PATH, &key.sign(&json));
        assert_eq!(load_manifest(root.path(), Some(key.public_key())).unwrap(), m);
        assert!(matches!(load_manifest(root.path(), None), Err(ImageError::NoKey)));
        let other = SigningKey::from_seed(&[4; 32]).unwrap().public_key();
        let err = load_manifest(root.path(), Some(other)).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "/basalt/manifest.json: manifest signature does not verify with image key {}",
                other.key_id()
            )
        );
        std::fs::remove_file(root.0.join("basalt/manifest.sig")).unwrap();
        let err = load_manifest(root.path(), Some(key.public_key()))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("read /basalt/manifest.sig: No such file"), "{err}");
    }

    #[test]
    fn image_in_place_table() {
        let good = image_bytes();
        let expected = digest_of(&good);
        let mut flipped_start = good.clone();
        flipped_start[0] ^= 1;
        let mut flipped_mid = good.clone();
        flipped_mid[good.len() / 2] ^= 0x80;
        let mut flipped_end = good.clone();
        *flipped_end.last_mut().unwrap() ^= 1;
        let truncated = good[..good.len() - 1].to_vec();
        let mut longer = good.clone();
        longer.push(0);
        // (case, image bytes or None for absent, expected error text or None for success)
        type Case<'a> = (&'a str, Option<Vec<u8>>, Option<&'a str>);
        let cases: Vec<Case> = vec![
            ("good", Some(good.clone()), None),
            ("flip-start", Some(flipped_start), Some("does not match the manifest's")),
            ("flip-mid", Some(flipped_mid), Some("does not match the manifest's")),
            ("flip-end", Some(flipped_end), Some("does not match the manifest's")),
            (
                "truncated",
                Some(truncated),
                Some("is truncated: 299999 bytes, manifest says 300000"),
            ),
            ("longer", Some(longer), Some("is 300001 bytes, manifest says 300000")),
            ("missing", None, Some("root image")),
        ];
        for (name, bytes, want_err) in cases {
            let root = TempRoot::new(name);
            if let Some(b) = &bytes {
                root.write(IMAGE_PATH, b);
            }
            let result = verify_image(root.path(), &ImageSource::Initramfs, &expected, Duration::ZERO);
            match (result, want_err) {
                (Ok(img), None) => {
                    assert_eq!((img.size, img.copied), (expected.size, false));
                }
                (Err(e), Some(needle)) => {
                    let text = e.to_string();
                    assert!(text.contains(needle), "{name}: {text}");
                    if name == "missing" {
                        assert!(text.ends_with("/basalt/root.sqsh not found"), "{text}");
                    }
                }
                (Ok(_), Some(_)) => panic!("{name}: accepted a bad image"),
                (Err(e), None) => panic!("{name}: refused a good image: {e}"),
            }
        }
    }

    #[test]
    fn device_image_is_copied_into_a_sealed_memfd() {
        let root = TempRoot::new("device");
        let good = image_bytes();
        // The "device" is larger than the image, as a disk rounded to sectors is.
        let mut on_disk = good.clone();
        on_disk.extend_from_slice(&[0xee; 4096]);
        root.write("/disk.img", &on_disk);
        let dev = format!("{}/disk.img", root.path());
        let img = verify_image(
            "/",
            &ImageSource::Device(dev.clone()),
            &digest_of(&good),
            Duration::ZERO,
        )
        .unwrap();
        assert!(img.copied);
        let copy = std::fs::read(format!("/proc/self/fd/{}", img.file.as_raw_fd())).unwrap();
        assert_eq!(copy, good, "exactly the verified bytes were copied");
        let seals = nix::fcntl::fcntl(img.file.as_raw_fd(), FcntlArg::F_GET_SEALS).unwrap();
        assert_ne!(seals & libc::F_SEAL_WRITE, 0);

        let mut bad = on_disk.clone();
        bad[100] ^= 1;
        root.write("/disk.img", &bad);
        let err = verify_image(
            "/",
            &ImageSource::Device(dev.clone()),
            &digest_of(&good),
            Duration::ZERO,
        )
        .unwrap_err();
        assert!(matches!(err, ImageError::Digest { .. }), "{err}");

        root.write("/disk.img", &good[..1000]);
        let err = verify_image("/", &ImageSource::Device(dev), &digest_of(&good), Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("is truncated: 1000 bytes"), "{err}");

        let absent = format!("{}/nope", root.path());
        let err = verify_image(
            "/",
            &ImageSource::Device(absent),
            &digest_of(&good),
            Duration::from_millis(30),
        )
        .unwrap_err()
        .to_string();
        assert!(err.ends_with("did not appear within 0.0 s"), "{err}");
    }
}
