//! Signed commands: `reboot`, `poweroff`, `reset-var` (empty /var, reboot),
//! `confirm` (of a config on trial), `upgrade` (install an update bundle into
//! the inactive slot) and `rollback` (boot the other slot).
//!
//! A command payload is bound to one node and to one challenge nonce that
//! node handed out in a `status` response:
//!
//! ```json
//! {"kind": "poweroff", "version": 1, "node": "<node id>", "nonce": "<nonce from status>"}
//! ```
//!
//! The agent consumes the nonce when it accepts the command, so the same
//! signed command cannot be replayed, on this node or any other.

use crate::envelope::payload_kind;
use crate::json::{self, Fields, JsonError};
use crate::text::clip;
use serde_json::json;

/// The only command payload version this build reads or writes.
pub const COMMAND_VERSION: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    Reboot,
    Poweroff,
    Confirm,
    /// Stop every service, empty /var, reboot: `basaltctl reset --var`.
    ResetVar,
    /// Install one update bundle, named by its manifest's SHA-256
    /// ([`UpgradeTerms`]): `basaltctl upgrade`.
    Upgrade,
    /// Make the other slot the default and reboot: `basaltctl rollback`.
    Rollback,
}

impl CommandKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Reboot => "reboot",
            CommandKind::Poweroff => "poweroff",
            CommandKind::Confirm => "confirm",
            CommandKind::ResetVar => "reset-var",
            CommandKind::Upgrade => "upgrade",
            CommandKind::Rollback => "rollback",
        }
    }
}

/// A command, as signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub kind: CommandKind,
    pub node: String,
    pub nonce: String,
}

/// What a signed `upgrade` command allows, beyond node and nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpgradeTerms {
    /// SHA-256 of the bundle manifest's exact bytes: the signature covers
    /// this one bundle and no other.
    pub bundle: [u8; 32],
    /// Reboot into the new slot once it is staged.
    pub reboot: bool,
    /// Install even below the node's image version floor.
    pub allow_downgrade: bool,
    /// How long the new slot must stay healthy before it is blessed.
    pub health_window_ms: u64,
}

/// The health window when a request names none: 60 s.
pub const DEFAULT_HEALTH_WINDOW_MS: u64 = 60_000;
/// Bounds on the health window: 1 s to 1 h.
pub const HEALTH_WINDOW_MS: std::ops::RangeInclusive<u64> = 1_000..=3_600_000;

/// Why a (verified) command payload was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// The payload is another kind of signed document.
    WrongKind {
        expected: &'static str,
        found: String,
    },
    Json(JsonError),
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::WrongKind { expected, found } => {
                write!(f, "signed payload is of kind {:?}, expected {expected:?}", clip(found))
            }
            CommandError::Json(e) => write!(f, "command {e}"),
        }
    }
}

impl From<JsonError> for CommandError {
    fn from(e: JsonError) -> Self {
        CommandError::Json(e)
    }
}

impl Command {
    /// The exact bytes to sign.
    pub fn to_payload(&self) -> Vec<u8> {
        let doc = json!({
            "kind": self.kind.as_str(),
            "version": COMMAND_VERSION,
            "node": self.node,
            "nonce": self.nonce,
        });
        serde_json::to_vec(&doc).unwrap_or_default()
    }

    /// The exact bytes to sign for an `upgrade` with these terms.
    pub fn to_upgrade_payload(&self, terms: &UpgradeTerms) -> Vec<u8> {
        let doc = json!({
            "kind": CommandKind::Upgrade.as_str(),
            "version": COMMAND_VERSION,
            "node": self.node,
            "nonce": self.nonce,
            "bundle": crate::hex::encode(&terms.bundle),
            "reboot": terms.reboot,
            "allow_downgrade": terms.allow_downgrade,
            "health_window_ms": terms.health_window_ms,
        });
        serde_json::to_vec(&doc).unwrap_or_default()
    }

    /// Reads a signed `upgrade` command and its terms.
    pub fn parse_upgrade(payload: &[u8]) -> Result<(Command, UpgradeTerms), CommandError> {
        let doc = Self::document(payload, CommandKind::Upgrade)?;
        let allowed = [
            "kind",
            "version",
            "node",
            "nonce",
            "bundle",
            "reboot",
            "allow_downgrade",
            "health_window_ms",
        ];
        let f = Fields::new(&doc, "$", &allowed)?;
        let cmd = Self::common(&f, CommandKind::Upgrade)?;
        let bundle = crate::hex::decode_array::<32>(f.str("bundle")?)
            .ok_or_else(|| JsonError::new("$.bundle", "expected 64 hex digits (SHA-256 of the bundle manifest)"))?;
        let health_window_ms = f.opt_u64("health_window_ms")?.unwrap_or(DEFAULT_HEALTH_WINDOW_MS);
        if !HEALTH_WINDOW_MS.contains(&health_window_ms) {
            let what = format!(
                "the health window is {} to {} ms",
                HEALTH_WINDOW_MS.start(),
                HEALTH_WINDOW_MS.end()
            );
            return Err(JsonError::new("$.health_window_ms", what).into());
        }
        let terms = UpgradeTerms {
            bundle,
            reboot: f.bool("reboot")?.unwrap_or(false),
            allow_downgrade: f.bool("allow_downgrade")?.unwrap_or(false),
            health_window_ms,
        };
        Ok((cmd, terms))
    }

