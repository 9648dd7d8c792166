//! The model's scenario keys: `[config]` (the pool's settings) and the
//! `[[node]]` keys of the pool and its roles, checked into a [`Setup`].

use heartsim_sim::trace::Trace;
use heartsim_sim::{Duration, NodeId, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{invariants, Behaviour, Config, Node, Pool, Profile, RoleSpec};
use crate::scenario::{self, Scenario, ScenarioError, Sections, Violation, S};

/// The most client calls (with streams and resets) one role's workload may hold.
pub const MAX_CALLS: usize = 100_000;

/// The most chunks one stream may have.
pub const MAX_STREAM_CHUNKS: u32 = 1000;

/// The pool's settings (pool.py and health_ticker.py constants).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigSection {
    /// `WorkerPool(max_idle_s=..)` in seconds, 0 or more; 0 turns reaping
    /// off (the pool's default; lilbee's app config passes 300).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_idle_s: Option<S<f64>>,
    /// The health ticker's sleep between ticks (default "30s").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tick_interval: Option<S<String>>,
    /// A ping's `wait_for` timeout (default "5s").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_timeout: Option<S<String>>,
    /// A call's `wait_for` timeout (default "300s").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_timeout: Option<S<String>>,
    /// close(): the ack wait and the join (default "5s").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout: Option<S<String>>,
    /// A role is degraded once more than this many crashes are in the
    /// window (default 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_budget: Option<S<i64>>,
    /// The crash window (default "60s").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_window: Option<S<String>>,
    /// `shutdown_pool_runtime` at this time (default: never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_at: Option<S<String>>,
}

/// A node's keys beyond the common ones. `kind` is `pool` (exactly one)
/// or `role` (one per registered role, in registration order).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeKeys {
    /// role: healthy (default) | crash-on-call | crash-on-ping |
    /// die-after | hang.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behaviour: Option<S<String>>,
    /// role: the behaviour holds for the first this many spawns, later
    /// workers are healthy (default: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bad_spawns: Option<S<i64>>,
    /// role, die-after: the worker dies this long after it is ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub die_after: Option<S<String>>,
    /// role: how long a request takes the worker (default "100ms").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_delay: Option<S<String>>,
    /// role: from spawn until the worker reads its pipe (interpreter
    /// start and model load; default "2s").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spawn_time: Option<S<String>>,
    /// role: clients call at these times.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_at: Option<Vec<S<String>>>,
    /// role: and every this long...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_every: Option<S<String>>,
    /// ...from this time (default "0s")...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_from: Option<S<String>>,
    /// ...until this time (required with call_every).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_until: Option<S<String>>,
    /// role: clients start a stream (`pool.<role>.stream(...)`: no
    /// timeout, in flight until its end) at these times.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_at: Option<Vec<S<String>>>,
    /// role: a stream's `stream_chunk` frames, one every answer_delay,
    /// then `stream_end` (default 3, at most 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_chunks: Option<S<i64>>,
    /// role: an operator calls `pool.reset_role_failures(role)` (the UI's
    /// "retry") at these times.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_failures_at: Option<Vec<S<String>>>,
}

/// A checked lilbee scenario.
#[derive(Clone, Debug)]
pub struct Setup {
    pub profile: Profile,
    pub config: Config,
    pub pool: NodeId,
    /// Every role node, in registration order, with its spec.
    pub roles: Vec<(NodeId, RoleSpec)>,
    pub invariants: Vec<&'static str>,
}

impl scenario::Setup for Setup {
    type Machine = Node;

    fn machine(&self, node: NodeId) -> Node {
        if node == self.pool {
            Node::Pool(Box::new(Pool::new(self.config.clone(), self.roles.clone())))
        } else {
            Node::Role
        }
    }

    fn violations(&self, scenario: &Scenario, trace: &Trace) -> Vec<Violation> {
        invariants::check(self, scenario, trace)
    }
}

