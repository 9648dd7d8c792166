//! The fuzzer: generated scenarios are valid and round-trip through TOML; a
//! small budget over the current profiles finds nothing; the eb812d4c
//! reconnect mis-eviction is found from a fixed seed, shrunk to at most 3
//! nodes, and its printed replay command reproduces it.
//!
//! `PROPTEST_CASES` sets the budget of `current_profiles_keep_every_invariant`
//! (default 256 per profile).

use std::path::{Path, PathBuf};
use std::process::Command;

use heartsim::fuzz::{
    build, case_strategy, emit, fuzz, to_toml, FaultKind, FuzzConfig, GenOptions,
};
use heartsim::jobs::Shard;
use heartsim::models::joinmarket::{Profile, MODEL};
use heartsim::models::ALL;
use heartsim::scenario::{Scenario, ScenarioFile};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

fn runner(seed: u8) -> TestRunner {
    TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    )
}

fn out_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

#[test]
fn ten_thousand_generated_scenarios_are_valid_and_round_trip() {
    let mut runner = runner(1);
    let strategy = case_strategy(&GenOptions::new(MODEL));
    let mut faults = 0;
    for i in 0..10_000 {
        let case = strategy.new_tree(&mut runner).expect("a case").current();
        let file = build(&case);
        let text = to_toml(&file);
        if let Err(e) = Scenario::parse(ALL, Path::new("generated.toml"), &text) {
            panic!("case {i} is invalid:\n{e}\n{text}");
        }
        faults += file.faults.len();
        // Round trip: what the parser reads back writes out the same text.
        if i % 10 == 0 {
            let back: ScenarioFile = toml::from_str(&text).expect("parses as a file");
            assert_eq!(to_toml(&back), text, "case {i} round-trips");
        }
    }
    assert!(faults > 10_000, "the generator makes faults ({faults})");
}

/// Stalling cases of a stream model sometimes stand for full buffers (a
/// small `[tcp] unread_limit`), so that blocked writes get fuzzed; others
/// never carry the key.
#[test]
fn stalling_cases_sometimes_have_full_buffers() {
    let mut runner = runner(3);
    let strategy = case_strategy(&GenOptions::new(MODEL));
    let (mut full, mut stalling) = (0, 0);
    for _ in 0..2_000 {
        let case = strategy.new_tree(&mut runner).expect("a case").current();
        let file = build(&case);
        let stalls = file.faults.iter().any(|f| f.kind.get_ref() == "stall");
        let limit = file.tcp.as_ref().and_then(|t| t.unread_limit.as_ref());
        if let Some(limit) = limit {
            assert!(case.swarm.contains(&FaultKind::Stall), "{limit:?}");
            full += usize::from(stalls);
        }
        stalling += usize::from(stalls);
    }
    assert!(
        stalling > 100 && full * 4 > stalling && full * 4 < 3 * stalling,
        "{full} of {stalling}"
    );
}

#[test]
fn swarm_cases_use_only_their_chosen_fault_kinds() {
    let mut runner = runner(2);
    let opts = GenOptions {
        faults: vec![FaultKind::Pause, FaultKind::Break],
        ..GenOptions::new(MODEL)
    };
    let strategy = case_strategy(&opts);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..500 {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        assert!(case.swarm.iter().all(|k| opts.faults.contains(k)));
        for f in build(&case).faults {
            seen.insert(f.kind.into_inner());
        }
    }
    let kinds: Vec<&str> = seen.iter().map(String::as_str).collect();
    assert_eq!(kinds, ["break", "pause", "repair", "resume"]);
}

fn budget() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

#[test]
fn current_profiles_keep_every_invariant() {
    for profile in [Profile::JoinmarketNg, Profile::JoinmarketRs] {
        let config = FuzzConfig {
            gen: GenOptions {
                profile: Some(profile.name()),
                ..GenOptions::new(MODEL)
            },
            cases: budget(),
            seed: 11,
            check_determinism: true,
            out_dir: out_dir("fuzz-current"),
            // A failure found here is replayed first from now on (commit it).
            regressions: Some(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("proptest-regressions/fuzz.txt"),
            ),
            ..FuzzConfig::new(MODEL)
        };
        if let Err(failure) = fuzz(&config, |_, _| {}) {
            panic!("{failure}");
        }
    }
}

