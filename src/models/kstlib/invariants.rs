//! Named properties of a kstlib run's decision records (docs/fuzzing.md,
//! "Add an invariant").

use std::collections::BTreeMap;

use heartsim_sim::trace::{Level, Trace};
use heartsim_sim::NodeId;

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

pub fn check(setup: &Setup, scenario: &Scenario, trace: &Trace) -> Vec<Violation> {
    let mut out = Vec::new();
    if setup.invariants.contains(&READS_SEE_THE_LATEST_BEAT) {
        out.extend(reads_see_the_latest_beat(setup, scenario, trace));
    }
    out
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
            kind::BEAT => {
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
