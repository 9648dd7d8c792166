//! The fuzzer's nodes: the swarm controller as the hub; in 3 cases in 4
//! the master host's other processes beside it (the main API with its
//! panel and probe polls and operator actions, the bus, and agents on the
//! master's host beating on that bus); and agents or impostors of every
//! identity and body shape on hosts of their own.
//!
//! Names the other keys rely on: the hub `m`; the companions `api`,
//! `bus`, `h1`, `h2` (all on the `[[host]]` `master`, which the API and
//! swarmctl share for the database and the bus is local to); generated
//! agents `a` (the first keeps it, so that `host_uuid = "a"` names it),
//! impostors `i`. Operator actions name hosts by uuid only, and nodes only
//! among the companions, so every case and every shrink of one is valid.

use proptest::prelude::*;

use super::setup::{ActionKeys, ConfigSection, NodeKeys, TopologyKeys};
use super::Shape;
use crate::scenario::{HostSection, NodeSection, S};

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

/// The master's `[[host]]`.
const MASTER_HOST: &str = "master";
/// The companions' names (the home agents' are the last two).
const COMPANIONS: [&str; 4] = ["api", "bus", "h1", "h2"];

/// The swarm controller, `m`.
pub fn hub() -> NodeSection {
    section("m", "swarmctl", &NodeKeys::default())
}

/// The master's host for the hub and the companions; every other node has
/// a host of its own (none declared).
pub fn host(node: &str, hub: &str) -> Option<HostSection> {
    (node == hub || COMPANIONS.contains(&node)).then(|| HostSection {
        name: sp(MASTER_HOST.into()),
        clock_offset: None,
        clock_drift_ppm: None,
        durability: None,
        write_time: None,
        disk_of: None,
    })
}

fn secs(s: u64) -> S<String> {
    sp(format!("{s}s"))
}

/// What an agent reports and how its operations go: deployed deckies (one
/// running, one degraded), an applied topology matching the master's
/// `t1`, another hash or none, a body build time, operations of the
/// default minute, of a second to ten minutes or over the sweep's hour,
/// failing or not.
fn agent_keys() -> impl Strategy<Value = NodeKeys> {
    (
        any::<bool>(),
        any::<bool>(),
        0usize..3,
        0u64..3,
        // The default (1 m, succeeding) in 1 case in 3, which keeps the
        // case's agents runnable by the oracle (tests/oracle/decnet_runner.py
        // runs no operations).
        prop_oneof![
            1 => Just(None),
            1 => (1u64..=600).prop_map(Some),
            1 => (3_601u64..=6_000).prop_map(Some),
        ],
        any::<bool>(),
    )
        .prop_map(
            |(deployed, degraded, topology, tick, op_s, fails)| NodeKeys {
                tick_time: (tick > 0).then(|| sp(format!("{}ms", tick * 100))),
                deployed: deployed.then(|| sp(true)),
                deckies: if deployed {
                    vec![sp("d".into())]
                } else {
                    Vec::new()
                },
                degraded: if deployed && degraded {
                    vec![sp("e".into())]
                } else {
                    Vec::new()
                },
                topology: [None, Some("t1:v1"), Some("t1:v0")][topology].map(|t| sp(t.into())),
                operation_time: op_s.map(secs),
                operation_error: (op_s.is_some() && fails)
                    .then(|| sp("docker compose up failed".into())),
                ..NodeKeys::default()
            },
        )
}

/// One operator action at 1 s to 70 min (most in the first 10 min, so that
/// rows opened early can be swept by a restart over an hour later), on a
/// generated agent's uuid, a home agent's, or an unknown one.
fn action(homes: usize) -> impl Strategy<Value = ActionKeys> {
    (
        prop_oneof![3 => 1u64..=600, 1 => 601u64..=4_200],
        0usize..4,
        0usize..5,
        0usize..2,
        0usize..3,
        any::<bool>(),
    )
        .prop_map(move |(at, what, target, decky, cert, address)| {
            // Home agents only if the case has them.
            let uuids = ["a", "ax", "h1", "h2", "ghost"];
            let pick = |i: usize| {
                let u = uuids[i];
                match u {
                    "h1" if homes < 1 => "a",
                    "h2" if homes < 2 => "ax",
                    _ => u,
                }
            };
            let uuid = pick(target);
            let action = ["deploy", "mutate", "decommission", "enrol"][what];
            let enrol = action == "enrol";
            ActionKeys {
                at: secs(at),
                action: sp(action.into()),
                // A re-enrolment takes a new uuid; the name may still be
                // enrolled (409).
                host_uuid: sp(if enrol {
                    format!("{uuid}-new")
                } else {
                    uuid.into()
                }),
                name: enrol.then(|| sp(uuid.into())),
                // The host's own certificate, a fresh one its agent does
                // not present, or `h1`'s.
                certificate: enrol.then(|| sp([uuid, "fresh", "h1"][cert].into())),
                node: (enrol && address && uuid.starts_with('h')).then(|| sp(uuid.into())),
                decky: (!enrol && action != "decommission").then(|| sp(["d", "e"][decky].into())),
            }
        })
}

