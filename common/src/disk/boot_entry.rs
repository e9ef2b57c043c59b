//! The names of the UKIs in the ESP's `/EFI/Linux`, which are the whole of
//! basalt's boot selection: no EFI variable and no pinned default.
//!
//! ```text
//! basalt-<priority>-<slot>.efi            blessed: boots whenever it sorts first
//! basalt-<priority>-<slot>+<left>.efi     on trial, <left> tries to go
//! basalt-<priority>-<slot>+<left>-<done>.efi
//! basalt-<slot>.efi.new                   being written: the loader ignores it
//! ```
//!
//! systemd-boot 252 sorts type #2 entries that have no `ID=` in their
//! os-release by file name, newest version first (`strverscmp`), with
//! entries that have no tries left (`+0`) after all others, and boots the
//! first. Every loader decrement renames `+3` to `+2-1` and so on. So the
//! agent picks what boots next by priority alone: a new entry gets the
//! highest priority on the ESP plus one. [`next_boot`] is that rule.

/// The tries a new trial entry gets: RAUC's `BOOT_x_LEFT=3`, systemd's `+3`.
pub const TRIAL_TRIES: u32 = 3;

/// A root slot, by the letter in its names and PARTLABEL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SlotId {
    A,
    B,
}

impl SlotId {
    pub const ALL: [SlotId; 2] = [SlotId::A, SlotId::B];

    /// `ROOT-A` or `ROOT-B` (docs/disk-layout.md).
    pub fn label(self) -> &'static str {
        match self {
            SlotId::A => "ROOT-A",
            SlotId::B => "ROOT-B",
        }
    }

    pub fn from_label(label: &str) -> Option<SlotId> {
        SlotId::ALL.into_iter().find(|s| s.label() == label)
    }

    fn letter(self) -> char {
        match self {
            SlotId::A => 'a',
            SlotId::B => 'b',
        }
    }

    pub fn other(self) -> SlotId {
        match self {
            SlotId::A => SlotId::B,
            SlotId::B => SlotId::A,
        }
    }

    /// Where the UKI is written before it is checked: not a `.efi`, so the
    /// loader never picks it.
    pub fn staging_name(self) -> String {
        format!("basalt-{}.efi.new", self.letter())
    }
}

/// systemd-boot's counter: `+LEFT` or `+LEFT-DONE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tries {
    pub left: u32,
    pub done: u32,
}

/// One UKI in `/EFI/Linux`, as its name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootEntry {
    pub priority: u64,
    pub slot: SlotId,
    /// `None`: blessed (no counter).
    pub tries: Option<Tries>,
}

impl BootEntry {
    /// A new trial entry above every entry in `existing`.
    pub fn trial_above(slot: SlotId, existing: &[BootEntry]) -> BootEntry {
        BootEntry {
            priority: top_priority(existing) + 1,
            slot,
            tries: Some(Tries {
                left: TRIAL_TRIES,
                done: 0,
            }),
        }
    }

    /// The name systemd-boot reads this entry from.
    pub fn file_name(&self) -> String {
        let base = format!("basalt-{}-{}", self.priority, self.slot.letter());
        match self.tries {
            None => format!("{base}.efi"),
            Some(Tries { left, done: 0 }) => format!("{base}+{left}.efi"),
            Some(Tries { left, done }) => format!("{base}+{left}-{done}.efi"),
        }
    }

    /// The same entry without its counter: what blessing renames it to.
    pub fn blessed(&self) -> BootEntry {
        BootEntry { tries: None, ..*self }
    }

    /// Tried and out of tries: the loader will not pick it while another
    /// entry has tries left (the slot is bad).
    pub fn exhausted(&self) -> bool {
        matches!(self.tries, Some(Tries { left: 0, .. }))
    }

    /// Reads a name; `None` for anything that is not one of ours (the
    /// ESP's other files are never touched). Case-insensitive, as FAT is.
    pub fn parse(name: &str) -> Option<BootEntry> {
        let lower = name.to_ascii_lowercase();
        let stem = lower.strip_prefix("basalt-")?.strip_suffix(".efi")?;
        let (head, counter) = match stem.split_once('+') {
            Some((head, counter)) => (head, Some(counter)),
            None => (stem, None),
        };
        let (priority, letter) = head.split_once('-')?;
        let slot = match letter {
            "a" => SlotId::A,
            "b" => SlotId::B,
            _ => return None,
        };
        let tries = match counter {
            None => None,
            Some(c) => {
                let (left, done) = c.split_once('-').unwrap_or((c, "0"));
                Some(Tries {
                    left: number(left)?.try_into().ok()?,
                    done: number(done)?.try_into().ok()?,
                })
            }
        };
        Some(BootEntry {
            priority: number(priority)?,
            slot,
            tries,
        })
    }
}

