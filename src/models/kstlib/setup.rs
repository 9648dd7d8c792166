//! The model's `[[node]]` keys, checked into a [`Setup`]. kstlib has no
//! `[config]`: every setting belongs to one process.

use heartsim_sim::fs::MAX_PATH_BYTES;
use heartsim_sim::trace::Trace;
use heartsim_sim::{Duration, NodeId, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::invariants;
use super::reader::check_interval;
use super::{
    Monitor, MonitorSpec, Node, PingWatchdog, PingWatchdogSpec, Profile, StateWatchdog,
    StateWatchdogSpec, Writer, WriterSpec,
};
use crate::scenario::{self, Scenario, ScenarioError, Sections, Violation, S};

/// Seconds as upstream takes them: a TOML integer or float (`nan` and
/// `inf` included, which the clamps handle as upstream's do).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Seconds {
    Int(i64),
    Float(f64),
}

impl Seconds {
    #[allow(clippy::cast_precision_loss)]
    fn get(self) -> f64 {
        match self {
            Seconds::Int(i) => i as f64,
            Seconds::Float(f) => f,
        }
    }
}

/// A node's keys beyond the common ones. `kind` is `writer` (a process
/// running `Heartbeat`), `monitor` (polls `Heartbeat.is_alive`),
/// `state-watchdog` (`Watchdog.from_state_file`) or `watchdog` (a
/// `Watchdog` its own worker pings).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeKeys {
    /// writer, monitor, state-watchdog: the state file's absolute path
    /// (a writer without one writes nothing: `beat()` is a no-op).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_file: Option<S<String>>,
    /// writer: `Heartbeat(interval=..)` in seconds, clamped to [1, 300]
    /// (NaN -> 1); default 10.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<S<Seconds>>,
    /// writer: `target.is_dead` is true from this time on (the process's
    /// monotonic clock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_dead_at: Option<S<String>>,
    /// writer: `target.is_dead` raises from this time on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_raises_at: Option<S<String>>,
    /// writer: `on_beat` raises on every call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_beat_fails: Option<S<bool>>,
    /// writer: the application calls `start()` (`astart()`) twice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_twice: Option<S<bool>>,
    /// writer: write a naive timestamp (not upstream's writer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub naive_timestamp: Option<S<bool>>,
    /// monitor, state-watchdog: `max_age` seconds (default 30).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<S<Seconds>>,
    /// monitor: poll `is_alive` this often, first at start (default "1s").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_every: Option<S<String>>,
    /// state-watchdog: `from_state_file(check_interval=..)` seconds
    /// (default max_age / 2), the watchdog's timeout: its loop runs every
    /// min(1, clamp(check_interval, 1, 3600) / 4) s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_interval: Option<S<Seconds>>,
    /// watchdog: `Watchdog(timeout=..)` seconds, clamped to [1, 3600];
    /// default 30.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<S<Seconds>>,
    /// watchdog: its worker pings this often (default "1s").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping_every: Option<S<String>>,
    /// watchdog: the worker stops pinging at this time...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hang_at: Option<S<String>>,
    /// watchdog: ...and pings again from this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_at: Option<S<String>>,
    /// watchdog: the application calls `reset()` at this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_at: Option<S<String>>,
}

/// A key as written (its span, if present) and the kinds that read it.
type KindKey<'a> = (&'a str, Option<std::ops::Range<usize>>, &'a [&'a str]);

/// What a node is.
#[derive(Clone, Debug)]
pub enum Role {
    Writer(WriterSpec),
    Monitor(MonitorSpec),
    StateWatchdog(StateWatchdogSpec),
    Watchdog(PingWatchdogSpec),
}

/// A checked kstlib scenario.
#[derive(Clone, Debug)]
pub struct Setup {
    pub profile: Profile,
    /// Indexed by node.
    pub roles: Vec<Role>,
    /// Each node's disk (its `[[host]]`, or its own).
    pub disk_of: Vec<usize>,
    pub invariants: Vec<&'static str>,
}

impl scenario::Setup for Setup {
    type Machine = Node;

    fn machine(&self, node: NodeId) -> Node {
        match &self.roles[node.0] {
            Role::Writer(spec) => Node::Writer(Writer::new(self.profile, spec.clone())),
            Role::Monitor(spec) => Node::Monitor(Monitor::new(spec.clone())),
            Role::StateWatchdog(spec) => {
                Node::StateWatchdog(StateWatchdog::new(self.profile, spec.clone()))
            }
            Role::Watchdog(spec) => Node::Watchdog(PingWatchdog::new(spec.clone())),
        }
    }

    fn violations(&self, scenario: &Scenario, trace: &Trace) -> Vec<Violation> {
        invariants::check(self, scenario, trace)
    }
}

