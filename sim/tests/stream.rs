//! The stream medium, driven by a scripted machine: every expected time is
//! derived by hand from the rules in `docs/streams.md` (one-way latency
//! 50 ms, so the first RTT sample is 100 ms and the RTO 300 ms).

use heartsim_sim::net::{Latency, LinkConfig, Network, Partition};
use heartsim_sim::script::{Act, Script};
use heartsim_sim::trace::Level;
use heartsim_sim::{
    Clock, Deadline, Duration, Engine, Fault, Input, Limits, Machine, NodeId, NodeSpec, Now,
    Outbox, TcpConfig, Timestamp,
};
use std::borrow::Cow;

const A: NodeId = NodeId(0);
const B: NodeId = NodeId(1);

fn ms(ms: u64) -> Timestamp {
    Timestamp::ZERO + Duration::from_ms(ms)
}

struct World {
    a: Vec<(Timestamp, Act)>,
    b: Vec<(Timestamp, Act)>,
    faults: Vec<(Timestamp, Fault)>,
    b_start: Option<Timestamp>,
    end: Timestamp,
    link: LinkConfig,
    tcp: TcpConfig,
}

impl Default for World {
    fn default() -> Self {
        World {
            a: vec![(ms(0), Act::Connect(B))],
            b: vec![(ms(0), Act::Listen)],
            faults: Vec::new(),
            b_start: Some(Timestamp::ZERO),
            end: ms(3_600_000),
            link: LinkConfig {
                latency: Latency::Fixed(Duration::from_ms(50)),
                ..LinkConfig::default()
            },
            tcp: TcpConfig::default(),
        }
    }
}

/// The inputs each node got, as `"<t> <node> <what>"`, and the whole trace.
fn run_with(world: World, keep: Level) -> (Vec<String>, Vec<String>) {
    let nodes = vec![
        NodeSpec {
            name: "a".into(),
            clock: Clock::default(),
            start_at: Some(Timestamp::ZERO),
        },
        NodeSpec {
            name: "b".into(),
            clock: Clock::default(),
            start_at: world.b_start,
        },
    ];
    let limits = Limits {
        end: world.end,
        ..Limits::default()
    };
    let (a, b) = (world.a, world.b);
    let mut engine = Engine::new(
        nodes,
        Network::new(7, world.link),
        world.faults,
        limits,
        keep,
        move |me| Script::new(if me == A { a.clone() } else { b.clone() }),
    )
    .with_tcp(world.tcp);
    engine.run().expect("within limits");
    let trace = engine.trace();
    let line = |r: &heartsim_sim::trace::Record| {
        format!(
            "{} {} {} {}",
            r.t,
            trace.node_name(r.node),
            r.kind,
            r.reason.as_deref().unwrap_or(""),
        ) + r.msg.as_deref().unwrap_or("")
    };
    let inputs = trace
        .records()
        .filter(|r| r.kind == "in")
        .map(|r| {
            format!(
                "{} {} {}",
                r.t,
                trace.node_name(r.node),
                r.msg.as_deref().unwrap()
            )
        })
        .collect();
    let all = trace.records().map(line).collect();
    (inputs, all)
}

fn run(world: World) -> Vec<String> {
    run_with(world, Level::Decision).0
}

fn partition(from: NodeId, to: NodeId) -> Fault {
    Fault::Partition(vec![Partition {
        from: [from].into(),
        to: [to].into(),
    }])
}

#[test]
fn connect_takes_one_round_trip_and_accept_comes_with_the_first_data() {
    let got = run(World {
        a: vec![(ms(0), Act::Connect(B)), (ms(0), Act::Write("hello"))],
        ..World::default()
    });
    // SYN 0 -> 50, SYN-ACK 50 -> 100: connected. The ACK and the queued
    // write leave at 100 and arrive at 150.
    assert_eq!(
        got,
        [
            "0:00:00.000 a done Ok(())",
            "0:00:00.100 a connected conn#1",
            "0:00:00.150 b accepted conn#1",
            "0:00:00.150 b data hello",
        ]
    );
}

