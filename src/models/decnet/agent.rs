//! The DECNET agent: its HTTPS heartbeat loop to the master
//! (`decnet/agent/heartbeat.py`), the lifecycle delta it pushes when a
//! `/deploy` or `/mutate` finishes (`push_lifecycle_delta`,
//! `decnet/agent/executor.py`), its bus heartbeat (`run_health_heartbeat`,
//! `decnet/bus/publish.py`), and its own HTTPS API, which answers the
//! master's `/health` probe and `/deploy`.

use std::borrow::Cow;
use std::sync::Arc;

use heartsim_sim::{
    ConnId, Deadline, Duration, FileDone, FileOp, Input, NodeId, Now, Outbox, Timestamp,
};

use super::https::{Call, Outcome, Server, AGENT_TIMEOUTS};
use super::kind;
use super::msg::{Body, Cert, Delta, Json, Msg, Request, Status, Topology};

/// `INTERVAL_S = 30.0` (`heartbeat.py` l. 34).
pub const INTERVAL: Duration = Duration::from_secs(30);
/// `run_health_heartbeat(.., interval=30.0)` (`bus/publish.py` l. 88).
pub const BUS_INTERVAL: Duration = Duration::from_secs(30);

/// The body an agent sends: upstream's, or a malformed shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `_build_body` (`heartbeat.py` l. 53-80).
    Upstream,
    NotJson,
    NoHostUuid,
    NoStatus,
    /// `status` is not an object.
    StatusNotObject,
    /// `host_uuid` is not a string.
    HostUuidNotString,
}

