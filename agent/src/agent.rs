//! The agent's state and its answer to each request.
//!
//! Everything that changes the node goes through [`Agent::handle`], which
//! checks a request completely before it changes anything: signature first
//! (before a byte of the payload is parsed), then the payload's kind,
//! schema, node binding, generation floor or nonce, then the filesystem.

use crate::clock::{self, NS_PER_MS};
use crate::files::{self, FileError};
use crate::identity::NodeIdentity;
use crate::logging::RateLimit;
use crate::logs::{self, Echo};
use crate::node_info;
use crate::nonce::{self, ConnId, NonceBook};
use crate::persist::Store;
use crate::scrub::{self, Scrub};
use crate::settings::{BootParams, Settings};
use crate::state::{self, SavedApply, SavedService, SavedState};
use crate::supervisor::{Run, Supervisor};
use crate::upgrade::{ConfigHealth, DataOutcome, PieceTiming, Places, ServiceView, TrialAction, Upgrades};
use basalt_common::command::UpgradeTerms;
use basalt_common::command::{Command, CommandError, CommandKind};
use basalt_common::config::{self, ApplyContext, Config, ConfigError};
use basalt_common::envelope::{SignedEnvelope, VerifyError};
use basalt_common::json;
use basalt_common::keys::PublicKey;
use basalt_common::proto::{self, ErrorCode, Frame, Op, MAX_FRAME};
use basalt_common::state_record::{Sealed, StateRecord, UpgradeOutcome, UpgradeRecord};
use basalt_common::text::clip;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::path::PathBuf;

/// How often service logs are echoed to the console and trimmed.
const LOG_PUMP_NS: u64 = 200 * NS_PER_MS;

type Reply = Result<Value, (ErrorCode, String)>;

/// The config in force.
#[derive(Debug)]
struct Applied {
    config: Config,
    envelope: SignedEnvelope,
    digest: String,
    key_id: String,
    received_ns: u64,
    applied_unix: u64,
    /// How long each stage of this apply took (not kept across agent restarts).
    stages: Vec<(&'static str, u64)>,
}

/// Splits an apply's time into named stages, each measured from the end of
/// the previous one; the first from the request's arrival.
struct Stages {
    last_ns: u64,
    done: Vec<(&'static str, u64)>,
}

impl Stages {
    fn new(start_ns: u64) -> Self {
        Stages {
            last_ns: start_ns,
            done: Vec::new(),
        }
    }

    fn mark(&mut self, name: &'static str) {
        let now = clock::now_ns();
        self.done.push((name, now.saturating_sub(self.last_ns)));
        self.last_ns = now;
    }

    fn to_json(stages: &[(&'static str, u64)]) -> Value {
        Value::Object(
            stages
                .iter()
                .map(|(n, ns)| (n.to_string(), json!(clock::ms_f64(*ns))))
                .collect(),
        )
    }
}

/// Init's contract: SIGTERM powers off, SIGINT reboots. A reset of /var
/// ends in a reboot. (`confirm` is never a shutdown: it never reaches
/// `shutdown`.)
fn init_signal(shutdown: CommandKind) -> Signal {
    match shutdown {
        CommandKind::Poweroff => Signal::SIGTERM,
        CommandKind::Reboot
        | CommandKind::ResetVar
        | CommandKind::Confirm
        | CommandKind::Upgrade
        | CommandKind::Rollback => Signal::SIGINT,
    }
}

/// A config applied with `try_ms`: in force, not persisted, reverted at
/// `until_ns` unless a signed `confirm` arrives first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Trial {
    generation: u64,
    until_ns: u64,
}

/// What `status` says about the channels.
#[derive(Debug, Clone, Default)]
pub struct ChannelInfo {
    pub serial: Option<PathBuf>,
    pub vsock_port: Option<u32>,
    pub unix: Option<PathBuf>,
}

pub struct Agent {
    settings: Settings,
    identity: NodeIdentity,
    trusted: Vec<PublicKey>,
    channels: ChannelInfo,
    nonces: NonceBook,
    rng: ring::rand::SystemRandom,
    applied: Option<Applied>,
    /// The highest generation applied this boot.
    floor: Option<u64>,
    supervisor: Supervisor,
    echoes: Vec<Echo>,
    next_pump_ns: u64,
    /// The signed reboot or poweroff accepted, once there is one.
    shutdown: Option<CommandKind>,
    rejections: RateLimit,
    init_signalled: bool,
    exit_when_stopped: bool,
    state_dirty: bool,
    scrub: Scrub,
    /// The STATE partition's records: what survives a reboot.
    store: Store,
    trial: Option<Trial>,
    /// A/B slots, update bundles, the trial of a new slot.
    upgrades: Upgrades,
    /// What became of the persisted config at boot (a trial slot's health).
    boot_config: ConfigHealth,
}

/// Where a config being applied comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// An `apply` request: written to the STATE partition before the answer.
    Request,
    /// An `apply` with `try_ms`: checked like a request, persisted by nothing.
    Trial,
    /// Read back from the STATE partition at boot: already there.
    Stored,
}

impl Agent {
    /// Builds the agent, recovering what a previous agent of this boot
    /// recorded (config, generation floor, running services).
    pub fn new(settings: Settings, boot: &BootParams, identity: NodeIdentity, trusted: Vec<PublicKey>) -> Self {
        let channels = ChannelInfo {
            serial: boot.serial.clone(),
            vsock_port: boot.vsock_port,
            unix: settings.listen_unix.clone(),
        };
        let supervisor = Supervisor::new(settings.log_dir(), settings.proc_dir.clone());
        let report = read_boot_report(&settings.boot_report());
        let scrub = Scrub::from_boot_report(report.as_ref(), boot.scrub_rate);
        let places = Places {
            image_key: settings.node_path("/etc/basalt/image.pub"),
            class_block: settings.node_path("/sys/class/block"),
            dev: settings.node_path("/dev"),
            esp_mount: settings.node_path("/run/basalt/esp"),
            esp_dir: settings.esp_dir.clone(),
        };
        let upgrades = Upgrades::open(&places, report.as_ref());
        let store = Store::open(
            &boot.state,
            &settings.node_path("/sys/class/block"),
            &settings.node_path("/dev"),
        );
        let mut agent = Agent {
            settings,
            identity,
            trusted,
            channels,
            nonces: NonceBook::default(),
            rng: ring::rand::SystemRandom::new(),
            applied: None,
            floor: None,
            supervisor,
            echoes: Vec::new(),
            next_pump_ns: 0,
            shutdown: None,
            rejections: RateLimit::new(20, 10, 4096, 1024),
            init_signalled: false,
            exit_when_stopped: false,
            state_dirty: false,
            scrub,
            store,
            trial: None,
            upgrades,
            boot_config: ConfigHealth::NoneStored,
        };
        let stored = agent.store.read();
        if agent.recover() {
            // An agent restart within a boot: the config in force is the
            // one this boot applied, which the newest record holds.
            if let Some((slot, _)) = stored.first() {
                agent.store.chose(*slot, "in force before the agent restarted".into());
            }
            agent.boot_config = match agent.applied {
                Some(_) => ConfigHealth::Applied,
                None => ConfigHealth::NoneStored,
            };
        } else {
            agent.boot_config = agent.boot_from_store(stored);
        }
        let outcome = agent.upgrades.on_boot(clock::now_ns(), agent.store.record());
        if let Some(upgrade) = outcome {
            agent.record_upgrade(upgrade, None);
        }
        agent
    }

