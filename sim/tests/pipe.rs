//! The pipe medium through the engine: a spawned child is ready after its
//! spawn time and reads what waited meanwhile, in order; its death is EOF
//! at once for the parent and a write after it is `broken pipe`; a
//! terminated child ends at once; a host crash takes the children with it;
//! a killed parent's children read EOF.

use std::borrow::Cow;

use heartsim_sim::net::{LinkConfig, Network};
use heartsim_sim::trace::Level;
use heartsim_sim::{
    Clock, ConnId, Deadline, Dest, Duration, Engine, Fault, Input, Limits, Machine, NodeId,
    NodeSpec, Now, Outbox, Timestamp,
};

/// Words on the pipe. The parent's script: at start, spawn a child
/// (ready after 2 s) and write `a`, `b`, then at its timer `cmd`.
#[derive(Clone, Debug)]
enum Word {
    /// The child spec: what the child does with each frame.
    Child {
        echo: bool,
    },
    Text(&'static str),
}

enum Proc {
    Parent {
        pipe: Option<ConnId>,
        /// At 5 s: write this (or terminate if `"TERM"`).
        at_5s: &'static str,
        fired: bool,
    },
    Child {
        echo: bool,
    },
}

impl Machine for Proc {
    type Msg = Word;
    fn handle(&mut self, now: Now, input: Input<Word>, out: &mut Outbox<Word>) {
        let text = |s: String| Some(Cow::Owned(s));
        match self {
            Proc::Parent { pipe, at_5s, fired } => match input {
                Input::Start => {
                    let conn = out.spawn(
                        "kid".into(),
                        Word::Child { echo: true },
                        Duration::from_secs(2),
                    );
                    out.send(Dest::Conn(conn), Word::Text("a"));
                    out.send(Dest::Conn(conn), Word::Text("b"));
                    *pipe = Some(conn);
                }
                Input::Timeout => {
                    *fired = true;
                    let conn = pipe.expect("spawned");
                    if *at_5s == "TERM" {
                        out.terminate(conn);
                    } else {
                        out.send_awaited(Dest::Conn(conn), Word::Text(at_5s), 7);
                    }
                }
                Input::Data { msg, .. } => out.record("got", None, None, text(format!("{msg:?}"))),
                Input::Closed { conn, .. } => {
                    out.record("eof", None, None, None);
                    out.send_awaited(Dest::Conn(conn), Word::Text("late"), 8);
                }
                Input::SendDone { result, .. } => {
                    out.record("sent", None, None, text(format!("{result:?}")));
                }
                _ => {}
            },
            Proc::Child { echo } => match input {
                Input::Start => out.record(
                    "child-start",
                    Some(NodeId(0)),
                    None,
                    text(now.mono.to_string()),
                ),
                Input::Data {
                    conn,
                    msg: Word::Text(w),
                    ..
                } => {
                    if w == "die" {
                        out.exit();
                        // Nothing after the exit happens.
                        out.send(Dest::Conn(conn), Word::Text("after death"));
                    } else if *echo {
                        out.send(Dest::Conn(conn), Word::Text(w));
                    }
                }
                Input::Closed { .. } => out.record("child-eof", None, None, None),
                _ => {}
            },
        }
    }
    fn poll_timeout(&self) -> Option<Deadline> {
        match self {
            Proc::Parent { fired: false, .. } => Some(Deadline {
                at: Timestamp::ZERO + Duration::from_secs(5),
                reason: "script",
            }),
            _ => None,
        }
    }
    fn describe(msg: &Word) -> Cow<'static, str> {
        Cow::Owned(format!("{msg:?}"))
    }
    fn spawned(spec: Word) -> Option<Proc> {
        match spec {
            Word::Child { echo } => Some(Proc::Child { echo }),
            Word::Text(_) => None,
        }
    }
}

