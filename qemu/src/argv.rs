//! QEMU's command line for a [`VmConfig`]: a pure function of the config and
//! the decisions `Vm::start` made about the host (accelerator, firmware,
//! where the vsock daemon listens).

use crate::accel::Accelerator;
use crate::vm_config::{Console, VmConfig};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

/// Host facts the command line depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchPlan {
    pub accel: Accelerator,
    /// `-bios` image (qboot), `None` for QEMU's default firmware.
    pub firmware: Option<PathBuf>,
    /// The vhost-user socket of a running vhost-device-vsock, `None` for no
    /// vsock device.
    pub vhost_socket: Option<PathBuf>,
    /// This VM's copy of the OVMF variable store (UEFI boot only).
    pub uefi_vars: Option<PathBuf>,
}

/// The arguments after `qemu-system-x86_64`.
pub fn qemu_args(cfg: &VmConfig, plan: &LaunchPlan) -> Vec<OsString> {
    let mut args = Args::default();
    let mem = format!("{}M", cfg.memory_mib);

    // vhost-user devices read guest memory from the daemon's process, so it
    // must be a shareable memfd, named as the machine's memory backend.
    if plan.vhost_socket.is_some() {
        args.pair("-machine", "q35,memory-backend=mem");
        args.pair("-object", format!("memory-backend-memfd,id=mem,size={mem},share=on"));
    } else {
        args.pair("-machine", "q35");
    }
    match plan.accel {
        Accelerator::Kvm => args.pair("-accel", "kvm").pair("-cpu", "host"),
        Accelerator::Tcg => args.pair("-accel", "tcg").pair("-cpu", "max"),
    };
    args.pair("-smp", cfg.cpus.to_string()).pair("-m", mem);
    if let Some(uuid) = &cfg.uuid {
        args.pair("-uuid", uuid);
    }
    // UEFI: OVMF's code read-only, its variables in this VM's own copy.
    match (&cfg.uefi, &plan.uefi_vars) {
        (Some(uefi), Some(vars)) => {
            args.pair(
                "-drive",
                opt_list(&["if=pflash,format=raw,readonly=on,file="], &uefi.code, ""),
            );
            args.pair("-drive", opt_list(&["if=pflash,format=raw,file="], vars, ""));
        }
        _ => {
            if let Some(firmware) = &plan.firmware {
                args.pair("-bios", firmware);
            }
        }
    }
    // No default devices (VGA, NIC, CD-ROM, serial, monitor): everything the
    // guest sees is listed below. `-nic none` and `-monitor none` say so
    // even if a QEMU config file would add them back.
    args.flag("-nodefaults").flag("-no-user-config");
    args.pair("-display", "none")
        .pair("-monitor", "none")
        .pair("-nic", "none");
    // A guest poweroff ends QEMU; so does a reboot, unless asked otherwise.
    if cfg.exit_on_reboot {
        args.flag("-no-reboot");
    }

    // ttyS0: the console on QEMU's stdio. `signal=on` lets Ctrl-C at an
    // interactive terminal stop QEMU; a captured console has no terminal.
    let signal = match cfg.console {
        Console::Stdio => "on",
        Console::Captured => "off",
    };
    args.pair("-chardev", format!("stdio,id=con,signal={signal}"));
    args.pair("-serial", "chardev:con");

    // ttyS1: the provisioning channel, a unix socket QEMU listens on
    // without waiting for a client (output before one connects is dropped).
    if let Some(sock) = &cfg.prov_socket {
        args.pair(
            "-chardev",
            opt_list(&["socket,id=prov,path="], sock, ",server=on,wait=off"),
        );
        args.pair("-device", "isa-serial,chardev=prov,index=1");
    }
    if let Some(sock) = &plan.vhost_socket {
        args.pair("-chardev", opt_list(&["socket,id=vs,path="], sock, ""));
        args.pair("-device", "vhost-user-vsock-pci,chardev=vs");
    }
    if let Some(uefi) = &cfg.uefi {
        let mode = if uefi.writable { "" } else { ",snapshot=on" };
        args.pair(
            "-drive",
            opt_list(&["file="], &uefi.disk, &format!(",format=raw,if=virtio{mode}")),
        );
    }
    for disk in &cfg.disks {
        args.pair(
            "-drive",
            opt_list(&["file="], disk, ",format=raw,if=virtio,readonly=on"),
        );
    }
    for disk in &cfg.writable_disks {
        args.pair("-drive", opt_list(&["file="], disk, ",format=raw,if=virtio"));
    }

    // The firmware boots the disk, with the UKI's own command line.
    if cfg.uefi.is_none() {
        args.pair("-kernel", &cfg.kernel);
        if let Some(initrd) = &cfg.initrd {
            args.pair("-initrd", initrd);
        }
        args.pair("-append", cfg.cmdline());
    }
    args.0
}

