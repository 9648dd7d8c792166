//! lilbee's pool against upstream's rules, each a step or a comparison
//! (lilbee 132771384e4ca0dcc46f34b7fd09eafc4688814f: pool.py,
//! transport_pipe.py, worker_runtime.py; health_ticker.py as the seed).
//! Each test runs a small scenario and reads its decisions; the scenarios
//! under `scenarios/lilbee/` show the same points at upstream's defaults.

use std::path::Path;

use heartsim::models::ALL;
use heartsim::run::run;
use heartsim::scenario::Scenario;
use heartsim::sim::trace::Level;

/// The decision lines of a lilbee scenario with `config` and `nodes`
/// (TOML) for `duration`: `t kind reason msg`, without node starts and
/// the engine's spawn/ready records.
fn decisions(duration: &str, config: &str, roles: &str) -> Vec<String> {
    let source = format!(
        "version = 1\n[scenario]\nname = \"t\"\nmodel = \"lilbee\"\nprofile = \"lilbee-13277138\"\nseed = 1\nduration = \"{duration}\"\n\n[config]\n{config}\n\n[[node]]\nname = \"pool\"\nkind = \"pool\"\n\n{roles}\n"
    );
    let scenario = Scenario::parse(ALL, Path::new("t.toml"), &source).expect("valid scenario");
    let outcome = run(&scenario, None, Level::Decision).expect("within limits");
    let trace = outcome.trace;
    trace
        .decisions()
        .filter(|r| !matches!(r.kind, "start" | "spawn" | "ready"))
        .map(|r| {
            format!(
                "{} {} {} {}",
                r.t,
                r.kind,
                r.reason.as_deref().unwrap_or("-"),
                r.msg.as_deref().unwrap_or("-")
            )
        })
        .collect()
}

fn has(lines: &[String], want: &str) -> bool {
    lines.iter().any(|l| l == want)
}

fn count(lines: &[String], kind: &str) -> usize {
    lines
        .iter()
        .filter(|l| l.split(' ').nth(1) == Some(kind))
        .count()
}

const ONE_CALL: &str = "[[node]]\nname = \"embed\"\nkind = \"role\"\ncall_at = [\"1s\"]";

/// `sleep(interval)` then tick: the first tick one interval after start,
/// the next one interval after the tick ends.
#[test]
fn ticker_sleeps_first_then_ticks() {
    let lines = decisions("70s", "tick_interval = \"25s\"", ONE_CALL);
    assert!(
        has(&lines, "0:00:25.000 tick live roles embed"),
        "{lines:#?}"
    );
    assert!(
        has(&lines, "0:00:50.000 tick live roles embed"),
        "{lines:#?}"
    );
    assert_eq!(count(&lines, "tick"), 2, "{lines:#?}");
}

/// `if now - registration.last_used < self._max_idle_s: continue`
/// (pool.py `reap_idle`): idle exactly `max_idle_s` is reaped.
#[test]
fn idle_exactly_max_idle_is_reaped_a_microsecond_less_is_not() {
    // call-ok at 3.1 s; the tick at 30 s sees idle 26.9 s.
    let reaped = decisions("31s", "max_idle_s = 26.9", ONE_CALL);
    assert!(
        has(&reaped, "0:00:30.000 reap - embed#1 idle 0:00:26.900"),
        "{reaped:#?}"
    );
    let kept = decisions("31s", "max_idle_s = 26.900001", ONE_CALL);
    assert_eq!(count(&kept, "reap"), 0, "{kept:#?}");
    assert!(has(&kept, "0:00:30.000 ping-ok - -"), "{kept:#?}");
}

/// `max_idle_s = 0` turns reaping off (pool.py `reap_idle`: `if self._max_idle_s <= 0.0: return ()`).
#[test]
fn max_idle_zero_never_reaps() {
    let lines = decisions("200s", "max_idle_s = 0", ONE_CALL);
    assert_eq!(count(&lines, "reap"), 0, "{lines:#?}");
    assert_eq!(count(&lines, "ping-ok"), 6, "{lines:#?}");
}

/// One `now` per reap pass (pool.py `reap_idle`: `now = time.monotonic()` once): a close that takes 11 s (the
/// worker finishes a request nobody waits for before it reads the
/// shutdown frame) does not age the next role in the same pass.
#[test]
fn reap_uses_one_now_for_the_whole_pass() {
    let roles = "[[node]]\nname = \"a\"\nkind = \"role\"\nspawn_time = \"0s\"\nanswer_delay = \"40s\"\ncall_at = [\"1s\"]\n\n[[node]]\nname = \"b\"\nkind = \"role\"\nspawn_time = \"0s\"\ncall_at = [\"8s\"]";
    // a: its call times out at 3 s (call_timeout 2 s; the reader thread
    // is orphaned), last_used 1 s (spawn); its worker is busy until 41 s.
    // b: call-ok at 8.1 s. Tick at 30 s: a idle 29 s >= 25: reaped; the
    // close's shutdown frame waits behind the request: the result at 41 s
    // goes to the orphan, the ack to the close: closed at 41 s. b: idle
    // 21.9 s at the pass's now (30 s) < 25: kept, though 32.9 s have
    // passed when the pass reaches it.
    let lines = decisions("45s", "max_idle_s = 25\ncall_timeout = \"2s\"", roles);
    assert!(
        has(&lines, "0:00:30.000 reap - a#1 idle 0:00:29.000"),
        "{lines:#?}"
    );
    assert!(has(&lines, "0:00:41.000 closed - a#1"), "{lines:#?}");
    assert!(has(&lines, "0:00:08.100 call-ok - b#1"), "{lines:#?}");
    assert_eq!(count(&lines, "reap"), 1, "{lines:#?}");
}

