//! The parent process: `WorkerPool` (pool.py), its `PipeChannel`s
//! (transport_pipe.py) and the health ticker (health_ticker.py), all at
//! lilbee 132771384e4ca0dcc46f34b7fd09eafc4688814f, and the application's
//! calls (the scenario's workload).
//!
//! Upstream runs these as coroutines on one asyncio loop (the ticker on
//! another, awaiting the pool's through `run_coroutine_threadsafe`), with
//! each channel's blocking pipe reads and writes in a per-channel
//! `ThreadPoolExecutor(max_workers=2)` (transport_pipe.py `PipeChannel.__init__`). Here
//! each coroutine is a [`Task`], woken by what it awaits; each channel
//! keeps its two threads, its work queue and its asyncio locks. Spawning
//! returns at once (`process.start()` does not wait for the child's model
//! load; the worker's `spawn_time` is when it starts reading), so the
//! per-role `spawn_lock` is never held across simulated time and is not
//! modelled.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};

use heartsim_sim::{ConnId, Deadline, Dest, Duration, NodeId, Outbox, Timestamp};

use super::worker::{Behaviour, WorkerSpec};
use super::{kind, Config, Frame, Msg, RoleSpec};

type TaskId = u64;

/// The awaiter of a reap's close: the ticker (task ids start at 1).
const REAPER: TaskId = 0;

/// The per-channel `ThreadPoolExecutor(max_workers=2)`.
const THREADS: usize = 2;

/// What a task awaits in a channel's executor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    Send(Frame),
    Recv,
    Join,
}

/// What wakes a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wake {
    SendLock,
    Sent,
    /// `BrokenPipeError` from `conn.send`: the worker is gone.
    SendFailed,
    RecvLock,
    Frame(Frame),
    /// `EOFError` from `conn.recv`.
    Eof,
    /// `wait_for`'s timeout, or the join's.
    Timeout,
    /// The task was cancelled (pool shutdown cancels the ticker's work;
    /// `executor.shutdown(cancel_futures=True)` cancels queued work).
    Cancelled,
    /// `run_in_executor` on a shut-down executor: `RuntimeError: cannot
    /// schedule new futures after shutdown`, raised outside every
    /// `except` of the channel and the accessor.
    ExecutorShut,
    /// The process was joined (it has exited).
    Joined,
    /// A `close()` this task awaited has returned, or raised this
    /// (`RuntimeError` from its executor while the interpreter exits).
    Closed(Option<&'static str>),
}

/// One `PipeChannel`.
/// An `asyncio.Lock`: one holder, waiters served in order.
#[derive(Clone, Debug, Default)]
struct FifoLock {
    holder: Option<TaskId>,
    waiters: VecDeque<TaskId>,
}

impl FifoLock {
    /// True if `task` holds it now, else it waits in line.
    fn acquire(&mut self, task: TaskId) -> bool {
        if self.holder.is_none() {
            self.holder = Some(task);
            return true;
        }
        self.waiters.push_back(task);
        false
    }

    /// `task` lets go (or stops waiting); the next holder, if it changed.
    fn release(&mut self, task: TaskId) -> Option<TaskId> {
        if self.holder != Some(task) {
            self.waiters.retain(|t| *t != task);
            return None;
        }
        self.holder = self.waiters.pop_front();
        self.holder
    }
}

#[derive(Clone, Debug)]
struct Chan {
    role: usize,
    name: String,
    /// `process.is_alive()`: no EOF seen yet.
    alive: bool,
    /// `close()` was called: `_ensure_open` raises from now on.
    closed: bool,
    in_flight: u32,
    /// Threads blocked in `conn.recv()`, oldest first; `None` is an
    /// orphan, left by a `wait_for` that timed out or was cancelled: it
    /// still takes the next frame, and nobody reads what it got.
    readers: VecDeque<Option<TaskId>>,
    /// Threads in `_join_process`.
    joins: Vec<TaskId>,
    /// Work waiting for a free thread, in order.
    work: VecDeque<(TaskId, Work)>,
    /// Frames in the pipe that no thread has read.
    inbox: VecDeque<Frame>,
    /// `self._send_lock`, `self._recv_lock` (transport_pipe.py).
    send_lock: FifoLock,
    recv_lock: FifoLock,
    /// `executor.shutdown()` ran: nothing more runs.
    shut: bool,
    /// `conn.close()` ran while threads were blocked in `conn.recv()`:
    /// each blocked `read()` holds the socket, so the kernel releases it
    /// (and the worker reads EOF) only when the last of them returns
    /// (audit 2026-11-27, D3, measured on Linux).
    close_deferred: bool,
}

impl Chan {
    fn busy(&self) -> usize {
        self.readers.len() + self.joins.len()
    }
}

/// One `_Role` registration.
#[derive(Clone, Debug)]
struct Role {
    node: NodeId,
    spec: RoleSpec,
    channel: Option<ConnId>,
    /// `last_used`; `None` is upstream's `0.0` (never stamped: any real
    /// `time.monotonic()` reading is positive).
    last_used: Option<Timestamp>,
    crash_history: VecDeque<Timestamp>,
    degraded: bool,
    spawns: u32,
    /// The workload still to come, soonest last; at one instant a reset
    /// comes before a call, a call before a stream.
    todo: Vec<(Timestamp, Action)>,
}

/// What the application does to a role at a time of the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    /// `pool.reset_role_failures(role)` (pool.py).
    Reset,
    /// `await pool.<role>.call(...)`.
    Call,
    /// `async for chunk in pool.<role>.stream(...)`.
    Stream,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum What {
    /// `RoleAccessor.call` then `PipeChannel.call` (pool.py, transport_pipe.py).
    Call,
    /// `WorkerPool.ping_role` -> `RoleAccessor.ping` ->
    /// `PipeChannel.ping` (pool.py, transport_pipe.py).
    Ping,
    /// `PipeChannel.close(timeout=5)` (transport_pipe.py).
    Close,
    /// `RoleAccessor.stream` -> `_spawn_and_stream` ->
    /// `PipeChannel.stream` (pool.py, transport_pipe.py): no `wait_for`,
    /// one `_recv()` per frame until `stream_end`.
    Stream,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    SendLock,
    Sending,
    RecvLock,
    Receiving,
    Joining,
    /// Joined for 5 s in vain: terminated, joining again (2 s).
    Terminated,
    /// A call or ping after its crash, awaiting `_on_crash`'s close.
    CrashClose(TaskId),
}

