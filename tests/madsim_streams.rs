//! Connections on both engines: a scripted machine (connect, write, close,
//! reset) runs on the main engine and on the madsim engine, where the
//! driver carries connections on madsim's `TcpStream`. The main engine's
//! inputs are checked exactly (times from `docs/streams.md`, one-way
//! latency 50 ms); madsim's must be the same decisions within
//! `ENGINE_TOLERANCE` (`docs/engines.md`, "Connections"). Built only with
//! `RUSTFLAGS="--cfg madsim"`:
//!
//! ```text
//! RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/madsim cargo test --test madsim_streams
//! ```

#![cfg(madsim)]

use std::borrow::Cow;

use heartsim::run::{decision_differences, decision_text, ENGINE_TOLERANCE};
use heartsim::sim::engine::{Deadline, Engine, Fault, Input, Limits, Machine, NodeSpec, Outbox};
use heartsim::sim::madsim_engine::{self, MadsimError, World};
use heartsim::sim::net::{Latency, LinkConfig, Network, Partition};
use heartsim::sim::rng::Ratio;
use heartsim::sim::trace::{Level, Trace};
use heartsim::sim::{Clock, ConnId, Duration, NodeId, Now, Timestamp};

const A: NodeId = NodeId(0);
const B: NodeId = NodeId(1);

/// What a scripted node does at a time (on its monotonic clock).
#[derive(Clone, Debug)]
enum Act {
    Listen,
    Connect(NodeId),
    /// Write on the node's newest connection (awaited: its `SendDone` is
    /// recorded).
    Write(&'static str),
    Close,
    Reset,
}

/// Does its script and records every input it gets as a decision, so that
/// the engines' decision traces can be compared.
struct Script {
    acts: Vec<(Timestamp, Act)>,
    conn: Option<ConnId>,
}

impl Machine for Script {
    type Msg = String;
    fn handle(&mut self, now: Now, input: Input<String>, out: &mut Outbox<String>) {
        let line = match &input {
            Input::Connected { conn, .. } => Some(format!("connected {conn}")),
            Input::Accepted { conn, .. } => {
                self.conn = Some(*conn);
                Some(format!("accepted {conn}"))
            }
            Input::ConnectFailed { error, .. } => Some(format!("connect-failed {error}")),
            Input::Data { msg, .. } => Some(format!("data {msg}")),
            Input::Closed { .. } => Some("closed".into()),
            Input::Reset { error, .. } => Some(format!("reset {error}")),
            Input::SendDone { result, .. } => Some(format!("done {result:?}")),
            Input::Stop => Some("stop".into()),
            _ => None,
        };
        let peer = match &input {
            Input::Connected { peer, .. }
            | Input::Accepted { peer, .. }
            | Input::ConnectFailed { peer, .. }
            | Input::Data { peer, .. }
            | Input::Closed { peer, .. }
            | Input::Reset { peer, .. } => Some(*peer),
            _ => None,
        };
        if let Some(line) = line {
            out.record("in", peer, None, Some(line.into()));
        }
        if matches!(input, Input::Start | Input::Timeout) {
            while self.acts.first().is_some_and(|(t, _)| *t <= now.mono) {
                let (_, act) = self.acts.remove(0);
                match act {
                    Act::Listen => out.listen(),
                    Act::Connect(to) => self.conn = Some(out.connect(to)),
                    Act::Write(m) => {
                        if let Some(c) = self.conn {
                            out.send_awaited(c, m.to_string(), 0);
                        }
                    }
                    Act::Close => {
                        if let Some(c) = self.conn {
                            out.close(c);
                        }
                    }
                    Act::Reset => {
                        if let Some(c) = self.conn {
                            out.reset(c);
                        }
                    }
                }
            }
        }
    }
    fn poll_timeout(&self) -> Option<Deadline> {
        self.acts.first().map(|(at, _)| Deadline {
            at: *at,
            reason: "act",
        })
    }
    fn describe(msg: &String) -> Cow<'static, str> {
        Cow::Owned(msg.clone())
    }
}

fn ms(ms: u64) -> Timestamp {
    Timestamp::ZERO + Duration::from_ms(ms)
}

