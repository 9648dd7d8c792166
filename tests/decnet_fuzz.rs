//! The fuzzer on decnet: generated cases are valid, round-trip and reach
//! every decision the model makes under every fault kind, a budget finds
//! nothing (with the determinism check), and each invariant flags the
//! trace it exists to catch.
//!
//! `PROPTEST_CASES` sets the budget (default 24: a few seconds).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use heartsim::fuzz::{build, case_strategy, fuzz, to_toml, FuzzConfig, GenOptions};
use heartsim::models::decnet::invariants::{
    check, DELTA_CLOSES_ITS_OWN_ATTEMPT, MALFORMED_BODY_422, ONLY_THE_PROBE_MARKS_UNREACHABLE,
    PANEL_FOLLOWS_THE_LAST_BUS_BEAT, PINNED_CERT_OR_NOTHING,
};
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

/// What a record says, as the reach check counts it: its kind, and its
/// reason's first word where the reason is the decision.
fn decision_key(node: &str, kind: &str, reason: Option<&str>, msg: Option<&str>) -> String {
    let reason = reason.unwrap_or("");
    let word = reason.split(' ').next().unwrap_or("");
    match kind {
        // Which path failed a row: a delta (swarmctl, `m`), the sweep or
        // a dispatch (the api).
        "lifecycle-row" if reason == "failed" => {
            if node == "m" {
                "lifecycle-row failed by a delta".into()
            } else if msg
                .unwrap_or("")
                .contains("master restarted during operation")
            {
                "lifecycle-row failed by the sweep".into()
            } else {
                "lifecycle-row failed".into()
            }
        }
        "worker-seen" | "operation-started" | "push-failed" => kind.into(),
        "operator" | "self-destruct" => format!("{kind} {reason}"),
        _ => format!("{kind} {word}"),
    }
}

fn ms(text: &str) -> u64 {
    match text.strip_suffix("ms") {
        Some(ms) => ms.parse().unwrap_or(0),
        None => text.trim_end_matches('s').parse::<u64>().unwrap_or(0) * 1000,
    }
}

/// Whether the case's api is killed or stopped (then started again) over
/// an hour after one of its deploys.
fn restarts_the_api_over_an_hour_after_a_deploy(file: &ScenarioFile) -> bool {
    let Some(api) = file.nodes.iter().find(|n| n.kind.get_ref() == "api") else {
        return false;
    };
    let deploys: Vec<u64> = api
        .keys
        .get("actions")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
        .filter(|a| a.get("action").and_then(|v| v.as_str()) != Some("enrol"))
        .filter_map(|a| a.get("at").and_then(|v| v.as_str()).map(ms))
        .collect();
    file.faults.iter().any(|f| {
        f.node.as_ref().map(|n| n.get_ref().as_str()) == Some("api")
            && ["kill", "stop"].contains(&f.kind.get_ref().as_str())
            && deploys.iter().any(|d| d + 3_600_000 < ms(f.at.get_ref()))
    })
}

#[test]
fn generated_cases_are_valid_round_trip_and_reach_every_decision() {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[5; 32]),
    );
    let strategy = case_strategy(&GenOptions::new(MODEL));
    let mut seen = std::collections::BTreeSet::new();
    let mut faults = std::collections::BTreeSet::new();
    let mut rare = 0;
    for i in 0..3000 {
        let case = strategy.new_tree(&mut runner).expect("a case").current();
        let file = build(&case);
        let text = to_toml(&file);
        let scenario = match Scenario::parse(ALL, Path::new("generated.toml"), &text) {
            Ok(s) => s,
            Err(e) => panic!("case {i} is invalid:\n{e}\n{text}"),
        };
        let back: ScenarioFile = toml::from_str(&text).expect("parses as a file");
        assert_eq!(to_toml(&back), text, "case {i} round-trips");
        for f in &file.faults {
            faults.insert(f.kind.get_ref().clone());
        }
        if !file.links.is_empty() {
            faults.insert("[[link]]".into());
        }
        // Run the first 80 cases, and of the rest those that restart the
        // api over an hour after a deploy (the sweep's only chance), a
        // few percent of them: the runs are what takes time.
        if i >= 80 {
            if rare == 25 || !restarts_the_api_over_an_hour_after_a_deploy(&file) {
                continue;
            }
            rare += 1;
        }
        let trace = run(&scenario, None, Level::Decision).expect("runs").trace;
        for r in trace.decisions() {
            seen.insert(decision_key(
                trace.node_name(r.node),
                r.kind,
                r.reason.as_deref(),
                r.msg.as_deref(),
            ));
        }
    }
    let want = [
        "heartbeat 204",
        "heartbeat 403",
        "heartbeat 404",
        "heartbeat 422",
        "beat 204",
        "beat-rejected 403",
        "beat-failed SSLError",
        "beat-failed ConnectError",
        "beat-failed ConnectTimeout",
        "beat-failed ReadTimeout",
        "not-started DECNET_HOST_UUID",
        "not-started worker",
        "host-row active",
        "host-row unreachable",
        "host-row enrolled",
        "host-row deleted",
        "lifecycle-row running",
        "lifecycle-row succeeded",
        "lifecycle-row failed by a delta",
        "lifecycle-row failed",
        "lifecycle-row failed by the sweep",
        "shard-row running",
        "shard-row degraded",
        "shard-row deleted",
        "resync needs_resync",
        "operation-started",
        "operation-done succeeded",
        "operation-done failed",
        "push 204",
        "push-failed",
        "worker-seen",
        "worker-status ok",
        "worker-status stale",
        "worker-status unknown",
        "probe ok",
        "probe TimeoutError",
        "probe ConnectionRefusedError",
        "probe FingerprintMismatchError",
        "bus unavailable",
        "bus lost",
        "operator decommission",
        "operator enrol",
        "operator enrol refused 409",
        "operator self-destruct failed",
        "self-destruct scheduled",
        "self-destruct stopped",
    ];
    let missing: Vec<_> = want.iter().filter(|w| !seen.contains(**w)).collect();
    assert!(
        missing.is_empty(),
        "no case reached {missing:?}; reached {seen:#?}"
    );
    for kind in [
        "crash",
        "kill",
        "stop",
        "start",
        "restart",
        "pause",
        "resume",
        "partition",
        "heal",
        "clock-jump",
        "clock-drift",
        "link",
        "[[link]]",
        "break",
        "repair",
        "stall",
        "release",
    ] {
        assert!(
            faults.contains(kind),
            "no case has a {kind} fault: {faults:?}"
        );
    }
}

