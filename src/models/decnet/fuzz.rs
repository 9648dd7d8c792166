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

/// An agent (enrolled or not, its own or another certificate, any body)
/// or an impostor beating every 5..60 s.
pub fn node() -> BoxedStrategy<NodeSection> {
    (
        any::<bool>(),
        0usize..4,
        0usize..Shape::ALL.len(),
        any::<bool>(),
        0usize..3,
        5u64..=60,
        0u64..3,
    )
        .prop_map(|(impostor, cert, shape, enrolled, uuid, interval, tick)| {
            let certificate = ["own", "none", "untrusted", "stolen"][cert];
            let body = Shape::ALL[shape].0;
            let keys = NodeKeys {
                certificate: (certificate != "own").then(|| sp(certificate.into())),
                body: (body != "upstream").then(|| sp(body.into())),
                enrolled: (enrolled == impostor).then(|| sp(enrolled)),
                host_uuid: (uuid == 1).then(|| sp("ghost".into())),
                interval: impostor.then(|| sp(format!("{interval}s"))),
                tick_time: (tick > 0).then(|| sp(format!("{}ms", tick * 100))),
                deployed: (!impostor && uuid == 2).then(|| sp(true)),
                deckies: if !impostor && uuid == 2 {
                    vec![sp("d".into())]
                } else {
                    Vec::new()
                },
                ..NodeKeys::default()
            };
            section(
                if impostor { "i" } else { "a" },
                if impostor { "impostor" } else { "agent" },
                &keys,
            )
        })
        .boxed()
}
