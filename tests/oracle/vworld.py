"""Virtual time for running upstream Python code inside a heartsim scenario.

The same discipline as heartsim's engine (sim/src/engine.rs): one queue of
events ordered by (time, class, seq), run one at a time. Each simulated
process runs its upstream threads, asyncio loop and executor threads as
greenlets, one at a time: a greenlet runs until it blocks in something this
module provides (Event.wait, Thread.join, asyncio's selector, a slow file
write), and that blocking call is where virtual time passes. Nothing here
reads a real clock; the same scenario gives the same records.

What a process sees of time (its node's clocks, a port of sim/src/clock.rs):
`time.monotonic()` is its monotonic clock, `datetime.now(tz)` its wall
clock (monotonic + offset, clamped at the epoch), and every timeout upstream
passes (`Event.wait(timeout)`, `asyncio.sleep`) is a deadline on the
monotonic clock, as CPython 3.11's are. docs/oracle.md says what this fakes
and why upstream's decisions do not change.

Shared by every upstream system's runner (kstlib today).
"""

from __future__ import annotations

import asyncio
import asyncio.events
import concurrent.futures
import datetime as _dt
import heapq
import selectors
import threading as _threading
from collections import deque
from types import SimpleNamespace

from greenlet import getcurrent, greenlet

US = 1_000_000
# The simulated wall epoch (sim: kstlib state.rs EPOCH_DAYS/EPOCH_SECS_OF_DAY).
EPOCH = _dt.datetime(2026, 1, 12, 10, 0, 0, tzinfo=_dt.timezone.utc)

# Event classes at one instant: faults (scheduled before anything else,
# as the engine queues them first), then an application's own actions that
# the model runs first within its node's wake-up, then everything else.
FAULT, APP, OTHER = 0, 1, 2


class Killed(BaseException):
    """Raised in a greenlet whose process died: no upstream `except
    Exception` catches it, so the thread unwinds without running on."""


class Unsupported(Exception):
    """A runner cannot run this scenario (what it needs is named): the
    oracle counts the file as skipped, never as agreeing."""


class OracleError(Exception):
    """The harness cannot do what the scenario asks (not upstream's fault)."""


def to_us(seconds: float) -> int:
    """A timeout in seconds as whole microseconds (the model rounds too)."""
    return int(round(seconds * US))


class Clock:
    """Port of sim/src/clock.rs `Clock` (integer microseconds)."""

    def __init__(self, drift_ppm: int = 0, wall_offset_us: int = 0):
        self.drift = drift_ppm
        self.offset = wall_offset_us
        self.anchor_g = 0
        self.anchor_m = 0

    def mono(self, g: int) -> int:
        if self.drift == 0:
            return max(0, self.anchor_m + g - self.anchor_g) if g >= self.anchor_g else self.anchor_m
        span = max(0, g - self.anchor_g)
        d = span * self.drift
        q = abs(d) // US * (1 if d >= 0 else -1)  # Rust's i128 division truncates
        return max(0, self.anchor_m + span + q)

    def wall(self, g: int) -> int:
        return max(0, self.mono(g) + self.offset)

    def global_at(self, deadline: int) -> int:
        anchor = self.anchor_g
        if deadline <= self.anchor_m:
            return anchor
        local = deadline - self.anchor_m
        if self.drift == 0:
            return anchor + local
        g = anchor + local * US // (US + self.drift)
        while g > anchor and self.mono(g - 1) >= deadline:
            g -= 1
        while self.mono(g) < deadline:
            g += 1
        return g

    def jump(self, by_us: int) -> None:
        self.offset += by_us

    def set_drift(self, at: int, ppm: int) -> None:
        self.anchor_m = self.mono(at)
        self.anchor_g = at
        self.drift = ppm


class Entry:
    __slots__ = ("t", "cls", "seq", "fn", "live")

    def __init__(self, t, cls, seq, fn):
        self.t, self.cls, self.seq, self.fn, self.live = t, cls, seq, fn, True


