"""Run a heartsim kstlib scenario on the real kstlib (docs/oracle.md).

Upstream's own code decides everything the model's records say:
`Heartbeat` (its `_run_loop` thread or `_async_loop` task, `beat`,
`is_alive`) and `Watchdog` (`_monitor_loop` / `_async_monitor_loop`,
`from_state_file`, `_is_state_file_alive`), built from the scenario's raw
node keys (upstream clamps intervals and timeouts itself). The harness
supplies what the scenario says about the world: virtual clocks (vworld.py),
a disk per host with the medium's rules (a port of sim/src/fs.rs, reached
through the `pathlib.Path` calls upstream makes), the faults, and the
applications around upstream's objects (a monitor's polling loop, a
worker's pings), and it turns upstream's callbacks into records.
"""

from __future__ import annotations

import contextlib
import errno as E
import json
import logging
import os
import pathlib
from datetime import datetime as RealDatetime
from datetime import timedelta
from types import SimpleNamespace

import vworld
from scenario import Scenario, duration_us, signed_us
from vworld import APP, FAULT, US, Killed, OracleError, Process, World

import kstlib.resilience.heartbeat as hb_mod
import kstlib.resilience.watchdog as wd_mod
from kstlib.resilience.exceptions import HeartbeatError
from kstlib.resilience.heartbeat import Heartbeat
from kstlib.resilience.watchdog import Watchdog

# Where upstream looks them up: its module globals.
hb_mod.threading = vworld.threading_shim
wd_mod.threading = vworld.threading_shim
wd_mod.time = vworld.time_shim
hb_mod.datetime = vworld.VDatetime
wd_mod.datetime = vworld.VDatetime
hb_mod.os = SimpleNamespace(getpid=lambda: Runner.current.pid_of())
hb_mod.socket = SimpleNamespace(gethostname=lambda: Runner.current.hostname_of())

# --- The disk: a port of sim/src/fs.rs (`Disk`, `Disks`).

DIRTY_EXPIRE = 30 * US
MAX_FILES = 10_000
ERRNO = {"EIO": E.EIO, "ENOSPC": E.ENOSPC, "EACCES": E.EACCES}


