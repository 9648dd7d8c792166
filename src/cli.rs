//! The `heartsim` command line, over the models a binary registers
//! (`src/main.rs` passes [`crate::models::ALL`]). Interface documented in
//! `docs/cli.md`.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::builder::PossibleValuesParser;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::fuzz::{fuzz, FaultKind, FuzzConfig, GenOptions};
use crate::jobs::{resolve_jobs, Shard};
#[cfg(madsim)]
use crate::run::run_madsim;
use crate::run::{check, context, describe, run, violations, Outcome};
use crate::scenario::{model, Model, Scenario};
use crate::sim::trace::{Level, Record};
use crate::{qos, sweep};

#[derive(Parser)]
#[command(
    name = "heartsim",
    version,
    about = "Deterministic simulation of heartbeat and liveness protocols"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenario files, print their traces and check their [[expect]]s.
    ///
    /// Exit status: 0 if every expectation holds, 1 if one fails or a run hits
    /// a limit, 2 if a file cannot be read or is not a valid scenario.
    Run {
        /// Scenario files (TOML, version = 1).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Trace format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Print decisions only (the model's decisions, such as evictions,
        /// and faults), not every send and delivery.
        #[arg(long)]
        decisions: bool,
        /// Write the trace to this file instead of standard output.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Overwrite the --trace file if it exists.
        #[arg(long)]
        force: bool,
        /// Which engine runs the scenario: `main` (the discrete-event
        /// engine) or `madsim` (the machines in their async driver on a
        /// madsim runtime; needs a build with RUSTFLAGS="--cfg madsim").
        #[arg(long, value_enum, default_value_t = EngineArg::Main)]
        engine: EngineArg,
        /// Measure the failure detector's quality of service (detection
        /// time, mistakes, query accuracy, ...; docs/qos.md) and print it
        /// as a table; with `--format jsonl`, also append a summary line
        /// to the trace.
        #[arg(long)]
        qos: bool,
    },
    /// Generate scenarios, run them, check their invariants; stop at the
    /// first failure and write it, shrunk, as a scenario file.
    ///
    /// Exit status: 0 if every case passed, 1 if one failed (the message has
    /// the seed and the command that replays it), 2 on bad arguments.
    Fuzz {
        /// Which model (default: the one --profile belongs to, else the
        /// first `heartsim models` lists).
        #[arg(long)]
        model: Option<String>,
        /// One of the model's profiles (default: any).
        #[arg(long)]
        profile: Option<String>,
        /// How many cases to generate.
        #[arg(long, default_value_t = 1000)]
        cases: u32,
        /// Seeds the generator: the same seed explores the same cases.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Fault kinds each case's swarm is drawn from, comma-separated
        /// (default: all that apply to the model). Kinds: drop, delay,
        /// duplicate and reorder (datagram models only), partition,
        /// one-way-partition, crash, kill, stop, pause, clock-jump,
        /// clock-drift, stall, break; disk-error, slow-disk, torn-write and
        /// kill-before-rename (models whose nodes live on hosts).
        #[arg(long, value_delimiter = ',', value_parser = parse_fault_kind)]
        faults: Vec<FaultKind>,
        /// Most nodes per case besides the model's hub (a directory's peers,
        /// say).
        #[arg(long, default_value_t = 4)]
        max_peers: usize,
        /// Run every case twice and compare the traces byte for byte.
        #[arg(long)]
        check_determinism: bool,
        /// Where a failing case is written.
        #[arg(long, default_value = "target/heartsim/failures")]
        out: PathBuf,
        /// A proptest regression file: seeds that failed before are tried
        /// first, and a new failing seed is appended to it.
        #[arg(long)]
        regressions: Option<PathBuf>,
        /// Write the generated cases (this shard's) to DIR as scenario
        /// files, `<model>-<seed>-<case>.toml`, and run none of them
        /// (for the differential oracle, docs/oracle.md).
        #[arg(long, value_name = "DIR")]
        emit: Option<PathBuf>,
        #[command(flatten)]
        jobs: JobsArgs,
    },
    /// List the models, their profiles and invariants.
    Models,
    /// Run one scenario and write one self-contained HTML page of it: a
    /// lane per node (truth: up, down, paused, cut off; the verdicts about
    /// it; its decisions and faults, each with its trace line on hover),
    /// zoomable over time, and the QoS table (docs/qos.md).
    ///
    /// Exit status: 0 written, 1 the run hit a limit or is too big to draw,
    /// 2 a bad file or an output that exists (without --force).
    Report {
        /// A scenario file (TOML, version = 1).
        #[arg(required_unless_present = "sweep", conflicts_with = "sweep")]
        file: Option<PathBuf>,
        /// Draw a sweep instead: the output directory of `heartsim sweep`
        /// (or `merge`): each cell's detection time against its mistake
        /// rate, with 95% intervals, the base scenario's own settings
        /// marked.
        #[arg(long, value_name = "DIR")]
        sweep: Option<PathBuf>,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Where to write the page.
        #[arg(long, short)]
        out: PathBuf,
        /// Overwrite --out if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Run a scenario over a grid of parameter values times seeds and
    /// measure its QoS in each run: one row per (cell, seed) and one
    /// aggregate per cell with 95% intervals (docs/qos.md, "Sweeps").
    ///
    /// Exit status: 0 if every run gave a QoS, 1 if one hit a limit, 2 on
    /// bad input.
    Sweep {
        /// A scenario file, or a sweep file (a `[sweep]` table naming one).
        file: PathBuf,
        /// An axis: a path in the scenario's TOML (config.KEY, network.KEY,
        /// tcp.KEY, limits.KEY, scenario.duration, scenario.profile,
        /// node.NAME.KEY) and its values, comma-separated:
        /// `config.idle_threshold=300s,600s,900s`. Repeat for more axes.
        #[arg(long = "set", value_name = "PATH=V1,V2,...", value_parser = parse_axis)]
        sets: Vec<sweep::Axis>,
        /// Seeds, both ends included: `1..200` is 200 seeds (default: the
        /// sweep file's, else the scenario's own seed).
        #[arg(long, value_parser = sweep::Seeds::parse)]
        seeds: Option<sweep::Seeds>,
        /// Where rows.csv, rows.jsonl, aggregate.csv, aggregate.jsonl and
        /// sweep.json go.
        #[arg(long, default_value = "target/heartsim/sweep")]
        out: PathBuf,
        /// Overwrite an earlier sweep's files in --out.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        jobs: JobsArgs,
    },
    /// Join the outputs of `heartsim sweep --shard i/n` runs into the rows
    /// and aggregate one run would have written.
    ///
    /// Exit status: 0; 1 if a run in them failed (as `sweep`); 2 if the
    /// directories are not every shard of one sweep, once.
    Merge {
        /// The shards' --out directories.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where the merged files go.
        #[arg(long)]
        out: PathBuf,
        /// Overwrite an earlier sweep's files in --out.
        #[arg(long)]
        force: bool,
    },
}

