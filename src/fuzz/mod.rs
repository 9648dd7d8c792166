//! Seed fuzzing: proptest strategies that generate valid scenarios, with
//! swarm testing, and a runner that checks invariants on every case and
//! shrinks a failure to a scenario file (docs/fuzzing.md).
//!
//! A case is generated as a [`Case`] of small, index-based choices (nodes,
//! fault episodes as fractions of the run) so that proptest can shrink it
//! freely: removing a node or an episode never makes the rest invalid. The
//! case is then built into a [`ScenarioFile`], the type the TOML parser
//! produces, so every case can be written as a file and read back.
//!
//! The model gives the nodes ([`Model::fuzz_hub`], [`Model::fuzz_node`])
//! and its `[config]`; the network, lifecycle and clock fault episodes on
//! them, and on the links between each node and the hub, are this
//! module's, the same for every model.
//!
//! Swarm testing (Groce et al.; TigerBeetle's VOPR `options_swarm`): each
//! case first picks a random subset of the enabled fault kinds and uses only
//! those, so rare combinations are not drowned out by always-on noise.

mod runner;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use proptest::prelude::*;

pub use runner::{
    check_file, emit, first_divergence, fuzz, replay_command, CaseFailure, FuzzConfig, FuzzFailure,
    FuzzReport,
};

use crate::scenario::{
    FaultSection, Header, LinkOverride, LinkSection, Model, NameList, NodeSection, ScenarioFile,
    Transport, FORMAT_VERSION, S,
};

/// A kind of fault a case may use; `--faults` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    Drop,
    Delay,
    Duplicate,
    Reorder,
    Partition,
    OneWayPartition,
    CrashRestart,
    KillRestart,
    StopStart,
    Pause,
    ClockJump,
    ClockDrift,
    Stall,
    Break,
    /// The disk faults: for models whose nodes live on hosts.
    DiskError,
    SlowDisk,
    TornWrite,
    KillBeforeRename,
}

