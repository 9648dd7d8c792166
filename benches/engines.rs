//! The main engine against the madsim engine, on two workloads:
//!
//! - `directory`: the directory bench's 1,000 mixed peers (joinmarket-ng),
//!   24 simulated hours, 1/100 drop, 50..150 ms latency, decision trace
//!   kept in memory (the issue's "1,000 peers, 24 h, 1/100 drop");
//! - `relay`: the engines' own cost, with a machine that does nothing but
//!   send one 4-byte message a second to the next node; 1,000 nodes for ten
//!   simulated minutes at the same latency and loss. Per message that is
//!   all engine: queue, network, timers and, on madsim, tasks, sockets and
//!   serialization.
//!
//! ```text
//! RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/madsim cargo bench --bench engines
//! ```
//!
//! prints a row per workload and engine: wall time (the fastest of three
//! runs), the engine's own event count and events/s, sends, the wall-time
//! ratio to the main engine on the same workload, and PINGs and evictions
//! (to show that both engines did the same work). Then criterion times every
//! case. A build without `--cfg madsim` runs the main engine alone and says
//! how to get the comparison. Wall-clock reads are allowed here only.
//!
//! `HEARTSIM_BENCH_ENGINE=main|madsim` (with `HEARTSIM_BENCH_WORKLOAD=relay`
//! for the second workload) runs that one case once and exits: the
//! driver for `valgrind --tool=callgrind` or `perf record`.
#![allow(clippy::disallowed_methods)]

use std::borrow::Cow;
use std::hint::black_box;
use std::time::{Duration as WallDuration, Instant};

use criterion::Criterion;
use heartsim::models::joinmarket::kind;
use heartsim::run::{run, Outcome};
use heartsim::scenario::Scenario;
use heartsim::sim::engine::{Deadline, Engine, Input, Limits, Machine, NodeSpec, Outbox, Stats};
use heartsim::sim::net::{Latency, LinkConfig, Network};
use heartsim::sim::rng::Ratio;
use heartsim::sim::trace::Level;
use heartsim::sim::{Clock, Duration, NodeId, Now, Timestamp};
use serde::{Deserialize, Serialize};

mod common;

const PEERS: usize = 1_000;
const RELAY_NODES: usize = 1_000;
const RELAY_END: Timestamp = Timestamp::from_us(600_000_000);

/// A message that carries nothing worth the name.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Beat(u32);

/// Sends one [`Beat`] a second to the next node and ignores what it gets.
struct Relay {
    me: NodeId,
    next_beat: Option<Timestamp>,
}

impl Machine for Relay {
    type Msg = Beat;
    fn handle(&mut self, now: Now, input: Input<Beat>, out: &mut Outbox<Beat>) {
        const SECOND: Duration = Duration::from_secs(1);
        match input {
            Input::Start => self.next_beat = Some(now.mono + SECOND),
            Input::Timeout => {
                if let Some(at) = self.next_beat.filter(|at| now.mono >= *at) {
                    let to = NodeId((self.me.0 + 1) % RELAY_NODES);
                    out.send(to, Beat(self.me.0 as u32));
                    self.next_beat = Some(at + SECOND);
                }
            }
            _ => {}
        }
    }
    fn poll_timeout(&self) -> Option<Deadline> {
        self.next_beat.map(|at| Deadline { at, reason: "beat" })
    }
    fn describe(_: &Beat) -> Cow<'static, str> {
        "beat".into()
    }
}

fn relay_world() -> (Vec<NodeSpec>, LinkConfig, Limits) {
    let nodes = (0..RELAY_NODES)
        .map(|i| NodeSpec {
            name: format!("r{i}"),
            clock: Clock::default(),
            start_at: Some(Timestamp::ZERO),
        })
        .collect();
    let network = LinkConfig {
        latency: Latency::Uniform {
            lo: Duration::from_ms(50),
            hi: Duration::from_ms(150),
        },
        drop: Ratio::new(1, 100).expect("a ratio"),
        ..LinkConfig::default()
    };
    let limits = Limits {
        end: RELAY_END,
        ..Limits::default()
    };
    (nodes, network, limits)
}

fn relay(me: NodeId) -> Relay {
    Relay {
        me,
        next_beat: None,
    }
}

/// What one run did: its counters, and a figure that shows two engines did
/// the same work.
struct Done {
    stats: Stats,
    check: String,
}