/// `--jobs`, `--shard` and `--quiet`, shared by `sweep` and `fuzz`.
#[derive(clap::Args)]
struct JobsArgs {
    /// Threads to run on (default: every core). Results do not depend on it.
    #[arg(long)]
    jobs: Option<usize>,
    /// Run only slice i of n (0-based) of the work, for a CI matrix or a
    /// Kubernetes Indexed Job: `/n` takes i from JOB_COMPLETION_INDEX.
    #[arg(long, value_name = "i/n")]
    shard: Option<String>,
    /// No progress bar (there is none either when standard error is not
    /// a terminal).
    #[arg(long)]
    quiet: bool,
}

impl JobsArgs {
    fn resolve(&self) -> Result<(usize, Shard), String> {
        let jobs = resolve_jobs(self.jobs)?;
        let shard = match &self.shard {
            None => Shard::ALL,
            Some(s) => Shard::from_arg(s)?,
        };
        Ok((jobs, shard))
    }

    /// A progress bar of `len` steps on standard error, with its ETA;
    /// hidden under --quiet or when standard error is not a terminal.
    fn bar(&self, len: u64, what: &str) -> ProgressBar {
        use std::io::IsTerminal as _;
        if self.quiet || !io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{bar:40}} {{pos}}/{{len}} {what}  {{per_sec}}  {{elapsed_precise}}  ETA {{eta}}  {{msg}}"
            ))
            .expect("a valid template"),
        );
        bar
    }
}

fn parse_axis(s: &str) -> Result<sweep::Axis, String> {
    sweep::parse_set(s)
}

fn parse_fault_kind(s: &str) -> Result<FaultKind, String> {
    FaultKind::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
        format!("expected one of {}", names.join(", "))
    })
}

