//! lilbee's inference worker pool: per-role worker processes on pipes, a
//! health ticker that reaps idle ones and pings live ones, and a crash
//! budget that degrades a role.
//!
//! Upstream: tobocop2/lilbee at 132771384e4ca0dcc46f34b7fd09eafc4688814f,
//! `src/lilbee/providers/worker/pool.py` (`WorkerPool`, `RoleAccessor`,
//! `shutdown_pool_runtime`), `transport_pipe.py` (`PipeChannel`),
//! `worker_runtime.py` (`run_worker`), and `health_ticker.py` (the seed
//! document `002_*.txt`, identical in logic to 4855bd1381904f2ab204c033a1e90a17a99bb821).
//! What each point maps to, and the upstream behaviours reproduced on
//! purpose, is in `docs/models/lilbee.md`.
//!
//! Nodes: one `pool` (the lilbee process: pool, ticker, clients) and one
//! `role` per registered role. A role node runs nothing (it names the role
//! in records, as their peer); the pool spawns each role's workers as
//! child processes on its host (the pipe medium, `Outbox::spawn`).

mod fuzz;
pub mod invariants;
mod pool;
mod setup;
mod worker;

use std::borrow::Cow;

use heartsim_sim::trace::{Reason, RecordKind};
use heartsim_sim::{Deadline, Duration, Input, Machine, Now, Outbox, Timestamp};
use proptest::strategy::BoxedStrategy;
use schemars::{JsonSchema, SchemaGenerator};
use serde::{Deserialize, Serialize};

pub use pool::Pool;
pub use setup::{ConfigSection, NodeKeys, Setup};
pub use worker::{Behaviour, Worker, WorkerSpec};

use crate::scenario::{self, AnySetup, NodeSection, ScenarioError, SectionSchemas, Sections};

/// The model, as the registry lists it.
pub const MODEL: &dyn scenario::Model = &Lilbee;

pub struct Lilbee;

/// The pinned upstream version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// pool.py and transport_pipe.py at 132771384e4ca0dcc46f34b7fd09eafc4688814f:
    /// one pipe per worker, sticky degraded, pings skipped while work is in
    /// flight, a ping timeout not a crash. On CPython >= 3.12's asyncio: a
    /// reply that meets its expired `wait_for` deadline in one loop batch
    /// loses to it (3.11 races there; `docs/models/lilbee.md`, "A reply
    /// that comes as the deadline passes").
    L13277138,
}

impl Profile {
    pub const ALL: [Profile; 1] = [Profile::L13277138];
    pub const fn name(self) -> &'static str {
        match self {
            Profile::L13277138 => "lilbee-13277138",
        }
    }
    const fn entry(self) -> scenario::Profile {
        scenario::Profile {
            name: self.name(),
            about: match self {
                Profile::L13277138 => "lilbee 132771384e4c on CPython >= 3.12: one pipe per worker, 2 reader threads, sticky degraded, a ping timeout is not a crash",
            },
        }
    }
    pub fn from_name(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name() == name)
    }
}

const PROFILES: [scenario::Profile; 1] = [Profile::L13277138.entry()];