/// The tick pings every role of its pre-reap snapshot: a role reaped in
/// this tick is respawned by the same tick's ping (`_ensure_channel`).
#[test]
fn a_reaped_role_is_respawned_by_the_same_ticks_ping() {
    let lines = decisions("33s", "max_idle_s = 20", ONE_CALL);
    let at30: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("0:00:30.000"))
        .collect();
    assert_eq!(
        at30,
        [
            "0:00:30.000 tick live roles embed",
            "0:00:30.000 reap - embed#1 idle 0:00:26.900",
            "0:00:30.000 exit exited embed#1",
            "0:00:30.000 closed - embed#1",
            "0:00:30.000 spawn-worker no channel embed#2",
        ],
        "{lines:#?}"
    );
    assert!(has(&lines, "0:00:32.000 ping-ok - -"), "{lines:#?}");
}

/// A ping that times out is not a crash at 13277138: `wait_for` raises
/// `TimeoutError` outside `_recv`'s `except (EOFError, OSError, ...)`
/// (transport_pipe.py `ping` vs `_recv`) and the accessor catches only
/// `WorkerCrashError` (pool.py `RoleAccessor.ping`). The channel is kept.
#[test]
fn ping_timeout_is_not_a_crash_and_keeps_the_channel() {
    let roles =
        "[[node]]\nname = \"embed\"\nkind = \"role\"\nspawn_time = \"7s\"\ncall_at = [\"1s\"]";
    // The call waits for the worker (ready at 8 s): call-ok at 8.1 s.
    // max_idle 20: tick at 30 s reaps (idle 21.9 s), the ping respawns
    // embed#2 (ready at 37 s) and times out at 35 s: no crash. The pong
    // at 37 s goes to the orphaned reader. Next tick (65 s): embed#2 is
    // live, idle since its spawn at 30 s: 35 s, reaped; its ping spawns
    // embed#3.
    let lines = decisions("66s", "max_idle_s = 20", roles);
    assert!(
        has(&lines, "0:00:35.000 ping-failed TimeoutError -"),
        "{lines:#?}"
    );
    assert_eq!(count(&lines, "crash-recorded"), 0, "{lines:#?}");
    assert!(
        has(&lines, "0:01:05.000 reap - embed#2 idle 0:00:35.000"),
        "{lines:#?}"
    );
}

/// `_on_crash`: prune `ts < now - 60`, append, degraded when `len > 3`
/// (pool.py `_on_crash`); no backoff: the next call spawns at once.
#[test]
fn crash_budget_counts_within_60s_and_degrades_past_3() {
    let roles = "[[node]]\nname = \"embed\"\nkind = \"role\"\nbehaviour = \"crash-on-call\"\nspawn_time = \"0s\"\ncall_at = [\"1s\", \"2s\", \"3s\", \"4s\", \"5s\"]";
    let lines = decisions("10s", "", roles);
    assert!(
        has(&lines, "0:00:03.000 crash-recorded - embed#3 3 in window"),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("0:00:03.000 degraded")),
        "{lines:#?}"
    );
    assert!(
        has(&lines, "0:00:04.000 degraded - 4 crashes"),
        "{lines:#?}"
    );
    assert!(
        has(&lines, "0:00:05.000 call-failed RoleDegradedError -"),
        "{lines:#?}"
    );
    assert_eq!(count(&lines, "spawn-worker"), 4, "{lines:#?}");
}

/// `restart_budget` and `restart_window` are the budget's two numbers.
#[test]
fn budget_and_window_are_settable() {
    let roles = "[[node]]\nname = \"embed\"\nkind = \"role\"\nbehaviour = \"crash-on-call\"\nspawn_time = \"0s\"\ncall_at = [\"1s\", \"12s\", \"13s\"]";
    // Window 10 s: the crash at 1 s is gone by 12 s (cutoff 2 s).
    let lines = decisions("20s", "restart_budget = 1\nrestart_window = \"10s\"", roles);
    assert!(
        has(&lines, "0:00:12.000 crash-recorded - embed#2 1 in window"),
        "{lines:#?}"
    );
    assert!(
        has(&lines, "0:00:13.000 degraded - 2 crashes"),
        "{lines:#?}"
    );
}

/// A crash in a ping counts like any other (EOF on the read), and the
/// dropped channel is closed before the tick goes on.
#[test]
fn a_worker_dying_on_a_ping_is_a_crash() {
    let roles = "[[node]]\nname = \"embed\"\nkind = \"role\"\nbehaviour = \"crash-on-ping\"\ncall_at = [\"1s\"]";
    let lines = decisions("70s", "", roles);
    assert!(
        has(&lines, "0:00:30.000 crash-recorded - embed#1 1 in window"),
        "{lines:#?}"
    );
    assert!(
        has(&lines, "0:00:30.000 ping-failed WorkerCrashError -"),
        "{lines:#?}"
    );
    // Nothing live afterwards: the next tick returns at once.
    assert!(
        has(&lines, "0:01:00.000 tick no live roles -"),
        "{lines:#?}"
    );
}

/// A successful call stamps `last_used` (pool.py `RoleAccessor.call`); a failed one does
/// not: a call that times out leaves `last_used` at the spawn.
#[test]
fn only_successful_calls_stamp_last_used() {
    let hung =
        "[[node]]\nname = \"embed\"\nkind = \"role\"\nbehaviour = \"hang\"\ncall_at = [\"1s\"]";
    // Spawn at 1 s; the call times out at 21 s; tick at 30 s: idle 29 s.
    let lines = decisions("31s", "max_idle_s = 25\ncall_timeout = \"20s\"", hung);
    assert!(
        has(&lines, "0:00:30.000 reap - embed#1 idle 0:00:29.000"),
        "{lines:#?}"
    );
}

