//! Scenario files: TOML, `version = 1`, one scenario a file.
//!
//! Reading is two steps. [`ScenarioFile`] is the file as written (serde,
//! unknown keys rejected, every value that needs checking kept with its
//! span); validation resolves names and checks meaning, producing a
//! [`Scenario`] or a [`ScenarioError`] that points at the offending text.
//!
//! This layer reads what every scenario has (`version`, `[scenario]`,
//! `[limits]`, `[network]`, `[[link]]`, `[[fault]]`, `[[expect]]` and the
//! common `[[node]]` keys) and hands the rest, `[config]` and each node's
//! other keys, to the model the file names, with their spans ([`model`]).
//! It knows no model: the caller passes the registry. Every key is
//! documented in `docs/scenario-format.md`; `docs/schema/` has the JSON
//! Schema of each model's files ([`schema`]).

mod error;
mod hosts;
pub mod model;
pub mod schema;
pub mod vocabulary;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Deref, Range};
use std::path::{Path, PathBuf};

use heartsim_sim::clock::{Clock, MAX_DRIFT_PPM};
use heartsim_sim::fs::{Disks, Errno, MAX_PATH_BYTES};
use heartsim_sim::net::{Latency, LinkConfig, Partition};
use heartsim_sim::rng::Ratio;
use heartsim_sim::{Duration, Fault, Host, Limits, NodeId, TcpConfig, Timestamp};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::IntoDeserializer;
use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

pub use error::{at as error_at, Diagnostic, ScenarioError};
use hosts::{host_index, Hosted, HOST_KEY};
pub use hosts::{HostDef, HostSection};
pub use model::{
    AnySetup, Model, Profile, Raw, Says, SectionSchemas, Sections, Setup, Transport, VerdictKind,
    Violation, WrittenNode,
};

/// The only format version this build reads.
pub const FORMAT_VERSION: u32 = 1;
/// Longest simulated duration a scenario may ask for.
pub const MAX_DURATION: Duration = Duration::from_secs(400 * 24 * 3600);
/// Most nodes a scenario may declare, `count` expansions included.
pub const MAX_NODES: usize = 100_000;
/// Largest scenario file, in bytes.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Most `[[fault]]`, `[[link]]` and `[[expect]]` tables a scenario may have.
pub const MAX_FAULTS: usize = 10_000;
pub const MAX_LINKS: usize = 10_000;
pub const MAX_EXPECTS: usize = 10_000;
/// Most groups a symmetric partition may have (its rules grow with the
/// square of the groups).
pub const MAX_GROUPS: usize = 16;
/// Most `[[host]]` tables a scenario may have.
pub const MAX_HOSTS: usize = 10_000;
/// Longest write time a `slow-disk` fault may set.
pub const MAX_WRITE_TIME: Duration = Duration::from_secs(24 * 3600);
/// Longest node name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Why `name` cannot name a node, if it cannot: it must be 1 to
/// [`MAX_NAME_CHARS`] letters, digits, `-`, `_` or `.`, and not the
/// trace's `net`. `prefix`: the name of a `[[node]]` with `count`, which
/// gets a number appended.
fn name_problem(name: &str, prefix: bool) -> Option<String> {
    const RULE: &str = "a node name is 1 to 64 letters, digits, '-', '_' or '.'";
    if name.is_empty() {
        return Some(format!("a node name cannot be empty: {RULE}"));
    }
    if !prefix && name == heartsim_sim::trace::NET {
        return Some(format!(
            "node name {name:?} is reserved: the trace names network-wide records {:?}",
            heartsim_sim::trace::NET
        ));
    }
    if let Some((i, c)) = name
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        let what = if c.is_whitespace() {
            format!("whitespace (U+{:04X})", u32::from(c))
        } else if c.is_control() {
            format!("a control character (U+{:04X})", u32::from(c))
        } else {
            format!("{c:?}")
        };
        return Some(format!(
            "node name {name:?} has {what} at character {}: {RULE}",
            i + 1
        ));
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Some(format!(
            "node name {:?}... is {chars} characters long: {RULE}",
            name.chars().take(16).collect::<String>()
        ));
    }
    None
}

/// A value with the byte range it was written at ([`toml::Spanned`]); its
/// JSON Schema is the value's.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct S<T>(Spanned<T>);

impl<T> S<T> {
    pub fn new(span: Range<usize>, value: T) -> Self {
        S(Spanned::new(span, value))
    }
    pub fn into_inner(self) -> T {
        self.0.into_inner()
    }
}

impl<T> Deref for S<T> {
    type Target = Spanned<T>;
    fn deref(&self) -> &Spanned<T> {
        &self.0
    }
}

impl<T: JsonSchema> JsonSchema for S<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// Resolves a time written in the file to a timestamp within the scenario.
type AtFn<'a> = dyn Fn(&S<String>, &str) -> Result<Timestamp, ScenarioError> + 'a;

/// A scenario file exactly as written. The model's keys (`[config]`, and a
/// node's keys beyond the common ones) are kept as TOML; the model reads
/// them (with their spans) when the file is validated.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub version: S<u32>,
    pub scenario: Header,
    /// The model's settings (see its docs page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub config: Option<toml::Table>,
    #[serde(default)]
    pub limits: Option<LimitsSection>,
    #[serde(default)]
    pub network: Option<LinkSection>,
    /// The connection medium's constants (docs/streams.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSection>,
    #[serde(default, rename = "link", skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkOverride>,
    /// Machines that several nodes (processes) share: one wall clock and
    /// one disk (docs/scenario-format.md, "Hosts").
    #[serde(default, rename = "host", skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostSection>,
    #[serde(default, rename = "node", skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeSection>,
    #[serde(default, rename = "fault", skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultSection>,
    #[serde(default, rename = "expect", skip_serializing_if = "Vec::is_empty")]
    pub expects: Vec<ExpectSection>,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// What this scenario shows.
    pub name: String,
    /// Which model runs (`heartsim models` lists them).
    pub model: S<String>,
    /// Which upstream variant of the model.
    pub profile: S<String>,
    /// Seeds every random draw; `--seed` overrides it.
    #[serde(default)]
    #[schemars(range(max = 9_223_372_036_854_775_807u64))]
    pub seed: u64,
    /// Simulated time to run, like "40m" (at most 400 days).
    pub duration: S<String>,
    /// Named trace properties `heartsim run` checks besides the
    /// `[[expect]]`s (docs/fuzzing.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invariants: Vec<S<String>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_events: Option<S<u64>>,
    pub max_queue: Option<S<u64>>,
}

