//! `heartsim sweep` and `heartsim merge`: a scenario run over a grid of
//! parameter values (cells) times seeds, its QoS ([`crate::qos`]) measured
//! in each run, one row per (cell, seed) and one aggregate row per cell
//! with confidence intervals (docs/qos.md, "Sweeps"; docs/cli.md).
//!
//! Rows hold integers only (counts and microseconds); everything else is
//! derived from them when written, so rows read back by `merge` give the
//! same bytes as the run that wrote them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Read as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::{Spanned, Table, Value};

use crate::jobs::Shard;
use crate::qos::{self, Qos, Sample};
use crate::run::run;
use crate::scenario::{error_at, model, Model, Scenario, MAX_FILE_BYTES};
use crate::sim::trace::Level;
use crate::sim::Duration;

/// Most axes (`--set`s and `[[sweep.axis]]`s together).
pub const MAX_AXES: usize = 8;
/// Most values on one axis.
pub const MAX_VALUES: usize = 1_000;
/// Most cells (the product of the axes' sizes).
pub const MAX_CELLS: usize = 10_000;
/// Most seeds.
pub const MAX_SEEDS: u64 = 1_000_000;
/// Most runs (cells times seeds).
pub const MAX_RUNS: u64 = 10_000_000;
/// The sweep file's and the output's format version.
pub const SWEEP_VERSION: u32 = 1;

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// One axis: a TOML path in the scenario and the values it takes.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    pub path: String,
    pub values: Vec<AxisValue>,
}

/// A value as written: `--set` text (typed like the key it replaces), or
/// a sweep file's TOML value.
#[derive(Clone, Debug, PartialEq)]
pub enum AxisValue {
    Text(String),
    Toml(Value),
}

impl AxisValue {
    /// How the value is shown in rows and tables.
    pub fn label(&self) -> String {
        match self {
            AxisValue::Text(s) | AxisValue::Toml(Value::String(s)) => s.clone(),
            AxisValue::Toml(v) => v.to_string(),
        }
    }
}

/// `--set PATH=V1,V2,...`.
pub fn parse_set(arg: &str) -> Result<Axis, String> {
    let (path, values) = arg.split_once('=').ok_or_else(|| {
        format!(
            "--set {arg:?}: expected PATH=VALUE[,VALUE...], like config.idle_threshold=300s,600s"
        )
    })?;
    let path = path.trim();
    check_path_shape(path).map_err(|e| format!("--set {arg:?}: {e}"))?;
    let values: Vec<AxisValue> = values
        .split(',')
        .map(|v| AxisValue::Text(v.trim().to_string()))
        .collect();
    if values.iter().any(|v| v.label().is_empty()) {
        return Err(format!(
            "--set {arg:?}: an empty value; expected PATH=VALUE[,VALUE...]"
        ));
    }
    check_values(path, values.len()).map_err(|e| format!("--set {arg:?}: {e}"))?;
    Ok(Axis {
        path: path.to_string(),
        values,
    })
}

fn check_values(path: &str, n: usize) -> Result<(), String> {
    if n == 0 {
        return Err(format!("{path}: no values"));
    }
    if n > MAX_VALUES {
        return Err(format!(
            "{path}: {n} values, at most {MAX_VALUES} (the limit MAX_VALUES)"
        ));
    }
    Ok(())
}

const PATH_HELP: &str = "expected config.KEY, network.KEY, tcp.KEY, limits.KEY, \
     scenario.duration, scenario.profile or node.NAME.KEY";

/// The sections a path may address, and how many parts it has there.
fn check_path_shape(path: &str) -> Result<(), String> {
    let parts: Vec<&str> = path.split('.').collect();
    let ok = match parts.as_slice() {
        ["config" | "network" | "tcp" | "limits", key] => !key.is_empty(),
        ["scenario", "duration" | "profile"] => true,
        ["node", name, key] => !name.is_empty() && !key.is_empty(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("bad path {path:?}: {PATH_HELP}"))
    }
}

/// Seeds `from..=to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seeds {
    pub from: u64,
    pub to: u64,
}

impl Seeds {
    /// `A..B` (both included: `1..200` is 200 seeds), `A..=B`, or `N`.
    pub fn parse(text: &str) -> Result<Seeds, String> {
        let expected = "expected FROM..TO (both included, like 1..200) or one seed";
        let num = |s: &str| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| format!("seeds {text:?}: {s:?} is not a seed; {expected}"))
        };
        let seeds = match text.split_once("..") {
            Some((a, b)) => Seeds {
                from: num(a)?,
                to: num(b.strip_prefix('=').unwrap_or(b))?,
            },
            None => {
                let n = num(text)?;
                Seeds { from: n, to: n }
            }
        };
        if seeds.to < seeds.from {
            return Err(format!("seeds {text:?}: empty range; {expected}"));
        }
        if seeds.len() > MAX_SEEDS {
            return Err(format!(
                "seeds {text:?}: {} seeds, at most {MAX_SEEDS} (the limit MAX_SEEDS)",
                seeds.len()
            ));
        }
        Ok(seeds)
    }

    pub fn len(self) -> u64 {
        self.to - self.from + 1
    }

    pub fn is_empty(self) -> bool {
        false
    }
}