/// Pool-wide settings, `[config]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `max_idle_s`; zero turns reaping off (pool.py `_DEFAULT_MAX_IDLE_S = 0.0`).
    pub max_idle: Duration,
    /// `_TICK_INTERVAL_S` (health_ticker.py `_TICK_INTERVAL_S = 30.0`).
    pub tick_interval: Duration,
    /// `_HEALTH_TIMEOUT_S` (pool.py `_HEALTH_TIMEOUT_S = 5.0`).
    pub health_timeout: Duration,
    /// `_DEFAULT_CALL_TIMEOUT_S` (pool.py `_DEFAULT_CALL_TIMEOUT_S = 300.0`).
    pub call_timeout: Duration,
    /// `_DEFAULT_SHUTDOWN_TIMEOUT_S` (pool.py `_DEFAULT_SHUTDOWN_TIMEOUT_S = 5.0`): close()'s ack wait
    /// and join.
    pub shutdown_timeout: Duration,
    /// `_RESTART_BUDGET` (pool.py `_RESTART_BUDGET = 3`): degraded past this many.
    pub restart_budget: usize,
    /// `_RESTART_WINDOW_S` (pool.py `_RESTART_WINDOW_S = 60.0`).
    pub restart_window: Duration,
    /// `shutdown_pool_runtime` runs at this time.
    pub shutdown_at: Option<Timestamp>,
    /// `shutdown_pool_runtime`'s `drain_timeout_s` (pool.py
    /// `drain_timeout_s: float = 10.0`): `run_sync(pool.shutdown(),
    /// timeout=drain_timeout_s)` gives up after this, then the runtime
    /// loop is stopped.
    pub drain_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_idle: Duration::ZERO,
            tick_interval: Duration::from_secs(30),
            health_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(300),
            shutdown_timeout: Duration::from_secs(5),
            restart_budget: 3,
            restart_window: Duration::from_secs(60),
            shutdown_at: None,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// One registered role: how its workers behave, and its clients' calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleSpec {
    pub name: String,
    pub behaviour: Behaviour,
    /// The behaviour applies to the first this many spawns; later ones
    /// are healthy (`None`: all).
    pub bad_spawns: Option<u32>,
    pub answer_delay: Duration,
    /// From spawn until the worker reads its pipe.
    pub spawn_time: Duration,
    /// When clients call, on the pool's monotonic clock.
    pub calls: Vec<Timestamp>,
    /// When clients start a stream (`pool.<role>.stream(...)`), on the
    /// pool's monotonic clock.
    pub streams: Vec<Timestamp>,
    /// How many `stream_chunk` frames a worker sends for a stream, one
    /// every `answer_delay`, before its `stream_end`.
    pub stream_chunks: u32,
    /// When an operator calls `pool.reset_role_failures(role)` (the UI's
    /// "retry"), on the pool's monotonic clock.
    pub resets: Vec<Timestamp>,
}

/// The record kinds the pool writes (node: the pool; peer: the role).
pub mod kind {
    pub const TICK: &str = "tick";
    pub const REAP: &str = "reap";
    pub const SPAWN_WORKER: &str = "spawn-worker";
    pub const CALL: &str = "call";
    pub const CALL_OK: &str = "call-ok";
    pub const CALL_FAILED: &str = "call-failed";
    pub const STREAM: &str = "stream";
    pub const STREAM_OK: &str = "stream-ok";
    pub const STREAM_FAILED: &str = "stream-failed";
    pub const RESET_FAILURES: &str = "reset-failures";
    pub const ATEXIT_TERMINATE: &str = "atexit-terminate";
    pub const EXIT_BLOCKED: &str = "exit-blocked";
    pub const PING_OK: &str = "ping-ok";
    pub const PING_SKIPPED: &str = "ping-skipped";
    pub const PING_FAILED: &str = "ping-failed";
    pub const CRASH: &str = "crash-recorded";
    pub const DEGRADED: &str = "degraded";
    pub const TERMINATE: &str = "terminate";
    pub const CLOSED: &str = "closed";
    pub const EXECUTOR_FULL: &str = "executor-full";
    pub const SHUTDOWN: &str = "shutdown";
    pub const LOOP_STOPPED: &str = "loop-stopped";
    pub const TICKER_DIED: &str = "ticker-died";
}

const FAILURES: &[Reason] = &[
    Reason::Is("WorkerCrashError"),
    Reason::Is("TimeoutError"),
    Reason::Is("RoleDegradedError"),
    Reason::Is("PoolShutdownError"),
    Reason::Is("CancelledError"),
    Reason::Is("RuntimeError: executor shut down"),
    Reason::Is("WorkerError: channel closed"),
    Reason::Is("WorkerError: ProtocolError"),
];

