//! Properties every directory trace must have, as named predicates over the
//! decision records. The fuzzer checks them on every generated case; a
//! scenario file lists the ones `heartsim run` must check in
//! `[scenario] invariants`.
//!
//! Safety: a healthy peer is never evicted; a directory peer is never
//! evicted; a connection is evicted at most once. Liveness (two-phase, as
//! TigerBeetle's VOPR): once every fault has ended, a silent peer is
//! evicted within the model's bound.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use heartsim_sim::net::{Latency, LinkConfig};
use heartsim_sim::trace::{Record, Trace};
use heartsim_sim::{Duration, Fault, NodeId, Timestamp};

use super::location::Location;
use super::setup::Setup;
use super::{kind, Behaviour, PeerSpec, Profile};
use crate::scenario::{Scenario, Violation};

/// A named property of directory traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invariant {
    /// A peer that answers every PING (or, as a non-ping maker, every
    /// `!orderbook`) and whose links to the directory were never faulty is
    /// never evicted. Graceful stop/start of the peer is allowed: that is how
    /// eb812d4c's reconnect mis-eviction shows.
    HealthyPeerNeverEvicted,
    /// No directory peer is ever evicted.
    DirectoryPeerNeverEvicted,
    /// No connection is evicted twice (eb812d4c's failed-send double
    /// eviction breaks it, as upstream does).
    OneEvictionPerConnection,
    /// After the last fault, every registered silent peer is evicted within
    /// `hard_evict + 2 (sweep_interval + pong_wait)`, stretched by a slow
    /// directory clock and by backward wall-clock jumps.
    SilentPeerEvictedAfterHeal,
    /// Once every fault has ended and its effects have had the same bound to
    /// play out, a peer that answers every probe over links that are clean
    /// again is not evicted. A peer evicted during the faults need not come
    /// back: simulated peers, like upstream clients, reconnect only when
    /// they see the directory close them.
    HealthyPeerStaysRegisteredAfterHeal,
    /// The directory never unregisters a peer while leaving its connection
    /// open: such a peer is connected, unswept and never evicted.
    /// eb812d4c breaks it, as upstream does: an old connection's cleanup
    /// unregisters the key's new owner (issue 18, point 5).
    NoRegistrationLeftBehind,
}

impl Invariant {
    pub const ALL: [Invariant; 6] = [
        Invariant::HealthyPeerNeverEvicted,
        Invariant::DirectoryPeerNeverEvicted,
        Invariant::OneEvictionPerConnection,
        Invariant::SilentPeerEvictedAfterHeal,
        Invariant::HealthyPeerStaysRegisteredAfterHeal,
        Invariant::NoRegistrationLeftBehind,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Invariant::HealthyPeerNeverEvicted => "healthy-peer-never-evicted",
            Invariant::DirectoryPeerNeverEvicted => "directory-peer-never-evicted",
            Invariant::OneEvictionPerConnection => "one-eviction-per-connection",
            Invariant::SilentPeerEvictedAfterHeal => "silent-peer-evicted-after-heal",
            Invariant::HealthyPeerStaysRegisteredAfterHeal => {
                "healthy-peer-stays-registered-after-heal"
            }
            Invariant::NoRegistrationLeftBehind => "no-registration-left-behind",
        }
    }

    pub fn from_name(name: &str) -> Option<Invariant> {
        Invariant::ALL.into_iter().find(|i| i.name() == name)
    }
}