fn directory_done(out: Outcome) -> Done {
    let count = |k: &str| out.trace.records().filter(|r| r.kind == k).count();
    Done {
        check: format!(
            "{} pings, {} evictions",
            count(kind::PING),
            count(kind::EVICT)
        ),
        stats: out.stats,
    }
}

fn relay_done(stats: Stats) -> Done {
    Done {
        check: String::new(),
        stats,
    }
}

fn directory_main(s: &Scenario) -> Done {
    directory_done(run(s, None, Level::Decision).expect("within limits"))
}

fn relay_main() -> Done {
    let (nodes, network, limits) = relay_world();
    let mut engine = Engine::new(
        nodes,
        Network::new(1, network),
        Vec::new(),
        limits,
        Level::Decision,
        relay,
    );
    engine.run().expect("within limits");
    relay_done(engine.stats())
}

#[cfg(madsim)]
fn directory_madsim(s: &Scenario) -> Done {
    directory_done(heartsim::run::run_madsim(s, None, Level::Decision).expect("runs on madsim"))
}

#[cfg(madsim)]
fn relay_madsim() -> Done {
    use heartsim::sim::madsim_engine::{run, World};
    let (nodes, network, limits) = relay_world();
    let world = World {
        nodes,
        network,
        links: Vec::new(),
        faults: Vec::new(),
        limits,
        keep: Level::Decision,
        seed: 1,
        tcp: Default::default(),
    };
    relay_done(run(&world, relay).expect("runs on madsim").1)
}

type Case<'a> = (&'static str, &'static str, Box<dyn Fn() -> Done + 'a>);

/// Every (workload, engine) this build can run, main engine first.
fn cases(s: &Scenario) -> Vec<Case<'_>> {
    #[allow(unused_mut)]
    let mut v: Vec<Case<'_>> = vec![
        ("directory", "main", Box::new(move || directory_main(s))),
        ("relay", "main", Box::new(relay_main)),
    ];
    #[cfg(madsim)]
    v.extend([
        (
            "directory",
            "madsim",
            Box::new(move || directory_madsim(s)) as Box<dyn Fn() -> Done>,
        ),
        ("relay", "madsim", Box::new(relay_madsim)),
    ]);
    v
}

fn main() {
    let s = common::scenario(PEERS);
    if let Ok(which) = std::env::var("HEARTSIM_BENCH_ENGINE") {
        let workload = std::env::var("HEARTSIM_BENCH_WORKLOAD").unwrap_or("directory".into());
        let (_, _, case) = cases(&s)
            .into_iter()
            .find(|(w, e, _)| *w == workload && *e == which)
            .expect("HEARTSIM_BENCH_ENGINE is main, or madsim in a --cfg madsim build");
        println!("{workload} on {which}: {} events", case().stats.events);
        return;
    }
    #[cfg(not(madsim))]
    println!(
        "(the madsim engine needs its own build: \
         RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/madsim cargo bench --bench engines)"
    );
    println!("workload  engine   wall_s    events  Mevents/s    sends  wall vs main  same work?");
    let mut main_wall: Vec<(&str, WallDuration)> = Vec::new();
    for (workload, engine, case) in cases(&s) {
        // The fastest of three runs: the first pays for a cold cache and
        // allocator, and the machine is shared.
        let mut wall = WallDuration::MAX;
        let mut done = None;
        for _ in 0..3 {
            let start = Instant::now();
            let this = case();
            wall = wall.min(start.elapsed());
            done = Some(this);
        }
        let done = done.expect("ran");
        let base = match main_wall.iter().find(|(w, _)| *w == workload) {
            Some((_, base)) => *base,
            None => {
                main_wall.push((workload, wall));
                wall
            }
        };
        println!(
            "{workload:<9} {engine:<7} {:>7.3} {:>9} {:>10.3} {:>8} {:>13.1}  {}",
            wall.as_secs_f64(),
            done.stats.events,
            done.stats.events as f64 / wall.as_secs_f64() / 1e6,
            done.stats.sends,
            wall.as_secs_f64() / base.as_secs_f64(),
            done.check,
        );
    }

    let mut c = Criterion::default().configure_from_args().sample_size(10);
    let mut group = c.benchmark_group("engines");
    for (workload, engine, case) in cases(&s) {
        group.bench_function(format!("{workload}/{engine}"), |b| {
            b.iter(|| black_box(case().stats.events))
        });
    }
    group.finish();
    c.final_summary();
}
