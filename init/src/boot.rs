//! The boot's bookkeeping: each step named, timed and logged, and the one
//! fatal path every failure ends in.

use crate::boot_params::OnError;
use crate::boot_report::StepTiming;
use crate::shutdown::{self, Action};
use crate::uptime;
use std::fmt::Display;
use std::time::Duration;

pub struct Boot {
    pub init_start: Duration,
    pub steps: Vec<StepTiming>,
    pub on_error: OnError,
    pub error_delay: Duration,
}

impl Boot {
    pub fn new(init_start: Duration) -> Self {
        Boot {
            init_start,
            steps: Vec::new(),
            on_error: OnError::Reboot,
            error_delay: Duration::from_secs(10),
        }
    }

    /// Runs one step. Its failure is fatal: the cause is printed on one line
    /// and the node halts, reboots or powers off as `basalt.on_error` says.
    pub fn step<T, E: Display>(&mut self, name: &'static str, f: impl FnOnce() -> Result<T, E>) -> T {
        let start = uptime::now();
        let result = f();
        let duration = uptime::now().saturating_sub(start);
        match result {
            Ok(v) => {
                log::info!("step {name}: done in {:.1} ms", duration.as_secs_f64() * 1e3);
                self.steps.push(StepTiming { name, start, duration });
                v
            }
            Err(e) => self.fatal(name, &e),
        }
    }

    pub fn fatal(&self, step: &str, cause: &dyn Display) -> ! {
        fatal(step, cause, self.on_error, self.error_delay)
    }
}

/// Prints `FATAL: step <step>: <cause>` and acts on the policy. Never returns.
pub fn fatal(step: &str, cause: &dyn Display, policy: OnError, delay: Duration) -> ! {
    // Flatten to one line whatever the cause's Display did.
    let cause = cause.to_string().replace('\n', " ");
    log::error!("FATAL: step {step}: {cause}");
    let action = match policy {
        OnError::Reboot => Action::Reboot,
        OnError::Poweroff => Action::Poweroff,
        OnError::Halt => Action::Halt,
    };
    if !delay.is_zero() {
        log::error!(
            "{} in {} s (basalt.on_error={})",
            policy.as_str(),
            delay.as_secs(),
            policy.as_str()
        );
        std::thread::sleep(delay);
    }
    nix::unistd::sync();
    shutdown::finish(action)
}
