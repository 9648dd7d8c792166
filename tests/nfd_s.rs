//! Validation of `heartsim::qos` against Chen, Toueg and Aguilera, "On the
//! Quality of Service of Failure Detectors" (IEEE Transactions on
//! Computers 51(5), 2002): the NFD-S model (`src/models/nfd_s/`) runs over
//! many seeds, and the simulated T_MR, T_M and P_A must agree with the
//! paper's closed forms for NFD-S with synchronized clocks (the theorem of its
//! NFD-S analysis; its number, 4 or 5, is not checked against the PDF)
//! for a fixed delay and for a delay distribution.
//!
//! # The closed forms
//!
//! Heartbeat `m_j` is sent at `j*eta`, lost with probability `p_L`, else
//! delayed by `D` (distribution `F(y) = Pr(D <= y)`), independently. At
//! `tau_i + x` (`0 <= x < eta`) the monitor suspects iff no `m_j`, `j >= i`,
//! has arrived, which has probability
//!
//! ```text
//! u(x) = prod_{k >= 0} [1 - (1 - p_L) F(delta + x - k*eta)]
//! ```
//!
//! A mistake starts at `tau_i` iff `m_(i-1)` arrived before `tau_i` and the
//! monitor suspects at `tau_i`: `p_s = (1 - p_L) Pr(D < delta + eta) u(0)`
//! (strictly less: `m_(i-1)` must arrive before `tau_i`). Then
//!
//! ```text
//! E(T_MR) = eta / p_s
//! E(T_M)  = (integral_0^eta u(x) dx) / p_s
//! P_A     = 1 - (integral_0^eta u(x) dx) / eta
//! ```
//!
//! Simulated time is integer microseconds and a uniform latency draws an
//! integer number of them, so the integral is a sum over `x` in
//! microseconds with the discrete `F`; this is exact for the simulation,
//! not an approximation of it.
//!
//! # The tolerance
//!
//! Over `N` freshness intervals in all, the number of mistakes `M` is a sum
//! of indicators `X_i` with mean `p_s`, and the suspected time `S` a sum of
//! `S_i` in `[0, eta]` with mean `U = integral u`. `X_i` and `S_i` depend only
//! on heartbeats `m_(i-1)` to `m_(i+K)`, `K = floor((delta + eta) / eta)`, so
//! the sequences are `(K+2)`-dependent: covariances vanish beyond lag
//! `m = K + 2` and are at most the variance within it. Hence
//! `Var(M) <= (2m+1) N p_s (1 - p_s)` (binomial, inflated for dependence)
//! and `Var(S) <= (2m+1) N eta U` (as `Var(S_i) <= E(S_i^2) <= eta E(S_i)`).
//! By the central limit theorem for m-dependent sequences each estimate is
//! normal to within these bounds; we allow 5 standard deviations (a false
//! alarm has probability below 1e-6 per check), relative:
//!
//! ```text
//! rel_M = 5 sqrt((2m+1)(1 - p_s) / (N p_s))
//! rel_S = 5 sqrt((2m+1) eta / (N U))
//! T_MR = eta N / M         : within rel_M (to first order)
//! T_M  = S / M             : within rel_S + rel_M
//! P_A  = 1 - S / (N eta)   : 1 - P_A within rel_S
//! ```
//!
//! plus, for T_MR and T_M, the edge effects of finite runs: the qos module
//! averages complete recurrences and mistakes only, which leaves out at
//! most one recurrence interval and one mistake at each end of each run.
//! The seeds are fixed, so the test is deterministic; the tolerance says
//! why it is not luck that it passes.

use std::path::Path;

use heartsim::models::ALL;
use heartsim::qos::{self, Qos};
use heartsim::run::run;
use heartsim::scenario::Scenario;
use heartsim::sim::trace::Level;

const SEEDS: u64 = 40;
/// Simulated length of one seed's run, seconds (one freshness interval a
/// second).
const RUN_S: u64 = 20_000;