/// Scripts for nodes a, b (and c, if given), on one 50 ms network.
struct Setup {
    scripts: Vec<Vec<(Timestamp, Act)>>,
    faults: Vec<(Timestamp, Fault)>,
    starts: Vec<Option<Timestamp>>,
    network: LinkConfig,
    end: Timestamp,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            scripts: vec![vec![(ms(0), Act::Connect(B))], vec![(ms(0), Act::Listen)]],
            faults: Vec::new(),
            starts: Vec::new(),
            network: LinkConfig {
                latency: Latency::Fixed(Duration::from_ms(50)),
                ..LinkConfig::default()
            },
            end: ms(10_000),
        }
    }
}

impl Setup {
    fn world(&self) -> World {
        let names = ["a", "b", "c"];
        World {
            nodes: (0..self.scripts.len())
                .map(|i| NodeSpec {
                    name: names[i].into(),
                    clock: Clock::default(),
                    start_at: self.starts.get(i).copied().unwrap_or(Some(Timestamp::ZERO)),
                })
                .collect(),
            network: self.network,
            links: Vec::new(),
            faults: self.faults.clone(),
            limits: Limits {
                end: self.end,
                ..Limits::default()
            },
            keep: Level::Decision,
            seed: 11,
        }
    }
    fn factory(&self) -> impl Fn(NodeId) -> Script + Send + Sync + 'static {
        let scripts = self.scripts.clone();
        move |me| Script {
            acts: scripts[me.0].clone(),
            conn: None,
        }
    }
    fn on_main(&self) -> Trace {
        let world = self.world();
        let mut engine = Engine::new(
            world.nodes.clone(),
            Network::new(world.seed, world.network),
            world.faults.clone(),
            world.limits,
            world.keep,
            self.factory(),
        );
        engine.run().expect("within limits");
        engine.into_trace()
    }
    fn on_madsim(&self) -> Result<Trace, MadsimError> {
        madsim_engine::run(&self.world(), self.factory()).map(|(t, _)| t)
    }
}

/// The scripts' inputs, as `"<t> <node> <what>"`.
fn inputs(trace: &Trace) -> Vec<String> {
    trace
        .decisions()
        .filter(|r| r.kind == "in")
        .map(|r| {
            format!(
                "{} {} {}",
                r.t,
                trace.node_name(r.node),
                r.msg.as_deref().unwrap_or("")
            )
        })
        .collect()
}

/// Run on both engines: the main engine's inputs must be `expected`, and
/// madsim's decisions the same within the engines' tolerance.
fn both(setup: &Setup, expected: &[&str]) -> Trace {
    let main = setup.on_main();
    assert_eq!(inputs(&main), expected, "main engine");
    let madsim = setup
        .on_madsim()
        .unwrap_or_else(|e| panic!("runs on madsim: {e}"));
    let diff = decision_differences(&main, &madsim, ENGINE_TOLERANCE, setup.end);
    assert!(
        diff.is_empty(),
        "{diff:#?}\nmain:\n{}madsim:\n{}",
        decision_text(&main),
        decision_text(&madsim)
    );
    madsim
}

#[test]
fn connect_data_both_ways_and_close_agree() {
    // a connects and writes at once (the write waits for the handshake);
    // b answers at 1 s; a closes at 2 s (b reads end of stream); b's write
    // at 3 s reaches a closed socket, whose RST resets b's end.
    let madsim = both(
        &Setup {
            scripts: vec![
                vec![
                    (ms(0), Act::Connect(B)),
                    (ms(0), Act::Write("hello")),
                    (ms(2_000), Act::Close),
                ],
                vec![
                    (ms(0), Act::Listen),
                    (ms(1_000), Act::Write("hi")),
                    (ms(3_000), Act::Write("late")),
                ],
            ],
            ..Setup::default()
        },
        &[
            "0:00:00.000 a done Ok(())",
            "0:00:00.100 a connected conn#1",
            "0:00:00.150 b accepted conn#1",
            "0:00:00.150 b data hello",
            "0:00:01.000 b done Ok(())",
            "0:00:01.050 a data hi",
            "0:00:02.050 b closed",
            "0:00:03.000 b done Ok(())",
            "0:00:03.100 b reset connection reset",
        ],
    );
    // madsim (seed 11): the driver's Start comes 1 ms after its node's
    // (binding the datagram endpoint sleeps madsim's minimum 1 ms); a
    // connect costs three such socket calls instead of a round trip, and
    // the acceptor hears of it with the HELLO, one latency later. Data
    // takes exactly the latency. End of stream and the reset come at
    // once, not a latency or a round trip later.
    assert_eq!(
        inputs(&madsim),
        [
            "0:00:00.001 a done Ok(())",
            "0:00:00.004 a connected conn#1",
            "0:00:00.054 b accepted conn#1",
            "0:00:00.055 b data hello",
            "0:00:01.000 b done Ok(())",
            "0:00:01.050 a data hi",
            "0:00:02.000 b closed",
            "0:00:03.000 b done Ok(())",
            "0:00:03.000 b reset connection reset",
        ]
    );
}

