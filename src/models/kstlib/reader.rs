//! The readers: a monitor polling `Heartbeat.is_alive`, a
//! `Watchdog.from_state_file`, and a plain `Watchdog` pinged by its own
//! process's worker.
//!
//! Upstream: kstlib 2.0.0 `kstlib/resilience/heartbeat.py` (`is_alive`,
//! `read_state`) and `kstlib/resilience/watchdog.py` (`Watchdog`: `start`
//! line 308, `reset` 393, `_monitor_loop` 402, `_async_monitor_loop` 411,
//! `_check_timeout` 419, `_check_state_file_sync` 450,
//! `_is_state_file_alive` 476, `_async_check_timeout` 491,
//! `_check_state_file_async` 516).

use std::borrow::Cow;

use heartsim_sim::{Deadline, Duration, FileDone, FileOp, NodeId, Now, Outbox, Timestamp};

use super::state::{judge, Reader, Seen};
use super::{kind, Msg, Profile};

/// The one read a reader has in flight.
const READ: u64 = 1;

/// A reader's clamped timings, in microseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct MonitorSpec {
    pub state_file: String,
    /// The one writer of that file on this disk, if there is exactly one:
    /// the peer of its verdicts.
    pub watched: Option<NodeId>,
    /// `is_alive(path, max_age_seconds)`, seconds as upstream takes them.
    pub max_age_s: f64,
    /// The monitor's own loop: `while True: is_alive(...); sleep(poll)`.
    pub poll_every: Duration,
}

/// A process that polls `Heartbeat.is_alive` and reports each change of
/// its answer (the application around upstream's reader).
#[derive(Clone, Debug)]
pub struct Monitor {
    spec: MonitorSpec,
    next: Option<Timestamp>,
    reading: bool,
    alive: Option<bool>,
}

impl Monitor {
    pub fn new(spec: MonitorSpec) -> Self {
        Monitor {
            spec,
            next: None,
            reading: false,
            alive: None,
        }
    }

    pub fn on_start(&mut self, out: &mut Outbox<Msg>) {
        self.poll(out);
    }

    fn poll(&mut self, out: &mut Outbox<Msg>) {
        self.next = None;
        self.reading = true;
        out.file(FileOp::Read(self.spec.state_file.clone()), READ);
    }

    pub fn on_stop(&mut self) {
        self.next = None;
        self.reading = false;
    }

    pub fn poll_timeout(&self) -> Option<Deadline> {
        self.next.map(|at| Deadline { at, reason: "poll" })
    }

    pub fn on_timeout(&mut self, now: Now, out: &mut Outbox<Msg>) {
        if self.next.is_some_and(|at| now.mono >= at) {
            self.poll(out);
        }
    }

    pub fn on_file(&mut self, now: Now, done: FileDone, out: &mut Outbox<Msg>) {
        if !self.reading || done.token != READ {
            return;
        }
        self.reading = false;
        let read = done.result.as_ref().map(|d| d.as_deref().unwrap_or(&[]));
        let read = read.map_err(|e| *e);
        let (verdict, age) = judge(Reader::IsAlive, read, now.wall, self.spec.max_age_s);
        if self.alive != Some(verdict.alive()) {
            self.alive = Some(verdict.alive());
            let k = if verdict.alive() {
                kind::ALIVE
            } else {
                kind::DEAD
            };
            let reason = Some(Cow::Borrowed(verdict.reason()));
            out.record(k, self.spec.watched, reason, age_msg(age));
        }
        self.next = Some(now.mono + self.spec.poll_every);
    }
}

/// `ts <timestamp read> age <age> pid <pid>`: what the invariants check.
fn age_msg(seen: Option<Seen>) -> Option<Cow<'static, str>> {
    seen.map(|seen| {
        let us = seen.age_us;
        let sign = if us < 0 { "-" } else { "" };
        let d = Duration::from_us(us.unsigned_abs());
        let pid = seen.pid.map_or(String::new(), |p| format!(" pid {p}"));
        Cow::Owned(format!("ts {} age {sign}{d}{pid}", seen.timestamp))
    })
}