/// `reset_role_failures` (pool.py): `registration.crash_history.clear()`
/// and `registration.degraded = False`, nothing else. Two crashes, a
/// reset, two more within 60 s: not degraded (without the clear, 4 in the
/// window would degrade at 9 s). The reset spawns nothing and the ticker
/// pings no role without a channel: the tick at 30 s after a degraded
/// role's reset finds no live role; the call at 40 s spawns.
#[test]
fn reset_role_failures_clears_the_count_and_the_mark_and_spawns_nothing() {
    let roles = "[[node]]\nname = \"embed\"\nkind = \"role\"\nbehaviour = \"crash-on-call\"\nbad_spawns = 8\nspawn_time = \"0s\"\ncall_at = [\"1s\", \"2s\", \"4s\", \"9s\"]\nreset_failures_at = [\"3s\"]";
    let lines = decisions("20s", "", roles);
    assert!(
        has(&lines, "0:00:03.000 reset-failures - 2 crashes cleared"),
        "{lines:#?}"
    );
    assert!(
        has(&lines, "0:00:09.000 crash-recorded - embed#4 2 in window"),
        "{lines:#?}"
    );
    assert_eq!(count(&lines, "degraded"), 0, "{lines:#?}");

    let roles = "[[node]]\nname = \"embed\"\nkind = \"role\"\nbehaviour = \"crash-on-call\"\nbad_spawns = 4\nspawn_time = \"0s\"\ncall_at = [\"1s\", \"2s\", \"3s\", \"4s\", \"5s\", \"40s\"]\nreset_failures_at = [\"20s\"]";
    let lines = decisions("45s", "", roles);
    assert!(
        has(&lines, "0:00:04.000 degraded - 4 crashes"),
        "{lines:#?}"
    );
    assert!(
        has(&lines, "0:00:05.000 call-failed RoleDegradedError -"),
        "{lines:#?}"
    );
    assert!(
        has(
            &lines,
            "0:00:20.000 reset-failures - 4 crashes cleared, was degraded"
        ),
        "{lines:#?}"
    );
    assert!(
        has(&lines, "0:00:30.000 tick no live roles -"),
        "{lines:#?}"
    );
    assert!(
        has(&lines, "0:00:40.000 spawn-worker no channel embed#5"),
        "{lines:#?}"
    );
    assert!(has(&lines, "0:00:40.100 call-ok - embed#5"), "{lines:#?}");
}

/// transport_pipe.py `PipeChannel.stream`: no `wait_for` (a 5 s
/// `call_timeout` does not end a 40 s stream), `in_flight` raised until
/// `stream_end` (the tick at 30 s skips the ping, stamping); pool.py
/// `_spawn_and_stream` stamps `last_used` after the stream (41 s). So the
/// tick at 60 s finds the role idle 19 s, under `max_idle_s` 25: not
/// reaped (a model stamping only at 30 s would reap it, idle 30 s); it is
/// reaped at 90 s, 30 s after the 60 s pong.
#[test]
fn a_stream_has_no_timeout_and_stamps_last_used_at_its_end() {
    let roles = "[[node]]\nname = \"chat\"\nkind = \"role\"\nspawn_time = \"0s\"\nanswer_delay = \"20s\"\nstream_chunks = 2\nstream_at = [\"1s\"]";
    let lines = decisions("95s", "max_idle_s = 25\ncall_timeout = \"5s\"", roles);
    assert!(has(&lines, "0:00:01.000 stream - chat#1"), "{lines:#?}");
    assert!(
        has(&lines, "0:00:30.000 ping-skipped - in_flight 1"),
        "{lines:#?}"
    );
    assert!(
        has(&lines, "0:00:41.000 stream-ok - chat#1 2 chunks"),
        "{lines:#?}"
    );
    assert!(has(&lines, "0:01:00.000 ping-ok - -"), "{lines:#?}");
    assert!(
        has(&lines, "0:01:30.000 reap - chat#1 idle 0:00:30.000"),
        "{lines:#?}"
    );
    assert_eq!(count(&lines, "reap"), 1, "{lines:#?}");
}

/// A worker dying mid-stream: EOF in `_recv` is a `WorkerCrashError`
/// (`except (EOFError, OSError, ...)`), `_spawn_and_stream` runs
/// `_on_crash` (`except WorkerCrashError: await pool._on_crash(role)`):
/// a crash counted, the channel dropped; no stamp.
#[test]
fn a_worker_dying_mid_stream_is_a_crash() {
    let roles = "[[node]]\nname = \"chat\"\nkind = \"role\"\nbehaviour = \"die-after\"\ndie_after = \"25s\"\nspawn_time = \"0s\"\nanswer_delay = \"10s\"\nstream_chunks = 5\nstream_at = [\"1s\"]";
    let lines = decisions("40s", "", roles);
    assert!(
        has(&lines, "0:00:26.000 crash-recorded - chat#1 1 in window"),
        "{lines:#?}"
    );
    assert!(
        has(&lines, "0:00:26.000 stream-failed WorkerCrashError chat#1"),
        "{lines:#?}"
    );
    assert!(
        has(&lines, "0:00:30.000 tick no live roles -"),
        "{lines:#?}"
    );
}