#[test]
fn a_budget_finds_nothing() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
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
duration = "2m"
invariants = ["pinned-cert-or-nothing", "malformed-body-422", "panel-follows-the-last-bus-beat", "only-the-probe-marks-unreachable", "delta-closes-its-own-attempt"]
[[host]]
name = "master"
[[node]]
name = "m"
kind = "swarmctl"
host = "master"
[[node]]
name = "api"
kind = "api"
host = "master"
panel_every = "10s"
[[node]]
name = "b"
kind = "bus"
host = "master"
[[node]]
name = "a1"
kind = "agent"
host = "master"
bus = "b"
[[node]]
name = "bad"
kind = "agent"
body = "no-status"
"#;
    Scenario::parse(ALL, Path::new("judge.toml"), text).expect("valid")
}

const M: usize = 0;
const API: usize = 1;
const A1: usize = 3;
const BAD: usize = 4;

fn rec(
    at_ms: u64,
    node: usize,
    kind: &'static str,
    peer: Option<usize>,
    reason: &'static str,
    msg: &'static str,
) -> Record {
    Record {
        t: Timestamp::from_us(at_ms * 1000),
        node: Some(NodeId(node)),
        kind,
        peer: peer.map(NodeId),
        reason: (!reason.is_empty()).then_some(Cow::Borrowed(reason)),
        msg: (!msg.is_empty()).then_some(Cow::Borrowed(msg)),
        level: Level::Decision,
    }
}

fn flagged(records: Vec<Record>) -> Vec<&'static str> {
    let s = setup();
    let names = ["m", "api", "b", "a1", "bad"].map(String::from).to_vec();
    let mut t = Trace::new(names, Level::Decision);
    for r in records {
        t.push(r);
    }
    check(s.setup::<Setup>().expect("decnet"), &s, &t)
        .into_iter()
        .map(|v| v.invariant)
        .collect()
}

/// Something was flagged, and all of it by `invariant`.
fn only(found: Vec<&'static str>, invariant: &str) -> bool {
    !found.is_empty() && found.iter().all(|f| *f == invariant)
}

#[test]
fn the_security_invariants_flag_their_traces() {
    // The pinned certificate: nothing flagged.
    assert!(flagged(vec![
        rec(0, M, "heartbeat", Some(A1), "204", "host_uuid=a1 cert a1"),
        rec(0, M, "host-row", Some(A1), "active", "uuid=a1"),
    ])
    .is_empty());
    // 204 with another CA-signed certificate.
    assert_eq!(
        flagged(vec![rec(
            0,
            M,
            "heartbeat",
            Some(A1),
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
                M,
                "heartbeat",
                Some(A1),
                "403 cert fingerprint mismatch",
                "host_uuid=a1 cert a2"
            ),
            rec(0, M, "host-row", Some(A1), "active", "uuid=a1"),
        ]),
        [PINNED_CERT_OR_NOTHING]
    );
    // A malformed body answered other than 422.
    assert_eq!(
        flagged(vec![rec(
            0,
            M,
            "heartbeat",
            Some(BAD),
            "404 unknown host",
            "host_uuid=bad cert bad"
        )]),
        [MALFORMED_BODY_422]
    );
}

