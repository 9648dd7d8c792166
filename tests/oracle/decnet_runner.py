"""DECNET 1.0.0 under the oracle (docs/oracle.md, "DECNET"): upstream's own
agent loop (`decnet.agent.heartbeat`: `start`, `_loop`, `_tick`,
`_build_body`) and the swarm controller's app (`decnet.web.swarm_api.app`,
whose `POST /swarm/heartbeat` is `api_heartbeat.heartbeat`) on a fresh
SQLite database, joined by an httpx transport that carries each request
in-process under virtual time, with the connection's fate (its round
trips, a refused connect, a connect timeout, a TLS refusal) as the model's
network defines it.

Upstream decides: when each tick starts (tick, then `asyncio.sleep(30)`),
whether the loop starts at all, how an outcome is classified (204 quiet,
another status `heartbeat rejected`, an exception `heartbeat tick
failed`), and the handler's answer and the host row it writes (422 from
FastAPI's validation, 404, 403, 204). The harness decides what the model's
world decides: the network's timing and faults, the TLS layer (which
certificate reaches the handler), the executor's status, and the hostile
clients' bodies and intervals.

What the runner cannot run raises `Unsupported` (the oracle counts the
file as skipped, never as agreeing).
"""
from __future__ import annotations

import asyncio
import contextvars
import datetime as _dt
import hashlib
import heapq
import json
import logging
import os
import selectors
import ssl
import sys
import tempfile
import threading
import types
import warnings

from scenario import duration_us, load
from vworld import OracleError, Unsupported

KNOWN: dict[str, str] = {}

EPOCH = _dt.datetime(2026, 1, 12, 10, 0, 0, tzinfo=_dt.timezone.utc)
AGENT_KEYS = {
    "host_uuid", "identity", "tls", "certificate", "enrolled", "body", "tick_time",
    "deployed", "deckies", "degraded", "interval",
    # What it reports of its topology reaches only the resync flag (not
    # compared, with `[config] topologies`: swarmctl's database is seeded
    # without them).
    "topology",
}
FAULTS = {"start", "kill", "stop", "crash", "restart", "partition", "heal"}
# The model's bodies of a hostile client (src/models/decnet/msg.rs).
SHAPES = {"upstream", "not-json", "no-host-uuid", "no-status", "status-not-object", "host-uuid-not-string"}
CONNECT_TIMEOUT_US = 5_000_000
SYN_RETRIES_US = (0, 1_000_000, 3_000_000)  # RTO 1 s, doubling (docs/streams.md)

_env_ready = False


def _import_upstream():
    global _env_ready
    if not _env_ready:
        # decnet/env.py refuses to import without these (never used here).
        os.environ.setdefault("DECNET_JWT_SECRET", "heartsim-oracle-" + "x" * 32)
        os.environ.setdefault("DECNET_ADMIN_PASSWORD", "heartsim-oracle-admin")
        os.environ["DECNET_TESTING"] = "1"
        os.environ["DECNET_AGENT_DIR"] = "/nonexistent/heartsim-oracle-agent"
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
    seq = 0

    def _key(self):
        return (self._when, self.seq)

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


class _Loop(asyncio.SelectorEventLoop):
    """The agents' asyncio loop on the simulated monotonic clock (µs)."""

    def __init__(self):
        self.now_us = 0
        self._seq = 0
        super().__init__(_Selector(self))

    def time(self):
        return self.now_us / 1_000_000

    def call_at(self, when, callback, *args, context=None):
        # The engine's order, (time, seq): timers due at one instant run in
        # the order they were set (asyncio's heap alone does not promise it).
        self._check_closed()
        timer = _Timer(when, callback, args, self, context)
        self._seq += 1
        timer.seq = self._seq
        heapq.heappush(self._scheduled, timer)
        timer._scheduled = True
        return timer

    def _make_self_pipe(self):
        pass

    def _close_self_pipe(self):
        pass

    def _write_to_self(self):
        pass

    def _process_events(self, event_list):
        pass