/// `[tcp]`: Linux's defaults unless set (docs/streams.md says where each
/// comes from and what it does).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpSection {
    /// RTO before the first RTT sample (`TCP_TIMEOUT_INIT`), default "1s";
    /// also the base of the connect give-up time.
    pub rto_initial: Option<S<String>>,
    /// Floor of the RTO's variance term (`TCP_RTO_MIN`), default "200ms";
    /// also the base of the data give-up time.
    pub rto_min: Option<S<String>>,
    /// Cap of the RTO backoff (`TCP_RTO_MAX`), default "120s".
    pub rto_max: Option<S<String>>,
    /// `net.ipv4.tcp_retries2`, default 15: a connection gives up after the
    /// time 15 doubling retransmissions from `rto_min` take (924.6 s).
    pub retries2: Option<S<u32>>,
    /// `net.ipv4.tcp_syn_retries`, default 6: a connect gives up after 127 s.
    pub syn_retries: Option<S<u32>>,
    /// `net.ipv4.tcp_syn_linear_timeouts`, default 0 (Linux up to 6.4):
    /// the first this many SYN retransmissions keep the initial RTO, and a
    /// connect gives up after `syn_retries` + this many. Linux 6.5 and
    /// later default to 4: SYNs at 0, 1, 2, 3, 4, 5, 7, 11 ... 67 s, given
    /// up at 131 s.
    pub syn_linear_timeouts: Option<S<u32>>,
    /// `net.ipv4.tcp_synack_retries`, default 5: the server resends an
    /// unacknowledged SYN-ACK at 1, 3, 7, 15 and 31 s and drops the
    /// half-open connection at 63 s.
    pub synack_retries: Option<S<u32>>,
    /// Bytes a connection holds unread before a blocking write on a
    /// stalled link waits, default 212992 (socket buffers plus asyncio's
    /// 64 KiB high-water mark).
    pub unread_limit: Option<S<u64>>,
}

/// Bounds on `[tcp]`, which keep every give-up time finite and exact.
const TCP_RTO_BOUNDS: (Duration, Duration) = (Duration::from_ms(1), Duration::from_secs(3600));
const TCP_MAX_RETRIES: u32 = 255;
const TCP_MAX_UNREAD: u64 = 1 << 30;

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkSection {
    pub latency: Option<S<String>>,
    pub drop: Option<S<String>>,
    pub duplicate: Option<S<String>>,
    pub reorder: Option<S<String>>,
    pub reorder_delay: Option<S<String>>,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkOverride {
    pub from: S<String>,
    pub to: S<String>,
    pub latency: Option<S<String>>,
    pub drop: Option<S<String>>,
    pub duplicate: Option<S<String>>,
    pub reorder: Option<S<String>>,
    pub reorder_delay: Option<S<String>>,
}

/// A `[[node]]` table: the keys every model's nodes have, and the model's.
/// `host = "..."` (read from the flattened keys, so that it stays out of
/// the model's) puts the node on a `[[host]]`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct NodeSection {
    /// Unique; with `count`, the prefix of `<name>1`, `<name>2`, ...
    pub name: S<String>,
    /// What the node is; the model says which kinds it has.
    pub kind: S<String>,
    /// Declare this many nodes alike.
    pub count: Option<S<u64>>,
    /// When the node starts (default "0s").
    pub start: Option<S<String>>,
    /// Its monotonic clock's drift, within ±500000 ppm.
    pub clock_drift_ppm: Option<S<i64>>,
    /// The model's keys (unknown ones are the model's to reject).
    #[serde(flatten)]
    #[schemars(skip)]
    pub keys: toml::Table,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultSection {
    pub at: S<String>,
    pub kind: S<String>,
    pub node: Option<S<String>>,
    pub groups: Option<S<Vec<Vec<String>>>>,
    pub from: Option<S<NameList>>,
    pub to: Option<S<NameList>>,
    pub by: Option<S<String>>,
    pub ppm: Option<S<i64>>,
    pub latency: Option<S<String>>,
    pub drop: Option<S<String>>,
    pub duplicate: Option<S<String>>,
    pub reorder: Option<S<String>>,
    pub reorder_delay: Option<S<String>>,
    /// The `[[host]]` a host fault acts on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<S<String>>,
    /// The path a disk fault is limited to (and everything under it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<S<String>>,
    /// `disk-error`: "EIO", "ENOSPC" or "EACCES".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<S<String>>,
    /// `slow-disk`: how long every write takes, like "250ms".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<S<String>>,
}

/// One name or a list of names.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum NameList {
    One(String),
    Many(Vec<String>),
}

