//! The writer: one process running kstlib's `Heartbeat` with a state file,
//! in either loop (`start()`, a thread; `astart()`, an asyncio task).
//!
//! Upstream: kstlib 2.0.0 `kstlib/resilience/heartbeat.py` (line numbers of
//! the PyPI wheel), `Heartbeat`: `start` (line 245) / `_run_loop` (303,
//! threaded), `astart` (331) / `_async_loop` (392, async), `beat` (274),
//! `_check_target_async` (373), `_invoke_callback_async` (360). A beat is a chain of three file operations
//! (`mkdir -p` the parent, write `<stem>.tmp`, rename it over the state
//! file); the loop waits for each as the beat thread or executor does.

use std::borrow::Cow;

use heartsim_sim::{Deadline, Duration, Errno, FileDone, FileOp, Now, Outbox, Timestamp};

use super::state::{self, isoformat, isoformat_naive};
use super::{kind, Msg, Profile};

/// What one writer process is told by the scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct WriterSpec {
    /// `None`: `Heartbeat(None)`, `beat()` is a successful no-op.
    pub state_file: Option<String>,
    /// After `clamp_with_limits(interval, 1, 300)` (limits.py line 500).
    pub interval: Duration,
    /// `os.getpid()` and `socket.gethostname()` in the file.
    pub pid: u32,
    pub hostname: String,
    /// `target.is_dead` is true from this monotonic reading on.
    pub target_dead_at: Option<Timestamp>,
    /// `target.is_dead` raises from this monotonic reading on.
    pub target_raises_at: Option<Timestamp>,
    /// `on_beat` raises every time.
    pub on_beat_fails: bool,
    /// The application calls `start()`/`astart()` a second time.
    pub start_twice: bool,
    /// Write a naive timestamp (not upstream's writer: an application
    /// that writes its own file with `datetime.now().isoformat()`).
    pub naive_timestamp: bool,
}

/// Where the loop is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting (`stop_event.wait(interval)` or `asyncio.sleep(interval)`)
    /// until this monotonic reading.
    Waiting(Timestamp),
    /// Inside `beat()`: waiting for the file operation with this token.
    Beating {
        step: Step,
        data: Vec<u8>,
        timestamp: String,
    },
    /// The loop is over (its thread or task died, or it was stopped).
    Over,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Mkdir,
    Write,
    Rename,
}

impl Step {
    fn token(self) -> u64 {
        match self {
            Step::Mkdir => 1,
            Step::Write => 2,
            Step::Rename => 3,
        }
    }
}

/// A stop landed inside `beat()`: the beat runs to its end (upstream
/// cannot interrupt a thread), then the process exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stopping {
    /// Threaded: `stop()` sets `_stop_event`, then
    /// `self._thread.join(timeout=self._interval + 1.0)` (lines 259-272),
    /// and the application returns, taking the daemon thread with it, at
    /// this monotonic reading if the thread is still in `beat()`.
    Join(Timestamp),
    /// Async: `astop()` cancels the task awaiting `run_in_executor(None,
    /// self.beat)` (lines 344-358, 399), so nothing after `beat()` runs;
    /// the executor's thread finishes `beat()` and `asyncio.run` waits for
    /// it (`shutdown_default_executor`, and `concurrent.futures`' exit hook
    /// joins its threads) without a bound.
    Executor,
}

#[derive(Clone, Debug)]
pub struct Writer {
    profile: Profile,
    spec: WriterSpec,
    phase: Phase,
    stopping: Option<Stopping>,
}

impl Writer {
    pub fn new(profile: Profile, spec: WriterSpec) -> Self {
        Writer {
            profile,
            spec,
            phase: Phase::Over,
            stopping: None,
        }
    }

    pub fn on_start(&mut self, now: Now, out: &mut Outbox<Msg>) {
        if self.spec.start_twice {
            // `start`: `if self._running: raise HeartbeatError("Heartbeat
            // is already running")`; the first loop runs on.
            out.record(
                kind::START_ERROR,
                None,
                Some(Cow::Borrowed("Heartbeat is already running")),
                None,
            );
        }
        match self.profile {
            // `_run_loop`: `while not self._stop_event.wait(timeout=self.
            // _interval)`: the first beat is one interval after start.
            Profile::Threaded => self.phase = Phase::Waiting(now.mono + self.spec.interval),
            // `_async_loop`: the body runs at once, the sleep is last.
            Profile::Async => self.begin_beat(now, out),
        }
    }

