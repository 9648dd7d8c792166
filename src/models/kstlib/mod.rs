//! kstlib's process heartbeat: a writer process keeps a JSON state file
//! fresh; readers on the same or another host judge it.
//!
//! Upstream: kstlib 2.0.0 (PyPI wheel), `kstlib/resilience/heartbeat.py`
//! (`Heartbeat`, `HeartbeatState`), `kstlib/resilience/watchdog.py`
//! (`Watchdog`, `Watchdog.from_state_file`) and `kstlib/limits.py`
//! (`clamp_with_limits`, the interval and timeout bounds). What each point
//! maps to, and the quirks reproduced on purpose, is in
//! `docs/models/kstlib.md`.
//!
//! Nodes are processes; a `[[host]]` gives several of them one wall clock
//! and one disk (the filesystem medium, `sim/src/fs.rs`). No node sends a
//! message: everything goes through files.

mod fuzz;
pub mod invariants;
mod reader;
mod setup;
pub mod state;
mod writer;

use std::borrow::Cow;

use heartsim_sim::trace::{Reason, RecordKind};
use heartsim_sim::{Deadline, FileDone, Input, Machine, Now, Outbox};
use proptest::strategy::BoxedStrategy;
use schemars::{JsonSchema, SchemaGenerator};
use serde::{Deserialize, Serialize};

pub use reader::{
    check_interval, Monitor, MonitorSpec, PingWatchdog, PingWatchdogSpec, StateWatchdog,
    StateWatchdogSpec,
};
pub use setup::{clamp_seconds, NodeKeys, Role, Setup};
pub use writer::{Writer, WriterSpec};

use crate::scenario::{self, AnySetup, NodeSection, ScenarioError, SectionSchemas, Sections};

/// The model, as the registry lists it.
pub const MODEL: &dyn scenario::Model = &Kstlib;

pub struct Kstlib;

/// Which of `Heartbeat`'s two loops the writer runs; the watchdogs run the
/// matching loop too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// `start()`: a daemon thread, `while not stop_event.wait(interval)`.
    Threaded,
    /// `astart()`: an asyncio task, beat first, `sleep(interval)` last.
    Async,
}

impl Profile {
    pub const ALL: [Profile; 2] = [Profile::Threaded, Profile::Async];
    pub const fn name(self) -> &'static str {
        match self {
            Profile::Threaded => "kstlib-threaded",
            Profile::Async => "kstlib-async",
        }
    }
    const fn entry(self) -> scenario::Profile {
        scenario::Profile {
            name: self.name(),
            about: match self {
                Profile::Threaded => "Heartbeat.start(): a thread; first beat one interval after start; never calls on_alert",
                Profile::Async => "Heartbeat.astart(): an asyncio task; beats at once; on_alert before on_target_dead",
            },
        }
    }
    pub fn from_name(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name() == name)
    }
}

const PROFILES: [scenario::Profile; 2] = [Profile::Threaded.entry(), Profile::Async.entry()];

/// The record kinds the machines write.
pub mod kind {
    pub const BEAT: &str = "beat";
    pub const BEAT_LANDED_AFTER_STOP: &str = "beat-landed-after-stop";
    pub const MISSED_BEAT: &str = "missed-beat";
    pub const TARGET_DEAD: &str = "target-dead";
    pub const ALERT: &str = "alert";
    pub const CALLBACK_FAILED: &str = "callback-failed";
    pub const LOOP_DIED: &str = "loop-died";
    pub const START_ERROR: &str = "start-error";
    pub const ALIVE: &str = "alive";
    pub const DEAD: &str = "dead";
    pub const FIRED: &str = "fired";
    pub const REARMED: &str = "rearmed";
    pub const RESET: &str = "watchdog-reset";
}

