"""DECNET 1.0.0 under the oracle (docs/oracle.md, "DECNET"): upstream's own
agent loop (`decnet.agent.heartbeat`: `start`, `_loop`, `_tick`,
`_build_body`, `push_lifecycle_delta`; `executor.deploy_async` and
`mutate_async`; the bus heartbeat), the swarm controller's app
(`decnet.web.swarm_api.app`, whose `POST /swarm/heartbeat` is
`api_heartbeat.heartbeat`) on a fresh SQLite database, the main API's
parts the model has (its startup sweep, the workers panel's
`WorkerRegistry`, the dashboard's probe `list_hosts`, the operator's
decommission, enrol, deploy and mutate) and the bus (upstream's client
and server), over the engine's streams (`tcp.py`: packets, retransmission,
FIN, RST, partitions, crashes) under virtual time.

Upstream decides: when each tick starts (tick, then `asyncio.sleep(30)`),
whether the loop starts at all, how an outcome is classified (204 quiet,
another status `heartbeat rejected`, an exception `heartbeat tick
failed`), the handler's answer and the rows it writes (422 from FastAPI's
validation, 404, 403, 204; host, lifecycle and shard rows, resync flags),
the panel's verdicts, the probe's and the operator routes' outcomes and
rows. The harness decides what the model's world decides: the network's
timing and faults, the TLS layer (which certificate reaches the handler),
the executor's status and operations, the agent's own API, and the
hostile clients' bodies and intervals.

What the runner cannot run raises `Unsupported` (the oracle counts the
file as skipped, never as agreeing).
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as _dt
import hashlib
import heapq
import json
import logging
import os
import pathlib
import selectors
import shutil
import socket
import sqlite3
import ssl
import sys
import tempfile
import time as _time
import types
import warnings

# Before anything imports `decnet.config`, whose `_configure_logging` runs
# at import and, outside its tests, opens `decnet.system.log` in the
# working directory (the repository's top level here).
os.environ["DECNET_TESTING"] = "1"
os.environ.setdefault(
    "DECNET_SYSTEM_LOGS", os.path.join(tempfile.gettempdir(), "heartsim-oracle-decnet.system.log")
)

import tcp  # noqa: E402
from links import Links  # noqa: E402
from scenario import duration_us, load, signed_us  # noqa: E402
from vworld import OracleError, Unsupported

# What the engine does that Linux does not (docs/oracle.md, "Findings"),
# noted by `tcp.Streams` when it mattered in a run: none today (finding
# T1 was fixed in the engine in session 8).
KNOWN: dict[str, str] = {}

EPOCH = _dt.datetime(2026, 1, 12, 10, 0, 0, tzinfo=_dt.timezone.utc)
AGENT_KEYS = {
    "host_uuid", "identity", "tls", "certificate", "enrolled", "body", "tick_time",
    "deployed", "deckies", "degraded", "interval",
    # `id:hash`: the topology its store holds (seeded into its own
    # TopologyStore; see `Master.__init__` for the hashes).
    "topology",
    # The bus node on its host (`run_health_heartbeat`).
    "bus",
    # A `/deploy`'s run (`deploy_async`).
    "operation_time", "operation_error",
}
FAULTS = {"start", "kill", "stop", "crash", "restart", "partition", "heal", "clock-jump", "clock-drift", "pause", "resume",
          "break", "repair", "hold", "stall", "release", "link"}
# The model's bodies of a hostile client (src/models/decnet/msg.rs).
SHAPES = {"upstream", "not-json", "no-host-uuid", "no-status", "status-not-object", "host-uuid-not-string"}

_env_ready = False


def _decky_configs(a) -> list[dict]:
    """The agent's deckies as DeckyConfig's required fields (decnet/models.py),
    as `executor.status()` dumps them and its saved state holds them."""
    return [
        {
            "name": d,
            "ip": f"192.168.1.{10 + i}",
            "services": ["ssh"],
            "distro": "debian",
            "base_image": "debian:bookworm-slim",
            "hostname": d,
        }
        for i, d in enumerate(a.deckies + a.degraded)
    ]


def _import_upstream():
    global _env_ready
    if not _env_ready:
        # decnet/env.py refuses to import without these (never used here).
        os.environ.setdefault("DECNET_JWT_SECRET", "heartsim-oracle-" + "x" * 32)
        os.environ.setdefault("DECNET_ADMIN_PASSWORD", "heartsim-oracle-admin")
        os.environ["DECNET_TESTING"] = "1"
        _env_ready = True
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("decnet").setLevel(logging.CRITICAL)
        warnings.filterwarnings("ignore", module="fastapi")
    import decnet.env as env

    if "decnet.web.router" not in sys.modules:
        # The package's __init__ gathers the whole web API's routers (STIX
        # export, MITRE, ...): a namespace of its own path lets the swarm
        # routers import without it. Nothing the handler runs is replaced.
        import importlib.util

        spec = importlib.util.find_spec("decnet.web")
        router = types.ModuleType("decnet.web.router")
        router.__path__ = [os.path.join(spec.submodule_search_locations[0], "router")]
        sys.modules["decnet.web.router"] = router
    import decnet.agent.heartbeat as hb
    import decnet.web.router.swarm.api_heartbeat as api
    from decnet.web import swarm_api
    from decnet.web.dependencies import get_repo
    from decnet.web.db.sqlite.repository import SQLiteRepository

    return env, hb, api, swarm_api.app, get_repo, SQLiteRepository


class _Selector(selectors.BaseSelector):
    """No I/O: a select with a timeout moves the loop's clock to it."""

    def __init__(self, loop):
        self.loop = loop
        self.map = {}

    def register(self, fileobj, events, data=None):
        raise Unsupported("the agent's loop opened a real file descriptor")

    def unregister(self, fileobj):
        raise KeyError(fileobj)

    def get_map(self):
        return self.map

    def select(self, timeout=None):
        if timeout is None:
            raise OracleError("the agents' loop has nothing left to run")
        self.loop.now_us += max(0, round(timeout * 1_000_000))
        return []

    def close(self):
        pass


class _Timer(asyncio.TimerHandle):
    """A timer at a whole microsecond, ordered by (time, seq)."""

    t_us = 0
    seq = 0

    def _key(self):
        return (self.t_us, self.seq)

    def __lt__(self, other):
        return self._key() < other._key()

    def __le__(self, other):
        return self._key() <= other._key()

    def __gt__(self, other):
        return self._key() > other._key()

    def __ge__(self, other):
        return self._key() >= other._key()

    def __hash__(self):
        return id(self)

    def __eq__(self, other):
        return self is other


class _Later(asyncio.Handle):
    """An input handed over by a resume or a release (`_Loop.later`)."""

    replay = True


