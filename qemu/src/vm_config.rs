//! What to boot and how: a plain struct with defaults and builder methods.

use std::path::{Path, PathBuf};

/// Guest memory when nothing else is asked for.
pub const DEFAULT_MEMORY_MIB: u32 = 512;
/// Guest vsock CID when nothing else is asked for (2 is the host, 3 is
/// vhost-device-vsock's default; 4 keeps clear of both).
pub const DEFAULT_GUEST_CID: u32 = 4;
/// qboot boots about 2 s faster than SeaBIOS under TCG; used when present.
pub const QBOOT_PATH: &str = "/usr/share/qemu/qboot.rom";
/// Kernel parameters basalt always passes, before the caller's.
/// `panic=-1` reboots at once on a panic, which `-no-reboot` turns into
/// QEMU exiting: a dying guest ends the run instead of hanging a test.
pub const BASE_CMDLINE: &str = "console=ttyS0 panic=-1";
/// OVMF from Debian's ovmf package: the firmware code (read-only) and the
/// variable store each VM gets its own copy of.
pub const OVMF_CODE_PATH: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS_PATH: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Booting a disk through UEFI firmware instead of `-kernel`: the firmware
/// finds the ESP, systemd-boot and the UKI, and the kernel command line is
/// the UKI's, so `kernel`, `initrd` and `append` are not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UefiBoot {
    /// The GPT disk image, attached as the first virtio disk (/dev/vda).
    pub disk: PathBuf,
    pub code: PathBuf,
    /// Copied into the work dir before each boot.
    pub vars_template: PathBuf,
    /// false: the guest's writes go to a temporary overlay (QEMU
    /// `snapshot=on`), so the image is left as built and VMs can share it.
    pub writable: bool,
}

/// The accelerator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// KVM if a short probe boot under KVM completes, else TCG.
    Auto,
    Kvm,
    Tcg,
}

/// Where the guest console (ttyS0) goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// QEMU's stdout is piped into memory (and the console log); its stdin
    /// is /dev/null.
    Captured,
    /// Interactive (`make run`): our stdin goes to the guest, and the
    /// console is copied to our stdout as well as into memory and the log.
    Stdio,
}

/// A VM to boot. Fields are public; the methods are shorthands that return
/// the config so calls chain.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// Kernel parameters added after [`BASE_CMDLINE`]; see [`VmConfig::cmdline`].
    pub append: String,
    pub memory_mib: u32,
    pub cpus: u32,
    pub accel: Accel,
    pub console: Console,
    /// The console is also appended to this file as it arrives.
    pub console_log: Option<PathBuf>,
    /// Host path of the unix socket behind the guest's ttyS1. QEMU listens
    /// on it; connect with [`crate::connect_prov`].
    pub prov_socket: Option<PathBuf>,
    /// Guest CID of a vhost-user vsock device, `None` for no vsock.
    pub vsock_cid: Option<u32>,
    /// Raw disk images attached read-only as virtio disks: /dev/vda, vdb...
    /// (after the UEFI boot disk, when there is one).
    pub disks: Vec<PathBuf>,
    /// Raw disk images the guest may write (a STATE disk), after `disks`.
    /// QEMU writes them through the host's page cache, so killing QEMU
    /// loses only what the guest had not yet flushed (a power cut).
    pub writable_disks: Vec<PathBuf>,
    /// `Some`: boot this disk under OVMF instead of `kernel`.
    pub uefi: Option<UefiBoot>,
    /// true (the default): a guest reboot ends QEMU (`-no-reboot`), as a
    /// guest poweroff does, so a panicking guest (`panic=-1`) ends the run.
    /// false: the guest reboots in the same VM (firmware, disks, sockets
    /// and vsock kept), and a panic reboots it too, over and over.
    pub exit_on_reboot: bool,
    /// SMBIOS system UUID (`-uuid`): the node identity basalt-agent reports
    /// when `basalt.node=` is not given. `None`: `Vm::start` picks a random
    /// one, as a cloud gives every instance its own.
    pub uuid: Option<String>,
    /// Holds the vsock sockets and the vsock daemon's log. `None`: a fresh
    /// directory under the system temp dir, removed when the VM is dropped.
    pub work_dir: Option<PathBuf>,
    /// File caching the result of the KVM probe (`Accel::Auto`). `None`:
    /// cached only for the life of this process.
    pub accel_cache: Option<PathBuf>,
    /// Host paths, parameters so tests can move them.
    pub kvm_device: PathBuf,
    pub qboot: PathBuf,
    /// Programs; a bare name is looked up in PATH (and ~/.cargo/bin for the
    /// vsock daemon).
    pub qemu_program: PathBuf,
    pub vsock_daemon_program: PathBuf,
}