#[test]
fn one_lost_segment_is_retransmitted_after_the_rto() {
    // The write at 1 s is cut off (a -> b blocked 0.9..1.2 s). RTO after
    // one 100 ms sample: 100 + max(2 * 100, 200) = 300 ms: resent at 1.3,
    // arrives 1.35.
    let got = run(World {
        a: vec![(ms(0), Act::Connect(B)), (ms(1_000), Act::Write("m1"))],
        faults: vec![(ms(900), partition(A, B)), (ms(1_200), Fault::Heal)],
        ..World::default()
    });
    assert_eq!(got.last().unwrap(), "0:00:01.350 b data m1");
}

#[test]
fn consecutive_losses_double_the_rto() {
    // Blocked until 3.0 s: tries at 1.0, 1.3 (+0.3), 1.9 (+0.6), 3.1
    // (+1.2): arrives 3.15.
    let got = run(World {
        a: vec![(ms(0), Act::Connect(B)), (ms(1_000), Act::Write("m1"))],
        faults: vec![(ms(900), partition(A, B)), (ms(3_000), Fault::Heal)],
        ..World::default()
    });
    assert_eq!(got.last().unwrap(), "0:00:03.150 b data m1");
}

#[test]
fn a_lost_ack_is_a_spurious_retransmission_the_receiver_discards() {
    // b -> a blocked: m1 reaches b at 1.05 but its ACK is lost; a resends
    // at 1.3 and 1.9, b discards both copies; after the heal at 2.0 the
    // 3.1 retry's ACK gets through. b saw m1 once.
    let (inputs, all) = run_with(
        World {
            a: vec![(ms(0), Act::Connect(B)), (ms(1_000), Act::Write("m1"))],
            faults: vec![(ms(900), partition(B, A)), (ms(2_000), Fault::Heal)],
            end: ms(5_000),
            ..World::default()
        },
        Level::Net,
    );
    assert_eq!(inputs.last().unwrap(), "0:00:01.050 b data m1");
    let resent: Vec<&String> = all.iter().filter(|l| l.contains("retransmit")).collect();
    assert_eq!(resent.len(), 3, "{resent:#?}");
    assert!(
        resent[2].starts_with("0:00:03.100 a retransmit"),
        "{resent:#?}"
    );
}

#[test]
fn head_of_line_blocking_holds_later_segments_behind_a_lost_one() {
    // m1 (1.0) is cut off; m2 (1.1, after the heal at 1.05) arrives at
    // 1.15 but waits for m1's retransmission at 1.3: both at 1.35, in order.
    let got = run(World {
        a: vec![
            (ms(0), Act::Connect(B)),
            (ms(1_000), Act::Write("m1")),
            (ms(1_100), Act::Write("m2")),
        ],
        faults: vec![(ms(900), partition(A, B)), (ms(1_050), Fault::Heal)],
        ..World::default()
    });
    let tail: Vec<&str> = got.iter().rev().take(2).rev().map(String::as_str).collect();
    assert_eq!(tail, ["0:00:01.350 b data m1", "0:00:01.350 b data m2"]);
}

#[test]
fn a_90s_partition_delivers_on_the_backoff_grid_after_heal() {
    // Write at 10 s into a partition 9..99 s. Tries at 10 + 0.3, 0.9, 2.1,
    // 4.5, 9.3, 18.9, 38.1, 76.5 and 153.3 (cumulative RTOs 0.3 * (2^k - 1));
    // the first after the heal at 99 s is 10 + 153.3 = 163.3: arrives
    // 163.35, 64 s after the heal.
    let got = run(World {
        a: vec![(ms(0), Act::Connect(B)), (ms(10_000), Act::Write("m1"))],
        faults: vec![(ms(9_000), partition(A, B)), (ms(99_000), Fault::Heal)],
        ..World::default()
    });
    assert_eq!(got.last().unwrap(), "0:02:43.350 b data m1");
}

#[test]
fn retransmissions_run_out_after_15_and_the_writer_sees_timed_out() {
    // Cut off for good from 1 s: 15 retransmissions (the last at
    // 1 + 873.3 s), and at the next expiry, 1 + 993.3 s, 993.3 s >= 924.6 s
    // since the first send: ETIMEDOUT, no RST.
    let (inputs, all) = run_with(
        World {
            a: vec![(ms(0), Act::Connect(B)), (ms(1_000), Act::Write("m1"))],
            faults: vec![(ms(900), partition(A, B))],
            ..World::default()
        },
        Level::Net,
    );
    assert_eq!(
        inputs.last().unwrap(),
        "0:16:34.300 a reset connection timed out"
    );
    assert_eq!(
        all.iter().filter(|l| l.contains(" retransmit ")).count(),
        15
    );
}