/// `prefix` + `value` with QEMU's option escaping (a comma is doubled) +
/// `suffix`.
fn opt_list(prefix: &[&str], value: impl AsRef<OsStr>, suffix: &str) -> OsString {
    let mut out: Vec<u8> = prefix.concat().into_bytes();
    for &b in value.as_ref().as_bytes() {
        if b == b',' {
            out.push(b',');
        }
        out.push(b);
    }
    out.extend_from_slice(suffix.as_bytes());
    OsString::from_vec(out)
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn flag(&mut self, flag: &str) -> &mut Self {
        self.0.push(flag.into());
        self
    }

    fn pair(&mut self, flag: &str, value: impl AsRef<OsStr>) -> &mut Self {
        self.0.push(flag.into());
        self.0.push(value.as_ref().to_os_string());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(accel: Accelerator, qboot: bool, vsock: bool) -> LaunchPlan {
        LaunchPlan {
            accel,
            firmware: qboot.then(|| PathBuf::from("/q/qboot.rom")),
            vhost_socket: vsock.then(|| PathBuf::from("/w/vhost.sock")),
            uefi_vars: None,
        }
    }

    fn joined(cfg: &VmConfig, plan: &LaunchPlan) -> String {
        let args: Vec<String> = qemu_args(cfg, plan)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        args.join(" ")
    }

    const COMMON: &str = "-nodefaults -no-user-config -display none -monitor none -nic none -no-reboot";

    #[test]
    fn argv_for_each_config() {
        let base = VmConfig::new("/k/vmlinuz").initrd("/k/initrd");
        let cases: Vec<(&str, VmConfig, LaunchPlan, String)> = vec![
            (
                "minimal tcg, default firmware",
                base.clone(),
                plan(Accelerator::Tcg, false, false),
                format!(
                    "-machine q35 -accel tcg -cpu max -smp 1 -m 512M {COMMON} \
                     -chardev stdio,id=con,signal=off -serial chardev:con \
                     -kernel /k/vmlinuz -initrd /k/initrd -append console=ttyS0 panic=-1"
                ),
            ),
            (
                "qboot, kvm, more memory, interactive console",
                base.clone().memory_mib(1024).cpus(2).console(Console::Stdio),
                plan(Accelerator::Kvm, true, false),
                format!(
                    "-machine q35 -accel kvm -cpu host -smp 2 -m 1024M -bios /q/qboot.rom {COMMON} \
                     -chardev stdio,id=con,signal=on -serial chardev:con \
                     -kernel /k/vmlinuz -initrd /k/initrd -append console=ttyS0 panic=-1"
                ),
            ),
            (
                "provisioning socket and two disks, no initrd",
                VmConfig::new("/k/vmlinuz")
                    .prov_socket("/w/prov.sock")
                    .disk("/d/a.img")
                    .disk("/d/b,c.img")
                    .append("basalt.serial=ttyS1"),
                plan(Accelerator::Tcg, true, false),
                format!(
                    "-machine q35 -accel tcg -cpu max -smp 1 -m 512M -bios /q/qboot.rom {COMMON} \
                     -chardev stdio,id=con,signal=off -serial chardev:con \
                     -chardev socket,id=prov,path=/w/prov.sock,server=on,wait=off \
                     -device isa-serial,chardev=prov,index=1 \
                     -drive file=/d/a.img,format=raw,if=virtio,readonly=on \
                     -drive file=/d/b,,c.img,format=raw,if=virtio,readonly=on \
                     -kernel /k/vmlinuz -append console=ttyS0 panic=-1 basalt.serial=ttyS1"
                ),
            ),
            (
                "vsock: shared memfd memory and the vhost-user device",
                base.clone().vsock(4).memory_mib(256),
                plan(Accelerator::Tcg, true, true),
                format!(
                    "-machine q35,memory-backend=mem \
                     -object memory-backend-memfd,id=mem,size=256M,share=on \
                     -accel tcg -cpu max -smp 1 -m 256M -bios /q/qboot.rom {COMMON} \
                     -chardev stdio,id=con,signal=off -serial chardev:con \
                     -chardev socket,id=vs,path=/w/vhost.sock -device vhost-user-vsock-pci,chardev=vs \
                     -kernel /k/vmlinuz -initrd /k/initrd -append console=ttyS0 panic=-1"
                ),
            ),
            (
                "vsock asked for but no daemon socket in the plan: no device",
                base.clone().vsock(4),
                plan(Accelerator::Tcg, false, false),
                format!(
                    "-machine q35 -accel tcg -cpu max -smp 1 -m 512M {COMMON} \
                     -chardev stdio,id=con,signal=off -serial chardev:con \
                     -kernel /k/vmlinuz -initrd /k/initrd -append console=ttyS0 panic=-1"
                ),
            ),
            (
                "uefi: pflash code and vars, the disk first and writable only when asked",
                VmConfig::uefi("/b/disk.img").disk("/d/extra.img").append("ignored=1"),
                LaunchPlan {
                    uefi_vars: Some(PathBuf::from("/w/OVMF_VARS.fd")),
                    ..plan(Accelerator::Tcg, true, false)
                },
                format!(
                    "-machine q35 -accel tcg -cpu max -smp 1 -m 512M \
                     -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
                     -drive if=pflash,format=raw,file=/w/OVMF_VARS.fd {COMMON} \
                     -chardev stdio,id=con,signal=off -serial chardev:con \
                     -drive file=/b/disk.img,format=raw,if=virtio,snapshot=on \
                     -drive file=/d/extra.img,format=raw,if=virtio,readonly=on"
                ),
            ),
            (
                "uefi, writable disk",
                {
                    let mut cfg = VmConfig::uefi("/b/disk.img");
                    if let Some(u) = cfg.uefi.as_mut() {
                        u.writable = true;
                    }
                    cfg
                },
                LaunchPlan {
                    uefi_vars: Some(PathBuf::from("/w/vars")),
                    ..plan(Accelerator::Tcg, false, false)
                },
                format!(
                    "-machine q35 -accel tcg -cpu max -smp 1 -m 512M \
                     -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
                     -drive if=pflash,format=raw,file=/w/vars {COMMON} \
                     -chardev stdio,id=con,signal=off -serial chardev:con \
                     -drive file=/b/disk.img,format=raw,if=virtio"
                ),
            ),
            (
                "uefi, the guest reboots in the same VM",
                VmConfig::uefi("/b/disk.img").stay_on_reboot(),
                LaunchPlan {
                    uefi_vars: Some(PathBuf::from("/w/vars")),
                    ..plan(Accelerator::Tcg, false, false)
                },
                format!(
                    "-machine q35 -accel tcg -cpu max -smp 1 -m 512M \
                     -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
                     -drive if=pflash,format=raw,file=/w/vars {} \
                     -chardev stdio,id=con,signal=off -serial chardev:con \
                     -drive file=/b/disk.img,format=raw,if=virtio,snapshot=on",
                    COMMON.trim_end_matches(" -no-reboot")
                ),
            ),
        ];
        for (name, cfg, plan, want) in cases {
            let want = want.split_whitespace().collect::<Vec<_>>().join(" ");
            assert_eq!(joined(&cfg, &plan), want, "case: {name}");
        }
    }

    #[test]
    fn cmdline_is_one_argument() {
        let cfg = VmConfig::new("/k").append("a=1 b=2");
        let args = qemu_args(&cfg, &plan(Accelerator::Tcg, false, false));
        let at = args.iter().position(|a| a == "-append").unwrap();
        assert_eq!(args[at + 1], "console=ttyS0 panic=-1 a=1 b=2");
        assert_eq!(at + 2, args.len());
    }

    #[test]
    fn option_escaping_doubles_commas_only() {
        let cases = [
            ("/a/b", "file=/a/b"),
            ("/a,b", "file=/a,,b"),
            (",,", "file=,,,,"),
            ("/a=b c", "file=/a=b c"),
        ];
        for (value, want) in cases {
            assert_eq!(opt_list(&["file="], value, ""), OsString::from(want), "{value}");
        }
    }
}