/// Seconds as a [`Duration`]: finite, 0 or more, within `MAX_DURATION`.
fn seconds(ctx: &scenario::Context<'_>, v: &S<f64>, what: &str) -> Result<Duration, ScenarioError> {
    let f = *v.get_ref();
    let max = scenario::MAX_DURATION.as_us() / 1_000_000;
    #[allow(clippy::cast_precision_loss)]
    if !f.is_finite() || f < 0.0 || f > max as f64 {
        return ctx.err(
            v.span(),
            format!("{what}: expected seconds, 0 or more and at most {max} (got {f})"),
        );
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(Duration::from_us((f * 1e6).round() as u64))
}

fn read_config(ctx: &scenario::Context<'_>, c: &ConfigSection) -> Result<Config, ScenarioError> {
    let mut cfg = Config::default();
    if let Some(v) = &c.max_idle_s {
        cfg.max_idle = seconds(ctx, v, "max_idle_s")?;
    }
    for (field, slot, name) in [
        (&c.tick_interval, &mut cfg.tick_interval, "tick_interval"),
        (&c.health_timeout, &mut cfg.health_timeout, "health_timeout"),
        (&c.call_timeout, &mut cfg.call_timeout, "call_timeout"),
        (
            &c.shutdown_timeout,
            &mut cfg.shutdown_timeout,
            "shutdown_timeout",
        ),
        (&c.restart_window, &mut cfg.restart_window, "restart_window"),
    ] {
        if let Some(v) = field {
            *slot = ctx.positive(v, name)?;
        }
    }
    if let Some(v) = &c.restart_budget {
        let n = *v.get_ref();
        cfg.restart_budget = match usize::try_from(n) {
            Ok(n) if n <= 1000 => n,
            _ => {
                return ctx.err(
                    v.span(),
                    format!("restart_budget: expected a count from 0 to 1000 (got {n})"),
                )
            }
        };
    }
    if let Some(v) = &c.shutdown_at {
        cfg.shutdown_at = Some(Timestamp::ZERO + ctx.duration(v, "shutdown_at")?);
    }
    Ok(cfg)
}

pub fn validate(s: &Sections<'_>) -> Result<Setup, ScenarioError> {
    let ctx = s.ctx;
    let profile = Profile::from_name(s.profile).expect("the scenario layer checked the profile");
    let config = match &s.config {
        Some(raw) => read_config(ctx, &ctx.read(raw.clone())?)?,
        None => Config::default(),
    };
    let mut pool = None;
    let mut roles = Vec::new();
    let mut first_role_span = None;
    for written in &s.nodes {
        let k: NodeKeys = ctx.read(written.keys.clone())?;
        let kind = &written.section.kind;
        match kind.get_ref().as_str() {
            "pool" => {
                let extra = [
                    k.behaviour.as_ref().map(|v| v.span()),
                    k.bad_spawns.as_ref().map(|v| v.span()),
                    k.die_after.as_ref().map(|v| v.span()),
                    k.answer_delay.as_ref().map(|v| v.span()),
                    k.spawn_time.as_ref().map(|v| v.span()),
                    k.call_every.as_ref().map(|v| v.span()),
                    k.call_from.as_ref().map(|v| v.span()),
                    k.call_until.as_ref().map(|v| v.span()),
                    k.call_at.as_ref().and_then(|v| v.first()).map(|v| v.span()),
                    k.stream_at
                        .as_ref()
                        .and_then(|v| v.first())
                        .map(|v| v.span()),
                    k.stream_chunks.as_ref().map(|v| v.span()),
                    k.reset_failures_at
                        .as_ref()
                        .and_then(|v| v.first())
                        .map(|v| v.span()),
                ];
                if let Some(span) = extra.into_iter().flatten().next() {
                    return ctx.err(
                        span,
                        "a pool node has no keys of its own: this is a role key",
                    );
                }
                if pool.is_some() || written.ids.len() != 1 {
                    return ctx.err(kind.span(), "exactly one pool node, please (count 1)");
                }
                pool = Some(NodeId(written.ids.start));
            }
            "role" => {
                first_role_span.get_or_insert(kind.span());
                let behaviour = match k.behaviour.as_ref().map(|b| (b, b.get_ref().as_str())) {
                    None | Some((_, "healthy")) => Behaviour::Healthy,
                    Some((_, "crash-on-call")) => Behaviour::CrashOnCall,
                    Some((_, "crash-on-ping")) => Behaviour::CrashOnPing,
                    Some((_, "hang")) => Behaviour::Hang,
                    Some((b, "die-after")) => match &k.die_after {
                        Some(d) => Behaviour::DieAfter(ctx.duration(d, "die_after")?),
                        None => {
                            return ctx.err(b.span(), "die-after needs die_after = \"<time>\"")
                        }
                    },
                    Some((b, other)) => {
                        return ctx.err(
                            b.span(),
                            format!("unknown behaviour {other:?}: expected healthy, crash-on-call, crash-on-ping, die-after or hang"),
                        )
                    }
                };
                if let (Some(d), false) =
                    (&k.die_after, matches!(behaviour, Behaviour::DieAfter(_)))
                {
                    return ctx.err(d.span(), "die_after is for behaviour = \"die-after\"");
                }
                let bad_spawns = match &k.bad_spawns {
                    None => None,
                    Some(v) => match u32::try_from(*v.get_ref()) {
                        Ok(n) => Some(n),
                        Err(_) => {
                            return ctx.err(v.span(), "bad_spawns: expected a count, 0 or more")
                        }
                    },
                };
                let answer_delay = match &k.answer_delay {
                    Some(v) => ctx.duration(v, "answer_delay")?,
                    None => Duration::from_ms(100),
                };
                let spawn_time = match &k.spawn_time {
                    Some(v) => ctx.duration(v, "spawn_time")?,
                    None => Duration::from_secs(2),
                };
                let mut calls = Vec::new();
                for at in k.call_at.iter().flatten() {
                    calls.push(Timestamp::ZERO + ctx.duration(at, "call_at")?);
                }
                match (&k.call_every, &k.call_from, &k.call_until) {
                    (Some(every), from, until) => {
                        let every = ctx.positive(every, "call_every")?;
                        let from = match from {
                            Some(v) => Timestamp::ZERO + ctx.duration(v, "call_from")?,
                            None => Timestamp::ZERO,
                        };
                        let until = match until {
                            Some(v) => Timestamp::ZERO + ctx.duration(v, "call_until")?,
                            None => {
                                return ctx.err(
                                    k.call_every.as_ref().map_or(0..0, |v| v.span()),
                                    "call_every needs call_until = \"<time>\" (the last call at or before it)",
                                )
                            }
                        };
                        let mut t = from;
                        while t <= until {
                            if calls.len() >= MAX_CALLS {
                                return ctx.err(
                                    k.call_every.as_ref().map_or(0..0, |v| v.span()),
                                    format!("more than {MAX_CALLS} calls (MAX_CALLS) for one role: call less often or for less long"),
                                );
                            }
                            calls.push(t);
                            t += every;
                        }
                    }
                    (None, Some(v), _) | (None, None, Some(v)) => {
                        return ctx.err(v.span(), "call_from and call_until go with call_every");
                    }
                    (None, None, None) => {}
                }
                let mut streams = Vec::new();
                for at in k.stream_at.iter().flatten() {
                    streams.push(Timestamp::ZERO + ctx.duration(at, "stream_at")?);
                }
                let stream_chunks = match &k.stream_chunks {
                    None => 3,
                    Some(v) => match u32::try_from(*v.get_ref()) {
                        Ok(n) if n <= MAX_STREAM_CHUNKS => n,
                        _ => {
                            return ctx.err(
                                v.span(),
                                format!("stream_chunks: expected a count from 0 to {MAX_STREAM_CHUNKS} (MAX_STREAM_CHUNKS)"),
                            )
                        }
                    },
                };
                let mut resets = Vec::new();
                for at in k.reset_failures_at.iter().flatten() {
                    resets.push(Timestamp::ZERO + ctx.duration(at, "reset_failures_at")?);
                }
                if calls.len() + streams.len() + resets.len() > MAX_CALLS {
                    return ctx.err(
                        kind.span(),
                        format!("more than {MAX_CALLS} calls, streams and resets (MAX_CALLS) for one role"),
                    );
                }
                for id in written.ids.clone() {
                    roles.push((
                        NodeId(id),
                        RoleSpec {
                            name: s.defs[id].name.clone(),
                            behaviour,
                            bad_spawns,
                            answer_delay,
                            spawn_time,
                            calls: calls.clone(),
                            streams: streams.clone(),
                            stream_chunks,
                            resets: resets.clone(),
                        },
                    ));
                }
            }
            other => {
                return ctx.err(
                    kind.span(),
                    format!("unknown node kind {other:?}: expected pool or role"),
                )
            }
        }
    }
    let Some(pool) = pool else {
        let span = first_role_span.unwrap_or(0..0);
        return ctx.err(span, "a lilbee scenario needs one node of kind \"pool\"");
    };
    Ok(Setup {
        profile,
        config,
        pool,
        roles,
        invariants: s.invariants.to_vec(),
    })
}
