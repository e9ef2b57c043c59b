//! `basalt-qemu`: boots a VM in the foreground with the console on this
//! terminal (for `make run`) and exits with QEMU's status.

mod cli;

use basalt_qemu::{signals, Vm};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

/// How long QEMU gets to exit cleanly (restoring the terminal) after we
/// pass on a termination signal.
const STOP_GRACE: Duration = Duration::from_secs(3);

fn main() {
    std::process::exit(run());
}

fn run() -> i32 {
    let cli = match cli::parse_args(std::env::args_os().skip(1)) {
        Ok(cli::Parsed::Run(cli)) => *cli,
        Ok(cli::Parsed::Help) => {
            println!("{}", cli::USAGE);
            return 0;
        }
        Err(e) => {
            eprintln!("basalt-qemu: {e}\n{}", cli::USAGE);
            return 2;
        }
    };
    // Before anything is started, so Ctrl-C or SIGTERM always reaches the
    // teardown below (dropping the Vm) instead of killing only us.
    if let Err(e) = signals::catch_termination() {
        eprintln!("basalt-qemu: installing signal handlers: {e}");
        return 1;
    }
    let vm = match Vm::start(cli::to_config(cli)) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("basalt-qemu: {e}");
            return 1;
        }
    };
    eprintln!("{}", summary(&vm));
    loop {
        match vm.try_exit_status() {
            Ok(Some(status)) => return exit_code(status),
            Ok(None) => {}
            Err(e) => {
                eprintln!("basalt-qemu: {e}");
                return 1;
            }
        }
        if let Some(signal) = signals::termination_signal() {
            if let Err(e) = vm.terminate(STOP_GRACE) {
                eprintln!("basalt-qemu: stopping the VM: {e}");
            }
            return 128 + signal;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // `vm` drops on every return: the vsock daemon is stopped and reaped.
}

/// The one line saying what was started and where to reach it.
fn summary(vm: &Vm) -> String {
    let accel = vm.accel();
    let mut line = format!(
        "basalt-qemu: accel {} ({}), qemu pid {}",
        accel.accel,
        accel.reason,
        vm.pid()
    );
    if let Some(sock) = vm.prov_socket_path() {
        line += &format!(", prov socket {}", sock.display());
    }
    if let Some(sock) = vm.vsock_uds_path() {
        line += &format!(", vsock socket {}", sock.display());
    }
    if let Some(dir) = vm.work_dir() {
        line += &format!(", work dir {}", dir.display());
    }
    line
}

/// QEMU's exit code, or 128 + signal like a shell.
fn exit_code(status: ExitStatus) -> i32 {
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1)
}