/// Run the parent `p` with `at_5s` and `faults` (ms, fault) for 60 s; the
/// decision lines, `t node kind reason msg`.
fn run(at_5s: &'static str, faults: Vec<(u64, Fault)>) -> Vec<String> {
    let nodes = vec![NodeSpec {
        name: "p".into(),
        clock: Clock::default(),
        start_at: Some(Timestamp::ZERO),
    }];
    let faults = faults
        .into_iter()
        .map(|(ms, f)| (Timestamp::ZERO + Duration::from_ms(ms), f))
        .collect();
    let limits = Limits {
        end: Timestamp::ZERO + Duration::from_secs(60),
        ..Limits::default()
    };
    let mut engine = Engine::new(
        nodes,
        Network::new(1, LinkConfig::default()),
        faults,
        limits,
        Level::Decision,
        |_| Proc::Parent {
            pipe: None,
            at_5s,
            fired: false,
        },
    );
    engine.run().expect("within limits");
    let trace = engine.into_trace();
    trace
        .decisions()
        .filter(|r| r.kind != "start")
        .map(|r| {
            format!(
                "{} {} {} {} {}",
                r.t,
                trace.node_name(r.node),
                r.kind,
                r.reason.as_deref().unwrap_or("-"),
                r.msg.as_deref().unwrap_or("-")
            )
        })
        .collect()
}

#[test]
fn a_child_is_ready_after_its_spawn_time_and_reads_what_waited_in_order() {
    assert_eq!(
        run("c", vec![]),
        [
            "0:00:00.000 p spawn - kid",
            "0:00:02.000 p ready - kid",
            "0:00:02.000 kid child-start - 0:00:02.000",
            "0:00:02.000 p got - Text(\"a\")",
            "0:00:02.000 p got - Text(\"b\")",
            "0:00:05.000 p sent - Ok(())",
            "0:00:05.000 p got - Text(\"c\")",
        ]
    );
}

#[test]
fn a_child_that_exits_is_eof_at_once_and_a_later_write_is_a_broken_pipe() {
    // `die` makes the child exit; nothing it wrote after its exit arrives.
    let lines = run("die", vec![]);
    assert_eq!(
        lines[5..],
        [
            "0:00:05.000 p sent - Ok(())",
            "0:00:05.000 p exit exited kid",
            "0:00:05.000 p eof - -",
            "0:00:05.000 p sent - Err(BrokenPipe)",
        ]
    );
}

#[test]
fn a_terminated_child_ends_at_once() {
    let lines = run("TERM", vec![]);
    assert_eq!(
        lines[5..],
        [
            "0:00:05.000 p exit terminated kid",
            "0:00:05.000 p eof - -",
            "0:00:05.000 p sent - Err(BrokenPipe)",
        ]
    );
}

#[test]
fn a_host_crash_takes_the_children_with_it_and_a_kill_leaves_them_eof() {
    let crash = run("c", vec![(3_000, Fault::Crash(NodeId(0)))]);
    assert_eq!(
        crash[5..],
        [
            "0:00:03.000 p crash - -",
            "0:00:03.000 p exit host down kid"
        ]
    );
    let kill = run("c", vec![(3_000, Fault::Kill(NodeId(0)))]);
    assert_eq!(
        kill[5..],
        ["0:00:03.000 p kill - -", "0:00:03.000 kid child-eof - -"]
    );
}

#[test]
fn writes_before_ready_wait_and_a_child_killed_before_ready_never_starts() {
    // The parent dies at 1 s, before the child is ready at 2 s: the child
    // reads EOF once it runs (after what waited).
    let lines = run("c", vec![(1_000, Fault::Kill(NodeId(0)))]);
    assert_eq!(
        lines,
        [
            "0:00:00.000 p spawn - kid",
            "0:00:01.000 p kill - -",
            "0:00:02.000 p ready - kid",
            "0:00:02.000 kid child-start - 0:00:02.000",
            "0:00:02.000 kid child-eof - -",
        ]
    );
}

/// A `start` of a node whose process still runs (a stopped one that
/// lingers, or a fault on a running node) ends that process first, as a
/// kill does: its children read EOF. Before, the new machine replaced it
/// silently and the old children never heard of it.
#[test]
fn a_start_of_a_running_node_ends_its_process_first() {
    let got = run("c", vec![(3_000, Fault::Start(NodeId(0)))]);
    assert!(
        got.contains(&"0:00:03.000 kid child-eof - -".to_string()),
        "{got:#?}"
    );
}
