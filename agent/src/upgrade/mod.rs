//! A/B upgrades (docs/upgrades.md): a signed bundle written into the slot
//! that is not running, booted on trial with three tries, blessed once
//! healthy, and the old slot kept for the loader to fall back to.
//!
//! The boot selection is the ESP's file names alone
//! (basalt_common::disk::boot_entry): systemd-boot boots the entry with the
//! highest priority that has tries left, and counts the tries down itself.
//!
//! The agent calls: [`Upgrades::open`] at start, [`Upgrades::on_boot`] on a
//! fresh boot, [`Upgrades::begin`] / [`Upgrades::data`] for the `upgrade` and
//! `upgrade-data` ops, [`Upgrades::rollback`], [`Upgrades::tick`] for the
//! health window, [`Upgrades::status`].

mod esp;
mod health;
mod slot_device;
mod transfer;

pub use health::{ConfigHealth, ServiceView};

use basalt_common::bundle::{self, BundleManifest, Part};
use basalt_common::command::UpgradeTerms;
use basalt_common::disk::boot_entry::{self, BootEntry, SlotId};
use basalt_common::hex;
use basalt_common::keys::PublicKey;
use basalt_common::proto::ErrorCode;
use basalt_common::state_record::{StateRecord, UpgradeOutcome, UpgradeRecord};
use esp::Esp;
use health::{HealthWatch, Verdict};
use serde_json::{json, Value};
use slot_device::{SlotContents, SlotDevice};
use std::fs::File;
use std::path::{Path, PathBuf};
use transfer::Transfer;

type Refusal = (ErrorCode, String);

/// Where the upgrade machinery finds things on the node.
pub struct Places {
    /// The image public key file, in the verified root.
    pub image_key: PathBuf,
    /// `/sys/class/block` and `/dev`, to find partitions by PARTLABEL.
    pub class_block: PathBuf,
    pub dev: PathBuf,
    /// Where to mount the ESP.
    pub esp_mount: PathBuf,
    /// A directory to use as the mounted ESP instead (tests).
    pub esp_dir: Option<PathBuf>,
}

/// The disk this node booted from.
struct Disk {
    booted: SlotId,
    booted_version: String,
    esp: Esp,
    slots: [PathBuf; 2],
    key: PublicKey,
}

impl Disk {
    fn slot_path(&self, slot: SlotId) -> &Path {
        &self.slots[slot_index(slot)]
    }

    fn entries(&self) -> Result<Vec<BootEntry>, String> {
        Ok(self.esp.entries()?.into_iter().map(|(_, e)| e).collect())
    }
}

/// A bundle being received.
struct Active {
    id: String,
    digest: [u8; 32],
    terms: UpgradeTerms,
    target: SlotId,
    transfer: Transfer,
    staging: File,
    device: SlotDevice,
    costs: Costs,
}

/// Where a transfer's time on the node went, summed over its requests, so an
/// operator (and the bench) can see what it is bound by: the wire (waiting
/// between answering one piece and having read the next), parsing the
/// request (JSON and base64), checking chunks (SHA-256), writing them, and
/// the final read-back.
#[derive(Debug, Default, Clone)]
struct Costs {
    wait_ns: u64,
    parse_ns: u64,
    check_ns: u64,
    write_ns: u64,
    verify_ns: u64,
    /// When the last piece was answered.
    answered_ns: Option<u64>,
}

impl Costs {
    fn to_json(&self) -> Value {
        let ms = |ns: u64| crate::clock::ms(ns);
        json!({
            "wait": ms(self.wait_ns),
            "parse": ms(self.parse_ns),
            "check": ms(self.check_ns),
            "write": ms(self.write_ns),
            "verify": ms(self.verify_ns),
        })
    }
}

/// Timing of one `upgrade-data` request, from the server loop.
#[derive(Debug, Clone, Copy)]
pub struct PieceTiming {
    /// When its line was complete.
    pub received_ns: u64,
    /// How long parsing it took.
    pub parse_ns: u64,
}

/// This boot is a trial of the booted slot.
struct Trial {
    entry: BootEntry,
    watch: HealthWatch,
    version_seq: Option<u64>,
}