/// The invariants a profile breaks because its upstream does: the fuzzer
/// does not ask them of it (each is shown by a scenario instead).
/// eb812d4c evicts a connection twice after a failed send
/// (`send-failure-ng-eb812d4c`), and lets an old connection's cleanup
/// unregister the key's new owner
/// (`old-connection-closing-unregisters-its-replacement-ng-eb812d4c`).
pub fn upstream_breaks(profile: Profile) -> &'static [Invariant] {
    match profile {
        Profile::JoinmarketNgEb812d4c => &[
            Invariant::OneEvictionPerConnection,
            Invariant::NoRegistrationLeftBehind,
        ],
        Profile::JoinmarketNg | Profile::JoinmarketRs => &[],
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Check `invariants` on a finished run of `scenario`, a
/// joinmarket-directory scenario (this panics on another model's).
pub fn check(scenario: &Scenario, trace: &Trace, invariants: &[Invariant]) -> Vec<Violation> {
    let jm: &Setup = scenario
        .setup()
        .expect("invariants of a joinmarket-directory scenario");
    let decisions: Vec<&Record> = trace.decisions().collect();
    let mut out = Vec::new();
    for &inv in invariants {
        let found = match inv {
            Invariant::HealthyPeerNeverEvicted => {
                healthy_never_evicted(scenario, jm, trace, &decisions)
            }
            Invariant::DirectoryPeerNeverEvicted => directory_never_evicted(jm, trace, &decisions),
            Invariant::OneEvictionPerConnection => one_eviction(trace, &decisions),
            Invariant::SilentPeerEvictedAfterHeal => {
                silent_evicted(scenario, jm, trace, &decisions)
            }
            Invariant::HealthyPeerStaysRegisteredAfterHeal => {
                healthy_stays_registered(scenario, jm, trace, &decisions)
            }
            Invariant::NoRegistrationLeftBehind => left_behind(trace, &decisions),
        };
        out.extend(found.into_iter().map(|message| Violation {
            invariant: inv.name(),
            message,
        }));
    }
    out
}

/// Whether an eviction record removed a connection (eb812d4c also records
/// the no-op second eviction of a key nobody owns).
fn removed_a_connection(r: &Record) -> bool {
    r.kind == kind::EVICT && r.msg.as_deref() != Some(kind::NO_CONNECTION)
}

fn line(trace: &Trace, r: &Record) -> String {
    trace.text_line(r).trim_start().to_string()
}

/// The directory's view of a link: clean means it neither loses, copies,
/// nor reorders, and answers well inside the PONG wait.
fn clean(config: &LinkConfig, max_latency: Duration) -> bool {
    matches!(config.latency, Latency::Fixed(d) if d <= max_latency)
        && config.drop.is_never()
        && config.duplicate.is_never()
        && config.reorder.is_never()
}

/// Whether peer `p` answers every probe in time over clean links, whatever
/// the faults: the part of `HealthyPeerNeverEvicted` that is about the peer
/// and the timing config.
fn answers_probes(jm: &Setup, p: NodeId) -> bool {
    let Some(spec) = jm.peer(p) else {
        return false;
    };
    let t = &jm.timers;
    if spec.behaviour != Behaviour::Responsive {
        return false; // not responsive
    }
    if spec.is_directory {
        return false; // a directory peer
    }
    let maker = matches!(
        jm.profile.parse_location(&spec.nick, &spec.location),
        Location::Maker(_)
    );
    if !spec.ping && !maker {
        return false; // neither ping-capable nor a maker (never probed)
    }
    if spec.location != PeerSpec::default_location(&spec.nick, spec.maker) {
        return false; // a hand-written location
    }
    if spec
        .ping_directory_every
        .is_some_and(|d| d <= Duration::from_secs(10))
    {
        return false; // PINGs the directory 6 or more times a minute
    }
    // The config must let a prompt peer be probed before it is hard-evicted.
    let period = t.sweep_interval + t.pong_wait;
    t.hard_evict > t.idle_threshold + period + period
}

/// The latency under which a PONG comes back well inside the wait, even on
/// a fast directory clock.
fn max_clean_latency(jm: &Setup) -> Duration {
    Duration::from_us(jm.timers.pong_wait.as_us() / 4)
}

/// The configured link `from -> to` before any fault.
fn initial_link(scenario: &Scenario, from: NodeId, to: NodeId) -> LinkConfig {
    scenario
        .links
        .iter()
        .rev()
        .find(|(f, t, _)| (*f, *t) == (from, to))
        .map_or(scenario.network, |(_, _, c)| *c)
}

/// Whether peer `p` counts as healthy (see `HealthyPeerNeverEvicted`).
fn is_healthy(scenario: &Scenario, jm: &Setup, p: NodeId) -> bool {
    if !answers_probes(jm, p) {
        return false;
    }
    let dir = jm.directory;
    let max_latency = max_clean_latency(jm);
    let links = [(dir, p), (p, dir)];
    if links
        .iter()
        .any(|&(f, to)| !clean(&initial_link(scenario, f, to), max_latency))
    {
        return false; // a link is lossy, jittery, reordering or slow
    }
    !scenario.faults.iter().any(|(_, fault)| match fault {
        Fault::Crash(n)
        | Fault::Kill(n)
        | Fault::Restart(n)
        | Fault::Pause(n)
        | Fault::Resume(n) => *n == p || *n == dir,
        Fault::Stop(n) | Fault::Start(n) => *n == dir,
        Fault::ClockJump { node, .. } => *node == dir,
        Fault::Partition(rules) => separates(rules, p, dir),
        Fault::Link { from, to, config } => {
            links.contains(&(*from, *to)) && !clean(config, max_latency)
        }
        Fault::Break { from, to } | Fault::Hold { from, to } | Fault::Stall { from, to } => {
            links.contains(&(*from, *to))
        }
        _ => false,
    })
}

fn separates(rules: &[heartsim_sim::net::Partition], a: NodeId, b: NodeId) -> bool {
    rules.iter().any(|r| {
        (r.from.contains(&a) && r.to.contains(&b)) || (r.from.contains(&b) && r.to.contains(&a))
    })
}

/// Whether peer `p` answers every probe and, once the last fault has
/// happened, it and the directory run and its links are clean: every fault
/// on them has been undone (see `HealthyPeerStaysRegisteredAfterHeal`).
fn healthy_after_heal(scenario: &Scenario, jm: &Setup, p: NodeId) -> bool {
    if !answers_probes(jm, p) {
        return false;
    }
    let dir = jm.directory;
    let max_latency = max_clean_latency(jm);
    let links = [(dir, p), (p, dir)];
    let mut config: BTreeMap<(NodeId, NodeId), LinkConfig> = links
        .iter()
        .map(|&(f, t)| ((f, t), initial_link(scenario, f, t)))
        .collect();
    // Faults still in force at the end: crashed or paused nodes, a stopped
    // directory, a partition, broken/held/stalled links.
    let mut down: BTreeSet<NodeId> = BTreeSet::new();
    let mut blocked: BTreeSet<(NodeId, NodeId)> = BTreeSet::new();
    let mut partitioned = false;
    for (_, fault) in &scenario.faults {
        match fault {
            Fault::Crash(n) | Fault::Kill(n) | Fault::Pause(n) => {
                down.insert(*n);
            }
            Fault::Stop(n) if *n == dir => {
                down.insert(*n);
            }
            Fault::Restart(n) | Fault::Resume(n) | Fault::Start(n) => {
                down.remove(n);
            }
            Fault::Partition(rules) => partitioned |= separates(rules, p, dir),
            Fault::Heal => partitioned = false,
            Fault::Link {
                from,
                to,
                config: c,
            } => {
                if let Some(slot) = config.get_mut(&(*from, *to)) {
                    *slot = *c;
                }
            }
            Fault::Break { from, to } | Fault::Hold { from, to } | Fault::Stall { from, to } => {
                blocked.insert((*from, *to));
            }
            Fault::Repair { from, to } | Fault::Release { from, to } => {
                blocked.remove(&(*from, *to));
            }
            _ => {}
        }
    }
    !partitioned
        && !down.contains(&p)
        && !down.contains(&dir)
        && links.iter().all(|l| !blocked.contains(l))
        && config.values().all(|c| clean(c, max_latency))
}

fn healthy_never_evicted(
    scenario: &Scenario,
    jm: &Setup,
    trace: &Trace,
    decisions: &[&Record],
) -> Vec<String> {
    let healthy: BTreeSet<NodeId> = (0..scenario.nodes.len())
        .map(NodeId)
        .filter(|&n| is_healthy(scenario, jm, n))
        .collect();
    decisions
        .iter()
        .filter(|r| removed_a_connection(r) && r.peer.is_some_and(|p| healthy.contains(&p)))
        .map(|r| {
            let p = r.peer.expect("filtered on peer");
            let before: Vec<String> = decisions
                .iter()
                .filter(|e| e.peer == Some(p) && e.t <= r.t)
                .rev()
                .take(4)
                .map(|e| format!("    {}", line(trace, e)))
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!(
                "{} answers every probe and its links were never faulty, yet:\n{}",
                trace.name(p),
                before.join("\n")
            )
        })
        .collect()
}

fn directory_never_evicted(jm: &Setup, trace: &Trace, decisions: &[&Record]) -> Vec<String> {
    decisions
        .iter()
        .filter(|r| {
            removed_a_connection(r)
                && r.peer
                    .and_then(|p| jm.peer(p))
                    .is_some_and(|s| s.is_directory)
        })
        .map(|r| format!("a directory peer was evicted:\n    {}", line(trace, r)))
        .collect()
}

fn left_behind(trace: &Trace, decisions: &[&Record]) -> Vec<String> {
    decisions
        .iter()
        .filter(|r| r.kind == kind::DISCONNECT && r.msg.as_deref() == Some(kind::LEFT_OPEN))
        .map(|r| {
            format!(
                "{} was unregistered by another connection's cleanup; its own connection stays open, unswept:\n    {}",
                r.peer.map_or("?", |p| trace.name(p)),
                line(trace, r)
            )
        })
        .collect()
}

fn one_eviction(trace: &Trace, decisions: &[&Record]) -> Vec<String> {
    // A connection of peer P lives from its `register` to the next `evict`
    // or `disconnect` of P; a second `evict` before P registers again is a
    // double eviction.
    let mut evicted_since_register: BTreeMap<NodeId, &Record> = BTreeMap::new();
    let mut out = Vec::new();
    for r in decisions {
        let Some(p) = r.peer else { continue };
        match r.kind {
            kind::REGISTER => {
                evicted_since_register.remove(&p);
            }
            kind::EVICT => {
                if let Some(first) = evicted_since_register.get(&p) {
                    out.push(format!(
                        "{} evicted twice for one connection:\n    {}\n    {}",
                        trace.name(p),
                        line(trace, first),
                        line(trace, r)
                    ));
                } else {
                    evicted_since_register.insert(p, r);
                }
            }
            _ => {}
        }
    }
    out
}

/// How long after the last fault a silent peer may stay registered.
pub fn silent_eviction_bound(scenario: &Scenario, jm: &Setup) -> Duration {
    let t = &jm.timers;
    let base = t.hard_evict + t.sweep_interval + t.pong_wait + t.sweep_interval + t.pong_wait;
    let dir = jm.directory;
    // A slow directory clock stretches every timer.
    let slowest_ppm = scenario
        .faults
        .iter()
        .filter_map(|(_, f)| match f {
            Fault::ClockDrift { node, ppm } if *node == dir => Some(*ppm),
            _ => None,
        })
        .chain([scenario.nodes[dir.0].clock.drift_ppm()])
        .min()
        .unwrap_or(0)
        .min(0);
    let stretched = u128::from(base.as_us()) * 1_000_000 / (1_000_000 + slowest_ppm) as u128;
    // A backward wall-clock jump makes last_seen look younger (joinmarket-ng).
    let back_us: u64 = scenario
        .faults
        .iter()
        .filter_map(|(_, f)| match f {
            Fault::ClockJump { node, by_us } if *node == dir && *by_us < 0 => {
                Some(by_us.unsigned_abs())
            }
            _ => None,
        })
        .sum();
    let back_us = if jm.profile == Profile::JoinmarketRs {
        0
    } else {
        back_us
    };
    Duration::from_us(
        u64::try_from(stretched)
            .unwrap_or(u64::MAX)
            .saturating_add(back_us),
    )
}

/// When the last fault (or late node start) happens: phase two of the
/// liveness invariants begins here.
fn last_fault(scenario: &Scenario) -> Timestamp {
    scenario
        .faults
        .iter()
        .map(|(t, _)| *t)
        .chain(scenario.nodes.iter().filter_map(|n| n.start_at))
        .max()
        .unwrap_or(Timestamp::ZERO)
}

fn silent_evicted(
    scenario: &Scenario,
    jm: &Setup,
    trace: &Trace,
    decisions: &[&Record],
) -> Vec<String> {
    let end = Timestamp::ZERO + scenario.duration;
    let last_fault = last_fault(scenario);
    let dir = jm.directory;
    // A directory that crashed or stopped forgot every registration before.
    let dir_reset = |after: Timestamp| {
        scenario.faults.iter().any(|(t, f)| {
            *t >= after
                && matches!(f, Fault::Crash(n) | Fault::Kill(n) | Fault::Stop(n) if *n == dir)
        })
    };
    let bound = silent_eviction_bound(scenario, jm);
    let mut out = Vec::new();
    for (i, r) in decisions.iter().enumerate() {
        let Some(p) = r.peer else { continue };
        // Silent: says nothing after its handshake (a peer that PINGs the
        // directory keeps itself fresh, whatever its behaviour).
        let silent = jm
            .peer(p)
            .is_some_and(|s| s.behaviour == Behaviour::Silent && s.ping_directory_every.is_none());
        if r.kind != kind::REGISTER || !silent {
            continue;
        }
        let Some(deadline) = last_fault.max(r.t).checked_add(bound) else {
            continue;
        };
        if deadline > end || dir_reset(r.t) {
            continue; // the run ends too soon to tell, or the registry was lost
        }
        let ended = decisions[i + 1..].iter().find(|e| {
            e.peer == Some(p) && matches!(e.kind, kind::EVICT | kind::DISCONNECT | kind::REGISTER)
        });
        match ended {
            Some(e) if e.t <= deadline => {}
            _ => out.push(format!(
                "silent {} registered at {} was still registered at {deadline} \
                 (last fault at {last_fault}, bound {bound}){}",
                trace.name(p),
                r.t,
                ended.map_or(String::new(), |e| format!("; next: {}", line(trace, e)))
            )),
        }
    }
    out
}

fn healthy_stays_registered(
    scenario: &Scenario,
    jm: &Setup,
    trace: &Trace,
    decisions: &[&Record],
) -> Vec<String> {
    let last_fault = last_fault(scenario);
    // Evictions the faults caused land within the same bound a silent peer
    // gets; after that, only the model can evict a healthy peer.
    let Some(settled) = last_fault.checked_add(silent_eviction_bound(scenario, jm)) else {
        return Vec::new();
    };
    let healthy: BTreeSet<NodeId> = (0..scenario.nodes.len())
        .map(NodeId)
        .filter(|&n| healthy_after_heal(scenario, jm, n))
        .collect();
    decisions
        .iter()
        .filter(|r| {
            r.t > settled && removed_a_connection(r) && r.peer.is_some_and(|p| healthy.contains(&p))
        })
        .map(|r| {
            format!(
                "{} answers every probe over clean links since {last_fault} \
                 (settled at {settled}), yet:\n    {}",
                trace.name(r.peer.expect("filtered on peer")),
                line(trace, r)
            )
        })
        .collect()
}