/// What `--engine madsim` says in a build without the madsim engine.
const NO_MADSIM: &str = "this heartsim was built without the madsim engine; build and run it with\n  \
     RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/madsim cargo run -- run --engine madsim FILE...";

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum EngineArg {
    Main,
    Madsim,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Text,
    Jsonl,
}

/// `tracing` timestamps in simulated time, so `RUST_LOG=debug` lines up
/// with the trace.
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match crate::sim::current_time() {
            Some(t) => write!(w, "{t:>12}"),
            None => write!(w, "{:>12}", "-"),
        }
    }
}

/// The clap command, with `--model` and `--profile` values from `models`.
fn command(models: &[&'static dyn Model]) -> clap::Command {
    let names: Vec<&'static str> = models.iter().map(|m| m.name()).collect();
    let profiles: Vec<&'static str> = models
        .iter()
        .flat_map(|m| m.profiles().iter().map(|p| p.name))
        .collect();
    let by_model: Vec<String> = models
        .iter()
        .map(|m| {
            let names: Vec<&str> = m.profiles().iter().map(|p| p.name).collect();
            format!("{}: {}", m.name(), names.join(" | "))
        })
        .collect();
    Cli::command().mut_subcommand("fuzz", |fuzz| {
        fuzz.mut_arg("model", |a| {
            a.value_parser(PossibleValuesParser::new(names))
        })
        .mut_arg("profile", |a| {
            a.value_parser(PossibleValuesParser::new(profiles))
                .help(format!(
                    "One of the model's profiles (default: any). {}",
                    by_model.join("; ")
                ))
        })
    })
}

/// Run the command line over `models` (the registry, or a test's own).
pub fn main(models: &'static [&'static dyn Model]) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_timer(SimTime)
        .with_writer(io::stderr)
        .init();
    let cli = Cli::from_arg_matches(&command(models).get_matches()).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Run {
            files,
            seed,
            format,
            decisions,
            trace,
            force,
            engine,
            qos,
        } => run_files(
            models,
            &files,
            seed,
            RunOptions {
                format,
                decisions_only: decisions,
                trace_path: trace,
                force,
                engine,
                qos,
            },
        ),
        Command::Models => {
            print!("{}", list_models(models));
            ExitCode::SUCCESS
        }
        Command::Sweep {
            file,
            sets,
            seeds,
            out,
            force,
            jobs,
        } => sweep_command(models, &file, sets, seeds, &out, force, &jobs),
        Command::Merge { dirs, out, force } => {
            if let Err(e) = check_out(&out, force) {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            match sweep::merge(&dirs, &out) {
                Ok((plan, aggs)) => {
                    print!("{}", sweep::table(&plan, &aggs));
                    let failed: u64 = aggs.iter().map(|a| a.failed).sum();
                    if failed > 0 {
                        eprintln!("merge: {failed} run(s) failed (rows with an error)");
                        return ExitCode::from(1);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Report {
            file,
            sweep,
            seed,
            out,
            force,
        } => match (file, sweep) {
            (_, Some(dir)) => write_page(crate::report::sweep_html(&dir), &out, force),
            (Some(file), None) => write_report(models, &file, seed, &out, force),
            (None, None) => unreachable!("clap requires one"),
        },
        Command::Fuzz {
            model,
            profile,
            cases,
            seed,
            faults,
            max_peers,
            check_determinism,
            out,
            regressions,
            emit,
            jobs,
        } => {
            let (model, profile) = match fuzz_target(models, model.as_deref(), profile.as_deref()) {
                Ok(target) => target,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let transport = model.transport();
            if let Some(k) = faults.iter().find(|k| !k.applies_to(transport)) {
                eprintln!(
                    "error: --faults {k}: {} speaks over connections (TCP), which deliver \
                     every message once and in order; {k} applies to datagram models only",
                    model.name()
                );
                return ExitCode::from(2);
            }
            let (threads, shard) = match jobs.resolve() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let config = FuzzConfig {
                jobs: threads,
                shard,
                gen: GenOptions {
                    profile,
                    faults: if faults.is_empty() {
                        FaultKind::all_for(model)
                    } else {
                        faults
                    },
                    max_nodes: max_peers,
                    ..GenOptions::new(model)
                },
                cases,
                seed,
                check_determinism,
                out_dir: out,
                regressions,
                ..FuzzConfig::new(model)
            };
            match emit {
                Some(dir) => emit_command(&config, &dir),
                None => fuzz_command(&config, &jobs),
            }
        }
    }
}

/// The model and profile `heartsim fuzz` was asked for.
fn fuzz_target(
    models: &[&'static dyn Model],
    model: Option<&str>,
    profile: Option<&str>,
) -> Result<(&'static dyn Model, Option<&'static str>), String> {
    let owner = |p: &str| {
        models
            .iter()
            .copied()
            .find(|m| m.profiles().iter().any(|q| q.name == p))
    };
    let model = match (model, profile) {
        (Some(name), _) => model::find(models, name).ok_or(format!("unknown model {name:?}"))?,
        (None, Some(p)) => owner(p).ok_or(format!("unknown profile {p:?}"))?,
        (None, None) => *models.first().ok_or("no models registered")?,
    };
    let profile = match profile {
        None => None,
        Some(p) => match model.profiles().iter().find(|q| q.name == p) {
            Some(q) => Some(q.name),
            None => {
                let names: Vec<&str> = model.profiles().iter().map(|q| q.name).collect();
                return Err(format!(
                    "{p:?} is not a profile of {}: expected one of {}",
                    model.name(),
                    names.join(", ")
                ));
            }
        },
    };
    Ok((model, profile))
}

/// `heartsim models`.
fn list_models(models: &[&'static dyn Model]) -> String {
    let mut out = String::new();
    for m in models {
        out += &format!(
            "{}\n  {}\n  docs: {}\n  profiles:\n",
            m.name(),
            m.about(),
            m.docs()
        );
        for p in m.profiles() {
            out += &format!("    {:<24} {}\n", p.name, p.about);
        }
        out += &format!("  invariants: {}\n", m.invariants().join(", "));
    }
    out
}

/// `heartsim fuzz --emit DIR`: the cases as files, none run.
fn emit_command(config: &FuzzConfig, dir: &std::path::Path) -> ExitCode {
    match crate::fuzz::emit(config, dir) {
        Ok(paths) => {
            println!(
                "fuzz: wrote {} cases to {} (seed {})",
                paths.len(),
                dir.display(),
                config.seed
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot write cases to {}: {e}", dir.display());
            ExitCode::from(2)
        }
    }
}

fn fuzz_command(config: &FuzzConfig, jobs_args: &JobsArgs) -> ExitCode {
    let bar = jobs_args.bar(
        config.shard.range(config.cases as usize).len() as u64,
        "cases",
    );
    bar.set_message("0 failures");
    let failing = std::sync::atomic::AtomicBool::new(false);
    let result = fuzz(config, |done, failed| {
        use std::sync::atomic::Ordering::Relaxed;
        if failed && !failing.swap(true, Relaxed) {
            bar.set_message("failure found: shrinking");
        }
        if !failing.load(Relaxed) {
            bar.set_position(u64::from(done));
        }
    });
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            let shard = if config.shard == Shard::ALL {
                String::new()
            } else {
                format!(", shard {}", config.shard)
            };
            println!(
                "fuzz: {} cases, no failure (seed {}{shard})",
                report.cases, config.seed
            );
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!("{failure}");
            ExitCode::from(1)
        }
    }
}

/// Refuse to overwrite an earlier sweep's files unless `force`.
fn check_out(out: &std::path::Path, force: bool) -> Result<(), String> {
    let manifest = out.join(sweep::MANIFEST);
    if !force && manifest.exists() {
        return Err(format!(
            "{} exists (an earlier sweep); pass --force to overwrite it",
            manifest.display()
        ));
    }
    Ok(())
}

fn sweep_command(
    models: &[&'static dyn Model],
    file: &std::path::Path,
    sets: Vec<sweep::Axis>,
    seeds: Option<sweep::Seeds>,
    out: &std::path::Path,
    force: bool,
    jobs_args: &JobsArgs,
) -> ExitCode {
    let prepared = (|| {
        let (jobs, shard) = jobs_args.resolve()?;
        let plan = sweep::Plan::load(file, sets, seeds)?;
        let scenarios = plan.scenarios(models)?;
        check_out(out, force)?;
        Ok::<_, String>((jobs, shard, plan, scenarios))
    })();
    let (jobs, shard, plan, scenarios) = match prepared {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let all = plan.cells() * plan.seeds.len() as usize;
    let range = shard.range(all);
    let bar = jobs_args.bar(range.len() as u64, "runs");
    let rows = crate::jobs::map(
        range.len(),
        jobs,
        |i| sweep::run_item(models, &plan, &scenarios, range.start + i),
        || bar.inc(1),
    );
    bar.finish_and_clear();
    let rows = sweep::normalize(rows);
    let manifest = plan.manifest((shard != Shard::ALL).then_some(shard));
    let aggs = match sweep::write_outputs(out, &plan, &manifest, &rows) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match aggs {
        Some(aggs) => print!("{}", sweep::table(&plan, &aggs)),
        None => println!(
            "sweep: shard {shard}: {} of {all} runs written to {}; join the shards with \
             `heartsim merge DIR... --out DIR`",
            rows.len(),
            out.display()
        ),
    }
    let failed: Vec<&sweep::Row> = rows.iter().filter(|r| r.result.is_err()).collect();
    if let Some(r) = failed.first() {
        eprintln!(
            "sweep: {} run(s) failed; the first: cell {} seed {}: {}",
            failed.len(),
            r.cell,
            r.seed,
            r.result.as_ref().err().map_or("", String::as_str)
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// `heartsim report`.
fn write_report(
    models: &[&'static dyn Model],
    file: &Path,
    seed: Option<u64>,
    out: &Path,
    force: bool,
) -> ExitCode {
    let scenario = match Scenario::load(models, file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let Some(model) = model::find(models, scenario.model) else {
        eprintln!("error: the scenario's model is not registered");
        return ExitCode::from(2);
    };
    let page = run(&scenario, seed, Level::Decision)
        .map_err(|e| e.to_string())
        .and_then(|outcome| {
            crate::report::html(model, &scenario, &outcome.trace).map_err(|e| e.to_string())
        });
    write_page(
        page.map_err(|e| format!("{}: {e}", file.display())),
        out,
        force,
    )
}

/// Write a page, never over a file without `force`.
fn write_page(page: Result<String, String>, out: &Path, force: bool) -> ExitCode {
    let page = match page {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let mut options = OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let written = options
        .open(out)
        .and_then(|mut f| f.write_all(page.as_bytes()));
    match written {
        Ok(()) => {
            eprintln!("wrote {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            eprintln!(
                "error: {} exists; pass --force to overwrite it",
                out.display()
            );
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", out.display());
            ExitCode::from(2)
        }
    }
}

/// The QoS of a finished run of `scenario` (its model from `models`).
fn qos_report(
    models: &[&'static dyn Model],
    scenario: &Scenario,
    outcome: &Outcome,
) -> Result<qos::Report, String> {
    let model =
        model::find(models, scenario.model).ok_or("the scenario's model is not registered")?;
    qos::of_run(model, scenario, &outcome.trace).map_err(|e| e.to_string())
}

/// `heartsim run`'s flags.
struct RunOptions {
    format: Format,
    decisions_only: bool,
    trace_path: Option<PathBuf>,
    force: bool,
    engine: EngineArg,
    qos: bool,
}

fn run_files(
    models: &[&'static dyn Model],
    files: &[PathBuf],
    seed: Option<u64>,
    options: RunOptions,
) -> ExitCode {
    let RunOptions {
        format,
        decisions_only,
        trace_path,
        force,
        engine,
        qos,
    } = options;
    if cfg!(not(madsim)) && engine == EngineArg::Madsim {
        eprintln!("error: {NO_MADSIM}");
        return ExitCode::from(2);
    }
    // Validate every file before running any: a typo in the fifth file
    // should not cost the time of running the first four.
    let mut scenarios = Vec::new();
    for path in files {
        match Scenario::load(models, path) {
            Ok(s) => scenarios.push(s),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
    }
    let mut sink: Box<dyn Write> = match &trace_path {
        None => Box::new(io::stdout().lock()),
        Some(p) => {
            let mut options = OpenOptions::new();
            options.write(true);
            if force {
                options.create(true).truncate(true);
            } else {
                options.create_new(true);
            }
            match options.open(p) {
                Ok(f) => Box::new(io::BufWriter::new(f)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    eprintln!(
                        "error: {} exists; pass --force to overwrite it",
                        p.display()
                    );
                    return ExitCode::from(2);
                }
                Err(e) => {
                    eprintln!("error: cannot write {}: {e}", p.display());
                    return ExitCode::from(2);
                }
            }
        }
    };
    // In jsonl mode stdout carries only the trace; verdicts go to stderr.
    let jsonl_on_stdout = format == Format::Jsonl && trace_path.is_none();
    let mut failed = false;
    for scenario in &scenarios {
        let keep = if decisions_only {
            Level::Decision
        } else {
            Level::Net
        };
        let seed_used = seed.unwrap_or(scenario.seed);
        let replay = match engine {
            EngineArg::Main => format!(
                "cargo run --release -- run {} --seed {seed_used}",
                scenario.path.display()
            ),
            EngineArg::Madsim => format!(
                "RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/madsim cargo run --release -- run --engine madsim {} --seed {seed_used}",
                scenario.path.display()
            ),
        };
        let mut report: Vec<String> = vec![format!(
            "== {} ({}, seed {seed_used}): {}",
            scenario.path.display(),
            scenario.profile,
            scenario.name
        )];
        let outcome: Result<Outcome, String> = match engine {
            EngineArg::Main => run(scenario, seed, keep).map_err(|e| e.to_string()),
            #[cfg(madsim)]
            EngineArg::Madsim => run_madsim(scenario, seed, keep).map_err(|e| e.to_string()),
            #[cfg(not(madsim))]
            EngineArg::Madsim => Err(NO_MADSIM.to_string()),
        };
        match outcome {
            Err(error) => {
                failed = true;
                report.push(format!("error: {error}\n  replay: {replay}"));
            }
            Ok(outcome) => {
                let records: Vec<&Record> = outcome.trace.records().collect();
                let written = match format {
                    Format::Jsonl => outcome.trace.write_jsonl(&records, &mut sink),
                    Format::Text => {
                        if !jsonl_on_stdout && trace_path.is_none() {
                            let _ = writeln!(sink, "{}", report[0]);
                        }
                        outcome.trace.write_text(&records, &mut sink)
                    }
                };
                if let Err(e) = written.and_then(|()| sink.flush()) {
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        return ExitCode::SUCCESS;
                    }
                    eprintln!("error: writing the trace: {e}");
                    return ExitCode::from(2);
                }
                for v in check(scenario, &outcome.trace) {
                    let what = describe(&outcome.trace, v.expect);
                    match &v.failure {
                        None => report.push(format!("  ok    {what}")),
                        Some(why) => {
                            failed = true;
                            report.push(format!("  FAIL  {what}\n        {why}"));
                            let ctx = context(&outcome.trace, v.expect, 4);
                            if !ctx.is_empty() {
                                report.push(format!("        trace around it:\n{ctx}"));
                            }
                            report.push(format!("        replay: {replay}"));
                        }
                    }
                }
                for inv in &scenario.invariants {
                    report.push(format!("  check invariant {inv}"));
                }
                for v in violations(scenario, &outcome.trace) {
                    failed = true;
                    let body = v.message.replace('\n', "\n        ");
                    report.push(format!("  FAIL  invariant {}: {body}", v.invariant));
                    report.push(format!("        replay: {replay}"));
                }
                report.push(format!(
                    "  {} events, {} sends, peak queue {}",
                    outcome.stats.events, outcome.stats.sends, outcome.stats.peak_queue
                ));
                if qos {
                    match qos_report(models, scenario, &outcome) {
                        Ok(r) => {
                            if r.pairs.is_empty() {
                                report.push(format!(
                                    "  qos: no verdict records: {} declares {} verdict kind(s) \
                                     (Model::verdicts, docs/qos.md)",
                                    scenario.model,
                                    model::find(models, scenario.model)
                                        .map_or(0, |m| m.verdicts().len())
                                ));
                            }
                            report.push(r.table(&outcome.trace));
                            if format == Format::Jsonl {
                                let line = r.jsonl(&outcome.trace);
                                if let Err(e) = writeln!(sink, "{line}").and_then(|()| sink.flush())
                                {
                                    if e.kind() == io::ErrorKind::BrokenPipe {
                                        return ExitCode::SUCCESS;
                                    }
                                    eprintln!("error: writing the trace: {e}");
                                    return ExitCode::from(2);
                                }
                            }
                        }
                        Err(e) => {
                            failed = true;
                            report.push(format!("  FAIL  qos: {e}\n        replay: {replay}"));
                        }
                    }
                }
            }
        }
        let text = report.join("\n");
        if jsonl_on_stdout || trace_path.is_some() {
            eprintln!("{text}");
        } else {
            let _ = writeln!(sink, "{}", report[1..].join("\n"));
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
