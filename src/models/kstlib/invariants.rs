//! Named properties of a kstlib run's decision records (docs/fuzzing.md,
//! "Add an invariant").

use std::collections::BTreeMap;

use heartsim_sim::clock::Clock;
use heartsim_sim::trace::{kind as engine, Level, Trace};
use heartsim_sim::{Duration, Fault, NodeId, Timestamp};

use super::kind;
use super::setup::{Role, Setup};
use super::state::temp_path;
use crate::scenario::{Scenario, Violation};

/// Whatever timestamp a reader reports having read is the one the latest
/// completed beat of that state file wrote (on that disk): a reader never
/// sees a file no completed rename produced, nor an older one. Files that
/// come back empty after a power loss, or torn, have no timestamp and are
/// not checked; state files whose temp name clashes with another's are
/// left out (upstream's clash moves one writer's data under the other's
/// name, on purpose).
pub const READS_SEE_THE_LATEST_BEAT: &str = "reads-see-the-latest-beat";

/// The state file a node reads or writes, and on which disk.
fn file_of(setup: &Setup, n: NodeId) -> Option<(usize, &str)> {
    let path = match setup.roles.get(n.0)? {
        Role::Writer(w) => w.state_file.as_deref()?,
        Role::Monitor(m) => &m.state_file,
        Role::StateWatchdog(w) => &w.state_file,
        Role::Watchdog(_) => return None,
    };
    Some((setup.disk_of[n.0], path))
}

/// A writer that has run without interruption for `2 x interval + 2 x
/// write_time`, on a filesystem without faults, with every clock in sync,
/// is never declared dead (a monitor's `dead`, a state-file watchdog's
/// `fired`) by a reader with `max_age >= interval + 2 x write_time`: the
/// last completed beat's timestamp is then less than `interval + 2 x
/// write_time` old (each period is `interval + write_time`, and the file
/// changes only when the rename ends the write). The phrasing,
/// `max_age >= 2 x interval + write_time`, is the same bound when the write
/// is no longer than the interval; for longer writes it is not enough.
/// Checked only when the scenario has no clock offset, drift or jump and no
/// disk fault; interruptions are the writer's kill, stop, crash, pause,
/// its loop dying, and a power loss of the disk's owner.
pub const HEALTHY_WRITER_NEVER_DEAD: &str = "healthy-writer-never-dead";

pub fn check(setup: &Setup, scenario: &Scenario, trace: &Trace) -> Vec<Violation> {
    let mut out = Vec::new();
    if setup.invariants.contains(&READS_SEE_THE_LATEST_BEAT) {
        out.extend(reads_see_the_latest_beat(setup, scenario, trace));
    }
    if setup.invariants.contains(&HEALTHY_WRITER_NEVER_DEAD) {
        out.extend(healthy_writer_never_dead(setup, scenario, trace));
    }
    out
}

/// Whether the invariant's premises hold for the whole run.
fn clocks_in_sync_and_disks_healthy(scenario: &Scenario) -> bool {
    let still = Clock::default();
    scenario.nodes.iter().all(|n| n.clock == still)
        && scenario.hosts.iter().all(|h| h.clock == still)
        && !scenario.faults.iter().any(|(_, f)| {
            matches!(
                f,
                Fault::ClockJump { .. }
                    | Fault::ClockDrift { .. }
                    | Fault::DiskError { .. }
                    | Fault::SlowDisk { .. }
                    | Fault::TornWrite { .. }
                    | Fault::KillBeforeRename(_)
            )
        })
}

