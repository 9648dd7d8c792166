//! The fuzzer on lilbee: generated cases are valid, round-trip and reach
//! the pool's decisions (reaps, crashes, degraded roles, ping timeouts,
//! full executors, silent deaths, resets, streams, clean exits), and a
//! budget over the profile finds nothing.
//!
//! `PROPTEST_CASES` sets the budget (default 64).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use heartsim::fuzz::{build, case_strategy, fuzz, to_toml, FuzzConfig, GenOptions};
use heartsim::models::lilbee::{Profile, MODEL};
use heartsim::models::ALL;
use heartsim::run::run;
use heartsim::scenario::{Scenario, ScenarioFile};
use heartsim_sim::trace::Level;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

#[test]
fn generated_cases_are_valid_round_trip_and_reach_every_decision() {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = case_strategy(&GenOptions::new(MODEL));
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for i in 0..200 {
        let case = strategy.new_tree(&mut runner).expect("a case").current();
        let text = to_toml(&build(&case));
        let scenario = match Scenario::parse(ALL, Path::new("generated.toml"), &text) {
            Ok(s) => s,
            Err(e) => panic!("case {i} is invalid:\n{e}\n{text}"),
        };
        let back: ScenarioFile = toml::from_str(&text).expect("parses as a file");
        assert_eq!(to_toml(&back), text, "case {i} round-trips");
        let trace = run(&scenario, None, Level::Decision).expect("runs").trace;
        let mut blocked = false;
        for r in trace.decisions() {
            // A clean exit that waited for a thread, then terminated.
            blocked =
                (blocked || r.kind == "exit-blocked") && !matches!(r.kind, "start" | "restart");
            if blocked && r.kind == "atexit-terminate" {
                seen.insert("atexit-terminate after exit-blocked".into());
            }
            seen.insert(match r.reason.as_deref() {
                Some(why) if r.kind.ends_with("failed") || r.kind == "spawn-worker" => {
                    format!("{} {why}", r.kind)
                }
                _ => r.kind.to_string(),
            });
        }
    }
    for want in [
        "reap",
        "crash-recorded",
        "degraded",
        "ping-failed TimeoutError",
        "ping-failed WorkerCrashError",
        "call-failed RoleDegradedError",
        "call-failed TimeoutError",
        "spawn-worker process dead",
        "executor-full",
        "terminate",
        "shutdown",
        "loop-stopped",
        "reset-failures",
        "stream-ok",
        "stream-failed WorkerCrashError",
        "atexit-terminate",
        "exit-blocked",
        "atexit-terminate after exit-blocked",
    ] {
        assert!(seen.contains(want), "no case reached {want:?}: {seen:#?}");
    }
}

#[test]
fn the_profile_keeps_every_invariant() {
    let budget = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    for profile in Profile::ALL {
        let config = FuzzConfig {
            gen: GenOptions {
                profile: Some(profile.name()),
                ..GenOptions::new(MODEL)
            },
            cases: budget,
            seed: 16,
            check_determinism: true,
            out_dir: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lilbee-fuzz"),
            ..FuzzConfig::new(MODEL)
        };
        if let Err(failure) = fuzz(&config, |_, _| {}) {
            panic!("{failure}");
        }
    }
}
