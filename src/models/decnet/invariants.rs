//! Named properties of a DECNET run's decision records (docs/fuzzing.md,
//! "Add an invariant"). The two security properties of the swarm
//! controller hold under any faults; the panel's and the probe's are
//! checked on the main API's records.
//!
//! Upstream does *not* keep [`DELTA_CLOSES_ITS_OWN_ATTEMPT`]: deltas carry
//! no lifecycle id and go to the newest open row (`api_heartbeat.py`
//! l. 178-181, `decky_lifecycle.py` l. 68-86), so a stale delta closes a
//! newer attempt's row
//! (`scenarios/decnet/stale-delta-closes-the-newer-attempts-row.toml`).
//! It is an invariant a scenario may ask for, and no profile's fuzzing
//! list has it ([`kept_by`]).

use std::collections::{BTreeMap, BTreeSet};

use heartsim_sim::trace::{kind as engine, Trace};
use heartsim_sim::NodeId;

use super::api::{Action, ApiSpec, OK_WINDOW};
use super::kind;
use super::setup::{Role, Setup};
use super::Shape;
use crate::scenario::{Scenario, Violation};

/// No request without the certificate pinned for the host it claims
/// changes the master's database: every `heartbeat` answer other than 204
/// is followed by no row change before the next answer, and every 204 went
/// to a request presenting a certificate that was, at some time, pinned to
/// the claimed uuid (by the scenario's enrolment or an operator's enrol).
pub const PINNED_CERT_OR_NOTHING: &str = "pinned-cert-or-nothing";

/// A malformed body, of any shape, gets 422 and changes nothing.
pub const MALFORMED_BODY_422: &str = "malformed-body-422";

/// Each `worker-status` the workers panel shows is the one the last bus
/// heartbeat its registry took implies (`worker_registry.py` l. 79-110):
/// `unknown` iff it took none since the API started, else `ok` iff
/// `now - ts < 90 s`, `now` the API's clock and `ts` the publisher's. With
/// every clock true (no offset, drift or jump), each is checked against
/// the record's time, and, while the API is not paused, so is every poll
/// `panel_every` apart from its start: a poll at which the status should
/// have changed and no record says so is a violation, as is a record at no
/// poll. With clock faults, only the first half (`unknown` iff nothing
/// taken).
pub const PANEL_FOLLOWS_THE_LAST_BUS_BEAT: &str = "panel-follows-the-last-bus-beat";

/// Only the active probe moves a host to `unreachable` (the host row has
/// no age window): every `host-row unreachable` is the main API's and
/// follows a failed probe of that uuid, and every `host-row active` the
/// API writes follows a successful one (`api_list_hosts.py` l. 37-43).
/// Upstream, swarmctl's own `POST /swarm/check` (`api_check_hosts.py`
/// l. 66) marks hosts unreachable too; the model has no such action, so
/// the statement holds for everything it runs.
pub const ONLY_THE_PROBE_MARKS_UNREACHABLE: &str = "only-the-probe-marks-unreachable";

/// A delta never closes a lifecycle row created after the operation it
/// reports started: each row swarmctl changes for a heartbeat carrying
/// lifecycle was created before the latest-started operation of that
/// decky and kind the agent had finished by then. Upstream breaks it
/// (module docs).
pub const DELTA_CLOSES_ITS_OWN_ATTEMPT: &str = "delta-closes-its-own-attempt";

pub const ALL: &[&str] = &[
    PINNED_CERT_OR_NOTHING,
    MALFORMED_BODY_422,
    PANEL_FOLLOWS_THE_LAST_BUS_BEAT,
    ONLY_THE_PROBE_MARKS_UNREACHABLE,
    DELTA_CLOSES_ITS_OWN_ATTEMPT,
];

/// What `profile` keeps under any faults (the fuzzer checks these):
/// everything but [`DELTA_CLOSES_ITS_OWN_ATTEMPT`], which v1.0.0 breaks.
pub fn kept_by(_profile: &str) -> &'static [&'static str] {
    &ALL[..4]
}

fn is_row(kind: &str) -> bool {
    [
        kind::HOST_ROW,
        kind::LIFECYCLE_ROW,
        kind::SHARD_ROW,
        kind::RESYNC,
    ]
    .contains(&kind)
}