impl NameList {
    fn names(&self) -> Vec<&str> {
        match self {
            NameList::One(n) => vec![n.as_str()],
            NameList::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectSection {
    pub at: Option<S<String>>,
    pub between: Option<S<[String; 2]>>,
    pub never: Option<S<bool>>,
    pub count: Option<S<u64>>,
    pub event: S<String>,
    pub node: Option<S<String>>,
    pub peer: Option<S<String>>,
    pub reason: Option<S<String>>,
}

// ---------------------------------------------------------------------------
// The validated scenario.

/// A node after `count` expansion: what every model's nodes have.
#[derive(Debug, Clone)]
pub struct NodeDef {
    pub name: String,
    /// As written; its meaning is the model's.
    pub kind: String,
    pub start_at: Option<Timestamp>,
    pub clock: Clock,
    /// Its `[[host]]` (an index into [`Scenario::hosts`]), if it names one;
    /// otherwise it is alone on a host of its own.
    pub host: Option<usize>,
}

/// When an expectation must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    At(Timestamp),
    Between(Timestamp, Timestamp),
    /// No matching record at any time.
    Never,
    /// No matching record in this window.
    NeverBetween(Timestamp, Timestamp),
    /// Anywhere in the run (with `count`).
    Anytime,
}

#[derive(Debug, Clone)]
pub struct Expect {
    pub when: When,
    pub count: Option<u64>,
    pub event: String,
    pub node: Option<NodeId>,
    pub peer: Option<NodeId>,
    pub reason: Option<String>,
    /// Where it was written, for failure messages.
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub path: PathBuf,
    pub name: String,
    /// [`Model::name`] of its model.
    pub model: &'static str,
    /// [`Profile::name`] of one of its model's profiles.
    pub profile: &'static str,
    pub seed: u64,
    pub duration: Duration,
    pub limits: Limits,
    pub network: LinkConfig,
    pub tcp: TcpConfig,
    pub links: Vec<(NodeId, NodeId, LinkConfig)>,
    pub hosts: Vec<HostDef>,
    pub nodes: Vec<NodeDef>,
    pub faults: Vec<(Timestamp, Fault)>,
    pub expects: Vec<Expect>,
    /// [`Model::invariants`] names that `heartsim run` checks.
    pub invariants: Vec<&'static str>,
    /// What the model made of its sections: machines and invariants.
    pub setup: Box<dyn AnySetup>,
}

impl Scenario {
    /// Whether every clock reads true time for the whole run: no clock
    /// offset or drift on any node or host, no clock fault.
    pub fn clocks_true(&self) -> bool {
        let still = Clock::default();
        self.nodes.iter().all(|n| n.clock == still)
            && self.hosts.iter().all(|h| h.clock == still)
            && !self
                .faults
                .iter()
                .any(|(_, f)| matches!(f, Fault::ClockJump { .. } | Fault::ClockDrift { .. }))
    }

    /// Read and validate a scenario file of one of `models`.
    pub fn load(models: &[&'static dyn Model], path: &Path) -> Result<Scenario, ScenarioError> {
        use std::io::Read as _;
        let io = |source| ScenarioError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Read one byte past the limit, never the whole of a huge file.
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes))
            .map_err(io)?;
        Scenario::from_bytes(models, path, &bytes)
    }

    /// Validate `bytes` as if read from `path`: at most [`MAX_FILE_BYTES`]
    /// of UTF-8.
    pub fn from_bytes(
        models: &[&'static dyn Model],
        path: &Path,
        bytes: &[u8],
    ) -> Result<Scenario, ScenarioError> {
        if bytes.len() > MAX_FILE_BYTES {
            return Err(too_large(path));
        }
        match std::str::from_utf8(bytes) {
            Ok(source) => Scenario::parse(models, path, source),
            Err(e) => {
                let at = e.valid_up_to();
                Err(error::at(
                    path,
                    &String::from_utf8_lossy(bytes),
                    Some(at..at),
                    format!(
                        "the file is not UTF-8: byte 0x{:02x} at offset {at} starts no character",
                        bytes[at]
                    ),
                ))
            }
        }
    }

    /// Validate `source` as if read from `path` (which only names it in
    /// errors), as a scenario of one of `models`.
    pub fn parse(
        models: &[&'static dyn Model],
        path: &Path,
        source: &str,
    ) -> Result<Scenario, ScenarioError> {
        if source.len() > MAX_FILE_BYTES {
            return Err(too_large(path));
        }
        let ctx = Context { path, source };
        let doc = DeTable::parse(source).map_err(|e| ctx.toml(&e))?;
        let file: ScenarioFile = ctx.read(doc.clone())?;
        // The model's sections, with their spans: `[config]`, and the keys
        // of each node that are not common ones (serde put those in `keys`).
        let mut doc = doc.into_inner();
        let config = doc.remove("config");
        let mut node_hosts = Vec::new();
        let written: Vec<Raw<'_>> = match doc.remove("node").map(Spanned::into_inner) {
            Some(DeValue::Array(tables)) => tables
                .iter()
                .zip(&file.nodes)
                .map(|(table, section)| {
                    let keys: DeTable<'_> = match table.get_ref() {
                        DeValue::Table(t) => t
                            .iter()
                            .filter(|(k, _)| section.keys.contains_key(k.get_ref().as_ref()))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                        _ => DeTable::new(),
                    };
                    let mut keys = keys;
                    node_hosts.push(keys.remove(HOST_KEY));
                    Spanned::new(table.span(), DeValue::Table(keys))
                })
                .collect(),
            _ => Vec::new(),
        };
        let node_hosts = node_hosts
            .into_iter()
            .map(|v| {
                v.map(|v| match v.get_ref() {
                    DeValue::String(s) => Ok(S::new(v.span(), s.to_string())),
                    _ => ctx.err(v.span(), "host: expected the name of a [[host]], a string"),
                })
                .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        file.validate(models, &ctx, config, written, &node_hosts)
    }

    /// Every host's disk: the `[[host]]`s first, then one of its own for
    /// each node without a host.
    pub fn disks(&self) -> Disks {
        hosts::disks(&self.hosts, &self.nodes)
    }

    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.nodes.iter().position(|n| n.name == name).map(NodeId)
    }

    /// The model's [`Setup`], if it is a `T`.
    pub fn setup<T: Setup>(&self) -> Option<&T> {
        self.setup.as_any().downcast_ref()
    }

    /// The model's [`Setup`], if it is a `T`, to change (tests do).
    pub fn setup_mut<T: Setup>(&mut self) -> Option<&mut T> {
        self.setup.as_any_mut().downcast_mut()
    }
}

/// The error for a file over [`MAX_FILE_BYTES`], at its start (without
/// rendering its text).
fn too_large(path: &Path) -> ScenarioError {
    error::at(
        path,
        "",
        None,
        format!(
            "the file is larger than {MAX_FILE_BYTES} bytes (1 MiB), the most a scenario file \
             may hold (MAX_FILE_BYTES)"
        ),
    )
}

/// The file being validated: turns a span and a message into an error
/// that names file, line and column. Models check their sections with it.
pub struct Context<'a> {
    path: &'a Path,
    source: &'a str,
}

impl<'a> Context<'a> {
    pub fn err<T>(
        &self,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Result<T, ScenarioError> {
        Err(error::at(self.path, self.source, Some(span), message))
    }

    fn toml(&self, e: &toml::de::Error) -> ScenarioError {
        error::at(self.path, self.source, e.span(), e.message().trim_end())
    }

    /// Read a section (a [`Raw`], or the whole document) into `T`: serde,
    /// with `T`'s spans and errors at the offending key or value.
    pub fn read<T: Deserialize<'a>>(
        &self,
        raw: impl IntoDeserializer<'a, toml::de::Error>,
    ) -> Result<T, ScenarioError> {
        T::deserialize(raw.into_deserializer()).map_err(|e| self.toml(&e))
    }

    /// A duration within [`MAX_DURATION`].
    pub fn duration(&self, s: &S<String>, what: &str) -> Result<Duration, ScenarioError> {
        match s.get_ref().parse::<Duration>() {
            Ok(d) if d > MAX_DURATION => self.err(
                s.span(),
                format!(
                    "{what}: {:?} is longer than the {} days a scenario may last",
                    s.get_ref(),
                    MAX_DURATION.as_us() / 86_400_000_000
                ),
            ),
            Ok(d) => Ok(d),
            Err(e) => self.err(s.span(), format!("{what}: {e}")),
        }
    }

    /// A signed duration, like "+2m" or "-5s", in microseconds.
    pub fn signed(&self, s: &S<String>, what: &str) -> Result<i64, ScenarioError> {
        let text = s.get_ref().trim();
        let (sign, rest) = match text.strip_prefix('-') {
            Some(r) => (-1i64, r),
            None => (1, text.strip_prefix('+').unwrap_or(text)),
        };
        let d = self.duration(&S::new(s.span(), rest.to_string()), what)?;
        let us = i64::try_from(d.as_us())
            .or_else(|_| self.err(s.span(), format!("{what}: too large")))?;
        Ok(sign * us)
    }