fn healthy_writer_never_dead(
    setup: &Setup,
    scenario: &Scenario,
    trace: &Trace,
) -> Option<Violation> {
    if !clocks_in_sync_and_disks_healthy(scenario) {
        return None;
    }
    let write_time = |n: NodeId| -> Duration {
        let disk = setup.disk_of[n.0];
        scenario
            .hosts
            .get(disk)
            .map_or(Duration::ZERO, |h| h.write_time)
    };
    // Since when each writer has run without interruption.
    let mut up_since: BTreeMap<NodeId, Timestamp> = BTreeMap::new();
    for r in trace.records().filter(|r| r.level == Level::Decision) {
        match (r.kind, r.node) {
            (engine::START | engine::RESTART | engine::RESUME, Some(n)) => {
                up_since.insert(n, r.t);
            }
            (
                engine::KILL | engine::STOP | engine::CRASH | engine::PAUSE | kind::LOOP_DIED,
                Some(n),
            ) => {
                up_since.remove(&n);
            }
            (engine::POWER_LOSS, None) => {
                let Some(h) = scenario
                    .hosts
                    .iter()
                    .position(|h| Some(h.name.as_str()) == r.msg.as_deref())
                else {
                    continue;
                };
                for (i, node) in scenario.nodes.iter().enumerate() {
                    let n = NodeId(i);
                    if node.host == Some(h) {
                        up_since.remove(&n);
                    } else if setup.disk_of[i] == h && up_since.contains_key(&n) {
                        // Its disk lost power under it: healthy again from now.
                        up_since.insert(n, r.t);
                    }
                }
            }
            (kind::DEAD | kind::FIRED, Some(reader)) => {
                let (max_age_s, disk, path) = match &setup.roles[reader.0] {
                    Role::Monitor(m) => (m.max_age_s, setup.disk_of[reader.0], &m.state_file),
                    Role::StateWatchdog(w) => (w.max_age_s, setup.disk_of[reader.0], &w.state_file),
                    _ => continue,
                };
                for (&w, &since) in &up_since {
                    let Role::Writer(spec) = &setup.roles[w.0] else {
                        continue;
                    };
                    if setup.disk_of[w.0] != disk || spec.state_file.as_ref() != Some(path) {
                        continue;
                    }
                    let (i, wt) = (spec.interval.as_us(), write_time(w).as_us());
                    #[allow(clippy::cast_precision_loss)]
                    let bound_s = (i + 2 * wt) as f64 / 1e6;
                    let settled = since.as_us() + 2 * i + 2 * wt <= r.t.as_us();
                    if max_age_s >= bound_s && settled {
                        let name = |n: NodeId| scenario.nodes[n.0].name.as_str();
                        return Some(Violation {
                            invariant: HEALTHY_WRITER_NEVER_DEAD,
                            message: format!(
                                "at {} {} said {} ({}) of {path}, whose writer {} has beaten every {} since {since} (max_age {max_age_s} s)",
                                r.t,
                                name(reader),
                                r.kind,
                                r.reason.as_deref().unwrap_or(""),
                                name(w),
                                spec.interval,
                            ),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    None
}

fn reads_see_the_latest_beat(
    setup: &Setup,
    scenario: &Scenario,
    trace: &Trace,
) -> Option<Violation> {
    // Temp names in use per disk, by the state files that use them.
    let mut temps: BTreeMap<(usize, String), Vec<&str>> = BTreeMap::new();
    for i in 0..setup.roles.len() {
        if let (Role::Writer(_), Some((disk, path))) = (&setup.roles[i], file_of(setup, NodeId(i)))
        {
            let users = temps.entry((disk, temp_path(path))).or_default();
            if !users.contains(&path) {
                users.push(path);
            }
        }
    }
    let clashing = |disk: usize, path: &str| {
        temps
            .get(&(disk, temp_path(path)))
            .is_some_and(|users| users.len() > 1)
    };
    let mut latest: BTreeMap<(usize, &str), String> = BTreeMap::new();
    for r in trace.records().filter(|r| r.level == Level::Decision) {
        let Some(node) = r.node else { continue };
        let Some((disk, path)) = file_of(setup, node) else {
            continue;
        };
        if clashing(disk, path) {
            continue;
        }
        let msg = r.msg.as_deref().unwrap_or("");
        match r.kind {
            kind::BEAT | kind::BEAT_LANDED_AFTER_STOP => {
                latest.insert((disk, path), msg.to_string());
            }
            kind::ALIVE | kind::DEAD | kind::FIRED | kind::REARMED => {
                let Some(ts) = msg.strip_prefix("ts ").and_then(|m| m.split(' ').next()) else {
                    continue;
                };
                let want = latest.get(&(disk, path));
                if want.map(String::as_str) != Some(ts) {
                    let name = &scenario.nodes[node.0].name;
                    return Some(Violation {
                        invariant: READS_SEE_THE_LATEST_BEAT,
                        message: format!(
                            "at {} {name} read {path} with timestamp {ts}, but the latest completed beat wrote {}",
                            r.t,
                            want.map_or("nothing", String::as_str)
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    None
}