CUR: contextvars.ContextVar = contextvars.ContextVar("agent")


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
        self.deployed = k.get("deployed", False)
        self.deckies = k.get("deckies", [])
        self.degraded = k.get("degraded", [])
        self.up = False
        self.task = None
        self.rejected = False


def der(cert: str) -> bytes:
    """A certificate's DER bytes: only their SHA-256 is read upstream."""
    return b"heartsim-certificate:" + cert.encode()


class Master:
    """swarmctl: upstream's app on its own (real) asyncio loop and thread,
    called synchronously at the instant a request reaches it; its
    `datetime.now` in api_heartbeat is the master's simulated wall clock."""

    def __init__(self, node, agents, tmp):
        _, _, api, app, get_repo, SQLiteRepository = _import_upstream()
        self.name = node.name
        self.up = True
        self.host_up = True
        self.api = api
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.repo = SQLiteRepository(db_path=os.path.join(tmp, "decnet.db"))
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
                        "cert_bundle_path": "/var/lib/decnet/ca/workers/" + name,
                        "status": "enrolled",
                    }
                )
            )
        self.agent_names = {a.name for a in agents if not a.impostor}

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def _rows(self):
        return {h["uuid"]: (h["name"], h["status"], h["last_heartbeat"]) for h in await self.repo.list_swarm_hosts()}

    def handle(self, t_us, agent, content, headers, rec):
        import httpx

        self.now_us = t_us
        chain = [der(agent.cert)]

        async def app(scope, receive, send):
            scope["extensions"] = {"tls": {"client_cert_chain": chain}}
            await self.app(scope, receive, send)

        async def go():
            before = await self._rows()
            transport = httpx.ASGITransport(app=app)
            req = httpx.Request("POST", "https://master:8770/swarm/heartbeat", content=content, headers=headers)
            resp = await transport.handle_async_request(req)
            body = await resp.aread()
            after = await self._rows()
            return resp.status_code, list(resp.headers.raw), body, before, after

        status, hdrs, body, before, after = self.call(go())
        if status == 204:
            reason = "204"
        elif status == 422:
            reason = "422 request body validation error"
        else:
            reason = f"{status} {json.loads(body).get('detail')}"
        rec(t_us, self.name, "heartbeat", agent.name, reason)
        for uuid, row in after.items():
            if before.get(uuid) != row:
                peer = row[0] if row[0] in self.agent_names else None
                rec(t_us, self.name, "host-row", peer, row[1])
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


class World:
    def __init__(self, sc):
        self.sc = sc
        self.records: list[dict] = []
        self.partition = None  # node name -> group index
        self.unsupported = None

    def rec(self, t_us, node, kind, peer=None, reason=None):
        r = {"t_us": t_us, "node": node, "kind": kind}
        if peer is not None:
            r["peer"] = peer
        if reason is not None:
            r["reason"] = reason
        self.records.append(r)

    def cut(self, a, b):
        p = self.partition
        return p is not None and a in p and b in p and p[a] != p[b]