class World:
    """The event queue and the greenlets of every process."""

    current: "World | None" = None

    def __init__(self, end_us: int, max_events: int = 50_000_000):
        self.now = 0
        self.end = end_us
        self.seq = 0
        self.heap: list[tuple] = []
        # Wake-ups that happen at once (a thread started, an event set, an
        # executor's result): run before the next queued event, as the
        # engine carries out a dispatch's own outputs before the next event.
        self.ready: deque = deque()
        self.hub = getcurrent()
        self.actor: Actor | None = None
        self.events = 0
        self.max_events = max_events
        World.current = self

    def at(self, t: int, fn, cls: int = OTHER) -> Entry:
        self.seq += 1
        e = Entry(max(t, self.now), cls, self.seq, fn)
        # Tuples compare in C; `seq` is unique, so the entry never is.
        heapq.heappush(self.heap, (e.t, cls, self.seq, e))
        return e

    def soon(self, fn) -> None:
        self.ready.append(fn)

    def run(self) -> None:
        heap = self.heap
        while True:
            while self.ready:
                self.ready.popleft()()
            while heap and not heap[0][3].live:
                heapq.heappop(heap)
            if not heap or heap[0][0] > self.end:
                break
            e = heapq.heappop(heap)[3]
            self.now = e.t
            self.events += 1
            if self.events > self.max_events:
                raise OracleError(f"more than {self.max_events} events (max_events)")
            e.live = False
            e.fn()
        self.now = max(self.now, self.end)


def world() -> World:
    w = World.current
    assert w is not None
    return w


def process() -> "Process":
    """The process whose greenlet is running."""
    a = world().actor
    if a is None:
        raise OracleError("upstream code ran outside any simulated process")
    return a.proc


class Actor:
    """One upstream thread (or asyncio loop, or executor thread)."""

    def __init__(self, proc: "Process", fn, name: str):
        self.proc = proc
        self.name = name
        self.fn = fn
        self.g = greenlet(self._main, parent=proc.world.hub)
        self.done = False
        self.blocked = False
        self.timer: Entry | None = None  # the pending deadline of this block
        self.token = 0  # which block a wake-up is for
        self.joiners: list[Actor] = []
        self.loop = None  # the asyncio loop this greenlet runs, if any
        self.deadline_mono: int | None = None  # of the pending block
        self.timer_cls = OTHER

    def _main(self, _value=None):
        try:
            self.fn()
        except Killed:
            pass
        finally:
            self.done = True
            for j in self.joiners:
                j.wake("done")
            self.joiners.clear()

    def resume(self, value=None):
        """From the hub: run this greenlet until it blocks or ends."""
        w = self.proc.world
        if self.done:
            return
        w.actor = self
        asyncio.events._set_running_loop(self.loop)
        try:
            if self.proc.dead and not self.g:  # never started: nothing to unwind
                self.done = True
                return
            if self.proc.dead:
                self.g.throw(Killed())
            else:
                self.g.switch(value)
        finally:
            asyncio.events._set_running_loop(None)
            w.actor = None

    def block(self, deadline_mono: int | None = None, cls: int = OTHER):
        """From this greenlet: wait for `wake`, or until the process's
        monotonic clock reads `deadline_mono`. Returns the wake's value, or
        "timeout". As the engine's one timer per node, a block with the same
        deadline as the pending one keeps its place in the queue."""
        proc = self.proc
        w = proc.world
        self.token += 1
        token = self.token
        self.deadline_mono = deadline_mono
        self.timer_cls = cls
        if deadline_mono is None:
            if self.timer is not None:
                self.timer.live = False
                self.timer = None
        else:
            g = max(proc.clock.global_at(deadline_mono), w.now)
            if not (self.timer is not None and self.timer.live and self.timer.t == g):
                if self.timer is not None:
                    self.timer.live = False
                self.timer = w.at(g, lambda: self._fire(token), cls)
            else:
                self.timer.fn = lambda: self._fire(token)
        self.blocked = True
        value = w.hub.switch()
        self.blocked = False
        if proc.dead:
            raise Killed()
        return value

    def _fire(self, token):
        self.timer = None
        if self.blocked and token == self.token:
            self.proc.deliver(self, "timeout", timer=True)

    def wake(self, value="woken"):
        """Make a blocked greenlet runnable at once (its deadline stays
        armed, as the engine's timer does, until it blocks again)."""
        if self.blocked and not self.done:
            token = self.token
            self.proc.world.soon(lambda: self._wake_now(token, value))

    def _wake_now(self, token, value):
        if self.blocked and token == self.token:
            self.token += 1  # later timers for this block are stale
            self.proc.deliver(self, value)

    def sleep_io(self, dur_us: int):
        """Block for an I/O that takes `dur_us` (global time): its end is
        handed over after a pause, in order, like the engine's FileDone."""
        proc = self.proc
        w = proc.world
        self.token += 1
        token = self.token
        w.at(w.now + dur_us, lambda: self._io_done(token))
        self.blocked = True
        w.hub.switch()
        self.blocked = False
        if proc.dead:
            raise Killed()

    def _io_done(self, token):
        if self.blocked and token == self.token:
            self.proc.deliver(self, "io", io=True)