/// What the agent does after [`Upgrades::tick`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrialAction {
    /// The trial passed and the entry is blessed: record it (and raise the
    /// floor to this version).
    Blessed { version_seq: Option<u64> },
    /// The trial failed: reboot, which spends a try.
    Reboot(String),
}

/// What an `upgrade-data` request led to.
pub enum DataOutcome {
    Progress(Value),
    /// Written, checked, bootable on trial: record it, and reboot if asked.
    Staged {
        result: Value,
        record: UpgradeRecord,
        reboot: bool,
    },
}

pub struct Upgrades {
    disk: Result<Disk, String>,
    active: Option<Active>,
    trial: Option<Trial>,
    /// The last outcome worth a line in status (and said on the console).
    notice: Option<String>,
}

impl Upgrades {
    /// Finds the booted slot (from the boot report), the partitions and the
    /// ESP. A node that did not boot from a disk slot cannot be upgraded;
    /// `status` says why.
    pub fn open(places: &Places, boot_report: Option<&Value>) -> Upgrades {
        let disk = open_disk(places, boot_report);
        match &disk {
            Ok(d) => log::info!(
                "upgrade: booted {} {}; boot entries: {}",
                d.booted.label(),
                d.booted_version,
                d.esp
                    .entries()
                    .map(|e| e.into_iter().map(|(name, _)| name).collect::<Vec<_>>().join(" "))
                    .unwrap_or_else(|e| e)
            ),
            Err(why) => log::info!("upgrade: not available: {why}"),
        }
        Upgrades {
            disk,
            active: None,
            trial: None,
            notice: None,
        }
    }

    fn disk(&self) -> Result<&Disk, Refusal> {
        usable(&self.disk)
    }

    /// A fresh boot: is the booted slot on trial, or did the other one just
    /// fail its tries? Returns the record to write when an upgrade's outcome
    /// changed.
    pub fn on_boot(&mut self, now: u64, record: &StateRecord) -> Option<UpgradeRecord> {
        let disk = self.disk.as_ref().ok()?;
        let entries = match disk.entries() {
            Ok(e) => e,
            Err(why) => {
                log::error!("upgrade: {why}");
                return None;
            }
        };
        let upgrade = record.upgrade.clone();
        let staged_for = |slot: SlotId| {
            upgrade
                .as_ref()
                .filter(|u| u.outcome == UpgradeOutcome::Staged && u.target == slot.label())
        };
        let booted = boot_entry::of_slot(&entries, disk.booted).first().copied();
        if let Some(entry) = booted.filter(|e| e.tries.is_some()) {
            let staged = staged_for(disk.booted);
            let window = staged.map_or(basalt_common::command::DEFAULT_HEALTH_WINDOW_MS, |u| u.health_window_ms);
            log::warn!(
                "upgrade: {} {} is on trial ({} tries left after this boot); it is blessed after {} s healthy",
                disk.booted.label(),
                disk.booted_version,
                entry.tries.map_or(0, |t| t.left),
                window / 1000
            );
            self.trial = Some(Trial {
                entry,
                watch: HealthWatch::new(now, window),
                version_seq: staged.map(|u| u.version_seq),
            });
            return None;
        }
        let other = disk.booted.other();
        let exhausted = boot_entry::of_slot(&entries, other)
            .first()
            .is_some_and(|e| e.exhausted());
        let staged = staged_for(other)?;
        if !exhausted {
            return None;
        }
        let line = format!(
            "upgrade to {} failed after {} tries; running {}",
            staged.version,
            boot_entry::TRIAL_TRIES,
            disk.booted_version
        );
        log::error!("{line}");
        self.notice = Some(line);
        Some(UpgradeRecord {
            outcome: UpgradeOutcome::Failed,
            ..staged.clone()
        })
    }

