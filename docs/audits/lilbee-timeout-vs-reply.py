"""Which wins when a pipe reply (or EOF) and an expired wait_for deadline reach
the asyncio loop in the same _run_once batch: lilbee's PipeChannel shape at
13277138 (transport_pipe.py 211-218 `_recv`, 232 `call`, 287 `ping`), with a
reader thread standing in for `conn.recv()`.

"pause" blocks the loop's thread (as a SIGSTOP of the pool process does) from
0.05 s to 0.90 s; the wait_for deadline is 0.60 s, the reply comes at 0.30 s.  The reader thread hands
its result to the loop with call_soon_threadsafe (futures._chain_future) at
`at`; while the loop is blocked that callback sits in _ready ahead of the
timer the next _run_once pops, so both run in one batch.

    python3 docs/audits/lilbee-timeout-vs-reply.py

3.11.7: paused-reply -> reply, paused-eof -> WorkerCrashError (the reply's
        task step runs before wait_for looks at fut.done());
3.12.1 and 3.13.0: paused-* -> TimeoutError (Timeout._on_timeout's
        task.cancel() finds the awaited future done and sets _must_cancel);
all: reply-in-time -> reply, reply-after-resume -> TimeoutError,
     lock-waiter: the waiter times out and starts no read on 3.12+.
"""
import asyncio, sys, threading, time
from concurrent.futures import ThreadPoolExecutor


class WorkerCrashError(RuntimeError):
    pass


T0 = time.monotonic()


def reader(at, what, reads):
    def recv():
        reads.append(what)
        time.sleep(max(0.0, at - (time.monotonic() - T0)))
        if what == "eof":
            raise EOFError
        return ("result", None)
    return recv


class Chan:
    def __init__(self):
        self._executor = ThreadPoolExecutor(max_workers=2)
        self._recv_lock = asyncio.Lock()
        self.reads = []

    async def _recv(self, at, what):
        loop = asyncio.get_running_loop()
        async with self._recv_lock:
            try:
                return await loop.run_in_executor(self._executor, reader(at, what, self.reads))
            except (EOFError, OSError) as exc:
                raise WorkerCrashError() from exc

    async def call(self, at, what, timeout=0.6):
        try:
            kind, _ = await asyncio.wait_for(self._recv(at, what), timeout=timeout)
            return "reply"
        except WorkerCrashError:
            return "WorkerCrashError"
        except asyncio.TimeoutError:
            return "TimeoutError"


LATE = []


def pause(until, reply_at):
    # A loop starved past the reply's time before the "SIGSTOP" would let
    # the reply in first for a reason that has nothing to do with asyncio.
    if time.monotonic() - T0 >= reply_at:
        LATE.append(True)
    time.sleep(max(0.0, until - (time.monotonic() - T0)))


async def case(name, at, what, paused):
    global T0
    T0 = time.monotonic()
    loop = asyncio.get_running_loop()
    if paused:
        loop.call_later(0.05, pause, 0.90, at)
    ch = Chan()
    if name == "lock-waiter":
        # A holds _recv_lock, its read returns during the pause; B waits
        # for the lock with its own deadline inside the pause.
        a = asyncio.ensure_future(ch.call(at, "a", timeout=5.0))
        await asyncio.sleep(0)
        b = await ch.call(at, "b", timeout=0.6)
        await a
        return f"{b}, reads started: {ch.reads}"
    return await ch.call(at, what)


async def main():
    for name, at, what, paused in [
        ("reply-in-time", 0.10, "result", False),
        ("paused-reply", 0.30, "result", True),
        ("paused-eof", 0.30, "eof", True),
        ("reply-after-resume", 0.95, "result", True),
        ("lock-waiter", 0.30, "result", True),
    ]:
        LATE.clear()
        got = await case(name, at, what, paused)
        late = " (INVALID: the loop paused after the reply)" if LATE else ""
        print(f"{sys.version.split()[0]} {name}: {got}{late}")


asyncio.run(main())