    /// A duration within [`MAX_DURATION`], greater than zero.
    fn tcp(&self, section: &TcpSection) -> Result<TcpConfig, ScenarioError> {
        let mut config = TcpConfig::default();
        let (lo, hi) = TCP_RTO_BOUNDS;
        let rto = |s: &Option<S<String>>, what: &str, slot: &mut Duration| {
            if let Some(s) = s {
                let d = self.duration(s, what)?;
                if d < lo || d > hi {
                    return self.err(
                        s.span(),
                        format!("{what} must be within {lo}..{hi} (got {})", s.get_ref()),
                    );
                }
                *slot = d;
            }
            Ok(())
        };
        rto(&section.rto_initial, "rto_initial", &mut config.rto_initial)?;
        rto(&section.rto_min, "rto_min", &mut config.rto_min)?;
        rto(&section.rto_max, "rto_max", &mut config.rto_max)?;
        if config.rto_max < config.rto_min || config.rto_max < config.rto_initial {
            let span = section
                .rto_max
                .as_ref()
                .or(section.rto_min.as_ref())
                .or(section.rto_initial.as_ref())
                .map(|s| s.span())
                .unwrap_or_default();
            return self.err(span, "rto_max must be at least rto_min and rto_initial");
        }
        for (s, what, slot) in [
            (&section.retries2, "retries2", &mut config.retries2),
            (&section.syn_retries, "syn_retries", &mut config.syn_retries),
            (
                &section.syn_linear_timeouts,
                "syn_linear_timeouts",
                &mut config.syn_linear_timeouts,
            ),
            (
                &section.synack_retries,
                "synack_retries",
                &mut config.synack_retries,
            ),
        ] {
            if let Some(s) = s {
                if *s.get_ref() > TCP_MAX_RETRIES {
                    return self.err(
                        s.span(),
                        format!("{what} must be at most {TCP_MAX_RETRIES}"),
                    );
                }
                *slot = *s.get_ref();
            }
        }
        if let Some(s) = &section.unread_limit {
            let v = *s.get_ref();
            if !(1..=TCP_MAX_UNREAD).contains(&v) {
                return self.err(
                    s.span(),
                    format!("unread_limit must be within 1..={TCP_MAX_UNREAD} bytes"),
                );
            }
            config.unread_limit = v;
        }
        Ok(config)
    }

    pub fn positive(&self, s: &S<String>, what: &str) -> Result<Duration, ScenarioError> {
        let d = self.duration(s, what)?;
        if d == Duration::ZERO {
            return self.err(s.span(), format!("{what} must be greater than zero"));
        }
        Ok(d)
    }

    fn ratio(&self, s: &S<String>, what: &str) -> Result<Ratio, ScenarioError> {
        s.get_ref()
            .parse::<Ratio>()
            .or_else(|e| self.err(s.span(), format!("{what}: {e}")))
    }

    /// `"50ms"` (fixed) or `"50ms..150ms"` (uniform, inclusive).
    fn latency(&self, s: &S<String>) -> Result<Latency, ScenarioError> {
        match s.get_ref().split_once("..") {
            None => Ok(Latency::Fixed(self.duration(s, "latency")?)),
            Some((lo, hi)) => {
                let parse = |t: &str| {
                    t.parse::<Duration>().or_else(|e| {
                        self.err(
                            s.span(),
                            format!("latency: {e} (expected \"50ms\" or \"50ms..150ms\")"),
                        )
                    })
                };
                let (lo, hi) = (parse(lo)?, parse(hi)?);
                if lo > hi {
                    return self.err(s.span(), "latency range must be low..high");
                }
                if hi > MAX_DURATION {
                    return self.err(s.span(), "latency is too large");
                }
                Ok(Latency::Uniform { lo, hi })
            }
        }
    }

    /// A link config over `base`. A model that speaks over connections
    /// refuses duplication and reordering, which no connection shows it.
    fn link(
        &self,
        base: LinkConfig,
        section: &LinkSection,
        model: &dyn Model,
    ) -> Result<LinkConfig, ScenarioError> {
        let mut config = base;
        if let Some(l) = &section.latency {
            config.latency = self.latency(l)?;
        }
        if let Some(d) = &section.drop {
            config.drop = self.ratio(d, "drop")?;
        }
        let streams = model.transport() == Transport::Streams;
        let refuse = |key: &str, s: &S<String>| {
            self.err(
                s.span(),
                format!(
                    "{key}: {} speaks over connections (TCP), which deliver every message \
                     once and in order, so {key} does not apply (packet loss and latency do: \
                     use drop and latency)",
                    model.name()
                ),
            )
        };
        if let Some(d) = &section.duplicate {
            config.duplicate = self.ratio(d, "duplicate")?;
            if streams && !config.duplicate.is_never() {
                return refuse("duplicate", d);
            }
        }
        if let Some(r) = &section.reorder {
            config.reorder = self.ratio(r, "reorder")?;
            if streams && !config.reorder.is_never() {
                return refuse("reorder", r);
            }
        }
        if let Some(d) = &section.reorder_delay {
            config.reorder_delay = self.positive(d, "reorder_delay")?;
        }
        Ok(config)
    }
}

/// Node names to ids, with the spans to blame.
struct Names<'a> {
    ids: BTreeMap<&'a str, NodeId>,
    ctx: &'a Context<'a>,
}

impl Names<'_> {
    fn id(&self, name: &str, span: Range<usize>) -> Result<NodeId, ScenarioError> {
        match self.ids.get(name) {
            Some(id) => Ok(*id),
            None => {
                let known: Vec<&str> = self.ids.keys().copied().take(12).collect();
                let more = if self.ids.len() > known.len() {
                    ", ..."
                } else {
                    ""
                };
                self.ctx.err(
                    span,
                    format!(
                        "unknown node {name:?}: expected one of the [[node]] names ({}{more}){}",
                        known.join(", "),
                        vocabulary::did_you_mean(name, self.ids.keys().copied())
                    ),
                )
            }
        }
    }
    /// A symmetric partition's groups: at least two, at most
    /// [`MAX_GROUPS`], none empty, every node in one group once.
    fn groups(&self, g: &S<Vec<Vec<String>>>) -> Result<Vec<Vec<NodeId>>, ScenarioError> {
        let span = g.span();
        let count = g.get_ref().len();
        if count < 2 {
            return self
                .ctx
                .err(span, "a symmetric partition needs at least two groups");
        }
        if count > MAX_GROUPS {
            return self.ctx.err(
                span,
                format!(
                    "{count} groups: a symmetric partition has at most {MAX_GROUPS} (MAX_GROUPS)"
                ),
            );
        }
        let mut seen: BTreeMap<NodeId, usize> = BTreeMap::new();
        let mut groups = Vec::new();
        for (i, group) in g.get_ref().iter().enumerate() {
            if group.is_empty() {
                return self.ctx.err(
                    span,
                    format!(
                        "group {} is empty: every group of a partition names at least one node",
                        i + 1
                    ),
                );
            }
            let mut ids = Vec::new();
            for name in group {
                let id = self.id(name, span.clone())?;
                match seen.insert(id, i) {
                    Some(j) if j == i => {
                        return self
                            .ctx
                            .err(span, format!("{name:?} is listed twice in group {}", i + 1));
                    }
                    Some(j) => {
                        return self.ctx.err(
                            span,
                            format!(
                                "{name:?} is in group {} and group {}: a node can be in one group only",
                                j + 1,
                                i + 1
                            ),
                        );
                    }
                    None => ids.push(id),
                }
            }
            groups.push(ids);
        }
        Ok(groups)
    }

    /// One side of a one-way partition: at least one node, each once.
    fn side(&self, s: &S<NameList>, what: &str) -> Result<BTreeSet<NodeId>, ScenarioError> {
        let names = s.get_ref().names();
        if names.is_empty() {
            return self.ctx.err(
                s.span(),
                format!("{what} is empty: a one-way partition needs at least one node in from and one in to"),
            );
        }
        let mut set = BTreeSet::new();
        for name in names {
            if !set.insert(self.id(name, s.span())?) {
                return self
                    .ctx
                    .err(s.span(), format!("{name:?} is listed twice in {what}"));
            }
        }
        Ok(set)
    }

    fn list(&self, s: &S<NameList>) -> Result<Vec<NodeId>, ScenarioError> {
        s.get_ref()
            .names()
            .into_iter()
            .map(|n| self.id(n, s.span()))
            .collect()
    }
}