#[test]
fn a_killed_peer_is_seen_at_once_and_a_write_to_it_is_reset() {
    // b's process dies at 2 s: its kernel sends a FIN (a reads EOF at
    // 2.05). a writes at 3 s; b's host answers the data with a RST (3.05),
    // which reaches a at 3.1.
    let got = run(World {
        a: vec![(ms(0), Act::Connect(B)), (ms(3_000), Act::Write("late"))],
        faults: vec![(ms(2_000), Fault::Kill(B))],
        ..World::default()
    });
    assert_eq!(
        got,
        [
            "0:00:00.100 a connected conn#1",
            "0:00:00.150 b accepted conn#1",
            "0:00:02.050 a closed",
            "0:00:03.000 a done Ok(())",
            "0:00:03.100 a reset connection reset",
        ]
    );
}

#[test]
fn a_crashed_host_is_silent_and_its_restart_answers_with_a_reset() {
    // b's host dies at 2 s. a's write at 3 s is retransmitted at 3.3, 3.9,
    // 5.1, 7.5 (RTO 0.3 doubling); b is back at 5 s, so the 5.1 try gets a
    // RST at 5.15 that reaches a at 5.2.
    let got = run(World {
        a: vec![(ms(0), Act::Connect(B)), (ms(3_000), Act::Write("hello?"))],
        faults: vec![(ms(2_000), Fault::Crash(B)), (ms(5_000), Fault::Restart(B))],
        ..World::default()
    });
    assert_eq!(got.last().unwrap(), "0:00:05.200 a reset connection reset");
    assert!(!got.iter().any(|l| l.contains("b data")), "{got:#?}");
}

#[test]
fn connect_is_refused_by_a_host_that_does_not_listen() {
    let got = run(World {
        b: Vec::new(),
        ..World::default()
    });
    assert_eq!(got, ["0:00:00.100 a connect-failed connection refused"]);
}

#[test]
fn connect_to_a_host_that_is_down_times_out_after_127s() {
    // SYNs at 0, 1, 3, 7, 15, 31, 63; at the expiry at 127 s, 127 s have
    // passed since the first: ETIMEDOUT.
    let (inputs, all) = run_with(
        World {
            b_start: None,
            ..World::default()
        },
        Level::Net,
    );
    assert_eq!(
        inputs,
        ["0:02:07.000 a connect-failed connection timed out"]
    );
    assert_eq!(all.iter().filter(|l| l.contains(" retransmit ")).count(), 6);
}