/// A `[sweep]` file (docs/qos.md, "Sweep files").
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    version: Spanned<u32>,
    sweep: SweepSection,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepSection {
    scenario: Spanned<String>,
    seeds: Option<Spanned<String>>,
    #[serde(default)]
    axis: Vec<AxisSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AxisSection {
    path: Spanned<String>,
    values: Spanned<Vec<Value>>,
}

/// What a sweep runs: the scenario (as given and as text), its axes and
/// seeds.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The scenario file, as given (or as the sweep file names it).
    pub scenario: PathBuf,
    pub source: String,
    pub axes: Vec<Axis>,
    pub seeds: Seeds,
}

fn read_limited(path: &Path) -> Result<String, String> {
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{}: larger than {MAX_FILE_BYTES} bytes (the limit MAX_FILE_BYTES)",
            path.display()
        ));
    }
    String::from_utf8(bytes).map_err(|e| format!("{}: not UTF-8: {e}", path.display()))
}

impl Plan {
    /// `file` is a scenario or a sweep file (one with a `[sweep]` table);
    /// `sets` replace a sweep file's axes of their paths or follow them, `seeds` replaces its
    /// seeds (default: the scenario's own seed).
    pub fn load(file: &Path, sets: Vec<Axis>, seeds: Option<Seeds>) -> Result<Plan, String> {
        let text = read_limited(file)?;
        let is_sweep = text.parse::<Table>().is_ok_and(|t| t.contains_key("sweep"));
        let (scenario, file_axes, file_seeds) = if is_sweep {
            let err = |span: Option<Range<usize>>, msg: String| {
                error_at(file, &text, span, msg).to_string()
            };
            let parsed: SweepFile = toml::from_str(&text)
                .map_err(|e| err(e.span(), e.message().trim_end().to_string()))?;
            if *parsed.version.get_ref() != SWEEP_VERSION {
                return Err(err(
                    Some(parsed.version.span()),
                    format!("version: expected {SWEEP_VERSION}"),
                ));
            }
            let s = parsed.sweep;
            let seeds = match &s.seeds {
                Some(text_seeds) => Some(
                    Seeds::parse(text_seeds.get_ref())
                        .map_err(|e| err(Some(text_seeds.span()), e))?,
                ),
                None => None,
            };
            let mut axes = Vec::new();
            for a in s.axis {
                check_path_shape(a.path.get_ref()).map_err(|e| err(Some(a.path.span()), e))?;
                check_values(a.path.get_ref(), a.values.get_ref().len())
                    .map_err(|e| err(Some(a.values.span()), e))?;
                axes.push(Axis {
                    path: a.path.get_ref().clone(),
                    values: a
                        .values
                        .into_inner()
                        .into_iter()
                        .map(AxisValue::Toml)
                        .collect(),
                });
            }
            // Relative to the sweep file.
            let base = file.parent().unwrap_or(Path::new(""));
            (base.join(s.scenario.get_ref()), axes, seeds)
        } else {
            (file.to_path_buf(), Vec::new(), None)
        };
        let source = if is_sweep {
            read_limited(&scenario)?
        } else {
            text
        };
        for (i, a) in sets.iter().enumerate() {
            if sets[..i].iter().any(|b| b.path == a.path) {
                return Err(format!("{} is set twice: one axis per path", a.path));
            }
        }
        // A --set replaces the file's axis of the same path, in its place.
        let mut axes = file_axes;
        for a in sets {
            match axes.iter_mut().find(|b| b.path == a.path) {
                Some(b) => *b = a,
                None => axes.push(a),
            }
        }
        if axes.len() > MAX_AXES {
            return Err(format!(
                "{} axes, at most {MAX_AXES} (the limit MAX_AXES)",
                axes.len()
            ));
        }
        for (i, a) in axes.iter().enumerate() {
            if axes[..i].iter().any(|b| b.path == a.path) {
                return Err(format!(
                    "{}: two [[sweep.axis]] with this path: one axis per path",
                    a.path
                ));
            }
        }
        // Default: the scenario's own seed (a scenario that does not parse
        // is reported by `scenarios`).
        let own = source
            .parse::<Table>()
            .ok()
            .and_then(|t| t.get("scenario")?.get("seed")?.as_integer())
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(0);
        Ok(Plan {
            scenario,
            source,
            axes,
            seeds: seeds.or(file_seeds).unwrap_or(Seeds { from: own, to: own }),
        })
    }

    /// How many cells: the product of the axes' sizes.
    pub fn cells(&self) -> usize {
        self.axes.iter().map(|a| a.values.len()).product()
    }

    /// Cell `c`'s value index on each axis (the first axis varies slowest).
    pub fn coordinates(&self, mut c: usize) -> Vec<usize> {
        let mut out = vec![0; self.axes.len()];
        for (i, a) in self.axes.iter().enumerate().rev() {
            out[i] = c % a.values.len();
            c /= a.values.len();
        }
        out
    }

    /// Cell `c`'s values, as labels.
    pub fn labels(&self, c: usize) -> Vec<String> {
        self.coordinates(c)
            .iter()
            .zip(&self.axes)
            .map(|(&v, a)| a.values[v].label())
            .collect()
    }