    /// Writes an upgrade's outcome (and a raised image version floor) to STATE.
    fn record_upgrade(&mut self, upgrade: UpgradeRecord, floor: Option<u64>) {
        let old = self.store.record().clone();
        let record = StateRecord {
            upgrade: Some(upgrade),
            image_version_floor: old.image_version_floor.max(floor),
            ..old
        };
        if let Err(e) = self.store.write(record) {
            log::error!("upgrade: cannot record the outcome: {e}");
        }
    }

    /// A fresh boot: applies the newest record on the STATE partition that
    /// passes every check a request would, before any request is read; if
    /// it fails, the other record; if neither, maintenance mode.
    fn boot_from_store(&mut self, stored: Vec<(usize, Sealed)>) -> ConfigHealth {
        let Some(device) = self.store.device().map(|p| p.display().to_string()) else {
            log::info!("no STATE partition: configs last until the next reboot; starting in maintenance mode");
            return ConfigHealth::NoneStored;
        };
        let floors = stored.iter().map(|(_, s)| s.record.generation_floor).max().flatten();
        let image_floor = stored.iter().map(|(_, s)| s.record.image_version_floor).max().flatten();
        self.store.keep_floors(floors, image_floor);
        self.floor = floors;
        if stored.is_empty() {
            match self.store.invalid_slots() {
                0 => log::info!("STATE {device} holds no record yet: starting in maintenance mode"),
                n => log::error!(
                    "STATE {device}: no valid record ({n} damaged, kept as they are): starting in maintenance mode"
                ),
            }
            return ConfigHealth::NoneStored;
        }
        let newest = stored[0].1.seq;
        for (slot, sealed) in stored {
            let Some(envelope) = sealed.record.config.clone() else {
                log::info!(
                    "STATE {device} slot {slot} (seq {}) holds no config: maintenance mode",
                    sealed.seq
                );
                self.store
                    .chose(slot, "the newest record, which holds no config".into());
                return ConfigHealth::NoneStored;
            };
            match self.accept_config(envelope, clock::now_ns(), Source::Stored) {
                Ok(result) => {
                    let why = if sealed.seq == newest {
                        "the newest valid record".to_string()
                    } else {
                        "the newer record was refused".to_string()
                    };
                    log::info!(
                        "booted configured: generation {} from STATE {device} slot {slot} (seq {}, {why})",
                        result["generation"],
                        sealed.seq
                    );
                    self.store.chose(slot, why);
                    return ConfigHealth::Applied;
                }
                Err((code, why)) => {
                    log::error!(
                        "STATE {device} slot {slot} (seq {}) refused: {code}: {why}; trying the other record",
                        sealed.seq
                    );
                    self.store.refused(slot, format!("{code}: {why}"));
                }
            }
        }
        log::error!("no record on STATE {device} could be applied: starting in maintenance mode");
        ConfigHealth::Failed(format!("no record on STATE {device} could be applied"))
    }