class _Loop(asyncio.SelectorEventLoop):
    """The agents' asyncio loop on the simulated monotonic clock (µs), run
    as the engine runs its queue: one event at a time, in (time, seq)
    order, each followed by everything it makes ready (a woken task's
    steps, what they make ready, ...) before the next event, as the engine
    dispatches an event's inputs and carries out the machine's outputs
    before it takes the next (asyncio alone would run every timer due at
    one instant before any task they wake).

    The engine's events (packets, retransmission timers, starts and
    faults: `call_event_us`) are queued as they come. A node's own timers
    (asyncio's `call_at`, the harness's `call_at_us`) are not: as in the
    engine, each node has one timer, armed at its earliest deadline with a
    fresh seq whenever that deadline changes once the node's event is
    carried out (`Engine::rearm`, sim/src/engine.rs), and when it fires the
    node runs the timers then due, in their own (time, seq) order (one
    `Input::Timeout`). So at one instant the nodes wake in the order their
    deadlines were last set, not the order their timers were made.

    Each node reads its own clocks (`clocks`, ports of sim/src/clock.rs
    `Clock`): `time()` and a node timer's deadline are the monotonic clock
    of the node running now, its timer fires at the first global instant
    that clock reaches the deadline (`Clock::global_at`), and `wall_us` is
    its wall clock (what `datetime.now`/`time.time` read)."""

    def __init__(self):
        self.now_us = 0
        self._seq = 0
        self.error = None
        # The node whose event the harness carries out (`running`), and
        # each node's timers, armed wake and whether its deadline moved.
        self.owner = None
        self.node_timers: dict[str, list] = {}
        self.wakes: dict[str, _Timer] = {}
        self.dirty: dict[str, None] = {}
        # What runs before the next event, one at a time, each followed by
        # what it makes ready: a wake's due timers, a resume's replays.
        self.due: list = []
        self.replayed = False
        self.clocks: dict = {}
        # Paused nodes: their timer fires without running them.
        self.paused: set = set()
        super().__init__(_Selector(self))
        self.set_exception_handler(self._failed)

    def _failed(self, loop, context):
        # A harness callback raised: end the run with it (asyncio would log
        # it and go on).
        if self.error is None:
            self.error = context.get("exception") or OracleError(context.get("message"))
        self.stop()

    def node(self):
        """The node running now: the one whose event is carried out, else
        the process whose task this is (None: the harness's own work)."""
        if self.owner is not None:
            return self.owner
        p = CUR.get(None)
        return p.name if p is not None else None

    def _clock(self):
        return self.clocks.get(self.node())

    def mono_us(self):
        """The running node's monotonic clock."""
        c = self._clock()
        return c.mono(self.now_us) if c is not None else self.now_us

    def wall_us(self):
        """The running node's wall clock, µs since the simulated epoch."""
        c = self._clock()
        return c.wall(self.now_us) if c is not None else self.now_us

    def time(self):
        return self.mono_us() / 1_000_000

    def _timer(self, t_us, callback, args, context):
        self._check_closed()
        timer = _Timer(t_us / 1_000_000, callback, args, self, context)
        self._seq += 1
        timer.t_us = t_us
        timer.seq = self._seq
        timer._scheduled = True
        return timer

    def call_event_us(self, t_us, callback, *args):
        """An engine event (not a node's timer), queued now."""
        timer = self._timer(max(t_us, self.now_us), callback, args, None)
        heapq.heappush(self._scheduled, timer)
        return timer

    def call_at(self, when, callback, *args, context=None):
        return self.call_at_us(round(when * 1_000_000), callback, *args, context=context, rank=RANK.get())

    def call_at_us(self, t_us, callback, *args, context=None, rank):
        """A timer of the node running now (`node`), at `t_us` on its
        monotonic clock; `rank`: its place among the node's timers due at
        one instant (`RANK`)."""
        owner = self.node()
        if owner is None:
            raise OracleError("a timer made outside every node")
        timer = self._timer(t_us, callback, args, context)
        timer.owner = owner
        timer.rank = rank
        heapq.heappush(self.node_timers.setdefault(owner, []), timer)
        self.dirty[owner] = None
        return timer

    def _timer_handle_cancelled(self, handle):
        owner = getattr(handle, "owner", None)
        if owner is not None:
            self.dirty[owner] = None
        else:
            super()._timer_handle_cancelled(handle)

    @contextlib.contextmanager
    def running(self, node):
        """The harness carries out an event of `node`: the timers made
        meanwhile are its."""
        before, self.owner = self.owner, node
        try:
            yield
        finally:
            self.owner = before

    def forget(self, node):
        """The node's process ended: its timers go with it (the engine
        drops its machine)."""
        for timer in self.node_timers.pop(node, []):
            timer._cancelled = True
            timer._scheduled = False
        wake = self.wakes.pop(node, None)
        if wake is not None:
            wake.cancel()
        self.dirty.pop(node, None)
        self.paused.discard(node)

    def _rearm(self):
        """`Engine::rearm` of every node whose deadline may have moved."""
        for node in self.dirty:
            heap = self.node_timers.get(node, [])
            while heap and heap[0]._cancelled:
                heapq.heappop(heap)._scheduled = False
            clock = self.clocks[node]
            at = max(clock.global_at(heap[0].t_us), self.now_us) if heap else None
            wake = self.wakes.get(node)
            if wake is not None and wake.t_us == at:
                continue
            if wake is not None:
                wake.cancel()
                del self.wakes[node]
            if at is not None:
                wake = self._timer(at, self._wake, (node,), None)
                heapq.heappush(self._scheduled, wake)
                self.wakes[node] = wake
        self.dirty.clear()

    def later(self, node, fn):
        """Run `fn` as `node` once what is ready now has run, before the
        next event (a resumed node's parked inputs, one by one)."""
        self.due.append((node, _Later(fn, (), self, None)))

    def pause(self, node):
        self.paused.add(node)

    def resume(self, node):
        """`Fault::Resume`: the timer is armed afresh after the parked
        inputs (a deadline passed meanwhile fires now, after them)."""
        self.paused.discard(node)
        wake = self.wakes.pop(node, None)
        if wake is not None:
            wake.cancel()
        self.dirty[node] = None

    def _wake(self, node):
        """The node's timer fires: the timers due now, in their order (a
        paused node's are kept for its resume)."""
        del self.wakes[node]
        if node in self.paused:
            return
        self.dirty[node] = None  # armed afresh, as after `n.timer = None`
        heap = self.node_timers.get(node, [])
        mono = self.clocks[node].mono(self.now_us)
        while heap and heap[0].t_us <= mono:
            timer = heapq.heappop(heap)
            timer._scheduled = False
            if not timer._cancelled:
                self.due.append((node, timer))
        # In the model's `on_timeout` order (`RANK`), then their own.
        self.due.sort(key=lambda due: (due[1].rank, due[1].t_us, due[1].seq))

    def _run_once(self):
        if self._ready:
            handle = self._ready.popleft()
            if not handle._cancelled:
                handle._run()
            return
        while self.due:
            if self.replayed:
                # The engine re-arms after each dispatch: after each input
                # a resume or a release hands over (a wake's timers are one
                # dispatch).
                self._rearm()
            node, timer = self.due.pop(0)
            self.replayed = getattr(timer, "replay", False)
            if not timer._cancelled:
                with self.running(node):
                    timer._run()
                return
        self.replayed = False
        self._rearm()
        while self._scheduled and self._scheduled[0]._cancelled:
            heapq.heappop(self._scheduled)._scheduled = False
        if not self._scheduled:
            raise OracleError("the agents' loop has nothing left to run")
        timer = heapq.heappop(self._scheduled)
        timer._scheduled = False
        self.now_us = max(self.now_us, timer.t_us)
        timer._run()

    def _make_self_pipe(self):
        pass

    def _close_self_pipe(self):
        pass

    def _write_to_self(self):
        pass

    def _process_events(self, event_list):
        pass


CUR: contextvars.ContextVar = contextvars.ContextVar("agent")
# Set in `push_lifecycle_delta`'s task: its requests are pushes.
PUSHING: contextvars.ContextVar = contextvars.ContextVar("pushing", default=False)
# Where a node's timer falls in the model's `on_timeout` when several are
# due at one instant (`_Loop._wake`): the agent's (agent.rs) reaper,
# handshake aborts, beat loop, pushes' httpx timeouts, bus beat, built
# pushes, operations; the API's (api.rs) calls, actions, panel, probe.
# asyncio's own timers take the rank their task sets here (default: the
# beat loop's).
R_REAPER, R_HANDSHAKE, R_BEAT, R_PUSH_CALL, R_BUS, R_PUSH_BUILD, R_OPERATION = range(7)
R_CALL, R_ACTION, R_PANEL, R_PROBE = range(4)
RANK: contextvars.ContextVar = contextvars.ContextVar("rank", default=R_BEAT)


class Agent:
    def __init__(self, node, index):
        k = node.keys
        extra = set(k) - AGENT_KEYS
        if extra:
            raise Unsupported(f"agent keys {sorted(extra)}")
        self.name = node.name
        self.impostor = node.kind == "impostor"
        self.start_us = node.start_us or 0
        self.uuid = k.get("host_uuid", node.name)
        self.identity = k.get("identity", True)
        self.tls = k.get("tls", True)
        self.cert = k.get("certificate", "own")
        if self.cert == "own":
            self.cert = node.name
        self.enrolled = k.get("enrolled", not self.impostor)
        self.body = k.get("body", "upstream")
        if self.body not in SHAPES:
            raise Unsupported(f"body {self.body!r}")
        self.tick_us = duration_us(k.get("tick_time", "0s"))
        self.interval_us = duration_us(k["interval"]) if "interval" in k else None
        self.topology = tuple(k["topology"].split(":", 1)) if "topology" in k else None
        self.bus = k.get("bus")
        self.operation_us = duration_us(k.get("operation_time", "60s"))  # setup.rs
        self.operation_error = k.get("operation_error")
        self.agent_dir = None
        self.deployed = k.get("deployed", False)
        self.deckies = k.get("deckies", [])
        self.degraded = k.get("degraded", [])
        self.rejected = False


def der(cert: str) -> bytes:
    """A certificate's DER bytes: only their SHA-256 is read upstream."""
    return b"heartsim-certificate:" + cert.encode()


_TEMPLATE = None


def _template(SQLiteRepository) -> str:
    """An initialised database (schema, admin user), made once a process."""
    global _TEMPLATE
    if _TEMPLATE is None:
        path = os.path.join(tempfile.mkdtemp(prefix="heartsim-decnet-template-"), "decnet.db")
        repo = SQLiteRepository(db_path=path)
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(repo.initialize())
            loop.run_until_complete(repo.engine.dispose())
        finally:
            loop.close()
        # The admin has set a password: `_ensure_admin_user` then leaves
        # the row alone instead of hashing DECNET_ADMIN_PASSWORD again
        # (bcrypt, a third of a second; the admin never logs in here).
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("UPDATE users SET must_change_password = 0")
        _TEMPLATE = path
    return _TEMPLATE