impl FaultKind {
    pub const ALL: [FaultKind; 18] = [
        FaultKind::Drop,
        FaultKind::Delay,
        FaultKind::Duplicate,
        FaultKind::Reorder,
        FaultKind::Partition,
        FaultKind::OneWayPartition,
        FaultKind::CrashRestart,
        FaultKind::KillRestart,
        FaultKind::StopStart,
        FaultKind::Pause,
        FaultKind::ClockJump,
        FaultKind::ClockDrift,
        FaultKind::Stall,
        FaultKind::Break,
        FaultKind::DiskError,
        FaultKind::SlowDisk,
        FaultKind::TornWrite,
        FaultKind::KillBeforeRename,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Drop => "drop",
            FaultKind::Delay => "delay",
            FaultKind::Duplicate => "duplicate",
            FaultKind::Reorder => "reorder",
            FaultKind::Partition => "partition",
            FaultKind::OneWayPartition => "one-way-partition",
            FaultKind::CrashRestart => "crash",
            FaultKind::KillRestart => "kill",
            FaultKind::StopStart => "stop",
            FaultKind::Pause => "pause",
            FaultKind::ClockJump => "clock-jump",
            FaultKind::ClockDrift => "clock-drift",
            FaultKind::Stall => "stall",
            FaultKind::Break => "break",
            FaultKind::DiskError => "disk-error",
            FaultKind::SlowDisk => "slow-disk",
            FaultKind::TornWrite => "torn-write",
            FaultKind::KillBeforeRename => "kill-before-rename",
        }
    }

    pub fn from_name(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether the kind means anything on `transport`: a connection
    /// delivers every message once and in order.
    pub fn applies_to(self, transport: Transport) -> bool {
        transport == Transport::Datagrams
            || !matches!(self, FaultKind::Duplicate | FaultKind::Reorder)
    }

    /// A disk fault, which needs hosts.
    pub fn on_disk(self) -> bool {
        matches!(
            self,
            FaultKind::DiskError
                | FaultKind::SlowDisk
                | FaultKind::TornWrite
                | FaultKind::KillBeforeRename
        )
    }

    /// Every kind that applies to `model` (the disk faults only if it
    /// takes them, [`Model::fuzz_disk_faults`]).
    pub fn all_for(model: &dyn Model) -> Vec<FaultKind> {
        let transport = model.transport();
        let hosts = model.fuzz_disk_faults();
        FaultKind::ALL
            .into_iter()
            .filter(|k| k.applies_to(transport) && (hosts || !k.on_disk()))
            .collect()
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the generator may produce.
#[derive(Clone, Debug)]
pub struct GenOptions {
    pub model: &'static dyn Model,
    /// One of the model's profiles, or any of them.
    pub profile: Option<&'static str>,
    /// The fault kinds a case's swarm is drawn from.
    pub faults: Vec<FaultKind>,
    /// Nodes per case besides the hub, at most (`--max-peers`).
    pub max_nodes: usize,
    /// Fault episodes per node, at most.
    pub max_episodes_per_node: usize,
}

impl GenOptions {
    /// Any profile of `model`, every fault kind.
    pub fn new(model: &'static dyn Model) -> Self {
        GenOptions {
            model,
            profile: None,
            faults: FaultKind::all_for(model),
            max_nodes: 4,
            max_episodes_per_node: 2,
        }
    }
}

/// One generated node with the fault episodes on it and its links:
/// removing a node while shrinking takes its faults along and leaves every
/// other node's unchanged.
#[derive(Clone, Debug)]
pub struct NodeGen {
    /// As the model made it; its name is made unique in the case (a name
    /// also names the link's random stream).
    pub section: NodeSection,
    pub episodes: Vec<EpisodeGen>,
}

/// A fault on one node (and its links) that starts and, for most kinds,
/// ends: the start is a fraction of the run, the length in seconds.
#[derive(Clone, Debug)]
pub struct EpisodeGen {
    /// Index into the case's swarm (modulo its size).
    pub kind: usize,
    /// For links: true is hub -> node.
    pub to_peer: bool,
    /// Start, in millionths of the run (faults land on any millisecond, so
    /// they can fall inside a message's flight).
    pub at_ppm: u32,
    pub len_s: u32,
    /// Kind-specific size: jump seconds, drift ppm, drop/duplicate/reorder
    /// percent, extra latency.
    pub size: u32,
    pub negative: bool,
}

/// Everything one case is made of, before it becomes a scenario file.
#[derive(Clone, Debug)]
pub struct Case {
    pub model: &'static dyn Model,
    pub profile: &'static str,
    pub seed: u64,
    pub duration_min: u32,
    /// The model's `[config]` keys (none: no `[config]`).
    pub config: toml::Table,
    pub swarm: Vec<FaultKind>,
    pub latency_ms: u32,
    /// `[tcp] unread_limit` for a stalling case of a stream model: a few
    /// hundred bytes stand for buffers already full, so that a `stall`
    /// blocks writes as it does behind megabytes of traffic.
    pub unread_limit: Option<u64>,
    pub nodes: Vec<NodeGen>,
    /// The model's companions of the hub ([`Model::fuzz_companions`]),
    /// under their own names.
    pub companions: Vec<NodeGen>,
    /// Episodes on the hub itself (node and clock faults only).
    pub hub_episodes: Vec<EpisodeGen>,
}

fn episode_gen() -> impl Strategy<Value = EpisodeGen> {
    (
        0usize..64,
        any::<bool>(),
        0u32..1_000_000,
        // Mostly short: a reconnect inside one PONG wait must be likely.
        prop_oneof![3 => 1u32..=60, 2 => 61u32..=1800],
        0u32..1000,
        any::<bool>(),
    )
        .prop_map(
            |(kind, to_peer, at_ppm, len_s, size, negative)| EpisodeGen {
                kind,
                to_peer,
                at_ppm,
                len_s,
                size,
                negative,
            },
        )
}

/// Cases under `opts`.
pub fn case_strategy(opts: &GenOptions) -> impl Strategy<Value = Case> {
    let model = opts.model;
    let profiles: Vec<&'static str> = match opts.profile {
        Some(p) => vec![p],
        None => model.profiles().iter().map(|p| p.name).collect(),
    };
    let kinds = opts.faults.clone();
    let n_kinds = kinds.len();
    let (max_nodes, per_node) = (opts.max_nodes.max(1), opts.max_episodes_per_node);
    let node = (
        model.fuzz_node(),
        prop::collection::vec(episode_gen(), 0..=per_node),
    )
        .prop_map(|(section, episodes)| NodeGen { section, episodes });
    // Models without companions draw nothing for them, so their seeds
    // explore the cases they always did.
    let companions = match model.fuzz_companions() {
        None => Just(Vec::new()).boxed(),
        Some(sections) => sections
            .prop_flat_map(move |sections| {
                let n = sections.len();
                let episodes = prop::collection::vec(
                    prop::collection::vec(episode_gen(), 0..=per_node),
                    n..=n,
                );
                (Just(sections), episodes)
            })
            .prop_map(|(sections, episodes)| {
                sections
                    .into_iter()
                    .zip(episodes)
                    .map(|(section, episodes)| NodeGen { section, episodes })
                    .collect()
            })
            .boxed(),
    };
    (
        prop::sample::select(profiles),
        // TOML integers are i64: a seed must fit to be written to a file.
        0..=i64::MAX as u64,
        20u32..=90,
        model.fuzz_config(),
        // The swarm: each enabled kind in or out with even odds.
        prop::collection::vec(any::<bool>(), n_kinds),
        prop_oneof![1 => Just(0u32), 3 => 1u32..=3000],
        prop::collection::vec(node, 1..=max_nodes),
        prop::collection::vec(episode_gen(), 0..=per_node),
        prop::option::weighted(0.5, 1u64..=400),
        companions,
    )
        .prop_map(
            move |(
                profile,
                seed,
                duration_min,
                config,
                mask,
                latency_ms,
                nodes,
                hub_episodes,
                unread_limit,
                companions,
            )| {
                let swarm: Vec<FaultKind> = kinds
                    .iter()
                    .zip(mask)
                    .filter_map(|(k, on)| on.then_some(*k))
                    .collect();
                let stalls = swarm.contains(&FaultKind::Stall)
                    && model.transport() == crate::scenario::Transport::Streams;
                Case {
                    model,
                    profile,
                    seed,
                    duration_min,
                    config: model.fuzz_config_for(profile, config),
                    swarm,
                    latency_ms,
                    unread_limit: unread_limit.filter(|_| stalls),
                    nodes,
                    companions,
                    hub_episodes,
                }
            },
        )
}

/// Scenario files under `opts`.
pub fn scenario_strategy(opts: &GenOptions) -> impl Strategy<Value = ScenarioFile> {
    case_strategy(opts).prop_map(|c| build(&c))
}

fn sp<T>(v: T) -> S<T> {
    S::new(0..0, v)
}

fn secs(s: u64) -> String {
    format!("{s}s")
}

fn empty_fault(at_ms: u64, kind: &str) -> FaultSection {
    FaultSection {
        at: sp(format!("{at_ms}ms")),
        kind: sp(kind.to_string()),
        node: None,
        groups: None,
        from: None,
        to: None,
        by: None,
        ppm: None,
        latency: None,
        drop: None,
        duplicate: None,
        reorder: None,
        reorder_delay: None,
        host: None,
        path: None,
        errno: None,
        write: None,
    }
}

/// Which state an episode occupies, so that two episodes never overlap on
/// it (a second `pause` of a paused node would be an impossible schedule).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Lifecycle(String),
    Partition,
    Held(String, bool),
    Broken(String, bool),
    Link(String, bool),
    Disk(String),
}

