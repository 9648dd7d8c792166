//! Models and the engine write only the record kinds and reasons they
//! declare (`Model::records`, `ENGINE_KINDS`): every scenario file and a
//! budget of generated cases per profile run with network records kept, and
//! every record is checked against the declarations. The kinds listed in
//! `docs/trace-format.md` are the declarations:
//! `HEARTSIM_WRITE_DOCS=1 cargo test --test declarations` rewrites them.

use std::path::{Path, PathBuf};

use heartsim::fuzz::{build, case_strategy, to_toml, GenOptions};
use heartsim::models::ALL;
use heartsim::run::run;
use heartsim::scenario::vocabulary::{kinds, markdown, undeclared};
use heartsim::scenario::{Model, Scenario};
use heartsim::sim::trace::{Level, Record, Trace, ENGINE_KINDS};
use heartsim::sim::{NodeId, Timestamp};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Every record of `scenario`'s run that its declarations do not admit,
/// and how many records it wrote.
fn undeclared_records(scenario: &Scenario, model: &dyn Model) -> (Vec<String>, usize) {
    let outcome = run(scenario, None, Level::Net).expect("runs within its limits");
    let problems = outcome
        .trace
        .records()
        .filter_map(|r| undeclared(model, &outcome.trace, r))
        .collect();
    (problems, outcome.trace.records().count())
}

#[test]
fn every_scenario_writes_only_declared_kinds_and_reasons() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    let files = walk(&root.join("scenarios"));
    let mut records = 0;
    for path in &files {
        let scenario = Scenario::load(ALL, path).expect("valid");
        let model = heartsim::scenario::model::find(ALL, scenario.model).expect("registered");
        let (found, n) = undeclared_records(&scenario, model);
        records += n;
        problems.extend(
            found
                .into_iter()
                .map(|p| format!("{}: {p}", path.display())),
        );
    }
    assert!(files.len() > 30, "only {} files", files.len());
    assert!(records > 2_000, "only {records} records checked");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Generated cases reach paths no scenario file shows (a send failing on
/// a broken link, retransmitted FINs, ...).
#[test]
fn generated_cases_write_only_declared_kinds_and_reasons() {
    for model in ALL {
        for (i, profile) in model.profiles().iter().enumerate() {
            let mut runner = TestRunner::new_with_rng(
                Config::default(),
                TestRng::from_seed(RngAlgorithm::ChaCha, &[i as u8 + 7; 32]),
            );
            let opts = GenOptions {
                profile: Some(profile.name),
                ..GenOptions::new(*model)
            };
            let strategy = case_strategy(&opts);
            for case in 0..60 {
                let file = build(&strategy.new_tree(&mut runner).expect("a case").current());
                let text = to_toml(&file);
                let scenario =
                    Scenario::parse(ALL, Path::new("generated.toml"), &text).expect("valid");
                let (problems, _) = undeclared_records(&scenario, *model);
                assert!(
                    problems.is_empty(),
                    "{} case {case}:\n{}\n{text}",
                    profile.name,
                    problems.join("\n")
                );
            }
        }
    }
}

/// The check itself: an undeclared kind, reason, missing reason or level.
#[test]
fn undeclared_records_are_named() {
    let model = heartsim::models::joinmarket::MODEL;
    let trace = Trace::new(vec!["dir".into(), "alice".into()], Level::Net);
    let record = |kind, reason: Option<&'static str>, level| Record {
        t: Timestamp::ZERO,
        node: Some(NodeId(0)),
        kind,
        peer: Some(NodeId(1)),
        reason: reason.map(Into::into),
        msg: None,
        level,
    };
    let check = |kind, reason, level| undeclared(model, &trace, &record(kind, reason, level));
    assert_eq!(check("evict", Some("pong timeout"), Level::Decision), None);
    assert_eq!(
        check(
            "reject",
            Some("invalid onion address in location-string: x"),
            Level::Decision
        ),
        None
    );
    assert_eq!(check("timer", Some("pong wait"), Level::Net), None);
    assert_eq!(check("drop", Some("loss (SYN)"), Level::Net), None);
    assert_eq!(
        check("evict", Some("pong timeuot"), Level::Decision).as_deref(),
        Some("\"evict\" does not declare the reason \"pong timeuot\": 0:00:00.000  dir      evict        alice    pong timeuot")
    );
    assert_eq!(
        check("evcit", None, Level::Decision).as_deref(),
        Some("undeclared kind \"evcit\": 0:00:00.000  dir      evcit        alice")
    );
    assert_eq!(
        check("evict", None, Level::Decision).as_deref(),
        Some("\"evict\" declares reasons, wrote none: 0:00:00.000  dir      evict        alice")
    );
    assert_eq!(
        check("timer", Some("beat"), Level::Net).as_deref(),
        Some("\"timer\" does not declare the reason \"beat\": 0:00:00.000  dir      timer        alice    beat")
    );
    assert_eq!(
        check("sweep", None, Level::Net).as_deref(),
        Some("\"sweep\" is declared at level Decision, written at Net: 0:00:00.000  dir      sweep        alice")
    );
}

#[test]
fn model_kinds_are_their_own() {
    for model in ALL {
        let mut seen = std::collections::BTreeSet::new();
        for k in kinds(*model) {
            assert!(
                seen.insert(k.kind),
                "{} declares {:?} twice",
                model.name(),
                k.kind
            );
        }
        for k in model.records() {
            assert!(
                !ENGINE_KINDS.iter().any(|e| e.kind == k.kind),
                "{} reuses the engine's kind {:?}",
                model.name(),
                k.kind
            );
        }
    }
}

const BEGIN: &str = "<!-- kinds: generated by tests/declarations.rs -->\n";
const END: &str = "<!-- end of kinds -->\n";

#[test]
fn trace_format_lists_the_declarations() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/trace-format.md");
    let text = std::fs::read_to_string(&file).expect("readable");
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        panic!("docs/trace-format.md lacks the markers {BEGIN:?} and {END:?}");
    };
    let want = format!("{}{BEGIN}{}{}", &text[..b], markdown(ALL), &text[e..]);
    if std::env::var_os("HEARTSIM_WRITE_DOCS").is_some() {
        std::fs::write(&file, &want).expect("written");
    } else {
        assert!(
            text == want,
            "docs/trace-format.md lists other kinds than the declarations: run \
             HEARTSIM_WRITE_DOCS=1 cargo test --test declarations, and review the diff"
        );
    }
}

/// A model's detector verdicts (`Model::verdicts`, what `heartsim run
/// --qos` measures) are decision kinds it declares, each once.
#[test]
fn verdict_kinds_are_declared_decision_kinds() {
    for model in ALL {
        let mut seen = Vec::new();
        for v in model.verdicts() {
            let declared = model.records().iter().find(|k| k.kind == v.kind);
            assert!(
                declared.is_some_and(|k| k.level == Level::Decision),
                "{}: verdict kind {:?} is not one of its decision record kinds",
                model.name(),
                v.kind
            );
            assert!(
                !seen.contains(&v.kind),
                "{}: {:?} twice",
                model.name(),
                v.kind
            );
            seen.push(v.kind);
        }
    }
}