class Master:
    """swarmctl: upstream's app on its own (real) asyncio loop, run to its
    end in this thread at the instant a request reaches it; its
    `datetime.now` in api_heartbeat is the master's simulated wall clock."""

    def __init__(self, node, agents, tmp, topologies):
        _, _, api, app, get_repo, SQLiteRepository = _import_upstream()
        self.name = node.name
        self.api = api
        self.loop = asyncio.new_event_loop()
        # A copy of an initialised database (`initialize()` below then finds
        # its tables and admin user: the same schema and rows, without
        # bcrypt's half second a case).
        self.db_path = os.path.join(tmp, "decnet.db")
        shutil.copyfile(_template(SQLiteRepository), self.db_path)
        self.repo = SQLiteRepository(db_path=self.db_path)
        self.db = None  # the harness's own connection (`rows`)
        app.dependency_overrides[get_repo] = lambda: self.repo
        self.app = app
        self.now_us = 0
        master = self

        class VDatetime(_dt.datetime):
            @classmethod
            def now(cls, tz=None):
                t = EPOCH + _dt.timedelta(microseconds=master.now_us)
                return t.astimezone(tz) if tz else t.replace(tzinfo=None)

        api.datetime = VDatetime
        self.call(self.repo.initialize())
        # The rows the scenario enrols (src/models/decnet/setup.rs): one per
        # uuid, the last node claiming it wins, pinning that node's own
        # certificate.
        rows = {a.uuid: a.name for a in agents if a.enrolled and a.identity}
        for uuid, name in rows.items():
            self.call(
                self.repo.add_swarm_host(
                    {
                        "uuid": uuid,
                        "name": name,
                        "address": name,
                        "client_cert_fingerprint": hashlib.sha256(der(name)).hexdigest(),
                        # Not a directory: decommission's cleanup of it
                        # (`api_decommission_host.py` l. 62-) finds nothing.
                        "cert_bundle_path": os.path.join(tmp, "ca", "workers", name),
                        "status": "enrolled",
                    }
                )
            )
        # A row's peer is the node at its address (db.rs `record_changes`).
        self.agent_names = {a.name for a in agents}
        # `[config] topologies`: ACTIVE, pinned to their host (upstream's own
        # `create_topology`). The model's hashes are names: the config's
        # hash of a topology stands for upstream's `canonical_hash` of it
        # (what the handler expects, `api_heartbeat.py` l. 113-121), any
        # other name for another hash.
        from decnet.topology.hashing import canonical_hash
        from decnet.topology.persistence import hydrate

        expected = {}
        for t in topologies:
            self.call(
                self.repo.create_topology(
                    {
                        "id": t["id"],
                        "name": t["id"],
                        "mode": "agent",
                        "target_host_uuid": t["host_uuid"],
                        "status": "active",
                        "config_snapshot": {},
                    }
                )
            )
            expected[(t["id"], t["hash"])] = canonical_hash(self.call(hydrate(self.repo, t["id"])))
        # Each agent's own store (`DECNET_AGENT_DIR/topology.db`), holding
        # what it reports (`topology_ops.state`).
        from decnet.agent.topology_store import TopologyStore

        for a in agents:
            a.agent_dir = pathlib.Path(tmp, "agent-" + a.name)
            store = TopologyStore(a.agent_dir / "topology.db")
            if a.topology is not None:
                tid, h = a.topology
                store.put(tid, expected.get((tid, h), h and "heartsim-other-" + h), {})
            store.close()

    def call(self, coro):
        """Run `coro` to its end on swarmctl's own loop, in this thread,
        while the agents' loop waits (it is paused inside one of its
        events: no agent runs meanwhile)."""
        agents_loop = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(None)
        try:
            return self.loop.run_until_complete(coro)
        finally:
            asyncio.events._set_running_loop(agents_loop)

    def rows(self):
        """The harness's own read of the committed rows the model records
        (`record_changes`, src/models/decnet/db.rs): hosts by uuid,
        lifecycle rows (by start), shards by decky name, and the
        topologies flagged for resync."""
        if self.db is None:
            self.db = sqlite3.connect(self.db_path)
        q = lambda sql: list(self.db.execute(sql))  # noqa: E731
        return (
            {u: (a, s, h, n) for u, n, s, h, a in q("SELECT uuid, name, status, last_heartbeat, address FROM swarm_hosts")},
            {
                i: rest
                for i, *rest in q(
                    "SELECT id, status, decky_name, operation, host_uuid, started_at, completed_at, error"
                    " FROM decky_lifecycle ORDER BY started_at, rowid"
                )
            },
            {n: (h, s, t) for n, h, s, t in q("SELECT decky_name, host_uuid, state, last_seen FROM decky_shards")},
            {i: bool(r) for i, r in q("SELECT id, needs_resync FROM topologies")},
        )

    def record_changes(self, t_us, before, after, rec, node=None):
        """What changed, in the model's order (`record_changes`), recorded
        by `node` (swarmctl's handler by default; the main API's own
        transactions by the API)."""
        node = node or self.name
        hosts, cycles, shards, topos = after
        for uuid in sorted(hosts):
            row = hosts[uuid]
            if before[0].get(uuid) != row:
                rec(t_us, node, "host-row", row[0] if row[0] in self.agent_names else None, row[1])
        for uuid in sorted(set(before[0]) - set(hosts)):
            row = before[0][uuid]
            rec(t_us, node, "host-row", row[0] if row[0] in self.agent_names else None, "deleted")
        for i, row in cycles.items():
            if before[1].get(i) != row:
                rec(t_us, node, "lifecycle-row", None, row[0])
        for name in sorted(shards):
            if before[2].get(name) != shards[name]:
                rec(t_us, node, "shard-row", None, shards[name][1])
        for name in sorted(set(before[2]) - set(shards)):
            rec(t_us, node, "shard-row", None, "deleted")
        for i in sorted(topos):
            if topos[i] and not before[3].get(i):
                rec(t_us, node, "resync", None, "needs_resync")

    def handle(self, t_us, wall_us, peer, cert, content, headers, rec):
        """The request reached swarmctl's app at `t_us` (its wall clock
        reading `wall_us`) from node `peer`, whose TLS client certificate
        is `cert`: the handler's answer."""
        import httpx

        self.now_us = wall_us
        chain = [der(cert)]

        async def app(scope, receive, send):
            scope["extensions"] = {"tls": {"client_cert_chain": chain}}
            await self.app(scope, receive, send)

        async def go():
            transport = httpx.ASGITransport(app=app)
            req = httpx.Request("POST", "https://master:8770/swarm/heartbeat", content=content, headers=headers)
            resp = await transport.handle_async_request(req)
            body = await resp.aread()
            return resp.status_code, list(resp.headers.raw), body

        before = self.rows()
        status, hdrs, body = self.call(go())
        after = self.rows()
        if status == 204:
            reason = "204"
        elif status == 422:
            reason = "422 request body validation error"
        else:
            reason = f"{status} {json.loads(body).get('detail')}"
        rec(t_us, self.name, "heartbeat", peer, reason)
        self.record_changes(t_us, before, after, rec)
        return status, hdrs, body


def shape(body: str, content: bytes) -> bytes:
    if body == "upstream":
        return content
    if body == "not-json":
        return b"{not json"
    d = json.loads(content)
    if body == "no-host-uuid":
        d.pop("host_uuid", None)
    elif body == "no-status":
        d.pop("status", None)
    elif body == "status-not-object":
        d["status"] = "up"
    elif body == "host-uuid-not-string":
        d["host_uuid"] = 7
    return json.dumps(d).encode()


@contextlib.contextmanager
def _uuid4(value: str):
    """`uuid.uuid4()` answers the scenario's uuid meanwhile (a route that
    imports `uuid` inside itself)."""
    import uuid

    real = uuid.uuid4
    uuid.uuid4 = lambda: value
    try:
        yield
    finally:
        uuid.uuid4 = real


class World:
    def __init__(self, sc):
        self.sc = sc
        self.records: list[dict] = []

    def rec(self, t_us, node, kind, peer=None, reason=None):
        r = {"t_us": t_us, "node": node, "kind": kind}
        if peer is not None:
            r["peer"] = peer
        if reason is not None:
            r["reason"] = reason
        self.records.append(r)


def run(path: str, as_the_model: bool = False) -> tuple[list[dict], set[str]]:
    import httpx

    env, hb, _, _, _, _ = _import_upstream()
    sc = load(path)
    with open(path, "rb") as f:
        import tomllib

        doc = tomllib.load(f)
    if set(doc.get("config", {})) - {"topologies"}:
        raise Unsupported("[config] keys other than topologies")
    if set(doc.get("tcp", {})) - {"unread_limit"}:
        raise Unsupported("[tcp] keys other than unread_limit (tcp.py has the engine's defaults)")
    # The links as the engine routes them (links.py): `[network]`, the
    # `[[link]]`s, and `link` faults (`fault` below).
    links = Links(sc.seed, sc.network)
    configs = [sc.network] + [c for _, _, c in sc.links] + [f.link[2] for f in sc.faults if f.kind == "link"]
    if any(c.duplicate.num or c.reorder.num for c in configs):
        raise Unsupported("duplicate or reorder (the engine refuses them on streams)")
    for frm, to, c in sc.links:
        links.set_link(frm, to, c)
    other = sorted({n.kind for n in sc.nodes} - {"swarmctl", "agent", "impostor", "api", "bus"})
    if other:
        raise Unsupported(f"node kinds {other}")
    masters = [n for n in sc.nodes if n.kind == "swarmctl"]
    agents = []
    for n in sc.nodes:
        if n.kind in ("agent", "impostor"):
            agents.append(Agent(n, n.index))
        elif n.kind == "api" and set(n.keys) - {"panel_every", "probe_every", "actions"}:
            raise Unsupported(f"api keys {sorted(set(n.keys) - {'panel_every', 'probe_every', 'actions'})}")
        elif n.kind == "bus" and n.keys:
            raise Unsupported("bus keys")
    for f in sc.faults:
        if f.kind not in FAULTS:
            raise Unsupported(f"fault {f.kind}")
    if len(masters) != 1 or masters[0].keys:
        raise Unsupported("swarmctl keys")
    w = World(sc)
    loop = _Loop()
    loop.clocks = {n.name: n.clock for n in sc.nodes}
    by_name = {a.name: a for a in agents}
    with tempfile.TemporaryDirectory(prefix="heartsim-decnet-") as tmp:
        m = Master(masters[0], agents, tmp, doc.get("config", {}).get("topologies", []))
        try:
            noted = _drive(sc, w, loop, m, agents, by_name, links, env, hb, httpx, doc.get("tcp", {}))
        finally:
            m.call(m.repo.engine.dispose())
            if m.db is not None:
                m.db.close()
            m.loop.close()
            loop.close()
    return [r for r in w.records if r["t_us"] <= sc.duration_us], noted


