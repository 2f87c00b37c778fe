//! The supervisor: PID 1's event loop once the node is up. One thread, one poll(2) over a
//! signalfd (SIGCHLD, the shutdown signals) and the services' output pipes; timers (readiness,
//! restart delays, stop timeouts) are the poll timeout.
//!
//! - Start: in dependency order, one at a time, each waited for until ready; a service not ready
//!   within its `ready_timeout_s` at boot stops the node (fail closed).
//! - Run: an exit is restarted per `restart` after an exponential delay; the restarted service is
//!   checked for readiness again (not ready in time: killed, and restarted again). A restart
//!   past the service's crash-loop limit ([`crash_loop`]) is not made: the node stops (FATAL)
//!   or the service is given up on, as its `crash_loop.action` says.
//! - Reap: every child, the services' and the orphans of the whole system (waitpid(-1)).
//! - Stop: on SIGTERM/SIGPWR (power off), SIGINT (ctrl-alt-del, reboot) or a service's `on_exit`:
//!   services in reverse start order (SIGTERM, SIGKILL after `stop_timeout_s`), then every other
//!   process, then [`shutdown::finish`].

use super::backoff::Backoff;
use super::crash_loop::{self, Counter, Limit};
use super::shutdown::{self, Action};
use super::spec::{Ready, Restart, ServiceSpec};
use crate::{fail, info, warn};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

/// How often a service that is starting is checked for readiness.
const READY_POLL: Duration = Duration::from_millis(20);
/// After the services: how long other processes get between SIGTERM and SIGKILL, then how long
/// the supervisor waits for them to be reaped.
const KILL_ALL_GRACE: Duration = Duration::from_secs(3);
const KILL_ALL_WAIT: Duration = Duration::from_secs(2);
/// A service killed with SIGKILL that is still not reaped after this is given up on.
const SIGKILL_WAIT: Duration = Duration::from_secs(5);
/// A line longer than this is cut into several.
const MAX_LINE: usize = 4096;

#[derive(Debug)]
enum State {
    /// Not started yet (the boot sequence has not reached it).
    Waiting,
    /// Running, not ready yet. `boot`: the first start, whose deadline stops the node.
    Starting {
        pid: Pid,
        started: Instant,
        deadline: Instant,
        boot: bool,
        killed: bool,
    },
    Running {
        pid: Pid,
        started: Instant,
    },
    /// Exited; starts again at `until`. `boot_deadline`: still in its first start.
    Backoff {
        until: Instant,
        boot_deadline: Option<Instant>,
    },
    Stopping {
        pid: Pid,
        deadline: Instant,
        killed: bool,
    },
    /// Exited and not restarted, or stopped.
    Done,
}

struct Service {
    spec: ServiceSpec,
    state: State,
    backoff: Backoff,
    restarts: u32,
    /// The crash-loop limit and the restarts counted against it (None: no limit).
    crash_loop: Option<(Limit, Counter)>,
}

/// One read end of a service's stdout+stderr pipe: lines go to the console as `[name] line`.
struct Stream {
    name: String,
    fd: OwnedFd,
    buf: Vec<u8>,
}

enum Phase {
    /// Stopping services from the last started to the first.
    Services,
    /// Every other process got SIGTERM (`killed`: SIGKILL too); waiting until none is left.
    Others { deadline: Instant, killed: bool },
}

struct Shutdown {
    action: Action,
    phase: Phase,
}

pub struct Supervisor {
    services: Vec<Service>,
    streams: Vec<Stream>,
    signals: SignalFd,
    /// The boot sequence: the index of the next service to start and wait for.
    boot_next: usize,
    shutdown: Option<Shutdown>,
    /// waitpid(-1) said there are no children at all.
    no_children: bool,
}

impl Supervisor {
    pub fn new(specs: Vec<ServiceSpec>, signals: SignalFd) -> Self {
        let services = specs
            .into_iter()
            .map(|spec| Service {
                crash_loop: spec.crash_loop_limit().map(|l| (l, Counter::new(&l))),
                backoff: Backoff::new(
                    Duration::from_millis(spec.restart_delay_ms),
                    Duration::from_millis(spec.restart_delay_max_ms),
                ),
                spec,
                state: State::Waiting,
                restarts: 0,
            })
            .collect();
        Supervisor {
            services,
            streams: Vec::new(),
            signals,
            boot_next: 0,
            shutdown: None,
            no_children: false,
        }
    }

