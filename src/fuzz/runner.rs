//! Running cases: validate, simulate, check invariants (and optionally that
//! two runs give the same bytes); on a failure let proptest shrink the case
//! and write the smallest one as a scenario file with its replay command.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};

use proptest::test_runner::{
    Config, FailurePersistence, FileFailurePersistence, RngAlgorithm, TestCaseError, TestError,
    TestRng, TestRunner,
};

use proptest::strategy::{Strategy, ValueTree};

use super::{scenario_strategy, to_toml, GenOptions};
use crate::jobs::Shard;
use crate::run::{run, violations, Outcome};
use crate::scenario::{Model, Scenario, ScenarioFile};
use crate::sim::trace::{Level, Trace};

/// How one case failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CaseFailure {
    /// The generator made a file the validator rejects: a generator bug.
    Invalid(String),
    /// The run hit a limit.
    Limit(String),
    /// One or more invariants broke.
    Invariants(Vec<String>),
    /// Two runs of the same case gave different traces.
    Nondeterministic {
        line: usize,
        first: String,
        second: String,
    },
    /// The engine or a machine panicked: always a heartsim bug.
    Panic(String),
}

impl CaseFailure {
    /// A one-line name for reports.
    pub fn summary(&self) -> String {
        match self {
            CaseFailure::Invalid(_) => "invalid generated scenario".into(),
            CaseFailure::Limit(_) => "run limit hit".into(),
            CaseFailure::Invariants(v) => v
                .first()
                .and_then(|m| m.split(':').next())
                .unwrap_or("invariant violated")
                .to_string(),
            CaseFailure::Nondeterministic { .. } => "nondeterministic trace".into(),
            CaseFailure::Panic(_) => "panic".into(),
        }
    }
}

impl fmt::Display for CaseFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaseFailure::Invalid(e) => write!(f, "the generator made an invalid scenario:\n{e}"),
            CaseFailure::Limit(e) => write!(f, "{e}"),
            CaseFailure::Invariants(v) => f.write_str(&v.join("\n")),
            CaseFailure::Nondeterministic {
                line,
                first,
                second,
            } => write!(
                f,
                "the same case gave two different traces; first divergence at jsonl line {line}:\n  run 1: {first}\n  run 2: {second}"
            ),
            CaseFailure::Panic(why) => write!(f, "heartsim panicked (a heartsim bug): {why}"),
        }
    }
}

fn jsonl(trace: &Trace) -> Vec<u8> {
    let records: Vec<_> = trace.records().collect();
    let mut bytes = Vec::new();
    trace
        .write_jsonl(&records, &mut bytes)
        .expect("writing to memory cannot fail");
    bytes
}

/// Run a case; a panic is a failure like any other (shrunk, written,
/// replayable), not the end of the campaign.
fn run_caught(scenario: &Scenario, level: Level) -> Result<Outcome, CaseFailure> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(scenario, None, level))) {
        Ok(outcome) => outcome.map_err(|e| CaseFailure::Limit(e.to_string())),
        Err(payload) => {
            let why = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            Err(CaseFailure::Panic(why))
        }
    }
}

/// Check one generated file of `model`: it must validate, run within its
/// limits and keep its invariants; with `twice`, a second run must give the
/// same bytes.
pub fn check_file(
    model: &'static dyn Model,
    file: &ScenarioFile,
    twice: bool,
) -> Result<(), CaseFailure> {
    let text = to_toml(file);
    let scenario = Scenario::parse(&[model], Path::new("generated.toml"), &text)
        .map_err(|e| CaseFailure::Invalid(format!("{e}\n{text}")))?;
    let level = if twice { Level::Net } else { Level::Decision };
    let outcome = run_caught(&scenario, level)?;
    let broken = violations(&scenario, &outcome.trace);
    if !broken.is_empty() {
        return Err(CaseFailure::Invariants(
            broken.iter().map(ToString::to_string).collect(),
        ));
    }
    if twice {
        let again = run_caught(&scenario, level)?;
        let (a, b) = (jsonl(&outcome.trace), jsonl(&again.trace));
        if let Some((line, first, second)) = first_divergence(&a, &b) {
            return Err(CaseFailure::Nondeterministic {
                line,
                first,
                second,
            });
        }
    }
    Ok(())
}