    /// The manifest of this plan (for `shard`).
    pub fn manifest(&self, shard: Option<Shard>) -> Manifest {
        use sha3::{Digest, Sha3_256};
        Manifest {
            version: SWEEP_VERSION,
            scenario: self.scenario.display().to_string(),
            scenario_sha3_256: data_encoding::HEXLOWER
                .encode(&Sha3_256::digest(self.source.as_bytes())),
            axes: self
                .axes
                .iter()
                .map(|a| AxisJson {
                    path: a.path.clone(),
                    values: a.values.iter().map(AxisValue::label).collect(),
                })
                .collect(),
            seeds: self.seeds,
            cells: self.cells(),
            runs: self.cells() as u64 * self.seeds.len(),
            shard: shard.map(|s| ShardJson {
                index: s.index,
                count: s.count,
            }),
        }
    }

    /// Validate every cell's scenario, before anything runs.
    pub fn scenarios(&self, models: &[&'static dyn Model]) -> Result<Vec<Scenario>, String> {
        if let Err(e) = Scenario::parse(models, &self.scenario, &self.source) {
            return Err(e.to_string());
        }
        let cells = self.axes.iter().try_fold(1usize, |n, a| {
            n.checked_mul(a.values.len()).filter(|&n| n <= MAX_CELLS)
        });
        let Some(cells) = cells else {
            return Err(format!(
                "the grid has more than {MAX_CELLS} cells (the limit MAX_CELLS)"
            ));
        };
        let runs = cells as u64 * self.seeds.len();
        if runs > MAX_RUNS {
            return Err(format!(
                "{cells} cells x {} seeds = {runs} runs, at most {MAX_RUNS} (the limit MAX_RUNS)",
                self.seeds.len()
            ));
        }
        let base: Table = self
            .source
            .parse()
            .map_err(|e| format!("{}: {e}", self.scenario.display()))?;
        (0..cells)
            .map(|c| {
                let mut doc = base.clone();
                let mut said = Vec::new();
                for (a, &v) in self.axes.iter().zip(&self.coordinates(c)) {
                    let value = &a.values[v];
                    set(&mut doc, &a.path, value).map_err(|e| {
                        format!(
                            "{}: {}={}: {e}",
                            self.scenario.display(),
                            a.path,
                            value.label()
                        )
                    })?;
                    said.push(format!("{}={}", a.path, value.label()));
                }
                let text = toml::to_string(&doc).map_err(|e| e.to_string())?;
                let name = PathBuf::from(format!(
                    "{} (with {})",
                    self.scenario.display(),
                    said.join(" ")
                ));
                Scenario::parse(models, &name, &text).map_err(|e| {
                    format!(
                        "{}: with {}, the scenario is not valid:\n{e}",
                        self.scenario.display(),
                        said.join(" ")
                    )
                })
            })
            .collect()
    }
}

/// Set `path` in the scenario's TOML to `value`, typed like the value it
/// replaces (a string, integer, float or boolean).
fn set(doc: &mut Table, path: &str, value: &AxisValue) -> Result<(), String> {
    let parts: Vec<&str> = path.split('.').collect();
    let table: &mut Table = match parts.as_slice() {
        ["node", name, _] => {
            let nodes = doc
                .get_mut("node")
                .and_then(Value::as_array_mut)
                .ok_or("the scenario has no [[node]]")?;
            let names: Vec<String> = nodes
                .iter()
                .filter_map(|n| n.get("name").and_then(Value::as_str).map(str::to_string))
                .collect();
            nodes
                .iter_mut()
                .filter_map(Value::as_table_mut)
                .find(|n| n.get("name").and_then(Value::as_str) == Some(name))
                .ok_or_else(|| {
                    format!(
                        "no [[node]] named {name:?}: expected one of {}",
                        names.join(", ")
                    )
                })?
        }
        [section, _] => doc
            .entry(section.to_string())
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("{section} is not a table"))?,
        _ => return Err(PATH_HELP.to_string()),
    };
    let key = parts[parts.len() - 1];
    let typed = match value {
        AxisValue::Toml(v) => v.clone(),
        AxisValue::Text(t) => typed(table.get(key), t)?,
    };
    table.insert(key.to_string(), typed);
    Ok(())
}

/// `text` as the TOML type of `old` (absent: an integer or boolean if it
/// reads as one, else a string).
fn typed(old: Option<&Value>, text: &str) -> Result<Value, String> {
    match old {
        Some(Value::String(_)) => Ok(Value::String(text.to_string())),
        Some(Value::Integer(_)) => text
            .parse()
            .map(Value::Integer)
            .map_err(|_| "expected an integer, as the scenario's value is".to_string()),
        Some(Value::Float(_)) => text
            .parse()
            .map(Value::Float)
            .map_err(|_| "expected a number, as the scenario's value is".to_string()),
        Some(Value::Boolean(_)) => text
            .parse()
            .map(Value::Boolean)
            .map_err(|_| "expected true or false, as the scenario's value is".to_string()),
        Some(_) => Err(
            "the scenario's value there is a table or array; expected a key \
                        with a string, integer, float or boolean value"
                .to_string(),
        ),
        None => Ok(text
            .parse::<i64>()
            .map(Value::Integer)
            .or_else(|_| text.parse::<bool>().map(Value::Boolean))
            .unwrap_or_else(|_| Value::String(text.to_string()))),
    }
}