/// `clamp_with_limits(value, lo, hi)` = `max(lo, min(value, hi))`
/// (limits.py line 500): Python's `min(nan, hi)` keeps `nan` (no
/// comparison is true), `max(lo, nan)` then gives `lo`. In microseconds.
pub fn clamp_seconds(value: f64, lo: f64, hi: f64) -> Duration {
    // `min(value, hi)`: `hi` only if `hi < value`.
    let m = if hi < value { hi } else { value };
    // `max(lo, m)`: `m` only if `m > lo`.
    let c = if m > lo { m } else { lo };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Duration::from_us((c * 1e6).round() as u64)
}

pub fn validate(s: &Sections<'_>) -> Result<Setup, ScenarioError> {
    let ctx = s.ctx;
    let profile = Profile::from_name(s.profile).expect("the scenario layer checked the profile");
    if let Some(raw) = &s.config {
        return ctx.err(
            raw.span(),
            "kstlib has no [config]: its settings are each process's [[node]] keys",
        );
    }
    let mut roles = Vec::with_capacity(s.defs.len());
    // Nodes without a host have a disk of their own, after the hosts'.
    let mut disk_of = Vec::with_capacity(s.defs.len());
    let mut own = s.hosts.len();
    for def in s.defs {
        disk_of.push(match def.host {
            Some(h) => s.hosts[h].disk_of.unwrap_or(h),
            None => {
                own += 1;
                own - 1
            }
        });
    }
    for written in &s.nodes {
        let k: NodeKeys = ctx.read(written.keys.clone())?;
        let kind = &written.section.kind;
        let kind_name = kind.get_ref().as_str();
        // Which keys each kind reads; any other is an error at the key.
        let keys: [KindKey<'_>; 15] = [
            (
                "state_file",
                k.state_file.as_ref().map(|v| v.span()),
                &["writer", "monitor", "state-watchdog"],
            ),
            (
                "interval",
                k.interval.as_ref().map(|v| v.span()),
                &["writer"],
            ),
            (
                "target_dead_at",
                k.target_dead_at.as_ref().map(|v| v.span()),
                &["writer"],
            ),
            (
                "target_raises_at",
                k.target_raises_at.as_ref().map(|v| v.span()),
                &["writer"],
            ),
            (
                "on_beat_fails",
                k.on_beat_fails.as_ref().map(|v| v.span()),
                &["writer"],
            ),
            (
                "start_twice",
                k.start_twice.as_ref().map(|v| v.span()),
                &["writer"],
            ),
            (
                "naive_timestamp",
                k.naive_timestamp.as_ref().map(|v| v.span()),
                &["writer"],
            ),
            (
                "max_age",
                k.max_age.as_ref().map(|v| v.span()),
                &["monitor", "state-watchdog"],
            ),
            (
                "poll_every",
                k.poll_every.as_ref().map(|v| v.span()),
                &["monitor"],
            ),
            (
                "check_interval",
                k.check_interval.as_ref().map(|v| v.span()),
                &["state-watchdog"],
            ),
            (
                "timeout",
                k.timeout.as_ref().map(|v| v.span()),
                &["watchdog"],
            ),
            (
                "ping_every",
                k.ping_every.as_ref().map(|v| v.span()),
                &["watchdog"],
            ),
            (
                "hang_at",
                k.hang_at.as_ref().map(|v| v.span()),
                &["watchdog"],
            ),
            (
                "resume_at",
                k.resume_at.as_ref().map(|v| v.span()),
                &["watchdog"],
            ),
            (
                "reset_at",
                k.reset_at.as_ref().map(|v| v.span()),
                &["watchdog"],
            ),
        ];
        const KINDS: [&str; 4] = ["writer", "monitor", "state-watchdog", "watchdog"];
        if !KINDS.contains(&kind_name) {
            return ctx.err(
                kind.span(),
                format!(
                    "unknown node kind {kind_name:?}: expected writer, monitor, state-watchdog or watchdog"
                ),
            );
        }
        for (name, span, kinds) in keys {
            if let (Some(span), false) = (span, kinds.contains(&kind_name)) {
                return ctx.err(
                    span,
                    format!(
                        "{name} is not a {kind_name} key (it is for: {})",
                        kinds.join(", ")
                    ),
                );
            }
        }
        let path = |v: &Option<S<String>>| -> Result<Option<String>, ScenarioError> {
            let Some(p) = v else { return Ok(None) };
            let text = p.get_ref();
            if !text.starts_with('/')
                || text.ends_with('/')
                || text.len() > MAX_PATH_BYTES
                || text.contains('\0')
            {
                return ctx.err(
                    p.span(),
                    format!(
                        "state_file: expected an absolute path to a file, at most {MAX_PATH_BYTES} bytes"
                    ),
                );
            }
            Ok(Some(text.clone()))
        };
        let seconds = |v: &Option<S<Seconds>>, name: &str| -> Result<Option<f64>, ScenarioError> {
            let Some(x) = v else { return Ok(None) };
            let f = x.get_ref().get();
            if f < 0.0 {
                return ctx.err(
                    x.span(),
                    format!("{name}: {f} is negative: expected seconds, 0 or more (nan and inf are clamped as upstream does)"),
                );
            }
            Ok(Some(f))
        };
        let when =
            |v: &Option<S<String>>, name: &str| -> Result<Option<Timestamp>, ScenarioError> {
                v.as_ref()
                    .map(|x| ctx.duration(x, name).map(|d| Timestamp::ZERO + d))
                    .transpose()
            };
        let every = |v: &Option<S<String>>, name: &str| -> Result<Duration, ScenarioError> {
            match v {
                None => Ok(Duration::from_secs(1)),
                Some(x) => ctx.positive(x, name),
            }
        };
        let need_file = |what: &str| -> Result<String, ScenarioError> {
            match path(&k.state_file)? {
                Some(p) => Ok(p),
                None => ctx.err(
                    kind.span(),
                    format!("a {what} needs state_file = \"/path\""),
                ),
            }
        };
        let max_age = seconds(&k.max_age, "max_age")?.unwrap_or(30.0);
        for id in written.ids.clone() {
            let role = match kind_name {
                "writer" => Role::Writer(WriterSpec {
                    state_file: path(&k.state_file)?,
                    // `interval=None` => the config value, 10 s by default
                    // (limits.py DEFAULT_HEARTBEAT_INTERVAL).
                    interval: clamp_seconds(
                        seconds(&k.interval, "interval")?.unwrap_or(10.0),
                        1.0,
                        300.0,
                    ),
                    pid: 1000 + u32::try_from(id).unwrap_or(u32::MAX - 1000),
                    hostname: match s.defs[id].host {
                        Some(h) => s.hosts[h].name.clone(),
                        None => s.defs[id].name.clone(),
                    },
                    target_dead_at: when(&k.target_dead_at, "target_dead_at")?,
                    target_raises_at: when(&k.target_raises_at, "target_raises_at")?,
                    on_beat_fails: k.on_beat_fails.as_ref().is_some_and(|b| *b.get_ref()),
                    start_twice: k.start_twice.as_ref().is_some_and(|b| *b.get_ref()),
                    naive_timestamp: k.naive_timestamp.as_ref().is_some_and(|b| *b.get_ref()),
                }),
                "monitor" => Role::Monitor(MonitorSpec {
                    state_file: need_file("monitor")?,
                    watched: None, // resolved below
                    max_age_s: max_age,
                    poll_every: every(&k.poll_every, "poll_every")?,
                }),
                "state-watchdog" => {
                    // `interval = check_interval if check_interval is not
                    // None else max_age / 2`, then `cls(timeout=interval)`,
                    // clamped to [1, 3600] (watchdog.py lines 259, 162).
                    let timeout =
                        seconds(&k.check_interval, "check_interval")?.unwrap_or(max_age / 2.0);
                    let timeout = clamp_seconds(timeout, 1.0, 3600.0);
                    #[allow(clippy::cast_precision_loss)]
                    let timeout_s = timeout.as_us() as f64 / 1e6;
                    Role::StateWatchdog(StateWatchdogSpec {
                        state_file: need_file("state-watchdog")?,
                        watched: None, // resolved below
                        max_age_s: max_age,
                        every: check_interval(timeout_s),
                    })
                }
                _ => {
                    let timeout =
                        clamp_seconds(seconds(&k.timeout, "timeout")?.unwrap_or(30.0), 1.0, 3600.0);
                    #[allow(clippy::cast_precision_loss)]
                    let timeout_s = timeout.as_us() as f64 / 1e6;
                    Role::Watchdog(PingWatchdogSpec {
                        timeout,
                        every: check_interval(timeout_s),
                        ping_every: every(&k.ping_every, "ping_every")?,
                        hang_at: when(&k.hang_at, "hang_at")?,
                        resume_at: when(&k.resume_at, "resume_at")?,
                        reset_at: when(&k.reset_at, "reset_at")?,
                    })
                }
            };
            roles.push(role);
        }
    }
    // Each reader's verdicts are about the one writer of its file on its
    // disk, if there is exactly one (QoS pairs them: docs/qos.md).
    let writers: Vec<(usize, String, NodeId)> = roles
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Role::Writer(w) => w.state_file.clone().map(|f| (disk_of[i], f, NodeId(i))),
            _ => None,
        })
        .collect();
    for (i, role) in roles.iter_mut().enumerate() {
        let (file, watched) = match role {
            Role::Monitor(m) => (m.state_file.clone(), &mut m.watched),
            Role::StateWatchdog(w) => (w.state_file.clone(), &mut w.watched),
            Role::Writer(_) | Role::Watchdog(_) => continue,
        };
        let mut of_file = writers
            .iter()
            .filter(|(d, f, _)| *d == disk_of[i] && *f == file);
        *watched = match (of_file.next(), of_file.next()) {
            (Some(&(_, _, w)), None) => Some(w),
            _ => None,
        };
    }
    Ok(Setup {
        profile,
        roles,
        disk_of,
        invariants: s.invariants.to_vec(),
    })
}