    /// `upgrade`: checks the signed manifest and the node, clears the
    /// target slot and its boot entries, and says where to send from. The
    /// same bundle again resumes where the last checked chunk ended.
    pub fn begin(
        &mut self,
        terms: UpgradeTerms,
        manifest_bytes: &[u8],
        signature: &[u8],
        image_floor: Option<u64>,
    ) -> Result<Value, Refusal> {
        let digest = sha256(manifest_bytes);
        if digest != terms.bundle {
            return Err((
                ErrorCode::BadBundle,
                format!(
                    "the bundle manifest's SHA-256 is {}, the signed request names {}",
                    hex::encode(&digest),
                    hex::encode(&terms.bundle)
                ),
            ));
        }
        let disk = usable(&self.disk)?;
        let m = bundle::verify_manifest(manifest_bytes, signature, &disk.key)
            .map_err(|e| (ErrorCode::BadBundle, e.to_string()))?;
        let target = check_fits(disk, &m, self.trial.is_some())?;
        if let Some(floor) = image_floor.filter(|&f| m.version_seq < f) {
            if !terms.allow_downgrade {
                return Err((
                    ErrorCode::Downgrade,
                    format!(
                        "bundle version_seq {} is below this node's image version floor {floor}; a signed --allow-downgrade is needed",
                        m.version_seq
                    ),
                ));
            }
            log::warn!(
                "upgrade: version_seq {} below the floor {floor}, allowed by the signed request",
                m.version_seq
            );
        }
        // A resume is a new signed request: held to the same checks (its
        // terms are the ones that count from here), then on from the last
        // checked chunk.
        if let Some(active) = self.active.as_mut().filter(|a| a.digest == digest) {
            active.terms = terms;
            let next = active.transfer.resume_at();
            log::info!("upgrade {}: resumed at byte {next}", active.id);
            return Ok(progress_json(active, next));
        }
        let device = SlotDevice::open(disk.slot_path(target), true).map_err(failed)?;
        device
            .fits(m.slot.tree_end)
            .map_err(|e| (ErrorCode::NotUpgradable, e))?;
        // Nothing may point at the slot while it is being written, and a
        // half-written slot must read as empty.
        disk.esp.remove_slot(target).map_err(failed)?;
        device.clear().map_err(failed)?;
        let staging = disk.esp.create_staging(target).map_err(failed)?;
        let id = hex::encode(&digest[..8]);
        log::warn!(
            "upgrade {id}: installing {} (version_seq {}) into {}: {} bytes to receive",
            m.version,
            m.version_seq,
            target.label(),
            m.parts_len()
        );
        let active = Active {
            id,
            digest,
            terms,
            target,
            transfer: Transfer::new(m),
            staging,
            device,
            costs: Costs::default(),
        };
        let reply = progress_json(&active, 0);
        self.active = Some(active);
        Ok(reply)
    }

    /// `upgrade-data`: checks and writes each chunk the bytes complete; after
    /// the last one, checks the whole slot and stages its entry.
    pub fn data(&mut self, id: &str, offset: u64, bytes: Vec<u8>, timing: PieceTiming) -> Result<DataOutcome, Refusal> {
        let Some(active) = self.active.as_mut().filter(|a| a.id == id) else {
            return Err((
                ErrorCode::NoUpgrade,
                format!(
                    "no upgrade {:?} is in progress; send upgrade first",
                    basalt_common::text::clip(id)
                ),
            ));
        };
        let costs = &mut active.costs;
        if let Some(answered) = costs.answered_ns {
            costs.wait_ns += timing.received_ns.saturating_sub(answered);
        }
        costs.parse_ns += timing.parse_ns;
        let t = crate::clock::now_ns();
        let chunks = active.transfer.feed(offset, bytes).map_err(|e| match e {
            transfer::FeedError::Chunk(_) => (ErrorCode::BadBundle, e.to_string()),
            _ => (ErrorCode::NoUpgrade, e.to_string()),
        });
        let checked = crate::clock::now_ns();
        active.costs.check_ns += checked - t;
        let tree_end = active.transfer.manifest().slot.tree_end;
        for c in chunks? {
            for (at, bytes) in c.placed() {
                match c.part {
                    Part::Uki => esp::write_staged(&active.staging, at, bytes),
                    Part::Slot => active.device.write_part(tree_end, at, bytes),
                }
                .map_err(failed)?;
            }
        }
        let written = crate::clock::now_ns();
        active.costs.write_ns += written - checked;
        active.costs.answered_ns = Some(written);
        if !active.transfer.complete() {
            let next = active.transfer.next_offset();
            return Ok(DataOutcome::Progress(progress_json(active, next)));
        }
        let Some(active) = self.active.take() else {
            return Err((ErrorCode::Internal, "the upgrade vanished".into()));
        };
        self.stage(active)
    }

