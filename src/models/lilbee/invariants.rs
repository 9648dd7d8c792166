//! Named properties of a lilbee run's decision records (docs/fuzzing.md,
//! "Add an invariant"). Each is recomputed from the records, not read
//! from the pool's own accounting, and restarts with the pool process.
//! Durations are compared on the pool's monotonic clock (its drift and
//! `clock-drift` faults replayed), as the pool measures them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use heartsim_sim::clock::Clock;
use heartsim_sim::trace::{kind as engine, Trace};
use heartsim_sim::{Fault, NodeId, Timestamp};

use super::kind;
use super::setup::Setup;
use crate::scenario::{Scenario, Violation};

/// Once a role is degraded, no worker of it is ever spawned again by
/// that pool process until a `reset-failures` of the role: the degraded
/// mark is sticky until `reset_role_failures` (pool.py:
/// `registration.degraded = False`); `_ensure_channel` raises
/// `RoleDegradedError` before spawning.
pub const DEGRADED_ROLE_NEVER_RESPAWNS: &str = "degraded-role-never-respawns";

/// `reap_idle` never closes a worker with a call in flight on it
/// (`if channel.in_flight > 0: continue`, pool.py `reap_idle`): every call
/// or stream that began on a worker (`call`/`stream`, msg the worker) has
/// ended (`call-ok`/`stream-ok` or `call-failed`/`stream-failed`) before a
/// `reap` of that worker. Pings do not count: the
/// ticker reaps before it pings, and pings one at a time.
pub const BUSY_WORKER_NEVER_REAPED: &str = "busy-worker-never-reaped";

/// A crash is recorded only for a worker that has died: at 13277138 only
/// EOF or a broken pipe raise `WorkerCrashError` (a timeout does not).
///
/// Judged only for a worker none of whose reads was ever left blocked
/// (no timed-out or cancelled call or ping on it, no close of it begun):
/// upstream, two threads blocked in `conn.recv()` on one pipe race for a
/// frame and can split it (`Connection._recv_bytes` reads the header and
/// the body in two `read()`s), and the reader that gets half raises
/// `EOFError`, a `WorkerCrashError` of a live worker (audit
/// 2026-11-27, D1). The model gives the frame whole to the oldest reader,
/// which upstream does not guarantee, so the check claims nothing there.
pub const CRASH_FOLLOWS_A_DEATH: &str = "crash-follows-a-death";

/// A role is degraded exactly when a crash leaves more than
/// `restart_budget` crashes in the window `[now - restart_window, now]`,
/// counted from the `crash-recorded` records since the role's last
/// `reset-failures` (`registration.crash_history.clear()`).
pub const DEGRADED_EXACTLY_PAST_THE_BUDGET: &str = "degraded-exactly-past-the-budget";

/// A reaped worker's role was idle for `max_idle_s` at the tick: the
/// latest stamp of `last_used` (its spawn, a successful call, stream or
/// ping, a skipped ping) is at least `max_idle_s` before the tick's time.
pub const REAPED_ONLY_WHEN_IDLE: &str = "reaped-only-when-idle";

pub const ALL: [&str; 5] = [
    DEGRADED_ROLE_NEVER_RESPAWNS,
    BUSY_WORKER_NEVER_REAPED,
    CRASH_FOLLOWS_A_DEATH,
    DEGRADED_EXACTLY_PAST_THE_BUDGET,
    REAPED_ONLY_WHEN_IDLE,
];

/// The pool's monotonic clock reading at global times, in order.
struct PoolClock<'a> {
    clock: Clock,
    drifts: std::iter::Peekable<std::slice::Iter<'a, (Timestamp, Fault)>>,
    pool: NodeId,
}