#[test]
fn a_refused_connect_agrees() {
    both(
        &Setup {
            scripts: vec![vec![(ms(0), Act::Connect(B))], Vec::new()],
            ..Setup::default()
        },
        &["0:00:00.100 a connect-failed connection refused"],
    );
}

#[test]
fn a_reset_by_the_peer_agrees_and_later_writes_fail() {
    both(
        &Setup {
            scripts: vec![
                vec![(ms(0), Act::Connect(B)), (ms(2_000), Act::Write("after"))],
                vec![(ms(0), Act::Listen), (ms(1_000), Act::Reset)],
            ],
            ..Setup::default()
        },
        &[
            "0:00:00.100 a connected conn#1",
            "0:00:00.150 b accepted conn#1",
            "0:00:01.050 a reset connection reset",
            "0:00:02.000 a done Err(BrokenPipe)",
        ],
    );
}

#[test]
fn a_killed_process_agrees_and_its_restart_listens_again() {
    // b's process is killed at 2 s: a reads end of stream; a's write at
    // 2.5 s is reset; a connect at 3 s is refused; b restarts at 4 s and
    // a's connect at 5 s goes through.
    both(
        &Setup {
            scripts: vec![
                vec![
                    (ms(0), Act::Connect(B)),
                    (ms(2_500), Act::Write("anyone?")),
                    (ms(3_000), Act::Connect(B)),
                    (ms(5_000), Act::Connect(B)),
                ],
                vec![(ms(0), Act::Listen)],
            ],
            faults: vec![(ms(2_000), Fault::Kill(B)), (ms(4_000), Fault::Restart(B))],
            ..Setup::default()
        },
        &[
            "0:00:00.100 a connected conn#1",
            "0:00:00.150 b accepted conn#1",
            "0:00:02.050 a closed",
            "0:00:02.500 a done Ok(())",
            "0:00:02.600 a reset connection reset",
            "0:00:03.100 a connect-failed connection refused",
            "0:00:05.100 a connected conn#3",
            "0:00:05.150 b accepted conn#3",
        ],
    );
}

#[test]
fn a_stopped_process_agrees() {
    // stop: the machine gets Stop, then its connections close as on kill.
    both(
        &Setup {
            scripts: vec![vec![(ms(0), Act::Connect(B))], vec![(ms(0), Act::Listen)]],
            faults: vec![(ms(1_000), Fault::Stop(B))],
            ..Setup::default()
        },
        &[
            "0:00:00.100 a connected conn#1",
            "0:00:00.150 b accepted conn#1",
            "0:00:01.000 b stop",
            "0:00:01.050 a closed",
        ],
    );
}

#[test]
fn a_paused_listener_agrees() {
    // b is paused 1..3 s: a's connect and write at 1.5 s are taken by
    // b's kernel; b's process sees them when it resumes.
    both(
        &Setup {
            scripts: vec![
                vec![
                    (ms(1_500), Act::Connect(B)),
                    (ms(1_500), Act::Write("wake")),
                ],
                vec![(ms(0), Act::Listen)],
            ],
            faults: vec![(ms(1_000), Fault::Pause(B)), (ms(3_000), Fault::Resume(B))],
            ..Setup::default()
        },
        &[
            "0:00:01.500 a done Ok(())",
            "0:00:01.600 a connected conn#1",
            "0:00:03.000 b accepted conn#1",
            "0:00:03.000 b data wake",
        ],
    );
}