class Process:
    """One simulated process: its clock (the node's, kept across restarts),
    its greenlets, and whether it is running, paused or gone."""

    def __init__(self, world: World, name: str, clock: Clock):
        self.world = world
        self.name = name
        self.clock = clock
        self.actors: list[Actor] = []
        self.dead = False
        self.paused = False
        self.parked: list = []
        self.naive = False  # its wall clock reads naive datetimes

    def mono_us(self) -> int:
        return self.clock.mono(self.world.now)

    def wall_us(self) -> int:
        return self.clock.wall(self.world.now)

    def spawn(self, fn, name: str) -> Actor:
        a = Actor(self, fn, name)
        self.actors.append(a)
        a.blocked = True
        self.world.soon(lambda: self.deliver(a, None))
        return a

    def deliver(self, a: Actor, value, timer: bool = False, io: bool = False):
        if self.dead or a.done:
            return
        if self.paused:
            self.parked.append((a, value, timer))
            return
        a.blocked = False
        a.resume(value)

    def kill(self):
        """The process is gone: every greenlet unwinds with `Killed`."""
        if self.dead:
            return
        self.dead = True
        for a in self.actors:
            if a.timer is not None:
                a.timer.live = False
        me = self.world.actor
        for a in list(self.actors):
            if a is me or a.done:
                continue
            if not a.g:
                a.done = True
                continue
            # Unwind it now, from the hub's side if we are the hub.
            if me is None:
                a.resume()
            else:
                self.world.soon(a.resume)

    def pause(self):
        self.paused = True

    def resume_process(self):
        """SIGCONT: I/O that finished meanwhile is handed over first, in
        order; then every thread's deadline is armed afresh (the engine
        re-arms the node's timer on resume: a deadline that passed fires
        now, after what is already queued)."""
        self.paused = False
        parked, self.parked = self.parked, []
        timers = []
        for a, value, timer in parked:
            if timer:
                timers.append(a)
            else:
                a.blocked = False
                a.resume(value)
        self.rearm(fired=timers)

    def rearm(self, fired=()):
        w = self.world
        for a in self.actors:
            if a.done or self.dead:
                continue
            if a in fired:
                token = a.token
                a.timer = w.at(w.now, lambda a=a, token=token: a._fire(token), a.timer_cls)
            elif a.timer is not None and a.timer.live:
                old = a.timer
                old.live = False
                a.timer = w.at(old.t, old.fn, old.cls)

    def redrift(self):
        """The clock's rate changed: deadlines move (a deadline whose global
        time is unchanged keeps its place, as the engine's `rearm`)."""
        w = self.world
        for a in self.actors:
            t = a.timer
            if t is None or not t.live or a.deadline_mono is None:
                continue
            g = max(self.clock.global_at(a.deadline_mono), w.now)
            if g != t.t:
                t.live = False
                a.timer = w.at(g, t.fn, t.cls)


def current_actor() -> Actor:
    a = world().actor
    if a is None:
        raise OracleError("a blocking call outside any simulated process")
    return a


# --- What upstream modules see instead of `threading`, `time`, `datetime`.


class VEvent:
    """`threading.Event` whose `wait(timeout)` waits on the process's
    monotonic clock."""

    def __init__(self):
        self._flag = False
        self._waiters: list[Actor] = []

    def is_set(self):
        return self._flag

    isSet = is_set

    def set(self):
        self._flag = True
        waiters, self._waiters = self._waiters, []
        for a in waiters:
            a.wake("set")

    def clear(self):
        self._flag = False

    def wait(self, timeout=None):
        if self._flag:
            return True
        a = current_actor()
        deadline = None if timeout is None else a.proc.mono_us() + max(0, to_us(timeout))
        self._waiters.append(a)
        try:
            a.block(deadline)
        finally:
            if a in self._waiters:
                self._waiters.remove(a)
        return self._flag


class VThread:
    """`threading.Thread`: a greenlet of the calling process."""

    def __init__(self, group=None, target=None, name=None, args=(), kwargs=None, *, daemon=None):
        self._target = target
        self._args = args
        self._kwargs = kwargs or {}
        self.name = name or "thread"
        self.daemon = daemon
        self._actor: Actor | None = None

    def start(self):
        proc = process()
        self._actor = proc.spawn(lambda: self._target(*self._args, **self._kwargs), self.name)

    def is_alive(self):
        return self._actor is not None and not self._actor.done

    def join(self, timeout=None):
        t = self._actor
        if t is None or t.done:
            return
        me = current_actor()
        deadline = None if timeout is None else me.proc.mono_us() + max(0, to_us(timeout))
        t.joiners.append(me)
        try:
            me.block(deadline)
        finally:
            if me in t.joiners:
                t.joiners.remove(me)


