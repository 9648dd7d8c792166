//! Named properties of a lilbee run's decision records (docs/fuzzing.md,
//! "Add an invariant").

use std::collections::{BTreeMap, BTreeSet};

use heartsim_sim::trace::{kind as engine, Trace};
use heartsim_sim::NodeId;

use super::kind;
use super::setup::Setup;
use crate::scenario::{Scenario, Violation};

/// Once a role is degraded, no worker of it is ever spawned again by
/// that pool process: the
/// degraded mark is sticky until `reset_role_failures` (pool.py `reset_role_failures`),
/// which no scenario calls; `_ensure_channel` raises `RoleDegradedError`
/// before spawning (pool.py `_ensure_channel`: `if registration.degraded: raise RoleDegradedError`).
pub const DEGRADED_ROLE_NEVER_RESPAWNS: &str = "degraded-role-never-respawns";

/// `reap_idle` never closes a worker with a call in flight on it
/// (`if channel.in_flight > 0: continue`, pool.py `reap_idle`): every call that
/// began on a worker (`call`, msg the worker) has ended (`call-ok` or
/// `call-failed`) before a `reap` of that worker. Pings do not count: the
/// ticker reaps before it pings, and pings one at a time.
pub const BUSY_WORKER_NEVER_REAPED: &str = "busy-worker-never-reaped";

pub fn check(setup: &Setup, scenario: &Scenario, trace: &Trace) -> Vec<Violation> {
    let _ = scenario;
    let mut out = Vec::new();
    let wants = |name| setup.invariants.contains(&name);
    let mut degraded: BTreeSet<NodeId> = BTreeSet::new();
    // Calls in flight per role, oldest first: the worker each began on.
    let mut calls: BTreeMap<NodeId, Vec<String>> = BTreeMap::new();
    for r in trace.decisions() {
        if r.node != Some(setup.pool) {
            continue;
        }
        // A pool process that ends or starts again is a fresh pool: no
        // role degraded, no call in flight (its workers' names restart).
        if matches!(
            r.kind,
            engine::START | engine::RESTART | engine::STOP | engine::KILL | engine::CRASH
        ) {
            degraded.clear();
            calls.clear();
            continue;
        }
        let Some(role) = r.peer else { continue };
        let msg = r.msg.as_deref().unwrap_or("");
        match r.kind {
            kind::DEGRADED => {
                degraded.insert(role);
            }
            kind::SPAWN_WORKER
                if wants(DEGRADED_ROLE_NEVER_RESPAWNS) && degraded.contains(&role) =>
            {
                out.push(Violation {
                    invariant: DEGRADED_ROLE_NEVER_RESPAWNS,
                    message: format!(
                        "at {}: {} spawned {msg} after it was degraded",
                        r.t,
                        trace.name(role)
                    ),
                });
            }
            kind::CALL => calls.entry(role).or_default().push(msg.to_string()),
            kind::CALL_OK | kind::CALL_FAILED => {
                // Calls end in any order; each record names its worker.
                let list = calls.entry(role).or_default();
                if let Some(i) = list.iter().position(|w| w == msg) {
                    list.remove(i);
                }
            }
            kind::REAP if wants(BUSY_WORKER_NEVER_REAPED) => {
                let worker = msg.split_whitespace().next().unwrap_or("");
                let busy = calls
                    .get(&role)
                    .map_or(0, |l| l.iter().filter(|w| *w == worker).count());
                if busy > 0 {
                    out.push(Violation {
                        invariant: BUSY_WORKER_NEVER_REAPED,
                        message: format!(
                            "at {}: {worker} reaped with {busy} call(s) in flight",
                            r.t
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    out
}