    /// Takes back this boot's tmpfs state. False if there was none.
    fn recover(&mut self) -> bool {
        let path = self.settings.state_file();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
            Err(e) => {
                log::error!("cannot read {}: {e}; starting in maintenance mode", path.display());
                return true;
            }
        };
        let saved = match SavedState::parse(&bytes) {
            Ok(s) => s,
            Err(e) => {
                log::error!("{} is corrupt ({e}); starting in maintenance mode", path.display());
                return true;
            }
        };
        let shutdown = saved.shutdown;
        let trial_until = saved.trial_until_ns;
        self.restore(&path, saved);
        // A trial goes on across an agent restart, to the same deadline.
        if let (Some(until_ns), Some(a)) = (trial_until, &self.applied) {
            self.trial = Some(Trial {
                generation: a.config.generation,
                until_ns,
            });
        }
        // A signed shutdown was accepted and answered before the previous
        // agent died: it still happens, and nothing starts again first.
        if let Some(shutdown) = shutdown {
            log::warn!(
                "resuming the signed {} accepted before the agent restarted: stopping services, then signalling init",
                shutdown.as_str()
            );
            self.shutdown = Some(shutdown);
            self.supervisor.stop_all();
            self.state_dirty = true;
        }
        true
    }

    /// Takes back what a previous agent of this boot recorded.
    fn restore(&mut self, path: &std::path::Path, saved: SavedState) {
        self.floor = saved.floor;
        let now = clock::now_ns();
        let Some(sa) = saved.applied else {
            // No config, but processes of a removed config may still be stopping.
            self.supervisor.restore(&[], &saved.services, now);
            return;
        };
        // The state file is ours, on tmpfs, but the config it holds is checked
        // as if it had just arrived: only a verified config starts services.
        let recovered = sa
            .envelope
            .verify(&self.trusted)
            .map_err(|e| e.to_string())
            .map(|key| key.key_id())
            .and_then(|key_id| {
                config::parse_config(&sa.envelope.payload)
                    .map(|c| (c, key_id))
                    .map_err(|e| e.to_string())
            });
        match recovered {
            Ok((config, key_id)) => {
                log::info!(
                    "recovered generation {} from {}; the agent restarted",
                    config.generation,
                    path.display()
                );
                self.supervisor.restore(&config.services, &saved.services, now);
                self.applied = Some(Applied {
                    digest: sa.envelope.digest(),
                    key_id,
                    envelope: sa.envelope,
                    config,
                    received_ns: sa.received_ns,
                    applied_unix: sa.applied_unix,
                    stages: Vec::new(),
                });
            }
            Err(why) => {
                log::error!(
                    "saved config rejected ({why}); stopping its services, generation floor {:?} kept",
                    self.floor
                );
                let mut orphans = saved.services.clone();
                orphans.iter_mut().for_each(|s| s.retiring = true);
                self.supervisor.restore(&[], &orphans, now);
            }
        }
        self.sync_echoes();
        self.state_dirty = true;
    }

    /// Answers one frame from connection `conn` with one response line.
    pub fn handle(&mut self, frame: Frame, conn: ConnId, received_ns: u64) -> Vec<u8> {
        let line = match frame {
            Frame::TooLarge { len } => {
                let msg = format!("request line of {len} bytes exceeds the {MAX_FRAME}-byte limit; discarded");
                self.log_rejection(received_ns, format_args!("rejected a request: frame_too_large: {msg}"));
                return proto::error_line(&Value::Null, ErrorCode::FrameTooLarge, &msg);
            }
            Frame::Line(line) => (line, None),
            Frame::Binary { header, payload } => (header, Some(payload)),
        };
        let parse_start = clock::now_ns();
        let parsed = match line {
            (line, None) => proto::parse_request(&line),
            (header, Some(payload)) => proto::parse_binary_request(&header, payload),
        };
        let req = match parsed {
            Ok(r) => r,
            Err(e) => {
                self.log_rejection(
                    received_ns,
                    format_args!("rejected a request: {}: {}", e.code, e.message),
                );
                return proto::error_line(&e.id, e.code, &e.message);
            }
        };
        let op = req.op.name();
        let reply = match req.op {
            Op::Status => Ok(self.status(conn, received_ns)),
            Op::Logs { source, tail, since } => self.logs(&source, tail, since),
            Op::Apply { envelope, try_ms } => self.apply(envelope, try_ms, received_ns),
            Op::Confirm { envelope } => self.confirm(envelope, conn, received_ns),
            Op::Reboot { envelope } => self.command(CommandKind::Reboot, envelope, received_ns),
            Op::Poweroff { envelope } => self.command(CommandKind::Poweroff, envelope, received_ns),
            Op::ResetVar { envelope } => self.command(CommandKind::ResetVar, envelope, received_ns),
            Op::Upgrade {
                envelope,
                manifest,
                signature,
            } => self.upgrade(envelope, &manifest, &signature, received_ns),
            Op::UpgradeData { upgrade, offset, data } => {
                let timing = PieceTiming {
                    received_ns,
                    parse_ns: clock::now_ns().saturating_sub(parse_start),
                };
                self.upgrade_data(&upgrade, offset, data, timing)
            }
            Op::Rollback { envelope } => self.rollback(envelope, received_ns),
        };
        match reply {
            Ok(result) => proto::ok_line(&req.id, result),
            Err((code, message)) => {
                self.log_rejection(
                    received_ns,
                    format_args!("rejected {op} (id {}): {code}: {message}", req.id),
                );
                proto::error_line(&req.id, code, &message)
            }
        }
    }

    /// Logs a refused request: after a burst of 20 lines or 4 KiB, at most
    /// 10 lines and 1 KiB a second (a tenth of a 115200 baud console).
    fn log_rejection(&mut self, now: u64, line: std::fmt::Arguments) {
        let line = line.to_string();
        match self.rejections.admit(now, line.len()) {
            Some(0) => log::warn!("{line}"),
            Some(n) => log::warn!("{line} ({n} more rejected requests were not logged)"),
            None => {}
        }
    }