threading_shim = SimpleNamespace(
    Thread=VThread,
    Event=VEvent,
    Lock=_threading.Lock,
    RLock=_threading.RLock,
    get_ident=_threading.get_ident,
)


def monotonic() -> float:
    return process().mono_us() / US


time_shim = SimpleNamespace(monotonic=monotonic)


class VDatetime(_dt.datetime):
    """`datetime.datetime` whose `now()` is the process's wall clock."""

    @classmethod
    def now(cls, tz=None):
        proc = process()
        t = EPOCH + _dt.timedelta(microseconds=proc.wall_us())
        if tz is None or proc.naive:
            return t.replace(tzinfo=None)  # the hosts' local time is UTC
        return t.astimezone(tz)

    @classmethod
    def utcnow(cls):
        return cls.now(None)


def sleep(seconds: float) -> None:
    """An application's own `time.sleep`, on its monotonic clock."""
    a = current_actor()
    a.block(a.proc.mono_us() + max(0, to_us(seconds)))


# --- asyncio on virtual time: a selector that blocks the loop's greenlet.


class VSelector(selectors.BaseSelector):
    def __init__(self, loop: "VLoop"):
        self._loop = loop
        self._map = {}

    def register(self, fileobj, events, data=None):
        key = selectors.SelectorKey(fileobj, id(fileobj), events, data)
        self._map[fileobj] = key
        return key

    def unregister(self, fileobj):
        return self._map.pop(fileobj)

    def get_map(self):
        return self._map

    def select(self, timeout=None):
        if timeout is not None and timeout <= 0:
            return []
        a = current_actor()
        deadline = None if timeout is None else a.proc.mono_us() + max(1, to_us(timeout))
        a.block(deadline)
        return []

    def close(self):
        self._map.clear()


class VLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose clock is its process's monotonic clock."""

    def __init__(self, proc: Process):
        self._proc = proc
        self._actor: Actor | None = None
        super().__init__(VSelector(self))
        self._clock_resolution = 1e-6
        self.set_default_executor(VExecutor(proc))

    def time(self):
        return self._proc.mono_us() / US

    def _make_self_pipe(self):
        self._ssock = self._csock = None
        self._internal_fds = 0

    def _close_self_pipe(self):
        pass

    def _write_to_self(self):
        if self._actor is not None:
            self._actor.wake("self")

    def run_in(self, actor: Actor, main):
        self._actor = actor
        actor.loop = self
        asyncio.events._set_running_loop(None)
        try:
            return self.run_until_complete(main)
        finally:
            actor.loop = None


class VExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor: each call a greenlet of the process,
    started at once."""

    def __init__(self, proc: Process):
        super().__init__(max_workers=1)
        self._proc = proc
        self._workers: list[Actor] = []
        self._jobs: deque = deque()
        self._waiters: list[Actor] = []
        self._closing = False

    def submit(self, fn, /, *args, **kwargs):
        f = concurrent.futures.Future()

        def run():
            if not f.set_running_or_notify_cancel():
                return
            try:
                r = fn(*args, **kwargs)
            except Killed:
                raise
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
                f.set_exception(e)
            else:
                f.set_result(r)

        # An idle worker takes it at once, as the pool's idle thread would;
        # else a new worker (the pool grows; none is ever busy twice).
        self._jobs.append(run)
        idle = next((w for w in self._workers if w.idle), None)
        if idle is not None:
            idle.idle = False
            idle.wake("job")
        else:
            w = self._proc.spawn(lambda: self._work(w), "executor")
            w.idle = False
            self._workers.append(w)
        return f

    def _work(self, me):
        while True:
            while self._jobs:
                self._jobs.popleft()()
            if self._closing:
                return
            me.idle = True
            for j in self._waiters:
                j.wake("idle")
            me.block(None)

    def shutdown(self, wait=True, *, cancel_futures=False):
        self._closing = True
        if not wait:
            return
        me = current_actor()
        while any(not w.idle and not w.done for w in self._workers):
            self._waiters.append(me)
            try:
                me.block(None)
            finally:
                self._waiters.remove(me)
