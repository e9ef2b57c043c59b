//! Real boots of a tiny busybox guest under QEMU: the console, the
//! provisioning serial socket, the guest powering off, failed waits showing
//! the console, and the vsock plumbing up to the guest seeing the device.
//!
//! Needs the kernel: BASALT_KERNEL (default ../build/kernel/vmlinuz) and
//! its modules, BASALT_KERNEL_MODULES (default ../build/kernel/modules);
//! `make kernel` fetches both. Every wait is bounded and each `Vm` is
//! dropped (stopping QEMU and vhost-device-vsock) even when an assertion
//! fails.

use basalt_qemu::{connect_prov, vsock_connect, QemuError, Script, Vm, VmConfig, WaitFailure};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Generous: two TCG guests may boot at once on two cores.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const BUSYBOX: &str = "/bin/busybox";

fn crate_relative(env: &str, default: &str) -> PathBuf {
    std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(default))
}

fn kernel() -> PathBuf {
    let path = crate_relative("BASALT_KERNEL", "../build/kernel/vmlinuz");
    assert!(
        path.is_file(),
        "kernel {} not found: run `make kernel` (or set BASALT_KERNEL)",
        path.display()
    );
    path
}

fn modules_dir() -> PathBuf {
    let path = crate_relative("BASALT_KERNEL_MODULES", "../build/kernel/modules");
    assert!(
        path.join("kernel").is_dir(),
        "kernel modules {} not found: run `make kernel` (or set BASALT_KERNEL_MODULES)",
        path.display()
    );
    path
}

