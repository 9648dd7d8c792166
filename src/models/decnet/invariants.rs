//! Named properties of a DECNET run's decision records (docs/fuzzing.md,
//! "Add an invariant"). Both are security properties of the swarm
//! controller and hold under any faults.
//!
//! Upstream does *not* keep "a delta only closes a row of the attempt it
//! reports": deltas carry no lifecycle id and go to the newest open row
//! (`api_heartbeat.py` l. 178-181, `decky_lifecycle.py` l. 68-86), so a
//! stale delta closes a newer attempt's row
//! (`scenarios/decnet/stale-delta-closes-the-newer-attempts-row.toml`).
//! It is therefore no invariant here.

use std::collections::{BTreeMap, BTreeSet};

use heartsim_sim::trace::Trace;
use heartsim_sim::NodeId;

use super::api::Action;
use super::kind;
use super::setup::{Role, Setup};
use super::Shape;
use crate::scenario::Violation;

/// No request without the certificate pinned for the host it claims
/// changes the master's database: every `heartbeat` answer other than 204
/// is followed by no row change before the next answer, and every 204 went
/// to a request presenting a certificate that was, at some time, pinned to
/// the claimed uuid (by the scenario's enrolment or an operator's enrol).
pub const PINNED_CERT_OR_NOTHING: &str = "pinned-cert-or-nothing";

/// A malformed body, of any shape, gets 422 and changes nothing.
pub const MALFORMED_BODY_422: &str = "malformed-body-422";

pub const ALL: &[&str] = &[PINNED_CERT_OR_NOTHING, MALFORMED_BODY_422];
/// What every run keeps (the fuzzer checks these).
pub const SECURITY: &[&str] = &[PINNED_CERT_OR_NOTHING, MALFORMED_BODY_422];

fn is_row(kind: &str) -> bool {
    [
        kind::HOST_ROW,
        kind::LIFECYCLE_ROW,
        kind::SHARD_ROW,
        kind::RESYNC,
    ]
    .contains(&kind)
}

pub fn check(setup: &Setup, trace: &Trace) -> Vec<Violation> {
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
