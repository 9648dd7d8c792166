//! The model's scenario keys, checked into a [`Setup`].
//!
//! Node kinds: `swarmctl` (exactly one: the swarm controller), `api` (at
//! most one: the main web API, on swarmctl's host so that they share the
//! database file), `bus` (a host's bus daemon), `agent` (upstream's agent)
//! and `impostor` (an agent's loop with another identity; not upstream
//! code, so its `interval` may differ).

use std::collections::BTreeSet;
use std::sync::Arc;

use heartsim_sim::trace::Trace;
use heartsim_sim::{Duration, NodeId, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::db::{Db, HostRow, TopologyRow};
use super::msg::{Cert, Status, Topology};
use super::{
    invariants, Action, Agent, AgentSpec, Api, ApiSpec, Bus, Node, Shape, Swarmctl, INTERVAL,
};
use crate::scenario::{self, Context, Scenario, ScenarioError, Sections, Violation, S};

/// `[config]`: what the master's database holds besides the hosts.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigSection {
    /// Active topologies pinned to hosts: `{ id, host_uuid, hash }`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topologies: Vec<TopologyKeys>,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopologyKeys {
    pub id: S<String>,
    pub host_uuid: S<String>,
    /// The canonical hash the master expects.
    pub hash: S<String>,
}

/// An operator action of the `api` node.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionKeys {
    /// When (the API's clock).
    pub at: S<String>,
    /// decommission | enrol | deploy | mutate.
    pub action: S<String>,
    /// The host's uuid.
    pub host_uuid: S<String>,
    /// enrol: the name (default: the uuid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<S<String>>,
    /// enrol: the new certificate's name (its fingerprint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<S<String>>,
    /// enrol: the agent node at the host's address (none: no address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<S<String>>,
    /// deploy, mutate: the decky.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decky: Option<S<String>>,
}

/// A node's keys beyond the common ones (which kinds read each: its doc).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeKeys {
    /// agent, impostor: `DECNET_HOST_UUID` claimed (default: the node's
    /// name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_uuid: Option<S<String>>,
    /// agent: `DECNET_HOST_UUID` and `DECNET_MASTER_HOST` are set (default
    /// true; false: the loop does not start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<S<bool>>,
    /// agent: the worker SSL context builds (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<S<bool>>,
    /// agent, impostor: the client certificate: "own" (default: a
    /// CA-signed certificate named after the node), "none", "untrusted"
    /// (not signed by the DECNET CA), or the name of another CA-signed
    /// certificate (another node's name presents that node's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<S<String>>,
    /// agent, impostor: the master's database has a row for `host_uuid`
    /// pinning this node's own certificate (default: true for an agent,
    /// false for an impostor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrolled: Option<S<bool>>,
    /// agent, impostor: upstream (default) | not-json | no-host-uuid |
    /// no-status | status-not-object | host-uuid-not-string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<S<String>>,
    /// impostor: its loop's period (default "30s").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<S<String>>,
    /// agent, impostor: how long building the body takes (default "0s").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tick_time: Option<S<String>>,
    /// agent: `status.deployed` (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployed: Option<S<bool>>,
    /// agent: deckies reported running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deckies: Vec<S<String>>,
    /// agent: deckies reported not running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<S<String>>,
    /// agent: the applied topology reported (`{topology_id,
    /// applied_version_hash}`), as "id:hash"; absent: none reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology: Option<S<String>>,
    /// agent: the bus node it publishes `system.agent.health` to; it must
    /// run on the same `[[host]]` (the bus is host-local).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<S<String>>,
    /// agent: how long a /deploy or /mutate runs (default "1m").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_time: Option<S<String>>,
    /// agent: the operations fail with this error (default: they succeed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_error: Option<S<String>>,
    /// api: the dashboard polls GET /workers this often (first one period
    /// after start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub panel_every: Option<S<String>>,
    /// api: the dashboard polls GET /swarm/hosts (probing every host with
    /// an address) this often (first one period after start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_every: Option<S<String>>,
    /// api: operator actions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionKeys>,
}