/// worker_runtime.py `run_worker`: the streaming handler runs to its end
/// before the loop reads again, so a ping that came meanwhile is answered
/// after `stream_end` (`if state.stream_in_flight:` never sees it); the
/// chunks come one every `answer_delay`.
#[test]
fn a_worker_streams_its_chunks_then_answers_the_waiting_ping() {
    use heartsim::models::lilbee::{Behaviour, Frame, Msg, Worker, WorkerSpec};
    use heartsim::sim::{ConnId, Duration, NodeId, Outbox, Timestamp};

    let secs = |s| Timestamp::ZERO + Duration::from_secs(s);
    let mut w = Worker::new(WorkerSpec {
        role: "chat".into(),
        behaviour: Behaviour::Healthy,
        answer_delay: Duration::from_secs(10),
        stream_chunks: 2,
    });
    let frames = |out: &Outbox<Msg>| -> Vec<Frame> {
        out.sends()
            .filter_map(|(_, m, _)| match m {
                Msg::Frame(f) => Some(*f),
                Msg::Spawn(_) => None,
            })
            .collect()
    };
    w.on_start(secs(0));
    let mut out = Outbox::<Msg>::new(NodeId(2));
    w.on_frame(secs(0), ConnId(0), Frame::Stream, &mut out);
    w.on_frame(secs(1), ConnId(0), Frame::Ping, &mut out);
    assert!(frames(&out).is_empty(), "{:?}", frames(&out));
    assert_eq!(w.poll_timeout().map(|d| d.at), Some(secs(10)));
    let mut out = Outbox::<Msg>::new(NodeId(2));
    w.on_timeout(secs(10), &mut out);
    assert_eq!(frames(&out), [Frame::StreamChunk]);
    let mut out = Outbox::<Msg>::new(NodeId(2));
    w.on_timeout(secs(20), &mut out);
    assert_eq!(
        frames(&out),
        [Frame::StreamChunk, Frame::StreamEnd, Frame::Pong]
    );
}

/// A `stop` of the pool is a clean interpreter exit: concurrent.futures'
/// `_python_exit` joins every executor thread, then multiprocessing's
/// `_exit_function` terminates each live daemonic child (util.py:
/// `if p.daemon: ... p._popen.terminate()`; transport_pipe.py
/// `PipeSpawner(daemon=True)`). An idle worker is terminated at the stop
/// (before: it read EOF and exited). A call's read blocked on a busy
/// worker keeps the process running until the result comes (22 s), then
/// both workers are terminated; blocked on a hung worker, it never
/// returns: nobody is terminated, nobody reads EOF
/// (docs/audits/lilbee-atexit.py).
#[test]
fn a_clean_exit_terminates_daemonic_workers_once_no_thread_is_busy() {
    let idle = "[[node]]\nname = \"embed\"\nkind = \"role\"\ncall_at = [\"1s\"]\n\n[[fault]]\nat = \"31s\"\nkind = \"stop\"\nnode = \"pool\"";
    let lines = decisions("60s", "", idle);
    assert!(
        has(&lines, "0:00:31.000 atexit-terminate - embed#1"),
        "{lines:#?}"
    );
    assert!(
        has(&lines, "0:00:31.000 exit terminated embed#1"),
        "{lines:#?}"
    );
    assert_eq!(count(&lines, "exit"), 1, "{lines:#?}");

    let roles = |second: &str| {
        format!("[[node]]\nname = \"embed\"\nkind = \"role\"\ncall_at = [\"1s\"]\n\n[[node]]\nname = \"vision\"\nkind = \"role\"\nspawn_time = \"0s\"\n{second}\ncall_at = [\"2s\"]\n\n[[fault]]\nat = \"20s\"\nkind = \"stop\"\nnode = \"pool\"")
    };
    let busy = decisions("60s", "", &roles("answer_delay = \"20s\""));
    assert!(
        has(&busy, "0:00:20.000 exit-blocked - 1 executor threads busy"),
        "{busy:#?}"
    );
    assert!(has(&busy, "0:00:22.000 call-ok - vision#1"), "{busy:#?}");
    for w in ["embed#1", "vision#1"] {
        assert!(
            has(&busy, &format!("0:00:22.000 atexit-terminate - {w}")),
            "{busy:#?}"
        );
    }
    assert_eq!(count(&busy, "exit"), 2, "{busy:#?}");

    let hung = decisions("60s", "", &roles("behaviour = \"hang\""));
    assert!(
        has(&hung, "0:00:20.000 exit-blocked - 1 executor threads busy"),
        "{hung:#?}"
    );
    assert_eq!(count(&hung, "atexit-terminate"), 0, "{hung:#?}");
    assert_eq!(count(&hung, "exit"), 0, "{hung:#?}");
}

/// While the exit waits the ticker runs on (its loop is a daemon thread;
/// third lilbee audit), but the executors are shut. The call on `a` times
/// out at 6 s (its thread stays blocked: the worker is busy until 41 s);
/// the tick at 30 s pings `a` (a second blocked read); the stop at 32 s
/// lingers. The ping times out at 35 s and the tick goes on to ping `b`,
/// whose send's `run_in_executor` raises `RuntimeError` at once. At 41 s
/// the result and the pong release both threads: both workers terminated.
#[test]
fn an_exiting_pool_ticks_on_and_its_pings_raise_runtime_error() {
    let roles = "[[node]]\nname = \"a\"\nkind = \"role\"\nspawn_time = \"0s\"\nanswer_delay = \"40s\"\ncall_at = [\"1s\"]\n\n[[node]]\nname = \"b\"\nkind = \"role\"\nspawn_time = \"0s\"\ncall_at = [\"1s\"]\n\n[[fault]]\nat = \"32s\"\nkind = \"stop\"\nnode = \"pool\"";
    let lines = decisions("60s", "call_timeout = \"5s\"", roles);
    assert!(
        has(&lines, "0:00:32.000 exit-blocked - 2 executor threads busy"),
        "{lines:#?}"
    );
    assert!(
        has(&lines, "0:00:35.000 ping-failed TimeoutError -"),
        "{lines:#?}"
    );
    assert!(
        has(
            &lines,
            "0:00:35.000 ping-failed RuntimeError: executor shut down b#1"
        ),
        "{lines:#?}"
    );
    assert_eq!(count(&lines, "ping-failed"), 2, "{lines:#?}");
    assert_eq!(count(&lines, "ping-ok"), 0, "{lines:#?}");
    for w in ["a#1", "b#1"] {
        assert!(
            has(&lines, &format!("0:00:41.000 atexit-terminate - {w}")),
            "{lines:#?}"
        );
    }
}

