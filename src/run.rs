//! Running a scenario: build the engine from a [`Scenario`], drive it, and
//! check its `[[expect]]`s against the trace.

use std::fmt::Write as _;

use heartsim_sim::net::Network;
use heartsim_sim::trace::{Level, Record, Trace};
use heartsim_sim::{Engine, LimitError, NodeId, NodeSpec, Stats};

use crate::scenario::{AnySetup, Expect, Scenario, Setup, Violation, When};

/// A finished run.
#[derive(Debug)]
pub struct Outcome {
    pub trace: Trace,
    pub stats: Stats,
}

/// Run `scenario` with its own seed, or `seed` if given. `keep` chooses
/// whether network records (every send and delivery) are kept.
pub fn run(scenario: &Scenario, seed: Option<u64>, keep: Level) -> Result<Outcome, LimitError> {
    let seed = seed.unwrap_or(scenario.seed);
    let (trace, stats) = scenario.setup.run(scenario, seed, keep)?;
    Ok(Outcome { trace, stats })
}

/// Run `scenario` on the madsim engine (built only under `--cfg madsim`):
/// the same machines in the async driver on a madsim runtime seeded with
/// the scenario's seed, or `seed`.
#[cfg(madsim)]
pub fn run_madsim(
    scenario: &Scenario,
    seed: Option<u64>,
    keep: Level,
) -> Result<Outcome, heartsim_sim::madsim_engine::MadsimError> {
    let seed = seed.unwrap_or(scenario.seed);
    let (trace, stats) = scenario.setup.run_madsim(scenario, seed, keep)?;
    Ok(Outcome { trace, stats })
}

/// Every model's [`Setup`] runs on both engines the same way: its machines
/// in the scenario's nodes, network and faults.
impl<T: Setup> AnySetup for T {
    fn run(
        &self,
        scenario: &Scenario,
        seed: u64,
        keep: Level,
    ) -> Result<(Trace, Stats), LimitError> {
        let mut net = Network::new(seed, scenario.network);
        for (from, to, link) in &scenario.links {
            net.set_link(*from, *to, *link);
        }
        let mut engine = Engine::new(
            node_specs(scenario),
            net,
            scenario.faults.clone(),
            scenario.limits,
            keep,
            factory(self),
        )
        .with_tcp(scenario.tcp)
        .with_disks(scenario.disks());
        engine.run()?;
        let stats = engine.stats();
        Ok((engine.into_trace(), stats))
    }

    #[cfg(madsim)]
    fn run_madsim(
        &self,
        scenario: &Scenario,
        seed: u64,
        keep: Level,
    ) -> Result<(Trace, Stats), heartsim_sim::madsim_engine::MadsimError> {
        use heartsim_sim::madsim_engine::{self, World};
        let world = World {
            nodes: node_specs(scenario),
            network: scenario.network,
            links: scenario.links.clone(),
            faults: scenario.faults.clone(),
            limits: scenario.limits,
            keep,
            seed,
            tcp: scenario.tcp,
        };
        madsim_engine::run(&world, factory(self))
    }

    fn violations(&self, scenario: &Scenario, trace: &Trace) -> Vec<Violation> {
        Setup::violations(self, scenario, trace)
    }

    fn clone_box(&self) -> Box<dyn AnySetup> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

fn node_specs(scenario: &Scenario) -> Vec<NodeSpec> {
    scenario
        .nodes
        .iter()
        .map(|n| NodeSpec {
            name: n.name.clone(),
            clock: n.clock,
            start_at: n.start_at,
        })
        .collect()
}

/// A fresh machine for node `id` at every (re)start. It owns what it needs,
/// so an engine may keep it for the whole run (madsim's restartable nodes).
fn factory<T: Setup>(setup: &T) -> impl Fn(NodeId) -> T::Machine + Send + Sync + 'static {
    let setup = setup.clone();
    move |id: NodeId| setup.machine(id)
}

/// Whether one expectation held, and if not, why.
#[derive(Debug)]
pub struct Verdict<'a> {
    pub expect: &'a Expect,
    pub failure: Option<String>,
}

fn matches(e: &Expect, r: &Record) -> bool {
    r.kind == e.event
        && e.node.is_none_or(|n| r.node == Some(n))
        && e.peer.is_none_or(|p| r.peer == Some(p))
        && e.reason.as_deref().is_none_or(|want| {
            // "send failed" matches "send failed: connection reset".
            r.reason.as_deref().is_some_and(|got| {
                got == want
                    || got
                        .strip_prefix(want)
                        .is_some_and(|rest| rest.starts_with(':'))
            })
        })
}

/// Describe an expectation as written, for messages.
pub fn describe(trace: &Trace, e: &Expect) -> String {
    let mut s = format!("line {}: {}", e.line, e.event);
    if let Some(n) = e.node {
        let _ = write!(s, " node={}", trace.name(n));
    }
    if let Some(p) = e.peer {
        let _ = write!(s, " peer={}", trace.name(p));
    }
    if let Some(r) = &e.reason {
        let _ = write!(s, " reason={r:?}");
    }
    match e.when {
        When::At(t) => {
            let _ = write!(s, " at {t}");
        }
        When::Between(a, b) => {
            let _ = write!(s, " between {a} and {b}");
        }
        When::Never => s.push_str(" never"),
        When::NeverBetween(a, b) => {
            let _ = write!(s, " never between {a} and {b}");
        }
        When::Anytime => {}
    }
    if let Some(c) = e.count {
        let _ = write!(s, " count={c}");
    }
    s
}

