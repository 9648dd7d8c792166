//! lilbee's invariants flag the traces they exist to catch: a real run
//! keeps all five, and the same trace with one record taken away or
//! added (or judged against other settings) breaks exactly the one meant.

use std::path::Path;

use heartsim::models::lilbee::Setup;
use heartsim::models::ALL;
use heartsim::run::{run, violations};
use heartsim::scenario::Scenario;
use heartsim_sim::trace::{Level, Record, Trace};
use heartsim_sim::{Duration, Timestamp};

const ALL_FIVE: &str = "[\"degraded-role-never-respawns\", \"busy-worker-never-reaped\", \"crash-follows-a-death\", \"degraded-exactly-past-the-budget\", \"reaped-only-when-idle\"]";

fn scenario(config: &str, role: &str) -> Scenario {
    let text = format!(
        "version = 1\n[scenario]\nname = \"i\"\nmodel = \"lilbee\"\nprofile = \"lilbee-13277138\"\nseed = 1\nduration = \"200s\"\ninvariants = {ALL_FIVE}\n[config]\n{config}\n[[node]]\nname = \"pool\"\nkind = \"pool\"\n[[node]]\nname = \"embed\"\nkind = \"role\"\n{role}\n"
    );
    Scenario::parse(ALL, Path::new("i.toml"), &text).expect("valid scenario")
}

/// Four crashes in 16 s: degraded at 17 s; then a call at 20 s.
fn crashes() -> Scenario {
    scenario(
        "",
        "behaviour = \"crash-on-call\"\ncall_at = [\"1s\", \"5s\", \"10s\", \"15s\", \"20s\"]",
    )
}

/// A 100 s call, then idle: reaped at 150 s (max_idle 20 s).
fn long_call() -> Scenario {
    scenario(
        "max_idle_s = 20",
        "answer_delay = \"100s\"\ncall_at = [\"1s\"]",
    )
}

fn edited(trace: &Trace, drop: impl Fn(&Record) -> bool, add: Option<Record>) -> Trace {
    let mut out = Trace::new(trace.names().to_vec(), Level::Decision);
    for r in trace.records().filter(|r| !drop(r)) {
        out.push(r.clone());
    }
    if let Some(r) = add {
        out.push(r);
    }
    out
}

fn broken(s: &Scenario, t: &Trace) -> Vec<String> {
    violations(s, t)
        .into_iter()
        .map(|v| v.to_string())
        .collect()
}

fn only(got: &[String], invariant: &str) {
    assert!(!got.is_empty(), "nothing broken");
    assert!(got.iter().all(|v| v.contains(invariant)), "{got:#?}");
}

#[test]
fn real_runs_keep_all_five() {
    for s in [crashes(), long_call()] {
        let t = run(&s, None, Level::Decision).expect("runs").trace;
        assert_eq!(broken(&s, &t), Vec::<String>::new());
    }
}

#[test]
fn a_spawn_after_degraded_breaks_degraded_role_never_respawns() {
    let s = crashes();
    let t = run(&s, None, Level::Decision).expect("runs").trace;
    let mut spawn = t
        .records()
        .find(|r| r.kind == "spawn-worker")
        .cloned()
        .expect("a spawn");
    spawn.t = Timestamp::ZERO + Duration::from_secs(25);
    let got = broken(&s, &edited(&t, |_| false, Some(spawn)));
    only(&got, "degraded-role-never-respawns");
}

/// `reset_role_failures` lifts the degraded mark and clears the crash
/// history (pool.py): a run that degrades, resets, spawns and crashes
/// again (4 more crashes: degraded again at 33 s) keeps all five; the
/// same trace without its `reset-failures` breaks
/// `degraded-role-never-respawns` (a spawn after `degraded`) and
/// `degraded-exactly-past-the-budget` (a second mark, once is all
/// without a reset).
#[test]
fn a_reset_allows_the_respawn_and_restarts_the_count() {
    let s = scenario(
        "",
        "behaviour = \"crash-on-call\"\nbad_spawns = 8\nspawn_time = \"0s\"\ncall_at = [\"1s\", \"2s\", \"3s\", \"4s\", \"30s\", \"31s\", \"32s\", \"33s\", \"34s\"]\nreset_failures_at = [\"20s\"]",
    );
    let t = run(&s, None, Level::Decision).expect("runs").trace;
    assert_eq!(broken(&s, &t), Vec::<String>::new());
    let got = broken(&s, &edited(&t, |r| r.kind == "reset-failures", None));
    assert!(
        got.iter()
            .any(|v| v.contains("degraded-role-never-respawns")),
        "{got:#?}"
    );
    assert!(
        got.iter()
            .any(|v| v.contains("degraded-exactly-past-the-budget")),
        "{got:#?}"
    );
}

