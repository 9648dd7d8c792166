//! Prints tests/oracle/links_vectors.json, the vectors test_links.py checks
//! links.py against. Not part of the workspace; to run it, in a scratch
//! directory outside the repository:
//!
//! ```text
//! mkdir -p src && cp REPO/tests/oracle/links_vectors.rs src/main.rs
//! cp REPO/Cargo.lock .          # the repository's crate versions
//! cat > Cargo.toml <<EOF
//! [package]
//! name = "linkvec"
//! version = "0.1.0"
//! edition = "2021"
//! [dependencies]
//! rand = { version = "=0.8.8", default-features = false }
//! rand_chacha = "=0.3.1"
//! heartsim-sim = { path = "REPO/sim" }
//! [workspace]
//! EOF
//! cargo run --offline --release > REPO/tests/oracle/links_vectors.json
//! ```
use heartsim_sim::net::{Fate, Latency, LinkConfig, Network};
use heartsim_sim::rng::{stream, Ratio};
use heartsim_sim::time::Duration;
use heartsim_sim::NodeId;
use rand::{Rng, RngCore};

fn main() {
    let seeds: [u64; 4] = [0, 7, 2026113101, u64::MAX];
    let names = ["net/a/b", "net/swarmctl/agent1", "", "t"];
    let mut out = Vec::new();

    // Words: next_u32 x 70 (across the 64-word buffer), then next_u64 on a
    // fresh stream after 63 u32s (the buffer-boundary case), and after 64.
    for &seed in &seeds {
        for name in names {
            let mut r = stream(seed, name);
            let u32s: Vec<String> = (0..70).map(|_| r.next_u32().to_string()).collect();
            let mut r = stream(seed, name);
            let u64s: Vec<String> = (0..8).map(|_| r.next_u64().to_string()).collect();
            let mut r = stream(seed, name);
            for _ in 0..63 {
                r.next_u32();
            }
            let edge: Vec<String> = (0..3).map(|_| r.next_u64().to_string()).collect();
            let mut r = stream(seed, name);
            for _ in 0..64 {
                r.next_u32();
            }
            let edge64: Vec<String> = (0..3).map(|_| r.next_u64().to_string()).collect();
            out.push(format!(
                "{{\"seed\":{seed},\"name\":{name:?},\"u32\":[{}],\"u64\":[{}],\"u64_after_63\":[{}],\"u64_after_64\":[{}]}}",
                u32s.join(","),
                u64s.join(","),
                edge.join(","),
                edge64.join(",")
            ));
        }
    }

    // gen_range(0..den) on u32 and gen_range(lo..=hi) on u64, interleaved as
    // route interleaves them, including ranges whose rejection zone is large.
    let dens: [u32; 7] = [1, 2, 3, 100, 1000, 0x8000_0001, u32::MAX];
    let ranges: [(u64, u64); 6] = [
        (0, 1),
        (50_000, 150_000),
        (1, 1_000_000),
        (0, (1 << 63) + 12345),
        (5, u64::MAX - 1),
        (1_000_000, 86_400_000_000 * 365),
    ];
    for &seed in &seeds[..3] {
        let mut r = stream(seed, "net/x/y");
        let mut draws = Vec::new();
        for i in 0..120 {
            let den = dens[i % dens.len()];
            let (lo, hi) = ranges[i % ranges.len()];
            draws.push(format!("[{den},{}]", r.gen_range(0..den)));
            draws.push(format!("[{lo},{hi},{}]", r.gen_range(lo..=hi)));
        }
        out.push(format!(
            "{{\"seed\":{seed},\"name\":\"net/x/y\",\"ranges\":[{}]}}",
            draws.join(",")
        ));
    }

    // Network::route itself: a default and an override per direction, names
    // as the engine gives them; each fate with the link's config.
    let ms = Duration::from_ms;
    let lossy = LinkConfig {
        latency: Latency::Uniform {
            lo: ms(50),
            hi: ms(150),
        },
        drop: Ratio::new(1, 3).unwrap(),
        ..LinkConfig::default()
    };
    let jitter = LinkConfig {
        latency: Latency::Uniform {
            lo: ms(1),
            hi: ms(2),
        },
        ..LinkConfig::default()
    };
    let drop_only = LinkConfig {
        latency: Latency::Fixed(ms(10)),
        drop: Ratio::new(7, 100).unwrap(),
        ..LinkConfig::default()
    };
    let everything = LinkConfig {
        latency: Latency::Uniform {
            lo: ms(5),
            hi: ms(9),
        },
        drop: Ratio::new(1, 10).unwrap(),
        duplicate: Ratio::new(1, 4).unwrap(),
        reorder: Ratio::new(1, 5).unwrap(),
        reorder_delay: ms(300),
    };
    let names3 = ["master", "agent1", "agent2"];
    for &seed in &seeds[..3] {
        let mut net = Network::new(seed, lossy);
        net.set_link(NodeId(1), NodeId(0), drop_only);
        net.set_link(NodeId(2), NodeId(0), everything);
        net.set_link(NodeId(0), NodeId(2), jitter);
        let mut fates = Vec::new();
        for i in 0..200usize {
            let (from, to) = [(0, 1), (1, 0), (2, 0), (0, 2), (1, 2)][i * 7 % 5];
            let f = net.route(NodeId(from), NodeId(to), |id| names3[id.0].to_string());
            let f = match f {
                Fate::Lost => "\"lost\"".to_string(),
                Fate::Partitioned => unreachable!(),
                Fate::Deliver { delay, duplicate } => format!(
                    "[{},{}]",
                    delay.as_us(),
                    duplicate.map_or("null".to_string(), |d| d.as_us().to_string())
                ),
            };
            fates.push(format!("[{from},{to},{f}]"));
        }
        out.push(format!(
            "{{\"seed\":{seed},\"route\":[{}]}}",
            fates.join(",")
        ));
    }
    println!("[\n{}\n]", out.join(",\n"));
}
