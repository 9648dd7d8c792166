//! Failure-detector quality of service of a finished run, as Chen, Toueg
//! and Aguilera define it ("On the Quality of Service of Failure
//! Detectors", IEEE Transactions on Computers 51(5), 2002).
//!
//! Two steps, both pure functions of the scenario and the trace:
//!
//! 1. [`Truth::of`]: when each node was truly up (running: started, not
//!    stopped, killed or crashed), and, apart from that, paused or cut off
//!    from another node (a partition, hold, stall or break on either
//!    direction between them). It replays the scenario's node starts and
//!    faults in the engine's order and checks them against the trace's
//!    fault records, so a trace of another scenario is an error.
//! 2. [`measure`]: every record of a verdict kind the model declares
//!    ([`Model::verdicts`]), written by monitor `q` about peer `p`, sets
//!    `q`'s output about `p` to trust or suspect; `q`'s own stop, kill,
//!    crash or restart forgets its outputs (none until its next verdict).
//!    Each (monitor, node) pair's output is compared with the node's truth.
//!
//! # The metrics (docs/qos.md has a worked example of each)
//!
//! A node is *up* while it runs, paused or not. An *S-transition* is the
//! output turning to suspect (from trust, or from no output); a *T-transition*
//! turning to trust.
//!
//! - **Detection time** `T_D`: for each time the node went down (stop, kill,
//!   crash) after being up, from then until the monitor's suspicion that
//!   lasts to the node's next start (or the run's end) began; zero if that
//!   suspicion began earlier. If the monitor does not suspect the node when
//!   it comes back (or at the end), the detection is **missed**.
//! - **Mistake**: an S-transition while the node is up (a *false
//!   eviction*), counted apart when the node was paused or cut off then.
//! - **Mistake duration** `T_M`: from a mistake to the next T-transition,
//!   over mistakes that end so (not those ended by a crash, the monitor's
//!   restart or the run's end).
//! - **Mistake recurrence time** `T_MR`: between consecutive mistakes with
//!   the node up throughout.
//! - **Good period duration** `T_G`: from an output turning to trust to the
//!   next mistake, with the node up throughout.
//! - **Mistake rate** `lambda_M`: mistakes per hour of *observed* time (the
//!   node up and the monitor giving an output).
//! - **Query accuracy probability** `P_A`: the share of observed time the
//!   monitor trusts the node.
//! - **Evictions per hour**: all S-transitions per hour of the run.
//!
//! In a run without crashes these meet the paper's identities in the long
//! run: `lambda_M = 1/E(T_MR)`, `P_A = 1 - E(T_M)/E(T_MR)`,
//! `E(T_G) = E(T_MR) - E(T_M)`. The NFD-S test (`tests/nfd_s.rs`) checks
//! them against the paper's closed forms.
//!
//! Time at one instant: the truth at `t` is the state after every fault at
//! `t`; verdicts at one instant count in trace order (a suspicion and a trust
//! at the same instant are a mistake of duration zero).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use heartsim_sim::engine::fault_record;
use heartsim_sim::net::Partition;
use heartsim_sim::trace::{kind, Level, Record, Trace, NET};
use heartsim_sim::{Duration, Fault, NodeId, Timestamp};
use serde::Serialize;

use crate::scenario::{Model, Says, Scenario, VerdictKind};

/// What a node truly was over a span of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Life {
    /// Not running: not started yet, or stopped, killed or crashed.
    Down,
    /// Running.
    Up,
    /// Running but SIGSTOPped: up, and unreachable.
    Paused,
}

impl Life {
    pub fn is_up(self) -> bool {
        self != Life::Down
    }
}

/// `[from, to)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    pub from: Timestamp,
    pub to: Timestamp,
}

impl Span {
    pub fn len(self) -> Duration {
        self.to.saturating_since(self.from)
    }
    pub fn is_empty(self) -> bool {
        self.to <= self.from
    }
}

/// Why the truth of a run could not be derived.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QosError {
    #[error(
        "the trace's fault record at {t}, `{got}`, is not the scenario's next fault, `{want}`: \
         the trace is not this scenario's run"
    )]
    Mismatch {
        t: Timestamp,
        got: String,
        want: String,
    },
    #[error(
        "the scenario schedules `{want}` at {t}, within the run, but the trace has no such \
         record: the trace is not this scenario's run, or it was cut short"
    )]
    Missing { t: Timestamp, want: String },
}

/// Which directions between nodes are cut at one time.
#[derive(Clone, Debug, Default)]
struct NetState {
    partitions: Vec<Partition>,
    held: BTreeSet<(NodeId, NodeId)>,
    broken: BTreeSet<(NodeId, NodeId)>,
}

impl NetState {
    fn blocks(&self, from: NodeId, to: NodeId) -> bool {
        self.partitions
            .iter()
            .any(|p| p.from.contains(&from) && p.to.contains(&to))
            || self.held.contains(&(from, to))
            || self.broken.contains(&(from, to))
    }
    /// Either direction between `a` and `b` is partitioned, held, stalled
    /// or broken.
    fn cuts(&self, a: NodeId, b: NodeId) -> bool {
        self.blocks(a, b) || self.blocks(b, a)
    }
}

/// When each node was truly up, paused or down, and which links were cut,
/// over a run `[0, end]`.
#[derive(Clone, Debug)]
pub struct Truth {
    /// The run's end (`[scenario] duration`).
    pub end: Timestamp,
    /// Per node (`NodeId` order): its life as consecutive spans covering
    /// `[0, end)`.
    pub life: Vec<Vec<(Span, Life)>>,
    /// The network's state from each time on (the first at zero).
    net: Vec<(Timestamp, NetState)>,
}

