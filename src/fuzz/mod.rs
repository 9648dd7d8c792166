//! Seed fuzzing: proptest strategies that generate valid scenarios, with
//! swarm testing, and a runner that checks invariants on every case and
//! shrinks a failure to a scenario file (docs/fuzzing.md).
//!
//! A case is generated as a [`Case`] of small, index-based choices (peers,
//! fault episodes as fractions of the run) so that proptest can shrink it
//! freely: removing a peer or an episode never makes the rest invalid. The
//! case is then built into a [`ScenarioFile`], the type the TOML parser
//! produces, so every case can be written as a file and read back.
//!
//! Swarm testing (Groce et al.; TigerBeetle's VOPR `options_swarm`): each
//! case first picks a random subset of the enabled fault kinds and uses only
//! those, so rare combinations are not drowned out by always-on noise.

mod runner;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use proptest::prelude::*;
use toml::Spanned;

pub use runner::{
    check_file, first_divergence, fuzz, replay_command, CaseFailure, FuzzConfig, FuzzFailure,
    FuzzReport,
};

use crate::models::joinmarket::invariants::Invariant;
use crate::models::joinmarket::Profile;
use crate::scenario::{
    ConfigSection, FaultSection, Header, LinkOverride, LinkSection, NameList, NodeSection,
    ScenarioFile, FORMAT_VERSION, MODEL_JOINMARKET,
};

/// A kind of fault a case may use; `--faults` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    Drop,
    Delay,
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
}

impl FaultKind {
    pub const ALL: [FaultKind; 12] = [
        FaultKind::Drop,
        FaultKind::Delay,
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
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Drop => "drop",
            FaultKind::Delay => "delay",
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
        }
    }

    pub fn from_name(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
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
    /// One profile, or any of them.
    pub profile: Option<Profile>,
    /// The fault kinds a case's swarm is drawn from.
    pub faults: Vec<FaultKind>,
    /// Peers per case, at most (the directory comes on top).
    pub max_peers: usize,
    /// Fault episodes per node, at most.
    pub max_episodes_per_node: usize,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            profile: None,
            faults: FaultKind::ALL.to_vec(),
            max_peers: 4,
            max_episodes_per_node: 2,
        }
    }
}

/// The invariants a profile is expected to keep. eb812d4c evicts a
/// connection twice after a failed send, as upstream does, so the
/// one-eviction invariant is not asked of it.
pub fn invariants_for(profile: Profile) -> Vec<Invariant> {
    Invariant::ALL
        .into_iter()
        .filter(|i| {
            !(profile == Profile::JoinmarketNgEb812d4c && *i == Invariant::OneEvictionPerConnection)
        })
        .collect()
}

/// One simulated peer, as generated, with the fault episodes on it and its
/// links: removing a peer while shrinking takes its faults along and leaves
/// every other peer's unchanged.
#[derive(Clone, Debug)]
pub struct PeerGen {
    /// Its name is `p<name_id>`, stable while others are shrunk away (a name
    /// also names the link's random stream).
    pub name_id: u16,
    pub maker: bool,
    pub ping: bool,
    /// 0..6 responsive, 6..8 silent, 8 chatty.
    pub behaviour: u8,
    pub chat_every_s: u32,
    pub chat_malformed: bool,
    pub ping_directory_every_s: Option<u32>,
    pub reconnect_after_s: Option<u32>,
    pub start_s: u32,
    pub episodes: Vec<EpisodeGen>,
}