const RECORDS: &[RecordKind] = &[
    RecordKind::decision(
        kind::TICK,
        &[Reason::Is("live roles"), Reason::Is("no live roles")],
        "ticker: a tick began (msg: the live roles it snapshot; `no live roles`: it returned at once, no reap, no ping)",
    ),
    RecordKind::decision(
        kind::REAP,
        &[],
        "reap_idle closed an idle role's worker (msg: `idle <time>` since last_used)",
    ),
    RecordKind::decision(
        kind::SPAWN_WORKER,
        &[Reason::Is("no channel"), Reason::Is("process dead")],
        "_ensure_channel spawned a worker (msg: its name); `process dead`: it replaced a dead one without a crash",
    ),
    RecordKind::decision(
        kind::CALL,
        &[],
        "a client called the role (msg: the worker it uses)",
    ),
    RecordKind::decision(kind::CALL_OK, &[], "a call returned a result"),
    RecordKind::decision(kind::CALL_FAILED, FAILURES, "a call raised (reason: what)"),
    RecordKind::decision(
        kind::STREAM,
        &[],
        "a client started a stream on the role (msg: the worker it uses)",
    ),
    RecordKind::decision(
        kind::STREAM_OK,
        &[],
        "a stream ended with `stream_end`, last_used stamped (msg: `<worker> <n> chunks`, the chunks its reader got)",
    ),
    RecordKind::decision(kind::STREAM_FAILED, FAILURES, "a stream raised (reason: what)"),
    RecordKind::decision(
        kind::RESET_FAILURES,
        &[],
        "reset_role_failures: crash history cleared, degraded mark lifted; the channel untouched (msg: `<n> crashes cleared`, and `, was degraded`)",
    ),
    RecordKind::decision(
        kind::ATEXIT_TERMINATE,
        &[],
        "the interpreter's clean exit (a `stop`), once no executor thread is busy: multiprocessing's `_exit_function` terminated a live daemonic worker (msg: its name)",
    ),
    RecordKind::decision(
        kind::EXIT_BLOCKED,
        &[],
        "the interpreter's clean exit (a `stop`) waits in concurrent.futures' `_python_exit` for busy executor threads (blocked reads, joins, queued work): the process lingers, and `atexit-terminate` comes once they are idle, never if a read is blocked on a hung worker (msg: `<n> executor threads busy`)",
    ),
    RecordKind::decision(kind::PING_OK, &[], "ticker: a ping got its pong"),
    RecordKind::decision(
        kind::PING_SKIPPED,
        &[],
        "ticker: the ping was skipped for in-flight work, last_used stamped (msg: `in_flight <n>`)",
    ),
    RecordKind::decision(
        kind::PING_FAILED,
        FAILURES,
        "ticker: ping_role raised, logged at debug (reason: what)",
    ),
    RecordKind::decision(
        kind::CRASH,
        &[],
        "_on_crash recorded a crash (msg: `<worker> <n> in window`, the worker whose EOF raised it)",
    ),
    RecordKind::decision(
        kind::DEGRADED,
        &[],
        "the role is degraded, sticky (msg: `<n> crashes`)",
    ),
    RecordKind::decision(
        kind::TERMINATE,
        &[],
        "close(): the worker outlived join(timeout) and was terminated (msg: its name)",
    ),
    RecordKind::decision(
        kind::CLOSED,
        &[],
        "close() returned: pipe closed, executor shut down (msg: the worker)",
    ),
    RecordKind::decision(
        kind::EXECUTOR_FULL,
        &[],
        "a channel's 2 executor threads are busy (blocked reads, joins): the work waits (msg: which)",
    ),
    RecordKind::decision(
        kind::SHUTDOWN,
        &[],
        "shutdown_pool_runtime: ticker cancelled, pool shut down",
    ),
    RecordKind::decision(
        kind::TICKER_DIED,
        &[Reason::Is("CancelledError")],
        "the ticker's ping ended in CancelledError outside a shutdown: it escapes `_tick_once`'s `except Exception` and `_ticker_loop` returns; no tick again (heartsim's record)",
    ),
    RecordKind::decision(
        kind::LOOP_STOPPED,
        &[Reason::Is("drained"), Reason::Is("drain timeout")],
        "shutdown_pool_runtime stopped the pool's loop: after pool.shutdown() returned (`drained`) or after drain_timeout_s = 10 s (`drain timeout`); nothing on the loop runs from then on, executor threads do",
    ),
];

const INVARIANTS: [&str; 5] = invariants::ALL;