/// The api starts at 0 and polls every 10 s; a1's bus beats reach its
/// registry at 1 ms (ts 0) and never again: ok until the poll at 80 s
/// (80 s < 90 s), stale from the poll at 90 s (exactly 90 s is not < 90).
#[test]
fn the_panel_invariant_flags_a_wrong_late_or_missing_change() {
    let start = || rec(0, API, "start", None, "", "");
    let seen = || {
        rec(
            1,
            API,
            "worker-seen",
            Some(2),
            "",
            "worker=agent ts=0:00:00.000",
        )
    };
    let ok = || rec(10_000, API, "worker-status", None, "ok", "worker=agent");
    let stale = |at| rec(at, API, "worker-status", None, "stale", "worker=agent");
    // As upstream: nothing flagged.
    assert!(flagged(vec![start(), seen(), ok(), stale(90_000)]).is_empty());
    // Stale one poll late (at 90 s it still said ok).
    assert!(only(
        flagged(vec![start(), seen(), ok(), stale(100_000)]),
        PANEL_FOLLOWS_THE_LAST_BUS_BEAT
    ));
    // Stale one poll early (<= 90 s instead of < 90 s would do the other).
    assert!(only(
        flagged(vec![start(), seen(), ok(), stale(80_000)]),
        PANEL_FOLLOWS_THE_LAST_BUS_BEAT
    ));
    // Never stale: the polls from 90 s on should have shown it.
    assert!(only(
        flagged(vec![start(), seen(), ok()]),
        PANEL_FOLLOWS_THE_LAST_BUS_BEAT
    ));
    // `unknown` after a beat was taken, `ok` without one.
    assert!(only(
        flagged(vec![
            start(),
            seen(),
            rec(
                10_000,
                API,
                "worker-status",
                None,
                "unknown",
                "worker=agent"
            ),
            stale(90_000),
        ]),
        PANEL_FOLLOWS_THE_LAST_BUS_BEAT
    ));
    assert!(only(
        flagged(vec![start(), ok()]),
        PANEL_FOLLOWS_THE_LAST_BUS_BEAT
    ));
    // A change at no poll.
    assert!(only(
        flagged(vec![
            start(),
            seen(),
            rec(5_000, API, "worker-status", None, "ok", "worker=agent"),
            stale(90_000),
        ]),
        PANEL_FOLLOWS_THE_LAST_BUS_BEAT
    ));
}

#[test]
fn the_probe_invariant_flags_unreachable_without_a_failed_probe() {
    let failed = || rec(10_000, API, "probe", Some(A1), "TimeoutError", "uuid=a1");
    let down = || {
        rec(
            10_000,
            API,
            "host-row",
            Some(A1),
            "unreachable",
            "uuid=a1 name=a1",
        )
    };
    assert!(flagged(vec![failed(), down()]).is_empty());
    // No probe, an ok probe, or swarmctl marking it.
    assert_eq!(flagged(vec![down()]), [ONLY_THE_PROBE_MARKS_UNREACHABLE]);
    assert_eq!(
        flagged(vec![
            rec(10_000, API, "probe", Some(A1), "ok", "uuid=a1"),
            down()
        ]),
        [ONLY_THE_PROBE_MARKS_UNREACHABLE]
    );
    assert_eq!(
        flagged(vec![
            failed(),
            rec(
                10_000,
                M,
                "host-row",
                Some(A1),
                "unreachable",
                "uuid=a1 name=a1"
            )
        ]),
        [ONLY_THE_PROBE_MARKS_UNREACHABLE]
    );
    // The api writing `active` without a successful probe.
    assert_eq!(
        flagged(vec![
            failed(),
            rec(
                10_000,
                API,
                "host-row",
                Some(A1),
                "active",
                "uuid=a1 name=a1"
            )
        ]),
        [ONLY_THE_PROBE_MARKS_UNREACHABLE]
    );
}

/// Upstream breaks `delta-closes-its-own-attempt`: the stale-delta
/// scenario's first push closes the second attempt's row, and only that
/// record is flagged (the second push closing the older row is not).
#[test]
fn the_stale_delta_scenario_breaks_delta_closes_its_own_attempt() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios/decnet/stale-delta-closes-the-newer-attempts-row.toml");
    let text = std::fs::read_to_string(&path).expect("the scenario");
    let text = text.replace(
        r#"invariants = ["pinned-cert-or-nothing", "malformed-body-422"]"#,
        r#"invariants = ["delta-closes-its-own-attempt"]"#,
    );
    let scenario = Scenario::parse(ALL, &path, &text).expect("valid");
    let trace = run(&scenario, None, Level::Decision).expect("runs").trace;
    let found = check(
        scenario.setup::<Setup>().expect("decnet"),
        &scenario,
        &trace,
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].invariant, DELTA_CLOSES_ITS_OWN_ATTEMPT);
    assert!(
        found[0].message.starts_with("0:06:00.140"),
        "{}",
        found[0].message
    );
    // The same deploys without the second attempt: its own row, no flag.
    let once = text.replace(
        r#"  { at = "2m", action = "deploy", host_uuid = "a1", decky = "d1" },
"#,
        "",
    );
    assert_ne!(once, text);
    let scenario = Scenario::parse(ALL, &path, &once).expect("valid");
    let trace = run(&scenario, None, Level::Decision).expect("runs").trace;
    assert!(check(
        scenario.setup::<Setup>().expect("decnet"),
        &scenario,
        &trace
    )
    .is_empty());
}