class Call:
    """One request of upstream's `httpx.AsyncClient` (httpcore 1.0.9 on
    anyio 4.13) on a connection of its own (`keepalive_expiry` 5 s < the
    30 s between ticks, docs/models/decnet.md), over the engine's streams
    (`tcp.py`): `connect_tcp` under `fail_after(connect)`; `start_tls`
    (ClientHello; the server's flight; the client's Finished) under
    `fail_after(connect)` again; the request written; one read of the
    response under `fail_after(read)` (`httpcore/_async/connection.py`
    l. 106-155, `_backends/anyio.py` l. 25-50, 55-80, 98-123). What the
    socket reports becomes the exception httpcore raises there
    (`_backends/anyio.py`, pinned venv):

    - connect: a RST (`ECONNREFUSED`, an `OSError`) -> `ConnectError`
      (l. 108-112); no SYN-ACK in 5 s (`TimeoutError`) -> `ConnectTimeout`;
    - TLS: a FIN (`EndOfStream`), a RST (anyio's `BrokenResourceError`
      from `ConnectionResetError`, `anyio/_backends/_asyncio.py`
      l. 1293-1295), an alert (`ssl.SSLError`) -> `ConnectError`
      (l. 61-66); no server flight in 5 s -> `ConnectTimeout`;
    - read: a RST -> `ReadError` (l. 26-31); a FIN before any response
      byte: anyio's TLS stream turns the EOF into `EndOfStream`
      (`standard_compatible=False`, l. 74; `anyio/streams/tls.py`
      l. 197-206), `read` returns `b""` (l. 34-37) and h11's state makes
      it `RemoteProtocolError("Server disconnected without sending a
      response.")` (`_async/http11.py` l. 228-231); a TLS alert (the server
      refused the client certificate) is a raw `ssl.SSLError`, which no
      map names and httpx re-raises (`httpx/_transports/default.py`
      l. 111-115); no response in 10 s -> `ReadTimeout`.

    The request's write blocks on a stalled direction once the unread
    bytes pass `[tcp] unread_limit` (`Net.send`): the call waits in its
    `write` stage under the `write` timeout (`WriteTimeout`) until the
    release's `WriteDone`. A write on a `break`-ed direction fails and
    resets the connection, which the read then reports (`ReadError`, as
    the model's failed write does). After the outcome the connection is closed (the
    model's `Call` closes it; httpcore's pool would drop it at the next
    tick, D7)."""

    def __init__(self, d, a, to, cert, request, timeouts, fut):
        self.d, self.a, self.fut = d, a, fut
        self.cert, self.request = cert, request
        # httpx's `Timeout` as the request carries it (`extensions`), in µs.
        self.connect_us, self.write_us, self.read_us = (
            round(timeouts[k] * 1_000_000) for k in ("connect", "write", "read")
        )
        self.timer = None
        self.done = False
        # The API's calls; the agent's beat, or a push's.
        self.rank = R_CALL if not isinstance(a, Agent) else R_PUSH_CALL if PUSHING.get() else R_BEAT
        self.conn = d.net.connect(a.name, to)
        a.calls[self.conn] = self
        self.stage = "tcp"
        self.arm(d.loop.mono_us() + self.connect_us)

    def arm(self, t_us):
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.d.loop.call_at_us(t_us, self.timeout, rank=self.rank)

    def timeout(self):
        self.timer = None
        if not self.done:
            import httpx

            cls = {"tcp": httpx.ConnectTimeout, "tls": httpx.ConnectTimeout, "write": httpx.WriteTimeout}.get(
                self.stage, httpx.ReadTimeout
            )
            self.finish(exc=cls("timed out"))

    def on_input(self, inp):
        import httpx

        kind, stage = inp[0], self.stage
        msg = inp[2] if kind == "Data" else None
        net, name, now = self.d.net, self.a.name, self.d.loop.mono_us()
        if stage == "tcp" and kind == "Connected":
            net.send(name, self.conn, ("ClientHello",))
            self.stage = "tls"
            self.arm(now + self.connect_us)
        elif stage == "tcp" and kind == "ConnectFailed":
            self.finish(exc=httpx.ConnectError("[Errno 111] Connection refused"))
        elif stage == "tls" and msg is not None and msg[0] == "ServerHello":
            # TLS 1.3: the client's handshake is done once its Finished is
            # written; the request follows it.
            net.send(name, self.conn, ("ClientFinished", self.cert))
            if net.send(name, self.conn, ("Request",) + self.request, awaited=True):
                self.stage = "read"
                self.arm(now + self.read_us)
            else:
                # A stalled server's buffers are full: the write waits
                # under the write timeout (`fail_after(write)`).
                self.stage = "write"
                self.arm(now + self.write_us)
        elif stage == "write" and kind == "WriteDone":
            self.stage = "read"
            self.arm(now + self.read_us)
        elif stage == "tls" and kind in ("Closed", "Reset", "Data"):
            self.finish(exc=httpx.ConnectError(f"TLS handshake: {kind}"))
        elif stage in ("write", "read") and msg is not None and msg[0] == "Response":
            self.finish(result=msg[1:])
        elif stage in ("write", "read") and msg is not None and msg[0] == "Alert":
            self.finish(exc=ssl.SSLError(1, msg[1]))
        elif stage in ("write", "read") and kind == "Closed":
            self.finish(exc=httpx.RemoteProtocolError("Server disconnected without sending a response."))
        elif stage in ("write", "read") and kind == "Reset":
            self.finish(exc=httpx.ReadError("[Errno 104] Connection reset by peer"))

    def finish(self, result=None, exc=None):
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.a.calls.pop(self.conn, None)
        self.d.net.close(self.a.name, self.conn)
        if self.fut.done():
            return
        if exc is not None:
            self.fut.set_exception(exc)
            # The task awaiting it may be cancelled before it wakes (its
            # process ended at this instant): the socket's error is then
            # never read, as upstream's would not be; not a harness error.
            self.fut.add_done_callback(lambda f: f.exception())
        else:
            self.fut.set_result(result)

    def abandon(self):
        """Its process ended (the engine's `take_down`): no more inputs."""
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class PinCall:
    """`AgentClient._fetch_peer_fingerprint` (`decnet/swarm/client.py`
    l. 170-192), which upstream runs in a thread (`asyncio.to_thread`,
    l. 200): `socket.create_connection((address, port), timeout=10.0)`, a
    blocking TLS handshake under the same 10 s socket timeout per read
    (`ctx.wrap_socket`), the server certificate's DER, the socket closed.
    Here the same steps over the engine's streams, each socket outcome as
    CPython raises it: a RST to the SYN `ConnectionRefusedError`; no
    SYN-ACK or no server flight within 10 s `TimeoutError` ("timed out",
    "The handshake operation timed out"); a FIN during the handshake
    `ssl.SSLEOFError`, a RST `ConnectionResetError`; a certificate not
    signed by the DECNET CA `ssl.SSLCertVerificationError` (CERT_REQUIRED,
    l. 176-177); no certificate: upstream's own `FingerprintMismatchError`
    with an empty digest (l. 189-192). The digest is compared by
    upstream's `_verify_pin`."""

    def __init__(self, d, p, to, fut, mismatch):
        self.d, self.a, self.fut, self.mismatch = d, p, fut, mismatch
        self.timer = None
        self.done = False
        self.rank = R_CALL
        self.conn = d.net.connect(p.name, to)
        p.calls[self.conn] = self
        self.stage = "tcp"
        self.arm(d.loop.mono_us() + 10_000_000)

    arm = Call.arm
    abandon = Call.abandon

    def timeout(self):
        self.timer = None
        if not self.done:
            text = "timed out" if self.stage == "tcp" else "The handshake operation timed out"
            self.finish(exc=TimeoutError(text))

    def on_input(self, inp):
        kind = inp[0]
        msg = inp[2] if kind == "Data" else None
        net, name, now = self.d.net, self.a.name, self.d.loop.mono_us()
        if self.stage == "tcp" and kind == "Connected":
            net.send(name, self.conn, ("ClientHello",))
            self.stage = "tls"
            self.arm(now + 10_000_000)
        elif self.stage == "tcp" and kind == "ConnectFailed":
            if inp[2] == tcp.REFUSED:
                self.finish(exc=ConnectionRefusedError(111, "Connection refused"))
            else:
                self.finish(exc=TimeoutError(110, "Connection timed out"))
        elif self.stage == "tls" and msg is not None and msg[0] == "ServerHello":
            # The client's handshake ends with its Finished; then the
            # digest, and the socket closed.
            net.send(name, self.conn, ("ClientFinished", "decnet-master"))
            cert = msg[1]
            if cert == "untrusted":
                self.finish(
                    exc=ssl.SSLCertVerificationError(
                        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate"
                    )
                )
            elif cert == "none":
                self.finish(exc=self.mismatch())
            else:
                self.finish(result=hashlib.sha256(der(cert)).hexdigest().lower())
        elif self.stage == "tls" and msg is not None and msg[0] == "Alert":
            self.finish(exc=ssl.SSLError(1, msg[1]))
        elif self.stage == "tls" and kind == "Closed":
            self.finish(exc=ssl.SSLEOFError(8, "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol"))
        elif self.stage == "tls" and kind == "Reset":
            self.finish(exc=ConnectionResetError(104, "Connection reset by peer"))

    finish = Call.finish


