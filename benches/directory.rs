//! The JoinMarket directory with 100, 1,000 and 10,000 peers over 24
//! simulated hours: mixed behaviours, 1/100 drop, 50..150 ms latency.
//!
//! `cargo bench --bench directory` prints, per size, the events, wall time,
//! events/s, peak heap, and the cost per event as a ratio to the 100-peer
//! baseline measured in the same run (1.0 = perfectly linear in events).
//! Criterion then times each size. Wall-clock reads are allowed here only.
//!
//! `HEARTSIM_BENCH_PEERS=10000 cargo bench --bench directory` runs that one
//! size once and exits: the driver to put under `perf record` or
//! `valgrind --tool=callgrind` (the binary is in `target/release/deps/`).
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use heartsim::run::run;
use heartsim::sim::trace::Level;
use peak_alloc::PeakAlloc;

mod common;
use common::scenario;

#[global_allocator]
static PEAK: PeakAlloc = PeakAlloc;

fn main() {
    if let Ok(peers) = std::env::var("HEARTSIM_BENCH_PEERS") {
        let peers: usize = peers.parse().expect("HEARTSIM_BENCH_PEERS is a number");
        let out = run(&scenario(peers), None, Level::Decision).expect("within limits");
        println!("{peers} peers: {} events", out.stats.events);
        return;
    }
    let sizes = [100, 1_000, 10_000];
    println!("peers   events      wall_s  Mevents/s  peak_MB  cost/event vs 100 peers");
    let mut baseline_ns_per_event = None;
    for peers in sizes {
        let s = scenario(peers);
        PEAK.reset_peak_usage();
        let before = PEAK.current_usage();
        let start = Instant::now();
        let out = run(&s, None, Level::Decision).expect("within limits");
        let wall = start.elapsed();
        let peak_mb = (PEAK.peak_usage().saturating_sub(before)) as f64 / 1e6;
        let events = out.stats.events;
        let ns_per_event = wall.as_nanos() as f64 / events as f64;
        let base = *baseline_ns_per_event.get_or_insert(ns_per_event);
        println!(
            "{peers:>6} {events:>9} {:>10.3} {:>10.2} {peak_mb:>8.1} {:>10.2}",
            wall.as_secs_f64(),
            events as f64 / wall.as_secs_f64() / 1e6,
            ns_per_event / base,
        );
        drop(out);
    }

    let mut c = Criterion::default().configure_from_args().sample_size(10);
    let mut group = c.benchmark_group("directory_24h");
    for peers in sizes {
        let s = scenario(peers);
        let events = run(&s, None, Level::Decision).unwrap().stats.events;
        group.throughput(Throughput::Elements(events));
        group.bench_function(format!("{peers}_peers"), |b| {
            b.iter(|| black_box(run(&s, None, Level::Decision).unwrap().stats.events))
        });
    }
    group.finish();
    c.final_summary();
}