    /// The application stops the heartbeat and returns. In a wait, the
    /// loop ends at once (`_stop_event.wait` returns true; the sleeping
    /// task is cancelled). Inside `beat()` the write in flight completes
    /// first ([`Stopping`]); the process lingers until then.
    pub fn on_stop(&mut self, now: Now, out: &mut Outbox<Msg>) {
        if !matches!(self.phase, Phase::Beating { .. }) {
            self.phase = Phase::Over;
            return;
        }
        if self.stopping.is_none() {
            self.stopping = Some(match self.profile {
                Profile::Threaded => {
                    Stopping::Join(now.mono + self.spec.interval + Duration::from_secs(1))
                }
                Profile::Async => Stopping::Executor,
            });
        }
        out.linger();
    }

    pub fn poll_timeout(&self) -> Option<Deadline> {
        if let (Phase::Beating { .. }, Some(Stopping::Join(at))) = (&self.phase, self.stopping) {
            return Some(Deadline {
                at,
                reason: "thread.join",
            });
        }
        match self.phase {
            Phase::Waiting(at) => Some(Deadline {
                at,
                reason: match self.profile {
                    Profile::Threaded => "stop_event.wait",
                    Profile::Async => "asyncio.sleep",
                },
            }),
            _ => None,
        }
    }

    pub fn on_timeout(&mut self, now: Now, out: &mut Outbox<Msg>) {
        if let Some(Stopping::Join(at)) = self.stopping {
            // `join` timed out: `stop()` returns with the thread still in
            // `beat()`, the application exits, the daemon thread dies.
            if now.mono >= at {
                self.phase = Phase::Over;
                out.exit();
            }
            return;
        }
        if let Phase::Waiting(at) = self.phase {
            if now.mono >= at {
                self.begin_beat(now, out);
            }
        }
    }

    /// `beat()` (line 274): the timestamp is taken first, then `mkdir`
    /// (`parents=True, exist_ok=True`), `write_text` of the temp file
    /// (`with_suffix(".tmp")`, line 297), `replace`; no fsync.
    fn begin_beat(&mut self, now: Now, out: &mut Outbox<Msg>) {
        let Some(path) = &self.spec.state_file else {
            // `if self._state_file is None: return`.
            self.after_beat(now, Ok(()), out);
            return;
        };
        let timestamp = if self.spec.naive_timestamp {
            isoformat_naive(now.wall)
        } else {
            isoformat(now.wall)
        };
        let data = state::render(&timestamp, self.spec.pid, &self.spec.hostname);
        out.file(
            FileOp::MkdirAll(state::parent_dir(path)),
            Step::Mkdir.token(),
        );
        self.phase = Phase::Beating {
            step: Step::Mkdir,
            data,
            timestamp,
        };
    }

    pub fn on_file(&mut self, now: Now, done: FileDone, out: &mut Outbox<Msg>) {
        let Phase::Beating { step, data, .. } = &mut self.phase else {
            return;
        };
        if done.token != step.token() {
            return;
        }
        let Some(path) = self.spec.state_file.clone() else {
            return;
        };
        let tmp = state::temp_path(&path);
        if self.stopping == Some(Stopping::Executor)
            && (done.result.is_err() || *step == Step::Rename)
        {
            // `beat()` returned or raised in the executor's thread; the
            // cancelled task runs none of what follows it. A rename that
            // landed changed the file: heartsim says so (upstream is
            // silent), so that readers' checks know what it holds.
            if let (Ok(_), Phase::Beating { timestamp, .. }) = (
                &done.result,
                std::mem::replace(&mut self.phase, Phase::Over),
            ) {
                out.record(
                    kind::BEAT_LANDED_AFTER_STOP,
                    None,
                    None,
                    Some(Cow::Owned(timestamp)),
                );
            }
            out.exit();
            return;
        }
        match (done.result, *step) {
            (Err(e), step) => self.after_beat(now, Err((e, step, tmp)), out),
            (Ok(_), Step::Mkdir) => {
                let data = std::mem::take(data);
                out.file(FileOp::Write { path: tmp, data }, Step::Write.token());
                *step = Step::Write;
            }
            (Ok(_), Step::Write) => {
                out.file(
                    FileOp::Rename {
                        from: tmp,
                        to: path,
                    },
                    Step::Rename.token(),
                );
                *step = Step::Rename;
            }
            (Ok(_), Step::Rename) => self.after_beat(now, Ok(()), out),
        }
    }