/// Every violation of the invariants the scenario asks for.
pub fn check(setup: &Setup, scenario: &Scenario, trace: &Trace) -> Vec<Violation> {
    let mut out = security(setup, trace);
    let asks = |name| setup.invariants.contains(&name);
    if asks(PANEL_FOLLOWS_THE_LAST_BUS_BEAT) {
        out.extend(panel_follows_the_last_bus_beat(setup, scenario, trace));
    }
    if asks(ONLY_THE_PROBE_MARKS_UNREACHABLE) {
        out.extend(only_the_probe_marks_unreachable(setup, trace));
    }
    if asks(DELTA_CLOSES_ITS_OWN_ATTEMPT) {
        out.extend(delta_closes_its_own_attempt(setup, trace));
    }
    out
}

fn security(setup: &Setup, trace: &Trace) -> Vec<Violation> {
    let mut out = Vec::new();
    let Some(master) = setup
        .roles
        .iter()
        .position(|r| matches!(r, Role::Swarmctl))
        .map(NodeId)
    else {
        return out;
    };
    // Every certificate ever pinned to each uuid.
    let mut pinned: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (uuid, row) in &setup.initial.hosts {
        pinned
            .entry(uuid.clone())
            .or_default()
            .insert(row.fingerprint.clone());
    }
    for role in &setup.roles {
        if let Role::Api(spec) = role {
            for (_, a) in &spec.actions {
                if let Action::Enrol {
                    uuid, fingerprint, ..
                } = a
                {
                    pinned
                        .entry(uuid.to_string())
                        .or_default()
                        .insert(fingerprint.to_string());
                }
            }
        }
    }
    let pinned_check = setup.invariants.contains(&PINNED_CERT_OR_NOTHING);
    let malformed_check = setup.invariants.contains(&MALFORMED_BODY_422);
    // The swarmctl's last answer, while its transaction's rows follow.
    let mut last: Option<(bool, String)> = None;
    for r in trace.decisions().filter(|r| r.node == Some(master)) {
        if r.kind == kind::HEARTBEAT {
            let reason = r.reason.as_deref().unwrap_or("");
            let msg = r.msg.as_deref().unwrap_or("");
            let ok = reason == "204";
            last = Some((ok, format!("{} {reason} ({msg})", r.t)));
            let shape = r.peer.and_then(|p| match setup.roles.get(p.0) {
                Some(Role::Agent(spec)) => Some(spec.shape),
                _ => None,
            });
            if malformed_check
                && shape.is_some_and(|s| s != Shape::Upstream)
                && reason != "422 request body validation error"
            {
                out.push(Violation {
                    invariant: MALFORMED_BODY_422,
                    message: format!(
                        "{}: {} sent a malformed body and got {reason}",
                        r.t,
                        trace.node_name(r.peer)
                    ),
                });
            }
            if pinned_check && ok {
                let uuid = msg
                    .strip_prefix("host_uuid=")
                    .and_then(|m| m.split(' ').next())
                    .unwrap_or("");
                let cert = msg
                    .split(" cert ")
                    .nth(1)
                    .map(|c| c.split(' ').next().unwrap_or(""));
                let allowed =
                    cert.is_some_and(|c| pinned.get(uuid).is_some_and(|set| set.contains(c)));
                if !allowed || msg.contains("untrusted") {
                    out.push(Violation {
                        invariant: PINNED_CERT_OR_NOTHING,
                        message: format!(
                            "{}: 204 for {msg} without the certificate pinned to that uuid",
                            r.t
                        ),
                    });
                }
            }
        } else if is_row(r.kind) {
            if let Some((false, answer)) = &last {
                if pinned_check || malformed_check {
                    let invariant = if pinned_check {
                        PINNED_CERT_OR_NOTHING
                    } else {
                        MALFORMED_BODY_422
                    };
                    out.push(Violation {
                        invariant,
                        message: format!(
                            "{}: {} {} changed after the refused request {answer}",
                            r.t,
                            r.kind,
                            r.msg.as_deref().unwrap_or("")
                        ),
                    });
                }
            }
        }
    }
    out
}

/// The value of `key=` in a record's message.
fn field<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    msg.split(' ')
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// A time as records print it (`h:mm:ss.mmm`, then microseconds if any),
/// in microseconds.
fn parse_time(s: &str) -> Option<u64> {
    let (hms, frac) = s.split_once('.')?;
    let mut parts = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (parts.next()??, parts.next()??, parts.next()??);
    let (ms, us) = frac.split_at(frac.len().min(3));
    let us = if us.is_empty() { 0 } else { us.parse().ok()? };
    Some(((h * 3600 + m * 60 + sec) * 1000 + ms.parse::<u64>().ok()?) * 1000 + us)
}

