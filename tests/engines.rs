//! The madsim engine against the main engine (built only with
//! `RUSTFLAGS="--cfg madsim"`; `.ci/run` runs it as its own step).
//!
//! - Every scenario under `scenarios/` that madsim can run with the same
//!   outcome in principle (fixed latency, no loss, duplication or
//!   reordering, no link-level faults madsim lacks) gives the same decisions
//!   on both, each within `ENGINE_TOLERANCE`: in full, or up to the first
//!   decision that a few ms of madsim's socket costs move on the main engine
//!   itself (see `docs/engines.md`).
//! - A machine of the user's own runs on both from one `World`.
//! - The comparison catches a one-step difference.
//! - madsim is deterministic: one seed twice, the same trace bytes.
//! - Datagram loss, where the engines draw from different generators: the
//!   loss rates agree over 200 seeds within 4 standard errors, of each
//!   other and of the configured rate; and that comparison catches a
//!   one-point change in the drop rate. (JoinMarket speaks over
//!   connections: on both engines the same stream stack carries them, so
//!   its lossy scenarios run on madsim too, but from a random network the
//!   cross-check skips.)
//! - A partition covers a node madsim builds after it began.
#![cfg(madsim)]

use std::path::PathBuf;

use heartsim::models::joinmarket::Setup;
use heartsim::models::ALL;
use heartsim::run::{decision_differences, decision_text, run, run_madsim, ENGINE_TOLERANCE};
use heartsim::scenario::Scenario;
use heartsim::sim::engine::Fault;
use heartsim::sim::madsim_engine::MadsimError;
use heartsim::sim::madsim_engine::World;
use heartsim::sim::net::{Latency, LinkConfig, Partition};
use heartsim::sim::rng::Ratio;
use heartsim::sim::trace::{Level, Trace};
use heartsim::sim::{Duration, NodeId, Timestamp};

mod common;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether the scenario's network is free of randomness the two engines
/// would draw differently.
fn deterministic_network(s: &Scenario) -> bool {
    let fixed = |c: &LinkConfig| matches!(c.latency, Latency::Fixed(_)) && !c.is_random();
    fixed(&s.network) && s.links.iter().all(|(_, _, c)| fixed(c))
}

/// What madsim's sockets add to a message: at least 1 ms at the send and
/// 1 ms at the receive (every madsim sleep lasts at least 1 ms), plus the
/// few ms a busy node spends on earlier sends.
const SOCKET_DELAY: Duration = Duration::from_ms(5);

/// How much later madsim's timer loops run: a sleep-then-work loop (ng's
/// sweep) starts its sleep after its awaited writes, each at least 1 ms.
const SLOW_CLOCK_PPM: i64 = -100;

/// Decisions the perturbation only moves in time (up to 1.1 s over the
/// longest scenario, 3 h) still match; one that moves by a sweep does not.
const BOUNDARY_TOLERANCE: Duration = Duration::from_secs(2);

/// The scenario with madsim's costs on the main engine: slower messages
/// and slower clocks.
fn slowed(s: &Scenario) -> Scenario {
    let mut s = s.clone();
    let slower = |c: &mut LinkConfig| {
        if let Latency::Fixed(d) = c.latency {
            c.latency = Latency::Fixed(d + SOCKET_DELAY);
        }
    };
    slower(&mut s.network);
    for (_, _, c) in &mut s.links {
        slower(c);
    }
    for n in &mut s.nodes {
        let ppm = n.clock.drift_ppm() + SLOW_CLOCK_PPM;
        assert!(n.clock.set_drift(Timestamp::ZERO, ppm), "drift in range");
    }
    s
}

/// ng sleeps after its sweep's awaited writes, each at least 1 ms on
/// madsim: its sweeps drift later by about that much per sweep.
fn drifting_sweeps(s: &Scenario) -> Scenario {
    let mut s = s.clone();
    let timers = &mut s
        .setup_mut::<Setup>()
        .expect("a joinmarket scenario")
        .timers;
    timers.sweep_interval = timers.sweep_interval + Duration::from_ms(1);
    s
}