def run(path: str, as_the_model: bool = False) -> tuple[list[dict], set[str]]:
    import httpx

    env, hb, _, _, _, _ = _import_upstream()
    sc = load(path)
    with open(path, "rb") as f:
        import tomllib

        doc = tomllib.load(f)
    net = doc.get("network", {})
    if set(net) - {"latency"} or doc.get("link") or set(doc.get("config", {})) - {"topologies"}:
        raise Unsupported("network keys other than latency, [[link]], or [config] keys other than topologies")
    lat_us = duration_us(net.get("latency", "0s"))
    if any(h.clock_drift_ppm or h.clock_offset_us for h in sc.hosts):
        raise Unsupported("host clocks")
    other = sorted({n.kind for n in sc.nodes} - {"swarmctl", "agent", "impostor"})
    if other:
        raise Unsupported(f"node kinds {other} (the main API and the bus are not run)")
    masters = [n for n in sc.nodes if n.kind == "swarmctl"]
    agents = []
    for n in sc.nodes:
        if n.kind in ("agent", "impostor"):
            if n.clock.drift:
                raise Unsupported("clock drift")
            agents.append(Agent(n, n.index))
        elif n.kind != "swarmctl":
            raise Unsupported(f"node kind {n.kind}")
        if n.host is not None and sum(1 for m in sc.nodes if m.host == n.host) > 1:
            raise Unsupported("two processes on one host")
    for f in sc.faults:
        if f.kind not in FAULTS or (f.kind == "partition" and "groups" not in f.raw):
            raise Unsupported(f"fault {f.kind}")
    if len(masters) != 1 or masters[0].keys:
        raise Unsupported("swarmctl keys")
    w = World(sc)
    loop = _Loop()
    by_name = {a.name: a for a in agents}
    with tempfile.TemporaryDirectory(prefix="heartsim-decnet-") as tmp:
        m = Master(masters[0], agents, tmp)
        try:
            _drive(sc, w, loop, m, agents, by_name, lat_us, env, hb, httpx)
        finally:
            m.call(m.repo.engine.dispose())
            m.loop.call_soon_threadsafe(m.loop.stop)
            m.thread.join()
            m.loop.close()
            loop.close()
    return [r for r in w.records if r["t_us"] <= sc.duration_us], set()