/// The names of a case's generated nodes, made unique in order (`p7`,
/// `p7x`, ...) and apart from the companions'.
fn node_names(case: &Case) -> Vec<String> {
    let mut seen: BTreeSet<String> = case
        .companions
        .iter()
        .map(|c| c.section.name.get_ref().clone())
        .collect();
    case.nodes
        .iter()
        .map(|n| {
            let mut name = n.section.name.get_ref().clone();
            while !seen.insert(name.clone()) {
                name.push('x');
            }
            name
        })
        .collect()
}

/// Build the scenario file of a case. Episodes that would overlap on the
/// same state, or start before their node, are left out, so any case
/// (and any shrink of one) is a valid scenario.
pub fn build(case: &Case) -> ScenarioFile {
    let model = case.model;
    let duration_s = u64::from(case.duration_min) * 60;
    let names = node_names(case);
    let hub = model.fuzz_hub();
    let hub_name = hub.name.get_ref().clone();

    let companions: Vec<String> = case
        .companions
        .iter()
        .map(|c| c.section.name.get_ref().clone())
        .collect();
    // The model's hosts, if its nodes live on hosts: node name -> host.
    let host_of: BTreeMap<String, crate::scenario::HostSection> = std::iter::once(&hub_name)
        .chain(&companions)
        .chain(&names)
        .filter_map(|n| {
            model
                .fuzz_host(n, &hub_name, case.seed)
                .map(|h| (n.clone(), h))
        })
        .collect();
    // Each host's nodes, by host name.
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (node, host) in &host_of {
        members
            .entry(host.name.get_ref().clone())
            .or_default()
            .push(node.clone());
    }
    let mut nodes = vec![hub];
    let mut b = Builder {
        case,
        hub: &hub_name,
        duration_ms: duration_s * 1000,
        faults: Vec::new(),
        links: Vec::new(),
        busy: BTreeMap::new(),
        host_of: &host_of,
        members: &members,
    };
    for ep in &case.hub_episodes {
        b.episode(ep, &hub_name, 0, None);
    }
    for (n, name) in case.companions.iter().zip(&companions) {
        for ep in &n.episodes {
            b.episode(ep, name, started_ms(&n.section), Some(name));
        }
        nodes.push(n.section.clone());
    }
    for (n, name) in case.nodes.iter().zip(&names) {
        for ep in &n.episodes {
            b.episode(ep, name, started_ms(&n.section), Some(name));
        }
        let mut section = n.section.clone();
        section.name = sp(name.clone());
        nodes.push(section);
    }
    let Builder {
        mut faults, links, ..
    } = b;
    let mut hosts: Vec<crate::scenario::HostSection> = Vec::new();
    for section in &mut nodes {
        if let Some(host) = host_of.get(section.name.get_ref()) {
            section
                .keys
                .insert("host".into(), host.name.get_ref().clone().into());
            if !hosts
                .iter()
                .any(|h| h.name.get_ref() == host.name.get_ref())
            {
                hosts.push(host.clone());
            }
        }
    }
    // Files list faults in time order (a stable sort: an episode's begin
    // and end are at least a second apart).
    faults.sort_by_key(|f| parse_ms(f.at.get_ref()));

    let swarm: BTreeSet<&str> = case.swarm.iter().map(|k| k.name()).collect();
    ScenarioFile {
        version: sp(FORMAT_VERSION),
        scenario: Header {
            name: format!(
                "fuzz case: {} nodes around {hub_name}, swarm [{}]",
                case.nodes.len(),
                swarm.into_iter().collect::<Vec<_>>().join(", ")
            ),
            model: sp(model.name().to_string()),
            profile: sp(case.profile.to_string()),
            seed: case.seed,
            duration: sp(format!("{}m", case.duration_min)),
            invariants: model
                .fuzz_invariants(case.profile)
                .into_iter()
                .map(|i| sp(i.to_string()))
                .collect(),
        },
        config: (!case.config.is_empty()).then(|| case.config.clone()),
        limits: None,
        tcp: case.unread_limit.map(|n| crate::scenario::TcpSection {
            unread_limit: Some(sp(n)),
            ..crate::scenario::TcpSection::default()
        }),
        network: Some(LinkSection {
            latency: Some(sp(format!("{}ms", case.latency_ms))),
            ..LinkSection::default()
        }),
        links,
        hosts,
        nodes,
        faults,
        expects: Vec::new(),
    }
}

