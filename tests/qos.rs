//! `heartsim run --qos` over the shipped scenarios: the truth derived from
//! each scenario matches its trace's fault records, and the measures agree
//! with what the scenario shows.

use std::path::{Path, PathBuf};

use heartsim::models::ALL;
use heartsim::qos;
use heartsim::run::run;
use heartsim::scenario::{model, Scenario};
use heartsim::sim::trace::Level;
use heartsim::sim::Duration;

fn scenarios() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    for dir in std::fs::read_dir(root).expect("scenarios/") {
        let dir = dir.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).expect("a model's folder") {
            let f = f.expect("entry").path();
            if f.extension().is_some_and(|e| e == "toml") {
                out.push(f);
            }
        }
    }
    out.sort();
    out
}

fn report(path: &Path) -> (Scenario, qos::Report) {
    let scenario = Scenario::load(ALL, path).expect("valid");
    let m = model::find(ALL, scenario.model).expect("registered");
    let out = run(&scenario, None, Level::Decision).expect("runs");
    let report =
        qos::of_run(m, &scenario, &out.trace).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (scenario, report)
}

/// The engine applies faults in the order `qos::Truth` assumes, in every
/// scenario: no mismatch, and every verdict pair measured.
#[test]
fn every_scenario_has_a_truth_that_matches_its_trace() {
    let files = scenarios();
    assert!(files.len() > 30, "only {} files", files.len());
    let mut pairs = 0;
    for path in &files {
        let (_, r) = report(path);
        pairs += r.pairs.len();
        let sum: u64 = r.pairs.iter().map(|p| p.qos.mistakes).sum();
        assert_eq!(sum, r.all.mistakes, "{}", path.display());
    }
    assert!(pairs > 50, "only {pairs} pairs measured");
}

/// `killed-peer-seen-at-once-crashed-peer-only-by-pong-timeout-ng`: both
/// go down at 5:00; the killed peer's FIN is read at 5:00.050, the crashed
/// one is evicted by the pong timeout at 11:30. Neither is a mistake.
#[test]
fn a_killed_peer_is_detected_at_once_a_crashed_one_by_pong_timeout() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "scenarios/joinmarket/killed-peer-seen-at-once-crashed-peer-only-by-pong-timeout-ng.toml",
    );
    let (scenario, r) = report(&path);
    let detection = |n: &str| {
        let id = scenario.node_id(n).expect("a node");
        let q = &r.pairs.iter().find(|p| p.node == id).expect("measured").qos;
        (q.detection.count, q.detection.mean())
    };
    assert_eq!(detection("alice"), (1, Some(Duration::from_ms(50))));
    assert_eq!(detection("bob"), (1, Some(Duration::from_secs(390))));
    assert_eq!((r.all.mistakes, r.all.missed), (0, 0));
    // Both trusted from 0.200 until they went down at 5:00.
    assert_eq!(r.all.trusted, Duration::from_ms(2 * 299_800));
    assert_eq!(r.all.query_accuracy(), Some(1.0));
}

const KILLED: &str =
    "scenarios/joinmarket/killed-peer-seen-at-once-crashed-peer-only-by-pong-timeout-ng.toml";

fn cli(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_heartsim"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("the CLI runs");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `--qos` adds the table after the run's lines, and changes nothing else.
#[test]
fn run_qos_prints_a_table_and_leaves_the_rest_alone() {
    let plain = cli(&["run", "--decisions", KILLED]);
    let with = cli(&["run", "--decisions", "--qos", KILLED]);
    let (head, table) = with.split_at(plain.len());
    assert_eq!(head, plain);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 5, "{table}");
    assert!(
        rows[0].starts_with("  qos (Chen, Toueg, Aguilera 2002"),
        "{table}"
    );
    assert!(rows[1].split_whitespace().eq([
        "monitor",
        "node",
        "T_D",
        "mean",
        "T_D",
        "max",
        "missed",
        "mistakes",
        "unreach",
        "T_MR",
        "T_M",
        "T_G",
        "P_A",
        "mistakes/h",
        "evictions/h"
    ]));
    let cells = |i: usize| rows[i].split_whitespace().collect::<Vec<_>>();
    assert_eq!(
        cells(2),
        [
            "dir",
            "alice",
            "0:00:00.050",
            "0:00:00.050",
            "0",
            "0",
            "0",
            "-",
            "-",
            "-",
            "1.000000",
            "0.000",
            "4.000"
        ]
    );
    assert_eq!(cells(3)[..4], ["dir", "bob", "0:06:30.000", "0:06:30.000"]);
    // Together: two evictions in a quarter of an hour.
    assert_eq!(cells(4)[0], "all");
    assert_eq!(cells(4).last(), Some(&"8.000"));
}

