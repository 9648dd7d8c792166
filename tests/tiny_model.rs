//! A second model plugs in from outside the library: a heartbeat monitor
//! and its senders, in this file alone, registered by this test binary
//! (`MODELS`, beside joinmarket-directory). It runs through the scenario
//! format (its own `[config]` and `[[node]]` keys, errors at file:line:col),
//! the CLI (this binary runs `heartsim::cli::main(MODELS)` when
//! `HEARTSIM_TINY_CLI` is set, and the tests start it so) and
//! `heartsim fuzz --model tiny-heartbeat`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output};

use heartsim::run::{check, run, violations};
use heartsim::scenario::schema::schema;
use heartsim::scenario::vocabulary;
use heartsim::scenario::{
    self, AnySetup, Model, NodeSection, Profile, Scenario, ScenarioError, SectionSchemas, Sections,
    Violation, S,
};
use heartsim::sim::trace::{Level, Reason, RecordKind, Trace};
use heartsim::sim::{Deadline, Duration, Input, Machine, NodeId, Now, Outbox, Timestamp};
use libtest_mimic::{Arguments, Failed, Trial};
use proptest::prelude::*;
use schemars::{JsonSchema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// The registry of this binary: the one line a model adds.
static MODELS: &[&dyn Model] = &[heartsim::models::joinmarket::MODEL, &TinyHeartbeat];

// ---------------------------------------------------------------------------
// The model.

struct TinyHeartbeat;

const ALIVE_ONLY_AFTER_DEAD: &str = "alive-only-after-dead";
/// Profiles: the monitor as intended, and one that says `alive` on every
/// beat (a bug the invariant catches).
const FIXED: &str = "fixed-timeout";
const CHATTY: &str = "chatty-alive";

/// `[config]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The monitor declares a sender dead after this much silence (default "3s").
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<S<String>>,
}

/// A node's own keys (kind `monitor`, exactly one, or `sender`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Keys {
    /// sender: beat this often (default "1s").
    #[serde(skip_serializing_if = "Option::is_none")]
    every: Option<S<String>>,
}

