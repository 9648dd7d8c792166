//! NFD-S, the failure detector Chen, Toueg and Aguilera analyse ("On the
//! Quality of Service of Failure Detectors", IEEE Transactions on Computers
//! 51(5), 2002, section 4): the reference that checks that `crate::qos`
//! measures what the paper means (`tests/nfd_s.rs`, `docs/models/nfd-s.md`).
//!
//! A sender `p` sends heartbeat `m_i` at `sigma_i = i * eta` (`i >= 1`) by
//! its clock. The monitor `q` has freshness points `tau_i = sigma_i + delta`
//! and, at any time `t` in `[tau_i, tau_i+1)`, trusts `p` iff it has
//! received some `m_j` with `j >= i`. Clocks are synchronized: both read
//! their monotonic clock, which with no drift is the scenario's time. The
//! heartbeats are datagrams: the scenario's `drop` is the paper's `p_L`,
//! its `latency` (fixed, or uniform over a range) the delay `D`.
//!
//! Before its first freshness point, and after a restart until the next,
//! the monitor trusts every sender (as if the heartbeat due last had
//! come): from `tau_1` on, its output is the paper's.

use std::borrow::Cow;
use std::collections::BTreeMap;

use heartsim_sim::trace::{Reason, RecordKind, Trace};
use heartsim_sim::{Deadline, Duration, Input, Machine, NodeId, Now, Outbox, Timestamp};
use proptest::prelude::*;
use schemars::{JsonSchema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::scenario::{
    self, AnySetup, NodeSection, Says, Scenario, ScenarioError, SectionSchemas, Sections,
    VerdictKind, Violation, S,
};

/// The model, as the registry lists it.
pub const MODEL: &dyn scenario::Model = &NfdS;

/// NFD-S with synchronized clocks.
pub struct NfdS;

/// The only profile: the paper's algorithm.
pub const PROFILE: &str = "chen-toueg-aguilera-2002";

/// Record kinds its monitor writes.
pub mod kind {
    /// The monitor trusts a sender (reason `heartbeat`: a fresh one came;
    /// `start`: the monitor (re)started).
    pub const TRUST: &str = "trust";
    /// A freshness point passed with no fresh heartbeat.
    pub const SUSPECT: &str = "suspect";
}

const RECORDS: &[RecordKind] = &[
    RecordKind::decision(
        kind::TRUST,
        &[Reason::Is("heartbeat"), Reason::Is("start")],
        "the monitor trusts a sender again (msg: the heartbeat, `m7`)",
    ),
    RecordKind::decision(
        kind::SUSPECT,
        &[Reason::Is("freshness point")],
        "a freshness point passed without a fresh heartbeat (msg: the point, `tau7`)",
    ),
];

impl scenario::Model for NfdS {
    fn name(&self) -> &'static str {
        "nfd-s"
    }
    fn about(&self) -> &'static str {
        "Chen-Toueg-Aguilera's NFD-S (heartbeats every eta, freshness points shifted by delta): the QoS reference."
    }
    fn docs(&self) -> &'static str {
        "docs/models/nfd-s.md"
    }
    fn profiles(&self) -> &'static [scenario::Profile] {
        &[scenario::Profile {
            name: PROFILE,
            about: "NFD-S as the paper states it, with synchronized clocks",
        }]
    }
    fn invariants(&self) -> &'static [&'static str] {
        &[]
    }
    fn records(&self) -> &'static [RecordKind] {
        RECORDS
    }
    fn deadlines(&self) -> &'static [&'static str] {
        &["heartbeat", "freshness point"]
    }
    fn verdicts(&self) -> &'static [VerdictKind] {
        &[
            VerdictKind {
                kind: kind::TRUST,
                says: Says::Trust,
            },
            VerdictKind {
                kind: kind::SUSPECT,
                says: Says::Suspect,
            },
        ]
    }
    fn validate(&self, s: &Sections<'_>) -> Result<Box<dyn AnySetup>, ScenarioError> {
        Ok(Box::new(validate(s)?))
    }
    fn schema(&self, generator: &mut SchemaGenerator) -> SectionSchemas {
        SectionSchemas {
            config: Some(generator.subschema_for::<Config>()),
            node: Keys::json_schema(generator),
        }
    }
    fn fuzz_hub(&self) -> NodeSection {
        section("q", MONITOR, None)
    }
    fn fuzz_node(&self) -> BoxedStrategy<NodeSection> {
        (1u16..=99, prop_oneof![Just(0u32), 1u32..=30])
            .prop_map(|(id, start_s)| {
                let start = (start_s > 0).then(|| format!("{start_s}s"));
                section(&format!("p{id}"), SENDER, start)
            })
            .boxed()
    }
    fn fuzz_config(&self) -> BoxedStrategy<toml::Table> {
        (1u32..=5, 0u32..=5)
            .prop_map(|(eta, delta)| {
                let c = Config {
                    eta: Some(S::new(0..0, format!("{eta}s"))),
                    delta: Some(S::new(0..0, format!("{delta}s"))),
                };
                toml::Table::try_from(c).expect("a table")
            })
            .boxed()
    }
}