    fn verify<'k>(&'k self, envelope: &SignedEnvelope) -> Result<&'k PublicKey, (ErrorCode, String)> {
        envelope.verify(&self.trusted).map_err(|e| match e {
            VerifyError::UnknownKey { .. } => (ErrorCode::UnknownKey, e.to_string()),
            VerifyError::BadSignature { .. } => (ErrorCode::BadSignature, e.to_string()),
        })
    }

    fn node_id(&self) -> Result<String, (ErrorCode, String)> {
        match &self.identity {
            NodeIdentity::Known { id, .. } => Ok(id.clone()),
            NodeIdentity::Unknown { reason } => Err((ErrorCode::NoNodeIdentity, reason.clone())),
        }
    }

    fn refuse_if_shutting_down(&self) -> Result<(), (ErrorCode, String)> {
        match self.shutdown {
            Some(s) => Err((
                ErrorCode::ShuttingDown,
                format!("the node is shutting down ({})", s.as_str()),
            )),
            None if self.exit_when_stopped => Err((ErrorCode::ShuttingDown, "the agent is stopping".into())),
            None => Ok(()),
        }
    }

    fn apply(&mut self, envelope: SignedEnvelope, try_ms: Option<u64>, received_ns: u64) -> Reply {
        self.refuse_if_shutting_down()?;
        let source = if try_ms.is_some() {
            Source::Trial
        } else {
            Source::Request
        };
        let mut result = self.accept_config(envelope, received_ns, source)?;
        let generation = result["generation"].as_u64().unwrap_or_default();
        let ended = match try_ms {
            Some(ms) => self.trial.replace(Trial {
                generation,
                until_ns: received_ns.saturating_add(ms.saturating_mul(NS_PER_MS)),
            }),
            None => self.trial.take(),
        };
        if let Some(t) = ended {
            log::info!(
                "the trial of generation {} ends: generation {generation} applied",
                t.generation
            );
        }
        if let Some(ms) = try_ms {
            let back_to = self.store.record().generation_floor;
            log::warn!(
                "generation {generation} is on trial for {} s: nothing persisted; back to {} unless confirmed",
                ms / 1000,
                back_to.map_or("maintenance mode".to_string(), |g| format!("generation {g}"))
            );
            result["trial"] = self.trial_json(received_ns);
        }
        self.state_dirty = true;
        Ok(result)
    }

    /// A signed `confirm`: the config on trial becomes the persisted one.
    fn confirm(&mut self, envelope: SignedEnvelope, _conn: ConnId, now: u64) -> Reply {
        let key_id = self.check_command(CommandKind::Confirm, &envelope, now)?;
        self.refuse_if_shutting_down()?;
        let Some(trial) = self.trial else {
            return Err((ErrorCode::NoTrial, "no config is on trial; nothing to confirm".into()));
        };
        let Some(applied) = self.applied.as_ref() else {
            return Err((ErrorCode::Internal, "a trial with no config in force".into()));
        };
        let record = StateRecord {
            generation_floor: Some(trial.generation),
            config: Some(applied.envelope.clone()),
            ..self.store.record().clone()
        };
        self.store
            .write(record)
            .map_err(|e| (ErrorCode::ApplyFailed, format!("{e}; the trial goes on")))?;
        self.trial = None;
        self.state_dirty = true;
        log::info!("generation {} confirmed (key {key_id}): persisted", trial.generation);
        Ok(json!({"confirmed": trial.generation}))
    }

    /// The trial ran out: back to the persisted config (or maintenance mode
    /// if nothing was ever persisted), with the persisted floor.
    fn end_trial(&mut self, trial: Trial, now: u64) {
        let persisted = self.store.record().clone();
        self.floor = persisted.generation_floor;
        self.state_dirty = true;
        if let Some(envelope) = persisted.config {
            match self.accept_config(envelope, now, Source::Stored) {
                Ok(r) => {
                    log::warn!(
                        "the trial of generation {} timed out: back on the persisted generation {}",
                        trial.generation,
                        r["generation"]
                    );
                    return;
                }
                Err((code, why)) => log::error!(
                    "the trial of generation {} timed out, and the persisted config cannot be applied ({code}: {why}): maintenance mode",
                    trial.generation
                ),
            }
        } else {
            log::warn!(
                "the trial of generation {} timed out: nothing was persisted before it, back to maintenance mode",
                trial.generation
            );
        }
        self.supervisor.apply(&[], now);
        self.applied = None;
    }

    fn trial_json(&self, now: u64) -> Value {
        match self.trial {
            None => Value::Null,
            Some(t) => json!({
                "generation": t.generation,
                "reverts_in_ms": clock::ms(t.until_ns.saturating_sub(now)),
                "back_to": self.store.record().generation_floor,
            }),
        }
    }

    /// Checks a config completely, then applies it all or nothing: files,
    /// hostname, this boot's state file, the STATE record (for a request),
    /// and only then the services.
    fn accept_config(&mut self, envelope: SignedEnvelope, received_ns: u64, source: Source) -> Reply {
        let mut stages = Stages::new(received_ns);
        stages.mark("read");
        let key_id = self.verify(&envelope)?.key_id();
        stages.mark("verify");
        let config = config::parse_config(&envelope.payload).map_err(config_error)?;
        let node = self.node_id()?;
        let ctx = ApplyContext {
            node: &node,
            // A request must be newer than the floor; the record that set
            // the floor is re-applied at boot, so it may equal it.
            applied_generation: match source {
                Source::Request | Source::Trial => self.floor,
                Source::Stored => self.floor.and_then(|f| f.checked_sub(1)),
            },
        };
        config.check_applicable(&ctx).map_err(config_error)?;
        check_programs(&config)?;
        files::preflight(&self.settings.root, &config.files).map_err(file_error)?;
        stages.mark("validate");

        // Nothing has changed yet. From here on each step undoes the ones
        // before it if it fails: stage the files, rename them into place
        // (keeping what they replace), set the hostname, record the new
        // generation in this boot's state and then on the STATE partition
        // (flushed: the commit point). Only then does anything start or stop.
        let staged = files::stage(&self.settings.root, &config.files).map_err(file_error)?;
        let committed = staged.commit().map_err(file_error)?;
        let old_hostname = self.current_hostname();
        if let Err(why) = self.set_hostname(&config.hostname) {
            committed.undo();
            self.restore_hostname(old_hostname);
            return Err((ErrorCode::ApplyFailed, why));
        }
        stages.mark("files");
        let digest = envelope.digest();
        let record = StateRecord {
            generation_floor: Some(config.generation),
            config: Some(envelope.clone()),
            ..self.store.record().clone()
        };
        let next = Applied {
            config,
            envelope,
            digest,
            key_id,
            received_ns,
            applied_unix: clock::unix_secs(),
            stages: Vec::new(),
        };
        let services = self.supervisor.snapshot_after_apply(&next.config.services, received_ns);
        let previous = (self.floor.replace(next.config.generation), self.applied.replace(next));
        // Recorded before anything starts, so a crash from here on still
        // knows the new generation; tick() starts the services and records
        // their pids at once.
        let saved = self.save_state_with(services).and_then(|()| {
            stages.mark("state");
            match source {
                Source::Request => self.store.write(record).map_err(|e| e.to_string()),
                Source::Trial | Source::Stored => Ok(()),
            }
        });
        if let Err(why) = saved {
            (self.floor, self.applied) = previous;
            committed.undo();
            self.restore_hostname(old_hostname);
            // This boot's state file goes back to the generation in force.
            let _ = self.save_state();
            return Err((ErrorCode::ApplyFailed, format!("{why}; nothing was changed")));
        }
        committed.keep();
        if source == Source::Request && self.store.persistent() {
            stages.mark("persist");
        }
        let Some(applied) = self.applied.as_ref() else {
            return Err((ErrorCode::Internal, "the applied config vanished".into()));
        };
        let config = &applied.config;
        let digest = applied.digest.clone();
        let key_id = applied.key_id.clone();
        let plan = self.supervisor.apply(&config.services, received_ns);
        log::info!(
            "applied generation {} (config {}, signed by key {key_id}): start {:?}, restart {:?}, stop {:?}, unchanged {:?}",
            config.generation,
            &digest[..16],
            plan.started,
            plan.restarted,
            plan.stopped,
            plan.unchanged
        );
        let result = json!({
            "generation": config.generation,
            "digest": digest,
            "key_id": key_id,
            "node": node,
            "services": plan.to_json(),
        });
        self.sync_echoes();
        self.tick(clock::now_ns());
        stages.mark("spawn");
        log::info!("apply stages (ms): {}", Stages::to_json(&stages.done));
        if let Some(a) = self.applied.as_mut() {
            a.stages = stages.done;
        }
        Ok(result)
    }

    /// Puts back the hostname an apply found (with a hostname file, one
    /// that did not exist is removed again).
    fn restore_hostname(&self, old: Option<String>) {
        let restored = match (old, &self.settings.hostname_file) {
            (Some(name), _) => self.set_hostname(&name),
            (None, Some(path)) => match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
            },
            (None, None) => Ok(()),
        };
        if let Err(e) = restored {
            log::error!("cannot restore the hostname after a failed apply: {e}");
        }
    }

    /// The hostname as it is now, to put back if an apply fails.
    fn current_hostname(&self) -> Option<String> {
        match &self.settings.hostname_file {
            Some(path) => std::fs::read_to_string(path).ok().map(|s| s.trim_end().to_string()),
            None => nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()),
        }
    }

    fn set_hostname(&self, name: &str) -> Result<(), String> {
        match &self.settings.hostname_file {
            Some(path) => state::write_atomic(path, format!("{name}\n").as_bytes(), 0o644)
                .map_err(|e| format!("cannot write hostname to {}: {e}", path.display())),
            None => nix::unistd::sethostname(name).map_err(|e| format!("sethostname({name:?}): {}", e.desc())),
        }
    }

    /// A signed command's checks: signature, kind, node, and its nonce,
    /// which this consumes. Returns the signing key's id.
    fn check_command(
        &mut self,
        kind: CommandKind,
        envelope: &SignedEnvelope,
        now: u64,
    ) -> Result<String, (ErrorCode, String)> {
        self.check_signed(envelope, now, |p| Command::parse(p, kind).map(|c| (c, ())))
            .map(|(key_id, ())| key_id)
    }

    /// [`check_command`](Self::check_command) for a command that carries
    /// more than node and nonce: `parse` reads it. Returns the key id and
    /// what `parse` read besides the command.
    fn check_signed<T>(
        &mut self,
        envelope: &SignedEnvelope,
        now: u64,
        parse: impl FnOnce(&[u8]) -> Result<(Command, T), CommandError>,
    ) -> Result<(String, T), (ErrorCode, String)> {
        let key_id = self.verify(envelope)?.key_id();
        let (cmd, extra) = parse(&envelope.payload).map_err(|e| match e {
            CommandError::WrongKind { .. } => (ErrorCode::WrongKind, e.to_string()),
            CommandError::Json(_) => (ErrorCode::BadRequest, e.to_string()),
        })?;
        let node = self.node_id()?;
        if cmd.node != node {
            return Err((
                ErrorCode::WrongNode,
                format!("command is for node {:?}, this node is {node:?}", clip(&cmd.node)),
            ));
        }
        self.nonces
            .consume(&cmd.nonce, now)
            .map_err(|e| (ErrorCode::BadNonce, e.to_string()))?;
        Ok((key_id, extra))
    }

    fn command(&mut self, kind: CommandKind, envelope: SignedEnvelope, now: u64) -> Reply {
        let key_id = self.check_command(kind, &envelope, now)?;
        // After the nonce check, so a replay is reported as one even mid-shutdown.
        self.refuse_if_shutting_down()?;
        Ok(self.shut_down(kind, &format!("signed {} accepted (key {key_id})", kind.as_str())))
    }

    /// `upgrade`: a signed command naming one bundle, with its manifest.
    fn upgrade(&mut self, envelope: SignedEnvelope, manifest: &[u8], signature: &[u8], now: u64) -> Reply {
        let (key_id, terms): (String, UpgradeTerms) = self.check_signed(&envelope, now, Command::parse_upgrade)?;
        self.refuse_if_shutting_down()?;
        log::info!("signed upgrade request accepted (key {key_id})");
        let floor = self.store.record().image_version_floor;
        self.upgrades.begin(terms, manifest, signature, floor)
    }

    fn upgrade_data(&mut self, id: &str, offset: u64, data: Vec<u8>, timing: PieceTiming) -> Reply {
        self.refuse_if_shutting_down()?;
        match self.upgrades.data(id, offset, data, timing)? {
            DataOutcome::Progress(v) => Ok(v),
            DataOutcome::Staged { result, record, reboot } => {
                self.record_upgrade(record, None);
                if reboot {
                    self.shut_down(CommandKind::Reboot, "upgrade staged with --reboot");
                }
                Ok(result)
            }
        }
    }

    fn rollback(&mut self, envelope: SignedEnvelope, now: u64) -> Reply {
        let key_id = self.check_command(CommandKind::Rollback, &envelope, now)?;
        self.refuse_if_shutting_down()?;
        let mut result = self.upgrades.rollback()?;
        let stopping = self.shut_down(CommandKind::Reboot, &format!("signed rollback accepted (key {key_id})"));
        result["stopping"] = stopping["stopping"].clone();
        Ok(result)
    }

    /// Stops every service in reverse order, then signals init for `kind`
    /// (reboot, poweroff or reset-var); returns the answer to send.
    fn shut_down(&mut self, kind: CommandKind, why: &str) -> Value {
        let shutdown = kind;
        log::warn!(
            "{why}: stopping services in reverse order, then signalling init (pid {}) for {}",
            self.settings.init_pid,
            shutdown.as_str()
        );
        let stopping: Vec<String> = self
            .supervisor
            .services()
            .iter()
            .rev()
            .map(|s| s.spec.name.clone())
            .collect();
        self.shutdown = Some(shutdown);
        self.supervisor.stop_all();
        // On record before the answer: an agent that dies from here on is
        // restarted by init and finishes the shutdown (recover()). If the
        // record cannot be written the shutdown still goes ahead in this
        // agent (it is logged, and retried each tick); only a crash before
        // it ends would lose it.
        let _ = self.save_state();
        // The kind of the last accepted shutdown, on STATE for the next boot
        // to see; best effort, like the line above.
        let record = StateRecord {
            last_shutdown: Some(shutdown.as_str().to_string()),
            ..self.store.record().clone()
        };
        if let Err(e) = self.store.write(record) {
            log::error!("{e}; the {} goes ahead", shutdown.as_str());
        }
        json!({"accepted": shutdown.as_str(), "stopping": stopping})
    }

    /// The health window of a slot on trial, then its bless or a reboot.
    fn tick_upgrade(&mut self, now: u64) {
        if self.shutdown.is_some() {
            return;
        }
        let views: Vec<ServiceView> = self
            .supervisor
            .services()
            .iter()
            .map(|s| ServiceView {
                name: &s.spec.name,
                running: matches!(s.run, Run::Running(_)),
                exited: matches!(s.run, Run::Backoff { .. } | Run::Exited),
                restarts: s.restarts,
            })
            .collect();
        match self.upgrades.tick(now, &self.boot_config, &views) {
            None => {}
            Some(TrialAction::Reboot(why)) => {
                self.shut_down(CommandKind::Reboot, &format!("the trial failed ({why})"));
            }
            Some(TrialAction::Blessed { version_seq }) => {
                let upgrade = self.store.record().upgrade.clone();
                match upgrade.filter(|u| u.outcome == UpgradeOutcome::Staged) {
                    Some(u) => self.record_upgrade(
                        UpgradeRecord {
                            outcome: UpgradeOutcome::Blessed,
                            ..u
                        },
                        version_seq,
                    ),
                    None => log::warn!("upgrade: blessed, but STATE holds no staged upgrade: the floor stays"),
                }
            }
        }
    }

    fn logs(&self, source: &str, tail: u64, since: Option<u64>) -> Reply {
        let named_ok = config::RESERVED_SERVICE_NAMES.contains(&source) || config::check_service_name(source).is_ok();
        let path = logs::log_path(&self.settings.log_dir(), source);
        let not_found = || {
            (
                ErrorCode::NotFound,
                format!(
                    "no log named {:?} (services, \"agent\" and \"init\" have logs)",
                    clip(source)
                ),
            )
        };
        if !named_ok {
            return Err(not_found());
        }
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err((ErrorCode::Internal, format!("cannot open {}: {e}", path.display()))),
        };
        let chunk = match since {
            Some(cursor) => logs::read_since(&file, cursor),
            None => logs::read_tail(&file, tail as usize),
        }
        .map_err(|e| (ErrorCode::Internal, format!("cannot read {}: {e}", path.display())))?;
        Ok(json!({
            "source": source,
            "lines": chunk.lines,
            "cursor": chunk.cursor,
            "truncated": chunk.truncated,
        }))
    }

    /// Connection `conn` closed: the nonces it was given move to the shared pool.
    pub fn connection_closed(&mut self, conn: ConnId) {
        self.nonces.closed(conn);
    }

    fn status(&mut self, conn: ConnId, now: u64) -> Value {
        let nonce = nonce::fresh(&self.rng);
        if let Some(n) = &nonce {
            self.nonces.issue(conn, n.clone(), now);
        }
        let boot = read_boot_report(&self.settings.boot_report());
        let state = match (&self.applied, self.supervisor.degraded()) {
            (None, _) => "maintenance",
            (Some(_), true) => "degraded",
            (Some(_), false) => "configured",
        };
        let (node, node_source, node_problem) = match &self.identity {
            NodeIdentity::Known { id, source } => (Some(id.clone()), Some(*source), None),
            NodeIdentity::Unknown { reason } => (None, None, Some(reason.clone())),
        };
        let init_status = self.settings.proc_path(&format!("{}/status", self.settings.init_pid));
        json!({
            "state": state,
            "node": node,
            "node_source": node_source,
            "node_problem": node_problem,
            "agent_version": env!("CARGO_PKG_VERSION"),
            "kernel": node_info::kernel_release(&self.settings.proc_dir),
            "image": boot.as_ref().and_then(|b| b.get("image")).cloned(),
            "lockdown": node_info::lockdown(&self.settings.lockdown()),
            "boot": boot,
            "config": self.applied.as_ref().map(|a| json!({
                "generation": a.config.generation,
                "digest": a.digest,
                "key_id": a.key_id,
                "hostname": a.config.hostname,
                "applied_unix": a.applied_unix,
                "received_ms": clock::ms(a.received_ns),
                "stages_ms": (!a.stages.is_empty()).then(|| Stages::to_json(&a.stages)),
            })),
            "generation_floor": self.floor,
            "persistence": self.store.status(),
            "trial": self.trial_json(now),
            "services": self.supervisor.status(now),
            "apply_to_exec_ms": self.supervisor.apply_to_exec(),
            "agent_peak_rss_kib": node_info::peak_rss_kib(&self.settings.proc_path("self/status")),
            "init_peak_rss_kib": node_info::peak_rss_kib(&init_status),
            "trusted_keys": self.trusted.iter().map(|k| k.key_id()).collect::<Vec<_>>(),
            "channels": {
                "serial": self.channels.serial.as_ref().map(|p| p.display().to_string()),
                "vsock_port": self.channels.vsock_port,
                "unix": self.channels.unix.as_ref().map(|p| p.display().to_string()),
            },
            "shutting_down": self.shutdown.map(CommandKind::as_str),
            "scrub": self.scrub.status(now),
            "upgrades": self.upgrades.status(self.store.record()),
            "now_ms": clock::ms(now),
            "nonce": nonce,
        })
    }

    /// SIGTERM or SIGINT to the agent: stop the services, then exit.
    pub fn request_exit(&mut self) {
        if !self.exit_when_stopped {
            log::info!("asked to exit: stopping services in reverse order");
        }
        self.exit_when_stopped = true;
        self.supervisor.stop_all();
    }

    /// Echoes what the services wrote last, before the agent exits.
    pub fn final_log_pump(&mut self) {
        self.pump_logs();
    }

    /// The agent may exit now.
    pub fn done(&self) -> bool {
        self.exit_when_stopped && self.supervisor.all_stopped()
    }

    pub fn supervisor_mut(&mut self) -> &mut Supervisor {
        &mut self.supervisor
    }

    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// Drives everything that runs on time: service starts and stops, the
    /// log pump, the state file, and the final signal to init.
    pub fn tick(&mut self, now: u64) {
        if let Some(trial) = self.trial.filter(|t| now >= t.until_ns) {
            self.trial = None;
            self.end_trial(trial, now);
        }
        self.supervisor.tick(now);
        // Straight after starts and stops, so the pids on record are current.
        if self.supervisor.take_changed() || self.state_dirty {
            // A failure is logged and leaves state_dirty set: the next tick retries.
            let _ = self.save_state();
        }
        self.scrub.tick(now, scrub::service_up(self.supervisor.services()));
        self.tick_upgrade(now);
        if now >= self.next_pump_ns {
            self.pump_logs();
            self.next_pump_ns = now + LOG_PUMP_NS;
        }
        if let Some(shutdown) = self.shutdown {
            if !self.init_signalled && self.supervisor.all_stopped() {
                self.init_signalled = true;
                if shutdown == CommandKind::ResetVar {
                    // Nothing runs now that could write /var; the next boot
                    // applies the persisted config to an empty one.
                    let var = self.settings.node_path("/var");
                    match files::empty_dir(&var) {
                        Ok(n) => log::warn!("reset: {n} entries removed from {}; rebooting", var.display()),
                        Err(e) => log::error!("reset: {e}; rebooting with /var as it is"),
                    }
                }
                let init = Pid::from_raw(self.settings.init_pid);
                match kill(init, init_signal(shutdown)) {
                    Ok(()) => log::warn!(
                        "services stopped; sent {} to init (pid {init}) for {}",
                        init_signal(shutdown),
                        shutdown.as_str()
                    ),
                    Err(e) => log::error!(
                        "cannot signal init (pid {init}) for {}: {}",
                        shutdown.as_str(),
                        e.desc()
                    ),
                }
            }
        }
    }

    /// When [`tick`](Self::tick) next has something to do.
    pub fn next_wakeup(&self) -> u64 {
        let pump = self
            .trial
            .map_or(self.next_pump_ns, |t| t.until_ns.min(self.next_pump_ns))
            .min(self.scrub.next_deadline().unwrap_or(u64::MAX))
            .min(self.upgrades.next_deadline().unwrap_or(u64::MAX));
        self.supervisor.next_deadline().map_or(pump, |d| d.min(pump))
    }

    fn sync_echoes(&mut self) {
        let Some(applied) = &self.applied else { return };
        let dir = self.settings.log_dir();
        for s in &applied.config.services {
            if !self.echoes.iter().any(|e| e.source() == s.name) {
                self.echoes.push(Echo::new(&s.name, logs::log_path(&dir, &s.name)));
            }
        }
    }

    fn pump_logs(&mut self) {
        let mut budget = logs::ECHO_BUDGET;
        let mut console = std::io::stderr().lock();
        for echo in &mut self.echoes {
            if let Err(e) = echo.pump(&mut budget, &mut console) {
                log::warn!("cannot echo the {} log: {e}", echo.source());
            }
        }
        drop(console);
        let dir = self.settings.log_dir();
        let sources = self
            .echoes
            .iter()
            .map(|e| e.source().to_string())
            .chain(["agent".to_string()]);
        for source in sources {
            let path = logs::log_path(&dir, &source);
            if let Ok(file) = logs::open_for_trim(&path) {
                if let Err(e) = logs::trim(&file, self.settings.log_cap) {
                    log::warn!("cannot trim {}: {e}", path.display());
                }
            }
        }
    }

    /// Writes the state file. A failure is logged, and retried at the next
    /// tick; the caller decides whether it may go on without it.
    fn save_state(&mut self) -> Result<(), String> {
        self.save_state_with(self.supervisor.snapshot())
    }

    fn save_state_with(&mut self, services: Vec<SavedService>) -> Result<(), String> {
        let saved = SavedState {
            floor: self.floor,
            applied: self.applied.as_ref().map(|a| SavedApply {
                envelope: a.envelope.clone(),
                received_ns: a.received_ns,
                applied_unix: a.applied_unix,
            }),
            services,
            shutdown: self.shutdown,
            trial_until_ns: self.trial.map(|t| t.until_ns),
        };
        let bytes = serde_json::to_vec(&saved.to_json()).unwrap_or_default();
        let path = self.settings.state_file();
        match state::write_atomic(&path, &bytes, 0o600) {
            Ok(()) => {
                self.state_dirty = false;
                Ok(())
            }
            Err(e) => {
                let why = format!("cannot save state to {}: {e}", path.display());
                log::error!("{why}");
                self.state_dirty = true;
                Err(why)
            }
        }
    }
}