/// A fault on one node (and its links) that starts and, for most kinds,
/// ends: the start is a fraction of the run, the length in seconds.
#[derive(Clone, Debug)]
pub struct EpisodeGen {
    /// Index into the case's swarm (modulo its size).
    pub kind: usize,
    /// For links: true is directory -> peer.
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

/// Heartbeat timers for joinmarket-ng profiles (joinmarket-rs hard-codes
/// them). Hard eviction comes after two full probe rounds, as with the
/// upstream defaults, so that a prompt peer is always probed first.
#[derive(Clone, Debug)]
pub struct TimersGen {
    pub sweep_s: u32,
    pub idle_s: u32,
    pub pong_s: u32,
    pub hard_extra_s: u32,
}

/// Everything one case is made of, before it becomes a scenario file.
#[derive(Clone, Debug)]
pub struct Case {
    pub profile: Profile,
    pub seed: u64,
    pub duration_min: u32,
    pub timers: Option<TimersGen>,
    pub swarm: Vec<FaultKind>,
    pub latency_ms: u32,
    pub peers: Vec<PeerGen>,
    /// Episodes on the directory itself (node and clock faults only).
    pub directory_episodes: Vec<EpisodeGen>,
}

fn peer_gen(max_episodes: usize) -> impl Strategy<Value = PeerGen> {
    (
        (
            1u16..=999,
            any::<bool>(),
            prop::bool::weighted(0.8),
            0u8..9,
            5u32..=600,
            any::<bool>(),
        ),
        (
            prop::option::weighted(0.15, 1u32..=120),
            prop::option::weighted(0.6, 1u32..=120),
            prop_oneof![4 => Just(0u32), 1 => 0u32..=300],
            prop::collection::vec(episode_gen(), 0..=max_episodes),
        ),
    )
        .prop_map(
            |(
                (name_id, maker, ping, behaviour, chat_every_s, chat_malformed),
                (pde, reconnect, start_s, episodes),
            )| PeerGen {
                name_id,
                maker,
                ping,
                behaviour,
                chat_every_s,
                chat_malformed,
                ping_directory_every_s: pde,
                reconnect_after_s: reconnect,
                start_s,
                episodes,
            },
        )
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

fn timers_gen() -> impl Strategy<Value = TimersGen> {
    (10u32..=120, 30u32..=900, 5u32..=60, 0u32..=600).prop_map(
        |(sweep_s, idle_s, pong_s, hard_extra_s)| TimersGen {
            sweep_s,
            idle_s,
            pong_s,
            hard_extra_s,
        },
    )
}

/// Cases under `opts`.
pub fn case_strategy(opts: &GenOptions) -> impl Strategy<Value = Case> {
    let profiles: Vec<Profile> = match opts.profile {
        Some(p) => vec![p],
        None => Profile::ALL.to_vec(),
    };
    let kinds = opts.faults.clone();
    let n_kinds = kinds.len();
    let (max_peers, per_node) = (opts.max_peers.max(1), opts.max_episodes_per_node);
    (
        prop::sample::select(profiles),
        // TOML integers are i64: a seed must fit to be written to a file.
        0..=i64::MAX as u64,
        20u32..=90,
        timers_gen(),
        // The swarm: each enabled kind in or out with even odds.
        prop::collection::vec(any::<bool>(), n_kinds),
        prop_oneof![1 => Just(0u32), 3 => 1u32..=3000],
        prop::collection::vec(peer_gen(per_node), 1..=max_peers),
        prop::collection::vec(episode_gen(), 0..=per_node),
    )
        .prop_map(
            move |(profile, seed, duration_min, timers, mask, latency_ms, peers, dir_eps)| Case {
                profile,
                seed,
                duration_min,
                timers: (profile != Profile::JoinmarketRs).then_some(timers),
                swarm: kinds
                    .iter()
                    .zip(mask)
                    .filter_map(|(k, on)| on.then_some(*k))
                    .collect(),
                latency_ms,
                peers,
                directory_episodes: dir_eps,
            },
        )
}

/// Scenario files under `opts`.
pub fn scenario_strategy(opts: &GenOptions) -> impl Strategy<Value = ScenarioFile> {
    case_strategy(opts).prop_map(|c| build(&c))
}

fn sp<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
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
}

/// The names of a case's peers: `p<name_id>`, made unique in order.
fn peer_names(case: &Case) -> Vec<String> {
    let mut seen = BTreeSet::new();
    case.peers
        .iter()
        .map(|p| {
            let mut name = format!("p{}", p.name_id);
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
    let duration_s = u64::from(case.duration_min) * 60;
    let names = peer_names(case);

    let mut nodes = vec![NodeSection {
        name: sp("dir".to_string()),
        kind: sp("directory".to_string()),
        count: None,
        ping: false,
        behaviour: None,
        chat_every: None,
        chat_line: None,
        ping_directory_every: None,
        reconnect_after: None,
        start: None,
        clock_drift_ppm: None,
        location: None,
    }];
    for (p, name) in case.peers.iter().zip(&names) {
        let behaviour = match p.behaviour {
            0..=5 => None,
            6 | 7 => Some("silent"),
            _ => Some("chatty"),
        };
        let chatty = behaviour == Some("chatty");
        nodes.push(NodeSection {
            name: sp(name.clone()),
            kind: sp(if p.maker { "maker" } else { "taker" }.to_string()),
            count: None,
            ping: p.ping,
            behaviour: behaviour.map(|b| sp(b.to_string())),
            chat_every: chatty.then(|| sp(secs(u64::from(p.chat_every_s)))),
            chat_line: (chatty && p.chat_malformed).then(|| sp("malformed".to_string())),
            ping_directory_every: p.ping_directory_every_s.map(|s| sp(secs(u64::from(s)))),
            reconnect_after: p.reconnect_after_s.map(|s| sp(secs(u64::from(s)))),
            start: (p.start_s > 0).then(|| sp(secs(u64::from(p.start_s)))),
            clock_drift_ppm: None,
            location: None,
        });
    }

    let mut b = Builder {
        case,
        duration_ms: duration_s * 1000,
        faults: Vec::new(),
        links: Vec::new(),
        busy: BTreeMap::new(),
    };
    for ep in &case.directory_episodes {
        b.episode(ep, "dir", 0, None);
    }
    for (p, name) in case.peers.iter().zip(&names) {
        for ep in &p.episodes {
            b.episode(ep, name, u64::from(p.start_s), Some(name));
        }
    }
    let Builder {
        mut faults, links, ..
    } = b;
    // Files list faults in time order (a stable sort: an episode's begin
    // and end are at least a second apart).
    faults.sort_by_key(|f| parse_ms(f.at.get_ref()));

    let swarm: BTreeSet<&str> = case.swarm.iter().map(|k| k.name()).collect();
    ScenarioFile {
        version: sp(FORMAT_VERSION),
        scenario: Header {
            name: format!(
                "fuzz case: {} peers, swarm [{}]",
                case.peers.len(),
                swarm.into_iter().collect::<Vec<_>>().join(", ")
            ),
            model: sp(MODEL_JOINMARKET.to_string()),
            profile: sp(case.profile.name().to_string()),
            seed: case.seed,
            duration: sp(format!("{}m", case.duration_min)),
            invariants: invariants_for(case.profile)
                .into_iter()
                .map(|i| sp(i.name().to_string()))
                .collect(),
        },
        config: case.timers.as_ref().map(|t| {
            let hard = t.idle_s + 2 * (t.sweep_s + t.pong_s) + 1 + t.hard_extra_s;
            ConfigSection {
                sweep_interval: Some(sp(secs(u64::from(t.sweep_s)))),
                idle_threshold: Some(sp(secs(u64::from(t.idle_s)))),
                hard_evict: Some(sp(secs(u64::from(hard)))),
                pong_wait: Some(sp(secs(u64::from(t.pong_s)))),
            }
        }),
        limits: None,
        network: Some(LinkSection {
            latency: Some(sp(format!("{}ms", case.latency_ms))),
            ..LinkSection::default()
        }),
        links,
        nodes,
        faults,
        expects: Vec::new(),
    }
}

/// Turns episodes into `[[fault]]`s and `[[link]]`s.
struct Builder<'a> {
    case: &'a Case,
    duration_ms: u64,
    faults: Vec<FaultSection>,
    links: Vec<LinkOverride>,
    busy: BTreeMap<Slot, Vec<(u64, u64)>>,
}

impl Builder<'_> {
    /// Claim `slot` for `[at, end]`, unless an earlier episode holds it.
    fn claim(&mut self, slot: Slot, at: u64, end: u64) -> bool {
        let taken = self.busy.entry(slot).or_default();
        if taken.iter().any(|&(a, b)| at <= b && a <= end) {
            return false;
        }
        taken.push((at, end));
        true
    }

    /// One episode on `node` (started at `started_s`); `peer` is the peer
    /// whose links link kinds act on (`None` for the directory, which gets
    /// node and clock faults only).
    fn episode(&mut self, ep: &EpisodeGen, node: &str, started_s: u64, peer: Option<&String>) {
        // Times are in milliseconds from here on.
        let swarm = &self.case.swarm;
        if swarm.is_empty() {
            return;
        }
        let kind = swarm[ep.kind % swarm.len()];
        let at = u64::from(ep.at_ppm) * self.duration_ms / 1_000_000;
        let end = (at + u64::from(ep.len_s) * 1000).min(self.duration_ms - 1000);
        if at <= started_s * 1000 || at >= end {
            return;
        }
        let (from, to) = match (peer, ep.to_peer) {
            (Some(p), true) => ("dir".to_string(), p.clone()),
            (Some(p), false) => (p.clone(), "dir".to_string()),
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
        let slot = match kind {
            FaultKind::CrashRestart
            | FaultKind::KillRestart
            | FaultKind::StopStart
            | FaultKind::Pause => Some(Slot::Lifecycle(node.to_string())),
            FaultKind::ClockJump | FaultKind::ClockDrift => None,
            _ if peer.is_none() => return, // link kinds need a peer's link
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
                    FaultKind::CrashRestart => ("crash", "restart"),
                    FaultKind::KillRestart => ("kill", "restart"),
                    FaultKind::StopStart => ("stop", "start"),
                    _ => ("pause", "resume"),
                };
                self.faults.push(node_fault(at, down));
                self.faults.push(node_fault(end, up));
            }
            FaultKind::ClockJump => {
                let mut f = node_fault(at, "clock-jump");
                let by = 1 + u64::from(ep.size) * 7; // up to ~2 h
                let sign = if ep.negative { "-" } else { "+" };
                f.by = Some(sp(format!("{sign}{}", secs(by))));
                self.faults.push(f);
            }
            FaultKind::ClockDrift => {
                let mut f = node_fault(at, "clock-drift");
                let ppm = i64::from(ep.size) * 200; // up to ±20%
                f.ppm = Some(sp(if ep.negative { -ppm } else { ppm }));
                self.faults.push(f);
            }
            FaultKind::Partition => {
                let mut f = empty_fault(at, "partition");
                f.groups = Some(sp(vec![vec!["dir".to_string()], vec![node.to_string()]]));
                self.faults.push(f);
                self.faults.push(empty_fault(end, "heal"));
            }
            FaultKind::OneWayPartition => {
                let mut f = empty_fault(at, "partition");
                f.from = Some(sp(NameList::Many(vec![from.clone()])));
                f.to = Some(sp(NameList::Many(vec![to.clone()])));
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
                // Drop, delay: a bad link for a while (from the start, for
                // an early episode), then clean again. (Duplication and
                // reordering are datagram faults; the directory speaks TCP.)
                let pct = 1 + ep.size % 40;
                let mut section = LinkSection::default();
                match k {
                    FaultKind::Drop => section.drop = Some(sp(format!("{pct}/100"))),
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

fn parse_ms(s: &str) -> u64 {
    s.trim_end_matches("ms").parse().unwrap_or(0)
}

/// The file as TOML text.
pub fn to_toml(file: &ScenarioFile) -> String {
    toml::to_string(file).expect("a scenario file always serializes")
}