/// With `--format jsonl`, one summary line follows the trace's records.
#[test]
fn run_qos_jsonl_appends_one_summary_line() {
    let plain = cli(&["run", "--format", "jsonl", KILLED]);
    let with = cli(&["run", "--format", "jsonl", "--qos", KILLED]);
    let (head, last) = with.split_at(plain.len());
    assert_eq!(head, plain);
    assert_eq!(last.lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(last).expect("json");
    assert_eq!(v["kind"], "qos");
    assert_eq!(v["node"], "net");
    assert_eq!(v["t_us"], 900_000_000u64);
    let pairs = v["qos"]["pairs"].as_array().expect("pairs");
    assert_eq!(pairs.len(), 2);
    assert_eq!(pairs[0]["monitor"], "dir");
    assert_eq!(pairs[0]["node"], "alice");
    assert_eq!(pairs[0]["detection_mean_us"], 50_000);
    assert_eq!(pairs[1]["detection_mean_us"], 390_000_000);
    assert_eq!(v["qos"]["all"]["detections"], 2);
    assert_eq!(v["qos"]["all"]["query_accuracy"], 1.0);
    assert_eq!(
        v["qos"]["all"]["mistake_recurrence_mean_us"],
        serde_json::Value::Null
    );
    assert_eq!(v["qos"]["all"]["evictions_per_hour"], 8.0);
}

/// The worked example of docs/qos.md, every metric computed by hand in the
/// scenario's comments and the docs.
#[test]
fn the_worked_example_has_the_hand_computed_metrics() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios/nfd-s/worked-example-mistakes-detections-and-a-missed-crash.toml");
    let (_, r) = report(&path);
    assert_eq!(r.pairs.len(), 1);
    let q = &r.pairs[0].qos;
    let ms = Duration::from_ms;
    // Crash at 45.050 suspected at 46.300; stop at 55.500 at 56.300.
    assert_eq!(q.detection.count, 2);
    assert_eq!(q.detection.mean(), Some(ms(1_025)));
    assert_eq!(q.detection.max, Some(ms(1_250)));
    // The kill at 40.050, restarted at 40.200, was never suspected.
    assert_eq!((q.missed, q.undetected_at_end), (1, 0));
    // 10.300 (partitioned), 20.300 (heartbeat lost), 30.300 (paused).
    assert_eq!((q.mistakes, q.mistakes_unreachable), (3, 2));
    assert_eq!(q.mistake_duration.mean(), Some(ms(1_300)));
    assert_eq!(q.recurrence.mean(), Some(ms(10_000)));
    // 0 -> 10.300, 11.100 -> 20.300, 21.100 -> 30.300.
    assert_eq!(q.good_period.mean(), Some(Duration::from_us(9_566_666)));
    // Up 0..40.050, 40.200..45.050, 50..55.500: 50.4 s; suspected in it
    // 0.8 + 0.8 + 2.3 (mistakes) + 1.1 (after the restart at 50).
    assert_eq!((q.observed, q.trusted), (ms(50_400), ms(45_400)));
    assert_eq!(q.unreachable, ms(3_600));
    assert_eq!(q.query_accuracy(), Some(45.4 / 50.4));
    assert_eq!(q.mistake_rate_per_hour(), Some(3.0 * 3600.0 / 50.4));
    assert_eq!(q.evictions_per_hour(), Some(300.0));
}

/// Generated cases, with every fault kind the fuzzer draws (restarts of
/// paused nodes, stalls, one-way partitions, ...): the truth matches every
/// trace, and the measures are consistent with one another.
#[test]
fn generated_cases_have_a_truth_and_consistent_measures() {
    use heartsim::fuzz::{build, case_strategy, to_toml, GenOptions};
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    let mut measured = 0;
    for model in ALL {
        for (i, profile) in model.profiles().iter().enumerate() {
            let mut runner = TestRunner::new_with_rng(
                Config::default(),
                TestRng::from_seed(RngAlgorithm::ChaCha, &[i as u8 + 41; 32]),
            );
            let opts = GenOptions {
                profile: Some(profile.name),
                ..GenOptions::new(*model)
            };
            let strategy = case_strategy(&opts);
            for case in 0..40 {
                let file = build(&strategy.new_tree(&mut runner).expect("a case").current());
                let text = to_toml(&file);
                let scenario =
                    Scenario::parse(ALL, Path::new("generated.toml"), &text).expect("valid");
                let out = run(&scenario, None, Level::Decision).expect("within limits");
                let r = qos::of_run(*model, &scenario, &out.trace)
                    .unwrap_or_else(|e| panic!("{} case {case}: {e}\n{text}", profile.name));
                for p in &r.pairs {
                    let q = &p.qos;
                    let what = format!("{} case {case}, {:?}:\n{text}", profile.name, p.node);
                    assert!(q.trusted <= q.observed, "{what}");
                    assert!(q.mistakes_unreachable <= q.mistakes, "{what}");
                    assert!(q.mistakes <= q.suspicions, "{what}");
                    assert!(q.mistake_duration.count <= q.mistakes, "{what}");
                    assert!(q.recurrence.count < q.mistakes.max(1), "{what}");
                    assert!(q.good_period.count <= q.mistakes, "{what}");
                    assert!(q.undetected_at_end <= q.missed, "{what}");
                    assert!(q.observed <= q.run && q.unreachable <= q.run, "{what}");
                    measured += 1;
                }
            }
        }
    }
    assert!(measured > 200, "only {measured} pairs measured");
}

/// kstlib through the same seam: the monitor's `dead`/`alive` are verdicts
/// about the writer of its file. The threaded writer's first beat comes
/// one interval in, so the monitor's `dead` at 0 ("no state file") is a
/// mistake that lasts until the `alive` at 10 s; the writer killed at 45 s
/// is detected at 71 s (T_D 26 s).
#[test]
fn a_kstlib_monitor_is_a_detector_of_its_writer() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios/kstlib/killed-writer-declared-dead-at-the-exact-poll-threaded.toml");
    let (scenario, r) = report(&path);
    let (m, w) = (scenario.node_id("m"), scenario.node_id("w"));
    let pair = r
        .pairs
        .iter()
        .find(|p| Some(p.monitor) == m && Some(p.node) == w)
        .expect("the monitor judges the writer");
    assert_eq!(pair.qos.detection.count, 1);
    assert_eq!(pair.qos.detection.mean(), Some(Duration::from_secs(26)));
    assert_eq!(pair.qos.mistakes, 1);
    assert_eq!(
        pair.qos.mistake_duration.mean(),
        Some(Duration::from_secs(10))
    );
}