/// What a node is.
#[derive(Clone, Debug)]
pub enum Role {
    Agent(Arc<AgentSpec>),
    Swarmctl,
    Api(Arc<ApiSpec>),
    Bus,
}

/// A checked DECNET scenario.
#[derive(Clone, Debug)]
pub struct Setup {
    pub roles: Vec<Role>,
    /// The database before anything ran (hosts enrolled by the scenario).
    pub initial: Arc<Db>,
    pub invariants: Vec<&'static str>,
}

impl scenario::Setup for Setup {
    type Machine = Node;

    fn machine(&self, node: NodeId) -> Node {
        match &self.roles[node.0] {
            Role::Agent(spec) => Node::Agent(Box::new(Agent::new(spec.clone()))),
            Role::Swarmctl => Node::Swarmctl(Swarmctl::new(self.initial.clone())),
            Role::Api(spec) => Node::Api(Box::new(Api::new(spec.clone(), self.initial.clone()))),
            Role::Bus => Node::Bus(Bus::default()),
        }
    }

    fn violations(&self, scenario: &Scenario, trace: &Trace) -> Vec<Violation> {
        invariants::check(self, scenario, trace)
    }
}

/// A key as written (its span, if present) and the kinds that read it.
type KindKey<'a> = (&'a str, Option<std::ops::Range<usize>>, &'a [&'a str]);

/// Which kinds read each key.
fn check_kinds(ctx: &Context<'_>, kind: &str, k: &NodeKeys) -> Result<(), ScenarioError> {
    let agentish: &[&str] = &["agent", "impostor"];
    let span = |o: Option<&S<String>>| o.map(|v| v.span());
    let bspan = |o: Option<&S<bool>>| o.map(|v| v.span());
    let keys: [KindKey<'_>; 17] = [
        ("host_uuid", span(k.host_uuid.as_ref()), agentish),
        ("identity", bspan(k.identity.as_ref()), &["agent"]),
        ("tls", bspan(k.tls.as_ref()), &["agent"]),
        ("certificate", span(k.certificate.as_ref()), agentish),
        ("enrolled", bspan(k.enrolled.as_ref()), agentish),
        ("body", span(k.body.as_ref()), agentish),
        ("interval", span(k.interval.as_ref()), &["impostor"]),
        ("tick_time", span(k.tick_time.as_ref()), agentish),
        ("deployed", bspan(k.deployed.as_ref()), &["agent"]),
        ("deckies", k.deckies.first().map(|v| v.span()), &["agent"]),
        ("degraded", k.degraded.first().map(|v| v.span()), &["agent"]),
        ("topology", span(k.topology.as_ref()), &["agent"]),
        ("bus", span(k.bus.as_ref()), &["agent"]),
        (
            "operation_time",
            span(k.operation_time.as_ref()),
            &["agent"],
        ),
        (
            "operation_error",
            span(k.operation_error.as_ref()),
            &["agent"],
        ),
        ("panel_every", span(k.panel_every.as_ref()), &["api"]),
        ("probe_every", span(k.probe_every.as_ref()), &["api"]),
    ];
    for (name, at, kinds) in keys {
        if let Some(at) = at {
            if !kinds.contains(&kind) {
                return ctx.err(
                    at,
                    format!(
                        "`{name}` is a key of {} nodes, not of {kind} nodes",
                        kinds.join(" and ")
                    ),
                );
            }
        }
    }
    if let Some(a) = k.actions.first() {
        if kind != "api" {
            return ctx.err(
                a.at.span(),
                format!("`actions` is a key of the api node, not of {kind} nodes"),
            );
        }
    }
    Ok(())
}