fn config_error(e: ConfigError) -> (ErrorCode, String) {
    let code = match e {
        ConfigError::WrongKind { .. } => ErrorCode::WrongKind,
        ConfigError::Invalid(_) => ErrorCode::InvalidConfig,
        ConfigError::WrongNode { .. } => ErrorCode::WrongNode,
        ConfigError::StaleGeneration { .. } => ErrorCode::StaleGeneration,
    };
    (code, e.to_string())
}

fn file_error(e: FileError) -> (ErrorCode, String) {
    match &e {
        FileError::Unsafe { index, why, .. } => (
            ErrorCode::InvalidConfig,
            format!("{}.path: {why}", json::index("$.files", *index)),
        ),
        FileError::Io { .. } => (ErrorCode::ApplyFailed, e.to_string()),
    }
}

/// Each service's program must exist and be executable on this node: a
/// typo is refused with the config rather than found by a crash loop.
/// Services are kept in start order, so the path names the service.
fn check_programs(config: &Config) -> Result<(), (ErrorCode, String)> {
    use std::os::unix::fs::PermissionsExt;
    for s in &config.services {
        let program = &s.exec[0];
        let path = format!("$.services[?(@.name=={:?})].exec[0]", s.name);
        let why = match std::fs::metadata(program) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {
                // A symlink on the root may still lead to a writable mount.
                let resolved = std::fs::canonicalize(program).unwrap_or_else(|_| program.into());
                match config::check_program_on_root(&resolved.to_string_lossy()) {
                    Ok(()) => continue,
                    Err(what) => {
                        return Err((
                            ErrorCode::InvalidConfig,
                            format!("{path}: {program} resolves to {what}"),
                        ))
                    }
                }
            }
            Ok(_) => "is not an executable file",
            Err(_) => "does not exist on this node",
        };
        return Err((ErrorCode::InvalidConfig, format!("{path}: {program} {why}")));
    }
    Ok(())
}

fn read_boot_report(path: &std::path::Path) -> Option<Value> {
    let bytes = std::fs::read(path).ok()?;
    match json::parse_strict(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            log::warn!("boot report {} is not JSON: {e}", path.display());
            None
        }
    }
}