#[test]
fn a_reap_before_the_call_ended_breaks_busy_worker_never_reaped() {
    let s = long_call();
    let t = run(&s, None, Level::Decision).expect("runs").trace;
    let got = broken(&s, &edited(&t, |r| r.kind == "call-ok", None));
    only(&got, "busy-worker-never-reaped");
}

#[test]
fn a_crash_of_a_living_worker_breaks_crash_follows_a_death() {
    let s = crashes();
    let t = run(&s, None, Level::Decision).expect("runs").trace;
    let got = broken(&s, &edited(&t, |r| r.kind == "exit", None));
    only(&got, "crash-follows-a-death");
    assert_eq!(got.len(), 4, "{got:#?}");
}

#[test]
fn a_missing_or_early_degraded_breaks_degraded_exactly_past_the_budget() {
    let s = crashes();
    let t = run(&s, None, Level::Decision).expect("runs").trace;
    let got = broken(&s, &edited(&t, |r| r.kind == "degraded", None));
    only(&got, "degraded-exactly-past-the-budget");
    // Judged against a budget of 4, the mark at the 4th crash is early.
    let mut s4 = crashes();
    s4.setup_mut::<Setup>()
        .expect("lilbee")
        .config
        .restart_budget = 4;
    let got = broken(&s4, &t);
    only(&got, "degraded-exactly-past-the-budget");
}

#[test]
fn a_reap_short_of_max_idle_breaks_reaped_only_when_idle() {
    let mut s = long_call();
    let t = run(&s, None, Level::Decision).expect("runs").trace;
    // Reaped at 150 s, idle 30 s: not idle enough for 31 s.
    s.setup_mut::<Setup>().expect("lilbee").config.max_idle = Duration::from_secs(31);
    let got = broken(&s, &t);
    only(&got, "reaped-only-when-idle");
}

/// The pool measures idle times and the crash window on its own
/// monotonic clock: with its clock drifting, real runs keep all five (the
/// fuzzer's false findings at seeds 2026112701-04 before the checks
/// replayed the pool's clock). A fast clock reaps after 20 s of its own
/// (14.3 s of global time); a slow one counts 4 crashes 20 s apart on its
/// clock, 28.6 s apart in global time, within its window.
#[test]
fn a_drifting_pool_clock_keeps_all_five() {
    for (ppm, role, want) in [
        (400_000, "call_at = [\"1s\"]", "reap"),
        (
            -300_000,
            "behaviour = \"crash-on-call\"\nspawn_time = \"0s\"\ncall_at = [\"1s\", \"21s\", \"41s\", \"61s\"]",
            "degraded",
        ),
    ] {
        let text = format!(
            "version = 1\n[scenario]\nname = \"d\"\nmodel = \"lilbee\"\nprofile = \"lilbee-13277138\"\nseed = 1\nduration = \"200s\"\ninvariants = {ALL_FIVE}\n[config]\nmax_idle_s = 20\n[[node]]\nname = \"pool\"\nkind = \"pool\"\nclock_drift_ppm = {ppm}\n[[node]]\nname = \"embed\"\nkind = \"role\"\n{role}\n"
        );
        let s = Scenario::parse(ALL, Path::new("d.toml"), &text).expect("valid scenario");
        let t = run(&s, None, Level::Decision).expect("runs").trace;
        assert!(t.records().any(|r| r.kind == want), "{ppm}: no {want}");
        assert_eq!(broken(&s, &t), Vec::<String>::new(), "{ppm}");
    }
}

/// Where two reads may be blocked on one pipe (after a timed-out call,
/// here), upstream can split a frame between them and raise `EOFError`
/// for a live worker (audit 2026-11-27, D1): `crash-follows-a-death`
/// claims nothing about that worker, and still judges the others.
#[test]
fn crash_follows_a_death_is_not_judged_after_a_read_was_orphaned() {
    let s = crashes();
    let t = run(&s, None, Level::Decision).expect("runs").trace;
    let mut out = Trace::new(t.names().to_vec(), Level::Decision);
    let mut added = false;
    for r in t.records().filter(|r| r.kind != "exit") {
        out.push(r.clone());
        if r.kind == "call" && !added {
            let mut timeout = r.clone();
            timeout.kind = "call-failed";
            timeout.reason = Some("TimeoutError".into());
            out.push(timeout);
            added = true;
        }
    }
    let got = broken(&s, &out);
    only(&got, "crash-follows-a-death");
    assert_eq!(got.len(), 3, "{got:#?}");
    assert!(got.iter().all(|v| !v.contains("embed#1\"")), "{got:#?}");
}
