//! Parser fuzzing: arbitrary bytes, mutated good files and TOML trees built
//! from the format's own keys (wrong types, out-of-range values, unknown
//! keys, random nesting) go through what `heartsim run` does with a file.
//! It never panics, never hangs (each case has a time bound, and runs are
//! held to a few thousand events), ends only as ok, a failed expectation or
//! limit, or bad input (exit 0, 1, 2), and every bad-input error carries
//! file:line:column.
//!
//! The corpus, `tests/parser-corpus/`, runs first, also through the CLI
//! binary; proptest's own regressions (`proptest-regressions/
//! parser_fuzz.txt`) run before new cases. `HEARTSIM_PARSER_FUZZ_CASES`
//! sets the budget (default 10,000); a long campaign:
//! `HEARTSIM_PARSER_FUZZ_CASES=1000000 cargo test --release --test parser_fuzz`.

use std::path::{Path, PathBuf};
use std::process::Command;

use heartsim::models::ALL;
use heartsim::run::{check, run, violations};
use heartsim::scenario::Scenario;
use heartsim::sim::trace::Level;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use toml::{Table, Value};

/// Runs are held to this many events: each case ends in bounded time.
const MAX_EVENTS: u64 = 1_000;
/// A case that takes longer than this has hung. Generous: a valid
/// 100,000-node case takes about 5 s of CPU to set up, and a shared or
/// loaded machine may double its wall time; a hang never ends.
const CASE_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// What `heartsim run` would exit with on `bytes`, or the rule it broke.
fn exit_code(bytes: &[u8]) -> Result<u8, String> {
    let path = Path::new("fuzz.toml");
    let mut scenario = match Scenario::from_bytes(ALL, path, bytes) {
        Ok(s) => s,
        Err(e) => {
            let Some(d) = e.diagnostic() else {
                return Err(format!("bad input without a position: {e}"));
            };
            let at = format!("fuzz.toml:{}:{}", d.line, d.column);
            if !d.rendered.contains(&at) {
                return Err(format!("the error does not say {at}:\n{}", d.rendered));
            }
            return Ok(2);
        }
    };
    scenario.limits.max_events = scenario.limits.max_events.min(MAX_EVENTS);
    scenario.limits.max_queue = scenario.limits.max_queue.min(MAX_EVENTS as usize * 10);
    let Ok(outcome) = run(&scenario, None, Level::Decision) else {
        return Ok(1);
    };
    let failed = check(&scenario, &outcome.trace)
        .iter()
        .any(|v| v.failure.is_some())
        || !violations(&scenario, &outcome.trace).is_empty();
    Ok(u8::from(failed))
}

/// [`exit_code`] within [`CASE_TIME_LIMIT`].
#[allow(clippy::disallowed_methods)] // host time bounds the test, never a trace
fn bounded(bytes: &[u8]) -> Result<u8, String> {
    let start = std::time::Instant::now();
    let code = exit_code(bytes);
    let took = start.elapsed();
    if took > CASE_TIME_LIMIT {
        return Err(format!("took {took:?}"));
    }
    code
}

// ---------------------------------------------------------------------------
// Generators.

/// What a key's plausible values look like.
#[derive(Clone, Copy, Debug)]
enum V {
    Dur,
    Between,
    Name,
    Names,
    Groups,
    Ratio,
    Int,
    Bool,
    Of(&'static [&'static str]),
}

const MODELS: &[&str] = &["joinmarket-directory", "tiny", ""];
const PROFILES: &[&str] = &[
    "joinmarket-ng",
    "joinmarket-rs",
    "joinmarket-ng-eb812d4c",
    "x",
];
const INVARIANTS: &[&str] = &[
    "healthy-peer-never-evicted",
    "one-eviction-per-connection",
    "x",
];
const NODE_KINDS: &[&str] = &["directory", "maker", "taker", "directory-peer", "x"];
const FAULT_KINDS: &[&str] = &[
    "start",
    "stop",
    "kill",
    "crash",
    "restart",
    "partition",
    "heal",
    "clock-jump",
    "clock-drift",
    "pause",
    "resume",
    "link",
    "break",
    "repair",
    "hold",
    "stall",
    "release",
    "explode",
];
const EVENTS: &[&str] = &[
    "evict", "evcit", "ping", "pong", "sweep", "register", "reject", "send", "crash", "start", "",
];
const REASONS: &[&str] = &[
    "pong timeout",
    "pong timeuot",
    "idle timeout",
    "send failed",
    "send failed: ",
    "cleared",
    "loss",
    "",
];
const NAMES: &[&str] = &[
    "dir", "dir", "alice", "alice", "bob", "net", "a b", "", "x\u{0}", "zoë", "m1",
];