// ---------------------------------------------------------------------------
// Rows.

/// One run: cell, seed, and the QoS of all its pairs ([`qos::Report::all`]),
/// or why it has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub cell: usize,
    pub seed: u64,
    pub result: Result<Qos, String>,
}

/// Run item `k` of `plan` (cell `k / seeds`, seed `from + k % seeds`).
pub fn run_item(
    models: &[&'static dyn Model],
    plan: &Plan,
    scenarios: &[Scenario],
    k: usize,
) -> Row {
    let n = plan.seeds.len() as usize;
    let (cell, seed) = (k / n, plan.seeds.from + (k % n) as u64);
    let scenario = &scenarios[cell];
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let outcome = run(scenario, Some(seed), Level::Decision).map_err(|e| e.to_string())?;
        let model = model::find(models, scenario.model).ok_or("the model is not registered")?;
        qos::of_run(model, scenario, &outcome.trace)
            .map(|r| r.all)
            .map_err(|e| e.to_string())
    }))
    .unwrap_or_else(|payload| {
        let why = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        Err(format!("heartsim panicked (a heartsim bug): {why}"))
    });
    Row { cell, seed, result }
}

/// A row in rows.jsonl. Integers are the row; the `*_mean_us`,
/// `query_accuracy` and `*_per_hour` fields are derived from them and
/// ignored when read back.
#[derive(Serialize, Deserialize)]
struct RowJson {
    cell: usize,
    set: BTreeMap<String, String>,
    seed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(flatten)]
    qos: Option<QosJson>,
}

#[derive(Serialize, Deserialize)]
struct QosJson {
    detections: u64,
    detection_sum_us: u64,
    detection_min_us: Option<u64>,
    detection_max_us: Option<u64>,
    #[serde(default, skip_deserializing)]
    detection_mean_us: Option<u64>,
    missed: u64,
    undetected_at_end: u64,
    mistakes: u64,
    mistakes_unreachable: u64,
    mistake_durations: u64,
    mistake_duration_sum_us: u64,
    mistake_recurrences: u64,
    mistake_recurrence_sum_us: u64,
    good_periods: u64,
    good_period_sum_us: u64,
    observed_us: u64,
    trusted_us: u64,
    unreachable_us: u64,
    evictions: u64,
    run_us: u64,
    #[serde(default, skip_deserializing)]
    query_accuracy: Option<f64>,
    #[serde(default, skip_deserializing)]
    mistake_rate_per_hour: Option<f64>,
    #[serde(default, skip_deserializing)]
    evictions_per_hour: Option<f64>,
}

fn sum64(s: &Sample) -> u64 {
    u64::try_from(s.sum_us).unwrap_or(u64::MAX)
}

impl QosJson {
    fn of(q: &Qos) -> QosJson {
        QosJson {
            detections: q.detection.count,
            detection_sum_us: sum64(&q.detection),
            detection_min_us: q.detection.min.map(Duration::as_us),
            detection_max_us: q.detection.max.map(Duration::as_us),
            detection_mean_us: q.detection.mean().map(Duration::as_us),
            missed: q.missed,
            undetected_at_end: q.undetected_at_end,
            mistakes: q.mistakes,
            mistakes_unreachable: q.mistakes_unreachable,
            mistake_durations: q.mistake_duration.count,
            mistake_duration_sum_us: sum64(&q.mistake_duration),
            mistake_recurrences: q.recurrence.count,
            mistake_recurrence_sum_us: sum64(&q.recurrence),
            good_periods: q.good_period.count,
            good_period_sum_us: sum64(&q.good_period),
            observed_us: q.observed.as_us(),
            trusted_us: q.trusted.as_us(),
            unreachable_us: q.unreachable.as_us(),
            evictions: q.suspicions,
            run_us: q.run.as_us(),
            query_accuracy: q.query_accuracy(),
            mistake_rate_per_hour: q.mistake_rate_per_hour(),
            evictions_per_hour: q.evictions_per_hour(),
        }
    }

    fn qos(&self) -> Qos {
        // Sums of samples with their count, least and greatest: the mean
        // needs only count and sum.
        let sample = |count, sum: u64| Sample {
            count,
            sum_us: u128::from(sum),
            min: None,
            max: None,
        };
        Qos {
            detection: Sample {
                min: self.detection_min_us.map(Duration::from_us),
                max: self.detection_max_us.map(Duration::from_us),
                ..sample(self.detections, self.detection_sum_us)
            },
            missed: self.missed,
            undetected_at_end: self.undetected_at_end,
            mistakes: self.mistakes,
            mistakes_unreachable: self.mistakes_unreachable,
            mistake_duration: sample(self.mistake_durations, self.mistake_duration_sum_us),
            recurrence: sample(self.mistake_recurrences, self.mistake_recurrence_sum_us),
            good_period: sample(self.good_periods, self.good_period_sum_us),
            observed: Duration::from_us(self.observed_us),
            trusted: Duration::from_us(self.trusted_us),
            unreachable: Duration::from_us(self.unreachable_us),
            suspicions: self.evictions,
            run: Duration::from_us(self.run_us),
        }
    }
}

