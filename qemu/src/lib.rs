//! basalt's QEMU launcher: boots a kernel and initramfs on a q35 machine
//! with no network, the console on ttyS0 captured in memory, an optional
//! provisioning serial port (ttyS1) on a unix socket, optional vsock through
//! vhost-device-vsock, and read-only virtio disks; or boots a GPT disk image
//! under OVMF ([`VmConfig::uefi`]). Used by `make run`, the
//! QEMU test suite and the benchmarks.
//!
//! ```no_run
//! use basalt_qemu::{Vm, VmConfig};
//! use std::time::Duration;
//!
//! let vm = Vm::start(VmConfig::new("build/kernel/vmlinuz").initrd("build/initrd.img"))?;
//! vm.wait_for_console("basalt-agent: ready", Duration::from_secs(60))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod accel;
mod argv;
mod capture;
mod daemon;
mod error;
mod programs;
mod prov;
mod script;
pub mod signals;
#[allow(unsafe_code, reason = "the sys module holds all of this crate's unsafe code")]
mod sys;
mod vm;
mod vm_config;
mod vsock;

pub use accel::{accel_from_env, parse_accel, AccelChoice, Accelerator};
pub use argv::{qemu_args, LaunchPlan};
pub use error::{QemuError, WaitError, WaitFailure};
pub use prov::connect_prov;
pub use script::{Script, ScriptError, Step};
pub use vm::{Vm, CONSOLE_TAIL_LINES};
pub use vm_config::{
    Accel, Console, UefiBoot, VmConfig, BASE_CMDLINE, DEFAULT_GUEST_CID, DEFAULT_MEMORY_MIB, OVMF_CODE_PATH,
    OVMF_VARS_PATH, QBOOT_PATH,
};
pub use vsock::{parse_connect_reply, vsock_connect, ConnectReply};