impl Model for TinyHeartbeat {
    fn name(&self) -> &'static str {
        "tiny-heartbeat"
    }
    fn about(&self) -> &'static str {
        "A monitor that declares silent senders dead (a test-only model)."
    }
    fn docs(&self) -> &'static str {
        "tests/tiny_model.rs"
    }
    fn profiles(&self) -> &'static [Profile] {
        &[
            Profile {
                name: FIXED,
                about: "dead after a fixed silence, alive again at the next beat",
            },
            Profile {
                name: CHATTY,
                about: "says alive at every beat",
            },
        ]
    }
    fn invariants(&self) -> &'static [&'static str] {
        &[ALIVE_ONLY_AFTER_DEAD]
    }

    fn records(&self) -> &'static [RecordKind] {
        const RECORDS: &[RecordKind] = &[
            RecordKind::decision(ALIVE, &[], "the monitor heard a sender again"),
            RecordKind::decision(
                DEAD,
                &[Reason::Is("silent")],
                "the monitor declared a sender dead",
            ),
        ];
        RECORDS
    }
    fn deadlines(&self) -> &'static [&'static str] {
        &["beat", "silence"]
    }

    fn validate(&self, s: &Sections<'_>) -> Result<Box<dyn AnySetup>, ScenarioError> {
        let ctx = s.ctx;
        let mut timeout = Duration::from_secs(3);
        if let Some(raw) = &s.config {
            let c: Config = ctx.read(raw.clone())?;
            if let Some(t) = &c.timeout {
                timeout = ctx.positive(t, "timeout")?;
            }
        }
        let mut monitor = None;
        let mut every = vec![None; s.defs.len()];
        for node in &s.nodes {
            let keys: Keys = ctx.read(node.keys.clone())?;
            let kind = &node.section.kind;
            match kind.get_ref().as_str() {
                "monitor" if monitor.is_some() || node.section.count.is_some() => {
                    return ctx.err(kind.span(), "there is exactly one monitor");
                }
                "monitor" => monitor = Some(NodeId(node.ids.start)),
                "sender" => {
                    let d = match &keys.every {
                        Some(e) => ctx.positive(e, "every")?,
                        None => Duration::from_secs(1),
                    };
                    every[node.ids.clone()].fill(Some(d));
                }
                other => {
                    return ctx.err(
                        kind.span(),
                        format!("unknown node kind {other:?}: expected monitor or sender"),
                    )
                }
            }
        }
        let Some(monitor) = monitor else {
            return ctx.err(0..0, "no node has kind = \"monitor\"");
        };
        Ok(Box::new(Setup {
            chatty: s.profile == CHATTY,
            timeout,
            monitor,
            every,
        }))
    }

    fn schema(&self, generator: &mut SchemaGenerator) -> SectionSchemas {
        SectionSchemas {
            config: Some(generator.subschema_for::<Config>()),
            node: Keys::json_schema(generator),
        }
    }

    fn fuzz_hub(&self) -> NodeSection {
        section("mon", "monitor", None, &Keys::default())
    }
    fn fuzz_node(&self) -> BoxedStrategy<NodeSection> {
        (1u16..=99, 1u32..=5, prop_oneof![Just(0u32), 1u32..=60])
            .prop_map(|(id, every_s, start_s)| {
                let keys = Keys {
                    every: Some(S::new(0..0, format!("{every_s}s"))),
                };
                let start = (start_s > 0).then(|| format!("{start_s}s"));
                section(&format!("s{id}"), "sender", start, &keys)
            })
            .boxed()
    }
    fn fuzz_config(&self) -> BoxedStrategy<toml::Table> {
        (2u32..=10)
            .prop_map(|t| {
                let c = Config {
                    timeout: Some(S::new(0..0, format!("{t}s"))),
                };
                toml::Table::try_from(c).expect("a table")
            })
            .boxed()
    }
}

fn section(name: &str, kind: &str, start: Option<String>, keys: &Keys) -> NodeSection {
    NodeSection {
        name: S::new(0..0, name.to_string()),
        kind: S::new(0..0, kind.to_string()),
        count: None,
        start: start.map(|s| S::new(0..0, s)),
        clock_drift_ppm: None,
        keys: toml::Table::try_from(keys).expect("a table"),
    }
}

#[derive(Clone, Debug)]
struct Setup {
    chatty: bool,
    timeout: Duration,
    monitor: NodeId,
    /// Beat period of each sender, by node.
    every: Vec<Option<Duration>>,
}

impl scenario::Setup for Setup {
    type Machine = Node;

    fn machine(&self, node: NodeId) -> Node {
        match self.every[node.0] {
            Some(every) => Node::Sender {
                monitor: self.monitor,
                every,
                next: None,
            },
            None => Node::Monitor {
                chatty: self.chatty,
                timeout: self.timeout,
                senders: (0..self.every.len())
                    .filter(|&i| self.every[i].is_some())
                    .map(|i| (NodeId(i), Watch::default()))
                    .collect(),
            },
        }
    }

    fn violations(&self, scenario: &Scenario, trace: &Trace) -> Vec<Violation> {
        if !scenario.invariants.contains(&ALIVE_ONLY_AFTER_DEAD) {
            return Vec::new();
        }
        // The first `alive` of a sender not declared dead since its last.
        let mut dead = BTreeMap::new();
        let first = trace.decisions().find(|r| match (r.kind, r.peer) {
            (DEAD, Some(p)) => {
                dead.insert(p, true);
                false
            }
            (ALIVE, Some(p)) => !dead.insert(p, false).unwrap_or(false),
            _ => false,
        });
        first
            .map(|r| Violation {
                invariant: ALIVE_ONLY_AFTER_DEAD,
                message: format!(
                    "{} alive at {} but not dead since it was last alive",
                    trace.name(r.peer.expect("matched on peer")),
                    r.t
                ),
            })
            .into_iter()
            .collect()
    }
}