impl VmConfig {
    /// Defaults: 512 MiB, 1 CPU, `Accel::Auto`, captured console, no
    /// provisioning socket, no vsock, no disks, a temp work dir, and the
    /// probe cache at `$BASALT_BUILD/qemu-accel` when BASALT_BUILD is set.
    pub fn new(kernel: impl Into<PathBuf>) -> VmConfig {
        VmConfig {
            kernel: kernel.into(),
            initrd: None,
            append: String::new(),
            memory_mib: DEFAULT_MEMORY_MIB,
            cpus: 1,
            accel: Accel::Auto,
            console: Console::Captured,
            console_log: None,
            prov_socket: None,
            vsock_cid: None,
            disks: Vec::new(),
            writable_disks: Vec::new(),
            uefi: None,
            exit_on_reboot: true,
            uuid: None,
            work_dir: None,
            accel_cache: std::env::var_os("BASALT_BUILD").map(|dir| Path::new(&dir).join("qemu-accel")),
            kvm_device: PathBuf::from("/dev/kvm"),
            qboot: PathBuf::from(QBOOT_PATH),
            qemu_program: PathBuf::from("qemu-system-x86_64"),
            vsock_daemon_program: PathBuf::from("vhost-device-vsock"),
        }
    }

    /// A VM that boots `disk` under OVMF (the Debian paths), the disk's
    /// writes kept in a temporary overlay. Everything else as [`VmConfig::new`].
    pub fn uefi(disk: impl Into<PathBuf>) -> VmConfig {
        let mut cfg = VmConfig::new(PathBuf::new());
        cfg.uefi = Some(UefiBoot {
            disk: disk.into(),
            code: PathBuf::from(OVMF_CODE_PATH),
            vars_template: PathBuf::from(OVMF_VARS_PATH),
            writable: false,
        });
        cfg
    }

    pub fn initrd(mut self, path: impl Into<PathBuf>) -> Self {
        self.initrd = Some(path.into());
        self
    }

    /// Adds kernel parameters; repeated calls accumulate, space separated.
    pub fn append(mut self, params: &str) -> Self {
        let params = params.trim();
        if !params.is_empty() {
            if !self.append.is_empty() {
                self.append.push(' ');
            }
            self.append.push_str(params);
        }
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    pub fn accel(mut self, accel: Accel) -> Self {
        self.accel = accel;
        self
    }

    pub fn console(mut self, console: Console) -> Self {
        self.console = console;
        self
    }

    pub fn console_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.console_log = Some(path.into());
        self
    }

    pub fn prov_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.prov_socket = Some(path.into());
        self
    }

    pub fn vsock(mut self, guest_cid: u32) -> Self {
        self.vsock_cid = Some(guest_cid);
        self
    }

    pub fn disk(mut self, path: impl Into<PathBuf>) -> Self {
        self.disks.push(path.into());
        self
    }

    pub fn writable_disk(mut self, path: impl Into<PathBuf>) -> Self {
        self.writable_disks.push(path.into());
        self
    }

    /// A guest reboot restarts the guest in this VM instead of ending QEMU.
    pub fn stay_on_reboot(mut self) -> Self {
        self.exit_on_reboot = false;
        self
    }

    pub fn uuid(mut self, uuid: impl Into<String>) -> Self {
        self.uuid = Some(uuid.into());
        self
    }

    pub fn work_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.work_dir = Some(path.into());
        self
    }

    pub fn accel_cache(mut self, path: impl Into<PathBuf>) -> Self {
        self.accel_cache = Some(path.into());
        self
    }

    /// The full kernel command line: [`BASE_CMDLINE`] (console on ttyS0,
    /// reboot at once on panic) followed by the caller's `append`. The
    /// kernel takes the last value of a repeated key, so the caller's
    /// parameters win.
    pub fn cmdline(&self) -> String {
        if self.append.is_empty() {
            BASE_CMDLINE.to_string()
        } else {
            format!("{BASE_CMDLINE} {}", self.append)
        }
    }
}

/// A random RFC 4122 version-4 UUID, from the kernel's random source.
pub fn random_uuid() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(format_uuid(b))
}

/// Formats 16 bytes as a version-4, variant-1 UUID.
pub fn format_uuid(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_puts_basalt_defaults_first() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "console=ttyS0 panic=-1"),
            (&["basalt.node=a"], "console=ttyS0 panic=-1 basalt.node=a"),
            (&["  a=1 ", "", "b"], "console=ttyS0 panic=-1 a=1 b"),
            (&["panic=5"], "console=ttyS0 panic=-1 panic=5"),
        ];
        for (appends, want) in cases {
            let cfg = appends.iter().fold(VmConfig::new("k"), |cfg, a| cfg.append(a));
            assert_eq!(cfg.cmdline(), *want, "appends {appends:?}");
        }
    }

    #[test]
    fn uuid_format() {
        assert_eq!(format_uuid([0; 16]), "00000000-0000-4000-8000-000000000000");
        assert_eq!(format_uuid([0xff; 16]), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let a = random_uuid().unwrap();
        assert_eq!(a.len(), 36);
        assert_ne!(a, random_uuid().unwrap());
    }
}