impl Shape {
    pub const ALL: [(&'static str, Shape); 6] = [
        ("upstream", Shape::Upstream),
        ("not-json", Shape::NotJson),
        ("no-host-uuid", Shape::NoHostUuid),
        ("no-status", Shape::NoStatus),
        ("status-not-object", Shape::StatusNotObject),
        ("host-uuid-not-string", Shape::HostUuidNotString),
    ];
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSpec {
    /// swarmctl's node.
    pub master: NodeId,
    /// `DECNET_HOST_UUID`; `None`: unset, the loop does not start.
    pub host_uuid: Option<Arc<str>>,
    /// Whether `build_worker_ssl_context` succeeds (else the loop does not
    /// start).
    pub tls: bool,
    pub cert: Cert,
    pub shape: Shape,
    /// 30 s for upstream's agent; an impostor's own loop may differ.
    pub interval: Duration,
    /// How long `_build_body` takes (`executor.status()`, the topology
    /// store) before the POST.
    pub tick_time: Duration,
    pub status: Status,
    pub topology: Option<Topology>,
    /// The bus node on this host, if the agent has one.
    pub bus: Option<NodeId>,
    /// How long a `/deploy` or `/mutate` runs, and how it ends.
    pub operation_time: Duration,
    /// `None`: succeeded; `Some(error)`: failed.
    pub operation_error: Option<Arc<str>>,
    /// Whether the agent answers `/health` and `/deploy` (an impostor
    /// runs no agent API).
    pub serves: bool,
    /// Where `save_state` keeps the agent's deployment (`decnet/config.py`
    /// l. 128-153: `STATE_FILE`, one per host upstream; one per node here,
    /// so that agents sharing a `[[host]]` keep their own).
    pub state_dir: Arc<str>,
}

#[derive(Clone, Debug)]
enum Loop {
    /// Not started (no identity or TLS context).
    Off,
    /// Building the body; the POST goes out at `until`, with the status
    /// `executor.status()` read when the build began.
    Building {
        until: Timestamp,
        status: Status,
    },
    InFlight(Box<Call>),
    /// `await asyncio.sleep(INTERVAL_S)`.
    Sleeping {
        until: Timestamp,
    },
}

#[derive(Clone, Debug)]
pub struct Agent {
    spec: Arc<AgentSpec>,
    beat: Loop,
    pushes: Vec<Call>,
    /// Background operations: when each ends, its decky and operation.
    operations: Vec<(Timestamp, Arc<str>, Arc<str>)>,
    /// What `executor.status()` reports: the scenario's at start, then as
    /// operations save and clear the agent's state.
    status: Status,
    server: Server,
    /// The bus client's UNIX-socket connection (`bus/unix_client.py`).
    bus_conn: Option<ConnId>,
    next_bus: Option<Timestamp>,
    next_token: u64,
    /// When the self-destruct reaper stops the agent.
    reaper: Option<Timestamp>,
    /// Lifecycle pushes whose body is being built: when it is done, and
    /// the status read when the build began.
    building_pushes: Vec<(Timestamp, Delta, Status)>,
}

/// The reaper's `sleep 3` before it stops the units (`agent/executor.py`
/// l. 219).
pub const REAPER_DELAY: Duration = Duration::from_secs(3);

/// The request's awaited-write token of the loop's calls.
const BEAT_TOKEN: u64 = 0;

/// The state file's operations (`decnet/config.py` `save_state`).
const STATE_MKDIR: u64 = 1;
const STATE_READ: u64 = 2;
const STATE_WRITE: u64 = 3;

impl Agent {
    pub fn new(spec: Arc<AgentSpec>) -> Self {
        // The agent's API serves `worker.crt`, the same certificate it
        // presents as a client (`agent/server.py` l. 46-51).
        let server = Server::new(spec.cert.clone());
        let status = spec.status.clone();
        Agent {
            spec,
            beat: Loop::Off,
            pushes: Vec::new(),
            operations: Vec::new(),
            status,
            server,
            bus_conn: None,
            next_bus: None,
            next_token: 1,
            reaper: None,
            building_pushes: Vec::new(),
        }
    }

    /// `_build_body(host_uuid, agent_version, lifecycle)`, whose first
    /// step, `await _exec.status()` (`heartbeat.py` l. 59), read `status`
    /// (the state as the build began: `executor.py` l. 305-317 reads the
    /// saved state first).
    fn body(&self, lifecycle: Option<Vec<Delta>>, status: Status) -> Body {
        let spec = &self.spec;
        let uuid = spec.host_uuid.clone().unwrap_or_default();
        let status = Some(Json::Status(status));
        let base = |host_uuid, status| Body::Object {
            host_uuid,
            agent_version: Some("1.0.0".into()),
            status,
            topology: spec.topology.clone(),
            lifecycle: lifecycle.clone(),
        };
        match spec.shape {
            Shape::Upstream => base(Some(Json::Str(uuid)), status),
            Shape::NotJson => Body::NotJson,
            Shape::NoHostUuid => base(None, status),
            Shape::NoStatus => base(Some(Json::Str(uuid)), None),
            Shape::StatusNotObject => base(Some(Json::Str(uuid)), Some(Json::Other)),
            Shape::HostUuidNotString => base(Some(Json::Other), status),
        }
    }

    fn post(&mut self, now: Now, status: Status, out: &mut Outbox<Msg>) {
        let request = Request::Heartbeat(self.body(None, status));
        let call = Call::start(
            now.mono,
            self.spec.master,
            request,
            self.spec.cert.clone(),
            AGENT_TIMEOUTS,
            BEAT_TOKEN,
            None,
            out,
        );
        self.beat = Loop::InFlight(Box::new(call));
    }

    /// One tick starts: build the body, then POST.
    fn tick(&mut self, now: Now, out: &mut Outbox<Msg>) {
        let status = self.status.clone();
        if self.spec.tick_time == Duration::ZERO {
            self.post(now, status, out);
        } else {
            self.beat = Loop::Building {
                until: now.mono + self.spec.tick_time,
                status,
            };
        }
    }

    pub fn handle(&mut self, now: Now, input: Input<Msg>, out: &mut Outbox<Msg>) {
        match input {
            Input::Start => self.on_start(out),
            Input::Stop => {}
            Input::Timeout => self.on_timeout(now, out),
            Input::Recv {
                msg: Msg::File(done),
                ..
            } => self.on_file(now, &done, out),
            Input::Recv { .. } => {}
            input => self.on_conn(now, input, out),
        }
    }

    /// The state file's path.
    fn state_file(&self) -> String {
        format!("{}/decnet-state.json", self.spec.state_dir)
    }

    /// The agent's API serves at once; its loops start once the saved
    /// state is read (`load_state`, at once on the instant disk): what
    /// `save_state` wrote before a restart is still there (the containers
    /// it started run on without the agent), and no file is the
    /// scenario's `deployed`/`deckies`.
    fn on_start(&mut self, out: &mut Outbox<Msg>) {
        if self.spec.serves {
            out.listen();
        }
        out.file(
            FileOp::MkdirAll(self.spec.state_dir.to_string()),
            STATE_MKDIR,
        );
        out.file(FileOp::Read(self.state_file()), STATE_READ);
    }

    fn on_file(&mut self, now: Now, done: &FileDone, out: &mut Outbox<Msg>) {
        if done.token != STATE_READ {
            return;
        }
        if let Ok(Some(bytes)) = &done.result {
            // `clear_state` unlinks the file; here it holds `null`. A file
            // that does not parse (a power loss, not generated for this
            // model) reads as no deployment.
            self.status = serde_json::from_slice::<Option<Status>>(bytes)
                .ok()
                .flatten()
                .unwrap_or(Status {
                    deployed: false,
                    deckies: Vec::new(),
                });
        }
        self.start_loops(now, out);
    }

    /// `save_state` / `clear_state` (`decnet/config.py` l. 136-153): the
    /// state as it is now (`None`: cleared).
    fn save_state(&self, out: &mut Outbox<Msg>) {
        let state = self.status.deployed.then_some(&self.status);
        let data = serde_json::to_vec(&state).expect("the state serializes");
        out.file(
            FileOp::Write {
                path: self.state_file(),
                data,
            },
            STATE_WRITE,
        );
    }

    fn start_loops(&mut self, now: Now, out: &mut Outbox<Msg>) {
        // The agent's lifespan starts the HTTPS loop, then the bus loop
        // (`agent/app.py` l. 111, 126-129).
        if self.spec.host_uuid.is_none() {
            // `heartbeat.py` l. 123-125.
            out.record(
                kind::NOT_STARTED,
                None,
                Some("DECNET_HOST_UUID or DECNET_MASTER_HOST unset".into()),
                None,
            );
        } else if !self.spec.tls {
            // l. 128-132.
            out.record(
                kind::NOT_STARTED,
                None,
                Some("worker SSL context unavailable".into()),
                None,
            );
        } else {
            self.tick(now, out);
        }
        // `bus = get_bus(..); await bus.connect()` before the bus loop
        // starts (`agent/app.py` l. 117-129).
        if let Some(bus) = self.spec.bus {
            self.bus_conn = Some(out.connect(bus));
        }
    }

    /// `publish_safely(bus, "system.agent.health", {"worker": "agent",
    /// "ts": time.time()})` then `sleep(30)` (`bus/publish.py` l. 102-112).
    fn publish(&mut self, now: Now, out: &mut Outbox<Msg>) {
        if let Some(conn) = self.bus_conn {
            let ts_us = now.wall.as_us();
            out.send(
                conn,
                Msg::Publish {
                    worker: "agent".into(),
                    ts_us,
                },
            );
            self.next_bus = Some(now.mono + BUS_INTERVAL);
        }
    }

    /// The bus connection's events. Connected: the bus loop starts. Failed:
    /// `bus = None`, a no-op loop (l. 117-123). Lost: "No auto-reconnect in
    /// MVP" (`bus/unix_client.py` l. 18-21): every later publish fails
    /// with a logged warning (l. 185-191), so the agent's bus heartbeat is
    /// gone until the agent restarts.
    fn on_bus(&mut self, now: Now, input: &Input<Msg>, out: &mut Outbox<Msg>) {
        let bus = self.spec.bus;
        match input {
            Input::Connected { .. } => self.publish(now, out),
            Input::ConnectFailed { .. } => {
                out.record(kind::BUS, bus, Some("unavailable".into()), None);
                self.bus_conn = None;
            }
            Input::Closed { .. } | Input::Reset { .. } => {
                out.record(kind::BUS, bus, Some("lost".into()), None);
                self.bus_conn = None;
                self.next_bus = None;
            }
            _ => {}
        }
    }

    fn on_timeout(&mut self, now: Now, out: &mut Outbox<Msg>) {
        let t = now.mono;
        if self.reaper.is_some_and(|at| at <= t) {
            // `systemctl stop decnet-agent`: the process ends, its
            // sockets with it.
            self.reaper = None;
            out.record(kind::SELF_DESTRUCT, None, Some("stopped".into()), None);
            out.exit();
            return;
        }
        self.server.on_timeout(t, out);
        match &mut self.beat {
            Loop::Building { until, status } if *until <= t => {
                let status = status.clone();
                self.post(now, status, out);
            }
            Loop::Sleeping { until } if *until <= t => self.tick(now, out),
            Loop::InFlight(call) if call.deadline() <= t => {
                if let Some(outcome) = call.on_input(t, &Input::Timeout, out) {
                    self.beat_done(now, &outcome, out);
                }
            }
            _ => {}
        }
        let mut i = 0;
        while i < self.pushes.len() {
            if self.pushes[i].deadline() <= t {
                if let Some(outcome) = self.pushes[i].on_input(t, &Input::Timeout, out) {
                    self.pushes.remove(i);
                    push_done(&outcome, out);
                    continue;
                }
            }
            i += 1;
        }
        if self.next_bus.is_some_and(|at| at <= t) {
            self.publish(now, out);
        }
        let (built, building): (Vec<_>, Vec<_>) = self
            .building_pushes
            .drain(..)
            .partition(|(at, _, _)| *at <= t);
        self.building_pushes = building;
        for (_, delta, status) in built {
            self.send_push(now, delta, status, out);
        }
        let (done, running): (Vec<_>, Vec<_>) =
            self.operations.drain(..).partition(|(at, _, _)| *at <= t);
        self.operations = running;
        for (_, decky, operation) in done {
            let result = match &self.spec.operation_error {
                None => {
                    // `compose up` brought the decky's containers up: every
                    // service runs (`_decky_runtime_states`, l. 206).
                    if &*operation == "deploy" {
                        self.set_running(&decky, true);
                    } else {
                        // `mutate_async`: `compose up -d --remove-orphans`
                        // of the whole project (`executor.py` l. 161-168):
                        // every decky runs.
                        for (_, running) in &mut self.status.deckies {
                            *running = true;
                        }
                    }
                    self.save_state(out);
                    Ok(())
                }
                Some(e) => Err(e.clone()),
            };
            self.push_delta(now, decky, operation, result, out);
        }
    }

    /// `push_lifecycle_delta` (`heartbeat.py` l. 148-198): a new client, one
    /// POST carrying the delta, never retried.
    fn push_delta(
        &mut self,
        now: Now,
        decky: Arc<str>,
        operation: Arc<str>,
        result: Result<(), Arc<str>>,
        out: &mut Outbox<Msg>,
    ) {
        let (status, error) = match result {
            Ok(()) => ("succeeded", None),
            Err(e) => ("failed", Some(e)),
        };
        let delta = Delta {
            decky,
            operation,
            status: status.into(),
            error,
            completed_at_us: Some(now.wall.as_us()),
        };
        out.record(
            kind::OPERATION_DONE,
            None,
            Some(status.into()),
            Some(format!("decky={} operation={}", delta.decky, delta.operation).into()),
        );
        if self.spec.host_uuid.is_none() || !self.spec.tls {
            return;
        }
        // `body = await _build_body(..., lifecycle=deltas)` before
        // `client.post` (`heartbeat.py` l. 187-191): `executor.status()`,
        // the same work as a tick's, so it takes `tick_time` too.
        let status = self.status.clone();
        if self.spec.tick_time == Duration::ZERO {
            self.send_push(now, delta, status, out);
        } else {
            self.building_pushes
                .push((now.mono + self.spec.tick_time, delta, status));
        }
    }

    /// The push's POST, its body built.
    fn send_push(&mut self, now: Now, delta: Delta, status: Status, out: &mut Outbox<Msg>) {
        let token = self.next_token;
        self.next_token += 1;
        let request = Request::Heartbeat(self.body(Some(vec![delta]), status));
        let call = Call::start(
            now.mono,
            self.spec.master,
            request,
            self.spec.cert.clone(),
            AGENT_TIMEOUTS,
            token,
            None,
            out,
        );
        self.pushes.push(call);
    }

    fn beat_done(&mut self, now: Now, outcome: &Outcome, out: &mut Outbox<Msg>) {
        let master = Some(self.spec.master);
        match outcome {
            // `_tick`: only 204 is quiet (l. 89-94).
            Outcome::Response { status, detail } => {
                let k = if *status == 204 {
                    kind::BEAT
                } else {
                    kind::BEAT_REJECTED
                };
                out.record(
                    k,
                    master,
                    Some(Cow::Owned(status.to_string())),
                    (!detail.is_empty()).then(|| Cow::Owned(detail.to_string())),
                );
            }
            // `except Exception: log.exception(..)` (l. 106-107).
            Outcome::Error(e) => {
                out.record(
                    kind::BEAT_FAILED,
                    master,
                    Some(e.name().into()),
                    Some(e.detail().to_string().into()),
                );
            }
        }
        self.beat = Loop::Sleeping {
            until: now.mono + self.spec.interval,
        };
    }

    fn on_conn(&mut self, now: Now, input: Input<Msg>, out: &mut Outbox<Msg>) {
        let t = now.mono;
        if self.bus_conn.is_some_and(|c| conn_of(&input) == Some(c)) {
            self.on_bus(now, &input, out);
            return;
        }
        if let Loop::InFlight(call) = &mut self.beat {
            if call.owns(&input) {
                if let Some(outcome) = call.on_input(t, &input, out) {
                    self.beat_done(now, &outcome, out);
                }
                return;
            }
        }
        if let Some(i) = self.pushes.iter().position(|c| c.owns(&input)) {
            if let Some(outcome) = self.pushes[i].on_input(t, &input, out) {
                self.pushes.remove(i);
                push_done(&outcome, out);
            }
            return;
        }
        let Some(incoming) = self.server.on_input(t, input, out) else {
            return;
        };
        match incoming.request {
            Request::Health => self.server.respond(incoming.conn, 200, "", out),
            // `/deploy` and `/mutate` answer 202 and run in the background
            // (`agent/app.py` l. 203-216).
            Request::Operation { decky, operation } => {
                self.server.respond(incoming.conn, 202, "", out);
                out.record(
                    kind::OPERATION_STARTED,
                    Some(incoming.peer),
                    None,
                    Some(format!("decky={decky} operation={operation}").into()),
                );
                match self.start_operation(&decky, &operation) {
                    Ok(()) => {
                        self.save_state(out);
                        self.operations
                            .push((t + self.spec.operation_time, decky, operation))
                    }
                    // `mutate_async` fails at once, before any work.
                    Err(e) => self.push_delta(now, decky, operation, Err(e), out),
                }
            }
            // `executor.self_destruct()` (`agent/executor.py` l. 241-302)
            // awaits the deployer's teardown, spawns the detached reaper
            // and returns; the route answers 200 (`agent/app.py`
            // l. 234-248). The reaper's `sleep 3` then `systemctl stop
            // decnet-agent` (l. 219-231) stops the agent: its lifespan's
            // `finally` stops the heartbeat loop (`app.py` l. 134) and the
            // process ends. The model's teardown takes no time (it has no
            // containers) and assumes the systemd install.
            Request::SelfDestruct => {
                self.server.respond(incoming.conn, 200, "", out);
                out.record(
                    kind::SELF_DESTRUCT,
                    Some(incoming.peer),
                    Some("scheduled".into()),
                    None,
                );
                // `await teardown(None)` clears the saved state
                // (`self_destruct`, `executor.py` l. 256-258) before the answer: a beat
                // from now on reports `deployed: false`.
                self.status = Status {
                    deployed: false,
                    deckies: Vec::new(),
                };
                self.save_state(out);
                if self.reaper.is_none() {
                    self.reaper = Some(t + REAPER_DELAY);
                }
            }
            Request::Heartbeat(_) => self.server.respond(incoming.conn, 404, "Not Found", out),
        }
    }

    /// What an operation does to the saved state when it starts.
    /// `deploy` (`engine/deployer.py` l. 689) saves the new config before
    /// `compose down`/`build`/`up` (l. 708-726): from then on the agent
    /// reports it deployed, with the decky (one per deploy here) not
    /// running until `compose up` has run. `mutate_async` (`executor.py`
    /// l. 147-159) needs a saved state holding the decky, else it fails
    /// at once; what it changes (the decky's services) is not modelled: the
    /// flags stay as they were until its `compose up` of the whole project
    /// brings every decky up.
    fn start_operation(&mut self, decky: &Arc<str>, operation: &str) -> Result<(), Arc<str>> {
        if operation == "deploy" {
            self.status = Status {
                deployed: true,
                deckies: vec![(decky.clone(), false)],
            };
            return Ok(());
        }
        if !self.status.deployed {
            return Err("no active deployment on this worker".into());
        }
        if !self.status.deckies.iter().any(|(d, _)| d == decky) {
            return Err(format!("decky '{decky}' not found in worker state").into());
        }
        Ok(())
    }

    fn set_running(&mut self, decky: &Arc<str>, running: bool) {
        for (d, r) in &mut self.status.deckies {
            if d == decky {
                *r = running;
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Deadline> {
        let beat = match &self.beat {
            Loop::Off => None,
            Loop::Building { until, .. } => Some(Deadline {
                at: *until,
                reason: "build body",
            }),
            Loop::InFlight(call) => Some(Deadline {
                at: call.deadline(),
                reason: "httpx timeout",
            }),
            Loop::Sleeping { until } => Some(Deadline {
                at: *until,
                reason: "asyncio.sleep",
            }),
        };
        let pushes = self.pushes.iter().map(|c| Deadline {
            at: c.deadline(),
            reason: "httpx timeout",
        });
        let bus = self.next_bus.map(|at| Deadline {
            at,
            reason: "bus heartbeat",
        });
        let ops = self.operations.iter().map(|(at, _, _)| Deadline {
            at: *at,
            reason: "operation",
        });
        let built = self.building_pushes.iter().map(|(at, _, _)| Deadline {
            at: *at,
            reason: "build body",
        });
        let reaper = self.reaper.map(|at| Deadline {
            at,
            reason: "self-destruct reaper",
        });
        let handshake = self.server.deadline().map(|at| Deadline {
            at,
            reason: "ssl handshake timeout",
        });
        beat.into_iter()
            .chain(pushes)
            .chain(bus)
            .chain(ops)
            .chain(built)
            .chain(reaper)
            .chain(handshake)
            .min_by_key(|d| d.at)
    }
}

/// The connection an input is about.
pub fn conn_of(input: &Input<Msg>) -> Option<ConnId> {
    match input {
        Input::Connected { conn, .. }
        | Input::ConnectFailed { conn, .. }
        | Input::Accepted { conn, .. }
        | Input::Data { conn, .. }
        | Input::Closed { conn, .. }
        | Input::Reset { conn, .. } => Some(*conn),
        _ => None,
    }
}

/// The push's outcome: 200 or 204 accepted (l. 192), else logged; no retry.
fn push_done(outcome: &Outcome, out: &mut Outbox<Msg>) {
    match outcome {
        Outcome::Response { status, detail } => {
            let k = if matches!(status, 200 | 204) {
                kind::PUSH
            } else {
                kind::PUSH_REJECTED
            };
            out.record(
                k,
                None,
                Some(Cow::Owned(status.to_string())),
                (!detail.is_empty()).then(|| Cow::Owned(detail.to_string())),
            );
        }
        Outcome::Error(e) => out.record(
            kind::PUSH_FAILED,
            None,
            Some(e.name().into()),
            Some(e.detail().to_string().into()),
        ),
    }
}