// ---------------------------------------------------------------------------
// The machine and its trace kinds.

const DEAD: &str = "dead";
const ALIVE: &str = "alive";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Beat;

#[derive(Clone, Copy, Debug, Default)]
pub struct Watch {
    last_heard: Timestamp,
    dead: bool,
}

#[derive(Debug)]
pub enum Node {
    Sender {
        monitor: NodeId,
        every: Duration,
        next: Option<Timestamp>,
    },
    Monitor {
        chatty: bool,
        timeout: Duration,
        senders: BTreeMap<NodeId, Watch>,
    },
}

impl Machine for Node {
    type Msg = Beat;

    fn handle(&mut self, now: Now, input: Input<Beat>, out: &mut Outbox<Beat>) {
        match (self, input) {
            (Node::Sender { every, next, .. }, Input::Start) => *next = Some(now.mono + *every),
            (Node::Sender { next, .. }, Input::Stop) => *next = None,
            (
                Node::Sender {
                    monitor,
                    every,
                    next,
                },
                Input::Timeout,
            ) => {
                if let Some(at) = next.filter(|at| now.mono >= *at) {
                    out.send(*monitor, Beat);
                    *next = Some(at + *every);
                }
            }
            (Node::Monitor { senders, .. }, Input::Start) => {
                for w in senders.values_mut() {
                    *w = Watch {
                        last_heard: now.mono,
                        dead: false,
                    };
                }
            }
            (
                Node::Monitor {
                    chatty, senders, ..
                },
                Input::Recv { from, .. },
            ) => {
                if let Some(w) = senders.get_mut(&from) {
                    if w.dead || *chatty {
                        out.record(ALIVE, Some(from), None, None);
                    }
                    *w = Watch {
                        last_heard: now.mono,
                        dead: false,
                    };
                }
            }
            (
                Node::Monitor {
                    timeout, senders, ..
                },
                Input::Timeout,
            ) => {
                for (id, w) in senders.iter_mut() {
                    if !w.dead && now.mono >= w.last_heard + *timeout {
                        w.dead = true;
                        out.record(DEAD, Some(*id), Some("silent".into()), None);
                    }
                }
            }
            _ => {}
        }
    }

    fn poll_timeout(&self) -> Option<Deadline> {
        match self {
            Node::Sender { next, .. } => next.map(|at| Deadline { at, reason: "beat" }),
            Node::Monitor {
                timeout, senders, ..
            } => senders
                .values()
                .filter(|w| !w.dead)
                .map(|w| w.last_heard + *timeout)
                .min()
                .map(|at| Deadline {
                    at,
                    reason: "silence",
                }),
        }
    }

    fn describe(_: &Beat) -> Cow<'static, str> {
        "beat".into()
    }
}

// ---------------------------------------------------------------------------
// Tests.

/// `s` beats every second and crashes at 10.5 s; restarted at 20 s, it
/// beats again at 21 s. 10 ms links.
const SCENARIO: &str = r#"version = 1

[scenario]
name = "a crashed sender is declared dead, then alive"
model = "tiny-heartbeat"
profile = "fixed-timeout"
duration = "30s"
invariants = ["alive-only-after-dead"]

[config]
timeout = "3s"

[network]
latency = "10ms"

[[node]]
name = "mon"
kind = "monitor"

[[node]]
name = "s"
kind = "sender"
every = "1s"

[[fault]]
at = "10500ms"
kind = "crash"
node = "s"

[[fault]]
at = "20s"
kind = "restart"
node = "s"

[[expect]]
at = "13010ms"
event = "dead"
node = "mon"
peer = "s"

[[expect]]
at = "21010ms"
event = "alive"
peer = "s"

[[expect]]
count = 1
event = "dead"
"#;