/// Rows keep only what is written: the samples' least and greatest
/// except detection's are dropped.
fn as_written(q: &Qos) -> Qos {
    QosJson::of(q).qos()
}

fn set_map(plan: &Plan, cell: usize) -> BTreeMap<String, String> {
    plan.axes
        .iter()
        .map(|a| a.path.clone())
        .zip(plan.labels(cell))
        .collect()
}

fn row_json(plan: &Plan, row: &Row) -> String {
    let (error, qos) = match &row.result {
        Ok(q) => (None, Some(QosJson::of(q))),
        Err(e) => (Some(e.clone()), None),
    };
    serde_json::to_string(&RowJson {
        cell: row.cell,
        set: set_map(plan, row.cell),
        seed: row.seed,
        error,
        qos,
    })
    .expect("plain data serializes")
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(String::new, |v| v.to_string())
}

fn f6(v: Option<f64>) -> String {
    v.map_or_else(String::new, |v| format!("{v:.6}"))
}

const ROW_COLUMNS: &[&str] = &[
    "seed",
    "error",
    "detections",
    "detection_mean_us",
    "detection_max_us",
    "missed",
    "undetected_at_end",
    "mistakes",
    "mistakes_unreachable",
    "mistake_duration_mean_us",
    "mistake_recurrence_mean_us",
    "good_period_mean_us",
    "query_accuracy",
    "mistake_rate_per_hour",
    "evictions",
    "evictions_per_hour",
    "observed_us",
    "trusted_us",
    "unreachable_us",
    "run_us",
];

fn header(plan: &Plan, rest: &[&str]) -> String {
    let mut cols = vec!["cell".to_string()];
    cols.extend(plan.axes.iter().map(|a| csv_field(&a.path)));
    cols.extend(rest.iter().map(|s| s.to_string()));
    cols.join(",")
}

fn row_csv(plan: &Plan, row: &Row) -> String {
    let mut f = vec![row.cell.to_string()];
    f.extend(plan.labels(row.cell).iter().map(|l| csv_field(l)));
    f.push(row.seed.to_string());
    match &row.result {
        Err(e) => {
            f.push(csv_field(e));
            f.extend((2..ROW_COLUMNS.len()).map(|_| String::new()));
        }
        Ok(q) => {
            let mean = |s: &Sample| opt(s.mean().map(Duration::as_us));
            f.extend([
                String::new(),
                q.detection.count.to_string(),
                mean(&q.detection),
                opt(q.detection.max.map(Duration::as_us)),
                q.missed.to_string(),
                q.undetected_at_end.to_string(),
                q.mistakes.to_string(),
                q.mistakes_unreachable.to_string(),
                mean(&q.mistake_duration),
                mean(&q.recurrence),
                mean(&q.good_period),
                f6(q.query_accuracy()),
                f6(q.mistake_rate_per_hour()),
                q.suspicions.to_string(),
                f6(q.evictions_per_hour()),
                q.observed.as_us().to_string(),
                q.trusted.as_us().to_string(),
                q.unreachable.as_us().to_string(),
                q.run.as_us().to_string(),
            ]);
        }
    }
    f.join(",")
}

// ---------------------------------------------------------------------------
// Aggregates.

/// A mean and its 95% interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Estimate {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    /// How many values (seeds) or trials it is of.
    pub n: u64,
}

/// Normal 95% interval of the mean of `xs` (in order): mean +- z s/sqrt(n),
/// s the sample standard deviation; `None` under two values.
pub fn normal_ci(xs: &[f64]) -> Option<Estimate> {
    let n = xs.len();
    if n < 2 {
        return None;
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
    let half = Z95 * (var / n as f64).sqrt();
    Some(Estimate {
        mean,
        lo: mean - half,
        hi: mean + half,
        n: n as u64,
    })
}

/// Wilson 95% score interval of a proportion `k` of `n`; `None` if `n` is 0.
pub fn wilson(k: u64, n: u64) -> Option<Estimate> {
    if n == 0 {
        return None;
    }
    let (k, nf) = (k as f64, n as f64);
    let p = k / nf;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / nf;
    let center = (p + z2 / (2.0 * nf)) / denom;
    let half = Z95 * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt() / denom;
    Some(Estimate {
        mean: p,
        lo: (center - half).max(0.0),
        hi: (center + half).min(1.0),
        n,
    })
}

/// One cell's aggregate over its seeds.
#[derive(Clone, Debug, Serialize)]
pub struct Aggregate {
    pub cell: usize,
    pub set: BTreeMap<String, String>,
    /// Runs with a QoS, and runs that failed (limits; not in the rest).
    pub runs: u64,
    pub failed: u64,
    /// The seeds pooled with [`Qos::merge_run`] (counts and times add up,
    /// means over all samples).
    pub detections: u64,
    pub detection_mean_s: Option<f64>,
    pub detection_max_s: Option<f64>,
    pub missed: u64,
    pub mistakes: u64,
    pub mistakes_unreachable: u64,
    pub mistake_duration_mean_s: Option<f64>,
    pub mistake_recurrence_mean_s: Option<f64>,
    pub good_period_mean_s: Option<f64>,
    pub query_accuracy: Option<f64>,
    pub mistake_rate_per_hour: Option<f64>,
    pub evictions_per_hour: Option<f64>,
    /// Normal 95% intervals of the per-seed values' mean, over the seeds
    /// that have the value (a detection; observed time).
    pub detection_seed_mean_s: Option<Estimate>,
    pub query_accuracy_seed_mean: Option<Estimate>,
    pub mistake_rate_per_hour_seed_mean: Option<Estimate>,
    /// Wilson 95% intervals: missed over goings-down (detections + missed),
    /// and runs with at least one mistake over runs.
    pub missed_share: Option<Estimate>,
    pub runs_with_mistake_share: Option<Estimate>,
}

fn secs(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_us() as f64 / 1e6)
}