/// Every fault the engine applies in `scenario`, in its order: node starts
/// (queued first), then `[[fault]]`s in file order; at equal times the
/// earlier queued first. Only those within the run (at or before `end`).
fn schedule(scenario: &Scenario) -> Vec<(Timestamp, Fault)> {
    let mut all: Vec<(Timestamp, Fault)> = scenario
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| n.start_at.map(|t| (t, Fault::Start(NodeId(i)))))
        .chain(scenario.faults.iter().cloned())
        .collect();
    all.sort_by_key(|(t, _)| *t);
    all.retain(|(t, _)| *t <= scenario.limits.end);
    all
}

/// The engine's fault kinds (the decision records faults write).
const FAULT_KINDS: &[&str] = &[
    kind::START,
    kind::STOP,
    kind::KILL,
    kind::CRASH,
    kind::RESTART,
    kind::PARTITION,
    kind::HEAL,
    kind::CLOCK_JUMP,
    kind::CLOCK_DRIFT,
    kind::PAUSE,
    kind::RESUME,
    kind::LINK,
    kind::BREAK,
    kind::REPAIR,
    kind::HOLD,
    kind::STALL,
    kind::RELEASE,
    kind::POWER_LOSS,
    kind::DISK_ERROR,
    kind::SLOW_DISK,
    kind::TORN_WRITE,
    kind::KILL_BEFORE_RENAME,
];

/// Whether a decision record of this kind is a fault the engine applied.
pub fn is_fault_kind(kind: &str) -> bool {
    FAULT_KINDS.contains(&kind)
}

fn is_fault_record(r: &Record) -> bool {
    r.level == Level::Decision && FAULT_KINDS.contains(&r.kind)
}

/// The death a `kill-before-rename` fault arms: the engine records it when
/// the node's next rename comes, which no schedule knows in advance.
fn is_kill_at_rename(r: &Record) -> bool {
    r.kind == kind::KILL && r.msg.as_deref() == Some("before rename")
}

/// The host each node runs on, as the engine numbers them: the scenario's
/// `[[host]]`s first, then one of its own for each node without one.
fn host_of(scenario: &Scenario) -> Vec<usize> {
    let mut next = scenario.hosts.len();
    scenario
        .nodes
        .iter()
        .map(|n| {
            n.host.unwrap_or_else(|| {
                next += 1;
                next - 1
            })
        })
        .collect()
}

impl Truth {
    /// The truth of `trace`, a run of `scenario`.
    pub fn of(scenario: &Scenario, trace: &Trace) -> Result<Truth, QosError> {
        Truth::from_schedule_on_hosts(
            &host_of(scenario),
            scenario.limits.end,
            &schedule(scenario),
            trace,
        )
    }

    /// The truth of a run of `nodes` nodes to `end` whose engine applied
    /// `schedule` (in its order), checked against `trace`'s fault records.
    pub fn from_schedule(
        nodes: usize,
        end: Timestamp,
        schedule: &[(Timestamp, Fault)],
        trace: &Trace,
    ) -> Result<Truth, QosError> {
        let hosts: Vec<usize> = (0..nodes).collect();
        Truth::from_schedule_on_hosts(&hosts, end, schedule, trace)
    }

    /// As [`Truth::from_schedule`], with node `i` on host `host_of[i]` (a
    /// power loss ends every process on its host).
    pub fn from_schedule_on_hosts(
        host_of: &[usize],
        end: Timestamp,
        schedule: &[(Timestamp, Fault)],
        trace: &Trace,
    ) -> Result<Truth, QosError> {
        let nodes = host_of.len();
        let text = |r: &Record| {
            let mut s = format!("{} {}", trace.node_name(r.node), r.kind);
            if let Some(msg) = &r.msg {
                let _ = write!(s, " {msg}");
            }
            s
        };
        let mut recorded = trace
            .decisions()
            .filter(|r| is_fault_record(r) && !is_kill_at_rename(r));
        for (t, fault) in schedule {
            let want = fault_record(fault, *t, trace);
            match recorded.next() {
                Some(got) if *got == want => {}
                Some(got) => {
                    return Err(QosError::Mismatch {
                        t: got.t,
                        got: text(got),
                        want: text(&want),
                    })
                }
                None => {
                    return Err(QosError::Missing {
                        t: *t,
                        want: text(&want),
                    })
                }
            }
        }
        if let Some(extra) = recorded.next() {
            return Err(QosError::Mismatch {
                t: extra.t,
                got: text(extra),
                want: "no more faults".to_string(),
            });
        }

        // The schedule, plus the deaths at a rename (after the faults of
        // their instant).
        let mut events: Vec<(Timestamp, Fault)> = schedule.to_vec();
        events.extend(
            trace
                .decisions()
                .filter(|r| is_kill_at_rename(r))
                .filter_map(|r| r.node.map(|n| (r.t, Fault::Kill(n)))),
        );
        events.sort_by_key(|(t, _)| *t);
        let mut now: Vec<Life> = vec![Life::Down; nodes];
        let mut changes: Vec<Vec<(Timestamp, Life)>> =
            vec![vec![(Timestamp::ZERO, Life::Down)]; nodes];
        let mut net = NetState::default();
        let mut nets = vec![(Timestamp::ZERO, NetState::default())];
        for (t, fault) in &events {
            let mut set = |n: NodeId, life: Life| {
                now[n.0] = life;
                changes[n.0].push((*t, life));
            };
            let net_changed = match fault {
                Fault::Start(n) | Fault::Restart(n) => {
                    set(*n, Life::Up);
                    false
                }
                Fault::Stop(n) | Fault::Kill(n) | Fault::Crash(n) => {
                    set(*n, Life::Down);
                    false
                }
                Fault::PowerLoss { host } => {
                    for (i, _) in host_of
                        .iter()
                        .enumerate()
                        .filter(|(_, h)| **h == host.index)
                    {
                        set(NodeId(i), Life::Down);
                    }
                    false
                }
                Fault::Pause(n) => {
                    set(*n, Life::Paused);
                    false
                }
                Fault::Resume(n) => {
                    set(*n, Life::Up);
                    false
                }
                Fault::Partition(rules) => {
                    net.partitions.extend(rules.iter().cloned());
                    true
                }
                Fault::Heal => {
                    net.partitions.clear();
                    true
                }
                Fault::Hold { from, to } | Fault::Stall { from, to } => {
                    net.held.insert((*from, *to));
                    true
                }
                Fault::Release { from, to } => {
                    net.held.remove(&(*from, *to));
                    true
                }
                Fault::Break { from, to } => {
                    net.broken.insert((*from, *to));
                    true
                }
                Fault::Repair { from, to } => {
                    net.broken.remove(&(*from, *to));
                    true
                }
                // Clocks and link settings (a drop of 1/1 included) leave
                // nodes up and reachable. A fault kind added to the engine
                // that cuts links belongs above.
                _ => false,
            };
            if net_changed {
                match nets.last_mut() {
                    Some((at, state)) if at == t => *state = net.clone(),
                    _ => nets.push((*t, net.clone())),
                }
            }
        }
        let life = changes.iter().map(|c| spans(c, end)).collect();
        Ok(Truth {
            end,
            life,
            net: nets,
        })
    }