/// Check every expectation against the decision records.
pub fn check<'a>(scenario: &'a Scenario, trace: &Trace) -> Vec<Verdict<'a>> {
    let decisions: Vec<&Record> = trace.decisions().collect();
    scenario
        .expects
        .iter()
        .map(|e| {
            let all: Vec<&Record> = decisions
                .iter()
                .copied()
                .filter(|r| matches(e, r))
                .collect();
            let in_window: Vec<&Record> = all
                .iter()
                .copied()
                .filter(|r| match e.when {
                    When::At(t) => r.t == t,
                    When::Between(a, b) | When::NeverBetween(a, b) => (a..=b).contains(&r.t),
                    When::Never | When::Anytime => true,
                })
                .collect();
            let never = matches!(e.when, When::Never | When::NeverBetween(..));
            let failure = match (e.when, e.count) {
                _ if never && !in_window.is_empty() => Some(format!(
                    "expected never, but it happened at {}",
                    list_times(&in_window)
                )),
                _ if never => None,
                (_, Some(c)) if in_window.len() as u64 != c => Some(format!(
                    "expected {c} matching record(s), found {}{}",
                    in_window.len(),
                    seen_at(&all)
                )),
                (_, None) if in_window.is_empty() => {
                    Some(format!("no matching record{}", seen_at(&all)))
                }
                _ => None,
            };
            Verdict { expect: e, failure }
        })
        .collect()
}

fn list_times(records: &[&Record]) -> String {
    let times: Vec<String> = records.iter().take(8).map(|r| r.t.to_string()).collect();
    let more = records.len().saturating_sub(8);
    if more > 0 {
        format!("{} (+{more} more)", times.join(", "))
    } else {
        times.join(", ")
    }
}

fn seen_at(all: &[&Record]) -> String {
    if all.is_empty() {
        "; none at any time".to_string()
    } else {
        format!("; matching records at {}", list_times(all))
    }
}

/// The scenario's `[scenario] invariants` that the trace breaks.
pub fn violations(scenario: &Scenario, trace: &Trace) -> Vec<Violation> {
    scenario.setup.violations(scenario, trace)
}

/// The decision records that are the snapshot of a run: one text line each.
pub fn decision_text(trace: &Trace) -> String {
    let mut s = String::new();
    for r in trace.decisions() {
        s.push_str(&trace.text_line(r));
        s.push('\n');
    }
    s
}

/// The trace around `t` (decisions only), for failure messages.
pub fn context(trace: &Trace, e: &Expect, lines: usize) -> String {
    let center = match e.when {
        When::At(t) | When::Between(t, _) | When::NeverBetween(t, _) => t,
        When::Never | When::Anytime => return String::new(),
    };
    let decisions: Vec<&Record> = trace.decisions().collect();
    let idx = decisions.partition_point(|r| r.t < center);
    let lo = idx.saturating_sub(lines);
    let hi = (idx + lines).min(decisions.len());
    decisions[lo..hi]
        .iter()
        .map(|r| format!("    {}\n", trace.text_line(r)))
        .collect()
}

/// How far apart in time the madsim engine may put the same decision: each
/// socket operation there costs at least 1 ms of virtual time (see
/// `docs/engines.md`), and sleep-then-work loops carry that along.
pub const ENGINE_TOLERANCE: heartsim_sim::Duration = heartsim_sim::Duration::from_ms(250);

/// A decision one trace has and the other lacks (see
/// [`decision_differences`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// When the unmatched record was made.
    pub t: heartsim_sim::Timestamp,
    /// `only in the first: <line>` or `only in the second: <line>`.
    pub text: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The decisions of `a` and `b` up to `until` that have no partner in the
/// other: the same node, kind, peer, reason and text, at most `tolerance`
/// apart. Order among records that close is not compared (madsim orders
/// same-instant tasks by its own seeded choice). Records within `tolerance`
/// of `until` are not compared: the run may end between the two. Empty
/// means the traces agree. Differences come in no particular time order.
pub fn decision_differences(
    a: &Trace,
    b: &Trace,
    tolerance: heartsim_sim::Duration,
    until: heartsim_sim::Timestamp,
) -> Vec<Difference> {
    let same = |x: &Record, y: &Record| {
        (x.node, x.kind, x.peer, &x.reason, &x.msg) == (y.node, y.kind, y.peer, &y.reason, &y.msg)
    };
    let cut = until.saturating_sub(tolerance);
    // Partners of records up to `cut` may lie up to `until`.
    let theirs: Vec<&Record> = b.decisions().filter(|r| r.t <= until).collect();
    let mut matched = vec![false; theirs.len()];
    let mut out = Vec::new();
    // Both are in time order: the first free partner within the tolerance
    // starts at or after `low`.
    let mut low = 0;
    for r in a.decisions().filter(|r| r.t <= cut) {
        while low < theirs.len() && theirs[low].t + tolerance < r.t {
            if !matched[low] {
                out.push(Difference {
                    t: theirs[low].t,
                    text: format!("only in the second: {}", b.text_line(theirs[low]).trim()),
                });
                matched[low] = true;
            }
            low += 1;
        }
        let partner = (low..theirs.len())
            .take_while(|&i| theirs[i].t <= r.t + tolerance)
            .find(|&i| !matched[i] && same(theirs[i], r));
        match partner {
            Some(i) => matched[i] = true,
            None => out.push(Difference {
                t: r.t,
                text: format!("only in the first:  {}", a.text_line(r).trim()),
            }),
        }
    }
    for (i, r) in theirs.iter().enumerate() {
        if !matched[i] && r.t <= cut {
            out.push(Difference {
                t: r.t,
                text: format!("only in the second: {}", b.text_line(r).trim()),
            });
        }
    }
    out
}