    /// The rest of one loop iteration after `beat()` returned or raised:
    /// `on_beat` or `on_missed_beat`, the target check, then the wait.
    fn after_beat(
        &mut self,
        now: Now,
        result: Result<(), (Errno, Step, String)>,
        out: &mut Outbox<Msg>,
    ) {
        match result {
            Ok(()) => {
                // The timestamp `beat()` took first, as written.
                let msg = match std::mem::replace(&mut self.phase, Phase::Over) {
                    Phase::Beating { timestamp, .. } => Cow::Owned(timestamp),
                    _ => Cow::Borrowed("no state file"),
                };
                out.record(kind::BEAT, None, None, Some(msg));
                // `on_beat` raising: the threaded loop suppresses it
                // (`contextlib.suppress(Exception)`); the async loop logs
                // `Callback failed: ...` (`_invoke_callback_async`). Neither
                // is a missed beat.
                if self.spec.on_beat_fails && self.profile == Profile::Async {
                    out.record(
                        kind::CALLBACK_FAILED,
                        None,
                        Some(Cow::Borrowed("on_beat")),
                        None,
                    );
                }
            }
            Err((errno, step, tmp)) => {
                // `except OSError as exc: raise HeartbeatError(f"Failed to
                // write heartbeat: {exc}")`, then `on_missed_beat(exc)`.
                let what = match step {
                    Step::Mkdir => "mkdir",
                    Step::Write => "write",
                    Step::Rename => "rename",
                };
                out.record(
                    kind::MISSED_BEAT,
                    None,
                    Some(Cow::Owned(format!(
                        "Failed to write heartbeat: {}",
                        errno.name()
                    ))),
                    Some(Cow::Owned(format!("{what} {tmp}"))),
                );
            }
        }
        // The target check runs after every iteration, beat or no beat,
        // outside the `try`: level-triggered (line 323; async: line 410,
        // `await self._check_target_async()`).
        if let Some(raises) = self.spec.target_raises_at {
            if now.mono >= raises {
                // `self._target.is_dead` raises outside any `try`: the
                // thread (or task) dies; upstream logs nothing. The record
                // is heartsim's, so that a scenario can point at it.
                out.record(
                    kind::LOOP_DIED,
                    None,
                    Some(Cow::Borrowed("target.is_dead raised")),
                    None,
                );
                self.phase = Phase::Over;
                self.exit_if_stopping(out);
                return;
            }
        }
        if self.spec.target_dead_at.is_some_and(|t| now.mono >= t) {
            if self.profile == Profile::Async {
                // `_check_target_async`: `on_alert("heartbeat", "Target is
                // dead, triggering recovery", ...)` before `on_target_dead`.
                // The threaded loop never calls `on_alert`.
                out.record(
                    kind::ALERT,
                    None,
                    Some(Cow::Borrowed("Target is dead, triggering recovery")),
                    None,
                );
            }
            out.record(
                kind::TARGET_DEAD,
                None,
                Some(Cow::Borrowed("target.is_dead")),
                None,
            );
        }
        if self.exit_if_stopping(out) {
            return;
        }
        // Both loops wait a full interval after the work: the period is
        // interval + the beat's time.
        self.phase = Phase::Waiting(now.mono + self.spec.interval);
    }

    /// Threaded, stopped inside `beat()`: the iteration is over, and
    /// `while not self._stop_event.wait(...)` ends the loop at once, so
    /// `join` returns and the application exits.
    fn exit_if_stopping(&mut self, out: &mut Outbox<Msg>) -> bool {
        if self.stopping.is_none() {
            return false;
        }
        self.phase = Phase::Over;
        out.exit();
        true
    }
}
