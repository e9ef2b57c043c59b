//! Boot interactions as data: wait for console text, send bytes to the
//! provisioning socket, in order.

use crate::error::WaitError;
use crate::vm::Vm;
use std::fmt;
use std::io::{self, Write};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Wait for this console text, after the previous `Expect`'s match.
    Expect(String, Duration),
    /// Write these bytes to the provisioning channel.
    Send(Vec<u8>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    pub steps: Vec<Step>,
}

impl Script {
    pub fn new() -> Script {
        Script::default()
    }

    pub fn expect(mut self, needle: &str, timeout: Duration) -> Self {
        self.steps.push(Step::Expect(needle.to_string(), timeout));
        self
    }

    pub fn send(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.steps.push(Step::Send(bytes.into()));
        self
    }

    /// Runs the steps against `vm`'s console and `prov` (usually the
    /// stream from [`crate::connect_prov`]). The first `Expect` searches the
    /// whole console, each later one only what follows the previous match,
    /// so the same text can be expected twice.
    pub fn run(&self, vm: &Vm, prov: &mut dyn Write) -> Result<(), ScriptError> {
        let mut from = 0;
        for (index, step) in self.steps.iter().enumerate() {
            match step {
                Step::Expect(needle, timeout) => {
                    from = vm
                        .wait_for_console_after(needle, from, *timeout)
                        .map_err(|e| ScriptError::Expect { step: index, source: e })?;
                }
                Step::Send(bytes) => {
                    prov.write_all(bytes)
                        .and_then(|()| prov.flush())
                        .map_err(|e| ScriptError::Send {
                            step: index,
                            len: bytes.len(),
                            source: e,
                        })?
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
pub enum ScriptError {
    Expect { step: usize, source: WaitError },
    Send { step: usize, len: usize, source: io::Error },
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScriptError::Expect { step, source } => {
                write!(f, "script step {step} (expect): {source}")
            }
            ScriptError::Send { step, len, source } => write!(
                f,
                "script step {step} (send {len} bytes to the provisioning socket): {source}"
            ),
        }
    }
}

impl std::error::Error for ScriptError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ScriptError::Expect { source, .. } => Some(source),
            ScriptError::Send { source, .. } => Some(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_keeps_step_order() {
        let t = Duration::from_secs(1);
        let script = Script::new().expect("login:", t).send("root\n").expect("#", t);
        assert_eq!(
            script.steps,
            vec![
                Step::Expect("login:".into(), t),
                Step::Send(b"root\n".to_vec()),
                Step::Expect("#".into(), t),
            ]
        );
    }
}