/// The aggregate of each cell of `plan` over `rows` (in (cell, seed)
/// order).
pub fn aggregate(plan: &Plan, rows: &[Row]) -> Vec<Aggregate> {
    (0..plan.cells())
        .map(|cell| {
            let mine: Vec<&Row> = rows.iter().filter(|r| r.cell == cell).collect();
            let ok: Vec<&Qos> = mine.iter().filter_map(|r| r.result.as_ref().ok()).collect();
            let mut pooled = Qos::default();
            for q in &ok {
                pooled.merge_run(q);
            }
            let per_seed = |f: &dyn Fn(&Qos) -> Option<f64>| {
                normal_ci(&ok.iter().filter_map(|q| f(q)).collect::<Vec<f64>>())
            };
            Aggregate {
                cell,
                set: set_map(plan, cell),
                runs: ok.len() as u64,
                failed: (mine.len() - ok.len()) as u64,
                detections: pooled.detection.count,
                detection_mean_s: secs(pooled.detection.mean()),
                detection_max_s: secs(pooled.detection.max),
                missed: pooled.missed,
                mistakes: pooled.mistakes,
                mistakes_unreachable: pooled.mistakes_unreachable,
                mistake_duration_mean_s: secs(pooled.mistake_duration.mean()),
                mistake_recurrence_mean_s: secs(pooled.recurrence.mean()),
                good_period_mean_s: secs(pooled.good_period.mean()),
                query_accuracy: pooled.query_accuracy(),
                mistake_rate_per_hour: pooled.mistake_rate_per_hour(),
                evictions_per_hour: pooled.evictions_per_hour(),
                detection_seed_mean_s: per_seed(&|q| secs(q.detection.mean())),
                query_accuracy_seed_mean: per_seed(&|q| q.query_accuracy()),
                mistake_rate_per_hour_seed_mean: per_seed(&|q| q.mistake_rate_per_hour()),
                missed_share: wilson(pooled.missed, pooled.missed + pooled.detection.count),
                runs_with_mistake_share: wilson(
                    ok.iter().filter(|q| q.mistakes > 0).count() as u64,
                    ok.len() as u64,
                ),
            }
        })
        .collect()
}

const AGG_COLUMNS: &[&str] = &[
    "runs",
    "failed",
    "detections",
    "detection_mean_s",
    "detection_max_s",
    "missed",
    "mistakes",
    "mistakes_unreachable",
    "mistake_duration_mean_s",
    "mistake_recurrence_mean_s",
    "good_period_mean_s",
    "query_accuracy",
    "mistake_rate_per_hour",
    "evictions_per_hour",
    "detection_seed_mean_s",
    "detection_seed_mean_s_lo",
    "detection_seed_mean_s_hi",
    "query_accuracy_seed_mean",
    "query_accuracy_seed_mean_lo",
    "query_accuracy_seed_mean_hi",
    "mistake_rate_per_hour_seed_mean",
    "mistake_rate_per_hour_seed_mean_lo",
    "mistake_rate_per_hour_seed_mean_hi",
    "missed_share",
    "missed_share_lo",
    "missed_share_hi",
    "runs_with_mistake_share",
    "runs_with_mistake_share_lo",
    "runs_with_mistake_share_hi",
];

fn agg_csv(plan: &Plan, a: &Aggregate) -> String {
    let mut f = vec![a.cell.to_string()];
    f.extend(plan.labels(a.cell).iter().map(|l| csv_field(l)));
    f.extend([
        a.runs.to_string(),
        a.failed.to_string(),
        a.detections.to_string(),
        f6(a.detection_mean_s),
        f6(a.detection_max_s),
        a.missed.to_string(),
        a.mistakes.to_string(),
        a.mistakes_unreachable.to_string(),
        f6(a.mistake_duration_mean_s),
        f6(a.mistake_recurrence_mean_s),
        f6(a.good_period_mean_s),
        f6(a.query_accuracy),
        f6(a.mistake_rate_per_hour),
        f6(a.evictions_per_hour),
    ]);
    for e in [
        a.detection_seed_mean_s,
        a.query_accuracy_seed_mean,
        a.mistake_rate_per_hour_seed_mean,
        a.missed_share,
        a.runs_with_mistake_share,
    ] {
        f.extend([
            f6(e.map(|e| e.mean)),
            f6(e.map(|e| e.lo)),
            f6(e.map(|e| e.hi)),
        ]);
    }
    f.join(",")
}

