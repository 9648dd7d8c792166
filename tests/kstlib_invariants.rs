//! kstlib's invariants flag the traces they exist to catch: a real run
//! passes, and the same trace with one record taken away (the one that
//! made the verdict legitimate) fails.

use std::path::Path;

use heartsim::models::ALL;
use heartsim::run::{run, violations};
use heartsim::scenario::Scenario;
use heartsim_sim::trace::{Level, Record, Trace};

/// A writer (interval 10 s) and a monitor (max_age 12 s) on one host,
/// the writer paused from 40 s to 70 s.
fn scenario() -> Scenario {
    let text = r#"
version = 1
[scenario]
name = "invariant check"
model = "kstlib"
profile = "kstlib-threaded"
duration = "2m"
invariants = ["reads-see-the-latest-beat", "healthy-writer-never-dead"]
[[host]]
name = "box"
[[node]]
name = "w"
kind = "writer"
host = "box"
state_file = "/run/bot.heartbeat"
[[node]]
name = "m"
kind = "monitor"
host = "box"
state_file = "/run/bot.heartbeat"
max_age = 12
[[fault]]
at = "40s"
kind = "pause"
node = "w"
[[fault]]
at = "70s"
kind = "resume"
node = "w"
"#;
    Scenario::parse(ALL, Path::new("invariant.toml"), text).expect("valid scenario")
}

/// The trace without the records `drop` picks.
fn without(scenario: &Scenario, trace: &Trace, drop: impl Fn(&Record) -> bool) -> Trace {
    let names = scenario.nodes.iter().map(|n| n.name.clone()).collect();
    let mut out = Trace::new(names, Level::Decision);
    for r in trace.records().filter(|r| !drop(r)) {
        out.push(r.clone());
    }
    out
}

fn messages(s: &Scenario, t: &Trace) -> Vec<String> {
    violations(s, t)
        .into_iter()
        .map(|v| v.to_string())
        .collect()
}

#[test]
fn the_real_run_keeps_both() {
    let s = scenario();
    let t = run(&s, None, Level::Decision).expect("runs").trace;
    // The pause makes the monitor say dead (the file goes 12 s stale).
    assert!(t
        .records()
        .any(|r| r.kind == "dead" && r.reason.as_deref() == Some("stale")));
    assert_eq!(messages(&s, &t), Vec::<String>::new());
}

#[test]
fn a_dead_verdict_without_the_pause_breaks_healthy_writer_never_dead() {
    let s = scenario();
    let t = run(&s, None, Level::Decision).expect("runs").trace;
    let t = without(&s, &t, |r| r.kind == "pause" || r.kind == "resume");
    let got = messages(&s, &t);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("healthy-writer-never-dead"), "{got:?}");
    assert!(got[0].contains("m said dead (stale)"), "{got:?}");
}

#[test]
fn a_read_of_a_beat_never_recorded_breaks_reads_see_the_latest_beat() {
    let s = scenario();
    let t = run(&s, None, Level::Decision).expect("runs").trace;
    // The beat the monitor's first `alive` read.
    let first_alive = t
        .records()
        .find(|r| r.kind == "alive")
        .and_then(|r| r.msg.clone())
        .expect("an alive verdict");
    let t = without(&s, &t, |r| {
        r.kind == "beat" && r.msg.as_deref().is_some_and(|m| first_alive.contains(m))
    });
    let got = messages(&s, &t);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("reads-see-the-latest-beat"), "{got:?}");
    assert!(
        got[0].contains("latest completed beat wrote nothing"),
        "{got:?}"
    );
}