impl<'a> PoolClock<'a> {
    fn new(setup: &Setup, scenario: &'a Scenario) -> PoolClock<'a> {
        PoolClock {
            clock: scenario.nodes[setup.pool.0].clock,
            drifts: scenario.faults.iter().peekable(),
            pool: setup.pool,
        }
    }
    /// The pool's monotonic reading at `t` (not before the last asked).
    fn mono(&mut self, t: Timestamp) -> Timestamp {
        while let Some((at, fault)) = self.drifts.next_if(|(at, _)| *at <= t) {
            if let Fault::ClockDrift { node, ppm } = fault {
                if *node == self.pool {
                    self.clock.set_drift(*at, *ppm);
                }
            }
        }
        self.clock.now(t).mono
    }
}

/// What the checks track for one pool process.
#[derive(Default)]
struct State {
    degraded: BTreeSet<NodeId>,
    /// Calls and streams in flight per role: the worker each began on.
    calls: BTreeMap<NodeId, Vec<String>>,
    dead: BTreeSet<String>,
    stamped: BTreeMap<NodeId, Timestamp>,
    tick: Option<Timestamp>,
    /// Each role's current worker (its latest spawn).
    current: BTreeMap<NodeId, String>,
    /// Workers that may have had two blocked readers (see
    /// [`CRASH_FOLLOWS_A_DEATH`]).
    raced: BTreeSet<String>,
}

pub fn check(setup: &Setup, scenario: &Scenario, trace: &Trace) -> Vec<Violation> {
    let cfg = &setup.config;
    let mut clock = PoolClock::new(setup, scenario);
    let mut out = Vec::new();
    let wants = |name| setup.invariants.contains(&name);
    let mut fail = |invariant, t: Timestamp, what: String| {
        out.push(Violation {
            invariant,
            message: format!("at {t}: {what}"),
        });
    };
    let mut st = State::default();
    for r in trace.decisions() {
        if r.node != Some(setup.pool) {
            continue;
        }
        let msg = r.msg.as_deref().unwrap_or("");
        let mono = clock.mono(r.t);
        // A pool process that ends or starts again is a fresh pool (its
        // workers' names restart too). A `stop` is not an end: a pool
        // exiting cleanly runs on while its executor threads are busy
        // (`Pool::on_exit`), and nothing of it is recorded after it ends.
        if matches!(
            r.kind,
            engine::START | engine::RESTART | engine::KILL | engine::CRASH
        ) {
            st = State::default();
            continue;
        }
        match r.kind {
            engine::EXIT => {
                st.dead.insert(msg.to_string());
            }
            kind::TICK => st.tick = Some(mono),
            // Every live channel is closed: each close's read may be
            // left blocked.
            kind::SHUTDOWN => st.raced.extend(st.current.values().cloned()),
            _ => {}
        }
        let Some(role) = r.peer else { continue };
        let worker = msg.split_whitespace().next().unwrap_or("");
        match r.kind {
            kind::DEGRADED => {
                st.degraded.insert(role);
            }
            kind::RESET_FAILURES => {
                st.degraded.remove(&role);
            }
            kind::SPAWN_WORKER => {
                if wants(DEGRADED_ROLE_NEVER_RESPAWNS) && st.degraded.contains(&role) {
                    let name = trace.name(role);
                    fail(
                        DEGRADED_ROLE_NEVER_RESPAWNS,
                        r.t,
                        format!("{name} spawned {msg} after it was degraded"),
                    );
                }
                st.stamped.insert(role, mono);
                st.current.insert(role, worker.to_string());
            }
            kind::CALL | kind::STREAM => st.calls.entry(role).or_default().push(worker.to_string()),
            kind::CALL_OK | kind::CALL_FAILED | kind::STREAM_OK | kind::STREAM_FAILED => {
                if matches!(r.kind, kind::CALL_OK | kind::STREAM_OK) {
                    st.stamped.insert(role, mono);
                }
                // Calls end in any order; each record names its worker.
                let list = st.calls.entry(role).or_default();
                if let Some(i) = list.iter().position(|w| w == worker) {
                    list.remove(i);
                }
            }
            kind::PING_OK | kind::PING_SKIPPED => {
                st.stamped.insert(role, mono);
            }
            kind::REAP => {
                let busy = st
                    .calls
                    .get(&role)
                    .map_or(0, |l| l.iter().filter(|w| *w == worker).count());
                if wants(BUSY_WORKER_NEVER_REAPED) && busy > 0 {
                    fail(
                        BUSY_WORKER_NEVER_REAPED,
                        r.t,
                        format!("{worker} reaped with {busy} call(s) in flight"),
                    );
                }
                let idle = match (st.tick, st.stamped.get(&role)) {
                    (Some(tick), Some(&s)) if s <= tick => Some(tick.saturating_since(s)),
                    _ => None,
                };
                if wants(REAPED_ONLY_WHEN_IDLE) && idle.is_none_or(|i| i < cfg.max_idle) {
                    fail(
                        REAPED_ONLY_WHEN_IDLE,
                        r.t,
                        format!(
                            "{worker} reaped, idle {idle:?} at the tick, max_idle {}",
                            cfg.max_idle
                        ),
                    );
                }
            }
            kind::CRASH
                if wants(CRASH_FOLLOWS_A_DEATH)
                    && !st.dead.contains(worker)
                    && !st.raced.contains(worker) =>
            {
                fail(
                    CRASH_FOLLOWS_A_DEATH,
                    r.t,
                    format!("crash recorded for {worker:?}, which has not died"),
                );
            }
            _ => {}
        }
        // A read left blocked (an orphan), or a close begun (its read may
        // be): from now on this worker's reads may race.
        let orphaned = matches!(r.reason.as_deref(), Some("TimeoutError" | "CancelledError"));
        match r.kind {
            kind::CALL_FAILED | kind::PING_FAILED | kind::STREAM_FAILED if orphaned => {
                // A ping's timeout names no worker: it is the current one.
                let w = match worker {
                    "" => st.current.get(&role).cloned().unwrap_or_default(),
                    w => w.to_string(),
                };
                st.raced.insert(w);
            }
            kind::REAP => {
                st.raced.insert(worker.to_string());
            }
            // `_on_crash` closes the role's current channel.
            kind::CRASH => {
                if let Some(w) = st.current.get(&role) {
                    st.raced.insert(w.clone());
                }
            }
            _ => {}
        }
    }
    if wants(DEGRADED_EXACTLY_PAST_THE_BUDGET) {
        out.extend(degraded_exactly_past_the_budget(setup, scenario, trace));
    }
    out
}

/// Replays the crash records per role and compares each with whether a
/// `degraded` record for it follows at the same instant.
fn degraded_exactly_past_the_budget(
    setup: &Setup,
    scenario: &Scenario,
    trace: &Trace,
) -> Vec<Violation> {
    let cfg = &setup.config;
    let mut clock = PoolClock::new(setup, scenario);
    let mut out = Vec::new();
    let records: Vec<_> = trace
        .decisions()
        .filter(|r| r.node == Some(setup.pool))
        .collect();
    let mut crashes: BTreeMap<NodeId, VecDeque<Timestamp>> = BTreeMap::new();
    let mut degraded: BTreeSet<NodeId> = BTreeSet::new();
    for (i, r) in records.iter().enumerate() {
        let mono = clock.mono(r.t);
        if matches!(
            r.kind,
            engine::START | engine::RESTART | engine::KILL | engine::CRASH
        ) {
            crashes.clear();
            degraded.clear();
            continue;
        }
        let Some(role) = r.peer else { continue };
        if r.kind == kind::RESET_FAILURES {
            crashes.remove(&role);
            degraded.remove(&role);
        }
        if r.kind == kind::CRASH {
            {
                let list = crashes.entry(role).or_default();
                let cutoff = mono.saturating_sub(cfg.restart_window);
                while list.front().is_some_and(|&t| t < cutoff) {
                    list.pop_front();
                }
                list.push_back(mono);
                let past = list.len() > cfg.restart_budget;
                let marked = records
                    .get(i + 1)
                    .is_some_and(|n| n.kind == kind::DEGRADED && n.peer == Some(role));
                // Degraded is written once, when the role first passes.
                let want = past && !degraded.contains(&role);
                if want != marked {
                    out.push(Violation {
                        invariant: DEGRADED_EXACTLY_PAST_THE_BUDGET,
                        message: format!(
                            "at {}: {} crashes in the window for {}, degraded {}",
                            r.t,
                            list.len(),
                            trace.name(role),
                            if marked { "marked" } else { "not marked" }
                        ),
                    });
                }
                if past {
                    degraded.insert(role);
                }
            }
        }
    }
    out
}