    /// The spans during which `a` and `b` were cut off from each other.
    pub fn cut_off(&self, a: NodeId, b: NodeId) -> Vec<Span> {
        let changes: Vec<(Timestamp, bool)> =
            self.net.iter().map(|(t, s)| (*t, s.cuts(a, b))).collect();
        spans(&changes, self.end)
            .into_iter()
            .filter_map(|(span, cut)| cut.then_some(span))
            .collect()
    }

    /// Node `n`'s life at `t` (after every fault at `t`).
    pub fn life_at(&self, n: NodeId, t: Timestamp) -> Life {
        self.life[n.0]
            .iter()
            .find(|(s, _)| s.from <= t && t < s.to)
            .map_or(Life::Down, |(_, l)| *l)
    }
}

/// Piecewise-constant `changes` (in time order, the last at an instant
/// wins) as maximal spans of equal value within `[0, end)`, empty ones left
/// out.
fn spans<T: Copy + PartialEq>(changes: &[(Timestamp, T)], end: Timestamp) -> Vec<(Span, T)> {
    let mut out: Vec<(Span, T)> = Vec::new();
    for (i, (t, v)) in changes.iter().enumerate() {
        let to = changes.get(i + 1).map_or(end, |(next, _)| *next).min(end);
        let from = (*t).min(end);
        if from >= to {
            continue;
        }
        match out.last_mut() {
            Some((span, last)) if *last == *v && span.to == from => span.to = to,
            _ => out.push((Span { from, to }, *v)),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The metrics.

/// Count, sum, least and greatest of some durations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub count: u64,
    pub sum_us: u128,
    pub min: Option<Duration>,
    pub max: Option<Duration>,
}

impl Sample {
    pub fn add(&mut self, d: Duration) {
        self.count += 1;
        self.sum_us += u128::from(d.as_us());
        self.min = Some(self.min.map_or(d, |m| m.min(d)));
        self.max = Some(self.max.map_or(d, |m| m.max(d)));
    }
    pub fn merge(&mut self, other: &Sample) {
        self.count += other.count;
        self.sum_us += other.sum_us;
        for d in other.min.into_iter().chain(other.max) {
            self.min = Some(self.min.map_or(d, |m| m.min(d)));
            self.max = Some(self.max.map_or(d, |m| m.max(d)));
        }
    }
    /// The mean, rounded down to a microsecond.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| {
            let us = self.sum_us / u128::from(self.count);
            Duration::from_us(u64::try_from(us).unwrap_or(u64::MAX))
        })
    }
}

/// The quality of service of one monitor's outputs about one node, or of
/// several pairs together ([`Qos::merge`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Qos {
    /// `T_D` of each detected going-down.
    pub detection: Sample,
    /// Goings-down the monitor did not suspect by the node's next start or
    /// the run's end.
    pub missed: u64,
    /// Of `missed`: those still down, unsuspected, when the run ended.
    pub undetected_at_end: u64,
    /// S-transitions while the node was up: mistakes (false evictions).
    pub mistakes: u64,
    /// Of `mistakes`: those while the node was paused or cut off.
    pub mistakes_unreachable: u64,
    /// `T_M` of each mistake that ended with the monitor trusting again.
    pub mistake_duration: Sample,
    /// `T_MR`: time between consecutive mistakes, the node up throughout.
    pub recurrence: Sample,
    /// `T_G`: from trusting to the next mistake, the node up throughout.
    pub good_period: Sample,
    /// Time the node was up and the monitor gave an output.
    pub observed: Duration,
    /// Of `observed`: time the monitor trusted the node.
    pub trusted: Duration,
    /// Time the node was up but paused or cut off from the monitor.
    pub unreachable: Duration,
    /// Every S-transition, true or false.
    pub suspicions: u64,
    /// The run's length (runs merged with [`Qos::merge_run`]: their sum).
    pub run: Duration,
}

