//! The master's main web API (`decnet/web/api.py`): the lifecycle sweep at
//! startup, the workers panel fed by the bus (`decnet/web/worker_registry.py`),
//! the dashboard's `GET /swarm/hosts` probe
//! (`decnet/web/router/swarm_mgmt/api_list_hosts.py`), deploys dispatched to
//! agents (`SwarmDeployStrategy`, `decnet/lifecycle/strategies.py`) and the
//! operator's decommission and enrolment. The dashboard's polls are a
//! scenario-given poller standing in for the browser.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use heartsim_sim::{ConnId, Deadline, Duration, Input, NodeId, Now, Outbox, Timestamp};

use super::db::{Access, Db, HostRow};
use super::https::{Call, Outcome, CONTROL_TIMEOUTS};
use super::kind;
use super::msg::{Cert, Msg, Request};

/// `OK_WINDOW_SECONDS = 90.0` (`worker_registry.py` l. 59).
pub const OK_WINDOW: Duration = Duration::from_secs(90);
/// `timedelta(hours=1)` (`decnet/web/api.py` l. 140).
pub const SWEEP_AGE: Duration = Duration::from_secs(3600);

/// What a call to a row without an address (the dashboard's bundle flow
/// enrols one with `address: ""` until the host fetches its tarball,
/// `api_enroll_bundle.py` l. 159-175) raises: the pin's
/// `socket.create_connection(("", 8765))` (`swarm/client.py` l. 179) fails
/// in `getaddrinfo` before any packet, as `f"{type(exc).__name__}: {exc}"`.
/// The probe skips such rows (`api_list_hosts.py` l. 35-36).
const NO_ADDRESS: &str = "gaierror: [Errno -2] Name or service not known";