/// Host crashes and process kills, the faults whose connection endings
/// (silence then RST, FIN at once) the stream medium exists for. Seed 11 is
/// the one that, before streams, shrank to a restarted peer whose new
/// connection was closed by a FIN sent on its dead one.
#[test]
fn crash_and_kill_campaigns_find_nothing_on_current_profiles() {
    for profile in [Profile::JoinmarketNg, Profile::JoinmarketRs] {
        let config = FuzzConfig {
            gen: GenOptions {
                profile: Some(profile.name()),
                faults: vec![
                    FaultKind::CrashRestart,
                    FaultKind::KillRestart,
                    FaultKind::Partition,
                ],
                ..GenOptions::new(MODEL)
            },
            cases: budget(),
            seed: 11,
            out_dir: out_dir("fuzz-crash-kill"),
            ..FuzzConfig::new(MODEL)
        };
        if let Err(failure) = fuzz(&config, |_, _| {}) {
            panic!("{failure}");
        }
    }
}

/// Only graceful stop/start faults: the one way to break the invariant is a
/// peer that reconnects while its PING is in flight.
fn reconnect_config(profile: Profile, dir: &str) -> FuzzConfig {
    FuzzConfig {
        gen: GenOptions {
            profile: Some(profile.name()),
            faults: vec![FaultKind::StopStart],
            ..GenOptions::new(MODEL)
        },
        cases: 2_000,
        // Finds it within the budget (about one case in a thousand or two
        // hits the window; seed 8 finds it; rerecord the regression file below
        // if the generator changes: `heartsim fuzz --profile
        // joinmarket-ng-eb812d4c --faults stop --cases 2000 --seed 8
        // --regressions <file>`).
        seed: 8,
        out_dir: out_dir(dir),
        ..FuzzConfig::new(MODEL)
    }
}

#[test]
fn eb812d4c_reconnect_mis_eviction_is_found_shrunk_and_replayable() {
    let dir = out_dir("fuzz-eb812d4c");
    let _ = std::fs::remove_dir_all(&dir);
    let failure = fuzz(
        &reconnect_config(Profile::JoinmarketNgEb812d4c, "fuzz-eb812d4c"),
        |_, _| {},
    )
    .expect_err("eb812d4c mis-evicts a reconnected peer");
    let message = failure.to_string();
    assert!(message.contains("healthy-peer-never-evicted"), "{message}");
    assert!(message.contains("pong timeout"), "{message}");
    assert!(
        failure.nodes <= 3,
        "shrunk to {} nodes:\n{message}",
        failure.nodes
    );

    // The message carries the seed and one command that reproduces it.
    assert!(
        message.contains(&format!("scenario seed {}", failure.scenario_seed)),
        "{message}"
    );
    let replay = message
        .lines()
        .find_map(|l| l.trim().strip_prefix("replay: cargo run -- "))
        .expect("a replay line");
    let args: Vec<&str> = replay.split_whitespace().collect();
    let out = Command::new(env!("CARGO_BIN_EXE_heartsim"))
        .args(&args)
        .output()
        .expect("heartsim runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  invariant healthy-peer-never-evicted"),
        "{stdout}"
    );
}

/// The committed regression file of the reconnect campaign: proptest tries
/// its seeds before any new case.
fn eb812d4c_regressions() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("proptest-regressions/eb812d4c-reconnect.txt")
}

#[test]
fn eb812d4c_regression_seed_replays_the_failure_before_any_new_case() {
    // One new case cannot find it (the fresh search needs hundreds): the
    // failure comes from the committed seed.
    let config = FuzzConfig {
        cases: 1,
        regressions: Some(eb812d4c_regressions()),
        ..reconnect_config(Profile::JoinmarketNgEb812d4c, "fuzz-eb812d4c-regression")
    };
    let before = std::fs::read_to_string(eb812d4c_regressions()).expect("committed");
    assert!(before.lines().any(|l| l.starts_with("cc ")), "{before}");
    let failure = fuzz(&config, |_, _| {}).expect_err("the committed seed fails");
    assert!(failure.to_string().contains("healthy-peer-never-evicted"));
    let fresh = FuzzConfig {
        cases: 1,
        ..reconnect_config(Profile::JoinmarketNgEb812d4c, "fuzz-eb812d4c-fresh")
    };
    assert!(
        fuzz(&fresh, |_, _| {}).is_ok(),
        "one fresh case finds nothing"
    );
}

#[test]
fn the_same_budget_finds_nothing_in_joinmarket_ng_head() {
    let config = reconnect_config(Profile::JoinmarketNg, "fuzz-head");
    if let Err(failure) = fuzz(&config, |_, _| {}) {
        panic!("HEAD keys pending by connection; yet:\n{failure}");
    }
}