const US_PER_HOUR: f64 = 3_600_000_000.0;

impl Qos {
    /// Add `o`, another pair of the same run: counts, times and samples
    /// add up; the run's length stays one run's.
    pub fn merge(&mut self, o: &Qos) {
        self.detection.merge(&o.detection);
        self.missed += o.missed;
        self.undetected_at_end += o.undetected_at_end;
        self.mistakes += o.mistakes;
        self.mistakes_unreachable += o.mistakes_unreachable;
        self.mistake_duration.merge(&o.mistake_duration);
        self.recurrence.merge(&o.recurrence);
        self.good_period.merge(&o.good_period);
        self.observed = self.observed + o.observed;
        self.trusted = self.trusted + o.trusted;
        self.unreachable = self.unreachable + o.unreachable;
        self.suspicions += o.suspicions;
        self.run = self.run.max(o.run);
    }
    /// Add `o`, the QoS of another run (another seed): as [`Qos::merge`],
    /// and the runs' lengths add up too.
    pub fn merge_run(&mut self, o: &Qos) {
        let run = self.run + o.run;
        self.merge(o);
        self.run = run;
    }
    /// `P_A`: trusted over observed time.
    pub fn query_accuracy(&self) -> Option<f64> {
        (self.observed > Duration::ZERO)
            .then(|| self.trusted.as_us() as f64 / self.observed.as_us() as f64)
    }
    /// `lambda_M`: mistakes per hour of observed time.
    pub fn mistake_rate_per_hour(&self) -> Option<f64> {
        (self.observed > Duration::ZERO)
            .then(|| self.mistakes as f64 * US_PER_HOUR / self.observed.as_us() as f64)
    }
    /// S-transitions per hour of the run (merged pairs: all of theirs,
    /// per hour of one run).
    pub fn evictions_per_hour(&self) -> Option<f64> {
        (self.run > Duration::ZERO)
            .then(|| self.suspicions as f64 * US_PER_HOUR / self.run.as_us() as f64)
    }
}

/// One (monitor, node) pair's quality of service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    pub monitor: NodeId,
    pub node: NodeId,
    pub qos: Qos,
}

/// The quality of service of every pair a verdict names, and all together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub end: Timestamp,
    /// In (monitor, node) order.
    pub pairs: Vec<Pair>,
    pub all: Qos,
}

/// A monitor's output about a node.
type Output = Option<Says>;

/// [`measure`] for a run of `scenario`, with its model's verdict kinds.
pub fn of_run(model: &dyn Model, scenario: &Scenario, trace: &Trace) -> Result<Report, QosError> {
    let truth = Truth::of(scenario, trace)?;
    Ok(measure(&truth, model.verdicts(), trace))
}

/// Every pair's quality of service: the verdict records of `trace` (the
/// kinds in `verdicts`) against `truth`.
pub fn measure(truth: &Truth, verdicts: &[VerdictKind], trace: &Trace) -> Report {
    // Each pair's outputs in trace order; a monitor's end forgets them.
    let says = |k: &str| verdicts.iter().find(|v| v.kind == k).map(|v| v.says);
    let mut outputs: BTreeMap<(NodeId, NodeId), Vec<(Timestamp, Output)>> = BTreeMap::new();
    for r in trace.decisions() {
        if let (Some(monitor), Some(node), Some(s)) = (r.node, r.peer, says(r.kind)) {
            outputs
                .entry((monitor, node))
                .or_default()
                .push((r.t, Some(s)));
        } else if is_fault_record(r)
            && matches!(
                r.kind,
                kind::STOP | kind::KILL | kind::CRASH | kind::RESTART
            )
        {
            if let Some(monitor) = r.node {
                for ((_, _), list) in
                    outputs.range_mut((monitor, NodeId(0))..=(monitor, NodeId(usize::MAX)))
                {
                    list.push((r.t, None));
                }
            }
        }
    }
    let mut all = Qos::default();
    let pairs: Vec<Pair> = outputs
        .iter()
        .map(|(&(monitor, node), list)| {
            let qos = pair(
                truth.end,
                &truth.life[node.0],
                &truth.cut_off(monitor, node),
                list,
            );
            all.merge(&qos);
            Pair { monitor, node, qos }
        })
        .collect();
    Report {
        end: truth.end,
        pairs,
        all,
    }
}

/// One change a pair's sweep meets, in the order it takes them at an
/// instant: the truth first, then outputs in trace order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Change {
    Life(Life),
    Cut(bool),
    Output(Output),
}