/// The NFD-S scenario: eta = 1 s, the given delta, loss and latency.
fn scenario(delta_ms: u64, drop: &str, latency: &str) -> Scenario {
    let text = format!(
        r#"version = 1

[scenario]
name = "NFD-S validation"
model = "nfd-s"
profile = "chen-toueg-aguilera-2002"
duration = "{RUN_S}s"

[limits]
max_events = 100000000

[config]
eta = "1s"
delta = "{delta_ms}ms"

[network]
latency = "{latency}"
drop = "{drop}"

[[node]]
name = "q"
kind = "monitor"

[[node]]
name = "p"
kind = "sender"
"#
    );
    Scenario::parse(ALL, Path::new("nfd-s.toml"), &text).expect("a valid scenario")
}

/// The QoS of (q, p) of each of `SEEDS` seeds.
fn simulate(s: &Scenario) -> Vec<Qos> {
    let model = heartsim::scenario::model::find(ALL, s.model).expect("registered");
    (1..=SEEDS)
        .map(|seed| {
            let out = run(s, Some(seed), Level::Decision).expect("within limits");
            let report = qos::of_run(model, s, &out.trace).expect("its own trace");
            assert_eq!(report.pairs.len(), 1);
            report.all
        })
        .collect()
}

/// T_MR and T_M in seconds, and P_A.
fn values(q: &Qos) -> [f64; 3] {
    [
        secs(q.recurrence.mean()),
        secs(q.mistake_duration.mean()),
        q.query_accuracy().expect("observed"),
    ]
}

/// The paper's closed forms for eta = 1 s, over integer microseconds.
struct Closed {
    t_mr_s: f64,
    t_m_s: f64,
    p_a: f64,
    p_s: f64,
    /// integral_0^eta u, seconds.
    u: f64,
    /// Lag beyond which mistakes and suspected time are independent.
    m: f64,
}

fn closed_form(delta_us: i64, p_l: f64, cdf: impl Fn(i64) -> f64) -> Closed {
    let eta_us: i64 = 1_000_000;
    let u = |x: i64| {
        (0..)
            .map(|k: i64| delta_us + x - k * eta_us)
            .take_while(|y| *y >= 0)
            .map(|y| 1.0 - (1.0 - p_l) * cdf(y))
            .product::<f64>()
    };
    let integral_us: f64 = (0..eta_us).map(u).sum();
    let p_s = (1.0 - p_l) * cdf(delta_us + eta_us - 1) * u(0);
    let eta = eta_us as f64 / 1e6;
    let integral = integral_us / 1e6;
    Closed {
        t_mr_s: eta / p_s,
        t_m_s: integral / p_s,
        p_a: 1.0 - integral / eta,
        p_s,
        u: integral,
        m: ((delta_us + eta_us) / eta_us + 2) as f64,
    }
}

fn secs(d: Option<heartsim::sim::Duration>) -> f64 {
    d.expect("measured").as_us() as f64 / 1e6
}