const MONITOR: &str = "monitor";
const SENDER: &str = "sender";

fn section(name: &str, kind: &str, start: Option<String>) -> NodeSection {
    NodeSection {
        name: S::new(0..0, name.to_string()),
        kind: S::new(0..0, kind.to_string()),
        count: None,
        start: start.map(|s| S::new(0..0, s)),
        clock_drift_ppm: None,
        keys: toml::Table::new(),
    }
}

/// `[config]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// eta: a sender sends heartbeat m_i at i * eta (default "1s").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta: Option<S<String>>,
    /// delta: freshness point tau_i = i * eta + delta (default "1s"; "0s"
    /// allowed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<S<String>>,
}

/// A node's own keys: none (kind `monitor`, exactly one, or `sender`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Keys {}

/// What a scenario made of the model's sections.
#[derive(Clone, Debug)]
pub struct Setup {
    pub eta: Duration,
    pub delta: Duration,
    pub monitor: NodeId,
    /// Which nodes are senders.
    pub senders: Vec<bool>,
}

fn validate(s: &Sections<'_>) -> Result<Setup, ScenarioError> {
    let ctx = s.ctx;
    let (mut eta, mut delta) = (Duration::from_secs(1), Duration::from_secs(1));
    if let Some(raw) = &s.config {
        let c: Config = ctx.read(raw.clone())?;
        if let Some(e) = &c.eta {
            eta = ctx.positive(e, "eta")?;
        }
        if let Some(d) = &c.delta {
            delta = ctx.duration(d, "delta")?;
        }
    }
    let mut monitor = None;
    let mut senders = vec![false; s.defs.len()];
    for node in &s.nodes {
        let _: Keys = ctx.read(node.keys.clone())?;
        let kind = &node.section.kind;
        match kind.get_ref().as_str() {
            MONITOR if monitor.is_some() || node.section.count.is_some() => {
                return ctx.err(kind.span(), "NFD-S has exactly one monitor");
            }
            MONITOR => monitor = Some(NodeId(node.ids.start)),
            SENDER => senders[node.ids.clone()].fill(true),
            other => {
                return ctx.err(
                    kind.span(),
                    format!("unknown node kind {other:?}: expected monitor or sender"),
                )
            }
        }
    }
    let Some(monitor) = monitor else {
        return ctx.err(
            0..0,
            "no node has kind = \"monitor\" (NFD-S has exactly one)",
        );
    };
    Ok(Setup {
        eta,
        delta,
        monitor,
        senders,
    })
}

impl scenario::Setup for Setup {
    type Machine = Node;

    fn machine(&self, node: NodeId) -> Node {
        if self.senders[node.0] {
            Node::Sender(Sender {
                monitor: self.monitor,
                eta: self.eta,
                next: None,
            })
        } else {
            Node::Monitor(Monitor {
                eta: self.eta,
                delta: self.delta,
                senders: (0..self.senders.len())
                    .filter(|&i| self.senders[i])
                    .map(|i| (NodeId(i), Watch::default()))
                    .collect(),
                next_point: None,
            })
        }
    }

    fn violations(&self, _: &Scenario, _: &Trace) -> Vec<Violation> {
        Vec::new()
    }
}

/// Heartbeat `m_seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub seq: u64,
}