/// Linux 6.5's linear SYN timeouts (`tcp_syn_linear_timeouts = 4`,
/// `tcp_retransmit_timer` doubles only once `total_rto` exceeds 4;
/// `tcp_write_timeout` gives up after 6 + 4 retransmissions): SYNs at 0,
/// 1, 2, 3, 4, 5, 7, 11, 19, 35, 67 s, and at the expiry at 131 s,
/// ETIMEDOUT (the time rule, 127 s, is checked only at expiries: 67 s is
/// too early, and at 131 s the count has run out anyway).
#[test]
fn linear_syn_timeouts_retry_each_second_then_double_and_give_up_at_131s() {
    let (inputs, all) = run_with(
        World {
            b_start: None,
            tcp: TcpConfig {
                syn_linear_timeouts: 4,
                ..TcpConfig::default()
            },
            ..World::default()
        },
        Level::Net,
    );
    assert_eq!(
        inputs,
        ["0:02:11.000 a connect-failed connection timed out"]
    );
    let resent: Vec<&str> = all
        .iter()
        .filter(|l| l.contains(" retransmit "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        resent,
        [
            "0:00:01.000",
            "0:00:02.000",
            "0:00:03.000",
            "0:00:04.000",
            "0:00:05.000",
            "0:00:07.000",
            "0:00:11.000",
            "0:00:19.000",
            "0:00:35.000",
            "0:01:07.000",
        ]
    );
}

/// A lost SYN-ACK: the SYN again at 1 s, and the server's second SYN-ACK
/// echoes the first SYN's TSval (`tcp_synack_options` echoes
/// `req->ts_recent`, which a retransmitted SYN does not update), so the
/// client's first sample is 1.1 s (Linux's TSecr fallback in
/// `tcp_ack_update_rtt`: the SYN was retransmitted), RTO 3 x 1.1 s = 3.3 s.
/// SYN 0 -> 50; SYN-ACK 50, lost (b -> a blocked 0..100 ms). At 1,050
/// the server's SYN-ACK timer fires and the SYN sent again at 1,000
/// arrives: two SYN-ACKs, both echoing 0, reach `a` at 1,100: connected.
/// Its ACK (and the challenge ACK for the second) are lost (a -> b blocked
/// 1,120..2,000); the server's third SYN-ACK (timer, 3,050) gets a
/// challenge ACK that completes the handshake at 3,150. `m1`, written at
/// 1,200, is lost too, resent at 1,200 + 3,300 = 4,500 and arrives at
/// 4,550 (echoing the retransmitted SYN gave 100 ms: resent at 1,500,
/// lost, then 2,100, delivered at 2,150).
#[test]
fn a_syn_ack_answering_a_retransmitted_syn_echoes_the_first_syn() {
    let got = run(World {
        a: vec![(ms(0), Act::Connect(B)), (ms(1_200), Act::Write("m1"))],
        faults: vec![
            (Timestamp::ZERO, partition(B, A)),
            (ms(100), Fault::Heal),
            (ms(1_120), partition(A, B)),
            (ms(2_000), Fault::Heal),
        ],
        ..World::default()
    });
    assert_eq!(
        got,
        [
            "0:00:01.100 a connected conn#1",
            "0:00:01.200 a done Ok(())",
            "0:00:03.150 b accepted conn#1",
            "0:00:04.550 b data m1",
        ]
    );
}

#[test]
fn connect_gets_through_when_a_partition_heals_on_the_syn_grid() {
    // SYN tries at 0, 1, 3, 7: the heal at 5 s lets the 7 s one through.
    let got = run(World {
        faults: vec![(Timestamp::ZERO, partition(A, B)), (ms(5_000), Fault::Heal)],
        ..World::default()
    });
    assert_eq!(got[0], "0:00:07.100 a connected conn#1");
}

#[test]
fn old_and_new_connections_never_mix() {
    // a connects, b closes its end at 1 s; a opens a second connection at
    // 1 s too. b's FIN on the first must not end the second.
    let got = run(World {
        a: vec![
            (ms(0), Act::Connect(B)),
            (ms(1_000), Act::Connect(B)),
            (ms(1_200), Act::Write("on the new one")),
        ],
        b: vec![(ms(0), Act::Listen), (ms(1_000), Act::Close)],
        ..World::default()
    });
    assert_eq!(
        got,
        [
            "0:00:00.100 a connected conn#1",
            "0:00:00.150 b accepted conn#1",
            "0:00:01.050 a closed",
            "0:00:01.100 a connected conn#2",
            "0:00:01.150 b accepted conn#2",
            "0:00:01.200 a done Ok(())",
            "0:00:01.250 b data on the new one",
        ]
    );
}

#[test]
fn a_reset_by_the_peer_is_seen_and_later_writes_fail() {
    let got = run(World {
        a: vec![(ms(0), Act::Connect(B)), (ms(2_000), Act::Write("after"))],
        b: vec![(ms(0), Act::Listen), (ms(1_000), Act::Reset)],
        ..World::default()
    });
    assert_eq!(
        got[2..],
        [
            "0:00:01.050 a reset connection reset",
            "0:00:02.000 a done Err(BrokenPipe)",
        ]
    );
}

#[test]
fn tcp_constants_can_be_overridden() {
    let got = run(World {
        a: vec![(ms(0), Act::Connect(B)), (ms(1_000), Act::Write("m1"))],
        faults: vec![(ms(900), partition(A, B))],
        tcp: TcpConfig {
            retries2: 3,
            ..TcpConfig::default()
        },
        ..World::default()
    });
    // model(3, 0.2 s) = 3 s; expiries at 1.3, 1.9, 3.1, 5.5: 4.5 s >= 3 s.
    assert_eq!(
        got.last().unwrap(),
        "0:00:05.500 a reset connection timed out"
    );
}

#[test]
fn same_seed_same_trace_on_a_lossy_stream() {
    let world = || World {
        a: (0..200u64)
            .map(|i| (ms(100 + i * 50), Act::Write("x")))
            .chain([(ms(0), Act::Connect(B))])
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_iter()
            .collect(),
        link: LinkConfig {
            latency: Latency::Uniform {
                lo: Duration::from_ms(20),
                hi: Duration::from_ms(80),
            },
            drop: heartsim_sim::rng::Ratio::new(1, 5).unwrap(),
            ..LinkConfig::default()
        },
        end: ms(120_000),
        ..World::default()
    };
    let (inputs, all) = run_with(world(), Level::Net);
    assert_eq!((inputs.clone(), all.clone()), run_with(world(), Level::Net));
    // Every write arrives once and in order despite loss and reordering.
    let data: Vec<&String> = inputs.iter().filter(|l| l.contains("b data")).collect();
    assert_eq!(data.len(), 200);
    assert!(all.iter().any(|l| l.contains(" retransmit ")));
}

#[test]
fn segments_lost_together_are_resent_as_the_first_resend_is_acknowledged() {
    // m1 (1.0) and m2 (1.05) are both cut off. The timer (armed at 1.0)
    // resends m1 at 1.3 (arrives 1.35); its ACK reaches a at 1.4, which
    // resends m2 at once (arrives 1.45) rather than on a timer of its own.
    let got = run(World {
        a: vec![
            (ms(0), Act::Connect(B)),
            (ms(1_000), Act::Write("m1")),
            (ms(1_050), Act::Write("m2")),
        ],
        faults: vec![(ms(900), partition(A, B)), (ms(1_200), Fault::Heal)],
        ..World::default()
    });
    let tail: Vec<&str> = got.iter().rev().take(2).rev().map(String::as_str).collect();
    assert_eq!(tail, ["0:00:01.350 b data m1", "0:00:01.450 b data m2"]);
}

#[test]
fn a_killed_process_restarted_on_its_live_host_listens_again() {
    // Killed at 2 s: refused at 3 s (SYN 3.0 -> RST 3.05 -> a 3.1);
    // restarted at 4 s: the 5 s connect goes through.
    let got = run(World {
        a: vec![
            (ms(0), Act::Connect(B)),
            (ms(3_000), Act::Connect(B)),
            (ms(5_000), Act::Connect(B)),
        ],
        faults: vec![(ms(2_000), Fault::Kill(B)), (ms(4_000), Fault::Restart(B))],
        ..World::default()
    });
    assert_eq!(
        got[2..],
        [
            "0:00:02.050 a closed",
            "0:00:03.100 a connect-failed connection refused",
            "0:00:05.100 a connected conn#3",
            "0:00:05.150 b accepted conn#3",
        ]
    );
}

#[test]
fn a_process_killed_with_data_it_never_read_resets_instead_of_closing() {
    // Linux `__tcp_close`: "Unread data was tossed" -> RST, not FIN. b
    // stops reading from a at 1 s (a stall) and is paused in another run;
    // a's write at 1.5 s reaches b's kernel at 1.55, unread. b's process
    // dies at 2 s: a reads a reset at 2.05, not an EOF. A write blocked on
    // the stall (here `unread_limit` 1: every write blocks) is dropped
    // with it: a's machine learns of the reset, never of the write.
    for (fault, limit, done) in [
        (
            Fault::Stall { from: A, to: B },
            212_992,
            Some("0:00:01.500 a done Ok(())"),
        ),
        (Fault::Stall { from: A, to: B }, 1, None),
        (Fault::Pause(B), 212_992, Some("0:00:01.500 a done Ok(())")),
    ] {
        let got = run(World {
            a: vec![(ms(0), Act::Connect(B)), (ms(1_500), Act::Write("unread"))],
            faults: vec![(ms(1_000), fault.clone()), (ms(2_000), Fault::Kill(B))],
            tcp: TcpConfig {
                unread_limit: limit,
                ..TcpConfig::default()
            },
            ..World::default()
        });
        let mut want = vec![
            "0:00:00.100 a connected conn#1",
            "0:00:00.150 b accepted conn#1",
        ];
        want.extend(done);
        want.push("0:00:02.050 a reset connection reset");
        assert_eq!(got, want, "{fault:?}");
    }
}

/// Connects to `b` at start and writes `hello` the moment it is connected,
/// inside the `Connected` input (as httpcore's `start_tls` does).
struct EagerClient;

impl Machine for EagerClient {
    type Msg = String;
    fn handle(&mut self, _now: Now, input: Input<String>, out: &mut Outbox<String>) {
        match input {
            Input::Start => {
                out.connect(B);
            }
            Input::Connected { conn, .. } => out.send(conn, "hello".to_string()),
            _ => {}
        }
    }
    fn poll_timeout(&self) -> Option<Deadline> {
        None
    }
    fn describe(msg: &String) -> Cow<'static, str> {
        Cow::Owned(msg.clone())
    }
}

