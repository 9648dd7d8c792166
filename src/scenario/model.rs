//! The seam: what a model is to the layers above the engine.
//!
//! A model is one upstream system's heartbeat, `src/models/<name>/`, and one
//! entry in the registry (`src/models/mod.rs`). It implements [`Model`]:
//! its name and profiles; reading its own scenario sections (`[config]` and
//! its `[[node]]` keys) into a [`Setup`]; their JSON Schema; and the
//! fuzzer's nodes. The [`Setup`] builds the machine of every node and
//! judges a finished trace against the model's invariants. The scenario
//! format, [`crate::run`], [`crate::fuzz`] and the CLI reach models only
//! through these two traits (docs/architecture.md says why this form).

use std::any::Any;
use std::fmt;
use std::ops::Range;

use heartsim_sim::trace::{Level, RecordKind, Trace};
use heartsim_sim::{LimitError, Machine, NodeId, Stats};
use proptest::strategy::{BoxedStrategy, Just, Strategy};
use schemars::{Schema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Context, HostDef, HostSection, NodeDef, NodeSection, Scenario, ScenarioError};

/// A section of the file as written, with the spans of everything in it.
pub type Raw<'a> = toml::Spanned<toml::de::DeValue<'a>>;

/// One upstream variant a model reproduces: `[scenario] profile`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    pub name: &'static str,
    /// One line, for `heartsim models` and the JSON Schema.
    pub about: &'static str,
}

/// How a model's machines talk to each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Datagrams to nodes: every network fault applies.
    Datagrams,
    /// Connections (the stream medium, docs/streams.md), as TCP, HTTPS and
    /// pipes are. `duplicate` and `reorder` do not apply: a connection
    /// delivers every message once and in order.
    Streams,
}

/// What a failure detector's verdict says about the node it names (Chen,
/// Toueg and Aguilera's detector outputs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Says {
    /// The monitor believes the node is up (JoinMarket: `register`).
    Trust,
    /// The monitor believes the node is down, or has stopped tracking it
    /// (JoinMarket: `evict`, `disconnect`).
    Suspect,
}

/// A decision record kind that is a detector's verdict ([`Model::verdicts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerdictKind {
    /// One of the model's [`Model::records`] kinds.
    pub kind: &'static str,
    pub says: Says,
}

/// One model. Registered as a `&'static dyn Model`; every method has the
/// same answer on every call.
pub trait Model: Sync {
    /// `[scenario] model = "..."`.
    fn name(&self) -> &'static str;
    /// One line, for `heartsim models`.
    fn about(&self) -> &'static str;
    /// Its docs page, from the repository root.
    fn docs(&self) -> &'static str;
    /// `[scenario] profile` values.
    fn profiles(&self) -> &'static [Profile];
    /// `[scenario] invariants` values: the properties its [`Setup`] checks.
    fn invariants(&self) -> &'static [&'static str];
    /// The record kinds its machines write (`Outbox::record`), each with
    /// every reason it gives. `[[expect]]`s are checked against these and
    /// the engine's ([`heartsim_sim::trace::ENGINE_KINDS`]), and
    /// `tests/declarations.rs` fails on any record a run writes that is not
    /// declared.
    fn records(&self) -> &'static [RecordKind];
    /// Every `Deadline::reason` its machines give: the reasons of the
    /// engine's `timer` records.
    fn deadlines(&self) -> &'static [&'static str];
    /// What its machines speak over (which network faults apply).
    fn transport(&self) -> Transport {
        Transport::Datagrams
    }
    /// Which of its decision records are its failure detector's verdicts:
    /// a record of one of these kinds written by node `q` with peer `p`
    /// says that `q` now trusts or suspects `p` (`crate::qos` measures
    /// them against the truth). Records without a peer are not verdicts.
    /// Default: none (the model has no detector to measure).
    fn verdicts(&self) -> &'static [VerdictKind] {
        &[]
    }

    /// Read and check the model's own sections. The scenario layer has
    /// checked everything common, the profile and the invariant names.
    fn validate(&self, sections: &Sections<'_>) -> Result<Box<dyn AnySetup>, ScenarioError>;

    /// The JSON Schema of the types [`Model::validate`] reads.
    fn schema(&self, generator: &mut SchemaGenerator) -> SectionSchemas;

    /// Fuzzing (docs/fuzzing.md): the node every case has. The fuzzer gives
    /// it node and clock fault episodes.
    fn fuzz_hub(&self) -> NodeSection;
    /// One more node of a case, linked to the hub. The fuzzer makes its
    /// name unique and adds fault episodes on it and on its links.
    fn fuzz_node(&self) -> BoxedStrategy<NodeSection>;
    /// Nodes a case may have beside the hub under names of the model's
    /// own, so that other nodes' keys can name them (DECNET's main API and
    /// bus on the master's host). Drawn once per case, never renamed or
    /// removed one by one; the fuzzer adds fault episodes on them as on
    /// the others. `None` (the default): none, and nothing is drawn.
    fn fuzz_companions(&self) -> Option<BoxedStrategy<Vec<NodeSection>>> {
        None
    }
    /// `[config]` keys of a case (empty: no `[config]`); drawn for every
    /// case, then fitted to its profile by [`Model::fuzz_config_for`].
    fn fuzz_config(&self) -> BoxedStrategy<toml::Table> {
        Just(toml::Table::new()).boxed()
    }
    /// The part of a drawn `[config]` that `profile` accepts (all of it by
    /// default).
    fn fuzz_config_for(&self, _profile: &str, config: toml::Table) -> toml::Table {
        config
    }
    /// The invariants a profile is expected to keep under any faults.
    fn fuzz_invariants(&self, _profile: &str) -> Vec<&'static str> {
        self.invariants().to_vec()
    }
    /// The `[[host]]` a case's node runs on, if the model's nodes live on
    /// hosts (kstlib's share a disk): the fuzzer adds the table and the
    /// node's `host` key. `hub` is the hub's name, `seed` the case's.
    fn fuzz_host(&self, _node: &str, _hub: &str, _seed: u64) -> Option<HostSection> {
        None
    }
    /// Whether the disk faults apply to its cases (default: when its nodes
    /// live on hosts).
    fn fuzz_disk_faults(&self) -> bool {
        self.fuzz_host("n", "n", 0).is_some()
    }
}