    fn document(payload: &[u8], expected: CommandKind) -> Result<serde_json::Value, CommandError> {
        let doc = json::parse_strict(payload)?;
        let kind = payload_kind(&doc)?;
        if kind != expected.as_str() {
            return Err(CommandError::WrongKind {
                expected: expected.as_str(),
                found: kind.into(),
            });
        }
        Ok(doc)
    }

    fn common(f: &Fields, kind: CommandKind) -> Result<Command, CommandError> {
        let version = f.u64("version")?;
        if version != COMMAND_VERSION {
            let what = format!("command version {version} is not supported (this build reads {COMMAND_VERSION})");
            return Err(JsonError::new("$.version", what).into());
        }
        Ok(Command {
            kind,
            node: f.str("node")?.into(),
            nonce: f.str("nonce")?.into(),
        })
    }

    /// Reads a command payload that must be of kind `expected` (not
    /// `upgrade`, which has terms: [`Command::parse_upgrade`]).
    pub fn parse(payload: &[u8], expected: CommandKind) -> Result<Command, CommandError> {
        let doc = Self::document(payload, expected)?;
        let f = Fields::new(&doc, "$", &["kind", "version", "node", "nonce"])?;
        Self::common(&f, expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for kind in [
            CommandKind::Reboot,
            CommandKind::Poweroff,
            CommandKind::Confirm,
            CommandKind::ResetVar,
            CommandKind::Rollback,
        ] {
            let cmd = Command {
                kind,
                node: "n1".into(),
                nonce: "abcd".into(),
            };
            assert_eq!(Command::parse(&cmd.to_payload(), kind), Ok(cmd));
        }
    }

    #[test]
    fn upgrade_terms_round_trip_and_are_checked() {
        let cmd = Command {
            kind: CommandKind::Upgrade,
            node: "n1".into(),
            nonce: "abcd".into(),
        };
        let terms = UpgradeTerms {
            bundle: [7; 32],
            reboot: true,
            allow_downgrade: false,
            health_window_ms: 5_000,
        };
        assert_eq!(
            Command::parse_upgrade(&cmd.to_upgrade_payload(&terms)),
            Ok((cmd.clone(), terms))
        );
        // A plain command of kind upgrade lacks the bundle; a reboot is no upgrade.
        let plain = Command {
            kind: CommandKind::Upgrade,
            ..cmd.clone()
        };
        let short_window = format!(
            r#"{{"kind":"upgrade","version":1,"node":"n","nonce":"x","bundle":"{}","health_window_ms":10}}"#,
            "ab".repeat(32)
        );
        let plain = plain.to_payload();
        let cases: &[(&[u8], &str)] = &[
            (&plain, "command $.bundle: missing field"),
            (
                br#"{"kind":"upgrade","version":1,"node":"n","nonce":"x","bundle":"zz"}"#,
                "command $.bundle: expected 64 hex digits",
            ),
            (
                br#"{"kind":"reboot","version":1,"node":"n","nonce":"x"}"#,
                "signed payload is of kind \"reboot\", expected \"upgrade\"",
            ),
            (
                short_window.as_bytes(),
                "command $.health_window_ms: the health window is 1000 to 3600000 ms",
            ),
        ];
        for (payload, want) in cases {
            let err = Command::parse_upgrade(payload).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
        }
        // An upgrade is never accepted where a plain command is expected.
        let err = Command::parse(&cmd.to_upgrade_payload(&terms), CommandKind::Reboot).unwrap_err();
        assert!(matches!(err, CommandError::WrongKind { .. }));
    }

    #[test]
    fn rejects() {
        let cases: &[(&str, CommandKind, &str)] = &[
            (
                r#"{"kind":"reboot","version":1,"node":"n","nonce":"x"}"#,
                CommandKind::Poweroff,
                "signed payload is of kind \"reboot\", expected \"poweroff\"",
            ),
            (
                r#"{"kind":"config","version":1,"generation":1}"#,
                CommandKind::Reboot,
                "signed payload is of kind \"config\", expected \"reboot\"",
            ),
            (
                r#"{"version":1,"node":"n","nonce":"x"}"#,
                CommandKind::Reboot,
                "command $.kind: missing field",
            ),
            (
                r#"{"kind":"reboot","version":2,"node":"n","nonce":"x"}"#,
                CommandKind::Reboot,
                "command $.version: command version 2 is not supported",
            ),
            (
                r#"{"kind":"reboot","version":1,"node":"n"}"#,
                CommandKind::Reboot,
                "command $.nonce: missing field",
            ),
            (
                r#"{"kind":"reboot","version":1,"node":"n","nonce":"x","at":1}"#,
                CommandKind::Reboot,
                "command $.at: unknown field",
            ),
            ("not json", CommandKind::Reboot, "command $: malformed JSON"),
        ];
        for (text, kind, want) in cases {
            let err = Command::parse(text.as_bytes(), *kind).unwrap_err().to_string();
            assert!(err.starts_with(want), "{text}: {err}");
        }
    }
}
