"""Third-audit point 2 on real CPython: upstream PipeChannel (pkg/, verbatim
transport_pipe.py at 13277138) on a daemon loop thread (PoolRuntime shape,
daemon=True); main returns while an executor thread is busy.
  call  : a call in flight; the worker dies 1.0 s after main returned. The
          accessor's shape (pool.py RoleAccessor.call / _on_crash):
          except WorkerCrashError: (record crash) suppress(WorkerError): await close(5); raise
  call2 : the same, plus a second channel whose call's worker dies later (the
          first death is not the last busy thread)
  reap  : channel a's close (timeout 1.0) already waits; its worker never acks and
          exits at +1.6 s (main returns at +1.3 s, while the join thread runs); then
          channel b is closed as reap_idle would (suppress(WorkerError)).
"""
import asyncio, contextlib, os, sys, threading, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "pkg"))
from lilbee.providers.worker.transport_pipe import PipeSpawner, WorkerCrashError, WorkerError
from cfg import Cfg

T0 = time.monotonic()
def say(*a):
    print(f"{time.monotonic()-T0:5.2f}", *a, flush=True)

def worker_main(conn, abort, cfg):
    if cfg.case == "call":
        conn.recv(); time.sleep(1.5); os._exit(1)
    if cfg.case == "late":
        conn.recv(); time.sleep(3.0); os._exit(1)
    if cfg.case == "a":
        conn.recv(); time.sleep(1.6); os._exit(0)   # never acks the shutdown
    while True:   # b: healthy, acks shutdown
        k, p = conn.recv()
        conn.send(("result", p))
        if k == "shutdown":
            return

async def crash_path(ch):
    try:
        await ch.call("req", None, timeout=30)
    except WorkerCrashError:
        say("call: WorkerCrashError; _on_crash closes")
        try:
            with contextlib.suppress(WorkerError):
                await ch.close(timeout=5.0)
        except BaseException as e:
            say("call raises", type(e).__name__, e)
            return
        say("call raises WorkerCrashError")

async def reap_path(a, b):
    try:
        with contextlib.suppress(WorkerError):
            await a.close(timeout=1.0)
        say("reap a: close returned normally")
        with contextlib.suppress(WorkerError):
            await b.close(timeout=1.0)
        say("reap b: close returned normally")
    except BaseException as e:
        say("reap raises", type(e).__name__, e)

def main(case):
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True); t.start()
    sp = PipeSpawner()
    if case in ("call", "call2"):
        ch, _ = sp.spawn(worker_main, Cfg("embed", "call"))
        time.sleep(0.5)
        asyncio.run_coroutine_threadsafe(crash_path(ch), loop)
        if case == "call2":  # a second channel keeps a thread busy until +3.5 s
            ch2, _ = sp.spawn(worker_main, Cfg("vision", "late"))
            time.sleep(0.3)
            asyncio.run_coroutine_threadsafe(crash_path(ch2), loop)
        time.sleep(0.5)
    else:
        a, _ = sp.spawn(worker_main, Cfg("a", "a"))
        b, _ = sp.spawn(worker_main, Cfg("b", "b"))
        time.sleep(1.0)
        global T0; T0 = time.monotonic()
        asyncio.run_coroutine_threadsafe(reap_path(a, b), loop)
        time.sleep(1.3)
    say("main returns")

if __name__ == "__main__":
    main(sys.argv[1])