impl scenario::Model for Lilbee {
    fn name(&self) -> &'static str {
        "lilbee"
    }
    fn about(&self) -> &'static str {
        "lilbee's worker pool: per-role worker processes on pipes, a 30 s health ticker, idle reaping, a crash budget."
    }
    fn docs(&self) -> &'static str {
        "docs/models/lilbee.md"
    }
    fn profiles(&self) -> &'static [scenario::Profile] {
        &PROFILES
    }
    fn invariants(&self) -> &'static [&'static str] {
        &INVARIANTS
    }
    fn records(&self) -> &'static [RecordKind] {
        RECORDS
    }
    fn deadlines(&self) -> &'static [&'static str] {
        &[
            "asyncio.sleep",
            "wait_for",
            "join",
            "client call",
            "shutdown",
            "drain timeout",
            "work",
            "die",
        ]
    }
    fn validate(&self, sections: &Sections<'_>) -> Result<Box<dyn AnySetup>, ScenarioError> {
        Ok(Box::new(setup::validate(sections)?))
    }
    fn schema(&self, generator: &mut SchemaGenerator) -> SectionSchemas {
        SectionSchemas {
            config: Some(generator.subschema_for::<ConfigSection>()),
            node: NodeKeys::json_schema(generator),
        }
    }
    fn fuzz_hub(&self) -> NodeSection {
        fuzz::hub()
    }
    fn fuzz_node(&self) -> BoxedStrategy<NodeSection> {
        fuzz::node()
    }
    fn fuzz_config(&self) -> BoxedStrategy<toml::Table> {
        fuzz::config()
    }
}

/// A pipe frame, `(kind, payload)` with the payload left out
/// (wire_kinds.py).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    Request,
    Result,
    Ping,
    Pong,
    Shutdown,
    Ack,
    /// A request for a stream (`PipeChannel.stream`'s `_send(kind, payload)`).
    Stream,
    /// `STREAM_CHUNK_KIND`.
    StreamChunk,
    /// `STREAM_END_KIND`.
    StreamEnd,
}

/// What crosses a pipe, and what a spawn starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    Frame(Frame),
    Spawn(WorkerSpec),
}

/// One process.
#[derive(Clone, Debug)]
pub enum Node {
    Pool(Box<Pool>),
    /// A role's name in the trace; runs nothing.
    Role,
    Worker(Worker),
}

impl Machine for Node {
    type Msg = Msg;

    fn handle(&mut self, now: Now, input: Input<Msg>, out: &mut Outbox<Msg>) {
        let t = now.mono;
        match (self, input) {
            (Node::Pool(p), Input::Start) => p.on_start(t),
            (Node::Pool(p), Input::Timeout) => p.on_timeout(t, out),
            (
                Node::Pool(p),
                Input::Data {
                    conn,
                    msg: Msg::Frame(f),
                    ..
                },
            ) => p.on_frame(t, conn, f, out),
            (Node::Pool(p), Input::Closed { conn, .. }) => p.on_eof(t, conn, out),
            (Node::Pool(p), Input::Stop) => p.on_exit(out),
            (Node::Worker(w), Input::Start) => w.on_start(t),
            (Node::Worker(w), Input::Timeout) => w.on_timeout(t, out),
            (
                Node::Worker(w),
                Input::Data {
                    conn,
                    msg: Msg::Frame(f),
                    ..
                },
            ) => w.on_frame(t, conn, f, out),
            (Node::Worker(w), Input::Closed { .. }) => w.on_eof(out),
            _ => {}
        }
    }

    fn poll_timeout(&self) -> Option<Deadline> {
        match self {
            Node::Pool(p) => p.poll_timeout(),
            Node::Worker(w) => w.poll_timeout(),
            Node::Role => None,
        }
    }

    fn describe(msg: &Msg) -> Cow<'static, str> {
        match msg {
            Msg::Frame(f) => Cow::Owned(format!("{f:?}").to_lowercase()),
            Msg::Spawn(s) => Cow::Owned(format!("spawn {}", s.role)),
        }
    }

    fn spawned(spec: Msg) -> Option<Node> {
        match spec {
            Msg::Spawn(s) => Some(Node::Worker(Worker::new(s))),
            Msg::Frame(_) => None,
        }
    }
}