/// `--jobs` and `--shard`: the failure reported is the first in case
/// order, whatever the threads' timing, and it is the one proptest's own
/// sequential runner finds from the same seed (the cases are proptest's
/// chain of seeds, generated in order).
#[test]
fn one_and_two_jobs_report_the_first_failing_case_as_proptest_alone_does() {
    use heartsim::fuzz::{check_file, scenario_strategy};
    use proptest::test_runner::{TestCaseError, TestError};

    let base = reconnect_config(Profile::JoinmarketNgEb812d4c, "fuzz-jobs");
    // proptest alone, as `fuzz` ran before `--jobs`.
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&base.seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: base.cases,
            failure_persistence: None,
            max_shrink_iters: base.max_shrink_iters,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    let calls = std::sync::atomic::AtomicU32::new(0);
    let first_failing = std::sync::atomic::AtomicU32::new(0);
    let count = |failed: bool| {
        use std::sync::atomic::Ordering::SeqCst;
        let n = calls.fetch_add(1, SeqCst) + 1;
        if failed && first_failing.load(SeqCst) == 0 {
            first_failing.store(n, SeqCst);
        }
    };
    let alone = match runner.run(&scenario_strategy(&base.gen), |file| {
        let outcome = check_file(MODEL, &file, false);
        count(outcome.is_err());
        outcome.map_err(|f| TestCaseError::fail(f.to_string()))
    }) {
        Err(TestError::Fail(_, minimal)) => to_toml(&minimal),
        other => panic!("proptest alone finds it: {other:?}"),
    };
    let alone_case = first_failing.load(std::sync::atomic::Ordering::SeqCst);
    assert!(alone_case > 1, "found at case {alone_case}");
    let mut texts = Vec::new();
    for jobs in [1, 2] {
        let dir = out_dir(&format!("fuzz-jobs-{jobs}"));
        let _ = std::fs::remove_dir_all(&dir);
        let config = FuzzConfig {
            jobs,
            out_dir: dir,
            ..reconnect_config(Profile::JoinmarketNgEb812d4c, "unused")
        };
        let found_at = std::sync::atomic::AtomicU32::new(0);
        let failure = fuzz(&config, |n, failed| {
            if failed && jobs == 1 && found_at.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                found_at.store(n, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .expect_err("found with any job count");
        if jobs == 1 {
            // Case for case the chain proptest alone runs.
            assert_eq!(found_at.into_inner(), alone_case);
        }
        texts.push((
            failure.failure.clone(),
            failure.scenario_seed,
            std::fs::read_to_string(&failure.path).expect("written"),
        ));
    }
    assert_eq!(texts[0], texts[1], "1 and 2 jobs differ");
    assert_eq!(texts[0].2, alone, "not proptest's own first failure");

    // Two shards of a clean campaign run every case once between them.
    let clean = |shard| FuzzConfig {
        cases: 40,
        jobs: 2,
        shard,
        ..reconnect_config(Profile::JoinmarketNg, "fuzz-shards")
    };
    let a = fuzz(&clean(Shard { index: 0, count: 2 }), |_, _| {}).expect("clean");
    let b = fuzz(&clean(Shard { index: 1, count: 2 }), |_, _| {}).expect("clean");
    assert_eq!((a.cases, b.cases), (20, 20));
}

/// `heartsim fuzz --emit`: a campaign's cases as valid scenario files named
/// by case number; a shard writes the same files for its cases.
#[test]
fn emitted_cases_are_valid_files_and_a_shard_writes_its_own_the_same() {
    let mut config = FuzzConfig::new(heartsim::models::kstlib::MODEL);
    config.cases = 6;
    config.seed = 2026112720;
    let (all_dir, half_dir) = (out_dir("emit-all"), out_dir("emit-half"));
    let _ = std::fs::remove_dir_all(&all_dir);
    let _ = std::fs::remove_dir_all(&half_dir);
    let all = emit(&config, &all_dir).expect("emitted");
    assert_eq!(all.len(), 6);
    for (k, path) in all.iter().enumerate() {
        assert!(path.ends_with(format!("kstlib-2026112720-{k}.toml")));
        let text = std::fs::read_to_string(path).expect("written");
        if let Err(e) = Scenario::parse(ALL, path, &text) {
            panic!("case {k} is invalid:\n{e}\n{text}");
        }
    }
    config.shard = "1/2".parse().expect("a shard");
    let half = emit(&config, &half_dir).expect("emitted");
    assert_eq!(half.len(), 3);
    for (a, b) in all[3..].iter().zip(&half) {
        assert_eq!(a.file_name(), b.file_name());
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    }
}