/// A scratch directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("basalt-qemu-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Writes a newc initramfs holding busybox, `init` (a busybox sh script)
/// and `modules` under /lib, using busybox's own cpio.
fn make_initramfs(scratch: &Path, init: &str, modules: &[PathBuf]) -> PathBuf {
    let root = scratch.join("root");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("lib")).unwrap();
    fs::copy(BUSYBOX, root.join("bin/busybox")).expect("copying /bin/busybox (install busybox-static)");
    fs::write(root.join("init"), format!("#!/bin/busybox sh\n{init}")).unwrap();
    fs::set_permissions(root.join("init"), fs::Permissions::from_mode(0o755)).unwrap();
    let mut list = vec![
        ".".to_string(),
        "bin".into(),
        "bin/busybox".into(),
        "init".into(),
        "lib".into(),
    ];
    for module in modules {
        let name = module.file_name().unwrap().to_str().unwrap();
        fs::copy(module, root.join("lib").join(name)).unwrap();
        list.push(format!("lib/{name}"));
    }
    let image = scratch.join("initramfs.cpio");
    let mut cpio = Command::new(BUSYBOX)
        .args(["cpio", "-o", "-H", "newc", "-R", "0:0"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&image).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running busybox cpio");
    cpio.stdin
        .take()
        .unwrap()
        .write_all((list.join("\n") + "\n").as_bytes())
        .unwrap();
    let out = cpio.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "busybox cpio: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

/// Reads from `stream` until `needle` arrives or `timeout` passes.
fn read_until(stream: &mut impl Read, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&got).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} did not arrive within {timeout:?}; got {:?}",
            String::from_utf8_lossy(&got)
        );
        match stream.read(&mut buf) {
            Ok(0) => panic!(
                "stream closed before {needle:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("reading: {e}"),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// ttyS1 is held open on fd 3 from before the marker on, so bytes the host
/// sends after seeing the marker cannot hit a closed port (opening an 8250
/// port clears its FIFO).
const PROV_INIT: &str = r#"/bin/busybox --install -s /bin
mkdir -p /proc /dev && mount -t proc proc /proc && mount -t devtmpfs dev /dev
exec 3<>/dev/ttyS1
stty -F /dev/ttyS1 raw -echo
echo "BASALT-TEST-MARKER uptime=$(cut -d' ' -f1 /proc/uptime)"
if read -t 60 line <&3; then
    echo "prov-reply:$line" >&3
    echo "guest got [$line] on ttyS1"
else
    echo "guest read nothing on ttyS1"
fi
sleep 1
poweroff -f
"#;

#[test]
fn busybox_guest_console_prov_socket_and_poweroff() {
    let scratch = Scratch::new("prov");
    let initrd = make_initramfs(&scratch.0, PROV_INIT, &[]);
    let prov_path = scratch.0.join("prov.sock");
    let log = scratch.0.join("console.log");
    let started = Instant::now();
    let vm = Vm::start(
        VmConfig::new(kernel())
            .initrd(&initrd)
            .prov_socket(&prov_path)
            .console_log(&log)
            .append("basalt.test=1"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(vm.prov_socket_path(), Some(prov_path.as_path()));
    let mut prov = connect_prov(&prov_path, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    prov.set_read_timeout(Some(Duration::from_millis(200))).unwrap();

    let boot = Script::new().expect("BASALT-TEST-MARKER", BOOT_TIMEOUT);
    boot.run(&vm, &mut prov).unwrap_or_else(|e| panic!("{e}"));
    let to_marker = started.elapsed();

    // A wait that cannot succeed fails on time, and its message carries
    // the console.
    let waited = Instant::now();
    let err = vm
        .wait_for_console("this text is never printed", Duration::from_millis(500))
        .unwrap_err();
    assert!(waited.elapsed() < Duration::from_secs(5));
    assert!(matches!(err.failure, WaitFailure::ConsoleTimeout { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("this text is never printed"), "{message}");
    assert!(message.contains("BASALT-TEST-MARKER"), "{message}");
    assert!(message.contains("Run /init as init process"), "{message}");

    Script::new()
        .send("ping\n")
        .expect("guest got [ping] on ttyS1", Duration::from_secs(60))
        .run(&vm, &mut prov)
        .unwrap_or_else(|e| panic!("{e}"));
    let reply = read_until(&mut prov, "prov-reply:ping", Duration::from_secs(30));
    assert!(reply.contains("prov-reply:ping"), "{reply}");

    let status = vm
        .wait_for_exit(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "qemu exited with {status}");
    let to_exit = started.elapsed();
    let console = vm.console_text();
    assert!(console.contains("reboot: Power down"), "{console}");
    assert!(console.contains("console=ttyS0 panic=-1 basalt.test=1"), "{console}");

    // The log file holds the same bytes as memory.
    assert_eq!(fs::read(&log).unwrap(), vm.console_bytes());

    // After the exit, a missing needle fails at once with the exit named.
    let waited = Instant::now();
    let err = vm.wait_for_console("still never printed", BOOT_TIMEOUT).unwrap_err();
    assert!(waited.elapsed() < Duration::from_secs(5), "took {:?}", waited.elapsed());
    assert!(matches!(err.failure, WaitFailure::ExitedBeforeNeedle { .. }), "{err}");
    assert!(err.to_string().contains("Power down"), "{err}");

    eprintln!(
        "busybox guest under {} ({}): marker after {to_marker:.1?}, powered off after {to_exit:.1?}",
        vm.accel().accel,
        vm.accel().reason
    );
    let pid = vm.pid();
    drop(vm);
    assert!(!process_exists(pid), "qemu pid {pid} outlived its Vm");
}

/// The .modinfo `depends=` list of a module (NUL-terminated key=value
/// strings; the key does not occur elsewhere in these modules).
fn module_depends(path: &Path) -> Vec<String> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let key = b"depends=";
    let Some(at) = bytes.windows(key.len()).position(|w| w == key) else {
        panic!("{} has no depends= in .modinfo", path.display());
    };
    let value = &bytes[at + key.len()..];
    let value = &value[..value.iter().position(|&b| b == 0).unwrap()];
    String::from_utf8_lossy(value)
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Virtio PCI and the vsock transport, in load order.
const VSOCK_MODULES: &[&str] = &[
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci",
    "net/vmw_vsock/vsock",
    "net/vmw_vsock/vmw_vsock_virtio_transport_common",
    "net/vmw_vsock/vmw_vsock_virtio_transport",
];

#[test]
fn vsock_device_reaches_the_guest_and_connect_fails_cleanly() {
    let modules_root = modules_dir().join("kernel");
    let modules: Vec<PathBuf> = VSOCK_MODULES
        .iter()
        .map(|m| modules_root.join(format!("{m}.ko")))
        .collect();
    // The order above must satisfy every module's depends=.
    let names: Vec<&str> = VSOCK_MODULES.iter().map(|m| m.rsplit('/').next().unwrap()).collect();
    for (i, module) in modules.iter().enumerate() {
        for dep in module_depends(module) {
            assert!(
                names[..i].contains(&dep.as_str()),
                "{} needs {dep} loaded before it",
                names[i]
            );
        }
    }

    let insmods: String = names
        .iter()
        .map(|n| format!("insmod /lib/{n}.ko || echo \"INSMOD-FAILED {n}\"\n"))
        .collect();
    let init = format!(
        r#"/bin/busybox --install -s /bin
mkdir -p /proc /sys && mount -t proc proc /proc && mount -t sysfs sys /sys
{insmods}echo "VIRTIO-DEVICES: $(cat /sys/bus/virtio/devices/*/device | tr '\n' ' ')"
sleep 60
poweroff -f
"#
    );
    let scratch = Scratch::new("vsock");
    let initrd = make_initramfs(&scratch.0, &init, &modules);
    let vm = Vm::start(
        VmConfig::new(kernel())
            .initrd(&initrd)
            .vsock(basalt_qemu::DEFAULT_GUEST_CID),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let daemon_pid = vm.vsock_daemon_pid().expect("a vsock VM runs vhost-device-vsock");
    let work_dir = vm.work_dir().expect("a vsock VM has a work dir").to_path_buf();
    let uds = vm.vsock_uds_path().expect("a vsock VM has a host socket").to_path_buf();
    assert!(uds.starts_with(&work_dir));

    let end = vm
        .wait_for_console_after("VIRTIO-DEVICES:", 0, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    vm.wait_for_console_after("\n", end, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    let console = vm.console_text();
    assert!(!console.contains("INSMOD-FAILED"), "{console}");
    let line = console.lines().find(|l| l.starts_with("VIRTIO-DEVICES:")).unwrap();
    assert!(
        line.contains("0x0013"),
        "guest has no virtio vsock device (id 0x0013): {line}"
    );
    assert!(
        console.contains("NET: Registered PF_VSOCK protocol family"),
        "{console}"
    );

    // Nobody listens on the port in the guest: the guest answers RST, the
    // daemon closes the stream, and the connect gives up at its timeout.
    let timeout = Duration::from_secs(3);
    let started = Instant::now();
    let err = vsock_connect(&uds, 1234, timeout).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, QemuError::VsockTimeout { port: 1234, .. }), "{err}");
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(3),
        "took {took:?}"
    );
    assert!(
        vm.try_exit_status().unwrap().is_none(),
        "the guest should still be running"
    );

    let qemu_pid = vm.pid();
    drop(vm);
    assert!(!process_exists(qemu_pid), "qemu pid {qemu_pid} outlived its Vm");
    assert!(
        !process_exists(daemon_pid),
        "vhost-device-vsock pid {daemon_pid} outlived its Vm"
    );
    assert!(!work_dir.exists(), "temp work dir {} left behind", work_dir.display());
}

#[test]
fn missing_kernel_is_a_clear_error() {
    let err = Vm::start(VmConfig::new("/nonexistent/vmlinuz"))
        .err()
        .expect("no kernel, no VM");
    assert!(matches!(err, QemuError::KernelMissing { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/vmlinuz"), "{err}");
    assert!(err.to_string().contains("make kernel"), "{err}");
}
