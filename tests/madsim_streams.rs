//! Connections on both engines: a scripted machine (connect, write, close,
//! reset) runs on the main engine and on the madsim engine, whose driver
//! hosts the same stream stack over madsim's datagrams. The main engine's
//! inputs are checked exactly (times from `docs/streams.md`, one-way
//! latency 50 ms); madsim's must be the same decisions within
//! `ENGINE_TOLERANCE` (`docs/engines.md`, "Connections"), and where
//! madsim's socket costs stretch TCP's backoff grid, on its own grid.
//! Built only with `RUSTFLAGS="--cfg madsim"`:
//!
//! ```text
//! RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/madsim cargo test --test madsim_streams
//! ```

#![cfg(madsim)]

use heartsim::run::{decision_differences, decision_text, ENGINE_TOLERANCE};
use heartsim::sim::engine::{Engine, Fault, Limits, NodeSpec};
use heartsim::sim::madsim_engine::{self, MadsimError, World};
use heartsim::sim::net::{Latency, LinkConfig, Network, Partition};
use heartsim::sim::rng::Ratio;
use heartsim::sim::script::{Act, Script};
use heartsim::sim::trace::Record;
use heartsim::sim::trace::{Level, Trace};
use heartsim::sim::{Clock, Duration, NodeId, Timestamp};

