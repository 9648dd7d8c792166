//! The fuzzer's JoinMarket nodes: the directory as the hub, and peers of
//! every kind and behaviour around it (docs/fuzzing.md). The fault episodes
//! are the fuzzer's own.
//!
//! The draws, and their order, are those the committed proptest regression
//! seeds were found with: change them and those seeds replay other cases.

use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;

use super::setup::{ConfigSection, NodeKeys};
use crate::scenario::{NodeSection, S};

fn sp<T>(v: T) -> S<T> {
    S::new(0..0, v)
}

fn secs(s: u32) -> String {
    format!("{s}s")
}

fn section(name: String, kind: &str, start: Option<String>, keys: &NodeKeys) -> NodeSection {
    NodeSection {
        name: sp(name),
        kind: sp(kind.to_string()),
        count: None,
        start: start.map(sp),
        clock_drift_ppm: None,
        keys: toml::Table::try_from(keys).expect("node keys are a TOML table"),
    }
}

/// The directory, `dir`.
pub fn hub() -> NodeSection {
    section("dir".to_string(), "directory", None, &NodeKeys::default())
}

/// A peer `p<1..=999>`: maker or taker, mostly ping-capable, mostly
/// responsive (silent 2 in 9, chatty 1 in 9), sometimes PINGing the
/// directory, mostly reconnecting after an eviction, mostly there from the
/// start.
pub fn peer() -> BoxedStrategy<NodeSection> {
    (
        (
            1u16..=999,
            any::<bool>(),
            prop::bool::weighted(0.8),
            0u8..9,
            5u32..=600,
            any::<bool>(),
        ),
        (
            prop::option::weighted(0.15, 1u32..=120),
            prop::option::weighted(0.6, 1u32..=120),
            prop_oneof![4 => Just(0u32), 1 => 0u32..=300],
            prop::bool::weighted(0.7),
        ),
    )
        .prop_map(
            |(
                (name_id, maker, ping, behaviour, chat_every_s, chat_malformed),
                (ping_directory_every_s, reconnect_after_s, start_s, nick_auth),
            )| {
                let behaviour = match behaviour {
                    0..=5 => None,
                    6 | 7 => Some("silent"),
                    _ => Some("chatty"),
                };
                let chatty = behaviour == Some("chatty");
                let keys = NodeKeys {
                    ping,
                    nick_auth,
                    behaviour: behaviour.map(|b| sp(b.to_string())),
                    chat_every: chatty.then(|| sp(secs(chat_every_s))),
                    chat_line: (chatty && chat_malformed).then(|| sp("malformed".to_string())),
                    ping_directory_every: ping_directory_every_s.map(|s| sp(secs(s))),
                    reconnect_after: reconnect_after_s.map(|s| sp(secs(s))),
                    location: None,
                };
                let kind = if maker { "maker" } else { "taker" };
                let start = (start_s > 0).then(|| secs(start_s));
                section(format!("p{name_id}"), kind, start, &keys)
            },
        )
        .boxed()
}

/// Heartbeat timers. Hard eviction comes after two full probe rounds, as
/// with the upstream defaults, so that a prompt peer is always probed first.
pub fn config() -> BoxedStrategy<toml::Table> {
    let nick_auth = prop_oneof![
        6 => Just(None),
        2 => Just(Some("prefer_verified")),
        1 => Just(Some("require_verified")),
    ];
    (
        (10u32..=120, 30u32..=900, 5u32..=60, 0u32..=600),
        (nick_auth, 1u32..=30),
    )
        .prop_map(
            |((sweep_s, idle_s, pong_s, hard_extra_s), (nick_auth, auth_s))| {
                let hard = idle_s + 2 * (sweep_s + pong_s) + 1 + hard_extra_s;
                let config = ConfigSection {
                    sweep_interval: Some(sp(secs(sweep_s))),
                    idle_threshold: Some(sp(secs(idle_s))),
                    hard_evict: Some(sp(secs(hard))),
                    pong_wait: Some(sp(secs(pong_s))),
                    nick_auth: nick_auth.map(|m| sp(m.to_string())),
                    nick_auth_timeout: nick_auth.map(|_| sp(secs(auth_s))),
                    broadcasts: None,
                };
                toml::Table::try_from(&config).expect("timers are a TOML table")
            },
        )
        .boxed()
}