/// The master host's other processes, in 3 cases in 4: the main API
/// (polling the panel and the probe, or not, with 0..6 operator actions),
/// the bus (started up to a minute late, now and then) or not, and 0..2
/// agents on the master's host (on its bus).
pub fn companions() -> BoxedStrategy<Vec<NodeSection>> {
    let with = (any::<bool>(), 0usize..=2).prop_flat_map(|(bus, homes)| {
        (
            // The bus daemon's unit may come up after the others: their
            // `bus.connect()` fails (`bus unavailable`).
            prop::option::weighted(0.2, 1u64..=60),
            prop::collection::vec(agent_keys(), homes..=homes),
            prop::option::weighted(0.75, 5u64..=120),
            prop::option::weighted(0.75, 10u64..=300),
            prop::collection::vec(action(homes), 0..=6),
        )
            .prop_map(move |(late, homes, panel, probe, mut actions)| {
                // Each enrol mints a uuid of its own (upstream's `uuid4`;
                // the scenario refuses a reused one): number them.
                let enrols = actions.iter_mut().filter(|a| a.action.get_ref() == "enrol");
                for (i, a) in enrols.enumerate().skip(1) {
                    a.host_uuid = sp(format!("{}{}", a.host_uuid.get_ref(), i + 1));
                }
                let api = NodeKeys {
                    panel_every: panel.map(secs),
                    probe_every: probe.map(secs),
                    actions,
                    ..NodeKeys::default()
                };
                let mut nodes = vec![section("api", "api", &api)];
                if bus {
                    let mut daemon = section("bus", "bus", &NodeKeys::default());
                    daemon.start = late.map(secs);
                    nodes.push(daemon);
                }
                for (keys, name) in homes.into_iter().zip(&COMPANIONS[2..]) {
                    let keys = NodeKeys {
                        bus: bus.then(|| sp("bus".into())),
                        ..keys
                    };
                    nodes.push(section(name, "agent", &keys));
                }
                nodes
            })
    });
    prop_oneof![1 => Just(Vec::new()), 3 => with].boxed()
}

/// `[config]`: the active topology `t1` pinned to the first agent or a
/// home agent (hash `v1`), or none.
pub fn config() -> BoxedStrategy<toml::Table> {
    prop::option::of(prop::sample::select(vec!["a", "h1"]))
        .prop_map(|host| {
            let c = ConfigSection {
                topologies: host
                    .map(|h| TopologyKeys {
                        id: sp("t1".into()),
                        host_uuid: sp(h.into()),
                        hash: sp("v1".into()),
                    })
                    .into_iter()
                    .collect(),
            };
            toml::Table::try_from(&c).expect("config is a TOML table")
        })
        .boxed()
}

/// Mostly upstream's agent, enrolled with its own certificate (3 in 5),
/// else an agent or impostor of any identity (often claiming the first
/// agent's uuid) and body shape, an impostor beating every 5..60 s, now
/// and then an agent without identity or TLS context.
pub fn node() -> BoxedStrategy<NodeSection> {
    let good = agent_keys().prop_map(|keys| section("a", "agent", &keys));
    let hostile = (
        any::<bool>(),
        0usize..4,
        // Half of them well formed, so the identity checks run.
        prop_oneof![Just(0usize), 0usize..Shape::ALL.len()],
        any::<bool>(),
        0usize..3,
        5u64..=60,
        0usize..10,
    )
        .prop_map(
            |(impostor, cert, shape, enrolled, claim, interval, start)| {
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
                    // Now and then an agent whose loop never starts.
                    identity: (!impostor && start == 0).then(|| sp(false)),
                    tls: (!impostor && start == 1).then(|| sp(false)),
                    ..NodeKeys::default()
                };
                let kind = if impostor { "impostor" } else { "agent" };
                section(if impostor { "i" } else { "a" }, kind, &keys)
            },
        );
    prop_oneof![3 => good, 2 => hostile].boxed()
}
