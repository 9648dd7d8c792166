//! The model's scenario keys: `[config]` (the heartbeat timers) and the
//! `[[node]]` keys of a directory and its peers, checked into a [`Setup`].

use std::sync::Arc;

use heartsim_sim::trace::Trace;
use heartsim_sim::{Duration, NodeId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::invariants::{self, Invariant};
use super::{Behaviour, ChatLine, Directory, NickAuth, Node, Peer, PeerSpec, Profile, Timers};
use crate::scenario::{self, Context, Scenario, ScenarioError, Sections, Violation, S};

/// Heartbeat timers (joinmarket-ng's `HeartbeatConfig`; joinmarket-rs
/// hard-codes the defaults); all must be > 0.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigSection {
    /// Time between sweeps (default "60s").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep_interval: Option<S<String>>,
    /// A peer silent this long is probed (default "600s").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_threshold: Option<S<String>>,
    /// A peer silent this long is evicted outright (default "1500s").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hard_evict: Option<S<String>>,
    /// How long a probe waits for its PONG (default "30s").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pong_wait: Option<S<String>>,
    /// joinmarket-ng HEAD only: nick authentication, as when
    /// `nick_auth_directory_id` is set: "prefer_verified" or
    /// "require_verified" (default: off, upstream's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nick_auth: Option<S<String>>,
    /// How long the directory waits for a nick-authentication proof
    /// (default "30s", at most "30s").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nick_auth_timeout: Option<S<String>>,
    /// joinmarket-ng: broadcast every departure to the other peers and
    /// relay every PUBMSG, as upstream does (default true). `false` is for
    /// runs too large for that traffic (O(peers) writes each): they then
    /// send less than upstream, and a stalled peer blocks less.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broadcasts: Option<S<bool>>,
}

/// A node's keys beyond the common ones. `kind` is `directory` (exactly
/// one), `maker`, `taker` or `directory-peer`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeKeys {
    /// Handshake `features.ping = true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ping: bool,
    /// Handshake `features.nick_auth = true`: the peer proves its nick
    /// when the directory asks (joinmarket-ng HEAD with `nick_auth` set).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nick_auth: bool,
    /// responsive (default) | silent | chatty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behaviour: Option<S<String>>,
    /// chatty: a line this often (first one after one period).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_every: Option<S<String>>,
    /// chatty: pubmsg (default) | malformed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_line: Option<S<String>>,
    /// Send the directory a PING this often.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping_directory_every: Option<S<String>>,
    /// Handshake again this long after the directory closes the connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnect_after: Option<S<String>>,
    /// The handshake's `location-string`, verbatim (malformed ones
    /// included); default: a v3 onion derived from the name for a maker,
    /// NOT-SERVING-ONION for a taker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// What a node is in the scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Directory,
    Peer(Arc<PeerSpec>),
}

/// A checked JoinMarket scenario: one directory and its peers.
#[derive(Debug, Clone)]
pub struct Setup {
    pub profile: Profile,
    pub timers: Timers,
    pub directory: NodeId,
    /// The directory's nick, which its `!orderbook` probes carry.
    pub directory_nick: String,
    /// Indexed by node.
    pub roles: Vec<Role>,
    pub invariants: Vec<Invariant>,
    pub nick_auth: Option<NickAuth>,
    pub broadcasts: bool,
}

impl Setup {
    /// The spec of peer `n`, or `None` for the directory.
    pub fn peer(&self, n: NodeId) -> Option<&PeerSpec> {
        match &self.roles[n.0] {
            Role::Peer(spec) => Some(spec),
            Role::Directory => None,
        }
    }
}

impl scenario::Setup for Setup {
    type Machine = Node;

    fn machine(&self, node: NodeId) -> Node {
        match &self.roles[node.0] {
            Role::Directory => Node::Directory(Box::new(
                Directory::new(self.profile, self.timers, &self.directory_nick)
                    .with_nick_auth(self.nick_auth)
                    .with_broadcasts(self.broadcasts),
            )),
            Role::Peer(spec) => Node::Peer(Peer::new(spec.clone())),
        }
    }

    fn violations(&self, scenario: &Scenario, trace: &Trace) -> Vec<Violation> {
        invariants::check(scenario, trace, &self.invariants)
    }
}

