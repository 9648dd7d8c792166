//! The fuzzer on decnet: generated cases are valid and round-trip, cover
//! impostors, malformed bodies and good beats, a budget finds nothing,
//! and each security invariant flags the trace it exists to catch.
//!
//! `PROPTEST_CASES` sets the budget (default 64).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use heartsim::fuzz::{build, case_strategy, fuzz, to_toml, FuzzConfig, GenOptions};
use heartsim::models::decnet::invariants::{check, MALFORMED_BODY_422, PINNED_CERT_OR_NOTHING};
use heartsim::models::decnet::{Setup, MODEL};
use heartsim::models::ALL;
use heartsim::run::run;
use heartsim::scenario::{Scenario, ScenarioFile};
use heartsim_sim::trace::{Level, Record, Trace};
use heartsim_sim::{NodeId, Timestamp};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

fn out_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

#[test]
fn generated_cases_are_valid_round_trip_and_cover_every_answer() {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[5; 32]),
    );
    let strategy = case_strategy(&GenOptions::new(MODEL));
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..120 {
        let case = strategy.new_tree(&mut runner).expect("a case").current();
        let text = to_toml(&build(&case));
        let scenario = match Scenario::parse(ALL, Path::new("generated.toml"), &text) {
            Ok(s) => s,
            Err(e) => panic!("case {i} is invalid:\n{e}\n{text}"),
        };
        let back: ScenarioFile = toml::from_str(&text).expect("parses as a file");
        assert_eq!(to_toml(&back), text, "case {i} round-trips");
        if i % 2 == 0 {
            let trace = run(&scenario, None, Level::Decision).expect("runs").trace;
            for r in trace.decisions() {
                if r.kind == "heartbeat" || r.kind == "beat-failed" {
                    seen.insert(
                        r.reason
                            .as_deref()
                            .unwrap_or("")
                            .split(' ')
                            .next()
                            .unwrap_or("")
                            .to_string(),
                    );
                }
            }
        }
    }
    for want in ["204", "403", "404", "422", "SSLError"] {
        assert!(seen.contains(want), "no {want} in {seen:?}");
    }
}

#[test]
fn a_budget_finds_nothing() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let config = FuzzConfig {
        cases,
        seed: 2026112712,
        check_determinism: true,
        out_dir: out_dir("decnet-fuzz"),
        ..FuzzConfig::new(MODEL)
    };
    if let Err(failure) = fuzz(&config, |_, _| {}) {
        panic!("{failure}");
    }
}

fn setup() -> Scenario {
    let text = r#"
version = 1
[scenario]
name = "judge"
model = "decnet"
profile = "decnet-1.0.0"
duration = "1m"
invariants = ["pinned-cert-or-nothing", "malformed-body-422"]
[[node]]
name = "m"
kind = "swarmctl"
[[node]]
name = "a1"
kind = "agent"
[[node]]
name = "bad"
kind = "agent"
body = "no-status"
"#;
    Scenario::parse(ALL, Path::new("judge.toml"), text).expect("valid")
}

fn rec(
    node: usize,
    kind: &'static str,
    peer: Option<usize>,
    reason: &'static str,
    msg: &'static str,
) -> Record {
    Record {
        t: Timestamp::ZERO,
        node: Some(NodeId(node)),
        kind,
        peer: peer.map(NodeId),
        reason: Some(Cow::Borrowed(reason)),
        msg: Some(Cow::Borrowed(msg)),
        level: Level::Decision,
    }
}

fn flagged(records: Vec<Record>) -> Vec<&'static str> {
    let s = setup();
    let mut t = Trace::new(vec!["m".into(), "a1".into(), "bad".into()], Level::Decision);
    for r in records {
        t.push(r);
    }
    check(s.setup::<Setup>().expect("decnet"), &t)
        .into_iter()
        .map(|v| v.invariant)
        .collect()
}

#[test]
fn each_invariant_flags_its_trace() {
    // The pinned certificate: nothing flagged.
    assert!(flagged(vec![
        rec(0, "heartbeat", Some(1), "204", "host_uuid=a1 cert a1"),
        rec(0, "host-row", Some(1), "active", "uuid=a1"),
    ])
    .is_empty());
    // 204 with another CA-signed certificate.
    assert_eq!(
        flagged(vec![rec(
            0,
            "heartbeat",
            Some(1),
            "204",
            "host_uuid=a1 cert a2"
        )]),
        [PINNED_CERT_OR_NOTHING]
    );
    // A row changed after a 403.
    assert_eq!(
        flagged(vec![
            rec(
                0,
                "heartbeat",
                Some(1),
                "403 cert fingerprint mismatch",
                "host_uuid=a1 cert a2"
            ),
            rec(0, "host-row", Some(1), "active", "uuid=a1"),
        ]),
        [PINNED_CERT_OR_NOTHING]
    );
    // A malformed body answered other than 422.
    assert_eq!(
        flagged(vec![rec(
            0,
            "heartbeat",
            Some(2),
            "404 unknown host",
            "host_uuid=bad cert bad"
        )]),
        [MALFORMED_BODY_422]
    );
}