pub fn validate(s: &Sections<'_>) -> Result<Setup, ScenarioError> {
    let ctx = s.ctx;
    let config: ConfigSection = match &s.config {
        Some(raw) => ctx.read(raw.clone())?,
        None => ConfigSection::default(),
    };
    let node_of = |name: &S<String>| -> Result<NodeId, ScenarioError> {
        match s.defs.iter().position(|d| d.name == *name.get_ref()) {
            Some(i) => Ok(NodeId(i)),
            None => ctx.err(
                name.span(),
                format!("no node is named {:?}", name.get_ref()),
            ),
        }
    };
    // Kinds first: swarmctl exactly once, api at most once.
    let mut keys = Vec::with_capacity(s.nodes.len());
    let (mut swarmctl, mut api) = (None, None);
    for w in &s.nodes {
        let k: NodeKeys = ctx.read(w.keys.clone())?;
        let kind = &w.section.kind;
        match kind.get_ref().as_str() {
            "swarmctl" | "api" if w.ids.len() != 1 => {
                return ctx.err(
                    kind.span(),
                    format!("there is one {} process: no count", kind.get_ref()),
                );
            }
            "swarmctl" if swarmctl.is_some() => {
                return ctx.err(kind.span(), "only one node may be the swarmctl")
            }
            "api" if api.is_some() => return ctx.err(kind.span(), "only one node may be the api"),
            "swarmctl" => swarmctl = Some(NodeId(w.ids.start)),
            "api" => api = Some(NodeId(w.ids.start)),
            "agent" | "impostor" | "bus" => {}
            other => {
                return ctx.err(
                    kind.span(),
                    format!(
                    "unknown node kind {other:?}: expected swarmctl, api, bus, agent or impostor"
                ),
                )
            }
        }
        check_kinds(ctx, kind.get_ref(), &k)?;
        keys.push(k);
    }
    let Some(master) = swarmctl else {
        let span = s
            .nodes
            .first()
            .map(|w| w.section.kind.span())
            .unwrap_or_default();
        return ctx.err(
            span,
            "a decnet scenario needs one node of kind \"swarmctl\" (the master)",
        );
    };
    let disk = |n: NodeId| s.defs[n.0].host.map(|h| s.hosts[h].disk_of.unwrap_or(h));
    if let Some(api) = api {
        if disk(api).is_none() || disk(api) != disk(master) {
            let w = s
                .nodes
                .iter()
                .find(|w| w.ids.contains(&api.0))
                .expect("the api was written");
            return ctx.err(
                w.section.kind.span(),
                "the api and the swarmctl share the master's database: put both on one [[host]]",
            );
        }
    }

    let mut db = Db::default();
    for t in &config.topologies {
        db.topologies.insert(
            t.id.get_ref().clone(),
            TopologyRow {
                host: t.host_uuid.get_ref().clone(),
                hash: t.hash.get_ref().clone(),
                needs_resync: false,
            },
        );
    }
    let mut roles: Vec<Option<Role>> = vec![None; s.defs.len()];
    for (w, k) in s.nodes.iter().zip(&keys) {
        let kind = w.section.kind.get_ref().as_str();
        for id in w.ids.clone() {
            let name = s.defs[id].name.as_str();
            roles[id] = Some(match kind {
                "swarmctl" => Role::Swarmctl,
                "bus" => Role::Bus,
                "api" => {
                    let host = s.defs[id].host;
                    let bus = s
                        .defs
                        .iter()
                        .position(|d| d.kind == "bus" && host.is_some() && d.host == host)
                        .map(NodeId);
                    Role::Api(Arc::new(api_spec(ctx, k, &node_of, bus)?))
                }
                _ => {
                    let impostor = kind == "impostor";
                    let spec = agent_spec(ctx, s, id, impostor, k, master, &node_of)?;
                    let own = k.enrolled.as_ref().map_or(!impostor, |e| *e.get_ref());
                    if let (true, Some(uuid)) = (own, &spec.host_uuid) {
                        db.hosts.insert(
                            uuid.to_string(),
                            HostRow {
                                name: name.into(),
                                fingerprint: name.into(),
                                status: "enrolled".into(),
                                last_heartbeat: None,
                                // Enrolment always records an address
                                // (`SwarmEnrollRequest`): an enrolled
                                // impostor's is its own host, where nothing
                                // listens (a probe is refused).
                                address: Some(id),
                            },
                        );
                    }
                    Role::Agent(Arc::new(spec))
                }
            });
        }
    }
    // Upstream mints a fresh `uuid4` per enrolment (`api_enroll_host.py`
    // l. 88): an `enrol` can never reuse a row's uuid, so a scenario that
    // makes one do so is refused rather than silently overwriting the row.
    let mut taken: BTreeSet<&str> = db.hosts.keys().map(String::as_str).collect();
    for k in &keys {
        for a in k.actions.iter().filter(|a| a.action.get_ref() == "enrol") {
            if !taken.insert(a.host_uuid.get_ref().as_str()) {
                return ctx.err(
                    a.host_uuid.span(),
                    format!(
                        "host_uuid {:?} already has a row: an enrol mints a new uuid (upstream's uuid4), so give it one no other host or enrol uses",
                        a.host_uuid.get_ref()
                    ),
                );
            }
        }
    }
    Ok(Setup {
        roles: roles
            .into_iter()
            .map(|r| r.expect("every node has a role"))
            .collect(),
        initial: Arc::new(db),
        invariants: s.invariants.to_vec(),
    })
}