    pub fn run(mut self) -> ! {
        if self.services.is_empty() {
            info!("no services configured: waiting for a shutdown request");
        }
        loop {
            let now = Instant::now();
            self.tick(now);
            if self.shutdown_complete() {
                break;
            }
            let timeout = self.next_wakeup(Instant::now());
            self.wait(timeout);
        }
        self.drain_streams();
        let action = self
            .shutdown
            .as_ref()
            .map_or(Action::Poweroff, |s| s.action);
        shutdown::finish(action)
    }

    // --- events -------------------------------------------------------------------------

    fn wait(&mut self, timeout: Option<Duration>) {
        let timeout = match timeout {
            None => PollTimeout::NONE,
            // Round up so a deadline is not polled for repeatedly just before it.
            Some(d) => PollTimeout::try_from(d.as_millis().saturating_add(1).min(60_000) as u32)
                .unwrap_or(PollTimeout::MAX),
        };
        let (sig_ready, ready_streams) = {
            let mut fds = Vec::with_capacity(1 + self.streams.len());
            fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
            for s in &self.streams {
                fds.push(PollFd::new(s.fd.as_fd(), PollFlags::POLLIN));
            }
            match nix::poll::poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    warn!("poll: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            let hit = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            let streams: Vec<usize> = fds[1..]
                .iter()
                .enumerate()
                .filter(|(_, f)| hit(f))
                .map(|(i, _)| i)
                .collect();
            (hit(&fds[0]), streams)
        };
        // Output first, so a service's last lines come before the line saying it exited.
        // Highest index first: a stream at EOF is removed.
        for i in ready_streams.into_iter().rev() {
            self.read_stream(i);
        }
        if sig_ready {
            self.read_signals();
        }
    }

    fn read_signals(&mut self) {
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => {
                    let sig = Signal::try_from(info.ssi_signo as i32);
                    match sig {
                        Ok(Signal::SIGCHLD) => self.reap(),
                        Ok(s @ (Signal::SIGTERM | Signal::SIGPWR)) => {
                            self.request(Action::Poweroff, s.as_str())
                        }
                        Ok(Signal::SIGINT) => self.request(Action::Reboot, "SIGINT (ctrl-alt-del)"),
                        _ => {}
                    }
                }
                Ok(None) | Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    warn!("reading signals: {e}");
                    break;
                }
            }
        }
        // A SIGCHLD may have been merged with another: reaping is cheap, always do it.
        self.reap();
    }

    /// Reap every child that has exited: services and orphans alike.
    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {
                    self.no_children = false;
                    break;
                }
                Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                    if let Some(pid) = status.pid() {
                        self.exited(pid, &status);
                    }
                }
                Ok(_) => {}
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => {
                    self.no_children = true;
                    break;
                }
                Err(e) => {
                    warn!("waitpid: {e}");
                    break;
                }
            }
        }
    }

    fn request(&mut self, action: Action, why: &str) {
        if let Some(s) = &self.shutdown {
            info!(
                "{why}: already shutting down ({}), ignored",
                s.action.word()
            );
            return;
        }
        info!("{why}: stopping the node ({})", action.word());
        self.shutdown = Some(Shutdown {
            action,
            phase: Phase::Services,
        });
    }

    fn exited(&mut self, pid: Pid, status: &WaitStatus) {
        let now = Instant::now();
        let Some(i) = self.services.iter().position(|s| s.pid() == Some(pid)) else {
            return; // an orphan: reaped, nothing more to do
        };
        // What it wrote before exiting comes first.
        let name = self.services[i].spec.name.clone();
        for j in (0..self.streams.len()).rev() {
            if self.streams[j].name == name {
                self.read_stream(j);
            }
        }
        let shutting_down = self.shutdown.is_some();
        let svc = &mut self.services[i];
        let how = describe(status);
        if shutting_down || matches!(svc.state, State::Stopping { .. }) {
            info!("{name} stopped ({how})");
            svc.state = State::Done;
            return;
        }
        let (started, boot_deadline) = match svc.state {
            State::Starting {
                started,
                deadline,
                boot: true,
                ..
            } => (started, Some(deadline)),
            State::Starting { started, .. } | State::Running { started, .. } => (started, None),
            _ => (now, None),
        };
        let ran = now.saturating_duration_since(started);
        let failed = !matches!(status, WaitStatus::Exited(_, 0));
        // A one-shot task that succeeded is complete: ready, never restarted.
        if !failed && svc.spec.ready == Some(Ready::Exited) {
            info!(
                "{name} completed ({how} after {:.3} s): ready",
                ran.as_secs_f64()
            );
            self.ended(i, &how, None);
            return;
        }
        let restart = match svc.spec.restart {
            Restart::Always => true,
            Restart::OnFailure => failed,
            Restart::Never => false,
        };
        if restart && svc.may_restart(now, &how) {
            let delay = svc.backoff.next_delay(ran);
            svc.restarts += 1;
            warn!(
                "{name} {how} after {:.1} s; restart #{} in {} ms",
                ran.as_secs_f64(),
                svc.restarts,
                delay.as_millis()
            );
            svc.state = State::Backoff {
                until: now + delay,
                boot_deadline,
            };
            return;
        }
        if !restart {
            info!(
                "{name} {how} after {:.1} s; not restarted",
                ran.as_secs_f64()
            );
        }
        self.ended(i, &how, boot_deadline);
    }

    /// Service `i` ended (`how`) and is not restarted: it is done, and its `on_exit` applies. One
    /// with a readiness check that ends in its first start stops the node (its dependents could
    /// never start).
    fn ended(&mut self, i: usize, how: &str, boot_deadline: Option<Instant>) {
        let svc = &mut self.services[i];
        let name = svc.spec.name.clone();
        svc.state = State::Done;
        if boot_deadline.is_some() && svc.spec.ready.is_some() {
            fail::fatal(
                &format!("start {name}"),
                &format!("{how} before it was ready"),
            );
        }
        match svc.spec.on_exit {
            super::spec::OnExit::Nothing => {}
            super::spec::OnExit::Poweroff => {
                self.request(Action::Poweroff, &format!("{name} ended (on_exit)"))
            }
            super::spec::OnExit::Reboot => {
                self.request(Action::Reboot, &format!("{name} ended (on_exit)"))
            }
        }
    }

    fn read_stream(&mut self, i: usize) {
        let mut chunk = [0u8; 16384];
        loop {
            let Some(s) = self.streams.get_mut(i) else {
                return;
            };
            match nix::unistd::read(s.fd.as_fd(), &mut chunk) {
                Ok(0) => {
                    let s = self.streams.remove(i);
                    emit(&s.name, &s.buf);
                    return;
                }
                Ok(n) => {
                    s.buf.extend_from_slice(&chunk[..n]);
                    flush_lines(&s.name, &mut s.buf);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(e) => {
                    let s = self.streams.remove(i);
                    emit(&s.name, &s.buf);
                    warn!("reading {}'s output: {e}", s.name);
                    return;
                }
            }
        }
    }

    /// At the very end: what is still buffered or in the pipes (every writer is gone).
    fn drain_streams(&mut self) {
        while !self.streams.is_empty() {
            let before = self.streams.len();
            self.read_stream(before - 1);
            if self.streams.len() == before {
                // Still open (a writer escaped the kill): give up on it.
                let s = self.streams.remove(before - 1);
                emit(&s.name, &s.buf);
            }
        }
    }

    // --- the state machine --------------------------------------------------------------

    fn tick(&mut self, now: Instant) {
        if self.shutdown.is_some() {
            self.shutdown_tick(now);
            return;
        }
        for i in 0..self.services.len() {
            self.service_tick(i, now);
            if self.shutdown.is_some() {
                return;
            }
        }
        self.boot_tick(now);
    }

    fn service_tick(&mut self, i: usize, now: Instant) {
        let svc = &mut self.services[i];
        match svc.state {
            State::Starting {
                pid,
                started,
                deadline,
                boot,
                killed,
            } => {
                if is_ready(svc.spec.ready.as_ref()) {
                    info!(
                        "{} is ready ({:.3} s after its start)",
                        svc.spec.name,
                        now.saturating_duration_since(started).as_secs_f64()
                    );
                    svc.state = State::Running { pid, started };
                } else if now >= deadline {
                    let what = ready_what(svc.spec.ready.as_ref());
                    if boot {
                        fail::fatal(
                            &format!("start {}", svc.spec.name),
                            &format!("not ready after {} s ({what})", svc.spec.ready_timeout_s),
                        );
                    } else if !killed {
                        warn!(
                            "{} not ready after {} s ({what}): killing it",
                            svc.spec.name, svc.spec.ready_timeout_s
                        );
                        let _ = kill(pid, Signal::SIGKILL);
                        if let State::Starting { killed, .. } = &mut svc.state {
                            *killed = true;
                        }
                    }
                }
            }
            State::Backoff {
                until,
                boot_deadline,
            } => {
                if let Some(d) = boot_deadline {
                    if now >= d {
                        fail::fatal(
                            &format!("start {}", svc.spec.name),
                            &format!(
                                "not ready after {} s (it keeps exiting)",
                                svc.spec.ready_timeout_s
                            ),
                        );
                    }
                }
                if now >= until {
                    self.spawn(i, boot_deadline, now);
                }
            }
            _ => {}
        }
    }

    /// Start the next service of the boot sequence once the previous one is ready.
    fn boot_tick(&mut self, now: Instant) {
        while self.boot_next < self.services.len() {
            let i = self.boot_next;
            match self.services[i].state {
                State::Waiting => {
                    let deadline = now + Duration::from_secs(self.services[i].spec.ready_timeout_s);
                    self.spawn(i, Some(deadline), now);
                    if !matches!(self.services[i].state, State::Running { .. }) {
                        return;
                    }
                }
                State::Running { .. } | State::Done => {
                    self.boot_next += 1;
                    if self.boot_next == self.services.len() {
                        info!("all {} services started", self.services.len());
                    }
                }
                _ => return,
            }
        }
    }

    /// Start service `i`. `boot_deadline`: its first start (failing to start stops the node).
    fn spawn(&mut self, i: usize, boot_deadline: Option<Instant>, now: Instant) {
        let spec = &self.services[i].spec;
        let name = spec.name.clone();
        match start_process(spec) {
            Ok((pid, stream)) => {
                info!("started {name} (pid {pid}): {}", spec.command.display());
                self.streams.push(Stream {
                    name: name.clone(),
                    fd: stream,
                    buf: Vec::new(),
                });
                let svc = &mut self.services[i];
                svc.state = if svc.spec.ready.is_none() {
                    State::Running { pid, started: now }
                } else {
                    State::Starting {
                        pid,
                        started: now,
                        deadline: boot_deadline
                            .unwrap_or(now + Duration::from_secs(svc.spec.ready_timeout_s)),
                        boot: boot_deadline.is_some(),
                        killed: false,
                    }
                };
            }
            Err(e) => {
                if boot_deadline.is_some() && self.services[i].restarts == 0 {
                    fail::fatal(&format!("start {name}"), &e);
                }
                let svc = &mut self.services[i];
                let how = format!("could not be started ({e})");
                if !svc.may_restart(now, &how) {
                    self.ended(i, &how, boot_deadline);
                    return;
                }
                let delay = svc.backoff.next_delay(Duration::ZERO);
                svc.restarts += 1;
                warn!("starting {name}: {e}; retrying in {} ms", delay.as_millis());
                svc.state = State::Backoff {
                    until: now + delay,
                    boot_deadline,
                };
            }
        }
    }

    fn shutdown_tick(&mut self, now: Instant) {
        let Some(sd) = &self.shutdown else { return };
        match sd.phase {
            Phase::Services => {
                // The last started service that is not stopped yet.
                let Some(i) = self
                    .services
                    .iter()
                    .rposition(|s| !matches!(s.state, State::Done | State::Waiting))
                else {
                    info!("shutdown: all services stopped; stopping the other processes");
                    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
                    self.no_children = false;
                    self.reap();
                    if let Some(sd) = &mut self.shutdown {
                        sd.phase = Phase::Others {
                            deadline: now + KILL_ALL_GRACE,
                            killed: false,
                        };
                    }
                    return;
                };
                let svc = &mut self.services[i];
                let name = &svc.spec.name;
                match svc.state {
                    State::Starting { pid, .. } | State::Running { pid, .. } => {
                        info!("shutdown: stopping {name} (SIGTERM to pid {pid})");
                        let _ = kill(pid, Signal::SIGTERM);
                        svc.state = State::Stopping {
                            pid,
                            deadline: now + Duration::from_secs(svc.spec.stop_timeout_s),
                            killed: false,
                        };
                    }
                    State::Stopping {
                        pid,
                        deadline,
                        killed,
                    } if now >= deadline => {
                        if killed {
                            warn!("shutdown: {name} (pid {pid}) survives SIGKILL: going on");
                            svc.state = State::Done;
                        } else {
                            warn!(
                                "shutdown: {name} still running after {} s: SIGKILL",
                                svc.spec.stop_timeout_s
                            );
                            let _ = kill(pid, Signal::SIGKILL);
                            svc.state = State::Stopping {
                                pid,
                                deadline: now + SIGKILL_WAIT,
                                killed: true,
                            };
                        }
                    }
                    State::Backoff { .. } => svc.state = State::Done,
                    _ => {}
                }
            }
            Phase::Others { deadline, killed } => {
                if self.no_children || now < deadline {
                    return;
                }
                if killed {
                    warn!("shutdown: some processes survive SIGKILL: going on");
                    self.no_children = true;
                } else {
                    info!("shutdown: processes left after SIGTERM: SIGKILL");
                    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
                    if let Some(sd) = &mut self.shutdown {
                        sd.phase = Phase::Others {
                            deadline: now + KILL_ALL_WAIT,
                            killed: true,
                        };
                    }
                }
            }
        }
    }

    fn shutdown_complete(&self) -> bool {
        matches!(
            self.shutdown,
            Some(Shutdown {
                phase: Phase::Others { .. },
                ..
            })
        ) && self.no_children
    }

    /// How long poll may sleep: until the nearest timer (None: only an event wakes it).
    fn next_wakeup(&self, now: Instant) -> Option<Duration> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for s in &self.services {
            match s.state {
                State::Starting { deadline, .. } => {
                    at(now + READY_POLL);
                    at(deadline);
                }
                State::Backoff { until, .. } => at(until),
                State::Stopping { deadline, .. } => at(deadline),
                _ => {}
            }
        }
        if let Some(sd) = &self.shutdown {
            match sd.phase {
                // Each step of stopping services happens in a tick: come back at once.
                Phase::Services => at(now + Duration::from_millis(10)),
                Phase::Others { deadline, .. } => at(deadline),
            }
        }
        next.map(|t| t.saturating_duration_since(now))
    }
}

