//! kstlib's machines driven by hand against upstream's rules, each a step
//! or a comparison that the scenarios would only show indirectly.
//! Upstream: kstlib 2.0.0 `resilience/heartbeat.py`, `resilience/watchdog.py`,
//! `limits.py`.

use heartsim::models::kstlib::{
    check_interval, clamp_seconds, Msg, Node, PingWatchdog, PingWatchdogSpec, Profile, Writer,
    WriterSpec,
};
use heartsim::sim::{
    Duration, Errno, FileDone, FileOp, Input, Machine, NodeId, Now, Outbox, Timestamp,
};

fn at(ms: u64) -> Now {
    let t = Timestamp::ZERO + Duration::from_ms(ms);
    Now { mono: t, wall: t }
}

fn spec() -> WriterSpec {
    WriterSpec {
        state_file: Some("/run/bot.heartbeat".into()),
        interval: Duration::from_secs(10),
        pid: 1000,
        hostname: "box".into(),
        target_dead_at: None,
        target_raises_at: None,
        on_beat_fails: false,
        start_twice: false,
        naive_timestamp: false,
    }
}

fn kinds(out: &Outbox<Msg>) -> Vec<&'static str> {
    out.records().map(|r| r.kind).collect()
}

#[test]
fn clamp_with_limits_as_python_min_max() {
    // limits.py: `max(hard_min, min(value, hard_max))`.
    assert_eq!(clamp_seconds(0.2, 1.0, 300.0), Duration::from_secs(1));
    assert_eq!(clamp_seconds(f64::NAN, 1.0, 300.0), Duration::from_secs(1));
    assert_eq!(
        clamp_seconds(f64::INFINITY, 1.0, 300.0),
        Duration::from_secs(300)
    );
    assert_eq!(clamp_seconds(3600.0, 1.0, 300.0), Duration::from_secs(300));
    assert_eq!(clamp_seconds(1.5, 1.0, 300.0), Duration::from_ms(1500));
    assert_eq!(clamp_seconds(300.0, 1.0, 300.0), Duration::from_secs(300));
}

#[test]
fn watchdog_checks_every_min_1s_timeout_over_4() {
    assert_eq!(check_interval(30.0), Duration::from_secs(1));
    assert_eq!(check_interval(4.0), Duration::from_secs(1));
    assert_eq!(check_interval(3.0), Duration::from_ms(750));
    assert_eq!(check_interval(1.0), Duration::from_ms(250));
}

/// Threaded: no file operation at start, the first at one interval.
#[test]
fn threaded_first_beat_after_one_interval_async_at_once() {
    let mut w = Node::Writer(Writer::new(Profile::Threaded, spec()));
    let mut out = Outbox::new(NodeId(0));
    w.handle(at(0), Input::Start, &mut out);
    assert_eq!(out.files().count(), 0);
    let d = w.poll_timeout().expect("a wait");
    assert_eq!(d.at, Timestamp::ZERO + Duration::from_secs(10));
    assert_eq!(d.reason, "stop_event.wait");

    let mut a = Node::Writer(Writer::new(Profile::Async, spec()));
    let mut out = Outbox::new(NodeId(0));
    a.handle(at(0), Input::Start, &mut out);
    let ops: Vec<_> = out.files().map(|(op, _)| op.clone()).collect();
    assert_eq!(ops, vec![FileOp::MkdirAll("/run".into())]);
    assert_eq!(a.poll_timeout(), None, "busy in beat(): no timer");
}

/// Drive one beat of `w` at `ms` whose steps answer with `results`.
fn beat(w: &mut Node, ms: u64, results: &[Result<(), Errno>]) -> Outbox<Msg> {
    let mut out = Outbox::new(NodeId(0));
    w.handle(at(ms), Input::Timeout, &mut out);
    for r in results {
        let token = out.files().last().expect("an operation in flight").1;
        out.clear();
        let done = FileDone {
            token,
            result: r.map(|()| None),
        };
        w.handle(
            at(ms),
            Input::Recv {
                from: NodeId(0),
                msg: Msg::File(done),
            },
            &mut out,
        );
    }
    out
}