fn at(ctx: &Context<'_>, v: &S<String>, what: &str) -> Result<Timestamp, ScenarioError> {
    Ok(Timestamp::ZERO + ctx.duration(v, what)?)
}

fn api_spec(
    ctx: &Context<'_>,
    k: &NodeKeys,
    node_of: &dyn Fn(&S<String>) -> Result<NodeId, ScenarioError>,
    bus: Option<NodeId>,
) -> Result<ApiSpec, ScenarioError> {
    let mut actions = Vec::with_capacity(k.actions.len());
    for a in &k.actions {
        let when = at(ctx, &a.at, "at")?;
        let uuid: Arc<str> = a.host_uuid.get_ref().as_str().into();
        let decky = || match &a.decky {
            Some(d) => Ok(Arc::<str>::from(d.get_ref().as_str())),
            None => ctx.err(a.action.span(), "a deploy or mutate needs `decky`"),
        };
        let action = match a.action.get_ref().as_str() {
            "decommission" => Action::Decommission { uuid },
            "enrol" => Action::Enrol {
                name: a
                    .name
                    .as_ref()
                    .map_or_else(|| uuid.clone(), |n| n.get_ref().as_str().into()),
                fingerprint: match &a.certificate {
                    Some(c) => c.get_ref().as_str().into(),
                    None => {
                        return ctx.err(
                            a.action.span(),
                            "an enrol needs `certificate` (the new certificate's name)",
                        )
                    }
                },
                address: a.node.as_ref().map(node_of).transpose()?.map(|n| n.0),
                uuid,
            },
            op @ ("deploy" | "mutate") => Action::Deploy {
                decky: decky()?,
                operation: op.into(),
                uuid,
            },
            other => {
                return ctx.err(
                    a.action.span(),
                    format!(
                        "unknown action {other:?}: expected decommission, enrol, deploy or mutate"
                    ),
                )
            }
        };
        actions.push((when, action));
    }
    actions.sort_by_key(|(t, _)| *t);
    Ok(ApiSpec {
        panel_every: k
            .panel_every
            .as_ref()
            .map(|v| ctx.positive(v, "panel_every"))
            .transpose()?,
        probe_every: k
            .probe_every
            .as_ref()
            .map(|v| ctx.positive(v, "probe_every"))
            .transpose()?,
        actions,
        bus,
    })
}