    /// After the last byte: every check again, end to end, then the entry.
    fn stage(&mut self, active: Active) -> Result<DataOutcome, Refusal> {
        let disk = self.disk()?;
        let m = active.transfer.manifest();
        let bad = |why: String| {
            let _ = active.device.clear();
            (ErrorCode::BadBundle, why)
        };
        // Every chunk matched the signed manifest before it was written; what
        // is checked now is what the disk and the ESP hold. (A running SHA-256
        // of each part would be a second hash pass over every byte, the
        // largest cost of a transfer on an emulated node, and would check
        // what was received, not what was written.)
        let t = crate::clock::now_ns();
        let verity = active.device.verify(&disk.key).map_err(bad)?;
        let mut costs = active.costs.clone();
        costs.verify_ns = crate::clock::now_ns() - t;
        if verity.root_hash != m.slot.root_hash {
            return Err(bad(format!(
                "the slot's own manifest names root hash {}, the bundle {}",
                hex::encode(&verity.root_hash),
                hex::encode(&m.slot.root_hash)
            )));
        }
        let uki = disk.esp.staged_sha256(active.target).map_err(failed)?;
        if uki != m.uki.sha256 {
            return Err(bad("the UKI read back from the ESP does not match its SHA-256".into()));
        }
        let entries = disk.entries().map_err(failed)?;
        let entry = BootEntry::trial_above(active.target, &entries);
        disk.esp.promote(&entry).map_err(failed)?;
        log::warn!(
            "upgrade {}: {} {} staged as {} ({} tries){}",
            active.id,
            active.target.label(),
            m.version,
            entry.file_name(),
            boot_entry::TRIAL_TRIES,
            if active.terms.reboot {
                "; rebooting into it"
            } else {
                "; it boots at the next reboot"
            }
        );
        let record = UpgradeRecord {
            target: active.target.label().into(),
            version: m.version.clone(),
            version_seq: m.version_seq,
            from_version: disk.booted_version.clone(),
            health_window_ms: active.terms.health_window_ms,
            outcome: UpgradeOutcome::Staged,
        };
        self.notice = None;
        Ok(DataOutcome::Staged {
            result: json!({
                "upgrade": active.id,
                "staged": {
                    "slot": active.target.label(),
                    "version": m.version,
                    "version_seq": m.version_seq,
                    "entry": entry.file_name(),
                    "tries": boot_entry::TRIAL_TRIES,
                },
                "rebooting": active.terms.reboot,
                "costs_ms": costs.to_json(),
            }),
            record,
            reboot: active.terms.reboot,
        })
    }

    /// `rollback`: the other slot becomes the default, if it holds an image
    /// that was not marked bad and that verifies end to end.
    pub fn rollback(&mut self) -> Result<Value, Refusal> {
        let disk = self.disk()?;
        if self.active.is_some() {
            return Err((
                ErrorCode::RollbackRefused,
                "an upgrade is being written to the other slot".into(),
            ));
        }
        let other = disk.booted.other();
        let refuse = |why: String| {
            (
                ErrorCode::RollbackRefused,
                format!("cannot roll back to {}: {why}", other.label()),
            )
        };
        let entries = disk.entries().map_err(failed)?;
        let Some(entry) = boot_entry::of_slot(&entries, other).first().copied() else {
            return Err(refuse("it has no boot entry (empty)".into()));
        };
        if entry.exhausted() {
            return Err(refuse(format!(
                "it is marked bad ({} is out of tries)",
                entry.file_name()
            )));
        }
        let device = SlotDevice::open(disk.slot_path(other), false).map_err(refuse)?;
        let verity = device.verify(&disk.key).map_err(refuse)?;
        let version = device.contents(&disk.key).version().unwrap_or("?").to_string();
        let to = BootEntry {
            priority: boot_entry::top_priority(&entries) + 1,
            ..entry.blessed()
        };
        disk.esp.rename(&entry.file_name(), &to.file_name()).map_err(failed)?;
        log::warn!(
            "rollback: {} {version} is the default ({}); rebooting into it",
            other.label(),
            to.file_name()
        );
        Ok(json!({
            "rollback": {"slot": other.label(), "version": version, "entry": to.file_name(),
                          "root_hash": hex::encode(&verity.root_hash)},
        }))
    }

