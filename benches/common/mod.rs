//! The benchmark workload, shared by `directory` and `engines`.

use std::path::Path;

use heartsim::models::ALL;
use heartsim::scenario::Scenario;

/// A quarter each: responsive ping makers, responsive non-ping makers
/// (answer !orderbook), responsive ping takers, and silent ping makers that
/// reconnect 30 s after each eviction. Without joinmarket-ng's departure
/// broadcasts and PUBMSG relays (`broadcasts = false`): those are O(peers)
/// writes each, and measured apart (`docs/performance.md`).
pub fn scenario(peers: usize) -> Scenario {
    let q = peers / 4;
    let toml = format!(
        r#"version = 1
[scenario]
name = "bench {peers} peers"
model = "joinmarket-directory"
profile = "joinmarket-ng"
seed = 1
duration = "24h"
[config]
broadcasts = false
[network]
latency = "50ms..150ms"
drop = "1/100"
[[node]]
name = "dir"
kind = "directory"
[[node]]
name = "pm"
kind = "maker"
ping = true
count = {q}
[[node]]
name = "om"
kind = "maker"
count = {q}
[[node]]
name = "pt"
kind = "taker"
ping = true
count = {q}
[[node]]
name = "sm"
kind = "maker"
ping = true
behaviour = "silent"
reconnect_after = "30s"
count = {q}
"#
    );
    Scenario::parse(ALL, Path::new("bench.toml"), &toml).expect("bench scenario is valid")
}