fn scenario_runs_through_the_format_and_its_invariant() -> Result<(), Failed> {
    let s = Scenario::parse(MODELS, Path::new("tiny.toml"), SCENARIO).map_err(|e| e.to_string())?;
    assert_eq!((s.model, s.profile), ("tiny-heartbeat", FIXED));
    let out = run(&s, None, Level::Decision).map_err(|e| e.to_string())?;
    for v in check(&s, &out.trace) {
        if let Some(why) = &v.failure {
            return Err(format!("line {}: {why}", v.expect.line).into());
        }
    }
    assert_eq!(violations(&s, &out.trace), vec![]);
    // With network records kept, every record is one the model and the
    // engine declare.
    let net = run(&s, None, Level::Net).map_err(|e| e.to_string())?;
    let undeclared: Vec<String> = net
        .trace
        .records()
        .filter_map(|r| vocabulary::undeclared(&TinyHeartbeat, &net.trace, r))
        .collect();
    assert_eq!(undeclared, Vec::<String>::new());
    // Its expectations are checked against its kinds.
    let typo = SCENARIO.replace("count = 1\nevent = \"dead\"", "count = 1\nevent = \"daed\"");
    let err = Scenario::parse(MODELS, Path::new("tiny.toml"), &typo).expect_err("a typo");
    assert_eq!(
        err.diagnostic().map(|d| d.message.as_str()),
        Some(
            "event \"daed\" is not a record kind of tiny-heartbeat or the engine, so this \
             [[expect]] could never match; did you mean \"dead\"? (the kinds: docs/trace-format.md)"
        )
    );
    // The same run under the chatty profile breaks the invariant.
    let chatty = SCENARIO.replace(FIXED, CHATTY);
    let s =
        Scenario::parse(MODELS, Path::new("chatty.toml"), &chatty).map_err(|e| e.to_string())?;
    let out = run(&s, None, Level::Decision).map_err(|e| e.to_string())?;
    let broken = violations(&s, &out.trace);
    assert!(
        !broken.is_empty() && broken.iter().all(|v| v.invariant == ALIVE_ONLY_AFTER_DEAD),
        "{broken:?}"
    );
    Ok(())
}

fn its_keys_are_checked_with_file_line_and_column() -> Result<(), Failed> {
    for (from, to, want) in [
        (
            "every = \"1s\"",
            "everyy = \"1s\"",
            "unknown field `everyy`",
        ),
        (
            "every = \"1s\"",
            "every = \"0s\"",
            "every must be greater than zero",
        ),
        ("timeout = \"3s\"", "timeout = 3", "invalid type: integer"),
        (
            "kind = \"sender\"",
            "kind = \"beacon\"",
            "expected monitor or sender",
        ),
    ] {
        let src = SCENARIO.replace(from, to);
        let line = src.lines().position(|l| l == to).expect("replaced") + 1;
        let err = Scenario::parse(MODELS, Path::new("bad.toml"), &src).expect_err(want);
        let d = err.diagnostic().expect("a position");
        assert!(d.message.contains(want), "{}", d.message);
        assert_eq!(d.line, line, "{}", d.rendered);
        assert!(
            d.rendered.contains(&format!("bad.toml:{line}:")),
            "{}",
            d.rendered
        );
    }
    Ok(())
}

fn its_schema_has_its_keys_and_no_others() -> Result<(), Failed> {
    let s = schema(&TinyHeartbeat);
    assert_eq!(
        s["definitions"]["Header"]["properties"]["model"]["const"],
        "tiny-heartbeat"
    );
    let node = &s["definitions"]["NodeSection"];
    assert!(node["properties"]["every"].is_object(), "{node}");
    assert!(node["properties"]["name"].is_object(), "{node}");
    assert!(node["properties"].get("ping").is_none(), "{node}");
    assert_eq!(node["additionalProperties"], false);
    let config = serde_json::to_string(&s["properties"]["config"]).expect("json");
    assert!(config.contains("Config"), "{config}");
    assert!(s["definitions"]["Config"]["properties"]["timeout"].is_object());
    Ok(())
}