/// Bad `[config]` and `[[node]]` values are errors at the value.
#[test]
fn bad_values_are_clear_errors() {
    let bad = |config: &str, roles: &str, want: &str| {
        let source = format!(
            "version = 1\n[scenario]\nname = \"t\"\nmodel = \"lilbee\"\nprofile = \"lilbee-13277138\"\nseed = 1\nduration = \"10s\"\n\n[config]\n{config}\n\n[[node]]\nname = \"pool\"\nkind = \"pool\"\n\n{roles}\n"
        );
        let err = Scenario::parse(ALL, Path::new("t.toml"), &source)
            .expect_err("must be rejected")
            .to_string();
        assert!(err.contains(want), "{err}");
        assert!(err.contains("t.toml:"), "names the file and line: {err}");
    };
    bad(
        "max_idle_s = -1.0",
        ONE_CALL,
        "max_idle_s: expected seconds, 0 or more",
    );
    bad(
        "tick_interval = \"0s\"",
        ONE_CALL,
        "tick_interval must be greater than zero",
    );
    bad(
        "restart_budget = -2",
        ONE_CALL,
        "restart_budget: expected a count",
    );
    bad(
        "",
        "[[node]]\nname = \"e\"\nkind = \"role\"\nbehaviour = \"flaky\"",
        "unknown behaviour \"flaky\"",
    );
    bad(
        "",
        "[[node]]\nname = \"e\"\nkind = \"role\"\nbehaviour = \"die-after\"",
        "die-after needs die_after",
    );
    bad(
        "",
        "[[node]]\nname = \"e\"\nkind = \"role\"\ncall_every = \"1s\"",
        "call_every needs call_until",
    );
    bad(
        "",
        "[[node]]\nname = \"e\"\nkind = \"worker\"",
        "expected pool or role",
    );
    bad(
        "",
        "[[node]]\nname = \"e\"\nkind = \"role\"\ncall_every = \"1ms\"\ncall_until = \"1h\"",
        "MAX_CALLS",
    );
    bad(
        "",
        "[[node]]\nname = \"e\"\nkind = \"role\"\nstream_chunks = 1001",
        "stream_chunks: expected a count from 0 to 1000",
    );
    bad(
        "",
        "[[node]]\nname = \"e\"\nkind = \"role\"\nreset_failures_at = [\"soon\"]",
        "reset_failures_at",
    );
    bad(
        "",
        "[[node]]\nname = \"p2\"\nkind = \"pool\"\nstream_at = [\"1s\"]",
        "this is a role key",
    );
}

/// The worker reads one frame at a time (`run_worker`'s loop): a ping
/// waits behind a request in progress, on the one pipe of 13277138. Each
/// late reply goes to the reader thread its timed-out waiter left behind.
#[test]
fn a_ping_waits_behind_the_workers_request_and_orphans_take_the_late_replies() {
    let roles = "[[node]]\nname = \"embed\"\nkind = \"role\"\nspawn_time = \"0s\"\nanswer_delay = \"40s\"\ncall_at = [\"1s\"]";
    // The call times out at 3 s (its reader stays blocked); the worker is
    // busy until 41 s. Tick at 30 s: in_flight is 0 again, so it pings;
    // the ping waits behind the request and times out at 35 s (a second
    // blocked reader). At 41 s the result goes to the first orphan, the
    // pong to the second: both threads are free by the tick at 65 s, whose
    // ping gets its pong at once.
    let lines = decisions("70s", "call_timeout = \"2s\"", roles);
    assert!(
        has(&lines, "0:00:03.000 call-failed TimeoutError embed#1"),
        "{lines:#?}"
    );
    assert!(
        has(&lines, "0:00:35.000 ping-failed TimeoutError -"),
        "{lines:#?}"
    );
    assert!(has(&lines, "0:01:05.000 ping-ok - -"), "{lines:#?}");
    assert_eq!(count(&lines, "executor-full"), 0, "{lines:#?}");
}

/// pool.py `shutdown_pool_runtime`: `runtime.run_sync(pool.shutdown(),
/// timeout=drain_timeout_s)` (`drain_timeout_s: float = 10.0`), `except
/// (TimeoutError, RuntimeError, OSError)`, then `runtime.shutdown()`
/// (`loop.call_soon_threadsafe(loop.stop)`). A call busy for 60 s holds
/// the recv lock: the close's ack wait times out at 15 s, its join at
/// 20 s, when the 10 s cap has already stopped the loop. The join thread
/// still terminates the worker, but the call's EOF reaches a stopped
/// loop: no crash is counted, the call never returns, `closed` is never
/// written.
#[test]
fn shutdown_drain_is_capped_at_10s_then_the_loop_stops() {
    let lines = decisions(
        "80s",
        "shutdown_at = \"10s\"",
        "[[node]]\nname = \"embed\"\nkind = \"role\"\nanswer_delay = \"60s\"\ncall_at = [\"1s\"]",
    );
    let tail: Vec<&String> = lines
        .iter()
        .skip_while(|l| !l.starts_with("0:00:10.000 shutdown"))
        .collect();
    assert_eq!(
        tail,
        [
            "0:00:10.000 shutdown - -",
            "0:00:20.000 loop-stopped drain timeout -",
            "0:00:20.000 terminate - embed#1",
            "0:00:20.000 exit terminated embed#1",
        ],
        "{lines:#?}"
    );
}

