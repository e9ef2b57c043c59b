//! Signed commands: `reboot`, `poweroff`, `reset-var` (empty /var, reboot),
//! and `confirm` (of a config on trial).
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
}

impl CommandKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Reboot => "reboot",
            CommandKind::Poweroff => "poweroff",
            CommandKind::Confirm => "confirm",
            CommandKind::ResetVar => "reset-var",
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

    /// Reads a command payload that must be of kind `expected`.
    pub fn parse(payload: &[u8], expected: CommandKind) -> Result<Command, CommandError> {
        let doc = json::parse_strict(payload)?;
        let kind = payload_kind(&doc)?;
        if kind != expected.as_str() {
            return Err(CommandError::WrongKind {
                expected: expected.as_str(),
                found: kind.into(),
            });
        }
        let f = Fields::new(&doc, "$", &["kind", "version", "node", "nonce"])?;
        let version = f.u64("version")?;
        if version != COMMAND_VERSION {
            let what = format!("command version {version} is not supported (this build reads {COMMAND_VERSION})");
            return Err(JsonError::new("$.version", what).into());
        }
        Ok(Command {
            kind: expected,
            node: f.str("node")?.into(),
            nonce: f.str("nonce")?.into(),
        })
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
