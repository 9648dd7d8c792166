//! The engine's link and node states, driven with a small test machine:
//! hold, stall and release; pause and resume; crash of a paused node; a
//! drift change that moves a pending deadline; awaited versus try sends.

use std::borrow::Cow;

use heartsim_sim::net::{Latency, LinkConfig, Network};
use heartsim_sim::trace::Level;
use heartsim_sim::{
    Clock, Deadline, Duration, Engine, Fault, Input, Limits, Machine, NodeId, NodeSpec, Now,
    Outbox, Timestamp,
};

const A: NodeId = NodeId(0);
const B: NodeId = NodeId(1);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    Awaited,
    Try,
}

/// Node A sends `n1`, `n2`, ... to B every `every`; B records what it gets.
/// B also keeps one timer at `b_timer` (on its own clock) and records it.
struct Probe {
    me: NodeId,
    every: Duration,
    mode: Mode,
    b_timer: Option<Timestamp>,
    next: Option<Timestamp>,
    sent: u64,
}

impl Machine for Probe {
    type Msg = u64;
    fn handle(&mut self, now: Now, input: Input<u64>, out: &mut Outbox<u64>) {
        match input {
            Input::Start if self.me == A => self.next = Some(now.mono + self.every),
            Input::Start => self.next = self.b_timer,
            Input::Timeout if self.me == A => {
                self.sent += 1;
                let n = self.sent;
                out.record("tick", None, None, Some(format!("n{n}").into()));
                match self.mode {
                    Mode::Plain => out.send(B, n),
                    Mode::Awaited => out.send_awaited(B, n, n),
                    Mode::Try => out.try_send(B, n, n),
                }
                self.next = Some(now.mono + self.every);
            }
            Input::Timeout => {
                out.record(
                    "timer",
                    None,
                    None,
                    Some(format!("mono={}", now.mono).into()),
                );
                self.next = None;
            }
            Input::Recv { msg, .. } => {
                out.record("recv", None, None, Some(format!("n{msg}").into()));
            }
            Input::SendDone { token, result, .. } => {
                let r = if result.is_ok() { "ok" } else { "err" };
                out.record(
                    "done",
                    None,
                    Some(r.into()),
                    Some(format!("n{token}").into()),
                );
            }
            Input::Stop => {}
            _ => unreachable!("no connections here"),
        }
    }
    fn poll_timeout(&self) -> Option<Deadline> {
        self.next.map(|at| Deadline { at, reason: "tick" })
    }
    fn describe(msg: &u64) -> Cow<'static, str> {
        Cow::Owned(format!("n{msg}"))
    }
}

fn secs(s: u64) -> Timestamp {
    Timestamp::ZERO + Duration::from_secs(s)
}
fn ms(ms: u64) -> Timestamp {
    Timestamp::ZERO + Duration::from_ms(ms)
}

struct Setup {
    mode: Mode,
    b_timer: Option<Timestamp>,
    b_clock: Clock,
    end: Timestamp,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            mode: Mode::Plain,
            b_timer: None,
            b_clock: Clock::default(),
            end: secs(8),
        }
    }
}

/// Run A -> B (10 ms latency, A ticks every second) with `faults`; return
/// the decision lines as `"<t> <node> <kind> [reason] <msg>"`.
fn run(setup: Setup, faults: Vec<(Timestamp, Fault)>) -> Vec<String> {
    let link = LinkConfig {
        latency: Latency::Fixed(Duration::from_ms(10)),
        ..LinkConfig::default()
    };
    let nodes = vec![
        NodeSpec {
            name: "a".into(),
            clock: Clock::default(),
            start_at: Some(Timestamp::ZERO),
        },
        NodeSpec {
            name: "b".into(),
            clock: setup.b_clock,
            start_at: Some(Timestamp::ZERO),
        },
    ];
    let limits = Limits {
        end: setup.end,
        ..Limits::default()
    };
    let mut engine = Engine::new(
        nodes,
        Network::new(1, link),
        faults,
        limits,
        Level::Decision,
        |me| Probe {
            me,
            every: Duration::from_secs(1),
            mode: setup.mode,
            b_timer: setup.b_timer,
            next: None,
            sent: 0,
        },
    );
    engine.run().expect("within limits");
    let trace = engine.into_trace();
    trace
        .decisions()
        .filter(|r| r.kind != "start")
        .map(|r| {
            let mut line = format!("{} {} {}", r.t, trace.node_name(r.node), r.kind);
            for part in [&r.reason, &r.msg].into_iter().flatten() {
                line.push(' ');
                line.push_str(part);
            }
            line
        })
        .collect()
}

fn lines_of<'a>(lines: &'a [String], node_kind: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter(|l| l.contains(node_kind))
        .map(String::as_str)
        .collect()
}