/// The first line (1-based) where two jsonl traces differ, with both lines
/// (`<end>` where one trace is shorter), or `None` if they are identical.
pub fn first_divergence(a: &[u8], b: &[u8]) -> Option<(usize, String, String)> {
    if a == b {
        return None;
    }
    let (a, b) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
    let (mut la, mut lb) = (a.lines(), b.lines());
    for n in 1.. {
        match (la.next(), lb.next()) {
            (Some(x), Some(y)) if x == y => continue,
            (None, None) => break,
            (x, y) => {
                let end = || "<end>".to_string();
                return Some((
                    n,
                    x.map_or_else(end, str::to_string),
                    y.map_or_else(end, str::to_string),
                ));
            }
        }
    }
    // Same lines, different bytes (a trailing newline).
    Some((a.lines().count() + 1, "<end>".into(), "<end>".into()))
}

#[cfg(test)]
mod tests {
    use super::first_divergence;

    #[test]
    fn divergence_names_the_first_differing_line() {
        assert_eq!(first_divergence(b"a\nb\n", b"a\nb\n"), None);
        assert_eq!(
            first_divergence(b"a\nb\nc\n", b"a\nB\nc\n"),
            Some((2, "b".into(), "B".into()))
        );
        assert_eq!(
            first_divergence(b"a\n", b"a\nextra\n"),
            Some((2, "<end>".into(), "extra".into()))
        );
    }
}

/// One fuzzing campaign.
#[derive(Clone, Debug)]
pub struct FuzzConfig {
    pub gen: GenOptions,
    pub cases: u32,
    /// Seeds proptest's generator: the same seed explores the same cases.
    pub seed: u64,
    /// Run every case twice and compare the traces byte for byte.
    pub check_determinism: bool,
    /// Where a shrunk failure is written.
    pub out_dir: PathBuf,
    /// Most shrink steps proptest may take.
    pub max_shrink_iters: u32,
    /// proptest's regression file: failing seeds found before are replayed
    /// first, and a new failure's seed is appended. Commit it.
    pub regressions: Option<PathBuf>,
    /// Threads that run cases (`--jobs`); the result does not depend on it.
    pub jobs: usize,
    /// The slice of the cases this campaign runs (`--shard`).
    pub shard: Shard,
}

impl FuzzConfig {
    /// 256 cases of `model` from seed 0, any profile and fault kind.
    pub fn new(model: &'static dyn Model) -> Self {
        FuzzConfig {
            gen: GenOptions::new(model),
            cases: 256,
            seed: 0,
            check_determinism: false,
            out_dir: PathBuf::from("target/heartsim/failures"),
            max_shrink_iters: 4096,
            regressions: None,
            jobs: 1,
            shard: Shard::ALL,
        }
    }
}

/// What a campaign that found nothing did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuzzReport {
    pub cases: u32,
}

/// A shrunk failure, written to a file.
#[derive(Debug)]
pub struct FuzzFailure {
    pub failure: CaseFailure,
    /// The scenario's own seed (in the file).
    pub scenario_seed: u64,
    pub fuzz_seed: u64,
    pub profile: String,
    pub nodes: usize,
    pub faults: usize,
    pub path: PathBuf,
}

/// The command that replays a failure file.
pub fn replay_command(path: &Path) -> String {
    format!("cargo run -- run {}", path.display())
}

impl fmt::Display for FuzzFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fuzz failure: {} (profile {}, scenario seed {}, fuzz seed {})",
            self.failure.summary(),
            self.profile,
            self.scenario_seed,
            self.fuzz_seed
        )?;
        for line in self.failure.to_string().lines() {
            writeln!(f, "  {line}")?;
        }
        writeln!(
            f,
            "  minimal scenario: {} ({} nodes, {} faults)",
            self.path.display(),
            self.nodes,
            self.faults
        )?;
        write!(f, "  replay: {}", replay_command(&self.path))
    }
}