/// A section: its name, whether it is an array of tables, and its keys.
type Section = (&'static str, bool, &'static [(&'static str, V)]);

const SECTIONS: &[Section] = &[
    (
        "scenario",
        false,
        &[
            ("name", V::Of(&["fuzz"])),
            ("model", V::Of(MODELS)),
            ("profile", V::Of(PROFILES)),
            ("seed", V::Int),
            ("duration", V::Dur),
            ("invariants", V::Of(INVARIANTS)),
        ],
    ),
    (
        "config",
        false,
        &[
            ("sweep_interval", V::Dur),
            ("idle_threshold", V::Dur),
            ("hard_evict", V::Dur),
            ("pong_wait", V::Dur),
        ],
    ),
    (
        "limits",
        false,
        &[("max_events", V::Int), ("max_queue", V::Int)],
    ),
    (
        "network",
        false,
        &[
            ("latency", V::Dur),
            ("drop", V::Ratio),
            ("duplicate", V::Ratio),
            ("reorder", V::Ratio),
            ("reorder_delay", V::Dur),
        ],
    ),
    (
        "tcp",
        false,
        &[
            ("rto_initial", V::Dur),
            ("rto_min", V::Dur),
            ("rto_max", V::Dur),
            ("retries2", V::Int),
            ("syn_retries", V::Int),
            ("syn_linear_timeouts", V::Int),
            ("synack_retries", V::Int),
        ],
    ),
    (
        "link",
        true,
        &[
            ("from", V::Name),
            ("to", V::Name),
            ("latency", V::Dur),
            ("drop", V::Ratio),
        ],
    ),
    (
        "node",
        true,
        &[
            ("name", V::Name),
            ("kind", V::Of(NODE_KINDS)),
            ("count", V::Int),
            ("start", V::Dur),
            ("clock_drift_ppm", V::Int),
            ("ping", V::Bool),
            ("behaviour", V::Of(&["responsive", "silent", "chatty", "x"])),
            (
                "location",
                V::Of(&["garbage:5222", "", "NOT-SERVING-ONION"]),
            ),
            ("chat_every", V::Dur),
            ("chat_line", V::Of(&["pubmsg", "malformed", "x"])),
            ("ping_directory_every", V::Dur),
            ("reconnect_after", V::Dur),
        ],
    ),
    (
        "fault",
        true,
        &[
            ("at", V::Dur),
            ("kind", V::Of(FAULT_KINDS)),
            ("node", V::Name),
            ("groups", V::Groups),
            ("from", V::Names),
            ("to", V::Names),
            (
                "by",
                V::Of(&["+1h", "-5m", "1m", "-0s", "+", "-400d", "--1s"]),
            ),
            ("ppm", V::Int),
            ("latency", V::Dur),
            ("drop", V::Ratio),
            ("duplicate", V::Ratio),
            ("reorder", V::Ratio),
            ("reorder_delay", V::Dur),
        ],
    ),
    (
        "expect",
        true,
        &[
            ("at", V::Dur),
            ("between", V::Between),
            ("never", V::Bool),
            ("count", V::Int),
            ("event", V::Of(EVENTS)),
            ("node", V::Name),
            ("peer", V::Name),
            ("reason", V::Of(REASONS)),
        ],
    ),
];

fn s(x: &str) -> Value {
    Value::String(x.to_string())
}

fn duration() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(&[
            "0s", "1s", "30s", "1m", "10m", "30m", "40m", "1h", "1.5h", "-1s", "", "5", "1us",
            "18446744073709551615us", "99999999999h", "50ms..150ms", "1m..1s", "..", "9600h",
            "9601h",
        ][..])
        .prop_map(str::to_string),
        1 => (0u64..100_000, prop::sample::select(&["h", "m", "s", "ms", "us", "d", ""][..]))
            .prop_map(|(n, u)| format!("{n}{u}")),
    ]
    .boxed()
}

fn int() -> BoxedStrategy<i64> {
    prop_oneof![
        3 => prop::sample::select(&[
            0i64, 1, 2, 3, -1, 10, 255, 256, 500_000, 500_001, -500_001, 99_999, 100_000,
            100_001, 1 << 32, i64::MAX, i64::MIN,
        ][..]),
        1 => any::<i64>(),
    ]
    .boxed()
}

fn name() -> BoxedStrategy<Value> {
    prop::sample::select(NAMES).prop_map(s).boxed()
}

fn names() -> BoxedStrategy<Value> {
    prop::collection::vec(name(), 0..4)
        .prop_map(Value::Array)
        .boxed()
}

/// Any TOML value: scalars of every type, arrays and tables of them.
fn any_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        int().prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Float),
        any::<bool>().prop_map(Value::Boolean),
        duration().prop_map(Value::String),
        "\\PC{0,12}".prop_map(Value::String),
        Just(Value::Datetime(
            "1979-05-27T07:32:00Z".parse().expect("a datetime")
        )),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Table(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A key of the format, or not.
fn key() -> BoxedStrategy<String> {
    let known: Vec<&str> = SECTIONS
        .iter()
        .flat_map(|(section, _, keys)| std::iter::once(*section).chain(keys.iter().map(|k| k.0)))
        .collect();
    prop_oneof![
        4 => prop::sample::select(known).prop_map(str::to_string),
        1 => "[a-z_]{1,8}",
    ]
    .boxed()
}

fn plausible(v: V) -> BoxedStrategy<Value> {
    match v {
        V::Dur => duration().prop_map(Value::String).boxed(),
        V::Between => (duration(), duration())
            .prop_map(|(a, b)| Value::Array(vec![Value::String(a), Value::String(b)]))
            .boxed(),
        V::Name => name(),
        V::Names => prop_oneof![name(), names()].boxed(),
        V::Groups => prop::collection::vec(names(), 0..4)
            .prop_map(Value::Array)
            .boxed(),
        V::Ratio => prop::sample::select(
            &[
                "0/100",
                "1/100",
                "1/1",
                "2/1",
                "1/0",
                "0/0",
                "x",
                "100/100",
                "1/2/3",
                "18446744073709551615/18446744073709551615",
            ][..],
        )
        .prop_map(s)
        .boxed(),
        V::Int => int().prop_map(Value::Integer).boxed(),
        V::Bool => any::<bool>().prop_map(Value::Boolean).boxed(),
        V::Of(words) => prop_oneof![
            4 => prop::sample::select(words).prop_map(s),
            // A list where one is wanted (invariants wants one).
            1 => prop::collection::vec(prop::sample::select(words).prop_map(s), 0..3)
                .prop_map(Value::Array),
        ]
        .boxed(),
    }
}

/// One table of a section: some of its keys, mostly with plausible values,
/// sometimes any value, sometimes an unknown key.
fn section_table(keys: &'static [(&'static str, V)]) -> BoxedStrategy<Table> {
    let entries: Vec<BoxedStrategy<Option<(String, Value)>>> = keys
        .iter()
        .map(|&(k, v)| {
            prop_oneof![
                3 => Just(None),
                6 => plausible(v).prop_map(move |x| Some((k.to_string(), x))),
                1 => any_value().prop_map(move |x| Some((k.to_string(), x))),
            ]
            .boxed()
        })
        .collect();
    let unknown = prop_oneof![
        9 => Just(None),
        1 => (key(), any_value()).prop_map(Some),
    ];
    (entries, unknown)
        .prop_map(|(entries, unknown)| entries.into_iter().chain([unknown]).flatten().collect())
        .boxed()
}

