"""Reproduce where asyncio.wait_for's TimeoutError lands in lilbee's two
PipeChannel shapes (transport_pipe.py at 13277138 and at 01c002aa), with a
reader that never returns (a hung worker)."""
import asyncio, sys, threading
from concurrent.futures import ThreadPoolExecutor

class WorkerCrashError(RuntimeError):
    pass

block = threading.Event()

def recv_forever():
    block.wait()          # conn.recv() on a pipe nobody writes

async def ping_13277138(executor):
    # transport_pipe.py 13277138: wait_for(self._recv(), timeout), and
    # _recv catches (EOFError, OSError, ...) *inside* the awaited coroutine.
    async def _recv():
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, recv_forever)
        except (EOFError, OSError, ConnectionResetError, BrokenPipeError) as exc:
            raise WorkerCrashError("embed") from exc
    await asyncio.wait_for(_recv(), timeout=0.1)

async def ping_01c002aa(executor):
    # transport_pipe.py 01c002aa _health_round_trip: the wait_for itself
    # is inside try/except (EOFError, OSError, ...).
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(executor, recv_forever), timeout=0.1)
    except (EOFError, OSError, ConnectionResetError, BrokenPipeError) as exc:
        raise WorkerCrashError("embed") from exc

async def main():
    print(sys.version.split()[0], "asyncio.TimeoutError is TimeoutError:", asyncio.TimeoutError is TimeoutError,
          "TimeoutError subclass of OSError:", issubclass(TimeoutError, OSError))
    for f in (ping_13277138, ping_01c002aa):
        ex = ThreadPoolExecutor(max_workers=2)
        try:
            await f(ex)
        except WorkerCrashError as e:
            print(f.__name__, "-> WorkerCrashError (a crash: _on_crash runs)")
        except TimeoutError as e:
            print(f.__name__, "->", type(e).__name__, "(not a WorkerCrashError: the accessor re-raises, no crash)")
        ex.shutdown(wait=False)
    # The 2-thread executor after two timed-out reads: a third send waits.
    ex = ThreadPoolExecutor(max_workers=2)
    loop = asyncio.get_running_loop()
    for i in range(2):
        try:
            await asyncio.wait_for(loop.run_in_executor(ex, recv_forever), timeout=0.1)
        except TimeoutError:
            pass
    try:
        await asyncio.wait_for(loop.run_in_executor(ex, lambda: "sent"), timeout=1.0)
        print("third send ran")
    except TimeoutError:
        print("after 2 timed-out reads, a send on the same executor did not run within 1 s (both threads blocked)")
    block.set()
    ex.shutdown(wait=False)

asyncio.run(main())