fn api_of(setup: &Setup) -> Option<(NodeId, &ApiSpec)> {
    setup.roles.iter().enumerate().find_map(|(i, r)| match r {
        Role::Api(spec) => Some((NodeId(i), &**spec)),
        _ => None,
    })
}

/// What the panel shows at `now` (true time) for the last `ts` taken.
fn panel_status(seen: Option<u64>, now: u64) -> &'static str {
    match seen {
        None => "unknown",
        Some(ts) if now.saturating_sub(ts) < OK_WINDOW.as_us() => "ok",
        Some(_) => "stale",
    }
}

fn panel_follows_the_last_bus_beat(
    setup: &Setup,
    scenario: &Scenario,
    trace: &Trace,
) -> Vec<Violation> {
    let mut out = Vec::new();
    let Some((api, spec)) = api_of(setup) else {
        return out;
    };
    let timed = scenario.clocks_true();
    let mut flag = |message: String| {
        out.push(Violation {
            invariant: PANEL_FOLLOWS_THE_LAST_BUS_BEAT,
            message,
        })
    };
    // The registry's heartbeats (time taken, ts) since the API started;
    // what the panel shows; the next poll, while it can be predicted.
    let mut taken: Vec<(u64, u64)> = Vec::new();
    let mut shown: Option<String> = None;
    let mut next_poll: Option<u64> = None;
    // Predicted polls before `t` at which nothing was recorded: the
    // status must not have changed. A heartbeat taken at the poll's very
    // time may have come before or after it: either will do.
    let missed = |next_poll: &mut Option<u64>,
                  t: u64,
                  taken: &[(u64, u64)],
                  shown: &Option<String>,
                  flag: &mut dyn FnMut(String)| {
        let Some(every) = spec.panel_every else {
            return;
        };
        while let Some(p) = next_poll.filter(|p| *p < t) {
            let before = taken.iter().rev().find(|(at, _)| *at < p).map(|x| x.1);
            let upto = taken.iter().rev().find(|(at, _)| *at <= p).map(|x| x.1);
            let was = shown.as_deref().unwrap_or("none");
            if ![before, upto].iter().any(|s| panel_status(*s, p) == was) {
                flag(format!(
                    "{}: the poll shows {was} where the last bus beat taken says {}",
                    heartsim_sim::Timestamp::from_us(p),
                    panel_status(upto, p)
                ));
            }
            *next_poll = Some(p + every.as_us());
        }
    };
    for r in trace.decisions().filter(|r| r.node == Some(api)) {
        let t = r.t.as_us();
        if timed {
            missed(&mut next_poll, t, &taken, &shown, &mut flag);
        }
        match r.kind {
            engine::START | engine::RESTART => {
                taken.clear();
                shown = None;
                next_poll = spec.panel_every.map(|every| t + every.as_us());
            }
            engine::STOP | engine::KILL | engine::CRASH | engine::PAUSE => next_poll = None,
            kind::WORKER_SEEN => {
                let ts = r
                    .msg
                    .as_deref()
                    .and_then(|m| field(m, "ts"))
                    .and_then(parse_time);
                match ts {
                    Some(ts) => taken.push((t, ts)),
                    None => flag(format!("{}: worker-seen without a ts", r.t)),
                }
            }
            kind::WORKER_STATUS => {
                let status = r.reason.as_deref().unwrap_or("");
                let last = taken.last().map(|x| x.1);
                if (status == "unknown") != last.is_none() {
                    flag(format!(
                        "{}: the panel shows {status} with {} bus beat taken since the API started",
                        r.t,
                        if last.is_some() { "a" } else { "no" }
                    ));
                } else if timed && panel_status(last, t) != status {
                    flag(format!(
                        "{}: the panel shows {status}, but the last bus beat taken (ts {}) says {}",
                        r.t,
                        heartsim_sim::Timestamp::from_us(last.unwrap_or(0)),
                        panel_status(last, t)
                    ));
                }
                if timed && next_poll.is_some() {
                    if next_poll != Some(t) {
                        flag(format!("{}: the panel changed at no poll", r.t));
                    } else {
                        next_poll = spec.panel_every.map(|every| t + every.as_us());
                    }
                }
                shown = Some(status.to_string());
            }
            _ => {}
        }
    }
    if timed {
        let end = scenario.duration.as_us();
        missed(&mut next_poll, end, &taken, &shown, &mut flag);
    }
    out
}

