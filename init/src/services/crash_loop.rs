//! Crash loops: at most `restarts` restarts of a service in any `window_s` seconds. The
//! restart that would exceed it is not made; the service's `crash_loop.action` is taken instead
//! (stop the node, failing closed, or give up on the service).
//!
//! ```toml
//! crash_loop = { restarts = 5, window_s = 300, action = "stop-node" }  # or "give-up"
//! crash_loop = "off"                                                    # restart without limit
//! ```
//!
//! Not set: [`DEFAULT`] for the services named `kubelet` and `containerd` (a node whose kubelet
//! or container runtime cannot run does nothing while looking alive), no limit for the others.
//! Only restarts count, so what counts follows `restart`: any exit for "always", an exit with a
//! non-zero status or by a signal for "on-failure" (and a restart whose exec failed).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What happens when a service restarts too often.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Fail closed: one `FATAL:` line, then the node powers off (or reboots, as
    /// `nacre.on-failure` on the measured command line says). No orderly shutdown.
    StopNode,
    /// Leave the service stopped (then its `on_exit` applies) and keep the node running.
    GiveUp,
}

impl Action {
    pub fn word(self) -> &'static str {
        match self {
            Action::StopNode => "stop-node",
            Action::GiveUp => "give-up",
        }
    }
}

/// At most `restarts` restarts in any `window_s` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub restarts: u32,
    pub window_s: u64,
    pub action: Action,
}

/// Bounds of the keys (what the counter keeps is at most `restarts` instants).
pub const MAX_RESTARTS: u32 = 1000;
pub const MAX_WINDOW_S: u64 = 7 * 24 * 3600;

/// The policy of `kubelet` and `containerd` when they do not set one.
pub const DEFAULT: Limit = Limit {
    restarts: 5,
    window_s: 300,
    action: Action::StopNode,
};

/// Services that get [`DEFAULT`] unless they say otherwise.
pub const DEFAULT_FOR: [&str; 2] = ["kubelet", "containerd"];

/// A service's `crash_loop` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Setting {
    /// Not set: [`DEFAULT`] for the names of [`DEFAULT_FOR`], otherwise no limit.
    #[default]
    Default,
    /// `"off"`: restarted without limit.
    Off,
    Limit(Limit),
}

impl Setting {
    /// The limit that applies to the service `name` (None: restarted without limit).
    pub fn effective(self, name: &str) -> Option<Limit> {
        match self {
            Setting::Default if DEFAULT_FOR.contains(&name) => Some(DEFAULT),
            Setting::Default | Setting::Off => None,
            Setting::Limit(l) => Some(l),
        }
    }

    pub fn is_set(self) -> bool {
        self != Setting::Default
    }
}

impl Limit {
    pub fn validate(&self) -> Result<(), String> {
        if self.restarts == 0 || self.restarts > MAX_RESTARTS {
            return Err(format!(
                "crash_loop.restarts must be 1 to {MAX_RESTARTS} (no restart at all: restart = \"never\")"
            ));
        }
        if self.window_s == 0 || self.window_s > MAX_WINDOW_S {
            return Err(format!("crash_loop.window_s must be 1 to {MAX_WINDOW_S}"));
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Setting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) if s == "off" => Ok(Setting::Off),
            toml::Value::String(s) => Err(D::Error::custom(format!(
                "crash_loop = {s:?}: the only word is \"off\"; a limit is {{ restarts = N, window_s = M, action = \"stop-node\" | \"give-up\" }}"
            ))),
            v @ toml::Value::Table(_) => v
                .try_into::<Limit>()
                .map(Setting::Limit)
                .map_err(|e| D::Error::custom(format!("crash_loop: {}", e.message()))),
            other => Err(D::Error::custom(format!(
                "crash_loop must be \"off\" or a table {{ restarts, window_s, action }}, not {}",
                other.type_str()
            ))),
        }
    }
}

/// The limit was reached: the exit that would have been restart `restarts + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tripped {
    /// Restarts made in the window (the limit).
    pub restarts: u32,
    /// From the first of them to now.
    pub within: Duration,
}

/// The restarts of one service in the last `window` (pure: the caller gives the time).
#[derive(Debug, Clone)]
pub struct Counter {
    limit: u32,
    window: Duration,
    /// When the restarts in the window were made, oldest first (at most `limit`).
    times: VecDeque<Instant>,
}

impl Counter {
    pub fn new(limit: &Limit) -> Self {
        Counter {
            limit: limit.restarts,
            window: Duration::from_secs(limit.window_s),
            times: VecDeque::new(),
        }
    }

    /// The service is to be restarted at `now`: Ok (the restart is counted) unless it would be
    /// more than the limit in the window ending at `now`; then it is not counted.
    pub fn restart(&mut self, now: Instant) -> Result<(), Tripped> {
        // A restart at least `window` ago is out of it (times never run backwards; if one
        // does, it stays in).
        while let Some(&t) = self.times.front() {
            match now.checked_duration_since(t) {
                Some(age) if age >= self.window => {
                    self.times.pop_front();
                }
                _ => break,
            }
        }
        if self.times.len() >= self.limit as usize {
            let within = self
                .times
                .front()
                .map_or(Duration::ZERO, |&t| now.saturating_duration_since(t));
            return Err(Tripped {
                restarts: self.times.len() as u32,
                within,
            });
        }
        self.times.push_back(now);
        Ok(())
    }