const DEAD_REASONS: &[Reason] = &[
    Reason::Is("stale"),
    Reason::Is("no state file"),
    Reason::Is("unreadable"),
    Reason::Is("unparsable"),
    Reason::Is("missing key"),
    Reason::Is("bad timestamp"),
    Reason::Is("naive timestamp"),
    Reason::Is("not a JSON object"),
];
const ALIVE_REASONS: &[Reason] = &[Reason::Is("fresh"), Reason::Is("future timestamp")];
const FIRED_REASONS: &[Reason] = &[
    Reason::Is("no ping"),
    Reason::Is("stale"),
    Reason::Is("no state file"),
    Reason::Is("unreadable"),
    Reason::Is("unparsable"),
    Reason::Is("missing key"),
    Reason::Is("bad timestamp"),
    Reason::Is("naive timestamp"),
    Reason::Is("not a JSON object"),
];

const RECORDS: &[RecordKind] = &[
    RecordKind::decision(
        kind::BEAT,
        &[],
        "writer: beat() returned (msg: the timestamp written, or `no state file`)",
    ),
    RecordKind::decision(
        kind::BEAT_LANDED_AFTER_STOP,
        &[],
        "async writer, stopped inside beat(): the executor's thread renamed the state file after the task was cancelled (heartsim's record: upstream calls no callback; msg: the timestamp written)",
    ),
    RecordKind::decision(
        kind::MISSED_BEAT,
        &[Reason::Family("Failed to write heartbeat: ", "<errno>")],
        "writer: beat() raised HeartbeatError, on_missed_beat called (msg: the failed step and temp path)",
    ),
    RecordKind::decision(
        kind::TARGET_DEAD,
        &[Reason::Is("target.is_dead")],
        "writer: target.is_dead was true after a tick, on_target_dead called",
    ),
    RecordKind::decision(
        kind::ALERT,
        &[
            Reason::Is("Target is dead, triggering recovery"),
            Reason::Is("Heartbeat state file is stale"),
        ],
        "async writer or async state-file watchdog: on_alert called",
    ),
    RecordKind::decision(
        kind::CALLBACK_FAILED,
        &[Reason::Is("on_beat")],
        "async writer: on_beat raised, logged as `Callback failed` (not a missed beat)",
    ),
    RecordKind::decision(
        kind::LOOP_DIED,
        &[Reason::Is("target.is_dead raised")],
        "writer: the loop's thread or task died (upstream logs nothing; heartsim records it)",
    ),
    RecordKind::decision(
        kind::START_ERROR,
        &[Reason::Is("Heartbeat is already running")],
        "writer: a second start() raised HeartbeatError",
    ),
    RecordKind::decision(
        kind::ALIVE,
        ALIVE_REASONS,
        "monitor: is_alive() became true (msg: `ts <timestamp> age <age> pid <pid>`)",
    ),
    RecordKind::decision(
        kind::DEAD,
        DEAD_REASONS,
        "monitor: is_alive() became false, with why (msg: `ts <timestamp> age <age> pid <pid>` when the file parsed)",
    ),
    RecordKind::decision(
        kind::FIRED,
        FIRED_REASONS,
        "watchdog: the timeout fired (on_timeout), latched until reset or a fresh file",
    ),
    RecordKind::decision(
        kind::REARMED,
        ALIVE_REASONS,
        "state-file watchdog: the file is fresh again, the latch cleared (silent upstream)",
    ),
    RecordKind::decision(kind::RESET, &[], "watchdog: reset() called"),
];

const INVARIANTS: [&str; 2] = [
    invariants::READS_SEE_THE_LATEST_BEAT,
    invariants::HEALTHY_WRITER_NEVER_DEAD,
];