/// When `pool.shutdown()` returns, `run_sync` returns and the loop
/// stops; later calls raise `PoolShutdownError` (`run_sync`: `if
/// self._stopped: ... raise PoolShutdownError()`).
#[test]
fn a_drained_shutdown_stops_the_loop_at_once() {
    let lines = decisions(
        "30s",
        "shutdown_at = \"10s\"",
        "[[node]]\nname = \"embed\"\nkind = \"role\"\ncall_at = [\"1s\", \"12s\"]",
    );
    let tail: Vec<&String> = lines
        .iter()
        .skip_while(|l| !l.starts_with("0:00:10.000 shutdown"))
        .collect();
    assert_eq!(
        tail,
        [
            "0:00:10.000 shutdown - -",
            "0:00:10.000 exit exited embed#1",
            "0:00:10.000 closed - embed#1",
            "0:00:10.000 loop-stopped drained -",
            "0:00:12.000 call-failed PoolShutdownError -",
        ],
        "{lines:#?}"
    );
}

/// A pool driven by hand: one healthy role per name, in that order, each
/// spawned at once, answering at once and called at 1 s; started at 0 s.
fn one_call_pool(
    cfg: heartsim::models::lilbee::Config,
    roles: &[&str],
) -> heartsim::models::lilbee::Pool {
    use heartsim::models::lilbee::{Behaviour, Pool, RoleSpec};
    use heartsim::sim::{Duration, NodeId, Timestamp};

    let secs = |s| Timestamp::ZERO + Duration::from_secs(s);
    let roles = (roles.iter().zip(1..))
        .map(|(name, node)| {
            let spec = RoleSpec {
                name: (*name).into(),
                behaviour: Behaviour::Healthy,
                bad_spawns: None,
                answer_delay: Duration::ZERO,
                spawn_time: Duration::ZERO,
                calls: vec![secs(1)],
                streams: Vec::new(),
                stream_chunks: 0,
                resets: Vec::new(),
            };
            (NodeId(node), spec)
        })
        .collect();
    let mut pool = Pool::new(cfg, roles);
    pool.on_start(secs(0));
    pool
}

/// transport_pipe.py `close`: `await asyncio.get_running_loop()
/// .run_in_executor(self._executor, self._join_process, timeout)`;
/// cancelling that await does not stop the thread, which goes on with
/// `self._process.join(timeout=timeout)` and `if self._process.is_alive():
/// ... self._process.terminate()`. Driven by hand (the worker behaviours
/// cannot reach it: a silent worker always leaves an orphan first, and
/// the join then waits for a thread): a worker that ponged once, then
/// answers its call at 1 s, then nothing; the reap's close at 30 s waits
/// 5 s for the ack, joins from 35 s, and the shutdown at 37 s cancels it:
/// `closed` at 37 s (the `finally`), `terminate` at 40 s all the same.
/// Before the fix the join was dropped and the worker never terminated.
#[test]
fn a_close_cancelled_while_joining_still_terminates_the_worker() {
    use heartsim::models::lilbee::{Config, Frame, Msg};
    use heartsim::sim::{Dest, Duration, NodeId, Outbox, Timestamp};

    let secs = |s| Timestamp::ZERO + Duration::from_secs(s);
    let cfg = Config {
        max_idle: Duration::from_secs(20),
        shutdown_at: Some(secs(37)),
        ..Config::default()
    };
    let mut pool = one_call_pool(cfg, &["embed"]);
    let mut log: Vec<String> = Vec::new();
    // The engine stamps a record's time; here it is the input's.
    let note = |at: Timestamp, out: &Outbox<Msg>, log: &mut Vec<String>| {
        for r in out.records() {
            let why = r.reason.as_deref().unwrap_or("-");
            log.push(format!("{at} {} {why}", r.kind));
        }
    };
    while let Some(d) = pool.poll_timeout() {
        if d.at > secs(80) {
            break;
        }
        let mut out = Outbox::new(NodeId(0));
        pool.on_timeout(d.at, &mut out);
        note(d.at, &out, &mut log);
        if out.terminates().next().is_some() {
            log.push(format!("{} worker terminated", d.at));
        }
        // Until 50 s the worker answers at once; then it is silent.
        let replies: Vec<_> = out
            .sends()
            .filter_map(|(to, msg, _)| match (to, msg) {
                (Dest::Conn(c), Msg::Frame(Frame::Request)) => Some((c, Frame::Result)),
                (Dest::Conn(c), Msg::Frame(Frame::Ping)) => Some((c, Frame::Pong)),
                _ => None,
            })
            .filter(|_| d.at < secs(50))
            .collect();
        for (c, f) in replies {
            let mut out = Outbox::new(NodeId(0));
            pool.on_frame(d.at, c, f, &mut out);
            note(d.at, &out, &mut log);
        }
    }
    for want in [
        "0:00:30.000 reap -",
        "0:00:37.000 shutdown -",
        "0:00:37.000 closed -",
        "0:00:37.000 loop-stopped drained",
        "0:00:40.000 terminate -",
        "0:00:40.000 worker terminated",
    ] {
        assert!(log.iter().any(|l| l == want), "{want}: {log:#?}");
    }
}