/// A segment written on `Connected` keeps the retransmission timer its
/// write armed (Linux `tcp_event_new_data_sent` -> `tcp_rearm_rto`): lost to
/// a short partition, it is resent one RTO later. SYN 0 -> 50, SYN-ACK
/// 50 -> 100 (RTT 100 ms, RTO 300 ms): `hello` leaves at 100 and is lost
/// (a -> b blocked 120..200 ms), resent at 400, delivered at 450. The
/// engine used to cancel the SYN's timer after the input, losing the new
/// one: `hello` never arrived (the differential oracle's finding T1).
#[test]
fn a_segment_written_on_connected_is_resent_after_the_rto() {
    let records = run_eager(
        vec![(ms(0), Act::Listen)],
        vec![(ms(120), partition(A, B)), (ms(200), Fault::Heal)],
        Level::Decision,
    );
    let got: Vec<String> = records
        .iter()
        .filter(|r| r.kind == "in" && r.msg.as_deref() == Some("data hello"))
        .map(|r| r.t.to_string())
        .collect();
    assert_eq!(got, ["0:00:00.450"]);
}

/// `EagerClient` on `a`, a script on `b` (50 ms links, 5 s): the records.
fn run_eager(
    b: Vec<(Timestamp, Act)>,
    faults: Vec<(Timestamp, Fault)>,
    keep: Level,
) -> Vec<heartsim_sim::trace::Record> {
    let nodes = ["a", "b"]
        .into_iter()
        .map(|name| NodeSpec {
            name: name.into(),
            clock: Clock::default(),
            start_at: Some(Timestamp::ZERO),
        })
        .collect();
    let link = LinkConfig {
        latency: Latency::Fixed(Duration::from_ms(50)),
        ..LinkConfig::default()
    };
    let limits = Limits {
        end: ms(5_000),
        ..Limits::default()
    };
    let mut engine = Engine::new(
        nodes,
        Network::new(7, link),
        faults,
        limits,
        keep,
        move |me| {
            if me == A {
                Either::Client(EagerClient)
            } else {
                Either::Server(Script::new(b.clone()))
            }
        },
    );
    engine.run().expect("within limits");
    engine.trace().records().cloned().collect()
}