impl Service {
    /// The service `how` (exited, was killed, could not be started) and its `restart` says to
    /// start it again at `now`: true if its crash-loop limit allows it (the restart is counted).
    /// Past the limit: `stop-node` stops the node here; `give-up` logs it and returns false.
    fn may_restart(&mut self, now: Instant, how: &str) -> bool {
        let Some((limit, counter)) = &mut self.crash_loop else {
            return true;
        };
        let Err(t) = counter.restart(now) else {
            return true;
        };
        let name = &self.spec.name;
        let what = format!(
            "crash loop: {how} after {} restarts in {:.1} s (crash_loop: at most {} restarts in {} s, action {})",
            t.restarts,
            t.within.as_secs_f64(),
            limit.restarts,
            limit.window_s,
            limit.action.word()
        );
        match limit.action {
            crash_loop::Action::StopNode => fail::fatal(&format!("service {name}"), &what),
            crash_loop::Action::GiveUp => {
                warn!("{name}: {what}: giving up on it; it stays stopped, the node keeps running");
                false
            }
        }
    }

    fn pid(&self) -> Option<Pid> {
        match self.state {
            State::Starting { pid, .. }
            | State::Running { pid, .. }
            | State::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }
}

fn is_ready(ready: Option<&Ready>) -> bool {
    match ready {
        None => true,
        Some(Ready::Socket(p)) => std::os::unix::net::UnixStream::connect(p).is_ok(),
        Some(Ready::File(p)) => p.exists(),
        // Only the exit says so (Supervisor::exited).
        Some(Ready::Exited) => false,
    }
}

fn ready_what(ready: Option<&Ready>) -> String {
    match ready {
        None => "started".into(),
        Some(Ready::Socket(p)) => format!("socket {} accepting connections", p.display()),
        Some(Ready::File(p)) => format!("file {} existing", p.display()),
        Some(Ready::Exited) => "exited with status 0".into(),
    }
}

fn describe(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, c) => format!("exited with status {c}"),
        WaitStatus::Signaled(_, s, _) => format!("was killed by {}", s.as_str()),
        other => format!("{other:?}"),
    }
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Fork and execute a service: a clean environment (its own plus PATH), stdin from /dev/null,
/// stdout and stderr into one pipe, its own session, no blocked signals. Returns its pid and the
/// pipe's read end (non-blocking).
fn start_process(spec: &ServiceSpec) -> Result<(Pid, OwnedFd), String> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    // `args_file`, read at each start: a missing or bad file fails this start.
    let extra = match &spec.args_file {
        Some(p) => super::spec::read_args_file(p)?,
        None => Vec::new(),
    };
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    fcntl(&r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(|e| format!("pipe: {e}"))?;
    let w2 = w.try_clone().map_err(|e| format!("pipe: {e}"))?;
    let mut cmd = std::process::Command::new(&spec.command);
    cmd.args(&spec.args)
        .args(&extra)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .envs(&spec.environment)
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(w))
        .stderr(std::process::Stdio::from(w2));
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let _ = nix::unistd::setsid();
            let _ = nix::sys::signal::sigprocmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&nix::sys::signal::SigSet::empty()),
                None,
            );
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("{}: {e}", spec.command.display()))?;
    // The write ends are in `cmd`: close them here so EOF comes when the service's side closes.
    drop(cmd);
    Ok((Pid::from_raw(child.id() as i32), r))
}