#[test]
fn connection_ids_are_unique_in_the_run_and_agree_at_both_ends() {
    // Each node's driver has its own outbox; the ids still come from one
    // run-wide counter, and the acceptor learns the connector's id.
    both(
        &Setup {
            scripts: vec![
                vec![(ms(0), Act::Connect(B)), (ms(1_000), Act::Write("from a"))],
                vec![(ms(0), Act::Listen)],
                vec![
                    (ms(500), Act::Connect(B)),
                    (ms(1_000), Act::Write("from c")),
                ],
            ],
            ..Setup::default()
        },
        &[
            "0:00:00.100 a connected conn#1",
            "0:00:00.150 b accepted conn#1",
            "0:00:00.600 c connected conn#2",
            "0:00:00.650 b accepted conn#2",
            "0:00:01.000 a done Ok(())",
            "0:00:01.000 c done Ok(())",
            "0:00:01.050 b data from a",
            "0:00:01.050 b data from c",
        ],
    );
}

fn refused(setup: &Setup) -> String {
    match setup.on_madsim() {
        Err(MadsimError::Unsupported(why)) => why,
        other => panic!(
            "expected a refusal, got {:?}",
            other.map(|t| decision_text(&t))
        ),
    }
}

#[test]
fn what_madsim_cannot_carry_is_refused_with_the_reason() {
    let crash = refused(&Setup {
        faults: vec![(ms(1_000), Fault::Crash(B)), (ms(2_000), Fault::Restart(B))],
        ..Setup::default()
    });
    assert!(crash.contains("a crash"), "{crash}");
    let reboot = refused(&Setup {
        faults: vec![(ms(1_000), Fault::Restart(B))],
        ..Setup::default()
    });
    assert!(reboot.contains("restart of a running node"), "{reboot}");
    let loss = refused(&Setup {
        network: LinkConfig {
            latency: Latency::Fixed(Duration::from_ms(50)),
            drop: Ratio::new(1, 100).expect("a ratio"),
            ..LinkConfig::default()
        },
        ..Setup::default()
    });
    assert!(loss.contains("loss with connections"), "{loss}");
    let partition = refused(&Setup {
        faults: vec![(
            ms(1_000),
            Fault::Partition(vec![Partition {
                from: [A].into(),
                to: [B].into(),
            }]),
        )],
        ..Setup::default()
    });
    assert!(partition.contains("partitions"), "{partition}");
    let down = refused(&Setup {
        starts: vec![Some(Timestamp::ZERO), Some(ms(5_000))],
        ..Setup::default()
    });
    assert!(down.contains("host that is down"), "{down}");
}

#[test]
fn a_crash_before_any_connection_and_datagram_runs_are_not_refused() {
    // b crashes and comes back before anyone connects: nothing to tell apart.
    both(
        &Setup {
            scripts: vec![
                vec![(ms(3_000), Act::Connect(B))],
                vec![(ms(0), Act::Listen)],
            ],
            faults: vec![(ms(1_000), Fault::Crash(B)), (ms(2_000), Fault::Restart(B))],
            ..Setup::default()
        },
        &[
            "0:00:03.100 a connected conn#1",
            "0:00:03.150 b accepted conn#1",
        ],
    );
}

#[test]
fn madsim_stream_runs_are_deterministic() {
    let setup = Setup {
        scripts: vec![
            vec![
                (ms(0), Act::Connect(B)),
                (ms(10), Act::Write("1")),
                (ms(20), Act::Write("2")),
                (ms(30), Act::Close),
            ],
            vec![(ms(0), Act::Listen), (ms(15), Act::Write("x"))],
            vec![(ms(0), Act::Connect(B)), (ms(25), Act::Write("3"))],
        ],
        ..Setup::default()
    };
    let one = setup.on_madsim().expect("runs");
    let two = setup.on_madsim().expect("runs");
    assert_eq!(decision_text(&one), decision_text(&two));
}