/// The aggregate as a text table (what `heartsim sweep` prints).
pub fn table(plan: &Plan, aggs: &[Aggregate]) -> String {
    let ci = |e: Option<Estimate>, scale: f64, prec: usize| {
        e.map_or("-".to_string(), |e| {
            format!(
                "{:.p$} [{:.p$}, {:.p$}]",
                e.mean * scale,
                e.lo * scale,
                e.hi * scale,
                p = prec
            )
        })
    };
    let mut head: Vec<String> = plan.axes.iter().map(|a| a.path.clone()).collect();
    head.extend(
        [
            "runs",
            "T_D mean s [95% CI]",
            "missed % [Wilson]",
            "runs with a mistake % [Wilson]",
            "mistakes/h [95% CI]",
            "P_A [95% CI]",
        ]
        .map(String::from),
    );
    let mut lines = vec![head];
    for a in aggs {
        let mut l = plan.labels(a.cell);
        l.extend([
            if a.failed > 0 {
                format!("{} ({} failed)", a.runs, a.failed)
            } else {
                a.runs.to_string()
            },
            ci(a.detection_seed_mean_s, 1.0, 3),
            ci(a.missed_share, 100.0, 1),
            ci(a.runs_with_mistake_share, 100.0, 1),
            ci(a.mistake_rate_per_hour_seed_mean, 1.0, 3),
            ci(a.query_accuracy_seed_mean, 1.0, 6),
        ]);
        lines.push(l);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for l in &lines {
        let cells: Vec<String> = l
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

// ---------------------------------------------------------------------------
// Files.

/// `sweep.json`: what was run, so that `merge` can check its inputs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub scenario: String,
    pub scenario_sha3_256: String,
    pub axes: Vec<AxisJson>,
    pub seeds: Seeds,
    pub cells: usize,
    pub runs: u64,
    pub shard: Option<ShardJson>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AxisJson {
    pub path: String,
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardJson {
    pub index: usize,
    pub count: usize,
}

pub const MANIFEST: &str = "sweep.json";
pub const ROWS_JSONL: &str = "rows.jsonl";
pub const ROWS_CSV: &str = "rows.csv";
pub const AGGREGATE_JSONL: &str = "aggregate.jsonl";
pub const AGGREGATE_CSV: &str = "aggregate.csv";

/// Write the rows (and, for a whole sweep, the aggregate) under `dir`.
/// Returns the aggregate, if written.
pub fn write_outputs(
    dir: &Path,
    plan: &Plan,
    manifest: &Manifest,
    rows: &[Row],
) -> Result<Option<Vec<Aggregate>>, String> {
    let write = |name: &str, text: String| {
        fs::write(dir.join(name), text)
            .map_err(|e| format!("cannot write {}: {e}", dir.join(name).display()))
    };
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    write(
        MANIFEST,
        serde_json::to_string_pretty(manifest).expect("plain data serializes") + "\n",
    )?;
    let mut jsonl = String::new();
    let mut csv = header(plan, ROW_COLUMNS) + "\n";
    for r in rows {
        jsonl += &row_json(plan, r);
        jsonl.push('\n');
        csv += &row_csv(plan, r);
        csv.push('\n');
    }
    write(ROWS_JSONL, jsonl)?;
    write(ROWS_CSV, csv)?;
    if manifest.shard.is_some() {
        return Ok(None);
    }
    let aggs = aggregate(plan, rows);
    let mut jsonl = String::new();
    let mut csv = header(plan, AGG_COLUMNS) + "\n";
    for a in &aggs {
        jsonl += &serde_json::to_string(a).expect("plain data serializes");
        jsonl.push('\n');
        csv += &agg_csv(plan, a);
        csv.push('\n');
    }
    write(AGGREGATE_JSONL, jsonl)?;
    write(AGGREGATE_CSV, csv)?;
    Ok(Some(aggs))
}

/// Rows as they will be read back (see [`as_written`]).
pub fn normalize(rows: Vec<Row>) -> Vec<Row> {
    rows.into_iter()
        .map(|r| Row {
            result: r.result.map(|q| as_written(&q)),
            ..r
        })
        .collect()
}

/// A plan that only labels cells: what a manifest says.
fn plan_of(m: &Manifest) -> Plan {
    Plan {
        scenario: PathBuf::from(&m.scenario),
        source: String::new(),
        axes: m
            .axes
            .iter()
            .map(|a| Axis {
                path: a.path.clone(),
                values: a.values.iter().cloned().map(AxisValue::Text).collect(),
            })
            .collect(),
        seeds: m.seeds,
    }
}

/// `heartsim merge`: the rows of shard outputs `dirs`, checked to be the
/// shards of one sweep, each once, written under `out` with the aggregate,
/// as one run would have.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<(Plan, Vec<Aggregate>), String> {
    let mut first: Option<Manifest> = None;
    let mut seen: BTreeMap<usize, PathBuf> = BTreeMap::new();
    let mut count: Option<usize> = None;
    let mut rows = Vec::new();
    for dir in dirs {
        let m_path = dir.join(MANIFEST);
        let text = read_limited(&m_path)?;
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a sweep manifest: {e}", m_path.display()))?;
        let shard = m.shard.unwrap_or(ShardJson { index: 0, count: 1 });
        let whole = Manifest {
            shard: None,
            ..m.clone()
        };
        match &first {
            None => first = Some(whole),
            Some(f) if *f != whole => {
                return Err(format!(
                    "{} is of another sweep than {} (scenario, its text, axes or seeds differ)",
                    dir.display(),
                    dirs[0].display()
                ))
            }
            Some(_) => {}
        }
        if let Some(prev) = seen.insert(shard.index, dir.clone()) {
            return Err(format!(
                "{} and {} are both shard {}/{}",
                prev.display(),
                dir.display(),
                shard.index,
                shard.count
            ));
        }
        match count {
            None => count = Some(shard.count),
            Some(n) if n != shard.count => {
                return Err(format!(
                    "{} is shard {}/{}, but {} is of {n} shards",
                    dir.display(),
                    shard.index,
                    shard.count,
                    dirs[0].display()
                ))
            }
            Some(_) => {}
        }
        let r_path = dir.join(ROWS_JSONL);
        let file = fs::File::open(&r_path)
            .map_err(|e| format!("cannot read {}: {e}", r_path.display()))?;
        for (i, line) in std::io::BufRead::lines(std::io::BufReader::new(file)).enumerate() {
            let line = line.map_err(|e| format!("cannot read {}: {e}", r_path.display()))?;
            if i as u64 >= m.runs {
                return Err(format!(
                    "{}: more rows than the sweep's {} runs",
                    r_path.display(),
                    m.runs
                ));
            }
            let line = line.as_str();
            let j: RowJson = serde_json::from_str(line)
                .map_err(|e| format!("{}:{}: not a sweep row: {e}", r_path.display(), i + 1))?;
            let result = match (j.error, j.qos) {
                (Some(e), _) => Err(e),
                (None, Some(q)) => Ok(q.qos()),
                (None, None) => {
                    return Err(format!(
                        "{}:{}: a row with neither QoS nor error",
                        r_path.display(),
                        i + 1
                    ))
                }
            };
            rows.push(Row {
                cell: j.cell,
                seed: j.seed,
                result,
            });
        }
    }
    let m = first.ok_or("merge: no directories given")?;
    let count = count.unwrap_or(1);
    if seen.len() != count {
        let missing: Vec<String> = (0..count)
            .filter(|i| !seen.contains_key(i))
            .map(|i| format!("{i}/{count}"))
            .collect();
        return Err(format!("missing shard(s): {}", missing.join(", ")));
    }
    let plan = plan_of(&m);
    rows.sort_by_key(|r| (r.cell, r.seed));
    let n = plan.seeds.len();
    let from = m.seeds.from;
    let expected = (0..m.cells).flat_map(|c| (0..n).map(move |s| (c, from + s)));
    let got: Vec<(usize, u64)> = rows.iter().map(|r| (r.cell, r.seed)).collect();
    if !got.iter().copied().eq(expected) {
        return Err(format!(
            "the shards hold {} rows of the {} runs of the sweep, or some twice: \
             expected every shard 0..n of one --shard i/n once",
            rows.len(),
            m.runs
        ));
    }
    let aggs = write_outputs(out, &plan, &m, &rows)?.expect("a whole sweep has an aggregate");
    Ok((plan, aggs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_and_normal_intervals() {
        let w = wilson(0, 10).unwrap();
        assert_eq!((w.mean, w.lo), (0.0, 0.0));
        assert!((w.hi - 0.277_5).abs() < 1e-3, "{w:?}");
        let w = wilson(5, 10).unwrap();
        assert!(
            (w.lo - 0.236_6).abs() < 1e-3 && (w.hi - 0.763_4).abs() < 1e-3,
            "{w:?}"
        );
        assert_eq!(normal_ci(&[1.0]), None);
        let e = normal_ci(&[1.0, 3.0]).unwrap();
        assert_eq!(e.mean, 2.0);
        assert!((e.hi - 2.0 - Z95).abs() < 1e-12, "{e:?}");
    }

    #[test]
    fn seeds_and_sets() {
        assert_eq!(Seeds::parse("1..200").unwrap().len(), 200);
        assert_eq!(Seeds::parse("1..=3").unwrap(), Seeds { from: 1, to: 3 });
        assert_eq!(Seeds::parse("7").unwrap(), Seeds { from: 7, to: 7 });
        assert!(Seeds::parse("5..1").unwrap_err().contains("empty"));
        assert!(Seeds::parse("0..99999999")
            .unwrap_err()
            .contains("MAX_SEEDS"));
        let a = parse_set("config.idle_threshold=300s,600s").unwrap();
        assert_eq!(a.values.len(), 2);
        for bad in [
            "config",
            "nothing.x=1",
            "node.a=1",
            "config.x=",
            "config.x=1,,2",
        ] {
            assert!(parse_set(bad).is_err(), "{bad}");
        }
        assert!(parse_set("scenario.seed=1")
            .unwrap_err()
            .contains("expected config.KEY"));
    }
}