impl fmt::Debug for dyn Model + '_ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The JSON Schema of a model's sections.
pub struct SectionSchemas {
    /// `[config]`, or `None` if the model has none.
    pub config: Option<Schema>,
    /// The model's `[[node]]` keys: an object schema, whose properties are
    /// added to the common ones.
    pub node: Schema,
}

/// What the scenario layer hands a model: its sections with their spans,
/// and what it has already resolved.
pub struct Sections<'a> {
    /// Turns spans into errors; reads sections into types.
    pub ctx: &'a Context<'a>,
    /// A name from [`Model::profiles`].
    pub profile: &'static str,
    /// Names from [`Model::invariants`], as listed in the file.
    pub invariants: &'a [&'static str],
    /// `[config]` as written.
    pub config: Option<Raw<'a>>,
    /// Every `[[node]]` in file order.
    pub nodes: Vec<WrittenNode<'a>>,
    /// Every node after `count` expansion; `NodeId(i)` is `defs[i]`.
    pub defs: &'a [NodeDef],
    /// The `[[host]]`s; `NodeDef::host` indexes them.
    pub hosts: &'a [HostDef],
}

/// One `[[node]]` table as written.
pub struct WrittenNode<'a> {
    /// Its common keys.
    pub section: &'a NodeSection,
    /// Its other keys: the model's.
    pub keys: Raw<'a>,
    /// The nodes it declares (more than one with `count`).
    pub ids: Range<usize>,
}

/// What a model made of a scenario: the machines and the judge. A `Setup`
/// is cloned into the engine, which asks it for a fresh machine at every
/// (re)start.
pub trait Setup: Any + Clone + fmt::Debug + Send + Sync {
    /// The machine of every node (an enum when nodes differ). Its messages
    /// are serde types so that the madsim engine can carry them.
    type Machine: Machine<Msg: Serialize + DeserializeOwned> + 'static;
    fn machine(&self, node: NodeId) -> Self::Machine;
    /// The scenario's `[scenario] invariants` that `trace` breaks.
    fn violations(&self, scenario: &Scenario, trace: &Trace) -> Vec<Violation>;
}

/// A [`Setup`] of any model. Every `Setup` is one (`crate::run` runs them);
/// [`Model::validate`] returns `Box::new(setup)`.
pub trait AnySetup: Any + fmt::Debug + Send + Sync {
    /// Run `scenario` on the main engine.
    fn run(
        &self,
        scenario: &Scenario,
        seed: u64,
        keep: Level,
    ) -> Result<(Trace, Stats), LimitError>;
    /// Run `scenario` on the madsim engine.
    #[cfg(madsim)]
    fn run_madsim(
        &self,
        scenario: &Scenario,
        seed: u64,
        keep: Level,
    ) -> Result<(Trace, Stats), heartsim_sim::madsim_engine::MadsimError>;
    fn violations(&self, scenario: &Scenario, trace: &Trace) -> Vec<Violation>;
    fn clone_box(&self) -> Box<dyn AnySetup>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl Clone for Box<dyn AnySetup> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// One broken invariant, with the records that show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invariant {} violated: {}", self.invariant, self.message)
    }
}

/// The model named `name`.
pub fn find<'m>(models: &[&'m dyn Model], name: &str) -> Option<&'m dyn Model> {
    models.iter().copied().find(|m| m.name() == name)
}