class Server:
    """A TLS server as uvicorn runs it with `--ssl-cert-reqs 2` (swarmctl:
    `decnet/cli/swarmctl.py` l. 122-125; the agent's API likewise): the
    server side of each connection, its certificate `cert` in its flight,
    a client without a CA-signed certificate refused with an alert; a
    request that passed TLS is handed to `app(peer, client_cert, request)`
    at the instant it arrives, whose `(status, headers, body)` goes back."""

    def __init__(self, d, name, cert, app):
        self.d, self.name, self.cert, self.app = d, name, cert, app
        self.conns: dict[int, str | None] = {}
        # Each handshake's abort timer, cancelled once the handshake is
        # over (the model's deadline is only a `Handshake` connection's).
        self.aborts: dict = {}

    def settle(self, conn):
        timer = self.aborts.pop(conn, None)
        if timer is not None:
            timer.cancel()

    def dispatch(self, peer, inp):
        d, kind, conn, name = self.d, inp[0], inp[1], self.name
        if kind == "Accepted":
            self.conns[conn] = None
            # asyncio's server-side handshake bound: uvicorn passes no
            # `ssl_handshake_timeout` to `create_server` (uvicorn/server.py
            # l. 144-151), so `SSL_HANDSHAKE_TIMEOUT = 60.0` from
            # `connection_made` (asyncio/sslproto.py `_check_handshake_
            # timeout` aborts the transport).
            self.aborts[conn] = d.loop.call_at_us(
                d.loop.mono_us() + 60_000_000, self.handshake_timeout, conn, rank=R_HANDSHAKE
            )
        elif kind == "Data" and conn in self.conns:
            msg = inp[2]
            if msg[0] == "ClientHello":
                d.net.send(name, conn, ("ServerHello", self.cert))
            elif msg[0] == "ClientFinished":
                self.settle(conn)
                if msg[1] in ("none", "untrusted"):
                    # CERT_REQUIRED: the handshake fails with an alert and
                    # the connection is dropped.
                    alert = "certificate required" if msg[1] == "none" else "unknown ca"
                    d.net.send(name, conn, ("Alert", alert))
                    d.net.close(name, conn)
                    del self.conns[conn]
                else:
                    self.conns[conn] = msg[1]
            elif msg[0] == "Request" and self.conns[conn] is not None:
                status, hdrs, body = self.app(peer, self.conns[conn], msg[1:])
                if conn in self.conns:
                    d.net.send(name, conn, ("Response", status, hdrs, body))
        elif kind == "Closed" and conn in self.conns:
            self.settle(conn)
            del self.conns[conn]
            d.net.close(name, conn)
        elif kind == "Reset":
            self.settle(conn)
            self.conns.pop(conn, None)

    def handshake_timeout(self, conn):
        self.aborts.pop(conn, None)
        if conn in self.conns and self.conns[conn] is None:
            del self.conns[conn]
            self.d.net.close(self.name, conn)


class Proc:
    """A process the harness runs besides the agents: the main API, a bus
    daemon."""

    def __init__(self, node):
        self.name = node.name
        self.kind = node.kind
        self.host = node.host
        self.keys = node.keys
        self.calls: dict = {}
        self.tasks: set = set()


class StreamEnd:
    """One end of a connection as asyncio streams (`StreamReader`, a
    writer), for upstream's bus client and server (`decnet/bus/
    unix_client.py`, `unix_server.py`) over the engine's streams: data
    in is fed to the reader, a FIN is its EOF, a RST its
    `ConnectionResetError` (what a UNIX socket's reader sees); a refused
    connect is `ConnectionRefusedError` from `open_unix_connection`."""

    def __init__(self, d, p, conn=None):
        self.d, self.p, self.conn = d, p, conn
        self.fut = None
        self.reader = asyncio.StreamReader(loop=d.loop)
        self.closed = False
        self.reset = False
        self.writer = types.SimpleNamespace(
            write=self.write,
            drain=self.drain,
            close=self.close,
            is_closing=lambda: self.closed,
            wait_closed=self.drain_nothing,
            get_extra_info=lambda *a, **k: None,
        )

    def on_input(self, inp):
        kind = inp[0]
        if kind == "Connected":
            self.fut.set_result(None)
        elif kind == "ConnectFailed":
            self.p.calls.pop(self.conn, None)
            self.fut.set_exception(ConnectionRefusedError(111, "Connection refused"))
            # Never read if the connecting task was cancelled first (its
            # process ended at this instant): not a harness error.
            self.fut.add_done_callback(lambda f: f.exception())
        elif kind == "Data":
            self.reader.feed_data(inp[2])
        elif kind == "Closed":
            self.reader.feed_eof()
        elif kind == "Reset":
            self.reset = True
            self.reader.set_exception(ConnectionResetError(104, "Connection reset by peer"))

    def abandon(self):
        self.closed = True

    def write(self, data):
        if not self.closed:
            self.d.net.send(self.p.name, self.conn, bytes(data))

    async def drain(self):
        if self.reset:
            raise ConnectionResetError(104, "Connection reset by peer")

    async def drain_nothing(self):
        pass

    def close(self):
        if not self.closed:
            self.closed = True
            self.d.net.close(self.p.name, self.conn)


# The model's request lines (`Request::path`, src/models/decnet/msg.rs): a
# mutate is an `Operation` too.
REQUEST_LINES = {
    "/swarm/heartbeat": "POST /swarm/heartbeat",
    "/health": "GET /health",
    "/deploy": "POST /deploy",
    "/mutate": "POST /deploy",
    "/self-destruct": "POST /self-destruct",
}


def wire_len(sender: str, msg) -> int:
    """A client message's size on a stream as the engine counts it
    (`wire_len`: the model's `Msg::describe` plus 2), for the unread data
    of a stalled direction that a blocking write (a request) measures:
    only clients write on such a direction here (the agents to swarmctl,
    the API to the agents)."""
    if msg[0] == "ClientHello":
        text = "TLS ClientHello"
    elif msg[0] == "ClientFinished":
        # `Cert::describe` of the scenario's `certificate` (setup.rs).
        cert = {"none": "no certificate", "untrusted": f"untrusted cert {sender}"}.get(msg[1], f"cert {msg[1]}")
        text = f"TLS Certificate({cert})..Finished"
    elif msg[0] == "Request":
        text = REQUEST_LINES[msg[1]]
    else:
        raise Unsupported(f"the size of {msg[0] if isinstance(msg, tuple) else 'a bus frame'} on a stalled write's direction")
    return len(text.encode()) + 2


async def ranked_sleep(us, rank):
    """`asyncio.sleep` whose timer takes `rank` (`RANK`)."""
    token = RANK.set(rank)
    try:
        await asyncio.sleep(us / 1_000_000)
    finally:
        RANK.reset(token)