/// transport_pipe.py `close`'s `finally`: `self._conn.close()`, while the
/// timed-out call's thread and the close's own are still blocked in
/// `conn.recv()`: on Linux their `read()`s hold the socket, so the worker
/// reads no EOF (audit 2026-11-27, D3, measured). The worker
/// (worker_runtime.py `run_worker`) finishes its request at 103 s, its
/// result and the shutdown's ack release the two readers, and it exits
/// after the ack; before the fix it exited at 32 s, mid-request.
#[test]
fn closing_a_pipe_with_blocked_readers_gives_the_worker_no_eof() {
    let lines = decisions(
        "120s",
        "max_idle_s = 20\ncall_timeout = \"10s\"\nshutdown_at = \"32s\"",
        "[[node]]\nname = \"embed\"\nkind = \"role\"\nanswer_delay = \"100s\"\ncall_at = [\"1s\"]",
    );
    assert!(
        has(&lines, "0:00:30.000 reap - embed#1 idle 0:00:29.000"),
        "{lines:#?}"
    );
    assert!(has(&lines, "0:00:32.000 closed - embed#1"), "{lines:#?}");
    assert!(has(&lines, "0:01:43.000 exit exited embed#1"), "{lines:#?}");
    assert_eq!(count(&lines, "exit"), 1, "{lines:#?}");
}

/// worker_runtime.py `run_worker` reads EOF only at its next `conn.recv()`
/// (`except EOFError: return`), after the handler in progress, whose
/// `conn.send` of the result then fails: a worker busy when its pipe's
/// other end goes away (a killed pool) exits when the request is done.
#[test]
fn a_busy_worker_exits_after_its_request_not_at_eof() {
    use heartsim::models::lilbee::{Behaviour, Frame, Msg, Worker, WorkerSpec};
    use heartsim::sim::{ConnId, Duration, NodeId, Outbox, Timestamp};

    let secs = |s| Timestamp::ZERO + Duration::from_secs(s);
    let mut w = Worker::new(WorkerSpec {
        role: "embed".into(),
        behaviour: Behaviour::Healthy,
        answer_delay: Duration::from_secs(20),
        stream_chunks: 0,
    });
    let mut out = Outbox::<Msg>::new(NodeId(2));
    w.on_start(secs(0));
    w.on_frame(secs(1), ConnId(0), Frame::Request, &mut out);
    w.on_frame(secs(2), ConnId(0), Frame::Ping, &mut out);
    w.on_eof(&mut out);
    assert!(!out.exits(), "EOF read before the request is done");
    assert_eq!(w.poll_timeout().map(|d| d.at), Some(secs(21)));
    w.on_timeout(secs(21), &mut out);
    assert!(out.exits(), "exits when its result cannot be sent");
    assert_eq!(out.sends().count(), 0, "no result, no pong");
}

/// Second lilbee audit (session 8), point 1: a reply or EOF handed to the
/// pool at or after its call's `wait_for` deadline, before the timer fires
/// (what the engine's resume does with what arrived during a pause), loses
/// to the timeout on CPython >= 3.12 (`Timeout._on_timeout`'s
/// `task.cancel()` runs in the batch that runs the reader thread's
/// `_set_state`, so the woken task's step throws `CancelledError`):
/// `TimeoutError`, no stamp, no crash, and the timer that follows finds
/// nothing to do. A microsecond before the deadline the reply wins.
/// Driven by hand, so that the frame is handed over before the timer at
/// the deadline's instant, the order a resume gives.
#[test]
fn a_reply_or_eof_handed_over_at_or_after_the_deadline_loses_to_the_timeout() {
    use heartsim::models::lilbee::{Config, Frame, Msg};
    use heartsim::sim::{ConnId, Dest, Duration, NodeId, Outbox, Timestamp};

    let secs = |s| Timestamp::ZERO + Duration::from_secs(s);
    let deadline = secs(11);
    // What the pool records when it is handed `reply` (`None`: EOF) at
    // `at`, then runs its timers due at `at`.
    let run = |at: Timestamp, reply: Option<Frame>| -> Vec<String> {
        let cfg = Config {
            call_timeout: Duration::from_secs(10),
            ..Config::default()
        };
        let mut pool = one_call_pool(cfg, &["embed"]);
        let mut out = Outbox::new(NodeId(0));
        pool.on_timeout(secs(1), &mut out);
        let conn: ConnId = out
            .sends()
            .find_map(|(to, msg, _)| match (to, msg) {
                (Dest::Conn(c), Msg::Frame(Frame::Request)) => Some(c),
                _ => None,
            })
            .expect("the call's request");
        let mut log = Vec::new();
        let mut out = Outbox::new(NodeId(0));
        match reply {
            Some(f) => pool.on_frame(at, conn, f, &mut out),
            None => pool.on_eof(at, conn, &mut out),
        }
        if pool.poll_timeout().is_some_and(|d| d.at <= at) {
            pool.on_timeout(at, &mut out);
        }
        for r in out.records() {
            log.push(format!("{} {}", r.kind, r.reason.as_deref().unwrap_or("-")));
        }
        log
    };
    let at_deadline = run(deadline, Some(Frame::Result));
    assert_eq!(at_deadline, ["call-failed TimeoutError"]);
    let after = run(deadline + Duration::from_secs(9), Some(Frame::Result));
    assert_eq!(after, ["call-failed TimeoutError"]);
    let eof = run(deadline, None);
    assert_eq!(eof, ["call-failed TimeoutError"], "no crash-recorded");
    let just_before = run(deadline - Duration::from_us(1), Some(Frame::Result));
    assert_eq!(just_before, ["call-ok -"]);
    let eof_before = run(deadline - Duration::from_us(1), None);
    assert_eq!(eof_before[0], "crash-recorded -", "{eof_before:?}");
}