impl scenario::Model for Kstlib {
    fn name(&self) -> &'static str {
        "kstlib"
    }
    fn about(&self) -> &'static str {
        "kstlib's process heartbeat: a JSON state file written every interval, read by is_alive and watchdogs."
    }
    fn docs(&self) -> &'static str {
        "docs/models/kstlib.md"
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
    /// A monitor's `alive`/`dead` and a state-file watchdog's
    /// `rearmed`/`fired`, about the one writer of the file they read (the
    /// record's peer; none when the file has no single writer).
    fn verdicts(&self) -> &'static [scenario::VerdictKind] {
        use scenario::{Says, VerdictKind};
        &[
            VerdictKind {
                kind: kind::ALIVE,
                says: Says::Trust,
            },
            VerdictKind {
                kind: kind::DEAD,
                says: Says::Suspect,
            },
            VerdictKind {
                kind: kind::REARMED,
                says: Says::Trust,
            },
            VerdictKind {
                kind: kind::FIRED,
                says: Says::Suspect,
            },
        ]
    }
    fn deadlines(&self) -> &'static [&'static str] {
        &[
            "stop_event.wait",
            "asyncio.sleep",
            "thread.join",
            "poll",
            "watchdog check",
            "ping",
            "reset",
        ]
    }
    fn validate(&self, sections: &Sections<'_>) -> Result<Box<dyn AnySetup>, ScenarioError> {
        Ok(Box::new(setup::validate(sections)?))
    }
    fn schema(&self, generator: &mut SchemaGenerator) -> SectionSchemas {
        SectionSchemas {
            config: None,
            node: NodeKeys::json_schema(generator),
        }
    }
    fn fuzz_hub(&self) -> NodeSection {
        fuzz::hub()
    }
    fn fuzz_node(&self) -> BoxedStrategy<NodeSection> {
        fuzz::node()
    }
    /// The writer (the hub) owns a disk; each reader runs on a host of
    /// its own that mounts it, so node crashes are host power losses.
    fn fuzz_host(&self, node: &str, hub: &str, seed: u64) -> Option<scenario::HostSection> {
        Some(fuzz::host(node, hub, seed))
    }
}

/// What a kstlib process is told: only the outcomes of its own file
/// operations (no node sends another anything).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    File(FileDone),
}

/// One process.
#[derive(Clone, Debug)]
pub enum Node {
    Writer(Writer),
    Monitor(Monitor),
    StateWatchdog(StateWatchdog),
    Watchdog(PingWatchdog),
}

impl Machine for Node {
    type Msg = Msg;

    fn handle(&mut self, now: Now, input: Input<Msg>, out: &mut Outbox<Msg>) {
        match (self, input) {
            (Node::Writer(w), Input::Start) => w.on_start(now, out),
            (Node::Writer(w), Input::Stop) => w.on_stop(now, out),
            (Node::Writer(w), Input::Timeout) => w.on_timeout(now, out),
            (
                Node::Writer(w),
                Input::Recv {
                    msg: Msg::File(d), ..
                },
            ) => w.on_file(now, d, out),
            (Node::Monitor(m), Input::Start) => m.on_start(out),
            (Node::Monitor(m), Input::Stop) => m.on_stop(),
            (Node::Monitor(m), Input::Timeout) => m.on_timeout(now, out),
            (
                Node::Monitor(m),
                Input::Recv {
                    msg: Msg::File(d), ..
                },
            ) => m.on_file(now, d, out),
            (Node::StateWatchdog(w), Input::Start) => w.on_start(now),
            (Node::StateWatchdog(w), Input::Stop) => w.on_stop(),
            (Node::StateWatchdog(w), Input::Timeout) => w.on_timeout(now, out),
            (
                Node::StateWatchdog(w),
                Input::Recv {
                    msg: Msg::File(d), ..
                },
            ) => {
                w.on_file(now, d, out);
            }
            (Node::Watchdog(w), Input::Start) => w.on_start(now),
            (Node::Watchdog(w), Input::Stop) => w.on_stop(),
            (Node::Watchdog(w), Input::Timeout) => w.on_timeout(now, out),
            // No connections, no datagrams between processes.
            _ => {}
        }
    }

    fn poll_timeout(&self) -> Option<Deadline> {
        match self {
            Node::Writer(w) => w.poll_timeout(),
            Node::Monitor(m) => m.poll_timeout(),
            Node::StateWatchdog(w) => w.poll_timeout(),
            Node::Watchdog(w) => w.poll_timeout(),
        }
    }

    fn describe(msg: &Msg) -> Cow<'static, str> {
        match msg {
            Msg::File(d) => Cow::Owned(format!("file #{} {:?}", d.token, d.result.as_ref().err())),
        }
    }

    fn file_done(done: FileDone) -> Option<Msg> {
        Some(Msg::File(done))
    }
}