def _drive(sc, w, loop, m, agents, by_name, lat_us, env, hb, httpx):
    rtt = 2 * lat_us

    class Transport(httpx.AsyncBaseTransport):
        """One request on a new connection (keepalive_expiry 5 s < 30 s):
        SYN; SYN-ACK and ClientHello one round trip later; the server's
        flight and the client's Finished + request a round trip after;
        the request reaches swarmctl half a round trip later, the
        response the agent one latency after that."""

        async def handle_async_request(self, request):
            a = CUR.get()
            content = shape(a.body, await request.aread())
            s = loop.now_us
            # TCP connect: a SYN through (each try at 0, 1, 3 s) is
            # answered a round trip later: a RST if swarmctl's process is
            # down on a live host (ConnectError), a SYN-ACK if it listens.
            ok_at = None
            for off in SYN_RETRIES_US:
                t = s + off
                if t >= s + CONNECT_TIMEOUT_US:
                    break
                if self.reachable(a, t):
                    ok_at = t
                    break
            if ok_at is None or ok_at + rtt >= s + CONNECT_TIMEOUT_US:
                await self.until(s + CONNECT_TIMEOUT_US, a, s)
                raise httpx.ConnectTimeout("timed out", request=request)
            if not m.up:
                await self.until(ok_at + rtt, a, s)
                raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
            tls = ok_at + rtt
            if rtt >= CONNECT_TIMEOUT_US:
                await self.until(tls + CONNECT_TIMEOUT_US, a, s)
                raise httpx.ConnectTimeout("timed out", request=request)
            arrive = tls + rtt + lat_us
            await self.until(arrive, a, s)
            if a.cert in ("none", "untrusted"):
                # CERT_REQUIRED: the handshake fails on the server; the
                # client sees the alert on its first read, as a raw
                # `ssl.SSLError`: anyio re-raises it (`_backends/_asyncio`
                # `tls.py` ~197-208) and neither httpcore's read mapping nor
                # httpx's maps it (`default.py` ~114-115: `if mapped_exc is
                # None: raise`); see src/models/decnet/https.rs.
                await self.until(arrive + lat_us, a, s)
                raise ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca")
            status, hdrs, body = m.handle(arrive, a, content, list(request.headers.raw), w.rec)
            await self.until(arrive + lat_us, a, s)
            return httpx.Response(status, headers=hdrs, content=body, request=request)

        def reachable(self, a, t):
            self.stable(a, t, t)
            return m.host_up and not w.cut(a.name, m.name)

        def stable(self, a, s, t):
            for f in sc.faults:
                if s < f.at_us <= t and self.touches(f, a):
                    # Not an Exception: upstream's `except Exception` must
                    # not log it as a failed tick. The run ends and raises.
                    w.unsupported = Unsupported(f"a {f.kind} during a request (at {f.at_us} us)")
                    loop.stop()
                    raise asyncio.CancelledError

        def touches(self, f, a):
            """Whether a fault can change this request's exchange."""
            if f.kind == "heal":
                return w.cut(a.name, m.name)
            if f.kind == "partition":
                side = {name: i for i, g in enumerate(f.raw["groups"]) for name in g}
                return a.name in side and m.name in side and side[a.name] != side[m.name]
            names = {sc.nodes[f.node].name} if f.node is not None else set()
            names |= {n.name for n in sc.nodes if f.host is not None and n.host == f.host}
            return a.name in names or m.name in names

        async def until(self, t, a, s):
            self.stable(a, s, t)
            await asyncio.sleep((t - loop.now_us) / 1_000_000)

    transport = Transport()
    real_client = httpx.AsyncClient

    def client(**kw):
        kw.pop("verify", None)
        return real_client(transport=transport, **kw)

    hb.httpx = types.SimpleNamespace(**{**vars(httpx), "AsyncClient": client})

    async def status():
        a = CUR.get()
        if not a.deployed:
            return {"deployed": False, "deckies": []}
        return {
            "deployed": True,
            # DeckyConfig's required fields (decnet/models.py), as
            # executor.status() dumps them.
            "deckies": [
                {
                    "name": d,
                    "ip": f"192.168.1.{10 + i}",
                    "services": ["ssh"],
                    "distro": "debian",
                    "base_image": "debian:bookworm-slim",
                    "hostname": d,
                }
                for i, d in enumerate(a.deckies)
            ],
            "runtime": {d: {"running": d not in a.degraded} for d in a.deckies},
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

    async def build(*args, **kw):
        a = CUR.get()
        if a.tick_us:
            await asyncio.sleep(a.tick_us / 1_000_000)
        return await real_build(*args, **kw)

    build.heartsim = real_build
    hb._build_body = build

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

    def start(a):
        env.DECNET_HOST_UUID = a.uuid if a.identity else ""
        env.DECNET_MASTER_HOST = "master" if a.identity else ""
        hb._task = None
        a.up = True
        a.task = hb.start()

    def launch(a):
        ctx = contextvars.copy_context()
        ctx.run(CUR.set, a)
        start_in = ctx.run
        start_in(start, a)

    def stop(a):
        a.up = False
        if a.task is not None:
            a.task.cancel()
            a.task = None

    def fault(f):
        node = sc.nodes[f.node].name if f.node is not None else None
        on_host = (
            [n.name for n in sc.nodes if n.host == f.host] if f.host is not None else [node] if node else []
        )
        if f.kind == "heal":
            w.partition = None
        elif f.kind == "partition":
            w.partition = {name: i for i, g in enumerate(f.raw["groups"]) for name in g}
        for name in on_host:
            if name == m.name:
                if f.kind in ("kill", "stop"):
                    m.up = False
                elif f.kind == "crash":
                    m.up = m.host_up = False
                elif f.kind in ("restart", "start"):
                    m.up = m.host_up = True
            elif name in by_name:
                a = by_name[name]
                if f.kind in ("kill", "stop", "crash"):
                    stop(a)
                elif f.kind in ("restart", "start") and not a.up:
                    launch(a)

    # The engine's order at one instant: node starts (node order), then
    # faults (file order), each as it comes.
    events = [(a.start_us, 0, i, lambda a=a: launch(a)) for i, a in enumerate(agents)]
    events += [(f.at_us, 1, i, lambda f=f: fault(f)) for i, f in enumerate(sc.faults)]
    for t, _, _, fn in sorted(events, key=lambda e: e[:3]):
        loop.call_at(t / 1_000_000, fn)
    # What happens at the scenario's last instant counts (the engine runs
    # events at `duration`): stop just after, keep nothing later.
    loop.call_at((sc.duration_us + 1) / 1_000_000, loop.stop)
    try:
        loop.run_forever()
        if w.unsupported is not None:
            raise w.unsupported
    finally:
        for a in agents:
            if a.task is not None:
                a.task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        logger.removeHandler(handler)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        recs, _ = run(p)
        for r in recs:
            print(json.dumps(r))