/// The fuzz seed as proptest's 32-byte ChaCha seed.
fn rng_for(seed: u64) -> TestRng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

/// Write `text` as `<dir>/<stem>.toml`, or `<stem>-2.toml`, ... if a
/// different file already has that name: a failure never overwrites another.
fn write_new(dir: &Path, stem: &str, text: &str) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    for n in 1u32.. {
        let name = if n == 1 {
            format!("{stem}.toml")
        } else {
            format!("{stem}-{n}.toml")
        };
        let path = dir.join(name);
        match fs::read_to_string(&path) {
            Ok(existing) if existing == text => return Ok(path),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::write(&path, text)?;
                return Ok(path);
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("u32 names run out")
}

/// Run a campaign. `progress(cases run, this one failed)` is called after
/// every case (shrink steps included), from any worker thread. A failure is
/// shrunk, written under `config.out_dir`, and returned.
///
/// Case `k` is the same for any `jobs` and `shard`: cases are generated in
/// order on one thread, each from a seed drawn from the generator state
/// the campaign seed started (proptest's own chain, so a campaign finds
/// what it found before `--jobs`), and run on `jobs` threads. The failure
/// reported is the first in case order: cases after a failing one are not
/// started, those before it all finish, and only the first is shrunk.
pub fn fuzz(
    config: &FuzzConfig,
    progress: impl Fn(u32, bool) + Sync,
) -> Result<FuzzReport, Box<FuzzFailure>> {
    let persistence = || {
        config.regressions.as_ref().map(|p| {
            // proptest wants a `'static` path; one small string per campaign.
            let path: &'static str = Box::leak(p.to_string_lossy().into_owned().into_boxed_str());
            Box::new(FileFailurePersistence::Direct(path)) as Box<dyn FailurePersistence>
        })
    };
    let proptest_config = |cases: u32| Config {
        cases,
        failure_persistence: persistence(),
        max_shrink_iters: config.max_shrink_iters,
        ..Config::default()
    };
    let done = AtomicU32::new(0);
    let strategy = scenario_strategy(&config.gen);
    // proptest's test: run one case, count it.
    let test = |file: ScenarioFile| {
        let outcome = check_file(config.gen.model, &file, config.check_determinism);
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        progress(n, outcome.is_err());
        outcome.map_err(|f| TestCaseError::fail(f.to_string()))
    };
    // Seeds that failed before come first (proptest replays them before
    // any new case, then starts new cases from the campaign seed).
    if config.regressions.is_some() {
        let mut runner = TestRunner::new_with_rng(proptest_config(0), rng_for(config.seed));
        let result = runner.run(&strategy, test);
        if result.is_err() {
            return finish(config, result);
        }
    }
    let range = config.shard.range(config.cases as usize);
    let first_failure = AtomicUsize::new(usize::MAX);
    // The generator state before each failing case's seed was drawn.
    let failures: Mutex<Vec<(usize, TestRng)>> = Mutex::new(Vec::new());
    let (tx, rx) = mpsc::sync_channel::<(usize, TestRng, ScenarioFile)>(config.jobs.max(1));
    let rx = Mutex::new(rx);
    let mut aborted = None;
    std::thread::scope(|s| {
        for _ in 0..config.jobs.max(1) {
            s.spawn(|| loop {
                let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok((k, before, file)) = next else { break };
                if k > first_failure.load(Ordering::SeqCst) {
                    continue;
                }
                let outcome = check_file(config.gen.model, &file, config.check_determinism);
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                progress(n, outcome.is_err());
                if outcome.is_err() {
                    first_failure.fetch_min(k, Ordering::SeqCst);
                    failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((k, before));
                }
            });
        }
        // The generator, on this thread: proptest's chain of case seeds
        // (`TestRunner::run`: each case's RNG is drawn from the previous
        // case's after it generated its case).
        let mut runner = TestRunner::new_with_rng(proptest_config(1), rng_for(config.seed));
        for k in 0..range.end {
            if k > first_failure.load(Ordering::SeqCst) {
                break;
            }
            let before = runner.rng().clone();
            let case_rng = runner.new_rng();
            *runner.rng() = case_rng;
            let tree = match strategy.new_tree(&mut runner) {
                Ok(t) => t,
                Err(why) => {
                    aborted = Some(why);
                    break;
                }
            };
            if k >= range.start && tx.send((k, before, tree.current())).is_err() {
                break;
            }
        }
        drop(tx);
    });
    if let Some(why) = aborted {
        return finish(config, Err(TestError::Abort(why)));
    }
    let failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    match failures.into_iter().min_by_key(|(k, _)| *k) {
        None => Ok(FuzzReport {
            cases: range.len() as u32,
        }),
        // Shrink it as proptest would have: a runner in the state before
        // the case, one case to run; it also records the seed in the
        // regression file.
        Some((_, before)) => {
            let mut runner = TestRunner::new_with_rng(proptest_config(1), before);
            let result = runner.run(&strategy, test);
            finish(config, result)
        }
    }
}

/// Write the cases `config` would run (its shard of them), unrun, as
/// `<dir>/<model>-<seed>-<k>.toml`, `k` the case number: the same chain of
/// cases as [`fuzz`] (so case `k` is the one `fuzz` runs as case `k`), for
/// tools that run them elsewhere (the differential oracle, docs/oracle.md).
/// Returns the paths written, in case order.
pub fn emit(config: &FuzzConfig, dir: &Path) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let strategy = scenario_strategy(&config.gen);
    let range = config.shard.range(config.cases as usize);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng_for(config.seed));
    let mut written = Vec::with_capacity(range.len());
    for k in 0..range.end {
        let case_rng = runner.new_rng();
        *runner.rng() = case_rng;
        let tree = strategy
            .new_tree(&mut runner)
            .map_err(|why| io::Error::other(format!("proptest aborted: {why}")))?;
        if k >= range.start {
            let file = tree.current();
            let path = dir.join(format!(
                "{}-{}-{k}.toml",
                file.scenario.model.get_ref(),
                config.seed
            ));
            fs::write(&path, to_toml(&file))?;
            written.push(path);
        }
    }
    Ok(written)
}

