//! `heartsim sweep` and `heartsim merge` through the binary: the results
//! do not depend on `--jobs` or on sharding, and bad input is a clear error
//! (exit 2).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SWEEP: &str = "sweeps/joinmarket-idle-threshold-by-drop.toml";
const FILES: [&str; 4] = ["aggregate.csv", "aggregate.jsonl", "rows.csv", "rows.jsonl"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn out_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("sweep")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn heartsim(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_heartsim"));
    c.current_dir(root())
        .args(args)
        .env_remove("JOB_COMPLETION_INDEX");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("heartsim runs")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn sweep(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let d = dir.to_str().unwrap();
    let mut args = vec!["sweep", SWEEP, "--seeds", "1..30", "--out", d, "--quiet"];
    args.extend_from_slice(extra);
    heartsim(&args, env)
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

#[test]
fn one_job_two_jobs_and_three_shards_merged_give_identical_files() {
    let one = out_dir("jobs1");
    let two = out_dir("jobs2");
    let printed = ok(&sweep(&one, &["--jobs", "1"], &[]));
    assert_eq!(ok(&sweep(&two, &["--jobs", "2"], &[])), printed);
    // The grid has runs with and without mistakes and detections, so the
    // aggregate has intervals to get wrong.
    let agg = String::from_utf8(read(&one, "aggregate.csv")).unwrap();
    assert_eq!(agg.lines().count(), 1 + 9, "{agg}");
    assert!(
        agg.lines()
            .nth(1)
            .unwrap()
            .starts_with("0,300s,0/100,30,0,"),
        "{agg}"
    );
    let rows = String::from_utf8(read(&one, "rows.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), 9 * 30);
    assert!(rows.contains("\"mistakes\":1"), "no run with a mistake");

    // Shards 0 and 2 by --shard i/n, shard 1 by JOB_COMPLETION_INDEX.
    let shards: Vec<PathBuf> = (0..3).map(|i| out_dir(&format!("shard{i}"))).collect();
    ok(&sweep(&shards[0], &["--shard", "0/3", "--jobs", "2"], &[]));
    ok(&sweep(
        &shards[1],
        &["--shard", "/3"],
        &[("JOB_COMPLETION_INDEX", "1")],
    ));
    ok(&sweep(&shards[2], &["--shard", "2/3", "--jobs", "1"], &[]));
    assert!(
        !shards[0].join("aggregate.csv").exists(),
        "a shard has no aggregate"
    );
    let merged = out_dir("merged");
    // In any order.
    let dirs: Vec<&str> = [2, 0, 1]
        .iter()
        .map(|&i| shards[i].to_str().unwrap())
        .collect();
    let mut args = vec!["merge"];
    args.extend(&dirs);
    args.extend(["--out", merged.to_str().unwrap()]);
    assert_eq!(ok(&heartsim(&args, &[])), printed);
    for f in FILES {
        assert_eq!(
            read(&one, f),
            read(&two, f),
            "{f}: --jobs 1 and --jobs 2 differ"
        );
        assert_eq!(
            read(&one, f),
            read(&merged, f),
            "{f}: one run and merged shards differ"
        );
    }

    // A shard missing, or given twice, is an error.
    let missing = heartsim(
        &[
            "merge",
            dirs[0],
            dirs[1],
            "--out",
            out_dir("bad").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("missing shard(s): 1/3"));
    let twice = heartsim(
        &[
            "merge",
            dirs[0],
            dirs[0],
            dirs[1],
            "--out",
            out_dir("bad2").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(twice.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("are both shard"));
    // An earlier sweep is not overwritten without --force.
    let again = sweep(&one, &[], &[]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
}

#[test]
fn set_paths_address_sections_and_nodes() {
    let dir = out_dir("nodes");
    let out = heartsim(
        &[
            "sweep",
            "sweeps/joinmarket-lossy-links-and-a-crashed-host-ng.toml",
            "--set",
            "node.m.reconnect_after=5s,60s",
            "--set",
            "tcp.retries2=3,15",
            "--seeds",
            "1..2",
            "--quiet",
            "--out",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    let table = ok(&out);
    assert_eq!(table.lines().count(), 1 + 4, "{table}");
    assert!(
        table.lines().nth(4).unwrap().starts_with("60s  "),
        "{table}"
    );
    // A --set replaces the sweep file's axis of that path, in its place.
    let dir = out_dir("replace");
    let out = heartsim(
        &[
            "sweep",
            SWEEP,
            "--set",
            "network.drop=1/100",
            "--set",
            "node.m.ping=true",
            "--seeds",
            "1..2",
            "--quiet",
            "--out",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    let table = ok(&out);
    assert_eq!(table.lines().count(), 1 + 3, "{table}");
    assert!(
        table.starts_with("config.idle_threshold  network.drop  node.m.ping  runs"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .nth(3)
            .unwrap()
            .starts_with("900s                   1/100         true "),
        "{table}"
    );
}

fn bad(args: &[&str]) -> String {
    let out = heartsim(args, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn bad_axes_values_seeds_and_files_are_clear_errors() {
    let s = "sweeps/joinmarket-lossy-links-and-a-crashed-host-ng.toml";
    let o = out_dir("bad-input");
    let o = o.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--set", "confg.idle_threshold=1s"], "expected config.KEY"),
        (&["--set", "config.idle_threshold"], "expected PATH=VALUE"),
        (
            &["--set", "node.nobody.ping=true"],
            "no [[node]] named \"nobody\": expected one of dir, m",
        ),
        (&["--set", "tcp.retries2=many"], "expected u32"),
        (&["--set", "node.m.ping=maybe"], "expected true or false"),
        (
            &["--set", "config.idle_threshold=soon"],
            "with config.idle_threshold=soon",
        ),
        (&["--set", "config.no_such_key=1s"], "no_such_key"),
        (&["--seeds", "0..5000000"], "MAX_SEEDS"),
        (&["--seeds", "9..1"], "empty range"),
        (
            &["--set", "network.drop=1/100", "--set", "network.drop=2/100"],
            "set twice",
        ),
        (&["--shard", "3/3"], "0..2"),
        (&["--shard", "/3"], "JOB_COMPLETION_INDEX is not set"),
        (&["--jobs", "0"], "at least 1"),
    ];
    for (extra, want) in cases {
        let mut args = vec!["sweep", s, "--out", o, "--quiet"];
        args.extend_from_slice(extra);
        let e = bad(&args);
        assert!(e.contains(want), "{extra:?}: wanted {want:?} in:\n{e}");
    }
    // Too many cells: 100 x 101 values.
    let many_a: Vec<String> = (1..=100).map(|i| format!("{i}s")).collect();
    let many_b: Vec<String> = (1..=101).map(|i| format!("{i}/1000")).collect();
    let a = format!("config.idle_threshold={}", many_a.join(","));
    let b = format!("network.drop={}", many_b.join(","));
    let e = bad(&["sweep", s, "--set", &a, "--set", &b, "--out", o]);
    assert!(e.contains("MAX_CELLS"), "{e}");

    // A sweep file's errors name its line and column.
    let dir = out_dir("bad-file");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "version = 1\n[sweep]\nscenario = \"x.toml\"\n[[sweep.axis]]\npath = \"configs.x\"\nvalues = [\"1s\"]\n",
    )
    .unwrap();
    let e = bad(&["sweep", file.to_str().unwrap(), "--out", o]);
    assert!(e.contains("bad.toml:5:8"), "{e}");
    assert!(e.contains("expected config.KEY"), "{e}");
    std::fs::write(
        &file,
        "version = 1\n[sweep]\nscenario = \"x.toml\"\nsed = 1\n",
    )
    .unwrap();
    let e = bad(&["sweep", file.to_str().unwrap(), "--out", o]);
    assert!(e.contains("bad.toml:4:1"), "{e}");
}

/// docs/qos.md's worked sweep prints the table pasted there.
#[test]
fn the_documented_sweep_prints_the_documented_table() {
    let dir = out_dir("docs");
    let table = ok(&sweep_args(&[
        "sweep",
        SWEEP,
        "--quiet",
        "--out",
        dir.to_str().unwrap(),
    ]));
    let docs = std::fs::read_to_string(root().join("docs/qos.md")).unwrap();
    assert_eq!(table.lines().count(), 10, "{table}");
    for line in table.lines() {
        assert!(
            docs.contains(line),
            "docs/qos.md lacks:\n{line}\nprinted:\n{table}"
        );
    }
    // The same sweep on the command line gives the same aggregate.
    let cli = out_dir("docs-cli");
    let again = ok(&sweep_args(&[
        "sweep",
        "sweeps/joinmarket-lossy-links-and-a-crashed-host-ng.toml",
        "--set",
        "config.idle_threshold=300s,600s,900s",
        "--set",
        "network.drop=0/100,5/100,20/100",
        "--seeds",
        "1..200",
        "--quiet",
        "--out",
        cli.to_str().unwrap(),
    ]));
    assert_eq!(again, table);
    for f in FILES {
        assert_eq!(read(&dir, f), read(&cli, f), "{f}");
    }
}

fn sweep_args(args: &[&str]) -> Output {
    heartsim(args, &[])
}

/// A run that hits a limit is a row with an `error`, counted in the
/// aggregate's `failed`; the sweep exits 1. Without a terminal there is no
/// progress bar on standard error.
#[test]
fn runs_that_hit_a_limit_are_rows_with_an_error_and_exit_1() {
    let dir = out_dir("limits");
    let out = heartsim(
        &[
            "sweep",
            "sweeps/joinmarket-lossy-links-and-a-crashed-host-ng.toml",
            "--set",
            "limits.max_events=50,100000000",
            "--seeds",
            "1..3",
            "--out",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("sweep: 3 run(s) failed; the first: cell 0 seed 1: "),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "only the failure line:\n{stderr}"
    );
    let rows = String::from_utf8(read(&dir, "rows.jsonl")).unwrap();
    assert_eq!(
        rows.lines().filter(|l| l.contains("\"error\"")).count(),
        3,
        "{rows}"
    );
    let agg = String::from_utf8(read(&dir, "aggregate.csv")).unwrap();
    assert!(
        agg.lines().nth(1).unwrap().starts_with("0,50,0,3,"),
        "{agg}"
    );
    assert!(
        agg.lines().nth(2).unwrap().starts_with("1,100000000,3,0,"),
        "{agg}"
    );
    // Merged (one whole sweep is its own only shard): the same files, exit 1.
    let merged = out_dir("limits-merged");
    let out = heartsim(
        &[
            "merge",
            dir.to_str().unwrap(),
            "--out",
            merged.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    for f in FILES {
        assert_eq!(read(&dir, f), read(&merged, f), "{f}");
    }
}

#[test]
fn fuzz_shards_and_jobs_on_the_command_line() {
    let dir = out_dir("fuzz-cli");
    let d = dir.to_str().unwrap();
    let out = heartsim(
        &[
            "fuzz", "--cases", "20", "--shard", "1/2", "--jobs", "2", "--out", d,
        ],
        &[],
    );
    assert_eq!(ok(&out), "fuzz: 10 cases, no failure (seed 0, shard 1/2)\n");
    let out = heartsim(
        &["fuzz", "--cases", "20", "--shard", "/2", "--out", d],
        &[("JOB_COMPLETION_INDEX", "0")],
    );
    assert_eq!(ok(&out), "fuzz: 10 cases, no failure (seed 0, shard 0/2)\n");
    let e = bad(&["fuzz", "--shard", "2/2", "--out", d]);
    assert!(e.contains("numbered 0..1"), "{e}");
}
