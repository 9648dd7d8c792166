//! Running a scenario: build the engine from a [`Scenario`], drive it, and
//! check its `[[expect]]`s against the trace.

use std::fmt::Write as _;

use heartsim_sim::net::Network;
use heartsim_sim::trace::{Level, Record, Trace};
use heartsim_sim::{Engine, LimitError, NodeId, NodeSpec, Stats};

use crate::models::joinmarket::invariants::{self, Violation};
use crate::models::joinmarket::{Directory, Node, Peer};
use crate::scenario::{Expect, NodeRole, Scenario, When};

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
    let mut net = Network::new(seed, scenario.network);
    for (from, to, link) in &scenario.links {
        net.set_link(*from, *to, *link);
    }
    let specs = scenario
        .nodes
        .iter()
        .map(|n| NodeSpec {
            name: n.name.clone(),
            clock: n.clock,
            start_at: n.start_at,
        })
        .collect();
    let dir_nick = scenario.nodes[scenario.directory.0].name.clone();
    let factory = |id: NodeId| match &scenario.nodes[id.0].role {
        NodeRole::Directory => Node::Directory(Box::new(Directory::new(
            scenario.profile,
            scenario.timers,
            &dir_nick,
        ))),
        NodeRole::Peer(spec) => Node::Peer(Peer::new(spec.clone())),
    };
    let mut engine = Engine::new(
        specs,
        net,
        scenario.faults.clone(),
        scenario.limits,
        keep,
        factory,
    );
    engine.run()?;
    let stats = engine.stats();
    Ok(Outcome {
        trace: engine.into_trace(),
        stats,
    })
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
    invariants::check(scenario, trace, &scenario.invariants)
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