/// The pair's quality of service from the node's `life` (spans covering
/// `[0, end)`), the spans it was `cut` off from the monitor, and the
/// monitor's `outputs` about it (time order).
fn pair(
    end: Timestamp,
    life: &[(Span, Life)],
    cut: &[Span],
    outputs: &[(Timestamp, Output)],
) -> Qos {
    // `life` covers `[0, end)` without gaps: each span's start is a change.
    let mut changes: Vec<(Timestamp, u8, Change)> = life
        .iter()
        .map(|(span, l)| (span.from, 0, Change::Life(*l)))
        .collect();
    for s in cut {
        changes.push((s.from, 1, Change::Cut(true)));
        changes.push((s.to, 1, Change::Cut(false)));
    }
    for (t, o) in outputs {
        changes.push((*t, 2, Change::Output(*o)));
    }
    // Stable: at one instant the truth, then outputs in trace order.
    changes.sort_by_key(|(t, class, _)| (*t, *class));

    let mut q = Qos {
        run: end.saturating_since(Timestamp::ZERO),
        ..Qos::default()
    };
    let mut sweep = Sweep::default();
    let mut at = Timestamp::ZERO;
    for (t, _, change) in changes {
        let t = t.min(end);
        sweep.accrue(&mut q, t.saturating_since(at));
        at = t;
        sweep.apply(&mut q, t, change);
    }
    sweep.accrue(&mut q, end.saturating_since(at));
    sweep.finish(&mut q);
    q
}

/// The state of a pair's sweep.
#[derive(Debug)]
struct Sweep {
    life: Life,
    cut: bool,
    output: Output,
    /// Bumped at every going-down: T_MR and T_G pair events of one up
    /// stretch only.
    stretch: u64,
    /// Since when the node has been down, if it went down after being up.
    down_since: Option<Timestamp>,
    /// Since when the monitor has suspected the node, continuously.
    suspect_since: Option<Timestamp>,
    /// The mistake in progress.
    mistake_since: Option<Timestamp>,
    /// The last mistake's start, and its stretch.
    last_mistake: Option<(u64, Timestamp)>,
    /// Since when the monitor has trusted the up node, and the stretch.
    trust_since: Option<(u64, Timestamp)>,
}

impl Default for Sweep {
    fn default() -> Self {
        Sweep {
            life: Life::Down,
            cut: false,
            output: None,
            stretch: 0,
            down_since: None,
            suspect_since: None,
            mistake_since: None,
            last_mistake: None,
            trust_since: None,
        }
    }
}

impl Sweep {
    fn accrue(&self, q: &mut Qos, dt: Duration) {
        if !self.life.is_up() {
            return;
        }
        if self.output.is_some() {
            q.observed = q.observed + dt;
        }
        if self.output == Some(Says::Trust) {
            q.trusted = q.trusted + dt;
        }
        if self.life == Life::Paused || self.cut {
            q.unreachable = q.unreachable + dt;
        }
    }

    /// The going-down in progress ends (the node starts again, or the run
    /// ends): detected if the monitor suspects the node now.
    fn judge_down(&mut self, q: &mut Qos, at_end: bool) {
        if let Some(down) = self.down_since.take() {
            match (self.output, self.suspect_since) {
                (Some(Says::Suspect), Some(since)) => {
                    q.detection.add(since.max(down).saturating_since(down));
                }
                _ => {
                    q.missed += 1;
                    if at_end {
                        q.undetected_at_end += 1;
                    }
                }
            }
        }
    }

    fn apply(&mut self, q: &mut Qos, t: Timestamp, change: Change) {
        match change {
            Change::Cut(c) => self.cut = c,
            Change::Life(l) => {
                let (was, now) = (self.life.is_up(), l.is_up());
                self.life = l;
                if was && !now {
                    self.down_since = Some(t);
                    // A crash ends a mistake in progress without a
                    // T-transition: its duration is not known.
                    self.mistake_since = None;
                    self.trust_since = None;
                    self.last_mistake = None;
                    self.stretch += 1;
                } else if !was && now {
                    self.judge_down(q, false);
                    if self.output == Some(Says::Trust) {
                        self.trust_since = Some((self.stretch, t));
                    }
                }
            }
            Change::Output(o) => {
                let old = self.output;
                self.output = o;
                if old == o {
                    return;
                }
                let up = self.life.is_up();
                if old == Some(Says::Suspect) {
                    // The suspicion ends: by trust, a mistake's duration.
                    if let (Some(since), Some(Says::Trust)) = (self.mistake_since, o) {
                        q.mistake_duration.add(t.saturating_since(since));
                    }
                    self.mistake_since = None;
                    self.suspect_since = None;
                }
                match o {
                    Some(Says::Suspect) => {
                        q.suspicions += 1;
                        self.suspect_since = Some(t);
                        if up {
                            q.mistakes += 1;
                            if self.life == Life::Paused || self.cut {
                                q.mistakes_unreachable += 1;
                            }
                            self.mistake_since = Some(t);
                            if let Some((s, last)) = self.last_mistake {
                                if s == self.stretch {
                                    q.recurrence.add(t.saturating_since(last));
                                }
                            }
                            self.last_mistake = Some((self.stretch, t));
                            if let Some((s, since)) = self.trust_since {
                                if s == self.stretch {
                                    q.good_period.add(t.saturating_since(since));
                                }
                            }
                        }
                        self.trust_since = None;
                    }
                    Some(Says::Trust) => {
                        self.trust_since = up.then_some((self.stretch, t));
                    }
                    None => self.trust_since = None,
                }
            }
        }
    }

    fn finish(&mut self, q: &mut Qos) {
        self.judge_down(q, true);
    }
}

// ---------------------------------------------------------------------------
// Rendering.

fn dur(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_string(), |d| d.to_string())
}

fn ratio(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "-".to_string(), |x| format!("{x:.decimals$}"))
}