/// A sender: `m_i` at `i * eta`.
#[derive(Debug)]
pub struct Sender {
    monitor: NodeId,
    eta: Duration,
    /// The index of the next heartbeat; `None` once stopped.
    next: Option<u64>,
}

/// What the monitor knows of one sender.
#[derive(Clone, Copy, Debug, Default)]
pub struct Watch {
    /// The greatest heartbeat index received (or taken as received).
    latest: u64,
    trusted: bool,
}

/// The monitor `q`.
#[derive(Debug)]
pub struct Monitor {
    eta: Duration,
    delta: Duration,
    senders: BTreeMap<NodeId, Watch>,
    next_point: Option<Timestamp>,
}

impl Monitor {
    /// `i` such that `t` is in `[tau_i, tau_i+1)`; 0 before `tau_1`.
    fn interval(&self, t: Timestamp) -> u64 {
        t.as_us().saturating_sub(self.delta.as_us()) / self.eta.as_us()
    }
    /// `tau_i`.
    fn point(&self, i: u64) -> Timestamp {
        let us = i
            .saturating_mul(self.eta.as_us())
            .saturating_add(self.delta.as_us());
        Timestamp::from_us(us)
    }
    fn handle(&mut self, now: Timestamp, input: Input<Heartbeat>, out: &mut Outbox<Heartbeat>) {
        let i = self.interval(now);
        match input {
            Input::Start => {
                for (id, w) in self.senders.iter_mut() {
                    *w = Watch {
                        latest: i,
                        trusted: true,
                    };
                    out.record(kind::TRUST, Some(*id), Some("start".into()), None);
                }
            }
            Input::Recv { from, msg } => {
                if let Some(w) = self.senders.get_mut(&from) {
                    w.latest = w.latest.max(msg.seq);
                    if w.latest >= i && !w.trusted {
                        w.trusted = true;
                        out.record(
                            kind::TRUST,
                            Some(from),
                            Some("heartbeat".into()),
                            Some(format!("m{}", msg.seq).into()),
                        );
                    }
                }
            }
            Input::Timeout => {
                for (id, w) in self.senders.iter_mut() {
                    if w.latest < i && w.trusted {
                        w.trusted = false;
                        out.record(
                            kind::SUSPECT,
                            Some(*id),
                            Some("freshness point".into()),
                            Some(format!("tau{i}").into()),
                        );
                    }
                }
            }
            _ => {}
        }
        self.next_point = Some(self.point(i + 1));
    }
}

impl Sender {
    fn handle(&mut self, now: Timestamp, input: Input<Heartbeat>, out: &mut Outbox<Heartbeat>) {
        // The heartbeat due last: after a pause, only the latest goes out.
        let due = now.as_us() / self.eta.as_us();
        match input {
            Input::Start => self.next = Some(due + 1),
            Input::Stop => self.next = None,
            Input::Timeout if self.next.is_some_and(|n| n <= due) => {
                out.send(self.monitor, Heartbeat { seq: due });
                self.next = Some(due + 1);
            }
            _ => {}
        }
    }
    fn deadline(&self) -> Option<Timestamp> {
        self.next
            .map(|n| Timestamp::from_us(n.saturating_mul(self.eta.as_us())))
    }
}

/// A node of an NFD-S scenario.
#[derive(Debug)]
pub enum Node {
    Sender(Sender),
    Monitor(Monitor),
}

impl Machine for Node {
    type Msg = Heartbeat;

    fn handle(&mut self, now: Now, input: Input<Heartbeat>, out: &mut Outbox<Heartbeat>) {
        match self {
            Node::Sender(s) => s.handle(now.mono, input, out),
            Node::Monitor(m) => m.handle(now.mono, input, out),
        }
    }

    fn poll_timeout(&self) -> Option<Deadline> {
        match self {
            Node::Sender(s) => s.deadline().map(|at| Deadline {
                at,
                reason: "heartbeat",
            }),
            Node::Monitor(m) => m.next_point.map(|at| Deadline {
                at,
                reason: "freshness point",
            }),
        }
    }

    fn describe(msg: &Heartbeat) -> Cow<'static, str> {
        format!("m{}", msg.seq).into()
    }
}