fn flush_lines(name: &str, buf: &mut Vec<u8>) {
    let mut start = 0;
    while let Some(nl) = buf[start..].iter().position(|&c| c == b'\n') {
        emit(name, &buf[start..start + nl]);
        start += nl + 1;
    }
    buf.drain(..start);
    while buf.len() > MAX_LINE {
        let rest = buf.split_off(MAX_LINE);
        emit(name, buf);
        *buf = rest;
    }
}

fn emit(name: &str, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    if !text.is_empty() {
        crate::log::line(&format!("[{name}] "), format_args!("{text}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(text: &str) -> Service {
        let cfg = crate::config::load(Some(text)).unwrap();
        let spec = super::super::spec::from_config(&cfg).unwrap().remove(0);
        Service {
            crash_loop: spec.crash_loop_limit().map(|l| (l, Counter::new(&l))),
            backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(1)),
            spec,
            state: State::Waiting,
            restarts: 0,
        }
    }

    #[test]
    fn give_up_refuses_the_restart_past_the_limit() {
        let mut s = service(
            "[[service]]\nname = \"x\"\ncommand = \"/x\"\ncrash_loop = { restarts = 3, window_s = 60, action = \"give-up\" }\n",
        );
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(s.may_restart(at(0), "exited with status 3"));
        assert!(s.may_restart(at(100), "exited with status 3"));
        assert!(s.may_restart(at(300), "exited with status 3"));
        assert!(!s.may_restart(at(700), "exited with status 3"));
        // Much later (a give-up is final in the supervisor, but the count itself slides).
        assert!(s.may_restart(at(61_000), "exited with status 3"));
    }

    #[test]
    fn args_file_arguments_follow_args_and_a_missing_file_fails_the_start() {
        let dir = std::env::temp_dir().join(format!("nacre-sup-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("echo.args");
        std::fs::write(&file, "b c\n\n  --d=$HOME\n").unwrap();
        let s = service(&format!(
            "[[service]]\nname = \"e\"\ncommand = \"/bin/sh\"\nargs = ['-c', 'printf \"[%s]\" \"$@\"', 'zero', 'a']\nargs_file = \"{}\"\n",
            file.display()
        ));
        let (pid, fd) = start_process(&s.spec).unwrap();
        let mut out = Vec::new();
        let mut f = std::fs::File::from(fd);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut buf = [0u8; 256];
            match std::io::Read::read(&mut f, &mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no EOF from the service");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("{e}"),
            }
        }
        nix::sys::wait::waitpid(pid, None).unwrap();
        // One argument a line, literal: "b c" is one argument, $HOME is not expanded.
        assert_eq!(String::from_utf8(out).unwrap(), "[a][b c][--d=$HOME]");
        std::fs::remove_file(&file).unwrap();
        let e = start_process(&s.spec).unwrap_err();
        assert!(e.contains("echo.args"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_limit_always_restarts() {
        for text in [
            "[[service]]\nname = \"logger\"\ncommand = \"/x\"\n",
            "[[service]]\nname = \"kubelet\"\ncommand = \"/x\"\ncrash_loop = \"off\"\n",
        ] {
            let mut s = service(text);
            assert!(s.crash_loop.is_none(), "{text}");
            let t0 = Instant::now();
            for k in 0..100 {
                assert!(s.may_restart(t0 + Duration::from_millis(k), "exited"));
            }
        }
        let s = service("[[service]]\nname = \"containerd\"\ncommand = \"/x\"\n");
        assert_eq!(s.crash_loop.map(|c| c.0), Some(crash_loop::DEFAULT));
    }
}
