//! Whether a slot on trial has earned its bless: the persisted config
//! re-applied, and every service (kubelet first among them) ran for the
//! whole window without an exit. Pure: the agent passes in what it sees.

/// How long services may take to all be running, beyond the window, before
/// the trial counts as failed.
pub const START_GRACE_NS: u64 = 120_000_000_000;

/// One service, as health needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceView<'a> {
    pub name: &'a str,
    pub running: bool,
    /// Exited: backing off, or down for good.
    pub exited: bool,
    pub restarts: u32,
}

/// What became of the persisted config this boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigHealth {
    /// Re-applied from STATE.
    Applied,
    /// STATE holds none: nothing to re-apply (the node was not provisioned).
    NoneStored,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Wait,
    Healthy,
    Unhealthy(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthWatch {
    window_ns: u64,
    deadline_ns: u64,
    /// Since when every service has been running, and their restart
    /// counts then.
    up: Option<(u64, Vec<u32>)>,
}

impl HealthWatch {
    pub fn new(now: u64, window_ms: u64) -> Self {
        let window_ns = window_ms * 1_000_000;
        HealthWatch {
            window_ns,
            deadline_ns: now + window_ns + START_GRACE_NS,
            up: None,
        }
    }

    /// When the verdict could next change without anything else happening.
    pub fn next_deadline(&self) -> u64 {
        match &self.up {
            Some((since, _)) => since + self.window_ns,
            None => self.deadline_ns,
        }
    }

    pub fn check(&mut self, now: u64, config: &ConfigHealth, services: &[ServiceView]) -> Verdict {
        if let ConfigHealth::Failed(why) = config {
            return Verdict::Unhealthy(format!("the persisted config did not apply: {why}"));
        }
        if let Some(s) = services.iter().find(|s| s.exited) {
            return Verdict::Unhealthy(format!("service {} exited", s.name));
        }
        if let Some((since, restarts)) = &self.up {
            let again = services
                .iter()
                .zip(restarts)
                .find(|(s, &before)| s.restarts > before || !s.running);
            if let Some((s, _)) = again {
                return Verdict::Unhealthy(format!("service {} stopped running during the health window", s.name));
            }
            if restarts.len() != services.len() {
                return Verdict::Unhealthy("the services changed during the health window".into());
            }
            return if now >= since + self.window_ns {
                Verdict::Healthy
            } else {
                Verdict::Wait
            };
        }
        if services.iter().all(|s| s.running) {
            self.up = Some((now, services.iter().map(|s| s.restarts).collect()));
            return if self.window_ns == 0 {
                Verdict::Healthy
            } else {
                Verdict::Wait
            };
        }
        if now >= self.deadline_ns {
            let waiting: Vec<&str> = services.iter().filter(|s| !s.running).map(|s| s.name).collect();
            return Verdict::Unhealthy(format!("services not running in time: {}", waiting.join(", ")));
        }
        Verdict::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn svc(name: &str, running: bool, exited: bool, restarts: u32) -> ServiceView<'_> {
        ServiceView {
            name,
            running,
            exited,
            restarts,
        }
    }

    #[test]
    fn healthy_after_a_whole_window_of_running() {
        let mut w = HealthWatch::new(0, 1000);
        let ok = ConfigHealth::Applied;
        assert_eq!(w.check(0, &ok, &[svc("kubelet", false, false, 0)]), Verdict::Wait);
        assert_eq!(w.check(100 * MS, &ok, &[svc("kubelet", true, false, 0)]), Verdict::Wait);
        assert_eq!(w.next_deadline(), 1100 * MS);
        assert_eq!(
            w.check(1099 * MS, &ok, &[svc("kubelet", true, false, 0)]),
            Verdict::Wait
        );
        assert_eq!(
            w.check(1100 * MS, &ok, &[svc("kubelet", true, false, 0)]),
            Verdict::Healthy
        );
        // An unprovisioned node has nothing to run: healthy after the window.
        let mut w = HealthWatch::new(0, 1000);
        assert_eq!(w.check(0, &ConfigHealth::NoneStored, &[]), Verdict::Wait);
        assert_eq!(w.check(1000 * MS, &ConfigHealth::NoneStored, &[]), Verdict::Healthy);
    }

    #[test]
    fn unhealthy_on_an_exit_a_restart_a_failed_config_or_no_start() {
        let ok = ConfigHealth::Applied;
        let mut w = HealthWatch::new(0, 1000);
        assert_eq!(
            w.check(0, &ok, &[svc("kubelet", false, true, 0)]),
            Verdict::Unhealthy("service kubelet exited".into())
        );
        let mut w = HealthWatch::new(0, 1000);
        w.check(0, &ok, &[svc("kubelet", true, false, 0)]);
        assert_eq!(
            w.check(500 * MS, &ok, &[svc("kubelet", true, false, 1)]),
            Verdict::Unhealthy("service kubelet stopped running during the health window".into())
        );
        let mut w = HealthWatch::new(0, 1000);
        assert_eq!(
            w.check(0, &ConfigHealth::Failed("bad signature".into()), &[]),
            Verdict::Unhealthy("the persisted config did not apply: bad signature".into())
        );
        let mut w = HealthWatch::new(0, 1000);
        let late = 1000 * MS + START_GRACE_NS;
        assert_eq!(
            w.check(
                late,
                &ok,
                &[svc("kubelet", true, false, 0), svc("app", false, false, 0)]
            ),
            Verdict::Unhealthy("services not running in time: app".into())
        );
    }
}
