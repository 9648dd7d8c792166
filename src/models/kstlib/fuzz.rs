//! The fuzzer's nodes: a writer hub and readers of its state file.

use proptest::prelude::*;

use super::setup::NodeKeys;
use crate::scenario::{HostSection, NodeSection, S};

fn sp<T>(v: T) -> S<T> {
    S::new(0..0, v)
}

const STATE_FILE: &str = "/run/kstlib/bot.heartbeat";

fn section(name: String, kind: &str, keys: &NodeKeys) -> NodeSection {
    NodeSection {
        name: sp(name),
        kind: sp(kind.to_string()),
        count: None,
        start: None,
        clock_drift_ppm: None,
        keys: toml::Table::try_from(keys).expect("node keys are a TOML table"),
    }
}

/// The writer, `w`.
pub fn hub() -> NodeSection {
    section(
        "w".into(),
        "writer",
        &NodeKeys {
            state_file: Some(sp(STATE_FILE.into())),
            ..NodeKeys::default()
        },
    )
}

/// A monitor or a state-file watchdog of the hub's file.
pub fn node() -> BoxedStrategy<NodeSection> {
    (any::<bool>(), 1u64..=5, 2u64..=90)
        .prop_map(|(monitor, poll_s, max_age_s)| {
            let keys = NodeKeys {
                state_file: Some(sp(STATE_FILE.into())),
                #[allow(clippy::cast_precision_loss)]
                max_age: Some(sp(super::setup::Seconds::Int(max_age_s as i64))),
                poll_every: monitor.then(|| sp(format!("{poll_s}s"))),
                ..NodeKeys::default()
            };
            let kind = if monitor { "monitor" } else { "state-watchdog" };
            section("r".into(), kind, &keys)
        })
        .boxed()
}

/// The host of fuzz node `node`: the hub's owns the disk, with a durability
/// and a write time drawn from the case's seed; every other mounts it.
pub fn host(node: &str, hub: &str, seed: u64) -> HostSection {
    let name = format!("h-{node}");
    let owner = node == hub;
    HostSection {
        name: sp(name),
        clock_offset: None,
        clock_drift_ppm: None,
        durability: owner.then(|| {
            sp(if seed % 2 == 0 {
                "auto_da_alloc"
            } else {
                "noauto_da_alloc"
            }
            .to_string())
        }),
        write_time: owner.then(|| sp(["0s", "250ms", "2s"][(seed / 2 % 3) as usize].to_string())),
        disk_of: (!owner).then(|| sp(format!("h-{hub}"))),
    }
}