    /// Restarts counted in the window as of the last call.
    #[cfg(test)]
    pub fn counted(&self) -> usize {
        self.times.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(restarts: u32, window_s: u64) -> Limit {
        Limit {
            restarts,
            window_s,
            action: Action::StopNode,
        }
    }

    fn s(v: u64) -> Duration {
        Duration::from_secs(v)
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn the_restart_past_the_limit_trips_it() {
        let t0 = Instant::now();
        let mut c = Counter::new(&limit(3, 60));
        assert_eq!(c.restart(t0), Ok(()));
        assert_eq!(c.restart(t0 + ms(200)), Ok(()));
        assert_eq!(c.restart(t0 + ms(600)), Ok(()));
        assert_eq!(
            c.restart(t0 + ms(1400)),
            Err(Tripped {
                restarts: 3,
                within: ms(1400)
            })
        );
        // Not counted: asking again says the same.
        assert_eq!(c.counted(), 3);
        assert_eq!(
            c.restart(t0 + ms(1500)),
            Err(Tripped {
                restarts: 3,
                within: ms(1500)
            })
        );
    }

    #[test]
    fn the_window_slides() {
        let t0 = Instant::now();
        let mut c = Counter::new(&limit(3, 60));
        for at in [0, 30, 50] {
            assert_eq!(c.restart(t0 + s(at)), Ok(()), "{at}");
        }
        // 60 s after the first: it is out of the window (exactly M seconds old).
        assert_eq!(c.restart(t0 + s(60)), Ok(()));
        assert_eq!(c.counted(), 3);
        // 30, 50, 60 in the window at 89.
        assert_eq!(
            c.restart(t0 + s(89)),
            Err(Tripped {
                restarts: 3,
                within: s(59)
            })
        );
        // At 111 only 60 is left: two more fit.
        assert_eq!(c.restart(t0 + s(111)), Ok(()));
        assert_eq!(c.restart(t0 + s(112)), Ok(()));
        assert_eq!(c.counted(), 3);
        assert!(c.restart(t0 + s(113)).is_err());
    }

    #[test]
    fn slow_restarts_never_trip_it() {
        // One restart every 21 s with at most 3 in 60 s: at most 3 are ever in a window.
        let t0 = Instant::now();
        let mut c = Counter::new(&limit(3, 60));
        for k in 0..1000u64 {
            assert_eq!(c.restart(t0 + s(21 * k)), Ok(()), "{k}");
            assert!(c.counted() <= 3);
        }
        // Every 20 s: 0, 20, 40, and 60 is exactly M after 0 — still fine; a restart at 79
        // has 20, 40, 60 in its window.
        let mut c = Counter::new(&limit(3, 60));
        for at in [0, 20, 40, 60] {
            assert_eq!(c.restart(t0 + s(at)), Ok(()));
        }
        assert!(c.restart(t0 + s(79)).is_err());
    }

    #[test]
    fn a_limit_of_one() {
        let t0 = Instant::now();
        let mut c = Counter::new(&limit(1, 10));
        assert_eq!(c.restart(t0), Ok(()));
        assert_eq!(
            c.restart(t0 + ms(9999)),
            Err(Tripped {
                restarts: 1,
                within: ms(9999)
            })
        );
        assert_eq!(c.restart(t0 + s(10)), Ok(()));
    }

    #[test]
    fn time_running_backwards_is_in_the_window() {
        let t0 = Instant::now() + s(100);
        let mut c = Counter::new(&limit(2, 60));
        assert_eq!(c.restart(t0), Ok(()));
        assert_eq!(c.restart(t0 - s(5)), Ok(()));
        assert_eq!(
            c.restart(t0 - s(10)),
            Err(Tripped {
                restarts: 2,
                within: Duration::ZERO
            })
        );
    }

    #[test]
    fn defaults_by_name() {
        for n in ["kubelet", "containerd"] {
            assert_eq!(Setting::Default.effective(n), Some(DEFAULT));
            assert_eq!(Setting::Off.effective(n), None);
        }
        for n in ["payload", "kubelet-helper", "Kubelet", "logger"] {
            assert_eq!(Setting::Default.effective(n), None, "{n}");
        }
        let l = Limit {
            restarts: 2,
            window_s: 5,
            action: Action::GiveUp,
        };
        assert_eq!(Setting::Limit(l).effective("logger"), Some(l));
        assert_eq!(Setting::Limit(l).effective("kubelet"), Some(l));
        assert!(DEFAULT.validate().is_ok());
    }

    #[test]
    fn bounds() {
        assert!(limit(0, 60).validate().is_err());
        assert!(limit(MAX_RESTARTS + 1, 60).validate().is_err());
        assert!(limit(3, 0).validate().is_err());
        assert!(limit(3, MAX_WINDOW_S + 1).validate().is_err());
        assert!(limit(MAX_RESTARTS, MAX_WINDOW_S).validate().is_ok());
        // The largest window with Instants near their start: no overflow, no panic.
        let t0 = Instant::now();
        let mut c = Counter::new(&limit(1, MAX_WINDOW_S));
        assert_eq!(c.restart(t0), Ok(()));
        assert!(c.restart(t0 + s(1)).is_err());
    }
}