def oserror(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


def parent(path: str) -> str:
    i = path.rfind("/")
    return "/" if i == 0 else ("." if i < 0 else path[:i])


def under(prefix: str | None, path: str) -> bool:
    if prefix is None:
        return True
    return path == prefix or (path.startswith(prefix) and (path[len(prefix):].startswith("/") or prefix.endswith("/")))


def _key_order(p: str | None):
    """Rust's order of `Option<String>` keys: None first, then by bytes."""
    return (p is not None, (p or "").encode())


class File:
    __slots__ = ("ino", "data", "written_at", "synced")

    def __init__(self, ino, data, written_at):
        self.ino, self.data, self.written_at, self.synced = ino, data, written_at, False


class Disk:
    def __init__(self, durability: str, write_time: int):
        self.durability = durability
        self.write_time = write_time
        self.dirs: set[str] = set()
        self.files: dict[str, File] = {}
        # As fs.rs's BTreeMap/BTreeSet: one entry per path (a second
        # `torn-write` of a path still pending adds nothing), searched in
        # key order (None, the whole disk, first).
        self.errors: dict[str | None, int] = {}
        self.torn: set[str | None] = set()
        self.next_ino = 0

    def mkdir_all(self, path: str):
        p = path
        while p not in ("/", ".", ""):
            if p in self.files:
                raise oserror(E.EEXIST, path)
            p = parent(p)
        p = path
        while p not in ("/", ".", ""):
            self.dirs.add(p)
            p = parent(p)

    def open_write(self, path: str, data: bytes, now: int):
        """`open(O_CREAT | O_TRUNC)`: returns (inode, the data that will land)."""
        if path in self.dirs:
            raise oserror(E.EISDIR, path)
        d = parent(path)
        if d not in ("/", ".") and d not in self.dirs:
            raise oserror(E.ENOENT, path)
        for p in sorted(self.errors, key=_key_order):
            if under(p, path):
                raise oserror(self.errors[p], path)
        if path not in self.files and len(self.files) >= MAX_FILES:
            raise oserror(E.ENOSPC, path)
        for p in sorted(self.torn, key=_key_order):
            if under(p, path):
                self.torn.discard(p)
                data = data[: len(data) // 2]
                break
        if path in self.files:
            ino = self.files[path].ino
        else:
            self.next_ino += 1
            ino = self.next_ino
        self.files[path] = File(ino, b"", now)
        return ino, data

    def land(self, ino: int, data: bytes, now: int):
        for f in self.files.values():
            if f.ino == ino:
                buf = bytearray(f.data)
                if len(buf) < len(data):
                    buf.extend(b"\0" * (len(data) - len(buf)))
                buf[: len(data)] = data
                f.data = bytes(buf)
                f.written_at = now
                f.synced = False
                return

    def rename(self, src: str, dst: str):
        if dst in self.dirs:
            raise oserror(E.EISDIR, dst)
        f = self.files.pop(src, None)
        if f is None:
            raise oserror(E.ENOENT, src)
        if dst in self.files and self.durability == "auto_da_alloc":
            f.synced = True
        self.files[dst] = f

    def read(self, path: str) -> bytes:
        f = self.files.get(path)
        if f is not None:
            return f.data
        if path in self.dirs:
            raise oserror(E.EISDIR, path)
        raise oserror(E.ENOENT, path)

    def power_loss(self, now: int):
        for f in self.files.values():
            if not (f.synced or now - f.written_at >= DIRTY_EXPIRE):
                f.data = b""
            f.synced = True


# --- `pathlib.Path` as upstream's code calls it, inside a simulated process.

_real = {name: getattr(pathlib.Path, name) for name in ("mkdir", "write_text", "replace", "exists", "read_text")}


def _sim():
    w = World.current
    return w is not None and w.actor is not None


def _mkdir(self, mode=0o777, parents=False, exist_ok=False):
    if not _sim():
        return _real["mkdir"](self, mode, parents, exist_ok)
    if not (parents and exist_ok):
        raise OracleError("the oracle's disk supports mkdir(parents=True, exist_ok=True) only")
    Runner.current.op(vworld.process(), "mkdir", str(self))


def _write_text(self, data, encoding=None, errors=None, newline=None):
    if not _sim():
        return _real["write_text"](self, data, encoding, errors, newline)
    Runner.current.write(vworld.current_actor(), str(self), data.encode("utf-8"))
    return len(data)


def _replace(self, target):
    if not _sim():
        return _real["replace"](self, target)
    Runner.current.rename(vworld.current_actor(), str(self), str(target))
    return pathlib.Path(target)


def _exists(self, *, follow_symlinks=True):
    if not _sim():
        return _real["exists"](self)
    disk = Runner.current.disk(vworld.process())
    p = str(self)
    return p in disk.files or p in disk.dirs or p == "/"


def _read_text(self, encoding=None, errors=None):
    if not _sim():
        return _real["read_text"](self, encoding, errors)
    return Runner.current.disk(vworld.process()).read(str(self)).decode("utf-8")


pathlib.Path.mkdir = _mkdir
pathlib.Path.write_text = _write_text
pathlib.Path.replace = _replace
pathlib.Path.exists = _exists
pathlib.Path.read_text = _read_text


# --- What a reader read, and why upstream's answer is what it is.


_parsed: dict = {}
_UNPARSABLE = object()


def classify(data: bytes | None, missing: bool, reader: str, now_wall_us: int, max_age: float):
    """The model's reason for a reader's verdict on the bytes upstream just
    read (the same instant, nothing ran in between), decided with Python's
    own `json` and `datetime`. Returns (alive, reason, msg)."""
    if missing:
        return False, "no state file", None
    if data is None:
        return False, "unreadable", None
    d = _parsed.get(data, _parsed)
    if d is _parsed:
        try:
            d = json.loads(data.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            d = _UNPARSABLE
        if len(_parsed) > 4096:
            _parsed.clear()
        _parsed[data] = d
    if d is _UNPARSABLE:
        return False, "unparsable", None
    if not isinstance(d, dict):
        return False, "not a JSON object", None
    if reader == "is_alive":
        if not all(k in d for k in ("timestamp", "pid", "hostname")):
            return False, "missing key", None
        ts = d["timestamp"]
    else:
        ts = d.get("timestamp")
        if not ts:
            return False, "missing key", None
    if not isinstance(ts, str):
        return False, "bad timestamp", None
    try:
        bt = RealDatetime.fromisoformat(ts)
    except ValueError:
        return False, "bad timestamp", None
    if bt.tzinfo is None:
        return False, "naive timestamp", None
    now = vworld.EPOCH + timedelta(microseconds=now_wall_us)
    age = (now - bt).total_seconds()
    msg = f"ts {ts} pid {d.get('pid')}"
    if age <= max_age:
        return True, ("future timestamp" if age < 0 else "fresh"), msg
    return False, "stale", msg


# The model's known simplifications (docs/oracle.md, "Known differences"):
# name -> what upstream does instead. A run notes each that mattered; the
# oracle then runs the case again with the harness doing what the model
# does, and calls the difference known only if that run agrees.
# None today: the one there was (audit D5, a stop inside a beat's write)
# is modelled since session 8.
KNOWN: dict[str, str] = {}


class Runner:
    current: "Runner | None" = None

    def __init__(self, sc: Scenario, as_the_model: bool = False):
        if sc.model != "kstlib":
            raise OracleError(f"{sc.path}: model {sc.model!r} is not kstlib")
        self.sc = sc
        # Do what the model does where it is known to differ (KNOWN).
        self.as_the_model = as_the_model
        self.noted: set[str] = set()
        self.profile = sc.profile
        if self.profile not in ("kstlib-threaded", "kstlib-async"):
            raise OracleError(f"unknown kstlib profile {self.profile!r}")
        self.w = World(sc.duration_us)
        self.records: list[dict] = []
        self.disks = []
        for d in range(sc.disks):
            if d < len(sc.hosts):
                h = sc.hosts[d]
                self.disks.append(Disk(h.durability, h.write_time_us))
            else:
                self.disks.append(Disk("auto_da_alloc", 0))
        self.procs: dict[int, Process] = {}
        self.node_of: dict[int, int] = {}  # id(Process) -> node index
        self.kill_before_rename: set[int] = set()
        self.written: dict[int, str] = {}  # node -> the timestamp its last write carried
        # The one writer of each reader's file on its disk (setup.rs `watched`).
        writers = [(sc.disk_of[n.index], n.keys.get("state_file"), n.index) for n in sc.nodes if n.kind == "writer" and n.keys.get("state_file")]
        self.watched = {}
        for n in sc.nodes:
            if n.kind in ("monitor", "state-watchdog"):
                of = [i for d, f, i in writers if d == sc.disk_of[n.index] and f == n.keys["state_file"]]
                self.watched[n.index] = sc.nodes[of[0]].name if len(of) == 1 else None
        Runner.current = self
        logger = logging.getLogger("kstlib.resilience.heartbeat")
        logger.handlers[:] = [_CallbackLog(self)]
        logger.propagate = False
        logger.setLevel(logging.WARNING)
        # A killed process leaves its loop's tasks pending: nothing to say.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)

    # -- records

    def rec(self, node: int, kind: str, peer=None, reason=None, msg=None):
        r = {"t_us": self.w.now, "node": self.sc.nodes[node].name, "kind": kind}
        if peer is not None:
            r["peer"] = peer
        if reason is not None:
            r["reason"] = reason
        if msg is not None:
            r["msg"] = msg
        self.records.append(r)

    def node(self, proc: Process) -> int:
        return self.node_of[id(proc)]

    def pid_of(self) -> int:
        return 1000 + self.node(vworld.process())

    def hostname_of(self) -> str:
        n = self.sc.nodes[self.node(vworld.process())]
        return self.sc.hosts[n.host].name if n.host is not None else n.name

    # -- the disk, as processes reach it

    def disk(self, proc: Process) -> Disk:
        return self.disks[self.sc.disk_of[self.node(proc)]]

    def op(self, proc: Process, what: str, path: str):
        proc.last_op = (what, path)
        self.disk(proc).mkdir_all(path)

    def write(self, actor, path: str, data: bytes):
        proc = actor.proc
        proc.last_op = ("write", path)
        disk = self.disk(proc)
        with contextlib.suppress(ValueError, KeyError, TypeError, UnicodeDecodeError):
            # The timestamp this beat took (a `beat` record's msg).
            self.written[self.node(proc)] = json.loads(data.decode())["timestamp"]
        ino, data = disk.open_write(path, data, self.w.now)
        if disk.write_time == 0:
            disk.land(ino, data, self.w.now)
            return
        proc.writing += 1
        try:
            actor.sleep_io(disk.write_time)
        finally:
            proc.writing -= 1
        # The process is still there (else `Killed` was raised): the data
        # lands in the inode it opened, under whatever name it has now.
        self.disk(proc).land(ino, data, self.w.now)

    def rename(self, actor, src: str, dst: str):
        proc = actor.proc
        proc.last_op = ("rename", src)
        n = self.node(proc)
        if n in self.kill_before_rename:
            self.kill_before_rename.discard(n)
            proc.kill()
            raise Killed()
        self.disk(proc).rename(src, dst)
        if proc.stopping and self.profile == "kstlib-async" and self.sc.nodes[n].kind == "writer":
            # The executor's thread finished `beat()` for a cancelled task:
            # upstream is silent; the model marks that the file changed.
            self.rec(n, "beat-landed-after-stop", msg=self.written.get(n))

    # -- the processes

    def boot(self, n: int):
        node = self.sc.nodes[n]
        proc = Process(self.w, node.name, node.clock)
        proc.last_op = None
        proc.writing = 0
        proc.stop_requested = vworld.VEvent()
        proc.stopping = False
        proc.on_stop = None
        self.procs[n] = proc
        self.node_of[id(proc)] = n
        app = {
            "writer": self.writer,
            "monitor": self.monitor,
            "state-watchdog": self.watchdog,
            "watchdog": self.watchdog,
        }.get(node.kind)
        if app is None:
            raise OracleError(f"unknown kstlib node kind {node.kind!r}")

        def main():
            try:
                app(proc, n, node.keys)
            finally:
                # The application returned (stopped): the process exits,
                # with its daemon threads.
                if not proc.dead:
                    proc.kill()

        proc.spawn(main, "main")

    def running(self, n: int) -> Process | None:
        p = self.procs.get(n)
        return p if p is not None and not p.dead else None

    def stop(self, n: int):
        p = self.running(n)
        if p is None:
            return
        p.stopping = True
        if p.on_stop is None:
            p.kill()
        else:
            p.on_stop()

    # -- applications around upstream's objects

    def async_main(self, proc: Process, coro_fn):
        """`asyncio.run(main())`: the loop runs `main`, then waits for its
        default executor's threads (`shutdown_default_executor`)."""
        loop = vworld.VLoop(proc)
        me = vworld.current_actor()
        stop = loop.create_future()
        proc.on_stop = lambda: loop.call_soon_threadsafe(lambda: stop.done() or stop.set_result(None))
        try:
            loop.run_in(me, coro_fn(stop))
            loop._default_executor.shutdown(wait=True)
        finally:
            if not loop.is_running():
                loop.close()

    def writer(self, proc: Process, n: int, keys: dict):
        state_file = keys.get("state_file")
        dead_at = duration_us(keys["target_dead_at"]) if "target_dead_at" in keys else None
        raises_at = duration_us(keys["target_raises_at"]) if "target_raises_at" in keys else None
        on_beat_fails = keys.get("on_beat_fails", False)
        # Not upstream's writer: an application whose timestamps are naive
        # (`datetime.now().isoformat()`); upstream's loop runs it, on a
        # clock that reads naive local time (UTC here).
        proc.naive = bool(keys.get("naive_timestamp"))

        class Target:
            @property
            def is_dead(self):
                t = proc.mono_us()
                if raises_at is not None and t >= raises_at:
                    raise RuntimeError("target.is_dead raised")
                return dead_at is not None and t >= dead_at

        def on_beat():
            self.rec(n, "beat", msg=self.written.get(n) if state_file else "no state file")
            if on_beat_fails:
                raise RuntimeError("on_beat")

        def on_missed_beat(exc):
            text = str(exc)
            prefix = "Failed to write heartbeat: "
            cause = exc.__cause__
            if not (isinstance(exc, HeartbeatError) and text.startswith(prefix) and isinstance(cause, OSError)):
                raise OracleError(f"unexpected missed beat: {exc!r}")
            what, path = proc.last_op or ("?", "?")
            self.rec(n, "missed-beat", reason=prefix + E.errorcode.get(cause.errno, str(cause.errno)), msg=f"{what} {path}")

        def on_alert(channel, message, context):
            self.rec(n, "alert", reason=message)

        def on_target_dead():
            self.rec(n, "target-dead", reason="target.is_dead")

        kw = dict(on_missed_beat=on_missed_beat, on_beat=on_beat, on_alert=on_alert)
        if dead_at is not None or raises_at is not None:
            kw.update(target=Target(), on_target_dead=on_target_dead)
        if "interval" in keys:
            kw["interval"] = keys["interval"]
        hb = Heartbeat(state_file, **kw)

        def died(exc):
            if isinstance(exc, RuntimeError) and str(exc) == "target.is_dead raised":
                self.rec(n, "loop-died", reason="target.is_dead raised")
            elif exc is not None:
                raise OracleError(f"heartbeat loop died: {exc!r}")

        if self.profile == "kstlib-threaded":
            loop_fn = hb._run_loop

            def run_loop():
                # threading's excepthook would print it; the thread ends.
                try:
                    loop_fn()
                except Exception as exc:  # noqa: BLE001
                    died(exc)

            hb._run_loop = run_loop
            hb.start()
            if keys.get("start_twice"):
                try:
                    hb.start()
                except HeartbeatError as e:
                    self.rec(n, "start-error", reason=str(e))
            proc.on_stop = proc.stop_requested.set
            proc.stop_requested.wait()
            hb.stop()
            return

        async def main(stop):
            await hb.astart()
            if keys.get("start_twice"):
                try:
                    await hb.astart()
                except HeartbeatError as e:
                    self.rec(n, "start-error", reason=str(e))
            task = hb._async_task
            task.add_done_callback(lambda t: t.cancelled() or died(t.exception()))
            await stop
            with contextlib.suppress(RuntimeError):  # astop re-raises the loop's death
                await hb.astop()

        self.async_main(proc, main)

    def monitor(self, proc: Process, n: int, keys: dict):
        path = keys["state_file"]
        max_age = keys.get("max_age")
        every = duration_us(keys.get("poll_every", "1s"))
        peer = self.watched.get(n)
        last = None
        while True:
            alive = Heartbeat.is_alive(path) if max_age is None else Heartbeat.is_alive(path, max_age)
            self.verdict(proc, n, "is_alive", path, 30.0 if max_age is None else max_age, alive)
            if alive != last:
                last = alive
                v = proc.last_verdict
                self.rec(n, "alive" if alive else "dead", peer=peer, reason=v[1], msg=v[2])
            me = vworld.current_actor()
            me.block(proc.mono_us() + every)

    def verdict(self, proc, n, reader, path, max_age, alive):
        disk = self.disk(proc)
        try:
            data, missing = disk.read(path), False
        except OSError as e:
            data, missing = None, e.errno == E.ENOENT
        v = classify(data, missing, reader, proc.wall_us(), max_age)
        if v[0] != alive:
            raise OracleError(f"{self.sc.nodes[n].name}: upstream said {alive}, the harness's reading {v}")
        proc.last_verdict = v
        return v

    def watchdog(self, proc: Process, n: int, keys: dict):
        node = self.sc.nodes[n]
        peer = self.watched.get(n)
        proc.last_verdict = (False, "no ping", None)

        def on_timeout():
            v = proc.last_verdict
            self.rec(n, "fired", peer=peer, reason=v[1], msg=v[2])

        def on_alert(channel, message, context):
            prefix = "Heartbeat state file is stale: "
            if message.startswith(prefix):
                self.rec(n, "alert", peer=peer, reason=prefix[:-2], msg=message[len(prefix):])
            else:
                self.rec(n, "alert", peer=peer, reason=message)

        if node.kind == "state-watchdog":
            kw = {}
            if "check_interval" in keys:
                kw["check_interval"] = keys["check_interval"]
            if "max_age" in keys:
                kw["max_age"] = keys["max_age"]
            wd = Watchdog.from_state_file(keys["state_file"], on_timeout=on_timeout, on_alert=on_alert, **kw)
            read = wd._is_state_file_alive
            max_age = keys.get("max_age", 30.0)

            def is_state_file_alive():
                alive = read()
                v = self.verdict(proc, n, "watchdog", keys["state_file"], max_age, alive)
                if alive and wd.is_triggered:
                    self.rec(n, "rearmed", peer=peer, reason=v[1], msg=v[2])
                return alive

            wd._is_state_file_alive = is_state_file_alive
            worker = None
        else:
            kw = {}
            if "timeout" in keys:
                kw["timeout"] = keys["timeout"]
            wd = Watchdog(on_timeout=on_timeout, on_alert=on_alert, **kw)
            worker = lambda: self.pinger(proc, n, keys, wd)  # noqa: E731

        if self.profile == "kstlib-threaded":
            wd.start()
            if worker:
                proc.spawn(worker, "worker")
            proc.on_stop = proc.stop_requested.set
            proc.stop_requested.wait()
            wd.stop()
            return

        async def main(stop):
            await wd.astart()
            if worker:
                proc.spawn(worker, "worker")
            await stop
            await wd.astop()

        self.async_main(proc, main)

    def pinger(self, proc: Process, n: int, keys: dict, wd: Watchdog):
        """The worker of upstream's docstring, `while running:
        watchdog.ping(); do_work()`, pinging every `ping_every`; it hangs
        at `hang_at` and pings again from `resume_at`; the application
        calls `reset()` at `reset_at`. At one instant: the reset, the
        ping, then the watchdog's check (the model's order)."""
        every = duration_us(keys.get("ping_every", "1s"))
        hang = duration_us(keys["hang_at"]) if "hang_at" in keys else None
        resume = duration_us(keys["resume_at"]) if "resume_at" in keys else None
        reset = duration_us(keys["reset_at"]) if "reset_at" in keys else None
        start = proc.mono_us()
        next_ping = start + every
        reset_pending = reset is not None and reset >= start
        me = vworld.current_actor()
        while True:
            deadline = min(next_ping, reset) if reset_pending else next_ping
            me.block(deadline, APP)
            t = proc.mono_us()
            if reset_pending and t >= reset:
                reset_pending = False
                wd.reset()
                self.rec(n, "watchdog-reset")
            if t >= next_ping:
                hung = hang is not None and t >= hang and (resume is None or t < resume)
                if not hung:
                    wd.ping()
                next_ping = t + every

    # -- faults

    def fault(self, f):
        sc = self.sc
        k = f.kind
        if k == "start":
            self.boot(f.node)
        elif k == "restart":
            if self.running(f.node):
                self.procs[f.node].kill()
            self.boot(f.node)
        elif k == "stop":
            self.stop(f.node)
        elif k in ("kill", "crash"):
            p = self.running(f.node)
            if p:
                p.kill()
        elif k == "crash-host":
            for n in sc.nodes:
                if n.host == f.host and self.running(n.index):
                    self.procs[n.index].kill()
            h = sc.hosts[f.host]
            if h.disk_of is None:
                self.disks[f.host].power_loss(self.w.now)
        elif k == "pause":
            p = self.running(f.node)
            if p:
                p.pause()
        elif k == "resume":
            p = self.running(f.node)
            if p:
                p.resume_process()
        elif k == "clock-jump":
            sc.nodes[f.node].clock.jump(signed_us(f.raw["by"]))
        elif k == "clock-drift":
            sc.nodes[f.node].clock.set_drift(self.w.now, int(f.raw["ppm"]))
            p = self.running(f.node)
            if p:
                p.redrift()
        elif k in ("disk-error", "disk-ok", "slow-disk", "torn-write"):
            disk = self.disks[self.host_disk(f.host)]
            path = f.raw.get("path")
            if k == "disk-error":
                disk.errors[path] = ERRNO[f.raw["errno"]]
            elif k == "disk-ok":
                if path is None:
                    disk.errors.clear()
                else:
                    disk.errors.pop(path, None)
            elif k == "slow-disk":
                disk.write_time = duration_us(f.raw["write"])
            else:
                disk.torn.add(path)
        elif k == "kill-before-rename":
            self.kill_before_rename.add(f.node)
        elif k in ("partition", "heal", "link", "break", "repair", "hold", "stall", "release"):
            pass  # no process sends another anything: files only
        else:
            raise OracleError(f"fault kind {k!r} not supported by the kstlib oracle")

    def host_disk(self, h: int) -> int:
        d = self.sc.hosts[h].disk_of
        return h if d is None else d

    def run(self) -> list[dict]:
        sc = self.sc
        for n in sc.nodes:
            if n.start_us is not None:
                self.w.at(n.start_us, lambda i=n.index: self.boot(i), FAULT)
        for f in sc.faults:
            if f.kind == "crash" and f.host is not None:
                f.kind = "crash-host"
            self.w.at(f.at_us, lambda f=f: self.fault(f), FAULT)
        self.w.run()
        return self.records


class _CallbackLog(logging.Handler):
    """`_invoke_callback_async` logs `Callback failed: %s` (the model's
    `callback-failed`)."""

    def __init__(self, runner: Runner):
        super().__init__(logging.WARNING)
        self.runner = runner

    def emit(self, record):
        if record.msg == "Callback failed: %s" and World.current and World.current.actor:
            proc = World.current.actor.proc
            self.runner.rec(self.runner.node(proc), "callback-failed", reason=str(record.args[0]))


def run(path: str, as_the_model: bool = False) -> tuple[list[dict], set[str]]:
    """The records, and the known differences (KNOWN) that mattered."""
    import scenario

    r = Runner(scenario.load(path), as_the_model)
    return r.run(), r.noted
