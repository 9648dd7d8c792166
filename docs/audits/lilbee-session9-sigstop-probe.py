"""Real SIGSTOP/SIGCONT of the pool process against upstream's PipeChannel
(transport_pipe.py at 13277138, verbatim, in pkg/). The worker stops its
parent, answers (or dies) during the stop, and a helper continues the parent
after the call's wait_for deadline passed.
  case reply : call(timeout=0.5); stop at +0.1 s, reply at +0.2 s, SIGCONT at +0.9 s
  case eof   : same, the worker exits at +0.2 s instead of answering
  case ping  : ping(timeout=0.5); pong at +0.2 s during the stop
  case lock  : call A (timeout 5) holds _recv_lock, call B (timeout 0.5) waits for it;
               A's reply during the stop; B's reply 0.3 s after SIGCONT; then call C:
               C gets B's reply iff B started no read.
"""
import asyncio, os, signal, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "pkg"))
from lilbee.providers.worker.transport_pipe import PipeSpawner, WorkerCrashError
from cfg import Cfg


def helper_cont(ppid, delay):
    if os.fork() == 0:
        time.sleep(delay)
        os.kill(ppid, signal.SIGCONT)
        os._exit(0)


def worker_main(conn, abort, cfg):
    case = cfg.case
    ppid = os.getppid()
    if case in ("reply", "eof", "ping"):
        kind, payload = conn.recv()
        time.sleep(0.1)  # the parent is inside wait_for by now
        os.kill(ppid, signal.SIGSTOP)
        helper_cont(ppid, 0.8)
        time.sleep(0.1)
        if case == "eof":
            os._exit(1)
        conn.send(("pong" if kind == "ping" else "result", payload))
        kind, _ = conn.recv()  # shutdown
        conn.send(("result", "ack"))
        return
    # lock
    ka, pa = conn.recv()
    kb, pb = conn.recv()
    time.sleep(0.1)
    os.kill(ppid, signal.SIGSTOP)
    helper_cont(ppid, 0.8)
    time.sleep(0.1)
    conn.send(("result", pa))
    time.sleep(1.0)  # well after SIGCONT
    conn.send(("result", pb))
    kc, pc = conn.recv()
    conn.send(("result", pc))
    conn.recv()
    conn.send(("result", "ack"))


async def run(case):
    ch, _ = PipeSpawner().spawn(worker_main, Cfg("embed", case))
    await asyncio.sleep(1.5)  # worker up
    out = []
    try:
        if case == "ping":
            await ch.ping(timeout=0.5)
            out.append("ping ok")
        elif case in ("reply", "eof"):
            r = await ch.call("req", "A", timeout=0.5)
            out.append(f"call {r}")
        else:
            async def one(p, t):
                try:
                    return await ch.call("req", p, timeout=t)
                except asyncio.TimeoutError:
                    return "TimeoutError"
            a = asyncio.ensure_future(one("A", 5.0))
            await asyncio.sleep(0)
            b = await one("B", 0.5)
            out.append(f"A={await a} B={b}")
            await asyncio.sleep(1.5)
            out.append(f"C got {await one('C', 2.0)}")
    except asyncio.TimeoutError:
        out.append("TimeoutError")
    except WorkerCrashError:
        out.append("WorkerCrashError")
    await ch.close(timeout=1.0)
    return "; ".join(out)


if __name__ == "__main__":
    case = sys.argv[1]
    print(sys.version.split()[0], case, asyncio.run(run(case)), flush=True)
