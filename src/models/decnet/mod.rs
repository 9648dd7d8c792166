//! DECNET's agent -> master heartbeat: agents POST `/swarm/heartbeat` over
//! mutual TLS every 30 s; the master's swarm controller pins the client
//! certificate and refreshes the host's row; lifecycle deltas close
//! deploy rows; the main API sweeps stale rows at startup, shows a workers
//! panel fed by a host-local bus, and probes agents on the dashboard's
//! polls.
//!
//! Upstream: DECNET v1.0.0 (`4nt11/DECNET` tag commit `36353026`, the PyPI
//! wheel `decnet==1.0.0`), httpx 0.28.1 and httpcore 1.0.9 (its lock
//! file). Every point with its source line and test: `docs/models/decnet.md`.

mod agent;
mod api;
pub mod db;
mod fuzz;
pub mod https;
pub mod invariants;
pub mod msg;
mod setup;
mod swarmctl;

use std::borrow::Cow;

use heartsim_sim::trace::{Reason, RecordKind};
use heartsim_sim::{Deadline, FileDone, Input, Machine, Now, Outbox};
use proptest::strategy::BoxedStrategy;
use schemars::{JsonSchema, SchemaGenerator};

pub use agent::{Agent, AgentSpec, Shape, BUS_INTERVAL, INTERVAL};
pub use api::{Action, Api, ApiSpec, OK_WINDOW, SWEEP_AGE};
pub use msg::Msg;
pub use setup::{ConfigSection, NodeKeys, Role, Setup};
pub use swarmctl::Swarmctl;

use crate::scenario::{self, AnySetup, NodeSection, ScenarioError, SectionSchemas, Sections};

/// The model, as the registry lists it.
pub const MODEL: &dyn scenario::Model = &Decnet;

pub struct Decnet;

/// The one profile: v1.0.0 (unchanged in these files up to 1.2.1).
pub const PROFILE: &str = "decnet-1.0.0";

const PROFILES: [scenario::Profile; 1] = [scenario::Profile {
    name: PROFILE,
    about:
        "DECNET v1.0.0 (36353026; same in these files up to 1.2.1), httpx 0.28.1 / httpcore 1.0.9",
}];

/// The record kinds the machines write.
pub mod kind {
    /// agent: the loop's POST got 204.
    pub const BEAT: &str = "beat";
    /// agent: the loop's POST got another status.
    pub const BEAT_REJECTED: &str = "beat-rejected";
    /// agent: the loop's POST raised.
    pub const BEAT_FAILED: &str = "beat-failed";
    pub const NOT_STARTED: &str = "not-started";
    pub const OPERATION_STARTED: &str = "operation-started";
    pub const SELF_DESTRUCT: &str = "self-destruct";
    pub const OPERATION_DONE: &str = "operation-done";
    pub const PUSH: &str = "push";
    pub const PUSH_REJECTED: &str = "push-rejected";
    pub const PUSH_FAILED: &str = "push-failed";
    /// swarmctl: how it answered a heartbeat.
    pub const HEARTBEAT: &str = "heartbeat";
    pub const HOST_ROW: &str = "host-row";
    pub const LIFECYCLE_ROW: &str = "lifecycle-row";
    pub const SHARD_ROW: &str = "shard-row";
    pub const RESYNC: &str = "resync";
    pub const WORKER_STATUS: &str = "worker-status";
    /// api: the workers registry took a bus heartbeat.
    pub const WORKER_SEEN: &str = "worker-seen";
    pub const PROBE: &str = "probe";
    pub const OPERATOR: &str = "operator";
    pub const BUS: &str = "bus";
}

const STATUSES: &[Reason] = &[Reason::Family("", "<HTTP status>")];
const EXCEPTIONS: &[Reason] = &[
    Reason::Is("ConnectError"),
    Reason::Is("ConnectTimeout"),
    Reason::Is("WriteTimeout"),
    Reason::Is("ReadError"),
    Reason::Is("SSLError"),
    Reason::Is("ReadTimeout"),
    Reason::Is("RemoteProtocolError"),
];