fn agent_spec(
    ctx: &Context<'_>,
    s: &Sections<'_>,
    id: usize,
    impostor: bool,
    k: &NodeKeys,
    master: NodeId,
    node_of: &dyn Fn(&S<String>) -> Result<NodeId, ScenarioError>,
) -> Result<AgentSpec, ScenarioError> {
    let name = s.defs[id].name.as_str();
    let cert = match k.certificate.as_ref().map(|c| c.get_ref().as_str()) {
        None | Some("own") => Cert::Signed(name.into()),
        Some("none") => Cert::None,
        Some("untrusted") => Cert::Untrusted(name.into()),
        Some("") => {
            return ctx.err(
                k.certificate.as_ref().expect("some").span(),
                "certificate: expected own, none, untrusted or a certificate's name",
            )
        }
        Some(other) => Cert::Signed(other.into()),
    };
    let shape = match &k.body {
        None => Shape::Upstream,
        Some(b) => match Shape::ALL.iter().find(|(n, _)| *n == b.get_ref().as_str()) {
            Some((_, shape)) => *shape,
            None => {
                let names: Vec<_> = Shape::ALL.iter().map(|(n, _)| *n).collect();
                return ctx.err(
                    b.span(),
                    format!(
                        "unknown body {:?}: expected {}",
                        b.get_ref(),
                        names.join(", ")
                    ),
                );
            }
        },
    };
    let topology = match &k.topology {
        None => None,
        Some(t) => match t.get_ref().split_once(':') {
            Some((id, hash)) if !id.is_empty() => Some(Topology {
                id: id.into(),
                hash: hash.into(),
            }),
            _ => {
                return ctx.err(
                    t.span(),
                    "topology: expected \"<topology_id>:<applied_version_hash>\"",
                )
            }
        },
    };
    let bus = match &k.bus {
        None => None,
        Some(b) => {
            let n = node_of(b)?;
            if s.defs[n.0].kind != "bus" {
                return ctx.err(b.span(), format!("{:?} is not a bus node", b.get_ref()));
            }
            if s.defs[id].host.is_none() || s.defs[id].host != s.defs[n.0].host {
                return ctx.err(
                    b.span(),
                    "the DECNET bus is a host-local UNIX socket (decnet/bus/worker.py l. 10-12): \
                     put the agent on the bus's [[host]]",
                );
            }
            Some(n)
        }
    };
    let deckies = k
        .deckies
        .iter()
        .map(|d| (Arc::<str>::from(d.get_ref().as_str()), true))
        .chain(
            k.degraded
                .iter()
                .map(|d| (Arc::<str>::from(d.get_ref().as_str()), false)),
        )
        .collect();
    let dur =
        |v: &Option<S<String>>, what: &str, default: Duration| -> Result<Duration, ScenarioError> {
            v.as_ref().map_or(Ok(default), |v| ctx.duration(v, what))
        };
    let identity = k.identity.as_ref().is_none_or(|v| *v.get_ref());
    Ok(AgentSpec {
        master,
        host_uuid: identity.then(|| {
            k.host_uuid
                .as_ref()
                .map_or(name, |u| u.get_ref().as_str())
                .into()
        }),
        tls: k.tls.as_ref().is_none_or(|v| *v.get_ref()),
        cert,
        shape,
        interval: match &k.interval {
            Some(v) => ctx.positive(v, "interval")?,
            None => INTERVAL,
        },
        tick_time: dur(&k.tick_time, "tick_time", Duration::ZERO)?,
        status: Status {
            deployed: k.deployed.as_ref().is_some_and(|v| *v.get_ref()),
            deckies,
        },
        topology,
        bus,
        operation_time: dur(&k.operation_time, "operation_time", Duration::from_secs(60))?,
        operation_error: k
            .operation_error
            .as_ref()
            .map(|e| e.get_ref().as_str().into()),
        serves: !impostor,
        state_dir: format!("/etc/decnet/agent-{name}").into(),
    })
}