    /// The health window of a trial boot.
    pub fn tick(&mut self, now: u64, config: &ConfigHealth, services: &[ServiceView]) -> Option<TrialAction> {
        let trial = self.trial.as_mut()?;
        match trial.watch.check(now, config, services) {
            Verdict::Wait => None,
            Verdict::Unhealthy(why) => {
                let left = trial.entry.tries.map_or(0, |t| t.left);
                let line = format!("upgrade: trial of this slot failed: {why}; rebooting ({left} tries left)");
                log::error!("{line}");
                self.notice = Some(line);
                self.trial = None;
                Some(TrialAction::Reboot(why))
            }
            Verdict::Healthy => {
                let entry = trial.entry;
                let version_seq = trial.version_seq;
                self.trial = None;
                let Ok(disk) = self.disk.as_ref() else { return None };
                // The entry may have been renamed by the loader's count since
                // it was read: find this slot's entry again.
                let found = disk.esp.entries().ok().and_then(|e| {
                    e.into_iter()
                        .find(|(_, x)| x.slot == entry.slot && x.priority == entry.priority)
                });
                let Some((name, found)) = found else {
                    log::error!(
                        "upgrade: the trial entry of {} is gone; not blessed",
                        entry.slot.label()
                    );
                    return None;
                };
                match disk.esp.rename(&name, &found.blessed().file_name()) {
                    Ok(()) => {
                        let line = format!(
                            "upgrade: {} {} blessed after its health window ({})",
                            entry.slot.label(),
                            disk.booted_version,
                            found.blessed().file_name()
                        );
                        log::warn!("{line}");
                        self.notice = Some(line);
                        Some(TrialAction::Blessed { version_seq })
                    }
                    Err(why) => {
                        log::error!("upgrade: cannot bless: {why}");
                        None
                    }
                }
            }
        }
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.trial.as_ref().map(|t| t.watch.next_deadline())
    }

    pub fn status(&self, record: &StateRecord) -> Value {
        let disk = match &self.disk {
            Ok(d) => d,
            Err(why) => return json!({"available": false, "why_not": why, "last": record_json(record)}),
        };
        let entries = disk.entries().unwrap_or_default();
        let next = boot_entry::next_boot(&entries);
        let slots: Vec<Value> = SlotId::ALL
            .into_iter()
            .map(|slot| {
                let contents = SlotDevice::open(disk.slot_path(slot), false)
                    .map(|d| d.contents(&disk.key))
                    .unwrap_or_else(SlotContents::Invalid);
                let entry = boot_entry::of_slot(&entries, slot).first().copied();
                let writing = self.active.as_ref().is_some_and(|a| a.target == slot);
                slot_json(slot, &contents, entry, next, slot == disk.booted, writing)
            })
            .collect();
        json!({
            "available": true,
            "booted": disk.booted.label(),
            "slots": slots,
            "transfer": self.active.as_ref().map(|a| json!({
                "upgrade": a.id,
                "target": a.target.label(),
                "received": a.transfer.next_offset(),
                "total": a.transfer.total(),
            })),
            "trial": self.trial.as_ref().map(|t| json!({
                "entry": t.entry.file_name(),
                "healthy_by_ms": t.watch.next_deadline() / 1_000_000,
            })),
            "notice": self.notice,
            "last": record_json(record),
        })
    }
}

fn usable(disk: &Result<Disk, String>) -> Result<&Disk, Refusal> {
    disk.as_ref().map_err(|why| (ErrorCode::NotUpgradable, why.clone()))
}