const RECORDS: &[RecordKind] = &[
    RecordKind::decision(kind::BEAT, STATUSES, "agent: the loop's POST /swarm/heartbeat got 204 (_tick returns quietly)"),
    RecordKind::decision(kind::BEAT_REJECTED, STATUSES, "agent: the loop's POST got another status, logged `heartbeat rejected` (msg: the detail)"),
    RecordKind::decision(kind::BEAT_FAILED, EXCEPTIONS, "agent: the loop's POST raised this exception (httpx's, or a raw `ssl.SSLError` for a refused client certificate), logged `heartbeat tick failed` (msg: its cause)"),
    RecordKind::decision(
        kind::NOT_STARTED,
        &[Reason::Is("DECNET_HOST_UUID or DECNET_MASTER_HOST unset"), Reason::Is("worker SSL context unavailable")],
        "agent: heartbeat.start() declined to start the loop",
    ),
    RecordKind::decision(kind::OPERATION_STARTED, &[], "agent: /deploy or /mutate answered 202, the work runs in the background (msg: decky, operation)"),
    RecordKind::decision(
        kind::SELF_DESTRUCT,
        &[Reason::Is("scheduled"), Reason::Is("stopped")],
        "agent: POST /self-destruct answered and the reaper spawned; 3 s later the reaper's `systemctl stop decnet-agent` ends the process",
    ),
    RecordKind::decision(kind::OPERATION_DONE, &[Reason::Is("succeeded"), Reason::Is("failed")], "agent: a background operation ended; its delta is pushed once"),
    RecordKind::decision(kind::PUSH, STATUSES, "agent: the lifecycle push got 200 or 204"),
    RecordKind::decision(kind::PUSH_REJECTED, STATUSES, "agent: the lifecycle push got another status (logged, not retried)"),
    RecordKind::decision(kind::PUSH_FAILED, EXCEPTIONS, "agent: the lifecycle push raised (logged, not retried)"),
    RecordKind::decision(
        kind::HEARTBEAT,
        &[
            Reason::Is("204"),
            Reason::Is("422 request body validation error"),
            Reason::Is("404 unknown host"),
            Reason::Is("403 peer cert unavailable"),
            Reason::Is("403 cert fingerprint mismatch"),
        ],
        "swarmctl: its answer to POST /swarm/heartbeat (msg: claimed host_uuid, certificate)",
    ),
    RecordKind::decision(
        kind::HOST_ROW,
        &[Reason::Is("enrolled"), Reason::Is("active"), Reason::Is("unreachable"), Reason::Is("deleted")],
        "database: a SwarmHost row changed (msg: uuid, name, last_heartbeat on the master's clock)",
    ),
    RecordKind::decision(
        kind::LIFECYCLE_ROW,
        &[Reason::Is("pending"), Reason::Is("running"), Reason::Is("succeeded"), Reason::Is("failed")],
        "database: a DeckyLifecycle row changed (msg: id, decky, operation, host, times, error)",
    ),
    RecordKind::decision(
        kind::SHARD_ROW,
        &[Reason::Is("running"), Reason::Is("degraded"), Reason::Is("deleted")],
        "database: a DeckyShard row changed",
    ),
    RecordKind::decision(kind::RESYNC, &[Reason::Is("needs_resync")], "database: a topology was flagged for resync"),
    RecordKind::decision(
        kind::WORKER_STATUS,
        &[Reason::Is("ok"), Reason::Is("stale"), Reason::Is("unknown")],
        "api: the workers panel's `agent` row changed at a GET /workers poll",
    ),
    RecordKind::decision(
        kind::WORKER_SEEN,
        &[],
        "api: the workers registry took a bus heartbeat (`WorkerRegistry.record`, worker_registry.py l. 76-77, 151-169; msg: the worker and its publisher's `ts`)",
    ),
    RecordKind::decision(kind::PROBE, &[Reason::Is("ok"), Reason::Is("HTTPStatusError"), Reason::Is("ConnectError"), Reason::Is("ConnectTimeout"), Reason::Is("WriteTimeout"), Reason::Is("ReadError"), Reason::Is("SSLError"), Reason::Is("ReadTimeout"), Reason::Is("RemoteProtocolError"), Reason::Is("TimeoutError"), Reason::Is("ConnectionRefusedError"), Reason::Is("ConnectionResetError"), Reason::Is("SSLEOFError"), Reason::Is("SSLCertVerificationError"), Reason::Is("FingerprintMismatchError")], "api: an agent's GET /health probe ended (the last six: its certificate-pin connection's, swarm/client.py l. 170-212)"),
    RecordKind::decision(
        kind::BUS,
        &[Reason::Is("unavailable"), Reason::Is("lost")],
        "agent or api: its bus connection failed or ended; the bus client never reconnects",
    ),
    RecordKind::decision(
        kind::OPERATOR,
        &[Reason::Is("decommission"), Reason::Is("self-destruct failed"), Reason::Is("enrol"), Reason::Is("enrol refused 409")],
        "api: an operator action; `self-destruct failed` is a decommission's best-effort call to the agent raising (msg: the exception), after which the row is deleted all the same",
    ),
];