impl ScenarioFile {
    /// Check the file, and hand its model its sections.
    fn validate(
        &self,
        models: &[&'static dyn Model],
        ctx: &Context<'_>,
        config: Option<Raw<'_>>,
        written: Vec<Raw<'_>>,
        node_hosts: &[Option<S<String>>],
    ) -> Result<Scenario, ScenarioError> {
        let (path, source) = (ctx.path, ctx.source);
        if *self.version.get_ref() != FORMAT_VERSION {
            return ctx.err(
                self.version.span(),
                format!(
                    "unsupported version {}: this heartsim reads version {FORMAT_VERSION}",
                    self.version.get_ref()
                ),
            );
        }
        let too_many = |what: &str, span: Range<usize>, max: usize, name: &str| {
            ctx.err(
                span,
                format!(
                    "more than {max} [[{what}]] tables: a scenario may have at most {max} ({name})"
                ),
            )
        };
        if let Some(f) = self.faults.get(MAX_FAULTS) {
            return too_many("fault", f.kind.span(), MAX_FAULTS, "MAX_FAULTS");
        }
        if let Some(l) = self.links.get(MAX_LINKS) {
            return too_many("link", l.from.span(), MAX_LINKS, "MAX_LINKS");
        }
        if let Some(e) = self.expects.get(MAX_EXPECTS) {
            return too_many("expect", e.event.span(), MAX_EXPECTS, "MAX_EXPECTS");
        }
        let h = &self.scenario;
        let Some(model) = model::find(models, h.model.get_ref()) else {
            let names: Vec<&str> = models.iter().map(|m| m.name()).collect();
            return ctx.err(
                h.model.span(),
                format!(
                    "unknown model {:?}: expected one of {}",
                    h.model.get_ref(),
                    names.join(", ")
                ),
            );
        };
        let Some(profile) = model
            .profiles()
            .iter()
            .find(|p| p.name == h.profile.get_ref())
        else {
            let names: Vec<&str> = model.profiles().iter().map(|p| p.name).collect();
            return ctx.err(
                h.profile.span(),
                format!(
                    "unknown profile {:?}: expected one of {}",
                    h.profile.get_ref(),
                    names.join(", ")
                ),
            );
        };
        let duration = ctx.positive(&h.duration, "duration")?;
        let mut invariants = Vec::new();
        for name in &h.invariants {
            let known = model.invariants();
            let Some(inv) = known.iter().find(|i| **i == name.get_ref()) else {
                return ctx.err(
                    name.span(),
                    format!(
                        "unknown invariant {:?}: expected one of {}",
                        name.get_ref(),
                        known.join(", ")
                    ),
                );
            };
            invariants.push(*inv);
        }
        let at = |s: &S<String>, what: &str| -> Result<Timestamp, ScenarioError> {
            let d = ctx.duration(s, what)?;
            if d > duration {
                return ctx.err(
                    s.span(),
                    format!(
                        "{what} {:?} is after the scenario's end ({})",
                        s.get_ref(),
                        h.duration.get_ref()
                    ),
                );
            }
            Ok(Timestamp::ZERO + d)
        };

        let mut limits = Limits {
            end: Timestamp::ZERO + duration,
            ..Limits::default()
        };
        if let Some(l) = &self.limits {
            if let Some(m) = &l.max_events {
                limits.max_events = *m.get_ref();
            }
            if let Some(m) = &l.max_queue {
                limits.max_queue = usize::try_from(*m.get_ref()).unwrap_or(usize::MAX);
            }
        }

        let network = match &self.network {
            Some(n) => ctx.link(LinkConfig::default(), n, model)?,
            None => LinkConfig::default(),
        };
        let tcp = match &self.tcp {
            Some(t) => ctx.tcp(t)?,
            None => TcpConfig::default(),
        };

        let (hosts, host_ids) = hosts::check(&self.hosts, ctx)?;

        // Nodes, with `count` expanded.
        let mut nodes = Vec::new();
        let mut spans = Vec::new();
        let mut ranges = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let host = match node_hosts.get(i).and_then(Option::as_ref) {
                None => None,
                Some(h) => Some(host_index(ctx, &host_ids, h)?),
            };
            if let (Some(_), Some(p)) = (host, &n.clock_drift_ppm) {
                return ctx.err(
                    p.span(),
                    "a node on a [[host]] runs on the host's clock: set clock_drift_ppm on the \
                     [[host]]",
                );
            }
            let count = match &n.count {
                None => None,
                Some(c) if *c.get_ref() == 0 || *c.get_ref() > MAX_NODES as u64 => {
                    return ctx.err(
                        c.span(),
                        format!("count must be between 1 and {MAX_NODES} (MAX_NODES)"),
                    );
                }
                Some(c) => Some(*c.get_ref()),
            };
            let start_at = match &n.start {
                None => Some(Timestamp::ZERO),
                Some(s) => Some(at(s, "start")?),
            };
            let clock = match &n.clock_drift_ppm {
                None => host.map_or_else(Clock::default, |h| hosts[h].clock),
                Some(p) => Clock::new(*p.get_ref(), 0).map_or_else(
                    || {
                        ctx.err(
                            p.span(),
                            format!("clock_drift_ppm must be within ±{MAX_DRIFT_PPM}"),
                        )
                    },
                    Ok,
                )?,
            };
            let written = n.name.get_ref();
            if let Some(problem) = name_problem(written, count.is_some()) {
                return ctx.err(n.name.span(), problem);
            }
            if nodes.len() + count.unwrap_or(1) as usize > MAX_NODES {
                return ctx.err(
                    n.name.span(),
                    format!(
                        "more than {MAX_NODES} nodes (count included): a scenario may declare \
                         at most {MAX_NODES} (MAX_NODES)"
                    ),
                );
            }
            let names: Vec<String> = match count {
                None => vec![written.clone()],
                Some(c) => (1..=c).map(|i| format!("{written}{i}")).collect(),
            };
            if let Some(problem) = names.last().and_then(|last| name_problem(last, false)) {
                return ctx.err(
                    n.name.span(),
                    format!("with count = {}: {problem}", names.len()),
                );
            }
            let first = nodes.len();
            for name in names {
                nodes.push(NodeDef {
                    name,
                    kind: n.kind.get_ref().clone(),
                    start_at,
                    clock,
                    host,
                });
                spans.push(n.name.span());
            }
            ranges.push(first..nodes.len());
        }
        let mut ids = BTreeMap::new();
        for (i, node) in nodes.iter().enumerate() {
            if ids.insert(node.name.as_str(), NodeId(i)).is_some() {
                return ctx.err(
                    spans[i].clone(),
                    format!("duplicate node name {:?}", node.name),
                );
            }
        }
        let setup = model.validate(&Sections {
            ctx,
            profile: profile.name,
            invariants: &invariants,
            config,
            nodes: self
                .nodes
                .iter()
                .zip(written)
                .zip(ranges)
                .map(|((section, keys), ids)| WrittenNode { section, keys, ids })
                .collect(),
            defs: &nodes,
            hosts: &hosts,
        })?;
        let names = Names { ids, ctx };

        let mut links = Vec::new();
        for l in &self.links {
            let from = names.id(l.from.get_ref(), l.from.span())?;
            let to = names.id(l.to.get_ref(), l.to.span())?;
            let section = LinkSection {
                latency: l.latency.clone(),
                drop: l.drop.clone(),
                duplicate: l.duplicate.clone(),
                reorder: l.reorder.clone(),
                reorder_delay: l.reorder_delay.clone(),
            };
            links.push((from, to, ctx.link(network, &section, model)?));
        }

        let hosted = Hosted {
            ids: &host_ids,
            defs: &hosts,
        };
        let faults = self.faults(ctx, model, &names, &nodes, &hosted, network, &at)?;

        let mut expects = Vec::new();
        for e in &self.expects {
            let line = source[..e.event.span().start.min(source.len())]
                .matches('\n')
                .count()
                + 1;
            let window = match &e.between {
                None => None,
                Some(b) => {
                    let [lo, hi] = b.get_ref();
                    let lo = at(&S::new(b.span(), lo.clone()), "between")?;
                    let hi = at(&S::new(b.span(), hi.clone()), "between")?;
                    if lo > hi {
                        return ctx.err(
                            b.span(),
                            "between = [early, late]: the first time is after the second",
                        );
                    }
                    Some((lo, hi))
                }
            };
            let never = e.never.as_ref().is_some_and(|n| *n.get_ref());
            let when = match (&e.at, window, never, &e.count) {
                (Some(t), None, false, _) => When::At(at(t, "at")?),
                (None, Some((lo, hi)), false, _) => When::Between(lo, hi),
                (None, Some((lo, hi)), true, None) => When::NeverBetween(lo, hi),
                (None, None, true, None) => When::Never,
                (None, None, false, Some(_)) => When::Anytime,
                _ => {
                    return ctx.err(
                        e.event.span(),
                        "an [[expect]] needs one of: at = \"..\"; between = [\"..\", \"..\"]; never = true (optionally with between); or count = N (optionally with at or between)",
                    );
                }
            };
            let kind = vocabulary::check_event(model, e.event.get_ref())
                .or_else(|why| ctx.err(e.event.span(), why))?;
            if let Some(r) = &e.reason {
                vocabulary::check_reason(model, kind, r.get_ref())
                    .or_else(|why| ctx.err(r.span(), why))?;
            }
            let node = e
                .node
                .as_ref()
                .map(|n| names.id(n.get_ref(), n.span()))
                .transpose()?;
            let peer = e
                .peer
                .as_ref()
                .map(|n| names.id(n.get_ref(), n.span()))
                .transpose()?;
            expects.push(Expect {
                when,
                count: e.count.as_ref().map(|c| *c.get_ref()),
                event: e.event.get_ref().clone(),
                node,
                peer,
                reason: e.reason.as_ref().map(|r| r.get_ref().clone()),
                line,
            });
        }

        Ok(Scenario {
            path: path.to_path_buf(),
            name: h.name.clone(),
            model: model.name(),
            profile: profile.name,
            seed: h.seed,
            duration,
            limits,
            network,
            tcp,
            links,
            hosts,
            nodes,
            faults,
            expects,
            invariants,
            setup,
        })
    }

