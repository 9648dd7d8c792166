//! Fuzzing throughput: cases per second of `heartsim fuzz` over the
//! directory model, per profile, with and without the determinism check
//! (which runs every case twice), as ratios to the first row measured in
//! the same run. `cargo bench --bench fuzz`. Wall-clock reads are allowed
//! here only.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use heartsim::fuzz::{fuzz, FaultKind, FuzzConfig, GenOptions};
use heartsim::models::joinmarket::{Profile, MODEL};

fn main() {
    let cases = 2_000;
    println!("profile                  determinism  cases/s   vs first row");
    let mut baseline = None;
    for profile in Profile::ALL {
        for check_determinism in [false, true] {
            let config = FuzzConfig {
                gen: GenOptions {
                    profile: Some(profile.name()),
                    // Only faults every profile survives: the bench measures
                    // speed, and a found failure would end the campaign.
                    faults: FaultKind::ALL
                        .into_iter()
                        .filter(|k| !matches!(k, FaultKind::Stall | FaultKind::StopStart))
                        .collect(),
                    ..GenOptions::new(MODEL)
                },
                cases,
                seed: 5,
                check_determinism,
                out_dir: std::env::temp_dir().join("heartsim-bench-failures"),
                ..FuzzConfig::new(MODEL)
            };
            let start = Instant::now();
            let result = fuzz(&config, |_, _| {});
            let secs = start.elapsed().as_secs_f64();
            let rate = f64::from(cases) / secs;
            let base = *baseline.get_or_insert(rate);
            let note = match result {
                Ok(_) => String::new(),
                Err(f) => format!("  (stopped: {})", f.failure.summary()),
            };
            println!(
                "{:<24} {:<12} {:>8.0} {:>8.2}{note}",
                profile.name(),
                check_determinism,
                rate,
                rate / base
            );
        }
    }
}