/// A scenario document from the format's own sections.
fn document() -> BoxedStrategy<Table> {
    let sections: Vec<BoxedStrategy<Option<(String, Value)>>> = SECTIONS
        .iter()
        .map(|&(name, many, keys)| {
            let present = match name {
                "scenario" | "node" => 19,
                _ => 6,
            };
            let value = if many {
                prop::collection::vec(section_table(keys).prop_map(Value::Table), 0..5)
                    .prop_map(Value::Array)
                    .boxed()
            } else {
                section_table(keys).prop_map(Value::Table).boxed()
            };
            prop_oneof![
                20 - present => Just(None),
                present => value.prop_map(move |v| Some((name.to_string(), v))),
                1 => any_value().prop_map(move |v| Some((name.to_string(), v))),
            ]
            .boxed()
        })
        .collect();
    let version = prop_oneof![
        9 => Just(Value::Integer(1)),
        1 => any_value(),
    ];
    (version, sections)
        .prop_map(|(version, sections)| {
            let mut doc = Table::new();
            doc.insert("version".into(), version);
            doc.extend(sections.into_iter().flatten());
            doc
        })
        .boxed()
}

/// A good file with a few bytes changed, inserted or removed.
fn mutated() -> BoxedStrategy<Vec<u8>> {
    let good = std::fs::read(corpus_dir().join("good-0.toml")).expect("the corpus has good-0.toml");
    prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6)
        .prop_map(move |edits| {
            let mut bytes = good.clone();
            for (at, byte, op) in edits {
                let i = at.index(bytes.len() + 1);
                match op {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => bytes.insert(i, byte),
                }
            }
            bytes
        })
        .boxed()
}

