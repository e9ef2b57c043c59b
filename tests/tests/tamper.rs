//! The image tamper matrix (issue 5, part 2): every way an attacker or a
//! fault can hand basalt-init a root image it must not trust, booted in
//! QEMU. Each case must stop before the root is mounted, at the right step,
//! with exactly one `FATAL: step <step>: <cause>` line, and power off.
//!
//! The cases: single-byte flips at seeded offsets (one in each 1/N of the
//! image, so the whole image is covered; N = 32 in the long profile, 8 in
//! the short one `make test` runs), a truncation at a seeded length, an
//! empty image, a manifest signed by another key, a complete image and
//! manifest from another build (another key, another rootfs) packed with
//! our basalt-init, and that build's image under our manifest.
//! `BASALT_TAMPER_SEED` replays or varies the offsets.

use basalt_common::keys::SigningKey;
use basalt_mkimage::{BuildSpec, Compression, Content, InitramfsParts, RootSource};
use basalt_tests::robustness::{report, seed_from_env, Profile, SplitMix64};
use basalt_tests::*;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CMDLINE: &str = "quiet basalt.on_error=poweroff basalt.error_delay=0";
/// The default seed: any fixed value; the figures in docs/robustness.md use it.
const DEFAULT_SEED: u64 = 0x6261_7361_6c74_0005;
/// Refused boots at once: the machine has 2 cores.
const PARALLEL: usize = 2;
/// The path basalt-init names in its errors for an image in the initramfs.
const IMAGE: &str = "/basalt/root.sqsh";

struct Case {
    name: String,
    initramfs: PathBuf,
    step: &'static str,
    cause: String,
}