/// The eager client on one node, a script on the other.
enum Either {
    Client(EagerClient),
    Server(Script),
}

impl Machine for Either {
    type Msg = String;
    fn handle(&mut self, now: Now, input: Input<String>, out: &mut Outbox<String>) {
        match self {
            Either::Client(c) => c.handle(now, input, out),
            Either::Server(s) => s.handle(now, input, out),
        }
    }
    fn poll_timeout(&self) -> Option<Deadline> {
        match self {
            Either::Client(c) => c.poll_timeout(),
            Either::Server(s) => s.poll_timeout(),
        }
    }
    fn describe(msg: &String) -> Cow<'static, str> {
        Cow::Owned(msg.clone())
    }
}

/// The server's first RTT sample comes from the handshake, whichever of the
/// client's segments completes it (Linux: the client stores the SYN-ACK's
/// TSval, `tcp_store_ts_recent`, so its first data segment echoes it; the
/// passive side samples in `tcp_rcv_state_process`, `TCP_SYN_RECV`). SYN
/// 0 -> 50, SYN-ACK 50 -> 100; the ACK and `hello` reach `b` at 150: RTT
/// 100 ms, RTO 300 ms. `b`'s `world` leaves at 170 and is lost (b -> a
/// blocked 165..250 ms), resent at 470, delivered at 520. Before the fix
/// `b` had no sample and resent after `TCP_TIMEOUT_INIT`: 1,170, delivered
/// at 1,220 (audit A3, docs/audits/decnet-changes-session8-2026-11-27.md).
#[test]
fn the_server_samples_the_rtt_at_the_handshake() {
    let records = run_eager(
        vec![(ms(0), Act::Listen), (ms(170), Act::Write("world"))],
        vec![(ms(165), partition(B, A)), (ms(250), Fault::Heal)],
        Level::Net,
    );
    let got: Vec<String> = records
        .iter()
        .filter(|r| r.kind == "deliver" && r.node == Some(A))
        .filter(|r| r.msg.as_deref().is_some_and(|m| m.contains("world")))
        .map(|r| r.t.to_string())
        .collect();
    assert_eq!(got, ["0:00:00.520"]);
}