/// One change to a good document: a key of a section set (to a plausible
/// value, or any), a key removed, or a generated table appended.
#[derive(Clone, Debug)]
enum Edit {
    Set(&'static str, bool, String, Value),
    Remove(&'static str, String),
    Append(&'static str, Table),
}

fn edit() -> BoxedStrategy<Edit> {
    let sections: Vec<usize> = (0..SECTIONS.len()).collect();
    prop::sample::select(sections)
        .prop_flat_map(|i| {
            let (name, many, keys) = SECTIONS[i];
            let set = prop::sample::select(keys.to_vec()).prop_flat_map(move |(k, v)| {
                prop_oneof![3 => plausible(v), 1 => any_value()]
                    .prop_map(move |x| Edit::Set(name, many, k.to_string(), x))
            });
            let remove = prop::sample::select(keys.to_vec())
                .prop_map(move |(k, _)| Edit::Remove(name, k.to_string()));
            let append = section_table(keys).prop_map(move |t| Edit::Append(name, t));
            prop_oneof![6 => set, 2 => remove, 2 => append]
        })
        .boxed()
}

fn apply(doc: &mut Table, edit: Edit) {
    match edit {
        Edit::Set(section, many, key, value) => {
            let slot = doc.entry(section).or_insert_with(|| {
                if many {
                    Value::Array(vec![Value::Table(Table::new())])
                } else {
                    Value::Table(Table::new())
                }
            });
            let table = match slot {
                Value::Array(tables) => tables.last_mut(),
                other => Some(other),
            };
            if let Some(Value::Table(t)) = table {
                t.insert(key, value);
            }
        }
        Edit::Remove(section, key) => match doc.get_mut(section) {
            Some(Value::Table(t)) => {
                t.remove(&key);
            }
            Some(Value::Array(tables)) => {
                if let Some(Value::Table(t)) = tables.first_mut() {
                    t.remove(&key);
                }
            }
            _ => {}
        },
        Edit::Append(section, table) => {
            if let Value::Array(tables) = doc
                .entry(section)
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                tables.push(Value::Table(table));
            }
        }
    }
}

/// The good corpus file with one to three [`Edit`]s.
fn edited() -> BoxedStrategy<Vec<u8>> {
    let text = std::fs::read_to_string(corpus_dir().join("good-0.toml")).expect("good-0.toml");
    let good: Table = toml::from_str(&text).expect("TOML");
    prop::collection::vec(edit(), 1..4)
        .prop_map(move |edits| {
            let mut doc = good.clone();
            for e in edits {
                apply(&mut doc, e);
            }
            toml::to_string(&doc).unwrap_or_default().into_bytes()
        })
        .boxed()
}

fn input() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        4 => document().prop_map(|doc| toml::to_string(&doc).unwrap_or_default().into_bytes()),
        4 => edited(),
        1 => mutated(),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------
// The corpus, then the property.

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parser-corpus")
}

fn corpus() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/parser-corpus")
        .map(|e| e.expect("an entry").path())
        .collect();
    files.sort();
    files
}

/// Each corpus file gives the exit code its name ends with (`-0`, `-1`,
/// `-2` before the extension), here and through the CLI binary.
#[test]
fn corpus_then_arbitrary_input_never_panics_hangs_or_loses_the_position() {
    let files = corpus();
    assert!(files.len() >= 10, "only {} corpus files", files.len());
    for file in &files {
        let bytes = std::fs::read(file).expect("readable");
        let code = bounded(&bytes).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let stem = file
            .file_stem()
            .expect("a name")
            .to_string_lossy()
            .to_string();
        let want = stem.rsplit('-').next().and_then(|c| c.parse::<u8>().ok());
        assert_eq!(Some(code), want, "{}", file.display());
        let out = Command::new(env!("CARGO_BIN_EXE_heartsim"))
            .args(["run", "--decisions"])
            .arg(file)
            .output()
            .expect("the CLI runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(i32::from(code)),
            "{}: {stderr}",
            file.display()
        );
        if code == 2 {
            assert!(
                stderr.contains(&format!("{}:", file.display())) && !stderr.contains("panicked"),
                "{stderr}"
            );
        }
    }

    let cases = std::env::var("HEARTSIM_PARSER_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/parser_fuzz.txt",
        ))),
        max_shrink_iters: 2_000,
        ..Config::default()
    });
    let exits = std::cell::RefCell::new([0u64; 3]);
    let result = runner.run(&input(), |bytes| {
        let code = bounded(&bytes).map_err(|e| {
            TestCaseError::fail(format!("{e}\ninput: {:?}", String::from_utf8_lossy(&bytes)))
        })?;
        exits.borrow_mut()[usize::from(code)] += 1;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let [ok, failed, bad] = exits.into_inner();
    println!(
        "{cases} cases: {ok} ran ok, {failed} failed an expectation or limit, {bad} bad input"
    );
    // The generators reach past the parser: some cases run.
    assert!(
        ok + failed >= u64::from(cases) / 20,
        "{ok} ok, {failed} failed, {bad} bad"
    );
}