fn sha256_hex(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// What basalt-init says about an image of `actual` bytes whose manifest
/// says `expected` bytes and `want_sha` (hex); `path` holds the bytes.
fn image_cause(path: &Path, actual: u64, expected: u64, want_sha: &str) -> String {
    if actual < expected {
        format!("root image {IMAGE} is truncated: {actual} bytes, manifest says {expected}")
    } else if actual > expected {
        format!("root image {IMAGE} is {actual} bytes, manifest says {expected}")
    } else {
        let got = sha256_hex(path);
        assert_ne!(got, want_sha, "{} is not tampered", path.display());
        format!("root image {IMAGE} sha256 {got} does not match the manifest's {want_sha}")
    }
}

/// A complete image and manifest as another build would make it: another
/// rootfs, signed with another image key, but our basalt-init.
fn other_build(build: &Build, scratch: &Scratch, key: &SigningKey) -> TestImage {
    let rootfs = scratch.path("other-rootfs");
    copy_tree(&build.path("rootfs"), &rootfs);
    std::fs::write(rootfs.join("etc/os-release"), "NAME=other\nID=other\nVERSION_ID=9\n").unwrap();
    // Different content, and enough of it that the sizes differ too.
    let mut filler = vec![0u8; 96 * 1024];
    SplitMix64::new(99).fill(&mut filler);
    std::fs::write(rootfs.join("etc/other-build"), filler).unwrap();
    let dir = scratch.path("other");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = BuildSpec {
        init: build.path("bin/basalt-init"),
        root: RootSource::Rootfs(rootfs),
        modules_dir: build.modules_dir(),
        kconfig: build.kconfig(),
        fragment: Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-config/basalt.config"),
        version: "other".into(),
        handoff: basalt_common::manifest::DEFAULT_HANDOFF.into(),
        compression: Compression::None,
        embed_image: true,
        image_out: Some(dir.join("root.sqsh")),
        manifest_out: None,
        out: dir.join("initramfs.img"),
        source_date_epoch: None,
    };
    let report = basalt_mkimage::build(&spec, key).unwrap_or_else(|e| panic!("build the other image: {e}"));
    TestImage {
        initramfs: spec.out,
        squashfs: dir.join("root.sqsh"),
        report,
    }
}

/// Boots one case and checks it was refused as it should be. Err says why not.
fn run_case(build: &Build, case: &Case) -> Result<Duration, String> {
    let started = Instant::now();
    let log = build.log_dir().join(format!("tamper-{}.log", case.name));
    let cfg = TestVm::config(build, &case.initramfs, CMDLINE).console_log(&log);
    let vm = basalt_qemu::Vm::start(cfg).map_err(|e| format!("start VM: {e}"))?;
    let fail = |why: String| Err(format!("{why} (console: {})", log.display()));
    if let Err(e) = vm.wait_for_console("FATAL: step", BOOT_TIMEOUT) {
        return fail(format!("no fatal line: {e}"));
    }
    if let Err(e) = vm.wait_for_exit(Duration::from_secs(30)) {
        return fail(format!("QEMU did not exit: {e}"));
    }
    let console = vm.console_text();
    let fatal: Vec<&str> = console.lines().filter(|l| l.contains("FATAL: step")).collect();
    if fatal.len() != 1 {
        return fail(format!("{} fatal lines: {fatal:?}", fatal.len()));
    }
    let want = format!("FATAL: step {}: {}", case.step, case.cause);
    if !fatal[0].trim_end_matches('\r').ends_with(&want) {
        return fail(format!("wanted {want:?}, got {:?}", fatal[0]));
    }
    for (needle, what) in [("root: /dev/loop", "mounted the root"), ("handing off", "handed off")] {
        if console.contains(needle) {
            return fail(what.to_string());
        }
    }
    if !console.contains("reboot: Power down") {
        return fail("did not power off".into());
    }
    Ok(started.elapsed())
}

#[test]
fn tamper_matrix_is_refused_before_mount() {
    let build = Build::from_env();
    let scratch = Scratch::new("tamper-matrix");
    let started = Instant::now();
    let seed = seed_from_env("BASALT_TAMPER_SEED", DEFAULT_SEED);
    // A refused boot costs 5-20 s of TCG here, two at a time.
    let flips: u64 = Profile::from_env().pick(8, 32);
    let rootfs = test_rootfs(&build, &scratch);
    let image = build_image(&build, &rootfs, &scratch.0, &ImageOptions::default());
    let good = std::fs::read(&image.squashfs).unwrap();
    let size = good.len() as u64;
    let want_sha = basalt_common::hex::encode(&image.report.manifest.image.sha256);
    assert_eq!(
        sha256_hex(&image.squashfs),
        want_sha,
        "the manifest describes the good image"
    );

    let mut rng = SplitMix64::new(seed);
    let mut cases = Vec::new();
    let mut add = |name: String, step: &'static str, cause: String, f: &dyn Fn(&mut InitramfsParts)| {
        let initramfs = scratch.path(&format!("{name}.img"));
        repack(&build, &image, &initramfs, f);
        cases.push(Case {
            name,
            initramfs,
            step,
            cause,
        });
    };

    // Single-byte flips, one in each 1/flips of the image.
    let stratum = size / flips;
    for i in 0..flips {
        let at = i * stratum + rng.below(stratum);
        let mask = 1 + rng.below(255) as u8;
        let mut bytes = good.clone();
        bytes[at as usize] ^= mask;
        let path = scratch.path(&format!("flip-{i}.sqsh"));
        std::fs::write(&path, &bytes).unwrap();
        let cause = image_cause(&path, size, size, &want_sha);
        add(
            format!("flip-{i:02}-at-{at}-xor-{mask:02x}"),
            "verify-image",
            cause,
            &|p| p.image = Some(Content::File(path.clone())),
        );
    }

    // A truncation at a seeded length, and an empty image.
    let cut = 1 + rng.below(size - 1);
    let truncated = good[..cut as usize].to_vec();
    add(
        format!("truncated-to-{cut}"),
        "verify-image",
        format!("root image {IMAGE} is truncated: {cut} bytes, manifest says {size}"),
        &|p| p.image = Some(Content::Bytes(truncated.clone())),
    );
    add(
        "empty".into(),
        "verify-image",
        format!("root image {IMAGE} is truncated: 0 bytes, manifest says {size}"),
        &|p| p.image = Some(Content::Bytes(Vec::new())),
    );

    // Our manifest, signed by another key.
    let our_key_id = build.image_key().public_key().key_id();
    let other_key = SigningKey::from_seed(&[0x0b; 32]).unwrap();
    assert_ne!(other_key.public_key().key_id(), our_key_id);
    add(
        "manifest-other-key".into(),
        "manifest",
        format!("{IMAGE_MANIFEST}: manifest signature does not verify with image key {our_key_id}"),
        &|p| p.manifest_sig = other_key.sign(&p.manifest_json).to_vec(),
    );

    // Another build, whole: its image, its own manifest, its key; our init.
    let other = other_build(&build, &scratch, &other_key);
    let other_size = std::fs::metadata(&other.squashfs).unwrap().len();
    assert_ne!(sha256_hex(&other.squashfs), want_sha, "the other build's image differs");
    add(
        "other-build-own-manifest".into(),
        "manifest",
        format!("{IMAGE_MANIFEST}: manifest signature does not verify with image key {our_key_id}"),
        &|p| {
            p.manifest_json = other.report.signed.json.clone();
            p.manifest_sig = other.report.signed.signature.to_vec();
            p.image = Some(Content::File(other.squashfs.clone()));
            p.modules = other
                .report
                .modules
                .iter()
                .map(|m| (m.name.clone(), Content::File(m.path.clone())))
                .collect();
        },
    );
    // ...and its image under our manifest.
    add(
        "other-build-our-manifest".into(),
        "verify-image",
        image_cause(&other.squashfs, other_size, size, &want_sha),
        &|p| p.image = Some(Content::File(other.squashfs.clone())),
    );

    let tried = cases.len();
    let queue = Mutex::new(cases.into_iter());
    let failures = Mutex::new(Vec::new());
    let boot_secs = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| loop {
                let Some(case) = queue.lock().unwrap().next() else {
                    return;
                };
                match run_case(&build, &case) {
                    Ok(t) => boot_secs.lock().unwrap().push(t.as_secs_f64()),
                    Err(why) => failures.lock().unwrap().push(format!("{}: {why}", case.name)),
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    let boot_secs = boot_secs.into_inner().unwrap();
    let refused = boot_secs.len();
    let mean = boot_secs.iter().sum::<f64>() / refused.max(1) as f64;
    report(
        &build,
        "tamper",
        &[
            ("refused", refused.to_string()),
            ("tried", tried.to_string()),
            ("flips", flips.to_string()),
            ("seed", format!("{seed:#x}")),
            ("image_bytes", size.to_string()),
            ("mean_boot_s", format!("{mean:.1}")),
            ("wall_s", format!("{:.0}", started.elapsed().as_secs_f64())),
        ],
    );
    assert!(
        failures.is_empty(),
        "{} of {tried} cases not refused as they should be:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(refused, tried);
}

/// basalt-init prefixes manifest errors with the manifest's path.
const IMAGE_MANIFEST: &str = "/basalt/manifest.json";