impl Report {
    /// The table `heartsim run --qos` prints: one row per pair and one for
    /// all together.
    pub fn table(&self, trace: &Trace) -> String {
        let header = [
            "monitor",
            "node",
            "T_D mean",
            "T_D max",
            "missed",
            "mistakes",
            "unreach",
            "T_MR",
            "T_M",
            "T_G",
            "P_A",
            "mistakes/h",
            "evictions/h",
        ];
        let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
        let row = |monitor: &str, node: &str, q: &Qos| {
            vec![
                monitor.to_string(),
                node.to_string(),
                dur(q.detection.mean()),
                dur(q.detection.max),
                q.missed.to_string(),
                q.mistakes.to_string(),
                q.mistakes_unreachable.to_string(),
                dur(q.recurrence.mean()),
                dur(q.mistake_duration.mean()),
                dur(q.good_period.mean()),
                ratio(q.query_accuracy(), 6),
                ratio(q.mistake_rate_per_hour(), 3),
                ratio(q.evictions_per_hour(), 3),
            ]
        };
        for p in &self.pairs {
            rows.push(row(trace.name(p.monitor), trace.name(p.node), &p.qos));
        }
        if self.pairs.len() != 1 {
            rows.push(row("all", "", &self.all));
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
            .collect();
        let mut out = String::from(
            "  qos (Chen, Toueg, Aguilera 2002; docs/qos.md): T_* are means, T_D max the \
             longest; mistakes = false evictions, unreach = of them while paused or cut off\n",
        );
        for r in &rows {
            let mut line = String::from("  ");
            for (c, cell) in r.iter().enumerate() {
                if c < 2 {
                    let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
                } else {
                    let _ = write!(line, "{cell:>w$}  ", w = widths[c]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.pop();
        out
    }

    /// The summary line `heartsim run --qos --format jsonl` appends
    /// (docs/trace-format.md, "QoS summary"), without its newline.
    pub fn jsonl(&self, trace: &Trace) -> String {
        let pairs: Vec<JsonQos<'_>> = self
            .pairs
            .iter()
            .map(|p| {
                JsonQos::new(
                    Some(trace.name(p.monitor)),
                    Some(trace.name(p.node)),
                    &p.qos,
                )
            })
            .collect();
        let line = JsonSummary {
            t_us: self.end.as_us(),
            node: NET,
            kind: "qos",
            qos: JsonBody {
                pairs,
                all: JsonQos::new(None, None, &self.all),
            },
        };
        serde_json::to_string(&line).expect("plain data serializes")
    }
}

#[derive(Serialize)]
struct JsonSummary<'a> {
    t_us: u64,
    node: &'a str,
    kind: &'a str,
    qos: JsonBody<'a>,
}

#[derive(Serialize)]
struct JsonBody<'a> {
    pairs: Vec<JsonQos<'a>>,
    all: JsonQos<'a>,
}

#[derive(Serialize)]
struct JsonQos<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    monitor: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    detections: u64,
    detection_mean_us: Option<u64>,
    detection_max_us: Option<u64>,
    missed: u64,
    undetected_at_end: u64,
    mistakes: u64,
    mistakes_unreachable: u64,
    mistake_recurrence_mean_us: Option<u64>,
    mistake_recurrences: u64,
    mistake_duration_mean_us: Option<u64>,
    mistake_durations: u64,
    good_period_mean_us: Option<u64>,
    good_periods: u64,
    query_accuracy: Option<f64>,
    mistake_rate_per_hour: Option<f64>,
    evictions: u64,
    evictions_per_hour: Option<f64>,
    observed_us: u64,
    trusted_us: u64,
    unreachable_us: u64,
}

impl<'a> JsonQos<'a> {
    fn new(monitor: Option<&'a str>, node: Option<&'a str>, q: &Qos) -> Self {
        let us = |d: Option<Duration>| d.map(Duration::as_us);
        JsonQos {
            monitor,
            node,
            detections: q.detection.count,
            detection_mean_us: us(q.detection.mean()),
            detection_max_us: us(q.detection.max),
            missed: q.missed,
            undetected_at_end: q.undetected_at_end,
            mistakes: q.mistakes,
            mistakes_unreachable: q.mistakes_unreachable,
            mistake_recurrence_mean_us: us(q.recurrence.mean()),
            mistake_recurrences: q.recurrence.count,
            mistake_duration_mean_us: us(q.mistake_duration.mean()),
            mistake_durations: q.mistake_duration.count,
            good_period_mean_us: us(q.good_period.mean()),
            good_periods: q.good_period.count,
            query_accuracy: q.query_accuracy(),
            mistake_rate_per_hour: q.mistake_rate_per_hour(),
            evictions: q.suspicions,
            evictions_per_hour: q.evictions_per_hour(),
            observed_us: q.observed.as_us(),
            trusted_us: q.trusted.as_us(),
            unreachable_us: q.unreachable.as_us(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Hand-built traces with hand-computed answers. Node 0 is the monitor
    //! `mon`, node 1 the node `p` it watches, node 2 a bystander `x`;
    //! `up` is a trust verdict, `down` a suspicion.

    use super::*;

    const MON: NodeId = NodeId(0);
    const P: NodeId = NodeId(1);
    const X: NodeId = NodeId(2);
    const VERDICTS: &[VerdictKind] = &[
        VerdictKind {
            kind: "up",
            says: Says::Trust,
        },
        VerdictKind {
            kind: "down",
            says: Says::Suspect,
        },
    ];

    enum E {
        F(Fault),
        V(&'static str),
    }

    fn s(secs: u64) -> Timestamp {
        Timestamp::ZERO + Duration::from_secs(secs)
    }
    fn d(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// The trace of `events` (in the order they happened; the three nodes
    /// start at zero first) and the schedule of its faults.
    fn trace(events: &[(u64, E)]) -> (Trace, Vec<(Timestamp, Fault)>) {
        let names = ["mon", "p", "x"].map(String::from).to_vec();
        let mut trace = Trace::new(names, Level::Decision);
        let mut schedule = Vec::new();
        let starts = [MON, P, X].map(|n| (0, E::F(Fault::Start(n))));
        for (t, e) in starts.iter().chain(events) {
            let t = s(*t);
            match e {
                E::F(f) => {
                    trace.push(fault_record(f, t, &trace));
                    schedule.push((t, f.clone()));
                }
                E::V(kind) => trace.push(Record {
                    t,
                    node: Some(MON),
                    kind,
                    peer: Some(P),
                    reason: None,
                    msg: None,
                    level: Level::Decision,
                }),
            }
        }
        (trace, schedule)
    }

    /// The (mon, p) pair's QoS of a run of `events` ending at `end` seconds.
    fn qos(end: u64, events: &[(u64, E)]) -> Qos {
        let (trace, schedule) = trace(events);
        let truth = Truth::from_schedule(3, s(end), &schedule, &trace).expect("consistent");
        let report = measure(&truth, VERDICTS, &trace);
        assert_eq!(report.pairs.len(), 1);
        assert_eq!((report.pairs[0].monitor, report.pairs[0].node), (MON, P));
        assert_eq!(report.all, report.pairs[0].qos);
        report.pairs[0].qos.clone()
    }

    fn mean(sample: &Sample) -> Option<Duration> {
        sample.mean()
    }

    /// Three mistakes in a crash-free run of 100 s; the last one lasts to
    /// the end.
    #[test]
    fn mistakes_recurrence_duration_good_periods_and_accuracy() {
        use E::V;
        let q = qos(
            100,
            &[
                (10, V("up")),
                (30, V("down")),
                (35, V("up")),
                (60, V("down")),
                (70, V("up")),
                (90, V("down")),
            ],
        );
        assert_eq!(q.mistakes, 3);
        assert_eq!(q.mistakes_unreachable, 0);
        assert_eq!(q.suspicions, 3);
        // T_M: 30 -> 35 and 60 -> 70; the one from 90 never ended.
        assert_eq!(q.mistake_duration.count, 2);
        assert_eq!(mean(&q.mistake_duration), Some(Duration::from_ms(7_500)));
        assert_eq!(q.mistake_duration.max, Some(d(10)));
        // T_MR: 30 -> 60 -> 90.
        assert_eq!(q.recurrence.count, 2);
        assert_eq!(mean(&q.recurrence), Some(d(30)));
        // T_G: 10 -> 30, 35 -> 60, 70 -> 90: 65 s over 3.
        assert_eq!(q.good_period.count, 3);
        assert_eq!(mean(&q.good_period), Some(Duration::from_us(21_666_666)));
        // Observed from the first verdict: 90 s, 65 of them trusted.
        assert_eq!((q.observed, q.trusted), (d(90), d(65)));
        assert_eq!(q.query_accuracy(), Some(65.0 / 90.0));
        // 3 mistakes in 90 observed seconds; 3 suspicions in 100 s.
        assert_eq!(q.mistake_rate_per_hour(), Some(120.0));
        assert_eq!(q.evictions_per_hour(), Some(108.0));
        assert_eq!((q.detection.count, q.missed), (0, 0));
    }

    /// A crash detected 3 s later; a stop the monitor never noticed before
    /// the restart; a kill it had not noticed by the end.
    #[test]
    fn detection_time_and_missed_detections() {
        use E::{F, V};
        let q = qos(
            100,
            &[
                (1, V("up")),
                (20, F(Fault::Crash(P))),
                (23, V("down")),
                (40, F(Fault::Restart(P))),
                (41, V("up")),
                (50, F(Fault::Stop(P))),
                (60, F(Fault::Start(P))),
                (80, F(Fault::Kill(P))),
            ],
        );
        assert_eq!(q.detection.count, 1);
        assert_eq!(mean(&q.detection), Some(d(3)));
        assert_eq!(q.detection.max, Some(d(3)));
        assert_eq!((q.missed, q.undetected_at_end), (2, 1));
        // Suspecting a crashed node is no mistake.
        assert_eq!((q.mistakes, q.suspicions), (0, 1));
        // Up and observed: 1..20 trusted, 40..41 suspected, 41..50 and
        // 60..80 trusted.
        assert_eq!((q.observed, q.trusted), (d(49), d(48)));
        assert_eq!(q.evictions_per_hour(), Some(36.0));
    }

    /// A suspicion already held when the node crashes is its detection,
    /// at zero; the crash ends the mistake without a duration, and the
    /// node suspected after its restart is inaccurate time but no mistake.
    #[test]
    fn a_mistake_a_crash_ends_is_a_detection_at_zero() {
        use E::{F, V};
        let q = qos(
            100,
            &[
                (0, V("up")),
                (10, V("down")),
                (15, F(Fault::Crash(P))),
                (30, F(Fault::Restart(P))),
                (31, V("up")),
            ],
        );
        assert_eq!(q.mistakes, 1);
        assert_eq!(q.mistake_duration.count, 0);
        assert_eq!(q.detection.count, 1);
        assert_eq!(q.detection.max, Some(Duration::ZERO));
        assert_eq!(q.missed, 0);
        assert_eq!(q.good_period.count, 1);
        assert_eq!(mean(&q.good_period), Some(d(10)));
        assert_eq!((q.observed, q.trusted), (d(85), d(79)));
    }

    /// Mistakes while the node is paused or cut off (partition, hold) are
    /// counted apart; a partition that leaves the pair connected is not.
    #[test]
    fn mistakes_while_paused_or_cut_off_are_counted_apart() {
        use E::{F, V};
        let rules = |groups: &[Vec<NodeId>]| Fault::Partition(Partition::symmetric(groups));
        let q = qos(
            100,
            &[
                (1, V("up")),
                (10, F(Fault::Pause(P))),
                (12, V("down")),
                (20, F(Fault::Resume(P))),
                (21, V("up")),
                (30, F(rules(&[vec![MON], vec![P]]))),
                (33, V("down")),
                (40, F(Fault::Heal)),
                (41, V("up")),
                (50, F(Fault::Hold { from: P, to: MON })),
                (52, V("down")),
                (55, F(Fault::Release { from: P, to: MON })),
                (56, V("up")),
                (70, V("down")),
                (71, V("up")),
                (80, F(rules(&[vec![MON, P], vec![X]]))),
                (85, V("down")),
            ],
        );
        assert_eq!((q.mistakes, q.mistakes_unreachable), (5, 3));
        // Paused 10..20, partitioned 30..40, held 50..55.
        assert_eq!(q.unreachable, d(25));
        // 9 + 8 + 4 + 1 over four; the last runs to the end.
        assert_eq!(q.mistake_duration.count, 4);
        assert_eq!(mean(&q.mistake_duration), Some(Duration::from_ms(5_500)));
        assert_eq!((q.detection.count, q.missed), (0, 0));
    }

    /// The monitor's crash forgets its outputs: no observed time until its
    /// next verdict, and a first suspicion after it is a mistake.
    #[test]
    fn a_monitor_restart_forgets_its_outputs() {
        use E::{F, V};
        let q = qos(
            60,
            &[
                (1, V("up")),
                (30, F(Fault::Crash(MON))),
                (40, F(Fault::Restart(MON))),
                (42, V("down")),
                (45, V("up")),
            ],
        );
        assert_eq!((q.observed, q.trusted), (d(47), d(44)));
        assert_eq!(q.mistakes, 1);
        assert_eq!(mean(&q.mistake_duration), Some(d(3)));
        // The trust from 1 s ended with the monitor, not in a mistake.
        assert_eq!(q.good_period.count, 0);
    }

    /// Pairs of one run share its length; runs add theirs.
    #[test]
    fn evictions_per_hour_of_pairs_and_of_runs() {
        use E::V;
        let one = qos(100, &[(10, V("up")), (30, V("down")), (35, V("up"))]);
        assert_eq!(one.evictions_per_hour(), Some(36.0));
        let mut pairs = one.clone();
        pairs.merge(&one);
        assert_eq!(pairs.evictions_per_hour(), Some(72.0));
        let mut runs = one.clone();
        runs.merge_run(&one);
        assert_eq!(runs.evictions_per_hour(), Some(36.0));
        assert_eq!((runs.mistakes, runs.observed), (2, d(180)));
        assert_eq!(runs.mistake_rate_per_hour(), one.mistake_rate_per_hour());
    }

    #[test]
    fn truth_has_life_spans_and_cut_off_spans() {
        use E::F;
        let (trace, schedule) = trace(&[
            (10, F(Fault::Pause(P))),
            (20, F(Fault::Resume(P))),
            (25, F(Fault::Break { from: MON, to: P })),
            (30, F(Fault::Crash(P))),
            (32, F(Fault::Repair { from: MON, to: P })),
            (
                34,
                F(Fault::Partition(vec![Partition {
                    from: [X].into(),
                    to: [MON].into(),
                }])),
            ),
            (38, F(Fault::Heal)),
        ]);
        let truth = Truth::from_schedule(3, s(40), &schedule, &trace).expect("consistent");
        let span = |a, b| Span {
            from: s(a),
            to: s(b),
        };
        assert_eq!(
            truth.life[P.0],
            vec![
                (span(0, 10), Life::Up),
                (span(10, 20), Life::Paused),
                (span(20, 30), Life::Up),
                (span(30, 40), Life::Down),
            ]
        );
        assert_eq!(truth.life_at(P, s(10)), Life::Paused);
        assert_eq!(truth.life_at(P, s(30)), Life::Down);
        assert_eq!(truth.cut_off(MON, P), vec![span(25, 32)]);
        assert_eq!(truth.cut_off(P, MON), vec![span(25, 32)]);
        // One-way, x -> mon only: still cut off.
        assert_eq!(truth.cut_off(MON, X), vec![span(34, 38)]);
        assert_eq!(truth.cut_off(P, X), vec![]);
    }

    #[test]
    fn a_trace_of_another_run_is_an_error() {
        use E::F;
        let (trace, mut schedule) = trace(&[(10, F(Fault::Crash(P)))]);
        let end = s(20);
        schedule.push((s(15), Fault::Restart(P)));
        let err = Truth::from_schedule(3, end, &schedule, &trace).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "the scenario schedules `p restart` at 0:00:15.000, within the run, but the trace \
             has no such record: the trace is not this scenario's run, or it was cut short"
        );
        schedule.pop();
        schedule[3] = (s(10), Fault::Kill(P));
        let err = Truth::from_schedule(3, end, &schedule, &trace).expect_err("another");
        assert!(
            matches!(&err, QosError::Mismatch { t, .. } if *t == s(10)),
            "{err}"
        );
    }
}
