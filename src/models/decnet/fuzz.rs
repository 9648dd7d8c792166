//! The fuzzer's nodes: the swarm controller as the hub, and agents or
//! impostors of every identity and body shape.

use proptest::prelude::*;

use super::setup::NodeKeys;
use super::Shape;
use crate::scenario::{NodeSection, S};

fn sp<T>(v: T) -> S<T> {
    S::new(0..0, v)
}

fn section(name: &str, kind: &str, keys: &NodeKeys) -> NodeSection {
    NodeSection {
        name: sp(name.into()),
        kind: sp(kind.into()),
        count: None,
        start: None,
        clock_drift_ppm: None,
        keys: toml::Table::try_from(keys).expect("node keys are a TOML table"),
    }
}

/// The swarm controller, `m`.
pub fn hub() -> NodeSection {
    section("m", "swarmctl", &NodeKeys::default())
}

/// Mostly upstream's agent, enrolled with its own certificate (3 in 5,
/// some of them reporting deployed deckies), else an agent or impostor of
/// any identity (often claiming the first agent's uuid) and body shape,
/// an impostor beating every 5..60 s.
pub fn node() -> BoxedStrategy<NodeSection> {
    let good = (any::<bool>(), 0u64..3).prop_map(|(deployed, tick)| {
        let keys = NodeKeys {
            tick_time: (tick > 0).then(|| sp(format!("{}ms", tick * 100))),
            deployed: deployed.then(|| sp(true)),
            deckies: if deployed {
                vec![sp("d".into())]
            } else {
                Vec::new()
            },
            ..NodeKeys::default()
        };
        section("a", "agent", &keys)
    });
    let hostile = (
        any::<bool>(),
        0usize..4,
        // Half of them well formed, so the identity checks run.
        prop_oneof![Just(0usize), 0usize..Shape::ALL.len()],
        any::<bool>(),
        0usize..3,
        5u64..=60,
    )
        .prop_map(|(impostor, cert, shape, enrolled, claim, interval)| {
            let certificate = ["own", "none", "untrusted", "stolen"][cert];
            let body = Shape::ALL[shape].0;
            let keys = NodeKeys {
                certificate: (certificate != "own").then(|| sp(certificate.into())),
                body: (body != "upstream").then(|| sp(body.into())),
                enrolled: (enrolled == impostor).then(|| sp(enrolled)),
                // Its own name, an unknown uuid, or the first agent's
                // (the fuzzer keeps the first `a` as is).
                host_uuid: [None, Some("ghost"), Some("a")][claim].map(|u| sp(u.into())),
                interval: impostor.then(|| sp(format!("{interval}s"))),
                ..NodeKeys::default()
            };
            let kind = if impostor { "impostor" } else { "agent" };
            section(if impostor { "i" } else { "a" }, kind, &keys)
        });
    prop_oneof![3 => good, 2 => hostile].boxed()
}
