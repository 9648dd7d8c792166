//! The fuzzer on kstlib: generated cases are valid, round-trip, put their
//! nodes on hosts that share the writer's disk (so readers read what the
//! writer writes), and a budget over both profiles finds nothing.
//!
//! `PROPTEST_CASES` sets the budget (default 32 per profile: long
//! polling runs are slow in debug builds).

use std::path::{Path, PathBuf};

use heartsim::fuzz::{build, case_strategy, fuzz, to_toml, FuzzConfig, GenOptions};
use heartsim::models::kstlib::{Profile, MODEL};
use heartsim::models::ALL;
use heartsim::run::run;
use heartsim::scenario::{Scenario, ScenarioFile};
use heartsim_sim::trace::Level;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

fn runner(seed: u8) -> TestRunner {
    TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    )
}

#[test]
fn generated_cases_are_valid_round_trip_and_read_the_writers_file() {
    let mut runner = runner(3);
    let strategy = case_strategy(&GenOptions::new(MODEL));
    let (mut alive, mut power_losses, mut checked) = (0, 0, 0);
    for i in 0..150 {
        let case = strategy.new_tree(&mut runner).expect("a case").current();
        let file = build(&case);
        let text = to_toml(&file);
        let scenario = match Scenario::parse(ALL, Path::new("generated.toml"), &text) {
            Ok(s) => s,
            Err(e) => panic!("case {i} is invalid:\n{e}\n{text}"),
        };
        assert_eq!(scenario.hosts.len(), scenario.nodes.len(), "one host each");
        let back: ScenarioFile = toml::from_str(&text).expect("parses as a file");
        assert_eq!(to_toml(&back), text, "case {i} round-trips");
        if i % 5 == 0 {
            checked += 1;
            let trace = run(&scenario, None, Level::Decision).expect("runs").trace;
            alive += usize::from(
                trace
                    .records()
                    .any(|r| r.kind == "alive" || r.kind == "rearmed"),
            );
            power_losses += usize::from(trace.records().any(|r| r.kind == "power-loss"));
        }
    }
    assert!(
        alive * 10 >= checked * 9,
        "readers see the writer's file: {alive} of {checked}"
    );
    assert!(
        power_losses > 0,
        "crash episodes are power losses of a host"
    );
}

fn budget() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

#[test]
fn both_profiles_keep_every_invariant() {
    for profile in Profile::ALL {
        let config = FuzzConfig {
            gen: GenOptions {
                profile: Some(profile.name()),
                ..GenOptions::new(MODEL)
            },
            cases: budget(),
            seed: 13,
            check_determinism: true,
            out_dir: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kstlib-fuzz"),
            ..FuzzConfig::new(MODEL)
        };
        if let Err(failure) = fuzz(&config, |_, _| {}) {
            panic!("{failure}");
        }
    }
}