/// This binary, as the `heartsim` CLI over `MODELS`.
fn cli(args: &[&str]) -> Output {
    Command::new(std::env::current_exe().expect("the test binary"))
        .env("HEARTSIM_TINY_CLI", "1")
        .args(args)
        .output()
        .expect("the CLI runs")
}

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tiny-model");
    std::fs::create_dir_all(&dir).expect("a temp dir");
    dir.join(name)
}

fn cli_lists_and_runs_it() -> Result<(), Failed> {
    let out = cli(&["models"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listed}");
    assert!(listed.contains("tiny-heartbeat") && listed.contains("joinmarket-directory"));
    assert!(listed.contains("chatty-alive") && listed.contains(ALIVE_ONLY_AFTER_DEAD));

    let file = tmp("crash.toml");
    std::fs::write(&file, SCENARIO).expect("written");
    let out = cli(&["run", "--decisions", file.to_str().expect("utf-8")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("0:00:13.010  mon"), "{stdout}");
    assert!(stdout.contains("ok    line"), "{stdout}");
    assert!(
        stdout.contains("check invariant alive-only-after-dead"),
        "{stdout}"
    );

    // It declares no detector verdicts (the seam's default): --qos says so.
    let out = cli(&["run", "--decisions", "--qos", file.to_str().expect("utf-8")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("qos: no verdict records: tiny-heartbeat declares 0 verdict kind(s)"),
        "{stdout}"
    );

    let bad = tmp("bad.toml");
    let src = SCENARIO.replace("every = ", "everyy = ");
    let line = src
        .lines()
        .position(|l| l.starts_with("everyy"))
        .expect("there")
        + 1;
    std::fs::write(&bad, src).expect("written");
    let out = cli(&["run", bad.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("bad.toml:{line}:1")), "{stderr}");
    Ok(())
}

fn cli_fuzzes_it() -> Result<(), Failed> {
    let dir = tmp("fuzz");
    let dir = dir.to_str().expect("utf-8");
    let out = cli(&[
        "fuzz",
        "--model",
        "tiny-heartbeat",
        "--profile",
        FIXED,
        "--cases",
        "64",
        "--check-determinism",
        "--out",
        dir,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("64 cases, no failure"), "{stdout}");

    // A profile of another model is refused, naming the model's own.
    let out = cli(&[
        "fuzz",
        "--model",
        "joinmarket-directory",
        "--profile",
        FIXED,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("not a profile of joinmarket-directory"),
        "{stderr}"
    );

    // The buggy profile is found out, shrunk, and written as a scenario file
    // that this CLI replays; --profile alone picks the model.
    let out = cli(&["fuzz", "--profile", CHATTY, "--cases", "64", "--out", dir]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(ALIVE_ONLY_AFTER_DEAD), "{stdout}");
    let replay = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("replay: cargo run -- "))
        .expect("a replay line");
    let args: Vec<&str> = replay.split_whitespace().collect();
    let out = cli(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  invariant alive-only-after-dead"),
        "{stdout}"
    );
    Ok(())
}

fn main() -> ExitCode {
    if std::env::var_os("HEARTSIM_TINY_CLI").is_some() {
        return heartsim::cli::main(MODELS);
    }
    let args = Arguments::from_args();
    let trials = vec![
        Trial::test(
            "scenario_runs_through_the_format_and_its_invariant",
            scenario_runs_through_the_format_and_its_invariant,
        ),
        Trial::test(
            "its_keys_are_checked_with_file_line_and_column",
            its_keys_are_checked_with_file_line_and_column,
        ),
        Trial::test(
            "its_schema_has_its_keys_and_no_others",
            its_schema_has_its_keys_and_no_others,
        ),
        Trial::test("cli_lists_and_runs_it", cli_lists_and_runs_it),
        Trial::test("cli_fuzzes_it", cli_fuzzes_it),
    ];
    libtest_mimic::run(&args, trials).exit_code()
}