fn open_disk(places: &Places, boot_report: Option<&Value>) -> Result<Disk, String> {
    let verity = boot_report
        .and_then(|r| r.get("image"))
        .and_then(|i| i.get("verity"))
        .filter(|v| !v.is_null())
        .ok_or("this node did not boot from a disk slot (no verity root in the boot report)")?;
    let label = verity.get("partition").and_then(Value::as_str).unwrap_or("");
    let booted =
        SlotId::from_label(label).ok_or_else(|| format!("the booted partition {label:?} is not ROOT-A or ROOT-B"))?;
    let booted_version = boot_report
        .and_then(|r| r["image"]["version"].as_str())
        .unwrap_or("?")
        .to_string();
    let key_bytes = std::fs::read(&places.image_key).map_err(|e| {
        format!(
            "no image key to check bundles with: {}: {e}",
            places.image_key.display()
        )
    })?;
    let key = PublicKey::parse(&key_bytes).map_err(|e| format!("{}: {e}", places.image_key.display()))?;
    let find = |label: &str| {
        crate::persist::device::find_partition(&places.class_block, &places.dev, label)
            .ok_or_else(|| format!("no partition labelled {label}"))
    };
    let slots = [find(SlotId::A.label())?, find(SlotId::B.label())?];
    let esp = match &places.esp_dir {
        Some(dir) => Esp::at(dir),
        None => Esp::mount(&find("ESP")?, &places.esp_mount)?,
    };
    Ok(Disk {
        booted,
        booted_version,
        esp,
        slots,
        key,
    })
}

/// The target slot for `m`, if this node can take it now.
fn check_fits(disk: &Disk, m: &BundleManifest, on_trial: bool) -> Result<SlotId, Refusal> {
    let refuse = |why: String| Err((ErrorCode::NotUpgradable, why));
    let arch = if cfg!(target_arch = "aarch64") {
        "aarch64"
    } else {
        "x86_64"
    };
    if m.arch.name() != arch {
        return refuse(format!("the bundle is for {}, this node is {arch}", m.arch.name()));
    }
    let Some(target) = SlotId::from_label(&m.target) else {
        return refuse(format!("the bundle targets {:?}", m.target));
    };
    if target == disk.booted {
        return refuse(format!(
            "the bundle is built for {}, the slot this node runs from; build it for {} (make bundle BUNDLE_TARGET={})",
            m.target,
            disk.booted.other().label(),
            if disk.booted.other() == SlotId::A { "A" } else { "B" }
        ));
    }
    if on_trial {
        return refuse(format!(
            "{} is on trial: it is blessed after its health window, or falls back; upgrade after that",
            disk.booted.label()
        ));
    }
    Ok(target)
}

fn progress_json(a: &Active, next: u64) -> Value {
    json!({
        "upgrade": a.id,
        "target": a.target.label(),
        "version": a.transfer.manifest().version,
        "total": a.transfer.total(),
        "next": next,
        "costs_ms": a.costs.to_json(),
    })
}

fn slot_json(
    slot: SlotId,
    contents: &SlotContents,
    entry: Option<BootEntry>,
    next: Option<BootEntry>,
    booted: bool,
    writing: bool,
) -> Value {
    let default = entry.is_some() && entry == next;
    let state = match (contents, entry) {
        _ if writing => "writing".to_string(),
        (SlotContents::Empty, _) | (_, None) => "empty".to_string(),
        (SlotContents::Invalid(_), _) => "bad".to_string(),
        (_, Some(e)) if e.exhausted() => "bad".to_string(),
        (_, Some(e)) => {
            let mut words = Vec::new();
            if booted {
                words.push("booted".to_string());
            }
            if default {
                words.push("default".to_string());
            }
            if let Some(t) = e.tries {
                words.push(format!("trying, {} left", t.left));
            }
            if words.is_empty() {
                "installed".to_string()
            } else {
                words.join(", ")
            }
        }
    };
    json!({
        "slot": slot.label(),
        "state": state,
        "booted": booted,
        "default": default,
        "entry": entry.map(|e| e.file_name()),
        "tries_left": entry.and_then(|e| e.tries).map(|t| t.left),
        "version": contents.version(),
        "root_hash": contents.root_hash(),
        "problem": match contents { SlotContents::Invalid(why) => Some(why.clone()), _ => None },
    })
}

fn record_json(record: &StateRecord) -> Value {
    json!({
        "image_version_floor": record.image_version_floor,
        "upgrade": record.upgrade.as_ref().map(|u| json!({
            "target": u.target,
            "version": u.version,
            "version_seq": u.version_seq,
            "from_version": u.from_version,
            "outcome": u.outcome.as_str(),
        })),
    })
}

fn slot_index(slot: SlotId) -> usize {
    match slot {
        SlotId::A => 0,
        SlotId::B => 1,
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

fn failed(why: String) -> Refusal {
    (ErrorCode::ApplyFailed, why)
}