#[test]
fn a_beat_is_mkdir_then_temp_write_then_rename() {
    let mut w = Node::Writer(Writer::new(Profile::Threaded, spec()));
    let mut out = Outbox::new(NodeId(0));
    w.handle(at(0), Input::Start, &mut out);
    let mut out = Outbox::new(NodeId(0));
    w.handle(at(10_000), Input::Timeout, &mut out);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (op, token) = out.files().last().map(|(o, t)| (o.clone(), t)).expect("op");
        seen.push(op);
        out.clear();
        let done = FileDone {
            token,
            result: Ok(None),
        };
        w.handle(
            at(10_000),
            Input::Recv {
                from: NodeId(0),
                msg: Msg::File(done),
            },
            &mut out,
        );
    }
    assert!(matches!(&seen[0], FileOp::MkdirAll(p) if p == "/run"));
    assert!(
        matches!(&seen[1], FileOp::Write { path, data } if path == "/run/bot.tmp"
        && String::from_utf8_lossy(data).contains("\"timestamp\": \"2026-01-12T10:00:10+00:00\""))
    );
    assert!(
        matches!(&seen[2], FileOp::Rename { from, to } if from == "/run/bot.tmp" && to == "/run/bot.heartbeat")
    );
    assert_eq!(kinds(&out), vec!["beat"]);
    // The next wait starts after the tick.
    assert_eq!(
        w.poll_timeout().map(|d| d.at),
        Some(Timestamp::ZERO + Duration::from_secs(20))
    );
}

#[test]
fn a_failed_step_is_a_missed_beat_and_the_loop_goes_on() {
    let mut w = Node::Writer(Writer::new(Profile::Threaded, spec()));
    w.handle(at(0), Input::Start, &mut Outbox::new(NodeId(0)));
    let out = beat(&mut w, 10_000, &[Ok(()), Err(Errno::Eacces)]);
    let r: Vec<_> = out.records().collect();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].kind, "missed-beat");
    assert_eq!(
        r[0].reason.as_deref(),
        Some("Failed to write heartbeat: EACCES")
    );
    assert_eq!(
        w.poll_timeout().map(|d| d.at),
        Some(Timestamp::ZERO + Duration::from_secs(20))
    );
    // A failed rename too (the temp-name clash).
    let out = beat(&mut w, 20_000, &[Ok(()), Ok(()), Err(Errno::Enoent)]);
    assert_eq!(kinds(&out), vec!["missed-beat"]);
}

#[test]
fn target_check_runs_after_a_missed_beat_too() {
    let mut s = spec();
    s.target_dead_at = Some(Timestamp::ZERO);
    for (profile, want) in [
        (Profile::Threaded, vec!["missed-beat", "target-dead"]),
        (Profile::Async, vec!["missed-beat", "alert", "target-dead"]),
    ] {
        let mut w = Node::Writer(Writer::new(profile, s.clone()));
        let mut out = Outbox::new(NodeId(0));
        w.handle(at(0), Input::Start, &mut out);
        let out = match profile {
            Profile::Threaded => beat(&mut w, 10_000, &[Err(Errno::Eio)]),
            Profile::Async => {
                let token = out.files().last().expect("beats at once").1;
                let mut o = Outbox::new(NodeId(0));
                let done = FileDone {
                    token,
                    result: Err(Errno::Eio),
                };
                w.handle(
                    at(0),
                    Input::Recv {
                        from: NodeId(0),
                        msg: Msg::File(done),
                    },
                    &mut o,
                );
                o
            }
        };
        assert_eq!(kinds(&out), want, "{profile:?}");
    }
}

#[test]
fn no_state_file_is_a_successful_no_op() {
    let mut s = spec();
    s.state_file = None;
    let mut w = Node::Writer(Writer::new(Profile::Threaded, s));
    w.handle(at(0), Input::Start, &mut Outbox::new(NodeId(0)));
    let mut out = Outbox::new(NodeId(0));
    w.handle(at(10_000), Input::Timeout, &mut out);
    assert_eq!(out.files().count(), 0);
    assert_eq!(kinds(&out), vec!["beat"]);
}

/// `elapsed < timeout` returns: the watchdog fires at `elapsed == timeout`.
#[test]
fn ping_watchdog_fires_at_elapsed_equal_to_timeout_and_latches() {
    let spec = PingWatchdogSpec {
        timeout: Duration::from_secs(4),
        every: check_interval(4.0),
        ping_every: Duration::from_secs(3600),
        hang_at: None,
        resume_at: None,
        reset_at: None,
    };
    let mut wd = Node::Watchdog(PingWatchdog::new(spec));
    wd.handle(at(0), Input::Start, &mut Outbox::new(NodeId(0)));
    let mut fired = Vec::new();
    for s in 1..=10 {
        let mut out = Outbox::new(NodeId(0));
        wd.handle(at(s * 1000), Input::Timeout, &mut out);
        if kinds(&out).contains(&"fired") {
            fired.push(s);
        }
    }
    assert_eq!(fired, vec![4], "fires once, at 4 s, then stays latched");
}