fn only_the_probe_marks_unreachable(setup: &Setup, trace: &Trace) -> Vec<Violation> {
    let mut out = Vec::new();
    let api = api_of(setup).map(|(n, _)| n);
    // Each uuid's probes whose result has not been written yet: ok or not.
    let mut probes: BTreeMap<String, Vec<bool>> = BTreeMap::new();
    for r in trace.decisions() {
        let msg = r.msg.as_deref().unwrap_or("");
        let reason = r.reason.as_deref().unwrap_or("");
        let Some(uuid) = field(msg, "uuid") else {
            continue;
        };
        if r.kind == kind::PROBE && r.node == api {
            probes.entry(uuid.into()).or_default().push(reason == "ok");
            continue;
        }
        if r.kind != kind::HOST_ROW || !["active", "unreachable"].contains(&reason) {
            continue;
        }
        let ok = reason == "active";
        if r.node != api {
            if !ok {
                out.push(Violation {
                    invariant: ONLY_THE_PROBE_MARKS_UNREACHABLE,
                    message: format!(
                        "{}: {} marked {uuid} unreachable",
                        r.t,
                        trace.node_name(r.node)
                    ),
                });
            }
            continue;
        }
        // The results are written in the order of the probes; one that
        // changed nothing writes no record.
        let pending = probes.entry(uuid.into()).or_default();
        match pending.iter().position(|p| *p == ok) {
            Some(i) => {
                pending.drain(..=i);
            }
            None => out.push(Violation {
                invariant: ONLY_THE_PROBE_MARKS_UNREACHABLE,
                message: format!(
                    "{}: the api marked {uuid} {reason} without a {} probe of it",
                    r.t,
                    if ok { "successful" } else { "failed" }
                ),
            }),
        }
    }
    out
}

fn delta_closes_its_own_attempt(setup: &Setup, trace: &Trace) -> Vec<Violation> {
    let mut out = Vec::new();
    let Some(master) = setup
        .roles
        .iter()
        .position(|r| matches!(r, Role::Swarmctl))
        .map(NodeId)
    else {
        return out;
    };
    // Lifecycle rows by (id, started_at): when they were created.
    let mut created: BTreeMap<(String, String), u64> = BTreeMap::new();
    // Each agent's operations by (decky, operation): (started, done).
    type Ops = BTreeMap<(String, String), Vec<(u64, bool)>>;
    let mut ops: BTreeMap<NodeId, Ops> = BTreeMap::new();
    // The agent whose heartbeat with lifecycle swarmctl is applying.
    let mut applying: Option<NodeId> = None;
    for r in trace.decisions() {
        let msg = r.msg.as_deref().unwrap_or("");
        let t = r.t.as_us();
        let op = || {
            Some((
                field(msg, "decky")?.to_string(),
                field(msg, "operation")?.to_string(),
            ))
        };
        match r.kind {
            kind::OPERATION_STARTED => {
                if let (Some(n), Some(op)) = (r.node, op()) {
                    ops.entry(n)
                        .or_default()
                        .entry(op)
                        .or_default()
                        .push((t, false));
                }
            }
            kind::OPERATION_DONE => {
                if let (Some(n), Some(op)) = (r.node, op()) {
                    let list = ops.entry(n).or_default().entry(op).or_default();
                    if let Some(o) = list.iter_mut().find(|o| !o.1) {
                        o.1 = true;
                    }
                }
            }
            kind::HEARTBEAT if r.node == Some(master) => {
                applying = msg.ends_with("with lifecycle").then_some(r.peer).flatten();
            }
            kind::LIFECYCLE_ROW => {
                let (Some(id), Some(started)) = (field(msg, "id"), field(msg, "started_at")) else {
                    continue;
                };
                let key = (id.to_string(), started.to_string());
                let born = *created.entry(key).or_insert(t);
                let (Some(agent), true) = (applying, r.node == Some(master)) else {
                    continue;
                };
                let Some(op) = op() else { continue };
                let latest = ops
                    .get(&agent)
                    .and_then(|o| o.get(&op))
                    .and_then(|l| l.iter().filter(|o| o.1).map(|o| o.0).max());
                if let Some(began) = latest.filter(|began| born > *began) {
                    out.push(Violation {
                        invariant: DELTA_CLOSES_ITS_OWN_ATTEMPT,
                        message: format!(
                            "{}: {}'s delta for {} {} (the operation began at {}) set row {id} \
                             created at {} {}",
                            r.t,
                            trace.node_name(Some(agent)),
                            op.0,
                            op.1,
                            heartsim_sim::Timestamp::from_us(began),
                            heartsim_sim::Timestamp::from_us(born),
                            r.reason.as_deref().unwrap_or("")
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    out
}