/// Third lilbee audit, point 2: a worker that dies while the interpreter
/// exits (a `stop`, the process lingering on a blocked read) makes the
/// call or stream that reads its EOF raise `RuntimeError`, not
/// `WorkerCrashError`: `_on_crash` records the crash, then its
/// `channel.close()` gets `RuntimeError` from `run_in_executor`
/// (`_python_exit` set `_shutdown`), which `suppress(WorkerError)` lets
/// through, inside the accessor's `except WorkerCrashError:` block
/// (pool.py l. 115-119, 178-183, 339-341; transport_pipe.py l. 206-209,
/// 317-327). chat dies at 23 s, vision at 28 s; the process ends then.
#[test]
fn a_death_during_the_exit_wait_raises_runtime_error_not_worker_crash_error() {
    let roles = "[[node]]\nname = \"chat\"\nkind = \"role\"\nbehaviour = \"die-after\"\ndie_after = \"20s\"\nanswer_delay = \"30s\"\ncall_at = [\"1s\"]\n\n[[node]]\nname = \"vision\"\nkind = \"role\"\nbehaviour = \"die-after\"\ndie_after = \"25s\"\nanswer_delay = \"100s\"\nstream_at = [\"1s\"]\n\n[[fault]]\nat = \"10s\"\nkind = \"stop\"\nnode = \"pool\"";
    let lines = decisions("60s", "", roles);
    for want in [
        "0:00:10.000 exit-blocked - 2 executor threads busy",
        "0:00:23.000 crash-recorded - chat#1 1 in window",
        "0:00:23.000 closed - chat#1",
        "0:00:23.000 call-failed RuntimeError: executor shut down chat#1",
        "0:00:28.000 crash-recorded - vision#1 1 in window",
        "0:00:28.000 stream-failed RuntimeError: executor shut down vision#1",
    ] {
        assert!(has(&lines, want), "{want}: {lines:#?}");
    }
    assert!(
        !lines.iter().any(|l| l.contains("WorkerCrashError")),
        "{lines:#?}"
    );
}

/// `reap_idle` awaits each close in turn (pool.py l. 391-393). A close
/// whose `_join_process` thread was already running when the interpreter
/// began to exit returns normally (the join needs no new executor work),
/// so the reap goes on to the next idle role; only a close that needs
/// `run_in_executor` after the exit raises `RuntimeError` and ends the
/// pass (the tick then pings). Driven by hand: a's worker never acks the
/// 30 s close, its join runs from 35 s, the stop comes at 37 s, and a's
/// worker exits at 38 s: the join returns, b is reaped at 38 s (its close
/// raises but closes the pipe), then both pings raise.
#[test]
fn a_reap_close_that_joins_normally_during_the_exit_lets_the_reap_go_on() {
    use heartsim::models::lilbee::{Config, Frame, Msg};
    use heartsim::sim::{ConnId, Dest, Duration, NodeId, Outbox, Timestamp};

    let secs = |s| Timestamp::ZERO + Duration::from_secs(s);
    let cfg = Config {
        max_idle: Duration::from_secs(20),
        ..Config::default()
    };
    let mut pool = one_call_pool(cfg, &["a", "b"]);
    let mut log: Vec<String> = Vec::new();
    let note = |at: Timestamp, out: &Outbox<Msg>, log: &mut Vec<String>| {
        for r in out.records() {
            let why = r.reason.as_deref().unwrap_or("-");
            let peer = r.peer.map_or(0, |p| p.0);
            log.push(format!("{at} {} {peer} {why}", r.kind));
        }
    };
    let mut conns: Vec<ConnId> = Vec::new();
    // Calls at 1 s answered at once; the 30 s tick's closes never acked.
    while let Some(d) = pool.poll_timeout() {
        if d.at > secs(36) {
            break;
        }
        let mut out = Outbox::new(NodeId(0));
        pool.on_timeout(d.at, &mut out);
        note(d.at, &out, &mut log);
        let replies: Vec<ConnId> = out
            .sends()
            .filter_map(|(to, msg, _)| match (to, msg) {
                (Dest::Conn(c), Msg::Frame(Frame::Request)) => Some(c),
                _ => None,
            })
            .collect();
        for c in replies {
            conns.push(c);
            let mut out = Outbox::new(NodeId(0));
            pool.on_frame(d.at, c, Frame::Result, &mut out);
            note(d.at, &out, &mut log);
        }
    }
    let mut out = Outbox::new(NodeId(0));
    pool.on_exit(&mut out);
    note(secs(37), &out, &mut log);
    let mut out = Outbox::new(NodeId(0));
    pool.on_eof(secs(38), conns[0], &mut out);
    note(secs(38), &out, &mut log);
    for want in [
        "0:00:30.000 reap 1 -",
        "0:00:37.000 exit-blocked 0 -",
        "0:00:38.000 closed 1 -",
        "0:00:38.000 reap 2 -",
        "0:00:38.000 closed 2 -",
        "0:00:38.000 ping-failed 1 RuntimeError: executor shut down",
        "0:00:38.000 ping-failed 2 RuntimeError: executor shut down",
    ] {
        assert!(log.iter().any(|l| l == want), "{want}: {log:#?}");
    }
}