/// Decimal digits only, no sign, no leading zero, at most 18 digits.
fn number(text: &str) -> Option<u64> {
    let plain = !text.is_empty() && text.len() <= 18 && text.bytes().all(|b| b.is_ascii_digit());
    (plain && (text == "0" || !text.starts_with('0'))).then(|| text.parse().ok())?
}

/// The highest priority among `entries` (0 when there are none).
pub fn top_priority(entries: &[BootEntry]) -> u64 {
    entries.iter().map(|e| e.priority).max().unwrap_or(0)
}

/// The entry systemd-boot boots when nothing else is said: those with tries
/// left (or no counter) before those without, then the highest priority,
/// then slot b before a (the loader compares the whole name).
pub fn next_boot(entries: &[BootEntry]) -> Option<BootEntry> {
    entries
        .iter()
        .copied()
        .max_by_key(|e| (!e.exhausted(), e.priority, e.slot, e.tries.map_or(u32::MAX, |t| t.left)))
}

/// The entries of one slot, highest priority first.
pub fn of_slot(entries: &[BootEntry], slot: SlotId) -> Vec<BootEntry> {
    let mut mine: Vec<BootEntry> = entries.iter().copied().filter(|e| e.slot == slot).collect();
    mine.sort_by_key(|e| std::cmp::Reverse(e.priority));
    mine
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(priority: u64, slot: SlotId, tries: Option<(u32, u32)>) -> BootEntry {
        BootEntry {
            priority,
            slot,
            tries: tries.map(|(left, done)| Tries { left, done }),
        }
    }

    #[test]
    fn names_round_trip() {
        let cases = [
            ("basalt-1-a.efi", entry(1, SlotId::A, None)),
            ("basalt-2-b+3.efi", entry(2, SlotId::B, Some((3, 0)))),
            ("basalt-2-b+2-1.efi", entry(2, SlotId::B, Some((2, 1)))),
            ("basalt-12-a+0-3.efi", entry(12, SlotId::A, Some((0, 3)))),
        ];
        for (name, want) in cases {
            assert_eq!(BootEntry::parse(name), Some(want), "{name}");
            assert_eq!(want.file_name(), name);
        }
        assert_eq!(BootEntry::parse("BASALT-1-A.EFI"), Some(entry(1, SlotId::A, None)));
    }

    #[test]
    fn foreign_names_are_not_ours() {
        for name in [
            "basalt-a.efi",
            "basalt-b.efi.new",
            "basalt-1-c.efi",
            "basalt--a.efi",
            "basalt-01-a.efi",
            "basalt-1-a+.efi",
            "basalt-1-a+x.efi",
            "basalt-1-a+1-2-3.efi",
            "basalt-99999999999999999999-a.efi",
            "basalt-1-a+99999999999.efi",
            "linux.efi",
            "basalt-1-a.conf",
        ] {
            assert_eq!(BootEntry::parse(name), None, "{name}");
        }
    }

    #[test]
    fn the_loader_boots_the_highest_priority_with_tries_left() {
        let a = entry(1, SlotId::A, None);
        let trial = |left, done| entry(2, SlotId::B, Some((left, done)));
        let cases: &[(&[BootEntry], Option<BootEntry>)] = &[
            (&[], None),
            (&[a], Some(a)),
            (&[a, trial(3, 0)], Some(trial(3, 0))),
            (&[a, trial(1, 2)], Some(trial(1, 2))),
            // Out of tries: back to the old slot (the fallback).
            (&[a, trial(0, 3)], Some(a)),
            // Blessed B above A.
            (&[a, entry(2, SlotId::B, None)], Some(entry(2, SlotId::B, None))),
            // A rollback: A renamed above B.
            (
                &[entry(3, SlotId::A, None), entry(2, SlotId::B, None)],
                Some(entry(3, SlotId::A, None)),
            ),
            // Nothing else left: the loader still boots an exhausted entry.
            (&[trial(0, 3)], Some(trial(0, 3))),
        ];
        for (entries, want) in cases {
            assert_eq!(next_boot(entries), *want, "{entries:?}");
        }
    }

    #[test]
    fn a_new_trial_goes_above_everything() {
        let existing = [entry(4, SlotId::A, None), entry(2, SlotId::B, Some((0, 3)))];
        let t = BootEntry::trial_above(SlotId::B, &existing);
        assert_eq!(t.file_name(), "basalt-5-b+3.efi");
        assert_eq!(t.blessed().file_name(), "basalt-5-b.efi");
        assert_eq!(BootEntry::trial_above(SlotId::A, &[]).file_name(), "basalt-1-a+3.efi");
        assert_eq!(of_slot(&existing, SlotId::B), vec![existing[1]]);
        assert_eq!(SlotId::from_label("ROOT-B"), Some(SlotId::B));
        assert_eq!(SlotId::B.staging_name(), "basalt-b.efi.new");
    }
}