#[derive(Clone, Debug)]
struct Task {
    what: What,
    role: usize,
    chan: ConnId,
    step: Step,
    deadline: Option<(Timestamp, &'static str)>,
    /// Who awaits this task (a close awaited by a reap or a crash).
    parent: Option<TaskId>,
    /// The ticker awaits this task.
    ticker: bool,
    /// A close cancelled while its `_join_process` ran: the coroutine is
    /// gone but the executor thread goes on (a running
    /// `concurrent.futures` item cannot be cancelled), so the join, and
    /// the `terminate` after it, still happen; nobody reads the result.
    detached: bool,
    /// A stream's chunks read so far.
    chunks: u32,
}

impl Task {
    /// Whether an exception now reaches the `finally: self._bump_in_flight(-1)`.
    /// Call and ping raise `in_flight` inside their `try:`; a stream before
    /// it, and sends before it (`self._bump_in_flight(1)` / `await
    /// self._send(kind, payload)` / `try:`, transport_pipe.py
    /// `PipeChannel.stream`): an exception in the send leaves `in_flight`
    /// raised for good.
    fn in_try(&self) -> bool {
        !(self.what == What::Stream && matches!(self.step, Step::SendLock | Step::Sending))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ticker {
    /// `await asyncio.sleep(interval_s)` (health_ticker.py `_ticker_loop`).
    Sleeping(Timestamp),
    /// `reap_idle()`: the one `now` of the pass, the next role to look
    /// at, and the close being awaited.
    Reaping {
        now: Timestamp,
        next: usize,
        snapshot: Vec<usize>,
        closing: Option<TaskId>,
    },
    /// `ping_role(role)` for each role of the snapshot in turn.
    Pinging {
        snapshot: Vec<usize>,
        next: usize,
        task: Option<TaskId>,
    },
    /// Cancelled by the pool's shutdown.
    Stopped,
}

/// Why an operation raised, as the trace names it (upstream's exception).
const CRASH: &str = "WorkerCrashError";
const TIMEOUT: &str = "TimeoutError";
const DEGRADED: &str = "RoleDegradedError";
const SHUTDOWN: &str = "PoolShutdownError";
const CANCELLED: &str = "CancelledError";
const RUNTIME: &str = "RuntimeError: executor shut down";
const CLOSED: &str = "WorkerError: channel closed";
const PROTOCOL: &str = "WorkerError: ProtocolError";

#[derive(Clone, Debug)]
pub struct Pool {
    cfg: Config,
    roles: Vec<Role>,
    chans: BTreeMap<ConnId, Chan>,
    tasks: BTreeMap<TaskId, Task>,
    next_task: TaskId,
    wakes: VecDeque<(TaskId, Wake)>,
    ticker: Ticker,
    shutdown: bool,
    shutdown_at: Option<Timestamp>,
    /// When `run_sync(pool.shutdown(), timeout=drain_timeout_s)` gives up
    /// (pool.py `shutdown_pool_runtime`); counted from the shutdown itself,
    /// since `run_sync`'s timer starts before the coroutine runs.
    drain_until: Option<Timestamp>,
    /// The closes `pool.shutdown()` awaits (`asyncio.gather`).
    draining: Vec<TaskId>,
    /// `runtime.shutdown()` stopped the loop (`loop.call_soon_threadsafe(loop.stop)`):
    /// no coroutine, callback or loop timer runs any more; executor
    /// threads (reads, `_join_process`) still do.
    stopped: bool,
    /// The interpreter is exiting (a `stop`) and waits for executor
    /// threads: see [`Pool::on_exit`].
    exiting: bool,
    /// The time of the input being handled (for joins a thread starts).
    now: Timestamp,
}

impl Pool {
    pub fn new(cfg: Config, roles: Vec<(NodeId, RoleSpec)>) -> Pool {
        let roles = roles
            .into_iter()
            .map(|(node, spec)| {
                let mut todo: Vec<(Timestamp, Action)> = (spec.resets.iter())
                    .map(|&t| (t, Action::Reset))
                    .chain(spec.calls.iter().map(|&t| (t, Action::Call)))
                    .chain(spec.streams.iter().map(|&t| (t, Action::Stream)))
                    .collect();
                todo.sort_unstable_by(|a, b| b.cmp(a));
                Role {
                    node,
                    spec,
                    channel: None,
                    last_used: None,
                    crash_history: VecDeque::new(),
                    degraded: false,
                    spawns: 0,
                    todo,
                }
            })
            .collect();
        Pool {
            shutdown_at: cfg.shutdown_at,
            cfg,
            roles,
            chans: BTreeMap::new(),
            tasks: BTreeMap::new(),
            next_task: 1,
            wakes: VecDeque::new(),
            ticker: Ticker::Stopped,
            shutdown: false,
            drain_until: None,
            draining: Vec::new(),
            stopped: false,
            exiting: false,
            now: Timestamp::ZERO,
        }
    }

    /// `start_health_ticker`: the first tick one interval after start.
    pub fn on_start(&mut self, now: Timestamp) {
        self.now = now;
        // A pool started (again) later serves only the workload from then on.
        for role in &mut self.roles {
            role.todo.retain(|&(t, _)| t >= now);
        }
        if self.shutdown_at.is_some_and(|t| t < now) {
            self.shutdown_at = None;
        }
        self.ticker = Ticker::Sleeping(now + self.cfg.tick_interval);
    }

    pub fn poll_timeout(&self) -> Option<Deadline> {
        let mut best: Option<Deadline> = None;
        let mut consider = |at: Timestamp, reason: &'static str| {
            if best.is_none_or(|b| at < b.at) {
                best = Some(Deadline { at, reason });
            }
        };
        if let Ticker::Sleeping(at) = self.ticker {
            consider(at, "asyncio.sleep");
        }
        for task in self.tasks.values() {
            if let Some((at, reason)) = task.deadline {
                consider(at, reason);
            }
        }
        for role in &self.roles {
            if let Some(&(at, _)) = role.todo.last() {
                consider(at, "client call");
            }
        }
        if let Some(at) = self.shutdown_at {
            consider(at, "shutdown");
        }
        if let Some(at) = self.drain_until {
            consider(at, "drain timeout");
        }
        best
    }

    pub fn on_timeout(&mut self, now: Timestamp, out: &mut Outbox<Msg>) {
        self.now = now;
        // `run_sync`'s timer started before any timer of `pool.shutdown()`,
        // so at a tie the loop stops first.
        if self.drain_until.is_some_and(|t| now >= t) {
            self.stop_loop(Some("drain timeout"), out);
        }
        if self.shutdown_at.is_some_and(|t| now >= t) {
            self.shutdown_at = None;
            self.pool_shutdown(now, out);
        }
        let due: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.deadline.is_some_and(|(at, _)| now >= at))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(t) = self.tasks.get_mut(&id) {
                t.deadline = None;
            }
            self.expire(id, now, out);
        }
        for i in 0..self.roles.len() {
            while let Some(&(t, action)) = self.roles[i].todo.last() {
                if now < t {
                    break;
                }
                self.roles[i].todo.pop();
                match action {
                    Action::Reset => self.reset_role_failures(i, out),
                    Action::Call => self.start_request(What::Call, i, now, out),
                    Action::Stream => self.start_request(What::Stream, i, now, out),
                }
            }
        }
        if matches!(self.ticker, Ticker::Sleeping(at) if now >= at) {
            self.tick(now, out);
        }
        self.run(now, out);
        self.exit_when_idle(out);
    }

    pub fn on_frame(&mut self, now: Timestamp, conn: ConnId, frame: Frame, out: &mut Outbox<Msg>) {
        self.now = now;
        let Some(ch) = self.chans.get_mut(&conn) else {
            return;
        };
        ch.inbox.push_back(frame);
        if let Some(reader) = ch.readers.pop_front() {
            let f = ch.inbox.pop_front().expect("just pushed");
            if let Some(task) = reader {
                self.wakes.push_back((task, Wake::Frame(f)));
            }
            if ch.close_deferred && ch.readers.is_empty() {
                ch.close_deferred = false;
                out.close(conn);
            }
            self.pump(conn, out);
        }
        self.run(now, out);
        self.exit_when_idle(out);
    }