/// Turns episodes into `[[fault]]`s and `[[link]]`s.
struct Builder<'a> {
    case: &'a Case,
    hub: &'a str,
    duration_ms: u64,
    faults: Vec<FaultSection>,
    links: Vec<LinkOverride>,
    busy: BTreeMap<Slot, Vec<(u64, u64)>>,
    host_of: &'a BTreeMap<String, crate::scenario::HostSection>,
    /// Each host's nodes, by host name.
    members: &'a BTreeMap<String, Vec<String>>,
}

impl Builder<'_> {
    /// The nodes on `node`'s host: itself alone if it has none.
    fn on_host_of(&self, node: &str) -> Vec<String> {
        self.host_of
            .get(node)
            .and_then(|h| self.members.get(h.name.get_ref()))
            .cloned()
            .unwrap_or_else(|| vec![node.to_string()])
    }

    /// Claim `slot` for `[at, end]`, unless an earlier episode holds it.
    fn claim(&mut self, slot: Slot, at: u64, end: u64) -> bool {
        let taken = self.busy.entry(slot).or_default();
        if taken.iter().any(|&(a, b)| at <= b && a <= end) {
            return false;
        }
        taken.push((at, end));
        true
    }

    /// One episode on `node` (started at `started_ms`); `peer` is the node
    /// whose links to the hub link kinds act on (`None` for the hub, which
    /// gets node and clock faults only).
    ///
    /// On a node that shares its host: a `crash` is a `kill` (crashing
    /// one process would crash its host and every other process on it),
    /// a clock fault acts on the host's clock, a partition separates the
    /// two hosts' processes, and link faults between two processes of one
    /// host are left out (a host's processes reach each other locally).
    fn episode(&mut self, ep: &EpisodeGen, node: &str, started_ms: u64, peer: Option<&String>) {
        // Times are in milliseconds from here on.
        let swarm = &self.case.swarm;
        if swarm.is_empty() {
            return;
        }
        let kind = swarm[ep.kind % swarm.len()];
        let at = u64::from(ep.at_ppm) * self.duration_ms / 1_000_000;
        let end = (at + u64::from(ep.len_s) * 1000).min(self.duration_ms - 1000);
        if at <= started_ms || at >= end {
            return;
        }
        let (from, to) = match (peer, ep.to_peer) {
            (Some(p), true) => (self.hub.to_string(), p.clone()),
            (Some(p), false) => (p.clone(), self.hub.to_string()),
            (None, _) => (String::new(), String::new()),
        };
        let link_fault = |at_ms: u64, kind: &str| {
            let mut f = empty_fault(at_ms, kind);
            f.from = Some(sp(NameList::One(from.clone())));
            f.to = Some(sp(NameList::One(to.clone())));
            f
        };
        let node_fault = |at_ms: u64, kind: &str| {
            let mut f = empty_fault(at_ms, kind);
            f.node = Some(sp(node.to_string()));
            f
        };
        let on_link = |slot: fn(String, bool) -> Slot| slot(node.to_string(), ep.to_peer);
        let host = self.host_of.get(node).map(|h| h.name.get_ref().clone());
        let shared = self.on_host_of(node).len() > 1;
        let local = peer.is_some() && self.on_host_of(node).iter().any(|n| n == self.hub);
        let slot = match kind {
            FaultKind::CrashRestart
            | FaultKind::KillRestart
            | FaultKind::StopStart
            | FaultKind::KillBeforeRename
            | FaultKind::Pause => Some(Slot::Lifecycle(node.to_string())),
            _ if kind.on_disk() && (host.is_none() || !self.case.model.fuzz_disk_faults()) => {
                return
            }
            FaultKind::DiskError | FaultKind::SlowDisk => host.clone().map(Slot::Disk),
            FaultKind::TornWrite => None,
            FaultKind::ClockJump | FaultKind::ClockDrift => None,
            _ if peer.is_none() || local => return, // link kinds need a peer's link
            FaultKind::Partition | FaultKind::OneWayPartition => Some(Slot::Partition),
            FaultKind::Stall => Some(on_link(Slot::Held)),
            FaultKind::Break => Some(on_link(Slot::Broken)),
            _ => Some(on_link(Slot::Link)),
        };
        if let Some(slot) = slot {
            if !self.claim(slot, at, end) {
                return;
            }
        }
        match kind {
            FaultKind::CrashRestart
            | FaultKind::KillRestart
            | FaultKind::StopStart
            | FaultKind::Pause => {
                let (down, up) = match kind {
                    // A host crash is a power loss of its disk: a model
                    // that wants no disk faults (`Model::fuzz_disk_faults`)
                    // gets a kill on a declared host instead.
                    FaultKind::CrashRestart
                        if shared || (host.is_some() && !self.case.model.fuzz_disk_faults()) =>
                    {
                        ("kill", "restart")
                    }
                    FaultKind::CrashRestart => ("crash", "restart"),
                    FaultKind::KillRestart => ("kill", "restart"),
                    FaultKind::StopStart => ("stop", "start"),
                    _ => ("pause", "resume"),
                };
                self.faults.push(node_fault(at, down));
                self.faults.push(node_fault(end, up));
            }
            FaultKind::KillBeforeRename => {
                // A process that renames nothing is rebooted at the end.
                self.faults.push(node_fault(at, "kill-before-rename"));
                self.faults.push(node_fault(end, "restart"));
            }
            FaultKind::DiskError | FaultKind::SlowDisk | FaultKind::TornWrite => {
                let Some(host) = host else { return };
                let disk_fault = |at_ms: u64, kind: &str| {
                    let mut f = empty_fault(at_ms, kind);
                    f.host = Some(sp(host.clone()));
                    f
                };
                match kind {
                    FaultKind::DiskError => {
                        let mut f = disk_fault(at, "disk-error");
                        let errno = ["ENOSPC", "EIO", "EACCES"][(ep.size % 3) as usize];
                        f.errno = Some(sp(errno.to_string()));
                        self.faults.push(f);
                        self.faults.push(disk_fault(end, "disk-ok"));
                    }
                    FaultKind::SlowDisk => {
                        let mut f = disk_fault(at, "slow-disk");
                        f.write = Some(sp(format!("{}ms", 1 + ep.size * 20))); // up to 20 s
                        self.faults.push(f);
                        let mut f = disk_fault(end, "slow-disk");
                        f.write = Some(sp("0s".to_string()));
                        self.faults.push(f);
                    }
                    _ => self.faults.push(disk_fault(at, "torn-write")),
                }
            }
            FaultKind::ClockJump | FaultKind::ClockDrift => {
                // The processes of a shared host have its clock.
                let mut f = match (host, shared) {
                    (Some(h), true) => {
                        let mut f = empty_fault(at, kind.name());
                        f.host = Some(sp(h));
                        f
                    }
                    _ => node_fault(at, kind.name()),
                };
                if kind == FaultKind::ClockJump {
                    let by = 1 + u64::from(ep.size) * 7; // up to ~2 h
                    let sign = if ep.negative { "-" } else { "+" };
                    f.by = Some(sp(format!("{sign}{}", secs(by))));
                } else {
                    let ppm = i64::from(ep.size) * 200; // up to ±20%
                    f.ppm = Some(sp(if ep.negative { -ppm } else { ppm }));
                }
                self.faults.push(f);
            }
            FaultKind::Partition => {
                let mut f = empty_fault(at, "partition");
                f.groups = Some(sp(vec![self.on_host_of(self.hub), self.on_host_of(node)]));
                self.faults.push(f);
                self.faults.push(empty_fault(end, "heal"));
            }
            FaultKind::OneWayPartition => {
                let mut f = empty_fault(at, "partition");
                f.from = Some(sp(NameList::Many(self.on_host_of(&from))));
                f.to = Some(sp(NameList::Many(self.on_host_of(&to))));
                self.faults.push(f);
                self.faults.push(empty_fault(end, "heal"));
            }
            FaultKind::Stall => {
                self.faults.push(link_fault(at, "stall"));
                self.faults.push(link_fault(end, "release"));
            }
            FaultKind::Break => {
                self.faults.push(link_fault(at, "break"));
                self.faults.push(link_fault(end, "repair"));
            }
            k => {
                // Drop, delay, duplicate, reorder: a bad link for a while
                // (from the start, for an early episode), then clean again.
                let pct = 1 + ep.size % 40;
                let mut section = LinkSection::default();
                match k {
                    FaultKind::Drop => section.drop = Some(sp(format!("{pct}/100"))),
                    FaultKind::Duplicate => section.duplicate = Some(sp(format!("{pct}/100"))),
                    FaultKind::Reorder => {
                        section.reorder = Some(sp(format!("{pct}/100")));
                        section.reorder_delay = Some(sp(format!("{}ms", 1 + ep.size * 40)));
                    }
                    _ => {
                        let lo = u64::from(self.case.latency_ms);
                        let hi = lo + u64::from(ep.size) * 60;
                        section.latency = Some(sp(format!("{lo}ms..{hi}ms")));
                    }
                }
                if ep.at_ppm < 20_000 {
                    self.links.push(LinkOverride {
                        from: sp(from.clone()),
                        to: sp(to.clone()),
                        latency: section.latency,
                        drop: section.drop,
                        duplicate: section.duplicate,
                        reorder: section.reorder,
                        reorder_delay: section.reorder_delay,
                    });
                } else {
                    let mut f = link_fault(at, "link");
                    f.latency = section.latency;
                    f.drop = section.drop;
                    f.duplicate = section.duplicate;
                    f.reorder = section.reorder;
                    f.reorder_delay = section.reorder_delay;
                    self.faults.push(f);
                    let mut f = link_fault(end, "link");
                    f.latency = Some(sp(format!("{}ms", self.case.latency_ms)));
                    f.drop = Some(sp("0/100".to_string()));
                    f.duplicate = Some(sp("0/100".to_string()));
                    f.reorder = Some(sp("0/100".to_string()));
                    self.faults.push(f);
                }
            }
        }
    }
}

/// When a node starts, in milliseconds.
fn started_ms(section: &NodeSection) -> u64 {
    section.start.as_ref().map_or(0, |s| {
        s.get_ref()
            .parse::<heartsim_sim::Duration>()
            .map_or(0, |d| d.as_us() / 1000)
    })
}

fn parse_ms(s: &str) -> u64 {
    s.trim_end_matches("ms").parse().unwrap_or(0)
}

/// The file as TOML text.
pub fn to_toml(file: &ScenarioFile) -> String {
    toml::to_string(file).expect("a scenario file always serializes")
}