#[test]
fn held_link_parks_messages_until_release_then_delivers_in_order() {
    let lines = run(
        Setup::default(),
        vec![
            (ms(1_500), Fault::Hold { from: A, to: B }),
            (secs(5), Fault::Release { from: A, to: B }),
        ],
    );
    assert_eq!(
        lines_of(&lines, " b recv"),
        [
            "0:00:01.010 b recv n1",
            "0:00:05.000 b recv n2",
            "0:00:05.000 b recv n3",
            "0:00:05.000 b recv n4",
            "0:00:05.010 b recv n5",
            "0:00:06.010 b recv n6",
            "0:00:07.010 b recv n7",
        ]
    );
    assert!(lines.contains(&"0:00:01.500 net hold a->b".to_string()));
    assert!(lines.contains(&"0:00:05.000 net release a->b".to_string()));
}

#[test]
fn hold_is_one_way() {
    // B -> A is held; A -> B traffic is untouched.
    let lines = run(
        Setup::default(),
        vec![
            (ms(500), Fault::Hold { from: B, to: A }),
            (secs(5), Fault::Release { from: B, to: A }),
        ],
    );
    assert_eq!(lines_of(&lines, " b recv").len(), 7);
    assert!(lines_of(&lines, " b recv")[1].starts_with("0:00:02.010"));
}

#[test]
fn stall_blocks_awaited_writes_until_release_but_not_try_sends() {
    let faults = || {
        vec![
            (ms(1_500), Fault::Stall { from: A, to: B }),
            (secs(5), Fault::Release { from: A, to: B }),
        ]
    };
    let awaited = run(
        Setup {
            mode: Mode::Awaited,
            ..Setup::default()
        },
        faults(),
    );
    let done = lines_of(&awaited, " a done");
    assert_eq!(
        done[0], "0:00:01.000 a done ok n1",
        "before the stall: at once"
    );
    // n2..n4 were written during the stall: their writes finish on release.
    assert_eq!(
        done[1..4],
        [
            "0:00:05.000 a done ok n2",
            "0:00:05.000 a done ok n3",
            "0:00:05.000 a done ok n4",
        ]
    );
    assert_eq!(
        done[4], "0:00:05.000 a done ok n5",
        "after release: at once"
    );
    // The messages themselves were parked like a hold's.
    assert_eq!(lines_of(&awaited, " b recv")[1], "0:00:05.000 b recv n2");

    let tried = run(
        Setup {
            mode: Mode::Try,
            ..Setup::default()
        },
        faults(),
    );
    let done = lines_of(&tried, " a done");
    assert_eq!(done[1], "0:00:02.000 a done ok n2", "try_send never blocks");
    assert_eq!(lines_of(&tried, " b recv")[1], "0:00:05.000 b recv n2");
}

#[test]
fn paused_node_queues_messages_and_fires_its_overdue_timer_after_them() {
    let lines = run(
        Setup {
            b_timer: Some(secs(3)),
            ..Setup::default()
        },
        vec![(ms(1_500), Fault::Pause(B)), (secs(5), Fault::Resume(B))],
    );
    let b: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains(" b "))
        .map(String::as_str)
        .collect();
    assert_eq!(
        b,
        [
            "0:00:01.010 b recv n1",
            "0:00:01.500 b pause",
            "0:00:05.000 b resume",
            "0:00:05.000 b recv n2",
            "0:00:05.000 b recv n3",
            "0:00:05.000 b recv n4",
            "0:00:05.000 b timer mono=0:00:05.000",
            "0:00:05.010 b recv n5",
            "0:00:06.010 b recv n6",
            "0:00:07.010 b recv n7",
        ]
    );
}

#[test]
fn paused_node_timer_not_yet_due_fires_on_time() {
    let lines = run(
        Setup {
            b_timer: Some(secs(6)),
            ..Setup::default()
        },
        vec![(ms(1_500), Fault::Pause(B)), (secs(5), Fault::Resume(B))],
    );
    assert!(lines.contains(&"0:00:06.000 b timer mono=0:00:06.000".to_string()));
}

#[test]
fn crash_of_a_paused_node_loses_what_it_queued() {
    let lines = run(
        Setup::default(),
        vec![
            (ms(1_500), Fault::Pause(B)),
            (secs(4), Fault::Crash(B)),
            (ms(4_500), Fault::Restart(B)),
        ],
    );
    assert_eq!(
        lines_of(&lines, " b recv"),
        [
            "0:00:01.010 b recv n1",
            "0:00:05.010 b recv n5",
            "0:00:06.010 b recv n6",
            "0:00:07.010 b recv n7",
        ]
    );
}

#[test]
fn drift_change_moves_a_pending_deadline() {
    // B's timer is for mono 10 s. At 4 s (mono 4 s) B's clock starts running
    // 25% fast: the remaining 6 s of its clock take 4.8 s of global time.
    let lines = run(
        Setup {
            b_timer: Some(secs(10)),
            end: secs(12),
            ..Setup::default()
        },
        vec![(
            secs(4),
            Fault::ClockDrift {
                node: B,
                ppm: 250_000,
            },
        )],
    );
    assert!(lines.contains(&"0:00:04.000 b clock-drift 250000ppm".to_string()));
    assert!(
        lines.contains(&"0:00:08.800 b timer mono=0:00:10.000".to_string()),
        "{lines:#?}"
    );
}