/// The server resends an unacknowledged SYN-ACK on its own timer
/// (`reqsk_timer_handler`: `TCP_TIMEOUT_INIT`, doubling) and, after
/// `tcp_synack_retries` = 5 resends, drops the half-open connection
/// silently. The SYN reaches `b` at 50 ms; from 60 ms nothing gets through
/// either way: SYN-ACKs at 0.05 and again at 1.05, 3.05, 7.05, 15.05,
/// 31.05 s; dropped at 63.05 s.
#[test]
fn an_unacknowledged_syn_ack_is_resent_five_times_then_dropped() {
    let (_, all) = run_with(
        World {
            faults: vec![(
                ms(60),
                Fault::Partition(vec![Partition {
                    from: [A, B].into(),
                    to: [A, B].into(),
                }]),
            )],
            end: ms(200_000),
            ..World::default()
        },
        Level::Net,
    );
    let b: Vec<&str> = all
        .iter()
        .filter(|l| l.contains(" b retransmit ") || l.contains(" b timed-out "))
        .map(String::as_str)
        .collect();
    assert_eq!(
        b,
        [
            "0:00:01.050 b retransmit SYN-ACK #1",
            "0:00:03.050 b retransmit SYN-ACK #2",
            "0:00:07.050 b retransmit SYN-ACK #3",
            "0:00:15.050 b retransmit SYN-ACK #4",
            "0:00:31.050 b retransmit SYN-ACK #5",
            "0:01:03.050 b timed-out SYN-ACK retries exhausted",
        ],
        "{all:#?}"
    );
}

/// The handshake ACK is lost and the client writes nothing: the server's
/// own SYN-ACK timer completes the handshake (before, nothing did until
/// the client wrote). SYN 0 -> 50, SYN-ACK 50 -> 100, its ACK lost (a -> b
/// blocked 90..150 ms). The SYN-ACK again at 1,050 (echoing the SYN's
/// TSval) reaches the established client at 1,100, which answers with a
/// challenge ACK (RFC 5961 4.2, `tcp_validate_incoming`) echoing the
/// *first* SYN-ACK's TSval, 50 (the segment is discarded before
/// `tcp_replace_ts_recent`): accepted at 1,150, and the server's sample,
/// the TSecr fallback of `tcp_synack_rtt_meas` after a resend, is 1,100 ms:
/// RTO 3 x 1.1 = 3.3 s. `b`'s write at 1,200 is lost (b -> a blocked
/// 1,195..1,300), resent at 4,500, delivered at 4,550.
#[test]
fn a_challenge_ack_completes_the_handshake_and_echoes_the_first_syn_ack() {
    let (inputs, all) = run_with(
        World {
            a: vec![(ms(0), Act::Connect(B))],
            b: vec![(ms(0), Act::Listen), (ms(1_200), Act::Write("world"))],
            faults: vec![
                (ms(90), partition(A, B)),
                (ms(150), Fault::Heal),
                (ms(1_195), partition(B, A)),
                (ms(1_300), Fault::Heal),
            ],
            end: ms(10_000),
            ..World::default()
        },
        Level::Net,
    );
    assert_eq!(
        inputs,
        [
            "0:00:00.100 a connected conn#1",
            "0:00:01.150 b accepted conn#1",
            "0:00:01.200 b done Ok(())",
            "0:00:04.550 a data world",
        ],
        "{all:#?}"
    );
}
