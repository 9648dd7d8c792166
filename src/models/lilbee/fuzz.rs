//! The fuzzer's nodes: the pool (the hub) and roles of any behaviour and
//! workload.

use proptest::prelude::*;

use super::setup::{ConfigSection, NodeKeys};
use crate::scenario::{NodeSection, S};

fn sp<T>(v: T) -> S<T> {
    S::new(0..0, v)
}

fn section(name: &str, kind: &str, keys: &NodeKeys) -> NodeSection {
    NodeSection {
        name: sp(name.to_string()),
        kind: sp(kind.to_string()),
        count: None,
        start: None,
        clock_drift_ppm: None,
        keys: toml::Table::try_from(keys).expect("node keys are a TOML table"),
    }
}

/// The pool, `pool`.
pub fn hub() -> NodeSection {
    section("pool", "pool", &NodeKeys::default())
}

const BEHAVIOURS: [&str; 5] = [
    "healthy",
    "crash-on-call",
    "crash-on-ping",
    "die-after",
    "hang",
];

/// A role: a behaviour for some spawns, a spawn time, a work time, and
/// calls at a fixed rate over a stretch, plus a burst; a few streams, and
/// a few `reset_role_failures`.
pub fn node() -> BoxedStrategy<NodeSection> {
    (
        0..BEHAVIOURS.len(),
        prop::option::of(0i64..=6),
        1u64..=120,
        0u64..=12_000,
        0u64..=8_000,
        (1u64..=120, 0u64..=300, 0u64..=900),
        prop::collection::vec(0u64..=900, 0..=5),
        (
            prop::collection::vec(0u64..=900, 0..=3),
            0i64..=6,
            prop::collection::vec(0u64..=900, 0..=3),
        ),
    )
        .prop_map(
            |(
                b,
                bad_spawns,
                die_s,
                answer_ms,
                spawn_ms,
                (every_s, from_s, len_s),
                burst,
                (streams, chunks, resets),
            )| {
                let behaviour = BEHAVIOURS[b];
                let keys = NodeKeys {
                    behaviour: Some(sp(behaviour.to_string())),
                    bad_spawns: bad_spawns.map(sp),
                    die_after: (behaviour == "die-after").then(|| sp(format!("{die_s}s"))),
                    answer_delay: Some(sp(format!("{answer_ms}ms"))),
                    spawn_time: Some(sp(format!("{spawn_ms}ms"))),
                    call_at: Some(burst.into_iter().map(|t| sp(format!("{t}s"))).collect()),
                    call_every: Some(sp(format!("{every_s}s"))),
                    call_from: Some(sp(format!("{from_s}s"))),
                    call_until: Some(sp(format!("{}s", from_s + len_s))),
                    stream_at: Some(streams.into_iter().map(|t| sp(format!("{t}s"))).collect()),
                    stream_chunks: Some(sp(chunks)),
                    reset_failures_at: Some(
                        resets.into_iter().map(|t| sp(format!("{t}s"))).collect(),
                    ),
                };
                section("r", "role", &keys)
            },
        )
        .boxed()
}

/// `[config]`: reaping off or on, and the timers near upstream's.
pub fn config() -> BoxedStrategy<toml::Table> {
    (
        prop_oneof![Just(0.0), Just(300.0), 1.0f64..=200.0],
        10u64..=60,
        1u64..=10,
        5u64..=400,
        1u64..=10,
        prop::option::of(100u64..=1200),
    )
        .prop_map(|(idle, tick, health, call, shutdown, shutdown_at)| {
            let c = ConfigSection {
                max_idle_s: Some(sp((idle * 10.0).round() / 10.0)),
                tick_interval: Some(sp(format!("{tick}s"))),
                health_timeout: Some(sp(format!("{health}s"))),
                call_timeout: Some(sp(format!("{call}s"))),
                shutdown_timeout: Some(sp(format!("{shutdown}s"))),
                restart_budget: None,
                restart_window: None,
                shutdown_at: shutdown_at.map(|t| sp(format!("{t}s"))),
            };
            toml::Table::try_from(&c).expect("config is a TOML table")
        })
        .boxed()
}