/// `min(1.0, self._timeout / 4)` (`_monitor_loop`, `_async_monitor_loop`),
/// with the timeout already clamped to [1, 3600].
pub fn check_interval(timeout_s: f64) -> Duration {
    let s = (timeout_s / 4.0).min(1.0);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Duration::from_us((s * 1e6).round() as u64)
}

/// `Watchdog.from_state_file(state_file, check_interval=.., max_age=..)`.
#[derive(Clone, Debug, PartialEq)]
pub struct StateWatchdogSpec {
    pub state_file: String,
    /// As [`MonitorSpec::watched`].
    pub watched: Option<NodeId>,
    pub max_age_s: f64,
    /// The loop's period: `min(1, clamp(check_interval if not None else max_age / 2,
    /// 1, 3600) / 4)`.
    pub every: Duration,
}

#[derive(Clone, Debug)]
pub struct StateWatchdog {
    profile: Profile,
    spec: StateWatchdogSpec,
    next: Option<Timestamp>,
    reading: bool,
    triggered: bool,
}

impl StateWatchdog {
    pub fn new(profile: Profile, spec: StateWatchdogSpec) -> Self {
        StateWatchdog {
            profile,
            spec,
            next: None,
            reading: false,
            triggered: false,
        }
    }

    /// `start`/`astart`: `_triggered = False`; both loops wait first.
    pub fn on_start(&mut self, now: Now) {
        self.triggered = false;
        self.next = Some(now.mono + self.spec.every);
    }

    pub fn on_stop(&mut self) {
        self.next = None;
        self.reading = false;
    }

    pub fn poll_timeout(&self) -> Option<Deadline> {
        self.next.map(|at| Deadline {
            at,
            reason: "watchdog check",
        })
    }

    pub fn on_timeout(&mut self, now: Now, out: &mut Outbox<Msg>) {
        if self.next.is_some_and(|at| now.mono >= at) {
            self.next = None;
            self.reading = true;
            out.file(FileOp::Read(self.spec.state_file.clone()), READ);
        }
    }

    pub fn on_file(&mut self, now: Now, done: FileDone, out: &mut Outbox<Msg>) {
        if !self.reading || done.token != READ {
            return;
        }
        self.reading = false;
        let read = done.result.as_ref().map(|d| d.as_deref().unwrap_or(&[]));
        let read = read.map_err(|e| *e);
        let (verdict, age) = judge(Reader::Watchdog, read, now.wall, self.spec.max_age_s);
        if verdict.alive() {
            // "Reset triggered state if heartbeat is back": silent upstream;
            // the record is heartsim's.
            if self.triggered {
                out.record(
                    kind::REARMED,
                    self.spec.watched,
                    Some(Cow::Borrowed(verdict.reason())),
                    age_msg(age),
                );
            }
            self.triggered = false;
        } else if !self.triggered {
            self.triggered = true;
            if self.profile == Profile::Async {
                // `_check_state_file_async`: `on_alert("watchdog", f"Heartbeat
                // state file is stale: {path}", ...)`, then `on_timeout`.
                out.record(
                    kind::ALERT,
                    self.spec.watched,
                    Some(Cow::Borrowed("Heartbeat state file is stale")),
                    Some(Cow::Owned(self.spec.state_file.clone())),
                );
            }
            out.record(
                kind::FIRED,
                self.spec.watched,
                Some(Cow::Borrowed(verdict.reason())),
                age_msg(age),
            );
        }
        self.next = Some(now.mono + self.spec.every);
    }
}