/// Something the operator does at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `DELETE /swarm/hosts/{uuid}` (`api_decommission_host.py` l. 40-62).
    Decommission { uuid: Arc<str> },
    /// `POST /swarm/enroll` (`api_enroll_host.py` l. 49-100): 409 if the
    /// name is enrolled.
    Enrol {
        name: Arc<str>,
        uuid: Arc<str>,
        fingerprint: Arc<str>,
        address: Option<usize>,
    },
    /// `POST /deckies/deploy` of one decky on a host: a lifecycle row, then
    /// `/deploy` to the agent.
    Deploy {
        decky: Arc<str>,
        operation: Arc<str>,
        uuid: Arc<str>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiSpec {
    /// The dashboard polls `GET /workers` this often.
    pub panel_every: Option<Duration>,
    /// The dashboard polls `GET /swarm/hosts` (which probes) this often.
    pub probe_every: Option<Duration>,
    /// On the API's monotonic clock, in time order.
    pub actions: Vec<(Timestamp, Action)>,
    /// The bus daemon on the master's host, if any.
    pub bus: Option<NodeId>,
}

#[derive(Clone, Debug)]
enum Job {
    Sweep,
    Probe,
    ProbeResult {
        uuid: String,
        ok: bool,
    },
    Act(Action),
    DeployFailed {
        id: u64,
        error: String,
    },
    /// The decommission's cleanup once the self-destruct call is over.
    Delete {
        uuid: Arc<str>,
    },
}

#[derive(Clone, Debug)]
enum Purpose {
    Probe { uuid: String },
    Deploy { id: u64 },
    SelfDestruct { uuid: Arc<str> },
}

#[derive(Clone, Debug)]
pub struct Api {
    spec: Arc<ApiSpec>,
    initial: Arc<Db>,
    db: Access<Job>,
    /// `WorkerRegistry._seen`: worker -> the payload's `ts`.
    seen: BTreeMap<Arc<str>, u64>,
    /// What the last panel poll showed.
    shown: BTreeMap<Arc<str>, &'static str>,
    next_panel: Option<Timestamp>,
    next_probe: Option<Timestamp>,
    next_action: usize,
    calls: Vec<(Call, Purpose)>,
    next_token: u64,
    /// The registry's bus subscription.
    bus_conn: Option<ConnId>,
}

/// The master's operator certificate (`OPERATOR_CNS`, `_mtls.py` l. 46).
fn operator_cert() -> Cert {
    Cert::Signed("decnet-master".into())
}

impl Api {
    pub fn new(spec: Arc<ApiSpec>, initial: Arc<Db>) -> Self {
        Api {
            spec,
            initial,
            db: Access::default(),
            seen: BTreeMap::new(),
            shown: BTreeMap::new(),
            next_panel: None,
            next_probe: None,
            next_action: 0,
            calls: Vec::new(),
            next_token: 0,
            bus_conn: None,
        }
    }

    pub fn handle(&mut self, now: Now, input: Input<Msg>, out: &mut Outbox<Msg>) {
        let t = now.mono;
        match input {
            Input::Start => {
                Access::<Job>::mkdir(out);
                // The lifespan's sweep (`api.py` l. 133-147).
                self.db.begin(Job::Sweep, out);
                self.next_panel = self.spec.panel_every.map(|d| t + d);
                self.next_probe = self.spec.probe_every.map(|d| t + d);
                self.next_action = self
                    .spec
                    .actions
                    .iter()
                    .take_while(|(at, _)| *at < t)
                    .count();
                // `get_registry().start(_bus)` subscribes `system.*.health`
                // (`api.py` l. 218-223, `worker_registry.py` l. 112-150).
                if let Some(bus) = self.spec.bus {
                    let conn = out.connect(bus);
                    out.send(conn, Msg::Subscribe);
                    self.bus_conn = Some(conn);
                }
                self.on_timeout(now, out);
            }
            Input::Stop => {}
            Input::Timeout => self.on_timeout(now, out),
            Input::Recv {
                msg: Msg::File(done),
                ..
            } => {
                if let Some((job, old)) = self.db.on_file(&done, &self.initial) {
                    let mut db = old.clone();
                    self.run(now, job, &mut db, out);
                    self.db.commit(&old, &db, out);
                }
            }
            Input::Recv { .. } => {}
            // `WorkerRegistry._on_event` -> `record(name, ts, payload)`
            // (l. 151-169): `_seen[worker] = {"ts": ts, ..}` (l. 76-77),
            // the last one taken, whatever its `ts`.
            Input::Data {
                conn,
                msg: Msg::Publish { worker, ts_us },
                ..
            } if Some(conn) == self.bus_conn => {
                out.record(
                    kind::WORKER_SEEN,
                    self.spec.bus,
                    None,
                    Some(format!("worker={worker} ts={}", Timestamp::from_us(ts_us)).into()),
                );
                self.seen.insert(worker, ts_us);
            }
            // The subscription ends with the bus's connection and is never
            // renewed (`unix_client.py` l. 18-21, 260-264; `_run` returns,
            // `worker_registry.py` l. 141-150): `seen` freezes.
            Input::ConnectFailed { conn, .. }
            | Input::Closed { conn, .. }
            | Input::Reset { conn, .. }
                if Some(conn) == self.bus_conn =>
            {
                let failed = matches!(input, Input::ConnectFailed { .. });
                let reason = if failed { "unavailable" } else { "lost" };
                out.record(kind::BUS, self.spec.bus, Some(reason.into()), None);
                self.bus_conn = None;
            }
            input => {
                let Some(i) = self.calls.iter().position(|(c, _)| c.owns(&input)) else {
                    return;
                };
                if let Some(outcome) = self.calls[i].0.on_input(t, &input, out) {
                    let (call, purpose) = self.calls.remove(i);
                    self.call_done(call.peer, purpose, &outcome, out);
                }
            }
        }
    }

    fn on_timeout(&mut self, now: Now, out: &mut Outbox<Msg>) {
        let t = now.mono;
        let mut i = 0;
        while i < self.calls.len() {
            if self.calls[i].0.deadline() <= t {
                if let Some(outcome) = self.calls[i].0.on_input(t, &Input::Timeout, out) {
                    let (call, purpose) = self.calls.remove(i);
                    self.call_done(call.peer, purpose, &outcome, out);
                    continue;
                }
            }
            i += 1;
        }
        while let Some((at, action)) = self.spec.actions.get(self.next_action) {
            if *at > t {
                break;
            }
            self.next_action += 1;
            self.db.begin(Job::Act(action.clone()), out);
        }
        if let (Some(at), Some(every)) = (self.next_panel, self.spec.panel_every) {
            if at <= t {
                self.panel(now, out);
                self.next_panel = Some(at + every);
            }
        }
        if let (Some(at), Some(every)) = (self.next_probe, self.spec.probe_every) {
            if at <= t {
                self.db.begin(Job::Probe, out);
                self.next_probe = Some(at + every);
            }
        }
    }

    /// `GET /workers`: `WorkerRegistry.snapshot()` (l. 79-110), the `agent`
    /// row; recorded when it changes.
    fn panel(&mut self, now: Now, out: &mut Outbox<Msg>) {
        let worker: Arc<str> = "agent".into();
        let (status, msg) = match self.seen.get(&worker) {
            None => ("unknown", "never seen".to_string()),
            Some(&ts) => {
                // `seconds_since = max(0.0, now - ts)`; `ok` if `< 90`.
                let since = now.wall.as_us().saturating_sub(ts);
                let status = if since < OK_WINDOW.as_us() {
                    "ok"
                } else {
                    "stale"
                };
                (
                    status,
                    format!("seconds_since={}", Duration::from_us(since)),
                )
            }
        };
        if self.shown.get(&worker) != Some(&status) {
            self.shown.insert(worker.clone(), status);
            out.record(
                kind::WORKER_STATUS,
                None,
                Some(status.into()),
                Some(format!("worker={worker} {msg}").into()),
            );
        }
    }

    /// `async with AgentClient(host=row) as agent:` then the request: the
    /// pin connection first when the row has a fingerprint
    /// (`swarm/client.py` l. 195-212; `https` module docs).
    fn start_call(
        &mut self,
        now: Now,
        row: &HostRow,
        to: usize,
        request: Request,
        purpose: Purpose,
        out: &mut Outbox<Msg>,
    ) {
        let token = self.next_token;
        self.next_token += 1;
        let pin = (!row.fingerprint.is_empty()).then(|| Arc::from(row.fingerprint.as_str()));
        let call = Call::start(
            now.mono,
            NodeId(to),
            request,
            operator_cert(),
            CONTROL_TIMEOUTS,
            token,
            pin,
            out,
        );
        self.calls.push((call, purpose));
    }

    fn run(&mut self, now: Now, job: Job, db: &mut Db, out: &mut Outbox<Msg>) {
        let wall = now.wall.as_us();
        match job {
            Job::Sweep => db.sweep(wall),
            // `asyncio.gather(_probe_and_update(r) for r in rows)`: hosts
            // without an address are skipped (l. 35-36).
            Job::Probe => {
                for (uuid, h) in &db.hosts {
                    if let Some(to) = h.address {
                        let purpose = Purpose::Probe { uuid: uuid.clone() };
                        self.start_call(now, h, to, Request::Health, purpose, out);
                    }
                }
            }
            // `update_swarm_host(uuid, patch)`: nothing if the row is gone.
            Job::ProbeResult { uuid, ok } => {
                if let Some(h) = db.hosts.get_mut(&uuid) {
                    if ok {
                        h.status = "active".into();
                        h.last_heartbeat = Some(wall);
                    } else {
                        h.status = "unreachable".into();
                    }
                }
            }
            Job::Act(Action::Decommission { uuid }) => {
                out.record(
                    kind::OPERATOR,
                    None,
                    Some("decommission".into()),
                    Some(format!("uuid={uuid}").into()),
                );
                // `get_swarm_host_by_uuid`, 404 if gone; then the
                // best-effort `async with AgentClient(host=row) as agent:
                // await agent.self_destruct()` (`api_decommission_host.py`
                // l. 40-58), and only after it the deletes (l. 59-60). A
                // row without an address (the bundle flow's `""`) fails the
                // pin's `getaddrinfo` at once: the exception is logged and
                // the cleanup runs.
                match db.hosts.get(&*uuid) {
                    None => {}
                    Some(h) => match h.address {
                        Some(to) => {
                            let purpose = Purpose::SelfDestruct { uuid };
                            self.start_call(now, h, to, Request::SelfDestruct, purpose, out);
                        }
                        None => {
                            out.record(
                                kind::OPERATOR,
                                None,
                                Some("self-destruct failed".into()),
                                Some(format!("uuid={uuid} {NO_ADDRESS}").into()),
                            );
                            delete_host(db, &uuid);
                        }
                    },
                }
            }
            Job::Delete { uuid } => delete_host(db, &uuid),
            Job::Act(Action::Enrol {
                name,
                uuid,
                fingerprint,
                address,
            }) => {
                if db.hosts.values().any(|h| *h.name == *name) {
                    out.record(
                        kind::OPERATOR,
                        None,
                        Some("enrol refused 409".into()),
                        Some(format!("name={name}").into()),
                    );
                } else {
                    out.record(
                        kind::OPERATOR,
                        None,
                        Some("enrol".into()),
                        Some(format!("name={name} uuid={uuid}").into()),
                    );
                    db.hosts.insert(
                        uuid.to_string(),
                        HostRow {
                            name: name.to_string(),
                            fingerprint: fingerprint.to_string(),
                            status: "enrolled".into(),
                            last_heartbeat: None,
                            address,
                        },
                    );
                }
            }
            Job::Act(Action::Deploy {
                decky,
                operation,
                uuid,
            }) => {
                let id = db.open_lifecycle(wall, &decky, &operation, &uuid);
                // `SwarmDeployStrategy.execute` commits the row `running`
                // before the dispatch (`lifecycle/strategies.py` l. 181-
                // 234); `_resolve_swarm_host` raising then fails it in a
                // commit of its own, at once.
                let error = match db.hosts.get(&*uuid).map(|h| (h, h.address)) {
                    Some((h, Some(to))) => {
                        let request = Request::Operation { decky, operation };
                        self.start_call(now, h, to, request, Purpose::Deploy { id }, out);
                        None
                    }
                    Some((_, None)) => Some(NO_ADDRESS.to_string()),
                    // `_resolve_swarm_host` (`engine/deployer.py` l. 851-857).
                    None => Some(format!(
                        "ValueError: topology pinned to unknown swarm host '{uuid}'"
                    )),
                };
                if let Some(error) = error {
                    self.db.defer(Job::DeployFailed { id, error });
                }
            }
            Job::DeployFailed { id, error } => fail(db, id, wall, error),
        }
    }

    fn call_done(
        &mut self,
        peer: NodeId,
        purpose: Purpose,
        outcome: &Outcome,
        out: &mut Outbox<Msg>,
    ) {
        // `resp.raise_for_status()` (`swarm/client.py` l. 233).
        let error = match outcome {
            Outcome::Response { status, .. } if *status < 400 => None,
            Outcome::Response { status, .. } => Some(("HTTPStatusError", status.to_string())),
            Outcome::Error(e) => Some((e.name(), e.detail().to_string())),
        };
        match purpose {
            Purpose::Probe { uuid } => {
                let reason = error.as_ref().map_or("ok", |(name, _)| name);
                out.record(
                    kind::PROBE,
                    Some(peer),
                    Some(Cow::Owned(reason.to_string())),
                    Some(format!("uuid={uuid}").into()),
                );
                self.db.begin(
                    Job::ProbeResult {
                        uuid,
                        ok: error.is_none(),
                    },
                    out,
                );
            }
            // A successful dispatch leaves the row running (l. 236-237);
            // an exception fails it with `f"{type(exc).__name__}: {exc}"`.
            // `except Exception: log.exception(...)`, then
            // `delete_decky_shards_for_host` and `delete_swarm_host`
            // (`api_decommission_host.py` l. 52-60).
            Purpose::SelfDestruct { uuid } => {
                if let Some((name, detail)) = error {
                    out.record(
                        kind::OPERATOR,
                        Some(peer),
                        Some("self-destruct failed".into()),
                        Some(format!("uuid={uuid} {name}: {detail}").into()),
                    );
                }
                self.db.begin(Job::Delete { uuid }, out);
            }
            Purpose::Deploy { id } => {
                if let Some((name, detail)) = error {
                    self.db.begin(
                        Job::DeployFailed {
                            id,
                            error: format!("{name}: {detail}"),
                        },
                        out,
                    );
                }
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Deadline> {
        let calls = self.calls.iter().map(|(c, _)| Deadline {
            at: c.deadline(),
            reason: c.deadline_reason(),
        });
        let action = self
            .spec
            .actions
            .get(self.next_action)
            .map(|(at, _)| Deadline {
                at: *at,
                reason: "operator",
            });
        let panel = self.next_panel.map(|at| Deadline {
            at,
            reason: "GET /workers",
        });
        let probe = self.next_probe.map(|at| Deadline {
            at,
            reason: "GET /swarm/hosts",
        });
        calls
            .chain(action)
            .chain(panel)
            .chain(probe)
            .min_by_key(|d| d.at)
    }
}

/// `delete_decky_shards_for_host(uuid)` then `delete_swarm_host(uuid)`.
fn delete_host(db: &mut Db, uuid: &str) {
    db.shards.retain(|_, s| *s.host != *uuid);
    db.hosts.remove(uuid);
}

/// `_mark_failed` (`strategies.py` l. 83-111): error cut to 2000.
fn fail(db: &mut Db, id: u64, now: u64, error: String) {
    if let Some(row) = db.lifecycle.get_mut(&id) {
        row.status = "failed".into();
        row.error = Some(error.chars().take(2000).collect());
        row.completed_at = Some(now);
    }
}