impl scenario::Model for Decnet {
    fn name(&self) -> &'static str {
        "decnet"
    }
    fn about(&self) -> &'static str {
        "DECNET's agent -> master heartbeat: HTTPS POSTs every 30 s, certificate pinning, lifecycle deltas, the workers panel."
    }
    fn docs(&self) -> &'static str {
        "docs/models/decnet.md"
    }
    fn profiles(&self) -> &'static [scenario::Profile] {
        &PROFILES
    }
    fn invariants(&self) -> &'static [&'static str] {
        invariants::ALL
    }
    fn records(&self) -> &'static [RecordKind] {
        RECORDS
    }
    fn deadlines(&self) -> &'static [&'static str] {
        &[
            "build body",
            "httpx timeout",
            "asyncio.sleep",
            "bus heartbeat",
            "operation",
            "self-destruct reaper",
            "ssl handshake timeout",
            "pin socket timeout",
            "operator",
            "GET /workers",
            "GET /swarm/hosts",
        ]
    }
    fn transport(&self) -> scenario::Transport {
        scenario::Transport::Streams
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
    fn fuzz_companions(&self) -> Option<BoxedStrategy<Vec<NodeSection>>> {
        Some(fuzz::companions())
    }
    fn fuzz_config(&self) -> BoxedStrategy<toml::Table> {
        fuzz::config()
    }
    fn fuzz_host(&self, node: &str, hub: &str, _seed: u64) -> Option<scenario::HostSection> {
        fuzz::host(node, hub)
    }
    /// The master's database is one JSON file read and rewritten whole, a
    /// stand-in for SQLite that says nothing of its journal under disk
    /// faults: none are drawn.
    fn fuzz_disk_faults(&self) -> bool {
        false
    }
    fn fuzz_invariants(&self, profile: &str) -> Vec<&'static str> {
        invariants::kept_by(profile).to_vec()
    }
}

/// The host-local bus daemon (`decnet/bus/worker.py`,
/// `bus/unix_server.py`): it hands each publish to its subscribers' connections.
#[derive(Clone, Debug, Default)]
pub struct Bus {
    subscribers: std::collections::BTreeSet<heartsim_sim::ConnId>,
}

/// One DECNET process.
#[derive(Clone, Debug)]
pub enum Node {
    Agent(Box<Agent>),
    Swarmctl(Swarmctl),
    Api(Box<Api>),
    Bus(Bus),
}

impl Machine for Node {
    type Msg = Msg;

    fn handle(&mut self, now: Now, input: Input<Msg>, out: &mut Outbox<Msg>) {
        match self {
            Node::Agent(a) => a.handle(now, input, out),
            Node::Swarmctl(s) => s.handle(now, input, out),
            Node::Api(a) => a.handle(now, input, out),
            Node::Bus(b) => match input {
                Input::Start => out.listen(),
                Input::Data {
                    conn,
                    msg: Msg::Subscribe,
                    ..
                } => {
                    b.subscribers.insert(conn);
                }
                Input::Data {
                    msg: msg @ Msg::Publish { .. },
                    ..
                } => {
                    for s in &b.subscribers {
                        out.send(*s, msg.clone());
                    }
                }
                Input::Closed { conn, .. } => {
                    b.subscribers.remove(&conn);
                    out.close(conn);
                }
                Input::Reset { conn, .. } => {
                    b.subscribers.remove(&conn);
                }
                _ => {}
            },
        }
    }

    fn poll_timeout(&self) -> Option<Deadline> {
        match self {
            Node::Agent(a) => a.poll_timeout(),
            Node::Swarmctl(s) => s.poll_timeout(),
            Node::Api(a) => a.poll_timeout(),
            Node::Bus(_) => None,
        }
    }

    fn describe(msg: &Msg) -> Cow<'static, str> {
        Cow::Owned(msg.describe())
    }

    fn file_done(done: FileDone) -> Option<Msg> {
        Some(Msg::File(done))
    }
}