    /// Resolve faults and check that they are possible in the order they
    /// happen: no heal without a partition, no restart of a running node.
    #[allow(clippy::too_many_arguments)]
    fn faults(
        &self,
        ctx: &Context<'_>,
        model: &dyn Model,
        names: &Names<'_>,
        nodes: &[NodeDef],
        hosted: &Hosted<'_>,
        network: LinkConfig,
        at: &AtFn<'_>,
    ) -> Result<Vec<(Timestamp, Fault)>, ScenarioError> {
        let mut resolved = Vec::new();
        for f in &self.faults {
            let t = at(&f.at, "at")?;
            let kind = f.kind.get_ref().as_str();
            const KINDS: &str = "start, stop, crash, kill, restart, pause, resume, partition, heal, clock-jump, clock-drift, link, break, repair, hold, stall, release, disk-error, disk-ok, slow-disk, torn-write or kill-before-rename";
            if !KINDS
                .trim_start()
                .split([',', ' '])
                .any(|k| k == kind && !k.is_empty() && k != "or")
            {
                return ctx.err(
                    f.kind.span(),
                    format!("unknown fault kind {kind:?}: expected {KINDS}"),
                );
            }
            // Keys only some kinds read: any other kind refuses them.
            let host_kinds = [
                "crash",
                "restart",
                "clock-jump",
                "clock-drift",
                "disk-error",
                "disk-ok",
                "slow-disk",
                "torn-write",
            ];
            if let (Some(h), false) = (&f.host, host_kinds.contains(&kind)) {
                return ctx.err(
                    h.span(),
                    format!(
                        "fault {kind:?} takes no host (these do: {})",
                        host_kinds.join(", ")
                    ),
                );
            }
            let disk_kinds = ["disk-error", "disk-ok", "torn-write"];
            if let (Some(p), false) = (&f.path, disk_kinds.contains(&kind)) {
                return ctx.err(p.span(), format!("fault {kind:?} takes no path"));
            }
            if let (Some(e), false) = (&f.errno, kind == "disk-error") {
                return ctx.err(e.span(), format!("fault {kind:?} takes no errno"));
            }
            if let (Some(w), false) = (&f.write, kind == "slow-disk") {
                return ctx.err(w.span(), format!("fault {kind:?} takes no write"));
            }
            if let (Some(_), Some(n)) = (&f.host, &f.node) {
                return ctx.err(
                    n.span(),
                    format!("fault {kind:?} takes node or host, not both"),
                );
            }
            let host = f
                .host
                .as_ref()
                .map(|h| {
                    host_index(ctx, hosted.ids, h).map(|index| Host {
                        index,
                        name: hosted.defs[index].name.clone(),
                    })
                })
                .transpose()?;
            let need_host = || -> Result<Host, ScenarioError> {
                match &host {
                    Some(h) => Ok(h.clone()),
                    None => ctx.err(
                        f.kind.span(),
                        format!("fault {kind:?} needs host = \"...\" (a [[host]] name)"),
                    ),
                }
            };
            // A host's processes, in node order, for the faults that act on
            // each of them.
            let on_host = |h: &Host| -> Vec<NodeId> {
                (0..nodes.len())
                    .filter(|i| nodes[*i].host == Some(h.index))
                    .map(NodeId)
                    .collect()
            };
            let need_node = || -> Result<NodeId, ScenarioError> {
                match &f.node {
                    Some(n) => names.id(n.get_ref(), n.span()),
                    None => ctx.err(
                        f.kind.span(),
                        format!("fault {kind:?} needs node = \"...\""),
                    ),
                }
            };
            // Whether `n` is the only process of its host (or has none).
            let alone = |n: NodeId| match nodes[n.0].host {
                None => true,
                Some(h) => nodes.iter().filter(|d| d.host == Some(h)).count() == 1,
            };
            // A node that shares a host's clock cannot have it changed alone.
            let hostless = |n: NodeId, instead: &str| -> Result<NodeId, ScenarioError> {
                match nodes[n.0].host {
                    _ if alone(n) => Ok(n),
                    None => Ok(n),
                    Some(h) => ctx.err(
                        f.node.as_ref().map_or(f.kind.span(), |s| s.span()),
                        format!(
                            "{} runs on host {:?}: {instead} (host = {:?})",
                            nodes[n.0].name, hosted.defs[h].name, hosted.defs[h].name
                        ),
                    ),
                }
            };
            let path = f
                .path
                .as_ref()
                .map(|p| {
                    let text = p.get_ref();
                    if !text.starts_with('/') || text.len() > MAX_PATH_BYTES || text.contains('\0')
                    {
                        ctx.err(
                            p.span(),
                            format!(
                                "path: expected an absolute path of at most {MAX_PATH_BYTES} bytes"
                            ),
                        )
                    } else {
                        Ok(text.clone())
                    }
                })
                .transpose()?;
            // The same fault on each process of a host, after the first.
            let mut more: Vec<Fault> = Vec::new();
            let mut each =
                |h: &Host, fault: &dyn Fn(NodeId) -> Fault| -> Result<Fault, ScenarioError> {
                    let ids = on_host(h);
                    let Some((first, rest)) = ids.split_first() else {
                        return ctx.err(
                            f.kind.span(),
                            format!("host {:?} has no node: no [[node]] names it", h.name),
                        );
                    };
                    more.extend(rest.iter().map(|n| fault(*n)));
                    Ok(fault(*first))
                };
            let need_pair = || -> Result<(NodeId, NodeId), ScenarioError> {
                let (Some(from), Some(to)) = (&f.from, &f.to) else {
                    return ctx.err(
                        f.kind.span(),
                        format!("fault {kind:?} needs from = \"...\" and to = \"...\""),
                    );
                };
                let (a, b) = (names.list(from)?, names.list(to)?);
                match (a.as_slice(), b.as_slice()) {
                    ([a], [b]) => Ok((*a, *b)),
                    _ => ctx.err(
                        from.span(),
                        format!("fault {kind:?} takes one node in from and one in to"),
                    ),
                }
            };
            let fault = match kind {
                "start" => Fault::Start(need_node()?),
                "stop" => Fault::Stop(need_node()?),
                "crash" => match &host {
                    Some(h) => Fault::PowerLoss { host: h.clone() },
                    None => {
                        let n = hostless(need_node()?, "crash the host, or kill the process")?;
                        // Alone on a [[host]]: the host's crash, with its disk.
                        match nodes[n.0].host {
                            Some(index) => Fault::PowerLoss {
                                host: Host {
                                    index,
                                    name: hosted.defs[index].name.clone(),
                                },
                            },
                            None => Fault::Crash(n),
                        }
                    }
                },
                "kill" => Fault::Kill(need_node()?),
                "restart" => match &host {
                    Some(h) => each(h, &Fault::Restart)?,
                    None => Fault::Restart(need_node()?),
                },
                "kill-before-rename" => Fault::KillBeforeRename(need_node()?),
                "disk-error" => {
                    let h = need_host()?;
                    let Some(e) = &f.errno else {
                        return ctx.err(
                            f.kind.span(),
                            "disk-error needs errno = \"EIO\", \"ENOSPC\" or \"EACCES\"",
                        );
                    };
                    let Some(errno) = Errno::injectable(e.get_ref()) else {
                        return ctx.err(
                            e.span(),
                            format!(
                                "unknown errno {:?}: expected EIO, ENOSPC or EACCES",
                                e.get_ref()
                            ),
                        );
                    };
                    Fault::DiskError {
                        host: h,
                        path,
                        errno: Some(errno),
                    }
                }
                "disk-ok" => Fault::DiskError {
                    host: need_host()?,
                    path,
                    errno: None,
                },
                "torn-write" => Fault::TornWrite {
                    host: need_host()?,
                    path,
                },
                "slow-disk" => {
                    let h = need_host()?;
                    let Some(w) = &f.write else {
                        return ctx.err(f.kind.span(), "slow-disk needs write = \"250ms\"");
                    };
                    let d = ctx.duration(w, "write")?;
                    if d > MAX_WRITE_TIME {
                        return ctx.err(w.span(), "write: at most 24h");
                    }
                    Fault::SlowDisk {
                        host: h,
                        write_us: d.as_us(),
                    }
                }
                "heal" => Fault::Heal,
                "partition" => match (&f.groups, &f.from, &f.to) {
                    (Some(g), None, None) => {
                        Fault::Partition(Partition::symmetric(&names.groups(g)?))
                    }
                    (None, Some(from), Some(to)) => {
                        let (from_ids, to_ids) = (names.side(from, "from")?, names.side(to, "to")?);
                        if let Some(both) = from_ids.intersection(&to_ids).next() {
                            return ctx.err(
                                to.span(),
                                format!(
                                    "{:?} is in both from and to: a one-way partition blocks \
                                     messages from some nodes to others",
                                    nodes[both.0].name
                                ),
                            );
                        }
                        Fault::Partition(vec![Partition {
                            from: from_ids,
                            to: to_ids,
                        }])
                    }
                    _ => {
                        return ctx.err(f.kind.span(), "a partition needs groups = [[...], [...]] (symmetric) or from/to (one-way)");
                    }
                },
                "clock-jump" => {
                    let Some(by) = &f.by else {
                        return ctx.err(
                            f.kind.span(),
                            "clock-jump needs by = \"+1h\" or by = \"-5m\"",
                        );
                    };
                    let by_us = ctx.signed(by, "by")?;
                    match &host {
                        Some(h) => each(h, &|node| Fault::ClockJump { node, by_us })?,
                        None => Fault::ClockJump {
                            node: hostless(need_node()?, "jump the host's clock")?,
                            by_us,
                        },
                    }
                }
                "link" => {
                    let (from, to) = need_pair()?;
                    let section = LinkSection {
                        latency: f.latency.clone(),
                        drop: f.drop.clone(),
                        duplicate: f.duplicate.clone(),
                        reorder: f.reorder.clone(),
                        reorder_delay: f.reorder_delay.clone(),
                    };
                    Fault::Link {
                        from,
                        to,
                        config: ctx.link(network, &section, model)?,
                    }
                }
                "break" => {
                    let (from, to) = need_pair()?;
                    Fault::Break { from, to }
                }
                "repair" => {
                    let (from, to) = need_pair()?;
                    Fault::Repair { from, to }
                }
                "hold" => {
                    let (from, to) = need_pair()?;
                    Fault::Hold { from, to }
                }
                "stall" => {
                    let (from, to) = need_pair()?;
                    Fault::Stall { from, to }
                }
                "release" => {
                    let (from, to) = need_pair()?;
                    Fault::Release { from, to }
                }
                "pause" => Fault::Pause(need_node()?),
                "resume" => Fault::Resume(need_node()?),
                "clock-drift" => {
                    let Some(ppm) = &f.ppm else {
                        return ctx.err(f.kind.span(), "clock-drift needs ppm = 200 (or -200)");
                    };
                    if ppm.get_ref().unsigned_abs() > MAX_DRIFT_PPM.unsigned_abs() {
                        return ctx.err(ppm.span(), format!("ppm must be within ±{MAX_DRIFT_PPM}"));
                    }
                    let ppm = *ppm.get_ref();
                    match &host {
                        Some(h) => each(h, &|node| Fault::ClockDrift { node, ppm })?,
                        None => Fault::ClockDrift {
                            node: hostless(need_node()?, "change the host's drift")?,
                            ppm,
                        },
                    }
                }
                other => {
                    return ctx.err(
                        f.kind.span(),
                        format!("unknown fault kind {other:?}: expected {KINDS}"),
                    );
                }
            };
            resolved.push((t, fault, f.kind.span()));
            for fault in more {
                resolved.push((t, fault, f.kind.span()));
            }
        }
        // Replay the schedule in engine order: node starts first, then
        // faults by time (a stable sort keeps file order at equal times).
        let mut order: Vec<usize> = (0..resolved.len()).collect();
        order.sort_by_key(|&i| resolved[i].0);
        let mut running: BTreeSet<NodeId> = BTreeSet::new();
        let mut starts: Vec<(Timestamp, NodeId)> = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.start_at.map(|t| (t, NodeId(i))))
            .collect();
        starts.sort();
        let mut starts = starts.into_iter().peekable();
        let mut partitioned = false;
        let mut broken = BTreeSet::new();
        let mut paused: BTreeSet<NodeId> = BTreeSet::new();
        let mut held = BTreeSet::new();
        for i in order {
            let (t, fault, span) = &resolved[i];
            while let Some(&(st, n)) = starts.peek() {
                if st > *t {
                    break;
                }
                running.insert(n);
                starts.next();
            }
            let name = |n: &NodeId| nodes[n.0].name.as_str();
            let link = |from: &NodeId, to: &NodeId| format!("{}->{}", name(from), name(to));
            let problem = match fault {
                Fault::Start(n) | Fault::Restart(n) if running.contains(n) => Some(format!(
                    "{} is already running at this time (crash or stop it first)",
                    name(n)
                )),
                Fault::Stop(n) | Fault::Kill(n) | Fault::Pause(n) | Fault::KillBeforeRename(n)
                    if !running.contains(n) =>
                {
                    Some(format!("{} is not running at this time", name(n)))
                }
                Fault::Stop(n) | Fault::Pause(n) if paused.contains(n) => Some(format!(
                    "{} is paused at this time (resume it first; crash works on a paused node)",
                    name(n)
                )),
                Fault::Resume(n) if !paused.contains(n) => {
                    Some(format!("{} is not paused at this time", name(n)))
                }
                Fault::Hold { from, to } | Fault::Stall { from, to }
                    if held.contains(&(*from, *to)) =>
                {
                    Some(format!(
                        "{} is already held or stalled (release it first)",
                        link(from, to)
                    ))
                }
                Fault::Release { from, to } if !held.contains(&(*from, *to)) => Some(format!(
                    "release of {}, which is not held or stalled",
                    link(from, to)
                )),
                Fault::Heal if !partitioned => Some("heal without an active partition".to_string()),
                Fault::Repair { from, to } if !broken.contains(&(*from, *to)) => {
                    Some(format!("repair of {}, which is not broken", link(from, to)))
                }
                _ => None,
            };
            if let Some(problem) = problem {
                return ctx.err(span.clone(), format!("impossible fault: {problem}"));
            }
            match fault {
                Fault::Start(n) | Fault::Restart(n) => {
                    running.insert(*n);
                }
                Fault::Stop(n) | Fault::Kill(n) | Fault::Crash(n) => {
                    running.remove(n);
                    paused.remove(n);
                }
                // It dies at its next rename, whose time the schedule
                // cannot tell: a restart after it is allowed (the engine
                // reboots a process that is still running).
                Fault::KillBeforeRename(n) => {
                    running.remove(n);
                    paused.remove(n);
                }
                Fault::PowerLoss { host } => {
                    for (i, node) in nodes.iter().enumerate() {
                        if node.host == Some(host.index) {
                            running.remove(&NodeId(i));
                            paused.remove(&NodeId(i));
                        }
                    }
                }
                Fault::Pause(n) => {
                    paused.insert(*n);
                }
                Fault::Resume(n) => {
                    paused.remove(n);
                }
                Fault::Hold { from, to } | Fault::Stall { from, to } => {
                    held.insert((*from, *to));
                }
                Fault::Release { from, to } => {
                    held.remove(&(*from, *to));
                }
                Fault::Partition(_) => partitioned = true,
                Fault::Heal => partitioned = false,
                Fault::Break { from, to } => {
                    broken.insert((*from, *to));
                }
                Fault::Repair { from, to } => {
                    broken.remove(&(*from, *to));
                }
                _ => {}
            }
        }
        Ok(resolved.into_iter().map(|(t, f, _)| (t, f)).collect())
    }
}