const A: NodeId = NodeId(0);
const B: NodeId = NodeId(1);

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
            tcp: Default::default(),
        }
    }
    fn factory(&self) -> impl Fn(NodeId) -> Script + Send + Sync + 'static {
        let scripts = self.scripts.clone();
        move |me| Script::new(scripts[me.0].clone())
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
    // (binding the endpoint sleeps madsim's minimum 1 ms), and every packet
    // costs about 1 ms at the send and 1 ms at the receive: a round trip
    // is 104 ms, not 100. Otherwise the same handshake, data, FIN and RST.
    assert_eq!(
        inputs(&madsim),
        [
            "0:00:00.001 a done Ok(())",
            "0:00:00.105 a connected conn#1",
            "0:00:00.157 b accepted conn#1",
            // The ACK completing the handshake and the first data are two
            // datagrams, 1 ms apart on madsim.
            "0:00:00.158 b data hello",
            "0:00:01.000 b done Ok(())",
            "0:00:01.052 a data hi",
            "0:00:02.052 b closed",
            "0:00:03.000 b done Ok(())",
            "0:00:03.104 b reset connection reset",
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
fn a_killed_process_sends_fin_refuses_and_its_restart_listens_again() {
    // b's process is killed at 2 s, its host stays up: its kernel sends a
    // FIN (a reads end of stream a latency later); a's write at 2.5 s is
    // answered with a RST; a connect at 3 s is refused (nobody listens);
    // b's process restarts at 4 s and a's connect at 5 s goes through.
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
fn a_paused_process_killed_with_unread_data_resets_on_both_engines() {
    // b is paused at 1 s; a's write at 1.5 s reaches b's kernel, unread;
    // b's process dies at 2 s: its kernel resets the connection (Linux
    // `__tcp_close`, "Unread data was tossed"), and a reads a reset.
    both(
        &Setup {
            scripts: vec![
                vec![(ms(0), Act::Connect(B)), (ms(1_500), Act::Write("unread"))],
                vec![(ms(0), Act::Listen)],
            ],
            faults: vec![(ms(1_000), Fault::Pause(B)), (ms(2_000), Fault::Kill(B))],
            ..Setup::default()
        },
        &[
            "0:00:00.100 a connected conn#1",
            "0:00:00.150 b accepted conn#1",
            "0:00:01.500 a done Ok(())",
            "0:00:02.050 a reset connection reset",
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

/// When `node`'s script got each input matching `what`.
fn times(trace: &Trace, node: &str, what: &str) -> Vec<Timestamp> {
    trace
        .decisions()
        .filter(|r: &&Record| {
            r.kind == "in" && trace.node_name(r.node) == node && r.msg.as_deref() == Some(what)
        })
        .map(|r| r.t)
        .collect()
}

fn partition(from: NodeId, to: NodeId) -> Fault {
    Fault::Partition(vec![Partition {
        from: [from].into(),
        to: [to].into(),
    }])
}

#[test]
fn a_write_into_a_partition_arrives_on_the_rto_grid_after_the_heal() {
    // docs/streams.md's worked example: a write at 10 s into a partition
    // from 9 s to 99 s. RTO 300 ms (RTT 100 ms): tries at 10 + 0.3, 0.9,
    // 2.1, 4.5, 9.3, 18.9, 38.1, 76.5, 153.3 s; the first after the heal
    // gets through, so the data arrives at 163.35 s.
    let setup = Setup {
        scripts: vec![
            vec![(ms(0), Act::Connect(B)), (ms(10_000), Act::Write("late"))],
            vec![(ms(0), Act::Listen)],
        ],
        faults: vec![(ms(9_000), partition(A, B)), (ms(99_000), Fault::Heal)],
        end: ms(200_000),
        ..Setup::default()
    };
    let main = setup.on_main();
    assert_eq!(times(&main, "b", "data late"), [ms(163_350)]);
    // On madsim the round trip is 104 ms (its socket costs). Past 100 ms
    // the variance term 2R exceeds its 200 ms floor, so RTO = 3R = 312 ms,
    // and the ninth try, 511 RTOs after the write, comes 6 s later (at
    // 169.48 s with this seed): the same grid, stretched.
    let madsim = setup.on_madsim().expect("runs on madsim");
    let got = times(&madsim, "b", "data late");
    assert_eq!(got.len(), 1, "{}", decision_text(&madsim));
    let (lo, hi) = (ms(10_000 + 511 * 300), ms(10_000 + 511 * 320 + 60));
    assert!(lo <= got[0] && got[0] <= hi, "{got:?}");
}

#[test]
fn data_under_loss_arrives_once_in_order_on_the_rto_grid() {
    // 20/100 of madsim's packets are lost: every write still arrives, once
    // and in order, each a latency after its write or after one of its
    // retransmissions (RTO about 300 ms, doubling).
    let writes: Vec<(Timestamp, Act)> = (1..=8)
        .map(|i| {
            (
                ms(10_000 * i),
                Act::Write(["1", "2", "3", "4", "5", "6", "7", "8"][i as usize - 1]),
            )
        })
        .collect();
    let setup = Setup {
        scripts: vec![
            [vec![(ms(0), Act::Connect(B))], writes].concat(),
            vec![(ms(0), Act::Listen)],
        ],
        network: LinkConfig {
            latency: Latency::Fixed(Duration::from_ms(50)),
            drop: Ratio::new(20, 100).expect("a ratio"),
            ..LinkConfig::default()
        },
        end: ms(100_000),
        ..Setup::default()
    };
    let madsim = setup.on_madsim().expect("runs on madsim");
    let text = decision_text(&madsim);
    let data: Vec<&Record> = madsim
        .decisions()
        .filter(|r| r.kind == "in" && r.msg.as_deref().is_some_and(|m| m.starts_with("data")))
        .collect();
    let got: Vec<&str> = data.iter().filter_map(|r| r.msg.as_deref()).collect();
    assert_eq!(
        got,
        ["data 1", "data 2", "data 3", "data 4", "data 5", "data 6", "data 7", "data 8"],
        "{text}"
    );
    let mut retransmitted = 0;
    for (i, r) in data.iter().enumerate() {
        let written = ms(10_000 * (i as u64 + 1));
        let late = r.t.saturating_since(written).as_us();
        // A try after n expiries: (2^n - 1) RTOs after the write, then
        // the latency (50 ms, plus madsim's few ms per packet).
        let on_grid = (0..6u32).any(|n| {
            let rtos = (1u64 << n) - 1;
            let lo = rtos * 300_000 + 50_000;
            let hi = rtos * 320_000 + 60_000;
            (lo..=hi).contains(&late)
        });
        assert!(
            on_grid,
            "data {} arrived {late} us after its write\n{text}",
            i + 1
        );
        retransmitted += usize::from(late > 100_000);
    }
    assert!(
        retransmitted > 0,
        "no loss to repair with this seed\n{text}"
    );
}

#[test]
fn a_crashed_host_is_silent_and_after_its_restart_answers_with_a_reset() {
    // b's host crashes at 2 s: a hears nothing (no end of stream). a's
    // write at 3 s is retransmitted at 3.3, 3.9, 5.1, 7.5, 12.3 s; b is
    // back at 10 s with no connections, so the try at 12.3 s is answered
    // with a RST: a's connection is reset a round trip later, at 12.4 s.
    let setup = Setup {
        scripts: vec![
            vec![(ms(0), Act::Connect(B)), (ms(3_000), Act::Write("there?"))],
            vec![(ms(0), Act::Listen)],
        ],
        faults: vec![
            (ms(2_000), Fault::Crash(B)),
            (ms(10_000), Fault::Restart(B)),
        ],
        end: ms(20_000),
        ..Setup::default()
    };
    assert_eq!(
        inputs(&setup.on_main()),
        [
            "0:00:00.100 a connected conn#1",
            "0:00:00.150 b accepted conn#1",
            "0:00:03.000 a done Ok(())",
            "0:00:12.400 a reset connection reset",
        ]
    );
    // madsim: the same, on its stretched grid (RTO 312 ms, see the
    // partition case): the fifth try at 3 s + 31 RTOs, 12.672 s, and the
    // RST a round trip later.
    let madsim = setup.on_madsim().expect("runs on madsim");
    let text = decision_text(&madsim);
    assert!(
        times(&madsim, "a", "closed").is_empty(),
        "silence, not a FIN\n{text}"
    );
    let reset = times(&madsim, "a", "reset connection reset");
    let (lo, hi) = (ms(3_000 + 31 * 300 + 100), ms(3_000 + 31 * 320 + 110));
    assert!(
        reset.len() == 1 && lo <= reset[0] && reset[0] <= hi,
        "{text}"
    );
}

#[test]
fn a_connect_to_a_down_host_times_out_and_one_that_comes_up_connects() {
    // b never starts: SYNs at 0, 1, 3, 7, 15, 31, 63 s, then timed out at
    // 127 s. c starts at 5 s: the SYN of 7 s reaches it.
    both(
        &Setup {
            scripts: vec![
                vec![(ms(0), Act::Connect(B)), (ms(0), Act::Connect(NodeId(2)))],
                vec![(ms(0), Act::Listen)],
                vec![(ms(0), Act::Listen)],
            ],
            starts: vec![Some(Timestamp::ZERO), None, Some(ms(5_000))],
            end: ms(200_000),
            ..Setup::default()
        },
        &[
            "0:00:07.100 a connected conn#2",
            "0:00:07.150 c accepted conn#2",
            "0:02:07.000 a connect-failed connection timed out",
        ],
    );
}

#[test]
fn a_broken_link_resets_the_writer_and_the_peer_learns_on_its_next_write() {
    // a -> b breaks at 2 s: a's write at 3 s fails with connection reset
    // and a's end is gone (its reads fail too). b's write at 4 s reaches
    // a host without that connection: a RST resets b's end.
    both(
        &Setup {
            scripts: vec![
                vec![(ms(0), Act::Connect(B)), (ms(3_000), Act::Write("lost"))],
                vec![(ms(0), Act::Listen), (ms(4_000), Act::Write("hello?"))],
            ],
            faults: vec![(ms(2_000), Fault::Break { from: A, to: B })],
            ..Setup::default()
        },
        &[
            "0:00:00.100 a connected conn#1",
            "0:00:00.150 b accepted conn#1",
            "0:00:03.000 a done Err(ConnectionReset)",
            "0:00:03.000 a reset connection reset",
            "0:00:04.000 b done Ok(())",
            "0:00:04.100 b reset connection reset",
        ],
    );
}

#[test]
fn a_rebooted_host_resets_its_old_connections() {
    // A restart of a running node reboots its host: its peer's next write
    // meets a host without the connection.
    both(
        &Setup {
            scripts: vec![
                vec![(ms(0), Act::Connect(B)), (ms(2_000), Act::Write("still?"))],
                vec![(ms(0), Act::Listen)],
            ],
            faults: vec![(ms(1_000), Fault::Restart(B))],
            ..Setup::default()
        },
        &[
            "0:00:00.100 a connected conn#1",
            "0:00:00.150 b accepted conn#1",
            "0:00:02.000 a done Ok(())",
            "0:00:02.100 a reset connection reset",
        ],
    );
}

#[test]
fn held_links_are_still_refused() {
    let held = Setup {
        faults: vec![(ms(1_000), Fault::Hold { from: A, to: B })],
        ..Setup::default()
    };
    match held.on_madsim() {
        Err(MadsimError::Unsupported(why)) => assert!(why.contains("held"), "{why}"),
        other => panic!(
            "expected a refusal, got {:?}",
            other.map(|t| decision_text(&t))
        ),
    }
}

#[test]
fn a_crash_before_any_connection_agrees() {
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