/// `Watchdog(timeout=..)` in a process whose worker pings it
/// (`while running: watchdog.ping(); do_work()`).
#[derive(Clone, Debug, PartialEq)]
pub struct PingWatchdogSpec {
    /// Clamped to [1, 3600] (watchdog.py line 162).
    pub timeout: Duration,
    pub every: Duration,
    /// The worker pings this often, from start.
    pub ping_every: Duration,
    /// The worker hangs (stops pinging) at this monotonic reading...
    pub hang_at: Option<Timestamp>,
    /// ...and pings again from this one.
    pub resume_at: Option<Timestamp>,
    /// The application calls `reset()` at this reading.
    pub reset_at: Option<Timestamp>,
}

#[derive(Clone, Debug)]
pub struct PingWatchdog {
    spec: PingWatchdogSpec,
    last_ping: Timestamp,
    triggered: bool,
    next_check: Option<Timestamp>,
    next_ping: Option<Timestamp>,
    reset_pending: bool,
}

impl PingWatchdog {
    pub fn new(spec: PingWatchdogSpec) -> Self {
        PingWatchdog {
            spec,
            last_ping: Timestamp::ZERO,
            triggered: false,
            next_check: None,
            next_ping: None,
            reset_pending: false,
        }
    }

    /// `start`: `_triggered = False; _last_ping = time.monotonic()`.
    pub fn on_start(&mut self, now: Now) {
        self.last_ping = now.mono;
        self.triggered = false;
        self.next_check = Some(now.mono + self.spec.every);
        self.next_ping = Some(now.mono + self.spec.ping_every);
        // A process (re)started after the reset time never sees it.
        self.reset_pending = self.spec.reset_at.is_some_and(|r| r >= now.mono);
    }

    pub fn on_stop(&mut self) {
        self.next_check = None;
        self.next_ping = None;
        self.reset_pending = false;
    }

    fn hung(&self, at: Timestamp) -> bool {
        self.spec.hang_at.is_some_and(|h| at >= h) && self.spec.resume_at.is_none_or(|r| at < r)
    }

    pub fn poll_timeout(&self) -> Option<Deadline> {
        let reset = self
            .spec
            .reset_at
            .filter(|_| self.reset_pending)
            .map(|at| (at, "reset"));
        let ping = self.next_ping.map(|at| (at, "ping"));
        let check = self.next_check.map(|at| (at, "watchdog check"));
        // At one instant: the reset, then the worker's ping, then the
        // check (threads race there; heartsim fixes this order).
        [reset, ping, check]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
            .map(|(at, reason)| Deadline { at, reason })
    }

    pub fn on_timeout(&mut self, now: Now, out: &mut Outbox<Msg>) {
        let t = now.mono;
        if self.reset_pending && self.spec.reset_at.is_some_and(|r| t >= r) {
            // `reset`: `_last_ping = now; _triggered = False`.
            self.reset_pending = false;
            self.last_ping = t;
            self.triggered = false;
            out.record(kind::RESET, None, None, None);
        }
        // One ping per wake-up: a paused process pinged nothing meanwhile.
        if self.next_ping.is_some_and(|at| t >= at) {
            if !self.hung(t) {
                self.last_ping = t;
            }
            self.next_ping = Some(t + self.spec.ping_every);
        }
        if self.next_check.is_some_and(|at| t >= at) {
            self.check(t, out);
            self.next_check = Some(t + self.spec.every);
        }
    }

    /// `_check_timeout` / `_async_check_timeout` (ping mode): latched,
    /// `elapsed < timeout` keeps quiet. Neither path calls `on_alert`.
    fn check(&mut self, t: Timestamp, out: &mut Outbox<Msg>) {
        if self.triggered {
            return;
        }
        let elapsed = t.saturating_since(self.last_ping);
        if elapsed < self.spec.timeout {
            return;
        }
        self.triggered = true;
        out.record(
            kind::FIRED,
            None,
            Some(Cow::Borrowed("no ping")),
            Some(Cow::Owned(format!("elapsed {elapsed}"))),
        );
    }
}