/// Check the model's sections into a [`Setup`].
pub fn validate(s: &Sections<'_>) -> Result<Setup, ScenarioError> {
    let ctx = s.ctx;
    let profile = Profile::from_name(s.profile).expect("the scenario layer checked the profile");
    let invariants = s
        .invariants
        .iter()
        .map(|n| Invariant::from_name(n).expect("the scenario layer checked the names"))
        .collect();

    let mut timers = Timers::default();
    let mut nick_auth = None;
    let mut broadcasts = true;
    if let Some(raw) = &s.config {
        let c: ConfigSection = ctx.read(raw.clone())?;
        nick_auth = read_nick_auth(ctx, profile, &c)?;
        broadcasts = c.broadcasts.as_ref().is_none_or(|b| *b.get_ref());
        for (field, slot, name) in [
            (
                &c.sweep_interval,
                &mut timers.sweep_interval,
                "sweep_interval",
            ),
            (
                &c.idle_threshold,
                &mut timers.idle_threshold,
                "idle_threshold",
            ),
            (&c.hard_evict, &mut timers.hard_evict, "hard_evict"),
            (&c.pong_wait, &mut timers.pong_wait, "pong_wait"),
        ] {
            if let Some(v) = field {
                *slot = ctx.positive(v, name)?;
            }
        }
    }

    let mut roles = Vec::with_capacity(s.defs.len());
    let mut directory = None;
    for written in &s.nodes {
        let n: NodeKeys = ctx.read(written.keys.clone())?;
        let kind = &written.section.kind;
        let peer_kind = match kind.get_ref().as_str() {
            "directory" => {
                if written.section.count.is_some() {
                    return ctx.err(kind.span(), "a directory cannot have a count");
                }
                if directory.is_some() {
                    return ctx.err(kind.span(), "only one node may be the directory");
                }
                directory = Some(NodeId(written.ids.start));
                None
            }
            k @ ("maker" | "taker" | "directory-peer") => Some(k),
            other => {
                return ctx.err(
                    kind.span(),
                    format!("unknown node kind {other:?}: expected directory, maker, taker or directory-peer"),
                );
            }
        };
        let behaviour = match n
            .behaviour
            .as_ref()
            .map(|b| (b.get_ref().as_str(), b.span()))
        {
            None | Some(("responsive", _)) => Behaviour::Responsive,
            Some(("silent", _)) => Behaviour::Silent,
            Some(("chatty", span)) => {
                let Some(every) = &n.chat_every else {
                    return ctx.err(
                        span,
                        "behaviour \"chatty\" needs chat_every, like chat_every = \"5m\"",
                    );
                };
                let line = match n
                    .chat_line
                    .as_ref()
                    .map(|l| (l.get_ref().as_str(), l.span()))
                {
                    None | Some(("pubmsg", _)) => ChatLine::PubMsg,
                    Some(("malformed", _)) => ChatLine::Malformed,
                    Some((other, span)) => {
                        return ctx.err(
                            span,
                            format!("unknown chat_line {other:?}: expected pubmsg or malformed"),
                        );
                    }
                };
                Behaviour::Chatty {
                    every: ctx.positive(every, "chat_every")?,
                    line,
                }
            }
            Some((other, span)) => {
                return ctx.err(
                    span,
                    format!("unknown behaviour {other:?}: expected responsive, silent or chatty"),
                );
            }
        };
        let optional =
            |v: &Option<S<String>>, what| v.as_ref().map(|v| ctx.positive(v, what)).transpose();
        let ping_directory_every = optional(&n.ping_directory_every, "ping_directory_every")?;
        let reconnect_after = optional(&n.reconnect_after, "reconnect_after")?;
        for def in &s.defs[written.ids.clone()] {
            roles.push(match peer_kind {
                None => Role::Directory,
                Some(kind) => Role::Peer(Arc::new(PeerSpec {
                    directory: NodeId(usize::MAX), // resolved below
                    nick: def.name.as_str().into(),
                    maker: kind == "maker",
                    ping: n.ping,
                    is_directory: kind == "directory-peer",
                    nick_auth: n.nick_auth,
                    location: match &n.location {
                        Some(loc) => loc.as_str().into(),
                        None => PeerSpec::default_location(&def.name, kind == "maker"),
                    },
                    behaviour,
                    ping_directory_every,
                    reconnect_after,
                })),
            });
        }
    }
    let Some(directory) = directory else {
        return ctx.err(
            0..0,
            "no node has kind = \"directory\": a joinmarket-directory scenario needs exactly one",
        );
    };
    for role in &mut roles {
        if let Role::Peer(spec) = role {
            Arc::make_mut(spec).directory = directory;
        }
    }
    Ok(Setup {
        profile,
        timers,
        directory,
        directory_nick: s.defs[directory.0].name.clone(),
        roles,
        invariants,
        nick_auth,
        broadcasts,
    })
}

/// `[config] nick_auth` and `nick_auth_timeout`: joinmarket-ng HEAD's
/// `nick_auth_mode` with a directory id set; `nick_auth_timeout` has
/// `gt=0, le=30` (`jmcore/settings.py`) and the server clamps it to at
/// least 0.1 s (`server.py` ~113-114).
fn read_nick_auth(
    ctx: &Context<'_>,
    profile: Profile,
    c: &ConfigSection,
) -> Result<Option<NickAuth>, ScenarioError> {
    let Some(mode) = &c.nick_auth else {
        if let Some(t) = &c.nick_auth_timeout {
            return ctx.err(t.span(), "nick_auth_timeout needs nick_auth");
        }
        return Ok(None);
    };
    if profile != Profile::JoinmarketNg {
        return ctx.err(
            mode.span(),
            format!(
                "nick_auth needs profile \"joinmarket-ng\" (HEAD): {} has no nick authentication",
                profile.name()
            ),
        );
    }
    let require = match mode.get_ref().as_str() {
        "prefer_verified" => false,
        "require_verified" => true,
        other => {
            return ctx.err(
                mode.span(),
                format!(
                    "unknown nick_auth {other:?}: expected prefer_verified or require_verified"
                ),
            );
        }
    };
    let mut timeout = Duration::from_secs(30);
    if let Some(t) = &c.nick_auth_timeout {
        timeout = ctx.positive(t, "nick_auth_timeout")?;
        if timeout > Duration::from_secs(30) {
            return ctx.err(t.span(), "nick_auth_timeout must be at most 30s");
        }
        timeout = timeout.max(Duration::from_ms(100));
    }
    Ok(Some(NickAuth { require, timeout }))
}