    /// EOF: the worker process is gone (`is_alive()` is false from now
    /// on); every blocked read raises `EOFError`, every join returns.
    pub fn on_eof(&mut self, now: Timestamp, conn: ConnId, out: &mut Outbox<Msg>) {
        self.now = now;
        let Some(ch) = self.chans.get_mut(&conn) else {
            return;
        };
        ch.alive = false;
        for reader in std::mem::take(&mut ch.readers).into_iter().flatten() {
            self.wakes.push_back((reader, Wake::Eof));
        }
        for join in std::mem::take(&mut ch.joins) {
            self.wakes.push_back((join, Wake::Joined));
        }
        self.pump(conn, out);
        self.run(now, out);
        self.exit_when_idle(out);
    }

    fn record(
        &self,
        out: &mut Outbox<Msg>,
        kind: &'static str,
        role: usize,
        reason: Option<&'static str>,
        msg: Option<String>,
    ) {
        out.record(
            kind,
            Some(self.roles[role].node),
            reason.map(Cow::Borrowed),
            msg.map(Cow::Owned),
        );
    }

    fn new_task(&mut self, what: What, role: usize, chan: ConnId) -> TaskId {
        let id = self.next_task;
        self.next_task += 1;
        self.tasks.insert(
            id,
            Task {
                what,
                role,
                chan,
                step: Step::SendLock,
                deadline: None,
                parent: None,
                ticker: false,
                detached: false,
                chunks: 0,
            },
        );
        id
    }