#[test]
fn every_eligible_scenario_makes_the_same_decisions_on_both_engines() {
    let mut in_full = Vec::new();
    let mut in_part = Vec::new();
    let mut skipped = Vec::new();
    let mut failures = Vec::new();
    let mut decisions_compared = 0;
    let mut compared_names = Vec::new();
    for path in common::scenario_files(&root().join("scenarios")) {
        let rel = path
            .strip_prefix(root())
            .unwrap_or(&path)
            .display()
            .to_string();
        let scenario = Scenario::load(ALL, &path).expect("scenario files are valid");
        if !deterministic_network(&scenario) {
            skipped.push(format!("{rel}: random network"));
            continue;
        }
        let madsim = match run_madsim(&scenario, None, Level::Decision) {
            Ok(o) => o,
            Err(MadsimError::Unsupported(what)) => {
                skipped.push(format!("{rel}: {what}"));
                continue;
            }
            Err(e) => panic!("{rel}: {e}"),
        };
        let main = run(&scenario, None, Level::Decision).expect("within limits");
        let end = Timestamp::ZERO + scenario.duration;
        // madsim's sockets add a few ms per hop. From the first decision
        // that this alone changes on the main engine, the scenario sits on
        // a timing boundary (a message arriving exactly as a threshold is
        // reached) and the engines may rightly differ: compare up to there.
        let boundary = [slowed(&scenario), drifting_sweeps(&scenario)]
            .iter()
            .filter_map(|s| {
                let other = run(s, None, Level::Decision).expect("within limits");
                decision_differences(&main.trace, &other.trace, BOUNDARY_TOLERANCE, end)
                    .iter()
                    .map(|d| d.t)
                    .min()
            })
            .min();
        let until = boundary.unwrap_or(end);
        // What `decision_differences` compares: records up to one tolerance
        // before `until`.
        let cut = until.saturating_sub(ENGINE_TOLERANCE);
        let compared = main.trace.decisions().filter(|r| r.t <= cut).count();
        match boundary {
            _ if compared == 0 => {
                skipped.push(format!(
                    "{rel}: on a timing boundary before its first decision"
                ));
                continue;
            }
            None => in_full.push(format!("{rel} ({compared} decisions)")),
            Some(b) => in_part.push(format!("{rel}: up to {b:?} ({compared} decisions)")),
        }
        decisions_compared += compared;
        compared_names.push(rel.clone());
        let diff = decision_differences(&main.trace, &madsim.trace, ENGINE_TOLERANCE, until);
        if !diff.is_empty() {
            let lines: Vec<String> = diff.iter().map(ToString::to_string).collect();
            failures.push(format!(
                "{rel}: main (first) and madsim (second) differ before {until:?}:\n  {}\n  \
                 replay: RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/madsim \
                 cargo run -- run --engine madsim --decisions {rel}",
                lines.join("\n  ")
            ));
        }
    }
    eprintln!(
        "{} scenarios, {decisions_compared} decisions compared\nin full, {}:\n  {}\nup to the first timing \
         boundary, {}:\n  {}\nskipped, {}:\n  {}",
        compared_names.len(),
        in_full.len(),
        in_full.join("\n  "),
        in_part.len(),
        in_part.join("\n  "),
        skipped.len(),
        skipped.join("\n  ")
    );
    // Most hand-written scenarios sit exactly on a `>` vs `>=` boundary on
    // purpose; four run clear of any (see docs/engines.md).
    assert!(
        in_full.len() >= 4,
        "too few scenarios compared in full: {in_full:?}"
    );
    // What the cross-check covered before connections came, at least:
    // a partition, and a write on a broken connection.
    for name in [
        "one-way-partition-evicts-rs",
        "send-failure-rs",
        "send-failure-ng",
        "send-failure-ng-eb812d4c",
    ] {
        let file = format!("scenarios/joinmarket/{name}.toml");
        assert!(
            compared_names.contains(&file),
            "{file} is not compared: {skipped:#?}"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn load(name: &str) -> Scenario {
    Scenario::load(ALL, &root().join("scenarios/joinmarket").join(name)).expect("valid")
}

#[test]
fn the_comparison_catches_a_one_step_difference() {
    // Same scenario, the silent maker's PONG wait one sweep longer on one side.
    let s = load("silent-ping-maker-evicted-after-pong-wait-ng.toml");
    let mut later = s.clone();
    let sweep = s
        .setup::<Setup>()
        .expect("a joinmarket scenario")
        .timers
        .sweep_interval;
    let timers = &mut later
        .setup_mut::<Setup>()
        .expect("a joinmarket scenario")
        .timers;
    timers.pong_wait = timers.pong_wait + sweep;
    let a = run_madsim(&s, None, Level::Decision).expect("runs");
    let b = run_madsim(&later, None, Level::Decision).expect("runs");
    let end = Timestamp::ZERO + s.duration;
    let diff = decision_differences(&a.trace, &b.trace, ENGINE_TOLERANCE, end);
    assert!(diff.iter().any(|d| d.text.contains("evict")), "{diff:?}");
    // And a trace agrees with itself.
    assert_eq!(
        decision_differences(&a.trace, &a.trace, ENGINE_TOLERANCE, end),
        Vec::new()
    );
}

#[test]
fn madsim_runs_are_deterministic() {
    let world = loss_probe::world(Ratio::new(10, 100).unwrap());
    let text = |seed| {
        let mut w = world.clone();
        w.seed = seed;
        decision_text(&loss_probe::on_madsim(&w))
    };
    let once = text(5);
    assert_eq!(once, text(5));
    assert_ne!(once, text(6), "another seed draws other losses");
}

#[test]
fn a_node_first_started_during_a_partition_is_cut_off_on_both_engines() {
    // The target starts at 20 s inside a monitor | target partition (10 s
    // to 40.5 s): madsim must clog the node it builds then. Its beats from
    // 21 s are lost until the heal; the 41 s one lands at 41.010 s.
    let mut world = own_machine::world();
    world.faults = vec![
        (
            Timestamp::from_us(10_000_000),
            Fault::Partition(Partition::symmetric(&[vec![NodeId(0)], vec![NodeId(1)]])),
        ),
        (Timestamp::from_us(40_500_000), Fault::Heal),
    ];
    world.nodes[1].start_at = Some(Timestamp::from_us(20_000_000));
    let (main, madsim) = (own_machine::on_main(&world), own_machine::on_madsim(&world));
    let alive = |t: &Trace| t.decisions().find(|r| r.kind == "alive").map(|r| r.t);
    assert_eq!(alive(&main), Some(Timestamp::from_us(41_010_000)));
    assert_eq!(
        decision_differences(&main, &madsim, ENGINE_TOLERANCE, world.limits.end),
        Vec::new(),
        "main:\n{}madsim:\n{}",
        decision_text(&main),
        decision_text(&madsim)
    );
}

/// The seeds of the distribution comparison.
const SEEDS: std::ops::Range<u64> = 1..201;

/// How many standard errors apart two estimates may be. The seeds are
/// fixed, so the test is deterministic; were the engines' loss rates truly
/// equal, a random choice of 200 seeds would fail this bound about once in
/// 16,000 (two-sided normal tail at 4 sigma).
const SIGMA: f64 = 4.0;

/// Datagrams lost and sent over [`SEEDS`] on one engine: a sample of the
/// loss rate. Each datagram is an independent trial, so the error is
/// binomial.
#[derive(Clone, Copy, Debug)]
struct Sample {
    lost: u64,
    sent: u64,
}

impl Sample {
    fn of(world: &World, engine: impl Fn(&World) -> Trace) -> Sample {
        let mut sample = Sample { lost: 0, sent: 0 };
        for seed in SEEDS {
            let mut w = world.clone();
            w.seed = seed;
            let got = engine(&w).decisions().filter(|r| r.kind == "got").count() as u64;
            sample.sent += loss_probe::SENT;
            sample.lost += loss_probe::SENT - got;
        }
        sample
    }
    fn rate(self) -> f64 {
        self.lost as f64 / self.sent as f64
    }
    /// How many standard errors the rate lies from `p`.
    fn sigma_from(self, p: f64) -> f64 {
        (self.rate() - p) / (p * (1.0 - p) / self.sent as f64).sqrt()
    }
    /// How many standard errors apart two rates are (two-proportion z).
    fn sigma_apart(self, other: Sample) -> f64 {
        let pooled = (self.lost + other.lost) as f64 / (self.sent + other.sent) as f64;
        let n = 1.0 / self.sent as f64 + 1.0 / other.sent as f64;
        (self.rate() - other.rate()) / (pooled * (1.0 - pooled) * n).sqrt()
    }
}

#[test]
fn datagram_loss_rates_agree_across_engines() {
    // The engines draw losses from different generators (ChaCha8 per link
    // against madsim's global RNG), so runs differ seed by seed; what must
    // agree is the rate, and both must be the configured 5/100. (Models
    // that speak over connections see no loss on madsim, whose TCP never
    // loses data: docs/engines.md; this is the datagram medium's check.)
    let world = loss_probe::world(Ratio::new(5, 100).unwrap());
    let main = Sample::of(&world, loss_probe::on_main);
    let madsim = Sample::of(&world, loss_probe::on_madsim);
    eprintln!(
        "over {} seeds: main {main:?} = {:.4}; madsim {madsim:?} = {:.4}; engines {:.2} sigma apart",
        SEEDS.end - SEEDS.start,
        main.rate(),
        madsim.rate(),
        main.sigma_apart(madsim)
    );
    for (engine, sample) in [("main", main), ("madsim", madsim)] {
        let z = sample.sigma_from(0.05);
        assert!(
            z.abs() < SIGMA,
            "{engine}: {sample:?} is {z:.1} sigma from 0.05"
        );
    }
    let z = main.sigma_apart(madsim);
    assert!(
        z.abs() < SIGMA,
        "the engines' loss rates are {z:.1} sigma apart: main {main:?}, madsim {madsim:?}"
    );
}

#[test]
fn the_rate_comparison_catches_one_more_percent_of_loss() {
    let at = |p| {
        Sample::of(
            &loss_probe::world(Ratio::new(p, 100).unwrap()),
            loss_probe::on_main,
        )
    };
    let z = at(5).sigma_apart(at(6));
    assert!(z.abs() > SIGMA, "only {z:.1} sigma apart");
}

/// One node sends [`SENT`] numbered datagrams, one every 100 ms, to
/// another, which records each it gets: the engines' datagram loss, seen
/// from machines.
mod loss_probe {
    use std::borrow::Cow;

    use heartsim::sim::engine::{Deadline, Engine, Input, Limits, Machine, NodeSpec, Outbox};
    use heartsim::sim::madsim_engine::{self, World};
    use heartsim::sim::net::{Latency, LinkConfig, Network};
    use heartsim::sim::rng::Ratio;
    use heartsim::sim::trace::{Level, Trace};
    use heartsim::sim::{Clock, Duration, NodeId, Now, Timestamp};

    pub const SENT: u64 = 200;
    const EVERY: Duration = Duration::from_ms(100);

    pub struct Probe {
        me: NodeId,
        next: Option<Timestamp>,
        sent: u64,
    }

    impl Machine for Probe {
        type Msg = u64;
        fn handle(&mut self, now: Now, input: Input<u64>, out: &mut Outbox<u64>) {
            match input {
                Input::Start if self.me == NodeId(0) => self.next = Some(now.mono + EVERY),
                Input::Timeout if self.next.is_some_and(|at| now.mono >= at) => {
                    self.sent += 1;
                    out.send(NodeId(1), self.sent);
                    self.next = (self.sent < SENT).then(|| now.mono + EVERY);
                }
                Input::Recv { msg, .. } => {
                    out.record("got", None, None, Some(format!("{msg}").into()));
                }
                _ => {}
            }
        }
        fn poll_timeout(&self) -> Option<Deadline> {
            self.next.map(|at| Deadline { at, reason: "send" })
        }
        fn describe(msg: &u64) -> Cow<'static, str> {
            Cow::Owned(msg.to_string())
        }
    }

    fn probe(me: NodeId) -> Probe {
        Probe {
            me,
            next: None,
            sent: 0,
        }
    }

    /// 10 ms links losing `drop` of what they carry; 30 s is time for all.
    pub fn world(drop: Ratio) -> World {
        let node = |name: &str| NodeSpec {
            name: name.into(),
            clock: Clock::default(),
            start_at: Some(Timestamp::ZERO),
        };
        World {
            nodes: vec![node("a"), node("b")],
            network: LinkConfig {
                latency: Latency::Fixed(Duration::from_ms(10)),
                drop,
                ..LinkConfig::default()
            },
            links: Vec::new(),
            faults: Vec::new(),
            limits: Limits {
                end: Timestamp::from_us(30_000_000),
                ..Limits::default()
            },
            keep: Level::Decision,
            seed: 1,
            tcp: Default::default(),
        }
    }

    pub fn on_main(world: &World) -> Trace {
        let mut engine = Engine::new(
            world.nodes.clone(),
            Network::new(world.seed, world.network),
            world.faults.clone(),
            world.limits,
            world.keep,
            probe,
        );
        engine.run().expect("within limits");
        engine.into_trace()
    }

    pub fn on_madsim(world: &World) -> Trace {
        madsim_engine::run(world, probe).expect("runs on madsim").0
    }
}

/// The pattern `docs/engines.md` shows for your own heartbeat code: a
/// machine of its own (not a heartsim model), run on both engines from one
/// world. Node 0 watches node 1's one-a-second beats and declares it dead
/// after 3 s of silence.
mod own_machine {
    use std::borrow::Cow;

    use heartsim::sim::engine::{
        Deadline, Engine, Fault, Input, Limits, Machine, NodeSpec, Outbox,
    };
    use heartsim::sim::madsim_engine::{self, World};
    use heartsim::sim::net::{Latency, LinkConfig, Network};
    use heartsim::sim::trace::{Level, Trace};
    use heartsim::sim::{Clock, Duration, NodeId, Now, Timestamp};
    use serde::{Deserialize, Serialize};

    const BEAT_EVERY: Duration = Duration::from_secs(1);
    const DEAD_AFTER: Duration = Duration::from_secs(3);
    const MONITOR: NodeId = NodeId(0);
    const TARGET: NodeId = NodeId(1);

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Beat;

    pub enum Heartbeat {
        Sender { next_beat: Option<Timestamp> },
        Monitor { last_heard: Timestamp, dead: bool },
    }

    impl Heartbeat {
        pub fn new(id: NodeId) -> Heartbeat {
            if id == MONITOR {
                Heartbeat::Monitor {
                    last_heard: Timestamp::ZERO,
                    dead: false,
                }
            } else {
                Heartbeat::Sender { next_beat: None }
            }
        }
    }

    impl Machine for Heartbeat {
        type Msg = Beat;
        fn handle(&mut self, now: Now, input: Input<Beat>, out: &mut Outbox<Beat>) {
            match (self, input) {
                // The first beat one interval after start, then every interval.
                (Heartbeat::Sender { next_beat }, Input::Start) => {
                    *next_beat = Some(now.mono + BEAT_EVERY);
                }
                (Heartbeat::Sender { next_beat }, Input::Timeout) => {
                    if let Some(at) = next_beat.filter(|at| now.mono >= *at) {
                        out.send(MONITOR, Beat);
                        *next_beat = Some(at + BEAT_EVERY);
                    }
                }
                (Heartbeat::Monitor { last_heard, .. }, Input::Start) => *last_heard = now.mono,
                (Heartbeat::Monitor { last_heard, dead }, Input::Recv { .. }) => {
                    *last_heard = now.mono;
                    if *dead {
                        *dead = false;
                        out.record("alive", Some(TARGET), None, None);
                    }
                }
                (Heartbeat::Monitor { last_heard, dead }, Input::Timeout)
                    if !*dead && now.mono >= *last_heard + DEAD_AFTER =>
                {
                    *dead = true;
                    out.record("dead", Some(TARGET), Some("silent 3 s".into()), None);
                }
                _ => {}
            }
        }
        fn poll_timeout(&self) -> Option<Deadline> {
            match self {
                Heartbeat::Sender { next_beat } => {
                    next_beat.map(|at| Deadline { at, reason: "beat" })
                }
                Heartbeat::Monitor { dead: true, .. } => None,
                Heartbeat::Monitor { last_heard, .. } => Some(Deadline {
                    at: *last_heard + DEAD_AFTER,
                    reason: "silence",
                }),
            }
        }
        fn describe(_: &Beat) -> Cow<'static, str> {
            "beat".into()
        }
    }

    /// The target crashes at 60.5 s and restarts at 70 s; 10 ms links.
    pub fn world() -> World {
        let node = |name: &str| NodeSpec {
            name: name.into(),
            clock: Clock::default(),
            start_at: Some(Timestamp::ZERO),
        };
        World {
            nodes: vec![node("monitor"), node("target")],
            network: LinkConfig {
                latency: Latency::Fixed(Duration::from_ms(10)),
                ..LinkConfig::default()
            },
            links: Vec::new(),
            faults: vec![
                (Timestamp::from_us(60_500_000), Fault::Crash(TARGET)),
                (Timestamp::from_us(70_000_000), Fault::Restart(TARGET)),
            ],
            limits: Limits {
                end: Timestamp::from_us(90_000_000),
                ..Limits::default()
            },
            keep: Level::Decision,
            seed: 7,
            tcp: Default::default(),
        }
    }

    pub fn on_main(world: &World) -> Trace {
        let mut engine = Engine::new(
            world.nodes.clone(),
            Network::new(world.seed, world.network),
            world.faults.clone(),
            world.limits,
            world.keep,
            Heartbeat::new,
        );
        engine.run().expect("within limits");
        engine.into_trace()
    }

    pub fn on_madsim(world: &World) -> Trace {
        madsim_engine::run(world, Heartbeat::new)
            .expect("runs on madsim")
            .0
    }
}

#[test]
fn your_own_heartbeat_machine_on_both_engines() {
    let world = own_machine::world();
    let (main, madsim) = (own_machine::on_main(&world), own_machine::on_madsim(&world));
    let at = |t: &Trace, kind: &str| {
        t.decisions()
            .find(|r| r.kind == kind)
            .map(|r| r.t)
            .unwrap_or_else(|| panic!("no {kind} in\n{}", decision_text(t)))
    };
    // Main engine, exactly: the last beat leaves at 60 s and lands at
    // 60.010 s; 3 s later the target is dead. Restarted at 70 s, its first
    // beat leaves at 71 s and lands at 71.010 s.
    assert_eq!(at(&main, "dead"), Timestamp::from_us(63_010_000));
    assert_eq!(at(&main, "alive"), Timestamp::from_us(71_010_000));
    // madsim: the same decisions, its socket costs allowed for.
    // (madsim says 63.015 s and 71.013 s: its sockets' milliseconds.)
    let diff = decision_differences(&main, &madsim, ENGINE_TOLERANCE, world.limits.end);
    assert!(
        diff.is_empty(),
        "{diff:?}\nmain:\n{}madsim:\n{}",
        decision_text(&main),
        decision_text(&madsim)
    );
}
