//! The scenario suite: every file under `scenarios/` is its own test.
//!
//! For each file: its `[[expect]]`s must hold, its decision trace must match
//! the reviewed snapshot in `snapshots/`, and it must be deterministic (run
//! twice in this process and once in a child process, byte-identical jsonl).
//! A new scenario file is picked up without editing this harness.

use std::path::{Path, PathBuf};
use std::process::Command;

use heartsim::models::ALL;
use heartsim::run::{check, context, decision_text, describe, run, violations};
use heartsim::scenario::Scenario;
use heartsim::sim::trace::{Level, Record};
use libtest_mimic::{Arguments, Failed, Trial};

mod common;

fn jsonl(scenario: &Scenario) -> Result<Vec<u8>, Failed> {
    let outcome = run(scenario, None, Level::Net).map_err(|e| Failed::from(e.to_string()))?;
    let records: Vec<&Record> = outcome.trace.records().collect();
    let mut bytes = Vec::new();
    outcome
        .trace
        .write_jsonl(&records, &mut bytes)
        .map_err(|e| Failed::from(e.to_string()))?;
    Ok(bytes)
}

fn replay(rel: &str, seed: u64) -> String {
    format!("cargo run --release -- run {rel} --seed {seed}")
}

fn check_scenario(root: &Path, path: &Path) -> Result<(), Failed> {
    let rel = path
        .strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string();
    let scenario = Scenario::load(ALL, path).map_err(|e| Failed::from(e.to_string()))?;
    let outcome = run(&scenario, None, Level::Decision)
        .map_err(|e| format!("{e}\n  replay: {}", replay(&rel, scenario.seed)))?;

    // 1. Expectations.
    let mut failures: Vec<String> = check(&scenario, &outcome.trace)
        .iter()
        .filter_map(|v| {
            v.failure.as_ref().map(|why| {
                format!(
                    "  FAIL {}\n       {why}\n{}",
                    describe(&outcome.trace, v.expect),
                    context(&outcome.trace, v.expect, 4)
                )
            })
        })
        .collect();
    failures.extend(
        violations(&scenario, &outcome.trace)
            .iter()
            .map(|v| format!("  FAIL {v}")),
    );
    if !failures.is_empty() {
        return Err(format!(
            "{rel} (seed {}):\n{}\n  replay: {}",
            scenario.seed,
            failures.join("\n"),
            replay(&rel, scenario.seed)
        )
        .into());
    }

    // 2. Reviewed snapshot of the decisions.
    let name = rel
        .trim_start_matches("scenarios/")
        .trim_end_matches(".toml")
        .replace('/', "__");
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root.join("snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_description(format!(
        "{} (profile {}, seed {})",
        scenario.name, scenario.profile, scenario.seed
    ));
    settings.set_omit_expression(true);
    let text = decision_text(&outcome.trace);
    settings.bind(|| insta::assert_snapshot!(name, text));

    // 3. Determinism: twice in process, once in a child process.
    let first = jsonl(&scenario)?;
    let second = jsonl(&scenario)?;
    if first != second {
        return Err(format!(
            "{rel}: two runs in one process differ\n  replay: {}",
            replay(&rel, scenario.seed)
        )
        .into());
    }
    let child = Command::new(env!("CARGO_BIN_EXE_heartsim"))
        .current_dir(root)
        .args(["run", &rel, "--format", "jsonl"])
        .output()
        .map_err(|e| format!("cannot start heartsim: {e}"))?;
    if child.stdout != first {
        return Err(format!(
            "{rel}: the child process's jsonl differs from this process's (status {}, stderr: {})\n  replay: {}",
            child.status,
            String::from_utf8_lossy(&child.stderr),
            replay(&rel, scenario.seed)
        )
        .into());
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let files = common::scenario_files(&root.join("scenarios"));
    assert!(!files.is_empty(), "no scenario files under scenarios/");
    let trials = files
        .into_iter()
        .map(|path| {
            let rel = path
                .strip_prefix(&root)
                .unwrap_or(&path)
                .display()
                .to_string();
            let root = root.clone();
            Trial::test(rel, move || check_scenario(&root, &path))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
