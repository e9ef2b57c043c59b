//! basalt-agent: the only way into a basalt node.
//!
//! It starts in maintenance mode, listening on the provisioning serial port
//! and on vsock. It accepts a configuration only when a trusted key signed
//! it for this node with a generation above the last one, then writes the
//! config's files and starts and supervises its services. See
//! docs/protocol.md and docs/config.md.
// A node program that panics takes the node down: failures are values.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agent;
mod clock;
mod files;
mod identity;
mod logging;
mod logs;
#[allow(
    dead_code,
    reason = "pure codecs, driven by the agent once the network section is wired in"
)]
mod net;
mod node_info;
mod nonce;
mod persist;
mod scrub;
mod server;
mod settings;
mod state;
mod supervisor;
#[allow(unsafe_code, reason = "the sys module holds all of this crate's unsafe code")]
mod sys;
mod trust;
mod upgrade;

use settings::{Invocation, Settings, UsageError};
use std::process::ExitCode;

/// Why the agent could not run at all.
#[derive(Debug)]
enum AgentError {
    Usage(UsageError),
    Server(server::ServerError),
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentError::Usage(e) => write!(f, "{e}"),
            AgentError::Server(e) => write!(f, "{e}"),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = match settings::parse_args(&args) {
        Ok(Invocation::Run(s)) => s,
        Ok(Invocation::Help) => {
            print!("{}", settings::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Version) => {
            println!("basalt-agent {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("basalt-agent: {}", AgentError::Usage(e));
            return ExitCode::from(2);
        }
    };
    match run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("basalt-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(settings: Settings) -> Result<(), AgentError> {
    logging::init();
    // Before any child exists, so that no SIGCHLD is lost.
    let signals = server::take_signals().map_err(AgentError::Server)?;

    let log_dir = settings.log_dir();
    if let Err(e) = std::fs::create_dir_all(&log_dir) {
        log::error!("cannot create {}: {e}; service logs will fail", log_dir.display());
    }
    if let Err(e) = logging::attach_file(&logs::log_path(&log_dir, "agent")) {
        log::warn!("agent log stays on the console only: {e}");
    }
    log::info!("basalt-agent {} starting", env!("CARGO_PKG_VERSION"));

    let cmdline = std::fs::read_to_string(&settings.cmdline).unwrap_or_else(|e| {
        log::warn!("cannot read {}: {e}; using defaults", settings.cmdline.display());
        String::new()
    });
    let (boot, warnings) = settings::boot_params(&cmdline);
    for w in warnings {
        log::warn!("{w}");
    }

    let smbios = std::fs::read_to_string(settings.smbios_uuid()).map_err(|e| e.to_string());
    let identity = identity::resolve(boot.node.as_deref(), smbios);
    match &identity {
        identity::NodeIdentity::Known { id, source } => log::info!("node id {id} (from {source})"),
        identity::NodeIdentity::Unknown { reason } => {
            log::error!("no node identity: {reason}; signed configs and commands will be refused")
        }
    }

    let (trusted, problems) = trust::load_trusted_keys(&settings.trusted_keys_dir());
    for p in problems {
        log::warn!("{p}");
    }
    let ids: Vec<String> = trusted.iter().map(|k| k.key_id()).collect();
    if ids.is_empty() {
        log::error!(
            "no trusted keys in {}: every apply will be refused",
            settings.trusted_keys_dir().display()
        );
    } else {
        log::info!("trusted keys: {}", ids.join(", "));
    }

    let mut agent = agent::Agent::new(settings.clone(), &boot, identity, trusted);
    let mut server = server::Server::new(
        signals,
        settings.listen_unix.as_deref(),
        boot.serial.as_deref(),
        boot.vsock_port,
    )
    .map_err(AgentError::Server)?;
    log::info!("ready");
    server::run(&mut agent, &mut server);
    Ok(())
}