def _drive(sc, w, loop, m, agents, by_name, links, env, hb, httpx, sc_tcp):
    d = types.SimpleNamespace(loop=loop, m=m, w=w)
    nodes = {n.name: tcp.Node(n.name) for n in sc.nodes}
    d.net = net = tcp.Net(
        tcp.Sched(loop), links, nodes, wire_len=wire_len, unread_limit=sc_tcp.get("unread_limit")
    )
    def swarmctl(peer, cert, request):
        _, content, headers = request
        return m.handle(loop.now_us, loop.wall_us(), peer, cert, content, headers, w.rec)

    server = Server(d, m.name, "decnet-swarmctl", swarmctl)

    class Transport(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request):
            p = CUR.get()
            content = await request.aread()
            if isinstance(p, Agent):
                # The agent's heartbeat (DECNET_MASTER_HOST is "master") or
                # lifecycle push: its body shape and certificate.
                to, cert, content = m.name, p.cert, shape(p.body, content)
            else:
                # The main API's AgentClient: the row's address is the
                # agent's node; the master's client certificate.
                to, cert = request.url.host, "decnet-master"
            fut = loop.create_future()
            req = (request.url.path, content, list(request.headers.raw))
            Call(d, p, to, cert, req, request.extensions["timeout"], fut)
            status, hdrs, body = await fut
            if PUSHING.get() and status in (200, 204):
                # `push_lifecycle_delta` returns quietly (l. 192): the
                # model's `push`.
                w.rec(loop.now_us, p.name, "push", None, str(status))
            return httpx.Response(status, headers=hdrs, content=body, request=request)

    transport = Transport()
    real_client = httpx.AsyncClient

    def client(**kw):
        kw.pop("verify", None)
        return real_client(transport=transport, **kw)

    hb.httpx = types.SimpleNamespace(**{**vars(httpx), "AsyncClient": client})

    async def status():
        """`executor.status()`, the first thing `_build_body` awaits
        (`heartbeat.py` l. 59): the agent's state as the build begins, then
        the node's `tick_time` (the status and the body's build, the
        model's: an operation that ends meanwhile shows in the next body)."""
        a = CUR.get()
        snapshot = _status(a)
        if a.tick_us:
            await ranked_sleep(a.tick_us, R_PUSH_BUILD if PUSHING.get() else R_BEAT)
        return snapshot

    def _status(a):
        if not a.deployed:
            return {"deployed": False, "deckies": []}
        return {
            "deployed": True,
            "deckies": _decky_configs(a),
            # `deckies` run, `degraded` ones do not (setup.rs).
            "runtime": {d: {"running": d not in a.degraded} for d in a.deckies + a.degraded},
        }

    hb._exec = types.SimpleNamespace(status=status)

    async def sleep(seconds, *args):
        a = CUR.get(None)
        if a is not None and a.interval_us is not None and seconds == hb.INTERVAL_S:
            seconds = a.interval_us / 1_000_000
        return await asyncio.sleep(seconds, *args)

    hb.asyncio = types.SimpleNamespace(**{**vars(asyncio), "sleep": sleep})
    real_tick = hb._tick if not hasattr(hb._tick, "heartsim") else hb._tick.heartsim
    real_build = hb._build_body if not hasattr(hb._build_body, "heartsim") else hb._build_body.heartsim

    # (`_build_body` is upstream's own: its `status()` takes the time.)
    hb._build_body = real_build

    async def tick(*args, **kw):
        a = CUR.get()
        a.rejected = False
        await real_tick(*args, **kw)
        if not a.rejected:
            w.rec(loop.now_us, a.name, "beat", m.name, "204")

    tick.heartsim = real_tick
    hb._tick = tick

    class Handler(logging.Handler):
        def emit(self, r):
            a = CUR.get(None)
            if a is None:
                return
            msg = r.msg
            if msg.startswith("heartbeat rejected"):
                a.rejected = True
                w.rec(loop.now_us, a.name, "beat-rejected", m.name, str(r.args[0]))
            elif msg.startswith("lifecycle delta push rejected"):
                w.rec(loop.now_us, a.name, "push-rejected", None, str(r.args[0]))
            elif msg.startswith("push_lifecycle_delta failed"):
                w.rec(loop.now_us, a.name, "push-failed", None, type(r.exc_info[1]).__name__)
            elif msg.startswith("heartbeat tick failed"):
                w.rec(loop.now_us, a.name, "beat-failed", m.name, type(r.exc_info[1]).__name__)
            elif msg.startswith("heartbeat not starting"):
                reason = (
                    "DECNET_HOST_UUID or DECNET_MASTER_HOST unset"
                    if "unset" in msg
                    else "worker SSL context unavailable"
                )
                w.rec(loop.now_us, a.name, "not-started", None, reason)

    logger = hb.log
    handler = Handler(logging.DEBUG)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

    def ssl_context(agent_dir):
        if not CUR.get().tls:
            raise OSError("no worker bundle")
        return None

    hb.build_worker_ssl_context = ssl_context
    real_push = hb.push_lifecycle_delta if not hasattr(hb.push_lifecycle_delta, "heartsim") else hb.push_lifecycle_delta.heartsim

    async def push(deltas):
        PUSHING.set(True)
        # `push_lifecycle_delta` reads `decnet.env`'s identity when it
        # runs (one agent per process upstream); the harness's agents
        # share the module, so give it this agent's before the call (it
        # reads them before its first await).
        a = CUR.get()
        # An operation's end (deploy_async, mutate_async: each pushes its
        # outcome once, at once): the model's `operation-done`.
        for delta in deltas:
            w.rec(loop.now_us, a.name, "operation-done", None, delta["status"])
        env.DECNET_HOST_UUID = a.uuid if a.identity else ""
        env.DECNET_MASTER_HOST = "master" if a.identity else ""
        return await real_push(deltas)

    push.heartsim = real_push
    hb.push_lifecycle_delta = push
    # The agent's directory (`_resolve_agent_dir`: DECNET_AGENT_DIR, one
    # process each upstream) is its own; no docker daemon runs
    # (`topology_ops.state` reports the error in `observed`, as upstream
    # does when the socket is gone).
    hb._resolve_agent_dir = lambda: CUR.get().agent_dir
    import decnet.agent.topology_ops as topo_ops

    def no_docker():
        raise topo_ops.docker.errors.DockerException("heartsim: no docker daemon")

    topo_ops.docker = types.SimpleNamespace(from_env=no_docker, errors=topo_ops.docker.errors)

    def start(a):
        env.DECNET_HOST_UUID = a.uuid if a.identity else ""
        env.DECNET_MASTER_HOST = "master" if a.identity else ""
        hb._task = None
        hb.start()

    # -- the bus (`decnet/bus`) and the main API's workers panel
    import decnet.bus.publish as bus_publish
    import decnet.bus.unix_client as unix_client
    import decnet.bus.unix_server as unix_server
    import decnet.web.worker_registry as worker_registry

    procs = {a.name: a for a in agents}
    for n in sc.nodes:
        if n.kind in ("api", "bus"):
            procs[n.name] = Proc(n)
    for a in agents:
        a.calls, a.tasks = {}, set()

    def task_factory(loop_, coro, context=None):
        # Every task belongs to the process that created it (the context's
        # CUR): a process's end cancels them all.
        task = asyncio.Task(coro, loop=loop_, context=context)
        p = (context or contextvars.copy_context()).get(CUR)
        if p is not None:
            p.tasks.add(task)
            task.add_done_callback(p.tasks.discard)
        return task

    loop.set_task_factory(task_factory)
    epoch = EPOCH.timestamp()
    # `time.time()` of every process: its wall clock (the simulated epoch +
    # its node's wall clock).
    wall = types.SimpleNamespace(**{**vars(_time), "time": lambda: epoch + loop.wall_us() / 1_000_000})
    bus_publish.time = wall
    worker_registry.time = wall

    def bus_of(p):
        """The bus node a process reaches: an agent's `bus` key; the API's
        host's bus daemon (`api.rs`: it subscribes to the bus on its host)."""
        if isinstance(p, Agent):
            return p.bus
        return next((n.name for n in sc.nodes if n.kind == "bus" and n.host is not None and n.host == p.host), None)

    async def open_unix_connection(path=None, **kw):
        p = CUR.get()
        end = StreamEnd(d, p)
        end.fut = loop.create_future()
        end.conn = net.connect(p.name, bus_of(p))
        p.calls[end.conn] = end
        await end.fut
        return end.reader, end.writer

    unix_client.asyncio = types.SimpleNamespace(**{**vars(asyncio), "open_unix_connection": open_unix_connection})

    class Bus(unix_client.UnixSocketBus):
        """Upstream's client; its reader loop's end (the daemon's FIN or
        RST: `unix_client.py` l. 236-264) is the model's `bus lost`: the
        subscriptions end and nothing reconnects (l. 18-21)."""

        async def _reader_loop(self):
            await super()._reader_loop()
            p = CUR.get()
            w.rec(loop.now_us, p.name, "bus", bus_of(p), "lost")
            # Upstream's health loop publishes on into the dead bus, each
            # publish failing with a logged warning: no decision, and a
            # 30 s timer the model does not have (`on_bus`: `next_bus =
            # None`), which would only reorder the node's wake-ups among
            # same-instant events (`_Loop`). Not run on.
            task = getattr(p, "bus_task", None)
            if task is not None:
                task.cancel()

    async def agent_bus(a):
        """`agent/app.py` `_lifespan` after `_heartbeat.start()` (l. 117-129)."""
        bus = None
        try:
            bus = Bus(socket_path="/run/decnet/bus.sock", client_name="agent")
            await bus.connect()
        except Exception:  # noqa: BLE001 - upstream's `except Exception`
            # "agent: bus unavailable, skipping health heartbeat"
            w.rec(loop.now_us, a.name, "bus", a.bus, "unavailable")
            # `run_health_heartbeat(None, ..)` is a no-op sleep cycle: no
            # decision, and timers the model does not have (see `Bus`).
            return
        ctx = contextvars.copy_context()
        ctx.run(RANK.set, R_BUS)
        a.bus_task = asyncio.create_task(bus_publish.run_health_heartbeat(bus, "agent"), context=ctx)

    async def api_main(p):
        """`decnet/web/api.py`'s lifespan, the workers panel's part
        (l. 213-229): `get_app_bus()` (`bus/app.py` l. 44-66: connect, or
        None on any exception), then `get_registry().start(_bus)`. A fresh
        process has a fresh registry and no shared bus. (Its own `api`
        health loop is not run: the panel's `agent` row is what the model
        shows.)"""
        # The lifespan's sweep (l. 133-147): rows open for over an hour.
        cutoff = Now.now(_dt.timezone.utc) - _dt.timedelta(hours=1)
        await Repo(p).sweep_stale_lifecycle(cutoff, reason="master restarted during operation")
        bus = None
        if bus_of(p) is not None:
            try:
                bus = Bus(socket_path="/run/decnet/bus.sock", client_name="api")
                await bus.connect()
            except Exception:  # noqa: BLE001
                # "app bus unavailable: %s"
                w.rec(loop.now_us, p.name, "bus", bus_of(p), "unavailable")
                bus = None
        await p.registry.start(bus)

    def panel(p, incarnation, at):
        """The dashboard's `GET /workers` poll: upstream's `snapshot()`, the
        `agent` row, recorded when it changes (as the model does); the next
        one `every` after this one's deadline (`next_panel = at + every`)."""
        if nodes[p.name].incarnation != incarnation or not nodes[p.name].up:
            return
        row = next(r for r in p.registry.snapshot() if r.name == "agent")
        if p.shown != row.status:
            p.shown = row.status
            w.rec(loop.now_us, p.name, "worker-status", None, row.status)
        at += p.every
        loop.call_at_us(at, lambda: panel(p, incarnation, at), rank=R_PANEL)

    # -- the main API's probe (`GET /swarm/hosts` of the dashboard router)
    import decnet.swarm.client as agent_client
    import decnet.web.router.swarm_mgmt.api_list_hosts as list_hosts_api

    class Now(_dt.datetime):
        @classmethod
        def now(cls, tz=None):
            t = EPOCH + _dt.timedelta(microseconds=loop.wall_us())
            return t.astimezone(tz) if tz else t.replace(tzinfo=None)

    list_hosts_api.datetime = Now
    # The master's own client bundle (`ensure_master_identity`) and the
    # TLS contexts built from it are the model's TLS world: no files.
    agent_client.ensure_master_identity = lambda *a, **k: None

    def build_client(self, timeout):
        return httpx.AsyncClient(base_url=f"https://{self._address}:{self._port}", timeout=timeout, transport=transport)

    agent_client.AgentClient._build_client = build_client

    async def to_thread(func, *args, **kwargs):
        if getattr(func, "__name__", "") == "_fetch_peer_fingerprint":
            client = func.__self__
            if not client._address:
                # A row enrolled without an address (the bundle flow,
                # `api_enroll_bundle.py` l. 165): `create_connection(("",
                # 8765))` fails in `getaddrinfo` before any packet, as
                # CPython raises it (the thread's result one loop turn on).
                await asyncio.sleep(0)
                raise socket.gaierror(-2, "Name or service not known")
            fut = loop.create_future()

            def mismatch():
                return agent_client.FingerprintMismatchError(
                    f"{client._address}:{client._port}", client._expected_fingerprint or "", ""
                )

            PinCall(d, CUR.get(), client._address, fut, mismatch)
            return await fut
        raise OracleError(f"asyncio.to_thread({func!r}) in the main API")

    agent_client.asyncio = types.SimpleNamespace(**{**vars(asyncio), "to_thread": to_thread})

    class Probe(agent_client.AgentClient):
        """Upstream's client; what `_probe_and_update` catches (l. 38-43)
        or the probe's success is the model's `probe` record."""

        async def __aenter__(self):
            try:
                return await super().__aenter__()
            except Exception as e:
                w.rec(loop.now_us, CUR.get().name, "probe", self._address, type(e).__name__)
                raise

        async def health(self):
            try:
                r = await super().health()
            except Exception as e:
                w.rec(loop.now_us, CUR.get().name, "probe", self._address, type(e).__name__)
                raise
            w.rec(loop.now_us, CUR.get().name, "probe", self._address, "ok")
            return r

    list_hosts_api.AgentClient = Probe

    class Repo:
        """The main API's repository: upstream's, on swarmctl's database;
        each call runs to its end at once (as the model's transactions
        do) and what it changed is recorded by the API."""

        def __init__(self, p):
            self.p = p

        def __getattr__(self, name):
            fn = getattr(m.repo, name)

            async def call(*args, **kwargs):
                before = m.rows()
                result = m.call(fn(*args, **kwargs))
                m.record_changes(loop.now_us, before, m.rows(), w.rec, node=self.p.name)
                return result

            return call

    def probe(p, incarnation, at):
        """The dashboard's `GET /swarm/hosts` poll: upstream's `list_hosts`
        (`api_list_hosts.py` l. 55-61), every `probe_every` from this one's
        deadline (`next_probe = at + every`)."""
        if nodes[p.name].incarnation != incarnation or not nodes[p.name].up:
            return
        p.ctx.run(loop.create_task, list_hosts_api.list_hosts(None, {}, Repo(p)))
        at += p.probe_every
        loop.call_at_us(at, lambda: probe(p, incarnation, at), rank=R_PROBE)

    def failing(method):
        """`decommission`'s `except Exception: log.exception(..)` (l. 52-58)
        is the model's `operator self-destruct failed`."""

        async def wrapped(self, *args, **kwargs):
            try:
                return await method(self, *args, **kwargs)
            except Exception:
                w.rec(loop.now_us, CUR.get().name, "operator", self._address or None, "self-destruct failed")
                raise

        return wrapped

    # -- operator actions: decommission and enrol (the dashboard's routes,
    # called as FastAPI would, the admin and operator checks passed)
    import decnet.web.router.swarm.api_enroll_host as enroll_api
    import decnet.web.router.swarm_mgmt.api_enroll_bundle as bundle_api
    import decnet.web.router.swarm_mgmt.api_decommission_host as decommission_api
    from decnet.web.db.models import SwarmEnrollRequest
    from decnet.web.db.models.swarm import EnrollBundleRequest
    from fastapi import HTTPException

    decommission_api.AgentClient = type(
        "SelfDestruct",
        (agent_client.AgentClient,),
        {
            "__aenter__": failing(agent_client.AgentClient.__aenter__),
            "self_destruct": failing(agent_client.AgentClient.self_destruct),
        },
    )
    enroll_api.datetime = Now
    bundle_api.datetime = Now
    # The bundle route's payload (a tarball and a bootstrap script for the
    # new host to fetch) and the sweeper that unlinks its files later are
    # not the scenario's: the route runs with them stubbed, its files in
    # the case's directory.
    bundle_api.build_tarball = lambda *a, **k: b""
    bundle_api.render_bootstrap = lambda *a, **k: b""
    bundle_api.BUNDLE_DIR = pathlib.Path(m.db_path).parent / "enroll-bundles"
    bundle_api._ensure_sweeper = lambda: None
    bundle_api._BUNDLES.clear()
    bundle_route = bundle_api.create_enroll_bundle.__wrapped__

    async def act(p, action):
        """One of the API's `actions` (the model's `Job::Act`)."""
        what, uuid = action["action"], action["host_uuid"]
        if what in ("deploy", "mutate"):
            await deploy(p, uuid, action["decky"], what)
        elif what == "decommission":
            w.rec(loop.now_us, p.name, "operator", None, "decommission")
            try:
                await decommission_api.decommission_host(uuid, {}, Repo(p))
            except HTTPException:
                pass  # 404: the row is gone
        else:
            cert = action["certificate"]

            def issue(ca, name, sans):
                # Past the 409 check (l. 55-57): the model's `enrol`. The
                # certificate is the scenario's, by name (DER as `der`);
                # the bundle route's updater certificate (`with_updater`,
                # default true) is another.
                own = cert if not name.startswith("updater@") else name
                if own == cert:
                    w.rec(loop.now_us, p.name, "operator", None, "enrol")
                pem = b"heartsim-pem:" + own.encode()
                return types.SimpleNamespace(
                    fingerprint_sha256=hashlib.sha256(der(own)).hexdigest(),
                    cert_pem=pem,
                    key_pem=pem,
                    ca_cert_pem=pem,
                )

            # The CA and the bundle on disk are the model's TLS world; the
            # new uuid is the scenario's (upstream: uuid4).
            enroll_api.pki = types.SimpleNamespace(
                ensure_ca=lambda: None,
                issue_worker_cert=issue,
                DEFAULT_CA_DIR=pathlib.Path(m.db_path).parent / "ca",
                write_worker_bundle=lambda *a: None,
            )
            bundle_api.pki = enroll_api.pki
            enroll_api._uuid = types.SimpleNamespace(uuid4=lambda: uuid)
            name = action.get("name", uuid)
            try:
                if "node" in action:
                    req = SwarmEnrollRequest(name=name, address=action["node"])
                    await enroll_api.api_enroll_host(req, Repo(p), {}, None)
                else:
                    # No address: the dashboard's bundle flow, whose row
                    # has address "" until the host fetches its tarball
                    # (`api_enroll_bundle.py` l. 125-175; the host never
                    # does here). Its rate limit (10 a minute) is not
                    # applied; the uuid is the scenario's (upstream:
                    # `uuid.uuid4`, imported inside the route).
                    try:
                        req = EnrollBundleRequest(master_host="master", agent_name=name)
                    except ValueError as e:
                        raise Unsupported(f"an enrol without `node` of a name the bundle route refuses: {e}") from None
                    with _uuid4(uuid):
                        await bundle_route(req, types.SimpleNamespace(url=types.SimpleNamespace(scheme="https", port=None)), {}, Repo(p))
            except HTTPException as e:
                if e.status_code != 409:
                    raise
                w.rec(loop.now_us, p.name, "operator", None, "enrol refused 409")

    # -- deploys: the master's `SwarmDeployStrategy`, the agent's
    # `deploy_async` and `push_lifecycle_delta`, the API's startup sweep
    import decnet.agent.executor as executor
    import decnet.lifecycle.strategies as strategies
    import decnet.web.db.sqlmodel_repo.decky_lifecycle as lifecycle_repo

    lifecycle_repo.datetime = Now
    executor.DecnetConfig = __import__("decnet.models", fromlist=["DecnetConfig"]).DecnetConfig

    async def run_operation(config, **kw):
        """`deploy` of the engine (docker compose): `save_state(config)`
        first (`engine/deployer.py` l. 689, before `compose down`/`build`/
        `up`, l. 708-726): the agent reports the config's deckies, not
        running; then the node's `operation_time`, then its
        `operation_error` if any (the model's operation), else they run."""
        a = CUR.get()
        names = [d.name for d in config.deckies]
        a.deployed, a.deckies, a.degraded = True, [], list(names)
        await compose_up()
        # Its deckies run, those the saved state still holds (another
        # deploy may have replaced it meanwhile: the model's `set_running`).
        a.deckies += [n for n in a.degraded if n in names]
        a.degraded = [n for n in a.degraded if n not in names]

    async def compose_up():
        """`compose up` (of a deploy, or of a mutate's whole project): the
        node's `operation_time`, then its `operation_error` if any."""
        a = CUR.get()
        await ranked_sleep(a.operation_us, R_OPERATION)
        if a.operation_error:
            raise RuntimeError(a.operation_error)

    executor.deploy = run_operation

    # `mutate_async` (`agent/executor.py` l. 126-174) runs as upstream
    # wrote it; its world is the harness's: `load_state` is the agent's
    # saved deployment (None when not deployed; every decky it reports),
    # `save_state` and `write_compose` change nothing the model has (a
    # decky's services), and `compose up -d --remove-orphans` of the whole
    # project (`asyncio.to_thread(_compose_with_retry, ..)`, l. 165-168)
    # takes the operation's time and brings every decky up.
    import decnet.composer as composer
    import decnet.config as decnet_config
    import decnet.engine as engine

    def load_state():
        a = CUR.get()
        if not a.deployed:
            return None
        deckies = _decky_configs(a)
        cfg = executor.DecnetConfig(
            mode="swarm", interface="eth0", subnet="192.168.1.0/24", gateway="192.168.1.1", deckies=deckies
        )
        return cfg, pathlib.Path(a.agent_dir) / "decnet-compose.yml"

    decnet_config.load_state = load_state
    decnet_config.save_state = lambda *a, **k: None
    composer.write_compose = lambda *a, **k: None

    def mutate_compose(*args, **kwargs):
        raise OracleError("_compose_with_retry outside the agent's to_thread")

    engine._compose_with_retry = mutate_compose

    async def agent_to_thread(func, *args, **kwargs):
        if func is not mutate_compose:
            raise OracleError(f"asyncio.to_thread({func!r}) in the agent")
        a = CUR.get()
        await compose_up()
        a.deckies, a.degraded = a.deckies + a.degraded, []

    executor.asyncio = types.SimpleNamespace(**{**vars(asyncio), "to_thread": agent_to_thread})

    async def deploy(p, uuid, decky, operation="deploy"):
        """`POST /deckies/deploy` of one decky on a host (the model's
        `Deploy` action): the route's lifecycle row (`pending`), then
        upstream's `SwarmDeployStrategy.execute` (`lifecycle/strategies.py`
        l. 181-234): `running`, `/deploy` through `AgentClient`, `failed`
        if the dispatch raised. A mutate (`POST /deckies/{name}/mutate`,
        `web/router/fleet/api_mutate_decky.py` l. 80-101) is the same with
        `SwarmMutateStrategy.execute` (l. 308-346) and `/mutate`; the
        master's own deployment state, which that route reads for the
        decky's host, is the action's `host_uuid`. The model creates the
        row `running` in one step (docs/models/decnet.md): the `pending`
        row is not recorded."""
        lid = m.call(
            m.repo.create_lifecycle(
                {"decky_name": decky, "host_uuid": uuid, "operation": operation}
            )
        )
        cfg = executor.DecnetConfig(
            mode="swarm",
            interface="eth0",
            subnet="192.168.1.0/24",
            gateway="192.168.1.1",
            deckies=[
                {
                    "name": decky,
                    "ip": "192.168.1.10",
                    "services": ["ssh"],
                    "distro": "debian",
                    "base_image": "debian:bookworm-slim",
                    "hostname": decky,
                    "host_uuid": uuid,
                }
            ],
        )
        if operation == "deploy":
            await strategies.SwarmDeployStrategy().execute(Repo(p), None, lifecycle_ids={decky: lid}, config=cfg)
        else:
            await strategies.SwarmMutateStrategy().execute(
                Repo(p),
                None,
                lifecycle_id=lid,
                decky=cfg.deckies[0],
                services=["ssh"],
                full_config=cfg,
                compose_path=pathlib.Path("/var/lib/decnet/decnet-compose.yml"),
            )

    def action(p, incarnation, a):
        if nodes[p.name].incarnation == incarnation and nodes[p.name].up:
            p.ctx.run(loop.create_task, act(p, a))

    def agent_api(a, peer, cert, request):
        """The agent's API (`decnet/agent/app.py`), the harness's stand-in
        (its routes as the model has them): `GET /health` answers 200;
        `POST /self-destruct` (l. 234-248): `executor.self_destruct()`
        spawns the reaper and the route answers 200; the reaper's `sleep 3`
        then `systemctl stop decnet-agent` ends the agent
        (`agent/executor.py` l. 219-231; the model's `self-destruct`
        records)."""
        path = request[0]
        ok = (200, [(b"content-type", b"application/json")], b'{"status":"ok"}')
        if path == "/health":
            return ok
        if path == "/deploy":
            # `deploy` (l. 206-218): the background `deploy_async`, 202.
            cfg = executor.DecnetConfig.model_validate(json.loads(request[1])["config"])
            w.rec(loop.now_us, a.name, "operation-started", peer)
            a.ctx.run(loop.create_task, executor.deploy_async(cfg))
            return 202, [(b"content-type", b"application/json")], b'{"status":"accepted"}'
        if path == "/mutate":
            # `mutate` (l. 318-366): not a dry run, the background
            # `mutate_async`, 202.
            body = json.loads(request[1])
            w.rec(loop.now_us, a.name, "operation-started", peer)
            a.ctx.run(loop.create_task, executor.mutate_async(body["decky_id"], list(body["services"])))
            return 202, [(b"content-type", b"application/json")], b'{"status":"accepted"}'
        if path == "/self-destruct":
            # `self_destruct` tears down and `clear_state`s before
            # answering (`agent/executor.py` l. 256-258).
            a.deployed, a.deckies, a.degraded = False, [], []
            w.rec(loop.now_us, a.name, "self-destruct", peer, "scheduled")
            if not a.reaper:
                a.reaper = True
                inc = nodes[a.name].incarnation

                def reap():
                    if nodes[a.name].incarnation == inc and nodes[a.name].up:
                        w.rec(loop.now_us, a.name, "self-destruct", None, "stopped")
                        end(a.name)

                # Before anything else due at its instant: the model's
                # `on_timeout` looks at the reaper first (agent.rs), an
                # order upstream does not fix (`systemctl stop` comes from
                # outside the agent's loop).
                loop.call_at_us(loop.mono_us() + 3_000_000, reap, rank=R_REAPER)
            return ok
        raise OracleError(f"the agent's API got {path}")

    def agent_dispatch(p, peer, inp):
        call = p.calls.get(inp[1])
        if call is not None:
            call.on_input(inp)
        else:
            p.server.dispatch(peer, inp)

    def bus_accept(p, peer, inp):
        if inp[0] == "Accepted":
            end = StreamEnd(d, p, inp[1])
            p.calls[inp[1]] = end
            p.ctx.run(loop.create_task, p.server._handle_connection(end.reader, end.writer))
        else:
            (p.calls.get(inp[1]) or _Ignore).on_input(inp)

    def boot(name):
        """`Engine::boot`: a new process (its `Start`)."""
        with loop.running(name):
            start_process(name)

    def start_process(name):
        if name == m.name:
            net.boot(name, server.dispatch)
            server.conns.clear()
            server.aborts.clear()
            nodes[name].listening = True  # `out.listen()` at Start
            return
        p = procs[name]
        p.calls.clear()
        p.ctx = contextvars.copy_context()
        p.ctx.run(CUR.set, p)
        if isinstance(p, Agent):
            # The agent's API listens (`serves`); impostors run none.
            p.server = Server(d, name, p.cert, lambda peer, cert, req: agent_api(p, peer, cert, req))
            p.reaper = False
            net.boot(name, lambda peer, inp: agent_dispatch(p, peer, inp))
            nodes[name].listening = not p.impostor
            p.ctx.run(start, p)
            if p.bus is not None:
                p.ctx.run(loop.create_task, agent_bus(p))
        elif p.kind == "bus":
            # `BusServer` as `decnet bus` runs it; `start()`'s bind
            # (and its socket file's mode) is the stream's listen here.
            net.boot(name, lambda peer, inp: bus_accept(p, peer, inp))
            nodes[name].listening = True
            p.server = unix_server.BusServer("/run/decnet/bus.sock")
        else:
            net.boot(name, lambda peer, inp: (p.calls.get(inp[1]) or _Ignore).on_input(inp))
            p.registry = worker_registry.WorkerRegistry()
            p.shown = None
            p.ctx.run(loop.create_task, api_main(p))
            inc = nodes[name].incarnation
            for a in p.keys.get("actions", []):
                # The model's `next_action`: those before the start are
                # over; the rest run at their time.
                at = duration_us(a["at"])
                if at >= loop.mono_us():
                    loop.call_at_us(at, lambda a=a: action(p, inc, a), rank=R_ACTION)
            if "probe_every" in p.keys:
                p.probe_every = duration_us(p.keys["probe_every"])
                inc = nodes[name].incarnation
                at = loop.mono_us() + p.probe_every
                loop.call_at_us(at, lambda at=at: probe(p, inc, at), rank=R_PROBE)
            if "panel_every" in p.keys:
                p.every = duration_us(p.keys["panel_every"])
                inc = nodes[name].incarnation
                at = loop.mono_us() + p.every
                loop.call_at_us(at, lambda at=at: panel(p, inc, at), rank=R_PANEL)

    def gone(name):
        """The process ends: its tasks and its requests stop at once."""
        p = procs.get(name)
        if p is None:
            return
        for call in list(p.calls.values()):
            call.abandon()
        p.calls.clear()
        for task in list(p.tasks):
            task.cancel()

    def end(name):
        """`Engine::end_process` (`kill`; `stop` after its no-op `Stop`)."""
        gone(name)
        net.end_process(name)

    def crash(name):
        gone(name)
        net.crash(name)

    def fault(f):
        if f.kind == "clock-jump":
            sc.nodes[f.node].clock.jump(signed_us(f.raw["by"]))
            return
        if f.kind == "clock-drift":
            # The node's deadline is on its own clock: where it falls in
            # global time has moved (`Fault::ClockDrift` re-arms).
            sc.nodes[f.node].clock.set_drift(loop.now_us, int(f.raw["ppm"]))
            loop.dirty[sc.nodes[f.node].name] = None
            return
        if f.kind == "heal":
            net.heal()
            return
        if f.kind in ("break", "repair", "hold", "stall", "release"):
            frm, to = f.raw["from"], f.raw["to"]
            if f.kind == "break":
                net.break_link(frm, to)
            elif f.kind == "repair":
                net.repair_link(frm, to)
            elif f.kind == "release":
                net.release(frm, to)
            else:
                net.hold(frm, to, f.kind == "stall")
            return
        if f.kind == "link":
            # `Fault::Link`: one direction's config from then on.
            net.links.set_link(*f.link)
            return
        if f.kind == "partition":
            if "groups" in f.raw:
                net.partition(f.raw["groups"])
            else:
                net.partition_one_way(f.raw["from"], f.raw["to"])
            return
        names = [sc.nodes[f.node].name] if f.node is not None else [n.name for n in sc.nodes if n.host == f.host]
        for name in names:
            if f.kind == "start":
                boot(name)
            elif f.kind == "restart":
                if nodes[name].up:
                    crash(name)
                boot(name)
            elif f.kind in ("kill", "stop"):
                end(name)
            elif f.kind == "crash":
                crash(name)
            elif f.kind == "pause":
                net.pause(name)
            elif f.kind == "resume":
                net.resume(name)

    # The engine's order at one instant: node starts (node order), then
    # faults (file order), each as it comes.
    events = [(n.start_us, 0, i, lambda n=n: boot(n.name)) for i, n in enumerate(sc.nodes)]
    events += [(f.at_us, 1, i, lambda f=f: fault(f)) for i, f in enumerate(sc.faults)]
    for t, _, _, fn in sorted(events, key=lambda e: e[:3]):
        loop.call_event_us(t, fn)
    # What happens at the scenario's last instant counts (the engine runs
    # events at `duration`): stop just after, keep nothing later.
    loop.call_event_us(sc.duration_us + 1, loop.stop)
    try:
        loop.run_forever()
        if loop.error is not None:
            raise loop.error
    finally:
        for p in procs.values():
            for task in list(p.tasks):
                task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        logger.removeHandler(handler)
    return net.streams.noted


class _Ignore:
    @staticmethod
    def on_input(inp):
        pass


if __name__ == "__main__":
    for p in sys.argv[1:]:
        recs, _ = run(p)
        for r in recs:
            print(json.dumps(r))
