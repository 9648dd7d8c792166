//! `[[host]]` tables: machines whose processes (nodes that name one with
//! `host = "..."`) share a clock and a disk (docs/scenario-format.md,
//! "Hosts and the filesystem"), checked into [`HostDef`]s and the engine's
//! [`Disks`].

use std::collections::BTreeMap;

use heartsim_sim::clock::{Clock, MAX_DRIFT_PPM};
use heartsim_sim::fs::{Disks, Durability};
use heartsim_sim::Duration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    name_problem, vocabulary, Context, NodeDef, ScenarioError, MAX_HOSTS, MAX_WRITE_TIME, S,
};

/// A `[[host]]` table: a machine whose processes (the nodes that name it
/// with `host = "..."`) share its clock and its disk.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostSection {
    /// Unique among hosts; nodes name it with `host = "..."`.
    pub name: S<String>,
    /// Its wall clock's offset from true time, like "+2m" or "-5s".
    pub clock_offset: Option<S<String>>,
    /// Its monotonic clock's drift, within ±500000 ppm.
    pub clock_drift_ppm: Option<S<i64>>,
    /// What a power loss keeps of un-fsynced data: "auto_da_alloc"
    /// (ext4's default, rename-over flushes) or "noauto_da_alloc".
    pub durability: Option<S<String>>,
    /// How long every write takes on its disk, like "250ms" (default "0s");
    /// a `slow-disk` fault changes it.
    pub write_time: Option<S<String>>,
    /// Its processes see this other host's disk (a network mount) instead
    /// of its own.
    pub disk_of: Option<S<String>>,
}

/// A `[[host]]` after validation.
#[derive(Debug, Clone)]
pub struct HostDef {
    pub name: String,
    pub clock: Clock,
    pub durability: Durability,
    pub write_time: Duration,
    /// The host whose disk it mounts, if any (an index into the hosts).
    pub disk_of: Option<usize>,
}

/// The key of a `[[node]]` that puts it on a `[[host]]`.
pub(super) const HOST_KEY: &str = "host";

/// The `[[host]]`s, for faults.
pub(super) struct Hosted<'a> {
    pub(super) ids: &'a BTreeMap<String, usize>,
    pub(super) defs: &'a [HostDef],
}

/// The index of the `[[host]]` `name` names.
pub(super) fn host_index(
    ctx: &Context<'_>,
    ids: &BTreeMap<String, usize>,
    name: &S<String>,
) -> Result<usize, ScenarioError> {
    match ids.get(name.get_ref()) {
        Some(i) => Ok(*i),
        None if ids.is_empty() => ctx.err(
            name.span(),
            format!(
                "unknown host {:?}: the file declares no [[host]]",
                name.get_ref()
            ),
        ),
        None => ctx.err(
            name.span(),
            format!(
                "unknown host {:?}: expected one of the [[host]] names{}",
                name.get_ref(),
                vocabulary::did_you_mean(name.get_ref(), ids.keys().map(String::as_str))
            ),
        ),
    }
}

/// The `[[host]]`s, checked, and their indexes by name.
pub(super) fn check(
    sections: &[HostSection],
    ctx: &Context<'_>,
) -> Result<(Vec<HostDef>, BTreeMap<String, usize>), ScenarioError> {
    if let Some(h) = sections.get(MAX_HOSTS) {
        return ctx.err(
            h.name.span(),
            format!("more than {MAX_HOSTS} [[host]] tables (MAX_HOSTS)"),
        );
    }
    let mut defs = Vec::new();
    let mut ids = BTreeMap::new();
    for h in sections {
        let name = h.name.get_ref();
        if let Some(problem) = name_problem(name, false) {
            return ctx.err(h.name.span(), problem.replace("node", "host"));
        }
        if ids.insert(name.clone(), defs.len()).is_some() {
            return ctx.err(h.name.span(), format!("duplicate host name {name:?}"));
        }
        let offset = match &h.clock_offset {
            None => 0,
            Some(o) => {
                let us = ctx.signed(o, "clock_offset")?;
                // Simulated wall clocks start at the epoch and cannot read
                // before it: a host behind would read the epoch until true
                // time caught up, which no real clock does.
                if us < 0 {
                    return ctx.err(
                        o.span(),
                        "clock_offset must not be negative (wall clocks start at the epoch): to put this host behind, put the others ahead",
                    );
                }
                us
            }
        };
        let drift = h.clock_drift_ppm.as_ref().map_or(0, |p| *p.get_ref());
        let Some(clock) = Clock::new(drift, offset) else {
            let span = h
                .clock_drift_ppm
                .as_ref()
                .map_or(h.name.span(), |p| p.span());
            return ctx.err(
                span,
                format!("clock_drift_ppm must be within ±{MAX_DRIFT_PPM}"),
            );
        };
        let durability = match &h.durability {
            None => Durability::default(),
            Some(d) => match Durability::parse(d.get_ref()) {
                Some(d) => d,
                None => {
                    return ctx.err(
                        d.span(),
                        format!(
                            "unknown durability {:?}: expected \"auto_da_alloc\" or \"noauto_da_alloc\"",
                            d.get_ref()
                        ),
                    )
                }
            },
        };
        let write_time = match &h.write_time {
            None => Duration::ZERO,
            Some(w) => {
                let d = ctx.duration(w, "write_time")?;
                if d > MAX_WRITE_TIME {
                    return ctx.err(w.span(), "write_time: at most 24h");
                }
                d
            }
        };
        defs.push(HostDef {
            name: name.clone(),
            clock,
            durability,
            write_time,
            disk_of: None,
        });
    }
    // Mounts, once every name is known: one level (the owner mounts
    // nothing).
    for (i, h) in sections.iter().enumerate() {
        let Some(owner) = &h.disk_of else { continue };
        let o = host_index(ctx, &ids, owner)?;
        if o == i || sections[o].disk_of.is_some() {
            return ctx.err(
                owner.span(),
                "disk_of: name another host, one that uses its own disk",
            );
        }
        defs[i].disk_of = Some(o);
    }
    Ok((defs, ids))
}

/// Every host's disk: the `[[host]]`s first, then one of its own for
/// each node without a host.
pub(super) fn disks(hosts: &[HostDef], nodes: &[NodeDef]) -> Disks {
    let mut durability: Vec<Durability> = hosts.iter().map(|h| h.durability).collect();
    let host_of = nodes
        .iter()
        .map(|n| match n.host {
            Some(h) => h,
            None => {
                durability.push(Durability::default());
                durability.len() - 1
            }
        })
        .collect();
    let mut disks = Disks::new(host_of, durability);
    for (i, h) in hosts.iter().enumerate() {
        // A host's own `write_time`, before any mount (a mounting host
        // writes at its owner's speed).
        disks = disks.with_write_time(i, h.write_time);
    }
    for (i, h) in hosts.iter().enumerate() {
        if let Some(owner) = h.disk_of {
            disks.mount(i, owner);
        }
    }
    disks
}