    /// `_ensure_channel` (pool.py): the live channel, or a new
    /// worker; a dead process is replaced without counting a crash.
    fn ensure_channel(
        &mut self,
        role: usize,
        now: Timestamp,
        out: &mut Outbox<Msg>,
    ) -> Result<ConnId, &'static str> {
        if self.shutdown {
            return Err(SHUTDOWN);
        }
        let r = &self.roles[role];
        if r.degraded {
            return Err(DEGRADED);
        }
        let dead = match r.channel {
            Some(c) if self.chans[&c].alive => return Ok(c),
            Some(_) => "process dead",
            None => "no channel",
        };
        if self.exiting {
            // The spawn's `run_in_executor` after `_python_exit` set
            // `_shutdown`: `RuntimeError`, nothing spawned.
            return Err(RUNTIME);
        }
        let r = &mut self.roles[role];
        r.spawns += 1;
        let behaviour = match r.spec.bad_spawns {
            Some(n) if r.spawns > n => Behaviour::Healthy,
            _ => r.spec.behaviour,
        };
        let name = format!("{}#{}", r.spec.name, r.spawns);
        let spec = WorkerSpec {
            role: r.spec.name.clone(),
            behaviour,
            answer_delay: r.spec.answer_delay,
            stream_chunks: r.spec.stream_chunks,
        };
        let conn = out.spawn(name.clone(), Msg::Spawn(spec), r.spec.spawn_time);
        r.channel = Some(conn);
        r.last_used = Some(now);
        self.chans.insert(
            conn,
            Chan {
                role,
                name: name.clone(),
                alive: true,
                closed: false,
                in_flight: 0,
                readers: VecDeque::new(),
                joins: Vec::new(),
                work: VecDeque::new(),
                inbox: VecDeque::new(),
                send_lock: FifoLock::default(),
                recv_lock: FifoLock::default(),
                shut: false,
                close_deferred: false,
            },
        );
        self.record(out, kind::SPAWN_WORKER, role, Some(dead), Some(name));
        Ok(conn)
    }

    /// A client's `pool.<role>.call(...)` with the 300 s default timeout
    /// (`What::Call`), or its `async for chunk in pool.<role>.stream(kind,
    /// payload)` (`What::Stream`; pool.py `_spawn_and_stream`: `channel =
    /// await pool._ensure_channel(role)`, then transport_pipe.py
    /// `PipeChannel.stream`: `self._ensure_open()`, `self._bump_in_flight(1)`,
    /// `await self._send(kind, payload)`).
    fn start_request(&mut self, what: What, role: usize, now: Timestamp, out: &mut Outbox<Msg>) {
        let (started, failed) = match what {
            What::Stream => (kind::STREAM, kind::STREAM_FAILED),
            _ => (kind::CALL, kind::CALL_FAILED),
        };
        let conn = match self.ensure_channel(role, now, out) {
            Ok(c) => c,
            Err(why) => return self.record(out, failed, role, Some(why), None),
        };
        let name = self.chans[&conn].name.clone();
        self.record(out, started, role, None, Some(name.clone()));
        // `_ensure_open` (transport_pipe.py: `if self._closed: raise WorkerError("PoolShutdownError", ...)`).
        if self.chans[&conn].closed {
            return self.record(out, failed, role, Some(CLOSED), Some(name));
        }
        let id = self.new_task(what, role, conn);
        self.chans.get_mut(&conn).expect("live").in_flight += 1;
        self.send_lock(id, conn);
    }

    /// `reset_role_failures` (pool.py): `registration.crash_history.clear()`,
    /// `registration.degraded = False`, and nothing else: the channel is
    /// not touched and nothing is spawned (the next call or stream does
    /// that; the ticker pings only live roles). A plain method called
    /// from the UI's thread, not a coroutine: it takes no lock and works
    /// after a shutdown or with the loop stopped.
    fn reset_role_failures(&mut self, role: usize, out: &mut Outbox<Msg>) {
        let r = &mut self.roles[role];
        let cleared = r.crash_history.len();
        let was = std::mem::replace(&mut r.degraded, false);
        r.crash_history.clear();
        let msg = format!(
            "{cleared} crashes cleared{}",
            if was { ", was degraded" } else { "" }
        );
        self.record(out, kind::RESET_FAILURES, role, None, Some(msg));
    }

    /// The interpreter's clean exit (a `stop` of the pool process: the
    /// application's main returned). First `threading._shutdown` runs
    /// concurrent.futures' `_python_exit` (CPython 3.11
    /// `concurrent/futures/thread.py`: `_shutdown = True`, then `for t, q in
    /// items: t.join()`, registered by `threading._register_atexit(_python_exit)`),
    /// which joins every executor thread ever started, shut-down
    /// executors' included: a thread ends once its running item and the
    /// items queued before the exit are done. Then the `atexit` handlers,
    /// among them `multiprocessing.util._exit_function` (util.py 320-362:
    /// `for p in active_children(): if p.daemon: ... p._popen.terminate()`).
    /// Every worker is daemonic (transport_pipe.py `PipeSpawner.__init__(self,
    /// *, daemon: bool = True)`, `self._ctx.Process(..., daemon=self._daemon,
    /// ...)`; pool.py `WorkerPool.__init__`: `PipeSpawner()`).
    ///
    /// So while a thread is busy (a read blocked in `conn.recv()`, a
    /// `_join_process`, queued work) the process lingers and nobody is
    /// terminated; a read blocked on a hung worker never returns, and the
    /// process never exits (`docs/audits/lilbee-atexit.py`). Meanwhile the
    /// loop, on a daemon thread, still runs what is in progress, but
    /// nothing new reaches a worker: the clients are done, the ticker's
    /// ticks go on but find the executors shut (below), and any
    /// `run_in_executor` raises `RuntimeError` (`submit`: `if
    /// _shutdown: raise RuntimeError('cannot schedule new futures after
    /// interpreter shutdown')`).
    pub fn on_exit(&mut self, out: &mut Outbox<Msg>) {
        self.exiting = true;
        for role in &mut self.roles {
            role.todo.clear();
        }
        self.shutdown_at = None;
        // The ticker runs on: its loop is the `lilbee-bg-loop` daemon
        // thread, which `_python_exit`'s join does not stop (third lilbee
        // audit: its test at 6f4a0e7, `asyncio_loop.py` at 00fde52). Its
        // ticks find the executors shut: a ping of an idle role and a
        // spawn raise `RuntimeError`, a reap's close raises but closes
        // the pipe.
        let busy = self.busy_threads();
        if busy > 0 {
            let msg = format!("{busy} executor threads busy");
            out.record(kind::EXIT_BLOCKED, None, None, Some(Cow::Owned(msg)));
            out.linger();
        } else {
            // The engine ends the process once `Stop` is handled.
            self.terminate_daemons(out);
        }
    }

    /// Executor threads `_python_exit` still waits for: blocked reads,
    /// joins, and the work queued for them.
    fn busy_threads(&self) -> usize {
        (self.chans.values())
            .map(|c| c.readers.len() + c.joins.len() + c.work.len())
            .sum()
    }

    /// Once no executor thread is busy, `_exit_function` terminates each
    /// live worker and the process ends.
    fn exit_when_idle(&mut self, out: &mut Outbox<Msg>) {
        if !self.exiting || self.busy_threads() > 0 {
            return;
        }
        self.terminate_daemons(out);
        out.exit();
    }

    /// `_exit_function`: terminate every live (daemonic) worker.
    fn terminate_daemons(&mut self, out: &mut Outbox<Msg>) {
        self.exiting = false;
        let live: Vec<(ConnId, usize, String, bool)> = (self.chans.iter())
            .filter(|(_, c)| c.alive)
            .map(|(&conn, c)| (conn, c.role, c.name.clone(), c.shut))
            .collect();
        for (conn, role, name, shut) in live {
            // A worker whose pipe the pool closed itself has most likely
            // exited on the EOF (the engine tells the closed end nothing,
            // so `alive` cannot say): `p.is_alive()` is false and nothing
            // is terminated. The engine's `exit` record says what happened
            // either way (a hung worker that never read the EOF is
            // terminated by this `terminate`).
            if !shut {
                self.record(out, kind::ATEXIT_TERMINATE, role, None, Some(name));
            }
            out.terminate(conn);
        }
    }

    /// `ping_role(role)` from the ticker.
    fn start_ping(&mut self, role: usize, now: Timestamp, out: &mut Outbox<Msg>) -> Option<TaskId> {
        let conn = match self.ensure_channel(role, now, out) {
            Ok(c) => c,
            Err(why) => {
                self.record(out, kind::PING_FAILED, role, Some(why), None);
                return None;
            }
        };
        let ch = &self.chans[&conn];
        // "Skips when the channel already has in-flight work" (pool.py
        // `RoleAccessor.ping`: `if channel.in_flight > 0: self._pool._stamp_used(...); return`): only stamps `last_used`.
        if ch.in_flight > 0 {
            self.roles[role].last_used = Some(now);
            self.record(
                out,
                kind::PING_SKIPPED,
                role,
                None,
                Some(format!("in_flight {}", ch.in_flight)),
            );
            return None;
        }
        if ch.closed {
            self.record(out, kind::PING_FAILED, role, Some(CLOSED), None);
            return None;
        }
        let id = self.new_task(What::Ping, role, conn);
        self.tasks.get_mut(&id).expect("new").ticker = true;
        self.chans.get_mut(&conn).expect("live").in_flight += 1;
        self.send_lock(id, conn);
        Some(id)
    }

    /// `close(timeout=5)` of `conn`, awaited by `parent` if any.
    fn start_close(&mut self, conn: ConnId, parent: Option<TaskId>) -> Option<TaskId> {
        let ch = self.chans.get_mut(&conn)?;
        if ch.closed {
            return None; // idempotent: returns at once
        }
        ch.closed = true;
        let role = ch.role;
        let id = self.new_task(What::Close, role, conn);
        self.tasks.get_mut(&id).expect("new").parent = parent;
        self.send_lock(id, conn);
        Some(id)
    }

    /// `async with self._send_lock` (transport_pipe.py `_send`).
    fn send_lock(&mut self, task: TaskId, conn: ConnId) {
        self.tasks.get_mut(&task).expect("task").step = Step::SendLock;
        let ch = self.chans.get_mut(&conn).expect("channel");
        if ch.send_lock.acquire(task) {
            self.wakes.push_back((task, Wake::SendLock));
        }
    }

    fn release_send_lock(&mut self, task: TaskId, conn: ConnId) {
        let ch = self.chans.get_mut(&conn).expect("channel");
        if let Some(next) = ch.send_lock.release(task) {
            self.wakes.push_back((next, Wake::SendLock));
        }
    }

    /// `async with self._recv_lock` (transport_pipe.py `_recv`), inside `wait_for`.
    fn recv_lock(&mut self, task: TaskId, conn: ConnId) {
        self.tasks.get_mut(&task).expect("task").step = Step::RecvLock;
        let ch = self.chans.get_mut(&conn).expect("channel");
        if ch.recv_lock.acquire(task) {
            self.wakes.push_back((task, Wake::RecvLock));
        }
    }

    fn release_recv_lock(&mut self, task: TaskId, conn: ConnId) {
        let ch = self.chans.get_mut(&conn).expect("channel");
        if let Some(next) = ch.recv_lock.release(task) {
            self.wakes.push_back((next, Wake::RecvLock));
        }
    }

    /// `loop.run_in_executor(self._executor, ...)`.
    fn submit(&mut self, task: TaskId, conn: ConnId, work: Work, out: &mut Outbox<Msg>) {
        let ch = self.chans.get_mut(&conn).expect("channel");
        // `_python_exit` has set `_shutdown` (see `on_exit`): the same
        // `RuntimeError` as a shut executor's.
        if ch.shut || self.exiting {
            self.wakes.push_back((task, Wake::ExecutorShut));
            return;
        }
        ch.work.push_back((task, work));
        self.pump(conn, out);
        let ch = &self.chans[&conn];
        if ch.work.iter().any(|(t, _)| *t == task) {
            let role = ch.role;
            let msg = format!("{} {work:?} waits: {} threads busy", ch.name, ch.busy());
            self.record(out, kind::EXECUTOR_FULL, role, None, Some(msg));
        }
    }

    /// Free threads take the queued work, in order.
    fn pump(&mut self, conn: ConnId, out: &mut Outbox<Msg>) {
        let ch = self.chans.get_mut(&conn).expect("channel");
        let mut joins = Vec::new();
        while ch.busy() < THREADS {
            let Some((task, work)) = ch.work.pop_front() else {
                break;
            };
            match work {
                Work::Send(frame) => {
                    if ch.alive {
                        out.send(Dest::Conn(conn), Msg::Frame(frame));
                        self.wakes.push_back((task, Wake::Sent));
                    } else {
                        self.wakes.push_back((task, Wake::SendFailed));
                    }
                }
                Work::Recv => {
                    if let Some(f) = ch.inbox.pop_front() {
                        self.wakes.push_back((task, Wake::Frame(f)));
                    } else if !ch.alive {
                        self.wakes.push_back((task, Wake::Eof));
                    } else {
                        ch.readers.push_back(Some(task));
                    }
                }
                Work::Join => {
                    if ch.alive {
                        ch.joins.push(task);
                        joins.push(task);
                    } else {
                        self.wakes.push_back((task, Wake::Joined));
                    }
                }
            }
        }
        // `process.join(timeout)` counts from when a thread runs it.
        let at = self.now + self.cfg.shutdown_timeout;
        for task in joins {
            if let Some(t) = self.tasks.get_mut(&task) {
                t.deadline = Some((at, "join"));
            }
        }
    }

    /// Drop `task`'s pending executor work or orphan its reading thread
    /// (what cancelling `run_in_executor`'s future does), and its locks.
    fn abandon(&mut self, task: TaskId, conn: ConnId) {
        let ch = self.chans.get_mut(&conn).expect("channel");
        ch.work.retain(|(t, _)| *t != task);
        for r in &mut ch.readers {
            if *r == Some(task) {
                *r = None;
            }
        }
        // A running join thread is not in `work`: it keeps joining (see
        // `Task::detached`).
        self.release_send_lock(task, conn);
        self.release_recv_lock(task, conn);
    }

    /// A task's deadline passed: `wait_for` times out, or a join returns.
    fn expire(&mut self, id: TaskId, now: Timestamp, out: &mut Outbox<Msg>) {
        let Some(task) = self.tasks.get(&id).cloned() else {
            return;
        };
        match task.step {
            Step::Joining => {
                // `_join_process`: still alive after
                // join(timeout): terminate, join(2.0).
                let ch = self.chans.get_mut(&task.chan).expect("channel");
                if ch.alive {
                    ch.joins.retain(|t| *t != id);
                    ch.joins.push(id);
                    let name = ch.name.clone();
                    self.record(out, kind::TERMINATE, task.role, None, Some(name));
                    out.terminate(task.chan);
                    let t = self.tasks.get_mut(&id).expect("task");
                    t.step = Step::Terminated;
                    t.deadline = Some((now + Duration::from_secs(2), "join"));
                } else {
                    self.wakes.push_back((id, Wake::Joined));
                }
            }
            Step::Terminated => {
                self.chans
                    .get_mut(&task.chan)
                    .expect("channel")
                    .joins
                    .retain(|t| *t != id);
                self.wakes.push_back((id, Wake::Joined));
            }
            _ => {
                self.abandon(id, task.chan);
                self.wakes.push_back((id, Wake::Timeout));
            }
        }
    }

    /// Handle every wake, in order, until none is left.
    fn run(&mut self, now: Timestamp, out: &mut Outbox<Msg>) {
        while let Some((id, wake)) = self.wakes.pop_front() {
            if self.stopped {
                self.wakes.clear();
                return;
            }
            let Some(task) = self.tasks.get(&id).cloned() else {
                continue;
            };
            if task.detached {
                if wake == Wake::Joined {
                    self.tasks.remove(&id);
                }
                continue;
            }
            self.step(id, task, wake, now, out);
        }
        // `pool.shutdown()` returned: `run_sync` returns and
        // `runtime.shutdown()` stops the loop. What was ready at this
        // instant has run (the stop takes a thread hop).
        if self.shutdown && self.draining.is_empty() && !self.stopped {
            self.stop_loop(Some("drained"), out);
        }
    }

    /// `runtime.shutdown()` (pool.py `PoolRuntime.shutdown`:
    /// `loop.call_soon_threadsafe(loop.stop)`): after the drain, or after
    /// `run_sync`'s `TimeoutError` (logged, `"forcing runtime stop"`).
    /// Only running executor threads go on: a `_join_process` keeps its
    /// join and `terminate`.
    fn stop_loop(&mut self, why: Option<&'static str>, out: &mut Outbox<Msg>) {
        self.stopped = true;
        self.drain_until = None;
        self.wakes.clear();
        for (id, task) in &mut self.tasks {
            let joining = self
                .chans
                .get(&task.chan)
                .is_some_and(|c| c.joins.contains(id));
            if !joining {
                task.deadline = None;
            }
        }
        out.record(kind::LOOP_STOPPED, None, why.map(Cow::Borrowed), None);
    }

    /// Whether `wake` comes too late: the task's `wait_for` deadline is at
    /// or before `now`, so on CPython >= 3.12 the timeout wins and the
    /// wake is lost (the read's frame, or its `EOFError`, was consumed by
    /// the reader thread; a lock handed over is passed on).
    ///
    /// It happens when the pool process was paused (SIGSTOP) across the
    /// deadline (the engine hands over what arrived during the pause, then
    /// fires the timer), or when a reply arrives at the deadline's instant.
    /// The reply reaches the loop from the reader thread through
    /// `call_soon_threadsafe(_set_state, ...)` (asyncio/futures.py 3.12.1
    /// l. 403, `_chain_future`, via `run_in_executor` -> `wrap_future`);
    /// the task it wakes runs one `_run_once` batch later (`call_soon`).
    /// `_run_once` (base_events.py 3.12.1 l. 1933-1957) polls, then moves
    /// every due timer into `_ready`, then runs the batch: so a deadline
    /// that has passed when `_set_state` runs fires in that same batch or
    /// earlier. Its `Timeout._on_timeout` (timeouts.py 3.12.1 l. 121-123,
    /// used by `wait_for`, tasks.py 3.12.1 l. 519-520) calls
    /// `task.cancel()`: the awaited future already done, `Task.cancel`
    /// sets `_must_cancel` (tasks.py 3.12.1 l. 242-248), the task's next
    /// step throws `CancelledError` in place of the reply, and
    /// `Timeout.__aexit__` turns it into `TimeoutError` (timeouts.py l.
    /// 112-115). A lock waiter's acquire is cancelled the same way and
    /// wakes the next waiter (locks.py 3.12.1 l. 116-118): no read starts.
    /// transport_pipe.py: `call` (l. 232) and `ping` (l. 287) `await
    /// asyncio.wait_for(self._recv(), timeout=timeout)`, `_recv` (l.
    /// 211-218) catches only `EOFError`/`OSError`s, so the late EOF is not
    /// a `WorkerCrashError` and `_on_crash` does not run.
    ///
    /// CPython 3.11's `wait_for` (tasks.py 3.11.7 l. 466-500) wraps
    /// `_recv()` in a task and checks `fut.done()` once its waiter is
    /// released: after a pause, which of the reader thread and the loop's
    /// timer phase goes first decides (the audit's SIGSTOP probes: 5 of 10
    /// replies, 5 of 8 EOFs won). The profile models >= 3.12
    /// (`docs/audits/lilbee-timeout-vs-reply.py`; docs/models/lilbee.md).
    fn timeout_wins(task: &Task, wake: Wake, now: Timestamp) -> bool {
        matches!(wake, Wake::Frame(_) | Wake::Eof | Wake::RecvLock)
            && task
                .deadline
                .is_some_and(|(at, why)| why == "wait_for" && at <= now)
    }

    fn set_step(&mut self, id: TaskId, step: Step) {
        self.tasks.get_mut(&id).expect("task").step = step;
    }

    fn step(&mut self, id: TaskId, task: Task, wake: Wake, now: Timestamp, out: &mut Outbox<Msg>) {
        let conn = task.chan;
        if Self::timeout_wins(&task, wake, now) {
            self.tasks.get_mut(&id).expect("task").deadline = None;
            return self.expire(id, now, out);
        }
        match (task.step, wake) {
            (Step::SendLock, Wake::SendLock) => {
                self.set_step(id, Step::Sending);
                let frame = match task.what {
                    What::Call => Frame::Request,
                    What::Ping => Frame::Ping,
                    What::Close => Frame::Shutdown,
                    What::Stream => Frame::Stream,
                };
                self.submit(id, conn, Work::Send(frame), out);
            }
            (Step::Sending, Wake::Sent) => {
                self.release_send_lock(id, conn);
                // `asyncio.wait_for(self._recv(), timeout=...)`: the
                // timeout covers the recv lock and the read, never the
                // send. A stream has none (`msg_kind, value = await self._recv()`).
                let timeout = match task.what {
                    What::Call => Some(self.cfg.call_timeout),
                    What::Ping => Some(self.cfg.health_timeout),
                    What::Close => Some(self.cfg.shutdown_timeout),
                    What::Stream => None,
                };
                self.tasks.get_mut(&id).expect("task").deadline =
                    timeout.map(|t| (now + t, "wait_for"));
                self.recv_lock(id, conn);
            }
            (Step::Sending, Wake::SendFailed) => {
                self.release_send_lock(id, conn);
                self.crashed(id, &task, now, out);
            }
            (Step::RecvLock, Wake::RecvLock) => {
                self.set_step(id, Step::Receiving);
                self.submit(id, conn, Work::Recv, out);
            }
            (Step::Receiving, Wake::Frame(f)) => {
                self.release_recv_lock(id, conn);
                self.tasks.get_mut(&id).expect("task").deadline = None;
                self.received(id, &task, f, now, out);
            }
            (Step::Receiving, Wake::Eof) => {
                self.release_recv_lock(id, conn);
                self.tasks.get_mut(&id).expect("task").deadline = None;
                self.crashed(id, &task, now, out);
            }
            (_, Wake::Timeout) => self.timed_out(id, &task, now, out),
            (_, Wake::Cancelled) => self.cancelled(id, &task, CANCELLED, now, out),
            (_, Wake::ExecutorShut) => self.cancelled(id, &task, RUNTIME, now, out),
            (Step::Joining | Step::Terminated, Wake::Joined) => {
                self.tasks.get_mut(&id).expect("task").deadline = None;
                self.close_done(id, &task, None, now, out);
            }
            (Step::CrashClose(_), Wake::Closed(raised)) => {
                self.after_close(id, &task, raised, now, out);
            }
            _ => {}
        }
    }

    /// A reply reached the task.
    fn received(
        &mut self,
        id: TaskId,
        task: &Task,
        f: Frame,
        now: Timestamp,
        out: &mut Outbox<Msg>,
    ) {
        match task.what {
            What::Call => {
                self.finish_op(id, task.chan);
                let name = self.chans[&task.chan].name.clone();
                if f == Frame::Result {
                    // `_stamp_used` after a successful call (pool.py `RoleAccessor.call`).
                    self.roles[task.role].last_used = Some(now);
                    self.record(out, kind::CALL_OK, task.role, None, Some(name));
                } else {
                    // The reply was another's (a pong an orphan did not
                    // take): `ProtocolError`, not a crash.
                    self.record(
                        out,
                        kind::CALL_FAILED,
                        task.role,
                        Some(PROTOCOL),
                        Some(name),
                    );
                }
                self.tasks.remove(&id);
            }
            What::Ping => {
                self.finish_op(id, task.chan);
                if f == Frame::Pong {
                    self.roles[task.role].last_used = Some(now);
                    self.record(out, kind::PING_OK, task.role, None, None);
                } else {
                    let msg = format!("reply {f:?}");
                    self.record(out, kind::PING_FAILED, task.role, Some(PROTOCOL), Some(msg));
                }
                self.ticker_task_done(id, now, out);
            }
            // Any reply ends the wait for the ack (`close`: `await asyncio.wait_for(self._recv(), timeout=timeout)`).
            What::Close => self.join(id, task.chan, now, out),
            What::Stream => self.stream_frame(id, task, f, now, out),
        }
    }

    /// transport_pipe.py `PipeChannel.stream`'s loop: `if msg_kind ==
    /// STREAM_CHUNK_KIND: yield value` / `elif msg_kind == STREAM_END_KIND:
    /// return` / `elif msg_kind == PONG_KIND: continue` / `else: raise
    /// WorkerError("ProtocolError", ...)`. Each frame is one `_recv()`,
    /// which releases `_recv_lock` when it returns: the next read queues
    /// behind whoever waits for the lock. A clean end stamps `last_used`
    /// (pool.py `_spawn_and_stream`: `pool._stamp_used(role)` after the
    /// `async for`); a `ProtocolError` is not a `WorkerCrashError`, so no
    /// `_on_crash`.
    fn stream_frame(
        &mut self,
        id: TaskId,
        task: &Task,
        f: Frame,
        now: Timestamp,
        out: &mut Outbox<Msg>,
    ) {
        match f {
            Frame::StreamChunk | Frame::Pong => {
                if f == Frame::StreamChunk {
                    self.tasks.get_mut(&id).expect("task").chunks += 1;
                }
                self.recv_lock(id, task.chan);
            }
            Frame::StreamEnd => {
                self.finish_op(id, task.chan);
                self.roles[task.role].last_used = Some(now);
                let name = self.chans[&task.chan].name.clone();
                let chunks = self.tasks[&id].chunks;
                let msg = format!("{name} {chunks} chunks");
                self.record(out, kind::STREAM_OK, task.role, None, Some(msg));
                self.tasks.remove(&id);
            }
            _ => {
                self.finish_op(id, task.chan);
                let name = self.chans[&task.chan].name.clone();
                let msg = format!("{name} reply {f:?}");
                self.record(
                    out,
                    kind::STREAM_FAILED,
                    task.role,
                    Some(PROTOCOL),
                    Some(msg),
                );
                self.tasks.remove(&id);
            }
        }
    }

    /// `in_flight -= 1` in the `finally` of call and ping.
    fn finish_op(&mut self, _id: TaskId, conn: ConnId) {
        let ch = self.chans.get_mut(&conn).expect("channel");
        ch.in_flight = ch.in_flight.saturating_sub(1);
    }

    /// `WorkerCrashError`: a call or ping runs `_on_crash` and awaits its
    /// close; a close suppresses it and joins.
    fn crashed(&mut self, id: TaskId, task: &Task, now: Timestamp, out: &mut Outbox<Msg>) {
        match task.what {
            What::Call | What::Ping | What::Stream => {
                // `PipeChannel.stream` sends before its `try:`
                // (`self._bump_in_flight(1)` / `await self._send(kind,
                // payload)` / `try:`): a failed send skips the `finally`
                // and `in_flight` stays raised on the dropped channel.
                if task.in_try() {
                    self.finish_op(id, task.chan);
                }
                match self.on_crash(task.role, now, id, out) {
                    Some(close) => self.set_step(id, Step::CrashClose(close)),
                    None => self.after_close(id, task, None, now, out),
                }
            }
            What::Close => self.join(id, task.chan, now, out),
        }
    }

    fn timed_out(&mut self, id: TaskId, task: &Task, now: Timestamp, out: &mut Outbox<Msg>) {
        match task.what {
            What::Call => {
                self.finish_op(id, task.chan);
                // `TimeoutError` is not a `WorkerCrashError`: the accessor
                // re-raises it without `_on_crash` (pool.py `RoleAccessor.call`: `except WorkerCrashError:`).
                let name = self.chans[&task.chan].name.clone();
                self.record(out, kind::CALL_FAILED, task.role, Some(TIMEOUT), Some(name));
                self.tasks.remove(&id);
            }
            What::Ping => {
                self.finish_op(id, task.chan);
                // transport_pipe.py `ping`: `wait_for` raises `TimeoutError`
                // outside `_recv`'s `except (EOFError, OSError, ...)`, and
                // the accessor catches only `WorkerCrashError` (pool.py
                // `RoleAccessor.ping`): not a crash, the channel is kept.
                self.record(out, kind::PING_FAILED, task.role, Some(TIMEOUT), None);
                self.ticker_task_done(id, now, out);
            }
            // `suppress(asyncio.TimeoutError, WorkerError)` (transport_pipe.py `close`).
            What::Close => self.join(id, task.chan, now, out),
            // A stream sets no deadline.
            What::Stream => {}
        }
    }

    /// The task ends on `why` (a cancel, or the `RuntimeError` of a shut
    /// executor): no crash, no stamp; a close still runs its `finally`.
    fn cancelled(
        &mut self,
        id: TaskId,
        task: &Task,
        why: &'static str,
        now: Timestamp,
        out: &mut Outbox<Msg>,
    ) {
        self.abandon(id, task.chan);
        let joining = self.chans[&task.chan].joins.contains(&id);
        if task.what == What::Close && joining {
            // transport_pipe.py `close`: `await asyncio.get_running_loop()
            // .run_in_executor(self._executor, self._join_process, timeout)`:
            // the cancel ends the await, not `_join_process`
            // (`self._process.join(timeout=timeout)`, then
            // `if self._process.is_alive(): ... self._process.terminate()`).
            self.tasks.get_mut(&id).expect("task").detached = true;
            return self.close_finally(id, task, Some(why), now, out);
        }
        self.tasks.get_mut(&id).expect("task").deadline = None;
        match task.what {
            What::Call | What::Ping | What::Stream => {
                if !matches!(task.step, Step::CrashClose(_)) && task.in_try() {
                    self.finish_op(id, task.chan);
                }
                let kind = match task.what {
                    What::Call => kind::CALL_FAILED,
                    What::Stream => kind::STREAM_FAILED,
                    _ => kind::PING_FAILED,
                };
                let name = self.chans[&task.chan].name.clone();
                self.record(out, kind, task.role, Some(why), Some(name));
                if let Step::CrashClose(c) = task.step {
                    self.cancel(c);
                }
                // A ping's error reaches the ticker, which logs it and
                // goes on (health_ticker.py `_tick_once`: `except
                // Exception: log.debug(...)`); after a shutdown the ticker
                // is gone. A `CancelledError` is a `BaseException`: it
                // escapes that guard and `_ticker_loop` returns on it
                // (seed l. 61-66): no tick ever again (second lilbee
                // audit, point 3; no known path reaches it outside a
                // shutdown).
                let the_tickers =
                    matches!(&self.ticker, Ticker::Pinging { task: Some(t), .. } if *t == id);
                if why == CANCELLED && the_tickers {
                    self.tasks.remove(&id);
                    self.ticker = Ticker::Stopped;
                    out.record(
                        kind::TICKER_DIED,
                        None,
                        Some(Cow::Borrowed(CANCELLED)),
                        None,
                    );
                    return;
                }
                self.ticker_task_done(id, now, out);
            }
            What::Close => {
                // The `finally` still runs: conn.close(), executor
                // shutdown; the process is left to read EOF.
                self.close_done(id, task, Some(why), now, out);
            }
        }
    }

    /// `run_in_executor(self._executor, self._join_process, timeout)`.
    fn join(&mut self, id: TaskId, conn: ConnId, now: Timestamp, out: &mut Outbox<Msg>) {
        self.release_send_lock(id, conn);
        self.release_recv_lock(id, conn);
        let t = self.tasks.get_mut(&id).expect("task");
        t.step = Step::Joining;
        t.deadline = None;
        let _ = now;
        self.submit(id, conn, Work::Join, out);
    }

    /// The close's `finally`: `conn.close()`, `executor.shutdown(wait=
    /// False, cancel_futures=True)`; then its awaiter resumes.
    fn close_done(
        &mut self,
        id: TaskId,
        task: &Task,
        raised: Option<&'static str>,
        now: Timestamp,
        out: &mut Outbox<Msg>,
    ) {
        let ch = self.chans.get_mut(&task.chan).expect("channel");
        ch.joins.retain(|t| *t != id);
        self.tasks.remove(&id);
        self.close_finally(id, task, raised, now, out);
    }

    /// The `finally` of `close()` (the task itself is left to the caller);
    /// then its awaiter resumes, or gets what the close `raised`.
    fn close_finally(
        &mut self,
        id: TaskId,
        task: &Task,
        raised: Option<&'static str>,
        now: Timestamp,
        out: &mut Outbox<Msg>,
    ) {
        self.draining.retain(|t| *t != id);
        let ch = self.chans.get_mut(&task.chan).expect("channel");
        ch.shut = true;
        let cancelled: Vec<TaskId> = ch.work.drain(..).map(|(t, _)| t).collect();
        let name = ch.name.clone();
        // transport_pipe.py `close`'s `finally`: `self._conn.close()`.
        if ch.readers.is_empty() {
            out.close(task.chan);
        } else {
            ch.close_deferred = true;
        }
        self.record(out, kind::CLOSED, task.role, None, Some(name));
        for t in cancelled {
            self.wakes.push_back((t, Wake::Cancelled));
        }
        match task.parent {
            Some(REAPER) => self.reap_close_done(raised, now, out),
            Some(parent) => self.wakes.push_back((parent, Wake::Closed(raised))),
            None => {}
        }
    }

    /// What a call, ping or stream does once `_on_crash` returned: it
    /// re-raises its `WorkerCrashError` (pool.py `RoleAccessor.call` l.
    /// 117-119, `ping` l. 147-149, `_spawn_and_stream` l. 181-183:
    /// `except WorkerCrashError: await ...._on_crash(role); raise`). Unless
    /// `_on_crash` raised: its `await channel.close(...)` (l. 339-341)
    /// suppresses only `WorkerError`, and while the interpreter exits the
    /// close's `_send` gets `RuntimeError('cannot schedule new futures after
    /// interpreter shutdown')`, or `'... after shutdown'` when an exiting
    /// worker thread has set the executor's `_shutdown` first (thread.py
    /// l. 102-106; the session-9 audit saw that in 8 of 11 runs), from
    /// `run_in_executor` (transport_pipe.py
    /// `_send` l. 206-209 and `close`'s `suppress(asyncio.TimeoutError,
    /// WorkerError)` l. 317 let it through, after the `finally` closed the
    /// pipe): raised inside the `except` block, it replaces the
    /// `WorkerCrashError` (third lilbee audit, point 2). The crash is
    /// recorded all the same (`_on_crash` appends before the close).
    fn after_close(
        &mut self,
        id: TaskId,
        task: &Task,
        raised: Option<&'static str>,
        now: Timestamp,
        out: &mut Outbox<Msg>,
    ) {
        let why = raised.unwrap_or(CRASH);
        match task.what {
            What::Call => {
                let name = self.chans[&task.chan].name.clone();
                self.record(out, kind::CALL_FAILED, task.role, Some(why), Some(name));
                self.tasks.remove(&id);
            }
            What::Ping => {
                self.record(out, kind::PING_FAILED, task.role, Some(why), None);
                self.ticker_task_done(id, now, out);
            }
            What::Stream => {
                let name = self.chans[&task.chan].name.clone();
                self.record(out, kind::STREAM_FAILED, task.role, Some(why), Some(name));
                self.tasks.remove(&id);
            }
            What::Close => {}
        }
    }

    /// `_on_crash` (pool.py): drop the role's channel (whichever
    /// it is now), prune `crash_history` entries `< now - 60`, append
    /// `now`, degraded if more than 3 remain; then close the dropped
    /// channel, awaited by the crashed operation.
    fn on_crash(
        &mut self,
        role: usize,
        now: Timestamp,
        by: TaskId,
        out: &mut Outbox<Msg>,
    ) -> Option<TaskId> {
        // The worker whose EOF or broken pipe raised it (for the trace).
        let worker = self
            .tasks
            .get(&by)
            .map_or_else(String::new, |t| self.chans[&t.chan].name.clone());
        let window = self.cfg.restart_window;
        let budget = self.cfg.restart_budget;
        let r = &mut self.roles[role];
        let channel = r.channel.take();
        let cutoff = now.saturating_sub(window);
        while r.crash_history.front().is_some_and(|&t| t < cutoff) {
            r.crash_history.pop_front();
        }
        r.crash_history.push_back(now);
        let count = r.crash_history.len();
        let newly = count > budget && !r.degraded;
        if count > budget {
            r.degraded = true;
        }
        self.record(
            out,
            kind::CRASH,
            role,
            None,
            Some(format!("{worker} {count} in window")),
        );
        if newly {
            self.record(
                out,
                kind::DEGRADED,
                role,
                None,
                Some(format!("{count} crashes")),
            );
        }
        channel.and_then(|c| self.start_close(c, Some(by)))
    }

    fn cancel(&mut self, id: TaskId) {
        self.wakes.push_back((id, Wake::Cancelled));
    }

    /// `_tick_once` (health_ticker.py).
    fn tick(&mut self, now: Timestamp, out: &mut Outbox<Msg>) {
        let snapshot: Vec<usize> = (0..self.roles.len())
            .filter(|&i| self.roles[i].channel.is_some_and(|c| self.chans[&c].alive))
            .collect();
        if snapshot.is_empty() {
            out.record(kind::TICK, None, Some(Cow::Borrowed("no live roles")), None);
            self.ticker = Ticker::Sleeping(now + self.cfg.tick_interval);
            return;
        }
        let names: Vec<&str> = snapshot
            .iter()
            .map(|&i| self.roles[i].spec.name.as_str())
            .collect();
        out.record(
            kind::TICK,
            None,
            Some(Cow::Borrowed("live roles")),
            Some(Cow::Owned(names.join(","))),
        );
        self.ticker = Ticker::Reaping {
            now,
            next: 0,
            snapshot,
            closing: None,
        };
        self.reap(now, out);
    }

    /// `reap_idle` (pool.py), from role `next` on, with the one
    /// `now` of the pass; then the pings.
    fn reap(&mut self, now: Timestamp, out: &mut Outbox<Msg>) {
        let Ticker::Reaping {
            now: pass_now,
            next,
            snapshot,
            closing: None,
        } = self.ticker.clone()
        else {
            return;
        };
        let max_idle = self.cfg.max_idle;
        if max_idle != Duration::ZERO {
            for i in next..self.roles.len() {
                let r = &self.roles[i];
                let Some(c) = r.channel else { continue };
                let ch = &self.chans[&c];
                if !ch.alive || ch.in_flight > 0 {
                    continue;
                }
                let Some(last) = r.last_used else { continue };
                let idle = pass_now.saturating_since(last);
                if idle < max_idle {
                    continue;
                }
                self.roles[i].channel = None;
                let msg = format!("{} idle {idle}", ch.name);
                self.record(out, kind::REAP, i, None, Some(msg));
                let close = self.start_close(c, Some(REAPER));
                self.ticker = Ticker::Reaping {
                    now: pass_now,
                    next: i + 1,
                    snapshot: snapshot.clone(),
                    closing: close,
                };
                if close.is_some() {
                    return;
                }
            }
        }
        self.ticker = Ticker::Pinging {
            snapshot,
            next: 0,
            task: None,
        };
        self.ping_next(now, out);
    }

    /// The next `ping_role` of the tick, or the sleep after the last.
    fn ping_next(&mut self, now: Timestamp, out: &mut Outbox<Msg>) {
        loop {
            let Ticker::Pinging {
                snapshot,
                next,
                task: None,
            } = self.ticker.clone()
            else {
                return;
            };
            let Some(&role) = snapshot.get(next) else {
                self.ticker = Ticker::Sleeping(now + self.cfg.tick_interval);
                return;
            };
            let task = self.start_ping(role, now, out);
            self.ticker = Ticker::Pinging {
                snapshot,
                next: next + 1,
                task,
            };
            if task.is_some() {
                return;
            }
        }
    }

    fn ticker_task_done(&mut self, id: TaskId, now: Timestamp, out: &mut Outbox<Msg>) {
        self.tasks.remove(&id);
        if let Ticker::Pinging { task, .. } = &mut self.ticker {
            if *task == Some(id) {
                *task = None;
                self.ping_next(now, out);
            }
        }
    }

    /// `shutdown_pool_runtime` (pool.py): cancel the ticker (what
    /// it awaits is cancelled), then `pool.shutdown()` (pool.py):
    /// every registration's channel dropped, each closed concurrently.
    fn pool_shutdown(&mut self, now: Timestamp, out: &mut Outbox<Msg>) {
        out.record(kind::SHUTDOWN, None, None, None);
        match std::mem::replace(&mut self.ticker, Ticker::Stopped) {
            Ticker::Pinging { task: Some(t), .. } => self.cancel(t),
            Ticker::Reaping {
                closing: Some(t), ..
            } => self.cancel(t),
            _ => {}
        }
        self.run(now, out);
        self.shutdown = true;
        let live: Vec<ConnId> = self
            .roles
            .iter_mut()
            .filter_map(|r| r.channel.take())
            .collect();
        self.drain_until = Some(now + self.cfg.drain_timeout);
        for c in live {
            if let Some(id) = self.start_close(c, None) {
                self.draining.push(id);
            }
        }
    }

    /// A close the ticker's reap awaited has returned, or `raised` (while
    /// the interpreter exits, `RuntimeError` from its executor, after its
    /// `finally` closed the pipe): then `reap_idle` raises, the tick logs
    /// it and goes on to the pings (health_ticker.py l. 46-49). A close
    /// whose join thread was already running when the exit began returns
    /// normally, and the reap goes on.
    fn reap_close_done(
        &mut self,
        raised: Option<&'static str>,
        now: Timestamp,
        out: &mut Outbox<Msg>,
    ) {
        if raised.is_some() {
            if let Ticker::Reaping { snapshot, .. } = &self.ticker {
                self.ticker = Ticker::Pinging {
                    snapshot: snapshot.clone(),
                    next: 0,
                    task: None,
                };
                return self.ping_next(now, out);
            }
        }
        if let Ticker::Reaping { closing, .. } = &mut self.ticker {
            *closing = None;
        }
        self.reap(now, out);
    }
}