/// A campaign's end: a shrunk failure written to a file, or proptest's
/// abort.
fn finish(
    config: &FuzzConfig,
    result: Result<(), TestError<ScenarioFile>>,
) -> Result<FuzzReport, Box<FuzzFailure>> {
    match result {
        Ok(()) => Ok(FuzzReport {
            cases: config.cases,
        }),
        Err(TestError::Fail(_, minimal)) => {
            let failure = check_file(config.gen.model, &minimal, config.check_determinism)
                .expect_err("the minimal case fails");
            let text = to_toml(&minimal);
            let seed = minimal.scenario.seed;
            let stem = format!("{}-{}", minimal.scenario.model.get_ref(), config.seed);
            let path = write_new(&config.out_dir, &stem, &text).unwrap_or_else(|e| {
                // Keep the case even if the directory is not writable.
                let fallback = std::env::temp_dir().join(format!("{stem}.toml"));
                let _ = fs::write(&fallback, &text);
                eprintln!("warning: cannot write {}: {e}", config.out_dir.display());
                fallback
            });
            Err(Box::new(FuzzFailure {
                failure,
                scenario_seed: seed,
                fuzz_seed: config.seed,
                profile: minimal.scenario.profile.get_ref().clone(),
                nodes: minimal.nodes.len(),
                faults: minimal.faults.len(),
                path,
            }))
        }
        Err(TestError::Abort(why)) => Err(Box::new(FuzzFailure {
            failure: CaseFailure::Limit(format!("proptest aborted: {why}")),
            scenario_seed: 0,
            fuzz_seed: config.seed,
            profile: String::new(),
            nodes: 0,
            faults: 0,
            path: PathBuf::new(),
        })),
    }
}