/// Simulated against closed form, within the tolerance above, and within
/// 5 standard errors of the spread between seeds (batch means: each seed's
/// run is one batch; with 40 batches, 5 standard errors leave a false
/// alarm probability below 1e-4 even for Student's t with 39 degrees of
/// freedom). The first bound needs no estimate of the variance; the second
/// is tighter.
fn agree(what: &str, runs: &[Qos], c: &Closed) {
    let mut pooled = Qos::default();
    for q in runs {
        pooled.merge_run(q);
    }
    let sim = &pooled;
    let per_seed: Vec<[f64; 3]> = runs.iter().map(values).collect();
    let k = per_seed.len() as f64;
    let stderr = |i: usize| {
        let mean = per_seed.iter().map(|v| v[i]).sum::<f64>() / k;
        let var = per_seed.iter().map(|v| (v[i] - mean).powi(2)).sum::<f64>() / (k - 1.0);
        (var / k).sqrt()
    };
    let n = (SEEDS * RUN_S) as f64;
    let rel_m = 5.0 * ((2.0 * c.m + 1.0) * (1.0 - c.p_s) / (n * c.p_s)).sqrt();
    let rel_s = 5.0 * ((2.0 * c.m + 1.0) / (n * c.u)).sqrt();
    // At most one recurrence and one mistake left out at each end of a run.
    let mistakes = sim.mistakes as f64;
    let edge = 2.0 * SEEDS as f64 / mistakes;
    let t_mr = secs(sim.recurrence.mean());
    let t_m = secs(sim.mistake_duration.mean());
    let p_a = sim.query_accuracy().expect("observed");
    let rows = [
        (
            "T_MR (s)",
            t_mr,
            c.t_mr_s,
            c.t_mr_s * (rel_m + edge),
            5.0 * stderr(0) + c.t_mr_s * edge,
        ),
        (
            "T_M (s)",
            t_m,
            c.t_m_s,
            c.t_m_s * (rel_s + rel_m + edge),
            5.0 * stderr(1) + c.t_m_s * edge,
        ),
        ("P_A", p_a, c.p_a, (1.0 - c.p_a) * rel_s, 5.0 * stderr(2)),
    ];
    println!(
        "{what}: {} mistakes over {n} intervals ({SEEDS} seeds x {RUN_S} s)",
        sim.mistakes
    );
    for (name, got, want, bound, batch) in rows {
        println!(
            "  {name:<9} simulated {got:.6}  closed form {want:.6}  |diff| {:.6}  \
             tolerance {bound:.6} (bound), {batch:.6} (5 standard errors)",
            (got - want).abs()
        );
    }
    for (name, got, want, bound, batch) in rows {
        assert!(
            (got - want).abs() <= bound.min(batch),
            "{what}: {name} simulated {got} vs closed form {want}, beyond {}",
            bound.min(batch)
        );
    }
    // One recurrence per mistake but the first of each run; every
    // suspicion is a mistake (the sender never goes down).
    assert_eq!(sim.recurrence.count + SEEDS, sim.mistakes);
    assert_eq!(sim.suspicions, sim.mistakes);
    assert_eq!(sim.run, heartsim::sim::Duration::from_secs(SEEDS * RUN_S));
}

/// Fixed delay 100 ms, delta 300 ms, loss 1/10: u(x) is p_L while the
/// heartbeat of the interval is due, p_L^2 once the next one is too.
/// E(T_MR) = 1/(p_L (1-p_L)) = 11.111 s, E(T_M) = 0.911 s, P_A = 0.918.
#[test]
fn nfd_s_with_a_fixed_delay_meets_the_closed_forms() {
    let p_l = 0.1;
    let c = closed_form(300_000, p_l, |y| if y >= 100_000 { 1.0 } else { 0.0 });
    assert!((c.t_mr_s - 1.0 / (p_l * (1.0 - p_l))).abs() < 1e-9);
    assert!((c.t_m_s - (0.8 + p_l * 0.2) / (1.0 - p_l)).abs() < 1e-9);
    let runs = simulate(&scenario(300, "1/10", "100ms"));
    agree("fixed delay 100 ms, delta 300 ms, p_L 1/10", &runs, &c);
}

/// Delay uniform over 50 ms..1450 ms (heartbeats overtake each other),
/// delta 1 s, loss 1/20.
#[test]
fn nfd_s_with_a_delay_distribution_meets_the_closed_forms() {
    let (lo, hi) = (50_000i64, 1_450_000i64);
    let cdf = |y: i64| (y.clamp(lo - 1, hi) - (lo - 1)) as f64 / (hi - lo + 1) as f64;
    let c = closed_form(1_000_000, 0.05, cdf);
    let runs = simulate(&scenario(1000, "1/20", "50ms..1450ms"));
    agree("uniform delay 50..1450 ms, delta 1 s, p_L 1/20", &runs, &c);
}
